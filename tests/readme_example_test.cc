// The README's usage example, compiled and run as written (keep the two in step).
#include <gtest/gtest.h>

#include <iostream>

#include "lwkt/runtime.h"
#include "lwkt/sched.h"

namespace {

int readme_example() {
  auto rt = lwkt::Runtime::create({.workers = 4});  // absl::StatusOr; errors name the bad field
  if (!rt.ok()) {
    std::cerr << rt.status() << "\n";
    return 1;
  }
  std::cout << (*rt)->placement_report();  // worker -> PU / core / NUMA node

  auto td = (*rt)->spawn(
      [] {  // from any OS thread, e.g. main
        auto child = lwkt::create([] { lwkt::yield(); },
                                  {.name = "child", .pri = lwkt::TDPRI_SOFT_NORM});
        child->join();  // blocks only this lwkt thread
      },
      {.name = "server"});
  td->join();                         // main sleeps until it has exited
  return (*rt)->shutdown().ok() ? 0 : 2;  // names any thread still blocked
}

TEST(Readme, UsageExampleRuns) { EXPECT_EQ(readme_example(), 0); }

}  // namespace
