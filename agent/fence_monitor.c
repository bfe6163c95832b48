/* Checks of the fence devices (docs/fencing.md, "Device checks"): every
 * fence_monitor_interval seconds, the host that would fence another one
 * (the state's fencer for it: the online host with the lowest node id,
 * in a quorate configuration) runs `monitor` on each device of that host's
 * levels, and broadcasts the answer (host_fence_check) when it differs
 * from what the state holds. A device that stopped answering (a BMC
 * unplugged, a password changed) then shows in `ternctl host list` before
 * the day it is needed. No decision depends on it.
 *
 * Nothing here waits: the agents run as processes the loop watches. A host
 * being fenced is not checked (its fence runs); a check still running when
 * the next one is due is left to end. */
#include "agent.h"

#include "../common/text.h"
#include "../fencing/fence.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_TRACK_MAX 64   /* hosts checked in one round */
#define FIRST_CHECK_S 1.0    /* after this host is ready (and after it became the fencer) */

struct check;

struct dev_run {
    struct check *c;
    struct fence_run *run;
    bool done, ok;
    char line[200];          /* "DEVICE: ok" or "DEVICE: failed: output" */
};

struct check {
    bool used;
    char host[CL_NAME_MAX];
    unsigned nr, pending;
    struct dev_run runs[FENCE_DEVICES_MAX];
    struct fence_monitor *m;
};

struct fence_monitor {
    struct agent *a;
    struct check checks[CHECK_TRACK_MAX];
    double next_round;       /* agent_now of the next round (0: not scheduled) */
    uint64_t timer;
};

static void on_timer(struct loop *l, void *opaque)
{
    (void)l;
    struct fence_monitor *m = opaque;
    m->timer = 0;
    agent_changed(m->a);
}

static void schedule(struct fence_monitor *m, double at)
{
    m->next_round = at;
    loop_del_timer(m->a->loop, m->timer);
    double ms = (at - agent_now()) * 1e3;
    m->timer = loop_add_timer(m->a->loop, ms > 0 ? (int64_t)ms + 1 : 0, on_timer, m);
}

/* The answer of every device, one line; and whether all of them said ok. */
static bool summarize(const struct check *c, char *out, size_t cap)
{
    bool ok = true;
    size_t pos = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < c->nr && pos + 1 < cap; i++) {
        ok = ok && c->runs[i].ok;
        int w = snprintf(out + pos, cap - pos, "%s%s", i ? "; " : "", c->runs[i].line);
        if (w < 0)
            break;
        pos += (size_t)w < cap - pos ? (size_t)w : cap - pos - 1;
    }
    return ok;
}

static void check_end(struct check *c)
{
    for (unsigned i = 0; i < c->nr; i++)
        if (!c->runs[i].done && c->runs[i].run)
            fence_run_cancel(c->runs[i].run);
    memset(c, 0, sizeof(*c));
}

/* Every device answered: tell the cluster if the answer is news. */
static void check_finish(struct check *c)
{
    struct agent *a = c->m->a;
    char detail[CL_REASON_MAX];
    bool ok = summarize(c, detail, sizeof(detail));
    const struct cl_host *h = cl_state_host(agent_state(a), c->host);
    const struct cl_host *me = cl_state_host_by_nodeid(agent_state(a), a->nodeid);
    enum cl_fence_check now = ok ? CL_CHECK_OK : CL_CHECK_FAILING;
    bool news = h && me &&
                (h->fence_check != now || strcmp(h->fence_check_by, me->name) ||
                 strcmp(h->fence_check_detail, detail));
    if (!ok)
        agent_log("fence devices of %s: %s\n", c->host, detail);
    if (news) {
        json_t *msg = cl_msg_new(CL_MSG_HOST_FENCE_CHECK);
        json_object_set_new(msg, "host", json_string(c->host));
        json_object_set_new(msg, "ok", json_boolean(ok));
        json_object_set_new(msg, "detail", json_string(detail));
        struct tern_err err;
        if (!agent_send(a, msg, &err))
            agent_log("fence devices of %s: cannot broadcast the check: %s\n", c->host, err.msg);
        json_decref(msg);
    }
    memset(c, 0, sizeof(*c));
}

static void on_run_done(void *opaque, const struct fence_result *r)
{
    struct dev_run *d = opaque;
    struct check *c = d->c;
    d->run = NULL;
    d->done = true;
    d->ok = r->ok;
    /* The agent's words, one line, nothing a terminal would obey. */
    char raw[sizeof(r->output)], tail[120];
    memcpy(raw, r->output, sizeof(raw));
    raw[sizeof(raw) - 1] = '\0';
    for (char *p = raw; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    text_escape(tail, sizeof(tail), raw, 0, NULL);
    if (r->ok)
        snprintf(d->line, sizeof(d->line), "%.63s: ok", r->device);
    else
        snprintf(d->line, sizeof(d->line), "%.63s: %s%s%.119s", r->device,
                 r->timed_out ? "timed out" : "failed", tail[0] ? ": " : "", tail);
    if (--c->pending == 0)
        check_finish(c);
}

static struct check *check_of(struct fence_monitor *m, const char *host)
{
    for (int i = 0; i < CHECK_TRACK_MAX; i++)
        if (m->checks[i].used && !strcmp(m->checks[i].host, host))
            return &m->checks[i];
    return NULL;
}

static void check_start(struct fence_monitor *m, const char *host)
{
    struct agent *a = m->a;
    if (check_of(m, host))
        return; /* the last one has not ended yet */
    struct check *c = NULL;
    for (int i = 0; i < CHECK_TRACK_MAX && !c; i++)
        if (!m->checks[i].used)
            c = &m->checks[i];
    if (!c)
        return;
    const char *devs[FENCE_DEVICES_MAX];
    size_t n = fence_config_host_devices(&a->cfg.fence, host, devs, FENCE_DEVICES_MAX);
    if (n == 0)
        return;
    *c = (struct check){.used = true, .m = m};
    snprintf(c->host, sizeof(c->host), "%s", host);
    c->nr = (unsigned)n;
    c->pending = (unsigned)n + 1; /* held until every run is started */
    for (unsigned i = 0; i < c->nr; i++) {
        struct dev_run *d = &c->runs[i];
        d->c = c;
        struct tern_err err;
        if (fence_device_run(a->loop, &a->cfg.fence, devs[i], "monitor", on_run_done, d, &d->run,
                             &err) < 0) {
            d->done = true;
            snprintf(d->line, sizeof(d->line), "%.63s: cannot run: %.120s", devs[i], err.msg);
            c->pending--;
        }
    }
    if (--c->pending == 0)
        check_finish(c);
}

void fence_monitor_reconcile(struct agent *a)
{
    struct fence_monitor *m = a->fence_monitor;
    if (!m || a->cfg.fence.monitor_interval_s == 0 || a->cfg.fence.nr_levels == 0 ||
        !replica_ready(a->replica) || !agent_is_host(a))
        return;
    struct cl_state *s = agent_state(a);
    double now = agent_now();
    /* Checks of hosts this one would no longer fence, or that are being
     * fenced now, end. */
    for (int i = 0; i < CHECK_TRACK_MAX; i++) {
        struct check *c = &m->checks[i];
        if (!c->used)
            continue;
        const struct cl_host *h = cl_state_host(s, c->host);
        const struct cl_host *f = h ? cl_state_fencer(s, h->name) : NULL;
        if (!h || h->fence != CL_FENCE_NONE || !f || f->nodeid != a->nodeid)
            check_end(c);
    }
    if (m->next_round == 0) {
        schedule(m, now + FIRST_CHECK_S);
        return;
    }
    if (now < m->next_round)
        return;
    struct tern_err err;
    if (!agent_can_change(a, &err)) {
        schedule(m, now + FIRST_CHECK_S);
        return;
    }
    for (size_t i = 0; i < cl_state_nr_hosts(s); i++) {
        const struct cl_host *h = cl_state_host_at(s, i);
        const struct cl_host *f = cl_state_fencer(s, h->name);
        if (h->fence == CL_FENCE_NONE && f && f->nodeid == a->nodeid)
            check_start(m, h->name);
    }
    schedule(m, now + a->cfg.fence.monitor_interval_s);
}

int fence_monitor_new(struct agent *a, struct tern_err *err)
{
    a->fence_monitor = calloc(1, sizeof(*a->fence_monitor));
    if (!a->fence_monitor)
        return tern_err_set(err, "out of memory");
    a->fence_monitor->a = a;
    return 0;
}

void fence_monitor_free(struct agent *a)
{
    struct fence_monitor *m = a->fence_monitor;
    if (!m)
        return;
    for (int i = 0; i < CHECK_TRACK_MAX; i++)
        if (m->checks[i].used)
            check_end(&m->checks[i]);
    loop_del_timer(a->loop, m->timer);
    free(m);
    a->fence_monitor = NULL;
}
