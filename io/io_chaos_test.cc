// Seeded chaos over io.h together with the scheduler calls that race with it: from a seed,
// a runtime (2..5 workers, more than the cores; random idle spin and round-robin slice)
// runs byte streams over socketpairs, pipes and loopback TCP. Each stream has a writer
// (send / send_all / writev / write, random chunk sizes and deadlines) and a reader (recv,
// recv_all, readv, read, poll-then-recv, or a pooled_receiver), on random workers; between
// operations they migrate (setcpu_self, except while owning a pooled_receiver). Meanwhile
// disturbers interrupt them (EINTR), schedule() them spuriously (legal: a woken thread
// re-checks), and a quarter of the runs shut the runtime down at a random moment with
// operations in flight.
//
// Invariants: every stream's reader receives exactly the bytes its writer says it sent, in
// order (an interrupted or timed-out call moved no byte, or says how many it moved); a
// call's result is a byte count or one of the errors its contract allows; every thread
// finishes (a lost completion or wakeup is a hang, reported with the seed by the bound
// below) unless the run shut down; no descriptor is left behind.
//
// Replay: LWKT_IO_CHAOS_SEED=N (one seed, verbose). LWKT_IO_CHAOS_SEEDS=K: how many
// (default 150; fewer under sanitizers and qemu). The backend: LWKT_IO_TEST_BACKEND.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
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

using test_util::open_fds;
using test_util::test_backend;



char pattern(std::uint64_t stream, std::uint64_t i) {
  return static_cast<char>((stream * 131 + i * 7 + (i >> 8)) & 0xff);
}

struct stream {
  int id = 0;
  int rfd = -1, wfd = -1;
  std::size_t total = 0;
  std::atomic<std::size_t> sent{0};      // bytes the writer's calls said went through
  std::atomic<std::size_t> received{0};
  std::atomic<bool> reader_done{false}, writer_done{false};
  std::atomic<bool> bad{false};
  bool pipe = false;
  bool may_pool = true;  // a pooled_receiver allocates: not in runs that abandon threads
  // The threads' buffers live here, not on their stacks' heap: a thread that an early
  // shutdown abandons must own no heap memory (it is never unwound: LeakSanitizer).
  std::vector<char> wbuf = std::vector<char>(8192), rbuf = std::vector<char>(8192);
  thread_ref reader, writer;
};

bool allowed(int err) {
  return err == EINTR || err == ERESTART || err == ETIMEDOUT;
}

struct run_ctx {
  std::uint64_t seed;
  int workers;
  std::vector<stream*> streams;
  std::atomic<bool> stopping{false};
  // Streams' threads stay alive until the disturbers are done (schedule() of an exited
  // thread is misuse), then main sets this and wakes them.
  std::atomic<bool> released{false};
  std::atomic<int> failures{0};
  char failure[512] = {};

  void fail(stream* s, const std::string& what) {
    if (failures.fetch_add(1) == 0) {
      std::snprintf(failure, sizeof failure, "seed %llu stream %d: %s",
                    static_cast<unsigned long long>(seed), s ? s->id : -1, what.c_str());
    }
    if (s) s->bad = true;
  }
};

// A finished stream thread waits here (interrupts and spurious schedules just loop).
void linger(run_ctx* c) {
  while (!c->released.load()) (void)tsleep(&c->released, PCATCH, "linger", absl::Milliseconds(5));
}

absl::Time pick_deadline(std::mt19937_64& rng) {
  switch (rng() % 4) {
    case 0: return absl::Now() + absl::Microseconds(static_cast<int64_t>(rng() % 300));
    case 1: return absl::Now() + absl::Milliseconds(static_cast<int64_t>(1 + rng() % 5));
    default: return absl::InfiniteFuture();
  }
}

void maybe_migrate(run_ctx* c, std::mt19937_64& rng) {
  if (rng() % 4 == 0) setcpu_self(static_cast<int>(rng() % static_cast<unsigned>(c->workers)));
}

void writer(run_ctx* c, stream* s, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<char>& buf = s->wbuf;
  while (s->sent.load() < s->total && !c->stopping.load()) {
    const std::size_t off = s->sent.load();
    const std::size_t n = std::min<std::size_t>(1 + rng() % buf.size(), s->total - off);
    for (std::size_t i = 0; i < n; ++i) buf[i] = pattern(static_cast<std::uint64_t>(s->id), off + i);
    const absl::Time dl = pick_deadline(rng);
    result r;
    std::size_t moved = 0;
    const std::uint64_t pick = rng() % 4;
    switch (s->pipe ? 2 + pick % 2 : pick) {  // pipes: writev and write only
      case 0: r = send(s->wfd, buf.data(), n, 0, dl); moved = r.ok() ? r.value() : 0; break;
      case 1: r = send_all(s->wfd, buf.data(), n, &moved, dl); break;
      case 2: {
        iovec iov[2] = {{buf.data(), n / 2}, {buf.data() + n / 2, n - n / 2}};
        r = writev(s->wfd, iov, 2, dl);
        moved = r.ok() ? r.value() : 0;
        break;
      }
      default: r = write(s->wfd, buf.data(), n, -1, dl); moved = r.ok() ? r.value() : 0; break;
    }
    if (r.error() == ECANCELED && c->stopping.load()) break;  // shutdown cancels (runtime.h)
    if (!r.ok() && !allowed(r.error())) {
      c->fail(s, "writer: " + r.to_string());
      break;
    }
    s->sent += moved;
    maybe_migrate(c, rng);
  }
  s->writer_done = true;
  ::shutdown(s->wfd, SHUT_WR);  // sockets: end of file for the reader
  if (s->pipe) {  // pipes: closing the write end is the end of file
    ::close(s->wfd);
    s->wfd = -1;
  }
  linger(c);
}

void reader(run_ctx* c, stream* s, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<char>& buf = s->rbuf;
  const bool pooled = rng() % 4 == 0 && !s->pipe && s->may_pool;  // sockets only
  std::unique_ptr<pooled_receiver> rx;
  if (pooled) rx = std::make_unique<pooled_receiver>(s->rfd);
  auto check = [&](const char* p, std::size_t n) {
    const std::size_t at = s->received.load();
    for (std::size_t i = 0; i < n; ++i) {
      if (p[i] != pattern(static_cast<std::uint64_t>(s->id), at + i)) {
        c->fail(s, "reader: byte " + std::to_string(at + i) + " is wrong");
        return false;
      }
    }
    s->received += n;
    return true;
  };
  while (s->received.load() < s->total && !c->stopping.load()) {
    const absl::Time dl = pick_deadline(rng);
    const std::size_t want = std::min<std::size_t>(1 + rng() % buf.size(), s->total - s->received.load());
    result r;
    const char* p = buf.data();
    if (rx) {
      r = rx->recv(&p, dl);
    } else {
      const std::uint64_t pick = rng() % 5;
      // pipes: readv, read, and poll-then-read only
      switch (s->pipe ? (pick % 3 == 0 ? 2 : pick % 3 == 1 ? 3 : 4) : pick) {
        case 0: r = recv(s->rfd, buf.data(), want, 0, dl); break;
        case 1: {
          std::size_t got = 0;
          r = recv_all(s->rfd, buf.data(), want, &got, dl);
          if (!r.ok() && got && !check(buf.data(), got)) break;
          if (!r.ok()) break;
          r = result::from_res(static_cast<std::int64_t>(got));
          break;
        }
        case 2: {
          iovec iov[2] = {{buf.data(), want / 2 + 1}, {buf.data() + want / 2 + 1, want - want / 2}};
          r = readv(s->rfd, iov, 2, dl);
          break;
        }
        case 3: r = read(s->rfd, buf.data(), want, -1, dl); break;
        default: {
          result pr = poll(s->rfd, POLLIN, dl);
          if (!pr.ok()) {
            r = pr;
            break;
          }
          // Readable now, and this is the stream's only reader: the call finds the bytes.
          r = s->pipe ? read(s->rfd, buf.data(), want, -1)
                      : io::recv(s->rfd, buf.data(), want, MSG_DONTWAIT);
          if (r.error() == EAGAIN) continue;
          break;
        }
      }
    }
    if (!r.ok()) {
      if (r.error() == ECANCELED && c->stopping.load()) break;  // shutdown cancels
      if (!allowed(r.error())) {
        c->fail(s, "reader: " + r.to_string());
        break;
      }
      continue;
    }
    if (r.value() == 0) {
      if (s->received.load() != s->total && !c->stopping.load()) {
        // End of file before every byte: only if the writer stopped early (shutdown).
        if (!s->writer_done.load() || s->sent.load() != s->received.load()) {
          c->fail(s, "reader: end of file at " + std::to_string(s->received.load()) + " of " +
                         std::to_string(s->sent.load()) + " sent");
        }
      }
      break;
    }
    if (!check(p, static_cast<std::size_t>(r.value()))) break;
    if (!rx) maybe_migrate(c, rng);
  }
  rx.reset();
  s->reader_done = true;
  linger(c);
}

void make_pair(stream* s, std::mt19937_64& rng, int lfd, const sockaddr_in& addr) {
  switch (rng() % 3) {
    case 0: {
      int sv[2];
      (void)!socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
      s->rfd = sv[0];
      s->wfd = sv[1];
      break;
    }
    case 1: {
      int p[2];
      (void)!pipe2(p, O_CLOEXEC);
      s->rfd = p[0];
      s->wfd = p[1];
      s->pipe = true;
      break;
    }
    default: {
      const int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      (void)!::connect(c, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
      s->wfd = c;
      s->rfd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
      break;
    }
  }
}

// One run; returns false (with c->failure set) on a broken invariant.
bool run_seed(std::uint64_t seed, bool verbose) {
  std::mt19937_64 rng(seed);
  run_ctx c;
  c.seed = seed;
  c.workers = 2 + static_cast<int>(rng() % 4);
  Runtime::Options o;
  o.workers = c.workers;
  o.io = test_backend();
  o.idle_spin = absl::Microseconds(static_cast<int64_t>(rng() % 3 == 0 ? 0 : rng() % 100));
  o.rr_slice = absl::Microseconds(static_cast<int64_t>(50 + rng() % 2000));
  o.pin = rng() % 2;
  o.stall_budget = absl::ZeroDuration();
  const bool shut_early = rng() % 4 == 0;
  const int fds_before = open_fds();
  sockaddr_in addr;
  const int lfd = test_util::listen_loopback(&addr, 64);
  const int nstreams = 1 + static_cast<int>(rng() % 6);
  std::vector<std::unique_ptr<stream>> owned;
  bool ok = true;
  {
    auto made = Runtime::create(o);
    if (!made.ok()) {
      ::close(lfd);
      return true;  // io_uring unavailable (qemu-user): the epoll run covers this
    }
    auto rt = std::move(*made);
    for (int i = 0; i < nstreams; ++i) {
      owned.push_back(std::make_unique<stream>());
      stream* s = owned.back().get();
      s->id = i;
      s->total = 1 + rng() % 200000;
      s->may_pool = !shut_early;
      make_pair(s, rng, lfd, addr);
      c.streams.push_back(s);
      const std::uint64_t rs = rng(), ws = rng();
      s->reader = *rt->spawn([&c, s, rs] { reader(&c, s, rs); },
                             {.name = "reader", .worker = static_cast<int>(rng() % c.workers)});
      s->writer = *rt->spawn([&c, s, ws] { writer(&c, s, ws); },
                             {.name = "writer", .worker = static_cast<int>(rng() % c.workers)});
    }
    // Disturbers, from an OS thread: interrupts and spurious schedules.
    std::atomic<bool> calm{false};
    std::thread disturber([&, dseed = rng()] {
      std::mt19937_64 r(dseed);
      while (!calm.load()) {
        stream* s = c.streams[r() % c.streams.size()];
        thread* td = (r() % 2 ? s->reader : s->writer).get();
        if (r() % 3 == 0) {
          schedule(td);
        } else {
          interrupt(td, r() % 4 == 0);
        }
        std::this_thread::sleep_for(std::chrono::microseconds(50 + r() % 2000));
      }
    });
    const absl::Time bound = absl::Now() + absl::Seconds(lwkt::testing::under_qemu() ? 120 : 30);
    if (shut_early) {
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20000));
      c.stopping = true;
      calm = true;
      disturber.join();
      (void)rt->shutdown(absl::Milliseconds(200));
    } else {
      for (auto& s : owned) {
        while (!(s->reader_done.load() && s->writer_done.load()) && absl::Now() < bound &&
               !s->bad.load()) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        if (!(s->reader_done.load() && s->writer_done.load()) && !s->bad.load()) {
          c.fail(s.get(), "did not finish within the bound (lost completion or wakeup?): "
                          "received " + std::to_string(s->received.load()) + " of " +
                          std::to_string(s->sent.load()) + " sent, " +
                          std::to_string(s->total) + " total");
        }
      }
      calm = true;
      disturber.join();
      c.released = true;
      rt->wakeup(&c.released);
      if (c.failures.load() == 0) {
        for (auto& s : owned) {
          s->reader.join();
          s->writer.join();
          if (s->received.load() != s->total || s->sent.load() != s->total) {
            c.fail(s.get(), "bytes: received " + std::to_string(s->received.load()) +
                                ", sent " + std::to_string(s->sent.load()) + " of " +
                                std::to_string(s->total));
          }
        }
        absl::Status st = rt->shutdown(absl::Seconds(5));
        if (!st.ok()) c.fail(nullptr, "shutdown: " + std::string(st.message()));
      } else {
        (void)rt->shutdown(absl::Milliseconds(100));
      }
    }
  }
  for (auto& s : owned) {
    ::close(s->rfd);
    if (s->wfd >= 0) ::close(s->wfd);
  }
  ::close(lfd);
  if (c.failures.load() == 0 && open_fds() != fds_before) {
    c.fail(nullptr, "descriptors: " + std::to_string(open_fds()) + " open, " +
                        std::to_string(fds_before) + " before");
  }
  ok = c.failures.load() == 0;
  if (!ok || verbose) {
    std::fprintf(stderr, "io chaos seed %llu: %d workers, %d streams%s: %s\n",
                 static_cast<unsigned long long>(seed), c.workers, nstreams,
                 shut_early ? ", early shutdown" : "", ok ? "ok" : c.failure);
  }
  return ok;
}

TEST(IoChaos, SeededStreamsUnderInterruptsMigrationAndShutdown) {
  if (const char* one = std::getenv("LWKT_IO_CHAOS_SEED")) {
    EXPECT_TRUE(run_seed(std::strtoull(one, nullptr, 10), true));
    return;
  }
  int seeds = 150;
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  seeds = 100;
#endif
  if (lwkt::testing::under_qemu()) seeds = 15;
  if (const char* v = std::getenv("LWKT_IO_CHAOS_SEEDS")) seeds = std::atoi(v);
  if (!Runtime::create({.workers = 1, .io = test_backend()}).ok()) {
    GTEST_SKIP() << "io_uring unavailable here (qemu-user?); the epoll run covers this";
  }
  int failed = 0;
  for (int i = 1; i <= seeds; ++i) {
    if (!run_seed(static_cast<std::uint64_t>(i), false)) {
      ++failed;
      ADD_FAILURE() << "io chaos: seed " << i
                    << " failed; replay with LWKT_IO_CHAOS_SEED=" << i;
      if (failed >= 3) break;
    }
  }
  std::printf("io chaos: %d seeds ran\n", seeds);
}

}  // namespace
}  // namespace lwkt::io
