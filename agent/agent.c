/* ternd's event loop and its wiring to corosync and the replicated state. */
#include "agent.h"
#include "cgroup.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    char line[TERN_ERR_MAX * 2];
    int n = snprintf(line, sizeof(line), "ternd: %02d:%02d:%02d.%03ld ", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    fputs(line, stderr); /* one write per line: stderr is line-buffered */
}

struct cl_state *agent_state(struct agent *a)
{
    return replica_state(a->replica);
}

bool agent_can_change(struct agent *a, struct tern_err *err)
{
    if (!a->quorate) {
        tern_err_set(err, "this host (%s) is not in a quorate partition of the cluster; changes "
                          "are refused until quorum returns", a->host);
        return false;
    }
    if (!replica_synced(a->replica)) {
        tern_err_set(err, "this host (%s) has not yet received the cluster state; try again in a "
                          "moment", a->host);
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

static int on_replica_send(void *opaque, const json_t *msg)
{
    struct agent *a = opaque;
    char *text = json_dumps(msg, JSON_COMPACT);
    if (!text)
        return -1;
    struct tern_err err;
    int rc = cs_link_send(a->link, text, strlen(text), &err);
    free(text);
    if (rc < 0)
        agent_log("%s (will retry)\n", err.msg);
    return rc;
}

static const char *msg_type(const json_t *msg)
{
    const char *t = msg ? json_string_value(json_object_get(msg, "type")) : NULL;
    return t ? t : "?";
}

static void on_replica_applied(void *opaque, uint32_t sender, const json_t *msg, int rc,
                               const struct tern_err *err)
{
    struct agent *a = opaque;
    if (rc < 0 && !strcmp(msg_type(msg), "migration_progress")) {
        /* Progress that crossed the migration's end: nothing to say. */
    } else if (rc < 0) {
        /* Refusals of our own requests go back to the client; others are
         * only worth a line in the log. */
        const struct cl_host *h = cl_state_host_by_nodeid(agent_state(a), sender);
        agent_log("refused %s from %s: [%s] %s\n", msg_type(msg), h ? h->name : "?",
                  tern_err_code_name(err ? err->code : 0), err ? err->msg : "?");
    } else if (strcmp(msg_type(msg), "migration_progress") != 0) {
        a->state_dirty = true;
    }
    if (rc == 0 && msg)
        local_on_applied(a, msg);
    requests_on_applied(a, sender, msg, rc, err);
    requests_poll(a);
}

static void announce(struct agent *a)
{
    json_t *m = json_pack("{s:s, s:s, s:I, s:I, s:s}", "type", "host_announce", "host", a->host,
                          "mem_mib", (json_int_t)a->cfg.mem_mib, "vcpus",
                          (json_int_t)a->cfg.vcpus, "migration_addr", a->cfg.migration_addr);
    struct tern_err err;
    if (agent_send(a, m, &err))
        a->announced = true;
    else
        agent_log("announcing this host: %s (will retry)\n", err.msg);
    json_decref(m);
}

static void on_replica_membership(void *opaque)
{
    struct agent *a = opaque;
    a->state_dirty = true;
    /* Hosts are online while their agent is in the group. Re-announce
     * after every change so our own entry (capacity, address) is right
     * after merges too. */
    if (replica_synced(a->replica))
        a->announced = false;
    requests_poll(a);
}

static void on_replica_synced(void *opaque)
{
    struct agent *a = opaque;
    agent_log("%s has the cluster state (version %llu)\n", a->host,
            (unsigned long long)cl_state_version(agent_state(a)));
    a->announced = false;
    a->state_dirty = true;
    /* Settle the re-attached VMs against the agreed state now, before the
     * replica applies the messages queued behind the snapshot: those (a
     * migration to this host, say) are acted on as they apply, and must
     * not be mistaken for leftovers of an earlier life. */
    if (!a->reconciled) {
        a->reconciled = true;
        local_reconcile(a);
    }
}

static const struct replica_ops replica_ops = {
    .send = on_replica_send,
    .applied = on_replica_applied,
    .membership = on_replica_membership,
    .synced = on_replica_synced,
};

/* --- corosync callbacks --- */

static void on_deliver(void *opaque, uint32_t nodeid, const void *msg, size_t len)
{
    struct agent *a = opaque;
    replica_deliver(a->replica, nodeid, msg, len);
}

static void on_confchg(void *opaque, const uint32_t *members, size_t nr_members,
                       const uint32_t *left, size_t nr_left, const uint32_t *joined,
                       size_t nr_joined)
{
    struct agent *a = opaque;
    agent_log("membership: %zu members (%zu joined, %zu left)\n", nr_members,
            nr_joined, nr_left);
    replica_confchg(a->replica, members, nr_members, left, nr_left, joined, nr_joined);
}

static void on_quorum(void *opaque, bool quorate)
{
    struct agent *a = opaque;
    if (a->quorate != quorate)
        agent_log("quorum %s\n", quorate ? "gained" : "lost");
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

int agent_init(struct agent *a, const char *config_path, struct tern_err *err)
{
    memset(a, 0, sizeof(*a));
    a->listen_fd = -1;
    for (int i = 0; i < AGENT_MAX_CLIENTS; i++)
        a->clients[i].fd = -1;
    if (ternd_config_load(&a->cfg, config_path, err) < 0)
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
    if (snprintf(a->state_path, sizeof(a->state_path), "%s/cluster-state.json",
                 a->cfg.state_dir) >= (int)sizeof(a->state_path))
        return tern_err_set(err, "state_dir is too long");

    struct cl_state *st = cl_state_new();
    if (!st)
        return tern_err_set(err, "out of memory");
    int lr = cl_state_load(st, a->state_path, err);
    if (lr < 0) {
        cl_state_free(st);
        return tern_err_prefix(err, "loading the persisted cluster state (move the file away to "
                                    "start from what the other hosts have)");
    }
    if (cs_link_open(&a->link, a->cfg.cpg_group, &link_callbacks, a, err) < 0) {
        cl_state_free(st);
        return -1;
    }
    a->nodeid = cs_link_local_nodeid(a->link);
    a->quorate = cs_link_quorate(a->link);
    size_t nr_nodes = 0;
    if (find_host_name(a, &nr_nodes, err) < 0) {
        cl_state_free(st);
        return -1;
    }
    a->replica = replica_new(a->nodeid, st, &replica_ops, a);
    if (!a->replica) {
        cl_state_free(st);
        return tern_err_set(err, "out of memory");
    }
    /* After a whole-cluster restart, wait for a majority before choosing
     * whose persisted copy wins: any majority includes a host that saw the
     * last change. */
    replica_set_bootstrap_quorum(a->replica, nr_nodes / 2 + 1);
    if (api_open(a, err) < 0)
        return -1;
    local_reattach(a);
    agent_log("%s (node %u) up; control socket %s; state %s (%s)\n", a->host,
            a->nodeid, a->cfg.control_socket, a->state_path,
            lr == 1 ? "new" : "loaded");
    return 0;
}

void agent_destroy(struct agent *a)
{
    api_close(a);
    local_stop_all_tracking(a);
    if (a->replica)
        replica_free(a->replica);
    if (a->link)
        cs_link_close(a->link);
}

/* Persists the replica when it changed, at most every STATE_SAVE_INTERVAL_S
 * (each save writes the whole state and fsyncs: per message that would be
 * quadratic in the number of VMs), and always when `now` is set (exit). A
 * host that restarts takes the current state from the members anyway; the
 * file matters when the whole cluster restarts. */
#define STATE_SAVE_INTERVAL_S 0.1

static void save_state(struct agent *a, bool now)
{
    if (!a->state_dirty || !replica_synced(a->replica))
        return;
    double t = agent_now();
    if (!now && t - a->last_save < STATE_SAVE_INTERVAL_S)
        return;
    a->last_save = t;
    struct tern_err err;
    if (cl_state_save(agent_state(a), a->state_path, &err) < 0)
        agent_log("persisting the cluster state: %s\n", err.msg);
    else
        a->state_dirty = false;
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
        struct pollfd fds[1 + CS_LINK_NFDS + 1 + AGENT_MAX_CLIENTS + 2 * AGENT_MAX_VMS];
        int slots[2 * AGENT_MAX_VMS];
        int n = 0;
        fds[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
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
        if (cs_link_dispatch(a->link, &fds[link_first], err) < 0) {
            rc = tern_err_prefix(err, "corosync connection lost; ternd stops (VMs keep running)");
            break;
        }
        api_handle(a, &fds[api_first], api_n);
        local_handle(a, &fds[vm_first], vm_n, slots);
        /* A migration that just began must not wait for a slow tick. */
        if (local_migrating(a) && next_tick > agent_now() + AGENT_MIGRATION_TICK_MS / 1000.0)
            next_tick = agent_now() + AGENT_MIGRATION_TICK_MS / 1000.0;
        if (a->tick_now) {
            a->tick_now = false;
            next_tick = agent_now();
        }

        if (agent_now() >= next_tick) {
            int next_ms = AGENT_TICK_MS;
            if (replica_synced(a->replica) && !a->announced)
                announce(a);
            replica_flush(a->replica);
            next_ms = local_tick(a);
            requests_poll(a);
            next_tick = agent_now() + next_ms / 1000.0;
        }
        save_state(a, false);
    }
    save_state(a, true);
    close(sfd);
    return rc;
}
