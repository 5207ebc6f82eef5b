// Tests for ipiq::parker timeouts, with both sleep mechanisms: a park with a deadline sleeps
// until the deadline (never less), and a consumer that re-parks until its deadline, as the
// worker idle loop does, parks only a few times (no busy loop). Only lower bounds on time and
// counts of wakeups are asserted: nothing that depends on how fast the machine is.
#include "ipiq/parker.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace {

using std::chrono::steady_clock;

struct timespec to_timespec(steady_clock::duration d) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
  struct timespec ts;
  ts.tv_sec = static_cast<time_t>(ns / 1000000000);
  ts.tv_nsec = static_cast<long>(ns % 1000000000);
  return ts;
}

class ParkerTimeout : public ::testing::TestWithParam<ipiq::kick_mechanism> {
 protected:
  void SetUp() override { ASSERT_TRUE(p.set_mechanism(GetParam())); }

  // Parks once with `timeout`, nobody kicking; returns how long it slept.
  steady_clock::duration park_once(steady_clock::duration timeout) {
    const struct timespec ts = to_timespec(timeout);
    const auto start = steady_clock::now();
    p.prepare_park();
    p.park(&ts);
    return steady_clock::now() - start;
  }

  ipiq::parker p;
};

// A 200 us timeout was 0 ms to poll(): the park returned at once.
TEST_P(ParkerTimeout, SubMillisecondTimeoutSleepsUntilTheDeadline) {
  const auto slept = park_once(std::chrono::microseconds(200));
  EXPECT_GE(slept, std::chrono::microseconds(200));
  EXPECT_FALSE(p.parked());
  EXPECT_EQ(p.parks(), 1u);
}

// 1.5 ms was 1 ms to poll(): cut short.
TEST_P(ParkerTimeout, FractionalMillisecondTimeoutIsNotCutShort) {
  const auto slept = park_once(std::chrono::microseconds(1500));
  EXPECT_GE(slept, std::chrono::microseconds(1500));
}

// The idle loop's pattern: park until the next timer, re-park after an early return. With a
// 200 us deadline this spun on poll(..., 0) (hundreds of parks); now the first park reaches
// the deadline. A small allowance covers spurious wakeups.
TEST_P(ParkerTimeout, ReparkingUntilASubMillisecondDeadlineParksFewTimes) {
  const auto deadline = steady_clock::now() + std::chrono::microseconds(200);
  int parks = 0;
  for (auto now = steady_clock::now(); now < deadline && parks < 100000;
       now = steady_clock::now()) {
    const struct timespec ts = to_timespec(deadline - now);
    p.prepare_park();
    p.park(&ts);
    ++parks;
  }
  EXPECT_LE(parks, 3);
  EXPECT_EQ(p.parks(), static_cast<std::uint64_t>(parks));
}

// A kick still ends a timed park early (the timeout is an upper bound only when kicked).
TEST_P(ParkerTimeout, KickEndsATimedPark) {
  std::thread kicker([this] {
    while (!p.parked()) std::this_thread::yield();
    p.kick();
  });
  const struct timespec ts = to_timespec(std::chrono::seconds(60));
  p.prepare_park();
  p.park(&ts);  // returns when kicked: a lost kick would hang here for a minute
  kicker.join();
  EXPECT_FALSE(p.parked());
}

INSTANTIATE_TEST_SUITE_P(Mechanisms, ParkerTimeout,
                         ::testing::Values(ipiq::kick_mechanism::futex,
                                           ipiq::kick_mechanism::eventfd),
                         [](const ::testing::TestParamInfo<ipiq::kick_mechanism>& i) {
                           return i.param == ipiq::kick_mechanism::futex ? "futex" : "eventfd";
                         });

}  // namespace
