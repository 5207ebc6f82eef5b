// asm_notes.h: the ELF notes of the switch_*.S objects (assembler only; included by each .S
// file before its architecture #if, so the other architecture's file, which assembles to an
// empty object, carries the same notes and cannot take anything away from a program that
// happens to link it).
//
//   .note.GNU-stack      no executable stack.
//   .note.gnu.property   the control-flow protection the code is compatible with, when the
//                        compiler is asked for it, as glibc and libgcc mark their assembly.
//                        The linker ANDs every input's FEATURE_1_AND property, so an object
//                        without the note (as these were) silently drops IBT / BTI from a
//                        whole program built with -fcf-protection / -mbranch-protection.
//   LWKT_ENDBR / LWKT_BTI_C   the landing pad at each global function entry (or nothing).
//
// x86-64 (-fcf-protection, __CET__):
//   IBT (bit 0): claimed with __CET__ bit 0, with endbr64 at every global entry. Both switch
//     functions are reached only by a direct call or by `ret`, which IBT does not track, so
//     the markers are belt and braces.
//   SHSTK (bit 1): never claimed, deliberately. lwkt_cpu_switch changes RSP to another
//     thread's stack and returns with `ret` through that thread's saved RIP; with a shadow
//     stack that `ret` is checked against this OS thread's shadow stack, whose top is the
//     outgoing thread's return address, and faults (so would entering a new thread through
//     the trampoline). Supporting it needs a shadow stack per lwkt thread and
//     saveprevssp/rstorssp in the switch. Without the bit the linker turns SHSTK off for a
//     program that links the switch, which is the truth: it cannot run with one.
// AArch64 (-mbranch-protection, __ARM_FEATURE_BTI_DEFAULT / __ARM_FEATURE_PAC_DEFAULT):
//   BTI (bit 0): claimed with __ARM_FEATURE_BTI_DEFAULT, with `bti c` (hint #34, a NOP
//     before Armv8.5) at every global entry. Both functions are reached only by `bl` or by
//     `ret`, which BTI does not check, so the markers are belt and braces.
//   PAC (bit 1): never claimed, deliberately. The switch stores x30 in the outgoing
//     thread's frame unsigned and returns through the incoming thread's saved x30, and a new
//     thread's first x30 (the trampoline, from make_initial_frame) is unsigned too. Claiming
//     it would need paciasp/autiasp in the switch with each side's SP, and the first-run
//     frame signed for the new thread's SP. (Callers' own pac-ret frames are unaffected:
//     each thread's callers sign and authenticate on their own stack.)
#ifndef LWKT_INTERNAL_ASM_NOTES_H_
#define LWKT_INTERNAL_ASM_NOTES_H_

// One NT_GNU_PROPERTY_TYPE_0 note with a single 4-byte property: namesz 4 ("GNU"), descsz 16
// (the property padded to 8), type 5; then pr_type, pr_datasz 4, the feature bits, padding.
#define LWKT_GNU_PROPERTY_NOTE(pr_type, bits) \
        .pushsection .note.gnu.property, "a"; .p2align 3; \
        .long 4; .long 16; .long 5; .asciz "GNU"; \
        .long pr_type; .long 4; .long bits; .p2align 3; \
        .popsection

#if defined(__x86_64__) && defined(__CET__) && (__CET__ & 1)
#define LWKT_ENDBR endbr64
// GNU_PROPERTY_X86_FEATURE_1_AND: IBT (0x1); not SHSTK (0x2), see above.
LWKT_GNU_PROPERTY_NOTE(0xc0000002, 0x1)
#else
#define LWKT_ENDBR
#endif

#if defined(__aarch64__) && defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
#define LWKT_BTI_C hint #34
// GNU_PROPERTY_AARCH64_FEATURE_1_AND: BTI (0x1); not PAC (0x2), see above.
LWKT_GNU_PROPERTY_NOTE(0xc0000000, 0x1)
#else
#define LWKT_BTI_C
#endif

        .pushsection .note.GNU-stack, "", %progbits  /* no executable stack */
        .popsection

#endif  // LWKT_INTERNAL_ASM_NOTES_H_
