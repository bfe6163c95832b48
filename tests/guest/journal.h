/* The durable journal's on-disk format and its recovery scan: one record
 * per 4 KiB block (8 sectors) from sector 0, record N (1, 2, 3, ...) in
 * block N - 1. A record is durable once the FLUSH after its write has
 * completed; records are written strictly one after another (write, flush,
 * next write), so a block can only hold a record if every block before it
 * does.
 *
 * Plain C with no kernel dependencies, and no I/O: the guest's disk task
 * (disk.c) reads blocks and feeds them to the scan; the host-side unit test
 * (tests/unit/test_guest_journal.c) includes journal.c directly and feeds
 * it an in-memory disk. */
#ifndef TG_JOURNAL_H
#define TG_JOURNAL_H

#include <stdint.h>

#define TG_JBLOCK_SIZE 4096
#define TG_JBLOCK_SECTORS 8           /* 512-byte sectors per block */
#define TG_JPAYLOAD_WORDS 509         /* (4096 - 3 * 8) / 8 */
#define TG_JREC_MAGIC 0x314e52554f4a4754ull /* "TGJOURN1" on disk */

struct tg_jrec {
    uint64_t magic; /* TG_JREC_MAGIC */
    uint64_t seq;   /* 1, 2, 3, ...; record seq lives in block seq - 1 */
    uint64_t csum;  /* tg_jrec_checksum(): magic, seq and payload */
    uint64_t payload[TG_JPAYLOAD_WORDS]; /* pseudo-random, from seq alone */
};

_Static_assert(sizeof(struct tg_jrec) == TG_JBLOCK_SIZE, "a record is one block");

enum tg_jrec_status {
    TG_JREC_OK = 0,
    TG_JREC_END,      /* no record here (wrong magic: zeros, garbage) */
    TG_JREC_CORRUPT,  /* record magic, but the checksum does not match */
    TG_JREC_SEQUENCE, /* intact record, but seq != block + 1 */
};

/* Blocks a disk of `sectors` 512-byte sectors holds (a partial last block
 * is not used). */
static inline uint64_t tg_journal_blocks(uint64_t sectors)
{
    return sectors / TG_JBLOCK_SECTORS;
}

/* 64-bit hash over magic, seq and payload (not csum). */
uint64_t tg_jrec_checksum(const struct tg_jrec *r);

/* Writes record `seq` (>= 1): magic, seq, payload, checksum. */
void tg_jrec_encode(struct tg_jrec *r, uint64_t seq);

/* Classifies the contents of block `block`: end (wrong magic), then
 * corrupt (checksum), then sequence, in that order. */
enum tg_jrec_status tg_jrec_check(const struct tg_jrec *r, uint64_t block);

/* The recovery scan, block by block from block 0. The first block without
 * the record magic ends the journal; every block before it must be an
 * intact record with seq = block + 1. The block after the end is read
 * too: if it carries the record magic, the end is a hole in the journal
 * (a damaged block, not the end), which is an error. */
enum tg_jscan_result {
    TG_JSCAN_MORE = 0, /* feed more blocks, from block `next` */
    TG_JSCAN_DONE,     /* `records` valid records in blocks [0, records) */
    TG_JSCAN_BAD,      /* bad_block / reason say what is wrong */
};

struct tg_jscan {
    uint64_t capacity; /* blocks on the disk */
    uint64_t next;     /* the block tg_jscan_feed() expects next */
    uint64_t records;  /* valid records so far */
    int end_found;     /* block `records` has no record; next is the one after */
    enum tg_jscan_result result;
    uint64_t bad_block;
    const char *reason; /* a TG_JREASON_* word (tern_guest.h) when BAD */
};

void tg_jscan_init(struct tg_jscan *s, uint64_t capacity_blocks);

/* How many blocks, from block s->next on, the scan can use now: at most
 * `max`, and 0 once the result is DONE or BAD. */
uint64_t tg_jscan_want(const struct tg_jscan *s, uint64_t max);

/* Examines the contents of block s->next and returns the new result. */
enum tg_jscan_result tg_jscan_feed(struct tg_jscan *s, const void *block);

/* The reason word (tern_guest.h TG_JREASON_*) for a record status. */
const char *tg_jrec_reason(enum tg_jrec_status st);

#endif
