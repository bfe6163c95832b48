/* One host's replica of the cluster state and the sync protocol that keeps
 * replicas equal across configuration changes (docs/cluster-state.md,
 * "Sync"; ha/replica.pml is its model, and this file implements the
 * model's default protocol, the one spin finds safe).
 *
 * In short: a configuration change that brings new members (or finds this
 * replica not synced, or interrupts a sync) opens a sync round for that
 * member list. Nobody applies that configuration yet: every member
 * broadcasts an offer (its quorum epoch, quorate version, version and
 * whether it is synced) and queues the state messages delivered meanwhile,
 * so its state (and its disk) stays the one of its own history. Once all
 * offers are in, every member knows the same winner (highest quorum epoch,
 * then quorate version, then version, then lowest node id); the winner
 * broadcasts its state in chunks, with the ring the configuration runs in
 * and the departures its state has not seen. Everyone installs it, applies
 * the configuration to it (once, in one history), then the queue. An
 * interrupted round's queue is dropped: its configuration was never
 * applied, and nobody acknowledged what it held. CPG's agreed order makes
 * every step happen at the same point on every member. */
#include "replica.h"

#include "state_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "../proto/crc32.h"

#define REPLICA_MAX_MSG (4u << 20) /* what the corosync link delivers at most */
#define CHUNK_PREFIX "{\"type\":\"sync_chunk\""

struct offer {
    bool got;
    bool synced;
    bool excluded; /* its state could not be installed: next best */
    uint64_t q_epoch;
    uint64_t q_version;
    uint64_t version;
};

struct pending {
    uint32_t sender;
    json_t *msg;
    size_t bytes;
};

struct outmsg {
    char *data;
    size_t len;
};

struct report {
    uint32_t nodeid;
    uint64_t version;
};

/* A member that left since the state's configuration was last applied. */
struct departure {
    uint32_t nodeid;
    bool node_down; /* its node left corosync's membership (CL_LEFT_NODE) */
};

struct replica {
    uint32_t local;
    struct cl_state *state;
    struct replica_ops ops;
    void *opaque;
    bool synced;
    bool failed;
    size_t bootstrap_min;

    /* The current configuration, sorted: it names the sync round. */
    uint32_t *members;
    size_t nr_members;

    bool in_round;
    uint64_t round_seq;
    struct offer *offers;   /* parallel to members */
    ssize_t winner;         /* index of the member whose state is installed, or -1 */
    bool keep_own;          /* unsynced, and the own copy is better than that state */
    bool state_sent;
    /* The winner's state as it arrives, with the ring and the departures
     * its first chunk named (what the install applies to it). */
    char *chunks;
    size_t chunks_len, chunks_total, chunks_next;
    uint32_t chunks_crc;
    uint32_t chunks_from;
    uint64_t chunks_ring;
    json_t *chunks_left;
    json_t *chunks_nodes;   /* the winner's ring members, or NULL: unknown */

    /* The totem ring the group runs in (replica_set_ring), and who left
     * since the state's configuration was applied (the next configuration
     * applied to it records them). */
    uint64_t ring;
    uint32_t *ring_nodes;   /* its members (nodes whose corosync runs) */
    size_t nr_ring_nodes;
    bool ring_nodes_known;
    struct departure *gone;
    size_t nr_gone, cap_gone;
    /* The state's version when this configuration was applied to it:
     * acknowledgements count only reports at least this (the configuration's
     * own record persisted, in this quorum epoch). */
    uint64_t config_version;

    struct pending *queue;  /* state messages delivered during the round */
    size_t nr_queue, cap_queue, queue_bytes;
    size_t max_queue, max_queue_bytes;
    bool inject_refusal;

    struct outmsg *outbox;  /* sync messages ops->send refused, in order */
    size_t nr_outbox, cap_outbox;

    /* Persisted versions the members reported in this configuration. */
    struct report *reports;
    size_t nr_reports, cap_reports;
    uint64_t reported;      /* what this host last reported */
    uint64_t persisted;     /* what this host has on disk */
};

static int grow(void **arr, size_t *cap, size_t nr, size_t elem)
{
    if (nr < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, ncap * elem);
    if (!p)
        return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

struct replica *replica_new(uint32_t local_nodeid, struct cl_state *state,
                            const struct replica_ops *ops, void *opaque)
{
    struct replica *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->local = local_nodeid;
    r->winner = -1;
    r->state = state;
    r->ops = *ops;
    r->opaque = opaque;
    r->bootstrap_min = 1;
    r->max_queue = REPLICA_MAX_QUEUE;
    r->max_queue_bytes = REPLICA_MAX_QUEUE_BYTES;
    return r;
}

void replica_set_queue_limits(struct replica *r, size_t max_messages, size_t max_bytes)
{
    r->max_queue = max_messages;
    r->max_queue_bytes = max_bytes;
}

void replica_inject_local_refusal(struct replica *r)
{
    r->inject_refusal = true;
}

static void drop_queue(struct replica *r)
{
    for (size_t i = 0; i < r->nr_queue; i++)
        json_decref(r->queue[i].msg);
    r->nr_queue = 0;
    r->queue_bytes = 0;
}

static void report_error(struct replica *r, uint32_t sender, const json_t *msg,
                         enum tern_err_code code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* An interrupted round's queue: refused, the same on every member, so each
 * sender learns that its message took no effect. */
/* Empties the round's queue; its messages are the caller's (n of them). */
static struct pending *take_queue(struct replica *r, size_t *n)
{
    struct pending *q = r->queue;
    *n = r->nr_queue;
    r->queue = NULL;
    r->nr_queue = r->cap_queue = 0;
    r->queue_bytes = 0;
    return q;
}

static void refuse_queue(struct replica *r)
{
    size_t n;
    struct pending *q = take_queue(r, &n);
    for (size_t i = 0; i < n; i++) {
        report_error(r, q[i].sender, q[i].msg, TERN_ERR_CONFLICT,
                     "dropped: the cluster's membership changed again before the sync round it "
                     "was delivered in ended, so it took no effect on any host; try again");
        json_decref(q[i].msg);
    }
    free(q);
}

static void drop_outbox(struct replica *r)
{
    for (size_t i = 0; i < r->nr_outbox; i++)
        free(r->outbox[i].data);
    r->nr_outbox = 0;
}

static void drop_chunks(struct replica *r)
{
    free(r->chunks);
    r->chunks = NULL;
    r->chunks_len = r->chunks_total = r->chunks_next = 0;
    r->chunks_ring = 0;
    json_decref(r->chunks_left);
    r->chunks_left = NULL;
    json_decref(r->chunks_nodes);
    r->chunks_nodes = NULL;
}

void replica_free(struct replica *r)
{
    if (!r)
        return;
    drop_queue(r);
    drop_outbox(r);
    drop_chunks(r);
    free(r->queue);
    free(r->outbox);
    free(r->members);
    free(r->offers);
    free(r->reports);
    free(r->gone);
    free(r->ring_nodes);
    cl_state_free(r->state);
    free(r);
}

struct cl_state *replica_state(struct replica *r)
{
    return r->state;
}

bool replica_synced(const struct replica *r)
{
    return r->synced && !r->failed;
}

bool replica_ready(const struct replica *r)
{
    return r->synced && !r->in_round && !r->failed;
}

bool replica_round_open(const struct replica *r)
{
    return r->in_round;
}

uint64_t replica_round_seq(const struct replica *r)
{
    return r->round_seq;
}

bool replica_failed(const struct replica *r)
{
    return r->failed;
}

uint32_t replica_local_nodeid(const struct replica *r)
{
    return r->local;
}

void replica_set_bootstrap_quorum(struct replica *r, size_t min_members)
{
    r->bootstrap_min = min_members ? min_members : 1;
}

void replica_set_ring(struct replica *r, uint64_t ring_seq, const uint32_t *nodes, size_t n)
{
    r->ring = ring_seq;
    if (n > CL_MAX_MEMBERS)
        n = CL_MAX_MEMBERS;
    uint32_t *copy = nodes && n ? malloc(n * sizeof(*copy)) : NULL;
    free(r->ring_nodes);
    r->ring_nodes = copy;
    r->nr_ring_nodes = copy ? n : 0;
    /* Unknown (or no memory to keep them): every unnamed departure is
     * taken as its node's, the safe answer. */
    r->ring_nodes_known = nodes && (copy || n == 0);
    if (copy)
        memcpy(copy, nodes, n * sizeof(*copy));
}

int replica_ring_has(const struct replica *r, uint32_t nodeid)
{
    if (!r->ring_nodes_known)
        return -1;
    for (size_t i = 0; i < r->nr_ring_nodes; i++)
        if (r->ring_nodes[i] == nodeid)
            return 1;
    return 0;
}

static void report(struct replica *r, uint32_t sender, const json_t *msg, int rc,
                   const struct tern_err *err)
{
    if (r->ops.applied)
        r->ops.applied(r->opaque, sender, msg, rc, err);
}

static void report_error(struct replica *r, uint32_t sender, const json_t *msg,
                         enum tern_err_code code, const char *fmt, ...)
{
    struct tern_err err = {.code = code};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.msg, sizeof(err.msg), fmt, ap);
    va_end(ap);
    report(r, sender, msg, -1, &err);
}

/* From now on nothing is applied: the caller rejoins from disk. */
static void go_fatal(struct replica *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void go_fatal(struct replica *r, const char *fmt, ...)
{
    if (r->failed)
        return;
    char why[TERN_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    r->failed = true;
    r->synced = false;
    r->in_round = false;
    drop_queue(r);
    drop_outbox(r);
    drop_chunks(r);
    if (r->ops.fatal)
        r->ops.fatal(r->opaque, why);
}

static void journal(struct replica *r, enum replica_event_kind kind, uint32_t sender,
                    const json_t *msg, const struct cl_config *cfg)
{
    if (!r->ops.journal)
        return;
    struct replica_event ev = {.kind = kind, .sender = sender, .msg = msg, .config = cfg,
                               .version = cl_state_version(r->state)};
    r->ops.journal(r->opaque, &ev);
}

static void apply_one(struct replica *r, uint32_t sender, const json_t *msg)
{
    if (r->failed)
        return;
    struct tern_err err = {0};
    int rc;
    if (r->inject_refusal) {
        r->inject_refusal = false;
        rc = tern_err_coded(&err, TERN_ERR_INTERNAL, "out of memory (injected for a test)");
    } else {
        rc = cl_state_apply(r->state, sender, msg, &err);
    }
    if (rc == 0)
        journal(r, REPLICA_EV_MESSAGE, sender, msg, NULL);
    report(r, sender, msg, rc, rc < 0 ? &err : NULL);
    /* Every other refusal is the same on every replica; running out of
     * memory is this host's alone, and its state would now differ. */
    if (rc < 0 && err.code == TERN_ERR_INTERNAL)
        go_fatal(r, "a message from node %u was refused on this host only (%s): this replica "
                    "may now differ from the others",
                 sender, err.msg);
}

static void apply_queue(struct replica *r)
{
    size_t n;
    struct pending *q = take_queue(r, &n);
    for (size_t i = 0; i < n; i++) {
        apply_one(r, q[i].sender, q[i].msg);
        json_decref(q[i].msg);
    }
    free(q);
}

/* Notes who left at a configuration change (once per node; a member again
 * is no departure). */
static int note_departures(struct replica *r, const uint32_t *left,
                           const enum cl_leave_reason *why, size_t nr_left)
{
    for (size_t i = 0; i < nr_left; i++) {
        bool down = why[i] == CL_LEFT_NODE;
        size_t k = 0;
        while (k < r->nr_gone && r->gone[k].nodeid != left[i])
            k++;
        if (k < r->nr_gone) {
            r->gone[k].node_down |= down;
            continue;
        }
        if (grow((void **)&r->gone, &r->cap_gone, r->nr_gone, sizeof(*r->gone)) < 0)
            return -1;
        r->gone[r->nr_gone++] = (struct departure){.nodeid = left[i], .node_down = down};
    }
    size_t n = 0;
    for (size_t k = 0; k < r->nr_gone; k++) {
        bool member = false;
        for (size_t m = 0; m < r->nr_members && !member; m++)
            member = r->members[m] == r->gone[k].nodeid;
        if (!member)
            r->gone[n++] = r->gone[k];
    }
    r->nr_gone = n;
    return 0;
}

/* Applies `cfg` (members, departures, ring) to the state; journals it
 * unless it is part of an install (the install's snapshot holds it). */
static int apply_config_to_state(struct replica *r, const struct cl_config *cfg, bool record)
{
    cl_state_apply_config(r->state, cfg);
    if (cl_state_take_fault(r->state)) {
        go_fatal(r, "out of memory applying a configuration change");
        return -1;
    }
    r->nr_gone = 0;
    r->config_version = cl_state_version(r->state);
    if (record)
        journal(r, REPLICA_EV_CONFIG, 0, NULL, cfg);
    return 0;
}

/* The current configuration with the departures noted since the state's
 * last one, under the ring the group runs in: applied to a synced state
 * whose members all come from its configuration. */
static int apply_current_config(struct replica *r)
{
    size_t n = r->nr_gone ? r->nr_gone : 1;
    uint32_t *left = malloc(n * sizeof(*left));
    enum cl_leave_reason *why = malloc(n * sizeof(*why));
    if (!left || !why) {
        free(left);
        free(why);
        go_fatal(r, "out of memory applying a configuration change");
        return -1;
    }
    for (size_t i = 0; i < r->nr_gone; i++) {
        left[i] = r->gone[i].nodeid;
        why[i] = r->gone[i].node_down ? CL_LEFT_NODE : CL_LEFT_PROCESS;
    }
    struct cl_config cfg = {.members = r->members, .nr_members = r->nr_members, .left = left,
                            .left_reason = why, .nr_left = r->nr_gone, .ring_seq = r->ring};
    int rc = apply_config_to_state(r, &cfg, true);
    free(left);
    free(why);
    return rc;
}

bool replica_flush(struct replica *r)
{
    size_t done = 0;
    while (done < r->nr_outbox &&
           r->ops.send(r->opaque, r->outbox[done].data, r->outbox[done].len) == 0)
        free(r->outbox[done++].data);
    if (done) {
        memmove(r->outbox, r->outbox + done, (r->nr_outbox - done) * sizeof(*r->outbox));
        r->nr_outbox -= done;
    }
    return r->nr_outbox == 0;
}

/* Queues `data` (malloc'd, taken over) behind anything unsent and tries to send. */
static void post_bytes(struct replica *r, char *data, size_t len)
{
    if (!data)
        return;
    if (grow((void **)&r->outbox, &r->cap_outbox, r->nr_outbox, sizeof(*r->outbox)) < 0) {
        free(data);
        go_fatal(r, "out of memory queueing a sync message");
        return;
    }
    r->outbox[r->nr_outbox++] = (struct outmsg){.data = data, .len = len};
    replica_flush(r);
}

/* Posts `msg` (a new reference, consumed) as JSON text. */
static void post(struct replica *r, json_t *msg)
{
    if (!msg) {
        go_fatal(r, "out of memory building a sync message");
        return;
    }
    char *t = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!t) {
        go_fatal(r, "out of memory serializing a sync message");
        return;
    }
    post_bytes(r, t, strlen(t));
}

static json_t *members_json(const struct replica *r)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < r->nr_members; i++)
        json_array_append_new(a, json_integer(r->members[i]));
    return a;
}

/* Does the message's "members" name the current round? */
static bool same_members(const struct replica *r, const json_t *msg)
{
    const json_t *a = json_object_get(msg, "members");
    if (!json_is_array(a) || json_array_size(a) != r->nr_members)
        return false;
    for (size_t i = 0; i < r->nr_members; i++) {
        const json_t *v = json_array_get(a, i);
        if (!json_is_integer(v) || json_integer_value(v) != (json_int_t)r->members[i])
            return false;
    }
    return true;
}

static ssize_t member_index(const struct replica *r, uint32_t nodeid)
{
    for (size_t i = 0; i < r->nr_members; i++)
        if (r->members[i] == nodeid)
            return (ssize_t)i;
    return -1;
}

/* Is offer a better than offer b? The copy that held quorum last, then
 * the one with more history applied while quorate, then the longer
 * history; on a tie the earlier member (lower node id) stays. */
static bool better(const struct offer *a, const struct offer *b)
{
    if (a->q_epoch != b->q_epoch)
        return a->q_epoch > b->q_epoch;
    if (a->q_version != b->q_version)
        return a->q_version > b->q_version;
    return a->version > b->version;
}

/* The winner once every offer is in: its index, -1 while offers are
 * missing, -2 when there is none (every member excluded). */
static ssize_t round_winner(const struct replica *r)
{
    ssize_t best = -2;
    for (size_t i = 0; i < r->nr_members; i++) {
        const struct offer *o = &r->offers[i];
        if (!o->got)
            return -1;
        if (o->excluded)
            continue;
        if (best < 0 || better(o, &r->offers[best]))
            best = (ssize_t)i;
    }
    return best;
}

/* The round is over without an install for this replica. An unsynced one
 * drops what was queued (the state it installs later has it or never
 * acknowledged it). A synced one (every offer refused) applies the
 * configuration to its own state, then the queue. */
static void close_round(struct replica *r)
{
    r->in_round = false;
    r->state_sent = false;
    drop_chunks(r);
    if (r->synced && apply_current_config(r) == 0)
        apply_queue(r);
    else
        drop_queue(r);
}

static void send_state(struct replica *r)
{
    json_t *doc = cl_state_to_json(r->state);
    char *body = doc ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    if (!body) {
        go_fatal(r, "out of memory serializing the state for a joining member");
        return;
    }
    size_t blen = strlen(body);
    uint32_t crc = tern_crc32(0, body, blen);
    size_t total = blen ? (blen + REPLICA_CHUNK_BYTES - 1) / REPLICA_CHUNK_BYTES : 1;
    /* What the install applies to this state, the same on every member:
     * the ring the configuration runs in, and who left since this state's
     * last configuration. */
    json_t *members = members_json(r);
    json_t *left = json_array();
    for (size_t i = 0; left && i < r->nr_gone; i++)
        json_array_append_new(left, json_pack("[I, b]", (json_int_t)r->gone[i].nodeid,
                                              r->gone[i].node_down));
    /* And the ring's nodes, as this member knows them (or null). */
    json_t *nodes = r->ring_nodes_known ? json_array() : json_null();
    for (size_t i = 0; r->ring_nodes_known && nodes && i < r->nr_ring_nodes; i++)
        json_array_append_new(nodes, json_integer((json_int_t)r->ring_nodes[i]));
    char *mtext = members ? json_dumps(members, JSON_COMPACT) : NULL;
    char *ltext = left && json_array_size(left) == r->nr_gone ? json_dumps(left, JSON_COMPACT)
                                                                : NULL;
    char *ntext = nodes && (!json_is_array(nodes) || json_array_size(nodes) == r->nr_ring_nodes)
                      ? json_dumps(nodes, JSON_COMPACT | JSON_ENCODE_ANY)
                      : NULL;
    json_decref(members);
    json_decref(left);
    json_decref(nodes);
    if (!mtext || !ltext || !ntext) {
        free(mtext);
        free(ltext);
        free(ntext);
        free(body);
        go_fatal(r, "out of memory serializing the state for a joining member");
        return;
    }
    for (size_t i = 0; i < total && !r->failed; i++) {
        size_t off = i * REPLICA_CHUNK_BYTES;
        size_t n = blen - off < REPLICA_CHUNK_BYTES ? blen - off : REPLICA_CHUNK_BYTES;
        if (off > blen)
            n = 0;
        char *head = NULL;
        int hl = asprintf(&head,
                          CHUNK_PREFIX ",\"members\":%s,\"seq\":%zu,\"total\":%zu,\"bytes\":%zu,"
                                       "\"crc\":%u,\"ring\":%llu,\"left\":%s,\"nodes\":%s}\n",
                          mtext, i, total, blen, crc, (unsigned long long)r->ring, ltext, ntext);
        char *m = hl > 0 ? malloc((size_t)hl + n) : NULL;
        if (!m) {
            if (hl > 0)
                free(head);
            go_fatal(r, "out of memory sending the state to a joining member");
            break;
        }
        memcpy(m, head, (size_t)hl);
        free(head);
        memcpy(m + hl, body + off, n);
        post_bytes(r, m, (size_t)hl + n);
    }
    free(mtext);
    free(ltext);
    free(ntext);
    free(body);
}

/* The best synced offer, or -1. */
static ssize_t best_synced(const struct replica *r)
{
    ssize_t best = -1;
    for (size_t i = 0; i < r->nr_members; i++) {
        const struct offer *o = &r->offers[i];
        if (o->synced && !o->excluded && (best < 0 || better(o, &r->offers[best])))
            best = (ssize_t)i;
    }
    return best;
}

static void maybe_finish_offers(struct replica *r)
{
    if (!r->in_round || r->failed)
        return;
    ssize_t w = round_winner(r);
    if (w == -1)
        return;
    if (w == -2) {
        close_round(r); /* every offer excluded: nothing to install */
        return;
    }
    r->keep_own = false;
    /* The best is a persisted copy, with too few members present to know
     * it is the newest: synced members (if any) converge on the best of
     * theirs, and an unsynced member whose own copy is better than that
     * keeps it, unsynced, for a later round with more members. */
    if (!r->offers[w].synced && r->nr_members < r->bootstrap_min) {
        ssize_t ws = best_synced(r);
        if (ws < 0) {
            close_round(r);
            return;
        }
        ssize_t me = member_index(r, r->local);
        r->keep_own = !r->synced && me >= 0 && better(&r->offers[me], &r->offers[ws]);
        w = ws;
    }
    r->winner = w;
    if (r->members[w] == r->local && !r->state_sent) {
        r->state_sent = true;
        send_state(r);
    }
}

static void handle_offer(struct replica *r, uint32_t sender, const json_t *msg)
{
    if (!r->in_round || !same_members(r, msg))
        return; /* from an earlier round: a later configuration change restarted it */
    ssize_t i = member_index(r, sender);
    const json_t *v = json_object_get(msg, "version");
    const json_t *q = json_object_get(msg, "quorum_epoch");
    const json_t *qv = json_object_get(msg, "quorate_version");
    const json_t *s = json_object_get(msg, "synced");
    if (i < 0 || !json_is_integer(v) || json_integer_value(v) < 0 || !json_is_integer(q) ||
        json_integer_value(q) < 0 || !json_is_integer(qv) || json_integer_value(qv) < 0 ||
        !json_is_boolean(s)) {
        report_error(r, sender, msg, TERN_ERR_INVALID, "malformed sync_offer from node %u ignored",
                     sender);
        return;
    }
    if (r->offers[i].got)
        return;
    r->offers[i].got = true;
    r->offers[i].synced = json_is_true(s);
    r->offers[i].version = (uint64_t)json_integer_value(v);
    r->offers[i].q_epoch = (uint64_t)json_integer_value(q);
    r->offers[i].q_version = (uint64_t)json_integer_value(qv);
    maybe_finish_offers(r);
}

/* Hosts online in the just installed state that are not members now and
 * not among the `nl` departures named: they left while nobody in this
 * round watched. A persisted copy (its host went down and came back)
 * knows only the departures its new replica noted, none from before its
 * host went down. Taking such a host for offline would leave its VMs
 * owned by a host that may be off for good (ha/failover.pml,
 * INSTALL_MEMBERS_ONLY): if its node is not in the ring the winner named
 * (its corosync does not run, or runs cut off), its node left
 * (CL_LEFT_NODE): it is lost, and fenced before its VMs run elsewhere.
 * If it is, only its ternd is away (CL_LEFT_PROCESS: offline, its VMs
 * may run and stay its own), as CPG would have said. Without the ring's
 * nodes, the safe answer: its node. A synced winner names every such
 * host already. The same on every member: the same state, members,
 * departures and nodes. Returns the new count; `left` and `why` have
 * room. */
static size_t unaccounted_departures(const struct replica *r, uint32_t *left,
                                     enum cl_leave_reason *why, size_t nl)
{
    size_t n = nl;
    for (size_t i = 0; i < cl_state_nr_hosts(r->state); i++) {
        const struct cl_host *h = cl_state_host_at(r->state, i);
        if (!h->online || !h->nodeid || member_index(r, h->nodeid) >= 0)
            continue;
        bool named = false;
        for (size_t k = 0; k < nl && !named; k++)
            named = left[k] == h->nodeid;
        if (named)
            continue;
        bool in_ring = false;
        for (size_t k = 0; r->chunks_nodes && k < json_array_size(r->chunks_nodes) && !in_ring;
             k++)
            in_ring = (uint64_t)json_integer_value(json_array_get(r->chunks_nodes, k)) ==
                      h->nodeid;
        left[n] = h->nodeid;
        why[n] = in_ring ? CL_LEFT_PROCESS : CL_LEFT_NODE;
        n++;
    }
    return n;
}

static void install(struct replica *r, ssize_t w, const char *doc_text, size_t len)
{
    uint32_t winner = r->members[w];
    if (r->keep_own) {
        close_round(r); /* stays unsynced with its better copy */
        return;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(doc_text, len, JSON_REJECT_DUPLICATES, &jerr);
    struct tern_err err = {0};
    int rc = doc ? cl_state_from_json(r->state, doc, &err) : -1;
    json_decref(doc);
    if (rc < 0 && err.code == TERN_ERR_INTERNAL) {
        go_fatal(r, "out of memory installing the cluster state from node %u", winner);
        return;
    }
    if (rc < 0) {
        /* Every member refuses the same bytes the same way: all pass on
         * to the next best offer. */
        if (!doc)
            snprintf(err.msg, sizeof(err.msg), "not JSON: %s", jerr.text);
        report_error(r, winner, NULL, TERN_ERR_INVALID,
                     "the state node %u sent in the sync round was refused (%s); taking the "
                     "next best offer", winner, err.msg);
        r->offers[w].excluded = true;
        r->winner = -1;
        drop_chunks(r);
        maybe_finish_offers(r);
        return;
    }
    /* The winner's state is its history before this configuration (nobody
     * applied it during the round): the configuration is applied now, once,
     * to that state, the same on every member, with the ring and the
     * departures the winner named. */
    size_t nl = json_array_size(r->chunks_left);
    size_t cap = nl + cl_state_nr_hosts(r->state) + 1;
    uint32_t *left = malloc(cap * sizeof(*left));
    enum cl_leave_reason *why = malloc(cap * sizeof(*why));
    if (!left || !why) {
        free(left);
        free(why);
        go_fatal(r, "out of memory applying the configuration to the installed state");
        return;
    }
    for (size_t i = 0; i < nl; i++) {
        const json_t *d = json_array_get(r->chunks_left, i);
        left[i] = (uint32_t)json_integer_value(json_array_get(d, 0));
        why[i] = json_is_true(json_array_get(d, 1)) ? CL_LEFT_NODE : CL_LEFT_PROCESS;
    }
    nl = unaccounted_departures(r, left, why, nl);
    struct cl_config cfg = {.members = r->members, .nr_members = r->nr_members, .left = left,
                            .left_reason = why, .nr_left = nl, .ring_seq = r->chunks_ring};
    r->in_round = false;
    r->state_sent = false;
    int arc = apply_config_to_state(r, &cfg, false);
    free(left);
    free(why);
    drop_chunks(r);
    if (arc < 0)
        return;
    journal(r, REPLICA_EV_INSTALL, winner, NULL, NULL);
    bool was_synced = r->synced;
    r->synced = true;
    r->nr_reports = 0;
    r->reported = 0;
    r->persisted = 0;
    if (r->ops.installed)
        r->ops.installed(r->opaque, winner != r->local);
    if (r->ops.membership)
        r->ops.membership(r->opaque);
    if (!was_synced && r->ops.synced)
        r->ops.synced(r->opaque);
    apply_queue(r);
}

/* {"type":"sync_chunk","members":[..],"seq":i,"total":n,"bytes":b,"crc":c}\n<bytes> */
static void handle_chunk(struct replica *r, uint32_t sender, const json_t *head,
                         const char *payload, size_t plen)
{
    if (!r->in_round || !same_members(r, head))
        return;
    ssize_t w = r->winner;
    if (w < 0 || round_winner(r) == -1 || r->members[w] != sender) {
        report_error(r, sender, head, TERN_ERR_INVALID, "sync_chunk from node %u ignored: it is "
                     "not the winner of this sync round", sender);
        return;
    }
    const json_t *jseq = json_object_get(head, "seq"), *jtot = json_object_get(head, "total");
    const json_t *jbytes = json_object_get(head, "bytes"), *jcrc = json_object_get(head, "crc");
    if (!json_is_integer(jseq) || !json_is_integer(jtot) || !json_is_integer(jbytes) ||
        !json_is_integer(jcrc) || json_integer_value(jbytes) < 0 ||
        json_integer_value(jbytes) > (json_int_t)REPLICA_MAX_STATE_BYTES ||
        json_integer_value(jtot) < 1 || json_integer_value(jseq) < 0 ||
        json_integer_value(jcrc) < 0 || json_integer_value(jcrc) > UINT32_MAX) {
        report_error(r, sender, head, TERN_ERR_INVALID, "malformed sync_chunk from node %u",
                     sender);
        goto refuse;
    }
    size_t seq = (size_t)json_integer_value(jseq), total = (size_t)json_integer_value(jtot);
    size_t bytes = (size_t)json_integer_value(jbytes);
    if (seq == 0) {
        const json_t *jring = json_object_get(head, "ring"), *jleft = json_object_get(head, "left");
        const json_t *jnodes = json_object_get(head, "nodes");
        bool ok = json_is_integer(jring) && json_integer_value(jring) >= 0 &&
                  json_is_array(jleft) && json_array_size(jleft) <= CL_MAX_MEMBERS &&
                  (!jnodes || json_is_null(jnodes) ||
                   (json_is_array(jnodes) && json_array_size(jnodes) <= CL_MAX_MEMBERS));
        for (size_t i = 0; ok && json_is_array(jnodes) && i < json_array_size(jnodes); i++) {
            const json_t *id = json_array_get(jnodes, i);
            ok = json_is_integer(id) && json_integer_value(id) > 0 &&
                 json_integer_value(id) <= UINT32_MAX;
        }
        for (size_t i = 0; ok && i < json_array_size(jleft); i++) {
            const json_t *d = json_array_get(jleft, i), *id = json_array_get(d, 0);
            ok = json_is_array(d) && json_array_size(d) == 2 && json_is_integer(id) &&
                 json_integer_value(id) > 0 && json_integer_value(id) <= UINT32_MAX &&
                 json_is_boolean(json_array_get(d, 1));
        }
        if (!ok) {
            report_error(r, sender, head, TERN_ERR_INVALID, "sync_chunk from node %u without a "
                         "valid \"ring\", \"left\" and \"nodes\"", sender);
            goto refuse;
        }
        drop_chunks(r);
        r->chunks_total = total;
        r->chunks_len = bytes;
        r->chunks_crc = (uint32_t)json_integer_value(jcrc);
        r->chunks_from = sender;
        r->chunks_ring = (uint64_t)json_integer_value(jring);
        r->chunks_left = json_incref((json_t *)jleft);
        r->chunks_nodes = json_is_array(jnodes) ? json_incref((json_t *)jnodes) : NULL;
    }
    size_t off = seq * REPLICA_CHUNK_BYTES;
    if (seq != r->chunks_next || total != r->chunks_total || bytes != r->chunks_len ||
        off > bytes || plen > bytes - off ||
        (seq + 1 < total && plen != REPLICA_CHUNK_BYTES) ||
        (seq + 1 == total && off + plen != bytes)) {
        report_error(r, sender, head, TERN_ERR_INVALID, "sync_chunk %zu of %zu from node %u does "
                     "not fit the ones before", seq, total, sender);
        goto refuse;
    }
    /* Grown as the chunks come, not by what the first one announces. */
    char *grown = realloc(r->chunks, off + plen ? off + plen : 1);
    if (!grown) {
        go_fatal(r, "out of memory receiving the cluster state (%zu bytes)", bytes);
        return;
    }
    r->chunks = grown;
    memcpy(r->chunks + off, payload, plen);
    r->chunks_next++;
    if (r->chunks_next < r->chunks_total)
        return;
    if (tern_crc32(0, r->chunks, r->chunks_len) != r->chunks_crc) {
        report_error(r, sender, head, TERN_ERR_INVALID, "the state from node %u fails its "
                     "checksum", sender);
        goto refuse;
    }
    char *text = r->chunks;
    size_t len = r->chunks_len;
    r->chunks = NULL;
    install(r, w, text, len);
    free(text);
    return;
refuse:
    /* Every member saw the same bytes: all exclude the sender's offer. */
    r->offers[w].excluded = true;
    r->winner = -1;
    drop_chunks(r);
    maybe_finish_offers(r);
}

static void handle_persisted(struct replica *r, uint32_t sender, const json_t *msg)
{
    const json_t *e = json_object_get(msg, "config_epoch"), *v = json_object_get(msg, "version");
    if (!json_is_integer(e) || !json_is_integer(v) || json_integer_value(v) < 0) {
        report_error(r, sender, msg, TERN_ERR_INVALID, "malformed sync_persisted from node %u",
                     sender);
        return;
    }
    /* Only reports about this very configuration of this very history
     * count: after a change every member reports again. */
    if (!r->synced || r->in_round || member_index(r, sender) < 0 ||
        (uint64_t)json_integer_value(e) != cl_state_config_epoch(r->state))
        return;
    uint64_t ver = (uint64_t)json_integer_value(v);
    for (size_t i = 0; i < r->nr_reports; i++)
        if (r->reports[i].nodeid == sender) {
            if (ver > r->reports[i].version)
                r->reports[i].version = ver;
            return;
        }
    if (grow((void **)&r->reports, &r->cap_reports, r->nr_reports, sizeof(*r->reports)) < 0)
        return; /* a missing report only delays acknowledgements */
    r->reports[r->nr_reports++] = (struct report){.nodeid = sender, .version = ver};
}

static void report_persisted(struct replica *r)
{
    if (!r->synced || r->in_round || r->failed || r->persisted <= r->reported)
        return;
    r->reported = r->persisted;
    post(r, json_pack("{s:s, s:I, s:I}", "type", "sync_persisted", "config_epoch",
                      (json_int_t)cl_state_config_epoch(r->state), "version",
                      (json_int_t)r->persisted));
}

void replica_persisted(struct replica *r, uint64_t version)
{
    if (version > r->persisted)
        r->persisted = version;
    report_persisted(r);
}

static int cmp_desc_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

uint64_t replica_stable_version(const struct replica *r)
{
    if (!r->synced || r->in_round || r->failed)
        return 0;
    uint32_t expected = cl_state_expected_votes(r->state);
    size_t need = (size_t)expected / 2 + 1;
    if (expected == 0 || r->nr_reports < need)
        return 0;
    /* A report counts only if it covers this configuration's own record:
     * a disk with the change under an older configuration (epoch) only can
     * lose, after a crash, to a copy of a newer epoch without it. */
    uint64_t v[CL_MAX_MEMBERS];
    size_t n = 0;
    for (size_t i = 0; i < r->nr_reports && n < CL_MAX_MEMBERS; i++)
        if (r->reports[i].version >= r->config_version)
            v[n++] = r->reports[i].version;
    if (n < need)
        return 0;
    qsort(v, n, sizeof(v[0]), cmp_desc_u64);
    return v[need - 1];
}

static void queue_message(struct replica *r, uint32_t sender, json_t *msg, size_t len)
{
    if (r->nr_queue >= r->max_queue || r->queue_bytes + len > r->max_queue_bytes) {
        go_fatal(r, "the sync round has queued %zu messages (%zu bytes) and is still open",
                 r->nr_queue, r->queue_bytes);
        return;
    }
    if (grow((void **)&r->queue, &r->cap_queue, r->nr_queue, sizeof(*r->queue)) < 0) {
        go_fatal(r, "out of memory queueing a message during a sync round");
        return;
    }
    r->queue[r->nr_queue++] = (struct pending){.sender = sender, .msg = json_incref(msg),
                                               .bytes = len};
    r->queue_bytes += len;
}

void replica_deliver(struct replica *r, uint32_t sender_nodeid, const void *data, size_t len)
{
    if (r->failed)
        return;
    replica_flush(r);
    if (len > REPLICA_MAX_MSG) {
        report_error(r, sender_nodeid, NULL, TERN_ERR_INVALID,
                     "message of %zu bytes from node %u dropped (at most %u)", len,
                     sender_nodeid, REPLICA_MAX_MSG);
        return;
    }
    /* A state chunk: a JSON header line, then raw bytes. */
    size_t jlen = len;
    const char *payload = NULL;
    if (len >= sizeof(CHUNK_PREFIX) - 1 && !memcmp(data, CHUNK_PREFIX, sizeof(CHUNK_PREFIX) - 1)) {
        const char *nl = memchr(data, '\n', len);
        if (nl) {
            jlen = (size_t)(nl - (const char *)data);
            payload = nl + 1;
        }
    }
    json_error_t jerr;
    json_t *msg = json_loadb(data, jlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!msg) {
        report_error(r, sender_nodeid, NULL, TERN_ERR_INVALID,
                     "unparsable message from node %u dropped: %s (byte %d)",
                     sender_nodeid, jerr.text, jerr.position);
        return;
    }
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (!json_is_object(msg) || !type) {
        report_error(r, sender_nodeid, msg, TERN_ERR_INVALID,
                     "message from node %u dropped: not an object with a \"type\"",
                     sender_nodeid);
    } else if (strcmp(type, "sync_offer") == 0) {
        handle_offer(r, sender_nodeid, msg);
    } else if (strcmp(type, "sync_chunk") == 0) {
        if (payload)
            handle_chunk(r, sender_nodeid, msg, payload,
                         len - (size_t)(payload - (const char *)data));
        else
            report_error(r, sender_nodeid, msg, TERN_ERR_INVALID,
                         "sync_chunk from node %u without its bytes", sender_nodeid);
    } else if (strcmp(type, "sync_persisted") == 0) {
        handle_persisted(r, sender_nodeid, msg);
    } else if (strncmp(type, "sync_", 5) == 0) {
        report_error(r, sender_nodeid, msg, TERN_ERR_INVALID,
                     "unknown sync message '%s' from node %u dropped", type, sender_nodeid);
    } else if (r->in_round) {
        queue_message(r, sender_nodeid, msg, len);
    } else if (r->synced) {
        apply_one(r, sender_nodeid, msg);
    } else {
        /* Not part of the agreed state (yet): the state this replica
         * installs at its next sync already includes whatever this did. */
        report_error(r, sender_nodeid, msg, TERN_ERR_CONFLICT,
                     "not synced with the cluster: message from node %u dropped",
                     sender_nodeid);
    }
    json_decref(msg);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

void replica_confchg(struct replica *r, const uint32_t *members, size_t nr_members,
                     const uint32_t *left, const enum cl_leave_reason *left_reason,
                     size_t nr_left, const uint32_t *joined, size_t nr_joined)
{
    (void)joined;
    if (r->failed)
        return;
    uint32_t *m = malloc((nr_members ? nr_members : 1) * sizeof(*m));
    struct offer *offers = calloc(nr_members ? nr_members : 1, sizeof(*offers));
    if (!m || !offers) {
        free(m);
        free(offers);
        go_fatal(r, "out of memory tracking a configuration change");
        return;
    }
    if (nr_members)
        memcpy(m, members, nr_members * sizeof(*m));
    qsort(m, nr_members, sizeof(*m), cmp_u32);
    size_t n = 0;
    for (size_t i = 0; i < nr_members; i++)
        if (n == 0 || m[n - 1] != m[i])
            m[n++] = m[i];
    free(r->members);
    free(r->offers);
    r->members = m;
    r->offers = offers;
    r->nr_members = n;

    /* Sync messages still unsent belong to the previous configuration. */
    drop_outbox(r);
    r->nr_reports = 0;
    r->reported = 0;
    if (note_departures(r, left, left_reason, nr_left) < 0) {
        go_fatal(r, "out of memory tracking a configuration change");
        return;
    }
    bool interrupted = r->in_round;
    if (interrupted) {
        /* The interrupted round's configuration was never applied, so
         * what it queued is dropped, on every member alike: applying it to
         * copies of different histories would make them differ, and nobody
         * acknowledged it (the sender learns at the install whether its
         * request made it). */
        r->in_round = false;
        r->state_sent = false;
        drop_chunks(r);
        refuse_queue(r);
    }
    if (member_index(r, r->local) < 0) {
        /* This host left the group: its copy is no longer the agreed one. */
        r->synced = false;
        if (r->ops.membership)
            r->ops.membership(r->opaque);
        return;
    }
    /* Every member of the new configuration reaches the same answer here:
     * a member that is not synced either joined now (so the others see it
     * in `joined`) or was in an unfinished round with all of them. With no
     * round, the members come from one configuration with one state: the
     * configuration is applied to it now. */
    if (r->synced && nr_joined == 0 && !interrupted) {
        if (apply_current_config(r) < 0)
            return;
        if (r->ops.membership)
            r->ops.membership(r->opaque);
        report_persisted(r);
        return;
    }
    /* A round: nothing is applied until the install, so the state (and the
     * disk) stays this replica's own history, which is what it offers. */
    if (r->ops.membership)
        r->ops.membership(r->opaque);
    uint64_t offer_q = cl_state_quorum_epoch(r->state);
    uint64_t offer_qv = cl_state_quorate_version(r->state);
    uint64_t offer_v = cl_state_version(r->state);
    r->in_round = true;
    r->round_seq++;
    r->state_sent = false;
    r->winner = -1;
    r->keep_own = false;
    post(r, json_pack("{s:s, s:o*, s:I, s:I, s:I, s:b}", "type", "sync_offer", "members",
                      members_json(r), "quorum_epoch", (json_int_t)offer_q, "quorate_version",
                      (json_int_t)offer_qv, "version", (json_int_t)offer_v, "synced",
                      r->synced));
}

char *replica_encode(struct replica *r, json_t *msg, uint64_t req, struct tern_err *err)
{
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (!json_is_object(msg) || !type)
        return tern_err_coded(err, TERN_ERR_INVALID, "a cluster message must be an object with a "
                            "\"type\""),
               NULL;
    if (strncmp(type, "sync_", 5) == 0)
        return tern_err_coded(err, TERN_ERR_INVALID, "'%s' is the replica's own message", type), NULL;
    if (json_object_set_new(msg, "origin", json_pack("{s:I, s:I}", "node",
                                                     (json_int_t)r->local, "req",
                                                     (json_int_t)req)) < 0)
        return tern_err_coded(err, TERN_ERR_INTERNAL, "out of memory encoding a cluster message"), NULL;
    char *text = json_dumps(msg, JSON_COMPACT);
    if (!text)
        return tern_err_coded(err, TERN_ERR_INTERNAL, "cannot serialize the '%s' message", type), NULL;
    if (strlen(text) > REPLICA_MAX_MSG) {
        size_t n = strlen(text);
        free(text);
        return tern_err_coded(err, TERN_ERR_INVALID, "the '%s' message is %zu bytes; at most %u fit", type,
                            n, REPLICA_MAX_MSG),
               NULL;
    }
    return text;
}
