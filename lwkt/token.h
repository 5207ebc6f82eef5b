// token.h
//
// Serializing tokens for lwkt threads (DragonFly lwkt_gettoken and friends).
//
//   gettoken / gettoken_shared   acquire (may switch while waiting; never blocks the worker)
//   trytoken                     acquire or fail at once (usable in message handlers)
//   reltoken                     release the most recent reference (strict LIFO)
//   token_swap                   exchange the two most recent references
//   getpooltoken / relpooltoken  the pool token of an address
//   token_ref                    RAII: acquire in the constructor, release in the destructor
//
// The defining rule: a token is held only while its holder runs. When a thread switches out
// (blocks, yields, migrates, waits for a token), every token it holds is released; before
// it runs again the scheduler reacquires all of them, all or nothing. A thread whose tokens
// cannot all be had stays runnable but is skipped, and the worker runs something else. So
// state protected by a token may change across any call that can switch: re-validate after
// it. In exchange tokens may be held across blocking calls, and no acquisition order can
// deadlock (tokens/token.h explains why). Tokens exclude threads on every worker.
//
// Misuse aborts naming the thread: more than LWKT_MAXTOKENS references, releasing a token
// that is not the most recent reference, taking a token exclusively while holding it shared.
#pragma once

#include "lwkt/internal/globaldata.h"
#include "tokens/token.h"

namespace lwkt {

using lwkt_token = tokens::token;

namespace internal {
void gettoken_slow(lwkt_token* tok);
void reltoken_slow(lwkt_token* tok);
}  // namespace internal

// Runs on: an lwkt thread, not in a message handler.
// Fast path inline: a free token and room on the stack cost one CAS.
inline void gettoken(lwkt_token* tok) {
  globaldata* gd = internal::mycpu();
  if (gd != nullptr && gd->gd_intr_nesting_level == 0) {
    thread* td = gd->gd_curthread;
    tokens::tokref* ref = td->td_toks_stop;
    std::intptr_t free_word = 0;
    // acquire: as in tokens::try_ref (pairs with the release of the previous holder).
    if (ref < td->td_toks_array + LWKT_MAXTOKENS &&
        tok->t_count.compare_exchange_strong(free_word, tokens::TOK_EXCLUSIVE,
                                             std::memory_order_acquire,
                                             std::memory_order_relaxed)) {
      ref->tr_tok = tok;
      ref->tr_count = tokens::TOK_EXCLUSIVE | tokens::TOK_EXCLREQ;
      ref->tr_owner = td;
      tok->t_ref.store(ref, std::memory_order_relaxed);
      td->td_toks_stop = ref + 1;
      return;
    }
  }
  internal::gettoken_slow(tok);
}
void gettoken_shared(lwkt_token* tok);
// Runs on: an lwkt thread (message handlers included). [[nodiscard]]: check the result.
[[nodiscard]] bool trytoken(lwkt_token* tok);
// Requires: tok is the most recent reference. Runs on: an lwkt thread.
inline void reltoken(lwkt_token* tok) {
  globaldata* gd = internal::mycpu();
  if (gd != nullptr) {
    thread* td = gd->gd_curthread;
    tokens::tokref* ref = td->td_toks_stop - 1;
    if (td->td_toks_stop != td->td_toks_array && ref->tr_tok == tok &&
        tok->t_ref.load(std::memory_order_relaxed) == ref) {
      tok->t_ref.store(nullptr, std::memory_order_relaxed);  // before the bit (invariant)
      // release: pairs with the next holder's acquire.
      tok->t_count.fetch_and(~tokens::TOK_EXCLUSIVE, std::memory_order_release);
      td->td_toks_stop = ref;
      return;
    }
  }
  internal::reltoken_slow(tok);
}
// Exchanges the two most recent references, so that the deeper one can be released first.
void token_swap();
// Number of references the calling thread has to tok (held or wanted).
int cnttoken(const lwkt_token* tok);

lwkt_token* getpooltoken(const void* addr);  // gets and returns the pool token of addr
void relpooltoken(const void* addr);

class token_ref {
 public:
  explicit token_ref(lwkt_token* tok, bool shared = false) : _tok(tok) {
    if (shared) {
      gettoken_shared(tok);
    } else {
      gettoken(tok);
    }
  }
  ~token_ref() { reltoken(_tok); }
  token_ref(const token_ref&) = delete;
  token_ref& operator=(const token_ref&) = delete;

 private:
  lwkt_token* _tok;
};

}  // namespace lwkt
