// per_worker.h
//
// per_worker<T>: one T per worker, each on its own cache-line pair, with an accessor that is
// safe across migration. lwkt threads can move between workers (OS threads) inside any call
// that may switch, and compilers may cache thread-local addresses across calls; local()
// reads the current worker afresh on every call (see internal::mycpu()), so never keep the
// reference it returns across a call that may switch.
#pragma once

#include <cstddef>
#include <memory>

#include "lwkt/internal/assert.h"
#include "lwkt/sched.h"

namespace lwkt {

template <typename T>
class per_worker {
 public:
  explicit per_worker(int workers) : _n(workers), _slots(new slot[static_cast<std::size_t>(workers)]) {}

  // The calling lwkt thread's worker's T. Runs on: an lwkt thread.
  T& local() {
    const int cpu = mycpuid();
    LWKT_ASSERT(cpu >= 0 && cpu < _n, curthread(), "per_worker::local on worker %d of %d", cpu, _n);
    return _slots[cpu].value;
  }
  T& at(int worker) { return _slots[worker].value; }
  int size() const { return _n; }

 private:
  struct alignas(128) slot {
    T value{};
  };
  int _n;
  std::unique_ptr<slot[]> _slots;
};

}  // namespace lwkt
