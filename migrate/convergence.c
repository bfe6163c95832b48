#include "convergence.h"

#include <string.h>

/* Weight of the newest round in the smoothed estimates: recent rounds say
 * most about the next one, but one noisy round should not swing the
 * decision. */
#define EWMA_NEW 0.6

static double ewma(double old, double sample, int first)
{
    return first ? sample : EWMA_NEW * sample + (1.0 - EWMA_NEW) * old;
}

void conv_init(struct conv_state *s, const struct conv_params *p)
{
    memset(s, 0, sizeof(*s));
    s->p = *p;
    if (s->p.downtime_ms <= 0)
        s->p.downtime_ms = CONV_DEFAULT_DOWNTIME_MS;
    if (s->p.max_seconds <= 0)
        s->p.max_seconds = CONV_DEFAULT_MAX_SECONDS;
    if (s->p.throttle_step == 0)
        s->p.throttle_step = CONV_DEFAULT_THROTTLE_STEP;
    if (s->p.throttle_max == 0 || s->p.throttle_max > 99)
        s->p.throttle_max = CONV_DEFAULT_THROTTLE_MAX;
}

enum conv_decision conv_round_done(struct conv_state *s, uint64_t pages_sent, uint64_t bytes_sent,
                                   double seconds, uint64_t dirty_pages, double elapsed_s)
{
    int first = s->round == 0;
    s->round++;
    s->elapsed_s = elapsed_s;
    if (seconds > 0 && bytes_sent > 0)
        s->bandwidth_Bps = ewma(s->bandwidth_Bps, (double)bytes_sent / seconds, first);
    if (seconds > 0)
        s->dirty_pages_per_s = ewma(s->dirty_pages_per_s, (double)dirty_pages / seconds, first);
    if (pages_sent > 0)
        s->bytes_per_page = ewma(s->bytes_per_page, (double)bytes_sent / (double)pages_sent,
                                 s->bytes_per_page == 0);

    /* The pause sends what is dirty now; nothing more gets dirty while the
     * guest is paused. */
    double per_page = s->bytes_per_page > 0 ? s->bytes_per_page : 4096.0;
    double pause_bytes = (double)dirty_pages * per_page;
    s->predicted_pause_ms =
        s->bandwidth_Bps > 0 ? pause_bytes / s->bandwidth_Bps * 1000.0 : 1e9;

    /* Round 0 sent all of memory; from round 1 on, a prediction that fits
     * means stop now. */
    if (!first && s->predicted_pause_ms <= s->p.downtime_ms)
        return CONV_STOP_AND_COPY;
    if (elapsed_s >= s->p.max_seconds)
        return CONV_GIVE_UP;

    /* A round that did not shrink the dirty set by at least 10 %: the guest
     * dirties about as fast as we send. Two in a row: throttle harder. */
    if (!first && (double)dirty_pages > 0.9 * (double)s->last_dirty_pages)
        s->no_progress++;
    else
        s->no_progress = 0;
    s->last_dirty_pages = dirty_pages;
    if (s->no_progress >= 2 && s->throttle_percent < s->p.throttle_max) {
        s->throttle_percent += s->p.throttle_step;
        if (s->throttle_percent > s->p.throttle_max)
            s->throttle_percent = s->p.throttle_max;
        s->no_progress = 0;
        return CONV_THROTTLE;
    }
    return CONV_CONTINUE;
}

const char *conv_decision_name(enum conv_decision d)
{
    switch (d) {
    case CONV_CONTINUE: return "continue";
    case CONV_STOP_AND_COPY: return "stop-and-copy";
    case CONV_THROTTLE: return "throttle";
    case CONV_GIVE_UP: return "give-up";
    }
    return "unknown";
}
