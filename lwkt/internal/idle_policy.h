// idle_policy.h: the adaptive idle spin (Runtime::Options::idle_cpu_budget), owner only.
//
// An idle worker polls for a while before it parks its OS thread: polling answers a message
// in well under a microsecond but burns the CPU; parking costs nothing while parked but a
// message then waits for the kernel to wake the worker (tens of microseconds on a VM), and
// each park and wake costs CPU too. The fixed policy polls Options::idle_spin every time.
// The adaptive one learns how long this worker's idle gaps are (from becoming idle to the
// next piece of work) and, of the spin windows W up to idle_spin, picks the one that
// catches the most gaps while the CPU it spends spinning stays within the budget:
//
//   spin(W) = r * E[min(gap, W)]   <=   budget
//
// where r is the rate at which the worker becomes idle (per tick) and the expectation is
// over a histogram of recent gaps (log2 classes, halved at every re-evaluation so it follows
// the load). The window is re-evaluated every kEvery gaps.
//
// What it cannot do: with gaps that are random (Poisson arrivals), catching half of them
// means spinning through the median gap after every message, so a p50 near polling's costs
// about half a CPU or more at any rate; a budget buys the short gaps (a better low
// percentile), not the median. (An earlier version also credited spinning with the park
// and wake it saves, 4 us of CPU each: at high rates it then spun almost always, because a
// parked worker drains many messages per wake and saves far fewer parks than it assumed.)
#pragma once

#include <cstdint>

namespace lwkt::internal {

class idle_estimator {
 public:
  static constexpr int kBuckets = 28;
  static constexpr int kShift = 6;               // class k: [2^(k+6), 2^(k+7)) ticks
  static constexpr std::uint32_t kEvery = 64;    // gaps between re-evaluations
  static constexpr std::int64_t kFirstWindowNs = 5000;  // until it has seen kEvery gaps

  // cap: Options::idle_spin in ticks; budget: Options::idle_cpu_budget (0 < budget <= 1).
  void init(std::uint64_t cap_ticks, double budget, double ticks_per_ns, std::uint64_t now);
  // The spin window to use now, in ticks.
  std::uint64_t window() const { return _window; }
  // One idle gap ended at `now` after `gap` ticks (work arrived, or the worker woke).
  void note(std::uint64_t gap, std::uint64_t now);
  // Exposed for the test: the window the histogram and rate (gaps per tick) call for.
  std::uint64_t choose(double rate_per_tick) const;

 private:
  double _hist[kBuckets] = {};
  std::uint64_t _cap = 0;
  double _budget = 0;
  std::uint64_t _window = 0;
  std::uint64_t _epoch_start = 0;
  std::uint32_t _epoch_gaps = 0;
};

}  // namespace lwkt::internal
