/* Dirty-page tracking for live migration: one interface over KVM's dirty
 * log, with the pages the VMM's own devices wrote (vmm_dirty.h) merged in.
 *
 * Every bitmap here has one bit per 4 KiB page of guest RAM, indexed by the
 * page's offset in the RAM memfd / 4096 (the index space of vmm_dirty, so
 * the MMIO hole costs nothing), bit i of word i / 64 holding page i.
 *
 * The engine's order of operations, every round (docs/dirtylog.md):
 *
 *     dirtylog_collect(d, bitmap)          pages dirtied since they were last cleared
 *                                          (round 0: dirtylog_report_all(d, bitmap), or
 *                                          the caller's own choice + dirtylog_report_pages)
 *     for each chunk of the RAM index space holding dirty pages:
 *         dirtylog_clear(d, chunk)         re-arm tracking of the chunk's reported pages
 *         read and send every page of `bitmap` in the chunk
 *
 * Clearing just before reading is what makes it safe: a write to a
 * reported page that lands before the clear is in what is read, a write
 * after the clear is found by the next collect. A clear only forgets pages
 * a collect has reported: a page first dirtied between the collect and the
 * clear stays dirty for the next collect, since the caller will not read
 * it now.
 *
 * One thread (the migration engine's) uses a struct dirtylog; the vCPUs and
 * device threads keep running meanwhile. */
#ifndef TERN_DIRTYLOG_DIRTYLOG_H
#define TERN_DIRTYLOG_DIRTYLOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/err.h"

struct vm;
struct guest_memory;

#define DIRTYLOG_PAGE_SHIFT 12
#define DIRTYLOG_PAGE_SIZE (1ull << DIRTYLOG_PAGE_SHIFT)

enum dirtylog_mode {
    /* KVM_GET_DIRTY_LOG / KVM_CLEAR_DIRTY_LOG with
     * KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2. Works on any VM; the cheaper of the
     * two on this machine up to tens of GiB (docs/dirtylog.md). */
    DIRTYLOG_BITMAP,
    /* KVM's per-vCPU dirty rings (KVM_CAP_DIRTY_LOG_RING_ACQ_REL). Only for
     * a VM created with its vCPUs' rings (run_options.dirty_ring_entries,
     * where vm.h defines VM_DIRTY_RING); the cheaper for very large,
     * sparsely dirtied guests. */
    DIRTYLOG_RING,
};

struct dirtylog;

/* What tracking has cost so far (for the engine's progress and the docs). */
struct dirtylog_stats {
    uint64_t collects;     /* dirtylog_collect calls */
    uint64_t collect_ns;   /* time spent in them */
    uint64_t kvm_pages;    /* BITMAP: set bits KVM returned, summed over collects
                              (a page not yet cleared counts again);
                              RING: ring entries harvested by collects */
    uint64_t vmm_pages;    /* marks taken from vm->dirty that KVM did not also
                              report (device writes; in RING mode also the
                              entries of full rings the vCPUs drained) */
    uint64_t clears;       /* dirtylog_clear calls */
    uint64_t clear_ioctls; /* KVM_CLEAR_DIRTY_LOG calls they made (none for a
                              64 Ki-page piece with nothing reported; none in
                              RING mode) */
    uint64_t clear_ns;     /* time spent in them */
};

/* Starts tracking on every RAM slot of `vm`, created and running or not,
 * with KVM_MEM_LOG_DIRTY_PAGES on every slot: from here on every guest
 * write to a page is seen (KVM write-protects all of RAM now). Nothing is
 * dirty yet: round 0 must send every page (dirtylog_report_all). Marks the
 * VMM's devices made before this call are dropped for the same reason.
 * BITMAP: enables manual protect (KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
 * without INITIALLY_SET). RING: entries left in the rings are dropped.
 * At most one dirtylog per VM at a time, stopped before vm_destroy. On
 * failure nothing is left changed. */
int dirtylog_start(struct dirtylog **out, struct vm *vm, enum dirtylog_mode mode,
                   struct tern_err *err);

/* ORs into `bitmap` (dirtylog_bitmap_words(RAM pages) words) every page
 * dirtied since its range was last cleared (or since dirtylog_start): by a
 * vCPU or KVM itself (KVM's log) or by the VMM's devices (vm->dirty).
 * Returns the number of such pages, or -1.
 *
 * A page stays reported until dirtylog_clear covers it: collecting twice
 * without a clear gives the same pages again, plus any dirtied since.
 * BITMAP: KVM_GET_DIRTY_LOG per slot; with manual protect it leaves KVM's
 * bits and the pages' write access alone (the clear re-arms them).
 * RING: harvests every vCPU's ring and calls KVM_RESET_DIRTY_RINGS, which
 * re-arms those pages now; dirtylog remembers them until cleared. */
int64_t dirtylog_collect(struct dirtylog *d, uint64_t *bitmap, struct tern_err *err);

/* Re-arms tracking of the pages in [first_page, first_page + npages) that
 * collects (or dirtylog_report_all) reported since the range was last
 * cleared: forgets that they are dirty and (BITMAP) write-protects them
 * again, so that their next write is reported by a later collect. Pages of
 * the range first dirtied after the last collect stay dirty. Call it just
 * before reading the reported pages of the range; the caller must then
 * read every one of them. first_page must be a multiple of 64, and so must
 * npages unless the range ends at the end of RAM; the range must lie
 * within RAM. Ranges may cross slot boundaries. npages == 0 does nothing.
 * BITMAP: KVM_CLEAR_DIRTY_LOG on each slot the range touches, with the
 * reported pages as its mask (none reported: no call). RING: no KVM call
 * (the collect re-armed the pages already). */
int dirtylog_clear(struct dirtylog *d, uint64_t first_page, uint64_t npages,
                   struct tern_err *err);

/* Round 0: sets every page in `bitmap` and counts them all as reported, so
 * that the engine's first pass over all of RAM is the same loop as the
 * later rounds (clear a chunk, then read all of it). */
void dirtylog_report_all(struct dirtylog *d, uint64_t *bitmap);

/* The same for a round 0 the caller chose itself (say, only the pages the
 * guest ever touched): counts the pages set in `bitmap` as reported. The
 * caller must read every one of them after clearing its chunk. Without
 * this, a clear does not forget those pages, and any written since
 * dirtylog_start are sent again in round 1 (safe, only slower). */
void dirtylog_report_pages(struct dirtylog *d, const uint64_t *bitmap);

/* Stops tracking: slot flags back to 0; BITMAP: manual protect off; RING:
 * the rings emptied. Safe with NULL. Problems (none expected: the VM
 * would be going away) go to stderr. */
void dirtylog_stop(struct dirtylog *d);

/* Pages of guest RAM this dirtylog covers (the bitmaps' length in bits). */
uint64_t dirtylog_nr_pages(const struct dirtylog *d);

/* Counters since dirtylog_start. */
struct dirtylog_stats dirtylog_get_stats(const struct dirtylog *d);

/* --- KVM's dirty ring: the hooks vm_create and the vCPUs call --- */

struct kvm_dirty_gfn;

/* One vCPU's dirty ring (in struct vcpu). The ring persists across
 * dirtylog sessions, and so does `fetch`. */
struct dirtylog_ring {
    struct kvm_dirty_gfn *gfns; /* NULL: no ring */
    uint32_t entries;           /* a power of two */
    uint32_t fetch;             /* next entry to harvest, under lock */
    pthread_mutex_t lock;       /* the collector vs the vCPU on a full ring */
};

#define DIRTYLOG_RING_MIN_ENTRIES 1024u
#define DIRTYLOG_RING_MAX_ENTRIES 65536u

/* Enables KVM's dirty ring with `entries` per vCPU (a power of two within
 * [MIN, MAX] and what KVM allows) on a VM with no vCPU yet: vm_create
 * calls it before the first KVM_CREATE_VCPU. Nothing is logged until a
 * dirtylog starts (slots without KVM_MEM_LOG_DIRTY_PAGES log nothing). */
int dirtylog_ring_enable(int vm_fd, uint32_t entries, struct tern_err *err);

/* Maps the ring of a vCPU just created on such a VM (vcpu_create). */
int dirtylog_ring_map(struct dirtylog_ring *r, int vcpu_fd, uint32_t entries,
                      struct tern_err *err);

/* Unmaps; safe on a zeroed ring. */
void dirtylog_ring_unmap(struct dirtylog_ring *r);

/* For the vCPU's own thread on KVM_EXIT_DIRTY_RING_FULL (KVM will not run
 * it again until its ring has room): harvests its ring, resets it (KVM
 * write-protects those pages again), then marks the pages in vm->dirty, so
 * the next collect reports them. No waiting for the collector, so a slow
 * or absent collector never stalls the guest. */
int dirtylog_ring_drain(struct dirtylog_ring *r, struct vm *vm, struct tern_err *err);

/* --- how a range of the RAM index space maps onto KVM slots (pure) --- */

/* A piece of a RAM page range inside one slot. Slot i is guest_memory
 * region i (vm.c registers them so). */
struct dirtylog_slot_range {
    uint32_t slot;
    uint64_t first; /* slot-relative page */
    uint64_t npages;
};

/* Splits [first_page, first_page + npages) of the RAM index space into
 * slot-relative pieces (at most one per region), in order. Checks the
 * range lies in RAM and meets KVM_CLEAR_DIRTY_LOG's alignment (see
 * dirtylog_clear). Returns the number of pieces, or -1. */
int dirtylog_slot_ranges(const struct guest_memory *mem, uint64_t first_page, uint64_t npages,
                         struct dirtylog_slot_range *out, unsigned max, struct tern_err *err);

/* --- bitmap helpers (pure; bit i of word i / 64 is page i) --- */

static inline uint64_t dirtylog_bitmap_words(uint64_t nbits)
{
    return (nbits + 63) / 64;
}

static inline bool dirtylog_bitmap_test(const uint64_t *bm, uint64_t i)
{
    return (bm[i / 64] >> (i % 64)) & 1;
}

static inline void dirtylog_bitmap_set(uint64_t *bm, uint64_t i)
{
    bm[i / 64] |= 1ull << (i % 64);
}

/* Number of set bits in [first, first + n). */
uint64_t dirtylog_bitmap_count(const uint64_t *bm, uint64_t first, uint64_t n);

/* The first set bit at or after `from` and before `end`; `end` if none.
 * Skips clear words 64 bits at a time. The usual loop:
 *     for (i = next_set(bm, a, b); i < b; i = next_set(bm, i + 1, b)) */
uint64_t dirtylog_bitmap_next_set(const uint64_t *bm, uint64_t from, uint64_t end);

/* The first clear bit at or after `from` and before `end`; `end` if none.
 * With next_set, walks runs of dirty pages. */
uint64_t dirtylog_bitmap_next_clear(const uint64_t *bm, uint64_t from, uint64_t end);

/* Clears / sets the bits [first, first + n). */
void dirtylog_bitmap_clear_range(uint64_t *bm, uint64_t first, uint64_t n);
void dirtylog_bitmap_set_range(uint64_t *bm, uint64_t first, uint64_t n);

#endif
