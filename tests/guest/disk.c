/* The journal task (see disk.h). BSP only; its state is plain guest
 * memory, so a snapshot/restore or migration that keeps the device's queue
 * state lets it carry on where it was. */
#include "disk.h"

#include "console.h"
#include "journal.h"
#include "tern_guest.h"
#include "virtio_blk.h"
#include "x86.h"

enum disk_state {
    D_READ,  /* read-back: submit the next chunk */
    D_READING,
    D_CHECK, /* read-back: check the chunk's blocks */
    D_IDLE,  /* appending: wait for the next record's time */
    D_WRITE, /* record written, waiting for completion */
    D_FLUSH, /* FLUSH after it, waiting for completion */
    D_OFF,   /* full, or disk_rate=0 after the read-back */
};

static struct {
    enum disk_state state;
    uint64_t blocks;         /* journal capacity, records */
    uint64_t chunk_blocks;   /* largest read, blocks */
    struct tg_jscan scan;
    uint64_t chunk_first, chunk_n, chunk_k;
    uint64_t durable_seq;
    uint64_t period, next_due; /* TSC cycles per record, 0 = no appending */
    uint64_t second;           /* TSC cycles */
    uint64_t base;
    uint64_t probe_next; /* when to look whether the device gave up */
} d;

static inline uint64_t sane(uint64_t deadline, uint64_t period, uint64_t now)
{
    return deadline > now + period ? now + period : deadline;
}

static inline uint64_t advance(uint64_t deadline, uint64_t period, uint64_t now)
{
    deadline += period;
    return deadline > now ? deadline : now + period;
}

void disk_setup(const struct tg_params *p, uint64_t tsc_khz)
{
    struct vblk_info info;
    char why[128];

    if (vblk_init(p->virtio_base, &info, why, sizeof(why))) {
        console_line(TG_FMT_DISK_DEVICE_ERROR, p->virtio_base, why);
        guest_exit(TG_EXIT_CHECK_FAILED);
    }
    d.blocks = tg_journal_blocks(info.capacity);
    d.chunk_blocks = info.max_bytes / TG_JBLOCK_SIZE;
    d.period = p->disk_rate ? tsc_khz * 1000 / p->disk_rate : 0;
    d.second = tsc_khz * 1000;
    d.base = p->virtio_base;
    tg_jscan_init(&d.scan, d.blocks);
    d.state = D_READ;
    console_line(TG_FMT_DISK_READY, p->virtio_base, info.capacity, info.queue_size);
}

static void submit(uint32_t type, uint64_t sector, uint32_t len)
{
    vblk_submit(type, sector, len);
    d.probe_next = rdtsc() + d.second;
}

/* 1 once the request in flight has completed with status OK; exits the
 * guest if it failed. A request outstanding for over a second makes the
 * task look, once a second, whether the device has given up on the queue
 * (DEVICE_NEEDS_RESET), so that a broken device is reported rather than
 * a silent stall. Time alone is no error: a paused or migrating VM, or a
 * slow disk, may take long. */
static int done(const char *op, uint64_t sector)
{
    int st = vblk_poll();

    if (st < 0) {
        uint64_t now = rdtsc();
        d.probe_next = sane(d.probe_next, d.second, now);
        if (now >= d.probe_next) {
            d.probe_next = now + d.second;
            if (vblk_needs_reset()) {
                console_line(TG_FMT_DISK_DEVICE_ERROR, d.base,
                             "device needs reset (DEVICE_NEEDS_RESET) with a request in flight");
                guest_exit(TG_EXIT_CHECK_FAILED);
            }
        }
        return 0;
    }
    if (st != VBLK_S_OK) {
        console_line(TG_FMT_DISK_IO_ERROR, op, sector, (unsigned)st);
        guest_exit(TG_EXIT_CHECK_FAILED);
    }
    return 1;
}

/* Stops appending once the next record has no block left. */
static int check_full(void)
{
    if (d.durable_seq < d.blocks)
        return 0;
    console_line(TG_FMT_JOURNAL_FULL, d.durable_seq);
    d.state = D_OFF;
    return 1;
}

static void scan_done(uint64_t now)
{
    if (d.scan.result == TG_JSCAN_BAD) {
        console_line(TG_FMT_JOURNAL_BAD, d.scan.bad_block, d.scan.reason);
        guest_exit(TG_EXIT_CHECK_FAILED);
    }
    d.durable_seq = d.scan.records;
    console_line(TG_FMT_JOURNAL_RECOVERED, d.durable_seq);
    if (check_full())
        return;
    d.state = d.period ? D_IDLE : D_OFF;
    d.next_due = now;
}

void disk_step(uint64_t now, uint64_t budget)
{
    uint64_t end = now + budget;

    for (;;) {
        switch (d.state) {
        case D_READ:
            d.chunk_n = tg_jscan_want(&d.scan, d.chunk_blocks);
            if (!d.chunk_n) {
                scan_done(rdtsc());
                continue;
            }
            d.chunk_first = d.scan.next;
            d.chunk_k = 0;
            submit(VBLK_T_IN, d.chunk_first * TG_JBLOCK_SECTORS,
                   (uint32_t)(d.chunk_n * TG_JBLOCK_SIZE));
            d.state = D_READING;
            return;
        case D_READING:
            if (!done("read", d.chunk_first * TG_JBLOCK_SECTORS))
                return;
            d.state = D_CHECK;
            continue;
        case D_CHECK:
            while (d.chunk_k < d.chunk_n && d.scan.result == TG_JSCAN_MORE) {
                tg_jscan_feed(&d.scan, vblk_buf + d.chunk_k++ * TG_JBLOCK_SIZE);
                if (d.chunk_k < d.chunk_n && d.scan.result == TG_JSCAN_MORE && rdtsc() >= end)
                    return; /* more next step */
            }
            if (d.scan.result != TG_JSCAN_MORE)
                scan_done(rdtsc());
            else
                d.state = D_READ;
            continue;
        case D_IDLE: {
            now = rdtsc();
            d.next_due = sane(d.next_due, d.period, now);
            if (now < d.next_due)
                return;
            uint64_t seq = d.durable_seq + 1;
            tg_jrec_encode((struct tg_jrec *)(void *)vblk_buf, seq);
            submit(VBLK_T_OUT, (seq - 1) * TG_JBLOCK_SECTORS, TG_JBLOCK_SIZE);
            d.next_due = advance(d.next_due, d.period, now);
            d.state = D_WRITE;
            return;
        }
        case D_WRITE:
            if (!done("write", d.durable_seq * TG_JBLOCK_SECTORS))
                return;
            submit(VBLK_T_FLUSH, 0, 0);
            d.state = D_FLUSH;
            return;
        case D_FLUSH:
            if (!done("flush", 0))
                return;
            d.durable_seq++; /* only now: the record is on stable storage */
            if (check_full())
                return;
            d.state = D_IDLE;
            continue;
        case D_OFF:
            return;
        }
    }
}

uint64_t disk_next(uint64_t now)
{
    switch (d.state) {
    case D_READ:
    case D_CHECK:
        return now;
    case D_IDLE:
        return d.next_due;
    default:
        return UINT64_MAX;
    }
}

uint64_t disk_durable_seq(void)
{
    return d.durable_seq;
}
