// Migration: a thread moved 100,000 times keeps its identity, stack contents, priority and
// references, and always runs where it was sent; pull migration; misuse.
#include <gtest/gtest.h>

#include <atomic>
#include <vector>

#include "lwkt/per_worker.h"
#include "lwkt/sched.h"
#include "lwkt/testing.h"

namespace lwkt {
namespace {

using testing::run_on;
using testing::scaled;
using testing::test_runtime;

TEST(Migrate, HundredThousandHopsKeepState) {
  auto rt = test_runtime(4);
  const int hops = scaled(100000);
  per_worker<long> visits(4);
  thread_options o;
  o.pri = TDPRI_SOFT_NORM;
  o.upri = 3;
  o.name = "traveller";
  auto td = rt->spawn(
      [&visits, hops] {
        thread* self = curthread();
        char pattern[256];
        for (int i = 0; i < 256; ++i) pattern[i] = static_cast<char>(i * 7);
        auto extra = lwkt::create([] {});  // a reference held across every hop
        ASSERT_TRUE(extra.ok());
        long checksum = 0;
        for (int i = 0; i < hops; ++i) {
          const int target = (i * 3 + 1) % 4;
          setcpu_self(target);
          ASSERT_EQ(mycpuid(), target) << "hop " << i;
          ASSERT_EQ(curthread(), self);
          ASSERT_EQ(self->td_gd->gd_cpuid, target);
          ++visits.local();
          checksum += pattern[i & 255];
        }
        for (int i = 0; i < 256; ++i) ASSERT_EQ(pattern[i], static_cast<char>(i * 7));
        EXPECT_EQ(self->td_pri, TDPRI_SOFT_NORM);
        EXPECT_EQ(self->td_upri, 3);
        extra->join();
        EXPECT_TRUE(extra->exited());
        long expect = 0;
        for (int i = 0; i < hops; ++i) expect += static_cast<char>((i & 255) * 7);
        EXPECT_EQ(checksum, expect);
        EXPECT_EQ(mycpuid(), ((hops - 1) * 3 + 1) % 4);
      },
      o);
  ASSERT_TRUE(td.ok());
  td->join();
  long total = 0;
  for (int w = 0; w < 4; ++w) total += visits.at(w);
  EXPECT_EQ(total, hops);
  EXPECT_EQ(rt->stats().live_threads, 0);
}

// Several threads migrate concurrently while others create and join children everywhere.
TEST(Migrate, ConcurrentMigrationsUnderLoad) {
  auto rt = test_runtime(4);
  std::vector<thread_ref> tds;
  std::atomic<int> finished{0};
  for (int t = 0; t < 8; ++t) {
    thread_options o;
    o.worker = t % 4;
    auto td = rt->spawn(
        [&finished, t] {
          for (int i = 0; i < scaled(5000); ++i) {
            setcpu_self((i + t) % 4);
            if (i % 100 == 0) {
              auto c = lwkt::create([] { yield(); });
              c->join();
            }
          }
          finished.fetch_add(1);
        },
        o);
    ASSERT_TRUE(td.ok());
    tds.push_back(std::move(*td));
  }
  for (auto& t : tds) t.join();
  EXPECT_EQ(finished.load(), 8);
}

TEST(Migrate, GiveawayAndAcquire) {
  auto rt = test_runtime(2);
  std::atomic<int> ran_on{-1};
  run_on(*rt, [&] {
    thread_options o;
    o.nostart = true;
    auto td = lwkt::create([&] { ran_on = mycpuid(); }, o);
    ASSERT_TRUE(td.ok());
    thread* t = td->get();
    giveaway(t);
    thread_options o1;
    o1.worker = 1;
    auto taker = lwkt::create(
        [t] {
          acquire(t);
          EXPECT_EQ(t->td_gd->gd_cpuid, 1);
          schedule(t);
        },
        o1);
    taker->join();
    td->join();
  });
  EXPECT_EQ(ran_on.load(), 1);
}

TEST(MigrateDeathTest, MigrationInsideCriticalSectionAborts) {
  testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        auto rt = test_runtime(2);
        run_on(*rt, [] {
          crit_enter();
          setcpu_self(1);
        });
      },
      "td \"test-main\" on worker 0: migration inside a critical section");
}

}  // namespace
}  // namespace lwkt
