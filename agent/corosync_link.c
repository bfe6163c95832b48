/* The agent's connection to its local corosync (corosync_link.h): one CPG
 * handle joined to the group, one votequorum handle tracking changes, and
 * a short-lived cmap handle when the node list is asked for. Both
 * long-lived handles are dispatched from the caller's poll loop. */
#include "corosync_link.h"

#include <corosync/cmap.h>
#include <corosync/corotypes.h>
#include <corosync/cpg.h>
#include <corosync/votequorum.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

/* How long cs_link_send (and the set-up calls) keep retrying while
 * corosync answers CS_ERR_TRY_AGAIN (flow control, or a membership change
 * being synchronised). */
#define CS_RETRY_MS 2000

struct cs_link {
    cpg_handle_t cpg;
    votequorum_handle_t vq;
    bool have_cpg;
    bool have_vq;
    struct cpg_name group;
    uint32_t nodeid;
    bool quorate;
    uint32_t expected_votes;
    uint64_t ring_seq;
    uint32_t membership_timeout_ms; /* totem token + consensus, as running */
    struct cs_link_callbacks cb;
    void *opaque;
    bool oom; /* a callback could not allocate; dispatch reports it */
    bool leaving; /* cs_link_leave called */
    bool left;    /* its own departure delivered: callbacks stop */
};

/* cs_strerror lives in libcorosync_common, which the build does not link;
 * the names are the ones corosync's tools print. */
static const char *cs_name(cs_error_t e)
{
    switch (e) {
    case CS_OK: return "CS_OK";
    case CS_ERR_LIBRARY: return "CS_ERR_LIBRARY";
    case CS_ERR_VERSION: return "CS_ERR_VERSION";
    case CS_ERR_INIT: return "CS_ERR_INIT";
    case CS_ERR_TIMEOUT: return "CS_ERR_TIMEOUT";
    case CS_ERR_TRY_AGAIN: return "CS_ERR_TRY_AGAIN";
    case CS_ERR_INVALID_PARAM: return "CS_ERR_INVALID_PARAM";
    case CS_ERR_NO_MEMORY: return "CS_ERR_NO_MEMORY";
    case CS_ERR_BAD_HANDLE: return "CS_ERR_BAD_HANDLE";
    case CS_ERR_BUSY: return "CS_ERR_BUSY";
    case CS_ERR_ACCESS: return "CS_ERR_ACCESS";
    case CS_ERR_NOT_EXIST: return "CS_ERR_NOT_EXIST";
    case CS_ERR_NAME_TOO_LONG: return "CS_ERR_NAME_TOO_LONG";
    case CS_ERR_EXIST: return "CS_ERR_EXIST";
    case CS_ERR_NO_SPACE: return "CS_ERR_NO_SPACE";
    case CS_ERR_INTERRUPT: return "CS_ERR_INTERRUPT";
    case CS_ERR_NAME_NOT_FOUND: return "CS_ERR_NAME_NOT_FOUND";
    case CS_ERR_NO_RESOURCES: return "CS_ERR_NO_RESOURCES";
    case CS_ERR_NOT_SUPPORTED: return "CS_ERR_NOT_SUPPORTED";
    case CS_ERR_BAD_OPERATION: return "CS_ERR_BAD_OPERATION";
    case CS_ERR_FAILED_OPERATION: return "CS_ERR_FAILED_OPERATION";
    case CS_ERR_MESSAGE_ERROR: return "CS_ERR_MESSAGE_ERROR";
    case CS_ERR_QUEUE_FULL: return "CS_ERR_QUEUE_FULL";
    case CS_ERR_QUEUE_NOT_AVAILABLE: return "CS_ERR_QUEUE_NOT_AVAILABLE";
    case CS_ERR_BAD_FLAGS: return "CS_ERR_BAD_FLAGS";
    case CS_ERR_TOO_BIG: return "CS_ERR_TOO_BIG";
    case CS_ERR_NO_SECTIONS: return "CS_ERR_NO_SECTIONS";
    case CS_ERR_CONTEXT_NOT_FOUND: return "CS_ERR_CONTEXT_NOT_FOUND";
    case CS_ERR_TOO_MANY_GROUPS: return "CS_ERR_TOO_MANY_GROUPS";
    case CS_ERR_SECURITY: return "CS_ERR_SECURITY";
    }
    return "unknown corosync error";
}

/* Errors meaning the IPC connection to corosync failed or is gone. */
static bool cs_not_running(cs_error_t e)
{
    return e == CS_ERR_LIBRARY || e == CS_ERR_BAD_HANDLE || e == CS_ERR_NOT_EXIST;
}

static int cs_fail(struct tern_err *err, const char *call, cs_error_t e)
{
    if (cs_not_running(e))
        return tern_err_set(err, "%s: %s (%d): is corosync running on this host?", call,
                            cs_name(e), (int)e);
    return tern_err_set(err, "%s: %s (%d)", call, cs_name(e), (int)e);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* Back-off for CS_ERR_TRY_AGAIN: 1, 2, 4 ... 64 ms, then 64 ms. */
static int retry_pause(int attempt)
{
    int ms = 1 << (attempt < 6 ? attempt : 6);
    sleep_ms(ms);
    return ms;
}

/* Calls EXPR until it stops answering CS_ERR_TRY_AGAIN or CS_RETRY_MS pass. */
#define CS_RETRY(rc, expr)                                                                         \
    do {                                                                                           \
        int64_t deadline_ = now_ms() + CS_RETRY_MS;                                                \
        for (int attempt_ = 0;; attempt_++) {                                                      \
            (rc) = (expr);                                                                         \
            if ((rc) != CS_ERR_TRY_AGAIN || now_ms() >= deadline_)                                 \
                break;                                                                             \
            retry_pause(attempt_);                                                                 \
        }                                                                                          \
    } while (0)

/* Nodeids of a CPG address list, into `small` when it fits. */
static uint32_t *nodeids(const struct cpg_address *a, size_t n, uint32_t *small, size_t cap)
{
    uint32_t *ids = n <= cap ? small : malloc(n * sizeof(*ids));
    if (!ids)
        return NULL;
    for (size_t i = 0; i < n; i++)
        ids[i] = a[i].nodeid;
    return ids;
}

static void on_deliver(cpg_handle_t handle, const struct cpg_name *group, uint32_t nodeid,
                       uint32_t pid, void *msg, size_t len)
{
    (void)group;
    (void)pid;
    void *ctx = NULL;
    if (cpg_context_get(handle, &ctx) != CS_OK || !ctx)
        return;
    struct cs_link *l = ctx;
    if (l->cb.deliver && !l->left)
        l->cb.deliver(l->opaque, nodeid, msg, len);
}

static void on_confchg(cpg_handle_t handle, const struct cpg_name *group,
                       const struct cpg_address *members, size_t nr_members,
                       const struct cpg_address *left, size_t nr_left,
                       const struct cpg_address *joined, size_t nr_joined)
{
    (void)group;
    void *ctx = NULL;
    if (cpg_context_get(handle, &ctx) != CS_OK || !ctx)
        return;
    struct cs_link *l = ctx;
    if (l->left)
        return;
    if (l->leaving) {
        /* One ternd per node (its lock): the node id names this process. */
        for (size_t i = 0; i < nr_left; i++)
            if (left[i].nodeid == l->nodeid) {
                l->left = true;
                if (l->cb.left)
                    l->cb.left(l->opaque, nr_members);
                return;
            }
    }
    if (!l->cb.confchg)
        return;
    uint32_t sm[CPG_MEMBERS_MAX], sl[CPG_MEMBERS_MAX], sj[CPG_MEMBERS_MAX];
    bool sdown[CPG_MEMBERS_MAX];
    uint32_t *m = nodeids(members, nr_members, sm, CPG_MEMBERS_MAX);
    uint32_t *lf = nodeids(left, nr_left, sl, CPG_MEMBERS_MAX);
    uint32_t *j = nodeids(joined, nr_joined, sj, CPG_MEMBERS_MAX);
    bool *down = nr_left <= CPG_MEMBERS_MAX ? sdown : malloc(nr_left * sizeof(*down));
    if (down)
        for (size_t i = 0; i < nr_left; i++)
            down[i] = left[i].reason == CPG_REASON_NODEDOWN;
    if (m && lf && j && down)
        l->cb.confchg(l->opaque, m, nr_members, lf, down, nr_left, j, nr_joined);
    else
        l->oom = true;
    if (m != sm)
        free(m);
    if (lf != sl)
        free(lf);
    if (j != sj)
        free(j);
    if (down != sdown)
        free(down);
}

/* CPG model v1: the totem ring changed (delivered after the CPG
 * configuration changes it caused), or the ring at join time. */
static void on_totem(cpg_handle_t handle, struct cpg_ring_id ring_id, uint32_t nr_members,
                     const uint32_t *members)
{
    void *ctx = NULL;
    if (cpg_context_get(handle, &ctx) != CS_OK || !ctx)
        return;
    struct cs_link *l = ctx;
    if (l->left)
        return;
    l->ring_seq = ring_id.seq;
    if (l->cb.ring)
        l->cb.ring(l->opaque, ring_id.seq, members, nr_members);
}

static void on_expected(votequorum_handle_t handle, uint64_t context, uint32_t expected)
{
    (void)handle;
    struct cs_link *l = (struct cs_link *)(uintptr_t)context;
    if (l)
        l->expected_votes = expected;
}

static void on_quorum(votequorum_handle_t handle, uint64_t context, uint32_t quorate,
                      uint32_t nr_nodes, votequorum_node_t nodes[])
{
    (void)handle;
    (void)nr_nodes;
    (void)nodes;
    struct cs_link *l = (struct cs_link *)(uintptr_t)context;
    bool q = quorate != 0;
    if (!l || q == l->quorate)
        return;
    l->quorate = q;
    if (l->cb.quorum)
        l->cb.quorum(l->opaque, q);
}

/* How long corosync may take to notice a lost token and form a new
 * membership: the running totem token timeout plus consensus. When cmap
 * does not say: a generous 3 s token and corosync's default consensus
 * (1.2 x token). */
static uint32_t read_membership_timeout(void)
{
    uint32_t token = 0, consensus = 0;
    cmap_handle_t h;
    cs_error_t rc;
    CS_RETRY(rc, cmap_initialize(&h));
    if (rc == CS_OK) {
        if (cmap_get_uint32(h, "runtime.config.totem.token", &token) != CS_OK)
            token = 0;
        if (cmap_get_uint32(h, "runtime.config.totem.consensus", &consensus) != CS_OK)
            consensus = 0;
        cmap_finalize(h);
    }
    if (token == 0)
        token = 3000;
    if (consensus == 0)
        consensus = token + token / 5;
    return token + consensus;
}

int cs_link_open(struct cs_link **out, const char *group, const struct cs_link_callbacks *cb,
                 void *opaque, struct tern_err *err)
{
    *out = NULL;
    size_t glen = strlen(group);
    if (glen == 0 || glen > CPG_MAX_NAME_LENGTH)
        return tern_err_set(err, "CPG group name must be 1 to %d bytes, not %zu",
                            CPG_MAX_NAME_LENGTH, glen);
    struct cs_link *l = calloc(1, sizeof(*l));
    if (!l)
        return tern_err_set(err, "out of memory for the corosync link");
    l->cb = *cb;
    l->opaque = opaque;
    l->group.length = (uint32_t)glen;
    memcpy(l->group.value, group, glen);

    cs_error_t rc;
    cpg_model_v1_data_t model = {
        .model = CPG_MODEL_V1,
        .cpg_deliver_fn = on_deliver,
        .cpg_confchg_fn = on_confchg,
        .cpg_totem_confchg_fn = on_totem,
        .flags = CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
    };
    CS_RETRY(rc, cpg_model_initialize(&l->cpg, CPG_MODEL_V1, (cpg_model_data_t *)&model, l));
    if (rc != CS_OK) {
        cs_fail(err, "cpg_model_initialize", rc);
        cs_link_close(l);
        return cs_not_running(rc) ? CS_LINK_NOT_RUNNING : -1;
    }
    l->have_cpg = true;
    unsigned int local = 0;
    CS_RETRY(rc, cpg_local_get(l->cpg, &local));
    if (rc != CS_OK) {
        cs_fail(err, "cpg_local_get", rc);
        goto fail;
    }
    l->nodeid = local;

    votequorum_callbacks_t vcb = {.votequorum_quorum_notify_fn = on_quorum,
                                  .votequorum_expectedvotes_notify_fn = on_expected};
    CS_RETRY(rc, votequorum_initialize(&l->vq, &vcb));
    if (rc != CS_OK) {
        /* CPG answered, so corosync runs: votequorum itself is missing. */
        if (cs_not_running(rc))
            tern_err_set(err,
                         "votequorum_initialize: %s (%d): is the quorum provider "
                         "corosync_votequorum configured (quorum { provider: "
                         "corosync_votequorum } in corosync.conf)?",
                         cs_name(rc), (int)rc);
        else
            cs_fail(err, "votequorum_initialize", rc);
        goto fail;
    }
    l->have_vq = true;
    /* Track first, then read: a change between the two arrives as a
     * notification, so none is lost. */
    CS_RETRY(rc, votequorum_trackstart(l->vq, (uint64_t)(uintptr_t)l, CS_TRACK_CHANGES));
    if (rc != CS_OK) {
        cs_fail(err, "votequorum_trackstart", rc);
        goto fail;
    }
    struct votequorum_info info;
    memset(&info, 0, sizeof(info));
    CS_RETRY(rc, votequorum_getinfo(l->vq, l->nodeid, &info));
    if (rc != CS_OK) {
        cs_fail(err, "votequorum_getinfo", rc);
        goto fail;
    }
    l->quorate = (info.flags & VOTEQUORUM_INFO_QUORATE) != 0;
    l->expected_votes = info.node_expected_votes;

    l->membership_timeout_ms = read_membership_timeout();

    CS_RETRY(rc, cpg_join(l->cpg, &l->group));
    if (rc != CS_OK) {
        cs_fail(err, "cpg_join", rc);
        tern_err_prefix(err, "joining CPG group '%s'", group);
        goto fail;
    }
    *out = l;
    return 0;
fail:
    cs_link_close(l);
    return -1;
}

void cs_link_close(struct cs_link *l)
{
    if (!l)
        return;
    /* Finalizing leaves the group; the other members see us leave. */
    if (l->have_cpg)
        cpg_finalize(l->cpg);
    if (l->have_vq)
        votequorum_finalize(l->vq);
    free(l);
}

int cs_link_leave(struct cs_link *l, struct tern_err *err)
{
    if (!l->have_cpg)
        return tern_err_set(err, "leaving the corosync group: not joined");
    /* One attempt: the caller's loop must go on (its watchdog is fed from
     * it), so CS_ERR_TRY_AGAIN is the caller's to retry. */
    cs_error_t rc = cpg_leave(l->cpg, &l->group);
    if (rc == CS_ERR_TRY_AGAIN)
        return 1;
    if (rc != CS_OK)
        return tern_err_set(err, "leaving the corosync group (cpg_leave): %s", cs_name(rc));
    l->leaving = true;
    return 0;
}

uint32_t cs_link_local_nodeid(const struct cs_link *l)
{
    return l->nodeid;
}

uint32_t cs_link_membership_timeout_ms(const struct cs_link *l)
{
    return l->membership_timeout_ms;
}

uint64_t cs_link_ring_seq(const struct cs_link *l)
{
    return l->ring_seq;
}

bool cs_link_quorate(const struct cs_link *l)
{
    return l->quorate;
}

uint32_t cs_link_expected_votes(const struct cs_link *l)
{
    return l->expected_votes;
}

int cs_link_pollfds(struct cs_link *l, struct pollfd *fds)
{
    int cfd = -1, vfd = -1;
    if (cpg_fd_get(l->cpg, &cfd) != CS_OK || votequorum_fd_get(l->vq, &vfd) != CS_OK)
        return -1;
    fds[0] = (struct pollfd){.fd = cfd, .events = POLLIN};
    fds[1] = (struct pollfd){.fd = vfd, .events = POLLIN};
    return 0;
}

int cs_link_dispatch(struct cs_link *l, const struct pollfd *fds, struct tern_err *err)
{
    const short ready = POLLIN | POLLERR | POLLHUP | POLLNVAL;
    cs_error_t rc;
    if (fds[0].revents & ready) {
        rc = cpg_dispatch(l->cpg, CS_DISPATCH_ALL);
        if (rc != CS_OK && rc != CS_ERR_TRY_AGAIN) {
            cs_fail(err, "cpg_dispatch", rc);
            return tern_err_prefix(err, "lost the connection to corosync");
        }
    }
    if (fds[1].revents & ready) {
        rc = votequorum_dispatch(l->vq, CS_DISPATCH_ALL);
        if (rc != CS_OK && rc != CS_ERR_TRY_AGAIN) {
            cs_fail(err, "votequorum_dispatch", rc);
            return tern_err_prefix(err, "lost the connection to corosync");
        }
    }
    if (l->oom) {
        l->oom = false;
        return tern_err_set(err, "out of memory while passing on a CPG membership change");
    }
    return 0;
}

int cs_link_try_send(struct cs_link *l, const void *msg, size_t len, struct tern_err *err)
{
    if (len > CS_LINK_MAX_MSG)
        return tern_err_set(err, "CPG message of %zu bytes is larger than the %u-byte limit", len,
                            CS_LINK_MAX_MSG);
    struct iovec iov = {.iov_base = (void *)msg, .iov_len = len};
    cs_error_t rc = cpg_mcast_joined(l->cpg, CPG_TYPE_AGREED, &iov, 1);
    if (rc == CS_ERR_TRY_AGAIN)
        return 1;
    if (rc != CS_OK)
        return cs_fail(err, "cpg_mcast_joined", rc);
    return 0;
}

int cs_link_send(struct cs_link *l, const void *msg, size_t len, struct tern_err *err)
{
    if (len > CS_LINK_MAX_MSG)
        return tern_err_set(err, "CPG message of %zu bytes is larger than the %u-byte limit", len,
                            CS_LINK_MAX_MSG);
    struct iovec iov = {.iov_base = (void *)msg, .iov_len = len};
    cs_error_t rc;
    CS_RETRY(rc, cpg_mcast_joined(l->cpg, CPG_TYPE_AGREED, &iov, 1));
    if (rc == CS_ERR_TRY_AGAIN)
        return tern_err_set(err,
                            "cpg_mcast_joined: corosync still answered CS_ERR_TRY_AGAIN after %d "
                            "ms (congested, or a membership change does not settle)",
                            CS_RETRY_MS);
    if (rc != CS_OK)
        return cs_fail(err, "cpg_mcast_joined", rc);
    return 0;
}

static int cmp_node(const void *a, const void *b)
{
    const struct cs_node *x = a, *y = b;
    return x->nodeid < y->nodeid ? -1 : x->nodeid > y->nodeid;
}

/* Copies cmap string `key` into dst ("" when the key is absent). */
static int cmap_string(cmap_handle_t h, const char *key, char *dst, size_t cap,
                       struct tern_err *err)
{
    char *s = NULL;
    cs_error_t rc = cmap_get_string(h, key, &s);
    if (rc == CS_ERR_NOT_EXIST) {
        dst[0] = '\0';
        return 0;
    }
    if (rc != CS_OK) {
        cs_fail(err, "cmap_get_string", rc);
        return tern_err_prefix(err, "reading %s", key);
    }
    snprintf(dst, cap, "%s", s);
    free(s);
    return 0;
}

int cs_link_nodelist(struct cs_link *l, struct cs_node *nodes, size_t max, size_t *nr,
                     struct tern_err *err)
{
    (void)l;
    *nr = 0;
    cmap_handle_t h;
    cs_error_t rc;
    CS_RETRY(rc, cmap_initialize(&h));
    if (rc != CS_OK)
        return cs_fail(err, "cmap_initialize", rc);
    cmap_iter_handle_t it;
    rc = cmap_iter_init(h, "nodelist.node.", &it);
    if (rc != CS_OK) {
        cmap_finalize(h);
        return cs_fail(err, "cmap_iter_init(nodelist.node.)", rc);
    }
    int ret = 0;
    char key[CMAP_KEYNAME_MAXLEN + 1];
    size_t vlen;
    cmap_value_types_t type;
    /* Keys look like nodelist.node.<index>.<field>; each node has one
     * nodeid key, and its index finds the other fields. */
    while ((rc = cmap_iter_next(h, it, key, &vlen, &type)) == CS_OK) {
        unsigned idx;
        char field[32];
        if (sscanf(key, "nodelist.node.%u.%31s", &idx, field) != 2 || strcmp(field, "nodeid"))
            continue;
        if (*nr == max) {
            ret = tern_err_set(err, "the corosync nodelist has more than %zu nodes", max);
            break;
        }
        struct cs_node *n = &nodes[*nr];
        memset(n, 0, sizeof(*n));
        uint32_t id;
        rc = cmap_get_uint32(h, key, &id);
        if (rc != CS_OK) {
            cs_fail(err, "cmap_get_uint32", rc);
            ret = tern_err_prefix(err, "reading %s", key);
            break;
        }
        n->nodeid = id;
        char k2[CMAP_KEYNAME_MAXLEN + 1];
        snprintf(k2, sizeof(k2), "nodelist.node.%u.name", idx);
        if (cmap_string(h, k2, n->name, sizeof(n->name), err) < 0) {
            ret = -1;
            break;
        }
        snprintf(k2, sizeof(k2), "nodelist.node.%u.ring0_addr", idx);
        if (cmap_string(h, k2, n->addr, sizeof(n->addr), err) < 0) {
            ret = -1;
            break;
        }
        (*nr)++;
    }
    if (ret == 0 && rc != CS_OK && rc != CS_ERR_NO_SECTIONS)
        ret = cs_fail(err, "cmap_iter_next", rc);
    cmap_iter_finalize(h, it);
    cmap_finalize(h);
    if (ret < 0) {
        *nr = 0;
        return -1;
    }
    qsort(nodes, *nr, sizeof(*nodes), cmp_node);
    return 0;
}
