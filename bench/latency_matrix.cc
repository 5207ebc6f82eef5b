// latency_matrix: worker-to-worker round trips for the report (tools/report).
//
// Two measurements, written as one JSON document (--out):
//   matrix  every ordered pair (a, b) of workers, a != b: an lwkt round trip (a thread on
//           worker a schedules a thread on worker b, which schedules it back; both poll
//           when idle) beside the atomic ping-pong floor between two OS threads pinned to
//           the same two PUs. In the style of core-to-core latency charts: each sample
//           times --trips round trips, --samples samples per pair, the first sample is
//           dropped (warm-up), the median sample is reported, in ns per round trip.
//   cdf     for the pair (0, 1): the distribution of single round trips (--cdf_trips of
//           each kind): the atomic floor, lwkt with the receiver polling, lwkt with the
//           receiver parked (idle_spin 0). Each value includes one steady_clock read,
//           whose own cost is measured and reported as clock_ns. Stored as quantiles.
//   floor   the modes of the floor's distribution (it is bimodal on some VMs, by host
//           placement): every histogram peak holding at least 15% of the samples.
//
// Usage: latency_matrix --out=FILE [--workers=N] [--samples=100] [--trips=1000]
//                       [--cdf_trips=50000]
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <thread>
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

void pin_to_pu(int pu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(pu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

// Atomic ping-pong between OS threads pinned to PUs pa and pb: the hardware floor.
// One sample = `trips` round trips timed on the initiator; with `each`, every trip is
// timed on its own and appended there.
std::vector<double> atomic_pingpong(int pa, int pb, int samples, int trips,
                                    std::vector<double>* each) {
  std::atomic<int> v{0};
  std::vector<double> out;
  std::thread peer([&] {
    pin_to_pu(pb);
    for (;;) {
      int x;
      while ((x = v.load(std::memory_order_acquire)) != 1) {
        if (x == 2) return;
      }
      v.store(0, std::memory_order_release);
    }
  });
  std::thread self([&] {
    pin_to_pu(pa);
    for (int s = 0; s < samples; ++s) {
      const auto t0 = Clock::now();
      for (int i = 0; i < trips; ++i) {
        const auto t1 = each ? Clock::now() : t0;
        v.store(1, std::memory_order_release);
        while (v.load(std::memory_order_acquire) != 0) {
        }
        if (each) each->push_back(ns_since(t1));
      }
      out.push_back(ns_since(t0) / trips);
    }
    v.store(2, std::memory_order_release);
  });
  self.join();
  peer.join();
  return out;
}

using lwkt_bench::block_until;

// lwkt round trip between a thread on worker a and one on worker b (same protocol as
// bench/ipi_bench.cc's BM_RoundTrip_*), sampled like atomic_pingpong.
lwkt::thread_ref spawn_or_die(lwkt::Runtime& rt, absl::AnyInvocable<void()> fn,
                              const lwkt::thread_options& o) {
  auto t = rt.spawn(std::move(fn), o);
  if (!t.ok()) {
    std::fprintf(stderr, "latency_matrix: spawn: %s\n", t.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*t);
}

std::vector<double> lwkt_pingpong(lwkt::Runtime& rt, int a, int b, int samples, int trips,
                                  std::vector<double>* each) {
  std::atomic<int> turn{0};
  std::atomic<bool> done{false};
  std::atomic<lwkt::thread*> a_td{nullptr};
  std::vector<double> out;
  lwkt::thread_options bo;
  bo.worker = b;
  bo.nostart = true;
  bo.name = "rt-b";
  lwkt::thread_ref tb = spawn_or_die(rt, 
      [&] {
        lwkt::thread* at = a_td.load();
        for (;;) {
          block_until(turn, 1);
          if (done.load(std::memory_order_acquire)) return;
          turn.store(0, std::memory_order_release);
          lwkt::schedule(at);
        }
      },
      bo);
  lwkt::thread* bt = tb.get();
  lwkt::thread_options ao;
  ao.worker = a;
  ao.name = "rt-a";
  lwkt::thread_ref ta = spawn_or_die(rt, 
      [&, bt] {
        a_td.store(lwkt::curthread());
        lwkt::schedule(bt);
        for (int s = 0; s < samples; ++s) {
          const auto t0 = Clock::now();
          for (int i = 0; i < trips; ++i) {
            const auto t1 = each ? Clock::now() : t0;
            turn.store(1, std::memory_order_release);
            lwkt::schedule(bt);
            block_until(turn, 0);
            if (each) each->push_back(ns_since(t1));
          }
          out.push_back(ns_since(t0) / trips);
        }
        done.store(true, std::memory_order_release);
        turn.store(1, std::memory_order_release);
        lwkt::schedule(bt);
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
std::string modes_json(std::vector<double> v) {
  if (v.empty()) return "[]";
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
  // The placement first, from a runtime that is gone again before the floor is measured:
  // polling workers spin on every PU they own, and would share the CPUs with the floor's
  // two OS threads (on 2 vCPUs that multiplied the floor by 4).
  std::vector<lwkt::worker_info> place;
  {
    auto probe = make_runtime(workers, absl::ZeroDuration());
    place = probe->placement();
    (void)probe->shutdown();
  }
  const int nw = static_cast<int>(place.size());
  if (nw < 2) {
    std::fprintf(stderr, "latency_matrix: needs at least 2 workers (has %d)\n", nw);
    return 1;
  }
  struct Cell {
    int a, b;
    double lwkt_ns, atomic_ns;
  };
  std::vector<Cell> cells;
  for (int a = 0; a < nw; ++a) {
    for (int b = 0; b < nw; ++b) {
      if (a != b) cells.push_back({a, b, NAN, NAN});
    }
  }

  // The floor, with no runtime alive: every pair, then the distribution for (0, 1).
  for (Cell& c : cells) {
    c.atomic_ns =
        steady_median(atomic_pingpong(place[c.a].pu, place[c.b].pu, samples, trips, nullptr));
  }
  std::vector<double> floor_each, poll_each, park_each;
  (void)atomic_pingpong(place[0].pu, place[1].pu, 2, 1000, nullptr);  // warm-up
  (void)atomic_pingpong(place[0].pu, place[1].pu, 1, cdf_trips, &floor_each);

  // lwkt, receiver polling: every pair, then the distribution for (0, 1).
  {
    auto polling = make_runtime(workers, absl::Seconds(1));
    for (Cell& c : cells) {
      c.lwkt_ns = steady_median(lwkt_pingpong(*polling, c.a, c.b, samples, trips, nullptr));
    }
    (void)lwkt_pingpong(*polling, 0, 1, 1, 1000, nullptr);
    (void)lwkt_pingpong(*polling, 0, 1, 1, cdf_trips, &poll_each);
    (void)polling->shutdown();
  }
  // lwkt, receiver parked (idle_spin 0): the distribution for (0, 1).
  {
    auto parked = make_runtime(workers, absl::ZeroDuration());
    const int n = std::max(10, cdf_trips / 5);  // each is ~100x slower
    (void)lwkt_pingpong(*parked, 0, 1, 1, 100, nullptr);
    (void)lwkt_pingpong(*parked, 0, 1, 1, n, &park_each);
    (void)parked->shutdown();
  }
  std::vector<std::string> cell_json;
  for (const Cell& c : cells) {
    cell_json.push_back(absl::StrCat("{\"a\":", c.a, ",\"b\":", c.b, ",\"pu_a\":",
                                     place[c.a].pu, ",\"pu_b\":", place[c.b].pu,
                                     ",\"lwkt_ns\":", num(c.lwkt_ns), ",\"atomic_ns\":",
                                     num(c.atomic_ns), "}"));
  }
  std::vector<double> clock_cost;
  for (int i = 0; i < 1000; ++i) {
    const auto t0 = Clock::now();
    clock_cost.push_back(ns_since(t0));
  }

  std::string json = absl::StrCat(
      "{\"workers\":", nw, ",\"samples\":", samples, ",\"trips\":", trips,
      ",\"cdf_trips\":", cdf_trips, ",\"clock_ns\":", median(clock_cost), ",\"matrix\":[",
      absl::StrJoin(cell_json, ","), "],\"cdf\":{\"floor\":", quantiles_json(floor_each, 200),
      ",\"polling\":", quantiles_json(poll_each, 200), ",\"parked\":",
      quantiles_json(park_each, 200), "},\"medians\":{\"floor\":", num(median(floor_each)),
      ",\"polling\":", num(median(poll_each)), ",\"parked\":", num(median(park_each)),
      "},\"floor_modes\":", modes_json(floor_each), "}\n");
  FILE* f = std::fopen(out_path.c_str(), "w");
  if (!f || std::fputs(json.c_str(), f) < 0 || std::fclose(f) != 0) {
    std::perror(out_path.c_str());
    return 1;
  }
  return 0;
}
