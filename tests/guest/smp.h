/* Starting the APs, driven by the BSP from user mode. */
#ifndef TG_SMP_H
#define TG_SMP_H

#include <stdint.h>

/* Copies the trampoline below 1 MiB, then sends every AP (apic_ids[1..n-1];
 * apic_ids[0] is the BSP) INIT, SIPI, SIPI, and waits up to 1 s for all to
 * call smp_checkin(). Returns -1 and the first missing CPU in *missing if
 * one does not. */
int smp_start_aps(const uint8_t *apic_ids, unsigned n, uint64_t tsc_khz, unsigned *missing);

/* An AP reports it runs in user mode. */
void smp_checkin(unsigned cpu);

#endif
