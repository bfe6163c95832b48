#include "dev_heartbeat.h"
#include "guest_abi.h"

#include <string.h>
#include <time.h>

static void heartbeat_read(struct pio_device *dev, uint16_t offset, uint8_t *data, unsigned size)
{
    (void)dev;
    (void)offset;
    memset(data, 0, size);
}

static void heartbeat_write(struct pio_device *dev, uint16_t offset, const uint8_t *data,
                            unsigned size)
{
    struct dev_heartbeat *hb = dev->opaque;
    if (offset != 0 || size != 4)
        return; /* only whole 32-bit writes at the base count */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint32_t seq;
    memcpy(&seq, data, 4);
    dev_heartbeat_record(hb, seq, (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec);
}

static const struct pio_device_ops heartbeat_ops = {
    .read = heartbeat_read,
    .write = heartbeat_write,
};

void dev_heartbeat_init(struct dev_heartbeat *hb)
{
    memset(hb, 0, sizeof(*hb));
    hb->handover_gap_ns = -1;
    pthread_mutex_init(&hb->lock, NULL);
    hb->pio = (struct pio_device){
        .name = "heartbeat", .base = TERN_PORT_HEARTBEAT, .len = 4, .ops = &heartbeat_ops,
        .opaque = hb};
}

void dev_heartbeat_destroy(struct dev_heartbeat *hb)
{
    pthread_mutex_destroy(&hb->lock);
}

void dev_heartbeat_record(struct dev_heartbeat *hb, uint32_t seq, int64_t now_ns)
{
    pthread_mutex_lock(&hb->lock);
    struct heartbeat_state *s = &hb->s;
    if (hb->awaiting_first_after_load) {
        hb->handover_gap_ns = now_ns - s->last_ns;
        hb->awaiting_first_after_load = false;
    }
    if (s->count == 0) {
        s->first_ns = now_ns;
    } else {
        if (seq != s->last_seq + 1)
            s->seq_errors++;
        int64_t gap = now_ns - s->last_ns;
        if (gap > s->max_gap_ns) {
            s->max_gap_ns = gap;
            s->max_gap_end_ns = now_ns;
        }
    }
    s->count++;
    s->last_seq = seq;
    s->last_ns = now_ns;
    pthread_mutex_unlock(&hb->lock);
}

void dev_heartbeat_snapshot(struct dev_heartbeat *hb, struct heartbeat_state *out)
{
    pthread_mutex_lock(&hb->lock);
    *out = hb->s;
    pthread_mutex_unlock(&hb->lock);
}

/* ---- saved state ---- */

void dev_heartbeat_state_save(struct dev_heartbeat *hb, struct rec_buf *b)
{
    struct heartbeat_state s;
    dev_heartbeat_snapshot(hb, &s);
    rec_begin(b, HEARTBEAT_STATE_RECORD, HEARTBEAT_STATE_VERSION, 0);
    rec_put_u64(b, s.count);
    rec_put_u32(b, s.last_seq);
    rec_put_u64(b, s.seq_errors);
    rec_put_u64(b, (uint64_t)s.first_ns);
    rec_put_u64(b, (uint64_t)s.last_ns);
    rec_put_u64(b, (uint64_t)s.max_gap_ns);
    rec_put_u64(b, (uint64_t)s.max_gap_end_ns);
    rec_end(b);
}

int dev_heartbeat_state_decode(const struct rec_header *h, struct rec_reader *r,
                               struct heartbeat_state *s, struct tern_err *err)
{
    memset(s, 0, sizeof(*s));
    if (h->type != HEARTBEAT_STATE_RECORD)
        return tern_err_set(err, "heartbeat state: record type 0x%04x is not 0x%04x", h->type,
                            HEARTBEAT_STATE_RECORD);
    if (h->version != HEARTBEAT_STATE_VERSION)
        return tern_err_set(err, "heartbeat state: version %u is not supported (this tern-vmm reads version %u)",
                            h->version, HEARTBEAT_STATE_VERSION);
    if (h->flags != 0)
        return tern_err_set(err, "heartbeat state: unknown record flags 0x%04x", h->flags);
    uint64_t first, last, gap, gap_end;
    rec_get_u64(r, &s->count);
    rec_get_u32(r, &s->last_seq);
    rec_get_u64(r, &s->seq_errors);
    rec_get_u64(r, &first);
    rec_get_u64(r, &last);
    rec_get_u64(r, &gap);
    rec_get_u64(r, &gap_end);
    if (rec_finish(r, "heartbeat state", err) < 0)
        return -1;
    s->first_ns = (int64_t)first;
    s->last_ns = (int64_t)last;
    s->max_gap_ns = (int64_t)gap;
    s->max_gap_end_ns = (int64_t)gap_end;
    /* What dev_heartbeat_record can produce. CLOCK_REALTIME may step, so
     * the timestamps themselves are not ordered. */
    if (s->count == 0 && (s->last_seq || s->seq_errors || s->first_ns || s->last_ns ||
                          s->max_gap_ns || s->max_gap_end_ns))
        return tern_err_set(err, "heartbeat state: values recorded without any heartbeat");
    if (s->count > 0 && s->seq_errors >= s->count)
        return tern_err_set(err, "heartbeat state: %llu sequence errors in %llu heartbeats",
                            (unsigned long long)s->seq_errors, (unsigned long long)s->count);
    if (s->max_gap_ns < 0)
        return tern_err_set(err, "heartbeat state: negative largest gap %lld ns",
                            (long long)s->max_gap_ns);
    if (s->max_gap_ns == 0 && s->max_gap_end_ns != 0)
        return tern_err_set(err, "heartbeat state: a largest gap that ends but has no length");
    return 0;
}

int dev_heartbeat_state_load(struct dev_heartbeat *hb, const struct rec_header *h,
                             struct rec_reader *payload, struct tern_err *err)
{
    struct heartbeat_state s;
    if (dev_heartbeat_state_decode(h, payload, &s, err) < 0)
        return -1;
    pthread_mutex_lock(&hb->lock);
    hb->s = s;
    hb->awaiting_first_after_load = s.count > 0;
    hb->handover_gap_ns = -1;
    pthread_mutex_unlock(&hb->lock);
    return 0;
}
