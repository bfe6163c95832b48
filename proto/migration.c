/* Migration stream records; the layouts are in docs/migration-stream.md. */
#include "migration.h"
#include "crc32.h"
#include "le.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#define HELLO_MAX 65536u /* generous: a newer peer's HELLO still decodes to "version" */
#define ROUND_END_LEN 14u
#define END_LEN 20u
#define READY_LEN 8u
#define ERROR_MAX (4u + 2u + 65535u)
#define SLOT_ROOM MIG_PAGES_SLOT_ROOM

const char *mig_record_name(uint32_t type)
{
    switch (type) {
    case REC_TYPE_MIG_HELLO:
        return "HELLO";
    case REC_TYPE_MIG_PAGES:
        return "PAGES";
    case REC_TYPE_MIG_ROUND_END:
        return "ROUND_END";
    case REC_TYPE_MIG_STATE:
        return "STATE";
    case REC_TYPE_MIG_END:
        return "END";
    case REC_TYPE_MIG_READY:
        return "READY";
    case REC_TYPE_MIG_COMMIT:
        return "COMMIT";
    case REC_TYPE_MIG_RUNNING:
        return "RUNNING";
    case REC_TYPE_MIG_ERROR:
        return "ERROR";
    case REC_TYPE_MIG_CANCEL:
        return "CANCEL";
    }
    return NULL;
}

static uint32_t max_payload(uint32_t type)
{
    switch (type) {
    case REC_TYPE_MIG_HELLO:
        return HELLO_MAX;
    case REC_TYPE_MIG_PAGES:
        return MIG_PAGES_MAX_PAYLOAD;
    case REC_TYPE_MIG_ROUND_END:
        return ROUND_END_LEN;
    case REC_TYPE_MIG_STATE:
        return REC_MAX_PAYLOAD;
    case REC_TYPE_MIG_END:
        return END_LEN;
    case REC_TYPE_MIG_READY:
        return READY_LEN;
    case REC_TYPE_MIG_ERROR:
        return ERROR_MAX;
    default:
        return 0;
    }
}

int mig_check_header(const struct rec_header *h, struct tern_err *err)
{
    const char *name = mig_record_name(h->type);
    if (!name)
        return tern_err_set(err, "record type 0x%x is not part of the migration stream", h->type);
    uint16_t known = h->type == REC_TYPE_MIG_HELLO ? MIG_HELLO_COMMIT_GATE : 0;
    if (h->version != 1 || (h->flags & ~known) != 0)
        return tern_err_set(err, "migration %s record version %u flags 0x%x (expected 1, 0x%x "
                                 "at most)",
                            name, h->version, h->flags, known);
    if (h->length > max_payload(h->type))
        return tern_err_set(err, "migration %s record of %u bytes (at most %u)", name, h->length,
                            max_payload(h->type));
    return 0;
}

/* The common checks of every decoder: the record is the one expected. */
static int expect(const struct rec_header *h, uint32_t type, struct tern_err *err)
{
    if (h->type != type)
        return tern_err_set(err, "expected a migration %s record, got type 0x%x",
                            mig_record_name(type), h->type);
    return mig_check_header(h, err);
}

static int finish(const struct rec_reader *r, uint32_t type, struct tern_err *err)
{
    char what[48];
    snprintf(what, sizeof(what), "migration %s record", mig_record_name(type));
    return rec_finish(r, what, err);
}

/* ---- config digest ---- */

int mig_config_digest(uint64_t mem_bytes, uint32_t vcpus, uint32_t tsc_khz, unsigned nr_disks,
                      const bool *disk_read_only, uint8_t out[MIG_DIGEST_SIZE],
                      struct tern_err *err)
{
    static const char domain[] = "tern-vm-config/1";
    uint8_t buf[16 + 8 + 4 + 4 + 4 + MIG_MAX_DISKS];
    if (nr_disks > MIG_MAX_DISKS)
        return tern_err_set(err, "%u disks (at most %u in a migration)", nr_disks, MIG_MAX_DISKS);
    size_t n = 0;
    memcpy(buf, domain, 16);
    n += 16;
    le64_put(buf + n, mem_bytes);
    n += 8;
    le32_put(buf + n, vcpus);
    n += 4;
    le32_put(buf + n, tsc_khz);
    n += 4;
    le32_put(buf + n, nr_disks);
    n += 4;
    for (unsigned i = 0; i < nr_disks; i++)
        buf[n++] = disk_read_only[i] ? 1 : 0;
    unsigned int len = 0;
    if (EVP_Digest(buf, n, out, &len, EVP_sha256(), NULL) != 1 || len != MIG_DIGEST_SIZE)
        return tern_err_set(err, "SHA-256 of the VM configuration failed (OpenSSL)");
    return 0;
}

/* ---- HELLO ---- */

uint64_t mig_hello_nr_pages(const struct mig_hello *m)
{
    return m->page_size ? m->ram_bytes / m->page_size : 0;
}

void mig_hello_encode(struct rec_buf *b, const struct mig_hello *m)
{
    rec_begin(b, REC_TYPE_MIG_HELLO, 1, m->commit_gate ? MIG_HELLO_COMMIT_GATE : 0);
    rec_put_bytes(b, MIG_MAGIC, 8);
    rec_put_u32(b, m->protocol);
    rec_put_u64(b, m->session);
    rec_put_bytes(b, m->config_digest, MIG_DIGEST_SIZE);
    rec_put_u64(b, m->ram_bytes);
    rec_put_u32(b, m->page_size);
    rec_put_u16(b, m->stream);
    rec_put_u16(b, m->nr_streams);
    rec_put_u32(b, m->nr_regions);
    for (uint32_t i = 0; i < m->nr_regions && i < MIG_MAX_REGIONS; i++) {
        rec_put_u64(b, m->regions[i].gpa);
        rec_put_u64(b, m->regions[i].size);
        rec_put_u64(b, m->regions[i].offset);
    }
    if (m->nr_regions > MIG_MAX_REGIONS)
        b->failed = true;
    rec_end(b);
}

/* Layout consistency, shared by decode (the peer's) and check. */
static int check_layout(const struct mig_hello *m, struct tern_err *err)
{
    if (m->page_size != MIG_PAGE_SIZE)
        return tern_err_set(err, "page size %u (this side uses %u)", m->page_size,
                            MIG_PAGE_SIZE);
    if (m->ram_bytes == 0 || m->ram_bytes % MIG_PAGE_SIZE)
        return tern_err_set(err, "RAM of %llu bytes is not a positive number of pages",
                            (unsigned long long)m->ram_bytes);
    if (m->nr_regions == 0 || m->nr_regions > MIG_MAX_REGIONS)
        return tern_err_set(err, "%u RAM regions (1..%u)", m->nr_regions, MIG_MAX_REGIONS);
    uint64_t offset = 0;
    for (uint32_t i = 0; i < m->nr_regions; i++) {
        const struct mig_region *g = &m->regions[i];
        if (g->size == 0 || g->size % MIG_PAGE_SIZE || g->gpa % MIG_PAGE_SIZE)
            return tern_err_set(err, "RAM region %u (gpa 0x%llx, %llu bytes) is not whole pages",
                                i, (unsigned long long)g->gpa, (unsigned long long)g->size);
        if (g->gpa + g->size < g->gpa)
            return tern_err_set(err, "RAM region %u wraps around the address space", i);
        if (g->offset != offset)
            return tern_err_set(err, "RAM region %u at offset %llu, expected %llu (contiguous)",
                                i, (unsigned long long)g->offset, (unsigned long long)offset);
        if (i > 0 && g->gpa < m->regions[i - 1].gpa + m->regions[i - 1].size)
            return tern_err_set(err, "RAM region %u overlaps or precedes region %u", i, i - 1);
        if (g->size > m->ram_bytes - offset)
            return tern_err_set(err, "RAM regions add up to more than %llu bytes",
                                (unsigned long long)m->ram_bytes);
        offset += g->size;
    }
    if (offset != m->ram_bytes)
        return tern_err_set(err, "RAM regions add up to %llu bytes, RAM is %llu",
                            (unsigned long long)offset, (unsigned long long)m->ram_bytes);
    return 0;
}

int mig_hello_decode(const struct rec_header *h, struct rec_reader *r, struct mig_hello *out,
                     struct tern_err *err)
{
    memset(out, 0, sizeof(*out));
    if (expect(h, REC_TYPE_MIG_HELLO, err) < 0)
        return -1;
    out->commit_gate = (h->flags & MIG_HELLO_COMMIT_GATE) != 0;
    uint8_t magic[8];
    rec_get_bytes(r, magic, 8);
    if (r->failed || memcmp(magic, MIG_MAGIC, 8) != 0)
        return tern_err_set(err, "the peer does not speak the Tern migration protocol (bad HELLO magic)");
    rec_get_u32(r, &out->protocol);
    if (r->failed)
        return finish(r, REC_TYPE_MIG_HELLO, err);
    if (out->protocol != MIG_PROTOCOL_VERSION)
        return tern_err_set(err, "the peer speaks migration protocol %u, this side %u",
                            out->protocol, MIG_PROTOCOL_VERSION);
    rec_get_u64(r, &out->session);
    rec_get_bytes(r, out->config_digest, MIG_DIGEST_SIZE);
    rec_get_u64(r, &out->ram_bytes);
    rec_get_u32(r, &out->page_size);
    rec_get_u16(r, &out->stream);
    rec_get_u16(r, &out->nr_streams);
    rec_get_u32(r, &out->nr_regions);
    if (out->nr_regions > MIG_MAX_REGIONS)
        return tern_err_set(err, "migration HELLO with %u RAM regions (at most %u)",
                            out->nr_regions, MIG_MAX_REGIONS);
    for (uint32_t i = 0; i < out->nr_regions; i++) {
        rec_get_u64(r, &out->regions[i].gpa);
        rec_get_u64(r, &out->regions[i].size);
        rec_get_u64(r, &out->regions[i].offset);
    }
    if (finish(r, REC_TYPE_MIG_HELLO, err) < 0)
        return -1;
    if (out->nr_streams == 0 || out->nr_streams > MIG_MAX_STREAMS ||
        out->stream >= out->nr_streams)
        return tern_err_set(err, "migration HELLO for stream %u of %u (1..%u streams)",
                            out->stream, out->nr_streams, MIG_MAX_STREAMS);
    if (check_layout(out, err) < 0)
        return tern_err_prefix(err, "migration HELLO");
    return 0;
}

static int refuse(uint32_t *code, uint32_t value)
{
    *code = value;
    return -1;
}

int mig_hello_check(const struct mig_hello *local, const struct mig_hello *peer, uint32_t *code,
                    struct tern_err *err)
{
    *code = MIG_ERR_OTHER;
    if (peer->protocol != local->protocol) {
        tern_err_set(err, "migration protocol %u, this side speaks %u", peer->protocol,
                     local->protocol);
        return refuse(code, MIG_ERR_VERSION);
    }
    if (memcmp(peer->config_digest, local->config_digest, MIG_DIGEST_SIZE) != 0) {
        tern_err_set(err, "VM configuration differs (memory size, vCPUs, TSC frequency or disks)");
        return refuse(code, MIG_ERR_CONFIG);
    }
    if (check_layout(peer, err) < 0)
        return refuse(code, MIG_ERR_LAYOUT);
    bool same = peer->ram_bytes == local->ram_bytes && peer->page_size == local->page_size &&
                peer->nr_regions == local->nr_regions;
    for (uint32_t i = 0; same && i < peer->nr_regions; i++)
        same = peer->regions[i].gpa == local->regions[i].gpa &&
               peer->regions[i].size == local->regions[i].size &&
               peer->regions[i].offset == local->regions[i].offset;
    if (!same) {
        tern_err_set(err, "RAM layout differs: %llu bytes in %u regions, this side %llu in %u",
                     (unsigned long long)peer->ram_bytes, peer->nr_regions,
                     (unsigned long long)local->ram_bytes, local->nr_regions);
        return refuse(code, MIG_ERR_LAYOUT);
    }
    if (peer->commit_gate != local->commit_gate) {
        tern_err_set(err, "--commit-gate differs: the peer %s it, this side %s (both sides must "
                          "agree on who decides the handover)",
                     peer->commit_gate ? "uses" : "does not use",
                     local->commit_gate ? "does" : "does not");
        return refuse(code, MIG_ERR_CONFIG);
    }
    if (local->nr_streams != 0) {
        if (peer->session != local->session) {
            tern_err_set(err, "stream %u belongs to another migration attempt (session %016llx, "
                              "expected %016llx)",
                         peer->stream, (unsigned long long)peer->session,
                         (unsigned long long)local->session);
            return refuse(code, MIG_ERR_STREAMS);
        }
        if (peer->nr_streams != local->nr_streams || peer->stream >= peer->nr_streams) {
            tern_err_set(err, "stream %u of %u, the first stream said %u streams", peer->stream,
                         peer->nr_streams, local->nr_streams);
            return refuse(code, MIG_ERR_STREAMS);
        }
    }
    return 0;
}

/* ---- PAGES ---- */

bool mig_page_len_ok(uint8_t enc, uint32_t len)
{
    switch (enc) {
    case MIG_PAGE_ZERO:
        return len == 0;
    case MIG_PAGE_RAW:
        return len == MIG_PAGE_SIZE;
    case MIG_PAGE_LZ4:
        return len >= 1 && len < MIG_PAGE_SIZE;
    case MIG_PAGE_XOR:
        return len < MIG_PAGE_SIZE;
    }
    return false;
}

int mig_pages_writer_init(struct mig_pages_writer *w, uint32_t max_pages, size_t max_payload,
                          struct tern_err *err)
{
    memset(w, 0, sizeof(*w));
    if (max_pages == 0 || max_pages > MIG_PAGES_MAX_COUNT)
        return tern_err_set(err, "PAGES batches of %u pages (1..%u)", max_pages,
                            MIG_PAGES_MAX_COUNT);
    if (max_payload > MIG_PAGES_MAX_PAYLOAD)
        max_payload = MIG_PAGES_MAX_PAYLOAD;
    /* Every page RAW, plus room for a slot's full PAGE_ENC_MAX_OUT. */
    w->cap = REC_HEADER_SIZE + 4 + (size_t)max_pages * (MIG_PAGE_ENTRY_HEAD + MIG_PAGE_SIZE) +
             (SLOT_ROOM - MIG_PAGE_SIZE);
    w->buf = malloc(w->cap);
    if (!w->buf)
        return tern_err_set(err, "out of memory for a %zu-byte PAGES batch", w->cap);
    w->max_pages = max_pages;
    w->max_payload = max_payload;
    mig_pages_reset(w);
    return 0;
}

void mig_pages_writer_free(struct mig_pages_writer *w)
{
    free(w->buf);
    memset(w, 0, sizeof(*w));
}

void mig_pages_reset(struct mig_pages_writer *w)
{
    w->len = REC_HEADER_SIZE + 4;
    w->count = 0;
    w->sealed = false;
}

bool mig_pages_full(const struct mig_pages_writer *w)
{
    return w->sealed || w->count >= w->max_pages ||
           w->len - REC_HEADER_SIZE >= w->max_payload ||
           w->cap - w->len < MIG_PAGE_ENTRY_HEAD + SLOT_ROOM;
}

uint8_t *mig_pages_slot(struct mig_pages_writer *w)
{
    if (!w->buf || mig_pages_full(w))
        return NULL;
    return w->buf + w->len + MIG_PAGE_ENTRY_HEAD;
}

int mig_pages_commit(struct mig_pages_writer *w, uint64_t index, uint8_t enc, uint32_t len,
                     struct tern_err *err)
{
    if (!w->buf || mig_pages_full(w))
        return tern_err_set(err, "page added to a full or sealed PAGES batch");
    if (!mig_page_len_ok(enc, len))
        return tern_err_set(err, "page %llu: encoding %u with %u bytes is not valid",
                            (unsigned long long)index, enc, len);
    uint8_t *e = w->buf + w->len;
    le64_put(e, index);
    e[8] = enc;
    le32_put(e + 9, len);
    w->len += MIG_PAGE_ENTRY_HEAD + len;
    w->count++;
    return 0;
}

int mig_pages_add(struct mig_pages_writer *w, uint64_t index, uint8_t enc, const void *payload,
                  uint32_t len, struct tern_err *err)
{
    uint8_t *slot = mig_pages_slot(w);
    if (!slot)
        return tern_err_set(err, "page added to a full or sealed PAGES batch");
    if (len > SLOT_ROOM)
        return tern_err_set(err, "page payload of %u bytes", len);
    if (len)
        memcpy(slot, payload, len);
    return mig_pages_commit(w, index, enc, len, err);
}

int mig_pages_seal(struct mig_pages_writer *w, const uint8_t **data, size_t *len,
                   struct tern_err *err)
{
    *data = NULL;
    *len = 0;
    if (!w->buf)
        return tern_err_set(err, "PAGES batch not initialised");
    le32_put(w->buf + REC_HEADER_SIZE, w->count);
    /* The header by hand (record.h's layout) so the CRC of the ~1 MiB
     * payload uses the fast one: this is the stream's hot path. */
    size_t payload = w->len - REC_HEADER_SIZE;
    if (payload > REC_MAX_PAYLOAD)
        return tern_err_set(err, "PAGES payload of %zu bytes", payload);
    le32_put(w->buf, REC_TYPE_MIG_PAGES);
    le16_put(w->buf + 4, 1);
    le16_put(w->buf + 6, 0);
    le32_put(w->buf + 8, (uint32_t)payload);
    uint32_t crc = tern_crc32(tern_crc32(0, w->buf, 12), w->buf + REC_HEADER_SIZE, payload);
    le32_put(w->buf + 12, crc);
    w->sealed = true;
    *data = w->buf;
    *len = w->len;
    return 0;
}

int mig_pages_iter_init(struct mig_pages_iter *it, const struct rec_header *h,
                        struct rec_reader *r, uint64_t nr_pages, struct tern_err *err)
{
    memset(it, 0, sizeof(*it));
    if (expect(h, REC_TYPE_MIG_PAGES, err) < 0)
        return -1;
    const uint8_t *p;
    size_t len = rec_remaining(r);
    if (len < 4 || r->failed)
        return tern_err_set(err, "migration PAGES record of %zu bytes has no page count", len);
    rec_get_view(r, &p, len); /* the iterator owns the payload from here */
    uint32_t count = le32_get(p);
    if (count > MIG_PAGES_MAX_COUNT)
        return tern_err_set(err, "migration PAGES record with %u pages (at most %u)", count,
                            MIG_PAGES_MAX_COUNT);
    size_t off = 4;
    for (uint32_t i = 0; i < count; i++) {
        if (len - off < MIG_PAGE_ENTRY_HEAD)
            return tern_err_set(err,
                                "migration PAGES record ends after %u of its %u pages (byte %zu)",
                                i, count, off);
        uint64_t index = le64_get(p + off);
        uint8_t enc = p[off + 8];
        uint32_t n = le32_get(p + off + 9);
        if (index >= nr_pages)
            return tern_err_set(err,
                                "migration PAGES record: page %u has index %llu, RAM has %llu pages",
                                i, (unsigned long long)index, (unsigned long long)nr_pages);
        if (enc >= MIG_PAGE_ENCODINGS)
            return tern_err_set(err, "migration PAGES record: page %u (index %llu) has unknown "
                                     "encoding %u",
                                i, (unsigned long long)index, enc);
        if (!mig_page_len_ok(enc, n))
            return tern_err_set(err, "migration PAGES record: page %u (index %llu) encoding %u "
                                     "with a payload of %u bytes",
                                i, (unsigned long long)index, enc, n);
        off += MIG_PAGE_ENTRY_HEAD;
        if (n > len - off)
            return tern_err_set(err, "migration PAGES record: page %u (index %llu) payload of "
                                     "%u bytes, %zu left",
                                i, (unsigned long long)index, n, len - off);
        off += n;
    }
    if (off != len)
        return tern_err_set(err, "migration PAGES record has %zu bytes after its %u pages",
                            len - off, count);
    it->p = p;
    it->len = len;
    it->off = 4;
    it->count = count;
    return 0;
}

bool mig_pages_iter_next(struct mig_pages_iter *it, struct mig_page *pg)
{
    /* Validated in init; the checks here only guard against misuse. */
    if (it->next >= it->count || it->len - it->off < MIG_PAGE_ENTRY_HEAD)
        return false;
    const uint8_t *e = it->p + it->off;
    uint32_t n = le32_get(e + 9);
    if (n > it->len - it->off - MIG_PAGE_ENTRY_HEAD)
        return false;
    pg->index = le64_get(e);
    pg->enc = e[8];
    pg->len = n;
    pg->data = e + MIG_PAGE_ENTRY_HEAD;
    it->off += MIG_PAGE_ENTRY_HEAD + n;
    it->next++;
    return true;
}

/* ---- ROUND_END ---- */

void mig_round_end_encode(struct rec_buf *b, const struct mig_round_end *m)
{
    rec_begin(b, REC_TYPE_MIG_ROUND_END, 1, 0);
    rec_put_u32(b, m->round);
    rec_put_u16(b, m->stream);
    rec_put_u64(b, m->pages);
    rec_end(b);
}

int mig_round_end_decode(const struct rec_header *h, struct rec_reader *r,
                         struct mig_round_end *out, struct tern_err *err)
{
    memset(out, 0, sizeof(*out));
    if (expect(h, REC_TYPE_MIG_ROUND_END, err) < 0)
        return -1;
    rec_get_u32(r, &out->round);
    rec_get_u16(r, &out->stream);
    rec_get_u64(r, &out->pages);
    if (finish(r, REC_TYPE_MIG_ROUND_END, err) < 0)
        return -1;
    if (out->stream >= MIG_MAX_STREAMS)
        return tern_err_set(err, "migration ROUND_END for stream %u (at most %u streams)",
                            out->stream, MIG_MAX_STREAMS);
    return 0;
}

/* ---- STATE ---- */

void mig_state_encode(struct rec_buf *b, const void *state, size_t len)
{
    if (len == 0)
        b->failed = true;
    rec_begin(b, REC_TYPE_MIG_STATE, 1, 0);
    rec_put_bytes(b, state, len);
    rec_end(b);
}

int mig_state_header(uint8_t out[REC_HEADER_SIZE], const void *state, size_t len,
                     struct tern_err *err)
{
    if (len == 0)
        return tern_err_set(err, "empty VM state");
    struct iovec iov = {.iov_base = (void *)state, .iov_len = len};
    return rec_header_for_iov(out, REC_TYPE_MIG_STATE, 1, 0, &iov, 1, err);
}

int mig_state_decode(const struct rec_header *h, struct rec_reader *r, const uint8_t **state,
                     size_t *len, struct tern_err *err)
{
    *state = NULL;
    *len = 0;
    if (expect(h, REC_TYPE_MIG_STATE, err) < 0)
        return -1;
    size_t n = rec_remaining(r);
    if (n == 0)
        return tern_err_set(err, "migration STATE record is empty");
    if (rec_get_view(r, state, n) < 0)
        return finish(r, REC_TYPE_MIG_STATE, err);
    *len = n;
    return finish(r, REC_TYPE_MIG_STATE, err);
}

/* ---- END, READY ---- */

void mig_end_encode(struct rec_buf *b, const struct mig_end *m)
{
    rec_begin(b, REC_TYPE_MIG_END, 1, 0);
    rec_put_u32(b, m->rounds);
    rec_put_u64(b, m->pages);
    rec_put_u64(b, m->bytes);
    rec_end(b);
}

int mig_end_decode(const struct rec_header *h, struct rec_reader *r, struct mig_end *out,
                   struct tern_err *err)
{
    memset(out, 0, sizeof(*out));
    if (expect(h, REC_TYPE_MIG_END, err) < 0)
        return -1;
    rec_get_u32(r, &out->rounds);
    rec_get_u64(r, &out->pages);
    rec_get_u64(r, &out->bytes);
    if (finish(r, REC_TYPE_MIG_END, err) < 0)
        return -1;
    if (out->rounds == 0)
        return tern_err_set(err, "migration END after 0 rounds");
    return 0;
}

void mig_ready_encode(struct rec_buf *b, const struct mig_ready *m)
{
    rec_begin(b, REC_TYPE_MIG_READY, 1, 0);
    rec_put_u64(b, m->pages);
    rec_end(b);
}

int mig_ready_decode(const struct rec_header *h, struct rec_reader *r, struct mig_ready *out,
                     struct tern_err *err)
{
    memset(out, 0, sizeof(*out));
    if (expect(h, REC_TYPE_MIG_READY, err) < 0)
        return -1;
    rec_get_u64(r, &out->pages);
    return finish(r, REC_TYPE_MIG_READY, err);
}

/* ---- COMMIT, RUNNING, CANCEL ---- */

static void empty_encode(struct rec_buf *b, uint32_t type)
{
    rec_begin(b, type, 1, 0);
    rec_end(b);
}

static int empty_decode(const struct rec_header *h, struct rec_reader *r, uint32_t type,
                        struct tern_err *err)
{
    if (expect(h, type, err) < 0)
        return -1;
    return finish(r, type, err);
}

void mig_commit_encode(struct rec_buf *b)
{
    empty_encode(b, REC_TYPE_MIG_COMMIT);
}

int mig_commit_decode(const struct rec_header *h, struct rec_reader *r, struct tern_err *err)
{
    return empty_decode(h, r, REC_TYPE_MIG_COMMIT, err);
}

void mig_running_encode(struct rec_buf *b)
{
    empty_encode(b, REC_TYPE_MIG_RUNNING);
}

int mig_running_decode(const struct rec_header *h, struct rec_reader *r, struct tern_err *err)
{
    return empty_decode(h, r, REC_TYPE_MIG_RUNNING, err);
}

void mig_cancel_encode(struct rec_buf *b)
{
    empty_encode(b, REC_TYPE_MIG_CANCEL);
}

int mig_cancel_decode(const struct rec_header *h, struct rec_reader *r, struct tern_err *err)
{
    return empty_decode(h, r, REC_TYPE_MIG_CANCEL, err);
}

/* ---- ERROR ---- */

void mig_error_encode(struct rec_buf *b, uint32_t code, const char *msg)
{
    size_t n = strnlen(msg ? msg : "", MIG_ERROR_MAX_MSG);
    rec_begin(b, REC_TYPE_MIG_ERROR, 1, 0);
    rec_put_u32(b, code);
    rec_put_u16(b, (uint16_t)n);
    rec_put_bytes(b, msg, n);
    rec_end(b);
}

int mig_error_decode(const struct rec_header *h, struct rec_reader *r, struct mig_error *out,
                     struct tern_err *err)
{
    memset(out, 0, sizeof(*out));
    if (expect(h, REC_TYPE_MIG_ERROR, err) < 0)
        return -1;
    uint16_t n = 0;
    const uint8_t *msg = NULL;
    rec_get_u32(r, &out->code);
    rec_get_u16(r, &n);
    rec_get_view(r, &msg, n);
    if (finish(r, REC_TYPE_MIG_ERROR, err) < 0)
        return -1;
    /* A peer's longer message is cut rather than refused: the error it
     * reports matters more than its length. */
    size_t keep = n < MIG_ERROR_MAX_MSG ? n : MIG_ERROR_MAX_MSG;
    for (size_t i = 0; i < keep; i++)
        out->msg[i] = (msg[i] < 0x20 || msg[i] == 0x7f) ? '?' : (char)msg[i];
    out->msg[keep] = '\0';
    return 0;
}
