/* Interrupt and trap entry points. The timer and the sleep trap are the
 * only ones on a hot path, and kernel instructions are emulated here, so
 * they are a handful of instructions each. */
#include "kernel.h"

    .text

/* Exceptions 0-31: push a uniform (vector, error code) pair and report. */
    .macro exception vec
    .balign 16
exception_\vec:
    .if (\vec == 8) || (\vec == 10) || (\vec == 11) || (\vec == 12) || (\vec == 13) || (\vec == 14) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
    .else
    pushq $0                    /* no error code from the CPU: supply one */
    .endif
    pushq $\vec
    jmp exception_common
    .endm

    .altmacro
    .set vec, 0
    .rept 32
    exception %vec
    .set vec, vec + 1
    .endr

    .macro exception_addr vec
    .quad exception_\vec
    .endm

    .section .rodata
    .balign 8
    .globl exception_entries
exception_entries:
    .set vec, 0
    .rept 32
    exception_addr %vec
    .set vec, vec + 1
    .endr
    .noaltmacro

    .text
/* Stack: vector, error, then the CPU's frame (rip, cs, rflags, rsp, ss). */
exception_common:
    movq 0(%rsp), %rdi
    movq 8(%rsp), %rsi
    movq 16(%rsp), %rdx
    movq %rsp, %rcx
    andq $-16, %rsp
    call exception_report       /* does not return */
1:  cli
    hlt
    jmp 1b

/* LAPIC timer: acknowledge and return. Its only purpose is to end a sleep
 * trap's hlt (and to keep interrupt delivery exercised). */
    .globl isr_timer
isr_timer:
    pushq %rax
    movl $(LAPIC_BASE + LAPIC_EOI), %eax
    movl $0, (%rax)
    popq %rax
    iretq

    .globl isr_spurious
isr_spurious:
    iretq                       /* spurious vectors take no EOI */

/* The user trap, int3 from CPL3 (IDT vector 3, DPL 3): %rax = trap number,
 * %rdi, %rsi = arguments, result in %rax; every other register is
 * preserved. Why int3: on this machine's KVM (kvm_pvm), int $0x80 from
 * CPL3 raises #UD, and after syscall sti and hlt raise #GP as if still at
 * CPL3; #BP is delivered through the IDT like any other exception.
 *
 * TRAP_SLEEP enables interrupts and halts: sti's one-instruction shadow
 * means an interrupt can only arrive once hlt is executing, so no wake-up
 * is lost; its handler runs, returns to after hlt, and we return. */
    .globl trap_entry
trap_entry:
    testq %rax, %rax            /* TRAP_SLEEP == 0 */
    jnz 1f
    sti
    hlt
    iretq
1:  pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    subq $8, %rsp               /* 16-byte alignment for the call */
    movq %rsi, %rdx
    movq %rdi, %rsi
    movq %rax, %rdi
    call trap_dispatch          /* (nr, a, b) */
    addq $8, %rsp
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    iretq
