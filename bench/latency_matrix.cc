// latency_matrix: worker-to-worker round trips for the report (tools/report).
//
// Two measurements, written as one JSON document (--out):
//   matrix  every ordered pair (a, b) of workers, a != b: an lwkt round trip (a thread on
//           worker a schedules a thread on worker b, which schedules it back; idle workers
//           poll) beside the atomic ping-pong floor on the same two PUs (the same two lwkt
//           threads spinning on one cache line: nothing is scheduled, so it is the
//           hardware's round trip between the workers' pinned OS threads). In the style of
//           core-to-core latency charts: each sample times --trips round trips, --samples
//           samples per pair and kind, the first dropped (warm-up), the median reported, in
//           ns per round trip. The two kinds alternate sample by sample, because this host's
//           cross-CPU latency changes in phases of a few hundred milliseconds (seen: 90 ns
//           and 460 ns on one 2-vCPU guest): a ratio from one phase against the other would
//           be meaningless.
//   cdf     for the pair (0, 1): the distribution of single round trips (--cdf_trips of
//           each kind, alternating in chunks): the atomic floor, lwkt with the receiver
//           polling, lwkt with the receiver parked (idle_spin 0, its own runtime). Each value
//           includes one steady_clock read, whose own cost is reported as clock_ns. Stored as
//           quantiles.
//   floor   the modes of the floor's distribution, less the clock read (bimodal on some
//           VMs, by host placement): every histogram peak holding at least 15% of the
//           samples.
//
// Usage: latency_matrix --out=FILE [--workers=N] [--samples=100] [--trips=1000]
//                       [--cdf_trips=50000]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bench/bench_util.h"
#include "lwkt/runtime.h"
#include "lwkt/sched.h"

ABSL_FLAG(std::string, out, "", "where to write the JSON document (required)");
ABSL_FLAG(int, workers, 0, "workers (0: one per PU the process may use)");
ABSL_FLAG(int, samples, 100, "samples per ordered pair (the first is dropped)");
ABSL_FLAG(int, trips, 1000, "round trips per sample");
ABSL_FLAG(int, cdf_trips, 50000, "single round trips timed for each distribution");

namespace {

using Clock = std::chrono::steady_clock;

double ns_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

lwkt::thread_ref spawn_or_die(lwkt::Runtime& rt, absl::AnyInvocable<void()> fn,
                              const lwkt::thread_options& o) {
  auto t = rt.spawn(std::move(fn), o);
  if (!t.ok()) {
    std::fprintf(stderr, "latency_matrix: spawn: %s\n", t.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*t);
}

enum Kind { kLwkt = 0, kAtomic = 1 };

struct Series {
  std::vector<double> per_sample[2];  // ns per round trip, one value per sample
  std::vector<double> each[2];        // single round trips (when asked for)
};

// A on worker a, B on worker b. Sample by sample, alternating:
//   kLwkt    A schedules B and blocks; B schedules A back and blocks: one round trip
//            through both workers' schedulers, `trips` times.
//   kAtomic  A wakes B once with cmd = kAtomic, waits until B spins, then `trips` times
//            stores v = 1 and spins until B stored v = 0. No scheduling: the floor.
// Every wait is DragonFly's idiom: a critical section around deschedule_self + lwkt_switch
// (B holds one throughout), so a schedule that arrives before the deschedule is run by the
// next switch and each wait consumes exactly one schedule: A's command (set cmd, schedule
// B), B's answer, each trip's request and reply pair up one to one, and a timed trip shares
// nothing but the runtime's own lines, as BM_RoundTrip_Polling does. (A wait on a flag
// instead may take an early schedule for a later one, and two requests then coalesce into
// one wakeup: a deadlock.)
// With `each`, every trip is timed on its own (and samples are chunks of `trips`).
Series pair_samples(lwkt::Runtime& rt, int a, int b, int samples, int trips, bool each) {
  // One cache line each: the ping-pong word must not share a line with the control words.
  struct alignas(64) Line {
    std::atomic<int> x{0};
  };
  Line v, ready, cmd;
  std::atomic<lwkt::thread*> a_td{nullptr};
  Series out;
  constexpr int kDone = 2;
  auto wait_for_schedule = [] {
    lwkt::deschedule_self();
    lwkt::lwkt_switch();
  };
  lwkt::thread_options bo;
  bo.worker = b;
  bo.nostart = true;
  bo.name = "pair-b";
  lwkt::thread_ref tb = spawn_or_die(
      rt,
      [&] {  // started by A's first command
        lwkt::thread* at = a_td.load();
        lwkt::crit_enter();
        for (;;) {
          // The schedule that woke us carried the command (A stored cmd before sending it;
          // the ring's release/acquire on the slot orders it).
          const int c = cmd.x.load(std::memory_order_relaxed);
          if (c == kDone) break;
          if (c == kLwkt) {
            lwkt::schedule(at);  // the answer
            for (int i = 0; i < trips; ++i) {  // then one reply per timed trip
              wait_for_schedule();
              lwkt::schedule(at);
            }
          } else {
            ready.x.store(1, std::memory_order_release);
            for (int i = 0; i < trips; ++i) {
              while (v.x.load(std::memory_order_acquire) != 1) {
              }
              v.x.store(0, std::memory_order_release);
            }
          }
          wait_for_schedule();  // the next command
        }
        lwkt::crit_exit();
      },
      bo);
  lwkt::thread* bt = tb.get();
  lwkt::thread_options ao;
  ao.worker = a;
  ao.name = "pair-a";
  lwkt::thread_ref ta = spawn_or_die(
      rt,
      [&, bt] {
        a_td.store(lwkt::curthread());
        lwkt::crit_enter();
        for (int s = 0; s < 2 * samples; ++s) {
          const Kind k = static_cast<Kind>(s & 1);
          cmd.x.store(k, std::memory_order_relaxed);
          lwkt::schedule(bt);
          if (k == kAtomic) {
            while (ready.x.load(std::memory_order_acquire) != 1) {
            }
            ready.x.store(0, std::memory_order_relaxed);
          } else {
            wait_for_schedule();  // B's answer: it is inside its critical section now
          }
          const auto t0 = Clock::now();
          for (int i = 0; i < trips; ++i) {
            const auto t1 = each ? Clock::now() : t0;
            if (k == kLwkt) {
              lwkt::schedule(bt);
              wait_for_schedule();
            } else {
              v.x.store(1, std::memory_order_release);
              while (v.x.load(std::memory_order_acquire) != 0) {
              }
            }
            if (each) out.each[k].push_back(ns_since(t1));
          }
          out.per_sample[k].push_back(ns_since(t0) / trips);
        }
        cmd.x.store(kDone, std::memory_order_relaxed);
        lwkt::schedule(bt);
        lwkt::crit_exit();
      },
      ao);
  ta.join();
  tb.join();
  return out;
}

std::unique_ptr<lwkt::Runtime> make_runtime(int workers, absl::Duration idle_spin) {
  lwkt::Runtime::Options o;
  o.workers = workers;
  o.idle_spin = idle_spin;
  auto rt = lwkt::Runtime::create(o);
  if (!rt.ok()) {
    std::fprintf(stderr, "latency_matrix: %s\n", rt.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*rt);
}

// Drops the warm-up sample and returns the median of the rest.
double steady_median(std::vector<double> v) {
  if (v.size() > 1) v.erase(v.begin());
  return median(std::move(v));
}

std::string quantiles_json(std::vector<double> v, int n) {
  std::sort(v.begin(), v.end());
  std::vector<std::string> q;
  for (int i = 0; i <= n && !v.empty(); ++i) {
    const double f = static_cast<double>(i) / n;
    const std::size_t k = std::min(v.size() - 1, static_cast<std::size_t>(f * (v.size() - 1)));
    q.push_back(absl::StrCat("[", f, ",", v[k], "]"));
  }
  return absl::StrCat("[", absl::StrJoin(q, ","), "]");
}

// Histogram peaks: bins of 5% of the median; a peak is a local maximum (over +-3 bins)
// holding, with its neighbours within 3 bins, at least 15% of the samples.
std::string modes_json(std::vector<double> v, double clock_ns) {
  if (v.empty()) return "[]";
  for (double& x : v) x = std::max(0.0, x - clock_ns);  // the round trip, not the clock read
  std::sort(v.begin(), v.end());
  const double w = std::max(1.0, median(v) * 0.05);
  const double lo = v.front();
  const std::size_t nb = static_cast<std::size_t>((v.back() - lo) / w) + 1;
  std::vector<int> h(std::min<std::size_t>(nb, 100000), 0);
  for (double x : v) h[std::min(h.size() - 1, static_cast<std::size_t>((x - lo) / w))]++;
  std::vector<std::string> modes;
  const int r = 3;
  for (std::size_t i = 0; i < h.size(); ++i) {
    bool peak = h[i] > 0;
    int mass = 0;
    for (int d = -r; d <= r && peak; ++d) {
      const auto j = static_cast<std::ptrdiff_t>(i) + d;
      if (j < 0 || j >= static_cast<std::ptrdiff_t>(h.size())) continue;
      if (h[static_cast<std::size_t>(j)] > h[i] || (d < 0 && h[static_cast<std::size_t>(j)] == h[i])) peak = false;
      mass += h[static_cast<std::size_t>(j)];
    }
    const double share = static_cast<double>(mass) / static_cast<double>(v.size());
    if (peak && share >= 0.15) {
      modes.push_back(absl::StrCat("{\"ns\":", lo + (static_cast<double>(i) + 0.5) * w,
                                   ",\"share\":", share, "}"));
    }
  }
  return absl::StrCat("[", absl::StrJoin(modes, ","), "]");
}

std::string num(double x) { return std::isnan(x) ? "null" : absl::StrCat(x); }

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string out_path = absl::GetFlag(FLAGS_out);
  const int samples = std::max(2, absl::GetFlag(FLAGS_samples));
  const int trips = std::max(1, absl::GetFlag(FLAGS_trips));
  const int cdf_trips = std::max(10, absl::GetFlag(FLAGS_cdf_trips));
  if (out_path.empty()) {
    std::fprintf(stderr, "latency_matrix: --out=FILE is required\n");
    return 2;
  }
  const int want = absl::GetFlag(FLAGS_workers);
  const int workers = want > 0 ? want : lwkt::Runtime::Options{}.workers;
  std::vector<double> floor_each, poll_each, park_each;
  std::vector<std::string> cell_json;
  int nw = 0;
  int matrix_samples = samples;
  {
    // Idle workers poll for 1 ms: enough to catch every reply in a round trip, short enough
    // that the previous pair's workers stop spinning before long (they share SMT siblings
    // and a cgroup quota with the pair being measured).
    auto polling = make_runtime(workers, absl::Milliseconds(1));
    const std::vector<lwkt::worker_info> place = polling->placement();
    nw = static_cast<int>(place.size());
    if (nw < 2) {
      std::fprintf(stderr, "latency_matrix: needs at least 2 workers (has %d)\n", nw);
      return 1;
    }
    // Bounded time on big machines: beyond 240 ordered pairs (16 workers) fewer samples per
    // pair, at least 11 (10 after the warm-up is dropped).
    const int pairs = nw * (nw - 1);
    const int pair_samples_n = pairs > 240 ? std::max(11, samples * 240 / pairs) : samples;
    matrix_samples = pair_samples_n;
    for (int a = 0; a < nw; ++a) {
      for (int b = 0; b < nw; ++b) {
        if (a == b) continue;
        const Series r = pair_samples(*polling, a, b, pair_samples_n, trips, false);
        cell_json.push_back(absl::StrCat(
            "{\"a\":", a, ",\"b\":", b, ",\"pu_a\":", place[a].pu, ",\"pu_b\":", place[b].pu,
            ",\"lwkt_ns\":", num(steady_median(r.per_sample[kLwkt])), ",\"atomic_ns\":",
            num(steady_median(r.per_sample[kAtomic])), "}"));
      }
    }
    (void)pair_samples(*polling, 0, 1, 2, 1000, false);  // warm-up
    const int chunk = std::min(cdf_trips, 1000);
    // One chunk more, dropped: the first of each kind is a warm-up.
    const Series d = pair_samples(*polling, 0, 1, 1 + std::max(1, cdf_trips / chunk), chunk, true);
    floor_each.assign(d.each[kAtomic].begin() + chunk, d.each[kAtomic].end());
    poll_each.assign(d.each[kLwkt].begin() + chunk, d.each[kLwkt].end());
    (void)polling->shutdown();
  }
  {
    // Parked: B's worker sleeps in the kernel between round trips (its floor is the
    // wake-up of a halted vCPU, not a cache line: compare with the parked peers).
    auto parked = make_runtime(workers, absl::ZeroDuration());
    const int n = std::max(10, cdf_trips / 5);  // each is ~100x slower
    const Series d = pair_samples(*parked, 0, 1, 1, n, true);
    park_each = d.each[kLwkt];
    (void)parked->shutdown();
  }
  std::vector<double> clock_cost;
  for (int i = 0; i < 1000; ++i) {
    const auto t0 = Clock::now();
    clock_cost.push_back(ns_since(t0));
  }

  std::string json = absl::StrCat(
      "{\"workers\":", nw, ",\"samples\":", matrix_samples, ",\"trips\":", trips,
      ",\"cdf_trips\":", cdf_trips, ",\"clock_ns\":", median(clock_cost), ",\"matrix\":[",
      absl::StrJoin(cell_json, ","), "],\"cdf\":{\"floor\":", quantiles_json(floor_each, 200),
      ",\"polling\":", quantiles_json(poll_each, 200), ",\"parked\":",
      quantiles_json(park_each, 200), "},\"medians\":{\"floor\":", num(median(floor_each)),
      ",\"polling\":", num(median(poll_each)), ",\"parked\":", num(median(park_each)),
      "},\"floor_modes\":", modes_json(floor_each, median(clock_cost)), "}\n");
  FILE* f = std::fopen(out_path.c_str(), "w");
  if (!f || std::fputs(json.c_str(), f) < 0 || std::fclose(f) != 0) {
    std::perror(out_path.c_str());
    return 1;
  }
  return 0;
}
