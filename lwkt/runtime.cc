// lwkt::Runtime: options validation, placement with hwloc, worker start and shutdown.
#include "lwkt/runtime.h"

#include <pthread.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <condition_variable>
#include <cstdio>
#include <new>
#include <set>
#include <string>
#include <thread>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "lwkt/internal/clock.h"
#include "lwkt/internal/monitor.h"
#include "lwkt/internal/io_hook.h"
#include "lwkt/internal/runtime_state.h"
#include "lwkt/internal/sanitizers.h"
#include "lwkt/internal/sched_internal.h"
#include "lwkt/internal/stack.h"
#include "lwkt/internal/trace.h"
#include "lwkt/ipi.h"
#include "lwkt/sleep.h"
#include "lwkt/sched.h"

namespace lwkt {
namespace internal {

void init_idle_thread(globaldata* gd);                 // worker.cc
void abandon_thread(thread* td, bool second_pass, bool unmap = true);  // thread.cc

// ---- fork (runtime_state.h).
std::atomic<std::uint32_t> fork_generation{0};

void forked_child_abort(const char* call) {
  panic(nullptr,
        "%s called in a child forked from a process running an lwkt runtime; the runtime "
        "cannot be used after fork",
        call);
}

namespace {

// Runtimes whose destructor ran in a forked child: deliberately leaked (their workers do not
// exist here; joining or freeing would hang or touch state the workers own), but kept
// reachable so that LeakSanitizer does not report them at the child's exit.
std::atomic<runtime_state*> forked_runtimes{nullptr};

// Live runtimes, for lwkt::wakeup from an OS thread outside every runtime and for wakeups
// that cross runtimes. A runtime is listed from construction until its destructor, which
// unlists it (under the lock) after its shutdown and before freeing anything, so a waker
// holding the lock may use it. A runtime whose shutdown leaked stays listed for good (its
// state is never freed): the thread that never reached a switch point still runs, and its
// wakeups must reach the other runtimes (wakeup_other_runtimes trusts the count), and
// debuggers still find it. Being sealed, it takes nothing from outside. (The list itself:
// runtimes(), below.)
std::mutex g_runtimes_mu;

void register_fork_handler() {
  // g_runtimes_mu is held across the fork, so that the child does not inherit it locked by
  // a thread that does not exist there (workers take it for wakeups that cross runtimes).
  static const int rc = pthread_atfork([] { g_runtimes_mu.lock(); },
                                       [] { g_runtimes_mu.unlock(); }, [] {
    // The child: only the forking OS thread exists. Async-signal-safe: an atomic add, the
    // unlock of the mutex this thread took in the prepare handler, and the monitor's
    // process-wide signal state reset (monitor.cc).
    g_runtimes_mu.unlock();
    fork_generation.fetch_add(1, std::memory_order_relaxed);
    monitor_atfork_child();
  });
  (void)rc;
}

}  // namespace

absl::Status validate_thread_options(const runtime_state* rs, const thread_options& o) {
  if (o.name.size() > kMaxThreadName) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "thread_options.name \"%s\" is %u bytes; the limit is %u", o.name, o.name.size(),
        kMaxThreadName));
  }
  if (o.pri < TDPRI_IDLE_WORK || o.pri > TDPRI_MAX) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "thread_options.pri %d is outside [%d, %d] (%d is reserved for the idle thread)", o.pri,
        TDPRI_IDLE_WORK, TDPRI_MAX, TDPRI_IDLE_THREAD));
  }
  if (o.worker != kAnyWorker && (o.worker < 0 || o.worker >= static_cast<int>(rs->gds.size()))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "thread_options.worker %d is not a worker (the runtime has workers 0-%d)", o.worker,
        static_cast<int>(rs->gds.size()) - 1));
  }
  if (o.stack_size != 0 &&
      (o.stack_size < Runtime::kMinStackSize || o.stack_size > Runtime::kMaxStackSize)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "thread_options.stack_size %u is outside [%u, %u]", o.stack_size,
        Runtime::kMinStackSize, Runtime::kMaxStackSize));
  }
  return absl::OkStatus();
}

namespace {

absl::Status validate_options(const Runtime::Options& o) {
  if (o.workers != Runtime::kAutoWorkers && (o.workers < 1 || o.workers > kMaxWorkers)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Runtime::Options.workers is %d; it must be in [1, %d] or kAutoWorkers", o.workers,
        kMaxWorkers));
  }
  if (o.stack_size < Runtime::kMinStackSize || o.stack_size > Runtime::kMaxStackSize) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Runtime::Options.stack_size %u is outside [%u, %u]", o.stack_size,
                        Runtime::kMinStackSize, Runtime::kMaxStackSize));
  }
  // Rounded up to whole pages; at least one page, at most kMaxGuardSize.
  if (o.guard_size == 0 || o.guard_size > Runtime::kMaxGuardSize ||
      round_to_pages(o.guard_size) > Runtime::kMaxGuardSize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Runtime::Options.guard_size %u is outside [1, %u] (it is rounded up to a multiple "
        "of the %u-byte page; at least one page)",
        o.guard_size, Runtime::kMaxGuardSize, page_size()));
  }
  if (o.thread_cache > (1u << 20)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Runtime::Options.thread_cache %u exceeds %u", o.thread_cache, 1u << 20));
  }
  if (o.idle_spin < absl::ZeroDuration() || o.idle_spin > absl::Seconds(1)) {
    return absl::InvalidArgumentError(absl::StrCat("Runtime::Options.idle_spin ",
                                                   absl::FormatDuration(o.idle_spin),
                                                   " is outside [0, 1s]"));
  }
  if (!(o.idle_cpu_budget >= 0 && o.idle_cpu_budget <= 1)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Runtime::Options.idle_cpu_budget %g is outside [0, 1] (a fraction of one CPU)",
        o.idle_cpu_budget));
  }
  if (o.token_warn < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Runtime::Options.token_warn ", absl::FormatDuration(o.token_warn), " is negative"));
  }
  if (o.stall_budget < absl::ZeroDuration() ||
      (o.stall_budget > absl::ZeroDuration() && o.stall_budget < absl::Milliseconds(1))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Runtime::Options.stall_budget ", absl::FormatDuration(o.stall_budget),
        " must be zero (off) or at least 1ms"));
  }
  for (const auto& [field, sig] : {std::pair<const char*, int>{"stall_signal", o.stall_signal},
                                   {"ps_signal", o.ps_signal}}) {
    // The runtime's own (SIGSEGV: stack guard) and the fatal, synchronous or unblockable
    // ones cannot be taken over.
    if (sig == 0) continue;
    if (sig < 1 || sig > SIGRTMAX || sig == SIGKILL || sig == SIGSTOP || sig == SIGSEGV ||
        sig == SIGBUS || sig == SIGILL || sig == SIGFPE || sig == SIGABRT || sig == SIGTRAP) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "Runtime::Options.%s is %d; it must be 0 or a signal the runtime may take over "
          "(not SIGKILL, SIGSTOP, SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP)",
          field, sig));
    }
  }
  if (o.ps_signal != 0 && o.ps_signal == o.stall_signal && o.stall_budget > absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Runtime::Options.ps_signal and stall_signal are both %d; they must differ",
        o.ps_signal));
  }
  if (o.trace_events > Runtime::kMaxTraceEvents) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Runtime::Options.trace_events %u exceeds %u", o.trace_events, Runtime::kMaxTraceEvents));
  }
  if (!o.trace_path.empty() && o.trace_events == 0) {
    return absl::InvalidArgumentError(
        "Runtime::Options.trace_path is set but trace_events is 0 (tracing is off)");
  }
  if (o.rr_slice < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Runtime::Options.rr_slice ", absl::FormatDuration(o.rr_slice), " is negative"));
  }
  return absl::OkStatus();
}

std::int64_t live_threads(const runtime_state* rs) {
  std::int64_t n = 0;
  for (globaldata* gd : rs->gds) n += gd->gd_stats.live_threads.load(std::memory_order_relaxed);
  return n;
}

}  // namespace

void free_rings(runtime_state* rs) {
  if (!rs->rings) return;
  const std::size_t npairs = rs->gds.size() * rs->gds.size();
  for (std::size_t i = 0; i < npairs; ++i) {
    ipiq::ring* r = rs->rings[i].exchange(nullptr, std::memory_order_acquire);
    if (r == nullptr) continue;
    r->~ring();
    if (rs->ring_on_node[i]) {
      lsan_unregister_root(r, sizeof(ipiq::ring));
      rs->topo->free_on_node(r, sizeof(ipiq::ring));
    } else {
      ::operator delete(r, std::align_val_t{alignof(ipiq::ring)});
    }
  }
}

namespace {

void destroy_globaldata(runtime_state* rs, std::size_t i) {
  globaldata* gd = rs->gds[i];
  delete gd->gd_trace;
  gd->gd_trace = nullptr;
  while (thread* td = gd->gd_freetd) {
    gd->gd_freetd = td->td_all_next;
    unmap_stack(td->td_stack);
    delete td;
  }
  for (thread_stack& st : gd->gd_freestacks) unmap_stack(st);
  gd->~globaldata();
  if (rs->gd_on_node[i]) {
    internal::lsan_unregister_root(gd, sizeof(globaldata));
    rs->topo->free_on_node(gd, sizeof(globaldata));
  } else {
    ::operator delete(gd, std::align_val_t{alignof(globaldata)});
  }
}

}  // namespace
}  // namespace internal

using internal::runtime_state;

namespace internal {
namespace {
std::vector<runtime_state*>& runtimes() {
  static auto* v = g_debug_runtimes = new std::vector<runtime_state*>;
  return *v;
}
}  // namespace

// gdb auto-loading (docs/debugging.md): a program linking lwkt names its gdb commands in
// .debug_gdb_scripts; gdb loads tools/gdb/lwkt.py from its auto-load scripts-directory
// (add-auto-load-scripts-directory <lwkt checkout>) when that is a safe path.
asm(".pushsection \".debug_gdb_scripts\", \"MS\", %progbits, 1\n"
    ".byte 1\n"
    ".asciz \"tools/gdb/lwkt.py\"\n"
    ".popsection\n");

// Named for debuggers (tools/gdb/lwkt.py walks it); the same list as runtimes().
std::vector<runtime_state*>* g_debug_runtimes = nullptr;

void wakeup_from_outside(runtime_state* rs, const void* ident, int flags) {
  // First: a sealed runtime (the inert stand-in of a leaked one included, which has no
  // sleep masks) takes nothing.
  api_guard g(rs, api_class::kExistingWork);  // through the grace period: sleepers may finish
  if (!g.ok() || !rs->slpque_cpumasks) return;
  // Only the workers that have a sleeper in ident's hash slot get the request (one message
  // each, which scans that slot): a wakeup with no sleeper in rs, the usual case of one
  // that crosses runtimes, posts nothing. The fence orders the caller's change of its
  // condition before the masks' loads (store-load, see sleeper_workers).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  for (int w = 0; w < kMaskWords; ++w) {
    for (std::uint64_t bits = sleeper_workers(rs, ident, w); bits; bits &= bits - 1) {
      const std::size_t cpu = static_cast<std::size_t>(w * 64 + __builtin_ctzll(bits));
      send_ipi(rs->gds[cpu], ipi_wakeup, const_cast<void*>(ident), flags, nullptr, false);
    }
  }
}

// How many runtimes are on runtimes() (written under g_runtimes_mu). A runtime is listed
// before any of its threads exists, so before any of them can sleep.
std::atomic<int> g_runtime_count{0};

void wakeup_other_runtimes(const runtime_state* mine, const void* ident, int flags) {
  // ordering: called only after do_wakeup's seq_cst fence (a dmb ish on AArch64), which
  // orders the waker's change of its condition before this load (store-load). A sleeper of
  // another runtime interlocks (a seq_cst RMW of its runtime's sleep mask) and only then
  // reads the condition; its runtime was counted before its threads existed (thread
  // creation orders the count's store before the interlock). So, as for do_wakeup's own
  // read of the mask: either the sleeper reads the new condition, or this load comes after
  // its interlock in the fences' order and sees the count that includes its runtime.
  if (g_runtime_count.load(std::memory_order_relaxed) <= 1) return;
  std::lock_guard<std::mutex> l(g_runtimes_mu);  // never held across a wait for a worker
  for (runtime_state* rs : runtimes()) {
    if (rs != mine && !inherited_across_fork(rs)) wakeup_from_outside(rs, ident, flags);
  }
}

void unlist_runtime(const runtime_state* rs) {
  std::lock_guard<std::mutex> l(g_runtimes_mu);
  auto& v = runtimes();
  v.erase(std::remove(v.begin(), v.end(), rs), v.end());
  g_runtime_count.store(static_cast<int>(v.size()), std::memory_order_relaxed);
}

void wakeup_from_outside_all(const void* ident, int flags) {
  std::lock_guard<std::mutex> l(g_runtimes_mu);
  for (runtime_state* rs : runtimes()) {
    if (!inherited_across_fork(rs)) wakeup_from_outside(rs, ident, flags);
  }
}
}  // namespace internal

Runtime::Runtime(std::unique_ptr<runtime_state> s) : _s(std::move(s)) {
  std::lock_guard<std::mutex> l(internal::g_runtimes_mu);
  internal::runtimes().push_back(_s.get());
  internal::g_runtime_count.store(static_cast<int>(internal::runtimes().size()),
                                  std::memory_order_relaxed);
}

namespace internal {
// Runtime::Options::io: asks the installed I/O provider (io_hook.h) what this runtime uses.
absl::Status configure_io(runtime_state* s) {
  const io_provider* p = installed_io_provider();
  switch (s->opts.io) {
    case io_backend::off:
      s->io_description = "off (Runtime::Options.io = off)";
      return absl::OkStatus();
    case io_backend::io_uring:
    case io_backend::epoll:
      if (p == nullptr) {
        return absl::FailedPreconditionError(absl::StrCat(
            "Runtime::Options.io = ", s->opts.io == io_backend::epoll ? "epoll" : "io_uring",
            ", but //io is not linked into this program (depend on @lwkt//io)"));
      }
      break;
    case io_backend::automatic:
      if (p == nullptr) {
        s->io_description = "off (//io is not linked into this program)";
        return absl::OkStatus();
      }
      break;
  }
  absl::StatusOr<io_config> c = p->configure(s->opts);
  if (!c.ok()) return c.status();
  s->io = c->active ? p : nullptr;
  s->io_backend = c->backend;
  s->io_description = std::move(c->description);
  return absl::OkStatus();
}
}  // namespace internal

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::create(const Options& opts) {
  if (absl::Status st = internal::validate_options(opts); !st.ok()) return st;
  auto s = std::make_unique<runtime_state>();
  s->opts = opts;
  s->opts.guard_size = internal::round_to_pages(opts.guard_size);  // what map_stack uses
  absl::StatusOr<std::unique_ptr<internal::topology>> topo = internal::topology::load();
  if (!topo.ok()) return topo.status();
  s->topo = std::move(*topo);

  std::vector<int> cpus = opts.cpus;
  std::set<int> seen;
  for (int c : cpus) {
    if (!s->topo->has_pu(c)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "Runtime::Options.cpus: CPU %d is not a processing unit this process may use "
          "(usable: %s)",
          c, absl::StrJoin(s->topo->pus(), ",")));
    }
    if (!seen.insert(c).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("Runtime::Options.cpus lists CPU %d more than once", c));
    }
  }
  const bool cpus_from_options = !cpus.empty();
  if (cpus.empty()) cpus = s->topo->pus();
  // kAutoWorkers: one per CPU, capped by the cgroup CPU quota (topology.h).
  internal::worker_count wc =
      s->topo->workers_for(opts.workers, static_cast<int>(cpus.size()), cpus_from_options);
  const int n = wc.workers;
  s->workers_reason = std::move(wc.reason);
  if (absl::Status st = internal::configure_io(s.get()); !st.ok()) return st;
  internal::register_fork_handler();
  s->fork_generation = internal::fork_generation.load(std::memory_order_relaxed);
  if (n > kMaxWorkers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Runtime::Options.cpus names %d CPUs; at most %d workers are supported", n, kMaxWorkers));
  }
  // Ring pointers only: each ring is allocated on its first send (ipi.cc, ring_for_send).
  const std::size_t npairs = static_cast<std::size_t>(n) * static_cast<std::size_t>(n);
  s->rings.reset(new std::atomic<ipiq::ring*>[npairs]());
  s->ring_on_node.reset(new bool[npairs]());
  s->slpque_cpumasks.reset(new std::atomic<std::uint64_t>[kSleepHash * kMaskWords]());

  const std::size_t stack = internal::round_to_pages(opts.stack_size);
  // Saturating: rr_slice infinite means never rotate, token_warn infinite never warn.
  const std::uint64_t slice = internal::duration_to_ticks(opts.rr_slice);
  const std::uint64_t spin = internal::duration_to_ticks(opts.idle_spin);
  absl::Status setup_error;
  for (int i = 0; i < n; ++i) {
    const int pu = cpus[static_cast<std::size_t>(i) % cpus.size()];
    const int numa = s->topo->numa_of(pu);
    void* mem = s->topo->alloc_on_node(sizeof(globaldata), numa);
    if (mem) internal::lsan_register_root(mem, sizeof(globaldata));
    s->gd_on_node.push_back(mem != nullptr);
    if (!mem) mem = ::operator new(sizeof(globaldata), std::align_val_t{alignof(globaldata)});
    auto* gd = new (mem) globaldata;
    gd->gd_cpuid = i;
    gd->gd_runtime = s.get();
    gd->gd_ncpus = n;
    gd->gd_rings = s->rings.get();
    gd->gd_slpque_cpumasks = s->slpque_cpumasks.get();
    gd->gd_default_stack = stack;
    gd->gd_stack_watermark = opts.stack_watermark;
    gd->gd_cache_max = opts.thread_cache;
    gd->gd_slice_ticks = slice;
    gd->gd_idle_spin_ticks = spin;
    gd->gd_idle_adaptive = opts.idle_cpu_budget > 0;
    if (gd->gd_idle_adaptive) {
      gd->gd_idle.init(spin, opts.idle_cpu_budget, internal::ticks_per_us() / 1000.0,
                       internal::cheap_clock());
    }
    gd->gd_token_warn_ticks = internal::duration_to_ticks(opts.token_warn);
    gd->gd_preempt_enable = opts.preempt;
    gd->gd_io.backend = s->io_backend;
    if (opts.trace_events > 0) {
      gd->gd_trace = new internal::trace_ring(opts.trace_events);
      if (!gd->gd_trace->ev && setup_error.ok()) {
        setup_error = absl::ResourceExhaustedError(absl::StrFormat(
            "Runtime::Options.trace_events: %u events (%u bytes) for worker %d could not be "
            "allocated", opts.trace_events, opts.trace_events * sizeof(internal::trace_event), i));
      }
    }
    if (!gd->gd_parker.set_mechanism(opts.kick) && setup_error.ok()) {
      setup_error = absl::ResourceExhaustedError(absl::StrCat(
          "Runtime::Options.kick: eventfd for worker ", i, " failed: ", std::strerror(errno)));
    }
    gd->gd_pu = pu;
    gd->gd_core = s->topo->core_of(pu);
    gd->gd_numa = numa;
    s->gds.push_back(gd);
  }

  if (!setup_error.ok()) {
    for (std::size_t i = 0; i < s->gds.size(); ++i) internal::destroy_globaldata(s.get(), i);
    return setup_error;
  }

  // Start the workers; each reports whether it could be placed and set up. If an OS thread
  // cannot be started (std::thread throws), the workers already started are stopped and
  // everything is freed by the shutdown below, as for a worker's own failure.
  std::mutex mu;
  std::condition_variable cv;
  int started = 0;
  absl::Status first_error;
  absl::Status start_error;
  runtime_state* rs = s.get();
  rs->workers.reserve(static_cast<std::size_t>(n));  // emplace_back below cannot reallocate
  for (int i = 0; i < n && start_error.ok(); ++i) {
    globaldata* gd = rs->gds[static_cast<std::size_t>(i)];
    int err = 0;
    try {
      namespace fi = internal::fault_injection;
      if (fi::should_fail(fi::point::worker_start)) {
        throw std::system_error(EAGAIN, std::generic_category(), "injected worker start");
      }
      rs->workers.emplace_back([rs, gd, &mu, &cv, &started, &first_error] {
        internal::t_mycpu = gd;
        gd->gd_tid = static_cast<int>(gettid());
        // For top -H, gdb's `info threads` and /proc: "lwkt w<worker>" (at most 15 bytes).
        char comm[16];
        std::snprintf(comm, sizeof comm, "lwkt w%d", gd->gd_cpuid);
        pthread_setname_np(pthread_self(), comm);
        absl::Status st;
        if (rs->opts.pin) st = rs->topo->bind_this_thread(gd->gd_pu);
        gd->gd_pinned = rs->opts.pin && st.ok();
        absl::StatusOr<void*> alt = internal::install_guard_handler_for_worker();
        gd->gd_sigaltstack = alt.ok() ? *alt : nullptr;
        if (!alt.ok() && st.ok()) st = alt.status();
        internal::init_idle_thread(gd);
        {
          std::lock_guard<std::mutex> l(mu);
          if (!st.ok() && first_error.ok()) first_error = st;
          ++started;
          cv.notify_all();  // under the lock: create() destroys cv once all have started
        }
        if (st.ok()) {
          internal::idle_loop(gd);
        } else {
          gd->gd_stopped.store(true, std::memory_order_seq_cst);  // never ran: nothing to stop
        }
        // Before any stack is freed: operations of abandoned threads name their memory.
        if (rs->io && gd->gd_io.state.load(std::memory_order_relaxed)) {
          if (const std::uint32_t left = rs->io->worker_exit(&gd->gd_io)) {
            rs->io_unfinished.fetch_add(left, std::memory_order_relaxed);  // read after join
          }
        }
        internal::release_signal_stack(gd->gd_sigaltstack);
        internal::t_mycpu = nullptr;
      });
    } catch (const std::system_error& e) {
      err = e.code().value();
    } catch (const std::bad_alloc&) {
      err = ENOMEM;
    }
    if (err != 0) {
      const char* name = strerrorname_np(err);
      start_error = absl::ResourceExhaustedError(absl::StrFormat(
          "Runtime::create: starting the OS thread of worker %d (of %d) failed: %s (%s)", i,
          n, name ? std::string(name) : absl::StrCat("errno ", err), std::strerror(err)));
    }
  }
  const int launched = static_cast<int>(rs->workers.size());
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return started == launched; });
  }
  std::unique_ptr<Runtime> rt(new Runtime(std::move(s)));
  if (!start_error.ok() || !first_error.ok()) {
    (void)rt->shutdown(absl::ZeroDuration());
    return start_error.ok() ? first_error : start_error;
  }
  if (absl::Status st = internal::start_monitor(rt.get(), rs); !st.ok()) {
    (void)rt->shutdown(absl::ZeroDuration());
    return st;
  }
  return rt;
}

Runtime::~Runtime() {
  runtime_state* rs = _s.get();
  if (internal::inherited_across_fork(rs) && !rs->shut_down) {
    // A forked child's copy of a live runtime: its workers do not exist here, so shutting
    // down would wait forever. Skip all teardown silently (the child's exit reclaims the
    // memory), so that a child may exit normally with the Runtime object still in scope.
    rs->forked_next = internal::forked_runtimes.load(std::memory_order_relaxed);
    while (!internal::forked_runtimes.compare_exchange_weak(rs->forked_next, rs)) {
    }
    (void)_s.release();
    return;
  }
  // Shut down while still listed: wakeups from outside and from other runtimes must reach
  // this one's threads through the grace period (sleep.h). Then unlist it, before anything
  // is freed, unless its shutdown leaked (it stays listed: see g_runtimes_mu; _s is then
  // the stand-in, never listed).
  absl::Status st = shutdown();
  (void)st;  // shutdown() already reported abandoned threads on stderr
  if (!rs->leaked) internal::unlist_runtime(rs);
  runtime_state* live = _s.get();  // a leaked runtime was replaced by an inert one
  if (!live->leaked) {
    for (std::size_t i = 0; i < live->gds.size(); ++i) internal::destroy_globaldata(live, i);
    internal::free_rings(live);
  }
  live->gds.clear();
}

absl::StatusOr<thread_ref> Runtime::spawn(absl::AnyInvocable<void()> fn,
                                          const thread_options& opts) {
  internal::check_not_forked(_s.get(), "Runtime::spawn");
  if (!fn) return absl::InvalidArgumentError("Runtime::spawn: empty function");
  internal::api_guard g(_s.get());
  if (!g.ok()) return absl::FailedPreconditionError("lwkt runtime is shutting down: no new threads");
  return internal::create_on(_s.get(), nullptr, nullptr, std::move(fn), opts);
}

absl::StatusOr<thread_ref> Runtime::spawn(void (*fn)(void*), void* arg,
                                          const thread_options& opts) {
  internal::check_not_forked(_s.get(), "Runtime::spawn");
  if (!fn) return absl::InvalidArgumentError("Runtime::spawn: null function");
  internal::api_guard g(_s.get());
  if (!g.ok()) return absl::FailedPreconditionError("lwkt runtime is shutting down: no new threads");
  return internal::create_on(_s.get(), fn, arg, nullptr, opts);
}

namespace internal {
namespace {

// How long shutdown waits, after `grace`, for every worker to reach a switch point and stop.
constexpr absl::Duration kStopTimeout = absl::Seconds(2);

// One pass over every worker's message state (shutdown, phase 2). Quiet: every worker has
// stopped running threads, its inbox is empty and no inbox handler runs, and every ring to
// it has finished executing what was pushed (xindex == windex: a handler still running
// keeps xindex behind). `work` sums monotonic progress counters: two quiet passes with equal
// sums bracket an interval in which no handler ran, so none can have sent a message that a
// pass missed (a double collect).
struct collect_result {
  bool quiet = true;
  std::uint64_t work = 0;
};
collect_result collect(const runtime_state* rs) {
  collect_result r;
  // An entry point still in progress (it passed its api_guard before `stopping`, or before
  // `sealed` for a kExistingWork call) may post a
  // message yet: not quiet until it has returned.
  if (rs->api_calls.load(std::memory_order_seq_cst) > 0 ||
      rs->late_calls.load(std::memory_order_seq_cst) > 0) {
    r.quiet = false;
  }
  const std::size_t n = rs->gds.size();
  for (std::size_t t = 0; t < n; ++t) {
    const globaldata* gd = rs->gds[t];
    // Order matters (drain_inbox: busy = true, take, run, count, busy = false): empty, then
    // busy, then the counter. A take before the empty read is seen by the busy read, unless
    // the batch already ended, and then the counter read sees its count.
    if (!gd->gd_stopped.load(std::memory_order_seq_cst) || !gd->gd_inbox.empty() ||
        gd->gd_inbox_busy.load(std::memory_order_seq_cst)) {
      r.quiet = false;
    }
    r.work += gd->gd_stats.messages.get();
    for (std::size_t s = 0; s < n; ++s) {
      const ipiq::ring* ring = rs->rings[s * n + t].load(std::memory_order_acquire);
      if (ring == nullptr) continue;  // never sent on (see ring_if_any for the ordering)
      const std::uint32_t x = ring->xindex();
      r.work += x;
      if (ring->windex_acquire() != x) r.quiet = false;
    }
  }
  return r;
}

// Runtimes that shutdown could not stop (a thread never reached a switch point): their
// workers still run, so their state is never freed; kept reachable for LeakSanitizer.
std::mutex g_leaked_mu;
std::vector<std::unique_ptr<runtime_state>>* g_leaked = nullptr;

}  // namespace
}  // namespace internal

// Shutdown, in phases, each bounded:
//   0. refuse new entry points (stopping) and wait for those in progress (api_guard);
//   1. wait up to `grace` for threads to exit, then stop every worker: RQF_STOP makes each
//      switch to its idle thread at its next switch point, and the idle loop acknowledges
//      (gd_stopped) and from then on runs messages only, as that worker;
//   2. wait until no message is pending or running anywhere (collect(), twice), then let
//      the idle loops return (gd_exit) and join the workers;
//   3. single-threaded: abandon the threads still alive and free their stacks. The
//      globaldata stay until ~Runtime, so stats() and placement() keep working.
// A worker whose thread never reaches a switch point cannot be stopped: after kStopTimeout
// shutdown names that thread, leaves the runtime's memory to its still-running workers
// (leaked on purpose) and returns FailedPrecondition.
absl::Status Runtime::shutdown(absl::Duration grace) {
  runtime_state* rs = _s.get();
  // In a forked child only a runtime already shut down before fork may be "shut down" again.
  if (internal::inherited_across_fork(rs) && !rs->shut_down) {
    internal::forked_child_abort("Runtime::shutdown");
  }
  std::lock_guard<std::mutex> l(rs->shutdown_mu);
  if (rs->shut_down) return rs->shutdown_status;
  LWKT_ASSERT(internal::mycpu() == nullptr || internal::mycpu()->gd_runtime != rs, curthread(),
              "Runtime::shutdown called from one of its own workers");
  if (grace < absl::ZeroDuration()) grace = absl::ZeroDuration();
  const absl::Time start = absl::Now();
  const absl::Time deadline = grace == absl::InfiniteDuration() ? absl::InfiniteFuture()
                                                                : start + grace;
  rs->stopping.store(true, std::memory_order_seq_cst);
  while (rs->api_calls.load(std::memory_order_seq_cst) > 0 && absl::Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }

  // Phase 0, I/O: each worker cancels its operations in flight and refuses new ones (the
  // calls return ECANCELED), so threads blocked in I/O can finish within the grace period.
  if (rs->io) {
    for (std::size_t i = 0; i < rs->workers.size(); ++i) {
      internal::send_ipi(rs->gds[i], internal::io_shutdown_handler, nullptr, 0, nullptr, false);
    }
  }
  // Phase 1. (Workers whose OS thread never started have nothing to stop.)
  for (std::size_t i = rs->workers.size(); i < rs->gds.size(); ++i) {
    rs->gds[i]->gd_stopped.store(true, std::memory_order_seq_cst);
  }
  while (internal::live_threads(rs) > 0 && absl::Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // The grace period is over: wakeups, interrupts and replies from outside, accepted until
  // now so that threads waiting for them could finish, are refused from here on; those in
  // progress are waited for by phase 2 (collect() counts them).
  rs->sealed.store(true, std::memory_order_seq_cst);
  for (globaldata* gd : rs->gds) {
    gd->gd_reqflags.fetch_or(RQF_STOP, std::memory_order_seq_cst);
    gd->gd_stop.store(true, std::memory_order_seq_cst);
    gd->gd_parker.kick();
  }
  const absl::Time stop_deadline = absl::Now() + internal::kStopTimeout;
  // A worker in its idle thread is only slow (descheduled by the OS, a long handler): it
  // gets longer before it counts as stuck.
  const absl::Time idle_deadline = stop_deadline + 4 * internal::kStopTimeout;
  std::vector<std::string> stuck;
  for (;;) {
    stuck.clear();
    bool idle_only = false;
    const absl::Time now = absl::Now();
    for (globaldata* gd : rs->gds) {
      if (gd->gd_stopped.load(std::memory_order_seq_cst)) continue;
      // Which thread runs there (a pointer, written by cpu_switch_to). Its name is read only
      // once shutdown gives up on it (below): while the worker still switches, the object
      // may be recycled and renamed under us.
      thread* td = std::atomic_ref<thread*>(gd->gd_curthread).load(std::memory_order_relaxed);
      // A worker in its idle thread runs only bounded message handlers before it
      // acknowledges: slow (descheduled by the OS), not stuck. Only a thread of its own
      // that keeps the worker counts against kStopTimeout.
      if (td == &gd->gd_idlethread) {
        if (now < idle_deadline) {
          idle_only = true;
          continue;
        }
        stuck.push_back(absl::StrFormat("worker %d's idle thread in a message handler that "
                                        "does not return", gd->gd_cpuid));
        continue;
      }
      const bool giving_up = now >= stop_deadline;
      stuck.push_back(giving_up ? absl::StrFormat("'%s' (worker %d)", td ? td->td_comm : "?",
                                                  gd->gd_cpuid)
                                : std::string("?"));
    }
    if ((stuck.empty() && !idle_only) || (!stuck.empty() && now >= stop_deadline)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  // The monitor is no use once the workers stop; it is joined below, while they still
  // answer messages (a ps dump in progress needs them) and their globaldata exists.
  internal::stop_monitor(rs);

  // Phase 2 (only when every worker stopped: a running thread could still send), with a
  // budget of its own; the deadline counts only after a pass that was not quiet.
  const absl::Time quiet_deadline = std::max(stop_deadline, absl::Now() + internal::kStopTimeout);
  bool quiet = stuck.empty();
  for (std::uint64_t last = ~std::uint64_t{0}; quiet;) {
    const internal::collect_result c = internal::collect(rs);
    if (c.quiet && c.work == last) break;
    last = c.quiet ? c.work : ~std::uint64_t{0};
    if (!c.quiet && absl::Now() >= quiet_deadline) quiet = false;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  if (!quiet) {
    if (stuck.empty()) stuck.push_back("(message handlers that never finish)");
    rs->shutdown_status = absl::FailedPreconditionError(absl::StrFormat(
        "lwkt shutdown: workers did not stop within %s after the grace period, because a "
        "thread runs without reaching a switch point: %s; the runtime's memory is left to "
        "them (leaked)",
        absl::FormatDuration(internal::kStopTimeout), absl::StrJoin(stuck, ", ")));
    std::fprintf(stderr, "%s\n", std::string(rs->shutdown_status.message()).c_str());
    internal::join_monitor(rs, /*leaking=*/true);
    for (std::thread& t : rs->workers) t.detach();
    rs->shut_down = true;
    rs->leaked = true;  // stays listed (see g_runtimes_mu); the stand-in below never is
    std::lock_guard<std::mutex> ll(internal::g_leaked_mu);
    if (!internal::g_leaked) internal::g_leaked = new std::vector<std::unique_ptr<runtime_state>>;
    // An inert stand-in answers later calls. Filled before it replaces _s, so that a call
    // racing this one never finds it half made (unsealed, say).
    auto standin = std::make_unique<runtime_state>();
    standin->stopping.store(true, std::memory_order_relaxed);
    standin->sealed.store(true, std::memory_order_relaxed);  // wakeups and the like: no-ops
    standin->shut_down = true;
    standin->leaked = true;    // its gds belong to the leaked runtime: never freed here
    standin->gds = rs->gds;    // stats() and placement() still answer (they only read)
    standin->topo = std::move(rs->topo);  // workers use it only when they start
    standin->workers_reason = rs->workers_reason;
    standin->opts = rs->opts;
    standin->shutdown_status = rs->shutdown_status;
    standin->fork_generation = rs->fork_generation;
    standin->stalls.store(rs->stalls.load(std::memory_order_relaxed), std::memory_order_relaxed);
    standin->rings_allocated.store(rs->rings_allocated.load(std::memory_order_relaxed),
                                   std::memory_order_relaxed);
    internal::g_leaked->push_back(std::move(_s));
    _s = std::move(standin);
    return rs->shutdown_status;
  }
  internal::join_monitor(rs, /*leaking=*/false);
  for (globaldata* gd : rs->gds) {
    gd->gd_exit.store(true, std::memory_order_seq_cst);
    gd->gd_parker.kick();
  }
  for (std::thread& t : rs->workers) t.join();
  internal::write_trace_at_shutdown(rs);

  // Phase 3: threads still alive are blocked forever or were still runnable: abandon them
  // (joiners first, while every stack that may hold a join node is still mapped; then the
  // stacks).
  std::vector<thread*> abandoned;
  std::vector<std::string> names;
  for (globaldata* gd : rs->gds) {
    for (thread* td = gd->gd_tdallq; td; td = td->td_all_next) {
      abandoned.push_back(td);
      names.push_back(absl::StrFormat("'%s' (worker %d): %s", td->td_comm, gd->gd_cpuid,
                                      (td->td_flags & TDF_RUNQ) ? "runnable" : "blocked"));
    }
  }
  {
    // stats() reads these under the lock from any OS thread, concurrently.
    std::lock_guard<std::mutex> tl(rs->transit_mu);
    for (thread* td : rs->in_transit) {  // given away, never acquired: on no thread list
      abandoned.push_back(td);
      names.push_back(absl::StrFormat("'%s' (in transit: given away, not acquired)", td->td_comm));
    }
    rs->transit_abandoned = rs->in_transit.size();
    rs->in_transit.clear();
  }
  // An I/O operation that outlived its cancellation may still be written by the kernel
  // into an abandoned thread's stack, and an io::blocking call's pool thread still writes
  // its result into its caller's: those stacks are then left mapped (leaked). (The blocking
  // count is process-wide, so a call of another runtime counts too: only more is leaked.)
  const std::uint32_t io_left = rs->io_unfinished.load(std::memory_order_relaxed);
  const std::uint32_t blocking_left =
      abandoned.empty() ? 0 : internal::blocking_outstanding().load(std::memory_order_acquire);
  const bool keep_stacks = io_left != 0 || blocking_left != 0;
  for (thread* td : abandoned) internal::abandon_thread(td, false);
  for (thread* td : abandoned) internal::abandon_thread(td, true, /*unmap=*/!keep_stacks);

  if (!abandoned.empty()) {
    rs->shutdown_status = absl::FailedPreconditionError(absl::StrFormat(
        "lwkt shutdown: %u thread(s) still alive after %s were abandoned: %s%s",
        abandoned.size(), absl::FormatDuration(grace), absl::StrJoin(names, ", "),
        keep_stacks
            ? absl::StrFormat("; %u I/O operation(s) did not finish after their cancellation "
                              "and %u io::blocking call(s) had not returned, so the abandoned "
                              "threads' stacks are left mapped (leaked)",
                              io_left, blocking_left)
            : std::string()));
    std::fprintf(stderr, "%s\n", std::string(rs->shutdown_status.message()).c_str());
  }
  rs->shut_down = true;
  return rs->shutdown_status;
}

namespace internal {
namespace {
// Runtime::wakeup / wakeup_one: the ordinary path on one of rs's own workers, a message to
// every worker from anywhere else.
void runtime_wakeup(runtime_state* rs, const void* ident, int flags, const char* call) {
  check_not_forked(rs, call);
  globaldata* me = mycpu();
  if (me && me->gd_runtime == rs) {
    wakeup_own_runtime(me, ident, flags);  // only rs (lwkt::wakeup would reach every one)
    return;
  }
  wakeup_from_outside(rs, ident, flags);
}
}  // namespace
}  // namespace internal

void Runtime::wakeup(const void* ident) {
  internal::runtime_wakeup(_s.get(), ident, 0, "Runtime::wakeup");
}

void Runtime::wakeup_one(const void* ident) {
  internal::runtime_wakeup(_s.get(), ident, internal::PWAKEUP_ONE, "Runtime::wakeup_one");
}

int Runtime::workers() const { return static_cast<int>(_s->gds.size()); }

std::vector<worker_info> Runtime::placement() const {
  std::vector<worker_info> out;
  for (globaldata* gd : _s->gds) {
    out.push_back({gd->gd_cpuid, gd->gd_pu, gd->gd_core, gd->gd_numa, gd->gd_pinned});
  }
  return out;
}

std::string Runtime::placement_report() const {
  std::string out = absl::StrFormat("workers: %d (%s)\n", workers(), _s->workers_reason);
  for (const worker_info& w : placement()) {
    absl::StrAppendFormat(&out, "worker %d: PU %d (core %d, NUMA node %d), %s\n", w.worker,
                          w.pu, w.core, w.numa_node, w.pinned ? "pinned" : "not pinned");
  }
  absl::StrAppend(&out, "io: ", _s->io_description, "\n");
  return out;
}

std::string Runtime::topology_report() const { return _s->topo->report(); }

runtime_stats Runtime::stats() const {
  runtime_stats r;
  for (globaldata* gd : _s->gds) {
    const worker_stats& w = gd->gd_stats;
    r.switches += w.switches.get();
    r.threads_created += w.threads_created.get();
    r.threads_reaped += w.threads_reaped.get();
    r.stacks_mapped += w.stacks_mapped.get();
    r.stacks_unmapped += w.stacks_unmapped.get();
    r.cache_hits += w.cache_hits.get();
    r.messages += w.messages.get();
    r.parks += w.parks.get();
    r.preemptions += w.preempt_taken.get();
    r.preemptions_refused += w.preempt_refused_disabled.get() + w.preempt_refused_priority.get() +
                             w.preempt_refused_critical.get() + w.preempt_refused_context.get() +
                             w.preempt_refused_tokens.get() + w.preempt_refused_chain.get();
    r.live_threads += w.live_threads.load(std::memory_order_relaxed);
  }
  r.stalls = _s->stalls.load(std::memory_order_relaxed);
  r.ipi_rings = _s->rings_allocated.load(std::memory_order_relaxed);
  // Threads given away and not acquired are alive but on no worker's count.
  std::lock_guard<std::mutex> l(_s->transit_mu);
  r.live_threads += static_cast<std::int64_t>(_s->in_transit.size() + _s->transit_abandoned);
  return r;
}

}  // namespace lwkt
