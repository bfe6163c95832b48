/* The state machine's transitions: one handler per message type
 * (docs/cluster-state.md). Each handler first checks everything that can
 * refuse the message and only then changes the state, so a refusal leaves
 * the state exactly as it was. Errors carry a code (common/err.h) that the
 * agent hands on as its API error code: invalid, not_found, conflict,
 * no_capacity (internal only for out-of-memory). */
#include "plan.h"
#include "state_internal.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct msg_ctx {
    struct cl_state *s;
    uint32_t sender;                 /* CPG node id */
    const struct cl_host *host;      /* the sender's host, or NULL */
    const json_t *msg;
    uint32_t origin_node;            /* from "origin", 0 if absent */
    uint64_t origin_req;
};

static int oom(struct tern_err *err)
{
    return tern_err_coded(err, TERN_ERR_INTERNAL, "out of memory");
}

/* A name field that must be a valid host or VM name. */
static int get_name(const json_t *msg, const char *key, char out[CL_NAME_MAX],
                    struct tern_err *err)
{
    if (cl__get_str(msg, key, NULL, out, CL_NAME_MAX, err) < 0)
        return -1;
    if (!cl_name_valid(out))
        return tern_err_coded(err, TERN_ERR_INVALID, "\"%s\": '%s' is not a valid name (1 to %d of "
                            "A-Z a-z 0-9 . _ -, starting with a letter or digit)",
                            key, out, CL_NAME_MAX - 1);
    return 0;
}

/* A free-text field (detail, reason) of any length, kept cut to `cap` at a
 * character boundary: a long crash report must not be refused. */
static int get_text(const json_t *msg, const char *key, const char *def, char *dst, size_t cap,
                    struct tern_err *err)
{
    const json_t *v = json_object_get(msg, key);
    if (!v) {
        cl__copy_utf8(dst, cap, def);
        return 0;
    }
    if (!json_is_string(v))
        return tern_err_coded(err, TERN_ERR_INVALID, "\"%s\" must be a string", key);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return tern_err_coded(err, TERN_ERR_INVALID, "\"%s\" contains a NUL character", key);
    cl__copy_utf8(dst, cap, json_string_value(v));
    return 0;
}

static int find_vm(struct msg_ctx *c, const char *key, struct cl_vm **vm, struct tern_err *err)
{
    char name[CL_NAME_MAX];
    if (get_name(c->msg, key, name, err) < 0)
        return -1;
    *vm = cl__vm(c->s, name, NULL);
    if (!*vm)
        return tern_err_coded(err, TERN_ERR_NOT_FOUND, "VM '%s' is not defined", name);
    return 0;
}

static int find_mig(struct msg_ctx *c, struct cl_migration **m, struct tern_err *err)
{
    uint64_t id;
    if (cl__get_uint(c->msg, "id", false, 0, 1, INT64_MAX, &id, err) < 0)
        return -1;
    *m = cl__mig(c->s, id, NULL);
    if (!*m)
        return tern_err_coded(err, TERN_ERR_NOT_FOUND, "migration %llu is not in progress",
                            (unsigned long long)id);
    return 0;
}

/* The sender must be host `name` (the one the step belongs to). */
static int sender_is(struct msg_ctx *c, const char *name, const char *role,
                     struct tern_err *err)
{
    if (!c->host)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "node %u has not announced itself as a host",
                            c->sender);
    if (strcmp(c->host->name, name) != 0)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "only %s '%s' may send this (sent by '%s')", role,
                            name, c->host->name);
    return 0;
}

/* A host that can take `cfg` now: exists, online, active, with room. */
static int host_can_take(const struct cl_state *s, const char *name,
                         const struct cl_vm_config *cfg, struct tern_err *err)
{
    const struct cl_host *h = cl_state_host(s, name);
    if (!h)
        return tern_err_coded(err, TERN_ERR_NOT_FOUND, "host '%s' is not known", name);
    if (!h->online)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "host '%s' is offline", name);
    if (h->mode != CL_HOST_ACTIVE)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "host '%s' is in maintenance", name);
    uint64_t mem;
    uint32_t cpus;
    cl_state_host_free(s, name, &mem, &cpus);
    if (mem < cfg->mem_mib || cpus < cfg->vcpus)
        return tern_err_coded(err, TERN_ERR_NO_CAPACITY, "host '%s' has %llu MiB and %u vCPUs free; "
                            "the VM needs %llu MiB and %u",
                            name, (unsigned long long)mem, cpus,
                            (unsigned long long)cfg->mem_mib, cfg->vcpus);
    return 0;
}

/* ---- hosts ---- */

static bool host_busy(const struct cl_state *s, const char *name)
{
    for (size_t i = 0; i < s->nr_vms; i++)
        if (strcmp(s->vms[i].owner, name) == 0)
            return true;
    for (size_t i = 0; i < s->nr_migs; i++)
        if (strcmp(s->migs[i].from, name) == 0 || strcmp(s->migs[i].to, name) == 0)
            return true;
    return false;
}

static int h_host_announce(struct msg_ctx *c, struct tern_err *err)
{
    struct cl_state *s = c->s;
    char name[CL_NAME_MAX], addr[CL_ADDR_MAX];
    uint64_t mem, vcpus, expected, watchdog;
    if (c->sender == 0)
        return tern_err_coded(err, TERN_ERR_INVALID, "node id 0 cannot announce a host");
    if (get_name(c->msg, "host", name, err) < 0 ||
        cl__get_uint(c->msg, "mem_mib", false, 0, 0, CL_HOST_MEM_MAX, &mem, err) < 0 ||
        cl__get_uint(c->msg, "vcpus", false, 0, 0, CL_HOST_VCPUS_MAX, &vcpus, err) < 0 ||
        cl__get_uint(c->msg, "expected_votes", true, 0, 0, CL_MAX_MEMBERS, &expected, err) < 0 ||
        cl__get_uint(c->msg, "watchdog_s", true, 0, 0, CL_WATCHDOG_MAX_S, &watchdog, err) < 0 ||
        cl__get_str(c->msg, "migration_addr", NULL, addr, sizeof(addr), err) < 0)
        return -1;
    unsigned char bin[16];
    if (inet_pton(AF_INET, addr, bin) != 1 && inet_pton(AF_INET6, addr, bin) != 1)
        return tern_err_coded(err, TERN_ERR_INVALID, "\"migration_addr\": '%s' is not an IPv4 or IPv6 "
                            "address", addr);
    size_t pos;
    struct cl_host *h = cl__host(s, name, &pos);
    /* A name stays bound to its node, online or not, until the operator
     * removes the host (or, later, it is fenced): a second node announcing
     * it would otherwise take over its VMs. */
    if (h && h->nodeid != c->sender && h->nodeid != 0)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "host name '%s' belongs to node %u (%s); a node "
                            "cannot take another's name. If node %u is gone for good, remove it "
                            "first: ternctl host remove %s",
                            name, h->nodeid, h->online ? "online" : "offline", h->nodeid, name);
    /* The node announced another name before (renamed or reinstalled):
     * its old record lets go of the node id, but only if no VM or
     * migration still points at it, so no VM can end up with two hosts. */
    struct cl_host *old = (struct cl_host *)cl_state_host_by_nodeid(s, c->sender);
    if (old && old != h && host_busy(s, old->name))
        return tern_err_coded(err, TERN_ERR_CONFLICT, "node %u is host '%s', which still has VMs or "
                            "migrations; move or stop them before renaming it to '%s'",
                            c->sender, old->name, name);
    if (!h && s->nr_hosts >= CL_MAX_HOSTS)
        return tern_err_coded(err, TERN_ERR_NO_CAPACITY, "the cluster has %d hosts, the most it "
                            "keeps; remove one first (ternctl host remove)", CL_MAX_HOSTS);
    if (!h && cl__reserve((void **)&s->hosts, &s->cap_hosts, s->nr_hosts, sizeof(*s->hosts)) < 0)
        return oom(err);

    if (old && old != h) {
        old->nodeid = 0;
        old->online = false;
    }
    if (!h) {
        memmove(&s->hosts[pos + 1], &s->hosts[pos], (s->nr_hosts - pos) * sizeof(*s->hosts));
        s->nr_hosts++;
        h = &s->hosts[pos];
        memset(h, 0, sizeof(*h));
        memcpy(h->name, name, sizeof(h->name));
        h->mode = CL_HOST_ACTIVE;
    }
    h->nodeid = c->sender;
    h->mem_mib = mem;
    h->vcpus = (uint32_t)vcpus;
    h->expected_votes = (uint32_t)expected;
    memcpy(h->migration_addr, addr, sizeof(h->migration_addr));
    /* Announced by a member of this configuration: online (and back). */
    h->online = false;
    for (size_t i = 0; i < s->nr_members; i++)
        if (s->members[i] == c->sender)
            h->online = true;
    h->watchdog_s = (uint32_t)watchdog;
    if (h->online) {
        h->lost = false;
        /* Its ternd is back: a fenced host was powered on again and starts
         * afresh (its VMs were released); a pending fence is moot. */
        if (h->fence != CL_FENCE_NONE) {
            h->fence = CL_FENCE_NONE;
            h->fence_attempts = 0;
        }
    }
    cl__update_quorum(s);
    return 0;
}

/* The operator vouches that a host is gone for good: its name is free, its
 * VMs have no host any more (crashed, "host removed"), migrations to or
 * from it end. Only for a host that is not online. */
static int h_host_remove(struct msg_ctx *c, struct tern_err *err)
{
    struct cl_state *s = c->s;
    char name[CL_NAME_MAX];
    if (get_name(c->msg, "host", name, err) < 0)
        return -1;
    size_t pos;
    struct cl_host *h = cl__host(s, name, &pos);
    if (!h)
        return tern_err_coded(err, TERN_ERR_NOT_FOUND, "host '%s' is not known", name);
    if (h->online)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "host '%s' is online (its ternd is in the "
                            "cluster); stop its ternd and corosync before removing it", name);
    /* A committed migration from it: the VM already belongs to the
     * destination, which only has to report it running. */
    for (size_t i = 0; i < s->nr_migs; i++)
        if (s->migs[i].phase == CL_MIG_COMMITTED && !strcmp(s->migs[i].from, name))
            return tern_err_coded(err, TERN_ERR_CONFLICT, "migration %llu from '%s' to '%s' has "
                                "committed and is finishing; remove the host once it has",
                                (unsigned long long)s->migs[i].id, name, s->migs[i].to);
    char reason[CL_REASON_MAX];
    snprintf(reason, sizeof(reason), "host %s was removed from the cluster by the operator", name);
    cl__end_migrations_of(s, name, reason);
    /* Committed migrations to it: the VM was its. */
    for (size_t i = 0; i < s->nr_migs;) {
        struct cl_migration *m = &s->migs[i];
        if (!strcmp(m->to, name))
            cl__mig_end(s, m, "failed", reason);
        else
            i++;
    }
    for (size_t i = 0; i < s->nr_vms; i++) {
        struct cl_vm *vm = &s->vms[i];
        if (strcmp(vm->owner, name) != 0 || vm->migration_id)
            continue;
        vm->owner[0] = '\0';
        if (vm->run != CL_RUN_STOPPED && vm->run != CL_RUN_CRASHED)
            vm->run = CL_RUN_CRASHED;
        cl__copy_utf8(vm->detail, sizeof(vm->detail), reason);
    }
    memmove(&s->hosts[pos], &s->hosts[pos + 1], (s->nr_hosts - pos - 1) * sizeof(*s->hosts));
    s->nr_hosts--;
    cl__update_quorum(s);
    return 0;
}

static int h_host_mode(struct msg_ctx *c, struct tern_err *err)
{
    static const char *const modes[] = {"active", "maintenance", NULL};
    char name[CL_NAME_MAX];
    int mode;
    if (get_name(c->msg, "host", name, err) < 0 ||
        cl__get_enum(c->msg, "mode", modes, &mode, err) < 0)
        return -1;
    struct cl_host *h = cl__host(c->s, name, NULL);
    if (!h)
        return tern_err_coded(err, TERN_ERR_NOT_FOUND, "host '%s' is not known", name);
    h->mode = mode ? CL_HOST_MAINTENANCE : CL_HOST_ACTIVE;
    return 0;
}

/* ---- VMs ---- */

/* Two VMs must not open one disk image where either writes it: two
 * writers corrupt it, and a reader sees a filesystem changing under it.
 * Shared read-only images are fine. Paths are compared as written (the
 * state cannot look at files, and hosts may mount storage differently).
 * The first other VM by name that conflicts with `cfg` (only VMs that are
 * not stopped or crashed, if `active_only`) sets *err (`conflict`, naming
 * it and the image); 0 if there is none. */
static int check_disk_conflict(const struct cl_state *s, const char *self,
                               const struct cl_vm_config *cfg, bool active_only, const char *doing,
                               struct tern_err *err)
{
    if (!cfg->nr_disks)
        return 0;
    for (size_t i = 0; i < s->nr_vms; i++) {
        const struct cl_vm *o = &s->vms[i];
        if (!strcmp(o->name, self))
            continue;
        if (active_only && (o->run == CL_RUN_STOPPED || o->run == CL_RUN_CRASHED))
            continue;
        for (unsigned d = 0; d < cfg->nr_disks; d++) {
            for (unsigned e = 0; e < o->cfg.nr_disks; e++) {
                const struct cl_disk *mine = &cfg->disks[d], *theirs = &o->cfg.disks[e];
                if (strcmp(mine->path, theirs->path) || (mine->ro && theirs->ro))
                    continue;
                return tern_err_coded(
                    err, TERN_ERR_CONFLICT,
                    "cannot %s VM '%s': disk %s is %s by VM '%s'%s%s; two VMs may share an "
                    "image only read-only",
                    doing, self, mine->path, theirs->ro ? "used read-only" : "used read-write",
                    o->name, active_only ? ", which is " : "",
                    active_only ? cl_vm_run_name(o->run) : "");
            }
        }
    }
    return 0;
}

static int h_vm_define(struct msg_ctx *c, struct tern_err *err)
{
    struct cl_state *s = c->s;
    struct cl_vm vm;
    memset(&vm, 0, sizeof(vm));
    if (get_name(c->msg, "name", vm.name, err) < 0 ||
        cl_vm_config_from_json(json_object_get(c->msg, "config"), &vm.cfg, err) < 0 ||
        cl__get_bool(c->msg, "ha", false, &vm.ha, err) < 0)
        return -1;
    const json_t *prio = json_object_get(c->msg, "priority");
    if (prio && (!json_is_integer(prio) || json_integer_value(prio) < TERN_PRIORITY_MIN ||
                 json_integer_value(prio) > TERN_PRIORITY_MAX))
        return tern_err_coded(err, TERN_ERR_INVALID, "\"priority\" must be a 32-bit integer");
    vm.priority = prio ? (int32_t)json_integer_value(prio) : 0;
    const json_t *group = json_object_get(c->msg, "group");
    if (group && !json_is_null(group) && !(json_is_string(group) && json_string_length(group) == 0) &&
        get_name(c->msg, "group", vm.group, err) < 0)
        return -1;
    size_t pos;
    if (cl__vm(s, vm.name, &pos))
        return tern_err_coded(err, TERN_ERR_CONFLICT, "VM '%s' is already defined", vm.name);
    if (check_disk_conflict(s, vm.name, &vm.cfg, false, "define", err) < 0)
        return -1;
    uint64_t charged = cl_state_charged_bytes(s), more = cl__vm_charge(&vm.cfg);
    if (charged + more > CL_STATE_MAX_BYTES)
        return tern_err_coded(err, TERN_ERR_NO_CAPACITY, "the cluster state would grow beyond %u "
                            "MiB with VM '%s' (%zu VMs defined, %llu bytes charged): every host "
                            "keeps all of it; undefine VMs that are no longer needed",
                            CL_STATE_MAX_BYTES >> 20, vm.name, s->nr_vms,
                            (unsigned long long)charged);
    if (cl__reserve((void **)&s->vms, &s->cap_vms, s->nr_vms, sizeof(*s->vms)) < 0)
        return oom(err);
    vm.desired = CL_VM_STOPPED;
    vm.run = CL_RUN_STOPPED;
    memmove(&s->vms[pos + 1], &s->vms[pos], (s->nr_vms - pos) * sizeof(*s->vms));
    s->vms[pos] = vm;
    s->nr_vms++;
    s->vm_charge += more;
    return 0;
}

static int h_vm_undefine(struct msg_ctx *c, struct tern_err *err)
{
    struct cl_state *s = c->s;
    struct cl_vm *vm;
    if (find_vm(c, "name", &vm, err) < 0)
        return -1;
    if (vm->desired != CL_VM_STOPPED)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "VM '%s' is meant to run; stop it first", vm->name);
    if ((vm->run != CL_RUN_STOPPED && vm->run != CL_RUN_CRASHED) || vm->migration_id)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "VM '%s' is %s on %s; wait until it has stopped",
                            vm->name, cl_vm_run_name(vm->run), vm->owner);
    size_t pos = (size_t)(vm - s->vms);
    s->vm_charge -= cl__vm_charge(&vm->cfg);
    json_decref(vm->last_migration);
    memmove(&s->vms[pos], &s->vms[pos + 1], (s->nr_vms - pos - 1) * sizeof(*s->vms));
    s->nr_vms--;
    return 0;
}

static int h_vm_start(struct msg_ctx *c, struct tern_err *err)
{
    struct cl_vm *vm;
    char host[CL_NAME_MAX];
    if (find_vm(c, "name", &vm, err) < 0)
        return -1;
    const json_t *jh = json_object_get(c->msg, "host");
    bool chosen = jh && !json_is_null(jh);
    if (chosen && get_name(c->msg, "host", host, err) < 0)
        return -1;
    switch (vm->run) {
    case CL_RUN_STOPPED:
    case CL_RUN_CRASHED:
        break;
    case CL_RUN_STOPPING:
        return tern_err_coded(err, TERN_ERR_CONFLICT, "VM '%s' is stopping on %s; start it once it has "
                            "stopped", vm->name, vm->owner);
    case CL_RUN_MIGRATING:
    case CL_RUN_STARTING:
    case CL_RUN_RUNNING:
        return tern_err_coded(err, TERN_ERR_CONFLICT, "VM '%s' is already running on %s", vm->name,
                            vm->owner);
    case CL_RUN_LOST:
        return tern_err_coded(err, TERN_ERR_CONFLICT, "VM '%s' may still run on %s, whose node left "
                            "the cluster; it can start elsewhere only once %s is back, fenced or "
                            "removed (ternctl host remove %s)",
                            vm->name, vm->owner, vm->owner, vm->owner);
    }
    /* Define refuses such pairs; a state from before that check may hold
     * them, and then only one of them runs at a time. */
    if (check_disk_conflict(c->s, vm->name, &vm->cfg, true, "start", err) < 0)
        return -1;
    if (chosen) {
        if (host_can_take(c->s, host, &vm->cfg, err) < 0)
            return -1;
    } else {
        struct cl_placement pl;
        snprintf(pl.vm, sizeof(pl.vm), "%s", vm->name);
        if (cl_plan_place(c->s, &pl, 1, NULL) == 0) {
            if (!strcmp(pl.why, CL_PLAN_OOM))
                return oom(err);
            return tern_err_coded(err, TERN_ERR_NO_CAPACITY, "%s", pl.why);
        }
        memcpy(host, pl.host, sizeof(host));
    }
    vm->desired = CL_VM_RUNNING;
    memcpy(vm->owner, host, sizeof(vm->owner));
    vm->run = CL_RUN_STARTING;
    vm->recover = false;
    vm->detail[0] = '\0';
    return 0;
}

static int h_vm_stop(struct msg_ctx *c, struct tern_err *err)
{
    struct cl_vm *vm;
    if (find_vm(c, "name", &vm, err) < 0)
        return -1;
    if (vm->run == CL_RUN_MIGRATING)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "VM '%s' is being migrated (migration %llu); wait "
                            "for it to finish or cancel it",
                            vm->name, (unsigned long long)vm->migration_id);
    vm->desired = CL_VM_STOPPED;
    vm->recover = false;
    if (vm->run == CL_RUN_RUNNING || vm->run == CL_RUN_STARTING)
        vm->run = CL_RUN_STOPPING;
    return 0;
}

static int h_vm_report(struct msg_ctx *c, struct tern_err *err)
{
    static const char *const runs[] = {"running", "stopped", "crashed", NULL};
    struct cl_vm *vm;
    int run;
    bool host_failed;
    char detail[CL_REASON_MAX];
    const json_t *jd = json_object_get(c->msg, "detail");
    if (find_vm(c, "name", &vm, err) < 0 || cl__get_enum(c->msg, "run", runs, &run, err) < 0 ||
        get_text(c->msg, "detail", "", detail, sizeof(detail), err) < 0 ||
        cl__get_bool(c->msg, "host_failed", false, &host_failed, err) < 0)
        return -1;
    if (!c->host)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "node %u has not announced itself as a host",
                            c->sender);
    if (vm->owner[0] == '\0' || strcmp(vm->owner, c->host->name) != 0)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "VM '%s' is not %s's (owner: %s)", vm->name,
                            c->host->name, vm->owner[0] ? vm->owner : "none");
    if (run == 0) {
        /* Running again is news only for a VM that was starting, or whose
         * host was lost and is back; a report racing with a stop or a
         * migration does not undo them. */
        if (vm->run == CL_RUN_STARTING || vm->run == CL_RUN_LOST)
            vm->run = CL_RUN_RUNNING;
        if (vm->run == CL_RUN_RUNNING && !jd)
            vm->detail[0] = '\0';
    } else {
        /* The process is gone: so is any migration it was part of. */
        if (vm->migration_id) {
            struct cl_migration *m = cl__mig(c->s, vm->migration_id, NULL);
            if (m) {
                char reason[CL_REASON_MAX];
                snprintf(reason, sizeof(reason), "the VM %s on %s during the migration",
                         run == 1 ? "stopped" : "crashed", vm->owner);
                cl__mig_end(c->s, m, "failed", reason);
            }
            vm->migration_id = 0;
        }
        /* An HA VM meant to run that its host lost (it stops its HA VMs
         * itself once out of quorum; its process was gone when ternd
         * started, after the host crashed and rebooted; or it died while
         * the host was lost): a host failure, not the guest's; it waits
         * for a host like the VMs of a fenced host (placed once the
         * configuration is quorate). Crashed for good, nothing would
         * restart it (the model's NO_CRASH_RECOVERY). The host says so
         * (`host_failed`): the state alone cannot tell when the host's own
         * disk copy, from before its crash, won the merge and still has the
         * VM running (RECOVER_LOST_ONLY). */
        if (vm->ha && vm->desired == CL_VM_RUNNING &&
            (vm->run == CL_RUN_LOST || !c->s->quorate || host_failed)) {
            snprintf(vm->recovered_from, sizeof(vm->recovered_from), "%s", vm->owner);
            if (vm->run == CL_RUN_LOST || !c->s->quorate || !detail[0])
                snprintf(vm->detail, sizeof(vm->detail), "its host %s lost it while cut off from "
                         "the cluster; waiting for a host to restart it", vm->owner);
            else
                snprintf(vm->detail, sizeof(vm->detail), "its host %s lost it (%.*s); waiting "
                         "for a host to restart it", vm->owner, 120, detail);
            vm->owner[0] = '\0';
            vm->run = CL_RUN_STOPPED;
            vm->recover = true;
            return 0;
        }
        vm->run = run == 1 ? CL_RUN_STOPPED : CL_RUN_CRASHED;
        vm->owner[0] = '\0';
        if (run == 2 && !jd)
            snprintf(detail, sizeof(detail), "the VM process ended unexpectedly");
    }
    if (jd || run == 2)
        memcpy(vm->detail, detail, sizeof(vm->detail));
    return 0;
}

/* ---- migrations ---- */

static int h_migration_begin(struct msg_ctx *c, struct tern_err *err)
{
    struct cl_state *s = c->s;
    struct cl_vm *vm;
    char to[CL_NAME_MAX];
    uint64_t downtime;
    if (find_vm(c, "vm", &vm, err) < 0 || get_name(c->msg, "to", to, err) < 0 ||
        cl__get_uint(c->msg, "downtime_ms", true, CL_DOWNTIME_DEFAULT, TERN_DOWNTIME_MS_MIN,
                     CL_DOWNTIME_MAX, &downtime, err) < 0)
        return -1;
    if (vm->migration_id)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "VM '%s' is already being migrated (migration "
                            "%llu)", vm->name, (unsigned long long)vm->migration_id);
    if (vm->run != CL_RUN_RUNNING)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "VM '%s' is %s; only a running VM can migrate",
                            vm->name, cl_vm_run_name(vm->run));
    if (strcmp(to, vm->owner) == 0)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "VM '%s' already runs on %s", vm->name, to);
    const struct cl_host *from = cl__host(s, vm->owner, NULL);
    if (!from || !from->online)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "VM '%s' runs on %s, which is offline", vm->name,
                            vm->owner);
    if (host_can_take(s, to, &vm->cfg, err) < 0)
        return -1;
    if (cl__reserve((void **)&s->migs, &s->cap_migs, s->nr_migs, sizeof(*s->migs)) < 0)
        return oom(err);
    struct cl_migration *m = &s->migs[s->nr_migs++];
    memset(m, 0, sizeof(*m));
    m->id = ++s->mig_counter;
    memcpy(m->vm, vm->name, sizeof(m->vm));
    memcpy(m->from, vm->owner, sizeof(m->from));
    memcpy(m->to, to, sizeof(m->to));
    m->phase = CL_MIG_PREPARING;
    m->downtime_ms = (uint32_t)downtime;
    m->origin_nodeid = c->origin_node;
    m->origin_req = c->origin_req;
    vm->run = CL_RUN_MIGRATING;
    vm->migration_id = m->id;
    return 0;
}

static int h_migration_listening(struct msg_ctx *c, struct tern_err *err)
{
    struct cl_migration *m;
    uint64_t port;
    char token[CL_TOKEN_MAX];
    if (find_mig(c, &m, err) < 0 ||
        cl__get_uint(c->msg, "port", false, 0, 1, 65535, &port, err) < 0 ||
        cl__get_str(c->msg, "token", NULL, token, sizeof(token), err) < 0)
        return -1;
    if (token[0] == '\0')
        return tern_err_coded(err, TERN_ERR_INVALID, "\"token\" is empty");
    if (sender_is(c, m->to, "the destination", err) < 0)
        return -1;
    if (m->phase != CL_MIG_PREPARING)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "migration %llu is %s, not preparing",
                            (unsigned long long)m->id, cl_mig_phase_name(m->phase));
    m->phase = CL_MIG_LISTENING;
    m->port = (uint16_t)port;
    memcpy(m->token, token, sizeof(m->token));
    return 0;
}

static int h_migration_progress(struct msg_ctx *c, struct tern_err *err)
{
    struct cl_migration *m;
    if (find_mig(c, &m, err) < 0 || sender_is(c, m->from, "the source", err) < 0)
        return -1;
    json_t *p = cl__blob_copy(json_object_get(c->msg, "progress"), "\"progress\"", err);
    if (!p)
        return -1;
    json_decref(m->progress);
    m->progress = p;
    return 0;
}

static int h_migration_commit(struct msg_ctx *c, struct tern_err *err)
{
    struct cl_migration *m;
    if (find_mig(c, &m, err) < 0 || sender_is(c, m->from, "the source", err) < 0)
        return -1;
    if (m->phase != CL_MIG_LISTENING)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "migration %llu is %s; it can commit only while "
                            "the destination listens",
                            (unsigned long long)m->id, cl_mig_phase_name(m->phase));
    struct cl_vm *vm = cl__vm(c->s, m->vm, NULL);
    m->phase = CL_MIG_COMMITTED;
    if (vm)
        memcpy(vm->owner, m->to, sizeof(vm->owner));
    return 0;
}

static int h_migration_done(struct msg_ctx *c, struct tern_err *err)
{
    struct cl_migration *m;
    if (find_mig(c, &m, err) < 0 || sender_is(c, m->to, "the destination", err) < 0)
        return -1;
    if (m->phase != CL_MIG_COMMITTED)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "migration %llu is %s, not committed",
                            (unsigned long long)m->id, cl_mig_phase_name(m->phase));
    json_t *r = cl__blob_copy(json_object_get(c->msg, "result"), "\"result\"", err);
    if (!r)
        return -1;
    if (json_dumpb(r, NULL, 0, JSON_COMPACT) > CL_RESULT_MAX - 256) {
        json_decref(r);
        return tern_err_coded(err, TERN_ERR_INVALID, "\"result\" is too large (at most %d bytes)",
                              CL_RESULT_MAX - 256);
    }
    /* The record names the migration as the state knows it, whatever the
     * sender wrote. */
    if (json_object_set_new(r, "id", json_integer((json_int_t)m->id)) < 0 ||
        json_object_set_new(r, "vm", json_string(m->vm)) < 0 ||
        json_object_set_new(r, "from", json_string(m->from)) < 0 ||
        json_object_set_new(r, "to", json_string(m->to)) < 0 ||
        (!json_object_get(r, "outcome") &&
         json_object_set_new(r, "outcome", json_string("succeeded")) < 0)) {
        json_decref(r);
        return oom(err);
    }
    struct cl_vm *vm = cl__vm(c->s, m->vm, NULL);
    if (vm) {
        vm->run = CL_RUN_RUNNING;
        vm->migration_id = 0;
        json_decref(vm->last_migration);
        vm->last_migration = r;
    } else {
        json_decref(r);
    }
    size_t pos;
    if (cl__mig(c->s, m->id, &pos))
        cl__mig_remove(c->s, pos);
    return 0;
}

static int h_migration_abort(struct msg_ctx *c, struct tern_err *err)
{
    static const char *const outcomes[] = {"failed", "cancelled", NULL};
    struct cl_migration *m;
    char reason[CL_REASON_MAX];
    int outcome = 0;
    if (find_mig(c, &m, err) < 0 ||
        get_text(c->msg, "reason", "aborted", reason, sizeof(reason), err) < 0)
        return -1;
    if (json_object_get(c->msg, "outcome") &&
        cl__get_enum(c->msg, "outcome", outcomes, &outcome, err) < 0)
        return -1;
    if (m->phase == CL_MIG_COMMITTED)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "migration %llu is already committed; the VM now "
                            "belongs to %s",
                            (unsigned long long)m->id, m->to);
    struct cl_vm *vm = cl__vm(c->s, m->vm, NULL);
    if (vm) {
        if (vm->run == CL_RUN_MIGRATING)
            vm->run = CL_RUN_RUNNING;
        memcpy(vm->detail, reason, sizeof(vm->detail));
    }
    cl__mig_end(c->s, m, outcomes[outcome], reason);
    return 0;
}

/* ---- fencing ---- */

/* The host named in a fencing message, and its episode ("seq"). */
static int fence_target(struct msg_ctx *c, struct cl_host **h, uint32_t *seq, bool need_seq,
                        struct tern_err *err)
{
    char name[CL_NAME_MAX];
    uint64_t v = 0;
    if (get_name(c->msg, "host", name, err) < 0 ||
        (need_seq && cl__get_uint(c->msg, "seq", false, 0, 0, UINT32_MAX, &v, err) < 0))
        return -1;
    *h = cl__host(c->s, name, NULL);
    if (!*h)
        return tern_err_coded(err, TERN_ERR_NOT_FOUND, "host '%s' is not known", name);
    *seq = (uint32_t)v;
    return 0;
}

/* The operator asks for a host to be fenced now (ternctl host fence): a
 * new episode, run by the fencer like one for a lost host. */
/* A host already offline (its ternd left: CPG said nothing of its node)
 * whose node is gone from corosync's ring now, as a member saw it: lost,
 * like a host whose node left with its ternd, and fenced before its VMs
 * run elsewhere. Without this its VMs would stay its own for good. */
static int h_host_down(struct msg_ctx *c, struct tern_err *err)
{
    char name[CL_NAME_MAX];
    if (get_name(c->msg, "host", name, err) < 0)
        return -1;
    struct cl_host *h = cl__host(c->s, name, NULL);
    if (!h)
        return tern_err_coded(err, TERN_ERR_NOT_FOUND, "no host '%s'", name);
    if (h->online || !h->nodeid)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "host '%s' is %s", h->name,
                              h->online ? "online" : "not bound to a node");
    if (h->lost)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "host '%s' is lost already", h->name);
    cl__host_lost(h, "its node left the membership after its ternd had stopped");
    cl__settle_hosts(c->s);
    return 0;
}

static int h_host_fence(struct msg_ctx *c, struct tern_err *err)
{
    struct cl_host *h;
    uint32_t seq;
    if (fence_target(c, &h, &seq, false, err) < 0)
        return -1;
    if (h->fence == CL_FENCE_FENCED)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "host '%s' is fenced already (%s)", h->name,
                              h->fence_detail);
    if (h->fence == CL_FENCE_NONE || h->online) {
        h->fence_seq++;
        h->fence_attempts = 0;
    }
    h->fence = CL_FENCE_PENDING;
    h->fence_method[0] = '\0';
    snprintf(h->fence_detail, sizeof(h->fence_detail), "fencing asked for by the operator");
    return 0;
}

/* The host is off: by a fence device (the fencer's levels succeeded), by
 * its watchdog's deadline (it was lost longer than its self-fence
 * deadline), or on the operator's word (ternctl host confirm-fenced). Its
 * VMs are released and its HA VMs placed elsewhere. */
static int h_host_fenced(struct msg_ctx *c, struct tern_err *err)
{
    static const char *const methods[] = {"device", "watchdog", "operator", NULL};
    struct cl_host *h;
    uint32_t seq;
    int method;
    char detail[CL_REASON_MAX];
    if (fence_target(c, &h, &seq, true, err) < 0 ||
        cl__get_enum(c->msg, "method", methods, &method, err) < 0 ||
        get_text(c->msg, "detail", "", detail, sizeof(detail), err) < 0)
        return -1;
    if (h->fence == CL_FENCE_FENCED)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "host '%s' is fenced already", h->name);
    if (method != 0 && h->online)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "host '%s' is online (its ternd is in the "
                              "membership): it is not off", h->name);
    /* An operator's confirmation holds for whatever episode is open; a
     * device's or a deadline's only for the one it was run for. */
    if (method != 2 && seq != h->fence_seq)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "fencing result for episode %u of host "
                              "'%s', which is at episode %u", seq, h->name, h->fence_seq);
    if (method != 2 && h->fence == CL_FENCE_NONE && !h->lost)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "host '%s' is not being fenced", h->name);
    if (method == 2 && !h->lost && h->fence == CL_FENCE_NONE)
        return tern_err_coded(err, TERN_ERR_CONFLICT, "host '%s' has not left the membership and "
                              "is not being fenced: there is nothing to confirm", h->name);
    h->fence = CL_FENCE_FENCED;
    snprintf(h->fence_method, sizeof(h->fence_method), "%s", methods[method]);
    cl__copy_utf8(h->fence_detail, sizeof(h->fence_detail), detail[0] ? detail : methods[method]);
    cl__release_fenced(c->s, h);
    return 0;
}

/* The fencer tried and failed (every level): recovery keeps waiting. */
static int h_host_fence_failed(struct msg_ctx *c, struct tern_err *err)
{
    struct cl_host *h;
    uint32_t seq;
    char detail[CL_REASON_MAX];
    if (fence_target(c, &h, &seq, true, err) < 0 ||
        get_text(c->msg, "detail", "", detail, sizeof(detail), err) < 0)
        return -1;
    if (seq != h->fence_seq || (h->fence != CL_FENCE_PENDING && h->fence != CL_FENCE_FAILED))
        return tern_err_coded(err, TERN_ERR_CONFLICT, "host '%s' is not being fenced in episode "
                              "%u", h->name, seq);
    h->fence = CL_FENCE_FAILED;
    h->fence_attempts++;
    cl__copy_utf8(h->fence_detail, sizeof(h->fence_detail), detail);
    return 0;
}

/* What the host that would fence `host` found when it ran `monitor` on
 * its devices (agent/fence_monitor.c). Sent when the answer changes. */
static int h_host_fence_check(struct msg_ctx *c, struct tern_err *err)
{
    struct cl_host *h;
    uint32_t seq;
    char detail[CL_REASON_MAX];
    const json_t *ok = json_object_get(c->msg, "ok");
    if (fence_target(c, &h, &seq, false, err) < 0 ||
        get_text(c->msg, "detail", "", detail, sizeof(detail), err) < 0)
        return -1;
    if (!json_is_boolean(ok))
        return tern_err_coded(err, TERN_ERR_INVALID, "'ok' (a boolean) is required");
    const struct cl_host *by = c->host;
    if (!by)
        return tern_err_coded(err, TERN_ERR_NOT_FOUND, "node %u is not a host of the cluster",
                              c->sender);
    h->fence_check = json_is_true(ok) ? CL_CHECK_OK : CL_CHECK_FAILING;
    snprintf(h->fence_check_by, sizeof(h->fence_check_by), "%s", by->name);
    cl__copy_utf8(h->fence_check_detail, sizeof(h->fence_check_detail), detail);
    return 0;
}

/* ---- dispatch ---- */

/* What only a quorate configuration may do: every change a client asks
 * for, and committing a migration (it moves ownership). What hosts report
 * about themselves (announce, VM reports, migration steps before and after
 * the commit, aborts) goes on without quorum. */
enum { ANY_CONFIG, QUORATE_ONLY };

static const struct {
    const char *name;
    int (*fn)(struct msg_ctx *c, struct tern_err *err);
    int quorum;
} handlers[CL_MSG__COUNT] = {
    [CL_MSG_HOST_ANNOUNCE] = {"host_announce", h_host_announce, ANY_CONFIG},
    [CL_MSG_HOST_MODE] = {"host_mode", h_host_mode, QUORATE_ONLY},
    [CL_MSG_HOST_REMOVE] = {"host_remove", h_host_remove, QUORATE_ONLY},
    [CL_MSG_VM_DEFINE] = {"vm_define", h_vm_define, QUORATE_ONLY},
    [CL_MSG_VM_UNDEFINE] = {"vm_undefine", h_vm_undefine, QUORATE_ONLY},
    [CL_MSG_VM_START] = {"vm_start", h_vm_start, QUORATE_ONLY},
    [CL_MSG_VM_STOP] = {"vm_stop", h_vm_stop, QUORATE_ONLY},
    [CL_MSG_VM_REPORT] = {"vm_report", h_vm_report, ANY_CONFIG},
    [CL_MSG_MIGRATION_BEGIN] = {"migration_begin", h_migration_begin, QUORATE_ONLY},
    [CL_MSG_MIGRATION_LISTENING] = {"migration_listening", h_migration_listening, ANY_CONFIG},
    [CL_MSG_MIGRATION_PROGRESS] = {"migration_progress", h_migration_progress, ANY_CONFIG},
    [CL_MSG_MIGRATION_COMMIT] = {"migration_commit", h_migration_commit, QUORATE_ONLY},
    [CL_MSG_MIGRATION_DONE] = {"migration_done", h_migration_done, ANY_CONFIG},
    [CL_MSG_MIGRATION_ABORT] = {"migration_abort", h_migration_abort, ANY_CONFIG},
    [CL_MSG_HOST_FENCE] = {"host_fence", h_host_fence, QUORATE_ONLY},
    [CL_MSG_HOST_FENCED] = {"host_fenced", h_host_fenced, QUORATE_ONLY},
    [CL_MSG_HOST_FENCE_FAILED] = {"host_fence_failed", h_host_fence_failed, QUORATE_ONLY},
    [CL_MSG_HOST_FENCE_CHECK] = {"host_fence_check", h_host_fence_check, QUORATE_ONLY},
    [CL_MSG_HOST_DOWN] = {"host_down", h_host_down, QUORATE_ONLY},
};

const char *cl_msg_type_name(enum cl_msg_type t)
{
    return t > CL_MSG_UNKNOWN && t < CL_MSG__COUNT ? handlers[t].name : NULL;
}

enum cl_msg_type cl_msg_type_of(const json_t *msg)
{
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (!type)
        return CL_MSG_UNKNOWN;
    for (int t = 1; t < CL_MSG__COUNT; t++)
        if (!strcmp(type, handlers[t].name))
            return (enum cl_msg_type)t;
    return CL_MSG_UNKNOWN;
}

json_t *cl_msg_new(enum cl_msg_type t)
{
    const char *name = cl_msg_type_name(t);
    return name ? json_pack("{s:s}", "type", name) : NULL;
}

int cl_state_apply(struct cl_state *s, uint32_t sender_nodeid, const json_t *msg,
                   struct tern_err *err)
{
    if (!json_is_object(msg))
        return tern_err_coded(err, TERN_ERR_INVALID, "a cluster message must be a JSON object");
    char type[32];
    if (cl__get_str(msg, "type", NULL, type, sizeof(type), err) < 0)
        return tern_err_prefix(err, "cluster message");
    struct msg_ctx c = {
        .s = s,
        .sender = sender_nodeid,
        .host = cl_state_host_by_nodeid(s, sender_nodeid),
        .msg = msg,
    };
    const json_t *origin = json_object_get(msg, "origin");
    if (origin) {
        uint64_t node, req;
        if (!json_is_object(origin) ||
            cl__get_uint(origin, "node", false, 0, 0, UINT32_MAX, &node, err) < 0 ||
            cl__get_uint(origin, "req", false, 0, 0, INT64_MAX, &req, err) < 0)
            return tern_err_coded(err, TERN_ERR_INVALID, "%s: \"origin\" must be {\"node\":N,\"req\":N}",
                                type);
        if (node != sender_nodeid)
            return tern_err_coded(err, TERN_ERR_INVALID, "%s: \"origin\" names node %llu but node %u "
                                  "sent it", type, (unsigned long long)node, sender_nodeid);
        c.origin_node = (uint32_t)node;
        c.origin_req = req;
        /* Room to remember it, before anything changes. */
        if (cl_state_origin_req(s, c.origin_node) == 0 &&
            (s->nr_origins >= CL_MAX_ORIGINS ||
             cl__reserve((void **)&s->origins, &s->cap_origins, s->nr_origins,
                         sizeof(*s->origins)) < 0))
            return tern_err_coded(err, s->nr_origins >= CL_MAX_ORIGINS ? TERN_ERR_NO_CAPACITY
                                                                        : TERN_ERR_INTERNAL,
                                  "%s: no room to remember node %u's requests", type,
                                  c.origin_node);
    }
    enum cl_msg_type t = cl_msg_type_of(msg);
    if (t == CL_MSG_UNKNOWN)
        return tern_err_coded(err, TERN_ERR_INVALID, "unknown cluster message type '%s'", type);
    if (handlers[t].quorum == QUORATE_ONLY && !s->quorate)
        return tern_err_coded(err, TERN_ERR_NO_QUORUM, "%s refused: the cluster configuration "
                              "it arrived in is not quorate (%zu of %u expected votes)",
                              type, s->nr_members, s->expected_votes);
    if (handlers[t].fn(&c, err) < 0)
        return -1;
    /* Room may have appeared (or a host been fenced): HA VMs waiting get
     * their place. Out of memory here is this host's alone: fatal. */
    if (cl__recover(s) < 0)
        return oom(err);
    if (origin)
        cl__origin_note(s, c.origin_node, c.origin_req); /* room reserved above */
    s->version++;
    /* The quorate version is the version of the last quorate event (not a
     * count: a count of one history can equal another's). */
    if (s->quorate && s->version > s->q_version)
        s->q_version = s->version;
    return 0;
}
