/* The cluster state's core: storage, lookups, membership and names.
 * Messages are in state_apply.c, JSON and files in state_json.c, capacity
 * and placement in placement.c. */
#include "state_internal.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cl_state *cl_state_new(void)
{
    return calloc(1, sizeof(struct cl_state));
}

void cl__state_clear(struct cl_state *s)
{
    for (size_t i = 0; i < s->nr_vms; i++)
        json_decref(s->vms[i].last_migration);
    for (size_t i = 0; i < s->nr_migs; i++)
        json_decref(s->migs[i].progress);
    free(s->hosts);
    free(s->vms);
    free(s->migs);
    free(s->origins);
    memset(s, 0, sizeof(*s));
}

void cl_state_free(struct cl_state *s)
{
    if (!s)
        return;
    cl__state_clear(s);
    free(s);
}

uint64_t cl_state_version(const struct cl_state *s)
{
    return s->version;
}

uint64_t cl_state_quorum_epoch(const struct cl_state *s)
{
    return s->q_epoch;
}

uint64_t cl_state_quorate_version(const struct cl_state *s)
{
    return s->q_version;
}

uint64_t cl_state_config_ring(const struct cl_state *s)
{
    return s->config_ring;
}

bool cl_state_quorate(const struct cl_state *s)
{
    return s->quorate;
}

uint32_t cl_state_expected_votes(const struct cl_state *s)
{
    return s->expected_votes;
}

uint64_t cl_state_config_epoch(const struct cl_state *s)
{
    return s->config_epoch;
}

size_t cl_state_nr_members(const struct cl_state *s)
{
    return s->nr_members;
}

uint64_t cl_state_origin_req(const struct cl_state *s, uint32_t nodeid)
{
    for (size_t i = 0; i < s->nr_origins; i++)
        if (s->origins[i].nodeid == nodeid)
            return s->origins[i].req;
    return 0;
}

int cl__origin_note(struct cl_state *s, uint32_t nodeid, uint64_t req)
{
    size_t i = 0;
    while (i < s->nr_origins && s->origins[i].nodeid < nodeid)
        i++;
    if (i < s->nr_origins && s->origins[i].nodeid == nodeid) {
        if (req > s->origins[i].req)
            s->origins[i].req = req;
        return 0;
    }
    if (s->nr_origins >= CL_MAX_ORIGINS ||
        cl__reserve((void **)&s->origins, &s->cap_origins, s->nr_origins, sizeof(*s->origins)) < 0)
        return -1;
    memmove(&s->origins[i + 1], &s->origins[i], (s->nr_origins - i) * sizeof(*s->origins));
    s->origins[i] = (struct cl_origin){.nodeid = nodeid, .req = req};
    s->nr_origins++;
    return 0;
}

uint64_t cl__vm_charge(const struct cl_vm_config *cfg)
{
    uint64_t n = CL_CHARGE_VM + strlen(cfg->kernel) + strlen(cfg->initrd) + strlen(cfg->cmdline);
    for (unsigned i = 0; i < cfg->nr_disks && i < CL_MAX_DISKS; i++)
        n += strlen(cfg->disks[i].path) + 32;
    return n;
}

uint64_t cl_state_charged_bytes(const struct cl_state *s)
{
    return 4096 + (uint64_t)s->nr_hosts * CL_CHARGE_HOST +
           (uint64_t)s->nr_migs * CL_CHARGE_MIGRATION + (uint64_t)s->nr_origins * 64 +
           s->vm_charge;
}

int cl__reserve(void **arr, size_t *cap, size_t nr, size_t elem)
{
    if (nr < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 8;
    void *p = realloc(*arr, ncap * elem);
    if (!p)
        return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* Binary search by name in an array of structs whose first member is the
 * name; *pos gets the index where `name` is or would go. */
static void *find_named(void *arr, size_t nr, size_t elem, const char *name, size_t *pos)
{
    size_t lo = 0, hi = nr;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        char *e = (char *)arr + mid * elem;
        int c = strcmp(e, name);
        if (c == 0) {
            if (pos)
                *pos = mid;
            return e;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (pos)
        *pos = lo;
    return NULL;
}

struct cl_host *cl__host(struct cl_state *s, const char *name, size_t *pos)
{
    _Static_assert(offsetof(struct cl_host, name) == 0, "name first");
    return find_named(s->hosts, s->nr_hosts, sizeof(struct cl_host), name, pos);
}

struct cl_vm *cl__vm(struct cl_state *s, const char *name, size_t *pos)
{
    _Static_assert(offsetof(struct cl_vm, name) == 0, "name first");
    return find_named(s->vms, s->nr_vms, sizeof(struct cl_vm), name, pos);
}

struct cl_migration *cl__mig(struct cl_state *s, uint64_t id, size_t *pos)
{
    size_t lo = 0, hi = s->nr_migs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->migs[mid].id == id) {
            if (pos)
                *pos = mid;
            return &s->migs[mid];
        }
        if (s->migs[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (pos)
        *pos = lo;
    return NULL;
}

const struct cl_host *cl_state_host(const struct cl_state *s, const char *name)
{
    return name ? cl__host((struct cl_state *)s, name, NULL) : NULL;
}

const struct cl_host *cl_state_host_by_nodeid(const struct cl_state *s, uint32_t nodeid)
{
    /* Node id 0 is no corosync node: it marks a host record whose node
     * became another host (see host_announce). */
    if (nodeid == 0)
        return NULL;
    for (size_t i = 0; i < s->nr_hosts; i++)
        if (s->hosts[i].nodeid == nodeid)
            return &s->hosts[i];
    return NULL;
}

const struct cl_vm *cl_state_vm(const struct cl_state *s, const char *name)
{
    return name ? cl__vm((struct cl_state *)s, name, NULL) : NULL;
}

const struct cl_migration *cl_state_migration(const struct cl_state *s, uint64_t id)
{
    return cl__mig((struct cl_state *)s, id, NULL);
}

size_t cl_state_nr_hosts(const struct cl_state *s)
{
    return s->nr_hosts;
}

const struct cl_host *cl_state_host_at(const struct cl_state *s, size_t i)
{
    return i < s->nr_hosts ? &s->hosts[i] : NULL;
}

size_t cl_state_nr_vms(const struct cl_state *s)
{
    return s->nr_vms;
}

const struct cl_vm *cl_state_vm_at(const struct cl_state *s, size_t i)
{
    return i < s->nr_vms ? &s->vms[i] : NULL;
}

size_t cl_state_nr_migrations(const struct cl_state *s)
{
    return s->nr_migs;
}

const struct cl_migration *cl_state_migration_at(const struct cl_state *s, size_t i)
{
    return i < s->nr_migs ? &s->migs[i] : NULL;
}

void cl__mig_remove(struct cl_state *s, size_t i)
{
    json_decref(s->migs[i].progress);
    memmove(&s->migs[i], &s->migs[i + 1], (s->nr_migs - i - 1) * sizeof(s->migs[0]));
    s->nr_migs--;
}

void cl__mig_end(struct cl_state *s, struct cl_migration *m, const char *outcome,
                 const char *reason)
{
    struct cl_vm *vm = cl__vm(s, m->vm, NULL);
    if (vm) {
        json_t *rec = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s}", "id", (json_int_t)m->id, "vm",
                                m->vm, "from", m->from, "to", m->to, "outcome", outcome,
                                "reason", reason);
        json_decref(vm->last_migration);
        vm->last_migration = rec; /* NULL only when out of memory */
        vm->migration_id = 0;
    }
    size_t pos;
    if (cl__mig(s, m->id, &pos))
        cl__mig_remove(s, pos);
}

static bool is_member(uint32_t nodeid, const uint32_t *members, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (members[i] == nodeid)
            return true;
    return false;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

void cl__update_quorum(struct cl_state *s)
{
    uint32_t expected = 0;
    for (size_t i = 0; i < s->nr_hosts; i++)
        if (s->hosts[i].online && s->hosts[i].expected_votes > expected)
            expected = s->hosts[i].expected_votes;
    bool was = s->quorate;
    s->expected_votes = expected;
    s->quorate = expected > 0 && s->nr_members >= (size_t)expected / 2 + 1;
    /* A quorate configuration's epoch is its ring's sequence number: the
     * same on every replica that applies it, unique to it cluster-wide (a
     * counter of this copy's own would be reused by another history). */
    if (s->quorate && !was && s->config_ring > s->q_epoch)
        s->q_epoch = s->config_ring;
}

/* Ends migration m without success. Its VM (if any) runs on the source
 * again, or is lost there when the source host is lost. */
static void end_failed(struct cl_state *s, struct cl_migration *m, const char *reason)
{
    struct cl_vm *vm = cl__vm(s, m->vm, NULL);
    if (vm) {
        const struct cl_host *from = cl__host(s, m->from, NULL);
        if (vm->run == CL_RUN_MIGRATING)
            vm->run = from && from->lost ? CL_RUN_LOST : CL_RUN_RUNNING;
        cl__copy_utf8(vm->detail, sizeof(vm->detail), reason);
    }
    cl__mig_end(s, m, "failed", reason);
}

void cl__end_migrations_of(struct cl_state *s, const char *name, const char *reason)
{
    for (size_t i = 0; i < s->nr_migs;) {
        struct cl_migration *m = &s->migs[i];
        if (m->phase != CL_MIG_COMMITTED && (!strcmp(m->from, name) || !strcmp(m->to, name)))
            end_failed(s, m, reason); /* removes s->migs[i] */
        else
            i++;
    }
}

/* The VM's host left: what it runs is unknown until the host returns (and
 * reports) or is fenced. Stopped and crashed VMs have no host. */
static void mark_lost(struct cl_vm *vm, const char *host)
{
    if (vm->run == CL_RUN_STOPPED || vm->run == CL_RUN_CRASHED || vm->run == CL_RUN_LOST)
        return;
    vm->run = CL_RUN_LOST;
    char d[CL_REASON_MAX];
    snprintf(d, sizeof(d), "host %s left the cluster (node down): the VM may still run there; "
             "its state is unknown until the host returns or is fenced", host);
    cl__copy_utf8(vm->detail, sizeof(vm->detail), d);
}

void cl_state_apply_config(struct cl_state *s, const struct cl_config *c)
{
    /* Sorted and distinct; more members than corosync allows are cut
     * (every host cuts the same). */
    uint32_t m[CL_MAX_MEMBERS];
    size_t n = 0;
    for (size_t i = 0; i < c->nr_members; i++) {
        if (is_member(c->members[i], m, n))
            continue;
        if (n == CL_MAX_MEMBERS)
            break;
        m[n++] = c->members[i];
    }
    qsort(m, n, sizeof(*m), cmp_u32);
    memcpy(s->members, m, n * sizeof(*m));
    s->nr_members = n;
    s->config_epoch++;
    s->config_ring = c->ring_seq;
    for (size_t i = 0; i < s->nr_hosts; i++) {
        struct cl_host *h = &s->hosts[i];
        h->online = h->nodeid != 0 && is_member(h->nodeid, c->members, c->nr_members);
        if (h->online) {
            h->lost = false;
            /* Back before it was fenced: nothing was restarted elsewhere,
             * so there is nothing to fence any more. (A fence that already
             * powered it off still reports: its episode stays open.) */
            if (h->fence == CL_FENCE_PENDING || h->fence == CL_FENCE_FAILED)
                h->fence = CL_FENCE_NONE;
        }
        /* A member left nothing: a departure list that names one (a peer's
         * sync_chunk header says what it likes) changes nothing for it. */
        for (size_t k = 0; k < c->nr_left && h->nodeid && !h->online; k++) {
            if (c->left[k] != h->nodeid)
                continue;
            if (c->left_reason[k] == CL_LEFT_NODE)
                cl__host_lost(h, "its node left the membership");
            else
                /* Its ternd left: an orderly stop may have disarmed its
                 * watchdog (agent.c, on_left), and a crashed ternd's may
                 * have reset it already; the deadline counts no more until
                 * it announces an armed one again. */
                h->watchdog_s = 0;
        }
    }
    cl__settle_hosts(s);
    s->quorate = false; /* a new configuration: if quorate, a new epoch */
    cl__update_quorum(s);
    cl__recover(s); /* hosts back: room for HA VMs waiting */
    s->version++;
    if (s->quorate && s->version > s->q_version)
        s->q_version = s->version;
}

void cl__host_lost(struct cl_host *h, const char *why)
{
    if (h->lost)
        return;
    h->lost = true;
    if (h->fence == CL_FENCE_FENCED)
        return;
    h->fence = CL_FENCE_PENDING;
    h->fence_seq++;
    h->fence_attempts = 0;
    h->fence_method[0] = '\0';
    snprintf(h->fence_detail, sizeof(h->fence_detail),
             "%s; to be fenced before its VMs can run elsewhere", why);
}

void cl__settle_hosts(struct cl_state *s)
{
    /* A migration that has not committed needs both ends; once committed
     * the VM belongs to the destination and the migration only waits for
     * its "done", unless the destination's node is gone. Ids ascend, so
     * every host ends them in the same order. */
    for (size_t i = 0; i < s->nr_migs;) {
        struct cl_migration *mg = &s->migs[i];
        const struct cl_host *from = cl__host(s, mg->from, NULL);
        const struct cl_host *to = cl__host(s, mg->to, NULL);
        const char *gone = NULL;
        if (mg->phase != CL_MIG_COMMITTED) {
            if (!from || !from->online)
                gone = mg->from;
            else if (!to || !to->online)
                gone = mg->to;
        } else if (!to || to->lost) {
            gone = mg->to;
        }
        if (!gone) {
            i++;
            continue;
        }
        char reason[CL_REASON_MAX];
        if (mg->phase == CL_MIG_COMMITTED) {
            snprintf(reason, sizeof(reason), "host %s left the cluster after the migration "
                     "committed", gone);
            struct cl_vm *vm = cl__vm(s, mg->vm, NULL);
            cl__mig_end(s, mg, "failed", reason); /* the VM stays owned by `to` */
            if (vm) {
                vm->run = CL_RUN_RUNNING; /* for mark_lost below */
                mark_lost(vm, vm->owner);
            }
            continue;
        }
        snprintf(reason, sizeof(reason), "host %s left the cluster", gone);
        end_failed(s, mg, reason); /* removes s->migs[i] */
    }
    for (size_t i = 0; i < s->nr_vms; i++) {
        struct cl_vm *vm = &s->vms[i];
        const struct cl_host *h = vm->owner[0] ? cl__host(s, vm->owner, NULL) : NULL;
        if (h && h->lost && !vm->migration_id)
            mark_lost(vm, h->name);
    }
}

const char *cl_vm_run_name(enum cl_vm_run r)
{
    switch (r) {
    case CL_RUN_STOPPED: return "stopped";
    case CL_RUN_STARTING: return "starting";
    case CL_RUN_RUNNING: return "running";
    case CL_RUN_MIGRATING: return "migrating";
    case CL_RUN_STOPPING: return "stopping";
    case CL_RUN_CRASHED: return "crashed";
    case CL_RUN_LOST: return "lost";
    }
    return "unknown";
}

const char *cl_fence_state_name(enum cl_fence_state f)
{
    switch (f) {
    case CL_FENCE_NONE: return "none";
    case CL_FENCE_PENDING: return "pending";
    case CL_FENCE_FAILED: return "failed";
    case CL_FENCE_FENCED: return "fenced";
    }
    return "unknown";
}

const char *cl_fence_check_name(enum cl_fence_check c)
{
    switch (c) {
    case CL_CHECK_UNKNOWN: return "unknown";
    case CL_CHECK_OK: return "ok";
    case CL_CHECK_FAILING: return "failing";
    }
    return "unknown";
}

const struct cl_host *cl_state_fencer(const struct cl_state *s, const char *target)
{
    if (!s->quorate)
        return NULL;
    const struct cl_host *best = NULL;
    for (size_t i = 0; i < s->nr_hosts; i++) {
        const struct cl_host *h = &s->hosts[i];
        if (!h->online || !h->nodeid || h->fence != CL_FENCE_NONE ||
            (target && !strcmp(h->name, target)))
            continue;
        if (!best || h->nodeid < best->nodeid)
            best = h;
    }
    return best;
}

bool cl_state_take_fault(struct cl_state *s)
{
    bool f = s->fault;
    s->fault = false;
    return f;
}

size_t cl_state_nr_recovering(const struct cl_state *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->nr_vms; i++)
        n += s->vms[i].recover;
    return n;
}

const char *cl_mig_phase_name(enum cl_mig_phase p)
{
    switch (p) {
    case CL_MIG_PREPARING: return "preparing";
    case CL_MIG_LISTENING: return "listening";
    case CL_MIG_COMMITTED: return "committed";
    }
    return "unknown";
}

/* Names become file and directory names on hosts (RUN/vms/NAME) and CLI
 * arguments, so beyond [A-Za-z0-9._-] the first character must be a letter
 * or digit: no ".", "..", hidden files or option-like names. */
bool cl_name_valid(const char *name)
{
    if (!name)
        return false;
    size_t n = strnlen(name, CL_NAME_MAX);
    if (n == 0 || n >= CL_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return false;
    }
    return true;
}

void cl__copy_utf8(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap);
    if (n >= cap) {
        n = cap - 1;
        /* Back off continuation bytes (10xxxxxx) and then the lead byte
         * of the character that did not fit. */
        while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

json_t *cl__blob_copy(const json_t *j, const char *what, struct tern_err *err)
{
    if (!json_is_object(j))
        return tern_err_coded(err, TERN_ERR_INVALID, "%s must be an object", what), NULL;
    size_t len = json_dumpb(j, NULL, 0, JSON_COMPACT);
    if (len == 0 || len > CL_BLOB_MAX)
        return tern_err_coded(err, TERN_ERR_INVALID, "%s is too large (%zu bytes, at most %d)", what, len,
                            CL_BLOB_MAX),
               NULL;
    json_t *c = json_deep_copy(j);
    if (!c)
        tern_err_coded(err, TERN_ERR_INTERNAL, "out of memory copying %s", what);
    return c;
}
