// backend.h: what the two backends' per-worker states share (private to //io).
#pragma once

#include <atomic>
#include <cstdint>

namespace lwkt::io::internal {

// io_config::backend / worker_io::backend: which backend a runtime's workers use.
enum backend_kind : std::uint32_t { kNoBackend = 0, kUring = 1, kEpoll = 2 };

// A statistic written by its worker only, read by io::stats() on any worker.
struct counter {
  std::atomic<std::uint64_t> v{0};
  void add(std::uint64_t n = 1) {
    v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);  // owner only
  }
  std::uint64_t get() const { return v.load(std::memory_order_relaxed); }
};

// The first member of both backends' worker states.
struct worker_base {
  explicit worker_base(backend_kind k) : kind(k) {}
  const backend_kind kind;
  counter ops, submits, reaps, waits, sq_full, cq_overflows, cancels;
  counter pool_enobufs;  // multishot recvs the kernel ended for want of a pool buffer
  counter msg_ring_kicks;  // parked workers this one woke through IORING_OP_MSG_RING
  counter msg_ring_fallbacks;  // ... whose MSG_RING failed, so the eventfd woke them
};

}  // namespace lwkt::io::internal
