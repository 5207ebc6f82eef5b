// fork: a child forked from a process running a Runtime cannot use it (its workers were not
// copied). Each entry point that would wait for a worker aborts in the child, naming the
// call; the destructor skips teardown; the parent's runtime is unaffected; the child may
// create a runtime of its own. Each test forks by hand and reads the child's stderr through
// a pipe (gtest's death tests would re-run the test in a fresh process without the runtime).
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>

#include "lwkt/runtime.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "lwkt/testing.h"

namespace lwkt {
namespace {

constexpr char kMessageTail[] =
    " called in a child forked from a process running an lwkt runtime; the runtime cannot be "
    "used after fork";

struct child_result {
  bool hung = false;     // still running at the deadline (killed)
  int status = 0;        // waitpid status
  std::string err;       // everything it wrote to fd 2
  bool aborted() const { return !hung && WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT; }
  bool exited_ok() const { return !hung && WIFEXITED(status) && WEXITSTATUS(status) == 0; }
};

std::ostream& operator<<(std::ostream& os, const child_result& r) {
  os << (r.hung ? "hung" : "finished") << ", status 0x" << std::hex << r.status << std::dec;
  if (!r.hung && WIFSIGNALED(r.status)) os << " (signal " << WTERMSIG(r.status) << ")";
  if (!r.hung && WIFEXITED(r.status)) os << " (exit " << WEXITSTATUS(r.status) << ")";
  return os << ", stderr: \"" << r.err << "\"";
}

// Forks; the child runs `body` with fd 2 on a pipe, then _exit(0). The parent collects its
// stderr and status, killing it if it has not finished by the deadline.
child_result run_in_child(const std::function<void()>& body) {
  child_result r;
  int fds[2];
  if (pipe(fds) != 0) {
    ADD_FAILURE() << "pipe failed";
    return r;
  }
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    ADD_FAILURE() << "fork failed";
    return r;
  }
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], 2);
    close(fds[1]);
    body();
    _exit(0);
  }
  close(fds[1]);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(testing::under_qemu() ? 120 : 30);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      r.hung = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    const int n = poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    char buf[512];
    const ssize_t got = read(fds[0], buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // EOF: the child has exited (or closed fd 2)
    r.err.append(buf, static_cast<std::size_t>(got));
  }
  close(fds[0]);
  if (r.hung) kill(pid, SIGKILL);
  while (waitpid(pid, &r.status, 0) < 0 && errno == EINTR) {
  }
  return r;
}

void expect_abort_naming(const child_result& r, const std::string& call) {
  EXPECT_TRUE(r.aborted()) << r;
  EXPECT_NE(r.err.find("lwkt: " + call + kMessageTail), std::string::npos) << r;
}

TEST(Fork, SpawnInChildAborts) {
  auto rt = testing::test_runtime(1);
  ASSERT_NE(rt, nullptr);
  child_result r = run_in_child([&] { (void)rt->spawn([] {}); });
  expect_abort_naming(r, "Runtime::spawn");
  r = run_in_child([&] { (void)rt->spawn([](void*) {}, nullptr); });
  expect_abort_naming(r, "Runtime::spawn");
  // The parent's runtime is unaffected.
  std::atomic<bool> ran{false};
  testing::run_on(*rt, [&] { ran = true; });
  EXPECT_TRUE(ran);
  EXPECT_TRUE(rt->shutdown().ok());
}

TEST(Fork, SnapshotWakeupShutdownInChildAbort) {
  auto rt = testing::test_runtime(2);
  ASSERT_NE(rt, nullptr);
  int chan = 0;
  expect_abort_naming(run_in_child([&] { (void)rt->snapshot(); }), "Runtime::snapshot");
  expect_abort_naming(run_in_child([&] { rt->wakeup(&chan); }), "Runtime::wakeup");
  expect_abort_naming(run_in_child([&] { (void)rt->shutdown(); }), "Runtime::shutdown");
  auto snap = rt->snapshot();
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(snap->workers.size(), 2u);
}

TEST(Fork, JoinOfALiveThreadInChildAborts) {
  auto rt = testing::test_runtime(1);
  ASSERT_NE(rt, nullptr);
  std::atomic<bool> go{false};
  auto td = rt->spawn([&] { testing::block_until(go); }, {.name = "blocked"});
  ASSERT_TRUE(td.ok()) << td.status();
  expect_abort_naming(run_in_child([&] { td->join(); }), "thread_ref::join");
  go = true;
  schedule(td->get());
  td->join();
  // Joining a thread that had exited before the fork returns at once, as in the parent.
  child_result r = run_in_child([&] {
    td->join();
    std::fputs("joined\n", stderr);
  });
  EXPECT_TRUE(r.exited_ok()) << r;
  EXPECT_EQ(r.err, "joined\n");
}

TEST(Fork, DestructorInChildSkipsTeardownWithoutHanging) {
  auto rt = testing::test_runtime(2);
  ASSERT_NE(rt, nullptr);
  std::atomic<bool> go{false};
  auto td = rt->spawn([&] { testing::block_until(go); }, {.name = "blocked"});
  ASSERT_TRUE(td.ok()) << td.status();
  child_result r = run_in_child([&] {
    td->reset();
    rt.reset();  // ~Runtime with live workers (in the parent) and a live thread
    std::fputs("destroyed\n", stderr);
  });
  EXPECT_TRUE(r.exited_ok()) << r;
  EXPECT_EQ(r.err, "destroyed\n");
  go = true;
  schedule(td->get());
  td->join();
}

TEST(Fork, RuntimeShutDownBeforeForkMayBeShutDownAndDestroyedInChild) {
  auto rt = testing::test_runtime(1);
  ASSERT_NE(rt, nullptr);
  ASSERT_TRUE(rt->shutdown().ok());
  child_result r = run_in_child([&] {
    std::fputs(rt->shutdown().ok() ? "ok\n" : "not ok\n", stderr);
    rt.reset();
  });
  EXPECT_TRUE(r.exited_ok()) << r;
  EXPECT_EQ(r.err, "ok\n");
  // Other uses still abort: the message is clearer than "shutting down".
  expect_abort_naming(run_in_child([&] { (void)rt->spawn([] {}); }), "Runtime::spawn");
}

TEST(Fork, ChildMayCreateItsOwnRuntime) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "ThreadSanitizer does not support starting threads after a multithreaded fork";
#endif
  auto rt = testing::test_runtime(1);
  ASSERT_NE(rt, nullptr);
  child_result r = run_in_child([] {
    auto own = Runtime::create({.workers = 1});
    if (!own.ok()) {
      std::fputs("create failed\n", stderr);
      _exit(1);
    }
    std::atomic<bool> ran{false};
    auto td = (*own)->spawn([&] { ran = true; });
    if (!td.ok()) _exit(2);
    td->join();
    auto snap = (*own)->snapshot();
    if (!snap.ok()) _exit(3);
    std::fputs(ran && (*own)->shutdown().ok() ? "own runtime ok\n" : "own runtime failed\n",
               stderr);
  });
  EXPECT_TRUE(r.exited_ok()) << r;
  EXPECT_EQ(r.err, "own runtime ok\n");
  // ... and a grandchild cannot use the child's runtime either.
  r = run_in_child([] {
    auto own = Runtime::create({.workers = 1});
    if (!own.ok()) _exit(1);
    child_result g = run_in_child([&] { (void)(*own)->spawn([] {}); });
    const bool ok = g.aborted() && g.err.find(std::string("lwkt: Runtime::spawn") +
                                              kMessageTail) != std::string::npos;
    std::fputs(ok ? "grandchild aborted\n" : "grandchild did not abort\n", stderr);
  });
  EXPECT_TRUE(r.exited_ok()) << r;
  EXPECT_EQ(r.err, "grandchild aborted\n");
}

// Regression (review): an OS thread of the parent that was waking sleepers from outside
// (which walks the runtime list under its lock) when another forked left the lock held in
// the child, where no thread would ever release it: the child's first Runtime hung. The
// lock is now held across fork (pthread_atfork) and released on both sides.
TEST(Fork, AChildForkedDuringWakeupsFromOutsideCanCreateARuntime) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "ThreadSanitizer does not support starting threads after a multithreaded fork";
#endif
  auto rt = testing::test_runtime(1);
  ASSERT_NE(rt, nullptr);
  static char chan;
  std::atomic<bool> stop{false};
  std::thread waker([&] {
    while (!stop.load(std::memory_order_relaxed)) wakeup(&chan);
  });
  const int forks = testing::under_qemu() ? 10 : 100;
  for (int i = 0; i < forks; ++i) {
    child_result r = run_in_child([] {
      auto own = Runtime::create({.workers = 1});
      std::fputs(own.ok() ? "created\n" : "create failed\n", stderr);
    });
    if (!r.exited_ok() || r.err != "created\n") {
      ADD_FAILURE() << "fork " << i << ": " << r;
      break;  // the waker is joined below either way
    }
  }
  stop = true;
  waker.join();
}

// The parent's runtime took SIGUSR1 (Options::ps_signal) and SIGURG (the stall detector's
// signal); a forked child has no monitor to serve them, so it gets back the dispositions from
// before the runtime took them, and its ps signal is not swallowed.
TEST(Fork, ChildGetsBackTheSignalDispositionsTheRuntimeTook) {
  struct sigaction before_usr1, before_urg;
  ASSERT_EQ(sigaction(SIGUSR1, nullptr, &before_usr1), 0);
  ASSERT_EQ(sigaction(SIGURG, nullptr, &before_urg), 0);
  auto rt = Runtime::create({.workers = 1, .ps_signal = SIGUSR1});
  ASSERT_TRUE(rt.ok()) << rt.status();
  struct sigaction now;
  ASSERT_EQ(sigaction(SIGUSR1, nullptr, &now), 0);
  ASSERT_NE(now.sa_handler, before_usr1.sa_handler) << "the runtime's handler is installed";
  child_result r = run_in_child([&] {
    struct sigaction usr1, urg;
    sigaction(SIGUSR1, nullptr, &usr1);
    sigaction(SIGURG, nullptr, &urg);
    std::fputs(usr1.sa_handler == before_usr1.sa_handler && urg.sa_handler == before_urg.sa_handler
                   ? "restored\n"
                   : "still the runtime's\n",
               stderr);
  });
  EXPECT_TRUE(r.exited_ok()) << r;
  EXPECT_EQ(r.err, "restored\n");
  ASSERT_TRUE((*rt)->shutdown().ok());
}

}  // namespace
}  // namespace lwkt
