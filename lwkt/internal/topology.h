// topology.h
//
// topology: the machine as hwloc sees it, and the operations the runtime needs from it:
// the processing units the process may use, where each sits (core, NUMA node), binding the
// calling OS thread to one, and NUMA-local allocation.
#pragma once

#include <hwloc.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lwkt::internal {

class topology {
 public:
  static absl::StatusOr<std::unique_ptr<topology>> load();
  ~topology();
  topology(const topology&) = delete;
  topology& operator=(const topology&) = delete;

  // OS indexes of the PUs the process may run on, ascending.
  const std::vector<int>& pus() const { return _pus; }
  bool has_pu(int os_index) const;
  int core_of(int pu) const;  // logical index of the PU's core (-1 if none)
  int numa_of(int pu) const;  // OS index of the PU's first NUMA node (-1 if none)
  // Binds the calling OS thread to the PU.
  absl::Status bind_this_thread(int pu) const;
  // Allocates `size` bytes bound to NUMA node `numa` (page aligned); null when hwloc cannot.
  void* alloc_on_node(std::size_t size, int numa) const;
  void free_on_node(void* p, std::size_t size) const;
  // "1 package, 1 NUMA node, 2 cores, 2 PUs" followed by one line per PU.
  std::string report() const;

 private:
  topology() = default;
  hwloc_obj_t pu_obj(int os_index) const;
  hwloc_topology_t _t = nullptr;
  std::vector<int> _pus;
};

}  // namespace lwkt::internal
