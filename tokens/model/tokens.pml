/*
 * tokens.pml: serializing tokens across two workers, checked exhaustively by spin.
 *
 * Three lwkt threads on two workers (T0 and T2 on worker 0, T1 on worker 1) and two tokens
 * A < B (by address). Each thread runs a fixed program (see init):
 *   T0: gettoken(A) gettoken(B)        yield  reltoken(B) reltoken(A)  exit
 *   T1: gettoken(B) gettoken(A)        yield  reltoken(A) reltoken(B)  exit
 *   T2: gettoken_shared(A) gettoken(B) yield  reltoken(B) reltoken(A)  exit
 * T0 and T1 take the tokens in opposite orders (the classic deadlock for locks); T2 mixes a
 * shared reference at the bottom of its stack with an exclusive one, which exercises
 * TOK_EXCLREQ and the "only the bottom reference defers to writers" rule. `yield` is a
 * switch-out while holding tokens (the same as blocking in tsleep and being woken).
 *
 * Step -> C++:
 *   tx[k], ts[k], trq[k]     tokens::token::t_count: TOK_EXCLUSIVE with t_ref (tx: the
 *                            holder), the shared count (ts), TOK_EXCLREQ (trq)
 *   rtok, rsh, nref          the thread's token stack: td_toks_array[0 .. td_toks_stop)
 *   toks_have                td_toks_have: refs [0, toks_have) are held (NOHAVE: all)
 *   try_ref(t, i, last)      tokens::try_ref (try_exclusive / try_shared), one atomic RMW;
 *                            with last = 1 it is try_ref_spin: an exclusive request may
 *                            retry after failing (the backoff loop), a shared one succeeds
 *                            without deferring to TOK_EXCLREQ (the second try_shared)
 *   release_ref(t, i)        tokens::release_ref (the release fetch_and / fetch_sub)
 *   GET (op in step())       lwkt gettoken / gettoken_shared -> get_blocking: push_ref,
 *                            try_ref_spin; on failure td_toks_have = ref, enqueue, lwkt_switch
 *   REL                      lwkt reltoken (top of stack)
 *   YIELD                    lwkt::yield: enqueue, lwkt_switch
 *   EXIT                     exit_self: deschedule, lwkt_switch (never holds tokens here)
 *   lwkt_switch(w)           lwkt/sched.cc lwkt_switch: relalltokens(td) (token.cc: release
 *                            [td_toks_array, td_toks_have or td_toks_stop), top down), then
 *                            the run-queue walk: the first thread for which getalltokens
 *                            succeeds runs; none: the idle thread
 *   getalltokens(t)          lwkt/token.cc getalltokens -> tokens::acquire_all: stack order,
 *                            or token-address order once td_contended > kTokenSpinLoops
 *                            (chosen nondeterministically here: the counter is history);
 *                            the last reference with try_ref_spin, the others with try_ref;
 *                            on a failure release what was taken (all or nothing)
 *   idle (cur == NONE)       lwkt/worker.cc idle_loop: with threads queued it retries
 *                            lwkt_switch (cpu_pause, never parks)
 * The run-queue walk tries the worker's runnable threads in any order (an over-approximation
 * of priority and round-robin order).
 *
 * The idle worker's retry is modelled as a wait until a retry could change something: until
 * some queued thread's getalltokens could succeed, or would set a TOK_EXCLREQ bit not yet set
 * (USEFUL below; exact for this state: any other retry fails without a trace and is a
 * stutter). So a state where every worker waits is a real deadlock or livelock of the
 * spinning C++ (nobody can ever make progress), and spin reports it as an invalid end state.
 * (Livelocks where retries keep succeeding partially and failing are non-progress cycles,
 * not checked here; the sorted fallback exists to break them.)
 *
 * Properties, checked by spin (safety, exhaustive):
 *   - a thread runs only while holding every token on its stack (assertion at each step);
 *   - exclusion: an exclusively held token has no shared holders (assertion at each step);
 *     an exclusive holder is one thread by construction (tx names it), so with the first
 *     property no two running threads ever hold one token unless both hold it shared;
 *   - no deadlock: every thread exits; a worker that can never run its queued threads is an
 *     invalid end state.
 *
 * Orderings: why Promela's interleaving (sequential consistency) is sound for the C++ code,
 * AArch64 included. Every property is about one token word at a time: who holds it is
 * decided by RMWs on t_count (CAS / fetch_add / fetch_and / fetch_sub), and all RMWs on one
 * atomic object are totally ordered (its modification order), each reading the latest value
 * before it, on every architecture (AArch64: LDXR/STXR or LSE atomics, both single-copy
 * atomic). So the model's one-atomic-step-per-RMW interleaving is exactly the possible
 * histories of each word; the model never needs an order between accesses to two different
 * words (a failed reacquisition releases what it took, and nothing reads two words to decide
 * anything together). Acquire (taking) / release (giving back) orderings are what make the
 * protected data follow the token, which the model does not carry. t_ref is written only by
 * the exclusive holder and read by requesters only to detect their own recursion, which no
 * program here does; the ref-stack fields are thread-private. The relaxed pre-loads of
 * t_count only choose which RMW to try. A stale value (another worker's release not yet
 * visible; a worker always sees its own writes) either makes a CAS fail and retry with the
 * fresh value, or makes the request fail without changing any word (TOK_EXCLREQ is set by a
 * CAS, which re-reads the latest value). Such a failure leaves the state as it was and the
 * thread queued, and a later retry sees the newer value: weak memory can delay progress
 * (two workers may both fail where SC would let one succeed) but adds no state the model
 * lacks and cannot make a retry fail forever, so the invalid-end-state verdict carries over.
 *
 * Mutations (`spin -DNAME`; //tokens:tokens_model_test requires spin to reject each):
 *   MUT_PARTIAL       getalltokens keeps the references it got when a later one fails (not
 *                     all or nothing): T0 waits holding A while T1 waits holding B -> deadlock;
 *   MUT_NORELEASE     switch-out does not release the outgoing thread's tokens -> deadlock
 *                     (T0 blocked on B holding A, T1 blocked on A holding B);
 *   MUT_RUN_PARTIAL   the scheduler runs a thread whose reacquisition failed -> it runs
 *                     without one of its tokens (assertion).
 */
#define NT 3            /* threads */
#define NK 2            /* tokens: 0 = A, 1 = B (A < B by address) */
#define MAXREF 2        /* token references per thread */
#define NPC 6           /* program length */
#define NONE 255        /* gd_curthread is the idle thread */
#define NOHAVE 255      /* td_toks_have == nullptr */

#define GET 1
#define YIELD 2
#define REL 3
#define EXIT 4

#if defined(MUT_PARTIAL) || defined(MUT_NORELEASE)
#define RECURSE 1       /* a reacquisition may find the token still held by itself */
#else
#define RECURSE 0
#endif

byte tx[NK];            /* exclusive holder: thread + 1, 0 = not held exclusively */
byte ts[NK];            /* shared count */
bit trq[NK];            /* TOK_EXCLREQ */
bit shold[NT * NK];     /* ghost: thread t holds token k shared */

byte wk[NT];            /* owning worker (constant) */
byte prog_op[NT * NPC]; /* the programs (constant) */
byte prog_tok[NT * NPC];
bit prog_sh[NT * NPC];

byte pc[NT];
byte nref[NT];
byte toks_have[NT];
byte rtok[NT * MAXREF];
bit rsh[NT * MAXREF];
bit runq[NT];           /* TDF_RUNQ: on its worker's run queue */
bit done[NT];
bit running[NT];        /* ghost: TDF_RUNNING */

/* ---- What a retry by an idle worker could achieve (see the header). ---- */
#define RT(t, i) rtok[(t) * MAXREF + (i)]
#define RS(t, i) rsh[(t) * MAXREF + (i)]
/* try_ref on reference i of t succeeds now; `last`: try_ref_spin (no deferring) */
#define OKX(t, k) ((tx[k] == 0 && ts[k] == 0) || (RECURSE && tx[k] == (t) + 1))
#define OKS(t, k, defer) ((tx[k] == 0 && !((defer) && trq[k])) || (RECURSE && shold[(t) * NK + (k)]))
#define OK(t, i, last) (RS(t, i) -> OKS(t, RT(t, i), (!(last) && (i) == 0)) : OKX(t, RT(t, i)))
/* a failing try_ref on reference i would set TOK_EXCLREQ (exclusive, not yet advertised) */
#define CHG(t, i, last) (!RS(t, i) && !OK(t, i, last) && !trq[RT(t, i)])
#define TRY1(t, a) (OK(t, a, 1) || CHG(t, a, 1))
#define TRY2(t, a, b) ((OK(t, a, 0) && TRY1(t, b)) || CHG(t, a, 0))
#define SORTED_FIRST(t) (RT(t, 0) < RT(t, 1) -> 0 : 1)
#define USEFUL(t) (nref[t] == 0 || \
                   (nref[t] == 1 && TRY1(t, 0)) || \
                   (nref[t] == 2 && (TRY2(t, 0, 1) || \
                                     TRY2(t, SORTED_FIRST(t), 1 - SORTED_FIRST(t)))))
#define CANRUN(t, w) (wk[t] == (w) && runq[t] && !done[t] && USEFUL(t))
#define ANYRUN(w) (CANRUN(0, w) || CANRUN(1, w) || CANRUN(2, w))
#define MINE_DONE(t, w) (wk[t] != (w) || done[t])
#define ALLDONE(w) (MINE_DONE(0, w) && MINE_DONE(1, w) && MINE_DONE(2, w))

/* Reference i of t is held by t. */
#define HELD(t, i) (RS(t, i) -> shold[(t) * NK + RT(t, i)] : tx[RT(t, i)] == (t) + 1)

/* tokens::try_ref (last = 0) or try_ref_spin (last = 1) on reference i of t; sets ok (and,
 * in the mutants only, kept: the reference was still held, nothing was taken). */
inline try_ref(t, i, last) {
  k = RT(t, i);
  atomic {
    if
    :: !RS(t, i) ->                                   /* try_exclusive */
         if
         :: tx[k] == 0 && ts[k] == 0 -> tx[k] = t + 1; trq[k] = 0; ok = 1   /* acquire CAS */
         :: RECURSE && tx[k] == t + 1 -> ok = 1; kept = 1                   /* still held */
         :: else -> trq[k] = 1; ok = 0                                      /* advertise */
         fi
    :: else ->                                        /* try_shared */
         if
         :: tx[k] == 0 && (last || i != 0 || !trq[k]) && !(RECURSE && shold[t * NK + k]) ->
              ts[k]++; shold[t * NK + k] = 1; ok = 1                        /* fetch_add */
         :: RECURSE && shold[t * NK + k] -> ok = 1; kept = 1
         :: else -> ok = 0
         fi
    fi
  };
  if                                                  /* try_ref_spin: backoff, retry */
  :: last && !ok && !RS(t, i) ->
       atomic {
         if
         :: tx[k] == 0 && ts[k] == 0 -> tx[k] = t + 1; trq[k] = 0; ok = 1
         :: else -> skip                               /* gave up: switch */
         fi
       }
  :: else -> skip
  fi;
  k = 0
}

inline release_ref(t, i) {
  k = RT(t, i);
  atomic {
    if
    :: !RS(t, i) -> assert(tx[k] == t + 1); tx[k] = 0                       /* fetch_and */
    :: else -> assert(shold[t * NK + k] && ts[k] > 0); ts[k]--; shold[t * NK + k] = 0
    fi
  };
  k = 0
}

/* lwkt/token.cc relalltokens: top down, skipping a reference that was never taken. */
inline relalltokens(t) {
#ifndef MUT_NORELEASE
  i = (toks_have[t] == NOHAVE -> nref[t] : toks_have[t]);
  do
  :: i > 0 -> i--; release_ref(t, i)
  :: else -> break
  od;
#endif
  toks_have[t] = NOHAVE
}

/* lwkt/token.cc getalltokens -> tokens::acquire_all; sets ok. */
inline getalltokens(t) {
  if
  :: nref[t] == 0 -> ok = 1
  :: nref[t] == 1 -> try_ref(t, 0, 1)
  :: nref[t] == 2 ->
       if
       :: first = 0                                   /* stack order */
       :: first = SORTED_FIRST(t)                     /* address order (contended) */
       fi;
       try_ref(t, first, 0);
       if
       :: ok ->
            try_ref(t, 1 - first, 1);
#ifndef MUT_PARTIAL
            if                                        /* all or nothing */
            :: !ok && !kept -> release_ref(t, first)
            :: else -> skip
            fi;
#endif
            skip
       :: else -> skip
       fi;
       first = 0
  fi;
  kept = 0
}

/* One worker: its idle thread, the run-queue walk of lwkt_switch and its running thread. */
proctype worker(byte w) {
  byte cur = NONE;      /* gd_curthread (NONE: the idle thread) */
  byte c, i, k, first, tried, op;
  bit ok, kept;

L_idle:                 /* idle_loop: retry lwkt_switch while threads are queued */
  if
  :: ALLDONE(w) -> goto L_done
  :: !ALLDONE(w) && ANYRUN(w) -> goto L_walk
  fi;

L_walk:                 /* lwkt_switch: each runnable thread of w at most once, any order */
  do
  :: cur != NONE -> break
  :: else ->
       if
       :: atomic { wk[0] == w && runq[0] && !(tried & 1) -> tried = tried | 1; c = 0 }
       :: atomic { wk[1] == w && runq[1] && !(tried & 2) -> tried = tried | 2; c = 1 }
       :: atomic { wk[2] == w && runq[2] && !(tried & 4) -> tried = tried | 4; c = 2 }
       :: else -> break                                /* none: the idle thread */
       fi;
       getalltokens(c);
#ifdef MUT_RUN_PARTIAL
       ok = 1;                                         /* runs it whatever happened */
#endif
       if
       :: ok -> cur = c; running[c] = 1; ok = 0
       :: else -> skip
       fi;
       c = 0
  od;
  tried = 0;
  if
  :: cur == NONE -> goto L_idle
  :: else -> skip
  fi;

L_run:                  /* one step of the running thread cur */
  /* it holds every token on its stack; an exclusive holder has no shared holders */
  i = 0;
  do
  :: i < nref[cur] -> assert(HELD(cur, i)); i++
  :: else -> break
  od;
  i = 0;
  assert((tx[0] == 0 || ts[0] == 0) && (tx[1] == 0 || ts[1] == 0));
  op = prog_op[cur * NPC + pc[cur]];
  if
  :: op == GET ->                                      /* get_blocking */
       RT(cur, nref[cur]) = prog_tok[cur * NPC + pc[cur]];
       RS(cur, nref[cur]) = prog_sh[cur * NPC + pc[cur]];
       nref[cur]++;
       pc[cur]++;
       try_ref(cur, nref[cur] - 1, 1);
       if
       :: ok -> ok = 0; op = 0; goto L_run
       :: else -> toks_have[cur] = nref[cur] - 1            /* td_toks_have = ref; switch */
       fi
  :: op == REL ->
       release_ref(cur, nref[cur] - 1);
       nref[cur]--;
       pc[cur]++;
       op = 0;
       goto L_run
  :: op == YIELD ->
       pc[cur]++
  :: op == EXIT ->
       assert(nref[cur] == 0);
       pc[cur]++;
       done[cur] = 1;
       runq[cur] = 0                                   /* deschedule */
  fi;
  op = 0;

  /* lwkt_switch from cur: release everything it holds, then walk the run queue */
  relalltokens(cur);
  running[cur] = 0;
  cur = NONE;
  goto L_walk;

L_done:
  skip
}

/* prog(t, pc, op, tok, shared) */
#define PROG(t, p, o, k, s) prog_op[(t) * NPC + (p)] = o; prog_tok[(t) * NPC + (p)] = k; \
                            prog_sh[(t) * NPC + (p)] = s

init {
  atomic {
    /* T0 on worker 0: A, B (exclusive) */
    PROG(0, 0, GET, 0, 0); PROG(0, 1, GET, 1, 0); PROG(0, 2, YIELD, 0, 0);
    PROG(0, 3, REL, 0, 0); PROG(0, 4, REL, 0, 0); PROG(0, 5, EXIT, 0, 0);
    /* T1 on worker 1: B, A (exclusive): the opposite order */
    PROG(1, 0, GET, 1, 0); PROG(1, 1, GET, 0, 0); PROG(1, 2, YIELD, 0, 0);
    PROG(1, 3, REL, 0, 0); PROG(1, 4, REL, 0, 0); PROG(1, 5, EXIT, 0, 0);
    /* T2 on worker 0: A shared, then B exclusive */
    PROG(2, 0, GET, 0, 1); PROG(2, 1, GET, 1, 0); PROG(2, 2, YIELD, 0, 0);
    PROG(2, 3, REL, 0, 0); PROG(2, 4, REL, 0, 0); PROG(2, 5, EXIT, 0, 0);
    wk[0] = 0; wk[1] = 1; wk[2] = 0;
    toks_have[0] = NOHAVE; toks_have[1] = NOHAVE; toks_have[2] = NOHAVE;
    runq[0] = 1; runq[1] = 1; runq[2] = 1;
    run worker(0);
    run worker(1)
  }
}
