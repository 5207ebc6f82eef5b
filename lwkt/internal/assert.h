// assert.h
//
// Invariant checks inside the runtime (DragonFly's KKASSERT/panic).
//   LWKT_ASSERT(cond, td, fmt, ...)   always on; O(1) checks only.
//   LWKT_DASSERT(cond, td, fmt, ...)  debug and sanitizer builds only; may be O(n).
//   panic(td, fmt, ...)               prints `lwkt: td "<name>" on worker N: <message>`
//                                     to fd 2 without allocating or locking, then aborts.
// `td` may be null (the message then says so).
#pragma once

#include "absl/base/attributes.h"

namespace lwkt {
struct thread;
namespace internal {

[[noreturn]] ABSL_ATTRIBUTE_COLD void panic(const thread* td, const char* fmt, ...)
    __attribute__((format(printf, 2, 3)));

}  // namespace internal
}  // namespace lwkt

#define LWKT_ASSERT(cond, td, ...)                                      \
  do {                                                                  \
    if (__builtin_expect(!(cond), 0)) ::lwkt::internal::panic(td, __VA_ARGS__); \
  } while (0)

#if !defined(NDEBUG) || defined(LWKT_SANITIZER_BUILD)
#define LWKT_DASSERT(cond, td, ...) LWKT_ASSERT(cond, td, __VA_ARGS__)
#else
#define LWKT_DASSERT(cond, td, ...) \
  do {                              \
  } while (0)
#endif
