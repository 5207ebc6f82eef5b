// A program stopped at a known point for tools/gdb/gdb_test.sh: a Runtime with threads in
// known states, each inside a function the backtraces must show.
//   probe-sleeper   worker 0, asleep in tsleep ("probe-wait") inside probe_sleep_in_tsleep
//   probe-tokholder worker 1, asleep ("probe-tokwait") with token "probe-tok" on its stack
//   probe-held      created held (nostart), never run
//   probe-spinner   worker 1, running a busy loop inside probe_spin
// When all are so, main calls lwkt_gdb_probe_ready() (the debugger's breakpoint), then
// releases them and exits 0.
#include <atomic>
#include <cstdio>

#include "lwkt/runtime.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "lwkt/token.h"

extern "C" __attribute__((noinline, used)) void lwkt_gdb_probe_ready() { asm volatile("" ::: "memory"); }

namespace {
std::atomic<bool> g_release{false};
std::atomic<int> g_spinning{0};
int g_chan;
lwkt::lwkt_token g_tok("probe-tok");

__attribute__((noinline)) void probe_sleep_in_tsleep(const char* wmesg) {
  while (!g_release.load()) (void)lwkt::tsleep(&g_chan, 0, wmesg);
  asm volatile("" ::: "memory");
}

__attribute__((noinline)) void probe_spin() {
  g_spinning.store(1);
  while (!g_release.load()) {
  }
  asm volatile("" ::: "memory");
}

bool asleep(lwkt::Runtime& rt, const char* name) {
  auto snap = rt.snapshot();
  if (!snap.ok()) return false;
  for (const auto& w : snap->workers) {
    for (const auto& t : w.threads) {
      if (t.name == name && t.state == "sleep") return true;
    }
  }
  return false;
}
}  // namespace

int main() {
  // No stall detector: the spinner is meant to run without switch points.
  auto rt = lwkt::Runtime::create(
      {.workers = 2, .stack_watermark = true, .stall_budget = absl::ZeroDuration()});
  if (!rt.ok()) {
    std::fprintf(stderr, "%s\n", rt.status().ToString().c_str());
    return 1;
  }
  auto sleeper = (*rt)->spawn([] { probe_sleep_in_tsleep("probe-wait"); },
                              {.name = "probe-sleeper", .worker = 0});
  auto holder = (*rt)->spawn(
      [] {
        lwkt::token_ref hold(&g_tok);
        probe_sleep_in_tsleep("probe-tokwait");
      },
      {.name = "probe-tokholder", .worker = 1});
  auto held = (*rt)->spawn([] {}, {.name = "probe-held", .worker = 0, .nostart = true});
  while (!asleep(**rt, "probe-sleeper") || !asleep(**rt, "probe-tokholder")) {
  }
  auto spinner = (*rt)->spawn([] { probe_spin(); }, {.name = "probe-spinner", .worker = 1});
  if (!sleeper.ok() || !holder.ok() || !held.ok() || !spinner.ok()) return 1;
  while (!g_spinning.load()) {
  }
  lwkt_gdb_probe_ready();
  g_release.store(true);
  (*rt)->wakeup(&g_chan);
  lwkt::schedule(held->get());
  sleeper->join();
  holder->join();
  held->join();
  spinner->join();
  return (*rt)->shutdown().ok() ? 0 : 1;
}
