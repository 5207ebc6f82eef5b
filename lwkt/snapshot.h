// snapshot.h
//
// Introspection: a consistent picture of every worker and every lwkt thread, and a ps-like
// text rendering a server can print on demand (from a signal-handling thread, an admin
// endpoint, a debugger). Each worker fills in its own part inside a message handler, so the
// picture of one worker is consistent (taken at one instant of that worker).
//
//   thread_info / worker_info_snapshot / runtime_snapshot   the data
//   Runtime::snapshot() (runtime.h)                           takes one
//   runtime_snapshot::ps()                                    renders it
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lwkt {

struct thread_info {
  std::string name;
  int worker = -1;
  std::string state;       // run, runq, sleep, blocked, held, preempted, tokwait, idle
  int pri = 0;
  int upri = 0;
  std::string wmesg;       // sleep message or wanted token ("" when none)
  const void* wchan = nullptr;  // the wait channel while on a sleep queue
  double runtime_ms = 0;   // time it has run
  std::uint64_t nvcsw = 0;   // voluntary switches (blocked)
  std::uint64_t nivcsw = 0;  // involuntary switches (rotated, yielded runnable, preempted)
  std::vector<std::string> tokens;  // names of the tokens on its stack (held or wanted)
  std::size_t stack_size = 0;  // usable stack bytes (0 for the idle thread: the OS thread's)
  // The most stack it has used so far, with Runtime::Options::stack_watermark; else 0.
  std::size_t stack_used = 0;
};

struct worker_info_snapshot {
  int worker = -1;
  std::uint64_t switches = 0;
  double idle_ms = 0;        // time its idle thread ran (polling or parked)
  double loadavg[3] = {0, 0, 0};  // 1, 5, 15 minutes (runnable threads, decayed)
  int runnable = 0;
  std::vector<thread_info> threads;  // the idle thread first
};

struct runtime_snapshot {
  std::vector<worker_info_snapshot> workers;
  // One header line per worker, then one line per thread.
  std::string ps() const;
};

}  // namespace lwkt
