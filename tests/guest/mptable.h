/* Intel MP specification 1.4 table: where firmware (and tern-vmm) list the
 * processors. */
#ifndef TG_MPTABLE_H
#define TG_MPTABLE_H

#include <stdint.h>

/* Finds the floating pointer ("_MP_" on a 16-byte boundary in
 * 0xf0000-0xfffff) and its configuration table, both checksummed, and
 * stores the APIC ids of up to `max` enabled processors, the BSP first.
 * Returns how many it stored: 0 when there is no (valid) table. */
unsigned mptable_cpus(uint8_t *apic_ids, unsigned max);

#endif
