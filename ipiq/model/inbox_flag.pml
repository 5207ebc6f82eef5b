/*
 * inbox_flag.pml: the MPSC inbox plus the RQF_IPIQ request flag, checked exhaustively by spin.
 *
 * NPROD producers (OS threads that are not workers) post NMSG messages each to one worker.
 * The worker is busy (it runs lwkt threads and looks only at the flag, at every crit_exit)
 * or idle (the idle loop, which also looks at the inbox itself and may park); at each pass
 * it chooses either, so spin explores a worker that stays busy across any stretch.
 *
 * Step -> C++ (the protocol the C++ implements once fixed; see "Orderings" for the gap):
 *   producer
 *     atomic { was_empty = (inbox == 0); inbox++ }
 *                     ipiq::inbox::push: the release CAS on _head; returns "was empty"
 *     flag = 1        lwkt::internal::post (lwkt/sched.cc): gd_reqflags.fetch_or(RQF_IPIQ),
 *                     only by the producer whose push found the inbox empty (release RMW)
 *     kick            ipiq::parker::kick: fence; load _state; swap to kRunning if kParked
 *   consumer, busy
 *     (flag == 1)     crit_exit (lwkt/internal/sched_inline.h): the 1 -> 0 transition loads
 *                     gd_reqflags and calls crit_exit_work -> splz only if RQF_IPIQ is set;
 *                     a worker that never looks at the inbox otherwise waits here
 *     drain_all()     splz: drain_all(gd) once; the flag is sticky, so the next crit_exit
 *                     looks again
 *   consumer, idle    lwkt/worker.cc idle_loop
 *     drain_all()     drain_all at the top of the loop (process_ipiq: the rings, not here)
 *     inbox > 0       !gd_inbox.empty(): poll again
 *     parked = 1; inbox > 0 ? cancel : (parked == 0)
 *                     prepare_park; re-check the inbox; cancel_park or park (futex_wait)
 *   drain_all()       lwkt::internal::drain_all (lwkt/sched.cc)
 *     take_all()      drain_inbox: inbox::take_all (relaxed load of _head, then the acquire
 *                     exchange, and running the messages taken); the flag is left set
 *     either nothing more (RQF_IPIQ is sticky), or, standing for the K-th drain in a row
 *     that ran nothing:
 *     flag == 1 -> flag = 0
 *                     relaxed load of gd_reqflags, then fetch_and(~RQF_IPIQ) (seq_cst RMW,
 *                     then a fence); two steps, so a set that lands in between is cleared
 *     take_all()      the look after the clear
 *
 * Properties, checked by spin (safety, exhaustive):
 *   - no message is left behind an unset flag: a busy worker waits for the flag, so a message
 *     in the inbox with the flag clear after every producer has finished is a deadlock, which
 *     spin reports as an invalid end state (the consumer stops only after consuming all
 *     NPROD * NMSG messages);
 *   - no lost wakeup of an idle worker (the park/kick part, as in park_kick.pml);
 *   - nothing is consumed twice or invented (the assertion at the end).
 *
 * Orderings: why Promela's interleaving (sequential consistency) is sound for the C++ code,
 * AArch64 included. Only two kinds of cross-thread facts are used, and each is established
 * by the C++ memory model, not by SC:
 *   1. A consumer that clears the flag after a producer's set sees that producer's push.
 *      The set (fetch_or, release) is sequenced after the push; the clear (fetch_and,
 *      acquire; acq_rel) is an RMW, so it reads the value written immediately before it in
 *      the flag's modification order, which lies in the release sequence headed by the set
 *      (later RMWs, sets or clears, extend a release sequence). So the set synchronizes
 *      with the clear, the push happens-before the take_all that follows the clear, and by
 *      coherence take_all's load/exchange reads that push or a later value of _head: it takes
 *      the message, or an earlier take_all already did. (AArch64: the set compiles to
 *      LDSETL or an LDXR/STLXR loop, whose release orders the earlier STLXR of the push
 *      before it; the clear to LDCLRAL or LDAXR/STLXR, whose acquire orders the later loads
 *      of _head after it; the RMW reads the latest value of the flag in coherence order.)
 *      If no clear follows the set in the flag's modification order, the flag stays set
 *      and a later crit_exit sees it (coherence: its loads eventually read the set).
 *   2. A push that finds the inbox non-empty needs no flag: _head is changed only by RMWs
 *      (push CAS, take_all exchange), so that push lies, in _head's modification order, in a
 *      segment of pushes that began with a push which found the inbox empty and set the
 *      flag, and the first exchange after that push in modification order takes the whole
 *      segment. By 1, that exchange exists (a clear that follows the set), or the flag stays
 *      set.
 *   The relaxed loads (the flag in crit_exit and drain_all, _head in take_all's shortcut
 *   and in the idle loop) read a value at least as recent, in modification order, as the
 *   last RMW of the same thread and as any write that happens-before them; a stale value
 *   only delays the reader to its next pass, which the model's interleavings include. The
 *   parker's two seq_cst fences make its store/fence/load pairs behave like the SC model
 *   (ipiq/parker.h). Nothing else is shared.
 *   The C++ (lwkt/sched.cc at the time of writing) uses relaxed for both the set in post()
 *   and the clear in drain_inbox(); with those, 1 does not hold: on AArch64 the set may
 *   become visible before the push (the SET_BEFORE_PUSH mutant's behaviour) and the
 *   consumer's load of _head may be satisfied before its clear (CLEAR_AFTER_TAKE's).
 *   Not modelled here: the IPI ring senders (lwkt/ipi.cc announce), which set the same flag
 *   after a fence and skip the RMW when they see the flag set. That is a store-buffering
 *   pair with the consumer's clear and its later look at the rings (a fence on each side),
 *   modelled in park_kick.pml.
 *
 * Mutations (`spin -DNAME`; //ipiq:inbox_flag_model_test requires spin to reject each):
 *   CLEAR_AFTER_TAKE  drain_all clears the flag with no take_all after the clear: a push
 *                     between the last take and the clear sets the flag, which the clear
 *                     then erases;
 *   SET_BEFORE_PUSH   the producer sets the flag before pushing (what a relaxed set may look
 *                     like to the consumer): the consumer clears it and finds nothing yet.
 */
#define NPROD 3
#define NMSG 2
#define TOTAL (NPROD * NMSG)

byte inbox;       /* messages pushed and not yet taken (_head != null iff inbox > 0) */
bit flag;         /* gd_reqflags & RQF_IPIQ */
bit parked;       /* parker state: 1 = kParked */
byte sent;        /* messages pushed so far, by all producers */
byte consumed;    /* messages run by the consumer */

proctype producer() {
  byte n = 0;
  bit was_empty;
  do
  :: n < NMSG ->
#ifdef SET_BEFORE_PUSH
       flag = 1;
       atomic { inbox++; sent++ };
#else
       atomic { was_empty = (inbox == 0); inbox++; sent++ };  /* push: release CAS */
       if
       :: was_empty -> flag = 1                               /* fetch_or, release */
       :: else -> skip
       fi;
#endif
       was_empty = 0;
       n++;
       if                                  /* kick: fence; load state; swap if parked */
       :: parked == 1 -> atomic { if :: parked == 1 -> parked = 0 :: else -> skip fi }
       :: else -> skip
       fi
  :: else -> break
  od
}

inline take_all() {
  if
  :: inbox > 0 -> atomic { consumed = consumed + inbox; inbox = 0 }  /* exchange; run them */
  :: else -> skip                                                    /* relaxed load: empty */
  fi
}

inline drain_all() {
  take_all();
  if
  :: true -> skip                                  /* the flag stays set (sticky) */
  :: true ->                                       /* K-th empty drain: drop the flag */
       if :: flag == 1 -> flag = 0 :: else -> skip fi;  /* load; fetch_and; fence */
#ifndef CLEAR_AFTER_TAKE
       take_all()                                  /* look again */
#else
       skip
#endif
  fi;
  assert(consumed <= sent)
}

proctype consumer() {
  do
  :: consumed == TOTAL -> break
  :: else ->
       if
       :: true ->                          /* busy: crit_exit looks at the flag only */
            (flag == 1);
            drain_all()                    /* splz */
       :: true ->                          /* idle loop */
            drain_all();
            if
            :: inbox > 0 -> skip           /* !gd_inbox.empty(): poll again */
            :: consumed == TOTAL -> skip   /* done (stands for gd_stop) */
            :: else ->
                 parked = 1;               /* prepare_park: store; fence */
                 if
                 :: inbox > 0 -> parked = 0          /* re-check; cancel_park */
                 :: else -> (parked == 0)            /* futex_wait while kParked */
                 fi
            fi
       fi
  od;
  assert(consumed == TOTAL && inbox == 0)
}

init {
  byte i = 0;
  atomic {
    do
    :: i < NPROD -> run producer(); i++
    :: else -> break
    od;
    run consumer()
  }
}
