// switch_frame_aarch64.h
//
// The frame lwkt_cpu_switch() stores on the stack of the thread it switches away from, for
// AArch64 AAPCS64. Shared by the assembly (under LWKT_BUILD_ASM) and C++, which checks every
// offset with static_assert (see context.h).
//
//   saved td_sp ->  +------+--------+-----------------------------------+
//                   | word | offset | contents                          |
//                   +------+--------+-----------------------------------+
//                   | 0-7  |  0x00  | d8 .. d15 (low 64 bits of v8-v15) |
//                   | 8-17 |  0x40  | x19 .. x28 (first run: x19 = td)  |
//                   |  18  |  0x90  | x29 frame pointer (first run: 0)  |
//                   |  19  |  0x98  | x30 link register (first run:     |
//                   |      |        |     the trampoline)               |
//                   |  20  |  0xa0  | FPCR                              |
//                   |  21  |  0xa8  | pad (keeps SP 16-byte aligned)    |
//                   +------+--------+-----------------------------------+
//
// Invariant: a saved td_sp is 16-byte aligned (SP is always 16-aligned on AArch64 and the
// frame is 0xb0 bytes).
#pragma once

#define LWKT_FRAME_D8 0x00
#define LWKT_FRAME_X19 0x40
#define LWKT_FRAME_X29 0x90
#define LWKT_FRAME_X30 0x98
#define LWKT_FRAME_FPCR 0xa0
#define LWKT_FRAME_SIZE 0xb0

#ifndef LWKT_BUILD_ASM
#include <cstdint>
namespace lwkt::internal {
struct switch_frame {
  std::uint64_t d[8];    // d8..d15
  std::uint64_t x[10];   // x19..x28
  std::uint64_t x29, x30, fpcr, pad;
};
}  // namespace lwkt::internal
#endif
