// switch_x86_64_sysv_elf.S: the lwkt context switch for x86-64, System V ABI, ELF, GNU as.
//
// Saved (callee-saved by the ABI): RBX, RBP, R12-R15, RSP (as td_sp), and the control parts
// of MXCSR and the x87 control word (the ABI makes their control bits callee-saved, so a
// thread that changes its rounding mode must not leak it into another thread).
// Not saved, deliberately: caller-saved registers (the compiler already spilled them around
// the call), the signal mask (lwkt threads share their worker's), FS (TLS belongs to the
// worker OS thread, not to the lwkt thread: see docs/design.md), the x87/SSE status flags.
// Scratch: ECX (caller-saved) compares the two threads' MXCSR; RAX carries arg at the end.
// Reads: lwkt_switch_mxcsr_always (a byte, constant after start-up: see context.cc).
// Frame layout: switch_frame_x86_64.h.
// Notes (.note.GNU-stack, .note.gnu.property) and the entry landing pad: asm_notes.h.
#include "lwkt/internal/asm_notes.h"
#if defined(__x86_64__)
#define LWKT_BUILD_ASM 1
#include "lwkt/internal/switch_frame_x86_64.h"

        .text

// void *lwkt_cpu_switch(void **save_sp, void *load_sp, void *arg)
//   rdi: save_sp   where the outgoing thread's stack pointer is stored
//   rsi: load_sp   the incoming thread's saved stack pointer
//   rdx: arg       handed to the incoming thread: returned in rax where it resumes
// Returns (when the outgoing thread is resumed later) the arg of whoever resumed it.
        .globl  lwkt_cpu_switch
        .hidden lwkt_cpu_switch
        .type   lwkt_cpu_switch,@function
        .p2align 4
lwkt_cpu_switch:
        .cfi_startproc
        LWKT_ENDBR
        leaq    -(LWKT_FRAME_SIZE - 8)(%rsp), %rsp      /* room below the return RIP */
        .cfi_adjust_cfa_offset LWKT_FRAME_SIZE - 8
        stmxcsr LWKT_FRAME_FPCSR(%rsp)                  /* save MXCSR */
        fnstcw  LWKT_FRAME_FPCSR+4(%rsp)                /* save x87 control word */
        movq    %r15, LWKT_FRAME_R15(%rsp)              /* save R15 */
        movq    %r14, LWKT_FRAME_R14(%rsp)              /* save R14 */
        movq    %r13, LWKT_FRAME_R13(%rsp)              /* save R13 */
        movq    %r12, LWKT_FRAME_R12(%rsp)              /* save R12 */
        movq    %rbx, LWKT_FRAME_RBX(%rsp)              /* save RBX */
        movq    %rbp, LWKT_FRAME_RBP(%rsp)              /* save RBP */
        movq    %rsp, (%rdi)                            /* *save_sp = frame */
        // How MXCSR is restored depends on the vendor (lwkt_switch_mxcsr_always, set once
        // at start-up from CPUID in context.cc), because each vendor has a different slow
        // instruction here (measured on both; docs/design.md "The raw switch"):
        //  - Intel: LDMXCSR of a value that differs from the current one costs about 150 ns
        //    (BM_Switch_Raw 156-165 ns with it, 8 ns without, Boost.Context 10-14 ns), and
        //    compared whole the value differs on nearly every switch: the status flags
        //    (5:0, sticky exception flags such as PE, set by any inexact FP operation)
        //    differ between threads. So it is reloaded only when the control bits (15:6:
        //    FZ, rounding, exception masks, DAZ) differ. The ABI makes only those callee-
        //    saved; the status flags are not preserved across calls, a switch being one.
        //  - AMD (Zen): LDMXCSR is cheap whatever the value, but reading back the word
        //    STMXCSR just stored stalls (its store does not forward to the load): the
        //    compare costs about 3.5 ns per round trip, 30% of the whole switch. So it is
        //    reloaded always, with no compare, as Boost.Context does.
        cmpb    $0, lwkt_switch_mxcsr_always(%rip)      /* AMD: reload without compare */
        jne     2f
        movl    LWKT_FRAME_FPCSR(%rsp), %ecx            /* ECX = our MXCSR ... */
        xorl    LWKT_FRAME_FPCSR(%rsi), %ecx            /* ... ^ the incoming thread's */
        movq    %rsi, %rsp                              /* switch stacks: RSP = load_sp */
        testl   $0xffc0, %ecx                           /* control bits differ? */
        jz      1f
        ldmxcsr LWKT_FRAME_FPCSR(%rsp)                  /* restore MXCSR */
        jmp     1f
2:      movq    %rsi, %rsp                              /* switch stacks: RSP = load_sp */
        ldmxcsr LWKT_FRAME_FPCSR(%rsp)                  /* restore MXCSR */
1:      fldcw   LWKT_FRAME_FPCSR+4(%rsp)                /* restore x87 control word */
        movq    LWKT_FRAME_R15(%rsp), %r15              /* restore R15 */
        movq    LWKT_FRAME_R14(%rsp), %r14              /* restore R14 */
        movq    LWKT_FRAME_R13(%rsp), %r13              /* restore R13 */
        movq    LWKT_FRAME_R12(%rsp), %r12              /* restore R12 */
        movq    LWKT_FRAME_RBX(%rsp), %rbx              /* restore RBX */
        movq    LWKT_FRAME_RBP(%rsp), %rbp              /* restore RBP */
        leaq    (LWKT_FRAME_SIZE - 8)(%rsp), %rsp       /* pop the frame, RSP -> RIP */
        .cfi_adjust_cfa_offset -(LWKT_FRAME_SIZE - 8)
        movq    %rdx, %rax                              /* return arg to the resumed side */
        ret                                             /* jump to the saved RIP */
        // Why ret and not `jmp *saved_rip` (Boost's choice): every lwkt switch is called
        // from one site (cpu_switch_to), so the return-stack predictor is right, and the
        // call/ret pairs stay balanced for the returns above it. A jmp leaves the call's
        // entry on the predictor's stack and every later ret up the chain mispredicts
        // (measured: lwkt::yield 20-22 ns with ret, 37-38 ns with jmp).
        .cfi_endproc
        .size   lwkt_cpu_switch,.-lwkt_cpu_switch

// lwkt_cpu_trampoline: the saved RIP of a thread that has never run.
// On entry (from lwkt_cpu_switch's ret): RAX = the thread that switched to us, RBX = this
// thread, RSP = top of the initial frame, which make_initial_frame() leaves 16-byte aligned,
// so the call below sees the ABI's (RSP + 8) % 16 == 0 at the callee's entry.
// lwkt_thread_bootstrap never returns; if it did, ud2 traps rather than run off the stack.
        .globl  lwkt_cpu_trampoline
        .hidden lwkt_cpu_trampoline
        .type   lwkt_cpu_trampoline,@function
        .p2align 4
lwkt_cpu_trampoline:
        .cfi_startproc
        .cfi_undefined rip                              /* unwinders stop here */
        LWKT_ENDBR
        movq    %rax, %rdi                              /* arg 1: previous thread */
        movq    %rbx, %rsi                              /* arg 2: this thread */
        call    lwkt_thread_bootstrap                   /* runs the thread; never returns */
        ud2                                             /* unreachable */
        .cfi_endproc
        .size   lwkt_cpu_trampoline,.-lwkt_cpu_trampoline
#endif
