// Tokens: exclusion across workers, shared holders, release on switch-out and reacquisition
// before running, all-or-nothing, deadlock freedom with opposite orders, pool hashing, the
// contention warning, misuse.
#include "lwkt/token.h"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <vector>

#include "lwkt/sched.h"
#include "lwkt/testing.h"

namespace lwkt {
namespace {

using testing::run_on;
using testing::scaled;
using testing::block_until;
using testing::test_runtime;

// A plain counter protected only by a token: 8 threads on 4 workers (2 cores). Each
// holder increments, switches out while holding (the token is released meanwhile and is
// back before it runs again), and increments again. No two holders ever run token-held code
// at once and no increment is lost.
TEST(Token, MutualExclusionUnderStressAcrossWorkers) {
  auto rt = test_runtime(4);
  lwkt_token tok("counter");
  long counter = 0;  // protected by tok
  std::atomic<int> inside{0};
  std::atomic<int> overlap{0};
  const int iters = scaled(20000);
  auto region = [&] {
    if (inside.fetch_add(1) != 0) overlap.fetch_add(1);
    long v = counter;
    for (int k = 0; k < 8; ++k) asm volatile("" ::: "memory");  // widen the race window
    counter = v + 1;
    inside.fetch_sub(1);
  };
  std::vector<thread_ref> tds;
  for (int t = 0; t < 8; ++t) {
    thread_options o;
    o.worker = t % 4;
    auto td = rt->spawn(
        [&] {
          for (int i = 0; i < iters; ++i) {
            token_ref hold(&tok);
            region();
            if (i % 16 == 0) yield();  // switch out holding tok
            region();
          }
        },
        o);
    ASSERT_TRUE(td.ok());
    tds.push_back(std::move(*td));
  }
  for (auto& t : tds) t.join();
  EXPECT_EQ(overlap.load(), 0);
  EXPECT_EQ(counter, 2L * 8 * iters);
}

// Shared holders on different workers are inside together; an exclusive requester waits
// until they leave.
TEST(Token, SharedHoldersOverlapWhileExclusiveWaits) {
  auto rt = test_runtime(3);
  lwkt_token tok("shared");
  std::atomic<int> readers{0}, max_readers{0};
  std::atomic<bool> release{false}, writer_in{false};
  std::atomic<int> readers_at_write{-1};
  std::vector<thread_ref> tds;
  for (int w = 0; w < 2; ++w) {
    thread_options o;
    o.worker = w;
    auto td = rt->spawn(
        [&] {
          gettoken_shared(&tok);
          int n = readers.fetch_add(1) + 1;
          int m = max_readers.load();
          while (n > m && !max_readers.compare_exchange_weak(m, n)) {}
          while (!release.load()) {}  // hold it without switching
          readers.fetch_sub(1);
          reltoken(&tok);
        },
        o);
    ASSERT_TRUE(td.ok());
    tds.push_back(std::move(*td));
  }
  while (readers.load() < 2) {}
  thread_options wo;
  wo.worker = 2;
  auto writer = rt->spawn(
      [&] {
        gettoken(&tok);
        readers_at_write = readers.load();
        writer_in = true;
        reltoken(&tok);
      },
      wo);
  ASSERT_TRUE(writer.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(writer_in.load());  // the readers still hold it
  release = true;
  writer->join();
  for (auto& t : tds) t.join();
  EXPECT_EQ(max_readers.load(), 2);
  EXPECT_EQ(readers_at_write.load(), 0);
}

// While the holder is switched out another thread takes the token; when the holder runs
// again it holds the token again.
TEST(Token, ReleasedOnSwitchOutAndHeldAgainOnResume) {
  auto rt = test_runtime(1);
  lwkt_token tok("sleepy");
  std::atomic<bool> wake{false};
  std::atomic<int> other_got{0};
  run_on(*rt, [&] {
    thread* self = curthread();
    auto other = create([&, self] {
      gettoken(&tok);  // succeeds only because the holder is switched out
      other_got = 1;
      reltoken(&tok);
      wake = true;
      schedule(self);
    });
    ASSERT_TRUE(other.ok());
    gettoken(&tok);
    block_until(wake);  // switch out holding tok
    EXPECT_EQ(other_got.load(), 1);
    // Held again, by us, before we ran.
    EXPECT_EQ(tok.t_ref.load(), &curthread()->td_toks_array[0]);
    EXPECT_TRUE(tok.t_count.load() & tokens::TOK_EXCLUSIVE);
    EXPECT_EQ(cnttoken(&tok), 1);
    reltoken(&tok);
    EXPECT_EQ(tok.t_count.load(), 0);
    other->join();
  });
}

// All or nothing: a thread holding A and B that switched out does not run while B is held
// elsewhere, and meanwhile does not hold A either.
TEST(Token, ReacquisitionIsAllOrNothing) {
  auto rt = test_runtime(2);
  lwkt_token a("A"), b("B");
  std::atomic<bool> go{false};
  std::atomic<int> phase{0};
  std::atomic<bool> ran_after{false};
  thread_options o0;
  o0.worker = 0;
  o0.name = "holder";
  auto holder = rt->spawn(
      [&] {
        gettoken(&a);
        gettoken(&b);
        phase = 1;
        block_until(go);  // switch out: both released
        ran_after = true;
        EXPECT_EQ(phase.load(), 3) << "ran before B was free";
        reltoken(&b);
        reltoken(&a);
      },
      o0);
  ASSERT_TRUE(holder.ok());
  thread* h = holder->get();
  thread_options o1;
  o1.worker = 1;
  auto other = rt->spawn(
      [&, h] {
        while (phase.load() != 1) yield();
        // Granted only once the holder has switched out (releasing A and B).
        gettoken(&b);
        go = true;
        schedule(h);  // runnable, but B is ours
        for (int i = 0; i < 200; ++i) yield();
        EXPECT_FALSE(ran_after.load());
        // A is not kept by the waiting holder: we can take it. Its reacquisition attempts
        // hold A only for moments, so retry; but never switch here: switching would release
        // B (a token is held only while its holder runs) and let the holder in.
        bool got_a = false;
        for (long spin = 0; spin < 100000000 && !got_a; ++spin) got_a = trytoken(&a);
        EXPECT_TRUE(got_a);
        if (got_a) reltoken(&a);
        phase = 3;
        reltoken(&b);
      },
      o1);
  ASSERT_TRUE(other.ok());
  other->join();
  holder->join();
  EXPECT_TRUE(ran_after.load());
}

// A then B in one thread, B then A in another, each blocking while holding its first token:
// with mutexes this deadlocks; with tokens both finish.
TEST(Token, OppositeOrdersWithBlockingDoNotDeadlock) {
  auto rt = test_runtime(2);
  lwkt_token a("A"), b("B");
  const int rounds = scaled(2000);
  std::atomic<int> done{0};
  auto body = [&](lwkt_token* first, lwkt_token* second) {
    for (int i = 0; i < rounds; ++i) {
      gettoken(first);
      yield();  // block while holding the first
      gettoken(second);
      reltoken(second);
      reltoken(first);
    }
    done.fetch_add(1);
  };
  thread_options o0, o1;
  o0.worker = 0;
  o1.worker = 1;
  auto t1 = rt->spawn([&] { body(&a, &b); }, o0);
  auto t2 = rt->spawn([&] { body(&b, &a); }, o1);
  auto t3 = rt->spawn([&] { body(&b, &a); }, o0);  // and one on the same worker
  ASSERT_TRUE(t1.ok() && t2.ok() && t3.ok());
  t1->join();
  t2->join();
  t3->join();
  EXPECT_EQ(done.load(), 3);
}

TEST(Token, RecursionSwapAndPoolTokens) {
  auto rt = test_runtime(1);
  run_on(*rt, [] {
    lwkt_token a("A"), b("B");
    gettoken(&a);
    gettoken(&a);  // recursive exclusive
    gettoken_shared(&a);
    EXPECT_EQ(cnttoken(&a), 3);
    reltoken(&a);
    reltoken(&a);
    gettoken(&b);
    token_swap();  // now a is on top
    reltoken(&a);
    EXPECT_FALSE(a.t_count.load() & tokens::TOK_EXCLUSIVE);
    EXPECT_EQ(b.t_ref.load(), &curthread()->td_toks_array[0]);
    reltoken(&b);
    EXPECT_EQ(b.t_count.load(), 0);
    // Pool: the same address maps to the same token; addresses spread over the pool.
    int x, y[64];
    EXPECT_EQ(tokens::pool_token(&x), tokens::pool_token(&x));
    std::set<std::size_t> idx;
    for (auto& e : y) idx.insert(tokens::pool_index(&e));
    EXPECT_GT(idx.size(), 32u);
    lwkt_token* p = getpooltoken(&x);
    EXPECT_EQ(p, tokens::pool_token(&x));
    relpooltoken(&x);
  });
}

// A token held for longer than token_warn makes its waiter print one warning naming both.
TEST(Token, ContentionWarningNamesTokenAndThread) {
  Runtime::Options ro;
  ro.token_warn = absl::Milliseconds(30);
  auto rt = test_runtime(2, ro);
  lwkt_token tok("slow-resource");
  std::atomic<bool> held{false}, release{false};
  thread_options o0;
  o0.worker = 0;
  ::testing::internal::CaptureStderr();
  auto holder = rt->spawn(
      [&] {
        gettoken(&tok);
        held = true;
        while (!release.load()) {}
        reltoken(&tok);
      },
      o0);
  while (!held.load()) {}
  thread_options o1;
  o1.worker = 1;
  o1.name = "impatient";
  auto waiter = rt->spawn([&] { token_ref r(&tok); }, o1);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  release = true;
  waiter->join();
  holder->join();
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("thread 'impatient' (worker 1) has waited"), std::string::npos) << err;
  EXPECT_NE(err.find("for token 'slow-resource'"), std::string::npos) << err;
}

TEST(TokenDeathTest, ReleaseOutOfOrderAborts) {
  testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        auto rt = test_runtime(1);
        run_on(*rt, [] {
          lwkt_token a("A"), b("B");
          gettoken(&a);
          gettoken(&b);
          reltoken(&a);
        });
      },
      "reltoken\\('A'\\) out of order: the most recent reference is 'B'");
}

TEST(TokenDeathTest, ExclusiveWhileHoldingSharedAborts) {
  testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        auto rt = test_runtime(1);
        run_on(*rt, [] {
          lwkt_token a("A");
          gettoken_shared(&a);
          gettoken(&a);
        });
      },
      "exclusive gettoken\\('A'\\) while holding it shared");
}

TEST(TokenDeathTest, TokenStackOverflowAborts) {
  testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        auto rt = test_runtime(1);
        run_on(*rt, [] {
          lwkt_token a("A");
          for (int i = 0; i < 40; ++i) gettoken(&a);
        });
      },
      "token stack overflow \\(32 references\\) taking 'A'");
}

}  // namespace
}  // namespace lwkt
