/* What tern-vmm offers a guest beyond standard PC hardware: port numbers and
 * CPUID leaves. Shared, as plain constants, by the VMM and the test guest
 * (tests/guest), so both sides agree by construction.  Keep it free of any
 * host-only include: the test guest is built freestanding. */
#ifndef TERN_NODE_VMM_GUEST_ABI_H
#define TERN_NODE_VMM_GUEST_ABI_H

/* 8250 UART, COM1. */
#define TERN_COM1_PORT 0x3f8
#define TERN_COM1_IRQ 4

/* Debug exit: a 1-byte OUT ends the VM; tern-vmm exits with that byte as its
 * status (0 = success). Also at 0x501 in QEMU's isa-debug-exit, where the
 * status becomes (byte << 1) | 1. */
#define TERN_PORT_DEBUG_EXIT 0x501

/* Heartbeat: a 4-byte OUT of the guest's heartbeat sequence number (1, 2, 3,
 * ...). The VMM timestamps each write with CLOCK_REALTIME on arrival. */
#define TERN_PORT_HEARTBEAT 0x510

/* Hypervisor CPUID leaves. 0x40000000 keeps KVM's signature (so Linux
 * finds kvmclock) and reports 0x40000010 as its highest leaf. */
#define TERN_CPUID_HV_BASE 0x40000000u
/* Timing leaf, as VMware and others define it: EAX = TSC frequency in kHz,
 * EBX = local APIC timer (bus) frequency in kHz. */
#define TERN_CPUID_TIMING 0x40000010u

/* KVM's in-kernel LAPIC timer counts at 1 GHz before the divider. */
#define TERN_APIC_BUS_KHZ 1000000u

/* Guest physical layout. RAM is [0, min(mem, 3 GiB)) and, for larger
 * guests, the rest from 4 GiB up. The hole between holds the IOAPIC
 * (0xfec00000), the LAPIC (0xfee00000) and device MMIO windows. */
#define TERN_MMIO_HOLE_START 0xc0000000ull
#define TERN_HIGH_RAM_START 0x100000000ull

/* Low memory the VMM uses for boot data (PVH start info, memory map,
 * command line). Guests must leave it alone until they have read it.
 * [TERN_BOOT_DATA_START, TERN_BOOT_DATA_END). */
#define TERN_BOOT_DATA_START 0x1000ull
#define TERN_BOOT_DATA_END 0x4000ull
/* Reserved for legacy BIOS structures (the MP table lives here). */
#define TERN_LOW_RAM_END 0x9fc00ull
#define TERN_BIOS_START 0xf0000ull

#endif
