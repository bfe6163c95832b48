/* When to stop copying and pause: the pre-copy convergence policy, as pure
 * logic so it is unit-tested apart from any VM.
 *
 * After every round the engine reports what the round sent, how long it
 * took and how many pages were dirty when it ended. The policy keeps
 * smoothed estimates of bandwidth and dirty rate and predicts the pause:
 * bytes still dirty / bandwidth. It answers: stop-and-copy now (the
 * prediction fits the downtime budget), go on, go on with the vCPUs
 * throttled harder (rounds stopped shrinking), or give up (time limit). */
#ifndef TERN_MIGRATE_CONVERGENCE_H
#define TERN_MIGRATE_CONVERGENCE_H

#include <stdint.h>

struct conv_params {
    double downtime_ms;     /* pause budget (--downtime-ms, default 50) */
    double max_seconds;     /* give up after this long (--max-seconds) */
    unsigned throttle_step; /* percent added each time rounds stop shrinking */
    unsigned throttle_max;  /* never throttle beyond this percent */
};

#define CONV_DEFAULT_DOWNTIME_MS 50.0
#define CONV_DEFAULT_MAX_SECONDS 300.0
#define CONV_DEFAULT_THROTTLE_STEP 20u
#define CONV_DEFAULT_THROTTLE_MAX 90u

enum conv_decision {
    CONV_CONTINUE,      /* another pre-copy round */
    CONV_STOP_AND_COPY, /* pause the guest and send the rest */
    CONV_THROTTLE,      /* another round, with throttle_percent raised */
    CONV_GIVE_UP,       /* the time limit passed without converging */
};

struct conv_state {
    struct conv_params p;
    unsigned round;            /* rounds completed */
    double bandwidth_Bps;      /* smoothed bytes per second on the wire */
    double dirty_pages_per_s;  /* smoothed pages dirtied per second */
    double bytes_per_page;     /* smoothed wire bytes per page (after encoding) */
    uint64_t last_dirty_pages; /* dirty when the last round ended */
    unsigned no_progress;      /* consecutive rounds that did not shrink */
    unsigned throttle_percent; /* current vCPU throttle */
    double predicted_pause_ms;
    double elapsed_s;
};

void conv_init(struct conv_state *s, const struct conv_params *p);

/* Feeds one finished round: pages and wire bytes it sent, its duration,
 * pages dirty at its end (the next round's work), and total elapsed time.
 * Returns what to do next; s->throttle_percent is updated on THROTTLE. */
enum conv_decision conv_round_done(struct conv_state *s, uint64_t pages_sent, uint64_t bytes_sent,
                                   double seconds, uint64_t dirty_pages, double elapsed_s);

const char *conv_decision_name(enum conv_decision d);

#endif
