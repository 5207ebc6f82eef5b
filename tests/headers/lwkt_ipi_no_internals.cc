// lwkt/ipi.h exposes no internals: including it must not bring in the runtime's globaldata
// (its worker limit and mask type live in the public lwkt/cpumask.h). If it did, the
// variable below would clash with internal::mycpu() from lwkt/internal/globaldata.h and
// this file would not compile.
#include "lwkt/ipi.h"  // IWYU pragma: keep

namespace lwkt::internal {
[[maybe_unused]] inline int mycpu = 0;
static_assert(kMaxWorkers == 256 && kMaskWords == 4);
}  // namespace lwkt::internal
