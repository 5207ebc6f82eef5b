// cpumask.h
//
// The runtime's worker limit and the worker set type (DragonFly cpumask_t), for IPIs and
// cpusync (lwkt/ipi.h) and for user code that names sets of workers.
//
//   kMaxWorkers   the most workers a Runtime may have (the IPI rings are one per ordered
//                 pair: N^2 x ~8.6 KiB)
//   cpumask       a set of worker indexes (bit i: worker i)
#pragma once

#include <bitset>

namespace lwkt {

inline constexpr int kMaxWorkers = 256;
// 64-bit words in a worker mask (the runtime's atomic masks, cpusync acknowledgements).
inline constexpr int kMaskWords = kMaxWorkers / 64;

using cpumask = std::bitset<kMaxWorkers>;

}  // namespace lwkt
