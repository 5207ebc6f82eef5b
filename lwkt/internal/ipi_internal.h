// ipi_internal.h: the IPI layer's hooks for the rest of the runtime (ipi.cc).
#pragma once

#include "lwkt/internal/globaldata.h"

namespace lwkt {
namespace internal {
// Drains gd's rings (and, at the outermost level, polls cpusync participation). Runs on:
// gd's worker inside a critical section.
void process_ipiq(globaldata* gd);
// True if any ring to gd may hold a message.
bool ipiq_pending(const globaldata* gd);
// The globaldata of worker `cpu` of the calling worker's runtime. Runs on: a worker.
globaldata* worker_gd(int cpu);
}  // namespace internal

}  // namespace lwkt
