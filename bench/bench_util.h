// bench_util.h: helpers shared by the benchmark files.
//   pin_os_thread(cpu)   binds the calling OS thread (peer benchmarks) to a CPU
//   make_runtime(...)    a Runtime for a benchmark, aborting on failure
//   block_until(flag, v) blocks the calling lwkt thread until flag == v (its waker sets the
//                        flag, then schedules it)
#pragma once

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <thread>

#include "lwkt/runtime.h"
#include "lwkt/sched.h"

namespace lwkt_bench {

inline void pin_os_thread(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu % static_cast<int>(std::thread::hardware_concurrency()), &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

inline std::unique_ptr<lwkt::Runtime> make_runtime(int workers,
                                                   absl::Duration rr_slice = absl::Milliseconds(1),
                                                   absl::Duration idle_spin = absl::Microseconds(50)) {
  lwkt::Runtime::Options o;
  o.workers = workers;
  o.rr_slice = rr_slice;
  o.idle_spin = idle_spin;
  auto rt = lwkt::Runtime::create(o);
  if (!rt.ok()) std::abort();
  return std::move(*rt);
}

inline void block_until(std::atomic<int>& flag, int want) {
  lwkt::crit_enter();
  while (flag.load(std::memory_order_acquire) != want) {
    lwkt::deschedule_self();
    if (flag.load(std::memory_order_acquire) != want) lwkt::lwkt_switch();
    lwkt::schedule_self();
  }
  lwkt::crit_exit();
}

}  // namespace lwkt_bench
