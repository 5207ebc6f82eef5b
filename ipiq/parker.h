// parker.h
//
// ipiq::parker: lets a consumer (an idle worker) sleep in the kernel when it has no work, and
// lets any producer wake it, without a lost wakeup and with at most one system call per
// park. Used by the worker inbox now and by the IPI rings later; it knows nothing about what
// the work is.
//
// Protocol (Dekker-style; the two seq_cst fences are the whole argument):
//   consumer:  prepare_park()  [_state = kParked; fence]
//              if (work is visible) cancel_park(); else park();
//   producer:  publish work;  kick()  [fence; if _state == kParked, swap to kRunning, wake]
// Why no wakeup is lost: the fences are totally ordered. If the consumer's fence comes
// first, the producer's load after its own fence sees kParked and wakes it. If the
// producer's fence comes first, the consumer's check after its fence sees the work and does
// not sleep. The futex sleep itself re-checks `_state == kParked` in the kernel, so a kick
// that lands between the check and the sleep makes the sleep return at once.
// A kick that finds the consumer running costs one fence and one load (no RMW, no syscall).
//
// The sleep itself is pluggable (kick_mechanism): a futex on the state word, or an eventfd
// the consumer reads (the form an io_uring-based idle loop can wait on with other events).
// The protocol above is the same for both; an eventfd wake that races with cancel_park()
// leaves a count behind, which makes the next park() return at once (a spurious wakeup).
#pragma once

#include <poll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

#include "ipiq/internal/chaos.h"
#include "ipiq/internal/futex.h"

namespace ipiq {

enum class kick_mechanism { futex, eventfd };

class parker {
 public:
  static constexpr std::uint32_t kRunning = 0;
  static constexpr std::uint32_t kParked = 1;

  parker() = default;
  parker(const parker&) = delete;
  parker& operator=(const parker&) = delete;
  ~parker() {
    if (const int fd = _efd.load(std::memory_order_relaxed); fd >= 0) close(fd);
  }

  // Chooses the sleep/wake primitive. Returns false (and keeps the previous one) if an
  // eventfd cannot be created. Runs on: the consumer, while it is not parked (before it
  // starts, or later: an idle loop that starts waiting in an io_uring switches to eventfd).
  // ordering: a producer reads _mech only after its exchange has read kParked (acquire),
  // which was stored (release, prepare_park) after this store: it sees this mechanism for
  // every park announced after the change. A producer still waking an earlier futex park
  // wakes a park that is already over (a no-op).
  bool set_mechanism(kick_mechanism m) {
    if (m == kick_mechanism::eventfd && _efd.load(std::memory_order_relaxed) < 0) {
      const int fd = eventfd(0, EFD_CLOEXEC);
      if (fd < 0) return false;
      _efd.store(fd, std::memory_order_relaxed);  // published by the _mech store below
    }
    _mech.store(m, std::memory_order_relaxed);
    return true;
  }
  kick_mechanism mechanism() const { return _mech.load(std::memory_order_relaxed); }

  // Consumer: announces the intent to sleep. Must be followed by a check for work and then
  // cancel_park() or park(). Runs on: the consumer only.
  void prepare_park() {
    // release: publishes the mechanism (and its eventfd) to the producer that wakes us.
    _state.store(kParked, std::memory_order_release);
    chaos::point(chaos::kParkAnnounce);
    // ordering: store-load barrier. The announcement must be visible before the consumer
    // reads the work queue (pairs with the fence in kick()); acquire/release cannot order a
    // store before a later load.
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }

  // Consumer: found work after prepare_park(); stay awake. Runs on: the consumer only.
  void cancel_park() { _state.store(kRunning, std::memory_order_relaxed); }

  // Consumer: sleeps until kicked (or `timeout`, relative, when not null; or spuriously).
  // Returns with the state back at kRunning. Runs on: the consumer only.
  void park(const struct timespec* timeout = nullptr) {
    if (mechanism() == kick_mechanism::eventfd) {
      // The count is non-zero if a kick already happened: the read returns at once.
      // ppoll takes the timeout at nanosecond resolution: poll's milliseconds would turn a
      // sub-millisecond timeout into 0 (an immediate return, and a caller that re-parks
      // until its deadline spins) and cut every other one short.
      const int fd = _efd.load(std::memory_order_relaxed);
      struct pollfd p = {fd, POLLIN, 0};
      if (ppoll(&p, 1, timeout, nullptr) > 0) {
        std::uint64_t v;
        (void)!read(fd, &v, sizeof v);
      }
    } else {
      // The kernel compares _state with kParked atomically with going to sleep.
      internal::futex_wait(&_state, kParked, timeout);
    }
    ++_parks;
    // relaxed: nothing is published through the state word (the work has its own
    // release/acquire pairs); a kick may already have stored kRunning, which is the same.
    _state.store(kRunning, std::memory_order_relaxed);
  }

  // Consumer: the same as park(), but the caller sleeps by its own means in `sleep` (for
  // example an io_uring wait that also has a read of event_fd() armed): `sleep` must return
  // once event_fd() has been written. Runs on: the consumer only, eventfd mechanism.
  template <class Sleep>
  void park_with(Sleep&& sleep) {
    sleep();
    ++_parks;
    _state.store(kRunning, std::memory_order_relaxed);  // as in park()
  }

  // The eventfd a kick writes (eventfd mechanism), -1 otherwise.
  int event_fd() const {
    return mechanism() == kick_mechanism::eventfd ? _efd.load(std::memory_order_relaxed) : -1;
  }

  // Producer: call after publishing work. Wakes the consumer if it announced parking.
  // Returns true if this call performed the wake (a system call).
  // Runs on: any OS thread.
  bool kick() {
    return kick_via([] { return false; });
  }

  // The same, but the producer that wins the wake first tries `wake()` (for example an
  // io_uring message into the consumer's ring, which its sleep also ends on); when that
  // returns false, the mechanism's own wake follows. Runs on: any OS thread.
  // `fenced`: the caller has issued a seq_cst fence after publishing its work (and before
  // this call), which then stands for the one below.
  template <class Wake>
  bool kick_via(Wake&& wake, bool fenced = false) {
    chaos::point(chaos::kKick);
    // ordering: store-load barrier, pairs with the fence in prepare_park(): the work
    // published before this point must be ordered before the load of _state below.
    if (!fenced) std::atomic_thread_fence(std::memory_order_seq_cst);
    if (_state.load(std::memory_order_relaxed) != kParked) return false;
    // acq_rel: only one of several concurrent producers wins the swap and pays the syscall.
    if (_state.exchange(kRunning, std::memory_order_acq_rel) != kParked) return false;
    if (wake()) return true;
    if (_mech.load(std::memory_order_relaxed) == kick_mechanism::eventfd) {
      const std::uint64_t one = 1;
      (void)!write(_efd.load(std::memory_order_relaxed), &one, sizeof one);
    } else {
      internal::futex_wake(&_state, 1);
    }
    return true;
  }

  // True while the consumer has announced parking (for tests and statistics).
  bool parked() const { return _state.load(std::memory_order_relaxed) == kParked; }

  // Number of times the consumer went to sleep (consumer-written; for statistics).
  std::uint64_t parks() const { return _parks; }

 private:
  // written: consumer (kParked, kRunning), producers (swap to kRunning); read: both.
  std::atomic<std::uint32_t> _state{kRunning};
  std::uint64_t _parks = 0;  // written and read: consumer only
  // written: consumer (set_mechanism, while running); read: producers, after a kParked.
  std::atomic<kick_mechanism> _mech{kick_mechanism::futex};
  // Written once (consumer), before the _mech store that names it; atomic because a
  // producer may read it while the consumer switches mechanisms.
  std::atomic<int> _efd{-1};
};

}  // namespace ipiq
