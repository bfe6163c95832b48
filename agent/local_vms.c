/* What this host does about the cluster state: start and stop its VMs,
 * run both ends of migrations, notice VM processes that end, and after a
 * restart re-attach to the VMs still running and settle what changed while
 * it was away. Every decision follows an applied (agreed) message, so all
 * hosts agree on who does what; the VMM's commit gate makes the
 * destination run the guest only after the ownership change is applied. */
#include "agent.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../common/unix_addr.h"

#define VMM_CALL_TIMEOUT_MS 3000
#define PROGRESS_INTERVAL_S 0.5
#define HANDOVER_KILL_AFTER_S 15.0
#define STOP_GRACE_MS 10000
/* How long the destination waits for the guest's first heartbeat after the
 * handover, so that migration_done carries the guest-observed pause. */
#define HANDOVER_GAP_WAIT_S 1.0

static const char *mstr(const json_t *msg, const char *key)
{
    const char *v = json_string_value(json_object_get(msg, key));
    return v ? v : "";
}

static uint64_t mid(const json_t *msg)
{
    return (uint64_t)json_integer_value(json_object_get(msg, "id"));
}

struct local_vm *local_find(struct agent *a, const char *name)
{
    for (int i = 0; i < AGENT_MAX_VMS; i++)
        if (a->vms[i].used && !strcmp(a->vms[i].proc.name, name))
            return &a->vms[i];
    return NULL;
}

static struct local_vm *local_new(struct agent *a)
{
    for (int i = 0; i < AGENT_MAX_VMS; i++)
        if (!a->vms[i].used) {
            memset(&a->vms[i], 0, sizeof(a->vms[i]));
            a->vms[i].used = true;
            a->vms[i].proc.pidfd = -1;
            a->vms[i].watch_fd = -1;
            return &a->vms[i];
        }
    return NULL;
}

static void watch_close(struct local_vm *lv)
{
    if (lv->watch_fd >= 0)
        close(lv->watch_fd);
    lv->watch_fd = -1;
}

/* Subscribes to the VMM's events for the migration under way. Without it
 * (an older VMM, a full control socket) the ticks still find everything,
 * only later. */
static void watch_open(struct local_vm *lv)
{
    watch_close(lv);
    struct sockaddr_un addr;
    if (unix_addr_fill(&addr, lv->proc.control, "control socket", NULL) < 0)
        return;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return;
    static const char req[] = "{\"cmd\":\"watch\"}\n";
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(req) - 1)) {
        close(fd);
        return;
    }
    lv->watch_fd = fd;
}

static void local_free(struct local_vm *lv)
{
    if (lv->proc.pidfd >= 0)
        close(lv->proc.pidfd);
    watch_close(lv);
    memset(lv, 0, sizeof(*lv));
    lv->watch_fd = -1;
}

static void send_msg(struct agent *a, json_t *msg)
{
    struct tern_err err;
    const char *type = mstr(msg, "type");
    if (!replica_synced(a->replica)) {
        agent_log("not synced; cannot send %s now\n", type);
    } else if (!agent_send(a, msg, &err)) {
        agent_log("sending %s: %s\n", type, err.msg);
    }
    json_decref(msg);
}

static void report(struct agent *a, const char *vm, const char *run, const char *detail)
{
    agent_log("VM %s: %s%s%s\n", vm, run, detail[0] ? ": " : "", detail);
    send_msg(a, json_pack("{s:s, s:s, s:s, s:s}", "type", "vm_report", "name", vm, "run", run,
                          "detail", detail));
}

static void send_abort(struct agent *a, struct local_vm *lv, uint64_t id, const char *reason)
{
    if (lv) {
        if (lv->mig_abort_sent)
            return;
        lv->mig_abort_sent = true;
    }
    agent_log("aborting migration %llu: %s\n", (unsigned long long)id, reason);
    char cut[CL_REASON_MAX];
    snprintf(cut, sizeof(cut), "%s", reason); /* the state keeps this much */
    send_msg(a, json_pack("{s:s, s:I, s:s}", "type", "migration_abort", "id", (json_int_t)id,
                          "reason", cut));
}

/* One control request to a VM process; vm_process_call already turns an
 * {"ok":false} reply into an error naming the VM and the command. */
static int vmm_call(struct local_vm *lv, const char *cmd, json_t *extra, json_t **reply,
                    struct tern_err *err)
{
    json_t *req = extra ? extra : json_object();
    json_object_set_new(req, "cmd", json_string(cmd));
    json_t *r = NULL;
    int rc = vm_process_call(&lv->proc, req, VMM_CALL_TIMEOUT_MS, &r, err);
    json_decref(req);
    if (rc == 0 && reply)
        *reply = r;
    else
        json_decref(r);
    return rc;
}

static void process_ended(struct agent *a, struct local_vm *lv);

/* SIGKILLs a VM process and forgets it (reporting as process_ended does:
 * set stopping or handed_over first when its end is expected). */
static void kill_local(struct agent *a, struct local_vm *lv)
{
    vm_process_kill(&lv->proc);
    process_ended(a, lv);
}

/* --- starting and stopping --- */

static void start_vm(struct agent *a, const struct cl_vm *vm)
{
    if (local_find(a, vm->name)) {
        report(a, vm->name, "running", "");
        return;
    }
    struct local_vm *lv = local_new(a);
    struct tern_err err;
    if (!lv) {
        report(a, vm->name, "crashed", "this host runs too many VM processes");
        return;
    }
    if (vm_process_start(&lv->proc, &a->env, vm->name, &vm->cfg, NULL, 0, NULL, &err) < 0) {
        local_free(lv);
        report(a, vm->name, "crashed", err.msg);
        return;
    }
    lv->role = LOCAL_RUNNING;
    report(a, vm->name, "running", "");
}

static void stop_vm(struct agent *a, const char *name)
{
    struct local_vm *lv = local_find(a, name);
    if (!lv) {
        report(a, name, "stopped", "");
        return;
    }
    lv->stopping = true;
    lv->asked_at = agent_now();
    struct tern_err err;
    if (vmm_call(lv, "stop", NULL, NULL, &err) < 0) {
        agent_log("stopping VM %s: %s; killing it\n", name, err.msg);
        kill_local(a, lv);
    }
}

/* --- migrations --- */

static int pick_port(struct agent *a, uint16_t *out)
{
    for (unsigned p = a->cfg.migration_port_min; p <= a->cfg.migration_port_max; p++) {
        bool used = false;
        for (int i = 0; i < AGENT_MAX_VMS; i++)
            used |= a->vms[i].used && a->vms[i].role == LOCAL_INCOMING && a->vms[i].port == p;
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

static void begin_incoming(struct agent *a, const struct cl_migration *m)
{
    struct cl_state *s = agent_state(a);
    const struct cl_vm *vm = cl_state_vm(s, m->vm);
    char reason[TERN_ERR_MAX + 256];
    struct tern_err err;
    uint16_t port;
    char token[65];
    if (!vm) {
        send_abort(a, NULL, m->id, "the VM is no longer defined");
        return;
    }
    if (local_find(a, m->vm)) {
        send_abort(a, NULL, m->id, "the destination already has a process for this VM");
        return;
    }
    if (pick_port(a, &port) < 0) {
        snprintf(reason, sizeof(reason), "no free migration port in %u-%u on %s",
                 a->cfg.migration_port_min, a->cfg.migration_port_max, a->host);
        send_abort(a, NULL, m->id, reason);
        return;
    }
    if (make_token(token, &err) < 0) {
        send_abort(a, NULL, m->id, err.msg);
        return;
    }
    struct local_vm *lv = local_new(a);
    if (!lv) {
        send_abort(a, NULL, m->id, "the destination runs too many VM processes");
        return;
    }
    if (vm_process_start(&lv->proc, &a->env, m->vm, &vm->cfg, a->cfg.migration_addr, port, token,
                         &err) < 0) {
        local_free(lv);
        snprintf(reason, sizeof(reason), "starting the incoming VMM on %s: %.900s", a->host, err.msg);
        send_abort(a, NULL, m->id, reason);
        return;
    }
    lv->role = LOCAL_INCOMING;
    lv->mig_id = m->id;
    lv->port = port;
    watch_open(lv); /* tells when the guest runs here */
    send_msg(a, json_pack("{s:s, s:I, s:i, s:s}", "type", "migration_listening", "id",
                          (json_int_t)m->id, "port", (int)port, "token", token));
}

static void start_sending(struct agent *a, const struct cl_migration *m)
{
    struct cl_state *s = agent_state(a);
    struct local_vm *lv = local_find(a, m->vm);
    const struct cl_host *to = cl_state_host(s, m->to);
    char reason[TERN_ERR_MAX + 256];
    if (!lv || lv->role != LOCAL_RUNNING) {
        send_abort(a, NULL, m->id, "the source has no running process for this VM");
        return;
    }
    if (!to) {
        send_abort(a, lv, m->id, "the destination host is unknown");
        return;
    }
    char uri[CL_ADDR_MAX + 32];
    if (strchr(to->migration_addr, ':'))
        snprintf(uri, sizeof(uri), "tls://[%s]:%u", to->migration_addr, m->port);
    else
        snprintf(uri, sizeof(uri), "tls://%s:%u", to->migration_addr, m->port);
    lv->mig_id = m->id;
    lv->mig_started = false;
    lv->mig_commit_sent = false;
    lv->mig_abort_sent = false;
    lv->last_phase[0] = '\0';
    json_t *req = json_pack("{s:s, s:s, s:s, s:I, s:b}", "uri", uri, "tls_dir", a->cfg.tls_dir,
                            "token", m->token, "downtime_ms", (json_int_t)m->downtime_ms,
                            "commit_gate", 1);
    struct tern_err err;
    if (vmm_call(lv, "migrate", req, NULL, &err) < 0) {
        snprintf(reason, sizeof(reason), "starting the migration on %s: %.900s", a->host, err.msg);
        send_abort(a, lv, m->id, reason);
        return;
    }
    lv->mig_started = true;
    lv->last_progress = 0;
    watch_open(lv); /* tells when the VMM reaches "ready" */
}

static void on_commit(struct agent *a, const struct cl_migration *m)
{
    struct local_vm *lv = local_find(a, m->vm);
    struct tern_err err;
    agent_log("migration %llu committed: %s now belongs to %s\n", (unsigned long long)m->id,
              m->vm, m->to);
    if (!strcmp(m->from, a->host) && lv && lv->role == LOCAL_RUNNING) {
        /* Ownership moved: this copy must never run again. */
        lv->handed_over = true;
        lv->asked_at = agent_now();
        if (vmm_call(lv, "migrate-commit", NULL, NULL, &err) < 0) {
            agent_log("migration %llu: source VMM: %s; killing it (the VM now "
                            "belongs to %s)\n", (unsigned long long)m->id, err.msg, m->to);
            kill_local(a, lv);
        }
    }
    if (!strcmp(m->to, a->host) && lv && lv->role == LOCAL_INCOMING) {
        if (vmm_call(lv, "migrate-commit", NULL, NULL, &err) < 0)
            agent_log("migration %llu: incoming VMM: %s (it may have got COMMIT "
                            "from the source already)\n", (unsigned long long)m->id, err.msg);
    }
}

static void on_abort(struct agent *a, const json_t *msg)
{
    uint64_t id = mid(msg);
    for (int i = 0; i < AGENT_MAX_VMS; i++) {
        struct local_vm *lv = &a->vms[i];
        if (!lv->used || lv->mig_id != id)
            continue;
        struct tern_err err;
        if (lv->role == LOCAL_INCOMING) {
            lv->stopping = true;
            if (vmm_call(lv, "migrate-abort", NULL, NULL, &err) < 0)
                kill_local(a, lv);
        } else {
            /* The guest stays here: resume it if the VMM paused it. */
            if (lv->mig_started && vmm_call(lv, "migrate-abort", NULL, NULL, &err) < 0 &&
                vmm_call(lv, "migrate-cancel", NULL, NULL, &err) < 0)
                agent_log("migration %llu aborted; the source VMM says: %s\n",
                        (unsigned long long)id, err.msg);
            lv->mig_id = 0;
            lv->mig_started = false;
            watch_close(lv);
        }
    }
}

void local_on_applied(struct agent *a, const json_t *msg)
{
    if (!a->reconciled)
        return; /* reconcile settles everything once we are in step */
    struct cl_state *s = agent_state(a);
    const char *type = mstr(msg, "type");
    if (!strcmp(type, "vm_start")) {
        const struct cl_vm *vm = cl_state_vm(s, mstr(msg, "name"));
        if (vm && !strcmp(vm->owner, a->host) && vm->run == CL_RUN_STARTING)
            start_vm(a, vm);
    } else if (!strcmp(type, "vm_stop")) {
        const struct cl_vm *vm = cl_state_vm(s, mstr(msg, "name"));
        if (vm && !strcmp(vm->owner, a->host) && vm->run == CL_RUN_STOPPING)
            stop_vm(a, vm->name);
    } else if (!strcmp(type, "migration_begin")) {
        const struct cl_vm *vm = cl_state_vm(s, mstr(msg, "vm"));
        const struct cl_migration *m = vm ? cl_state_migration(s, vm->migration_id) : NULL;
        if (m && !strcmp(m->to, a->host))
            begin_incoming(a, m);
    } else if (!strcmp(type, "migration_listening")) {
        const struct cl_migration *m = cl_state_migration(s, mid(msg));
        if (m && !strcmp(m->from, a->host))
            start_sending(a, m);
    } else if (!strcmp(type, "migration_commit")) {
        const struct cl_migration *m = cl_state_migration(s, mid(msg));
        if (m)
            on_commit(a, m);
    } else if (!strcmp(type, "migration_abort")) {
        on_abort(a, msg);
    } else if (!strcmp(type, "migration_done")) {
        /* The guest runs on the destination: the handed-over source VMM
         * (which lingers to show its result) has nothing left to do. */
        struct local_vm *lv = local_find(a, mstr(json_object_get(msg, "result"), "vm"));
        if (lv && lv->handed_over && lv->mig_id == mid(msg))
            kill_local(a, lv);
    }
}

/* --- the tick: follow migrations this host takes part in --- */

static void source_tick(struct agent *a, struct local_vm *lv, const struct cl_migration *m)
{
    json_t *st = NULL;
    struct tern_err err;
    if (vmm_call(lv, "status", NULL, &st, &err) < 0)
        return; /* the pidfd tells if it died */
    json_t *mig = json_object_get(st, "migration");
    const char *phase = mstr(mig, "phase"), *outcome = mstr(mig, "outcome");
    double now = agent_now();
    snprintf(lv->vmm_phase, sizeof(lv->vmm_phase), "%s", phase);
    /* Close to stop-and-copy: watch closely, the pause starts any moment. */
    double predicted = json_number_value(json_object_get(mig, "predicted_pause_ms"));
    lv->mig_near_end = !strcmp(phase, "stop-and-copy") || !strcmp(phase, "handover") ||
                       (strncmp(phase, "round", 5) == 0 && strcmp(phase, "round 0") != 0 &&
                        predicted > 0 && predicted <= 3.0 * m->downtime_ms);
    if ((!strcmp(outcome, "failed") || !strcmp(outcome, "cancelled")) && !lv->mig_commit_sent) {
        char reason[TERN_ERR_MAX];
        snprintf(reason, sizeof(reason), "%s", mstr(mig, "reason")[0] ? mstr(mig, "reason") : outcome);
        send_abort(a, lv, m->id, reason);
    } else if (!strcmp(phase, "ready") && !lv->mig_commit_sent && m->phase == CL_MIG_LISTENING) {
        if (a->quorate) {
            agent_log("migration %llu: %s is paused and the destination has everything; "
                      "committing\n", (unsigned long long)m->id, m->vm);
            lv->mig_commit_sent = true;
            send_msg(a, json_pack("{s:s, s:I}", "type", "migration_commit", "id",
                                  (json_int_t)m->id));
        }
    }
    if (json_is_object(mig) && (now - lv->last_progress >= PROGRESS_INTERVAL_S ||
                                strcmp(phase, lv->last_phase) != 0)) {
        lv->last_progress = now;
        snprintf(lv->last_phase, sizeof(lv->last_phase), "%s", phase);
        /* The VMM's progress fields the cluster relays (docs/agent-api.md
         * PROGRESS); absent ones travel as null. */
        static const char *const keys[] = {"round",          "bytes_sent",
                                           "bytes_remaining", "dirty_MBps",
                                           "bandwidth_MBps", "predicted_pause_ms",
                                           "elapsed_s",      "throttle_percent"};
        json_t *pr = json_pack("{s:s, s:s, s:s, s:s}", "vm", m->vm, "from", m->from, "to", m->to,
                               "phase", phase);
        for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
            json_t *v = json_object_get(mig, keys[k]);
            json_object_set(pr, keys[k], v ? v : json_null());
        }
        send_msg(a, json_pack("{s:s, s:I, s:o}", "type", "migration_progress", "id",
                              (json_int_t)m->id, "progress", pr));
    }
    json_decref(st);
}

static void destination_tick(struct agent *a, struct local_vm *lv, const struct cl_migration *m)
{
    json_t *st = NULL;
    struct tern_err err;
    if (vmm_call(lv, "status", NULL, &st, &err) < 0)
        return;
    json_t *hb = json_object_get(st, "heartbeat");
    if (!strcmp(mstr(st, "state"), "running") && !lv->mig_done_sent) {
        /* A guest that sends heartbeats shows the pause it saw with its
         * first one here: wait for it (a tick or two), not forever. */
        double now = agent_now();
        if (!lv->running_since)
            lv->running_since = now;
        if (json_integer_value(json_object_get(hb, "count")) > 0 &&
            !json_object_get(hb, "handover_gap_ms") &&
            now - lv->running_since < HANDOVER_GAP_WAIT_S) {
            json_decref(st);
            return;
        }
        lv->mig_done_sent = true;
        lv->role = LOCAL_RUNNING;
        watch_close(lv); /* it holds one of the VMM's few control slots */
        json_t *pr = m->progress;
        json_t *res = json_pack("{s:I, s:s, s:s, s:s, s:s, s:O, s:O, s:O, s:O}", "id",
                                (json_int_t)m->id, "vm", m->vm, "from", m->from, "to", m->to,
                                "outcome", "succeeded", "guest_pause_ms",
                                json_object_get(hb, "handover_gap_ms") ?: json_null(), "rounds",
                                json_object_get(pr, "round") ?: json_null(), "bytes_sent",
                                json_object_get(pr, "bytes_sent") ?: json_null(),
                                "migration_s", json_object_get(pr, "elapsed_s") ?: json_null());
        send_msg(a, json_pack("{s:s, s:I, s:o}", "type", "migration_done", "id",
                              (json_int_t)m->id, "result", res));
    }
    json_decref(st);
}

int local_tick(struct agent *a)
{
    int next_ms = AGENT_TICK_MS;
    if (!a->reconciled)
        return next_ms;
    struct cl_state *s = agent_state(a);
    double now = agent_now();
    for (int i = 0; i < AGENT_MAX_VMS; i++) {
        struct local_vm *lv = &a->vms[i];
        if (!lv->used)
            continue;
        if (lv->handed_over && now - lv->asked_at > HANDOVER_KILL_AFTER_S) {
            agent_log("VM %s: the handed-over source VMM is still there; killing it\n",
                    lv->proc.name);
            kill_local(a, lv); /* frees the slot */
            continue;
        }
        if (lv->stopping && lv->role == LOCAL_RUNNING &&
            now - lv->asked_at > STOP_GRACE_MS / 1000.0) {
            agent_log("VM %s did not stop within %d s; killing it\n", lv->proc.name,
                    STOP_GRACE_MS / 1000);
            kill_local(a, lv); /* frees the slot */
            continue;
        }
        if (!lv->mig_id || lv->handed_over)
            continue;
        const struct cl_migration *m = cl_state_migration(s, lv->mig_id);
        if (!m)
            continue;
        if (lv->role == LOCAL_RUNNING && lv->mig_started && !strcmp(m->from, a->host)) {
            source_tick(a, lv, m);
            /* The guest is paused from stop-and-copy until the commit: notice
             * "ready" within milliseconds, not a whole tick later. */
            if (!lv->mig_commit_sent)
                next_ms = lv->mig_near_end && lv->watch_fd < 0
                              ? AGENT_FAST_TICK_MS
                              : (next_ms < AGENT_MIGRATION_TICK_MS ? next_ms
                                                                   : AGENT_MIGRATION_TICK_MS);
        } else if (lv->role == LOCAL_INCOMING && m->phase == CL_MIG_COMMITTED) {
            destination_tick(a, lv, m);
            next_ms = next_ms < AGENT_MIGRATION_TICK_MS ? next_ms : AGENT_MIGRATION_TICK_MS;
        }
    }
    return next_ms;
}

/* --- processes that end --- */

bool local_migrating(struct agent *a)
{
    for (int i = 0; i < AGENT_MAX_VMS; i++)
        if (a->vms[i].used && a->vms[i].mig_id && !a->vms[i].handed_over)
            return true;
    return false;
}

int local_pollfds(struct agent *a, struct pollfd *fds, int max, int *slots)
{
    int n = 0;
    for (int i = 0; i < AGENT_MAX_VMS && n < max; i++) {
        if (!a->vms[i].used)
            continue;
        if (a->vms[i].proc.pidfd >= 0) {
            fds[n] = (struct pollfd){.fd = a->vms[i].proc.pidfd, .events = POLLIN};
            slots[n++] = i;
        }
        if (a->vms[i].watch_fd >= 0 && n < max) {
            fds[n] = (struct pollfd){.fd = a->vms[i].watch_fd, .events = POLLIN};
            slots[n++] = AGENT_MAX_VMS + i;
        }
    }
    return n;
}

/* Lines from a watch connection are only a nudge: the tick reads the
 * VMM's status itself. EOF or an error ends the watch (ticks go on). */
static void watch_readable(struct agent *a, struct local_vm *lv)
{
    char buf[4096];
    ssize_t r;
    do
        r = recv(lv->watch_fd, buf, sizeof(buf), MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r == 0 || (r < 0 && errno != EAGAIN))
        watch_close(lv);
    a->tick_now = true;
}

static void process_ended(struct agent *a, struct local_vm *lv)
{
    vm_process_reap(&lv->proc);
    struct cl_state *s = agent_state(a);
    const struct cl_vm *vm = cl_state_vm(s, lv->proc.name);
    const struct cl_migration *m = lv->mig_id ? cl_state_migration(s, lv->mig_id) : NULL;
    char detail[CL_REASON_MAX];
    bool expected_end = lv->stopping || lv->handed_over;
    char *tail = expected_end ? NULL : vm_process_log_tail(&lv->proc, 160);
    if (lv->proc.exit_status >= 0)
        snprintf(detail, sizeof(detail), "tern-vmm exited with status %d%s%s",
                 lv->proc.exit_status, tail && tail[0] ? ": " : "", tail ? tail : "");
    else
        snprintf(detail, sizeof(detail), "tern-vmm ended (status unknown)%s%s",
                 tail && tail[0] ? ": " : "", tail ? tail : "");
    free(tail);
    for (char *c = detail; *c; c++)
        if (*c == '\n')
            *c = ' ';
    char name[CL_NAME_MAX];
    snprintf(name, sizeof(name), "%s", lv->proc.name);
    bool handed_over = lv->handed_over;
    bool expected = lv->stopping || handed_over;
    enum local_role role = lv->role;
    uint64_t id = lv->mig_id;
    bool abort_sent = lv->mig_abort_sent;
    local_free(lv);
    agent_log("VM process %s ended (%s): %s\n", name,
            expected ? "expected" : "unexpected", detail);

    if (!vm)
        return;
    if (role == LOCAL_INCOMING) {
        if (m && m->phase != CL_MIG_COMMITTED && !abort_sent)
            send_abort(a, NULL, id, detail);
        else if (m && m->phase == CL_MIG_COMMITTED)
            report(a, name, "crashed", detail); /* it owned the VM already */
        return;
    }
    if (handed_over || strcmp(vm->owner, a->host) != 0)
        return;
    if (m && m->phase != CL_MIG_COMMITTED && !abort_sent)
        send_abort(a, NULL, id, detail);
    if (expected && vm->desired == CL_VM_STOPPED)
        report(a, name, "stopped", "");
    else if (!expected)
        report(a, name, "crashed", detail);
}

void local_handle(struct agent *a, const struct pollfd *fds, int n, const int *slots)
{
    /* Watches first: a process that ended frees its slot. */
    for (int i = 0; i < n; i++)
        if (fds[i].revents && slots[i] >= AGENT_MAX_VMS) {
            struct local_vm *lv = &a->vms[slots[i] - AGENT_MAX_VMS];
            if (lv->used && lv->watch_fd == fds[i].fd)
                watch_readable(a, lv);
        }
    for (int i = 0; i < n; i++)
        if (fds[i].revents && slots[i] < AGENT_MAX_VMS)
            process_ended(a, &a->vms[slots[i]]);
}

/* --- restart: re-attach, then settle --- */

void local_reattach(struct agent *a)
{
    json_t *names = vm_process_list_dirs(&a->env);
    size_t i;
    json_t *v;
    json_array_foreach(names, i, v)
    {
        struct local_vm *lv = local_new(a);
        if (!lv)
            break;
        struct tern_err err;
        int rc = vm_process_attach(&lv->proc, &a->env, json_string_value(v), &err);
        if (rc <= 0) {
            if (rc < 0)
                agent_log("re-attaching VM %s: %s\n", json_string_value(v), err.msg);
            local_free(lv);
            continue;
        }
        lv->role = lv->proc.incoming ? LOCAL_INCOMING : LOCAL_RUNNING;
        agent_log("re-attached VM %s (pid %d%s)\n", lv->proc.name, (int)lv->proc.pid,
                lv->role == LOCAL_INCOMING ? ", incoming migration" : "");
    }
    json_decref(names);
}

/* The migration a source VMM was running is gone from the state (aborted
 * elsewhere, or lost in a merge): the guest stays here, running. */
static void resume_source(struct agent *a, struct local_vm *lv)
{
    struct tern_err err;
    if (lv->mig_started && vmm_call(lv, "migrate-abort", NULL, NULL, &err) < 0 &&
        vmm_call(lv, "migrate-cancel", NULL, NULL, &err) < 0)
        agent_log("VM %s: its migration is gone; the source VMM says: %s\n", lv->proc.name,
                  err.msg);
    lv->mig_id = 0;
    lv->mig_started = false;
    lv->mig_commit_sent = false;
    watch_close(lv);
    (void)a;
}

void local_reconcile(struct agent *a, bool at_start)
{
    struct cl_state *s = agent_state(a);
    for (int i = 0; i < AGENT_MAX_VMS; i++) {
        struct local_vm *lv = &a->vms[i];
        if (!lv->used)
            continue;
        const struct cl_vm *vm = cl_state_vm(s, lv->proc.name);
        const struct cl_migration *m = vm && vm->migration_id
                                           ? cl_state_migration(s, vm->migration_id)
                                           : NULL;
        if (lv->role == LOCAL_INCOMING) {
            struct tern_err err;
            if (vm && !m && !strcmp(vm->owner, a->host) && cl_state_quorate(s) &&
                vm->run != CL_RUN_STARTING) {
                /* The VM is this host's and no migration is left: the
                 * handover committed and its record ended while this agent
                 * was away (its end was lost). The incoming VMM holds the
                 * guest: it runs here, the only copy. */
                if (vmm_call(lv, "migrate-commit", NULL, NULL, &err) == 0) {
                    agent_log("VM %s: its handover to this host committed; running the incoming "
                              "VMM\n", lv->proc.name);
                    lv->role = LOCAL_RUNNING;
                    lv->mig_id = 0;
                    watch_close(lv);
                    report(a, vm->name, "running", "");
                    continue;
                }
                agent_log("VM %s: the incoming VMM cannot run (%s); removing it\n",
                          lv->proc.name, err.msg);
                lv->stopping = true;
                kill_local(a, lv);
                continue;
            }
            if (!m || strcmp(m->to, a->host) != 0 || (lv->mig_id && lv->mig_id != m->id)) {
                agent_log("VM %s: incoming VMM without a migration to this host; "
                                "removing it\n", lv->proc.name);
                lv->stopping = true;
                kill_local(a, lv);
                continue;
            }
            lv->mig_id = m->id;
            if (lv->watch_fd < 0)
                watch_open(lv);
            if (m->phase == CL_MIG_COMMITTED)
                on_commit(a, m);
            continue;
        }
        if (lv->handed_over)
            continue;
        if (!vm || strcmp(vm->owner, a->host) != 0) {
            /* The cluster says this VM runs elsewhere (or nowhere): this copy
             * must not run. */
            agent_log("VM %s runs here but the cluster says its owner is '%s'; "
                            "killing this copy\n", lv->proc.name, vm ? vm->owner : "(undefined)");
            lv->handed_over = true;
            kill_local(a, lv);
            continue;
        }
        if (m && !strcmp(m->from, a->host)) {
            if (at_start || lv->mig_id != m->id) {
                lv->mig_id = m->id;
                lv->mig_started = true;
                send_abort(a, lv, m->id, at_start ? "the source host's agent restarted during "
                                                    "the migration"
                                                  : "the source host does not run this migration");
            }
            continue;
        }
        if (lv->mig_id)
            resume_source(a, lv);
        if (vm->run == CL_RUN_STARTING || vm->run == CL_RUN_CRASHED || vm->run == CL_RUN_LOST) {
            report(a, vm->name, "running", "");
        } else if (vm->run == CL_RUN_STOPPING) {
            if (!lv->stopping)
                stop_vm(a, vm->name);
        }
    }
    for (size_t i = 0; i < cl_state_nr_vms(s); i++) {
        const struct cl_vm *vm = cl_state_vm_at(s, i);
        if (strcmp(vm->owner, a->host) != 0 || local_find(a, vm->name))
            continue;
        if (vm->run == CL_RUN_STARTING && vm->desired == CL_VM_RUNNING)
            start_vm(a, vm);
        else if (vm->run == CL_RUN_STOPPING)
            report(a, vm->name, "stopped", "");
        else if (vm->run == CL_RUN_RUNNING || vm->run == CL_RUN_MIGRATING || vm->run == CL_RUN_LOST)
            report(a, vm->name, "crashed", at_start ? "its process was not found when ternd started"
                                                    : "its process is not running on its host");
    }
    for (size_t i = 0; i < cl_state_nr_migrations(s); i++) {
        const struct cl_migration *m = cl_state_migration_at(s, i);
        if (!strcmp(m->to, a->host) && m->phase != CL_MIG_COMMITTED && !local_find(a, m->vm))
            send_abort(a, NULL, m->id, at_start ? "the destination host's agent restarted"
                                                : "the destination host has no incoming VMM");
    }
}

void local_stop_all_tracking(struct agent *a)
{
    /* ternd exits: VMs keep running; only our handles go. */
    for (int i = 0; i < AGENT_MAX_VMS; i++)
        if (a->vms[i].used)
            local_free(&a->vms[i]);
}
