/* Migration stream records (proto/migration.c): every record's round trip,
 * every decoder's error paths, the config digest, HELLO comparison, the
 * PAGES writer and the bounds-checking zero-copy iterator. */
#include <openssl/evp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <cmocka.h>

#include "migrate/page_codec.h"
#include "proto/crc32.h"
#include "proto/migration.h"

/* The one record in b: header and a reader over its payload. */
static void only_record(const struct rec_buf *b, struct rec_header *h, struct rec_reader *p)
{
    struct tern_err err;
    assert_int_equal(rec_buf_check(b, &err), 0);
    struct rec_reader r;
    rec_reader_init(&r, b->data, b->len);
    assert_int_equal(rec_next(&r, h, p, &err), 1);
    assert_int_equal(rec_remaining(&r), 0);
}

static void sample_hello(struct mig_hello *m, uint64_t ram)
{
    memset(m, 0, sizeof(*m));
    m->protocol = MIG_PROTOCOL_VERSION;
    m->session = 0x1122334455667788ull;
    bool ro[2] = {false, true};
    struct tern_err err;
    assert_int_equal(mig_config_digest(ram, 2, 2400000, 2, ro, m->config_digest, &err), 0);
    m->ram_bytes = ram;
    m->page_size = MIG_PAGE_SIZE;
    m->stream = 1;
    m->nr_streams = 4;
    uint64_t low = ram < (3ull << 30) ? ram : (3ull << 30);
    m->regions[0] = (struct mig_region){.gpa = 0, .size = low, .offset = 0};
    m->nr_regions = 1;
    if (ram > low) {
        m->regions[1] = (struct mig_region){.gpa = 4ull << 30, .size = ram - low, .offset = low};
        m->nr_regions = 2;
    }
}

/* ---- config digest ---- */

static void test_config_digest(void **state)
{
    (void)state;
    struct tern_err err;
    uint8_t d[MIG_DIGEST_SIZE], d2[MIG_DIGEST_SIZE];
    bool ro[3] = {false, true, false};
    assert_int_equal(mig_config_digest(1ull << 30, 2, 2400000, 3, ro, d, &err), 0);
    /* The canonical encoding, built by hand. */
    uint8_t buf[16 + 8 + 4 + 4 + 4 + 3] = "tern-vm-config/1";
    uint64_t mem = 1ull << 30;
    for (int i = 0; i < 8; i++)
        buf[16 + i] = (uint8_t)(mem >> (8 * i));
    uint32_t v[3] = {2, 2400000, 3};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 4; i++)
            buf[24 + 4 * k + i] = (uint8_t)(v[k] >> (8 * i));
    buf[36] = 0, buf[37] = 1, buf[38] = 0;
    unsigned n;
    assert_int_equal(EVP_Digest(buf, sizeof(buf), d2, &n, EVP_sha256(), NULL), 1);
    assert_memory_equal(d, d2, MIG_DIGEST_SIZE);
    /* Every input changes it. */
    uint8_t other[MIG_DIGEST_SIZE];
    mig_config_digest((1ull << 30) + 4096, 2, 2400000, 3, ro, other, &err);
    assert_memory_not_equal(d, other, MIG_DIGEST_SIZE);
    mig_config_digest(1ull << 30, 1, 2400000, 3, ro, other, &err);
    assert_memory_not_equal(d, other, MIG_DIGEST_SIZE);
    mig_config_digest(1ull << 30, 2, 2400001, 3, ro, other, &err);
    assert_memory_not_equal(d, other, MIG_DIGEST_SIZE);
    mig_config_digest(1ull << 30, 2, 2400000, 2, ro, other, &err);
    assert_memory_not_equal(d, other, MIG_DIGEST_SIZE);
    ro[2] = true;
    mig_config_digest(1ull << 30, 2, 2400000, 3, ro, other, &err);
    assert_memory_not_equal(d, other, MIG_DIGEST_SIZE);
    assert_int_equal(mig_config_digest(1ull << 30, 2, 2400000, 0, NULL, other, &err), 0);
    bool many[MIG_MAX_DISKS + 1] = {0};
    assert_int_equal(mig_config_digest(1ull << 30, 2, 1, MIG_MAX_DISKS + 1, many, other, &err), -1);
}

/* ---- HELLO ---- */

static void test_hello_round_trip(void **state)
{
    (void)state;
    uint64_t sizes[] = {2ull << 20, 1ull << 30, 6ull << 30};
    for (int i = 0; i < 3; i++) {
        struct mig_hello m, got;
        sample_hello(&m, sizes[i]);
        struct rec_buf b;
        rec_buf_init(&b);
        mig_hello_encode(&b, &m);
        struct rec_header h;
        struct rec_reader p;
        struct tern_err err;
        only_record(&b, &h, &p);
        assert_int_equal(h.type, REC_TYPE_MIG_HELLO);
        assert_int_equal(mig_check_header(&h, &err), 0);
        assert_int_equal(mig_hello_decode(&h, &p, &got, &err), 0);
        assert_memory_equal(&m, &got, sizeof(m));
        assert_int_equal(mig_hello_nr_pages(&got), sizes[i] / 4096);
        uint32_t code = 99;
        assert_int_equal(mig_hello_check(&m, &got, &code, &err), 0);
        rec_buf_free(&b);
    }
    /* The commit gate travels as the header flag. */
    struct mig_hello m, got;
    sample_hello(&m, 1ull << 30);
    m.commit_gate = true;
    struct rec_buf b;
    rec_buf_init(&b);
    mig_hello_encode(&b, &m);
    struct rec_header h;
    struct rec_reader p;
    struct tern_err err;
    only_record(&b, &h, &p);
    assert_int_equal(h.flags, MIG_HELLO_COMMIT_GATE);
    assert_int_equal(mig_check_header(&h, &err), 0);
    assert_int_equal(mig_hello_decode(&h, &p, &got, &err), 0);
    assert_true(got.commit_gate);
    assert_memory_equal(&m, &got, sizeof(m));
    rec_buf_free(&b);
}

/* Encodes a HELLO with raw fields so every field can be made wrong. */
struct raw_hello {
    char magic[8];
    uint32_t protocol;
    uint64_t ram;
    uint32_t page_size;
    uint16_t stream, nr_streams;
    uint32_t nr_regions;
    uint64_t reg[3][3];
    unsigned put_regions;
    int trailing;
    int cut;
    uint16_t version, flags;
};

static void raw_default(struct raw_hello *r)
{
    memset(r, 0, sizeof(*r));
    memcpy(r->magic, MIG_MAGIC, 8);
    r->protocol = MIG_PROTOCOL_VERSION;
    r->ram = 16ull << 20;
    r->page_size = 4096;
    r->nr_streams = 2;
    r->nr_regions = 2;
    r->put_regions = 2;
    r->reg[0][0] = 0, r->reg[0][1] = 8ull << 20, r->reg[0][2] = 0;
    r->reg[1][0] = 1ull << 32, r->reg[1][1] = 8ull << 20, r->reg[1][2] = 8ull << 20;
    r->version = 1;
}

static int decode_raw(const struct raw_hello *r, struct mig_hello *out, struct tern_err *err)
{
    struct rec_buf b;
    rec_buf_init(&b);
    rec_begin(&b, REC_TYPE_MIG_HELLO, r->version, r->flags);
    rec_put_bytes(&b, r->magic, 8);
    rec_put_u32(&b, r->protocol);
    rec_put_u64(&b, 7);
    uint8_t digest[MIG_DIGEST_SIZE] = {1, 2, 3};
    rec_put_bytes(&b, digest, sizeof(digest));
    rec_put_u64(&b, r->ram);
    rec_put_u32(&b, r->page_size);
    rec_put_u16(&b, r->stream);
    rec_put_u16(&b, r->nr_streams);
    rec_put_u32(&b, r->nr_regions);
    for (unsigned i = 0; i < r->put_regions; i++)
        for (int k = 0; k < 3; k++)
            rec_put_u64(&b, r->reg[i][k]);
    for (int i = 0; i < r->trailing; i++)
        rec_put_u8(&b, 0);
    rec_end(&b);
    struct rec_header h;
    struct rec_reader p;
    only_record(&b, &h, &p);
    if (r->cut)
        p.len -= (size_t)r->cut;
    err->msg[0] = 0;
    int rc = mig_hello_decode(&h, &p, out, err);
    rec_buf_free(&b);
    return rc;
}

static void expect_hello_error(const struct raw_hello *r, const char *why)
{
    struct mig_hello out;
    struct tern_err err;
    assert_int_equal(decode_raw(r, &out, &err), -1);
    if (!strstr(err.msg, why))
        fail_msg("HELLO error '%s' does not mention '%s'", err.msg, why);
}

static void test_hello_errors(void **state)
{
    (void)state;
    struct raw_hello r;
    struct mig_hello out;
    struct tern_err err;
    raw_default(&r);
    assert_int_equal(decode_raw(&r, &out, &err), 0);

    raw_default(&r);
    r.magic[0] = 'X';
    expect_hello_error(&r, "bad HELLO magic");
    raw_default(&r);
    r.protocol = 2;
    expect_hello_error(&r, "protocol 2");
    assert_int_equal(decode_raw(&r, &out, &err), -1);
    assert_int_equal(out.protocol, 2); /* so the receiver can answer MIG_ERR_VERSION */
    raw_default(&r);
    r.version = 2;
    expect_hello_error(&r, "version 2");
    raw_default(&r);
    r.flags = 2; /* only MIG_HELLO_COMMIT_GATE is defined */
    expect_hello_error(&r, "flags 0x2");
    raw_default(&r);
    r.flags = MIG_HELLO_COMMIT_GATE;
    assert_int_equal(decode_raw(&r, &out, &err), 0);
    assert_true(out.commit_gate);
    raw_default(&r);
    assert_int_equal(decode_raw(&r, &out, &err), 0);
    assert_false(out.commit_gate);
    raw_default(&r);
    r.trailing = 1;
    expect_hello_error(&r, "trailing");
    raw_default(&r);
    r.cut = 1;
    expect_hello_error(&r, "malformed");
    raw_default(&r);
    r.cut = 120 - 5; /* of 120 bytes: cut inside the magic */
    expect_hello_error(&r, "magic");
    raw_default(&r);
    r.nr_regions = MIG_MAX_REGIONS + 1;
    expect_hello_error(&r, "RAM regions");
    raw_default(&r);
    r.nr_regions = 3; /* says 3, carries 2 */
    expect_hello_error(&r, "malformed");
    raw_default(&r);
    r.nr_regions = 0, r.put_regions = 0;
    expect_hello_error(&r, "0 RAM regions");
    raw_default(&r);
    r.stream = 2;
    expect_hello_error(&r, "stream 2 of 2");
    raw_default(&r);
    r.nr_streams = 0;
    expect_hello_error(&r, "of 0");
    raw_default(&r);
    r.nr_streams = MIG_MAX_STREAMS + 1;
    expect_hello_error(&r, "streams");
    raw_default(&r);
    r.page_size = 8192;
    expect_hello_error(&r, "page size 8192");
    raw_default(&r);
    r.ram = (16ull << 20) + 1;
    expect_hello_error(&r, "not a positive number of pages");
    raw_default(&r);
    r.ram = 0;
    expect_hello_error(&r, "not a positive number of pages");
    raw_default(&r);
    r.ram = 32ull << 20;
    expect_hello_error(&r, "add up to");
    raw_default(&r);
    r.ram = 8ull << 20;
    expect_hello_error(&r, "add up to more");
    raw_default(&r);
    r.reg[1][2] = 0; /* not contiguous */
    expect_hello_error(&r, "contiguous");
    raw_default(&r);
    r.reg[1][0] = 4ull << 20; /* overlaps region 0 in guest physical space */
    expect_hello_error(&r, "overlaps");
    raw_default(&r);
    r.reg[1][0] = 0x1000 + 1;
    expect_hello_error(&r, "not whole pages");
    raw_default(&r);
    r.reg[1][1] = 0, r.ram = 8ull << 20;
    expect_hello_error(&r, "not whole pages");
    raw_default(&r);
    r.reg[1][0] = UINT64_MAX - 4095;
    expect_hello_error(&r, "wraps");

    /* Not a HELLO at all. */
    struct rec_buf b;
    rec_buf_init(&b);
    mig_commit_encode(&b);
    struct rec_header h;
    struct rec_reader p;
    only_record(&b, &h, &p);
    assert_int_equal(mig_hello_decode(&h, &p, &out, &err), -1);
    assert_non_null(strstr(err.msg, "expected a migration HELLO"));
    rec_buf_free(&b);
}

static void test_hello_check(void **state)
{
    (void)state;
    struct mig_hello mine, peer;
    struct tern_err err;
    uint32_t code;
    sample_hello(&mine, 6ull << 30);
    mine.nr_streams = 0; /* the first stream: no session yet */

    sample_hello(&peer, 6ull << 30);
    assert_int_equal(mig_hello_check(&mine, &peer, &code, &err), 0);
    peer.protocol = 2;
    assert_int_equal(mig_hello_check(&mine, &peer, &code, &err), -1);
    assert_int_equal(code, MIG_ERR_VERSION);
    sample_hello(&peer, 6ull << 30);
    peer.config_digest[31] ^= 1;
    assert_int_equal(mig_hello_check(&mine, &peer, &code, &err), -1);
    assert_int_equal(code, MIG_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "configuration differs"));
    sample_hello(&peer, 6ull << 30);
    peer.regions[1].gpa += 4096;
    assert_int_equal(mig_hello_check(&mine, &peer, &code, &err), -1);
    assert_int_equal(code, MIG_ERR_LAYOUT);
    sample_hello(&peer, 6ull << 30);
    peer.ram_bytes += 4096;
    assert_int_equal(mig_hello_check(&mine, &peer, &code, &err), -1);
    assert_int_equal(code, MIG_ERR_LAYOUT);
    /* Same digest but another size: caught as layout too. */
    sample_hello(&peer, 1ull << 30);
    memcpy(peer.config_digest, mine.config_digest, MIG_DIGEST_SIZE);
    assert_int_equal(mig_hello_check(&mine, &peer, &code, &err), -1);
    assert_int_equal(code, MIG_ERR_LAYOUT);
    /* Both sides must agree on who decides the handover, either way round. */
    sample_hello(&peer, 6ull << 30);
    peer.commit_gate = true;
    assert_int_equal(mig_hello_check(&mine, &peer, &code, &err), -1);
    assert_int_equal(code, MIG_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "--commit-gate differs: the peer uses it, this side does not"));
    mine.commit_gate = true;
    assert_int_equal(mig_hello_check(&mine, &peer, &code, &err), 0);
    peer.commit_gate = false;
    assert_int_equal(mig_hello_check(&mine, &peer, &code, &err), -1);
    assert_non_null(strstr(err.msg, "the peer does not use it, this side does"));
    mine.commit_gate = false;

    /* Later streams against the first one's HELLO. */
    struct mig_hello first;
    sample_hello(&first, 6ull << 30);
    sample_hello(&peer, 6ull << 30);
    peer.stream = 3;
    assert_int_equal(mig_hello_check(&first, &peer, &code, &err), 0);
    peer.session ^= 1;
    assert_int_equal(mig_hello_check(&first, &peer, &code, &err), -1);
    assert_int_equal(code, MIG_ERR_STREAMS);
    assert_non_null(strstr(err.msg, "another migration attempt"));
    sample_hello(&peer, 6ull << 30);
    peer.nr_streams = 3;
    assert_int_equal(mig_hello_check(&first, &peer, &code, &err), -1);
    assert_int_equal(code, MIG_ERR_STREAMS);
}

/* ---- PAGES ---- */

struct page_spec {
    uint64_t index;
    uint8_t enc;
    uint32_t len;
};

static void test_pages_round_trip(void **state)
{
    (void)state;
    struct mig_pages_writer w;
    struct tern_err err;
    assert_int_equal(mig_pages_writer_init(&w, MIG_PAGES_MAX_COUNT, 1 << 20, &err), 0);
    /* Real encoded pages, straight into the batch. */
    struct page_encoder *e;
    assert_int_equal(page_encoder_create(&e, 1 << 20, &err), 0);
    uint8_t *pages = calloc(8, 4096);
    for (int i = 0; i < 4096; i++)
        pages[4096 + i] = (uint8_t)(i * 7919 >> 3);     /* page 1: LZ4 */
    uint64_t s = 1;
    for (int i = 0; i < 4096; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        pages[2 * 4096 + i] = (uint8_t)(s >> 56);        /* page 2: RAW */
    }
    uint8_t enc;
    uint64_t idx[4] = {0, 1, 2, 2};
    uint8_t want_enc[4] = {MIG_PAGE_ZERO, MIG_PAGE_LZ4, MIG_PAGE_RAW, MIG_PAGE_XOR};
    uint32_t lens[4];
    for (int i = 0; i < 4; i++) {
        if (i == 3)
            pages[2 * 4096 + 100] ^= 0xff; /* re-sent with one byte changed */
        uint8_t *slot = mig_pages_slot(&w);
        assert_non_null(slot);
        lens[i] = page_encode(e, idx[i], pages + idx[i] * 4096, slot, &enc);
        assert_int_equal(enc, want_enc[i]);
        assert_int_equal(mig_pages_commit(&w, 1000 + idx[i], enc, lens[i], &err), 0);
    }
    assert_int_equal(mig_pages_add(&w, 5, MIG_PAGE_RAW, pages + 2 * 4096, 4096, &err), 0);
    const uint8_t *data;
    size_t len;
    assert_int_equal(mig_pages_seal(&w, &data, &len, &err), 0);
    assert_null(mig_pages_slot(&w)); /* sealed */
    assert_int_equal(mig_pages_commit(&w, 1, MIG_PAGE_ZERO, 0, &err), -1);

    struct rec_reader r, p;
    struct rec_header h;
    rec_reader_init(&r, data, len);
    assert_int_equal(rec_next(&r, &h, &p, &err), 1);
    assert_int_equal(rec_remaining(&r), 0);
    assert_int_equal(mig_check_header(&h, &err), 0);
    struct mig_pages_iter it;
    assert_int_equal(mig_pages_iter_init(&it, &h, &p, 1006, &err), 0);
    assert_int_equal(it.count, 5);
    uint8_t *recv = calloc(8, 4096);
    struct mig_page pg;
    for (int i = 0; i < 5; i++) {
        assert_true(mig_pages_iter_next(&it, &pg));
        if (i < 4) {
            assert_int_equal(pg.index, 1000 + idx[i]);
            assert_int_equal(pg.enc, want_enc[i]);
            assert_int_equal(pg.len, lens[i]);
            /* A view into the record, not a copy. */
            assert_true(pg.data > data && pg.data + pg.len <= data + len);
            assert_int_equal(page_decode(pg.enc, pg.data, pg.len,
                                         recv + (pg.index - 1000) * 4096, &err), 0);
        } else {
            assert_int_equal(pg.index, 5);
            assert_memory_equal(pg.data, pages + 2 * 4096, 4096);
        }
    }
    assert_false(mig_pages_iter_next(&it, &pg));
    assert_memory_equal(recv, pages, 3 * 4096);

    /* Reset: an empty batch is a valid record too. */
    mig_pages_reset(&w);
    assert_int_equal(mig_pages_seal(&w, &data, &len, &err), 0);
    assert_int_equal(len, REC_HEADER_SIZE + 4);
    rec_reader_init(&r, data, len);
    assert_int_equal(rec_next(&r, &h, &p, &err), 1);
    assert_int_equal(mig_pages_iter_init(&it, &h, &p, 1, &err), 0);
    assert_false(mig_pages_iter_next(&it, &pg));

    free(pages);
    free(recv);
    page_encoder_destroy(e);
    mig_pages_writer_free(&w);
}

static void test_pages_writer_limits(void **state)
{
    (void)state;
    struct mig_pages_writer w;
    struct tern_err err;
    assert_int_equal(mig_pages_writer_init(&w, 0, 1 << 20, &err), -1);
    assert_int_equal(mig_pages_writer_init(&w, MIG_PAGES_MAX_COUNT + 1, 1 << 20, &err), -1);
    uint8_t raw[4096] = {0};

    /* By count: 3 pages. */
    assert_int_equal(mig_pages_writer_init(&w, 3, 1 << 20, &err), 0);
    for (int i = 0; i < 3; i++) {
        assert_false(mig_pages_full(&w));
        assert_int_equal(mig_pages_add(&w, (uint64_t)i, MIG_PAGE_ZERO, NULL, 0, &err), 0);
    }
    assert_true(mig_pages_full(&w));
    assert_null(mig_pages_slot(&w));
    assert_int_equal(mig_pages_add(&w, 9, MIG_PAGE_ZERO, NULL, 0, &err), -1);
    /* Invalid lengths are the caller's bug, and refused. */
    mig_pages_reset(&w);
    assert_int_equal(mig_pages_commit(&w, 1, MIG_PAGE_RAW, 100, &err), -1);
    assert_int_equal(mig_pages_commit(&w, 1, MIG_PAGE_ZERO, 1, &err), -1);
    assert_int_equal(mig_pages_commit(&w, 1, 7, 0, &err), -1);
    assert_int_equal(w.count, 0);
    mig_pages_writer_free(&w);

    /* By bytes: full once the payload reaches 10000 bytes (3 RAW pages). */
    assert_int_equal(mig_pages_writer_init(&w, 256, 10000, &err), 0);
    int n = 0;
    while (!mig_pages_full(&w))
        assert_int_equal(mig_pages_add(&w, (uint64_t)n++, MIG_PAGE_RAW, raw, 4096, &err), 0);
    assert_int_equal(n, 3);
    mig_pages_writer_free(&w);

    /* Every page RAW at the largest batch: fits MIG_PAGES_MAX_PAYLOAD exactly. */
    assert_int_equal(mig_pages_writer_init(&w, MIG_PAGES_MAX_COUNT, SIZE_MAX, &err), 0);
    n = 0;
    while (!mig_pages_full(&w))
        assert_int_equal(mig_pages_add(&w, (uint64_t)n++, MIG_PAGE_RAW, raw, 4096, &err), 0);
    assert_int_equal(n, MIG_PAGES_MAX_COUNT);
    const uint8_t *data;
    size_t len;
    assert_int_equal(mig_pages_seal(&w, &data, &len, &err), 0);
    assert_int_equal(len, REC_HEADER_SIZE + MIG_PAGES_MAX_PAYLOAD);
    struct rec_header h;
    assert_int_equal(rec_parse_header(data, &h, &err), 0);
    assert_int_equal(mig_check_header(&h, &err), 0);
    mig_pages_writer_free(&w);
}

/* Builds a PAGES payload by hand: count, then entries. */
static void raw_begin(struct rec_buf *b, uint32_t count)
{
    rec_buf_init(b);
    rec_begin(b, REC_TYPE_MIG_PAGES, 1, 0);
    rec_put_u32(b, count);
}

static void raw_entry(struct rec_buf *b, uint64_t index, uint8_t enc, uint32_t len,
                      uint32_t actual)
{
    rec_put_u64(b, index);
    rec_put_u8(b, enc);
    rec_put_u32(b, len);
    for (uint32_t i = 0; i < actual; i++)
        rec_put_u8(b, 0);
}

static void expect_iter_error(struct rec_buf *b, uint64_t nr_pages, const char *why)
{
    rec_end(b);
    struct rec_header h;
    struct rec_reader p;
    struct tern_err err;
    struct mig_pages_iter it;
    only_record(b, &h, &p);
    err.msg[0] = 0;
    assert_int_equal(mig_pages_iter_init(&it, &h, &p, nr_pages, &err), -1);
    if (!strstr(err.msg, why))
        fail_msg("PAGES error '%s' does not mention '%s'", err.msg, why);
    rec_buf_free(b);
}

static void test_pages_iter_errors(void **state)
{
    (void)state;
    struct rec_buf b;
    /* Index beyond RAM. */
    raw_begin(&b, 2);
    raw_entry(&b, 9, MIG_PAGE_ZERO, 0, 0);
    raw_entry(&b, 10, MIG_PAGE_ZERO, 0, 0);
    expect_iter_error(&b, 10, "index 10, RAM has 10 pages");
    raw_begin(&b, 1);
    raw_entry(&b, UINT64_MAX, MIG_PAGE_ZERO, 0, 0);
    expect_iter_error(&b, 10, "RAM has 10 pages");
    /* Length past the end of the record. */
    raw_begin(&b, 1);
    raw_entry(&b, 1, MIG_PAGE_RAW, 4096, 4095);
    expect_iter_error(&b, 10, "payload of 4096 bytes, 4095 left");
    raw_begin(&b, 2);
    raw_entry(&b, 1, MIG_PAGE_LZ4, 20, 20);
    raw_entry(&b, 2, MIG_PAGE_XOR, 30, 3);
    expect_iter_error(&b, 10, "30 bytes, 3 left");
    /* Unknown encoding. */
    raw_begin(&b, 1);
    raw_entry(&b, 1, 4, 0, 0);
    expect_iter_error(&b, 10, "unknown encoding 4");
    raw_begin(&b, 1);
    raw_entry(&b, 1, 0xff, 0, 0);
    expect_iter_error(&b, 10, "unknown encoding 255");
    /* Lengths not valid for the encoding. */
    raw_begin(&b, 1);
    raw_entry(&b, 1, MIG_PAGE_ZERO, 5, 5);
    expect_iter_error(&b, 10, "encoding 0 with a payload of 5");
    raw_begin(&b, 1);
    raw_entry(&b, 1, MIG_PAGE_RAW, 100, 100);
    expect_iter_error(&b, 10, "encoding 1 with a payload of 100");
    raw_begin(&b, 1);
    raw_entry(&b, 1, MIG_PAGE_LZ4, 0, 0);
    expect_iter_error(&b, 10, "encoding 2 with a payload of 0");
    raw_begin(&b, 1);
    raw_entry(&b, 1, MIG_PAGE_XOR, 4096, 4096);
    expect_iter_error(&b, 10, "encoding 3 with a payload of 4096");
    raw_begin(&b, 1);
    raw_entry(&b, 1, MIG_PAGE_LZ4, UINT32_MAX, 0);
    expect_iter_error(&b, 10, "payload of 4294967295");
    /* Count mismatch: more promised than present, fewer than present. */
    raw_begin(&b, 3);
    raw_entry(&b, 1, MIG_PAGE_ZERO, 0, 0);
    raw_entry(&b, 2, MIG_PAGE_ZERO, 0, 0);
    expect_iter_error(&b, 10, "ends after 2 of its 3 pages");
    raw_begin(&b, 1);
    raw_entry(&b, 1, MIG_PAGE_ZERO, 0, 0);
    raw_entry(&b, 2, MIG_PAGE_ZERO, 0, 0);
    expect_iter_error(&b, 10, "13 bytes after its 1 pages");
    raw_begin(&b, 1);
    raw_entry(&b, 1, MIG_PAGE_ZERO, 0, 0);
    rec_put_u8(&b, 0); /* half an entry */
    expect_iter_error(&b, 10, "1 bytes after");
    raw_begin(&b, 0);
    rec_put_u8(&b, 0);
    expect_iter_error(&b, 10, "1 bytes after its 0 pages");
    /* Count over the limit, and no count at all. */
    raw_begin(&b, MIG_PAGES_MAX_COUNT + 1);
    expect_iter_error(&b, 10, "257 pages");
    rec_buf_init(&b);
    rec_begin(&b, REC_TYPE_MIG_PAGES, 1, 0);
    rec_put_u16(&b, 0);
    expect_iter_error(&b, 10, "no page count");
    /* Wrong type, version, flags. */
    rec_buf_init(&b);
    rec_begin(&b, REC_TYPE_MIG_STATE, 1, 0);
    rec_put_u32(&b, 0);
    expect_iter_error(&b, 10, "expected a migration PAGES");
    rec_buf_init(&b);
    rec_begin(&b, REC_TYPE_MIG_PAGES, 2, 0);
    rec_put_u32(&b, 0);
    expect_iter_error(&b, 10, "version 2");
    rec_buf_init(&b);
    rec_begin(&b, REC_TYPE_MIG_PAGES, 1, 4);
    rec_put_u32(&b, 0);
    expect_iter_error(&b, 10, "flags 0x4");
    /* Nothing in RAM: every index is out of range. */
    raw_begin(&b, 1);
    raw_entry(&b, 0, MIG_PAGE_ZERO, 0, 0);
    expect_iter_error(&b, 0, "RAM has 0 pages");
}

/* ---- small records ---- */

static void test_small_records_round_trip(void **state)
{
    (void)state;
    struct rec_buf b;
    struct rec_header h;
    struct rec_reader p;
    struct tern_err err;
    rec_buf_init(&b);

    struct mig_round_end re = {.round = 7, .stream = 3, .pages = 123456789012ull}, re2;
    mig_round_end_encode(&b, &re);
    only_record(&b, &h, &p);
    assert_int_equal(h.length, 14);
    assert_int_equal(mig_round_end_decode(&h, &p, &re2, &err), 0);
    assert_int_equal(re2.round, 7);
    assert_int_equal(re2.stream, 3);
    assert_int_equal(re2.pages, 123456789012ull);

    rec_buf_reset(&b);
    struct mig_end end = {.rounds = 9, .pages = 1u << 20, .bytes = 5ull << 30}, end2;
    mig_end_encode(&b, &end);
    only_record(&b, &h, &p);
    assert_int_equal(mig_end_decode(&h, &p, &end2, &err), 0);
    assert_int_equal(end2.rounds, 9);
    assert_int_equal(end2.pages, 1u << 20);
    assert_int_equal(end2.bytes, 5ull << 30);

    rec_buf_reset(&b);
    struct mig_ready rd = {.pages = 77}, rd2;
    mig_ready_encode(&b, &rd);
    only_record(&b, &h, &p);
    assert_int_equal(mig_ready_decode(&h, &p, &rd2, &err), 0);
    assert_int_equal(rd2.pages, 77);

    rec_buf_reset(&b);
    mig_commit_encode(&b);
    only_record(&b, &h, &p);
    assert_int_equal(h.type, REC_TYPE_MIG_COMMIT);
    assert_int_equal(h.length, 0);
    assert_int_equal(mig_commit_decode(&h, &p, &err), 0);
    assert_int_equal(mig_running_decode(&h, &p, &err), -1);

    rec_buf_reset(&b);
    mig_running_encode(&b);
    only_record(&b, &h, &p);
    assert_int_equal(mig_running_decode(&h, &p, &err), 0);
    assert_int_equal(mig_cancel_decode(&h, &p, &err), -1);

    rec_buf_reset(&b);
    mig_cancel_encode(&b);
    only_record(&b, &h, &p);
    assert_int_equal(mig_cancel_decode(&h, &p, &err), 0);
    assert_int_equal(mig_commit_decode(&h, &p, &err), -1);

    rec_buf_reset(&b);
    struct mig_error e;
    mig_error_encode(&b, MIG_ERR_CONFIG, "VM configuration differs");
    only_record(&b, &h, &p);
    assert_int_equal(mig_error_decode(&h, &p, &e, &err), 0);
    assert_int_equal(e.code, MIG_ERR_CONFIG);
    assert_string_equal(e.msg, "VM configuration differs");
    rec_buf_free(&b);

    for (uint32_t t = REC_TYPE_MIG_HELLO; t <= REC_TYPE_MIG_CANCEL; t++)
        assert_non_null(mig_record_name(t));
    assert_null(mig_record_name(0x0300));
    assert_null(mig_record_name(0x030b));
    assert_null(mig_record_name(REC_TYPE_VCPU_STATE));
}

static void test_error_record(void **state)
{
    (void)state;
    struct rec_buf b;
    struct rec_header h;
    struct rec_reader p;
    struct tern_err err;
    struct mig_error e;
    rec_buf_init(&b);
    /* Long messages are cut on encode. */
    char *long_msg = malloc(5000);
    memset(long_msg, 'x', 4999);
    long_msg[4999] = 0;
    mig_error_encode(&b, 1234, long_msg);
    only_record(&b, &h, &p);
    assert_int_equal(mig_error_decode(&h, &p, &e, &err), 0);
    assert_int_equal(e.code, 1234); /* unknown codes pass */
    assert_int_equal(strlen(e.msg), MIG_ERROR_MAX_MSG);
    /* A peer's longer message is cut on decode; control characters go. */
    rec_buf_reset(&b);
    rec_begin(&b, REC_TYPE_MIG_ERROR, 1, 0);
    rec_put_u32(&b, MIG_ERR_OTHER);
    rec_put_u16(&b, 3000);
    rec_put_bytes(&b, "a\nb\033c\x7f", 6);
    rec_put_bytes(&b, long_msg, 2994);
    rec_end(&b);
    only_record(&b, &h, &p);
    assert_int_equal(mig_error_decode(&h, &p, &e, &err), 0);
    assert_int_equal(strlen(e.msg), MIG_ERROR_MAX_MSG);
    assert_memory_equal(e.msg, "a?b?c?x", 7);
    /* An embedded NUL is a control character too. */
    rec_buf_reset(&b);
    rec_begin(&b, REC_TYPE_MIG_ERROR, 1, 0);
    rec_put_u32(&b, 0);
    rec_put_u16(&b, 3);
    rec_put_bytes(&b, "a\0b", 3);
    rec_end(&b);
    only_record(&b, &h, &p);
    assert_int_equal(mig_error_decode(&h, &p, &e, &err), 0);
    assert_string_equal(e.msg, "a?b");
    /* Empty message, NULL message. */
    rec_buf_reset(&b);
    mig_error_encode(&b, 0, NULL);
    only_record(&b, &h, &p);
    assert_int_equal(mig_error_decode(&h, &p, &e, &err), 0);
    assert_string_equal(e.msg, "");
    /* Length beyond the payload, trailing bytes, no code. */
    rec_buf_reset(&b);
    rec_begin(&b, REC_TYPE_MIG_ERROR, 1, 0);
    rec_put_u32(&b, 0);
    rec_put_u16(&b, 10);
    rec_put_bytes(&b, "abc", 3);
    rec_end(&b);
    only_record(&b, &h, &p);
    assert_int_equal(mig_error_decode(&h, &p, &e, &err), -1);
    rec_buf_reset(&b);
    mig_error_encode(&b, 0, "abc");
    b.data[REC_HEADER_SIZE + 4] = 2; /* says 2 bytes, 3 follow */
    {
        /* Re-frame so the CRC matches the edited payload. */
        struct rec_buf c;
        rec_buf_init(&c);
        rec_begin(&c, REC_TYPE_MIG_ERROR, 1, 0);
        rec_put_bytes(&c, b.data + REC_HEADER_SIZE, b.len - REC_HEADER_SIZE);
        rec_end(&c);
        only_record(&c, &h, &p);
        assert_int_equal(mig_error_decode(&h, &p, &e, &err), -1);
        assert_non_null(strstr(err.msg, "trailing"));
        rec_buf_free(&c);
    }
    rec_buf_reset(&b);
    rec_begin(&b, REC_TYPE_MIG_ERROR, 1, 0);
    rec_put_u16(&b, 0);
    rec_end(&b);
    only_record(&b, &h, &p);
    assert_int_equal(mig_error_decode(&h, &p, &e, &err), -1);
    free(long_msg);
    rec_buf_free(&b);
}

/* A record of `type` with `n` payload bytes, version and flags: the
 * bytes are 1 (so END counts a round) except a ROUND_END's stream field
 * (bytes 4-5), which must stay below MIG_MAX_STREAMS. */
static void make_raw(struct rec_buf *b, uint32_t type, size_t n, uint16_t version, uint16_t flags)
{
    rec_buf_reset(b);
    rec_begin(b, type, version, flags);
    for (size_t i = 0; i < n; i++)
        rec_put_u8(b, type == REC_TYPE_MIG_ROUND_END && i == 5 ? 0 : 1);
    rec_end(b);
}

static void test_small_records_errors(void **state)
{
    (void)state;
    struct rec_buf b;
    struct rec_header h;
    struct rec_reader p;
    struct tern_err err;
    struct mig_round_end re;
    struct mig_end end;
    struct mig_ready rd;
    rec_buf_init(&b);
    /* Each fixed-size record: one byte short, one byte long, wrong version, flags. */
    struct {
        uint32_t type;
        size_t len;
    } fixed[] = {{REC_TYPE_MIG_ROUND_END, 14}, {REC_TYPE_MIG_END, 20}, {REC_TYPE_MIG_READY, 8},
                 {REC_TYPE_MIG_COMMIT, 0},     {REC_TYPE_MIG_RUNNING, 0}, {REC_TYPE_MIG_CANCEL, 0}};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        for (int variant = 0; variant < 5; variant++) {
            size_t n = fixed[i].len;
            uint16_t version = 1, flags = 0;
            switch (variant) {
            case 0:
                break; /* valid */
            case 1:
                if (n == 0)
                    continue;
                n--;
                break;
            case 2:
                n++;
                break;
            case 3:
                version = 0;
                break;
            case 4:
                flags = 0x8000;
                break;
            }
            make_raw(&b, fixed[i].type, n, version, flags);
            only_record(&b, &h, &p);
            int rc;
            switch (fixed[i].type) {
            case REC_TYPE_MIG_ROUND_END:
                rc = mig_round_end_decode(&h, &p, &re, &err);
                break;
            case REC_TYPE_MIG_END:
                rc = mig_end_decode(&h, &p, &end, &err);
                break;
            case REC_TYPE_MIG_READY:
                rc = mig_ready_decode(&h, &p, &rd, &err);
                break;
            case REC_TYPE_MIG_COMMIT:
                rc = mig_commit_decode(&h, &p, &err);
                break;
            case REC_TYPE_MIG_RUNNING:
                rc = mig_running_decode(&h, &p, &err);
                break;
            default:
                rc = mig_cancel_decode(&h, &p, &err);
                break;
            }
            if (rc != (variant == 0 ? 0 : -1))
                fail_msg("type 0x%x variant %d: rc %d (%s)", fixed[i].type, variant, rc,
                         err.msg);
        }
    }
    /* Values: ROUND_END for a stream beyond the maximum, END after 0 rounds. */
    rec_buf_reset(&b);
    mig_round_end_encode(&b, &(struct mig_round_end){.round = 1, .stream = MIG_MAX_STREAMS});
    only_record(&b, &h, &p);
    assert_int_equal(mig_round_end_decode(&h, &p, &re, &err), -1);
    rec_buf_reset(&b);
    mig_end_encode(&b, &(struct mig_end){.rounds = 0});
    only_record(&b, &h, &p);
    assert_int_equal(mig_end_decode(&h, &p, &end, &err), -1);
    assert_non_null(strstr(err.msg, "0 rounds"));
    rec_buf_free(&b);
}

/* ---- STATE ---- */

static void test_state_record(void **state)
{
    (void)state;
    struct tern_err err;
    size_t n = 3u << 20; /* a few MiB, like real VM state */
    uint8_t *st = malloc(n);
    for (size_t i = 0; i < n; i++)
        st[i] = (uint8_t)(i * 31 + (i >> 12));
    struct rec_buf b;
    rec_buf_init(&b);
    mig_state_encode(&b, st, n);
    struct rec_header h;
    struct rec_reader p;
    only_record(&b, &h, &p);
    assert_int_equal(mig_check_header(&h, &err), 0);
    const uint8_t *view;
    size_t len;
    assert_int_equal(mig_state_decode(&h, &p, &view, &len, &err), 0);
    assert_int_equal(len, n);
    assert_ptr_equal(view, b.data + REC_HEADER_SIZE);
    assert_memory_equal(view, st, n);

    /* The writev form: header + the state where it lies gives the same bytes. */
    uint8_t hdr[REC_HEADER_SIZE];
    assert_int_equal(mig_state_header(hdr, st, n, &err), 0);
    assert_memory_equal(hdr, b.data, REC_HEADER_SIZE);
    assert_int_equal(mig_state_header(hdr, st, 0, &err), -1);
    assert_int_equal(mig_state_header(hdr, st, (size_t)REC_MAX_PAYLOAD + 1, &err), -1);

    /* Empty STATE is refused, on both sides. */
    rec_buf_reset(&b);
    mig_state_encode(&b, st, 0);
    assert_int_equal(rec_buf_check(&b, &err), -1);
    rec_buf_reset(&b);
    make_raw(&b, REC_TYPE_MIG_STATE, 0, 1, 0);
    only_record(&b, &h, &p);
    assert_int_equal(mig_state_decode(&h, &p, &view, &len, &err), -1);
    assert_null(view);
    make_raw(&b, REC_TYPE_MIG_STATE, 5, 2, 0);
    only_record(&b, &h, &p);
    assert_int_equal(mig_state_decode(&h, &p, &view, &len, &err), -1);
    make_raw(&b, REC_TYPE_MIG_READY, 8, 1, 0);
    only_record(&b, &h, &p);
    assert_int_equal(mig_state_decode(&h, &p, &view, &len, &err), -1);
    free(st);
    rec_buf_free(&b);
}

/* ---- headers for streaming readers ---- */

static void test_check_header(void **state)
{
    (void)state;
    struct tern_err err;
    struct rec_header h = {.type = REC_TYPE_MIG_PAGES, .version = 1};
    h.length = MIG_PAGES_MAX_PAYLOAD;
    assert_int_equal(mig_check_header(&h, &err), 0);
    h.length++;
    assert_int_equal(mig_check_header(&h, &err), -1);
    assert_non_null(strstr(err.msg, "PAGES record of"));
    uint32_t small[][2] = {{REC_TYPE_MIG_ROUND_END, 14}, {REC_TYPE_MIG_END, 20},
                           {REC_TYPE_MIG_READY, 8},      {REC_TYPE_MIG_COMMIT, 0},
                           {REC_TYPE_MIG_RUNNING, 0},    {REC_TYPE_MIG_CANCEL, 0},
                           {REC_TYPE_MIG_STATE, REC_MAX_PAYLOAD}};
    for (size_t i = 0; i < sizeof(small) / sizeof(small[0]); i++) {
        h = (struct rec_header){.type = small[i][0], .version = 1, .length = small[i][1]};
        assert_int_equal(mig_check_header(&h, &err), 0);
        h.length++;
        assert_int_equal(mig_check_header(&h, &err), -1);
    }
    h = (struct rec_header){.type = REC_TYPE_MIG_HELLO, .version = 1, .length = 1000};
    assert_int_equal(mig_check_header(&h, &err), 0);
    h.flags = MIG_HELLO_COMMIT_GATE;
    assert_int_equal(mig_check_header(&h, &err), 0);
    h.flags = 0x8000;
    assert_int_equal(mig_check_header(&h, &err), -1);
    h.flags = 0;
    h.length = 1u << 20;
    assert_int_equal(mig_check_header(&h, &err), -1);
    h = (struct rec_header){.type = REC_TYPE_SNAP_HEADER, .version = 1};
    assert_int_equal(mig_check_header(&h, &err), -1);
    assert_non_null(strstr(err.msg, "not part of the migration stream"));
    h = (struct rec_header){.type = REC_TYPE_MIG_COMMIT, .version = 2};
    assert_int_equal(mig_check_header(&h, &err), -1);
    h = (struct rec_header){.type = REC_TYPE_MIG_COMMIT, .version = 1, .flags = 1};
    assert_int_equal(mig_check_header(&h, &err), -1);
}

/* ---- a whole conversation ---- */

/* One stream's records, source side then destination side, walked the
 * way a receiver would: header check, then the decoder for the type. */
static void test_handover_sequence(void **state)
{
    (void)state;
    struct tern_err err;
    struct rec_buf b;
    rec_buf_init(&b);
    struct mig_hello hello;
    sample_hello(&hello, 64ull << 20);
    hello.stream = 0;
    hello.nr_streams = 1;
    mig_hello_encode(&b, &hello);
    struct mig_pages_writer w;
    assert_int_equal(mig_pages_writer_init(&w, 16, 1 << 20, &err), 0);
    for (uint64_t i = 0; i < 5; i++)
        assert_int_equal(mig_pages_add(&w, i, MIG_PAGE_ZERO, NULL, 0, &err), 0);
    const uint8_t *data;
    size_t len;
    assert_int_equal(mig_pages_seal(&w, &data, &len, &err), 0);
    rec_put_bytes(&b, data, len);
    mig_round_end_encode(&b, &(struct mig_round_end){.round = 0, .stream = 0, .pages = 5});
    uint8_t st[100] = {1};
    mig_state_encode(&b, st, sizeof(st));
    mig_end_encode(&b, &(struct mig_end){.rounds = 1, .pages = 5, .bytes = len});
    mig_ready_encode(&b, &(struct mig_ready){.pages = 5});
    mig_commit_encode(&b);
    mig_running_encode(&b);
    assert_int_equal(rec_buf_check(&b, &err), 0);

    static const uint32_t order[] = {REC_TYPE_MIG_HELLO, REC_TYPE_MIG_PAGES,
                                     REC_TYPE_MIG_ROUND_END, REC_TYPE_MIG_STATE,
                                     REC_TYPE_MIG_END, REC_TYPE_MIG_READY,
                                     REC_TYPE_MIG_COMMIT, REC_TYPE_MIG_RUNNING};
    struct rec_reader r, p;
    struct rec_header h;
    rec_reader_init(&r, b.data, b.len);
    uint64_t nr_pages = 0, pages = 0;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        assert_int_equal(rec_next(&r, &h, &p, &err), 1);
        assert_int_equal(h.type, order[i]);
        assert_int_equal(mig_check_header(&h, &err), 0);
        switch (h.type) {
        case REC_TYPE_MIG_HELLO: {
            struct mig_hello got;
            uint32_t code;
            assert_int_equal(mig_hello_decode(&h, &p, &got, &err), 0);
            assert_int_equal(mig_hello_check(&hello, &got, &code, &err), 0);
            nr_pages = mig_hello_nr_pages(&got);
            break;
        }
        case REC_TYPE_MIG_PAGES: {
            struct mig_pages_iter it;
            struct mig_page pg;
            assert_int_equal(mig_pages_iter_init(&it, &h, &p, nr_pages, &err), 0);
            while (mig_pages_iter_next(&it, &pg))
                pages++;
            break;
        }
        case REC_TYPE_MIG_ROUND_END: {
            struct mig_round_end re;
            assert_int_equal(mig_round_end_decode(&h, &p, &re, &err), 0);
            assert_int_equal(re.pages, pages);
            break;
        }
        case REC_TYPE_MIG_STATE: {
            const uint8_t *v;
            size_t n;
            assert_int_equal(mig_state_decode(&h, &p, &v, &n, &err), 0);
            assert_int_equal(n, sizeof(st));
            break;
        }
        case REC_TYPE_MIG_END: {
            struct mig_end e;
            assert_int_equal(mig_end_decode(&h, &p, &e, &err), 0);
            assert_int_equal(e.pages, pages);
            break;
        }
        case REC_TYPE_MIG_READY: {
            struct mig_ready rd;
            assert_int_equal(mig_ready_decode(&h, &p, &rd, &err), 0);
            break;
        }
        case REC_TYPE_MIG_COMMIT:
            assert_int_equal(mig_commit_decode(&h, &p, &err), 0);
            break;
        default:
            assert_int_equal(mig_running_decode(&h, &p, &err), 0);
        }
    }
    assert_int_equal(rec_next(&r, &h, &p, &err), 0);
    mig_pages_writer_free(&w);
    rec_buf_free(&b);
}


/* ---- CRC-32 (proto/crc32.h): the same as zlib's, fast path or not ---- */

static void test_crc32_matches_zlib(void **state)
{
    (void)state;
    enum { N = 70000 };
    uint8_t *buf = malloc(N + 64);
    assert_non_null(buf);
    uint32_t x = 12345;
    for (size_t i = 0; i < N + 64; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
    assert_int_equal(tern_crc32(0, buf, 0), 0);
    assert_int_equal(tern_crc32(0, "123456789", 9), 0xcbf43926u); /* the check value */
    /* Every length up to 300 at every alignment in 16, then large ones. */
    for (size_t off = 0; off < 16; off++)
        for (size_t len = 0; len <= 300; len++)
            assert_int_equal(tern_crc32(0, buf + off, len), tern_crc32_zlib(0, buf + off, len));
    static const size_t big[] = {1023, 1024, 4096, 4097, 65535, 65536, 69999, N};
    for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++) {
        uint32_t want = tern_crc32_zlib(0, buf + 3, big[i]);
        assert_int_equal(tern_crc32(0, buf + 3, big[i]), want);
        /* Chained in uneven pieces, with a non-zero starting value too. */
        uint32_t c = 0;
        for (size_t at = 0; at < big[i];) {
            size_t piece = (at * 7 + 61) % 500 + 1;
            if (piece > big[i] - at)
                piece = big[i] - at;
            c = tern_crc32(c, buf + 3 + at, piece);
            at += piece;
        }
        assert_int_equal(c, want);
        assert_int_equal(tern_crc32(0xdeadbeef, buf, big[i]), tern_crc32_zlib(0xdeadbeef, buf, big[i]));
    }
    /* All-zero and all-ones data (carry-less products of special values). */
    memset(buf, 0, N);
    assert_int_equal(tern_crc32(0, buf, N), tern_crc32_zlib(0, buf, N));
    memset(buf, 0xff, N);
    assert_int_equal(tern_crc32(0, buf, N), tern_crc32_zlib(0, buf, N));
    free(buf);
}

/* ---- the sender's round-0 encoding (page_encoder_set_insert off, lazy
 * cache): what it sends decodes to the page, and it leaves the cache as
 * the receiver's copies are ---- */

static void roundtrip(struct page_encoder *e, uint64_t pfn, const uint8_t *page, uint8_t *held,
                      uint8_t want_enc)
{
    uint8_t out[PAGE_ENC_MAX_OUT], enc;
    struct tern_err err;
    uint32_t len = page_encode(e, pfn, page, out, &enc);
    assert_int_equal(enc, want_enc);
    assert_int_equal(page_decode(enc, out, len, held, &err), 0);
    assert_memory_equal(held, page, 4096);
}

static void test_encoder_without_inserts(void **state)
{
    (void)state;
    struct page_encoder *e;
    struct tern_err err;
    assert_int_equal(page_encoder_create_lazy(&e, 1u << 20, &err), 0);
    static uint8_t page[4096], held[4][4096];
    uint32_t x = 99;
    for (int i = 0; i < 4096; i++) {
        x = x * 1103515245u + 12345u;
        page[i] = (uint8_t)(x >> 16);
    }
    page_encoder_set_insert(e, false);
    roundtrip(e, 0, page, held[0], PAGE_ENC_RAW);
    /* Not cached: the same page again is RAW again, not an XOR. */
    page[100] ^= 1;
    roundtrip(e, 0, page, held[0], PAGE_ENC_RAW);
    static uint8_t zero[4096], text[4096];
    roundtrip(e, 1, zero, held[1], PAGE_ENC_ZERO);
    for (int i = 0; i < 4096; i++)
        text[i] = (uint8_t)("tern migrates pages "[i % 20]);
    roundtrip(e, 2, text, held[2], PAGE_ENC_LZ4);
    struct page_codec_stats st;
    page_encoder_stats(e, &st);
    assert_int_equal(st.cache_hits, 0);
    /* Inserting again: sent once more as RAW, then XOR against it. */
    page_encoder_set_insert(e, true);
    roundtrip(e, 3, page, held[3], PAGE_ENC_RAW);
    page[200] ^= 0x55;
    roundtrip(e, 3, page, held[3], PAGE_ENC_XOR);
    /* A page already cached keeps its delta even with inserts off. */
    page_encoder_set_insert(e, false);
    page[300] ^= 0x0f;
    roundtrip(e, 3, page, held[3], PAGE_ENC_XOR);
    page_encoder_stats(e, &st);
    assert_int_equal(st.cache_hits, 2);
    page_encoder_destroy(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_digest),
        cmocka_unit_test(test_hello_round_trip),
        cmocka_unit_test(test_hello_errors),
        cmocka_unit_test(test_hello_check),
        cmocka_unit_test(test_pages_round_trip),
        cmocka_unit_test(test_pages_writer_limits),
        cmocka_unit_test(test_pages_iter_errors),
        cmocka_unit_test(test_small_records_round_trip),
        cmocka_unit_test(test_error_record),
        cmocka_unit_test(test_small_records_errors),
        cmocka_unit_test(test_state_record),
        cmocka_unit_test(test_check_header),
        cmocka_unit_test(test_handover_sequence),
        cmocka_unit_test(test_crc32_matches_zlib),
        cmocka_unit_test(test_encoder_without_inserts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
