/* The PVH start-of-day data: struct hvm_start_info (version 1), the memory
 * map, the initrd module entry and the command line, laid out in the boot
 * data area as pvh_abi.h describes. */
#include "boot.h"
#include "guest_abi.h"
#include "pvh_abi.h"

#include <inttypes.h>
#include <string.h>

_Static_assert(PVH_CMDLINE_GPA + BOOT_MAX_CMDLINE + 1 <= TERN_BOOT_DATA_END,
               "the longest command line must fit in the boot data area");
_Static_assert(PVH_MODLIST_GPA % 8 == 0 && PVH_MEMMAP_GPA % 8 == 0,
               "PVH tables are 8-byte aligned");

#define LEGACY_HOLE_END (1ull << 20)

/* Fills map[] from gm's regions; returns the number of entries. The hole
 * between TERN_LOW_RAM_END and 1 MiB is reported reserved, as on a PC:
 * it holds the MP table, and kernels expect firmware there. */
static unsigned pvh_build_memmap(const struct guest_memory *gm,
                                 struct pvh_memmap_entry map[PVH_MEMMAP_MAX])
{
    unsigned n = 0;
    uint64_t low_end = guest_memory_low_end(gm);
    map[n++] = (struct pvh_memmap_entry){0, TERN_LOW_RAM_END, PVH_MEMMAP_RAM, 0};
    map[n++] = (struct pvh_memmap_entry){TERN_LOW_RAM_END, LEGACY_HOLE_END - TERN_LOW_RAM_END,
                                         PVH_MEMMAP_RESERVED, 0};
    map[n++] = (struct pvh_memmap_entry){LEGACY_HOLE_END, low_end - LEGACY_HOLE_END,
                                         PVH_MEMMAP_RAM, 0};
    for (unsigned i = 1; i < gm->nr_regions; i++)
        map[n++] = (struct pvh_memmap_entry){gm->regions[i].gpa, gm->regions[i].size,
                                             PVH_MEMMAP_RAM, 0};
    return n;
}

static int pvh_check_inputs(const struct guest_memory *gm, const char *cmdline,
                            uint64_t initrd_gpa, uint64_t initrd_size, struct tern_err *err)
{
    if (!guest_memory_ptr(gm, TERN_BOOT_DATA_START, TERN_BOOT_DATA_END - TERN_BOOT_DATA_START))
        return tern_err_set(err, "guest RAM does not cover the boot data area [0x%llx, 0x%llx)",
                            TERN_BOOT_DATA_START, TERN_BOOT_DATA_END);
    /* The memory map assumes RAM runs from 0 past 1 MiB in one region. */
    if (gm->nr_regions < 1 || gm->nr_regions > PVH_MEMMAP_MAX - 2 ||
        gm->regions[0].gpa != 0 || guest_memory_low_end(gm) <= LEGACY_HOLE_END)
        return tern_err_set(err, "guest RAM layout has no RAM above 1 MiB at its start; "
                                 "give the VM at least 2 MiB");
    size_t clen = strnlen(cmdline, BOOT_MAX_CMDLINE + 1);
    if (clen > BOOT_MAX_CMDLINE)
        return tern_err_set(err, "kernel command line is %zu bytes; the limit is %d",
                            strlen(cmdline), BOOT_MAX_CMDLINE);
    if (initrd_size && !guest_memory_ptr(gm, initrd_gpa, initrd_size))
        return tern_err_set(err, "initrd at [0x%" PRIx64 ", +0x%" PRIx64 ") lies outside guest "
                                 "RAM", initrd_gpa, initrd_size);
    return 0;
}

int pvh_write_start_info(struct guest_memory *gm, const char *cmdline, uint64_t initrd_gpa,
                         uint64_t initrd_size, uint64_t *start_info_gpa,
                         struct tern_err *err)
{
    if (!cmdline)
        cmdline = "";
    if (pvh_check_inputs(gm, cmdline, initrd_gpa, initrd_size, err) < 0)
        return -1;

    struct pvh_memmap_entry map[PVH_MEMMAP_MAX];
    unsigned nmap = pvh_build_memmap(gm, map);
    struct pvh_start_info si = {
        .magic = PVH_START_MAGIC,
        .version = PVH_START_VERSION,
        .nr_modules = initrd_size ? 1 : 0,
        .modlist_paddr = initrd_size ? PVH_MODLIST_GPA : 0,
        .cmdline_paddr = PVH_CMDLINE_GPA,
        .memmap_paddr = PVH_MEMMAP_GPA,
        .memmap_entries = nmap,
    };
    struct pvh_modlist_entry mod = {.paddr = initrd_gpa, .size = initrd_size};

    /* Clear the whole area first so nothing stale (a previous boot, a
     * longer command line) survives between the pieces. */
    uint8_t *area = guest_memory_ptr(gm, TERN_BOOT_DATA_START,
                                     TERN_BOOT_DATA_END - TERN_BOOT_DATA_START);
    memset(area, 0, TERN_BOOT_DATA_END - TERN_BOOT_DATA_START);
    memcpy(area + (PVH_START_INFO_GPA - TERN_BOOT_DATA_START), &si, sizeof(si));
    memcpy(area + (PVH_MEMMAP_GPA - TERN_BOOT_DATA_START), map, nmap * sizeof(map[0]));
    if (initrd_size)
        memcpy(area + (PVH_MODLIST_GPA - TERN_BOOT_DATA_START), &mod, sizeof(mod));
    memcpy(area + (PVH_CMDLINE_GPA - TERN_BOOT_DATA_START), cmdline, strlen(cmdline) + 1);
    *start_info_gpa = PVH_START_INFO_GPA;
    return 0;
}
