/* One host's replica of the cluster state, kept equal to every other
 * member's over CPG (virtual synchrony: all members see the same messages
 * and membership changes in the same order).
 *
 * Besides applying state messages in order, the replica brings joining
 * hosts up to date: at a membership change with joiners, the member that
 * already held the agreed state (the lowest such nodeid) sends a snapshot
 * of the state as of that change; the joiners queue the messages delivered
 * after the change, install the snapshot when it arrives, then apply the
 * queue. When no member holds agreed state (the whole cluster restarted),
 * every member offers the version of its persisted copy and the highest
 * (then lowest nodeid) sends its snapshot. Until a replica is synced it
 * refuses to originate changes (replica_synced() is false).
 *
 * No I/O: the caller feeds deliveries and membership changes in and sends
 * what the replica hands to `send`. docs/cluster-state.md describes the
 * protocol. */
#ifndef TERN_HA_REPLICA_H
#define TERN_HA_REPLICA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"
#include "cluster_state.h"

struct replica_ops {
    /* Broadcast `msg` to the group (CPG agreed order). Must not re-enter the
     * replica. Returns 0, or -1 (the replica retries at the next event). */
    int (*send)(void *opaque, const json_t *msg);
    /* A state message was applied (rc 0) or refused (rc -1, err). Called for
     * every message, in order, also for those other hosts sent; `msg` is
     * only valid during the call. Deliveries that are not state messages
     * are reported here too with rc -1: `msg` is NULL when the bytes were
     * not JSON at all. Sync messages are not reported unless malformed. */
    void (*applied)(void *opaque, uint32_t sender_nodeid, const json_t *msg, int rc,
                    const struct tern_err *err);
    /* Membership changed (after the state's online flags were updated). */
    void (*membership)(void *opaque);
    /* This replica became synced (its state is the agreed one). */
    void (*synced)(void *opaque);
};

struct replica;

/* `state` is owned by the replica from now on (it may have been loaded from
 * disk; its version counts for the whole-cluster-restart case). */
struct replica *replica_new(uint32_t local_nodeid, struct cl_state *state,
                            const struct replica_ops *ops, void *opaque);
void replica_free(struct replica *r);

struct cl_state *replica_state(struct replica *r);
bool replica_synced(const struct replica *r);
uint32_t replica_local_nodeid(const struct replica *r);

/* A CPG delivery: `data` is the raw message (JSON text, not NUL-terminated;
 * anything unparsable is logged via applied() with rc -1 and dropped). */
void replica_deliver(struct replica *r, uint32_t sender_nodeid, const void *data, size_t len);

/* A CPG configuration change. */
void replica_confchg(struct replica *r, const uint32_t *members, size_t nr_members,
                     const uint32_t *left, size_t nr_left, const uint32_t *joined,
                     size_t nr_joined);

/* Wraps `msg` (a state message) for sending: adds the origin fields
 * ("origin": {"node": local, "req": req}) and serializes. Returns a
 * malloc'd JSON string, or NULL with err. */
char *replica_encode(struct replica *r, json_t *msg, uint64_t req, struct tern_err *err);

/* Retries the sync messages `send` refused earlier (deliveries and
 * membership changes retry too; call this from a timer so a quiet cluster
 * does not wait for the next event). Returns true when nothing is left. */
bool replica_flush(struct replica *r);

/* Whole-cluster restart: while no member is synced, the round completes
 * (the highest persisted copy wins) only once at least `min_members` are
 * present. Set it to the quorum size so the first host to start does not
 * crown its possibly old copy alone: any quorum includes a host that saw
 * the last change. Default 1 (any member alone may bootstrap). */
void replica_set_bootstrap_quorum(struct replica *r, size_t min_members);

#endif
