// futex.h: thin wrappers over the Linux futex system call (private to the process).
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

namespace ipiq::internal {

// Sleeps while *word == expected (checked atomically by the kernel), until woken, until
// `timeout` (relative, may be null) passes, or spuriously. Callers re-check their condition.
inline void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                       const struct timespec* timeout = nullptr) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected,
          timeout, nullptr, 0);
}

// Wakes up to `n` sleepers on `word`. Safe on memory that may have been reused: the worst
// outcome is a spurious wakeup, which every waiter tolerates.
inline void futex_wake(std::atomic<std::uint32_t>* word, int n) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE_PRIVATE, n, nullptr,
          nullptr, 0);
}

}  // namespace ipiq::internal
