// tsleep / wakeup: no lost wakeup with the interlock across workers, wakeup_one, timeouts
// (EWOULDBLOCK, never early), interruption (EINTR), wakeup/timeout races, misuse.
#include "lwkt/sleep.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "lwkt/sched.h"
#include "lwkt/testing.h"

namespace lwkt {
namespace {

using testing::run_on;
using testing::scaled;
using testing::test_runtime;
using testing::wait_until_asleep;

// Ping-pong through two channels between threads on different workers, with the lock-free
// interlock pattern (interlock, re-check, sleep). A lost wakeup would hang the test.
TEST(Sleep, NoLostWakeupPingPongAcrossFourWorkers) {
  auto rt = test_runtime(4);
  const int rounds = scaled(500000);  // 2 pairs: 2 million sleep/wakeup pairs in all
  struct pair_state {
    std::atomic<int> turn{0};
  };
  std::vector<pair_state> pairs(2);
  std::vector<thread_ref> tds;
  for (int p = 0; p < 2; ++p) {
    for (int side = 0; side < 2; ++side) {
      thread_options o;
      o.worker = p * 2 + side;  // pair 0 on workers 0/1, pair 1 on workers 2/3
      auto td = rt->spawn(
          [&pairs, p, side, rounds] {
            auto& st = pairs[static_cast<std::size_t>(p)];
            for (int i = 0; i < rounds; ++i) {
              while (st.turn.load() != side) {
                tsleep_interlock(&st.turn);
                if (st.turn.load() == side) break;
                tsleep(&st.turn, PINTERLOCKED, "pingpong");
              }
              st.turn.store(1 - side);
              wakeup(&st.turn);
            }
          },
          o);
      ASSERT_TRUE(td.ok());
      tds.push_back(std::move(*td));
    }
  }
  for (auto& t : tds) t.join();
}

// Many sleepers on one channel across workers; wakeup() wakes all.
TEST(Sleep, WakeupWakesEverySleeperOnEveryWorker) {
  auto rt = test_runtime(4);
  std::atomic<int> ready{0}, woke{0};
  std::atomic<bool> go{false};
  std::vector<thread_ref> tds;
  for (int i = 0; i < 12; ++i) {
    thread_options o;
    o.worker = i % 4;
    tds.push_back(*rt->spawn(
        [&] {
          tsleep_interlock(&go);
          ready.fetch_add(1);
          while (!go.load()) {
            tsleep(&go, PINTERLOCKED, "all");
            tsleep_interlock(&go);
          }
          woke.fetch_add(1);
        },
        o));
  }
  run_on(*rt, [&] {
    while (ready.load() < 12) yield();
    go = true;
    wakeup(&go);
  });
  for (auto& t : tds) t.join();
  EXPECT_EQ(woke.load(), 12);
}

// wakeup_one with N sleepers on one worker wakes exactly one of them.
TEST(Sleep, WakeupOneWakesExactlyOne) {
  auto rt = test_runtime(2);
  constexpr int kN = 5;
  int chan = 0;
  std::atomic<int> woken{0};
  std::vector<thread_ref> tds;
  for (int i = 0; i < kN; ++i) {
    thread_options o;
    o.worker = 1;
    o.name = "one-sleeper";
    tds.push_back(*rt->spawn(
        [&] {
          tsleep(&chan, 0, "one");
          woken.fetch_add(1);
        },
        o));
  }
  run_on(*rt, [&] {
    wait_until_asleep(*rt, "one-sleeper", kN);
    wakeup_one(&chan);
    while (woken.load() < 1) lwkt_pause(absl::Milliseconds(1));
    lwkt_pause(absl::Milliseconds(50));  // time for a wrongly woken second one to show
    EXPECT_EQ(woken.load(), 1);
    wakeup(&chan);
  });
  for (auto& t : tds) t.join();
  EXPECT_EQ(woken.load(), kN);
}

TEST(Sleep, TimeoutReturnsEwouldblockAndNeverEarly) {
  auto rt = test_runtime(2);
  run_on(*rt, [] {
    int chan = 0;
    for (int ms : {1, 5, 20}) {
      const auto t0 = std::chrono::steady_clock::now();
      const int r = tsleep(&chan, 0, "timeout", absl::Milliseconds(ms));
      const auto elapsed = std::chrono::steady_clock::now() - t0;
      EXPECT_EQ(r, EWOULDBLOCK);
      EXPECT_GE(elapsed, std::chrono::milliseconds(ms)) << "fired early";
    }
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(lwkt_pause(absl::Milliseconds(10)), EWOULDBLOCK);
    EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(10));
  });
}

TEST(Sleep, InterruptEndsPcatchSleepWithEintr) {
  auto rt = test_runtime(2);
  std::atomic<int> result{-1};
  std::atomic<bool> sleeping{false};
  int chan = 0;
  thread_options o;
  o.worker = 1;
  auto sleeper = rt->spawn(
      [&] {
        tsleep_interlock(&chan);
        sleeping = true;
        result = tsleep(&chan, PCATCH | PINTERLOCKED, "intr");
      },
      o);
  ASSERT_TRUE(sleeper.ok());
  thread* s = sleeper->get();
  run_on(*rt, [&] {
    while (!sleeping.load()) yield();
    interrupt(s);  // remote: a message to worker 1
  });
  sleeper->join();
  EXPECT_EQ(result.load(), EINTR);
  // A pending interrupt ends the next PCATCH sleep at once; without PCATCH it is ignored.
  run_on(*rt, [] {
    interrupt(curthread());
    int c = 0;
    EXPECT_EQ(tsleep(&c, 0, "no-catch", absl::Milliseconds(1)), EWOULDBLOCK);
    EXPECT_EQ(tsleep(&c, PCATCH, "catch"), EINTR);
    interrupt(curthread(), /*restart=*/true);
    EXPECT_EQ(tsleep(&c, PCATCH, "restart"), ERESTART);
  });
}

// Wakeups racing timeouts: each sleep returns 0 or EWOULDBLOCK, and EWOULDBLOCK only after
// the full timeout.
TEST(Sleep, WakeupAndTimeoutRacesAreConsistent) {
  auto rt = test_runtime(2);
  std::atomic<int> flag{0};
  std::atomic<bool> stop{false};
  thread_options o1;
  o1.worker = 1;
  auto waker = rt->spawn(
      [&] {
        while (!stop.load()) {
          flag.store(1);
          wakeup(&flag);
          yield();
        }
      },
      o1);
  int woken = 0, timed_out = 0;
  run_on(*rt, [&] {
    for (int i = 0; i < scaled(2000); ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      const int r = tsleep(&flag, 0, "race", absl::Microseconds(50));
      const auto elapsed = std::chrono::steady_clock::now() - t0;
      ASSERT_TRUE(r == 0 || r == EWOULDBLOCK) << r;
      if (r == EWOULDBLOCK) {
        ++timed_out;
        ASSERT_GE(elapsed, std::chrono::microseconds(50));
      } else {
        ++woken;
      }
    }
    stop = true;
  });
  waker->join();
  EXPECT_EQ(woken + timed_out, scaled(2000));
}

// A waker that is not a worker (main) uses Runtime::wakeup.
TEST(Sleep, RuntimeWakeupFromOutside) {
  auto rt = test_runtime(2);
  std::atomic<bool> go{false}, armed{false};
  auto td = rt->spawn([&] {
    tsleep_interlock(&go);
    armed = true;
    while (!go.load()) {
      tsleep(&go, PINTERLOCKED, "outside");
      tsleep_interlock(&go);
    }
  });
  while (!armed.load()) {}
  go = true;
  rt->wakeup(&go);
  td->join();
}

// Regression (review): wakeup and wakeup_one on a worker reached only that worker's own
// runtime, so a sleeper of another runtime in the same process slept on forever.
TEST(Sleep, WakeupOnAWorkerReachesSleepersOfAnotherRuntime) {
  auto a = test_runtime(1);
  auto b = test_runtime(1);
  for (bool one : {false, true}) {
    std::atomic<bool> go{false};
    std::atomic<int> woke{0};
    auto sleeper = a->spawn([&] {
      while (!go.load()) (void)tsleep(&go, 0, "other-runtime");  // no timeout
      woke = 1;
    }, {.name = "sleeper"});
    ASSERT_TRUE(sleeper.ok());
    run_on(*a, [&] { wait_until_asleep(*a, "sleeper"); });
    run_on(*b, [&] {
      go = true;
      one ? wakeup_one(&go) : wakeup(&go);
    });
    const absl::Time give_up = absl::Now() + absl::Seconds(10);
    while (woke.load() == 0 && absl::Now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_EQ(woke.load(), 1) << (one ? "wakeup_one" : "wakeup") << " did not reach runtime a";
    sleeper->join();
  }
}

// Wakeups from outside post only to the workers whose sleep mask has a sleeper in the
// ident's hash slot. Sleepers on every worker, each round interlocked (join the queue, then
// look): a worker skipped wrongly would lose its sleeper's wakeup and the round would stall.
TEST(Sleep, WakeupsFromOutsideReachSleepersOnEveryWorkerWithNoneLost) {
  auto rt = test_runtime(4);
  const int rounds = scaled(2000);
  std::atomic<int> gen{0}, acks{0};
  std::vector<thread_ref> tds;
  for (int i = 0; i < 4; ++i) {
    tds.push_back(*rt->spawn([&] {
      for (int seen = 0; seen < rounds;) {
        tsleep_interlock(&gen);
        if (gen.load() == seen) {
          (void)tsleep(&gen, PINTERLOCKED, "outside-round");
          continue;
        }
        ++seen;
        acks.fetch_add(1);
      }
    }, {.name = "round-sleeper", .worker = i}));
  }
  for (int r = 1; r <= rounds; ++r) {
    gen.store(r);
    r % 2 ? rt->wakeup(&gen) : lwkt::wakeup(&gen);
    const absl::Time give_up = absl::Now() + absl::Seconds(10);
    while (acks.load() < 4 * r && absl::Now() < give_up) std::this_thread::yield();
    ASSERT_EQ(acks.load(), 4 * r) << "round " << r << ": a sleeper was not woken";
  }
  for (auto& t : tds) t.join();
  // With no sleeper on an ident's hash slot, a wakeup from outside posts nothing.
  static char unused;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the rounds' last messages
  const std::uint64_t messages = rt->stats().messages;
  for (int i = 0; i < 100; ++i) {
    rt->wakeup(&unused);
    lwkt::wakeup_one(&unused);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(rt->stats().messages, messages);
}

// Runtime::wakeup names one runtime: called on one of that runtime's own workers it wakes
// its sleepers and no other runtime's (lwkt::wakeup there would reach both).
TEST(Sleep, RuntimeWakeupOnItsOwnWorkerWakesThatRuntimeOnly) {
  auto a = test_runtime(1);
  auto b = test_runtime(1);
  static int chan;
  for (bool one : {false, true}) {
    std::atomic<int> in_a{-1}, in_b{-1};
    auto sa = a->spawn([&] { in_a = tsleep(&chan, 0, "in-a"); }, {.name = "sleeper-a"});
    auto sb = b->spawn([&] { in_b = tsleep(&chan, 0, "in-b", absl::Seconds(10)); },
                       {.name = "sleeper-b"});
    ASSERT_TRUE(sa.ok() && sb.ok());
    run_on(*a, [&] { wait_until_asleep(*a, "sleeper-a"); });
    run_on(*b, [&] { wait_until_asleep(*b, "sleeper-b"); });
    run_on(*b, [&] { one ? b->wakeup_one(&chan) : b->wakeup(&chan); });
    sb->join();
    EXPECT_EQ(in_b.load(), 0) << (one ? "wakeup_one" : "wakeup") << " missed its own runtime";
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // time for a stray wakeup
    EXPECT_EQ(in_a.load(), -1) << (one ? "wakeup_one" : "wakeup") << " reached another runtime";
    a->wakeup(&chan);
    sa->join();
    EXPECT_EQ(in_a.load(), 0);
  }
}

TEST(SleepDeathTest, SleepInsideCriticalSectionAborts) {
  testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        auto rt = test_runtime(1);
        run_on(*rt, [] {
          int c;
          crit_enter();
          tsleep(&c, 0, "bad");
        });
      },
      "td \"test-main\" on worker 0: tsleep\\('bad'\\) inside a critical section");
}

TEST(SleepDeathTest, SleepFromNonWorkerAborts) {
  testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        int c;
        tsleep(&c, 0, "outside");
      },
      "tsleep from an OS thread that is not a worker");
}

}  // namespace
}  // namespace lwkt
