/* libFuzzer harness for the page codec (migrate/page_codec.c).
 *
 * The first input byte picks what the rest is:
 *   even  page_decode: the next byte is the encoding, the rest the payload,
 *         decoded into an exactly-4096-byte page (ASan catches any write
 *         outside it). A failure must say why; an XOR payload that fails
 *         must leave the page untouched.
 *   odd   encoder round trip: the bytes build a page and a series of
 *         changes to it; each version is encoded with a 2-set cache and
 *         decoded on a receiver copy, which must then equal it exactly.
 *
 *   clang -std=gnu11 -D_GNU_SOURCE -I. -g -O1 -fsanitize=fuzzer,address,undefined \
 *       tests/fuzz/fuzz_page_codec.c migrate/page_codec.c proto/migration.c \
 *       proto/record.c common/err.c -llz4 -lz -lcrypto -o fuzz_page_codec
 * (or `make fuzz`, which links the whole library). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/page_codec.h"

#define PG 4096u

static void decode_case(const uint8_t *p, size_t n)
{
    if (n < 1)
        return;
    uint8_t enc = p[0];
    p++, n--;
    if (n > 2 * PG)
        n = 2 * PG;
    /* An exact-size copy of the payload, so reads past it are caught too. */
    uint8_t *in = malloc(n ? n : 1);
    uint8_t *page = malloc(PG);
    uint8_t *before = malloc(PG);
    if (!in || !page || !before)
        abort();
    memcpy(in, p, n);
    for (unsigned i = 0; i < PG; i++)
        page[i] = (uint8_t)(i * 13 + 5);
    memcpy(before, page, PG);
    struct tern_err err;
    err.msg[0] = '\0';
    int rc = page_decode(enc, in, (uint32_t)n, page, &err);
    if (rc < 0) {
        if (err.msg[0] == '\0')
            abort(); /* every failure says why */
        if (enc != PAGE_ENC_LZ4 && memcmp(page, before, PG) != 0)
            abort(); /* only LZ4 may fail after touching the page */
    } else if (rc != 0) {
        abort();
    }
    free(in);
    free(page);
    free(before);
}

struct src {
    const uint8_t *p;
    size_t n;
};

static uint8_t take8(struct src *s)
{
    if (!s->n)
        return 0;
    s->n--;
    return *s->p++;
}

static void encode_case(const uint8_t *p, size_t n)
{
    static struct page_encoder *e;
    struct tern_err err;
    if (!e && page_encoder_create(&e, 4 * PG, &err) < 0)
        abort();
    page_encoder_reset(e);
    struct src s = {p, n};
    uint8_t *page = calloc(1, PG), *recv = calloc(1, PG);
    uint8_t out[PAGE_ENC_MAX_OUT];
    if (!page || !recv)
        abort();
    /* Initial content: a repeated fragment of the input, or zeroes. */
    uint8_t kind = take8(&s);
    size_t frag = 1 + take8(&s) % 64;
    for (unsigned i = 0; i < PG; i++)
        page[i] = (kind & 1) ? 0 : (uint8_t)(i < frag ? take8(&s) : page[i % frag]);
    page_encoder_set_lz4(e, (kind >> 1) % 4);
    uint64_t pfn = take8(&s) % 8;
    for (int round = 0; round < 16; round++) {
        uint8_t enc;
        uint32_t len = page_encode(e, pfn, page, out, &enc);
        if (len > PG)
            abort();
        if (page_decode(enc, out, len, recv, &err) != 0 || memcmp(recv, page, PG) != 0)
            abort();
        if (!s.n)
            break;
        /* Changes: (offset, length, value) triples; sometimes another page. */
        uint8_t ops = take8(&s) % 8;
        for (unsigned k = 0; k < ops; k++) {
            unsigned at = ((unsigned)take8(&s) << 4) % PG;
            unsigned len2 = take8(&s);
            uint8_t v = take8(&s);
            for (unsigned i = at; i < at + len2 && i < PG; i++)
                page[i] = v == 0xff ? take8(&s) : v;
        }
        if (take8(&s) == 0x55) {
            /* Send another page in between: evictions (same set, 2 sets). */
            uint8_t enc2;
            uint64_t other = pfn + 2 + 2 * (take8(&s) % 3);
            uint8_t *tmp = calloc(1, PG);
            if (!tmp)
                abort();
            tmp[0] = 1;
            uint32_t l2 = page_encode(e, other, tmp, out, &enc2);
            if (page_decode(enc2, out, l2, tmp, &err) != 0)
                abort();
            free(tmp);
        }
    }
    free(page);
    free(recv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1)
        encode_case(data + 1, size - 1);
    else
        decode_case(data + 1, size - 1);
    return 0;
}
