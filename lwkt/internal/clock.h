// clock.h
//
// cheap_clock(): a monotonic tick counter that costs a few nanoseconds (x86 TSC, AArch64
// CNTVCT), used by the scheduler clock at switch points. ticks_per_us() is calibrated once
// per process against CLOCK_MONOTONIC.
#pragma once

#include <cstdint>
#include <limits>

#include "absl/time/time.h"

namespace lwkt::internal {

inline std::uint64_t cheap_clock() {
#if defined(__x86_64__)
  std::uint32_t lo, hi;
  asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return (static_cast<std::uint64_t>(hi) << 32) | lo;
#else
  std::uint64_t v;
  asm volatile("mrs %0, cntvct_el0" : "=r"(v));
  return v;
#endif
}

// Ticks of cheap_clock() per microsecond (calibrated on first use; thread-safe).
double ticks_per_us();

inline std::uint64_t ns_to_ticks(std::int64_t ns) {
  return static_cast<std::uint64_t>(static_cast<double>(ns) * ticks_per_us() / 1000.0);
}

inline constexpr std::uint64_t kNeverTicks = std::numeric_limits<std::uint64_t>::max();

// A duration in cheap-clock ticks, saturating: <= 0 gives 0, an infinite or huge duration
// gives kNeverTicks (callers treat it as "never"), so no conversion overflows (UB).
inline std::uint64_t duration_to_ticks(absl::Duration d) {
  if (d <= absl::ZeroDuration()) return 0;
  if (d == absl::InfiniteDuration()) return kNeverTicks;
  const double t = absl::ToDoubleNanoseconds(d) * ticks_per_us() / 1000.0;
  return t >= 1.8e19 ? kNeverTicks : static_cast<std::uint64_t>(t);
}
// now + ticks, saturating at kNeverTicks.
inline std::uint64_t deadline_after(std::uint64_t now, std::uint64_t ticks) {
  return ticks >= kNeverTicks - now ? kNeverTicks : now + ticks;
}

inline void cpu_pause() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#else
  asm volatile("yield");
#endif
}

}  // namespace lwkt::internal
