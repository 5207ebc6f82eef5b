// Runtime::snapshot(), the ps rendering, load averages and the should_yield family
// (FreeBSD kern_synch.c: loadav, should_yield, maybe_yield, kern_yield; mi_switch(9)).
#include "lwkt/snapshot.h"

#include <cmath>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "lwkt/internal/clock.h"
#include "lwkt/internal/completion.h"
#include "lwkt/internal/runtime_state.h"
#include "lwkt/internal/sched_internal.h"
#include "lwkt/internal/stack.h"
#include "lwkt/runtime.h"
#include "lwkt/sched.h"

namespace lwkt {
namespace internal {

void loadav_tick(globaldata* gd, std::uint64_t now) {
  // kern_synch.c's loadav(): an exponentially decayed average of the number of runnable
  // threads, sampled every 5 s, with time constants of 1, 5 and 15 minutes.
  static const double decay[3] = {std::exp(-5.0 / 60), std::exp(-5.0 / 300), std::exp(-5.0 / 900)};
  const double nrun = static_cast<double>(gd->gd_tdrunq.count());
  while (now >= gd->gd_next_loadav) {  // samples missed while busy or parked: apply them all
    for (int i = 0; i < 3; ++i) gd->gd_loadav[i] = gd->gd_loadav[i] * decay[i] + nrun * (1 - decay[i]);
    gd->gd_next_loadav += gd->gd_loadav_period_ticks;
  }
}

namespace {

double ticks_to_ms(std::uint64_t t) { return static_cast<double>(t) / (ticks_per_us() * 1000.0); }

thread_info describe(globaldata* gd, thread* td, std::uint64_t now) {
  thread_info ti;
  ti.name = td->td_comm;
  ti.worker = gd->gd_cpuid;
  ti.pri = td->td_pri;
  ti.upri = td->td_upri;
  const std::uint32_t f = td->td_flags;
  std::uint64_t run = td->td_runticks;
  if (td == gd->gd_curthread) run += now - gd->gd_switch_stamp;
  ti.runtime_ms = ticks_to_ms(run);
  ti.nvcsw = td->td_nvcsw;
  ti.nivcsw = td->td_nivcsw;
  if (f & TDF_IDLETHREAD) {
    ti.state = "idle";
  } else if (td == gd->gd_curthread || (f & TDF_RUNNING)) {
    ti.state = "run";
  } else if (f & TDF_PREEMPT_LOCK) {
    ti.state = "preempted";
  } else if (f & TDF_TSLEEP_DESCHEDULED) {
    ti.state = "sleep";
  } else if (f & TDF_NOSTART) {
    ti.state = "held";
  } else if ((f & TDF_RUNQ) && td->td_contended) {
    ti.state = "tokwait";
  } else if (f & TDF_RUNQ) {
    ti.state = "runq";
  } else {
    ti.state = "blocked";
  }
  if (td->td_wmesg) ti.wmesg = td->td_wmesg;
  if (f & TDF_TSLEEPQ) ti.wchan = td->td_wchan;
  for (tokens::tokref* r = td->td_toks_array; r != td->td_toks_stop; ++r) {
    ti.tokens.push_back(r->tr_tok->t_desc);
  }
  if (!(f & TDF_IDLETHREAD)) {
    ti.stack_size = td->td_stack.size;
    if (gd->gd_stack_watermark) ti.stack_used = stack_used(td->td_stack);
  }
  return ti;
}

struct snapshot_request {
  worker_info_snapshot* out;
  completion done;
};

void ipi_snapshot(void* arg, std::intptr_t, void*, void* ctx) {
  auto* req = static_cast<snapshot_request*>(arg);
  auto* gd = static_cast<globaldata*>(ctx);
  const std::uint64_t now = cheap_clock();
  if (now >= gd->gd_next_loadav) loadav_tick(gd, now);
  worker_info_snapshot& w = *req->out;
  w.worker = gd->gd_cpuid;
  w.switches = gd->gd_stats.switches.get();
  std::uint64_t idle = gd->gd_idlethread.td_runticks;
  if (gd->gd_curthread == &gd->gd_idlethread) idle += now - gd->gd_switch_stamp;
  w.idle_ms = ticks_to_ms(idle);
  for (int i = 0; i < 3; ++i) w.loadavg[i] = gd->gd_loadav[i];
  w.runnable = static_cast<int>(gd->gd_tdrunq.count());
  w.threads.push_back(describe(gd, &gd->gd_idlethread, now));
  for (thread* td = gd->gd_tdallq; td; td = td->td_all_next) w.threads.push_back(describe(gd, td, now));
  req->done.signal();
}

}  // namespace
}  // namespace internal

absl::StatusOr<runtime_snapshot> Runtime::snapshot() {
  internal::runtime_state* rs = _s.get();
  internal::check_not_forked(rs, "Runtime::snapshot");
  internal::api_guard g(rs);
  if (!g.ok()) return absl::FailedPreconditionError("lwkt runtime is shutting down: no snapshot");
  runtime_snapshot snap;
  snap.workers.resize(rs->gds.size());
  std::vector<internal::snapshot_request> reqs(rs->gds.size());
  for (std::size_t i = 0; i < rs->gds.size(); ++i) {
    reqs[i].out = &snap.workers[i];
    internal::send_ipi(rs->gds[i], internal::ipi_snapshot, &reqs[i], 0, nullptr, false);
  }
  for (auto& r : reqs) r.done.wait();
  return snap;
}

std::string runtime_snapshot::ps() const {
  std::string out;
  for (const worker_info_snapshot& w : workers) {
    absl::StrAppendFormat(&out,
                          "worker %d: %d runnable, %u switches, idle %.1f ms, load average "
                          "%.2f %.2f %.2f\n",
                          w.worker, w.runnable, w.switches, w.idle_ms, w.loadavg[0],
                          w.loadavg[1], w.loadavg[2]);
  }
  absl::StrAppendFormat(&out, "%-6s %-31s %-9s %4s %5s %12s %9s %9s  %-16s %-14s %-13s %s\n",
                        "WORKER", "NAME", "STATE", "PRI", "UPRI", "RUNTIME(ms)", "VCSW", "IVCSW",
                        "WMESG", "WCHAN", "STACK(KiB)", "TOKENS");
  for (const worker_info_snapshot& w : workers) {
    for (const thread_info& t : w.threads) {
      // STACK: used/size with stack_watermark, else the size alone.
      const std::string stack =
          t.stack_size == 0 ? "-"
          : t.stack_used ? absl::StrFormat("%zu/%zu", t.stack_used >> 10, t.stack_size >> 10)
                         : absl::StrFormat("%zu", t.stack_size >> 10);
      absl::StrAppendFormat(&out, "%-6d %-31s %-9s %4d %5d %12.3f %9u %9u  %-16s %-14s %-13s %s\n",
                            t.worker, t.name, t.state, t.pri, t.upri, t.runtime_ms, t.nvcsw,
                            t.nivcsw, t.wmesg.empty() ? "-" : t.wmesg,
                            t.wchan ? absl::StrFormat("%p", t.wchan) : "-", stack,
                            t.tokens.empty() ? "-" : absl::StrJoin(t.tokens, ","));
    }
  }
  return out;
}

// ---- should_yield / maybe_yield / kern_yield.

bool should_yield() {
  globaldata* gd = internal::lwkt_caller("lwkt::should_yield");
  thread* td = gd->gd_curthread;
  // FreeBSD's hogticks: the thread has run for a whole slice since it was switched in.
  return internal::cheap_clock() - td->td_slice_start >= gd->gd_slice_ticks;
}

void maybe_yield() {
  internal::note_switch_point(internal::lwkt_caller("lwkt::maybe_yield"));
  if (should_yield()) kern_yield(kPriUser);
}

void kern_yield(int pri) {
  globaldata* gd = internal::lwkt_caller("lwkt::kern_yield");
  thread* td = gd->gd_curthread;
  if (pri != kPriUser) setpri_self(pri);
  // Relinquish: stay runnable, behind every thread of our priority whatever their td_upri
  // (voluntary round robin), and switch. Queued first: a caller off the run queue (it
  // descheduled itself) would otherwise be inserted by td_upri, ahead of worse-upri equals.
  ++td->td_critcount;
  internal::enqueue(gd, td);
  if (td->td_flags & TDF_RUNQ) gd->gd_tdrunq.rotate_level(td);  // not while migrating
  lwkt_switch();
  crit_exit();
}

}  // namespace lwkt
