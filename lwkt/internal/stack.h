// stack.h
//
// Thread stacks: mmap'ed regions with a PROT_NONE guard region (Runtime::Options::guard_size,
// 64 KiB by default) at the low end, and the SIGSEGV handler (on a per-worker alternate
// signal stack) that turns a hit anywhere in the guard region into
// "stack overflow in lwkt thread '<name>' (worker N, stack K bytes)" and an abort.
//
// Also the test-only fault injection (fault_injection below) for the resources a runtime
// acquires: stack mappings, guard protection, thread objects, worker OS threads.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "lwkt/thread.h"

namespace lwkt::internal {

std::size_t page_size();
std::size_t round_to_pages(std::size_t n);

// Maps a stack of `size` usable bytes plus a `guard`-byte PROT_NONE guard region below it
// (both multiples of the page size). ResourceExhausted (naming the size and errno, and
// vm.max_map_count when the process is at that limit) when the kernel refuses.
absl::StatusOr<thread_stack> map_stack(std::size_t size, std::size_t guard);
void unmap_stack(thread_stack& st);

// Stack high-water marks (Runtime::Options::stack_watermark): stack_fill writes a pattern
// over the whole usable stack (before its first frame is built); stack_used returns the
// bytes from the top down to the lowest word no longer holding the pattern: the most the
// thread has used. Reads another thread's (switched-out) stack, or our own below sp: not
// instrumented by the sanitizers.
void stack_fill(const thread_stack& st);
std::size_t stack_used(const thread_stack& st);

// Installs the process-wide SIGSEGV handler (once) and, for the calling worker OS thread,
// an alternate signal stack. Returns the alternate stack, to be freed by
// release_signal_stack() on the same OS thread when the worker exits; ResourceExhausted if
// it cannot be mapped (without it a stack overflow could not be reported).
absl::StatusOr<void*> install_guard_handler_for_worker();
void release_signal_stack(void* altstack);

// The ", the process has N memory mappings and vm.max_map_count is M ..." hint appended to
// an mmap/mprotect failure with `err` (empty unless err is ENOMEM and the process's mapping
// count is within a few mappings of vm.max_map_count).
std::string map_count_hint(int err);

// Test-only fault injection. Compiled in always and inert unless armed: each injection
// point costs one relaxed atomic load while nothing is armed. Tests arm a point, run a
// scenario, and check that the failure surfaced as a status (never an exception or abort)
// and that nothing leaked.
namespace fault_injection {

enum class point {
  mmap,          // any mmap the runtime makes: stacks and workers' signal stacks (ENOMEM)
  mprotect,      // the mprotect that makes a stack's guard region PROT_NONE (ENOMEM)
  thread_alloc,  // allocation of a thread object (as if operator new returned null)
  worker_start,  // starting a worker's OS thread (std::system_error, EAGAIN)
};
inline constexpr int kPoints = 4;

// Arms `p`: its n-th call from now (1-based, counted over all OS threads) fails, once.
// n <= 0 disarms it. Resets fired(p).
void fail_nth(point p, int n);
// Disarms every point (and resets fired()).
void disarm_all();
// True if the failure armed at `p` has been delivered.
bool fired(point p);
// Library side: counts one call at `p`; true when this call must fail.
bool should_fail(point p);

// Mappings made by map_stack() and install_guard_handler_for_worker() and not yet unmapped
// (always counted; tests check it returns to its starting value).
long live_mappings();
// Makes map_count_hint() use `v` as vm.max_map_count (0: read /proc/sys/vm/max_map_count).
void set_max_map_count_for_test(long v);

}  // namespace fault_injection
}  // namespace lwkt::internal
