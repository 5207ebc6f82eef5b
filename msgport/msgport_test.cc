// Message ports, from msgport.h's contract: FIFO per sender (local, remote, from outside the
// runtime), synchronous and asynchronous replies, forward chains, an owner that migrates or
// is given away while messages arrive, many senders on many workers with nothing lost or
// duplicated, spin ports shared by lwkt threads and OS threads, priority, abort on an
// interrupted wait, drop, refusal at shutdown, and misuse aborts.
#include "msgport/msgport.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "ipiq/ring.h"
#include "lwkt/ipi.h"
#include "lwkt/runtime.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "lwkt/testing.h"
#include "lwkt/thread.h"

namespace lwkt {
namespace {

using lwkt::testing::scaled;
using lwkt::testing::test_runtime;

struct req {
  lwkt_msg m;  // first: a req* and its lwkt_msg* convert both ways
  int sender = 0;
  int n = 0;
};
req* as_req(lwkt_msg* m) { return reinterpret_cast<req*>(m); }

thread_ref spawn_on(Runtime& rt, int worker, absl::AnyInvocable<void()> fn,
                    const char* name = "msgport-test") {
  auto td = rt.spawn(std::move(fn), {.name = name, .worker = worker});
  EXPECT_TRUE(td.ok()) << td.status();
  return td.ok() ? std::move(*td) : thread_ref();
}

// Waits (spinning politely) until a pointer has been published by another thread.
template <typename T>
T* await(const std::atomic<T*>& p) {
  T* v;
  while (!(v = p.load(std::memory_order_acquire))) {
    if (curthread()) {
      lwkt_pause(absl::Microseconds(50));
    } else {
      std::this_thread::yield();
    }
  }
  return v;
}

// The receiver side of most tests: takes `total` messages from its own port, checks each
// sender's messages arrive in send order, replies with error n (and result n * 2), and
// optionally migrates between workers as it goes.
void serve(thread_port* port, int total, int senders, int migrate_every = 0, int workers = 1) {
  std::vector<int> next(static_cast<std::size_t>(senders), 0);
  for (int i = 0; i < total; ++i) {
    lwkt_msg* m = lwkt_waitport(port, 0);
    ASSERT_NE(m, nullptr);
    req* r = as_req(m);
    EXPECT_EQ(r->n, next[static_cast<std::size_t>(r->sender)]++) << "sender " << r->sender;
    EXPECT_FALSE(m->ms_flags.load() & MSGF_REPLY);
    m->u.ms_result = r->n * 2;
    lwkt_replymsg(m, r->n);
    if (i % 256 == 255) yield();  // replies flood the senders' rings too
    if (migrate_every && i % migrate_every == 0) setcpu_self((mycpuid() + 1) % workers);
  }
}

// Sends k asynchronous messages to `to`, replies to `reply`; then takes the k replies (in
// order: one receiver replies in the order it received) and checks them.
void send_async_and_collect(lwkt_port* to, lwkt_port* reply, int sender, int k) {
  std::vector<req> msgs(static_cast<std::size_t>(k));
  for (int i = 0; i < k; ++i) {
    req& r = msgs[static_cast<std::size_t>(i)];
    lwkt_initmsg(&r.m, reply, 0);
    r.sender = sender;
    r.n = i;
    lwkt_sendmsg(to, &r.m);
    if (i % 256 == 255 && curthread()) yield();  // a flood with no switch point: a stall
  }
  for (int i = 0; i < k; ++i) {
    lwkt_msg* m = lwkt_waitport(reply, 0);
    ASSERT_NE(m, nullptr);
    EXPECT_TRUE(m->ms_flags.load() & MSGF_REPLY);
    EXPECT_TRUE(lwkt_checkmsg(m));
    EXPECT_EQ(as_req(m)->sender, sender);
    EXPECT_EQ(as_req(m)->n, i);
    EXPECT_EQ(m->ms_error, i);
    EXPECT_EQ(m->u.ms_result, i * 2);
  }
  EXPECT_EQ(lwkt_getport(reply), nullptr);
}

TEST(ThreadPort, FifoPerSenderLocalRemoteAndFromOutside) {
  auto rt = test_runtime(3);
  const int k = scaled(3000);
  std::atomic<thread_port*> port{nullptr};
  thread_ref owner = spawn_on(*rt, 0, [&] {
    thread_port p;
    port.store(&p);
    serve(&p, 4 * k, 4);
  });
  std::vector<thread_ref> senders;
  for (int w = 0; w < 3; ++w) {  // worker 0 is the owner's: a local sender
    senders.push_back(spawn_on(*rt, w, [&, w] {
      thread_port mine;
      send_async_and_collect(await(port), &mine, w, k);
    }));
  }
  spin_port outside_replies;  // main is no lwkt thread: it owns no thread port
  send_async_and_collect(await(port), &outside_replies, 3, k);
  for (auto& s : senders) s.join();
  owner.join();
}

TEST(ThreadPort, DomsgFromManySendersOnManyWorkersLosesNothing) {
  auto rt = test_runtime(4);
  const int k = scaled(2000);
  constexpr int kSenders = 8;
  std::atomic<thread_port*> port{nullptr};
  thread_ref owner = spawn_on(*rt, 1, [&] {
    thread_port p;
    port.store(&p);
    serve(&p, (kSenders + 1) * k, kSenders + 1);
  });
  auto domsgs = [&](int sender) {
    thread_port* to = await(port);
    req r;
    lwkt_initmsg(&r.m, nullptr, 0);  // domsg: completed in place, no reply port needed
    r.sender = sender;
    for (int i = 0; i < k; ++i) {
      r.n = i;
      ASSERT_EQ(lwkt_domsg(to, &r.m, 0), i);
      ASSERT_EQ(r.m.u.ms_result, 2 * i);
      ASSERT_TRUE(lwkt_checkmsg(&r.m));
      ASSERT_FALSE(r.m.ms_flags.load() & MSGF_QUEUED);
    }
  };
  std::vector<thread_ref> senders;
  for (int s = 0; s < kSenders; ++s) senders.push_back(spawn_on(*rt, s % 4, [&, s] { domsgs(s); }));
  domsgs(kSenders);  // and main, blocking in the kernel
  for (auto& s : senders) s.join();
  owner.join();
}

TEST(ThreadPort, OwnerMigratingBetweenWorkersKeepsEachSendersOrder) {
  constexpr int kWorkers = 4;
  auto rt = test_runtime(kWorkers);
  const int k = scaled(2000);
  std::atomic<thread_port*> port{nullptr};
  thread_ref owner = spawn_on(*rt, 0, [&] {
    thread_port p;
    port.store(&p);
    serve(&p, kWorkers * k, kWorkers, /*migrate_every=*/3, kWorkers);
  });
  std::vector<thread_ref> senders;
  for (int w = 0; w < kWorkers; ++w) {
    senders.push_back(spawn_on(*rt, w, [&, w] {
      thread_port mine;
      send_async_and_collect(await(port), &mine, w, k);
    }));
  }
  for (auto& s : senders) s.join();
  owner.join();
}

// Messages that find the owner in transit (given away while blocked in waitport, not yet
// acquired) wait for it and arrive, in order, once it runs on its new worker.
TEST(ThreadPort, OwnerGivenAwayWhileBlockedGetsEveryMessageInOrder) {
  auto rt = test_runtime(3);
  const int k = scaled(400);
  std::atomic<thread_port*> port{nullptr};
  std::atomic<thread*> owner_td{nullptr};
  std::atomic<int> phase{0};
  std::atomic<int> on_worker{-1};
  thread_ref owner = *rt->spawn([&] {
    thread_port p;
    owner_td.store(curthread());
    port.store(&p);
    serve(&p, 2 * k, 1);
    on_worker.store(mycpuid());
  }, {.name = "given-owner", .worker = 0});
  auto wait_phase = [&](int v) {
    while (phase.load() < v) lwkt_pause(absl::Microseconds(50));
  };
  thread_ref giver = spawn_on(*rt, 0, [&] {
    thread* td = await(owner_td);
    await(port);
    testing::wait_until_asleep(*rt, "given-owner");  // blocked in waitport for certain
    giveaway(td);
    phase.store(1);
  });
  thread_ref sender = spawn_on(*rt, 2, [&] {
    thread_port mine;
    thread_port* to = await(port);
    wait_phase(1);
    std::vector<req> msgs(static_cast<std::size_t>(2 * k));
    for (int i = 0; i < 2 * k; ++i) {
      req& r = msgs[static_cast<std::size_t>(i)];
      lwkt_initmsg(&r.m, &mine, 0);
      r.n = i;
      lwkt_sendmsg(to, &r.m);
      if (i % 256 == 255) yield();
      if (i == k - 1) {
        phase.store(2);  // the first half went to an owner in transit
        wait_phase(3);
      }
    }
    for (int i = 0; i < 2 * k; ++i) EXPECT_EQ(as_req(lwkt_waitport(&mine, 0))->n, i);
  });
  thread_ref acquirer = spawn_on(*rt, 1, [&] {
    wait_phase(2);
    acquire(owner_td.load());
    phase.store(3);
  });
  sender.join();
  giver.join();
  acquirer.join();
  owner.join();
  EXPECT_EQ(on_worker.load(), 1);
}

// Regression: an owner given away while blocked in waitport, and acquired with no message
// sent meanwhile, is on no sleep queue and not runnable; the next message's arrival must
// still wake it (it hung: the arrival only did wakeup_mycpu(port), which found no sleeper).
TEST(ThreadPort, OwnerGivenAwayAndAcquiredWhileBlockedWakesOnTheNextMessage) {
  auto rt = test_runtime(3);
  std::atomic<thread_port*> port{nullptr};
  std::atomic<thread*> owner_td{nullptr};
  std::atomic<int> phase{0};
  std::atomic<int> got{-1};
  thread_ref owner = *rt->spawn([&] {
    thread_port p;
    owner_td.store(curthread());
    port.store(&p);
    lwkt_msg* m = lwkt_waitport(&p, 0);
    got.store(as_req(m)->n);
    lwkt_replymsg(m, 0);
  }, {.name = "given-owner", .worker = 0});
  thread_ref giver = spawn_on(*rt, 0, [&] {
    thread* td = await(owner_td);
    await(port);
    testing::wait_until_asleep(*rt, "given-owner");  // blocked in waitport for certain
    giveaway(td);
    phase.store(1);
  });
  thread_ref acquirer = spawn_on(*rt, 1, [&] {
    while (phase.load() < 1) lwkt_pause(absl::Microseconds(50));
    acquire(owner_td.load());
    phase.store(2);
  });
  thread_ref sender = spawn_on(*rt, 2, [&] {
    while (phase.load() < 2) lwkt_pause(absl::Microseconds(50));
    lwkt_pause(absl::Milliseconds(5));  // the owner is settled on worker 1, still blocked
    req r;
    lwkt_initmsg(&r.m, nullptr, 0);
    r.n = 42;
    EXPECT_EQ(lwkt_domsg(await(port), &r.m, 0), 0);
  });
  sender.join();
  giver.join();
  acquirer.join();
  owner.join();
  EXPECT_EQ(got.load(), 42);
}

TEST(ThreadPort, ForwardChainRepliesToTheOriginator) {
  auto rt = test_runtime(4);
  const int rounds = scaled(500);
  std::atomic<thread_port*> hop[3] = {};
  std::vector<thread_ref> hops;
  for (int h = 0; h < 3; ++h) {
    hops.push_back(spawn_on(*rt, h + 1, [&, h] {
      thread_port p;
      hop[h].store(&p);
      thread_port* next = h < 2 ? await(hop[h + 1]) : nullptr;
      for (int i = 0; i < 2 * rounds; ++i) {
        lwkt_msg* m = lwkt_waitport(&p, 0);
        m->u.ms_result += h == 0 ? 1 : h == 1 ? 10 : 100;
        if (next) {
          EXPECT_EQ(lwkt_forwardmsg(next, m), EASYNC);
        } else {
          lwkt_replymsg(m, 7);
        }
      }
    }));
  }
  lwkt::testing::run_on(*rt, [&] {
    thread_port mine;
    thread_port* first = await(hop[0]);
    for (int i = 0; i < rounds; ++i) {
      req sync, async;
      lwkt_initmsg(&sync.m, nullptr, 0);
      sync.m.u.ms_result = 0;
      EXPECT_EQ(lwkt_domsg(first, &sync.m, 0), 7);
      EXPECT_EQ(sync.m.u.ms_result, 111);
      lwkt_initmsg(&async.m, &mine, 0);
      async.m.u.ms_result = 0;
      lwkt_sendmsg(first, &async.m);
      EXPECT_EQ(lwkt_waitmsg(&async.m, 0), 7);  // takes it off `mine`
      EXPECT_EQ(async.m.u.ms_result, 111);
      EXPECT_FALSE(async.m.ms_flags.load() & MSGF_QUEUED);
      EXPECT_EQ(lwkt_getport(&mine), nullptr);
    }
  });
  for (auto& h : hops) h.join();
}

TEST(ThreadPort, PriorityMessagesAreTakenFirstEachClassInOrder) {
  auto rt = test_runtime(2);
  lwkt::testing::run_on(*rt, [&] {
    thread_port p;
    thread_port replies;
    req msgs[8];
    for (int i = 0; i < 8; ++i) {
      lwkt_initmsg(&msgs[i].m, &replies, i % 3 == 0 ? MSGF_PRIORITY : 0);
      msgs[i].n = i;
      lwkt_sendmsg(&p, &msgs[i].m);  // local: queued at once
    }
    const int want[] = {0, 3, 6, 1, 2, 4, 5, 7};
    for (int w : want) {
      lwkt_msg* m = lwkt_getport(&p);
      ASSERT_NE(m, nullptr);
      EXPECT_EQ(as_req(m)->n, w);
      lwkt_replymsg(m, 0);
    }
    EXPECT_EQ(lwkt_getport(&p), nullptr);
    for (int i = 0; i < 8; ++i) EXPECT_EQ(lwkt_waitmsg(&msgs[i].m, 0), 0);
  });
}

std::atomic<int> g_aborts{0};
void count_abort(lwkt_msg*) { g_aborts.fetch_add(1); }

// An interrupted PCATCH domsg calls the abort function once and still returns the reply:
// after the abort it waits on uninterruptibly, so a second interrupt neither aborts again
// nor ends the wait.
TEST(ThreadPort, InterruptedDomsgAbortsOnceAndWaitsForTheReply) {
  auto rt = test_runtime(2);
  g_aborts = 0;
  std::atomic<thread_port*> port{nullptr};
  std::atomic<bool> taken{false}, reply{false};
  thread_ref receiver = spawn_on(*rt, 1, [&] {
    thread_port p;
    port.store(&p);
    lwkt_msg* m = lwkt_waitport(&p, 0);
    taken.store(true);
    lwkt::testing::block_until(reply);
    lwkt_replymsg(m, ECONNABORTED);
  });
  std::atomic<int> result{-1};
  thread_ref sender = spawn_on(*rt, 0, [&] {
    req r;
    lwkt_initmsg_abortable(&r.m, nullptr, 0, count_abort);
    result.store(lwkt_domsg(await(port), &r.m, PCATCH));
  }, "sender");
  while (!taken.load()) std::this_thread::yield();
  interrupt(sender.get());
  while (g_aborts.load() == 0) std::this_thread::yield();
  // The sender sleeps again, uninterruptibly, for the reply; interrupt it once more.
  lwkt::testing::run_on(*rt, [&] { lwkt::testing::wait_until_asleep(*rt, "sender"); });
  interrupt(sender.get());
  lwkt::testing::run_on(*rt, [&] { lwkt::testing::wait_until_asleep(*rt, "sender"); });
  EXPECT_EQ(result.load(), -1) << "the second interrupt ended the wait";
  reply = true;
  schedule(receiver.get());
  sender.join();
  receiver.join();
  EXPECT_EQ(result.load(), ECONNABORTED);
  EXPECT_EQ(g_aborts.load(), 1);
}

// A port that completes every message at once (putport returns other than EASYNC).
class refusing_port final : public lwkt_port {
 public:
  int putport(lwkt_msg*) override { return EPERM; }
  void replyport(lwkt_msg*) override { ADD_FAILURE() << "a refused message was queued"; }
  lwkt_msg* getport() override { return nullptr; }
  lwkt_msg* waitport(int) override { return nullptr; }
  int waitmsg(lwkt_msg*, int) override { return 0; }
  bool removemsg(lwkt_msg*) override { return false; }
};

// lwkt_forwardmsg returns the error with which a port completed the message at once, and
// that completion is the originator's reply: in place for a domsg, queued on the reply port
// for a sendmsg.
TEST(Msgport, ForwardToAPortThatCompletesAtOnceRepliesToTheOriginator) {
  spin_port front, replies;
  refusing_port refuser;
  req sync, async;
  lwkt_initmsg(&sync.m, nullptr, 0);
  lwkt_initmsg(&async.m, &replies, 0);
  std::thread relay([&] {
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(lwkt_forwardmsg(&refuser, lwkt_waitport(&front, 0)), EPERM);
    }
  });
  EXPECT_EQ(lwkt_domsg(&front, &sync.m, 0), EPERM);
  lwkt_sendmsg(&front, &async.m);
  EXPECT_EQ(lwkt_waitmsg(&async.m, 0), EPERM);
  relay.join();
  EXPECT_EQ(lwkt_getport(&replies), nullptr);  // waitmsg took the reply off
}

// "Runs on: any OS thread" for thread_port(td), lwkt_forwardmsg and lwkt_abortmsg: main
// builds the port for an lwkt thread, an OS thread relays a message from a spin port to it,
// another OS thread asks for an abort while the owner holds it.
TEST(ThreadPort, BuiltForwardedToAndAbortedFromOsThreads) {
  auto rt = test_runtime(2);
  g_aborts = 0;
  std::atomic<thread_port*> port{nullptr};
  std::atomic<bool> taken{false};
  thread_ref owner = spawn_on(*rt, 1, [&] {
    thread_port* p = await(port);
    EXPECT_EQ(p->owner(), curthread());
    lwkt_msg* m = lwkt_waitport(p, 0);
    taken.store(true);
    while (g_aborts.load() == 0) lwkt_pause(absl::Microseconds(100));
    m->u.ms_result += 1;
    lwkt_replymsg(m, 9);
  });
  thread_port p(owner.get());  // by main, for the owner
  port.store(&p);
  spin_port front;
  req r;
  lwkt_initmsg_abortable(&r.m, nullptr, 0, count_abort);
  r.m.u.ms_result = 41;
  std::thread relay([&] {
    lwkt_msg* m = lwkt_waitport(&front, 0);     // an OS thread waits on a spin port...
    EXPECT_EQ(lwkt_forwardmsg(&p, m), EASYNC);  // ...and forwards to a thread port
  });
  std::thread aborter([&] {
    while (!taken.load()) std::this_thread::yield();
    lwkt_abortmsg(&r.m);  // in flight, held by the owner: abortfn runs here, once
  });
  EXPECT_EQ(lwkt_domsg(&front, &r.m, 0), 9);
  EXPECT_EQ(r.m.u.ms_result, 42);
  relay.join();
  aborter.join();
  owner.join();
  EXPECT_EQ(g_aborts.load(), 1);
}

TEST(SpinPort, LwktAndOsThreadsSendTakeAndWaitNothingLostOrDuplicated) {
  auto rt = test_runtime(2);
  const int k = scaled(3000);
  constexpr int kProducers = 4, kConsumers = 3;
  spin_port port;
  std::vector<std::atomic<int>> seen(static_cast<std::size_t>(kProducers * k));
  auto consume = [&] {
    for (;;) {
      lwkt_msg* m = lwkt_waitport(&port, 0);
      const int id = as_req(m)->n;
      if (id < 0) {  // a stop message
        lwkt_replymsg(m, 0);
        return;
      }
      seen[static_cast<std::size_t>(id)].fetch_add(1);
      lwkt_replymsg(m, id);
    }
  };
  auto produce = [&](int p) {
    req r;
    lwkt_initmsg(&r.m, nullptr, 0);
    for (int i = 0; i < k; ++i) {
      r.n = p * k + i;
      ASSERT_EQ(lwkt_domsg(&port, &r.m, 0), r.n);
    }
  };
  std::vector<thread_ref> lwkt_threads;
  std::vector<std::thread> os_threads;
  lwkt_threads.push_back(spawn_on(*rt, 0, consume));
  lwkt_threads.push_back(spawn_on(*rt, 1, consume));
  os_threads.emplace_back(consume);
  std::vector<thread_ref> producers;
  producers.push_back(spawn_on(*rt, 0, [&] { produce(0); }));
  producers.push_back(spawn_on(*rt, 1, [&] { produce(1); }));
  std::thread os_producer([&] { produce(2); });
  produce(3);
  os_producer.join();
  for (auto& p : producers) p.join();
  for (int c = 0; c < kConsumers; ++c) {
    req stop;
    lwkt_initmsg(&stop.m, nullptr, 0);
    stop.n = -1;
    EXPECT_EQ(lwkt_domsg(&port, &stop.m, 0), 0);
  }
  for (auto& t : lwkt_threads) t.join();
  for (auto& t : os_threads) t.join();
  for (std::size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i].load(), 1) << "message " << i;
}

TEST(SpinPort, AsyncRepliesAndDrop) {
  spin_port target, replies;
  req a, b;
  lwkt_initmsg(&a.m, &replies, MSGF_DROPABLE);
  lwkt_initmsg(&b.m, &replies, 0);
  lwkt_sendmsg(&target, &a.m);
  lwkt_sendmsg(&target, &b.m);
  EXPECT_FALSE(lwkt_checkmsg(&a.m));
  EXPECT_EQ(lwkt_dropmsg(&a.m), 0);  // withdrawn before anyone took it
  EXPECT_TRUE(lwkt_checkmsg(&a.m));
  EXPECT_FALSE(a.m.ms_flags.load() & (MSGF_REPLY | MSGF_QUEUED));
  lwkt_msg* m = lwkt_getport(&target);
  EXPECT_EQ(m, &b.m);
  EXPECT_EQ(lwkt_getport(&target), nullptr);
  lwkt_replymsg(m, 5);
  EXPECT_EQ(lwkt_waitmsg(&b.m, 0), 5);
  EXPECT_EQ(lwkt_getport(&replies), nullptr);  // waitmsg took the reply off
  // Taken by the receiver: too late to drop.
  lwkt_sendmsg(&target, &a.m);
  m = lwkt_getport(&target);
  EXPECT_EQ(lwkt_dropmsg(&a.m), ENOENT);
  lwkt_replymsg(m, 0);
  EXPECT_EQ(lwkt_getport(&replies), &a.m);
}

// Regression (review): dropping a DROPABLE message that was never sent dereferenced its null
// target port (SIGSEGV). A message on no queue (never sent, or completed) gives ENOENT.
TEST(Msgport, DropOfAMessageNeverSent) {
  spin_port target, replies;
  req a;
  lwkt_initmsg(&a.m, &replies, MSGF_DROPABLE);
  EXPECT_EQ(lwkt_dropmsg(&a.m), ENOENT);
  EXPECT_TRUE(lwkt_checkmsg(&a.m));
  lwkt_sendmsg(&target, &a.m);
  lwkt_replymsg(lwkt_getport(&target), 4);
  EXPECT_EQ(lwkt_getport(&replies), &a.m);  // the reply, taken: complete, on no queue
  EXPECT_EQ(lwkt_dropmsg(&a.m), ENOENT);
  EXPECT_EQ(a.m.ms_error, 4);
}

// removemsg (lwkt_dropmsg's second step) withdraws requests only: on a spin port that is
// both target and reply port, a message replied between dropmsg's flag check and its
// removemsg is queued there as a reply, and removing it would lose the reply.
TEST(SpinPort, RemovemsgLeavesAReplyOnTheSamePortQueued) {
  spin_port both;
  req a;
  lwkt_initmsg(&a.m, &both, MSGF_DROPABLE);
  lwkt_sendmsg(&both, &a.m);
  EXPECT_TRUE(both.removemsg(&a.m));  // a request: withdrawn
  lwkt_initmsg(&a.m, &both, MSGF_DROPABLE);
  lwkt_sendmsg(&both, &a.m);
  lwkt_replymsg(lwkt_getport(&both), 6);  // now queued on the same port as a reply
  EXPECT_FALSE(both.removemsg(&a.m));
  EXPECT_EQ(lwkt_dropmsg(&a.m), ENOENT);
  EXPECT_EQ(lwkt_getport(&both), &a.m);  // the reply is still there
  EXPECT_EQ(a.m.ms_error, 6);
}

// The same for a thread port, whose owner is the only one that may remove.
TEST(ThreadPort, RemovemsgLeavesAReplyQueued) {
  auto rt = test_runtime(1);
  lwkt::testing::run_on(*rt, [] {
    thread_port both;
    req a;
    lwkt_initmsg(&a.m, &both, MSGF_DROPABLE);
    lwkt_sendmsg(&both, &a.m);
    lwkt_replymsg(lwkt_getport(&both), 6);
    EXPECT_FALSE(both.removemsg(&a.m));
    EXPECT_EQ(lwkt_getport(&both), &a.m);
  });
}

// Regression (review): a put wakes one lwkt waiter of a spin port; one that was woken and
// interrupted together returned null from its PCATCH waitport and the message stayed
// queued while the next waiter slept on. All on worker 1, so the order is fixed: w1 (the
// oldest sleeper, chosen by wakeup_one) is woken by the put and interrupted at once.
TEST(SpinPort, AnInterruptedWaiterPassesItsWakeupOn) {
  auto rt = test_runtime(2);
  spin_port port;
  std::atomic<lwkt_msg*> got1{nullptr}, got2{nullptr};
  std::atomic<bool> w1_back{false};
  thread_ref w1 = *rt->spawn([&] {
    got1 = lwkt_waitport(&port, PCATCH);
    w1_back = true;
  }, {.name = "waitport-1", .worker = 1});
  testing::run_on(*rt, [&] {
    testing::wait_until_asleep(*rt, "waitport-1");
  }, 1);
  thread_ref w2 = *rt->spawn([&] { got2 = lwkt_waitport(&port, PCATCH); },
                             {.name = "waitport-2", .worker = 1});
  lwkt_msg m;
  lwkt_initmsg(&m, &port, 0);
  testing::run_on(*rt, [&] {
    testing::wait_until_asleep(*rt, "waitport-2");
    crit_enter();
    lwkt_sendmsg(&port, &m);  // wakes w1, the oldest sleeper
    interrupt(w1.get());
    crit_exit();
    while (!w1_back.load()) lwkt_pause(absl::Milliseconds(1));
    for (int i = 0; i < 5000 && !got1.load() && !got2.load(); ++i) {
      lwkt_pause(absl::Milliseconds(1));
    }
    if (!got2.load()) {  // stranded: take it back and end w2's wait, to fail cleanly
      EXPECT_EQ(lwkt_getport(&port), &m);
      interrupt(w2.get());
    }
  }, 1);
  EXPECT_EQ(got1.load(), nullptr);  // interrupted: null, as the header says
  EXPECT_EQ(got2.load(), &m) << "the message was stranded on the port";
  w1.join();
  w2.join();
}

// Regression (review): a spin port's reply woke the message's waiter while holding the port's
// lock. The wakeup's IPI waits for room when the ring to the waiter's worker is over half
// full, and that worker's running thread was spinning on the same lock inside a critical
// section, so it never drained the ring: both hung. Here worker 1's thread polls the reply
// port in a critical section while worker 0 fills the ring to worker 1, then replies.
TEST(SpinPort, AReplyWakesItsWaiterOnlyAfterUnlocking) {
  auto rt = test_runtime(2);
  spin_port target, replies;
  lwkt_msg m;
  lwkt_initmsg(&m, &replies, 0);
  std::atomic<int> waited{-1};
  thread_ref waiter = *rt->spawn([&] {
    lwkt_sendmsg(&target, &m);
    waited = lwkt_waitmsg(&m, 0);  // sleeps on m: the reply's wakeup goes to worker 1
  }, {.name = "reply-waiter", .worker = 1});
  std::atomic<bool> polling{false};
  std::atomic<lwkt_msg*> polled{nullptr};
  testing::run_on(*rt, [&] {
    testing::wait_until_asleep(*rt, "reply-waiter");
    lwkt_msg* got = lwkt_getport(&target);
    ASSERT_EQ(got, &m);
    thread_ref poller = *rt->spawn([&] {
      crit_enter();  // worker 1 runs no message until the reply is taken
      polling = true;
      lwkt_msg* r;
      while (!(r = lwkt_getport(&replies))) {
      }
      polled = r;
      crit_exit();
    }, {.name = "reply-poller", .worker = 1});
    while (!polling.load()) yield();
    // Fill the ring to worker 1 up to where the next send waits for room.
    for (std::uint32_t i = 0; i <= ipiq::ring::kCapacity / 2; ++i) {
      send_ipiq3(1, [](void*, int, globaldata*) {}, nullptr, 0);
    }
    lwkt_replymsg(got, 3);
    poller.join();
  });
  waiter.join();
  EXPECT_EQ(polled.load(), &m);
  EXPECT_EQ(waited.load(), 3);
}

// After shutdown has begun, a send from outside the runtime to a thread port completes in
// place with ECANCELED; lwkt threads still exchange messages during the grace period.
TEST(ThreadPort, SendFromOutsideAfterShutdownBeganIsCancelledInPlace) {
  auto rt = test_runtime(2);
  std::atomic<thread_port*> port{nullptr};
  std::atomic<bool> stop{false};
  std::atomic<bool> inside_done{false};
  thread_ref owner = spawn_on(*rt, 0, [&] {
    thread_port p;
    port.store(&p);
    for (bool last = false; !last;) {
      last = inside_done.load();  // then one more pass: nothing is left queued
      while (lwkt_msg* m = lwkt_getport(&p)) lwkt_replymsg(m, 0);
      if (!last) lwkt_pause(absl::Microseconds(200));
    }
  });
  std::atomic<int> inside_ok{0};
  thread_ref inside = spawn_on(*rt, 1, [&] {
    req r;
    lwkt_initmsg(&r.m, nullptr, 0);
    while (!stop.load()) {
      if (lwkt_domsg(await(port), &r.m, 0) == 0) inside_ok.fetch_add(1);
    }
    inside_done.store(true);
  });
  thread_port* to = await(port);
  req r;
  lwkt_initmsg(&r.m, nullptr, 0);
  EXPECT_EQ(lwkt_domsg(to, &r.m, 0), 0);
  std::thread stopper([&] { (void)rt->shutdown(absl::Seconds(20)); });
  int result;
  while ((result = lwkt_domsg(to, &r.m, 0)) == 0) std::this_thread::yield();
  EXPECT_EQ(result, ECANCELED);
  spin_port replies;
  req a;
  lwkt_initmsg(&a.m, &replies, 0);
  lwkt_sendmsg(to, &a.m);
  EXPECT_TRUE(lwkt_checkmsg(&a.m));  // completed in place, not queued anywhere
  EXPECT_EQ(a.m.ms_error, ECANCELED);
  EXPECT_EQ(lwkt_getport(&replies), nullptr);
  const int before = inside_ok.load();
  while (inside_ok.load() < before + 10) std::this_thread::yield();  // still working inside
  stop.store(true);
  stopper.join();
  EXPECT_TRUE(owner.exited());
  EXPECT_TRUE(inside.exited());
}

// Regression (review): a reply from an OS thread outside the runtime was refused once
// shutdown began: a domsg's in-place completion woke nobody, and a reply to a thread port
// was cancelled in place (ECANCELED, its waiter not woken), so both originators, which the
// grace period exists to let finish, were abandoned. Replies now keep working through it.
TEST(Msgport, RepliesFromOutsideReachTheirOriginatorsDuringShutdown) {
  auto rt = test_runtime(2);
  spin_port work;  // served by an OS thread
  std::atomic<int> domsg_error{-1}, waitmsg_error{-1};
  thread_ref sync_sender = spawn_on(*rt, 0, [&] {
    req r;
    r.n = 1;
    lwkt_initmsg(&r.m, nullptr, 0);
    domsg_error = lwkt_domsg(&work, &r.m, 0);
  });
  thread_ref async_sender = spawn_on(*rt, 1, [&] {
    thread_port replies;
    req r;
    r.n = 2;
    lwkt_initmsg(&r.m, &replies, 0);
    lwkt_sendmsg(&work, &r.m);
    waitmsg_error = lwkt_waitmsg(&r.m, 0);
  });
  lwkt_msg* got[2] = {lwkt_waitport(&work, 0), lwkt_waitport(&work, 0)};
  absl::Status st;
  std::thread stopper([&] { st = rt->shutdown(absl::Seconds(5)); });
  while (rt->snapshot().ok()) std::this_thread::yield();  // until shutdown has begun
  for (lwkt_msg* m : got) lwkt_replymsg(m, as_req(m)->n == 1 ? 7 : 8);
  stopper.join();
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(domsg_error.load(), 7);
  EXPECT_EQ(waitmsg_error.load(), 8);
}

// msgport.h: once the grace period has ended, a reply from outside to a thread port
// completes the message in place with ECANCELED and wakes nobody (its originator, which
// waited uninterruptibly, was abandoned). The port and the message live on the heap, so
// they outlive the abandoned thread's stack.
TEST(Msgport, AReplyFromOutsideAfterTheGracePeriodCompletesInPlace) {
  auto rt = test_runtime(1);
  spin_port work;  // served by this OS thread, which answers too late
  std::atomic<thread_port*> replies{nullptr};
  auto* r = new req;
  thread_ref originator = spawn_on(*rt, 0, [&] {
    replies = new thread_port;
    lwkt_initmsg(&r->m, replies.load(), 0);
    lwkt_sendmsg(&work, &r->m);
    (void)lwkt_waitmsg(&r->m, 0);  // never replied in time: abandoned here
  }, "late-reply-originator");
  lwkt_msg* got = lwkt_waitport(&work, 0);
  ASSERT_EQ(got, &r->m);
  const absl::Status st = rt->shutdown(absl::Milliseconds(50));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find("late-reply-originator"), std::string::npos) << st;
  EXPECT_TRUE(originator.abandoned());
  lwkt_replymsg(got, 5);  // after the grace period
  EXPECT_TRUE(lwkt_checkmsg(&r->m));
  EXPECT_EQ(r->m.ms_error, ECANCELED);
  delete replies.load();  // from outside: the owner's queue checks are skipped
  delete r;
}

// Regression (review): a forward from outside the runtime, refused once shutdown began,
// completed an asynchronous message in place; its originator, waiting on its own thread
// port for the reply, was never woken and was abandoned. The ECANCELED now comes to that
// port as the reply.
TEST(Msgport, AForwardRefusedAtShutdownRepliesToAThreadPort) {
  auto rt = test_runtime(2);
  spin_port front;
  std::atomic<thread_port*> far{nullptr};
  std::atomic<int> waited{-1};
  thread_ref far_owner = spawn_on(*rt, 1, [&] {
    thread_port p;
    far.store(&p);
    EXPECT_EQ(lwkt_waitport(&p, PCATCH), nullptr);  // nothing arrives; interrupted at the end
  }, "far-owner");
  thread_ref originator = spawn_on(*rt, 0, [&] {
    thread_port replies;
    req r;
    lwkt_initmsg(&r.m, &replies, 0);
    lwkt_sendmsg(&front, &r.m);
    waited = lwkt_waitmsg(&r.m, 0);
  });
  lwkt_msg* m = lwkt_waitport(&front, 0);  // main relays, as an OS thread
  thread_port* to = await(far);
  absl::Status st;
  std::thread stopper([&] { st = rt->shutdown(absl::Seconds(5)); });
  while (rt->snapshot().ok()) std::this_thread::yield();  // until shutdown has begun
  EXPECT_EQ(lwkt_forwardmsg(to, m), EASYNC);  // refused: the ECANCELED goes to `replies`
  interrupt(far_owner.get());
  stopper.join();
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(waited.load(), ECANCELED);
}

// Regression (review): a reply from a worker of another runtime in the process woke nobody
// (wakeup on a worker reached only its own runtime), so the domsg hung.
TEST(Msgport, DomsgAnsweredFromAnotherRuntime) {
  auto a = test_runtime(1);
  auto b = test_runtime(1);
  spin_port work;
  std::atomic<int> result{-1};
  thread_ref sender = spawn_on(*a, 0, [&] {
    req r;
    lwkt_initmsg(&r.m, nullptr, 0);
    result = lwkt_domsg(&work, &r.m, 0);
  });
  lwkt::testing::run_on(*b, [&] {
    // Polls: a put's wakeup of a waiter in b would cross runtimes too, and the test is about
    // the reply's.
    lwkt_msg* m;
    while ((m = lwkt_getport(&work)) == nullptr) lwkt_pause(absl::Microseconds(100));
    lwkt::testing::wait_until_asleep(*a, "msgport-test");  // the sender waits for the reply
    lwkt_replymsg(m, 9);
  });
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (result.load() == -1 && absl::Now() < give_up) std::this_thread::yield();
  ASSERT_EQ(result.load(), 9) << "the reply from runtime b did not wake the sender";
  sender.join();
}

TEST(MsgportDeathTest, MisuseAbortsNamingTheCall) {
  lwkt::testing::use_safe_death_test_style();
  EXPECT_DEATH(
      {
        spin_port p;
        req r;
        lwkt_initmsg(&r.m, &p, 0);
        lwkt_sendmsg(&p, &r.m);
        lwkt_sendmsg(&p, &r.m);
      },
      "lwkt_sendmsg: message .*: still in flight");
  EXPECT_DEATH(
      {
        req r;
        lwkt_initmsg(&r.m, nullptr, 0);
        lwkt_replymsg(&r.m, 0);
      },
      "lwkt_replymsg: message .*: already complete");
  EXPECT_DEATH(  // a drop would leave domsg waiting for a reply that never comes
      {
        spin_port p;
        req r;
        lwkt_initmsg(&r.m, nullptr, MSGF_DROPABLE);
        (void)lwkt_domsg(&p, &r.m, 0);
      },
      "lwkt_domsg: message .*: is DROPABLE");
  EXPECT_DEATH(
      {
        auto rt = test_runtime(1);
        std::atomic<thread_port*> port{nullptr};
        std::atomic<bool> done{false};
        thread_ref owner = spawn_on(*rt, 0, [&] {
          thread_port p;
          port.store(&p);
          lwkt::testing::block_until(done);
        });
        lwkt_getport(await(port));
      },
      "thread_port::getport from an OS thread outside the runtime, but the port belongs to");
}

}  // namespace
}  // namespace lwkt
