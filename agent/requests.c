/* Requests from ternctl (docs/agent-api.md). Reads answer from the local
 * replica at once; changes go out as CPG messages and are answered when
 * they come back applied (or refused), or when the work they started is
 * over (a VM runs, a migration finished, a host is evacuated). */
#include "agent.h"

#include "../ha/plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SIMPLE_TIMEOUT_S 15.0
#define START_STOP_TIMEOUT_S 90.0
#define FENCE_TIMEOUT_S 120.0
#define MAX_PENDING 1024

enum pending_kind { PEND_SIMPLE, PEND_START, PEND_STOP, PEND_MIGRATE, PEND_EVACUATE, PEND_FENCE };

struct evac_item {
    char vm[CL_NAME_MAX];
    char to[CL_NAME_MAX];
    uint64_t req;           /* migration_begin request id */
    uint64_t mig_id;
    int state;              /* 0 queued, 1 begun, 2 done, 3 failed */
    double t_start;
};

struct pending {
    bool used;
    enum pending_kind kind;
    int client;             /* client slot, or -1 (nobody waits) */
    uint64_t client_gen;
    uint64_t req;           /* request id of the message awaited */
    bool applied;           /* that message was applied */
    uint64_t applied_version; /* the state's version right after it */
    uint64_t lineage;       /* agent's lineage when it was applied */
    char type[32];          /* its message type */
    char vm[CL_NAME_MAX];
    char host[CL_NAME_MAX];
    uint64_t mig_id;
    bool wait;
    double t_start, deadline;
    uint32_t fence_seq, fence_attempts; /* PEND_FENCE: the episode, failures seen */
    /* evacuation */
    struct evac_item *items;
    size_t nr_items;
    unsigned parallel;
    json_t *moved, *failed;
};

/* The requests waiting for the cluster (this module's own state). */
struct requests {
    struct pending pend[MAX_PENDING];
};

int requests_new(struct agent *a, struct tern_err *err)
{
    a->requests = calloc(1, sizeof(*a->requests));
    return a->requests ? 0 : tern_err_set(err, "out of memory");
}

void requests_free(struct agent *a)
{
    for (int i = 0; i < MAX_PENDING; i++) {
        free(a->requests->pend[i].items);
        json_decref(a->requests->pend[i].moved);
        json_decref(a->requests->pend[i].failed);
    }
    free(a->requests);
    a->requests = NULL;
}

static json_t *cluster_json(struct agent *a)
{
    struct cl_state *s = agent_state(a);
    size_t members = 0;
    for (size_t i = 0; i < cl_state_nr_hosts(s); i++)
        members += cl_state_host_at(s, i)->online;
    /* quorate: the configuration the state was applied in is quorate and
     * corosync here agrees; what changes need. */
    return json_pack("{s:s, s:I, s:b, s:b, s:b, s:I, s:I, s:I, s:I, s:I, s:I}", "local_host",
                     a->host, "nodeid", (json_int_t)a->nodeid, "quorate",
                     cl_state_quorate(s) && a->quorate, "synced", replica_synced(a->replica),
                     "ready", replica_ready(a->replica), "members", (json_int_t)members,
                     "config_members", (json_int_t)cl_state_nr_members(s), "expected_votes",
                     (json_int_t)cl_state_expected_votes(s), "quorum_epoch",
                     (json_int_t)cl_state_quorum_epoch(s), "version",
                     (json_int_t)cl_state_version(s), "stable_version",
                     (json_int_t)replica_stable_version(a->replica));
}

static json_t *hosts_json(struct agent *a)
{
    struct cl_state *s = agent_state(a);
    json_t *arr = json_array();
    for (size_t i = 0; i < cl_state_nr_hosts(s); i++)
        json_array_append_new(arr, cl_host_to_json(s, cl_state_host_at(s, i)));
    return arr;
}

static json_t *vms_json(struct agent *a)
{
    struct cl_state *s = agent_state(a);
    json_t *arr = json_array();
    for (size_t i = 0; i < cl_state_nr_vms(s); i++)
        json_array_append_new(arr, cl_vm_to_json(cl_state_vm_at(s, i)));
    return arr;
}

/* What clients see of a migration: not its one-time token. */
static json_t *migration_json(const struct cl_migration *m)
{
    json_t *j = cl_migration_to_json(m);
    json_object_del(j, "token");
    return j;
}

static json_t *migrations_json(struct agent *a)
{
    struct cl_state *s = agent_state(a);
    json_t *arr = json_array();
    for (size_t i = 0; i < cl_state_nr_migrations(s); i++)
        json_array_append_new(arr, migration_json(cl_state_migration_at(s, i)));
    return arr;
}

static struct pending *pending_new(struct agent *a, enum pending_kind kind, int client,
                                   uint64_t gen)
{
    for (int i = 0; i < MAX_PENDING; i++) {
        struct pending *p = &a->requests->pend[i];
        if (!p->used) {
            memset(p, 0, sizeof(*p));
            p->used = true;
            p->kind = kind;
            p->client = client;
            p->client_gen = gen;
            p->t_start = agent_now();
            p->wait = true;
            return p;
        }
    }
    return NULL;
}

static void pending_free(struct pending *p)
{
    free(p->items);
    json_decref(p->moved);
    json_decref(p->failed);
    memset(p, 0, sizeof(*p));
}

static const char *str_field(json_t *req, const char *key)
{
    json_t *v = json_object_get(req, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Sends `msg` (consumed) and registers what waits for it. */
static struct pending *send_change(struct agent *a, int client, uint64_t gen,
                                   enum pending_kind kind, json_t *msg)
{
    struct tern_err err;
    if (!agent_can_change(a, &err)) {
        api_reply_err(a, client, gen, "no_quorum", "%s", err.msg);
        json_decref(msg);
        return NULL;
    }
    char type[32];
    snprintf(type, sizeof(type), "%s", json_string_value(json_object_get(msg, "type")));
    struct pending *p = pending_new(a, kind, client, gen);
    if (!p) {
        api_reply_err(a, client, gen, "unavailable", "too many requests in progress; try again");
        json_decref(msg);
        return NULL;
    }
    uint64_t req = agent_send(a, msg, &err);
    json_decref(msg);
    if (!req) {
        api_reply_err(a, client, gen, "failed", "%s", err.msg);
        pending_free(p);
        return NULL;
    }
    p->req = req;
    snprintf(p->type, sizeof(p->type), "%s", type);
    p->deadline = agent_now() + (kind == PEND_SIMPLE ? SIMPLE_TIMEOUT_S : START_STOP_TIMEOUT_S);
    return p;
}

static bool require_name(struct agent *a, int client, uint64_t gen, json_t *req, const char *key,
                         const char **out)
{
    *out = str_field(req, key);
    if (!*out) {
        api_reply_err(a, client, gen, "malformed", "'%s' (a string) is required", key);
        return false;
    }
    return true;
}

static void handle_vm_define(struct agent *a, int client, uint64_t gen, json_t *req)
{
    const char *name;
    if (!require_name(a, client, gen, req, "name", &name))
        return;
    json_t *config = json_object_get(req, "config");
    if (!json_is_object(config)) {
        api_reply_err(a, client, gen, "malformed", "'config' (an object) is required");
        return;
    }
    json_t *ha = json_object_get(req, "ha");
    json_t *prio = json_object_get(req, "priority");
    json_t *group = json_object_get(req, "group");
    if ((ha && !json_is_boolean(ha)) || (prio && !json_is_integer(prio)) ||
        (group && !json_is_string(group))) {
        api_reply_err(a, client, gen, "malformed",
                      "'ha' must be a boolean, 'priority' an integer, 'group' a string");
        return;
    }
    /* This host's disk policy (the starting host checks its own again). */
    struct cl_vm_config cfg;
    struct tern_err err;
    if (cl_vm_config_from_json(config, &cfg, &err) < 0) {
        api_reply_err(a, client, gen, "invalid", "%s", err.msg);
        return;
    }
    for (unsigned i = 0; i < cfg.nr_disks; i++)
        if (disk_policy_check(&a->cfg, cfg.disks[i].path, false, &err) < 0) {
            api_reply_err(a, client, gen, "invalid", "%s", err.msg);
            return;
        }
    json_t *msg = json_pack("{s:s, s:s, s:O, s:b, s:I}", "type", "vm_define", "name", name,
                            "config", config, "ha", ha ? json_is_true(ha) : 0, "priority",
                            prio ? json_integer_value(prio) : (json_int_t)0);
    if (group && json_string_length(group) > 0)
        json_object_set(msg, "group", group);
    struct pending *p = send_change(a, client, gen, PEND_SIMPLE, msg);
    if (p)
        snprintf(p->vm, sizeof(p->vm), "%s", name);
}

static void handle_vm_simple(struct agent *a, int client, uint64_t gen, json_t *req,
                             const char *type, enum pending_kind kind)
{
    const char *name;
    if (!require_name(a, client, gen, req, "name", &name))
        return;
    json_t *msg = json_pack("{s:s, s:s}", "type", type, "name", name);
    const char *host = str_field(req, "host");
    if (host && !strcmp(type, "vm_start"))
        json_object_set_new(msg, "host", json_string(host));
    struct pending *p = send_change(a, client, gen, kind, msg);
    if (p)
        snprintf(p->vm, sizeof(p->vm), "%s", name);
}

static bool get_wait(json_t *req)
{
    json_t *w = json_object_get(req, "wait");
    return !w || json_is_true(w);
}

static void handle_vm_migrate(struct agent *a, int client, uint64_t gen, json_t *req)
{
    const char *name, *to;
    if (!require_name(a, client, gen, req, "name", &name) ||
        !require_name(a, client, gen, req, "to", &to))
        return;
    json_t *dt = json_object_get(req, "downtime_ms");
    if (dt && (!json_is_integer(dt) || json_integer_value(dt) < TERN_DOWNTIME_MS_MIN ||
               json_integer_value(dt) > TERN_DOWNTIME_MS_MAX)) {
        api_reply_err(a, client, gen, "invalid", "'downtime_ms' must be %u..%u",
                      TERN_DOWNTIME_MS_MIN, TERN_DOWNTIME_MS_MAX);
        return;
    }
    json_t *msg = json_pack("{s:s, s:s, s:s, s:I}", "type", "migration_begin", "vm", name, "to",
                            to, "downtime_ms",
                            dt ? json_integer_value(dt) : (json_int_t)TERN_DOWNTIME_MS_DEFAULT);
    struct pending *p = send_change(a, client, gen, PEND_MIGRATE, msg);
    if (p) {
        snprintf(p->vm, sizeof(p->vm), "%s", name);
        snprintf(p->host, sizeof(p->host), "%s", to);
        p->wait = get_wait(req);
        p->deadline = 0; /* the migration's own time limit applies */
    }
}

static void handle_host_mode(struct agent *a, int client, uint64_t gen, json_t *req,
                             const char *mode, enum pending_kind kind)
{
    const char *host;
    if (!require_name(a, client, gen, req, "host", &host))
        return;
    json_t *par = json_object_get(req, "parallel");
    if (par && (!json_is_integer(par) || json_integer_value(par) < TERN_PARALLEL_MIN ||
                json_integer_value(par) > TERN_PARALLEL_MAX)) {
        api_reply_err(a, client, gen, "invalid", "'parallel' must be %u..%u", TERN_PARALLEL_MIN,
                      TERN_PARALLEL_MAX);
        return;
    }
    if (!cl_state_host(agent_state(a), host)) {
        api_reply_err(a, client, gen, "not_found", "host '%s' is not in the cluster", host);
        return;
    }
    json_t *msg = json_pack("{s:s, s:s, s:s}", "type", "host_mode", "host", host, "mode", mode);
    struct pending *p = send_change(a, client, gen, kind, msg);
    if (p) {
        snprintf(p->host, sizeof(p->host), "%s", host);
        p->wait = get_wait(req);
        p->parallel = par ? (unsigned)json_integer_value(par) : TERN_PARALLEL_DEFAULT;
        if (kind == PEND_EVACUATE)
            p->deadline = 0;
    }
}

/* host.fence: a new fencing episode, run by the fencer; answered when the
 * host is fenced or the attempt failed. host.confirm_fenced: the operator
 * vouches that the host is off (its VMs are released at once). */
static void handle_host_fence(struct agent *a, int client, uint64_t gen, json_t *req, bool run)
{
    const char *host;
    if (!require_name(a, client, gen, req, "host", &host))
        return;
    struct cl_state *s = agent_state(a);
    const struct cl_host *h = cl_state_host(s, host);
    if (!h) {
        api_reply_err(a, client, gen, "not_found", "host '%s' is not in the cluster", host);
        return;
    }
    /* Another online host runs the fencing: without one, the episode
     * would wait forever, and the host, being fenced, take no VMs. */
    if (run && cl_state_quorate(s) && !cl_state_fencer(s, host)) {
        api_reply_err(a, client, gen, "conflict",
                      "no host can fence '%s': fencing is run by another online host that is "
                      "not being fenced itself, and there is none", host);
        return;
    }
    json_t *msg;
    if (run) {
        msg = json_pack("{s:s, s:s}", "type", "host_fence", "host", host);
    } else {
        char detail[CL_REASON_MAX];
        snprintf(detail, sizeof(detail), "confirmed off by the operator (asked at %s)", a->host);
        msg = json_pack("{s:s, s:s, s:I, s:s, s:s}", "type", "host_fenced", "host", host, "seq",
                        (json_int_t)h->fence_seq, "method", "operator", "detail", detail);
    }
    struct pending *p = send_change(a, client, gen, run ? PEND_FENCE : PEND_SIMPLE, msg);
    if (p) {
        snprintf(p->host, sizeof(p->host), "%s", host);
        if (run)
            p->deadline = p->t_start + FENCE_TIMEOUT_S;
    }
}

/* This agent itself (not replicated): its loop and its clients. */
static json_t *agent_json(struct agent *a)
{
    struct loop_stats ls = loop_stats(a->loop, false);
    struct api_stats as = api_stats(a);
    return json_pack("{s:i, s:I, s:f, s:i, s:I, s:I, s:I}", "pid", (int)getpid(), "loop_rounds",
                     (json_int_t)ls.rounds, "longest_round_ms", ls.longest_round_ms, "clients",
                     (int)as.clients, "clients_dropped_stuck", (json_int_t)as.dropped_stuck,
                     "clients_dropped_idle", (json_int_t)as.dropped_idle, "clients_refused",
                     (json_int_t)as.refused_full);
}

/* The request's fields that have a type: present with another type is
 * `invalid` (never silently ignored: "host": 5 must not place the VM
 * anywhere); null counts as absent. Fields not listed are ignored. */
static bool check_types(struct agent *a, int client, uint64_t gen, json_t *req)
{
    static const struct {
        const char *key;
        json_type type;
        const char *what;
    } fields[] = {
        {"name", JSON_STRING, "a string"},    {"host", JSON_STRING, "a string"},
        {"to", JSON_STRING, "a string"},      {"group", JSON_STRING, "a string"},
        {"config", JSON_OBJECT, "an object"}, {"ha", JSON_TRUE, "true or false"},
        {"wait", JSON_TRUE, "true or false"}, {"priority", JSON_INTEGER, "an integer"},
        {"downtime_ms", JSON_INTEGER, "an integer"}, {"parallel", JSON_INTEGER, "an integer"},
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        json_t *v = json_object_get(req, fields[i].key);
        if (!v || json_is_null(v))
            continue; /* null: as if absent */
        bool ok = fields[i].type == JSON_TRUE ? json_is_boolean(v)
                                              : json_typeof(v) == fields[i].type;
        if (!ok) {
            api_reply_err(a, client, gen, "invalid", "'%s' must be %s", fields[i].key,
                          fields[i].what);
            return false;
        }
    }
    return true;
}

void requests_handle(struct agent *a, int client, uint64_t gen, json_t *req)
{
    json_t *jcmd = json_object_get(req, "cmd");
    if (jcmd && !json_is_string(jcmd)) {
        api_reply_err(a, client, gen, "invalid", "'cmd' must be a string");
        return;
    }
    const char *cmd = str_field(req, "cmd");
    if (!cmd) {
        api_reply_err(a, client, gen, "malformed", "'cmd' (a string) is required");
        return;
    }
    if (!check_types(a, client, gen, req))
        return;
    struct cl_state *s = agent_state(a);
    if (!strcmp(cmd, "status")) {
        api_reply_ok(a, client, gen,
                     json_pack("{s:o, s:o, s:o, s:o, s:o}", "cluster", cluster_json(a), "hosts",
                               hosts_json(a), "vms", vms_json(a), "migrations",
                               migrations_json(a), "agent", agent_json(a)));
    } else if (!strcmp(cmd, "host.list")) {
        api_reply_ok(a, client, gen, json_pack("{s:o}", "hosts", hosts_json(a)));
    } else if (!strcmp(cmd, "vm.list")) {
        api_reply_ok(a, client, gen, json_pack("{s:o}", "vms", vms_json(a)));
    } else if (!strcmp(cmd, "vm.show")) {
        const char *name;
        if (!require_name(a, client, gen, req, "name", &name))
            return;
        const struct cl_vm *vm = cl_state_vm(s, name);
        if (!vm) {
            api_reply_err(a, client, gen, "not_found", "VM '%s' is not defined", name);
            return;
        }
        json_t *j = cl_vm_to_json(vm);
        const struct cl_migration *m = vm->migration_id ? cl_state_migration(s, vm->migration_id)
                                                        : NULL;
        if (m)
            json_object_set_new(j, "migration", migration_json(m));
        api_reply_ok(a, client, gen, json_pack("{s:o}", "vm", j));
    } else if (!strcmp(cmd, "vm.define")) {
        handle_vm_define(a, client, gen, req);
    } else if (!strcmp(cmd, "vm.undefine")) {
        handle_vm_simple(a, client, gen, req, "vm_undefine", PEND_SIMPLE);
    } else if (!strcmp(cmd, "vm.start")) {
        handle_vm_simple(a, client, gen, req, "vm_start", PEND_START);
    } else if (!strcmp(cmd, "vm.stop")) {
        handle_vm_simple(a, client, gen, req, "vm_stop", PEND_STOP);
    } else if (!strcmp(cmd, "vm.migrate")) {
        handle_vm_migrate(a, client, gen, req);
    } else if (!strcmp(cmd, "host.activate")) {
        handle_host_mode(a, client, gen, req, "active", PEND_SIMPLE);
    } else if (!strcmp(cmd, "host.evacuate")) {
        handle_host_mode(a, client, gen, req, "maintenance", PEND_EVACUATE);
    } else if (!strcmp(cmd, "host.fence") || !strcmp(cmd, "host.confirm_fenced")) {
        handle_host_fence(a, client, gen, req, !strcmp(cmd, "host.fence"));
    } else if (!strcmp(cmd, "host.remove")) {
        const char *host;
        if (!require_name(a, client, gen, req, "host", &host))
            return;
        struct pending *p = send_change(a, client, gen, PEND_SIMPLE,
                                        json_pack("{s:s, s:s}", "type", "host_remove", "host",
                                                  host));
        if (p)
            snprintf(p->host, sizeof(p->host), "%s", host);
    } else {
        api_reply_err(a, client, gen, "unknown_command",
                      "unknown command '%s' (see docs/agent-api.md)", cmd);
    }
}

/* --- completing requests --- */

static uint64_t msg_origin_req(const json_t *msg, uint32_t *node)
{
    json_t *o = json_object_get(msg, "origin");
    *node = (uint32_t)json_integer_value(json_object_get(o, "node"));
    return (uint64_t)json_integer_value(json_object_get(o, "req"));
}

static void reply_refused(struct agent *a, struct pending *p, const struct tern_err *err)
{
    api_reply_err(a, p->client, p->client_gen, tern_err_code_name(err ? err->code : 0), "%s",
                  err ? err->msg : "refused");
}

static void reply_simple(struct agent *a, struct pending *p)
{
    struct cl_state *s = agent_state(a);
    json_t *res = json_object();
    if (p->vm[0] && cl_state_vm(s, p->vm) && strcmp(p->type, "vm_undefine") != 0)
        json_object_set_new(res, "vm", cl_vm_to_json(cl_state_vm(s, p->vm)));
    if (p->host[0] && cl_state_host(s, p->host))
        json_object_set_new(res, "host", cl_host_to_json(s, cl_state_host(s, p->host)));
    api_reply_ok(a, p->client, p->client_gen, res);
}

static void evac_next(struct agent *a, struct pending *p);

static void evac_start(struct agent *a, struct pending *p)
{
    struct cl_state *s = agent_state(a);
    size_t nr_vms = cl_state_nr_vms(s);
    p->items = calloc(nr_vms ? nr_vms : 1, sizeof(*p->items)); /* at most every VM */
    struct cl_placement *plan = calloc(nr_vms ? nr_vms : 1, sizeof(*plan));
    p->moved = json_array();
    p->failed = json_array();
    /* The plan's order: highest priority first, then by name; where each
     * goes is decided again as each one starts (others move meanwhile). */
    size_t n = p->items && plan ? cl_plan_evacuation(s, p->host, plan, nr_vms) : 0;
    for (size_t i = 0; i < n; i++)
        snprintf(p->items[p->nr_items++].vm, CL_NAME_MAX, "%s", plan[i].vm);
    for (size_t i = 0; i < nr_vms && p->items; i++) {
        /* Those busy (starting, migrating) move once they can: followed below. */
        const struct cl_vm *vm = cl_state_vm_at(s, i);
        bool listed = false;
        for (size_t k = 0; k < n && !listed; k++)
            listed = !strcmp(plan[k].vm, vm->name);
        if (!listed && !strcmp(vm->owner, p->host) && vm->run != CL_RUN_STOPPED &&
            vm->run != CL_RUN_CRASHED)
            snprintf(p->items[p->nr_items++].vm, CL_NAME_MAX, "%s", vm->name);
    }
    free(plan);
    evac_next(a, p);
}

static void evac_progress(struct agent *a, struct pending *p, const struct evac_item *it,
                          const json_t *progress)
{
    if (!p->wait)
        return;
    size_t done = 0;
    for (size_t i = 0; i < p->nr_items; i++)
        done += p->items[i].state >= 2;
    json_t *pr = json_pack("{s:s, s:I, s:I, s:s, s:s}", "host", p->host, "total",
                           (json_int_t)p->nr_items, "done", (json_int_t)done, "vm", it->vm, "to",
                           it->to);
    if (progress)
        json_object_set(pr, "migration", (json_t *)progress);
    json_t *line = json_pack("{s:o}", "progress", pr);
    api_send(a, p->client, p->client_gen, line);
    json_decref(line);
}

static void evac_finish(struct agent *a, struct pending *p)
{
    json_t *res = json_pack("{s:s, s:O, s:O}", "host", p->host, "moved", p->moved, "failed",
                            p->failed);
    if (json_array_size(p->failed) == 0) {
        api_reply_ok(a, p->client, p->client_gen, res);
    } else {
        json_t *r = json_pack("{s:b, s:{s:s, s:s}, s:o}", "ok", 0, "error", "code", "failed",
                              "message", "some VMs could not be moved", "result", res);
        api_reply(a, p->client, p->client_gen, r); /* the final reply, like api_reply_err's */
        json_decref(r);
    }
    pending_free(p);
}

/* Starts the next queued migration unless `parallel` are running or one is
 * still waiting to be applied (placement must see the previous one's
 * reservation, so they go out one by one). */
static void evac_next(struct agent *a, struct pending *p)
{
    unsigned active = 0;
    for (size_t i = 0; i < p->nr_items; i++) {
        if (p->items[i].state == 1 && p->items[i].mig_id == 0)
            return;
        active += p->items[i].state == 1;
    }
    struct cl_state *s = agent_state(a);
    for (size_t i = 0; i < p->nr_items && active < p->parallel; i++) {
        struct evac_item *it = &p->items[i];
        if (it->state != 0)
            continue;
        const struct cl_vm *vm = cl_state_vm(s, it->vm);
        struct tern_err err;
        if (!vm || strcmp(vm->owner, p->host) != 0) {
            it->state = 2; /* gone or moved meanwhile: nothing to do */
            continue;
        }
        if (vm->migration_id) {
            it->mig_id = vm->migration_id; /* someone else moves it: follow that one */
            it->state = 1;
            active++;
            continue;
        }
        if (!agent_can_change(a, &err)) {
            /* Lost quorum (or the state) meanwhile: nothing more starts. */
            it->state = 3;
            json_array_append_new(p->failed, json_pack("{s:s, s:s}", "vm", it->vm, "error",
                                                       err.msg));
            continue;
        }
        struct cl_placement pl;
        snprintf(pl.vm, sizeof(pl.vm), "%s", it->vm);
        if (cl_plan_place(s, &pl, 1, p->host) == 0) {
            it->state = 3;
            json_array_append_new(p->failed, json_pack("{s:s, s:s}", "vm", it->vm, "error",
                                                       pl.why));
            continue;
        }
        snprintf(it->to, sizeof(it->to), "%s", pl.host);
        json_t *msg = cl_msg_new(CL_MSG_MIGRATION_BEGIN);
        json_object_set_new(msg, "vm", json_string(it->vm));
        json_object_set_new(msg, "to", json_string(it->to));
        json_object_set_new(msg, "downtime_ms", json_integer(TERN_DOWNTIME_MS_DEFAULT));
        it->req = agent_send(a, msg, &err);
        json_decref(msg);
        if (!it->req) {
            it->state = 3;
            json_array_append_new(p->failed, json_pack("{s:s, s:s}", "vm", it->vm, "error",
                                                       err.msg));
            continue;
        }
        it->state = 1;
        it->t_start = agent_now();
        evac_progress(a, p, it, NULL);
        return; /* one at a time until applied */
    }
    bool all_done = true;
    for (size_t i = 0; i < p->nr_items; i++)
        all_done &= p->items[i].state >= 2;
    if (all_done)
        evac_finish(a, p);
}

static json_t *mig_result(const json_t *msg, const char *outcome)
{
    json_t *r = json_object_get(msg, "result");
    if (json_is_object(r))
        return json_deep_copy(r);
    return json_pack("{s:I, s:s, s:s}", "id", json_integer_value(json_object_get(msg, "id")),
                     "outcome", outcome, "reason",
                     json_string_value(json_object_get(msg, "reason"))
                         ? json_string_value(json_object_get(msg, "reason"))
                         : "");
}

/* Migration events (from any host) for pending migrate/evacuate requests. */
static void on_migration_event(struct agent *a, struct pending *p, enum cl_msg_type type,
                               const json_t *msg, uint64_t id)
{
    if (p->kind == PEND_MIGRATE && p->mig_id == id) {
        if (type == CL_MSG_MIGRATION_PROGRESS && p->wait) {
            json_t *pr = json_deep_copy(json_object_get(msg, "progress"));
            if (json_is_object(pr))
                json_object_set_new(pr, "id", json_integer((json_int_t)id));
            json_t *line = json_pack("{s:o}", "progress", pr ? pr : json_object());
            api_send(a, p->client, p->client_gen, line);
            json_decref(line);
        } else if (type == CL_MSG_MIGRATION_DONE) {
            json_t *res = mig_result(msg, "succeeded");
            json_object_set_new(res, "total_s", json_real(agent_now() - p->t_start));
            api_reply_ok(a, p->client, p->client_gen, json_pack("{s:o}", "migration", res));
            pending_free(p);
        } else if (type == CL_MSG_MIGRATION_ABORT) {
            const char *reason = json_string_value(json_object_get(msg, "reason"));
            api_reply_err(a, p->client, p->client_gen, "failed", "migration of '%s' to %s failed: %s",
                          p->vm, p->host, reason ? reason : "aborted");
            pending_free(p);
        }
        return;
    }
    if (p->kind != PEND_EVACUATE)
        return;
    for (size_t i = 0; i < p->nr_items; i++) {
        struct evac_item *it = &p->items[i];
        if (it->state != 1 || it->mig_id != id)
            continue;
        if (type == CL_MSG_MIGRATION_PROGRESS) {
            evac_progress(a, p, it, json_object_get(msg, "progress"));
        } else if (type == CL_MSG_MIGRATION_DONE) {
            it->state = 2;
            json_t *res = mig_result(msg, "succeeded");
            json_object_set_new(res, "vm", json_string(it->vm));
            json_object_set_new(res, "to", json_string(it->to));
            if (it->t_start > 0)
                json_object_set_new(res, "total_s", json_real(agent_now() - it->t_start));
            json_array_append_new(p->moved, res);
            evac_progress(a, p, it, NULL);
            evac_next(a, p);
        } else if (type == CL_MSG_MIGRATION_ABORT) {
            it->state = 3;
            const char *reason = json_string_value(json_object_get(msg, "reason"));
            json_array_append_new(p->failed, json_pack("{s:s, s:s}", "vm", it->vm, "error",
                                                       reason ? reason : "aborted"));
            evac_next(a, p);
        }
        return;
    }
}

void requests_on_applied(struct agent *a, uint32_t sender, const json_t *msg, int rc,
                         const struct tern_err *err)
{
    (void)sender;
    if (!msg)
        return;
    enum cl_msg_type type = cl_msg_type_of(msg);
    if (type == CL_MSG_UNKNOWN)
        return;
    uint32_t node;
    uint64_t req = msg_origin_req(msg, &node);
    bool ours = node == a->nodeid && req != 0;
    struct cl_state *s = agent_state(a);

    for (int i = 0; i < MAX_PENDING; i++) {
        struct pending *p = &a->requests->pend[i];
        if (!p->used)
            continue;
        bool migration = type >= CL_MSG_MIGRATION_BEGIN && type <= CL_MSG_MIGRATION_ABORT;
        if (rc == 0 && migration &&
            (p->kind == PEND_MIGRATE || p->kind == PEND_EVACUATE)) {
            uint64_t id = (uint64_t)json_integer_value(json_object_get(msg, "id"));
            if (id)
                on_migration_event(a, p, type, msg, id);
            if (!p->used)
                continue;
        }
        if (p->kind == PEND_EVACUATE && ours && p->items) {
            for (size_t k = 0; k < p->nr_items; k++) {
                struct evac_item *it = &p->items[k];
                if (it->req != req || it->state != 1 || it->mig_id)
                    continue;
                if (rc < 0) {
                    it->state = 3;
                    json_array_append_new(p->failed, json_pack("{s:s, s:s}", "vm", it->vm,
                                                               "error", err ? err->msg : "refused"));
                } else {
                    const struct cl_vm *vm = cl_state_vm(s, it->vm);
                    it->mig_id = vm ? vm->migration_id : 0;
                    if (!it->mig_id)
                        it->state = 3;
                }
                evac_next(a, p);
                break;
            }
            if (!p->used)
                continue;
        }
        if (!ours || p->req != req || p->applied)
            continue;
        if (rc < 0) {
            reply_refused(a, p, err);
            pending_free(p);
            continue;
        }
        p->applied = true;
        p->applied_version = cl_state_version(s);
        p->lineage = a->lineage;
        switch (p->kind) {
        case PEND_FENCE: {
            const struct cl_host *h = cl_state_host(s, p->host);
            p->fence_seq = h ? h->fence_seq : 0;
            p->fence_attempts = h ? h->fence_attempts : 0;
            break;
        }
        case PEND_SIMPLE:
        case PEND_START:
        case PEND_STOP:
            break; /* requests_poll completes it, once durable */
        case PEND_MIGRATE: {
            const struct cl_vm *vm = cl_state_vm(s, p->vm);
            p->mig_id = vm ? vm->migration_id : 0;
            break;
        }
        case PEND_EVACUATE:
            if (!p->wait) {
                api_reply_ok(a, p->client, p->client_gen,
                             json_pack("{s:s, s:s}", "host", p->host, "evacuation", "started"));
                p->client = -1;
            }
            evac_start(a, p);
            break;
        }
    }
}

/* The change p's message made is on a majority's disks. */
static bool durable(struct agent *a, const struct pending *p)
{
    return p->applied && p->lineage == a->lineage &&
           replica_stable_version(a->replica) >= p->applied_version;
}

void requests_on_replaced(struct agent *a, bool rejoined)
{
    struct cl_state *s = agent_state(a);
    uint64_t mine = cl_state_origin_req(s, a->nodeid);
    for (int i = 0; i < MAX_PENDING; i++) {
        struct pending *p = &a->requests->pend[i];
        if (!p->used || !p->req || (p->kind == PEND_EVACUATE && p->applied))
            continue;
        if (p->applied || rejoined) {
            if (p->req <= mine) {
                /* The state that won holds it: durable once that state is. */
                p->applied = true;
                p->applied_version = cl_state_version(s);
                p->lineage = a->lineage;
                continue;
            }
            api_reply_err(a, p->client, p->client_gen, "not_acknowledged",
                          "the cluster's state changed before a majority of hosts had stored "
                          "this change (%s), and the state that holds now does not have it: it "
                          "did not take effect; check `ternctl status` and try again",
                          p->type);
            pending_free(p);
        }
    }
}

/* An evacuation's migrations that ended without their event reaching it
 * (a membership change or a merge ended them): settled from the VM's last
 * migration. True when that finished the evacuation (p is free). */
static bool evac_settle(struct agent *a, struct pending *p)
{
    struct cl_state *s = agent_state(a);
    bool changed = false;
    for (size_t i = 0; i < p->nr_items; i++) {
        struct evac_item *it = &p->items[i];
        if (it->state != 1 || !it->mig_id || cl_state_migration(s, it->mig_id))
            continue;
        const struct cl_vm *vm = cl_state_vm(s, it->vm);
        const json_t *last = vm ? vm->last_migration : NULL;
        bool same = last && (uint64_t)json_integer_value(json_object_get(last, "id")) == it->mig_id;
        const char *outcome = same ? json_string_value(json_object_get(last, "outcome")) : NULL;
        if (outcome && !strcmp(outcome, "succeeded")) {
            it->state = 2;
            json_t *res = json_deep_copy(last);
            json_object_set_new(res, "vm", json_string(it->vm));
            json_object_set_new(res, "to", json_string(it->to));
            json_array_append_new(p->moved, res);
        } else {
            it->state = 3;
            const char *reason = same ? json_string_value(json_object_get(last, "reason")) : NULL;
            json_array_append_new(p->failed,
                                  json_pack("{s:s, s:s}", "vm", it->vm, "error",
                                            reason ? reason : "its migration ended"));
        }
        changed = true;
    }
    if (!changed)
        return false;
    evac_next(a, p);
    return !p->used;
}

void requests_poll(struct agent *a)
{
    struct cl_state *s = agent_state(a);
    double now = agent_now();
    for (int i = 0; i < MAX_PENDING; i++) {
        struct pending *p = &a->requests->pend[i];
        if (!p->used)
            continue;
        if (p->kind == PEND_SIMPLE && durable(a, p)) {
            reply_simple(a, p);
            pending_free(p);
            continue;
        }
        if (p->kind == PEND_MIGRATE && durable(a, p) && (!p->wait || !p->mig_id)) {
            api_reply_ok(a, p->client, p->client_gen,
                         json_pack("{s:I}", "migration_id", (json_int_t)p->mig_id));
            pending_free(p);
            continue;
        }
        if (durable(a, p) && (p->kind == PEND_START || p->kind == PEND_STOP)) {
            const struct cl_vm *vm = cl_state_vm(s, p->vm);
            if (!vm) {
                api_reply_err(a, p->client, p->client_gen, "not_found",
                              "VM '%s' was undefined meanwhile", p->vm);
                pending_free(p);
                continue;
            }
            bool start = p->kind == PEND_START;
            if ((start && vm->run == CL_RUN_RUNNING) ||
                (!start && vm->run == CL_RUN_STOPPED)) {
                api_reply_ok(a, p->client, p->client_gen, json_pack("{s:o}", "vm", cl_vm_to_json(vm)));
                pending_free(p);
                continue;
            }
            if (start && (vm->run == CL_RUN_CRASHED || vm->run == CL_RUN_STOPPED)) {
                api_reply_err(a, p->client, p->client_gen, "failed", "VM '%s' did not start: %s",
                              p->vm, vm->detail[0] ? vm->detail : "it stopped");
                pending_free(p);
                continue;
            }
            if (!start && vm->run == CL_RUN_CRASHED) {
                api_reply_ok(a, p->client, p->client_gen, json_pack("{s:o}", "vm", cl_vm_to_json(vm)));
                pending_free(p);
                continue;
            }
        }
        if (p->kind == PEND_EVACUATE && p->items && evac_settle(a, p))
            continue;
        if (p->kind == PEND_FENCE && durable(a, p)) {
            const struct cl_host *h = cl_state_host(s, p->host);
            if (!h || h->fence_seq != p->fence_seq) {
                api_reply_err(a, p->client, p->client_gen, "failed",
                              "host '%s': the fencing episode was replaced (%s)", p->host,
                              h ? "a new one started" : "the host was removed");
                pending_free(p);
                continue;
            }
            if (h->fence == CL_FENCE_FENCED || h->fence == CL_FENCE_NONE) {
                reply_simple(a, p);
                pending_free(p);
                continue;
            }
            if (h->fence == CL_FENCE_FAILED && h->fence_attempts > p->fence_attempts) {
                api_reply_err(a, p->client, p->client_gen, "failed",
                              "fencing host '%s' failed (attempt %u; it is retried): %s", p->host,
                              h->fence_attempts, h->fence_detail);
                pending_free(p);
                continue;
            }
        }
        if (p->kind == PEND_MIGRATE && p->mig_id && !cl_state_migration(s, p->mig_id)) {
            /* Finished while we missed the event (e.g. across a resync). */
            const struct cl_vm *vm = cl_state_vm(s, p->vm);
            json_t *last = vm && vm->last_migration ? json_deep_copy(vm->last_migration)
                                                    : json_pack("{s:I}", "id", (json_int_t)p->mig_id);
            const char *outcome = json_string_value(json_object_get(last, "outcome"));
            if (outcome && !strcmp(outcome, "succeeded"))
                api_reply_ok(a, p->client, p->client_gen, json_pack("{s:o}", "migration", last));
            else {
                api_reply_err(a, p->client, p->client_gen, "failed", "migration %llu of '%s' ended: %s",
                              (unsigned long long)p->mig_id, p->vm,
                              json_string_value(json_object_get(last, "reason"))
                                  ? json_string_value(json_object_get(last, "reason"))
                                  : "unknown outcome");
                json_decref(last);
            }
            pending_free(p);
            continue;
        }
        if (p->deadline > 0 && now > p->deadline) {
            api_reply_err(a, p->client, p->client_gen, "timeout",
                          "no answer from the cluster within %.0f s (the change may still happen; "
                          "check `ternctl status`)", p->deadline - p->t_start);
            pending_free(p);
        }
    }
}
