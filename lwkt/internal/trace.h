// trace.h: the event recorder behind Runtime::Options::trace_events (private to //lwkt).
//
// Each worker owns a ring of the last N events it recorded; only that worker's OS thread
// writes it (every hook runs on the worker where the event happens), so recording is a
// plain store of one 64-byte event, no atomics. Readers take a copy on the worker itself
// (Runtime::write_trace sends each worker a message) or after the workers have stopped
// (Options::trace_path, at shutdown). Off (the default), every hook is one predictable
// branch on gd_trace == nullptr.
#pragma once

#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "lwkt/internal/globaldata.h"

namespace lwkt::internal {

struct runtime_state;

enum class trace_type : std::uint16_t {
  kSwitch,          // td switched in (name: td); a: its priority
  kScheduleLocal,   // td made runnable on this worker by lwkt::schedule
  kScheduleRemote,  // a schedule of td sent to worker a
  kWakeThread,      // td made runnable by a wakeup of its channel
  kIpiSend,         // a message sent to worker a
  kIpiRecv,         // worker a's ring (-1: the inbox, from outside) drained here
  kTokenContended,  // td could not get token `name`
  kSleep,           // td went to sleep on channel b (name: wmesg)
  kWakeup,          // wakeup of channel b by td
  kCreate,          // td created here (name: td)
  kExit,            // td exited
};

struct trace_event {
  std::uint64_t tsc;      // cheap_clock() when recorded
  trace_type type;
  std::uint16_t pad;
  std::int32_t a;
  std::uint64_t b;
  const void* td;         // the thread object (identity within a trace; may be reused)
  char name[32];          // thread name, wmesg or token name, truncated and NUL-terminated
};
static_assert(sizeof(trace_event) == 64);

struct trace_ring {
  // ev is null when the n events could not be allocated (create() then fails).
  explicit trace_ring(std::size_t n) : cap(n), ev(new (std::nothrow) trace_event[n]) {}
  std::size_t cap;
  std::uint64_t next = 0;  // events recorded so far; the ring holds the last min(next, cap)
  std::unique_ptr<trace_event[]> ev;
  // The events in the ring, oldest first.
  std::vector<trace_event> copy() const;
};

void trace_record(globaldata* gd, trace_type type, const void* td, std::int32_t a,
                  std::uint64_t b, const char* name);

// The hook: records into the calling worker's ring when tracing is on.
inline void trace(globaldata* gd, trace_type type, const void* td, std::int32_t a,
                  std::uint64_t b, const char* name) {
  if (ABSL_PREDICT_FALSE(gd != nullptr && gd->gd_trace != nullptr)) {
    trace_record(gd, type, td, a, b, name);
  }
}

// Renders workers' events as Chrome trace JSON (one event per line). `end_tsc` closes each
// worker's last running slice.
std::string trace_json(const std::vector<std::vector<trace_event>>& per_worker,
                       std::uint64_t end_tsc);
absl::Status write_file(const std::string& path, const std::string& text);
// Options::trace_path: writes the rings once the workers have stopped (Runtime::shutdown).
void write_trace_at_shutdown(runtime_state* rs);

}  // namespace lwkt::internal
