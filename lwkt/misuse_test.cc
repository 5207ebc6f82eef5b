// Misuse aborts with a message naming the call and the broken rule (docs/misuse.md lists
// them): lwkt-thread-only calls from an OS thread outside the runtime (before: segfaults),
// an empty thread_ref join, a throwing IPI handler, unbounded nested IPI drains (before: a
// stack overflow), switching while mastering a cpusync, giving away a thread parked under a
// preemption chain.
#include <gtest/gtest.h>

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "lwkt/ipi.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "lwkt/testing.h"
#include "lwkt/token.h"

namespace lwkt {
namespace {

using testing::run_on;
using testing::test_runtime;

struct outside_call {
  const char* name;  // as it appears in the message
  std::function<void()> call;
};

class FromOutsideDeathTest : public ::testing::TestWithParam<int> {};

const std::vector<outside_call>& outside_calls() {
  static lwkt_token tok("t");
  static cpusync cs;
  static const std::vector<outside_call> v = {
      {"lwkt::yield", [] { yield(); }},
      {"lwkt::yield_quick", [] { yield_quick(); }},
      {"lwkt::schedule_self", [] { schedule_self(); }},
      {"lwkt::deschedule_self", [] { deschedule_self(); }},
      {"lwkt::should_yield", [] { (void)should_yield(); }},
      {"lwkt::maybe_yield", [] { maybe_yield(); }},
      {"lwkt::kern_yield", [] { kern_yield(kPriUser); }},
      {"lwkt::setpri_self", [] { setpri_self(TDPRI_KERN_USER); }},
      {"lwkt::cnttoken", [] { (void)cnttoken(&tok); }},
      {"lwkt::token_swap", [] { token_swap(); }},
      {"lwkt::trytoken", [] { (void)trytoken(&tok); }},
      {"lwkt::reltoken", [] { reltoken(&tok); }},
      {"lwkt::cpusync_interlock", [] { cpusync_interlock(&cs); }},
      {"lwkt::cpusync_deinterlock", [] { cpusync_deinterlock(&cs); }},
      {"lwkt::cpusync_quick", [] { cpusync_quick(&cs); }},
      {"lwkt::seq_ipiq", [] { (void)seq_ipiq(0); }},
      {"lwkt::wait_ipiq", [] { wait_ipiq(0, 0); }},
      {"lwkt::send_ipiq_mask", [] { (void)send_ipiq_mask(cpumask{}, nullptr, nullptr, 0); }},
  };
  return v;
}

TEST_P(FromOutsideDeathTest, AbortsNamingTheCall) {
  testing::use_safe_death_test_style();
  const outside_call& c = outside_calls()[static_cast<std::size_t>(GetParam())];
  EXPECT_DEATH(c.call(), std::string(c.name) + " called from an OS thread that is not an lwkt thread");
}

INSTANTIATE_TEST_SUITE_P(Table, FromOutsideDeathTest,
                         ::testing::Range(0, static_cast<int>(outside_calls().size())),
                         [](const ::testing::TestParamInfo<int>& info) {
                           std::string n = outside_calls()[static_cast<std::size_t>(info.param)].name;
                           return n.substr(n.find("::") + 2);
                         });

TEST(MisuseDeathTest, JoinOfAnEmptyThreadRef) {
  testing::use_safe_death_test_style();
  EXPECT_DEATH(thread_ref{}.join(), "thread_ref::join of an empty thread_ref");
}

void throwing_handler(void*) { throw std::runtime_error("boom"); }

TEST(MisuseDeathTest, ThrowingIpiHandlerAbortsNamingIt) {
  testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        auto rt = test_runtime(2);
        run_on(*rt, [] {
          send_ipiq(1, throwing_handler, nullptr);
          for (;;) lwkt_pause(absl::Milliseconds(1));
        });
      },
      "IPI handler .* threw an exception \\(boom\\)");
}

// Each handler sends two more to the other worker: the rings fill, every blocked send runs
// nested drains, and the nesting grows until the cap (DragonFly: more than 20 is fatal).
void fork_bomb(void*, int from, globaldata* gd) {
  send_ipiq3(from, fork_bomb, nullptr, gd->gd_cpuid);
  send_ipiq3(from, fork_bomb, nullptr, gd->gd_cpuid);
}

TEST(MisuseDeathTest, UnboundedNestedDrainsAbortNamingTheCause) {
  testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        auto rt = test_runtime(2);
        run_on(*rt, [] {
          send_ipiq3(1, fork_bomb, nullptr, 0);
          for (;;) lwkt_pause(absl::Milliseconds(1));
        });
      },
      "IPI drains nested .* recurse without bound");
}

TEST(MisuseDeathTest, SwitchWhileMasteringACpusync) {
  testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        auto rt = test_runtime(2);
        run_on(*rt, [] {
          cpusync cs;
          cs.cs_mask.set(1);
          cpusync_interlock(&cs);
          lwkt_switch();
        });
      },
      "lwkt_switch while mastering a cpusync");
}

TEST(MisuseDeathTest, GiveawayOfAThreadParkedUnderAPreemption) {
  testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        auto rt = test_runtime(1);
        run_on(*rt, [] {
          thread* victim = curthread();
          auto p = lwkt::create([victim] { giveaway(victim); },
                                {.name = "preemptor", .pri = TDPRI_INT_SUPPORT,
                                 .nostart = true, .preemptable = true});
          // Off the run queue but still running, then preempted: to P we look neither
          // queued nor running, only TDF_PREEMPT_LOCK (the old check let this through).
          deschedule_self();
          schedule(p->get());  // runs P on top of us
        });
      },
      "parked under a preemption chain");
}

}  // namespace
}  // namespace lwkt
