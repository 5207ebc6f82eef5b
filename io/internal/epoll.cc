// The epoll backend: per-worker epoll instance, readiness waits, and the scheduler hooks.
#include "io/internal/epoll.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>

#include "lwkt/internal/clock.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"

namespace lwkt::io::internal {

using lwkt::internal::worker_io;

namespace {

// A busy worker looks for readiness at its switch points at most this often (each look is
// an epoll_wait system call); an idle one waits in epoll_pwait2.
constexpr std::int64_t kPollEveryNs = 20'000;

void sync_busy(epoll_worker* w, worker_io* wio) { wio->busy = w->waiters; }

void unlink(fd_waiters& f, ready_wait* r) {
  if (r->prev) {
    r->prev->next = r->next;
  } else {
    f.head = r->next;
  }
  if (r->next) r->next->prev = r->prev;
  r->next = r->prev = nullptr;
}

std::uint32_t wanted(const fd_waiters& f) {
  std::uint32_t ev = 0;
  for (ready_wait* r = f.head; r; r = r->next) ev |= r->events;
  return ev;
}

// Arms fd's one-shot registration for what its waiters want. 0 or an errno.
int arm(epoll_worker* w, int fd, fd_waiters& f) {
  const std::uint32_t ev = wanted(f);
  if (ev == 0 || ev == f.armed) return 0;
  epoll_event e{};
  // RDHUP (the peer shut its side) concerns readers only: a writer woken by it would find
  // its send still blocked and spin.
  e.events = ev | EPOLLONESHOT | ((ev & EPOLLIN) ? static_cast<std::uint32_t>(EPOLLRDHUP) : 0u);
  e.data.fd = fd;
  // The descriptor may have been closed and its number reused since it was added (close
  // removes it from the set): MOD then fails with ENOENT and ADD is right.
  int r = epoll_ctl(w->ep, f.added ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &e);
  if (r != 0 && errno == ENOENT) r = epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &e);
  if (r != 0 && errno == EEXIST) r = epoll_ctl(w->ep, EPOLL_CTL_MOD, fd, &e);
  if (r != 0) return errno;
  f.added = true;
  f.armed = ev;
  return 0;
}

// One readiness event: wakes the waiters it satisfies, re-arms for the rest.
void deliver(epoll_worker* w, const epoll_event& e) {
  if (e.data.fd == w->kick_fd) {
    std::uint64_t v;
    (void)!::read(w->kick_fd, &v, sizeof v);  // the kick's count (non-blocking fd)
    return;
  }
  auto it = w->fds.find(e.data.fd);
  if (it == w->fds.end()) return;
  fd_waiters& f = it->second;
  f.armed = 0;  // one-shot: disarmed by this event
  const std::uint32_t got = e.events;
  for (ready_wait* r = f.head; r;) {
    ready_wait* next = r->next;
    const std::uint32_t hup = (r->events & EPOLLIN) ? static_cast<std::uint32_t>(EPOLLRDHUP) : 0u;
    if ((got & (r->events | EPOLLERR | EPOLLHUP | hup)) != 0) {
      unlink(f, r);
      r->revents = got;
      r->woken = true;
      --w->waiters;
      w->ops.add();
      lwkt::internal::io_wake(r->td, r);
    }
    r = next;
  }
  if (f.head) {
    (void)arm(w, e.data.fd, f);
  } else {
    w->fds.erase(it);  // the fd stays in the epoll set, disarmed; arm() copes with either
  }
}

// epoll_pwait2 (Linux 5.11) takes a nanosecond timeout; without it (older kernels,
// qemu-user) epoll_wait's milliseconds, rounded up: a timer is never woken for early.
std::atomic<bool> g_no_pwait2{false};
int wait_events(int ep, epoll_event* evs, int n, const struct timespec* timeout) {
  if (!g_no_pwait2.load(std::memory_order_relaxed)) {
    const int r = epoll_pwait2(ep, evs, n, timeout, nullptr);
    if (r >= 0 || errno != ENOSYS) return r;
    g_no_pwait2.store(true, std::memory_order_relaxed);
  }
  int ms = -1;
  if (timeout) {
    const std::int64_t ns = static_cast<std::int64_t>(timeout->tv_sec) * 1'000'000'000 + timeout->tv_nsec;
    ms = static_cast<int>(std::min<std::int64_t>((ns + 999'999) / 1'000'000, 1 << 30));
  }
  return ::epoll_wait(ep, evs, n, ms);
}

void poll_now(epoll_worker* w, worker_io* wio) {
  epoll_event evs[64];
  const int n = ::epoll_wait(w->ep, evs, 64, 0);
  w->reaps.add();
  for (int i = 0; i < n; ++i) deliver(w, evs[i]);
  sync_busy(w, wio);
}

}  // namespace

epoll_worker* my_epoll(worker_io* wio, int* err) {
  if (void* s = wio->state.load(std::memory_order_relaxed)) return static_cast<epoll_worker*>(s);
  auto* w = new epoll_worker;
  w->ep = epoll_create1(EPOLL_CLOEXEC);
  if (w->ep < 0) {
    *err = errno;
    delete w;
    return nullptr;
  }
  w->kick_fd = lwkt::internal::enable_kick_fd();
  epoll_event e{};
  e.events = EPOLLIN;
  e.data.fd = w->kick_fd;
  if (w->kick_fd < 0 || make_nonblocking(w->kick_fd) != 0 ||
      epoll_ctl(w->ep, EPOLL_CTL_ADD, w->kick_fd, &e) != 0) {
    *err = errno ? errno : EMFILE;
    ::close(w->ep);
    delete w;
    return nullptr;
  }
  wio->state.store(w, std::memory_order_release);
  return w;
}

int make_nonblocking(int fd) {
  const int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return errno;
  if (fl & O_NONBLOCK) return 0;
  return fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0 ? 0 : errno;
}

void forget_fd(epoll_worker* w, int fd) {
  crit_enter();
  auto it = w->fds.find(fd);
  if (it != w->fds.end()) {
    while (ready_wait* r = it->second.head) {
      unlink(it->second, r);
      r->revents = EPOLLERR;
      r->woken = true;
      --w->waiters;
      lwkt::internal::io_wake(r->td, r);
    }
    if (it->second.added) (void)epoll_ctl(w->ep, EPOLL_CTL_DEL, fd, nullptr);
    w->fds.erase(it);
  }
  sync_busy(w, lwkt::internal::my_worker_io());
  crit_exit();
}

int wait_ready(epoll_worker* w, int fd, std::uint32_t events, absl::Time deadline,
               bool interruptible, const char* wmesg, std::uint32_t* revents) {
  thread* td = curthread();
  ready_wait r;
  r.td = td;
  r.fd = fd;
  r.events = events;
  worker_io* wio = lwkt::internal::my_worker_io();
  crit_enter();
  if (wio->closing) {  // shutdown began: no new waits (its cancel-all has run or will not see us)
    crit_exit();
    return ECANCELED;
  }
  fd_waiters& f = w->fds[fd];
  r.next = f.head;
  if (f.head) f.head->prev = &r;
  f.head = &r;
  if (int e = arm(w, fd, f); e != 0) {
    unlink(f, &r);
    if (!f.head) w->fds.erase(fd);
    crit_exit();
    return e == EPERM ? 0 : e;  // EPERM: a regular file, always ready
  }
  ++w->waiters;
  ++td->td_io_inflight;
  sync_busy(w, wio);
  crit_exit();
  int result = 0;
  while (!r.woken) {
    crit_enter();  // a preemptor's flush may wake r: check and interlock atomically
    if (r.woken) {
      crit_exit();
      break;
    }
    tsleep_interlock(&r, 0);
    crit_exit();
    absl::Duration left = absl::ZeroDuration();
    if (deadline != absl::InfiniteFuture()) {
      left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) left = absl::Nanoseconds(1);
    }
    const int e = tsleep(&r, PINTERLOCKED | (interruptible ? PCATCH : 0), wmesg, left);
    if (r.woken) {
      // Ready, and maybe interrupted too: tsleep consumed the request; give it back for
      // the thread's next interruptible wait (the caller's call goes on and succeeds).
      if (e == EINTR || e == ERESTART) lwkt::interrupt(td, e == ERESTART);
      break;
    }
    if (e == EINTR || e == ERESTART || (e == EWOULDBLOCK && absl::Now() >= deadline)) {
      result = e == EWOULDBLOCK ? ETIMEDOUT : e;
      crit_enter();
      auto it = w->fds.find(fd);
      unlink(it->second, &r);  // the registration may fire later and find nobody: fine
      if (!it->second.head) w->fds.erase(it);
      --w->waiters;
      sync_busy(w, wio);
      crit_exit();
      break;
    }
  }
  --td->td_io_inflight;
  *revents = r.revents;
  if (r.cancelled) return ECANCELED;
  return result;
}

void epoll_flush(worker_io* wio, bool idle) {
  auto* w = static_cast<epoll_worker*>(wio->state.load(std::memory_order_relaxed));
  if (w->nstash) {  // found by the idle spin
    const int n = w->nstash;
    w->nstash = 0;
    for (int i = 0; i < n; ++i) deliver(w, w->stash[i]);
    sync_busy(w, wio);
  }
  if (!w->waiters) return;
  const std::uint64_t now = lwkt::internal::cheap_clock();
  if (idle || now - w->last_poll >= lwkt::internal::ns_to_ticks(kPollEveryNs)) {
    w->last_poll = now;
    poll_now(w, wio);
  }
}

void epoll_wait_idle(worker_io* wio, const struct timespec* timeout) {
  auto* w = static_cast<epoll_worker*>(wio->state.load(std::memory_order_relaxed));
  crit_enter();
  epoll_event evs[64];
  w->waits.add();
  // The parker's eventfd is in the set: a kick written after our announcement makes this
  // return (level-triggered; its count is read in deliver).
  const int n = wait_events(w->ep, evs, 64, timeout);
  for (int i = 0; i < n; ++i) deliver(w, evs[i]);
  w->last_poll = lwkt::internal::cheap_clock();
  sync_busy(w, wio);
  crit_exit();
}

bool epoll_ready(worker_io* wio) {
  auto* w = static_cast<epoll_worker*>(wio->state.load(std::memory_order_relaxed));
  if (w->nstash || !w->waiters) return w->nstash > 0;
  const std::uint64_t now = lwkt::internal::cheap_clock();
  if (now - w->last_poll < lwkt::internal::ns_to_ticks(kPollEveryNs / 4)) return false;
  w->last_poll = now;
  w->nstash = ::epoll_wait(w->ep, w->stash, 64, 0);
  if (w->nstash < 0) w->nstash = 0;
  return w->nstash > 0;
}

void epoll_cancel_all(worker_io* wio) {
  auto* w = static_cast<epoll_worker*>(wio->state.load(std::memory_order_relaxed));
  for (auto& [fd, f] : w->fds) {
    while (ready_wait* r = f.head) {
      unlink(f, r);
      r->cancelled = true;
      r->woken = true;
      --w->waiters;
      lwkt::internal::io_wake(r->td, r);
    }
    if (f.added) (void)epoll_ctl(w->ep, EPOLL_CTL_DEL, fd, nullptr);
  }
  w->fds.clear();
  sync_busy(w, wio);
}

void epoll_exit(worker_io* wio) {
  auto* w = static_cast<epoll_worker*>(wio->state.load(std::memory_order_relaxed));
  // Waiters left are threads shutdown abandoned: the kernel holds nothing of theirs.
  ::close(w->ep);
  wio->state.store(nullptr, std::memory_order_release);
  wio->busy = 0;
  delete w;
}

}  // namespace lwkt::io::internal
