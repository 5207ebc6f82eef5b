// runtime_state.h: what a Runtime owns (private to //lwkt).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "lwkt/internal/globaldata.h"
#include "lwkt/internal/remote_call.h"
#include "lwkt/internal/topology.h"
#include "lwkt/runtime.h"

namespace lwkt::internal {

struct monitor;

struct runtime_state {
  Runtime::Options opts;
  std::unique_ptr<topology> topo;
  std::vector<globaldata*> gds;        // fixed after create(); index = worker
  // N x N ring pointers; ring (s -> t) at s * N + t. Each is allocated by its only sender,
  // worker s, on its first send to t, on t's NUMA node (ipi.cc), and freed by the
  // destructor (free_rings); ring_on_node says how it was allocated (written by s before it
  // publishes the ring, read after the workers are joined).
  std::unique_ptr<std::atomic<ipiq::ring*>[]> rings;
  std::unique_ptr<bool[]> ring_on_node;
  std::atomic<std::uint64_t> rings_allocated{0};
  // kSleepHash x kMaskWords: which workers may have sleepers in each hash slot.
  std::unique_ptr<std::atomic<std::uint64_t>[]> slpque_cpumasks;
  std::vector<bool> gd_on_node;        // gds[i] came from hwloc_alloc_membind
  std::vector<std::thread> workers;
  std::atomic<bool> stopping{false};   // written: shutdown(); read: create paths, api_guard
  std::atomic<int> api_calls{0};       // kNewWork calls from outside in progress (api_guard)
  // The grace period is over (written: shutdown(); read: api_guard of kExistingWork calls).
  std::atomic<bool> sealed{false};
  std::atomic<int> late_calls{0};      // kExistingWork calls from outside in progress
  bool leaked = false;                 // shutdown could not stop a worker: never freed
  // Threads given away and not yet acquired (on no worker's thread list): shutdown
  // abandons them too. giveaway/acquire are rare, so a mutex.
  std::mutex transit_mu;
  std::vector<thread*> in_transit;
  std::size_t transit_abandoned = 0;   // in-transit threads shutdown abandoned (stats)
  std::atomic<std::uint32_t> rotor{0}; // round-robin worker choice for spawns from outside

  std::mutex shutdown_mu;              // serialises shutdown() callers
  bool shut_down = false;
  absl::Status shutdown_status;

  monitor* mon = nullptr;              // stall detector / ps dump (monitor.cc); owned
  std::atomic<std::uint64_t> stalls{0};  // stalls the monitor reported

  // I/O (internal/io_hook.h): the provider when I/O is active for this runtime, and its
  // description for placement_report ("off (...)" otherwise).
  const struct io_provider* io = nullptr;
  std::string io_description;
  std::uint32_t io_backend = 0;        // io_config::backend, copied into each gd_io
  // I/O operations that outlived their cancellation at worker exit (the workers add them;
  // shutdown reads them after joining): abandoned stacks then stay mapped.
  std::atomic<std::uint32_t> io_unfinished{0};
  std::string workers_reason;          // why gds.size() workers (topology::workers_for)
  std::uint32_t fork_generation = 0;   // internal::fork_generation when created
  runtime_state* forked_next = nullptr;  // forked_runtimes list, in a forked child only
};

// fork. A child forked from a process running a runtime has none of its workers (fork
// copies only the calling OS thread), so any call that waits for a worker would hang. A
// pthread_atfork child handler (registered by the first Runtime::create) increments
// fork_generation; a runtime whose generation differs is one inherited across fork, and its
// entry points abort naming the call (check_not_forked). A runtime created in the child
// itself works normally.
extern std::atomic<std::uint32_t> fork_generation;
inline bool inherited_across_fork(const runtime_state* rs) {
  return rs->fork_generation != fork_generation.load(std::memory_order_relaxed);
}
// Aborts with "lwkt: <call> called in a child forked from a process running an lwkt
// runtime; the runtime cannot be used after fork" when rs was inherited across fork.
void forked_child_abort(const char* call);
inline void check_not_forked(const runtime_state* rs, const char* call) {
  if (__builtin_expect(inherited_across_fork(rs), 0)) forked_child_abort(call);
}

// An entry point (of an api_class, remote_call.h) that may race with shutdown() on another
// OS thread: either it passes before shutdown closes its class (setting the flag) and
// shutdown waits for it to finish (it counts itself), or it sees the flag and refuses.
// seq_cst on both sides (count, then read the flag; shutdown: set the flag, then read the
// count) is a Dekker pair.
// The two halves of api_guard, for callers outside rs that hold the guard across several
// steps (remote_call_scope): api_enter returns whether the call may go on and sets *counted
// when it raised the count (api_leave then drops it).
inline bool api_enter(runtime_state* rs, bool* counted, api_class c = api_class::kNewWork) {
  *counted = false;
  // An lwkt thread of rs itself is not counted: it can send only while its worker runs
  // it, which shutdown's gd_stopped and ring checks already cover, and once its worker
  // stops it may never run again (it is abandoned) and could not drop the count.
  if (globaldata* me = mycpu(); me && me->gd_runtime == rs) {
    return c == api_class::kExistingWork || !rs->stopping.load(std::memory_order_acquire);
  }
  std::atomic<bool>& closed = c == api_class::kNewWork ? rs->stopping : rs->sealed;
  std::atomic<int>& count = c == api_class::kNewWork ? rs->api_calls : rs->late_calls;
  // Refused at once when the class is visibly closed: such callers never raise the count,
  // so callers that keep trying do not hold shutdown's quiescence check back.
  if (closed.load(std::memory_order_acquire)) return false;
  count.fetch_add(1, std::memory_order_seq_cst);
  if (!closed.load(std::memory_order_seq_cst)) {
    *counted = true;
    return true;
  }
  count.fetch_sub(1, std::memory_order_release);
  return false;
}
inline void api_leave(runtime_state* rs, bool counted, api_class c = api_class::kNewWork) {
  if (!counted) return;
  (c == api_class::kNewWork ? rs->api_calls : rs->late_calls)
      .fetch_sub(1, std::memory_order_release);
}

class api_guard {
 public:
  explicit api_guard(runtime_state* rs, api_class c = api_class::kNewWork)
      : _rs(rs), _class(c), _ok(api_enter(rs, &_counted, c)) {}
  ~api_guard() { api_leave(_rs, _counted, _class); }
  api_guard(const api_guard&) = delete;
  api_guard& operator=(const api_guard&) = delete;
  bool ok() const { return _ok; }

 private:
  runtime_state* _rs;
  api_class _class;
  bool _counted = false;
  bool _ok = false;
};

// Every live runtime (listed from construction until its destructor; one whose shutdown
// leaked, for good), for debuggers:
// tools/gdb/lwkt.py reads it, then each runtime's gds and their thread lists.
extern std::vector<runtime_state*>* g_debug_runtimes;

// Frees every ring that was allocated (after the workers are joined).
void free_rings(runtime_state* rs);

// Checks thread options against the runtime; InvalidArgument naming the field.
absl::Status validate_thread_options(const runtime_state* rs, const thread_options& opts);

}  // namespace lwkt::internal
