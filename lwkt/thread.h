// thread.h
//
// lwkt threads: user-level threads with their own stacks, each owned by one worker.
//
//   thread          DragonFly's `struct thread` (td): scheduling state, stack, name.
//   thread_options  how to create one: name, priority, worker, stack size, start held.
//   thread_ref      a counted reference (lwkt_hold/lwkt_rele) that keeps a thread object
//                   valid after its exit, and joins it.
//   create()        create a thread from inside the runtime (Runtime::create from outside).
//   exit_self()     terminate the calling thread (returning from its function does the same).
//
// Ownership. A thread is owned by its worker, `td_gd`, from birth. Only that worker changes
// its scheduling state (td_flags, run-queue links, td_pri), and only inside a critical
// section; any other OS thread asks the owner with a message (lwkt::schedule does this).
// Fields that foreign threads may touch are atomics and say so.
//
// Lifetime. A thread is alive from create until it exits. Its stack cannot be freed by the
// thread itself; the next thread to run on the same worker reaps it (returns stack and
// object to the worker's cache). The object survives its exit while references are held
// (thread_ref, hold()); exit does not wait for references (unlike DragonFly's td_refs,
// which exit waits on), it only delays freeing the object.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "ipiq/inbox.h"
#include "tokens/token.h"
#include "lwkt/priority.h"

namespace lwkt {

struct globaldata;
struct thread;

// td_flags: written only by the owning worker, inside a critical section.
inline constexpr std::uint32_t TDF_RUNNING = 0x0001;    // context live on the worker
inline constexpr std::uint32_t TDF_RUNQ = 0x0002;       // on the worker's run queue
inline constexpr std::uint32_t TDF_PREEMPT_LOCK = 0x0004;  // parked under a preemption chain
inline constexpr std::uint32_t TDF_PREEMPT_DONE = 0x0008;  // its preemptor switched back
inline constexpr std::uint32_t TDF_NOSTART = 0x0010;    // created held, never scheduled yet
inline constexpr std::uint32_t TDF_MIGRATING = 0x0020;  // moving between workers; not queued
inline constexpr std::uint32_t TDF_SINTR = 0x0040;      // interruptible sleep (PCATCH)
inline constexpr std::uint32_t TDF_TSLEEPQ = 0x0080;    // linked on a sleep queue
inline constexpr std::uint32_t TDF_TIMEOUT = 0x8000;    // the sleep's timer fired
inline constexpr std::uint32_t TDF_TSLEEP_DESCHEDULED = 0x20000;  // really asleep in tsleep
inline constexpr std::uint32_t TDF_IDLETHREAD = 0x0100; // the worker's idle thread
inline constexpr std::uint32_t TDF_PREEMPTABLE = 0x10000; // may preempt (DragonFly TDF_INTTHREAD)
inline constexpr std::uint32_t TDF_EXITING = 0x400000;  // in exit_self; must not be scheduled

// td_mpflags: may be set or cleared by any OS thread, always with atomic RMW.
inline constexpr std::uint32_t TDF_MP_WAKEPEND = 0x0001;  // td_schedmsg is in flight
inline constexpr std::uint32_t TDF_MP_EXITED = 0x0002;    // reaped; the object is a corpse
inline constexpr std::uint32_t TDF_MP_ABANDONED = 0x0004; // still blocked at shutdown
inline constexpr std::uint32_t TDF_MP_GIVEN = 0x0008;     // giveaway() done; acquire() may take it
inline constexpr std::uint32_t TDF_MP_INTR = 0x0010;      // lwkt::interrupt() pending
inline constexpr std::uint32_t TDF_MP_RESTART = 0x0020;   // ... and asks for ERESTART
inline constexpr std::uint32_t TDF_MP_SCHEDPEND = 0x0040; // scheduled while in transit

inline constexpr int kAnyWorker = -1;
inline constexpr int LWKT_MAXTOKENS = 32;  // token references per thread
inline constexpr std::size_t kMaxThreadName = 31;

struct thread_options {
  std::string name = "lwkt";          // at most kMaxThreadName bytes
  int pri = TDPRI_KERN_DAEMON;        // TDPRI_IDLE_WORK .. TDPRI_MAX
  int upri = 0;                       // tie-break among equal pri; larger runs first
  int worker = kAnyWorker;            // worker index; kAnyWorker: the caller's worker, or
                                      // round-robin when called from outside the runtime
  std::size_t stack_size = 0;         // 0: the runtime's default
  bool nostart = false;               // create held: runs only after lwkt::schedule()
  // Preemptable (DragonFly's interrupt-type threads, e.g. a completion handler): when made
  // runnable on its own worker from outside a critical section and it is better than the
  // running thread, it runs at once on top of it (lwkt_preempt); see sched.h.
  bool preemptable = false;
};

// Per-thread stack bounds; `map` includes the PROT_NONE guard page at the low end.
struct thread_stack {
  void* map = nullptr;
  std::size_t map_size = 0;
  char* lo = nullptr;    // lowest usable byte (just above the guard page)
  std::size_t size = 0;  // usable bytes; the stack grows down from lo + size
};

// The owning worker of a thread, published with release and read with acquire.
//
// Ownership handoff (migration): the *old* owner is the one that publishes the change, as
// its last act on the thread: setcpu_self's old worker stores the new owner before sending
// the adopt message; giveaway stores null ("in transit": no owner) and acquire stores the
// acquirer. A message handler that finds td_gd == itself therefore owns the thread's
// scheduling state (td_flags, links), and everything the previous owner wrote is visible to
// it (the acquire load pairs with the publishing release store). One that finds another
// worker forwards the request; one that finds null records it (see lwkt::schedule).
template <typename T>
class owner_ptr {
 public:
  owner_ptr(T* v = nullptr) : _p(v) {}  // NOLINT: implicit, reads like a plain pointer
  operator T*() const { return _p.load(std::memory_order_acquire); }
  T* operator->() const { return _p.load(std::memory_order_acquire); }
  owner_ptr& operator=(T* v) {
    _p.store(v, std::memory_order_release);
    return *this;
  }
  // seq_cst store: acquire() pairs it with its check of TDF_MP_SCHEDPEND (a Dekker pair
  // with a schedule() that found the thread in transit).
  void store_seq_cst(T* v) { _p.store(v, std::memory_order_seq_cst); }
  T* load_seq_cst() const { return _p.load(std::memory_order_seq_cst); }

 private:
  std::atomic<T*> _p;
};

// libstdc++/Itanium C++ ABI per-OS-thread exception state (__cxa_eh_globals: the stack of
// caught exceptions and the uncaught count). Each lwkt thread keeps its own copy, swapped
// into the worker OS thread's at every switch, so `throw;`, std::current_exception() and
// std::uncaught_exceptions() see the running lwkt thread's exceptions only.
struct eh_state {
  void* caught = nullptr;
  unsigned int uncaught = 0;
};

// An inbox message that names its thread (embedded in each thread for remote scheduling).
struct thread_msg : ipiq::inbox_msg {
  thread* td = nullptr;
};

struct thread {
  // --- Switch state; owner only.
  void* td_sp = nullptr;                 // saved stack pointer while switched out
  thread* td_rq_next = nullptr;          // run-queue links (gd_tdrunq)
  thread* td_rq_prev = nullptr;
  thread* td_rqg_next = nullptr;         // run-queue group links, valid on a group's tail
  thread* td_rqg_prev = nullptr;         //   (see internal/runq.h)
  thread* td_all_next = nullptr;         // all threads of the worker (gd_tdallq)
  thread* td_all_prev = nullptr;
  int td_pri = TDPRI_KERN_DAEMON;        // run-queue priority
  int td_upri = 0;                       // tie-break among equal td_pri
  int td_rq_upri = 0;                    // run-queue sort key: td_upri, or lower once rotated
  int td_critcount = 0;                  // critical-section nesting (carried across switches)
  std::uint32_t td_flags = 0;            // TDF_*; owner only
  std::uint64_t td_slice_start = 0;      // cheap-clock stamp of the last switch-in
  std::uint64_t td_switches = 0;         // times switched in
  // mi_switch accounting (owner only): run time in cheap-clock ticks, voluntary switches
  // (it blocked) and involuntary ones (rotated, yielded while runnable, or preempted).
  std::uint64_t td_runticks = 0;
  std::uint64_t td_nvcsw = 0;
  std::uint64_t td_nivcsw = 0;
  globaldata* td_migrate_gd = nullptr;   // target of a pending push migration
  // Token stack: [td_toks_array, td_toks_stop) are held or wanted. td_toks_have marks a
  // reference whose acquisition failed in gettoken (never acquired: not released either).
  tokens::tokref td_toks_array[LWKT_MAXTOKENS];
  tokens::tokref* td_toks_stop = td_toks_array;
  tokens::tokref* td_toks_have = nullptr;
  std::uint32_t td_contended = 0;        // failed reacquisitions since last run
  std::uint64_t td_contended_since = 0;  // cheap-clock stamp of the first of them
  const char* td_wmesg = nullptr;        // what the thread waits for (a token's name)
  // Sleep queue (tsleep): channel, links in the worker's bucket, timer slot.
  const void* td_wchan = nullptr;
  thread* td_sleep_next = nullptr;
  thread* td_sleep_prev = nullptr;
  std::uint64_t td_timeout_at = 0;       // cheap-clock deadline while a timer is armed
  int td_timer_index = -1;               // position in the worker's timer heap, -1: none
  int td_cscount = 0;                    // > 0 while mastering a cpusync
  thread* td_preempted = nullptr;        // on a preemptor: the thread it preempted
  eh_state td_eh;                        // C++ exception state while switched out
  // I/O operations (//io) this thread has in flight: its stack holds their records and
  // the kernel may write its buffers, so it cannot be given away meanwhile.
  std::uint32_t td_io_inflight = 0;

  // --- Read by every remote schedule, written rarely (giveaway, migration, exit): a line
  // of its own, so that it stays shared in every reader's cache. The owner's schedule
  // handler reads both fields; a remote schedule reads td_gd.
  // Owning worker (see owner_ptr): null while in transit between giveaway and acquire.
  // Read by anyone as a destination; a request sent to a stale owner chases the thread.
  alignas(128) owner_ptr<globaldata> td_gd;
  std::atomic<std::uint32_t> td_mpflags{0};  // TDF_MP_*; atomic RMW only

  // --- Written by the threads that schedule this one (a remote schedule bumps td_schedgen
  // and takes a hold), the owner only when a hold runs out or on a local schedule: the
  // owner's handler gives the senders' holds back in batches (gd_rele_td), so a stream of
  // schedules from one worker leaves this line in that worker's cache. 128 bytes from
  // td_gd's line: adjacent-line prefetch pairs lines.
  alignas(128) std::atomic<std::uint32_t> td_schedgen{0};
  // Bumped by every schedule request (schedule, wakeup_thread) before it acts or sends. A
  // deschedule sent to another worker carries the value it read and acts only if it is
  // unchanged: a schedule issued after it always wins, whatever channel (inbox or ring) or
  // chase either took. The owner bumps with load + store, others with fetch_add: a lost
  // increment still leaves the value changed (it only moves forward).
  std::atomic<std::int32_t> td_refs{0};      // holds on the object (1 while alive)
  // Joiners waiting for exit: a Treiber stack of join_node, or kJoinClosed after exit.
  std::atomic<std::uintptr_t> td_joinq{0};
  thread_msg td_schedmsg;                // the "schedule me" message (TDF_MP_WAKEPEND)

  // --- Entry point, stack, identity; set at creation.
  alignas(64) void (*td_func)(void*) = nullptr;

  void* td_arg = nullptr;
  absl::AnyInvocable<void()> td_callable;
  thread_stack td_stack;
  void* td_asan_fake_stack = nullptr;    // AddressSanitizer fiber bookkeeping
  void* td_tsan_fiber = nullptr;         // ThreadSanitizer fiber of this context
  char td_comm[kMaxThreadName + 1] = {};

  const char* name() const { return td_comm; }
};

// A counted reference to a thread object. Holding one keeps the object (not the thread)
// alive after exit; join() waits for the exit. Movable, not copyable (use hold() to share).
class thread_ref {
 public:
  thread_ref() = default;
  explicit thread_ref(thread* td);  // takes a new hold on td
  thread_ref(thread_ref&& o) noexcept : _td(o._td) { o._td = nullptr; }
  thread_ref& operator=(thread_ref&& o) noexcept;
  thread_ref(const thread_ref&) = delete;
  thread_ref& operator=(const thread_ref&) = delete;
  ~thread_ref() { reset(); }

  thread* get() const { return _td; }
  thread* operator->() const { return _td; }
  explicit operator bool() const { return _td != nullptr; }

  // Waits until the thread has exited and been reaped (its stack is back in the cache or
  // unmapped). From an lwkt thread it blocks only that thread; from
  // any other OS thread it sleeps in the kernel. Returns at once if the thread has exited.
  // Runs on: any OS thread. Requires: not the thread itself; not in a critical section.
  void join();
  // True once the thread has exited and been reaped (or was abandoned at shutdown).
  bool exited() const;
  // True if the runtime shut down while the thread was still blocked.
  bool abandoned() const;
  // Drops the reference.
  void reset();

 private:
  thread* _td = nullptr;
};

// Takes / drops a hold on td (DragonFly lwkt_hold/lwkt_rele). The caller of hold() must
// already know td's object is valid (it holds a reference, or td is itself).
// Runs on: any OS thread.
void hold(thread* td);
void rele(thread* td);

// Creates a thread running fn(arg) / fn(). From inside the runtime (an lwkt thread); the
// worker defaults to the caller's. Errors: InvalidArgument (bad option, naming it),
// ResourceExhausted (no memory for a stack), FailedPrecondition (not on an lwkt thread, or
// the runtime is shutting down).
// Runs on: an lwkt thread; need not be in a critical section.
[[nodiscard]] absl::StatusOr<thread_ref> create(void (*fn)(void*), void* arg,
                                                const thread_options& opts = {});
[[nodiscard]] absl::StatusOr<thread_ref> create(absl::AnyInvocable<void()> fn,
                                                const thread_options& opts = {});

// Terminates the calling thread (DragonFly lwkt_exit). Does not return.
// Runs on: an lwkt thread, outside any critical section.
[[noreturn]] void exit_self();

}  // namespace lwkt
