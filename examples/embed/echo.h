// echo.h: a one-connection echo over loopback, served and driven by lwkt threads.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "lwkt/runtime.h"

namespace embed {

// Listens on an ephemeral loopback port; an lwkt thread accepts one connection and echoes
// it, another connects, sends `text` and reads it back. Returns what came back.
// Runs on: any OS thread outside the runtime (it waits for both threads).
absl::StatusOr<std::string> echo_once(lwkt::Runtime& rt, std::string_view text);

}  // namespace embed
