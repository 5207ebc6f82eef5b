// io_hook.h
//
// The one seam between the scheduler and an I/O layer (//io). The scheduler knows nothing
// about rings or sockets; it only
//   - asks the installed provider, at Runtime::create, whether I/O is available for the
//     options given (and keeps the provider's one-line description for placement_report);
//   - calls `flush` at its switch points while the worker has I/O outstanding
//     (worker_io::busy != 0): one load and a branch otherwise;
//   - lets the idle loop wait in `wait` instead of its parker once the worker has I/O state,
//     so one sleep covers completions, sleep timeouts and kicks;
//   - calls `worker_exit` on each worker's OS thread after its idle loop returns, before any
//     stack is freed, so operations still in flight (of threads shutdown abandoned) are
//     cancelled and reaped while the memory they name is still mapped.
// Dependencies point one way: //io includes this header; //lwkt never includes //io.
#pragma once

#include <time.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lwkt/internal/globaldata.h"
#include "lwkt/runtime.h"
#include "lwkt/thread.h"

namespace lwkt::internal {

struct io_config {
  bool active = false;       // this runtime's workers do I/O through the provider
  std::string description;   // placement_report's `io:` line: backend, flags, or why off
  std::uint32_t backend = 0; // the provider's choice, copied into every worker_io (opaque)
};

struct io_provider {
  // At Runtime::create, on the creating thread: a Status naming the cause when opts.io
  // cannot be honoured; otherwise what the runtime will use. Called once per runtime.
  absl::StatusOr<io_config> (*configure)(const Runtime::Options& opts);
  // Owner, at a switch point, inside a critical section: submit what is prepared (at once
  // when `idle`: the worker has nothing else runnable; otherwise it may wait to batch), make
  // the finished operations' threads runnable. Never blocks.
  void (*flush)(worker_io* io, bool idle);
  // Owner, from the idle loop (after the parker's prepare_park and work check): sleep until
  // a completion, a kick of `kick_fd` (the parker's eventfd), or `timeout` (relative).
  void (*wait)(worker_io* io, int kick_fd, const struct timespec* timeout);
  // True when a completion is waiting to be reaped (the idle loop's spin checks it).
  bool (*ready)(worker_io* io);
  // Owner, once, when the worker stops: cancel and reap everything in flight, free state.
  // Returns how many operations did not finish in time after their cancellation: the
  // kernel may still write into their buffers, so shutdown then leaves the stacks of the
  // threads it abandons mapped (leaked) instead of unmapping them.
  std::uint32_t (*worker_exit)(worker_io* io);
  // A producer that won the wake of `target`, parked in its ring: wake it from the
  // calling worker's own ring (true), or leave it to the parker's eventfd (false).
  bool (*kick)(worker_io* target);
  // Owner, in a message handler when shutdown begins (worker_io::closing is set already):
  // cancel every operation in flight, so that its call returns ECANCELED.
  void (*cancel_all)(worker_io* io);
};

// Shutdown's first step, on each worker: refuse new I/O and cancel what is in flight.
void io_shutdown_handler(void* arg1, std::intptr_t arg2, void* aux, void* ctx);

// Wakes `target` if it is parked (the parker's kick), through the I/O provider's kick
// when both sides can. The one kick every cross-worker send uses. `fenced`: the caller
// issued a seq_cst fence after publishing its work (see ipiq::parker::kick_via).
// Runs on: any OS thread.
void kick_worker(globaldata* target, bool fenced = false);

// Installed once, before any Runtime is created (//io's static initialiser).
void install_io_provider(const io_provider* p);
const io_provider* installed_io_provider();

// The calling OS thread's worker I/O slot; null when the caller is not a worker of a
// runtime with I/O active.
worker_io* my_worker_io();
// Switches the calling worker's parker to eventfd kicks (a worker keeps Options::kick
// until its first I/O operation) and returns that eventfd, which the provider arms a read
// of in the ring; -1 (errno set) when no eventfd could be made.
int enable_kick_fd();
// Every worker's I/O slot of the caller's runtime (empty when the caller is not a worker).
// Another worker's slot may be read only through what its provider made atomic.
std::vector<worker_io*> runtime_worker_ios();

// io::blocking requests (of any runtime) whose pool OS thread has not yet made its last
// write into the caller's stack (fn's result and the done flag). Shutdown leaves the stacks
// of the threads it abandons mapped while this is non-zero, as for I/O that outlived its
// cancellation. The caller increments before it submits (so a worker's join orders it
// before shutdown's read); the pool thread decrements with release after its last write.
std::atomic<std::uint32_t>& blocking_outstanding();

// Makes td runnable if it sleeps (tsleep) on `ident`, on the calling worker, which must own
// it. For completion handlers: O(1), no hash scan. Owner only, inside a critical section.
void io_wake(thread* td, const void* ident);

}  // namespace lwkt::internal
