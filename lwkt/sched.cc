// The per-worker scheduler: critical-section exit work, schedule/deschedule, lwkt_switch,
// yields and priorities (DragonFly lwkt_thread.c, the scheduling half).
#include "lwkt/sched.h"

#include "ipiq/internal/chaos.h"
#include "lwkt/internal/clock.h"
#include "lwkt/internal/io_hook.h"
#include "lwkt/internal/runtime_state.h"
#include "lwkt/internal/ipi_internal.h"
#include "lwkt/ipi.h"
#include "lwkt/token.h"
#include "lwkt/internal/context.h"
#include "lwkt/internal/sanitizers.h"
#include "lwkt/internal/sched_internal.h"
#include "lwkt/internal/trace.h"

namespace lwkt {
namespace internal {

thread_local globaldata* t_mycpu asm("lwkt_t_mycpu") __attribute__((tls_model("initial-exec"))) = nullptr;

void post(globaldata* gd, ipiq::inbox_msg* msg) {
  if (gd->gd_inbox.push(msg)) {
    // The producer that made the inbox non-empty flags it; crit_exit and lwkt_switch test
    // the flag instead of the inbox, so a busy worker sees a message only through it.
    // seq_cst (release would do here: the consumer's seq_cst clear reads from this RMW or a
    // later one, so its take_all sees the push). Modelled: ipiq/model/inbox_flag.pml.
    gd->gd_reqflags.fetch_or(RQF_IPIQ, std::memory_order_seq_cst);
  }
  kick_worker(gd);
}

// RQF_IPIQ is sticky (see announce() in ipi.cc): a drain that runs nothing leaves it set,
// and only after this many such drains in a row does the worker clear it (and stop watching
// its empty rings), then look once more. Until then a busy worker's switch points each pay
// one scan of its watched rings' next slots; in exchange, a sender to a worker that keeps
// receiving finds the flag set and the request line is not written on every message.
constexpr std::uint32_t kEmptyDrainsBeforeUnflag = 16;

void drain_all(globaldata* gd) {
  std::uint64_t n = drain_inbox(gd) + process_ipiq(gd);
  if (n != 0) {
    gd->gd_ipiq_empty_drains = 0;
    return;
  }
  // Counted only while the flag is set: drains with it clear (idle passes) do not bring
  // the next unflag forward.
  if (!(gd->gd_reqflags.load(std::memory_order_relaxed) & RQF_IPIQ)) {
    gd->gd_ipiq_empty_drains = 0;
    return;
  }
  if (++gd->gd_ipiq_empty_drains < kEmptyDrainsBeforeUnflag) return;
  gd->gd_ipiq_empty_drains = 0;
  std::uint64_t cleared[kMaskWords];
  unwatch_rings(gd, cleared);
  // seq_cst RMW, then the fence: pairs with announce()'s fence (a sender either sees the
  // flag cleared and sets it again, or its message is found by the look below) and with
  // post()'s RMW on the inbox's side (modelled: ipiq/model/inbox_flag.pml, park_kick.pml).
  gd->gd_reqflags.fetch_and(~RQF_IPIQ, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (rings_ready(gd, cleared) || !gd->gd_inbox.empty()) {
    drain_inbox(gd);
    process_ipiq(gd);
  }
}

std::uint64_t drain_inbox(globaldata* gd) {
  if (gd->gd_inbox.empty()) return 0;
  // seq_cst: shutdown's quiescence check must not see the inbox empty and not busy while
  // handlers taken from it still run (store, then take: the store comes first).
  gd->gd_inbox_busy.store(true, std::memory_order_seq_cst);
  ipiq::inbox_msg* m = gd->gd_inbox.take_all();
  trace(gd, trace_type::kIpiRecv, nullptr, -1, 0, nullptr);
  ++gd->gd_intr_nesting_level;
  std::uint64_t n = 0;
  while (m) {
    ipiq::inbox_msg* next = m->im_next;  // the handler may reuse or free m
    m->im_func(m, gd);
    m = next;
    ++n;
  }
  --gd->gd_intr_nesting_level;
  gd->gd_stats.messages.add(n);
  gd->gd_inbox_busy.store(false, std::memory_order_release);
  return n;
}

void not_lwkt_thread(const char* call) {
  panic(nullptr, "%s called from an OS thread that is not an lwkt thread", call);
}

void crit_exit_work(globaldata* gd) {
  if (gd->gd_ast & RQF_AST_PREEMPT) {
    gd->gd_ast &= ~RQF_AST_PREEMPT;
    // A preemption refused inside the critical section that just ended: retry it now.
    thread* head = gd->gd_tdrunq.head();
    if (head && (head->td_flags & TDF_PREEMPTABLE)) {
      ++gd->gd_curthread->td_critcount;
      lwkt_preempt(gd, head, 1);
      --gd->gd_curthread->td_critcount;
    }
  }
  if (gd->gd_reqflags.load(std::memory_order_relaxed) & RQF_IDLECHECK_MASK) splz(gd);
}

// DragonFly lwkt_preempt: ntd, preemptable and just queued on this worker, runs at once on
// top of the current thread if every condition holds; otherwise nothing happens now and the
// normal reschedule request (or, when only a critical section was in the way,
// RQF_AST_PREEMPT for crit_exit) makes it run later.
// Runs on: gd's worker, inside the `critcount` critical sections the scheduling path added.
void lwkt_preempt(globaldata* gd, thread* ntd, int critcount) {
  thread* td = gd->gd_curthread;
  worker_stats& st = gd->gd_stats;
  st.preempt_attempts.add();
  if (!gd->gd_preempt_enable) {
    st.preempt_refused_disabled.add();
    return;
  }
  if (ntd->td_pri <= td->td_pri) {
    st.preempt_refused_priority.add();
    return;
  }
  if (gd->gd_intr_nesting_level > 0 || td->td_cscount > 0 || (td->td_flags & TDF_IDLETHREAD) ||
      ntd->td_gd != gd) {
    st.preempt_refused_context.add();
    return;
  }
  if (td->td_critcount > critcount) {
    st.preempt_refused_critical.add();
    gd->gd_ast |= RQF_AST_PREEMPT;
    return;
  }
  if (ntd->td_toks_stop != ntd->td_toks_array) {
    st.preempt_refused_tokens.add();
    return;
  }
  if (td == ntd || ((td->td_flags | ntd->td_flags) & TDF_PREEMPT_LOCK) || ntd->td_preempted ||
      (ntd->td_flags & TDF_RUNNING)) {
    st.preempt_refused_chain.add();
    return;
  }
  st.preempt_taken.add();
  ntd->td_preempted = td;
  td->td_flags |= TDF_PREEMPT_LOCK;
  st.switches.add();
  ++ntd->td_switches;
  thread* prev = cpu_switch_to(gd, td, ntd);
  // Back only when ntd blocked or yielded: a preemption always returns to its victim.
  LWKT_ASSERT(prev == ntd, td, "preemption by '%s' returned from '%s'", ntd->td_comm,
              prev->td_comm);
  // ntd cleared its own td_preempted before switching back; it may be gone after this call
  // (reaped, or sent to another worker), so it is not touched again.
  switch_return(gd, prev);
  td->td_flags &= ~(TDF_PREEMPT_LOCK | TDF_PREEMPT_DONE);
}

void splz(globaldata* gd) {
  thread* td = gd->gd_curthread;
  ++td->td_critcount;
  // Once: the flag is sticky (drain_all clears it only after repeated empty drains).
  if (gd->gd_reqflags.load(std::memory_order_relaxed) & RQF_IPIQ) drain_all(gd);
  // Shutdown: the next yield point switches to the idle thread, which stops the worker.
  if (gd->gd_reqflags.load(std::memory_order_relaxed) & RQF_STOP) {
    gd->gd_ast |= RQF_AST_LWKT_RESCHED;
  }
  --td->td_critcount;
}

void enqueue(globaldata* gd, thread* td) {
  // Idempotent; a migrating thread is queued by the worker that adopts it.
  if (td->td_flags & (TDF_RUNQ | TDF_MIGRATING)) return;
  td->td_flags = (td->td_flags | TDF_RUNQ) & ~TDF_NOSTART;
  if (gd->gd_tdrunq.insert(td) && td != gd->gd_curthread) gd->gd_ast |= RQF_AST_LWKT_RESCHED;
}

void dequeue(globaldata* gd, thread* td) {
  if (!(td->td_flags & TDF_RUNQ)) return;
  td->td_flags &= ~TDF_RUNQ;
  gd->gd_tdrunq.remove(td);
}

// td is in transit (given away, not yet acquired): leave the request for acquire(), which
// queues a thread scheduled meanwhile. seq_cst on both sides (here: flag, then re-read the
// owner; acquire(): publish the owner, then take the flag) is a Dekker pair: either
// acquire() sees the flag, or this re-read sees the new owner, and the caller forwards the
// request there (both may happen: a harmless duplicate, schedule is idempotent).
// Returns the owner that appeared meanwhile, or null when the request was left.
globaldata* defer_schedule(thread* td) {
  td->td_mpflags.fetch_or(TDF_MP_SCHEDPEND, std::memory_order_seq_cst);
  return td->td_gd.load_seq_cst();
}

namespace {

// Remote schedule/deschedule from an OS thread that is not a worker: td's embedded inbox
// message, at most one in flight (TDF_MP_WAKEPEND), holding a reference.
void handle_schedmsg(ipiq::inbox_msg* msg, void* ctx) {
  auto* gd = static_cast<globaldata*>(ctx);
  thread* td = static_cast<thread_msg*>(msg)->td;
  // acq_rel: a schedule() that runs after this clear must send a new message (it sees the
  // bit clear); one that ran before is covered by what follows. Acquire also makes the
  // td_schedgen bump of every schedule that coalesced with this message (it bumped, then
  // found WAKEPEND set: its RMW precedes this one) visible to the deschedules run after us.
  td->td_mpflags.fetch_and(~TDF_MP_WAKEPEND, std::memory_order_acq_rel);
  schedule_on_owner(gd, td);
}

// Runs on the worker that (as far as the sender knew) owns td. Chases a thread that has
// migrated; drops a wakeup for a thread that exited or is migrating (it will be queued by
// its new owner anyway). Consumes the sender's hold.
void ipi_schedule(void* arg, std::intptr_t, void*, void* ctx) {
  schedule_on_owner(static_cast<globaldata*>(ctx), static_cast<thread*>(arg));
}

// Ownership is checked in state the owner published (td_gd, see owner_ptr in thread.h):
// td_gd == gd means gd owns td and sees every change its previous owner made. Between
// setcpu_self's handoff and ipi_adopt the new owner already owns td, which is still
// TDF_MIGRATING: enqueue and dequeue leave it alone (ipi_adopt queues it).
// arg2: td_schedgen when the deschedule was issued. A schedule issued after it has bumped
// the generation (and reached, or will reach, the owner by its own path, which may be a
// different channel or chase): the deschedule then does nothing, so the caller's last call
// wins. (Equal generation: no schedule since, and dequeue is right.)
void ipi_deschedule(void* arg, std::intptr_t gen, void*, void* ctx) {
  auto* gd = static_cast<globaldata*>(ctx);
  auto* td = static_cast<thread*>(arg);
  globaldata* owner = td->td_gd;
  if (owner && owner != gd) {
    send_ipi(owner, ipi_deschedule, td, gen, nullptr, false);  // chase; the hold travels
    return;
  }
  // owner == null: in transit after giveaway, so not queued anywhere: nothing to undo.
  const bool superseded = td->td_schedgen.load(std::memory_order_acquire) !=
                          static_cast<std::uint32_t>(gen);
  if (owner && !superseded && !(td->td_flags & TDF_EXITING)) dequeue(gd, td);
  rele(td);
}

// A schedule request is about to act (owner) or be sent (others): see td_schedgen.
void bump_schedgen_owner(thread* td) {
  td->td_schedgen.store(td->td_schedgen.load(std::memory_order_relaxed) + 1,
                        std::memory_order_relaxed);
}

void schedule_remote(thread* td) {
  // Before anything is sent or coalesced; release pairs with ipi_deschedule's acquire
  // (through the message, or the WAKEPEND RMW chain when coalesced).
  td->td_schedgen.fetch_add(1, std::memory_order_release);
  globaldata* me = mycpu();
  globaldata* owner = td->td_gd;
  if (!owner && !(owner = defer_schedule(td))) return;  // acquire() will queue it
  if (me && me->gd_runtime == owner->gd_runtime) {
    trace(me, trace_type::kScheduleRemote, td, owner->gd_cpuid, 0, td->td_comm);
    hold(td);  // keeps the object valid while the message is in flight
    send_ipi(owner, ipi_schedule, td, 0, nullptr, false);
    return;
  }
  // From outside the runtime: accepted until shutdown's grace period ends (a post after its
  // quiescence check would never run); see api_guard.
  api_guard g(owner->gd_runtime, api_class::kExistingWork);
  if (!g.ok()) return;
  // acq_rel: exactly one sender of a burst posts the embedded message. One that coalesces
  // has bumped td_schedgen first, so a deschedule issued before it (and run after the
  // message, whatever its channel) finds itself superseded.
  if (td->td_mpflags.fetch_or(TDF_MP_WAKEPEND, std::memory_order_acq_rel) & TDF_MP_WAKEPEND) {
    return;
  }
  hold(td);
  td->td_schedmsg.td = td;
  td->td_schedmsg.im_func = handle_schedmsg;
  post(owner, &td->td_schedmsg);
}

// DragonFly lwkt_schedulerclock, evaluated at a yield point instead of from a tick: once td
// has used its slice, rotate it behind its equal-priority peers and request a switch.
void scheduler_clock(globaldata* gd, thread* td) {
  if (td->td_flags & TDF_IDLETHREAD) return;
  if (gd->gd_slice_ticks && cheap_clock() - td->td_slice_start < gd->gd_slice_ticks) return;
  thread* head = gd->gd_tdrunq.head();
  if (head == td) {
    thread* nxt = gd->gd_tdrunq.next(td);
    if (nxt && nxt->td_pri == td->td_pri) {  // upri ignored, as DragonFly does
      gd->gd_tdrunq.rotate_level(td);
      gd->gd_ast |= RQF_AST_LWKT_RESCHED;
    }
  } else if (head) {
    gd->gd_ast |= RQF_AST_LWKT_RESCHED;  // td runs out of order: give way
  }
}

}  // namespace

// Switches the worker from td to ntd. Not instrumented by TSan: between the fiber switch
// and the stack switch nothing may be attributed to the wrong fiber.
__attribute__((noinline, no_sanitize("thread"))) thread* cpu_switch_to(globaldata* gd,
                                                                       thread* td,
                                                                       thread* ntd) {
  ntd->td_flags |= TDF_RUNNING;
  // A switch point for the stall detector, bit 0 = the idle thread runs next. Before
  // gd_curthread: a stall backtrace handler that still finds the stalled value finds the
  // stalled thread current.
  gd->gd_progress.store(
      ((gd->gd_progress.load(std::memory_order_relaxed) + 2) & ~std::uint64_t{1}) |
          ((ntd->td_flags & TDF_IDLETHREAD) ? 1 : 0),
      std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);  // program order for the handler
  gd->gd_curthread = ntd;
  trace(gd, trace_type::kSwitch, ntd, ntd->td_pri, (ntd->td_flags & TDF_IDLETHREAD) ? 1 : 0,
        ntd->td_comm);
  // mi_switch accounting: one clock read per switch charges the outgoing thread's slice and
  // starts the incoming one's (also the round-robin clock's reference).
  const std::uint64_t now = cheap_clock();
  td->td_runticks += now - gd->gd_switch_stamp;
  gd->gd_switch_stamp = now;
  ntd->td_slice_start = now;
  if (td->td_flags & (TDF_RUNQ | TDF_PREEMPT_LOCK)) {
    ++td->td_nivcsw;  // still runnable: rotated, yielded or preempted
  } else {
    ++td->td_nvcsw;   // it blocked
  }
  // Each lwkt thread has its own C++ exception state (caught stack, uncaught count).
  eh_state* eh = gd->gd_eh;
  td->td_eh = *eh;
  *eh = ntd->td_eh;
  const bool dying = td->td_flags & TDF_EXITING;
  asan_start_switch(dying ? nullptr : &td->td_asan_fake_stack, ntd->td_stack.lo,
                    ntd->td_stack.size);
  tsan_switch_to(ntd->td_tsan_fiber);
  void* prev = lwkt_cpu_switch(&td->td_sp, ntd->td_sp, td);
  asan_finish_switch(td->td_asan_fake_stack);
  return static_cast<thread*>(prev);
}

void schedule_on_owner(globaldata* gd, thread* td) {
  globaldata* owner = td->td_gd;
  if (!owner && !(owner = defer_schedule(td))) {
    rele(td);
    return;
  }
  if (owner != gd) {
    send_ipi(owner, ipi_schedule, td, 0, nullptr, false);  // chase; the hold travels
    return;
  }
  std::uint32_t mp = td->td_mpflags.load(std::memory_order_acquire);
  if (!(td->td_flags & TDF_EXITING) && !(mp & TDF_MP_EXITED)) enqueue(gd, td);
  rele_deferred(gd, td);
}

void enqueue_crit(globaldata* gd, thread* td) {
  ++gd->gd_curthread->td_critcount;
  enqueue(gd, td);
  crit_exit();
}

void wakeup_thread(thread* td) {
  globaldata* gd = mycpu();
  if (gd && td->td_gd == gd) {
    bump_schedgen_owner(td);
    if (!(td->td_flags & TDF_EXITING)) enqueue_crit(gd, td);
  } else {
    schedule_remote(td);
  }
}

void switch_return(globaldata* gd, thread* prev) {
  prev->td_flags &= ~TDF_RUNNING;
  if (globaldata* target = prev->td_migrate_gd) {
    // prev is off its stack only now: hand it to its new worker (DragonFly: the next
    // thread's lwkt_switch_return sends the adopt message). The old owner publishes the new
    // one itself, as its last write to prev: from this store on, requests that reach this
    // worker chase prev to `target`, and target's handlers see prev TDF_MIGRATING until
    // ipi_adopt runs there (release: everything done to prev here is visible to them).
    prev->td_migrate_gd = nullptr;
    flush_deferred_rele(gd, prev);  // gd_rele_td names only threads gd owns
    prev->td_gd = target;
    ipiq::chaos::point(ipiq::chaos::kOwnerHandoff);
    send_ipi(target, ipi_adopt, prev, 0, nullptr, false);
    return;
  }
  if (prev->td_flags & TDF_EXITING) reap(gd, prev);
}

}  // namespace internal

using internal::mycpu;

void schedule(thread* td) {
  globaldata* gd = mycpu();
  LWKT_ASSERT(!(td->td_mpflags.load(std::memory_order_relaxed) & TDF_MP_EXITED), td,
              "lwkt::schedule of a thread that has exited");
  if (gd && td->td_gd == gd) {
    // td_flags belong to the owner: checked only here, on the owner.
    LWKT_ASSERT(!(td->td_flags & TDF_EXITING), td, "lwkt::schedule of a thread that has exited");
    LWKT_ASSERT(!(td->td_flags & TDF_IDLETHREAD), td, "lwkt::schedule of an idle thread");
    ++gd->gd_curthread->td_critcount;
    internal::trace(gd, internal::trace_type::kScheduleLocal, td, 0, 0, td->td_comm);
    internal::bump_schedgen_owner(td);
    internal::enqueue(gd, td);
    // The critical section this function added is the 1 the caller's must not exceed.
    if ((td->td_flags & (TDF_PREEMPTABLE | TDF_RUNQ)) == (TDF_PREEMPTABLE | TDF_RUNQ)) {
      internal::lwkt_preempt(gd, td, 1);
    }
    crit_exit();
  } else {
    internal::schedule_remote(td);
  }
}

void deschedule(thread* td) {
  globaldata* gd = mycpu();
  if (gd && td->td_gd == gd) {
    ++gd->gd_curthread->td_critcount;
    internal::dequeue(gd, td);
    crit_exit();
    return;
  }
  globaldata* owner = td->td_gd;
  if (!owner) return;  // in transit after giveaway: not queued anywhere
  // From outside: accepted until shutdown's grace period ends.
  internal::api_guard g(owner->gd_runtime, internal::api_class::kExistingWork);
  if (!g.ok()) return;
  hold(td);  // released by the owner's handler
  // acquire: a schedule that happened before this call is included in the generation we
  // carry, so this deschedule wins over it; any later one supersedes us (ipi_deschedule).
  const std::uint32_t gen = td->td_schedgen.load(std::memory_order_acquire);
  internal::send_ipi(owner, internal::ipi_deschedule, td, gen, nullptr, false);
}

void schedule_self() {
  globaldata* gd = internal::lwkt_caller("lwkt::schedule_self");
  thread* td = gd->gd_curthread;
  LWKT_ASSERT(!(td->td_flags & TDF_IDLETHREAD), td, "schedule_self by the idle thread");
  internal::enqueue_crit(gd, td);
}

void deschedule_self() {
  globaldata* gd = internal::lwkt_caller("lwkt::deschedule_self");
  thread* td = gd->gd_curthread;
  ++td->td_critcount;
  internal::dequeue(gd, td);
  crit_exit();
}

void lwkt_switch() {
  globaldata* gd = mycpu();
  LWKT_ASSERT(gd != nullptr, nullptr, "lwkt_switch from an OS thread that is not a worker");
  thread* td = gd->gd_curthread;
  LWKT_ASSERT(gd->gd_intr_nesting_level == 0, td,
              "lwkt_switch inside a message handler (gd_intr_nesting_level=%d)",
              gd->gd_intr_nesting_level);
  internal::note_switch_point(gd);
  LWKT_ASSERT(td->td_cscount == 0, td,
              "lwkt_switch while mastering a cpusync (between cpusync_interlock and "
              "cpusync_deinterlock the master must not block or yield)");
  ++td->td_critcount;
  // A token is held only while its holder runs (reacquired below, or when td next runs).
  if (td->td_toks_stop != td->td_toks_array) internal::relalltokens(td);
  if (thread* preempted = td->td_preempted) {
    // td preempted `preempted` and now blocks or yields: control returns straight to it,
    // bypassing the run queue and without token work (it never released its tokens).
    // Clear the link now: once switched away, td may be reaped or handed to another worker.
    td->td_preempted = nullptr;
    preempted->td_flags |= TDF_PREEMPT_DONE;
    preempted->td_contended = 0;
    thread* head = gd->gd_tdrunq.head();
    if (head && head != preempted && head->td_pri > preempted->td_pri) {
      gd->gd_ast |= RQF_AST_LWKT_RESCHED;
    }
    gd->gd_stats.switches.add();
    thread* prev = internal::cpu_switch_to(gd, td, preempted);
    gd = td->td_gd;
    internal::switch_return(gd, prev);
    --td->td_critcount;
    return;
  }
  // Remote schedule requests and expired sleep timeouts may make a better thread runnable:
  // take them in first.
  const std::uint32_t rq = gd->gd_reqflags.load(std::memory_order_relaxed);
  if (rq & RQF_IPIQ) internal::drain_all(gd);
  // Submit prepared I/O (batched while other threads are runnable), reap completions.
  if (gd->gd_io.busy) internal::io_flush(gd, gd->gd_tdrunq.empty());
  if (!gd->gd_timers.empty()) internal::run_timers(gd);
  if (gd->gd_switch_stamp >= gd->gd_next_loadav) internal::loadav_tick(gd, gd->gd_switch_stamp);
  gd->gd_ast &= ~RQF_AST_LWKT_RESCHED;
  // The best runnable thread whose tokens can all be had; contended ones stay queued and
  // are skipped (contention never blocks the worker). None: the idle thread, which retries.
  // Once shutdown stops the worker (RQF_STOP), always the idle thread: what is still
  // queued is abandoned.
  thread* ntd = (rq & RQF_STOP) ? nullptr : gd->gd_tdrunq.head();
  while (ntd && ((ntd->td_flags & TDF_PREEMPT_LOCK) || !internal::getalltokens(gd, ntd))) {
    ntd = gd->gd_tdrunq.next(ntd);
  }
  if (ntd == nullptr) ntd = &gd->gd_idlethread;
  if (ntd != td) {
    LWKT_ASSERT(ntd->td_gd == gd, ntd, "picked by worker %d, which does not own it",
                gd->gd_cpuid);
    LWKT_ASSERT(!(ntd->td_flags & TDF_RUNNING), ntd, "picked to run but already TDF_RUNNING");
    LWKT_ASSERT(!(ntd->td_flags & TDF_EXITING), ntd, "picked to run after it exited");
    gd->gd_stats.switches.add();
    ++ntd->td_switches;
    thread* prev = internal::cpu_switch_to(gd, td, ntd);
    gd = td->td_gd;  // td resumes here; re-read its worker (migration will change it)
    LWKT_ASSERT(gd == mycpu(), td, "resumed on worker %d, which does not own it",
                mycpu()->gd_cpuid);
    internal::switch_return(gd, prev);
  }
  --td->td_critcount;
}

namespace {
// DragonFly's yields first run deferred work (splz) when some is pending.
void splz_if_pending(globaldata* gd) {
  if ((gd->gd_reqflags.load(std::memory_order_relaxed) & RQF_IDLECHECK_MASK) &&
      gd->gd_intr_nesting_level == 0) {
    internal::splz(gd);
  }
}
}  // namespace

void yield() {
  globaldata* gd = internal::lwkt_caller("lwkt::yield");
  thread* td = gd->gd_curthread;
  internal::note_switch_point(gd);
  splz_if_pending(gd);
  if (gd->gd_io.busy) {  // a busy thread's yields keep its worker's I/O moving
    ++td->td_critcount;
    internal::io_flush(gd, false);
    crit_exit();
  }
  internal::scheduler_clock(gd, td);
  if (gd->gd_ast & RQF_AST_LWKT_RESCHED) {
    ++td->td_critcount;
    internal::enqueue(gd, td);  // DragonFly: make sure the yielder is still runnable
    lwkt_switch();
    crit_exit();
  }
}

void yield_quick() {
  globaldata* gd = internal::lwkt_caller("lwkt::yield_quick");
  thread* td = gd->gd_curthread;
  internal::note_switch_point(gd);
  splz_if_pending(gd);
  if (gd->gd_ast & RQF_AST_LWKT_RESCHED) {
    ++td->td_critcount;
    thread* head = gd->gd_tdrunq.head();
    if ((head == nullptr || head == td) &&
        !(gd->gd_reqflags.load(std::memory_order_relaxed) & RQF_STOP)) {
      gd->gd_ast &= ~RQF_AST_LWKT_RESCHED;
    } else {
      internal::enqueue(gd, td);
      lwkt_switch();
    }
    crit_exit();
  }
}

void setpri(thread* td, int pri) {
  globaldata* gd = internal::lwkt_caller("lwkt::setpri");
  LWKT_ASSERT(pri >= TDPRI_IDLE_WORK && pri <= TDPRI_MAX, td, "setpri to %d, outside [%d, %d]",
              pri, TDPRI_IDLE_WORK, TDPRI_MAX);
  LWKT_ASSERT(gd && td->td_gd == gd, td, "setpri from a worker that does not own it");
  if (td->td_pri == pri) return;  // DragonFly: no re-queue, so no rotation
  ++gd->gd_curthread->td_critcount;
  if (td->td_flags & TDF_RUNQ) {
    gd->gd_tdrunq.remove(td);
    td->td_pri = pri;
    gd->gd_tdrunq.insert(td);
  } else {
    td->td_pri = pri;
  }
  thread* head = gd->gd_tdrunq.head();
  if (head && head != gd->gd_curthread) gd->gd_ast |= RQF_AST_LWKT_RESCHED;
  crit_exit();
}

void setpri_self(int pri) {
  setpri(internal::lwkt_caller("lwkt::setpri_self")->gd_curthread, pri);
}

}  // namespace lwkt
