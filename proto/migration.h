/* The live-migration stream: its records (types 0x0301-0x030a in
 * record_types.h), each framed with record.h, and their encoders and
 * strict decoders. Field by field, with the handover order and what each
 * side does on ERROR: docs/migration-stream.md.
 *
 * Every decoder takes the header and payload reader that rec_next (or a
 * streaming reader using rec_parse_header + rec_check_crc) produced,
 * checks type, version 1 and flags 0, reads every field, checks every
 * value and refuses trailing bytes (rec_finish); on failure it returns -1
 * and err says what was wrong. Encoders append one record to a rec_buf
 * (check it once with rec_buf_check), except PAGES, which has its own
 * fixed-size writer so pages are encoded straight into the batch, and
 * STATE, whose header can be made for a writev of the state in place.
 *
 * proto/ knows the wire values of the page encodings and their length
 * rules; how pages are encoded is migrate/page_codec.h. */
#ifndef TERN_PROTO_MIGRATION_H
#define TERN_PROTO_MIGRATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"
#include "record.h"
#include "record_types.h"

#define MIG_PROTOCOL_VERSION 1u
#define MIG_MAGIC "TERNMIGR" /* 8 bytes, no NUL, first in HELLO */
#define MIG_PAGE_SIZE 4096u
#define MIG_DIGEST_SIZE 32u /* SHA-256 */
#define MIG_MAX_REGIONS 8u
#define MIG_MAX_STREAMS 64u
#define MIG_MAX_DISKS 64u
#define MIG_ERROR_MAX_MSG 1000u

/* Page encodings on the wire (one byte per page in PAGES). */
#define MIG_PAGE_ZERO 0u /* payload: none */
#define MIG_PAGE_RAW 1u  /* payload: the 4096 bytes */
#define MIG_PAGE_LZ4 2u  /* payload: one LZ4 block of 1..4095 bytes decoding to 4096 */
#define MIG_PAGE_XOR 3u  /* payload: 0..4095 bytes of XOR runs (migrate/page_codec.h) */
#define MIG_PAGE_ENCODINGS 4u

/* PAGES limits: at most this many pages per batch, so a payload is at
 * most MIG_PAGES_MAX_PAYLOAD bytes (every page RAW): a receiver can hold
 * one batch per stream in one fixed buffer. */
#define MIG_PAGES_MAX_COUNT 256u
#define MIG_PAGE_ENTRY_HEAD 13u /* u64 index, u8 encoding, u32 length */
#define MIG_PAGES_MAX_PAYLOAD (4u + MIG_PAGES_MAX_COUNT * (MIG_PAGE_ENTRY_HEAD + MIG_PAGE_SIZE))
/* Room mig_pages_slot guarantees for one page's payload (an encoder may
 * use a little more than the 4096 bytes it keeps as scratch). */
#define MIG_PAGES_SLOT_ROOM (MIG_PAGE_SIZE + 64u)

/* ERROR codes: what went wrong, for programs; the message is for people.
 * Unknown codes are accepted (and read as MIG_ERR_OTHER by people). */
enum mig_error_code {
    MIG_ERR_OTHER = 0,
    MIG_ERR_VERSION = 1,   /* protocol version not spoken */
    MIG_ERR_CONFIG = 2,    /* VM configuration digest differs */
    MIG_ERR_LAYOUT = 3,    /* RAM size, page size or regions differ */
    MIG_ERR_STREAMS = 4,   /* stream index/count/session inconsistent */
    MIG_ERR_PROTOCOL = 5,  /* malformed, corrupt or unexpected record */
    MIG_ERR_RESOURCES = 6, /* out of memory, I/O error, ... on the sender of ERROR */
    MIG_ERR_STATE = 7,     /* VM state refused when applied */
    MIG_ERR_CANCELLED = 8, /* operator cancelled */
    MIG_ERR_TIMEOUT = 9,   /* did not converge / took too long */
};

/* --- HELLO (0x0301): first record on every stream, source -> destination --- */

/* HELLO header flags (every other record has flags 0). */
#define MIG_HELLO_COMMIT_GATE 0x0001u /* the handover waits for the agents (--commit-gate) */

struct mig_region {
    uint64_t gpa;    /* guest physical start, page-aligned */
    uint64_t size;   /* bytes, a multiple of the page size, > 0 */
    uint64_t offset; /* offset in RAM (the memfd): regions are contiguous from 0 */
};

struct mig_hello {
    uint32_t protocol; /* MIG_PROTOCOL_VERSION */
    uint64_t session;  /* random per migration attempt, the same on every stream */
    uint8_t config_digest[MIG_DIGEST_SIZE]; /* mig_config_digest */
    uint64_t ram_bytes;                     /* total RAM; page index < ram_bytes / page_size */
    uint32_t page_size;                     /* MIG_PAGE_SIZE */
    uint16_t stream;                        /* this stream's index, < nr_streams */
    uint16_t nr_streams;                    /* 1..MIG_MAX_STREAMS */
    uint32_t nr_regions;                    /* 1..MIG_MAX_REGIONS */
    struct mig_region regions[MIG_MAX_REGIONS];
    bool commit_gate; /* header flag MIG_HELLO_COMMIT_GATE: COMMIT only on the agents' word */
};

/* SHA-256 over the canonical encoding of what must match on both sides:
 * "tern-vm-config/1", u64 memory bytes, u32 vCPUs, u32 TSC kHz, u32 disk
 * count, then one u8 read-only flag (0/1) per disk, all little-endian.
 * Disk paths are deliberately not in it: shared storage may be mounted at
 * different paths on the two hosts. Fails only for more than MIG_MAX_DISKS
 * disks or an OpenSSL failure. */
int mig_config_digest(uint64_t mem_bytes, uint32_t vcpus, uint32_t tsc_khz, unsigned nr_disks,
                      const bool *disk_read_only, uint8_t out[MIG_DIGEST_SIZE],
                      struct tern_err *err);

void mig_hello_encode(struct rec_buf *b, const struct mig_hello *m);
/* Checks structure and layout consistency (regions contiguous from offset
 * 0, summing to ram_bytes, page-aligned, not overlapping in guest physical
 * space; stream < nr_streams). The magic is checked first, then the
 * protocol version, before anything else is read: out->protocol is set
 * whenever the magic was right, so a receiver can answer MIG_ERR_VERSION
 * when out->protocol != MIG_PROTOCOL_VERSION. */
int mig_hello_decode(const struct rec_header *h, struct rec_reader *r, struct mig_hello *out,
                     struct tern_err *err);
/* Compares a peer's HELLO with what this side expects: protocol, config
 * digest, RAM layout and commit gate (both sides must agree on who decides
 * the handover: MIG_ERR_CONFIG) always; session and nr_streams too when
 * local->nr_streams is not 0 (compare the 2nd..Nth stream's HELLO with
 * the first one's). Returns 0, or -1 with *code (enum mig_error_code) and
 * err set, ready to go into an ERROR record. */
int mig_hello_check(const struct mig_hello *local, const struct mig_hello *peer, uint32_t *code,
                    struct tern_err *err);
/* ram_bytes / page_size. */
uint64_t mig_hello_nr_pages(const struct mig_hello *m);

/* --- PAGES (0x0302): a batch of pages, source -> destination --- */

/* Builds one PAGES record in a buffer allocated once: pages are encoded
 * straight into it (mig_pages_slot + mig_pages_commit), then
 * mig_pages_seal writes count, length and CRC and hands back the whole
 * record for one write. Not thread-safe; one per stream. */
struct mig_pages_writer {
    uint8_t *buf;
    size_t cap;
    size_t len; /* bytes used, record header included */
    uint32_t count;
    uint32_t max_pages;
    size_t max_payload;
    bool sealed;
};

/* max_pages 1..MIG_PAGES_MAX_COUNT; max_payload: a batch counts as full
 * once its payload reaches this (e.g. 1 MiB; at most MIG_PAGES_MAX_PAYLOAD). */
int mig_pages_writer_init(struct mig_pages_writer *w, uint32_t max_pages, size_t max_payload,
                          struct tern_err *err);
void mig_pages_writer_free(struct mig_pages_writer *w);
/* Empties the batch (after its record was written). */
void mig_pages_reset(struct mig_pages_writer *w);
/* True when the batch must be sealed before another page goes in. */
bool mig_pages_full(const struct mig_pages_writer *w);
/* Where the next page's payload goes: room for MIG_PAGES_SLOT_ROOM bytes
 * (page_encode's PAGE_ENC_MAX_OUT), or NULL when the batch is full or
 * sealed. */
uint8_t *mig_pages_slot(struct mig_pages_writer *w);
/* Records the page whose payload (len bytes) was written at the slot.
 * Returns -1 (err set) if the batch was full or sealed, or if len is not
 * valid for enc: a bug in the caller. */
int mig_pages_commit(struct mig_pages_writer *w, uint64_t index, uint8_t enc, uint32_t len,
                     struct tern_err *err);
/* Copies a payload in: slot + memcpy + commit. */
int mig_pages_add(struct mig_pages_writer *w, uint64_t index, uint8_t enc, const void *payload,
                  uint32_t len, struct tern_err *err);
/* Finishes the record (count, header, CRC); *data and *len are the bytes to
 * send, valid until the next reset. An empty batch is a valid record. */
int mig_pages_seal(struct mig_pages_writer *w, const uint8_t **data, size_t *len,
                   struct tern_err *err);

/* One page of a received batch: a view into the record's payload. */
struct mig_page {
    uint64_t index; /* < nr_pages */
    uint8_t enc;    /* MIG_PAGE_* */
    uint32_t len;   /* valid for enc */
    const uint8_t *data;
};

struct mig_pages_iter {
    const uint8_t *p;
    size_t len;
    size_t off;
    uint32_t count;
    uint32_t next;
};

/* Validates a whole PAGES payload before anything is applied: type,
 * version, flags, payload at most MIG_PAGES_MAX_PAYLOAD, count at most
 * MIG_PAGES_MAX_COUNT, then for every page index < nr_pages, a known
 * encoding, a length valid for it and inside the payload, and exactly
 * `count` pages with no trailing bytes. Nothing is copied. */
int mig_pages_iter_init(struct mig_pages_iter *it, const struct rec_header *h,
                        struct rec_reader *r, uint64_t nr_pages, struct tern_err *err);
/* The next page, or false after the last. Views point into the payload. */
bool mig_pages_iter_next(struct mig_pages_iter *it, struct mig_page *pg);

/* Length rules per encoding (false for an unknown encoding). */
bool mig_page_len_ok(uint8_t enc, uint32_t len);

/* --- ROUND_END (0x0303): one stream's part of a round is complete --- */

struct mig_round_end {
    uint32_t round;  /* 0 is the first pass over all memory */
    uint16_t stream; /* the stream it travels on */
    uint64_t pages;  /* pages this stream sent in this round */
};

void mig_round_end_encode(struct rec_buf *b, const struct mig_round_end *m);
int mig_round_end_decode(const struct rec_header *h, struct rec_reader *r,
                         struct mig_round_end *out, struct tern_err *err);

/* --- STATE (0x0304): the VM state records (node-vmm/vm_state.c) --- */

/* Copies the state into b as one record. */
void mig_state_encode(struct rec_buf *b, const void *state, size_t len);
/* The header of a STATE record carrying `len` bytes at `state`, for a
 * writev of header + state without copying. Fails if len is 0 or over
 * REC_MAX_PAYLOAD. */
int mig_state_header(uint8_t out[REC_HEADER_SIZE], const void *state, size_t len,
                     struct tern_err *err);
/* *state points into the payload (not copied); it is not empty. */
int mig_state_decode(const struct rec_header *h, struct rec_reader *r, const uint8_t **state,
                     size_t *len, struct tern_err *err);

/* --- END (0x0305): the source sent everything --- */

struct mig_end {
    uint32_t rounds;      /* rounds sent, the paused one included */
    uint64_t pages;       /* pages sent over all streams and rounds */
    uint64_t bytes;       /* bytes of PAGES records over all streams, headers included */
};

void mig_end_encode(struct rec_buf *b, const struct mig_end *m);
int mig_end_decode(const struct rec_header *h, struct rec_reader *r, struct mig_end *out,
                   struct tern_err *err);

/* --- READY (0x0306): the destination received and applied everything --- */

struct mig_ready {
    uint64_t pages; /* pages received and applied over all streams */
};

void mig_ready_encode(struct rec_buf *b, const struct mig_ready *m);
int mig_ready_decode(const struct rec_header *h, struct rec_reader *r, struct mig_ready *out,
                     struct tern_err *err);

/* --- COMMIT (0x0307), RUNNING (0x0308), CANCEL (0x030a): empty --- */

void mig_commit_encode(struct rec_buf *b);
int mig_commit_decode(const struct rec_header *h, struct rec_reader *r, struct tern_err *err);
void mig_running_encode(struct rec_buf *b);
int mig_running_decode(const struct rec_header *h, struct rec_reader *r, struct tern_err *err);
void mig_cancel_encode(struct rec_buf *b);
int mig_cancel_decode(const struct rec_header *h, struct rec_reader *r, struct tern_err *err);

/* --- ERROR (0x0309): either direction, then the sender closes --- */

struct mig_error {
    uint32_t code;                     /* enum mig_error_code */
    char msg[MIG_ERROR_MAX_MSG + 1];   /* NUL-terminated */
};

/* Longer messages are cut to MIG_ERROR_MAX_MSG bytes. */
void mig_error_encode(struct rec_buf *b, uint32_t code, const char *msg);
/* Control characters in the message are replaced by '?', so it can be
 * logged and shown as it is. */
int mig_error_decode(const struct rec_header *h, struct rec_reader *r, struct mig_error *out,
                     struct tern_err *err);

/* --- any record --- */

/* "HELLO", "PAGES", ... or NULL for a type outside the stream. */
const char *mig_record_name(uint32_t type);
/* For streaming readers, right after rec_parse_header and before reading
 * the payload: the type is a migration record, version 1, flags 0 (HELLO:
 * no flag but MIG_HELLO_COMMIT_GATE), and
 * the length is within that type's maximum (so the payload buffer can be
 * sized from it). */
int mig_check_header(const struct rec_header *h, struct tern_err *err);

#endif
