/* The agent's connection to the local corosync: CPG group membership and
 * agreed-order messages, votequorum's quorate flag, and the node list from
 * cmap. Non-blocking: the agent's event loop polls the fds and calls
 * cs_link_dispatch, which runs the callbacks. */
#ifndef TERN_HA_COROSYNC_LINK_H
#define TERN_HA_COROSYNC_LINK_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"

#define CS_LINK_NFDS 2 /* cpg, votequorum */
#define CS_LINK_MAX_MSG (4u << 20)

struct cs_link_callbacks {
    void (*deliver)(void *opaque, uint32_t nodeid, const void *msg, size_t len);
    void (*confchg)(void *opaque, const uint32_t *members, size_t nr_members,
                    const uint32_t *left, size_t nr_left, const uint32_t *joined,
                    size_t nr_joined);
    void (*quorum)(void *opaque, bool quorate);
};

struct cs_node {
    uint32_t nodeid;
    char name[64];  /* nodelist.node.N.name, or "" */
    char addr[64];  /* nodelist.node.N.ring0_addr */
};

struct cs_link;

/* Connects to corosync, joins CPG group `group`, tracks quorum. Fails with
 * a clear error when corosync is not running ("is corosync running?"). */
int cs_link_open(struct cs_link **out, const char *group, const struct cs_link_callbacks *cb,
                 void *opaque, struct tern_err *err);
void cs_link_close(struct cs_link *l);

uint32_t cs_link_local_nodeid(const struct cs_link *l);
bool cs_link_quorate(const struct cs_link *l);

/* Fills CS_LINK_NFDS pollfds (POLLIN). */
int cs_link_pollfds(struct cs_link *l, struct pollfd *fds);
/* Dispatches whatever is ready on those fds. -1 when corosync went away
 * (the agent must reconnect or exit; err says so). */
int cs_link_dispatch(struct cs_link *l, const struct pollfd *fds, struct tern_err *err);

/* Multicasts `len` bytes in agreed order (delivered to every member,
 * including this one). Retries briefly while corosync is congested. */
int cs_link_send(struct cs_link *l, const void *msg, size_t len, struct tern_err *err);

/* The configured nodes (cmap nodelist). */
int cs_link_nodelist(struct cs_link *l, struct cs_node *nodes, size_t max, size_t *nr,
                     struct tern_err *err);

#endif
