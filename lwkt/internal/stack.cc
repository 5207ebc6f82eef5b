#include "lwkt/internal/stack.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "absl/strings/str_format.h"
#include "lwkt/internal/globaldata.h"

namespace lwkt::internal {

std::size_t page_size() {
  static const std::size_t ps = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return ps;
}

std::size_t round_to_pages(std::size_t n) {
  const std::size_t ps = page_size();
  return (n + ps - 1) / ps * ps;
}

absl::StatusOr<thread_stack> map_stack(std::size_t size) {
  const std::size_t guard = page_size();
  void* map = mmap(nullptr, size + guard, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (map == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "mmap of a %u-byte lwkt stack failed: %s", size + guard, std::strerror(errno)));
  }
  if (mprotect(map, guard, PROT_NONE) != 0) {
    int err = errno;
    munmap(map, size + guard);
    return absl::ResourceExhaustedError(
        absl::StrFormat("mprotect of a stack guard page failed: %s", std::strerror(err)));
  }
  thread_stack st;
  st.map = map;
  st.map_size = size + guard;
  st.lo = static_cast<char*>(map) + guard;
  st.size = size;
  return st;
}

void unmap_stack(thread_stack& st) {
  if (st.map) munmap(st.map, st.map_size);
  st = thread_stack{};
}

namespace {

struct sigaction g_prev_segv;

// Appends a string / an unsigned number to buf without allocating (signal context).
std::size_t put_str(char* buf, std::size_t at, std::size_t cap, const char* s) {
  while (*s && at + 1 < cap) buf[at++] = *s++;
  return at;
}
std::size_t put_num(char* buf, std::size_t at, std::size_t cap, unsigned long v) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  while (n && at + 1 < cap) buf[at++] = tmp[--n];
  return at;
}

void on_segv(int sig, siginfo_t* si, void* uc) {
  globaldata* gd = mycpu();
  thread* td = gd ? gd->gd_curthread : nullptr;
  if (td && td->td_stack.map) {
    char* addr = static_cast<char*>(si->si_addr);
    char* guard_lo = static_cast<char*>(td->td_stack.map);
    if (addr >= guard_lo && addr < td->td_stack.lo) {
      char buf[256];
      std::size_t n = 0;
      n = put_str(buf, n, sizeof buf, "stack overflow in lwkt thread '");
      n = put_str(buf, n, sizeof buf, td->td_comm);
      n = put_str(buf, n, sizeof buf, "' (worker ");
      n = put_num(buf, n, sizeof buf, static_cast<unsigned long>(gd->gd_cpuid));
      n = put_str(buf, n, sizeof buf, ", stack ");
      n = put_num(buf, n, sizeof buf, td->td_stack.size);
      n = put_str(buf, n, sizeof buf, " bytes)\n");
      (void)!write(2, buf, n);
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

void* install_guard_handler_for_worker() {
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
  void* alt = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (alt == MAP_FAILED) return nullptr;
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
  munmap(altstack, round_to_pages(64 * 1024));
}

}  // namespace lwkt::internal
