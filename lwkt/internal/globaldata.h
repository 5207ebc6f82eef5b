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
#include "lwkt/internal/runq.h"
#include "lwkt/thread.h"

namespace lwkt {
namespace internal {
struct runtime_state;
}

// 128: pairs of lines interfere under heavy atomics (adjacent-line prefetch).
inline constexpr std::size_t kCacheLineGap = 128;

// gd_reqflags bits, set by any OS thread (atomic OR), cleared by the owner.
inline constexpr std::uint32_t RQF_IPIQ = 0x001;   // messages wait in gd_inbox
inline constexpr std::uint32_t RQF_IDLECHECK_MASK = RQF_IPIQ;
// gd_ast bits, owner only.
inline constexpr std::uint32_t RQF_AST_LWKT_RESCHED = 0x020;  // switch at the next yield point

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
  std::atomic<std::int64_t> live_threads{0};  // owner-written: threads alive on this worker
};

struct globaldata {
  // ---- Owner block.
  thread* gd_curthread = nullptr;
  int gd_cpuid = 0;                    // worker index
  internal::runtime_state* gd_runtime = nullptr;
  internal::runq gd_tdrunq;
  thread* gd_tdallq = nullptr;         // all live threads of this worker (td_all_* links)
  thread gd_idlethread;                // runs the idle loop on the worker's OS-thread stack
  std::uint32_t gd_ast = 0;            // RQF_AST_*
  int gd_intr_nesting_level = 0;       // > 0 while running message handlers (no switching)
  // Free-thread cache (DragonFly gd_freetd, made a capped list): reaped threads whose object
  // and stack can both be reused, linked through td_all_next.
  thread* gd_freetd = nullptr;
  std::size_t gd_freetd_count = 0;
  std::vector<thread_stack> gd_freestacks;  // stacks whose object was still referenced
  // Copied from the options at start.
  std::size_t gd_default_stack = 0;
  std::size_t gd_cache_max = 0;
  std::uint64_t gd_slice_ticks = 0;    // round-robin slice in cheap-clock ticks (0: always)
  std::uint64_t gd_idle_spin_ticks = 0;
  // Placement (fixed after start; readable by anyone after Runtime::create returns).
  int gd_pu = -1, gd_core = -1, gd_numa = -1;
  bool gd_pinned = false;
  void* gd_sigaltstack = nullptr;

  worker_stats gd_stats;

  // ---- Written by other OS threads.
  alignas(kCacheLineGap) ipiq::inbox gd_inbox;                // producers: any OS thread
  alignas(kCacheLineGap) std::atomic<std::uint32_t> gd_reqflags{0};  // RQF_*; OR by anyone
  alignas(kCacheLineGap) ipiq::parker gd_parker;              // kick: anyone
  std::atomic<bool> gd_stop{false};    // written: Runtime::shutdown; read: the idle loop
};

namespace internal {
// The globaldata of the calling OS thread, null when it is not a worker. The TLS address of
// a worker is fixed for the life of that OS thread.
extern thread_local globaldata* t_mycpu __attribute__((tls_model("initial-exec")));
}  // namespace internal

}  // namespace lwkt
