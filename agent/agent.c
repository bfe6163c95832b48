/* ternd's event loop and its wiring to corosync, the replicated state and
 * the disk (agent.h). */
#include "agent.h"
#include "cgroup.h"
#include "../common/text.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

double agent_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void agent_log(const char *fmt, ...)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "ternd: %02d:%02d:%02d.%03ld ", tm.tm_hour, tm.tm_min,
             tm.tm_sec, ts.tv_nsec / 1000000);
    /* One line, whatever names, paths and messages from requests and
     * other hosts hold (control characters escaped), in one write:
     * stderr is line-buffered. */
    va_list ap;
    va_start(ap, fmt);
    text_vput_line(stderr, prefix, fmt, ap);
    va_end(ap);
}

struct cl_state *agent_state(struct agent *a)
{
    return replica_state(a->replica);
}

bool agent_is_host(struct agent *a)
{
    const struct cl_host *h = cl_state_host(agent_state(a), a->host);
    return h && h->nodeid == a->nodeid;
}

bool agent_out_of_quorum_for(struct agent *a, double s)
{
    return a->quorum_lost_at > 0 && agent_now() - a->quorum_lost_at > s;
}

/* Follows quorum as this host sees it (its corosync and its state). */
static void track_quorum(struct agent *a)
{
    bool q = a->quorate && replica_synced(a->replica) && cl_state_quorate(agent_state(a));
    if (q) {
        if (a->quorum_lost_at > 0)
            agent_log("quorum back after %.1f s\n", agent_now() - a->quorum_lost_at);
        a->quorum_lost_at = 0;
        a->was_quorate = true;
    } else if (a->was_quorate && a->quorum_lost_at == 0) {
        a->quorum_lost_at = agent_now();
        agent_log("this host is out of quorum: it starts nothing, and its HA VMs stop in %.0f "
                  "s unless quorum returns\n", LOCAL_HA_SELF_STOP_S);
    }
}

void agent_changed(struct agent *a)
{
    a->dirty = true;
}

bool agent_can_change(struct agent *a, struct tern_err *err)
{
    struct cl_state *s = agent_state(a);
    if (!replica_ready(a->replica)) {
        tern_err_coded(err, TERN_ERR_NO_QUORUM, "this host (%s) is not in step with the cluster "
                       "yet (it is receiving the cluster state); try again in a moment", a->host);
        return false;
    }
    if (!cl_state_quorate(s) || !a->quorate) {
        tern_err_coded(err, TERN_ERR_NO_QUORUM, "this host (%s) is not in a quorate partition of "
                       "the cluster (%zu of %u expected votes present); changes are refused "
                       "until quorum returns",
                       a->host, cl_state_nr_members(s), cl_state_expected_votes(s));
        return false;
    }
    return true;
}

/* --- sending: a queue for what corosync cannot take right now --- */

struct outq_item {
    char *text;
    size_t len;
    struct outq_item *next;
};

struct outq {
    struct outq_item *head, *tail;
    size_t nr;
    uint64_t timer;
    int delay_ms;
};

#define OUTQ_MAX 100000

static void outq_flush(struct agent *a);

static void outq_retry(struct loop *l, void *opaque)
{
    (void)l;
    struct agent *a = opaque;
    a->outq->timer = 0;
    outq_flush(a);
}

/* Sends what is queued, in order; on "try again" waits 1, 2, 4 ... 64 ms. */
static void outq_flush(struct agent *a)
{
    struct outq *q = a->outq;
    while (q->head && a->link) {
        struct tern_err err;
        int rc = cs_link_try_send(a->link, q->head->text, q->head->len, &err);
        if (rc == 1) {
            if (!q->timer) {
                q->delay_ms = q->delay_ms ? (q->delay_ms < 64 ? q->delay_ms * 2 : 64) : 1;
                q->timer = loop_add_timer(a->loop, q->delay_ms, outq_retry, a);
            }
            return;
        }
        if (rc < 0)
            agent_log("sending to the cluster failed: %s; the message is dropped\n", err.msg);
        struct outq_item *it = q->head;
        q->head = it->next;
        if (!q->head)
            q->tail = NULL;
        q->nr--;
        free(it->text);
        free(it);
    }
    q->delay_ms = 0;
}

/* Encodes `msg` (origin added) and sends it now, or queues it behind what
 * waits. The request id, or 0 with err. */
static uint64_t send_msg(struct agent *a, json_t *msg, struct tern_err *err)
{
    if (a->outq->nr >= OUTQ_MAX) {
        tern_err_coded(err, TERN_ERR_INTERNAL, "corosync has not taken the last %d messages; "
                       "try again later", OUTQ_MAX);
        return 0;
    }
    uint64_t req = ++a->next_req;
    char *text = replica_encode(a->replica, msg, req, err);
    if (!text)
        return 0;
    struct outq_item *it = calloc(1, sizeof(*it));
    if (!it) {
        free(text);
        tern_err_coded(err, TERN_ERR_INTERNAL, "out of memory");
        return 0;
    }
    it->text = text;
    it->len = strlen(text);
    if (a->outq->tail)
        a->outq->tail->next = it;
    else
        a->outq->head = it;
    a->outq->tail = it;
    a->outq->nr++;
    if (!a->outq->timer)
        outq_flush(a);
    return req;
}

uint64_t agent_send(struct agent *a, json_t *msg, struct tern_err *err)
{
    if (!agent_can_change(a, err))
        return 0;
    return send_msg(a, msg, err);
}

uint64_t agent_report(struct agent *a, json_t *msg)
{
    const char *type = json_string_value(json_object_get(msg, "type"));
    struct tern_err err;
    if (!replica_ready(a->replica)) {
        agent_log("not in step with the cluster; %s not sent now\n", type ? type : "?");
        return 0;
    }
    uint64_t req = send_msg(a, msg, &err);
    if (!req)
        agent_log("sending %s: %s\n", type ? type : "?", err.msg);
    return req;
}

/* --- replica callbacks --- */

static int on_replica_send(void *opaque, const void *data, size_t len)
{
    struct agent *a = opaque;
    struct tern_err err;
    if (!a->link)
        return -1;
    int rc = cs_link_try_send(a->link, data, len, &err);
    if (rc < 0)
        agent_log("%s (will retry)\n", err.msg);
    return rc == 0 ? 0 : -1; /* the replica keeps it and retries */
}

/* Our own announce came back: applied, this node is that host; refused,
 * it must not act as any host. */
static void on_own_announce(struct agent *a, int rc, const struct tern_err *err)
{
    if (rc < 0) {
        agent_log("this node (%u) cannot be host '%s': %s. It does not act as any host and "
                  "stops: fix 'host =' in %s (or corosync's node name) and start it again\n",
                  a->nodeid, a->host, err ? err->msg : "refused", a->config_path);
        a->exit_status = 78;
        loop_stop(a->loop);
        return;
    }
    if (!a->reconciled && agent_is_host(a)) {
        a->reconciled = true;
        local_reconcile(a, true);
    }
}

static void on_replica_applied(void *opaque, uint32_t sender, const json_t *msg, int rc,
                               const struct tern_err *err)
{
    struct agent *a = opaque;
    enum cl_msg_type type = cl_msg_type_of(msg);
    const json_t *o = msg ? json_object_get(msg, "origin") : NULL;
    bool ours = o && (uint32_t)json_integer_value(json_object_get(o, "node")) == a->nodeid;
    if (rc < 0 && type != CL_MSG_MIGRATION_PROGRESS) {
        /* Progress that crossed the migration's end is not worth a line;
         * refusals of our own requests go back to the client, the others
         * only to the log. */
        const struct cl_host *h = cl_state_host_by_nodeid(agent_state(a), sender);
        agent_log("refused %s from %s: [%s] %s\n", cl_msg_type_name(type) ?: "?",
                  h ? h->name : "?", tern_err_code_name(err ? err->code : 0), err ? err->msg : "?");
    }
    if (ours && a->announce_req &&
        (uint64_t)json_integer_value(json_object_get(o, "req")) == a->announce_req) {
        a->announce_req = 0;
        on_own_announce(a, rc, err);
    }
    if (rc == 0 && msg)
        local_on_applied(a, msg);
    requests_on_applied(a, sender, msg, rc, err);
    metrics_on_applied(a, msg, rc);
    agent_changed(a);
}

static void announce(struct agent *a)
{
    uint32_t expected = cs_link_expected_votes(a->link);
    if (expected == 0)
        expected = (uint32_t)a->nr_nodes; /* votequorum did not say: one vote per node */
    json_t *m = cl_msg_new(CL_MSG_HOST_ANNOUNCE);
    json_object_set_new(m, "host", json_string(a->host));
    json_object_set_new(m, "mem_mib", json_integer((json_int_t)a->cfg.mem_mib));
    json_object_set_new(m, "vcpus", json_integer((json_int_t)a->cfg.vcpus));
    json_object_set_new(m, "migration_addr", json_string(a->cfg.migration_addr));
    json_object_set_new(m, "expected_votes", json_integer((json_int_t)expected));
    json_object_set_new(m, "watchdog_s", json_integer(ha_watchdog_s(a)));
    uint64_t req = agent_report(a, m);
    if (req) {
        a->announced = true;
        a->announce_req = req;
    }
    json_decref(m);
}

static void on_replica_membership(void *opaque)
{
    struct agent *a = opaque;
    /* Re-announce after every change so our own entry (capacity, address,
     * expected votes) is right after merges too. */
    if (replica_synced(a->replica))
        a->announced = false;
    local_on_membership(a);
    agent_changed(a);
}

/* TERN_TEST_FAULT=replica-local-refusal (tests): once synced, the next
 * message is refused here alone, as if memory ran out. */
static void maybe_inject_fault(struct agent *a)
{
    static bool injected;
    const char *f = getenv("TERN_TEST_FAULT");
    if (!injected && f && strstr(f, "replica-local-refusal")) {
        injected = true;
        agent_log("test fault: the next cluster message will be refused on this host only\n");
        replica_inject_local_refusal(a->replica);
    }
}

static void on_replica_synced(void *opaque)
{
    struct agent *a = opaque;
    maybe_inject_fault(a);
    agent_log("%s has the cluster state (version %llu, quorum epoch %llu)\n", a->host,
              (unsigned long long)cl_state_version(agent_state(a)),
              (unsigned long long)cl_state_quorum_epoch(agent_state(a)));
    a->announced = false;
    agent_changed(a);
}

static void on_replica_installed(void *opaque, bool replaced)
{
    struct agent *a = opaque;
    agent_changed(a);
    if (!replaced)
        return;
    a->lineage++;
    agent_log("installed the cluster state of another host (version %llu, quorum epoch %llu); "
              "settling what runs here against it\n",
              (unsigned long long)cl_state_version(agent_state(a)),
              (unsigned long long)cl_state_quorum_epoch(agent_state(a)));
    requests_on_replaced(a, false);
    if (a->reconciled && !agent_is_host(a))
        a->reconciled = false; /* our identity must be confirmed again */
}

static void on_replica_journal(void *opaque, const struct replica_event *ev)
{
    struct agent *a = opaque;
    state_store_event(a->store, ev, agent_state(a));
    /* Migrations a configuration change ended count now, not only once
     * the next message applies (none may come for a while). */
    if (ev->kind == REPLICA_EV_CONFIG)
        metrics_on_applied(a, NULL, 0);
}

static void on_replica_fatal(void *opaque, const char *why)
{
    struct agent *a = opaque;
    agent_log("the cluster state here can no longer be trusted: %s; leaving the group to "
              "reload it from disk and sync again (VMs keep running)\n", why);
    a->rejoin = true;
}

static const struct replica_ops replica_ops = {
    .send = on_replica_send,
    .applied = on_replica_applied,
    .membership = on_replica_membership,
    .synced = on_replica_synced,
    .installed = on_replica_installed,
    .journal = on_replica_journal,
    .fatal = on_replica_fatal,
};

/* --- corosync callbacks --- */

static void on_deliver(void *opaque, uint32_t nodeid, const void *msg, size_t len)
{
    struct agent *a = opaque;
    replica_deliver(a->replica, nodeid, msg, len);
    /* Persistence reports change no state but complete requests. */
    uint64_t stable = replica_stable_version(a->replica);
    if (stable != a->stable_seen) {
        a->stable_seen = stable;
        a->acks_moved = true;
    }
}

static void on_confchg(void *opaque, const uint32_t *members, size_t nr_members,
                       const uint32_t *left, const bool *left_node_down, size_t nr_left,
                       const uint32_t *joined, size_t nr_joined)
{
    struct agent *a = opaque;
    enum cl_leave_reason small[64];
    enum cl_leave_reason *why = nr_left <= 64 ? small : malloc(nr_left * sizeof(*why));
    if (!why) {
        on_replica_fatal(a, "out of memory passing on a membership change");
        return;
    }
    size_t down = 0;
    for (size_t i = 0; i < nr_left; i++) {
        why[i] = left_node_down[i] ? CL_LEFT_NODE : CL_LEFT_PROCESS;
        down += left_node_down[i];
    }
    agent_log("membership: %zu members (%zu joined, %zu left, %zu of them with their node)\n",
              nr_members, nr_joined, nr_left, down);
    replica_confchg(a->replica, members, nr_members, left, why, nr_left, joined, nr_joined);
    if (why != small)
        free(why);
    agent_changed(a);
}

static void on_quorum(void *opaque, bool quorate)
{
    struct agent *a = opaque;
    if (a->quorate != quorate)
        agent_log("quorum %s (votequorum)\n", quorate ? "gained" : "lost");
    a->quorate = quorate;
    agent_changed(a);
}

/* --- replica-fix: the totem ring (quorum epochs, docs/cluster-state.md) --- */
static void on_ring(void *opaque, uint64_t ring_seq, const uint32_t *nodes, size_t nr_nodes)
{
    struct agent *a = opaque;
    if (a->replica)
        replica_set_ring(a->replica, ring_seq, nodes, nr_nodes);
    if (a->ha)
        ha_set_ring(a, nodes, nr_nodes);
    agent_changed(a);
}
/* --- end replica-fix --- */

static void on_left(void *opaque, size_t nr_members);

static const struct cs_link_callbacks link_callbacks = {
    .deliver = on_deliver,
    .confchg = on_confchg,
    .quorum = on_quorum,
    .ring = on_ring,
    .left = on_left,
};

/* --- set-up --- */

static int find_host_name(struct agent *a, size_t *nr_nodes, struct tern_err *err)
{
    struct cs_node nodes[256];
    size_t nr = 0;
    if (cs_link_nodelist(a->link, nodes, 256, &nr, err) < 0)
        return tern_err_prefix(err, "reading corosync's nodelist");
    *nr_nodes = nr;
    const struct cs_node *self = NULL;
    for (size_t i = 0; i < nr; i++)
        if (nodes[i].nodeid == a->nodeid)
            self = &nodes[i];
    if (!a->cfg.migration_addr[0]) {
        /* Default: the address corosync knows this node by. */
        unsigned char tmp[16];
        if (!self || (inet_pton(AF_INET, self->addr, tmp) != 1 &&
                      inet_pton(AF_INET6, self->addr, tmp) != 1))
            return tern_err_set(err, "migration_addr is not set and corosync's ring0_addr for node "
                                     "%u is not an IP address: set migration_addr = ADDR in "
                                     "ternd.conf", a->nodeid);
        snprintf(a->cfg.migration_addr, sizeof(a->cfg.migration_addr), "%s", self->addr);
    }
    if (a->cfg.host[0]) {
        snprintf(a->host, sizeof(a->host), "%s", a->cfg.host);
        if (self && self->name[0] && strcmp(self->name, a->host) != 0)
            agent_log("note: host = %s, but corosync calls node %u '%s'\n", a->host,
                    a->nodeid, self->name);
        return 0;
    }
    if (!self || !self->name[0])
        return tern_err_set(err, "no 'host' in the config and corosync's nodelist has no name for "
                                 "node %u: set host = NAME in ternd.conf", a->nodeid);
    if (!cl_name_valid(self->name))
        return tern_err_set(err, "corosync's name for this node, '%s', is not a valid host name: "
                                 "set host = NAME in ternd.conf", self->name);
    snprintf(a->host, sizeof(a->host), "%s", self->name);
    return 0;
}


/* One ternd per node: locks on the state and run directories, taken before
 * anything else (before joining CPG), so a second one stops at once. */
static int take_lock(struct agent *a, int slot, const char *dir, struct tern_err *err)
{
    char path[PATH_MAX + 16];
    if ((size_t)snprintf(path, sizeof(path), "%s/ternd.lock", dir) >= sizeof(path))
        return tern_err_set(err, "%s is too long", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return tern_err_errno(err, errno, "cannot open the lock file %s", path);
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK)
            return tern_err_set(err, "another ternd already runs with %s (it holds %s); stop it "
                                "first", dir, path);
        return tern_err_errno(err, e, "cannot lock %s", path);
    }
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) == 0 && write(fd, pid, (size_t)n) != n) {
        /* the pid is a courtesy for the operator; the lock is what counts */
    }
    a->lock_fds[slot] = fd;
    return 0;
}

/* corosync may still be starting (a host boot, a corosync restart): wait
 * for it, up to corosync_wait seconds, saying so now and then. Only at
 * start and when rejoining, before the loop runs its clients. */
static int open_link(struct agent *a, struct tern_err *err)
{
    double start = agent_now(), said = 0;
    for (;;) {
        int rc = cs_link_open(&a->link, a->cfg.cpg_group, &link_callbacks, a, err);
        if (rc != CS_LINK_NOT_RUNNING)
            return rc;
        double waited = agent_now() - start;
        if (waited >= a->cfg.corosync_wait_s)
            return tern_err_prefix(err, "corosync did not answer within %u s (corosync_wait)",
                                   a->cfg.corosync_wait_s);
        if (said == 0 || agent_now() - said >= 10) {
            agent_log("waiting for corosync (%s); up to %u s\n", err->msg,
                      a->cfg.corosync_wait_s);
            said = agent_now();
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 250 * 1000000};
        nanosleep(&ts, NULL);
    }
}

static int open_replica(struct agent *a, struct cl_state *st, struct tern_err *err)
{
    a->replica = replica_new(a->nodeid, st, &replica_ops, a);
    if (!a->replica) {
        cl_state_free(st);
        return tern_err_set(err, "out of memory");
    }
    /* After a whole-cluster restart, wait for a majority before choosing
     * whose persisted copy wins: any majority includes a host that saw the
     * last acknowledged change. */
    replica_set_bootstrap_quorum(a->replica, a->nr_nodes / 2 + 1);
    return 0;
}

static void on_link_fd(struct loop *l, int fd, unsigned events, void *opaque);
static void on_store_fd(struct loop *l, int fd, unsigned events, void *opaque);

/* The link's fds into the loop (again after a rejoin). */
static int watch_link(struct agent *a, struct tern_err *err)
{
    struct pollfd fds[CS_LINK_NFDS];
    if (cs_link_pollfds(a->link, fds) < 0)
        return tern_err_set(err, "cannot get corosync's fds");
    for (int i = 0; i < CS_LINK_NFDS; i++)
        if (loop_add_fd(a->loop, fds[i].fd, LOOP_READ, on_link_fd, a, err) < 0)
            return -1;
    return 0;
}

static void unwatch_link(struct agent *a)
{
    struct pollfd fds[CS_LINK_NFDS];
    if (a->link && cs_link_pollfds(a->link, fds) == 0)
        for (int i = 0; i < CS_LINK_NFDS; i++)
            loop_del_fd(a->loop, fds[i].fd);
}

/* --- the loop --- */

static void on_link_fd(struct loop *l, int fd, unsigned events, void *opaque)
{
    struct agent *a = opaque;
    (void)events;
    struct pollfd fds[CS_LINK_NFDS];
    if (cs_link_pollfds(a->link, fds) < 0)
        return;
    for (int i = 0; i < CS_LINK_NFDS; i++)
        fds[i].revents = fds[i].fd == fd ? POLLIN : 0;
    struct tern_err err;
    if (cs_link_dispatch(a->link, fds, &err) < 0) {
        agent_log("corosync connection lost; ternd stops (VMs keep running): %s\n", err.msg);
        a->exit_status = 1;
        loop_stop(l);
    }
}

/* What the worker made durable goes to the replica (which tells the
 * others); a disk that fails is logged (acknowledgements wait). */
static void on_store_fd(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)l;
    (void)fd;
    (void)events;
    struct agent *a = opaque;
    uint64_t version;
    char failure[TERN_ERR_MAX];
    if (state_store_durable(a->store, &version, failure, sizeof(failure))) {
        replica_persisted(a->replica, version);
        agent_changed(a);
    }
    if (failure[0])
        agent_log("persisting the cluster state failed: %s; changes are not acknowledged until "
                  "it works again (retrying with a full snapshot)\n", failure);
}

/* An orderly stop. Without an armed watchdog: at once. With one, the
 * survivors may be counting on it: a host they lost (its node left their
 * membership) is declared fenced once its watchdog's deadline has passed,
 * and that holds only if the watchdog resets it. A ternd that disarmed it
 * and left its VMs running could see them started a second time. So the
 * group is left first: if the departure is delivered in a configuration
 * with a quorum, the quorate side saw this ternd go (its node stays: the
 * host is offline, not lost, and nobody counts on its watchdog) and it is
 * disarmed. Otherwise (cut off, alone, corosync gone, no answer within the
 * membership timeout + 2 s) it stays armed and resets this host, as the
 * others expect. A second signal stops at once, armed. */
static void stop_now(struct agent *a, bool disarm)
{
    a->disarm_ok = disarm;
    if (a->stop_timer)
        loop_del_timer(a->loop, a->stop_timer);
    a->stop_timer = 0;
    loop_stop(a->loop);
}

static void on_stop_timeout(struct loop *l, void *opaque)
{
    (void)l;
    struct agent *a = opaque;
    a->stop_timer = 0;
    agent_log("stopping: this ternd's departure was not delivered in time; the watchdog stays "
              "armed and resets this host in %u s unless a ternd feeds it again\n",
              ha_watchdog_s(a));
    stop_now(a, false);
}

static void on_left(void *opaque, size_t nr_members)
{
    struct agent *a = opaque;
    uint32_t ev = a->link ? cs_link_expected_votes(a->link) : 0;
    size_t quorum = ev / 2 + 1;
    if (ev > 0 && nr_members + 1 >= quorum) {
        agent_log("stopping: %zu other members saw this ternd leave; the watchdog is disarmed\n",
                  nr_members);
        stop_now(a, true);
        return;
    }
    agent_log("stopping: this ternd left without a quorum seeing it (%zu other members, %zu "
              "needed); the watchdog stays armed and resets this host in %u s unless a ternd "
              "feeds it again (the others count on it)\n",
              nr_members, quorum ? quorum - 1 : 0, ha_watchdog_s(a));
    stop_now(a, false);
}

static void try_leave(struct loop *l, void *opaque)
{
    struct agent *a = opaque;
    if (!a->stop_timer)
        return; /* stopped meanwhile */
    struct tern_err err;
    int rc = a->link ? cs_link_leave(a->link, &err) : -1;
    if (rc == 1 && loop_add_timer(l, 20, try_leave, a))
        return; /* corosync is busy: again in 20 ms */
    if (rc != 0) {
        agent_log("stopping: %s; the watchdog stays armed and resets this host in %u s unless a "
                  "ternd feeds it again\n",
                  rc < 0 && a->link ? err.msg : "cannot leave the corosync group",
                  ha_watchdog_s(a));
        stop_now(a, false);
    }
}

static void on_signal(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)events;
    struct agent *a = opaque;
    struct signalfd_siginfo si;
    if (read(fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
        return;
    if (a->stopping) {
        agent_log("signal %u again: stopping now, the watchdog armed\n", si.ssi_signo);
        stop_now(a, false);
        return;
    }
    a->stopping = true;
    unsigned wd = ha_watchdog_s(a);
    if (!wd) {
        agent_log("signal %u: stopping (VMs keep running)\n", si.ssi_signo);
        stop_now(a, true);
        return;
    }
    if (!a->link) {
        agent_log("signal %u: stopping (VMs keep running); corosync is not connected: the "
                  "watchdog stays armed and resets this host in %u s unless a ternd feeds it "
                  "again\n",
                  si.ssi_signo, wd);
        stop_now(a, false);
        return;
    }
    agent_log("signal %u: stopping (VMs keep running): leaving the group first, to disarm the "
              "watchdog only if a quorum sees this ternd go\n",
              si.ssi_signo);
    uint32_t mt = cs_link_membership_timeout_ms(a->link);
    a->stop_timer = loop_add_timer(l, (int64_t)(mt ? mt : 3000) + 2000, on_stop_timeout, a);
    if (!a->stop_timer) {
        stop_now(a, false);
        return;
    }
    try_leave(l, a);
}

/* The replica cannot be trusted any more: leave the group, reload the
 * persisted copy and join again as an unsynced member (the others' state
 * wins). VMs keep running; what runs here is settled once synced. */
static int rejoin(struct agent *a, struct tern_err *err)
{
    a->rejoin = false;
    unwatch_link(a);
    cs_link_close(a->link);
    a->link = NULL;
    replica_free(a->replica);
    a->replica = NULL;
    struct cl_state *st = cl_state_new();
    if (!st)
        return tern_err_set(err, "out of memory");
    if (state_store_reload(a->store, st, err) < 0) {
        cl_state_free(st);
        return tern_err_prefix(err, "reloading the persisted cluster state to rejoin");
    }
    if (open_replica(a, st, err) < 0)
        return -1;
    a->lineage++;
    requests_on_replaced(a, true);
    a->reconciled = false;
    a->announced = false;
    a->announce_req = 0;
    if (open_link(a, err) < 0)
        return tern_err_prefix(err, "rejoining the cluster");
    if (watch_link(a, err) < 0)
        return -1;
    a->quorate = cs_link_quorate(a->link);
    agent_log("rejoined the cluster group; waiting for the cluster state\n");
    return 0;
}

/* A sync round that does not end (an offer or the state never came): give
 * up on it, as the replica does when its queue overflows. */
static void check_round(struct agent *a)
{
    if (!replica_round_open(a->replica)) {
        a->round_seq = 0;
        return;
    }
    uint64_t seq = replica_round_seq(a->replica);
    double now = agent_now();
    if (seq != a->round_seq) {
        a->round_seq = seq;
        a->round_since = now;
    } else if (now - a->round_since > AGENT_SYNC_ROUND_TIMEOUT_S) {
        agent_log("the sync round has been open for %.0f s; leaving the group to start over\n",
                  now - a->round_since);
        a->rejoin = true;
        a->round_seq = 0;
    }
}

static void on_tick(struct loop *l, void *opaque)
{
    struct agent *a = opaque;
    if (replica_ready(a->replica) && !a->announced)
        announce(a);
    replica_flush(a->replica);
    check_round(a);
    agent_changed(a); /* deadlines of requests, level-triggered settling */
    loop_add_timer(l, AGENT_TICK_MS, on_tick, a);
}

/* After every round of events: settle what runs here against the state,
 * complete what requests can complete. */
static void before_sleep(struct loop *l, void *opaque)
{
    struct agent *a = opaque;
    if (a->rejoin) {
        struct tern_err err;
        if (rejoin(a, &err) < 0) {
            agent_log("%s; ternd stops (VMs keep running)\n", err.msg);
            a->exit_status = 1;
            loop_stop(l);
            return;
        }
    }
    if (!a->dirty && !a->acks_moved)
        return;
    track_quorum(a);
    bool reconcile = a->dirty && a->reconciled;
    a->dirty = a->acks_moved = false;
    if (reconcile)
        local_reconcile(a, false);
    if (a->reconciled) {
        ha_reconcile(a);
        fence_monitor_reconcile(a);
    }
    requests_poll(a);
}

int agent_init(struct agent *a, const char *config_path, struct tern_err *err)
{
    memset(a, 0, sizeof(*a));
    a->lock_fds[0] = a->lock_fds[1] = -1;
    a->signal_fd = -1;
    /* Blocked before any thread starts (threads inherit the mask): a
     * SIGTERM must reach the loop's signalfd (an orderly stop), never a
     * thread that would take the default action and end ternd at once. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
        return tern_err_errno(err, errno, "blocking signals");
    snprintf(a->config_path, sizeof(a->config_path), "%s", config_path);
    if (ternd_config_load(&a->cfg, config_path, err) < 0)
        return -1;
    if (take_lock(a, 0, a->cfg.state_dir, err) < 0 || take_lock(a, 1, a->cfg.run_dir, err) < 0)
        return -1;
    snprintf(a->env.vmm_path, sizeof(a->env.vmm_path), "%s", a->cfg.vmm_path);
    snprintf(a->env.run_dir, sizeof(a->env.run_dir), "%s", a->cfg.run_dir);
    snprintf(a->env.tls_dir, sizeof(a->env.tls_dir), "%s", a->cfg.tls_dir);
    a->env.cgroup_dir[0] = '\0';
    if (a->cfg.use_cgroups) {
        size_t len = sizeof(a->env.cgroup_dir);
        if ((a->cfg.cgroup_delegated ? cgroup_enter_delegated(a->env.cgroup_dir, len, err)
                                     : cgroup_of_pid(0, a->env.cgroup_dir, len, err)) < 0)
            return tern_err_prefix(err, "setting up the VMs' cgroups (or set cgroups = no)");
    }
    /* Request ids must never repeat, also across restarts: the state keeps
     * the last one applied from each node. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    a->next_req = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    if (loop_new(&a->loop, err) < 0)
        return -1;
    a->outq = calloc(1, sizeof(*a->outq));
    if (!a->outq)
        return tern_err_set(err, "out of memory");
    if (requests_new(a, err) < 0 || local_new(a, err) < 0 || metrics_open(a, err) < 0 ||
        ha_new(a, err) < 0 || fence_monitor_new(a, err) < 0)
        return -1;

    struct cl_state *st = cl_state_new();
    if (!st)
        return tern_err_set(err, "out of memory");
    int loaded = 0;
    if (state_store_open(&a->store, a->cfg.state_dir, st, &loaded, err) < 0) {
        cl_state_free(st);
        return tern_err_prefix(err, "loading the persisted cluster state");
    }
    if (open_link(a, err) < 0) {
        cl_state_free(st);
        return -1;
    }
    a->nodeid = cs_link_local_nodeid(a->link);
    a->quorate = cs_link_quorate(a->link);
    if (find_host_name(a, &a->nr_nodes, err) < 0) {
        cl_state_free(st);
        return -1;
    }
    if (open_replica(a, st, err) < 0)
        return -1;

    a->signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (a->signal_fd < 0)
        return tern_err_errno(err, errno, "signalfd");
    signal(SIGPIPE, SIG_IGN);
    if (loop_add_fd(a->loop, a->signal_fd, LOOP_READ, on_signal, a, err) < 0 ||
        loop_add_fd(a->loop, state_store_fd(a->store), LOOP_READ, on_store_fd, a, err) < 0 ||
        watch_link(a, err) < 0)
        return -1;
    if (api_open(a, err) < 0)
        return -1;
    local_reattach(a);
    loop_set_before_sleep(a->loop, before_sleep, a);
    if (!loop_add_timer(a->loop, AGENT_TICK_MS, on_tick, a))
        return tern_err_set(err, "out of memory");
    agent_log("%s (node %u) up; control socket %s; state in %s (%s)\n", a->host, a->nodeid,
              a->cfg.control_socket, a->cfg.state_dir, loaded ? "loaded" : "new");
    return 0;
}

int agent_run(struct agent *a, struct tern_err *err)
{
    int rc = loop_run(a->loop, err);
    if (rc == 0 && a->exit_status == 78)
        rc = tern_err_set(err, "stopped: this node cannot act as host '%s'", a->host);
    else if (rc == 0 && a->exit_status)
        rc = tern_err_set(err, "stopped (see the lines above)");
    return rc;
}

void agent_destroy(struct agent *a)
{
    if (a->loop) {
        api_close(a);
        metrics_close(a);
        /* An orderly stop seen by a quorum disarms the watchdog. */
        ha_free(a, a->exit_status == 0 && a->disarm_ok);
        fence_monitor_free(a);
    }
    if (a->local)
        local_free(a);
    if (a->requests)
        requests_free(a);
    unwatch_link(a);
    if (a->link)
        cs_link_close(a->link);
    if (a->replica)
        replica_free(a->replica);
    state_store_close(a->store); /* writes what is queued */
    if (a->outq) {
        for (struct outq_item *it = a->outq->head; it;) {
            struct outq_item *n = it->next;
            free(it->text);
            free(it);
            it = n;
        }
        free(a->outq);
    }
    if (a->signal_fd >= 0)
        close(a->signal_fd);
    loop_free(a->loop);
    for (int i = 0; i < 2; i++)
        if (a->lock_fds[i] >= 0)
            close(a->lock_fds[i]);
}
