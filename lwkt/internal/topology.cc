#include "lwkt/internal/topology.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace lwkt::internal {

absl::StatusOr<std::unique_ptr<topology>> topology::load() {
  std::unique_ptr<topology> t(new topology);
  if (hwloc_topology_init(&t->_t) != 0) {
    return absl::InternalError(absl::StrCat("hwloc_topology_init: ", std::strerror(errno)));
  }
  if (hwloc_topology_load(t->_t) != 0) {
    return absl::InternalError(absl::StrCat("hwloc_topology_load: ", std::strerror(errno)));
  }
  const int n = hwloc_get_nbobjs_by_type(t->_t, HWLOC_OBJ_PU);
  for (int i = 0; i < n; ++i) {
    hwloc_obj_t pu = hwloc_get_obj_by_type(t->_t, HWLOC_OBJ_PU, static_cast<unsigned>(i));
    t->_pus.push_back(static_cast<int>(pu->os_index));
  }
  std::sort(t->_pus.begin(), t->_pus.end());
  if (t->_pus.empty()) return absl::InternalError("hwloc found no processing unit");
  return t;
}

topology::~topology() {
  if (_t) hwloc_topology_destroy(_t);
}

hwloc_obj_t topology::pu_obj(int os_index) const {
  if (os_index < 0) return nullptr;
  return hwloc_get_pu_obj_by_os_index(_t, static_cast<unsigned>(os_index));
}

bool topology::has_pu(int os_index) const { return pu_obj(os_index) != nullptr; }

int topology::core_of(int pu) const {
  hwloc_obj_t o = pu_obj(pu);
  if (!o) return -1;
  hwloc_obj_t core = hwloc_get_ancestor_obj_by_type(_t, HWLOC_OBJ_CORE, o);
  return core ? static_cast<int>(core->logical_index) : -1;
}

int topology::numa_of(int pu) const {
  hwloc_obj_t o = pu_obj(pu);
  if (!o || !o->nodeset) return -1;
  return hwloc_bitmap_first(o->nodeset);
}

absl::Status topology::bind_this_thread(int pu) const {
  hwloc_obj_t o = pu_obj(pu);
  if (!o) return absl::InvalidArgumentError(absl::StrCat("no PU with OS index ", pu));
  if (hwloc_set_cpubind(_t, o->cpuset, HWLOC_CPUBIND_THREAD) != 0) {
    return absl::InternalError(
        absl::StrFormat("binding a worker to PU %d failed: %s", pu, std::strerror(errno)));
  }
  return absl::OkStatus();
}

void* topology::alloc_on_node(std::size_t size, int numa) const {
  if (numa < 0) return nullptr;
  hwloc_bitmap_t set = hwloc_bitmap_alloc();
  hwloc_bitmap_only(set, static_cast<unsigned>(numa));
  void* p = hwloc_alloc_membind(_t, size, set, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_BYNODESET);
  hwloc_bitmap_free(set);
  return p;
}

void topology::free_on_node(void* p, std::size_t size) const { hwloc_free(_t, p, size); }

std::string topology::report() const {
  auto count = [&](hwloc_obj_type_t type) { return hwloc_get_nbobjs_by_type(_t, type); };
  std::string out = absl::StrFormat(
      "machine: %d package(s), %d NUMA node(s), %d core(s), %d PU(s) usable by this process\n",
      count(HWLOC_OBJ_PACKAGE), count(HWLOC_OBJ_NUMANODE), count(HWLOC_OBJ_CORE),
      static_cast<int>(_pus.size()));
  for (int pu : _pus) {
    absl::StrAppendFormat(&out, "  PU %d: core %d, NUMA node %d\n", pu, core_of(pu), numa_of(pu));
  }
  return out;
}

}  // namespace lwkt::internal
