// completion.h
//
// completion: a one-shot event that one waiter waits for and one signaller fires, where
// either side may be an lwkt thread or any other OS thread. An lwkt waiter blocks only its
// own thread (deschedule + switch); an OS waiter sleeps on a futex. Used for join, for
// cross-worker create requests and for shutdown.
//
// State word:
//   kPending     0  nobody waits yet, not signalled
//   kDone        1  signalled; the waiter may return (and free the completion)
//   kLwktWaiter  2  an lwkt thread (c_waiter) is blocked and must be scheduled
//   kOsWaiter    3  an OS thread sleeps on the futex
//   kSignalling  4  signal() is between its exchange and its final store
// Invariant: the waiter leaves wait() only after observing kDone, and signal() touches the
// completion not at all after storing kDone. So a blocked lwkt waiter is alive (and its
// object held) when signal() reads c_waiter, and the completion may live on the waiter's
// stack.
#pragma once

#include <atomic>
#include <cstdint>

namespace lwkt {
struct thread;
struct globaldata;
namespace internal {

class completion {
 public:
  completion() = default;
  completion(const completion&) = delete;
  completion& operator=(const completion&) = delete;

  // Waits until signal(). Runs on: any OS thread; on an lwkt thread, outside message
  // handlers.
  void wait();
  // Fires the event once. Runs on: any OS thread, including message handlers.
  void signal();
  // Shutdown only: fires the event without scheduling an lwkt waiter (whose worker is gone).
  void signal_abandoned();
  // Fires the event only if its waiter is an lwkt thread blocked on worker gd (the caller's
  // worker, so the waiter cannot run before the caller switches). Returns whether it did.
  bool signal_if_local_waiter(const globaldata* gd);
  bool done() const { return c_state.load(std::memory_order_acquire) == kDone; }

 private:
  static constexpr std::uint32_t kPending = 0, kDone = 1, kLwktWaiter = 2, kOsWaiter = 3,
                                 kSignalling = 4;
  // written: waiter (CAS from kPending), signaller (exchange, store); read: both.
  std::atomic<std::uint32_t> c_state{kPending};
  thread* c_waiter = nullptr;  // written by the waiter before its CAS; read by signal()
};

}  // namespace internal
}  // namespace lwkt
