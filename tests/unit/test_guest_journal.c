/* Unit tests for the test guest's durable journal (tests/guest/journal.c):
 * the record format, and the recovery scan over an in-memory "disk", fed
 * in chunks the way the guest's disk task feeds it from its reads. A
 * journal of N records followed by zeros (or garbage) recovers N; a
 * damaged checksum, a record out of sequence and a hole are each
 * reported at the right block with the right reason; a full disk
 * recovers all its records. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* Plain C with no kernel dependencies: include it whole, as
 * test_guest_pages.c does with pages.c. */
#include "tests/guest/journal.c"

struct disk {
    uint64_t blocks;
    struct tg_jrec *b;
};

static struct disk disk_new(uint64_t blocks)
{
    struct disk d = {blocks, calloc(blocks ? blocks : 1, sizeof(struct tg_jrec))};
    assert_non_null(d.b);
    return d;
}

/* Appends records 1..n, as the guest does (record seq in block seq - 1). */
static void disk_append(struct disk *d, uint64_t n)
{
    for (uint64_t seq = 1; seq <= n; seq++)
        tg_jrec_encode(&d->b[seq - 1], seq);
}

/* Runs the scan as the guest's disk task does: read up to `chunk` blocks
 * from scan.next, feed them one by one while the scan wants more. Counts
 * the blocks read. */
static enum tg_jscan_result recover(const struct disk *d, uint64_t chunk, struct tg_jscan *s,
                                    uint64_t *read)
{
    struct tg_jrec *buf = malloc(chunk * sizeof(*buf));
    assert_non_null(buf);
    *read = 0;
    tg_jscan_init(s, d->blocks);
    for (uint64_t n; (n = tg_jscan_want(s, chunk));) {
        assert_true(n <= chunk);
        assert_true(s->next + n <= d->blocks);
        memcpy(buf, &d->b[s->next], n * sizeof(*buf)); /* the "read" */
        *read += n;
        for (uint64_t k = 0; k < n && s->result == TG_JSCAN_MORE; k++)
            tg_jscan_feed(s, &buf[k]);
    }
    free(buf);
    assert_true(s->result != TG_JSCAN_MORE);
    return s->result;
}

static const uint64_t chunks[] = {1, 2, 3, 7, 32, 1000};
#define NCHUNKS (sizeof(chunks) / sizeof(chunks[0]))

static void expect_done(const struct disk *d, uint64_t records)
{
    for (size_t c = 0; c < NCHUNKS; c++) {
        struct tg_jscan s;
        uint64_t read;
        if (recover(d, chunks[c], &s, &read) != TG_JSCAN_DONE)
            fail_msg("chunk %lu: result %d block %lu reason %s", (unsigned long)chunks[c],
                     s.result, (unsigned long)s.bad_block, s.reason);
        assert_int_equal(s.records, records);
        /* Never reads past the end of the disk; with one-block reads it
         * reads the records, the end block and the one after it. */
        assert_true(read <= d->blocks);
        if (chunks[c] == 1) {
            uint64_t want = records + 2 < d->blocks ? records + 2 : d->blocks;
            assert_int_equal(read, want);
        }
    }
}

static void expect_bad(const struct disk *d, uint64_t block, const char *reason)
{
    for (size_t c = 0; c < NCHUNKS; c++) {
        struct tg_jscan s;
        uint64_t read;
        assert_int_equal(recover(d, chunks[c], &s, &read), TG_JSCAN_BAD);
        assert_int_equal(s.bad_block, block);
        assert_string_equal(s.reason, reason);
    }
}

/* --- the record format --- */

static void test_record_encodes_and_validates(void **state)
{
    (void)state;
    struct tg_jrec r;
    for (uint64_t seq = 1; seq < 100; seq++) {
        tg_jrec_encode(&r, seq);
        assert_int_equal(r.magic, TG_JREC_MAGIC);
        assert_int_equal(r.seq, seq);
        assert_int_equal(r.csum, tg_jrec_checksum(&r));
        assert_int_equal(tg_jrec_check(&r, seq - 1), TG_JREC_OK);
    }
    /* The magic reads "TGJOURN1" on disk (little-endian). */
    assert_memory_equal(&r.magic, "TGJOURN1", 8);
    assert_string_equal(tg_jrec_reason(TG_JREC_OK), "ok");
}

static void test_record_is_deterministic_and_varied(void **state)
{
    (void)state;
    struct tg_jrec a, b, c;
    tg_jrec_encode(&a, 7);
    tg_jrec_encode(&b, 7);
    tg_jrec_encode(&c, 8);
    assert_memory_equal(&a, &b, sizeof(a));
    assert_memory_not_equal(a.payload, c.payload, sizeof(a.payload));
    for (unsigned i = 0; i < TG_JPAYLOAD_WORDS; i++)
        for (unsigned j = i + 1; j < TG_JPAYLOAD_WORDS; j++)
            assert_true(a.payload[i] != a.payload[j]);
}

static void test_zero_and_garbage_blocks_are_the_end(void **state)
{
    (void)state;
    struct tg_jrec r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(tg_jrec_check(&r, 0), TG_JREC_END);
    memset(&r, 0xa5, sizeof(r));
    assert_int_equal(tg_jrec_check(&r, 0), TG_JREC_END);
    tg_jrec_encode(&r, 1);
    r.magic ^= 1; /* a damaged magic reads as no record */
    assert_int_equal(tg_jrec_check(&r, 0), TG_JREC_END);
}

/* Every bit after the magic (seq, csum, payload): flipping it is caught,
 * as a bad checksum. */
static void test_flipped_bit_is_corrupt(void **state)
{
    (void)state;
    struct tg_jrec r;
    uint8_t *bytes = (uint8_t *)&r;
    tg_jrec_encode(&r, 42);
    for (size_t off = offsetof(struct tg_jrec, seq); off < TG_JBLOCK_SIZE; off++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            bytes[off] ^= (uint8_t)(1u << bit);
            enum tg_jrec_status st = tg_jrec_check(&r, 41);
            bytes[off] ^= (uint8_t)(1u << bit);
            if (st != TG_JREC_CORRUPT)
                fail_msg("flip at byte %zu bit %u not detected (status %d)", off, bit, st);
        }
    }
    assert_int_equal(tg_jrec_check(&r, 41), TG_JREC_OK);
    assert_string_equal(tg_jrec_reason(TG_JREC_CORRUPT), "checksum");
}

static void test_record_at_wrong_block_is_out_of_sequence(void **state)
{
    (void)state;
    struct tg_jrec r;
    tg_jrec_encode(&r, 5);
    assert_int_equal(tg_jrec_check(&r, 4), TG_JREC_OK);
    assert_int_equal(tg_jrec_check(&r, 5), TG_JREC_SEQUENCE);
    assert_int_equal(tg_jrec_check(&r, 3), TG_JREC_SEQUENCE);
    assert_string_equal(tg_jrec_reason(TG_JREC_SEQUENCE), "sequence");
    /* A damaged record at the wrong block: the checksum is reported. */
    r.payload[0] ^= 1;
    assert_int_equal(tg_jrec_check(&r, 5), TG_JREC_CORRUPT);
}

static void test_blocks_from_sectors(void **state)
{
    (void)state;
    assert_int_equal(tg_journal_blocks(0), 0);
    assert_int_equal(tg_journal_blocks(7), 0);
    assert_int_equal(tg_journal_blocks(8), 1);
    assert_int_equal(tg_journal_blocks(2048 + 5), 256); /* partial last block unused */
}

/* --- recovery --- */

static void test_good_records_then_zeros(void **state)
{
    (void)state;
    static const uint64_t counts[] = {0, 1, 2, 5, 31, 32, 33, 63, 64, 65, 100};
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        struct disk d = disk_new(128);
        disk_append(&d, counts[i]);
        expect_done(&d, counts[i]);
        free(d.b);
    }
}

/* Whatever follows the end without the record magic (an old file system,
 * random bytes) is not looked at. */
static void test_good_records_then_garbage(void **state)
{
    (void)state;
    struct disk d = disk_new(64);
    disk_append(&d, 10);
    memset(&d.b[10], 0x5a, 54 * sizeof(struct tg_jrec));
    expect_done(&d, 10);
    free(d.b);
}

static void test_corrupt_checksum_is_bad(void **state)
{
    (void)state;
    static const uint64_t at[] = {0, 1, 17, 31, 32, 49};
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        struct disk d = disk_new(64);
        disk_append(&d, 50);
        d.b[at[i]].payload[123] ^= 0x10; /* as `dd` of a few bytes would */
        expect_bad(&d, at[i], TG_JREASON_CHECKSUM);
        free(d.b);
    }
    /* A damaged last record too: it had been flushed (the next write waits
     * for that), so it must be intact. */
    struct disk d = disk_new(64);
    disk_append(&d, 50);
    d.b[49].seq ^= 4;
    expect_bad(&d, 49, TG_JREASON_CHECKSUM);
    free(d.b);
}

static void test_wrong_sequence_is_bad(void **state)
{
    (void)state;
    /* Two records swapped. */
    struct disk d = disk_new(64);
    disk_append(&d, 40);
    struct tg_jrec t = d.b[10];
    d.b[10] = d.b[11];
    d.b[11] = t;
    expect_bad(&d, 10, TG_JREASON_SEQUENCE);

    /* A record repeated (an old write delivered twice). */
    disk_append(&d, 40);
    d.b[20] = d.b[19];
    expect_bad(&d, 20, TG_JREASON_SEQUENCE);

    /* A journal that does not start at 1. */
    disk_append(&d, 40);
    for (uint64_t b = 0; b < 40; b++)
        tg_jrec_encode(&d.b[b], b + 2);
    expect_bad(&d, 0, TG_JREASON_SEQUENCE);
    free(d.b);
}

/* A block without the magic followed by a record: the hole is a damaged
 * block (records are only written after the one before is durable), not
 * the end of the journal. */
static void test_hole_is_bad(void **state)
{
    (void)state;
    static const uint64_t at[] = {0, 5, 31, 32, 38};
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        struct disk d = disk_new(64);
        disk_append(&d, 40);
        memset(&d.b[at[i]], 0, sizeof(struct tg_jrec));
        expect_bad(&d, at[i], TG_JREASON_GAP);
        free(d.b);
    }
    /* A damaged record after the end counts as a record too. */
    struct disk d = disk_new(64);
    disk_append(&d, 40);
    d.b[30].magic = 0;
    d.b[31].payload[0] ^= 1;
    expect_bad(&d, 30, TG_JREASON_GAP);
    free(d.b);
}

static void test_full_disk(void **state)
{
    (void)state;
    for (uint64_t blocks = 1; blocks <= 66; blocks++) {
        struct disk d = disk_new(blocks);
        disk_append(&d, blocks);
        expect_done(&d, blocks);
        /* One short of full: the end is the last block, nothing after. */
        memset(&d.b[blocks - 1], 0, sizeof(struct tg_jrec));
        expect_done(&d, blocks - 1);
        /* The last block damaged. */
        disk_append(&d, blocks);
        d.b[blocks - 1].payload[7] ^= 0x80;
        expect_bad(&d, blocks - 1, TG_JREASON_CHECKSUM);
        free(d.b);
    }
}

static void test_empty_disk(void **state)
{
    (void)state;
    struct tg_jscan s;
    tg_jscan_init(&s, 0);
    assert_int_equal(s.result, TG_JSCAN_DONE);
    assert_int_equal(tg_jscan_want(&s, 32), 0);
    assert_int_equal(s.records, 0);

    struct disk d = disk_new(1);
    expect_done(&d, 0);
    free(d.b);
}

/* After DONE or BAD the scan takes nothing more. */
static void test_finished_scan_ignores_more_blocks(void **state)
{
    (void)state;
    struct disk d = disk_new(8);
    struct tg_jscan s;
    uint64_t read;
    disk_append(&d, 3);
    assert_int_equal(recover(&d, 8, &s, &read), TG_JSCAN_DONE);
    assert_int_equal(tg_jscan_feed(&s, &d.b[0]), TG_JSCAN_DONE);
    assert_int_equal(s.records, 3);
    assert_int_equal(tg_jscan_want(&s, 8), 0);
    free(d.b);
}

/* The guest's life: boots, appends, "crashes" (its last write may or may
 * not have landed), boots again and carries on from what it recovers. */
static void test_recover_append_recover(void **state)
{
    (void)state;
    struct disk d = disk_new(200);
    struct tg_jscan s;
    uint64_t read, seq = 0;

    for (int boot = 0; boot < 5; boot++) {
        assert_int_equal(recover(&d, 32, &s, &read), TG_JSCAN_DONE);
        assert_int_equal(s.records, seq);
        for (int i = 0; i < 30; i++, seq++)
            tg_jrec_encode(&d.b[seq], seq + 1);
        if (boot & 1) { /* the last write, not yet flushed, was lost */
            memset(&d.b[seq - 1], 0, sizeof(struct tg_jrec));
            seq--;
        }
    }
    assert_int_equal(recover(&d, 7, &s, &read), TG_JSCAN_DONE);
    assert_int_equal(s.records, seq);
    free(d.b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_encodes_and_validates),
        cmocka_unit_test(test_record_is_deterministic_and_varied),
        cmocka_unit_test(test_zero_and_garbage_blocks_are_the_end),
        cmocka_unit_test(test_flipped_bit_is_corrupt),
        cmocka_unit_test(test_record_at_wrong_block_is_out_of_sequence),
        cmocka_unit_test(test_blocks_from_sectors),
        cmocka_unit_test(test_good_records_then_zeros),
        cmocka_unit_test(test_good_records_then_garbage),
        cmocka_unit_test(test_corrupt_checksum_is_bad),
        cmocka_unit_test(test_wrong_sequence_is_bad),
        cmocka_unit_test(test_hole_is_bad),
        cmocka_unit_test(test_full_disk),
        cmocka_unit_test(test_empty_disk),
        cmocka_unit_test(test_finished_scan_ignores_more_blocks),
        cmocka_unit_test(test_recover_append_recover),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
