#include "tokens/token.h"

#include "ipiq/internal/chaos.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace tokens {
namespace {

inline void pause_cpu() {
#if defined(__x86_64__)
  _mm_pause();
#else
  asm volatile("yield");
#endif
}

bool try_exclusive(tokref* ref, const tokstack& mine, bool advertise) {
  token* tok = ref->tr_tok;
  std::intptr_t count = tok->t_count.load(std::memory_order_relaxed);
  for (;;) {
    if ((count & ~TOK_EXCLREQ) == 0) {
      ipiq::chaos::point(ipiq::chaos::kTokenCas);
      // acquire: pairs with the release in release_ref(); the previous holders' writes to
      // the protected data are visible. Acquiring clears a pending request bit.
      if (tok->t_count.compare_exchange_weak(count, (count & ~TOK_EXCLREQ) | TOK_EXCLUSIVE,
                                             std::memory_order_acquire,
                                             std::memory_order_relaxed)) {
        tok->t_ref.store(ref, std::memory_order_relaxed);
        return true;
      }
      continue;
    }
    if ((count & TOK_EXCLUSIVE) && mine.contains(tok->t_ref.load(std::memory_order_relaxed))) {
      // Recursive exclusive: count it like a shared reference of the holder.
      tok->t_count.fetch_add(TOK_INCR, std::memory_order_relaxed);
      ref->tr_count &= ~TOK_EXCLUSIVE;
      return true;
    }
    if (advertise && !(count & TOK_EXCLREQ)) {
      // relaxed: a hint to shared requesters; nothing is published with it.
      if (!tok->t_count.compare_exchange_weak(count, count | TOK_EXCLREQ,
                                              std::memory_order_relaxed)) {
        continue;
      }
    }
    return false;
  }
}

bool try_shared(tokref* ref, const tokstack& mine, bool defer_to_writers) {
  token* tok = ref->tr_tok;
  for (;;) {
    const std::intptr_t count = tok->t_count.load(std::memory_order_relaxed);
    const std::intptr_t blockers = TOK_EXCLUSIVE | (defer_to_writers ? TOK_EXCLREQ : 0);
    if (!(count & blockers)) {
      // acquire: pairs with the exclusive holder's release.
      const std::intptr_t old = tok->t_count.fetch_add(TOK_INCR, std::memory_order_acquire);
      if (!(old & TOK_EXCLUSIVE)) return true;
      tok->t_count.fetch_sub(TOK_INCR, std::memory_order_relaxed);  // raced a writer: back out
      continue;
    }
    if ((count & TOK_EXCLUSIVE) && mine.contains(tok->t_ref.load(std::memory_order_relaxed))) {
      tok->t_count.fetch_add(TOK_INCR, std::memory_order_relaxed);
      return true;
    }
    return false;
  }
}

}  // namespace

bool try_ref(tokref* ref, const tokstack& mine, bool advertise) {
  if (ref->tr_count & TOK_EXCLUSIVE) return try_exclusive(ref, mine, advertise);
  // A thread that already holds tokens must not defer to pending writers: deferring could
  // wedge its all-or-nothing reacquisition behind a writer that waits for one of them.
  const bool only_token = ref == mine.lo;
  return try_shared(ref, mine, advertise && only_token);
}

bool try_ref_spin(tokref* ref, const tokstack& mine) {
  if (try_ref(ref, mine, true)) return true;
  if (ref->tr_count & TOK_EXCLUSIVE) {
    // Exponential backoff, bounded (~2,000 pauses in all) before the caller switches.
    for (int b = 1; b < 512; b = b * 3 / 2 + 1) {
      for (int i = 0; i < b; ++i) pause_cpu();
      if (try_ref(ref, mine, true)) return true;
    }
  } else {
    for (int i = 0; i < 64; ++i) pause_cpu();
    // Second try ignoring pending writers, so shared waiters also get turns.
    if (try_shared(ref, mine, false)) return true;
  }
  ref->tr_tok->t_collisions.fetch_add(1, std::memory_order_relaxed);
  return false;
}

void release_ref(tokref* ref) {
  token* tok = ref->tr_tok;
  if (tok->t_ref.load(std::memory_order_relaxed) == ref) {
    // The exclusive holder: clear t_ref before the bit (invariant above).
    tok->t_ref.store(nullptr, std::memory_order_relaxed);
    // release: pairs with the acquiring CAS / fetch_add of the next holder.
    tok->t_count.fetch_and(~TOK_EXCLUSIVE, std::memory_order_release);
  } else {
    tok->t_count.fetch_sub(TOK_INCR, std::memory_order_release);
  }
}

void release_all(const tokstack& mine) {
  for (tokref* r = mine.hi; r != mine.lo;) release_ref(--r);
}

token* acquire_all(const tokstack& mine, bool sorted) {
  constexpr int kMax = 64;
  tokref* order[kMax];
  int n = 0;
  for (tokref* r = mine.lo; r != mine.hi && n < kMax; ++r) order[n++] = r;
  if (sorted) {
    // Stable insertion sort by token address: recursive references to one token keep stack
    // order, so the deepest (the one that takes the exclusive bit) comes first.
    for (int i = 1; i < n; ++i) {
      tokref* x = order[i];
      int j = i - 1;
      while (j >= 0 && order[j]->tr_tok > x->tr_tok) {
        order[j + 1] = order[j];
        --j;
      }
      order[j + 1] = x;
    }
  }
  for (int i = 0; i < n; ++i) {
    const bool ok = i == n - 1 ? try_ref_spin(order[i], mine) : try_ref(order[i], mine, true);
    if (!ok) {
      token* failed = order[i]->tr_tok;
      for (int j = i - 1; j >= 0; --j) release_ref(order[j]);
      return failed;
    }
  }
  return nullptr;
}

std::size_t pool_index(const void* addr) {
  const auto p = reinterpret_cast<std::uintptr_t>(addr);
  const std::uintptr_t h1 = (p + (p >> 18)) % 66555444443333333ULL;
  const std::uintptr_t h2 = ((p >> 8) + (p >> 24)) % 989042931893ULL;
  return static_cast<std::size_t>((h1 ^ h2) & (kPoolTokens - 1));
}

token* pool_token(const void* addr) {
  static token* pool = [] {
    auto* p = new token[kPoolTokens];  // lives for the process: pool tokens are type-stable
    for (std::size_t i = 0; i < kPoolTokens; ++i) p[i].t_desc = "pool token";
    return p;
  }();
  return &pool[pool_index(addr)];
}

}  // namespace tokens
