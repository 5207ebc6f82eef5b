// Cross-package stress: threads that hold tokens migrate between workers, sleep with
// timeouts, wake each other and yield, all at once on 4 workers (2 cores). Checks that
// token exclusion holds throughout (a plain counter protected by a token stays exact and
// no two holders ever overlap), that nothing is lost (every thread finishes) and that the
// runtime ends with no live thread.
#include <gtest/gtest.h>

#include <atomic>
#include <vector>

#include "lwkt/runtime.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "lwkt/testing.h"
#include "lwkt/token.h"

namespace lwkt {
namespace {

TEST(MigrationTokensStress, ExclusionAndProgressUnderMigrationAndSleep) {
  auto rt = testing::test_runtime(4);
  lwkt_token tok("shared-state");
  long counter = 0;  // protected by tok
  std::atomic<int> inside{0}, overlaps{0}, finished{0};
  int chan = 0;
  const int iters = testing::scaled(3000);
  constexpr int kThreads = 8;
  std::vector<thread_ref> tds;
  for (int t = 0; t < kThreads; ++t) {
    thread_options o;
    o.worker = t % 4;
    tds.push_back(*rt->spawn(
        [&, t] {
          for (int i = 0; i < iters; ++i) {
            token_ref hold(&tok);
            if (inside.fetch_add(1) != 0) overlaps.fetch_add(1);
            ++counter;
            inside.fetch_sub(1);
            switch ((i + t) % 4) {
              case 0:
                setcpu_self((mycpuid() + 1) % 4);  // migrate holding the token
                break;
              case 1:
                tsleep(&chan, 0, "stress", absl::Microseconds(20));  // sleep holding it
                break;
              case 2:
                wakeup(&chan);
                break;
              default:
                yield();
            }
            if (inside.fetch_add(1) != 0) overlaps.fetch_add(1);
            ++counter;
            inside.fetch_sub(1);
          }
          finished.fetch_add(1);
        },
        o));
  }
  for (auto& td : tds) td.join();
  EXPECT_EQ(finished.load(), kThreads);
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(counter, 2L * kThreads * iters);
  EXPECT_TRUE(rt->shutdown().ok());
}

}  // namespace
}  // namespace lwkt
