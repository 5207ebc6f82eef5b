// The stall detector (Runtime::Options::stall_budget, stall_signal) and the ps dump on a
// signal (Options::ps_signal), from runtime.h's contract: a thread that runs past the budget
// without a switch point is reported once per stall, by worker, name and backtrace, and
// counted in stats().stalls; nothing else is reported; a signal not sent by the watchdog
// reaches the handler installed before; dispositions are restored at shutdown.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <chrono>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "lwkt/runtime.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"

namespace lwkt {
namespace {

using Clock = std::chrono::steady_clock;

#if defined(__SANITIZE_THREAD__)
constexpr bool kTsan = true;
#else
constexpr bool kTsan = false;
#endif

// Redirects fd 2 into a file while alive; text() reads what was written so far.
class stderr_capture {
 public:
  stderr_capture() {
    std::fflush(stderr);
    _path = ::testing::TempDir() + "/stall_test_stderr_XXXXXX";
    _fd = mkstemp(_path.data());
    _saved = dup(2);
    dup2(_fd, 2);
  }
  ~stderr_capture() { restore(); }
  void restore() {
    if (_saved < 0) return;
    std::fflush(stderr);
    dup2(_saved, 2);
    close(_saved);
    close(_fd);
    _saved = -1;
  }
  std::string text() const {
    std::ifstream in(_path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  std::string _path;
  int _fd = -1;
  int _saved = -1;
};

int count(const std::string& hay, const std::string& needle) {
  int n = 0;
  for (std::size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) ++n;
  return n;
}

constexpr auto kStall = std::chrono::milliseconds(60);

// The three ways a thread stalls its worker. noinline and extern-visible names: each must
// appear in the backtrace of its stall.
// CPU time of the calling OS thread: the detector counts what the thread ran, not time the
// machine (loaded by parallel tests) kept it waiting for a CPU.
std::chrono::nanoseconds os_thread_cpu() {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

// Each stall lasts until the detector has reported it (Runtime::stats().stalls grew; at
// most 10 s) and then kStall more, so that the backtrace signal finds it still stalled. A
// stall of a fixed length could end before the watchdog, starved of CPU by parallel tests
// on a 2-core machine, sampled it twice (the flake this replaced: 1 run in ~60 missed the
// usleep stall).
const Runtime* g_rt = nullptr;
std::uint64_t g_stalls_before = 0;
bool reported() {
  return g_rt->stats().stalls > g_stalls_before;  // stats() has no switch point
}
template <typename Now>
void stall_until_reported(Now now, void (*step)()) {
  const auto give_up = Clock::now() + std::chrono::seconds(10);
  const auto start = now();
  while ((!reported() || now() < start + kStall) && Clock::now() < give_up) step();
  const auto more = now() + kStall;
  while (now() < more) step();
}

__attribute__((noinline)) void stall_busy_loop() {
  stall_until_reported(os_thread_cpu, [] {});
  asm volatile("" ::: "memory");
}

// A stall of fixed length (60 ms of CPU), for the tests that expect no report.
__attribute__((noinline)) void stall_busy_60ms() {
  const auto end = os_thread_cpu() + kStall;
  while (os_thread_cpu() < end) {
  }
  asm volatile("" ::: "memory");
}

__attribute__((noinline)) void stall_in_usleep() {
  // The backtrace signal cuts usleep short (EINTR): sleep on, still without a switch point,
  // so that it stays one stall.
  stall_until_reported(Clock::now, [] { usleep(5000); });
  asm volatile("" ::: "memory");
}

std::mutex g_os_mutex;
__attribute__((noinline)) void stall_on_std_mutex() {
  std::lock_guard<std::mutex> l(g_os_mutex);
  asm volatile("" ::: "memory");
}

std::unique_ptr<Runtime> make(Runtime::Options o) {
  o.workers = 2;
  auto rt = Runtime::create(o);
  EXPECT_TRUE(rt.ok()) << rt.status();
  return rt.ok() ? std::move(*rt) : nullptr;
}

// Runs fn as an lwkt thread on worker 0 and waits for it.
void run_on_worker0(Runtime& rt, const char* name, std::function<void()> fn) {
  g_rt = &rt;
  g_stalls_before = rt.stats().stalls;
  auto td = rt.spawn([fn] { fn(); }, {.name = name, .worker = 0});
  ASSERT_TRUE(td.ok()) << td.status();
  td->join();
}

TEST(Stall, EachStallIsReportedOnceByNameWithItsBacktraceAndNothingElse) {
  stderr_capture cap;
  auto rt = make({});
  ASSERT_TRUE(rt);
  // Well-behaved threads on worker 1 all along: yielding, sleeping, blocking in joins.
  std::atomic<bool> stop{false};
  auto yielder = rt->spawn(
      [&] {
        while (!stop.load()) yield();
      },
      {.name = "good-yielder", .worker = 1});
  ASSERT_TRUE(yielder.ok());
  auto sleeper = rt->spawn(
      [&] {
        int dummy;
        while (!stop.load()) (void)tsleep(&dummy, 0, "nap", absl::Milliseconds(2));
      },
      {.name = "good-sleeper", .worker = 1});
  ASSERT_TRUE(sleeper.ok());

  run_on_worker0(*rt, "stall-busy", stall_busy_loop);
  run_on_worker0(*rt, "stall-usleep", stall_in_usleep);
  {
    std::unique_lock<std::mutex> l(g_os_mutex);
    g_stalls_before = rt->stats().stalls;
    auto td = rt->spawn([] { stall_on_std_mutex(); }, {.name = "stall-mutex", .worker = 0});
    ASSERT_TRUE(td.ok());
    stall_until_reported(Clock::now, [] { std::this_thread::sleep_for(kStall / 10); });
    l.unlock();
    td->join();
  }
  // A thread that yields often never stalls, however long it runs.
  run_on_worker0(*rt, "long-but-yielding", [] {
    const auto end = Clock::now() + 3 * kStall;
    while (Clock::now() < end) yield();
  });
  stop.store(true);
  yielder->join();
  sleeper->join();
  // The backtrace lines are written by the worker once it takes the signal: let them land.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const runtime_stats st = rt->stats();
  ASSERT_TRUE(rt->shutdown().ok());
  cap.restore();
  const std::string out = cap.text();
  SCOPED_TRACE(out);
  if (std::getenv("STALL_TEST_PRINT")) std::fputs(out.c_str(), stdout);

  EXPECT_EQ(st.stalls, 3u);
  EXPECT_EQ(count(out, "lwkt: stall: worker 0 has run one lwkt thread for at least"), 3);
  EXPECT_EQ(count(out, "lwkt: stall: worker 1"), 0);
  EXPECT_EQ(count(out, "long-but-yielding"), 0);
  EXPECT_EQ(count(out, "good-"), 0);
  // Each stall's name and stack, from the worker. Under TSan the handler runs only at the
  // thread's next intercepted call, which may be after its stall: then it says so instead.
  struct expect_bt {
    const char* thread;
    const char* function;
  };
  for (const expect_bt& e : {expect_bt{"stall-busy", "stall_busy_loop"},
                             expect_bt{"stall-usleep", "stall_in_usleep"},
                             expect_bt{"stall-mutex", "stall_on_std_mutex"}}) {
    const std::string head = std::string("thread '") + e.thread + "' has run for at least";
    const std::size_t at = out.find(head);
    if (kTsan && at == std::string::npos) continue;
    ASSERT_NE(at, std::string::npos) << e.thread;
    const std::size_t end = out.find("lwkt: end of the stall backtrace of worker 0", at);
    ASSERT_NE(end, std::string::npos) << e.thread;
    const std::string bt = out.substr(at, end - at);
    EXPECT_NE(bt.find("lwkt:   #2 0x"), std::string::npos) << "at least 3 frames:\n" << bt;
    // qemu-user runs the aarch64 build with /proc/self/maps of its own making, where
    // absl::Symbolize finds no symbols (frames print as ??); the frames are still there.
    if (std::getenv("LWKT_UNDER_QEMU") == nullptr) {
      EXPECT_NE(bt.find(e.function), std::string::npos) << e.thread << "'s backtrace:\n" << bt;
    }
  }
  const int taken = count(out, "has run for at least");
  const int ended = count(out, "ended before its backtrace was taken");
  EXPECT_EQ(taken + ended, 3);
  if (!kTsan) {
    EXPECT_EQ(ended, 0);
  }
}

TEST(Stall, ZeroBudgetTurnsItOff) {
  stderr_capture cap;
  auto rt = make({.stall_budget = absl::ZeroDuration()});
  ASSERT_TRUE(rt);
  run_on_worker0(*rt, "stall-busy", stall_busy_60ms);
  EXPECT_EQ(rt->stats().stalls, 0u);
  ASSERT_TRUE(rt->shutdown().ok());
  cap.restore();
  EXPECT_EQ(count(cap.text(), "lwkt: stall"), 0) << cap.text();
}

TEST(Stall, StallSignalZeroReportsWithoutABacktrace) {
  stderr_capture cap;
  auto rt = make({.stall_signal = 0});
  ASSERT_TRUE(rt);
  run_on_worker0(*rt, "stall-busy", stall_busy_loop);
  EXPECT_EQ(rt->stats().stalls, 1u);
  ASSERT_TRUE(rt->shutdown().ok());
  cap.restore();
  const std::string out = cap.text();
  EXPECT_EQ(count(out, "lwkt: stall: worker 0"), 1) << out;
  EXPECT_EQ(count(out, "no backtrace (Options::stall_signal is 0)"), 1) << out;
  EXPECT_EQ(count(out, "its stack"), 0) << out;
}

TEST(Stall, AShorterBudgetCatchesAShorterStall) {
  // 60 ms of busy loop: reported with a 20 ms budget, not with a 1 s one.
  for (const auto& [budget, want] : {std::pair{absl::Milliseconds(20), 1u},
                                     std::pair{absl::Seconds(1), 0u}}) {
    stderr_capture cap;
    auto rt = make({.stall_budget = budget});
    ASSERT_TRUE(rt);
    run_on_worker0(*rt, "stall-busy", stall_busy_60ms);
    EXPECT_EQ(rt->stats().stalls, want) << budget;
    ASSERT_TRUE(rt->shutdown().ok());
  }
}

std::atomic<int> g_user_urg{0};
void user_urg_handler(int) { g_user_urg.fetch_add(1); }

TEST(Stall, ASignalTheWatchdogDidNotSendReachesThePreviousHandlerWhichShutdownRestores) {
  struct sigaction user, old;
  std::memset(&user, 0, sizeof user);
  user.sa_handler = user_urg_handler;
  sigemptyset(&user.sa_mask);
  ASSERT_EQ(sigaction(SIGURG, &user, &old), 0);
  auto rt = make({});
  ASSERT_TRUE(rt);
  struct sigaction now;
  ASSERT_EQ(sigaction(SIGURG, nullptr, &now), 0);
  EXPECT_NE(now.sa_handler, user_urg_handler) << "the runtime's handler is installed";
  // SIGURG to a worker (from its own lwkt thread) and to the main thread.
  run_on_worker0(*rt, "urg-self", [] { pthread_kill(pthread_self(), SIGURG); });
  pthread_kill(pthread_self(), SIGURG);
  for (int i = 0; i < 1000 && g_user_urg.load() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(g_user_urg.load(), 2);
  EXPECT_EQ(rt->stats().stalls, 0u);
  ASSERT_TRUE(rt->shutdown().ok());
  ASSERT_EQ(sigaction(SIGURG, nullptr, &now), 0);
  EXPECT_EQ(now.sa_handler, user_urg_handler) << "shutdown restores the previous handler";
  sigaction(SIGURG, &old, nullptr);
}

TEST(Stall, BadOptionsAreRefusedNamingTheField) {
  struct bad {
    Runtime::Options o;
    const char* field;
  };
  for (const bad& b : {bad{{.stall_budget = absl::Milliseconds(-1)}, "stall_budget"},
                       bad{{.stall_budget = absl::Microseconds(500)}, "stall_budget"},
                       bad{{.stall_signal = SIGKILL}, "stall_signal"},
                       bad{{.stall_signal = SIGSEGV}, "stall_signal"},
                       bad{{.stall_signal = 1000}, "stall_signal"},
                       bad{{.ps_signal = SIGSTOP}, "ps_signal"},
                       bad{{.ps_signal = -3}, "ps_signal"},
                       bad{{.stall_signal = SIGUSR2, .ps_signal = SIGUSR2}, "ps_signal"}}) {
    auto rt = Runtime::create(b.o);
    ASSERT_FALSE(rt.ok()) << b.field;
    EXPECT_EQ(rt.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(rt.status().message().find(b.field), absl::string_view::npos) << rt.status();
  }
}

TEST(PsSignal, TheSignalPrintsTheListingWithoutStoppingTheProcessAndShutdownRestoresIt) {
  struct sigaction before;
  ASSERT_EQ(sigaction(SIGUSR1, nullptr, &before), 0);
  stderr_capture cap;
  auto rt = make({.ps_signal = SIGUSR1});
  ASSERT_TRUE(rt);
  int chan;
  std::atomic<bool> stop{false};
  auto td = rt->spawn(
      [&] {
        while (!stop.load()) (void)tsleep(&chan, 0, "ps-wchan", absl::Milliseconds(5));
      },
      {.name = "ps-visible", .worker = 1});
  ASSERT_TRUE(td.ok());
  for (int round = 1; round <= 2; ++round) {  // twice: each signal is one listing
    ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
    std::string out;
    for (int i = 0; i < 10000; ++i) {
      out = cap.text();
      if (count(out, "ps-visible") >= round) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_EQ(count(out, "lwkt: ps (signal "), round) << out;
    EXPECT_EQ(count(out, "ps-visible"), round) << out;
  }
  stop.store(true);
  td->join();
  ASSERT_TRUE(rt->shutdown().ok());
  cap.restore();
  struct sigaction after;
  ASSERT_EQ(sigaction(SIGUSR1, nullptr, &after), 0);
  EXPECT_EQ(after.sa_handler, before.sa_handler) << "shutdown restores SIGUSR1's disposition";
}

// Shutdown while the monitor is blocked writing a ps dump to a stderr nobody reads yet: it
// must wait for the monitor (which still uses the runtime's globaldata) rather than give up
// on it after a while and free what the monitor reads next. Before the fix (detach after
// 2 s) the monitor read freed globaldata once stderr drained: caught by ASan.
TEST(PsSignal, ShutdownWaitsForAMonitorBlockedOnStderr) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  std::fflush(stderr);
  const int saved = dup(2);
  dup2(fds[1], 2);
  // Fill the pipe, so that the dump's write blocks.
  fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK);
  const std::string chunk(4096, 'x');
  while (write(fds[1], chunk.data(), chunk.size()) > 0) {
  }
  fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) & ~O_NONBLOCK);
  auto rt = make({.ps_signal = SIGUSR2});
  ASSERT_TRUE(rt);
  ASSERT_EQ(kill(getpid(), SIGUSR2), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the dump is writing
  std::atomic<bool> done{false};
  std::thread shut([&] {
    EXPECT_TRUE(rt->shutdown().ok());
    rt.reset();  // frees the globaldata
    done.store(true);
  });
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const bool returned_while_blocked = done.load();
  // Drain until shutdown has returned.
  char buf[65536];
  fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  while (!done.load()) {
    if (read(fds[0], buf, sizeof buf) <= 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  shut.join();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // a detached monitor would run now
  while (read(fds[0], buf, sizeof buf) > 0) {
  }
  dup2(saved, 2);
  close(saved);
  close(fds[0]);
  close(fds[1]);
  EXPECT_FALSE(returned_while_blocked) << "shutdown returned while the monitor was still writing";
}

}  // namespace
}  // namespace lwkt
