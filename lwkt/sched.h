// sched.h
//
// The per-worker scheduler: critical sections, scheduling, switching, yielding, priorities.
//
//   crit_enter / crit_exit / crit_section   critical sections (nest per thread)
//   curthread / mycpuid                     the running lwkt thread and its worker
//   schedule / deschedule                   make a thread runnable / not runnable
//   schedule_self / deschedule_self
//   lwkt_switch                             give the worker to the best runnable thread
//   yield / yield_quick                     DragonFly lwkt_yield / lwkt_yield_quick
//   setpri / setpri_self                    change td_pri (never switches by itself)
//
// Critical sections (DragonFly crit_enter/crit_exit). A critical section belongs to the
// thread: it defers asynchronous work on this worker (messages from other OS threads that
// schedule or deschedule threads) until the outermost crit_exit, which runs it (the 1 -> 0
// transition). It does not forbid switching: a thread that blocks inside one resumes inside
// it. The run queue and every other per-worker structure are protected by nothing else.
//
// Scheduling is fixed-priority and non-preemptive between ordinary threads: a running thread
// keeps its worker until it blocks, yields or exits. A thread made runnable that is better
// than the running one (or the clock's round-robin rotation) sets a reschedule request that
// the next yield point honours. A running thread stays on its run queue (DragonFly
// semantics); it leaves only when it deschedules itself to block.
#pragma once

#include <cstdint>

#include "lwkt/thread.h"

namespace lwkt {

// The running lwkt thread, or null when the caller is not an lwkt thread.
thread* curthread();
// The worker index of the calling lwkt thread, or -1 outside the runtime.
int mycpuid();

void crit_enter();
void crit_exit();

// RAII critical section.
class crit_section {
 public:
  crit_section() { crit_enter(); }
  ~crit_section() { crit_exit(); }
  crit_section(const crit_section&) = delete;
  crit_section& operator=(const crit_section&) = delete;
};

// Makes td runnable. Local threads are queued at once; a thread owned by another worker is
// queued by a message to its owner (asynchronous; the caller does not wait). Idempotent.
// Requires: td not exited; the caller holds a reference to td or otherwise knows it is alive.
// From outside the runtime, schedule and deschedule keep working through shutdown's grace
// period and are no-ops once it has ended (as wakeup, lwkt/sleep.h).
// Runs on: any OS thread; need not be in a critical section.
void schedule(thread* td);
// Removes td from its run queue; it keeps running until it switches if it is curthread.
// A thread owned by another worker is descheduled by a message to its owner (asynchronous;
// the message follows a thread that migrates and ignores one that exited).
// Runs on: any OS thread; need not be in a critical section.
void deschedule(thread* td);
void schedule_self();
void deschedule_self();

// Switches to the best runnable thread (possibly the caller itself, if it is still queued
// and the best). A caller that descheduled itself blocks here until scheduled again.
// Runs on: an lwkt thread, usually inside a critical section; never in a message handler.
void lwkt_switch();

// Drains deferred work; if a reschedule is requested (a better thread is runnable, or the
// caller used its round-robin slice and an equal-priority thread waits), switches.
// Runs on: an lwkt thread.
void yield();
// Like yield(), but without equal-priority round robin: switches only if a strictly
// better thread heads the run queue.
void yield_quick();

// Changes td's priority, re-queueing it if it is queued. Never switches by itself.
// Requires: td owned by the calling worker. Runs on: the owning worker.
void setpri(thread* td, int pri);
void setpri_self(int pri);

// FreeBSD's should_yield / maybe_yield / kern_yield: should_yield() is true once the calling
// thread has run a whole round-robin slice (Runtime::Options::rr_slice) since it was
// switched in; maybe_yield() then yields; kern_yield(pri) sets the priority (unless
// kPriUser) and goes behind every thread of its priority. Runs on: an lwkt thread.
inline constexpr int kPriUser = -1;
bool should_yield();
void maybe_yield();
void kern_yield(int pri);

// Migration (DragonFly lwkt_setcpu_self / lwkt_migratecpu): the calling thread moves itself
// to worker `cpu` and returns running there. Its identity, stack, priority and references
// survive. Caution: code must not keep pointers to the old worker's per-worker data, nor
// thread_local addresses, across this call (or any call that may switch): the thread now
// runs on another OS thread. Use per_worker<T>::local() (lwkt/per_worker.h), which re-reads.
// Requires: not in a critical section; not mastering a cpusync; owning no io::listener or
// io::pooled_receiver (io/io.h; aborts naming the thread). Runs on: an lwkt thread.
void setcpu_self(int cpu);
void migratecpu(int cpu);
// Pull migration: the owner gives away a thread that is not running (nor exiting,
// migrating, parked under a preemption chain, or waiting for an I/O operation of io/io.h
// or owning an io::listener / io::pooled_receiver: aborts otherwise, naming the thread);
// the destination worker
// then acquires it (and schedules it as it likes). A thread on the run queue is taken off it
// and stays runnable: acquire() queues it. (A thread its caller knows to be blocked may
// still be queued: schedules from other workers are asynchronous, and a blocked thread may
// be scheduled spuriously at any time, as DragonFly allows; its wait re-checks and blocks
// again.) Between the two the thread has no owner: deschedule() and interrupt()'s wake are
// no-ops for it (it is on no queue; the interrupt request itself stays pending), and a
// schedule() is remembered and honoured by acquire(), which then queues the thread: no
// wakeup sent to a thread in transit is lost.
// Runs on: giveaway: td's owner; acquire: the destination worker.
void giveaway(thread* td);
void acquire(thread* td);

}  // namespace lwkt

#include "lwkt/internal/sched_inline.h"  // IWYU pragma: export
