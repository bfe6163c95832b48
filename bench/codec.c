/* bench/codec: the migration page codec (migrate/page_codec.c) on one core,
 * as JSON, next to memcpy bandwidth measured in the same run.
 *
 * Page sets (N pages each, default 16384 = 64 MiB, the default delta cache
 * size, so every re-sent page finds its previous version):
 *   zero          all-zero pages
 *   guest_fresh   the test guest's fill pages (tests/guest/pages.c):
 *                 pseudo-random payload, first send (empty cache)
 *   guest_resent  the same pages after one guest write each (64 random
 *                 bytes + generation + checksum), sent again: the XOR path
 *   random        pseudo-random pages, first send
 *   text          text-like pages (compressible): the LZ4 path
 *   *_lz4_off     the same with LZ4 switched off (page_encoder_set_lz4 0):
 *                 what trying LZ4 costs on pages it cannot shrink
 * For each: encode_MBps (page bytes in per second), ratio_to_memcpy,
 * bytes_out_ratio (payload bytes out / bytes in), the encodings chosen,
 * decode_MBps. Each figure is the median of REPS runs; every run's output
 * is decoded and checked against the source afterwards.
 *
 * xor_candidates compares the two ways to encode the XOR of a re-sent
 * guest page: the zero-run/literal format page_codec uses, and LZ4 of the
 * XOR buffer (average bytes per page, MB/s of pages).
 *
 * memcpy_MBps copies 4 KiB pages out of a buffer the size of the page set
 * (the encoder's first step), crc32_MBps is zlib's crc32 over the same
 * bytes (every record's CRC covers every page payload byte).
 * encoder_create_ms: creating an encoder with the default cache, which
 * allocates and faults in all of it (not part of the encode figures).
 *
 * Usage: codec [PAGES] */
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "migrate/page_codec.h"
#include "tests/guest/pages.c"

#define PG 4096u
#define REPS 5

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return v[n / 2];
}

static void *xmalloc(size_t n)
{
    void *p = aligned_alloc(4096, n);
    if (!p) {
        fprintf(stderr, "bench/codec: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static size_t npages;
static volatile uLong crc_sink; /* keeps the CRC loop from being optimised away */
static uint8_t *src;  /* npages pages: what is sent */
static uint8_t *dst;  /* the receiver's copy */
static uint8_t *wire; /* npages * PAGE_ENC_MAX_OUT: the payloads */
static uint32_t *lens;
static uint8_t *encs;

static void fill_text(uint8_t *p, uint64_t *rng)
{
    static const char *words[] = {"the ",   "guest ", "kernel ", "page ",    "cache ",
                                  "write ", "read ",  "dirty ",  "migrate ", "\n"};
    size_t o = 0;
    while (o < PG) {
        const char *w = words[tg_rng_next(rng) % 10];
        size_t n = strlen(w);
        if (n > PG - o)
            n = PG - o;
        memcpy(p + o, w, n);
        o += n;
    }
}

/* Encodes every page once with e; returns seconds. */
static double encode_all(struct page_encoder *e)
{
    double t0 = now_s();
    for (size_t i = 0; i < npages; i++)
        lens[i] = page_encode(e, i, src + i * PG, wire + i * PAGE_ENC_MAX_OUT, &encs[i]);
    return now_s() - t0;
}

/* Decodes every payload into dst; returns seconds, or -1 on an error. */
static double decode_all(void)
{
    struct tern_err err;
    double t0 = now_s();
    for (size_t i = 0; i < npages; i++)
        if (page_decode(encs[i], wire + i * PAGE_ENC_MAX_OUT, lens[i], dst + i * PG, &err) < 0) {
            fprintf(stderr, "bench/codec: page %zu: %s\n", i, err.msg);
            return -1;
        }
    return now_s() - t0;
}

static double mbps(double seconds)
{
    return (double)npages * PG / 1e6 / seconds;
}

enum set {
    SET_ZERO,
    SET_GUEST_FRESH,
    SET_GUEST_FRESH_NO_LZ4,
    SET_GUEST_RESENT,
    SET_RANDOM,
    SET_TEXT,
    SET_TEXT_NO_LZ4,
    NR_SETS
};
static const char *set_names[NR_SETS] = {"zero",   "guest_fresh", "guest_fresh_lz4_off",
                                         "guest_resent", "random", "text", "text_lz4_off"};

static void prepare(enum set s, uint64_t *rng)
{
    for (size_t i = 0; i < npages; i++) {
        uint8_t *p = src + i * PG;
        switch (s) {
        case SET_ZERO:
            memset(p, 0, PG);
            break;
        case SET_GUEST_FRESH:
        case SET_GUEST_FRESH_NO_LZ4:
            tg_page_init((struct tg_page *)p, 0x100000 + i, 42);
            break;
        case SET_GUEST_RESENT:
            tg_page_dirty((struct tg_page *)p, rng);
            break;
        case SET_RANDOM:
            for (unsigned k = 0; k < PG; k += 8) {
                uint64_t v = tg_rng_next(rng);
                memcpy(p + k, &v, 8);
            }
            break;
        default:
            fill_text(p, rng);
        }
    }
}

/* Runs one page set REPS times and prints its JSON object. Returns 0 if
 * every run's output decoded to the source. */
static int run_set(enum set s, double memcpy_mbps, int last)
{
    uint64_t rng = 0x9e3779b97f4a7c15ull + (uint64_t)s;
    double enc_t[REPS], dec_t[REPS];
    struct page_codec_stats total = {0};
    int ok = 1;
    for (int r = 0; r < REPS; r++) {
        struct page_encoder *e;
        struct tern_err err;
        if (page_encoder_create(&e, PAGE_CODEC_DEFAULT_CACHE, &err) < 0) {
            fprintf(stderr, "bench/codec: %s\n", err.msg);
            exit(1);
        }
        memset(dst, 0, npages * PG);
        if (s == SET_GUEST_FRESH_NO_LZ4 || s == SET_TEXT_NO_LZ4)
            page_encoder_set_lz4(e, 0);
        if (s == SET_GUEST_RESENT) {
            /* Not timed: the first send of the fresh pages fills the cache
             * and the receiver; then one guest write per page. */
            prepare(SET_GUEST_FRESH, &rng);
            encode_all(e);
            if (decode_all() < 0)
                ok = 0;
            prepare(SET_GUEST_RESENT, &rng);
        } else {
            prepare(s, &rng);
        }
        struct page_codec_stats before, after;
        page_encoder_stats(e, &before);
        enc_t[r] = encode_all(e);
        page_encoder_stats(e, &after);
        dec_t[r] = decode_all();
        if (dec_t[r] < 0 || memcmp(src, dst, npages * PG) != 0)
            ok = 0;
        for (int k = 0; k < PAGE_ENC_COUNT; k++) {
            total.pages[k] += after.pages[k] - before.pages[k];
            total.bytes_in[k] += after.bytes_in[k] - before.bytes_in[k];
            total.bytes_out[k] += after.bytes_out[k] - before.bytes_out[k];
        }
        total.cache_hits += after.cache_hits - before.cache_hits;
        total.cache_misses += after.cache_misses - before.cache_misses;
        page_encoder_destroy(e);
    }
    uint64_t in = 0, out = 0;
    for (int k = 0; k < PAGE_ENC_COUNT; k++)
        in += total.bytes_in[k], out += total.bytes_out[k];
    double em = mbps(median(enc_t, REPS)), dm = mbps(median(dec_t, REPS));
    printf("    \"%s\": {\"encode_MBps\": %.0f, \"ratio_to_memcpy\": %.3f, "
           "\"bytes_out_ratio\": %.5f, \"avg_bytes_per_page\": %.1f, \"decode_MBps\": %.0f, "
           "\"cache_hit_ratio\": %.3f, \"encodings\": {",
           set_names[s], em, em / memcpy_mbps, (double)out / (double)in,
           (double)out / ((double)in / PG), dm,
           (double)total.cache_hits /
               (double)(total.cache_hits + total.cache_misses ? total.cache_hits + total.cache_misses : 1));
    for (int k = 0; k < PAGE_ENC_COUNT; k++)
        printf("%s\"%s\": %llu", k ? ", " : "", page_enc_name((uint8_t)k),
               (unsigned long long)(total.pages[k] / REPS));
    printf("}, \"verified\": %s}%s\n", ok ? "true" : "false", last ? "" : ",");
    return ok ? 0 : -1;
}

/* The two XOR encodings on re-sent guest pages. */
static void xor_candidates(void)
{
    uint8_t *old = xmalloc(npages * PG);
    uint64_t rng = 7;
    for (size_t i = 0; i < npages; i++)
        tg_page_init((struct tg_page *)(old + i * PG), 0x100000 + i, 42);
    memcpy(src, old, npages * PG);
    for (size_t i = 0; i < npages; i++)
        tg_page_dirty((struct tg_page *)(src + i * PG), &rng);
    uint8_t *x = xmalloc(PG);
    double zt[REPS], lt[REPS];
    uint64_t zbytes = 0, lbytes = 0;
    for (int r = 0; r < REPS; r++) {
        zbytes = lbytes = 0;
        double t0 = now_s();
        for (size_t i = 0; i < npages; i++) {
            int n = page_xor_encode(old + i * PG, src + i * PG, wire + i * PAGE_ENC_MAX_OUT,
                                    PG - 1);
            zbytes += n < 0 ? PG : (uint64_t)n;
        }
        zt[r] = now_s() - t0;
        t0 = now_s();
        for (size_t i = 0; i < npages; i++) {
            const uint64_t *a = (const uint64_t *)(old + i * PG);
            const uint64_t *b = (const uint64_t *)(src + i * PG);
            uint64_t *xo = (uint64_t *)x;
            for (unsigned k = 0; k < PG / 8; k++)
                xo[k] = a[k] ^ b[k];
            int n = LZ4_compress_default((const char *)x, (char *)wire + i * PAGE_ENC_MAX_OUT,
                                         (int)PG, (int)PG - 1);
            lbytes += n <= 0 ? PG : (uint64_t)n;
        }
        lt[r] = now_s() - t0;
    }
    printf("  \"xor_candidates\": {\n"
           "    \"zero_run_literal\": {\"avg_bytes\": %.1f, \"MBps\": %.0f},\n"
           "    \"lz4_of_xor\": {\"avg_bytes\": %.1f, \"MBps\": %.0f}\n  },\n",
           (double)zbytes / (double)npages, mbps(median(zt, REPS)),
           (double)lbytes / (double)npages, mbps(median(lt, REPS)));
    free(x);
    free(old);
}

int main(int argc, char **argv)
{
    npages = argc > 1 ? strtoull(argv[1], NULL, 0) : 16384;
    if (npages == 0 || npages > (1u << 22)) {
        fprintf(stderr, "usage: codec [PAGES]  (1..%u)\n", 1u << 22);
        return 64;
    }
    src = xmalloc(npages * PG);
    dst = xmalloc(npages * PG);
    wire = xmalloc(npages * PAGE_ENC_MAX_OUT);
    lens = calloc(npages, sizeof(*lens));
    encs = calloc(npages, 1);
    if (!lens || !encs)
        return 1;
    memset(src, 1, npages * PG);
    memset(dst, 2, npages * PG);
    memset(wire, 0, npages * PAGE_ENC_MAX_OUT);

    /* Ceilings: page-sized copies across a page-set-sized buffer, crc32. */
    double mt[REPS], ct[REPS];
    for (int r = 0; r < REPS; r++) {
        double t0 = now_s();
        for (size_t i = 0; i < npages; i++)
            memcpy(dst + i * PG, src + i * PG, PG);
        mt[r] = now_s() - t0;
        t0 = now_s();
        uLong c = crc32(0L, Z_NULL, 0);
        for (size_t i = 0; i < npages; i++)
            c = crc32(c, src + i * PG, PG);
        ct[r] = now_s() - t0;
        crc_sink += c;
    }
    double memcpy_mbps = mbps(median(mt, REPS));
    /* Creating an encoder allocates and faults in its whole cache. */
    double create_t[REPS];
    for (int r = 0; r < REPS; r++) {
        struct page_encoder *e;
        double t0 = now_s();
        if (page_encoder_create(&e, PAGE_CODEC_DEFAULT_CACHE, NULL) < 0)
            return 1;
        create_t[r] = now_s() - t0;
        page_encoder_destroy(e);
    }
    printf("{\n  \"pages\": %zu,\n  \"cache_bytes\": %u,\n  \"reps\": %d,\n"
           "  \"memcpy_MBps\": %.0f,\n  \"crc32_MBps\": %.0f,\n  \"encoder_create_ms\": %.1f,\n",
           npages, PAGE_CODEC_DEFAULT_CACHE, REPS, memcpy_mbps, mbps(median(ct, REPS)),
           median(create_t, REPS) * 1e3);
    xor_candidates();
    printf("  \"sets\": {\n");
    int rc = 0;
    for (int s = 0; s < NR_SETS; s++)
        rc |= run_set((enum set)s, memcpy_mbps, s == NR_SETS - 1);
    printf("  }\n}\n");
    free(src);
    free(dst);
    free(wire);
    free(lens);
    free(encs);
    return rc ? 1 : 0;
}
