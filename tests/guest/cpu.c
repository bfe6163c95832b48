/* Per-CPU kernel set-up: the CPU's TSS (descriptor, RSP0), IDT, LAPIC, then
 * the drop to CPL3. The rest of the guest, including starting the APs and
 * programming the timer, is driven from user mode through traps. */
#include <stdint.h>

#include "kernel_api.h"
#include "x86.h"

extern uint64_t gdt[];
extern uint8_t tss_area[];

uint8_t kstacks[TG_MAX_CPUS][TG_KSTACK_SIZE] __attribute__((aligned(4096), section(".stacks")));
uint8_t ustacks[TG_MAX_CPUS][TG_USTACK_SIZE] __attribute__((aligned(4096), section(".stacks")));

static void tss_install(unsigned cpu)
{
    uint8_t *tss = tss_area + cpu * TSS_STRIDE;
    uint64_t base = (uint64_t)(uintptr_t)tss;
    uint64_t limit = TSS_BYTES - 1;
    uint64_t rsp0 = (uint64_t)(uintptr_t)kstacks[cpu] + TG_KSTACK_SIZE;

    /* RSP0 sits at offset 4, unaligned: store it in two halves. */
    *(volatile uint32_t *)(tss + 4) = (uint32_t)rsp0;
    *(volatile uint32_t *)(tss + 8) = (uint32_t)(rsp0 >> 32);

    /* 64-bit available TSS (type 9), present. */
    gdt[GDT_FIXED + 2 * cpu] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ull << 40) |
                               ((limit >> 16) << 48) | ((base >> 24 & 0xff) << 56);
    gdt[GDT_FIXED + 2 * cpu + 1] = base >> 32;
    __asm__ volatile("ltr %w0" : : "r"(SEL_TSS0 + 16 * cpu) : "memory");
}

/* Mask both 8259 PICs: firmware (SeaBIOS under QEMU) may have left them
 * routing IRQs to vectors that are exceptions for us. */
static void pic_mask(void)
{
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
}

void kernel_cpu_main(unsigned cpu, unsigned is_ap)
{
    if (!is_ap) {
        pic_mask();
        idt_init();
    }
    idt_load();
    tss_install(cpu);
    lapic_enable();
    enter_user(cpu, is_ap ? user_ap_main : user_bsp_main,
               (uintptr_t)ustacks[cpu] + TG_USTACK_SIZE - 8); /* as if called */
}
