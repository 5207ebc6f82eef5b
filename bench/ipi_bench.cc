// Cross-worker benchmarks (issue 4): round trips between lwkt threads on two workers, with
// the receiver polling and with it parked, against the same exchange between OS threads
// (atomic ping-pong, the physical floor; mutex + condition variable) and Boost.Fiber
// channels; and IPI ring throughput.
//
//   BM_RoundTrip_Polling / BM_RoundTrip_Parked       lwkt::schedule there and back
//   BM_RoundTrip_IpiOnly                             a message bounced by the handlers
//   BM_Peer_AtomicPingPong                           two pinned OS threads, one atomic
//   BM_Peer_CondvarPingPong                          std::mutex + std::condition_variable
//   BM_Peer_BoostFiber_ChannelRoundTrip              two buffered_channels, two OS threads
//   BM_IpiThroughput                                 send_ipiq messages per second, one pair
//   BM_WakeLatency_Futex / _Eventfd                  send -> handler on a parked worker,
//                                                    p50/p99/p99.9 per kick mechanism
//   BM_RuntimeMemory/N                               RSS of a Runtime, lazy rings
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/fiber/all.hpp>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "io/io.h"
#include "io/testing.h"
#include "ipiq/ring.h"
#include "lwkt/internal/clock.h"
#include "lwkt/internal/ipi_internal.h"
#include "lwkt/ipi.h"
#include "lwkt/runtime.h"
#include "lwkt/sched.h"

namespace {

using lwkt::Runtime;


// A on worker 0 schedules B on worker 1, which schedules A back; each blocks in between.
// Both use DragonFly's idiom (a critical section around schedule + deschedule_self +
// lwkt_switch): a schedule that arrives before the deschedule is run only by the worker's
// next switch, after it, so no flag is needed to tell a wakeup from a spurious run. (An
// extra shared flag, as an earlier form of this benchmark had, is one more cache line per
// direction: it measured the flag as much as the runtime.)
void lwkt_round_trip(benchmark::State& state, absl::Duration idle_spin) {
  auto rt = lwkt_bench::make_runtime(2, absl::Milliseconds(1), idle_spin);
  const std::int64_t n = state.max_iterations;
  while (state.KeepRunningBatch(n)) {
    std::atomic<lwkt::thread*> a_td{nullptr};
    lwkt::thread_options bo;
    bo.worker = 1;
    bo.nostart = true;
    auto b = rt->spawn(
        [&] {  // started by A's first schedule; each schedule of A is one reply
          lwkt::thread* a = a_td.load();
          lwkt::crit_enter();
          for (std::int64_t i = 0; i < n; ++i) {
            lwkt::schedule(a);
            if (i + 1 == n) break;
            lwkt::deschedule_self();
            lwkt::lwkt_switch();
          }
          lwkt::crit_exit();
        },
        bo);
    lwkt::thread_options ao;
    ao.worker = 0;
    lwkt::thread* bt = b->get();
    auto a = rt->spawn(
        [&, bt] {
          a_td.store(lwkt::curthread());
          lwkt::crit_enter();
          for (std::int64_t i = 0; i < n; ++i) {
            lwkt::schedule(bt);
            lwkt::deschedule_self();
            lwkt::lwkt_switch();
          }
          lwkt::crit_exit();
        },
        ao);
    a->join();
    b->join();
  }
}

void BM_RoundTrip_Polling(benchmark::State& state) {
  lwkt_round_trip(state, absl::Seconds(1));
}
BENCHMARK(BM_RoundTrip_Polling)->UseRealTime();

void BM_RoundTrip_Parked(benchmark::State& state) {
  lwkt_round_trip(state, absl::ZeroDuration());
}
BENCHMARK(BM_RoundTrip_Parked)->UseRealTime();

// The ring alone: a message bounces between the two workers' idle loops, each handler
// sending the next one (no thread is scheduled or switched to until the last). Against
// BM_RoundTrip_Polling it leaves out schedule (its thread-object lines), the run queue and
// two context switches per direction. The count of messages left travels in the message
// (arg2), so that nothing but the ring is shared.
void ipi_bounce(void* waiter, int left, lwkt::globaldata*) {
  if (left > 1) {
    lwkt::send_ipiq3(1 - lwkt::mycpuid(), ipi_bounce, waiter, left - 1);
  } else {
    lwkt::schedule(static_cast<lwkt::thread*>(waiter));  // on worker 0: the count is even
  }
}
void BM_RoundTrip_IpiOnly(benchmark::State& state) {
  auto rt = lwkt_bench::make_runtime(2, absl::Milliseconds(1), absl::Seconds(1));
  const std::int64_t n = state.max_iterations;
  while (state.KeepRunningBatch(n)) {
    lwkt::thread_options o;
    o.worker = 0;
    auto a = rt->spawn(
        [&] {
          lwkt::crit_enter();
          lwkt::send_ipiq3(1, ipi_bounce, lwkt::curthread(), static_cast<int>(2 * n));
          lwkt::deschedule_self();
          lwkt::lwkt_switch();
          lwkt::crit_exit();
        },
        o);
    a->join();
  }
}
BENCHMARK(BM_RoundTrip_IpiOnly)->UseRealTime();

void BM_Peer_AtomicPingPong(benchmark::State& state) {
  std::atomic<int> v{0};
  const std::int64_t n = state.max_iterations;
  while (state.KeepRunningBatch(n)) {
    v.store(0);
    std::thread peer([&] {
      lwkt_bench::pin_os_thread(1);
      for (std::int64_t i = 0; i < n; ++i) {
        while (v.load(std::memory_order_acquire) != 1) {}
        v.store(0, std::memory_order_release);
      }
    });
    std::thread self([&] {
      lwkt_bench::pin_os_thread(0);
      for (std::int64_t i = 0; i < n; ++i) {
        v.store(1, std::memory_order_release);
        while (v.load(std::memory_order_acquire) != 0) {}
      }
    });
    self.join();
    peer.join();
  }
}
BENCHMARK(BM_Peer_AtomicPingPong)->UseRealTime();

void BM_Peer_CondvarPingPong(benchmark::State& state) {
  const std::int64_t n = state.max_iterations;
  while (state.KeepRunningBatch(n)) {
    std::mutex mu;
    std::condition_variable cv;
    int turn = 0;
    std::thread peer([&] {
      lwkt_bench::pin_os_thread(1);
      for (std::int64_t i = 0; i < n; ++i) {
        std::unique_lock<std::mutex> l(mu);
        cv.wait(l, [&] { return turn == 1; });
        turn = 0;
        cv.notify_all();
      }
    });
    std::thread self([&] {
      lwkt_bench::pin_os_thread(0);
      for (std::int64_t i = 0; i < n; ++i) {
        std::unique_lock<std::mutex> l(mu);
        turn = 1;
        cv.notify_all();
        cv.wait(l, [&] { return turn == 0; });
      }
    });
    self.join();
    peer.join();
  }
}
BENCHMARK(BM_Peer_CondvarPingPong)->UseRealTime();

void BM_Peer_BoostFiber_ChannelRoundTrip(benchmark::State& state) {
  const std::int64_t n = state.max_iterations;
  while (state.KeepRunningBatch(n)) {
    boost::fibers::buffered_channel<int> there(2), back(2);
    std::thread peer([&] {
      lwkt_bench::pin_os_thread(1);
      int v;
      for (std::int64_t i = 0; i < n; ++i) {
        there.pop(v);
        back.push(v);
      }
    });
    std::thread self([&] {
      lwkt_bench::pin_os_thread(0);
      int v;
      for (std::int64_t i = 0; i < n; ++i) {
        there.push(1);
        back.pop(v);
      }
    });
    self.join();
    peer.join();
  }
}
BENCHMARK(BM_Peer_BoostFiber_ChannelRoundTrip)->UseRealTime();

std::atomic<std::int64_t> g_received;
void on_msg(void*) { g_received.fetch_add(1, std::memory_order_relaxed); }

// Messages per second from worker 0 to worker 1; the sender waits for the receiver only
// through the ring (full ring: wait for room).
void BM_IpiThroughput(benchmark::State& state) {
  auto rt = lwkt_bench::make_runtime(2, absl::Milliseconds(1), absl::Seconds(1));
  const std::int64_t n = state.max_iterations;
  while (state.KeepRunningBatch(n)) {
    g_received = 0;
    lwkt::thread_options so;
    so.worker = 0;
    auto s = rt->spawn(
        [n] {
          std::uint32_t seq = 0;
          for (std::int64_t i = 0; i < n; ++i) seq = lwkt::send_ipiq(1, on_msg, nullptr);
          lwkt::wait_ipiq(1, seq);
        },
        so);
    s->join();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_IpiThroughput)->UseRealTime();

}  // namespace

namespace {

// Wake latency of a parked worker: from the send to the handler's first instruction, with
// the target parked in the kernel before every sample. Reports p50/p99/p99.9 as counters.
std::atomic<std::uint64_t> g_woke_at;
void stamp(void*) { g_woke_at.store(lwkt::internal::cheap_clock(), std::memory_order_release); }

// in_ring: both workers first do an I/O operation, so from then on worker 1 parks in its
// io_uring, whatever `kick` says, and worker 0 kicks it through IORING_OP_MSG_RING from its
// own ring (msg_ring) or through the eventfd read armed in worker 1's ring.
void wake_latency(benchmark::State& state, ipiq::kick_mechanism kick, bool in_ring = false,
                  bool msg_ring = false) {
  lwkt::io::testing::set_msg_ring_kicks(msg_ring);
  Runtime::Options o;
  o.workers = 2;
  o.idle_spin = absl::ZeroDuration();
  o.kick = kick;
  o.io = in_ring ? lwkt::io_backend::io_uring : lwkt::io_backend::off;
  auto made = Runtime::create(o);
  if (!made.ok()) {
    state.SkipWithError(std::string(made.status().message()).c_str());
    return;
  }
  auto rt = std::move(*made);
  if (in_ring) {
    lwkt::thread_options w1;
    w1.worker = 1;
    // A worker's first operation creates its ring (this one completes at once).
    for (int w : {0, 1}) {
      w1.worker = w;
      auto t = rt->spawn([] {
        int q[2];
        if (pipe(q) != 0 || !lwkt::io::poll(q[1], POLLOUT).ok()) std::abort();
        close(q[0]);
        close(q[1]);
      }, w1);
      t->join();
    }
  }
  std::vector<double> ns;
  const double per_ns = lwkt::internal::ticks_per_us() / 1000.0;
  lwkt::thread_options so;
  so.worker = 0;
  for (auto _ : state) {
    auto s = rt->spawn(
        [&ns, per_ns] {
          lwkt::globaldata* w1 = lwkt::internal::worker_gd(1);
          while (!w1->gd_parker.parked()) lwkt::yield();
          g_woke_at.store(0);
          const std::uint64_t t0 = lwkt::internal::cheap_clock();
          lwkt::send_ipiq(1, stamp, nullptr);
          std::uint64_t t1;
          while ((t1 = g_woke_at.load(std::memory_order_acquire)) == 0) {}
          ns.push_back(static_cast<double>(t1 - t0) / per_ns);
        },
        so);
    s->join();
  }
  std::sort(ns.begin(), ns.end());
  auto pct = [&](double p) { return ns.empty() ? 0.0 : ns[static_cast<std::size_t>(p * (ns.size() - 1))]; };
  state.counters["p50_ns"] = pct(0.50);
  state.counters["p99_ns"] = pct(0.99);
  state.counters["p999_ns"] = pct(0.999);
}

void BM_WakeLatency_Futex(benchmark::State& state) { wake_latency(state, ipiq::kick_mechanism::futex); }
BENCHMARK(BM_WakeLatency_Futex)->Iterations(2000)->UseRealTime();
void BM_WakeLatency_Eventfd(benchmark::State& state) {
  wake_latency(state, ipiq::kick_mechanism::eventfd);
}
BENCHMARK(BM_WakeLatency_Eventfd)->Iterations(2000)->UseRealTime();
void BM_WakeLatency_IoRingEventfd(benchmark::State& state) {
  wake_latency(state, ipiq::kick_mechanism::futex, true);
}
BENCHMARK(BM_WakeLatency_IoRingEventfd)->Iterations(2000)->UseRealTime();
void BM_WakeLatency_IoRingMsgRing(benchmark::State& state) {
  wake_latency(state, ipiq::kick_mechanism::futex, true, true);
}
BENCHMARK(BM_WakeLatency_IoRingMsgRing)->Iterations(2000)->UseRealTime();

}  // namespace

// ---- Memory of the IPI rings (issue 12, item 4): rings are allocated on a pair's first
// message, so a runtime pays for the pairs that talk, not for all N^2.
//   BM_RuntimeMemory/N   one Runtime of N workers (more than the machine's cores is
//                        allowed): resident memory it adds once started, and once every
//                        worker has sent one message to its neighbour (N rings); counters
//                        in KiB, with what the N^2 rings allocated at start-up would take.
namespace {
long rss_kib() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}
}  // namespace

void BM_RuntimeMemory(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  double started = 0, neighbours = 0, rings = 0;
  for (auto _ : state) {
    const long before = rss_kib();
    auto rt = lwkt_bench::make_runtime(n);
    started = static_cast<double>(rss_kib() - before);
    std::vector<lwkt::thread_ref> tds;
    for (int w = 0; w < n; ++w) {
      auto td = rt->spawn(
          [w, n] {
            const int to = (w + 1) % n;
            lwkt::wait_ipiq(to, lwkt::send_ipiq(to, [](void*) {}, nullptr));
          },
          {.worker = w});
      if (!td.ok()) std::abort();
      tds.push_back(std::move(*td));
    }
    for (auto& td : tds) td.join();
    neighbours = static_cast<double>(rss_kib() - before);
    rings = static_cast<double>(rt->stats().ipi_rings);
    (void)rt->shutdown();
  }
  state.counters["rss_started_kib"] = started;
  state.counters["rss_neighbours_kib"] = neighbours;
  state.counters["rings"] = rings;
  state.counters["eager_rings_kib"] =
      static_cast<double>(n) * n * static_cast<double>(sizeof(ipiq::ring)) / 1024.0;
  state.SetLabel("RSS added by a Runtime");
}
BENCHMARK(BM_RuntimeMemory)->Arg(2)->Arg(16)->Arg(64)->Arg(256)->Iterations(1)->Unit(benchmark::kMillisecond);
