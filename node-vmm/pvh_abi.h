/* The PVH boot ABI as tern-vmm writes it: the start-of-day structure a PVH
 * kernel finds through EBX, its memory map and module list (layout as in
 * Xen's public arch-x86/hvm/start_info.h, version 1), and where in the boot
 * data area [TERN_BOOT_DATA_START, TERN_BOOT_DATA_END) each piece lives.
 *
 * All fields are little-endian; tern-vmm only runs on x86 hosts, so the
 * structs below are written to guest memory as they are (checked below). */
#ifndef TERN_NODE_VMM_PVH_ABI_H
#define TERN_NODE_VMM_PVH_ABI_H

#include <stdint.h>

#include "guest_abi.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "pvh_abi.h structs are copied to guest memory as-is: little-endian hosts only"
#endif

/* ELF note that carries the 32-bit physical PVH entry point. */
#define PVH_XEN_NOTE_NAME "Xen" /* namesz 4, including the NUL */
#define PVH_XEN_ELFNOTE_PHYS32_ENTRY 18

/* "xEn3" with the 0x80 bit of the "E" set. */
#define PVH_START_MAGIC 0x336ec578u
#define PVH_START_VERSION 1u

/* E820 memory types used in the memory map. */
#define PVH_MEMMAP_RAM 1u
#define PVH_MEMMAP_RESERVED 2u

struct pvh_start_info {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;         /* SIF_* flags; none apply to tern guests */
    uint32_t nr_modules;
    uint64_t modlist_paddr; /* array of pvh_modlist_entry, 0 when none */
    uint64_t cmdline_paddr; /* NUL-terminated ASCII */
    uint64_t rsdp_paddr;    /* ACPI RSDP, 0: tern offers an MP table instead */
    /* Version 1 additions. */
    uint64_t memmap_paddr;  /* array of pvh_memmap_entry */
    uint32_t memmap_entries;
    uint32_t reserved;
};

struct pvh_memmap_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type; /* PVH_MEMMAP_* */
    uint32_t reserved;
};

struct pvh_modlist_entry {
    uint64_t paddr;
    uint64_t size;
    uint64_t cmdline_paddr; /* 0: the module has no command line */
    uint64_t reserved;
};

_Static_assert(sizeof(struct pvh_start_info) == 56, "hvm_start_info v1 is 56 bytes");
_Static_assert(sizeof(struct pvh_memmap_entry) == 24, "hvm_memmap_table_entry is 24 bytes");
_Static_assert(sizeof(struct pvh_modlist_entry) == 32, "hvm_modlist_entry is 32 bytes");

/* Layout of the boot data area, in the order the kernel reads it. Each
 * piece starts 8-byte aligned; the command line comes last because it is
 * the only piece whose size varies. */
#define PVH_MEMMAP_MAX 4 /* low RAM, legacy hole, RAM below the MMIO hole, high RAM */
#define PVH_START_INFO_GPA TERN_BOOT_DATA_START
#define PVH_MEMMAP_GPA (PVH_START_INFO_GPA + 64)
#define PVH_MODLIST_GPA (PVH_MEMMAP_GPA + PVH_MEMMAP_MAX * sizeof(struct pvh_memmap_entry))
#define PVH_CMDLINE_GPA (PVH_MODLIST_GPA + sizeof(struct pvh_modlist_entry))

_Static_assert(sizeof(struct pvh_start_info) <= PVH_MEMMAP_GPA - PVH_START_INFO_GPA,
               "start info overlaps the memory map");

#endif
