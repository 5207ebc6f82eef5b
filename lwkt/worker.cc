// A worker's OS thread: placement, its idle thread, and the idle loop (DragonFly's per-CPU
// idle thread and cpu_idle: run what is runnable, poll briefly, then halt until kicked).
#include <pthread.h>

#include <cxxabi.h>

#include <algorithm>
#include <cstring>

#include "lwkt/internal/clock.h"
#include "lwkt/internal/io_hook.h"
#include "lwkt/internal/runtime_state.h"
#include "lwkt/internal/sanitizers.h"
#include "lwkt/internal/sched_internal.h"
#include "lwkt/internal/ipi_internal.h"
#include "lwkt/ipi.h"
#include "lwkt/sched.h"

namespace lwkt::internal {

void idle_loop(globaldata* gd) {
  thread* td = &gd->gd_idlethread;
  for (;;) {
    // Shutdown, phase 1: once stopped, the worker runs no lwkt thread again (lwkt_switch
    // picks only this idle thread under RQF_STOP) but keeps running messages, so that
    // requests between workers (wakeups, adoptions, user IPIs) are all answered here, as
    // this worker, until shutdown finds every worker quiescent and sets gd_exit.
    const bool stopped = gd->gd_stop.load(std::memory_order_acquire);
    if (stopped && !gd->gd_stopped.load(std::memory_order_relaxed)) {
      gd->gd_stopped.store(true, std::memory_order_seq_cst);
    }
    ++td->td_critcount;
    drain_all(gd);
    // Completions that no operation is waiting for (a kick's CQE, a cancel's answer, an
    // eventfd read) leave worker_io::busy at 0, which the switch points test: reap them
    // here, or the spin below would see them forever and the worker would never park.
    if (gd->gd_io.state.load(std::memory_order_relaxed) &&
        (gd->gd_io.busy || gd->gd_runtime->io->ready(&gd->gd_io))) {
      io_flush(gd, true);
    }
    if (!stopped) lwkt_switch();  // runs threads until the run queue is empty
    --td->td_critcount;
    if (stopped) {
      if (gd->gd_exit.load(std::memory_order_acquire)) {
        flush_deferred_rele(gd);
        return;
      }
    } else if (!gd->gd_tdrunq.empty()) {
      cpu_pause();  // runnable threads wait for tokens: retry (never park with work queued)
      continue;
    }
    if (!gd->gd_inbox.empty() || ipiq_pending(gd)) continue;

    // Poll for a while: waking a parked OS thread costs tens of microseconds. Expired sleep
    // timeouts are fired by the lwkt_switch at the top of the loop.
    bool work = false;
    const std::uint64_t start = cheap_clock();
    const std::uint64_t timer = next_timer(gd);
    const std::uint64_t window = gd->gd_idle_adaptive ? gd->gd_idle.window() : gd->gd_idle_spin_ticks;
    std::uint64_t now = start;
    const io_provider* io =
        gd->gd_io.state.load(std::memory_order_relaxed) ? gd->gd_runtime->io : nullptr;
    for (; now - start < window; now = cheap_clock()) {
      if (!gd->gd_inbox.empty() || ipiq_pending(gd) || (timer && now >= timer) ||
          (io && io->ready(&gd->gd_io)) ||
          gd->gd_stop.load(std::memory_order_relaxed) != stopped ||
          gd->gd_exit.load(std::memory_order_relaxed)) {
        work = true;
        break;
      }
      cpu_pause();
    }
    if (work) {
      if (gd->gd_idle_adaptive) gd->gd_idle.note(now - start, now);
      continue;
    }

    // Park: stop watching the empty rings, announce, re-check (the parker's fence orders
    // this check against producers' push + kick, and the rings just unwatched are looked
    // at too: see announce() in ipi.cc), then sleep. See ipiq/parker.h for why no wakeup
    // is lost; modelled in ipiq/model/park_kick.pml.
    // A parked worker keeps no deferred hold: a thread object is freed no later than the
    // worker that handled its last schedule goes idle.
    flush_deferred_rele(gd);
    std::uint64_t unwatched[kMaskWords];
    unwatch_rings(gd, unwatched);
    gd->gd_parker.prepare_park();
    // rings_ready first, and always: it also re-watches an unwatched ring whose message
    // arrived meanwhile (its sender may have seen the bit still set); skipping it because
    // the inbox had work would leave that ring unwatched with a message in it.
    const bool rings = rings_ready(gd, unwatched);
    if (rings || !gd->gd_inbox.empty() ||
        gd->gd_stop.load(std::memory_order_acquire) != stopped ||
        gd->gd_exit.load(std::memory_order_acquire)) {
      gd->gd_parker.cancel_park();
      continue;
    }
    // Park no longer than the earliest sleep timeout or the next load-average sample.
    std::uint64_t t = next_timer(gd);
    if (t == 0 || gd->gd_next_loadav < t) t = gd->gd_next_loadav;
    if (gd->gd_passive_inbound.load(std::memory_order_relaxed)) {
      t = std::min(t, cheap_clock() + ns_to_ticks(kPassiveTickNs));  // see send_entry
    }
    {
      const std::uint64_t now = cheap_clock();
      const double us = t > now ? static_cast<double>(t - now) / ticks_per_us() : 0.0;
      struct timespec ts;
      ts.tv_sec = static_cast<time_t>(us / 1e6);
      ts.tv_nsec = static_cast<long>((us - static_cast<double>(ts.tv_sec) * 1e6) * 1e3) + 1000;
      if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000;
      }
      if (io) {
        gd->gd_parker.park_with([&] { io->wait(&gd->gd_io, gd->gd_parker.event_fd(), &ts); });
      } else {
        gd->gd_parker.park(&ts);
      }
    }
    gd->gd_stats.parks.add();
    if (gd->gd_idle_adaptive) {
      const std::uint64_t woke = cheap_clock();
      gd->gd_idle.note(woke - start, woke);  // the gap was at least the window: past it
    }
    // The switch path samples the load average from its switch stamp, which a long park
    // leaves stale: sample here (timers fire in the next lwkt_switch).
    if (const std::uint64_t now = cheap_clock(); now >= gd->gd_next_loadav) {
      ++td->td_critcount;
      loadav_tick(gd, now);
      --td->td_critcount;
    }
  }
}

// Sets up gd's idle thread as the context of the calling (worker) OS thread.
void init_idle_thread(globaldata* gd) {
  thread* td = &gd->gd_idlethread;
  td->td_gd = gd;
  td->td_pri = TDPRI_IDLE_THREAD;
  td->td_flags = TDF_IDLETHREAD | TDF_RUNNING;
  td->td_critcount = 0;
  td->td_refs.store(1, std::memory_order_relaxed);
  std::snprintf(td->td_comm, sizeof td->td_comm, "idle %d", gd->gd_cpuid);
  // ASan needs the bounds of every stack it is switched onto, the worker's own included.
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void* addr;
    std::size_t size;
    pthread_attr_getstack(&attr, &addr, &size);
    td->td_stack.lo = static_cast<char*>(addr);
    td->td_stack.size = size;
    pthread_attr_destroy(&attr);
  }
  td->td_tsan_fiber = tsan_current_fiber();
  // __cxa_get_globals is declared `const`: called once here, never across a switch.
  static_assert(sizeof(eh_state) == 2 * sizeof(void*), "Itanium ABI __cxa_eh_globals");
  gd->gd_eh = reinterpret_cast<eh_state*>(abi::__cxa_get_globals());
  td->td_eh = eh_state{};
  gd->gd_curthread = td;
  gd->gd_switch_stamp = cheap_clock();
  gd->gd_loadav_period_ticks = ns_to_ticks(5000000000LL);
  gd->gd_next_loadav = gd->gd_switch_stamp + gd->gd_loadav_period_ticks;
}

}  // namespace lwkt::internal
