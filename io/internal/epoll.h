// epoll.h: the epoll backend (private to //io): one epoll instance per worker, created by
// the worker on its first operation, with the parker's eventfd in it so that an idle wait
// also ends on a kick. An operation first tries its system call without blocking; when the
// descriptor is not ready, its thread waits for readiness (EPOLLONESHOT registrations, one
// per descriptor per worker, shared by that worker's waiters) and tries again.
// Touched only by its worker, inside critical sections, except the statistics.
#pragma once

#include <sys/epoll.h>
#include <time.h>

#include <cstdint>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "io/internal/backend.h"
#include "lwkt/internal/io_hook.h"
#include "lwkt/thread.h"

namespace lwkt::io::internal {

// A thread waiting for readiness; on its stack.
struct ready_wait {
  thread* td = nullptr;
  int fd = -1;
  std::uint32_t events = 0;   // EPOLLIN / EPOLLOUT / ...
  std::uint32_t revents = 0;  // what the wake saw
  bool woken = false;
  bool cancelled = false;     // shutdown's cancel_all woke it
  ready_wait* next = nullptr;
  ready_wait* prev = nullptr;
};

struct fd_waiters {
  ready_wait* head = nullptr;
  std::uint32_t armed = 0;    // events of the armed EPOLLONESHOT registration, 0: disarmed
  bool added = false;         // the fd is in the epoll set
};

struct epoll_worker : worker_base {
  epoll_worker() : worker_base(kEpoll) {}
  int ep = -1;
  int kick_fd = -1;
  std::uint32_t waiters = 0;         // threads waiting for readiness
  std::uint64_t last_poll = 0;       // cheap clock of the last non-blocking epoll_wait
  absl::flat_hash_map<int, fd_waiters> fds;
  // Events an idle spin's epoll_wait found, handed to the next flush.
  epoll_event stash[64];
  int nstash = 0;
};

// The calling worker's epoll state, created on first use; null with *err set.
epoll_worker* my_epoll(lwkt::internal::worker_io* wio, int* err);

// Waits until fd is ready for `events` (or an error/hang-up), the deadline, or an
// interrupt: 0 (revents in *revents), ETIMEDOUT, EINTR or ERESTART.
int wait_ready(epoll_worker* w, int fd, std::uint32_t events, absl::Time deadline,
               bool interruptible, const char* wmesg, std::uint32_t* revents);

// Before fd is closed (io::close): wakes its waiters (their calls retry and fail with
// EBADF) and forgets its registration, so a later descriptor with the same number starts
// afresh.
void forget_fd(epoll_worker* w, int fd);

// Makes fd non-blocking (once; leaves it so). 0 or an errno.
int make_nonblocking(int fd);

void epoll_flush(lwkt::internal::worker_io* wio, bool idle);
void epoll_wait_idle(lwkt::internal::worker_io* wio, const struct timespec* timeout);
bool epoll_ready(lwkt::internal::worker_io* wio);
void epoll_exit(lwkt::internal::worker_io* wio);
void epoll_cancel_all(lwkt::internal::worker_io* wio);

}  // namespace lwkt::io::internal
