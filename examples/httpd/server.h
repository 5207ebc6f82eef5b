// server.h: an HTTP/1.1 server on lwkt. One lwkt thread per connection (keep-alive and
// pipelining), an acceptor on every worker (each with its own SO_REUSEPORT socket), the
// requests parsed by Boost.Beast's request_parser, a fixed response or static files from a
// root directory. examples/httpd/main.cc is the command line around it.
//
// Balance. With balance::reuseport a connection stays on the worker whose socket the kernel
// hashed it to. With balance::handoff an acceptor whose worker has more open connections
// than the least loaded one (by more than a quarter, and at least 2) sends the connection
// to that worker's dispatcher port (msgport/msgport.h, a thread_port), whose thread starts
// the connection's thread there (Seastar's policy, instead of trusting the hash alone).
//
// Limits. A malformed request gets 400, a header section over max_header_bytes 431, a body
// over max_body_bytes 413, a Transfer-Encoding other than chunked 501; each then closes its
// connection and nothing else. A request must arrive whole within request_timeout of its
// first byte (slowloris: 408 and close), and an idle keep-alive connection is closed after
// keepalive_timeout.
//
// Drain. drain() stops accepting, closes idle connections and lets each busy one finish
// the requests it has received, then close; wait_drained() waits for the last.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace httpd {

enum class balance { reuseport, handoff };

struct options {
  std::string address = "0.0.0.0";
  int port = 8080;                         // 0: any free port (see server::port)
  int workers = 0;                         // 0: one per processing unit
  std::string root;                        // static files from here; empty: the fixed body
  std::string body = "Hello, world!\n";    // the fixed response
  std::string extra_headers;               // appended to every response ("Name: v\r\n"...)
  std::size_t max_header_bytes = 8192;
  std::size_t max_body_bytes = 1 << 20;
  absl::Duration request_timeout = absl::Seconds(10);
  absl::Duration keepalive_timeout = absl::Seconds(5);
  bool access_log = false;                 // one line per request on stderr
  bool stats = false;                      // GET /-/stats: the runtime's ps and I/O counters
  balance policy = balance::reuseport;
  // Runtime::Options::idle_spin. 0 (park at once): on 2 vCPUs throughput is the same as
  // with 50 us (wrk by hand: 154.9k vs 155.2k requests/s) and a client or other process on
  // the machine keeps its CPU (docs/httpd.md: open loop p50 61 us vs 1036 us with spins).
  absl::Duration idle_spin = absl::ZeroDuration();
  // Runtime::Options::pin: bind each worker to its processing unit (the runtime's default).
  // A server that shares its CPUs with busy processes may do better unpinned: the kernel can
  // then move a woken worker off a CPU another process holds (docs/httpd.md).
  bool pin = true;
};

struct counters {
  std::uint64_t accepted = 0;
  std::uint64_t requests = 0;
  std::uint64_t handed_off = 0;  // connections moved to another worker (balance::handoff)
  std::int64_t open = 0;         // connections open now
};

class server {
 public:
  // Binds, listens and starts the runtime's workers. Errors: the address or port (in use,
  // bad), the root directory, the runtime's options.
  static absl::StatusOr<std::unique_ptr<server>> start(const options& o);
  ~server();  // drains (if not yet) and shuts the runtime down
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  int port() const;
  int workers() const;
  counters stats() const;
  // Runs on: any OS thread that is not a worker. Returns at once.
  void drain();
  // True once every connection has closed (after drain()), false at the deadline.
  bool wait_drained(absl::Time deadline);

  struct state;  // server.cc

 private:
  explicit server(std::unique_ptr<state> s);
  std::unique_ptr<state> _s;
};

}  // namespace httpd
