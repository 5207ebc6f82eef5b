#include "lwkt/internal/clock.h"

#include <time.h>

namespace lwkt::internal {
namespace {

std::uint64_t mono_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

double calibrate() {
#if defined(__aarch64__)
  std::uint64_t freq;
  asm volatile("mrs %0, cntfrq_el0" : "=r"(freq));
  if (freq) return static_cast<double>(freq) / 1e6;
#endif
  // Count TSC ticks across 5 ms of CLOCK_MONOTONIC.
  std::uint64_t t0 = mono_ns(), c0 = cheap_clock();
  std::uint64_t t1;
  do {
    t1 = mono_ns();
  } while (t1 - t0 < 5000000);
  std::uint64_t c1 = cheap_clock();
  return static_cast<double>(c1 - c0) * 1000.0 / static_cast<double>(t1 - t0);
}

}  // namespace

double ticks_per_us() {
  static const double v = calibrate();  // thread-safe static initialisation
  return v;
}

}  // namespace lwkt::internal
