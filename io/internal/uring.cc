// The io_uring backend: ring setup and feature probing, the scheduler hooks (flush at
// switch points, the idle wait, worker exit) and completion reaping.
#include "io/internal/uring.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include <sys/resource.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "io/testing.h"
#include "lwkt/internal/assert.h"
#include "lwkt/internal/clock.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"

namespace lwkt::io {
namespace internal {
namespace {

using lwkt::internal::worker_io;

constexpr unsigned kSqEntries = 256;
constexpr unsigned kCqEntries = 4096;
// Submission batching: prepared SQEs wait for the worker's next switch point that finds
// nothing else runnable, but no longer than this many of them or this long.
constexpr std::uint32_t kBatchMax = 32;
constexpr std::int64_t kBatchDelayNs = 20'000;
std::atomic<std::int64_t> g_batch_delay_ns{kBatchDelayNs};  // testing::set_batch_delay

std::atomic<int> g_injected_setup_error{0};
std::atomic<bool> g_msg_ring_kicks{true};  // testing::set_msg_ring_kicks
std::atomic<bool> g_msg_ring_missing{false};  // the probe found no IORING_OP_MSG_RING
// testing::simulate_uncancellable_io: cancels are not sent (shutdown's, worker exit's) and
// worker exit waits this long for what is in flight.
std::atomic<bool> g_exit_without_cancel{false};
std::atomic<bool> g_break_msg_ring{false};  // testing::break_msg_ring_kicks
std::atomic<std::int64_t> g_exit_patience_ns{2'000'000'000};
std::atomic<unsigned> g_sq_entries{0};  // testing::set_ring_entries; 0: kSqEntries
std::atomic<unsigned> g_cq_entries{0};

// Setup flag sets, best first; each falls back to the next on EINVAL (an older kernel).
constexpr unsigned kFlagSets[] = {
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
        IORING_SETUP_SUBMIT_ALL,
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
        IORING_SETUP_SUBMIT_ALL,
    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
    0,
};

std::string flag_names(unsigned f) {
  std::vector<std::string> v;
  if (f & IORING_SETUP_SINGLE_ISSUER) v.push_back("SINGLE_ISSUER");
  if (f & IORING_SETUP_DEFER_TASKRUN) v.push_back("DEFER_TASKRUN");
  if (f & IORING_SETUP_COOP_TASKRUN) v.push_back("COOP_TASKRUN");
  if (f & IORING_SETUP_TASKRUN_FLAG) v.push_back("TASKRUN_FLAG");
  if (f & IORING_SETUP_SUBMIT_ALL) v.push_back("SUBMIT_ALL");
  return v.empty() ? "no setup flags" : absl::StrJoin(v, "|");
}

std::string feature_names(unsigned f) {
  std::vector<std::string> v;
  if (f & IORING_FEAT_NODROP) v.push_back("NODROP");
  if (f & IORING_FEAT_EXT_ARG) v.push_back("EXT_ARG");
  if (f & IORING_FEAT_CQE_SKIP) v.push_back("CQE_SKIP");
  if (f & IORING_FEAT_FAST_POLL) v.push_back("FAST_POLL");
  return absl::StrJoin(v, ",");
}

// Creates `ring` with the best flag set the kernel accepts. 0 or a negative errno.
int setup_ring(io_uring* ring, unsigned entries, unsigned cq_entries, io_uring_params* out) {
  if (int e = g_injected_setup_error.load(std::memory_order_relaxed); e != 0) return -e;
  int r = -EINVAL;
  for (unsigned flags : kFlagSets) {
    io_uring_params p{};
    p.flags = flags | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
    p.cq_entries = cq_entries;
    r = io_uring_queue_init_params(entries, ring, &p);
    if (r == 0) {
      *out = p;
      return 0;
    }
    if (r != -EINVAL) return r;
  }
  return r;
}

std::string read_first_line(const char* path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

}  // namespace

// Why io_uring_setup failed, named exactly (the issue's causes: sysctl, policy, kernel,
// memlock).
std::string setup_failure_cause(int err) {
  const std::string errname = strerrorname_np(err) ? strerrorname_np(err) : absl::StrCat(err);
  switch (err) {
    case EPERM: {
      const std::string v = read_first_line("/proc/sys/kernel/io_uring_disabled");
      if (v == "2") {
        return "io_uring_setup: EPERM: the kernel.io_uring_disabled sysctl is 2 (io_uring is "
               "off for every process)";
      }
      if (v == "1") {
        return "io_uring_setup: EPERM: the kernel.io_uring_disabled sysctl is 1 and this "
               "process is not in kernel.io_uring_group";
      }
      return "io_uring_setup: EPERM: a seccomp filter or container policy forbids io_uring "
             "(kernel.io_uring_disabled is " + (v.empty() ? std::string("absent") : v) + ")";
    }
    case ENOSYS:
      return "io_uring_setup: ENOSYS: this kernel has no io_uring (or a seccomp filter "
             "answers ENOSYS for it)";
    case ENOMEM: {
      rlimit rl{};
      getrlimit(RLIMIT_MEMLOCK, &rl);
      return absl::StrCat("io_uring_setup: ENOMEM: the ring could not be allocated or locked "
                          "(RLIMIT_MEMLOCK is ",
                          rl.rlim_cur == RLIM_INFINITY ? std::string("unlimited")
                                                       : absl::StrCat(rl.rlim_cur / 1024, " KiB"),
                          "; kernels before 5.12 charge rings to it)");
    }
    default:
      return absl::StrCat("io_uring_setup: ", errname, " (", std::strerror(err), ")");
  }
}

namespace {

void sync_busy(uring_worker* w, worker_io* wio) { wio->busy = w->unsubmitted + w->inflight; }

worker_io* slot_of(uring_worker*) { return lwkt::internal::my_worker_io(); }

void arm_kick(uring_worker* w) {
  io_uring_sqe* sqe = get_sqe(w);
  io_uring_prep_read(sqe, w->kick_fd, &w->kick_buf, sizeof w->kick_buf, 0);
  io_uring_sqe_set_data64(sqe, kKickTag);
}

unsigned kernel_flags(const uring_worker* w) { return IO_URING_READ_ONCE(*w->ring.sq.kflags); }

// The answer to a MSG_RING kick of ours, `cqe`, if it failed: the target is woken through
// its parker's eventfd instead.
void kick_by_eventfd(uring_worker* w, const io_uring_cqe* cqe) {
  if (cqe->res >= 0) return;
  auto* target = reinterpret_cast<worker_io*>(cqe->user_data & ~std::uint64_t{7});
  if (const int fd = target->kick_fd.load(std::memory_order_acquire); fd >= 0) {
    const std::uint64_t one = 1;
    (void)!::write(fd, &one, sizeof one);
  }
  w->msg_ring_fallbacks.add();
}

// Takes every CQE: finished ops get their result and (when `wake`) their thread is made
// runnable; the kick read is re-armed. Returns how many CQEs it took.
unsigned reap(uring_worker* w, bool wake) {
  unsigned n = 0;
  unsigned head;
  io_uring_cqe* cqe;
  bool rearm = false;
  io_uring_for_each_cqe(&w->ring, head, cqe) {
    ++n;
    const std::uint64_t ud = cqe->user_data;
    if (ud == kKickTag) {
      rearm = true;
    } else if (ud == kIgnoreTag || ud == kMsgKickTag || ud == 0 || ud == LIBURING_UDATA_TIMEOUT) {
      // a cancel request's own answer, a kick (its job was to end the wait), or liburing's
      // internal wait timeout
    } else if ((ud & 7) == kMsgSentBit) {
      // Our MSG_RING kick failed (success posts nothing: CQE_SKIP_SUCCESS); unless
      // uring_kick saw it already, wake the target through its eventfd, so it is not lost.
      // kicks_checked moves past this CQE first: a scan in uring_kick (from a send further
      // down this stack) then skips it, as this loop skips what such a scan handled.
      if (static_cast<int>(head - w->kicks_checked) >= 0) {
        w->kicks_checked = head + 1;
        kick_by_eventfd(w, cqe);
      }
    } else if ((ud & 7) == kMultishotBit) {
      auto* m = reinterpret_cast<multishot*>(ud & ~std::uint64_t{7});
      m->on_cqe(m, w, cqe->res, cqe->flags);
      w->ops.add();
      if (!(cqe->flags & IORING_CQE_F_MORE)) {
        m->armed = false;  // the kernel posts no more for it
        --w->inflight;
      }
      if (wake && m->waiter) lwkt::internal::io_wake(m->waiter, m);
    } else {
      op* o = reinterpret_cast<op*>(ud);
      o->res = cqe->res;
      o->cqe_flags = cqe->flags;
      --w->inflight;
      w->ops.add();
      if (wake) {
        thread* td = o->td;
        --td->td_io_inflight;
        o->done = true;  // after this, o may be gone as soon as td runs: not touched again
        lwkt::internal::io_wake(td, o);
      } else {
        o->done = true;
      }
    }
  }
  if (n) io_uring_cq_advance(&w->ring, n);
  if (static_cast<int>(head - w->kicks_checked) > 0) w->kicks_checked = head;  // stays near
  if (rearm && w->kick_fd >= 0) arm_kick(w);
  return n;
}

// Reaps until the kernel holds no completion back (CQ overflow with IORING_FEAT_NODROP:
// an enter with GETEVENTS moves the held-back CQEs into the ring as it frees up).
unsigned reap_all(uring_worker* w, bool wake) {
  unsigned total = reap(w, wake);
  while (kernel_flags(w) & IORING_SQ_CQ_OVERFLOW) {
    w->cq_overflows.add();
    io_uring_get_events(&w->ring);
    const unsigned n = reap(w, wake);
    if (n == 0) break;
    total += n;
  }
  if (total) w->flags_futile = false;
  return total;
}

}  // namespace

void uring_flush(worker_io* wio, bool idle) {
  auto* w = static_cast<uring_worker*>(wio->state.load(std::memory_order_relaxed));
  const bool events = kernel_flags(w) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW);
  bool submit = false;
  if (w->unsubmitted) {
    submit = idle || w->unsubmitted >= kBatchMax ||
             lwkt::internal::cheap_clock() - w->first_prepared >=
                 lwkt::internal::ns_to_ticks(g_batch_delay_ns.load(std::memory_order_relaxed));
  }
  if (submit) {
    submit_now(w);  // io_uring_submit also takes pending completions (GETEVENTS) if any
  } else if (events) {
    io_uring_get_events(&w->ring);
    w->reaps.add();
  }
  const bool got = reap_all(w, true) != 0;
  // Regression (CI, asan and tsan): the flags can stay set through an enter that runs no
  // completion; counted as "ready", they kept the idle loop flushing (940,980 enters in
  // 300 ms) and never parking. The wait in the ring loses nothing (it enters the kernel).
  w->flags_futile = !got && events &&
                    (kernel_flags(w) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW));
  sync_busy(w, wio);
}

void uring_wait(worker_io* wio, const struct timespec* timeout) {
  auto* w = static_cast<uring_worker*>(wio->state.load(std::memory_order_relaxed));
  crit_enter();  // reaping makes threads runnable
  __kernel_timespec kts{};
  if (timeout) {
    kts.tv_sec = timeout->tv_sec;
    kts.tv_nsec = timeout->tv_nsec;
  }
  io_uring_cqe* cqe = nullptr;
  w->waits.add();
  // One io_uring_enter: submits what is prepared, then sleeps until a CQE (an op, or the
  // kick read of the parker's eventfd), the timeout, or a signal. The parker protocol made
  // the kick's eventfd write happen-after our announcement, and the armed read consumes
  // the count whenever it came: no kick is lost (docs/io.md, "Parking in the ring").
  (void)io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, timeout ? &kts : nullptr, nullptr);
  w->unsubmitted = io_uring_sq_ready(&w->ring);
  reap_all(w, true);
  w->flags_futile = false;  // waited: the kernel's flags count again
  sync_busy(w, wio);
  crit_exit();
}

bool uring_ready(worker_io* wio) {
  auto* w = static_cast<uring_worker*>(wio->state.load(std::memory_order_relaxed));
  return io_uring_cq_ready(&w->ring) > 0 ||
         (!w->flags_futile && (kernel_flags(w) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)));
}

std::uint32_t uring_exit(worker_io* wio) {
  auto* w = static_cast<uring_worker*>(wio->state.load(std::memory_order_relaxed));
  // Threads shutdown abandoned may still wait here: cancel everything (the kick read too)
  // and reap, without waking anyone, while their stacks are still mapped.
  if (!g_exit_without_cancel.load(std::memory_order_relaxed)) {
    io_uring_sqe* sqe = get_sqe(w);
    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
    io_uring_sqe_set_data64(sqe, kIgnoreTag);
  }
  w->kick_fd = -1;  // not re-armed
  const std::uint64_t until =
      lwkt::internal::cheap_clock() +
      lwkt::internal::ns_to_ticks(g_exit_patience_ns.load(std::memory_order_relaxed));
  std::uint32_t left = w->inflight;
  while (true) {
    __kernel_timespec kts{0, 50'000'000};
    io_uring_cqe* cqe = nullptr;
    (void)io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &kts, nullptr);
    reap_all(w, false);
    left = w->inflight;
    if (left == 0 || lwkt::internal::cheap_clock() >= until) break;
  }
  if (left) {
    std::fprintf(stderr,
                 "lwkt: io: worker stopping with %u operation(s) that did not finish within "
                 "the wait after their cancellation; closing the ring\n", left);
  }
  wio->ring_fd.store(-1, std::memory_order_release);  // no more kicks into this ring
  wio->kick_fd.store(-1, std::memory_order_release);
  if (buffer_pool* bp = w->pool) {
    (void)io_uring_unregister_buf_ring(&w->ring, 0);
    munmap(bp->br, bp->ring_bytes);
    munmap(bp->bufs, bp->bufs_bytes);
    delete[] bp->next;
    delete[] bp->len;
    delete bp;
  }
  io_uring_queue_exit(&w->ring);
  wio->state.store(nullptr, std::memory_order_release);
  wio->busy = 0;
  delete w;
  return left;
}

bool uring_kick(worker_io* target) {
  if (!g_msg_ring_kicks.load(std::memory_order_relaxed)) return false;
  const int fd = target->ring_fd.load(std::memory_order_acquire);
  worker_io* me = lwkt::internal::my_worker_io();
  if (fd < 0 || me == nullptr || me == target) return false;
  auto* w = static_cast<uring_worker*>(me->state.load(std::memory_order_relaxed));
  if (w == nullptr || w->kind != kUring) return false;
  // From our own ring (single issuer: we are its worker). A plain increment, not
  // crit_enter/crit_exit: the kick is part of a send, which must not run handlers here.
  thread* td = curthread();
  ++td->td_critcount;
  io_uring_sqe* sqe = get_sqe(w);
  io_uring_prep_msg_ring(sqe, g_break_msg_ring.load(std::memory_order_relaxed) ? w->kick_fd : fd,
                         0, kMsgKickTag, 0);
  io_uring_sqe_set_data64(sqe, reinterpret_cast<std::uint64_t>(target) | kMsgSentBit);
  if (w->skip_success) sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
  submit_now(w);
  // A MSG_RING that fails at once (the target's ring gone, or not a ring) has posted its
  // CQE by the time the submit returns. Carry that kick by eventfd now, not at our next
  // reap, which may be far off (the sender may compute for long). Only looks at the CQEs:
  // a reap may be running further up this stack (a completion handler that sends), and
  // what it iterates must not change under it; reap skips the failures handled here.
  // acquire: pairs with the kernel's release of the CQ tail; the CQEs below it are written.
  const unsigned tail = io_uring_smp_load_acquire(w->ring.cq.ktail);
  unsigned i = *w->ring.cq.khead;
  if (static_cast<int>(w->kicks_checked - i) > 0) i = w->kicks_checked;
  for (; i != tail; ++i) {
    const io_uring_cqe* cqe = &w->ring.cq.cqes[i & w->ring.cq.ring_mask];
    if (cqe->user_data > 7 && (cqe->user_data & 7) == kMsgSentBit) kick_by_eventfd(w, cqe);
  }
  w->kicks_checked = tail;
  --td->td_critcount;
  w->msg_ring_kicks.add();
  return true;
}

void uring_cancel_all(worker_io* wio) {
  if (g_exit_without_cancel.load(std::memory_order_relaxed)) return;
  auto* w = static_cast<uring_worker*>(wio->state.load(std::memory_order_relaxed));
  io_uring_sqe* sqe = get_sqe(w);
  // Everything, the kick read included (its CQE re-arms it).
  io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
  io_uring_sqe_set_data64(sqe, kIgnoreTag);
  w->cancels.add();
  submit_now(w);
  // Receivers waiting for a pool buffer have nothing armed to cancel: wake them, and they
  // see `closing` (io::pooled_receiver::recv).
  if (w->pool != nullptr && w->pool->waiters) wakeup_mycpu(w->pool);
}

int probe_uring(unsigned* flags, unsigned* features) {
  io_uring ring;
  io_uring_params p{};
  const int r = setup_ring(&ring, 8, 16, &p);
  if (r != 0) return r;
  // Opcodes the kernel has: kicks go ring to ring only where IORING_OP_MSG_RING exists
  // (5.18); elsewhere the eventfd carries them.
  if (io_uring_probe* pr = io_uring_get_probe_ring(&ring)) {
    if (!io_uring_opcode_supported(pr, IORING_OP_MSG_RING)) {
      g_msg_ring_kicks.store(false, std::memory_order_relaxed);
      g_msg_ring_missing.store(true, std::memory_order_relaxed);
    }
    io_uring_free_probe(pr);
  }
  io_uring_queue_exit(&ring);
  *flags = p.flags & ~(IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP);
  *features = p.features;
  return 0;
}

std::string describe_uring(unsigned flags, unsigned features) {
  return absl::StrCat(flag_names(flags), "; features ", feature_names(features),
                      g_msg_ring_missing.load() ? "; kicks by eventfd (no IORING_OP_MSG_RING)"
                                                : "; kicks ring to ring (MSG_RING)");
}

uring_worker* my_ring(worker_io* wio, int* err) {
  if (void* s = wio->state.load(std::memory_order_relaxed)) return static_cast<uring_worker*>(s);
  auto* w = new uring_worker;
  io_uring_params p{};
  const unsigned sq = g_sq_entries.load(std::memory_order_relaxed);
  const unsigned cq = g_cq_entries.load(std::memory_order_relaxed);
  if (int r = setup_ring(&w->ring, sq ? sq : kSqEntries, cq ? cq : kCqEntries, &p); r != 0) {
    delete w;
    *err = -r;
    return nullptr;
  }
  w->setup_flags = p.flags;
  w->skip_success = p.features & IORING_FEAT_CQE_SKIP;
  (void)io_uring_register_ring_fd(&w->ring);  // saves an fd lookup per enter; optional
  w->kick_fd = lwkt::internal::enable_kick_fd();
  if (w->kick_fd < 0) {
    *err = errno ? errno : EMFILE;
    io_uring_queue_exit(&w->ring);
    delete w;
    return nullptr;
  }
  crit_enter();
  arm_kick(w);
  // release: io::stats() on another worker reads the counters through this pointer.
  wio->state.store(w, std::memory_order_release);
  wio->kick_fd.store(w->kick_fd, std::memory_order_release);
  wio->ring_fd.store(w->ring.ring_fd, std::memory_order_release);
  sync_busy(w, wio);
  crit_exit();
  return w;
}

io_uring_sqe* get_sqe(uring_worker* w) {
  io_uring_sqe* sqe;
  while ((sqe = io_uring_get_sqe(&w->ring)) == nullptr) {
    w->sq_full.add();
    submit_now(w);  // SQ full: make room, never drop
    if (io_uring_sq_space_left(&w->ring) == 0) reap_all(w, true);
  }
  if (w->unsubmitted++ == 0) w->first_prepared = lwkt::internal::cheap_clock();
  return sqe;
}

void submit_now(uring_worker* w) {
  for (;;) {
    const int r = io_uring_submit(&w->ring);
    if (r >= 0) break;
    if (r == -EINTR) continue;
    if (r == -EBUSY || r == -EAGAIN) {  // completions held back: take them, then retry
      io_uring_get_events(&w->ring);
      reap_all(w, true);
      continue;
    }
    LWKT_ASSERT(false, curthread(), "io: io_uring_submit failed: %s (%s)",
                strerrorname_np(-r) ? strerrorname_np(-r) : "?", std::strerror(-r));
  }
  w->submits.add();
  w->unsubmitted = io_uring_sq_ready(&w->ring);
  if (worker_io* wio = slot_of(w)) sync_busy(w, wio);
}

void cancel(uring_worker* w, op* o) { cancel_data(w, reinterpret_cast<std::uint64_t>(o)); }

void cancel_data(uring_worker* w, std::uint64_t user_data) {
  io_uring_sqe* sqe = get_sqe(w);
  io_uring_prep_cancel64(sqe, user_data, 0);
  io_uring_sqe_set_data64(sqe, kIgnoreTag);
  if (w->skip_success) sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
  w->cancels.add();
  submit_now(w);
}

int ensure_pool(uring_worker* w, unsigned n, unsigned size) {
  if (w->pool) return 0;
  auto* bp = new buffer_pool;
  bp->n = n;
  bp->size = size;
  // liburing 2.4's io_uring_setup_buf_ring, on 2.3's calls: a page-aligned ring of n
  // entries (n a power of two), registered as buffer group 0, then filled.
  bp->ring_bytes = n * sizeof(io_uring_buf);
  void* ring = mmap(nullptr, bp->ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  bp->bufs_bytes = static_cast<std::size_t>(n) * size;
  void* bufs = mmap(nullptr, bp->bufs_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (ring == MAP_FAILED || bufs == MAP_FAILED) {
    const int e = errno;
    if (ring != MAP_FAILED) munmap(ring, bp->ring_bytes);
    if (bufs != MAP_FAILED) munmap(bufs, bp->bufs_bytes);
    delete bp;
    return e;
  }
  bp->br = static_cast<io_uring_buf_ring*>(ring);
  bp->bufs = static_cast<char*>(bufs);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<std::uint64_t>(ring);
  reg.ring_entries = n;
  reg.bgid = 0;
  if (int r = io_uring_register_buf_ring(&w->ring, &reg, 0); r != 0) {
    munmap(ring, bp->ring_bytes);
    munmap(bufs, bp->bufs_bytes);
    delete bp;
    return -r;
  }
  io_uring_buf_ring_init(bp->br);
  bp->next = new int[n];
  bp->len = new unsigned[n];
  const int mask = io_uring_buf_ring_mask(n);
  for (unsigned i = 0; i < n; ++i) {
    io_uring_buf_ring_add(bp->br, bp->bufs + static_cast<std::size_t>(i) * size, size,
                          static_cast<unsigned short>(i), mask, static_cast<int>(i));
  }
  io_uring_buf_ring_advance(bp->br, static_cast<int>(n));  // store-release of the tail
  bp->free_count = n;
  w->pool = bp;
  return 0;
}

void pool_release(uring_worker* w, unsigned bid) {
  buffer_pool* bp = w->pool;
  io_uring_buf_ring_add(bp->br, bp->bufs + static_cast<std::size_t>(bid) * bp->size, bp->size,
                        static_cast<unsigned short>(bid), io_uring_buf_ring_mask(bp->n), 0);
  io_uring_buf_ring_advance(bp->br, 1);
  ++bp->free_count;
  if (bp->waiters) wakeup_mycpu(bp);  // receivers waiting for a free buffer to re-arm
}

}  // namespace internal

namespace testing {
void inject_setup_error(int err) {
  internal::g_injected_setup_error.store(err, std::memory_order_relaxed);
}
void break_msg_ring_kicks(bool on) {
  internal::g_break_msg_ring.store(on, std::memory_order_relaxed);
}

void simulate_uncancellable_io(bool on, absl::Duration exit_patience) {
  internal::g_exit_without_cancel.store(on, std::memory_order_relaxed);
  internal::g_exit_patience_ns.store(on ? absl::ToInt64Nanoseconds(exit_patience) : 2'000'000'000,
                                     std::memory_order_relaxed);
}

void set_msg_ring_kicks(bool on) {
  internal::g_msg_ring_kicks.store(on && !internal::g_msg_ring_missing.load(), std::memory_order_relaxed);
}

void set_batch_delay(absl::Duration d) {
  internal::g_batch_delay_ns.store(absl::ToInt64Nanoseconds(d), std::memory_order_relaxed);
}

void set_ring_entries(unsigned sq, unsigned cq) {
  internal::g_sq_entries.store(sq, std::memory_order_relaxed);
  internal::g_cq_entries.store(cq, std::memory_order_relaxed);
}
}  // namespace testing

}  // namespace lwkt::io
