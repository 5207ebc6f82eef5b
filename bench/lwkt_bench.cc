// lwkt microbenchmarks and their peers, in one binary so every ratio comes from one run.
//
//   BM_Switch_Raw                  lwkt_cpu_switch there and back (2 switches)
//   BM_Switch_Raw_Asymmetric       the same, each side in different code
//   BM_Switch_Raw_MxcsrMode/M      BM_Switch_Raw with the MXCSR restore mode forced (x86-64)
//   BM_Peer_BoostContext_Jump      boost::context jump_fcontext there and back (2 switches)
//   BM_Yield                       lwkt::yield between two threads on one worker (1 switch)
//   BM_Yield_StallDetectorOff      the same with Options::stall_budget zero (no watchdog)
//   BM_Yield_Traced                the same with tracing on (Options::trace_events)
//   BM_Peer_BoostFiber_Yield       boost::this_fiber::yield between two fibers (1 switch)
//   BM_CreateExit_Join             lwkt::create + run + exit + reap + join, one worker
//   BM_CreateExit_Detached         lwkt::create + run + exit + reap, no join
//   BM_Peer_BoostFiber_SpawnJoin   boost::fibers::fiber + join
//   BM_Peer_StdThread_CreateJoin   std::thread + join
//   BM_Runq_EnqueueDequeue/N       run-queue insert + remove with N threads queued
//   BM_Runq_EnqueueDequeueMixedUpri/N   the same with 4 distinct td_upri values per level
#include <benchmark/benchmark.h>

#include <boost/context/detail/fcontext.hpp>
#include <boost/fiber/all.hpp>
#include <cstdint>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "lwkt/internal/context.h"
#include "lwkt/internal/runq.h"
#include "lwkt/runtime.h"
#include "lwkt/sched.h"

namespace {

using lwkt::Runtime;

// ---- Raw context switch.

void* g_sp[2];  // saved stack pointers of the benchmark's two bare contexts
std::int64_t g_rounds;

// Both contexts run this same loop, as lwkt threads switch through the same scheduler code:
// every return above the switch then goes where the return-stack predictor expects.
__attribute__((noinline)) void pingpong(int side, std::int64_t rounds) {
  for (std::int64_t i = 0; i < rounds; ++i) lwkt_cpu_switch(&g_sp[side], g_sp[1 - side], nullptr);
}

[[noreturn]] void symmetric_peer() {
  for (;;) pingpong(1, g_rounds);
}

[[noreturn]] void asymmetric_peer() {
  for (;;) lwkt_cpu_switch(&g_sp[1], g_sp[0], nullptr);
}

void* bare_context(std::vector<char>& stack, void (*fn)()) {
  void* top = reinterpret_cast<void*>(
      reinterpret_cast<std::uintptr_t>(stack.data() + stack.size()) & ~std::uintptr_t{15});
  return lwkt::internal::make_bare_frame(top, fn);
}

void BM_Switch_Raw(benchmark::State& state) {
  std::vector<char> stack(64 * 1024);
  g_sp[1] = bare_context(stack, symmetric_peer);
  g_rounds = state.max_iterations;
  while (state.KeepRunningBatch(g_rounds)) pingpong(0, g_rounds);
  state.SetLabel("there and back; both sides in the same code");
}
BENCHMARK(BM_Switch_Raw);

#if defined(__x86_64__)
// BM_Switch_Raw with each MXCSR restore mode forced, whatever the host's start-up choice
// (arg 0: reload only when the control bits differ, the Intel choice; 1: reload on every
// switch, the AMD choice): the evidence for that choice, measured in the same run.
void BM_Switch_Raw_MxcsrMode(benchmark::State& state) {
  const unsigned char host = lwkt_switch_mxcsr_always;
  lwkt_switch_mxcsr_always = static_cast<unsigned char>(state.range(0));
  std::vector<char> stack(64 * 1024);
  g_sp[1] = bare_context(stack, symmetric_peer);
  g_rounds = state.max_iterations;
  while (state.KeepRunningBatch(g_rounds)) pingpong(0, g_rounds);
  lwkt_switch_mxcsr_always = host;
  state.SetLabel(state.range(0) ? "MXCSR reloaded every switch" : "MXCSR compared first");
}
BENCHMARK(BM_Switch_Raw_MxcsrMode)->Arg(0)->Arg(1);
#endif

// The two sides run different loops, so each switch's return is mispredicted. Boost's
// jump_fcontext avoids that with an indirect jmp, which costs the runtime's real switch path
// more (see switch_x86_64_sysv_elf.S); reported for completeness.
void BM_Switch_Raw_Asymmetric(benchmark::State& state) {
  std::vector<char> stack(64 * 1024);
  g_sp[1] = bare_context(stack, asymmetric_peer);
  for (auto _ : state) benchmark::DoNotOptimize(lwkt_cpu_switch(&g_sp[0], g_sp[1], nullptr));
  state.SetLabel("there and back; different code on each side");
}
BENCHMARK(BM_Switch_Raw_Asymmetric);

namespace bctx = boost::context::detail;

void boost_peer(bctx::transfer_t t) {
  for (;;) t = bctx::jump_fcontext(t.fctx, nullptr);
}

void BM_Peer_BoostContext_Jump(benchmark::State& state) {
  std::vector<char> stack(64 * 1024);
  bctx::fcontext_t ctx =
      bctx::make_fcontext(stack.data() + stack.size(), stack.size(), boost_peer);
  for (auto _ : state) {
    bctx::transfer_t t = bctx::jump_fcontext(ctx, nullptr);
    ctx = t.fctx;
    benchmark::DoNotOptimize(ctx);
  }
  state.SetLabel("there and back");
}
BENCHMARK(BM_Peer_BoostContext_Jump);

// ---- Yield between two threads on one worker.

// rr_slice zero: every yield rotates, i.e. every yield switches.
std::unique_ptr<Runtime> one_worker(absl::Duration slice) {
  return lwkt_bench::make_runtime(1, slice);
}

// BM_Yield runs with the stall detector on (the default: a watchdog thread sampling every
// 5 ms, a heartbeat store per switch point); BM_Yield_StallDetectorOff with
// Options::stall_budget zero (no watchdog; the heartbeat store stays, it is unconditional).
void yield_pair(benchmark::State& state, std::unique_ptr<Runtime> rt) {
  const std::int64_t n = state.max_iterations;
  while (state.KeepRunningBatch(n)) {
    auto body = [n] {
      for (std::int64_t i = 0; i < n / 2; ++i) lwkt::yield();
    };
    auto a = rt->spawn(body);
    auto b = rt->spawn(body);
    a->join();
    b->join();
  }
  state.SetLabel("one switch per iteration");
}

void BM_Yield(benchmark::State& state) { yield_pair(state, one_worker(absl::ZeroDuration())); }
BENCHMARK(BM_Yield)->UseRealTime();

void BM_Yield_StallDetectorOff(benchmark::State& state) {
  lwkt::Runtime::Options o;
  o.workers = 1;
  o.rr_slice = absl::ZeroDuration();
  o.stall_budget = absl::ZeroDuration();
  auto rt = lwkt::Runtime::create(o);
  if (!rt.ok()) std::abort();
  yield_pair(state, std::move(*rt));
}
BENCHMARK(BM_Yield_StallDetectorOff)->UseRealTime();

// Tracing on (Options::trace_events): every switch records an event in the worker's ring.
void BM_Yield_Traced(benchmark::State& state) {
  lwkt::Runtime::Options o;
  o.workers = 1;
  o.rr_slice = absl::ZeroDuration();
  o.trace_events = 1 << 16;
  auto rt = lwkt::Runtime::create(o);
  if (!rt.ok()) std::abort();
  yield_pair(state, std::move(*rt));
}
BENCHMARK(BM_Yield_Traced)->UseRealTime();

void BM_Peer_BoostFiber_Yield(benchmark::State& state) {
  const std::int64_t n = state.max_iterations;
  while (state.KeepRunningBatch(n)) {
    auto body = [n] {
      for (std::int64_t i = 0; i < n / 2; ++i) boost::this_fiber::yield();
    };
    boost::fibers::fiber a(body), b(body);
    a.join();
    b.join();
  }
  state.SetLabel("one switch per iteration");
}
BENCHMARK(BM_Peer_BoostFiber_Yield);

// ---- Create, run, exit, reap (and join).

void nothing(void*) {}

void BM_CreateExit_Join(benchmark::State& state) {
  auto rt = one_worker(absl::ZeroDuration());
  const std::int64_t n = state.max_iterations;
  while (state.KeepRunningBatch(n)) {
    auto driver = rt->spawn([n] {
      for (std::int64_t i = 0; i < n; ++i) {
        auto td = lwkt::create(nothing, nullptr);
        td->join();
      }
    });
    driver->join();
  }
}
BENCHMARK(BM_CreateExit_Join)->UseRealTime();

void BM_CreateExit_Detached(benchmark::State& state) {
  auto rt = one_worker(absl::ZeroDuration());
  const std::int64_t n = state.max_iterations;
  while (state.KeepRunningBatch(n)) {
    auto driver = rt->spawn([n] {
      for (std::int64_t i = 0; i < n; ++i) {
        { auto td = lwkt::create(nothing, nullptr); }  // drop the reference at once
        lwkt::yield();  // the child runs, exits, and is reaped when we resume
      }
    });
    driver->join();
  }
}
BENCHMARK(BM_CreateExit_Detached)->UseRealTime();

void BM_Peer_BoostFiber_SpawnJoin(benchmark::State& state) {
  for (auto _ : state) {
    boost::fibers::fiber f([] {});
    f.join();
  }
}
BENCHMARK(BM_Peer_BoostFiber_SpawnJoin);

void BM_Peer_StdThread_CreateJoin(benchmark::State& state) {
  for (auto _ : state) {
    std::thread t([] {});
    t.join();
  }
}
BENCHMARK(BM_Peer_StdThread_CreateJoin)->UseRealTime();

// ---- Run queue.

void runq_bench(benchmark::State& state, int upri_values) {
  const int n = static_cast<int>(state.range(0));
  std::vector<lwkt::thread> resident(static_cast<std::size_t>(n));
  std::vector<lwkt::thread> probes(64);
  std::mt19937 rng(1);
  lwkt::internal::runq q;
  for (auto& t : resident) {
    t.td_pri = 1 + static_cast<int>(rng() % 30);
    t.td_upri = static_cast<int>(rng() % static_cast<unsigned>(upri_values));
    q.insert(&t);
  }
  for (auto& t : probes) {
    t.td_pri = 1 + static_cast<int>(rng() % 30);
    t.td_upri = static_cast<int>(rng() % static_cast<unsigned>(upri_values));
  }
  std::size_t i = 0;
  for (auto _ : state) {
    lwkt::thread* t = &probes[i++ & 63];
    q.insert(t);
    benchmark::DoNotOptimize(q.head());
    q.remove(t);
  }
}

void BM_Runq_EnqueueDequeue(benchmark::State& state) { runq_bench(state, 1); }
BENCHMARK(BM_Runq_EnqueueDequeue)->RangeMultiplier(10)->Range(10, 100000);

void BM_Runq_EnqueueDequeueMixedUpri(benchmark::State& state) { runq_bench(state, 4); }
BENCHMARK(BM_Runq_EnqueueDequeueMixedUpri)->RangeMultiplier(10)->Range(10, 100000);

}  // namespace

BENCHMARK_MAIN();
