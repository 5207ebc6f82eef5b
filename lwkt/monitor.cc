// The runtime's monitor OS thread: the stall detector (Runtime::Options::stall_budget,
// stall_signal) and the ps dump on a signal (Options::ps_signal).
//
// Stall detection. Every worker bumps its gd_progress by 2 at each switch point and keeps
// bit 0 set while its idle thread runs (sched.cc, globaldata.h). The monitor samples every
// worker each period; a worker whose value stays the same with bit 0 clear for stall_budget
// has one lwkt thread running without a switch point: it is reported once, and again only
// after the value changes. The loads are relaxed: the monitor only compares a worker's
// value with itself over time and reads no other memory on its strength; a stale value
// delays a report by at most a period.
//
// The backtrace. The monitor stores the stalled value in the worker's gd_stall_request
// (release) and sends stall_signal to the worker's OS thread (pthread_kill). The handler runs
// on that worker (on its signal stack) and takes the request with exchange(0, acquire): a
// non-zero value means the watchdog asked. If gd_progress still equals it, the thread the
// signal interrupted is the stalled one (the worker's current thread cannot change while a
// handler runs on that worker), so its name and stack are recorded in the worker's
// globaldata with async-signal-safe calls only (backtrace(), whose lazy loading of libgcc_s
// is done at start; plain stores) and published with gd_stall_ready (release). The monitor
// symbolises (absl::Symbolize) and prints them at its next sample, outside signal context:
// the worker is held only for the backtrace() itself, not for reading symbol tables. A
// signal that finds no request was not sent by a watchdog: it goes to the disposition
// installed before ours.
//
// ps on a signal. The handler bumps g_ps_requests[sig], then g_monitor_bell (release), and
// futex-wakes the bell's waiters. Every monitor waits on the bell (futex, the sample period
// as timeout), reading the bell before the request counts (acquire), so a request made after
// its reads changes the bell and the futex wait returns at once; a monitor whose signal's
// count moved takes Runtime::snapshot() and prints ps(). Stopping a monitor rings the bell
// too (the other monitors wake, find nothing, and wait again).
#include "lwkt/internal/monitor.h"

#include <execinfo.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "absl/debugging/symbolize.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "ipiq/internal/futex.h"
#include "lwkt/internal/clock.h"
#include "lwkt/internal/globaldata.h"
#include "lwkt/internal/runtime_state.h"
#include "lwkt/runtime.h"

namespace lwkt::internal {

struct monitor {
  Runtime* rt = nullptr;
  runtime_state* rs = nullptr;
  int stall_sig = 0;             // 0: no backtrace
  int ps_sig = 0;                // 0: no ps dump
  std::int64_t budget_ns = 0;    // 0: no stall detection
  std::int64_t period_ns = 0;
  std::uint32_t ps_seen = 0;     // g_ps_requests[ps_sig] already answered
  std::thread th;
  std::atomic<bool> stop{false};
  std::atomic<bool> done{false};
};

namespace {

constexpr int kMaxSignal = 65;  // _NSIG on Linux

// Process-wide signal bookkeeping. Written under g_sig_mu; handlers read only the atomics
// and g_prev[sig], which is written before our handler is installed for sig.
std::mutex g_sig_mu;
struct sigaction g_prev[kMaxSignal];
int g_users[kMaxSignal];     // monitors using sig (as stall_signal or ps_signal)
int g_ps_users[kMaxSignal];     // ... as ps_signal
int g_stall_users[kMaxSignal];  // ... as stall_signal
std::atomic<bool> g_ps_on[kMaxSignal];
std::atomic<bool> g_stall_on[kMaxSignal];
std::atomic<std::uint32_t> g_ps_requests[kMaxSignal];
std::atomic<std::uint32_t> g_monitor_bell{0};

void ring_bell() {
  g_monitor_bell.fetch_add(1, std::memory_order_release);
  ipiq::internal::futex_wake(&g_monitor_bell, INT_MAX);
}

bool symbolize(const void* pc, char* out, int size) {
  return absl::Symbolize(const_cast<void*>(pc), out, size);
}

// On the stalled worker, in signal context: records the stalled thread's name and stack
// for the monitor (async-signal-safe: backtrace() after its first call, plain stores).
void capture_stall(globaldata* gd, std::uint64_t req, const void* interrupted_pc) {
  gd->gd_stall_ended = gd->gd_progress.load(std::memory_order_relaxed) != req;
  gd->gd_stall_npcs = 0;
  if (!gd->gd_stall_ended) {
    std::memcpy(gd->gd_stall_name, gd->gd_curthread->td_comm, sizeof gd->gd_stall_name);
    void* pcs[64];
    const int n = backtrace(pcs, 64);
    // Frames before the interrupted pc (from the signal's context) are this handler's own
    // and the kernel's trampoline: skip them (all are kept if it is not found).
    int first = 0;
    for (int i = 0; i < n; ++i) {
      if (pcs[i] == interrupted_pc) {
        first = i;
        break;
      }
    }
    int k = 0;
    for (int i = first; i < n && k < static_cast<int>(std::size(gd->gd_stall_pcs)); ++i) {
      gd->gd_stall_pcs[k++] = pcs[i];
    }
    gd->gd_stall_npcs = k;
  }
  gd->gd_stall_ready.store(1, std::memory_order_release);
}

// absl::Symbolize keeps process-wide caches and buffers: one caller at a time, whichever
// runtime's monitor it is (several runtimes, or a leaked one's monitor still running).
std::mutex g_symbolize_mu;

// On the monitor thread: prints what capture_stall recorded, symbolised.
void print_stall_capture(globaldata* gd) {
  std::lock_guard<std::mutex> symbolizing(g_symbolize_mu);
  std::string out;
  if (gd->gd_stall_ended) {
    out = absl::StrFormat("lwkt: stall on worker %d ended before its backtrace was taken\n",
                          gd->gd_cpuid);
  } else {
    out = absl::StrFormat(
        "lwkt: stall on worker %d: thread '%s' has run for at least %d ms without reaching a "
        "switch point; its stack:\n",
        gd->gd_cpuid, gd->gd_stall_name, gd->gd_stall_ms.load(std::memory_order_relaxed));
    char name[256];
    for (int i = 0; i < gd->gd_stall_npcs; ++i) {
      // Past the first (the interrupted pc itself) each pc is a return address: look up the
      // call instruction, which ends just before it.
      const char* pc = static_cast<const char*>(gd->gd_stall_pcs[i]);
      const bool ok = symbolize(i == 0 ? pc : pc - 1, name, sizeof name);
      absl::StrAppendFormat(&out, "lwkt:   #%d %p %s\n", i, pc, ok ? name : "??");
    }
    absl::StrAppendFormat(&out, "lwkt: end of the stall backtrace of worker %d\n", gd->gd_cpuid);
  }
  std::fwrite(out.data(), 1, out.size(), stderr);
  std::fflush(stderr);
}

// A signal that is not a watchdog's request: what would have happened without us.
void pass_on(int sig, siginfo_t* si, void* uc) {
  const struct sigaction& p = g_prev[sig];
  if (p.sa_flags & SA_SIGINFO) {
    if (p.sa_sigaction) p.sa_sigaction(sig, si, uc);
    return;
  }
  if (p.sa_handler == SIG_IGN) return;
  if (p.sa_handler != SIG_DFL) {
    p.sa_handler(sig);
    return;
  }
  if (sig == SIGURG || sig == SIGCHLD || sig == SIGWINCH || sig == SIGCONT) return;  // ignored
  signal(sig, SIG_DFL);  // a terminating default: terminate as the process would have
  raise(sig);
}

const void* interrupted_pc(void* uc) {
  const mcontext_t& mc = static_cast<ucontext_t*>(uc)->uc_mcontext;
#if defined(__x86_64__)
  return reinterpret_cast<const void*>(mc.gregs[REG_RIP]);
#elif defined(__aarch64__)
  return reinterpret_cast<const void*>(mc.pc);
#endif
}

void on_monitor_signal(int sig, siginfo_t* si, void* uc) {
  const int saved_errno = errno;
  bool ours = false;
  // One signal may carry both meanings (a stall signal of one runtime that is another's
  // ps signal): each is served, neither swallows the other.
  if (g_stall_on[sig].load(std::memory_order_relaxed)) {
    if (globaldata* gd = mycpu()) {
      if (const std::uint64_t req = gd->gd_stall_request.exchange(0, std::memory_order_acquire)) {
        capture_stall(gd, req, interrupted_pc(uc));
        ours = true;
      }
    }
  }
  if (g_ps_on[sig].load(std::memory_order_relaxed)) {
    g_ps_requests[sig].fetch_add(1, std::memory_order_relaxed);
    ring_bell();
    ours = true;
  }
  if (!ours) pass_on(sig, si, uc);
  errno = saved_errno;
}

// Under g_sig_mu.
absl::Status use_signal(int sig, bool ps) {
  if (g_users[sig] == 0) {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_monitor_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, &g_prev[sig]) != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "Runtime::Options: cannot install a handler for signal %d (%s): %s", sig,
          sigabbrev_np(sig) ? sigabbrev_np(sig) : "?", std::strerror(errno)));
    }
  }
  ++g_users[sig];
  if (ps && g_ps_users[sig]++ == 0) g_ps_on[sig].store(true, std::memory_order_relaxed);
  if (!ps && g_stall_users[sig]++ == 0) g_stall_on[sig].store(true, std::memory_order_relaxed);
  return absl::OkStatus();
}

void release_signal(int sig, bool ps) {
  if (ps && --g_ps_users[sig] == 0) g_ps_on[sig].store(false, std::memory_order_relaxed);
  if (!ps && --g_stall_users[sig] == 0) g_stall_on[sig].store(false, std::memory_order_relaxed);
  if (--g_users[sig] == 0) sigaction(sig, &g_prev[sig], nullptr);
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// CPU time (ns) of a worker's OS thread; -1 if unknown.
std::int64_t thread_cpu_ns(pthread_t t) {
  clockid_t cid;
  struct timespec ts;
  if (pthread_getcpuclockid(t, &cid) != 0 || clock_gettime(cid, &ts) != 0) return -1;
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Nanoseconds the OS thread `tid` has spent runnable but waiting for a CPU (the second field
// of /proc/self/task/<tid>/schedstat); -1 when the kernel does not provide it.
std::int64_t thread_runq_wait_ns(int tid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", tid);
  FILE* f = std::fopen(path, "re");
  if (!f) return -1;
  long long run = 0, wait = 0;
  const int got = std::fscanf(f, "%lld %lld", &run, &wait);
  std::fclose(f);
  return got == 2 ? wait : -1;
}

// Whether the OS thread `tid` is blocked in the kernel (state S or D in
// /proc/self/task/<tid>/stat), as opposed to running or waiting for a CPU (R).
bool thread_blocked(int tid) {
  char path[64], buf[512];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
  FILE* f = std::fopen(path, "re");
  if (!f) return false;
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = 0;
  const char* paren = std::strrchr(buf, ')');  // the name may hold spaces and parentheses
  return paren && paren[1] == ' ' && (paren[2] == 'S' || paren[2] == 'D');
}

// A worker's sample. A candidate stall (the same value seen twice) is measured as time the
// thread actually held the worker, running or blocked in a system call; time the kernel kept
// its OS thread runnable but off the CPU (an oversubscribed machine, a busy neighbour) is
// not the thread's doing and does not count. Where schedstat exists, a sample that finds
// the thread blocked measures that exactly: the wall time since it became a candidate less
// its run-queue wait since then (a blocked thread has no wait in progress, so schedstat's
// count is current). A sample that finds it runnable adds the CPU time it used since the
// last exact measure (unsampled blocked spells are then missed, never invented). A monitor
// that was itself starved of CPU and samples late thus never over-counts. Without
// schedstat: CPU time plus, for each sample that finds the thread blocked, the time since
// the previous sample, at most one period.
struct sample_state {
  std::uint64_t value = ~std::uint64_t{0};
  bool candidate = false;
  bool reported = false;
  std::int64_t start_ns = 0;     // when it became a candidate
  std::int64_t wait0_ns = -1;    // run-queue wait then (-1: no schedstat)
  std::int64_t known_ns = 0;     // held time measured at the last exact (or estimated) point
  std::int64_t known_cpu_ns = 0; // OS thread CPU time at that point
  std::int64_t last_ns = 0;      // the previous sample
};

// How long the candidate in `s` has held its worker (see sample_state).
std::int64_t stalled_ns(sample_state& s, pthread_t os_thread, int tid, std::int64_t now,
                        std::int64_t period_ns) {
  const std::int64_t cpu = thread_cpu_ns(os_thread);
  if (thread_blocked(tid)) {
    const std::int64_t wait = s.wait0_ns >= 0 ? thread_runq_wait_ns(tid) : -1;
    if (wait >= 0) {
      s.known_ns = std::max<std::int64_t>(0, (now - s.start_ns) - (wait - s.wait0_ns));
    } else {
      s.known_ns += (cpu - s.known_cpu_ns) + std::min(now - s.last_ns, period_ns);
    }
    s.known_cpu_ns = cpu;
    s.last_ns = now;
    return s.known_ns;
  }
  s.last_ns = now;
  return s.known_ns + std::max<std::int64_t>(0, cpu - s.known_cpu_ns);
}

void sample(monitor* m, std::vector<sample_state>& last) {
  runtime_state* rs = m->rs;
  const std::int64_t now = now_ns();
  for (std::size_t i = 0; i < rs->gds.size() && i < rs->workers.size(); ++i) {
    globaldata* gd = rs->gds[i];
    sample_state& s = last[i];
    const std::uint64_t p = gd->gd_progress.load(std::memory_order_relaxed);
    pthread_t os_thread = rs->workers[i].native_handle();
    if (p != s.value || (p & 1)) {
      s = sample_state{};
      s.value = p;
      s.last_ns = now;
      continue;
    }
    if (s.reported) continue;
    if (!s.candidate) {
      s.candidate = true;
      s.start_ns = now;
      s.wait0_ns = thread_runq_wait_ns(gd->gd_tid);
      s.known_cpu_ns = thread_cpu_ns(os_thread);
      s.last_ns = now;
      continue;
    }
    const std::int64_t stalled = stalled_ns(s, os_thread, gd->gd_tid, now, m->period_ns);
    if (stalled < m->budget_ns) continue;
    s.reported = true;
    rs->stalls.fetch_add(1, std::memory_order_relaxed);
    const std::int64_t ms = stalled / 1000000;
    std::string line = absl::StrFormat(
        "lwkt: stall: worker %d has run one lwkt thread for at least %d ms without reaching "
        "a switch point (Runtime::Options::stall_budget %s); %s\n",
        gd->gd_cpuid, ms, absl::FormatDuration(rs->opts.stall_budget),
        m->stall_sig ? "its name and stack follow, from the worker"
                     : "no backtrace (Options::stall_signal is 0)");
    std::fwrite(line.data(), 1, line.size(), stderr);
    std::fflush(stderr);
    // One request at a time per worker: a capture not yet printed, or a request the
    // handler has not taken yet (ThreadSanitizer defers handlers), is left to finish.
    if (m->stall_sig != 0 && gd->gd_stall_ready.load(std::memory_order_acquire) == 0 &&
        gd->gd_stall_request.load(std::memory_order_relaxed) == 0) {
      gd->gd_stall_ms.store(static_cast<std::uint64_t>(ms), std::memory_order_relaxed);
      gd->gd_stall_request.store(p, std::memory_order_release);
      pthread_kill(os_thread, m->stall_sig);
    }
  }
}

// Prints the backtraces the workers' handlers have captured since the last call.
void print_captures(monitor* m) {
  for (globaldata* gd : m->rs->gds) {
    if (gd->gd_stall_ready.load(std::memory_order_acquire) == 0) continue;
    print_stall_capture(gd);
    gd->gd_stall_ready.store(0, std::memory_order_release);
  }
}

void dump_ps(monitor* m) {
  absl::StatusOr<runtime_snapshot> snap = m->rt->snapshot();
  std::string out =
      snap.ok() ? absl::StrCat("lwkt: ps (signal ", m->ps_sig, "):\n", snap->ps())
                : absl::StrCat("lwkt: ps (signal ", m->ps_sig, "): ", snap.status().ToString(), "\n");
  std::fwrite(out.data(), 1, out.size(), stderr);
  std::fflush(stderr);
}

void run(monitor* m) {
  pthread_setname_np(pthread_self(), "lwkt monitor");
  // Its wakeups need no precision finer than a tenth of a period: let the kernel batch them
  // with other timers.
  prctl(PR_SET_TIMERSLACK, static_cast<unsigned long>(std::max<std::int64_t>(m->period_ns / 10, 50000)));
  std::vector<sample_state> last(m->rs->gds.size());
  while (!m->stop.load(std::memory_order_acquire)) {
    const std::uint32_t bell = g_monitor_bell.load(std::memory_order_acquire);
    if (m->ps_sig) {
      const std::uint32_t r = g_ps_requests[m->ps_sig].load(std::memory_order_relaxed);
      if (r != m->ps_seen) {
        m->ps_seen = r;
        dump_ps(m);
      }
    }
    if (m->stop.load(std::memory_order_acquire)) break;
    if (m->budget_ns > 0) {
      print_captures(m);
      sample(m, last);
    }
    if (m->stop.load(std::memory_order_acquire)) break;
    struct timespec ts = {static_cast<time_t>(m->period_ns / 1000000000),
                          static_cast<long>(m->period_ns % 1000000000)};
    ipiq::internal::futex_wait(&g_monitor_bell, bell, m->budget_ns > 0 ? &ts : nullptr);
  }
  if (m->budget_ns > 0) print_captures(m);  // what the handlers captured last
  m->done.store(true, std::memory_order_release);
}

}  // namespace

void monitor_atfork_child() {
  // Only the forking OS thread exists: no monitor runs here, and a lock another thread held
  // at the fork would never be released. Async-signal-safe: stores and sigaction.
  new (&g_sig_mu) std::mutex;
  new (&g_symbolize_mu) std::mutex;
  for (int sig = 1; sig < kMaxSignal; ++sig) {
    if (g_users[sig] == 0) continue;
    // The parent's runtimes are inert here: give each signal back its disposition from
    // before they took it, so that a ps signal is not swallowed without a monitor.
    sigaction(sig, &g_prev[sig], nullptr);
    g_users[sig] = g_ps_users[sig] = g_stall_users[sig] = 0;
    g_ps_on[sig].store(false, std::memory_order_relaxed);
    g_stall_on[sig].store(false, std::memory_order_relaxed);
  }
}

absl::Status start_monitor(Runtime* rt, runtime_state* rs) {
  const Runtime::Options& o = rs->opts;
  const bool stalls = o.stall_budget > absl::ZeroDuration() && o.stall_budget != absl::InfiniteDuration();
  if (!stalls && o.ps_signal == 0) return absl::OkStatus();
  auto m = std::make_unique<monitor>();
  m->rt = rt;
  m->rs = rs;
  m->budget_ns = stalls ? absl::ToInt64Nanoseconds(o.stall_budget) : 0;
  // A stall is measured from the sample that first sees it (one period at most after it
  // began) and reported at the first sample past the budget: between budget and budget +
  // 2 periods after it began. Each wakeup costs the monitor tens of microseconds on a VM
  // (a timer and a halted vCPU woken), so the period is half the budget: 200 a second at
  // the default 10 ms.
  m->period_ns = std::max<std::int64_t>(m->budget_ns / 2, 1000000);
  m->stall_sig = stalls ? o.stall_signal : 0;
  m->ps_sig = o.ps_signal;
  if (m->stall_sig) {
    // backtrace() loads libgcc_s on its first call (not async-signal-safe): do it here.
    void* pc[2];
    (void)backtrace(pc, 2);
  }
  {
    std::lock_guard<std::mutex> l(g_sig_mu);
    if (m->stall_sig) {
      if (absl::Status st = use_signal(m->stall_sig, false); !st.ok()) return st;
    }
    if (m->ps_sig) {
      if (absl::Status st = use_signal(m->ps_sig, true); !st.ok()) {
        if (m->stall_sig) release_signal(m->stall_sig, false);
        return st;
      }
    }
  }
  // The baseline is taken before create() returns: a signal sent as soon as it has
  // returned is a request, even if the monitor thread has not run yet.
  if (m->ps_sig) m->ps_seen = g_ps_requests[m->ps_sig].load(std::memory_order_relaxed);
  monitor* raw = m.get();
  try {
    m->th = std::thread([raw] { run(raw); });
  } catch (const std::system_error& e) {
    std::lock_guard<std::mutex> l(g_sig_mu);
    if (m->stall_sig) release_signal(m->stall_sig, false);
    if (m->ps_sig) release_signal(m->ps_sig, true);
    return absl::ResourceExhaustedError(
        absl::StrCat("Runtime::create: starting the monitor thread failed: ", e.what()));
  }
  rs->mon = m.release();
  return absl::OkStatus();
}

void stop_monitor(runtime_state* rs) {
  monitor* m = rs->mon;
  if (m == nullptr || m->stop.load(std::memory_order_relaxed)) return;
  m->stop.store(true, std::memory_order_release);
  ring_bell();
}

void join_monitor(runtime_state* rs, bool leaking) {
  monitor* m = rs->mon;
  if (m == nullptr) return;
  stop_monitor(rs);
  if (leaking) {
    // A worker never answers: a ps dump in progress may wait for it forever. Give the
    // monitor a moment to notice `stop`; if it does not finish, it is left running: the
    // runtime's memory stays allocated (leaked) for the workers, rs->mon keeps the monitor
    // reachable from it, and its signal handlers stay installed (it may still signal).
    const absl::Time deadline = absl::Now() + absl::Milliseconds(200);
    while (!m->done.load(std::memory_order_acquire) && absl::Now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (!m->done.load(std::memory_order_acquire)) {
      m->th.detach();
      return;
    }
  }
  rs->mon = nullptr;
  // Otherwise the monitor finishes: the workers still answer messages (a snapshot in
  // progress completes), and it rechecks `stop` before each use of the runtime's state.
  m->th.join();
  // Only now: a signal it sent is then already delivered, to our handler.
  {
    std::lock_guard<std::mutex> l(g_sig_mu);
    if (m->stall_sig) release_signal(m->stall_sig, false);
    if (m->ps_sig) release_signal(m->ps_sig, true);
  }
  delete m;
}

}  // namespace lwkt::internal
