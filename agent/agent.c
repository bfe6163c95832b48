/* ternd's event loop and its wiring to corosync and the replicated state. */
#include "agent.h"
#include "cgroup.h"
#include "../common/text.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <poll.h>
#include <signal.h>
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

uint64_t agent_send(struct agent *a, json_t *msg, struct tern_err *err)
{
    uint64_t req = ++a->next_req;
    char *text = replica_encode(a->replica, msg, req, err);
    if (!text)
        return 0;
    int rc = cs_link_send(a->link, text, strlen(text), err);
    free(text);
    if (rc < 0) {
        tern_err_prefix(err, "sending to the cluster");
        return 0;
    }
    return req;
}

/* --- replica callbacks --- */

static int on_replica_send(void *opaque, const void *data, size_t len)
{
    struct agent *a = opaque;
    struct tern_err err;
    int rc = cs_link_send(a->link, data, len, &err);
    if (rc < 0)
        agent_log("%s (will retry)\n", err.msg);
    return rc;
}

static const char *msg_type(const json_t *msg)
{
    const char *t = msg ? json_string_value(json_object_get(msg, "type")) : NULL;
    return t ? t : "?";
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
        a->stop_requested = true;
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
    const json_t *o = msg ? json_object_get(msg, "origin") : NULL;
    bool ours = o && (uint32_t)json_integer_value(json_object_get(o, "node")) == a->nodeid;
    if (rc < 0 && !strcmp(msg_type(msg), "migration_progress")) {
        /* Progress that crossed the migration's end: nothing to say. */
    } else if (rc < 0) {
        /* Refusals of our own requests go back to the client; others are
         * only worth a line in the log. */
        const struct cl_host *h = cl_state_host_by_nodeid(agent_state(a), sender);
        agent_log("refused %s from %s: [%s] %s\n", msg_type(msg), h ? h->name : "?",
                  tern_err_code_name(err ? err->code : 0), err ? err->msg : "?");
    }
    if (ours && a->announce_req &&
        (uint64_t)json_integer_value(json_object_get(o, "req")) == a->announce_req) {
        a->announce_req = 0;
        on_own_announce(a, rc, err);
    }
    if (rc == 0 && msg)
        local_on_applied(a, msg);
    requests_on_applied(a, sender, msg, rc, err);
    requests_poll(a);
}

static void announce(struct agent *a)
{
    uint32_t expected = cs_link_expected_votes(a->link);
    if (expected == 0)
        expected = (uint32_t)a->nr_nodes; /* votequorum did not say: one vote per node */
    json_t *m = json_pack("{s:s, s:s, s:I, s:I, s:s, s:I}", "type", "host_announce", "host",
                          a->host, "mem_mib", (json_int_t)a->cfg.mem_mib, "vcpus",
                          (json_int_t)a->cfg.vcpus, "migration_addr", a->cfg.migration_addr,
                          "expected_votes", (json_int_t)expected);
    struct tern_err err;
    uint64_t req = agent_send(a, m, &err);
    if (req) {
        a->announced = true;
        a->announce_req = req;
    } else {
        agent_log("announcing this host: %s (will retry)\n", err.msg);
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
    requests_poll(a);
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
}

static void on_replica_installed(void *opaque, bool replaced)
{
    struct agent *a = opaque;
    if (!replaced)
        return;
    a->lineage++;
    agent_log("installed the cluster state of another host (version %llu, quorum epoch %llu); "
              "settling what runs here against it\n",
              (unsigned long long)cl_state_version(agent_state(a)),
              (unsigned long long)cl_state_quorum_epoch(agent_state(a)));
    requests_on_replaced(a, false);
    if (a->reconciled) {
        if (agent_is_host(a))
            local_reconcile(a, false);
        else
            a->reconciled = false; /* our identity must be confirmed again */
    }
}

static void on_replica_journal(void *opaque, const struct replica_event *ev)
{
    struct agent *a = opaque;
    state_store_event(a->store, ev, agent_state(a));
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
}

static void on_quorum(void *opaque, bool quorate)
{
    struct agent *a = opaque;
    if (a->quorate != quorate)
        agent_log("quorum %s (votequorum)\n", quorate ? "gained" : "lost");
    a->quorate = quorate;
}

static const struct cs_link_callbacks link_callbacks = {
    .deliver = on_deliver,
    .confchg = on_confchg,
    .quorum = on_quorum,
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

/* corosync may still be starting (a host boot, a corosync restart): wait
 * for it, up to corosync_wait seconds, saying so now and then. */
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

int agent_init(struct agent *a, const char *config_path, struct tern_err *err)
{
    memset(a, 0, sizeof(*a));
    a->listen_fd = -1;
    a->lock_fds[0] = a->lock_fds[1] = -1;
    snprintf(a->config_path, sizeof(a->config_path), "%s", config_path);
    for (int i = 0; i < AGENT_MAX_CLIENTS; i++)
        a->clients[i].fd = -1;
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
    if (api_open(a, err) < 0)
        return -1;
    local_reattach(a);
    agent_log("%s (node %u) up; control socket %s; state in %s (%s)\n", a->host, a->nodeid,
              a->cfg.control_socket, a->cfg.state_dir, loaded ? "loaded" : "new");
    return 0;
}

void agent_destroy(struct agent *a)
{
    api_close(a);
    local_stop_all_tracking(a);
    if (a->link)
        cs_link_close(a->link);
    if (a->replica)
        replica_free(a->replica);
    state_store_close(a->store); /* writes what is queued */
    for (int i = 0; i < 2; i++)
        if (a->lock_fds[i] >= 0)
            close(a->lock_fds[i]);
}

/* The replica cannot be trusted any more: leave the group, reload the
 * persisted copy and join again as an unsynced member (the others' state
 * wins). VMs keep running; what runs here is settled once synced. */
static int rejoin(struct agent *a, struct tern_err *err)
{
    a->rejoin = false;
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
    a->quorate = cs_link_quorate(a->link);
    agent_log("rejoined the cluster group; waiting for the cluster state\n");
    return 0;
}

/* What the worker made durable goes to the replica (which tells the
 * others); a disk that fails is logged (acknowledgements wait). */
static void store_progress(struct agent *a)
{
    uint64_t version;
    char failure[TERN_ERR_MAX];
    if (state_store_durable(a->store, &version, failure, sizeof(failure)))
        replica_persisted(a->replica, version);
    if (failure[0])
        agent_log("persisting the cluster state failed: %s; changes are not acknowledged until "
                  "it works again (retrying with a full snapshot)\n", failure);
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

int agent_run(struct agent *a, struct tern_err *err)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
        return tern_err_errno(err, errno, "blocking signals");
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        return tern_err_errno(err, errno, "signalfd");
    signal(SIGPIPE, SIG_IGN);

    double next_tick = agent_now();
    int rc = 0;
    while (!a->stop_requested) {
        if (a->rejoin && rejoin(a, err) < 0) {
            rc = -1;
            break;
        }
        struct pollfd fds[2 + CS_LINK_NFDS + 1 + AGENT_MAX_CLIENTS + 2 * AGENT_MAX_VMS];
        int slots[2 * AGENT_MAX_VMS];
        int n = 0;
        fds[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
        fds[n++] = (struct pollfd){.fd = state_store_fd(a->store), .events = POLLIN};
        int link_first = n;
        if (cs_link_pollfds(a->link, &fds[n]) < 0) {
            rc = tern_err_set(err, "corosync connection lost; ternd stops (VMs keep running)");
            break;
        }
        n += CS_LINK_NFDS;
        int api_first = n;
        int api_n = api_pollfds(a, &fds[n], 1 + AGENT_MAX_CLIENTS);
        n += api_n;
        int vm_first = n;
        int vm_n = local_pollfds(a, &fds[n], 2 * AGENT_MAX_VMS, slots);
        n += vm_n;

        double now = agent_now();
        int timeout = (int)((next_tick - now) * 1000.0);
        if (timeout < 0)
            timeout = 0;
        int pr = poll(fds, (nfds_t)n, timeout);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            rc = tern_err_errno(err, errno, "poll");
            break;
        }
        if (fds[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                agent_log("signal %u: stopping (VMs keep running)\n", si.ssi_signo);
                a->stop_requested = true;
            }
        }
        if (fds[1].revents & POLLIN)
            store_progress(a);
        if (cs_link_dispatch(a->link, &fds[link_first], err) < 0) {
            rc = tern_err_prefix(err, "corosync connection lost; ternd stops (VMs keep running)");
            break;
        }
        if (a->rejoin)
            continue;
        api_handle(a, &fds[api_first], api_n);
        local_handle(a, &fds[vm_first], vm_n, slots);
        /* A migration that just began must not wait for a slow tick. */
        if (local_migrating(a) && next_tick > agent_now() + AGENT_MIGRATION_TICK_MS / 1000.0)
            next_tick = agent_now() + AGENT_MIGRATION_TICK_MS / 1000.0;
        if (a->tick_now) {
            a->tick_now = false;
            next_tick = agent_now();
        }
        requests_poll(a); /* acknowledgements follow the others' reports */

        if (agent_now() >= next_tick) {
            int next_ms = AGENT_TICK_MS;
            if (replica_ready(a->replica) && !a->announced)
                announce(a);
            replica_flush(a->replica);
            check_round(a);
            next_ms = local_tick(a);
            requests_poll(a);
            next_tick = agent_now() + next_ms / 1000.0;
        }
    }
    close(sfd);
    if (rc == 0 && a->exit_status)
        rc = tern_err_set(err, "stopped: this node cannot act as host '%s'", a->host);
    return rc;
}
