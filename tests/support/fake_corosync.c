/* A one-node corosync group in the agent's own process (fake_corosync.h):
 * defines every function of agent/corosync_link.h, so a program that
 * links this file before the library never uses corosync_link.o (and a
 * second definition would stop the link, not pass unnoticed). */
#include "fake_corosync.h"

#include "agent/corosync_link.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

enum fake_ev_kind { EV_CONFCHG, EV_RING, EV_DELIVER, EV_LEFT };

struct fake_ev {
    enum fake_ev_kind kind;
    void *data;
    size_t len;
    struct fake_ev *next;
};

struct cs_link {
    int cpg_fd, vq_fd; /* eventfds */
    struct cs_link_callbacks cb;
    void *opaque;
    struct fake_ev *head, *tail;
    size_t queued_bytes;
    uint64_t ring_seq; /* passed to the ring callback (0: not yet) */
    bool left;         /* its own departure delivered: nothing more */
};

/* The cpg fd is readable while events wait (an eventfd counts up). */
static int signal_fd(int fd, struct tern_err *err)
{
    uint64_t one = 1;
    if (write(fd, &one, sizeof(one)) != (ssize_t)sizeof(one))
        return tern_err_errno(err, errno, "fake corosync: writing its eventfd");
    return 0;
}

static int push(struct cs_link *l, enum fake_ev_kind kind, const void *data, size_t len,
                struct tern_err *err)
{
    struct fake_ev *ev = calloc(1, sizeof(*ev));
    void *copy = len ? malloc(len) : NULL;
    if (!ev || (len && !copy)) {
        free(ev);
        free(copy);
        return tern_err_set(err, "fake corosync: out of memory");
    }
    /* The first one waiting wakes the loop. */
    if (!l->head && signal_fd(l->cpg_fd, err) < 0) {
        free(ev);
        free(copy);
        return -1;
    }
    if (len)
        memcpy(copy, data, len);
    *ev = (struct fake_ev){.kind = kind, .data = copy, .len = len};
    if (l->tail)
        l->tail->next = ev;
    else
        l->head = ev;
    l->tail = ev;
    l->queued_bytes += len;
    return 0;
}

static void free_events(struct fake_ev *ev)
{
    while (ev) {
        struct fake_ev *n = ev->next;
        free(ev->data);
        free(ev);
        ev = n;
    }
}

int cs_link_open(struct cs_link **out, const char *group, const struct cs_link_callbacks *cb,
                 void *opaque, struct tern_err *err)
{
    *out = NULL;
    size_t glen = strlen(group);
    if (glen == 0 || glen > 127)
        return tern_err_set(err, "CPG group name must be 1 to 127 bytes, not %zu", glen);
    struct cs_link *l = calloc(1, sizeof(*l));
    if (!l)
        return tern_err_set(err, "out of memory for the corosync link");
    l->cb = *cb;
    l->opaque = opaque;
    l->cpg_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    l->vq_fd = l->cpg_fd < 0 ? -1 : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (l->cpg_fd < 0 || l->vq_fd < 0) {
        tern_err_errno(err, errno, "fake corosync: eventfd");
        cs_link_close(l);
        return -1;
    }
    /* Joining: the first dispatch brings this node's configuration, then
     * the ring it runs in (CPG model v1's totem callback follows the
     * configuration changes of its ring). */
    if (push(l, EV_CONFCHG, NULL, 0, err) < 0 || push(l, EV_RING, NULL, 0, err) < 0) {
        cs_link_close(l);
        return -1;
    }
    *out = l;
    return 0;
}

void cs_link_close(struct cs_link *l)
{
    if (!l)
        return;
    free_events(l->head);
    if (l->cpg_fd >= 0)
        close(l->cpg_fd);
    if (l->vq_fd >= 0)
        close(l->vq_fd);
    free(l);
}

/* The group of one: its departure is seen by nobody else (and one node's
 * expected votes, 1, make that a quorum). */
int cs_link_leave(struct cs_link *l, struct tern_err *err)
{
    return push(l, EV_LEFT, NULL, 0, err);
}

uint32_t cs_link_local_nodeid(const struct cs_link *l)
{
    (void)l;
    return FAKE_CS_NODEID;
}

uint64_t cs_link_ring_seq(const struct cs_link *l)
{
    return l->ring_seq;
}

/* One node: nobody to lose; corosync's default for token 1000 ms. */
uint32_t cs_link_membership_timeout_ms(const struct cs_link *l)
{
    (void)l;
    return 2200;
}

bool cs_link_quorate(const struct cs_link *l)
{
    (void)l;
    return true;
}

uint32_t cs_link_expected_votes(const struct cs_link *l)
{
    (void)l;
    return 1;
}

int cs_link_pollfds(struct cs_link *l, struct pollfd *fds)
{
    fds[0] = (struct pollfd){.fd = l->cpg_fd, .events = POLLIN};
    fds[1] = (struct pollfd){.fd = l->vq_fd, .events = POLLIN};
    return 0;
}

/* Runs what waited when this dispatch began, in order; what the callbacks
 * send meanwhile waits for the next one (its fd stays readable). */
int cs_link_dispatch(struct cs_link *l, const struct pollfd *fds, struct tern_err *err)
{
    const short ready = POLLIN | POLLERR | POLLHUP | POLLNVAL;
    uint64_t v;
    if (fds[1].revents & ready) {
        if (read(l->vq_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
            return tern_err_errno(err, errno, "fake corosync: reading its votequorum eventfd");
    }
    if (!(fds[0].revents & ready))
        return 0;
    if (read(l->cpg_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        return tern_err_errno(err, errno, "fake corosync: reading its cpg eventfd");
    struct fake_ev *batch = l->head;
    l->head = l->tail = NULL;
    l->queued_bytes = 0;
    for (struct fake_ev *ev = batch; ev; ev = ev->next) {
        if (l->left)
            break;
        if (ev->kind == EV_LEFT) {
            l->left = true;
            if (l->cb.left)
                l->cb.left(l->opaque, 0);
        } else if (ev->kind == EV_CONFCHG) {
            static const uint32_t self[] = {FAKE_CS_NODEID};
            if (l->cb.confchg)
                l->cb.confchg(l->opaque, self, 1, NULL, NULL, 0, self, 1);
        } else if (ev->kind == EV_RING) {
            static const uint32_t self[] = {FAKE_CS_NODEID};
            l->ring_seq = FAKE_CS_RING;
            if (l->cb.ring)
                l->cb.ring(l->opaque, l->ring_seq, self, 1);
        } else {
            if (l->cb.deliver)
                l->cb.deliver(l->opaque, FAKE_CS_NODEID, ev->data, ev->len);
        }
    }
    free_events(batch);
    return 0;
}

int cs_link_try_send(struct cs_link *l, const void *msg, size_t len, struct tern_err *err)
{
    if (len > CS_LINK_MAX_MSG)
        return tern_err_set(err, "CPG message of %zu bytes is larger than the %u-byte limit", len,
                            CS_LINK_MAX_MSG);
    if (l->queued_bytes + len > FAKE_CS_MAX_QUEUED) {
        return 1;
    }
    if (push(l, EV_DELIVER, msg, len, err) < 0)
        return -1;
    return 0;
}

int cs_link_send(struct cs_link *l, const void *msg, size_t len, struct tern_err *err)
{
    int rc = cs_link_try_send(l, msg, len, err);
    if (rc == 1)
        return tern_err_set(err, "fake corosync: %zu bytes wait for delivery already",
                            l->queued_bytes);
    return rc;
}

int cs_link_nodelist(struct cs_link *l, struct cs_node *nodes, size_t max, size_t *nr,
                     struct tern_err *err)
{
    (void)l;
    *nr = 0;
    if (max < 1)
        return tern_err_set(err, "the corosync nodelist has more than %zu nodes", max);
    memset(&nodes[0], 0, sizeof(nodes[0]));
    nodes[0].nodeid = FAKE_CS_NODEID;
    snprintf(nodes[0].name, sizeof(nodes[0].name), "%s", FAKE_CS_NODE_NAME);
    snprintf(nodes[0].addr, sizeof(nodes[0].addr), "%s", FAKE_CS_NODE_ADDR);
    *nr = 1;
    return 0;
}
