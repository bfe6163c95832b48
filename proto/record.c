#include "record.h"
#include "crc32.h"
#include "le.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

/* ---- writing ---- */

void rec_buf_init(struct rec_buf *b)
{
    memset(b, 0, sizeof(*b));
}

void rec_buf_free(struct rec_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

void rec_buf_reset(struct rec_buf *b)
{
    b->len = 0;
    b->failed = false;
    b->open = 0;
}

static uint8_t *rec_buf_grow(struct rec_buf *b, size_t n)
{
    if (b->failed)
        return NULL;
    if (n > SIZE_MAX - b->len) {
        b->failed = true;
        return NULL;
    }
    size_t need = b->len + n;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        uint8_t *p = realloc(b->data, cap);
        if (!p) {
            b->failed = true;
            return NULL;
        }
        b->data = p;
        b->cap = cap;
    }
    uint8_t *at = b->data + b->len;
    b->len = need;
    return at;
}

void rec_begin(struct rec_buf *b, uint32_t type, uint16_t version, uint16_t flags)
{
    if (b->open) {
        b->failed = true; /* records do not nest */
        return;
    }
    size_t at = b->len;
    uint8_t *h = rec_buf_grow(b, REC_HEADER_SIZE);
    if (!h)
        return;
    le32_put(h, type);
    le16_put(h + 4, version);
    le16_put(h + 6, flags);
    le32_put(h + 8, 0);
    le32_put(h + 12, 0);
    b->open = at + 1;
}

/* CRC over the header's first 12 bytes (type, version, flags, length) and
 * the payload. */
static uint32_t record_crc(const uint8_t *hdr12, const uint8_t *payload, size_t len)
{
    uint32_t crc = tern_crc32(0, hdr12, 12);
    crc = tern_crc32(crc, payload, len);
    return crc;
}

void rec_end(struct rec_buf *b)
{
    if (!b->open) {
        b->failed = true;
        return;
    }
    size_t at = b->open - 1;
    b->open = 0;
    if (b->failed)
        return;
    size_t payload = b->len - at - REC_HEADER_SIZE;
    if (payload > REC_MAX_PAYLOAD) {
        b->failed = true;
        return;
    }
    uint8_t *h = b->data + at;
    le32_put(h + 8, (uint32_t)payload);
    le32_put(h + 12, record_crc(h, h + REC_HEADER_SIZE, payload));
}

void rec_put_u8(struct rec_buf *b, uint8_t v)
{
    uint8_t *p = rec_buf_grow(b, 1);
    if (p)
        *p = v;
}

void rec_put_u16(struct rec_buf *b, uint16_t v)
{
    uint8_t *p = rec_buf_grow(b, 2);
    if (p)
        le16_put(p, v);
}

void rec_put_u32(struct rec_buf *b, uint32_t v)
{
    uint8_t *p = rec_buf_grow(b, 4);
    if (p)
        le32_put(p, v);
}

void rec_put_u64(struct rec_buf *b, uint64_t v)
{
    uint8_t *p = rec_buf_grow(b, 8);
    if (p)
        le64_put(p, v);
}

void rec_put_bytes(struct rec_buf *b, const void *src, size_t n)
{
    if (n == 0)
        return;
    uint8_t *p = rec_buf_grow(b, n);
    if (p)
        memcpy(p, src, n);
}

void rec_put_blob(struct rec_buf *b, const void *src, uint32_t n)
{
    rec_put_u32(b, n);
    rec_put_bytes(b, src, n);
}

void rec_put_str(struct rec_buf *b, const char *s)
{
    size_t n = strlen(s);
    if (n > UINT16_MAX) {
        b->failed = true;
        return;
    }
    rec_put_u16(b, (uint16_t)n);
    rec_put_bytes(b, s, n);
}

int rec_buf_check(const struct rec_buf *b, struct tern_err *err)
{
    if (b->failed)
        return tern_err_set(err, "encoding state failed (out of memory or a record over %u bytes)",
                            REC_MAX_PAYLOAD);
    if (b->open)
        return tern_err_set(err, "encoding state failed: a record was left open");
    return 0;
}

/* ---- reading ---- */

void rec_reader_init(struct rec_reader *r, const void *p, size_t len)
{
    memset(r, 0, sizeof(*r));
    r->p = p;
    r->len = len;
}

size_t rec_remaining(const struct rec_reader *r)
{
    return r->failed ? 0 : r->len - r->off;
}

/* Takes n bytes or marks the reader failed. */
static const uint8_t *take(struct rec_reader *r, size_t n, const char *what)
{
    if (r->failed)
        return NULL;
    if (n > r->len - r->off) {
        r->failed = true;
        snprintf(r->what, sizeof(r->what), "%s (%zu bytes wanted at offset %zu, %zu left)", what,
                 n, r->off, r->len - r->off);
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}

int rec_get_u8(struct rec_reader *r, uint8_t *v)
{
    const uint8_t *p = take(r, 1, "u8");
    *v = p ? *p : 0;
    return p ? 0 : -1;
}

int rec_get_u16(struct rec_reader *r, uint16_t *v)
{
    const uint8_t *p = take(r, 2, "u16");
    *v = p ? le16_get(p) : 0;
    return p ? 0 : -1;
}

int rec_get_u32(struct rec_reader *r, uint32_t *v)
{
    const uint8_t *p = take(r, 4, "u32");
    *v = p ? le32_get(p) : 0;
    return p ? 0 : -1;
}

int rec_get_u64(struct rec_reader *r, uint64_t *v)
{
    const uint8_t *p = take(r, 8, "u64");
    *v = p ? le64_get(p) : 0;
    return p ? 0 : -1;
}

int rec_get_bytes(struct rec_reader *r, void *dst, size_t n)
{
    const uint8_t *p = take(r, n, "bytes");
    if (!p) {
        memset(dst, 0, n);
        return -1;
    }
    memcpy(dst, p, n);
    return 0;
}

int rec_get_view(struct rec_reader *r, const uint8_t **out, size_t n)
{
    *out = take(r, n, "bytes");
    return *out ? 0 : -1;
}

int rec_get_blob(struct rec_reader *r, void *dst, uint32_t max, uint32_t *n)
{
    uint32_t len;
    *n = 0;
    if (rec_get_u32(r, &len) < 0)
        return -1;
    if (len > max) {
        r->failed = true;
        snprintf(r->what, sizeof(r->what), "blob of %u bytes where at most %u fit", len, max);
        return -1;
    }
    if (rec_get_bytes(r, dst, len) < 0)
        return -1;
    *n = len;
    return 0;
}

int rec_get_str(struct rec_reader *r, char *buf, size_t cap)
{
    uint16_t len;
    buf[0] = '\0';
    if (rec_get_u16(r, &len) < 0)
        return -1;
    if ((size_t)len >= cap) {
        r->failed = true;
        snprintf(r->what, sizeof(r->what), "string of %u bytes where at most %zu fit", len,
                 cap - 1);
        return -1;
    }
    if (rec_get_bytes(r, buf, len) < 0)
        return -1;
    buf[len] = '\0';
    if (memchr(buf, '\0', len)) {
        r->failed = true;
        snprintf(r->what, sizeof(r->what), "string with an embedded NUL");
        return -1;
    }
    return 0;
}

int rec_parse_header(const uint8_t *hdr, struct rec_header *h, struct tern_err *err)
{
    h->type = le32_get(hdr);
    h->version = le16_get(hdr + 4);
    h->flags = le16_get(hdr + 6);
    h->length = le32_get(hdr + 8);
    h->crc = le32_get(hdr + 12);
    if (h->length > REC_MAX_PAYLOAD)
        return tern_err_set(err, "record type 0x%x claims %u bytes (limit %u)", h->type,
                            h->length, REC_MAX_PAYLOAD);
    return 0;
}

int rec_check_crc(const struct rec_header *h, const uint8_t *payload, struct tern_err *err)
{
    return rec_crc_done(h, rec_crc_add(rec_crc_start(h), payload, h->length), err);
}

int rec_next(struct rec_reader *r, struct rec_header *h, struct rec_reader *payload,
             struct tern_err *err)
{
    if (r->failed)
        return tern_err_set(err, "reading records after an earlier error");
    size_t at = r->off;
    if (at == r->len)
        return 0;
    if (r->len - at < REC_HEADER_SIZE)
        return tern_err_set(err, "truncated record header at offset %zu (%zu bytes left)", at,
                            r->len - at);
    if (rec_parse_header(r->p + at, h, err) < 0)
        return tern_err_prefix(err, "at offset %zu", at);
    if (h->length > r->len - at - REC_HEADER_SIZE)
        return tern_err_set(err, "truncated record type 0x%x at offset %zu: %u bytes of payload, %zu left",
                            h->type, at, h->length, r->len - at - REC_HEADER_SIZE);
    const uint8_t *body = r->p + at + REC_HEADER_SIZE;
    if (rec_check_crc(h, body, err) < 0)
        return tern_err_prefix(err, "at offset %zu", at);
    rec_reader_init(payload, body, h->length);
    r->off = at + REC_HEADER_SIZE + h->length;
    return 1;
}

int rec_finish(const struct rec_reader *r, const char *what, struct tern_err *err)
{
    if (r->failed)
        return tern_err_set(err, "%s is malformed: %s", what, r->what);
    if (r->off != r->len)
        return tern_err_set(err, "%s has %zu unexpected trailing bytes", what, r->len - r->off);
    return 0;
}

int rec_header_for_iov(uint8_t out[REC_HEADER_SIZE], uint32_t type, uint16_t version,
                       uint16_t flags, const struct iovec *iov, int iovcnt,
                       struct tern_err *err)
{
    uint64_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (total > REC_MAX_PAYLOAD)
        return tern_err_set(err, "record type 0x%x payload of %llu bytes exceeds %u", type,
                            (unsigned long long)total, REC_MAX_PAYLOAD);
    le32_put(out, type);
    le16_put(out + 4, version);
    le16_put(out + 6, flags);
    le32_put(out + 8, (uint32_t)total);
    uint32_t crc = tern_crc32(0, out, 12);
    for (int i = 0; i < iovcnt; i++)
        crc = tern_crc32(crc, iov[i].iov_base, iov[i].iov_len);
    le32_put(out + 12, crc);
    return 0;
}

uint32_t rec_crc_start(const struct rec_header *h)
{
    uint8_t hdr12[12];
    le32_put(hdr12, h->type);
    le16_put(hdr12 + 4, h->version);
    le16_put(hdr12 + 6, h->flags);
    le32_put(hdr12 + 8, h->length);
    return tern_crc32(0, hdr12, 12);
}

uint32_t rec_crc_add(uint32_t crc, const void *p, size_t n)
{
    return tern_crc32(crc, p, n);
}

int rec_crc_done(const struct rec_header *h, uint32_t crc, struct tern_err *err)
{
    if (crc != h->crc)
        return tern_err_set(err, "record type 0x%x (%u bytes) is corrupt: checksum 0x%08x, expected 0x%08x",
                            h->type, h->length, crc, h->crc);
    return 0;
}
