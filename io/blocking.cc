// io::blocking: a process-wide pool of OS threads for calls that would block a worker.
#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "io/io.h"
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
  void submit(request* r) {
    std::lock_guard<std::mutex> l(_mu);
    _queue.push_back(r);
    if (_idle == 0 && _threads < kBlockingThreads) {
      ++_threads;
      std::thread([this] { serve(); }).detach();
    } else {
      _cv.notify_one();
    }
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
  the_pool().submit(&r);
  while (!r.done.load(std::memory_order_acquire)) {
    tsleep_interlock(&r, 0);
    if (r.done.load(std::memory_order_acquire)) {
      wakeup_mycpu(&r);  // leave the sleep queue we just joined
      break;
    }
    // Bounded: the pool thread's wakeup comes from outside the runtime and is refused once
    // shutdown began (sleep.h), so the caller also looks for `done` every 10 ms.
    tsleep(&r, PINTERLOCKED, "blocking", absl::Milliseconds(10));
  }
}

}  // namespace lwkt::io
