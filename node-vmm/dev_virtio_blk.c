#include "dev_virtio_blk.h"
#include "../common/text.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/fs.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Submission ring: one entry per request slot plus the two eventfd reads,
 * rounded up; the completion ring is twice that, so neither can fill. */
#define BLK_RING_ENTRIES 512u
#define BLK_INLINE_IOV 8u

/* io_uring user_data of the eventfd reads; requests use their slot's
 * address, which is never this small. */
#define TAG_NOTIFY 1u
#define TAG_WAKE 2u

struct blk_req {
    bool busy;
    uint16_t head;
    uint32_t type;
    uint8_t *status;         /* host address of the status byte */
    uint64_t status_gpa;
    uint64_t offset;         /* image offset of the next byte to move */
    uint64_t remaining;      /* bytes still to move */
    uint64_t total;          /* data bytes of the request */
    struct iovec *iov;       /* what is left starts at iov[iov_first] */
    unsigned iov_first;
    unsigned iovcnt;
    struct virtq_span *spans; /* IN: guest ranges the data lands in */
    int held_res;             /* tests: result kept while completions are held */
    struct blk_req *held_next;
    struct iovec inline_iov[BLK_INLINE_IOV];
    struct virtq_span inline_spans[BLK_INLINE_IOV];
};

struct virtio_blk {
    struct virtio_mmio t;
    bool t_ready;
    struct virtio_blk_config cfg;
    char *path;
    char name[32];
    uint8_t config_space[VIRTIO_BLK_CONFIG_SIZE];
    char id[VIRTIO_BLK_ID_BYTES];
    int fd;
    uint64_t capacity; /* sectors */
    struct guest_memory *gm;
    struct vmm_dirty *dirty;
    int vm_fd;
    int notify_fd; /* ioeventfd on QueueNotify */
    int wake_fd;   /* quiesce/unquiesce/stop */
    int irq_fd;    /* irqfd on cfg.gsi */
    bool ioeventfd_on, irqfd_on;
    struct io_uring ring;
    bool ring_on;
    pthread_t thread;
    bool started;
    bool loaded; /* a state was installed: re-signal its pending interrupt */

    /* Device thread only. */
    uint64_t notify_val, wake_val;
    struct virtq_chain chain;

    /* Under t.lock. */
    bool stopping;
    bool quiesced;
    bool scan_pending; /* the available ring may hold requests */
    unsigned draining;
    unsigned inflight; /* requests taken and not yet completed */
    unsigned nr_free;
    uint16_t free_slots[VIRTIO_BLK_QUEUE_MAX];
    struct blk_req req[VIRTIO_BLK_QUEUE_MAX];
    struct virtio_blk_stats stats;
    bool logged_bad_request;
    bool test_hold;         /* tests: finished I/O waits on `held` */
    struct blk_req *held;
};

static void efd_signal(int fd)
{
    uint64_t one = 1;
    while (write(fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

/* --- transport hooks (t.lock held, vCPU threads) --- */

static void blk_notify(void *opaque, uint32_t queue)
{
    (void)queue;
    struct virtio_blk *dev = opaque;
    efd_signal(dev->notify_fd);
}

static void blk_drain(void *opaque)
{
    struct virtio_blk *dev = opaque;
    dev->draining++;
    efd_signal(dev->wake_fd);
    while (dev->inflight > 0)
        pthread_cond_wait(&dev->t.cond, &dev->t.lock);
    dev->draining--;
}

static const struct virtio_mmio_ops blk_transport_ops = {
    .notify = blk_notify,
    .drain = blk_drain,
};

/* --- requests (device thread, t.lock held) --- */

static void bad_request(struct virtio_blk *dev, const char *why)
{
    dev->stats.errors++;
    if (dev->logged_bad_request)
        return;
    dev->logged_bad_request = true;
    text_put_line(stderr,
            "tern-vmm: %s: bad request from the guest (%s); failing it (further ones are "
            "counted, not logged)\n",
            dev->name, why);
}

static void put_status(struct virtio_blk *dev, uint8_t *p, uint64_t gpa, uint8_t v)
{
    if (!p)
        return;
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
    vmm_dirty_mark(dev->dirty, gpa, 1);
}

static void complete_now(struct virtio_blk *dev, uint16_t head, uint8_t *status,
                         uint64_t status_gpa, uint8_t v, uint32_t used_len, unsigned *pushed)
{
    put_status(dev, status, status_gpa, v);
    virtq_push(&dev->t.vq[0], head, status ? used_len : 0);
    (*pushed)++;
}

static struct blk_req *req_alloc(struct virtio_blk *dev)
{
    struct blk_req *rq = &dev->req[dev->free_slots[--dev->nr_free]];
    memset(rq, 0, offsetof(struct blk_req, inline_iov));
    rq->busy = true;
    dev->inflight++;
    return rq;
}

static void req_free(struct virtio_blk *dev, struct blk_req *rq)
{
    if (rq->iov && rq->iov != rq->inline_iov)
        free(rq->iov);
    if (rq->spans && rq->spans != rq->inline_spans)
        free(rq->spans);
    rq->iov = NULL;
    rq->spans = NULL;
    rq->busy = false;
    dev->free_slots[dev->nr_free++] = (uint16_t)(rq - dev->req);
    dev->inflight--;
}

/* Puts the rest of rq's I/O on the submission ring. */
static bool req_queue_io(struct virtio_blk *dev, struct blk_req *rq)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&dev->ring);
    if (!sqe)
        return false;
    switch (rq->type) {
    case VIRTIO_BLK_T_IN:
        io_uring_prep_readv(sqe, dev->fd, rq->iov + rq->iov_first, rq->iovcnt - rq->iov_first,
                            rq->offset);
        break;
    case VIRTIO_BLK_T_OUT:
        io_uring_prep_writev(sqe, dev->fd, rq->iov + rq->iov_first, rq->iovcnt - rq->iov_first,
                             rq->offset);
        break;
    default:
        io_uring_prep_fsync(sqe, dev->fd, IORING_FSYNC_DATASYNC);
        break;
    }
    io_uring_sqe_set_data(sqe, rq);
    return true;
}

static void req_finish(struct virtio_blk *dev, struct blk_req *rq, uint8_t v, unsigned *pushed)
{
    bool ok = v == VIRTIO_BLK_S_OK;
    uint32_t used_len = 1;
    switch (rq->type) {
    case VIRTIO_BLK_T_IN:
        /* Even a failed read may have written part of the buffers. */
        for (unsigned i = 0; i < rq->iovcnt; i++)
            vmm_dirty_mark(dev->dirty, rq->spans[i].gpa, rq->spans[i].len);
        if (ok) {
            dev->stats.reads++;
            dev->stats.bytes_read += rq->total;
            used_len = (uint32_t)(rq->total + 1);
        }
        break;
    case VIRTIO_BLK_T_OUT:
        if (ok) {
            dev->stats.writes++;
            dev->stats.bytes_written += rq->total;
        }
        break;
    default:
        if (ok)
            dev->stats.flushes++;
        break;
    }
    if (!ok)
        dev->stats.errors++;
    put_status(dev, rq->status, rq->status_gpa, v);
    virtq_push(&dev->t.vq[0], rq->head, used_len);
    (*pushed)++;
    req_free(dev, rq);
}

static void req_advance(struct blk_req *rq, uint64_t n)
{
    rq->offset += n;
    rq->remaining -= n;
    while (n > 0 && rq->iov_first < rq->iovcnt) {
        struct iovec *v = &rq->iov[rq->iov_first];
        if (n >= v->iov_len) {
            n -= v->iov_len;
            rq->iov_first++;
        } else {
            v->iov_base = (uint8_t *)v->iov_base + n;
            v->iov_len -= n;
            n = 0;
        }
    }
}

static void req_complete_io(struct virtio_blk *dev, struct blk_req *rq, int res,
                            unsigned *pushed)
{
    if (res == -EINTR || res == -EAGAIN)
        goto again;
    if (rq->type == VIRTIO_BLK_T_FLUSH) {
        if (res < 0)
            text_put_line(stderr, "tern-vmm: %s: flush of %s failed: %s\n", dev->name, dev->path,
                    strerror(-res));
        req_finish(dev, rq, res < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK, pushed);
        return;
    }
    if (res <= 0 || (uint64_t)res > rq->remaining) {
        text_put_line(stderr, "tern-vmm: %s: %s of %s at offset %llu failed: %s\n", dev->name,
                rq->type == VIRTIO_BLK_T_IN ? "read" : "write", dev->path,
                (unsigned long long)rq->offset,
                res < 0 ? strerror(-res) : "unexpected end of file");
        req_finish(dev, rq, VIRTIO_BLK_S_IOERR, pushed);
        return;
    }
    req_advance(rq, (uint64_t)res);
    if (rq->remaining == 0) {
        req_finish(dev, rq, VIRTIO_BLK_S_OK, pushed);
        return;
    }
again:
    /* Short transfer (or interrupted): move the rest. */
    if (!req_queue_io(dev, rq))
        req_finish(dev, rq, VIRTIO_BLK_S_IOERR, pushed);
}

/* Reads or writes: checks the request and starts its I/O. */
static void start_rw(struct virtio_blk *dev, const struct virtq_chain *c, uint32_t type,
                     uint64_t sector, uint8_t *status, uint64_t status_gpa, unsigned *pushed)
{
    bool in = type == VIRTIO_BLK_T_IN;
    uint64_t len = in ? c->writable - 1 : c->readable - VIRTIO_BLK_REQ_HDR_SIZE;
    uint64_t off = in ? 0 : VIRTIO_BLK_REQ_HDR_SIZE;
    if (!in && dev->cfg.read_only) {
        /* Refused, as the RO feature told the driver: not worth a log line. */
        dev->stats.errors++;
        complete_now(dev, c->head, status, status_gpa, VIRTIO_BLK_S_IOERR, 1, pushed);
        return;
    }
    const char *why = NULL;
    if (len % VIRTIO_BLK_SECTOR)
        why = "data length not a multiple of 512";
    else if (sector > dev->capacity || len / VIRTIO_BLK_SECTOR > dev->capacity - sector)
        why = "sectors beyond the end of the disk";
    if (why) {
        bad_request(dev, why);
        complete_now(dev, c->head, status, status_gpa, VIRTIO_BLK_S_IOERR, 1, pushed);
        return;
    }
    if (len == 0) {
        complete_now(dev, c->head, status, status_gpa, VIRTIO_BLK_S_OK, 1, pushed);
        return;
    }

    struct blk_req *rq = req_alloc(dev);
    rq->head = c->head;
    rq->type = type;
    rq->status = status;
    rq->status_gpa = status_gpa;
    rq->offset = sector * VIRTIO_BLK_SECTOR;
    rq->remaining = rq->total = len;
    unsigned n = virtq_chain_iov_count(c, in, off, len);
    rq->iov = rq->inline_iov;
    rq->spans = rq->inline_spans;
    if (n > BLK_INLINE_IOV) {
        rq->iov = malloc(n * sizeof(*rq->iov));
        rq->spans = malloc(n * sizeof(*rq->spans));
    }
    int got = (rq->iov && rq->spans)
                  ? virtq_chain_iov(c, in, off, len, rq->iov, rq->spans, n)
                  : -1;
    if (got < 0) {
        /* Out of memory (chain checked already); IN data nowhere written. */
        rq->iovcnt = 0;
        req_finish(dev, rq, VIRTIO_BLK_S_IOERR, pushed);
        return;
    }
    rq->iovcnt = (unsigned)got;
    if (!req_queue_io(dev, rq))
        req_finish(dev, rq, VIRTIO_BLK_S_IOERR, pushed);
}

static void handle_chain(struct virtio_blk *dev, const struct virtq_chain *c, unsigned *pushed)
{
    if (c->writable == 0) {
        bad_request(dev, "no device-writable status byte");
        complete_now(dev, c->head, NULL, 0, 0, 0, pushed);
        return;
    }
    /* The status is the last byte of the last (writable) buffer. */
    const struct virtq_seg *last = &c->seg[c->nr - 1];
    uint8_t *status = last->host ? last->host + last->len - 1 : NULL;
    uint64_t status_gpa = last->gpa + last->len - 1;
    if (c->bad) {
        bad_request(dev, c->bad);
        complete_now(dev, c->head, status, status_gpa, VIRTIO_BLK_S_IOERR, 1, pushed);
        return;
    }
    uint8_t hdr[VIRTIO_BLK_REQ_HDR_SIZE];
    if (c->readable < sizeof(hdr) || virtq_chain_read(c, 0, hdr, sizeof(hdr)) != sizeof(hdr)) {
        bad_request(dev, "request header shorter than 16 bytes");
        complete_now(dev, c->head, status, status_gpa, VIRTIO_BLK_S_IOERR, 1, pushed);
        return;
    }
    uint32_t type;
    uint64_t sector;
    memcpy(&type, hdr, 4);
    memcpy(&sector, hdr + 8, 8);
    type = le32toh(type);
    sector = le64toh(sector);

    switch (type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT:
        start_rw(dev, c, type, sector, status, status_gpa, pushed);
        return;
    case VIRTIO_BLK_T_FLUSH: {
        struct blk_req *rq = req_alloc(dev);
        rq->head = c->head;
        rq->type = type;
        rq->status = status;
        rq->status_gpa = status_gpa;
        if (!req_queue_io(dev, rq))
            req_finish(dev, rq, VIRTIO_BLK_S_IOERR, pushed);
        return;
    }
    case VIRTIO_BLK_T_GET_ID: {
        uint64_t room = c->writable - 1;
        size_t n = room < VIRTIO_BLK_ID_BYTES ? (size_t)room : VIRTIO_BLK_ID_BYTES;
        n = virtq_chain_write(c, dev->dirty, 0, dev->id, n);
        complete_now(dev, c->head, status, status_gpa, VIRTIO_BLK_S_OK, (uint32_t)n + 1, pushed);
        return;
    }
    default:
        dev->stats.errors++;
        complete_now(dev, c->head, status, status_gpa, VIRTIO_BLK_S_UNSUPP, 1, pushed);
        return;
    }
}

static bool may_take(const struct virtio_blk *dev)
{
    return !dev->stopping && !dev->quiesced && dev->draining == 0 &&
           virtio_mmio_queue_live(&dev->t, 0);
}

/* Takes available chains while there are free slots. */
static void take_requests(struct virtio_blk *dev, unsigned *pushed)
{
    while (dev->scan_pending && may_take(dev) && dev->nr_free > 0) {
        int r = virtq_pop(&dev->t.vq[0], &dev->chain);
        if (r == VIRTQ_EMPTY) {
            dev->scan_pending = false;
            return;
        }
        if (r == VIRTQ_BROKEN) {
            virtio_mmio_queue_broken(&dev->t, 0);
            dev->scan_pending = false;
            return;
        }
        handle_chain(dev, &dev->chain, pushed);
    }
}

/* --- the device thread --- */

static void arm_read(struct virtio_blk *dev, int fd, uint64_t *buf, uint64_t tag)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&dev->ring);
    if (!sqe) {
        /* Cannot happen: the ring has room for every slot and both reads. */
        text_put_line(stderr, "tern-vmm: %s: io_uring submission ring full\n", dev->name);
        return;
    }
    io_uring_prep_read(sqe, fd, buf, sizeof(*buf), 0);
    io_uring_sqe_set_data64(sqe, tag);
}

/* Handles every completion waiting on the ring. t.lock held. */
static void reap(struct virtio_blk *dev, unsigned *pushed)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&dev->ring, head, cqe)
    {
        n++;
        uint64_t tag = io_uring_cqe_get_data64(cqe);
        if (tag == TAG_NOTIFY) {
            dev->scan_pending = true;
            arm_read(dev, dev->notify_fd, &dev->notify_val, TAG_NOTIFY);
        } else if (tag == TAG_WAKE) {
            arm_read(dev, dev->wake_fd, &dev->wake_val, TAG_WAKE);
        } else if (dev->test_hold) {
            struct blk_req *rq = (struct blk_req *)(uintptr_t)tag;
            rq->held_res = cqe->res;
            rq->held_next = dev->held;
            dev->held = rq;
        } else {
            req_complete_io(dev, (struct blk_req *)(uintptr_t)tag, cqe->res, pushed);
        }
    }
    io_uring_cq_advance(&dev->ring, n);
}

static void *blk_thread(void *arg)
{
    struct virtio_blk *dev = arg;
    bool logged_enter_error = false;
    arm_read(dev, dev->notify_fd, &dev->notify_val, TAG_NOTIFY);
    arm_read(dev, dev->wake_fd, &dev->wake_val, TAG_WAKE);

    pthread_mutex_lock(&dev->t.lock);
    if (dev->loaded && dev->t.interrupt_status) {
        /* The source signalled this interrupt; KVM may not have delivered
         * it before the VM state was captured. A spurious one is harmless
         * (the driver reads InterruptStatus), a lost one is not. */
        virtio_mmio_interrupt(&dev->t, 0);
    }
    unsigned pushed = 0;
    for (;;) {
        while (!dev->test_hold && dev->held) {
            struct blk_req *rq = dev->held;
            dev->held = rq->held_next;
            req_complete_io(dev, rq, rq->held_res, &pushed);
        }
        take_requests(dev, &pushed);
        if (pushed && virtq_needs_interrupt(&dev->t.vq[0]))
            virtio_mmio_interrupt(&dev->t, VIRTIO_MMIO_INT_VRING);
        pushed = 0;
        /* Waiters (quiesce, reset, stop) look at inflight. */
        pthread_cond_broadcast(&dev->t.cond);
        if (dev->stopping && dev->inflight == 0)
            break;
        pthread_mutex_unlock(&dev->t.lock);

        int ret = io_uring_submit_and_wait(&dev->ring, 1);
        if (ret < 0 && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN) {
            if (!logged_enter_error) {
                logged_enter_error = true;
                text_put_line(stderr, "tern-vmm: %s: io_uring_submit_and_wait: %s\n", dev->name,
                        strerror(-ret));
            }
            struct timespec ms = {.tv_sec = 0, .tv_nsec = 1000000};
            nanosleep(&ms, NULL);
        }

        pthread_mutex_lock(&dev->t.lock);
        reap(dev, &pushed);
    }
    pthread_mutex_unlock(&dev->t.lock);
    return NULL;
}

/* --- life cycle --- */

static int open_image(struct virtio_blk *dev, struct tern_err *err)
{
    const char *path = dev->path;
    int flags = (dev->cfg.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    dev->fd = open(path, flags);
    if (dev->fd < 0)
        return tern_err_errno(err, errno, "%s: cannot open image %s%s", dev->name, path,
                              dev->cfg.read_only ? " (read-only)" : " for reading and writing");
    struct stat st;
    if (fstat(dev->fd, &st) < 0)
        return tern_err_errno(err, errno, "%s: cannot stat image %s", dev->name, path);
    uint64_t size;
    if (S_ISREG(st.st_mode)) {
        size = (uint64_t)st.st_size;
    } else if (S_ISBLK(st.st_mode)) {
        if (ioctl(dev->fd, BLKGETSIZE64, &size) < 0)
            return tern_err_errno(err, errno, "%s: cannot get the size of block device %s",
                                  dev->name, path);
    } else {
        return tern_err_set(err, "%s: image %s is not a regular file or block device",
                            dev->name, path);
    }
    if (size == 0)
        return tern_err_set(err, "%s: image %s is empty", dev->name, path);
    if (size % VIRTIO_BLK_SECTOR)
        return tern_err_set(err, "%s: image %s is %llu bytes, not a multiple of 512", dev->name,
                            path, (unsigned long long)size);
    dev->capacity = size / VIRTIO_BLK_SECTOR;
    return 0;
}

static void fill_config(struct virtio_blk *dev)
{
    uint8_t *c = dev->config_space;
    uint64_t cap = htole64(dev->capacity);
    uint32_t seg_max = htole32(VIRTIO_BLK_SEG_MAX);
    uint32_t blk_size = htole32(VIRTIO_BLK_SECTOR);
    uint16_t nq = htole16(1);
    memset(c, 0, VIRTIO_BLK_CONFIG_SIZE);
    memcpy(c + VIRTIO_BLK_CFG_CAPACITY, &cap, 8);
    memcpy(c + VIRTIO_BLK_CFG_SEG_MAX, &seg_max, 4);
    memcpy(c + VIRTIO_BLK_CFG_BLK_SIZE, &blk_size, 4);
    memcpy(c + VIRTIO_BLK_CFG_NUM_QUEUES, &nq, 2);
}

static uint64_t offered_features(const struct virtio_blk_config *cfg)
{
    uint64_t f = VIRTIO_F_VERSION_1 | VIRTIO_F_INDIRECT_DESC | VIRTIO_BLK_F_SEG_MAX |
                 VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_FLUSH;
    if (cfg->read_only)
        f |= VIRTIO_BLK_F_RO;
    return f;
}

static int register_kvm(struct virtio_blk *dev, struct tern_err *err)
{
    uint64_t notify = dev->cfg.mmio_base + VIRTIO_MMIO_QUEUE_NOTIFY;
    struct kvm_ioeventfd ioev = {.addr = notify, .len = 4, .fd = dev->notify_fd};
    if (ioctl(dev->vm_fd, KVM_IOEVENTFD, &ioev) < 0)
        return tern_err_errno(err, errno, "%s (%s): KVM_IOEVENTFD on queue notify 0x%llx",
                              dev->name, dev->path, (unsigned long long)notify);
    dev->ioeventfd_on = true;
    struct kvm_irqfd irqfd = {.fd = (uint32_t)dev->irq_fd, .gsi = dev->cfg.gsi};
    if (ioctl(dev->vm_fd, KVM_IRQFD, &irqfd) < 0)
        return tern_err_errno(err, errno, "%s (%s): KVM_IRQFD on GSI %u", dev->name, dev->path,
                              dev->cfg.gsi);
    dev->irqfd_on = true;
    return 0;
}

int virtio_blk_create(struct virtio_blk **out, const struct virtio_blk_config *cfg,
                      struct guest_memory *gm, int vm_fd, struct vmm_dirty *dirty,
                      struct tern_err *err)
{
    *out = NULL;
    struct virtio_blk *dev = calloc(1, sizeof(*dev));
    if (!dev)
        return tern_err_set(err, "disk%u: out of memory", cfg->index);
    dev->fd = dev->notify_fd = dev->wake_fd = dev->irq_fd = -1;
    dev->cfg = *cfg;
    dev->gm = gm;
    dev->dirty = dirty;
    dev->vm_fd = vm_fd;
    snprintf(dev->name, sizeof(dev->name), "disk%u", cfg->index);
    dev->path = strdup(cfg->path ? cfg->path : "");
    dev->cfg.path = dev->path;
    if (!dev->path) {
        free(dev);
        return tern_err_set(err, "disk%u: out of memory", cfg->index);
    }
    if (!cfg->path || !cfg->path[0]) {
        tern_err_set(err, "%s: no image path given", dev->name);
        goto fail;
    }
    if (cfg->mmio_base & (VIRTIO_MMIO_WINDOW - 1)) {
        tern_err_set(err, "%s (%s): MMIO base 0x%llx is not 4 KiB aligned", dev->name,
                     dev->path, (unsigned long long)cfg->mmio_base);
        goto fail;
    }
    if (open_image(dev, err) < 0)
        goto fail;

    dev->notify_fd = eventfd(0, EFD_CLOEXEC);
    dev->wake_fd = eventfd(0, EFD_CLOEXEC);
    dev->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (dev->notify_fd < 0 || dev->wake_fd < 0 || dev->irq_fd < 0) {
        tern_err_errno(err, errno, "%s (%s): eventfd", dev->name, dev->path);
        goto fail;
    }
    int ret = io_uring_queue_init(BLK_RING_ENTRIES, &dev->ring, 0);
    if (ret < 0) {
        tern_err_errno(err, -ret,
                       "%s (%s): cannot set up io_uring (it may be disabled: see "
                       "/proc/sys/kernel/io_uring_disabled, or blocked by a seccomp filter)",
                       dev->name, dev->path);
        goto fail;
    }
    dev->ring_on = true;

    fill_config(dev);
    /* Shown by Linux as /sys/block/vdX/serial: stable across migration. */
    char id[VIRTIO_BLK_ID_BYTES + 1] = {0}; /* NUL-padded, nothing else */
    snprintf(id, sizeof(id), "tern-disk%u", cfg->index);
    memcpy(dev->id, id, VIRTIO_BLK_ID_BYTES);

    struct virtio_mmio_params p = {
        .name = dev->name, .base = cfg->mmio_base, .device_id = VIRTIO_ID_BLOCK,
        .device_features = offered_features(cfg), .nr_queues = 1,
        .queue_num_max = VIRTIO_BLK_QUEUE_MAX, .config = dev->config_space,
        .config_len = VIRTIO_BLK_CONFIG_SIZE, .gm = gm, .dirty = dirty, .irq_fd = dev->irq_fd,
        .ops = &blk_transport_ops, .opaque = dev};
    if (virtio_mmio_init(&dev->t, &p, err) < 0)
        goto fail;
    dev->t_ready = true;

    for (unsigned i = 0; i < VIRTIO_BLK_QUEUE_MAX; i++)
        dev->free_slots[i] = (uint16_t)(VIRTIO_BLK_QUEUE_MAX - 1 - i);
    dev->nr_free = VIRTIO_BLK_QUEUE_MAX;

    if (vm_fd >= 0 && register_kvm(dev, err) < 0)
        goto fail;
    *out = dev;
    return 0;
fail:
    virtio_blk_destroy(dev);
    return -1;
}

struct mmio_device *virtio_blk_mmio(struct virtio_blk *dev)
{
    return &dev->t.mmio;
}

int virtio_blk_cmdline(const struct virtio_blk *dev, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "virtio_mmio.device=4K@0x%llx:%u",
                     (unsigned long long)dev->cfg.mmio_base, dev->cfg.gsi);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

int virtio_blk_start(struct virtio_blk *dev, struct tern_err *err)
{
    if (dev->started)
        return tern_err_set(err, "%s: already started", dev->name);
    pthread_mutex_lock(&dev->t.lock);
    dev->scan_pending = true;
    pthread_mutex_unlock(&dev->t.lock);
    /* The thread takes no signals: vCPU kicks and the main loop's
     * signalfd must not land here. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&dev->thread, NULL, blk_thread, dev);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return tern_err_errno(err, rc, "%s: starting the device thread", dev->name);
    dev->started = true;
    return 0;
}

int virtio_blk_quiesce(struct virtio_blk *dev, struct tern_err *err)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += VIRTIO_BLK_QUIESCE_TIMEOUT_MS / 1000;
    deadline.tv_nsec += (long)(VIRTIO_BLK_QUIESCE_TIMEOUT_MS % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&dev->t.lock);
    dev->quiesced = true;
    while (dev->inflight > 0) {
        int rc = pthread_cond_timedwait(&dev->t.cond, &dev->t.lock, &deadline);
        if (rc == ETIMEDOUT && dev->inflight > 0) {
            unsigned n = dev->inflight;
            pthread_mutex_unlock(&dev->t.lock);
            return tern_err_set(err, "%s (%s): %u requests still in flight after %u ms",
                                dev->name, dev->path, n, VIRTIO_BLK_QUIESCE_TIMEOUT_MS);
        }
    }
    pthread_mutex_unlock(&dev->t.lock);
    return 0;
}

void virtio_blk_unquiesce(struct virtio_blk *dev)
{
    pthread_mutex_lock(&dev->t.lock);
    dev->quiesced = false;
    dev->scan_pending = true;
    pthread_mutex_unlock(&dev->t.lock);
    efd_signal(dev->wake_fd);
}

void virtio_blk_state_get(struct virtio_blk *dev, struct virtio_blk_state *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_lock(&dev->t.lock);
    virtio_mmio_state_get(&dev->t, &s->transport);
    pthread_mutex_unlock(&dev->t.lock);
    s->index = dev->cfg.index;
    s->capacity = dev->capacity;
    s->read_only = dev->cfg.read_only;
}

void virtio_blk_state_encode(const struct virtio_blk_state *s, struct rec_buf *b)
{
    rec_begin(b, VIRTIO_BLK_STATE_RECORD, VIRTIO_BLK_STATE_VERSION, 0);
    rec_put_u32(b, s->index);
    rec_put_u64(b, s->capacity);
    rec_put_u8(b, s->read_only);
    virtio_mmio_state_put(&s->transport, b);
    rec_end(b);
}

int virtio_blk_state_decode(const struct rec_header *h, struct rec_reader *payload,
                            struct virtio_blk_state *s, struct tern_err *err)
{
    memset(s, 0, sizeof(*s));
    if (h->type != VIRTIO_BLK_STATE_RECORD)
        return tern_err_set(err, "record type 0x%x is not a virtio-blk state (0x%x)", h->type,
                            VIRTIO_BLK_STATE_RECORD);
    if (h->version != VIRTIO_BLK_STATE_VERSION)
        return tern_err_set(err, "virtio-blk state version %u is not supported (this build "
                                 "reads version %u)",
                            h->version, VIRTIO_BLK_STATE_VERSION);
    rec_get_u32(payload, &s->index);
    rec_get_u64(payload, &s->capacity);
    rec_get_u8(payload, &s->read_only);
    if (virtio_mmio_state_read(payload, &s->transport, err) < 0)
        return -1;
    return rec_finish(payload, "virtio-blk state v1", err);
}

int virtio_blk_state_peek_index(const struct rec_reader *payload, uint32_t *index,
                                struct tern_err *err)
{
    struct rec_reader r = *payload;
    if (rec_get_u32(&r, index) < 0)
        return tern_err_set(err, "virtio-blk state record too short for its disk index");
    return 0;
}

void virtio_blk_state_save(struct virtio_blk *dev, struct rec_buf *b)
{
    struct virtio_blk_state s;
    virtio_blk_state_get(dev, &s);
    virtio_blk_state_encode(&s, b);
}

int virtio_blk_state_load(struct virtio_blk *dev, const struct rec_header *h,
                          struct rec_reader *payload, struct tern_err *err)
{
    struct virtio_blk_state s;
    if (dev->started)
        return tern_err_set(err, "%s: cannot load a state into a running device", dev->name);
    if (virtio_blk_state_decode(h, payload, &s, err) < 0)
        return tern_err_prefix(err, "%s (%s)", dev->name, dev->path);
    if (s.index != dev->cfg.index)
        return tern_err_set(err, "%s (%s): state is for disk %u", dev->name, dev->path,
                            s.index);
    if (s.read_only > 1)
        return tern_err_set(err, "%s (%s): state: read-only flag %u is not a boolean",
                            dev->name, dev->path, s.read_only);
    if (s.capacity != dev->capacity)
        return tern_err_set(err,
                            "%s (%s): state is for a disk of %llu sectors, this image has %llu",
                            dev->name, dev->path, (unsigned long long)s.capacity,
                            (unsigned long long)dev->capacity);
    if ((bool)s.read_only != dev->cfg.read_only)
        return tern_err_set(err, "%s (%s): state is for a %s disk, this one is %s", dev->name,
                            dev->path, s.read_only ? "read-only" : "writable",
                            dev->cfg.read_only ? "read-only" : "writable");
    pthread_mutex_lock(&dev->t.lock);
    if (virtio_mmio_state_check(&dev->t, &s.transport, err) < 0) {
        pthread_mutex_unlock(&dev->t.lock);
        return tern_err_prefix(err, "%s (%s): state", dev->name, dev->path);
    }
    virtio_mmio_state_apply(&dev->t, &s.transport);
    dev->loaded = true;
    pthread_mutex_unlock(&dev->t.lock);
    return 0;
}

void virtio_blk_destroy(struct virtio_blk *dev)
{
    if (!dev)
        return;
    if (dev->started) {
        pthread_mutex_lock(&dev->t.lock);
        dev->stopping = true;
        dev->test_hold = false;
        pthread_mutex_unlock(&dev->t.lock);
        efd_signal(dev->wake_fd);
        pthread_join(dev->thread, NULL);
        dev->started = false;
    }
    if (dev->ioeventfd_on) {
        struct kvm_ioeventfd ioev = {.addr = dev->cfg.mmio_base + VIRTIO_MMIO_QUEUE_NOTIFY,
                                     .len = 4, .fd = dev->notify_fd,
                                     .flags = KVM_IOEVENTFD_FLAG_DEASSIGN};
        (void)ioctl(dev->vm_fd, KVM_IOEVENTFD, &ioev);
    }
    if (dev->irqfd_on) {
        struct kvm_irqfd irqfd = {.fd = (uint32_t)dev->irq_fd, .gsi = dev->cfg.gsi,
                                  .flags = KVM_IRQFD_FLAG_DEASSIGN};
        (void)ioctl(dev->vm_fd, KVM_IRQFD, &irqfd);
    }
    if (dev->ring_on)
        io_uring_queue_exit(&dev->ring);
    int fds[] = {dev->fd, dev->notify_fd, dev->wake_fd, dev->irq_fd};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (dev->t_ready)
        virtio_mmio_destroy(&dev->t);
    free(dev->path);
    free(dev);
}

void virtio_blk_get_stats(struct virtio_blk *dev, struct virtio_blk_stats *out)
{
    pthread_mutex_lock(&dev->t.lock);
    *out = dev->stats;
    pthread_mutex_unlock(&dev->t.lock);
}

uint64_t virtio_blk_capacity(const struct virtio_blk *dev)
{
    return dev->capacity;
}

int virtio_blk_image_fd(const struct virtio_blk *dev)
{
    return dev->fd;
}

void virtio_blk_test_notify(struct virtio_blk *dev)
{
    efd_signal(dev->notify_fd);
}

uint64_t virtio_blk_interrupts(struct virtio_blk *dev)
{
    return atomic_load(&dev->t.interrupts);
}

uint32_t virtio_blk_status(struct virtio_blk *dev)
{
    pthread_mutex_lock(&dev->t.lock);
    uint32_t s = dev->t.status;
    pthread_mutex_unlock(&dev->t.lock);
    return s;
}

void virtio_blk_test_hold_completions(struct virtio_blk *dev, bool hold)
{
    pthread_mutex_lock(&dev->t.lock);
    dev->test_hold = hold;
    pthread_mutex_unlock(&dev->t.lock);
    efd_signal(dev->wake_fd);
}

unsigned virtio_blk_test_inflight(struct virtio_blk *dev)
{
    pthread_mutex_lock(&dev->t.lock);
    unsigned n = dev->inflight;
    pthread_mutex_unlock(&dev->t.lock);
    return n;
}
