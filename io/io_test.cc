// io.h's contract, call by call: results, deadlines, interruption, files, readiness, the
// worker staying busy while a thread waits, overflowing both ring queues, backend choice
// and its named causes, misuse, and no descriptor left behind.
#include "io/io.h"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <pthread.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "io/test_util.h"
#include "io/testing.h"
#include "lwkt/internal/io_hook.h"
#include "lwkt/ipi.h"
#include "lwkt/runtime.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "lwkt/testing.h"
#include "lwkt/thread.h"

namespace lwkt::io {
namespace {

using lwkt::testing::run_on;
using lwkt::testing::test_runtime;
using test_util::open_fds;
using test_util::test_backend;


Runtime::Options io_opts(Runtime::Options o = {}) {
  o.io = test_backend();
  return o;
}

// Under qemu-user (no io_uring system calls) the io_uring runs skip, saying so; the epoll
// runs cover that configuration.
bool have_io_uring() {
  auto rt = Runtime::create({.workers = 1, .io = io_backend::io_uring});
  return rt.ok();
}

#define REQUIRE_BACKEND()                                                                 \
  do {                                                                                    \
    if (test_backend() == io_backend::io_uring && !have_io_uring()) {                     \
      GTEST_SKIP() << "io_uring unavailable here (qemu-user?); the epoll run covers this"; \
    }                                                                                     \
  } while (0)

// Tests of io_uring's own mechanisms (its queues, batching).
#define REQUIRE_URING()                                                                 \
  do {                                                                                  \
    if (test_backend() != io_backend::io_uring) GTEST_SKIP() << "io_uring-specific";    \
    REQUIRE_BACKEND();                                                                  \
  } while (0)

// A worker's first operation creates its ring (or epoll instance): this one completes at
// once (POLLOUT on an empty pipe).
void give_ring(Runtime& rt, int worker) {
  run_on(rt, [] {
    int q[2];
    ASSERT_EQ(pipe(q), 0);
    EXPECT_TRUE(poll(q[1], POLLOUT).ok());
    ::close(q[0]);
    ::close(q[1]);
  }, worker);
}

TEST(Io, ResultCarriesValueOrErrno) {
  constexpr result ok = result::from_res(42);
  constexpr result bad = result::from_res(-ECONNRESET);
  static_assert(ok.ok() && ok.value() == 42 && ok.error() == 0);
  static_assert(!bad.ok() && bad.value() == 0 && bad.error() == ECONNRESET);
  EXPECT_EQ(ok.to_string(), "42");
  EXPECT_TRUE(absl::StrContains(bad.to_string(), "ECONNRESET")) << bad.to_string();
}

TEST(Io, PlacementReportNamesTheBackend) {
  REQUIRE_BACKEND();
  auto rt = test_runtime(2, io_opts());
  const std::string r = rt->placement_report();
  EXPECT_TRUE(absl::StrContains(
      r, test_backend() == io_backend::epoll ? "io: epoll, one instance per worker" : "io: io_uring, one ring per worker")) << r;
  auto off = test_runtime(1, {.io = io_backend::off});
  EXPECT_TRUE(absl::StrContains(off->placement_report(), "io: off")) << off->placement_report();
}

TEST(Io, OffMeansEnosys) {
  auto rt = test_runtime(1, {.io = io_backend::off});
  run_on(*rt, [] {
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    char c;
    EXPECT_EQ(read(p[0], &c, 1, -1).error(), ENOSYS);
    ::close(p[0]);
    ::close(p[1]);
  });
}

// Each cause io_uring_setup can give is named; `automatic` falls back, `io_uring` refuses.
TEST(Io, UnavailableIoUringIsNamed) {
  struct { int err; const char* says; } cases[] = {
      {EPERM, "EPERM"}, {ENOSYS, "ENOSYS: this kernel has no io_uring"},
      {ENOMEM, "RLIMIT_MEMLOCK"}, {EINVAL, "EINVAL"}};
  for (const auto& c : cases) {
    testing::inject_setup_error(c.err);
    auto req = Runtime::create({.workers = 1, .io = io_backend::io_uring});
    ASSERT_FALSE(req.ok());
    EXPECT_EQ(req.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_TRUE(absl::StrContains(req.status().message(), c.says)) << req.status();
    auto aut = Runtime::create({.workers = 1, .io = io_backend::automatic});
    ASSERT_TRUE(aut.ok()) << aut.status();
    const std::string r = (*aut)->placement_report();
    EXPECT_TRUE(absl::StrContains(r, "io: epoll, one instance per worker (automatic: io_uring "
                                     "unavailable")) << r;
    EXPECT_TRUE(absl::StrContains(r, c.says)) << r;
    run_on(**aut, [] {  // and the epoll backend works
      int sv[2];
      ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
      EXPECT_EQ(send(sv[1], "e", 1).value(), 1);
      char c = 0;
      EXPECT_EQ(recv(sv[0], &c, 1).value(), 1);
      EXPECT_EQ(c, 'e');
      ::close(sv[0]);
      ::close(sv[1]);
    });
    // epoll needs no probe: an explicit epoll runtime never mentions io_uring.
    auto ep = Runtime::create({.workers = 1, .io = io_backend::epoll});
    ASSERT_TRUE(ep.ok());
    EXPECT_TRUE(absl::StrContains((*ep)->placement_report(), "io: epoll")) << (*ep)->placement_report();
  }
  testing::inject_setup_error(0);
}

TEST(Io, FileReadWriteAtOffsets) {
  REQUIRE_BACKEND();
  auto rt = test_runtime(2, io_opts());
  char path[] = "/tmp/lwkt_io_test_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  unlink(path);
  run_on(*rt, [fd] {
    std::string a(5000, 'a'), b(3000, 'b');
    ASSERT_EQ(write(fd, a.data(), a.size(), 0).value(), 5000);
    ASSERT_EQ(write(fd, b.data(), b.size(), 10000).value(), 3000);
    std::vector<char> buf(13000, 'x');
    ASSERT_EQ(read(fd, buf.data(), buf.size(), 0).value(), 13000);
    EXPECT_EQ(std::string(buf.data(), 5000), a);
    EXPECT_EQ(std::string(buf.data() + 5000, 5000), std::string(5000, '\0'));  // the hole
    EXPECT_EQ(std::string(buf.data() + 10000, 3000), b);
    EXPECT_EQ(read(fd, buf.data(), 100, 13000).value(), 0);  // end of file
    // -1: the file position, which advances.
    ASSERT_EQ(lseek(fd, 4998, SEEK_SET), 4998);
    char two[4] = {};
    ASSERT_EQ(read(fd, two, 2, -1).value(), 2);
    EXPECT_EQ(std::string(two, 2), "aa");
    EXPECT_EQ(lseek(fd, 0, SEEK_CUR), 5000);
    EXPECT_EQ(read(-1, two, 1, 0).error(), EBADF);
  });
  ::close(fd);
}

// The calling thread sleeps; its worker runs other threads meanwhile.
TEST(Io, WorkerRunsOthersWhileAThreadWaits) {
  REQUIRE_BACKEND();
  auto rt = test_runtime(1, io_opts());
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  std::atomic<int> spins{0};
  run_on(*rt, [&] {
    std::atomic<bool> got{false};
    auto reader = create([&] {
      char c = 0;
      result r = read(p[0], &c, 1, -1);
      EXPECT_EQ(r.value(), 1);
      EXPECT_EQ(c, 'z');
      got = true;
    }, {.name = "reader"});
    // Same worker: this thread keeps running while the reader waits.
    for (int i = 0; i < 1000; ++i) {
      ++spins;
      yield();
    }
    EXPECT_FALSE(got.load());
    ASSERT_EQ(::write(p[1], "z", 1), 1);
    reader->join();
    EXPECT_TRUE(got.load());
  });
  EXPECT_EQ(spins.load(), 1000);
  ::close(p[0]);
  ::close(p[1]);
}

TEST(Io, DeadlineFiresAndNeverEarly) {
  REQUIRE_BACKEND();
  auto rt = test_runtime(2, io_opts());
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  run_on(*rt, [&] {
    for (absl::Duration d : {absl::Milliseconds(1), absl::Milliseconds(15)}) {
      char c;
      const absl::Time start = absl::Now();
      const absl::Time deadline = start + d;
      result r = recv(sv[0], &c, 1, 0, deadline);
      EXPECT_EQ(r.error(), ETIMEDOUT) << r.to_string();
      EXPECT_GE(absl::Now(), deadline);
    }
    // A deadline already past: not started.
    char c;
    EXPECT_EQ(recv(sv[0], &c, 1, 0, absl::Now() - absl::Seconds(1)).error(), ETIMEDOUT);
    // Data that is there returns at once, deadline or not.
    ASSERT_EQ(::send(sv[1], "q", 1, 0), 1);
    result r = recv(sv[0], &c, 1, 0, absl::Now() + absl::Seconds(5));
    EXPECT_EQ(r.value(), 1);
    // The socket is still usable after a timed-out recv: nothing was consumed by it.
    ASSERT_EQ(::send(sv[1], "w", 1, 0), 1);
    EXPECT_EQ(recv(sv[0], &c, 1).value(), 1);
    EXPECT_EQ(c, 'w');
  });
  ::close(sv[0]);
  ::close(sv[1]);
}

// lwkt::interrupt from another worker and from an OS thread cancels a blocked recv.
TEST(Io, InterruptCancelsABlockedRecv) {
  REQUIRE_BACKEND();
  auto rt = test_runtime(2, io_opts());
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  for (bool from_outside : {false, true}) {
    for (bool restart : {false, true}) {
      std::atomic<int> state{0};
      auto td = rt->spawn([&] {
        char c;
        state = 1;
        result r = recv(sv[0], &c, 1);
        state = r.error() == (restart ? ERESTART : EINTR) ? 2 : 100 + r.error();
      }, {.name = "blocked", .worker = 1});
      ASSERT_TRUE(td.ok());
      while (state.load() == 0) absl::SleepFor(absl::Milliseconds(1));
      absl::SleepFor(absl::Milliseconds(20));  // in recv by now (it would not matter)
      if (from_outside) {
        interrupt(td->get(), restart);
      } else {
        run_on(*rt, [&] { interrupt(td->get(), restart); }, 0);
      }
      td->join();
      EXPECT_EQ(state.load(), 2) << "from_outside=" << from_outside << " restart=" << restart;
    }
  }
  // The socket still works: the cancelled recv consumed nothing.
  ASSERT_EQ(::send(sv[1], "k", 1, 0), 1);
  run_on(*rt, [&] {
    char c = 0;
    EXPECT_EQ(recv(sv[0], &c, 1).value(), 1);
    EXPECT_EQ(c, 'k');
  });
  ::close(sv[0]);
  ::close(sv[1]);
}

// An interrupt that arrives after the data: the bytes are returned and the interrupt is
// kept for the next interruptible wait.
TEST(Io, InterruptAfterCompletionLosesNeitherBytesNorInterrupt) {
  REQUIRE_BACKEND();
  auto rt = test_runtime(1, io_opts());
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  ASSERT_EQ(::send(sv[1], "d", 1, 0), 1);
  run_on(*rt, [&] {
    interrupt(curthread());  // pending before the call: the call is interrupted at once...
    char c = 0;
    result r = recv(sv[0], &c, 1);
    // ...unless the data was already there and the completion won the race; either way
    // the byte and the interrupt are each seen exactly once.
    int interrupts = r.error() == EINTR;
    int bytes = r.ok() ? static_cast<int>(r.value()) : 0;
    if (bytes == 0) bytes = static_cast<int>(recv(sv[0], &c, 1).value());
    if (!interrupts) interrupts = sleep_for(absl::Seconds(5)).error() == EINTR;
    EXPECT_EQ(bytes, 1);
    EXPECT_EQ(c, 'd');
    EXPECT_EQ(interrupts, 1);
  });
  ::close(sv[0]);
  ::close(sv[1]);
}

// The completion and the interrupt both land while the waiting thread's worker is busy:
// the call returns its bytes and the interrupt stays for the next interruptible wait.
// (Regression: the wait consumed the interrupt and dropped it when the operation had
// completed too; an acceptor interrupted at shutdown then slept forever.)
TEST(Io, InterruptTogetherWithTheCompletionIsKept) {
  REQUIRE_BACKEND();
  auto rt = test_runtime(1, io_opts({.stall_budget = absl::ZeroDuration()}));
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  std::atomic<int> phase{0};
  std::atomic<int> bytes{-1}, later{-1};
  auto reader = rt->spawn([&] {
    char c = 0;
    phase = 1;
    result r = recv(sv[0], &c, 1);
    bytes = r.ok() ? static_cast<int>(r.value()) : -r.error();
    later = sleep_for(absl::Seconds(10)).error();
  }, {.name = "reader"});
  ASSERT_TRUE(reader.ok());
  while (phase.load() != 1) absl::SleepFor(absl::Milliseconds(1));
  absl::SleepFor(absl::Milliseconds(20));  // the reader sleeps in recv
  // A thread that holds the worker (no switch point) while both events arrive.
  std::atomic<bool> holding{false};
  auto hog = rt->spawn([&] {
    holding = true;
    const absl::Time until = absl::Now() + absl::Milliseconds(100);
    while (absl::Now() < until) {}
  }, {.name = "hog"});
  ASSERT_TRUE(hog.ok());
  while (!holding.load()) absl::SleepFor(absl::Microseconds(100));
  ASSERT_EQ(::send(sv[1], "x", 1, 0), 1);
  interrupt(reader->get());
  hog->join();
  reader->join();
  EXPECT_EQ(bytes.load(), 1);        // the byte was not lost...
  EXPECT_EQ(later.load(), EINTR);    // ...and neither was the interrupt
  ::close(sv[0]);
  ::close(sv[1]);
}

TEST(Io, PollReportsReadiness) {
  REQUIRE_BACKEND();
  auto rt = test_runtime(2, io_opts());
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  run_on(*rt, [&] {
    EXPECT_EQ(poll(p[0], POLLIN, absl::Now() + absl::Milliseconds(5)).error(), ETIMEDOUT);
    result w = poll(p[1], POLLOUT);
    EXPECT_TRUE(w.ok() && (w.value() & POLLOUT)) << w.to_string();
    auto waiter = create([&] {
      result r = poll(p[0], POLLIN);
      EXPECT_TRUE(r.ok() && (r.value() & POLLIN)) << r.to_string();
    }, {.name = "poller", .worker = 1});
    sleep_for(absl::Milliseconds(5)).value();
    ASSERT_EQ(::write(p[1], "x", 1), 1);
    waiter->join();
  });
  ::close(p[0]);
  ::close(p[1]);
}

TEST(Io, SleepForSleepsAndIsInterruptible) {
  REQUIRE_BACKEND();
  auto rt = test_runtime(1, io_opts());
  run_on(*rt, [] {
    const absl::Time start = absl::Now();
    EXPECT_EQ(sleep_for(absl::Milliseconds(10)).error(), 0);
    EXPECT_GE(absl::Now() - start, absl::Milliseconds(10));
    interrupt(curthread());
    EXPECT_EQ(sleep_for(absl::Seconds(10)).error(), EINTR);
  });
}

// Both queues overflow: 8 SQ and 16 CQ entries, 200 operations prepared before one switch
// and completing together. Nothing is dropped.
TEST(Io, SqAndCqOverflowLoseNothing) {
  REQUIRE_URING();
  testing::set_ring_entries(8, 16);  // for rings created from now on (the first operation)
  testing::set_batch_delay(absl::Seconds(10));  // only the count or an idle worker submits
  auto rt = test_runtime(1, io_opts());
  const int efd = eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(efd, 0);
  constexpr int kOps = 200;
  std::atomic<int> ready{0}, done{0};
  run_on(*rt, [&] {
    std::vector<thread_ref> tds;
    for (int i = 0; i < kOps; ++i) {
      tds.push_back(*create([&] {
        ++ready;
        result r = poll(efd, POLLIN);
        if (r.ok() && (r.value() & POLLIN)) ++done;
      }, {.name = "poller"}));
    }
    while (ready.load() < kOps) yield();
    sleep_for(absl::Milliseconds(20)).value();  // every poll submitted and waiting
    const std::uint64_t one = 1;
    ASSERT_EQ(::write(efd, &one, sizeof one), 8);
    for (auto& td : tds) td.join();
    const io_stats s = stats();
    EXPECT_GT(s.sq_full, 0u);
    EXPECT_GT(s.cq_overflows, 0u);
    EXPECT_GE(s.ops, static_cast<std::uint64_t>(kOps));
  });
  testing::set_ring_entries(0, 0);
  testing::set_batch_delay(absl::Microseconds(20));
  EXPECT_EQ(done.load(), kOps);
  ::close(efd);
}

// Operations prepared by several threads between two switch points go out in one submit.
TEST(Io, SubmissionsAreBatched) {
  REQUIRE_URING();
  testing::set_batch_delay(absl::Seconds(10));  // the count bound only: timing-independent
  auto rt = test_runtime(1, io_opts());
  const int efd = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
  ASSERT_GE(efd, 0);
  run_on(*rt, [&] {
    const io_stats before = stats();
    std::vector<thread_ref> tds;
    for (int i = 0; i < 64; ++i) {
      tds.push_back(*create([&] { EXPECT_TRUE(poll(efd, POLLIN).ok()); }, {.name = "p"}));
    }
    sleep_for(absl::Milliseconds(5)).value();
    const std::uint64_t n = 64;
    ASSERT_EQ(::write(efd, &n, sizeof n), 8);
    for (auto& td : tds) td.join();
    const io_stats s = stats();
    EXPECT_GE(s.ops - before.ops, 64u);
    // 64 operations, at most 32 a batch: a handful of submits, not 64.
    EXPECT_LE(s.submits - before.submits, 8u) << "submits " << s.submits - before.submits;
  });
  testing::set_batch_delay(absl::Microseconds(20));
  ::close(efd);
}

// Kicks reach a worker parked in its ring: wakeups from another worker (which has a ring
// too: IORING_OP_MSG_RING from it, or the eventfd) and from outside (the eventfd).
// Param: 0 eventfd kicks, 1 MSG_RING kicks, 2 MSG_RING kicks that all fail (the sender's
// fallback to the target's eventfd must carry each one).
class IoKick : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(MsgRing, IoKick, ::testing::Values(0, 1, 2));

TEST_P(IoKick, ParkedInTheRingWorkerIsWokenByEveryKick) {
  REQUIRE_BACKEND();
  testing::set_msg_ring_kicks(GetParam() != 0);
  testing::break_msg_ring_kicks(GetParam() == 2);
  auto rt = test_runtime(2, io_opts());
  // Worker 0 gets a ring of its own: its kicks can then go ring to ring.
  give_ring(*rt, 0);
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  std::atomic<bool> flag{false};
  // Worker 1 gets a ring (and an operation that never completes, so it parks in the ring).
  auto io_thread = rt->spawn([&] {
    char c;
    (void)read(p[0], &c, 1, -1);
  }, {.name = "ring-holder", .worker = 1});
  ASSERT_TRUE(io_thread.ok());
  const int rounds = lwkt::testing::scaled(400);
  for (int i = 0; i < rounds; ++i) {
    flag = false;
    auto sleeper = rt->spawn([&] {
      // Interlocked (join the sleep queue, then look): a wakeup from another worker or from
      // outside between a bare check and tsleep would otherwise be lost (see lwkt/sleep.h).
      for (;;) {
        tsleep_interlock(&flag);
        if (flag.load()) break;
        tsleep(&flag, PINTERLOCKED, "flag");
      }
    }, {.name = "sleeper", .worker = 1});
    ASSERT_TRUE(sleeper.ok());
    absl::SleepFor(absl::Microseconds(i % 7 * 30));
    if (i % 2) {
      flag = true;
      rt->wakeup(&flag);
    } else {
      run_on(*rt, [&] {
        flag = true;
        wakeup(&flag);
      }, 0);
    }
    sleeper->join();
  }
  ASSERT_EQ(::write(p[1], "x", 1), 1);
  io_thread->join();
  io_stats s;
  run_on(*rt, [&] { s = stats(); }, 0);
  if (GetParam() != 0 && test_backend() == io_backend::io_uring) {
    EXPECT_GT(s.msg_ring_kicks, 0u);  // the ring-to-ring path was taken
    if (GetParam() == 2) {
      EXPECT_EQ(s.msg_ring_fallbacks, s.msg_ring_kicks);  // every one failed, none was lost
    }
  } else {
    EXPECT_EQ(s.msg_ring_kicks, 0u);
  }
  ::close(p[0]);
  ::close(p[1]);
  testing::set_msg_ring_kicks(true);
  testing::break_msg_ring_kicks(false);
}

// Regression: a MSG_RING kick that failed (here: aimed at an eventfd, which is not a ring)
// fell back to the target's eventfd only when the kicker next reaped its own ring, at its
// next switch point. A kicker that goes on computing left the target parked: the sleeper
// below was woken only after the kicker stopped spinning (2 s later, or never).
TEST(Io, AFailedRingKickWakesTheTargetWithoutWaitingForTheKickersNextSwitch) {
  REQUIRE_URING();  // MSG_RING kicks exist only there
  struct restore_kicks {  // whatever way the test ends
    ~restore_kicks() {
      testing::break_msg_ring_kicks(false);
      testing::set_msg_ring_kicks(true);
    }
  } restore;
  testing::set_msg_ring_kicks(true);
  testing::break_msg_ring_kicks(true);
  auto rt = test_runtime(2, io_opts());
  give_ring(*rt, 0);
  give_ring(*rt, 1);  // worker 1 then parks in its ring
  std::atomic<bool> flag{false}, woke{false};
  auto sleeper = rt->spawn([&] {
    lwkt::testing::sleep_until_set(flag, "flag");
    woke = true;
  }, {.name = "sleeper", .worker = 1});
  ASSERT_TRUE(sleeper.ok());
  run_on(*rt, [&] { lwkt::testing::wait_until_asleep(*rt, "sleeper"); }, 0);
  absl::SleepFor(absl::Milliseconds(50));  // worker 1, with nothing to run, has parked
  io_stats before, after;
  run_on(*rt, [&] {
    before = stats();
    flag = true;
    wakeup(&flag);  // a message to worker 1 and a kick from worker 0's ring
    // No switch point until the sleeper has run (or 2 s passed).
    const absl::Time until = absl::Now() + absl::Seconds(2);
    while (!woke.load() && absl::Now() < until) {}
    EXPECT_TRUE(woke.load()) << "the target stayed parked while the kicker computed";
    after = stats();
  }, 0);
  sleeper->join();
  EXPECT_GT(after.msg_ring_fallbacks, before.msg_ring_fallbacks);
}

TEST(Io, NoDescriptorLeftBehind) {
  REQUIRE_BACKEND();
  const int before = open_fds();
  {
    auto rt = test_runtime(3, io_opts());
    for (int w = 0; w < 3; ++w) {
      run_on(*rt, [] { EXPECT_EQ(sleep_for(absl::Microseconds(1)).error(), 0); }, w);
      run_on(*rt, [] {
        int p[2];
        ASSERT_EQ(pipe(p), 0);
        EXPECT_EQ(poll(p[1], POLLOUT).ok(), true);
        EXPECT_TRUE(close(p[0]).ok());
        EXPECT_TRUE(close(p[1]).ok());
        EXPECT_EQ(close(p[1]).error(), EBADF);
      }, w);
    }
    EXPECT_GT(open_fds(), before);  // rings and eventfds while it lives
  }
  EXPECT_EQ(open_fds(), before);
}

// Shutdown cancels the operations in flight (the calls return ECANCELED) and refuses new
// ones, so a thread blocked in I/O finishes within the grace period instead of being
// abandoned.
TEST(Io, ShutdownCancelsOperationsInFlightAndRefusesNewOnes) {
  REQUIRE_BACKEND();
  const int before = open_fds();
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  std::atomic<int> first{-1}, second{-1};
  std::atomic<bool> closed{false};
  {
    auto rt = test_runtime(2, io_opts());
    std::atomic<bool> started{false};
    auto td = rt->spawn([&] {
      char buf[64];
      started = true;
      first = recv(sv[0], buf, sizeof buf).error();
      second = poll(sv[0], POLLIN).error();  // after shutdown began: refused at once
      // ...but close still closes (io.h: the descriptor is gone whatever the result).
      closed = close(sv[0]).ok() && fcntl(sv[0], F_GETFD) == -1;
    }, {.name = "in-recv", .worker = 1});
    ASSERT_TRUE(td.ok());
    while (!started.load()) absl::SleepFor(absl::Milliseconds(1));
    absl::SleepFor(absl::Milliseconds(10));
    const absl::Time t0 = absl::Now();
    absl::Status st = rt->shutdown(absl::Seconds(10));
    EXPECT_TRUE(st.ok()) << st;  // nothing abandoned
    EXPECT_LT(absl::Now() - t0, absl::Seconds(5));
  }
  EXPECT_EQ(first.load(), ECANCELED);
  EXPECT_EQ(second.load(), ECANCELED);
  EXPECT_TRUE(closed.load());  // regression (review): it used to return ECANCELED, fd open
  ::close(sv[1]);
  EXPECT_EQ(open_fds(), before);
}

// blocking(fn): fn runs on another OS thread; the worker keeps running other threads.
// Regression (review): an SQE's length is 32 bits, so a buffer of exactly 4 GiB became 0
// bytes: recv reported end of file with data waiting and send moved nothing (send_all
// looped forever). Lengths are capped as read(2)/send(2) cap them; the buffer is reserved,
// not touched beyond what is moved.
TEST(Io, FourGiBLengthsAreNotTruncated) {
  REQUIRE_BACKEND();
  constexpr std::size_t k4G = std::size_t{1} << 32;
  void* big = mmap(nullptr, k4G, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(big, MAP_FAILED) << "reserving 4 GiB (MAP_NORESERVE): " << std::strerror(errno);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  auto rt = test_runtime(1, io_opts());
  run_on(*rt, [&] {
    ASSERT_EQ(::send(sv[1], "0123456789", 10, 0), 10);
    result r = io::recv(sv[0], big, k4G);
    ASSERT_TRUE(r.ok()) << r.to_string();
    EXPECT_EQ(r.value(), 10);
    EXPECT_EQ(std::memcmp(big, "0123456789", 10), 0);
    // A socket takes what fits in its buffer: some bytes, never none.
    result s = io::send(sv[0], big, k4G, MSG_DONTWAIT);
    ASSERT_TRUE(s.ok()) << s.to_string();
    EXPECT_GT(s.value(), 0);
  });
  ::close(sv[0]);
  ::close(sv[1]);
  munmap(big, k4G);
}

TEST(Io, BlockingRunsElsewhereWhileTheWorkerRunsOthers) {
  auto rt = test_runtime(1, {.io = io_backend::off});  // needs no ring
  std::atomic<int> ticks{0};
  run_on(*rt, [&] {
    std::atomic<bool> stop{false};
    auto ticker = create([&] {
      while (!stop.load()) {
        ++ticks;
        yield();
      }
    }, {.name = "ticker"});
    const pthread_t me = pthread_self();
    const int before = ticks.load();
    auto [value, other_thread] = blocking([&] {
      absl::SleepFor(absl::Milliseconds(30));  // an OS-level block
      return std::make_pair(42, !pthread_equal(pthread_self(), me));
    });
    EXPECT_EQ(value, 42);
    EXPECT_TRUE(other_thread);
    EXPECT_GT(ticks.load(), before);  // the worker ran the ticker meanwhile
    stop = true;
    ticker->join();
    // void, and exceptions come back to the caller.
    int side = 0;
    blocking([&] { side = 7; });
    EXPECT_EQ(side, 7);
    EXPECT_THROW(blocking([]() -> int { throw std::runtime_error("from the pool"); }),
                 std::runtime_error);
  });
}

// Regression (review): "when all are busy, calls wait their turn" and not before: a burst
// of calls that found one idle pool thread started no other, so kBlockingThreads calls that
// each wait for all the others deadlocked (until their 10 s bound). Runs before the test
// below, which starts every pool thread (gtest keeps the file's order).
TEST(Io, KBlockingThreadsCallsRunAtOnce) {
  auto rt = test_runtime(1, {.io = io_backend::off});
  run_on(*rt, [] { blocking([] {}); });  // a pool thread, idle now
  std::atomic<int> ready{0}, arrived{0}, all_met{0};
  std::vector<thread_ref> tds;
  for (int i = 0; i < kBlockingThreads; ++i) {
    tds.push_back(*rt->spawn([&] {
      // All on one worker: once the last is ready, the calls are made microseconds apart,
      // faster than the idle pool thread wakes.
      ready.fetch_add(1);
      while (ready.load() < kBlockingThreads) yield();
      const bool met = blocking([&] {
        arrived.fetch_add(1);
        const absl::Time deadline = absl::Now() + absl::Seconds(10);
        while (arrived.load() < kBlockingThreads && absl::Now() < deadline) {
          absl::SleepFor(absl::Microseconds(100));
        }
        return arrived.load() == kBlockingThreads;
      });
      all_met.fetch_add(met);
    }, {.name = "rendezvous"}));
  }
  for (auto& td : tds) td.join();
  EXPECT_EQ(all_met.load(), kBlockingThreads);
}

TEST(Io, ManyBlockingCallsFromEveryWorkerAllComplete) {
  auto rt = test_runtime(3, {.io = io_backend::off});
  constexpr int kCalls = 200;  // more than kBlockingThreads: some wait their turn
  std::atomic<int> sum{0};
  std::vector<thread_ref> tds;
  for (int i = 0; i < kCalls; ++i) {
    tds.push_back(*rt->spawn([&sum, i] {
      sum += blocking([i] {
        absl::SleepFor(absl::Microseconds(200));
        return i;
      });
    }, {.name = "caller", .worker = i % 3}));
  }
  for (auto& td : tds) td.join();
  EXPECT_EQ(sum.load(), kCalls * (kCalls - 1) / 2);
}

// CPU nanoseconds the OS thread named `comm` has run (/proc/self/task/*/schedstat); -1 if
// there is none.
std::int64_t thread_cpu_ns(const std::string& comm) {
  DIR* d = opendir("/proc/self/task");
  std::int64_t ns = -1;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string base = std::string("/proc/self/task/") + e->d_name;
    FILE* f = std::fopen((base + "/comm").c_str(), "r");
    if (!f) continue;
    char name[64] = {};
    const bool match = std::fgets(name, sizeof name, f) && std::string(name) == comm + "\n";
    std::fclose(f);
    if (!match) continue;
    if (FILE* s = std::fopen((base + "/schedstat").c_str(), "r")) {
      long long v = 0;
      if (std::fscanf(s, "%lld", &v) == 1) ns = v;
      std::fclose(s);
    }
  }
  closedir(d);
  return ns;
}

// Regression (review): completions nobody waits for (a kick's CQE, the eventfd read)
// left worker_io::busy at 0, so the idle loop's spin saw them as work forever and the
// worker never parked again: 100% CPU. After a burst of kicks, the worker must go quiet.
TEST(Io, AnIdleWorkerWithARingParksAfterABurstOfKicks) {
  REQUIRE_BACKEND();
  if (lwkt::testing::under_qemu()) GTEST_SKIP() << "needs the host's /proc schedstat";
  auto rt = test_runtime(2, io_opts());
  // Both workers get a ring (or epoll instance); worker 1 then has nothing in flight.
  for (int w : {1, 0}) {
    give_ring(*rt, w);
  }
  run_on(*rt, [] {
    std::uint64_t x = 1;
    for (int i = 0; i < 20000; ++i) {
      send_ipiq(1, [](void*) {}, nullptr);
      // Gaps of 0-80 us: worker 1 parks between many of them, so kicks race its park.
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      const absl::Time until = absl::Now() + absl::Microseconds(static_cast<int64_t>((x >> 33) % 80));
      while (absl::Now() < until) {}
    }
  }, 0);
  absl::SleepFor(absl::Milliseconds(100));
  io_stats io_a;
  run_on(*rt, [&] { io_a = stats(); }, 0);
  const runtime_stats rt_a = rt->stats();
  const std::int64_t a = thread_cpu_ns("lwkt w1");
  absl::SleepFor(absl::Milliseconds(300));
  const std::int64_t b = thread_cpu_ns("lwkt w1");
  io_stats io_b;
  run_on(*rt, [&] { io_b = stats(); }, 0);
  const runtime_stats rt_b = rt->stats();
  ASSERT_GE(a, 0);
  // On failure, what the spinning worker did in the window (one run_on on worker 0 falls
  // in it: a few parks and ops are its own).
  EXPECT_LT(b - a, 100'000'000) << "worker 1 ran " << (b - a) / 1000000 << " ms of 300 ms idle"
      << "; in the window: parks " << rt_b.parks - rt_a.parks << ", messages "
      << rt_b.messages - rt_a.messages << ", io ops " << io_b.ops - io_a.ops << ", submits "
      << io_b.submits - io_a.submits << ", reaps " << io_b.reaps - io_a.reaps << ", waits "
      << io_b.waits - io_a.waits << ", cq_overflows " << io_b.cq_overflows - io_a.cq_overflows;
}

// Regression (review): on epoll, a writer blocked on a full socket whose peer shut its
// writing side was woken by every EPOLLRDHUP, retried, re-armed, and never saw its
// deadline: it spun for ever. The deadline must end it.
TEST(Io, BlockedSendHonoursItsDeadlineWhenThePeerShutsItsSide) {
  REQUIRE_BACKEND();
  auto rt = test_runtime(1, io_opts());
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  std::vector<char> chunk(65536, 'f');
  while (::send(sv[0], chunk.data(), chunk.size(), MSG_DONTWAIT) > 0) {}  // full
  ASSERT_EQ(::shutdown(sv[1], SHUT_WR), 0);  // the peer stops writing (still reads nothing)
  run_on(*rt, [&] {
    const absl::Time start = absl::Now();
    result r = send(sv[0], chunk.data(), chunk.size(), 0, start + absl::Milliseconds(200));
    EXPECT_EQ(r.error(), ETIMEDOUT) << r.to_string();
    EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
    EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  });
  ::close(sv[0]);
  ::close(sv[1]);
}

// A thread whose io::blocking call (200 ms) is still running 20 ms later, when the caller
// goes on to shut the runtime down; it stores fn's result (7) into *got.
std::unique_ptr<Runtime> runtime_with_a_blocked_caller(std::atomic<int>* got) {
  auto rt = test_runtime(1, {.io = io_backend::off});
  auto td = rt->spawn([got] { *got = blocking([] {
    absl::SleepFor(absl::Milliseconds(200));
    return 7;
  }); }, {.name = "blocked-caller"});
  EXPECT_TRUE(td.ok());
  absl::SleepFor(absl::Milliseconds(20));
  return rt;
}

// Regression (review): io::blocking's wakeup comes from a pool OS thread, which shutdown
// refused once it began: a caller whose fn finished during the grace period was abandoned.
TEST(Io, BlockingThatFinishesDuringShutdownIsNotAbandoned) {
  std::atomic<int> got{0};
  auto rt = runtime_with_a_blocked_caller(&got);
  absl::Status st = rt->shutdown(absl::Seconds(5));
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(got.load(), 7);
}

// The same when the Runtime's destructor shuts it down: the runtime stays listed for
// wakeups from outside through that shutdown's grace period (it was unlisted first, so the
// pool thread's wakeup reached nobody and the caller was abandoned after 10 s).
TEST(Io, BlockingThatFinishesDuringTheDestructorsShutdownIsNotAbandoned) {
  std::atomic<int> got{0};
  runtime_with_a_blocked_caller(&got).reset();  // ~Runtime: shutdown, default grace 10 s
  EXPECT_EQ(got.load(), 7) << "the caller was abandoned";
}

// Regression (review): a blocking call still running when the grace period ends had its
// caller's stack unmapped by shutdown, and the pool thread then wrote fn's result into it
// (SIGSEGV). The stacks are now left mapped, and the status says why.
TEST(Io, ABlockingCallThatOutlivesShutdownKeepsTheStacksMapped) {
  static std::atomic<bool> fn_returned{false};
  {
    auto rt = test_runtime(1, {.io = io_backend::off});
    std::atomic<bool> started{false};
    auto td = rt->spawn([&] {
      started = true;
      // fn's result is written into this thread's stack after shutdown abandoned it.
      (void)blocking([] {
        absl::SleepFor(absl::Milliseconds(300));
        std::array<char, 256> r;
        r.fill('x');
        fn_returned = true;
        return r;
      });
    }, {.name = "outlives-shutdown"});
    ASSERT_TRUE(td.ok());
    while (!started.load()) absl::SleepFor(absl::Milliseconds(1));
    absl::Status st = rt->shutdown(absl::Milliseconds(50));
    EXPECT_FALSE(fn_returned.load()) << "the host was too slow to test this";
    EXPECT_TRUE(absl::StrContains(st.message(), "'outlives-shutdown'")) << st;
    EXPECT_TRUE(absl::StrContains(st.message(), "1 io::blocking call(s) had not returned"))
        << st;
  }
  // The pool thread writes the result and the done flag once fn returns, then counts the
  // call finished: wait for that (a write into an unmapped stack would kill the test here).
  while (lwkt::internal::blocking_outstanding().load(std::memory_order_acquire) != 0) {
    absl::SleepFor(absl::Milliseconds(1));
  }
}

// An operation the kernel cannot cancel (simulated: a read stuck in a hung file system) may
// still write into its thread's stack after worker exit gave up on it: shutdown then
// leaves the abandoned threads' stacks mapped, and says so.
TEST(Io, AnOperationThatOutlivesItsCancellationKeepsTheStacksMapped) {
  REQUIRE_URING();
  testing::simulate_uncancellable_io(true, absl::Milliseconds(20));
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  {
    auto rt = test_runtime(1, io_opts());
    std::atomic<bool> started{false};
    auto td = rt->spawn([&] {
      char buf[64];
      started = true;
      (void)recv(sv[0], buf, sizeof buf);
    }, {.name = "uncancellable"});
    ASSERT_TRUE(td.ok());
    while (!started.load()) absl::SleepFor(absl::Milliseconds(1));
    absl::SleepFor(absl::Milliseconds(10));
    absl::Status st = rt->shutdown(absl::Milliseconds(50));
    EXPECT_TRUE(absl::StrContains(st.message(), "'uncancellable'")) << st;
    EXPECT_TRUE(absl::StrContains(st.message(), "stacks are left mapped (leaked)")) << st;
  }
  testing::simulate_uncancellable_io(false);
  ::close(sv[0]);
  ::close(sv[1]);
}

using IoDeathTest = ::testing::Test;

// Regression (review): a thread that exited still owning a listener left td_io_inflight
// at 1 in its recycled object, and the next thread to get it aborted in setcpu_self.
TEST(IoDeathTest, ExitingWhileOwningAListenerAbortsNamingIt) {
  lwkt::testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        auto rt = Runtime::create(io_opts({.workers = 1}));
        if (!rt.ok()) rt = Runtime::create({.workers = 1, .io = io_backend::epoll});
        run_on(**rt, [] { new listener(0); });  // never destroyed: the thread exits owning it
      },
      "exit while owning 1 I/O object");
}

TEST(IoDeathTest, MisuseAbortsNamingTheCall) {
  lwkt::testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        char c;
        (void)recv(0, &c, 1);
      },
      "io::recv called from an OS thread that is not an lwkt thread");
  EXPECT_DEATH(blocking([] {}), "io::blocking called from an OS thread that is not an lwkt thread");
  EXPECT_DEATH(
      {
        auto rt = Runtime::create({.workers = 1});
        run_on(**rt, [] {
          crit_enter();
          (void)sleep_for(absl::Milliseconds(1));
        });
      },
      "io::sleep_for inside a critical section");
}

TEST(IoDeathTest, GiveawayOfAThreadWaitingForIoAborts) {
  REQUIRE_BACKEND();
  lwkt::testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        auto rt = Runtime::create(io_opts({.workers = 2}));
        int p[2];
        if (pipe(p) != 0) abort();
        run_on(**rt, [&] {
          auto reader = create([&] {
            char c;
            (void)read(p[0], &c, 1, -1);
          }, {.name = "io-waiter"});
          sleep_for(absl::Milliseconds(10)).value();
          giveaway(reader->get());
        });
      },
      "giveaway of a thread with 1 I/O operation");
}

}  // namespace
}  // namespace lwkt::io
