// lwkt::Runtime: options validation, placement with hwloc, worker start and shutdown.
#include "lwkt/runtime.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <condition_variable>
#include <cstdio>
#include <new>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "lwkt/internal/clock.h"
#include "lwkt/internal/runtime_state.h"
#include "lwkt/internal/sched_internal.h"
#include "lwkt/internal/stack.h"
#include "lwkt/ipi.h"
#include "lwkt/sleep.h"
#include "lwkt/sched.h"

namespace lwkt {
namespace internal {

void init_idle_thread(globaldata* gd);                 // worker.cc
void abandon_thread(thread* td, bool second_pass);     // thread.cc

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
  if (o.thread_cache > (1u << 20)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Runtime::Options.thread_cache %u exceeds %u", o.thread_cache, 1u << 20));
  }
  if (o.idle_spin < absl::ZeroDuration() || o.idle_spin > absl::Seconds(1)) {
    return absl::InvalidArgumentError(absl::StrCat("Runtime::Options.idle_spin ",
                                                   absl::FormatDuration(o.idle_spin),
                                                   " is outside [0, 1s]"));
  }
  if (o.token_warn < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Runtime::Options.token_warn ", absl::FormatDuration(o.token_warn), " is negative"));
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

void destroy_globaldata(runtime_state* rs, std::size_t i) {
  globaldata* gd = rs->gds[i];
  while (thread* td = gd->gd_freetd) {
    gd->gd_freetd = td->td_all_next;
    unmap_stack(td->td_stack);
    delete td;
  }
  for (thread_stack& st : gd->gd_freestacks) unmap_stack(st);
  gd->~globaldata();
  if (rs->gd_on_node[i]) {
    rs->topo->free_on_node(gd, sizeof(globaldata));
  } else {
    ::operator delete(gd, std::align_val_t{alignof(globaldata)});
  }
}

}  // namespace
}  // namespace internal

using internal::runtime_state;

Runtime::Runtime(std::unique_ptr<runtime_state> s) : _s(std::move(s)) {}

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::create(const Options& opts) {
  if (absl::Status st = internal::validate_options(opts); !st.ok()) return st;
  auto s = std::make_unique<runtime_state>();
  s->opts = opts;
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
  if (cpus.empty()) cpus = s->topo->pus();
  const int n = opts.workers == kAutoWorkers ? static_cast<int>(cpus.size()) : opts.workers;
  if (n > kMaxWorkers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Runtime::Options.cpus names %d CPUs; at most %d workers are supported", n, kMaxWorkers));
  }
  s->rings.reset(new ipiq::ring[static_cast<std::size_t>(n) * static_cast<std::size_t>(n)]);
  s->slpque_cpumasks.reset(new std::atomic<std::uint64_t>[kSleepHash * kMaskWords]());

  const std::size_t stack = internal::round_to_pages(opts.stack_size);
  const std::uint64_t slice = internal::ns_to_ticks(absl::ToInt64Nanoseconds(opts.rr_slice));
  const std::uint64_t spin = internal::ns_to_ticks(absl::ToInt64Nanoseconds(opts.idle_spin));
  absl::Status setup_error;
  for (int i = 0; i < n; ++i) {
    const int pu = cpus[static_cast<std::size_t>(i) % cpus.size()];
    const int numa = s->topo->numa_of(pu);
    void* mem = s->topo->alloc_on_node(sizeof(globaldata), numa);
    s->gd_on_node.push_back(mem != nullptr);
    if (!mem) mem = ::operator new(sizeof(globaldata), std::align_val_t{alignof(globaldata)});
    auto* gd = new (mem) globaldata;
    gd->gd_cpuid = i;
    gd->gd_runtime = s.get();
    gd->gd_ncpus = n;
    gd->gd_rings = s->rings.get();
    gd->gd_slpque_cpumasks = s->slpque_cpumasks.get();
    gd->gd_default_stack = stack;
    gd->gd_cache_max = opts.thread_cache;
    gd->gd_slice_ticks = slice;
    gd->gd_idle_spin_ticks = spin;
    gd->gd_token_warn_ticks = internal::ns_to_ticks(absl::ToInt64Nanoseconds(opts.token_warn));
    gd->gd_preempt_enable = opts.preempt;
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

  // Start the workers; each reports whether it could be placed.
  std::mutex mu;
  std::condition_variable cv;
  int started = 0;
  absl::Status first_error;
  runtime_state* rs = s.get();
  for (int i = 0; i < n; ++i) {
    globaldata* gd = rs->gds[static_cast<std::size_t>(i)];
    rs->workers.emplace_back([rs, gd, &mu, &cv, &started, &first_error] {
      internal::t_mycpu = gd;
      absl::Status st;
      if (rs->opts.pin) st = rs->topo->bind_this_thread(gd->gd_pu);
      gd->gd_pinned = rs->opts.pin && st.ok();
      gd->gd_sigaltstack = internal::install_guard_handler_for_worker();
      internal::init_idle_thread(gd);
      {
        std::lock_guard<std::mutex> l(mu);
        if (!st.ok() && first_error.ok()) first_error = st;
        ++started;
        cv.notify_all();  // under the lock: create() destroys cv once all have started
      }
      if (st.ok()) internal::idle_loop(gd);
      internal::release_signal_stack(gd->gd_sigaltstack);
      internal::t_mycpu = nullptr;
    });
  }
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return started == n; });
  }
  std::unique_ptr<Runtime> rt(new Runtime(std::move(s)));
  if (!first_error.ok()) {
    (void)rt->shutdown(absl::ZeroDuration());
    return first_error;
  }
  return rt;
}

Runtime::~Runtime() {
  absl::Status st = shutdown();
  (void)st;  // shutdown() already reported abandoned threads on stderr
}

absl::StatusOr<thread_ref> Runtime::spawn(absl::AnyInvocable<void()> fn,
                                          const thread_options& opts) {
  if (!fn) return absl::InvalidArgumentError("Runtime::spawn: empty function");
  return internal::create_on(_s.get(), nullptr, nullptr, std::move(fn), opts);
}

absl::StatusOr<thread_ref> Runtime::spawn(void (*fn)(void*), void* arg,
                                          const thread_options& opts) {
  if (!fn) return absl::InvalidArgumentError("Runtime::spawn: null function");
  return internal::create_on(_s.get(), fn, arg, nullptr, opts);
}

absl::Status Runtime::shutdown(absl::Duration grace) {
  runtime_state* rs = _s.get();
  std::lock_guard<std::mutex> l(rs->shutdown_mu);
  if (rs->shut_down) return rs->shutdown_status;
  LWKT_ASSERT(internal::mycpu() == nullptr || internal::mycpu()->gd_runtime != rs, curthread(),
              "Runtime::shutdown called from one of its own workers");
  rs->stopping.store(true, std::memory_order_release);

  // Let running and runnable threads finish.
  const absl::Time deadline = absl::Now() + grace;
  while (internal::live_threads(rs) > 0 && absl::Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // Stop the idle loops (a worker leaves once its run queue and inbox are empty).
  for (globaldata* gd : rs->gds) {
    gd->gd_stop.store(true, std::memory_order_release);
    gd->gd_parker.kick();
  }
  for (std::thread& t : rs->workers) t.join();

  // Single-threaded from here. Messages that raced with the stop (wakeups, create requests,
  // which fail now) still run, to a fixed point, so no request is left unanswered.
  for (bool again = true; again;) {
    again = false;
    for (globaldata* gd : rs->gds) {
      if (!gd->gd_inbox.empty() || internal::ipiq_pending(gd)) {
        again = true;
        gd->gd_cpusync_pending.clear();  // no master is left to release them
        internal::drain_all(gd);
      }
    }
  }

  // Threads still alive are blocked forever: abandon them (joiners first, while every stack
  // that may hold a join node is still mapped; then the stacks).
  std::vector<thread*> abandoned;
  std::vector<std::string> names;
  for (globaldata* gd : rs->gds) {
    for (thread* td = gd->gd_tdallq; td; td = td->td_all_next) {
      abandoned.push_back(td);
      names.push_back(absl::StrFormat("'%s' (worker %d)", td->td_comm, gd->gd_cpuid));
    }
  }
  for (thread* td : abandoned) internal::abandon_thread(td, false);
  for (thread* td : abandoned) internal::abandon_thread(td, true);
  for (std::size_t i = 0; i < rs->gds.size(); ++i) internal::destroy_globaldata(rs, i);
  rs->gds.clear();

  if (!abandoned.empty()) {
    rs->shutdown_status = absl::FailedPreconditionError(absl::StrFormat(
        "lwkt shutdown: %u thread(s) still alive after %s were abandoned: %s",
        abandoned.size(), absl::FormatDuration(grace), absl::StrJoin(names, ", ")));
    std::fprintf(stderr, "%s\n", std::string(rs->shutdown_status.message()).c_str());
  }
  rs->shut_down = true;
  return rs->shutdown_status;
}

void Runtime::wakeup(const void* ident) {
  globaldata* me = internal::mycpu();
  if (me && me->gd_runtime == _s.get()) {
    lwkt::wakeup(ident);
    return;
  }
  // Every worker gets the request: a non-worker cannot read the slot masks' meaning cheaply
  // and wakeups from outside are rare. Each message scans one hash slot.
  for (globaldata* gd : _s->gds) {
    internal::send_ipi(gd, internal::ipi_wakeup, const_cast<void*>(ident), 0, nullptr, false);
  }
}

int Runtime::workers() const { return static_cast<int>(_s->workers.size()); }

std::vector<worker_info> Runtime::placement() const {
  std::vector<worker_info> out;
  for (globaldata* gd : _s->gds) {
    out.push_back({gd->gd_cpuid, gd->gd_pu, gd->gd_core, gd->gd_numa, gd->gd_pinned});
  }
  return out;
}

std::string Runtime::placement_report() const {
  std::string out;
  for (const worker_info& w : placement()) {
    absl::StrAppendFormat(&out, "worker %d: PU %d (core %d, NUMA node %d), %s\n", w.worker,
                          w.pu, w.core, w.numa_node, w.pinned ? "pinned" : "not pinned");
  }
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
  return r;
}

}  // namespace lwkt
