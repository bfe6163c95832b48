/* The agent's connection to the local corosync: CPG group membership and
 * agreed-order messages, votequorum's quorate flag, and the node list from
 * cmap. Non-blocking: the agent's event loop polls the fds and calls
 * cs_link_dispatch, which runs the callbacks. */
#ifndef TERN_AGENT_COROSYNC_LINK_H
#define TERN_AGENT_COROSYNC_LINK_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"

#define CS_LINK_NFDS 2 /* cpg, votequorum */
/* The largest message cs_link_send accepts. libcpg splits anything above
 * its IPC buffer (~1 MiB) into fragments and reassembles them per sender.
 * Measured on the test hosts (token 300 ms): three 4 MiB messages sent at
 * once reach three hosts intact in ~0.75 s without a membership change.
 * Larger ones work too (32 MiB: ~1.6 s), but then libcpg meets flow
 * control, sleeps 10 ms per retry and prints "sleep. counter=N" on stderr
 * each time. */
#define CS_LINK_MAX_MSG (4u << 20)

/* Called from cs_link_dispatch only. Any of them may be NULL. */
struct cs_link_callbacks {
    /* A message in agreed order; `msg` is valid during the call only. */
    void (*deliver)(void *opaque, uint32_t nodeid, const void *msg, size_t len);
    /* The group's membership changed. One entry per member process (a
     * host with two processes in the group appears twice), in corosync's
     * order. The first call after cs_link_open has this node in `joined`.
     * left_node_down[i]: left[i]'s node itself left corosync's membership
     * (CPG_REASON_NODEDOWN), not just its process. */
    void (*confchg)(void *opaque, const uint32_t *members, size_t nr_members,
                    const uint32_t *left, const bool *left_node_down, size_t nr_left,
                    const uint32_t *joined, size_t nr_joined);
    /* The quorate flag changed (not called for the state at open time:
     * see cs_link_quorate). */
    void (*quorum)(void *opaque, bool quorate);
    /* The totem ring the group now runs in: its ring id's sequence number,
     * unique and increasing across the cluster. Called once the group is
     * joined (the ring at that time), then at every ring change, after the
     * CPG configuration changes that ring brought (CPG model v1's totem
     * configuration callback), with the ring's members (the nodes whose
     * corosync runs with this one's). */
    void (*ring)(void *opaque, uint64_t ring_seq, const uint32_t *nodes, size_t nr_nodes);
    /* After cs_link_leave: this process's own departure, delivered in
     * agreed order; `nr_members` other processes of the group delivered it
     * in the same configuration (none if this node was cut off by then).
     * Nothing else is called after it. */
    void (*left)(void *opaque, size_t nr_members);
};

struct cs_node {
    uint32_t nodeid;
    char name[64];  /* nodelist.node.N.name, or "" */
    char addr[64];  /* nodelist.node.N.ring0_addr */
};

struct cs_link;

/* Connects to corosync, joins CPG group `group`, tracks quorum. Fails with
 * a clear error when corosync is not running ("is corosync running on
 * this host?"): then it returns CS_LINK_NOT_RUNNING, so a caller may wait
 * and try again; other failures return -1. Blocks while corosync answers
 * (IPC round trips; retries CS_ERR_TRY_AGAIN for up to 2 s). */
#define CS_LINK_NOT_RUNNING (-2)
int cs_link_open(struct cs_link **out, const char *group, const struct cs_link_callbacks *cb,
                 void *opaque, struct tern_err *err);
void cs_link_close(struct cs_link *l);

uint32_t cs_link_local_nodeid(const struct cs_link *l);

/* Leaves the group (cpg_leave), for an orderly stop that must know who saw
 * it go: callbacks.left reports it. The link stays open (to be closed
 * with cs_link_close). Never blocks: 1 when corosync says "try again"
 * (call it again later), 0 once asked, -1 with err. */
int cs_link_leave(struct cs_link *l, struct tern_err *err);
/* The last ring sequence number passed to the ring callback (0: none yet). */
uint64_t cs_link_ring_seq(const struct cs_link *l);
/* How long corosync may take to notice that this node lost the others and
 * form a new membership (totem token + consensus, read at open): a host
 * cut off may go on believing in its old configuration that long. */
uint32_t cs_link_membership_timeout_ms(const struct cs_link *l);
bool cs_link_quorate(const struct cs_link *l);
/* votequorum's expected votes for this node (kept up to date). */
uint32_t cs_link_expected_votes(const struct cs_link *l);

/* Fills CS_LINK_NFDS pollfds (POLLIN). */
int cs_link_pollfds(struct cs_link *l, struct pollfd *fds);
/* Dispatches whatever is ready on those fds. -1 when corosync went away
 * (the agent must reconnect or exit; err says so). */
int cs_link_dispatch(struct cs_link *l, const struct pollfd *fds, struct tern_err *err);

/* Multicasts `len` (<= CS_LINK_MAX_MSG) bytes in agreed order (delivered
 * to every member, including this one). Retries CS_ERR_TRY_AGAIN
 * (congestion, membership change in progress) with short sleeps for up to
 * 2 s, blocking the caller, then fails. */
int cs_link_send(struct cs_link *l, const void *msg, size_t len, struct tern_err *err);

/* The same without waiting: 0 sent, 1 corosync asks to try again later
 * (CS_ERR_TRY_AGAIN: congested, or a membership change being settled), -1
 * failed (err). For an event loop, which retries from a timer. */
int cs_link_try_send(struct cs_link *l, const void *msg, size_t len, struct tern_err *err);

/* The configured nodes (cmap nodelist.node.N.{nodeid,name,ring0_addr}),
 * sorted by nodeid. Fails if there are more than `max`. */
int cs_link_nodelist(struct cs_link *l, struct cs_node *nodes, size_t max, size_t *nr,
                     struct tern_err *err);

#endif
