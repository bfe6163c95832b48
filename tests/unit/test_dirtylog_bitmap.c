/* Unit tests for the pure parts of dirtylog/: the bitmap helpers the
 * migration engine walks dirty pages with (checked against a bit-by-bit
 * reference on random bitmaps and every range edge), the split of a RAM
 * page range into KVM slot ranges with KVM_CLEAR_DIRTY_LOG's alignment
 * rules, and the dirty-rate estimate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dirtylog/dirty_rate.h"
#include "dirtylog/dirtylog.h"
#include "node-vmm/guest_memory.h"

#define NBITS 1000 /* not a multiple of 64: the last word is partial */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* A random bitmap of NBITS bits with the given density of set bits
 * (per 256), and words beyond NBITS holding garbage the helpers must not
 * look at when told to stop at NBITS. */
static void random_bitmap(uint64_t *bm, unsigned density)
{
    for (unsigned w = 0; w < dirtylog_bitmap_words(NBITS) + 1; w++)
        bm[w] = 0;
    for (unsigned i = 0; i < NBITS; i++)
        if ((rng() & 255) < density)
            dirtylog_bitmap_set(bm, i);
    bm[dirtylog_bitmap_words(NBITS)] = ~0ull; /* beyond the end */
}

static uint64_t ref_count(const uint64_t *bm, uint64_t first, uint64_t n)
{
    uint64_t c = 0;
    for (uint64_t i = first; i < first + n; i++)
        c += dirtylog_bitmap_test(bm, i);
    return c;
}

static uint64_t ref_next(const uint64_t *bm, uint64_t from, uint64_t end, bool want)
{
    for (uint64_t i = from; i < end; i++)
        if (dirtylog_bitmap_test(bm, i) == want)
            return i;
    return end;
}

/* Range edges worth trying: word boundaries and their neighbours. */
static const uint64_t edges[] = {0, 1, 2, 31, 62, 63, 64, 65, 127, 128, 129, 191, 500,
                                 959, 960, 961, 998, 999, 1000};
#define NEDGES (sizeof(edges) / sizeof(edges[0]))

static void test_words(void **state)
{
    (void)state;
    assert_int_equal(dirtylog_bitmap_words(0), 0);
    assert_int_equal(dirtylog_bitmap_words(1), 1);
    assert_int_equal(dirtylog_bitmap_words(64), 1);
    assert_int_equal(dirtylog_bitmap_words(65), 2);
    assert_int_equal(dirtylog_bitmap_words(262144), 4096); /* 1 GiB of pages */
}

static void test_count_matches_reference(void **state)
{
    (void)state;
    uint64_t bm[20];
    static const unsigned densities[] = {0, 3, 128, 250, 256};
    for (unsigned d = 0; d < 5; d++) {
        random_bitmap(bm, densities[d]);
        for (unsigned a = 0; a < NEDGES; a++)
            for (unsigned b = a; b < NEDGES; b++)
                assert_int_equal(dirtylog_bitmap_count(bm, edges[a], edges[b] - edges[a]),
                                 ref_count(bm, edges[a], edges[b] - edges[a]));
    }
    random_bitmap(bm, 256);
    assert_int_equal(dirtylog_bitmap_count(bm, 0, NBITS), NBITS);
    assert_int_equal(dirtylog_bitmap_count(bm, 5, 0), 0);
}

static void test_next_set_and_clear_match_reference(void **state)
{
    (void)state;
    uint64_t bm[20];
    static const unsigned densities[] = {0, 1, 20, 128, 255, 256};
    for (unsigned d = 0; d < 6; d++) {
        random_bitmap(bm, densities[d]);
        for (unsigned a = 0; a < NEDGES; a++)
            for (unsigned b = 0; b < NEDGES; b++) {
                uint64_t from = edges[a], end = edges[b];
                if (from > end) {
                    /* from past end: nothing to find. */
                    assert_int_equal(dirtylog_bitmap_next_set(bm, from, end), end);
                    continue;
                }
                assert_int_equal(dirtylog_bitmap_next_set(bm, from, end),
                                 ref_next(bm, from, end, true));
                assert_int_equal(dirtylog_bitmap_next_clear(bm, from, end),
                                 ref_next(bm, from, end, false));
            }
    }
}

/* The engine's loop visits exactly the set bits, in order. */
static void test_iterate_set_bits(void **state)
{
    (void)state;
    uint64_t bm[20];
    for (int round = 0; round < 50; round++) {
        random_bitmap(bm, (unsigned)(rng() % 257));
        uint64_t from = rng() % NBITS, end = from + rng() % (NBITS - from + 1);
        uint64_t seen = 0, last = 0;
        bool any = false;
        for (uint64_t i = dirtylog_bitmap_next_set(bm, from, end); i < end;
             i = dirtylog_bitmap_next_set(bm, i + 1, end)) {
            assert_true(dirtylog_bitmap_test(bm, i));
            assert_true(!any || i > last);
            last = i;
            any = true;
            seen++;
        }
        assert_int_equal(seen, ref_count(bm, from, end - from));
        /* Runs: next_set then next_clear covers the same bits. */
        uint64_t in_runs = 0;
        for (uint64_t i = dirtylog_bitmap_next_set(bm, from, end); i < end;) {
            uint64_t stop = dirtylog_bitmap_next_clear(bm, i, end);
            assert_true(stop > i);
            in_runs += stop - i;
            i = dirtylog_bitmap_next_set(bm, stop, end);
        }
        assert_int_equal(in_runs, seen);
    }
}

static void test_clear_and_set_range(void **state)
{
    (void)state;
    uint64_t bm[20], ref[20];
    for (unsigned a = 0; a < NEDGES; a++)
        for (unsigned b = a; b < NEDGES; b++) {
            for (int set = 0; set < 2; set++) {
                random_bitmap(bm, 128);
                memcpy(ref, bm, sizeof(bm));
                uint64_t first = edges[a], n = edges[b] - edges[a];
                for (uint64_t i = first; i < first + n; i++) {
                    if (set)
                        dirtylog_bitmap_set(ref, i);
                    else
                        ref[i / 64] &= ~(1ull << (i % 64));
                }
                if (set)
                    dirtylog_bitmap_set_range(bm, first, n);
                else
                    dirtylog_bitmap_clear_range(bm, first, n);
                /* Bits outside the range, and the word beyond, untouched. */
                assert_memory_equal(bm, ref, sizeof(bm));
            }
        }
}

/* --- slot ranges --- */

static struct guest_memory layout(uint64_t bytes)
{
    struct guest_memory gm;
    struct tern_err err;
    if (guest_memory_layout(&gm, bytes, &err) < 0)
        fail_msg("%s", err.msg);
    return gm;
}

#define GiB (1ull << 30)
#define PAGES(bytes) ((bytes) >> 12)

static void test_slot_ranges_one_slot(void **state)
{
    (void)state;
    struct guest_memory gm = layout(128ull << 20); /* 32768 pages, slot 0 only */
    struct dirtylog_slot_range r[2];
    struct tern_err err;
    assert_int_equal(dirtylog_slot_ranges(&gm, 0, 32768, r, 2, &err), 1);
    assert_int_equal(r[0].slot, 0);
    assert_int_equal(r[0].first, 0);
    assert_int_equal(r[0].npages, 32768);
    assert_int_equal(dirtylog_slot_ranges(&gm, 64, 128, r, 2, &err), 1);
    assert_int_equal(r[0].first, 64);
    assert_int_equal(r[0].npages, 128);
    assert_int_equal(dirtylog_slot_ranges(&gm, 100, 0, r, 2, &err), -1); /* misaligned start */
    assert_int_equal(dirtylog_slot_ranges(&gm, 0, 0, r, 2, &err), 0);

    assert_int_equal(dirtylog_slot_ranges(&gm, 1, 64, r, 2, &err), -1);
    assert_string_equal(err.msg, "dirty log range starts at page 1, not a multiple of 64");
    assert_int_equal(dirtylog_slot_ranges(&gm, 0, 65, r, 2, &err), -1);
    assert_string_equal(err.msg, "dirty log range [0, +65): the length must be a multiple of 64 "
                                 "pages unless the range ends at the end of RAM");
    assert_int_equal(dirtylog_slot_ranges(&gm, 32704, 128, r, 2, &err), -1);
    assert_string_equal(err.msg,
                        "dirty log range [32704, +128) is outside guest RAM (32768 pages)");
    /* A huge length must not wrap around. */
    assert_int_equal(dirtylog_slot_ranges(&gm, 64, UINT64_MAX - 10, r, 2, &err), -1);
}

/* RAM whose page count is not a multiple of 64: only a range reaching
 * the end may have an odd length. */
static void test_slot_ranges_odd_end(void **state)
{
    (void)state;
    struct guest_memory gm = layout((64ull << 20) + 3 * 4096); /* 16387 pages */
    struct dirtylog_slot_range r[2];
    struct tern_err err;
    assert_int_equal(dirtylog_slot_ranges(&gm, 16384, 3, r, 2, &err), 1);
    assert_int_equal(r[0].first, 16384);
    assert_int_equal(r[0].npages, 3);
    assert_int_equal(dirtylog_slot_ranges(&gm, 0, 16387, r, 2, &err), 1);
    assert_int_equal(dirtylog_slot_ranges(&gm, 16320, 64, r, 2, &err), 1);
    assert_int_equal(dirtylog_slot_ranges(&gm, 16320, 66, r, 2, &err), -1);
}

/* Above 3 GiB RAM continues at 4 GiB in slot 1; the RAM index space has no
 * hole, so page 3 GiB / 4 KiB is slot 1's page 0. */
static void test_slot_ranges_two_slots(void **state)
{
    (void)state;
    uint64_t size = 3 * GiB + (64ull << 20) + 4096; /* slot 1: 16385 pages */
    struct guest_memory gm = layout(size);
    assert_int_equal(gm.nr_regions, 2);
    const uint64_t low = PAGES(3 * GiB), total = PAGES(size);
    struct dirtylog_slot_range r[2];
    struct tern_err err;

    /* Across the boundary. */
    assert_int_equal(dirtylog_slot_ranges(&gm, low - 64, 192, r, 2, &err), 2);
    assert_int_equal(r[0].slot, 0);
    assert_int_equal(r[0].first, low - 64);
    assert_int_equal(r[0].npages, 64);
    assert_int_equal(r[1].slot, 1);
    assert_int_equal(r[1].first, 0);
    assert_int_equal(r[1].npages, 128);

    /* Wholly in slot 1, to its odd end. */
    assert_int_equal(dirtylog_slot_ranges(&gm, low + 16384, 1, r, 2, &err), 1);
    assert_int_equal(r[0].slot, 1);
    assert_int_equal(r[0].first, 16384);
    assert_int_equal(r[0].npages, 1);

    /* Everything. */
    assert_int_equal(dirtylog_slot_ranges(&gm, 0, total, r, 2, &err), 2);
    assert_int_equal(r[0].npages, low);
    assert_int_equal(r[1].npages, total - low);

    /* Ending exactly at the end of slot 0. */
    assert_int_equal(dirtylog_slot_ranges(&gm, 0, low, r, 2, &err), 1);
    assert_int_equal(r[0].slot, 0);

    /* Room for only one piece. */
    assert_int_equal(dirtylog_slot_ranges(&gm, low - 64, 192, r, 1, &err), -1);
    assert_string_equal(err.msg, "dirty log range spans more than 1 slots");
}

/* --- dirty rate --- */

static void test_dirty_rate_first_sample_and_units(void **state)
{
    (void)state;
    struct dirty_rate r;
    dirty_rate_init(&r, 1.0);
    assert_true(dirty_rate_pages_per_s(&r) == 0);
    /* 4883 pages in 0.5 s: 9766 pages/s, 40 MB/s. */
    double v = dirty_rate_add(&r, 4883, 0.5);
    assert_true(v == 9766.0);
    assert_true(dirty_rate_bytes_per_s(&r) == 9766.0 * 4096);
    double mb = dirty_rate_mb_per_s(&r);
    assert_true(mb > 40.0 && mb < 40.01);
    assert_int_equal(r.samples, 1);
}

static void test_dirty_rate_smoothing(void **state)
{
    (void)state;
    struct dirty_rate r;
    dirty_rate_init(&r, 1.0);
    dirty_rate_add(&r, 1000, 1.0); /* 1000/s */
    /* One second at 3000/s, with tau 1 s: halfway. */
    assert_true(dirty_rate_add(&r, 3000, 1.0) == 2000.0);
    assert_true(r.last_pages_per_s == 3000.0);
    /* A short interval moves it little, a long one nearly all the way. */
    double before = r.pages_per_s;
    double after = dirty_rate_add(&r, 0, 0.01);
    assert_true(after < before && after > before * 0.98);
    after = dirty_rate_add(&r, 500000, 100.0);
    assert_true(after > 4900 && after < 5000);
    /* Converges on a steady rate, from either side. */
    for (int i = 0; i < 200; i++)
        dirty_rate_add(&r, 70, 0.1);
    assert_true(r.pages_per_s > 699.9 && r.pages_per_s < 700.1);
    /* Two half-length samples weigh like... roughly one full one. */
    struct dirty_rate a, b;
    dirty_rate_init(&a, 2.0);
    dirty_rate_init(&b, 2.0);
    dirty_rate_add(&a, 100, 1.0);
    dirty_rate_add(&b, 100, 1.0);
    dirty_rate_add(&a, 300, 1.0);
    dirty_rate_add(&b, 150, 0.5);
    dirty_rate_add(&b, 150, 0.5);
    assert_true(a.pages_per_s > 150 && b.pages_per_s > 150);
    assert_true(a.pages_per_s - b.pages_per_s < 30 && b.pages_per_s - a.pages_per_s < 30);
}

static void test_dirty_rate_bad_intervals_and_no_smoothing(void **state)
{
    (void)state;
    struct dirty_rate r;
    dirty_rate_init(&r, 1.0);
    assert_true(dirty_rate_add(&r, 100, 0) == 0);
    assert_true(dirty_rate_add(&r, 100, -1) == 0);
    assert_true(dirty_rate_add(&r, 100, 0.0 / 0.0) == 0);
    assert_int_equal(r.samples, 0);
    dirty_rate_init(&r, 0);
    dirty_rate_add(&r, 100, 1);
    assert_true(dirty_rate_add(&r, 7, 1) == 7.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_words),
        cmocka_unit_test(test_count_matches_reference),
        cmocka_unit_test(test_next_set_and_clear_match_reference),
        cmocka_unit_test(test_iterate_set_bits),
        cmocka_unit_test(test_clear_and_set_range),
        cmocka_unit_test(test_slot_ranges_one_slot),
        cmocka_unit_test(test_slot_ranges_odd_end),
        cmocka_unit_test(test_slot_ranges_two_slots),
        cmocka_unit_test(test_dirty_rate_first_sample_and_units),
        cmocka_unit_test(test_dirty_rate_smoothing),
        cmocka_unit_test(test_dirty_rate_bad_intervals_and_no_smoothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
