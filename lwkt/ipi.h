// ipi.h
//
// Cross-worker messages (DragonFly lwkt_ipiq.c). Every ordered pair of workers has its own
// lock-free single-producer single-consumer ring (ipiq/ring.h); a message is a function and
// its arguments, run on the target worker inside a critical section, in send order per pair.
//
//   send_ipiq / send_ipiq2 / send_ipiq3   active send (kicks a parked target); returns a
//                                         sequence number for wait_ipiq
//   send_ipiq3_passive                    queued without a kick; picked up at the target's
//                                         next natural poll
//   send_ipiq_mask                        the same message to a set of workers
//   wait_ipiq / seq_ipiq                  wait until the target has run up to a sequence
//   cpusync (simple, interlock/deinterlock, quick)   run a function on a set of workers and
//                                         wait; the interlock form holds them meanwhile
//
// Handlers run with message nesting raised: they must not block or switch, must not throw
// (an exception aborts, naming the handler), and may send messages themselves (nested
// drains deeper than 20 abort, as in DragonFly). A sender whose ring is full never deadlocks: while it waits for room
// it runs its own incoming messages from senders that are themselves blocked (DragonFly's
// rule), so two workers flooding each other both progress.
#pragma once

#include <atomic>
#include <cstdint>

#include "lwkt/cpumask.h"

namespace lwkt {

struct globaldata;  // a worker (opaque here)

using ipifunc1 = void (*)(void* arg);
using ipifunc2 = void (*)(void* arg1, int arg2);
using ipifunc3 = void (*)(void* arg1, int arg2, globaldata* gd);  // gd: the receiving worker

// Sends to worker `cpu` of the caller's runtime. Sending to the caller's own worker runs the
// function at once and returns 0. (Inside the runtime, requests from OS threads that are not
// workers, such as Runtime::spawn or lwkt::schedule from main, travel through the target's
// inbox instead; these functions name workers by index and so need the caller's runtime.)
// Runs on: a worker; need not be in a critical section.
std::uint32_t send_ipiq(int cpu, ipifunc1 func, void* arg);
std::uint32_t send_ipiq2(int cpu, ipifunc2 func, void* arg1, int arg2);
std::uint32_t send_ipiq3(int cpu, ipifunc3 func, void* arg1, int arg2);
// Passive: no kick while the target is busy (it runs the message at its next natural poll:
// a switch point or crit_exit). Falls back to an active send when the ring is a quarter
// full, or when the target is parked. Delivery bound: a parked target that races with the
// send parks at most 10 ms (kPassiveTickNs, DragonFly's tick) once it has received passive
// messages. Requires: a worker other than `cpu`. Runs on: a worker.
std::uint32_t send_ipiq3_passive(int cpu, ipifunc3 func, void* arg1, int arg2);
// Sends to every worker in `mask` (the caller's own included, run at once), starting after
// the caller so that low-numbered workers are not always first. Returns how many were sent.
int send_ipiq_mask(const cpumask& mask, ipifunc3 func, void* arg1, int arg2);
// Waits until worker `cpu` has finished running every message this worker sent it up to
// `seq`, running this worker's own incoming messages meanwhile. Runs on: a worker.
void wait_ipiq(int cpu, std::uint32_t seq);
// The sequence number of the last message this worker sent to `cpu`. Runs on: a worker.
std::uint32_t seq_ipiq(int cpu);

// cpusync (DragonFly lwkt_cpusync_*). Runs on: an lwkt thread of the runtime.
struct cpusync {
  cpumask cs_mask;                            // participants (may include the caller)
  std::atomic<std::uint64_t> cs_mack[kMaskWords] = {};  // acknowledgements, per worker
  void (*cs_func)(void* data) = nullptr;
  void* cs_data = nullptr;
  cpumask cs_others;                          // participants other than the master
};
// Runs func(data) on every worker in mask (the caller's too) and returns when all have.
void cpusync_simple(const cpumask& mask, void (*func)(void*), void* data);
// Interlock: quiesces the other participants (each spins in its message loop, still serving
// other messages, running no thread) and returns once all are held. Until the matching
// deinterlock the master must not block, yield or migrate (lwkt_switch aborts).
void cpusync_interlock(cpusync* cs);
// Releases them: each runs cs_func, the caller too if it is in the mask; returns when done.
void cpusync_deinterlock(cpusync* cs);
// No quiesce phase: each participant runs cs_func as soon as it sees the request.
void cpusync_quick(cpusync* cs);


}  // namespace lwkt
