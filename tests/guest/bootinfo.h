/* The PVH start-of-day information (our own definitions of the layout in
 * Xen's public arch-x86/hvm/start_info.h) and helpers over it. */
#ifndef TG_BOOTINFO_H
#define TG_BOOTINFO_H

#include <stdint.h>

#define HVM_START_MAGIC 0x336ec578u
#define HVM_MEMMAP_TYPE_RAM 1

struct hvm_start_info {
    uint32_t magic;
    uint32_t version; /* memmap_* exist from version 1 */
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr; /* NUL-terminated; 0 = none */
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;   /* struct hvm_memmap_entry[memmap_entries] */
    uint32_t memmap_entries;
    uint32_t reserved;
};

struct hvm_memmap_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
    uint32_t reserved;
};

_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info layout");
_Static_assert(sizeof(struct hvm_memmap_entry) == 24, "hvm_memmap_entry layout");

struct bootinfo {
    const struct hvm_start_info *si;
    const char *cmdline;                  /* "" when there is none */
    const struct hvm_memmap_entry *memmap; /* NULL when there is none */
    unsigned memmap_entries;
};

/* A pointer to guest-physical memory (identity mapped). The empty asm
 * hides the constant address from gcc's array-bounds analysis. */
static inline void *phys_ptr(uint64_t pa)
{
    void *p = (void *)(uintptr_t)pa;
    __asm__("" : "+r"(p));
    return p;
}

/* Reads the start info the PVH entry saved. Returns -1 if it is missing or
 * its magic is wrong. */
int bootinfo_get(struct bootinfo *b);

/* 1 if [start, end) is covered by RAM entries of the memory map. */
int bootinfo_is_ram(const struct bootinfo *b, uint64_t start, uint64_t end);

#endif
