/* The CPL3 workload every CPU runs: fill its share of the fill area, then
 * dirty it at the configured rate and self-check it; the BSP also sends
 * heartbeats, prints status lines and ends the run. Cooperative: work comes
 * in slices of at most ~100 us, and a CPU with nothing due sleeps until the
 * next timer tick. */
#ifndef TG_WORKLOAD_H
#define TG_WORKLOAD_H

#include <stdint.h>

/* Set by the BSP before any AP starts; read-only afterwards. */
struct tg_config {
    unsigned ncpus;
    uint64_t tsc_khz;
    uint64_t t0; /* TSC at start: uptime and exit_after count from here */
    uint64_t tick_us;
    uint64_t timer_count; /* LAPIC timer initial count for the tick */
    uint64_t fill_pa;     /* fill area: npages pages from here */
    uint64_t npages;
    uint32_t *gen_table; /* expected generation per page (low 32 bits) */
    uint64_t seed;
    uint64_t dirty_bytes_per_cpu; /* per second */
    uint64_t hb_cycles, check_cycles, status_cycles; /* 0 = off */
    uint64_t exit_after_s;                            /* 0 = never */
    unsigned exit_code;
    unsigned disk; /* 1: the BSP runs the journal task (disk.h) */
};

extern struct tg_config cfg;

__attribute__((noreturn)) void workload_run(unsigned cpu);

#endif
