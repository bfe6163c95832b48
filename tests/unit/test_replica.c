/* The replica sync protocol (ha/replica.c) over a simulated CPG: one global
 * event order in which broadcasts and membership changes are delivered, a
 * broadcast reaching every node whose current view includes its sender.
 * That is what CPG's agreed order and virtual synchrony promise; the
 * scenarios check that replicas end equal and that no message is lost or
 * applied twice across joins, leaves, restarts, partitions and garbage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "ha/replica.h"

#define MAXN 6

struct sim;

struct node {
    uint32_t id;
    struct sim *sim;
    struct replica *r;
    uint32_t view[MAXN];
    size_t nview;
    int fail_sends;        /* refuse this many sends */
    uint64_t next_req;
    int synced_calls, membership_calls, applied_ok, applied_err, installed_calls, replaced_calls;
    int fatal_calls;
    uint64_t applied_reqs[4096]; /* origin node << 32 | req of applied messages */
    size_t nr_applied_reqs;
    char last_err[TERN_ERR_MAX + 16]; /* "[code] " and the message */
    char fatal_why[TERN_ERR_MAX];
    bool saw_null_msg;
    /* Its disk: the state as of the last journal event (unless frozen:
     * then what it held when frozen), and what is durable to report. */
    json_t *disk;
    bool disk_frozen;
    uint64_t persist_pending;
    uint64_t ring;         /* the totem ring its corosync runs in */
};

enum ev_kind { EV_MSG, EV_CONFCHG };

struct event {
    enum ev_kind kind;
    uint32_t sender;
    char *data;
    size_t len;
    uint32_t members[MAXN];
    size_t nr_members;
    bool process_only; /* those who left, left with their process only */
    uint64_t ring;     /* the totem ring it comes with (0: the members' own) */
    uint32_t extra_nodes[MAXN]; /* the ring's nodes besides the members (corosync runs) */
    size_t nr_extra_nodes;
};

struct sim {
    struct node nodes[MAXN + 1]; /* by node id, 1..MAXN */
    struct event *ev;
    size_t nr_ev, cap_ev;
    bool auto_persist;           /* nodes report what their disk holds */
    uint64_t ring;               /* the last ring sequence number handed out */
};

static void sim_insert(struct sim *s, size_t pos, struct event e)
{
    if (s->nr_ev == s->cap_ev) {
        s->cap_ev = s->cap_ev ? s->cap_ev * 2 : 64;
        s->ev = realloc(s->ev, s->cap_ev * sizeof(*s->ev));
        assert_non_null(s->ev);
    }
    memmove(&s->ev[pos + 1], &s->ev[pos], (s->nr_ev - pos) * sizeof(*s->ev));
    s->ev[pos] = e;
    s->nr_ev++;
}

static void sim_bcast(struct sim *s, uint32_t sender, const char *data, size_t len)
{
    struct event e = {.kind = EV_MSG, .sender = sender, .len = len};
    e.data = malloc(len ? len : 1);
    assert_non_null(e.data);
    memcpy(e.data, data, len);
    sim_insert(s, s->nr_ev, e);
}

/* A membership change for the nodes in `members` (the others do not see
 * it: that is how partitions are made), at queue position `pos`. Those who
 * left did so with their node (down, or cut off): a new totem ring, whose
 * sequence number follows every one before (corosync's ring id). */
static void sim_confchg_at(struct sim *s, size_t pos, const uint32_t *members, size_t n)
{
    s->ring += 4;
    struct event e = {.kind = EV_CONFCHG, .nr_members = n, .ring = s->ring};
    memcpy(e.members, members, n * sizeof(*members));
    sim_insert(s, pos, e);
}

static void sim_confchg(struct sim *s, const uint32_t *members, size_t n)
{
    sim_confchg_at(s, s->nr_ev, members, n);
}

/* A configuration change whose totem ring also has `extra` (nodes whose
 * corosync runs, without a ternd in the group). */
static void sim_confchg_nodes(struct sim *s, const uint32_t *members, size_t n,
                              const uint32_t *extra, size_t ne)
{
    s->ring += 4;
    struct event e = {.kind = EV_CONFCHG, .nr_members = n, .ring = s->ring,
                      .nr_extra_nodes = ne};
    memcpy(e.members, members, n * sizeof(*members));
    memcpy(e.extra_nodes, extra, ne * sizeof(*extra));
    sim_insert(s, s->nr_ev, e);
}

/* The same, but those who left stopped their ternd only. */
static void sim_confchg_process(struct sim *s, const uint32_t *members, size_t n)
{
    struct event e = {.kind = EV_CONFCHG, .nr_members = n, .process_only = true};
    memcpy(e.members, members, n * sizeof(*members));
    sim_insert(s, s->nr_ev, e);
}

/* Drops the queued broadcasts of `sender` (it died before they were
 * ordered). */
static void sim_drop_from(struct sim *s, uint32_t sender)
{
    size_t k = 0;
    for (size_t i = 0; i < s->nr_ev; i++) {
        if (s->ev[i].kind == EV_MSG && s->ev[i].sender == sender)
            free(s->ev[i].data);
        else
            s->ev[k++] = s->ev[i];
    }
    s->nr_ev = k;
}

static bool in_list(uint32_t x, const uint32_t *l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (l[i] == x)
            return true;
    return false;
}

/* What the disks made durable is reported (outside the replica's calls). */
static void sim_persist(struct sim *s)
{
    for (uint32_t id = 1; id <= MAXN; id++) {
        struct node *n = &s->nodes[id];
        if (n->r && s->auto_persist && n->persist_pending && !n->disk_frozen) {
            uint64_t v = n->persist_pending;
            n->persist_pending = 0;
            replica_persisted(n->r, v);
        }
    }
}

static bool sim_step(struct sim *s)
{
    if (s->nr_ev == 0)
        return false;
    struct event e = s->ev[0];
    memmove(&s->ev[0], &s->ev[1], (s->nr_ev - 1) * sizeof(*s->ev));
    s->nr_ev--;
    if (e.kind == EV_MSG) {
        for (uint32_t id = 1; id <= MAXN; id++) {
            struct node *n = &s->nodes[id];
            if (n->r && in_list(e.sender, n->view, n->nview))
                replica_deliver(n->r, e.sender, e.data, e.len);
        }
        free(e.data);
        sim_persist(s);
        return true;
    }
    for (size_t i = 0; i < e.nr_members; i++) {
        struct node *n = &s->nodes[e.members[i]];
        if (!n->r)
            continue;
        uint32_t left[MAXN], joined[MAXN];
        enum cl_leave_reason why[MAXN];
        size_t nl = 0, nj = 0;
        for (size_t k = 0; k < n->nview; k++)
            if (!in_list(n->view[k], e.members, e.nr_members)) {
                why[nl] = e.process_only ? CL_LEFT_PROCESS : CL_LEFT_NODE;
                left[nl++] = n->view[k];
            }
        for (size_t k = 0; k < e.nr_members; k++)
            if (!in_list(e.members[k], n->view, n->nview))
                joined[nj++] = e.members[k];
        memcpy(n->view, e.members, e.nr_members * sizeof(*e.members));
        n->nview = e.nr_members;
        replica_confchg(n->r, e.members, e.nr_members, left, why, nl, joined, nj);
    }
    /* Then CPG's totem callback: the ring these members now run in (a
     * process leaving keeps the ring). */
    uint64_t ring = e.ring;
    for (size_t i = 0; !ring && i < e.nr_members; i++)
        if (s->nodes[e.members[i]].ring > ring)
            ring = s->nodes[e.members[i]].ring;
    uint32_t nodes[2 * MAXN];
    size_t nn = 0;
    for (size_t i = 0; i < e.nr_members; i++)
        nodes[nn++] = e.members[i];
    for (size_t i = 0; i < e.nr_extra_nodes; i++)
        nodes[nn++] = e.extra_nodes[i];
    for (size_t i = 0; i < e.nr_members; i++) {
        struct node *n = &s->nodes[e.members[i]];
        n->ring = ring;
        if (n->r)
            replica_set_ring(n->r, ring, nodes, nn);
    }
    sim_persist(s);
    return true;
}

static void sim_run(struct sim *s)
{
    for (int guard = 0; sim_step(s); guard++)
        assert_true(guard < 1000000);
}

/* ---- the agent's side of each node ---- */

static int op_send(void *opaque, const void *data, size_t len)
{
    struct node *n = opaque;
    if (n->fail_sends > 0) {
        n->fail_sends--;
        return -1;
    }
    sim_bcast(n->sim, n->id, data, len);
    return 0;
}

static void op_applied(void *opaque, uint32_t sender, const json_t *msg, int rc,
                       const struct tern_err *err)
{
    struct node *n = opaque;
    (void)sender;
    if (!msg)
        n->saw_null_msg = true;
    if (rc < 0) {
        n->applied_err++;
        assert_non_null(err);
        /* "[code] message", as the agent logs it. */
        snprintf(n->last_err, sizeof(n->last_err), "[%s] %s", tern_err_code_name(err->code),
                 err->msg);
        return;
    }
    n->applied_ok++;
    const json_t *o = json_object_get(msg, "origin");
    if (o && n->nr_applied_reqs < 4096)
        n->applied_reqs[n->nr_applied_reqs++] =
            (uint64_t)json_integer_value(json_object_get(o, "node")) << 32 |
            (uint64_t)json_integer_value(json_object_get(o, "req"));
}

static void op_membership(void *opaque)
{
    ((struct node *)opaque)->membership_calls++;
}

static void op_synced(void *opaque)
{
    ((struct node *)opaque)->synced_calls++;
}

static void op_installed(void *opaque, bool replaced)
{
    struct node *n = opaque;
    n->installed_calls++;
    n->replaced_calls += replaced;
}

/* The journal: the disk holds the state after every event (as the agent's
 * store does once its worker synced). */
static void op_journal(void *opaque, const struct replica_event *ev)
{
    struct node *n = opaque;
    if (n->disk_frozen)
        return;
    json_decref(n->disk);
    n->disk = cl_state_to_json(replica_state(n->r));
    assert_non_null(n->disk);
    assert_int_equal(ev->version, cl_state_version(replica_state(n->r)));
    n->persist_pending = ev->version;
}

static void op_fatal(void *opaque, const char *why)
{
    struct node *n = opaque;
    n->fatal_calls++;
    snprintf(n->fatal_why, sizeof(n->fatal_why), "%s", why);
}

static const struct replica_ops ops = {op_send,      op_applied, op_membership, op_synced,
                                       op_installed, op_journal, op_fatal};

/* Starts node `id` with `state` (NULL: empty), as a fresh process would. */
static struct node *node_start(struct sim *s, uint32_t id, struct cl_state *state)
{
    struct node *n = &s->nodes[id];
    memset(n, 0, sizeof(*n));
    n->id = id;
    n->sim = s;
    n->next_req = 1;
    n->r = replica_new(id, state ? state : cl_state_new(), &ops, n);
    assert_non_null(n->r);
    assert_false(replica_synced(n->r));
    assert_int_equal(replica_local_nodeid(n->r), id);
    return n;
}

/* Kills node `id` and returns its last persisted state (what its disk
 * held; NULL-free: an empty state if it never wrote one). */
static struct cl_state *node_crash(struct sim *s, uint32_t id)
{
    struct node *n = &s->nodes[id];
    struct cl_state *persisted = cl_state_new();
    struct tern_err err;
    if (n->disk)
        assert_int_equal(cl_state_from_json(persisted, n->disk, &err), 0);
    json_decref(n->disk);
    n->disk = NULL;
    replica_free(n->r);
    n->r = NULL;
    n->nview = 0;
    return persisted;
}

/* Node `id` dies and the others (of `all`, n) see it leave; returns its
 * persisted state. */
static struct cl_state *node_leave(struct sim *s, uint32_t id, const uint32_t *all, size_t n)
{
    struct cl_state *st = node_crash(s, id);
    uint32_t rest[MAXN];
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (all[i] != id)
            rest[k++] = all[i];
    sim_confchg(s, rest, k);
    sim_run(s);
    return st;
}

/* Node `id` broadcasts a state message; returns its origin key. */
static uint64_t node_send(struct sim *s, uint32_t id, const char *text)
{
    struct node *n = &s->nodes[id];
    json_t *m = json_loads(text, 0, NULL);
    assert_non_null(m);
    struct tern_err err;
    uint64_t req = n->next_req++;
    char *t = replica_encode(n->r, m, req, &err);
    if (!t)
        fail_msg("encode: %s", err.msg);
    json_decref(m);
    sim_bcast(s, id, t, strlen(t));
    free(t);
    return (uint64_t)id << 32 | req;
}

/* Every host's corosync counts this many votes (the nodes of the test). */
static unsigned expected_votes = 3;

static void announce(struct sim *s, uint32_t id)
{
    char m[256];
    snprintf(m, sizeof(m),
             "{\"type\":\"host_announce\",\"host\":\"h%u\",\"mem_mib\":65536,\"vcpus\":64,"
             "\"migration_addr\":\"10.77.0.%u\",\"expected_votes\":%u}",
             id, id, expected_votes);
    node_send(s, id, m);
}

static char *dump_state(const struct cl_state *st)
{
    json_t *j = cl_state_to_json(st);
    char *t = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(j);
    assert_non_null(t);
    return t;
}

static char *dump(struct sim *s, uint32_t id)
{
    return dump_state(replica_state(s->nodes[id].r));
}

/* Every node in `ids` is synced and holds the same state. */
static void expect_equal(struct sim *s, const uint32_t *ids, size_t n)
{
    char *first = dump(s, ids[0]);
    for (size_t i = 0; i < n; i++) {
        if (!replica_synced(s->nodes[ids[i]].r))
            fail_msg("node %u is not synced", ids[i]);
        char *d = dump(s, ids[i]);
        if (strcmp(first, d) != 0)
            fail_msg("node %u differs from node %u:\n%s\n%s", ids[i], ids[0], d, first);
        free(d);
    }
    free(first);
}

static size_t times_applied(const struct node *n, uint64_t key)
{
    size_t c = 0;
    for (size_t i = 0; i < n->nr_applied_reqs; i++)
        c += n->applied_reqs[i] == key;
    return c;
}

static void sim_free(struct sim *s)
{
    for (uint32_t id = 1; id <= MAXN; id++) {
        replica_free(s->nodes[id].r);
        json_decref(s->nodes[id].disk);
    }
    for (size_t i = 0; i < s->nr_ev; i++)
        free(s->ev[i].data);
    free(s->ev);
    free(s);
}

static struct sim *sim_new(void)
{
    struct sim *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    return s;
}

static const uint32_t ALL3[] = {1, 2, 3};

/* Three fresh nodes joining one after another, each announcing itself. */
static struct sim *three_synced(void)
{
    struct sim *s = sim_new();
    for (uint32_t id = 1; id <= 3; id++) {
        node_start(s, id, NULL);
        sim_confchg(s, ALL3, id);
        sim_run(s);
        announce(s, id);
        sim_run(s);
    }
    expect_equal(s, ALL3, 3);
    return s;
}

static void test_fresh_start(void **unused)
{
    (void)unused;
    struct sim *s = three_synced();
    for (uint32_t id = 1; id <= 3; id++) {
        struct node *n = &s->nodes[id];
        assert_int_equal(n->synced_calls, 1);
        assert_true(n->membership_calls >= 1);
        const struct cl_host *h = cl_state_host_by_nodeid(replica_state(n->r), id);
        assert_non_null(h);
        assert_true(h->online);
    }
    assert_int_equal(cl_state_nr_hosts(replica_state(s->nodes[1].r)), 3);
    sim_free(s);

    /* All three in one membership change, before anyone is synced. */
    s = sim_new();
    for (uint32_t id = 1; id <= 3; id++)
        node_start(s, id, NULL);
    sim_confchg(s, ALL3, 3);
    sim_run(s);
    expect_equal(s, ALL3, 3);
    for (uint32_t id = 1; id <= 3; id++)
        announce(s, id);
    sim_run(s);
    expect_equal(s, ALL3, 3);
    assert_int_equal(cl_state_nr_hosts(replica_state(s->nodes[3].r)), 3);
    sim_free(s);

    /* A single node alone syncs with itself. */
    s = sim_new();
    node_start(s, 1, NULL);
    sim_confchg(s, ALL3, 1);
    sim_run(s);
    assert_true(replica_synced(s->nodes[1].r));
    assert_int_equal(s->nodes[1].synced_calls, 1);
    sim_free(s);
}

static void test_interleaved(void **unused)
{
    (void)unused;
    struct sim *s = three_synced();
    int ok0[4], err0[4];
    for (uint32_t id = 1; id <= 3; id++) {
        ok0[id] = s->nodes[id].applied_ok;
        err0[id] = s->nodes[id].applied_err;
    }
    char m[256];
    for (int i = 0; i < 20; i++) {
        uint32_t id = 1 + i % 3;
        snprintf(m, sizeof(m),
                 "{\"type\":\"vm_define\",\"name\":\"vm%d\",\"config\":{\"kernel\":\"/k\","
                 "\"mem_mib\":1024}}",
                 i / 2); /* every name twice: one define wins, one is refused */
        node_send(s, id, m);
        snprintf(m, sizeof(m), "{\"type\":\"vm_start\",\"name\":\"vm%d\"}", i / 2);
        node_send(s, 1 + (id % 3), m);
    }
    /* Deliver in small steps, sending more in between. */
    for (int i = 0; i < 10; i++) {
        sim_step(s);
        sim_step(s);
        snprintf(m, sizeof(m), "{\"type\":\"vm_stop\",\"name\":\"vm%d\"}", i);
        node_send(s, 1 + i % 3, m);
    }
    sim_run(s);
    expect_equal(s, ALL3, 3);
    /* Every node saw every message, with the same outcome. */
    for (uint32_t id = 1; id <= 3; id++) {
        assert_int_equal(s->nodes[id].applied_ok - ok0[id] + s->nodes[id].applied_err - err0[id],
                         50);
        assert_int_equal(s->nodes[id].applied_ok - ok0[id], s->nodes[1].applied_ok - ok0[1]);
    }
    assert_true(s->nodes[1].applied_err - err0[1] >= 10); /* the duplicate defines at least */
    assert_int_equal(cl_state_nr_vms(replica_state(s->nodes[2].r)), 10);
    sim_free(s);
}

static void test_leave_and_rejoin_stale(void **unused)
{
    (void)unused;
    struct sim *s = three_synced();
    node_send(s, 1, "{\"type\":\"vm_define\",\"name\":\"a\",\"config\":{\"kernel\":\"/k\","
                    "\"mem_mib\":64}}");
    sim_run(s);
    /* Node 3 dies; the others see it leave. */
    struct cl_state *stale = node_leave(s, 3, ALL3, 3);
    uint64_t stale_version = cl_state_version(stale);
    const uint32_t m12[] = {1, 2};
    assert_false(cl_state_host(replica_state(s->nodes[1].r), "h3")->online);
    node_send(s, 2, "{\"type\":\"vm_start\",\"name\":\"a\",\"host\":\"h2\"}");
    node_send(s, 1, "{\"type\":\"vm_define\",\"name\":\"b\",\"config\":{\"kernel\":\"/k\","
                    "\"mem_mib\":64}}");
    sim_run(s);
    expect_equal(s, m12, 2);
    assert_true(cl_state_version(replica_state(s->nodes[1].r)) > stale_version);

    /* It comes back with its stale copy. Messages sent right after the
     * membership change are delivered before the snapshot: they must
     * reach everyone exactly once. */
    node_start(s, 3, stale);
    sim_confchg(s, ALL3, 3);
    sim_step(s); /* the confchg: every member posts its offer */
    uint64_t k1 = node_send(s, 1, "{\"type\":\"vm_define\",\"name\":\"c\",\"config\":"
                                  "{\"kernel\":\"/k\",\"mem_mib\":64}}");
    sim_step(s); /* offer 1 */
    uint64_t k2 = node_send(s, 2, "{\"type\":\"vm_start\",\"name\":\"b\"}");
    assert_false(replica_synced(s->nodes[3].r));
    sim_run(s);
    expect_equal(s, ALL3, 3);
    for (uint32_t id = 1; id <= 3; id++) {
        assert_int_equal(times_applied(&s->nodes[id], k1), 1);
        assert_int_equal(times_applied(&s->nodes[id], k2), 1);
    }
    const struct cl_state *st = replica_state(s->nodes[3].r);
    assert_non_null(cl_state_vm(st, "c"));
    assert_string_equal(cl_state_vm(st, "a")->owner, "h2");
    assert_int_equal(cl_state_vm(st, "b")->run, CL_RUN_STARTING);
    assert_true(cl_state_host(st, "h3")->online);
    assert_int_equal(s->nodes[3].synced_calls, 1);
    assert_int_equal(s->nodes[1].synced_calls, 1); /* never lost it */
    /* And node 3 can take part: its own host record is live again. */
    announce(s, 3);
    node_send(s, 3, "{\"type\":\"vm_start\",\"name\":\"c\",\"host\":\"h3\"}");
    sim_run(s);
    expect_equal(s, ALL3, 3);
    assert_string_equal(cl_state_vm(replica_state(s->nodes[1].r), "c")->owner, "h3");
    sim_free(s);
}

/* A state with hosts h1..h3 and `nvms` VMs, as a node persisted it. */
static struct cl_state *history(unsigned nvms)
{
    struct cl_state *st = cl_state_new();
    struct tern_err err;
    char m[256];
    struct cl_config c = {.members = ALL3, .nr_members = 3};
    cl_state_apply_config(st, &c);
    for (unsigned id = 1; id <= 3; id++) {
        snprintf(m, sizeof(m),
                 "{\"type\":\"host_announce\",\"host\":\"h%u\",\"mem_mib\":65536,\"vcpus\":64,"
                 "\"migration_addr\":\"10.0.0.%u\",\"expected_votes\":3}",
                 id, id);
        json_t *j = json_loads(m, 0, NULL);
        assert_int_equal(cl_state_apply(st, id, j, &err), 0);
        json_decref(j);
    }
    for (unsigned i = 0; i < nvms; i++) {
        snprintf(m, sizeof(m),
                 "{\"type\":\"vm_define\",\"name\":\"v%u\",\"config\":{\"kernel\":\"/k\","
                 "\"mem_mib\":64}}",
                 i);
        json_t *j = json_loads(m, 0, NULL);
        assert_int_equal(cl_state_apply(st, 1, j, &err), 0);
        json_decref(j);
    }
    return st;
}

static void test_whole_cluster_restart(void **unused)
{
    (void)unused;
    struct sim *s = sim_new();
    node_start(s, 1, history(2));
    node_start(s, 2, history(5)); /* the newest copy */
    node_start(s, 3, history(4));
    char *expect = dump_state(replica_state(s->nodes[2].r));
    sim_confchg(s, ALL3, 3);
    sim_run(s);
    expect_equal(s, ALL3, 3);
    const struct cl_state *st = replica_state(s->nodes[1].r);
    assert_int_equal(cl_state_nr_vms(st), 5);
    /* Node 2's copy plus the membership: same hosts, VMs and counter. */
    json_t *want = json_loads(expect, 0, NULL), *got = cl_state_to_json(st);
    assert_true(json_equal(json_object_get(want, "vms"), json_object_get(got, "vms")));
    assert_int_equal(json_integer_value(json_object_get(got, "version")),
                     json_integer_value(json_object_get(want, "version")) + 1);
    for (size_t i = 0; i < 3; i++)
        assert_true(cl_state_host_at(st, i)->online);
    json_decref(want);
    json_decref(got);
    free(expect);
    sim_free(s);

    /* Same copies, but the nodes come up one at a time. Without a bootstrap
     * quorum the first one alone crowns its own (older) copy; alone it is
     * not quorate, so when node 2 joins, node 2's copy (more quorate
     * history) still wins... */
    s = sim_new();
    node_start(s, 1, history(2));
    sim_confchg(s, ALL3, 1);
    sim_run(s);
    assert_true(replica_synced(s->nodes[1].r));
    assert_false(cl_state_quorate(replica_state(s->nodes[1].r)));
    node_start(s, 2, history(5));
    sim_confchg(s, ALL3, 2);
    sim_run(s);
    expect_equal(s, ALL3, 2);
    assert_int_equal(cl_state_nr_vms(replica_state(s->nodes[2].r)), 5);
    sim_free(s);

    /* ...and with a quorum of 2, node 1 waits (unsynced) for it. */
    s = sim_new();
    node_start(s, 1, history(2));
    replica_set_bootstrap_quorum(s->nodes[1].r, 2);
    sim_confchg(s, ALL3, 1);
    sim_run(s);
    assert_false(replica_synced(s->nodes[1].r));
    node_start(s, 2, history(5));
    replica_set_bootstrap_quorum(s->nodes[2].r, 2);
    sim_confchg(s, ALL3, 2);
    sim_run(s);
    expect_equal(s, ALL3, 2);
    assert_int_equal(cl_state_nr_vms(replica_state(s->nodes[1].r)), 5);
    /* A late node with an even newer copy no longer wins: the cluster has
     * an agreed state. */
    node_start(s, 3, history(9));
    replica_set_bootstrap_quorum(s->nodes[3].r, 2);
    sim_confchg(s, ALL3, 3);
    sim_run(s);
    expect_equal(s, ALL3, 3);
    assert_int_equal(cl_state_nr_vms(replica_state(s->nodes[3].r)), 5);
    sim_free(s);
}

static void test_partition_and_merge(void **unused)
{
    (void)unused;
    struct sim *s = three_synced();
    const uint32_t m12[] = {1, 2}, m3[] = {3};
    sim_confchg(s, m12, 2);
    sim_confchg(s, m3, 1);
    sim_run(s);
    for (uint32_t id = 1; id <= 3; id++)
        assert_true(replica_synced(s->nodes[id].r));
    assert_false(cl_state_host(replica_state(s->nodes[1].r), "h3")->online);
    assert_false(cl_state_host(replica_state(s->nodes[3].r), "h1")->online);
    node_send(s, 1, "{\"type\":\"vm_define\",\"name\":\"big\",\"config\":{\"kernel\":\"/k\","
                    "\"mem_mib\":64}}");
    node_send(s, 2, "{\"type\":\"vm_start\",\"name\":\"big\",\"host\":\"h2\"}");
    node_send(s, 3, "{\"type\":\"vm_define\",\"name\":\"small\",\"config\":{\"kernel\":\"/k\","
                    "\"mem_mib\":64}}");
    sim_run(s);
    expect_equal(s, m12, 2);
    assert_null(cl_state_vm(replica_state(s->nodes[3].r), "big"));
    uint64_t v12 = cl_state_version(replica_state(s->nodes[1].r));
    assert_true(v12 > cl_state_version(replica_state(s->nodes[3].r)));
    /* The merge: the side with more history wins everywhere. */
    sim_confchg(s, ALL3, 3);
    sim_run(s);
    expect_equal(s, ALL3, 3);
    const struct cl_state *st = replica_state(s->nodes[3].r);
    assert_non_null(cl_state_vm(st, "big"));
    assert_null(cl_state_vm(st, "small"));
    for (size_t i = 0; i < 3; i++)
        assert_true(cl_state_host_at(st, i)->online);
    assert_int_equal(s->nodes[3].synced_calls, 1); /* it never stopped being synced */
    sim_free(s);
}

static void test_confchg_during_sync(void **unused)
{
    (void)unused;
    /* A fourth node joins while the round for node 3 is still open: the
     * first round's late snapshot is ignored and a new round runs. What the
     * interrupted round queued is dropped on every member (its
     * configuration was never applied; nobody acknowledged it), and its
     * sender is told. */
    struct sim *s = sim_new();
    for (uint32_t id = 1; id <= 2; id++) {
        node_start(s, id, NULL);
        sim_confchg(s, ALL3, id);
        sim_run(s);
        announce(s, id);
        sim_run(s);
    }
    node_start(s, 3, history(3)); /* an unrelated, higher-versioned copy */
    node_start(s, 4, NULL);
    sim_confchg(s, ALL3, 3);
    sim_step(s);
    uint64_t k = node_send(s, 1, "{\"type\":\"vm_define\",\"name\":\"mid\",\"config\":"
                                 "{\"kernel\":\"/k\",\"mem_mib\":64}}");
    const uint32_t all4[] = {1, 2, 3, 4};
    sim_confchg(s, all4, 4);
    size_t unsynced_errs = s->nodes[3].applied_err;
    sim_run(s);
    expect_equal(s, all4, 4);
    for (uint32_t id = 1; id <= 4; id++)
        assert_int_equal(times_applied(&s->nodes[id], k), 0);
    assert_non_null(strstr(s->nodes[1].last_err, "[conflict] dropped"));
    assert_int_equal(s->nodes[3].applied_err, unsynced_errs + 1); /* the same refusal */
    const struct cl_state *st = replica_state(s->nodes[4].r);
    assert_null(cl_state_vm(st, "mid"));
    assert_non_null(cl_state_host(st, "h1")); /* the synced side's state, not node 3's */
    assert_null(cl_state_vm(st, "v0"));
    sim_free(s);

    /* The joiner dies before its offer is delivered: the round for
     * {1,2,3} can never finish; the next membership restarts it. */
    s = three_synced();
    cl_state_free(node_leave(s, 3, ALL3, 3));
    node_start(s, 3, NULL);
    sim_confchg(s, ALL3, 3);
    sim_step(s);                  /* confchg */
    sim_step(s);                  /* offer 1 */
    k = node_send(s, 2, "{\"type\":\"vm_define\",\"name\":\"x\",\"config\":{\"kernel\":\"/k\","
                        "\"mem_mib\":64}}");
    cl_state_free(node_crash(s, 3)); /* node 3 dies: its offer is lost */
    sim_drop_from(s, 3);
    const uint32_t m12[] = {1, 2};
    sim_confchg_at(s, 1, m12, 2); /* right after offer 2 */
    sim_run(s);
    expect_equal(s, m12, 2);
    /* Delivered after that change, in the new round: applied once there. */
    assert_int_equal(times_applied(&s->nodes[1], k), 1);
    assert_int_equal(times_applied(&s->nodes[2], k), 1);
    assert_false(cl_state_host(replica_state(s->nodes[1].r), "h3")->online);
    sim_free(s);
}

static void test_garbage(void **unused)
{
    (void)unused;
    struct sim *s = three_synced();
    node_send(s, 1, "{\"type\":\"vm_define\",\"name\":\"a\",\"config\":{\"kernel\":\"/k\","
                    "\"mem_mib\":64}}");
    sim_run(s);
    char *before = dump(s, 1);
    int errs = s->nodes[2].applied_err;
    const char *bad[] = {
        "",
        "{",
        "\xff\xfe\x00",
        "[1,2,3]",
        "42",
        "{\"no_type\":1}",
        "{\"type\":null}",
        "{\"type\":\"vm_boom\"}",
        "{\"type\":\"vm_define\",\"type\":\"vm_define\"}",
        "{\"type\":\"vm_start\",\"name\":{\"deep\":[[[[[]]]]]}}",
        "{\"type\":\"sync_offer\",\"members\":[1,2,3],\"version\":\"x\",\"synced\":true}",
        "{\"type\":\"sync_offer\",\"members\":\"all\"}",
        "{\"type\":\"sync_chunk\",\"members\":[1,2,3]}",
        "{\"type\":\"sync_persisted\",\"version\":\"x\"}",
        "{\"type\":\"sync_state\"}",
    };
    size_t nbad = sizeof(bad) / sizeof(bad[0]);
    for (size_t i = 0; i < nbad; i++)
        sim_bcast(s, 2, bad[i], i == 2 ? 3 : strlen(bad[i]));
    /* Too large: dropped before parsing. */
    size_t huge = (4u << 20) + 1;
    char *h = malloc(huge);
    memset(h, ' ', huge);
    sim_bcast(s, 3, h, huge);
    free(h);
    sim_run(s);
    char *after = dump(s, 1);
    assert_string_equal(before, after);
    expect_equal(s, ALL3, 3);
    /* Each bad message is reported; well-formed sync offers outside a round
     * (or of another membership) are dropped quietly. */
    assert_int_equal(s->nodes[2].applied_err, errs + 14);
    assert_true(s->nodes[2].saw_null_msg);
    assert_non_null(strstr(s->nodes[1].last_err, "[invalid]"));
    free(before);
    free(after);

    /* During a round, a forged chunk from the winner's node id that fails
     * its checksum is refused by all, who take the next best offer (node 2,
     * with the same state); one from a node that did not win is ignored. */
    cl_state_free(node_leave(s, 3, ALL3, 3));
    node_start(s, 3, NULL);
    sim_confchg(s, ALL3, 3);
    for (int i = 0; i < 4; i++) /* confchg and the three offers */
        sim_step(s);
    const char forged[] = "{\"type\":\"sync_chunk\",\"members\":[1,2,3],\"seq\":0,\"total\":1,"
                          "\"bytes\":10,\"crc\":12345}\n0123456789";
    struct event fe = {.kind = EV_MSG, .sender = 1, .len = sizeof(forged) - 1};
    fe.data = malloc(fe.len);
    memcpy(fe.data, forged, fe.len);
    sim_insert(s, 0, fe); /* before node 1's real chunk */
    struct event fe2 = {.kind = EV_MSG, .sender = 2, .len = sizeof(forged) - 1};
    fe2.data = malloc(fe2.len);
    memcpy(fe2.data, forged, fe2.len);
    sim_insert(s, 0, fe2); /* and one from a node that did not win */
    errs = s->nodes[3].applied_err;
    sim_run(s);
    expect_equal(s, ALL3, 3);
    /* node 2's forgery, node 1's forgery, node 1's real (now ignored) chunk */
    assert_int_equal(s->nodes[3].applied_err, errs + 3);
    assert_non_null(cl_state_vm(replica_state(s->nodes[3].r), "a"));
    sim_free(s);
}

static void test_send_failures(void **unused)
{
    (void)unused;
    /* A refused offer goes out with the next event... */
    struct sim *s = three_synced();
    struct cl_state *st = node_leave(s, 3, ALL3, 3);
    node_start(s, 3, st);
    s->nodes[3].fail_sends = 1;
    sim_confchg(s, ALL3, 3);
    sim_run(s);
    expect_equal(s, ALL3, 3);
    sim_free(s);

    /* ...or when the agent's timer calls replica_flush in a quiet cluster. */
    s = sim_new();
    node_start(s, 1, NULL);
    s->nodes[1].fail_sends = 2;
    sim_confchg(s, ALL3, 1);
    sim_run(s);
    assert_false(replica_synced(s->nodes[1].r));
    assert_false(replica_flush(s->nodes[1].r)); /* fails once more */
    assert_true(replica_flush(s->nodes[1].r));
    sim_run(s);
    assert_true(replica_synced(s->nodes[1].r));
    /* The winner's snapshot can be refused too. */
    node_start(s, 2, NULL);
    sim_confchg(s, ALL3, 2);
    sim_step(s); /* the offers are out */
    s->nodes[1].fail_sends = 1;
    sim_run(s);
    assert_false(replica_synced(s->nodes[2].r));
    assert_true(replica_flush(s->nodes[1].r));
    sim_run(s);
    expect_equal(s, ALL3, 2);
    sim_free(s);
}

static void test_encode(void **unused)
{
    (void)unused;
    struct sim *s = sim_new();
    node_start(s, 6, NULL);
    struct tern_err err;
    json_t *m = json_pack("{s:s, s:s}", "type", "vm_stop", "name", "x");
    char *t = replica_encode(s->nodes[6].r, m, 99, &err);
    assert_non_null(t);
    json_t *back = json_loads(t, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(back, "origin"), "node")),
                     6);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(back, "origin"), "req")),
                     99);
    assert_string_equal(json_string_value(json_object_get(back, "type")), "vm_stop");
    assert_null(strchr(t, '\n'));
    json_decref(back);
    free(t);
    json_decref(m);
    m = json_pack("{s:s}", "type", "sync_state");
    assert_null(replica_encode(s->nodes[6].r, m, 1, &err));
    assert_int_equal(err.code, TERN_ERR_INVALID);
    json_decref(m);
    m = json_pack("[i]", 1);
    assert_null(replica_encode(s->nodes[6].r, m, 1, &err));
    json_decref(m);
    /* Unsynced before any membership: state messages are not applied. */
    const char *msg = "{\"type\":\"vm_stop\",\"name\":\"x\"}";
    replica_deliver(s->nodes[6].r, 1, msg, strlen(msg));
    assert_non_null(strstr(s->nodes[6].last_err, "not synced"));
    sim_free(s);
}

/* Random interleavings of sends, deliveries, partitions and merges: after a
 * final merge every replica holds the same state. */
static void test_random_schedules(void **unused)
{
    (void)unused;
    for (unsigned seed = 1; seed <= 60; seed++) {
        srand(seed);
        struct sim *s = sim_new();
        const uint32_t all5[] = {1, 2, 3, 4, 5};
        for (uint32_t id = 1; id <= 5; id++)
            node_start(s, id, NULL);
        sim_confchg(s, all5, 5);
        sim_run(s);
        for (uint32_t id = 1; id <= 5; id++)
            announce(s, id);
        for (int step = 0; step < 300; step++) {
            int what = rand() % 100;
            if (what < 55 && s->nr_ev) {
                sim_step(s);
            } else if (what < 90) {
                uint32_t id = 1 + rand() % 5;
                if (!s->nodes[id].r || !replica_synced(s->nodes[id].r))
                    continue; /* the agent refuses to originate while unsynced */
                char m[256];
                int v = rand() % 6;
                switch (rand() % 5) {
                case 0:
                    snprintf(m, sizeof(m), "{\"type\":\"vm_define\",\"name\":\"v%d\",\"config\":"
                             "{\"kernel\":\"/k\",\"mem_mib\":1024}}", v);
                    break;
                case 1:
                    snprintf(m, sizeof(m), "{\"type\":\"vm_start\",\"name\":\"v%d\"}", v);
                    break;
                case 2:
                    snprintf(m, sizeof(m), "{\"type\":\"vm_report\",\"name\":\"v%d\","
                             "\"run\":\"%s\"}", v, rand() % 2 ? "running" : "crashed");
                    break;
                case 3:
                    snprintf(m, sizeof(m), "{\"type\":\"migration_begin\",\"vm\":\"v%d\","
                             "\"to\":\"h%d\"}", v, 1 + rand() % 5);
                    break;
                default:
                    snprintf(m, sizeof(m), "{\"type\":\"vm_stop\",\"name\":\"v%d\"}", v);
                    break;
                }
                node_send(s, id, m);
            } else if (what < 97) {
                /* Split into two random sides (each side sees its own change). */
                uint32_t a[5], b[5];
                size_t na = 0, nb = 0;
                for (uint32_t id = 1; id <= 5; id++) {
                    if (rand() % 2)
                        a[na++] = id;
                    else
                        b[nb++] = id;
                }
                size_t pos = s->nr_ev ? (size_t)rand() % (s->nr_ev + 1) : 0;
                if (na)
                    sim_confchg_at(s, pos, a, na);
                if (nb)
                    sim_confchg_at(s, pos + (na ? 1 : 0), b, nb);
            } else {
                size_t pos = s->nr_ev ? (size_t)rand() % (s->nr_ev + 1) : 0;
                sim_confchg_at(s, pos, all5, 5);
            }
        }
        sim_confchg(s, all5, 5);
        sim_run(s);
        expect_equal(s, all5, 5);
        /* No message was applied twice on any node. */
        for (uint32_t id = 1; id <= 5; id++) {
            struct node *n = &s->nodes[id];
            for (size_t i = 0; i < n->nr_applied_reqs; i++)
                assert_int_equal(times_applied(n, n->applied_reqs[i]), 1);
        }
        sim_free(s);
    }
}

static const char *define_msg(const char *name)
{
    static char m[256];
    snprintf(m, sizeof(m),
             "{\"type\":\"vm_define\",\"name\":\"%s\",\"config\":{\"kernel\":\"/k\","
             "\"mem_mib\":64}}",
             name);
    return m;
}

/* Defect 1: a minority that was cut off and flapped (its version grew with
 * every configuration change) must not erase, at the merge, what the
 * quorate majority did meanwhile: the side that held quorum last wins. */
static void test_minority_flaps_majority_wins(void **unused)
{
    (void)unused;
    struct sim *s = three_synced();
    const uint32_t m12[] = {1, 2}, m3[] = {3};
    sim_confchg(s, m12, 2);
    sim_confchg(s, m3, 1);
    sim_run(s);
    /* The minority: not quorate, so a client change is refused there. */
    assert_false(cl_state_quorate(replica_state(s->nodes[3].r)));
    node_send(s, 3, define_msg("minority"));
    sim_run(s);
    assert_non_null(strstr(s->nodes[3].last_err, "[no_quorum]"));
    for (int i = 0; i < 8; i++) { /* ternd and corosync restarted a few times */
        sim_confchg(s, m3, 1);
        sim_run(s);
    }
    /* The majority goes on and acknowledges a change. */
    assert_true(cl_state_quorate(replica_state(s->nodes[1].r)));
    uint64_t k = node_send(s, 1, define_msg("acked"));
    sim_run(s);
    assert_int_equal(times_applied(&s->nodes[2], k), 1);
    const struct cl_state *maj = replica_state(s->nodes[1].r), *min = replica_state(s->nodes[3].r);
    assert_true(cl_state_version(min) > cl_state_version(maj)); /* the old rule's winner */
    /* The majority continued the epoch it had (one history, no round) and
     * holds more of it; the minority could not raise its quorate version. */
    assert_true(cl_state_quorum_epoch(maj) >= cl_state_quorum_epoch(min));
    assert_true(cl_state_quorate_version(maj) > cl_state_quorate_version(min));
    int replaced3 = s->nodes[3].replaced_calls;
    sim_confchg(s, ALL3, 3);
    sim_run(s);
    expect_equal(s, ALL3, 3);
    assert_non_null(cl_state_vm(replica_state(s->nodes[3].r), "acked"));
    assert_null(cl_state_vm(replica_state(s->nodes[3].r), "minority"));
    assert_int_equal(s->nodes[3].replaced_calls, replaced3 + 1); /* the minority's copy went */
    assert_int_equal(s->nodes[1].replaced_calls, 0);
    sim_free(s);
}

/* Defect 2: whether a configuration is quorate is part of the ordered
 * state, so every replica that applies a message agrees on it. A start sent
 * while quorate but delivered after the partition is refused by every
 * replica of the minority, with the same error. */
static void test_quorum_is_ordered(void **unused)
{
    (void)unused;
    expected_votes = 5;
    struct sim *s = sim_new();
    const uint32_t all5[] = {1, 2, 3, 4, 5}, m12[] = {1, 2}, m345[] = {3, 4, 5};
    for (uint32_t id = 1; id <= 5; id++)
        node_start(s, id, NULL);
    sim_confchg(s, all5, 5);
    sim_run(s);
    for (uint32_t id = 1; id <= 5; id++)
        announce(s, id);
    sim_run(s);
    node_send(s, 1, define_msg("v"));
    sim_run(s);
    expect_equal(s, all5, 5);
    node_send(s, 1, "{\"type\":\"vm_start\",\"name\":\"v\",\"host\":\"h1\"}");
    /* The partition comes before the start in both sides' order. */
    sim_confchg_at(s, 0, m345, 3);
    sim_confchg_at(s, 0, m12, 2);
    sim_run(s);
    expect_equal(s, m12, 2);
    expect_equal(s, m345, 3);
    for (uint32_t id = 1; id <= 2; id++) {
        assert_non_null(strstr(s->nodes[id].last_err, "[no_quorum] vm_start refused"));
        assert_int_equal(cl_state_vm(replica_state(s->nodes[id].r), "v")->run, CL_RUN_STOPPED);
    }
    assert_true(cl_state_quorate(replica_state(s->nodes[3].r)));
    /* Hosts 1 and 2 are lost to the majority (their nodes left). */
    assert_true(cl_state_host(replica_state(s->nodes[3].r), "h1")->lost);
    sim_confchg(s, all5, 5);
    sim_run(s);
    expect_equal(s, all5, 5);
    assert_false(cl_state_host(replica_state(s->nodes[3].r), "h1")->lost);
    sim_free(s);
    expected_votes = 3;
}

/* Acknowledgements: a change is stable once a majority of the expected
 * votes has reported it persisted, in the current configuration. */
static void test_stable_acks(void **unused)
{
    (void)unused;
    struct sim *s = sim_new();
    s->auto_persist = true;
    for (uint32_t id = 1; id <= 3; id++) {
        node_start(s, id, NULL);
        sim_confchg(s, ALL3, id);
        sim_run(s);
        announce(s, id);
        sim_run(s);
    }
    expect_equal(s, ALL3, 3);
    node_send(s, 1, define_msg("a"));
    sim_run(s);
    uint64_t v = cl_state_version(replica_state(s->nodes[1].r));
    for (uint32_t id = 1; id <= 3; id++)
        assert_true(replica_stable_version(s->nodes[id].r) >= v);
    /* Two disks stall: one report is not a majority. */
    s->nodes[2].disk_frozen = s->nodes[3].disk_frozen = true;
    node_send(s, 1, define_msg("b"));
    sim_run(s);
    uint64_t vb = cl_state_version(replica_state(s->nodes[1].r));
    assert_true(replica_stable_version(s->nodes[1].r) < vb);
    assert_true(replica_stable_version(s->nodes[1].r) >= v);
    /* One catches up: stable. */
    s->nodes[2].disk_frozen = false;
    replica_persisted(s->nodes[2].r, cl_state_version(replica_state(s->nodes[2].r)));
    sim_run(s);
    assert_true(replica_stable_version(s->nodes[1].r) >= vb);
    /* A configuration change starts the count again: node 3 leaves (its
     * ternd only); the two left report again. */
    struct cl_state *st3 = node_crash(s, 3);
    const uint32_t m12[] = {1, 2};
    sim_confchg_process(s, m12, 2);
    sim_step(s);
    assert_int_equal(replica_stable_version(s->nodes[1].r), 0);
    sim_run(s);
    assert_true(replica_stable_version(s->nodes[1].r) >= vb);
    /* h3 left with its process only: not lost. */
    assert_false(cl_state_host(replica_state(s->nodes[1].r), "h3")->lost);
    assert_false(cl_state_host(replica_state(s->nodes[1].r), "h3")->online);
    cl_state_free(st3);
    sim_free(s);
}

/* A whole-cluster power loss: what was acknowledged (persisted on a
 * majority) survives the restart, whoever comes back first; what only one
 * disk held, and was never acknowledged, may go. */
static void test_restart_keeps_acknowledged(void **unused)
{
    (void)unused;
    struct sim *s = sim_new();
    s->auto_persist = true;
    for (uint32_t id = 1; id <= 3; id++) {
        node_start(s, id, NULL);
        sim_confchg(s, ALL3, id);
        sim_run(s);
        announce(s, id);
        sim_run(s);
    }
    node_send(s, 1, define_msg("acked"));
    sim_run(s);
    assert_true(replica_stable_version(s->nodes[1].r) >=
                cl_state_version(replica_state(s->nodes[1].r)));
    s->nodes[2].disk_frozen = s->nodes[3].disk_frozen = true;
    node_send(s, 1, define_msg("only-on-h1"));
    sim_run(s);
    struct cl_state *d[4];
    for (uint32_t id = 1; id <= 3; id++)
        d[id] = node_crash(s, id);
    assert_non_null(cl_state_vm(d[1], "only-on-h1"));
    assert_null(cl_state_vm(d[2], "only-on-h1"));
    /* Nodes 2 and 3 come back first (a majority), then node 1. */
    for (uint32_t id = 2; id <= 3; id++) {
        node_start(s, id, d[id]);
        replica_set_bootstrap_quorum(s->nodes[id].r, 2);
    }
    const uint32_t m23[] = {2, 3};
    sim_confchg(s, m23, 2);
    sim_run(s);
    expect_equal(s, m23, 2);
    assert_non_null(cl_state_vm(replica_state(s->nodes[2].r), "acked"));
    node_start(s, 1, d[1]);
    replica_set_bootstrap_quorum(s->nodes[1].r, 2);
    sim_confchg(s, ALL3, 3);
    sim_run(s);
    expect_equal(s, ALL3, 3);
    /* The majority's restarted configuration held quorum last. */
    assert_non_null(cl_state_vm(replica_state(s->nodes[1].r), "acked"));
    assert_null(cl_state_vm(replica_state(s->nodes[1].r), "only-on-h1"));
    sim_free(s);
}

/* Defect 6: a refusal on one host only (out of memory) would make its
 * replica differ: it stops applying at once and says so; reloaded from its
 * disk and rejoined, it takes the others' state. */
static void test_local_refusal_is_fatal(void **unused)
{
    (void)unused;
    struct sim *s = three_synced();
    replica_inject_local_refusal(s->nodes[2].r);
    node_send(s, 1, define_msg("x"));
    node_send(s, 1, define_msg("y"));
    sim_run(s);
    assert_int_equal(s->nodes[2].fatal_calls, 1);
    assert_non_null(strstr(s->nodes[2].fatal_why, "refused on this host only"));
    assert_true(replica_failed(s->nodes[2].r));
    assert_false(replica_synced(s->nodes[2].r));
    assert_null(cl_state_vm(replica_state(s->nodes[2].r), "y")); /* applies nothing more */
    const uint32_t m13[] = {1, 3};
    expect_equal(s, m13, 2);
    /* The agent leaves the group, reloads its disk and joins again. */
    struct cl_state *d = node_crash(s, 2);
    sim_confchg(s, m13, 2);
    sim_run(s);
    node_start(s, 2, d);
    sim_confchg(s, ALL3, 3);
    sim_run(s);
    expect_equal(s, ALL3, 3);
    assert_non_null(cl_state_vm(replica_state(s->nodes[2].r), "y"));
    sim_free(s);
}

/* Defect 7: a sync round that cannot finish (a member's offer never comes)
 * must not queue forever: past the limit the replica is fatal. */
static void test_round_queue_bounded(void **unused)
{
    (void)unused;
    struct sim *s = three_synced();
    struct cl_state *d = node_crash(s, 3);
    const uint32_t m12[] = {1, 2};
    sim_confchg(s, m12, 2);
    sim_run(s);
    node_start(s, 3, d);
    s->nodes[3].fail_sends = 1000000; /* its offer never goes out */
    for (uint32_t id = 1; id <= 2; id++)
        replica_set_queue_limits(s->nodes[id].r, 20, 1u << 20);
    sim_confchg(s, ALL3, 3);
    sim_run(s);
    assert_true(replica_round_open(s->nodes[1].r));
    assert_false(replica_ready(s->nodes[1].r));
    for (int i = 0; i < 25; i++) {
        char name[16];
        snprintf(name, sizeof(name), "q%d", i);
        node_send(s, 1, define_msg(name));
    }
    sim_run(s);
    for (uint32_t id = 1; id <= 2; id++) {
        assert_int_equal(s->nodes[id].fatal_calls, 1);
        assert_non_null(strstr(s->nodes[id].fatal_why, "still open"));
    }
    sim_free(s);
}

/* Defect 9: a state larger than one CPG message travels in chunks; a chunk
 * that arrives damaged is refused by every member alike and the next best
 * offer is taken. */
static void test_large_state_in_chunks(void **unused)
{
    (void)unused;
    struct cl_state *st = history(0);
    struct tern_err err;
    char cmd[1001];
    memset(cmd, 'c', 1000);
    cmd[1000] = '\0';
    for (int i = 0; i < 3000; i++) {
        char m[1400];
        snprintf(m, sizeof(m), "{\"type\":\"vm_define\",\"name\":\"big%d\",\"config\":{"
                 "\"kernel\":\"/k\",\"mem_mib\":64,\"cmdline\":\"%s\"}}", i, cmd);
        json_t *j = json_loads(m, 0, NULL);
        assert_int_equal(cl_state_apply(st, 1, j, &err), 0);
        json_decref(j);
    }
    json_t *doc = cl_state_to_json(st);
    char *text = json_dumps(doc, JSON_COMPACT);
    size_t bytes = strlen(text);
    free(text);
    assert_true(bytes > 3 * REPLICA_CHUNK_BYTES);
    struct sim *s = sim_new();
    struct cl_state *copy = cl_state_new();
    assert_int_equal(cl_state_from_json(copy, doc, &err), 0);
    json_decref(doc);
    node_start(s, 1, st);
    node_start(s, 2, copy);
    const uint32_t m12[] = {1, 2};
    sim_confchg(s, m12, 2);
    sim_run(s);
    expect_equal(s, m12, 2);
    /* Node 3 joins; node 1's first chunk is damaged on the way. */
    node_start(s, 3, NULL);
    sim_confchg(s, ALL3, 3);
    for (int i = 0; i < 4; i++)
        sim_step(s); /* the configuration change and the three offers */
    bool damaged = false;
    for (size_t i = 0; i < s->nr_ev && !damaged; i++) {
        struct event *e = &s->ev[i];
        if (e->kind == EV_MSG && e->sender == 1 && strstr(e->data, "sync_chunk")) {
            e->data[e->len - 10] ^= 0x20;
            damaged = true;
        }
    }
    assert_true(damaged);
    sim_run(s);
    expect_equal(s, ALL3, 3);
    assert_int_equal(cl_state_nr_vms(replica_state(s->nodes[3].r)), 3000);
    assert_non_null(strstr(s->nodes[3].last_err, "fails its checksum"));
    printf("# a %zu-byte state went to a joining replica in %zu chunks\n", bytes,
           (bytes + REPLICA_CHUNK_BYTES - 1) / REPLICA_CHUNK_BYTES);
    sim_free(s);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void test_thousand_vm_join(void **unused)
{
    (void)unused;
    struct sim *s = sim_new();
    node_start(s, 1, history(1000));
    sim_confchg(s, ALL3, 1);
    sim_run(s);
    node_start(s, 2, NULL);
    double t0 = now_ms();
    sim_confchg(s, ALL3, 2);
    sim_run(s);
    double t1 = now_ms();
    expect_equal(s, ALL3, 2);
    assert_int_equal(cl_state_nr_vms(replica_state(s->nodes[2].r)), 1000);
    printf("# a joining replica took a 1000-VM state in %.1f ms (serialize, parse, install; "
           "no network)\n",
           t1 - t0);
    sim_free(s);
}


/* ---- The model's counterexamples (ha/replica.pml, docs/cluster-state.md
 * "The model"), replayed against the C. Model nodes n0, n1, n2 are nodes
 * 1, 2, 3 here. ---- */

/* Point 1 (CONFIG_AT_CONFCHG, and the trail of MAIN_RULE): a change is
 * delivered on {1,2} only and acknowledged there; {1,2} and 3 merge; 3 must
 * not write its stale history under the merge's configuration during the
 * round. After a power loss 2 and 3 restart first: 2's disk (the change)
 * must beat 3's. */
static void test_model_config_at_install(void **unused)
{
    (void)unused;
    struct sim *s = three_synced();
    s->auto_persist = true;
    const uint32_t m12[] = {1, 2}, m3[] = {3}, m23[] = {2, 3};
    node_send(s, 1, define_msg("acked"));
    /* The split: the change reaches 1 and 2 in {1,2,3}; both fsync and
     * report, so 1 acknowledges it. Their disks keep just that. */
    sim_confchg_at(s, 0, m3, 1);
    sim_run(s);
    uint64_t v = cl_state_version(replica_state(s->nodes[1].r));
    assert_non_null(cl_state_vm(replica_state(s->nodes[1].r), "acked"));
    assert_true(replica_stable_version(s->nodes[1].r) >= v); /* acknowledged */
    s->nodes[1].disk_frozen = s->nodes[2].disk_frozen = true;
    sim_confchg(s, m12, 2);
    sim_run(s);
    /* The merge: 3 fsyncs whatever it holds during the round... */
    sim_confchg(s, ALL3, 3);
    sim_step(s);
    s->nodes[3].disk_frozen = true;
    sim_run(s);
    expect_equal(s, ALL3, 3);
    assert_non_null(cl_state_vm(replica_state(s->nodes[3].r), "acked"));
    /* ... then every node loses its power before writing the install. */
    struct cl_state *d[4];
    for (uint32_t id = 1; id <= 3; id++)
        d[id] = node_crash(s, id);
    assert_non_null(cl_state_vm(d[2], "acked"));
    assert_null(cl_state_vm(d[3], "acked"));
    cl_state_free(d[1]);
    for (uint32_t id = 2; id <= 3; id++) {
        node_start(s, id, d[id]);
        replica_set_bootstrap_quorum(s->nodes[id].r, 2);
    }
    sim_confchg(s, m23, 2);
    sim_run(s);
    expect_equal(s, m23, 2);
    assert_non_null(cl_state_vm(replica_state(s->nodes[3].r), "acked"));
    sim_free(s);
}


/* Point 2 (LOCAL_EPOCH): a quorum epoch must name one quorate
 * configuration cluster-wide, not count each copy's own. {1,3} go on
 * quorate after a split and 1 writes two changes the others never see;
 * after a power loss {2,3} restart from older disks, form another quorate
 * configuration and acknowledge a change. When 1 returns, its copy must not
 * win: with counters both histories had the same epoch (the old one plus
 * one) and 1's had more quorate events. */
static void test_model_unique_epochs(void **unused)
{
    (void)unused;
    struct sim *s = three_synced();
    s->auto_persist = true;
    const uint32_t m13[] = {1, 3}, m2[] = {2}, m23[] = {2, 3};
    s->nodes[3].disk_frozen = true;
    sim_confchg(s, m2, 1);
    sim_confchg(s, m13, 2);
    sim_run(s);
    assert_true(cl_state_quorate(replica_state(s->nodes[1].r)));
    node_send(s, 1, define_msg("x"));
    node_send(s, 1, define_msg("y"));
    sim_run(s);
    struct cl_state *d[4];
    for (uint32_t id = 1; id <= 3; id++)
        d[id] = node_crash(s, id);
    assert_non_null(cl_state_vm(d[1], "y"));
    assert_null(cl_state_vm(d[3], "x"));
    for (uint32_t id = 2; id <= 3; id++) {
        node_start(s, id, d[id]);
        replica_set_bootstrap_quorum(s->nodes[id].r, 2);
    }
    sim_confchg(s, m23, 2);
    sim_run(s);
    expect_equal(s, m23, 2);
    assert_true(cl_state_quorate(replica_state(s->nodes[2].r)));
    node_send(s, 2, define_msg("acked"));
    sim_run(s);
    uint64_t v = cl_state_version(replica_state(s->nodes[2].r));
    assert_true(replica_stable_version(s->nodes[2].r) >= v); /* acknowledged */
    /* 1 comes back with its disk. */
    node_start(s, 1, d[1]);
    replica_set_bootstrap_quorum(s->nodes[1].r, 2);
    sim_confchg(s, ALL3, 3);
    sim_run(s);
    expect_equal(s, ALL3, 3);
    assert_non_null(cl_state_vm(replica_state(s->nodes[1].r), "acked"));
    assert_null(cl_state_vm(replica_state(s->nodes[1].r), "y"));
    sim_free(s);
}

/* Point 4 (ACK_BY_VERSION): a report counts for an acknowledgement only if
 * the member's disk holds the current configuration's own record. A change
 * applied in {1,2,3}; 3's ternd leaves ({1,2}: no round); 2's disk holds
 * the change but not the new configuration, and its report of that must
 * not make the change stable in {1,2}. (The model's trail goes through an
 * install, after which the C already restarts the watermark (point 5); a
 * configuration applied without a round re-reports the old one.) */
static void test_model_ack_covers_configuration(void **unused)
{
    (void)unused;
    struct sim *s = three_synced();
    const uint32_t m12[] = {1, 2};
    node_send(s, 1, define_msg("c"));
    sim_run(s);
    uint64_t v = cl_state_version(replica_state(s->nodes[1].r));
    assert_int_equal(replica_stable_version(s->nodes[1].r), 0); /* nothing reported yet */
    s->nodes[2].disk_frozen = true; /* it holds the change, at v */
    cl_state_free(node_crash(s, 3));
    sim_confchg_process(s, m12, 2);
    sim_run(s);
    uint64_t cfg = cl_state_version(replica_state(s->nodes[1].r));
    assert_true(cfg > v);
    replica_persisted(s->nodes[1].r, cfg);
    replica_persisted(s->nodes[2].r, v);
    sim_run(s);
    assert_int_equal(replica_stable_version(s->nodes[1].r), 0);
    assert_int_equal(replica_stable_version(s->nodes[2].r), 0);
    /* 2's disk catches up with the configuration: now it counts. */
    s->nodes[2].disk_frozen = false;
    replica_persisted(s->nodes[2].r, cfg);
    sim_run(s);
    assert_true(replica_stable_version(s->nodes[1].r) >= cfg);
    assert_true(replica_stable_version(s->nodes[1].r) >= v);
    sim_free(s);
}


/* Point 3 (ORDER_BY_VERSION): within an epoch, copies are ordered by the
 * quorate version. A change is delivered on {1,3} only and acknowledged
 * there; 2, cut off, reaches the same version through its own (not
 * quorate) configuration change. 3 crashes with the change on its disk,
 * restarts and merges with 2: 3's copy must win, although 2 is synced and
 * has the same version and the lower node id. (Main's count of quorate
 * events orders this trail right too: see docs/cluster-state.md, Sync.) */
static void test_model_order_by_quorate_version(void **unused)
{
    (void)unused;
    struct sim *s = three_synced();
    s->auto_persist = true;
    const uint32_t m13[] = {1, 3}, m2[] = {2}, m1[] = {1}, m3[] = {3}, m23[] = {2, 3};
    node_send(s, 1, define_msg("acked"));
    sim_confchg_at(s, 0, m2, 1); /* 2 sees the split first: the change reaches 1 and 3 */
    sim_run(s);
    uint64_t v = cl_state_version(replica_state(s->nodes[1].r));
    assert_true(replica_stable_version(s->nodes[1].r) >= v); /* acknowledged */
    s->nodes[3].disk_frozen = true;
    sim_confchg(s, m13, 2);
    sim_run(s);
    assert_int_equal(cl_state_version(replica_state(s->nodes[2].r)), v);
    struct cl_state *d3 = node_crash(s, 3);
    sim_confchg(s, m1, 1);
    sim_run(s);
    node_start(s, 3, d3);
    replica_set_bootstrap_quorum(s->nodes[3].r, 2);
    sim_confchg(s, m3, 1);
    sim_run(s);
    assert_false(replica_synced(s->nodes[3].r));
    sim_confchg(s, m23, 2);
    sim_run(s);
    expect_equal(s, m23, 2);
    assert_non_null(cl_state_vm(replica_state(s->nodes[2].r), "acked"));
    sim_free(s);
}

/* INSTALL_MEMBERS_ONLY (ha/failover.pml, model 3): the install of a
 * persisted copy must apply as departures the hosts online in that copy
 * that are not members now. Host 2 is cut off and fenced by {1,3}; host 1
 * crashes, host 3 is alone; hosts 1 and 2 come back and host 1's disk copy
 * (members {1,3}, the newest quorum epoch) wins their merge. Host 3 is
 * online in it and gone now: lost (to be fenced before its VMs run
 * elsewhere), not merely offline. With `ternd_only`, host 3's corosync
 * runs in the ring (only its ternd is away): offline, not lost, as CPG
 * itself would have said. */
static void install_departures(bool ternd_only)
{
    struct sim *s = three_synced();
    s->auto_persist = true;
    const uint32_t m13[] = {1, 3}, m2[] = {2}, m3[] = {3}, m12[] = {1, 2}, n3[] = {3};
    sim_confchg(s, m13, 2);
    sim_confchg(s, m2, 1);
    sim_run(s);
    const struct cl_host *h2 = cl_state_host(replica_state(s->nodes[1].r), "h2");
    assert_true(h2->lost);
    char m[256];
    snprintf(m, sizeof(m),
             "{\"type\":\"host_fenced\",\"host\":\"h2\",\"seq\":%llu,\"method\":\"device\","
             "\"detail\":\"powered off\"}",
             (unsigned long long)h2->fence_seq);
    node_send(s, 1, m);
    sim_run(s);
    assert_int_equal(cl_state_host(replica_state(s->nodes[3].r), "h2")->fence, CL_FENCE_FENCED);
    struct cl_state *d1 = node_crash(s, 1);
    sim_confchg(s, m3, 1);
    sim_run(s);
    struct cl_state *d2 = node_crash(s, 2);
    assert_true(cl_state_host(d1, "h3")->online);
    node_start(s, 1, d1);
    node_start(s, 2, d2);
    replica_set_bootstrap_quorum(s->nodes[1].r, 2);
    replica_set_bootstrap_quorum(s->nodes[2].r, 2);
    if (ternd_only)
        sim_confchg_nodes(s, m12, 2, n3, 1);
    else
        sim_confchg(s, m12, 2);
    sim_run(s);
    expect_equal(s, m12, 2);
    const struct cl_state *st = replica_state(s->nodes[2].r);
    assert_true(cl_state_quorate(st));
    const struct cl_host *h3 = cl_state_host(st, "h3");
    assert_false(h3->online);
    if (ternd_only) {
        assert_false(h3->lost);
        assert_int_equal(h3->fence, CL_FENCE_NONE);
    } else {
        assert_true(h3->lost);
        assert_int_equal(h3->fence, CL_FENCE_PENDING);
    }
    sim_free(s);
}

static void test_model_install_departures(void **unused)
{
    (void)unused;
    install_departures(false);
}

static void test_install_departure_ternd_only(void **unused)
{
    (void)unused;
    install_departures(true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_start),
        cmocka_unit_test(test_interleaved),
        cmocka_unit_test(test_leave_and_rejoin_stale),
        cmocka_unit_test(test_whole_cluster_restart),
        cmocka_unit_test(test_partition_and_merge),
        cmocka_unit_test(test_confchg_during_sync),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_send_failures),
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_random_schedules),
        cmocka_unit_test(test_minority_flaps_majority_wins),
        cmocka_unit_test(test_quorum_is_ordered),
        cmocka_unit_test(test_stable_acks),
        cmocka_unit_test(test_restart_keeps_acknowledged),
        cmocka_unit_test(test_local_refusal_is_fatal),
        cmocka_unit_test(test_round_queue_bounded),
        cmocka_unit_test(test_large_state_in_chunks),
        cmocka_unit_test(test_thousand_vm_join),
        cmocka_unit_test(test_model_config_at_install),
        cmocka_unit_test(test_model_unique_epochs),
        cmocka_unit_test(test_model_ack_covers_configuration),
        cmocka_unit_test(test_model_order_by_quorate_version),
        cmocka_unit_test(test_model_install_departures),
        cmocka_unit_test(test_install_departure_ternd_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
