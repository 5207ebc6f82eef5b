// Thread lifecycle: create, bootstrap, exit, reap, the free-thread cache, hold/rele, join
// (DragonFly lwkt_thread.c: lwkt_alloc_thread, lwkt_create, lwkt_exit, lwkt_free_thread).
#include "lwkt/thread.h"

#include <cstdio>
#include <cxxabi.h>

#include <cstring>
#include <exception>
#include <new>
#include <typeinfo>

#include "absl/strings/str_format.h"
#include "lwkt/internal/completion.h"
#include "lwkt/internal/context.h"
#include "lwkt/internal/runtime_state.h"
#include "lwkt/internal/sanitizers.h"
#include "lwkt/internal/sched_internal.h"
#include "lwkt/internal/stack.h"
#include "lwkt/internal/trace.h"
#include "lwkt/sched.h"

namespace lwkt {
namespace internal {

// A joiner's node on td_joinq; lives on the joiner's stack.
struct join_node {
  join_node* next = nullptr;
  completion done;
};
inline constexpr std::uintptr_t kJoinClosed = 1;

namespace {

// Returns a stack to the worker's stack cache, or unmaps it.
void release_stack(globaldata* gd, thread_stack& st) {
  if (st.size == gd->gd_default_stack && gd->gd_freestacks.size() < gd->gd_cache_max) {
    gd->gd_freestacks.push_back(st);
    st = thread_stack{};
  } else {
    unmap_stack(st);
    gd->gd_stats.stacks_unmapped.add();
  }
}

// Returns a thread object with a stack of `size` bytes: from the free-thread cache when the
// size is the default, else a new object and a cached or fresh stack. ResourceExhausted
// when the stack cannot be mapped or the object allocated (never throws).
absl::StatusOr<thread*> alloc_thread(globaldata* gd, std::size_t size) {
  if (size == gd->gd_default_stack && gd->gd_freetd) {
    thread* td = gd->gd_freetd;
    gd->gd_freetd = td->td_all_next;
    --gd->gd_freetd_count;
    gd->gd_stats.cache_hits.add();
    return td;
  }
  thread_stack st;
  if (size == gd->gd_default_stack && !gd->gd_freestacks.empty()) {
    st = gd->gd_freestacks.back();
    gd->gd_freestacks.pop_back();
    gd->gd_stats.cache_hits.add();
  } else {
    const std::size_t guard =
        gd->gd_runtime ? gd->gd_runtime->opts.guard_size : Runtime::kDefaultGuardSize;
    absl::StatusOr<thread_stack> m = map_stack(size, guard);
    if (!m.ok()) return m.status();
    st = *m;
    gd->gd_stats.stacks_mapped.add();
  }
  namespace fi = fault_injection;
  thread* td = fi::should_fail(fi::point::thread_alloc) ? nullptr : new (std::nothrow) thread;
  if (!td) {
    release_stack(gd, st);
    return absl::ResourceExhaustedError(absl::StrFormat(
        "allocation of a %u-byte lwkt thread object failed", sizeof(thread)));
  }
  td->td_stack = st;
  return td;
}

}  // namespace

void link_allq(globaldata* gd, thread* td) {
  td->td_all_prev = nullptr;
  td->td_all_next = gd->gd_tdallq;
  if (gd->gd_tdallq) gd->gd_tdallq->td_all_prev = td;
  gd->gd_tdallq = td;
}

void unlink_allq(globaldata* gd, thread* td) {
  if (td->td_all_prev) {
    td->td_all_prev->td_all_next = td->td_all_next;
  } else {
    gd->gd_tdallq = td->td_all_next;
  }
  if (td->td_all_next) td->td_all_next->td_all_prev = td->td_all_prev;
  td->td_all_next = td->td_all_prev = nullptr;
}

namespace {

// Wakes every joiner and closes the queue so later joiners return at once.
void close_joinq(thread* td, bool abandoned) {
  // acq_rel: acquires the joiners' nodes (their release CAS); releases everything the
  // thread did to joiners that read kJoinClosed with acquire.
  std::uintptr_t head = td->td_joinq.exchange(kJoinClosed, std::memory_order_acq_rel);
  for (auto* n = reinterpret_cast<join_node*>(head); n;) {
    join_node* next = n->next;  // n may vanish once signalled
    if (abandoned) {
      n->done.signal_abandoned();
    } else if (!n->done.done()) {  // local joiners were released by exit_self already
      n->done.signal();
    }
    n = next;
  }
}

// At exit, before the final switch: joiners blocked on this same worker are made runnable
// now, so the exiting thread switches straight to one (no trip through the idle thread).
// They still return only after the reap: it runs in switch_return, before the next thread's
// own code continues. Other joiners are released by the reap.
void release_local_joiners(globaldata* gd, thread* td) {
  // acquire: pairs with the joiners' release CAS; their nodes' fields are visible.
  std::uintptr_t head = td->td_joinq.load(std::memory_order_acquire);
  if (head == kJoinClosed) return;
  for (auto* n = reinterpret_cast<join_node*>(head); n; n = n->next) {
    n->done.signal_if_local_waiter(gd);
  }
}

}  // namespace

absl::StatusOr<thread_ref> create_local(globaldata* gd, void (*fn)(void*), void* arg,
                                        absl::AnyInvocable<void()> callable,
                                        const thread_options& opts) {
  const std::size_t size =
      opts.stack_size ? round_to_pages(opts.stack_size) : gd->gd_default_stack;
  absl::StatusOr<thread*> a = alloc_thread(gd, size);
  if (!a.ok()) return a.status();
  thread* td = *a;
  // A reused stack keeps the ASan redzones of the frames its last thread never unwound:
  // clear them before anything (the first-run frame included) is written to it.
  asan_unpoison_stack(td->td_stack.lo, td->td_stack.size);
  if (gd->gd_stack_watermark) stack_fill(td->td_stack);  // before the first frame
  td->td_sp = make_initial_frame(td->td_stack.lo + td->td_stack.size, td);
  td->td_gd = gd;
  td->td_rq_next = td->td_rq_prev = nullptr;
  td->td_pri = opts.pri;
  td->td_upri = opts.upri;
  td->td_critcount = 1;  // born inside a critical section; the bootstrap leaves it
  td->td_flags = 0;
  td->td_slice_start = 0;
  td->td_switches = 0;
  td->td_runticks = 0;
  td->td_nvcsw = 0;
  td->td_nivcsw = 0;
  td->td_mpflags.store(0, std::memory_order_relaxed);
  td->td_refs.store(1, std::memory_order_relaxed);  // the "alive" reference, dropped by reap
  td->td_joinq.store(0, std::memory_order_relaxed);
  td->td_toks_stop = td->td_toks_array;
  td->td_toks_have = nullptr;
  td->td_contended = 0;
  td->td_contended_since = 0;
  td->td_wmesg = nullptr;
  td->td_migrate_gd = nullptr;
  td->td_cscount = 0;
  td->td_io_inflight = 0;
  td->td_preempted = nullptr;
  td->td_eh = eh_state{};
  td->td_wchan = nullptr;
  td->td_sleep_next = td->td_sleep_prev = nullptr;
  td->td_timer_index = -1;
  td->td_func = fn;
  td->td_arg = arg;
  td->td_callable = std::move(callable);
  td->td_asan_fake_stack = nullptr;
  std::memset(td->td_comm, 0, sizeof td->td_comm);
  std::memcpy(td->td_comm, opts.name.data(), opts.name.size());
  td->td_tsan_fiber = tsan_create_fiber();
  tsan_set_fiber_name(td->td_tsan_fiber, td->td_comm);
  link_allq(gd, td);
  trace(gd, trace_type::kCreate, td, td->td_pri, 0, td->td_comm);
  gd->gd_stats.threads_created.add();
  gd->gd_stats.live_threads.store(gd->gd_stats.live_threads.load(std::memory_order_relaxed) + 1,
                                  std::memory_order_relaxed);
  thread_ref ref(td);
  if (opts.preemptable) td->td_flags |= TDF_PREEMPTABLE;
  if (opts.nostart) {
    td->td_flags |= TDF_NOSTART;
  } else {
    // gd is the calling worker: the same rule as lwkt::schedule, so a better preemptable
    // thread created from outside a critical section runs at once (lwkt_preempt).
    schedule(td);
  }
  return ref;
}

void free_thread_object(thread* td) {
  // On the owning worker the object goes back to the free-thread cache with a cached stack
  // (the common case: a joiner on the same worker drops its reference last).
  globaldata* gd = mycpu();
  if (gd && gd == td->td_gd && gd->gd_freetd_count < gd->gd_cache_max &&
      !gd->gd_freestacks.empty()) {
    td->td_stack = gd->gd_freestacks.back();
    gd->gd_freestacks.pop_back();
    td->td_all_next = gd->gd_freetd;
    gd->gd_freetd = td;
    ++gd->gd_freetd_count;
    return;
  }
  delete td;
}

void reap(globaldata* gd, thread* td) {
  flush_deferred_rele(gd, td);  // td_refs must be exact for the check below
  tsan_destroy_fiber(td->td_tsan_fiber);
  td->td_tsan_fiber = nullptr;
  gd->gd_stats.threads_reaped.add();
  gd->gd_stats.live_threads.store(gd->gd_stats.live_threads.load(std::memory_order_relaxed) - 1,
                                  std::memory_order_relaxed);
  td->td_mpflags.fetch_or(TDF_MP_EXITED, std::memory_order_release);
  // Joiners learn of the exit only now, so a joined thread's stack is already reclaimed.
  close_joinq(td, /*abandoned=*/false);
  // Only the alive reference left: nobody else can take a new one, so the object and its
  // stack go to the free-thread cache together.
  if (td->td_refs.load(std::memory_order_acquire) == 1 &&
      td->td_stack.size == gd->gd_default_stack && gd->gd_freetd_count < gd->gd_cache_max) {
    td->td_refs.store(0, std::memory_order_relaxed);
    td->td_all_next = gd->gd_freetd;
    gd->gd_freetd = td;
    ++gd->gd_freetd_count;
    return;
  }
  release_stack(gd, td->td_stack);
  rele(td);
}

// Shutdown: td never exits. Its joiners are released and its stack freed without unwinding.
void abandon_thread(thread* td, bool second_pass, bool unmap) {
  if (!second_pass) {
    // Flags first: a joiner released by close_joinq must see abandoned() with exited().
    td->td_mpflags.fetch_or(TDF_MP_EXITED | TDF_MP_ABANDONED, std::memory_order_release);
    close_joinq(td, /*abandoned=*/true);
    return;
  }
  td->td_callable = nullptr;
  tsan_destroy_fiber(td->td_tsan_fiber);
  td->td_tsan_fiber = nullptr;
  if (unmap) {
    unmap_stack(td->td_stack);
  } else {
    td->td_stack = thread_stack{};  // left mapped: the kernel may still write into it
  }
  rele(td);
}

absl::StatusOr<thread_ref> create_on(runtime_state* rs, void (*fn)(void*), void* arg,
                                     absl::AnyInvocable<void()> callable,
                                     const thread_options& opts) {
  if (absl::Status s = validate_thread_options(rs, opts); !s.ok()) return s;
  if (rs->stopping.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError("lwkt runtime is shutting down: no new threads");
  }
  globaldata* me = mycpu();
  globaldata* gd;
  if (opts.worker != kAnyWorker) {
    gd = rs->gds[static_cast<std::size_t>(opts.worker)];
  } else if (me && me->gd_runtime == rs) {
    gd = me;
  } else {
    gd = rs->gds[rs->rotor.fetch_add(1, std::memory_order_relaxed) % rs->gds.size()];
  }
  if (gd == me) return create_local(gd, fn, arg, std::move(callable), opts);

  // The new thread is owned by its worker from birth: ask that worker to create it (an
  // IPI from a worker; through the inbox from any other OS thread).
  struct create_request {
    runtime_state* rs;
    void (*fn)(void*);
    void* arg;
    absl::AnyInvocable<void()> callable;
    const thread_options* opts;
    absl::StatusOr<thread_ref> result;
    completion done;
  } req{rs, fn, arg, std::move(callable), &opts, absl::UnknownError("unset"), {}};
  auto handler = [](void* a, std::intptr_t, void*, void* ctx) {
    auto* r = static_cast<create_request*>(a);
    auto* target = static_cast<globaldata*>(ctx);
    if (r->rs->stopping.load(std::memory_order_acquire)) {
      r->result = absl::FailedPreconditionError("lwkt runtime is shutting down: no new threads");
    } else {
      r->result = create_local(target, r->fn, r->arg, std::move(r->callable), *r->opts);
    }
    r->done.signal();
  };
  send_ipi(gd, handler, &req, 0, nullptr, false);
  req.done.wait();
  return std::move(req.result);
}

}  // namespace internal

using internal::mycpu;

// First code of every new thread, entered from lwkt_cpu_trampoline.
extern "C" [[noreturn]] void lwkt_thread_bootstrap(thread* prev, thread* td) {
  internal::asan_finish_switch(nullptr);
  internal::switch_return(td->td_gd, prev);
  crit_exit();  // leave the critical section the thread was born in
  try {
    if (td->td_func) {
      td->td_func(td->td_arg);
    } else {
      td->td_callable();
    }
  } catch (const std::exception& e) {
    int rc = 0;
    char* type = abi::__cxa_demangle(typeid(e).name(), nullptr, nullptr, &rc);  // leaks: aborting
    internal::panic(td, "exception escaped the thread function: %s: %s",
                    rc == 0 && type ? type : typeid(e).name(), e.what());
  } catch (...) {
    internal::panic(td, "exception of a type not derived from std::exception escaped the "
                        "thread function");
  }
  exit_self();
}

void exit_self() {
  globaldata* gd = mycpu();
  LWKT_ASSERT(gd != nullptr, nullptr, "lwkt::exit_self from an OS thread that is not a worker");
  thread* td = gd->gd_curthread;
  LWKT_ASSERT(!(td->td_flags & TDF_IDLETHREAD), td, "the idle thread cannot exit");
  LWKT_ASSERT(td->td_critcount == 0, td, "exit inside a critical section (td_critcount=%d)",
              td->td_critcount);
  td->td_callable = nullptr;  // destroy captured state while the thread can still block
  LWKT_ASSERT(td->td_io_inflight == 0, td,
              "exit while owning %u I/O object(s) (an io::listener or io::pooled_receiver "
              "must be destroyed by the thread that created it, before it exits)",
              td->td_io_inflight);
  if (gd->gd_stack_watermark) {
    const std::size_t used = internal::stack_used(td->td_stack);
    if (used * 5 > td->td_stack.size * 4) {
      std::fprintf(stderr,
                   "lwkt: thread '%s' (worker %d) exits having used %zu of its %zu stack bytes "
                   "(%.0f%%): raise thread_options::stack_size or Options::stack_size\n",
                   td->td_comm, gd->gd_cpuid, used, td->td_stack.size,
                   100.0 * static_cast<double>(used) / static_cast<double>(td->td_stack.size));
    }
  }
  ++td->td_critcount;
  internal::sleep_exit_cleanup(gd, td);  // a leftover tsleep_interlock
  td->td_flags |= TDF_EXITING;
  internal::trace(gd, internal::trace_type::kExit, td, 0, 0, td->td_comm);
  internal::dequeue(gd, td);
  internal::unlink_allq(gd, td);
  internal::release_local_joiners(gd, td);
  lwkt_switch();
  internal::panic(td, "exited thread was switched back in");
}

void hold(thread* td) { td->td_refs.fetch_add(1, std::memory_order_relaxed); }

namespace {

void rele_n(thread* td, std::int32_t n) {
  // acq_rel: the last releaser must see every other holder's accesses before freeing.
  std::int32_t old = td->td_refs.fetch_sub(n, std::memory_order_acq_rel);
  LWKT_ASSERT(old >= n, td, "lwkt::rele without a hold (td_refs=%d, releasing %d)", old, n);
  // Zero only after reap dropped the alive reference and detached the stack.
  if (old == n) internal::free_thread_object(td);
}

}  // namespace

void rele(thread* td) { rele_n(td, 1); }

namespace internal {

// A deferred hold only lives longer than it would have: the object stays valid, and td_refs
// is exact wherever a decision reads it (reap, giveaway and migration flush td's entry
// first). The handler's accesses to td precede the later fetch_sub in program order, so the
// acq_rel argument of rele_n is unchanged.
void rele_deferred(globaldata* gd, thread* td) {
  constexpr std::int32_t kMaxDeferred = 1 << 20;
  if (gd->gd_rele_td == td && gd->gd_rele_count < kMaxDeferred) {
    ++gd->gd_rele_count;
    return;
  }
  flush_deferred_rele(gd);
  gd->gd_rele_td = td;
  gd->gd_rele_count = 1;
}

void flush_deferred_rele(globaldata* gd) {
  thread* td = gd->gd_rele_td;
  if (!td) return;
  const std::int32_t n = gd->gd_rele_count;
  gd->gd_rele_td = nullptr;
  gd->gd_rele_count = 0;
  rele_n(td, n);
}

}  // namespace internal

thread_ref::thread_ref(thread* td) : _td(td) {
  if (td) hold(td);
}

thread_ref& thread_ref::operator=(thread_ref&& o) noexcept {
  if (this != &o) {
    reset();
    _td = o._td;
    o._td = nullptr;
  }
  return *this;
}

void thread_ref::reset() {
  if (_td) rele(_td);
  _td = nullptr;
}

bool thread_ref::exited() const {
  return _td->td_joinq.load(std::memory_order_acquire) == internal::kJoinClosed;
}

bool thread_ref::abandoned() const {
  return _td->td_mpflags.load(std::memory_order_acquire) & TDF_MP_ABANDONED;
}

void thread_ref::join() {
  LWKT_ASSERT(_td != nullptr, nullptr, "thread_ref::join of an empty thread_ref");
  thread* self = curthread();
  LWKT_ASSERT(self != _td, _td, "a thread cannot join itself");
  LWKT_ASSERT(!self || self->td_critcount == 0, self,
              "join inside a critical section (td_critcount=%d)", self ? self->td_critcount : 0);
  // A live thread of a runtime inherited across fork never exits here (runtime_state.h).
  if (!self && _td->td_joinq.load(std::memory_order_acquire) != internal::kJoinClosed) {
    globaldata* owner = _td->td_gd;
    if (owner) internal::check_not_forked(owner->gd_runtime, "thread_ref::join");
  }
  internal::join_node node;
  std::uintptr_t head = _td->td_joinq.load(std::memory_order_acquire);
  do {
    if (head == internal::kJoinClosed) return;
    node.next = reinterpret_cast<internal::join_node*>(head);
    // release: publishes node to close_joinq(); acquire on failure re-reads a closed queue.
  } while (!_td->td_joinq.compare_exchange_weak(head, reinterpret_cast<std::uintptr_t>(&node),
                                                std::memory_order_release,
                                                std::memory_order_acquire));
  node.done.wait();
}

absl::StatusOr<thread_ref> create(void (*fn)(void*), void* arg, const thread_options& opts) {
  globaldata* gd = mycpu();
  if (!gd) return absl::FailedPreconditionError("lwkt::create called outside the runtime; use Runtime::spawn");
  return internal::create_on(gd->gd_runtime, fn, arg, nullptr, opts);
}

absl::StatusOr<thread_ref> create(absl::AnyInvocable<void()> fn, const thread_options& opts) {
  globaldata* gd = mycpu();
  if (!gd) return absl::FailedPreconditionError("lwkt::create called outside the runtime; use Runtime::spawn");
  if (!fn) return absl::InvalidArgumentError("lwkt::create: empty function");
  return internal::create_on(gd->gd_runtime, nullptr, nullptr, std::move(fn), opts);
}

}  // namespace lwkt
