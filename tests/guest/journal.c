/* Journal record format and recovery scan; see journal.h. */
#include "journal.h"

#include "hash.h"
#include "tern_guest.h"

/* The fill pages' hash (hash.h) over magic, sequence and payload: any
 * change of one word, of magic or of seq changes it. */
uint64_t tg_jrec_checksum(const struct tg_jrec *r)
{
    return tg_hash_words(r->magic, r->seq, r->payload, TG_JPAYLOAD_WORDS);
}

void tg_jrec_encode(struct tg_jrec *r, uint64_t seq)
{
    /* xorshift64* seeded from seq alone: a reader needs nothing else. */
    uint64_t x = tg_mix64(seq * TG_HASH_MUL1 + TG_HASH_MUL2);

    if (!x)
        x = TG_HASH_MUL1;
    r->magic = TG_JREC_MAGIC;
    r->seq = seq;
    for (unsigned i = 0; i < TG_JPAYLOAD_WORDS; i++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r->payload[i] = x * 0x2545f4914f6cdd1dull;
    }
    r->csum = tg_jrec_checksum(r);
}

enum tg_jrec_status tg_jrec_check(const struct tg_jrec *r, uint64_t block)
{
    if (r->magic != TG_JREC_MAGIC)
        return TG_JREC_END;
    if (r->csum != tg_jrec_checksum(r))
        return TG_JREC_CORRUPT;
    if (r->seq != block + 1)
        return TG_JREC_SEQUENCE;
    return TG_JREC_OK;
}

const char *tg_jrec_reason(enum tg_jrec_status st)
{
    switch (st) {
    case TG_JREC_OK:
        return "ok";
    case TG_JREC_END:
        return "end";
    case TG_JREC_CORRUPT:
        return TG_JREASON_CHECKSUM;
    case TG_JREC_SEQUENCE:
        return TG_JREASON_SEQUENCE;
    }
    return "unknown";
}

void tg_jscan_init(struct tg_jscan *s, uint64_t capacity_blocks)
{
    s->capacity = capacity_blocks;
    s->next = 0;
    s->records = 0;
    s->end_found = 0;
    s->result = capacity_blocks ? TG_JSCAN_MORE : TG_JSCAN_DONE;
    s->bad_block = 0;
    s->reason = 0;
}

uint64_t tg_jscan_want(const struct tg_jscan *s, uint64_t max)
{
    if (s->result != TG_JSCAN_MORE)
        return 0;
    if (s->end_found) /* just the look-ahead block */
        return max ? 1 : 0;
    uint64_t left = s->capacity - s->next;
    return left < max ? left : max;
}

static enum tg_jscan_result bad(struct tg_jscan *s, uint64_t block, const char *reason)
{
    s->bad_block = block;
    s->reason = reason;
    return s->result = TG_JSCAN_BAD;
}

enum tg_jscan_result tg_jscan_feed(struct tg_jscan *s, const void *block)
{
    const struct tg_jrec *r = block;

    if (s->result != TG_JSCAN_MORE)
        return s->result;
    if (s->end_found) {
        /* The block after the end. It can only hold a record if the end
         * block was damaged: a record is written only once the one before
         * it is durable. */
        if (r->magic == TG_JREC_MAGIC)
            return bad(s, s->records, TG_JREASON_GAP);
        return s->result = TG_JSCAN_DONE;
    }
    enum tg_jrec_status st = tg_jrec_check(r, s->next);
    switch (st) {
    case TG_JREC_OK:
        s->records++;
        s->next++;
        break;
    case TG_JREC_END:
        s->end_found = 1;
        s->next++;
        break;
    default:
        return bad(s, s->next, tg_jrec_reason(st));
    }
    if (s->next >= s->capacity)
        s->result = TG_JSCAN_DONE;
    return s->result;
}
