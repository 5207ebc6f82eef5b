/*
 * park_in_ring.pml: a worker parked in its io_uring (io/internal/uring.cc `wait`, lwkt's
 * idle_loop), woken by kicks (ipiq::parker::kick writing the parker's eventfd, which the
 * worker keeps a read of armed in its ring) and by the completion of its own I/O operation.
 * Checked exhaustively by spin (//io:park_in_ring_model_test).
 *
 * Actors:
 *   producer(id)  NMSG times: push a message (the ring/inbox, abstracted to a counter and a
 *                 flag, as in ipiq/model/park_kick.pml), fence, then kick: if the parker
 *                 state is parked, swap it to running and wake it: write the eventfd
 *                 (count++), or, when the producer is a worker with a ring of its own, post
 *                 a CQE straight into the consumer's ring (IORING_OP_MSG_RING); either.
 *   kernel        the parts of io_uring the protocol relies on: an armed read of the eventfd
 *                 completes as soon as the count is non-zero (count = 0, one CQE); a
 *                 submitted I/O operation completes at some point (one CQE).
 *   consumer      the idle loop: drain messages; if none, prepare_park (state = parked,
 *                 fence), re-check; then one io_uring_enter that first submits what is
 *                 prepared (the re-armed read) and then sleeps until a CQE exists; then reap
 *                 every CQE: the kick's CQE re-arms the read (prepared, submitted by the next
 *                 enter), the operation's CQE ends its wait.
 * Promela interleaves atomically (sequential consistency); the C++ code gets the orderings
 * that matter from the parker's two seq_cst fences and the release store of the park
 * announcement (ipiq/parker.h). The kernel's own steps are atomic here as they are under the
 * ring's locks.
 *
 * Safety: no lost message, no lost wakeup (the consumer asleep in the ring while a message
 * or its operation's completion is pending, everyone else finished: an invalid end state).
 *
 * Mutations (each must be rejected by spin):
 *   NO_REARM         the kick's CQE is reaped but the eventfd read is not armed again: the
 *                    next kick writes a count nobody is waiting on.
 *   ENTER_NO_SUBMIT,BUSY_COUNTS_OPS_ONLY
 *                    the idle wait enters the ring without submitting what is prepared, and
 *                    the switch point's flush runs only while an operation is outstanding
 *                    (as if worker_io::busy did not count the prepared read): once the
 *                    operation is done, the re-armed read is never submitted. (Either
 *                    change alone is safe: the other submit covers it.)
 *   NO_RECHECK       the consumer sleeps right after announcing, without re-checking.
 *   MSG_LOST         the consumer's reaper drops a MSG_RING CQE without counting it as a
 *                    completion (its wait does not end on it).
 */
#define NPROD 2
#define NMSG 2

byte pending;        /* messages pushed and not yet consumed (all producers) */
bit flag;            /* "messages may be waiting" (gd_ipimask / RQF_IPIQ) */
byte consumed;
bit parked;          /* parker state: 1 = kParked */
byte count;          /* the eventfd counter */
bit read_armed;      /* the eventfd read is in the kernel */
bit read_prepared;   /* its SQE is prepared, not yet submitted */
byte cq;             /* CQEs in the completion queue: kicks and the operation */
bit kick_cqe;        /* one of them is the read's */
byte msg_cqe;        /* kicks posted by MSG_RING */
bit op_inflight;     /* the worker's I/O operation is submitted, not completed */
bit op_cqe;          /* its CQE is in the queue */
bit op_done;         /* reaped: its thread may run */
byte producers_done;

proctype producer() {
  byte n = 0;
  do
  :: n < NMSG ->
       atomic { pending++; flag = 1 };   /* push, then flag (seq_cst RMW) */
       n++;
       /* kick: fence; load state; if parked, swap to running and write the eventfd */
       if
       :: parked == 1 ->
            atomic {
              if
              :: parked == 1 -> parked = 0;
                   if
                   :: count++                       /* the eventfd */
#ifdef MSG_LOST
                   :: msg_cqe++                     /* MSG_RING: a CQE the wait misses */
#else
                   :: msg_cqe++; cq++               /* MSG_RING: a CQE in the ring */
#endif
                   fi
              :: else -> skip
              fi
            }
       :: else -> skip
       fi
  :: else -> break
  od;
  producers_done++
}

proctype kernel() {
  do
  /* the armed read completes once the count is non-zero */
  :: atomic { read_armed == 1 && count > 0 -> count = 0; read_armed = 0; kick_cqe = 1; cq++ }
  /* the operation completes */
  :: atomic { op_inflight == 1 -> op_inflight = 0; op_cqe = 1; cq++ }
  :: atomic { producers_done == NPROD && consumed == NPROD * NMSG && op_done == 1 -> break }
  od
}

inline reap() {
  atomic {
    if
    :: kick_cqe == 1 ->
         kick_cqe = 0; cq--;
#ifndef NO_REARM
         read_prepared = 1
#endif
    :: else -> skip
    fi;
    if
    :: op_cqe == 1 -> op_cqe = 0; cq--; op_done = 1
    :: else -> skip
    fi;
    if
#ifdef MSG_LOST
    :: msg_cqe > 0 -> msg_cqe--
#else
    :: msg_cqe > 0 -> msg_cqe--; cq--      /* nothing to do: it ended the wait */
#endif
    :: else -> skip
    fi
  }
}

inline submit() {
  atomic {
    if
    :: read_prepared == 1 -> read_prepared = 0; read_armed = 1
    :: else -> skip
    fi
  }
}

proctype consumer() {
  /* the first operation: creates the ring, arms the read, prepares the operation; the
     switch point that follows submits both */
  read_prepared = 1;
  atomic { submit(); op_inflight = 1 };
  do
  :: consumed == NPROD * NMSG && op_done == 1 -> break
  :: else ->
       if
       :: flag == 1 ->                          /* drain: clear the flag, then take all */
            flag = 0;
            atomic { consumed = consumed + pending; pending = 0 }
       :: else ->
            /* the switch point's flush: runs while worker_io::busy != 0 */
#ifdef BUSY_COUNTS_OPS_ONLY
            if
            :: op_inflight == 1 || op_cqe == 1 -> reap(); submit()
            :: else -> skip
            fi;
#else
            reap();
            submit();
#endif
            if
            :: consumed == NPROD * NMSG && op_done == 1 -> skip
            :: else ->
                 parked = 1;                    /* prepare_park: store; fence */
#ifdef NO_RECHECK
                 skip;
#else
                 if
                 :: flag == 1 -> parked = 0     /* cancel_park */
                 :: else ->
#endif
#ifndef ENTER_NO_SUBMIT
                      submit();                 /* io_uring_submit_and_wait: submit... */
#endif
                      (cq > 0);                 /* ...then sleep until a CQE */
                      reap();
                      parked = 0                /* park_with: back to running */
#ifndef NO_RECHECK
                 fi
#endif
            fi
       fi
  od;
  assert(consumed == NPROD * NMSG && pending == 0)
}

init {
  atomic {
    run producer();
    run producer();
    run kernel();
    run consumer()
  }
}
