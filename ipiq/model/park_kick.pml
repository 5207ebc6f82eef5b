/*
 * park_kick.pml: the IPI rings plus the park/kick protocol, checked exhaustively by spin.
 *
 * Models lwkt's receive path (lwkt/ipi.cc process_ipiq, lwkt/worker.cc idle_loop) and send
 * path (send_entry + flag_ring + parker::kick) for NPROD producers, each with its own ring
 * to one consumer, NMSG messages each. Promela interleaves atomically (sequential
 * consistency); the C++ code obtains the orderings that matter here from seq_cst RMWs on
 * the mask and the two seq_cst fences of the parker (ipiq/parker.h).
 *
 * Safety, checked by spin:
 *   - no lost message: the consumer stops only after consuming all NPROD * NMSG, and the
 *     assertion checks per-producer FIFO order;
 *   - no lost wakeup: a consumer asleep while a message is pending and every producer has
 *     finished would be a deadlock, which spin reports as an invalid end state.
 *
 * Mutations (`spin -DNAME`; //ipiq:park_kick_model_test requires spin to reject each):
 *   NO_RECHECK         the consumer parks right after prepare_park(), without re-checking the
 *                      mask: a kick that ran before the announcement is lost;
 *   CLEAR_AFTER_DRAIN  process_ipiq's clearing of a mask bit moved from before the drain to
 *                      after it (and after the refill check): a push during the drain leaves
 *                      a message behind a clear bit. (Clearing after the drain but before the
 *                      refill check is correct: the check then re-sets the bit.)
 */
#define NPROD 2
#define NMSG 3

byte ring[NPROD];      /* messages pushed and not yet taken (windex - rindex) */
byte sent[NPROD];      /* next sequence number each producer sends */
byte got[NPROD];       /* next sequence number the consumer expects from each */
bit mask[NPROD];       /* gd_ipimask bits */
bit parked;            /* parker state: 1 = kParked */
byte consumed;

proctype producer(byte id) {
  do
  :: sent[id] < NMSG ->
       atomic { sent[id]++; ring[id]++ }  /* push: slot, then windex (release) */
       mask[id] = 1;                     /* flag_ring: seq_cst fetch_or */
       if                                /* kick: fence; load state; swap if parked */
       :: parked == 1 -> atomic { if :: parked == 1 -> parked = 0 :: else -> skip fi }
       :: else -> skip
       fi
  :: else -> break
  od
}

proctype consumer() {
  byte s;
  bit any;
  do
  :: consumed == NPROD * NMSG -> break
  :: else ->
       /* process_ipiq: for each set bit, clear it, drain the ring, re-set if refilled */
       s = 0;
       any = 0;
       do
       :: s < NPROD ->
            if
            :: mask[s] == 1 ->
#ifndef CLEAR_AFTER_DRAIN
                 mask[s] = 0;            /* seq_cst fetch_and before draining */
#endif
                 do
                 :: ring[s] > 0 ->
                      atomic { ring[s]--; assert(got[s] < sent[s]); got[s]++; consumed++ };
                      any = 1
                 :: else -> break
                 od;
                 if :: ring[s] > 0 -> mask[s] = 1 :: else -> skip fi
#ifdef CLEAR_AFTER_DRAIN
                 ;
                 mask[s] = 0             /* the clear moved after the drain and refill check */
#endif
            :: else -> skip
            fi;
            s++
       :: else -> break
       od;
       if
       :: any == 1 -> skip               /* did work: poll again */
       :: else ->
            /* idle_loop: prepare_park (store; fence), re-check, then futex_wait */
            parked = 1;
#ifdef NO_RECHECK
            (parked == 0);               /* parks without looking at the mask again */
#else
            if
            :: mask[0] == 1 || mask[1] == 1 -> parked = 0      /* cancel_park */
            :: else ->
                 (parked == 0);          /* futex_wait(&parked, 1): sleeps while 1 */
            fi
#endif
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
