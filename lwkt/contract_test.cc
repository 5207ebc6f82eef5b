// Header promises that a review found broken, one test each: shutdown always returns and
// names what it abandons; messages pending at stop run on their own worker; entry points
// racing with shutdown complete or refuse; round robin ignores upri; infinite durations mean
// never; sleep queues are FIFO; setpri to the same priority does not rotate; wakeups from
// any OS thread; create() preempts like schedule(); stats() after shutdown.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "lwkt/ipi.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "lwkt/testing.h"
#include "lwkt/token.h"

namespace lwkt {
namespace {

using testing::run_on;
using testing::test_runtime;

// Runs rt.shutdown(grace) on another OS thread and fails (exiting at once: the runtime is
// wedged) if it does not return within `bound`.
absl::Status bounded_shutdown(Runtime& rt, absl::Duration grace, absl::Duration bound) {
  auto f = std::async(std::launch::async, [&] { return rt.shutdown(grace); });
  if (f.wait_for(absl::ToChronoMilliseconds(bound)) != std::future_status::ready) {
    ADD_FAILURE() << "shutdown(" << grace << ") did not return within " << bound;
    std::fflush(nullptr);
    std::_Exit(1);
  }
  return f.get();
}

TEST(Shutdown, ReturnsWhileThreadsStayRunnable) {
  auto rt = test_runtime(2);
  lwkt_token tok("contended");
  std::atomic<bool> holding{false};
  auto spinner = rt->spawn([] { for (;;) yield(); }, {.name = "spinner", .worker = 0});
  // yield_quick never gives way to equals: quick keeps worker 0 once it runs there.
  auto quick = rt->spawn([] { for (;;) yield_quick(); }, {.name = "quick", .worker = 0});
  auto holder = rt->spawn(
      [&] {
        gettoken(&tok);
        holding = true;
        for (;;) yield();  // holds tok whenever it runs
      },
      {.name = "holder", .worker = 1});
  while (!holding) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto waiter = rt->spawn(
      [&] {
        gettoken(&tok);  // contends with the holder (which releases it at each switch-out)
        reltoken(&tok);
      },
      {.name = "waiter", .worker = 1});
  ASSERT_TRUE(spinner.ok() && quick.ok() && holder.ok() && waiter.ok());
  const absl::Status st = bounded_shutdown(*rt, absl::Milliseconds(50), absl::Seconds(30));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  for (const char* name : {"'spinner' (worker 0)", "'quick' (worker 0)", "'holder' (worker 1)"}) {
    EXPECT_NE(st.message().find(name), std::string::npos) << name << " in: " << st.message();
  }
  EXPECT_TRUE(spinner->abandoned());
  EXPECT_TRUE(spinner->exited());
}

// A thread that never reaches a switch point cannot be stopped: shutdown still returns,
// names it, and leaves the runtime to it.
// The hog outlives the test (its runtime is leaked to it): what it touches is static.
std::atomic<bool> g_hog_spinning{false}, g_hog_release{false}, g_hog_left{false};

TEST(Shutdown, ReturnsAndNamesAThreadThatNeverSwitches) {
  auto rt = test_runtime(1);
  auto& spinning = g_hog_spinning;
  auto& release = g_hog_release;
  auto hog = rt->spawn(
      [] {
        g_hog_spinning = true;
        while (!g_hog_release.load()) {
        }
        g_hog_left = true;
        yield();  // reaches the stopped worker's idle thread, which keeps it forever
      },
      {.name = "hog"});
  ASSERT_TRUE(hog.ok());
  while (!spinning) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const absl::Status st = bounded_shutdown(*rt, absl::Milliseconds(10), absl::Seconds(30));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("'hog' (worker 0)"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("switch point"), std::string::npos) << st.message();
  release = true;
  while (!g_hog_left) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(rt->shutdown().code(), absl::StatusCode::kFailedPrecondition);  // idempotent
  EXPECT_FALSE(rt->topology_report().empty());  // the stand-in still answers
  EXPECT_EQ(rt->placement().size(), 1u);
  EXPECT_GE(rt->stats().threads_created, 1u);
  hog->reset();  // the object belongs to the leaked runtime now; dropping a hold is fine
}

std::atomic<int> g_ipi_ran{0};
void reply_ipi(void*, int, globaldata*) { g_ipi_ran.fetch_add(1); }
void user_ipi(void*, int from, globaldata*) {
  // Touches its worker: a critical section and a reply to the sender.
  crit_enter();
  crit_exit();
  send_ipiq3(from, reply_ipi, nullptr, 0);
  g_ipi_ran.fetch_add(1);
}

// Before: the final drain ran these handlers on the OS thread calling shutdown, where
// crit_exit aborts ("crit_exit called from an OS thread that is not a worker").
TEST(Shutdown, MessagesPendingAtStopRunOnTheirWorker) {
  for (int round = 0; round < 5; ++round) {
    auto rt = test_runtime(2);
    g_ipi_ran = 0;
    int chan = 0;
    std::atomic<bool> asleep{false}, in_call{false};
    auto sleeper = rt->spawn(
        [&] {
          asleep = true;
          (void)tsleep(&chan, 0, "forever");
        },
        {.name = "sleeper", .worker = 1});
    auto late = rt->spawn(
        [&] {
          in_call = true;
          usleep(30000);  // a blocking call while shutdown(0) starts
          wakeup(&chan);
          send_ipiq3(1, user_ipi, nullptr, 0);
        },
        {.name = "late", .worker = 0});
    ASSERT_TRUE(sleeper.ok() && late.ok());
    while (!asleep || !in_call) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const absl::Status st = bounded_shutdown(*rt, absl::ZeroDuration(), absl::Seconds(30));
    (void)st;  // the sleeper may be woken (and exit) or be abandoned: both are fine
    EXPECT_EQ(g_ipi_ran.load(), 2) << "the user IPI and its reply ran";
  }
}

// spawn / wakeup / snapshot / stats / placement from several OS threads while another
// shuts the runtime down: each completes or refuses (run under ASan and TSan).
TEST(Shutdown, ConcurrentEntryPointsCompleteOrRefuse) {
  for (int round = 0; round < testing::scaled(20); ++round) {
    auto rt = test_runtime(2);
    std::atomic<bool> stop{false};
    std::atomic<long> ok{0}, refused{0};
    std::vector<std::thread> callers;
    for (int k = 0; k < 3; ++k) {
      callers.emplace_back([&, k] {
        int chan = 0;
        while (!stop.load()) {
          switch (k) {
            case 0: {
              auto td = rt->spawn([] { yield(); });
              if (td.ok()) {
                ok.fetch_add(1);
              } else {
                EXPECT_EQ(td.status().code(), absl::StatusCode::kFailedPrecondition);
                refused.fetch_add(1);
              }
              break;
            }
            case 1:
              rt->wakeup(&chan);
              rt->wakeup_one(&chan);
              (void)rt->stats();
              (void)rt->placement();
              break;
            default: {
              auto s = rt->snapshot();
              if (!s.ok()) {
                EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
              }
              break;
            }
          }
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    (void)bounded_shutdown(*rt, absl::Milliseconds(50), absl::Seconds(60));
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    stop = true;
    for (auto& t : callers) t.join();
    EXPECT_GT(ok.load() + refused.load(), 0);
    EXPECT_GE(rt->stats().threads_created, static_cast<std::uint64_t>(ok.load()));
  }
}

// An lwkt thread blocked in snapshot() (an entry point allowed from lwkt threads) when its
// worker stops is abandoned like any other, not counted as a call shutdown must wait for
// (before: shutdown took the 2 s leak path).
TEST(Shutdown, ThreadBlockedInSnapshotIsAbandonedNotWaitedFor) {
#if defined(__SANITIZE_ADDRESS__)
  // Abandoning a thread mid-call frees its stack without unwinding: the heap objects only
  // that stack referenced (the snapshot's vectors) leak by design, which LeakSanitizer
  // reports. The protocol is exercised by the other configurations.
  GTEST_SKIP() << "abandons a thread mid-call (its heap leaks by design)";
#endif
  auto rt = test_runtime(2);
  std::atomic<bool> busy{false};
  auto hog = rt->spawn(
      [&] {
        busy = true;
        const absl::Time end = absl::Now() + absl::Milliseconds(200);
        while (absl::Now() < end) {
        }
      },
      {.name = "busy", .worker = 1});
  while (!busy) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto snapper = rt->spawn([&] { (void)rt->snapshot(); }, {.name = "snapper", .worker = 0});
  ASSERT_TRUE(hog.ok() && snapper.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // snapper waits for worker 1
  const absl::Status st = bounded_shutdown(*rt, absl::ZeroDuration(), absl::Seconds(30));
  EXPECT_EQ(st.message().find("leaked"), std::string::npos) << st.message();
  EXPECT_EQ(rt->workers(), 2);
}

// A thread given away and never acquired is on no worker's thread list: shutdown still
// abandons it, names it and releases its joiners.
TEST(Shutdown, ThreadInTransitIsAbandoned) {
  auto rt = test_runtime(2);
  thread_ref given;
  run_on(*rt, [&] {
    auto t = lwkt::create([] { testing::block_self(); }, {.name = "in-transit"});
    ASSERT_TRUE(t.ok());
    while (t->get()->td_flags & TDF_RUNQ) yield();
    giveaway(t->get());
    given = std::move(*t);
  });
  const absl::Status st = bounded_shutdown(*rt, absl::Milliseconds(10), absl::Seconds(30));
  EXPECT_NE(st.message().find("'in-transit' (in transit"), std::string::npos) << st.message();
  EXPECT_TRUE(given.abandoned());
  EXPECT_EQ(rt->stats().live_threads, 1);  // alive but on no worker's count
  given.join();  // returns: its joiners were released
}

TEST(Shutdown, StatsAfterShutdownAreTheFinalCounts) {
  auto rt = test_runtime(2);
  for (int i = 0; i < 10; ++i) {
    auto td = rt->spawn([] { yield(); });
    ASSERT_TRUE(td.ok());
    td->join();
  }
  const runtime_stats before = rt->stats();
  ASSERT_TRUE(rt->shutdown().ok());
  const runtime_stats after = rt->stats();
  EXPECT_EQ(after.threads_created, before.threads_created);
  EXPECT_GE(after.threads_created, 10u);
  EXPECT_EQ(after.threads_reaped, after.threads_created);
  EXPECT_EQ(after.live_threads, 0);
  EXPECT_EQ(rt->placement().size(), 2u);
}

// DragonFly's scheduler clock rotates among equal td_pri whatever their upri: a better-upri
// CPU hog does not starve its equal-priority peer (before: 2,000,001 iterations vs 0).
TEST(Sched, RoundRobinRotatesAcrossUpri) {
  Runtime::Options o;
  o.rr_slice = absl::ZeroDuration();
  auto rt = test_runtime(1, o);
  const int n = testing::scaled(20000);
  std::atomic<int> a{0}, b{0};
  std::atomic<int> b_when_a_done{-1};
  run_on(*rt, [&] {
    auto ta = lwkt::create([&] {
      for (int i = 0; i < n; ++i) { a.fetch_add(1); yield(); }
      b_when_a_done = b.load();
    }, {.name = "upri1", .pri = TDPRI_KERN_USER, .upri = 1});
    auto tb = lwkt::create([&] {
      for (int i = 0; i < n; ++i) { b.fetch_add(1); yield(); }
    }, {.name = "upri0", .pri = TDPRI_KERN_USER, .upri = 0});
    ASSERT_TRUE(ta.ok() && tb.ok());
    ta->join();
    tb->join();
  });
  EXPECT_GE(b_when_a_done.load(), n / 2) << "the upri-0 thread was starved";
}

// rr_slice infinite: no round robin at all (before: the conversion gave 0, "every yield").
TEST(Sched, InfiniteSliceNeverRotates) {
  Runtime::Options o;
  o.rr_slice = absl::InfiniteDuration();
  o.token_warn = absl::InfiniteDuration();
  auto rt = test_runtime(1, o);
  std::string trace;
  run_on(*rt, [&] {
    auto x = lwkt::create([&] { for (int i = 0; i < 3; ++i) { trace += "x"; yield(); } });
    auto y = lwkt::create([&] { for (int i = 0; i < 3; ++i) { trace += "y"; yield(); } });
    ASSERT_TRUE(x.ok() && y.ok());
    x->join();
    y->join();
    EXPECT_FALSE(should_yield());
  });
  EXPECT_EQ(trace, "xxxyyy");
}

// A timeout past the clock's range is no timeout (before: the deadline overflowed).
TEST(Sleep, HugeTimeoutMeansNoTimeout) {
  auto rt = test_runtime(1);
  int chan = 0;
  std::atomic<bool> asleep{false};
  std::atomic<int> rc{-1};
  auto td = rt->spawn([&] {
    tsleep_interlock(&chan);
    asleep = true;
    rc = tsleep(&chan, PINTERLOCKED, "huge", absl::Hours(24 * 365 * 100000.0));
  });
  ASSERT_TRUE(td.ok());
  while (!asleep) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(rc.load(), -1) << "returned early";
  wakeup(&chan);  // from main: an OS thread outside the runtime
  td->join();
  EXPECT_EQ(rc.load(), 0);
}

// Sleepers on one worker are woken in arrival order (before: LIFO).
TEST(Sleep, WakeupOneWakesTheOldestSleeper) {
  auto rt = test_runtime(1);
  std::string order;
  int chan = 0;
  run_on(*rt, [&] {
    std::vector<thread_ref> tds;
    for (char c : std::string("ABC")) {
      auto t = lwkt::create([&, c] {
        (void)tsleep(&chan, 0, "fifo");
        order += c;
      });
      ASSERT_TRUE(t.ok());
      tds.push_back(std::move(*t));
      lwkt_pause(absl::Microseconds(10));  // let it go to sleep, in creation order
    }
    for (int i = 0; i < 3; ++i) {
      wakeup_one(&chan);
      lwkt_pause(absl::Microseconds(10));
    }
    for (auto& t : tds) t.join();
  });
  EXPECT_EQ(order, "ABC");
}

// lwkt::wakeup and wakeup_one from an OS thread outside the runtime, and Runtime::wakeup_one.
TEST(Sleep, WakeupsFromMain) {
  auto rt = test_runtime(2);
  int chan = 0;
  std::atomic<int> woken{0}, asleep{0};
  std::vector<thread_ref> tds;
  for (int i = 0; i < 4; ++i) {
    auto t = rt->spawn([&] {
      for (;;) {
        tsleep_interlock(&chan);
        asleep.fetch_add(1);
        if (tsleep(&chan, PINTERLOCKED, "main") == 0) break;
      }
      woken.fetch_add(1);
    }, {.worker = i % 2});
    ASSERT_TRUE(t.ok());
    tds.push_back(std::move(*t));
  }
  while (asleep.load() < 4) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  lwkt::wakeup_one(&chan);
  for (int i = 0; i < 2000 && woken.load() < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_GE(woken.load(), 1);
  rt->wakeup_one(&chan);
  for (int i = 0; i < 2000 && woken.load() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_GE(woken.load(), 2);
  lwkt::wakeup(&chan);
  for (auto& t : tds) t.join();
  EXPECT_EQ(woken.load(), 4);
}

// setpri to the current priority leaves the queue alone (before: it rotated the thread).
TEST(Sched, SetpriToSamePriorityDoesNotRotate) {
  auto rt = test_runtime(1);
  std::string trace;
  run_on(*rt, [&] {
    setpri_self(TDPRI_KERN_USER);  // below b and c: they run as soon as we block
    auto b = lwkt::create([&] { trace += "b"; }, {.name = "b", .pri = TDPRI_KERN_DAEMON, .nostart = true});
    auto c = lwkt::create([&] { trace += "c"; }, {.name = "c", .pri = TDPRI_KERN_DAEMON, .nostart = true});
    ASSERT_TRUE(b.ok() && c.ok());
    crit_enter();
    schedule(b->get());
    schedule(c->get());
    setpri(b->get(), TDPRI_KERN_DAEMON);
    crit_exit();
    b->join();
    c->join();
  });
  EXPECT_EQ(trace, "bc");
}

// create() of a better preemptable thread preempts at once, as schedule() after nostart does.
TEST(Preempt, CreateOfBetterPreemptableThreadPreempts) {
  auto rt = test_runtime(1);
  std::string trace;
  run_on(*rt, [&] {
    trace += "a";
    auto p = lwkt::create([&] { trace += "P"; }, {.name = "P", .pri = TDPRI_INT_SUPPORT, .preemptable = true});
    trace += "b";
    ASSERT_TRUE(p.ok());
    p->join();
  });
  EXPECT_EQ(trace, "aPb");
  EXPECT_GE(rt->stats().preemptions, 1u);
}

}  // namespace
}  // namespace lwkt
