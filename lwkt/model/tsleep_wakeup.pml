/*
 * tsleep_wakeup.pml: tsleep_interlock / tsleep / wakeup across two workers, checked
 * exhaustively by spin.
 *
 * Three lwkt threads sleep on one wait channel (one hash slot): A on worker 0 and B on
 * worker 1 play ping-pong on `turn` ROUNDS times each, as Sleep.NoLostWakeupPingPong does
 * (wait until turn == side; turn = 1 - side; wakeup), and C, also on worker 0, waits twice:
 * until turn == 0 (set by B, on the other worker: the cross-worker race, and a break after
 * the interlock leaves C queued for its second wait), then until A has finished (`adone`,
 * set on C's own worker: the local wakeup path). Every wait uses the interlock pattern:
 *     while (!cond) { tsleep_interlock(&ch); if (cond) break; tsleep(&ch, PINTERLOCKED); }
 *
 * Step -> C++ (lwkt/sleep.cc, pc values of a thread):
 *   P_TOP     the caller's loop: test its condition (a seq_cst load, see Orderings)
 *   P_IL      tsleep_interlock: if not yet queued on ch, sleepq_insert links the thread on
 *             its worker's slot (owner-only list: onq = TDF_TSLEEPQ) ...
 *   P_IL2     ... and sets the worker's bit in the runtime-wide slot mask (seq_cst fetch_or);
 *             crit_exit (messages may run after it)
 *   P_CHK     the caller re-checks its condition; true: break (the thread stays queued)
 *   P_SLEEP   tsleep(PINTERLOCKED): still queued (no wakeup since)? dequeue from the run
 *             queue, TDF_TSLEEP_DESCHEDULED, lwkt_switch; else return 0 at once
 *   P_RET     back from the switch: clear TDF_TSLEEP_DESCHEDULED; still queued (a stray
 *             schedule): sleepq_remove; crit_exit
 *   P_SET     the waker changes the condition (turn, and adone on A's last round)
 *   P_WL      wakeup -> do_wakeup -> wakeup_local on the waker's own worker (owner-only scan)
 *   P_READ    atomic_thread_fence(seq_cst), then the seq_cst load of the slot mask
 *   P_SEND    send_ipi(ipi_wakeup) to each other worker whose bit was set (msgs[w]++)
 *   P_NEXT    next round, or exit: sleep_exit_cleanup (sleepq_remove if still queued)
 *   handle(w) a worker running ipi_wakeup -> wakeup_local: every queued sleeper on ch is
 *             unlinked (sleepq_remove; the worker's bit is cleared, relaxed fetch_and, when
 *             its slot empties) and, if it really sleeps, enqueued (wake_thread). Workers run
 *             messages whenever their thread is outside a critical section, at lwkt_switch
 *             and when idle (an over-approximation of the crit_exit drain points)
 *   worker    lwkt_switch / idle_loop: runs a runnable thread of its own (any), or waits for
 *             a message; the park/kick protocol that wakes a parked worker is checked by
 *             ipiq/model/park_kick.pml and is assumed here (a sent message is eventually run)
 *
 * Property, checked by spin (safety, exhaustive): no lost wakeup. A sleeper that sleeps
 * forever although its condition was set and its waker has finished leaves its worker
 * waiting for a message that never comes; with the other threads done that is an invalid end
 * state. Every thread must finish its rounds.
 *
 * Orderings: why Promela's interleaving (sequential consistency) is sound for the C++ code,
 * AArch64 included. Sleep queues, run queues and thread flags are touched only by their
 * worker (one OS thread at a time, ordered by program order and by the IPI ring's
 * release/acquire pairs). The only cross-worker race is the Dekker pair on two locations:
 *   sleeper:  fetch_or(mask bit, seq_cst) [sleepq_insert]; load(cond)       [re-check]
 *   waker:    store(cond); atomic_thread_fence(seq_cst); load(mask, seq_cst) [do_wakeup]
 * SC's only forbidden outcome here is "the sleeper reads the old cond AND the waker reads
 * the mask without the bit", and C++ forbids it too provided the sleeper's re-check is a
 * seq_cst load (or follows a seq_cst fence): then the RMW, the re-check, the fence and the
 * mask load are all in the single total order S; the waker's load not seeing the RMW puts
 * it (and the fence before it) before the RMW in S; the re-check reading the old cond puts
 * it before the fence ([atomics.order] p4); with RMW before re-check (program order) that is
 * a cycle. AArch64: the RMW compiles to LDSETAL or LDAXR/STLXR, the seq_cst loads to LDAR
 * and the fence to DMB ISH; STLR/STLXR followed by LDAR is ordered (RCsc), the DMB orders the
 * waker's store before its load. (A relaxed re-check, LDR, may be satisfied before an
 * LDAXR/STLXR loop's store is visible: that is the RELAXED_INSERT mutant's behaviour.)
 * The bit's other writer is the clear in sleepq_remove (relaxed), done only when the slot is
 * empty, i.e. when no sleeper is left to lose; a thread that sleeps again sets it again with
 * a fresh seq_cst RMW, later in the bit's modification order (one still queued from an
 * earlier interlock does not repeat the RMW: that earlier one counts, as the slot has not
 * emptied since, and it precedes the re-check in program order). A stale set bit only costs a
 * message that finds nobody. The waker's message to another worker is delivered by the IPI
 * ring (release/acquire) and runs there, on the owner, like the model's handle().
 *
 * Mutations (`spin -DNAME`; //lwkt:tsleep_wakeup_model_test requires spin to reject each):
 *   NO_FENCE           do_wakeup without the fence: the waker's mask load may be satisfied
 *                      before its condition store is visible (modelled as load, then store);
 *   CHECK_BEFORE_INTERLOCK  the sleeper tests its condition only before tsleep_interlock,
 *                      not after: a wakeup between the test and the interlock is lost;
 *   RELAXED_INSERT     the mask bit becomes visible after the sleeper's re-check (a relaxed
 *                      or release fetch_or in sleepq_insert): the waker misses the bit.
 */
#define NT 3
#define NW 2
#define ROUNDS 2
#define NONE 255

#define P_TOP 0
#define P_IL 1
#define P_IL2 2
#define P_CHK 3
#define P_SLEEP 4
#define P_RET 5
#define P_SET 6
#define P_WL 7
#define P_READ 8
#define P_SEND 9
#define P_NEXT 10
#define P_DONE 11

#define TA 0
#define TB 1
#define TC 2

bit turn;               /* the ping-pong condition: whose turn it is */
bit adone;              /* C's condition: A has finished */
bit mask[NW];           /* slpque_cpumasks for the channel's slot: worker w may have sleepers */
byte msgs[NW];          /* ipi_wakeup messages sent to worker w, not yet run */

byte wk[NT];            /* owning worker (constant) */
byte pc[NT];
byte rounds[NT];
bit onq[NT];            /* TDF_TSLEEPQ (on its worker's sleep queue for the channel) */
bit desched[NT];        /* TDF_TSLEEP_DESCHEDULED */
bit runq[NT];           /* TDF_RUNQ */
bit done[NT];
bit snap[NT];           /* the waker's mask load: the other worker's bit */

/* A: turn == 0; B: turn == 1; C: first turn == 0 (set by B), then adone (set by A) */
#define COND(t) ((t) == TA -> turn == 0 : ((t) == TB -> turn == 1 : \
                 (rounds[TC] == 0 -> turn == 0 : adone == 1)))
#define MINE_DONE(t, w) (wk[t] != (w) || done[t])
#define ALLDONE(w) (MINE_DONE(0, w) && MINE_DONE(1, w) && MINE_DONE(2, w))
#define RUNNABLE(t, w) (wk[t] == (w) && runq[t] && !done[t])
#define ANYQ(w) ((wk[0] == (w) && onq[0]) || (wk[1] == (w) && onq[1]) || (wk[2] == (w) && onq[2]))

/* sleepq_remove: unlink; drop the worker's bit once its slot is empty (relaxed fetch_and). */
inline sleepq_remove(t) {
  onq[t] = 0;
  if
  :: !ANYQ(wk[t]) -> mask[wk[t]] = 0
  :: else -> skip
  fi
}

/* wake_thread on every sleeper of worker w queued on the channel (wakeup_local). */
inline wakeup_local(w) {
  j = 0;
  do
  :: j < NT ->
       if
       :: wk[j] == w && onq[j] ->
            sleepq_remove(j);
            if :: desched[j] -> runq[j] = 1 :: else -> skip fi   /* enqueue */
       :: else -> skip
       fi;
       j++
  :: else -> break
  od;
  j = 0
}

proctype worker(byte w) {
  byte cur = NONE;      /* gd_curthread (NONE: the idle thread) */
  byte j;
  do
  :: cur == NONE ->     /* idle_loop / lwkt_switch's pick */
       if
       :: ALLDONE(w) -> break
       :: atomic { msgs[w] > 0 -> msgs[w]--; wakeup_local(w) }         /* ipi_wakeup */
       :: atomic { RUNNABLE(0, w) -> cur = 0 }
       :: atomic { RUNNABLE(1, w) -> cur = 1 }
       :: atomic { RUNNABLE(2, w) -> cur = 2 }
       fi
  :: atomic { cur != NONE && pc[cur] != P_IL2 && msgs[w] > 0 ->        /* a drain point */
                msgs[w]--; wakeup_local(w) }
  :: cur != NONE ->     /* one step of the running thread */
       if
       :: pc[cur] == P_TOP ->
            if
            :: COND(cur) -> pc[cur] = (cur == TC -> P_NEXT : P_SET)
            :: else -> pc[cur] = P_IL
            fi
       :: pc[cur] == P_IL ->                                           /* tsleep_interlock */
            if
            :: onq[cur] -> pc[cur] = P_CHK                             /* already queued */
#ifdef RELAXED_INSERT
            :: else -> onq[cur] = 1; pc[cur] = P_CHK                   /* bit comes later */
#else
            :: else -> onq[cur] = 1; pc[cur] = P_IL2                   /* link */
#endif
            fi
       :: pc[cur] == P_IL2 ->
            mask[w] = 1;                                               /* seq_cst fetch_or */
#ifdef RELAXED_INSERT
            pc[cur] = P_SLEEP
#else
            pc[cur] = P_CHK
#endif
       :: pc[cur] == P_CHK ->                                          /* the re-check */
#ifdef CHECK_BEFORE_INTERLOCK
            pc[cur] = P_SLEEP
#else
            if
            :: COND(cur) -> pc[cur] = (cur == TC -> P_NEXT : P_SET)    /* break */
#ifdef RELAXED_INSERT
            :: else -> pc[cur] = (onq[cur] -> P_IL2 : P_SLEEP)
#else
            :: else -> pc[cur] = P_SLEEP
#endif
            fi
#endif
       :: pc[cur] == P_SLEEP ->                                        /* tsleep */
            if
            :: onq[cur] ->                                             /* still interlocked */
                 runq[cur] = 0;
                 desched[cur] = 1;
                 pc[cur] = P_RET;
                 cur = NONE                                            /* lwkt_switch */
            :: else -> pc[cur] = P_RET                                 /* woken already */
            fi
       :: pc[cur] == P_RET ->
            desched[cur] = 0;
            if :: onq[cur] -> sleepq_remove(cur) :: else -> skip fi;
            pc[cur] = P_TOP
       :: pc[cur] == P_SET ->                                          /* the condition */
#ifdef NO_FENCE
            snap[cur] = mask[1 - w];                                   /* load went first */
#endif
            if
            :: cur == TA -> turn = 1; adone = (rounds[cur] == ROUNDS - 1 -> 1 : adone)
            :: else -> turn = 0
            fi;
            pc[cur] = P_WL
       :: pc[cur] == P_WL ->
            atomic { wakeup_local(w) };
            pc[cur] = P_READ
       :: pc[cur] == P_READ ->                                         /* fence; load mask */
#ifndef NO_FENCE
            snap[cur] = mask[1 - w];
#endif
            pc[cur] = P_SEND
       :: pc[cur] == P_SEND ->                                         /* send_ipi */
            if :: snap[cur] -> msgs[1 - w]++ :: else -> skip fi;
            snap[cur] = 0;
            pc[cur] = P_NEXT
       :: pc[cur] == P_NEXT ->
            rounds[cur]++;
            if
            :: rounds[cur] < (cur == TC -> 2 : ROUNDS) -> pc[cur] = P_TOP
            :: else ->                                                 /* exit */
                 if :: onq[cur] -> sleepq_remove(cur) :: else -> skip fi;
                 pc[cur] = P_DONE;
                 done[cur] = 1;
                 runq[cur] = 0;
                 cur = NONE
            fi
       fi
  od
}

init {
  atomic {
    wk[TA] = 0; wk[TB] = 1; wk[TC] = 0;
    runq[TA] = 1; runq[TB] = 1; runq[TC] = 1;
    run worker(0);
    run worker(1)
  }
}
