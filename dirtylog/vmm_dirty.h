/* Pages of guest RAM the VMM itself wrote (device DMA: virtio request data,
 * used rings). KVM's dirty log only sees writes made by vCPUs, so the
 * migration code merges this bitmap in to never miss a page.
 *
 * One bit per 4 KiB page of guest RAM, indexed by the page's offset in the
 * RAM memfd (not by guest physical address, so the MMIO hole costs
 * nothing). Marking is lock-free (atomic OR) and safe from any thread. */
#ifndef TERN_DIRTYLOG_VMM_DIRTY_H
#define TERN_DIRTYLOG_VMM_DIRTY_H

#include <stdatomic.h>
#include <stdint.h>

#include "../common/err.h"
#include "../node-vmm/guest_memory.h"

struct vmm_dirty {
    const struct guest_memory *mem;
    uint64_t nr_pages;
    _Atomic uint64_t *bits;
};

int vmm_dirty_init(struct vmm_dirty *d, const struct guest_memory *mem, struct tern_err *err);
void vmm_dirty_free(struct vmm_dirty *d);

/* Marks every page that [gpa, gpa+len) touches. Ranges outside RAM are
 * ignored (the caller has already refused them). */
void vmm_dirty_mark(struct vmm_dirty *d, uint64_t gpa, uint64_t len);

/* Whether page `index` (RAM offset / 4096) is marked. */
int vmm_dirty_test(const struct vmm_dirty *d, uint64_t index);

/* Moves the marks of words [first_word, first_word + nr_words) into `out`
 * (OR-ed in), clearing them: the consumer's "collect and reset". */
void vmm_dirty_collect(struct vmm_dirty *d, uint64_t *out, uint64_t first_word,
                       uint64_t nr_words);

/* Number of marked pages (for tests and statistics). */
uint64_t vmm_dirty_count(const struct vmm_dirty *d);

#endif
