// topology.h
//
// topology: the machine as hwloc sees it, and the operations the runtime needs from it:
// the processing units the process may use, where each sits (core, NUMA node), binding the
// calling OS thread to one, and NUMA-local allocation; and the process's cgroup CPU quota,
// which caps the automatic worker count.
#pragma once

#include <hwloc.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace lwkt::internal {

// ---- The cgroup CPU quota.
//
// A container limited to 2 CPUs on a 64-PU host still has all 64 PUs in its cpuset; the
// limit is a CPU bandwidth quota: cgroup v2 `cpu.max` ("200000 100000": 200 ms of CPU time
// per 100 ms period = 2 CPUs; "max 100000": no limit) or cgroup v1 `cpu.cfs_quota_us` and
// `cpu.cfs_period_us` (quota -1: no limit). The process's cgroup comes from
// /proc/self/cgroup and its mount from /proc/self/mountinfo (the v1 `cpu` hierarchy if the
// cpu controller is bound there, else the v2 unified hierarchy). Every ancestor of the
// cgroup, up to the mount point, may set its own limit: the effective one is the smallest.
// Runtime::Options.workers = kAutoWorkers uses min(CPUs, ceil(quota / period)), at least 1,
// as Go's runtime does for GOMAXPROCS since 1.25.
struct cpu_quota {
  enum class kind {
    none,       // no limit file found (no cgroup, no cpu controller, the root cgroup)
    unlimited,  // limit files say "max" / -1 all the way up
    limited,    // quota_us / period_us CPUs
    ignored,    // the only limit file(s) found could not be read or parsed: no limit
  };
  kind what = kind::none;
  std::int64_t quota_us = 0;   // when limited
  std::int64_t period_us = 0;  // when limited
  std::string file;            // the file the limit (or the ignored one) came from
  // Why, for reports: "cgroup cpu.max 200000/100000 = 2 CPUs", "cgroup cpu.max max: no CPU
  // quota", "no cgroup CPU quota (...)", "<file>: malformed cpu.max \"x\": ignored".
  std::string reason;

  bool limited() const { return what == kind::limited; }
  // ceil(quota_us / period_us), at least 1, when limited; 0 otherwise.
  int cpus() const;
};

// Parses the contents of a cgroup v2 cpu.max file: "QUOTA PERIOD" (microseconds, both > 0)
// or "max [PERIOD]". Anything else is kind::ignored, with the reason naming `file`.
cpu_quota parse_cpu_max(std::string_view contents, const std::string& file);
// Parses cgroup v1 cpu.cfs_quota_us / cpu.cfs_period_us contents found in directory `dir`.
cpu_quota parse_cfs_quota(std::string_view quota, std::string_view period, const std::string& dir);
// Reads and parses one cpu.max file (kind::ignored if it cannot be read).
cpu_quota read_cpu_max_file(const std::string& path);
// The effective quota of the process's cgroup, found from /proc/self/cgroup and
// /proc/self/mountinfo and walking up to the mount point. `root` is prepended to every path
// read (tests build a fake tree under it; "" reads the real one).
cpu_quota find_cpu_quota(const std::string& root = "");
// What topology::load() uses: the file named by the environment variable
// LWKT_TEST_CPU_MAX_FILE when it is set and not empty (a test hook: that file alone is
// read, as if it were the cgroup's cpu.max, and the real cgroup is not looked at), else
// find_cpu_quota().
inline constexpr const char* kTestCpuMaxFileEnv = "LWKT_TEST_CPU_MAX_FILE";
cpu_quota process_cpu_quota();

struct worker_count {
  int workers = 0;
  // Why that count, for the placement report: "automatic: 64 PUs in the cpuset, cgroup
  // cpu.max 200000/100000 = 2 CPUs", "Options.workers", ...
  std::string reason;
};
// The worker count for Options.workers == `requested` with `ncpus` CPUs to place on (the
// cpuset's PUs, or Options.cpus when `cpus_from_options`): requested itself unless it is
// Runtime::kAutoWorkers (-1); then min(ncpus, quota.cpus()) when limited, else ncpus.
worker_count choose_workers(int requested, int ncpus, bool cpus_from_options,
                            const cpu_quota& quota);

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
  // The cgroup CPU quota read by load() (process_cpu_quota()).
  const cpu_quota& quota() const { return _quota; }
  // choose_workers() with this topology's quota.
  worker_count workers_for(int requested, int ncpus, bool cpus_from_options) const {
    return choose_workers(requested, ncpus, cpus_from_options, _quota);
  }
  // "1 package, 1 NUMA node, 2 cores, 2 PUs", the cgroup CPU quota line, then one line per PU.
  std::string report() const;

 private:
  topology() = default;
  hwloc_obj_t pu_obj(int os_index) const;
  hwloc_topology_t _t = nullptr;
  std::vector<int> _pus;
  cpu_quota _quota;
};

}  // namespace lwkt::internal
