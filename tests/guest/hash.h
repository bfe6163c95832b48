/* The 64-bit hash behind the self-describing fill pages (pages.c) and the
 * disk journal records (journal.c): header-only so host unit tests can
 * include the guest's .c files directly.
 *
 * Four independent lanes so the multiply latency overlaps; each step
 * (xor, multiply by an odd constant, rotate) is a bijection of the lane for
 * a fixed input word, so changing any one word changes that lane's end
 * value, and the lanes are folded with xor before a bijective mix. */
#ifndef TERN_TESTS_GUEST_HASH_H
#define TERN_TESTS_GUEST_HASH_H

#include <stdint.h>

#define TG_HASH_MUL1 0x9e3779b97f4a7c15ull
#define TG_HASH_MUL2 0xd6e8feb86659fd93ull

static inline uint64_t tg_rotl64(uint64_t x, unsigned r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t tg_mix64(uint64_t x)
{
    x ^= x >> 32;
    x *= TG_HASH_MUL2;
    x ^= x >> 32;
    x *= TG_HASH_MUL2;
    x ^= x >> 32;
    return x;
}

/* Hashes two header words (e.g. frame and generation) and `n` payload
 * words. */
static inline uint64_t tg_hash_words(uint64_t h0, uint64_t h1, const uint64_t *w, unsigned n)
{
    uint64_t a = TG_HASH_MUL1 ^ h0;
    uint64_t b = TG_HASH_MUL2 ^ h1;
    uint64_t c = 0x243f6a8885a308d3ull;
    uint64_t d = 0x13198a2e03707344ull;
    unsigned i;

    for (i = 0; i + 4 <= n; i += 4) {
        a = tg_rotl64((a ^ w[i]) * TG_HASH_MUL1, 29);
        b = tg_rotl64((b ^ w[i + 1]) * TG_HASH_MUL1, 29);
        c = tg_rotl64((c ^ w[i + 2]) * TG_HASH_MUL1, 29);
        d = tg_rotl64((d ^ w[i + 3]) * TG_HASH_MUL1, 29);
    }
    for (; i < n; i++)
        a = tg_rotl64((a ^ w[i]) * TG_HASH_MUL1, 29);
    return tg_mix64(a ^ tg_rotl64(b, 16) ^ tg_rotl64(c, 32) ^ tg_rotl64(d, 48));
}

#endif
