// sanitizers.h
//
// Tells AddressSanitizer and ThreadSanitizer about stack switches. Every function here is a
// no-op unless the translation unit is built with the matching sanitizer.
//   asan_start_switch / asan_finish_switch   __sanitizer_{start,finish}_switch_fiber
//   tsan_create_fiber / tsan_destroy_fiber / tsan_current_fiber / tsan_switch_to
//   asan_unpoison_stack                      clears stale redzones of a reused stack
#pragma once

#include <cstddef>

#if defined(__SANITIZE_ADDRESS__)
#define LWKT_ASAN 1
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/lsan_interface.h>
#endif
#if defined(__SANITIZE_THREAD__)
#define LWKT_TSAN 1
#include <sanitizer/tsan_interface.h>
#endif

namespace lwkt::internal {

// LeakSanitizer scans the heap, globals, stacks and TLS, not other mmap'd memory: a
// globaldata from hwloc_alloc_membind is registered as a root region, so the threads it
// links (run queue, thread list, caches) count as reachable.
inline void lsan_register_root([[maybe_unused]] const void* p, [[maybe_unused]] std::size_t n) {
#if LWKT_ASAN
  __lsan_register_root_region(p, n);
#endif
}
inline void lsan_unregister_root([[maybe_unused]] const void* p, [[maybe_unused]] std::size_t n) {
#if LWKT_ASAN
  __lsan_unregister_root_region(p, n);
#endif
}

// Before switching away. `fake_stack_save` is null when the current context will never be
// resumed (an exiting thread), which lets ASan free its fake stack.
inline void asan_start_switch([[maybe_unused]] void** fake_stack_save,
                              [[maybe_unused]] const void* to_bottom,
                              [[maybe_unused]] std::size_t to_size) {
#if LWKT_ASAN
  __sanitizer_start_switch_fiber(fake_stack_save, to_bottom, to_size);
#endif
}

// First thing after a context is (re)entered.
inline void asan_finish_switch([[maybe_unused]] void* fake_stack_save) {
#if LWKT_ASAN
  const void* from_bottom;
  std::size_t from_size;
  __sanitizer_finish_switch_fiber(fake_stack_save, &from_bottom, &from_size);
#endif
}

// A stack whose thread exited without unwinding keeps the redzones of its live frames;
// a new thread on the same stack must not inherit them.
inline void asan_unpoison_stack([[maybe_unused]] void* lo, [[maybe_unused]] std::size_t size) {
#if LWKT_ASAN
  __asan_unpoison_memory_region(lo, size);
#endif
}

inline void* tsan_create_fiber() {
#if LWKT_TSAN
  return __tsan_create_fiber(0);
#else
  return nullptr;
#endif
}

inline void tsan_destroy_fiber([[maybe_unused]] void* fiber) {
#if LWKT_TSAN
  if (fiber) __tsan_destroy_fiber(fiber);
#endif
}

inline void* tsan_current_fiber() {
#if LWKT_TSAN
  return __tsan_get_current_fiber();
#else
  return nullptr;
#endif
}

inline void tsan_set_fiber_name([[maybe_unused]] void* fiber, [[maybe_unused]] const char* name) {
#if LWKT_TSAN
  if (fiber) __tsan_set_fiber_name(fiber, name);
#endif
}

// Must be called immediately before the stack switch, from a function TSan does not
// instrument (after it, TSan attributes every access to the new fiber).
inline void tsan_switch_to([[maybe_unused]] void* fiber) {
#if LWKT_TSAN
  __tsan_switch_to_fiber(fiber, 0);
#endif
}

}  // namespace lwkt::internal
