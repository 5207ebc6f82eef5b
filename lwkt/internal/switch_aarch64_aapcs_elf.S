// switch_aarch64_aapcs_elf.S: the lwkt context switch for AArch64, AAPCS64, ELF, GNU as.
//
// Saved (callee-saved by AAPCS64): x19-x28, x29 (FP), x30 (LR), SP (as td_sp), the low 64
// bits of v8-v15 (d8-d15), and FPCR (rounding mode and flush-to-zero are thread state).
// Not saved, deliberately: caller-saved registers (x0-x18, v0-v7, v16-v31, spilled by the
// compiler around the call), FPSR status flags, the signal mask (shared with the worker),
// TPIDR_EL0 (TLS belongs to the worker OS thread: see docs/design.md), x18 (platform).
// Scratch: x9 (SP, then the incoming FPCR) and x10 (the outgoing FPCR), both temporaries.
// Frame layout: switch_frame_aarch64.h.
// Notes (.note.GNU-stack, .note.gnu.property) and the entry landing pad: asm_notes.h.
#include "lwkt/internal/asm_notes.h"
#if defined(__aarch64__)
#define LWKT_BUILD_ASM 1
#include "lwkt/internal/switch_frame_aarch64.h"

        .text

// void *lwkt_cpu_switch(void **save_sp, void *load_sp, void *arg)
//   x0: save_sp   where the outgoing thread's stack pointer is stored
//   x1: load_sp   the incoming thread's saved stack pointer
//   x2: arg       handed to the incoming thread: returned in x0 where it resumes
// Returns (when the outgoing thread is resumed later) the arg of whoever resumed it.
        .globl  lwkt_cpu_switch
        .hidden lwkt_cpu_switch
        .type   lwkt_cpu_switch,%function
        .p2align 4
lwkt_cpu_switch:
        .cfi_startproc
        LWKT_BTI_C
        sub     sp, sp, #LWKT_FRAME_SIZE                /* allocate the frame */
        .cfi_adjust_cfa_offset LWKT_FRAME_SIZE          /* CFA = SP + frame: caller's SP */
        stp     d8,  d9,  [sp, #LWKT_FRAME_D8 + 0x00]   /* save d8, d9 */
        stp     d10, d11, [sp, #LWKT_FRAME_D8 + 0x10]   /* save d10, d11 */
        stp     d12, d13, [sp, #LWKT_FRAME_D8 + 0x20]   /* save d12, d13 */
        stp     d14, d15, [sp, #LWKT_FRAME_D8 + 0x30]   /* save d14, d15 */
        .cfi_rel_offset d8,  LWKT_FRAME_D8 + 0x00
        .cfi_rel_offset d9,  LWKT_FRAME_D8 + 0x08
        .cfi_rel_offset d10, LWKT_FRAME_D8 + 0x10
        .cfi_rel_offset d11, LWKT_FRAME_D8 + 0x18
        .cfi_rel_offset d12, LWKT_FRAME_D8 + 0x20
        .cfi_rel_offset d13, LWKT_FRAME_D8 + 0x28
        .cfi_rel_offset d14, LWKT_FRAME_D8 + 0x30
        .cfi_rel_offset d15, LWKT_FRAME_D8 + 0x38
        stp     x19, x20, [sp, #LWKT_FRAME_X19 + 0x00]  /* save x19, x20 */
        stp     x21, x22, [sp, #LWKT_FRAME_X19 + 0x10]  /* save x21, x22 */
        stp     x23, x24, [sp, #LWKT_FRAME_X19 + 0x20]  /* save x23, x24 */
        stp     x25, x26, [sp, #LWKT_FRAME_X19 + 0x30]  /* save x25, x26 */
        stp     x27, x28, [sp, #LWKT_FRAME_X19 + 0x40]  /* save x27, x28 */
        .cfi_rel_offset x19, LWKT_FRAME_X19 + 0x00
        .cfi_rel_offset x20, LWKT_FRAME_X19 + 0x08
        .cfi_rel_offset x21, LWKT_FRAME_X19 + 0x10
        .cfi_rel_offset x22, LWKT_FRAME_X19 + 0x18
        .cfi_rel_offset x23, LWKT_FRAME_X19 + 0x20
        .cfi_rel_offset x24, LWKT_FRAME_X19 + 0x28
        .cfi_rel_offset x25, LWKT_FRAME_X19 + 0x30
        .cfi_rel_offset x26, LWKT_FRAME_X19 + 0x38
        .cfi_rel_offset x27, LWKT_FRAME_X19 + 0x40
        .cfi_rel_offset x28, LWKT_FRAME_X19 + 0x48
        stp     x29, x30, [sp, #LWKT_FRAME_X29]         /* save FP and LR (resume address) */
        .cfi_rel_offset x29, LWKT_FRAME_X29
        .cfi_rel_offset x30, LWKT_FRAME_X30
        mrs     x10, fpcr                               /* read FPCR (kept in x10) */
        str     x10, [sp, #LWKT_FRAME_FPCR]             /* save FPCR */
        mov     x9, sp                                  /* SP cannot be stored directly */
        str     x9, [x0]                                /* *save_sp = frame */

        // From here SP is the incoming thread's frame, of the same layout: the rules above
        // now describe the incoming thread's caller, which is where the `ret` below goes.
        mov     sp, x1                                  /* switch stacks: SP = load_sp */
        ldp     d8,  d9,  [sp, #LWKT_FRAME_D8 + 0x00]   /* restore d8, d9 */
        ldp     d10, d11, [sp, #LWKT_FRAME_D8 + 0x10]   /* restore d10, d11 */
        ldp     d12, d13, [sp, #LWKT_FRAME_D8 + 0x20]   /* restore d12, d13 */
        ldp     d14, d15, [sp, #LWKT_FRAME_D8 + 0x30]   /* restore d14, d15 */
        ldp     x19, x20, [sp, #LWKT_FRAME_X19 + 0x00]  /* restore x19, x20 */
        ldp     x21, x22, [sp, #LWKT_FRAME_X19 + 0x10]  /* restore x21, x22 */
        ldp     x23, x24, [sp, #LWKT_FRAME_X19 + 0x20]  /* restore x23, x24 */
        ldp     x25, x26, [sp, #LWKT_FRAME_X19 + 0x30]  /* restore x25, x26 */
        ldp     x27, x28, [sp, #LWKT_FRAME_X19 + 0x40]  /* restore x27, x28 */
        ldp     x29, x30, [sp, #LWKT_FRAME_X29]         /* restore FP and LR */
        ldr     x9, [sp, #LWKT_FRAME_FPCR]              /* load saved FPCR */
        // Written only when it differs: an FPCR write may synchronise the FP pipeline, and
        // threads nearly always share one mode (on x86-64 the same for MXCSR measured
        // about 150 ns a switch on Intel hosts; see switch_x86_64_sysv_elf.S).
        cmp     x9, x10
        b.eq    1f
        msr     fpcr, x9                                /* restore FPCR */
1:
        add     sp, sp, #LWKT_FRAME_SIZE                /* pop the frame */
        .cfi_adjust_cfa_offset -LWKT_FRAME_SIZE         /* CFA = SP again */
        .cfi_restore d8
        .cfi_restore d9
        .cfi_restore d10
        .cfi_restore d11
        .cfi_restore d12
        .cfi_restore d13
        .cfi_restore d14
        .cfi_restore d15
        .cfi_restore x19
        .cfi_restore x20
        .cfi_restore x21
        .cfi_restore x22
        .cfi_restore x23
        .cfi_restore x24
        .cfi_restore x25
        .cfi_restore x26
        .cfi_restore x27
        .cfi_restore x28
        .cfi_restore x29
        .cfi_restore x30
        mov     x0, x2                                  /* return arg to the resumed side */
        ret                                             /* branch to x30 */
        .cfi_endproc
        .size   lwkt_cpu_switch,.-lwkt_cpu_switch

// lwkt_cpu_trampoline: the saved x30 of a thread that has never run.
// On entry (from lwkt_cpu_switch's ret): x0 = the thread that switched to us, x19 = this
// thread, SP = top of the initial frame (16-byte aligned, as AAPCS64 requires at all times).
// lwkt_thread_bootstrap never returns; if it did, brk traps rather than run off the stack.
        .globl  lwkt_cpu_trampoline
        .hidden lwkt_cpu_trampoline
        .type   lwkt_cpu_trampoline,%function
        .p2align 4
lwkt_cpu_trampoline:
        .cfi_startproc
        .cfi_undefined x30                              /* unwinders stop here */
        LWKT_BTI_C
        mov     x29, #0                                 /* terminate the frame-pointer chain */
        mov     x1, x19                                 /* arg 2: this thread (x0 = prev) */
        bl      lwkt_thread_bootstrap                   /* runs the thread; never returns */
        brk     #0x1                                    /* unreachable */
        .cfi_endproc
        .size   lwkt_cpu_trampoline,.-lwkt_cpu_trampoline
#endif
