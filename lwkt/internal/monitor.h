// monitor.h: a runtime's monitor OS thread (private to //lwkt): the stall detector's
// watchdog (Runtime::Options::stall_budget, stall_signal) and the ps dump on a signal
// (Options::ps_signal). See monitor.cc for the protocol.
#pragma once

#include "absl/status/status.h"

namespace lwkt {
class Runtime;
namespace internal {
struct runtime_state;

// Starts rs's monitor if the options ask for one (stall_budget > 0 or ps_signal != 0) and
// installs its signal handlers. Runs on: Runtime::create, once the workers run.
absl::Status start_monitor(Runtime* rt, runtime_state* rs);
// Tells it to stop (it may still be finishing a sample or a ps dump). Runs on:
// Runtime::shutdown. Idempotent.
void stop_monitor(runtime_state* rs);
// Stops it if needed, waits for it (join) while the workers still answer messages and their
// globaldata still exists, then restores the signal dispositions no other runtime uses.
// When `leaking` (a worker never stops; shutdown leaves the runtime's memory allocated) a
// monitor that has not finished is left running, with its handlers, instead.
void join_monitor(runtime_state* rs, bool leaking);
// pthread_atfork child handler: resets the process-wide signal state in a forked child.
void monitor_atfork_child();

}  // namespace internal
}  // namespace lwkt
