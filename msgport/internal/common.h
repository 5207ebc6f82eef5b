// common.h: what msgport.cc, thread_port.cc and spin_port.cc share. Internal.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "msgport/msgport.h"

namespace lwkt {

// An OS thread (not an lwkt thread) blocked in lwkt_waitmsg: it lives on that thread's
// stack, published through ms_waiter before MSGF_WAITING_OS is set. The waiter waits on
// `done`, never on the message, so the completer may read ms_waiter after its flags RMW
// (the message is alive until the waiter is released) and touches neither afterwards.
struct msg_os_waiter {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
};

namespace msgport_internal {

// Aborts with "lwkt: <call>: message <msg>: <why> (thread '<name>')".
[[noreturn]] void misuse(const char* call, const lwkt_msg* msg, const char* why);

// msgq: FIFO per class; the priority class first. The caller owns the queue (a thread
// port's owner worker in a critical section, or a spin port's lock).
void msgq_push(msgq* q, lwkt_msg* m);
lwkt_msg* msgq_pop(msgq* q);
bool msgq_remove(msgq* q, lwkt_msg* m);
inline bool msgq_empty(const msgq* q) { return !q->prio_head && !q->head; }

// Sets `bits` (which include MSGF_DONE) and wakes whoever waits on the message. After this
// call msg may be reused or freed by its originator: the wakeup uses only its address.
// acq_rel: the originator's acquire of DONE sees ms_error and the results (release); the
// RMW reads the waiter's MSGF_WAITING* RMW, so a waiter either saw DONE or is woken.
void complete(lwkt_msg* msg, std::uint32_t bits);
// complete() in two steps, for a caller that sets the flags under a lock and must wake only
// after releasing it (a wakeup may wait for room in an IPI ring, which a worker spinning on
// that lock would never drain): mark_done is the RMW, and reads what it must wake while msg
// is alive; wake_done wakes from that alone (msg may be gone by then).
struct done_wake {
  msg_os_waiter* os = nullptr;     // an OS thread blocked on its record (MSGF_WAITING_OS)
  const void* chan = nullptr;      // the tsleep channel of an lwkt waiter (MSGF_WAITING)
};
done_wake mark_done(lwkt_msg* msg, std::uint32_t bits);
void wake_done(const done_wake& w);
// Waits until msg is DONE, on the message itself (a domsg, or a spin port's reply):
// tsleep on an lwkt thread, the kernel elsewhere. flags: PCATCH as for lwkt_waitmsg.
void wait_done(lwkt_msg* msg, int flags);
// A send refused because the runtime is shutting down: completed in place, ECANCELED.
void cancel_in_place(lwkt_msg* msg);

}  // namespace msgport_internal
}  // namespace lwkt
