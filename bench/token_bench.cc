// Token benchmarks (issue 5): uncontended get+release against std::mutex and absl::Mutex,
// two workers contending on one token against the same peers, and the cost a context switch
// pays for holding 1, 4 and 16 tokens.
//
//   BM_Token_Uncontended_Exclusive / _Shared      lwkt::gettoken(+_shared) + reltoken
//   BM_Peer_StdMutex_Uncontended / BM_Peer_AbslMutex_Uncontended
//   BM_Token_Contended_TwoWorkers                 two lwkt threads on two workers
//   BM_Peer_StdMutex_Contended / BM_Peer_AbslMutex_Contended   two pinned OS threads
//   BM_Yield_HoldingTokens/N                      lwkt::yield between two threads each
//                                                 holding N tokens (released and reacquired
//                                                 at every switch)
#include <benchmark/benchmark.h>
#include <pthread.h>

#include <mutex>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "bench/bench_util.h"
#include "lwkt/runtime.h"
#include "lwkt/sched.h"
#include "lwkt/token.h"

namespace {

using lwkt::Runtime;

using lwkt_bench::make_runtime;

void token_uncontended(benchmark::State& state, bool shared) {
  auto rt = make_runtime(1);
  lwkt::lwkt_token tok("bench");
  const std::int64_t n = state.max_iterations;
  while (state.KeepRunningBatch(n)) {
    auto td = rt->spawn([&, n] {
      for (std::int64_t i = 0; i < n; ++i) {
        if (shared) {
          lwkt::gettoken_shared(&tok);
        } else {
          lwkt::gettoken(&tok);
        }
        benchmark::ClobberMemory();
        lwkt::reltoken(&tok);
      }
    });
    td->join();
  }
}
void BM_Token_Uncontended_Exclusive(benchmark::State& s) { token_uncontended(s, false); }
BENCHMARK(BM_Token_Uncontended_Exclusive)->UseRealTime();
void BM_Token_Uncontended_Shared(benchmark::State& s) { token_uncontended(s, true); }
BENCHMARK(BM_Token_Uncontended_Shared)->UseRealTime();

void BM_Peer_StdMutex_Uncontended(benchmark::State& state) {
  std::mutex mu;
  for (auto _ : state) {
    mu.lock();
    benchmark::ClobberMemory();
    mu.unlock();
  }
}
BENCHMARK(BM_Peer_StdMutex_Uncontended);

void BM_Peer_AbslMutex_Uncontended(benchmark::State& state) {
  absl::Mutex mu;
  for (auto _ : state) {
    mu.Lock();
    benchmark::ClobberMemory();
    mu.Unlock();
  }
}
BENCHMARK(BM_Peer_AbslMutex_Uncontended);

// Two holders on two workers, each doing n/2 get+release pairs with a short critical region.
void BM_Token_Contended_TwoWorkers(benchmark::State& state) {
  auto rt = make_runtime(2);
  lwkt::lwkt_token tok("contended");
  long shared_counter = 0;
  const std::int64_t n = state.max_iterations;
  while (state.KeepRunningBatch(n)) {
    std::vector<lwkt::thread_ref> tds;
    for (int w = 0; w < 2; ++w) {
      lwkt::thread_options o;
      o.worker = w;
      tds.push_back(*rt->spawn(
          [&, n] {
            for (std::int64_t i = 0; i < n / 2; ++i) {
              lwkt::token_ref hold(&tok);
              ++shared_counter;
            }
          },
          o));
    }
    for (auto& t : tds) t.join();
  }
  benchmark::DoNotOptimize(shared_counter);
}
BENCHMARK(BM_Token_Contended_TwoWorkers)->UseRealTime();

template <typename Mutex, typename Lock>
void os_contended(benchmark::State& state) {
  Mutex mu;
  long shared_counter = 0;
  const std::int64_t n = state.max_iterations;
  while (state.KeepRunningBatch(n)) {
    std::vector<std::thread> ts;
    for (int w = 0; w < 2; ++w) {
      ts.emplace_back([&, w, n] {
        lwkt_bench::pin_os_thread(w);
        for (std::int64_t i = 0; i < n / 2; ++i) {
          Lock l(&mu);
          ++shared_counter;
        }
      });
    }
    for (auto& t : ts) t.join();
  }
  benchmark::DoNotOptimize(shared_counter);
}
struct std_lock {
  explicit std_lock(std::mutex* m) : g(*m) {}
  std::lock_guard<std::mutex> g;
};
void BM_Peer_StdMutex_Contended(benchmark::State& s) { os_contended<std::mutex, std_lock>(s); }
BENCHMARK(BM_Peer_StdMutex_Contended)->UseRealTime();
void BM_Peer_AbslMutex_Contended(benchmark::State& s) {
  os_contended<absl::Mutex, absl::MutexLock>(s);
}
BENCHMARK(BM_Peer_AbslMutex_Contended)->UseRealTime();

// Each of two threads on one worker holds N distinct tokens and yields; every switch
// releases the outgoing thread's N tokens and reacquires the incoming thread's N.
void BM_Yield_HoldingTokens(benchmark::State& state) {
  const int ntok = static_cast<int>(state.range(0));
  auto rt = make_runtime(1, absl::ZeroDuration());
  std::vector<lwkt::lwkt_token> toks(static_cast<std::size_t>(2 * ntok));
  const std::int64_t n = state.max_iterations;
  while (state.KeepRunningBatch(n)) {
    std::vector<lwkt::thread_ref> tds;
    for (int t = 0; t < 2; ++t) {
      tds.push_back(*rt->spawn([&, t, n] {
        for (int k = 0; k < ntok; ++k) lwkt::gettoken(&toks[static_cast<std::size_t>(t * ntok + k)]);
        for (std::int64_t i = 0; i < n / 2; ++i) lwkt::yield();
        for (int k = ntok - 1; k >= 0; --k) lwkt::reltoken(&toks[static_cast<std::size_t>(t * ntok + k)]);
      }));
    }
    for (auto& t : tds) t.join();
  }
}
BENCHMARK(BM_Yield_HoldingTokens)->Arg(0)->Arg(1)->Arg(4)->Arg(16)->UseRealTime();

}  // namespace
