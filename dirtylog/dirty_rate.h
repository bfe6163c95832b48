/* Dirty-rate estimate for the migration engine's rounds: pages found dirty
 * over an interval, smoothed over time. Pure (no clock, no I/O): the
 * caller measures the interval.
 *
 * The sample is what a collect reports: distinct pages dirtied over the
 * interval, which is what a migration must resend. It is below the guest's
 * page-write rate when pages are written more than once in an interval
 * (the longer the interval, the more so), so compare rates over intervals
 * of similar length. */
#ifndef TERN_DIRTYLOG_DIRTY_RATE_H
#define TERN_DIRTYLOG_DIRTY_RATE_H

#include <stdint.h>

struct dirty_rate {
    double tau_s;          /* smoothing time constant, seconds */
    double pages_per_s;    /* smoothed estimate (0 before the first sample) */
    double last_pages_per_s; /* the last sample alone */
    uint64_t samples;      /* samples taken */
};

/* Starts an estimate. A sample over dt seconds moves the estimate
 * dt / (dt + tau_s) of the way to its own rate: half for dt == tau_s,
 * little for short intervals, nearly all for long ones. tau_s <= 0 means
 * no smoothing (each sample replaces the estimate). */
void dirty_rate_init(struct dirty_rate *r, double tau_s);

/* Adds `pages` found dirty over `seconds` and returns the smoothed pages/s.
 * The first sample is taken as is. An interval of zero or less (or NaN)
 * is ignored. */
double dirty_rate_add(struct dirty_rate *r, uint64_t pages, double seconds);

/* The smoothed estimate in pages/s, bytes/s (4 KiB pages) and MB/s (10^6
 * bytes, as the test guest's dirty= counts). */
double dirty_rate_pages_per_s(const struct dirty_rate *r);
double dirty_rate_bytes_per_s(const struct dirty_rate *r);
double dirty_rate_mb_per_s(const struct dirty_rate *r);

#endif
