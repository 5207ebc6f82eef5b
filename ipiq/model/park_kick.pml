/*
 * park_kick.pml: the IPI rings with sticky announcements plus the park/kick protocol,
 * checked exhaustively by spin.
 *
 * Models lwkt's receive path (lwkt/ipi.cc process_ipiq, unwatch_rings, rings_ready;
 * lwkt/sched.cc drain_all; lwkt/worker.cc idle_loop) and send path (send_entry: push, then
 * announce: fence, mask bit if clear, RQF_IPIQ if clear, kick) for NPROD producers, each
 * with its own ring to one consumer, NMSG messages each. A ring's count stands for its
 * slots: a message is "ready" to the consumer once its slot's sequence number is published.
 * Promela interleaves atomically (sequential consistency); the C++ code obtains the orderings
 * that matter here from its seq_cst fences (announce's two, drain_all's after clearing the
 * flag, the parker's in prepare_park) and seq_cst RMWs on the mask and the flag. Where a
 * fence is what makes SC sound, a mutant removes it and models the store buffer it
 * orders (NO_FENCE_AFTER_MASK).
 *
 * The consumer watches the rings whose mask bits are set and clears a bit only for a ring it
 * found empty: before it parks, and when it drops RQF_IPIQ after K drains in a row that ran
 * nothing. Between drains it either runs a thread, whose switch points look at the rings only
 * while RQF_IPIQ is set, or is idle (polls the watched rings, then parks).
 *
 * Safety, checked by spin:
 *   - no lost message: the consumer stops only after consuming all NPROD * NMSG, and the
 *     assertion checks per-producer FIFO order;
 *   - no lost wakeup or lost request flag: a consumer that waits (parked, or running a thread
 *     with the flag clear) while a message is pending and every producer has finished is a
 *     deadlock, which spin reports as an invalid end state. (Both waits also end once every
 *     message is consumed: a worker with nothing left to do may sleep for good.)
 *
 * Mutations (`spin -DNAME`; //ipiq:park_kick_model_test requires spin to reject each):
 *   NO_RECHECK            the consumer parks right after prepare_park(), without looking at
 *                         the rings again: a kick that ran before the announcement is lost;
 *   RECHECK_WATCHED_ONLY  the look after unwatching covers only the rings still watched, not
 *                         the ones just unwatched: a sender that saw the bit still set did not
 *                         set it again, and its message sits in an unwatched ring;
 *   UNFLAG_NO_LOOK        drain_all clears RQF_IPIQ without looking at the rings afterwards:
 *                         a sender that saw the flag still set leaves a busy consumer unaware;
 *   NO_FENCE_AFTER_MASK   no fence between the bit's RMW and the flag load (the sender's
 *                         store may then become visible after that load: modelled as a store
 *                         buffer): a busy consumer clears the flag, looks, and sees neither
 *                         (found in review of the first version of the C++);
 *   REWATCH_SKIPPED       the park path cancels on other work (the inbox) without running
 *                         rings_ready, so a ring unwatched just before is never re-watched
 *                         (a bug the first version of the C++ had: a short-circuit `||`).
 */
#define NPROD 2
#define NMSG 2
#define K 2          /* kEmptyDrainsBeforeUnflag, scaled down */
#define TOTAL (NPROD * NMSG)

byte ring[NPROD];      /* messages pushed and not yet taken */
byte sent[NPROD];      /* next sequence number each producer sends */
byte got[NPROD];       /* next sequence number the consumer expects from each */
bit mask[NPROD];       /* gd_ipimask bits: rings the consumer watches */
bit flag;              /* RQF_IPIQ */
bit parked;            /* parker state: 1 = kParked */
byte consumed;

bit cleared[NPROD];    /* unwatch_rings' result (consumer-local) */
bit found;             /* rings_ready's result (consumer-local) */

proctype producer(byte id) {
  bit pend = 0;      /* NO_FENCE_AFTER_MASK: the bit's store, still in the store buffer */
  do
  :: sent[id] < NMSG ->
       atomic { sent[id]++; ring[id]++ }  /* push: entry, then the slot's seq (release) */
       /* announce: fence; then each word is written only if it is found clear */
#ifndef NO_FENCE_AFTER_MASK
       if :: mask[id] == 0 -> mask[id] = 1 :: else -> skip fi;   /* fetch_or; fence */
#else
       /* AArch64 LL/SC without the fence: the RMW's store may become visible only after
          the relaxed flag load below, at the latest at the next fence or release store */
       if :: mask[id] == 0 -> pend = 1 :: else -> skip fi;
       if :: pend == 1 -> mask[id] = 1; pend = 0 :: true -> skip fi;   /* may drain early */
#endif
       if
       :: flag == 0 -> atomic { if :: pend == 1 -> mask[id] = 1; pend = 0 :: else -> skip fi;
                                flag = 1 }
       :: else -> skip
       fi;
       atomic { if :: pend == 1 -> mask[id] = 1; pend = 0 :: else -> skip fi }  /* a fence */
       if                                /* kick: load state; swap if parked */
       :: parked == 1 -> atomic { if :: parked == 1 -> parked = 0 :: else -> skip fi }
       :: else -> skip
       fi
  :: else -> break
  od
}

/* unwatch_rings: per watched ring, look at its next slot, then (later) clear its bit */
inline unwatch() {
  s = 0;
  do
  :: s < NPROD ->
       cleared[s] = 0;
       if :: mask[s] == 1 && ring[s] == 0 -> cleared[s] = 1 :: else -> skip fi;
       s++
  :: else -> break
  od;
  s = 0;
  do
  :: s < NPROD -> if :: cleared[s] == 1 -> mask[s] = 0 :: else -> skip fi; s++
  :: else -> break
  od
}

/* rings_ready: the unwatched rings (re-watched if a message arrived) and the watched ones */
inline rings_ready() {
  found = 0;
  s = 0;
  do
  :: s < NPROD ->
#ifndef RECHECK_WATCHED_ONLY
       if
       :: cleared[s] == 1 && mask[s] == 0 && ring[s] > 0 -> mask[s] = 1; found = 1
       :: else -> skip
       fi;
#endif
       if :: mask[s] == 1 && ring[s] > 0 -> found = 1 :: else -> skip fi;
       s++
  :: else -> break
  od
}

proctype consumer() {
  byte s;
  bit any;
  byte empties;
  do
  :: consumed == TOTAL -> break
  :: else ->
       /* drain_all -> process_ipiq: each watched ring until its next slot is not there */
       any = 0;
       s = 0;
       do
       :: s < NPROD ->
            if
            :: mask[s] == 1 ->
                 do
                 :: ring[s] > 0 ->
                      atomic { ring[s]--; assert(got[s] < sent[s]); got[s]++; consumed++ };
                      any = 1
                 :: else -> break
                 od
            :: else -> skip
            fi;
            s++
       :: else -> break
       od;
       found = 0;
       if
       :: any == 1 -> empties = 0
       :: else ->
            if
            :: flag == 0 -> empties = 0   /* counted only while the flag is set */
            :: flag == 1 && empties < K -> empties++
            :: flag == 1 && empties >= K ->  /* drop the flag, stop watching empty rings */
                 empties = 0;
                 unwatch();
                 flag = 0;                /* seq_cst RMW, then a fence */
#ifndef UNFLAG_NO_LOOK
                 rings_ready()
#endif
            fi
       fi;
       if
       :: found == 1 -> skip             /* drain again at once */
       :: else ->
            if
            :: true ->                   /* a thread runs: its switch points look only
                                            while the flag is set */
                 (flag == 1 || consumed == TOTAL)
            :: true ->                   /* idle loop */
                 s = 0;
                 any = 0;
                 do
                 :: s < NPROD -> if :: mask[s] == 1 && ring[s] > 0 -> any = 1 :: else -> skip fi; s++
                 :: else -> break
                 od;
                 if
                 :: any == 1 -> skip     /* the poll saw a message */
                 :: else ->
                      /* park: unwatch, prepare_park (store; fence), look again, sleep */
                      unwatch();
                      parked = 1;
#ifdef NO_RECHECK
                      (parked == 0 || consumed == TOTAL)
#else
                      if
                      :: true ->
                           rings_ready();
                           if
                           :: found == 1 -> parked = 0     /* cancel_park */
                           :: found == 0 -> parked = 0     /* other work (the inbox) */
                           :: found == 0 -> (parked == 0 || consumed == TOTAL)  /* futex_wait */
                           fi
#ifdef REWATCH_SKIPPED
                      :: true -> parked = 0      /* the inbox had work: rings_ready not run */
#endif
                      fi
#endif
                 fi
            fi
       fi
  od;
  assert(got[0] == NMSG && got[1] == NMSG)
}

init {
  atomic {
    run producer(0);
    run producer(1);
    run consumer()
  }
}
