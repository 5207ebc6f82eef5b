// Preemption (DragonFly lwkt_preempt): a better preemptable thread scheduled locally runs
// before lwkt::schedule returns; chains nest and unwind in order; a refusal inside a critical
// section is honoured at crit_exit; the preempted thread keeps its tokens.
#include <gtest/gtest.h>

#include <string>

#include "lwkt/runtime.h"
#include "lwkt/sched.h"
#include "lwkt/testing.h"
#include "lwkt/token.h"

namespace lwkt {
namespace {

using testing::run_on;
using testing::block_self;
using testing::test_runtime;

thread_options preemptable(const char* name, int pri) {
  thread_options o;
  o.name = name;
  o.pri = pri;
  o.preemptable = true;
  o.nostart = true;
  return o;
}

TEST(Preempt, RunsBeforeScheduleReturnsAndUnwindsWhenItBlocks) {
  auto rt = test_runtime(1);
  std::string trace;
  run_on(*rt, [&] {
    auto p = create([&] { trace += "P"; block_self(); trace += "p"; }, preemptable("P", 20));
    ASSERT_TRUE(p.ok());
    trace += "a";
    schedule(p->get());  // P runs now, blocks, and control comes straight back
    trace += "b";
    schedule(p->get());  // again: P resumes after its block and finishes
    trace += "c";
    p->join();
  });
  EXPECT_EQ(trace, "aPbpc");
  EXPECT_GE(rt->stats().switches, 4u);
  EXPECT_EQ(rt->stats().preemptions, 2u);
}

TEST(Preempt, NestedChainsUnwindInOrder) {
  auto rt = test_runtime(1);
  std::string trace;
  run_on(*rt, [&] {
    thread* p2 = nullptr;
    auto q = create([&] { trace += "2"; block_self(); trace += "4"; }, preemptable("P2", 25));
    ASSERT_TRUE(q.ok());
    p2 = q->get();
    auto p = create(
        [&, p2] {
          trace += "1";
          schedule(p2);  // P2 preempts P1
          trace += "3";
          block_self();
          trace += "5";
        },
        preemptable("P1", 20));
    ASSERT_TRUE(p.ok());
    trace += "0";
    schedule(p->get());  // P1 preempts us, P2 preempts P1; unwinds P2 -> P1 -> us
    trace += "|";
    schedule(q->get());
    schedule(p->get());
    q->join();
    p->join();
  });
  EXPECT_EQ(trace, "0123|45");
}

TEST(Preempt, RefusedInCriticalSectionHappensAtCritExit) {
  auto rt = test_runtime(1);
  std::string trace;
  run_on(*rt, [&] {
    auto p = create([&] { trace += "P"; }, preemptable("P", 20));
    ASSERT_TRUE(p.ok());
    crit_enter();
    schedule(p->get());
    trace += "in";
    crit_exit();  // the refused preemption happens here
    trace += "out";
    p->join();
  });
  EXPECT_EQ(trace, "inPout");
}

TEST(Preempt, NotPreemptableOrNotBetterWaitsForYield) {
  auto rt = test_runtime(1);
  std::string trace;
  run_on(*rt, [&] {
    thread_options plain;
    plain.pri = 20;
    plain.nostart = true;
    auto a = create([&] { trace += "A"; }, plain);
    auto b = create([&] { trace += "B"; }, preemptable("B", TDPRI_KERN_DAEMON));  // equal
    ASSERT_TRUE(a.ok() && b.ok());
    schedule(a->get());
    schedule(b->get());
    trace += "x";
    yield();  // A (better) runs; B (equal priority) waits for the round robin
    a->join();
    b->join();
  });
  EXPECT_EQ(trace.substr(0, 2), "xA");
}

// The preempted thread keeps its tokens: the preemptor cannot take them while it runs on
// top; when it blocks, control returns to the holder, which still holds them.
TEST(Preempt, PreemptedThreadKeepsItsTokens) {
  auto rt = test_runtime(1);
  lwkt_token tok("held");
  std::string trace;
  run_on(*rt, [&] {
    auto p = create(
        [&] {
          trace += trytoken(&tok) ? "got" : "busy";
          block_self();
        },
        preemptable("P", 20));
    ASSERT_TRUE(p.ok());
    gettoken(&tok);
    schedule(p->get());
    EXPECT_EQ(tok.t_ref.load(), &curthread()->td_toks_array[0]);
    reltoken(&tok);
    schedule(p->get());
    p->join();
  });
  EXPECT_EQ(trace, "busy");
}

TEST(Preempt, DisabledByOption) {
  Runtime::Options o;
  o.preempt = false;
  auto rt = test_runtime(1, o);
  std::string trace;
  run_on(*rt, [&] {
    auto p = create([&] { trace += "P"; }, preemptable("P", 20));
    ASSERT_TRUE(p.ok());
    schedule(p->get());
    trace += "a";
    p->join();
  });
  EXPECT_EQ(trace, "aP");
  EXPECT_EQ(rt->stats().preemptions, 0u);
  EXPECT_GE(rt->stats().preemptions_refused, 1u);
}

}  // namespace
}  // namespace lwkt
