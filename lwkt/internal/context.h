// context.h
//
// The C++ face of the assembly context switch (switch_*_elf.S):
//   lwkt_cpu_switch()      saves the callee-saved state of the running context on its own
//                          stack, stores its stack pointer and resumes another saved context.
//   make_initial_frame()   builds, at the top of a fresh stack, a frame that lwkt_cpu_switch
//                          can resume: it "returns" into lwkt_cpu_trampoline, which calls
//                          lwkt_thread_bootstrap(prev, td).
// The frame layouts live in switch_frame_<arch>.h and are checked here against the structs.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__x86_64__)
#include "lwkt/internal/switch_frame_x86_64.h"
#elif defined(__aarch64__)
#include "lwkt/internal/switch_frame_aarch64.h"
#else
#error "lwkt supports x86-64 and AArch64 only"
#endif

extern "C" {
// Switches stacks. `arg` is delivered as the return value in the resumed context.
void* lwkt_cpu_switch(void** save_sp, void* load_sp, void* arg);
// First-run entry of a new context; never called directly.
void lwkt_cpu_trampoline();
#if defined(__x86_64__)
// Nonzero: the switch reloads MXCSR on every switch; zero: only when its control bits differ.
// Chosen from the CPU vendor before main (context.cc); switch_x86_64_sysv_elf.S says why.
__attribute__((visibility("hidden"))) extern unsigned char lwkt_switch_mxcsr_always;
#endif
}

namespace lwkt::internal {

#if defined(__x86_64__)
static_assert(offsetof(switch_frame, mxcsr) == LWKT_FRAME_FPCSR);
static_assert(offsetof(switch_frame, x87_cw) == LWKT_FRAME_FPCSR + 4);
static_assert(offsetof(switch_frame, r15) == LWKT_FRAME_R15);
static_assert(offsetof(switch_frame, r14) == LWKT_FRAME_R14);
static_assert(offsetof(switch_frame, r13) == LWKT_FRAME_R13);
static_assert(offsetof(switch_frame, r12) == LWKT_FRAME_R12);
static_assert(offsetof(switch_frame, rbx) == LWKT_FRAME_RBX);
static_assert(offsetof(switch_frame, rbp) == LWKT_FRAME_RBP);
static_assert(offsetof(switch_frame, rip) == LWKT_FRAME_RIP);
#else
static_assert(offsetof(switch_frame, d) == LWKT_FRAME_D8);
static_assert(offsetof(switch_frame, x) == LWKT_FRAME_X19);
static_assert(offsetof(switch_frame, x29) == LWKT_FRAME_X29);
static_assert(offsetof(switch_frame, x30) == LWKT_FRAME_X30);
static_assert(offsetof(switch_frame, fpcr) == LWKT_FRAME_FPCR);
#endif
static_assert(sizeof(switch_frame) == LWKT_FRAME_SIZE);

// Builds the first-run frame below `stack_top` (must be 16-byte aligned) so that resuming it
// enters lwkt_cpu_trampoline with `entry_arg` in the thread-pointer register (RBX / x19).
// Returns the value to store as the context's saved stack pointer. The FP control state
// starts from the ABI defaults (MXCSR 0x1f80, x87 CW 0x037f, FPCR 0).
inline void* make_initial_frame(void* stack_top, void* entry_arg) {
  auto top = reinterpret_cast<std::uintptr_t>(stack_top);
  auto* f = reinterpret_cast<switch_frame*>(top - sizeof(switch_frame));
  *f = switch_frame{};
#if defined(__x86_64__)
  // After `ret` pops rip, RSP = top (16-aligned); the trampoline's call then pushes the
  // return address, giving the callee the ABI's entry alignment.
  f->mxcsr = 0x1f80;
  f->x87_cw = 0x037f;
  f->rbx = reinterpret_cast<std::uint64_t>(entry_arg);
  f->rbp = 0;
  f->rip = reinterpret_cast<std::uint64_t>(&lwkt_cpu_trampoline);
#else
  f->x[0] = reinterpret_cast<std::uint64_t>(entry_arg);
  f->x29 = 0;
  f->x30 = reinterpret_cast<std::uint64_t>(&lwkt_cpu_trampoline);
  f->fpcr = 0;
#endif
  return f;
}

// For tests and benchmarks of the bare switch: a frame below `stack_top` (16-byte aligned)
// that lwkt_cpu_switch resumes directly in fn, bypassing the trampoline, with the ABI's
// function-entry stack alignment. fn must never return.
inline void* make_bare_frame(void* stack_top, void (*fn)()) {
#if defined(__x86_64__)
  // Entry by `ret` must look like a call: RSP = 8 mod 16 at fn's first instruction.
  void* sp = make_initial_frame(static_cast<char*>(stack_top) - 8, nullptr);
  static_cast<switch_frame*>(sp)->rip = reinterpret_cast<std::uint64_t>(fn);
#else
  void* sp = make_initial_frame(stack_top, nullptr);
  static_cast<switch_frame*>(sp)->x30 = reinterpret_cast<std::uint64_t>(fn);
#endif
  return sp;
}

}  // namespace lwkt::internal
