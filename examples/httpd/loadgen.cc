// loadgen: an open-loop HTTP/1.1 client. Requests are due at a fixed rate (one every
// 1/rate seconds) whatever the server does; each is sent on the next idle keep-alive
// connection, and its latency runs from the time it was due, not from when it could be
// sent, so a slow server's queueing shows in the figures (wrk, a closed loop, hides it:
// coordinated omission). Prints one JSON object:
//   {"rate": R, "sent": N, "completed": N, "errors": N, "achieved_rps": X,
//    "p50_us": .., "p90_us": .., "p99_us": .., "p999_us": .., "max_us": ..}
// Usage: loadgen --port P --rate R --seconds S [--connections C] [--path /]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"

ABSL_FLAG(int, port, 8080, "server port on 127.0.0.1");
ABSL_FLAG(double, rate, 1000, "requests per second (open loop)");
ABSL_FLAG(double, seconds, 5, "duration of the sending phase");
ABSL_FLAG(int, connections, 64, "keep-alive connections (each with one request at a time)");
ABSL_FLAG(std::string, path, "/", "request target");

namespace {

using clock_type = std::chrono::steady_clock;

struct conn {
  int fd = -1;
  bool busy = false;
  clock_type::time_point due;  // of the request in flight
  std::string in;
};

// Bytes of one whole response at the front of `in`, or 0 if it is not all there yet.
std::size_t response_size(const std::string& in) {
  const std::size_t end = in.find("\r\n\r\n");
  if (end == std::string::npos) return 0;
  std::size_t len = 0;
  const std::size_t cl = in.find("Content-Length: ");
  if (cl != std::string::npos && cl < end) len = std::strtoull(in.c_str() + cl + 16, nullptr, 10);
  return in.size() >= end + 4 + len ? end + 4 + len : 0;
}

int connect_loopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return -1;
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int port = absl::GetFlag(FLAGS_port);
  const double rate = absl::GetFlag(FLAGS_rate);
  const auto period = std::chrono::duration<double>(1.0 / rate);
  const std::string req = "GET " + absl::GetFlag(FLAGS_path) + " HTTP/1.1\r\nHost: l\r\n\r\n";
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  std::vector<conn> conns(static_cast<std::size_t>(absl::GetFlag(FLAGS_connections)));
  std::deque<std::size_t> idle;
  for (std::size_t i = 0; i < conns.size(); ++i) {
    conns[i].fd = connect_loopback(port);
    if (conns[i].fd < 0) {
      std::fprintf(stderr, "loadgen: cannot connect to 127.0.0.1:%d\n", port);
      return 1;
    }
    epoll_event ev{EPOLLIN, {.u64 = i}};
    epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
    idle.push_back(i);
  }
  std::vector<double> lat_us;
  std::deque<clock_type::time_point> backlog;  // due, waiting for an idle connection
  long sent = 0, errors = 0;
  const auto start = clock_type::now();
  const auto stop_sending = start + std::chrono::duration_cast<clock_type::duration>(
                                        std::chrono::duration<double>(absl::GetFlag(FLAGS_seconds)));
  auto next_due = start;
  char buf[65536];
  for (;;) {
    const auto now = clock_type::now();
    while (next_due <= now && next_due < stop_sending) {
      backlog.push_back(next_due);
      next_due += std::chrono::duration_cast<clock_type::duration>(period);
    }
    while (!backlog.empty() && !idle.empty()) {
      conn& c = conns[idle.front()];
      idle.pop_front();
      c.busy = true;
      c.due = backlog.front();
      backlog.pop_front();
      if (::send(c.fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
        ++errors;
      }
      ++sent;
    }
    const bool sending = next_due < stop_sending;
    if (!sending && backlog.empty() && idle.size() == conns.size()) break;
    if (!sending && now > stop_sending + std::chrono::seconds(10)) break;  // give up on stragglers
    const auto wait = sending ? std::chrono::duration_cast<std::chrono::milliseconds>(next_due - now)
                              : std::chrono::milliseconds(100);
    epoll_event evs[64];
    const int n = epoll_wait(ep, evs, 64, static_cast<int>(std::max<long>(0, wait.count())));
    for (int k = 0; k < n; ++k) {
      conn& c = conns[evs[k].data.u64];
      const ssize_t got = ::recv(c.fd, buf, sizeof buf, 0);
      if (got <= 0) {
        ++errors;
        epoll_ctl(ep, EPOLL_CTL_DEL, c.fd, nullptr);
        continue;
      }
      c.in.append(buf, static_cast<std::size_t>(got));
      if (const std::size_t sz = response_size(c.in); sz && c.busy) {
        c.in.erase(0, sz);
        c.busy = false;
        lat_us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - c.due).count());
        idle.push_back(evs[k].data.u64);
      }
    }
  }
  const double elapsed = std::chrono::duration<double>(clock_type::now() - start).count();
  std::sort(lat_us.begin(), lat_us.end());
  auto q = [&](double p) {
    return lat_us.empty() ? 0.0 : lat_us[std::min(lat_us.size() - 1, static_cast<std::size_t>(p * lat_us.size()))];
  };
  std::printf("{\"rate\": %.0f, \"sent\": %ld, \"completed\": %zu, \"errors\": %ld, "
              "\"achieved_rps\": %.0f, \"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, "
              "\"p999_us\": %.1f, \"max_us\": %.1f}\n",
              rate, sent, lat_us.size(), errors, lat_us.size() / elapsed, q(0.5), q(0.9), q(0.99),
              q(0.999), lat_us.empty() ? 0.0 : lat_us.back());
  return 0;
}
