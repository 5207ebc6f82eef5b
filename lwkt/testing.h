// testing.h: helpers for lwkt's tests (testonly).
//   test_runtime(workers, opts)  a Runtime with test-friendly defaults, asserting success
//   run_on(rt, fn, worker)       runs fn in an lwkt thread on `worker` and joins it
//   under_qemu()                 true when tests run under qemu user mode (scale loops down)
//   block_until(flag)            blocks the calling lwkt thread until flag is true (its
//                                waker sets the flag, then schedules it)
//   block_self()                 blocks the calling lwkt thread until someone schedules it
//   sleep_until_set(flag, wmesg) tsleeps on &flag, interlocked, until flag is true (its
//                                waker sets the flag, then wakes &flag)
//   wait_until_asleep(rt, name, n)  the calling lwkt thread waits until n threads named
//                                `name` are asleep in tsleep (Runtime::snapshot())
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <string_view>

#include "ipiq/internal/chaos.h"
#include "lwkt/runtime.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"

namespace lwkt::testing {

inline bool under_qemu() { return std::getenv("LWKT_UNDER_QEMU") != nullptr; }

// Arms the runtime's interleaving points (ipiq/internal/chaos.h) with `seed`; 0 disarms.
// At each point an armed OS thread sometimes spins or yields, chosen by the seed, so that
// rare windows (ring publish/consume, park/kick, token CAS, tsleep_interlock, ownership
// handoff) open often. Never switches lwkt threads.
inline void set_chaos_seed(std::uint64_t seed) {
  ipiq::chaos::g_seed.store(seed, std::memory_order_relaxed);
}

// Scales an iteration count down under qemu (about 20x slower) and sanitizers.
inline int scaled(int n) {
  int d = 1;
  if (under_qemu()) d *= 10;
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  d *= 4;
#endif
  return n / d > 0 ? n / d : 1;
}

// Death tests re-execute the test binary ("threadsafe"), which qemu user mode cannot do
// (the binary is not native); there they fork instead ("fast"). The runtime under test is
// created inside the death statement, so the forked child starts with no workers.
inline void use_safe_death_test_style() {
  GTEST_FLAG_SET(death_test_style, under_qemu() ? "fast" : "threadsafe");
}

inline std::unique_ptr<Runtime> test_runtime(int workers, Runtime::Options o = {}) {
  o.workers = workers;
  o.idle_spin = absl::Microseconds(20);
  auto rt = Runtime::create(o);
  EXPECT_TRUE(rt.ok()) << rt.status();
  return rt.ok() ? std::move(*rt) : nullptr;
}

inline void block_until(const std::atomic<bool>& flag) {
  crit_enter();
  while (!flag.load()) {
    deschedule_self();
    if (!flag.load()) lwkt_switch();
    schedule_self();
  }
  crit_exit();
}

// The interlocked sleep (join the sleep queue, then look): a wakeup between the look and
// the sleep is not lost, whichever worker or OS thread it comes from (lwkt/sleep.h).
inline void sleep_until_set(const std::atomic<bool>& flag, const char* wmesg) {
  for (;;) {
    tsleep_interlock(&flag);
    if (flag.load()) return;
    tsleep(&flag, PINTERLOCKED, wmesg);
  }
}

inline void block_self() {
  crit_enter();
  deschedule_self();
  lwkt_switch();
  crit_exit();
}

// For a test whose waker must act only once its sleepers are really asleep (a wakeup before
// that is lost, or tests nothing): polls Runtime::snapshot() until at least `n` threads named
// `name` are in state "sleep". Never a timed guess, so a loaded host only makes it slower.
// Runs on: an lwkt thread of `rt` (it pauses 1 ms between polls).
inline void wait_until_asleep(Runtime& rt, std::string_view name, int n = 1) {
  for (;;) {
    auto snap = rt.snapshot();
    EXPECT_TRUE(snap.ok()) << snap.status();
    if (!snap.ok()) return;
    int asleep = 0;
    for (const auto& w : snap->workers) {
      for (const auto& t : w.threads) asleep += (t.name == name && t.state == "sleep");
    }
    if (asleep >= n) return;
    lwkt_pause(absl::Milliseconds(1));
  }
}

template <typename F>
void run_on(Runtime& rt, F&& fn, int worker = 0) {
  thread_options o;
  o.name = "test-main";
  o.worker = worker;
  auto td = rt.spawn(std::forward<F>(fn), o);
  ASSERT_TRUE(td.ok()) << td.status();
  td->join();
}

}  // namespace lwkt::testing
