/* Page codec: how one 4 KiB guest page travels in a PAGES batch
 * (docs/migration-stream.md).
 *
 * For every page the encoder picks the smallest of:
 *   ZERO  no payload: the page is all zeroes;
 *   RAW   the 4096 bytes;
 *   LZ4   LZ4 block of the page, only when shorter than 4096 bytes;
 *   XOR   when this encoder sent the page before and still holds that
 *         version in its delta cache: the XOR of the new and the old
 *         version, as zero-run/literal pairs (below).
 * One shortcut: after an XOR hit, LZ4 is not tried while the LZ4 size
 * last measured for that page, less a margin for what changed since,
 * stays above the XOR size (it would almost never win, and costs several
 * times the XOR); the margin grows with every re-send, so LZ4 is measured
 * again now and then.
 *
 * THE PAGE MAY CHANGE UNDER THE ENCODER. The guest keeps running while
 * pages are encoded, so page_encode first copies the page into a private
 * buffer and does everything else (zero test, LZ4, XOR, the cached copy)
 * from that copy only. What goes into the cache is therefore exactly the
 * bytes the receiver reconstructs, even if the guest rewrote the page in
 * the middle of the copy: a torn copy is still a consistent 4096 bytes
 * that both sides agree on, and the dirty log sends the page again. So the
 * engine must fetch-and-clear the page's dirty bit BEFORE calling
 * page_encode, never after.
 *
 * XOR payload: pairs of (ULEB128 skip, ULEB128 n, n bytes), meaning "the
 * next `skip` bytes are unchanged, XOR the following n bytes with these";
 * n >= 1, each varint at most 2 bytes, positions never past 4096; bytes
 * after the last pair are unchanged, and an empty payload means the page
 * is unchanged. Chosen over LZ4 of the XOR buffer because on the test
 * guest's writes (64 random bytes in a random page) it is both smaller and
 * several times faster; bench/codec measures both.
 *
 * Delta cache: 2-way set-associative by page index, LRU within a set (one
 * stamp compare), bounded by bytes, allocated and faulted in once when the
 * encoder is created. See page_codec.c for why.
 *
 * The cache must mirror what the receiver holds, which sets two rules for
 * the engine: (1) every page an encoder encodes is delivered and applied in
 * the order encoded, or that encoder is reset (page_encoder_reset) before
 * it is used again; (2) a given page index is always encoded by the same
 * encoder (spread pages over streams by index, not round-robin), because
 * an XOR payload only decodes against the version its own encoder sent.
 *
 * Threads: one encoder per sending thread; an encoder has no locks and
 * must not be shared. page_decode keeps no state and is thread-safe. */
#ifndef TERN_MIGRATE_PAGE_CODEC_H
#define TERN_MIGRATE_PAGE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"

#define PAGE_CODEC_PAGE_SIZE 4096u
/* Largest payload page_encode writes (payloads are at most 4096 bytes;
 * the slack is for callers that size buffers generously). */
#define PAGE_ENC_MAX_OUT (4096u + 64u)
/* Default delta cache size (design.md, Budgets). */
#define PAGE_CODEC_DEFAULT_CACHE (64u << 20)

enum page_enc {
    PAGE_ENC_ZERO = 0,
    PAGE_ENC_RAW = 1,
    PAGE_ENC_LZ4 = 2,
    PAGE_ENC_XOR = 3,
};
#define PAGE_ENC_COUNT 4

struct page_codec_stats {
    uint64_t pages[PAGE_ENC_COUNT];     /* pages encoded with each encoding */
    uint64_t bytes_in[PAGE_ENC_COUNT];  /* 4096 per page */
    uint64_t bytes_out[PAGE_ENC_COUNT]; /* payload bytes (no per-page headers) */
    uint64_t cache_hits;      /* page found in the cache: an XOR candidate */
    uint64_t cache_misses;    /* page not in the cache */
    uint64_t cache_evictions; /* another page's cached copy replaced */
    uint64_t cache_entries;   /* capacity in pages (0: no delta cache) */
};

struct page_encoder;

/* Creates an encoder whose delta cache holds at most `cache_bytes` of page
 * copies (rounded down to a whole number of 2-page sets, at most 2^31
 * pages; 0 disables XOR), plus one spare page. All memory is allocated
 * and faulted in here, once (huge pages where available), so create the
 * encoder before the guest's pages start to flow. The design's budget is
 * for all streams together: give each of N encoders cache / N, and no
 * more than the RAM the encoder will see. */
int page_encoder_create(struct page_encoder **out, size_t cache_bytes, struct tern_err *err);

/* The same, but the cache's memory is faulted in as it is first used
 * rather than up front (populating 64 MiB takes tens of milliseconds):
 * for a sender whose first pass does not fill the cache
 * (page_encoder_set_insert off), so that the migration starts at once and
 * a cache that never gets used costs nothing. */
int page_encoder_create_lazy(struct page_encoder **out, size_t cache_bytes, struct tern_err *err);

/* Encodes the page at `page` (guest memory; it may change while this runs)
 * as page index `pfn` (RAM offset / 4096). Writes the payload to `out`
 * (capacity at least PAGE_ENC_MAX_OUT), its encoding to *enc, and returns
 * the payload length (0 for ZERO, and for XOR of an unchanged page; never
 * more than 4096). Updates the cache and the statistics. Cannot fail. */
uint32_t page_encode(struct page_encoder *e, uint64_t pfn, const uint8_t *page, uint8_t *out,
                     uint8_t *enc);

/* LZ4 acceleration (LZ4_compress_fast): 1 (the default) compresses best;
 * higher is faster and compresses less; 0 never tries LZ4 (for links
 * faster than LZ4 on this CPU: bench/codec measures both). */
void page_encoder_set_lz4(struct page_encoder *e, int acceleration);

/* Whether pages not in the cache enter it (the default). Off, such a page
 * is read from guest memory once, straight into the payload, and not
 * cached: for a pass over more memory than the cache holds (a first round
 * over all of RAM), where caching would only cycle the cache and cost a
 * copy per page. Pages already cached are encoded (and kept) as usual. */
void page_encoder_set_insert(struct page_encoder *e, bool insert);

/* Drops the cached copy of `pfn`, if any (use when that page was or will
 * be delivered by other means). */
void page_encoder_forget(struct page_encoder *e, uint64_t pfn);

/* Empties the cache (keeps its memory and the statistics). */
void page_encoder_reset(struct page_encoder *e);

void page_encoder_stats(const struct page_encoder *e, struct page_codec_stats *out);

void page_encoder_destroy(struct page_encoder *e);

/* Applies one encoded page to `page`, the receiver's current copy of that
 * page (XOR applies to it in place, so it must hold what this page index
 * last received; RAM starts zeroed). Checks everything: the encoding is
 * known, the length is right for it (ZERO 0, RAW 4096, LZ4 1..4095, XOR
 * 0..4095), LZ4 decodes to exactly 4096 bytes, XOR pairs stay inside the
 * page and use the whole payload. Never writes outside the 4096 bytes at
 * `page`; the XOR payload is checked completely before the page is
 * touched, but a failing LZ4 payload may have written part of the page
 * (the migration is abandoned on any error anyway). */
int page_decode(uint8_t enc, const uint8_t *in, uint32_t len, uint8_t *page,
                struct tern_err *err);

/* "zero", "raw", "lz4", "xor", or "unknown". */
const char *page_enc_name(uint8_t enc);

/* The XOR payload of new against old (both 4096 bytes) into out, if it
 * fits in `cap` bytes; returns its length, or -1 when it would not fit.
 * Exposed for tests and bench/codec. */
int page_xor_encode(const uint8_t *old, const uint8_t *new_page, uint8_t *out, uint32_t cap);

#endif
