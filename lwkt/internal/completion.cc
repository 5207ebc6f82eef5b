#include "lwkt/internal/completion.h"

#include <climits>

#include "ipiq/internal/futex.h"
#include "lwkt/internal/clock.h"
#include "lwkt/internal/sched_internal.h"
#include "lwkt/sched.h"

namespace lwkt::internal {

void completion::wait() {
  globaldata* gd = mycpu();
  std::uint32_t s = kPending;
  if (gd) {
    thread* td = gd->gd_curthread;
    LWKT_ASSERT(gd->gd_intr_nesting_level == 0, td, "blocking wait inside a message handler");
    LWKT_ASSERT(!(td->td_flags & TDF_IDLETHREAD), td, "the idle thread cannot block");
    ++td->td_critcount;
    c_waiter = td;
    // acq_rel: publishes c_waiter to signal() (which reads it after its acquire exchange).
    if (c_state.compare_exchange_strong(s, kLwktWaiter, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
      // Blocked until signal() schedules us. A stray schedule may resume us early; the loop
      // re-blocks until the state says done (signal() schedules us after storing kDone, so
      // a resume that finds kSignalling is always followed by that schedule).
      while (c_state.load(std::memory_order_acquire) != kDone) {
        dequeue(gd, td);
        if (c_state.load(std::memory_order_acquire) != kDone) lwkt_switch();
        // A blocked waiter may have been given away and acquired by another worker: it now
        // runs there, and that worker's run queue is the one to rejoin.
        gd = mycpu();
        enqueue(gd, td);
      }
    }
    // Lost the race to a signaller (kSignalling or kDone): it will not schedule us, and
    // kSignalling lasts a few instructions.
    while (c_state.load(std::memory_order_acquire) != kDone) cpu_pause();
    crit_exit();
    return;
  }
  if (c_state.compare_exchange_strong(s, kOsWaiter, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
    s = kOsWaiter;
  }
  while ((s = c_state.load(std::memory_order_acquire)) != kDone) {
    if (s == kOsWaiter) {
      ipiq::internal::futex_wait(&c_state, kOsWaiter);
    } else {
      cpu_pause();
    }
  }
}

void completion::signal() {
  // acq_rel: acquires the waiter's c_waiter store; releases everything before signal().
  std::uint32_t prev = c_state.exchange(kSignalling, std::memory_order_acq_rel);
  LWKT_ASSERT(prev == kPending || prev == kLwktWaiter || prev == kOsWaiter, nullptr,
              "completion signalled twice (state %u)", prev);
  if (prev == kLwktWaiter) {
    thread* w = c_waiter;
    globaldata* gd = mycpu();
    if (gd && w->td_gd == gd) {
      // Same worker: w cannot run before we switch, so no hold is needed.
      c_state.store(kDone, std::memory_order_release);
      wakeup_thread(w);
      return;
    }
    hold(w);  // w may run (and exit) as soon as it sees kDone
    // release: pairs with the waiter's acquire loads; after this store the completion may
    // be gone.
    c_state.store(kDone, std::memory_order_release);
    wakeup_thread(w);
    rele(w);
    return;
  }
  c_state.store(kDone, std::memory_order_release);
  // A stale address at worst yields a spurious wakeup; futex_wake does not dereference it.
  if (prev == kOsWaiter) ipiq::internal::futex_wake(&c_state, INT_MAX);
}

bool completion::signal_if_local_waiter(const globaldata* gd) {
  // acquire: pairs with the waiter's CAS to kLwktWaiter, which published c_waiter. Once in
  // that state only signal() changes it, and a waiter on gd stays blocked meanwhile.
  if (c_state.load(std::memory_order_acquire) != kLwktWaiter || c_waiter->td_gd != gd) {
    return false;
  }
  signal();
  return true;
}

void completion::signal_abandoned() {
  std::uint32_t prev = c_state.exchange(kSignalling, std::memory_order_acq_rel);
  c_state.store(kDone, std::memory_order_release);
  if (prev == kOsWaiter) ipiq::internal::futex_wake(&c_state, INT_MAX);
}

}  // namespace lwkt::internal
