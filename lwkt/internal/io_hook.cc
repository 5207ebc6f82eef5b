// The scheduler's side of the I/O seam (io_hook.h).
#include "lwkt/internal/io_hook.h"

#include <atomic>

#include "lwkt/internal/assert.h"
#include "lwkt/internal/runtime_state.h"
#include "lwkt/internal/sched_internal.h"

namespace lwkt::internal {
namespace {
// Written once by a static initialiser of //io, before main; read at Runtime::create.
std::atomic<const io_provider*> g_provider{nullptr};
}  // namespace

void install_io_provider(const io_provider* p) {
  g_provider.store(p, std::memory_order_release);
}

const io_provider* installed_io_provider() {
  return g_provider.load(std::memory_order_acquire);
}

std::atomic<std::uint32_t>& blocking_outstanding() {
  static std::atomic<std::uint32_t> n{0};
  return n;
}

worker_io* my_worker_io() {
  globaldata* gd = mycpu();
  if (gd == nullptr || gd->gd_runtime->io == nullptr) return nullptr;
  return &gd->gd_io;
}

int enable_kick_fd() {
  globaldata* gd = mycpu();
  if (gd == nullptr) return -1;
  if (!gd->gd_parker.set_mechanism(ipiq::kick_mechanism::eventfd)) return -1;
  return gd->gd_parker.event_fd();
}

std::vector<worker_io*> runtime_worker_ios() {
  std::vector<worker_io*> v;
  if (globaldata* gd = mycpu()) {
    for (globaldata* g : gd->gd_runtime->gds) v.push_back(&g->gd_io);
  }
  return v;
}

void kick_worker(globaldata* target, bool fenced) {
  const io_provider* p = target->gd_runtime->io;
  if (p == nullptr) {
    target->gd_parker.kick_via([] { return false; }, fenced);
    return;
  }
  target->gd_parker.kick_via([&] { return p->kick(&target->gd_io); }, fenced);
}

void io_shutdown_handler(void*, std::intptr_t, void*, void* ctx) {
  auto* gd = static_cast<globaldata*>(ctx);
  gd->gd_io.closing = true;
  if (gd->gd_io.state.load(std::memory_order_relaxed)) gd->gd_runtime->io->cancel_all(&gd->gd_io);
}

void io_flush(globaldata* gd, bool idle) { gd->gd_runtime->io->flush(&gd->gd_io, idle); }

void io_wake(thread* td, const void* ident) {
  globaldata* gd = mycpu();
  LWKT_ASSERT(gd && td->td_gd == gd, td, "io completion on worker %d, which does not own it",
              gd ? gd->gd_cpuid : -1);
  if ((td->td_flags & TDF_TSLEEPQ) && td->td_wchan == ident) wake_sleeper(gd, td);
}

}  // namespace lwkt::internal
