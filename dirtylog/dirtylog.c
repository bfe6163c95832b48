/* Dirty-page tracking over KVM's dirty log (see dirtylog.h and
 * docs/dirtylog.md). */
#include "dirtylog.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../node-vmm/vm.h"

/* Pages per KVM_CLEAR_DIRTY_LOG: KVM holds the MMU lock for a whole call,
 * so a bounded call keeps vCPU page faults from waiting long behind it. */
#define CLEAR_IOCTL_PAGES (64u * 1024u)

struct dirtylog {
    struct vm *vm;
    enum dirtylog_mode mode;
    uint64_t nr_pages;
    uint64_t nr_words;
    uint64_t *scratch;     /* one collect's KVM pages */
    uint64_t *vmm_new;     /* one collect's device marks */
    /* Pages from sources that forget what they told (device marks taken
     * from vm->dirty, ring entries), kept until cleared. */
    uint64_t *pending;
    /* Every page a collect (or dirtylog_report_all) has handed to the
     * caller since its range was last cleared: what a clear may forget,
     * and KVM_CLEAR_DIRTY_LOG's mask. A page dirtied after the last collect
     * is not in here, so a clear leaves it dirty for the next collect. */
    uint64_t *reported;
    struct dirtylog_stats stats;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* --- bitmap helpers --- */

/* Bits [lo, hi) of a word, 0 <= lo < hi <= 64. */
static uint64_t word_mask(unsigned lo, unsigned hi)
{
    uint64_t upto = hi == 64 ? ~0ull : (1ull << hi) - 1;
    return upto & ~((1ull << lo) - 1);
}

uint64_t dirtylog_bitmap_count(const uint64_t *bm, uint64_t first, uint64_t n)
{
    uint64_t count = 0, i = first, end = first + n;
    while (i < end) {
        unsigned lo = (unsigned)(i % 64);
        if (lo == 0 && end - i >= 64) {
            count += (uint64_t)__builtin_popcountll(bm[i / 64]);
            i += 64;
            continue;
        }
        unsigned hi = end - (i - lo) >= 64 ? 64 : (unsigned)(end - (i - lo));
        count += (uint64_t)__builtin_popcountll(bm[i / 64] & word_mask(lo, hi));
        i += hi - lo;
    }
    return count;
}

/* The first bit at or after `from`, before `end`, whose value is `want`. */
static uint64_t next_bit(const uint64_t *bm, uint64_t from, uint64_t end, bool want)
{
    if (from >= end)
        return end;
    uint64_t w = from / 64;
    uint64_t word = want ? bm[w] : ~bm[w];
    word &= ~0ull << (from % 64);
    uint64_t last_w = (end - 1) / 64;
    for (;;) {
        if (word) {
            uint64_t i = w * 64 + (uint64_t)__builtin_ctzll(word);
            return i < end ? i : end;
        }
        if (w == last_w)
            return end;
        w++;
        word = want ? bm[w] : ~bm[w];
    }
}

uint64_t dirtylog_bitmap_next_set(const uint64_t *bm, uint64_t from, uint64_t end)
{
    return next_bit(bm, from, end, true);
}

uint64_t dirtylog_bitmap_next_clear(const uint64_t *bm, uint64_t from, uint64_t end)
{
    return next_bit(bm, from, end, false);
}

static void change_range(uint64_t *bm, uint64_t first, uint64_t n, bool set)
{
    uint64_t i = first, end = first + n;
    while (i < end) {
        unsigned lo = (unsigned)(i % 64);
        unsigned hi = end - (i - lo) >= 64 ? 64 : (unsigned)(end - (i - lo));
        if (lo == 0 && hi == 64) {
            /* Whole words: let memset do the middle. */
            uint64_t words = (end - i) / 64;
            memset(&bm[i / 64], set ? 0xff : 0, words * sizeof(*bm));
            i += words * 64;
            continue;
        }
        if (set)
            bm[i / 64] |= word_mask(lo, hi);
        else
            bm[i / 64] &= ~word_mask(lo, hi);
        i += hi - lo;
    }
}

void dirtylog_bitmap_clear_range(uint64_t *bm, uint64_t first, uint64_t n)
{
    change_range(bm, first, n, false);
}

void dirtylog_bitmap_set_range(uint64_t *bm, uint64_t first, uint64_t n)
{
    change_range(bm, first, n, true);
}

/* --- RAM index space <-> slots --- */

int dirtylog_slot_ranges(const struct guest_memory *mem, uint64_t first_page, uint64_t npages,
                         struct dirtylog_slot_range *out, unsigned max, struct tern_err *err)
{
    uint64_t total = mem->size >> DIRTYLOG_PAGE_SHIFT;
    if (first_page > total || npages > total - first_page)
        return tern_err_set(err,
                            "dirty log range [%llu, +%llu) is outside guest RAM (%llu pages)",
                            (unsigned long long)first_page, (unsigned long long)npages,
                            (unsigned long long)total);
    if (first_page % 64)
        return tern_err_set(err, "dirty log range starts at page %llu, not a multiple of 64",
                            (unsigned long long)first_page);
    if (npages % 64 && first_page + npages != total)
        return tern_err_set(err,
                            "dirty log range [%llu, +%llu): the length must be a multiple of 64 "
                            "pages unless the range ends at the end of RAM",
                            (unsigned long long)first_page, (unsigned long long)npages);
    unsigned n = 0;
    uint64_t end = first_page + npages;
    for (unsigned i = 0; i < mem->nr_regions && first_page < end; i++) {
        const struct guest_memory_region *r = &mem->regions[i];
        uint64_t r_first = r->offset >> DIRTYLOG_PAGE_SHIFT;
        uint64_t r_end = r_first + (r->size >> DIRTYLOG_PAGE_SHIFT);
        if (first_page >= r_end)
            continue;
        uint64_t piece_end = end < r_end ? end : r_end;
        if (n == max)
            return tern_err_set(err, "dirty log range spans more than %u slots", max);
        out[n++] = (struct dirtylog_slot_range){
            .slot = i, .first = first_page - r_first, .npages = piece_end - first_page};
        first_page = piece_end;
    }
    return (int)n;
}

/* Every region must start on a 64-page boundary of the RAM index space, so
 * that a slot's bitmap lands on whole words of ours. */
static int check_layout(const struct guest_memory *mem, struct tern_err *err)
{
    for (unsigned i = 0; i < mem->nr_regions; i++)
        if ((mem->regions[i].offset >> DIRTYLOG_PAGE_SHIFT) % 64)
            return tern_err_set(err, "guest RAM region %u starts at memfd offset 0x%llx, "
                                "not on a 64-page boundary", i,
                                (unsigned long long)mem->regions[i].offset);
    return 0;
}

/* --- KVM dirty bitmap, manual protect --- */

static int manual_protect(struct vm *vm, bool on, struct tern_err *err)
{
    struct kvm_enable_cap cap = {
        .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
        .args = {on ? KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE : 0},
    };
    if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &cap) < 0)
        return tern_err_errno(err, errno, "%s KVM's manual dirty log protection",
                              on ? "enabling" : "disabling");
    return 0;
}

static int bitmap_start(struct dirtylog *d, struct tern_err *err)
{
    struct vm *vm = d->vm;
    int caps = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    if (caps <= 0 || !(caps & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE))
        return tern_err_set(err, "this kernel's KVM lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2");
    if (manual_protect(vm, true, err) < 0)
        return -1;
    if (vm_set_slot_flags(vm, KVM_MEM_LOG_DIRTY_PAGES, err) < 0) {
        struct tern_err ignored;
        vm_set_slot_flags(vm, 0, &ignored);
        manual_protect(vm, false, &ignored);
        return tern_err_prefix(err, "starting dirty page logging");
    }
    return 0;
}

static int bitmap_collect(struct dirtylog *d, struct tern_err *err)
{
    const struct guest_memory *mem = &d->vm->mem;
    for (unsigned i = 0; i < mem->nr_regions; i++) {
        struct kvm_dirty_log log = {
            .slot = i,
            .dirty_bitmap = d->scratch + (mem->regions[i].offset >> DIRTYLOG_PAGE_SHIFT) / 64,
        };
        if (ioctl(d->vm->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
            return tern_err_errno(err, errno, "KVM_GET_DIRTY_LOG on slot %u", i);
    }
    return 0;
}

static bool all_zero(const uint64_t *w, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (w[i])
            return false;
    return true;
}

/* Clears, in KVM's log, the reported pages of one slot range. */
static int bitmap_clear(struct dirtylog *d, const struct dirtylog_slot_range *r,
                        struct tern_err *err)
{
    /* The slot's first page sits on a word boundary of the RAM index space
     * (check_layout), and r->first is a multiple of 64. */
    uint64_t base = d->vm->mem.regions[r->slot].offset >> DIRTYLOG_PAGE_SHIFT;
    for (uint64_t done = 0; done < r->npages;) {
        uint64_t n = r->npages - done;
        if (n > CLEAR_IOCTL_PAGES)
            n = CLEAR_IOCTL_PAGES;
        uint64_t *mask = d->reported + (base + r->first + done) / 64;
        if (all_zero(mask, dirtylog_bitmap_words(n))) {
            done += n;
            continue;
        }
        struct kvm_clear_dirty_log c = {
            .slot = r->slot,
            .num_pages = (uint32_t)n,
            .first_page = r->first + done,
            .dirty_bitmap = mask,
        };
        if (ioctl(d->vm->vm_fd, KVM_CLEAR_DIRTY_LOG, &c) < 0)
            return tern_err_errno(err, errno, "KVM_CLEAR_DIRTY_LOG on slot %u, pages [%llu, +%llu)",
                                  r->slot, (unsigned long long)c.first_page,
                                  (unsigned long long)n);
        d->stats.clear_ioctls++;
        done += n;
    }
    return 0;
}

/* --- KVM dirty ring --- */

int dirtylog_ring_enable(int vm_fd, uint32_t entries, struct tern_err *err)
{
    if (entries < DIRTYLOG_RING_MIN_ENTRIES || entries > DIRTYLOG_RING_MAX_ENTRIES ||
        (entries & (entries - 1)))
        return tern_err_set(err, "dirty ring of %u entries: a power of two from %u to %u, please",
                            entries, DIRTYLOG_RING_MIN_ENTRIES, DIRTYLOG_RING_MAX_ENTRIES);
    uint64_t bytes = (uint64_t)entries * sizeof(struct kvm_dirty_gfn);
    int cap = KVM_CAP_DIRTY_LOG_RING_ACQ_REL;
    int max = ioctl(vm_fd, KVM_CHECK_EXTENSION, cap);
    if (max <= 0) {
        cap = KVM_CAP_DIRTY_LOG_RING;
        max = ioctl(vm_fd, KVM_CHECK_EXTENSION, cap);
    }
    if (max <= 0)
        return tern_err_set(err, "this kernel's KVM has no dirty ring (KVM_CAP_DIRTY_LOG_RING)");
    if (bytes > (uint64_t)max)
        return tern_err_set(err, "dirty ring of %u entries: KVM allows at most %llu", entries,
                            (unsigned long long)((uint64_t)max / sizeof(struct kvm_dirty_gfn)));
    struct kvm_enable_cap c = {.cap = (uint32_t)cap, .args = {bytes}};
    if (ioctl(vm_fd, KVM_ENABLE_CAP, &c) < 0)
        return tern_err_errno(err, errno, "enabling KVM's dirty ring (%u entries per vCPU)",
                              entries);
    return 0;
}

int dirtylog_ring_map(struct dirtylog_ring *r, int vcpu_fd, uint32_t entries,
                      struct tern_err *err)
{
    size_t bytes = (size_t)entries * sizeof(struct kvm_dirty_gfn);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd,
                   (off_t)KVM_DIRTY_LOG_PAGE_OFFSET * sysconf(_SC_PAGESIZE));
    if (p == MAP_FAILED)
        return tern_err_errno(err, errno, "mapping the dirty ring");
    pthread_mutex_init(&r->lock, NULL);
    r->gfns = p;
    r->entries = entries;
    r->fetch = 0;
    return 0;
}

void dirtylog_ring_unmap(struct dirtylog_ring *r)
{
    if (!r->gfns)
        return;
    munmap(r->gfns, (size_t)r->entries * sizeof(struct kvm_dirty_gfn));
    pthread_mutex_destroy(&r->lock);
    r->gfns = NULL;
}

struct ring_entry {
    uint32_t slot;
    uint64_t offset;
};

/* Takes up to `max` dirty entries of the ring, marking them for KVM's
 * reset. The caller holds r->lock. */
static unsigned ring_take(struct dirtylog_ring *r, struct ring_entry *out, unsigned max)
{
    const uint32_t mask = r->entries - 1;
    unsigned n = 0;
    while (n < max) {
        struct kvm_dirty_gfn *e = &r->gfns[r->fetch & mask];
        /* Acquire: the slot and offset KVM wrote before it set the flag. */
        uint32_t flags = __atomic_load_n(&e->flags, __ATOMIC_ACQUIRE);
        if (!(flags & KVM_DIRTY_GFN_F_DIRTY))
            break;
        out[n++] = (struct ring_entry){.slot = e->slot, .offset = e->offset};
        /* Release: done reading the entry before KVM may reuse it. */
        __atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
        r->fetch++;
    }
    return n;
}

/* The RAM index of an entry, or UINT64_MAX if it names no RAM of ours
 * (address space 0, bits 16+ of slot, and our slots: KVM logs no other). */
static uint64_t ring_entry_page(const struct guest_memory *mem, const struct ring_entry *e)
{
    if (e->slot >= mem->nr_regions || e->offset >= mem->regions[e->slot].size >> DIRTYLOG_PAGE_SHIFT)
        return UINT64_MAX;
    return (mem->regions[e->slot].offset >> DIRTYLOG_PAGE_SHIFT) + e->offset;
}

static int ring_reset(struct vm *vm, struct tern_err *err)
{
    if (ioctl(vm->vm_fd, KVM_RESET_DIRTY_RINGS, 0) < 0)
        return tern_err_errno(err, errno, "KVM_RESET_DIRTY_RINGS");
    return 0;
}

#define RING_BATCH 1024u

int dirtylog_ring_drain(struct dirtylog_ring *r, struct vm *vm, struct tern_err *err)
{
    /* Reset before the pages are marked: once a collect can take a mark,
     * the caller may read the page, and a write after that read must find
     * the page write-protected again (another vCPU may still hold it
     * writable until the reset). */
    struct ring_entry batch[RING_BATCH];
    for (;;) {
        pthread_mutex_lock(&r->lock);
        unsigned n = ring_take(r, batch, RING_BATCH);
        pthread_mutex_unlock(&r->lock);
        if (ring_reset(vm, err) < 0)
            return -1;
        for (unsigned i = 0; i < n; i++) {
            if (ring_entry_page(&vm->mem, &batch[i]) == UINT64_MAX)
                continue;
            const struct guest_memory_region *reg = &vm->mem.regions[batch[i].slot];
            vmm_dirty_mark(&vm->dirty, reg->gpa + (batch[i].offset << DIRTYLOG_PAGE_SHIFT), 1);
        }
        if (n < RING_BATCH)
            return 0;
    }
}

/* A VM's rings hang off its vCPUs, which vm_create sets up when asked to
 * (run_options.dirty_ring_entries); vm.h defines VM_DIRTY_RING when its
 * structs carry them (docs/dirtylog.md). */
#ifdef VM_DIRTY_RING

/* Every vCPU's ring into `bits`, then KVM's reset (which write-protects
 * those pages again). Returns the entries taken, or -1. */
static int64_t ring_collect(struct dirtylog *d, uint64_t *bits, struct tern_err *err)
{
    struct vm *vm = d->vm;
    struct ring_entry batch[RING_BATCH];
    uint64_t total = 0;
    for (unsigned i = 0; i < vm->nr_vcpus; i++) {
        struct dirtylog_ring *r = &vm->vcpus[i].ring;
        unsigned n;
        pthread_mutex_lock(&r->lock);
        do {
            n = ring_take(r, batch, RING_BATCH);
            for (unsigned k = 0; k < n; k++) {
                uint64_t page = ring_entry_page(&vm->mem, &batch[k]);
                if (page != UINT64_MAX)
                    dirtylog_bitmap_set(bits, page);
            }
            total += n;
        } while (n == RING_BATCH);
        pthread_mutex_unlock(&r->lock);
    }
    /* Before returning: the caller reads these pages only after this. */
    if (total && ring_reset(vm, err) < 0)
        return -1;
    return (int64_t)total;
}

static int ring_start(struct dirtylog *d, struct tern_err *err)
{
    struct vm *vm = d->vm;
    if (!vm->dirty_ring_entries)
        return tern_err_set(err, "this VM was created without KVM's dirty ring "
                            "(run_options.dirty_ring_entries): use the dirty bitmap");
    /* Entries left from an earlier session: not needed, round 0 reads all. */
    if (ring_collect(d, d->scratch, err) < 0)
        return -1;
    if (vm_set_slot_flags(vm, KVM_MEM_LOG_DIRTY_PAGES, err) < 0) {
        struct tern_err ignored;
        vm_set_slot_flags(vm, 0, &ignored);
        return tern_err_prefix(err, "starting dirty page logging");
    }
    return 0;
}

#else

static int64_t ring_collect(struct dirtylog *d, uint64_t *bits, struct tern_err *err)
{
    (void)d;
    (void)bits;
    return tern_err_set(err, "this build's VMs have no dirty ring");
}

static int ring_start(struct dirtylog *d, struct tern_err *err)
{
    (void)d;
    return tern_err_set(err, "this build's VMs have no KVM dirty ring (vm_create cannot "
                        "enable it yet): use the dirty bitmap");
}

#endif

/* --- the interface --- */

static void dirtylog_free(struct dirtylog *d)
{
    free(d->scratch);
    free(d->vmm_new);
    free(d->pending);
    free(d->reported);
    free(d);
}

int dirtylog_start(struct dirtylog **out, struct vm *vm, enum dirtylog_mode mode,
                   struct tern_err *err)
{
    *out = NULL;
    if (mode != DIRTYLOG_BITMAP && mode != DIRTYLOG_RING)
        return tern_err_set(err, "unknown dirty log mode %d", (int)mode);
    if (check_layout(&vm->mem, err) < 0)
        return -1;
    struct dirtylog *d = calloc(1, sizeof(*d));
    if (!d)
        return tern_err_set(err, "out of memory for the dirty log");
    d->vm = vm;
    d->mode = mode;
    d->nr_pages = vm->mem.size >> DIRTYLOG_PAGE_SHIFT;
    d->nr_words = dirtylog_bitmap_words(d->nr_pages);
    d->scratch = calloc(d->nr_words, sizeof(uint64_t));
    d->vmm_new = calloc(d->nr_words, sizeof(uint64_t));
    d->pending = calloc(d->nr_words, sizeof(uint64_t));
    d->reported = calloc(d->nr_words, sizeof(uint64_t));
    if (!d->scratch || !d->vmm_new || !d->pending || !d->reported) {
        tern_err_set(err, "out of memory for dirty bitmaps of %llu pages",
                     (unsigned long long)d->nr_pages);
        dirtylog_free(d);
        return -1;
    }
    if ((mode == DIRTYLOG_BITMAP ? bitmap_start(d, err) : ring_start(d, err)) < 0) {
        dirtylog_free(d);
        return -1;
    }
    /* Device writes from before: round 0 reads every page after this. */
    vmm_dirty_collect(&vm->dirty, d->scratch, 0, d->nr_words);
    memset(d->scratch, 0, d->nr_words * sizeof(uint64_t));
    *out = d;
    return 0;
}

int64_t dirtylog_collect(struct dirtylog *d, uint64_t *bitmap, struct tern_err *err)
{
    uint64_t t0 = now_ns();
    const uint64_t bytes = d->nr_words * sizeof(uint64_t);
    memset(d->vmm_new, 0, bytes);
    if (d->mode == DIRTYLOG_BITMAP) {
        /* KVM writes every word: the slots tile the RAM index space. */
        if (bitmap_collect(d, err) < 0)
            return -1;
    } else {
        memset(d->scratch, 0, bytes);
        if (ring_collect(d, d->scratch, err) < 0)
            return -1;
    }
    /* Device marks after KVM's pages: a mark is made after its write (and
     * a full ring is drained into them before KVM's reset), so everything
     * here was written before the caller reads it. */
    vmm_dirty_collect(&d->vm->dirty, d->vmm_new, 0, d->nr_words);
    const bool ring = d->mode == DIRTYLOG_RING;
    uint64_t total = 0, kvm = 0, vmm_only = 0;
    for (uint64_t w = 0; w < d->nr_words; w++) {
        uint64_t k = d->scratch[w], v = d->vmm_new[w];
        if (!(k | v | d->pending[w]))
            continue;
        kvm += (uint64_t)__builtin_popcountll(k);
        vmm_only += (uint64_t)__builtin_popcountll(v & ~k);
        /* KVM's bitmap remembers its pages until cleared; the ring and the
         * device marks do not, so they wait in `pending`. */
        d->pending[w] |= v | (ring ? k : 0);
        uint64_t all = k | d->pending[w];
        total += (uint64_t)__builtin_popcountll(all);
        d->reported[w] |= all;
        bitmap[w] |= all;
    }
    d->stats.collects++;
    d->stats.kvm_pages += kvm;
    d->stats.vmm_pages += vmm_only;
    d->stats.collect_ns += now_ns() - t0;
    return (int64_t)total;
}

int dirtylog_clear(struct dirtylog *d, uint64_t first_page, uint64_t npages, struct tern_err *err)
{
    if (npages == 0)
        return 0;
    uint64_t t0 = now_ns();
    struct dirtylog_slot_range r[GUEST_MEMORY_MAX_REGIONS];
    int n = dirtylog_slot_ranges(&d->vm->mem, first_page, npages, r, GUEST_MEMORY_MAX_REGIONS,
                                 err);
    if (n < 0)
        return -1;
    /* The ring re-armed its pages when they were collected. */
    for (int i = 0; i < n && d->mode == DIRTYLOG_BITMAP; i++)
        if (bitmap_clear(d, &r[i], err) < 0)
            return -1;
    dirtylog_bitmap_clear_range(d->pending, first_page, npages);
    dirtylog_bitmap_clear_range(d->reported, first_page, npages);
    d->stats.clears++;
    d->stats.clear_ns += now_ns() - t0;
    return 0;
}

void dirtylog_report_all(struct dirtylog *d, uint64_t *bitmap)
{
    dirtylog_bitmap_set_range(d->reported, 0, d->nr_pages);
    dirtylog_bitmap_set_range(bitmap, 0, d->nr_pages);
}

void dirtylog_report_pages(struct dirtylog *d, const uint64_t *bitmap)
{
    for (uint64_t w = 0; w < d->nr_words; w++)
        d->reported[w] |= bitmap[w];
    /* Bits beyond the end of RAM in the last word are not pages. */
    if (d->nr_pages % 64)
        d->reported[d->nr_words - 1] &= (1ull << (d->nr_pages % 64)) - 1;
}

void dirtylog_stop(struct dirtylog *d)
{
    if (!d)
        return;
    struct tern_err err;
    int rc = vm_set_slot_flags(d->vm, 0, &err);
    if (rc == 0 && d->mode == DIRTYLOG_BITMAP)
        rc = manual_protect(d->vm, false, &err);
    /* Empty the rings, so that a later session starts clean. */
    if (rc == 0 && d->mode == DIRTYLOG_RING)
        rc = ring_collect(d, d->scratch, &err) < 0 ? -1 : 0;
    if (rc < 0)
        fprintf(stderr, "tern-vmm: stopping dirty page logging: %s\n", err.msg);
    dirtylog_free(d);
}

uint64_t dirtylog_nr_pages(const struct dirtylog *d)
{
    return d->nr_pages;
}

struct dirtylog_stats dirtylog_get_stats(const struct dirtylog *d)
{
    return d->stats;
}
