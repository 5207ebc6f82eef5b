// Cross-worker messages: sending on per-pair rings, draining them, blocked senders, and
// cpusync (DragonFly lwkt_ipiq.c).
#include "lwkt/internal/ipi_internal.h"
#include "lwkt/ipi.h"

#include <dlfcn.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <new>

#include "ipiq/internal/chaos.h"
#include "lwkt/internal/clock.h"
#include "lwkt/internal/io_hook.h"
#include "lwkt/internal/remote_call.h"
#include "lwkt/internal/runtime_state.h"
#include "lwkt/internal/sanitizers.h"
#include "lwkt/internal/sched_internal.h"
#include "lwkt/internal/trace.h"
#include "lwkt/sched.h"

namespace lwkt {
namespace internal {
namespace {

std::atomic<ipiq::ring*>& ring_slot(const globaldata* from, const globaldata* to) {
  return from->gd_rings[from->gd_cpuid * from->gd_ncpus + to->gd_cpuid];
}

// Ring (from -> to) on the sending side, or null if from never sent to to. The receiver
// looks only at rings whose mask bit it found set (or, in shutdown, at every slot): the
// sender stored the pointer (release, ring_for_send) before its seq_cst fetch_or of that
// bit, and the receiver read the bit (acquire, reading from that RMW or a later one in its
// release sequence) before loading the pointer, so a ring announced by its bit is always
// seen constructed; acquire pairs with that store where no bit was read.
ipiq::ring* ring_if_any(const globaldata* from, const globaldata* to) {
  return ring_slot(from, to).load(std::memory_order_acquire);
}

// Ring (s -> gd), found from gd's own fields only: the receiver polls it, and reading the
// sender's globaldata (which its owner writes at every switch) would pull that line over
// on every poll. The pointer array is written once per pair (ring_for_send).
ipiq::ring& inbound_ring(const globaldata* gd, int s) {
  ipiq::ring* r =
      gd->gd_rings[s * gd->gd_ncpus + gd->gd_cpuid].load(std::memory_order_acquire);
  LWKT_ASSERT(r != nullptr, gd->gd_curthread,
              "ring %d -> %d read before its first message (mask bit without a ring)", s,
              gd->gd_cpuid);
  return *r;
}

// Ring (me -> target) for a send: allocated on the first send, on the receiver's NUMA node
// (its reads of the entries are the ones that miss). Only worker `me` sends on it, so only
// `me` ever allocates it: a plain check, then a release store that publishes the
// constructed ring (see ring_if_any for the receiving side).
ipiq::ring& ring_for_send(globaldata* me, globaldata* target) {
  std::atomic<ipiq::ring*>& slot = ring_slot(me, target);
  if (ipiq::ring* r = slot.load(std::memory_order_relaxed)) return *r;  // own earlier store
  runtime_state* rs = me->gd_runtime;
  const std::size_t i = &slot - rs->rings.get();
  void* mem = rs->topo->alloc_on_node(sizeof(ipiq::ring), target->gd_numa);
  if (mem) lsan_register_root(mem, sizeof(ipiq::ring));
  rs->ring_on_node[i] = mem != nullptr;
  if (!mem) {
    mem = ::operator new(sizeof(ipiq::ring), std::align_val_t{alignof(ipiq::ring)}, std::nothrow);
  }
  // A send cannot fail (it returns a sequence number, not a status): out of memory for the
  // pair's first ring is fatal, and says so.
  if (!mem) {
    panic(me->gd_curthread, "out of memory allocating the IPI ring from worker %d to worker %d",
          me->gd_cpuid, target->gd_cpuid);
  }
  auto* r = new (mem) ipiq::ring;
  rs->rings_allocated.fetch_add(1, std::memory_order_relaxed);
  slot.store(r, std::memory_order_release);
  return *r;
}

globaldata* worker(int cpu) {
  globaldata* me = mycpu();
  LWKT_ASSERT(me != nullptr, nullptr, "IPI to worker %d from an OS thread that is not a worker",
              cpu);
  LWKT_ASSERT(cpu >= 0 && cpu < me->gd_ncpus, me->gd_curthread, "IPI to worker %d of %d", cpu,
              me->gd_ncpus);
  return me->gd_runtime->gds[static_cast<std::size_t>(cpu)];
}

// Announces a message just pushed on ring (me -> target): the target's mask bit (it
// watches the rings whose bits are set), its RQF_IPIQ request flag (a busy worker's switch
// points look for messages only when it is set), then the kick of a parked target. Both
// are sticky: the receiver clears them only after it stopped finding messages (see
// unwatch_rings), so on the fast path of a send to a worker that keeps receiving they are
// already set and this costs one fence and loads of lines the receiver does not write per
// message; the only line that travels to the receiver is the slot's.
//
// ordering: the first fence orders the slot's publication (push) before the loads of the
// mask, the flag and the parker state. Each pairs with a receiver that clears one of them
// and then looks at the slots after its own seq_cst fence (unwatch_rings + rings_ready in
// the park path and in drain_all; the parker's prepare_park): by the fences' total order,
// either the receiver's look sees the slot, or this sender's load sees the cleared word and
// sets it again (or kicks). A bit set here is followed by a second fence before the flag
// and parker loads: a receiver may find the bit rather than the slot after its fence (a
// ring it unwatched in an earlier cycle is looked at only through its bit), so the bit's
// RMW must precede those loads in that order too. Without it (a relaxed load after an
// LL/SC RMW on AArch64) the flag load can be satisfied before the bit is visible, and a
// busy receiver that clears the flag meanwhile misses both: ipiq/model/park_kick.pml's
// NO_FENCE_AFTER_MASK mutant. The flag's own RMW needs no fence after it: the park path
// does not look at the flag.
void announce(globaldata* me, globaldata* target, bool kick) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const int s = me->gd_cpuid;
  const std::uint64_t bit = std::uint64_t{1} << (s % 64);
  std::atomic<std::uint64_t>& mask = target->gd_ipimask[s / 64];
  ipiq::chaos::point(ipiq::chaos::kAnnounce);
  if (!(mask.load(std::memory_order_relaxed) & bit)) {
    // seq_cst RMW (release at least: the receiver's acquire load of the bit then sees the
    // ring pointer stored by ring_for_send), then the second fence (above).
    mask.fetch_or(bit, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  if (!(target->gd_reqflags.load(std::memory_order_relaxed) & RQF_IPIQ)) {
    target->gd_reqflags.fetch_or(RQF_IPIQ, std::memory_order_seq_cst);
  }
  if (kick) internal::kick_worker(target, /*fenced=*/true);
}

// DragonFly panics past 20 nested drains: handlers that send while rings are full would
// otherwise recurse until the stack overflows.
constexpr int kMaxIpiqNesting = 20;

void check_nesting(globaldata* gd) {
  LWKT_ASSERT(gd->gd_processing_ipiq < kMaxIpiqNesting, gd->gd_curthread,
              "IPI drains nested %d deep (limit %d): message handlers that send messages to "
              "full rings recurse without bound",
              gd->gd_processing_ipiq + 1, kMaxIpiqNesting);
}

// Blocked-sender drain (DragonFly's nested drain): runs messages from senders that are
// themselves blocked on a full ring to us, down to the level they wait for. Bounded: it
// touches only rings whose producer advertised `drain`.
void process_ipiq_nested(globaldata* me) {
  for (int w = 0; w < kMaskWords; ++w) {
    std::uint64_t bits = me->gd_ipimask[w].load(std::memory_order_acquire);
    while (bits) {
      const int s = w * 64 + __builtin_ctzll(bits);
      bits &= bits - 1;
      ipiq::ring& r = inbound_ring(me, s);
      const std::uint32_t level = r.drain();
      if (level == 0) continue;
      check_nesting(me);
      ++me->gd_processing_ipiq;
      ++me->gd_intr_nesting_level;
      r.process(me, level - 1, /*outermost=*/false);
      --me->gd_intr_nesting_level;
      --me->gd_processing_ipiq;
    }
  }
}

void wait_for_room(globaldata* me, globaldata* target, ipiq::ring& r, std::uint32_t low) {
  me->gd_stats.ipi_waits.add();
  // A handler run by the nested drain below may itself block on this ring: restore the
  // outer wait's level afterwards, not 0.
  const std::uint32_t outer_level = r.drain();
  r.set_drain(low + 1);  // "drain me down to `low`" (0 means not blocked)
  internal::kick_worker(target);  // passive sends may have filled the ring of a parked target
  const std::uint64_t start = cheap_clock();
  const std::uint64_t second = ns_to_ticks(1000000000);
  bool warned = false;
  while (r.occupancy() > low) {
    process_ipiq_nested(me);
    cpu_pause();
    if (!warned && cheap_clock() - start > second) {
      warned = true;
      std::fprintf(stderr, "lwkt: worker %d waited 1 s for room in its ring to worker %d\n",
                   me->gd_cpuid, target->gd_cpuid);
      internal::kick_worker(target);
    }
  }
  r.set_drain(outer_level);
}

std::uint32_t send_entry(globaldata* me, globaldata* target, const ipiq::ipi_entry& e,
                         bool passive) {
  if (target == me) {
    ++me->gd_curthread->td_critcount;
    ++me->gd_intr_nesting_level;
    e.func(e.arg1, e.arg2, e.aux, me);
    --me->gd_intr_nesting_level;
    crit_exit();
    return 0;
  }
  ipiq::ring& r = ring_for_send(me, target);
  ++me->gd_curthread->td_critcount;
  // DragonFly's thresholds: a plain send waits above half full (down to a quarter); a send
  // from inside a handler may use the rest of the ring, so handlers rarely block.
  const bool nested = me->gd_processing_ipiq > 0;
  const std::uint32_t high = nested ? ipiq::ring::kCapacity - 3 : ipiq::ring::kCapacity / 2;
  const std::uint32_t low = nested ? ipiq::ring::kCapacity - 5 : ipiq::ring::kCapacity / 4;
  if (passive && r.sender_occupancy(ipiq::ring::kCapacity / 4 - 1) >= ipiq::ring::kCapacity / 4) {
    passive = false;
  }
  if (passive) {
    // Bounded delivery (ipi.h): a target that has parked already gets a kick after all (a
    // plain load, no fence: cheap when it is busy); one that parks concurrently and misses
    // this load parks no longer than kPassiveTick, because it has seen passive traffic.
    if (!target->gd_passive_inbound.load(std::memory_order_relaxed)) {
      target->gd_passive_inbound.store(true, std::memory_order_relaxed);
      // Store-load: with the target's park fence (announce, fence, read the flag), either
      // it sees the flag (and bounds its park) or this load sees it parked.
      std::atomic_thread_fence(std::memory_order_seq_cst);
    }
    if (target->gd_parker.parked()) passive = false;
  }
  if (r.sender_occupancy(high) > high) wait_for_room(me, target, r, low);
  const std::uint32_t seq = r.push(e);
  me->gd_stats.ipis_sent.add();
  announce(me, target, !passive);
  crit_exit();
  return seq;
}

// From an OS thread that is not a worker: carry the entry through the target's inbox.
struct outside_msg : ipiq::inbox_msg {
  ipiq::ipi_entry e;
};

std::uint32_t send_from_outside(globaldata* target, const ipiq::ipi_entry& e) {
  auto* m = new outside_msg;
  m->e = e;
  m->im_func = [](ipiq::inbox_msg* msg, void* ctx) {
    std::unique_ptr<outside_msg> om(static_cast<outside_msg*>(msg));
    om->e.func(om->e.arg1, om->e.arg2, om->e.aux, ctx);
  };
  post(target, m);
  return 0;
}

// User handlers run through a noexcept boundary: an exception would otherwise unwind into
// whichever thread was draining, leaving the nesting counters raised.
[[noreturn]] void handler_threw(void* func) {
  Dl_info info{};
  const char* name = dladdr(func, &info) && info.dli_sname ? info.dli_sname : "?";
  const char* what = "not derived from std::exception";
  try {
    throw;
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
  }
  panic(mycpu() ? mycpu()->gd_curthread : nullptr,
        "IPI handler %p (%s) threw an exception (%s); handlers must not throw", func, name,
        what);
}

void call1(void* a1, std::intptr_t, void* aux, void*) noexcept {
  try {
    reinterpret_cast<ipifunc1>(aux)(a1);
  } catch (...) {
    handler_threw(aux);
  }
}
void call2(void* a1, std::intptr_t a2, void* aux, void*) noexcept {
  try {
    reinterpret_cast<ipifunc2>(aux)(a1, static_cast<int>(a2));
  } catch (...) {
    handler_threw(aux);
  }
}
void call3(void* a1, std::intptr_t a2, void* aux, void* ctx) noexcept {
  try {
    reinterpret_cast<ipifunc3>(aux)(a1, static_cast<int>(a2), static_cast<globaldata*>(ctx));
  } catch (...) {
    handler_threw(aux);
  }
}

}  // namespace

std::uint32_t send_ipi(globaldata* target, ipiq::ipifunc func, void* arg1, std::intptr_t arg2,
                       void* aux, bool passive) {
  globaldata* me = mycpu();
  const ipiq::ipi_entry e{func, arg1, arg2, aux};
  if (me == nullptr || me->gd_runtime != target->gd_runtime) return send_from_outside(target, e);
  trace(me, trace_type::kIpiSend, nullptr, target->gd_cpuid, 0, nullptr);
  return send_entry(me, target, e, passive);
}

globaldata* worker_gd(int cpu) { return worker(cpu); }

remote_call_scope::remote_call_scope(runtime_state* rs, api_class c) : _rs(rs), _class(c) {
  globaldata* me = mycpu();
  _ok = (me && me->gd_runtime == rs) || api_enter(rs, &_counted, c);
}

remote_call_scope::~remote_call_scope() { api_leave(_rs, _counted, _class); }

void remote_call_scope::call(globaldata* gd, ipifunc3 func, void* arg1, int arg2) {
  LWKT_ASSERT(_ok && gd->gd_runtime == _rs, nullptr,
              "remote_call_scope::call on a refused scope or to another runtime's worker");
  send_ipi(gd, call3, arg1, arg2, reinterpret_cast<void*>(func), false);
}

namespace {

// True if a ring whose bit is in `bits` (word w) has its next message there.
bool any_ready(const globaldata* gd, int w, std::uint64_t bits) {
  while (bits) {
    const int s = w * 64 + __builtin_ctzll(bits);
    bits &= bits - 1;
    if (inbound_ring(gd, s).ready()) return true;
  }
  return false;
}

}  // namespace

bool ipiq_pending(const globaldata* gd) {
  for (int w = 0; w < kMaskWords; ++w) {
    // acquire: pairs with announce()'s fetch_or; the ring pointer is visible (inbound_ring).
    const std::uint64_t bits = gd->gd_ipimask[w].load(std::memory_order_acquire);
    if (bits && any_ready(gd, w, bits)) return true;
  }
  return !gd->gd_cpusync_pending.empty();
}

void unwatch_rings(globaldata* gd, std::uint64_t (&cleared)[kMaskWords]) {
  for (int w = 0; w < kMaskWords; ++w) {
    cleared[w] = 0;
    std::uint64_t bits = gd->gd_ipimask[w].load(std::memory_order_acquire);
    while (bits) {
      const int s = w * 64 + __builtin_ctzll(bits);
      const std::uint64_t bit = std::uint64_t{1} << (s % 64);
      bits &= bits - 1;
      if (!inbound_ring(gd, s).ready()) cleared[w] |= bit;
    }
    if (cleared[w]) ipiq::chaos::point(ipiq::chaos::kRingUnwatch);
    // seq_cst RMW, followed by the caller's fence before rings_ready() (see announce).
    if (cleared[w]) gd->gd_ipimask[w].fetch_and(~cleared[w], std::memory_order_seq_cst);
  }
}

bool rings_ready(globaldata* gd, const std::uint64_t (&cleared)[kMaskWords]) {
  bool found = false;
  for (int w = 0; w < kMaskWords; ++w) {
    const std::uint64_t watched = gd->gd_ipimask[w].load(std::memory_order_acquire);
    std::uint64_t bits = cleared[w] & ~watched;
    // A cleared ring whose message arrived meanwhile is watched again (its sender may have
    // seen the bit still set and skipped setting it).
    while (bits) {
      const int s = w * 64 + __builtin_ctzll(bits);
      const std::uint64_t bit = std::uint64_t{1} << (s % 64);
      bits &= bits - 1;
      if (inbound_ring(gd, s).ready()) {
        gd->gd_ipimask[w].fetch_or(bit, std::memory_order_relaxed);  // owner's own re-watch
        found = true;
      }
    }
    if (!found && watched && any_ready(gd, w, watched)) found = true;
  }
  return found || !gd->gd_cpusync_pending.empty();
}

void poll_cpusyncs(globaldata* gd);  // below

std::uint64_t process_ipiq(globaldata* gd) {
  check_nesting(gd);
  ++gd->gd_processing_ipiq;
  ++gd->gd_intr_nesting_level;
  const bool outermost = gd->gd_processing_ipiq == 1;
  std::uint64_t total = 0;
  for (;;) {
    bool more = false;
    for (int w = 0; w < kMaskWords; ++w) {
      // acquire: pairs with announce()'s fetch_or (the ring pointer, see ring_if_any). Bits
      // stay set while their rings are drained: a ring is watched until unwatch_rings.
      std::uint64_t bits = gd->gd_ipimask[w].load(std::memory_order_acquire);
      while (bits) {
        const int s = w * 64 + __builtin_ctzll(bits);
        bits &= bits - 1;
        ipiq::ring& r = inbound_ring(gd, s);
        if (!r.ready()) continue;
        trace(gd, trace_type::kIpiRecv, nullptr, s, 0, nullptr);
        total += r.process(gd, 0, outermost);
        more = true;  // its handlers may have sent to us on rings already passed
      }
    }
    // A participant held by a cpusync master keeps polling here (serving other messages)
    // until released. A master polls once but does not loop (its own wait loop keeps
    // control); polling at all lets two masters that target each other both finish.
    if (outermost && !gd->gd_cpusync_pending.empty()) {
      poll_cpusyncs(gd);
      if (gd->gd_curthread->td_cscount == 0 && !gd->gd_cpusync_pending.empty()) {
        more = true;
        cpu_pause();
      }
    }
    if (!more) break;
  }
  --gd->gd_intr_nesting_level;
  --gd->gd_processing_ipiq;
  return total;
}

// ---- cpusync.

namespace {

bool mack_has(const cpusync* cs, int cpu) {
  return cs->cs_mack[cpu / 64].load(std::memory_order_acquire) & (std::uint64_t{1} << (cpu % 64));
}
void mack_set(cpusync* cs, int cpu) {
  // release: publishes cs_func's effects (second phase) to the master's acquire loads.
  cs->cs_mack[cpu / 64].fetch_or(std::uint64_t{1} << (cpu % 64), std::memory_order_acq_rel);
}
bool mack_equals(const cpusync* cs, const cpumask& m) {
  for (int w = 0; w < kMaskWords; ++w) {
    std::uint64_t want = 0;
    for (int b = 0; b < 64; ++b) {
      if (m.test(static_cast<std::size_t>(w * 64 + b))) want |= std::uint64_t{1} << b;
    }
    if (cs->cs_mack[w].load(std::memory_order_acquire) != want) return false;
  }
  return true;
}

// Second phase on a participant: once the master cleared our bit, run the function and
// acknowledge; until then stay pending (polled by process_ipiq).
bool cpusync_try_run(cpusync* cs, globaldata* gd) {
  if (mack_has(cs, gd->gd_cpuid)) return false;
  if (cs->cs_func) cs->cs_func(cs->cs_data);
  mack_set(cs, gd->gd_cpuid);  // cs may vanish after this
  return true;
}

// First phase (interlock): acknowledge, then wait to be released.
void cpusync_remote1(void* arg, std::intptr_t, void*, void* ctx) {
  auto* cs = static_cast<cpusync*>(arg);
  auto* gd = static_cast<globaldata*>(ctx);
  mack_set(cs, gd->gd_cpuid);
  gd->gd_cpusync_pending.push_back(cs);
}

// Quick form: run at once and acknowledge.
void cpusync_remote_quick(void* arg, std::intptr_t, void*, void* ctx) {
  auto* cs = static_cast<cpusync*>(arg);
  auto* gd = static_cast<globaldata*>(ctx);
  if (cs->cs_func) cs->cs_func(cs->cs_data);
  mack_set(cs, gd->gd_cpuid);
}

void master_wait(globaldata* me, cpusync* cs, const cpumask& want) {
  while (!mack_equals(cs, want)) {
    process_ipiq(me);
    cpu_pause();
  }
}

// Master side of both forms: computes the other participants and, if any, sends them
// `func` and waits for every acknowledgement. Leaves td_cscount raised when it sent.
bool cpusync_start(globaldata* me, cpusync* cs, ipiq::ipifunc func) {
  cs->cs_others = cs->cs_mask;
  for (int i = me->gd_ncpus; i < kMaxWorkers; ++i) cs->cs_others.reset(static_cast<std::size_t>(i));
  cs->cs_others.reset(static_cast<std::size_t>(me->gd_cpuid));
  for (auto& w : cs->cs_mack) w.store(0, std::memory_order_relaxed);
  if (!cs->cs_others.any()) return false;
  ++me->gd_curthread->td_cscount;
  for (int cpu = 0; cpu < me->gd_ncpus; ++cpu) {
    if (cs->cs_others.test(static_cast<std::size_t>(cpu))) {
      send_ipi(me->gd_runtime->gds[static_cast<std::size_t>(cpu)], func, cs, 0, nullptr, false);
    }
  }
  master_wait(me, cs, cs->cs_others);
  return true;
}

}  // namespace

void poll_cpusyncs(globaldata* gd) {
  auto& v = gd->gd_cpusync_pending;
  for (std::size_t i = 0; i < v.size();) {
    if (cpusync_try_run(static_cast<cpusync*>(v[i]), gd)) {
      v.erase(v.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
}

}  // namespace internal

using internal::mycpu;

std::uint32_t send_ipiq(int cpu, ipifunc1 func, void* arg) {
  return internal::send_ipi(internal::worker(cpu), internal::call1, arg, 0,
                            reinterpret_cast<void*>(func), false);
}
std::uint32_t send_ipiq2(int cpu, ipifunc2 func, void* arg1, int arg2) {
  return internal::send_ipi(internal::worker(cpu), internal::call2, arg1, arg2,
                            reinterpret_cast<void*>(func), false);
}
std::uint32_t send_ipiq3(int cpu, ipifunc3 func, void* arg1, int arg2) {
  return internal::send_ipi(internal::worker(cpu), internal::call3, arg1, arg2,
                            reinterpret_cast<void*>(func), false);
}
std::uint32_t send_ipiq3_passive(int cpu, ipifunc3 func, void* arg1, int arg2) {
  globaldata* target = internal::worker(cpu);
  LWKT_ASSERT(target != mycpu(), mycpu()->gd_curthread, "passive IPI to the sending worker");
  return internal::send_ipi(target, internal::call3, arg1, arg2, reinterpret_cast<void*>(func),
                            true);
}

int send_ipiq_mask(const cpumask& mask, ipifunc3 func, void* arg1, int arg2) {
  globaldata* me = internal::lwkt_caller("lwkt::send_ipiq_mask");
  int sent = 0;
  for (int i = 1; i <= me->gd_ncpus; ++i) {
    const int cpu = (me->gd_cpuid + i) % me->gd_ncpus;  // after me first, me last
    if (!mask.test(static_cast<std::size_t>(cpu))) continue;
    send_ipiq3(cpu, func, arg1, arg2);
    ++sent;
  }
  return sent;
}

std::uint32_t seq_ipiq(int cpu) {
  globaldata* me = internal::lwkt_caller("lwkt::seq_ipiq");
  // A ring never sent on has written nothing: sequence 0, which wait_ipiq finds reached.
  const ipiq::ring* r = internal::ring_if_any(me, internal::worker(cpu));
  return r ? r->windex() : 0;
}

void wait_ipiq(int cpu, std::uint32_t seq) {
  globaldata* me = internal::lwkt_caller("lwkt::wait_ipiq");
  globaldata* target = internal::worker(cpu);
  if (target == me) return;
  const ipiq::ring* rp = internal::ring_if_any(me, target);
  if (rp == nullptr) return;  // nothing was ever sent to target: every sequence is reached
  const ipiq::ring& r = *rp;
  ++me->gd_curthread->td_critcount;
  // Passive messages may sit in a parked target's ring: wake it now rather than wait.
  if (static_cast<std::int32_t>(r.xindex() - seq) < 0) internal::kick_worker(target);
  const std::uint64_t start = internal::cheap_clock();
  bool warned = false;
  while (static_cast<std::int32_t>(r.xindex() - seq) < 0) {
    if (me->gd_processing_ipiq == 0) internal::process_ipiq(me);
    internal::cpu_pause();
    if (!warned && internal::cheap_clock() - start > internal::ns_to_ticks(1000000000)) {
      warned = true;
      std::fprintf(stderr, "lwkt: worker %d waited 1 s in wait_ipiq for worker %d\n",
                   me->gd_cpuid, cpu);
      internal::kick_worker(target);
    }
  }
  crit_exit();
}

void cpusync_interlock(cpusync* cs) {
  globaldata* me = internal::lwkt_caller("lwkt::cpusync_interlock");
  ++me->gd_curthread->td_critcount;  // held until cpusync_deinterlock
  internal::cpusync_start(me, cs, internal::cpusync_remote1);
}

void cpusync_deinterlock(cpusync* cs) {
  globaldata* me = internal::lwkt_caller("lwkt::cpusync_deinterlock");
  thread* td = me->gd_curthread;
  const bool others = cs->cs_others.any();
  // release: the master's work before the release is visible to each participant's
  // acquire of its cleared bit.
  for (auto& w : cs->cs_mack) w.store(0, std::memory_order_release);
  if (cs->cs_mask.test(static_cast<std::size_t>(me->gd_cpuid)) && cs->cs_func) {
    cs->cs_func(cs->cs_data);
  }
  if (others) {
    internal::master_wait(me, cs, cs->cs_others);
    --td->td_cscount;
  }
  crit_exit();
}

void cpusync_quick(cpusync* cs) {
  globaldata* me = internal::lwkt_caller("lwkt::cpusync_quick");
  ++me->gd_curthread->td_critcount;
  if (internal::cpusync_start(me, cs, internal::cpusync_remote_quick)) {
    --me->gd_curthread->td_cscount;
  }
  if (cs->cs_mask.test(static_cast<std::size_t>(me->gd_cpuid)) && cs->cs_func) {
    cs->cs_func(cs->cs_data);
  }
  crit_exit();
}

void cpusync_simple(const cpumask& mask, void (*func)(void*), void* data) {
  cpusync cs;
  cs.cs_mask = mask;
  cs.cs_func = func;
  cs.cs_data = data;
  cpusync_interlock(&cs);
  cpusync_deinterlock(&cs);
}

}  // namespace lwkt
