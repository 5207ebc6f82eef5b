// io::blocking: a process-wide pool of OS threads for calls that would block a worker.
#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "io/io.h"
#include "lwkt/internal/io_hook.h"
#include "lwkt/internal/sched_inline.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"

namespace lwkt::io {
namespace {

struct request {
  void (*run)(void*);
  void* arg;
  std::atomic<bool> done{false};
};

// Threads are started on demand (at most kBlockingThreads) and live for the process: a
// request may come from any runtime, and an idle pool thread costs a blocked OS thread only.
class pool {
 public:
  // Queues r; starts a thread when the queue holds more requests than there are idle
  // threads to take them. (Testing `_idle == 0` was wrong: an idle thread notified by an
  // earlier submit still counts as idle until it wakes, so a burst of calls queued behind
  // busy ones with fewer than kBlockingThreads started.) Throws std::system_error, with r
  // not queued, when no thread can be started and none exists to serve r.
  void submit(request* r) {
    std::lock_guard<std::mutex> l(_mu);
    _queue.push_back(r);
    if (_queue.size() > static_cast<std::size_t>(_idle) && _threads < kBlockingThreads) {
      ++_threads;
      try {
        std::thread([this] { serve(); }).detach();
      } catch (...) {
        --_threads;
        if (_threads == 0) {  // nobody will ever take r: the caller's stack must not stay queued
          _queue.pop_back();
          throw;
        }
      }
    }
    _cv.notify_one();
  }

 private:
  void serve() {
    pthread_setname_np(pthread_self(), "lwkt blocking");
    std::unique_lock<std::mutex> l(_mu);
    for (;;) {
      ++_idle;
      _cv.wait(l, [this] { return !_queue.empty(); });
      --_idle;
      request* r = _queue.front();
      _queue.pop_front();
      l.unlock();
      r->run(r->arg);
      // release: the caller reads fn's results after it sees done. The wakeup follows the
      // store, so a caller that found done false before sleeping is always woken.
      r->done.store(true, std::memory_order_release);
      // The last write into the caller's stack is done: from here on (release) shutdown may
      // unmap it. The wakeup only uses the address.
      lwkt::internal::blocking_outstanding().fetch_sub(1, std::memory_order_release);
      lwkt::wakeup(r);
      l.lock();
    }
  }

  std::mutex _mu;
  std::condition_variable _cv;
  std::deque<request*> _queue;
  int _threads = 0;
  int _idle = 0;
};

pool& the_pool() {
  static pool* p = new pool;  // never destroyed: detached threads use it until exit
  return *p;
}

}  // namespace

void blocking_call(void (*run)(void*), void* arg) {
  globaldata* gd = lwkt::internal::lwkt_caller("io::blocking");
  LWKT_ASSERT(gd->gd_curthread->td_critcount == 0 && gd->gd_intr_nesting_level == 0,
              gd->gd_curthread, "io::blocking inside a critical section or message handler");
  request r{run, arg};
  // Before the submit: a shutdown that abandons this thread reads it after joining us.
  lwkt::internal::blocking_outstanding().fetch_add(1, std::memory_order_relaxed);
  try {
    the_pool().submit(&r);
  } catch (...) {
    lwkt::internal::blocking_outstanding().fetch_sub(1, std::memory_order_relaxed);
    throw;
  }
  while (!r.done.load(std::memory_order_acquire)) {
    tsleep_interlock(&r, 0);
    if (r.done.load(std::memory_order_acquire)) {
      wakeup_mycpu(&r);  // leave the sleep queue we just joined
      break;
    }
    // The pool thread's wakeup comes from outside the runtime: accepted through shutdown's
    // grace period (sleep.h), and after it this thread is abandoned anyway.
    tsleep(&r, PINTERLOCKED, "blocking");
  }
}

}  // namespace lwkt::io
