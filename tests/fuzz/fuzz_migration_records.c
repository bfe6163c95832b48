/* libFuzzer harness for the migration stream decoders (proto/migration.c).
 * Arbitrary bytes must give a clean success or an error that says why,
 * never a crash, an out-of-bounds access or a leak; and what a decoder
 * accepts must encode back to the very same bytes (canonical encodings),
 * except ERROR, whose message is cleaned up on the way in.
 *
 * The first input byte picks what the rest is:
 *   0-10  (mod 16) the payload of one record type (HELLO..CANCEL, the 11th
 *         is PAGES again with a tiny RAM), version 1, flags 0, fed to its
 *         decoder without framing (so no CRC to guess);
 *   11+   a byte stream of framed records, walked as a receiver would:
 *         rec_next, mig_check_header, the decoder, and for PAGES every
 *         page decoded into a scratch page with page_decode.
 *
 *   clang -std=gnu11 -D_GNU_SOURCE -I. -g -O1 -fsanitize=fuzzer,address,undefined \
 *       tests/fuzz/fuzz_migration_records.c proto/migration.c proto/record.c \
 *       migrate/page_codec.c common/err.c -llz4 -lz -lcrypto -o fuzz_migration_records
 * (or `make fuzz`, which links the whole library). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/page_codec.h"
#include "proto/migration.h"

static void same_payload(const struct rec_buf *b, const uint8_t *p, size_t n)
{
    if (b->failed || b->len != REC_HEADER_SIZE + n ||
        (n && memcmp(b->data + REC_HEADER_SIZE, p, n) != 0))
        abort(); /* a decoder accepted a non-canonical encoding */
}

static uint8_t scratch[MIG_PAGE_SIZE];

/* Decodes one payload as `type`; returns the decoder's result. */
static int decode_one(uint32_t type, const uint8_t *p, size_t n, uint64_t nr_pages, int check)
{
    struct rec_header h = {.type = type, .version = 1, .flags = 0, .length = (uint32_t)n};
    struct rec_reader r;
    struct tern_err err;
    struct rec_buf b;
    err.msg[0] = '\0';
    rec_reader_init(&r, p, n);
    rec_buf_init(&b);
    int rc;
    switch (type) {
    case REC_TYPE_MIG_HELLO: {
        struct mig_hello m, local;
        rc = mig_hello_decode(&h, &r, &m, &err);
        if (rc == 0) {
            mig_hello_encode(&b, &m);
            uint32_t code;
            local = m;
            local.config_digest[0] ^= 1;
            if (mig_hello_check(&m, &m, &code, &err) != 0 ||
                mig_hello_check(&local, &m, &code, &err) != -1 || code != MIG_ERR_CONFIG)
                abort();
        }
        break;
    }
    case REC_TYPE_MIG_PAGES: {
        struct mig_pages_iter it;
        rc = mig_pages_iter_init(&it, &h, &r, nr_pages, &err);
        if (rc == 0) {
            struct mig_pages_writer w;
            struct mig_page pg;
            if (mig_pages_writer_init(&w, MIG_PAGES_MAX_COUNT, MIG_PAGES_MAX_PAYLOAD, &err) < 0)
                abort();
            uint32_t seen = 0;
            while (mig_pages_iter_next(&it, &pg)) {
                if (pg.index >= nr_pages || !mig_page_len_ok(pg.enc, pg.len) ||
                    pg.data < p || pg.data + pg.len > p + n)
                    abort();
                (void)page_decode(pg.enc, pg.data, pg.len, scratch, &err);
                if (mig_pages_add(&w, pg.index, pg.enc, pg.data, pg.len, &err) < 0)
                    abort();
                seen++;
            }
            if (seen != it.count)
                abort();
            const uint8_t *data;
            size_t len;
            if (mig_pages_seal(&w, &data, &len, &err) < 0)
                abort();
            rec_put_bytes(&b, data, len);
            mig_pages_writer_free(&w);
        }
        break;
    }
    case REC_TYPE_MIG_ROUND_END: {
        struct mig_round_end m;
        rc = mig_round_end_decode(&h, &r, &m, &err);
        if (rc == 0)
            mig_round_end_encode(&b, &m);
        break;
    }
    case REC_TYPE_MIG_STATE: {
        const uint8_t *v;
        size_t len;
        rc = mig_state_decode(&h, &r, &v, &len, &err);
        if (rc == 0) {
            if (v != p || len != n)
                abort();
            mig_state_encode(&b, v, len);
        }
        break;
    }
    case REC_TYPE_MIG_END: {
        struct mig_end m;
        rc = mig_end_decode(&h, &r, &m, &err);
        if (rc == 0)
            mig_end_encode(&b, &m);
        break;
    }
    case REC_TYPE_MIG_READY: {
        struct mig_ready m;
        rc = mig_ready_decode(&h, &r, &m, &err);
        if (rc == 0)
            mig_ready_encode(&b, &m);
        break;
    }
    case REC_TYPE_MIG_COMMIT:
        rc = mig_commit_decode(&h, &r, &err);
        if (rc == 0)
            mig_commit_encode(&b);
        break;
    case REC_TYPE_MIG_RUNNING:
        rc = mig_running_decode(&h, &r, &err);
        if (rc == 0)
            mig_running_encode(&b);
        break;
    case REC_TYPE_MIG_CANCEL:
        rc = mig_cancel_decode(&h, &r, &err);
        if (rc == 0)
            mig_cancel_encode(&b);
        break;
    case REC_TYPE_MIG_ERROR: {
        struct mig_error m;
        rc = mig_error_decode(&h, &r, &m, &err);
        if (rc == 0) {
            size_t len = strlen(m.msg);
            for (size_t i = 0; i < len; i++)
                if ((uint8_t)m.msg[i] < 0x20 || m.msg[i] == 0x7f)
                    abort(); /* control characters must be gone */
            if (len > MIG_ERROR_MAX_MSG)
                abort();
        }
        check = 0;
        break;
    }
    default:
        rc = mig_check_header(&h, &err);
        if (rc == 0)
            abort(); /* not a migration type */
        check = 0;
    }
    if (rc == 0 && check)
        same_payload(&b, p, n);
    else if (rc != 0 && err.msg[0] == '\0')
        abort(); /* every failure says why */
    rec_buf_free(&b);
    return rc;
}

static void walk_stream(const uint8_t *p, size_t n)
{
    struct rec_reader all, payload;
    struct rec_header h;
    struct tern_err err;
    rec_reader_init(&all, p, n);
    uint64_t nr_pages = 64;
    while (rec_next(&all, &h, &payload, &err) == 1) {
        if (mig_check_header(&h, &err) < 0)
            continue;
        if (h.type == REC_TYPE_MIG_HELLO) {
            struct mig_hello m;
            struct rec_reader copy = payload;
            if (mig_hello_decode(&h, &copy, &m, &err) == 0)
                nr_pages = mig_hello_nr_pages(&m);
        }
        decode_one(h.type, payload.p, payload.len, nr_pages, 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0] % 16;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    if (mode <= 9)
        decode_one(REC_TYPE_MIG_HELLO + mode, p, n, 1u << 20, 1);
    else if (mode == 10)
        decode_one(REC_TYPE_MIG_PAGES, p, n, 4, 1);
    else
        walk_stream(p, n);
    return 0;
}
