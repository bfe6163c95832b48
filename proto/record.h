/* Versioned, bounds-checked records: the one framing every Tern wire and
 * file format uses (snapshots now, the migration stream later).
 *
 * A record on the wire, little-endian:
 *   u32 type | u16 version | u16 flags | u32 length | u32 crc32 | payload[length]
 * The CRC (zlib crc32) covers type, version, flags, length and the payload,
 * so a flipped bit anywhere is caught when the record is read.
 *
 * Writers append to a growable buffer; readers walk a byte range and never
 * read past it: every getter checks the remaining length first and, once
 * one check fails, the reader stays failed (later getters return -1 and
 * leave their outputs zeroed), so decoders can read a whole struct and
 * check once at the end.
 *
 * proto/ knows framing, versions and bounds, not what is inside a record:
 * each device encodes and decodes its own state with these helpers. */
#ifndef TERN_PROTO_RECORD_H
#define TERN_PROTO_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"

#define REC_HEADER_SIZE 16u
/* Largest payload one record may carry (bigger data is split). */
#define REC_MAX_PAYLOAD (64u << 20)

struct rec_header {
    uint32_t type;
    uint16_t version;
    uint16_t flags;
    uint32_t length;
    uint32_t crc;
};

/* --- writing --- */

struct rec_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    bool failed; /* allocation failed or a record grew past REC_MAX_PAYLOAD */
    size_t open; /* offset of the open record's header + 1, 0 when none */
};

void rec_buf_init(struct rec_buf *b);
void rec_buf_free(struct rec_buf *b);
/* Forgets the contents, keeps the allocation. */
void rec_buf_reset(struct rec_buf *b);

/* Starts a record; records do not nest (use rec_put_bytes of another
 * buffer's contents to embed records in a payload). */
void rec_begin(struct rec_buf *b, uint32_t type, uint16_t version, uint16_t flags);
/* Fills in length and CRC of the open record. */
void rec_end(struct rec_buf *b);

void rec_put_u8(struct rec_buf *b, uint8_t v);
void rec_put_u16(struct rec_buf *b, uint16_t v);
void rec_put_u32(struct rec_buf *b, uint32_t v);
void rec_put_u64(struct rec_buf *b, uint64_t v);
void rec_put_bytes(struct rec_buf *b, const void *p, size_t n);
/* A u32 length then the bytes. */
void rec_put_blob(struct rec_buf *b, const void *p, uint32_t n);
/* A u16 length then the bytes, no NUL. */
void rec_put_str(struct rec_buf *b, const char *s);

/* 0, or -1 with a message if anything failed while writing. */
int rec_buf_check(const struct rec_buf *b, struct tern_err *err);

/* --- reading --- */

struct rec_reader {
    const uint8_t *p;
    size_t len;
    size_t off;
    bool failed;
    char what[96]; /* what the failed read was, for the error message */
};

void rec_reader_init(struct rec_reader *r, const void *p, size_t len);

int rec_get_u8(struct rec_reader *r, uint8_t *v);
int rec_get_u16(struct rec_reader *r, uint16_t *v);
int rec_get_u32(struct rec_reader *r, uint32_t *v);
int rec_get_u64(struct rec_reader *r, uint64_t *v);
/* Copies exactly n bytes. */
int rec_get_bytes(struct rec_reader *r, void *p, size_t n);
/* Points *p at the next n bytes without copying. */
int rec_get_view(struct rec_reader *r, const uint8_t **p, size_t n);
/* A u32-length blob of at most max bytes, copied; *n gets its length. */
int rec_get_blob(struct rec_reader *r, void *p, uint32_t max, uint32_t *n);
/* A u16-length string into buf (NUL-terminated, at most cap-1 bytes). */
int rec_get_str(struct rec_reader *r, char *buf, size_t cap);

size_t rec_remaining(const struct rec_reader *r);

/* Reads the next record: checks that the header and `length` payload bytes
 * are there, that length <= REC_MAX_PAYLOAD and that the CRC matches, then
 * sets *payload to a reader over exactly the payload. Returns 1 on success,
 * 0 at a clean end of input (no bytes left), -1 on error (err says what
 * and at which offset). */
int rec_next(struct rec_reader *r, struct rec_header *h, struct rec_reader *payload,
             struct tern_err *err);

/* Parses and validates a header from exactly REC_HEADER_SIZE bytes (for
 * streaming readers that fetch the header first); the CRC can then be
 * checked with rec_check_crc once the payload is in. */
int rec_parse_header(const uint8_t *hdr, struct rec_header *h, struct tern_err *err);
int rec_check_crc(const struct rec_header *h, const uint8_t *payload, struct tern_err *err);

/* --- streaming large payloads (guest RAM) without copying --- */

struct iovec;

/* Encodes the header of a record whose payload is the concatenation of
 * `iov` (so it can be written with writev straight from where the data
 * lives). Fails if the payload exceeds REC_MAX_PAYLOAD. */
int rec_header_for_iov(uint8_t out[REC_HEADER_SIZE], uint32_t type, uint16_t version,
                       uint16_t flags, const struct iovec *iov, int iovcnt,
                       struct tern_err *err);

/* Incremental CRC check for a payload read in pieces: start with
 * rec_crc_start(h), feed every payload byte in order with rec_crc_add, then
 * compare with rec_crc_done. */
uint32_t rec_crc_start(const struct rec_header *h);
uint32_t rec_crc_add(uint32_t crc, const void *p, size_t n);
int rec_crc_done(const struct rec_header *h, uint32_t crc, struct tern_err *err);

/* For decoders: -1 with a message naming `what` (e.g. "uart state v1") if
 * the reader failed or has bytes left over; 0 otherwise. */
int rec_finish(const struct rec_reader *r, const char *what, struct tern_err *err);

#endif
