/* thread_port_transit.pml: a thread port's owner that is given away and acquired while it
 * sleeps in waitport, with a sender on another worker (msgport/thread_port.cc, docs/msgport.md).
 *
 * One worker W owns the owner thread (td_gd = 1) or nobody does (td_gd = 0: in transit,
 * between giveaway and acquire). The owner's critical sections and W's message handlers are
 * atomic blocks (a handler never runs inside the owner's critical section: W is one OS
 * thread). Messages to W (ARRIVE: a message for the port; SCHED: lwkt::schedule's remote
 * request; WAKE: wakeup(port)'s remote request) travel one FIFO ring.
 *
 * The sender, for each message: reads td_gd; owner on W: ARRIVE to W (whose handler
 * re-checks td_gd and stashes if the owner left); in transit: push onto the stash, then
 * schedule (a Dekker pair with acquire: set SCHEDPEND, re-read td_gd, send SCHED if owned)
 * and wakeup(port).
 * The owner: waitport = one critical section (drain the stash; take a message, or set
 * mp_waiting, interlock, drain again, take or go to sleep); then tsleep (still interlocked:
 * sleep until runnable); then clear mp_waiting.
 * Giveaway (only while the owner sleeps) clears its sleep queue membership; acquire makes it
 * runnable only if a schedule arrived meanwhile (SCHEDPEND).
 *
 * Checked: the owner receives every message (no lost wakeup: a blocked owner with messages
 * for it is an invalid end state). Mutants: NO_ARRIVE_SCHEDULE (the arrival of a message on
 * W only wakes the port's channel: an owner given away asleep and acquired back is on no
 * sleep queue), NO_TRANSIT_SCHEDULE (a message stashed in transit does not schedule the
 * owner), NO_TRANSIT_WAKEUP (nor wakes the port's channel: the schedule can land between
 * the owner's interlock and its tsleep and be undone by tsleep's dequeue).
 */
#define N 2

mtype = { ARRIVE, SCHED, WAKE };
chan ipi = [6] of { mtype };

bit td_gd = 1;       /* 1: owned by W; 0: in transit */
byte stash = 0;      /* messages parked while in transit */
byte q = 0;          /* messages visible in the port's queue */
byte got = 0;
bit waiting = 0;     /* mp_waiting */
bit inq = 0;         /* the owner is on W's sleep queue for the port (interlocked or asleep) */
bit runnable = 1;    /* on W's run queue or running */
bit asleep = 0;      /* descheduled inside tsleep */
bit schedpend = 0;   /* TDF_MP_SCHEDPEND: a schedule made in transit */

inline wake_port() {  /* wakeup_mycpu(port) on W */
  if
  :: inq -> inq = 0; runnable = 1
  :: else -> skip
  fi
}

inline schedule_owner() {  /* lwkt::schedule(owner) from another worker */
  schedpend = 1;
  if
  :: td_gd == 1 -> ipi!SCHED
  :: else -> skip  /* acquire() will see SCHEDPEND */
  fi
}

active proctype handlers() {
  mtype m;
end:
  do
  :: ipi?m ->
     atomic {
       if
       :: m == ARRIVE ->
          if
          :: td_gd == 1 ->
             q++;
             if
             :: waiting ->
                wake_port();
#ifndef NO_ARRIVE_SCHEDULE
                runnable = 1;
#endif
             :: else -> skip
             fi
          :: else -> stash++; schedpend = 1  /* route() from a handler: stash, schedule */
          fi
       :: m == SCHED -> if :: td_gd == 1 -> runnable = 1; schedpend = 0 :: else -> schedpend = 1 fi
       :: m == WAKE -> wake_port()
       fi
     }
  od
}

active proctype sender() {
  byte i = 0;
  do
  :: i < N ->
     if
     :: td_gd == 1 -> ipi!ARRIVE
     :: else ->
        stash++;
#ifndef NO_TRANSIT_SCHEDULE
        schedule_owner();
#endif
#ifndef NO_TRANSIT_WAKEUP
        ipi!WAKE;
#endif
     fi;
     i++
  :: else -> break
  od
}

active proctype owner() {
  bit sleep_now;
  do
  :: got == N -> break
  :: else ->
     sleep_now = 0;
     atomic {  /* waitport's critical section */
       q = q + stash; stash = 0;
       if
       :: q > 0 -> q--; got++
       :: else ->
          waiting = 1; inq = 1;          /* tsleep_interlock(port) */
          q = q + stash; stash = 0;
          if
          :: q > 0 -> waiting = 0; q--; got++
          :: else -> sleep_now = 1
          fi
       fi
     }
     if
     :: sleep_now ->
        /* crit_exit: W's handlers may run here */
        atomic {  /* tsleep(PINTERLOCKED): still interlocked -> dequeue and switch */
          if
          :: inq -> asleep = 1; runnable = 0
          :: else -> skip
          fi
        }
        atomic { (runnable && td_gd == 1) -> asleep = 0; inq = 0; waiting = 0 }
     :: else -> skip
     fi
  od;
  assert(got == N && q == 0 && stash == 0)
}

/* giveaway (from W, while the owner is asleep: not running), then acquire (on W again). */
active proctype transit() {
end:
  atomic {
    asleep == 1 && td_gd == 1 ->
    td_gd = 0; inq = 0;                  /* sleep_exit_cleanup: per-worker sleep queues */
    if
    :: runnable -> runnable = 0; schedpend = 1
    :: else -> schedpend = 0
    fi
  }
  atomic {
    td_gd = 1;
    if
    :: schedpend -> runnable = 1; schedpend = 0
    :: else -> skip
    fi
  }
}
