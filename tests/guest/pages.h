/* The fill area's page format: every 4 KiB page describes itself, so a
 * migrated or restored guest can prove each page arrived intact, at the
 * right address and in its latest version.
 *
 * Plain C with no kernel dependencies: the host-side unit test
 * (tests/unit/test_guest_pages.c) includes pages.c directly. */
#ifndef TG_PAGES_H
#define TG_PAGES_H

#include <stdint.h>

#define TG_PAGE_SIZE 4096
#define TG_PAYLOAD_WORDS 509 /* (4096 - 3 * 8) / 8 */
#define TG_DIRTY_WORDS 8     /* one page write rewrites 64 payload bytes */

struct tg_page {
    uint64_t frame; /* own physical address >> 12 */
    uint64_t gen;   /* bumped by every write; 1 after the initial fill */
    uint64_t csum;  /* tg_page_checksum() of frame, gen and payload */
    uint64_t payload[TG_PAYLOAD_WORDS];
};

_Static_assert(sizeof(struct tg_page) == TG_PAGE_SIZE, "a tg_page is one page");

enum tg_page_status {
    TG_PAGE_OK = 0,
    TG_PAGE_MISPLACED, /* frame field is not the page's own frame */
    TG_PAGE_CORRUPT,   /* checksum does not match the contents */
    TG_PAGE_STALE,     /* intact, but not the generation last written */
};

/* xorshift64*: fast, good enough for incompressible payload and random
 * choices. *state must not be 0; tg_rng_seed() never returns 0. */
uint64_t tg_rng_next(uint64_t *state);
uint64_t tg_rng_seed(uint64_t a, uint64_t b);

/* 64-bit hash over frame, gen and the payload (not csum). Any change of a
 * single 8-byte word, or of frame or gen, always changes it. */
uint64_t tg_page_checksum(const struct tg_page *p);

/* Writes a fresh page: frame, generation 1, payload from a generator
 * seeded by (frame, seed), checksum. */
void tg_page_init(struct tg_page *p, uint64_t frame, uint64_t seed);

/* One page write: bumps the generation, overwrites TG_DIRTY_WORDS random
 * words at a random word offset, fixes the checksum. Returns the new
 * generation. */
uint64_t tg_page_dirty(struct tg_page *p, uint64_t *rng);

/* Checks a page that should be at `frame` with generation (low 32 bits)
 * `want_gen`. Tests in this order: misplaced, corrupt, stale. */
enum tg_page_status tg_page_verify(const struct tg_page *p, uint64_t frame, uint32_t want_gen);

/* The TG_REASON_* word for a status ("ok" for TG_PAGE_OK). */
const char *tg_page_reason(enum tg_page_status s);

#endif
