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
