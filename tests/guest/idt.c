/* Interrupt descriptor table: the exceptions, the user trap (#BP), the
 * LAPIC timer and the spurious vector. Everything else stays not-present,
 * which raises #NP (reported like any exception). */
#include <stdint.h>

#include "console.h"
#include "kernel_api.h"
#include "lib.h"
#include "tern_guest.h"
#include "x86.h"

struct idt_gate {
    uint16_t off_lo;
    uint16_t sel;
    uint8_t ist;
    uint8_t type; /* P, DPL, 0xe = 64-bit interrupt gate */
    uint16_t off_mid;
    uint32_t off_hi;
    uint32_t zero;
} __attribute__((packed));

/* In .data, not .bss: it must read as all-absent before any code runs. */
static struct idt_gate idt[256] __attribute__((aligned(16), section(".data")));

extern const uint64_t exception_entries[32];
void isr_timer(void);
void isr_spurious(void);
void trap_entry(void);

static void set_gate(unsigned vec, uint64_t handler, unsigned dpl)
{
    idt[vec] = (struct idt_gate){
        .off_lo = (uint16_t)handler,
        .sel = SEL_KCODE64,
        .type = (uint8_t)(0x8e | dpl << 5),
        .off_mid = (uint16_t)(handler >> 16),
        .off_hi = (uint32_t)(handler >> 32),
    };
}

void idt_init(void)
{
    for (unsigned v = 0; v < 32; v++)
        set_gate(v, exception_entries[v], 0);
    set_gate(VEC_TRAP, (uintptr_t)trap_entry, 3); /* replaces #BP's report */
    set_gate(VEC_TIMER, (uintptr_t)isr_timer, 0);
    set_gate(VEC_SPURIOUS, (uintptr_t)isr_spurious, 0);
}

void idt_load(void)
{
    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) ptr = {sizeof(idt) - 1, (uintptr_t)idt};
    __asm__ volatile("lidt %0" : : "m"(ptr));
}

/* `frame` is the stack pointer at the fault: it lies in the faulting CPU's
 * kernel stack (or, inside a trap, its user stack), which names the CPU
 * without any per-CPU register. */
static int stack_cpu(uint64_t sp, uintptr_t base, uint64_t size, unsigned *cpu)
{
    if (sp <= base || sp > base + size * TG_MAX_CPUS)
        return 0;
    *cpu = (unsigned)((sp - base - 1) / size);
    return 1;
}

void exception_report(uint64_t vector, uint64_t error, uint64_t rip, uint64_t frame)
{
    static uint32_t reporting __attribute__((section(".data")));
    unsigned cpu = 0;
    char line[160];

    /* One report only: a second CPU faulting at the same time just stops. */
    if (__atomic_exchange_n(&reporting, 1, __ATOMIC_ACQUIRE))
        for (;;)
            __asm__ volatile("cli; hlt");

    if (!stack_cpu(frame, (uintptr_t)kstacks, TG_KSTACK_SIZE, &cpu))
        stack_cpu(frame, (uintptr_t)ustacks, TG_USTACK_SIZE, &cpu);
    tg_snprintf(line, sizeof(line), "\n" TG_FMT_EXCEPTION "\n", vector, error, rip, cpu);
    console_write_direct(line);
    outb(TG_PORT_DEBUG_EXIT, TG_EXIT_EXCEPTION);
    for (;;)
        __asm__ volatile("cli; hlt");
}
