// hello: starts a runtime, echoes one message over loopback through it, and shuts down.
#include <cstdio>

#include "echo.h"
#include "lwkt/runtime.h"

int main() {
  auto rt = lwkt::Runtime::create({.workers = 2});
  if (!rt.ok()) {
    std::fprintf(stderr, "hello: %s\n", rt.status().ToString().c_str());
    return 1;
  }
  auto got = embed::echo_once(**rt, "hello from an embedded lwkt");
  const absl::Status down = (*rt)->shutdown();
  if (!got.ok() || !down.ok()) {
    std::fprintf(stderr, "hello: %s\n", (got.ok() ? down : got.status()).ToString().c_str());
    return 1;
  }
  std::printf("echoed: %s\n", got->c_str());
  return 0;
}
