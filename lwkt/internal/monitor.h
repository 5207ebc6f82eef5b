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
// Stops and joins it and restores the signal dispositions no other runtime uses. Runs on:
// Runtime::shutdown, before the workers stop (it reads their globaldata). Idempotent.
void stop_monitor(runtime_state* rs);

}  // namespace internal
}  // namespace lwkt
