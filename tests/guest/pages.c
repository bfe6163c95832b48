/* Page format, checksum and generator; see pages.h. */
#include "pages.h"

#include "hash.h"
#include "tern_guest.h"

/* A bijective finaliser (splitmix-style). */
uint64_t tg_rng_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dull;
}

uint64_t tg_rng_seed(uint64_t a, uint64_t b)
{
    uint64_t s = tg_mix64(a * TG_HASH_MUL1 + tg_mix64(b + TG_HASH_MUL2));
    return s ? s : TG_HASH_MUL1;
}

/* Covers frame, generation and payload (hash.h says why it catches any
 * single changed word). */
uint64_t tg_page_checksum(const struct tg_page *p)
{
    return tg_hash_words(p->frame, p->gen, p->payload, TG_PAYLOAD_WORDS);
}

void tg_page_init(struct tg_page *p, uint64_t frame, uint64_t seed)
{
    uint64_t rng = tg_rng_seed(frame, seed);

    p->frame = frame;
    p->gen = 1;
    for (unsigned i = 0; i < TG_PAYLOAD_WORDS; i++)
        p->payload[i] = tg_rng_next(&rng);
    p->csum = tg_page_checksum(p);
}

uint64_t tg_page_dirty(struct tg_page *p, uint64_t *rng)
{
    unsigned at = (unsigned)(tg_rng_next(rng) % (TG_PAYLOAD_WORDS - TG_DIRTY_WORDS + 1));

    p->gen++;
    for (unsigned i = 0; i < TG_DIRTY_WORDS; i++)
        p->payload[at + i] = tg_rng_next(rng);
    p->csum = tg_page_checksum(p);
    return p->gen;
}

enum tg_page_status tg_page_verify(const struct tg_page *p, uint64_t frame, uint32_t want_gen)
{
    if (p->frame != frame)
        return TG_PAGE_MISPLACED;
    if (p->csum != tg_page_checksum(p))
        return TG_PAGE_CORRUPT;
    if ((uint32_t)p->gen != want_gen)
        return TG_PAGE_STALE;
    return TG_PAGE_OK;
}

const char *tg_page_reason(enum tg_page_status s)
{
    switch (s) {
    case TG_PAGE_OK:
        return "ok";
    case TG_PAGE_MISPLACED:
        return TG_REASON_MISPLACED;
    case TG_PAGE_CORRUPT:
        return TG_REASON_CORRUPT;
    case TG_PAGE_STALE:
        return TG_REASON_STALE;
    }
    return "unknown";
}
