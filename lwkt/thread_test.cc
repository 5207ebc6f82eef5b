// Thread lifecycle: create/exit/join in every combination, references outliving exit, the
// free-thread cache, 100,000 threads without a leak, the guard page, misuse.
#include "lwkt/thread.h"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <vector>

#include "lwkt/sched.h"
#include "lwkt/testing.h"

namespace lwkt {
namespace {

using testing::run_on;
using testing::scaled;
using testing::test_runtime;

void set_flag(void* p) { static_cast<std::atomic<int>*>(p)->store(1); }

TEST(Thread, CFormFromOutsideRuns) {
  auto rt = test_runtime(2);
  std::atomic<int> flag{0};
  thread_options o;
  o.name = "cform";
  auto td = rt->spawn(set_flag, &flag, o);
  ASSERT_TRUE(td.ok()) << td.status();
  EXPECT_STREQ(td->get()->name(), "cform");
  td->join();
  EXPECT_EQ(flag.load(), 1);
  EXPECT_TRUE(td->exited());
  EXPECT_FALSE(td->abandoned());
}

TEST(Thread, ExplicitExitSkipsTheRest) {
  auto rt = test_runtime(1);
  std::atomic<int> after{0};
  auto td = rt->spawn([&] {
    exit_self();
    after.store(1);  // never reached
  });
  ASSERT_TRUE(td.ok());
  td->join();
  EXPECT_EQ(after.load(), 0);
}

// An lwkt thread joins a child on its own worker and on another worker.
TEST(Thread, JoinFromLwktThreadLocalAndRemote) {
  auto rt = test_runtime(2);
  std::vector<int> results(2, 0);
  run_on(*rt, [&] {
    for (int w = 0; w < 2; ++w) {
      thread_options o;
      o.worker = w;
      auto td = create([&results, w] { results[w] = 10 + mycpuid(); }, o);
      ASSERT_TRUE(td.ok()) << td.status();
      td->join();
      EXPECT_EQ(td->get()->td_gd->gd_cpuid, w);
    }
  });
  EXPECT_EQ(results, (std::vector<int>{10, 11}));
}

// The object stays valid (and readable) after exit while referenced; many joiners all wake.
TEST(Thread, ReferenceOutlivesExitAndAllJoinersWake) {
  auto rt = test_runtime(2);
  std::atomic<int> go{0};
  auto target = rt->spawn([&] {
    while (go.load() == 0) yield();
  });
  ASSERT_TRUE(target.ok());
  std::vector<thread_ref> joiners;
  std::atomic<int> joined{0};
  thread* t = target->get();
  for (int i = 0; i < 6; ++i) {
    thread_options o;
    o.worker = i % 2;
    thread_ref ref(t);
    auto j = rt->spawn(
        [&joined, r = std::move(ref)]() mutable {
          r.join();
          joined.fetch_add(1);
        },
        o);
    ASSERT_TRUE(j.ok());
    joiners.push_back(std::move(*j));
  }
  go.store(1);
  for (auto& j : joiners) j.join();
  EXPECT_EQ(joined.load(), 6);
  target->join();
  EXPECT_STREQ(target->get()->name(), "lwkt");  // object still valid
  EXPECT_TRUE(target->get()->td_mpflags.load() & TDF_MP_EXITED);
}

// Steady-state create/exit reuses cached threads and stacks: no mmap after warm-up.
TEST(Thread, StackReuseFromCache) {
  Runtime::Options o;
  o.thread_cache = 8;
  o.rr_slice = absl::ZeroDuration();  // every yield runs the child
  auto rt = test_runtime(1, o);
  run_on(*rt, [&] {
    for (int i = 0; i < 4; ++i) {  // warm up
      auto td = create([] {});
      ASSERT_TRUE(td.ok());
      td->join();
    }
  });
  runtime_stats before = rt->stats();
  run_on(*rt, [&] {
    for (int i = 0; i < 1000; ++i) {
      // A detached child: its object and stack go back to the cache together.
      auto td = create([] {});
      ASSERT_TRUE(td.ok());
      td->reset();
      yield();
    }
  });
  runtime_stats after = rt->stats();
  EXPECT_EQ(after.stacks_mapped, before.stacks_mapped) << "steady state mapped new stacks";
  EXPECT_GE(after.cache_hits - before.cache_hits, 1000u);
}

// 100,000 threads created, run, exited and joined (in waves, across 4 workers on the
// machine's cores): all reaped, nothing alive, stacks bounded by the caches.
TEST(Thread, HundredThousandCreateExitJoinNoLeak) {
  Runtime::Options o;
  o.thread_cache = 64;
  auto rt = test_runtime(4, o);
  const int total = scaled(100000);
  constexpr int kWave = 500;
  std::atomic<long> sum{0};
  run_on(*rt, [&] {
    std::vector<thread_ref> wave;
    for (int done = 0; done < total;) {
      const int n = std::min(kWave, total - done);
      for (int i = 0; i < n; ++i) {
        thread_options to;
        to.worker = i % 4;
        auto td = create([&sum, i] { sum.fetch_add(i); }, to);
        ASSERT_TRUE(td.ok()) << td.status();
        wave.push_back(std::move(*td));
      }
      for (auto& td : wave) td.join();
      wave.clear();
      done += n;
    }
  });
  runtime_stats st = rt->stats();
  EXPECT_EQ(st.threads_created, static_cast<std::uint64_t>(total) + 1);
  EXPECT_EQ(st.threads_reaped, st.threads_created);
  EXPECT_EQ(st.live_threads, 0);
  // Live stacks never exceed one wave plus the caches.
  EXPECT_LE(st.stacks_mapped - st.stacks_unmapped, static_cast<std::uint64_t>(kWave + 4 * 64 * 2));
  EXPECT_TRUE(rt->shutdown().ok());
}

TEST(Thread, CreateRejectsBadOptions) {
  auto rt = test_runtime(2);
  auto expect_invalid = [&](thread_options o, const std::string& field) {
    auto td = rt->spawn([] {}, o);
    ASSERT_FALSE(td.ok());
    EXPECT_EQ(td.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(td.status().message().find(field), std::string::npos) << td.status();
  };
  thread_options o;
  o.pri = 0;
  expect_invalid(o, "pri 0");
  o = {};
  o.pri = 32;
  expect_invalid(o, "pri 32");
  o = {};
  o.worker = 2;
  expect_invalid(o, "worker 2");
  o = {};
  o.stack_size = 1024;
  expect_invalid(o, "stack_size 1024");
  o = {};
  o.name = std::string(40, 'x');
  expect_invalid(o, "name");
  auto empty = rt->spawn(absl::AnyInvocable<void()>{});
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  // Outside the runtime, lwkt::create says to use spawn.
  EXPECT_EQ(create([] {}).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(Thread, CustomStackSizeIsUsable) {
  auto rt = test_runtime(1);
  thread_options o;
  o.stack_size = 256 * 1024;
  auto td = rt->spawn(
      [] {
        volatile char big[128 * 1024];
        big[0] = 1;
        big[sizeof big - 1] = 2;
        EXPECT_GE(curthread()->td_stack.size, 256u * 1024);
      },
      o);
  ASSERT_TRUE(td.ok());
  td->join();
}

// ---- Death tests: the guard page and misuse.

int recurse(int depth) {
  volatile char pad[512];
  pad[0] = static_cast<char>(depth);
  return depth > 1000000 ? pad[0] : recurse(depth + 1) + pad[0];
}

TEST(ThreadDeathTest, StackOverflowHitsGuardPage) {
  testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        auto rt = test_runtime(1);
        thread_options o;
        o.name = "deep";
        o.stack_size = 32 * 1024;
        auto td = rt->spawn([] { recurse(0); }, o);
        td->join();
      },
      "stack overflow in lwkt thread 'deep' \\(worker 0, stack 32768 bytes\\)");
}

TEST(ThreadDeathTest, ScheduleOfExitedThreadAborts) {
  testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        auto rt = test_runtime(1);
        run_on(*rt, [] {
          auto td = create([] {});
          td->join();
          yield();
          schedule(td->get());
        });
      },
      "td \"lwkt\" on worker 0: lwkt::schedule of a thread that has exited");
}

TEST(ThreadDeathTest, JoinInsideCriticalSectionAborts) {
  testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        auto rt = test_runtime(1);
        run_on(*rt, [] {
          auto td = create([] {});
          crit_enter();
          td->join();
        });
      },
      "td \"test-main\" on worker 0: join inside a critical section");
}

TEST(ThreadDeathTest, UnbalancedCritExitAborts) {
  testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        auto rt = test_runtime(1);
        run_on(*rt, [] { crit_exit(); });
      },
      "td \"test-main\" on worker 0: crit_exit without crit_enter");
}

}  // namespace
}  // namespace lwkt
