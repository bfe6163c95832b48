/* Boot path shared by the BSP (PVH entry) and the APs (from the real-mode
 * trampoline): 32-bit protected mode -> long mode with the static page
 * tables -> a kernel stack -> kernel_cpu_main(). Every instruction here is
 * emulated on this machine's KVM, so the path is straight-line and short. */
#include "kernel.h"

/* The PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY = 18): name "Xen", a 32-bit
 * physical entry address. 4-byte aligned as ELF notes are; QEMU aligns the
 * name by the segment's alignment, so keep that 4 (see linker.ld). */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long pvh_entry

    .section .text.entry, "ax"
    .code32

/* PVH: protected mode, paging off, flat CS/DS, %ebx = &hvm_start_info. */
    .globl pvh_entry
pvh_entry:
    cli
    cld
    movl %ebx, boot_start_info
    lgdt gdt_ptr
    ljmp $SEL_KCODE32, $1f
1:  xorl %esi, %esi             /* %esi = 0: the BSP */
    jmp enter_long_mode

/* From the trampoline: protected mode, our GDT, CS = SEL_KCODE32. */
    .globl ap_entry32
ap_entry32:
    movl $1, %esi               /* %esi = 1: an AP */

enter_long_mode:
    movl $SEL_KDATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %cr4, %eax
    orl $CR4_PAE, %eax
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $MSR_EFER, %ecx
    rdmsr
    orl $EFER_LME, %eax
    wrmsr
    movl %cr0, %eax
    orl $(CR0_PG | CR0_PE), %eax
    movl %eax, %cr0
    ljmp $SEL_KCODE64, $long_mode

    .code64
long_mode:
    xorl %eax, %eax
    movl %eax, %fs
    movl %eax, %gs
    xorl %edi, %edi             /* the BSP is CPU 0 */
    testl %esi, %esi
    jz 2f
    /* An AP finds its CPU index from its APIC id (table filled by the BSP
     * before it sent INIT/SIPI). */
    movl $(LAPIC_BASE + LAPIC_ID), %eax
    movl (%rax), %eax
    shrl $24, %eax
    movzbl apic_to_cpu(%rax), %edi
2:  leal 1(%rdi), %eax
    shll $TG_KSTACK_SHIFT, %eax
    leaq kstacks(%rax), %rsp
    call kernel_cpu_main        /* (cpu, is_ap); does not return */
3:  hlt
    jmp 3b

/* enter_user(cpu, rip, rsp): drop to CPL3 at rip with the given stack and
 * interrupts enabled (IOPL 0: port access goes through the TSS bitmap),
 * passing cpu in %rdi. */
    .text
    .globl enter_user
enter_user:
    pushq $SEL_UDATA
    pushq %rdx
    pushq $0x202
    pushq $SEL_UCODE
    pushq %rsi
    xorl %eax, %eax
    movl %eax, %ds
    movl %eax, %es
    iretq

/* Kernel data the boot path writes before any C runs (kept out of .bss:
 * the guest zeroes .bss itself, later, from user mode). */
    .data
    .balign 4
    .globl boot_start_info
boot_start_info:
    .long 0
    .globl apic_to_cpu
apic_to_cpu:
    .fill 256, 1, 0
