#include "lwkt/internal/runq.h"

namespace lwkt::internal {

// Puts `to` in `from`'s place on a level's group list.
void runq::replace_group_tail(level& lv, thread* from, thread* to) {
  to->td_rqg_prev = from->td_rqg_prev;
  to->td_rqg_next = from->td_rqg_next;
  if (to->td_rqg_prev) {
    to->td_rqg_prev->td_rqg_next = to;
  } else {
    lv.ghead = to;
  }
  if (to->td_rqg_next) {
    to->td_rqg_next->td_rqg_prev = to;
  } else {
    lv.gtail = to;
  }
  from->td_rqg_next = from->td_rqg_prev = nullptr;
}

bool runq::insert(thread* td) {
  td->td_rq_upri = td->td_upri;  // a fresh insertion sorts by the thread's own upri
  return link(td);
}

void runq::rotate_level(thread* td) {
  remove(td);
  // Behind the level's worst group: take its key if it is worse than td's (O(1)).
  const level& lv = _levels[td->td_pri];
  if (lv.gtail && lv.gtail->td_rq_upri < td->td_rq_upri) td->td_rq_upri = lv.gtail->td_rq_upri;
  link(td);
}

bool runq::link(thread* td) {
  level& lv = _levels[td->td_pri];
  const int upri = td->td_rq_upri;
  // The tail of the worst group that is at least as good as td (null: none is).
  thread* g = lv.gtail;
  while (g && g->td_rq_upri < upri) g = g->td_rqg_prev;

  // Link td into the level list right after g (at the head when g is null).
  thread* before = g ? g->td_rq_next : lv.head;
  td->td_rq_prev = g;
  td->td_rq_next = before;
  if (g) {
    g->td_rq_next = td;
  } else {
    lv.head = td;
  }
  if (before) {
    before->td_rq_prev = td;
  } else {
    lv.tail = td;
  }

  if (g && g->td_rq_upri == upri) {
    replace_group_tail(lv, g, td);  // td is the new tail of g's group
  } else {
    // A new group, right after g on the group list (first when g is null).
    thread* after_g = g ? g->td_rqg_next : lv.ghead;
    td->td_rqg_prev = g;
    td->td_rqg_next = after_g;
    if (g) {
      g->td_rqg_next = td;
    } else {
      lv.ghead = td;
    }
    if (after_g) {
      after_g->td_rqg_prev = td;
    } else {
      lv.gtail = td;
    }
  }
  _bitmap |= 1u << td->td_pri;
  ++_count;
  return head() == td;
}

void runq::remove(thread* td) {
  level& lv = _levels[td->td_pri];
  thread* prev = td->td_rq_prev;
  thread* next = td->td_rq_next;
  if (next == nullptr || next->td_rq_upri != td->td_rq_upri) {  // td is its group's tail
    if (prev && prev->td_rq_upri == td->td_rq_upri) {
      replace_group_tail(lv, td, prev);
    } else {  // the group empties
      if (td->td_rqg_prev) {
        td->td_rqg_prev->td_rqg_next = td->td_rqg_next;
      } else {
        lv.ghead = td->td_rqg_next;
      }
      if (td->td_rqg_next) {
        td->td_rqg_next->td_rqg_prev = td->td_rqg_prev;
      } else {
        lv.gtail = td->td_rqg_prev;
      }
      td->td_rqg_next = td->td_rqg_prev = nullptr;
    }
  }
  if (prev) {
    prev->td_rq_next = next;
  } else {
    lv.head = next;
  }
  if (next) {
    next->td_rq_prev = prev;
  } else {
    lv.tail = prev;
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

bool runq::check() const {
  std::uint32_t n = 0;
  for (int p = 0; p < kNumPriorities; ++p) {
    const level& lv = _levels[p];
    if (((_bitmap >> p) & 1) != (lv.head != nullptr)) return false;
    thread* expect_group = lv.ghead;
    thread* prev = nullptr;
    for (thread* td = lv.head; td; prev = td, td = td->td_rq_next) {
      ++n;
      if (td->td_pri != p || td->td_rq_prev != prev) return false;
      if (prev && prev->td_rq_upri < td->td_rq_upri) return false;
      const bool is_tail = !td->td_rq_next || td->td_rq_next->td_rq_upri != td->td_rq_upri;
      if (is_tail) {
        if (td != expect_group) return false;
        expect_group = td->td_rqg_next;
      }
    }
    if (prev != lv.tail || expect_group != nullptr) return false;
  }
  return n == _count;
}

}  // namespace lwkt::internal
