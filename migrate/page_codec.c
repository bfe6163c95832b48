/* Page codec: per-page encoding choice, the XOR delta and its cache.
 * The interface and the rules the engine must keep are in page_codec.h.
 *
 * Delta cache design. Entries live in 2-way sets chosen by pfn % nr_sets,
 * so consecutive pages land in consecutive sets and a hot range never
 * fights itself. Within a set the least recently sent way is replaced
 * (each entry carries the value of a per-encoder send counter): that is
 * exact LRU for two ways, O(1), and keeps a page that is re-sent round
 * after round from being pushed out by a page that was dirtied once.
 * Direct mapping would lose such a page whenever one other page of its set
 * was sent; CLOCK would need a sweeping hand and more bookkeeping for no
 * gain at two ways.
 *
 * The cached copies and one spare buffer form one pool. page_encode copies
 * the guest page into the spare buffer, encodes from it and then swaps the
 * spare with the entry it replaces, so the private copy needed for safety
 * (page_codec.h) becomes the cached copy without a second memcpy. */
#include "page_codec.h"

#include <lz4.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "../proto/migration.h"

#define PAGE PAGE_CODEC_PAGE_SIZE
#define WAYS 2u
#define NO_PFN UINT64_MAX
/* LZ4 cannot express 4096 bytes in fewer than about 26 bytes (one literal,
 * one match, length bytes, five trailing literals): an XOR payload this
 * short is taken without trying LZ4. */
#define LZ4_FLOOR 24u
/* How much smaller LZ4 of a page may get per byte of XOR payload (the
 * changed bytes plus the matches that copied from them), and per change. */
#define LZ4_DRIFT_PER_BYTE 2
#define LZ4_DRIFT_FIXED 16
/* After this many LZ4 attempts in a row that gained nothing (incompressible
 * memory: encrypted, random, already compressed), LZ4 is tried only on one
 * fresh page in LZ4_PROBE_EVERY until it pays off again: LZ4 on such pages
 * costs more than the TLS encryption of the raw page. */
#define LZ4_GIVE_UP_AFTER 32u
#define LZ4_PROBE_EVERY 16u

_Static_assert(PAGE_ENC_ZERO == MIG_PAGE_ZERO && PAGE_ENC_RAW == MIG_PAGE_RAW &&
                   PAGE_ENC_LZ4 == MIG_PAGE_LZ4 && PAGE_ENC_XOR == MIG_PAGE_XOR,
               "page encodings are the wire values of proto/migration.h");
_Static_assert(PAGE == MIG_PAGE_SIZE, "one page size");
_Static_assert(PAGE_ENC_MAX_OUT <= MIG_PAGES_SLOT_ROOM, "page_encode fits a PAGES slot");

struct cache_entry {
    uint64_t pfn;       /* NO_PFN when empty */
    uint64_t stamp;     /* e->clock when last sent */
    uint32_t buf;       /* index of its copy in the pool */
    uint16_t lz4_bound; /* LZ4 size of the cached copy, at least (4096: no gain) */
};

struct page_encoder {
    uint8_t *pool; /* (nr_entries + 1) pages: the copies and the spare */
    size_t pool_bytes;
    struct cache_entry *entries; /* nr_sets * WAYS */
    uint64_t nr_sets;
    uint32_t spare; /* pool index of the buffer the next page is copied into */
    uint64_t clock;
    int lz4_accel; /* 0: LZ4 off */
    bool insert_new; /* misses enter the cache (page_encoder_set_insert) */
    uint32_t lz4_misses; /* LZ4 attempts in a row that gained nothing */
    uint32_t lz4_probe;  /* counts fresh pages while LZ4 is backed off */
    void *lz4_state;
    struct page_codec_stats st;
    uint8_t lz[PAGE]; /* LZ4 output while an XOR candidate occupies `out` */
};

const char *page_enc_name(uint8_t enc)
{
    switch (enc) {
    case PAGE_ENC_ZERO:
        return "zero";
    case PAGE_ENC_RAW:
        return "raw";
    case PAGE_ENC_LZ4:
        return "lz4";
    case PAGE_ENC_XOR:
        return "xor";
    }
    return "unknown";
}

static int encoder_create(struct page_encoder **out, size_t cache_bytes, bool prefault,
                          struct tern_err *err);

int page_encoder_create(struct page_encoder **out, size_t cache_bytes, struct tern_err *err)
{
    return encoder_create(out, cache_bytes, true, err);
}

int page_encoder_create_lazy(struct page_encoder **out, size_t cache_bytes, struct tern_err *err)
{
    return encoder_create(out, cache_bytes, false, err);
}

static int encoder_create(struct page_encoder **out, size_t cache_bytes, bool prefault,
                          struct tern_err *err)
{
    *out = NULL;
    struct page_encoder *e = calloc(1, sizeof(*e));
    if (!e)
        return tern_err_set(err, "out of memory for a page encoder");
    e->nr_sets = cache_bytes / (WAYS * PAGE);
    if (e->nr_sets > (1ull << 30))
        e->nr_sets = 1ull << 30; /* pool indexes are 32-bit */
    uint64_t nr_entries = e->nr_sets * WAYS;
    e->pool_bytes = (size_t)(nr_entries + 1) * PAGE;
    /* One private anonymous mapping for the copies and the spare page. */
    e->pool = mmap(NULL, e->pool_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (e->pool == MAP_FAILED) {
        e->pool = NULL;
        page_encoder_destroy(e);
        return tern_err_set(err, "cannot reserve %zu bytes for the page delta cache",
                            (size_t)(nr_entries + 1) * PAGE);
    }
    (void)madvise(e->pool, e->pool_bytes, MADV_DONTDUMP);
    /* Fault it in now, in huge pages where the kernel offers them: the
     * first round writes every cache page, and taking 16384 page faults
     * there would cost more than the encoding (bench/codec). */
    (void)madvise(e->pool, e->pool_bytes, MADV_HUGEPAGE);
    if (prefault && madvise(e->pool, e->pool_bytes, MADV_POPULATE_WRITE) < 0)
        memset(e->pool, 0, e->pool_bytes);
    if (nr_entries) {
        e->entries = calloc((size_t)nr_entries, sizeof(*e->entries));
        if (!e->entries) {
            page_encoder_destroy(e);
            return tern_err_set(err, "out of memory for %llu delta cache entries",
                                (unsigned long long)nr_entries);
        }
    }
    e->lz4_state = malloc((size_t)LZ4_sizeofState());
    if (!e->lz4_state) {
        page_encoder_destroy(e);
        return tern_err_set(err, "out of memory for the LZ4 state");
    }
    e->st.cache_entries = nr_entries;
    e->lz4_accel = 1;
    e->insert_new = true;
    page_encoder_reset(e);
    *out = e;
    return 0;
}

void page_encoder_reset(struct page_encoder *e)
{
    uint64_t n = e->nr_sets * WAYS;
    for (uint64_t i = 0; i < n; i++)
        e->entries[i] = (struct cache_entry){.pfn = NO_PFN, .buf = (uint32_t)i};
    e->spare = (uint32_t)n;
    e->clock = 0;
}

void page_encoder_set_insert(struct page_encoder *e, bool insert)
{
    e->insert_new = insert;
}

void page_encoder_set_lz4(struct page_encoder *e, int acceleration)
{
    e->lz4_accel = acceleration < 0 ? 0 : acceleration > 65537 ? 65537 : acceleration;
}

void page_encoder_destroy(struct page_encoder *e)
{
    if (!e)
        return;
    if (e->pool)
        munmap(e->pool, e->pool_bytes);
    free(e->entries);
    free(e->lz4_state);
    free(e);
}

void page_encoder_stats(const struct page_encoder *e, struct page_codec_stats *out)
{
    *out = e->st;
}

static struct cache_entry *set_of(struct page_encoder *e, uint64_t pfn)
{
    return &e->entries[(pfn % e->nr_sets) * WAYS];
}

void page_encoder_forget(struct page_encoder *e, uint64_t pfn)
{
    if (!e->nr_sets)
        return;
    struct cache_entry *set = set_of(e, pfn);
    for (unsigned w = 0; w < WAYS; w++)
        if (set[w].pfn == pfn)
            set[w].pfn = NO_PFN, set[w].stamp = 0;
}

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static bool is_zero(const uint8_t *p)
{
    for (unsigned i = 0; i < PAGE; i += 64) {
        if (load64(p + i) | load64(p + i + 8) | load64(p + i + 16) | load64(p + i + 24) |
            load64(p + i + 32) | load64(p + i + 40) | load64(p + i + 48) | load64(p + i + 56))
            return false;
    }
    return true;
}

static inline unsigned put_varint(uint8_t *o, uint32_t v)
{
    if (v < 0x80) {
        o[0] = (uint8_t)v;
        return 1;
    }
    o[0] = (uint8_t)(v | 0x80);
    o[1] = (uint8_t)(v >> 7);
    return 2;
}

/* Word by word: a run is a maximal stretch of differing 8-byte words,
 * trimmed to its first and last differing byte. Two runs are at least
 * one equal word (8 bytes) apart, more than the 2-4 bytes a new pair
 * costs, so splitting there is always right. */
int page_xor_encode(const uint8_t *old, const uint8_t *cur, uint8_t *out, uint32_t cap)
{
    uint32_t o = 0, pos = 0;
    unsigned w = 0;
    const unsigned words = PAGE / 8;
    while (w < words) {
        while (w < words && load64(old + w * 8) == load64(cur + w * 8))
            w++;
        if (w == words)
            break;
        unsigned first = w;
        while (w < words && load64(old + w * 8) != load64(cur + w * 8))
            w++;
        /* Little-endian: the lowest differing byte is the lowest set byte. */
        uint64_t x0 = load64(old + first * 8) ^ load64(cur + first * 8);
        uint64_t x1 = load64(old + (w - 1) * 8) ^ load64(cur + (w - 1) * 8);
        uint32_t start = first * 8 + (unsigned)__builtin_ctzll(x0) / 8;
        uint32_t end = (w - 1) * 8 + 8 - (unsigned)__builtin_clzll(x1) / 8;
        uint32_t n = end - start;
        if (o + 4 + n > cap) /* two varints of at most 2 bytes, then n bytes */
            return -1;
        o += put_varint(out + o, start - pos);
        o += put_varint(out + o, n);
        for (uint32_t k = start; k < end; k++)
            out[o++] = old[k] ^ cur[k];
        pos = end;
    }
    return (int)o;
}

/* LZ4 for a page that has no XOR candidate, with the back-off of
 * incompressible memory; returns the LZ4 size, 0 when not tried or no
 * gain. The result is in e->lz. */
static uint32_t try_lz4_fresh(struct page_encoder *e, const uint8_t *cur)
{
    if (e->lz4_accel <= 0)
        return 0;
    if (e->lz4_misses >= LZ4_GIVE_UP_AFTER && ++e->lz4_probe % LZ4_PROBE_EVERY != 0)
        return 0;
    int z = LZ4_compress_fast_extState(e->lz4_state, (const char *)cur, (char *)e->lz, (int)PAGE,
                                       (int)PAGE - 1, e->lz4_accel);
    e->lz4_misses = z > 0 ? 0 : e->lz4_misses + 1;
    return z > 0 ? (uint32_t)z : 0;
}

/* A page that will not be cached (no cached copy, insert_new off): the
 * one read of guest memory goes straight into `out`, and everything is
 * decided from there, so the bytes sent are still one consistent copy. */
static uint32_t encode_uncached(struct page_encoder *e, const uint8_t *page, uint8_t *out,
                                uint8_t *best)
{
    /* A zero page is only read. Deciding on the live page is safe here:
     * nothing is cached, and a write after the dirty bit was cleared
     * sends the page again next round. */
    if (is_zero(page)) {
        *best = PAGE_ENC_ZERO;
        return 0;
    }
    memcpy(out, page, PAGE);
    uint32_t z = try_lz4_fresh(e, out);
    if (z) {
        memcpy(out, e->lz, z);
        *best = PAGE_ENC_LZ4;
        return z;
    }
    *best = PAGE_ENC_RAW;
    return PAGE;
}

uint32_t page_encode(struct page_encoder *e, uint64_t pfn, const uint8_t *page, uint8_t *out,
                     uint8_t *enc)
{
    if (!e->insert_new) {
        bool cached = false;
        if (e->nr_sets) {
            struct cache_entry *set = set_of(e, pfn);
            for (unsigned w = 0; w < WAYS; w++)
                cached = cached || set[w].pfn == pfn;
        }
        if (!cached) {
            uint8_t best;
            uint32_t len = encode_uncached(e, page, out, &best);
            if (e->nr_sets)
                e->st.cache_misses++;
            e->st.pages[best]++;
            e->st.bytes_in[best] += PAGE;
            e->st.bytes_out[best] += len;
            *enc = best;
            return len;
        }
    }
    /* The one read of guest memory. Everything below uses `cur`. */
    uint8_t *cur = e->pool + (size_t)e->spare * PAGE;
    memcpy(cur, page, PAGE);

    uint8_t best = PAGE_ENC_RAW;
    uint32_t len = PAGE;
    if (is_zero(cur)) {
        /* Not cached: a page that stops being zero is as small in LZ4. */
        page_encoder_forget(e, pfn);
        best = PAGE_ENC_ZERO;
        len = 0;
        goto done;
    }

    struct cache_entry *set = NULL, *hit = NULL;
    if (e->nr_sets) {
        set = set_of(e, pfn);
        for (unsigned w = 0; w < WAYS; w++)
            if (set[w].pfn == pfn)
                hit = &set[w];
        if (hit) {
            e->st.cache_hits++;
            int x = page_xor_encode(e->pool + (size_t)hit->buf * PAGE, cur, out, PAGE - 1);
            if (x >= 0) {
                best = PAGE_ENC_XOR;
                len = (uint32_t)x;
            }
        } else {
            e->st.cache_misses++;
        }
    }

    /* LZ4 when it may be smaller. After an XOR hit, the page's LZ4 size
     * when last measured, less what the change could have saved, is a
     * good guess of the new LZ4 size: while that guess stays above the
     * XOR size, LZ4 is not tried (it costs a microsecond or more per page,
     * the XOR well under one). The guess shrinks with every re-send, so
     * LZ4 is measured again now and then. A wrong guess costs bytes, never
     * correctness. */
    uint32_t lz4_bound = 0; /* unknown */
    bool try_lz4 = e->lz4_accel > 0 && len > LZ4_FLOOR;
    if (try_lz4 && best == PAGE_ENC_RAW && e->lz4_misses >= LZ4_GIVE_UP_AFTER &&
        ++e->lz4_probe % LZ4_PROBE_EVERY != 0)
        try_lz4 = false; /* backed off: lz4_bound stays unknown */
    if (best == PAGE_ENC_XOR) {
        int64_t guess = (int64_t)hit->lz4_bound - LZ4_DRIFT_PER_BYTE * (int64_t)len -
                        LZ4_DRIFT_FIXED;
        lz4_bound = guess > 0 ? (uint32_t)guess : 0;
        if (lz4_bound > len)
            try_lz4 = false;
    }
    if (try_lz4) {
        /* Into out when nothing else is there (stops at 4095 bytes: RAW
         * then); beside it when an XOR candidate is, measured in full so
         * its size can guide the next re-sends. */
        bool into_out = best == PAGE_ENC_RAW;
        int z = LZ4_compress_fast_extState(e->lz4_state, (const char *)cur,
                                           (char *)(into_out ? out : e->lz), (int)PAGE,
                                           (int)PAGE - 1, e->lz4_accel);
        lz4_bound = z > 0 ? (uint32_t)z : PAGE;
        if (best == PAGE_ENC_RAW)
            e->lz4_misses = z > 0 ? 0 : e->lz4_misses + 1;
        if (z > 0 && (uint32_t)z < len) {
            if (!into_out)
                memcpy(out, e->lz, (size_t)z);
            best = PAGE_ENC_LZ4;
            len = (uint32_t)z;
        }
    }
    if (best == PAGE_ENC_RAW)
        memcpy(out, cur, PAGE);

    if (set) {
        /* The copy just encoded becomes the cached version of pfn. */
        struct cache_entry *slot = hit;
        if (!slot) {
            slot = &set[0];
            for (unsigned w = 1; w < WAYS; w++)
                if (set[w].stamp < slot->stamp)
                    slot = &set[w];
            if (slot->pfn != NO_PFN)
                e->st.cache_evictions++;
        }
        uint32_t old = slot->buf;
        slot->buf = e->spare;
        slot->pfn = pfn;
        slot->stamp = ++e->clock; /* never 0, so empty ways go first */
        slot->lz4_bound = (uint16_t)lz4_bound;
        e->spare = old;
    }
done:
    e->st.pages[best]++;
    e->st.bytes_in[best] += PAGE;
    e->st.bytes_out[best] += len;
    *enc = best;
    return len;
}

/* One ULEB128 of at most 2 bytes, in its shortest form. */
static int get_varint(const uint8_t *in, uint32_t len, uint32_t *p, uint32_t *v)
{
    if (*p >= len)
        return -1;
    uint8_t b0 = in[(*p)++];
    if (!(b0 & 0x80)) {
        *v = b0;
        return 0;
    }
    if (*p >= len)
        return -1;
    uint8_t b1 = in[(*p)++];
    if (b1 == 0 || (b1 & 0x80))
        return -1; /* not shortest, or longer than 2 bytes */
    *v = (uint32_t)(b0 & 0x7f) | ((uint32_t)b1 << 7);
    return 0;
}

/* Walks an XOR payload; applies it to page when page is not NULL. */
static int xor_walk(const uint8_t *in, uint32_t len, uint8_t *page, struct tern_err *err)
{
    uint32_t p = 0, pos = 0;
    while (p < len) {
        uint32_t at = p, skip, n;
        if (get_varint(in, len, &p, &skip) < 0 || get_varint(in, len, &p, &n) < 0)
            return tern_err_set(err, "XOR page payload: bad or truncated length at byte %u", at);
        if (n == 0)
            return tern_err_set(err, "XOR page payload: empty run at byte %u", at);
        if (skip > PAGE - pos || n > PAGE - pos - skip)
            return tern_err_set(err,
                                "XOR page payload: run of %u bytes at page offset %u + %u "
                                "goes past the page",
                                n, pos, skip);
        if (n > len - p)
            return tern_err_set(err, "XOR page payload: run of %u bytes at byte %u, %u left", n,
                                p, len - p);
        pos += skip;
        if (page)
            for (uint32_t k = 0; k < n; k++)
                page[pos + k] ^= in[p + k];
        pos += n;
        p += n;
    }
    return 0;
}

int page_decode(uint8_t enc, const uint8_t *in, uint32_t len, uint8_t *page,
                struct tern_err *err)
{
    if (!mig_page_len_ok(enc, len)) {
        if (enc >= PAGE_ENC_COUNT)
            return tern_err_set(err, "unknown page encoding %u", enc);
        return tern_err_set(err, "%s page with a payload of %u bytes", page_enc_name(enc), len);
    }
    switch (enc) {
    case PAGE_ENC_ZERO:
        memset(page, 0, PAGE);
        return 0;
    case PAGE_ENC_RAW:
        memcpy(page, in, PAGE);
        return 0;
    case PAGE_ENC_LZ4: {
        int n = LZ4_decompress_safe((const char *)in, (char *)page, (int)len, (int)PAGE);
        if (n != (int)PAGE)
            return tern_err_set(err, "LZ4 page payload of %u bytes is corrupt (%s)", len,
                                n < 0 ? "does not decode" : "decodes to fewer than 4096 bytes");
        return 0;
    }
    default:
        /* Check all of it first, so a bad payload leaves the page alone. */
        if (xor_walk(in, len, NULL, err) < 0)
            return -1;
        return xor_walk(in, len, page, err);
    }
}
