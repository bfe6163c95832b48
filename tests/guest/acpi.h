/* ACPI MADT: the processor list of firmware that has ACPI (QEMU's does;
 * its MP table may list only the CPUs its BIOS saw start). */
#ifndef TG_ACPI_H
#define TG_ACPI_H

#include <stdint.h>

/* Finds the RSDP (at rsdp_pa if non-zero, else "RSD PTR " on a 16-byte
 * boundary in 0xe0000-0xfffff), its RSDT/XSDT and the MADT ("APIC"), all
 * checksummed, and stores the APIC ids of up to `max` enabled processors
 * with ids below 256, bsp_id first if listed. Returns how many it stored:
 * 0 when there is no (valid) MADT. */
unsigned acpi_madt_cpus(uint64_t rsdp_pa, uint8_t bsp_id, uint8_t *apic_ids, unsigned max);

#endif
