// Issue 6 benchmarks: local preemption latency, and sleep/wakeup round trips between lwkt
// threads on different workers against std::condition_variable and Boost.Fiber's
// condition_variable between two OS threads.
//
//   BM_Preempt_Local                 schedule a better preemptable thread -> its first
//                                    instruction (counter), and back when it blocks (time)
//   BM_SleepWakeup_RoundTrip         tsleep/wakeup ping-pong, two workers (idle_spin default)
//   BM_Peer_CondvarSleepWakeup       std::mutex + std::condition_variable, two OS threads
//   BM_Peer_BoostFiber_CondvarRoundTrip   boost::fibers::mutex + condition_variable
//   BM_WakeupToRun_Local / _Remote   wakeup(ident) -> the sleeper's first instruction after
//                                    tsleep (p50/p99 counters); remote: receiver polling
#include <benchmark/benchmark.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <boost/fiber/all.hpp>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "lwkt/internal/clock.h"
#include "lwkt/runtime.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"

namespace {

using lwkt::Runtime;

std::uint64_t g_t0, g_t1;

void BM_Preempt_Local(benchmark::State& state) {
  auto rt = lwkt_bench::make_runtime(1);
  const std::int64_t n = state.max_iterations;
  std::vector<std::uint64_t> lat;
  lat.reserve(static_cast<std::size_t>(n));
  while (state.KeepRunningBatch(n)) {
    auto driver = rt->spawn([&, n] {
      lwkt::thread_options po;
      po.pri = lwkt::TDPRI_INT_SUPPORT;
      po.preemptable = true;
      po.nostart = true;
      auto p = lwkt::create(
          [&, n] {
            for (std::int64_t i = 0; i < n; ++i) {
              g_t1 = lwkt::internal::cheap_clock();
              lat.push_back(g_t1 - g_t0);
              lwkt::crit_enter();
              lwkt::deschedule_self();
              lwkt::lwkt_switch();  // unwinds to the preempted driver
              lwkt::crit_exit();
            }
          },
          po);
      for (std::int64_t i = 0; i < n; ++i) {
        g_t0 = lwkt::internal::cheap_clock();
        lwkt::schedule(p->get());  // preempts at once
      }
      lwkt::schedule(p->get());
      p->join();
    });
    driver->join();
  }
  std::sort(lat.begin(), lat.end());
  const double per_ns = lwkt::internal::ticks_per_us() / 1000.0;
  if (!lat.empty()) {
    state.counters["to_first_insn_p50_ns"] = static_cast<double>(lat[lat.size() / 2]) / per_ns;
    state.counters["to_first_insn_p99_ns"] =
        static_cast<double>(lat[lat.size() * 99 / 100]) / per_ns;
  }
  state.SetLabel("there (preempt) and back (unwind)");
}
BENCHMARK(BM_Preempt_Local)->UseRealTime();

void BM_SleepWakeup_RoundTrip(benchmark::State& state) {
  auto rt = lwkt_bench::make_runtime(2);
  const std::int64_t n = state.max_iterations;
  while (state.KeepRunningBatch(n)) {
    std::atomic<int> turn{0};
    std::vector<lwkt::thread_ref> tds;
    for (int side = 0; side < 2; ++side) {
      lwkt::thread_options to;
      to.worker = side;
      tds.push_back(*rt->spawn(
          [&turn, side, n] {
            for (std::int64_t i = 0; i < n; ++i) {
              while (turn.load() != side) {
                lwkt::tsleep_interlock(&turn);
                if (turn.load() == side) break;
                lwkt::tsleep(&turn, lwkt::PINTERLOCKED, "rt");
              }
              turn.store(1 - side);
              lwkt::wakeup(&turn);
            }
          },
          to));
    }
    for (auto& t : tds) t.join();
  }
}
BENCHMARK(BM_SleepWakeup_RoundTrip)->UseRealTime();

template <typename Mutex, typename CondVar>
void condvar_round_trip(benchmark::State& state) {
  const std::int64_t n = state.max_iterations;
  while (state.KeepRunningBatch(n)) {
    Mutex mu;
    CondVar cv;
    int turn = 0;
    std::vector<std::thread> ts;
    for (int side = 0; side < 2; ++side) {
      ts.emplace_back([&, side] {
        lwkt_bench::pin_os_thread(side);
        for (std::int64_t i = 0; i < n; ++i) {
          std::unique_lock<Mutex> l(mu);
          cv.wait(l, [&] { return turn == side; });
          turn = 1 - side;
          cv.notify_all();
        }
      });
    }
    for (auto& t : ts) t.join();
  }
}

void BM_Peer_CondvarSleepWakeup(benchmark::State& state) {
  condvar_round_trip<std::mutex, std::condition_variable>(state);
}
BENCHMARK(BM_Peer_CondvarSleepWakeup)->UseRealTime();

void BM_Peer_BoostFiber_CondvarRoundTrip(benchmark::State& state) {
  condvar_round_trip<boost::fibers::mutex, boost::fibers::condition_variable>(state);
}
BENCHMARK(BM_Peer_BoostFiber_CondvarRoundTrip)->UseRealTime();

// wakeup -> run latency. The sleeper stamps the clock when tsleep returns; the waker stamps
// it just before wakeup(). Local: both on worker 0 (the waker blocks right after the
// wakeup, so the sleeper runs next). Remote: sleeper on worker 1, which polls while idle.
void wakeup_to_run(benchmark::State& state, bool remote) {
  auto rt = lwkt_bench::make_runtime(2, absl::Milliseconds(1), absl::Seconds(1));
  const std::int64_t n = state.max_iterations;
  std::vector<std::uint64_t> lat;
  lat.reserve(static_cast<std::size_t>(n));
  // Blocks until `v` reaches `want`, with the interlock pattern.
  auto wait_for = [](std::atomic<std::int64_t>& v, std::int64_t want) {
    while (v.load() < want) {
      lwkt::tsleep_interlock(&v);
      if (v.load() >= want) break;
      lwkt::tsleep(&v, lwkt::PINTERLOCKED, "lat");
    }
  };
  while (state.KeepRunningBatch(n)) {
    std::atomic<std::int64_t> woken{0};  // waker -> sleeper: round i may run
    std::atomic<std::int64_t> acked{0};  // sleeper -> waker: round i done
    std::atomic<std::uint64_t> t0{0};
    lwkt::thread_options so, wo;
    so.worker = remote ? 1 : 0;
    wo.worker = 0;
    auto sleeper = rt->spawn(
        [&, n] {
          for (std::int64_t i = 1; i <= n; ++i) {
            wait_for(woken, i);
            lat.push_back(lwkt::internal::cheap_clock() - t0.load());
            acked.store(i);
            lwkt::wakeup(&acked);
          }
        },
        so);
    auto waker = rt->spawn(
        [&, n] {
          for (std::int64_t i = 1; i <= n; ++i) {
            t0.store(lwkt::internal::cheap_clock());
            woken.store(i);
            lwkt::wakeup(&woken);
            wait_for(acked, i);
          }
        },
        wo);
    sleeper->join();
    waker->join();
  }
  std::sort(lat.begin(), lat.end());
  const double per_ns = lwkt::internal::ticks_per_us() / 1000.0;
  if (!lat.empty()) {
    state.counters["p50_ns"] = static_cast<double>(lat[lat.size() / 2]) / per_ns;
    state.counters["p99_ns"] = static_cast<double>(lat[lat.size() * 99 / 100]) / per_ns;
    state.counters["p999_ns"] = static_cast<double>(lat[lat.size() * 999 / 1000]) / per_ns;
  }
}
void BM_WakeupToRun_Local(benchmark::State& state) { wakeup_to_run(state, false); }
BENCHMARK(BM_WakeupToRun_Local)->UseRealTime();
void BM_WakeupToRun_Remote(benchmark::State& state) { wakeup_to_run(state, true); }
BENCHMARK(BM_WakeupToRun_Remote)->UseRealTime();

}  // namespace
