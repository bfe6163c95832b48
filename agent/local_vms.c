/* What this host runs, settled against the cluster state (agent.h
 * local_*): one table of VM processes, each with one phase, and one
 * function, local_reconcile, that compares what runs here with what the
 * state says and acts on every difference. It runs after every batch of
 * applied messages, configuration change and state install, and on a
 * timer: level-triggered, so a change that arrives by any road (a message,
 * a membership change, a merge, an agent restart) is acted on the same
 * way. Nothing here blocks: processes are spawned and probed, asked with
 * vmm_rpc calls, killed through their pidfd, and their end arrives as a
 * pidfd event. The steps of migrations are in local_migration.c. */
#include "local_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../common/unix_addr.h"

#define START_PROBE_MS 10
#define STOP_GRACE_MS 10000
#define RPC_TIMEOUT_MS 3000
#define REPORT_AGAIN_S 5.0
#define HANDOVER_KILL_AFTER_S 15.0

/* --- the table, phases --- */

static const char *const phase_names[LV__PHASES] = {
    [LV_STARTING] = "starting",     [LV_RUNNING] = "running",
    [LV_MIGRATING] = "migrating",   [LV_READY] = "ready",
    [LV_COMMIT_SENT] = "commit-sent", [LV_HANDED_OVER] = "handed-over",
    [LV_INCOMING] = "incoming",     [LV_COMMITTING] = "committing",
    [LV_STOPPING] = "stopping",     [LV_KILLING] = "killing",
};

/* Which phase may follow which (KILLING may follow any). */
static const unsigned allowed[LV__PHASES] = {
    [LV_STARTING] = 1u << LV_RUNNING | 1u << LV_STOPPING,
    [LV_RUNNING] = 1u << LV_MIGRATING | 1u << LV_STOPPING | 1u << LV_HANDED_OVER,
    [LV_MIGRATING] = 1u << LV_READY | 1u << LV_RUNNING | 1u << LV_HANDED_OVER,
    [LV_READY] = 1u << LV_COMMIT_SENT | 1u << LV_RUNNING | 1u << LV_HANDED_OVER,
    [LV_COMMIT_SENT] = 1u << LV_HANDED_OVER | 1u << LV_RUNNING | 1u << LV_READY,
    [LV_HANDED_OVER] = 0,
    [LV_INCOMING] = 1u << LV_COMMITTING | 1u << LV_STOPPING,
    [LV_COMMITTING] = 1u << LV_RUNNING,
    [LV_STOPPING] = 0,
    [LV_KILLING] = 0,
};

const char *lv_phase_name(enum lv_phase p)
{
    return p < LV__PHASES ? phase_names[p] : "?";
}

void lv_set_phase(struct local_vm *lv, enum lv_phase to, const char *why)
{
    if (lv->phase == to)
        return;
    if (to != LV_KILLING && !(allowed[lv->phase] & (1u << to)))
        agent_log("VM %s: unexpected step %s -> %s (%s); taking it\n", lv->proc.name,
                  lv_phase_name(lv->phase), lv_phase_name(to), why);
    lv->phase = to;
    lv->phase_since = agent_now();
    agent_changed(lv->a);
}

struct local_vm *lv_find(struct agent *a, const char *name)
{
    for (int i = 0; i < LOCAL_MAX_VMS; i++)
        if (a->local->vms[i].used && !strcmp(a->local->vms[i].proc.name, name))
            return &a->local->vms[i];
    return NULL;
}

static struct local_vm *lv_new(struct agent *a)
{
    for (int i = 0; i < LOCAL_MAX_VMS; i++) {
        struct local_vm *lv = &a->local->vms[i];
        if (!lv->used) {
            memset(lv, 0, sizeof(*lv));
            lv->used = true;
            lv->a = a;
            lv->proc.pidfd = -1;
            lv->watch_fd = -1;
            lv->phase_since = agent_now();
            return lv;
        }
    }
    return NULL;
}

void lv_timer(struct local_vm *lv, int ms, loop_timer_fn fn)
{
    loop_del_timer(lv->a->loop, lv->timer);
    lv->timer = fn ? loop_add_timer(lv->a->loop, ms, fn, lv) : 0;
}

void lv_watch_close(struct local_vm *lv)
{
    if (lv->watch_fd >= 0) {
        loop_del_fd(lv->a->loop, lv->watch_fd);
        close(lv->watch_fd);
    }
    lv->watch_fd = -1;
}

static void on_watch(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)l;
    (void)fd;
    (void)events;
    mig_watch_readable(opaque);
}

/* Subscribes to the VMM's events (phase changes, the guest running), so
 * migrations move on at once rather than at the next status poll. Without
 * it (a full control socket) the polls still find everything. */
void lv_watch_open(struct local_vm *lv)
{
    lv_watch_close(lv);
    struct sockaddr_un addr;
    if (unix_addr_fill(&addr, lv->proc.control, "control socket", NULL) < 0)
        return;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return;
    static const char req[] = "{\"cmd\":\"watch\"}\n";
    struct tern_err err;
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(req) - 1) ||
        loop_add_fd(lv->a->loop, fd, LOOP_READ, on_watch, lv, &err) < 0) {
        close(fd);
        return;
    }
    lv->watch_fd = fd;
}

static void on_pidfd(struct loop *l, int fd, unsigned events, void *opaque);

/* Forgets a process that ended (reaped already) or that ternd lets go. */
static void lv_free(struct local_vm *lv)
{
    struct agent *a = lv->a;
    vmm_rpc_cancel(lv->cmd);
    vmm_rpc_cancel(lv->poll);
    loop_del_timer(a->loop, lv->timer);
    lv_watch_close(lv);
    if (lv->proc.pidfd >= 0) {
        loop_del_fd(a->loop, lv->proc.pidfd);
        close(lv->proc.pidfd);
    }
    json_decref(lv->done_result);
    memset(lv, 0, sizeof(*lv));
    lv->watch_fd = -1;
    lv->proc.pidfd = -1;
    agent_changed(a);
}

static int watch_pidfd(struct local_vm *lv)
{
    struct tern_err err;
    if (loop_add_fd(lv->a->loop, lv->proc.pidfd, LOOP_READ, on_pidfd, lv, &err) < 0) {
        agent_log("VM %s: %s\n", lv->proc.name, err.msg);
        return -1;
    }
    return 0;
}

void lv_kill(struct local_vm *lv, const char *why)
{
    if (lv->phase == LV_KILLING)
        return;
    agent_log("VM %s: killing its process (pid %d): %s\n", lv->proc.name, (int)lv->proc.pid, why);
    vmm_rpc_cancel(lv->cmd);
    lv->cmd = NULL;
    vmm_rpc_cancel(lv->poll);
    lv->poll = NULL;
    lv_timer(lv, 0, NULL);
    lv_watch_close(lv);
    lv_set_phase(lv, LV_KILLING, why);
    vm_process_signal(&lv->proc, SIGKILL);
}

static void on_command_done(void *opaque, json_t *reply, const struct tern_err *err)
{
    struct local_vm *lv = opaque;
    (void)reply;
    lv->cmd = NULL;
    if (err)
        agent_log("%s\n", err->msg);
    agent_changed(lv->a);
}

void lv_command(struct local_vm *lv, const char *cmd, json_t *extra, vmm_rpc_fn done)
{
    vmm_rpc_cancel(lv->cmd);
    json_t *req = extra ? extra : json_object();
    json_object_set_new(req, "cmd", json_string(cmd));
    char what[96];
    snprintf(what, sizeof(what), "VM '%s' (%s)", lv->proc.name, cmd);
    lv->cmd = vmm_rpc_start(lv->a->loop, lv->proc.control, what, req, RPC_TIMEOUT_MS,
                            done ? done : on_command_done, lv);
    json_decref(req);
}

/* --- reports --- */

static struct report_mark *mark_of(struct agent *a, const char *vm, bool make)
{
    struct report_mark *free_one = NULL, *oldest = NULL;
    for (int i = 0; i < LOCAL_MAX_VMS; i++) {
        struct report_mark *r = &a->local->reports[i];
        if (r->vm[0] && !strcmp(r->vm, vm))
            return r;
        if (!r->vm[0] && !free_one)
            free_one = r;
        if (r->vm[0] && (!oldest || r->at < oldest->at))
            oldest = r;
    }
    if (!make)
        return NULL;
    struct report_mark *r = free_one ? free_one : oldest;
    memset(r, 0, sizeof(*r));
    snprintf(r->vm, sizeof(r->vm), "%s", vm);
    return r;
}

void local_report(struct agent *a, const char *vm, enum cl_vm_run run, const char *detail)
{
    local_report_as(a, vm, run, detail, false);
}

/* `host_failed`: the VM is gone by this host's failure, not its guest's
 * (this ternd found no process for it: the host rebooted, or stopped it
 * itself out of quorum); the state restarts an HA VM elsewhere then. */
void local_report_as(struct agent *a, const char *vm, enum cl_vm_run run, const char *detail,
                     bool host_failed)
{
    const struct cl_vm *v = cl_state_vm(agent_state(a), vm);
    if (!v || v->run == run)
        return; /* nothing to say: the state says so already */
    struct report_mark *r = mark_of(a, vm, true);
    double now = agent_now();
    /* Said, and on its way: not again until it was delivered (a later
     * request of ours applied, or this one: then the state moved on since,
     * e.g. the VM was started again after it crashed, and needs this said
     * anew), or it seems lost. */
    if (r->run == run && now - r->at < REPORT_AGAIN_S &&
        cl_state_origin_req(agent_state(a), a->nodeid) < r->req)
        return;
    static const char *const names[] = {[CL_RUN_RUNNING] = "running",
                                        [CL_RUN_STOPPED] = "stopped",
                                        [CL_RUN_CRASHED] = "crashed"};
    if (run != CL_RUN_RUNNING && run != CL_RUN_STOPPED && run != CL_RUN_CRASHED)
        return;
    agent_log("VM %s: %s%s%s\n", vm, names[run], detail[0] ? ": " : "", detail);
    json_t *m = cl_msg_new(CL_MSG_VM_REPORT);
    json_object_set_new(m, "name", json_string(vm));
    json_object_set_new(m, "run", json_string(names[run]));
    json_object_set_new(m, "detail", json_string(detail));
    if (host_failed)
        json_object_set_new(m, "host_failed", json_true());
    uint64_t req = agent_report(a, m);
    if (req) {
        r->run = run;
        r->at = now;
        r->req = req;
    }
    json_decref(m);
}

void local_abort(struct agent *a, struct local_vm *lv, uint64_t id, const char *reason)
{
    if (lv) {
        if (lv->abort_sent == id)
            return;
        lv->abort_sent = id;
    } else {
        /* Without a process to remember it: a small ring of the last ones. */
        for (int i = 0; i < 32; i++)
            if (a->local->aborted[i] == id)
                return;
        a->local->aborted[a->local->next_aborted++ % 32] = id;
    }
    agent_log("aborting migration %llu: %s\n", (unsigned long long)id, reason);
    json_t *m = cl_msg_new(CL_MSG_MIGRATION_ABORT);
    char cut[CL_REASON_MAX];
    snprintf(cut, sizeof(cut), "%s", reason); /* the state keeps this much */
    json_object_set_new(m, "id", json_integer((json_int_t)id));
    json_object_set_new(m, "reason", json_string(cut));
    agent_report(a, m);
    json_decref(m);
}

/* --- starting, stopping, ending --- */

static void on_start_probe(struct loop *l, void *opaque)
{
    (void)l;
    struct local_vm *lv = opaque;
    lv->timer = 0;
    struct tern_err err;
    int r = vm_process_poll_ready(&lv->proc, &err);
    if (r == 0 && agent_now() - lv->phase_since > vm_process_start_timeout_ms() / 1000.0) {
        vm_process_give_up(&lv->proc, &err);
        r = -1;
    }
    if (r == 0) {
        lv_timer(lv, START_PROBE_MS, on_start_probe);
        return;
    }
    if (r < 0) {
        /* It ended (reaped already): say why, and forget it. */
        struct agent *a = lv->a;
        char name[CL_NAME_MAX];
        snprintf(name, sizeof(name), "%s", lv->proc.name);
        bool incoming = lv->incoming_kind;
        uint64_t mig = lv->mig_id;
        lv->proc.pidfd = -1; /* closed by the reap */
        lv_free(lv);
        if (incoming && mig)
            local_abort(a, NULL, mig, err.msg);
        else
            local_report(a, name, CL_RUN_CRASHED, err.msg);
        return;
    }
    lv->up = true;
    agent_log("VM %s: %s process up (pid %d)\n", lv->proc.name,
              lv->incoming_kind ? "incoming" : "its", (int)lv->proc.pid);
    /* An HA restart after its host was fenced: how long since that host
     * was lost, as this agent saw it. */
    const struct cl_vm *vm = cl_state_vm(agent_state(lv->a), lv->proc.name);
    if (!lv->incoming_kind && vm && vm->recovered_from[0] &&
        !strncmp(vm->detail, "restarted by HA", 15)) {
        double lost = ha_lost_seen(lv->a, vm->recovered_from);
        metrics_count_vm_restart(lv->a);
        if (lost > 0) {
            metrics_observe_failover(lv->a, agent_now() - lost);
            agent_log("VM %s: restarted by HA %.3f s after %s was seen lost\n", vm->name,
                      agent_now() - lost, vm->recovered_from);
        }
    }
    if (!lv->incoming_kind)
        lv_set_phase(lv, LV_RUNNING, "its control socket answers");
    else
        agent_changed(lv->a); /* the destination can say it listens */
}

static struct local_vm *spawn(struct agent *a, const struct cl_vm *vm, const char *listen,
                              uint16_t port, const char *token, struct tern_err *err)
{
    for (unsigned i = 0; i < vm->cfg.nr_disks; i++)
        if (disk_policy_check(&a->cfg, vm->cfg.disks[i].path, true, err) < 0)
            return NULL;
    struct local_vm *lv = lv_new(a);
    if (!lv) {
        tern_err_set(err, "this host runs %d VM processes, the most it can", LOCAL_MAX_VMS);
        return NULL;
    }
    if (vm_process_spawn(&lv->proc, &a->env, vm->name, &vm->cfg, listen, port, token, err) < 0) {
        lv_free(lv);
        return NULL;
    }
    if (watch_pidfd(lv) < 0) {
        vm_process_kill(&lv->proc); /* only when out of memory: waits for its end */
        lv->proc.pidfd = -1;
        lv_free(lv);
        tern_err_set(err, "out of memory watching the new process");
        return NULL;
    }
    lv->incoming_kind = port != 0;
    lv->phase = port ? LV_INCOMING : LV_STARTING;
    lv->phase_since = agent_now();
    lv_timer(lv, START_PROBE_MS, on_start_probe);
    return lv;
}

static void start_guest(struct agent *a, const struct cl_vm *vm)
{
    struct tern_err err;
    agent_log("VM %s: starting it here\n", vm->name);
    if (!spawn(a, vm, NULL, 0, NULL, &err))
        local_report(a, vm->name, CL_RUN_CRASHED, err.msg);
}

struct local_vm *local_spawn_incoming(struct agent *a, const struct cl_vm *vm, const char *listen,
                                      uint16_t port, const char *token, struct tern_err *err)
{
    return spawn(a, vm, listen, port, token, err);
}

static void on_stop_grace(struct loop *l, void *opaque)
{
    (void)l;
    struct local_vm *lv = opaque;
    lv->timer = 0;
    lv_kill(lv, "it did not stop within 10 s");
}

static void stop_vm(struct local_vm *lv)
{
    agent_log("VM %s: stopping it\n", lv->proc.name);
    lv_set_phase(lv, LV_STOPPING, "the cluster asked it to stop");
    lv->ended_expected = true;
    lv_command(lv, "stop", NULL, NULL);
    lv_timer(lv, STOP_GRACE_MS, on_stop_grace);
}

static void on_pidfd(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)l;
    (void)fd;
    (void)events;
    struct local_vm *lv = opaque;
    struct agent *a = lv->a;
    loop_del_fd(a->loop, lv->proc.pidfd);
    bool expected = lv->ended_expected || lv->phase == LV_KILLING ||
                    lv->phase == LV_HANDED_OVER || lv->phase == LV_STOPPING;
    char *tail = expected ? NULL : vm_process_log_tail(&lv->proc, 160);
    vm_process_reap(&lv->proc); /* closes the pidfd */
    char detail[CL_REASON_MAX];
    if (lv->proc.exit_status >= 0)
        snprintf(detail, sizeof(detail), "tern-vmm exited with status %d%s%s",
                 lv->proc.exit_status, tail && tail[0] ? ": " : "", tail ? tail : "");
    else
        snprintf(detail, sizeof(detail), "tern-vmm ended (status unknown)%s%s",
                 tail && tail[0] ? ": " : "", tail ? tail : "");
    free(tail);
    for (char *c = detail; *c; c++)
        if (*c == '\n' || (unsigned char)*c < 0x20)
            *c = ' ';
    char name[CL_NAME_MAX];
    snprintf(name, sizeof(name), "%s", lv->proc.name);
    enum lv_phase phase = lv->phase;
    bool incoming = lv->incoming_kind;
    uint64_t mig = lv->mig_id, aborted = lv->abort_sent;
    agent_log("VM process %s ended (%s, in phase %s): %s\n", name,
              expected ? "expected" : "unexpected", lv_phase_name(phase), detail);
    lv_free(lv);

    struct cl_state *s = agent_state(a);
    const struct cl_vm *vm = cl_state_vm(s, name);
    const struct cl_migration *m = mig ? cl_state_migration(s, mig) : NULL;
    if (!vm || !a->reconciled)
        return;
    if (incoming) {
        if (m && m->phase != CL_MIG_COMMITTED && aborted != mig)
            local_abort(a, NULL, mig, detail);
        else if (!strcmp(vm->owner, a->host) && !vm->migration_id)
            local_report(a, name, CL_RUN_CRASHED, detail); /* it owned the VM already */
        return;
    }
    if (phase == LV_HANDED_OVER || strcmp(vm->owner, a->host) != 0)
        return;
    if (m && m->phase != CL_MIG_COMMITTED && !strcmp(m->from, a->host) && aborted != mig)
        local_abort(a, NULL, mig, detail);
    if (expected && vm->desired == CL_VM_STOPPED)
        local_report(a, name, CL_RUN_STOPPED, "");
    else if (!expected)
        local_report(a, name, CL_RUN_CRASHED, detail);
}

/* --- settling --- */

/* A state to give up a guest on: synced, no round open, quorate (the
 * configuration it was applied in and votequorum here). */
static bool state_settled(struct agent *a)
{
    return replica_ready(a->replica) && cl_state_quorate(agent_state(a)) && a->quorate;
}

void local_on_membership(struct agent *a)
{
    /* What was broadcast before may be lost with the configuration that
     * ended: say it again when the state still needs it
     * (migrate/handover.pml, ONE_SHOT_SENDS). */
    for (int i = 0; i < LOCAL_MAX_VMS; i++) {
        struct local_vm *lv = &a->local->vms[i];
        if (!lv->used)
            continue;
        lv->listening_sent = lv->commit_sent = lv->done_sent = lv->abort_sent = 0;
        if (lv->phase == LV_COMMIT_SENT)
            lv_set_phase(lv, LV_READY, "a configuration change: the commit is sent again if "
                                       "it did not apply");
    }
    memset(a->local->reports, 0, sizeof(a->local->reports));
    memset(a->local->aborted, 0, sizeof(a->local->aborted));
}

/* One process against the state. */
static void settle(struct agent *a, struct local_vm *lv, bool at_start)
{
    struct cl_state *s = agent_state(a);
    const struct cl_vm *vm = cl_state_vm(s, lv->proc.name);
    const struct cl_migration *m =
        vm && vm->migration_id ? cl_state_migration(s, vm->migration_id) : NULL;
    if (lv->phase == LV_KILLING)
        return;
    if (!vm) {
        if (state_settled(a))
            lv_kill(lv, "the VM is no longer defined");
        return;
    }
    if (lv->incoming_kind) {
        mig_settle_incoming(a, lv, vm, m);
        return;
    }
    /* Out of quorum: the survivors may fence this host and restart its HA
     * VMs once its deadline has passed; they must be gone by then. */
    if (vm->ha && agent_out_of_quorum_for(a, LOCAL_HA_SELF_STOP_S) &&
        lv->phase != LV_HANDED_OVER) {
        lv->ended_expected = true;
        lv_kill(lv, "this host is out of quorum: an HA VM stops before the self-fence deadline");
        return;
    }
    if (lv->phase == LV_HANDED_OVER) {
        if (!m || agent_now() - lv->phase_since > HANDOVER_KILL_AFTER_S) {
            lv->ended_expected = true;
            lv_kill(lv, m ? "the handed-over source is still there" : "the guest runs on the "
                                                                      "destination");
        }
        return;
    }
    /* What says this host must give up a guest it holds is only believed
     * from a settled quorate state (migrate/handover.pml): a commit or a
     * new owner seen on one side of a split may be lost in the merge, and
     * acting on it would leave the guest running nowhere. */
    bool settled = state_settled(a);
    if (strcmp(vm->owner, a->host) != 0) {
        if (m && m->phase == CL_MIG_COMMITTED && !strcmp(m->from, a->host)) {
            if (settled)
                mig_hand_over(a, lv, m); /* the commit is stable: this copy hands over */
            return;
        }
        if (!settled)
            return; /* kept (paused or running) until a quorate state says */
        char why[CL_NAME_MAX + 64];
        snprintf(why, sizeof(why), "the cluster says the VM runs on '%s'",
                 vm->owner[0] ? vm->owner : "(nowhere)");
        lv->ended_expected = true;
        lv_kill(lv, why); /* it must not run twice */
        return;
    }
    /* The destination after the commit: the guest runs here; until
     * migration_done applies, it is said again (after a configuration
     * change that may have lost it). */
    if (m && m->phase == CL_MIG_COMMITTED && !strcmp(m->to, a->host)) {
        if (lv->phase == LV_RUNNING)
            mig_done_again(a, lv, m);
        return;
    }
    if (m && !strcmp(m->from, a->host)) {
        if (at_start || (lv->mig_id && lv->mig_id != m->id)) {
            local_abort(a, lv, m->id, at_start ? "the source host's agent restarted during the "
                                                 "migration"
                                               : "the source host does not run this migration");
            return;
        }
        mig_settle_source(a, lv, m);
        return;
    }
    if (lv->mig_id)
        mig_resume_source(a, lv); /* its migration ended (aborted, or lost in a merge) */
    switch (vm->run) {
    case CL_RUN_STARTING:
    case CL_RUN_LOST:
    case CL_RUN_CRASHED:
        if (lv->phase == LV_RUNNING)
            local_report(a, vm->name, CL_RUN_RUNNING, "");
        break;
    case CL_RUN_STOPPING:
        if (lv->phase != LV_STOPPING)
            stop_vm(lv);
        break;
    case CL_RUN_RUNNING:
    case CL_RUN_MIGRATING:
    case CL_RUN_STOPPED:
        break;
    }
}

void local_reconcile(struct agent *a, bool at_start)
{
    if (!a->reconciled || !replica_synced(a->replica))
        return;
    struct cl_state *s = agent_state(a);
    for (int i = 0; i < LOCAL_MAX_VMS; i++)
        if (a->local->vms[i].used)
            settle(a, &a->local->vms[i], at_start);
    /* What the state puts here without a process. */
    for (size_t i = 0; i < cl_state_nr_vms(s); i++) {
        const struct cl_vm *vm = cl_state_vm_at(s, i);
        if (strcmp(vm->owner, a->host) != 0 || lv_find(a, vm->name))
            continue;
        const struct cl_migration *m =
            vm->migration_id ? cl_state_migration(s, vm->migration_id) : NULL;
        if (m && !strcmp(m->from, a->host) && m->phase != CL_MIG_COMMITTED) {
            local_abort(a, NULL, m->id, "the source has no process for this VM");
            continue;
        }
        struct tern_err err;
        switch (vm->run) {
        case CL_RUN_STARTING:
            /* Only on a quorate view (design.md invariant 4): a host cut off
             * before it started a VM it was given must not start it now,
             * while the others may already have fenced it by its watchdog's
             * deadline and restarted the VM (the model's
             * START_WITHOUT_QUORUM). It starts once quorum is back. */
            if (vm->desired == CL_VM_RUNNING && agent_can_change(a, &err))
                start_guest(a, vm);
            break;
        case CL_RUN_STOPPING:
            local_report(a, vm->name, CL_RUN_STOPPED, "");
            break;
        case CL_RUN_RUNNING:
        case CL_RUN_LOST:
        case CL_RUN_MIGRATING:
            /* This ternd did not see it end: the host failed (rebooted,
             * or this host stopped it out of quorum), not the guest. */
            local_report_as(a, vm->name, CL_RUN_CRASHED,
                            at_start ? "its process was not found when ternd started"
                                     : "its process is not running on its host",
                            true);
            break;
        case CL_RUN_STOPPED:
        case CL_RUN_CRASHED:
            break;
        }
    }
    /* Migrations to here without a process. */
    for (size_t i = 0; i < cl_state_nr_migrations(s); i++) {
        const struct cl_migration *m = cl_state_migration_at(s, i);
        if (strcmp(m->to, a->host) != 0 || lv_find(a, m->vm))
            continue;
        const struct cl_vm *vm = cl_state_vm(s, m->vm);
        if (m->phase == CL_MIG_PREPARING && !at_start && vm)
            mig_start_incoming(a, vm, m);
        else if (m->phase != CL_MIG_COMMITTED)
            local_abort(a, NULL, m->id, at_start ? "the destination host's agent restarted"
                                                 : "the destination host has no incoming VMM");
    }
}

void local_on_applied(struct agent *a, const json_t *msg)
{
    /* The guest runs on the destination: the handed-over source VMM (which
     * lingers to show its result) has nothing left to do. */
    if (cl_msg_type_of(msg) != CL_MSG_MIGRATION_DONE)
        return;
    const char *vm = json_string_value(json_object_get(json_object_get(msg, "result"), "vm"));
    struct local_vm *lv = vm ? lv_find(a, vm) : NULL;
    if (lv && lv->phase == LV_HANDED_OVER &&
        lv->mig_id == (uint64_t)json_integer_value(json_object_get(msg, "id"))) {
        lv->ended_expected = true;
        lv_kill(lv, "its guest runs on the destination");
    }
}

/* --- restart: re-attach --- */

void local_reattach(struct agent *a)
{
    json_t *names = vm_process_list_dirs(&a->env);
    size_t i;
    json_t *v;
    json_array_foreach(names, i, v)
    {
        struct local_vm *lv = lv_new(a);
        if (!lv)
            break;
        struct tern_err err;
        int rc = vm_process_attach(&lv->proc, &a->env, json_string_value(v), &err);
        if (rc <= 0) {
            if (rc < 0)
                agent_log("re-attaching VM %s: %s\n", json_string_value(v), err.msg);
            lv->proc.pidfd = -1;
            lv_free(lv);
            continue;
        }
        lv->incoming_kind = lv->proc.incoming;
        lv->phase = lv->incoming_kind ? LV_INCOMING : LV_RUNNING;
        lv->up = true;
        if (watch_pidfd(lv) < 0) {
            lv_free(lv);
            continue;
        }
        agent_log("re-attached VM %s (pid %d%s)\n", lv->proc.name, (int)lv->proc.pid,
                  lv->incoming_kind ? ", incoming migration" : "");
    }
    json_decref(names);
}

int local_new(struct agent *a, struct tern_err *err)
{
    a->local = calloc(1, sizeof(*a->local));
    if (!a->local)
        return tern_err_set(err, "out of memory");
    for (int i = 0; i < LOCAL_MAX_VMS; i++) {
        a->local->vms[i].watch_fd = -1;
        a->local->vms[i].proc.pidfd = -1;
    }
    return 0;
}

void local_free(struct agent *a)
{
    /* ternd exits: VMs keep running; only our handles go. */
    for (int i = 0; i < LOCAL_MAX_VMS; i++)
        if (a->local->vms[i].used)
            lv_free(&a->local->vms[i]);
    free(a->local);
    a->local = NULL;
}

size_t local_count(struct agent *a)
{
    size_t n = 0;
    for (int i = 0; i < LOCAL_MAX_VMS; i++)
        n += a->local->vms[i].used;
    return n;
}
