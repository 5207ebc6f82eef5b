// runq.h
//
// runq: one worker's run queue (DragonFly gd_tdrunq), touched only by its worker inside a
// critical section. Order: td_pri descending, then the sort key td_rq_upri descending, then
// arrival (FIFO). insert() sets the key to td_upri; rotate_level() may lower it (below).
//
// Layout: one intrusive doubly linked list per priority level (32 levels) plus a bitmap of
// non-empty levels, so finding the head is one count-leading-zeros. Inside a level, the
// threads of equal td_upri form a group (a FIFO run of the list); the group's last thread
// (its tail) is also linked on the level's short group list (td_rqg_*), sorted like the
// level. Enqueue finds its group by walking the group list from the worst end and appends
// after that group's tail: O(number of distinct td_upri in the level), O(1) in the common
// case where they are all equal, and never a walk over threads (DragonFly walks threads
// with a bidirectional scan). Dequeue is O(1): a removed group tail hands its group links to
// its predecessor in the group, or unlinks the group.
//
// Invariant: td is linked at level td->td_pri iff the caller's TDF_RUNQ is set; each level
// list is sorted by td_rq_upri descending, FIFO among equals; a thread is on its level's
// group list iff it is the last of its td_rq_upri run; bit p of the bitmap is set iff level p is
// non-empty; count() is the number of linked threads.
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
  // Moves td behind every queued thread of equal (td_pri, td_upri).
  void rotate(thread* td) {
    remove(td);
    link(td);
  }
  // Moves td behind every queued thread of equal td_pri whatever their td_upri (DragonFly's
  // lwkt_schedulerclock and kern_yield ignore upri, so that a better-upri CPU hog cannot
  // starve its equals): td takes the level's worst sort key until it is next inserted.
  void rotate_level(thread* td);

  thread* head() const {
    if (_bitmap == 0) return nullptr;
    return _levels[31 - __builtin_clz(_bitmap)].head;
  }
  // The thread after td in queue order (null at the end).
  thread* next(const thread* td) const;
  std::uint32_t count() const { return _count; }
  // Verifies every invariant above by walking the whole queue (O(n); tests and debug).
  bool check() const;
  bool empty() const { return _count == 0; }

 private:
  struct level {
    thread* head = nullptr;   // best thread of the level
    thread* tail = nullptr;
    thread* ghead = nullptr;  // group list: the tail of the best group ...
    thread* gtail = nullptr;  // ... and of the worst group
  };
  static void replace_group_tail(level& lv, thread* from, thread* to);
  bool link(thread* td);  // insert() by td_rq_upri
  level _levels[kNumPriorities];
  std::uint32_t _bitmap = 0;
  std::uint32_t _count = 0;
};

}  // namespace lwkt::internal
