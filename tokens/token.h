// token.h
//
// Serializing tokens, the word-level half (DragonFly lwkt_token.c). A token is a soft lock
// that its holder keeps only while it runs: the scheduler releases all of a thread's tokens
// when it switches out and reacquires all of them, all or nothing, before it runs again
// (lwkt/token.h has the thread-level API and lwkt/sched.cc the switch integration). This
// file knows nothing about threads: a holder is identified by its token-reference stack.
//
//   token     the lock: a count word, the exclusive holder's reference, statistics, a name
//   tokref    one entry of a thread's token stack: which token, in which mode
//   try_ref / try_ref_spin / release_ref      acquire or release one reference
//   acquire_all / release_all                 the scheduler's all-or-nothing operations
//   pool_token                                a fixed pool of tokens hashed by address
//
// The count word t_count:
//   bit 0  TOK_EXCLUSIVE  held exclusively (t_ref names the holder's reference)
//   bit 1  TOK_EXCLREQ    a blocked exclusive request is pending: new shared requests back
//                         off so that writers are not starved
//   bits 2+ shared count, in steps of TOK_INCR = 4 (shared holders and recursive exclusive
//          references of the exclusive holder)
// Invariant: TOK_EXCLUSIVE is set iff t_ref is non-null (t_ref is cleared before the bit);
// a thread is the exclusive holder iff t_ref points into its own token stack.
//
// Deadlock freedom: a thread that waits for tokens holds none (everything is released at
// switch-out and reacquisition is all or nothing), so no hold-and-wait cycle can form,
// whatever the acquisition order. The one misuse that livelocks is taking a token
// exclusively while the same thread holds it shared; lwkt::gettoken aborts on it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace tokens {

inline constexpr std::intptr_t TOK_EXCLUSIVE = 1;
inline constexpr std::intptr_t TOK_EXCLREQ = 2;
inline constexpr std::intptr_t TOK_INCR = 4;

struct tokref;

struct alignas(64) token {
  // written: any holder or requester (atomic RMW); see the bit layout above.
  std::atomic<std::intptr_t> t_count{0};
  // written: the exclusive holder (after acquiring, before releasing); read by requesters
  // to detect recursion (relaxed: they only compare it with their own stack).
  std::atomic<tokref*> t_ref{nullptr};
  std::atomic<std::uint64_t> t_collisions{0};  // failed acquisitions (statistics)
  const char* t_desc = "token";

  constexpr token() = default;
  explicit constexpr token(const char* name) : t_desc(name) {}
  token(const token&) = delete;
  token& operator=(const token&) = delete;
};

struct tokref {
  token* tr_tok = nullptr;
  std::intptr_t tr_count = 0;  // requested mode: EXCLUSIVE|EXCLREQ, or EXCLREQ (shared)
  void* tr_owner = nullptr;    // the owning thread (for diagnostics)
};

// A thread's token stack is [lo, hi): the references it holds or wants.
struct tokstack {
  tokref* lo;
  tokref* hi;
  bool contains(const tokref* r) const { return r >= lo && r < hi; }
};

// One attempt to acquire `ref` in its mode (DragonFly trytokref). `advertise` lets a
// failing exclusive request set TOK_EXCLREQ (blocking requests do; lwkt_trytoken does not).
bool try_ref(tokref* ref, const tokstack& mine, bool advertise);
// try_ref with bounded backoff (exclusive) or one retry ignoring pending writers (shared),
// for contention with holders on other workers.
bool try_ref_spin(tokref* ref, const tokstack& mine);
// Releases one held reference (DragonFly reltokref).
void release_ref(tokref* ref);

// Acquires every reference of `mine` bottom-up (or in token-address order when `sorted`,
// which removes livelock between threads wanting overlapping sets); on any failure releases
// what it took and returns the token that failed. Returns null on success.
token* acquire_all(const tokstack& mine, bool sorted);
// Releases every reference in [mine.lo, mine.hi), top down.
void release_all(const tokstack& mine);

// The pool: 16,384 tokens; the same address always maps to the same token.
inline constexpr std::size_t kPoolTokens = 16384;
token* pool_token(const void* addr);
std::size_t pool_index(const void* addr);

}  // namespace tokens
