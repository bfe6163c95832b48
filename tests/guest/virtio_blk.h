/* A user-mode, polled virtio-blk driver for one virtio-mmio (version 2,
 * "modern") device: the journal disk. One request is in flight at a time;
 * completion is found by polling the used ring, never by interrupt (the
 * device's IOAPIC pin stays masked). All of the driver's state (rings,
 * indexes, buffers) is plain guest memory, so it carries on across
 * snapshot/restore and migration as long as the VMM keeps the device's
 * queue state. */
#ifndef TG_VIRTIO_BLK_H
#define TG_VIRTIO_BLK_H

#include <stddef.h>
#include <stdint.h>

#define VBLK_SECTOR_SIZE 512

/* virtio-blk request types. */
#define VBLK_T_IN 0
#define VBLK_T_OUT 1
#define VBLK_T_FLUSH 4

/* Request status byte. */
#define VBLK_S_OK 0
#define VBLK_S_IOERR 1
#define VBLK_S_UNSUPP 2

/* Data buffer shared with the device: requests move data through it. */
#define VBLK_BUF_SIZE (32 * 4096)
extern uint8_t vblk_buf[VBLK_BUF_SIZE];

struct vblk_info {
    uint64_t capacity;  /* 512-byte sectors */
    uint32_t max_bytes; /* largest data transfer per request (<= VBLK_BUF_SIZE) */
    unsigned queue_size;
};

/* Resets and sets up the device at `base`: features VIRTIO_F_VERSION_1 and
 * VIRTIO_BLK_F_FLUSH (required), queue 0, DRIVER_OK. Returns 0, or -1 with
 * a reason in why[0..whysize). */
int vblk_init(uint64_t base, struct vblk_info *info, char *why, size_t whysize);

/* Submits one request (none may be in flight): VBLK_T_IN reads `len`
 * bytes into vblk_buf, VBLK_T_OUT writes them from vblk_buf, VBLK_T_FLUSH
 * takes len 0. len is a multiple of 512, at most info.max_bytes. */
void vblk_submit(uint32_t type, uint64_t sector, uint32_t len);

/* -1 while the request is in flight; else its status byte (VBLK_S_*, or
 * 0xff if the device completed it without writing one, or 0xfe if the
 * used ring names another descriptor). */
int vblk_poll(void);

/* 1 if the device has set DEVICE_NEEDS_RESET (it gave up on the queue:
 * the request in flight will never complete). One MMIO read. */
int vblk_needs_reset(void);

#endif
