// runq.h
//
// runq: one worker's run queue (DragonFly gd_tdrunq), touched only by its worker inside a
// critical section. Order: td_pri descending, then td_upri descending, then arrival (FIFO).
//
// Layout: one intrusive doubly linked list per priority level (32 levels) plus a bitmap of
// non-empty levels, so finding the head is one count-leading-zeros and, when arrival order
// decides (the common case: equal td_upri), enqueue and dequeue are O(1) whatever the
// queue length. Within a level, the insertion point for an unequal td_upri is found with
// DragonFly's bidirectional scan (a cursor from each end, whichever reaches the slot first),
// bounding the cost by the distance from the nearer end.
//
// Invariant: td is linked at level td->td_pri iff TDF_RUNQ is set in td->td_flags; each
// level list is sorted by td_upri descending, FIFO among equals; bit p of the bitmap is set
// iff level p is non-empty; count() is the number of linked threads.
#pragma once

#include <cstdint>

#include "lwkt/priority.h"
#include "lwkt/thread.h"

namespace lwkt::internal {

class runq {
 public:
  runq() = default;
  runq(const runq&) = delete;
  runq& operator=(const runq&) = delete;

  // Links td (which must not be linked). Returns true if td became the head of the queue.
  bool insert(thread* td);
  // Unlinks td (which must be linked).
  void remove(thread* td);
  // Moves td behind every queued thread of equal (td_pri, td_upri): round-robin rotation.
  void rotate(thread* td) {
    remove(td);
    insert(td);
  }

  thread* head() const {
    if (_bitmap == 0) return nullptr;
    return _levels[31 - __builtin_clz(_bitmap)].head;
  }
  // The thread after td in queue order (null at the end).
  thread* next(const thread* td) const;
  std::uint32_t count() const { return _count; }
  bool empty() const { return _count == 0; }

 private:
  struct level {
    thread* head = nullptr;
    thread* tail = nullptr;
  };
  level _levels[kNumPriorities];
  std::uint32_t _bitmap = 0;
  std::uint32_t _count = 0;
};

}  // namespace lwkt::internal
