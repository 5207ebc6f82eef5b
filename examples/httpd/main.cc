// httpd: an HTTP/1.1 server on lwkt (server.h). Prints "httpd: listening on ADDR:PORT ..."
// once it accepts. SIGINT or SIGTERM drains it (stop accepting, finish in-flight requests,
// close idle connections) and it exits 0 within --drain_timeout; a second signal exits at
// once (status 130). Signals are taken by this main thread with sigtimedwait, never by a
// worker: they are blocked before the runtime starts, so every worker inherits the mask.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "examples/httpd/server.h"

ABSL_FLAG(std::string, address, "0.0.0.0", "IPv4 address to listen on");
ABSL_FLAG(int, port, 8080, "TCP port (0: any free port)");
ABSL_FLAG(int, workers, 0, "lwkt workers (0: one per processing unit)");
ABSL_FLAG(std::string, root, "", "serve static files from this directory (else --body)");
ABSL_FLAG(std::string, body, "Hello, world!\n", "the fixed response body");
ABSL_FLAG(int, pad_headers, 0, "add an X-Pad header of this many bytes to every response");
ABSL_FLAG(std::string, balance, "reuseport",
          "reuseport (the kernel's hash) or handoff (move connections to the least loaded "
          "worker through its message port)");
ABSL_FLAG(int, max_header_bytes, 8192, "larger header sections get 431");
ABSL_FLAG(int, max_body_bytes, 1 << 20, "larger bodies get 413");
ABSL_FLAG(absl::Duration, request_timeout, absl::Seconds(10),
          "a request must arrive whole within this of its first byte (else 408)");
ABSL_FLAG(absl::Duration, keepalive_timeout, absl::Seconds(5), "idle connections close after this");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(10), "on SIGINT/SIGTERM, exit within this");
ABSL_FLAG(absl::Duration, idle_spin, absl::ZeroDuration(),
          "Runtime::Options::idle_spin: how long an idle worker polls before it parks");
ABSL_FLAG(bool, pin, true, "Runtime::Options::pin: bind each worker to its processing unit");
ABSL_FLAG(bool, access_log, false, "log each request to stderr");
ABSL_FLAG(bool, stats, false, "serve GET /-/stats (ps and I/O counters)");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("an HTTP/1.1 server on lwkt: httpd --port 8080 --workers 2");
  absl::ParseCommandLine(argc, argv);
  httpd::options o;
  o.address = absl::GetFlag(FLAGS_address);
  o.port = absl::GetFlag(FLAGS_port);
  o.workers = absl::GetFlag(FLAGS_workers);
  o.root = absl::GetFlag(FLAGS_root);
  o.body = absl::GetFlag(FLAGS_body);
  if (const int pad = absl::GetFlag(FLAGS_pad_headers); pad > 0) {
    o.extra_headers = absl::StrFormat("X-Pad: %s\r\n", std::string(static_cast<std::size_t>(pad), 'x'));
  }
  const std::string bal = absl::GetFlag(FLAGS_balance);
  if (bal != "reuseport" && bal != "handoff") {
    std::fprintf(stderr, "httpd: --balance must be reuseport or handoff, not '%s'\n", bal.c_str());
    return 2;
  }
  o.policy = bal == "handoff" ? httpd::balance::handoff : httpd::balance::reuseport;
  o.max_header_bytes = static_cast<std::size_t>(absl::GetFlag(FLAGS_max_header_bytes));
  o.max_body_bytes = static_cast<std::size_t>(absl::GetFlag(FLAGS_max_body_bytes));
  o.request_timeout = absl::GetFlag(FLAGS_request_timeout);
  o.keepalive_timeout = absl::GetFlag(FLAGS_keepalive_timeout);
  o.idle_spin = absl::GetFlag(FLAGS_idle_spin);
  o.pin = absl::GetFlag(FLAGS_pin);
  o.access_log = absl::GetFlag(FLAGS_access_log);
  o.stats = absl::GetFlag(FLAGS_stats);

  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);  // before any worker exists
  signal(SIGPIPE, SIG_IGN);

  auto srv = httpd::server::start(o);
  if (!srv.ok()) {
    std::fprintf(stderr, "%s\n", std::string(srv.status().message()).c_str());
    return 1;
  }
  std::printf("httpd: listening on %s:%d with %d workers (balance %s)\n", o.address.c_str(),
              (*srv)->port(), (*srv)->workers(), bal.c_str());
  std::fflush(stdout);

  while (sigwaitinfo(&sigs, nullptr) < 0) {}
  const absl::Time deadline = absl::Now() + absl::GetFlag(FLAGS_drain_timeout);
  (*srv)->drain();
  const timespec tick = {0, 20 * 1000 * 1000};
  bool drained = false;
  while (!(drained = (*srv)->wait_drained(absl::Now())) && absl::Now() < deadline) {
    if (sigtimedwait(&sigs, nullptr, &tick) >= 0) _exit(130);  // a second signal
  }
  const httpd::counters c = (*srv)->stats();
  std::fprintf(stderr, "httpd: %s; %llu connections, %llu requests served\n",
               drained ? "drained" : "drain deadline passed with connections still open",
               static_cast<unsigned long long>(c.accepted),
               static_cast<unsigned long long>(c.requests));
  if (!drained) _exit(0);  // within the deadline, as promised; the rest are abandoned
  srv->reset();
  return 0;
}
