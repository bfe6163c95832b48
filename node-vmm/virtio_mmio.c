#include "virtio_mmio.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void mmio_read(struct mmio_device *dev, uint64_t offset, uint8_t *data, unsigned size);
static void mmio_write(struct mmio_device *dev, uint64_t offset, const uint8_t *data,
                       unsigned size);

static const struct mmio_device_ops virtio_mmio_ops = {
    .read = mmio_read,
    .write = mmio_write,
};

int virtio_mmio_init(struct virtio_mmio *t, const struct virtio_mmio_params *p,
                     struct tern_err *err)
{
    memset(t, 0, sizeof(*t));
    if (!(p->device_features & VIRTIO_F_VERSION_1))
        return tern_err_set(err, "%s: virtio-mmio device must offer VIRTIO_F_VERSION_1", p->name);
    if (p->nr_queues == 0 || p->nr_queues > VIRTIO_MMIO_MAX_QUEUES)
        return tern_err_set(err, "%s: %u queues (1..%u supported)", p->name, p->nr_queues,
                            VIRTIO_MMIO_MAX_QUEUES);
    uint32_t m = p->queue_num_max;
    if (m == 0 || m > VIRTQ_MAX_SIZE || (m & (m - 1)))
        return tern_err_set(err, "%s: maximum queue size %u is not a power of two <= %u",
                            p->name, m, VIRTQ_MAX_SIZE);
    if (p->config_len > VIRTIO_MMIO_WINDOW - VIRTIO_MMIO_CONFIG)
        return tern_err_set(err, "%s: config space of %u bytes does not fit the window",
                            p->name, p->config_len);
    if (p->base & (VIRTIO_MMIO_WINDOW - 1))
        return tern_err_set(err, "%s: MMIO base 0x%llx is not 4 KiB aligned", p->name,
                            (unsigned long long)p->base);

    snprintf(t->name, sizeof(t->name), "%s", p->name);
    t->device_id = p->device_id;
    t->device_features = p->device_features;
    t->nr_queues = p->nr_queues;
    t->queue_num_max = m;
    t->config = p->config;
    t->config_len = p->config_len;
    t->gm = p->gm;
    t->dirty = p->dirty;
    t->irq_fd = p->irq_fd;
    t->ops = p->ops;
    t->opaque = p->opaque;
    for (unsigned q = 0; q < VIRTIO_MMIO_MAX_QUEUES; q++) {
        t->vq[q].gm = p->gm;
        t->vq[q].dirty = p->dirty;
    }
    t->mmio = (struct mmio_device){.name = t->name, .base = p->base, .len = VIRTIO_MMIO_WINDOW,
                                   .ops = &virtio_mmio_ops, .opaque = t};

    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cond, &ca);
    pthread_condattr_destroy(&ca);
    return 0;
}

void virtio_mmio_destroy(struct virtio_mmio *t)
{
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
}

void virtio_mmio_interrupt(struct virtio_mmio *t, uint32_t bits)
{
    t->interrupt_status |= bits;
    atomic_fetch_add(&t->interrupts, 1);
    if (t->irq_fd < 0)
        return;
    uint64_t one = 1;
    /* An eventfd write only fails if the counter would overflow, which an
     * irqfd (KVM consumes it) never reaches. */
    while (write(t->irq_fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

void virtio_mmio_queue_broken(struct virtio_mmio *t, unsigned q)
{
    if (t->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET)
        return;
    if (!t->logged_broken) {
        t->logged_broken = true;
        fprintf(stderr, "tern-vmm: %s: queue %u is malformed (%s); device needs reset\n",
                t->name, q, t->vq[q].error);
    }
    t->status |= VIRTIO_STATUS_DEVICE_NEEDS_RESET;
    /* The spec asks for a configuration change notification with it. */
    if (t->status & VIRTIO_STATUS_DRIVER_OK)
        virtio_mmio_interrupt(t, VIRTIO_MMIO_INT_CONFIG);
}

bool virtio_mmio_queue_live(const struct virtio_mmio *t, unsigned q)
{
    uint32_t bad = VIRTIO_STATUS_FAILED | VIRTIO_STATUS_DEVICE_NEEDS_RESET;
    return q < t->nr_queues && (t->status & VIRTIO_STATUS_DRIVER_OK) && !(t->status & bad) &&
           t->vq[q].ready && !t->vq[q].broken;
}

bool virtio_mmio_has_feature(const struct virtio_mmio *t, uint64_t bits)
{
    return (t->driver_features & bits) == bits;
}

static void put32(uint8_t *data, unsigned size, uint32_t v)
{
    memset(data, 0, size);
    for (unsigned i = 0; i < size && i < 4; i++)
        data[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *data)
{
    return (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
           (uint32_t)data[3] << 24;
}

static struct virtq *selected(struct virtio_mmio *t)
{
    return t->queue_sel < t->nr_queues ? &t->vq[t->queue_sel] : NULL;
}

static uint32_t reg_read(struct virtio_mmio *t, uint64_t off)
{
    struct virtq *vq = selected(t);
    switch (off) {
    case VIRTIO_MMIO_MAGIC_VALUE:
        return VIRTIO_MMIO_MAGIC;
    case VIRTIO_MMIO_VERSION_REG:
        return VIRTIO_MMIO_VERSION;
    case VIRTIO_MMIO_DEVICE_ID:
        return t->device_id;
    case VIRTIO_MMIO_VENDOR_ID:
        return VIRTIO_MMIO_VENDOR_TERN;
    case VIRTIO_MMIO_DEVICE_FEATURES:
        if (t->device_features_sel > 1)
            return 0;
        return (uint32_t)(t->device_features >> (32 * t->device_features_sel));
    case VIRTIO_MMIO_QUEUE_NUM_MAX:
        return vq ? t->queue_num_max : 0;
    case VIRTIO_MMIO_QUEUE_NUM:
        return vq ? vq->num : 0;
    case VIRTIO_MMIO_QUEUE_READY:
        return vq ? vq->ready : 0;
    case VIRTIO_MMIO_INTERRUPT_STATUS:
        return t->interrupt_status;
    case VIRTIO_MMIO_STATUS:
        return t->status;
    case VIRTIO_MMIO_QUEUE_DESC_LOW:
        return vq ? (uint32_t)vq->desc_gpa : 0;
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        return vq ? (uint32_t)(vq->desc_gpa >> 32) : 0;
    case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
        return vq ? (uint32_t)vq->avail_gpa : 0;
    case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
        return vq ? (uint32_t)(vq->avail_gpa >> 32) : 0;
    case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
        return vq ? (uint32_t)vq->used_gpa : 0;
    case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
        return vq ? (uint32_t)(vq->used_gpa >> 32) : 0;
    case VIRTIO_MMIO_SHM_LEN_LOW:
    case VIRTIO_MMIO_SHM_LEN_HIGH:
    case VIRTIO_MMIO_SHM_BASE_LOW:
    case VIRTIO_MMIO_SHM_BASE_HIGH:
        /* No shared memory regions: every region reads as length -1. */
        return 0xffffffffu;
    case VIRTIO_MMIO_CONFIG_GENERATION:
        return t->config_generation;
    default:
        return 0;
    }
}

/* FEATURES_OK is accepted only for a subset of what we offer that includes
 * VERSION_1: legacy drivers cannot drive this device. */
static bool features_acceptable(const struct virtio_mmio *t)
{
    return (t->driver_features & ~t->device_features) == 0 &&
           (t->driver_features & VIRTIO_F_VERSION_1);
}

static void device_reset(struct virtio_mmio *t)
{
    if (t->ops && t->ops->drain)
        t->ops->drain(t->opaque);
    t->driver_features = 0;
    t->device_features_sel = 0;
    t->driver_features_sel = 0;
    t->queue_sel = 0;
    t->status = 0;
    t->interrupt_status = 0;
    t->shm_sel = 0;
    t->logged_broken = false;
    for (unsigned q = 0; q < VIRTIO_MMIO_MAX_QUEUES; q++)
        virtq_reset(&t->vq[q]);
}

static void status_write(struct virtio_mmio *t, uint32_t v)
{
    if (v == 0) {
        device_reset(t);
        return;
    }
    uint32_t old = t->status;
    /* DEVICE_NEEDS_RESET is the device's to set; unknown bits are dropped. */
    v &= VIRTIO_STATUS_ALL & ~VIRTIO_STATUS_DEVICE_NEEDS_RESET;
    if ((v & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK) &&
        !features_acceptable(t))
        v &= ~VIRTIO_STATUS_FEATURES_OK;
    if ((v & VIRTIO_STATUS_DRIVER_OK) && !(v & VIRTIO_STATUS_FEATURES_OK))
        v &= ~VIRTIO_STATUS_DRIVER_OK;
    t->status = v | (old & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    if ((t->status & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK) && t->ops &&
        t->ops->notify) {
        /* Buffers made available before DRIVER_OK are taken now. */
        for (unsigned q = 0; q < t->nr_queues; q++)
            t->ops->notify(t->opaque, q);
    }
}

static void queue_ready_write(struct virtio_mmio *t, struct virtq *vq, uint32_t v)
{
    if (!v) {
        if (vq->ready) {
            if (t->ops && t->ops->drain)
                t->ops->drain(t->opaque);
            vq->ready = false;
        }
        return;
    }
    if (vq->ready)
        return;
    struct tern_err err;
    if (virtq_configure(vq, t->gm, t->dirty, t->queue_num_max, &err) < 0) {
        size_t n = strnlen(err.msg, sizeof(vq->error) - 1);
        memcpy(vq->error, err.msg, n);
        vq->error[n] = '\0';
        vq->broken = true;
        virtio_mmio_queue_broken(t, (unsigned)(vq - t->vq));
        return;
    }
    vq->indirect = virtio_mmio_has_feature(t, VIRTIO_F_INDIRECT_DESC);
    vq->last_avail = 0;
    vq->used_idx = 0;
    vq->broken = false;
    vq->ready = true;
}

static void set_low(uint64_t *r, uint32_t v)
{
    *r = (*r & 0xffffffff00000000ull) | v;
}

static void set_high(uint64_t *r, uint32_t v)
{
    *r = (*r & 0xffffffffull) | (uint64_t)v << 32;
}

static void reg_write(struct virtio_mmio *t, uint64_t off, uint32_t v)
{
    struct virtq *vq = selected(t);
    /* Queue layout registers only change while the queue is off. */
    struct virtq *cfg = vq && !vq->ready ? vq : NULL;
    switch (off) {
    case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
        t->device_features_sel = v;
        break;
    case VIRTIO_MMIO_DRIVER_FEATURES:
        if (t->driver_features_sel > 1 || (t->status & VIRTIO_STATUS_FEATURES_OK))
            break;
        if (t->driver_features_sel == 0)
            set_low(&t->driver_features, v);
        else
            set_high(&t->driver_features, v);
        break;
    case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
        t->driver_features_sel = v;
        break;
    case VIRTIO_MMIO_QUEUE_SEL:
        t->queue_sel = v;
        break;
    case VIRTIO_MMIO_QUEUE_NUM:
        if (cfg)
            cfg->num = v;
        break;
    case VIRTIO_MMIO_QUEUE_READY:
        if (vq)
            queue_ready_write(t, vq, v);
        break;
    case VIRTIO_MMIO_QUEUE_NOTIFY:
        if (v < t->nr_queues && t->ops && t->ops->notify)
            t->ops->notify(t->opaque, v);
        break;
    case VIRTIO_MMIO_INTERRUPT_ACK:
        t->interrupt_status &= ~v;
        break;
    case VIRTIO_MMIO_STATUS:
        status_write(t, v);
        break;
    case VIRTIO_MMIO_QUEUE_DESC_LOW:
        if (cfg)
            set_low(&cfg->desc_gpa, v);
        break;
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        if (cfg)
            set_high(&cfg->desc_gpa, v);
        break;
    case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
        if (cfg)
            set_low(&cfg->avail_gpa, v);
        break;
    case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
        if (cfg)
            set_high(&cfg->avail_gpa, v);
        break;
    case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
        if (cfg)
            set_low(&cfg->used_gpa, v);
        break;
    case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
        if (cfg)
            set_high(&cfg->used_gpa, v);
        break;
    case VIRTIO_MMIO_SHM_SEL:
        t->shm_sel = v;
        break;
    default:
        break; /* read-only or unknown: ignored */
    }
}

static void mmio_read(struct mmio_device *dev, uint64_t offset, uint8_t *data, unsigned size)
{
    struct virtio_mmio *t = dev->opaque;
    memset(data, 0, size);
    if (offset >= VIRTIO_MMIO_CONFIG) {
        /* Config space: any width; bytes past the end read as zero. The
         * contents never change, so no generation dance is needed. */
        uint64_t c = offset - VIRTIO_MMIO_CONFIG;
        for (unsigned i = 0; i < size; i++)
            if (c + i < t->config_len)
                data[i] = t->config[c + i];
        return;
    }
    if (size != 4 || (offset & 3)) {
        atomic_fetch_add(&t->bad_accesses, 1);
        return;
    }
    pthread_mutex_lock(&t->lock);
    put32(data, size, reg_read(t, offset));
    pthread_mutex_unlock(&t->lock);
}

static void mmio_write(struct mmio_device *dev, uint64_t offset, const uint8_t *data,
                       unsigned size)
{
    struct virtio_mmio *t = dev->opaque;
    if (offset >= VIRTIO_MMIO_CONFIG)
        return; /* no writable config fields are offered */
    if (size != 4 || (offset & 3)) {
        atomic_fetch_add(&t->bad_accesses, 1);
        return;
    }
    pthread_mutex_lock(&t->lock);
    reg_write(t, offset, get32(data));
    pthread_mutex_unlock(&t->lock);
}

/* --- state --- */

void virtio_mmio_state_get(const struct virtio_mmio *t, struct virtio_mmio_state *s)
{
    memset(s, 0, sizeof(*s));
    s->device_id = t->device_id;
    s->device_features = t->device_features;
    s->driver_features = t->driver_features;
    s->device_features_sel = t->device_features_sel;
    s->driver_features_sel = t->driver_features_sel;
    s->queue_sel = t->queue_sel;
    s->status = t->status;
    s->interrupt_status = t->interrupt_status;
    s->config_generation = t->config_generation;
    s->shm_sel = t->shm_sel;
    s->nr_queues = t->nr_queues;
    for (unsigned q = 0; q < t->nr_queues; q++) {
        const struct virtq *vq = &t->vq[q];
        s->queue[q] = (struct virtio_mmio_queue_state){
            .num = vq->num, .ready = vq->ready, .desc = vq->desc_gpa, .driver = vq->avail_gpa,
            .device = vq->used_gpa, .last_avail = vq->last_avail, .used_idx = vq->used_idx,
            .broken = vq->broken};
    }
}

void virtio_mmio_state_put(const struct virtio_mmio_state *s, struct rec_buf *b)
{
    rec_put_u32(b, s->device_id);
    rec_put_u64(b, s->device_features);
    rec_put_u64(b, s->driver_features);
    rec_put_u32(b, s->device_features_sel);
    rec_put_u32(b, s->driver_features_sel);
    rec_put_u32(b, s->queue_sel);
    rec_put_u32(b, s->status);
    rec_put_u32(b, s->interrupt_status);
    rec_put_u32(b, s->config_generation);
    rec_put_u32(b, s->shm_sel);
    rec_put_u32(b, s->nr_queues);
    for (unsigned q = 0; q < s->nr_queues && q < VIRTIO_MMIO_MAX_QUEUES; q++) {
        const struct virtio_mmio_queue_state *qs = &s->queue[q];
        rec_put_u32(b, qs->num);
        rec_put_u8(b, qs->ready);
        rec_put_u64(b, qs->desc);
        rec_put_u64(b, qs->driver);
        rec_put_u64(b, qs->device);
        rec_put_u16(b, qs->last_avail);
        rec_put_u16(b, qs->used_idx);
        rec_put_u8(b, qs->broken);
    }
}

int virtio_mmio_state_read(struct rec_reader *r, struct virtio_mmio_state *s,
                           struct tern_err *err)
{
    memset(s, 0, sizeof(*s));
    rec_get_u32(r, &s->device_id);
    rec_get_u64(r, &s->device_features);
    rec_get_u64(r, &s->driver_features);
    rec_get_u32(r, &s->device_features_sel);
    rec_get_u32(r, &s->driver_features_sel);
    rec_get_u32(r, &s->queue_sel);
    rec_get_u32(r, &s->status);
    rec_get_u32(r, &s->interrupt_status);
    rec_get_u32(r, &s->config_generation);
    rec_get_u32(r, &s->shm_sel);
    rec_get_u32(r, &s->nr_queues);
    if (!r->failed && s->nr_queues > VIRTIO_MMIO_MAX_QUEUES)
        return tern_err_set(err, "%u queues in the state (at most %u supported)", s->nr_queues,
                            VIRTIO_MMIO_MAX_QUEUES);
    for (unsigned q = 0; q < s->nr_queues && q < VIRTIO_MMIO_MAX_QUEUES; q++) {
        struct virtio_mmio_queue_state *qs = &s->queue[q];
        rec_get_u32(r, &qs->num);
        rec_get_u8(r, &qs->ready);
        rec_get_u64(r, &qs->desc);
        rec_get_u64(r, &qs->driver);
        rec_get_u64(r, &qs->device);
        rec_get_u16(r, &qs->last_avail);
        rec_get_u16(r, &qs->used_idx);
        rec_get_u8(r, &qs->broken);
    }
    return 0;
}

int virtio_mmio_state_check(const struct virtio_mmio *t, const struct virtio_mmio_state *s,
                            struct tern_err *err)
{
    if (s->device_id != t->device_id)
        return tern_err_set(err, "device ID %u in the state, this device is %u", s->device_id,
                            t->device_id);
    if (s->device_features != t->device_features)
        return tern_err_set(err,
                            "offered features 0x%llx in the state differ from this device's "
                            "0x%llx (different configuration, e.g. read-only?)",
                            (unsigned long long)s->device_features,
                            (unsigned long long)t->device_features);
    if (s->driver_features & ~s->device_features)
        return tern_err_set(err, "driver features 0x%llx include features not offered (0x%llx)",
                            (unsigned long long)s->driver_features,
                            (unsigned long long)s->device_features);
    if (s->status & ~VIRTIO_STATUS_ALL)
        return tern_err_set(err, "status 0x%x has unknown bits", s->status);
    if ((s->status & VIRTIO_STATUS_FEATURES_OK) && !(s->driver_features & VIRTIO_F_VERSION_1))
        return tern_err_set(err, "status 0x%x has FEATURES_OK without VERSION_1 negotiated",
                            s->status);
    if ((s->status & VIRTIO_STATUS_DRIVER_OK) && !(s->status & VIRTIO_STATUS_FEATURES_OK))
        return tern_err_set(err, "status 0x%x has DRIVER_OK without FEATURES_OK", s->status);
    if (s->interrupt_status & ~(VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG))
        return tern_err_set(err, "interrupt status 0x%x has unknown bits", s->interrupt_status);
    if (s->nr_queues != t->nr_queues)
        return tern_err_set(err, "%u queues in the state, this device has %u", s->nr_queues,
                            t->nr_queues);
    bool any_broken = false;
    for (unsigned q = 0; q < s->nr_queues; q++) {
        const struct virtio_mmio_queue_state *qs = &s->queue[q];
        if (qs->ready > 1 || qs->broken > 1)
            return tern_err_set(err, "queue %u: ready %u / broken %u are not booleans", q,
                                qs->ready, qs->broken);
        if (qs->broken)
            any_broken = true;
        if (!qs->ready)
            continue; /* registers only; checked again when the driver enables it */
        struct virtq tmp = {.num = qs->num, .desc_gpa = qs->desc, .avail_gpa = qs->driver,
                            .used_gpa = qs->device};
        if (virtq_configure(&tmp, t->gm, NULL, t->queue_num_max, err) < 0)
            return tern_err_prefix(err, "queue %u", q);
        if (qs->last_avail != qs->used_idx)
            return tern_err_set(err,
                                "queue %u: %u requests were in flight when the state was "
                                "saved (available index %u, used index %u); save only while "
                                "quiesced",
                                q, (uint16_t)(qs->last_avail - qs->used_idx), qs->last_avail,
                                qs->used_idx);
    }
    if (any_broken && !(s->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET))
        return tern_err_set(err, "a queue is marked broken but status 0x%x lacks "
                                 "DEVICE_NEEDS_RESET", s->status);
    return 0;
}

void virtio_mmio_state_apply(struct virtio_mmio *t, const struct virtio_mmio_state *s)
{
    t->driver_features = s->driver_features;
    t->device_features_sel = s->device_features_sel;
    t->driver_features_sel = s->driver_features_sel;
    t->queue_sel = s->queue_sel;
    t->status = s->status;
    t->interrupt_status = s->interrupt_status;
    t->config_generation = s->config_generation;
    t->shm_sel = s->shm_sel;
    t->logged_broken = (s->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET) != 0;
    for (unsigned q = 0; q < t->nr_queues; q++) {
        const struct virtio_mmio_queue_state *qs = &s->queue[q];
        struct virtq *vq = &t->vq[q];
        virtq_reset(vq);
        vq->num = qs->num;
        vq->desc_gpa = qs->desc;
        vq->avail_gpa = qs->driver;
        vq->used_gpa = qs->device;
        vq->last_avail = qs->last_avail;
        vq->used_idx = qs->used_idx;
        vq->broken = qs->broken;
        if (vq->broken)
            snprintf(vq->error, sizeof(vq->error), "malformed before the state was saved");
        if (qs->ready) {
            /* Checked by virtio_mmio_state_check; cannot fail here. */
            if (virtq_configure(vq, t->gm, t->dirty, t->queue_num_max, NULL) == 0) {
                vq->ready = true;
                vq->indirect = virtio_mmio_has_feature(t, VIRTIO_F_INDIRECT_DESC);
            }
        }
    }
}
