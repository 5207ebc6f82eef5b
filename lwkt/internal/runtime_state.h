// runtime_state.h: what a Runtime owns (private to //lwkt).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "lwkt/internal/globaldata.h"
#include "lwkt/internal/topology.h"
#include "lwkt/runtime.h"

namespace lwkt::internal {

struct runtime_state {
  Runtime::Options opts;
  std::unique_ptr<topology> topo;
  std::vector<globaldata*> gds;        // fixed after create(); index = worker
  std::unique_ptr<ipiq::ring[]> rings; // N x N; ring (s -> t) at s * N + t
  // kSleepHash x kMaskWords: which workers may have sleepers in each hash slot.
  std::unique_ptr<std::atomic<std::uint64_t>[]> slpque_cpumasks;
  std::vector<bool> gd_on_node;        // gds[i] came from hwloc_alloc_membind
  std::vector<std::thread> workers;
  std::atomic<bool> stopping{false};   // written: shutdown(); read: create paths
  std::atomic<std::uint32_t> rotor{0}; // round-robin worker choice for spawns from outside

  std::mutex shutdown_mu;              // serialises shutdown() callers
  bool shut_down = false;
  absl::Status shutdown_status;
};

// Checks thread options against the runtime; InvalidArgument naming the field.
absl::Status validate_thread_options(const runtime_state* rs, const thread_options& opts);

}  // namespace lwkt::internal
