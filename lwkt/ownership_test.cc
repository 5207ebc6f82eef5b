// Ownership handoff under fire: schedule, deschedule and interrupt aimed at threads that
// migrate (setcpu_self, giveaway/acquire) from other workers, and blocking waits whose
// thread changes owner while it is blocked. Each scenario is a legal use of the public API;
// before the handoff was published by the old owner these aborted ("picked by worker N,
// which does not own it") or corrupted run queues.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <random>

#include "absl/time/clock.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "lwkt/testing.h"

namespace lwkt {
namespace {

using testing::scaled;
using testing::test_runtime;

// Hammers `target` with random schedule / deschedule / interrupt calls until `stop`.
void hammer(thread* target, const std::atomic<bool>& stop, std::uint64_t seed,
            std::atomic<long>& calls) {
  std::mt19937_64 rng(seed);
  while (!stop.load(std::memory_order_relaxed)) {
    switch (rng() % 3) {
      case 0: schedule(target); break;
      case 1: deschedule(target); break;
      default: interrupt(target, rng() & 1); break;
    }
    calls.fetch_add(1, std::memory_order_relaxed);
    if ((rng() & 7) == 0) yield();
  }
}

// Ending a thread that the hammer may have left descheduled, without ever scheduling it
// after its exit (schedule() requires a live thread): once `stop` is set the thread moves
// to kFinishWorker, sets `done` and returns. finish() runs on kFinishWorker and schedules
// it until `done`: a thread that has not set `done` when finish() looks cannot exit before
// finish() next switches (it must first run on finish()'s own worker).
constexpr int kFinishWorker = 2;
struct ending {
  std::atomic<bool> stop{false};
  std::atomic<bool> done{false};
  void leave() {
    setcpu_self(kFinishWorker);
    done = true;
  }
};
void finish(thread_ref& td, ending& e) {
  ASSERT_EQ(mycpuid(), kFinishWorker);
  e.stop = true;
  while (!e.done.load()) {
    schedule(td.get());
    lwkt_pause(absl::Microseconds(50));
  }
  td.join();
}

// The scenario: M hops between workers 0 and 1 and naps after each hop, while a
// thread on worker 2 (and one from main, through the inbox) keep aiming requests at it.
void requests_race_setcpu_self() {
  auto rt = test_runtime(3);
  std::atomic<bool> stop{false};
  ending end_m;
  std::atomic<long> hops{0}, calls{0};
  thread_options mo;
  mo.name = "hopper";
  mo.worker = 0;
  auto m = rt->spawn(
      [&] {
        int nap = 0;
        for (int i = 0; !end_m.stop.load(std::memory_order_relaxed); ++i) {
          setcpu_self(i & 1);
          EXPECT_EQ(mycpuid(), i & 1);
          hops.fetch_add(1, std::memory_order_relaxed);
          (void)tsleep(&nap, PCATCH, "nap", absl::Microseconds(20));
        }
        end_m.leave();
      },
      mo);
  ASSERT_TRUE(m.ok());
  thread_options ho;
  ho.name = "hammer";
  ho.worker = 2;
  auto h = rt->spawn([&] { hammer(m->get(), stop, 1, calls); }, ho);
  ASSERT_TRUE(h.ok());
  const absl::Time end = absl::Now() + absl::Milliseconds(testing::under_qemu() ? 500 : 1500);
  std::mt19937_64 rng(2);
  while (absl::Now() < end) {  // from an OS thread outside the runtime: the inbox path
    if (rng() & 1) {
      schedule(m->get());
    } else {
      interrupt(m->get());
    }
    absl::SleepFor(absl::Microseconds(10));
  }
  stop = true;
  h->join();
  testing::run_on(*rt, [&] { finish(*m, end_m); }, kFinishWorker);
  EXPECT_GT(hops.load(), 10);
  EXPECT_GT(calls.load(), 100);
  EXPECT_EQ(rt->stats().live_threads, 0);
}

TEST(Ownership, RequestsRaceSetcpuSelf) { requests_race_setcpu_self(); }

// The same with the interleaving points armed (ring publish/consume, park/kick, ownership
// handoff): the windows the handoff protocol closes open far more often.
TEST(Ownership, RequestsRaceSetcpuSelfUnderChaos) {
  for (std::uint64_t seed : {0x5eedull, 0xc0ffeeull}) {
    testing::set_chaos_seed(seed);
    requests_race_setcpu_self();
    testing::set_chaos_seed(0);
  }
}

// Threads that hop across every worker, the hammers' own included.
TEST(Ownership, RequestsRaceHopsOntoTheRequestersWorker) {
  auto rt = test_runtime(3);
  std::atomic<bool> stop{false};
  ending ends[2];
  std::atomic<long> calls{0};
  thread_ref hoppers[2];
  for (int k = 0; k < 2; ++k) {
    thread_options o;
    o.name = "hopper";
    o.worker = k;
    auto t = rt->spawn(
        [&ends, k] {
          std::mt19937_64 rng(k + 10);
          int nap = 0;
          while (!ends[k].stop.load(std::memory_order_relaxed)) {
            setcpu_self(static_cast<int>(rng() % 3));
            if (rng() & 1) {
              (void)tsleep(&nap, PCATCH, "nap", absl::Microseconds(10));
            } else {
              yield();
            }
          }
          ends[k].leave();
        },
        o);
    ASSERT_TRUE(t.ok());
    hoppers[k] = std::move(*t);
  }
  thread_ref hammers[3];
  for (int w = 0; w < 3; ++w) {
    thread_options o;
    o.name = "hammer";
    o.worker = w;
    auto t = rt->spawn([&, w] { hammer(hoppers[w & 1].get(), stop, 100 + w, calls); }, o);
    ASSERT_TRUE(t.ok());
    hammers[w] = std::move(*t);
  }
  absl::SleepFor(absl::Milliseconds(testing::under_qemu() ? 500 : 1500));
  stop = true;
  for (auto& t : hammers) t.join();
  testing::run_on(
      *rt, [&] {
        for (int k = 0; k < 2; ++k) finish(hoppers[k], ends[k]);
      },
      kFinishWorker);
  EXPECT_GT(calls.load(), 100);
  EXPECT_EQ(rt->stats().live_threads, 0);
}

// Pull migration while requests fly: G naps on worker 0; a thread there gives it away
// whenever it is blocked, a thread on worker 1 acquires and schedules it, and G walks back
// to worker 0 by itself. A thread on worker 2 hammers G throughout.
void requests_race_giveaway_acquire() {
  auto rt = test_runtime(3);
  std::atomic<bool> stop{false}, stop_giver{false}, stop_taker{false};
  ending end_g;
  std::atomic<long> calls{0}, handoffs{0};
  std::atomic<thread*> in_transit{nullptr};
  thread_options go;
  go.name = "given";
  go.worker = 0;
  auto g = rt->spawn(
      [&] {
        int nap = 0;
        while (!end_g.stop.load(std::memory_order_relaxed)) {
          if (mycpuid() != 0) setcpu_self(0);
          (void)tsleep(&nap, PCATCH, "nap", absl::Microseconds(30));
        }
        end_g.leave();
      },
      go);
  ASSERT_TRUE(g.ok());
  thread* gt = g->get();
  thread_options o0;
  o0.name = "giver";
  o0.worker = 0;
  auto giver = rt->spawn(
      [&] {
        while (!stop_giver.load(std::memory_order_relaxed)) {
          crit_enter();
          // Owner-only state, read by the owner inside a critical section.
          const bool idle = gt->td_gd == internal::mycpu() &&
                            !(gt->td_flags & (TDF_RUNQ | TDF_RUNNING | TDF_MIGRATING |
                                              TDF_EXITING | TDF_PREEMPT_LOCK));
          if (idle && in_transit.load() == nullptr) {
            giveaway(gt);
            in_transit.store(gt, std::memory_order_release);
          }
          crit_exit();
          yield();
          lwkt_pause(absl::Microseconds(5));
        }
      },
      o0);
  ASSERT_TRUE(giver.ok());
  thread_options o1;
  o1.name = "taker";
  o1.worker = 1;
  auto taker = rt->spawn(
      [&] {
        for (;;) {
          // The stop flag first, then the slot: stop_taker is set after the giver was
          // joined, so once it reads true the slot holds the giver's last handoff. (Reading
          // the slot first, then the giver's own stop flag, returned with G still given
          // away: finish() then waited for it forever, the hang this test showed under load.)
          const bool stopping = stop_taker.load(std::memory_order_acquire);
          thread* t = in_transit.load(std::memory_order_acquire);
          if (t) {
            acquire(t);
            EXPECT_EQ(t->td_gd, internal::mycpu());
            in_transit.store(nullptr, std::memory_order_release);
            handoffs.fetch_add(1, std::memory_order_relaxed);
            schedule(t);
          } else if (stopping) {
            return;
          }
          lwkt_pause(absl::Microseconds(5));
        }
      },
      o1);
  ASSERT_TRUE(taker.ok());
  thread_options o2;
  o2.name = "hammer";
  o2.worker = 2;
  auto h = rt->spawn([&] { hammer(gt, stop, 7, calls); }, o2);
  ASSERT_TRUE(h.ok());
  absl::SleepFor(absl::Milliseconds(testing::under_qemu() ? 500 : 1500));
  stop = true;
  h->join();
  stop_giver = true;
  giver->join();
  stop_taker.store(true, std::memory_order_release);
  taker->join();  // acquires (and schedules) a last given-away G before it returns
  testing::run_on(*rt, [&] { finish(*g, end_g); }, kFinishWorker);
  EXPECT_GT(handoffs.load(), 0);
  EXPECT_EQ(rt->stats().live_threads, 0);
}

TEST(Ownership, RequestsRaceGiveawayAcquire) { requests_race_giveaway_acquire(); }

// The same with the interleaving points armed (ring publish/consume, park/kick, ownership
// handoff): the windows the handoff protocol closes open far more often.
TEST(Ownership, RequestsRaceGiveawayAcquireUnderChaos) {
  for (std::uint64_t seed : {0x5eedull, 0xc0ffeeull}) {
    testing::set_chaos_seed(seed);
    requests_race_giveaway_acquire();
    testing::set_chaos_seed(0);
  }
}

// A schedule() aimed at a thread between giveaway and acquire is not lost: acquire queues it.
TEST(Ownership, ScheduleInTransitIsHonouredByAcquire) {
  auto rt = test_runtime(2);
  std::atomic<bool> ran_on_1{false};
  std::atomic<thread*> given{nullptr};
  testing::run_on(*rt, [&] {
    auto t = lwkt::create([&] {
      testing::block_self();  // blocked: neither queued nor running
      ran_on_1 = mycpuid() == 1;
    });
    ASSERT_TRUE(t.ok());
    yield();  // let it block
    while (t->get()->td_flags & TDF_RUNQ) yield();
    giveaway(t->get());
    schedule(t->get());  // in transit: remembered
    given = t->get();
    std::atomic<bool> acquired{false};
    thread_options o;
    o.worker = 1;
    auto a = lwkt::create(
        [&] {
          acquire(given.load());  // does not schedule by itself; the deferred request does
          acquired = true;
        },
        o);
    ASSERT_TRUE(a.ok());
    a->join();
    EXPECT_TRUE(acquired);
    t->join();  // returns only if the thread ran after acquire
    EXPECT_TRUE(ran_on_1);
  });
}

// A thread its giver believes blocked can be queued: a schedule from another worker is
// asynchronous, and the runtime's own completions may deliver one late (a remote create's
// reply landing after its creator already saw the result, then blocked in a join: the chaos
// tester's "giveaway of a queued thread" aborts, seeds 107 and 845). giveaway() takes such a
// thread off the run queue and acquire() queues it on the new worker: it runs there once,
// re-checks its wait, and is not lost. Before the fix this aborted naming the queued thread.
TEST(Ownership, GiveawayOfAQueuedThreadTravelsRunnable) {
  auto rt = test_runtime(2);
  const int rounds = scaled(100);
  testing::run_on(*rt, [&] {
    for (int i = 0; i < rounds; ++i) {
      std::atomic<bool> release{false};
      std::atomic<int> resumed_on{-1};
      // Lower priority than us: once queued it cannot run until we block.
      auto v = lwkt::create(
          [&] {
            testing::block_self();  // a stray schedule resumes it here
            resumed_on = mycpuid();
            testing::block_until(release);
          },
          {.name = "victim", .pri = TDPRI_USER_NORM});
      ASSERT_TRUE(v.ok());
      thread* vt = v->get();
      while (vt->td_flags & (TDF_RUNQ | TDF_NOSTART)) lwkt_pause(absl::Microseconds(1));
      schedule(vt);  // a stray schedule: queued, not running (we outrank it)
      ASSERT_TRUE(vt->td_flags & TDF_RUNQ);
      giveaway(vt);
      ASSERT_FALSE(vt->td_flags & TDF_RUNQ);
      auto taker = lwkt::create([vt] { acquire(vt); }, {.name = "taker", .worker = 1});
      ASSERT_TRUE(taker.ok());
      taker->join();
      while (resumed_on.load() < 0) lwkt_pause(absl::Microseconds(5));
      EXPECT_EQ(resumed_on.load(), 1) << "round " << i;
      release = true;
      schedule(vt);
      v->join();
    }
  });
  EXPECT_EQ(rt->stats().live_threads, 0);
}

// completion::wait (join) re-reads its worker after every switch: a joiner given away while
// blocked and acquired elsewhere resumes on its new worker's run queue.
TEST(Ownership, JoinerGivenAwayWhileBlocked) {
  auto rt = test_runtime(2);
  const int rounds = scaled(200);
  testing::run_on(*rt, [&] {
    for (int i = 0; i < rounds; ++i) {
      std::atomic<bool> release{false};
      auto target = lwkt::create([&] { testing::block_until(release); });
      ASSERT_TRUE(target.ok());
      std::atomic<int> joined_on{-1};
      thread* tgt = target->get();
      auto joiner = lwkt::create([&, tgt] {
        thread_ref r(tgt);
        r.join();
        joined_on = mycpuid();
      });
      ASSERT_TRUE(joiner.ok());
      thread* j = joiner->get();
      while (j->td_flags & (TDF_RUNQ | TDF_NOSTART)) yield();  // until it blocks in join
      giveaway(j);
      thread_options o;
      o.worker = 1;
      // acquire, then schedule it as it likes: the joiner resumes early (the target has not
      // exited), loops in completion::wait on worker 1 and blocks again there.
      auto taker = lwkt::create(
          [j] {
            acquire(j);
            schedule(j);
          },
          o);
      ASSERT_TRUE(taker.ok());
      taker->join();
      lwkt_pause(absl::Microseconds(50));  // let the joiner run on worker 1 and block again
      release = true;
      schedule(tgt);
      target->join();
      joiner->join();
      EXPECT_EQ(joined_on.load(), 1) << "round " << i;
      // Before the fix the joiner re-queued itself on worker 0 while running on worker 1,
      // corrupting both run queues: check both (each owner-only, so on its worker).
      crit_enter();
      EXPECT_TRUE(internal::mycpu()->gd_tdrunq.check()) << "worker 0, round " << i;
      crit_exit();
      auto check1 = lwkt::create(
          [i] {
            crit_enter();
            EXPECT_TRUE(internal::mycpu()->gd_tdrunq.check()) << "worker 1, round " << i;
            crit_exit();
          },
          o);
      ASSERT_TRUE(check1.ok());
      check1->join();
    }
  });
  EXPECT_EQ(rt->stats().live_threads, 0);
}

}  // namespace
}  // namespace lwkt
