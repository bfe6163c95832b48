/* TSC and LAPIC timer frequencies. */
#include "clock.h"

#include "../../node-vmm/guest_abi.h"
#include "usys.h"
#include "x86.h"

#define PIT_HZ 1193182u
#define PIT_COUNT 11932u /* ~10 ms */

void clock_cpuid(uint32_t leaf, uint32_t r[4])
{
    usys(TRAP_CPUID, leaf, (long)(uintptr_t)r);
}

/* A hypervisor range whose top leaf reaches the timing leaf. (Without a
 * hypervisor leaf, some CPUs answer 0x40000000 with the highest basic
 * leaf's data: the range check keeps that from looking like one.) */
static int timing_leaf(uint32_t r[4])
{
    clock_cpuid(TERN_CPUID_HV_BASE, r);
    if (r[0] < TERN_CPUID_TIMING || r[0] > TERN_CPUID_HV_BASE + 0xff)
        return 0;
    clock_cpuid(TERN_CPUID_TIMING, r);
    return 1;
}

/* Channel 2 in mode 0 counts PIT_COUNT ticks, then raises OUT2 (port 0x61
 * bit 5); the gate (bit 0) starts it, the speaker (bit 1) stays off. */
static uint64_t pit_calibrate(void)
{
    uint8_t gate = inb(0x61);
    outb(0x61, (uint8_t)((gate & ~0x02) | 0x01));
    outb(0x43, 0xb0); /* channel 2, lobyte/hibyte, mode 0, binary */
    outb(0x42, PIT_COUNT & 0xff);
    outb(0x42, PIT_COUNT >> 8);
    uint64_t t0 = rdtsc();
    for (uint32_t spins = 0; !(inb(0x61) & 0x20); spins++)
        if (spins > 100000000u)
            return 0;
    uint64_t t1 = rdtsc();
    outb(0x61, gate);
    return (t1 - t0) * PIT_HZ / ((uint64_t)PIT_COUNT * 1000);
}

int clock_detect(const struct tg_params *p, struct tg_clock *c)
{
    uint32_t r[4] = {0, 0, 0, 0};
    int have_leaf = timing_leaf(r);

    c->apic_khz = have_leaf && r[1] ? r[1] : TERN_APIC_BUS_KHZ;
    if (have_leaf && r[0]) {
        c->tsc_khz = r[0];
        c->tsc_source = "cpuid";
    } else if (p->tsc_khz) {
        c->tsc_khz = p->tsc_khz;
        c->tsc_source = "cmdline";
    } else {
        c->tsc_khz = pit_calibrate();
        c->tsc_source = "pit";
    }
    return c->tsc_khz ? 0 : -1;
}
