// sched_internal.h: functions shared by the scheduler, thread lifecycle and runtime files.
#pragma once

#include "absl/status/statusor.h"
#include "ipiq/ring.h"
#include "lwkt/internal/globaldata.h"
#include "lwkt/internal/remote_call.h"
#include "lwkt/thread.h"

namespace lwkt::internal {

// Queues msg on gd's inbox, flags RQF_IPIQ if it was empty and kicks a parked worker.
// Runs on: any OS thread.
void post(globaldata* gd, ipiq::inbox_msg* msg);
// Drains the inbox and the IPI rings. Runs on: gd's worker inside a critical section.
void drain_all(globaldata* gd);
// Sends a message on the ring (me -> target), or through the target's inbox when the caller
// is not one of the runtime's workers (ipi.cc).
std::uint32_t send_ipi(globaldata* target, ipiq::ipifunc func, void* arg1, std::intptr_t arg2,
                       void* aux, bool passive);
// Queues td on gd if gd still owns it (else forwards the request), then drops the
// sender's hold. Runs on: gd's worker inside a critical section.
void schedule_on_owner(globaldata* gd, thread* td);
// A schedule request for td found it in transit (no owner); see sched.cc. Returns the owner
// if one appeared meanwhile (forward the request to it), else null (acquire() queues td).
globaldata* defer_schedule(thread* td);
// Migration handoff: the new owner adopts td (migrate.cc).
void ipi_adopt(void* arg, std::intptr_t, void*, void* ctx);
void link_allq(globaldata* gd, thread* td);
void unlink_allq(globaldata* gd, thread* td);

// Tokens at switch time (token.cc). relalltokens releases every token td holds;
// getalltokens reacquires all of td's tokens or none, counting failures and warning once per
// contention episode that lasts longer than the runtime's token_warn.
inline constexpr std::uint32_t kTokenSpinLoops = 10;  // DragonFly lwkt.spin_loops
void relalltokens(thread* td);
bool getalltokens(globaldata* gd, thread* td);

// kern_synch.c loadav(): samples the run queue into gd_loadav (snapshot.cc).
void loadav_tick(globaldata* gd, std::uint64_t now);

// DragonFly lwkt_preempt (sched.cc): see there.
void lwkt_preempt(globaldata* gd, thread* ntd, int critcount);
// Switches the worker from td to ntd (sched.cc).
thread* cpu_switch_to(globaldata* gd, thread* td, thread* ntd);

// Sleep queues and timers (sleep.cc). Run on: gd's worker inside a critical section.
void run_timers(globaldata* gd);                 // fires expired sleep timeouts
std::uint64_t next_timer(const globaldata* gd);  // earliest deadline (cheap clock), 0: none
void sleep_exit_cleanup(globaldata* gd, thread* td);  // off the sleep queue and timer heap
bool wake_sleeper(globaldata* gd, thread* td);
// Switch points with gd->gd_io.busy set: the I/O provider's flush (io_hook.h); `idle`: the
// worker has nothing else to run. Owner only, inside a critical section.
void io_flush(globaldata* gd, bool idle);
void ipi_wakeup(void* ident, std::intptr_t flags, void* aux, void* ctx);
inline constexpr int PWAKEUP_ONE = 0x8000;  // wake at most one sleeper per worker
// wakeup / wakeup_one from an OS thread that is not a worker of rs: a message to every
// worker with a sleeper in ident's hash slot (sleeper_workers; runtime.cc). wakeup_from_outside_all: the same in every live runtime (the public
// lwkt::wakeup called outside any runtime: spurious wakeups are allowed, so waking the
// sleepers on ident in every runtime is correct). Run on: any OS thread.
void wakeup_from_outside(runtime_state* rs, const void* ident, int flags);
// Word w of the mask of rs's workers that have a sleeper in ident's hash slot (bit i: worker
// 64 * w + i). The caller has issued a seq_cst fence after changing its condition: a worker
// whose bit reads clear then had no sleeper there that could miss the change (a sleeper
// sets its bit, seq_cst, before it looks at the condition). Runs on: any OS thread, with rs
// listed (its state is not freed meanwhile).
std::uint64_t sleeper_workers(const runtime_state* rs, const void* ident, int w);
void wakeup_from_outside_all(const void* ident, int flags);
// On a worker of `mine`, after waking its own runtime's sleepers (do_wakeup, whose fence it
// relies on; skipped when a wakeup_one was satisfied on the caller's worker): the same
// request to every other live runtime (as from outside), so that a wakeup reaches a sleeper
// of another runtime in the process, as sleep.h promises. One relaxed load when there is
// one runtime.
void wakeup_other_runtimes(const runtime_state* mine, const void* ident, int flags);
// On worker `me`: wakeup / wakeup_one (flags 0 / PWAKEUP_ONE) of its own runtime only
// (Runtime::wakeup called on one of its workers).
void wakeup_own_runtime(globaldata* me, const void* ident, int flags);

// Runs every queued inbox message (with gd_intr_nesting_level raised: no switching).
// Returns how many ran. Runs on: gd's worker inside a critical section.
std::uint64_t drain_inbox(globaldata* gd);

// Links td on gd's run queue if not yet there; requests a reschedule if td became the head
// and is not running. Runs on: gd's worker inside a critical section.
void enqueue(globaldata* gd, thread* td);
void dequeue(globaldata* gd, thread* td);
// enqueue() inside a critical section of its own (deferred work runs at its crit_exit).
// Runs on: gd's worker.
void enqueue_crit(globaldata* gd, thread* td);

// Finishes the switch away from prev on the thread that now runs (DragonFly
// lwkt_switch_return): clears prev's TDF_RUNNING and reaps it if it exited.
void switch_return(globaldata* gd, thread* prev);
// Reaps an exited thread once it is off its stack (thread.cc).
void reap(globaldata* gd, thread* td);
// Frees a reaped thread object whose last reference was dropped (thread.cc).
void free_thread_object(thread* td);
// The owner's schedule handler gives back the sender's hold (see gd_rele_td). A stream of
// remote schedules of one thread then writes td_refs (the senders' line) once per flush,
// not once per message, so that line stays with the senders. Runs on: gd's worker, with td
// owned by gd.
void rele_deferred(globaldata* gd, thread* td);
// Gives back the deferred holds: all of them, or only td's (before td is given away or
// reaped). Runs on: gd's worker.
void flush_deferred_rele(globaldata* gd);
inline void flush_deferred_rele(globaldata* gd, thread* td) {
  if (gd->gd_rele_td == td) flush_deferred_rele(gd);
}

// Creates a thread owned by gd (thread.cc). Options must already be validated.
absl::StatusOr<thread_ref> create_local(globaldata* gd, void (*fn)(void*), void* arg,
                                        absl::AnyInvocable<void()> callable,
                                        const thread_options& opts);
// Creates a thread on the worker the options (or the rotor) select, locally or by request.
absl::StatusOr<thread_ref> create_on(runtime_state* rs, void (*fn)(void*), void* arg,
                                     absl::AnyInvocable<void()> callable,
                                     const thread_options& opts);

// The idle loop of a worker (worker.cc): runs threads, drains the inbox, spins, parks.
void idle_loop(globaldata* gd);

}  // namespace lwkt::internal
