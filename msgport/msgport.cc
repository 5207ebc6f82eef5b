// msgport.cc: the generic message operations (DragonFly lwkt_msgport.c's lwkt_sendmsg,
// lwkt_domsg, lwkt_forwardmsg, lwkt_replymsg, lwkt_waitmsg, lwkt_abortmsg) and the queue
// and completion helpers both kinds of port use.
#include <cstdio>
#include <cstdlib>

#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "msgport/internal/common.h"
#include "msgport/msgport.h"

namespace lwkt {
namespace msgport_internal {

void misuse(const char* call, const lwkt_msg* msg, const char* why) {
  thread* td = curthread();
  std::fprintf(stderr, "lwkt: %s: message %p: %s (thread '%s')\n", call,
               static_cast<const void*>(msg), why, td ? td->name() : "(not an lwkt thread)");
  std::abort();
}

void msgq_push(msgq* q, lwkt_msg* m) {
  const bool prio = m->ms_flags.load(std::memory_order_relaxed) & MSGF_PRIORITY;
  lwkt_msg*& head = prio ? q->prio_head : q->head;
  lwkt_msg*& tail = prio ? q->prio_tail : q->tail;
  m->ms_next = nullptr;
  if (tail) {
    tail->ms_next = m;
  } else {
    head = m;
  }
  tail = m;
}

lwkt_msg* msgq_pop(msgq* q) {
  const bool prio = q->prio_head != nullptr;
  lwkt_msg*& head = prio ? q->prio_head : q->head;
  lwkt_msg*& tail = prio ? q->prio_tail : q->tail;
  lwkt_msg* m = head;
  if (!m) return nullptr;
  head = m->ms_next;
  if (!head) tail = nullptr;
  m->ms_next = nullptr;
  m->ms_flags.fetch_and(~MSGF_QUEUED, std::memory_order_relaxed);
  return m;
}

bool msgq_remove(msgq* q, lwkt_msg* m) {
  for (int c = 0; c < 2; ++c) {
    lwkt_msg*& head = c == 0 ? q->prio_head : q->head;
    lwkt_msg*& tail = c == 0 ? q->prio_tail : q->tail;
    for (lwkt_msg *prev = nullptr, *it = head; it; prev = it, it = it->ms_next) {
      if (it != m) continue;
      (prev ? prev->ms_next : head) = m->ms_next;
      if (tail == m) tail = prev;
      m->ms_next = nullptr;
      m->ms_flags.fetch_and(~MSGF_QUEUED, std::memory_order_relaxed);
      return true;
    }
  }
  return false;
}

done_wake mark_done(lwkt_msg* msg, std::uint32_t bits) {
  const std::uint32_t old = msg->ms_flags.fetch_or(bits, std::memory_order_acq_rel);
  done_wake w;
  // The waiter is blocked on its record until we release it (see msg_os_waiter), so msg is
  // still alive for this read.
  if (old & MSGF_WAITING_OS) w.os = msg->ms_waiter;
  if (old & MSGF_WAITING) w.chan = msg;
  return w;
}

void wake_done(const done_wake& w) {
  if (w.os) {
    std::lock_guard<std::mutex> l(w.os->mu);
    w.os->done = true;
    w.os->cv.notify_one();  // under the lock: the record outlives this call
  }
  // The address only: a waiter that saw DONE by itself may have freed msg already, and a
  // stray wakeup of a later message at the same address is a spurious one (waiters loop).
  if (w.chan) wakeup(w.chan);
}

void complete(lwkt_msg* msg, std::uint32_t bits) { wake_done(mark_done(msg, bits)); }

void wait_done(lwkt_msg* msg, int flags) {
  if (msg->ms_flags.load(std::memory_order_acquire) & MSGF_DONE) return;
  if (curthread() == nullptr) {
    msg_os_waiter w;
    msg->ms_waiter = &w;
    // acq_rel: publishes ms_waiter to the completer (which reads it after its own RMW);
    // reading DONE here acquires the reply.
    if (msg->ms_flags.fetch_or(MSGF_WAITING_OS, std::memory_order_acq_rel) & MSGF_DONE) return;
    std::unique_lock<std::mutex> l(w.mu);
    w.cv.wait(l, [&] { return w.done; });
    return;
  }
  bool aborted = false;
  for (;;) {
    // Interlock first, then announce: a completer whose RMW follows ours sees WAITING and
    // wakes the channel we are already queued on. (A completion that lands between the
    // check above and the interlock leaves the interlock behind: harmless, the next
    // tsleep_interlock replaces it and a stray wakeup is a spurious one.)
    tsleep_interlock(msg, 0);
    if (msg->ms_flags.fetch_or(MSGF_WAITING, std::memory_order_acq_rel) & MSGF_DONE) return;
    const int catching = aborted ? 0 : (flags & PCATCH);
    const int e = tsleep(msg, PINTERLOCKED | catching, "waitmsg");
    // Woken: check before interlocking again, so a completed wait leaves nothing queued.
    if (msg->ms_flags.load(std::memory_order_acquire) & MSGF_DONE) return;
    if (catching && (e == EINTR || e == ERESTART)) {
      // DragonFly: the first interruption asks the receiver to abort; the wait goes on,
      // uninterruptibly, for the reply (which every message gets).
      aborted = true;
      lwkt_abortmsg(msg);
    }
  }
}

void cancel_in_place(lwkt_msg* msg) {
  msg->ms_error = ECANCELED;
  complete(msg, MSGF_DONE | MSGF_REPLY);
}

}  // namespace msgport_internal

using msgport_internal::complete;
using msgport_internal::misuse;

namespace {
// The originator's checks before a send, and the flags it starts with.
std::uint32_t begin_flags(const char* call, lwkt_msg* msg) {
  const std::uint32_t f = msg->ms_flags.load(std::memory_order_acquire);
  if (!(f & MSGF_DONE)) misuse(call, msg, "still in flight (sent and not yet replied)");
  if (f & MSGF_QUEUED) misuse(call, msg, "still queued on a port (take it off first)");
  return f & ~(MSGF_DONE | MSGF_REPLY | MSGF_SYNC | MSGF_WAITING | MSGF_WAITING_OS);
}
}  // namespace

void lwkt_initmsg(lwkt_msg* msg, lwkt_port* reply_port, std::uint32_t flags) {
  msg->ms_reply_port = reply_port;
  msg->ms_flags.store(MSGF_DONE | flags, std::memory_order_relaxed);
}

void lwkt_initmsg_abortable(lwkt_msg* msg, lwkt_port* reply_port, std::uint32_t flags,
                            void (*abortfn)(lwkt_msg*)) {
  msg->ms_abortfn = abortfn;
  lwkt_initmsg(msg, reply_port, flags | MSGF_ABORTABLE);
}

void lwkt_sendmsg(lwkt_port* port, lwkt_msg* msg) {
  const std::uint32_t f = begin_flags("lwkt_sendmsg", msg);
  if (!msg->ms_reply_port) misuse("lwkt_sendmsg", msg, "has no reply port (lwkt_initmsg)");
  // The target takes ownership at putport: nothing below may touch msg but the error path.
  msg->ms_flags.store(f, std::memory_order_relaxed);
  msg->ms_target_port = port;
  if (const int e = port->putport(msg); e != EASYNC) lwkt_replymsg(msg, e);
}

int lwkt_domsg(lwkt_port* port, lwkt_msg* msg, int flags) {
  const std::uint32_t f = begin_flags("lwkt_domsg", msg);
  // A drop would complete it with no reply, and domsg would return a stale ms_error.
  if (f & MSGF_DROPABLE) misuse("lwkt_domsg", msg, "is DROPABLE: it cannot be waited on");
  msg->ms_flags.store(f | MSGF_SYNC, std::memory_order_relaxed);
  msg->ms_target_port = port;
  if (const int e = port->putport(msg); e != EASYNC) {
    msg->ms_error = e;
    msg->ms_flags.fetch_or(MSGF_DONE | MSGF_REPLY, std::memory_order_release);
    return e;
  }
  msgport_internal::wait_done(msg, flags);
  return msg->ms_error;
}

int lwkt_forwardmsg(lwkt_port* port, lwkt_msg* msg) {
  const std::uint32_t f = msg->ms_flags.load(std::memory_order_relaxed);
  if (f & (MSGF_DONE | MSGF_REPLY | MSGF_QUEUED)) {
    misuse("lwkt_forwardmsg", msg, "not held by a receiver (complete, replied or queued)");
  }
  msg->ms_target_port = port;
  const int e = port->putport(msg);
  if (e != EASYNC) lwkt_replymsg(msg, e);
  return e;
}

void lwkt_replymsg(lwkt_msg* msg, int error) {
  const std::uint32_t f = msg->ms_flags.load(std::memory_order_relaxed);
  if (f & MSGF_DONE) misuse("lwkt_replymsg", msg, "already complete (replied twice, or never sent)");
  if (f & MSGF_QUEUED) misuse("lwkt_replymsg", msg, "still queued on a port (take it first)");
  msg->ms_error = error;
  if (f & MSGF_SYNC) {
    complete(msg, MSGF_DONE | MSGF_REPLY);  // in place: the originator waits on msg itself
    return;
  }
  msg->ms_flags.fetch_or(MSGF_REPLY, std::memory_order_relaxed);
  msg->ms_reply_port->replyport(msg);  // completes it (DONE) once queued there
}

int lwkt_waitmsg(lwkt_msg* msg, int flags) {
  const std::uint32_t f = msg->ms_flags.load(std::memory_order_acquire);
  if (f & MSGF_DROPABLE) misuse("lwkt_waitmsg", msg, "is DROPABLE: it cannot be waited on");
  if (f & MSGF_SYNC) {
    msgport_internal::wait_done(msg, flags);
    return msg->ms_error;
  }
  if (!msg->ms_reply_port) misuse("lwkt_waitmsg", msg, "has no reply port");
  return msg->ms_reply_port->waitmsg(msg, flags);
}

bool lwkt_checkmsg(const lwkt_msg* msg) {
  return msg->ms_flags.load(std::memory_order_acquire) & MSGF_DONE;
}

int lwkt_dropmsg(lwkt_msg* msg) {
  // acquire: pairs with the release that set DONE or REPLY (complete(), lwkt_replymsg), so
  // a caller told ENOENT may read the reply's ms_error.
  const std::uint32_t f = msg->ms_flags.load(std::memory_order_acquire);
  if (!(f & MSGF_DROPABLE)) misuse("lwkt_dropmsg", msg, "is not DROPABLE");
  // Complete (never sent: lwkt_initmsg sets DONE; or its reply taken) or replied: on no
  // target's queue, and a never-sent one has no target port to ask (regression:
  // Msgport.DropOfAMessageNeverSent).
  if (f & (MSGF_DONE | MSGF_REPLY)) return ENOENT;
  // removemsg checks MSGF_REPLY again under the port's own serialisation: a receiver may
  // reply between our load and it, and where the target is also the reply port the reply
  // would otherwise be what we remove.
  if (!msg->ms_target_port->removemsg(msg)) return ENOENT;
  // Nobody waits on a DROPABLE message (domsg and waitmsg refuse them), so complete() only
  // sets DONE (release) here; it wakes no one.
  complete(msg, MSGF_DONE);
  return 0;
}

void lwkt_abortmsg(lwkt_msg* msg) {
  const bool in_runtime = curthread() != nullptr;
  if (in_runtime) crit_enter();
  const std::uint32_t f = msg->ms_flags.load(std::memory_order_acquire);
  if ((f & MSGF_ABORTABLE) && !(f & (MSGF_DONE | MSGF_REPLY))) msg->ms_abortfn(msg);
  if (in_runtime) crit_exit();
}

lwkt_msg* lwkt_getport(lwkt_port* port) { return port->getport(); }
lwkt_msg* lwkt_waitport(lwkt_port* port, int flags) { return port->waitport(flags); }

}  // namespace lwkt
