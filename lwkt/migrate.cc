// Migration between workers (DragonFly lwkt_setcpu_self, lwkt_migratecpu, lwkt_giveaway,
// lwkt_acquire). A thread moves only while it is off every run queue and off its stack on
// the old worker; ownership passes with a message, so no two workers ever touch its
// scheduling state at once.
#include "lwkt/internal/clock.h"
#include "lwkt/internal/runtime_state.h"
#include "lwkt/internal/sched_internal.h"
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

// On the new owner: td is completely off its old worker (the old worker sent this from
// switch_return). The ring's release/acquire pair orders everything the old owner did.
void ipi_adopt(void* arg, std::intptr_t, void*, void* ctx) {
  auto* gd = static_cast<globaldata*>(ctx);
  auto* td = static_cast<thread*>(arg);
  LWKT_ASSERT(!(td->td_flags & TDF_RUNNING), td, "adopted by worker %d while TDF_RUNNING",
              gd->gd_cpuid);
  td->td_gd = gd;
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
  globaldata* target = gd->gd_runtime->gds[static_cast<std::size_t>(cpu)];
  if (target == gd) return;
  ++td->td_critcount;
  internal::sleep_exit_cleanup(gd, td);  // sleep queues are per worker
  internal::dequeue(gd, td);
  td->td_flags |= TDF_MIGRATING;
  internal::unlink_allq(gd, td);
  internal::count_live(gd, -1);
  td->td_migrate_gd = target;
  lwkt_switch();  // resumes on `target`, queued there by ipi_adopt
  gd = mycpu();   // a fresh read: this code now runs on another OS thread
  LWKT_ASSERT(gd == target && td->td_gd == gd, td, "migration to worker %d ended on worker %d",
              cpu, gd->gd_cpuid);
  crit_exit();
}

void migratecpu(int cpu) { setcpu_self(cpu); }

void giveaway(thread* td) {
  globaldata* gd = mycpu();
  LWKT_ASSERT(gd && td->td_gd == gd, td, "giveaway from a worker that does not own it");
  LWKT_ASSERT(td != gd->gd_curthread, td, "giveaway of the running thread (use setcpu_self)");
  LWKT_ASSERT(!(td->td_flags & (TDF_RUNQ | TDF_RUNNING | TDF_EXITING)), td,
              "giveaway of a thread that is queued, running or exiting (flags=0x%x)",
              td->td_flags);
  ++gd->gd_curthread->td_critcount;
  internal::sleep_exit_cleanup(gd, td);  // sleep queues and timers are per worker
  internal::unlink_allq(gd, td);
  internal::count_live(gd, -1);
  td->td_flags |= TDF_MIGRATING;
  // release: pairs with the acquire in acquire(); everything the old owner did to td
  // happens before the new owner touches it.
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
  td->td_mpflags.fetch_and(~TDF_MP_GIVEN, std::memory_order_relaxed);
  td->td_gd = gd;
  internal::link_allq(gd, td);
  internal::count_live(gd, +1);
  td->td_flags &= ~TDF_MIGRATING;
  crit_exit();
}

}  // namespace lwkt
