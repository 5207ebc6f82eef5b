// io.h
//
// Blocking-style I/O for lwkt threads. Each call reads like its POSIX namesake, but only the
// calling lwkt thread waits: the operation goes to its worker's own io_uring and the worker
// runs other threads until the completion arrives.
//
//   accept connect recv send readv writev   sockets (and any fd io_uring can drive)
//   read write                               files, at an offset (-1: the file position)
//   close shutdown poll                      descriptors and readiness
//   sleep_for                                an interruptible sleep
//   blocking(fn)                             fn on a pool OS thread (getaddrinfo, fsync)
//   listener, pooled_receiver                multishot accept; multishot recv into a
//                                            per-worker pool of buffers
//
// The worker side (one ring per worker, created on the worker itself on its first
// operation, with IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN when the kernel has them) is
// described in docs/io.md. In short: prepared operations are submitted together at the
// worker's next switch point (one io_uring_enter for all the threads that prepared one
// since), completions are reaped at every switch point that finds some waiting, and an idle
// worker sleeps in io_uring_enter, so one wait covers completions, sleep timeouts and kicks
// from other workers.
//
// Rules (each checked; a violation aborts with a message naming the call and the thread):
//   - Runs on: an lwkt thread, outside any critical section. From any other OS thread use
//     the POSIX call itself.
//   - A thread waiting in one of these calls (sleep_for and blocking excepted: they are
//     plain sleeps) stays on its worker: giveaway() of it aborts. The call never returns
//     before its operation has completed (a cancelled one too), so its buffers may live on
//     the caller's stack and a thread never exits with an operation in flight.
//   - No I/O layer (Runtime::Options::io = off, or //io not linked): every call returns
//     ENOSYS, except sleep_for and blocking, which need no ring and work all the same.
//   - Runtime::shutdown() cancels every operation in flight and refuses later ones: those
//     calls return ECANCELED (close still closes), so a thread blocked in I/O can close its
//     descriptors and exit within the grace period. sleep_for and blocking are not
//     cancelled: they end at their time or when fn returns.
//   - Signals: send and send_all never raise SIGPIPE (MSG_NOSIGNAL); write and writev to a
//     pipe or socket whose reader is gone do, as the POSIX calls do (ignore SIGPIPE, or use
//     send for sockets).
//   - The epoll backend makes a descriptor it has to wait on O_NONBLOCK, on the open file
//     description, and leaves it so (as Go's poller does): other users of that descriptor
//     then see EAGAIN where they blocked before. The io_uring backend changes no flag.
//     Regular files never report EAGAIN, so on the epoll backend read, write, readv,
//     writev and close of a regular file run on the worker itself (a slow disk stalls the
//     worker for that call; use blocking for such files, or the io_uring backend).
//   - Kernel: the io_uring backend needs Linux 5.19 for listener (multishot accept), for
//     provided-buffer rings and for shutdown's cancel-all, and Linux 6.0 for
//     pooled_receiver (multishot recv);
//     ring-to-ring kicks are used only where the kernel has IORING_OP_MSG_RING.
//
// Deadlines: every call but close takes an absolute `deadline` (absl::InfiniteFuture():
// none). When it passes first, the operation is cancelled and the call returns ETIMEDOUT;
// it never returns ETIMEDOUT before the deadline. (The deadline is the worker's timer heap,
// the same one tsleep timeouts use; no linked-timeout SQE is spent.)
// Interruption: lwkt::interrupt(td) on a thread waiting here cancels its operation
// (IORING_OP_ASYNC_CANCEL) and the call returns EINTR (ERESTART for a restart request).
// If the operation completed before the cancel took effect, its real result is returned and
// the interrupt request is kept for the thread's next interruptible wait: nothing is lost,
// neither the bytes nor the interrupt.
// Operations allocate nothing on the io_uring backend (the record lives on the caller's
// stack); the epoll backend's per-worker descriptor table and the multishot objects do.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <type_traits>

#include "absl/time/time.h"

namespace lwkt::io {

// The outcome of an I/O call: a non-negative value (bytes, a descriptor, poll's revents)
// or an errno. No exceptions on the I/O path.
class [[nodiscard]] result {
 public:
  constexpr result() = default;
  // From the io_uring convention: >= 0 a value, < 0 the negated errno.
  static constexpr result from_res(std::int64_t res) { return result(res); }

  constexpr bool ok() const { return _res >= 0; }
  constexpr explicit operator bool() const { return ok(); }
  // The value; 0 when !ok() (check ok() or error() first).
  constexpr std::int64_t value() const { return _res >= 0 ? _res : 0; }
  // The errno, 0 when ok().
  constexpr int error() const { return _res < 0 ? static_cast<int>(-_res) : 0; }
  // "42" or "ECONNRESET (Connection reset by peer)".
  std::string to_string() const;

 private:
  constexpr explicit result(std::int64_t res) : _res(res) {}
  std::int64_t _res = 0;
};

using absl::InfiniteFuture;

// Sockets. `flags` as for accept4 (SOCK_CLOEXEC is always added) and recv/send.
result accept(int fd, sockaddr* addr, socklen_t* addrlen, int flags = 0,
              absl::Time deadline = InfiniteFuture());
result connect(int fd, const sockaddr* addr, socklen_t addrlen,
               absl::Time deadline = InfiniteFuture());
result recv(int fd, void* buf, std::size_t len, int flags = 0,
            absl::Time deadline = InfiniteFuture());
result send(int fd, const void* buf, std::size_t len, int flags = 0,
            absl::Time deadline = InfiniteFuture());
// All of `len`, looping over short transfers. The value is `len`, except that recv_all
// returns the shorter count it got when the peer closed (end of file). On an error (a
// deadline, an interrupt) `*done`, when not null, says how many bytes went through first.
result send_all(int fd, const void* buf, std::size_t len, std::size_t* done = nullptr,
                absl::Time deadline = InfiniteFuture());
result recv_all(int fd, void* buf, std::size_t len, std::size_t* done = nullptr,
                absl::Time deadline = InfiniteFuture());
// Scatter/gather at the current position (sockets, pipes). The iovec array must stay
// valid until the call returns (it does: the call blocks).
result readv(int fd, const iovec* iov, int iovcnt, absl::Time deadline = InfiniteFuture());
result writev(int fd, const iovec* iov, int iovcnt, absl::Time deadline = InfiniteFuture());

// Files: at `offset` (-1: the current file position, which then advances).
result read(int fd, void* buf, std::size_t len, off_t offset,
            absl::Time deadline = InfiniteFuture());
result write(int fd, const void* buf, std::size_t len, off_t offset,
             absl::Time deadline = InfiniteFuture());

// Descriptors. close is not cancellable and takes no deadline (the descriptor is gone
// when it returns, whatever the result). shutdown: `how` as for shutdown(2).
result close(int fd);
result shutdown(int fd, int how, absl::Time deadline = InfiniteFuture());
// Waits until fd is ready for `events` (POLLIN, POLLOUT, ...); the value is the revents.
result poll(int fd, short events, absl::Time deadline = InfiniteFuture());

// Sleeps for `d` (0 when it elapsed), or until interrupted (EINTR / ERESTART).
result sleep_for(absl::Duration d);

// Multishot forms, for servers with many connections (io_uring: one SQE keeps producing
// completions; on the epoll backend they fall back to the plain calls, same results).
// Each object belongs to the lwkt thread that created it, on that thread's worker: only
// that thread may call it or destroy it, and while it lives the thread stays on its worker
// (setcpu_self, migratecpu and giveaway abort naming it).
//
// listener: one multishot accept on a listening socket; connections that arrive while
// nobody is in accept() wait in the listener (as in the kernel's backlog) and the next
// accept() returns them in order. Destroying it cancels the accept and closes connections
// accepted but never handed out.
class listener {
 public:
  explicit listener(int listen_fd);
  ~listener();
  listener(const listener&) = delete;
  listener& operator=(const listener&) = delete;
  // The next connection (a descriptor, SOCK_CLOEXEC), an error, EINTR or ETIMEDOUT.
  result accept(absl::Time deadline = InfiniteFuture());

  struct state;  // internal

 private:
  state* _s;
};

// pooled_receiver: a connection's receive side on its worker's shared buffer pool (a
// provided-buffer ring: kPoolBuffers buffers of kPoolBufferSize bytes per worker). One
// multishot recv fills pool buffers as data arrives; recv() hands out the next filled
// buffer. A connection with nothing unread holds no buffer, so memory scales with the pool,
// not with the number of connections. When the pool runs dry the kernel ends the multishot
// with ENOBUFS; that is never end of file: the receiver re-arms once a buffer is free.
// Destroying it cancels the recv and returns its buffers.
inline constexpr unsigned kPoolBuffers = 1024;
inline constexpr unsigned kPoolBufferSize = 4096;
class pooled_receiver {
 public:
  explicit pooled_receiver(int fd);
  ~pooled_receiver();
  pooled_receiver(const pooled_receiver&) = delete;
  pooled_receiver& operator=(const pooled_receiver&) = delete;
  // The next bytes received, in *data (valid until the next recv() or the destructor; the
  // previous chunk's buffer goes back to the pool now). 0 bytes: the peer closed.
  result recv(const char** data, absl::Time deadline = InfiniteFuture());

  struct state;  // internal

 private:
  state* _s;
};

// Runs `fn` on an OS thread of a small process-wide pool while the calling lwkt thread
// sleeps (its worker runs other threads meanwhile), and returns what fn returns; an
// exception fn throws is rethrown here. For calls that cannot be made non-blocking:
// getaddrinfo, fsync, a library's blocking function. The pool starts threads on demand, at
// most kBlockingThreads; when all are busy, calls wait their turn (FIFO). Not
// interruptible: fn runs to its end. Runs on: an lwkt thread, outside critical sections.
inline constexpr int kBlockingThreads = 16;
void blocking_call(void (*run)(void*), void* arg);  // the type-erased core
template <class F>
auto blocking(F&& fn) -> decltype(fn()) {
  using R = decltype(fn());
  struct frame {
    F* fn;
    std::exception_ptr error;
    std::optional<std::conditional_t<std::is_void_v<R>, bool, R>> value;
  } f{&fn, nullptr, std::nullopt};
  blocking_call(
      [](void* p) {
        auto* fr = static_cast<frame*>(p);
        try {
          if constexpr (std::is_void_v<R>) {
            (*fr->fn)();
            fr->value.emplace(true);
          } else {
            fr->value.emplace((*fr->fn)());
          }
        } catch (...) {
          fr->error = std::current_exception();
        }
      },
      &f);
  if (f.error) std::rethrow_exception(f.error);
  if constexpr (!std::is_void_v<R>) return std::move(*f.value);
}

// Counters of the I/O layer, summed over the calling thread's runtime's workers
// (Runtime::stats has the scheduler's). Runs on: an lwkt thread.
struct io_stats {
  std::uint64_t rings = 0;          // workers whose ring (or epoll instance) exists
  std::uint64_t ops = 0;            // operations completed
  std::uint64_t submits = 0;        // io_uring_enter calls that submitted
  std::uint64_t reaps = 0;          // io_uring_enter calls that only reaped (DEFER_TASKRUN)
  std::uint64_t waits = 0;          // idle waits in the ring
  std::uint64_t sq_full = 0;        // times an SQE had to wait for a submit (SQ full)
  std::uint64_t cq_overflows = 0;   // times the kernel held completions back (CQ full)
  std::uint64_t cancels = 0;        // cancellations sent (deadlines, interrupts, exit)
  std::uint64_t pool_enobufs = 0;   // pooled_receiver recvs ended by an empty buffer pool
  std::uint64_t msg_ring_kicks = 0; // parked workers woken ring to ring (IORING_OP_MSG_RING)
  std::uint64_t msg_ring_fallbacks = 0;  // of those, failed MSG_RINGs the eventfd carried
};
io_stats stats();

}  // namespace lwkt::io
