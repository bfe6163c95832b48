/* Record framing (proto/record.c), the device dirty bitmap and the MMIO
 * bus. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dirtylog/vmm_dirty.h"
#include "node-vmm/guest_abi.h"
#include "node-vmm/mmio.h"
#include "proto/record.h"

static void build_two_records(struct rec_buf *b)
{
    rec_buf_init(b);
    rec_begin(b, 0x1234, 3, 0);
    rec_put_u8(b, 0xab);
    rec_put_u16(b, 0xbeef);
    rec_put_u32(b, 0xdeadbeef);
    rec_put_u64(b, 0x0123456789abcdefull);
    rec_put_str(b, "hello");
    rec_put_blob(b, "xyz", 3);
    rec_end(b);
    rec_begin(b, 0x99, 1, 7);
    rec_end(b); /* empty payload */
}

static void test_round_trip(void **state)
{
    (void)state;
    struct rec_buf b;
    struct tern_err err;
    build_two_records(&b);
    assert_int_equal(rec_buf_check(&b, &err), 0);
    struct rec_reader r, p;
    struct rec_header h;
    rec_reader_init(&r, b.data, b.len);
    assert_int_equal(rec_next(&r, &h, &p, &err), 1);
    assert_int_equal(h.type, 0x1234);
    assert_int_equal(h.version, 3);
    uint8_t u8;
    uint16_t u16;
    uint32_t u32, n;
    uint64_t u64;
    char s[16], blob[8];
    rec_get_u8(&p, &u8);
    rec_get_u16(&p, &u16);
    rec_get_u32(&p, &u32);
    rec_get_u64(&p, &u64);
    rec_get_str(&p, s, sizeof(s));
    rec_get_blob(&p, blob, sizeof(blob), &n);
    assert_int_equal(rec_finish(&p, "test record", &err), 0);
    assert_int_equal(u8, 0xab);
    assert_int_equal(u16, 0xbeef);
    assert_int_equal(u32, 0xdeadbeef);
    assert_int_equal(u64, 0x0123456789abcdefull);
    assert_string_equal(s, "hello");
    assert_int_equal(n, 3);
    assert_memory_equal(blob, "xyz", 3);
    assert_int_equal(rec_next(&r, &h, &p, &err), 1);
    assert_int_equal(h.type, 0x99);
    assert_int_equal(h.flags, 7);
    assert_int_equal(rec_remaining(&p), 0);
    assert_int_equal(rec_next(&r, &h, &p, &err), 0); /* clean end */
    rec_buf_free(&b);
}

static void test_every_flipped_bit_is_caught(void **state)
{
    (void)state;
    struct rec_buf b;
    struct tern_err err;
    build_two_records(&b);
    size_t first_len = REC_HEADER_SIZE + 1 + 2 + 4 + 8 + 2 + 5 + 4 + 3;
    for (size_t byte = 0; byte < first_len; byte++) {
        for (int bit = 0; bit < 8; bit++) {
            uint8_t *copy = malloc(b.len);
            memcpy(copy, b.data, b.len);
            copy[byte] ^= (uint8_t)(1u << bit);
            struct rec_reader r, p;
            struct rec_header h;
            rec_reader_init(&r, copy, b.len);
            int rc = rec_next(&r, &h, &p, &err);
            /* A flip in the length field may also surface as truncation;
             * either way the record is refused. */
            if (rc != -1)
                fail_msg("flip of byte %zu bit %d not detected", byte, bit);
            free(copy);
        }
    }
    rec_buf_free(&b);
}

static void test_truncation_at_every_length(void **state)
{
    (void)state;
    struct rec_buf b;
    struct tern_err err;
    build_two_records(&b);
    size_t first_len = REC_HEADER_SIZE + 1 + 2 + 4 + 8 + 2 + 5 + 4 + 3;
    for (size_t len = 1; len < first_len; len++) {
        struct rec_reader r, p;
        struct rec_header h;
        rec_reader_init(&r, b.data, len);
        assert_int_equal(rec_next(&r, &h, &p, &err), -1);
        assert_non_null(strstr(err.msg, "truncated"));
    }
    rec_buf_free(&b);
}

static void test_reader_bounds_and_sticky_failure(void **state)
{
    (void)state;
    uint8_t data[6] = {1, 2, 3, 4, 5, 6};
    struct rec_reader r;
    struct tern_err err;
    rec_reader_init(&r, data, sizeof(data));
    uint32_t a;
    uint64_t big = 77;
    uint8_t c;
    assert_int_equal(rec_get_u32(&r, &a), 0);
    assert_int_equal(a, 0x04030201);
    assert_int_equal(rec_get_u64(&r, &big), -1); /* only 2 bytes left */
    assert_int_equal(big, 0);
    assert_int_equal(rec_get_u8(&r, &c), -1); /* stays failed */
    assert_int_equal(rec_finish(&r, "thing v1", &err), -1);
    assert_non_null(strstr(err.msg, "thing v1 is malformed"));

    rec_reader_init(&r, data, sizeof(data));
    assert_int_equal(rec_get_u32(&r, &a), 0);
    assert_int_equal(rec_finish(&r, "thing v1", &err), -1);
    assert_non_null(strstr(err.msg, "2 unexpected trailing bytes"));

    /* Oversized blobs and strings are refused, not truncated. */
    uint8_t blob[8] = {5, 0, 0, 0, 'a', 'b', 'c', 'd'};
    char small[4];
    uint32_t n;
    rec_reader_init(&r, blob, sizeof(blob));
    assert_int_equal(rec_get_blob(&r, small, sizeof(small), &n), -1);
    uint8_t str[4] = {9, 0, 'a', 'b'};
    rec_reader_init(&r, str, sizeof(str));
    assert_int_equal(rec_get_str(&r, small, sizeof(small)), -1);
    uint8_t nul[4] = {2, 0, 'a', 0};
    char s[8];
    rec_reader_init(&r, nul, sizeof(nul));
    assert_int_equal(rec_get_str(&r, s, sizeof(s)), -1);
}

static void test_oversized_length_refused(void **state)
{
    (void)state;
    uint8_t hdr[REC_HEADER_SIZE] = {1, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0};
    struct rec_reader r, p;
    struct rec_header h;
    struct tern_err err;
    rec_reader_init(&r, hdr, sizeof(hdr));
    assert_int_equal(rec_next(&r, &h, &p, &err), -1);
    assert_non_null(strstr(err.msg, "limit"));
}

static void test_writer_misuse(void **state)
{
    (void)state;
    struct rec_buf b;
    struct tern_err err;
    rec_buf_init(&b);
    rec_begin(&b, 1, 1, 0);
    assert_int_equal(rec_buf_check(&b, &err), -1); /* left open */
    rec_begin(&b, 2, 1, 0);                          /* nested */
    rec_end(&b);
    assert_int_equal(rec_buf_check(&b, &err), -1);
    rec_buf_reset(&b);
    rec_end(&b); /* end without begin */
    assert_int_equal(rec_buf_check(&b, &err), -1);
    rec_buf_free(&b);
}

static void test_vmm_dirty(void **state)
{
    (void)state;
    struct guest_memory gm;
    struct tern_err err;
    /* 3 GiB + 8 MiB: two regions, the second at 4 GiB. */
    assert_int_equal(guest_memory_layout(&gm, TERN_MMIO_HOLE_START + (8ull << 20), &err), 0);
    struct vmm_dirty d;
    assert_int_equal(vmm_dirty_init(&d, &gm, &err), 0);
    vmm_dirty_mark(&d, 0x1000, 1);
    vmm_dirty_mark(&d, 0x2fff, 2);                  /* straddles pages 2 and 3 */
    vmm_dirty_mark(&d, TERN_MMIO_HOLE_START, 4096);   /* the hole: ignored */
    vmm_dirty_mark(&d, TERN_HIGH_RAM_START, 1);       /* first page above 4 GiB */
    vmm_dirty_mark(&d, UINT64_MAX - 10, 100);         /* wraps: ignored */
    assert_int_equal(vmm_dirty_count(&d), 4);
    assert_true(vmm_dirty_test(&d, 1));
    assert_true(vmm_dirty_test(&d, 2));
    assert_true(vmm_dirty_test(&d, 3));
    assert_false(vmm_dirty_test(&d, 4));
    uint64_t high_index = TERN_MMIO_HOLE_START >> 12; /* memfd offset of 4 GiB */
    assert_true(vmm_dirty_test(&d, high_index));
    uint64_t out[2] = {0, 0};
    vmm_dirty_collect(&d, out, 0, 1);
    assert_int_equal(out[0], 0xe);
    assert_int_equal(vmm_dirty_count(&d), 1); /* collected ones are cleared */
    vmm_dirty_mark(NULL, 0, 1);                 /* no tracker: a no-op */
    vmm_dirty_free(&d);
}

static void test_mmio_bus(void **state)
{
    (void)state;
    struct mmio_bus bus = {0};
    struct tern_err err;
    struct mmio_device a = {.name = "a", .base = 0xd0000000, .len = 0x1000};
    struct mmio_device b = {.name = "b", .base = 0xd0000800, .len = 0x1000};
    struct mmio_device c = {.name = "c", .base = 0xd0001000, .len = 0x1000};
    struct mmio_device w = {.name = "w", .base = UINT64_MAX - 10, .len = 100};
    assert_int_equal(mmio_bus_register(&bus, &a, &err), 0);
    assert_int_equal(mmio_bus_register(&bus, &b, &err), -1);
    assert_non_null(strstr(err.msg, "overlaps a"));
    assert_int_equal(mmio_bus_register(&bus, &c, &err), 0);
    assert_int_equal(mmio_bus_register(&bus, &w, &err), -1);
    assert_ptr_equal(mmio_bus_find(&bus, 0xd0000fff), &a);
    assert_ptr_equal(mmio_bus_find(&bus, 0xd0001000), &c);
    assert_null(mmio_bus_find(&bus, 0xd0002000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_every_flipped_bit_is_caught),
        cmocka_unit_test(test_truncation_at_every_length),
        cmocka_unit_test(test_reader_bounds_and_sticky_failure),
        cmocka_unit_test(test_oversized_length_refused),
        cmocka_unit_test(test_writer_misuse),
        cmocka_unit_test(test_vmm_dirty),
        cmocka_unit_test(test_mmio_bus),
    };
    return cmocka_run_group_tests_name("proto-record", tests, NULL, NULL);
}
