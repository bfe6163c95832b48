#include "dirty_rate.h"

void dirty_rate_init(struct dirty_rate *r, double tau_s)
{
    *r = (struct dirty_rate){.tau_s = tau_s};
}

double dirty_rate_add(struct dirty_rate *r, uint64_t pages, double seconds)
{
    if (!(seconds > 0))
        return r->pages_per_s;
    double rate = (double)pages / seconds;
    r->last_pages_per_s = rate;
    if (r->samples == 0 || !(r->tau_s > 0)) {
        r->pages_per_s = rate;
    } else {
        /* Exponential smoothing that weighs a sample by the time it covers,
         * so rounds of any length are handled alike: dt / (dt + tau) is
         * dt / tau for short rounds and approaches 1 for long ones (no libm). */
        double w = seconds / (seconds + r->tau_s);
        r->pages_per_s += w * (rate - r->pages_per_s);
    }
    r->samples++;
    return r->pages_per_s;
}

double dirty_rate_pages_per_s(const struct dirty_rate *r)
{
    return r->pages_per_s;
}

double dirty_rate_bytes_per_s(const struct dirty_rate *r)
{
    return r->pages_per_s * 4096.0;
}

double dirty_rate_mb_per_s(const struct dirty_rate *r)
{
    return r->pages_per_s * 4096.0 / 1e6;
}
