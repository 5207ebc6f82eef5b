// remote_call.h
//
// The seam through which layers above the scheduler (message ports, //msgport) reach the
// worker that owns a thread, from any OS thread. It is send_ipiq3 with the worker named by
// its globaldata (a thread's td_gd) rather than by an index of the caller's runtime, so
// that OS threads outside the runtime may use it too. //lwkt never includes those layers.
#pragma once

#include "lwkt/internal/globaldata.h"
#include "lwkt/ipi.h"

namespace lwkt::internal {

// What an entry point from outside the runtime does, which decides how long shutdown()
// accepts it:
//   kNewWork       starts something (spawn, snapshot, trace, a send to a thread port):
//                  refused once shutdown has begun.
//   kExistingWork  lets a thread that already exists go on (wakeup, interrupt, schedule,
//                  deschedule, a message's reply): accepted through the grace period, so a
//                  thread waiting for it can finish, and refused once the grace period ends
//                  (`sealed`), before the workers stop and shutdown checks for quiescence.
// Kept apart (two flags, two counts) so that a stream of wakeups from outside never holds
// back the wait for kNewWork calls in progress when shutdown begins.
enum class api_class { kNewWork, kExistingWork };

// A scope in which the caller may post messages to rs's workers. Inside rs (a worker of
// rs) it is always open: messages travel the per-pair rings (nothing allocated; in send
// order with the caller's other messages to that worker) or run at once on the caller's
// own worker. From any other OS thread it holds off shutdown's quiescence check while open
// (an api_guard), and is refused (ok() false) once shutdown has closed the call's class
// (api_class: kNewWork once shutdown has begun, kExistingWork once its grace period has
// ended): a post after that check would never run. A caller that must do several steps
// that belong together (take a sequence number, then post) does them all inside one scope,
// so that a refusal comes before the first step and never between two.
class remote_call_scope {
 public:
  explicit remote_call_scope(runtime_state* rs, api_class c = api_class::kNewWork);
  ~remote_call_scope();
  remote_call_scope(const remote_call_scope&) = delete;
  remote_call_scope& operator=(const remote_call_scope&) = delete;

  bool ok() const { return _ok; }
  // Runs func(arg1, arg2, gd) on worker gd (of rs), as a message handler: inside a critical
  // section, nesting raised; it must not block or switch. Requires: ok().
  // Runs on: any OS thread.
  void call(globaldata* gd, ipifunc3 func, void* arg1, int arg2);

 private:
  runtime_state* _rs;
  api_class _class;
  bool _counted = false;
  bool _ok = false;
};

// Like lwkt::schedule(), for wakeups that may race with td's exit (the caller holds td):
// a wakeup that finds td exited is dropped instead of diagnosed. For layers whose waiter
// may be gone by the time they wake it (a message port's owner). Runs on: any OS thread.
void wakeup_thread(thread* td);

}  // namespace lwkt::internal
