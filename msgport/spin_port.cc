// spin_port.cc: ports shared by any threads (DragonFly's spin ports). A test-and-test-and-
// set lock guards the queues and the waiter counts; an lwkt thread holds it inside a
// critical section, so it is never switched out (nor runs handlers) while holding it, and
// no thread of the same worker can spin on it meanwhile. Hold times are a few list
// operations.
//
// Waiting. lwkt threads interlock on the port's channel (tsleep_interlock) under the lock,
// having counted themselves in mp_lwkt_waiters; a putter that saw the count after its push
// calls wakeup_one(port) once unlocked, which reaches the interlocked sleeper. Other OS
// threads count themselves in mp_os_waiters and read mp_gen under the lock, then wait on it
// (C++20 atomic wait, a futex); a putter that saw them bumps mp_gen under the lock and
// notifies after it, so the value a waiter read is stale and its wait returns.
#include <sched.h>

#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "msgport/internal/common.h"
#include "msgport/msgport.h"

namespace lwkt {

using msgport_internal::msgq_pop;
using msgport_internal::msgq_push;

namespace {
inline void spin_pause() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}
}  // namespace

struct spin_port::internals {
  // The lock, with the caller's critical section when it is an lwkt thread.
  class locked {
   public:
    explicit locked(spin_port* p) : _p(p), _lwkt(curthread() != nullptr) {
      if (_lwkt) crit_enter();
      // acquire: the previous holder's queue writes (its release store below).
      for (int spins = 0; _p->mp_locked.exchange(true, std::memory_order_acquire);) {
        while (_p->mp_locked.load(std::memory_order_relaxed)) {
          // An OS-thread holder may be descheduled: give the CPU up now and then.
          if (++spins % 1024 == 0) {
            sched_yield();
          } else {
            spin_pause();
          }
        }
      }
    }
    ~locked() {
      _p->mp_locked.store(false, std::memory_order_release);
      if (_lwkt) crit_exit();
    }
    locked(const locked&) = delete;
    locked& operator=(const locked&) = delete;

   private:
    spin_port* _p;
    bool _lwkt;
  };

  // Queues m (flagged by `flag` under the lock) and wakes the port's waiters and, for a
  // reply, the message's own waiter: all after unlocking. A wakeup may wait for room in an
  // IPI ring; a worker spinning on this lock (inside a critical section) drains none, so a
  // wakeup under the lock could deadlock with it (regression:
  // SpinPort.AReplyWakesItsWaiterOnlyAfterUnlocking).
  template <typename Flag>
  static void put(spin_port* p, lwkt_msg* m, Flag flag) {
    bool wake_lwkt, wake_os;
    msgport_internal::done_wake done;
    {
      locked l(p);
      msgq_push(&p->mp_q, m);
      done = flag(m);  // under the lock: a consumer that pops m sees its flags complete
      wake_lwkt = p->mp_lwkt_waiters > 0;
      wake_os = p->mp_os_waiters > 0;
      if (wake_os) p->mp_gen.fetch_add(1, std::memory_order_relaxed);
    }
    msgport_internal::wake_done(done);
    if (wake_lwkt) wakeup_one(p);
    if (wake_os) p->mp_gen.notify_all();
  }
};

spin_port::~spin_port() {
  internals::locked l(this);
  if (!msgport_internal::msgq_empty(&mp_q)) {
    msgport_internal::misuse("spin_port::~spin_port", mp_q.prio_head ? mp_q.prio_head : mp_q.head,
                             "still queued on a port being destroyed");
  }
}

int spin_port::putport(lwkt_msg* msg) {
  internals::put(this, msg, [](lwkt_msg* m) {
    m->ms_flags.fetch_or(MSGF_QUEUED, std::memory_order_relaxed);
    return msgport_internal::done_wake{};
  });
  return EASYNC;
}

void spin_port::replyport(lwkt_msg* msg) {
  internals::put(this, msg,
                 [](lwkt_msg* m) { return msgport_internal::mark_done(m, MSGF_QUEUED | MSGF_DONE); });
}

lwkt_msg* spin_port::getport() {
  internals::locked l(this);
  return msgq_pop(&mp_q);
}

lwkt_msg* spin_port::waitport(int flags) {
  const bool lwkt = curthread() != nullptr;
  for (;;) {
    std::uint32_t gen = 0;
    {
      internals::locked l(this);
      if (lwkt_msg* m = msgq_pop(&mp_q)) return m;
      if (lwkt) {
        ++mp_lwkt_waiters;
        tsleep_interlock(this, 0);
      } else {
        ++mp_os_waiters;
        gen = mp_gen.load(std::memory_order_relaxed);
      }
    }
    int e = 0;
    if (lwkt) {
      e = tsleep(this, PINTERLOCKED | (flags & PCATCH), "waitport");
    } else {
      mp_gen.wait(gen, std::memory_order_relaxed);
    }
    const bool interrupted = (flags & PCATCH) && (e == EINTR || e == ERESTART);
    bool pass_on = false;
    {
      internals::locked l(this);
      --(lwkt ? mp_lwkt_waiters : mp_os_waiters);
      // A put's wakeup_one may have chosen us just as we were interrupted: leaving with a
      // message queued and waiters asleep would strand it. Pass the wakeup on (regression:
      // SpinPort.AnInterruptedWaiterPassesItsWakeupOn).
      pass_on = interrupted && !msgport_internal::msgq_empty(&mp_q) && mp_lwkt_waiters > 0;
    }
    if (pass_on) wakeup_one(this);
    if (interrupted) return nullptr;
  }
}

int spin_port::waitmsg(lwkt_msg* msg, int flags) {
  msgport_internal::wait_done(msg, flags);  // a queued reply is DONE (see replyport)
  if (msg->ms_flags.load(std::memory_order_relaxed) & MSGF_QUEUED) {
    internals::locked l(this);
    msgport_internal::msgq_remove(&mp_q, msg);
  }
  return msg->ms_error;
}

bool spin_port::removemsg(lwkt_msg* msg) {
  internals::locked l(this);
  // REPLY is set before a reply is queued under this lock (lwkt_replymsg): exact here.
  if (msg->ms_flags.load(std::memory_order_relaxed) & MSGF_REPLY) return false;
  return msgport_internal::msgq_remove(&mp_q, msg);
}

}  // namespace lwkt
