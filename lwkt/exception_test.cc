// Per-thread C++ exception state: every lwkt thread has its own caught-exception stack and
// uncaught count (libstdc++'s __cxa_eh_globals, swapped at each switch), whether it yields,
// blocks, is preempted or migrates inside a catch block or a destructor run by unwinding.
// An exception escaping a thread's function aborts naming the thread and the what().
#include <gtest/gtest.h>

#include <atomic>
#include <exception>
#include <stdexcept>
#include <string>

#include "absl/time/time.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "lwkt/testing.h"

namespace lwkt {
namespace {

using testing::run_on;
using testing::test_runtime;

std::string what_of(const std::exception_ptr& p) {
  try {
    std::rethrow_exception(p);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// `pause` switches the caller away in some way and comes back.
template <typename Pause>
void catch_and_pause(const std::string& name, Pause pause, std::atomic<int>& ok) {
  try {
    throw std::runtime_error(name);
  } catch (const std::exception& e) {
    for (int i = 0; i < 20; ++i) {
      pause(i);
      // The caught stack is this thread's: the reference, current_exception and rethrow.
      ASSERT_EQ(std::string(e.what()), name);
      ASSERT_EQ(what_of(std::current_exception()), name);
      ASSERT_EQ(std::uncaught_exceptions(), 0);
    }
    try {
      throw;  // rethrows this thread's exception, not the other thread's
    } catch (const std::runtime_error& again) {
      ASSERT_EQ(std::string(again.what()), name);
      pause(0);
    }
    ASSERT_EQ(what_of(std::current_exception()), name);
  }
  ASSERT_EQ(std::current_exception(), nullptr);
  ok.fetch_add(1);
}

void run_pair(Runtime& rt, void (*pause)(int)) {
  std::atomic<int> ok{0};
  run_on(rt, [&] {
    auto a = lwkt::create([&] { catch_and_pause("from A", pause, ok); }, {.name = "A"});
    auto b = lwkt::create([&] { catch_and_pause("from B", pause, ok); }, {.name = "B"});
    auto c = lwkt::create([&] { catch_and_pause("from C", pause, ok); }, {.name = "C"});
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    a->join();
    b->join();
    c->join();
  });
  EXPECT_EQ(ok.load(), 3);
}

Runtime::Options round_robin() {
  Runtime::Options o;
  o.rr_slice = absl::ZeroDuration();  // every yield rotates: the threads interleave
  return o;
}

TEST(Exceptions, YieldInsideCatch) {
  auto rt = test_runtime(1, round_robin());
  run_pair(*rt, [](int) { yield(); });
}

TEST(Exceptions, BlockInsideCatch) {
  auto rt = test_runtime(1, round_robin());
  run_pair(*rt, [](int) { lwkt_pause(absl::Microseconds(20)); });
}

TEST(Exceptions, MigrateInsideCatch) {
  auto rt = test_runtime(3, round_robin());
  run_pair(*rt, [](int i) {
    setcpu_self((mycpuid() + 1 + (i & 1)) % 3);
    yield();
  });
}

// A destructor that runs during unwinding sees uncaught_exceptions() == 1 across yields,
// while the other thread (not unwinding) sees 0 at the same moments.
struct unwinding_probe {
  std::atomic<int>* bad;
  ~unwinding_probe() {
    for (int i = 0; i < 20; ++i) {
      if (std::uncaught_exceptions() != 1) bad->fetch_add(1);
      yield();
    }
  }
};

TEST(Exceptions, UncaughtCountIsPerThreadDuringUnwinding) {
  auto rt = test_runtime(1, round_robin());
  std::atomic<int> bad{0}, caught{0};
  run_on(*rt, [&] {
    auto unwinder = lwkt::create(
        [&] {
          try {
            unwinding_probe p{&bad};
            throw std::logic_error("unwinding");
          } catch (const std::logic_error& e) {
            if (std::string(e.what()) == "unwinding") caught.fetch_add(1);
          }
        },
        {.name = "unwinder"});
    auto bystander = lwkt::create(
        [&] {
          for (int i = 0; i < 40; ++i) {
            if (std::uncaught_exceptions() != 0 || std::current_exception() != nullptr) {
              bad.fetch_add(1);
            }
            yield();
          }
        },
        {.name = "bystander"});
    ASSERT_TRUE(unwinder.ok() && bystander.ok());
    unwinder->join();
    bystander->join();
  });
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(caught.load(), 1);
}

// A preemptable thread that runs on top of a victim inside a catch block sees no caught
// exception, and the victim's is intact afterwards.
TEST(Exceptions, PreemptionInsideCatch) {
  auto rt = test_runtime(1);
  std::atomic<int> bad{0}, preempted{0};
  run_on(*rt, [&] {
    thread_options po;
    po.name = "preemptor";
    po.preemptable = true;
    po.pri = TDPRI_INT_HIGH;
    po.nostart = true;
    auto p = lwkt::create(
        [&] {
          for (int i = 0; i < 10; ++i) {
            if (std::current_exception() != nullptr || std::uncaught_exceptions() != 0) {
              bad.fetch_add(1);
            }
            preempted.fetch_add(1);
            if (i < 9) testing::block_self();  // the victim's next schedule() resumes us
          }
        },
        po);
    ASSERT_TRUE(p.ok());
    try {
      throw std::runtime_error("victim");
    } catch (const std::exception&) {
      for (int i = 0; i < 10; ++i) {
        schedule(p->get());  // preempts us at once
        if (what_of(std::current_exception()) != "victim") bad.fetch_add(1);
      }
    }
    p->join();
  });
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(preempted.load(), 10);
}

TEST(ExceptionsDeathTest, EscapingExceptionNamesThreadAndWhat) {
  testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        auto rt = test_runtime(1);
        auto td = rt->spawn([] { throw std::out_of_range("index 7 past the end"); },
                            {.name = "thrower"});
        td->join();
      },
      "thrower.*exception escaped the thread function: std::out_of_range: index 7 past the end");
}

}  // namespace
}  // namespace lwkt
