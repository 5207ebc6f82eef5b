// stack.h
//
// Thread stacks: mmap'ed regions with a PROT_NONE guard page at the low end, and the
// SIGSEGV handler (on a per-worker alternate signal stack) that turns a hit on a guard page
// into "stack overflow in lwkt thread '<name>' (worker N, stack K bytes)" and an abort.
#pragma once

#include <cstddef>

#include "absl/status/statusor.h"
#include "lwkt/thread.h"

namespace lwkt::internal {

std::size_t page_size();
std::size_t round_to_pages(std::size_t n);

// Maps a stack of `size` usable bytes (a multiple of the page size) plus a guard page.
// ResourceExhausted (naming size and errno) when the kernel refuses.
absl::StatusOr<thread_stack> map_stack(std::size_t size);
void unmap_stack(thread_stack& st);

// Installs the process-wide SIGSEGV handler (once) and, for the calling worker OS thread,
// an alternate signal stack. Returns the alternate stack, to be freed by
// release_signal_stack() on the same OS thread when the worker exits.
void* install_guard_handler_for_worker();
void release_signal_stack(void* altstack);

}  // namespace lwkt::internal
