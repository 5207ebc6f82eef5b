#include "lwkt/internal/topology.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "lwkt/runtime.h"

namespace lwkt::internal {

// ---- The cgroup CPU quota.

namespace {

// Reads a small file (a cgroup or procfs file) whole. False if it cannot be opened or read.
bool read_small_file(const std::string& path, std::string* out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  out->clear();
  char buf[4096];
  bool ok = true;
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ok = false;
    if (n <= 0) break;
    out->append(buf, static_cast<std::size_t>(n));
    if (out->size() > (std::size_t{1} << 22)) break;  // mountinfo of a huge host: enough
  }
  const int err = errno;
  ::close(fd);
  errno = err;
  return ok;
}

// The file's contents for a reason string: escaped, at most 40 bytes.
std::string quoted(absl::string_view contents) {
  contents = absl::StripAsciiWhitespace(contents);
  std::string q = absl::CHexEscape(contents.substr(0, 40));
  if (contents.size() > 40) q += "...";
  return absl::StrCat("\"", q, "\"");
}

std::string format_cpus(std::int64_t quota, std::int64_t period) {
  return absl::StrFormat("%g", static_cast<double>(quota) / static_cast<double>(period));
}

cpu_quota limited_quota(std::int64_t quota, std::int64_t period, const std::string& what,
                        const std::string& file) {
  cpu_quota q;
  q.what = cpu_quota::kind::limited;
  q.quota_us = quota;
  q.period_us = period;
  q.file = file;
  q.reason = absl::StrFormat("cgroup %s %d/%d = %s CPU%s", what, quota, period,
                             format_cpus(quota, period), quota == period ? "" : "s");
  return q;
}

cpu_quota ignored_quota(const std::string& file, std::string why) {
  cpu_quota q;
  q.what = cpu_quota::kind::ignored;
  q.file = file;
  q.reason = absl::StrCat(file, ": ", why, ": ignored");
  return q;
}

// quota_a/period_a < quota_b/period_b, exactly.
bool fewer_cpus(const cpu_quota& a, const cpu_quota& b) {
  return static_cast<__int128>(a.quota_us) * b.period_us <
         static_cast<__int128>(b.quota_us) * a.period_us;
}

// Undoes mountinfo's octal escapes (\040 for a space, \011, \012, \134).
std::string unescape_mountinfo(absl::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() &&
        s[i + 1] >= '0' && s[i + 1] <= '7' && s[i + 2] >= '0' && s[i + 2] <= '7' &&
        s[i + 3] >= '0' && s[i + 3] <= '7') {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

bool has_option(absl::string_view list, absl::string_view opt) {
  for (absl::string_view o : absl::StrSplit(list, ',')) {
    if (o == opt) return true;
  }
  return false;
}

struct cgroup_mount {
  std::string root;        // the path inside the hierarchy that is mounted
  std::string mountpoint;  // where
};

// Finds the mount of the v1 hierarchy with the cpu controller (`v1`) or of the v2 unified
// hierarchy, preferring one whose root contains `path`.
bool find_mount(absl::string_view mountinfo, bool v1, const std::string& path, cgroup_mount* out) {
  bool found = false;
  for (absl::string_view line : absl::StrSplit(mountinfo, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    // id parent major:minor root mountpoint options [optional...] - fstype source superopts
    std::size_t sep = 6;
    while (sep < f.size() && f[sep] != "-") ++sep;
    if (f.size() < 5 || sep + 1 >= f.size()) continue;
    const absl::string_view fstype = f[sep + 1];
    if (v1) {
      if (fstype != "cgroup" || sep + 3 >= f.size() || !has_option(f[sep + 3], "cpu")) continue;
    } else if (fstype != "cgroup2") {
      continue;
    }
    cgroup_mount m{unescape_mountinfo(f[3]), unescape_mountinfo(f[4])};
    const bool contains = m.root == "/" || path == m.root || absl::StartsWith(path, m.root + "/");
    if (!found || contains) {
      *out = std::move(m);
      found = true;
      if (contains) return true;
    }
  }
  return found;
}

}  // namespace

int cpu_quota::cpus() const {
  if (what != kind::limited || period_us <= 0) return 0;
  const std::int64_t n = quota_us / period_us + (quota_us % period_us != 0 ? 1 : 0);
  return static_cast<int>(std::clamp<std::int64_t>(n, 1, INT_MAX));
}

cpu_quota parse_cpu_max(std::string_view contents_std, const std::string& file) {
  const absl::string_view contents(contents_std.data(), contents_std.size());
  std::vector<absl::string_view> f = absl::StrSplit(absl::StripAsciiWhitespace(contents),
                                                    absl::ByAnyChar(" \t"), absl::SkipEmpty());
  std::int64_t quota = 0, period = 0;
  if (!f.empty() && f.size() <= 2 && f[0] == "max" &&
      (f.size() == 1 || (absl::SimpleAtoi(f[1], &period) && period > 0))) {
    cpu_quota q;
    q.what = cpu_quota::kind::unlimited;
    q.file = file;
    q.reason = "cgroup cpu.max max: no CPU quota";
    return q;
  }
  if (f.size() != 2 || !absl::SimpleAtoi(f[0], &quota) || !absl::SimpleAtoi(f[1], &period) ||
      quota <= 0 || period <= 0) {
    return ignored_quota(file, absl::StrCat("malformed cpu.max ", quoted(contents)));
  }
  return limited_quota(quota, period, "cpu.max", file);
}

cpu_quota parse_cfs_quota(std::string_view quota_std, std::string_view period_std,
                          const std::string& dir) {
  const absl::string_view quota_s(quota_std.data(), quota_std.size());
  const absl::string_view period_s(period_std.data(), period_std.size());
  std::int64_t quota = 0, period = 0;
  const std::string file = dir + "/cpu.cfs_quota_us";
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(quota_s), &quota) ||
      (quota <= 0 && quota != -1)) {
    return ignored_quota(file, absl::StrCat("malformed cpu.cfs_quota_us ", quoted(quota_s)));
  }
  if (quota == -1) {
    cpu_quota q;
    q.what = cpu_quota::kind::unlimited;
    q.file = file;
    q.reason = "cgroup cpu.cfs_quota_us -1: no CPU quota";
    return q;
  }
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(period_s), &period) || period <= 0) {
    return ignored_quota(dir + "/cpu.cfs_period_us",
                         absl::StrCat("malformed cpu.cfs_period_us ", quoted(period_s)));
  }
  return limited_quota(quota, period, "cpu.cfs_quota_us/cpu.cfs_period_us", file);
}

cpu_quota read_cpu_max_file(const std::string& path) {
  std::string contents;
  if (!read_small_file(path, &contents)) {
    return ignored_quota(path, absl::StrCat("cannot read: ", std::strerror(errno)));
  }
  return parse_cpu_max(contents, path);
}

cpu_quota find_cpu_quota(const std::string& root) {
  auto none = [](std::string why) {
    cpu_quota q;
    q.reason = absl::StrCat("no cgroup CPU quota (", why, ")");
    return q;
  };
  std::string cgroup, mountinfo;
  if (!read_small_file(root + "/proc/self/cgroup", &cgroup)) {
    return none("/proc/self/cgroup cannot be read");
  }
  // Lines "ID:CONTROLLERS:PATH". v1: a hierarchy whose controllers include "cpu"; v2: "0::PATH".
  std::string v1_path, v2_path;
  bool have_v1 = false, have_v2 = false;
  for (absl::string_view line : absl::StrSplit(cgroup, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (f.size() != 3) continue;
    if (f[0] == "0" && f[1].empty()) {
      have_v2 = true;
      v2_path = std::string(f[2]);
    } else if (has_option(f[1], "cpu")) {
      have_v1 = true;
      v1_path = std::string(f[2]);
    }
  }
  if (!have_v1 && !have_v2) return none("no cpu controller in /proc/self/cgroup");
  if (!read_small_file(root + "/proc/self/mountinfo", &mountinfo)) {
    return none("/proc/self/mountinfo cannot be read");
  }
  // The cpu controller is in v1 when a v1 hierarchy has it (hybrid setups); else in v2.
  const bool v1 = have_v1;
  const std::string& path = v1 ? v1_path : v2_path;
  cgroup_mount m;
  if (!find_mount(mountinfo, v1, path, &m)) {
    return none(v1 ? "no cgroup v1 cpu mount" : "no cgroup2 mount");
  }
  // The cgroup's directory: its path made relative to the mounted root.
  std::string rel;
  if (m.root == "/") {
    rel = path;
  } else if (path == m.root || absl::StartsWith(path, m.root + "/")) {
    rel = path.substr(m.root.size());
  } else {
    return none(absl::StrFormat("cgroup %s is outside the mount at %s (root %s)", path,
                                m.mountpoint, m.root));
  }
  while (!rel.empty() && rel.back() == '/') rel.pop_back();
  if (absl::StrContains(rel + "/", "/../")) {
    return none(absl::StrFormat("cgroup %s is outside this cgroup namespace", path));
  }
  std::string top = m.mountpoint;
  while (top.size() > 1 && top.back() == '/') top.pop_back();
  if (top == "/") top.clear();

  // Walk from the cgroup up to the mount point; the smallest limit wins.
  cpu_quota best, first_unlimited, first_ignored;
  for (std::string dir = top + rel;;) {
    const std::string d = root + dir;
    cpu_quota q;
    std::string a, b;
    if (v1) {
      if (read_small_file(d + "/cpu.cfs_quota_us", &a)) {
        if (!read_small_file(d + "/cpu.cfs_period_us", &b)) b.clear();
        q = parse_cfs_quota(a, b, d);
      }
    } else if (read_small_file(d + "/cpu.max", &a)) {
      q = parse_cpu_max(a, d + "/cpu.max");
    }
    if (q.what == cpu_quota::kind::limited && (!best.limited() || fewer_cpus(q, best))) {
      best = std::move(q);
    } else if (q.what == cpu_quota::kind::unlimited &&
               first_unlimited.what == cpu_quota::kind::none) {
      first_unlimited = std::move(q);
    } else if (q.what == cpu_quota::kind::ignored &&
               first_ignored.what == cpu_quota::kind::none) {
      first_ignored = std::move(q);
    }
    if (dir.size() <= top.size()) break;
    const std::size_t slash = dir.rfind('/');
    if (slash == std::string::npos || slash < top.size()) break;
    dir.resize(slash);
  }
  if (best.limited()) {
    if (first_ignored.what == cpu_quota::kind::ignored) {
      absl::StrAppend(&best.reason, " (", first_ignored.reason, ")");
    }
    return best;
  }
  if (first_ignored.what == cpu_quota::kind::ignored) return first_ignored;
  if (first_unlimited.what == cpu_quota::kind::unlimited) return first_unlimited;
  const char* file = v1 ? "cpu.cfs_quota_us" : "cpu.max";
  const std::string top_dir = root + (top.empty() ? "/" : top);
  if (rel.empty()) return none(absl::StrFormat("no %s in %s", file, top_dir));
  return none(absl::StrFormat("no %s from %s%s up to %s", file, root, top + rel, top_dir));
}

cpu_quota process_cpu_quota() {
  const char* test_file = std::getenv(kTestCpuMaxFileEnv);
  if (test_file && *test_file) return read_cpu_max_file(test_file);
  return find_cpu_quota();
}

worker_count choose_workers(int requested, int ncpus, bool cpus_from_options,
                            const cpu_quota& quota) {
  worker_count wc;
  if (requested != Runtime::kAutoWorkers) {
    wc.workers = requested;
    wc.reason = "Options.workers";
    if (quota.limited()) absl::StrAppend(&wc.reason, "; not limited by ", quota.reason);
    return wc;
  }
  const char* plural = ncpus == 1 ? "" : "s";
  const std::string cpus = cpus_from_options
                               ? absl::StrFormat("%d CPU%s in Options.cpus", ncpus, plural)
                               : absl::StrFormat("%d PU%s in the cpuset", ncpus, plural);
  wc.workers = std::max(ncpus, 1);
  switch (quota.what) {
    case cpu_quota::kind::limited:
      if (quota.cpus() < ncpus) {
        wc.workers = quota.cpus();
        wc.reason = absl::StrCat("automatic: ", cpus, ", ", quota.reason,
                                 quota.quota_us % quota.period_us != 0 ? ", rounded up" : "");
      } else {
        wc.reason = absl::StrCat("automatic: ", cpus, "; ", quota.reason, " is not fewer");
      }
      break;
    case cpu_quota::kind::ignored:
      wc.reason = absl::StrCat("automatic: ", cpus, "; ", quota.reason);
      break;
    default:
      wc.reason = absl::StrCat("automatic: ", cpus, ", ", quota.reason);
      break;
  }
  return wc;
}

// ---- topology.

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
  t->_quota = process_cpu_quota();
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
  absl::StrAppend(&out, "CPU quota: ", _quota.reason,
                  _quota.limited() ? absl::StrCat(" (", _quota.file, ")") : "", "\n");
  for (int pu : _pus) {
    absl::StrAppendFormat(&out, "  PU %d: core %d, NUMA node %d\n", pu, core_of(pu), numa_of(pu));
  }
  return out;
}

}  // namespace lwkt::internal
