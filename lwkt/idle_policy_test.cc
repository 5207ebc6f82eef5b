// The adaptive idle spin's estimator (internal/idle_policy.h) on synthetic gap sequences:
// it catches gaps the budget pays for and not those it does not, never exceeds its cap,
// spins more with a larger budget and less at a higher rate, and follows a change of load.
#include "lwkt/internal/idle_policy.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>

namespace lwkt::internal {
namespace {

constexpr double kTicksPerNs = 1.0;  // synthetic clock: one tick per ns
constexpr std::uint64_t kCap = 1000000;  // 1 ms

// Feeds n gaps of `gap` ticks arriving `period` ticks apart; returns the window after.
std::uint64_t feed(idle_estimator& e, std::uint64_t& now, int n, std::uint64_t gap,
                   std::uint64_t period) {
  for (int i = 0; i < n; ++i) {
    now += period;
    e.note(gap, now);
  }
  return e.window();
}

TEST(IdlePolicy, ShortGapsThatTheBudgetPaysForAreSpunThrough) {
  idle_estimator e;
  std::uint64_t now = 0;
  e.init(kCap, 0.10, kTicksPerNs, now);
  // 2 us gaps, one every 100 us: spinning through all costs 2% of a CPU.
  const std::uint64_t w = feed(e, now, 640, 2000, 100000);
  EXPECT_GE(w, 2000u) << "the gaps are covered";
  EXPECT_LE(w, 8192u) << "and not much more than that is spun";
}

TEST(IdlePolicy, GapsTheBudgetCannotPayForAreNotSpun) {
  idle_estimator e;
  std::uint64_t now = 0;
  e.init(kCap, 0.10, kTicksPerNs, now);
  // 50 us gaps, one every 60 us: spinning through them would burn 83% of a CPU.
  const std::uint64_t w = feed(e, now, 640, 50000, 60000);
  EXPECT_LT(w, 50000u);
  // What it spins per second stays within the budget: every gap is longer than w, so each
  // costs w.
  EXPECT_LE(static_cast<double>(w) / 60000.0, 0.10 + 1e-9);
}

TEST(IdlePolicy, NeverPastTheCap) {
  idle_estimator e;
  std::uint64_t now = 0;
  e.init(/*cap=*/4096, 1.0, kTicksPerNs, now);
  EXPECT_LE(feed(e, now, 640, 100000, 10000000), 4096u);  // rare long gaps, huge budget
}

TEST(IdlePolicy, MoreBudgetSpinsAtLeastAsLongAndAHigherRateNoLonger) {
  std::mt19937_64 rng(7);
  std::exponential_distribution<double> gap(1.0 / 20000);  // mean 20 us
  auto run = [&](double budget, std::uint64_t period) {
    idle_estimator e;
    std::uint64_t now = 0;
    e.init(kCap, budget, kTicksPerNs, now);
    rng.seed(7);
    for (int i = 0; i < 64 * 20; ++i) {
      now += period;
      e.note(static_cast<std::uint64_t>(gap(rng)), now);
    }
    return e.window();
  };
  const std::uint64_t w5 = run(0.05, 100000), w30 = run(0.30, 100000), w100 = run(1.0, 100000);
  EXPECT_LE(w5, w30);
  EXPECT_LE(w30, w100);
  EXPECT_LT(w5, w100) << "budget changes the window";
  EXPECT_GE(run(0.30, 100000), run(0.30, 25000)) << "four times the rate: no longer a window";
}

TEST(IdlePolicy, FollowsAChangeOfLoad) {
  idle_estimator e;
  std::uint64_t now = 0;
  e.init(kCap, 0.10, kTicksPerNs, now);
  EXPECT_GE(feed(e, now, 640, 3000, 100000), 3000u);   // short gaps, cheap to spin
  EXPECT_LT(feed(e, now, 640, 80000, 90000), 80000u);  // now long and frequent: stop
  EXPECT_GE(feed(e, now, 640, 3000, 100000), 3000u);   // and back
}

}  // namespace
}  // namespace lwkt::internal
