// Scheduler behaviour on one worker: strict priority order, round robin among equals,
// held threads, critical sections deferring remote requests, setpri, yield_quick.
#include "lwkt/sched.h"

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "lwkt/testing.h"

namespace lwkt {
namespace {

using testing::run_on;
using testing::test_runtime;

// Threads created held at different priorities, released together, run strictly by
// priority (td_pri, then td_upri), equal keys in creation order.
TEST(Sched, StrictPriorityOrder) {
  auto rt = test_runtime(1);
  std::string order;
  run_on(*rt, [&] {
    struct spec {
      char tag;
      int pri, upri;
    };
    const spec specs[] = {{'a', 6, 0}, {'b', 14, 0}, {'c', 14, 5}, {'d', 29, 0},
                          {'e', 6, 0}, {'f', 1, 0},  {'g', 14, 0}};
    std::vector<thread_ref> tds;
    for (const spec& s : specs) {
      thread_options o;
      o.pri = s.pri;
      o.upri = s.upri;
      o.nostart = true;
      o.name = std::string(1, s.tag);
      char tag = s.tag;
      auto td = create([&order, tag] { order.push_back(tag); }, o);
      ASSERT_TRUE(td.ok()) << td.status();
      tds.push_back(std::move(*td));
    }
    setpri_self(TDPRI_MAX);  // schedule them all before any runs
    for (auto& td : tds) schedule(td.get());
    EXPECT_EQ(order, "");  // nothing preempts the scheduler
    setpri_self(TDPRI_IDLE_WORK);
    yield();  // a better thread heads the queue: switch
    for (auto& td : tds) td.join();
  });
  EXPECT_EQ(order, "dcbgaef");
}

// With a zero slice every yield rotates: equal-priority threads alternate exactly.
TEST(Sched, RoundRobinAmongEqualsWithZeroSlice) {
  Runtime::Options o;
  o.rr_slice = absl::ZeroDuration();
  auto rt = test_runtime(1, o);
  std::string trace;
  run_on(*rt, [&] {
    std::vector<thread_ref> tds;
    for (char tag : {'A', 'B', 'C'}) {
      thread_options to;
      to.nostart = true;
      auto td = create(
          [&trace, tag] {
            for (int i = 0; i < 4; ++i) {
              trace.push_back(tag);
              yield();
            }
          },
          to);
      ASSERT_TRUE(td.ok());
      tds.push_back(std::move(*td));
    }
    for (auto& td : tds) schedule(td.get());
    for (auto& td : tds) td.join();
  });
  EXPECT_EQ(trace, "ABCABCABCABC");
}

// With a real slice, yield switches only once the slice is used, and CPU-bound equal
// threads that call yield() all make progress (fairness within a small factor).
TEST(Sched, RoundRobinSliceGivesEveryEqualThreadTime) {
  Runtime::Options o;
  o.rr_slice = absl::Microseconds(200);
  auto rt = test_runtime(1, o);
  constexpr int kThreads = 3;
  std::atomic<bool> stop{false};
  std::vector<long> spins(kThreads, 0);
  std::vector<int> switches_seen(kThreads, 0);
  run_on(*rt, [&] {
    std::vector<thread_ref> tds;
    for (int i = 0; i < kThreads; ++i) {
      auto td = create([&, i] {
        std::uint64_t last = curthread()->td_switches;
        while (!stop.load(std::memory_order_relaxed)) {
          ++spins[i];
          yield();
          if (curthread()->td_switches != last) {
            last = curthread()->td_switches;
            ++switches_seen[i];
          }
          if (switches_seen[i] >= 20) stop.store(true);
        }
      });
      ASSERT_TRUE(td.ok());
      tds.push_back(std::move(*td));
    }
    for (auto& td : tds) td.join();
  });
  for (int i = 0; i < kThreads; ++i) {
    EXPECT_GT(spins[i], 0) << "thread " << i << " starved";
    EXPECT_GE(switches_seen[i], 15) << "thread " << i;
  }
}

TEST(Sched, HeldThreadDoesNotRunUntilScheduled) {
  auto rt = test_runtime(2);
  std::atomic<int> ran{0};
  thread_options o;
  o.nostart = true;
  o.worker = 1;
  auto td = rt->spawn([&] { ran.store(1); }, o);
  ASSERT_TRUE(td.ok());
  // Give worker 1 every chance to run it by mistake: round-trip other work through it.
  for (int i = 0; i < 50; ++i) run_on(*rt, [] { yield(); }, 1);
  EXPECT_EQ(ran.load(), 0);
  EXPECT_FALSE(td->exited());
  schedule(td->get());  // from main: a message to worker 1
  td->join();
  EXPECT_EQ(ran.load(), 1);
}

// A remote request (schedule from another OS thread) that arrives while the owner is in a
// critical section is processed only at crit_exit's 1 -> 0 transition.
TEST(Sched, CriticalSectionDefersRemoteRequests) {
  auto rt = test_runtime(1);
  thread_options o;
  o.nostart = true;
  o.worker = 0;
  o.pri = TDPRI_MAX;
  std::atomic<int> ran{0};
  auto target = rt->spawn([&] { ran.store(1); }, o);
  ASSERT_TRUE(target.ok());
  std::atomic<int> phase{0};
  std::atomic<bool> queued_inside{true}, queued_after{false};
  thread* t = target->get();
  thread_options mo;
  mo.worker = 0;
  auto main_td = rt->spawn([&] {
    crit_enter();
    phase.store(1);                      // main now schedules target from outside
    while (phase.load() != 2) {}         // spin until main's message is in the inbox
    queued_inside = (t->td_flags & TDF_RUNQ) != 0;
    crit_enter();                        // nested: 2 -> 1 must not run deferred work
    crit_exit();
    queued_inside = queued_inside || (t->td_flags & TDF_RUNQ) != 0;
    crit_exit();                         // 1 -> 0: the request runs now
    queued_after = (t->td_flags & TDF_RUNQ) != 0;
    EXPECT_EQ(ran.load(), 0);            // queued, but nothing preempts us
    yield();                             // a better thread is queued: switch to it
    EXPECT_EQ(ran.load(), 1);
  }, mo);
  ASSERT_TRUE(main_td.ok());
  while (phase.load() != 1) {}
  schedule(t);
  phase.store(2);
  main_td->join();
  target->join();
  EXPECT_FALSE(queued_inside.load());
  EXPECT_TRUE(queued_after.load());
}

// schedule(); deschedule(); schedule() on a thread of worker 0 leaves it runnable, also when
// all three are queued before the owner drains any (it is held in a critical section), and
// whatever channel each takes. The schedules come from main (the inbox: the second one
// coalesces with the first's embedded message); the deschedule from `desched`, which runs it
// from main (inbox), from worker 1 (a ring, drained after the inbox) or from a worker of
// another runtime (the inbox). Before the fix the deschedule ran last and the thread stayed
// descheduled forever.
void schedule_deschedule_schedule(Runtime& rt, const std::function<void(thread*)>& desched) {
  for (int round = 0; round < 50; ++round) {
    std::atomic<bool> ran{false}, go{false};
    std::atomic<int> phase{0};
    thread_options to;
    to.worker = 0;
    auto target = rt.spawn(
        [&] {
          testing::block_self();
          ran = true;
          testing::block_until(go);
        },
        to);
    ASSERT_TRUE(target.ok());
    thread* t = target->get();
    auto holder = rt.spawn(
        [&] {
          while (t->td_flags & (TDF_RUNQ | TDF_NOSTART)) yield();  // until the target blocks
          crit_enter();
          phase.store(1);
          while (phase.load() != 2) {}  // the three requests are posted meanwhile
          crit_exit();                  // they run now
        },
        to);
    ASSERT_TRUE(holder.ok());
    while (phase.load() != 1) {}
    schedule(t);
    desched(t);
    schedule(t);
    phase.store(2);
    holder->join();
    // The last call was schedule(): the target must run. Bounded wait (a lost schedule
    // never runs it); generous for loaded CI machines.
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (!ran.load() && absl::Now() < deadline) absl::SleepFor(absl::Microseconds(50));
    ASSERT_TRUE(ran.load()) << "round " << round << ": the final schedule() was lost";
    go = true;
    schedule(t);
    target->join();
  }
}

TEST(Sched, ScheduleAfterDescheduleWinsFromOutside) {
  auto rt = test_runtime(2);
  schedule_deschedule_schedule(*rt, [](thread* t) { deschedule(t); });
}

TEST(Sched, ScheduleAfterDescheduleWinsOverAWorkersDeschedule) {
  auto rt = test_runtime(2);
  schedule_deschedule_schedule(*rt, [&](thread* t) {
    run_on(*rt, [t] { deschedule(t); }, 1);  // returns once worker 1 has sent it
  });
}

TEST(Sched, ScheduleAfterDescheduleWinsOverAnotherRuntimesWorker) {
  auto rt = test_runtime(2);
  auto other = test_runtime(1);
  schedule_deschedule_schedule(*rt, [&](thread* t) { run_on(*other, [t] { deschedule(t); }); });
}

TEST(Sched, SetpriReordersQueuedThread) {
  auto rt = test_runtime(1);
  std::string order;
  run_on(*rt, [&] {
    thread_options o;
    o.nostart = true;
    auto a = create([&] { order += 'a'; }, o);
    auto b = create([&] { order += 'b'; }, o);
    ASSERT_TRUE(a.ok() && b.ok());
    setpri_self(TDPRI_MAX);
    schedule(a->get());
    schedule(b->get());
    setpri(b->get(), TDPRI_SOFT_TIMER);  // b now beats a
    EXPECT_EQ(b->get()->td_pri, TDPRI_SOFT_TIMER);
    setpri_self(TDPRI_IDLE_WORK);
    yield();
    a->join();
    b->join();
  });
  EXPECT_EQ(order, "ba");
}

// yield_quick does no equal-priority round robin; yield with a zero slice does.
TEST(Sched, YieldQuickDoesNotRotateEquals) {
  Runtime::Options ro;
  ro.rr_slice = absl::ZeroDuration();
  auto rt = test_runtime(1, ro);
  std::string trace;
  run_on(*rt, [&] {
    thread_options o;
    o.nostart = true;
    auto a = create(
        [&] {
          for (int i = 0; i < 3; ++i) {
            trace += 'a';
            yield_quick();
          }
        },
        o);
    auto b = create([&] { trace += 'b'; }, o);
    ASSERT_TRUE(a.ok() && b.ok());
    schedule(a->get());
    schedule(b->get());
    a->join();
    b->join();
  });
  EXPECT_EQ(trace, "aaab");
}

}  // namespace
}  // namespace lwkt
