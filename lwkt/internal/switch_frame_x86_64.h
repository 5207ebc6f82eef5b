// switch_frame_x86_64.h
//
// The frame lwkt_cpu_switch() pushes on the stack of the thread it switches away from, for
// x86-64 System V. Shared by the assembly (under LWKT_BUILD_ASM) and C++, which checks every
// offset with static_assert (see context.h), so the two can never disagree.
//
//   saved td_sp ->  +------+--------+----------------------------------+
//                   | word | offset | contents                         |
//                   +------+--------+----------------------------------+
//                   |  0   |  0x00  | MXCSR (low 4 bytes)              |
//                   |      |  0x04  | x87 control word (2 bytes), pad  |
//                   |  1   |  0x08  | R15                              |
//                   |  2   |  0x10  | R14                              |
//                   |  3   |  0x18  | R13                              |
//                   |  4   |  0x20  | R12                              |
//                   |  5   |  0x28  | RBX  (first run: thread pointer) |
//                   |  6   |  0x30  | RBP  (first run: 0, ends unwind) |
//                   |  7   |  0x38  | return RIP (first run: trampoline)|
//                   +------+--------+----------------------------------+
//
// Invariant: a saved td_sp is 16-byte aligned (the caller's call left RSP = 8 mod 16 and the
// frame below the return address is 0x38 bytes).
#pragma once

#define LWKT_FRAME_FPCSR 0x00
#define LWKT_FRAME_R15 0x08
#define LWKT_FRAME_R14 0x10
#define LWKT_FRAME_R13 0x18
#define LWKT_FRAME_R12 0x20
#define LWKT_FRAME_RBX 0x28
#define LWKT_FRAME_RBP 0x30
#define LWKT_FRAME_RIP 0x38
#define LWKT_FRAME_SIZE 0x40

#ifndef LWKT_BUILD_ASM
#include <cstdint>
namespace lwkt::internal {
struct switch_frame {
  std::uint32_t mxcsr;
  std::uint16_t x87_cw;
  std::uint16_t pad;
  std::uint64_t r15, r14, r13, r12, rbx, rbp, rip;
};
}  // namespace lwkt::internal
#endif
