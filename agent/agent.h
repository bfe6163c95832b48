/* ternd's internals, shared by the agent's modules (not a public API).
 *
 * One thread, one event loop (common/loop.h): corosync's fds, the state
 * writer's fd, the control socket and its clients, each VM process's pidfd
 * and control connections, timers. Nothing in it blocks: VM processes are
 * started, asked and stopped asynchronously (vm_process.h, vmm_rpc.h),
 * clients get bounded output buffers (api.c), messages corosync cannot take
 * right now wait in a queue, the disk is written by a thread
 * (state_store.h).
 *
 * Every change to the cluster goes out as a CPG message and takes effect
 * when it comes back in agreed order (the replica applies it). What this
 * host does about the state is level-triggered: after every batch of
 * applied messages, configuration change or state install, local_reconcile
 * compares what runs here with what the state says and acts on the
 * difference (local_vms.c). Requests from clients (api.c, requests.c) wait
 * for their message to come back applied and stored on a majority, or for
 * the work it started.
 *
 * docs/ternd.md describes the agent; docs/walkthrough.md follows one
 * `vm.migrate` through these functions. */
#ifndef TERN_AGENT_AGENT_H
#define TERN_AGENT_AGENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/loop.h"
#include "../ha/cluster_state.h"
#include "../ha/replica.h"
#include "config.h"
#include "corosync_link.h"
#include "state_store.h"
#include "vm_process.h"

/* A sync round open longer than this is given up: leave and rejoin. */
#define AGENT_SYNC_ROUND_TIMEOUT_S 60.0
#define AGENT_TICK_MS 200

struct api;
struct local;
struct requests;
struct outq;
struct metrics;

struct agent {
    struct ternd_config cfg;
    char config_path[PATH_MAX];
    struct vm_process_env env;
    char host[CL_NAME_MAX];
    uint32_t nodeid;
    size_t nr_nodes;         /* corosync's nodelist */
    bool quorate;            /* votequorum, as this node sees it */
    /* Since when this host is out of quorum (0 while quorate, and before it
     * was quorate once: a ternd that starts in a minority stops nothing). */
    double quorum_lost_at;
    bool was_quorate;
    bool announced;
    uint64_t announce_req;
    bool reconciled;         /* this host's identity is confirmed and what runs here settled */
    int exit_status;         /* when stopping on its own: 0, or why */
    /* An orderly stop with an armed watchdog: the group is left first, and
     * the watchdog disarmed only if a quorum saw this ternd go (on_signal). */
    bool stopping;
    bool disarm_ok;
    uint64_t stop_timer;
    int lock_fds[2];         /* state_dir and run_dir locks */
    int signal_fd;
    struct loop *loop;
    struct cs_link *link;
    struct replica *replica;
    struct state_store *store;
    uint64_t lineage;        /* changes whenever the local state was replaced */
    bool rejoin;             /* the replica failed: leave, reload, rejoin */
    uint64_t round_seq;      /* the sync round being timed */
    double round_since;
    bool dirty;              /* the state changed: reconcile before sleeping */
    bool acks_moved;         /* a majority stored more: requests may be answered */
    uint64_t stable_seen;    /* replica_stable_version when last looked at */
    uint64_t next_req;
    struct outq *outq;       /* state messages corosync could not take yet */
    struct api *api;
    struct local *local;
    struct requests *requests;
    struct metrics *metrics; /* NULL while metrics are off (metrics.c) */
    struct ha *ha;           /* ha.c */
    struct fence_monitor *fence_monitor; /* fence_monitor.c */
};

/* agent.c: set-up (config, locks, corosync, persisted state, control
 * socket, re-attaching VM processes), the loop, and tear-down (VMs keep
 * running). */
int agent_init(struct agent *a, const char *config_path, struct tern_err *err);
int agent_run(struct agent *a, struct tern_err *err);
void agent_destroy(struct agent *a);

double agent_now(void);
/* A line in ternd's log (stderr), with the wall-clock time. */
void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Broadcasts a change a client asked for (adds the origin). Refused unless
 * agent_can_change. Returns the request id, or 0 with err set. */
uint64_t agent_send(struct agent *a, json_t *msg, struct tern_err *err);
/* Broadcasts what this host reports or does on its own (vm_report, the
 * steps of a migration, its announce): needs the replica in step, not
 * quorum (a minority still winds down; the state refuses what needs
 * quorum). Returns the request id, or 0 (logged). */
uint64_t agent_report(struct agent *a, json_t *msg);
/* True when this host may originate changes (in step with the cluster,
 * the cluster's configuration quorate, and corosync quorate here too). */
bool agent_can_change(struct agent *a, struct tern_err *err);
struct cl_state *agent_state(struct agent *a);
/* The state names this node as host `a->host` (its announce was applied). */
bool agent_is_host(struct agent *a);
/* This host has been out of quorum for more than `s` seconds (after it
 * was quorate): its HA VMs must stop (design.md invariant 4). */
bool agent_out_of_quorum_for(struct agent *a, double s);
/* How long out of quorum before this host kills its HA VMs: well inside
 * the self-fence deadline survivors wait for (2 x watchdog_timeout + 1 s). */
#define LOCAL_HA_SELF_STOP_S 1.0
/* Something changed that local_reconcile and requests_poll should see
 * (they run before the loop sleeps). */
void agent_changed(struct agent *a);

/* api.c: the control socket. Every client has an input buffer (one
 * request line at most AGENT_MAX_LINE) and an output buffer the loop
 * drains as the client reads; a client that does not read stops being
 * read from, and is dropped when it stays stuck. */
#define AGENT_MAX_LINE (1u << 20)
#define AGENT_MAX_CLIENTS 256
#define AGENT_MAX_INFLIGHT 64       /* requests waiting on one connection */
int api_open(struct agent *a, struct tern_err *err);
void api_close(struct agent *a);
/* Queues one JSON line to a client (if it is still the same client). */
void api_send(struct agent *a, int client, uint64_t gen, json_t *obj);
/* The final reply of one request: also frees its in-flight place. */
void api_reply_ok(struct agent *a, int client, uint64_t gen, json_t *result);
/* The same for a reply made whole by the caller (an error that carries a
 * result too: a failed evacuation's). */
void api_reply(struct agent *a, int client, uint64_t gen, json_t *reply);
void api_reply_err(struct agent *a, int client, uint64_t gen, const char *code, const char *fmt,
                   ...) __attribute__((format(printf, 5, 6)));
/* Counters for status and tests. */
struct api_stats {
    unsigned clients;
    uint64_t dropped_stuck, dropped_idle, refused_full;
};
struct api_stats api_stats(struct agent *a);

/* ha.c: fencing as the cluster state asks it of this host, and the
 * watchdog. ha_reconcile runs before the loop sleeps (level-triggered). */
int ha_new(struct agent *a, struct tern_err *err);
/* disarm: an orderly stop (the watchdog stops counting). */
void ha_free(struct agent *a, bool disarm);
void ha_reconcile(struct agent *a);
/* corosync's ring changed (its nodes): nodes back in it are no longer
 * counted as away (host_down: an offline host whose node is not in the
 * ring, which the replica keeps, is lost after host_down_after). */
void ha_set_ring(struct agent *a, const uint32_t *nodes, size_t n);
/* The watchdog timeout this host announces: its armed watchdog's, else 0. */
unsigned ha_watchdog_s(struct agent *a);
/* When this agent first saw `host` being fenced (agent_now), 0 if never. */
double ha_lost_seen(struct agent *a, const char *host);

/* fence_monitor.c: as the host that would fence others, `monitor` on
 * their fence devices every fence_monitor_interval; the answers go to the
 * state (host_fence_check) when they change. Runs before the loop sleeps. */
int fence_monitor_new(struct agent *a, struct tern_err *err);
void fence_monitor_free(struct agent *a);
void fence_monitor_reconcile(struct agent *a);

/* requests.c: one request from a client. */
int requests_new(struct agent *a, struct tern_err *err);
void requests_free(struct agent *a);
void requests_handle(struct agent *a, int client, uint64_t gen, json_t *req);
/* A state message was applied (or refused): completes pending requests. */
void requests_on_applied(struct agent *a, uint32_t sender, const json_t *msg, int rc,
                         const struct tern_err *err);
/* Pending requests whose condition holds now (stored on a majority, VM
 * running, migration finished...) complete. */
void requests_poll(struct agent *a);
/* The local state was replaced (merge, or `rejoined` after the replica
 * failed): pending changes that it no longer holds are answered as not
 * acknowledged; after a rejoin, so are those whose fate is unknown. */
void requests_on_replaced(struct agent *a, bool rejoined);

/* metrics.c: Prometheus metrics over HTTP on metrics_addr (off when it is
 * not set; docs/ternd.md "Metrics"), served from the loop by libmicrohttpd
 * without threads of its own. Gauges come from the replica at scrape time;
 * counters and histograms count since this ternd started. Every function
 * is called on the loop's thread and is a no-op while metrics are off. */
int metrics_open(struct agent *a, struct tern_err *err);
void metrics_close(struct agent *a);
/* A state message applied here (rc 0) or refused, or (msg NULL) a
 * configuration applied: counts migrations that ended (migration_done,
 * migration_abort, and those a membership change or a VM report ended),
 * evacuations (host_mode maintenance). */
void metrics_on_applied(struct agent *a, const json_t *msg, int rc);
/* A fencing attempt this host ran, and its result. */
void metrics_count_fence(struct agent *a, bool ok);
/* A failover this host ran: from the host lost to its HA VMs placed. */
void metrics_observe_failover(struct agent *a, double seconds);
/* An HA restart placed on this host. */
void metrics_count_vm_restart(struct agent *a);

/* local_vms.c: what this host runs, settled against the state. */
int local_new(struct agent *a, struct tern_err *err);
void local_free(struct agent *a); /* ternd exits: VMs keep running; only our handles go */
void local_reattach(struct agent *a); /* at start, before the first sync */
/* Level-triggered: makes what runs here match the state (starts, stops,
 * kills, both ends of migrations, reports). `at_start`: the first time
 * after ternd started (this host's migrations that its restart cut are
 * ended). Never blocks; idempotent. */
void local_reconcile(struct agent *a, bool at_start);
/* A configuration change: what was broadcast may be lost; say it again. */
void local_on_membership(struct agent *a);
/* Migration progress relays and the like, from messages as they apply. */
void local_on_applied(struct agent *a, const json_t *msg);
/* VM processes here, for status. */
size_t local_count(struct agent *a);

#endif
