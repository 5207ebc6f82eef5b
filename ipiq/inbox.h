// inbox.h
//
// ipiq::inbox: a lock-free multi-producer, single-consumer queue of intrusive messages.
// It carries requests from OS threads that are not workers (and, until the per-pair IPI
// rings take over, from other workers) to one worker. Producers push with one CAS; the
// consumer (the worker) takes the whole list with one exchange and runs it in FIFO order.
//
//   inbox_msg   the intrusive node: a link and the function the consumer calls.
//   inbox       push() from any OS thread; take_all()/empty() by the owning consumer.
//
// A message is owned by the inbox from push() until the consumer has unlinked it: the
// consumer reads `im_next` before calling `im_func`, so the handler may free or re-push the
// message. Park/kick of a consumer that found the inbox empty: parker.h.
#pragma once

#include <atomic>

namespace ipiq {

struct inbox_msg {
  inbox_msg* im_next = nullptr;
  // Called by the consumer with the message and the consumer's context pointer.
  void (*im_func)(inbox_msg* msg, void* ctx) = nullptr;
};

class inbox {
 public:
  inbox() = default;
  inbox(const inbox&) = delete;
  inbox& operator=(const inbox&) = delete;

  // Appends `m`. Returns true if the inbox was empty before, i.e. this producer is the one
  // that must make sure the consumer notices (flag it and kick it).
  // Runs on: any OS thread.
  bool push(inbox_msg* m) {
    inbox_msg* old = _head.load(std::memory_order_relaxed);
    do {
      m->im_next = old;
      // release: pairs with the acquire exchange in take_all(); publishes *m (and
      // everything the producer wrote before pushing, e.g. a request's arguments).
    } while (!_head.compare_exchange_weak(old, m, std::memory_order_release,
                                          std::memory_order_relaxed));
    return old == nullptr;
  }

  // Removes every queued message and returns them oldest first (null when empty).
  // Runs on: the consumer only.
  inbox_msg* take_all() {
    if (_head.load(std::memory_order_relaxed) == nullptr) return nullptr;
    // acquire: pairs with the release CAS in push(); makes each message's contents visible.
    inbox_msg* lifo = _head.exchange(nullptr, std::memory_order_acquire);
    inbox_msg* fifo = nullptr;
    while (lifo) {  // reverse: pushes built a LIFO stack
      inbox_msg* next = lifo->im_next;
      lifo->im_next = fifo;
      fifo = lifo;
      lifo = next;
    }
    return fifo;
  }

  // True when nothing is queued. A hint for polling; the park protocol (parker.h) orders it
  // against producers with a fence.
  // Runs on: any OS thread.
  bool empty() const { return _head.load(std::memory_order_relaxed) == nullptr; }

 private:
  // written: producers (CAS), consumer (exchange); read: both.
  std::atomic<inbox_msg*> _head{nullptr};
};

}  // namespace ipiq
