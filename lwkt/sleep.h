// sleep.h
//
// Sleep and wakeup on wait channels (DragonFly/FreeBSD tsleep, wakeup), for lwkt threads.
//
//   tsleep(ident, flags, wmesg, timeout)  sleep until woken, timed out or interrupted
//   tsleep_interlock(ident, flags)         join the sleep queue without sleeping yet, so
//                                          that a caller can release its own lock and then
//                                          tsleep(..., PINTERLOCKED) with no lost wakeup
//   wakeup / wakeup_one / wakeup_mycpu     wake the sleepers on ident
//   interrupt(td)                          the user-space signal: a PCATCH sleep returns EINTR
//   lwkt_pause(timeout)                    sleep for a time
//
// Wait channels hash into per-worker sleep queues, touched only by their worker. A runtime-
// wide table keeps, per hash slot, the set of workers that may have sleepers there; wakeup
// scans its own worker and sends one message to each other worker in that set.
//
// A condition that another worker (or an OS thread outside the runtime) changes before it
// calls wakeup must be checked *after* joining the sleep queue, as in DragonFly:
//
//   for (;;) {
//     tsleep_interlock(&cond);
//     if (cond.load()) break;
//     tsleep(&cond, PINTERLOCKED, "cond");
//   }
//
// A bare `while (!cond) tsleep(&cond, ...)` is correct only when every waker runs on the
// sleeper's own worker (a critical section covers the check and the sleep there); across
// workers a wakeup that lands between the check and the sleep finds no sleeper and is lost.
//
// Return values: 0 when woken (possibly spuriously: callers loop on their condition),
// EWOULDBLOCK on timeout, EINTR (or ERESTART, if the interrupt asked for a restart) when
// PCATCH is set and the thread was interrupted.
// Timeouts fire at switch points and in the idle loop (a parked worker parks with a
// deadline); resolution is the cheap clock's, and a timeout never fires early. A thread that
// never yields delays the timers of its worker.
#pragma once

#include <cerrno>
#include <cstdint>

#include "absl/time/time.h"
#include "lwkt/thread.h"

namespace lwkt {

inline constexpr int PCATCH = 0x100;        // interruptible: lwkt::interrupt() ends the sleep
inline constexpr int PINTERLOCKED = 0x400;  // tsleep_interlock() was called already

// Runs on: an lwkt thread, outside any critical section (aborts otherwise).
// `timeout` zero or infinite: no timeout.
int tsleep(const void* ident, int flags, const char* wmesg,
           absl::Duration timeout = absl::ZeroDuration());
// Runs on: an lwkt thread.
void tsleep_interlock(const void* ident, int flags = 0);
// wakeup_one wakes at least one sleeper when there is any (DragonFly: at most one per
// worker, the oldest on that worker). They reach sleepers of every live Runtime in the
// process: called on a worker, its own runtime's directly and any other's by a message to
// each of its workers that has a sleeper in ident's hash slot; from an OS thread outside
// every runtime, by such messages (or use
// Runtime::wakeup / wakeup_one to name one runtime). Towards a runtime they are called
// outside of, they keep working through its shutdown grace period (Runtime::shutdown), so
// that a thread waiting for them can finish, and are no-ops once it has ended (interrupt()
// likewise). Runs on: any OS thread.
void wakeup(const void* ident);
void wakeup_one(const void* ident);
// Wakes sleepers on the calling worker only. Runs on: an lwkt thread.
void wakeup_mycpu(const void* ident);
// Sets td's interrupt request; ends a PCATCH sleep (now or the next one) with EINTR, or
// with ERESTART when `restart` is set (the caller's operation should be retried, like a
// signal whose handler has SA_RESTART). Requires: a reference to td. Runs on: any OS thread.
void interrupt(thread* td, bool restart = false);
// Sleeps for `timeout` and returns EWOULDBLOCK (not interruptible). A timeout <= 0 sleeps
// until the worker's next switch point; an infinite one aborts. Runs on: an lwkt thread.
int lwkt_pause(absl::Duration timeout);

}  // namespace lwkt
