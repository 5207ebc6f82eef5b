// sched_inline.h: inline fast paths of sched.h (critical sections, curthread).
#pragma once

#include "lwkt/internal/assert.h"
#include "lwkt/internal/globaldata.h"

namespace lwkt {
namespace internal {
// Runs deferred work (messages) for gd; called at the 1 -> 0 transition of crit_exit.
void splz(globaldata* gd);
// crit_exit's slow path: deferred work and refused preemptions (sched.cc).
void crit_exit_work(globaldata* gd);
// Aborts: "<call> called from an OS thread that is not an lwkt thread" (sched.cc).
[[noreturn]] ABSL_ATTRIBUTE_COLD void not_lwkt_thread(const char* call);
// The calling lwkt thread's worker; aborts naming `call` when the caller is not an lwkt
// thread (an OS thread outside the runtime). One predictable branch.
inline globaldata* lwkt_caller(const char* call) {
  globaldata* gd = mycpu();
  if (__builtin_expect(gd == nullptr, 0)) not_lwkt_thread(call);
  return gd;
}
}  // namespace internal

inline thread* curthread() {
  globaldata* gd = internal::mycpu();
  return gd ? gd->gd_curthread : nullptr;
}

inline int mycpuid() {
  globaldata* gd = internal::mycpu();
  return gd ? gd->gd_cpuid : -1;
}

inline void crit_enter() {
  globaldata* gd = internal::mycpu();
  LWKT_ASSERT(gd != nullptr, nullptr, "crit_enter called from an OS thread that is not a worker");
  ++gd->gd_curthread->td_critcount;
}

inline void crit_exit() {
  globaldata* gd = internal::mycpu();
  LWKT_ASSERT(gd != nullptr, nullptr, "crit_exit called from an OS thread that is not a worker");
  thread* td = gd->gd_curthread;
  LWKT_ASSERT(td->td_critcount > 0, td, "crit_exit without crit_enter (td_critcount=%d)",
              td->td_critcount);
  if (--td->td_critcount == 0 &&
      ((gd->gd_reqflags.load(std::memory_order_relaxed) & RQF_IDLECHECK_MASK) ||
       (gd->gd_ast & RQF_AST_PREEMPT)) &&
      gd->gd_intr_nesting_level == 0) {
    internal::crit_exit_work(gd);
  }
}

}  // namespace lwkt
