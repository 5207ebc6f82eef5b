// IPI rings between workers: FIFO per pair with nothing lost or duplicated, full rings in
// both directions, passive sends, wait_ipiq, mask sends, cpusync, remote (de)schedule races.
#include "lwkt/internal/ipi_internal.h"
#include "lwkt/ipi.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "lwkt/testing.h"

namespace lwkt {
namespace {

using testing::scaled;
using testing::test_runtime;

constexpr int kWorkers = 4;

// Receiver-side check: per (sender, receiver) the sequence numbers arrive 0, 1, 2, ...
struct fifo_check {
  std::vector<std::vector<long>> next = std::vector<std::vector<long>>(
      kWorkers, std::vector<long>(kWorkers, 0));  // [receiver][sender], receiver-owned
  std::atomic<long> errors{0};
  std::atomic<long> received{0};
};
fifo_check* g_fifo;

void on_seq(void* arg, int sender, globaldata* gd) {
  long seq = reinterpret_cast<long>(arg);
  long& expect = g_fifo->next[gd->gd_cpuid][sender];
  if (seq != expect) g_fifo->errors.fetch_add(1);
  expect = seq + 1;
  g_fifo->received.fetch_add(1, std::memory_order_release);  // publishes next[] to main
}

// Every worker sends to every other worker at once (4 workers on the machine's cores):
// millions of messages without a loss, a duplicate or a reordering within a pair.
TEST(Ipi, FifoPerPairNoLossAcrossAllPairs) {
  auto rt = test_runtime(kWorkers);
  fifo_check check;
  g_fifo = &check;
  const long per_pair = scaled(100000);
  std::vector<thread_ref> senders;
  for (int w = 0; w < kWorkers; ++w) {
    thread_options o;
    o.worker = w;
    auto td = rt->spawn(
        [per_pair] {
          const int me = mycpuid();
          for (long i = 0; i < per_pair; ++i) {
            for (int t = 0; t < kWorkers; ++t) {
              if (t != me) send_ipiq3(t, on_seq, reinterpret_cast<void*>(i), me);
            }
            if ((i & 255) == 0) yield();
          }
        },
        o);
    ASSERT_TRUE(td.ok());
    senders.push_back(std::move(*td));
  }
  for (auto& s : senders) s.join();
  const long total = per_pair * kWorkers * (kWorkers - 1);
  // Messages are asynchronous: wait (bounded) for the last ones to run.
  for (int i = 0; i < 20000 && check.received.load() < total; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(check.received.load(), total);
  EXPECT_EQ(check.errors.load(), 0);
  for (int r = 0; r < kWorkers; ++r) {
    for (int s = 0; s < kWorkers; ++s) EXPECT_EQ(check.next[r][s], r == s ? 0 : per_pair);
  }
  EXPECT_GT(rt->stats().messages, 0u);
}

std::atomic<long> g_count;
void count_one(void*) { g_count.fetch_add(1, std::memory_order_relaxed); }

// Two workers flood each other far past the ring size from handlers-free threads that never
// yield: each sender must keep running the other's messages while it waits for room.
TEST(Ipi, FullRingsInBothDirectionsFinish) {
  auto rt = test_runtime(2);
  g_count = 0;
  const long n = scaled(200000);
  std::vector<thread_ref> tds;
  for (int w = 0; w < 2; ++w) {
    thread_options o;
    o.worker = w;
    auto td = rt->spawn(
        [n] {
          const int other = 1 - mycpuid();
          for (long i = 0; i < n; ++i) send_ipiq(other, count_one, nullptr);
        },
        o);
    ASSERT_TRUE(td.ok());
    tds.push_back(std::move(*td));
  }
  for (auto& t : tds) t.join();
  for (int i = 0; i < 20000 && g_count.load() < 2 * n; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(g_count.load(), 2 * n);
  EXPECT_GT(rt->stats().parks + 1, 0u);
}

// Two workers whose rings to each other are full both block in their sends, and each
// drains the other's ring down to the level the other advertised (DragonFly's nested
// drain). A handler run there may block on its own ring again (nested thresholds); when
// that inner wait ends it must restore the outer wait's drain level, not clear it: the
// outer send is still blocked, and its receiver relies on the level. Before the fix the
// level read 0 after the handler's sends. Both senders hold a critical section, so
// messages run only in these blocked-send drains.
struct drain_level_probe {
  std::atomic<bool> h_done{false};
  std::atomic<std::uint32_t> before{0}, after{0};
  std::atomic<std::uint64_t> handler_waits{0};  // blocked sends inside the handler
};
drain_level_probe* g_probe;

// Ring 0 -> 1, which the caller's earlier sends to worker 1 allocated.
ipiq::ring& ring_0_to_1(globaldata* gd0) { return *gd0->gd_rings[gd0->gd_cpuid * gd0->gd_ncpus + 1].load(); }

void nop(void*) {}

// Slower than a send, so that the handler's burst outruns worker 1's drain and blocks.
void slow_nop(void*) {
  const absl::Time until = absl::Now() + absl::Microseconds(5);
  while (absl::Now() < until) {}
}

void nested_blocking_handler(void*, int, globaldata* gd) {
  drain_level_probe& p = *g_probe;
  p.before = ring_0_to_1(gd).drain();  // worker 0's blocked outer send's level
  const std::uint64_t w0 = gd->gd_stats.ipi_waits.get();
  // Four rings' worth: some of these block at the nested threshold.
  for (std::uint32_t i = 0; i < 4 * ipiq::ring::kCapacity; ++i) send_ipiq(1, slow_nop, nullptr);
  p.after = ring_0_to_1(gd).drain();  // the outer send is still blocked: its level again
  p.handler_waits = gd->gd_stats.ipi_waits.get() - w0;
  p.h_done = true;
}

TEST(Ipi, NestedBlockedSendRestoresTheOuterDrainLevel) {
  auto rt = test_runtime(2);
  drain_level_probe p;
  g_probe = &p;
  std::vector<thread_ref> tds;
  for (int w = 0; w < 2; ++w) {
    thread_options o;
    o.worker = w;
    auto t = rt->spawn(
        [&p, w] {
          crit_enter();
          if (w == 1) send_ipiq3(0, nested_blocking_handler, nullptr, 0);  // first in 1 -> 0
          while (!p.h_done) send_ipiq(1 - w, nop, nullptr);  // until both sends block
          crit_exit();
        },
        o);
    ASSERT_TRUE(t.ok());
    tds.push_back(std::move(*t));
  }
  for (auto& t : tds) t.join();
  EXPECT_EQ(p.before.load(), ipiq::ring::kCapacity / 4 + 1);  // "drain me down to 1/4"
  EXPECT_EQ(p.after.load(), p.before.load());
  EXPECT_GE(p.handler_waits.load(), 1u);  // the scenario happened: the inner send blocked
}

std::atomic<int> g_order_pos;   // entries published (release) to the test's main
int g_order_slot;                 // worker 1 only
int g_order[3];
void record(void* arg, int, globaldata*) {
  g_order[g_order_slot++] = static_cast<int>(reinterpret_cast<long>(arg));
  g_order_pos.fetch_add(1, std::memory_order_release);
}

// A passive message to a parked receiver is still delivered, with no other traffic to wake
// it (bounded delivery, ipi.h), and messages keep send order. Before the bound, it waited
// for the receiver's next park deadline (the 5 s load-average tick).
TEST(Ipi, PassiveToParkedWorkerIsDeliveredWithoutOtherTraffic) {
  Runtime::Options ro;
  ro.idle_spin = absl::ZeroDuration();  // park at once
  ro.workers = 2;
  auto made = Runtime::create(ro);
  ASSERT_TRUE(made.ok());
  auto& rt = *made;
  g_order_pos = 0;
  g_order_slot = 0;
  thread_options o;
  o.worker = 0;
  auto td = rt->spawn(
      [] {
        // Wait until worker 1 sleeps in the kernel.
        globaldata* w1 = internal::worker_gd(1);
        while (!w1->gd_parker.parked()) yield();
        send_ipiq3_passive(1, record, reinterpret_cast<void*>(1), 0);
      },
      o);
  ASSERT_TRUE(td.ok());
  td->join();
  for (int i = 0; i < 2000 && g_order_pos.load() < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(g_order_pos.load(), 1) << "a passive message to a parked worker was not run";
  auto td2 = rt->spawn(
      [] {
        globaldata* w1 = internal::worker_gd(1);
        while (!w1->gd_parker.parked()) yield();
        // wait_ipiq after a passive send kicks the target instead of stalling.
        const std::uint32_t seq = send_ipiq3_passive(1, record, reinterpret_cast<void*>(2), 0);
        wait_ipiq(1, seq);
        EXPECT_EQ(g_order_pos.load(), 2);
        send_ipiq3(1, record, reinterpret_cast<void*>(3), 0);
      },
      o);
  ASSERT_TRUE(td2.ok());
  td2->join();
  for (int i = 0; i < 5000 && g_order_pos.load() < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(g_order_pos.load(), 3);
  EXPECT_EQ(g_order[0], 1);
  EXPECT_EQ(g_order[1], 2);
  EXPECT_EQ(g_order[2], 3);
}

std::atomic<int> g_slow_done;
void spin_for(int n) {
  for (int i = 0; i < n; ++i) asm volatile("" ::: "memory");
}

void slow_handler(void*) {
  spin_for(100000);
  g_slow_done.store(1, std::memory_order_relaxed);
}

TEST(Ipi, WaitIpiqReturnsAfterHandlerRan) {
  auto rt = test_runtime(2);
  testing::run_on(*rt, [] {
    for (int i = 0; i < 50; ++i) {
      g_slow_done = 0;
      std::uint32_t seq = send_ipiq(1, slow_handler, nullptr);
      wait_ipiq(1, seq);
      ASSERT_EQ(g_slow_done.load(), 1);
      EXPECT_EQ(seq_ipiq(1), seq);
    }
  });
}

void count_up(void* arg, int, globaldata*) {
  static_cast<std::atomic<int>*>(arg)->fetch_add(1, std::memory_order_relaxed);
}

// RQF_IPIQ and the mask bits are sticky (ipi.cc: announce): a worker that stays busy (its
// only thread just enters and leaves critical sections, so it never idles, never parks)
// drops the flag and stops watching its empty rings after repeated empty drains. Each
// message sent after that must still reach it through its switch points alone: the sender
// finds the flag and the bit clear and sets them again. Every round waits until the busy
// worker has dropped the flag before sending; a message lost behind a clear flag hangs the
// round (and the test times out).
TEST(Ipi, BusyWorkerThatDroppedItsRequestFlagStillSeesEveryMessage) {
  auto rt = test_runtime(2);
  std::atomic<int> got{0};
  std::atomic<bool> stop{false};
  auto busy = rt->spawn(
      [&] {
        for (unsigned k = 0; !stop.load(std::memory_order_relaxed); ++k) {
          crit_enter();
          crit_exit();  // a switch point: drains while RQF_IPIQ is set
          if (k % 4096 == 0) yield();
        }
      },
      {.name = "busy", .worker = 1});
  ASSERT_TRUE(busy.ok());
  const int rounds = scaled(300);
  int dropped = 0;
  testing::run_on(*rt, [&] {
    globaldata* gd1 = internal::worker_gd(1);
    for (int i = 0; i < rounds; ++i) {
      const absl::Time give_up = absl::Now() + absl::Seconds(1);
      while ((gd1->gd_reqflags.load(std::memory_order_relaxed) & RQF_IPIQ) &&
             absl::Now() < give_up) {
        yield();
      }
      if (!(gd1->gd_reqflags.load(std::memory_order_relaxed) & RQF_IPIQ)) ++dropped;
      send_ipiq3(1, count_up, &got, 0);
      while (got.load(std::memory_order_relaxed) != i + 1) yield();
    }
  }, 0);
  stop = true;
  busy->join();
  EXPECT_EQ(got.load(), rounds);
  EXPECT_GT(dropped, rounds / 2) << "the busy worker kept RQF_IPIQ set: the drop was not tested";
}

// Regression (the first version of the sticky announcements): the park path skipped
// rings_ready when the inbox had work, so a ring unwatched just then stayed unwatched with
// a message in it (its sender had seen the bit still set and not set it again). Worker 1
// parks at once (idle_spin 0) and gets ring messages from worker 0 while an OS thread keeps
// posting to its inbox (wakeups of a sleeper there); every ring message must be handled: a
// lost one hangs its round, and the test times out.
TEST(Ipi, RingMessagesToAParkingWorkerThatAlsoGetsInboxPostsAreNeverLost) {
  Runtime::Options o;
  o.workers = 2;
  o.idle_spin = absl::ZeroDuration();
  auto rt = Runtime::create(o);
  ASSERT_TRUE(rt.ok()) << rt.status();
  std::atomic<bool> stop{false};
  std::atomic<int> got{0};
  static int ident;
  auto sleeper = (*rt)->spawn(
      [&] {
        while (!stop.load()) tsleep(&ident, 0, "poked", absl::Milliseconds(1));
      },
      {.name = "poked", .worker = 1});
  ASSERT_TRUE(sleeper.ok());
  std::thread poker([&] {
    while (!stop.load()) (*rt)->wakeup(&ident);
  });
  const int rounds = scaled(20000);
  testing::set_chaos_seed(20261202);  // widens the unwatch and announce windows
  testing::run_on(**rt, [&] {
    for (int i = 0; i < rounds; ++i) {
      send_ipiq3(1, count_up, &got, 0);
      while (got.load(std::memory_order_relaxed) != i + 1) yield();
    }
  }, 0);
  testing::set_chaos_seed(0);
  stop = true;
  poker.join();
  sleeper->join();
  EXPECT_EQ(got.load(), rounds);
}

// Rings are allocated on a pair's first message (runtime.h: runtime_stats::ipi_rings): none
// for a runtime that only starts, spawns from outside and snapshots (the inbox path), one
// per ordered pair that exchanges messages, not one more for later messages; seq_ipiq and
// wait_ipiq towards a worker never sent to need no ring.
TEST(Ipi, RingsAreAllocatedOnAPairsFirstMessageOnly) {
  auto rt = Runtime::create({.workers = 64});
  ASSERT_TRUE(rt.ok()) << rt.status();
  ASSERT_TRUE((*rt)->snapshot().ok());
  EXPECT_EQ((*rt)->stats().ipi_rings, 0u) << "64 workers started: no ring yet";
  testing::run_on(**rt, [] {
    EXPECT_EQ(seq_ipiq(5), 0u);
    wait_ipiq(5, seq_ipiq(5));  // returns: nothing was sent
    for (int i = 0; i < 100; ++i) wait_ipiq(3, send_ipiq(3, [](void*) {}, nullptr));
  });
  EXPECT_EQ((*rt)->stats().ipi_rings, 1u) << "0 -> 3 only";
  testing::run_on(**rt, [] { wait_ipiq(0, send_ipiq(0, [](void*) {}, nullptr)); }, 3);
  EXPECT_EQ((*rt)->stats().ipi_rings, 2u) << "and 3 -> 0";
  // Every worker to its neighbour: 64 new rings (0 -> 1 ... 63 -> 0; neither 0 -> 3 nor
  // 3 -> 0 is among them).
  std::atomic<int> done{0};
  std::vector<thread_ref> tds;
  for (int w = 0; w < 64; ++w) {
    auto td = (*rt)->spawn(
        [w, &done] {
          const int to = (w + 1) % 64;
          wait_ipiq(to, send_ipiq(to, [](void*) {}, nullptr));
          done.fetch_add(1);
        },
        {.worker = w});
    ASSERT_TRUE(td.ok());
    tds.push_back(std::move(*td));
  }
  for (auto& td : tds) td.join();
  EXPECT_EQ(done.load(), 64);
  EXPECT_EQ((*rt)->stats().ipi_rings, 2u + 64u);
  ASSERT_TRUE((*rt)->shutdown().ok());
}

std::atomic<int> g_hits[kWorkers];
void hit(void*, int, globaldata* gd) { g_hits[gd->gd_cpuid].fetch_add(1); }
void hit1(void*) { g_hits[mycpuid()].fetch_add(1); }

TEST(Ipi, MaskSendAndCpusyncSimpleReachEveryWorker) {
  auto rt = test_runtime(kWorkers);
  for (auto& h : g_hits) h = 0;
  testing::run_on(*rt, [] {
    cpumask m;
    m.set(0);
    m.set(2);
    m.set(3);
    EXPECT_EQ(send_ipiq_mask(m, hit, nullptr, 0), 3);
    cpumask all;
    for (int i = 0; i < kWorkers; ++i) all.set(i);
    cpusync_simple(all, hit1, nullptr);  // returns only when all have run it
    EXPECT_EQ(g_hits[1].load(), 1);
    EXPECT_EQ(g_hits[0].load(), 2);  // mask send to self ran at once, then cpusync
  }, 0);
  // The mask sends to 2 and 3 are ordered before the cpusync request on each pair.
  EXPECT_EQ(g_hits[2].load(), 2);
  EXPECT_EQ(g_hits[3].load(), 2);
}

// While a master holds the interlock no thread runs on the other participants: their
// busy threads' counters do not move until the deinterlock.
TEST(Ipi, CpusyncInterlockHoldsParticipants) {
  auto rt = test_runtime(3);
  std::atomic<bool> stop{false};
  std::atomic<long> ticks[3] = {};
  std::vector<thread_ref> busy;
  for (int w = 1; w < 3; ++w) {
    thread_options o;
    o.worker = w;
    auto td = rt->spawn(
        [&, w] {
          while (!stop.load()) {
            ticks[w].fetch_add(1);
            yield();
          }
        },
        o);
    ASSERT_TRUE(td.ok());
    busy.push_back(std::move(*td));
  }
  testing::run_on(*rt, [&] {
    while (ticks[1].load() == 0 || ticks[2].load() == 0) yield();
    for (int round = 0; round < 20; ++round) {
      cpusync cs;
      cs.cs_mask.set(1);
      cs.cs_mask.set(2);
      cs.cs_func = [](void* p) { static_cast<std::atomic<int>*>(p)->fetch_add(1); };
      std::atomic<int> ran{0};
      cs.cs_data = &ran;
      cpusync_interlock(&cs);
      long a = ticks[1].load(), b = ticks[2].load();
      spin_for(200000);
      EXPECT_EQ(ticks[1].load(), a);
      EXPECT_EQ(ticks[2].load(), b);
      EXPECT_EQ(ran.load(), 0);
      cpusync_deinterlock(&cs);
      EXPECT_EQ(ran.load(), 2);
    }
  }, 0);
  stop = true;
  for (auto& t : busy) t.join();
}

// Remote schedules race with the target blocking itself on its own worker: the target is
// never lost (it finishes every round) and never runs twice at once (the scheduler aborts
// on a double run).
TEST(Ipi, RemoteScheduleRacesWithBlockingNeverLoseTheThread) {
  auto rt = test_runtime(kWorkers);
  const int rounds = scaled(20000);
  std::atomic<int> tokens{0};   // wakeups granted
  std::atomic<bool> done{false};
  std::atomic<int> stopped{0};  // wakers that saw `done` (and will not touch the sleeper)
  thread_options o;
  o.worker = 1;
  o.name = "sleeper";
  auto sleeper = rt->spawn(
      [&] {
        for (int i = 0; i < rounds; ++i) {
          // Block until a token is available (a wakeup may come before we block).
          crit_enter();
          while (tokens.load() == 0) {
            deschedule_self();
            if (tokens.load() == 0) lwkt_switch();
            schedule_self();
          }
          tokens.fetch_sub(1);
          crit_exit();
        }
        done = true;
        // Scheduling a thread that has exited is a bug: outlive the wakers' last calls.
        while (stopped.load() < kWorkers - 1) yield();
      },
      o);
  ASSERT_TRUE(sleeper.ok());
  thread* s = sleeper->get();
  std::vector<thread_ref> wakers;
  for (int w = 0; w < kWorkers; ++w) {
    if (w == 1) continue;
    thread_options wo;
    wo.worker = w;
    auto td = rt->spawn(
        [&, s] {
          while (!done.load()) {
            if (tokens.load() < 4) tokens.fetch_add(1);
            schedule(s);  // remote: a message to worker 1
            if (mycpuid() == 0) deschedule(s);  // a racing remote deschedule, too
            schedule(s);
            yield();
          }
          stopped.fetch_add(1);
        },
        wo);
    ASSERT_TRUE(td.ok());
    wakers.push_back(std::move(*td));
  }
  sleeper->join();
  for (auto& w : wakers) w.join();
  EXPECT_TRUE(done.load());
}

}  // namespace
}  // namespace lwkt
