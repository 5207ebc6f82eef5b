// chaos.h
//
// Test-only interleaving points. A protocol marks the places where a rare interleaving
// hides (a ring's publish and consume, park/kick, a token CAS, tsleep_interlock, an
// ownership handoff) with chaos::point(site). Off (the default) a point costs one relaxed
// load of a global and a predictable branch. Armed with a seed (lwkt::testing::
// set_chaos_seed, used by tests/chaos_test), a point sometimes spins or yields the OS thread,
// chosen by a per-OS-thread generator derived from the seed and the site, so that windows
// of a few instructions become common. A point never switches lwkt threads and never
// blocks, so it is legal anywhere: in critical sections, message handlers, the switch path.
#pragma once

#include <sched.h>

#include <atomic>
#include <cstdint>

namespace ipiq::chaos {

enum site : std::uint32_t {
  kRingPublish = 1,   // between writing a slot and publishing its sequence number
  kRingConsume,       // between finding the slot there and running the message
  kParkAnnounce,      // between announcing a park and re-checking for work
  kKick,              // before a producer's store-load barrier
  kTokenCas,          // before a token CAS
  kTsleepInterlock,   // between joining a sleep queue and the caller's re-check
  kOwnerHandoff,      // between publishing a new owner and telling it
  kRingUnwatch,       // between finding a watched ring empty and clearing its bit
  kAnnounce,          // between a sender's fence and its loads of the bit and the flag
};

// 0: off. Written by tests only, before or while the runtime runs.
inline std::atomic<std::uint64_t> g_seed{0};

inline void point_slow(std::uint32_t s, std::uint64_t seed) {
  // xorshift64*, one state per OS thread, reseeded when the seed changes.
  thread_local std::uint64_t state = 0, for_seed = 0;
  if (for_seed != seed) {
    for_seed = seed;
    state = seed * 0x9E3779B97F4A7C15ull ^ reinterpret_cast<std::uintptr_t>(&state);
    if (state == 0) state = 1;
  }
  state ^= state >> 12;
  state ^= state << 25;
  state ^= state >> 27;
  const std::uint64_t r = (state * 0x2545F4914F6CDD1Dull) ^ (s * 0x100000001B3ull);
  switch (r & 15) {
    case 0:
      sched_yield();  // lets the other side of the window run on this CPU
      break;
    case 1:
    case 2:
      for (std::uint64_t i = 0, n = (r >> 8) & 1023; i < n; ++i) {
        asm volatile("" ::: "memory");
      }
      break;
    default:
      break;
  }
}

inline void point(std::uint32_t s) {
  const std::uint64_t seed = g_seed.load(std::memory_order_relaxed);
  if (__builtin_expect(seed != 0, 0)) point_slow(s, seed);
}

}  // namespace ipiq::chaos
