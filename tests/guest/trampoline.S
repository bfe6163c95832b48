/* AP start-up code. Copied to TRAMPOLINE_PA by the BSP; a SIPI with vector
 * TRAMPOLINE_PA >> 12 starts an AP here in real mode at CS:IP = 0x0800:0.
 * It only loads the kernel GDT and enters protected mode; the rest of the
 * way (long mode, stack) is the BSP's path in entry.S. Addresses inside are
 * offsets from trampoline_start, since it runs at a different address than
 * it is linked at. */
#include "kernel.h"

    .section .rodata.trampoline, "a"
    .code16
    .globl trampoline_start, trampoline_end
trampoline_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl tramp_gdt_ptr - trampoline_start
    movl %cr0, %eax
    orl $CR0_PE, %eax
    movl %eax, %cr0
    ljmpl $SEL_KCODE32, $ap_entry32
    .balign 4
tramp_gdt_ptr:
    .word GDT_BYTES - 1
    .long gdt
trampoline_end:
    .code64
