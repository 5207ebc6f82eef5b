// The idle policy as latency against CPU (issue 12, item 2): an open-loop load of messages
// arriving at one worker at a fixed rate with random (exponential) gaps, for each idle
// policy (Runtime::Options::idle_spin), measured as delivery latency from the *intended*
// send time (so a late sender cannot hide queueing: no coordinated omission) and as the
// receiving worker's CPU time per second of wall time.
//
//   BM_IdlePolicy/<spin_us>/<rate>   spin_us: idle_spin in microseconds (0: park at once;
//                                    1000000 stands for "never park", pure polling; -B:
//                                    the adaptive policy, idle_cpu_budget B%);
//                                    rate: messages per second. Counters: p50_ns, p99_ns,
//                                    cpu (receiving worker's CPU seconds per second), sent.
//
// The sender is an lwkt thread on worker 0 that yields while it waits for each intended
// send time (a switch point: the stall detector stays quiet); the receiver is worker 1,
// running nothing but the messages. The receiving worker's CPU time is read on the worker
// itself (CLOCK_THREAD_CPUTIME_ID of its OS thread) before and after.
#include <benchmark/benchmark.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <random>
#include <vector>

#include "bench/bench_util.h"
#include "lwkt/internal/clock.h"
#include "lwkt/ipi.h"
#include "lwkt/runtime.h"
#include "lwkt/sched.h"

namespace {

constexpr std::int64_t kPollForever = 1000000;  // idle_spin 1 s: the idle loop never parks
constexpr double kWindowSeconds = 0.3;

// Written by worker 1 only (the handler), read by main after the run.
std::vector<std::uint64_t>* g_latency_ticks;
std::atomic<std::int64_t> g_received{0};

void on_message(void* intended) {
  const std::uint64_t now = lwkt::internal::cheap_clock();
  const auto t = reinterpret_cast<std::uintptr_t>(intended);
  const std::int64_t i = g_received.load(std::memory_order_relaxed);
  (*g_latency_ticks)[static_cast<std::size_t>(i)] = now > t ? now - t : 0;
  g_received.store(i + 1, std::memory_order_release);
}

std::int64_t worker_cpu_ns(lwkt::Runtime& rt, int worker) {
  std::int64_t ns = 0;
  auto td = rt.spawn(
      [&ns] {
        struct timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        ns = static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
      },
      {.name = "cpu-probe", .worker = worker});
  if (!td.ok()) std::abort();
  td->join();
  return ns;
}

void BM_IdlePolicy(benchmark::State& state) {
  const std::int64_t spin_us = state.range(0);
  const std::int64_t rate = state.range(1);
  const auto n = static_cast<std::int64_t>(std::clamp<double>(rate * kWindowSeconds, 200, 200000));
  // spin_us < 0: the adaptive policy with a budget of -spin_us % of a CPU, spinning at most
  // 1 ms at a time.
  lwkt::Runtime::Options o;
  o.workers = 2;
  o.idle_spin = spin_us < 0 ? absl::Milliseconds(1) : absl::Microseconds(spin_us);
  o.idle_cpu_budget = spin_us < 0 ? static_cast<double>(-spin_us) / 100.0 : 0.0;
  auto made = lwkt::Runtime::create(o);
  if (!made.ok()) std::abort();
  std::unique_ptr<lwkt::Runtime> rt = std::move(*made);
  std::vector<std::uint64_t> latency(static_cast<std::size_t>(n));
  g_latency_ticks = &latency;
  // Exponential gaps with mean 1 / rate, in cheap-clock ticks; the same sequence every run.
  std::mt19937_64 rng(42);
  std::exponential_distribution<double> gap(static_cast<double>(rate));
  const double tpus = lwkt::internal::ticks_per_us();
  std::vector<std::uint64_t> gaps(static_cast<std::size_t>(n));
  for (auto& g : gaps) g = static_cast<std::uint64_t>(gap(rng) * 1e6 * tpus);
  double cpu_per_s = 0;
  for (auto _ : state) {
    g_received.store(0);
    const std::int64_t cpu0 = worker_cpu_ns(*rt, 1);
    const std::uint64_t t0 = lwkt::internal::cheap_clock();
    auto sender = rt->spawn(
        [&gaps, n] {
          std::uint64_t at = lwkt::internal::cheap_clock();
          for (std::int64_t i = 0; i < n; ++i) {
            at += gaps[static_cast<std::size_t>(i)];
            while (lwkt::internal::cheap_clock() < at) lwkt::yield();
            lwkt::send_ipiq(1, on_message, reinterpret_cast<void*>(static_cast<std::uintptr_t>(at)));
          }
        },
        {.name = "open-loop", .worker = 0});
    if (!sender.ok()) std::abort();
    sender->join();
    while (g_received.load(std::memory_order_acquire) < n) lwkt::internal::cpu_pause();
    const double wall_ns = static_cast<double>(lwkt::internal::cheap_clock() - t0) / tpus * 1e3;
    cpu_per_s = static_cast<double>(worker_cpu_ns(*rt, 1) - cpu0) / wall_ns;
  }
  std::sort(latency.begin(), latency.end());
  auto pct = [&](double p) {
    return static_cast<double>(latency[static_cast<std::size_t>(p * static_cast<double>(n - 1))]) /
           tpus * 1e3;
  };
  state.counters["p50_ns"] = pct(0.50);
  state.counters["p99_ns"] = pct(0.99);
  state.counters["cpu"] = cpu_per_s;
  state.counters["sent"] = static_cast<double>(n);
  state.SetLabel(spin_us >= kPollForever ? "poll"
                 : spin_us < 0 ? "adaptive, budget " + std::to_string(-spin_us) + "%"
                               : "idle_spin " + std::to_string(spin_us) + " us");
  (void)rt->shutdown();
}
BENCHMARK(BM_IdlePolicy)
    ->ArgsProduct({{0, 5, 50, 1000, kPollForever, -10, -30}, {1000, 10000, 100000, 500000}})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
