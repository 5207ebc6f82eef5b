// Migration between workers (DragonFly lwkt_setcpu_self, lwkt_migratecpu, lwkt_giveaway,
// lwkt_acquire). A thread moves only while it is off every run queue and off its stack on
// the old worker; ownership passes with a message, so no two workers ever touch its
// scheduling state at once.
#include <algorithm>
#include <mutex>

#include "ipiq/internal/chaos.h"
#include "lwkt/internal/clock.h"
#include "lwkt/internal/runtime_state.h"
#include "lwkt/internal/sched_internal.h"
#include "lwkt/internal/ipi_internal.h"
#include "lwkt/ipi.h"
#include "lwkt/sched.h"

namespace lwkt {
namespace internal {
namespace {

void count_live(globaldata* gd, std::int64_t delta) {
  gd->gd_stats.live_threads.store(gd->gd_stats.live_threads.load(std::memory_order_relaxed) + delta,
                                  std::memory_order_relaxed);
}

}  // namespace

// On the new owner: td is completely off its old worker, which published td_gd = gd and
// then sent this from switch_return. The ring's release/acquire pair (and td_gd's) orders
// everything the old owner did.
void ipi_adopt(void* arg, std::intptr_t, void*, void* ctx) {
  auto* gd = static_cast<globaldata*>(ctx);
  auto* td = static_cast<thread*>(arg);
  LWKT_ASSERT(!(td->td_flags & TDF_RUNNING), td, "adopted by worker %d while TDF_RUNNING",
              gd->gd_cpuid);
  LWKT_ASSERT(td->td_gd == gd, td, "adopted by worker %d, but its old owner handed it to %d",
              gd->gd_cpuid, td->td_gd ? td->td_gd->gd_cpuid : -1);
  link_allq(gd, td);
  count_live(gd, +1);
  td->td_flags &= ~TDF_MIGRATING;
  enqueue(gd, td);
}

}  // namespace internal

using internal::mycpu;

void setcpu_self(int cpu) {
  globaldata* gd = mycpu();
  LWKT_ASSERT(gd != nullptr, nullptr, "setcpu_self from an OS thread that is not a worker");
  thread* td = gd->gd_curthread;
  LWKT_ASSERT(cpu >= 0 && cpu < gd->gd_ncpus, td, "setcpu_self to worker %d of %d", cpu,
              gd->gd_ncpus);
  LWKT_ASSERT(!(td->td_flags & TDF_IDLETHREAD), td, "the idle thread cannot migrate");
  LWKT_ASSERT(td->td_critcount == 0, td,
              "migration inside a critical section (td_critcount=%d)", td->td_critcount);
  LWKT_ASSERT(td->td_cscount == 0, td, "migration while mastering a cpusync");
  LWKT_ASSERT(td->td_io_inflight == 0, td,
              "setcpu_self of a thread that owns %u armed I/O object(s) (io/io.h: an "
              "io::listener or io::pooled_receiver keeps its thread on its worker)",
              td->td_io_inflight);
  globaldata* target = gd->gd_runtime->gds[static_cast<std::size_t>(cpu)];
  if (target == gd) return;
  ++td->td_critcount;
  // Usually one pass. But once adopted by `target`, and before it runs there, the thread
  // (not running) can be given away: it then resumes on the acquirer's worker, and moves
  // again.
  while (gd != target) {
    internal::sleep_exit_cleanup(gd, td);  // sleep queues are per worker
    internal::dequeue(gd, td);
    td->td_flags |= TDF_MIGRATING;
    internal::unlink_allq(gd, td);
    internal::count_live(gd, -1);
    td->td_migrate_gd = target;
    lwkt_switch();  // resumes on `target`, queued there by ipi_adopt
    gd = mycpu();   // a fresh read: this code now runs on another OS thread
    LWKT_ASSERT(td->td_gd == gd, td, "migration to worker %d resumed on worker %d, which does "
                "not own it", cpu, gd->gd_cpuid);
  }
  crit_exit();
}

void migratecpu(int cpu) { setcpu_self(cpu); }

void giveaway(thread* td) {
  globaldata* gd = mycpu();
  LWKT_ASSERT(gd && td->td_gd == gd, td, "giveaway from a worker that does not own it");
  LWKT_ASSERT(td != gd->gd_curthread, td, "giveaway of the running thread (use setcpu_self)");
  LWKT_ASSERT(!(td->td_flags & (TDF_RUNNING | TDF_EXITING | TDF_MIGRATING | TDF_PREEMPT_LOCK |
                                TDF_IDLETHREAD)),
              td,
              "giveaway of a thread that is running, exiting, migrating or parked under a "
              "preemption chain (flags=0x%x)",
              td->td_flags);
  LWKT_ASSERT(td->td_io_inflight == 0, td,
              "giveaway of a thread with %u I/O operation(s) in flight or armed I/O object(s) "
              "(io/io.h: such a thread stays on its worker)",
              td->td_io_inflight);
  ++gd->gd_curthread->td_critcount;
  // Queued (a schedule that arrived, perhaps a stray one): it travels runnable. The run
  // queue is per worker, so it leaves ours now and acquire() queues it on the new owner.
  const bool runnable = td->td_flags & TDF_RUNQ;
  if (runnable) internal::dequeue(gd, td);
  internal::sleep_exit_cleanup(gd, td);  // sleep queues and timers are per worker
  internal::unlink_allq(gd, td);
  internal::count_live(gd, -1);
  {
    // On no worker's thread list until acquired: shutdown must still find it.
    std::lock_guard<std::mutex> l(gd->gd_runtime->transit_mu);
    gd->gd_runtime->in_transit.push_back(td);
  }
  td->td_flags |= TDF_MIGRATING;
  // A deferred schedule left by an earlier transit is stale now; a queued thread leaves one
  // for acquire() instead, which queues it.
  if (runnable) {
    td->td_mpflags.fetch_or(TDF_MP_SCHEDPEND, std::memory_order_relaxed);
  } else {
    td->td_mpflags.fetch_and(~TDF_MP_SCHEDPEND, std::memory_order_relaxed);
  }
  // Our last writes to td: no owner (requests are deferred to acquire, see
  // defer_schedule), then the flag acquire() waits for. release (both): everything the old
  // owner did to td happens before anyone that reads either acts on td.
  internal::flush_deferred_rele(gd, td);  // gd_rele_td names only threads gd owns
  td->td_gd = nullptr;
  ipiq::chaos::point(ipiq::chaos::kOwnerHandoff);
  td->td_mpflags.fetch_or(TDF_MP_GIVEN, std::memory_order_release);
  crit_exit();
}

void acquire(thread* td) {
  globaldata* gd = mycpu();
  LWKT_ASSERT(gd != nullptr, td, "acquire from an OS thread that is not a worker");
  ++gd->gd_curthread->td_critcount;
  // The giver may still be finishing giveaway() on its worker: wait, serving our messages.
  while (!(td->td_mpflags.load(std::memory_order_acquire) & TDF_MP_GIVEN)) {
    internal::process_ipiq(gd);
    internal::cpu_pause();
  }
  LWKT_ASSERT(td->td_flags & TDF_MIGRATING, td, "acquire of a thread that was not given away");
  {
    std::lock_guard<std::mutex> l(gd->gd_runtime->transit_mu);
    auto& v = gd->gd_runtime->in_transit;
    v.erase(std::remove(v.begin(), v.end(), td), v.end());
  }
  internal::link_allq(gd, td);
  internal::count_live(gd, +1);
  td->td_flags &= ~TDF_MIGRATING;
  // Publish the new owner, then collect a schedule() that found td in transit (the Dekker
  // pair with defer_schedule in sched.cc: seq_cst store, then seq_cst RMW).
  td->td_gd.store_seq_cst(gd);
  ipiq::chaos::point(ipiq::chaos::kOwnerHandoff);
  const std::uint32_t mp = td->td_mpflags.fetch_and(~(TDF_MP_GIVEN | TDF_MP_SCHEDPEND),
                                                    std::memory_order_seq_cst);
  if (mp & TDF_MP_SCHEDPEND) internal::enqueue(gd, td);
  crit_exit();
}

}  // namespace lwkt
