/* virtio-blk over virtio-mmio, backed by a raw image file (or block
 * device), with its I/O on io_uring. See docs/virtio-blk.md.
 *
 * One request queue. One device thread per disk blocks in io_uring: the
 * queue-notify ioeventfd and a wake-up eventfd are reads on the same ring
 * as the disk I/O, so nothing polls. Request data moves straight between
 * the image and guest RAM (iovecs into the RAM mapping); every byte the
 * device writes into guest RAM is marked in the vmm_dirty bitmap.
 *
 * Threads: register accesses come from vCPU threads (under the transport
 * lock); the device thread takes chains and completes them under the same
 * lock; quiesce/unquiesce/state calls come from the VMM's main thread. */
#ifndef TERN_NODE_VMM_DEV_VIRTIO_BLK_H
#define TERN_NODE_VMM_DEV_VIRTIO_BLK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"
#include "../dirtylog/vmm_dirty.h"
#include "../proto/record.h"
#include "../proto/record_types.h"
#include "guest_memory.h"
#include "mmio.h"
#include "virtio_mmio.h"

#define VIRTIO_ID_BLOCK 2u

/* Suggested placement: disk i at VIRTIO_BLK_MMIO_BASE + i * 0x1000 (inside
 * the MMIO hole), interrupt VIRTIO_BLK_GSI_BASE + i. */
#define VIRTIO_BLK_MMIO_BASE 0xd0000000ull
#define VIRTIO_BLK_GSI_BASE 5u

#define VIRTIO_BLK_QUEUE_MAX 256u  /* QueueNumMax */
#define VIRTIO_BLK_SEG_MAX 254u    /* data buffers per request (+ header + status) */
#define VIRTIO_BLK_SECTOR 512u
#define VIRTIO_BLK_ID_BYTES 20u

/* virtio-blk feature bits. */
#define VIRTIO_BLK_F_SEG_MAX (1ull << 2)
#define VIRTIO_BLK_F_RO (1ull << 5)
#define VIRTIO_BLK_F_BLK_SIZE (1ull << 6)
#define VIRTIO_BLK_F_FLUSH (1ull << 9)

/* Request types and status values. */
#define VIRTIO_BLK_T_IN 0u
#define VIRTIO_BLK_T_OUT 1u
#define VIRTIO_BLK_T_FLUSH 4u
#define VIRTIO_BLK_T_GET_ID 8u
#define VIRTIO_BLK_S_OK 0u
#define VIRTIO_BLK_S_IOERR 1u
#define VIRTIO_BLK_S_UNSUPP 2u

#define VIRTIO_BLK_REQ_HDR_SIZE 16u /* le32 type, le32 reserved, le64 sector */

/* Config space layout (offsets from VIRTIO_MMIO_CONFIG). */
#define VIRTIO_BLK_CFG_CAPACITY 0   /* le64, 512-byte sectors */
#define VIRTIO_BLK_CFG_SIZE_MAX 8   /* le32 (not offered: 0) */
#define VIRTIO_BLK_CFG_SEG_MAX 12   /* le32 */
#define VIRTIO_BLK_CFG_GEOMETRY 16  /* 4 bytes (not offered: 0) */
#define VIRTIO_BLK_CFG_BLK_SIZE 20  /* le32 */
#define VIRTIO_BLK_CFG_NUM_QUEUES 34 /* le16 (MQ not offered: 1) */
#define VIRTIO_BLK_CONFIG_SIZE 36

/* The device state record (proto/record.h framing), one per disk; its
 * first field is the disk index (0x0201 is the UART's, 0x0202 the
 * heartbeat's). */
#define VIRTIO_BLK_STATE_RECORD REC_TYPE_VIRTIO_BLK_STATE
#define VIRTIO_BLK_STATE_VERSION 1u

/* How long virtio_blk_quiesce waits for in-flight requests. */
#define VIRTIO_BLK_QUIESCE_TIMEOUT_MS 30000u

struct virtio_blk_config {
    const char *path;   /* raw image */
    bool read_only;
    uint64_t mmio_base; /* e.g. 0xd0000000 + index * 0x1000 (inside the MMIO hole) */
    unsigned gsi;       /* interrupt line, e.g. 5 + index */
    unsigned index;     /* disk number, for names/messages */
};

struct virtio_blk;

struct virtio_blk_stats {
    uint64_t reads, writes, flushes, bytes_read, bytes_written, errors;
};

/* Everything needed to continue the device elsewhere: the transport (with
 * queue positions) and the disk it was attached to. */
struct virtio_blk_state {
    uint32_t index;    /* disk number (virtio_blk_config.index) */
    uint64_t capacity; /* sectors */
    uint8_t read_only;
    struct virtio_mmio_state transport;
};

/* Opens the image (O_RDWR, or O_RDONLY when read-only; O_CLOEXEC), which
 * must be a regular file or block device whose size is a non-zero multiple
 * of 512; sets up io_uring, the notify and wake-up eventfds and the
 * interrupt eventfd. With vm_fd >= 0 it registers KVM_IOEVENTFD on
 * QueueNotify (4-byte writes, any value) and KVM_IRQFD on cfg->gsi; with
 * vm_fd == -1 (tests) it registers neither: virtio_blk_test_notify kicks
 * the queue and virtio_blk_interrupts counts interrupts. `dirty` may be
 * NULL. The thread is not started. On failure nothing is left behind and
 * err names the image. */
int virtio_blk_create(struct virtio_blk **out, const struct virtio_blk_config *cfg,
                      struct guest_memory *gm, int vm_fd, struct vmm_dirty *dirty,
                      struct tern_err *err);

/* The MMIO window to register on the bus (VIRTIO_MMIO_WINDOW bytes). */
struct mmio_device *virtio_blk_mmio(struct virtio_blk *dev);

/* Writes the Linux command-line fragment that declares this device,
 * "virtio_mmio.device=4K@0xd0000000:5"; returns its length, or -1 if it
 * does not fit in cap (buf then holds a truncated, terminated string). */
int virtio_blk_cmdline(const struct virtio_blk *dev, char *buf, size_t cap);

/* Starts the device thread. If a state was loaded, the thread first looks
 * at the available ring (and re-signals a pending interrupt). */
int virtio_blk_start(struct virtio_blk *dev, struct tern_err *err);

/* Stops taking requests and waits until every request already taken has
 * completed: its status written, its used element published and the
 * interrupt signalled. Notifications arriving meanwhile are remembered.
 * Fails (still quiesced) if requests are still in flight after
 * VIRTIO_BLK_QUIESCE_TIMEOUT_MS. vCPUs are expected to be paused. */
int virtio_blk_quiesce(struct virtio_blk *dev, struct tern_err *err);

/* Takes requests again, starting with whatever the driver made available
 * while quiesced. */
void virtio_blk_unquiesce(struct virtio_blk *dev);

/* The device's current state (meaningful while quiesced). */
void virtio_blk_state_get(struct virtio_blk *dev, struct virtio_blk_state *s);

/* Appends one VIRTIO_BLK_STATE_RECORD (version VIRTIO_BLK_STATE_VERSION)
 * record holding `s`. */
void virtio_blk_state_encode(const struct virtio_blk_state *s, struct rec_buf *b);

/* Decodes a record written by virtio_blk_state_encode: type, version and
 * exact length are checked, not the values. */
int virtio_blk_state_decode(const struct rec_header *h, struct rec_reader *payload,
                            struct virtio_blk_state *s, struct tern_err *err);

/* The disk index a VIRTIO_BLK_STATE_RECORD payload names (its first
 * field), without consuming the reader; for dispatching records to disks. */
int virtio_blk_state_peek_index(const struct rec_reader *payload, uint32_t *index,
                                struct tern_err *err);

/* virtio_blk_state_get + virtio_blk_state_encode. Call only while
 * quiesced (otherwise requests in flight make the state one that
 * virtio_blk_state_load refuses). */
void virtio_blk_state_save(struct virtio_blk *dev, struct rec_buf *b);

/* Decodes and validates a state record and installs it into a freshly
 * created device with the same configuration whose thread has not been
 * started. Refuses, saying why, a record of another type or version, or
 * for another disk index, a different disk size or read-only setting, unknown or incoherent status
 * bits, features not offered, ready queues with a bad size or rings not
 * aligned and inside guest RAM, or requests in flight at save time. */
int virtio_blk_state_load(struct virtio_blk *dev, const struct rec_header *h,
                          struct rec_reader *payload, struct tern_err *err);

/* Stops the thread (after in-flight requests finish), unregisters the
 * eventfds from KVM and closes everything. NULL is ignored. */
void virtio_blk_destroy(struct virtio_blk *dev);

void virtio_blk_get_stats(struct virtio_blk *dev, struct virtio_blk_stats *out);

/* Capacity in 512-byte sectors. */
uint64_t virtio_blk_capacity(const struct virtio_blk *dev);

/* The image's file descriptor, for identity checks (fstat: is it the file
 * that was locked?) only: its I/O belongs to the device thread. */
int virtio_blk_image_fd(const struct virtio_blk *dev);

/* --- for tests (usable with or without KVM) --- */

/* What a 4-byte QueueNotify write does: wakes the device thread. */
void virtio_blk_test_notify(struct virtio_blk *dev);

/* Interrupts signalled since creation. */
uint64_t virtio_blk_interrupts(struct virtio_blk *dev);

/* The device status register (e.g. to see DEVICE_NEEDS_RESET). */
uint32_t virtio_blk_status(struct virtio_blk *dev);

/* While held, I/O that finishes is kept aside instead of completing, so
 * its requests stay in flight (page-cache I/O is otherwise too quick to
 * catch); releasing completes them. Destroy releases too. */
void virtio_blk_test_hold_completions(struct virtio_blk *dev, bool hold);

/* Requests taken from the ring and not yet completed. */
unsigned virtio_blk_test_inflight(struct virtio_blk *dev);

#endif
