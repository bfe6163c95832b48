/* zlib-compatible CRC-32, folded with PCLMULQDQ where the CPU has it.
 *
 * The method is the one of Intel's "Fast CRC Computation for Generic
 * Polynomials Using PCLMULQDQ Instruction" (Gopal et al., 2009) for the
 * reflected IEEE polynomial: four 128-bit lanes are folded 64 bytes
 * forward per step (x^(512+64) and x^512 mod P), folded into one lane
 * (x^(128+64), x^128), then the last 128 bits are reduced to 64, to 32,
 * and by Barrett reduction to the CRC. The constants are those powers of
 * x mod P (bit-reflected, shifted by one) and, for Barrett, floor(x^64 /
 * P) and P itself. tests/unit/test_migration_records.c checks the result
 * against zlib on every length and alignment that matters. */
#include "crc32.h"

#include <immintrin.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <zlib.h>

uint32_t tern_crc32_zlib(uint32_t crc, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = (uint32_t)crc32(crc, b, chunk);
        b += chunk;
        n -= chunk;
    }
    return crc;
}

#define PCLMUL_MIN 64 /* below this, zlib is as fast */

__attribute__((target("pclmul,sse4.1"))) static inline __m128i fold(__m128i x, __m128i k,
                                                                    __m128i data)
{
    __m128i lo = _mm_clmulepi64_si128(x, k, 0x00);
    __m128i hi = _mm_clmulepi64_si128(x, k, 0x11);
    return _mm_xor_si128(_mm_xor_si128(lo, hi), data);
}

static inline __m128i load(const uint8_t *p)
{
    return _mm_loadu_si128((const __m128i *)p);
}

/* The raw (not inverted) CRC state over len bytes: len >= 64, a multiple
 * of 16. */
__attribute__((target("pclmul,sse4.1"))) static uint32_t crc32_fold(uint32_t state,
                                                                     const uint8_t *p,
                                                                     size_t len)
{
    const __m128i k_512 = _mm_set_epi64x(0x1c6e41596ll, 0x154442bd4ll); /* 4 lanes, 64 bytes */
    const __m128i k_128 = _mm_set_epi64x(0xccaa009ell, 0x1751997d0ll);  /* 1 lane, 16 bytes */
    const __m128i k_64 = _mm_set_epi64x(0, 0x163cd6124ll);
    const __m128i barrett = _mm_set_epi64x(0x1f7011641ll, 0x1db710641ll); /* mu, P */
    const __m128i mask32 = _mm_set_epi32(0, 0, 0, -1);

    __m128i x0 = _mm_xor_si128(load(p), _mm_cvtsi32_si128((int)state));
    __m128i x1 = load(p + 16), x2 = load(p + 32), x3 = load(p + 48);
    p += 64;
    len -= 64;
    while (len >= 64) {
        x0 = fold(x0, k_512, load(p));
        x1 = fold(x1, k_512, load(p + 16));
        x2 = fold(x2, k_512, load(p + 32));
        x3 = fold(x3, k_512, load(p + 48));
        p += 64;
        len -= 64;
    }
    x0 = fold(x0, k_128, x1);
    x0 = fold(x0, k_128, x2);
    x0 = fold(x0, k_128, x3);
    while (len >= 16) {
        x0 = fold(x0, k_128, load(p));
        p += 16;
        len -= 16;
    }
    /* 128 -> 64 bits. */
    __m128i t = _mm_clmulepi64_si128(x0, k_128, 0x10);
    x0 = _mm_xor_si128(_mm_srli_si128(x0, 8), t);
    /* 64 -> 32 bits. */
    t = _mm_srli_si128(x0, 4);
    x0 = _mm_clmulepi64_si128(_mm_and_si128(x0, mask32), k_64, 0x00);
    x0 = _mm_xor_si128(x0, t);
    /* Barrett reduction. */
    t = x0;
    x0 = _mm_clmulepi64_si128(_mm_and_si128(x0, mask32), barrett, 0x10);
    x0 = _mm_clmulepi64_si128(_mm_and_si128(x0, mask32), barrett, 0x00);
    x0 = _mm_xor_si128(x0, t);
    return (uint32_t)_mm_extract_epi32(x0, 1);
}

static bool have_pclmul(void)
{
    static atomic_int have = -1; /* every thread computes the same answer */
    int h = atomic_load_explicit(&have, memory_order_relaxed);
    if (h < 0) {
        __builtin_cpu_init();
        h = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
        atomic_store_explicit(&have, h, memory_order_relaxed);
    }
    return h;
}

uint32_t tern_crc32(uint32_t crc, const void *p, size_t n)
{
    const uint8_t *b = p;
    if (n >= PCLMUL_MIN && have_pclmul()) {
        size_t body = n & ~(size_t)15;
        crc = ~crc32_fold(~crc, b, body);
        b += body;
        n -= body;
    }
    return n ? tern_crc32_zlib(crc, b, n) : crc;
}
