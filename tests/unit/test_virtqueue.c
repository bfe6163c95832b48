/* Split virtqueue handling (node-vmm/virtqueue.c): chain walking with its
 * bounds checks, used ring publication, index wrap-around and interrupt
 * suppression. Guest RAM is a plain buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dirtylog/vmm_dirty.h"
#include "node-vmm/guest_memory.h"
#include "node-vmm/virtqueue.h"

#define RAM_SIZE (2u << 20)
#define DESC_GPA 0x10000u
#define AVAIL_GPA 0x20000u
#define USED_GPA 0x30000u
#define BUF_GPA 0x40000u
#define TABLE_GPA 0x80000u

struct fixture {
    struct guest_memory gm;
    uint8_t *ram;
    struct virtq vq;
    struct virtq_chain chain;
    uint16_t avail_idx;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct tern_err err;
    if (!f || guest_memory_layout(&f->gm, RAM_SIZE, &err) < 0)
        return -1;
    f->ram = calloc(1, RAM_SIZE);
    if (!f->ram)
        return -1;
    f->gm.host_base = f->ram;
    f->vq.num = 8;
    f->vq.desc_gpa = DESC_GPA;
    f->vq.avail_gpa = AVAIL_GPA;
    f->vq.used_gpa = USED_GPA;
    if (virtq_configure(&f->vq, &f->gm, NULL, 256, &err) < 0)
        return -1;
    f->vq.ready = true;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    free(f->ram);
    free(f);
    return 0;
}

static void put_desc_at(uint8_t *table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                        uint16_t next)
{
    uint8_t *d = table + 16u * i;
    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    memcpy(d + 12, &flags, 2);
    memcpy(d + 14, &next, 2);
}

static void put_desc(struct fixture *f, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                     uint16_t next)
{
    put_desc_at(f->ram + DESC_GPA, i, addr, len, flags, next);
}

/* Makes `head` available and publishes the new index. */
static void offer(struct fixture *f, uint16_t head)
{
    uint16_t slot = f->avail_idx & (f->vq.num - 1);
    memcpy(f->ram + AVAIL_GPA + 4 + 2u * slot, &head, 2);
    f->avail_idx++;
    __atomic_store_n((uint16_t *)(void *)(f->ram + AVAIL_GPA + 2), f->avail_idx,
                     __ATOMIC_RELEASE);
}

static uint16_t used_idx(struct fixture *f)
{
    uint16_t v;
    memcpy(&v, f->ram + USED_GPA + 2, 2);
    return v;
}

static void used_elem(struct fixture *f, unsigned slot, uint32_t *id, uint32_t *len)
{
    memcpy(id, f->ram + USED_GPA + 4 + 8u * slot, 4);
    memcpy(len, f->ram + USED_GPA + 8 + 8u * slot, 4);
}

static void test_configure_checks(void **state)
{
    struct fixture *f = *state;
    struct tern_err err;
    struct virtq vq = {.num = 8, .desc_gpa = DESC_GPA, .avail_gpa = AVAIL_GPA,
                       .used_gpa = USED_GPA};
    assert_int_equal(virtq_configure(&vq, &f->gm, NULL, 256, &err), 0);
    assert_ptr_equal(vq.desc, f->ram + DESC_GPA);

    uint32_t bad_nums[] = {0, 3, 12, 512, 65536};
    for (size_t i = 0; i < sizeof(bad_nums) / sizeof(bad_nums[0]); i++) {
        vq.num = bad_nums[i];
        assert_int_equal(virtq_configure(&vq, &f->gm, NULL, 256, &err), -1);
        assert_non_null(strstr(err.msg, "power of two"));
    }
    vq.num = 8;
    vq.desc_gpa = DESC_GPA + 8;
    assert_int_equal(virtq_configure(&vq, &f->gm, NULL, 256, &err), -1);
    assert_non_null(strstr(err.msg, "descriptor table address"));
    vq.desc_gpa = RAM_SIZE - 64; /* 8 descriptors need 128 bytes */
    assert_int_equal(virtq_configure(&vq, &f->gm, NULL, 256, &err), -1);
    assert_non_null(strstr(err.msg, "not inside guest RAM"));
    vq.desc_gpa = DESC_GPA;
    vq.avail_gpa = AVAIL_GPA + 1;
    assert_int_equal(virtq_configure(&vq, &f->gm, NULL, 256, &err), -1);
    assert_non_null(strstr(err.msg, "available ring"));
    vq.avail_gpa = 0xfffffffffffffff0ull;
    assert_int_equal(virtq_configure(&vq, &f->gm, NULL, 256, &err), -1);
    vq.avail_gpa = AVAIL_GPA;
    vq.used_gpa = USED_GPA + 2;
    assert_int_equal(virtq_configure(&vq, &f->gm, NULL, 256, &err), -1);
    assert_non_null(strstr(err.msg, "used ring"));
    vq.used_gpa = RAM_SIZE - 8;
    assert_int_equal(virtq_configure(&vq, &f->gm, NULL, 256, &err), -1);
}

static void test_empty_and_single(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_EMPTY);
    put_desc(f, 3, BUF_GPA, 100, 0, 0);
    offer(f, 3);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_CHAIN);
    assert_int_equal(f->chain.head, 3);
    assert_int_equal(f->chain.nr, 1);
    assert_int_equal(f->chain.readable, 100);
    assert_int_equal(f->chain.writable, 0);
    assert_null(f->chain.bad);
    assert_ptr_equal(f->chain.seg[0].host, f->ram + BUF_GPA);
    assert_int_equal(f->vq.last_avail, 1);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_EMPTY);

    virtq_push(&f->vq, 3, 42);
    assert_int_equal(used_idx(f), 1);
    uint32_t id, len;
    used_elem(f, 0, &id, &len);
    assert_int_equal(id, 3);
    assert_int_equal(len, 42);
}

static void test_multi_chain_and_streams(void **state)
{
    struct fixture *f = *state;
    /* 16-byte header, 2 readable data buffers, writable data + status. */
    put_desc(f, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 5);
    put_desc(f, 5, BUF_GPA + 0x1000, 10, VIRTQ_DESC_F_NEXT, 2);
    put_desc(f, 2, BUF_GPA + 0x2000, 6, VIRTQ_DESC_F_NEXT, 7);
    put_desc(f, 7, BUF_GPA + 0x3000, 0, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1); /* empty */
    put_desc(f, 1, BUF_GPA + 0x4000, 8, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 4);
    put_desc(f, 4, BUF_GPA + 0x5000, 1, VIRTQ_DESC_F_WRITE, 0);
    for (int i = 0; i < 32; i++)
        f->ram[BUF_GPA + (i < 16 ? i : (i < 26 ? 0x1000 + i - 16 : 0x2000 + i - 26))] =
            (uint8_t)i;
    offer(f, 0);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_CHAIN);
    struct virtq_chain *c = &f->chain;
    assert_int_equal(c->head, 0);
    assert_int_equal(c->nr, 5); /* the zero-length buffer is left out */
    assert_int_equal(c->readable, 32);
    assert_int_equal(c->writable, 9);

    uint8_t buf[40];
    assert_int_equal(virtq_chain_read(c, 0, buf, sizeof(buf)), 32);
    for (int i = 0; i < 32; i++)
        assert_int_equal(buf[i], i);
    assert_int_equal(virtq_chain_read(c, 20, buf, 4), 4);
    assert_int_equal(buf[0], 20);

    uint8_t out[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    assert_int_equal(virtq_chain_write(c, NULL, 0, out, sizeof(out)), 9);
    assert_int_equal(f->ram[BUF_GPA + 0x4000 + 7], 8);
    assert_int_equal(f->ram[BUF_GPA + 0x5000], 9);
    assert_int_equal(virtq_chain_write(c, NULL, 8, out, 5), 1);

    struct iovec iov[4];
    struct virtq_span spans[4];
    assert_int_equal(virtq_chain_iov_count(c, false, 16, 16), 2);
    assert_int_equal(virtq_chain_iov(c, false, 16, 16, iov, spans, 4), 2);
    assert_ptr_equal(iov[0].iov_base, f->ram + BUF_GPA + 0x1000);
    assert_int_equal(iov[0].iov_len, 10);
    assert_int_equal(iov[1].iov_len, 6);
    assert_int_equal(spans[1].gpa, BUF_GPA + 0x2000);
    assert_int_equal(virtq_chain_iov(c, false, 16, 16, iov, spans, 1), -1); /* cap */
    assert_int_equal(virtq_chain_iov(c, false, 16, 17, iov, spans, 4), -1); /* past end */
    assert_int_equal(virtq_chain_iov(c, true, 3, 6, iov, NULL, 4), 2);
    assert_ptr_equal(iov[0].iov_base, f->ram + BUF_GPA + 0x4003);
    assert_int_equal(iov[0].iov_len, 5);
    assert_int_equal(iov[1].iov_len, 1);
}

static void test_max_length_chain(void **state)
{
    struct fixture *f = *state;
    for (unsigned i = 0; i < 8; i++)
        put_desc(f, i, BUF_GPA + i * 0x100, 0x100, i < 7 ? VIRTQ_DESC_F_NEXT : 0,
                 (uint16_t)(i + 1));
    offer(f, 0);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_CHAIN);
    assert_int_equal(f->chain.nr, 8);
    assert_int_equal(f->chain.readable, 0x800);
}

static void test_loop_detected(void **state)
{
    struct fixture *f = *state;
    /* Eight descriptors whose last points back to the first. */
    for (unsigned i = 0; i < 8; i++)
        put_desc(f, i, BUF_GPA, 0x10, VIRTQ_DESC_F_NEXT, (uint16_t)((i + 1) % 8));
    offer(f, 0);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_BROKEN);
    assert_true(f->vq.broken);
    assert_non_null(strstr(f->vq.error, "loops"));
    assert_int_equal(f->vq.last_avail, 0); /* not consumed */
    /* A broken queue stays broken. */
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_BROKEN);
}

static void test_self_loop(void **state)
{
    struct fixture *f = *state;
    put_desc(f, 2, BUF_GPA, 1, VIRTQ_DESC_F_NEXT, 2);
    offer(f, 2);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_BROKEN);
    assert_non_null(strstr(f->vq.error, "loops"));
}

static void test_head_out_of_range(void **state)
{
    struct fixture *f = *state;
    offer(f, 8);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_BROKEN);
    assert_non_null(strstr(f->vq.error, "names descriptor 8"));
}

static void test_next_out_of_range(void **state)
{
    struct fixture *f = *state;
    put_desc(f, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 9);
    offer(f, 0);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_BROKEN);
    assert_non_null(strstr(f->vq.error, "next 9"));
}

static void test_avail_index_runs_ahead(void **state)
{
    struct fixture *f = *state;
    uint16_t idx = 9; /* 9 entries in a queue of 8 */
    __atomic_store_n((uint16_t *)(void *)(f->ram + AVAIL_GPA + 2), idx, __ATOMIC_RELEASE);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_BROKEN);
    assert_non_null(strstr(f->vq.error, "available index"));
}

static void test_readable_after_writable(void **state)
{
    struct fixture *f = *state;
    put_desc(f, 0, BUF_GPA, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    put_desc(f, 1, BUF_GPA + 16, 16, 0, 0);
    offer(f, 0);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_BROKEN);
    assert_non_null(strstr(f->vq.error, "device-readable descriptor 1 after"));
}

static void test_buffers_outside_ram(void **state)
{
    struct fixture *f = *state;
    /* Straddles the end of RAM; then a writable status inside RAM. */
    put_desc(f, 0, RAM_SIZE - 8, 16, VIRTQ_DESC_F_NEXT, 1);
    put_desc(f, 1, BUF_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
    offer(f, 0);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_CHAIN);
    assert_non_null(f->chain.bad);
    assert_null(f->chain.seg[0].host);
    assert_non_null(f->chain.seg[1].host);
    assert_int_equal(f->vq.last_avail, 1); /* consumed: the device answers it */
    uint8_t b[16];
    assert_int_equal(virtq_chain_read(&f->chain, 0, b, 16), 0);
    struct iovec iov[2];
    assert_int_equal(virtq_chain_iov(&f->chain, false, 0, 16, iov, NULL, 2), -1);

    /* Far away (wrapping) address. */
    put_desc(f, 2, 0xfffffffffffff000ull, 0x2000, 0, 0);
    offer(f, 2);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_CHAIN);
    assert_non_null(f->chain.bad);
    assert_false(f->vq.broken);

}

static void test_indirect(void **state)
{
    struct fixture *f = *state;
    uint8_t *table = f->ram + TABLE_GPA;
    put_desc_at(table, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 2);
    put_desc_at(table, 2, BUF_GPA + 0x100, 512, VIRTQ_DESC_F_NEXT, 1);
    put_desc_at(table, 1, BUF_GPA + 0x1000, 1, VIRTQ_DESC_F_WRITE, 0);
    put_desc(f, 4, TABLE_GPA, 3 * 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, 0);
    offer(f, 4);
    /* Not negotiated: malformed. */
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_BROKEN);
    assert_non_null(strstr(f->vq.error, "not negotiated"));

    f->vq.broken = false;
    f->vq.indirect = true;
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_CHAIN);
    assert_int_equal(f->chain.head, 4);
    assert_int_equal(f->chain.nr, 3);
    assert_int_equal(f->chain.readable, 528);
    assert_int_equal(f->chain.writable, 1);

    /* A direct buffer, then the indirect table at the end of the chain. */
    put_desc(f, 5, BUF_GPA + 0x2000, 16, VIRTQ_DESC_F_NEXT, 6);
    put_desc(f, 6, TABLE_GPA + 16, 32, VIRTQ_DESC_F_INDIRECT, 0); /* entries 1 and 2 */
    put_desc_at(table + 16, 0, BUF_GPA + 0x100, 8, VIRTQ_DESC_F_NEXT, 1);
    put_desc_at(table + 16, 1, BUF_GPA + 0x200, 1, VIRTQ_DESC_F_WRITE, 0);
    offer(f, 5);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_CHAIN);
    assert_int_equal(f->chain.nr, 3);
    assert_int_equal(f->chain.readable, 24);
    assert_int_equal(f->chain.writable, 1);
}

/* Each malformed indirect shape on a fresh queue. */
static void expect_indirect_broken(struct fixture *f, const char *what)
{
    f->vq.indirect = true;
    offer(f, 0);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_BROKEN);
    if (!strstr(f->vq.error, what))
        fail_msg("expected '%s' in '%s'", what, f->vq.error);
}

static void test_indirect_nested(void **state)
{
    struct fixture *f = *state;
    put_desc_at(f->ram + TABLE_GPA, 0, TABLE_GPA, 16, VIRTQ_DESC_F_INDIRECT, 0);
    put_desc(f, 0, TABLE_GPA, 16, VIRTQ_DESC_F_INDIRECT, 0);
    expect_indirect_broken(f, "inside an indirect table");
}

static void test_indirect_with_next(void **state)
{
    struct fixture *f = *state;
    put_desc(f, 0, TABLE_GPA, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
    expect_indirect_broken(f, "also has NEXT");
}

static void test_indirect_bad_length(void **state)
{
    struct fixture *f = *state;
    put_desc(f, 0, TABLE_GPA, 24, VIRTQ_DESC_F_INDIRECT, 0);
    expect_indirect_broken(f, "multiple of 16");
}

static void test_indirect_zero_length(void **state)
{
    struct fixture *f = *state;
    put_desc(f, 0, TABLE_GPA, 0, VIRTQ_DESC_F_INDIRECT, 0);
    expect_indirect_broken(f, "multiple of 16");
}

static void test_indirect_outside_ram(void **state)
{
    struct fixture *f = *state;
    put_desc(f, 0, RAM_SIZE - 16, 32, VIRTQ_DESC_F_INDIRECT, 0);
    expect_indirect_broken(f, "not inside guest RAM");
}

static void test_indirect_loop(void **state)
{
    struct fixture *f = *state;
    put_desc_at(f->ram + TABLE_GPA, 0, BUF_GPA, 4, VIRTQ_DESC_F_NEXT, 1);
    put_desc_at(f->ram + TABLE_GPA, 1, BUF_GPA, 4, VIRTQ_DESC_F_NEXT, 0);
    put_desc(f, 0, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
    expect_indirect_broken(f, "loops");
}

static void test_indirect_next_out_of_table(void **state)
{
    struct fixture *f = *state;
    put_desc_at(f->ram + TABLE_GPA, 0, BUF_GPA, 4, VIRTQ_DESC_F_NEXT, 2);
    put_desc(f, 0, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
    expect_indirect_broken(f, "indirect table of 2");
}

static void test_chain_buffer_limit(void **state)
{
    struct fixture *f = *state;
    uint8_t *table = f->ram + TABLE_GPA;
    for (unsigned i = 0; i < VIRTQ_CHAIN_MAX; i++)
        put_desc_at(table, i, BUF_GPA, 1, i + 1 < VIRTQ_CHAIN_MAX ? VIRTQ_DESC_F_NEXT : 0,
                    (uint16_t)(i + 1));
    /* A full table is fine... */
    put_desc(f, 0, TABLE_GPA, VIRTQ_CHAIN_MAX * 16, VIRTQ_DESC_F_INDIRECT, 0);
    f->vq.indirect = true;
    offer(f, 0);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_CHAIN);
    assert_int_equal(f->chain.nr, VIRTQ_CHAIN_MAX);
    /* ...one direct buffer more is not. */
    put_desc(f, 1, BUF_GPA, 1, VIRTQ_DESC_F_NEXT, 2);
    put_desc(f, 2, TABLE_GPA, VIRTQ_CHAIN_MAX * 16, VIRTQ_DESC_F_INDIRECT, 0);
    offer(f, 1);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_BROKEN);
    assert_non_null(strstr(f->vq.error, "more than 256 buffers"));
    /* And a table larger than that is refused outright. */
    f->vq.broken = false;
    f->vq.last_avail = f->avail_idx;
    put_desc(f, 3, TABLE_GPA, (VIRTQ_CHAIN_MAX + 1) * 16, VIRTQ_DESC_F_INDIRECT, 0);
    offer(f, 3);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_BROKEN);
    assert_non_null(strstr(f->vq.error, "257 descriptors"));
}

static void test_index_wraparound(void **state)
{
    struct fixture *f = *state;
    /* Start both sides just below the 16-bit wrap. */
    f->avail_idx = 65530;
    f->vq.last_avail = 65530;
    f->vq.used_idx = 65530;
    __atomic_store_n((uint16_t *)(void *)(f->ram + AVAIL_GPA + 2), f->avail_idx,
                     __ATOMIC_RELEASE);
    for (unsigned i = 0; i < 8; i++)
        put_desc(f, i, BUF_GPA + i, 1, VIRTQ_DESC_F_WRITE, 0);
    for (unsigned round = 0; round < 20; round++) {
        uint16_t head = (uint16_t)(round % 8);
        uint16_t at = f->avail_idx;
        offer(f, head);
        assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_CHAIN);
        assert_int_equal(f->chain.head, head);
        virtq_push(&f->vq, head, round);
        assert_int_equal(used_idx(f), (uint16_t)(at + 1));
        uint32_t id, len;
        used_elem(f, at & 7, &id, &len);
        assert_int_equal(id, head);
        assert_int_equal(len, round);
    }
    assert_int_equal(f->vq.last_avail, (uint16_t)(65530 + 20));
    assert_int_equal(used_idx(f), 14);

    /* A full ring across the wrap: 8 entries pending at once. */
    uint16_t start = f->avail_idx;
    for (unsigned i = 0; i < 8; i++)
        offer(f, (uint16_t)i);
    assert_int_equal((uint16_t)(f->avail_idx - start), 8);
    for (unsigned i = 0; i < 8; i++)
        assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_CHAIN);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_EMPTY);
}

static void test_no_interrupt_flag(void **state)
{
    struct fixture *f = *state;
    assert_true(virtq_needs_interrupt(&f->vq));
    uint16_t flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
    memcpy(f->ram + AVAIL_GPA, &flags, 2);
    assert_false(virtq_needs_interrupt(&f->vq));
    flags = 0;
    memcpy(f->ram + AVAIL_GPA, &flags, 2);
    assert_true(virtq_needs_interrupt(&f->vq));
}

static void test_push_marks_dirty(void **state)
{
    struct fixture *f = *state;
    struct vmm_dirty dirty;
    struct tern_err err;
    assert_int_equal(vmm_dirty_init(&dirty, &f->gm, &err), 0);
    f->vq.dirty = &dirty;
    put_desc(f, 0, BUF_GPA + 0x3000, 8, VIRTQ_DESC_F_WRITE, 0);
    offer(f, 0);
    assert_int_equal(virtq_pop(&f->vq, &f->chain), VIRTQ_CHAIN);
    uint8_t data[8] = {0};
    assert_int_equal(virtq_chain_write(&f->chain, &dirty, 0, data, 8), 8);
    virtq_push(&f->vq, 0, 8);
    assert_int_equal(vmm_dirty_count(&dirty), 2);
    assert_true(vmm_dirty_test(&dirty, USED_GPA / 4096));
    assert_true(vmm_dirty_test(&dirty, (BUF_GPA + 0x3000) / 4096));
    vmm_dirty_free(&dirty);
}

static void test_reset_keeps_memory(void **state)
{
    struct fixture *f = *state;
    f->vq.last_avail = 5;
    virtq_reset(&f->vq);
    assert_int_equal(f->vq.num, 0);
    assert_false(f->vq.ready);
    assert_int_equal(f->vq.last_avail, 0);
    assert_ptr_equal(f->vq.gm, &f->gm);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_configure_checks),
        T(test_empty_and_single),
        T(test_multi_chain_and_streams),
        T(test_max_length_chain),
        T(test_loop_detected),
        T(test_self_loop),
        T(test_head_out_of_range),
        T(test_next_out_of_range),
        T(test_avail_index_runs_ahead),
        T(test_readable_after_writable),
        T(test_buffers_outside_ram),
        T(test_indirect),
        T(test_indirect_nested),
        T(test_indirect_with_next),
        T(test_indirect_bad_length),
        T(test_indirect_zero_length),
        T(test_indirect_outside_ram),
        T(test_indirect_loop),
        T(test_indirect_next_out_of_table),
        T(test_chain_buffer_limit),
        T(test_index_wraparound),
        T(test_no_interrupt_flag),
        T(test_push_marks_dirty),
        T(test_reset_keeps_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
