#include "vmm_dirty.h"

#include <stdlib.h>

#define PAGE_SHIFT 12

int vmm_dirty_init(struct vmm_dirty *d, const struct guest_memory *mem, struct tern_err *err)
{
    d->mem = mem;
    d->nr_pages = mem->size >> PAGE_SHIFT;
    uint64_t words = (d->nr_pages + 63) / 64;
    d->bits = calloc(words ? words : 1, sizeof(*d->bits));
    if (!d->bits)
        return tern_err_set(err, "out of memory for the device dirty bitmap (%llu pages)",
                            (unsigned long long)d->nr_pages);
    return 0;
}

void vmm_dirty_free(struct vmm_dirty *d)
{
    free(d->bits);
    d->bits = NULL;
    d->nr_pages = 0;
}

/* The memfd offset of gpa, or UINT64_MAX outside RAM. */
static uint64_t ram_offset(const struct guest_memory *mem, uint64_t gpa)
{
    for (unsigned i = 0; i < mem->nr_regions; i++) {
        const struct guest_memory_region *r = &mem->regions[i];
        if (gpa >= r->gpa && gpa - r->gpa < r->size)
            return r->offset + (gpa - r->gpa);
    }
    return UINT64_MAX;
}

void vmm_dirty_mark(struct vmm_dirty *d, uint64_t gpa, uint64_t len)
{
    if (!d || !d->bits || len == 0)
        return;
    /* Walk page by page: a range may cross from one region to the next only
     * at region ends, and device buffers are small. */
    uint64_t end = gpa + len;
    if (end < gpa)
        return;
    for (uint64_t page = gpa >> PAGE_SHIFT; page <= (end - 1) >> PAGE_SHIFT; page++) {
        uint64_t off = ram_offset(d->mem, page << PAGE_SHIFT);
        if (off == UINT64_MAX)
            continue;
        uint64_t idx = off >> PAGE_SHIFT;
        atomic_fetch_or_explicit(&d->bits[idx / 64], 1ull << (idx % 64), memory_order_relaxed);
    }
}

int vmm_dirty_test(const struct vmm_dirty *d, uint64_t index)
{
    if (index >= d->nr_pages)
        return 0;
    return (atomic_load_explicit(&d->bits[index / 64], memory_order_relaxed) >> (index % 64)) & 1;
}

void vmm_dirty_collect(struct vmm_dirty *d, uint64_t *out, uint64_t first_word, uint64_t nr_words)
{
    uint64_t words = (d->nr_pages + 63) / 64;
    for (uint64_t w = first_word; w < first_word + nr_words && w < words; w++)
        if (atomic_load_explicit(&d->bits[w], memory_order_relaxed)) /* skip the write when empty */
            out[w - first_word] |= atomic_exchange_explicit(&d->bits[w], 0, memory_order_acq_rel);
}

uint64_t vmm_dirty_count(const struct vmm_dirty *d)
{
    uint64_t words = (d->nr_pages + 63) / 64, n = 0;
    for (uint64_t w = 0; w < words; w++)
        n += (uint64_t)__builtin_popcountll(atomic_load_explicit(&d->bits[w], memory_order_relaxed));
    return n;
}
