/* What the kernel side (CPL0) of the guest offers: its entry points from
 * assembly, the per-CPU set-up and the trap dispatcher. Everything here
 * runs emulated on this machine's KVM, so each function is short and
 * loop-free where it can be. */
#ifndef TG_KERNEL_API_H
#define TG_KERNEL_API_H

#include <stdint.h>

#include "kernel.h"

/* Set by pvh_entry: physical address of struct hvm_start_info. */
extern uint32_t boot_start_info;
/* APIC id -> CPU index, filled by the BSP before it starts the APs. */
extern uint8_t apic_to_cpu[256];
/* Stacks: kstacks[cpu] ends at the CPU's RSP0; ustacks[cpu] is its CPL3
 * stack. */
extern uint8_t kstacks[TG_MAX_CPUS][TG_KSTACK_SIZE];
extern uint8_t ustacks[TG_MAX_CPUS][TG_USTACK_SIZE];

/* Called once per CPU from entry.S on its kernel stack: IDT, TSS, LAPIC,
 * then CPL3 at user_bsp_main / user_ap_main. */
__attribute__((noreturn)) void kernel_cpu_main(unsigned cpu, unsigned is_ap);

/* entry.S: iretq to CPL3 at rip with stack rsp, cpu in %rdi. */
__attribute__((noreturn)) void enter_user(unsigned cpu, void (*rip)(unsigned), uintptr_t rsp);

/* idt.c */
void idt_init(void);
void idt_load(void);
__attribute__((noreturn)) void exception_report(uint64_t vector, uint64_t error, uint64_t rip,
                                                uint64_t frame);

/* lapic.c */
void lapic_enable(void);
void lapic_timer_start(uint32_t initial_count);
long lapic_send_ipi(uint32_t apic_id, uint32_t icr_low);

/* trap.c: the int3 trap with nr != TRAP_SLEEP (isr.S handles that one). */
long trap_dispatch(long nr, long a, long b);

/* The CPL3 entry points (main.c). */
__attribute__((noreturn)) void user_bsp_main(unsigned cpu);
__attribute__((noreturn)) void user_ap_main(unsigned cpu);

#endif
