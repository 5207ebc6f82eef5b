#include "lwkt/internal/stack.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "absl/strings/str_format.h"
#include "lwkt/internal/globaldata.h"
#include "lwkt/internal/sanitizers.h"
#include "lwkt/internal/sigsafe.h"

namespace lwkt::internal {

namespace fault_injection {
namespace {

// Per point: 0 disarmed; k > 0: the k-th next call fails.
std::atomic<int> g_countdown[kPoints];
std::atomic<bool> g_fired[kPoints];
std::atomic<long> g_live_mappings{0};
std::atomic<long> g_max_map_count_override{0};

int index_of(point p) { return static_cast<int>(p); }

}  // namespace

void fail_nth(point p, int n) {
  g_fired[index_of(p)].store(false, std::memory_order_relaxed);
  g_countdown[index_of(p)].store(n > 0 ? n : 0, std::memory_order_release);
}

void disarm_all() {
  for (int i = 0; i < kPoints; ++i) {
    g_countdown[i].store(0, std::memory_order_release);
    g_fired[i].store(false, std::memory_order_relaxed);
  }
}

bool fired(point p) { return g_fired[index_of(p)].load(std::memory_order_acquire); }

bool should_fail(point p) {
  std::atomic<int>& c = g_countdown[index_of(p)];
  int v = c.load(std::memory_order_relaxed);
  while (v > 0) {
    // acq_rel: one caller wins each count; exactly one sees 1 -> 0 and fails.
    if (c.compare_exchange_weak(v, v - 1, std::memory_order_acq_rel, std::memory_order_relaxed)) {
      if (v != 1) return false;
      g_fired[index_of(p)].store(true, std::memory_order_release);
      return true;
    }
  }
  return false;
}

long live_mappings() { return g_live_mappings.load(std::memory_order_acquire); }

void set_max_map_count_for_test(long v) {
  g_max_map_count_override.store(v, std::memory_order_relaxed);
}

}  // namespace fault_injection

namespace {

namespace fi = fault_injection;

// mmap / mprotect through the injection points (an injected failure sets errno = ENOMEM).
void* checked_mmap(std::size_t len, int prot, int flags) {
  if (fi::should_fail(fi::point::mmap)) {
    errno = ENOMEM;
    return MAP_FAILED;
  }
  void* p = mmap(nullptr, len, prot, flags, -1, 0);
  if (p != MAP_FAILED) fi::g_live_mappings.fetch_add(1, std::memory_order_acq_rel);
  return p;
}

void checked_munmap(void* p, std::size_t len) {
  munmap(p, len);
  fi::g_live_mappings.fetch_sub(1, std::memory_order_acq_rel);
}

int checked_mprotect(void* p, std::size_t len, int prot) {
  if (fi::should_fail(fi::point::mprotect)) {
    errno = ENOMEM;
    return -1;
  }
  return mprotect(p, len, prot);
}

// Reads a small /proc file's leading integer; -1 if it cannot.
long read_proc_long(const char* path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[64];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  char* end = nullptr;
  long v = std::strtol(buf, &end, 10);
  return end == buf ? -1 : v;
}

// Lines of /proc/self/maps: the process's mappings (plus [vsyscall], which the kernel's
// limit does not count). Reads with a stack buffer: no allocation, no new mapping.
long count_maps() {
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  long lines = 0;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t i = 0; i < n; ++i) lines += buf[i] == '\n';
  }
  close(fd);
  return lines;
}

}  // namespace

std::size_t page_size() {
  static const std::size_t ps = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return ps;
}

std::size_t round_to_pages(std::size_t n) {
  const std::size_t ps = page_size();
  return (n + ps - 1) / ps * ps;
}

std::string map_count_hint(int err) {
  if (err != ENOMEM) return "";
  long max = fi::g_max_map_count_override.load(std::memory_order_relaxed);
  if (max <= 0) max = read_proc_long("/proc/sys/vm/max_map_count");
  const long count = count_maps();
  // "Near": a stack needs two mappings (the guard's mprotect splits the mmap), so a process
  // within a few of the limit cannot map one; the slack covers [vsyscall] and mappings made
  // by other OS threads between the failure and this count.
  constexpr long kSlack = 64;
  if (max <= 0 || count < 0 || count + kSlack < max) return "";
  return absl::StrFormat(
      "; the process has %d memory mappings and vm.max_map_count is %d (each lwkt stack "
      "takes two: raise vm.max_map_count with sysctl, or run fewer threads)",
      count, max);
}

absl::StatusOr<thread_stack> map_stack(std::size_t size, std::size_t guard) {
  void* map = checked_mmap(size + guard, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK);
  if (map == MAP_FAILED) {
    const int err = errno;
    return absl::ResourceExhaustedError(absl::StrFormat(
        "mmap of a %u-byte lwkt stack (%u usable + %u guard) failed: %s%s", size + guard, size,
        guard, std::strerror(err), map_count_hint(err)));
  }
  if (checked_mprotect(map, guard, PROT_NONE) != 0) {
    const int err = errno;
    checked_munmap(map, size + guard);
    return absl::ResourceExhaustedError(absl::StrFormat(
        "mprotect of a %u-byte lwkt stack guard region failed: %s%s", guard,
        std::strerror(err), map_count_hint(err)));
  }
  thread_stack st;
  st.map = map;
  st.map_size = size + guard;
  st.lo = static_cast<char*>(map) + guard;
  st.size = size;
  return st;
}

void unmap_stack(thread_stack& st) {
  // An abandoned thread's stack still carries ASan redzones of frames never unwound; the
  // next mapping at this address (a globaldata, another stack) must not inherit them.
  if (st.lo) asan_unpoison_stack(st.lo, st.size);
  if (st.map) checked_munmap(st.map, st.map_size);
  st = thread_stack{};
}

namespace {

struct sigaction g_prev_segv;

void on_segv(int sig, siginfo_t* si, void* uc) {
  globaldata* gd = mycpu();
  thread* td = gd ? gd->gd_curthread : nullptr;
  if (td && td->td_stack.map) {
    // The whole guard region, [map, lo), whatever its size: a frame larger than a page
    // (unprobed code) first touches the guard far below its top.
    char* addr = static_cast<char*>(si->si_addr);
    char* guard_lo = static_cast<char*>(td->td_stack.map);
    if (addr >= guard_lo && addr < td->td_stack.lo) {
      sigsafe_line()
          .str("stack overflow in lwkt thread '")
          .str(td->td_comm)
          .str("' (worker ")
          .num(static_cast<std::uint64_t>(gd->gd_cpuid))
          .str(", stack ")
          .num(td->td_stack.size)
          .str(" bytes)\n")
          .write_to(2);
      signal(SIGABRT, SIG_DFL);
      abort();
    }
  }
  // Not a guard-page hit: hand the fault to whoever handled SIGSEGV before us.
  if ((g_prev_segv.sa_flags & SA_SIGINFO) && g_prev_segv.sa_sigaction) {
    g_prev_segv.sa_sigaction(sig, si, uc);
    return;
  }
  if (g_prev_segv.sa_handler != SIG_DFL && g_prev_segv.sa_handler != SIG_IGN) {
    g_prev_segv.sa_handler(sig);
    return;
  }
  // Default action: restore it; returning re-executes the faulting access.
  signal(SIGSEGV, SIG_DFL);
}

}  // namespace

absl::StatusOr<void*> install_guard_handler_for_worker() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_prev_segv);
  });
  // The overflowing thread has no stack left: the handler runs on this one.
  const std::size_t size = round_to_pages(64 * 1024);
  void* alt = checked_mmap(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
  if (alt == MAP_FAILED) {
    const int err = errno;
    return absl::ResourceExhaustedError(absl::StrFormat(
        "mmap of a %u-byte worker signal stack failed: %s%s", size, std::strerror(err),
        map_count_hint(err)));
  }
  stack_t ss;
  ss.ss_sp = alt;
  ss.ss_size = size;
  ss.ss_flags = 0;
  sigaltstack(&ss, nullptr);
  return alt;
}

void release_signal_stack(void* altstack) {
  if (!altstack) return;
  stack_t ss;
  std::memset(&ss, 0, sizeof ss);
  ss.ss_flags = SS_DISABLE;
  sigaltstack(&ss, nullptr);
  checked_munmap(altstack, round_to_pages(64 * 1024));
}


namespace {
constexpr std::uint64_t kStackPattern = 0x6c776b74c0ffee11ull;  // "lwkt", then noise
}  // namespace

__attribute__((no_sanitize("address", "thread"))) void stack_fill(const thread_stack& st) {
  auto* w = reinterpret_cast<volatile std::uint64_t*>(st.lo);
  for (std::size_t i = 0, n = st.size / sizeof(std::uint64_t); i < n; ++i) w[i] = kStackPattern;
}

__attribute__((no_sanitize("address", "thread"))) std::size_t stack_used(const thread_stack& st) {
  if (!st.lo) return 0;
  auto* w = reinterpret_cast<const volatile std::uint64_t*>(st.lo);
  const std::size_t n = st.size / sizeof(std::uint64_t);
  std::size_t i = 0;
  while (i < n && w[i] == kStackPattern) ++i;
  return (n - i) * sizeof(std::uint64_t);
}

}  // namespace lwkt::internal
