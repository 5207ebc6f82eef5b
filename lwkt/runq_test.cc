// The run queue alone: ordering, FIFO among equals, rotation, and 100,000 entries.
#include "lwkt/internal/runq.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <tuple>
#include <vector>

namespace lwkt::internal {
namespace {

std::vector<thread*> drain(runq& q) {
  std::vector<thread*> out;
  while (thread* td = q.head()) {
    q.remove(td);
    EXPECT_TRUE(q.check());
    out.push_back(td);
  }
  return out;
}

TEST(Runq, OrdersByPriThenUpriThenArrival) {
  std::vector<thread> tds(200);
  std::mt19937 rng(42);
  runq q;
  for (std::size_t i = 0; i < tds.size(); ++i) {
    tds[i].td_pri = static_cast<int>(rng() % kNumPriorities);
    tds[i].td_upri = static_cast<int>(rng() % 4);
    q.insert(&tds[i]);
  }
  EXPECT_EQ(q.count(), 200u);
  EXPECT_TRUE(q.check());
  // Expected: stable sort by (pri desc, upri desc) of arrival order.
  std::vector<thread*> expect;
  for (auto& t : tds) expect.push_back(&t);
  std::stable_sort(expect.begin(), expect.end(), [](thread* a, thread* b) {
    return std::tie(a->td_pri, a->td_upri) > std::tie(b->td_pri, b->td_upri);
  });
  // next() walks the same order without removing.
  std::vector<thread*> walked;
  for (thread* t = q.head(); t; t = q.next(t)) walked.push_back(t);
  EXPECT_EQ(walked, expect);
  EXPECT_EQ(drain(q), expect);
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.head(), nullptr);
}

// Random inserts and removals (heads, tails, middles) with many distinct td_upri keep
// every invariant, checked after each operation against a reference model.
TEST(Runq, RandomChurnKeepsInvariants) {
  std::vector<thread> tds(300);
  std::vector<bool> queued(tds.size(), false);
  std::mt19937 rng(3);
  runq q;
  for (int step = 0; step < 20000; ++step) {
    std::size_t i = rng() % tds.size();
    if (queued[i]) {
      q.remove(&tds[i]);
    } else {
      tds[i].td_pri = static_cast<int>(rng() % 4);
      tds[i].td_upri = static_cast<int>(rng() % 7) - 3;
      q.insert(&tds[i]);
    }
    queued[i] = !queued[i];
    ASSERT_TRUE(q.check()) << "step " << step;
  }
}

TEST(Runq, InsertReportsNewHead) {
  thread a, b, c;
  a.td_pri = 10;
  b.td_pri = 5;
  c.td_pri = 20;
  runq q;
  EXPECT_TRUE(q.insert(&a));
  EXPECT_FALSE(q.insert(&b));
  EXPECT_TRUE(q.insert(&c));
  EXPECT_EQ(q.head(), &c);
}

TEST(Runq, RotateMovesBehindEqualsOnly) {
  std::vector<thread> tds(4);
  tds[0].td_pri = tds[1].td_pri = tds[2].td_pri = 12;
  tds[3].td_pri = 12;
  tds[3].td_upri = -1;  // worse tie-break: stays last
  runq q;
  for (auto& t : tds) q.insert(&t);
  q.rotate(&tds[0]);
  EXPECT_EQ(drain(q), (std::vector<thread*>{&tds[1], &tds[2], &tds[0], &tds[3]}));
}

// Middle removal keeps order and the bitmap right.
TEST(Runq, RemoveFromMiddleAndLastOfLevel) {
  std::vector<thread> tds(6);
  for (int i = 0; i < 6; ++i) tds[i].td_pri = i < 3 ? 7 : 3;
  runq q;
  for (auto& t : tds) q.insert(&t);
  q.remove(&tds[1]);
  q.remove(&tds[3]);
  q.remove(&tds[4]);
  q.remove(&tds[5]);
  EXPECT_EQ(drain(q), (std::vector<thread*>{&tds[0], &tds[2]}));
}

// 100,000 queued threads: every operation keeps the order (the cost is measured by the
// benchmark; here only correctness at that size).
TEST(Runq, HundredThousandEntries) {
  constexpr int kN = 100000;
  std::vector<thread> tds(kN);
  std::mt19937 rng(7);
  runq q;
  for (int i = 0; i < kN; ++i) {
    tds[i].td_pri = 1 + static_cast<int>(rng() % 30);
    tds[i].td_upri = static_cast<int>(rng() % 3);
    q.insert(&tds[i]);
  }
  // Churn: remove and re-insert a third.
  for (int i = 0; i < kN; i += 3) {
    q.remove(&tds[i]);
    q.insert(&tds[i]);
  }
  EXPECT_EQ(q.count(), static_cast<unsigned>(kN));
  EXPECT_TRUE(q.check());
  std::vector<thread*> out;
  while (thread* td = q.head()) {
    q.remove(td);
    out.push_back(td);
  }
  EXPECT_TRUE(q.check());
  ASSERT_EQ(out.size(), static_cast<std::size_t>(kN));
  for (std::size_t i = 1; i < out.size(); ++i) {
    ASSERT_GE(std::tie(out[i - 1]->td_pri, out[i - 1]->td_upri),
              std::tie(out[i]->td_pri, out[i]->td_upri))
        << "at " << i;
  }
}

}  // namespace
}  // namespace lwkt::internal
