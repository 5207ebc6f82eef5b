// Accounting and introspection: run time and switch counts, load averages, should_yield,
// the snapshot and its ps rendering.
#include "lwkt/snapshot.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "absl/time/clock.h"
#include "lwkt/runtime.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "lwkt/testing.h"
#include "lwkt/token.h"

namespace lwkt {
namespace {

using testing::run_on;
using testing::test_runtime;

const thread_info* find(const runtime_snapshot& s, const std::string& name) {
  for (const auto& w : s.workers) {
    for (const auto& t : w.threads) {
      if (t.name == name) return &t;
    }
  }
  return nullptr;
}

TEST(Snapshot, ShowsStatesWaitMessagesTokensAndCounts) {
  auto rt = test_runtime(2);
  lwkt_token tok("db-lock");
  std::atomic<bool> ready{false}, stop{false};
  int chan = 0;
  thread_options so;
  so.name = "sleeper";
  so.worker = 1;
  auto sleeper = rt->spawn(
      [&] {
        gettoken(&tok);
        ready = true;
        tsleep(&chan, 0, "waiting-io");  // sleeps holding (wanting) the token
        reltoken(&tok);
      },
      so);
  thread_options bo;
  bo.name = "busy";
  bo.worker = 0;
  bo.pri = TDPRI_SOFT_NORM;
  auto busy = rt->spawn(
      [&] {
        while (!stop.load()) {
          for (int i = 0; i < 1000; ++i) asm volatile("" ::: "memory");
          yield();
        }
      },
      bo);
  ASSERT_TRUE(sleeper.ok() && busy.ok());
  while (!ready.load()) {}
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  auto snap = rt->snapshot();
  ASSERT_TRUE(snap.ok()) << snap.status();
  const thread_info* s = find(*snap, "sleeper");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->state, "sleep");
  EXPECT_EQ(s->wmesg, "waiting-io");
  EXPECT_EQ(s->wchan, &chan);
  EXPECT_EQ(s->worker, 1);
  ASSERT_EQ(s->tokens.size(), 1u);
  EXPECT_EQ(s->tokens[0], "db-lock");
  EXPECT_GE(s->nvcsw, 1u);  // it blocked
  const thread_info* b = find(*snap, "busy");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->pri, TDPRI_SOFT_NORM);
  EXPECT_GT(b->runtime_ms, 5.0);  // it has been running most of the 30 ms
  EXPECT_EQ(snap->workers.size(), 2u);
  EXPECT_GT(snap->workers[1].idle_ms, 5.0);  // worker 1 was idle while sleeper slept
  std::string ps = snap->ps();
  EXPECT_NE(ps.find("sleeper"), std::string::npos) << ps;
  EXPECT_NE(ps.find("waiting-io"), std::string::npos) << ps;
  EXPECT_NE(ps.find("db-lock"), std::string::npos) << ps;
  EXPECT_NE(ps.find("worker 0:"), std::string::npos) << ps;
  stop = true;
  rt->wakeup(&chan);
  sleeper->join();
  busy->join();
}

TEST(Snapshot, InvoluntarySwitchesFromRoundRobin) {
  Runtime::Options o;
  o.rr_slice = absl::ZeroDuration();
  auto rt = test_runtime(1, o);
  std::uint64_t nivcsw = 0, nvcsw = 0;
  run_on(*rt, [&] {
    auto other = create([] {
      for (int i = 0; i < 10; ++i) yield();
    });
    for (int i = 0; i < 10; ++i) yield();  // rotated behind `other` each time
    other->join();                          // blocks: voluntary
    nivcsw = curthread()->td_nivcsw;
    nvcsw = curthread()->td_nvcsw;
  });
  EXPECT_GE(nivcsw, 10u);
  EXPECT_GE(nvcsw, 1u);
}

TEST(Snapshot, ShouldYieldAfterASliceAndKernYieldRotates) {
  Runtime::Options o;
  o.rr_slice = absl::Milliseconds(20);
  auto rt = test_runtime(1, o);
  std::string order;
  run_on(*rt, [&] {
    // should_yield() must be false while less than a slice has passed since the switch-in
    // (lwkt_pause blocks, so this thread is switched in again before it returns). The host
    // (or qemu) may stall this worker past the slice between the two calls; such a try
    // proves nothing either way and is retried, so only a real early true fails.
    bool early = true;
    for (int attempt = 0; attempt < 100 && early; ++attempt) {
      const auto before = std::chrono::steady_clock::now();
      lwkt_pause(absl::Microseconds(100));
      yield_quick();
      const bool yes = should_yield();
      if (std::chrono::steady_clock::now() - before >= std::chrono::milliseconds(20)) continue;
      EXPECT_FALSE(yes);
      early = false;
    }
    EXPECT_FALSE(early) << "never observed a call within the slice";
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(25)) {}
    EXPECT_TRUE(should_yield());
    thread_options eq;
    eq.nostart = true;
    auto other = create([&] { order += 'o'; }, eq);
    schedule(other->get());
    kern_yield(kPriUser);  // behind `other` (equal priority)
    order += 'm';
    other->join();
  });
  EXPECT_EQ(order, "om");
}

// kern_yield by a thread that has descheduled itself: it stays runnable and still goes
// behind every equal-priority thread, whatever their td_upri. Before the fix it was
// re-inserted by its better td_upri, ahead of `other`, and ran again first.
TEST(Snapshot, KernYieldOffTheRunQueueGoesBehindWorseUpriEquals) {
  auto rt = test_runtime(1);
  std::string order;
  run_on(*rt, [&] {
    auto me = create(
        [&] {
          thread_options eq;
          eq.nostart = true;
          eq.upri = 0;
          auto other = create([&] { order += 'o'; }, eq);
          ASSERT_TRUE(other.ok());
          schedule(other->get());
          deschedule_self();
          kern_yield(kPriUser);
          order += 'm';
          other->join();
        },
        {.name = "better-upri", .upri = 5});
    ASSERT_TRUE(me.ok());
    me->join();
  });
  EXPECT_EQ(order, "om");
}

// Touches about `bytes` of stack below the caller's frame (the compiler cannot drop it).
__attribute__((noinline)) void use_stack(std::size_t bytes) {
  volatile char* buf = static_cast<volatile char*>(__builtin_alloca(bytes));
  for (std::size_t i = 0; i < bytes; i += 64) buf[i] = 1;
}

// With Options::stack_watermark, snapshot() reports each thread's most stack used so far (a
// thread that touched 40 KiB of its 64 KiB shows at least that, one that touched little shows
// little), ps() prints it, and a thread that exits beyond 80% warns naming itself. Without
// the option stack_used stays 0 (stack_size is always reported).
TEST(Snapshot, StackWatermarkReportsTheMostStackUsed) {
  Runtime::Options o;
  o.stack_watermark = true;
  auto rt = test_runtime(1, o);
  std::atomic<bool> go{false};
  auto deep = rt->spawn([&] {
    use_stack(40 * 1024);
    testing::block_until(go);
  }, {.name = "deep"});
  auto shallow = rt->spawn([&] { testing::block_until(go); }, {.name = "shallow"});
  ASSERT_TRUE(deep.ok() && shallow.ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  absl::StatusOr<runtime_snapshot> snap;
  for (;;) {  // until both have blocked
    snap = rt->snapshot();
    ASSERT_TRUE(snap.ok());
    const thread_info* d = find(*snap, "deep");
    const thread_info* s = find(*snap, "shallow");
    if (d && s && d->state == "blocked" && s->state == "blocked") break;
    ASSERT_LT(absl::Now(), deadline);
    absl::SleepFor(absl::Milliseconds(1));
  }
  const thread_info* d = find(*snap, "deep");
  const thread_info* s = find(*snap, "shallow");
  EXPECT_EQ(d->stack_size, 64u * 1024);
  EXPECT_GE(d->stack_used, 40u * 1024);
  EXPECT_LT(d->stack_used, 64u * 1024);
  EXPECT_GT(s->stack_used, 0u);
  EXPECT_LT(s->stack_used, 16u * 1024);
  EXPECT_NE(snap->ps().find("/64"), std::string::npos) << snap->ps();  // used/size in KiB
  go = true;
  schedule(deep->get());
  schedule(shallow->get());
  deep->join();
  shallow->join();

  // Over 80%: a warning at exit naming the thread.
  ::testing::internal::CaptureStderr();
  auto hog = rt->spawn([] { use_stack(54 * 1024); }, {.name = "stack-hog"});
  ASSERT_TRUE(hog.ok());
  hog->join();
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("thread 'stack-hog' (worker 0) exits having used"), std::string::npos) << err;

  // Without the option: sizes only.
  auto plain = test_runtime(1);
  std::atomic<bool> go2{false};
  auto t = plain->spawn([&] { testing::block_until(go2); }, {.name = "plain"});
  ASSERT_TRUE(t.ok());
  for (;;) {
    snap = plain->snapshot();
    ASSERT_TRUE(snap.ok());
    const thread_info* p = find(*snap, "plain");
    if (p && p->state == "blocked") {
      EXPECT_EQ(p->stack_used, 0u);
      EXPECT_EQ(p->stack_size, 64u * 1024);
      break;
    }
    ASSERT_LT(absl::Now(), deadline);
    absl::SleepFor(absl::Milliseconds(1));
  }
  go2 = true;
  schedule(t->get());
  t->join();
}

// A worker kept busy has a load average that rises toward the number of runnable threads.
TEST(Snapshot, LoadAverageRisesUnderLoad) {
  auto rt = test_runtime(1);
  std::atomic<bool> stop{false};
  std::vector<thread_ref> tds;
  for (int i = 0; i < 3; ++i) {
    tds.push_back(*rt->spawn([&] {
      while (!stop.load()) yield();
    }));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(5200));  // one 5 s sample
  auto snap = rt->snapshot();
  ASSERT_TRUE(snap.ok());
  stop = true;
  for (auto& t : tds) t.join();
  EXPECT_GT(snap->workers[0].loadavg[0], 0.1);
  EXPECT_LT(snap->workers[0].loadavg[0], 3.0);
  EXPECT_GT(snap->workers[0].loadavg[0], snap->workers[0].loadavg[2]);
}

}  // namespace
}  // namespace lwkt
