/* Time sources: the TSC (all pacing uses rdtsc, which CPL3 may run) and
 * the LAPIC timer's input clock. */
#ifndef TG_CLOCK_H
#define TG_CLOCK_H

#include <stdint.h>

#include "cmdline.h"

struct tg_clock {
    uint64_t tsc_khz;
    uint64_t apic_khz;
    const char *tsc_source; /* "cpuid", "cmdline" or "pit" */
};

/* TSC: CPUID 0x40000010 EAX when the hypervisor offers that leaf, else
 * the tsc_khz= parameter, else ~10 ms against PIT channel 2. LAPIC timer:
 * CPUID 0x40000010 EBX, else 1 GHz (KVM's and QEMU's APIC bus).
 * Returns -1 if the PIT never answers. */
int clock_detect(const struct tg_params *p, struct tg_clock *c);

/* Hypervisor-answered CPUID (through the kernel trap). */
void clock_cpuid(uint32_t leaf, uint32_t r[4]);

#endif
