// Thread-level tokens: the token-reference stack of each thread, blocking acquisition by
// switching, and the scheduler's release/reacquire (DragonFly lwkt_token.c, lwkt_switch).
#include "lwkt/token.h"

#include <cstdio>

#include "lwkt/internal/clock.h"
#include "lwkt/internal/sched_internal.h"
#include "lwkt/internal/trace.h"
#include "lwkt/sched.h"

namespace lwkt {
namespace internal {

tokens::tokstack token_stack(thread* td) { return {td->td_toks_array, td->td_toks_stop}; }

void relalltokens(thread* td) {
  // A reference whose acquisition failed (td_toks_have) was never taken: skip it.
  tokens::tokref* top = td->td_toks_have ? td->td_toks_have : td->td_toks_stop;
  tokens::release_all({td->td_toks_array, top});
  td->td_toks_have = nullptr;
}

bool getalltokens(globaldata* gd, thread* td) {
  if (td->td_toks_stop == td->td_toks_array) return true;
  // After repeated failures, acquire in token-address order (no livelock between threads
  // that want overlapping sets on different workers).
  const bool sorted = td->td_contended > kTokenSpinLoops;
  tokens::token* failed = tokens::acquire_all(token_stack(td), sorted);
  if (failed == nullptr) {
    td->td_contended = 0;
    td->td_contended_since = 0;
    td->td_wmesg = nullptr;
    return true;
  }
  td->td_wmesg = failed->t_desc;
  const std::uint64_t now = cheap_clock();
  if (td->td_contended++ == 0) {
    td->td_contended_since = now;
  } else if (td->td_contended_since != 0 && gd->gd_token_warn_ticks &&
             now - td->td_contended_since > gd->gd_token_warn_ticks) {
    std::fprintf(stderr,
                 "lwkt: thread '%s' (worker %d) has waited %.1f s for token '%s'\n",
                 td->td_comm, gd->gd_cpuid,
                 static_cast<double>(now - td->td_contended_since) / (ticks_per_us() * 1e6),
                 failed->t_desc);
    td->td_contended_since = 0;  // one warning per contention episode
  }
  return false;
}

}  // namespace internal

namespace {

tokens::tokref* push_ref(thread* td, lwkt_token* tok, std::intptr_t mode) {
  LWKT_ASSERT(td->td_toks_stop < td->td_toks_array + LWKT_MAXTOKENS, td,
              "token stack overflow (%d references) taking '%s'", LWKT_MAXTOKENS, tok->t_desc);
  tokens::tokref* ref = td->td_toks_stop++;
  ref->tr_tok = tok;
  ref->tr_count = mode;
  ref->tr_owner = td;
  return ref;
}

void get_blocking(lwkt_token* tok, std::intptr_t mode) {
  globaldata* gd = internal::mycpu();
  LWKT_ASSERT(gd != nullptr, nullptr, "gettoken from an OS thread that is not a worker");
  thread* td = gd->gd_curthread;
  LWKT_ASSERT(gd->gd_intr_nesting_level == 0, td,
              "gettoken('%s') in a message handler (use trytoken)", tok->t_desc);
  if (mode & tokens::TOK_EXCLUSIVE) {
    // DragonFly forbids it: an exclusive request behind one's own shared hold livelocks.
    // (Recursion on one's own exclusive hold is fine.)
    bool have = false;
    for (tokens::tokref* r = td->td_toks_array; r != td->td_toks_stop; ++r) {
      have = have || r->tr_tok == tok;
    }
    LWKT_ASSERT(!have || internal::token_stack(td).contains(tok->t_ref.load(std::memory_order_relaxed)),
                td, "exclusive gettoken('%s') while holding it shared", tok->t_desc);
  }
  tokens::tokref* ref = push_ref(td, tok, mode);
  if (tokens::try_ref_spin(ref, internal::token_stack(td))) return;
  // Contended: stay runnable and switch; the scheduler resumes us only once it has
  // reacquired every token on our stack, this one included.
  tok->t_collisions.fetch_add(1, std::memory_order_relaxed);
  internal::trace(gd, internal::trace_type::kTokenContended, td, 0, 0, tok->t_desc);
  ++td->td_critcount;
  td->td_toks_have = ref;
  td->td_wmesg = tok->t_desc;
  internal::enqueue(gd, td);
  lwkt_switch();
  crit_exit();
}

}  // namespace

void internal::gettoken_slow(lwkt_token* tok) {
  get_blocking(tok, tokens::TOK_EXCLUSIVE | tokens::TOK_EXCLREQ);
}

void gettoken_shared(lwkt_token* tok) { get_blocking(tok, tokens::TOK_EXCLREQ); }

bool trytoken(lwkt_token* tok) {
  thread* td = internal::lwkt_caller("lwkt::trytoken")->gd_curthread;
  tokens::tokref* ref = push_ref(td, tok, tokens::TOK_EXCLUSIVE);
  if (tokens::try_ref(ref, internal::token_stack(td), /*advertise=*/false)) return true;
  --td->td_toks_stop;
  tok->t_collisions.fetch_add(1, std::memory_order_relaxed);
  return false;
}

void internal::reltoken_slow(lwkt_token* tok) {
  thread* td = internal::lwkt_caller("lwkt::reltoken")->gd_curthread;
  LWKT_ASSERT(td != nullptr && td->td_toks_stop != td->td_toks_array, td,
              "reltoken('%s') without holding any token", tok->t_desc);
  tokens::tokref* ref = td->td_toks_stop - 1;
  LWKT_ASSERT(ref->tr_tok == tok, td,
              "reltoken('%s') out of order: the most recent reference is '%s'", tok->t_desc,
              ref->tr_tok->t_desc);
  tokens::release_ref(ref);
  td->td_toks_stop = ref;
}

void token_swap() {
  thread* td = internal::lwkt_caller("lwkt::token_swap")->gd_curthread;
  LWKT_ASSERT(td->td_toks_stop - td->td_toks_array >= 2, td, "token_swap with fewer than two");
  tokens::tokref* a = td->td_toks_stop - 2;
  tokens::tokref* b = td->td_toks_stop - 1;
  if (a->tr_tok == b->tr_tok) return;  // t_ref must keep naming the deeper, exclusive ref
  crit_section cs;
  std::swap(a->tr_tok, b->tr_tok);
  std::swap(a->tr_count, b->tr_count);
  // Retarget exclusive holders' t_ref (only we write it while we hold the token).
  if (a->tr_tok->t_ref.load(std::memory_order_relaxed) == b) {
    a->tr_tok->t_ref.store(a, std::memory_order_relaxed);
  }
  if (b->tr_tok->t_ref.load(std::memory_order_relaxed) == a) {
    b->tr_tok->t_ref.store(b, std::memory_order_relaxed);
  }
}

int cnttoken(const lwkt_token* tok) {
  thread* td = internal::lwkt_caller("lwkt::cnttoken")->gd_curthread;
  int n = 0;
  for (tokens::tokref* r = td->td_toks_array; r != td->td_toks_stop; ++r) n += r->tr_tok == tok;
  return n;
}

lwkt_token* getpooltoken(const void* addr) {
  lwkt_token* tok = tokens::pool_token(addr);
  gettoken(tok);
  return tok;
}

void relpooltoken(const void* addr) { reltoken(tokens::pool_token(addr)); }

}  // namespace lwkt
