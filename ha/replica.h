/* One host's replica of the cluster state, kept equal to every other
 * member's over CPG (virtual synchrony: all members of a configuration see
 * the same messages and configuration changes in the same order).
 *
 * Besides applying state messages and configuration changes in order, the
 * replica brings hosts that join up to date: at a configuration change with
 * joiners (or with a member that is not synced), nobody applies the
 * configuration; every member offers what it holds and the best offer wins:
 * the copy that held quorum last (the higher quorum epoch, a ring sequence
 * number unique to its quorate configuration), then the one with more of
 * that epoch's history (the quorate version), then the longer history
 * (version), then the lowest node id. The winner sends its state in chunks;
 * everyone installs it, applies the configuration to it, then the messages
 * delivered meanwhile. So when partitions merge, the side that was quorate
 * wins, however often the other side's membership changed, and a
 * whole-cluster restart continues from the newest copy a majority of hosts
 * persisted.
 *
 * Acknowledgements: every member reports how far it has persisted its copy
 * (replica_persisted); replica_stable_version is the version a majority of
 * the expected votes has on disk, counting only disks that hold the current
 * configuration's own record. A change acknowledged only once stable
 * survives any partition, merge and whole-cluster power loss that leaves a
 * majority's disks intact.
 *
 * No I/O: the caller feeds deliveries and configuration changes in and
 * sends what the replica hands to `send`. docs/cluster-state.md describes
 * the protocol; ha/replica.pml models it. */
#ifndef TERN_HA_REPLICA_H
#define TERN_HA_REPLICA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"
#include "cluster_state.h"

/* What the replica applied to its state, in order, for the journal. */
enum replica_event_kind {
    REPLICA_EV_MESSAGE, /* a state message (sender, msg) */
    REPLICA_EV_CONFIG,  /* a configuration applied to this replica's state (config;
                           never during a sync round) */
    REPLICA_EV_INSTALL, /* a whole state from a sync round, its configuration
                           applied (see replica_state) */
};

struct replica_event {
    enum replica_event_kind kind;
    uint32_t sender;
    const json_t *msg;
    const struct cl_config *config;
    uint64_t version; /* the state's version after it */
};

struct replica_ops {
    /* Broadcast `len` bytes to the group (CPG agreed order). Must not
     * re-enter the replica. Returns 0, or -1 (the replica retries at the
     * next event or replica_flush). */
    int (*send)(void *opaque, const void *data, size_t len);
    /* A state message was applied (rc 0) or refused (rc -1, err). Called for
     * every message, in order, also for those other hosts sent; `msg` is
     * only valid during the call. Deliveries that are not state messages
     * are reported here too with rc -1: `msg` is NULL when the bytes were
     * not JSON at all. Sync messages are not reported unless malformed. */
    void (*applied)(void *opaque, uint32_t sender_nodeid, const json_t *msg, int rc,
                    const struct tern_err *err);
    /* A configuration change was applied, or a state installed. */
    void (*membership)(void *opaque);
    /* This replica became synced (its state is the agreed one). */
    void (*synced)(void *opaque);
    /* A sync round installed a state; `replaced` when it was another
     * member's (this replica's own history since the split is gone: what
     * runs here must be reconciled against it). */
    void (*installed)(void *opaque, bool replaced);
    /* Every change to the state, in order (persist it). May be NULL. */
    void (*journal)(void *opaque, const struct replica_event *ev);
    /* This replica can no longer be sure it equals the others (a message
     * refused here only, out of memory; a sync round that overflowed).
     * From now on it applies nothing; the caller must leave the group,
     * reload its persisted copy and join again, as an unsynced member. */
    void (*fatal)(void *opaque, const char *why);
};

struct replica;

/* `state` is owned by the replica from now on (it may have been loaded from
 * disk: its quorum epoch and version count in sync rounds). */
struct replica *replica_new(uint32_t local_nodeid, struct cl_state *state,
                            const struct replica_ops *ops, void *opaque);
void replica_free(struct replica *r);

struct cl_state *replica_state(struct replica *r);
/* Synced: the state is the agreed one (it may be in a sync round). */
bool replica_synced(const struct replica *r);
/* Synced and no sync round open: changes may be originated. */
bool replica_ready(const struct replica *r);
/* A sync round is open; each round has its own sequence number, so a
 * caller can time one out (then leave and rejoin the group). */
bool replica_round_open(const struct replica *r);
uint64_t replica_round_seq(const struct replica *r);
/* Set once `fatal` was called. */
bool replica_failed(const struct replica *r);
uint32_t replica_local_nodeid(const struct replica *r);

/* A CPG delivery: `data` is the raw message (anything unparsable is
 * reported via applied() with rc -1 and dropped). */
void replica_deliver(struct replica *r, uint32_t sender_nodeid, const void *data, size_t len);

/* A CPG configuration change; left_reason[i] says why left[i] left. With no
 * one joining and no round open, a synced replica applies it at once, under
 * the ring last set; otherwise a sync round opens, and the configuration is
 * applied to the state it installs. */
void replica_confchg(struct replica *r, const uint32_t *members, size_t nr_members,
                     const uint32_t *left, const enum cl_leave_reason *left_reason,
                     size_t nr_left, const uint32_t *joined, size_t nr_joined);

/* The totem ring the group now runs in (corosync's ring id seq: CPG model
 * v1's totem configuration callback, which follows the CPG configuration
 * changes of that ring). Configurations are applied under it, and a quorate
 * one takes it as its quorum epoch. `nodes` (n of them; NULL: unknown) are
 * the ring's members, the nodes whose corosync runs: a host online in an
 * installed copy that is not a CPG member now left with its process only
 * if its node is among them, else with its node (it is lost). */
void replica_set_ring(struct replica *r, uint64_t ring_seq, const uint32_t *nodes, size_t n);
/* Whether node `nodeid` is in that ring: 1, 0, or -1 when its nodes are
 * not known. */
int replica_ring_has(const struct replica *r, uint32_t nodeid);

/* Wraps `msg` (a state message) for sending: adds the origin fields
 * ("origin": {"node": local, "req": req}) and serializes. Returns a
 * malloc'd JSON string, or NULL with err. */
char *replica_encode(struct replica *r, json_t *msg, uint64_t req, struct tern_err *err);

/* Retries the sync messages `send` refused earlier (deliveries and
 * configuration changes retry too; call this from a timer so a quiet
 * cluster does not wait for the next event). True when nothing is left. */
bool replica_flush(struct replica *r);

/* Whole-cluster restart: a round whose best offer is a persisted copy (no
 * synced member has better) completes only with at least `min_members`
 * present; with fewer it ends without a winner and the unsynced members
 * wait for the next configuration change. Set it to the quorum size: any
 * quorum includes a host with the newest acknowledged state. Default 1. */
void replica_set_bootstrap_quorum(struct replica *r, size_t min_members);

/* This host has persisted its state up to `version` (as the journal events
 * numbered it since the last install). The replica tells the others. */
void replica_persisted(struct replica *r, uint64_t version);

/* The highest version that at least a majority of the expected votes has
 * reported persisted in the current configuration, counting only reports
 * at least the version at which this configuration was applied (0 if none
 * yet, or not synced, or in a round). A change applied at version V is
 * durable on a majority, in this quorum epoch, once this is >= V. */
uint64_t replica_stable_version(const struct replica *r);

/* Lowers the limits on what one sync round may queue (tests). */
void replica_set_queue_limits(struct replica *r, size_t max_messages, size_t max_bytes);

/* Fault injection (tests, and ternd with TERN_TEST_FAULT=replica-local-refusal):
 * the next state message is refused on this host alone, as if memory ran
 * out, which makes the replica fatal. */
void replica_inject_local_refusal(struct replica *r);

/* Limits: messages queued during one sync round, and the state's size in
 * one sync. A round past them makes the replica fatal. */
#define REPLICA_MAX_QUEUE 100000
#define REPLICA_MAX_QUEUE_BYTES (256u << 20)
#define REPLICA_MAX_STATE_BYTES (512u << 20)
/* Sync state travels in chunks of at most this many bytes. */
#define REPLICA_CHUNK_BYTES (1u << 20)

#endif
