// TCP echo over loopback at scale: 1,000 concurrent connections over 4 workers (on 2
// cores), an acceptor on every worker, every byte checked; clients that reset mid-transfer
// cost only their own connection; no descriptor is left behind.
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "absl/debugging/symbolize.h"
#include "gtest/gtest.h"
#include "io/io.h"
#include "io/test_util.h"
#include "lwkt/runtime.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "lwkt/testing.h"
#include "lwkt/thread.h"

namespace lwkt::io {
namespace {


struct server_counts {
  std::atomic<int> accepted[4] = {};
  std::atomic<int> connections_done{0};
  std::atomic<int> resets{0};          // an echo thread that saw ECONNRESET / EPIPE
  std::atomic<std::int64_t> bytes{0};  // echoed
};

// One connection: echo until end of file or an error, then close.
void echo(int fd, server_counts* c) {
  char buf[16384];
  for (;;) {
    result r = io::recv(fd, buf, sizeof buf);
    if (!r.ok() || r.value() == 0) {
      if (r.error() == ECONNRESET) ++c->resets;
      break;
    }
    result w = io::send_all(fd, buf, static_cast<std::size_t>(r.value()));
    if (!w.ok()) {
      if (w.error() == ECONNRESET || w.error() == EPIPE) ++c->resets;
      break;
    }
    c->bytes += r.value();
  }
  EXPECT_TRUE(io::close(fd).ok());
  ++c->connections_done;
}

// Sends `total` bytes in chunks and checks each chunk comes back intact. `reset_after`:
// after that many bytes, abort the connection with a RST (SO_LINGER 0) instead.
bool client(const sockaddr_in& addr, std::uint32_t seed, std::size_t total,
            std::size_t reset_after) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  result c = io::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  EXPECT_TRUE(c.ok()) << c.to_string();
  std::mt19937 rng(seed);
  std::vector<char> out(8192), in(8192);
  std::size_t sent = 0;
  bool ok = c.ok();
  while (ok && sent < total) {
    const std::size_t n = std::min<std::size_t>(1 + rng() % out.size(), total - sent);
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<char>(rng());
    if (sent + n > reset_after) {
      linger l{1, 0};
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
      (void)io::send(fd, out.data(), n / 2 + 1);
      break;  // close below sends the RST
    }
    result s = io::send_all(fd, out.data(), n);
    std::size_t got = 0;
    result r = io::recv_all(fd, in.data(), n, &got);
    ok = s.ok() && r.ok() && got == n && std::memcmp(out.data(), in.data(), n) == 0;
    EXPECT_TRUE(ok) << "seed " << seed << ": send " << s.to_string() << " recv "
                    << r.to_string() << " got " << got << " of " << n;
    sent += n;
  }
  EXPECT_TRUE(io::close(fd).ok());
  return ok;
}

TEST(Echo, ThousandConnectionsOverFourWorkersEveryByteChecked) {
  const int fds_before = test_util::open_fds();
  const io_backend backend = test_util::test_backend();
  if (!Runtime::create({.workers = 1, .io = backend}).ok()) {
    GTEST_SKIP() << "io_uring unavailable here (qemu-user has no io_uring syscalls); the "
                    "epoll run covers this";
  }
  auto rt = lwkt::testing::test_runtime(4, {.io = backend});
  const int conns = lwkt::testing::scaled(1000);
  sockaddr_in addr;
  const int lfd = test_util::listen_loopback(&addr, 4096);
  ASSERT_GE(lfd, 0);

  server_counts counts;
  std::vector<thread_ref> acceptors;
  for (int w = 0; w < 4; ++w) {
    auto td = rt->spawn([&, w] {
      for (;;) {
        result a = io::accept(lfd, nullptr, nullptr);
        if (!a.ok()) {
          EXPECT_EQ(a.error(), EINTR) << a.to_string();
          return;
        }
        ++counts.accepted[w];
        const int fd = static_cast<int>(a.value());
        auto e = create([fd, &counts] { echo(fd, &counts); }, {.name = "echo"});
        EXPECT_TRUE(e.ok()) << e.status();  // detached: counted in connections_done
      }
    }, {.name = "acceptor", .worker = w});
    ASSERT_TRUE(td.ok()) << td.status();
    acceptors.push_back(std::move(*td));
  }

  // Every tenth client resets its connection part-way.
  std::atomic<int> clean_ok{0}, clean{0};
  std::vector<thread_ref> clients;
  for (int i = 0; i < conns; ++i) {
    const bool resets = i % 10 == 7;
    const std::size_t total = 1 + (static_cast<std::size_t>(i) * 7919) % 40000;
    auto td = rt->spawn([&, i, resets, total] {
      const bool ok = client(addr, static_cast<std::uint32_t>(i), total, resets ? total / 2 : total + 1);
      if (!resets) {
        ++clean;
        clean_ok += ok;
      }
    }, {.name = "client", .worker = i % 4});
    ASSERT_TRUE(td.ok()) << td.status();
    clients.push_back(std::move(*td));
  }
  for (auto& td : clients) td.join();
  // Every connection's server thread finishes (a reset costs only its own).
  const absl::Time until = absl::Now() + absl::Seconds(60);
  while (counts.connections_done.load() < conns && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(counts.connections_done.load(), conns);
  EXPECT_EQ(clean_ok.load(), clean.load());
  int accepted = 0;
  for (auto& a : counts.accepted) accepted += a.load();
  EXPECT_EQ(accepted, conns);
  for (auto& td : acceptors) interrupt(td.get());
  for (auto& td : acceptors) td.join();
  ::close(lfd);
  std::printf("accepted per worker: %d %d %d %d; resets seen by the server: %d; bytes %lld\n",
              counts.accepted[0].load(), counts.accepted[1].load(), counts.accepted[2].load(),
              counts.accepted[3].load(), counts.resets.load(),
              static_cast<long long>(counts.bytes.load()));
  EXPECT_TRUE(rt->shutdown(absl::Seconds(5)).ok());
  rt.reset();
  EXPECT_EQ(test_util::open_fds(), fds_before);
}

// The leak checks count descriptors the way a leak would show: a socket counts, the
// symbolizer's cache does not. Regression: a stall report during the thousand-connection
// test symbolised its backtrace, absl::Symbolize kept the executable and libc open in its
// process-wide cache, and the check saw 5 descriptors where 3 were expected (tsan, 2 runs
// in 10).
TEST(Echo, LeakChecksIgnoreTheSymbolizersCacheButCountASocket) {
  const int before = test_util::open_fds();
  char name[256];
  // One pc in the executable, one in libc: the two objects the stall report opened.
  const bool exe = absl::Symbolize(reinterpret_cast<void*>(&test_util::open_fds), name, sizeof name);
  const bool libc = absl::Symbolize(reinterpret_cast<void*>(&::close), name, sizeof name);
  if (!exe || !libc) {  // qemu-user: /proc/self/exe is qemu, so nothing is opened or cached
    std::printf("absl::Symbolize found no symbol here: only the socket is checked\n");
  }
  EXPECT_EQ(test_util::open_fds(), before);
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(s, 0);
  EXPECT_EQ(test_util::open_fds(), before + 1);
  ::close(s);
  EXPECT_EQ(test_util::open_fds(), before);
}

// Shutdown with connections open: each server thread was blocked in recv after replying;
// shutdown cancels that recv (ECANCELED), the thread closes its connection and exits within
// the grace period, and every client still receives every byte the server's sends had
// taken, then end of file. Nothing is abandoned.
TEST(Echo, ShutdownWithConnectionsOpenClosesThemAndLosesNothingAcknowledged) {
  const io_backend backend = test_util::test_backend();
  if (!Runtime::create({.workers = 1, .io = backend}).ok()) GTEST_SKIP() << "no io_uring here";
  auto rt = lwkt::testing::test_runtime(2, {.io = backend});
  constexpr int kConns = 20;
  constexpr std::size_t kReply = 150000;  // more than the socket buffers: partly in flight
  std::vector<int> clients;
  std::atomic<int> closed{0};
  std::atomic<std::int64_t> acknowledged{0};
  for (int i = 0; i < kConns; ++i) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    clients.push_back(sv[1]);
    const int fd = sv[0];
    ASSERT_TRUE(rt->spawn([fd, i, &closed, &acknowledged] {
      std::string reply(kReply, static_cast<char>('a' + i % 26));
      std::size_t done = 0;
      result r = io::send_all(fd, reply.data(), reply.size(), &done);
      acknowledged += static_cast<std::int64_t>(done);  // what the sends took
      char c;
      result rr = r.ok() ? io::recv(fd, &c, 1) : r;  // blocks until shutdown cancels it
      EXPECT_TRUE(rr.error() == ECANCELED || r.error() == ECANCELED) << rr.to_string();
      EXPECT_TRUE(io::close(fd).ok() || ::close(fd) == 0);
      ++closed;
    }, {.name = "conn", .worker = i % 2}).ok());
  }
  // Read part of each reply, so some sends are still waiting for room at shutdown.
  std::vector<std::size_t> got(kConns, 0);
  std::vector<char> buf(65536);
  for (int i = 0; i < kConns; ++i) {
    const ssize_t n = ::recv(clients[i], buf.data(), 4096, 0);
    ASSERT_GT(n, 0);
    got[i] += static_cast<std::size_t>(n);
  }
  absl::SleepFor(absl::Milliseconds(20));
  // Drain concurrently with shutdown so that the blocked sends can finish.
  std::thread drainer([&] {
    for (int i = 0; i < kConns; ++i) {
      for (;;) {
        const ssize_t n = ::recv(clients[i], buf.data(), buf.size(), 0);
        if (n <= 0) break;  // end of file: the server closed
        for (ssize_t k = 0; k < n; ++k) {
          ASSERT_EQ(buf[static_cast<std::size_t>(k)], static_cast<char>('a' + i % 26));
        }
        got[i] += static_cast<std::size_t>(n);
      }
    }
  });
  absl::Status st = rt->shutdown(absl::Seconds(20));
  drainer.join();
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(closed.load(), kConns);
  std::int64_t received = 0;
  for (std::size_t g : got) received += static_cast<std::int64_t>(g);
  EXPECT_EQ(received, acknowledged.load());  // every byte a send took arrived
  for (int c : clients) ::close(c);
}

}  // namespace
}  // namespace lwkt::io
