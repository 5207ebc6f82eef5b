// The I/O provider (lwkt/internal/io_hook.h): chooses a runtime's backend at create time
// and routes the scheduler's hooks to the worker's backend.
#include <sys/epoll.h>
#include <unistd.h>

#include <cstdio>
#include <mutex>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "io/internal/backend.h"
#include "io/internal/epoll.h"
#include "io/internal/uring.h"
#include "lwkt/internal/io_hook.h"

namespace lwkt::io::internal {
namespace {

using lwkt::internal::io_config;
using lwkt::internal::worker_io;

absl::StatusOr<io_config> configure(const Runtime::Options& opts) {
  io_config c;
  c.active = true;
  if (opts.io == io_backend::epoll) {
    c.backend = kEpoll;
    c.description = "epoll, one instance per worker (Runtime::Options.io = epoll)";
    return c;
  }
  unsigned flags = 0, features = 0;
  const int r = probe_uring(&flags, &features);
  if (r == 0) {
    c.backend = kUring;
    c.description = absl::StrCat("io_uring, one ring per worker (", describe_uring(flags, features), ")");
  } else if (opts.io == io_backend::io_uring) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Runtime::Options.io = io_uring, but io_uring is unavailable: ", setup_failure_cause(-r)));
  } else {
    c.backend = kEpoll;
    c.description = absl::StrCat("epoll, one instance per worker (automatic: io_uring unavailable: ",
                                 setup_failure_cause(-r), ")");
  }
  if (opts.io == io_backend::automatic) {
    // One line per process and distinct choice: which backend, and why.
    static std::mutex mu;
    static std::set<std::string> said;
    std::lock_guard<std::mutex> l(mu);
    if (said.insert(c.description).second) {
      std::fprintf(stderr, "lwkt: Runtime::Options.io = automatic chose %s\n", c.description.c_str());
    }
  }
  return c;
}

backend_kind kind_of(worker_io* wio) {
  return static_cast<worker_base*>(wio->state.load(std::memory_order_relaxed))->kind;
}

void flush(worker_io* wio, bool idle) {
  kind_of(wio) == kUring ? uring_flush(wio, idle) : epoll_flush(wio, idle);
}

void wait(worker_io* wio, int, const struct timespec* timeout) {
  kind_of(wio) == kUring ? uring_wait(wio, timeout) : epoll_wait_idle(wio, timeout);
}

bool ready(worker_io* wio) { return kind_of(wio) == kUring ? uring_ready(wio) : epoll_ready(wio); }

std::uint32_t worker_exit(worker_io* wio) {
  if (kind_of(wio) == kUring) return uring_exit(wio);
  epoll_exit(wio);  // the kernel holds nothing of an epoll waiter's
  return 0;
}

bool kick(worker_io* target) { return uring_kick(target); }  // -1 ring_fd on epoll: false

void cancel_all(worker_io* wio) {
  kind_of(wio) == kUring ? uring_cancel_all(wio) : epoll_cancel_all(wio);
}

const lwkt::internal::io_provider kProvider = {configure, flush,       wait, ready,
                                               worker_exit, kick, cancel_all};

// Installs the provider before main: a program that links //io has I/O.
const bool g_installed = (lwkt::internal::install_io_provider(&kProvider), true);

}  // namespace
}  // namespace lwkt::io::internal
