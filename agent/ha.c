/* High availability on this host (design.md "High availability"): wires
 * the cluster state's fencing episodes to the fence drivers (fencing/) and
 * feeds the watchdog. Decisions are the state's (ha/): which hosts need
 * fencing, who the fencer is (the online host with the lowest node id),
 * what a fenced host's VMs become. This file only runs what the state asks
 * of this host, level-triggered from before the loop sleeps (ha_reconcile),
 * and broadcasts the results:
 *
 *  - as the fencer: for each host being fenced, its fence levels (off);
 *    success -> host_fenced (method device); failure -> host_fence_failed,
 *    tried again after 1, 2, 4 ... 30 s. A host with a watchdog (it
 *    announced watchdog_s) and no level, or whose levels failed, is fenced
 *    by its deadline (deadline_s below) since this agent saw it lost in a
 *    quorate state -> host_fenced (method watchdog).
 *  - as the would-be fencer of a host that is offline (its ternd left, its
 *    node stayed) and not lost: once its node is gone from corosync's ring
 *    too, host_down (the state makes it lost: fenced before its VMs run
 *    elsewhere). CPG says nothing when the node of a process that left
 *    goes.
 *  - on every host with a watchdog configured: it is opened once the host
 *    is quorate for the first time and fed (watchdog_healthy, every 100
 *    ms) only while the host is quorate; out of quorum, the device resets
 *    the host within its deadline (and local_vms.c kills the HA VMs before
 *    that).
 *
 * Nothing here waits: fence agents are processes watched by the loop. */
#include "agent.h"

#include "../fencing/fence.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HA_TRACK_MAX 64          /* hosts being fenced at once */
#define RETRY_MAX_S 30.0
#define RESEND_S 5.0             /* a result not applied by then is sent again */
#define DEADLINE_MARGIN_MS 1000  /* on top of everything below */
#define FEED_MS 100

struct episode {
    bool used;
    char host[CL_NAME_MAX];
    uint32_t seq;
    double seen;                 /* when this agent first saw it (monotonic s) */
    double next_try;
    unsigned failures;           /* of this agent's own runs */
    struct fence_op *op;
    double op_started;
    double sent_at;              /* a result broadcast (0: none pending) */
    struct ha *ha;
};

struct ha {
    struct agent *a;
    struct episode eps[HA_TRACK_MAX];
    /* When this agent first saw each host being fenced (for the failover
     * time its HA VMs took: metrics). */
    struct {
        char host[CL_NAME_MAX];
        double at;
    } lost[HA_TRACK_MAX];
    unsigned next_lost;
    struct watchdog *wd;
    uint64_t feed_timer;
    uint64_t deadline_timer;     /* the next watchdog deadline to look at */
    double deadline_at;
    /* Nodes of offline hosts out of corosync's ring (the replica's: set by
     * its totem callback), as this agent saw them: since when, and when
     * host_down was last sent for them (0: not in this ring). A slot is
     * free again when its node is back. */
    struct {
        uint32_t nodeid;
        double since;
        double sent_at;
    } gone[HA_TRACK_MAX];
};

static void on_deadline(struct loop *l, void *opaque)
{
    (void)l;
    struct ha *ha = opaque;
    ha->deadline_timer = 0;
    ha->deadline_at = 0;
    agent_changed(ha->a); /* ha_reconcile looks again, at once */
}

/* Wakes the loop at `at` (agent_now), not at the next tick. */
static void wake_at(struct ha *ha, double at)
{
    if (ha->deadline_timer && ha->deadline_at <= at)
        return;
    loop_del_timer(ha->a->loop, ha->deadline_timer);
    double ms = (at - agent_now()) * 1e3;
    ha->deadline_timer = loop_add_timer(ha->a->loop, ms > 0 ? (int64_t)ms + 1 : 0, on_deadline, ha);
    ha->deadline_at = at;
}

static struct episode *episode_of(struct ha *ha, const char *host, uint32_t seq, bool make)
{
    struct episode *free_slot = NULL;
    for (int i = 0; i < HA_TRACK_MAX; i++) {
        struct episode *e = &ha->eps[i];
        if (e->used && !strcmp(e->host, host) && e->seq == seq)
            return e;
        if (!e->used && !free_slot)
            free_slot = e;
    }
    if (!make || !free_slot)
        return NULL;
    *free_slot = (struct episode){.used = true, .seq = seq, .seen = agent_now(), .ha = ha};
    snprintf(free_slot->host, sizeof(free_slot->host), "%s", host);
    unsigned k = ha->next_lost++ % HA_TRACK_MAX;
    snprintf(ha->lost[k].host, sizeof(ha->lost[k].host), "%s", host);
    ha->lost[k].at = free_slot->seen;
    free_slot->next_try = free_slot->seen;
    return free_slot;
}

static void episode_end(struct episode *e)
{
    if (e->op)
        fence_op_cancel(e->op);
    memset(e, 0, sizeof(*e));
}

static void send_result(struct episode *e, bool fenced, const char *method, const char *detail)
{
    struct agent *a = e->ha->a;
    json_t *msg = cl_msg_new(fenced ? CL_MSG_HOST_FENCED : CL_MSG_HOST_FENCE_FAILED);
    json_object_set_new(msg, "host", json_string(e->host));
    json_object_set_new(msg, "seq", json_integer(e->seq));
    if (fenced)
        json_object_set_new(msg, "method", json_string(method));
    json_object_set_new(msg, "detail", json_string(detail));
    struct tern_err err;
    if (agent_send(a, msg, &err))
        e->sent_at = fenced ? agent_now() : 0;
    else
        agent_log("fencing %s: cannot broadcast the result: %s\n", e->host, err.msg);
    json_decref(msg);
}

/* What the runs said, for the state and the operator: one line. */
static void summarize(const struct fence_result *runs, size_t n, char *out, size_t cap)
{
    size_t pos = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && pos + 1 < cap; i++) {
        const struct fence_result *r = &runs[i];
        char tail[200];
        snprintf(tail, sizeof(tail), "%s", r->output);
        for (char *p = tail; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
        int w = snprintf(out + pos, cap - pos, "%s%s: %s in %.2f s%s%s", i ? "; " : "", r->device,
                         r->ok ? "ok" : r->timed_out ? "timed out"
                                                      : "failed",
                         r->ms / 1e3, r->ok || !tail[0] ? "" : ": ", r->ok ? "" : tail);
        if (w < 0)
            break;
        pos += (size_t)w < cap - pos ? (size_t)w : cap - pos - 1;
    }
}

static void on_fence_done(void *opaque, bool ok, const struct fence_result *runs, size_t n)
{
    struct episode *e = opaque;
    struct agent *a = e->ha->a;
    e->op = NULL;
    char detail[CL_REASON_MAX];
    summarize(runs, n, detail, sizeof(detail));
    double took = agent_now() - e->op_started;
    metrics_count_fence(a, ok);
    if (ok) {
        agent_log("fencing %s (episode %u): off after %.3f s (%s)\n", e->host, e->seq, took,
                  detail);
        send_result(e, true, "device", detail);
    } else {
        e->failures++;
        double wait = 1.0;
        for (unsigned i = 1; i < e->failures && wait < RETRY_MAX_S; i++)
            wait *= 2;
        if (wait > RETRY_MAX_S)
            wait = RETRY_MAX_S;
        e->next_try = agent_now() + wait;
        wake_at(e->ha, e->next_try);
        agent_log("fencing %s (episode %u) failed after %.3f s, again in %.0f s: %s\n", e->host,
                  e->seq, took, wait, detail);
        send_result(e, false, NULL, detail);
    }
    agent_changed(a);
}

/* How long after this agent saw a host with a `watchdog_s` watchdog lost
 * the host has certainly been reset (ha/failover.pml, DL_FIXED):
 *  - the device resets it watchdog_reset_deadline_ms after its last
 *    watchdog_healthy (the feeder's window, a keepalive period, the timeout);
 *  - that last call may come after this agent saw it lost: a host frozen
 *    (stopped whole) for less than the window feeds again when it thaws,
 *    with its old, quorate view of the cluster, until its corosync notices
 *    it is cut off (up to the membership timeout: token + consensus);
 *  - a margin for the clocks and the scheduling of two hosts.
 * (The deadline without the last two parts: the model's C_DEADLINE, where
 * a host frozen for a moment still runs its VM when the survivors restart
 * it.) */
static double deadline_s(struct agent *a, uint32_t watchdog_s)
{
    int64_t ms = watchdog_reset_deadline_ms(watchdog_s) + (int64_t)watchdog_s * 1000 / 2 +
                 (a->link ? cs_link_membership_timeout_ms(a->link) : 0) + DEADLINE_MARGIN_MS;
    return (double)ms / 1e3;
}

/* One host being fenced, seen by this agent. */
static void settle_episode(struct ha *ha, const struct cl_host *h, bool fencer)
{
    struct agent *a = ha->a;
    /* The watchdog deadline counts from when this agent saw the episode in
     * a quorate state: a minority's view of a lost host says nothing of
     * when the quorate side lost it (the model's SEEN_ANY_STATE). */
    struct episode *e = episode_of(ha, h->name, h->fence_seq, cl_state_quorate(agent_state(a)));
    if (!e)
        return; /* not tracked yet, or more hosts being fenced at once than tracked */
    if (!fencer) {
        if (e->op) {
            fence_op_cancel(e->op); /* another host fences now */
            e->op = NULL;
        }
        return;
    }
    double now = agent_now();
    if (e->sent_at && now - e->sent_at < RESEND_S)
        return; /* fenced: waiting for it to apply */
    struct tern_err err;
    if (!agent_can_change(a, &err))
        return;
    bool levels = fence_config_has_levels(&a->cfg.fence, h->name);
    if (levels && !e->op && now >= e->next_try) {
        e->op_started = now;
        agent_log("fencing %s (episode %u): running its fence levels\n", h->name, h->fence_seq);
        if (fence_op_start(a->loop, &a->cfg.fence, h->name, "off", on_fence_done, e, &e->op,
                           &err) < 0) {
            e->failures++;
            e->next_try = now + RETRY_MAX_S;
            send_result(e, false, NULL, err.msg);
        }
        return;
    }
    /* The watchdog's deadline: for a host that is not a member (it could
     * not be fed through it otherwise), when no level did it. */
    if (h->watchdog_s > 0 && !h->online && !e->op && (!levels || e->failures > 0)) {
        double wait = deadline_s(a, h->watchdog_s);
        if (now - e->seen < wait) {
            wake_at(ha, e->seen + wait);
        } else {
            char detail[CL_REASON_MAX];
            snprintf(detail, sizeof(detail), "lost for %.1f s, past its watchdog's deadline "
                     "(%u s timeout)", now - e->seen, h->watchdog_s);
            agent_log("fencing %s (episode %u): %s\n", h->name, h->fence_seq, detail);
            send_result(e, true, "watchdog", detail);
        }
    }
}

static void on_feed(struct loop *l, void *opaque)
{
    struct ha *ha = opaque;
    struct agent *a = ha->a;
    if (ha->wd && a->was_quorate && a->quorum_lost_at == 0)
        watchdog_healthy(ha->wd);
    ha->feed_timer = loop_add_timer(l, FEED_MS, on_feed, ha);
}

void ha_set_ring(struct agent *a, const uint32_t *nodes, size_t n)
{
    struct ha *ha = a->ha;
    for (int i = 0; i < HA_TRACK_MAX; i++) {
        bool back = false;
        for (size_t k = 0; k < n && !back; k++)
            back = nodes[k] == ha->gone[i].nodeid;
        if (back)
            ha->gone[i].nodeid = 0;
        ha->gone[i].sent_at = 0; /* a new ring: said again */
    }
}

/* Offline host h, whose node is out of the ring: host_down once it has been
 * out for host_down_after (a node away for a moment, its corosync
 * restarting, is no reason to fence it), then again after RESEND_S while it
 * does not apply (a configuration change may have lost it). */
static void host_away(struct ha *ha, const struct cl_host *h)
{
    double now = agent_now();
    int slot = -1, free_slot = -1;
    for (int i = 0; i < HA_TRACK_MAX && slot < 0; i++) {
        if (ha->gone[i].nodeid == h->nodeid)
            slot = i;
        else if (!ha->gone[i].nodeid && free_slot < 0)
            free_slot = i;
    }
    if (slot < 0) {
        if (free_slot < 0)
            return; /* more nodes away than tracked: the next round */
        slot = free_slot;
        ha->gone[slot].nodeid = h->nodeid;
        ha->gone[slot].since = now;
        ha->gone[slot].sent_at = 0;
    }
    double due = ha->gone[slot].since + ha->a->cfg.host_down_after_s;
    if (now < due) {
        wake_at(ha, due);
        return;
    }
    if (ha->gone[slot].sent_at && now - ha->gone[slot].sent_at < RESEND_S)
        return;
    json_t *msg = cl_msg_new(CL_MSG_HOST_DOWN);
    json_object_set_new(msg, "host", json_string(h->name));
    struct tern_err err;
    if (agent_send(ha->a, msg, &err)) {
        agent_log("host %s: offline, and its node has left corosync's membership too: lost, to "
                  "be fenced\n", h->name);
        ha->gone[slot].sent_at = now;
    } else {
        agent_log("host %s: cannot broadcast that its node is gone: %s\n", h->name, err.msg);
    }
    json_decref(msg);
}

void ha_reconcile(struct agent *a)
{
    struct ha *ha = a->ha;
    struct cl_state *s = agent_state(a);
    /* The watchdog arms once this host has been quorate. */
    if (!ha->wd && a->cfg.fence.watchdog[0] && a->was_quorate && a->quorum_lost_at == 0) {
        struct tern_err err;
        if (watchdog_open(a->cfg.fence.watchdog, a->cfg.fence.watchdog_timeout_s, &ha->wd,
                          &err) < 0) {
            agent_log("the watchdog %s: %s; this host is not self-fencing (survivors will not "
                      "count on its deadline)\n", a->cfg.fence.watchdog, err.msg);
            a->cfg.fence.watchdog[0] = '\0';
        } else {
            agent_log("watchdog %s armed (%u s); fed while this host is quorate\n",
                      a->cfg.fence.watchdog, watchdog_timeout_s(ha->wd));
            a->announced = false; /* the cluster learns its deadline */
        }
    }
    if (!replica_ready(a->replica))
        return;
    /* Episodes that are over (fenced, the host back, a newer one). */
    for (int i = 0; i < HA_TRACK_MAX; i++) {
        struct episode *e = &ha->eps[i];
        if (!e->used)
            continue;
        const struct cl_host *h = cl_state_host(s, e->host);
        if (!h || h->fence_seq != e->seq ||
            (h->fence != CL_FENCE_PENDING && h->fence != CL_FENCE_FAILED))
            episode_end(e);
    }
    for (size_t i = 0; i < cl_state_nr_hosts(s); i++) {
        const struct cl_host *h = cl_state_host_at(s, i);
        if (h->fence != CL_FENCE_PENDING && h->fence != CL_FENCE_FAILED)
            continue;
        const struct cl_host *f = cl_state_fencer(s, h->name);
        settle_episode(ha, h, f && f->nodeid == a->nodeid && agent_is_host(a));
    }
    /* Offline hosts whose node has left corosync's ring. */
    struct tern_err err;
    if (!cl_state_quorate(s) || !agent_can_change(a, &err))
        return;
    for (size_t i = 0; i < cl_state_nr_hosts(s); i++) {
        const struct cl_host *h = cl_state_host_at(s, i);
        if (h->online || h->lost || !h->nodeid || replica_ring_has(a->replica, h->nodeid) != 0)
            continue;
        const struct cl_host *f = cl_state_fencer(s, h->name);
        if (f && f->nodeid == a->nodeid && agent_is_host(a))
            host_away(ha, h);
    }
}

int ha_new(struct agent *a, struct tern_err *err)
{
    a->ha = calloc(1, sizeof(*a->ha));
    if (!a->ha)
        return tern_err_set(err, "out of memory");
    a->ha->a = a;
    if (a->cfg.fence.watchdog[0]) /* no watchdog: no timer waking the loop */
        a->ha->feed_timer = loop_add_timer(a->loop, FEED_MS, on_feed, a->ha);
    return 0;
}

void ha_free(struct agent *a, bool disarm)
{
    if (!a->ha)
        return;
    for (int i = 0; i < HA_TRACK_MAX; i++)
        if (a->ha->eps[i].used)
            episode_end(&a->ha->eps[i]);
    loop_del_timer(a->loop, a->ha->feed_timer);
    loop_del_timer(a->loop, a->ha->deadline_timer);
    watchdog_close(a->ha->wd, disarm);
    free(a->ha);
    a->ha = NULL;
}

double ha_lost_seen(struct agent *a, const char *host)
{
    double at = 0;
    for (int i = 0; a->ha && i < HA_TRACK_MAX; i++)
        if (!strcmp(a->ha->lost[i].host, host) && a->ha->lost[i].at > at)
            at = a->ha->lost[i].at;
    return at;
}

unsigned ha_watchdog_s(struct agent *a)
{
    /* Announced only once armed: the survivors may count on its deadline
     * only then (a host lost before it armed its watchdog is not reset by
     * it). */
    return a->ha && a->ha->wd ? watchdog_timeout_s(a->ha->wd) : 0;
}
