// thread_port.cc: ports owned by one lwkt thread (DragonFly's thread ports, td_msgport).
//
// The queues (mp_q, mp_early, mp_nextseq, mp_waiting) are touched only on the owner's
// current worker, inside a critical section, so they need no lock: a sender there queues
// directly; any other sender sends the message to the owner's worker (the IPI ring, or the
// inbox from outside the runtime) through remote_call_scope. td_gd is the owner's worker,
// read with acquire (owner_ptr): a handler that finds itself named sees every write the
// previous worker made to the port before it let the thread go (its release store of
// td_gd), so the queues pass from worker to worker with the thread.
//
// Order. A message can reach the owner by three roads that do not keep order among
// themselves: directly, through a ring, or chasing a migrated owner through a second ring.
// Each putport therefore takes the next number of mp_sendseq (relaxed: each sender's own
// fetch_adds are ordered by program order and coherence, which is all FIFO per sender needs)
// and the owner's side makes messages visible strictly in that order: one that arrives
// early waits in mp_early (sorted) until its predecessors are in. A sender takes its number
// in the same critical section (or the same remote_call_scope, from outside) in which it
// sends, so a taken number is always delivered: no gap stalls the port, and a send that
// shutdown refuses takes none.
//
// In transit. Between giveaway and acquire the owner has no worker (td_gd null): a message
// that finds it so waits on mp_stash (a Treiber stack, seq_cst) and the sender schedules
// the owner (acquire() honours a schedule made in transit) and wakes the port's channel;
// the owner drains the stash on its next worker, at every getport and before and after
// interlocking its sleep (tsleep_interlock(port)), so a push either is seen by that drain
// or comes after the interlock and its wakeup(port) ends the sleep.
#include <cstdio>
#include <cstdlib>

#include "lwkt/internal/remote_call.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "msgport/internal/common.h"
#include "msgport/msgport.h"

namespace lwkt {


using internal::remote_call_scope;
using internal::runtime_state;
using msgport_internal::complete;

struct thread_port::internals {
  static runtime_state* runtime(const thread_port* p) {
    return static_cast<runtime_state*>(p->mp_rt);
  }

  static void check_owner(const thread_port* p, const char* call) {
    thread* td = curthread();
    if (td == p->mp_td) return;
    std::fprintf(stderr,
                 "lwkt: thread_port::%s from %s%s%s, but the port belongs to thread '%s' "
                 "(only a thread port's owner takes from it or waits on it)\n",
                 call, td ? "thread '" : "an OS thread outside the runtime",
                 td ? td->name() : "", td ? "'" : "", p->mp_td->name());
    std::abort();
  }

  // A message has become deliverable (its turn in sequence): queue it; a reply completes
  // now (DONE only once queued, so lwkt_waitmsg can always take it off). Owner's worker,
  // critical section.
  static void ready(thread_port* p, lwkt_msg* m) {
    msgport_internal::msgq_push(&p->mp_q, m);
    if (m->ms_flags.load(std::memory_order_relaxed) & MSGF_REPLY) {
      complete(m, MSGF_QUEUED | MSGF_DONE);
    } else {
      m->ms_flags.fetch_or(MSGF_QUEUED, std::memory_order_relaxed);
    }
  }

  // m reached the owner's worker. Owner's worker, critical section.
  static void arrive(thread_port* p, lwkt_msg* m) {
    if (m->ms_seq != p->mp_nextseq) {
      lwkt_msg** at = &p->mp_early;
      while (*at && (*at)->ms_seq < m->ms_seq) at = &(*at)->ms_next;
      m->ms_next = *at;
      *at = m;
      return;
    }
    for (;;) {
      ready(p, m);
      ++p->mp_nextseq;
      m = p->mp_early;
      if (!m || m->ms_seq != p->mp_nextseq) break;
      p->mp_early = m->ms_next;
    }
    if (p->mp_waiting) {
      // The owner sleeps in waitport/waitmsg: wakeup_mycpu ends an interlocked or real
      // sleep on the port. An owner that was given away while asleep there is on no sleep
      // queue any more (giveaway clears them) and, acquired with nothing pending, not
      // runnable: only a schedule reaches it (a spurious one otherwise, which its loop
      // tolerates). Model: msgport/model/thread_port_transit.pml, mutant NO_ARRIVE_SCHEDULE.
      wakeup_mycpu(p);
      schedule(p->mp_td);
    }
  }

  // Owner's worker, critical section. acquire: the pushers' writes to the messages.
  static void drain_stash(thread_port* p) {
    if (!p->mp_stash.load(std::memory_order_relaxed)) return;
    for (lwkt_msg* m = p->mp_stash.exchange(nullptr, std::memory_order_seq_cst); m;) {
      lwkt_msg* next = m->ms_next;
      arrive(p, m);
      m = next;
    }
  }

  // Takes m towards the owner from worker `me` (null: outside the runtime). In a critical
  // section when me is set; inside an open scope.
  static void route(thread_port* p, lwkt_msg* m, globaldata* me, remote_call_scope& scope) {
    globaldata* owner = p->mp_td->td_gd;
    if (owner && owner == me) {
      arrive(p, m);
      return;
    }
    if (owner) {
      scope.call(owner, on_arrival, m, 0);
      return;
    }
    // seq_cst push, then the owner's schedule and the channel's wakeup (see the top). Once
    // m is on the stash the owner may take it, reply, destroy the port and exit before this
    // sender goes on: read the owner and hold it first, and after the push use only the
    // held thread (a wakeup that tolerates its exit) and the port's address.
    thread* td = p->mp_td;
    hold(td);
    lwkt_msg* head = p->mp_stash.load(std::memory_order_relaxed);
    do {
      m->ms_next = head;
    } while (!p->mp_stash.compare_exchange_weak(head, m, std::memory_order_seq_cst,
                                                std::memory_order_relaxed));
    internal::wakeup_thread(td);
    wakeup(p);
    rele(td);
  }

  // The handler: m, sent to a thread port, reached worker gd.
  static void on_arrival(void* arg, int, globaldata* gd) {
    auto* m = static_cast<lwkt_msg*>(arg);
    // Only thread ports send this handler; a reply travels to its reply port.
    lwkt_port* port = (m->ms_flags.load(std::memory_order_relaxed) & MSGF_REPLY)
                          ? m->ms_reply_port
                          : m->ms_target_port;
    remote_call_scope scope(gd->gd_runtime);  // on a worker of that runtime: always open
    route(static_cast<thread_port*>(port), m, gd, scope);
  }

  // A reply (kExistingWork) from outside the runtime is accepted through shutdown's grace
  // period, so that its originator can finish; a send (kNewWork) is refused once shutdown
  // has begun (msgport.h).
  static void send(thread_port* p, lwkt_msg* m, internal::api_class c) {
    globaldata* me = internal::mycpu();
    remote_call_scope scope(runtime(p), c);
    if (!scope.ok()) {
      // A refused send (or forward) of an asynchronous message whose reply port is a thread
      // port: its originator waits on that port, which a completion in place never wakes,
      // so the ECANCELED goes there as the reply (a kExistingWork send, accepted until the
      // grace period ends). Regression: Msgport.AForwardRefusedAtShutdownRepliesToAThreadPort.
      const std::uint32_t f = m->ms_flags.load(std::memory_order_relaxed);
      if (c == internal::api_class::kNewWork && !(f & MSGF_SYNC) &&
          dynamic_cast<thread_port*>(m->ms_reply_port) != nullptr) {
        lwkt_replymsg(m, ECANCELED);
        return;
      }
      msgport_internal::cancel_in_place(m);
      return;
    }
    if (me) crit_enter();  // the number and the send, together (see the top)
    m->ms_seq = p->mp_sendseq.fetch_add(1, std::memory_order_relaxed);
    route(p, m, me, scope);
    if (me) crit_exit();
  }

  // Sleeps on the port until ready() holds (checked in a critical section, after draining
  // the stash). Returns 0, or EINTR / ERESTART when a PCATCH sleep was interrupted.
  template <typename Ready>
  static int sleep_until(thread_port* p, int flags, const char* wmesg, Ready ready) {
    for (;;) {
      crit_enter();
      drain_stash(p);
      if (ready()) {
        crit_exit();
        return 0;
      }
      p->mp_waiting = true;
      tsleep_interlock(p, 0);
      drain_stash(p);  // a push before the interlock is seen here; a later one wakes us
      if (ready()) {
        p->mp_waiting = false;
        crit_exit();
        return 0;
      }
      crit_exit();  // may run arrivals, whose wakeup_mycpu(p) ends the interlock
      const int e = tsleep(p, PINTERLOCKED | (flags & PCATCH), wmesg);
      crit_enter();
      p->mp_waiting = false;
      crit_exit();
      if ((flags & PCATCH) && (e == EINTR || e == ERESTART)) return e;
    }
  }
};

thread_port::thread_port() : thread_port(curthread()) {}

thread_port::thread_port(thread* td)
    : mp_td(td), mp_rt(td && td->td_gd ? static_cast<globaldata*>(td->td_gd)->gd_runtime
                                       : nullptr) {
  if (!mp_rt) {
    std::fprintf(stderr, "lwkt: thread_port: %s\n",
                 td ? "the owner is in transit (given away, not acquired): it has no runtime "
                      "worker to name"
                    : "constructed outside an lwkt thread without an owner");
    std::abort();
  }
}

thread_port::~thread_port() {
  if (curthread() != mp_td) return;  // only the owner can look at the queues
  crit_enter();
  internals::drain_stash(this);
  const bool empty = msgport_internal::msgq_empty(&mp_q) && !mp_early;
  crit_exit();
  if (!empty) {
    std::fprintf(stderr,
                 "lwkt: thread_port of '%s' destroyed with messages still queued (their "
                 "senders would wait for replies forever)\n",
                 mp_td->name());
    std::abort();
  }
}

int thread_port::putport(lwkt_msg* msg) {
  internals::send(this, msg, internal::api_class::kNewWork);
  return EASYNC;
}

void thread_port::replyport(lwkt_msg* msg) {
  internals::send(this, msg, internal::api_class::kExistingWork);
}

lwkt_msg* thread_port::getport() {
  internals::check_owner(this, "getport");
  crit_enter();
  internals::drain_stash(this);
  lwkt_msg* m = msgport_internal::msgq_pop(&mp_q);
  crit_exit();
  return m;
}

lwkt_msg* thread_port::waitport(int flags) {
  internals::check_owner(this, "waitport");
  lwkt_msg* m = nullptr;
  internals::sleep_until(this, flags, "waitport",
                         [&] { return (m = msgport_internal::msgq_pop(&mp_q)) != nullptr; });
  return m;
}

int thread_port::waitmsg(lwkt_msg* msg, int flags) {
  internals::check_owner(this, "waitmsg");
  auto done = [&] {
    if (!(msg->ms_flags.load(std::memory_order_acquire) & MSGF_DONE)) return false;
    if (msg->ms_flags.load(std::memory_order_relaxed) & MSGF_QUEUED) {
      msgport_internal::msgq_remove(&mp_q, msg);
    }
    return true;
  };
  if (internals::sleep_until(this, flags, "waitmsg", done) != 0) {
    lwkt_abortmsg(msg);  // DragonFly: abort once, then wait on uninterruptibly
    internals::sleep_until(this, 0, "waitmsg", done);
  }
  return msg->ms_error;
}

bool thread_port::removemsg(lwkt_msg* msg) {
  internals::check_owner(this, "removemsg");
  crit_enter();
  internals::drain_stash(this);
  // Replies arrive only through handlers on this worker, which cannot run inside the
  // critical section: REPLY is exact here. (One in mp_early stays: it holds a sequence
  // number the port waits for.)
  const bool removed = !(msg->ms_flags.load(std::memory_order_relaxed) & MSGF_REPLY) &&
                       msgport_internal::msgq_remove(&mp_q, msg);
  crit_exit();
  return removed;
}

}  // namespace lwkt
