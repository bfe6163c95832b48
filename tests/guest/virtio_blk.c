/* Polled virtio-mmio block driver, CPL3 (the MMIO window is in the 3-4 GiB
 * hole, which pagetables.S maps user-accessible and uncached). Guest
 * memory is identity mapped, so a buffer's address is its physical
 * address. */
#include "virtio_blk.h"

#include "lib.h"
#include "x86.h"

/* virtio-mmio registers (virtio 1.x, section 4.2.2). */
#define VM_MAGIC 0x000
#define VM_VERSION 0x004
#define VM_DEVICE_ID 0x008
#define VM_DEVICE_FEATURES 0x010
#define VM_DEVICE_FEATURES_SEL 0x014
#define VM_DRIVER_FEATURES 0x020
#define VM_DRIVER_FEATURES_SEL 0x024
#define VM_QUEUE_SEL 0x030
#define VM_QUEUE_NUM_MAX 0x034
#define VM_QUEUE_NUM 0x038
#define VM_QUEUE_READY 0x044
#define VM_QUEUE_NOTIFY 0x050
#define VM_STATUS 0x070
#define VM_QUEUE_DESC_LOW 0x080
#define VM_QUEUE_DESC_HIGH 0x084
#define VM_QUEUE_DRIVER_LOW 0x090
#define VM_QUEUE_DRIVER_HIGH 0x094
#define VM_QUEUE_DEVICE_LOW 0x0a0
#define VM_QUEUE_DEVICE_HIGH 0x0a4
#define VM_CONFIG_GENERATION 0x0fc
#define VM_CONFIG 0x100

#define VIRTIO_MMIO_MAGIC 0x74726976 /* "virt" */
#define VIRTIO_ID_BLOCK 2

#define ST_ACKNOWLEDGE 1
#define ST_DRIVER 2
#define ST_DRIVER_OK 4
#define ST_FEATURES_OK 8
#define ST_DEVICE_NEEDS_RESET 64
#define ST_FAILED 128

/* Feature bits. */
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_F_VERSION_1 32

/* virtio_blk_config offsets. */
#define BLK_CFG_CAPACITY 0
#define BLK_CFG_SIZE_MAX 8

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

#define QSIZE_MAX 16

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct blk_req_hdr {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

/* Everything the device reads or writes besides the data buffer, in one
 * page: descriptor table (16-byte aligned), available ring (2), used ring
 * (4), request header and status byte. */
static struct vq_mem {
    struct virtq_desc desc[QSIZE_MAX];
    struct {
        uint16_t flags;
        uint16_t idx;
        uint16_t ring[QSIZE_MAX];
        uint16_t used_event;
    } avail;
    struct {
        uint16_t flags;
        uint16_t idx;
        struct {
            uint32_t id;
            uint32_t len;
        } ring[QSIZE_MAX];
        uint16_t avail_event;
    } used __attribute__((aligned(4)));
    struct blk_req_hdr hdr __attribute__((aligned(16)));
    uint8_t status;
} vq __attribute__((aligned(4096)));

_Static_assert(sizeof(struct vq_mem) <= 4096, "virtqueue fits one page");

uint8_t vblk_buf[VBLK_BUF_SIZE] __attribute__((aligned(4096)));

static struct {
    uint64_t base;
    uint16_t qsize;
    uint16_t avail_idx; /* next free avail slot, free-running */
    uint16_t used_idx;  /* next used element to consume, free-running */
    int busy;
} dev;

static inline uint32_t rd(uint32_t off)
{
    return mmio_read32((uintptr_t)(dev.base + off));
}

static inline void wr(uint32_t off, uint32_t v)
{
    mmio_write32((uintptr_t)(dev.base + off), v);
}

static inline void wr64(uint32_t lo, uint64_t v)
{
    wr(lo, (uint32_t)v);
    wr(lo + 4, (uint32_t)(v >> 32));
}

static int fail(char *why, size_t whysize, const char *msg, uint32_t v)
{
    tg_snprintf(why, whysize, msg, v);
    if (rd(VM_MAGIC) == VIRTIO_MMIO_MAGIC && rd(VM_VERSION) == 2)
        wr(VM_STATUS, rd(VM_STATUS) | ST_FAILED);
    return -1;
}

/* A 64-bit config field, read as two 32-bit halves under the config
 * generation so that a concurrent change cannot tear it. */
static uint64_t config64(uint32_t off)
{
    uint32_t gen, lo, hi;
    do {
        gen = rd(VM_CONFIG_GENERATION);
        lo = rd(VM_CONFIG + off);
        hi = rd(VM_CONFIG + off + 4);
    } while (gen != rd(VM_CONFIG_GENERATION));
    return ((uint64_t)hi << 32) | lo;
}

int vblk_init(uint64_t base, struct vblk_info *info, char *why, size_t whysize)
{
    uint32_t v;

    dev.base = base;
    dev.busy = 0;
    if ((v = rd(VM_MAGIC)) != VIRTIO_MMIO_MAGIC)
        return fail(why, whysize, "no virtio-mmio device here (magic 0x%x)", v);
    if ((v = rd(VM_VERSION)) != 2)
        return fail(why, whysize, "virtio-mmio version %u, need 2 (modern, not legacy)", v);
    if ((v = rd(VM_DEVICE_ID)) != VIRTIO_ID_BLOCK)
        return fail(why, whysize, "device id %u is not a block device (2)", v);

    wr(VM_STATUS, 0); /* reset; done once the status reads back 0 */
    for (unsigned i = 0; rd(VM_STATUS); i++)
        if (i == 1000000)
            return fail(why, whysize, "device does not finish its reset (status 0x%x)",
                        rd(VM_STATUS));
    wr(VM_STATUS, ST_ACKNOWLEDGE);
    wr(VM_STATUS, ST_ACKNOWLEDGE | ST_DRIVER);

    wr(VM_DEVICE_FEATURES_SEL, 0);
    uint64_t features = rd(VM_DEVICE_FEATURES);
    wr(VM_DEVICE_FEATURES_SEL, 1);
    features |= (uint64_t)rd(VM_DEVICE_FEATURES) << 32;
    if (!(features & (1ull << VIRTIO_F_VERSION_1)))
        return fail(why, whysize, "device lacks VIRTIO_F_VERSION_1", 0);
    if (!(features & (1ull << VIRTIO_BLK_F_FLUSH)))
        return fail(why, whysize, "device lacks VIRTIO_BLK_F_FLUSH", 0);
    if (features & (1ull << VIRTIO_BLK_F_RO))
        return fail(why, whysize, "device is read-only (VIRTIO_BLK_F_RO)", 0);
    uint64_t accept = (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_BLK_F_FLUSH) |
                      (features & (1ull << VIRTIO_BLK_F_SIZE_MAX));
    wr(VM_DRIVER_FEATURES_SEL, 0);
    wr(VM_DRIVER_FEATURES, (uint32_t)accept);
    wr(VM_DRIVER_FEATURES_SEL, 1);
    wr(VM_DRIVER_FEATURES, (uint32_t)(accept >> 32));
    wr(VM_STATUS, ST_ACKNOWLEDGE | ST_DRIVER | ST_FEATURES_OK);
    if (!(rd(VM_STATUS) & ST_FEATURES_OK))
        return fail(why, whysize, "device rejected the features (FEATURES_OK did not stick)",
                    0);

    wr(VM_QUEUE_SEL, 0);
    if (rd(VM_QUEUE_READY))
        return fail(why, whysize, "queue 0 is already in use after reset", 0);
    uint32_t max = rd(VM_QUEUE_NUM_MAX);
    if (max < 4)
        return fail(why, whysize, "queue 0 holds %u descriptors, need 4", max);
    dev.qsize = QSIZE_MAX;
    while (dev.qsize > max)
        dev.qsize >>= 1;
    memset(&vq, 0, sizeof(vq));
    vq.avail.flags = VIRTQ_AVAIL_F_NO_INTERRUPT; /* polled */
    dev.avail_idx = 0;
    dev.used_idx = 0;
    wr(VM_QUEUE_NUM, dev.qsize);
    wr64(VM_QUEUE_DESC_LOW, (uintptr_t)vq.desc);
    wr64(VM_QUEUE_DRIVER_LOW, (uintptr_t)&vq.avail);
    wr64(VM_QUEUE_DEVICE_LOW, (uintptr_t)&vq.used);
    wr(VM_QUEUE_READY, 1);

    info->capacity = config64(BLK_CFG_CAPACITY);
    info->max_bytes = VBLK_BUF_SIZE;
    if (accept & (1ull << VIRTIO_BLK_F_SIZE_MAX)) {
        uint32_t size_max = rd(VM_CONFIG + BLK_CFG_SIZE_MAX) & ~(uint32_t)(VBLK_SECTOR_SIZE - 1);
        if (size_max < 4096)
            return fail(why, whysize, "size_max %u is below one 4 KiB block",
                        rd(VM_CONFIG + BLK_CFG_SIZE_MAX));
        if (size_max < info->max_bytes)
            info->max_bytes = size_max;
    }
    info->queue_size = dev.qsize;
    wr(VM_STATUS, ST_ACKNOWLEDGE | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
    return 0;
}

void vblk_submit(uint32_t type, uint64_t sector, uint32_t len)
{
    vq.hdr.type = type;
    vq.hdr.reserved = 0;
    vq.hdr.sector = sector;
    vq.status = 0xff;
    vq.desc[0] = (struct virtq_desc){(uintptr_t)&vq.hdr, sizeof(vq.hdr), VIRTQ_DESC_F_NEXT, 1};
    struct virtq_desc *st = &vq.desc[1];
    if (len) {
        vq.desc[1] = (struct virtq_desc){(uintptr_t)vblk_buf, len,
                                         VIRTQ_DESC_F_NEXT |
                                             (type == VBLK_T_IN ? VIRTQ_DESC_F_WRITE : 0),
                                         2};
        st = &vq.desc[2];
    }
    *st = (struct virtq_desc){(uintptr_t)&vq.status, 1, VIRTQ_DESC_F_WRITE, 0};

    vq.avail.ring[dev.avail_idx % dev.qsize] = 0; /* chain head */
    dev.avail_idx++;
    /* Descriptors and ring entry before the index the device reads them by
     * (x86 keeps stores in order; this stops the compiler reordering)... */
    __atomic_store_n(&vq.avail.idx, dev.avail_idx, __ATOMIC_RELEASE);
    /* ...and the index before the notification, which the device may act
     * on from another thread. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    dev.busy = 1;
    wr(VM_QUEUE_NOTIFY, 0);
}

int vblk_needs_reset(void)
{
    return !!(rd(VM_STATUS) & ST_DEVICE_NEEDS_RESET);
}

int vblk_poll(void)
{
    if (!dev.busy)
        return VBLK_S_OK;
    if (__atomic_load_n(&vq.used.idx, __ATOMIC_ACQUIRE) == dev.used_idx)
        return -1;
    uint32_t id = vq.used.ring[dev.used_idx % dev.qsize].id;
    dev.used_idx++;
    dev.busy = 0;
    if (id != 0)
        return 0xfe;
    return *(volatile uint8_t *)&vq.status;
}
