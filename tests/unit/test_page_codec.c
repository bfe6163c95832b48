/* Page codec (migrate/page_codec.c): the choice per page (ZERO, RAW, LZ4,
 * XOR), every round trip, the delta cache (hits, LRU eviction, forget,
 * reset, disabled), the rule that what is cached is the private copy even
 * while the guest writes the page, and every decoder error path. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lz4.h>

#include "migrate/page_codec.h"

/* The test guest's page format, built for the host (see test_guest_pages.c). */
#include "tests/guest/pages.c"

#define PG 4096u

static uint64_t rng_state = 0x243f6a8885a308d3ull;

static uint64_t rnd(void)
{
    return tg_rng_next(&rng_state);
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = rnd();
        memcpy(p + i, &v, n - i < 8 ? n - i : 8);
    }
}

/* Text-like content: compressible, not trivially. */
static void fill_text_n(uint8_t *p, size_t len)
{
    static const char *words[] = {"guest ", "page ", "migration ", "tern ", "dirty ", "log ",
                                  "round ", "\n"};
    size_t o = 0;
    while (o < len) {
        const char *w = words[rnd() % 8];
        size_t n = strlen(w);
        if (n > len - o)
            n = len - o;
        memcpy(p + o, w, n);
        o += n;
    }
}

static void fill_text(uint8_t *p)
{
    fill_text_n(p, PG);
}

static struct page_encoder *encoder(size_t cache)
{
    struct page_encoder *e;
    struct tern_err err;
    assert_int_equal(page_encoder_create(&e, cache, &err), 0);
    return e;
}

/* Encodes src as pfn, decodes the payload into dst (the receiver's copy)
 * and returns the encoding; *len gets the payload length. */
static uint8_t send_page(struct page_encoder *e, uint64_t pfn, const uint8_t *src, uint8_t *dst,
                         uint32_t *len)
{
    uint8_t out[PAGE_ENC_MAX_OUT];
    uint8_t enc = 0xee;
    uint32_t n = page_encode(e, pfn, src, out, &enc);
    assert_true(n <= PG);
    struct tern_err err;
    if (page_decode(enc, out, n, dst, &err) != 0)
        fail_msg("decode of %s page (%u bytes) failed: %s", page_enc_name(enc), n, err.msg);
    if (len)
        *len = n;
    return enc;
}

static void test_zero_page(void **state)
{
    (void)state;
    struct page_encoder *e = encoder(1 << 20);
    uint8_t *src = calloc(1, PG), *dst = malloc(PG);
    memset(dst, 0x5a, PG); /* the receiver's copy held something else */
    uint32_t len;
    assert_int_equal(send_page(e, 3, src, dst, &len), PAGE_ENC_ZERO);
    assert_int_equal(len, 0);
    assert_memory_equal(src, dst, PG);
    struct page_codec_stats st;
    page_encoder_stats(e, &st);
    assert_int_equal(st.pages[PAGE_ENC_ZERO], 1);
    assert_int_equal(st.bytes_in[PAGE_ENC_ZERO], PG);
    assert_int_equal(st.bytes_out[PAGE_ENC_ZERO], 0);
    free(src);
    free(dst);
    page_encoder_destroy(e);
}

static void test_random_page_is_raw(void **state)
{
    (void)state;
    struct page_encoder *e = encoder(0);
    uint8_t *src = malloc(PG), *dst = calloc(1, PG);
    for (int i = 0; i < 20; i++) {
        fill_random(src, PG);
        uint32_t len;
        assert_int_equal(send_page(e, (uint64_t)i, src, dst, &len), PAGE_ENC_RAW);
        assert_int_equal(len, PG);
        assert_memory_equal(src, dst, PG);
    }
    free(src);
    free(dst);
    page_encoder_destroy(e);
}

static void test_compressible_page_is_lz4(void **state)
{
    (void)state;
    struct page_encoder *e = encoder(1 << 20);
    uint8_t *src = malloc(PG), *dst = calloc(1, PG);
    fill_text(src);
    uint32_t len;
    assert_int_equal(send_page(e, 1, src, dst, &len), PAGE_ENC_LZ4);
    assert_true(len > 0 && len < PG / 2);
    assert_memory_equal(src, dst, PG);
    /* A single non-zero byte: LZ4 of an almost empty page is tiny. */
    memset(src, 0, PG);
    src[1000] = 7;
    assert_int_equal(send_page(e, 2, src, dst, &len), PAGE_ENC_LZ4);
    assert_true(len < 64);
    assert_memory_equal(src, dst, PG);
    free(src);
    free(dst);
    page_encoder_destroy(e);
}

/* After a run of incompressible pages LZ4 backs off (it costs more than it
 * saves there), but compressible pages are noticed again within a few. */
static void test_lz4_backs_off_and_recovers(void **state)
{
    (void)state;
    struct page_encoder *e = encoder(0);
    uint8_t *src = malloc(PG), *dst = calloc(1, PG);
    uint32_t len;
    for (int i = 0; i < 200; i++) {
        fill_random(src, PG);
        assert_int_equal(send_page(e, (uint64_t)i, src, dst, &len), PAGE_ENC_RAW);
        assert_memory_equal(src, dst, PG);
    }
    fill_text(src);
    int raw_before_lz4 = 0;
    uint8_t enc;
    while ((enc = send_page(e, 1000 + (uint64_t)raw_before_lz4, src, dst, &len)) == PAGE_ENC_RAW) {
        assert_memory_equal(src, dst, PG); /* a skipped LZ4 still sends the page right */
        raw_before_lz4++;
        assert_true(raw_before_lz4 < 32);
    }
    assert_int_equal(enc, PAGE_ENC_LZ4);
    assert_true(raw_before_lz4 > 0);  /* it did back off */
    assert_true(raw_before_lz4 <= 16); /* and probed again soon */
    /* Recovered: the next compressible page goes LZ4 at once. */
    assert_int_equal(send_page(e, 5000, src, dst, &len), PAGE_ENC_LZ4);
    free(src);
    free(dst);
    page_encoder_destroy(e);
}

/* The test guest's pages: fresh ones are random (RAW); a re-sent page after
 * one 64-byte write goes as XOR in under 100 bytes. */
static void test_guest_page_resent_as_xor(void **state)
{
    (void)state;
    struct page_encoder *e = encoder(1 << 20);
    struct tg_page *p = aligned_alloc(PG, PG);
    uint8_t *dst = calloc(1, PG);
    uint64_t rng = 99;
    for (uint64_t frame = 100; frame < 140; frame++) {
        tg_page_init(p, frame, 7);
        uint32_t len;
        assert_int_equal(send_page(e, frame, (uint8_t *)p, dst, &len), PAGE_ENC_RAW);
        assert_memory_equal(p, dst, PG);
        for (int round = 0; round < 5; round++) {
            tg_page_dirty(p, &rng);
            assert_int_equal(send_page(e, frame, (uint8_t *)p, dst, &len), PAGE_ENC_XOR);
            /* gen + csum (16 bytes) and the 64 payload bytes, 2-3 bytes
             * of run lengths each. */
            assert_true(len >= 64 && len <= 90);
            assert_memory_equal(p, dst, PG);
            assert_int_equal(tg_page_verify((struct tg_page *)dst, frame, (uint32_t)p->gen),
                             TG_PAGE_OK);
        }
        /* Unchanged since it was last sent: an empty XOR. */
        assert_int_equal(send_page(e, frame, (uint8_t *)p, dst, &len), PAGE_ENC_XOR);
        assert_int_equal(len, 0);
    }
    struct page_codec_stats st;
    page_encoder_stats(e, &st);
    assert_int_equal(st.pages[PAGE_ENC_RAW], 40);
    assert_int_equal(st.pages[PAGE_ENC_XOR], 40 * 6);
    assert_int_equal(st.cache_hits, 40 * 6);
    assert_int_equal(st.cache_misses, 40);
    assert_true(st.bytes_out[PAGE_ENC_XOR] <= 40 * 5 * 90);
    assert_int_equal(st.bytes_in[PAGE_ENC_XOR], 40 * 6 * PG);
    free(p);
    free(dst);
    page_encoder_destroy(e);
}

/* A page that changed a lot: XOR would not beat LZ4 or RAW, and the
 * smallest wins. */
static void test_smallest_encoding_wins(void **state)
{
    (void)state;
    struct page_encoder *e = encoder(1 << 20);
    uint8_t *src = malloc(PG), *dst = calloc(1, PG);
    fill_random(src, PG);
    assert_int_equal(send_page(e, 9, src, dst, NULL), PAGE_ENC_RAW);
    fill_text(src); /* everything changed, but it compresses */
    uint32_t len;
    assert_int_equal(send_page(e, 9, src, dst, &len), PAGE_ENC_LZ4);
    assert_memory_equal(src, dst, PG);
    fill_random(src, PG); /* everything changed, incompressible */
    assert_int_equal(send_page(e, 9, src, dst, &len), PAGE_ENC_RAW);
    assert_memory_equal(src, dst, PG);
    /* Text page with a small change: XOR (a few bytes) beats LZ4 (~hundreds):
     * skip 2000 (2 bytes), length 1, one byte. */
    fill_text(src);
    send_page(e, 9, src, dst, NULL);
    src[2000] ^= 0xff;
    assert_int_equal(send_page(e, 9, src, dst, &len), PAGE_ENC_XOR);
    assert_int_equal(len, 4);
    assert_memory_equal(src, dst, PG);
    /* A page gone zero is ZERO, whatever the cache holds. */
    memset(src, 0, PG);
    assert_int_equal(send_page(e, 9, src, dst, &len), PAGE_ENC_ZERO);
    assert_memory_equal(src, dst, PG);
    free(src);
    free(dst);
    page_encoder_destroy(e);
}

/* One 2-way set (8 KiB of cache): LRU within the set. */
static void test_cache_eviction_lru(void **state)
{
    (void)state;
    struct page_encoder *e = encoder(2 * PG);
    struct page_codec_stats st;
    page_encoder_stats(e, &st);
    assert_int_equal(st.cache_entries, 2);
    uint8_t *pages[4], *recv[4];
    for (int i = 0; i < 4; i++) {
        pages[i] = malloc(PG);
        recv[i] = calloc(1, PG);
        fill_random(pages[i], PG);
    }
    send_page(e, 0, pages[0], recv[0], NULL);
    send_page(e, 1, pages[1], recv[1], NULL);
    pages[0][10] ^= 1;
    assert_int_equal(send_page(e, 0, pages[0], recv[0], NULL), PAGE_ENC_XOR); /* 0 recent */
    send_page(e, 2, pages[2], recv[2], NULL); /* evicts 1, the least recently sent */
    page_encoder_stats(e, &st);
    assert_int_equal(st.cache_evictions, 1);
    pages[1][10] ^= 1;
    assert_int_equal(send_page(e, 1, pages[1], recv[1], NULL), PAGE_ENC_RAW); /* evicts 0 */
    pages[2][10] ^= 1;
    assert_int_equal(send_page(e, 2, pages[2], recv[2], NULL), PAGE_ENC_XOR);
    pages[0][10] ^= 1;
    assert_int_equal(send_page(e, 0, pages[0], recv[0], NULL), PAGE_ENC_RAW);
    for (int i = 0; i < 3; i++)
        assert_memory_equal(pages[i], recv[i], PG);
    page_encoder_stats(e, &st);
    assert_int_equal(st.cache_evictions, 3);
    assert_int_equal(st.cache_hits, 2);
    assert_int_equal(st.cache_misses, 5);
    for (int i = 0; i < 4; i++) {
        free(pages[i]);
        free(recv[i]);
    }
    page_encoder_destroy(e);
}

/* Pages map to sets by index: two sets, pages 0 and 1 do not collide,
 * 0, 2 and 4 share a set. */
static void test_cache_sets(void **state)
{
    (void)state;
    struct page_encoder *e = encoder(4 * PG);
    uint8_t *src = malloc(PG), *dst = calloc(1, PG);
    fill_random(src, PG);
    for (uint64_t pfn = 0; pfn < 4; pfn++)
        send_page(e, pfn, src, dst, NULL); /* fills both sets */
    for (uint64_t pfn = 0; pfn < 4; pfn++)
        assert_int_equal(send_page(e, pfn, src, dst, NULL), PAGE_ENC_XOR);
    send_page(e, 4, src, dst, NULL); /* evicts 0 (LRU of set 0) */
    assert_int_equal(send_page(e, 1, src, dst, NULL), PAGE_ENC_XOR);
    assert_int_equal(send_page(e, 3, src, dst, NULL), PAGE_ENC_XOR);
    assert_int_equal(send_page(e, 2, src, dst, NULL), PAGE_ENC_XOR);
    assert_int_equal(send_page(e, 0, src, dst, NULL), PAGE_ENC_RAW);
    free(src);
    free(dst);
    page_encoder_destroy(e);
}

static void test_cache_disabled_forget_reset(void **state)
{
    (void)state;
    uint8_t *src = malloc(PG), *dst = calloc(1, PG);
    fill_random(src, PG);
    struct page_encoder *off = encoder(0);
    struct page_codec_stats st;
    page_encoder_stats(off, &st);
    assert_int_equal(st.cache_entries, 0);
    send_page(off, 5, src, dst, NULL);
    assert_int_equal(send_page(off, 5, src, dst, NULL), PAGE_ENC_RAW);
    page_encoder_forget(off, 5); /* harmless without a cache */
    page_encoder_destroy(off);

    struct page_encoder *e = encoder(1 << 20);
    send_page(e, 5, src, dst, NULL);
    send_page(e, 6, src, dst, NULL);
    assert_int_equal(send_page(e, 5, src, dst, NULL), PAGE_ENC_XOR);
    page_encoder_forget(e, 5);
    assert_int_equal(send_page(e, 5, src, dst, NULL), PAGE_ENC_RAW);
    assert_int_equal(send_page(e, 6, src, dst, NULL), PAGE_ENC_XOR);
    page_encoder_reset(e);
    assert_int_equal(send_page(e, 5, src, dst, NULL), PAGE_ENC_RAW);
    assert_int_equal(send_page(e, 6, src, dst, NULL), PAGE_ENC_RAW);
    /* A page that went zero is forgotten: its next version is not XOR. */
    memset(src, 0, PG);
    send_page(e, 6, src, dst, NULL);
    src[0] = 1;
    assert_int_equal(send_page(e, 6, src, dst, NULL), PAGE_ENC_LZ4);
    assert_memory_equal(src, dst, PG);
    free(src);
    free(dst);
    page_encoder_destroy(e);
}

/* The guest changes the page between encode calls: the cache must hold
 * the copy that was encoded, not point at guest memory, so each XOR is
 * against what the receiver holds. */
static void test_modified_between_encodes(void **state)
{
    (void)state;
    struct page_encoder *e = encoder(1 << 20);
    uint8_t *guest = malloc(PG), *sent = malloc(PG), *dst = calloc(1, PG);
    uint8_t out[PAGE_ENC_MAX_OUT], enc;
    struct tern_err err;
    fill_random(guest, PG);
    for (int i = 0; i < 50; i++) {
        memcpy(sent, guest, PG);
        uint32_t n = page_encode(e, 77, guest, out, &enc);
        /* The guest writes right after the encoder copied the page... */
        guest[rnd() % PG] ^= (uint8_t)(1 + rnd() % 255);
        guest[rnd() % PG] ^= (uint8_t)(1 + rnd() % 255);
        /* ...the receiver ends with exactly what was copied. */
        assert_int_equal(page_decode(enc, out, n, dst, &err), 0);
        assert_memory_equal(dst, sent, PG);
        if (i > 0)
            assert_int_equal(enc, PAGE_ENC_XOR);
    }
    free(guest);
    free(sent);
    free(dst);
    page_encoder_destroy(e);
}

/* The guest writes the page WHILE it is encoded: a thread keeps
 * rewriting 64-byte stretches. Whatever torn copies the encoder took, the
 * receiver stays in step with the encoder's cache, so one final encode
 * after the writer stops brings it to the page's final content. */
struct writer {
    uint8_t *page;
    atomic_int stop;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    uint64_t s = 12345;
    while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
        unsigned at = (unsigned)(tg_rng_next(&s) % (PG / 8 - 8)) * 8;
        for (unsigned i = 0; i < 8; i++) {
            uint64_t v = tg_rng_next(&s);
            __atomic_store_n((uint64_t *)(w->page + at + i * 8), v, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

static void test_concurrent_writer(void **state)
{
    (void)state;
    struct page_encoder *e = encoder(1 << 20);
    uint8_t *guest = aligned_alloc(64, PG), *dst = calloc(1, PG);
    fill_random(guest, PG);
    struct writer w = {.page = guest};
    atomic_init(&w.stop, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);
    for (int i = 0; i < 20000; i++)
        send_page(e, 4, guest, dst, NULL);
    atomic_store(&w.stop, 1);
    pthread_join(t, NULL);
    send_page(e, 4, guest, dst, NULL);
    assert_memory_equal(dst, guest, PG);
    struct page_codec_stats st;
    page_encoder_stats(e, &st);
    assert_true(st.pages[PAGE_ENC_XOR] > 0);
    free(guest);
    free(dst);
    page_encoder_destroy(e);
}

/* A small migration: 64 pages of mixed content over 12 rounds through a
 * cache smaller than the pages (evictions), random pages dirtied between
 * rounds; after every round the receiver equals the sender. */
static void test_simulated_rounds(void **state)
{
    (void)state;
    enum { N = 64 };
    struct page_encoder *e = encoder(16 * PG);
    uint8_t *src = malloc(N * PG), *dst = calloc(N, PG);
    uint64_t rng = 5;
    for (unsigned i = 0; i < N; i++) {
        uint8_t *p = src + (size_t)i * PG;
        switch (i % 4) {
        case 0:
            memset(p, 0, PG);
            break;
        case 1:
            fill_text(p);
            break;
        case 2:
            fill_random(p, PG);
            break;
        default:
            tg_page_init((struct tg_page *)p, i, 3);
        }
    }
    bool dirty[N];
    for (unsigned i = 0; i < N; i++)
        dirty[i] = true;
    for (int round = 0; round < 12; round++) {
        for (unsigned i = 0; i < N; i++)
            if (dirty[i]) {
                send_page(e, i, src + (size_t)i * PG, dst + (size_t)i * PG, NULL);
                dirty[i] = false;
            }
        assert_memory_equal(src, dst, (size_t)N * PG);
        for (int k = 0; k < 20; k++) {
            unsigned i = (unsigned)(tg_rng_next(&rng) % N);
            uint8_t *p = src + (size_t)i * PG;
            if (i % 4 == 3)
                tg_page_dirty((struct tg_page *)p, &rng);
            else
                p[tg_rng_next(&rng) % PG] = (uint8_t)tg_rng_next(&rng);
            dirty[i] = true;
        }
    }
    struct page_codec_stats st;
    page_encoder_stats(e, &st);
    for (int k = 0; k < PAGE_ENC_COUNT; k++)
        assert_true(st.pages[k] > 0);
    assert_true(st.cache_evictions > 0);
    free(src);
    free(dst);
    page_encoder_destroy(e);
}

/* page_xor_encode on random sparse differences: it round-trips, and it
 * refuses to go past its capacity. */
static void test_xor_encode_property(void **state)
{
    (void)state;
    uint8_t *a = malloc(PG), *b = malloc(PG), *c = malloc(PG);
    uint8_t out[PG];
    struct tern_err err;
    for (int iter = 0; iter < 2000; iter++) {
        fill_random(a, PG);
        memcpy(b, a, PG);
        int changes = (int)(rnd() % 40);
        for (int k = 0; k < changes; k++) {
            size_t at = rnd() % PG, n = 1 + rnd() % 100;
            for (size_t j = at; j < at + n && j < PG; j++)
                b[j] = (uint8_t)rnd();
        }
        int n = page_xor_encode(a, b, out, PG - 1);
        if (n < 0)
            continue;
        memcpy(c, a, PG);
        assert_int_equal(page_decode(PAGE_ENC_XOR, out, (uint32_t)n, c, &err), 0);
        assert_memory_equal(b, c, PG);
        if (n > 0)
            assert_int_equal(page_xor_encode(a, b, out, (uint32_t)n - 1), -1);
    }
    /* Every byte changed: never fits in less than a page. */
    for (size_t i = 0; i < PG; i++)
        b[i] = (uint8_t)~a[i];
    assert_int_equal(page_xor_encode(a, b, out, PG - 1), -1);
    /* First and last byte: two runs, the second skip needs two varint bytes. */
    memcpy(b, a, PG);
    b[0] ^= 1;
    b[PG - 1] ^= 2;
    int n = page_xor_encode(a, b, out, PG - 1);
    assert_int_equal(n, 3 + 4);
    uint8_t want[] = {0, 1, 1, 0xfe, 0x1f, 1, 2};
    assert_memory_equal(out, want, sizeof(want));
    free(a);
    free(b);
    free(c);
}

/* Decodes into a page inside guard bytes; checks they stay untouched. */
static int guarded_decode(uint8_t enc, const uint8_t *in, uint32_t len, uint8_t *page_out,
                          struct tern_err *err)
{
    uint8_t *g = malloc(PG + 128);
    memset(g, 0xa5, PG + 128);
    if (page_out)
        memcpy(g + 64, page_out, PG);
    int rc = page_decode(enc, in, len, g + 64, err);
    for (unsigned i = 0; i < 64; i++) {
        assert_int_equal(g[i], 0xa5);
        assert_int_equal(g[64 + PG + i], 0xa5);
    }
    if (page_out)
        memcpy(page_out, g + 64, PG);
    free(g);
    return rc;
}

static void test_decode_errors(void **state)
{
    (void)state;
    struct tern_err err;
    uint8_t *in = malloc(2 * PG), *page = malloc(PG), *orig = malloc(PG), *src = malloc(PG);
    fill_random(in, 2 * PG);
    fill_random(orig, PG);

    /* Unknown encodings. */
    for (unsigned enc = 4; enc < 256; enc += 61) {
        err.msg[0] = 0;
        assert_int_equal(guarded_decode((uint8_t)enc, in, 0, NULL, &err), -1);
        assert_non_null(strstr(err.msg, "unknown page encoding"));
    }
    /* Wrong lengths for each encoding. */
    uint32_t bad_len[][2] = {{PAGE_ENC_ZERO, 1},  {PAGE_ENC_ZERO, PG}, {PAGE_ENC_RAW, 0},
                             {PAGE_ENC_RAW, PG - 1}, {PAGE_ENC_RAW, PG + 1}, {PAGE_ENC_LZ4, 0},
                             {PAGE_ENC_LZ4, PG}, {PAGE_ENC_LZ4, PG + 100}, {PAGE_ENC_XOR, PG},
                             {PAGE_ENC_XOR, 2 * PG}};
    for (size_t i = 0; i < sizeof(bad_len) / sizeof(bad_len[0]); i++) {
        memcpy(page, orig, PG);
        assert_int_equal(guarded_decode((uint8_t)bad_len[i][0], in, bad_len[i][1], page, &err), -1);
        assert_memory_equal(page, orig, PG); /* refused before touching the page */
    }

    /* LZ4: garbage, a valid block cut short or with a flipped byte, a block
     * decoding to fewer than 4096 bytes, one decoding to more. */
    for (int i = 0; i < 200; i++) {
        uint32_t n = 1 + (uint32_t)(rnd() % (PG - 1));
        fill_random(in, n);
        guarded_decode(PAGE_ENC_LZ4, in, n, NULL, &err); /* any result, no overflow */
    }
    fill_text(src);
    char lz[PG];
    int z = LZ4_compress_default((char *)src, lz, PG, PG - 1);
    assert_true(z > 10);
    assert_int_equal(guarded_decode(PAGE_ENC_LZ4, (uint8_t *)lz, (uint32_t)z, page, &err), 0);
    assert_memory_equal(page, src, PG);
    assert_int_equal(guarded_decode(PAGE_ENC_LZ4, (uint8_t *)lz, (uint32_t)z - 5, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "corrupt"));
    int shorter = LZ4_compress_default((char *)src, lz, 2000, PG - 1);
    assert_int_equal(guarded_decode(PAGE_ENC_LZ4, (uint8_t *)lz, (uint32_t)shorter, NULL, &err), -1);
    uint8_t *big = calloc(1, 2 * PG);
    int longer = LZ4_compress_default((char *)big, lz, (int)(2 * PG), PG - 1);
    assert_int_equal(guarded_decode(PAGE_ENC_LZ4, (uint8_t *)lz, (uint32_t)longer, NULL, &err), -1);
    free(big);

    /* XOR garbage: each refused before the page is touched. */
    struct {
        uint8_t b[8];
        uint32_t n;
        const char *why;
    } xs[] = {
        {{0x80, 0x20, 1, 0xff}, 4, "past the page"},      /* skip 4096, then a run */
        {{0xff, 0x1f, 2, 1, 1}, 5, "past the page"},      /* skip 4095, run of 2 */
        {{0, 0x81, 0x20, 1}, 4, "past the page"},         /* run of 4097 */
        {{0, 0}, 2, "empty run"},                         /* n = 0 */
        {{0, 5, 1, 2}, 4, "left"},                        /* 5 bytes promised, 2 there */
        {{0x80, 0x00, 1, 9}, 4, "bad or truncated"},      /* non-shortest varint */
        {{0x80, 0x80, 0x01, 1, 9}, 5, "bad or truncated"},/* 3-byte varint */
        {{5}, 1, "bad or truncated"},                     /* a skip and no length */
        {{5, 0x81}, 2, "bad or truncated"},               /* cut inside the length */
        {{0, 1, 9, 0, 0}, 5, "empty run"},                /* a good run, then junk */
    };
    for (size_t i = 0; i < sizeof(xs) / sizeof(xs[0]); i++) {
        memcpy(page, orig, PG);
        err.msg[0] = 0;
        assert_int_equal(guarded_decode(PAGE_ENC_XOR, xs[i].b, xs[i].n, page, &err), -1);
        if (!strstr(err.msg, xs[i].why))
            fail_msg("case %zu: '%s' does not say '%s'", i, err.msg, xs[i].why);
        assert_memory_equal(page, orig, PG);
    }
    /* A run that ends exactly at the page's end is fine. */
    uint8_t last[] = {0xff, 0x1f, 1, 0x42};
    memcpy(page, orig, PG);
    assert_int_equal(guarded_decode(PAGE_ENC_XOR, last, 4, page, &err), 0);
    assert_int_equal(page[PG - 1], orig[PG - 1] ^ 0x42);
    /* Random XOR payloads: accepted or refused, never outside the page. */
    for (int i = 0; i < 2000; i++) {
        uint32_t n = (uint32_t)(rnd() % 64);
        fill_random(in, n + 8);
        guarded_decode(PAGE_ENC_XOR, in, n, NULL, &err);
    }
    free(in);
    free(page);
    free(orig);
    free(src);
}

static void test_lz4_setting(void **state)
{
    (void)state;
    struct page_encoder *e = encoder(0);
    uint8_t *src = malloc(PG), *dst = calloc(1, PG);
    fill_text(src);
    uint32_t len1, len8;
    assert_int_equal(send_page(e, 1, src, dst, &len1), PAGE_ENC_LZ4);
    page_encoder_set_lz4(e, 8); /* faster, compresses less */
    assert_int_equal(send_page(e, 1, src, dst, &len8), PAGE_ENC_LZ4);
    assert_true(len8 >= len1);
    page_encoder_set_lz4(e, 0); /* off */
    assert_int_equal(send_page(e, 1, src, dst, NULL), PAGE_ENC_RAW);
    page_encoder_set_lz4(e, -3); /* also off */
    assert_int_equal(send_page(e, 1, src, dst, NULL), PAGE_ENC_RAW);
    memset(src, 0, PG);
    assert_int_equal(send_page(e, 1, src, dst, NULL), PAGE_ENC_ZERO);
    assert_memory_equal(src, dst, PG);
    free(src);
    free(dst);
    page_encoder_destroy(e);
}

/* XOR without trying LZ4 must not lose a much smaller LZ4: a text page
 * re-sent with small changes stays XOR, and a page whose content turned
 * compressible (XOR too big) goes LZ4. */
static void test_lz4_shortcut(void **state)
{
    (void)state;
    struct page_encoder *e = encoder(1 << 20);
    uint8_t *src = malloc(PG), *dst = calloc(1, PG);
    fill_text(src);
    uint32_t len;
    assert_int_equal(send_page(e, 3, src, dst, &len), PAGE_ENC_LZ4);
    for (int i = 0; i < 40; i++) {
        memcpy(src + (rnd() % (PG - 64)), "a small change of text, 40 bytes or so.", 40);
        assert_int_equal(send_page(e, 3, src, dst, &len), PAGE_ENC_XOR);
        assert_true(len <= 44);
        assert_memory_equal(src, dst, PG);
    }
    fill_random(src, PG);
    send_page(e, 4, src, dst, NULL);
    for (int i = 0; i < 40; i++) {
        src[rnd() % PG] ^= 0x10;
        assert_int_equal(send_page(e, 4, src, dst, &len), PAGE_ENC_XOR);
        assert_memory_equal(src, dst, PG);
    }
    memset(src, 0, PG / 2); /* half the page zeroed: XOR is 2 KiB, LZ4 less */
    fill_text_n(src + PG / 2, PG / 2);
    assert_int_equal(send_page(e, 4, src, dst, &len), PAGE_ENC_LZ4);
    assert_memory_equal(src, dst, PG);
    free(src);
    free(dst);
    page_encoder_destroy(e);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(page_enc_name(PAGE_ENC_ZERO), "zero");
    assert_string_equal(page_enc_name(PAGE_ENC_RAW), "raw");
    assert_string_equal(page_enc_name(PAGE_ENC_LZ4), "lz4");
    assert_string_equal(page_enc_name(PAGE_ENC_XOR), "xor");
    assert_string_equal(page_enc_name(9), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_page),
        cmocka_unit_test(test_random_page_is_raw),
        cmocka_unit_test(test_compressible_page_is_lz4),
        cmocka_unit_test(test_lz4_backs_off_and_recovers),
        cmocka_unit_test(test_guest_page_resent_as_xor),
        cmocka_unit_test(test_smallest_encoding_wins),
        cmocka_unit_test(test_cache_eviction_lru),
        cmocka_unit_test(test_cache_sets),
        cmocka_unit_test(test_cache_disabled_forget_reset),
        cmocka_unit_test(test_modified_between_encodes),
        cmocka_unit_test(test_concurrent_writer),
        cmocka_unit_test(test_simulated_rounds),
        cmocka_unit_test(test_xor_encode_property),
        cmocka_unit_test(test_decode_errors),
        cmocka_unit_test(test_lz4_setting),
        cmocka_unit_test(test_lz4_shortcut),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
