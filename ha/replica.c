/* One host's replica of the cluster state and the sync protocol that keeps
 * replicas equal across membership changes (docs/cluster-state.md, "Sync").
 *
 * In short: a membership change that brings new members (or finds this
 * replica not synced, or interrupts a sync) opens a sync round for that
 * member list. Every member broadcasts an offer (its version and whether
 * it is synced) and queues the state messages delivered meanwhile. Once
 * all offers are in, every member knows the same winner (synced first,
 * then highest version, then lowest node id); the winner broadcasts its
 * state, which is still the state at the membership change because
 * nothing was applied since. Everyone installs it, marks the membership,
 * and applies the queue. CPG's agreed order makes every step happen at the
 * same point on every member. */
#include "replica.h"

#include "state_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#define REPLICA_MAX_MSG (4u << 20) /* what corosync_link delivers at most */

struct offer {
    bool got;
    bool synced;
    uint64_t version;
};

struct pending {
    uint32_t sender;
    json_t *msg;
};

struct replica {
    uint32_t local;
    struct cl_state *state;
    struct replica_ops ops;
    void *opaque;
    bool synced;
    size_t bootstrap_min;

    /* The current membership, sorted: it names the sync round. */
    uint32_t *members;
    size_t nr_members;

    bool in_round;
    struct offer *offers;   /* parallel to members */
    bool state_sent;

    struct pending *queue;  /* state messages delivered during the round */
    size_t nr_queue, cap_queue;

    json_t **outbox;        /* sync messages ops->send refused, in order */
    size_t nr_outbox, cap_outbox;
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
    r->state = state;
    r->ops = *ops;
    r->opaque = opaque;
    r->bootstrap_min = 1;
    return r;
}

static void drop_queue(struct replica *r)
{
    for (size_t i = 0; i < r->nr_queue; i++)
        json_decref(r->queue[i].msg);
    r->nr_queue = 0;
}

static void drop_outbox(struct replica *r)
{
    for (size_t i = 0; i < r->nr_outbox; i++)
        json_decref(r->outbox[i]);
    r->nr_outbox = 0;
}

void replica_free(struct replica *r)
{
    if (!r)
        return;
    drop_queue(r);
    drop_outbox(r);
    free(r->queue);
    free(r->outbox);
    free(r->members);
    free(r->offers);
    cl_state_free(r->state);
    free(r);
}

struct cl_state *replica_state(struct replica *r)
{
    return r->state;
}

bool replica_synced(const struct replica *r)
{
    return r->synced;
}

uint32_t replica_local_nodeid(const struct replica *r)
{
    return r->local;
}

void replica_set_bootstrap_quorum(struct replica *r, size_t min_members)
{
    r->bootstrap_min = min_members ? min_members : 1;
}

static void report(struct replica *r, uint32_t sender, const json_t *msg, int rc,
                   const struct tern_err *err)
{
    if (r->ops.applied)
        r->ops.applied(r->opaque, sender, msg, rc, err);
}

static void report_error(struct replica *r, uint32_t sender, const json_t *msg,
                         enum tern_err_code code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

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

static void apply_one(struct replica *r, uint32_t sender, const json_t *msg)
{
    struct tern_err err = {0};
    int rc = cl_state_apply(r->state, sender, msg, &err);
    report(r, sender, msg, rc, rc < 0 ? &err : NULL);
}

static void apply_queue(struct replica *r)
{
    for (size_t i = 0; i < r->nr_queue; i++) {
        apply_one(r, r->queue[i].sender, r->queue[i].msg);
        json_decref(r->queue[i].msg);
    }
    r->nr_queue = 0;
}

bool replica_flush(struct replica *r)
{
    size_t done = 0;
    while (done < r->nr_outbox && r->ops.send(r->opaque, r->outbox[done]) == 0)
        json_decref(r->outbox[done++]);
    if (done) {
        memmove(r->outbox, r->outbox + done, (r->nr_outbox - done) * sizeof(*r->outbox));
        r->nr_outbox -= done;
    }
    return r->nr_outbox == 0;
}

/* Queues `msg` (a new reference) behind anything unsent and tries to send. */
static void post(struct replica *r, json_t *msg)
{
    if (!msg)
        return;
    if (grow((void **)&r->outbox, &r->cap_outbox, r->nr_outbox, sizeof(*r->outbox)) < 0) {
        json_decref(msg);
        return;
    }
    r->outbox[r->nr_outbox++] = msg;
    replica_flush(r);
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

/* The winner once every offer is in, or -1. */
static ssize_t round_winner(const struct replica *r)
{
    ssize_t best = -1;
    for (size_t i = 0; i < r->nr_members; i++) {
        const struct offer *o = &r->offers[i];
        if (!o->got)
            return -1;
        if (best < 0)
            best = (ssize_t)i;
        const struct offer *b = &r->offers[best];
        /* Members are sorted, so on a tie the earlier (lower id) stays. */
        if ((o->synced && !b->synced) || (o->synced == b->synced && o->version > b->version))
            best = (ssize_t)i;
    }
    return best;
}

static void maybe_send_state(struct replica *r)
{
    ssize_t w = round_winner(r);
    if (w < 0 || r->members[w] != r->local || r->state_sent)
        return;
    /* With no synced member anywhere, the highest persisted copy among too
     * few members might be older than one a missing member holds: wait for
     * enough members (replica_set_bootstrap_quorum). */
    if (!r->offers[w].synced && r->nr_members < r->bootstrap_min)
        return;
    r->state_sent = true;
    post(r, json_pack("{s:s, s:o*, s:o*}", "type", "sync_state", "members", members_json(r),
                      "state", cl_state_to_json(r->state)));
}

static void handle_offer(struct replica *r, uint32_t sender, const json_t *msg)
{
    if (!r->in_round || !same_members(r, msg))
        return; /* from an earlier round: a later membership change restarted it */
    ssize_t i = member_index(r, sender);
    const json_t *v = json_object_get(msg, "version");
    const json_t *s = json_object_get(msg, "synced");
    if (i < 0 || !json_is_integer(v) || json_integer_value(v) < 0 || !json_is_boolean(s)) {
        report_error(r, sender, msg, TERN_ERR_INVALID, "malformed sync_offer from node %u ignored",
                     sender);
        return;
    }
    r->offers[i].got = true;
    r->offers[i].synced = json_is_true(s);
    r->offers[i].version = (uint64_t)json_integer_value(v);
    maybe_send_state(r);
}

static void handle_state(struct replica *r, uint32_t sender, const json_t *msg)
{
    if (!r->in_round || !same_members(r, msg))
        return;
    ssize_t w = round_winner(r);
    if (w < 0 || r->members[w] != sender) {
        report_error(r, sender, msg, TERN_ERR_INVALID, "sync_state from node %u ignored: it is not "
                     "the winner of this sync round", sender);
        return;
    }
    struct tern_err err = {0};
    if (cl_state_from_json(r->state, json_object_get(msg, "state"), &err) < 0) {
        /* Every member refuses the same document: the round stays open
         * until the next membership change. */
        tern_err_prefix(&err, "sync_state from node %u refused", sender);
        report(r, sender, msg, -1, &err);
        return;
    }
    cl_state_set_members(r->state, r->members, r->nr_members);
    r->in_round = false;
    bool was_synced = r->synced;
    r->synced = true;
    if (r->ops.membership)
        r->ops.membership(r->opaque);
    if (!was_synced && r->ops.synced)
        r->ops.synced(r->opaque);
    apply_queue(r);
}

void replica_deliver(struct replica *r, uint32_t sender_nodeid, const void *data, size_t len)
{
    replica_flush(r);
    if (len > REPLICA_MAX_MSG) {
        report_error(r, sender_nodeid, NULL, TERN_ERR_INVALID,
                     "message of %zu bytes from node %u dropped (at most %u)", len,
                     sender_nodeid, REPLICA_MAX_MSG);
        return;
    }
    json_error_t jerr;
    json_t *msg = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
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
    } else if (strcmp(type, "sync_state") == 0) {
        handle_state(r, sender_nodeid, msg);
    } else if (r->in_round) {
        if (grow((void **)&r->queue, &r->cap_queue, r->nr_queue, sizeof(*r->queue)) < 0) {
            report_error(r, sender_nodeid, msg, TERN_ERR_INTERNAL, "out of memory queueing a message");
        } else {
            r->queue[r->nr_queue].sender = sender_nodeid;
            r->queue[r->nr_queue].msg = json_incref(msg);
            r->nr_queue++;
        }
    } else if (r->synced) {
        apply_one(r, sender_nodeid, msg);
    } else {
        /* Only before the first membership change: the snapshot this
         * replica will install already includes whatever this did. */
        report_error(r, sender_nodeid, msg, TERN_ERR_CONFLICT,
                     "not synced with the cluster yet: message from node %u dropped",
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
                     const uint32_t *left, size_t nr_left, const uint32_t *joined,
                     size_t nr_joined)
{
    (void)left;
    (void)nr_left;
    (void)joined;
    uint32_t *m = malloc((nr_members ? nr_members : 1) * sizeof(*m));
    struct offer *offers = calloc(nr_members ? nr_members : 1, sizeof(*offers));
    if (!m || !offers) {
        /* Without memory to track the round, the only safe answer is to
         * stop claiming the agreed state. */
        free(m);
        free(offers);
        r->synced = false;
        r->in_round = false;
        drop_queue(r);
        drop_outbox(r);
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

    /* Sync messages still unsent belong to the previous round. */
    drop_outbox(r);
    bool interrupted = r->in_round;
    if (interrupted) {
        /* The messages of the interrupted round were delivered to every
         * member of the old membership: a synced replica applies them (as
         * it would have after the snapshot); an unsynced one will receive a
         * state that already has them. */
        if (r->synced)
            apply_queue(r);
        else
            drop_queue(r);
        r->in_round = false;
    }
    if (member_index(r, r->local) < 0) {
        /* This host left the group: its copy is no longer the agreed one. */
        r->synced = false;
        if (r->ops.membership)
            r->ops.membership(r->opaque);
        return;
    }
    if (r->synced)
        cl_state_set_members(r->state, r->members, r->nr_members);
    if (r->ops.membership)
        r->ops.membership(r->opaque);
    /* Every member of the new membership reaches the same answer here: a
     * member that is not synced either joined now (so the others see it in
     * `joined`) or was in an unfinished round with all of them. */
    if (r->synced && nr_joined == 0 && !interrupted)
        return;
    r->in_round = true;
    r->state_sent = false;
    post(r, json_pack("{s:s, s:o*, s:I, s:b}", "type", "sync_offer", "members", members_json(r),
                      "version", (json_int_t)cl_state_version(r->state), "synced", r->synced));
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
