#include "lwkt/internal/runq.h"

namespace lwkt::internal {

bool runq::insert(thread* td) {
  level& lv = _levels[td->td_pri];
  const int upri = td->td_upri;
  // Bidirectional scan for the slot after the last thread at least as good as td (equal or
  // higher td_upri). The reverse cursor is tested first, so the FIFO case ends at the tail.
  thread* fwd = lv.head;
  thread* rev = lv.tail;
  thread* after = nullptr;  // insert after this one (null: at the head)
  for (;;) {
    if (rev == nullptr) break;  // nothing in the level is as good: insert at the head
    if (rev->td_upri >= upri) {
      after = rev;
      break;
    }
    if (fwd->td_upri < upri) {  // fwd is the first worse thread: insert before it
      after = fwd->td_rq_prev;
      break;
    }
    fwd = fwd->td_rq_next;
    rev = rev->td_rq_prev;
  }
  thread* before = after ? after->td_rq_next : lv.head;
  td->td_rq_prev = after;
  td->td_rq_next = before;
  if (after) {
    after->td_rq_next = td;
  } else {
    lv.head = td;
  }
  if (before) {
    before->td_rq_prev = td;
  } else {
    lv.tail = td;
  }
  _bitmap |= 1u << td->td_pri;
  ++_count;
  return head() == td;
}

void runq::remove(thread* td) {
  level& lv = _levels[td->td_pri];
  if (td->td_rq_prev) {
    td->td_rq_prev->td_rq_next = td->td_rq_next;
  } else {
    lv.head = td->td_rq_next;
  }
  if (td->td_rq_next) {
    td->td_rq_next->td_rq_prev = td->td_rq_prev;
  } else {
    lv.tail = td->td_rq_prev;
  }
  td->td_rq_next = td->td_rq_prev = nullptr;
  if (lv.head == nullptr) _bitmap &= ~(1u << td->td_pri);
  --_count;
}

thread* runq::next(const thread* td) const {
  if (td->td_rq_next) return td->td_rq_next;
  std::uint32_t below = _bitmap & ((1u << td->td_pri) - 1);
  if (below == 0) return nullptr;
  return _levels[31 - __builtin_clz(below)].head;
}

}  // namespace lwkt::internal
