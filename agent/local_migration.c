/* Both ends of a live migration on this host, driven by local_reconcile
 * (local_vms.c) from the cluster state (docs/ternd.md "Migrations, step by
 * step"; docs/walkthrough.md follows one through these functions):
 *
 *  destination: migration_begin applied -> mig_start_incoming spawns
 *  `tern-vmm run --incoming ... --commit-gate` -> once it listens,
 *  migration_listening (port, token) -> ... -> the commit applied ->
 *  mig_settle_incoming sends it migrate-commit (only this runs the guest)
 *  -> guest running -> migration_done;
 *
 *  source: migration_listening applied -> mig_settle_source sends
 *  "migrate" -> status polls (and the VMM's watch events) follow its
 *  phases and relay progress -> phase ready -> migration_commit (with
 *  quorum) -> the commit applied -> mig_hand_over (migrate-commit: this copy
 *  never runs again).
 *
 * A migration that ends without commit (abort, a host left, a merge lost
 * it) makes the source resume its guest (mig_resume_source) and the
 * destination's VMM go. */
#include "local_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#define PROGRESS_INTERVAL_S 0.5
#define POLL_MS 500            /* source status while migrating */
#define POLL_NEAR_END_MS 5     /* ... near the handover, without a watch connection */
#define POLL_DEST_MS 20        /* destination after the commit, until the guest runs */
#define STATUS_TIMEOUT_MS 3000
/* How long the destination waits for the guest's first heartbeat after the
 * handover, so that migration_done carries the guest-observed pause. */
#define HANDOVER_GAP_WAIT_S 1.0

static const char *mstr(const json_t *j, const char *key)
{
    const char *v = json_string_value(json_object_get(j, key));
    return v ? v : "";
}

static int pick_port(struct agent *a, uint16_t *out)
{
    for (unsigned p = a->cfg.migration_port_min; p <= a->cfg.migration_port_max; p++) {
        bool used = false;
        for (int i = 0; i < LOCAL_MAX_VMS; i++)
            used |= a->local->vms[i].used && a->local->vms[i].incoming_kind && a->local->vms[i].port == p;
        if (used)
            continue;
        /* Someone else (another program) may hold it: try a bind. */
        struct sockaddr_storage ss = {0};
        socklen_t len;
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        if (inet_pton(AF_INET, a->cfg.migration_addr, &s4->sin_addr) == 1) {
            s4->sin_family = AF_INET;
            s4->sin_port = htons((uint16_t)p);
            len = sizeof(*s4);
        } else {
            inet_pton(AF_INET6, a->cfg.migration_addr, &s6->sin6_addr);
            s6->sin6_family = AF_INET6;
            s6->sin6_port = htons((uint16_t)p);
            len = sizeof(*s6);
        }
        int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        int br = bind(fd, (struct sockaddr *)&ss, len);
        close(fd);
        if (br == 0) {
            *out = (uint16_t)p;
            return 0;
        }
    }
    return -1;
}
static int make_token(char out[65], struct tern_err *err)
{
    unsigned char raw[32];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        return tern_err_errno(err, errno, "getrandom");
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return 0;
}


/* --- destination --- */

void mig_start_incoming(struct agent *a, const struct cl_vm *vm, const struct cl_migration *m)
{
    char reason[TERN_ERR_MAX + 256];
    struct tern_err err;
    uint16_t port;
    char token[65];
    if (pick_port(a, &port) < 0) {
        snprintf(reason, sizeof(reason), "no free migration port in %u-%u on %s",
                 a->cfg.migration_port_min, a->cfg.migration_port_max, a->host);
        local_abort(a, NULL, m->id, reason);
        return;
    }
    if (make_token(token, &err) < 0) {
        local_abort(a, NULL, m->id, err.msg);
        return;
    }
    agent_log("migration %llu: starting the incoming VMM for %s (from %s)\n",
              (unsigned long long)m->id, m->vm, m->from);
    struct local_vm *lv = local_spawn_incoming(a, vm, a->cfg.migration_addr, port, token, &err);
    if (!lv) {
        snprintf(reason, sizeof(reason), "starting the incoming VMM on %s: %.900s", a->host,
                 err.msg);
        local_abort(a, NULL, m->id, reason);
        return;
    }
    lv->mig_id = m->id;
    lv->port = port;
    snprintf(lv->token, sizeof(lv->token), "%s", token);
}

static void dest_poll(struct loop *l, void *opaque);

static void on_dest_status(void *opaque, json_t *st, const struct tern_err *err)
{
    struct local_vm *lv = opaque;
    struct agent *a = lv->a;
    lv->poll = NULL;
    if (err || lv->phase != LV_COMMITTING) {
        if (lv->phase == LV_COMMITTING)
            lv_timer(lv, POLL_DEST_MS, dest_poll);
        return;
    }
    if (strcmp(mstr(st, "state"), "running") != 0) {
        lv_timer(lv, POLL_DEST_MS, dest_poll);
        return;
    }
    /* A guest that sends heartbeats shows the pause it saw with its first
     * one here: wait for it (a poll or two), not forever. */
    double now = agent_now();
    if (!lv->running_since)
        lv->running_since = now;
    json_t *hb = json_object_get(st, "heartbeat");
    if (json_integer_value(json_object_get(hb, "count")) > 0 &&
        !json_object_get(hb, "handover_gap_ms") && now - lv->running_since < HANDOVER_GAP_WAIT_S) {
        lv_timer(lv, POLL_DEST_MS, dest_poll);
        return;
    }
    struct cl_state *s = agent_state(a);
    const struct cl_migration *m = lv->mig_id ? cl_state_migration(s, lv->mig_id) : NULL;
    lv->incoming_kind = false;
    lv_watch_close(lv); /* it holds one of the VMM's few control slots */
    lv_set_phase(lv, LV_RUNNING, "the guest runs here");
    if (!m) {
        local_report(a, lv->proc.name, CL_RUN_RUNNING, "");
        lv->mig_id = 0;
        return;
    }
    if (lv->done_sent == m->id)
        return;
    json_t *pr = m->progress;
    json_t *res = json_pack("{s:I, s:s, s:s, s:s, s:s, s:O, s:O, s:O, s:O}", "id",
                            (json_int_t)m->id, "vm", m->vm, "from", m->from, "to", m->to,
                            "outcome", "succeeded", "guest_pause_ms",
                            json_object_get(hb, "handover_gap_ms") ?: json_null(), "rounds",
                            json_object_get(pr, "round") ?: json_null(), "bytes_sent",
                            json_object_get(pr, "bytes_sent") ?: json_null(), "migration_s",
                            json_object_get(pr, "elapsed_s") ?: json_null());
    json_decref(lv->done_result);
    lv->done_result = res;
    lv->mig_id = 0; /* the state's migration record is what settle follows now */
    mig_done_again(a, lv, m);
}

void mig_done_again(struct agent *a, struct local_vm *lv, const struct cl_migration *m)
{
    if (lv->done_sent == m->id)
        return;
    if (!lv->done_result) /* re-attached after a restart: what is known */
        lv->done_result = json_pack("{s:I, s:s, s:s, s:s, s:s, s:n}", "id", (json_int_t)m->id,
                                    "vm", m->vm, "from", m->from, "to", m->to, "outcome",
                                    "succeeded", "guest_pause_ms");
    if (!lv->done_result)
        return;
    lv->done_sent = m->id;
    json_t *msg = cl_msg_new(CL_MSG_MIGRATION_DONE);
    json_object_set_new(msg, "id", json_integer((json_int_t)m->id));
    json_object_set(msg, "result", lv->done_result);
    agent_report(a, msg);
    json_decref(msg);
}

static void dest_poll(struct loop *l, void *opaque)
{
    (void)l;
    struct local_vm *lv = opaque;
    lv->timer = 0;
    if (lv->poll)
        return;
    json_t *req = json_pack("{s:s}", "cmd", "status");
    char what[96];
    snprintf(what, sizeof(what), "VM '%s' (status)", lv->proc.name);
    lv->poll = vmm_rpc_start(lv->a->loop, lv->proc.control, what, req, STATUS_TIMEOUT_MS,
                             on_dest_status, lv);
    json_decref(req);
}

static void on_dest_commit(void *opaque, json_t *reply, const struct tern_err *err);

static void dest_commit_again(struct loop *l, void *opaque)
{
    (void)l;
    struct local_vm *lv = opaque;
    lv->timer = 0;
    lv_command(lv, "migrate-commit", NULL, on_dest_commit);
}

static void on_dest_commit(void *opaque, json_t *reply, const struct tern_err *err)
{
    struct local_vm *lv = opaque;
    (void)reply;
    lv->cmd = NULL;
    if (err) {
        /* Told again shortly (if it ended, its pidfd says so first). */
        agent_log("%s; asking again\n", err->msg);
        lv_timer(lv, 200, dest_commit_again);
        return;
    }
    lv_timer(lv, 0, dest_poll);
}

/* The destination runs the guest: only on this, its own agent's word. */
static void dest_commit(struct agent *a, struct local_vm *lv, const char *why)
{
    agent_log("VM %s: %s; the incoming VMM runs the guest\n", lv->proc.name, why);
    (void)a;
    lv_set_phase(lv, LV_COMMITTING, why);
    if (lv->watch_fd < 0)
        lv_watch_open(lv);
    lv_command(lv, "migrate-commit", NULL, on_dest_commit);
}

void mig_settle_incoming(struct agent *a, struct local_vm *lv, const struct cl_vm *vm,
                         const struct cl_migration *m)
{
    struct cl_state *s = agent_state(a);
    if (lv->phase == LV_COMMITTING || lv->phase == LV_STOPPING)
        return;
    if (m && !strcmp(m->to, a->host) && (!lv->mig_id || lv->mig_id == m->id)) {
        lv->mig_id = m->id;
        if (m->phase == CL_MIG_COMMITTED) {
            char why[64];
            snprintf(why, sizeof(why), "migration %llu committed", (unsigned long long)m->id);
            if (!lv->cmd)
                dest_commit(a, lv, why);
        } else if (m->phase == CL_MIG_PREPARING && lv->up && lv->listening_sent != m->id) {
            if (!lv->port) {
                /* Re-attached after a restart: its port and token are gone
                 * with the old agent. */
                local_abort(a, lv, m->id, "the destination host's agent restarted");
                return;
            }
            lv->listening_sent = m->id;
            if (lv->watch_fd < 0)
                lv_watch_open(lv); /* tells when the guest runs here */
            json_t *msg = cl_msg_new(CL_MSG_MIGRATION_LISTENING);
            json_object_set_new(msg, "id", json_integer((json_int_t)m->id));
            json_object_set_new(msg, "port", json_integer(lv->port));
            json_object_set_new(msg, "token", json_string(lv->token));
            agent_report(a, msg);
            json_decref(msg);
        }
        return;
    }
    /* The VM is this host's and no migration is left: the handover
     * committed and its record ended while this agent could not follow it
     * (the destination's node was lost for a while, or its agent away). The
     * incoming VMM holds the guest: it runs here, the only copy. Only on a
     * quorate state: a minority does not know. */
    if (vm && !m && !strcmp(vm->owner, a->host) && cl_state_quorate(s) &&
        vm->run != CL_RUN_STARTING && !lv->cmd) {
        lv->mig_id = 0;
        dest_commit(a, lv, "its handover to this host committed");
        return;
    }
    /* Without a settled quorate state, an incoming VMM is kept: the
     * source's side may have committed (migrate/handover.pml,
     * KILL_WHEN_NOT_QUORATE). */
    if (!(replica_ready(a->replica) && cl_state_quorate(s) && a->quorate))
        return;
    lv->ended_expected = true;
    lv_kill(lv, "an incoming VMM without a migration to this host");
}

/* --- source --- */

static void source_poll(struct loop *l, void *opaque);

static void schedule_poll(struct local_vm *lv)
{
    bool near = lv->vmm_phase == MIG_PHASE_STOP_AND_COPY || lv->vmm_phase == MIG_PHASE_HANDOVER;
    int ms = near && lv->watch_fd < 0 ? POLL_NEAR_END_MS : POLL_MS;
    lv_timer(lv, ms, source_poll);
}

static void on_source_status(void *opaque, json_t *st, const struct tern_err *err)
{
    struct local_vm *lv = opaque;
    struct agent *a = lv->a;
    lv->poll = NULL;
    bool following = lv->phase == LV_MIGRATING || lv->phase == LV_READY ||
                     lv->phase == LV_COMMIT_SENT;
    if (!following)
        return;
    if (err) {
        schedule_poll(lv); /* its pidfd tells if it died */
        return;
    }
    struct cl_state *s = agent_state(a);
    const struct cl_migration *m = cl_state_migration(s, lv->mig_id);
    json_t *mig = json_object_get(st, "migration");
    const char *outcome = mstr(mig, "outcome");
    enum mig_phase phase;
    if (mig_phase_parse(mstr(mig, "phase"), &phase) < 0)
        phase = lv->vmm_phase;
    bool changed = phase != lv->vmm_phase;
    lv->vmm_phase = phase;
    if (m && (!strcmp(outcome, "failed") || !strcmp(outcome, "cancelled")) &&
        lv->phase != LV_COMMIT_SENT) {
        const char *reason = mstr(mig, "reason");
        local_abort(a, lv, m->id, reason[0] ? reason : outcome);
    } else if (phase == MIG_PHASE_READY && lv->phase == LV_MIGRATING) {
        lv_set_phase(lv, LV_READY, "paused; the destination has everything");
    }
    double now = agent_now();
    if (m && json_is_object(mig) && (changed || now - lv->last_progress >= PROGRESS_INTERVAL_S)) {
        lv->last_progress = now;
        /* The VMM's progress fields the cluster relays (docs/agent-api.md
         * PROGRESS); absent ones travel as null. */
        static const char *const keys[] = {"round",          "bytes_sent",
                                           "bytes_remaining", "dirty_MBps",
                                           "bandwidth_MBps", "predicted_pause_ms",
                                           "elapsed_s",      "throttle_percent"};
        json_t *pr = json_pack("{s:s, s:s, s:s, s:s}", "vm", m->vm, "from", m->from, "to", m->to,
                               "phase", mig_phase_name(phase));
        for (size_t k = 0; pr && k < sizeof(keys) / sizeof(keys[0]); k++) {
            json_t *v = json_object_get(mig, keys[k]);
            json_object_set(pr, keys[k], v ? v : json_null());
        }
        json_t *msg = cl_msg_new(CL_MSG_MIGRATION_PROGRESS);
        json_object_set_new(msg, "id", json_integer((json_int_t)m->id));
        json_object_set_new(msg, "progress", pr);
        agent_report(a, msg);
        json_decref(msg);
    }
    schedule_poll(lv);
}

static void source_poll(struct loop *l, void *opaque)
{
    (void)l;
    struct local_vm *lv = opaque;
    lv->timer = 0;
    if (lv->poll)
        return;
    json_t *req = json_pack("{s:s}", "cmd", "status");
    char what[96];
    snprintf(what, sizeof(what), "VM '%s' (status)", lv->proc.name);
    lv->poll = vmm_rpc_start(lv->a->loop, lv->proc.control, what, req, STATUS_TIMEOUT_MS,
                             on_source_status, lv);
    json_decref(req);
}

static void on_migrate_started(void *opaque, json_t *reply, const struct tern_err *err)
{
    struct local_vm *lv = opaque;
    struct agent *a = lv->a;
    (void)reply;
    lv->cmd = NULL;
    if (err) {
        char reason[TERN_ERR_MAX + 64];
        snprintf(reason, sizeof(reason), "starting the migration on %s: %.900s", a->host,
                 err->msg);
        local_abort(a, lv, lv->mig_id, reason);
        return;
    }
    lv->vmm_phase = MIG_PHASE_STARTING;
    lv->last_progress = 0;
    lv_set_phase(lv, LV_MIGRATING, "the VMM sends the guest");
    lv_watch_open(lv); /* tells when the VMM reaches "ready" */
    lv_timer(lv, 0, source_poll);
}

void mig_settle_source(struct agent *a, struct local_vm *lv, const struct cl_migration *m)
{
    struct cl_state *s = agent_state(a);
    if (m->phase != CL_MIG_LISTENING || lv->cmd)
        return;
    if (lv->phase == LV_RUNNING && lv->abort_sent != m->id) {
        const struct cl_host *to = cl_state_host(s, m->to);
        if (!to) {
            local_abort(a, lv, m->id, "the destination host is unknown");
            return;
        }
        char uri[CL_ADDR_MAX + 32];
        if (strchr(to->migration_addr, ':'))
            snprintf(uri, sizeof(uri), "tls://[%s]:%u", to->migration_addr, m->port);
        else
            snprintf(uri, sizeof(uri), "tls://%s:%u", to->migration_addr, m->port);
        lv->mig_id = m->id;
        agent_log("migration %llu: sending %s to %s\n", (unsigned long long)m->id, m->vm, m->to);
        json_t *req = json_pack("{s:s, s:s, s:s, s:I, s:b}", "uri", uri, "tls_dir",
                                a->cfg.tls_dir, "token", m->token, "downtime_ms",
                                (json_int_t)m->downtime_ms, "commit_gate", 1);
        lv_command(lv, "migrate", req, on_migrate_started);
    } else if (lv->phase == LV_READY && lv->commit_sent != m->id) {
        struct tern_err err;
        if (!agent_can_change(a, &err))
            return; /* the guest stays paused until quorum returns (or the abort) */
        agent_log("migration %llu: %s is paused and the destination has everything; "
                  "committing\n", (unsigned long long)m->id, m->vm);
        lv->commit_sent = m->id;
        json_t *msg = cl_msg_new(CL_MSG_MIGRATION_COMMIT);
        json_object_set_new(msg, "id", json_integer((json_int_t)m->id));
        if (agent_send(a, msg, &err))
            lv_set_phase(lv, LV_COMMIT_SENT, "migration_commit broadcast");
        else
            lv->commit_sent = 0;
        json_decref(msg);
    }
}

static void on_handed_over(void *opaque, json_t *reply, const struct tern_err *err)
{
    struct local_vm *lv = opaque;
    (void)reply;
    lv->cmd = NULL;
    if (err) {
        /* It must never run again, whatever it says. */
        lv->ended_expected = true;
        lv_kill(lv, err->msg);
    }
}

void mig_hand_over(struct agent *a, struct local_vm *lv, const struct cl_migration *m)
{
    (void)a;
    agent_log("migration %llu committed: %s now belongs to %s\n", (unsigned long long)m->id,
              m->vm, m->to);
    lv->mig_id = m->id;
    lv->ended_expected = true;
    vmm_rpc_cancel(lv->poll);
    lv->poll = NULL;
    lv_timer(lv, 0, NULL);
    lv_set_phase(lv, LV_HANDED_OVER, "the commit applied");
    lv_command(lv, "migrate-commit", NULL, on_handed_over);
}

static void on_resumed(void *opaque, json_t *reply, const struct tern_err *err)
{
    struct local_vm *lv = opaque;
    (void)reply;
    lv->cmd = NULL;
    if (err) {
        /* Not paused by a gate (a failed migration resumes by itself), or
         * gone: try the plain cancel, else only say so. */
        json_t *req = json_object();
        lv_command(lv, "migrate-cancel", req, NULL);
    }
}

void mig_resume_source(struct agent *a, struct local_vm *lv)
{
    (void)a;
    agent_log("VM %s: its migration %llu is over without a commit; the guest stays here\n",
              lv->proc.name, (unsigned long long)lv->mig_id);
    vmm_rpc_cancel(lv->poll);
    lv->poll = NULL;
    lv_timer(lv, 0, NULL);
    lv_watch_close(lv);
    bool started = lv->phase != LV_RUNNING;
    lv->mig_id = 0;
    lv->vmm_phase = MIG_PHASE_STARTING;
    if (lv->phase != LV_RUNNING)
        lv_set_phase(lv, LV_RUNNING, "its migration ended without a commit");
    if (started)
        lv_command(lv, "migrate-abort", NULL, on_resumed);
}

/* Lines from a watch connection are only a nudge: look at once. EOF or an
 * error ends the watch (the polls go on). */
void mig_watch_readable(struct local_vm *lv)
{
    char buf[4096];
    ssize_t r;
    do
        r = recv(lv->watch_fd, buf, sizeof(buf), MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r == 0 || (r < 0 && errno != EAGAIN))
        lv_watch_close(lv);
    if (lv->phase == LV_MIGRATING || lv->phase == LV_READY || lv->phase == LV_COMMIT_SENT) {
        if (!lv->poll)
            lv_timer(lv, 0, source_poll);
    } else if (lv->phase == LV_COMMITTING) {
        if (!lv->poll)
            lv_timer(lv, 0, dest_poll);
    }
}
