/* virtio-mmio transport, version 2 (virtio 1.x "modern" only; section 4.2
 * of the spec): the register window a driver finds at a fixed guest
 * physical address, feature negotiation, the device status state machine,
 * queue configuration and the interrupt status.
 *
 * A device (dev_virtio_blk.c) embeds one struct virtio_mmio, gives it its
 * device ID, features, config space and ops, and registers t->mmio on the
 * MMIO bus. Register accesses arrive on vCPU threads; the device's own
 * thread uses the same lock (t->lock) when it touches the queues, status
 * or interrupt status. Functions documented "lock held" expect the caller
 * to hold t->lock. */
#ifndef TERN_NODE_VMM_VIRTIO_MMIO_H
#define TERN_NODE_VMM_VIRTIO_MMIO_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/err.h"
#include "../dirtylog/vmm_dirty.h"
#include "../proto/record.h"
#include "guest_memory.h"
#include "mmio.h"
#include "virtqueue.h"

#define VIRTIO_MMIO_WINDOW 0x1000u /* bytes of MMIO space per device */
#define VIRTIO_MMIO_MAGIC 0x74726976u /* "virt" */
#define VIRTIO_MMIO_VERSION 2u
#define VIRTIO_MMIO_VENDOR_TERN 0x5445524eu /* "TERN" */

/* Register offsets (all 32-bit, accessed with aligned 4-byte accesses). */
#define VIRTIO_MMIO_MAGIC_VALUE 0x000
#define VIRTIO_MMIO_VERSION_REG 0x004
#define VIRTIO_MMIO_DEVICE_ID 0x008
#define VIRTIO_MMIO_VENDOR_ID 0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL 0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_READY 0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW 0x090
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW 0x0a0
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH 0x0a4
#define VIRTIO_MMIO_SHM_SEL 0x0ac
#define VIRTIO_MMIO_SHM_LEN_LOW 0x0b0
#define VIRTIO_MMIO_SHM_LEN_HIGH 0x0b4
#define VIRTIO_MMIO_SHM_BASE_LOW 0x0b8
#define VIRTIO_MMIO_SHM_BASE_HIGH 0x0bc
#define VIRTIO_MMIO_CONFIG_GENERATION 0x0fc
#define VIRTIO_MMIO_CONFIG 0x100

/* Device status bits. */
#define VIRTIO_STATUS_ACKNOWLEDGE 1u
#define VIRTIO_STATUS_DRIVER 2u
#define VIRTIO_STATUS_DRIVER_OK 4u
#define VIRTIO_STATUS_FEATURES_OK 8u
#define VIRTIO_STATUS_DEVICE_NEEDS_RESET 64u
#define VIRTIO_STATUS_FAILED 128u
#define VIRTIO_STATUS_ALL                                                                   \
    (VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_DRIVER_OK |          \
     VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DEVICE_NEEDS_RESET | VIRTIO_STATUS_FAILED)

/* Transport/ring feature bits (device-specific ones live with the device). */
#define VIRTIO_F_INDIRECT_DESC (1ull << 28)
#define VIRTIO_F_VERSION_1 (1ull << 32)

/* InterruptStatus bits. */
#define VIRTIO_MMIO_INT_VRING 1u
#define VIRTIO_MMIO_INT_CONFIG 2u

#define VIRTIO_MMIO_MAX_QUEUES 4u

struct virtio_mmio_ops {
    /* The driver wrote QueueNotify through an MMIO exit (4-byte writes
     * normally go to the ioeventfd instead), or set DRIVER_OK. Lock held;
     * must not block. */
    void (*notify)(void *opaque, uint32_t queue);
    /* Device reset or a queue being disabled: return only once no request
     * is in flight and none will be taken until the transport says so
     * (queues not ready or status 0). Lock held; may wait on t->cond,
     * which is paired with t->lock. */
    void (*drain)(void *opaque);
};

struct virtio_mmio_params {
    const char *name;            /* for messages, e.g. "disk0" */
    uint64_t base;               /* guest physical base of the window */
    uint32_t device_id;
    uint64_t device_features;    /* must include VIRTIO_F_VERSION_1 */
    unsigned nr_queues;          /* 1..VIRTIO_MMIO_MAX_QUEUES */
    uint32_t queue_num_max;      /* power of two, <= VIRTQ_MAX_SIZE */
    const uint8_t *config;       /* device config space, little-endian; read-only */
    uint32_t config_len;         /* at most VIRTIO_MMIO_WINDOW - VIRTIO_MMIO_CONFIG */
    const struct guest_memory *gm;
    struct vmm_dirty *dirty;     /* may be NULL */
    int irq_fd;                  /* eventfd signalled for each interrupt (an irqfd) */
    const struct virtio_mmio_ops *ops;
    void *opaque;
};

struct virtio_mmio {
    struct mmio_device mmio; /* register this on the bus */
    pthread_mutex_t lock;
    pthread_cond_t cond;     /* CLOCK_MONOTONIC; the device's waits use it */

    char name[32];
    uint32_t device_id;
    uint64_t device_features;
    unsigned nr_queues;
    uint32_t queue_num_max;
    const uint8_t *config;
    uint32_t config_len;
    const struct guest_memory *gm;
    struct vmm_dirty *dirty;
    int irq_fd;
    const struct virtio_mmio_ops *ops;
    void *opaque;

    /* Registers (lock held). */
    uint64_t driver_features;
    uint32_t device_features_sel;
    uint32_t driver_features_sel;
    uint32_t queue_sel;
    uint32_t status;
    uint32_t interrupt_status;
    uint32_t config_generation;
    uint32_t shm_sel;
    struct virtq vq[VIRTIO_MMIO_MAX_QUEUES];

    bool logged_broken;           /* "needs reset" reported since the last reset */
    _Atomic uint64_t interrupts;  /* interrupts signalled (tests, statistics) */
    _Atomic uint64_t bad_accesses; /* unaligned/odd-sized register accesses, ignored */
};

/* Sets the transport up (not yet on a bus). Fails on inconsistent params. */
int virtio_mmio_init(struct virtio_mmio *t, const struct virtio_mmio_params *p,
                     struct tern_err *err);
void virtio_mmio_destroy(struct virtio_mmio *t);

/* Sets `bits` in InterruptStatus and signals the interrupt. Lock held. */
void virtio_mmio_interrupt(struct virtio_mmio *t, uint32_t bits);

/* Queue `q` found its ring malformed (vq->error says how): sets
 * DEVICE_NEEDS_RESET, raises a configuration change interrupt and logs
 * once to stderr. Lock held. */
void virtio_mmio_queue_broken(struct virtio_mmio *t, unsigned q);

/* Whether the device may take requests from queue `q`: DRIVER_OK set,
 * neither FAILED nor DEVICE_NEEDS_RESET, queue ready and not broken. Lock
 * held. */
bool virtio_mmio_queue_live(const struct virtio_mmio *t, unsigned q);

/* Whether the negotiated features include `bits`. Lock held. */
bool virtio_mmio_has_feature(const struct virtio_mmio *t, uint64_t bits);

/* --- state, for save/restore and migration --- */

struct virtio_mmio_queue_state {
    uint32_t num;
    uint8_t ready;
    uint64_t desc;   /* descriptor table */
    uint64_t driver; /* available ring */
    uint64_t device; /* used ring */
    uint16_t last_avail;
    uint16_t used_idx;
    uint8_t broken;
};

struct virtio_mmio_state {
    uint32_t device_id;
    uint64_t device_features;
    uint64_t driver_features;
    uint32_t device_features_sel;
    uint32_t driver_features_sel;
    uint32_t queue_sel;
    uint32_t status;
    uint32_t interrupt_status;
    uint32_t config_generation;
    uint32_t shm_sel;
    uint32_t nr_queues;
    struct virtio_mmio_queue_state queue[VIRTIO_MMIO_MAX_QUEUES];
};

/* Copies the transport's state. Lock held. */
void virtio_mmio_state_get(const struct virtio_mmio *t, struct virtio_mmio_state *s);

/* Appends the state's fields to an open record (see proto/record.h). */
void virtio_mmio_state_put(const struct virtio_mmio_state *s, struct rec_buf *b);

/* Reads the fields virtio_mmio_state_put wrote. Fails only on a queue
 * count larger than VIRTIO_MMIO_MAX_QUEUES; short input is left for the
 * caller to find with rec_finish. */
int virtio_mmio_state_read(struct rec_reader *r, struct virtio_mmio_state *s,
                           struct tern_err *err);

/* Checks that this transport can continue from `s`: same device and
 * features, negotiated features offered, status bits known and coherent,
 * interrupt bits known, each ready queue's size a power of two no larger
 * than the maximum with rings aligned and inside guest RAM, nothing in
 * flight (last_avail == used_idx), a broken queue only with
 * DEVICE_NEEDS_RESET. Returns 0 or -1 saying what is wrong. */
int virtio_mmio_state_check(const struct virtio_mmio *t, const struct virtio_mmio_state *s,
                            struct tern_err *err);

/* Installs a checked state. Lock held. */
void virtio_mmio_state_apply(struct virtio_mmio *t, const struct virtio_mmio_state *s);

#endif
