/* PVH start info. */
#include "bootinfo.h"

#include "kernel_api.h"

int bootinfo_get(struct bootinfo *b)
{
    b->si = 0;
    b->cmdline = "";
    b->memmap = 0;
    b->memmap_entries = 0;
    if (!boot_start_info)
        return -1;
    b->si = phys_ptr(boot_start_info);
    if (b->si->magic != HVM_START_MAGIC)
        return -1;
    if (b->si->cmdline_paddr)
        b->cmdline = phys_ptr(b->si->cmdline_paddr);
    if (b->si->version >= 1 && b->si->memmap_paddr && b->si->memmap_entries) {
        b->memmap = phys_ptr(b->si->memmap_paddr);
        b->memmap_entries = b->si->memmap_entries;
    }
    return 0;
}

/* Walks forward from start through RAM entries (in any order, possibly
 * adjacent) until end is covered or no entry continues the range. */
int bootinfo_is_ram(const struct bootinfo *b, uint64_t start, uint64_t end)
{
    uint64_t at = start;

    while (at < end) {
        uint64_t next = at;
        for (unsigned i = 0; i < b->memmap_entries; i++) {
            const struct hvm_memmap_entry *e = &b->memmap[i];
            if (e->type == HVM_MEMMAP_TYPE_RAM && e->addr <= at && at < e->addr + e->size &&
                e->addr + e->size > next)
                next = e->addr + e->size;
        }
        if (next == at)
            return 0;
        at = next;
    }
    return 1;
}
