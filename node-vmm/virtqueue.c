#include "virtqueue.h"

#include <endian.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* A descriptor as copied out of guest memory, host byte order. */
struct desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

static void desc_copy(const uint8_t *table, uint32_t i, struct desc *d)
{
    uint8_t raw[VIRTQ_DESC_SIZE];
    memcpy(raw, table + (uint64_t)i * VIRTQ_DESC_SIZE, sizeof(raw));
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
    memcpy(&addr, raw, 8);
    memcpy(&len, raw + 8, 4);
    memcpy(&flags, raw + 12, 2);
    memcpy(&next, raw + 14, 2);
    d->addr = le64toh(addr);
    d->len = le32toh(len);
    d->flags = le16toh(flags);
    d->next = le16toh(next);
}

static int vq_break(struct virtq *vq, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int vq_break(struct virtq *vq, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(vq->error, sizeof(vq->error), fmt, ap);
    va_end(ap);
    vq->broken = true;
    return VIRTQ_BROKEN;
}

void virtq_reset(struct virtq *vq)
{
    const struct guest_memory *gm = vq->gm;
    struct vmm_dirty *dirty = vq->dirty;
    memset(vq, 0, sizeof(*vq));
    vq->gm = gm;
    vq->dirty = dirty;
}

static int check_ring(const struct guest_memory *gm, const char *what, uint64_t gpa,
                      uint64_t len, uint64_t align, uint8_t **host, struct tern_err *err)
{
    if (gpa & (align - 1))
        return tern_err_set(err, "%s address 0x%llx is not %llu-byte aligned", what,
                            (unsigned long long)gpa, (unsigned long long)align);
    *host = guest_memory_ptr(gm, gpa, len);
    if (!*host)
        return tern_err_set(err, "%s 0x%llx+0x%llx is not inside guest RAM", what,
                            (unsigned long long)gpa, (unsigned long long)len);
    return 0;
}

int virtq_configure(struct virtq *vq, const struct guest_memory *gm, struct vmm_dirty *dirty,
                    uint32_t max_num, struct tern_err *err)
{
    uint32_t num = vq->num;
    if (num == 0 || num > max_num || num > VIRTQ_MAX_SIZE || (num & (num - 1)))
        return tern_err_set(err, "queue size %u is not a power of two between 1 and %u", num,
                            max_num < VIRTQ_MAX_SIZE ? max_num : VIRTQ_MAX_SIZE);
    uint8_t *desc, *avail, *used;
    if (check_ring(gm, "descriptor table", vq->desc_gpa, VIRTQ_DESC_BYTES(num), 16, &desc,
                   err) < 0 ||
        check_ring(gm, "available ring", vq->avail_gpa, VIRTQ_AVAIL_BYTES(num), 2, &avail,
                   err) < 0 ||
        check_ring(gm, "used ring", vq->used_gpa, VIRTQ_USED_BYTES(num), 4, &used, err) < 0)
        return -1;
    vq->gm = gm;
    vq->dirty = dirty;
    vq->desc = desc;
    vq->avail = avail;
    vq->used = used;
    return 0;
}

uint16_t virtq_avail_idx(const struct virtq *vq)
{
    return le16toh(__atomic_load_n((const uint16_t *)(const void *)(vq->avail + 2),
                                   __ATOMIC_ACQUIRE));
}

int virtq_pop(struct virtq *vq, struct virtq_chain *c)
{
    if (vq->broken)
        return VIRTQ_BROKEN;
    /* Acquire: the ring entry and descriptors the driver wrote before
     * publishing this index are visible once we see the index. */
    uint16_t avail_idx = virtq_avail_idx(vq);
    uint16_t pending = (uint16_t)(avail_idx - vq->last_avail);
    if (pending == 0)
        return VIRTQ_EMPTY;
    if (pending > vq->num)
        return vq_break(vq, "driver moved the available index from %u to %u (queue size %u)",
                        vq->last_avail, avail_idx, vq->num);

    uint16_t raw_head;
    memcpy(&raw_head, vq->avail + 4 + 2u * (vq->last_avail & (vq->num - 1)), 2);
    uint16_t head = le16toh(raw_head);
    if (head >= vq->num)
        return vq_break(vq, "available ring slot %u names descriptor %u (queue size %u)",
                        vq->last_avail & (vq->num - 1), head, vq->num);

    memset(c, 0, offsetof(struct virtq_chain, seg));
    c->head = head;

    const uint8_t *table = vq->desc;
    uint32_t table_n = vq->num;
    bool in_indirect = false;
    unsigned walked = 0; /* descriptors visited in the current table */
    uint32_t i = head;
    bool seen_writable = false;
    uint64_t total = 0;
    for (;;) {
        if (++walked > table_n)
            return vq_break(vq, "descriptor chain from head %u loops (more than %u %s)", head,
                            table_n, in_indirect ? "indirect descriptors" : "descriptors");
        struct desc d;
        desc_copy(table, i, &d);

        if (d.flags & VIRTQ_DESC_F_INDIRECT) {
            if (!vq->indirect)
                return vq_break(vq, "descriptor %u is indirect but indirect descriptors "
                                    "were not negotiated", i);
            if (in_indirect)
                return vq_break(vq, "indirect descriptor %u inside an indirect table", i);
            if (d.flags & VIRTQ_DESC_F_NEXT)
                return vq_break(vq, "indirect descriptor %u also has NEXT set", i);
            if (d.len == 0 || d.len % VIRTQ_DESC_SIZE)
                return vq_break(vq, "indirect table of %u bytes is not a non-zero multiple "
                                    "of 16", d.len);
            if (d.len / VIRTQ_DESC_SIZE > VIRTQ_CHAIN_MAX)
                return vq_break(vq, "indirect table of %u descriptors (at most %u)",
                                d.len / VIRTQ_DESC_SIZE, VIRTQ_CHAIN_MAX);
            const uint8_t *t = guest_memory_ptr(vq->gm, d.addr, d.len);
            if (!t)
                return vq_break(vq, "indirect table 0x%llx+0x%x is not inside guest RAM",
                                (unsigned long long)d.addr, d.len);
            table = t;
            table_n = d.len / VIRTQ_DESC_SIZE;
            in_indirect = true;
            walked = 0;
            i = 0;
            continue;
        }

        bool w = (d.flags & VIRTQ_DESC_F_WRITE) != 0;
        if (w)
            seen_writable = true;
        else if (seen_writable)
            return vq_break(vq, "device-readable descriptor %u after a device-writable one "
                                "(chain from head %u)", i, head);
        if (d.len > 0) {
            if (c->nr == VIRTQ_CHAIN_MAX)
                return vq_break(vq, "descriptor chain from head %u has more than %u buffers",
                                head, VIRTQ_CHAIN_MAX);
            struct virtq_seg *s = &c->seg[c->nr++];
            s->gpa = d.addr;
            s->len = d.len;
            s->write = w;
            s->host = guest_memory_ptr(vq->gm, d.addr, d.len);
            if (!s->host && !c->bad)
                c->bad = "buffer not inside guest RAM";
            if (w)
                c->writable += d.len;
            else
                c->readable += d.len;
            total += d.len;
        }
        if (!(d.flags & VIRTQ_DESC_F_NEXT))
            break;
        if (d.next >= table_n)
            return vq_break(vq, "descriptor %u points to next %u beyond the %s of %u", i,
                            d.next, in_indirect ? "indirect table" : "queue size", table_n);
        i = d.next;
    }
    if (total > UINT32_MAX && !c->bad)
        c->bad = "chain longer than 4 GiB";
    vq->last_avail++;
    return VIRTQ_CHAIN;
}

void virtq_push(struct virtq *vq, uint16_t head, uint32_t len)
{
    uint32_t slot = vq->used_idx & (vq->num - 1);
    uint8_t *elem = vq->used + 4 + 8u * slot;
    uint32_t id_le = htole32(head), len_le = htole32(len);
    memcpy(elem, &id_le, 4);
    memcpy(elem + 4, &len_le, 4);
    vmm_dirty_mark(vq->dirty, vq->used_gpa + 4 + 8u * slot, 8);
    vq->used_idx++;
    /* Release: the element and the buffers' contents before the index. */
    __atomic_store_n((uint16_t *)(void *)(vq->used + 2), htole16(vq->used_idx), __ATOMIC_RELEASE);
    vmm_dirty_mark(vq->dirty, vq->used_gpa + 2, 2);
}

bool virtq_needs_interrupt(const struct virtq *vq)
{
    /* The used index store must be visible before we read the flags, or
     * a driver re-enabling interrupts could miss this one. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint16_t flags =
        le16toh(__atomic_load_n((const uint16_t *)(const void *)vq->avail, __ATOMIC_RELAXED));
    return !(flags & VIRTQ_AVAIL_F_NO_INTERRUPT);
}

size_t virtq_chain_read(const struct virtq_chain *c, uint64_t off, void *dst, size_t n)
{
    size_t done = 0;
    for (unsigned k = 0; k < c->nr && done < n; k++) {
        const struct virtq_seg *s = &c->seg[k];
        if (s->write)
            break;
        if (off >= s->len) {
            off -= s->len;
            continue;
        }
        if (!s->host)
            break;
        size_t take = s->len - off;
        if (take > n - done)
            take = n - done;
        memcpy((uint8_t *)dst + done, s->host + off, take);
        done += take;
        off = 0;
    }
    return done;
}

size_t virtq_chain_write(const struct virtq_chain *c, struct vmm_dirty *dirty, uint64_t off,
                         const void *src, size_t n)
{
    size_t done = 0;
    for (unsigned k = 0; k < c->nr && done < n; k++) {
        const struct virtq_seg *s = &c->seg[k];
        if (!s->write)
            continue;
        if (off >= s->len) {
            off -= s->len;
            continue;
        }
        if (!s->host)
            break;
        size_t take = s->len - off;
        if (take > n - done)
            take = n - done;
        memcpy(s->host + off, (const uint8_t *)src + done, take);
        vmm_dirty_mark(dirty, s->gpa + off, take);
        done += take;
        off = 0;
    }
    return done;
}

int virtq_chain_iov(const struct virtq_chain *c, bool writable, uint64_t off, uint64_t len,
                    struct iovec *iov, struct virtq_span *spans, unsigned cap)
{
    unsigned n = 0;
    for (unsigned k = 0; k < c->nr && len > 0; k++) {
        const struct virtq_seg *s = &c->seg[k];
        if (s->write != writable)
            continue;
        if (off >= s->len) {
            off -= s->len;
            continue;
        }
        if (!s->host || n == cap)
            return -1;
        uint64_t take = s->len - off;
        if (take > len)
            take = len;
        iov[n].iov_base = s->host + off;
        iov[n].iov_len = (size_t)take;
        if (spans)
            spans[n] = (struct virtq_span){.gpa = s->gpa + off, .len = take};
        n++;
        len -= take;
        off = 0;
    }
    return len == 0 ? (int)n : -1;
}

unsigned virtq_chain_iov_count(const struct virtq_chain *c, bool writable, uint64_t off,
                               uint64_t len)
{
    unsigned n = 0;
    for (unsigned k = 0; k < c->nr && len > 0; k++) {
        const struct virtq_seg *s = &c->seg[k];
        if (s->write != writable)
            continue;
        if (off >= s->len) {
            off -= s->len;
            continue;
        }
        uint64_t take = s->len - off;
        if (take > len)
            take = len;
        n++;
        len -= take;
        off = 0;
    }
    return n;
}
