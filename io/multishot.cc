// io::listener (multishot accept) and io::pooled_receiver (multishot recv into the worker's
// provided-buffer ring); on the epoll backend both fall back to the plain calls.
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <vector>

#include "io/internal/uring.h"
#include "io/io.h"
#include "io/testing.h"
#include "lwkt/internal/sched_inline.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"

namespace lwkt::io {
namespace internal {
namespace {

std::atomic<unsigned> g_pool_buffers{0};  // testing::set_pool; 0: kPoolBuffers
std::atomic<unsigned> g_pool_size{0};

// The owner thread, checked; its worker's ring, or null on the epoll backend (or with no
// ring: *err then says why).
uring_worker* owner_ring(const char* call, thread** td, int* err) {
  globaldata* gd = lwkt::internal::lwkt_caller(call);
  *td = gd->gd_curthread;
  LWKT_ASSERT((*td)->td_critcount == 0 && gd->gd_intr_nesting_level == 0, *td,
              "%s inside a critical section or message handler", call);
  lwkt::internal::worker_io* wio = lwkt::internal::my_worker_io();
  *err = 0;
  if (wio == nullptr) {
    *err = ENOSYS;
    return nullptr;
  }
  if (wio->backend != kUring) return nullptr;
  return my_ring(wio, err);
}

void check_owner(thread* owner, const char* call) {
  LWKT_ASSERT(curthread() == owner, curthread(),
              "%s called by a thread other than the one that created it ('%s')", call,
              owner->td_comm);
}

void arm(uring_worker* w, multishot* m, io_uring_sqe* sqe) {
  io_uring_sqe_set_data64(sqe, reinterpret_cast<std::uint64_t>(m) | kMultishotBit);
  m->armed = true;
  ++w->inflight;
  lwkt::internal::my_worker_io()->busy = w->unsubmitted + w->inflight;
}

// Sleeps until `ready()` (checked in a critical section, so a completion reaped by a
// preemptor is not missed), the deadline, or an interrupt: 0, ETIMEDOUT, EINTR, ERESTART.
// A wake that finds `ready()` true wins over the interrupt, which is then kept.
template <class Ready>
int wait_until(const void* chan, multishot* m, absl::Time deadline, bool interruptible,
               const char* wmesg, Ready&& ready) {
  thread* td = curthread();
  for (;;) {
    crit_enter();
    if (ready()) {
      crit_exit();
      return 0;
    }
    tsleep_interlock(chan, 0);
    if (m) m->waiter = td;
    crit_exit();
    absl::Duration left = absl::ZeroDuration();
    if (interruptible && deadline != absl::InfiniteFuture()) {
      left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) left = absl::Nanoseconds(1);
    }
    const int e = tsleep(chan, PINTERLOCKED | (interruptible ? PCATCH : 0), wmesg, left);
    if (m) m->waiter = nullptr;
    if (ready()) {
      if (e == EINTR || e == ERESTART) lwkt::interrupt(td, e == ERESTART);
      return 0;
    }
    if (e == EINTR || e == ERESTART) return e;
    if (e == EWOULDBLOCK && absl::Now() >= deadline) return ETIMEDOUT;
  }
}

// Cancels an armed multishot and waits for its last CQE.
void disarm(uring_worker* w, multishot* m) {
  crit_enter();
  if (m->armed) cancel_data(w, reinterpret_cast<std::uint64_t>(m) | kMultishotBit);
  crit_exit();
  (void)wait_until(m, m, absl::InfiniteFuture(), false, "disarm", [m] { return !m->armed; });
}

}  // namespace

// What both objects keep: their owner thread, descriptor and worker ring.
struct owned_multishot : multishot {
  thread* owner = nullptr;
  int fd = -1;
  uring_worker* w = nullptr;  // null: the epoll backend (the plain calls)
  int setup_error = 0;        // why there is no ring, if that is why w is null
  int error = 0;              // the errno that ended the multishot, reported once

  void init(const char* call, int fd_, decltype(multishot::on_cqe) handler) {
    fd = fd_;
    on_cqe = handler;
    w = owner_ring(call, &owner, &setup_error);
    ++owner->td_io_inflight;  // the owner stays on this worker while the object lives
  }
  // The pending error, once (0 when none).
  int take_error() {
    const int e = error;
    error = 0;
    return e;
  }
};
}  // namespace internal

// ---- listener

struct listener::state : internal::owned_multishot {
  std::deque<int> ready;
};

namespace {
void on_accept(internal::multishot* m, internal::uring_worker*, std::int32_t res, std::uint32_t) {
  auto* s = static_cast<listener::state*>(m);
  if (res >= 0) {
    s->ready.push_back(res);
  } else if (res != -ECANCELED) {
    s->error = -res;
  }
}
}  // namespace

listener::listener(int listen_fd) : _s(new state) {
  _s->init("io::listener", listen_fd, on_accept);
}

listener::~listener() {
  internal::check_owner(_s->owner, "io::listener::~listener");
  if (_s->w) internal::disarm(_s->w, _s);
  for (int fd : _s->ready) ::close(fd);  // accepted, never handed out
  --_s->owner->td_io_inflight;
  delete _s;
}

result listener::accept(absl::Time deadline) {
  internal::check_owner(_s->owner, "io::listener::accept");
  if (_s->w == nullptr) {
    if (_s->setup_error) return result::from_res(-_s->setup_error);
    return io::accept(_s->fd, nullptr, nullptr, 0, deadline);
  }
  state* s = _s;
  for (;;) {
    if (!s->ready.empty()) {
      const int fd = s->ready.front();
      s->ready.pop_front();
      return result::from_res(fd);
    }
    if (int e = s->take_error()) return result::from_res(-e);
    if (!s->armed) {
      if (lwkt::internal::my_worker_io()->closing) return result::from_res(-ECANCELED);
      crit_enter();
      io_uring_sqe* sqe = internal::get_sqe(s->w);
      io_uring_prep_multishot_accept(sqe, s->fd, nullptr, nullptr, SOCK_CLOEXEC);
      internal::arm(s->w, s, sqe);
      crit_exit();
    }
    if (int e = internal::wait_until(s, s, deadline, true, "accept", [s] {
          return !s->ready.empty() || s->error || !s->armed;
        })) {
      return result::from_res(-e);
    }
  }
}

// ---- pooled_receiver

struct pooled_receiver::state : internal::owned_multishot {
  int head = -1, tail = -1;  // queued buffers (buffer_pool::next links)
  int held = -1;             // the buffer the last recv() returned
  bool eof = false;
  bool nobufs = false;       // the kernel ended the recv for want of a buffer: re-arm later
  std::vector<char> own;     // the epoll backend's buffer
};

namespace {
void on_recv(internal::multishot* m, internal::uring_worker* w, std::int32_t res, std::uint32_t flags) {
  auto* s = static_cast<pooled_receiver::state*>(m);
  internal::buffer_pool* bp = w->pool;
  if (flags & IORING_CQE_F_BUFFER) {
    const unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
    --bp->free_count;
    if (res <= 0) {  // no data in it after all
      internal::pool_release(w, bid);
    } else {
      bp->len[bid] = static_cast<unsigned>(res);
      bp->next[bid] = -1;
      if (s->tail >= 0) {
        bp->next[s->tail] = static_cast<int>(bid);
      } else {
        s->head = static_cast<int>(bid);
      }
      s->tail = static_cast<int>(bid);
      return;
    }
  }
  if (res == 0) {
    s->eof = true;
  } else if (res == -ENOBUFS) {
    s->nobufs = true;  // never end of file: re-armed once a buffer is free
    w->pool_enobufs.add();
  } else if (res < 0 && res != -ECANCELED) {
    s->error = -res;
  }
}
}  // namespace

pooled_receiver::pooled_receiver(int fd) : _s(new state) {
  _s->init("io::pooled_receiver", fd, on_recv);
  if (_s->w) {
    const unsigned n = internal::g_pool_buffers.load(std::memory_order_relaxed);
    const unsigned size = internal::g_pool_size.load(std::memory_order_relaxed);
    if (int e = internal::ensure_pool(_s->w, n ? n : kPoolBuffers, size ? size : kPoolBufferSize)) {
      _s->w = nullptr;
      _s->setup_error = e;
    }
  }
}

pooled_receiver::~pooled_receiver() {
  internal::check_owner(_s->owner, "io::pooled_receiver::~pooled_receiver");
  if (internal::uring_worker* w = _s->w) {
    internal::disarm(w, _s);
    if (_s->held >= 0) internal::pool_release(w, static_cast<unsigned>(_s->held));
    for (int b = _s->head; b >= 0;) {
      const int next = w->pool->next[b];
      internal::pool_release(w, static_cast<unsigned>(b));
      b = next;
    }
  }
  --_s->owner->td_io_inflight;
  delete _s;
}

result pooled_receiver::recv(const char** data, absl::Time deadline) {
  internal::check_owner(_s->owner, "io::pooled_receiver::recv");
  state* s = _s;
  if (s->w == nullptr) {
    if (s->setup_error && s->setup_error != ENOSYS) return result::from_res(-s->setup_error);
    s->own.resize(kPoolBufferSize);
    *data = s->own.data();
    return io::recv(s->fd, s->own.data(), s->own.size(), 0, deadline);
  }
  internal::uring_worker* w = s->w;
  internal::buffer_pool* bp = w->pool;
  if (s->held >= 0) {
    internal::pool_release(w, static_cast<unsigned>(s->held));
    s->held = -1;
  }
  for (;;) {
    if (s->head >= 0) {
      const int b = s->head;
      s->head = bp->next[b];
      if (s->head < 0) s->tail = -1;
      s->held = b;
      *data = bp->bufs + static_cast<std::size_t>(b) * bp->size;
      return result::from_res(bp->len[b]);
    }
    if (s->eof) return result::from_res(0);
    if (int e = s->take_error()) return result::from_res(-e);
    if (!s->armed) {
      lwkt::internal::worker_io* wio = lwkt::internal::my_worker_io();
      if (s->nobufs) {  // wait for a buffer to come back before re-arming
        // Not an armed operation, so shutdown's cancel-all cannot end this wait: it wakes
        // the pool's waiters instead (uring_cancel_all), and `closing` ends the wait.
        ++bp->waiters;
        const int e = internal::wait_until(bp, nullptr, deadline, true, "pool", [bp, wio] {
          return bp->free_count > 0 || wio->closing;
        });
        --bp->waiters;
        if (e) return result::from_res(-e);
      }
      // Checked after the wait and before arming, with no switch in between: a recv armed
      // after cancel-all ran would never be cancelled.
      if (wio->closing) return result::from_res(-ECANCELED);
      s->nobufs = false;
      crit_enter();
      io_uring_sqe* sqe = internal::get_sqe(w);
      io_uring_prep_recv_multishot(sqe, s->fd, nullptr, 0, 0);
      sqe->flags |= IOSQE_BUFFER_SELECT;
      sqe->buf_group = 0;
      internal::arm(w, s, sqe);
      crit_exit();
    }
    if (int e = internal::wait_until(s, s, deadline, true, "recv", [s] {
          return s->head >= 0 || s->eof || s->error || !s->armed;
        })) {
      return result::from_res(-e);
    }
  }
}

namespace testing {
void set_pool(unsigned buffers, unsigned size) {
  internal::g_pool_buffers.store(buffers, std::memory_order_relaxed);
  internal::g_pool_size.store(size, std::memory_order_relaxed);
}
}  // namespace testing

}  // namespace lwkt::io
