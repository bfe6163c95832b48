/* Page format, checksum and generator; see pages.h. */
#include "pages.h"

#include "tern_guest.h"

#define MUL1 0x9e3779b97f4a7c15ull
#define MUL2 0xd6e8feb86659fd93ull

static inline uint64_t rotl64(uint64_t x, unsigned r)
{
    return (x << r) | (x >> (64 - r));
}

/* A bijective finaliser (splitmix-style). */
static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 32;
    x *= MUL2;
    x ^= x >> 32;
    x *= MUL2;
    x ^= x >> 32;
    return x;
}

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
    uint64_t s = mix64(a * MUL1 + mix64(b + MUL2));
    return s ? s : MUL1;
}

/* Four independent lanes so the multiply latency overlaps; each step
 * (xor, multiply by an odd constant, rotate) is a bijection of the lane
 * for a fixed input word, so changing any one word changes that lane's
 * end value, and the lanes are folded with xor before a bijective mix. */
uint64_t tg_page_checksum(const struct tg_page *p)
{
    const uint64_t *w = p->payload;
    uint64_t a = MUL1 ^ p->frame;
    uint64_t b = MUL2 ^ p->gen;
    uint64_t c = 0x243f6a8885a308d3ull;
    uint64_t d = 0x13198a2e03707344ull;
    unsigned i;

    for (i = 0; i + 4 <= TG_PAYLOAD_WORDS; i += 4) {
        a = rotl64((a ^ w[i]) * MUL1, 29);
        b = rotl64((b ^ w[i + 1]) * MUL1, 29);
        c = rotl64((c ^ w[i + 2]) * MUL1, 29);
        d = rotl64((d ^ w[i + 3]) * MUL1, 29);
    }
    for (; i < TG_PAYLOAD_WORDS; i++)
        a = rotl64((a ^ w[i]) * MUL1, 29);
    return mix64(a ^ rotl64(b, 16) ^ rotl64(c, 32) ^ rotl64(d, 48));
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
