/* Split virtqueues (virtio 1.x, section 2.7), device side: taking
 * descriptor chains from the available ring and returning them through the
 * used ring.
 *
 * Pure memory work on guest RAM (struct guest_memory), no locking, no
 * threads: the transport serialises calls under its device lock. Every
 * value the guest controls is checked before use: ring addresses when the
 * queue is configured, then on each pop the available index, the head,
 * every descriptor index, the chain length (loops), indirect tables and
 * buffer ranges. A descriptor is copied out of guest memory once and only
 * the copy is used, so a guest changing it meanwhile gains nothing.
 *
 * Two kinds of guest mistakes:
 *  - a malformed ring (an index out of range, a loop, a bad indirect
 *    table, device-readable after device-writable, the available index
 *    running ahead by more than the queue size): virtq_pop returns
 *    VIRTQ_BROKEN, marks the queue broken and says why in vq->error; the
 *    transport then sets DEVICE_NEEDS_RESET. The chain is not consumed.
 *  - a well-formed chain whose buffers are not wholly inside guest RAM (or
 *    longer than 4 GiB in total): the chain is consumed and returned with
 *    chain->bad set; the device completes it with an error status where it
 *    can. Such segments have host == NULL. */
#ifndef TERN_NODE_VMM_VIRTQUEUE_H
#define TERN_NODE_VMM_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "../common/err.h"
#include "../dirtylog/vmm_dirty.h"
#include "guest_memory.h"

#define VIRTQ_DESC_F_NEXT 1u
#define VIRTQ_DESC_F_WRITE 2u
#define VIRTQ_DESC_F_INDIRECT 4u
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1u
#define VIRTQ_USED_F_NO_NOTIFY 1u

/* Largest queue size the split ring format allows. */
#define VIRTQ_MAX_SIZE 32768u
/* Most buffers one chain may have, direct and indirect together. */
#define VIRTQ_CHAIN_MAX 256u

#define VIRTQ_DESC_SIZE 16u
/* Ring sizes in bytes for a queue of `num` entries (no event-idx fields
 * are used, but the driver lays them out; we only need what we touch). */
#define VIRTQ_DESC_BYTES(num) ((uint64_t)(num) * VIRTQ_DESC_SIZE)
#define VIRTQ_AVAIL_BYTES(num) (4u + 2u * (uint64_t)(num) + 2u)
#define VIRTQ_USED_BYTES(num) (4u + 8u * (uint64_t)(num) + 2u)

struct virtq {
    /* Configuration, as the driver wrote it through the transport. */
    uint32_t num;        /* queue size */
    bool ready;
    bool indirect;       /* VIRTIO_RING_F_INDIRECT_DESC negotiated */
    uint64_t desc_gpa;   /* descriptor table */
    uint64_t avail_gpa;  /* driver area */
    uint64_t used_gpa;   /* device area */

    /* Device progress. After a pop/push cycle with nothing in flight,
     * last_avail == used_idx. */
    uint16_t last_avail; /* next available-ring slot to take */
    uint16_t used_idx;   /* the used index the device last published */
    bool broken;         /* malformed ring seen; nothing more is taken */
    char error[160];     /* why broken */

    /* Set by virtq_configure: where the rings are in this process. */
    const struct guest_memory *gm;
    struct vmm_dirty *dirty; /* may be NULL */
    uint8_t *desc;
    uint8_t *avail;
    uint8_t *used;
};

struct virtq_seg {
    uint64_t gpa;
    uint32_t len;
    bool write;    /* device-writable */
    uint8_t *host; /* NULL when not wholly inside guest RAM */
};

struct virtq_chain {
    uint16_t head;       /* what virtq_push gives back */
    unsigned nr;         /* segments (zero-length buffers are left out) */
    uint64_t readable;   /* bytes in device-readable segments */
    uint64_t writable;   /* bytes in device-writable segments */
    const char *bad;     /* NULL, or why the chain cannot be used as is */
    struct virtq_seg seg[VIRTQ_CHAIN_MAX]; /* readable ones first */
};

enum {
    VIRTQ_BROKEN = -1,
    VIRTQ_EMPTY = 0,
    VIRTQ_CHAIN = 1,
};

/* Forgets configuration and progress (device reset); keeps gm and dirty. */
void virtq_reset(struct virtq *vq);

/* Validates the configuration for use: num a power of two in [1, max_num],
 * rings aligned (16, 2, 4 bytes) and wholly inside guest RAM; then caches
 * the host pointers. Does not touch ready, indexes or the rings. Returns
 * 0, or -1 with err saying which field is wrong. */
int virtq_configure(struct virtq *vq, const struct guest_memory *gm, struct vmm_dirty *dirty,
                    uint32_t max_num, struct tern_err *err);

/* Takes the next chain if the driver has made one available:
 * VIRTQ_CHAIN (chain filled, last_avail advanced), VIRTQ_EMPTY, or
 * VIRTQ_BROKEN (see above; also returned at once for a broken queue).
 * The queue must be configured (virtq_configure succeeded). */
int virtq_pop(struct virtq *vq, struct virtq_chain *chain);

/* Returns a chain: writes the used element {head, len}, then publishes the
 * used index with release ordering so the driver sees the element (and
 * whatever the device wrote into the buffers) first. Marks both dirty. */
void virtq_push(struct virtq *vq, uint16_t head, uint32_t len);

/* Whether the driver wants an interrupt for used buffers now (it has not
 * set VIRTQ_AVAIL_F_NO_INTERRUPT). Call after virtq_push; a full barrier
 * orders the used index store before the flags load. */
bool virtq_needs_interrupt(const struct virtq *vq);

/* The driver's available index (for diagnostics and tests). */
uint16_t virtq_avail_idx(const struct virtq *vq);

/* Copies up to n bytes at offset `off` of the chain's device-readable
 * bytes into dst; returns how many were copied (fewer at the end). */
size_t virtq_chain_read(const struct virtq_chain *c, uint64_t off, void *dst, size_t n);

/* Copies up to n bytes into the device-writable bytes at offset `off`,
 * marking what it writes dirty; returns how many were written. */
size_t virtq_chain_write(const struct virtq_chain *c, struct vmm_dirty *dirty, uint64_t off,
                         const void *src, size_t n);

/* A guest-physical range, for marking device writes dirty. */
struct virtq_span {
    uint64_t gpa;
    uint64_t len;
};

/* Describes [off, off + len) of the readable (writable = false) or
 * writable bytes as iovecs into guest RAM (and, if spans is not NULL,
 * the same ranges as guest-physical spans). Returns the number of iovecs,
 * or -1 if more than cap would be needed, the range runs past the end, or
 * a segment is outside RAM. */
int virtq_chain_iov(const struct virtq_chain *c, bool writable, uint64_t off, uint64_t len,
                    struct iovec *iov, struct virtq_span *spans, unsigned cap);

/* Counts the iovecs virtq_chain_iov would need for that range. */
unsigned virtq_chain_iov_count(const struct virtq_chain *c, bool writable, uint64_t off,
                               uint64_t len);

#endif
