// Seeded chaos tester: from a seed, generates a random but legal program over the public
// lwkt API (every call made only from a context its header allows) and checks invariants
// during and after every run.
//
// A run: a Runtime with 2..6 workers (more than the machine's cores; random pinning, idle
// spin, adaptive idle spin in a quarter of the seeds, round-robin slice, preemption, kick
// mechanism, thread cache and guard size), 3..12 top-level lwkt threads, each doing a
// random sequence of operations drawn from the enabled classes:
//
//   create    create children (held or not, any worker, priority, stack size) and join them
//   yield     yield, yield_quick, maybe_yield, kern_yield, lwkt_pause
//   pri       setpri_self / setpri
//   sched     spurious schedule() of other threads; deschedule()+schedule() pairs
//   migrate   setcpu_self / migratecpu to random workers (also while holding tokens)
//   giveaway  giveaway() of a private child blocked in tsleep, acquire() on another worker
//   gvjoin    the same with a child blocked in join (a completion wait)
//   sleep     producer/consumer channels: tsleep (interlocked, timed, PCATCH), wakeup,
//             wakeup_one, Runtime::wakeup; every consumer is bounded (lost wakeup = failure)
//   intr      interrupt() of other threads (counted), and of a private PCATCH sleeper that
//             must return EINTR / ERESTART
//   token     exclusive, shared, recursive, several at once, pool tokens, trytoken,
//             token_swap, token_ref; yielding, sleeping, migrating, creating a child that
//             needs the token, all while holding them
//   ipi       send_ipiq/2/3, passive, mask, nested sends from handlers, wait_ipiq, seq_ipiq
//   ipitok    handlers that trytoken() a token threads also take
//   cpusync   cpusync_simple / quick / interlock+deinterlock (participants must be quiet)
//   exc       C++ throw/catch with switches inside catch blocks and during unwinding
//   preempt   preemptable children: schedule() must run them at once on top of the caller
//   rr        round robin: a yielding thread lets its equal (pri, upri) peer run; kern_yield
//   rrupri    the same with peers of equal pri and different upri (sched.h: "an
//             equal-priority thread waits"; kern_yield: "behind every thread of its
//             priority")
//   fifo      wakeup_one wakes the sleepers of one worker in sleep order
//   misc      snapshot() from lwkt threads, per_worker, critical sections around
//             non-switching calls
//   shutdown  a quarter of the runs call Runtime::shutdown(grace) from main at a random
//             moment, with threads still running, runnable or blocked (such runs create only
//             on the caller's worker and skip cpusync, wait_ipiq and snapshot: a thread
//             abandoned in those would spin forever or leak what its stack references)
//   spinner   ... and one of them yields forever (runnable, never blocked)
//   shutstats ... and Runtime::stats() after shutdown must still balance (threads_created ==
//             threads_reaped + abandoned, live_threads == abandoned)
//   outside   an OS thread (not a worker) calls Runtime::wakeup, spawn (and joins), snapshot,
//             interrupt, schedule and deschedule+schedule on lwkt threads
//   outshut   ... and keeps calling spawn/wakeup/snapshot while shutdown runs
//   outwake   ... and calls lwkt::wakeup / wakeup_one (sleep.h: "Runs on: any OS thread")
//   points    arms the runtime's interleaving points (lwkt::testing::set_chaos_seed) with
//             the seed for the run, so that rare windows inside the runtime open often
//
// Invariants: no two threads inside a token's region while running (an owner/shared marker
// set when the holder runs and cleared before every switch point, since tokens are released
// while switched out and reacquired before the thread runs again); no thread marked running
// on two workers, no two threads marked running on one worker, no switch where the API says
// none happens; every thread created is joined (or reported abandoned by shutdown);
// Runtime::stats() balance; every wait is bounded (a lost wakeup is a failure naming the
// seed); exception state is per thread; shutdown returns and names what it abandoned.
//
// Every choice a thread makes comes from std::mt19937_64 seeded by the seed and the thread
// (each operation draws a fixed block of numbers first), so a seed replays the same program;
// the interleaving differs from run to run. The mask is part of the program: replay with the
// same LWKT_CHAOS_OPS (every failure prints "chaos seed N failed: ..." and both values; a
// runtime panic or sanitizer report prints the same line from its abort / death hook).
//
// Environment (or flags --chaos_seed=N, --chaos_seeds=K, --chaos_ops=..., --chaos_first_seed=S,
// --chaos_verbose, --chaos_max_failures=F, --chaos_wait_s=S, --chaos_repeat=R):
//   LWKT_CHAOS_SEED=N          run only seed N, verbose
//   LWKT_CHAOS_SEEDS=K         number of seeds (default 1200; asan 1200, tsan 700; qemu / 10)
//   LWKT_CHAOS_FIRST_SEED=S    first seed (default 1)
//   LWKT_CHAOS_OPS=mask        enabled classes: a number (0x...) or names, e.g.
//                              "token,sleep" or "all,-shutdown,-fifo"
//   LWKT_CHAOS_MAX_FAILURES=F  stop after F failing seeds (default 1)
//   LWKT_CHAOS_VERBOSE=1       one line per seed
//   LWKT_CHAOS_WAIT_S=S        bound on any single wait (default 10)
//   LWKT_CHAOS_REPEAT=R        run each seed R times (failures that need a particular
//                              interleaving: LWKT_CHAOS_SEED=N LWKT_CHAOS_REPEAT=50)
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "lwkt/ipi.h"
#include "lwkt/per_worker.h"
#include "lwkt/priority.h"
#include "lwkt/runtime.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "lwkt/testing.h"
#include "lwkt/thread.h"
#include "lwkt/token.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#include <sanitizer/common_interface_defs.h>
#define CHAOS_SANITIZER 1
#else
#define CHAOS_SANITIZER 0
#endif

// No sanitizer suppressions. A thread abandoned by shutdown has its stack freed without
// unwinding (runtime.h), so an exception it was handling would never be destroyed: runs
// that shut down do not throw (the exc class is off in shutdown mode).

namespace lwkt::chaos {
namespace {

using Clock = std::chrono::steady_clock;

double secs_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// ---- Operation classes.

enum : std::uint64_t {
  kCreate = 1u << 0,
  kYield = 1u << 1,
  kPri = 1u << 2,
  kSched = 1u << 3,
  kMigrate = 1u << 4,
  kGiveaway = 1u << 5,
  kSleep = 1u << 6,
  kIntr = 1u << 7,
  kToken = 1u << 8,
  kIpi = 1u << 9,
  kIpiTok = 1u << 10,
  kCpusync = 1u << 11,
  kExc = 1u << 12,
  kPreempt = 1u << 13,
  kRr = 1u << 14,
  kRrUpri = 1u << 15,
  kFifo = 1u << 16,
  kMisc = 1u << 17,
  kShutdown = 1u << 18,
  kOutside = 1u << 19,
  kOutShut = 1u << 20,
  kOutWake = 1u << 21,
  kGvJoin = 1u << 22,
  kSpinner = 1u << 23,
  kShutStats = 1u << 24,
  kPoints = 1u << 25,
};

struct ClassInfo {
  std::uint64_t bit;
  const char* name;
  int weight;  // for thread operations; 0: a mode, not an operation
};

constexpr ClassInfo kClasses[] = {
    {kCreate, "create", 8},   {kYield, "yield", 10},     {kPri, "pri", 4},
    {kSched, "sched", 6},     {kMigrate, "migrate", 8},  {kGiveaway, "giveaway", 3},
    {kSleep, "sleep", 14},    {kIntr, "intr", 4},        {kToken, "token", 12},
    {kIpi, "ipi", 6},         {kIpiTok, "ipitok", 0},    {kCpusync, "cpusync", 3},
    {kExc, "exc", 5},         {kPreempt, "preempt", 3},  {kRr, "rr", 2},
    {kRrUpri, "rrupri", 2},   {kFifo, "fifo", 2},        {kMisc, "misc", 4},
    {kShutdown, "shutdown", 0}, {kOutside, "outside", 0}, {kOutShut, "outshut", 0},
    {kOutWake, "outwake", 0}, {kGvJoin, "gvjoin", 3},
    {kSpinner, "spinner", 0}, {kShutStats, "shutstats", 0},  {kPoints, "points", 0},
};
constexpr std::uint64_t kAllOps = (kPoints << 1) - 1;
// The default mask: every class. (giveaway and gvjoin were left out while seeds 107 (tsan)
// and 845 (default) aborted with "giveaway of a thread that is queued (flags=0x2)": a
// victim blocked in a join had been queued by a late schedule from its earlier remote
// create's completion. giveaway() now takes a queued thread runnable; regression test
// lwkt/ownership_test GiveawayOfAQueuedThreadTravelsRunnable.)
constexpr std::uint64_t kDefaultOps = kAllOps;

std::string mask_names(std::uint64_t m) {
  std::vector<std::string> v;
  for (const ClassInfo& c : kClasses) {
    if (m & c.bit) v.push_back(c.name);
  }
  return v.empty() ? "none" : absl::StrJoin(v, ",");
}

// "0x1ff", "123", "token,sleep", "all,-fifo".
bool parse_ops(const std::string& s, std::uint64_t* out) {
  if (s.empty()) return false;
  if (std::isdigit(static_cast<unsigned char>(s[0]))) {
    char* end = nullptr;
    *out = std::strtoull(s.c_str(), &end, 0) & kAllOps;
    return end && *end == '\0';
  }
  std::uint64_t m = 0;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    bool neg = !part.empty() && part[0] == '-';
    if (neg) part.remove_prefix(1);
    std::uint64_t bits = 0;
    if (part == "all") {
      bits = kAllOps;
    } else {
      for (const ClassInfo& c : kClasses) {
        if (part == c.name) bits = c.bit;
      }
      if (!bits) return false;
    }
    m = neg ? (m & ~bits) : (m | bits);
  }
  *out = m;
  return true;
}

// ---- Configuration.

struct Config {
  std::uint64_t first_seed = 1;
  int seeds = 0;          // 0: default
  bool single = false;    // LWKT_CHAOS_SEED given
  std::uint64_t ops = kDefaultOps;
  bool verbose = false;
  int max_failures = 1;
  int repeat = 1;         // runs of each seed (the interleaving differs each time)
  double wait_s = 10;     // bound on one wait
};

Config& config() {
  static Config c;
  return c;
}

// About 22 ms a seed on the 2-core development VM, 25 ms under asan, 80 ms under tsan: the
// defaults take about 26 s, 30 s and 57 s there (3,100 seeds over the three).
int default_seeds() {
#if defined(__SANITIZE_THREAD__)
  int n = 700;
#elif defined(__SANITIZE_ADDRESS__)
  int n = 1200;
#else
  int n = 1200;
#endif
  if (testing::under_qemu()) n /= 10;
  return n;
}

// ---- Fatal-signal reporting: a runtime panic aborts the process; name the seed first.

std::atomic<std::uint64_t> g_seed{0};
std::atomic<std::uint64_t> g_ops{0};
std::atomic<bool> g_in_run{false};
std::atomic<bool> g_fatal_reported{false};
std::atomic<bool> g_leaked{false};

std::size_t put_s(char* b, std::size_t at, const char* s) {
  while (*s && at < 500) b[at++] = *s++;
  return at;
}
std::size_t put_u(char* b, std::size_t at, std::uint64_t v, int base) {
  char t[24];
  int n = 0;
  do {
    t[n++] = "0123456789abcdef"[v % static_cast<unsigned>(base)];
    v /= static_cast<unsigned>(base);
  } while (v);
  while (n && at < 500) b[at++] = t[--n];
  return at;
}

void report_fatal(const char* why) {
  if (!g_in_run.load() || g_fatal_reported.exchange(true)) return;
  char b[512];
  std::size_t n = 0;
  n = put_s(b, n, "\nchaos seed ");
  n = put_u(b, n, g_seed.load(), 10);
  n = put_s(b, n, " failed: ");
  n = put_s(b, n, why);
  n = put_s(b, n, " (replay: LWKT_CHAOS_SEED=");
  n = put_u(b, n, g_seed.load(), 10);
  n = put_s(b, n, " LWKT_CHAOS_OPS=0x");
  n = put_u(b, n, g_ops.load(), 16);
  n = put_s(b, n, ")\n");
  (void)!write(2, b, n);
}

void on_fatal_signal(int sig) {
  report_fatal(sig == SIGABRT ? "the process aborted (runtime panic or sanitizer report above)"
                              : "fatal signal");
  signal(sig, SIG_DFL);
  raise(sig);
}

#if CHAOS_SANITIZER
void on_sanitizer_death() { report_fatal("sanitizer report above"); }
#endif

void install_fatal_handlers() {
  signal(SIGABRT, on_fatal_signal);
#if CHAOS_SANITIZER
  __sanitizer_set_death_callback(on_sanitizer_death);
#else
  // The runtime's guard-page handler (installed at the first worker start) chains to this.
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_fatal_signal;
  sa.sa_flags = SA_ONSTACK | SA_RESETHAND;
  sigaction(SIGSEGV, &sa, nullptr);
  sigaction(SIGBUS, &sa, nullptr);
#endif
}

// ---- Run state.

constexpr int kMaxW = 6;
constexpr int kNamedTokens = 4;
constexpr int kHx = kNamedTokens;             // the token handlers trytoken (ipitok)
constexpr int kPool = 3;                      // pool-token addresses
constexpr int kSlots = kNamedTokens + 1 + kPool;
constexpr int kMaxChans = 4;
constexpr int kMaxRefs = 24;                  // our bound on token references per thread

struct TokCheck {
  std::atomic<const void*> owner{nullptr};    // the exclusive holder while it runs
  std::atomic<int> shared{0};                 // shared holders while they run
  long counter = 0;                           // written only under the exclusive token
};

struct Chan {
  std::atomic<std::int64_t> units{0};
  std::atomic<int> open{0};                   // producers that have not finished
  std::atomic<bool> closed{false};
  std::atomic<std::int64_t> produced{0}, consumed{0}, gave_up{0};
  std::vector<int> producers;                 // top-level indexes
  char ident = 0;                             // its address is the wait channel
};

enum class Kind {
  kTop,
  kChild,
  kGvVictim,
  kGvGrand,
  kPreemptor,
  kFifoSleeper,
  kRrPeer,
  kOutSpawn,
  kSpinner,
  kIntrTarget,
  kTokChild,
};

struct Run;

struct FifoGroup {
  std::atomic<int> arrived{0}, slots{0}, woken{0};  // woken: counted after order[] is written
  std::atomic<int> order[8];
  char chan = 0;
  FifoGroup() {
    for (auto& o : order) o.store(-1);
  }
};

struct Ctx {
  Run* run = nullptr;
  int id = 0;
  Kind kind = Kind::kTop;
  int depth = 0;
  std::string name;
  std::mt19937_64 rng;
  int nops = 0;
  int pri = TDPRI_KERN_DAEMON;
  int upri = 0;
  bool preemptable = false;

  std::atomic<thread*> td{nullptr};
  std::atomic<int> running{0};                // worker + 1 while marked running
  int cur_cpu = -1;                           // owner only
  std::atomic<std::uint32_t> guard{0};        // kClosed | kMig | operator count
  std::atomic<std::uint64_t> resumes{0};
  std::atomic<bool> started{false}, finished{false};
  std::atomic<bool> desched_ever{false};      // some operator deschedule()d it once
  std::atomic<const char*> where{"not started"};

  // Interrupts sent to this thread (by operators) and PCATCH results it saw.
  std::atomic<int> intr_sent{0}, intr_restart_sent{0};
  int eintr = 0, erestart = 0;

  // References to the threads this one created, owned here rather than on the lwkt stack:
  // shutdown frees an abandoned thread's stack without unwinding it. Owner only (main
  // clears it after the run).
  struct Kid {
    thread_ref ref;
    Ctx* ctx = nullptr;
  };
  std::deque<Kid> kids;

  // Token references held or wanted, in token-stack order.
  int stk[kMaxRefs] = {};
  int nstk = 0;
  int refs[kSlots] = {};
  bool excl[kSlots] = {};
  long tok_incs[kNamedTokens] = {};

  // Channels (top-level threads).
  std::vector<int> prod_chans, cons_chans;

  // Special programs.
  int mode = 0;
  char priv = 0;                              // private wait channel
  std::atomic<int> gv_state{0}, gv_cpu{-1}, gv_target{-1};
  std::atomic<bool> go{false};
  std::atomic<Ctx*> helper{nullptr};          // giveaway: the grandchild
  FifoGroup* fifo = nullptr;
  int fifo_idx = 0;
  int tok_slot = -1;                          // token child: which token
  std::atomic<int> result{0};
  int mig_target = -1;
};

constexpr std::uint32_t kClosed = 0x80000000u;
constexpr std::uint32_t kMig = 0x40000000u;
constexpr std::uint32_t kCountMask = 0x3fffffffu;

struct IpiRec {
  Run* run = nullptr;
  std::atomic<int> ran{0};
  int expect_cpu = -1;                        // -1: any (mask / nested)
  std::atomic<std::uint64_t> seen{0};         // workers that ran a mask message
  int magic = 0;
};

struct Run {
  std::uint64_t seed = 0;
  std::uint64_t ops = 0;
  bool verbose = false;
  bool shutdown_mode = false;
  bool spinner = false;
  int nw = 2;
  int ntop = 0;
  Runtime::Options opts;
  Runtime* rt = nullptr;
  double wait_s = 10;
  Clock::time_point start;

  std::atomic<bool> abort{false};
  std::atomic<bool> stopping{false};          // main is about to call shutdown
  std::atomic<bool> post_shutdown{false};     // shutdown returned
  std::atomic<bool> outsider_stop{false}, outsider_done{false};

  std::atomic<Ctx*> on_cpu[kMaxW] = {};
  std::atomic<std::uint64_t> activity[kMaxW] = {};

  lwkt_token toks[kNamedTokens + 1] = {lwkt_token("chaos-t0"), lwkt_token("chaos-t1"),
                                       lwkt_token("chaos-t2"), lwkt_token("chaos-t3"),
                                       lwkt_token("chaos-hx")};
  TokCheck chk[kSlots];
  char pool_obj[kPool][64] = {};

  Chan chans[kMaxChans];
  int nchans = 0;

  // Spin-waits (wait_ipiq, cpusync) cost OS time slices when workers outnumber cores: a
  // small budget per run keeps runs short.
  std::atomic<int> spin_budget{8}, cs_budget{3};
  std::atomic<int> cs_active{0};
  std::atomic<std::uint64_t> cs_ever{0};

  std::unique_ptr<per_worker<std::atomic<int>>> pw;

  std::mutex mu;                              // guards the containers below
  std::vector<std::unique_ptr<Ctx>> ctxs;
  std::vector<thread_ref> all;                // a reference to every thread created
  std::vector<std::string> failures;          // guarded by fail_mu
  std::deque<IpiRec> ipirecs;
  std::deque<FifoGroup> fifos;

  std::vector<Ctx*> top;                      // the registry: operators' victims
  std::atomic<int> created{0}, joined{0}, remaining_top{0};
  std::atomic<std::uint64_t> opcount{0};

  std::mutex outside_mu;                      // interrupt/schedule from outside vs shutdown

  std::mutex fail_mu;                         // guards failures (taken under mu too)
  void fail(const std::string& m) {
    std::lock_guard<std::mutex> l(fail_mu);
    if (failures.size() < 20) failures.push_back(m);
  }
  bool has(std::uint64_t bit) const { return (ops & bit) != 0; }
  Ctx* new_ctx(Kind k, Ctx* parent, std::uint64_t rseed) {
    auto c = std::make_unique<Ctx>();
    Ctx* p = c.get();
    p->run = this;
    p->kind = k;
    p->depth = parent ? parent->depth + 1 : 0;
    p->rng.seed(rseed);
    std::lock_guard<std::mutex> l(mu);
    p->id = static_cast<int>(ctxs.size());
    static const char* const kKindName[] = {"top", "child", "gv", "gvg", "pre", "fifo",
                                            "rr", "out", "spin", "intr", "tokc"};
    p->name = absl::StrFormat("%s%d", kKindName[static_cast<int>(k)], p->id);
    ctxs.push_back(std::move(c));
    return p;
  }
  void record(thread_ref& ref) {
    thread_ref extra(ref.get());  // another hold: the run keeps every thread object
    std::lock_guard<std::mutex> l(mu);
    all.push_back(std::move(extra));
    created.fetch_add(1);
  }
  IpiRec* new_ipirec() {
    std::lock_guard<std::mutex> l(mu);
    ipirecs.emplace_back();
    ipirecs.back().run = this;
    return &ipirecs.back();
  }
  FifoGroup* new_fifo() {
    std::lock_guard<std::mutex> l(mu);
    fifos.emplace_back();
    return &fifos.back();
  }
};

const void* const kHandlerTag = reinterpret_cast<const void*>(0x1);

template <typename... A>
void failf(Ctx* c, const absl::FormatSpec<A...>& f, const A&... a) {
  c->run->fail(absl::StrCat(c->name, ": ", absl::StrFormat(f, a...)));
}

// ---- Token markers.

TokCheck& chk(Run* r, int slot) { return r->chk[slot]; }

const char* slot_name(int slot) {
  static const char* const n[] = {"chaos-t0", "chaos-t1", "chaos-t2", "chaos-t3",
                                  "chaos-hx", "pool0",    "pool1",    "pool2"};
  return n[slot];
}

void mark_slot(Ctx* c, int s, const char* what) {
  TokCheck& k = chk(c->run, s);
  thread* self = c->td.load();
  if (c->excl[s]) {
    const void* prev = k.owner.exchange(self);
    if (prev != nullptr) {
      failf(c, "token %s: resumed holding it exclusively after %s while %s was marked inside",
            slot_name(s), what, prev == kHandlerTag ? "a message handler" : "another thread");
    }
    int sh = k.shared.load();
    if (sh != 0) {
      failf(c, "token %s: resumed holding it exclusively after %s while %d shared holder(s) ran",
            slot_name(s), what, sh);
    }
  } else {
    k.shared.fetch_add(1);
    const void* o = k.owner.load();
    if (o != nullptr) {
      failf(c, "token %s: resumed holding it shared after %s while an exclusive holder ran",
            slot_name(s), what);
    }
  }
}

void unmark_slot(Ctx* c, int s, const char* what) {
  TokCheck& k = chk(c->run, s);
  if (c->excl[s]) {
    const void* expect = c->td.load();
    if (!k.owner.compare_exchange_strong(expect, nullptr)) {
      failf(c, "token %s: exclusive marker overwritten while held (before %s)", slot_name(s),
            what);
      k.owner.store(nullptr);
    }
  } else {
    k.shared.fetch_sub(1);
  }
}

// ---- Running markers: set when a thread resumes, cleared before each switch point.

void enter(Ctx* c, const char* what) {
  Run* r = c->run;
  if (r->post_shutdown.load()) failf(c, "ran after shutdown returned (after %s)", what);
  const int cpu = mycpuid();
  thread* self = curthread();
  if (cpu < 0 || cpu >= r->nw) {
    failf(c, "mycpuid() is %d after %s (runtime has %d workers)", cpu, what, r->nw);
    std::abort();
  }
  if (self != c->td.load()) failf(c, "curthread() is not this thread after %s", what);
  const int prev = c->running.exchange(cpu + 1);
  if (prev != 0) {
    failf(c, "resumed on worker %d after %s while still marked running on worker %d", cpu, what,
          prev - 1);
  }
  Ctx* other = r->on_cpu[cpu].exchange(c);
  if (other != nullptr) {
    failf(c, "resumed on worker %d after %s while %s was marked running there", cpu, what,
          other->name);
  }
  c->cur_cpu = cpu;
  c->resumes.fetch_add(1, std::memory_order_relaxed);
  r->activity[cpu].fetch_add(1);
  c->where.store(what, std::memory_order_relaxed);
  for (int s = 0; s < kSlots; ++s) {
    if (c->refs[s] > 0) mark_slot(c, s, what);
  }
}

void leave(Ctx* c, const char* what) {
  Run* r = c->run;
  for (int s = 0; s < kSlots; ++s) {
    if (c->refs[s] > 0) unmark_slot(c, s, what);
  }
  const int cpu = mycpuid();
  if (cpu != c->cur_cpu) {
    failf(c, "moved from worker %d to %d with no switch point (before %s)", c->cur_cpu, cpu,
          what);
  }
  Ctx* expect = c;
  if (c->cur_cpu >= 0 && !r->on_cpu[c->cur_cpu].compare_exchange_strong(expect, nullptr)) {
    failf(c, "worker %d's running marker names %s, not this thread (before %s): something ran "
          "there meanwhile",
          c->cur_cpu, expect ? expect->name : std::string("nobody"), what);
    r->on_cpu[c->cur_cpu].store(nullptr);
  }
  const int prev = c->running.exchange(0);
  if (prev != c->cur_cpu + 1) {
    failf(c, "running marker was %d, expected %d (before %s)", prev - 1, c->cur_cpu, what);
  }
  c->where.store(what, std::memory_order_relaxed);
}

// Calls f() (which may switch) between leave() and enter().
template <typename F>
decltype(auto) sw(Ctx* c, const char* what, F&& f) {
  leave(c, what);
  if constexpr (std::is_void_v<decltype(f())>) {
    f();
    enter(c, what);
  } else {
    auto v = f();
    enter(c, what);
    return v;
  }
}

void pause_us(Ctx* c, int us, const char* what = "lwkt_pause") {
  sw(c, what, [&] { return lwkt_pause(absl::Microseconds(us)); });
}

// Blocks (polling with short sleeps, so lower-priority threads run) until pred() holds.
// Bounded: a wait longer than wait_s is a failure and aborts the run.
template <typename P>
bool wait_for(Ctx* c, const char* what, P&& pred) {
  const auto t0 = Clock::now();
  for (int i = 0; !pred(); ++i) {
    if (c->run->abort.load()) return false;
    if (secs_since(t0) > c->run->wait_s) {
      failf(c, "waited more than %.0f s for %s (lost wakeup or starvation)", c->run->wait_s, what);
      c->run->abort.store(true);
      return false;
    }
    pause_us(c, i < 50 ? 10 : 200, what);
  }
  return true;
}

// ---- The alive guard: operators (other threads acting on this one) count themselves in;
// the thread waits for them before it exits, so schedule() never targets an exited thread.
// kMig excludes migration: held by the thread itself around setcpu_self, or by an operator
// around deschedule()+schedule(), so both requests reach the same owner in order.

bool guard_enter(Ctx* v, bool mig) {
  std::uint32_t g = v->guard.load();
  for (;;) {
    if (g & kClosed) return false;
    if (mig && (g & kMig)) return false;
    const std::uint32_t n = (g + 1) | (mig ? kMig : 0);
    if (v->guard.compare_exchange_weak(g, n)) return true;
  }
}

void guard_exit(Ctx* v, bool mig) {
  std::uint32_t g = v->guard.load();
  for (;;) {
    const std::uint32_t n = (g - 1) & ~(mig ? kMig : 0u);
    if (v->guard.compare_exchange_weak(g, n)) return;
  }
}

bool self_mig_lock(Ctx* c) {
  std::uint32_t g = c->guard.load();
  for (;;) {
    if (g & kMig) return false;
    if (c->guard.compare_exchange_weak(g, g | kMig)) return true;
  }
}
void self_mig_unlock(Ctx* c) { c->guard.fetch_and(~kMig); }

// ---- Parameters: every operation draws the same number of values first, so the choices
// of a thread depend only on its seed, never on the interleaving.

struct P {
  std::uint64_t r[8];
  int pick(int i, int n) const { return static_cast<int>(r[i] % static_cast<std::uint64_t>(n)); }
  bool chance(int i, int pct) const { return static_cast<int>(r[i] % 100) < pct; }
};

P draw(std::mt19937_64& g) {
  P p;
  for (auto& x : p.r) x = g();
  return p;
}

const int kPriLadder[] = {TDPRI_IDLE_WORK, TDPRI_USER_NORM, TDPRI_KERN_USER, TDPRI_KERN_DAEMON,
                          TDPRI_KERN_DAEMON, TDPRI_KERN_DAEMON, TDPRI_SOFT_NORM, TDPRI_INT_SUPPORT,
                          TDPRI_INT_HIGH, TDPRI_MAX};

int random_pri(const P& p, int i) {
  return kPriLadder[p.pick(i, static_cast<int>(sizeof kPriLadder / sizeof kPriLadder[0]))];
}

// ---- Thread creation.

void thread_entry(void* arg);

// Creates a thread for ctx k (records it in the run). Returns c's reference to it (in
// c->kids), null if creation failed: in shutdown runs with FailedPrecondition once shutdown
// has begun.
thread_ref* make_thread(Ctx* c, Ctx* k, thread_options o) {
  Run* r = c->run;
  // Shutdown runs create locally only: a creator abandoned while waiting for a remote
  // create would leave the new thread referenced from a stack nobody unwinds.
  if (r->shutdown_mode) o.worker = mycpuid();
  o.name = k->name;
  k->pri = o.pri;
  k->upri = o.upri;
  k->preemptable = o.preemptable;
  absl::StatusOr<thread_ref> ref =
      sw(c, "create", [&] { return lwkt::create(thread_entry, k, o); });
  if (!ref.ok()) {
    if (!(r->shutdown_mode && absl::IsFailedPrecondition(ref.status()))) {
      failf(c, "create failed: %s", ref.status().ToString());
    }
    return nullptr;
  }
  r->record(*ref);
  c->kids.push_back(Ctx::Kid{std::move(*ref), k});
  return &c->kids.back().ref;
}

void join_child(Ctx* c, thread_ref& ref, Ctx* k) {
  if (!ref) return;
  sw(c, "join", [&] { ref.join(); });
  if (!ref.exited()) failf(c, "join of %s returned but exited() is false", k->name);
  if (ref.abandoned()) failf(c, "join of %s: abandoned() while the runtime runs", k->name);
  if (!k->finished.load() && !c->run->abort.load()) {
    failf(c, "join of %s returned before its function finished", k->name);
  }
  c->run->joined.fetch_add(1);
  ref.reset();
}

void join_all_children(Ctx* c) {
  for (Ctx::Kid& k : c->kids) join_child(c, k.ref, k.ctx);  // no-op for joined ones
  c->kids.clear();
}

Ctx* pick_victim(Ctx* c, const P& p, int i) {
  Run* r = c->run;
  if (r->top.empty()) return nullptr;
  Ctx* v = r->top[static_cast<std::size_t>(p.pick(i, static_cast<int>(r->top.size())))];
  if (v == c || v->td.load() == nullptr) return nullptr;
  return v;
}

// ---- Operations.

void run_program(Ctx* c, int nops);
void op_token(Ctx* c, const P& p, int level);
void op_exc(Ctx* c, const P& p, bool inside_tokens);

void op_create(Ctx* c, const P& p) {
  Run* r = c->run;
  if (c->depth >= 2) return;
  const int n = 1 + p.pick(0, 3);
  std::mt19937_64 g(p.r[7]);
  for (int i = 0; i < n; ++i) {
    P q = draw(g);
    Ctx* k = r->new_ctx(Kind::kChild, c, q.r[0]);
    k->nops = 2 + q.pick(1, c->depth == 0 ? 10 : 5);
    thread_options o;
    o.pri = random_pri(q, 2);
    o.upri = q.pick(3, 3);
    o.worker = q.chance(4, 35) ? kAnyWorker : q.pick(4, r->nw);
    static const std::size_t kStacks[] = {0, 0, 96 * 1024, 160 * 1024};
    o.stack_size = kStacks[q.pick(5, 4)];
    o.nostart = q.chance(6, 25);
    thread_ref* ref = make_thread(c, k, o);
    if (!ref) return;
    if (o.nostart) {
      if (q.chance(7, 50)) sw(c, "yield", [] { yield(); });
      schedule(ref->get());  // held, never started: alive
    }
    if (p.chance(1, 50)) join_child(c, *ref, k);  // else joined at the end of the program
  }
}

void op_yield(Ctx* c, const P& p) {
  const int n = 1 + p.pick(0, 5);
  for (int i = 0; i < n; ++i) {
    switch ((p.r[1] >> (4 * i)) % 7) {
      case 0:
        sw(c, "yield", [] { yield(); });
        break;
      case 1:
        sw(c, "yield_quick", [] { yield_quick(); });
        break;
      case 2:
        sw(c, "maybe_yield", [] { maybe_yield(); });
        break;
      case 3:
        (void)should_yield();  // never switches
        break;
      case 4:
        sw(c, "kern_yield", [] { kern_yield(kPriUser); });
        break;
      case 5:
        pause_us(c, static_cast<int>((p.r[2] >> (4 * i)) % 50));
        break;
      default: {
        const int pri = random_pri(p, 3);
        sw(c, "kern_yield(pri)", [&] { kern_yield(pri); });
        c->pri = pri;
        break;
      }
    }
  }
}

void op_pri(Ctx* c, const P& p) {
  const int pri = random_pri(p, 0);
  if (p.chance(1, 50)) {
    setpri_self(pri);
  } else {
    setpri(curthread(), pri);
  }
  c->pri = pri;  // setpri never switches: the markers would catch it
}

void op_sched(Ctx* c, const P& p) {
  Ctx* v = pick_victim(c, p, 0);
  if (!v) return;
  if (p.chance(1, 50)) {
    // Spurious schedule: always legal on a live thread; its waits re-check their conditions.
    if (!guard_enter(v, false)) return;
    schedule(v->td.load());
    guard_exit(v, false);
    return;
  }
  // deschedule + schedule: v cannot migrate meanwhile (kMig) and we do not either, so both
  // requests travel to the same owner in order; v ends up runnable.
  if (!guard_enter(v, true)) return;
  thread* td = v->td.load();
  v->desched_ever.store(true);
  deschedule(td);
  switch (p.pick(2, 3)) {
    case 0:
      break;
    case 1:
      sw(c, "yield", [] { yield(); });
      break;
    default:
      pause_us(c, p.pick(3, 200));
  }
  schedule(td);
  guard_exit(v, true);
}

void do_migrate(Ctx* c, int target, bool via_migratecpu) {
  if (!self_mig_lock(c)) return;  // an operator holds us in place
  if (via_migratecpu) {
    sw(c, "migratecpu", [&] { migratecpu(target); });
  } else {
    sw(c, "setcpu_self", [&] { setcpu_self(target); });
  }
  self_mig_unlock(c);
  if (mycpuid() != target) failf(c, "setcpu_self(%d) returned on worker %d", target, mycpuid());
  std::atomic<int>& mine = c->run->pw->local();
  if (&mine != &c->run->pw->at(target)) failf(c, "per_worker::local() is not worker %d's", target);
  mine.fetch_add(1);
}

void op_migrate(Ctx* c, const P& p) {
  const int n = 1 + p.pick(0, 3);
  for (int i = 0; i < n; ++i) {
    do_migrate(c, static_cast<int>((p.r[1] >> (8 * i)) % static_cast<unsigned>(c->run->nw)),
               p.chance(2, 20));
    if (p.chance(3, 50)) sw(c, "yield", [] { yield(); });
  }
}

// Giveaway: a private child A (nobody else knows it) blocks in tsleep or in a join on our
// worker; we give it away (it is neither queued nor running), move to worker Y, acquire it
// there and release it; it must resume on Y.
void op_giveaway(Ctx* c, const P& p, bool join_mode) {
  Run* r = c->run;
  if (c->depth >= 2) return;
  const int here = mycpuid();
  Ctx* a = r->new_ctx(Kind::kGvVictim, c, p.r[0]);
  a->mode = join_mode ? 1 : 0;
  thread_options o;
  o.pri = random_pri(p, 2);
  o.worker = here;
  thread_ref* rp = make_thread(c, a, o);
  if (!rp) return;
  thread_ref& ref = *rp;
  if (!wait_for(c, "giveaway victim to block", [&] { return a->gv_state.load() == 1; })) {
    a->go.store(true);  // abort path: let it finish (joined at the end of the program)
    if (Ctx* h = a->helper.load()) h->go.store(true);
    return;
  }
  if (mycpuid() != here || a->gv_cpu.load() != here) {
    failf(c, "giveaway: victim on worker %d, giver on %d (created on %d)", a->gv_cpu.load(),
          mycpuid(), here);
    a->go.store(true);
    if (Ctx* h = a->helper.load()) {
      h->go.store(true);
      wakeup(&h->priv);
    }
    wakeup(&a->priv);
    join_child(c, ref, a);
    return;
  }
  // A is blocked (it set gv_state just before blocking, and we run on its worker), or
  // queued by a late schedule (legal: giveaway takes it runnable).
  giveaway(ref.get());
  int y = p.pick(3, r->nw);
  if (p.chance(4, 30)) pause_us(c, p.pick(5, 100));  // A has no owner meanwhile
  if (y != mycpuid()) {
    if (self_mig_lock(c)) {
      sw(c, "setcpu_self", [&] { setcpu_self(y); });
      self_mig_unlock(c);
    } else {
      y = mycpuid();
    }
  }
  if (mycpuid() != y) failf(c, "setcpu_self(%d) returned on worker %d", y, mycpuid());
  acquire(ref.get());
  a->gv_target.store(y);
  if (a->mode == 0) {
    a->go.store(true);
    schedule(ref.get());
  } else {
    Ctx* h = a->helper.load();
    h->go.store(true);
    wakeup(&h->priv);
    if (p.chance(6, 30)) schedule(ref.get());  // spurious: A re-blocks in its join
  }
  join_child(c, ref, a);
}

void gv_victim_program(Ctx* c) {
  Run* r = c->run;
  if (c->mode == 1) {
    Ctx* g = r->new_ctx(Kind::kGvGrand, c, c->rng());
    c->helper.store(g);
    thread_options o;
    o.worker = static_cast<int>(c->rng() % static_cast<unsigned>(r->nw));
    thread_ref* ref = make_thread(c, g, o);
    if (!ref) {
      c->helper.store(nullptr);
      return;
    }
    leave(c, "join (giveaway victim)");
    c->gv_cpu.store(mycpuid());
    c->gv_state.store(1);
    ref->join();
    enter(c, "join (giveaway victim)");
    r->joined.fetch_add(1);
    if (!g->finished.load() && !r->abort.load()) failf(c, "join returned before %s finished", g->name);
    ref->reset();
  } else {
    leave(c, "tsleep (giveaway victim)");
    c->gv_cpu.store(mycpuid());
    c->gv_state.store(1);
    while (!c->go.load()) {
      const int e = tsleep(&c->priv, 0, "gv", absl::ZeroDuration());
      if (e != 0) {
        enter(c, "tsleep (giveaway victim)");
        failf(c, "untimed tsleep without PCATCH returned %d", e);
        leave(c, "tsleep (giveaway victim)");
      }
    }
    enter(c, "tsleep (giveaway victim)");
  }
  const int t = c->gv_target.load();
  if (t >= 0 && mycpuid() != t && !r->abort.load()) {
    failf(c, "given away and acquired by worker %d, but resumed on worker %d", t, mycpuid());
  }
  if (c->rng() % 2) sw(c, "yield", [] { yield(); });
}

void gv_grand_program(Ctx* c) {
  // Waits, with the interlock protocol, for the giver's go.
  leave(c, "tsleep (giveaway grandchild)");
  for (;;) {
    tsleep_interlock(&c->priv);
    if (c->go.load() || c->run->abort.load()) break;
    (void)tsleep(&c->priv, PINTERLOCKED, "gvg", absl::ZeroDuration());
  }
  enter(c, "tsleep (giveaway grandchild)");
}

// ---- Sleep / wakeup on the run's channels.

bool take_unit(Chan& ch) {
  std::int64_t u = ch.units.load();
  while (u > 0) {
    if (ch.units.compare_exchange_weak(u, u - 1)) return true;
  }
  return false;
}

void check_sleep_result(Ctx* c, int e, int flags, absl::Duration to, Clock::time_point t0,
                        const char* what) {
  const bool timed = to > absl::ZeroDuration();
  if (e == 0) return;
  if (e == EWOULDBLOCK && timed) {
    const double el = secs_since(t0);
    const double want = absl::ToDoubleSeconds(to);
    // Loose on purpose: the runtime times sleeps with its TSC-based cheap clock, this check
    // with steady_clock, and the two rates may differ slightly on a VM. The exact "never
    // early" promise is sleep_test TimeoutReturnsEwouldblockAndNeverEarly; this one catches
    // a timeout that fires grossly early (a unit or saturation bug) under chaos.
    if (el < want * 0.98 - 20e-6) {
      failf(c, "%s: EWOULDBLOCK after %.1f us, before its %.1f us timeout", what, el * 1e6,
            want * 1e6);
    }
    return;
  }
  if ((flags & PCATCH) && e == EINTR) {
    ++c->eintr;
    return;
  }
  if ((flags & PCATCH) && e == ERESTART) {
    ++c->erestart;
    return;
  }
  failf(c, "%s: tsleep(flags 0x%x, timeout %s) returned %d", what, flags,
        absl::FormatDuration(to), e);
}

void op_consume(Ctx* c, const P& p) {
  Run* r = c->run;
  Chan& ch = r->chans[c->cons_chans[static_cast<std::size_t>(
      p.pick(1, static_cast<int>(c->cons_chans.size())))]];
  const int flags = p.chance(2, 40) ? PCATCH : 0;
  static const absl::Duration kTo[] = {absl::ZeroDuration(), absl::ZeroDuration(),
                                       absl::Microseconds(50), absl::Milliseconds(1),
                                       absl::Milliseconds(20)};
  const absl::Duration to = kTo[p.pick(3, 5)];
  // An untimed sleep must be interlocked (else a wakeup between the check and the sleep is
  // lost by design); a timed one may be either.
  const bool interlocked = to == absl::ZeroDuration() || p.chance(4, 50);
  const auto t0 = Clock::now();
  for (;;) {
    if (take_unit(ch)) {
      ch.consumed.fetch_add(1);
      return;
    }
    if (ch.closed.load()) {
      if (take_unit(ch)) {
        ch.consumed.fetch_add(1);
      } else {
        ch.gave_up.fetch_add(1);
      }
      return;
    }
    if (r->abort.load()) return;
    if (secs_since(t0) > r->wait_s) {
      failf(c, "consumer waited more than %.0f s on channel %d (%lld units, %s): lost wakeup",
            r->wait_s, static_cast<int>(&ch - r->chans), static_cast<long long>(ch.units.load()),
            ch.closed.load() ? "closed" : "open");
      r->abort.store(true);
      return;
    }
    int e;
    Clock::time_point ts;
    if (interlocked) {
      tsleep_interlock(&ch.ident, flags);
      if (ch.units.load() > 0 || ch.closed.load()) continue;
      ts = Clock::now();
      e = sw(c, "tsleep (consume)",
             [&] { return tsleep(&ch.ident, flags | PINTERLOCKED, "consume", to); });
    } else {
      ts = Clock::now();
      e = sw(c, "tsleep (consume)", [&] { return tsleep(&ch.ident, flags, "consume", to); });
    }
    check_sleep_result(c, e, flags, to, ts, "consume");
  }
}

void op_produce(Ctx* c, const P& p) {
  Run* r = c->run;
  Chan& ch = r->chans[c->prod_chans[static_cast<std::size_t>(
      p.pick(1, static_cast<int>(c->prod_chans.size())))]];
  const int n = 1 + p.pick(2, 3);
  for (int i = 0; i < n; ++i) {
    ch.produced.fetch_add(1);
    ch.units.fetch_add(1);
    switch ((p.r[3] >> (4 * i)) % 6) {
      case 0:
      case 1:
        wakeup(&ch.ident);
        break;
      case 5:
        r->rt->wakeup_one(&ch.ident);
        break;
      case 2:
        wakeup_one(&ch.ident);
        break;
      case 3:
        wakeup_one(&ch.ident);
        wakeup_mycpu(&ch.ident);  // extra, local only
        break;
      default:
        r->rt->wakeup(&ch.ident);  // from a worker: lwkt::wakeup
    }
    if (p.chance(4, 30)) sw(c, "yield", [] { yield(); });
  }
}

void op_sleep(Ctx* c, const P& p) {
  const bool can_c = !c->cons_chans.empty(), can_p = !c->prod_chans.empty();
  if (can_c && (!can_p || p.chance(0, 50))) {
    op_consume(c, p);
  } else if (can_p) {
    op_produce(c, p);
  } else {
    // Neither: a timed sleep on a private channel, possibly woken early by an operator.
    const auto t0 = Clock::now();
    const absl::Duration to = absl::Microseconds(1 + p.pick(1, 100));
    const int flags = p.chance(2, 30) ? PCATCH : 0;
    const int e = sw(c, "tsleep (private)", [&] { return tsleep(&c->priv, flags, "priv", to); });
    check_sleep_result(c, e, flags, to, t0, "private tsleep");
  }
}

void close_channels(Ctx* c) {
  Run* r = c->run;
  for (int i : c->prod_chans) {
    Chan& ch = r->chans[i];
    if (ch.open.fetch_sub(1) == 1) {
      ch.closed.store(true);
      wakeup(&ch.ident);
    }
  }
}

// ---- Interrupts.

void intr_target_program(Ctx* c) {
  Run* r = c->run;
  if (c->mig_target >= 0) do_migrate(c, c->mig_target, false);
  const bool timed = c->mode == 1;
  const auto t0 = Clock::now();
  leave(c, "tsleep PCATCH (interrupt target)");
  int e = 0;
  for (;;) {
    e = tsleep(&c->priv, PCATCH, "intr", timed ? absl::Microseconds(500) : absl::ZeroDuration());
    if (e == EINTR || e == ERESTART) break;
    if (r->abort.load()) break;
    if (e != 0 && !(timed && e == EWOULDBLOCK)) break;
    if (secs_since(t0) > r->wait_s) {
      e = -2;
      break;
    }
  }
  enter(c, "tsleep PCATCH (interrupt target)");
  if (e == -2) {
    failf(c, "interrupt lost: PCATCH sleeper still asleep after %.0f s", r->wait_s);
    r->abort.store(true);
  }
  c->result.store(e);
}

void op_intr(Ctx* c, const P& p) {
  Run* r = c->run;
  if (p.chance(0, 50) || c->depth >= 2) {
    Ctx* v = pick_victim(c, p, 1);
    if (!v || !guard_enter(v, false)) return;
    const bool restart = p.chance(2, 30);
    v->intr_sent.fetch_add(1);
    if (restart) v->intr_restart_sent.fetch_add(1);
    interrupt(v->td.load(), restart);
    guard_exit(v, false);
    return;
  }
  // A private PCATCH sleeper (maybe migrating first) must end with EINTR / ERESTART.
  Ctx* k = r->new_ctx(Kind::kIntrTarget, c, p.r[3]);
  k->mode = p.pick(4, 2);
  k->mig_target = p.chance(5, 40) ? p.pick(6, r->nw) : -1;
  thread_options o;
  o.worker = p.chance(6, 30) ? kAnyWorker : p.pick(7, r->nw);
  o.pri = random_pri(p, 7);
  thread_ref* rp = make_thread(c, k, o);
  if (!rp) return;
  thread_ref& ref = *rp;
  const bool restart = p.chance(2, 30);
  switch (p.pick(1, 4)) {
    case 0:
      break;  // possibly before it even runs: "now or the next one"
    case 1:
      sw(c, "yield", [] { yield(); });
      break;
    case 2:
      pause_us(c, p.pick(3, 300));
      break;
    default:
      wait_for(c, "interrupt target to start", [&] { return k->started.load(); });
  }
  interrupt(ref.get(), restart);
  join_child(c, ref, k);
  const int e = k->result.load();
  if (!r->abort.load() && e != (restart ? ERESTART : EINTR)) {
    failf(c, "interrupt(%s, restart=%d): its PCATCH tsleep returned %d, expected %d", k->name,
          restart, e, restart ? ERESTART : EINTR);
  }
}

// ---- Tokens.

bool tok_push(Ctx* c, int s, bool shared, bool try_only) {
  if (c->nstk >= kMaxRefs) return false;
  if (c->refs[s] > 0) {
    if (!c->excl[s] && !shared) return false;  // exclusive while holding it shared: forbidden
    if (c->excl[s] && shared) return false;    // keep it simple: recursion in the same mode
  }
  Run* r = c->run;
  const bool first = c->refs[s] == 0;
  if (s > kHx) {  // pool token (exclusive only)
    if (shared || try_only) return false;
    leave(c, "getpooltoken");
    c->stk[c->nstk++] = s;
    ++c->refs[s];
    c->excl[s] = true;
    lwkt_token* t = getpooltoken(r->pool_obj[s - kHx - 1]);
    if (t == nullptr) std::abort();
    enter(c, "getpooltoken");
    return true;
  }
  lwkt_token* t = &r->toks[s];
  if (try_only) {
    if (shared) return false;
    if (!trytoken(t)) return false;
    c->stk[c->nstk++] = s;
    ++c->refs[s];
    c->excl[s] = true;
    if (first) mark_slot(c, s, "trytoken");
    return true;
  }
  leave(c, shared ? "gettoken_shared" : "gettoken");
  c->stk[c->nstk++] = s;
  ++c->refs[s];
  c->excl[s] = !shared;
  if (shared) {
    gettoken_shared(t);
  } else {
    gettoken(t);
  }
  enter(c, shared ? "gettoken_shared" : "gettoken");
  return true;
}

void tok_pop(Ctx* c) {
  const int s = c->stk[c->nstk - 1];
  if (c->refs[s] == 1) unmark_slot(c, s, "reltoken");
  --c->refs[s];
  --c->nstk;
  if (s > kHx) {
    relpooltoken(c->run->pool_obj[s - kHx - 1]);
  } else {
    reltoken(&c->run->toks[s]);
  }
  if (c->refs[s] == 0) c->excl[s] = false;
}

int cnt_slot(Ctx* c, int s) {
  if (s > kHx) return -1;
  return cnttoken(&c->run->toks[s]);
}

// Work under the token: counters of exclusively held tokens must not change while we run.
void tok_work(Ctx* c) {
  Run* r = c->run;
  for (int s = 0; s < kNamedTokens; ++s) {
    if (c->refs[s] > 0 && c->excl[s]) {
      TokCheck& k = r->chk[s];
      const long v = k.counter;
      for (int i = 0; i < 50; ++i) {
        asm volatile("" ::: "memory");
      }
      if (k.counter != v) failf(c, "token %s: counter changed under an exclusive hold", slot_name(s));
      k.counter = v + 1;
      ++c->tok_incs[s];
    } else if (c->refs[s] > 0) {
      (void)r->chk[s].counter;  // shared holders read
    }
  }
}

void tok_child_program(Ctx* c) {
  // Needs the token its parent holds: it gets it while the parent is blocked in join.
  tok_push(c, c->tok_slot, false, false);
  tok_work(c);
  if (c->rng() % 2) sw(c, "yield", [] { yield(); });
  tok_work(c);
  tok_pop(c);
}

void op_token(Ctx* c, const P& p, int level) {
  Run* r = c->run;
  const int base = c->nstk;
  const int n = 1 + p.pick(0, level == 0 ? 3 : 2);
  const int nslots = r->has(kIpiTok) ? kNamedTokens + 1 : kNamedTokens;
  for (int i = 0; i < n; ++i) {
    const std::uint64_t x = p.r[1] >> (16 * i);
    int s;
    if (x % 5 == 0) {
      s = kHx + 1 + static_cast<int>((x >> 3) % kPool);
    } else {
      s = static_cast<int>((x >> 3) % static_cast<unsigned>(nslots));
    }
    const bool shared = s < kHx && (x >> 8) % 100 < 35;
    const bool try_only = !shared && (x >> 12) % 100 < 15;
    tok_push(c, s, shared, try_only);
  }
  // A scoped token_ref, too.
  if (p.chance(2, 20) && c->nstk < kMaxRefs && c->refs[3] == 0) {
    const bool sh = p.chance(3, 50);
    leave(c, "token_ref");
    c->stk[c->nstk++] = 3;
    ++c->refs[3];
    c->excl[3] = !sh;
    {
      token_ref tr(&r->toks[3], sh);
      enter(c, "token_ref");
      tok_work(c);
      sw(c, "yield", [] { yield(); });
      tok_work(c);
      unmark_slot(c, 3, "~token_ref");
      --c->refs[3];
      --c->nstk;
      c->excl[3] = false;
    }
  }
  for (int s = 0; s <= kHx; ++s) {
    if (c->refs[s] > 0 && cnt_slot(c, s) != c->refs[s]) {
      failf(c, "cnttoken(%s) is %d, we hold %d references", slot_name(s), cnt_slot(c, s),
            c->refs[s]);
    }
  }
  std::mt19937_64 g(p.r[7]);
  const int inner = p.pick(4, 5);
  for (int i = 0; i < inner && !r->abort.load(); ++i) {
    P q = draw(g);
    tok_work(c);
    switch (q.pick(0, 11)) {
      case 0:
        sw(c, "yield", [] { yield(); });
        break;
      case 1:
        sw(c, "yield_quick", [] { yield_quick(); });
        break;
      case 2:
        pause_us(c, q.pick(1, 50));
        break;
      case 3: {
        const auto t0 = Clock::now();
        const absl::Duration to = absl::Microseconds(1 + q.pick(1, 40));
        const int e = sw(c, "tsleep (holding tokens)",
                         [&] { return tsleep(&c->priv, 0, "tok", to); });
        check_sleep_result(c, e, 0, to, t0, "tsleep holding tokens");
        break;
      }
      case 4:
        if (r->has(kMigrate)) do_migrate(c, q.pick(1, r->nw), false);
        break;
      case 5: {
        // A child that needs one of our exclusive tokens: it runs while we wait in join.
        if (!r->has(kCreate)) break;
        int s = -1;
        for (int k = 0; k < kNamedTokens; ++k) {
          if (c->refs[k] > 0 && c->excl[k]) s = k;
        }
        if (s < 0) break;
        Ctx* k = r->new_ctx(Kind::kTokChild, c, q.r[2]);
        k->tok_slot = s;
        thread_options o;
        o.worker = q.chance(3, 50) ? mycpuid() : q.pick(3, r->nw);
        o.pri = random_pri(q, 4);
        if (thread_ref* ref = make_thread(c, k, o)) join_child(c, *ref, k);
        break;
      }
      case 6:
        if (level < 1) op_token(c, q, level + 1);
        break;
      case 7:
        if (c->nstk - base >= 2) {
          token_swap();
          std::swap(c->stk[c->nstk - 1], c->stk[c->nstk - 2]);
          tok_pop(c);
        }
        break;
      case 8:
        if (r->has(kExc) && !r->shutdown_mode) op_exc(c, q, true);
        break;
      case 9:
        sw(c, "kern_yield", [] { kern_yield(kPriUser); });
        break;
      default:
        tok_work(c);
    }
  }
  tok_work(c);
  while (c->nstk > base) tok_pop(c);
}

// ---- IPIs.

void ipi_note(IpiRec* rec, int cpu, const char* what) {
  if (rec->expect_cpu >= 0 && cpu != rec->expect_cpu) {
    rec->run->fail(absl::StrFormat("%s handler ran on worker %d, sent to worker %d", what, cpu,
                                   rec->expect_cpu));
  }
}

void ipi_tok(Run* r) {
  if (!r->has(kIpiTok)) return;
  lwkt_token* t = &r->toks[kHx];
  if (!trytoken(t)) return;
  TokCheck& k = r->chk[kHx];
  thread* cur = curthread();
  const void* o = k.owner.load();
  bool set = false;
  if (o != cur) {  // recursion on the interrupted thread's own hold is legal
    const void* expect = nullptr;
    if (!k.owner.compare_exchange_strong(expect, kHandlerTag)) {
      r->fail(absl::StrFormat("handler on worker %d got chaos-hx by trytoken while another "
                              "holder was marked inside",
                              mycpuid()));
    } else {
      set = true;
    }
    if (k.shared.load() != 0) r->fail("handler got chaos-hx while shared holders ran");
  }
  if (set) k.owner.store(nullptr);
  reltoken(t);
}

void ipi_h1(void* a) {
  auto* rec = static_cast<IpiRec*>(a);
  ipi_note(rec, mycpuid(), "send_ipiq");
  ipi_tok(rec->run);
  rec->ran.fetch_add(1);
}

void ipi_h2(void* a, int arg2) {
  auto* rec = static_cast<IpiRec*>(a);
  ipi_note(rec, mycpuid(), "send_ipiq2");
  if (arg2 != rec->magic) rec->run->fail("send_ipiq2: handler got the wrong argument");
  rec->ran.fetch_add(1);
}

void ipi_h3(void* a, int hops, globaldata* gd) {
  auto* rec = static_cast<IpiRec*>(a);
  const int cpu = mycpuid();
  if (gd == nullptr) rec->run->fail("send_ipiq3: the handler got no worker");
  ipi_note(rec, cpu, "send_ipiq3");
  ipi_tok(rec->run);
  if (hops > 0) {
    // Handlers may send; the chain's next hop goes to the next worker.
    rec->expect_cpu = -1;
    send_ipiq3((cpu + 1) % rec->run->nw, ipi_h3, rec, hops - 1);
  } else if (hops < 0) {
    const std::uint64_t bit = std::uint64_t{1} << cpu;
    if (rec->seen.fetch_or(bit) & bit) rec->run->fail("send_ipiq_mask: a worker ran it twice");
  }
  rec->ran.fetch_add(1);
}

void ipi_wake_h(void* a, int, globaldata*) {
  auto* r = static_cast<Run*>(a);
  wakeup(&r->chans[0].ident);  // spurious wakeup from a handler: legal, harmless
}

void op_ipi(Ctx* c, const P& p) {
  Run* r = c->run;
  const int n = 1 + p.pick(0, 4);
  // wait_ipiq spins: never across shutdown, and only a few per run.
  const bool may_spin = !r->shutdown_mode && r->spin_budget.fetch_sub(1) > 0;
  for (int i = 0; i < n; ++i) {
    const std::uint64_t x = p.r[1 + i];
    const int me = mycpuid();
    const int t = static_cast<int>(x % static_cast<unsigned>(r->nw));
    IpiRec* rec = r->new_ipirec();
    rec->expect_cpu = t;
    rec->magic = static_cast<int>(x >> 40);
    int expect = 1;
    std::uint32_t seq = 0;
    switch ((x >> 8) % 6) {
      case 0:
        seq = send_ipiq(t, ipi_h1, rec);
        break;
      case 1:
        seq = send_ipiq2(t, ipi_h2, rec, rec->magic);
        break;
      case 2: {
        const int hops = static_cast<int>((x >> 16) % 3);
        expect = 1 + hops;
        seq = send_ipiq3(t, ipi_h3, rec, hops);
        break;
      }
      case 3:
        if (t == me) {
          seq = send_ipiq(t, ipi_h1, rec);
        } else {
          (void)send_ipiq3_passive(t, ipi_h3, rec, 0);
          // Flush: an active message behind it on the same ring (per-pair order).
          seq = send_ipiq3(t, ipi_wake_h, r, 0);
        }
        break;
      case 4: {
        cpumask m;
        for (int w = 0; w < r->nw; ++w) {
          if ((x >> (20 + w)) & 1) m.set(static_cast<std::size_t>(w));
        }
        rec->expect_cpu = -1;
        expect = static_cast<int>(m.count());
        const int sent = send_ipiq_mask(m, ipi_h3, rec, -1);
        if (sent != expect) failf(c, "send_ipiq_mask sent %d, mask has %d", sent, expect);
        if (m.test(static_cast<std::size_t>(me)) &&
            !(rec->seen.load() & (std::uint64_t{1} << me))) {
          failf(c, "send_ipiq_mask: the sender's own part did not run at once");
        }
        if (may_spin) {
          for (int w = 0; w < r->nw; ++w) {
            if (w != me && m.test(static_cast<std::size_t>(w))) wait_ipiq(w, seq_ipiq(w));
          }
          if (rec->ran.load() != expect) {
            failf(c, "send_ipiq_mask: %d of %d ran after wait_ipiq", rec->ran.load(), expect);
          }
        }
        break;
      }
      default:
        seq = send_ipiq3(t, ipi_wake_h, r, 0);
        rec->ran.store(1);
        break;
    }
    const int kind = static_cast<int>((x >> 8) % 6);
    if (kind != 4) {
      if (t == me && kind != 5) {
        if (seq != 0) failf(c, "send to the own worker returned %u, not 0", seq);
        if (rec->ran.load() < 1) failf(c, "send to the own worker did not run at once");
      } else if (t != me && may_spin && (x >> 30) % 2) {
        const std::uint32_t last = seq_ipiq(t);
        if (static_cast<std::int32_t>(last - seq) < 0) {
          failf(c, "seq_ipiq(%d)=%u is before the send's sequence %u", t, last, seq);
        }
        wait_ipiq(t, seq);
        if (rec->ran.load() < 1) failf(c, "wait_ipiq(%d, %u) returned before the message ran", t, seq);
      }
    }
    wait_for(c, "IPI handlers", [&] { return rec->ran.load() >= expect; });
    if (rec->ran.load() > expect) failf(c, "IPI ran %d times, sent %d", rec->ran.load(), expect);
  }
}

// ---- cpusync.

struct CsRec {
  std::atomic<int> count[kMaxW] = {};
};

void cs_fn(void* d) {
  auto* rec = static_cast<CsRec*>(d);
  rec->count[mycpuid()].fetch_add(1);
}

void op_cpusync(Ctx* c, const P& p) {
  Run* r = c->run;
  if (r->shutdown_mode) return;  // participants spin: never across shutdown
  if (r->cs_budget.fetch_sub(1) <= 0) return;
  CsRec rec;
  cpumask m;
  for (int w = 0; w < r->nw; ++w) {
    if ((p.r[1] >> w) & 1) m.set(static_cast<std::size_t>(w));
  }
  const int me = mycpuid();
  switch (p.pick(0, 3)) {
    case 0:
      cpusync_simple(m, cs_fn, &rec);
      break;
    case 1: {
      cpusync cs;
      cs.cs_mask = m;
      cs.cs_func = cs_fn;
      cs.cs_data = &rec;
      cpusync_quick(&cs);
      break;
    }
    default: {
      cpusync cs;
      cs.cs_mask = m;
      cs.cs_func = cs_fn;
      cs.cs_data = &rec;
      const int before_active = r->cs_active.fetch_add(1);
      const std::uint64_t ever = r->cs_ever.fetch_add(1);
      cpusync_interlock(&cs);
      // Held: the other participants run no thread until the deinterlock (unless one of them
      // is itself a cpusync master: then both only poll each other).
      std::uint64_t snap[kMaxW];
      for (int w = 0; w < r->nw; ++w) snap[w] = r->activity[w].load();
      const auto t0 = Clock::now();
      while (secs_since(t0) < 30e-6) {
      }
      const bool alone = before_active == 0 && r->cs_ever.load() == ever + 1;
      for (int w = 0; w < r->nw; ++w) {
        if (alone && w != me && m.test(static_cast<std::size_t>(w)) &&
            r->activity[w].load() != snap[w]) {
          failf(c, "cpusync_interlock: worker %d ran a thread while held", w);
        }
      }
      cpusync_deinterlock(&cs);
      r->cs_active.fetch_sub(1);
    }
  }
  for (int w = 0; w < r->nw; ++w) {
    const int want = m.test(static_cast<std::size_t>(w)) ? 1 : 0;
    if (rec.count[w].load() != want) {
      failf(c, "cpusync: worker %d ran the function %d times, expected %d", w,
            rec.count[w].load(), want);
    }
  }
}

// ---- Exceptions: each lwkt thread has its own exception state.

struct ChaosExc {
  const Ctx* owner;
  std::uint64_t serial;
};

void check_current(Ctx* c, std::uint64_t serial, const char* where) {
  std::exception_ptr ep = std::current_exception();
  if (!ep) {
    failf(c, "std::current_exception() is null in a catch block (%s)", where);
    return;
  }
  try {
    std::rethrow_exception(ep);
  } catch (const ChaosExc& e) {
    if (e.owner != c || e.serial != serial) {
      failf(c, "std::current_exception() is %s's exception #%llu, expected ours #%llu (%s)",
            e.owner ? e.owner->name : std::string("?"), static_cast<unsigned long long>(e.serial),
            static_cast<unsigned long long>(serial), where);
    }
  } catch (...) {
    failf(c, "std::current_exception() is not a ChaosExc (%s)", where);
  }
}

void exc_switch(Ctx* c, std::mt19937_64& g, bool inside_tokens) {
  switch (g() % (inside_tokens ? 3 : 5)) {
    case 0:
      sw(c, "yield (in catch)", [] { yield(); });
      break;
    case 1:
      pause_us(c, static_cast<int>(g() % 30), "lwkt_pause (in catch)");
      break;
    case 2:
      sw(c, "kern_yield (in catch)", [] { kern_yield(kPriUser); });
      break;
    case 3:
      if (c->run->has(kMigrate)) do_migrate(c, static_cast<int>(g() % c->run->nw), false);
      break;
    default: {
      const absl::Duration to = absl::Microseconds(5);
      (void)sw(c, "tsleep (in catch)", [&] { return tsleep(&c->priv, 0, "exc", to); });
    }
  }
}

struct UnwindYielder {
  Ctx* c;
  std::mt19937_64* g;
  ~UnwindYielder() {
    if (std::uncaught_exceptions() != 1) {
      failf(c, "std::uncaught_exceptions() is %d during unwinding (expected 1)",
            std::uncaught_exceptions());
    }
    exc_switch(c, *g, false);
    if (std::uncaught_exceptions() != 1) {
      failf(c, "std::uncaught_exceptions() is %d during unwinding after a switch",
            std::uncaught_exceptions());
    }
  }
};

void op_exc(Ctx* c, const P& p, bool inside_tokens) {
  std::mt19937_64 g(p.r[6]);
  static std::atomic<std::uint64_t> serials{1};
  const std::uint64_t s1 = serials.fetch_add(2);
  const std::uint64_t s2 = s1 + 1;
  const int variant = p.pick(0, 4);
  try {
    if (variant == 3 && !inside_tokens) {
      UnwindYielder y{c, &g};
      throw ChaosExc{c, s1};
    }
    throw ChaosExc{c, s1};
  } catch (const ChaosExc& e) {
    if (e.owner != c || e.serial != s1) failf(c, "caught someone else's exception");
    if (std::uncaught_exceptions() != 0) {
      failf(c, "std::uncaught_exceptions() is %d in a catch block", std::uncaught_exceptions());
    }
    exc_switch(c, g, inside_tokens);
    check_current(c, s1, "after a switch in the catch block");
    if (std::uncaught_exceptions() != 0) {
      failf(c, "std::uncaught_exceptions() is %d in a catch block after a switch",
            std::uncaught_exceptions());
    }
    if (variant == 1) {
      // Nested: the inner exception is current inside its handler, the outer one after.
      try {
        throw ChaosExc{c, s2};
      } catch (const ChaosExc& f) {
        exc_switch(c, g, inside_tokens);
        check_current(c, s2, "nested catch after a switch");
      }
      check_current(c, s1, "outer catch after the nested one");
    } else if (variant == 2) {
      // Rethrow after a switch: `throw;` must rethrow ours.
      try {
        try {
          throw ChaosExc{c, s2};
        } catch (...) {
          exc_switch(c, g, inside_tokens);
          throw;
        }
      } catch (const ChaosExc& f) {
        if (f.owner != c || f.serial != s2) {
          failf(c, "`throw;` after a switch rethrew %s's exception #%llu, expected #%llu",
                f.owner ? f.owner->name : std::string("?"),
                static_cast<unsigned long long>(f.serial), static_cast<unsigned long long>(s2));
        }
      }
      check_current(c, s1, "outer catch after a rethrow");
    }
    exc_switch(c, g, inside_tokens);
    check_current(c, s1, "end of the catch block");
  }
  if (std::current_exception()) failf(c, "std::current_exception() is set outside any catch");
  if (std::uncaught_exceptions() != 0) {
    failf(c, "std::uncaught_exceptions() is %d outside any catch", std::uncaught_exceptions());
  }
}

// ---- Preemption.

void op_preempt(Ctx* c, const P& p) {
  Run* r = c->run;
  if (c->pri >= TDPRI_MAX || c->depth >= 2) return;
  Ctx* k = r->new_ctx(Kind::kPreemptor, c, p.r[0]);
  k->mode = p.pick(1, 4);
  thread_options o;
  o.pri = c->pri + 1 + p.pick(2, TDPRI_MAX - c->pri);
  o.worker = mycpuid();
  o.preemptable = true;
  o.nostart = true;
  thread_ref* rp = make_thread(c, k, o);
  if (!rp) return;
  thread_ref& ref = *rp;
  if (mycpuid() != o.worker) {
    failf(c, "create (local) moved the caller");
  }
  if (p.chance(3, 70)) {
    // Outside a critical section, better than us, on our worker: it runs at once on top of us.
    sw(c, "schedule (preemptable)", [&] { schedule(ref.get()); });
    if (k->started.load() != r->opts.preempt) {
      failf(c, "schedule() of a better preemptable thread on our worker (pri %d > %d, preempt "
            "%s): it %s at once",
            o.pri, c->pri, r->opts.preempt ? "on" : "off",
            k->started.load() ? "ran" : "did not run");
    }
  } else {
    crit_enter();
    schedule(ref.get());
    if (k->started.load()) failf(c, "a preemptable thread ran inside the caller's critical section");
    sw(c, "crit_exit (preemption retry)", [] { crit_exit(); });
  }
  join_child(c, ref, k);
}

void preemptor_program(Ctx* c) {
  switch (c->mode) {
    case 0:
      break;
    case 1:
      sw(c, "yield (preemptor)", [] { yield(); });
      break;
    case 2:
      pause_us(c, 20, "lwkt_pause (preemptor)");
      break;
    default:
      tok_push(c, static_cast<int>(c->rng() % kNamedTokens), false, false);
      tok_work(c);
      tok_pop(c);
  }
}

// ---- Round robin.

void op_rr(Ctx* c, const P& p) {
  Run* r = c->run;
  if (c->depth >= 2) return;
  const bool upri_variant = r->has(kRrUpri) && (!r->has(kRr) || p.chance(0, 50));
  Ctx* q = r->new_ctx(Kind::kRrPeer, c, p.r[1]);
  thread_options o;
  o.pri = c->pri;
  o.upri = c->upri;
  if (upri_variant) o.upri = c->upri > 0 && p.chance(2, 50) ? c->upri - 1 : c->upri + 1;
  o.worker = mycpuid();
  // Held in place (kMig): no operator's deschedule()+schedule() starts meanwhile. One that
  // ran before may still have its requests in flight, and landing while we are inside
  // kern_yield they legitimately re-queue us by upri (ahead of a lower-upri peer): the strict
  // check is only for threads never descheduled by anyone.
  const bool pinned = self_mig_lock(c);
  thread_ref* rp = make_thread(c, q, o);
  if (!rp) {
    if (pinned) self_mig_unlock(c);
    return;
  }
  thread_ref& ref = *rp;
  if (p.chance(3, 50)) {
    // kern_yield: "goes behind every thread of its priority".
    sw(c, "kern_yield (rr)", [] { kern_yield(kPriUser); });
    if (pinned && !c->desched_ever.load() && !q->started.load() && !r->abort.load()) {
      failf(c, "kern_yield(kPriUser) at pri %d upri %d resumed before the queued peer %s (pri "
            "%d upri %d) ran",
            c->pri, c->upri, q->name, o.pri, o.upri);
    }
  } else {
    // yield: round robin among equal-priority threads once the slice is used.
    // Slices are at most 1 ms: 0.5 s and thousands of yields (time others took from us
    // does not count) are hundreds of rotations.
    // The peer is owed a turn only while it is queued: an operator's deschedule()+schedule()
    // pair (op_sched) may take it off the queue, and an operator on this worker with a
    // lower priority than ours cannot issue its schedule() while we yield (it never gets the
    // CPU: we are better). So a peer some operator descheduled is waited for only up to the
    // bound, then left to join_child, which blocks us and lets the operator finish.
    const auto t0 = Clock::now();
    for (long n = 0; !q->started.load() && !r->abort.load(); ++n) {
      if (secs_since(t0) > 0.5 && n > 5000) {
        if (q->desched_ever.load()) break;
        failf(c, "round robin: yielded %ld times in %.1f s at pri %d upri %d (rr_slice %s) and "
              "the queued peer %s (pri %d upri %d) never ran",
              n, secs_since(t0), c->pri, c->upri, absl::FormatDuration(r->opts.rr_slice),
              q->name, o.pri, o.upri);
        break;
      }
      sw(c, "yield (rr)", [] { yield(); });
    }
  }
  if (pinned) self_mig_unlock(c);
  join_child(c, ref, q);
}

// ---- wakeup_one order on one worker.

void fifo_sleeper_program(Ctx* c) {
  FifoGroup* g = c->fifo;
  leave(c, "tsleep (fifo)");
  const int a = g->arrived.fetch_add(1);  // no switch before the sleep: queue order
  const int e = tsleep(&g->chan, 0, "fifo", absl::ZeroDuration());
  enter(c, "tsleep (fifo)");
  if (e != 0) failf(c, "untimed tsleep returned %d", e);
  const int w = g->slots.fetch_add(1);
  if (w < 8) g->order[w].store(a);
  g->woken.fetch_add(1);
}

void op_fifo(Ctx* c, const P& p) {
  Run* r = c->run;
  if (c->depth >= 2) return;
  const int w = p.pick(0, r->nw);
  const int k = 2 + p.pick(1, 4);
  FifoGroup* g = r->new_fifo();
  thread_ref* refs[8] = {};
  Ctx* ks[8] = {};
  int made = 0;
  const int pri = random_pri(p, 2);
  for (int i = 0; i < k; ++i) {
    Ctx* s = r->new_ctx(Kind::kFifoSleeper, c, p.r[3] + static_cast<std::uint64_t>(i));
    s->fifo = g;
    s->fifo_idx = i;
    thread_options o;
    o.pri = pri;
    o.worker = w;
    thread_ref* ref = make_thread(c, s, o);
    if (!ref) break;
    refs[made] = ref;
    ks[made++] = s;
  }
  if (wait_for(c, "fifo sleepers to sleep", [&] { return g->arrived.load() == made; })) {
    for (int i = 0; i < made; ++i) {
      wakeup_one(&g->chan);
      if (!wait_for(c, "wakeup_one to wake a sleeper", [&] { return g->woken.load() >= i + 1; })) {
        break;
      }
      if (g->woken.load() != i + 1) {
        failf(c, "wakeup_one woke %d sleepers, expected %d", g->woken.load(), i + 1);
      }
    }
    std::string order;
    bool fifo = true;
    for (int i = 0; i < made; ++i) {
      const int a = g->order[i].load();
      absl::StrAppend(&order, i ? "," : "", a);
      fifo = fifo && a == i;
    }
    if (!fifo && !r->abort.load()) {
      failf(c, "wakeup_one on worker %d (from worker %d) woke sleepers in order [%s] of their "
            "sleeping (expected FIFO)",
            w, mycpuid(), order);
    }
  } else {
    for (int i = 0; i < made; ++i) wakeup(&g->chan);  // abort path
  }
  for (int i = 0; i < made; ++i) join_child(c, *refs[i], ks[i]);
}

// ---- Misc: snapshot, per_worker, critical sections around non-switching calls.

void op_misc(Ctx* c, const P& p) {
  Run* r = c->run;
  switch (p.pick(0, 3)) {
    case 0: {
      if (r->shutdown_mode) break;  // an abandoned snapshot leaks its request buffers
      absl::StatusOr<runtime_snapshot> s = sw(c, "snapshot", [&] { return r->rt->snapshot(); });
      if (!s.ok()) {
        failf(c, "snapshot failed while the runtime runs: %s", s.status().ToString());
        break;
      }
      if (static_cast<int>(s->workers.size()) != r->nw) {
        failf(c, "snapshot has %d workers, runtime %d", static_cast<int>(s->workers.size()), r->nw);
      }
      int seen = 0, on = -1;
      for (const auto& w : s->workers) {
        for (const auto& t : w.threads) {
          if (t.name == c->name) {
            ++seen;
            on = t.worker;
          }
        }
      }
      if (seen != 1 || on != mycpuid()) {
        failf(c, "snapshot lists this (blocked) thread %d times (worker %d, we run on %d)", seen,
              on, mycpuid());
      }
      break;
    }
    case 1: {
      std::atomic<int>& l = r->pw->local();
      if (&l != &r->pw->at(mycpuid())) failf(c, "per_worker::local() is not our worker's");
      l.fetch_add(1);
      break;
    }
    default: {
      crit_section cs;
      (void)should_yield();
      wakeup(&r->chans[0].ident);  // spurious
      if (r->has(kSched)) {
        Ctx* v = pick_victim(c, p, 1);
        if (v && guard_enter(v, false)) {
          schedule(v->td.load());
          guard_exit(v, false);
        }
      }
      if (r->has(kIpi)) {
        IpiRec* rec = r->new_ipirec();
        rec->expect_cpu = mycpuid();
        (void)send_ipiq(mycpuid(), ipi_h1, rec);
        if (rec->ran.load() != 1) failf(c, "send_ipiq to the own worker (in crit) did not run");
      }
      if (r->has(kToken)) {
        const int s = p.pick(2, kNamedTokens);
        if (c->refs[s] == 0) {
          if (tok_push(c, s, false, true)) tok_pop(c);
        }
      }
    }
  }
}

// ---- Programs.

struct Choice {
  std::uint64_t bit;
  int weight;
};

void run_program(Ctx* c, int nops) {
  Run* r = c->run;
  Choice ch[sizeof kClasses / sizeof kClasses[0]];  // no heap: stacks may be abandoned
  int nch = 0;
  for (const ClassInfo& k : kClasses) {
    if (!k.weight || !(r->ops & k.bit)) continue;
    if (k.bit == kSleep && c->kind != Kind::kTop) continue;
    if (c->kind == Kind::kOutSpawn &&
        (k.bit & (kCreate | kGiveaway | kGvJoin | kPreempt | kRr | kRrUpri | kFifo | kCpusync | kIntr))) {
      continue;
    }
    if ((k.bit == kCpusync || k.bit == kExc) && r->shutdown_mode) continue;
    ch[nch++] = {k.bit, k.weight};
  }
  int total = 0;
  for (int i = 0; i < nch; ++i) total += ch[i].weight;
  for (int i = 0; i < nops && total > 0; ++i) {
    if (r->abort.load()) break;
    P p = draw(c->rng);
    int w = static_cast<int>(c->rng() % static_cast<unsigned>(total));
    std::uint64_t bit = 0;
    for (int j = 0; j < nch; ++j) {
      if (w < ch[j].weight) {
        bit = ch[j].bit;
        break;
      }
      w -= ch[j].weight;
    }
    r->opcount.fetch_add(1, std::memory_order_relaxed);
    r->activity[mycpuid()].fetch_add(1);
    switch (bit) {
      case kCreate: op_create(c, p); break;
      case kYield: op_yield(c, p); break;
      case kPri: op_pri(c, p); break;
      case kSched: op_sched(c, p); break;
      case kMigrate: op_migrate(c, p); break;
      case kGiveaway: op_giveaway(c, p, false); break;
      case kGvJoin: op_giveaway(c, p, true); break;
      case kSleep: op_sleep(c, p); break;
      case kIntr: op_intr(c, p); break;
      case kToken: op_token(c, p, 0); break;
      case kIpi: op_ipi(c, p); break;
      case kCpusync: op_cpusync(c, p); break;
      case kExc: op_exc(c, p, false); break;
      case kPreempt: op_preempt(c, p); break;
      case kRr:
      case kRrUpri: op_rr(c, p); break;
      case kFifo: op_fifo(c, p); break;
      case kMisc: op_misc(c, p); break;
      default: break;
    }
    if (c->nstk != 0) failf(c, "token stack not empty after an operation");
  }
  join_all_children(c);
}

void spinner_program(Ctx* c) {
  // Runnable forever (it yields): shutdown must still stop it after its grace.
  const auto t0 = Clock::now();
  while (secs_since(t0) < c->run->wait_s + 2) sw(c, "yield (spinner)", [] { yield(); });
}

void thread_entry(void* arg) {
  auto* c = static_cast<Ctx*>(arg);
  Run* r = c->run;
  c->td.store(curthread());
  c->started.store(true);
  enter(c, "start");
  switch (c->kind) {
    case Kind::kTop:
    case Kind::kChild:
    case Kind::kOutSpawn:
      run_program(c, c->nops);
      break;
    case Kind::kGvVictim: gv_victim_program(c); break;
    case Kind::kGvGrand: gv_grand_program(c); break;
    case Kind::kPreemptor: preemptor_program(c); break;
    case Kind::kFifoSleeper: fifo_sleeper_program(c); break;
    case Kind::kRrPeer: break;
    case Kind::kSpinner: spinner_program(c); break;
    case Kind::kIntrTarget: intr_target_program(c); break;
    case Kind::kTokChild: tok_child_program(c); break;
  }
  if (c->kind == Kind::kTop) close_channels(c);
  // Wait out the operators (and anyone holding us in place) before exiting.
  // Not abandoned on abort: an operator still counted in would act on an exited thread.
  c->guard.fetch_or(kClosed);
  const auto t0 = Clock::now();
  for (bool told = false; (c->guard.load() & ~kClosed) != 0;) {
    if (!told && secs_since(t0) > r->wait_s) {
      failf(c, "operators did not leave within %.0f s", r->wait_s);
      r->abort.store(true);
      told = true;
    }
    pause_us(c, 20, "operators to leave");
  }
  if (c->nstk != 0) failf(c, "exits holding %d token references", c->nstk);
  c->finished.store(true);
  if (c->kind == Kind::kTop) r->remaining_top.fetch_sub(1);
  leave(c, "exit");
}

// ---- The outsider: an OS thread that is not a worker.

void outsider_main(Run* r, std::uint64_t seed) {
  std::mt19937_64 g(seed ^ 0x0b5e55ed);
  std::vector<thread_ref> spawned;
  std::vector<Ctx*> sctx;
  const bool during_shutdown = r->has(kOutShut);
  while (!r->outsider_stop.load()) {
    std::this_thread::sleep_for(std::chrono::microseconds(50 + g() % 400));
    if (r->post_shutdown.load()) break;
    const bool stopping = r->stopping.load();
    if (stopping && !during_shutdown) break;
    const std::uint64_t x = g();
    switch (x % 8) {
      case 0:
      case 1:
        if (r->nchans) {
          const void* ident = &r->chans[(x >> 8) % static_cast<unsigned>(r->nchans)].ident;
          if ((x >> 16) % 3) {
            r->rt->wakeup(ident);
          } else {
            r->rt->wakeup_one(ident);
          }
        }
        break;
      case 2: {
        if (spawned.size() >= 6) break;
        Ctx* k = r->new_ctx(Kind::kOutSpawn, nullptr, x >> 4);
        k->nops = 2 + static_cast<int>((x >> 12) % 5);
        thread_options o;
        o.name = k->name;
        o.worker = (x >> 20) % 3 == 0 ? kAnyWorker : static_cast<int>((x >> 24) % static_cast<unsigned>(r->nw));
        o.pri = kPriLadder[(x >> 28) % 10];
        k->pri = o.pri;
        absl::StatusOr<thread_ref> ref = r->rt->spawn(thread_entry, k, o);
        if (!ref.ok()) {
          if (!(absl::IsFailedPrecondition(ref.status()) && r->stopping.load())) {
            r->fail(absl::StrCat("outsider: spawn failed: ", ref.status().ToString()));
          }
          break;
        }
        r->record(*ref);
        spawned.push_back(std::move(*ref));
        sctx.push_back(k);
        break;
      }
      case 3: {
        if (r->shutdown_mode) break;  // an abandoned snapshot would leak its buffers
        absl::StatusOr<runtime_snapshot> s = r->rt->snapshot();
        if (!s.ok()) {
          if (!r->stopping.load()) {
            r->fail(absl::StrCat("outsider: snapshot failed: ", s.status().ToString()));
          }
        } else if (static_cast<int>(s->workers.size()) != r->nw) {
          r->fail("outsider: snapshot has the wrong number of workers");
        }
        break;
      }
      case 4:
      case 5:
      case 6: {
        // interrupt / schedule / deschedule+schedule on a registry thread, never racing
        // shutdown (outside_mu).
        std::lock_guard<std::mutex> l(r->outside_mu);
        if (r->stopping.load() || r->top.empty()) break;
        Ctx* v = r->top[(x >> 8) % r->top.size()];
        if (!v->td.load()) break;
        const int what = static_cast<int>(x % 8);
        if (what == 4 && r->has(kIntr)) {
          if (!guard_enter(v, false)) break;
          const bool restart = (x >> 16) % 3 == 0;
          v->intr_sent.fetch_add(1);
          if (restart) v->intr_restart_sent.fetch_add(1);
          interrupt(v->td.load(), restart);
          guard_exit(v, false);
        } else if (what == 5 && r->has(kSched)) {
          if (!guard_enter(v, false)) break;
          schedule(v->td.load());
          guard_exit(v, false);
        } else if (what == 6 && r->has(kSched)) {
          if (!guard_enter(v, true)) break;
          // schedule, deschedule, schedule: the last request must win.
          if ((x >> 24) % 2) schedule(v->td.load());
          v->desched_ever.store(true);
          deschedule(v->td.load());
          if ((x >> 20) % 2) std::this_thread::sleep_for(std::chrono::microseconds(20));
          schedule(v->td.load());
          guard_exit(v, true);
        }
        break;
      }
      default:
        if (r->has(kOutWake) && !stopping) {
          const void* ident =
              &r->chans[r->nchans ? (x >> 8) % static_cast<unsigned>(r->nchans) : 0].ident;
          if ((x >> 16) % 2) {
            lwkt::wakeup(ident);  // sleep.h: "Runs on: any OS thread"
          } else {
            lwkt::wakeup_one(ident);
          }
        }
    }
  }
  for (std::size_t i = 0; i < spawned.size(); ++i) {
    spawned[i].join();
    const bool ab = spawned[i].abandoned(), ex = spawned[i].exited();
    if (!ab) {
      r->joined.fetch_add(1);
      if (!sctx[i]->finished.load() && !r->abort.load()) {
        r->fail(absl::StrCat("outsider: join of ", sctx[i]->name, " returned with exited() ", ex,
                             " and abandoned() false, but the thread never finished",
                             r->shutdown_mode ? " (released by shutdown before it was marked "
                                                "abandoned?)"
                                              : ""));
      }
    }
  }
  spawned.clear();
  r->outsider_done.store(true);
}

// ---- One seed.

struct SeedResult {
  bool ok = true;
  bool leaked = false;
  std::string summary;
};

std::string unfinished(Run* r) {
  std::string s;
  std::lock_guard<std::mutex> l(r->mu);
  int n = 0;
  for (auto& c : r->ctxs) {
    if (c->started.load() && !c->finished.load()) {
      if (n++ < 24) absl::StrAppend(&s, " ", c->name, "[", c->where.load(), "]");
    }
  }
  return absl::StrCat(n, " unfinished:", s);
}

// Polls every 200 us until pred() holds or `secs` have passed since t0; returns pred().
template <typename P>
bool poll_until(Clock::time_point t0, double secs, P&& pred) {
  while (!pred() && secs_since(t0) < secs) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return pred();
}

// Runs fn on a helper OS thread; waits at most `limit` seconds. False: it did not return
// (the helper is detached and whatever it uses is leaked).
template <typename F>
bool with_timeout(double limit, F fn) {
  auto done = std::make_shared<std::atomic<bool>>(false);
  auto box = std::make_shared<F>(std::move(fn));
  std::thread t([done, box] {
    (*box)();
    done->store(true);
  });
  if (poll_until(Clock::now(), limit, [&] { return done->load(); })) {
    t.join();
    return true;
  }
  t.detach();
  return false;
}

// Tells the outside OS thread to stop and joins it, waiting at most wait_s. False (after
// failing the run with `what`): it did not finish, and is left running.
bool stop_outsider(Run* r, std::thread& out, const char* what) {
  r->outsider_stop.store(true);
  if (!out.joinable()) return true;
  if (!poll_until(Clock::now(), r->wait_s, [&] { return r->outsider_done.load(); })) {
    r->fail(what);
    return false;
  }
  out.join();
  return true;
}

SeedResult run_seed(std::uint64_t seed, std::uint64_t ops, bool verbose) {
  g_seed.store(seed);
  g_ops.store(ops);
  g_in_run.store(true);
  auto* r = new Run;  // leaked if the runtime hangs
  r->seed = seed;
  r->ops = ops;
  r->verbose = verbose;
  r->wait_s = config().wait_s;
  std::mt19937_64 g(seed * 0x9E3779B97F4A7C15ull + 0x5eed);
  r->nw = 2 + static_cast<int>(g() % 5);
  r->shutdown_mode = (ops & kShutdown) && g() % 4 == 0;
  r->spinner = r->shutdown_mode && g() % 2 == 0 && (ops & kSpinner);
  r->ntop = 3 + static_cast<int>(g() % 10);
  r->pw = std::make_unique<per_worker<std::atomic<int>>>(r->nw);
  Runtime::Options& o = r->opts;
  o.workers = r->nw;
  o.pin = g() % 2 == 0;
  static const int kSpin[] = {0, 5, 20};
  o.idle_spin = absl::Microseconds(kSpin[g() % 3]);
  static const int kSlice[] = {0, 100, 1000};
  o.rr_slice = absl::Microseconds(kSlice[g() % 3]);
  o.preempt = g() % 5 != 0;
  o.kick = g() % 3 == 0 ? ipiq::kick_mechanism::eventfd : ipiq::kick_mechanism::futex;
  static const std::size_t kCache[] = {0, 4, 64};
  o.thread_cache = kCache[g() % 3];
  o.stack_size = CHAOS_SANITIZER ? 256 * 1024 : 64 * 1024;
  o.guard_size = g() % 3 == 0 ? 4096 : Runtime::kDefaultGuardSize;
  o.token_warn = absl::Seconds(5);
  // A quarter of the runs use the adaptive idle spin (Options::idle_cpu_budget), chosen from
  // the seed itself rather than from g(), so that every other choice of a seed's program
  // stays what it was.
  o.idle_cpu_budget = (seed % 4 == 3) ? 0.05 : 0.0;
  const bool outsider = (ops & kOutside) && g() % 2 == 0;

  // Channels: producers are top-level threads; a consumer's index is above every producer's
  // (so no cycle of waits can form); the last producer to finish closes the channel.
  if ((ops & kSleep) && r->ntop >= 2) {
    r->nchans = 1 + static_cast<int>(g() % kMaxChans);
    for (int i = 0; i < r->nchans; ++i) {
      Chan& ch = r->chans[i];
      const int np = 1 + static_cast<int>(g() % 3);
      for (int k = 0; k < np; ++k) {
        const int t = static_cast<int>(g() % static_cast<unsigned>(r->ntop - 1));
        if (std::find(ch.producers.begin(), ch.producers.end(), t) == ch.producers.end()) {
          ch.producers.push_back(t);
        }
      }
      ch.open.store(static_cast<int>(ch.producers.size()));
    }
  }
  std::vector<Ctx*> tops;
  for (int i = 0; i < r->ntop; ++i) {
    Ctx* c = r->new_ctx(Kind::kTop, nullptr, seed * 1000003ull + static_cast<std::uint64_t>(i));
    c->nops = (r->shutdown_mode ? 3 : 5) + static_cast<int>(g() % 20);
    for (int k = 0; k < r->nchans; ++k) {
      const auto& pr = r->chans[k].producers;
      if (std::find(pr.begin(), pr.end(), i) != pr.end()) c->prod_chans.push_back(k);
      if (i > *std::max_element(pr.begin(), pr.end())) c->cons_chans.push_back(k);
    }
    tops.push_back(c);
  }
  r->top = tops;
  r->remaining_top.store(r->ntop);
  std::vector<thread_options> topts;
  for (int i = 0; i < r->ntop; ++i) {
    thread_options to;
    to.name = tops[static_cast<std::size_t>(i)]->name;
    to.pri = kPriLadder[g() % 10];
    to.upri = static_cast<int>(g() % 3);
    to.worker = g() % 3 == 0 ? kAnyWorker : static_cast<int>(g() % static_cast<unsigned>(r->nw));
    tops[static_cast<std::size_t>(i)]->pri = to.pri;
    tops[static_cast<std::size_t>(i)]->upri = to.upri;
    topts.push_back(to);
  }
  const int shutdown_delay_us = static_cast<int>(g() % 3000);
  static const int kGrace[] = {0, 1, 5, 20};
  const absl::Duration grace = absl::Milliseconds(kGrace[g() % 4]);

  SeedResult res;
  if (ops & kPoints) testing::set_chaos_seed(seed | 1);
  r->start = Clock::now();
  absl::StatusOr<std::unique_ptr<Runtime>> created = Runtime::create(o);
  if (!created.ok()) {
    res.ok = false;
    res.summary = absl::StrCat("Runtime::create failed: ", created.status().ToString());
    testing::set_chaos_seed(0);
    g_in_run.store(false);
    delete r;
    return res;
  }
  std::unique_ptr<Runtime> rt = std::move(*created);
  r->rt = rt.get();

  std::vector<thread_ref> toprefs;
  for (int i = 0; i < r->ntop; ++i) {
    Ctx* c = tops[static_cast<std::size_t>(i)];
    absl::StatusOr<thread_ref> ref = rt->spawn(thread_entry, c, topts[static_cast<std::size_t>(i)]);
    if (!ref.ok()) {
      r->fail(absl::StrCat("spawn failed: ", ref.status().ToString()));
      c->finished.store(true);
      r->remaining_top.fetch_sub(1);
      close_channels(c);
      toprefs.emplace_back();
      continue;
    }
    c->td.store(ref->get());
    r->record(*ref);
    toprefs.push_back(std::move(*ref));
  }
  if (r->spinner) {
    Ctx* s = r->new_ctx(Kind::kSpinner, nullptr, seed);
    thread_options so;
    so.name = s->name;
    so.worker = static_cast<int>(g() % static_cast<unsigned>(r->nw));
    absl::StatusOr<thread_ref> ref = rt->spawn(thread_entry, s, so);
    if (ref.ok()) {
      r->record(*ref);
    } else {
      r->fail(absl::StrCat("spawn failed: ", ref.status().ToString()));
    }
  }
  std::thread out;
  if (outsider) out = std::thread(outsider_main, r, seed);

  const double hang_s = r->wait_s * 1.5;
  bool leak = false;
  absl::Status shut;
  double shut_s = 0;
  if (!r->shutdown_mode) {
    if (!poll_until(r->start, hang_s, [&] { return r->remaining_top.load() == 0; })) {
      auto ps = std::make_shared<std::string>();
      const bool got = with_timeout(3, [ps, rtp = rt.get()] {
        absl::StatusOr<runtime_snapshot> s = rtp->snapshot();
        *ps = s.ok() ? s->ps() : s.status().ToString();
      });
      r->fail(absl::StrCat("hang: not finished after ", hang_s, " s: ", unfinished(r), "\n",
                           got ? *ps : std::string("(snapshot did not return)")));
      // Rescue what can be rescued, so the next seeds can run.
      r->abort.store(true);
      for (int i = 0; i < r->nchans; ++i) rt->wakeup(&r->chans[i].ident);
      {
        std::lock_guard<std::mutex> l(r->mu);
        for (auto& c : r->ctxs) rt->wakeup(&c->priv);
      }
      if (!poll_until(Clock::now(), 3, [&] { return r->remaining_top.load() == 0; })) leak = true;
    }
    if (!leak) {
      for (std::size_t i = 0; i < toprefs.size(); ++i) {
        if (!toprefs[i]) continue;
        toprefs[i].join();
        r->joined.fetch_add(1);
        if (!tops[i]->finished.load() && !r->abort.load()) {
          r->fail(absl::StrCat("main: join of ", tops[i]->name, " returned before it finished"));
        }
      }
      if (!stop_outsider(r, out, "outsider did not finish (join of a spawned thread hangs)")) {
        leak = true;
      }
    }
    if (!leak && !r->abort.load()) {
      // Everything is joined: the runtime is quiescent and the counters must balance.
      runtime_stats st = rt->stats();
      for (int i = 0; i < 50 && (st.live_threads != 0 || st.threads_created != st.threads_reaped); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        st = rt->stats();
      }
      const int created_n = r->created.load();
      if (st.live_threads != 0) r->fail(absl::StrCat("stats: live_threads ", st.live_threads, " after every thread was joined"));
      if (st.threads_created != st.threads_reaped) {
        r->fail(absl::StrCat("stats: threads_created ", st.threads_created, " != threads_reaped ",
                             st.threads_reaped, " after every thread was joined"));
      }
      if (st.threads_created != static_cast<std::uint64_t>(created_n)) {
        r->fail(absl::StrCat("stats: threads_created ", st.threads_created, ", the tester created ",
                             created_n));
      }
      if (r->joined.load() != created_n) {
        r->fail(absl::StrCat("joined ", r->joined.load(), " threads, created ", created_n));
      }
    }
    if (!leak) {
      const auto t1 = Clock::now();
      auto sp = std::make_shared<absl::Status>();
      if (!with_timeout(r->wait_s, [sp, rtp = rt.get()] { *sp = rtp->shutdown(absl::Seconds(1)); })) {
        r->fail("shutdown() of a quiescent runtime did not return");
        leak = true;
      } else {
        shut = *sp;
        shut_s = secs_since(t1);
        r->post_shutdown.store(true);
        if (!shut.ok() && !r->abort.load()) {
          r->fail(absl::StrCat("shutdown() after every thread was joined: ", shut.ToString()));
        }
      }
    }
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(shutdown_delay_us));
    {
      std::lock_guard<std::mutex> l(r->outside_mu);
      r->stopping.store(true);
    }
    const auto t1 = Clock::now();
    auto done = std::make_shared<std::atomic<bool>>(false);
    auto status = std::make_shared<absl::Status>();
    std::thread st([done, status, rtp = rt.get(), grace] {
      *status = rtp->shutdown(grace);
      done->store(true);
    });
    // shutdown(grace) promises to return after grace plus the 2 s stop timeout
    // (runtime.cc kStopTimeout); 1 s more (4 under sanitizers) for a loaded CI machine.
    const double limit = absl::ToDoubleSeconds(grace) + (CHAOS_SANITIZER ? 6.0 : 3.0);
    if (!poll_until(t1, limit, [&] { return done->load(); })) {
      r->fail(absl::StrFormat("shutdown(%s) did not return within %.0f s (%s)",
                              absl::FormatDuration(grace), limit, unfinished(r)));
      // Give a spinner time to give up on its own, then see whether shutdown returns at all.
      poll_until(t1, r->wait_s + 5, [&] { return done->load(); });
    }
    if (!done->load()) {
      st.detach();
      leak = true;
    } else {
      st.join();
      shut = *status;
      shut_s = secs_since(t1);
      r->post_shutdown.store(true);
      if (!stop_outsider(r, out, "outsider did not finish after shutdown returned")) leak = true;
      // Accounting: every thread exited or was abandoned, and the status names the latter.
      int abandoned = 0;
      std::lock_guard<std::mutex> l(r->mu);
      for (auto& ref : r->all) {
        if (ref.abandoned()) {
          ++abandoned;
          if (!ref.exited()) r->fail(absl::StrCat("'", ref->name(), "' abandoned but exited() is false"));
          if (shut.message().find(absl::StrCat("'", ref->name(), "'")) == absl::string_view::npos) {
            r->fail(absl::StrCat("shutdown status does not name abandoned '", ref->name(), "'"));
          }
        } else if (!ref.exited()) {
          r->fail(absl::StrCat("'", ref->name(), "' neither exited nor abandoned after shutdown"));
        }
      }
      if (abandoned == 0 && !shut.ok()) r->fail(absl::StrCat("shutdown: nothing abandoned but ", shut.ToString()));
      if (ops & kShutStats) {
        const runtime_stats sst = rt->stats();
        const auto made = static_cast<std::uint64_t>(r->created.load());
        if (sst.threads_created != made || sst.threads_reaped + static_cast<std::uint64_t>(abandoned) != made ||
            sst.live_threads != abandoned) {
          r->fail(absl::StrCat("stats after shutdown: threads_created ", sst.threads_created,
                               ", threads_reaped ", sst.threads_reaped, ", live_threads ",
                               sst.live_threads, "; the tester created ", made, ", ", abandoned,
                               " abandoned"));
        }
      }
      if (abandoned > 0) {
        if (!absl::IsFailedPrecondition(shut)) {
          r->fail(absl::StrCat("shutdown abandoned ", abandoned, " thread(s) but returned ", shut.ToString()));
        } else if (shut.message().find(absl::StrCat(abandoned, " thread(s)")) == absl::string_view::npos) {
          r->fail(absl::StrCat("shutdown abandoned ", abandoned, " thread(s); status says: ", shut.message()));
        }
      }
    }
  }

  if (!leak) {
    // Run-level invariants.
    std::lock_guard<std::mutex> l(r->mu);
    for (int s = 0; s < kSlots; ++s) {
      if (r->chk[s].owner.load() != nullptr || r->chk[s].shared.load() != 0) {
        r->fail(absl::StrCat("token ", slot_name(s), ": a marker is still set after the run"));
      }
    }
    const bool complete = !r->shutdown_mode && !r->abort.load();
    if (complete) {
      for (int s = 0; s < kNamedTokens; ++s) {
        long sum = 0;
        for (auto& c : r->ctxs) sum += c->tok_incs[s];
        if (sum != r->chk[s].counter) {
          r->fail(absl::StrCat("token ", slot_name(s), ": counter ", r->chk[s].counter,
                               " != increments ", sum, " (lost updates: exclusion violated)"));
        }
      }
      for (int i = 0; i < r->nchans; ++i) {
        Chan& ch = r->chans[i];
        const auto prod = ch.produced.load(), cons = ch.consumed.load(), gave = ch.gave_up.load();
        if (cons > prod || ch.units.load() != prod - cons) {
          r->fail(absl::StrCat("channel ", i, ": produced ", prod, ", consumed ", cons, ", left ",
                               ch.units.load()));
        }
        if (gave > 0 && cons != prod) {
          r->fail(absl::StrCat("channel ", i, ": ", gave, " consumer(s) gave up on a closed channel "
                               "while units were left"));
        }
      }
    }
    for (auto& c : r->ctxs) {
      const int nonrestart = c->intr_sent.load() - c->intr_restart_sent.load();
      if (c->eintr > nonrestart || c->erestart > c->intr_restart_sent.load()) {
        r->fail(absl::StrCat(c->name, ": PCATCH sleeps returned EINTR ", c->eintr, " / ERESTART ",
                             c->erestart, " times, interrupts sent: ", nonrestart, " / ",
                             c->intr_restart_sent.load()));
      }
      if (c->running.load() != 0) {
        r->fail(absl::StrCat(c->name, ": still marked running after the run"));
      }
    }
    for (int w = 0; w < r->nw; ++w) {
      if (Ctx* m = r->on_cpu[w].load()) {
        r->fail(absl::StrCat("worker ", w, " still marked running ", m->name, " after the run"));
      }
    }
  }

  const double el = secs_since(r->start);
  {
    std::lock_guard<std::mutex> l(r->fail_mu);
    res.ok = r->failures.empty();
    std::string msg;
    for (auto& f : r->failures) absl::StrAppend(&msg, "\n    ", f);
    res.summary = absl::StrFormat(
        "%d workers, %d top threads, %d created, %llu ops, %s%s%s, %.1f ms%s", r->nw, r->ntop,
        r->created.load(), static_cast<unsigned long long>(r->opcount.load()),
        r->shutdown_mode ? absl::StrFormat("shutdown(%s) at %d us in %.1f ms%s",
                                           absl::FormatDuration(grace), shutdown_delay_us,
                                           shut_s * 1e3, r->spinner ? " with a spinner" : "")
                         : "joined",
        outsider ? ", outsider" : "", shut.ok() ? "" : absl::StrCat(" [", shut.message(), "]"),
        el * 1e3, msg);
  }
  if (leak) {
    // The runtime is wedged: keep everything it may still touch alive.
    (void)rt.release();
    if (out.joinable()) out.detach();
    res.leaked = true;
    g_leaked.store(true);
  } else {
    // Thread objects go with the references; the runtime is shut down already.
    for (auto& ref : toprefs) ref.reset();
    {
      std::lock_guard<std::mutex> l(r->mu);
      for (auto& c : r->ctxs) c->kids.clear();
      r->all.clear();
    }
    rt.reset();
    delete r;
  }
  testing::set_chaos_seed(0);
  g_in_run.store(false);
  return res;
}

TEST(Chaos, Seeds) {
  const Config& cfg = config();
  const int n = cfg.single ? 1 : (cfg.seeds > 0 ? cfg.seeds : default_seeds());
  const bool verbose = cfg.verbose || cfg.single;
  std::printf("chaos: ops 0x%llx (%s), seeds %llu..%llu\n",
              static_cast<unsigned long long>(cfg.ops), mask_names(cfg.ops).c_str(),
              static_cast<unsigned long long>(cfg.first_seed),
              static_cast<unsigned long long>(cfg.first_seed + static_cast<std::uint64_t>(n) - 1));
  std::fflush(stdout);
  const auto t0 = Clock::now();
  int ran = 0, failed = 0;
  for (int i = 0; i < n * cfg.repeat; ++i) {
    const std::uint64_t seed = cfg.first_seed + static_cast<std::uint64_t>(i / cfg.repeat);
    SeedResult res = run_seed(seed, cfg.ops, verbose);
    ++ran;
    if (verbose) {
      std::printf("chaos seed %llu: %s: %s\n", static_cast<unsigned long long>(seed),
                  res.ok ? "ok" : "FAILED", res.summary.c_str());
      std::fflush(stdout);
    }
    if (!res.ok) {
      ++failed;
      ADD_FAILURE() << "chaos seed " << seed << " failed: " << res.summary
                    << "\n  replay: LWKT_CHAOS_SEED=" << seed << " LWKT_CHAOS_OPS=0x" << std::hex
                    << cfg.ops << std::dec << " (" << mask_names(cfg.ops) << ")";
      if (failed >= cfg.max_failures) break;
      if (res.leaked) {
        // The wedged runtime's workers keep running (and may spin): later seeds would be
        // starved of CPU and fail for no reason of their own.
        ADD_FAILURE() << "chaos: stopping after seed " << seed << ": its runtime is wedged";
        break;
      }
    }
  }
  if (cfg.repeat > 1) {
    std::printf("chaos: %d seed runs (each seed %d times) ran (%d failed) in %.1f s\n", ran,
                cfg.repeat, failed, secs_since(t0));
  } else {
    std::printf("chaos: %d seeds ran (%d failed) in %.1f s\n", ran, failed, secs_since(t0));
  }
  std::fflush(stdout);
}

}  // namespace
}  // namespace lwkt::chaos

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  using lwkt::chaos::config;
  using lwkt::chaos::parse_ops;
  lwkt::chaos::Config& c = config();
  auto env = [](const char* n) -> const char* { return std::getenv(n); };
  if (const char* v = env("LWKT_CHAOS_SEEDS")) c.seeds = std::atoi(v);
  if (const char* v = env("LWKT_CHAOS_FIRST_SEED")) c.first_seed = std::strtoull(v, nullptr, 0);
  if (const char* v = env("LWKT_CHAOS_SEED")) {
    c.first_seed = std::strtoull(v, nullptr, 0);
    c.single = true;
  }
  if (const char* v = env("LWKT_CHAOS_OPS")) {
    if (!parse_ops(v, &c.ops)) {
      std::fprintf(stderr, "LWKT_CHAOS_OPS: cannot parse '%s'\n", v);
      return 2;
    }
  }
  if (const char* v = env("LWKT_CHAOS_VERBOSE")) c.verbose = std::atoi(v) != 0;
  if (const char* v = env("LWKT_CHAOS_MAX_FAILURES")) c.max_failures = std::max(1, std::atoi(v));
  if (const char* v = env("LWKT_CHAOS_WAIT_S")) c.wait_s = std::max(1.0, std::atof(v));
  if (const char* v = env("LWKT_CHAOS_REPEAT")) c.repeat = std::max(1, std::atoi(v));
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&](const char* flag) -> const char* {
      const std::size_t n = std::strlen(flag);
      return a.compare(0, n, flag) == 0 ? argv[i] + n : nullptr;
    };
    if (const char* v = val("--chaos_seed=")) {
      c.first_seed = std::strtoull(v, nullptr, 0);
      c.single = true;
    } else if (const char* v2 = val("--chaos_seeds=")) {
      c.seeds = std::atoi(v2);
    } else if (const char* v3 = val("--chaos_first_seed=")) {
      c.first_seed = std::strtoull(v3, nullptr, 0);
    } else if (const char* v4 = val("--chaos_ops=")) {
      if (!parse_ops(v4, &c.ops)) {
        std::fprintf(stderr, "--chaos_ops: cannot parse '%s'\n", v4);
        return 2;
      }
    } else if (a == "--chaos_verbose") {
      c.verbose = true;
    } else if (const char* v5 = val("--chaos_max_failures=")) {
      c.max_failures = std::max(1, std::atoi(v5));
    } else if (const char* v6 = val("--chaos_wait_s=")) {
      c.wait_s = std::max(1.0, std::atof(v6));
    } else if (const char* v7 = val("--chaos_repeat=")) {
      c.repeat = std::max(1, std::atoi(v7));
    } else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  lwkt::chaos::install_fatal_handlers();
  const int rc = RUN_ALL_TESTS();
  if (lwkt::chaos::g_leaked.load()) {
    // A wedged runtime's workers still run: do not run static destructors under them.
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(rc != 0 ? rc : 1);
  }
  return rc;
}
