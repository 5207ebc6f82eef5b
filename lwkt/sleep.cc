// tsleep / wakeup (FreeBSD kern_synch.c, DragonFly kern_synch.c): per-worker sleep queues
// hashed by wait channel, a runtime-wide mask of workers with sleepers per hash slot,
// per-worker timer heaps for timeouts, and interruption.
#include "lwkt/sleep.h"

#include <algorithm>

#include "ipiq/internal/chaos.h"
#include "lwkt/internal/clock.h"
#include "lwkt/internal/runtime_state.h"
#include "lwkt/internal/sched_internal.h"
#include "lwkt/internal/trace.h"
#include "lwkt/ipi.h"
#include "lwkt/sched.h"

namespace lwkt {
namespace internal {
namespace {

constexpr int PWAKEUP_MYCPU = 0x4000;

std::size_t sleep_hash(const void* ident) {
  const auto p = reinterpret_cast<std::uintptr_t>(ident);
  return static_cast<std::size_t>(((p + (p >> 18)) ^ 66555444443333333ULL) & (kSleepHash - 1));
}

std::atomic<std::uint64_t>& mask_word(globaldata* gd, std::size_t h, int cpu) {
  return gd->gd_slpque_cpumasks[h * kMaskWords + static_cast<std::size_t>(cpu / 64)];
}

// ---- Timer heap (owner only): a binary min-heap on td_timeout_at.

bool earlier(const thread* a, const thread* b) { return a->td_timeout_at < b->td_timeout_at; }

void heap_place(std::vector<thread*>& h, std::size_t i, thread* td) {
  h[i] = td;
  td->td_timer_index = static_cast<int>(i);
}

void heap_up(std::vector<thread*>& h, std::size_t i) {
  thread* td = h[i];
  while (i > 0) {
    std::size_t p = (i - 1) / 2;
    if (!earlier(td, h[p])) break;
    heap_place(h, i, h[p]);
    i = p;
  }
  heap_place(h, i, td);
}

void heap_down(std::vector<thread*>& h, std::size_t i) {
  thread* td = h[i];
  for (;;) {
    std::size_t c = 2 * i + 1;
    if (c >= h.size()) break;
    if (c + 1 < h.size() && earlier(h[c + 1], h[c])) ++c;
    if (!earlier(h[c], td)) break;
    heap_place(h, i, h[c]);
    i = c;
  }
  heap_place(h, i, td);
}

void timer_add(globaldata* gd, thread* td, std::uint64_t at) {
  td->td_timeout_at = at;
  gd->gd_timers.push_back(td);
  heap_up(gd->gd_timers, gd->gd_timers.size() - 1);
}

void timer_remove(globaldata* gd, thread* td) {
  auto& h = gd->gd_timers;
  const auto i = static_cast<std::size_t>(td->td_timer_index);
  td->td_timer_index = -1;
  thread* last = h.back();
  h.pop_back();
  if (last == td) return;
  heap_place(h, i, last);
  heap_up(h, i);
  heap_down(h, static_cast<std::size_t>(last->td_timer_index));
}

// ---- Sleep queues (owner only).

void sleepq_remove(globaldata* gd, thread* td) {
  const std::size_t h = sleep_hash(td->td_wchan);
  if (td->td_sleep_prev) {
    td->td_sleep_prev->td_sleep_next = td->td_sleep_next;
  } else {
    gd->gd_sleepq[h] = td->td_sleep_next;
  }
  if (td->td_sleep_next) {
    td->td_sleep_next->td_sleep_prev = td->td_sleep_prev;
  } else {
    gd->gd_sleepq_tail[h] = td->td_sleep_prev;
  }
  td->td_sleep_next = td->td_sleep_prev = nullptr;
  td->td_flags &= ~TDF_TSLEEPQ;
  td->td_wchan = nullptr;
  if (gd->gd_sleepq[h] == nullptr) {
    // Our slot emptied: drop our bit (only we add sleepers to our slot, so no race with an
    // insertion; a remote waker reading a stale bit just sends a message that finds none).
    mask_word(gd, h, gd->gd_cpuid)
        .fetch_and(~(std::uint64_t{1} << (gd->gd_cpuid % 64)), std::memory_order_relaxed);
  }
}

void sleepq_insert(globaldata* gd, thread* td, const void* ident) {
  const std::size_t h = sleep_hash(ident);
  td->td_wchan = ident;
  // Appended, as DragonFly does: sleepers are woken in arrival order (wakeup_one: the oldest).
  td->td_sleep_next = nullptr;
  td->td_sleep_prev = gd->gd_sleepq_tail[h];
  if (td->td_sleep_prev) {
    td->td_sleep_prev->td_sleep_next = td;
  } else {
    gd->gd_sleepq[h] = td;
  }
  gd->gd_sleepq_tail[h] = td;
  td->td_flags |= TDF_TSLEEPQ;
  // seq_cst: the Dekker pair with wakeup(): either this bit is visible to a waker's mask read
  // (after its fence), or the sleeper's later check of its condition sees the waker's change.
  mask_word(gd, h, gd->gd_cpuid)
      .fetch_or(std::uint64_t{1} << (gd->gd_cpuid % 64), std::memory_order_seq_cst);
}

// Makes a sleeper runnable if it really sleeps (TDF_TSLEEP_DESCHEDULED); a thread that is
// only interlocked is just taken off the queue, so its tsleep returns at once.
bool wake_thread(globaldata* gd, thread* td) {
  sleepq_remove(gd, td);
  if (!(td->td_flags & TDF_TSLEEP_DESCHEDULED)) return false;
  trace(gd, trace_type::kWakeThread, td, 0, 0, td->td_comm);
  enqueue(gd, td);
  return true;
}

// Local part of wakeup: returns true if a sleeper was scheduled and `one` is set.
bool wakeup_local(globaldata* gd, const void* ident, bool one) {
  const std::size_t h = sleep_hash(ident);
  ++gd->gd_curthread->td_critcount;
  bool woke_one = false;
  for (thread* td = gd->gd_sleepq[h]; td;) {
    thread* next = td->td_sleep_next;
    if (td->td_wchan == ident && wake_thread(gd, td) && one) {
      woke_one = true;
      break;
    }
    td = next;
  }
  crit_exit();
  return woke_one;
}

}  // namespace

void ipi_wakeup(void* ident, std::intptr_t flags, void*, void* ctx) {
  wakeup_local(static_cast<globaldata*>(ctx), ident, flags & PWAKEUP_ONE);
}

namespace {

// Wakes the sleepers on ident in me's runtime. Returns true when a wakeup_one was satisfied
// on me itself (then nothing was sent, and other runtimes need not be asked either);
// otherwise the seq_cst fence below has run (wakeup_other_runtimes relies on it).
bool do_wakeup(globaldata* me, const void* ident, int flags) {
  trace(me, trace_type::kWakeup, me->gd_curthread, 0, reinterpret_cast<std::uintptr_t>(ident),
        nullptr);
  if (wakeup_local(me, ident, flags & PWAKEUP_ONE)) return true;  // wakeup_one satisfied
  // ordering: the caller's change of its condition must be ordered before the read of the
  // mask (store-load): pairs with the seq_cst fetch_or in sleepq_insert().
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const std::size_t h = sleep_hash(ident);
  for (int w = 0; w < kMaskWords; ++w) {
    std::uint64_t bits =
        me->gd_slpque_cpumasks[h * kMaskWords + static_cast<std::size_t>(w)].load(
            std::memory_order_seq_cst);
    while (bits) {
      const int cpu = w * 64 + __builtin_ctzll(bits);
      bits &= bits - 1;
      if (cpu == me->gd_cpuid) continue;
      send_ipi(me->gd_runtime->gds[static_cast<std::size_t>(cpu)], ipi_wakeup,
               const_cast<void*>(ident), flags | PWAKEUP_MYCPU, nullptr, false);
    }
  }
  return false;
}

void ipi_interrupt(void* arg, std::intptr_t, void*, void* ctx) {
  auto* gd = static_cast<globaldata*>(ctx);
  auto* td = static_cast<thread*>(arg);
  globaldata* owner = td->td_gd;  // see ipi_deschedule (sched.cc) for the ownership rule
  if (owner && owner != gd) {
    send_ipi(owner, ipi_interrupt, td, 0, nullptr, false);  // chase; the hold travels
    return;
  }
  // null: in transit after giveaway, off every sleep queue; TDF_MP_INTR stays pending.
  if (owner && (td->td_flags & TDF_SINTR) && (td->td_flags & TDF_TSLEEPQ)) wake_thread(gd, td);
  rele(td);
}

}  // namespace

void run_timers(globaldata* gd) {
  auto& h = gd->gd_timers;
  if (h.empty()) return;
  const std::uint64_t now = cheap_clock();
  while (!h.empty() && h.front()->td_timeout_at <= now) {
    thread* td = h.front();
    timer_remove(gd, td);
    td->td_flags |= TDF_TIMEOUT;
    if (td->td_flags & TDF_TSLEEPQ) wake_thread(gd, td);
  }
}

std::uint64_t next_timer(const globaldata* gd) {
  return gd->gd_timers.empty() ? 0 : gd->gd_timers.front()->td_timeout_at;
}

void sleep_exit_cleanup(globaldata* gd, thread* td) {
  if (td->td_flags & TDF_TSLEEPQ) sleepq_remove(gd, td);
  if (td->td_timer_index >= 0) timer_remove(gd, td);
}

bool wake_sleeper(globaldata* gd, thread* td) { return wake_thread(gd, td); }

}  // namespace internal

using internal::mycpu;

void tsleep_interlock(const void* ident, int) {
  globaldata* gd = mycpu();
  LWKT_ASSERT(gd != nullptr, nullptr, "tsleep_interlock from an OS thread that is not a worker");
  thread* td = gd->gd_curthread;
  ++td->td_critcount;
  if (!((td->td_flags & TDF_TSLEEPQ) && td->td_wchan == ident)) {
    if (td->td_flags & TDF_TSLEEPQ) internal::sleepq_remove(gd, td);
    internal::sleepq_insert(gd, td, ident);
  }
  ipiq::chaos::point(ipiq::chaos::kTsleepInterlock);
  // The caller re-checks its condition next, possibly with an acquire or relaxed load: on
  // AArch64 (LDAPR) that load may pass the mask RMW above, losing a wakeup (spin model
  // lwkt/model/tsleep_wakeup.pml, mutation RELAXED_INSERT). The fence orders it after.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  crit_exit();
}

namespace {
// Consumes a pending interrupt request: 0, EINTR or ERESTART.
int take_interrupt(thread* td) {
  const std::uint32_t mp =
      td->td_mpflags.fetch_and(~(TDF_MP_INTR | TDF_MP_RESTART), std::memory_order_acq_rel);
  if (!(mp & TDF_MP_INTR)) return 0;
  return (mp & TDF_MP_RESTART) ? ERESTART : EINTR;
}
}  // namespace

int tsleep(const void* ident, int flags, const char* wmesg, absl::Duration timeout) {
  globaldata* gd = mycpu();
  LWKT_ASSERT(gd != nullptr, nullptr,
              "tsleep from an OS thread that is not a worker (use a std::condition_variable)");
  thread* td = gd->gd_curthread;
  LWKT_ASSERT(!(td->td_flags & TDF_IDLETHREAD), td, "the idle thread cannot sleep");
  LWKT_ASSERT(td->td_critcount == 0, td, "tsleep('%s') inside a critical section (td_critcount=%d)",
              wmesg, td->td_critcount);
  ++td->td_critcount;
  if (!(flags & PINTERLOCKED)) tsleep_interlock(ident, flags);
  int error = 0;
  if ((flags & PCATCH) && (error = take_interrupt(td)) != 0) {
    // interrupted before sleeping
  } else if ((td->td_flags & TDF_TSLEEPQ) && td->td_wchan == ident) {
    // Still interlocked (no wakeup since): really sleep.
    internal::dequeue(gd, td);
    td->td_flags |= TDF_TSLEEP_DESCHEDULED | ((flags & PCATCH) ? TDF_SINTR : 0);
    td->td_flags &= ~TDF_TIMEOUT;
    td->td_wmesg = wmesg;
    internal::trace(gd, internal::trace_type::kSleep, td, 0,
                    reinterpret_cast<std::uintptr_t>(ident), wmesg);
    // Saturating conversion: a deadline past the clock's range is no timeout at all.
    std::uint64_t at =
        internal::deadline_after(internal::cheap_clock(), internal::duration_to_ticks(timeout));
    if (at != internal::kNeverTicks) ++at;  // never early
    if (timeout > absl::ZeroDuration() && at != internal::kNeverTicks) {
      internal::timer_add(gd, td, at);
    }
    // An interrupt() after the check above sends its message to this worker, which runs it
    // only in lwkt_switch's drain, after TDF_SINTR is set: it cannot be missed.
    lwkt_switch();
    gd = mycpu();  // sleeping threads do not migrate, but read it afresh all the same
    if (td->td_flags & TDF_TIMEOUT) {
      td->td_flags &= ~TDF_TIMEOUT;
      error = EWOULDBLOCK;
    } else if (td->td_timer_index >= 0) {
      internal::timer_remove(gd, td);
    }
    td->td_flags &= ~(TDF_TSLEEP_DESCHEDULED | TDF_SINTR);
    td->td_wmesg = nullptr;
    if (!error && (flags & PCATCH)) error = take_interrupt(td);
  }
  // A stray schedule can resume us while still queued; an early EINTR leaves us queued.
  if (td->td_flags & TDF_TSLEEPQ) internal::sleepq_remove(gd, td);
  crit_exit();
  return error;
}

namespace internal {
void wakeup_own_runtime(globaldata* me, const void* ident, int flags) {
  (void)do_wakeup(me, ident, flags);
}

std::uint64_t sleeper_workers(const runtime_state* rs, const void* ident, int w) {
  // seq_cst: as do_wakeup's read of the same words (pairs with sleepq_insert's fetch_or).
  return rs->slpque_cpumasks[sleep_hash(ident) * kMaskWords + static_cast<std::size_t>(w)].load(
      std::memory_order_seq_cst);
}
}  // namespace internal

void wakeup(const void* ident) {
  if (globaldata* gd = mycpu()) {
    (void)internal::do_wakeup(gd, ident, 0);  // wakeup wakes them all: never satisfied early
    internal::wakeup_other_runtimes(gd->gd_runtime, ident, 0);
  } else {
    internal::wakeup_from_outside_all(ident, 0);
  }
}

void wakeup_one(const void* ident) {
  if (globaldata* gd = mycpu()) {
    if (!internal::do_wakeup(gd, ident, internal::PWAKEUP_ONE)) {
      internal::wakeup_other_runtimes(gd->gd_runtime, ident, internal::PWAKEUP_ONE);
    }
  } else {
    internal::wakeup_from_outside_all(ident, internal::PWAKEUP_ONE);
  }
}

void wakeup_mycpu(const void* ident) {
  globaldata* gd = mycpu();
  LWKT_ASSERT(gd != nullptr, nullptr, "wakeup_mycpu from an OS thread that is not a worker");
  internal::wakeup_local(gd, ident, false);
}

void interrupt(thread* td, bool restart) {
  // release: whatever the interrupter did before is visible to the interrupted thread.
  td->td_mpflags.fetch_or(TDF_MP_INTR | (restart ? TDF_MP_RESTART : 0), std::memory_order_release);
  globaldata* gd = mycpu();
  if (gd && td->td_gd == gd) {
    ++gd->gd_curthread->td_critcount;
    if ((td->td_flags & TDF_SINTR) && (td->td_flags & TDF_TSLEEPQ)) internal::wake_sleeper(gd, td);
    crit_exit();
    return;
  }
  globaldata* owner = td->td_gd;
  if (!owner) return;  // in transit: on no sleep queue; the request waits in td_mpflags
  // From outside: accepted until shutdown's grace period ends.
  internal::api_guard g(owner->gd_runtime, internal::api_class::kExistingWork);
  if (!g.ok()) return;
  hold(td);
  internal::send_ipi(owner, internal::ipi_interrupt, td, 0, nullptr, false);
}

int lwkt_pause(absl::Duration timeout) {
  LWKT_ASSERT(timeout != absl::InfiniteDuration(), curthread(),
              "lwkt_pause with an infinite timeout would never return");
  // Like FreeBSD's pause(), a non-positive timeout still sleeps (until the next switch point).
  if (timeout <= absl::ZeroDuration()) timeout = absl::Nanoseconds(1);
  char ident = 0;  // its address is a private channel: nobody else can wake it
  return tsleep(&ident, 0, "pause", timeout);
}

}  // namespace lwkt
