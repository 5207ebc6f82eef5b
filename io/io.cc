// The I/O calls (io.h): prepare one SQE on the caller's worker ring, sleep until its CQE.
#include "io/io.h"

#include <fcntl.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "io/internal/epoll.h"
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
    if (o->done && (e == EINTR || e == ERESTART)) {
      // Completed, and interrupted too: tsleep consumed the request; give it back for the
      // thread's next interruptible wait (the result stands).
      lwkt::interrupt(o->td, e == ERESTART);
    }
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

// The epoll backend's form of an operation: the system call, tried without blocking, and
// a wait for `events` whenever it would block.
template <class Sys>
std::int64_t retry(epoll_worker* w, int fd, std::uint32_t events, absl::Time deadline,
                   const char* wmesg, Sys&& sys) {
  for (;;) {
    const std::int64_t r = sys();
    if (r >= 0) return r;
    const int e = errno;
    if (e == EINTR) continue;
    if (e != EAGAIN && e != EWOULDBLOCK) return -e;
    // Readiness may fire without the call succeeding (another waiter took the bytes, a
    // hang-up): the deadline is checked before every wait, not only when a wait times out.
    if (deadline != absl::InfiniteFuture() && absl::Now() >= deadline) return -ETIMEDOUT;
    std::uint32_t rev = 0;
    if (int we = wait_ready(w, fd, events, deadline, true, wmesg, &rev); we != 0) return -we;
  }
}

// Runs one operation on the caller's worker: `prep` fills an io_uring SQE; `on_epoll` is the
// same operation on the epoll backend (returns a value or a negated errno).
template <class Prep, class OnEpoll>
result run(const char* call, const char* wmesg, absl::Time deadline, bool cancellable,
           Prep&& prep, OnEpoll&& on_epoll) {
  thread* td = io_caller(call);
  lwkt::internal::worker_io* wio = lwkt::internal::my_worker_io();
  if (wio == nullptr) return result::from_res(-ENOSYS);  // this runtime has no I/O
  if (wio->closing) return result::from_res(-ECANCELED);  // shutdown began
  if (deadline != absl::InfiniteFuture() && absl::Now() >= deadline) {
    return result::from_res(-ETIMEDOUT);  // already past: not started
  }
  int err = 0;
  if (wio->backend == kEpoll) {
    epoll_worker* ew = my_epoll(wio, &err);
    return result::from_res(ew ? on_epoll(ew) : -err);
  }
  uring_worker* w = my_ring(wio, &err);
  if (w == nullptr) return result::from_res(-err);
  op o;
  o.td = td;
  crit_enter();
  // Again, inside the critical section: creating the ring (crit_exit in my_ring) may have
  // run shutdown's cancel-all, which this operation would then miss.
  if (wio->closing) {
    crit_exit();
    return result::from_res(-ECANCELED);
  }
  io_uring_sqe* sqe = get_sqe(w);
  prep(sqe);
  io_uring_sqe_set_data(sqe, &o);
  ++w->inflight;
  ++td->td_io_inflight;
  wio->busy = w->unsubmitted + w->inflight;
  crit_exit();
  return result::from_res(wait_for(w, &o, deadline, cancellable, wmesg));
}

}  // namespace
}  // namespace internal

using internal::epoll_worker;
using internal::retry;
using internal::run;

namespace {
std::int64_t neg_errno(std::int64_t r) { return r < 0 ? -errno : r; }

// An SQE's length is 32 bits: a buffer of 4 GiB or more would be truncated (4 GiB exactly to
// 0, which send_all would retry forever and recv_all take for end of file). The kernel moves
// at most MAX_RW_COUNT bytes per call anyway, as read(2) and send(2) do on their own.
constexpr std::size_t kMaxRwCount = 0x7ffff000;
unsigned sqe_len(std::size_t len) { return static_cast<unsigned>(std::min(len, kMaxRwCount)); }
}  // namespace

result accept(int fd, sockaddr* addr, socklen_t* addrlen, int flags, absl::Time deadline) {
  return run("io::accept", "accept", deadline, true, [&](io_uring_sqe* sqe) {
    io_uring_prep_accept(sqe, fd, addr, addrlen, flags | SOCK_CLOEXEC);
  }, [&](epoll_worker* w) -> std::int64_t {
    if (int e = internal::make_nonblocking(fd)) return -e;
    return retry(w, fd, EPOLLIN, deadline, "accept",
                 [&] { return ::accept4(fd, addr, addrlen, flags | SOCK_CLOEXEC); });
  });
}

result connect(int fd, const sockaddr* addr, socklen_t addrlen, absl::Time deadline) {
  return run("io::connect", "connect", deadline, true,
             [&](io_uring_sqe* sqe) { io_uring_prep_connect(sqe, fd, addr, addrlen); },
             [&](epoll_worker* w) -> std::int64_t {
    if (int e = internal::make_nonblocking(fd)) return -e;
    if (::connect(fd, addr, addrlen) == 0) return 0;
    if (errno != EINPROGRESS) return -errno;
    std::uint32_t rev = 0;
    if (int e = internal::wait_ready(w, fd, EPOLLOUT, deadline, true, "connect", &rev)) return -e;
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) return -errno;
    return -soerr;
  });
}

result recv(int fd, void* buf, std::size_t len, int flags, absl::Time deadline) {
  return run("io::recv", "recv", deadline, true,
             [&](io_uring_sqe* sqe) { io_uring_prep_recv(sqe, fd, buf, sqe_len(len), flags); },
             [&](epoll_worker* w) {
    return retry(w, fd, EPOLLIN, deadline, "recv",
                 [&] { return ::recv(fd, buf, len, flags | MSG_DONTWAIT); });
  });
}

result send(int fd, const void* buf, std::size_t len, int flags, absl::Time deadline) {
  return run("io::send", "send", deadline, true, [&](io_uring_sqe* sqe) {
    io_uring_prep_send(sqe, fd, buf, sqe_len(len), flags | MSG_NOSIGNAL);
  }, [&](epoll_worker* w) {
    return retry(w, fd, EPOLLOUT, deadline, "send",
                 [&] { return ::send(fd, buf, len, flags | MSG_DONTWAIT | MSG_NOSIGNAL); });
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

// readv/writev and read/write at the file position on the epoll backend: a descriptor
// that can block (pipe, socket) is made non-blocking and waited on; a regular file never
// reports EAGAIN and is read or written on the worker itself.
template <class Sys>
std::int64_t positional_or_stream(epoll_worker* w, int fd, std::uint32_t events,
                                  absl::Time deadline, const char* wmesg, Sys&& sys) {
  if (int e = internal::make_nonblocking(fd)) return -e;
  return retry(w, fd, events, deadline, wmesg, sys);
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
  }, [&](epoll_worker* w) {
    return positional_or_stream(w, fd, EPOLLIN, deadline, "readv",
                                [&] { return ::readv(fd, iov, iovcnt); });
  });
}

result writev(int fd, const iovec* iov, int iovcnt, absl::Time deadline) {
  return run("io::writev", "writev", deadline, true, [&](io_uring_sqe* sqe) {
    io_uring_prep_writev(sqe, fd, iov, static_cast<unsigned>(iovcnt), static_cast<__u64>(-1));
  }, [&](epoll_worker* w) {
    return positional_or_stream(w, fd, EPOLLOUT, deadline, "writev",
                                [&] { return ::writev(fd, iov, iovcnt); });
  });
}

result read(int fd, void* buf, std::size_t len, off_t offset, absl::Time deadline) {
  return run("io::read", "read", deadline, true, [&](io_uring_sqe* sqe) {
    io_uring_prep_read(sqe, fd, buf, sqe_len(len), static_cast<__u64>(offset));
  }, [&](epoll_worker* w) -> std::int64_t {
    if (offset >= 0) return neg_errno(::pread(fd, buf, len, offset));
    return positional_or_stream(w, fd, EPOLLIN, deadline, "read",
                                [&] { return ::read(fd, buf, len); });
  });
}

result write(int fd, const void* buf, std::size_t len, off_t offset, absl::Time deadline) {
  return run("io::write", "write", deadline, true, [&](io_uring_sqe* sqe) {
    io_uring_prep_write(sqe, fd, buf, sqe_len(len), static_cast<__u64>(offset));
  }, [&](epoll_worker* w) -> std::int64_t {
    if (offset >= 0) return neg_errno(::pwrite(fd, buf, len, offset));
    return positional_or_stream(w, fd, EPOLLOUT, deadline, "write",
                                [&] { return ::write(fd, buf, len); });
  });
}

result close(int fd) {
  // The descriptor is gone when close returns, whatever the result.
  result r = run("io::close", "close", absl::InfiniteFuture(), false,
                 [&](io_uring_sqe* sqe) { io_uring_prep_close(sqe, fd); },
                 [&](epoll_worker* w) {
                   internal::forget_fd(w, fd);  // its registration must not outlive the number
                   return neg_errno(::close(fd));
                 });
  // Refused or cancelled before it ran because shutdown began (run refuses every call once
  // it has, possibly only after creating the worker's ring; a close waiting in io-wq for a
  // file with a flush method is cancelled there): the descriptor is still open, close it
  // here.
  if (r.error() == ECANCELED) return result::from_res(neg_errno(::close(fd)));
  return r;
}

result shutdown(int fd, int how, absl::Time deadline) {
  return run("io::shutdown", "shutdown", deadline, true,
             [&](io_uring_sqe* sqe) { io_uring_prep_shutdown(sqe, fd, how); },
             [&](epoll_worker*) { return neg_errno(::shutdown(fd, how)); });
}

result poll(int fd, short events, absl::Time deadline) {
  return run("io::poll", "poll", deadline, true, [&](io_uring_sqe* sqe) {
    io_uring_prep_poll_add(sqe, fd, static_cast<unsigned>(static_cast<unsigned short>(events)));
  }, [&](epoll_worker* w) -> std::int64_t {
    pollfd p{fd, events, 0};
    if (::poll(&p, 1, 0) < 0) return -errno;
    if (p.revents) return p.revents;
    std::uint32_t rev = 0;
    // POLLIN/OUT/PRI/ERR/HUP/RDHUP have the same values as their EPOLL* twins.
    if (int e = internal::wait_ready(w, fd, static_cast<std::uint16_t>(events), deadline, true,
                                     "poll", &rev)) {
      return -e;
    }
    return rev & (static_cast<std::uint16_t>(events) | POLLERR | POLLHUP);
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
    auto* w = static_cast<internal::worker_base*>(wio->state.load(std::memory_order_acquire));
    if (w == nullptr) continue;
    ++s.rings;
    s.ops += w->ops.get();
    s.submits += w->submits.get();
    s.reaps += w->reaps.get();
    s.waits += w->waits.get();
    s.sq_full += w->sq_full.get();
    s.cq_overflows += w->cq_overflows.get();
    s.cancels += w->cancels.get();
    s.pool_enobufs += w->pool_enobufs.get();
    s.msg_ring_kicks += w->msg_ring_kicks.get();
    s.msg_ring_fallbacks += w->msg_ring_fallbacks.get();
  }
  return s;
}

}  // namespace lwkt::io
