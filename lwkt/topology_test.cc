// The automatic worker count and the cgroup CPU quota (lwkt/internal/topology.h): parsing
// cpu.max and the v1 cfs files, finding the cgroup in a fake /proc + /sys tree, and
// Runtime::create with the LWKT_TEST_CPU_MAX_FILE hook (never this machine's real cgroup).
#include "lwkt/internal/topology.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <string>

#include "lwkt/runtime.h"
#include "lwkt/testing.h"

namespace lwkt {
namespace {

using internal::choose_workers;
using internal::cpu_quota;
using internal::find_cpu_quota;
using internal::parse_cfs_quota;
using internal::parse_cpu_max;

std::string tmpdir() {
  const char* d = std::getenv("TEST_TMPDIR");
  return d && *d ? d : "/tmp";
}

void mkdirs(const std::string& path) {
  for (std::size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      const std::string p = path.substr(0, i);
      ASSERT_TRUE(::mkdir(p.c_str(), 0755) == 0 || errno == EEXIST) << p;
    }
  }
}

void write_file(const std::string& path, const std::string& contents) {
  mkdirs(path.substr(0, path.rfind('/')));
  std::ofstream f(path, std::ios::trunc);
  f << contents;
  ASSERT_TRUE(f.good()) << path;
}

// A fresh directory under the test's tmpdir, standing in for "/".
std::string fake_root(const std::string& name) {
  std::string root = tmpdir() + "/fake-" + name;
  mkdirs(root);
  return root;
}

int usable_pus() {
  auto t = internal::topology::load();
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? static_cast<int>((*t)->pus().size()) : 1;
}

// ---- cpu.max and cfs parsing.

TEST(CpuQuota, CpuMaxWholeCpus) {
  cpu_quota q = parse_cpu_max("200000 100000\n", "/x/cpu.max");
  ASSERT_TRUE(q.limited()) << q.reason;
  EXPECT_EQ(q.quota_us, 200000);
  EXPECT_EQ(q.period_us, 100000);
  EXPECT_EQ(q.cpus(), 2);
  EXPECT_EQ(q.file, "/x/cpu.max");
  EXPECT_EQ(q.reason, "cgroup cpu.max 200000/100000 = 2 CPUs");
  EXPECT_EQ(parse_cpu_max("100000 100000", "f").reason, "cgroup cpu.max 100000/100000 = 1 CPU");
}

TEST(CpuQuota, CpuMaxFractionRoundsUpAndNeverBelowOne) {
  cpu_quota q = parse_cpu_max("150000 100000", "f");
  EXPECT_EQ(q.cpus(), 2);
  EXPECT_EQ(q.reason, "cgroup cpu.max 150000/100000 = 1.5 CPUs");
  EXPECT_EQ(parse_cpu_max("5000 100000", "f").cpus(), 1);
  EXPECT_EQ(parse_cpu_max("200001 100000", "f").cpus(), 3);
}

TEST(CpuQuota, CpuMaxMaxIsUnlimited) {
  for (const char* s : {"max 100000\n", "max", "  max\t100000  "}) {
    cpu_quota q = parse_cpu_max(s, "f");
    EXPECT_EQ(q.what, cpu_quota::kind::unlimited) << s;
    EXPECT_EQ(q.cpus(), 0);
    EXPECT_EQ(q.reason, "cgroup cpu.max max: no CPU quota");
  }
}

TEST(CpuQuota, MalformedCpuMaxIsIgnoredWithTheReason) {
  for (const char* s : {"", "\n", "banana", "100000", "-5 100000", "0 100000", "100 0",
                        "100 -1", "1 2 3", "max 0", "max abc", "12abc 100000", "1e5 100000",
                        "99999999999999999999999 100000"}) {
    cpu_quota q = parse_cpu_max(s, "/cg/cpu.max");
    EXPECT_EQ(q.what, cpu_quota::kind::ignored) << "'" << s << "'";
    EXPECT_EQ(q.cpus(), 0);
    EXPECT_EQ(q.reason.rfind("/cg/cpu.max: malformed cpu.max \"", 0), 0u) << q.reason;
    EXPECT_NE(q.reason.find("\": ignored"), std::string::npos) << q.reason;
  }
  EXPECT_EQ(parse_cpu_max("banana\n", "/f").reason, "/f: malformed cpu.max \"banana\": ignored");
  // Binary junk is escaped and long contents cut.
  cpu_quota q = parse_cpu_max(std::string("\x01\x02", 2) + std::string(100, 'z'), "/f");
  EXPECT_NE(q.reason.find("\\x01\\x02"), std::string::npos) << q.reason;
  EXPECT_NE(q.reason.find("...\""), std::string::npos) << q.reason;
  EXPECT_LT(q.reason.size(), 100u);
}

TEST(CpuQuota, UnreadableFileIsIgnored) {
  cpu_quota q = internal::read_cpu_max_file(tmpdir() + "/does-not-exist/cpu.max");
  EXPECT_EQ(q.what, cpu_quota::kind::ignored);
  EXPECT_NE(q.reason.find("cannot read: No such file or directory: ignored"), std::string::npos)
      << q.reason;
}

TEST(CpuQuota, CgroupV1CfsFiles) {
  cpu_quota q = parse_cfs_quota("250000\n", "100000\n", "/cg");
  ASSERT_TRUE(q.limited()) << q.reason;
  EXPECT_EQ(q.cpus(), 3);
  EXPECT_EQ(q.file, "/cg/cpu.cfs_quota_us");
  EXPECT_EQ(q.reason, "cgroup cpu.cfs_quota_us/cpu.cfs_period_us 250000/100000 = 2.5 CPUs");
  EXPECT_EQ(parse_cfs_quota("-1\n", "100000\n", "/cg").what, cpu_quota::kind::unlimited);
  EXPECT_EQ(parse_cfs_quota("-1\n", "", "/cg").what, cpu_quota::kind::unlimited);
  EXPECT_EQ(parse_cfs_quota("x", "100000", "/cg").what, cpu_quota::kind::ignored);
  EXPECT_EQ(parse_cfs_quota("0", "100000", "/cg").what, cpu_quota::kind::ignored);
  cpu_quota bad_period = parse_cfs_quota("100000", "0", "/cg");
  EXPECT_EQ(bad_period.what, cpu_quota::kind::ignored);
  EXPECT_EQ(bad_period.reason, "/cg/cpu.cfs_period_us: malformed cpu.cfs_period_us \"0\": ignored");
}

// ---- The count and its reason.

TEST(ChooseWorkers, QuotaCapsTheAutomaticCount) {
  const cpu_quota two = parse_cpu_max("200000 100000", "f");
  auto wc = choose_workers(Runtime::kAutoWorkers, 64, false, two);
  EXPECT_EQ(wc.workers, 2);
  EXPECT_EQ(wc.reason, "automatic: 64 PUs in the cpuset, cgroup cpu.max 200000/100000 = 2 CPUs");

  wc = choose_workers(Runtime::kAutoWorkers, 64, false, parse_cpu_max("150000 100000", "f"));
  EXPECT_EQ(wc.workers, 2);
  EXPECT_EQ(wc.reason,
            "automatic: 64 PUs in the cpuset, cgroup cpu.max 150000/100000 = 1.5 CPUs, rounded up");

  wc = choose_workers(Runtime::kAutoWorkers, 8, false, parse_cpu_max("1000 100000", "f"));
  EXPECT_EQ(wc.workers, 1);

  wc = choose_workers(Runtime::kAutoWorkers, 3, true, two);
  EXPECT_EQ(wc.workers, 2);
  EXPECT_EQ(wc.reason, "automatic: 3 CPUs in Options.cpus, cgroup cpu.max 200000/100000 = 2 CPUs");
}

TEST(ChooseWorkers, QuotaNotBelowTheCpusChangesNothing) {
  auto wc = choose_workers(Runtime::kAutoWorkers, 2, false, parse_cpu_max("400000 100000", "f"));
  EXPECT_EQ(wc.workers, 2);
  EXPECT_EQ(wc.reason,
            "automatic: 2 PUs in the cpuset; cgroup cpu.max 400000/100000 = 4 CPUs is not fewer");
  wc = choose_workers(Runtime::kAutoWorkers, 2, false, parse_cpu_max("max 100000", "f"));
  EXPECT_EQ(wc.workers, 2);
  EXPECT_EQ(wc.reason, "automatic: 2 PUs in the cpuset, cgroup cpu.max max: no CPU quota");
  wc = choose_workers(Runtime::kAutoWorkers, 1, false, parse_cpu_max("junk", "/f"));
  EXPECT_EQ(wc.workers, 1);
  EXPECT_EQ(wc.reason, "automatic: 1 PU in the cpuset; /f: malformed cpu.max \"junk\": ignored");
  cpu_quota none;
  none.reason = "no cgroup CPU quota (x)";
  wc = choose_workers(Runtime::kAutoWorkers, 4, false, none);
  EXPECT_EQ(wc.workers, 4);
  EXPECT_EQ(wc.reason, "automatic: 4 PUs in the cpuset, no cgroup CPU quota (x)");
}

TEST(ChooseWorkers, ExplicitCountIgnoresTheQuota) {
  auto wc = choose_workers(5, 64, false, parse_cpu_max("100000 100000", "f"));
  EXPECT_EQ(wc.workers, 5);
  EXPECT_EQ(wc.reason, "Options.workers; not limited by cgroup cpu.max 100000/100000 = 1 CPU");
  wc = choose_workers(5, 64, false, parse_cpu_max("max", "f"));
  EXPECT_EQ(wc.workers, 5);
  EXPECT_EQ(wc.reason, "Options.workers");
}

// ---- Finding the cgroup: fake /proc/self/{cgroup,mountinfo} and cgroup trees.

constexpr char kV2Mountinfo[] =
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "25 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 "
    "rw,nsdelegate\n";

TEST(FindCpuQuota, V2WalksUpAndTakesTheSmallest) {
  const std::string root = fake_root("v2");
  write_file(root + "/proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
  write_file(root + "/proc/self/mountinfo", kV2Mountinfo);
  write_file(root + "/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "max 100000\n");
  write_file(root + "/sys/fs/cgroup/kubepods/pod1/cpu.max", "300000 100000\n");
  write_file(root + "/sys/fs/cgroup/kubepods/cpu.max", "800000 100000\n");
  cpu_quota q = find_cpu_quota(root);
  ASSERT_TRUE(q.limited()) << q.reason;
  EXPECT_EQ(q.cpus(), 3);
  EXPECT_EQ(q.file, root + "/sys/fs/cgroup/kubepods/pod1/cpu.max");
  EXPECT_EQ(q.reason, "cgroup cpu.max 300000/100000 = 3 CPUs");

  // The leaf's own limit, when smaller, wins; a fraction is compared exactly.
  write_file(root + "/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "290000 100000\n");
  EXPECT_EQ(find_cpu_quota(root).quota_us, 290000);
  write_file(root + "/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "600000 200000\n");
  q = find_cpu_quota(root);  // 3 CPUs both: the first found (the leaf) stays
  EXPECT_EQ(q.quota_us, 600000);
  EXPECT_EQ(q.cpus(), 3);
}

TEST(FindCpuQuota, V2UnlimitedAndMissingFiles) {
  const std::string root = fake_root("v2-unlimited");
  write_file(root + "/proc/self/cgroup", "0::/a/b\n");
  write_file(root + "/proc/self/mountinfo", kV2Mountinfo);
  mkdirs(root + "/sys/fs/cgroup/a/b");  // no cpu.max anywhere (cpu controller not enabled)
  cpu_quota q = find_cpu_quota(root);
  EXPECT_EQ(q.what, cpu_quota::kind::none);
  EXPECT_EQ(q.reason, "no cgroup CPU quota (no cpu.max from " + root +
                          "/sys/fs/cgroup/a/b up to " + root + "/sys/fs/cgroup)");
  write_file(root + "/sys/fs/cgroup/a/cpu.max", "max 100000\n");
  q = find_cpu_quota(root);
  EXPECT_EQ(q.what, cpu_quota::kind::unlimited);
  EXPECT_EQ(choose_workers(Runtime::kAutoWorkers, 6, false, q).workers, 6);
}

TEST(FindCpuQuota, V2MalformedLevelIsIgnoredButOthersCount) {
  const std::string root = fake_root("v2-malformed");
  write_file(root + "/proc/self/cgroup", "0::/a/b\n");
  write_file(root + "/proc/self/mountinfo", kV2Mountinfo);
  write_file(root + "/sys/fs/cgroup/a/b/cpu.max", "garbage\n");
  cpu_quota q = find_cpu_quota(root);
  EXPECT_EQ(q.what, cpu_quota::kind::ignored);
  EXPECT_EQ(q.reason, root + "/sys/fs/cgroup/a/b/cpu.max: malformed cpu.max \"garbage\": ignored");
  write_file(root + "/sys/fs/cgroup/a/cpu.max", "100000 100000\n");
  q = find_cpu_quota(root);
  ASSERT_TRUE(q.limited()) << q.reason;
  EXPECT_EQ(q.cpus(), 1);
  EXPECT_NE(q.reason.find("malformed cpu.max \"garbage\": ignored"), std::string::npos) << q.reason;
}

TEST(FindCpuQuota, V2MountOfASubtree) {
  // A container without a cgroup namespace: its cgroup directory is bind-mounted at
  // /sys/fs/cgroup (mount root /docker/abc), and /proc/self/cgroup names the full path.
  const std::string root = fake_root("v2-subtree");
  write_file(root + "/proc/self/cgroup", "0::/docker/abc\n");
  write_file(root + "/proc/self/mountinfo",
             "30 22 0:26 /docker/abc /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n");
  write_file(root + "/sys/fs/cgroup/cpu.max", "200000 100000\n");
  cpu_quota q = find_cpu_quota(root);
  ASSERT_TRUE(q.limited()) << q.reason;
  EXPECT_EQ(q.cpus(), 2);
  EXPECT_EQ(q.file, root + "/sys/fs/cgroup/cpu.max");

  write_file(root + "/proc/self/cgroup", "0::/elsewhere\n");
  q = find_cpu_quota(root);
  EXPECT_EQ(q.what, cpu_quota::kind::none);
  EXPECT_NE(q.reason.find("outside the mount"), std::string::npos) << q.reason;
}

TEST(FindCpuQuota, V1CpuControllerInAHybridSetup) {
  // Like this development machine: v1 hierarchies (cpu among them) plus an unused unified one.
  const std::string root = fake_root("v1");
  write_file(root + "/proc/self/cgroup",
             "9:name=systemd:/\n4:memory:/svc\n2:cpuacct,cpu:/svc/job\n0::/\n");
  write_file(root + "/proc/self/mountinfo",
             "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
             "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
             "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
             "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n");
  write_file(root + "/sys/fs/cgroup/unified/cpu.max", "100000 100000\n");  // not consulted
  write_file(root + "/sys/fs/cgroup/cpu,cpuacct/svc/job/cpu.cfs_quota_us", "-1\n");
  write_file(root + "/sys/fs/cgroup/cpu,cpuacct/svc/job/cpu.cfs_period_us", "100000\n");
  write_file(root + "/sys/fs/cgroup/cpu,cpuacct/svc/cpu.cfs_quota_us", "350000\n");
  write_file(root + "/sys/fs/cgroup/cpu,cpuacct/svc/cpu.cfs_period_us", "100000\n");
  write_file(root + "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
  write_file(root + "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  cpu_quota q = find_cpu_quota(root);
  ASSERT_TRUE(q.limited()) << q.reason;
  EXPECT_EQ(q.cpus(), 4);
  EXPECT_EQ(q.reason, "cgroup cpu.cfs_quota_us/cpu.cfs_period_us 350000/100000 = 3.5 CPUs");
}

TEST(FindCpuQuota, NoCgroupAtAll) {
  const std::string root = fake_root("none");
  cpu_quota q = find_cpu_quota(root);
  EXPECT_EQ(q.what, cpu_quota::kind::none);
  EXPECT_EQ(q.reason, "no cgroup CPU quota (/proc/self/cgroup cannot be read)");
  write_file(root + "/proc/self/cgroup", "0::/\n");
  write_file(root + "/proc/self/mountinfo", "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n");
  EXPECT_EQ(find_cpu_quota(root).reason, "no cgroup CPU quota (no cgroup2 mount)");
  // Mount points with escaped spaces.
  write_file(root + "/proc/self/mountinfo",
             "25 22 0:23 / /sys/fs/my\\040cgroup rw - cgroup2 cgroup2 rw\n");
  write_file(root + "/sys/fs/my cgroup/cpu.max", "100000 50000\n");
  EXPECT_EQ(find_cpu_quota(root).cpus(), 2);
}

// The real machine: whatever it finds, it must not crash and must say why.
TEST(FindCpuQuota, ThisMachineGivesAReason) {
  cpu_quota q = find_cpu_quota();
  EXPECT_FALSE(q.reason.empty());
  std::cout << "this machine: " << q.reason << "\n";
}

// ---- Runtime::create through the LWKT_TEST_CPU_MAX_FILE hook.

class ScopedCpuMaxFile {
 public:
  explicit ScopedCpuMaxFile(const std::string& contents) {
    static int n = 0;
    _path = tmpdir() + "/cpu.max." + std::to_string(++n);
    write_file(_path, contents);
    ::setenv(internal::kTestCpuMaxFileEnv, _path.c_str(), 1);
  }
  ~ScopedCpuMaxFile() { ::unsetenv(internal::kTestCpuMaxFileEnv); }
  const std::string& path() const { return _path; }

 private:
  std::string _path;
};

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

TEST(AutoWorkers, QuotaOfOneCpuGivesOneWorker) {
  const int pus = usable_pus();
  ScopedCpuMaxFile f("100000 100000\n");
  auto rt = testing::test_runtime(Runtime::kAutoWorkers);
  ASSERT_NE(rt, nullptr);
  EXPECT_EQ(rt->workers(), 1);
  const std::string report = rt->placement_report();
  if (pus > 1) {
    EXPECT_EQ(first_line(report),
              "workers: 1 (automatic: " + std::to_string(pus) +
                  " PUs in the cpuset, cgroup cpu.max 100000/100000 = 1 CPU)");
  }
  EXPECT_NE(report.find("worker 0: PU "), std::string::npos) << report;
  EXPECT_EQ(report.find("worker 1:"), std::string::npos) << report;
  EXPECT_NE(rt->topology_report().find("CPU quota: cgroup cpu.max 100000/100000 = 1 CPU (" +
                                       f.path() + ")"),
            std::string::npos)
      << rt->topology_report();
  testing::run_on(*rt, [] {});
}

TEST(AutoWorkers, MaxGivesEveryPu) {
  const int pus = usable_pus();
  ScopedCpuMaxFile f("max 100000\n");
  auto rt = testing::test_runtime(Runtime::kAutoWorkers);
  ASSERT_NE(rt, nullptr);
  EXPECT_EQ(rt->workers(), pus);
  EXPECT_EQ(first_line(rt->placement_report()),
            "workers: " + std::to_string(pus) + " (automatic: " + std::to_string(pus) + " PU" +
                (pus == 1 ? "" : "s") + " in the cpuset, cgroup cpu.max max: no CPU quota)");
}

TEST(AutoWorkers, FractionalQuotaRoundsUp) {
  const int pus = usable_pus();
  ScopedCpuMaxFile f("150000 100000\n");
  auto rt = testing::test_runtime(Runtime::kAutoWorkers);
  ASSERT_NE(rt, nullptr);
  EXPECT_EQ(rt->workers(), std::min(pus, 2));
  EXPECT_NE(first_line(rt->placement_report()).find("cgroup cpu.max 150000/100000 = 1.5 CPUs"),
            std::string::npos)
      << rt->placement_report();
}

TEST(AutoWorkers, MalformedFileIsIgnoredAndReported) {
  const int pus = usable_pus();
  ScopedCpuMaxFile f("two cpus please\n");
  auto rt = testing::test_runtime(Runtime::kAutoWorkers);
  ASSERT_NE(rt, nullptr);
  EXPECT_EQ(rt->workers(), pus);
  EXPECT_EQ(first_line(rt->placement_report()),
            "workers: " + std::to_string(pus) + " (automatic: " + std::to_string(pus) + " PU" +
                (pus == 1 ? "" : "s") + " in the cpuset; " + f.path() +
                ": malformed cpu.max \"two cpus please\": ignored)");
}

TEST(AutoWorkers, MissingFileIsIgnoredAndReported) {
  const int pus = usable_pus();
  ::setenv(internal::kTestCpuMaxFileEnv, (tmpdir() + "/no-such-cpu.max").c_str(), 1);
  auto rt = testing::test_runtime(Runtime::kAutoWorkers);
  ::unsetenv(internal::kTestCpuMaxFileEnv);
  ASSERT_NE(rt, nullptr);
  EXPECT_EQ(rt->workers(), pus);
  EXPECT_NE(first_line(rt->placement_report()).find("no-such-cpu.max: cannot read"),
            std::string::npos)
      << rt->placement_report();
}

TEST(AutoWorkers, ExplicitCountIsUnaffectedByTheQuota) {
  ScopedCpuMaxFile f("100000 100000\n");
  auto rt = testing::test_runtime(2);
  ASSERT_NE(rt, nullptr);
  EXPECT_EQ(rt->workers(), 2);
  EXPECT_EQ(first_line(rt->placement_report()),
            "workers: 2 (Options.workers; not limited by cgroup cpu.max 100000/100000 = 1 CPU)");
  testing::run_on(*rt, [] {}, 1);
}

TEST(AutoWorkers, QuotaAlsoCapsAnExplicitCpuList) {
  const int pus = usable_pus();
  if (pus < 2) GTEST_SKIP() << "needs 2 PUs";
  auto t = internal::topology::load();
  ASSERT_TRUE(t.ok());
  ScopedCpuMaxFile f("50000 100000\n");
  Runtime::Options o;
  o.cpus = {(*t)->pus()[0], (*t)->pus()[1]};
  auto rt = testing::test_runtime(Runtime::kAutoWorkers, o);
  ASSERT_NE(rt, nullptr);
  EXPECT_EQ(rt->workers(), 1);
  EXPECT_EQ(first_line(rt->placement_report()),
            "workers: 1 (automatic: 2 CPUs in Options.cpus, cgroup cpu.max 50000/100000 = 0.5 "
            "CPUs, rounded up)");
}

}  // namespace
}  // namespace lwkt
