// The I/O calls (io.h): prepare one SQE on the caller's worker ring, sleep until its CQE.
#include "io/io.h"

#include <fcntl.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "io/internal/uring.h"
#include "lwkt/internal/sched_inline.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"

namespace lwkt::io {

std::string result::to_string() const {
  if (ok()) return absl::StrCat(_res);
  const int e = error();
  const char* name = strerrorname_np(e);
  return absl::StrFormat("%s (%s)", name ? name : absl::StrCat("errno ", e), std::strerror(e));
}

namespace internal {
namespace {

// The calling thread, checked: an lwkt thread outside critical sections and handlers.
thread* io_caller(const char* call) {
  globaldata* gd = lwkt::internal::lwkt_caller(call);
  thread* td = gd->gd_curthread;
  LWKT_ASSERT(!(td->td_flags & TDF_IDLETHREAD) && gd->gd_intr_nesting_level == 0, td,
              "%s called from a message handler (it would block the worker's idle thread)",
              call);
  LWKT_ASSERT(td->td_critcount == 0, td, "%s inside a critical section (td_critcount=%d)", call,
              td->td_critcount);
  return td;
}

absl::Duration until(absl::Time deadline) {
  return deadline == absl::InfiniteFuture() ? absl::InfiniteDuration() : deadline - absl::Now();
}

// Sleeps until `o` completes. Interrupts and the deadline cancel it (once); the wait then
// continues, uninterruptibly, until the CQE arrives: `o` is on this stack and the kernel
// may still write the caller's buffers until then.
std::int64_t wait_for(uring_worker* w, op* o, absl::Time deadline, bool cancellable,
                      const char* wmesg) {
  int reason = 0;  // why we cancelled: EINTR, ERESTART or ETIMEDOUT
  while (!o->done) {
    crit_enter();  // a preemptor's switch may reap o: check and interlock atomically
    if (o->done) {
      crit_exit();
      break;
    }
    tsleep_interlock(o, 0);
    crit_exit();
    const bool catching = cancellable && reason == 0;
    absl::Duration left = absl::ZeroDuration();  // no timeout
    if (catching && deadline != absl::InfiniteFuture()) {
      left = until(deadline);
      if (left <= absl::ZeroDuration()) left = absl::Nanoseconds(1);
    }
    const int e = tsleep(o, PINTERLOCKED | (catching ? PCATCH : 0), wmesg, left);
    if (o->done || !catching) continue;
    if (e == EINTR || e == ERESTART || (e == EWOULDBLOCK && absl::Now() >= deadline)) {
      reason = e == EWOULDBLOCK ? ETIMEDOUT : e;
      crit_enter();
      if (!o->done) cancel(w, o);
      crit_exit();
    }
  }
  if (reason != 0) {
    // Cancelled in time: the call reports why. Too late: the real result stands, and an
    // interrupt request goes back to the thread for its next interruptible wait.
    if (o->res == -ECANCELED || o->res == -EINTR) return -reason;
    if (reason == EINTR || reason == ERESTART) lwkt::interrupt(o->td, reason == ERESTART);
  }
  return o->res;
}

// Runs one operation: `prep` fills the SQE.
template <class Prep>
result run(const char* call, const char* wmesg, absl::Time deadline, bool cancellable,
           Prep&& prep) {
  thread* td = io_caller(call);
  int err = 0;
  uring_worker* w = my_ring(&err);
  if (w == nullptr) return result::from_res(-err);
  if (deadline != absl::InfiniteFuture() && absl::Now() >= deadline) {
    return result::from_res(-ETIMEDOUT);  // already past: not started
  }
  op o;
  o.td = td;
  crit_enter();
  io_uring_sqe* sqe = get_sqe(w);
  prep(sqe);
  io_uring_sqe_set_data(sqe, &o);
  ++w->inflight;
  ++td->td_io_inflight;
  lwkt::internal::my_worker_io()->busy = w->unsubmitted + w->inflight;
  crit_exit();
  return result::from_res(wait_for(w, &o, deadline, cancellable, wmesg));
}

}  // namespace
}  // namespace internal

using internal::run;

result accept(int fd, sockaddr* addr, socklen_t* addrlen, int flags, absl::Time deadline) {
  return run("io::accept", "accept", deadline, true, [&](io_uring_sqe* sqe) {
    io_uring_prep_accept(sqe, fd, addr, addrlen, flags | SOCK_CLOEXEC);
  });
}

result connect(int fd, const sockaddr* addr, socklen_t addrlen, absl::Time deadline) {
  return run("io::connect", "connect", deadline, true,
             [&](io_uring_sqe* sqe) { io_uring_prep_connect(sqe, fd, addr, addrlen); });
}

result recv(int fd, void* buf, std::size_t len, int flags, absl::Time deadline) {
  return run("io::recv", "recv", deadline, true,
             [&](io_uring_sqe* sqe) { io_uring_prep_recv(sqe, fd, buf, len, flags); });
}

result send(int fd, const void* buf, std::size_t len, int flags, absl::Time deadline) {
  return run("io::send", "send", deadline, true, [&](io_uring_sqe* sqe) {
    io_uring_prep_send(sqe, fd, buf, len, flags | MSG_NOSIGNAL);
  });
}

namespace {
// The loop of send_all / recv_all: `step` moves bytes at an offset.
template <class Step>
result transfer_all(std::size_t len, std::size_t* done, bool eof_ends, Step&& step) {
  std::size_t got = 0;
  while (got < len) {
    result r = step(got);
    if (!r.ok()) {
      if (done) *done = got;
      return r;
    }
    if (r.value() == 0 && eof_ends) break;  // the peer closed
    got += static_cast<std::size_t>(r.value());
  }
  if (done) *done = got;
  return result::from_res(static_cast<std::int64_t>(got));
}
}  // namespace

result send_all(int fd, const void* buf, std::size_t len, std::size_t* done, absl::Time deadline) {
  const char* p = static_cast<const char*>(buf);
  return transfer_all(len, done, false,
                      [&](std::size_t off) { return send(fd, p + off, len - off, 0, deadline); });
}

result recv_all(int fd, void* buf, std::size_t len, std::size_t* done, absl::Time deadline) {
  char* p = static_cast<char*>(buf);
  return transfer_all(len, done, true,
                      [&](std::size_t off) { return recv(fd, p + off, len - off, 0, deadline); });
}

result readv(int fd, const iovec* iov, int iovcnt, absl::Time deadline) {
  return run("io::readv", "readv", deadline, true, [&](io_uring_sqe* sqe) {
    io_uring_prep_readv(sqe, fd, iov, static_cast<unsigned>(iovcnt), static_cast<__u64>(-1));
  });
}

result writev(int fd, const iovec* iov, int iovcnt, absl::Time deadline) {
  return run("io::writev", "writev", deadline, true, [&](io_uring_sqe* sqe) {
    io_uring_prep_writev(sqe, fd, iov, static_cast<unsigned>(iovcnt), static_cast<__u64>(-1));
  });
}

result read(int fd, void* buf, std::size_t len, off_t offset, absl::Time deadline) {
  return run("io::read", "read", deadline, true, [&](io_uring_sqe* sqe) {
    io_uring_prep_read(sqe, fd, buf, static_cast<unsigned>(len), static_cast<__u64>(offset));
  });
}

result write(int fd, const void* buf, std::size_t len, off_t offset, absl::Time deadline) {
  return run("io::write", "write", deadline, true, [&](io_uring_sqe* sqe) {
    io_uring_prep_write(sqe, fd, buf, static_cast<unsigned>(len), static_cast<__u64>(offset));
  });
}

result close(int fd) {
  return run("io::close", "close", absl::InfiniteFuture(), false,
             [&](io_uring_sqe* sqe) { io_uring_prep_close(sqe, fd); });
}

result shutdown(int fd, int how, absl::Time deadline) {
  return run("io::shutdown", "shutdown", deadline, true,
             [&](io_uring_sqe* sqe) { io_uring_prep_shutdown(sqe, fd, how); });
}

result poll(int fd, short events, absl::Time deadline) {
  return run("io::poll", "poll", deadline, true, [&](io_uring_sqe* sqe) {
    io_uring_prep_poll_add(sqe, fd, static_cast<unsigned>(static_cast<unsigned short>(events)));
  });
}

result sleep_for(absl::Duration d) {
  internal::io_caller("io::sleep_for");
  const absl::Time end = absl::Now() + d;
  char ident = 0;  // a private channel: only the timer or an interrupt ends the sleep
  for (;;) {
    const absl::Duration left = end - absl::Now();
    if (left <= absl::ZeroDuration()) return result::from_res(0);
    const int e = tsleep(&ident, PCATCH, "sleep", left);
    if (e == EINTR || e == ERESTART) return result::from_res(-e);
  }
}

io_stats stats() {
  io_stats s;
  for (lwkt::internal::worker_io* wio : lwkt::internal::runtime_worker_ios()) {
    auto* w = static_cast<internal::uring_worker*>(wio->state.load(std::memory_order_acquire));
    if (w == nullptr) continue;
    ++s.rings;
    s.ops += w->ops.get();
    s.submits += w->submits.get();
    s.reaps += w->reaps.get();
    s.waits += w->waits.get();
    s.sq_full += w->sq_full.get();
    s.cq_overflows += w->cq_overflows.get();
    s.cancels += w->cancels.get();
  }
  return s;
}

namespace internal {
namespace {
// Installs the io_uring provider before main: a program that links //io has I/O.
const bool g_installed = (install(), true);
}  // namespace
}  // namespace internal

}  // namespace lwkt::io
