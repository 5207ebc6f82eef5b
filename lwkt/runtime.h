// runtime.h
//
// lwkt::Runtime: the set of workers. Each worker is an OS thread placed (and by default
// pinned) on one processing unit found by hwloc, with its own globaldata allocated on its
// NUMA node, its own run queue and idle loop. A server creates one Runtime, submits lwkt
// threads to it from any OS thread, and shuts it down.
//
//   Runtime::Options   worker count, CPU list, pinning, stack and cache sizes, idle policy.
//   Runtime::create    validates the options and starts the workers (absl::StatusOr).
//   Runtime::spawn     creates an lwkt thread from any OS thread (e.g. main).
//   Runtime::shutdown  stops accepting work, waits for threads, joins workers, frees stacks.
//   Runtime::placement_report / topology_report   human-readable placement.
//   Runtime::snapshot / stats / write_trace        what runs where, counters, a Perfetto
//                                                  trace (docs/debugging.md; also the
//                                                  stall detector and ps on a signal)
//
// Example:
//   auto rt = lwkt::Runtime::create({.workers = 4});
//   if (!rt.ok()) { /* rt.status() names the bad field */ }
//   auto td = (*rt)->spawn([] { /* runs on a worker */ }, {.name = "hello"});
//   td->join();
//   (*rt)->shutdown();
//
// fork. fork() copies only the calling OS thread, so a child forked from a process with a
// running Runtime has none of its workers and cannot use it. In the child, spawn(),
// snapshot(), wakeup(), shutdown() (unless the runtime was shut down before the fork) and
// thread_ref::join() of a live thread abort with "lwkt: Runtime::spawn called in a child
// forked from a process running an lwkt runtime; the runtime cannot be used after fork"
// (naming the call) instead of hanging; the destructor silently skips all teardown, so the
// child may exit normally with the Runtime object in scope. The child may create a Runtime
// of its own. Forking from an lwkt thread leaves the child on that thread's stack: call
// only async-signal-safe functions there (exec, _exit).
#pragma once

#include <signal.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ipiq/parker.h"
#include "lwkt/snapshot.h"
#include "lwkt/thread.h"

namespace lwkt {

namespace internal {
struct runtime_state;
}

// The I/O backend of a runtime's workers (Runtime::Options::io). The I/O calls themselves
// are in //io (io/io.h); a program that does not link //io has no I/O and `automatic`
// means off.
enum class io_backend {
  // io_uring when //io is linked and the kernel allows it, else epoll; without //io, no
  // I/O (io calls fail with ENOSYS). The choice and its reason are printed once to stderr
  // and are placement_report()'s `io:` line.
  automatic,
  // io_uring or nothing: create() fails with a Status naming the cause (the
  // kernel.io_uring_disabled sysctl, a seccomp or container policy, a kernel without
  // io_uring, RLIMIT_MEMLOCK, or //io not linked).
  io_uring,
  // One epoll instance per worker and non-blocking system calls: the same io.h calls, for
  // kernels or policies without io_uring (automatic falls back to it). Descriptors an
  // operation has to wait on are made O_NONBLOCK (as Go's poller does); file reads and
  // writes run on the worker itself.
  epoll,
  // No I/O layer: io calls fail with ENOSYS; workers park as `kick` says.
  off,
};

struct worker_info {
  int worker;           // worker index (gd_cpuid)
  int pu;               // OS index of the processing unit (as in /proc/cpuinfo)
  int core;             // logical index of its core
  int numa_node;        // OS index of its NUMA node (-1 if unknown)
  bool pinned;          // bound to the PU
};

struct runtime_stats {
  std::uint64_t switches = 0;
  std::uint64_t threads_created = 0;
  std::uint64_t threads_reaped = 0;
  std::uint64_t stacks_mapped = 0;
  std::uint64_t stacks_unmapped = 0;
  std::uint64_t cache_hits = 0;
  std::uint64_t messages = 0;
  std::uint64_t parks = 0;
  std::uint64_t preemptions = 0;         // lwkt_preempt taken
  std::uint64_t preemptions_refused = 0;  // refused, all reasons
  std::int64_t live_threads = 0;
  std::uint64_t stalls = 0;  // stalls the stall detector reported (Options::stall_budget)
  // IPI rings allocated: one per ordered pair of workers (s, t) once s has sent t a message
  // (each is allocated on its first send, on t's NUMA node; about 8.6 KB).
  std::uint64_t ipi_rings = 0;
};

class Runtime {
 public:
  static constexpr int kAutoWorkers = -1;
  static constexpr std::size_t kMinStackSize = 16 * 1024;
  static constexpr std::size_t kMaxStackSize = std::size_t{1} << 30;
  static constexpr std::size_t kDefaultGuardSize = 64 * 1024;
  static constexpr std::size_t kMaxGuardSize = std::size_t{64} << 20;

  struct Options {
    // Number of workers. kAutoWorkers: one per CPU in `cpus`, but no more than the process's
    // cgroup CPU quota allows: min(CPUs, ceil(quota / period)), at least 1, where the quota
    // is cgroup v2 `cpu.max` ("200000 100000" = 2 CPUs; "max" = none) or v1
    // cpu.cfs_quota_us / cpu.cfs_period_us, the smallest along the cgroup's path up to the
    // mount (found from /proc/self/cgroup and /proc/self/mountinfo; a malformed or unreadable
    // limit file is ignored), as Go sets GOMAXPROCS since 1.25. The quota is read once, at
    // create(); placement_report()'s first line says which count was chosen and why. An
    // explicit count (1 .. kMaxWorkers) is used as given, whatever the quota. More workers
    // than CPUs is allowed: workers are then placed round-robin over `cpus`.
    int workers = kAutoWorkers;
    // OS indexes of the processing units to use; empty means all PUs the process may use.
    std::vector<int> cpus;
    // Bind each worker OS thread to its PU with hwloc. false: the kernel places them, which
    // can do better when other busy processes share the CPUs (a woken worker may move off a
    // CPU another process holds; docs/httpd.md measures it).
    bool pin = true;
    // Default lwkt thread stack size (bytes, rounded up to pages; guard region extra).
    std::size_t stack_size = 64 * 1024;
    // Debug: fill every lwkt thread's stack with a pattern when the thread is created, so
    // that the most stack it has used so far can be measured: snapshot() reports it
    // (thread_info::stack_used, ps()'s STACK column), and a thread that exits having used
    // over 80% of its stack prints a warning naming it. Costs a write of the whole stack
    // per create; off by default.
    bool stack_watermark = false;
    // PROT_NONE guard region mapped below every lwkt thread stack (bytes, rounded up to
    // pages; at least one page, at most kMaxGuardSize). A thread that runs off the bottom
    // of its stack faults there and the process aborts with "stack overflow in lwkt thread
    // '<name>' ...". A frame larger than the guard can step over it into the neighbouring
    // mapping unless its code probes the stack as it grows (gcc/clang
    // -fstack-clash-protection; build your code with it). The default, 64 KiB, is what
    // both architectures need:
    //   - x86-64: stack-clash-protected code probes every 4 KiB page, so any guard works;
    //     unprotected code is still caught unless one frame exceeds about 64 KiB.
    //   - AArch64: gcc's stack-clash protection assumes a 64 KiB guard
    //     (--param stack-clash-protection-guard-size=16, its default) and leaves frames
    //     below that unprobed, so a smaller guard is skipped even by protected code.
    // The guard costs address space only (never touched, never committed); a stack is two
    // mappings whatever its guard size (see vm.max_map_count).
    std::size_t guard_size = kDefaultGuardSize;
    // Per-worker cap on cached free threads (object + stack).
    std::size_t thread_cache = 64;
    // How long an idle worker polls for work before parking its OS thread in the kernel.
    absl::Duration idle_spin = absl::Microseconds(50);
    // Adaptive idle spin: 0 (default) polls idle_spin every time. A fraction of one CPU in
    // (0, 1]: each worker learns how long its idle gaps are and picks, up to idle_spin, the
    // spin window that catches the most of them while the CPU it burns beyond parking at
    // once stays within this budget (0.1: a tenth of a CPU per worker). Short gaps, which
    // cost less to spin through than to park and wake for, are always spun. See
    // lwkt/internal/idle_policy.h and the report's idle-policy table for what it buys.
    double idle_cpu_budget = 0;
    // I/O backend (see io_backend). From its first I/O operation on, a parked worker
    // sleeps in its io_uring (completions, timeouts and kicks in one wait) and is kicked
    // through an eventfd armed in the ring, whatever `kick` says.
    io_backend io = io_backend::automatic;
    // How a parked worker sleeps and is woken until it does I/O: a futex on its park word
    // (default, measured fastest here: see docs/ipiq.md) or an eventfd.
    ipiq::kick_mechanism kick = ipiq::kick_mechanism::futex;
    // A thread that cannot get its tokens for this long prints one warning naming the token
    // and the thread (per contention episode). Zero: never warn.
    absl::Duration token_warn = absl::Seconds(1);
    // Preemption by preemptable threads (thread_options::preemptable); false refuses all.
    bool preempt = true;
    // Round-robin slice among equal-priority threads; checked at yield points.
    // Zero: every yield rotates.
    absl::Duration rr_slice = absl::Milliseconds(1);
    // Stall detector. A worker runs one lwkt thread at a time, so a thread that computes
    // for long, or blocks its OS thread in a system call (usleep, a blocking read, a
    // std::mutex), stalls every other thread of its worker. A watchdog OS thread samples
    // each worker every stall_budget / 2 (at least 1 ms) and reports, once per stall, a
    // thread that has run longer than stall_budget without reaching a switch point (any
    // call that may switch: yield, yield_quick, maybe_yield, tsleep, a join, a contended
    // token, ...). The report is a line from the watchdog ("lwkt: stall: worker 1 has run
    // one thread for 12 ms without a switch point ...") and, from the worker itself, the
    // thread's name and its backtrace; Runtime::stats().stalls counts reports. Message
    // handlers that run long count against the thread they interrupted; the idle thread
    // (polling or parked) never stalls. Zero: off (no watchdog thread).
    absl::Duration stall_budget = absl::Milliseconds(10);
    // The signal that asks a stalled worker for its backtrace (the handler, async-signal-
    // safe, records it and returns, and the watchdog prints it; a signal not sent by the
    // watchdog goes to the handler installed before). SIGURG by default, as Go's preemption uses: ignored by default,
    // and gdb neither stops nor prints on it. It interrupts a system call the stalled
    // thread is blocked in, as any signal does: restartable calls restart (SA_RESTART),
    // sleeps such as usleep return early with EINTR. 0: report without a backtrace, and
    // send no signal. Under ThreadSanitizer, handlers run only at the thread's next
    // intercepted call, often after the stall: the backtrace then says the stall ended.
    int stall_signal = SIGURG;
    // An OS signal (e.g. SIGQUIT, or SIGUSR1) on which Runtime::snapshot().ps() is printed
    // to stderr, without stopping the process (like Go's SIGQUIT dump). The handler only
    // wakes the watchdog thread, which takes the snapshot (it waits for each worker to
    // answer). Installed at create(), the previous disposition restored when the last
    // runtime using the signal shuts down. 0 (default): none.
    int ps_signal = 0;
    // Trace export. Each worker records its last `trace_events` scheduler events in a ring
    // of its own (64 bytes each; the oldest are overwritten): switches (running slices),
    // schedules (local, and sent to another worker), threads woken, IPI sends and drains,
    // token contention, tsleep, wakeup, create and exit, with cheap-clock (TSC / CNTVCT)
    // timestamps. write_trace() writes them on demand, and a non-empty `trace_path` is
    // written at shutdown, as Chrome trace JSON: open it in https://ui.perfetto.dev or
    // chrome://tracing (one track per worker). 0 (default): off; each hook is then one
    // predictable branch. At most kMaxTraceEvents.
    std::size_t trace_events = 0;
    std::string trace_path;
  };
  static constexpr std::size_t kMaxTraceEvents = std::size_t{1} << 20;  // 64 MiB a worker

  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Runtime>> create(const Options& opts);
  // Calls shutdown() if it was not called. In a child forked from the process that created
  // the runtime (see "fork" above) it does nothing at all: no teardown, no abort.
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Creates an lwkt thread. Same rules and errors as lwkt::create(); may be called from any
  // OS thread, including one that is not a worker. Returns once the thread exists on its
  // worker (it may already be running).
  [[nodiscard]] absl::StatusOr<thread_ref> spawn(absl::AnyInvocable<void()> fn,
                                                 const thread_options& opts = {});
  [[nodiscard]] absl::StatusOr<thread_ref> spawn(void (*fn)(void*), void* arg,
                                                 const thread_options& opts = {});

  // Stops accepting new threads; with I/O active (io/io.h), cancels every I/O operation in
  // flight and refuses new ones (those calls return ECANCELED), so that threads blocked in
  // I/O can finish; waits up to `grace` for every lwkt thread to exit, then
  // stops and joins the workers and frees every stack. Threads still alive after `grace`
  // (blocked forever) are abandoned: their stacks are freed without unwinding, their
  // thread_refs report abandoned(), and the returned status (FailedPrecondition) names each
  // with its worker. Idempotent; later calls return the first result.
  // Runs on: any OS thread that is not one of this runtime's workers.
  absl::Status shutdown(absl::Duration grace = absl::Seconds(10));

  // Wakes this runtime's tsleep sleepers on `ident` (as lwkt::wakeup) / at least one of them
  // (as lwkt::wakeup_one), from any OS thread, and only this runtime's (lwkt::wakeup
  // reaches every runtime in the process): from outside the runtime each worker with a
  // sleeper in ident's hash slot gets a message. They keep working through shutdown's grace period (so that a thread waiting
  // for them can finish) and are no-ops once it has ended. Runs on: any OS thread.
  void wakeup(const void* ident);
  void wakeup_one(const void* ident);

  // Every worker's and thread's state (name, state, priority, worker, wait message, run
  // time, switch counts, tokens), each worker's part taken by the worker itself; ps()
  // renders it. FailedPrecondition once shutdown has begun.
  // Runs on: any OS thread (an lwkt thread blocks only itself while it waits).
  [[nodiscard]] absl::StatusOr<runtime_snapshot> snapshot();

  int workers() const;
  std::vector<worker_info> placement() const;
  // "workers: 2 (automatic: 64 PUs in the cpuset, cgroup cpu.max 200000/100000 = 2 CPUs)"
  // (or "(Options.workers)"), then one line per worker: "worker 0: PU 3 (core 1, NUMA node
  // 0), pinned".
  std::string placement_report() const;
  // The machine as hwloc sees it: packages, NUMA nodes, cores, PUs.
  std::string topology_report() const;
  // Writes the events recorded so far (Options::trace_events) to `path` as Chrome trace
  // JSON, each worker's part copied by the worker itself. FailedPrecondition when tracing is
  // off or shutdown has begun (Options::trace_path writes it at shutdown); the error of
  // opening or writing the file otherwise.
  // Runs on: any OS thread (an lwkt thread blocks only itself while it waits).
  absl::Status write_trace(const std::string& path);

  // Counters summed over workers (exact once the runtime is quiescent; after shutdown(),
  // the final counts).
  runtime_stats stats() const;

 private:
  explicit Runtime(std::unique_ptr<internal::runtime_state> s);
  std::unique_ptr<internal::runtime_state> _s;
};

}  // namespace lwkt
