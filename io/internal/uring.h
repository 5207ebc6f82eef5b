// uring.h: the io_uring backend's per-worker state (private to //io).
//
// One ring per worker, created by the worker itself on its first operation, so the
// kernel's single-issuer rule holds (every submit comes from that worker's OS thread; the
// lwkt threads it runs are the same kernel task). Touched only by its worker, inside
// critical sections, except the statistics (relaxed atomics, read by io::stats()).
//
// user_data of an SQE: the address of an op (a struct on the waiting thread's stack), or one
// of the small tags below (never a valid op address: ops are 8-aligned).
#pragma once

#include <liburing.h>

#include <time.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "io/internal/backend.h"
#include "lwkt/internal/io_hook.h"
#include "lwkt/thread.h"

namespace lwkt::io::internal {

inline constexpr std::uint64_t kKickTag = 1;     // the armed read of the parker's eventfd
inline constexpr std::uint64_t kIgnoreTag = 3;   // cancel requests: their CQEs carry nothing
inline constexpr std::uint64_t kMultishotBit = 2;  // user_data = (multishot address) | 2
inline constexpr std::uint64_t kMsgKickTag = 5;    // a kick another worker posted (MSG_RING)
inline constexpr std::uint64_t kMsgSentBit = 6;    // user_data = (target worker_io*) | 6

struct uring_worker;

// A multishot operation (io::listener, io::pooled_receiver): one SQE, many CQEs. Lives in
// its owner object; the reaper hands each CQE to on_cqe and wakes the waiter, if any.
struct multishot {
  thread* waiter = nullptr;  // the owner thread while it sleeps for the next CQE
  bool armed = false;        // the kernel may still post CQEs for it (counted in inflight)
  void (*on_cqe)(multishot* m, uring_worker* w, std::int32_t res, std::uint32_t flags) = nullptr;
};

// The worker's provided-buffer ring (buffer group 0), created with the first
// pooled_receiver. Buffer i is bufs + i * size. A buffer is in the kernel's ring, or
// queued on one receiver (next[] links its queue, len[] its byte count), or held by one.
struct buffer_pool {
  io_uring_buf_ring* br = nullptr;
  std::size_t ring_bytes = 0;
  char* bufs = nullptr;
  std::size_t bufs_bytes = 0;
  unsigned n = 0, size = 0;
  unsigned free_count = 0;       // buffers in the kernel's ring
  unsigned waiters = 0;          // receivers sleeping until a buffer is free
  int* next = nullptr;
  unsigned* len = nullptr;
};

// An operation in flight: lives on the waiting thread's stack until its CQE is reaped.
struct op {
  thread* td = nullptr;
  std::int32_t res = 0;
  std::uint32_t cqe_flags = 0;
  bool done = false;
};

struct uring_worker : worker_base {
  uring_worker() : worker_base(kUring) {}
  io_uring ring;
  unsigned setup_flags = 0;    // what io_uring_queue_init_params accepted
  bool skip_success = false;   // IORING_FEAT_CQE_SKIP: cancels post no CQE when they work
  std::uint32_t unsubmitted = 0;  // SQEs prepared since the last submit
  std::uint32_t inflight = 0;     // ops submitted or prepared whose CQE is not reaped yet
  std::uint64_t first_prepared = 0;  // cheap-clock time of the oldest unsubmitted SQE
  std::uint64_t kick_buf = 0;     // the eventfd read's destination
  int kick_fd = -1;
  buffer_pool* pool = nullptr;    // pooled_receiver's buffers, created on first use
  // CQ index below which every failed MSG_RING kick has had its eventfd fallback already
  // (uring_kick looks at new CQEs without consuming them; reap skips those it saw).
  unsigned kicks_checked = 0;
  // The kernel's TASKRUN/CQ_OVERFLOW flags stayed set through a flush that entered the
  // kernel for them and got no completion: uring_ready stops counting them until a
  // completion is reaped or the worker has waited in the ring (which runs the kernel's
  // work and sleeps), so the idle loop parks instead of flushing for ever.
  bool flags_futile = false;
};

// Creates the worker's buffer pool (`n` buffers of `size` bytes); 0 or an errno.
int ensure_pool(uring_worker* w, unsigned n, unsigned size);
// Gives buffer `bid` back to the kernel's ring.
void pool_release(uring_worker* w, unsigned bid);

// The calling worker's ring, created on first use; null with `*err` set (an errno) when
// the ring cannot be created.
uring_worker* my_ring(lwkt::internal::worker_io* wio, int* err);

// A free SQE, submitting what is prepared to make room when the SQ is full (never drops).
// Counts it as prepared. Inside a critical section.
io_uring_sqe* get_sqe(uring_worker* w);

// Prepares a cancel of `o` and submits it at once. Inside a critical section.
void cancel(uring_worker* w, op* o);
// The same for any user_data (a multishot's tagged address).
void cancel_data(uring_worker* w, std::uint64_t user_data);

// Submits everything prepared now. Inside a critical section.
void submit_now(uring_worker* w);

// Probes io_uring_setup as a worker's ring would be set up: 0 (with the flags and features
// the kernel accepted) or a negative errno.
int probe_uring(unsigned* flags, unsigned* features);
// Names a probe failure's cause (sysctl, policy, kernel, memlock).
std::string setup_failure_cause(int err);
// "SINGLE_ISSUER|DEFER_TASKRUN...; features NODROP,..."
std::string describe_uring(unsigned flags, unsigned features);

// The provider hooks for a worker whose state is a uring_worker.
void uring_flush(lwkt::internal::worker_io* wio, bool idle);
void uring_wait(lwkt::internal::worker_io* wio, const struct timespec* timeout);
bool uring_ready(lwkt::internal::worker_io* wio);
std::uint32_t uring_exit(lwkt::internal::worker_io* wio);  // operations left
bool uring_kick(lwkt::internal::worker_io* target);
void uring_cancel_all(lwkt::internal::worker_io* wio);

}  // namespace lwkt::io::internal
