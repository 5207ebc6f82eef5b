// Tests for ipiq::ring: a slot is ready exactly when its message is published (never on a
// stale sequence number from an earlier lap), FIFO with nothing lost between two OS
// threads across many laps, the nested drain's count (keep > 0), and xindex only from the
// outermost level.
#include "ipiq/ring.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

namespace {

struct sink {
  std::int64_t next = 0;  // receiver-owned: the sequence expected next
  std::int64_t errors = 0;
};

void on_msg(void* arg1, std::intptr_t seq, void*, void*) {
  auto* s = static_cast<sink*>(arg1);
  if (seq != s->next) ++s->errors;
  s->next = seq + 1;
}

ipiq::ipi_entry entry(sink* s, std::intptr_t seq) { return {on_msg, s, seq, nullptr}; }

TEST(Ring, ReadyOnlyOncePublishedAndNeverOnAStaleLap) {
  auto r = std::make_unique<ipiq::ring>();
  sink s;
  EXPECT_FALSE(r->ready());
  EXPECT_EQ(r->process(nullptr, 0, true), 0u);
  // Three full laps, one message at a time: after each lap every slot holds a sequence
  // number one lap old, which must not read as ready.
  for (std::intptr_t i = 0; i < 3 * ipiq::ring::kCapacity; ++i) {
    EXPECT_EQ(r->push(entry(&s, i)), static_cast<std::uint32_t>(i + 1));
    EXPECT_TRUE(r->ready());
    EXPECT_EQ(r->process(&s, 0, true), 1u);
    EXPECT_FALSE(r->ready()) << "stale slot read as ready after message " << i;
    EXPECT_EQ(r->xindex(), static_cast<std::uint32_t>(i + 1));
  }
  EXPECT_EQ(s.errors, 0);
  EXPECT_EQ(s.next, 3 * ipiq::ring::kCapacity);
}

TEST(Ring, KeepDrainsDownToTheLevelAndNestedLevelsLeaveXindex) {
  auto r = std::make_unique<ipiq::ring>();
  sink s;
  for (std::intptr_t i = 0; i < 10; ++i) r->push(entry(&s, i));
  EXPECT_EQ(r->occupancy(), 10u);
  EXPECT_EQ(r->process(&s, 4, /*outermost=*/false), 6u);  // down to 4 left
  EXPECT_EQ(r->occupancy(), 4u);
  EXPECT_EQ(r->xindex(), 0u);  // a nested level announces no completion
  EXPECT_EQ(r->process(&s, 0, /*outermost=*/true), 4u);
  EXPECT_EQ(r->xindex(), 10u);
  EXPECT_EQ(s.errors, 0);
}

// A sender and a receiver OS thread, the sender keeping the ring at most half full as lwkt's
// senders do: every message arrives once, in order, across 2,000 laps.
TEST(Ring, TwoThreadsFifoAcrossManyLaps) {
  constexpr std::int64_t kMessages = 2000 * ipiq::ring::kCapacity;
  auto r = std::make_unique<ipiq::ring>();
  sink s;
  std::atomic<bool> done{false};
  std::thread receiver([&] {
    while (!done.load(std::memory_order_acquire) || r->ready()) {
      if (r->ready()) r->process(&s, 0, true);
    }
  });
  for (std::int64_t i = 0; i < kMessages; ++i) {
    while (r->sender_occupancy(ipiq::ring::kCapacity / 2) > ipiq::ring::kCapacity / 2) {
    }
    r->push(entry(&s, i));
  }
  while (static_cast<std::int32_t>(r->xindex() - static_cast<std::uint32_t>(kMessages)) < 0) {
  }
  done.store(true, std::memory_order_release);
  receiver.join();
  EXPECT_EQ(s.errors, 0);
  EXPECT_EQ(s.next, kMessages);
}

}  // namespace
