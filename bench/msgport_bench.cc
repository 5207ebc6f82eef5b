// Message ports (msgport/msgport.h): a synchronous request/reply between two lwkt threads,
// against the same exchange between two OS threads (mutex + condition variable, and
// Boost.Fiber channels), all in the report's "message ports" group so that every ratio
// comes from one run.
//
//   BM_Msgport_Domsg/0   sender and receiver on one worker: queue, switch, reply, switch
//   BM_Msgport_Domsg/1   on two workers, receiver's worker polling (idle_spin 1 s): the
//                        message and the reply each cross the IPI ring
//   BM_Msgport_Domsg/2   on two workers, parking at once (idle_spin 0): each way wakes a
//                        halted worker
//   BM_Msgport_SpinPortDomsg   the same over a spin port, two workers, polling
#include <benchmark/benchmark.h>

#include <atomic>

#include "bench/bench_util.h"
#include "lwkt/runtime.h"
#include "lwkt/sched.h"
#include "msgport/msgport.h"

namespace {

template <typename Port>
void domsg_round_trip(benchmark::State& state, int receiver_worker, absl::Duration idle_spin) {
  auto rt = lwkt_bench::make_runtime(2, absl::Milliseconds(1), idle_spin);
  const std::int64_t n = state.max_iterations;
  while (state.KeepRunningBatch(n)) {
    std::atomic<Port*> port{nullptr};
    auto receiver = rt->spawn(
        [&] {
          Port p;
          port.store(&p, std::memory_order_release);
          for (std::int64_t i = 0; i < n; ++i) {
            lwkt::lwkt_msg* m = lwkt::lwkt_waitport(&p, 0);
            m->u.ms_result += 1;
            lwkt::lwkt_replymsg(m, 0);
          }
        },
        {.name = "receiver", .worker = receiver_worker});
    auto sender = rt->spawn(
        [&] {
          Port* to;
          while (!(to = port.load(std::memory_order_acquire))) lwkt::yield();
          lwkt::lwkt_msg m;
          lwkt::lwkt_initmsg(&m, nullptr, 0);
          m.u.ms_result = 0;
          for (std::int64_t i = 0; i < n; ++i) lwkt::lwkt_domsg(to, &m, 0);
          if (m.u.ms_result != n) std::abort();  // every message served once
        },
        {.name = "sender", .worker = 0});
    sender->join();
    receiver->join();
  }
}

void BM_Msgport_Domsg(benchmark::State& state) {
  const int mode = static_cast<int>(state.range(0));
  domsg_round_trip<lwkt::thread_port>(state, mode == 0 ? 0 : 1,
                                      mode == 2 ? absl::ZeroDuration() : absl::Seconds(1));
}
BENCHMARK(BM_Msgport_Domsg)->Arg(0)->Arg(1)->Arg(2)->UseRealTime();

void BM_Msgport_SpinPortDomsg(benchmark::State& state) {
  domsg_round_trip<lwkt::spin_port>(state, 1, absl::Seconds(1));
}
BENCHMARK(BM_Msgport_SpinPortDomsg)->UseRealTime();

}  // namespace
