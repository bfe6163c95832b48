/* Loading a guest kernel into guest RAM and preparing its boot data.
 *
 * Supported kernels:
 *  - an ELF (32- or 64-bit) with a Xen PVH entry note
 *    (XEN_ELFNOTE_PHYS32_ENTRY): loaded by its PT_LOAD program headers at
 *    their physical addresses and entered through PVH;
 *  - a Linux bzImage whose payload is LZ4-compressed (legacy LZ4 frame, as
 *    the kernel's CONFIG_KERNEL_LZ4 writes it): the payload is unpacked to
 *    the vmlinux ELF inside it, which is then loaded as above.
 *
 * PVH entry (what the vCPU set-up must do with boot_info): 32-bit protected
 * mode, paging off, flat 4 GiB CS/DS, EBX = start_info_gpa, EIP = entry. */
#ifndef TERN_NODE_VMM_BOOT_H
#define TERN_NODE_VMM_BOOT_H

#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"
#include "guest_memory.h"

/* Largest kernel / initrd file accepted. */
#define BOOT_MAX_KERNEL_BYTES (256ull << 20)
#define BOOT_MAX_INITRD_BYTES (1ull << 30)
/* Longest command line, without its terminating NUL. */
#define BOOT_MAX_CMDLINE 4095
/* Largest vmlinux unpacked from a bzImage payload (a distribution kernel's
 * is 50-60 MiB). */
#define BOOT_MAX_VMLINUX_BYTES (512ull << 20)
/* vCPU count the MP table can describe: APIC ids 0..n-1 and the IOAPIC at
 * id n must stay below the broadcast id 0xff. */
#define BOOT_MAX_VCPUS 254

struct boot_info {
    uint32_t entry_gpa;      /* 32-bit PVH entry point */
    uint64_t start_info_gpa; /* struct hvm_start_info, for EBX */
    uint64_t kernel_start;   /* lowest guest-physical byte the kernel occupies */
    uint64_t kernel_end;     /* one past the highest */
    uint64_t initrd_gpa;     /* 0 when there is no initrd */
    uint64_t initrd_size;
    int from_bzimage;        /* 1 when a vmlinux was unpacked from a bzImage */
};

/* --- ELF / PVH (boot_elf.c) --- */

struct elf_pvh_image {
    uint32_t entry;     /* from the PVH note */
    uint64_t low, high; /* [low, high): physical span of the PT_LOAD segments */
};

/* Checks that `elf` (len bytes) is a loadable ELF with a PVH note, without
 * touching guest memory. Every offset and size is bounds-checked. */
int elf_pvh_inspect(const uint8_t *elf, size_t len, struct elf_pvh_image *out,
                    struct tern_err *err);

/* Inspects, then copies each PT_LOAD segment to its p_paddr in guest RAM and
 * zeroes p_memsz beyond p_filesz. Fails (guest memory untouched) if any
 * segment falls outside RAM or overlaps [TERN_BOOT_DATA_START,
 * TERN_BOOT_DATA_END). Segments overlapping the legacy hole
 * [TERN_LOW_RAM_END, 1 MiB) are refused too (elf_pvh_inspect already does):
 * the memory map marks it reserved and the MP table lives there.
 * The PVH note's descriptor may be 4 bytes or, as x86-64 Linux writes it,
 * 8 bytes holding a value below 4 GiB. */
int elf_pvh_load(const uint8_t *elf, size_t len, struct guest_memory *gm,
                 struct elf_pvh_image *out, struct tern_err *err);

/* --- bzImage (boot_bzimage.c) --- */

struct bzimage_header {
    uint16_t protocol;      /* boot protocol version, e.g. 0x020f */
    uint32_t setup_bytes;   /* (setup_sects + 1) * 512 */
    uint32_t payload_offset;/* from the start of the protected-mode part */
    uint32_t payload_length;
    uint8_t loadflags;
    uint16_t xloadflags;
    uint64_t pref_address;
    uint32_t init_size;
};

/* Returns 1 when `img` starts like a bzImage (HdrS magic at 0x202), else 0. */
int bzimage_detect(const uint8_t *img, size_t len);

/* Parses and bounds-checks the setup header (protocol >= 2.08, needed for
 * payload_offset). */
int bzimage_parse_header(const uint8_t *img, size_t len, struct bzimage_header *out,
                         struct tern_err *err);

/* Unpacks the compressed payload to the vmlinux ELF it holds. Only LZ4
 * (legacy frame) is supported; other compressions give an error naming the
 * compression found. *out is malloc'd (caller frees). */
int bzimage_extract_vmlinux(const uint8_t *img, size_t len, uint8_t **out, size_t *out_len,
                            struct tern_err *err);

/* --- PVH start info and tables (boot_pvh.c, boot_mptable.c) --- */

/* Writes struct hvm_start_info (version 1), the E820-style memory map of `gm`
 * (low RAM, legacy hole reserved, RAM below the MMIO hole, RAM above 4 GiB),
 * the command line and, when initrd_size > 0, one module entry, all inside
 * [TERN_BOOT_DATA_START, TERN_BOOT_DATA_END). Returns the start info's gpa. */
int pvh_write_start_info(struct guest_memory *gm, const char *cmdline, uint64_t initrd_gpa,
                         uint64_t initrd_size, uint64_t *start_info_gpa,
                         struct tern_err *err);

/* Writes an Intel MP specification 1.4 floating pointer and configuration
 * table at TERN_BIOS_START: one processor entry per vCPU (APIC id = index,
 * the first is the BSP), an ISA bus, the IOAPIC at 0xfec00000 (id nr_vcpus)
 * and interrupt entries routing ISA IRQs 0-15 to IOAPIC pins (IRQ 0 to pin 2,
 * like real chipsets), plus local ExtINT/NMI entries. */
int mptable_write(struct guest_memory *gm, unsigned nr_vcpus, struct tern_err *err);

/* --- everything together (boot.c) --- */

/* Reads the kernel (and initrd) files, loads the kernel (ELF or bzImage),
 * places the initrd page-aligned at the top of RAM below 4 GiB (under the
 * MMIO hole), writes start info and MP table. Errors name the file and say
 * what is wrong with it. cmdline may be NULL (empty). */
int boot_load(struct guest_memory *gm, const char *kernel_path, const char *initrd_path,
              const char *cmdline, unsigned nr_vcpus, struct boot_info *out,
              struct tern_err *err);

#endif
