/* Unit tests for the test guest's self-describing page format
 * (tests/guest/pages.c): the same code the guest runs, built for the host.
 * A fresh page verifies; a flipped byte anywhere, a page at the wrong
 * frame and an out-of-date generation are each detected, with the right
 * reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* The guest's page code is plain C with no kernel dependencies: include it
 * whole rather than link the freestanding guest objects. */
#include "tests/guest/pages.c"

#define FRAME 0x1234
#define SEED 42

static struct tg_page *fresh(uint64_t frame, uint64_t seed)
{
    struct tg_page *p = aligned_alloc(TG_PAGE_SIZE, sizeof(*p));
    assert_non_null(p);
    tg_page_init(p, frame, seed);
    return p;
}

static void test_fresh_page_verifies(void **state)
{
    (void)state;
    for (uint64_t frame = 0x1000; frame < 0x1000 + 64; frame++) {
        struct tg_page *p = fresh(frame, SEED);
        assert_int_equal(p->frame, frame);
        assert_int_equal(p->gen, 1);
        assert_int_equal(tg_page_verify(p, frame, 1), TG_PAGE_OK);
        assert_string_equal(tg_page_reason(TG_PAGE_OK), "ok");
        free(p);
    }
}

/* Same inputs, same page; other frame or seed, other payload. */
static void test_init_is_deterministic_and_varied(void **state)
{
    (void)state;
    struct tg_page *a = fresh(FRAME, SEED), *b = fresh(FRAME, SEED);
    struct tg_page *c = fresh(FRAME + 1, SEED), *d = fresh(FRAME, SEED + 1);

    assert_memory_equal(a, b, sizeof(*a));
    assert_memory_not_equal(a->payload, c->payload, sizeof(a->payload));
    assert_memory_not_equal(a->payload, d->payload, sizeof(a->payload));
    free(a);
    free(b);
    free(c);
    free(d);
}

/* The payload should not compress: no repeated words within a page. */
static void test_payload_is_not_repetitive(void **state)
{
    (void)state;
    struct tg_page *p = fresh(FRAME, SEED);
    for (unsigned i = 0; i < TG_PAYLOAD_WORDS; i++)
        for (unsigned j = i + 1; j < TG_PAYLOAD_WORDS; j++)
            assert_true(p->payload[i] != p->payload[j]);
    free(p);
}

/* Every bit of every byte after the frame field (gen, csum, payload):
 * flipping it makes the page corrupt. */
static void test_flipped_bit_is_corrupt(void **state)
{
    (void)state;
    struct tg_page *p = fresh(FRAME, SEED);
    uint8_t *bytes = (uint8_t *)p;

    for (size_t off = offsetof(struct tg_page, gen); off < TG_PAGE_SIZE; off++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            bytes[off] ^= (uint8_t)(1u << bit);
            enum tg_page_status st = tg_page_verify(p, FRAME, (uint32_t)p->gen);
            bytes[off] ^= (uint8_t)(1u << bit);
            if (st != TG_PAGE_CORRUPT)
                fail_msg("flip at byte %zu bit %u not detected (status %d)", off, bit, st);
        }
    }
    assert_int_equal(tg_page_verify(p, FRAME, 1), TG_PAGE_OK);
    assert_string_equal(tg_page_reason(TG_PAGE_CORRUPT), "corrupt");
    free(p);
}

/* Reordered content (two payload words swapped) is corrupt too. */
static void test_swapped_words_are_corrupt(void **state)
{
    (void)state;
    struct tg_page *p = fresh(FRAME, SEED);
    uint64_t t = p->payload[3];
    p->payload[3] = p->payload[7];
    p->payload[7] = t;
    assert_int_equal(tg_page_verify(p, FRAME, 1), TG_PAGE_CORRUPT);
    free(p);
}

/* A page that is intact but sits at another frame (e.g. copied to the wrong
 * place by a migration) is misplaced, and that is reported first. */
static void test_wrong_frame_is_misplaced(void **state)
{
    (void)state;
    struct tg_page *p = fresh(FRAME, SEED);
    assert_int_equal(tg_page_verify(p, FRAME + 1, 1), TG_PAGE_MISPLACED);
    assert_int_equal(tg_page_verify(p, FRAME - 1, 7), TG_PAGE_MISPLACED);
    p->frame ^= 0x100; /* a corrupted frame field reads as misplaced too */
    assert_int_equal(tg_page_verify(p, FRAME, 1), TG_PAGE_MISPLACED);
    assert_string_equal(tg_page_reason(TG_PAGE_MISPLACED), "misplaced");
    free(p);
}

/* A page write bumps the generation, keeps the page valid, and changes at
 * most TG_DIRTY_WORDS consecutive payload words. */
static void test_dirty_keeps_page_valid(void **state)
{
    (void)state;
    struct tg_page *p = fresh(FRAME, SEED), *before = fresh(FRAME, SEED);
    uint64_t rng = tg_rng_seed(SEED, 1);

    for (uint64_t gen = 2; gen < 200; gen++) {
        memcpy(before, p, sizeof(*p));
        assert_int_equal(tg_page_dirty(p, &rng), gen);
        assert_int_equal(p->gen, gen);
        assert_int_equal(tg_page_verify(p, FRAME, (uint32_t)gen), TG_PAGE_OK);
        int first = -1, last = -1;
        for (int i = 0; i < TG_PAYLOAD_WORDS; i++) {
            if (p->payload[i] != before->payload[i]) {
                if (first < 0)
                    first = i;
                last = i;
            }
        }
        assert_true(first >= 0);
        assert_true(last - first < TG_DIRTY_WORDS);
    }
    free(p);
    free(before);
}

/* Stale: the page is intact but is not the generation last written, as
 * when a migration delivered an old copy, or missed the latest write. */
static void test_old_generation_is_stale(void **state)
{
    (void)state;
    struct tg_page *p = fresh(FRAME, SEED), *old = fresh(FRAME, SEED);
    uint64_t rng = tg_rng_seed(SEED, 2);

    uint32_t want = (uint32_t)tg_page_dirty(p, &rng);
    assert_int_equal(tg_page_verify(p, FRAME, want), TG_PAGE_OK);
    assert_int_equal(tg_page_verify(old, FRAME, want), TG_PAGE_STALE); /* old copy */
    assert_int_equal(tg_page_verify(p, FRAME, want + 1), TG_PAGE_STALE); /* lost write */
    assert_string_equal(tg_page_reason(TG_PAGE_STALE), "stale");
    free(p);
    free(old);
}

/* Corruption is reported before staleness: a damaged page with an old
 * generation says corrupt. */
static void test_corrupt_wins_over_stale(void **state)
{
    (void)state;
    struct tg_page *p = fresh(FRAME, SEED);
    p->payload[100] ^= 1;
    assert_int_equal(tg_page_verify(p, FRAME, 5), TG_PAGE_CORRUPT);
    free(p);
}

/* The generation table holds 32 bits: comparison is on the low 32 bits, so
 * wrap-around does not read as stale. */
static void test_generation_compared_on_low_32_bits(void **state)
{
    (void)state;
    struct tg_page *p = fresh(FRAME, SEED);
    p->gen = 0x100000005ull;
    p->csum = tg_page_checksum(p);
    assert_int_equal(tg_page_verify(p, FRAME, 5), TG_PAGE_OK);
    assert_int_equal(tg_page_verify(p, FRAME, 4), TG_PAGE_STALE);
    free(p);
}

static void test_rng_seed_never_zero(void **state)
{
    (void)state;
    for (uint64_t a = 0; a < 1000; a++) {
        uint64_t s = tg_rng_seed(a, a * 7);
        assert_true(s != 0);
        tg_rng_next(&s);
        assert_true(s != 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_page_verifies),
        cmocka_unit_test(test_init_is_deterministic_and_varied),
        cmocka_unit_test(test_payload_is_not_repetitive),
        cmocka_unit_test(test_flipped_bit_is_corrupt),
        cmocka_unit_test(test_swapped_words_are_corrupt),
        cmocka_unit_test(test_wrong_frame_is_misplaced),
        cmocka_unit_test(test_dirty_keeps_page_valid),
        cmocka_unit_test(test_old_generation_is_stale),
        cmocka_unit_test(test_corrupt_wins_over_stale),
        cmocka_unit_test(test_generation_compared_on_low_32_bits),
        cmocka_unit_test(test_rng_seed_never_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
