// globaldata.h
//
// globaldata: one worker's per-CPU state (DragonFly `struct globaldata`, "gd"). Allocated on
// the worker's NUMA node. Fields are grouped by writer:
//   - owner block: read and written only by the worker's OS thread, inside a critical
//     section of its current thread (the run queue, the thread list, the caches);
//   - foreign blocks, each on its own cache-line pair: written by other OS threads (the
//     inbox, the request flags, the parker, the stop flag).
// Statistics are written by the owner and read by anyone (relaxed atomics, store-only).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ipiq/inbox.h"
#include "ipiq/parker.h"
#include "ipiq/ring.h"
#include "lwkt/cpumask.h"
#include "lwkt/internal/idle_policy.h"
#include "lwkt/internal/runq.h"
#include "lwkt/thread.h"

namespace lwkt {
namespace internal {
struct runtime_state;
struct trace_ring;
}

// 128: pairs of lines interfere under heavy atomics (adjacent-line prefetch).
inline constexpr std::size_t kCacheLineGap = 128;
// Sleep queue hash slots (per worker) and the runtime-wide "workers with sleepers" table.
inline constexpr std::size_t kSleepHash = 1024;
// The delivery bound of a passive IPI to an idle (parked) worker, DragonFly's clock tick.
inline constexpr std::int64_t kPassiveTickNs = 10'000'000;

// gd_reqflags bits, set by any OS thread (atomic OR), cleared by the owner.
// RQF_IPIQ: messages may wait in gd_inbox or a ring. Sticky: the owner clears it only after
// repeated drains found nothing (drain_all in sched.cc), so it is a hint to look.
inline constexpr std::uint32_t RQF_IPIQ = 0x001;
inline constexpr std::uint32_t RQF_STOP = 0x002;   // shutdown: switch to the idle thread
inline constexpr std::uint32_t RQF_IDLECHECK_MASK = RQF_IPIQ | RQF_STOP;
// gd_ast bits, owner only.
inline constexpr std::uint32_t RQF_AST_LWKT_RESCHED = 0x020;  // switch at the next yield point
inline constexpr std::uint32_t RQF_AST_PREEMPT = 0x040;  // a refused preemption: retry at crit_exit

namespace internal {
// A worker's I/O slot (internal/io_hook.h; owner block, touched by that worker only).
struct worker_io {
  // The I/O provider's per-worker state, created by the owner on first use (release) and
  // freed when it stops; read by others (acquire) only to add up statistics.
  std::atomic<void*> state{nullptr};
  std::uint32_t backend = 0;  // the provider's per-runtime choice (io_config::backend)
  bool closing = false;       // shutdown began: operations are cancelled, new ones refused
  // The worker's io_uring fd while its ring is open, else -1: another worker's kick may
  // post into it (IORING_OP_MSG_RING). Set (release) by the owner after creating the ring,
  // cleared before closing it; a kick that read a stale value reaches a closed or reused
  // descriptor, which at worst wakes some ring spuriously.
  std::atomic<int> ring_fd{-1};
  // The parker's eventfd whose read the ring keeps armed (-1 until the ring exists): a
  // kicker whose MSG_RING failed writes it instead.
  std::atomic<int> kick_fd{-1};
  // Non-zero while operations are prepared or in flight: switch points call its flush.
  std::uint32_t busy = 0;
};
}  // namespace internal

// A statistic written by the owner only and read by anyone: no RMW needed.
struct owner_counter {
  std::atomic<std::uint64_t> v{0};
  void add(std::uint64_t n = 1) { v.store(v.load(std::memory_order_relaxed) + n,
                                          std::memory_order_relaxed); }
  std::uint64_t get() const { return v.load(std::memory_order_relaxed); }
};

struct worker_stats {
  owner_counter switches;         // context switches performed
  owner_counter threads_created;  // threads born on this worker
  owner_counter threads_reaped;
  owner_counter stacks_mapped;    // mmap system calls for stacks
  owner_counter stacks_unmapped;  // munmap system calls for stacks
  owner_counter cache_hits;       // creates served from the free-thread cache
  owner_counter messages;         // inbox messages processed
  owner_counter parks;            // times the worker slept in the kernel
  owner_counter ipis_sent;        // ring messages sent by this worker
  owner_counter ipi_waits;        // sends that found the ring full and waited
  // lwkt_preempt: attempts, preemptions taken, and refusals by reason.
  owner_counter preempt_attempts;
  owner_counter preempt_taken;
  owner_counter preempt_refused_disabled;
  owner_counter preempt_refused_priority;   // not strictly better than the running thread
  owner_counter preempt_refused_critical;   // the caller was in a critical section
  owner_counter preempt_refused_context;    // message handler or cpusync master
  owner_counter preempt_refused_tokens;     // the preemptor holds tokens
  owner_counter preempt_refused_chain;      // already part of a chain
  std::atomic<std::int64_t> live_threads{0};  // owner-written: threads alive on this worker
};

struct globaldata {
  // ---- Identity, fixed after start: on a line of its own, because every sender to this
  // worker reads it (a field beside gd_curthread, which the owner writes at every switch,
  // would travel between the workers' caches on every message).
  alignas(kCacheLineGap) int gd_cpuid = 0;  // worker index
  int gd_ncpus = 0;                    // workers in the runtime
  internal::runtime_state* gd_runtime = nullptr;
  // All rings, allocated on first send (ipi.cc: ring_for_send): ring (s -> t) is
  // gd_rings[s * ncpus + t], null until worker s first sends to t.
  std::atomic<ipiq::ring*>* gd_rings = nullptr;

  // ---- Owner block.
  alignas(kCacheLineGap) thread* gd_curthread = nullptr;
  internal::runq gd_tdrunq;
  thread* gd_tdallq = nullptr;         // all live threads of this worker (td_all_* links)
  thread gd_idlethread;                // runs the idle loop on the worker's OS-thread stack
  std::uint32_t gd_ast = 0;            // RQF_AST_*
  int gd_intr_nesting_level = 0;       // > 0 while running message handlers (no switching)
  int gd_processing_ipiq = 0;          // nesting depth of ring draining
  std::uint32_t gd_ipiq_empty_drains = 0;  // drains in a row that ran nothing (drain_all)
  // cpusync participation: requests seen but not yet released by their master (polled by
  // the drain loop, DragonFly's gd_cpusyncq).
  std::vector<void*> gd_cpusync_pending;
  // tsleep queues (td_sleep_* links), one list per hash slot, and the armed sleep timers as
  // a min-heap on td_timeout_at (td_timer_index tracks each thread's slot).
  thread* gd_sleepq[kSleepHash] = {};
  thread* gd_sleepq_tail[kSleepHash] = {};  // sleepers append (FIFO: wakeup_one wakes the oldest)
  std::vector<thread*> gd_timers;
  // Runtime-wide: slot h's workers-with-sleepers mask is gd_slpque_cpumasks[h * kMaskWords].
  std::atomic<std::uint64_t>* gd_slpque_cpumasks = nullptr;
  // Free-thread cache (DragonFly gd_freetd, made a capped list): reaped threads whose object
  // and stack can both be reused, linked through td_all_next.
  thread* gd_freetd = nullptr;
  std::size_t gd_freetd_count = 0;
  std::vector<thread_stack> gd_freestacks;  // stacks whose object was still referenced
  // Holds that this worker's schedule handlers consumed but have not yet given back to
  // td_refs (rele_deferred in thread.cc): all on gd_rele_td, a thread this worker owns.
  // Invariant: gd_rele_td is null or owned by this worker; whatever gives a thread away or
  // reaps it flushes its entry first, so td_refs is exact wherever it is looked at.
  thread* gd_rele_td = nullptr;
  std::int32_t gd_rele_count = 0;
  // Copied from the options at start.
  std::size_t gd_default_stack = 0;
  bool gd_stack_watermark = false;   // Runtime::Options::stack_watermark
  std::size_t gd_cache_max = 0;
  std::uint64_t gd_slice_ticks = 0;    // round-robin slice in cheap-clock ticks (0: always)
  std::uint64_t gd_idle_spin_ticks = 0;
  bool gd_idle_adaptive = false;       // Options::idle_cpu_budget > 0: gd_idle chooses
  internal::idle_estimator gd_idle;    // the spin window (idle_policy.h)
  std::uint64_t gd_token_warn_ticks = 0;  // token contention warning threshold (0: never)
  // Stall detector (monitor.cc): bumped by 2 at every switch point (lwkt_switch, yield,
  // yield_quick, every switch); bit 0 is set while the idle thread runs. The watchdog reads
  // it (relaxed: it only compares values over time, it orders nothing) and reports a worker
  // whose value stays the same, bit 0 clear, for longer than Options::stall_budget.
  std::atomic<std::uint64_t> gd_progress{1};
  // I/O (internal/io_hook.h): gd_io.state is null until this worker's first operation.
  internal::worker_io gd_io;
  // Event recorder (Options::trace_events; internal/trace.h): null when tracing is off.
  internal::trace_ring* gd_trace = nullptr;
  // Accounting: when the current thread was switched in, and the load-average tick.
  std::uint64_t gd_switch_stamp = 0;
  std::uint64_t gd_loadav_period_ticks = 0;  // 5 s
  std::uint64_t gd_next_loadav = 0;          // cheap-clock time of the next sample
  double gd_loadav[3] = {0, 0, 0};           // 1, 5, 15 minutes (owner only)
  bool gd_preempt_enable = true;          // DragonFly lwkt.preempt_enable
  // Placement (fixed after start; readable by anyone after Runtime::create returns).
  int gd_pu = -1, gd_core = -1, gd_numa = -1;
  bool gd_pinned = false;
  int gd_tid = 0;                      // the worker OS thread's kernel id (gettid)
  void* gd_sigaltstack = nullptr;
  // This worker OS thread's C++ exception state (libstdc++ __cxa_eh_globals, fixed for the
  // OS thread's life): cpu_switch_to saves it into the outgoing thread and loads the
  // incoming thread's copy.
  eh_state* gd_eh = nullptr;

  worker_stats gd_stats;

  // ---- Written by other OS threads.
  alignas(kCacheLineGap) ipiq::inbox gd_inbox;                // producers: any OS thread
  alignas(kCacheLineGap) std::atomic<std::uint32_t> gd_reqflags{0};  // RQF_*; OR by anyone
  // Bit s: this worker watches ring (s -> this worker): its polls and drains read that
  // ring's next slot. Set by sender s (fetch_or) when it finds the bit clear after a push;
  // cleared by this worker only for a ring found empty, before it parks or after repeated
  // empty drains (unwatch_rings in ipi.cc), so a busy pair leaves the line alone
  // (DragonFly gd_ipimask, made sticky).
  std::atomic<std::uint64_t> gd_ipimask[kMaskWords] = {};
  alignas(kCacheLineGap) ipiq::parker gd_parker;              // kick: anyone
  std::atomic<bool> gd_stop{false};    // written: Runtime::shutdown; read: the idle loop
  // Shutdown handshake (runtime.cc): the worker sets gd_stopped once it will run no lwkt
  // thread again (it still runs messages); shutdown sets gd_exit once every worker's
  // messages are quiescent, and the idle loop then returns. gd_inbox_busy: set by the
  // owner while inbox handlers run (read by shutdown's quiescence check).
  std::atomic<bool> gd_stopped{false};
  std::atomic<bool> gd_exit{false};
  std::atomic<bool> gd_inbox_busy{false};
  // The watchdog's backtrace request: the gd_progress value it saw stall, stored (release)
  // before it signals this worker; the worker's handler takes it (exchange, acquire), so a
  // stray signal finds 0 and is passed on.
  alignas(kCacheLineGap) std::atomic<std::uint64_t> gd_stall_request{0};
  std::atomic<std::uint64_t> gd_stall_ms{0};  // how long it had stalled, for the message
  // What the handler captured for the monitor to print (the handler only records: the
  // symbolising and writing happen on the monitor thread, so the worker is held for a
  // backtrace() only). Written by the handler before `gd_stall_ready` (release); read by
  // the monitor after it (acquire), which then clears it.
  std::atomic<std::uint32_t> gd_stall_ready{0};
  bool gd_stall_ended = false;           // the stall was over when the signal arrived
  int gd_stall_npcs = 0;
  void* gd_stall_pcs[48] = {};
  char gd_stall_name[kMaxThreadName + 1] = {};
  // Set (once) by a sender of a passive IPI: this worker then parks at most kPassiveTick.
  std::atomic<bool> gd_passive_inbound{false};
};

namespace internal {
// The globaldata of the calling OS thread, null when it is not a worker. Written only when
// a worker starts and stops; read through mycpu().
extern thread_local globaldata* t_mycpu asm("lwkt_t_mycpu") __attribute__((tls_model("initial-exec")));

// mycpu(): the calling OS thread's globaldata, read afresh on every call.
//
// The TLS hazard: an lwkt thread can migrate to another worker (another OS thread) inside
// any call that may switch. Compilers assume the thread pointer is constant within a
// function, so they may compute a TLS address once (AArch64: one `mrs tpidr_el0`) and reuse
// it after such a call, reading the *old* worker's data. Every runtime read of the current
// worker therefore goes through this volatile asm, which the compiler can neither cache nor
// move across calls (the "memory" clobber); user code that keeps per-worker data in its own
// thread_locals must do the same (lwkt::per_worker<T>::local() in lwkt/per_worker.h does).
inline globaldata* mycpu() {
  globaldata* gd;
#if defined(__x86_64__)
  asm volatile("movq lwkt_t_mycpu@gottpoff(%%rip), %0\n\t"
               "movq %%fs:(%0), %0"
               : "=r"(gd)
               :
               : "memory");
#elif defined(__aarch64__)
  unsigned long tp;
  asm volatile("mrs %1, tpidr_el0\n\t"
               "adrp %0, :gottprel:lwkt_t_mycpu\n\t"
               "ldr %0, [%0, #:gottprel_lo12:lwkt_t_mycpu]\n\t"
               "ldr %0, [%1, %0]"
               : "=&r"(gd), "=&r"(tp)
               :
               : "memory");
#endif
  return gd;
}

// A switch point passed: the stall detector's heartbeat (owner only: load + store).
inline void note_switch_point(globaldata* gd) {
  gd->gd_progress.store(gd->gd_progress.load(std::memory_order_relaxed) + 2,
                        std::memory_order_relaxed);
}
}  // namespace internal

}  // namespace lwkt
