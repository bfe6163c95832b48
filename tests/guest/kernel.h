/* Constants shared by the test guest's assembly and C: the CPU limit, stack
 * sizes, segment selectors, interrupt vectors and the kernel's trap
 * numbers. Plain #defines so entry.S and friends can include it too. */
#ifndef TG_KERNEL_H
#define TG_KERNEL_H

#define TG_MAX_CPUS 32

/* The kernel only runs short paths (traps, interrupts), so its per-CPU
 * stacks are small; user stacks hold the workload's frames. */
#define TG_KSTACK_SHIFT 13
#define TG_KSTACK_SIZE (1 << TG_KSTACK_SHIFT)
#define TG_USTACK_SHIFT 14
#define TG_USTACK_SIZE (1 << TG_USTACK_SHIFT)

/* GDT layout: fixed descriptors, then one 16-byte TSS descriptor per CPU. */
#define SEL_KCODE32 0x08
#define SEL_KCODE64 0x10
#define SEL_KDATA 0x18
#define SEL_UDATA 0x23 /* index 4, RPL 3 */
#define SEL_UCODE 0x2b /* index 5, RPL 3 */
#define SEL_TSS0 0x30  /* CPU n uses SEL_TSS0 + 16 * n */
#define GDT_FIXED 6
#define GDT_BYTES ((GDT_FIXED + 2 * TG_MAX_CPUS) * 8)

/* TSS: the 104-byte 64-bit TSS, then an I/O permission bitmap covering
 * ports 0 .. TSS_IOMAP_PORTS-1 (ports above the TSS limit always fault),
 * then the 0xff byte the CPU needs after the bitmap. */
#define TSS_IOMAP_OFFSET 104
#define TSS_IOMAP_PORTS 0x518
#define TSS_IOMAP_BYTES (TSS_IOMAP_PORTS / 8)
#define TSS_BYTES (TSS_IOMAP_OFFSET + TSS_IOMAP_BYTES + 1)
#define TSS_STRIDE 288 /* TSS_BYTES rounded up to 32 */

/* Interrupt vectors. */
#define VEC_TRAP 3 /* #BP: int3 is the user-mode trap */
#define VEC_TIMER 0x40
#define VEC_SPURIOUS 0xff

/* Trap numbers: the user-mode trap is int3 (vector VEC_TRAP, see isr.S),
 * with the number in %rax and arguments in %rdi, %rsi. */
#define TRAP_SLEEP 0 /* sti; hlt until the next interrupt */
#define TRAP_TIMER 1 /* (initial count): start this CPU's periodic LAPIC timer */
#define TRAP_IPI 2   /* (apic id, ICR low word): send an IPI */
#define TRAP_CPUID 3 /* (leaf, u32 out[4]): CPUID as the hypervisor answers it */
#define TRAP_HALT 4  /* cli; hlt forever */

/* Local APIC (xAPIC, MMIO). */
#define LAPIC_BASE 0xfee00000
#define LAPIC_ID 0x020
#define LAPIC_TPR 0x080
#define LAPIC_EOI 0x0b0
#define LAPIC_SVR 0x0f0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_LVT_LINT1 0x360
#define LAPIC_LVT_ERROR 0x370
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_DIV 0x3e0

/* Where the AP start-up code is copied: below 1 MiB (real mode), page
 * aligned (SIPI vector = page number), clear of the VMM's boot data at
 * 0x1000-0x3fff. */
#define TRAMPOLINE_PA 0x8000

/* Control registers and MSRs for the switch to long mode. */
#define CR0_PE 0x00000001
#define CR0_PG 0x80000000
#define CR4_PAE 0x00000020
#define MSR_EFER 0xc0000080
#define EFER_LME 0x00000100

#endif
