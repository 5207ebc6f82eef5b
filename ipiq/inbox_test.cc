// Tests for ipiq::inbox and ipiq::parker: FIFO per producer, nothing lost or duplicated
// under concurrent producers, and a consumer that parks is always woken.
#include "ipiq/inbox.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "ipiq/parker.h"

namespace {

struct test_msg : ipiq::inbox_msg {
  int producer = 0;
  int seq = 0;
};

TEST(Inbox, SingleProducerIsFifo) {
  ipiq::inbox box;
  std::vector<test_msg> msgs(100);
  for (int i = 0; i < 100; ++i) {
    msgs[i].seq = i;
    EXPECT_EQ(box.push(&msgs[i]), i == 0);
  }
  int expect = 0;
  for (auto* m = box.take_all(); m; m = m->im_next) {
    EXPECT_EQ(static_cast<test_msg*>(m)->seq, expect++);
  }
  EXPECT_EQ(expect, 100);
  EXPECT_TRUE(box.empty());
  EXPECT_EQ(box.take_all(), nullptr);
}

// Four producers push while a consumer drains, parking whenever it finds nothing. Every
// message arrives exactly once and each producer's messages arrive in order. If a kick were
// lost the consumer would sleep forever and the test would time out.
TEST(Inbox, ConcurrentProducersWithParkingConsumer) {
  constexpr int kProducers = 4;
  constexpr int kPerProducer = 20000;
  ipiq::inbox box;
  ipiq::parker park;
  std::vector<std::vector<test_msg>> msgs(kProducers, std::vector<test_msg>(kPerProducer));
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        msgs[p][i].producer = p;
        msgs[p][i].seq = i;
        box.push(&msgs[p][i]);
        park.kick();
      }
    });
  }
  std::vector<int> next(kProducers, 0);
  int received = 0;
  while (received < kProducers * kPerProducer) {
    ipiq::inbox_msg* m = box.take_all();
    if (!m) {
      park.prepare_park();
      if (!box.empty()) {
        park.cancel_park();
      } else {
        park.park();
      }
      continue;
    }
    for (; m; m = m->im_next) {
      auto* t = static_cast<test_msg*>(m);
      ASSERT_EQ(t->seq, next[t->producer]) << "producer " << t->producer;
      ++next[t->producer];
      ++received;
    }
  }
  for (auto& t : producers) t.join();
  EXPECT_TRUE(box.empty());
  for (int p = 0; p < kProducers; ++p) EXPECT_EQ(next[p], kPerProducer);
}

}  // namespace
