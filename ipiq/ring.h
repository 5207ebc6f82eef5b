// ring.h
//
// ipiq::ring: the single-producer single-consumer message ring of one ordered
// (sender worker, receiver worker) pair (DragonFly's `struct lwkt_ipiq`). A message is a
// function plus arguments, copied into a fixed slot. Knows nothing about threads or workers:
// the context pointer handed to each function is the receiver's.
//
//   ipi_entry   one message: the function to call and its arguments
//   ipi_slot    an entry and its sequence number, one cache line
//   ring        push() by the sender, ready()/process() by the receiver
//
// Indices are free-running 32-bit counters; occupancy = windex - rindex (wrap-safe);
// slot = index & (kCapacity - 1).
//   slot.seq  written by the sender only, last (release): index + 1 of the message the slot
//           holds. The receiver at rindex r polls only this word of the slot it would read
//           next: seq == r + 1 means the message is there (one cache line per message, the
//           one the sender wrote; no index line travels on the fast path).
//   windex  written by the sender only: next slot to fill. Read by the receiver only where it
//           needs a count (the nested drain to a level) and by shutdown's quiescence check.
//   rindex  written by the receiver only: next slot to consume; advanced *before* the
//           function runs, so the slot is free for the sender while the function executes.
//           The sender reads it only when its cached copy says the ring may be filling up.
//   xindex  written by the receiver only: every message below it has finished executing
//           (lwkt_wait_ipiq waits on it). Updated only by the outermost processing level,
//           after its function returns, so a nested drain cannot announce completion of a
//           message whose function is still running further up the stack.
//   drain   written by the sender only: non-zero while the sender is blocked waiting for
//           room, telling a receiver that is itself blocked (nested drain) how far to drain.
// Sender and receiver fields sit on separate 128-byte blocks: no false sharing.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "ipiq/internal/chaos.h"

namespace ipiq {

using ipifunc = void (*)(void* arg1, std::intptr_t arg2, void* aux, void* ctx);

struct ipi_entry {
  ipifunc func;
  void* arg1;
  std::intptr_t arg2;
  void* aux;  // a second pointer (the user function of the 1- and 2-argument forms)
};

inline constexpr std::size_t kRingGap = 128;

// One message and its sequence number on a cache line of its own: the receiver's poll and
// its read of the entry touch the one line the sender wrote.
struct alignas(64) ipi_slot {
  std::atomic<std::uint32_t> seq{0};  // written: sender (release), last; read: receiver
  ipi_entry e{};                      // written: sender, before seq; read: receiver, after it
};
static_assert(sizeof(ipi_slot) == 64);

class ring {
 public:
  static constexpr std::uint32_t kCapacity = 256;  // DragonFly MAXCPUFIFO
  static constexpr std::uint32_t kMask = kCapacity - 1;

  ring() = default;
  ring(const ring&) = delete;
  ring& operator=(const ring&) = delete;

  // Messages queued and not yet taken by the receiver. Exact for the sender (it owns
  // windex); a lower bound for anyone else.
  std::uint32_t occupancy() const {
    // acquire: pairs with the release store of rindex in process(): once the sender sees a
    // slot freed, the receiver's reads of that slot are complete.
    return _s.windex.load(std::memory_order_relaxed) - _r.rindex.load(std::memory_order_acquire);
  }
  // The sender's view of occupancy, using its cached copy of rindex and re-reading the
  // receiver's line only when the cached value exceeds `limit` (the copy only lags, so the
  // estimate is never too low). Saves a cache-line transfer on most sends.
  // Runs on: the sender only.
  std::uint32_t sender_occupancy(std::uint32_t limit) {
    const std::uint32_t w = _s.windex.load(std::memory_order_relaxed);
    if (w - _s.rindex_cache > limit) {
      // acquire: as in occupancy().
      _s.rindex_cache = _r.rindex.load(std::memory_order_acquire);
    }
    return w - _s.rindex_cache;
  }
  // True if the message at rindex is there. Reads one word of the slot the receiver would
  // read next (the sender's last write to it). Runs on: the receiver only.
  bool ready() const {
    const std::uint32_t r = _r.rindex.load(std::memory_order_relaxed);
    // acquire: pairs with the release store of seq in push(); a true answer makes the
    // entry visible to the process() that follows.
    return _slots[r & kMask].seq.load(std::memory_order_acquire) == r + 1;
  }

  // Appends a message. Requires: occupancy() < kCapacity (the caller waits for room), so
  // the receiver has copied out whatever the slot held a lap ago (its release of rindex,
  // acquired by occupancy()/sender_occupancy()). Returns the message's sequence number (the
  // new windex): lwkt_wait_ipiq waits until xindex reaches it. Runs on: the sender only.
  std::uint32_t push(const ipi_entry& e) {
    const std::uint32_t w = _s.windex.load(std::memory_order_relaxed);
    ipi_slot& slot = _slots[w & kMask];
    slot.e = e;
    chaos::point(chaos::kRingPublish);
    // release: pairs with the acquire load of seq in ready()/process(); publishes the entry.
    // A slot's seq takes the values i + 1, i + 1 + kCapacity, ...: a stale one never equals
    // the index the receiver expects.
    slot.seq.store(w + 1, std::memory_order_release);
    // release: for the readers of windex (the nested drain's count, shutdown), which then
    // see every slot below it published.
    _s.windex.store(w + 1, std::memory_order_release);
    return w + 1;
  }

  // Runs messages until at most `keep` remain (keep == 0: until the next slot is not there).
  // `outermost` is true when the receiver is not already inside process() for any ring
  // (only then is xindex advanced). Returns the number of messages run. Reentrant: a
  // function may cause a nested process() on the same ring (a blocked send drains its own
  // inbound rings), so rindex is re-read every iteration. Runs on: the receiver only.
  std::uint32_t process(void* ctx, std::uint32_t keep, bool outermost) {
    std::uint32_t n = 0;
    for (;;) {
      const std::uint32_t r = _r.rindex.load(std::memory_order_relaxed);
      ipi_slot& slot = _slots[r & kMask];
      if (keep == 0) {
        // acquire: pairs with the release store of seq in push(); the entry is visible.
        if (slot.seq.load(std::memory_order_acquire) != r + 1) return n;
      } else {
        // acquire: pairs with the release store of windex in push(); every slot below it
        // is published.
        if (_s.windex.load(std::memory_order_acquire) - r <= keep) return n;
      }
      chaos::point(chaos::kRingConsume);
      const ipi_entry e = slot.e;
      // release: pairs with the acquire in occupancy(); the slot was copied out above, so
      // the sender may overwrite it from now on.
      _r.rindex.store(r + 1, std::memory_order_release);
      e.func(e.arg1, e.arg2, e.aux, ctx);
      ++n;
      if (outermost) {
        // release: pairs with the acquire in xindex(); publishes the function's effects to
        // a sender waiting in lwkt_wait_ipiq. rindex covers nested work done meanwhile.
        _r.xindex.store(_r.rindex.load(std::memory_order_relaxed), std::memory_order_release);
      }
    }
  }

  std::uint32_t windex() const { return _s.windex.load(std::memory_order_relaxed); }
  // windex for observers other than the sender (shutdown's quiescence check).
  std::uint32_t windex_acquire() const { return _s.windex.load(std::memory_order_acquire); }
  std::uint32_t xindex() const { return _r.xindex.load(std::memory_order_acquire); }
  // Blocked-sender protocol (see `drain` above). Relaxed: a hint; the receiver re-reads it
  // every pass and the sender re-checks occupancy itself.
  void set_drain(std::uint32_t level) { _drain.v.store(level, std::memory_order_relaxed); }
  std::uint32_t drain() const { return _drain.v.load(std::memory_order_relaxed); }

 private:
  struct alignas(kRingGap) sender_side {
    std::atomic<std::uint32_t> windex{0};  // written: sender; read: nested drain, shutdown
    std::uint32_t rindex_cache = 0;        // sender only: a lagging copy of rindex
  };
  struct alignas(kRingGap) receiver_side {
    std::atomic<std::uint32_t> rindex{0};  // written: receiver; read: sender (acquire)
    std::atomic<std::uint32_t> xindex{0};  // written: receiver; read: waiting sender
  };
  struct alignas(kRingGap) drain_word {
    std::atomic<std::uint32_t> v{0};       // written: sender; read: receiver
  };
  static_assert(alignof(sender_side) == kRingGap && alignof(receiver_side) == kRingGap);
  sender_side _s;
  receiver_side _r;
  drain_word _drain;
  ipi_slot _slots[kCapacity];
};

}  // namespace ipiq
