/* The guest's command line: space-separated key=value words, all values
 * unsigned decimal (or 0x hex), and Linux's virtio_mmio.device=. See
 * README.md for the keys. */
#ifndef TG_CMDLINE_H
#define TG_CMDLINE_H

#include <stddef.h>
#include <stdint.h>

struct tg_params {
    uint64_t fill_mb;      /* fill area size, MiB */
    uint64_t dirty_mbs;    /* MB/s (10^6 bytes) of page writes, all CPUs */
    uint64_t hb_us;        /* heartbeat period, 0 = none */
    uint64_t check_ms;     /* self-check period, 0 = none */
    uint64_t tick_us;      /* LAPIC timer period */
    uint64_t status_ms;    /* status line period, 0 = none */
    uint64_t exit_after_s; /* 0 = run forever */
    uint64_t exit_code;    /* status for the exit after exit_after_s */
    uint64_t tsc_khz;      /* 0 = not given */
    uint64_t cpus;         /* 0 = not given */
    uint64_t seed;
    uint64_t disk;      /* 1 = run the journal on the first virtio-mmio disk */
    uint64_t disk_rate; /* journal records per second, 0 = none */
    /* virtio_mmio.device=SIZE@BASE:IRQ[:ID] (Linux's syntax, which VMMs
     * append): how many were given, and the first one. */
    unsigned virtio_count;
    uint64_t virtio_base, virtio_size, virtio_irq;
};

/* Fills *p with the defaults, then applies cmdline. On an unknown key or a
 * malformed / out-of-range value returns -1 with the offending word in bad
 * (truncated to badsize - 1). */
int params_parse(const char *cmdline, struct tg_params *p, char *bad, size_t badsize);

#endif
