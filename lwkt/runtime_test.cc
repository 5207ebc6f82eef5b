// Runtime configuration, placement, oversubscription and shutdown.
#include "lwkt/runtime.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "lwkt/internal/runtime_state.h"
#include "lwkt/internal/topology.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "lwkt/testing.h"

namespace lwkt {
namespace {

using testing::run_on;
using testing::test_runtime;

// Runtimes on the process's list (wakeups that cross runtimes walk it). No other runtime is
// created or destroyed while a test reads it.
std::size_t listed_runtimes() {
  return internal::g_debug_runtimes ? internal::g_debug_runtimes->size() : 0;
}

// The hog below outlives its test (its runtime is leaked to it): what it touches is static.
std::atomic<bool> g_hog_spinning{false}, g_hog_release{false}, g_hog_left{false};
std::atomic<bool> g_hog_go{false};  // the condition the hog's wakeup announces

// A shutdown that leaks (a thread that never reaches a switch point) leaves the runtime on
// the process's list for good, sealed. Regression (review): unlisted, it dropped the count
// of runtimes to 1, so a wakeup by its still-running thread skipped the other runtimes and
// the sleeper of runtime b below was never woken. The stand-in that answers for the leaked
// runtime is sealed too: wakeups and schedules from outside post nothing to its stopped
// worker (which would still run messages).
TEST(Runtime, ALeakedRuntimeStaysListedAndItsStuckThreadStillWakesOtherRuntimes) {
  auto b = test_runtime(1);
  std::atomic<bool> b_woke{false};
  auto sleeper = b->spawn([&] {
    testing::sleep_until_set(g_hog_go, "from-leaked");
    b_woke = true;
  }, {.name = "b-sleeper"});
  ASSERT_TRUE(sleeper.ok());
  const std::size_t before = listed_runtimes();
  {
    auto rt = test_runtime(1);
    EXPECT_EQ(listed_runtimes(), before + 1);
    auto hog = rt->spawn([] {
      g_hog_spinning = true;
      while (!g_hog_release.load()) {
      }
      g_hog_go = true;
      wakeup(&g_hog_go);  // from a worker of the leaked runtime, to b's sleeper
      g_hog_left = true;
      yield();  // reaches the stopped worker's idle thread, which keeps it
    }, {.name = "hog"});
    ASSERT_TRUE(hog.ok());
    while (!g_hog_spinning) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(rt->shutdown(absl::Milliseconds(10)).code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(listed_runtimes(), before + 1);  // leaked: listed for good
    static char chan;
    const std::uint64_t messages = rt->stats().messages;
    rt->wakeup(&chan);
    rt->wakeup_one(&chan);
    schedule(hog->get());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(rt->stats().messages, messages);  // the stand-in and the leaked one: sealed
    g_hog_release = true;
    while (!g_hog_left) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const absl::Time give_up = absl::Now() + absl::Seconds(10);
    while (!b_woke && absl::Now() < give_up) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_TRUE(b_woke) << "the leaked runtime's wakeup did not reach runtime b";
    hog->reset();
  }
  EXPECT_EQ(listed_runtimes(), before + 1);  // its destructor leaves it listed too
  if (!b_woke) {
    g_hog_go = true;
    b->wakeup(&g_hog_go);
  }
  sleeper->join();
}

absl::Status create_status(Runtime::Options o) {
  auto rt = Runtime::create(o);
  return rt.status();
}

TEST(Runtime, ConfigErrorsNameFieldAndValue) {
  auto check = [](Runtime::Options o, absl::StatusCode code, const std::string& text) {
    absl::Status s = create_status(o);
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_NE(s.message().find(text), std::string::npos) << s;
  };
  Runtime::Options o;
  o.workers = 0;
  check(o, absl::StatusCode::kInvalidArgument, "workers is 0");
  o = {};
  o.cpus = {0, 100000};
  check(o, absl::StatusCode::kInvalidArgument, "CPU 100000 is not a processing unit");
  o = {};
  o.cpus = {0, 0};
  check(o, absl::StatusCode::kInvalidArgument, "lists CPU 0 more than once");
  o = {};
  o.cpus = {-3};
  check(o, absl::StatusCode::kInvalidArgument, "CPU -3");
  o = {};
  o.stack_size = 4096;
  check(o, absl::StatusCode::kInvalidArgument, "stack_size 4096");
  o = {};
  o.idle_spin = absl::Seconds(-1);
  check(o, absl::StatusCode::kInvalidArgument, "idle_spin");
  o = {};
  o.thread_cache = std::size_t{1} << 30;
  check(o, absl::StatusCode::kInvalidArgument, "thread_cache");
  for (double bad : {-0.1, 1.5, std::nan("")}) {
    o = {};
    o.idle_cpu_budget = bad;
    check(o, absl::StatusCode::kInvalidArgument, "idle_cpu_budget");
  }
}

TEST(Runtime, DefaultIsOneWorkerPerPuAndReportsPlacement) {
  auto rt = Runtime::create({});
  ASSERT_TRUE(rt.ok()) << rt.status();
  const int pus = static_cast<int>(std::thread::hardware_concurrency());
  // One per PU, unless the cgroup's CPU quota is lower (topology_test covers the quota).
  const internal::cpu_quota quota = internal::process_cpu_quota();
  EXPECT_EQ((*rt)->workers(), quota.limited() ? std::min(pus, quota.cpus()) : pus)
      << quota.reason;
  std::string report = (*rt)->placement_report();
  EXPECT_NE(report.find("worker 0: PU "), std::string::npos) << report;
  EXPECT_NE(report.find("pinned"), std::string::npos) << report;
  std::string topo = (*rt)->topology_report();
  EXPECT_NE(topo.find("PU(s) usable"), std::string::npos) << topo;
  // Each worker runs on the PU the report names.
  for (const worker_info& w : (*rt)->placement()) {
    if (!w.pinned) continue;
    thread_options o;
    o.worker = w.worker;
    int cpu = -1;
    auto td = (*rt)->spawn([&cpu] { cpu = sched_getcpu(); }, o);
    ASSERT_TRUE(td.ok());
    td->join();
    if (!testing::under_qemu()) {
      EXPECT_EQ(cpu, w.pu) << "worker " << w.worker;
    }
  }
}

TEST(Runtime, ExplicitCpuListAndNoPinning) {
  Runtime::Options o;
  o.cpus = {0};
  o.workers = 3;  // three workers share PU 0
  o.pin = false;
  auto rt = Runtime::create(o);
  ASSERT_TRUE(rt.ok()) << rt.status();
  for (const worker_info& w : (*rt)->placement()) {
    EXPECT_EQ(w.pu, 0);
    EXPECT_FALSE(w.pinned);
  }
}

// Four workers on two cores: threads on every worker join threads on every other worker.
// Every worker creates children on the others and joins them: wakeups cross workers all the
// time, and none may be lost whatever the idle policy.
void cross_join(Runtime* rt) {
  std::atomic<int> count{0};
  std::vector<thread_ref> tops;
  for (int w = 0; w < 4; ++w) {
    thread_options o;
    o.worker = w;
    auto td = rt->spawn(
        [&count] {
          for (int round = 0; round < testing::scaled(200); ++round) {
            thread_options c;
            c.worker = (mycpuid() + 1 + round) % 4;
            auto child = create([&count] { count.fetch_add(1); yield(); }, c);
            ASSERT_TRUE(child.ok());
            child->join();
          }
        },
        o);
    ASSERT_TRUE(td.ok());
    tops.push_back(std::move(*td));
  }
  for (auto& t : tops) t.join();
  EXPECT_EQ(count.load(), 4 * testing::scaled(200));
  EXPECT_EQ(rt->stats().live_threads, 0);
}

TEST(Runtime, OversubscribedWorkersCrossJoin) {
  auto rt = test_runtime(4);
  cross_join(rt.get());
}

// The same with each idle policy: park at once, poll a long time, and adaptive (budgets at
// both ends of its range).
TEST(Runtime, OversubscribedWorkersCrossJoinWithEachIdlePolicy) {
  struct policy {
    absl::Duration spin;
    double budget;
  };
  for (const policy& p : {policy{absl::ZeroDuration(), 0}, policy{absl::Milliseconds(5), 0},
                          policy{absl::Milliseconds(1), 0.01}, policy{absl::Milliseconds(1), 1.0}}) {
    auto rt = Runtime::create({.workers = 4, .idle_spin = p.spin, .idle_cpu_budget = p.budget});
    ASSERT_TRUE(rt.ok()) << rt.status();
    cross_join(rt->get());
    ASSERT_TRUE((*rt)->shutdown().ok());
  }
}

// Threads still blocked at shutdown are reported by name and abandoned; their joiners wake.
TEST(Runtime, ShutdownReportsLiveThreadsByName) {
  auto rt = test_runtime(2);
  thread_options o;
  o.name = "stuck-forever";
  o.worker = 1;
  auto stuck = rt->spawn(
      [] {
        deschedule_self();
        lwkt_switch();  // nobody schedules it again
      },
      o);
  ASSERT_TRUE(stuck.ok());
  std::atomic<int> finished{0};
  auto fine = rt->spawn([&] { finished.store(1); });
  ASSERT_TRUE(fine.ok());
  fine->join();
  absl::Status s = rt->shutdown(absl::Milliseconds(50));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("'stuck-forever' (worker 1)"), std::string::npos) << s;
  EXPECT_TRUE(stuck->abandoned());
  stuck->join();  // returns: the thread was abandoned
  EXPECT_EQ(finished.load(), 1);
  // After shutdown nothing new is accepted.
  auto late = rt->spawn([] {});
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(rt->shutdown().code(), s.code());  // idempotent
}

TEST(Runtime, CleanShutdownWaitsForRunningThreads) {
  auto rt = test_runtime(2);
  std::atomic<int> done{0};
  for (int i = 0; i < 8; ++i) {
    auto td = rt->spawn([&] {
      for (int k = 0; k < 100; ++k) yield();
      done.fetch_add(1);
    });
    ASSERT_TRUE(td.ok());
  }
  EXPECT_TRUE(rt->shutdown().ok());
  EXPECT_EQ(done.load(), 8);
}

// Polls snapshot() until every named thread is in `state`.
void wait_for_states(Runtime& rt, const std::vector<std::pair<std::string, std::string>>& want) {
  for (;;) {
    auto snap = rt.snapshot();
    ASSERT_TRUE(snap.ok()) << snap.status();
    std::size_t found = 0;
    for (const auto& w : snap->workers) {
      for (const auto& t : w.threads) {
        for (const auto& [name, state] : want) found += t.name == name && t.state == state;
      }
    }
    if (found == want.size()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// Regression (review): wakeup (lwkt::wakeup and Runtime::wakeup_one), interrupt and schedule
// from an OS thread outside the runtime were no-ops as soon as shutdown began, so threads waiting for them, which the grace period
// exists to let finish, were abandoned. They are accepted until the grace period ends.
TEST(Runtime, OutsideWakeupsInterruptsAndSchedulesWorkDuringTheGracePeriod) {
  auto rt = test_runtime(2);
  static char chan;
  std::atomic<bool> woken{false}, scheduled{false};
  std::atomic<int> finished{0}, intr_error{0};
  auto sleeper = rt->spawn([&] {
    while (!woken.load()) (void)tsleep(&chan, 0, "outside");  // no timeout, no PCATCH
    finished.fetch_add(1);
  }, {.name = "sleeper", .worker = 0});
  static char chan_one;  // woken by Runtime::wakeup_one from outside
  auto one_sleeper = rt->spawn([&] {
    while (!woken.load()) (void)tsleep(&chan_one, 0, "outside-one");
    finished.fetch_add(1);
  }, {.name = "one-sleeper", .worker = 1});
  auto catcher = rt->spawn([&] {
    char mine;
    int e;
    while ((e = tsleep(&mine, PCATCH, "intr")) == 0) {}  // only an interrupt ends it
    intr_error = e;
    finished.fetch_add(1);
  }, {.name = "catcher", .worker = 1});
  auto blocked = rt->spawn([&] {
    testing::block_until(scheduled);
    finished.fetch_add(1);
  }, {.name = "blocked", .worker = 1});
  ASSERT_TRUE(sleeper.ok() && one_sleeper.ok() && catcher.ok() && blocked.ok());
  wait_for_states(*rt, {{"sleeper", "sleep"}, {"one-sleeper", "sleep"}, {"catcher", "sleep"},
                        {"blocked", "blocked"}});
  absl::Status st;
  std::thread stopper([&] { st = rt->shutdown(absl::Seconds(5)); });
  // Until shutdown has begun (new work is refused from then on).
  while (rt->snapshot().ok()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  woken = true;
  wakeup(&chan);
  rt->wakeup_one(&chan_one);
  interrupt(catcher->get());
  scheduled = true;
  schedule(blocked->get());
  stopper.join();
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(finished.load(), 4);
  EXPECT_EQ(intr_error.load(), EINTR);
  // After the grace period these are no-ops, not crashes.
  wakeup(&chan);
  rt->wakeup(&chan);
}

// sched.h: from outside the runtime, deschedule keeps working through shutdown's grace
// period (it was refused once shutdown began, with wakeups and schedules). A thread queued
// behind a busier, better one is taken off the queue from outside during the grace period:
// when the better one exits, it must not run until it is scheduled again.
TEST(Runtime, OutsideDescheduleWorksDuringTheGracePeriod) {
  auto rt = test_runtime(2);
  std::atomic<int> runs{0};
  std::atomic<bool> hog_stop{false};
  auto queued = rt->spawn([&] {
    runs.fetch_add(1);
    testing::block_self();  // scheduled again below, then descheduled from outside
    runs.fetch_add(1);
  }, {.name = "queued", .worker = 1});
  ASSERT_TRUE(queued.ok());
  wait_for_states(*rt, {{"queued", "blocked"}});
  auto hog = rt->spawn([&] {
    while (!hog_stop.load()) yield();  // a switch point each pass: messages run
  }, {.name = "better", .pri = TDPRI_KERN_DAEMON + 2, .worker = 1});
  ASSERT_TRUE(hog.ok());
  wait_for_states(*rt, {{"better", "run"}});
  schedule(queued->get());  // behind the better thread: stays on the queue
  wait_for_states(*rt, {{"queued", "runq"}});
  absl::Status st;
  std::thread stopper([&] { st = rt->shutdown(absl::Seconds(5)); });
  while (rt->snapshot().ok()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  deschedule(queued->get());
  // The deschedule is a message the better thread's next yield runs; give it time, then let
  // the better thread go: the queued one must stay off the queue.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  hog_stop = true;
  hog->join();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(runs.load(), 1) << "the descheduled thread ran";
  schedule(queued->get());  // also from outside, in the grace period
  stopper.join();
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(runs.load(), 2);
}

}  // namespace
}  // namespace lwkt
