// ipi_internal.h: the IPI layer's hooks for the rest of the runtime (ipi.cc).
#pragma once

#include <cstdint>

#include "lwkt/internal/globaldata.h"

namespace lwkt {
namespace internal {
// Drains gd's watched rings (and, at the outermost level, polls cpusync participation).
// Returns the number of messages run. Runs on: gd's worker inside a critical section.
std::uint64_t process_ipiq(globaldata* gd);
// True if a watched ring to gd has a message waiting (or a cpusync is pending): reads the
// next slot of each watched ring. Runs on: gd's worker.
bool ipiq_pending(const globaldata* gd);
// The receiver's half of the sticky announcement (see announce() in ipi.cc): stops
// watching the rings to gd that are empty now (their mask bits, cleared with a seq_cst
// RMW) and returns them in `cleared`. The caller then issues a seq_cst fence (its own, or
// prepare_park's) and calls rings_ready(), which looks at the cleared rings and the
// watched ones again, re-watching a cleared ring whose message arrived meanwhile.
// Runs on: gd's worker.
void unwatch_rings(globaldata* gd, std::uint64_t (&cleared)[kMaskWords]);
bool rings_ready(globaldata* gd, const std::uint64_t (&cleared)[kMaskWords]);
// The globaldata of worker `cpu` of the calling worker's runtime. Runs on: a worker.
globaldata* worker_gd(int cpu);
}  // namespace internal

}  // namespace lwkt
