// msgport.h
//
// Message ports (DragonFly lwkt_msgport.c): a thread sends a message to a port; the port's
// receiver takes it, acts, and replies; the reply completes the message in place (domsg)
// or is queued on the message's reply port (sendmsg). Messages belong to the caller and
// embed their header (lwkt_msg), so sending allocates nothing on the fast path.
//
//   lwkt_initmsg(msg, reply_port, flags)    prepare a message (once; it stays reusable)
//   lwkt_sendmsg(port, msg)                 asynchronous: the reply comes to reply_port
//   lwkt_domsg(port, msg, flags)            synchronous: send, wait, return ms_error
//   lwkt_forwardmsg(port, msg)              a receiver passes a message on, unreplied
//   lwkt_replymsg(msg, error)               the receiver completes it
//   lwkt_waitmsg(msg, flags)                the sender waits for completion
//   lwkt_getport / lwkt_waitport            a receiver takes the next message
//   lwkt_checkmsg / dropmsg / abortmsg      poll; withdraw a queued message; ask to abort
//
// Two kinds of port:
//   thread_port  owned by one lwkt thread, the only one that takes messages from it (and
//                that waits on replies sent to it). Its queues are touched only on the
//                owner's current worker, inside a critical section: a sender on that worker
//                queues directly; one elsewhere sends the message through the IPI ring to
//                the owner's worker (from outside the runtime, through its inbox). A message
//                that reaches a worker the owner has left is forwarded after it. Order:
//                messages become visible in the order their putports took a sequence
//                number, so each sender's messages arrive in its send order, whatever the
//                owner's migrations (setcpu_self, giveaway/acquire) in between.
//   spin_port    shared: any lwkt thread (or any OS thread) may take from it and wait on it;
//                a small spin lock guards the queues, in FIFO order of the lock.
// Messages with MSGF_PRIORITY are taken before the others; within each class, FIFO.
//
// Ownership (as in DragonFly): the originator owns a message before sending and after the
// reply; the target while it is in flight. Only the owner touches it, except through the
// functions below. A port must outlive every message sent to it, and a message must
// outlive its reply.
//
// After the runtime has begun shutting down, a send from outside it (an OS thread that is
// not one of its workers) to a thread port is refused: the message completes at once, in
// place, with ms_error ECANCELED (not queued on its reply port), except an asynchronous
// message whose reply port is a thread port (one forwarded from outside, say): its
// originator waits on that port, so the ECANCELED is sent there as the reply. Replies
// from outside (lwkt_replymsg, to a thread port or completing a domsg in place) keep
// working through shutdown's grace period, so that the originator can finish; once the
// grace period has ended, a reply to a thread port completes the message in place with
// ECANCELED and wakes nobody (the originator is abandoned). Sends between lwkt threads
// keep working until the workers stop.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdint>

#include "lwkt/thread.h"

namespace lwkt {

inline constexpr std::uint32_t MSGF_DONE = 0x0001;       // complete (and: never sent)
inline constexpr std::uint32_t MSGF_REPLY = 0x0002;      // a reply (stays set once replied)
inline constexpr std::uint32_t MSGF_QUEUED = 0x0004;     // linked on a port's queue
inline constexpr std::uint32_t MSGF_SYNC = 0x0008;       // domsg: completed in place
inline constexpr std::uint32_t MSGF_WAITING = 0x0020;    // an lwkt thread sleeps on it
inline constexpr std::uint32_t MSGF_DROPABLE = 0x0040;   // lwkt_dropmsg may withdraw it
inline constexpr std::uint32_t MSGF_ABORTABLE = 0x0080;  // ms_abortfn is set
inline constexpr std::uint32_t MSGF_PRIORITY = 0x0100;   // taken before ordinary messages
inline constexpr std::uint32_t MSGF_WAITING_OS = 0x0200; // an OS thread waits (ms_waiter)
inline constexpr std::uint32_t MSGF_USER0 = 0x00010000;  // free for the user
inline constexpr std::uint32_t MSGF_USER1 = 0x00020000;
inline constexpr std::uint32_t MSGF_USER2 = 0x00040000;
inline constexpr std::uint32_t MSGF_USER3 = 0x00080000;

// putport's answer "queued; the reply comes later" (DragonFly's EASYNC).
inline constexpr int EASYNC = 0x10000;

class lwkt_port;
struct msg_os_waiter;
struct lwkt_msg;

// A port's two queues (priority, ordinary), each FIFO through ms_next.
struct msgq {
  lwkt_msg* prio_head = nullptr;
  lwkt_msg* prio_tail = nullptr;
  lwkt_msg* head = nullptr;
  lwkt_msg* tail = nullptr;
};

// The header every message embeds (usually as its first member). Fields marked "runtime"
// belong to the ports and the functions below.
struct lwkt_msg {
  lwkt_msg* ms_next = nullptr;              // runtime: queue link
  lwkt_port* ms_target_port = nullptr;      // runtime: where it was last sent
  lwkt_port* ms_reply_port = nullptr;       // where asynchronous replies go
  void (*ms_abortfn)(lwkt_msg*) = nullptr;  // with MSGF_ABORTABLE: see lwkt_abortmsg
  std::atomic<std::uint32_t> ms_flags{MSGF_DONE};
  int ms_error = 0;                         // the reply's error (0: success)
  std::uint64_t ms_seq = 0;                 // runtime: the target port's send order
  msg_os_waiter* ms_waiter = nullptr;       // runtime: an OS thread in lwkt_waitmsg
  union {                                   // results, free for the receiver to set
    void* ms_resultp;
    int ms_result;
    long ms_lresult;
    std::int64_t ms_result64;
    std::uint64_t ms_resultu64;
  } u = {nullptr};
};

// Sets the reply port and ms_flags = MSGF_DONE | flags (the other fields are untouched, so
// a message may be re-initialised between uses). Runs on: any OS thread.
void lwkt_initmsg(lwkt_msg* msg, lwkt_port* reply_port, std::uint32_t flags);
void lwkt_initmsg_abortable(lwkt_msg* msg, lwkt_port* reply_port, std::uint32_t flags,
                            void (*abortfn)(lwkt_msg*));

// Asynchronous send. Requires: msg DONE (not in flight), a reply port. If the port completes
// the message at once (a custom port whose putport returns other than EASYNC), the reply
// goes to the reply port all the same. Runs on: any OS thread.
void lwkt_sendmsg(lwkt_port* port, lwkt_msg* msg);
// Synchronous: sends and waits for the reply, returns ms_error. The reply completes msg in
// place (never queued on a reply port). Requires: msg not DROPABLE (aborts otherwise). flags: 0 or PCATCH (lwkt/sleep.h): an interrupt of
// the waiting thread calls lwkt_abortmsg once, then it waits on, uninterruptibly.
// Runs on: any OS thread (an lwkt thread sleeps; any other OS thread blocks in the kernel).
int lwkt_domsg(lwkt_port* port, lwkt_msg* msg, int flags);
// A receiver passes a message it holds (taken, not replied) to another port; the reply
// still goes to the originator. Returns EASYNC, or the error with which it was replied.
// Runs on: any OS thread.
int lwkt_forwardmsg(lwkt_port* port, lwkt_msg* msg);
// Completes msg with `error`: in place for a domsg (waking its waiter), else queued on its
// reply port. After this call the replier no longer owns msg. Runs on: any OS thread.
void lwkt_replymsg(lwkt_msg* msg, int error);
// Waits until msg is complete, takes it off its reply port if the reply was queued there,
// and returns ms_error. flags as for lwkt_domsg. Requires: msg not DROPABLE; for a reply
// port that is a thread_port, the caller is its owner. Runs on: any OS thread (an OS
// thread outside the runtime may wait only for a domsg or a spin_port reply).
int lwkt_waitmsg(lwkt_msg* msg, int flags);
// Whether msg is complete (MSGF_DONE). Runs on: any OS thread.
bool lwkt_checkmsg(const lwkt_msg* msg);
// Withdraws a DROPABLE message from its target's queue: 0 when it was still queued there
// (it is then DONE, not replied), ENOENT otherwise (never sent, taken by the receiver,
// replied, or still on its way to a thread port on another worker). Requires: for a
// thread_port target, the caller is its owner. Runs on: see the port.
int lwkt_dropmsg(lwkt_msg* msg);
// Asks for an abort: if msg is ABORTABLE and neither complete nor replied, calls
// ms_abortfn(msg) in the caller's context, inside a critical section (it must not block;
// it typically sends an abort request to the receiver). The message still gets its normal
// reply, later. Runs on: any OS thread.
void lwkt_abortmsg(lwkt_msg* msg);

// The next message, or null if there is none; lwkt_waitport blocks until there is one
// (null when a PCATCH wait is interrupted). Runs on: see the port.
lwkt_msg* lwkt_getport(lwkt_port* port);
lwkt_msg* lwkt_waitport(lwkt_port* port, int flags);

// A port (DragonFly's method table). Users may derive their own.
class lwkt_port {
 public:
  virtual ~lwkt_port() = default;
  // Accepts msg (ms_target_port is already this port): EASYNC when it will be replied
  // later, or any other value to complete it at once with that error.
  virtual int putport(lwkt_msg* msg) = 0;
  // Queues an asynchronous reply (MSGF_REPLY set, ms_error stored); completes it (DONE)
  // once it is queued, waking a waiter.
  virtual void replyport(lwkt_msg* msg) = 0;
  virtual lwkt_msg* getport() = 0;
  virtual lwkt_msg* waitport(int flags) = 0;
  // Waits for an asynchronous reply sent to this port to complete, takes it off the
  // queue, returns ms_error (lwkt_waitmsg; a domsg never comes here).
  virtual int waitmsg(lwkt_msg* msg, int flags) = 0;
  // Unlinks msg if it is queued here as a request (MSGF_REPLY clear, checked under the
  // port's own serialisation): true if it was. lwkt_dropmsg's second step.
  virtual bool removemsg(lwkt_msg* msg) = 0;
};

// Owned by one lwkt thread (see the top of this file).
class thread_port final : public lwkt_port {
 public:
  // Owned by the calling lwkt thread. Runs on: an lwkt thread.
  thread_port();
  // Owned by td, which must not be in transit (giveaway without acquire). Runs on: any OS
  // thread; the caller keeps td alive while the port is in use.
  explicit thread_port(thread* td);
  thread_port(const thread_port&) = delete;
  thread_port& operator=(const thread_port&) = delete;
  ~thread_port() override;

  thread* owner() const { return mp_td; }
  // Runs on: any OS thread.
  int putport(lwkt_msg* msg) override;
  void replyport(lwkt_msg* msg) override;
  // Runs on: the owner only (aborts otherwise).
  lwkt_msg* getport() override;
  lwkt_msg* waitport(int flags) override;
  int waitmsg(lwkt_msg* msg, int flags) override;
  bool removemsg(lwkt_msg* msg) override;

 private:
  struct internals;
  friend struct internals;
  thread* const mp_td;
  void* const mp_rt;                       // the owner's runtime (runtime_state)
  // Sender side: the next sequence number (see the top of this file).
  std::atomic<std::uint64_t> mp_sendseq{0};
  // Messages that reached a worker while the owner was in transit (no worker): a Treiber
  // stack, drained by the owner's next worker.
  std::atomic<lwkt_msg*> mp_stash{nullptr};
  // Owner side: touched only on the owner's worker, inside a critical section.
  msgq mp_q;
  lwkt_msg* mp_early = nullptr;            // arrived ahead of mp_nextseq, sorted by ms_seq
  std::uint64_t mp_nextseq = 0;
  bool mp_waiting = false;                 // the owner sleeps in waitport on this port
};

// Shared by any threads (see the top of this file).
class spin_port final : public lwkt_port {
 public:
  spin_port() = default;
  spin_port(const spin_port&) = delete;
  spin_port& operator=(const spin_port&) = delete;
  ~spin_port() override;

  // Runs on: any OS thread.
  int putport(lwkt_msg* msg) override;
  void replyport(lwkt_msg* msg) override;
  lwkt_msg* getport() override;
  lwkt_msg* waitport(int flags) override;
  int waitmsg(lwkt_msg* msg, int flags) override;
  bool removemsg(lwkt_msg* msg) override;

 private:
  struct internals;
  friend struct internals;
  std::atomic<bool> mp_locked{false};
  msgq mp_q;                               // under mp_locked
  int mp_lwkt_waiters = 0;                 // lwkt threads in waitport (under the lock)
  int mp_os_waiters = 0;                   // other OS threads in waitport (under the lock)
  std::atomic<std::uint32_t> mp_gen{0};    // bumped per put when OS threads wait (futex)
};

}  // namespace lwkt
