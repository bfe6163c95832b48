/* Static identity map of 0 .. 16 GiB with 2 MiB pages, emitted as data so
 * the (emulated) kernel spends no instructions building it. Every entry is
 * user-accessible: the workload runs at CPL3 and touches all of memory
 * (its own pages, boot data, the MP table, the AP trampoline). The 3-4 GiB
 * MMIO hole (LAPIC, IOAPIC, devices) is mapped uncached. */
#define PTE_P 0x001
#define PTE_RW 0x002
#define PTE_US 0x004
#define PTE_PWT 0x008
#define PTE_PCD 0x010
#define PTE_PS 0x080
#define PT_FLAGS (PTE_P | PTE_RW | PTE_US)
#define MAPPED_GIB 16

    .section .data.pagetables, "aw"
    .balign 4096
    .globl pml4
pml4:
    .quad pdpt + PT_FLAGS
    .fill 511, 8, 0

pdpt:
    .irp g, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    .quad pd + \g * 4096 + PT_FLAGS
    .endr
    .fill 512 - MAPPED_GIB, 8, 0

pd:
    .set addr, 0
    .rept MAPPED_GIB * 512
    /* GAS comparisons yield -1 for true, so "& flags" selects them. */
    .quad addr | PT_FLAGS | PTE_PS | (((addr >> 30) == 3) & (PTE_PCD | PTE_PWT))
    .set addr, addr + 0x200000
    .endr
