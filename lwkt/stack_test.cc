// Stacks and the resources behind them:
//   - the guard region (Runtime::Options::guard_size): its size, its validation, and death
//     tests where a large frame near the bottom of a stack first touches memory well below
//     the guard's top page (probed and unprobed code) and must still be reported as an
//     overflow;
//   - resource exhaustion: with fault injection (lwkt/internal/stack.h) at each point where
//     the runtime maps memory, protects a guard, allocates a thread object or starts a
//     worker OS thread, every failure surfaces as ResourceExhausted, nothing leaks (mappings
//     counted here; heap objects by LeakSanitizer under --config=asan) and the runtime
//     works once the fault is disarmed;
//   - the vm.max_map_count hint on an mmap that fails near that limit.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "lwkt/internal/stack.h"
#include "lwkt/runtime.h"
#include "lwkt/sched.h"
#include "lwkt/testing.h"
#include "lwkt/thread.h"

namespace lwkt {
namespace {

namespace fi = internal::fault_injection;
using testing::test_runtime;

// "<s>" contains "<sub>" (gmock's HasSubstr without linking gmock).
::testing::AssertionResult Contains(const std::string& s, const std::string& sub) {
  if (s.find(sub) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << s << "\" does not contain \"" << sub << "\"";
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitizer = true;
#else
constexpr bool kSanitizer = false;
#endif

// ---- Helpers for the overflow tests.

using leaf_fn = int (*)();

// Recurses with small frames until at most `leave` bytes of the running lwkt thread's stack
// remain below the current frame, then calls leaf (so leaf's frame starts near the bottom).
__attribute__((noinline)) int descend_then(leaf_fn leaf, std::size_t leave) {
  volatile char pad[256];
  pad[0] = 1;
  const char* here = static_cast<const char*>(__builtin_frame_address(0));
  const char* lo = curthread()->td_stack.lo;
  const int r = static_cast<std::size_t>(here - lo) <= leave ? leaf() : descend_then(leaf, leave);
  return r + pad[0];  // keeps the recursion from becoming a loop
}

// A large frame written at its lowest address first, with no stack probe in between: code
// built without -fstack-clash-protection (which the library cannot control). From 8 KiB
// above the bottom of a stack, a 32 KiB frame's first write lands 24 KiB below the stack,
// past a 4 KiB guard page.
template <std::size_t N>
__attribute__((noinline, optimize("no-stack-clash-protection"))) int unprobed_frame() {
  volatile char a[N];
  a[0] = 1;
  return a[0];
}

// The same frame built like the rest of this file, with -fstack-clash-protection: probed
// every 4 KiB on x86-64; on AArch64 gcc assumes a 64 KiB guard and does not probe it at all.
template <std::size_t N>
__attribute__((noinline)) int probed_frame() {
  volatile char a[N];
  a[0] = 1;
  return a[0];
}

void overflow_with(Runtime::Options o, const char* name, leaf_fn leaf) {
  auto rt = test_runtime(1, o);
  thread_options to;
  to.name = name;
  to.stack_size = 64 * 1024;
  auto td = rt->spawn([leaf] { descend_then(leaf, 8 * 1024); }, to);
  td->join();
}

// ---- The guard region.

// The guard below each stack is PROT_NONE and exactly guard_size (rounded to pages).
void expect_guard_of(std::size_t requested, std::size_t expected) {
  Runtime::Options o;
  o.guard_size = requested;
  auto rt = test_runtime(1, o);
  ASSERT_NE(rt, nullptr);
  std::uintptr_t map = 0, lo = 0;
  testing::run_on(*rt, [&] {
    map = reinterpret_cast<std::uintptr_t>(curthread()->td_stack.map);
    lo = reinterpret_cast<std::uintptr_t>(curthread()->td_stack.lo);
  });
  EXPECT_EQ(lo - map, expected) << "guard_size " << requested;
  // The kernel's view: a ---p mapping covers [map, lo) (it may have merged with a PROT_NONE
  // neighbour below, so it only has to contain it). Not under qemu-user: its /proc/self/maps
  // is of its own making and once (CI, aarch64) listed no ---p line over a guard that the
  // death tests above show faulting; those cover the guard there.
  if (testing::under_qemu()) return;
  FILE* f = std::fopen("/proc/self/maps", "r");
  ASSERT_NE(f, nullptr);
  bool found = false;
  char line[512];
  while (std::fgets(line, sizeof line, f)) {
    unsigned long start = 0, end = 0;
    char perms[8] = {};
    if (std::sscanf(line, "%lx-%lx %7s", &start, &end, perms) != 3) continue;
    if (start <= map && end >= lo && std::strcmp(perms, "---p") == 0) found = true;
  }
  std::fclose(f);
  EXPECT_TRUE(found) << "no PROT_NONE mapping covers the guard region";
}

TEST(StackGuard, DefaultGuardIs64KiB) {
  EXPECT_EQ(Runtime::Options{}.guard_size, 64u * 1024);
  expect_guard_of(Runtime::kDefaultGuardSize, internal::round_to_pages(64 * 1024));
}

TEST(StackGuard, GuardSizeIsRoundedUpToPages) {
  const std::size_t ps = internal::page_size();
  expect_guard_of(1, ps);
  expect_guard_of(3 * ps + 1, 4 * ps);
  expect_guard_of(1024 * 1024, 1024 * 1024);
}

TEST(StackGuard, GuardSizeOutsideItsRangeIsRejected) {
  for (std::size_t bad : {std::size_t{0}, Runtime::kMaxGuardSize + 1, ~std::size_t{0}}) {
    Runtime::Options o;
    o.guard_size = bad;
    auto rt = Runtime::create(o);
    ASSERT_FALSE(rt.ok()) << bad;
    EXPECT_EQ(rt.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(std::string(rt.status().message()), "Runtime::Options.guard_size"));
  }
  Runtime::Options o;
  o.workers = 1;
  o.guard_size = Runtime::kMaxGuardSize;  // the bound itself is allowed
  auto rt = Runtime::create(o);
  EXPECT_TRUE(rt.ok()) << rt.status();
}

// A thread with its own stack size gets the configured guard too.
TEST(StackGuard, CustomStackSizeGetsTheGuardToo) {
  Runtime::Options o;
  o.guard_size = 128 * 1024;
  auto rt = test_runtime(1, o);
  thread_options to;
  to.stack_size = 256 * 1024;
  std::uintptr_t guard = 0;
  auto td = rt->spawn(
      [&] {
        guard = reinterpret_cast<std::uintptr_t>(curthread()->td_stack.lo) -
                reinterpret_cast<std::uintptr_t>(curthread()->td_stack.map);
      },
      to);
  ASSERT_TRUE(td.ok());
  td->join();
  EXPECT_EQ(guard, internal::round_to_pages(128 * 1024));
}

// ---- Death tests: large frames near the bottom of a 64 KiB stack.

// Before guard_size (one 4 KiB guard page) this write went 24 KiB below the stack, into
// whatever was mapped there, or faulted outside the guard without the message.
TEST(StackGuardDeathTest, UnprobedLargeFrameSkippingAPageIsReported) {
  testing::use_safe_death_test_style();
  EXPECT_DEATH(overflow_with({}, "bigframe", unprobed_frame<32 * 1024>),
               "stack overflow in lwkt thread 'bigframe' \\(worker 0, stack 65536 bytes\\)");
}

// Stack-clash-protected code: caught by its probes on x86-64, by the 64 KiB guard on AArch64
// (where gcc does not probe frames under 64 KiB).
TEST(StackGuardDeathTest, ProbedLargeFrameIsReported) {
  testing::use_safe_death_test_style();
  EXPECT_DEATH(overflow_with({}, "probed", probed_frame<32 * 1024>),
               "stack overflow in lwkt thread 'probed' \\(worker 0, stack 65536 bytes\\)");
}

// A larger guard is recognised anywhere: this first write lands ~248 KiB below the stack.
TEST(StackGuardDeathTest, FaultDeepInALargerGuardIsReported) {
  testing::use_safe_death_test_style();
  Runtime::Options o;
  o.guard_size = 512 * 1024;
  EXPECT_DEATH(overflow_with(o, "deepguard", unprobed_frame<256 * 1024>),
               "stack overflow in lwkt thread 'deepguard' \\(worker 0, stack 65536 bytes\\)");
}

// ---- Fault injection: every failure is ResourceExhausted, nothing leaks.

struct outcome {
  std::atomic<int> ok{0};
  std::atomic<int> exhausted{0};
  std::atomic<int> other{0};
  std::string first_exhausted;  // written once, under the counter's first increment
  std::string first_other;
};

void record(outcome& o, const absl::Status& s) {
  if (s.ok()) {
    ++o.ok;
  } else if (s.code() == absl::StatusCode::kResourceExhausted) {
    if (o.exhausted.fetch_add(1) == 0) o.first_exhausted = std::string(s.message());
  } else {
    if (o.other.fetch_add(1) == 0) o.first_other = s.ToString();
  }
}

Runtime::Options sweep_options() {
  Runtime::Options o;
  o.workers = 2;
  o.pin = false;
  o.idle_spin = absl::Microseconds(20);
  return o;
}

// From main: on each worker, a default-stack thread and a 256 KiB one; each creates a child
// with a 128 KiB stack (fresh stacks: mmap + mprotect + object) and joins it.
void run_scenario(Runtime& rt, outcome& o) {
  std::vector<thread_ref> tds;
  for (int w = 0; w < 2; ++w) {
    for (std::size_t stack : {std::size_t{0}, std::size_t{256 * 1024}}) {
      thread_options to;
      to.name = "parent";
      to.worker = w;
      to.stack_size = stack;
      auto td = rt.spawn(
          [&o] {
            thread_options co;
            co.name = "child";
            co.stack_size = 128 * 1024;
            auto child = create([] { yield(); }, co);
            record(o, child.status());
            if (child.ok()) child->join();
          },
          to);
      record(o, td.status());
      if (td.ok()) tds.push_back(std::move(*td));
    }
  }
  for (thread_ref& td : tds) td.join();
}

// After disarming: a thread with a fresh stack (its own size) can be created and run.
void expect_usable(Runtime& rt) {
  std::atomic<bool> ran{false};
  thread_options to;
  to.stack_size = 192 * 1024;
  auto td = rt.spawn([&] { ran = true; }, to);
  ASSERT_TRUE(td.ok()) << td.status();
  td->join();
  EXPECT_TRUE(ran.load());
}

const char* point_name(fi::point p) {
  switch (p) {
    case fi::point::mmap: return "mmap";
    case fi::point::mprotect: return "mprotect";
    case fi::point::thread_alloc: return "thread_alloc";
    case fi::point::worker_start: return "worker_start";
  }
  return "?";
}

// What the failure's message must say, per point.
const char* expected_text(fi::point p) {
  switch (p) {
    case fi::point::mmap: return "mmap of a";
    case fi::point::mprotect: return "mprotect of a";
    case fi::point::thread_alloc: return "lwkt thread object failed";
    case fi::point::worker_start: return "EAGAIN";
  }
  return "?";
}

class FaultSweep : public ::testing::TestWithParam<fi::point> {
 protected:
  void TearDown() override { fi::disarm_all(); }
};

// N = 1, 2, ...: the N-th call at the point fails, until N passes the number of calls the
// scenario makes. Each run: exactly one ResourceExhausted (from create, a spawn or a nested
// create), no other error, no mapping left after shutdown, and the runtime (or a new one,
// when create failed) works with the fault disarmed.
TEST_P(FaultSweep, EveryFailureIsResourceExhaustedAndNothingLeaks) {
  const fi::point p = GetParam();
  const long base = fi::live_mappings();
  int n = 1;
  for (; n <= 200; ++n) {
    SCOPED_TRACE(::testing::Message() << point_name(p) << " fails at call " << n);
    outcome o;
    fi::fail_nth(p, n);
    auto rt = Runtime::create(sweep_options());
    record(o, rt.status());
    if (rt.ok()) run_scenario(**rt, o);
    const bool fired = fi::fired(p);
    fi::disarm_all();
    if (rt.ok()) {
      expect_usable(**rt);
      EXPECT_TRUE((*rt)->shutdown().ok());
      rt->reset();
    } else {
      auto again = Runtime::create(sweep_options());
      ASSERT_TRUE(again.ok()) << again.status();
      expect_usable(**again);
      EXPECT_TRUE((*again)->shutdown().ok());
    }
    EXPECT_EQ(fi::live_mappings(), base) << "mappings leaked";
    EXPECT_EQ(o.other.load(), 0) << o.first_other;
    if (!fired) {
      EXPECT_EQ(o.exhausted.load(), 0) << o.first_exhausted;
      break;
    }
    EXPECT_EQ(o.exhausted.load(), 1);
    EXPECT_TRUE(Contains(o.first_exhausted, expected_text(p)));
  }
  std::printf("%s: %d runs with an injected failure\n", point_name(p), n - 1);
  EXPECT_GT(n, 1) << "the scenario never reached the injection point";
  EXPECT_LE(n, 200) << "the sweep did not end";
}

INSTANTIATE_TEST_SUITE_P(Points, FaultSweep,
                         ::testing::Values(fi::point::mmap, fi::point::mprotect,
                                           fi::point::thread_alloc, fi::point::worker_start),
                         [](const ::testing::TestParamInfo<fi::point>& i) {
                           return std::string(point_name(i.param));
                         });

// The last worker's OS thread cannot start: the two already running are stopped and joined
// (their signal stacks unmapped), and the error names the worker and the errno.
TEST(Resources, WorkerStartFailureStopsTheStartedWorkers) {
  const long base = fi::live_mappings();
  fi::fail_nth(fi::point::worker_start, 3);
  Runtime::Options o = sweep_options();
  o.workers = 3;
  auto rt = Runtime::create(o);
  EXPECT_TRUE(fi::fired(fi::point::worker_start));
  fi::disarm_all();
  ASSERT_FALSE(rt.ok());
  EXPECT_EQ(rt.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(Contains(std::string(rt.status().message()),
                       "starting the OS thread of worker 2 (of 3) failed: EAGAIN"));
  EXPECT_EQ(fi::live_mappings(), base);
}

long count_maps_now() {
  FILE* f = std::fopen("/proc/self/maps", "r");
  if (!f) return -1;
  long n = 0;
  for (int c; (c = std::fgetc(f)) != EOF;) n += c == '\n';
  std::fclose(f);
  return n;
}

// An mmap ENOMEM with the process at vm.max_map_count names the sysctl, its value and the
// current count, through the whole spawn path. (The limit is simulated: the override makes
// the process look a few mappings short of it.)
TEST(Resources, StackMmapFailureAtTheMapCountLimitNamesTheSysctl) {
  auto rt = test_runtime(1);
  const long fake_max = count_maps_now() + 8;
  fi::set_max_map_count_for_test(fake_max);
  fi::fail_nth(fi::point::mmap, 1);
  thread_options to;
  to.stack_size = 128 * 1024;  // not in the cache: needs an mmap
  auto td = rt->spawn([] {}, to);
  fi::disarm_all();
  fi::set_max_map_count_for_test(0);
  ASSERT_FALSE(td.ok());
  EXPECT_EQ(td.status().code(), absl::StatusCode::kResourceExhausted);
  const std::string msg(td.status().message());
  EXPECT_TRUE(Contains(msg, "Cannot allocate memory"));
  EXPECT_TRUE(Contains(msg, "vm.max_map_count is " + std::to_string(fake_max)));
  EXPECT_TRUE(Contains(msg, "memory mappings"));
}

// Far from the limit, ENOMEM is just ENOMEM (no misleading hint).
TEST(Resources, MmapFailureFarFromTheLimitHasNoMapCountHint) {
  fi::set_max_map_count_for_test(count_maps_now() + 100000);
  fi::fail_nth(fi::point::mmap, 1);
  auto st = internal::map_stack(64 * 1024, 64 * 1024);
  fi::disarm_all();
  fi::set_max_map_count_for_test(0);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(Contains(std::string(st.status().message()), "max_map_count"));
}

// The real limit, where it is small enough to reach quickly: fill the process's mappings
// (alternating protections, so the kernel cannot merge neighbours), then map a stack.
TEST(Resources, RealMapCountExhaustionNamesTheSysctl) {
  if (testing::under_qemu() || kSanitizer) {
    GTEST_SKIP() << "qemu and the sanitizers make mappings of their own";
  }
  long max = -1;
  if (FILE* f = std::fopen("/proc/sys/vm/max_map_count", "r")) {
    if (std::fscanf(f, "%ld", &max) != 1) max = -1;
    std::fclose(f);
  }
  if (max <= 0 || max > (1L << 18)) GTEST_SKIP() << "vm.max_map_count " << max;
  const std::size_t ps = internal::page_size();
  std::vector<void*> maps;
  maps.reserve(static_cast<std::size_t>(max) + 16);
  while (maps.size() < static_cast<std::size_t>(max) + 16) {
    void* p = mmap(nullptr, ps, maps.size() % 2 ? PROT_READ : PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) break;
    maps.push_back(p);
  }
  auto st = internal::map_stack(64 * 1024, 64 * 1024);
  for (void* p : maps) munmap(p, ps);
  ASSERT_FALSE(st.ok()) << "mapped a stack with " << maps.size() << " extra mappings";
  EXPECT_EQ(st.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(Contains(std::string(st.status().message()),
                       "vm.max_map_count is " + std::to_string(max)));
}

}  // namespace
}  // namespace lwkt
