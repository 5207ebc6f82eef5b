// server.cc: the listening sockets, acceptors, dispatchers and connection threads.
//
// Threads. Worker w runs: an acceptor (io::listener on its own SO_REUSEPORT socket), a
// dispatcher (a thread_port that receives connections handed over by other workers'
// acceptors) and one thread per connection. Connection threads never migrate, so each
// worker's registry of connections (worker_state) is touched only on that worker and
// needs no lock. open_per_worker is read by every acceptor (relaxed: a load estimate).
#include "examples/httpd/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <algorithm>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "examples/httpd/connection.h"
#include "io/io.h"
#include "lwkt/runtime.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "msgport/msgport.h"

namespace httpd {

namespace {

struct handoff_msg {
  lwkt::lwkt_msg m;  // first
  int fd = -1;
};

absl::StatusOr<int> listen_on(const std::string& address, int port) {
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (inet_pton(AF_INET, address.c_str(), &a.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("httpd: bad IPv4 address '", address, "'"));
  }
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
      bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 4096) != 0) {
    const int e = errno;
    if (fd >= 0) ::close(fd);
    return absl::UnavailableError(
        absl::StrFormat("httpd: cannot listen on %s:%d: %s", address, port, strerror(e)));
  }
  return fd;
}

int bound_port(int fd) {
  sockaddr_in a = {};
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

}  // namespace

void start_connection(server::state* s, int fd, int w) {
  auto td = s->rt->spawn([s, fd, w] { run_connection(s, fd, w); },
                         {.name = "conn", .worker = w});
  if (!td.ok()) {  // shutting down
    ::close(fd);
    s->open_per_worker[static_cast<std::size_t>(w)].fetch_sub(1, std::memory_order_relaxed);
    s->open.fetch_sub(1, std::memory_order_relaxed);
  }
}

namespace {

// Seastar's rule: move a connection when this worker has more than the least loaded one by
// a quarter and at least 2.
int pick_worker(server::state* s, int w) {
  const auto load = [&](int i) {
    return s->open_per_worker[static_cast<std::size_t>(i)].load(std::memory_order_relaxed);
  };
  int best = w;
  for (int i = 0; i < s->nworkers; ++i) {
    if (load(i) < load(best)) best = i;
  }
  const long mine = load(w), least = load(best);
  return mine > least + std::max(2L, least / 4) ? best : w;
}

void acceptor(server::state* s, int w) {
  lwkt::thread_port replies;  // handoff messages come back here to be freed
  int outstanding = 0;
  {
    lwkt::io::listener l(s->listen_fds[static_cast<std::size_t>(w)]);
    while (!s->draining.load(std::memory_order_acquire)) {
      while (lwkt::lwkt_msg* m = lwkt::lwkt_getport(&replies)) {
        delete reinterpret_cast<handoff_msg*>(m);
        --outstanding;
      }
      const lwkt::io::result r = l.accept();
      if (!r.ok()) {
        if (r.error() == EINTR || r.error() == ECANCELED) break;
        (void)lwkt::io::sleep_for(absl::Milliseconds(10));  // EMFILE and the like: back off
        continue;
      }
      const int fd = static_cast<int>(r.value());
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      s->accepted.fetch_add(1, std::memory_order_relaxed);
      const int target = s->opts.policy == balance::handoff ? pick_worker(s, w) : w;
      s->open_per_worker[static_cast<std::size_t>(target)].fetch_add(1, std::memory_order_relaxed);
      s->open.fetch_add(1, std::memory_order_relaxed);
      if (target == w) {
        start_connection(s, fd, w);
        continue;
      }
      s->handed_off.fetch_add(1, std::memory_order_relaxed);
      auto* hm = new handoff_msg;
      lwkt::lwkt_initmsg(&hm->m, &replies, 0);
      hm->fd = fd;
      lwkt::lwkt_sendmsg(s->ports[static_cast<std::size_t>(target)].load(), &hm->m);
      ++outstanding;
    }
  }
  while (outstanding > 0) {  // the port must be empty before it goes
    delete reinterpret_cast<handoff_msg*>(lwkt::lwkt_waitport(&replies, 0));
    --outstanding;
  }
}

void dispatcher(server::state* s, int w, std::atomic<int>* ready) {
  lwkt::thread_port port;
  s->ports[static_cast<std::size_t>(w)].store(&port);
  ready->fetch_add(1);
  for (;;) {
    lwkt::lwkt_msg* m = lwkt::lwkt_waitport(&port, lwkt::PCATCH);
    if (!m) {
      if (s->dispatchers_stop.load(std::memory_order_acquire)) break;
      continue;
    }
    start_connection(s, reinterpret_cast<handoff_msg*>(m)->fd, w);
    lwkt::lwkt_replymsg(m, 0);
  }
  while (lwkt::lwkt_msg* m = lwkt::lwkt_getport(&port)) {  // none expected: acceptors are gone
    ::close(reinterpret_cast<handoff_msg*>(m)->fd);
    lwkt::lwkt_replymsg(m, ECANCELED);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<server>> server::start(const options& o) {
  auto s = std::make_unique<state>();
  s->opts = o;
  if (!o.root.empty()) {
    s->root_fd = ::open(o.root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    char real[PATH_MAX];
    if (s->root_fd >= 0 && realpath(o.root.c_str(), real)) s->root_real = real;
    if (s->root_fd < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("httpd: --root '", o.root, "' is not a directory: ", strerror(errno)));
    }
  }
  lwkt::Runtime::Options ro;
  ro.workers = o.workers > 0 ? o.workers : lwkt::Runtime::kAutoWorkers;
  ro.idle_spin = o.idle_spin;
  ro.pin = o.pin;
  auto rt = lwkt::Runtime::create(ro);
  if (!rt.ok()) return rt.status();
  s->rt = std::move(*rt);
  s->nworkers = s->rt->workers();
  int port = o.port;
  for (int w = 0; w < s->nworkers; ++w) {
    absl::StatusOr<int> fd = listen_on(o.address, port);
    if (!fd.ok()) return fd.status();  // ~state closes the others
    s->listen_fds.push_back(*fd);
    port = bound_port(*fd);
  }
  s->port = port;
  s->open_per_worker = std::make_unique<std::atomic<long>[]>(static_cast<std::size_t>(s->nworkers));
  s->ports = std::make_unique<std::atomic<lwkt::thread_port*>[]>(static_cast<std::size_t>(s->nworkers));
  s->ws.resize(static_cast<std::size_t>(s->nworkers));
  std::atomic<int> ready{0};
  state* sp = s.get();
  for (int w = 0; w < s->nworkers; ++w) {
    auto d = s->rt->spawn([sp, w, &ready] { dispatcher(sp, w, &ready); },
                          {.name = "dispatcher", .worker = w});
    if (!d.ok()) return d.status();
    s->dispatchers.push_back(std::move(*d));
  }
  while (ready.load() < s->nworkers) absl::SleepFor(absl::Microseconds(100));
  for (int w = 0; w < s->nworkers; ++w) {
    auto a = s->rt->spawn([sp, w] { acceptor(sp, w); }, {.name = "acceptor", .worker = w});
    if (!a.ok()) return a.status();
    s->acceptors.push_back(std::move(*a));
  }
  return std::unique_ptr<server>(new server(std::move(s)));
}

server::state::~state() {
  for (int fd : listen_fds) {
    if (fd >= 0) ::close(fd);
  }
  if (root_fd >= 0) ::close(root_fd);
}

server::server(std::unique_ptr<state> s) : _s(std::move(s)) {}

server::~server() {
  drain();
  wait_drained(absl::Now() + absl::Seconds(5));
  (void)_s->rt->shutdown(absl::Seconds(2));
}

int server::port() const { return _s->port; }
int server::workers() const { return _s->nworkers; }

counters server::stats() const {
  counters c;
  c.accepted = _s->accepted.load();
  c.requests = _s->requests.load();
  c.handed_off = _s->handed_off.load();
  c.open = _s->open.load();
  return c;
}

void server::drain() {
  if (_s->draining.exchange(true)) return;
  for (auto& a : _s->acceptors) lwkt::interrupt(a.get());
  for (auto& a : _s->acceptors) a.join();
  for (int& fd : _s->listen_fds) {  // new connections are refused from here on
    ::close(fd);
    fd = -1;
  }
  _s->dispatchers_stop.store(true);
  for (auto& d : _s->dispatchers) lwkt::interrupt(d.get());
  for (auto& d : _s->dispatchers) d.join();
  // Idle connections close now; busy ones after the requests they have (connection.cc).
  state* s = _s.get();
  for (int w = 0; w < s->nworkers; ++w) {
    auto t = s->rt->spawn([s, w] { interrupt_idle(s, w); }, {.name = "drainer", .worker = w});
    if (t.ok()) t->join();
  }
}

bool server::wait_drained(absl::Time deadline) {
  while (_s->open.load() > 0) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

}  // namespace httpd
