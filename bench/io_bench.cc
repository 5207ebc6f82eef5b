// I/O benchmarks (io/io.h), each beside the peer a server author would otherwise write:
//   BM_Echo_Lwkt/<conns>    TCP echo over loopback: a 1-worker lwkt server (io_uring; one
//                           lwkt thread per connection) on CPU 0, ns per round trip
//   BM_Echo_LwktNoSpin/<c>  the same with idle_spin 0 (the worker parks at once, as the
//                           epoll loop does)
//   BM_Echo_LwktEpoll/<c>   lwkt on its epoll backend (the fallback), default options
//   BM_Echo_Epoll/<conns>   the same client against a plain single-threaded epoll loop
//   BM_Echo_Asio/<conns>    ... and against Boost.Asio's async echo server (one thread)
//   BM_IoSubmit_Single      ns per operation (an immediately-ready poll), one thread
//   BM_IoSubmit_Batched     the same with 32 threads, whose submissions share enters
// The client is the same for both servers: one OS thread on CPU 1 with `conns` connections,
// one 64-byte message outstanding on each (ping-pong), epoll for readiness. With one
// connection it also reports the round trip's p50/p99 (us). server_cpu_ns: the server
// thread's CPU time per round trip (the client may be what limits throughput).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <liburing.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <utility>  // Boost 1.74's asio/awaitable.hpp uses std::exchange without it (C++20)
#include <boost/asio.hpp>
#include <memory>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "benchmark/benchmark.h"
#include "bench/bench_util.h"
#include "io/io.h"
#include "lwkt/runtime.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "lwkt/thread.h"

namespace {

using lwkt::Runtime;
namespace io = lwkt::io;

constexpr std::size_t kMsg = 64;

int listen_loopback(sockaddr_in* addr) {
  const int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0) std::abort();
  *addr = {};
  addr->sin_family = AF_INET;
  addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, reinterpret_cast<sockaddr*>(addr), sizeof *addr) != 0) std::abort();
  if (listen(lfd, 1024) != 0) std::abort();
  socklen_t len = sizeof *addr;
  getsockname(lfd, reinterpret_cast<sockaddr*>(addr), &len);
  return lfd;
}

void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// The client: `conns` connections, one message outstanding on each.
class echo_client {
 public:
  echo_client(const sockaddr_in& addr, int conns) : _ep(epoll_create1(EPOLL_CLOEXEC)) {
    for (int i = 0; i < conns; ++i) {
      const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) std::abort();
      set_nodelay(fd);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u32 = static_cast<std::uint32_t>(i);
      epoll_ctl(_ep, EPOLL_CTL_ADD, fd, &ev);
      _fds.push_back(fd);
    }
    _got.assign(_fds.size(), 0);
    _sent_at.assign(_fds.size(), 0);
  }
  ~echo_client() {
    for (int fd : _fds) ::close(fd);
    ::close(_ep);
  }

  // Completes `rounds` round trips (spread over the connections); latencies (ns) of each
  // when `lat` is not null.
  void run(std::int64_t rounds, std::vector<std::int64_t>* lat) {
    char msg[kMsg];
    std::memset(msg, 'm', sizeof msg);
    std::int64_t started = 0, done = 0;
    for (std::size_t i = 0; i < _fds.size() && started < rounds; ++i, ++started) send_one(i, msg);
    epoll_event evs[64];
    while (done < rounds) {
      const int n = epoll_wait(_ep, evs, 64, -1);
      for (int k = 0; k < n; ++k) {
        const std::size_t i = evs[k].data.u32;
        char buf[kMsg];
        const ssize_t r = ::recv(_fds[i], buf, kMsg - _got[i], 0);
        if (r <= 0) std::abort();
        _got[i] += static_cast<std::size_t>(r);
        if (_got[i] < kMsg) continue;
        _got[i] = 0;
        ++done;
        if (lat) lat->push_back(now_ns() - _sent_at[i]);
        if (started < rounds) {
          send_one(i, msg);
          ++started;
        }
      }
    }
  }

 private:
  static std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch()).count();
  }
  void send_one(std::size_t i, const char* msg) {
    _sent_at[i] = now_ns();
    if (::send(_fds[i], msg, kMsg, MSG_NOSIGNAL) != static_cast<ssize_t>(kMsg)) std::abort();
  }
  int _ep;
  std::vector<int> _fds;
  std::vector<std::size_t> _got;
  std::vector<std::int64_t> _sent_at;
};

void report_latency(benchmark::State& state, std::vector<std::int64_t>& lat) {
  if (lat.empty()) return;
  std::sort(lat.begin(), lat.end());
  state.counters["p50_us"] = static_cast<double>(lat[lat.size() / 2]) / 1e3;
  state.counters["p99_us"] = static_cast<double>(lat[lat.size() * 99 / 100]) / 1e3;
}

std::int64_t cpu_ns(clockid_t c) {
  timespec ts{};
  clock_gettime(c, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Drives the client for as long as the benchmark wants, 1,000 round trips a batch.
// `server_cpu` reads the server thread's CPU time (ns): the client is the same for both
// servers and may be what limits throughput, so the server's CPU per round trip is the
// figure that compares the servers themselves.
template <class ServerCpu>
void drive(benchmark::State& state, const sockaddr_in& addr, ServerCpu&& server_cpu) {
  const int conns = static_cast<int>(state.range(0));
  lwkt_bench::pin_os_thread(1);
  echo_client client(addr, conns);
  std::vector<std::int64_t> lat;
  client.run(conns * 10, nullptr);  // warm up every connection
  const std::int64_t cpu0 = server_cpu();
  constexpr std::int64_t kBatch = 1000;
  while (state.KeepRunningBatch(kBatch)) client.run(kBatch, conns == 1 ? &lat : nullptr);
  const std::int64_t cpu1 = server_cpu();
  state.SetItemsProcessed(state.iterations());
  state.counters["server_cpu_ns"] =
      static_cast<double>(cpu1 - cpu0) / static_cast<double>(state.iterations());
  report_latency(state, lat);
}

void echo_lwkt(benchmark::State& state, absl::Duration idle_spin,
               lwkt::io_backend backend = lwkt::io_backend::io_uring) {
  Runtime::Options o;
  o.workers = 1;
  o.cpus = {0};
  o.idle_spin = idle_spin;
  o.io = backend;
  auto made = Runtime::create(o);
  if (!made.ok()) {
    state.SkipWithError(std::string(made.status().message()).c_str());
    return;
  }
  auto rt = std::move(*made);
  sockaddr_in addr;
  const int lfd = listen_loopback(&addr);
  auto acceptor = rt->spawn([lfd] {
    for (;;) {
      io::result a = io::accept(lfd, nullptr, nullptr);
      if (!a.ok()) return;
      const int fd = static_cast<int>(a.value());
      set_nodelay(fd);
      (void)lwkt::create([fd] {
        char buf[4096];
        for (;;) {
          io::result r = io::recv(fd, buf, sizeof buf);
          if (!r.ok() || r.value() == 0) break;
          if (!io::send_all(fd, buf, static_cast<std::size_t>(r.value())).ok()) break;
        }
        (void)io::close(fd);
      }, {.name = "echo"});
    }
  }, {.name = "acceptor"});
  // lwkt threads run on the worker's OS thread: its CPU clock is the server's.
  drive(state, addr, [&] {
    std::int64_t ns = 0;
    auto t = rt->spawn([&ns] { ns = cpu_ns(CLOCK_THREAD_CPUTIME_ID); }, {.name = "cpu"});
    t->join();
    return ns;
  });
  lwkt::interrupt(acceptor->get());
  acceptor->join();
  ::close(lfd);
  (void)rt->shutdown(absl::Seconds(2));
}
// Default options (the worker spins 50 us before it parks), and parking at once, which is
// what the epoll loop does in epoll_wait.
void BM_Echo_Lwkt(benchmark::State& state) { echo_lwkt(state, absl::Microseconds(50)); }
BENCHMARK(BM_Echo_Lwkt)->Arg(1)->Arg(64)->UseRealTime();
void BM_Echo_LwktNoSpin(benchmark::State& state) { echo_lwkt(state, absl::ZeroDuration()); }
BENCHMARK(BM_Echo_LwktNoSpin)->Arg(1)->Arg(64)->UseRealTime();
// lwkt's epoll backend (the fallback), default options.
void BM_Echo_LwktEpoll(benchmark::State& state) {
  echo_lwkt(state, absl::Microseconds(50), lwkt::io_backend::epoll);
}
BENCHMARK(BM_Echo_LwktEpoll)->Arg(1)->Arg(64)->UseRealTime();

// The reference a server author would write: one thread, level-triggered epoll,
// non-blocking sockets, read then write back.
void BM_Echo_Epoll(benchmark::State& state) {
  sockaddr_in addr;
  const int lfd = listen_loopback(&addr);
  const int stop = eventfd(0, EFD_CLOEXEC);
  std::thread server([lfd, stop] {
    lwkt_bench::pin_os_thread(0);
    const int ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = lfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.fd = stop;
    epoll_ctl(ep, EPOLL_CTL_ADD, stop, &ev);
    std::vector<int> conns;
    epoll_event evs[64];
    char buf[4096];
    for (bool running = true; running;) {
      const int n = epoll_wait(ep, evs, 64, -1);
      for (int k = 0; k < n; ++k) {
        const int fd = evs[k].data.fd;
        if (fd == stop) {
          running = false;
        } else if (fd == lfd) {
          const int c = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) continue;
          set_nodelay(c);
          ev.data.fd = c;
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
          conns.push_back(c);
        } else {
          const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
          if (r <= 0) {
            if (r < 0 && errno == EAGAIN) continue;
            epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
            continue;
          }
          for (ssize_t off = 0; off < r;) {
            const ssize_t w = ::send(fd, buf + off, static_cast<std::size_t>(r - off), MSG_NOSIGNAL);
            if (w <= 0) break;  // a 64-byte echo never fills the socket buffer
            off += w;
          }
        }
      }
    }
    for (int c : conns) ::close(c);
    ::close(ep);
  });
  clockid_t server_clock;
  pthread_getcpuclockid(server.native_handle(), &server_clock);
  drive(state, addr, [&] { return cpu_ns(server_clock); });
  const std::uint64_t one = 1;
  (void)!::write(stop, &one, sizeof one);
  server.join();
  ::close(stop);
  ::close(lfd);
}
BENCHMARK(BM_Echo_Epoll)->Arg(1)->Arg(64)->UseRealTime();

// Boost.Asio (Debian's libboost 1.74), the textbook async echo server: one io_context run
// by one thread on CPU 0, async_read_some / async_write per connection.
class asio_session : public std::enable_shared_from_this<asio_session> {
 public:
  explicit asio_session(boost::asio::ip::tcp::socket s) : _s(std::move(s)) {}
  void start() { read(); }

 private:
  void read() {
    auto self = shared_from_this();
    _s.async_read_some(boost::asio::buffer(_buf), [self](boost::system::error_code ec, std::size_t n) {
      if (ec) return;
      boost::asio::async_write(self->_s, boost::asio::buffer(self->_buf, n),
                               [self](boost::system::error_code ec2, std::size_t) {
                                 if (!ec2) self->read();
                               });
    });
  }
  boost::asio::ip::tcp::socket _s;
  std::array<char, 4096> _buf;
};

void asio_accept(boost::asio::ip::tcp::acceptor& a) {
  a.async_accept([&a](boost::system::error_code ec, boost::asio::ip::tcp::socket s) {
    if (ec) return;
    s.set_option(boost::asio::ip::tcp::no_delay(true));
    std::make_shared<asio_session>(std::move(s))->start();
    asio_accept(a);
  });
}

void BM_Echo_Asio(benchmark::State& state) {
  boost::asio::io_context ctx(1);
  boost::asio::ip::tcp::acceptor acceptor(
      ctx, boost::asio::ip::tcp::endpoint(boost::asio::ip::address_v4::loopback(), 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(acceptor.local_endpoint().port());
  asio_accept(acceptor);
  auto guard = boost::asio::make_work_guard(ctx);
  std::thread server([&ctx] {
    lwkt_bench::pin_os_thread(0);
    ctx.run();
  });
  clockid_t server_clock;
  pthread_getcpuclockid(server.native_handle(), &server_clock);
  drive(state, addr, [&] { return cpu_ns(server_clock); });
  ctx.stop();
  server.join();
}
BENCHMARK(BM_Echo_Asio)->Arg(1)->Arg(64)->UseRealTime();

// Submit cost: `threads` lwkt threads on one worker share batches of 1,000 operations that
// complete at once (poll for POLLOUT on an empty pipe); the benchmark's OS thread, on
// another CPU, hands out a batch and waits for it. ns per operation.
void submit_cost(benchmark::State& state, int threads, bool deadline = false) {
  Runtime::Options o;
  o.workers = 1;
  o.cpus = {0};
  o.io = lwkt::io_backend::io_uring;
  auto made = Runtime::create(o);
  if (!made.ok()) {
    state.SkipWithError(std::string(made.status().message()).c_str());
    return;
  }
  auto rt = std::move(*made);
  lwkt_bench::pin_os_thread(1);
  int p[2];
  if (pipe(p) != 0) std::abort();
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> budget{0}, completed{0};
  std::vector<lwkt::thread_ref> tds;
  for (int i = 0; i < threads; ++i) {
    tds.push_back(*rt->spawn([&] {
      while (!stop.load(std::memory_order_acquire)) {
        std::int64_t b = budget.load(std::memory_order_acquire);
        if (b <= 0) {
          lwkt::tsleep_interlock(&budget);
          if (budget.load() <= 0 && !stop.load()) lwkt::tsleep(&budget, lwkt::PINTERLOCKED, "batch");
          continue;
        }
        if (!budget.compare_exchange_weak(b, b - 1)) continue;
        const absl::Time dl = deadline ? absl::Now() + absl::Seconds(1) : absl::InfiniteFuture();
        if (!io::poll(p[1], POLLOUT, dl).ok()) std::abort();
        completed.fetch_add(1, std::memory_order_release);
      }
    }, {.name = "poller", .worker = 0}));
  }
  constexpr std::int64_t kBatch = 1000;
  std::int64_t target = 0;
  while (state.KeepRunningBatch(kBatch)) {
    target += kBatch;
    budget.store(kBatch, std::memory_order_release);
    rt->wakeup(&budget);
    while (completed.load(std::memory_order_acquire) < target) {}
  }
  stop.store(true, std::memory_order_release);
  rt->wakeup(&budget);
  for (auto& td : tds) td.join();
  state.SetItemsProcessed(state.iterations());
  ::close(p[0]);
  ::close(p[1]);
  (void)rt->shutdown(absl::Seconds(2));
}

void BM_IoSubmit_Single(benchmark::State& state) { submit_cost(state, 1); }
BENCHMARK(BM_IoSubmit_Single)->UseRealTime();
void BM_IoSubmit_Batched(benchmark::State& state) { submit_cost(state, 32); }
BENCHMARK(BM_IoSubmit_Batched)->UseRealTime();

}  // namespace

namespace {

// Deadlines: what a deadline adds to an operation that completes at once (poll for POLLOUT
// on an empty pipe). lwkt uses the worker's timer heap (the tsleep timeout):
// BM_IoSubmit_SingleDeadline vs BM_IoSubmit_Single. The alternative, a linked-timeout SQE
// per operation, is measured on a bare ring with the same setup flags, without lwkt
// (BM_IoRaw_PollLinkedTimeout vs BM_IoRaw_Poll), since lwkt does not implement it.
void BM_IoSubmit_SingleDeadline(benchmark::State& state) { submit_cost(state, 1, true); }
BENCHMARK(BM_IoSubmit_SingleDeadline)->UseRealTime();

void raw_poll(benchmark::State& state, bool linked_timeout) {
  io_uring ring;
  io_uring_params prm{};
  prm.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  if (io_uring_queue_init_params(64, &ring, &prm) != 0) {
    state.SkipWithError("io_uring_queue_init_params failed");
    return;
  }
  lwkt_bench::pin_os_thread(0);
  int p[2];
  if (pipe(p) != 0) std::abort();
  __kernel_timespec ts{1, 0};
  for (auto _ : state) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    io_uring_prep_poll_add(sqe, p[1], POLLOUT);
    unsigned want = 1;
    if (linked_timeout) {
      sqe->flags |= IOSQE_IO_LINK;
      io_uring_prep_link_timeout(io_uring_get_sqe(&ring), &ts, 0);
      want = 2;  // the poll's CQE and the timeout's (-ECANCELED: the poll came first)
    }
    io_uring_submit_and_wait(&ring, want);
    io_uring_cq_advance(&ring, io_uring_cq_ready(&ring));
  }
  ::close(p[0]);
  ::close(p[1]);
  io_uring_queue_exit(&ring);
}
void BM_IoRaw_Poll(benchmark::State& state) { raw_poll(state, false); }
BENCHMARK(BM_IoRaw_Poll)->UseRealTime();
void BM_IoRaw_PollLinkedTimeout(benchmark::State& state) { raw_poll(state, true); }
BENCHMARK(BM_IoRaw_PollLinkedTimeout)->UseRealTime();

}  // namespace
