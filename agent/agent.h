/* ternd's internals, shared by the agent's modules (not a public API).
 *
 * One thread, one poll loop (agent.c): corosync's fds, the control socket
 * and its clients, a pidfd per VM process and a 200 ms tick. Every change to
 * the cluster goes out as a CPG message and takes effect when it comes back
 * in agreed order (replica.c applies it); what this host must do about it
 * (start a VM, send or receive a migration) happens in local_vms.c, driven
 * by those applied messages. Requests from clients (api.c, requests.c) wait
 * for their own message to come back, or for the work it started. */
#ifndef TERN_AGENT_AGENT_H
#define TERN_AGENT_AGENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "../ha/cluster_state.h"
#include "../ha/replica.h"
#include "config.h"
#include "corosync_link.h"
#include "state_store.h"
#include "vm_process.h"

#define AGENT_MAX_CLIENTS 64
#define AGENT_MAX_LINE (1u << 20)
#define AGENT_MAX_VMS 256    /* VM processes on this host */
#define AGENT_MAX_PENDING 128
#define AGENT_TICK_MS 200
#define AGENT_MIGRATION_TICK_MS 20 /* while a migration this host takes part in runs */
#define AGENT_FAST_TICK_MS 2       /* while its guest is paused for the handover */

struct agent_client {
    int fd;          /* -1 when free */
    uint64_t gen;    /* distinguishes reuse of the slot */
    size_t len;
    char *buf;
};

/* A VM process on this host. */
enum local_role {
    LOCAL_RUNNING,   /* runs the guest (possibly as a migration source) */
    LOCAL_INCOMING,  /* waits for / receives an incoming migration */
};

struct local_vm {
    bool used;
    struct vm_process proc;
    enum local_role role;
    bool stopping;          /* asked to stop: its end is expected */
    bool handed_over;       /* migrated away: its end is expected */
    uint64_t mig_id;        /* migration this process takes part in */
    bool mig_started;       /* source: migrate command sent */
    bool mig_commit_sent;   /* source: migration_commit broadcast */
    bool mig_abort_sent;
    bool mig_done_sent;     /* destination: migration_done broadcast */
    uint16_t port;          /* destination: listening port */
    double last_progress;   /* when progress was last broadcast */
    double asked_at;        /* when it was asked to stop or hand over */
    char last_phase[32];    /* phase in the last progress broadcast */
    char vmm_phase[32];     /* phase the VMM last reported */
    bool mig_near_end;      /* stop-and-copy is near or running: poll fast */
    /* A {"cmd":"watch"} connection to the VMM while a migration runs: a
     * line on it (a phase change, the guest running) makes the agent
     * look at once instead of at its next tick; -1 without one. */
    int watch_fd;
    double running_since;   /* destination: when its guest was first seen running */
};

enum pending_kind { PEND_SIMPLE, PEND_START, PEND_STOP, PEND_MIGRATE, PEND_EVACUATE };

struct evac_item {
    char vm[CL_NAME_MAX];
    char to[CL_NAME_MAX];
    uint64_t req;           /* migration_begin request id */
    uint64_t mig_id;
    int state;              /* 0 queued, 1 begun, 2 done, 3 failed */
    double t_start;
};

struct pending {
    bool used;
    enum pending_kind kind;
    int client;             /* client slot, or -1 (nobody waits) */
    uint64_t client_gen;
    uint64_t req;           /* request id of the message awaited */
    bool applied;           /* that message was applied */
    uint64_t applied_version; /* the state's version right after it */
    uint64_t lineage;       /* agent's lineage when it was applied */
    char type[32];          /* its message type */
    char vm[CL_NAME_MAX];
    char host[CL_NAME_MAX];
    uint64_t mig_id;
    bool wait;
    double t_start, deadline;
    /* evacuation */
    struct evac_item *items;
    size_t nr_items;
    unsigned parallel;
    json_t *moved, *failed;
};

struct agent {
    struct ternd_config cfg;
    char config_path[PATH_MAX];
    struct vm_process_env env;
    char host[CL_NAME_MAX];
    uint32_t nodeid;
    size_t nr_nodes;         /* corosync's nodelist */
    bool quorate;            /* votequorum, as this node sees it */
    bool announced;
    uint64_t announce_req;
    bool reconciled;         /* this host's identity is confirmed and what runs here settled */
    bool stop_requested;
    int exit_status;         /* when stopping on its own: 0, or why */
    int lock_fds[2];         /* state_dir and run_dir locks */
    struct cs_link *link;
    struct replica *replica;
    struct state_store *store;
    uint64_t lineage;        /* changes whenever the local state was replaced */
    bool rejoin;             /* the replica failed: leave, reload, rejoin */
    uint64_t round_seq;      /* the sync round being timed */
    double round_since;
    int listen_fd;
    struct agent_client clients[AGENT_MAX_CLIENTS];
    uint64_t next_gen;
    struct local_vm vms[AGENT_MAX_VMS];
    struct pending pend[AGENT_MAX_PENDING];
    uint64_t next_req;
    bool tick_now; /* a VMM announced a change: tick at once */
};

/* A sync round open longer than this is given up: leave and rejoin. */
#define AGENT_SYNC_ROUND_TIMEOUT_S 60.0

/* agent.c: set-up (config, corosync, persisted state, control socket,
 * re-attaching VM processes), the loop, and tear-down (VMs keep running). */
int agent_init(struct agent *a, const char *config_path, struct tern_err *err);
int agent_run(struct agent *a, struct tern_err *err);
void agent_destroy(struct agent *a);

double agent_now(void);
/* A line in ternd's log (stderr), with the wall-clock time. */
void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Broadcasts a state message (adds the origin). Returns the request id, or
 * 0 with err set. */
uint64_t agent_send(struct agent *a, json_t *msg, struct tern_err *err);
/* True when this host may originate changes (synced, the cluster's
 * configuration quorate, and corosync quorate here too). */
bool agent_can_change(struct agent *a, struct tern_err *err);
struct cl_state *agent_state(struct agent *a);
/* The state names this node as host `a->host` (its announce was applied). */
bool agent_is_host(struct agent *a);

/* api.c: the control socket. */
int api_open(struct agent *a, struct tern_err *err);
void api_close(struct agent *a);
int api_pollfds(struct agent *a, struct pollfd *fds, int max);
void api_handle(struct agent *a, const struct pollfd *fds, int n);
/* Sends one JSON line to a client (if it is still the same client). */
void api_send(struct agent *a, int client, uint64_t gen, json_t *obj);
void api_reply_ok(struct agent *a, int client, uint64_t gen, json_t *result);
void api_reply_err(struct agent *a, int client, uint64_t gen, const char *code, const char *fmt,
                   ...) __attribute__((format(printf, 5, 6)));

/* requests.c: one request from a client. */
void requests_handle(struct agent *a, int client, uint64_t gen, json_t *req);
/* A state message was applied (or refused): completes pending requests. */
void requests_on_applied(struct agent *a, uint32_t sender, const json_t *msg, int rc,
                         const struct tern_err *err);
/* Called after every applied message and each tick: pending requests whose
 * condition holds now (VM running, migration finished...) complete. */
void requests_poll(struct agent *a);
/* The local state was replaced (merge, or `rejoined` after the replica
 * failed): pending changes that it no longer holds are answered as not
 * acknowledged; after a rejoin, so are those whose fate is unknown. */
void requests_on_replaced(struct agent *a, bool rejoined);

/* local_vms.c: what this host does about the cluster state. */
void local_on_applied(struct agent *a, const json_t *msg);
/* Returns when it wants to run next, in ms. */
int local_tick(struct agent *a);
void local_reattach(struct agent *a);  /* at start, before the first sync */
/* Settles what runs here against the state: at start (`at_start`: also
 * ends this host's migrations that its restart interrupted) and whenever
 * the state was replaced by another host's in a sync round. */
void local_reconcile(struct agent *a, bool at_start);
/* Each VM process's pidfd (slot i) and watch connection (slot
 * AGENT_MAX_VMS + i): at most 2 * AGENT_MAX_VMS fds. */
int local_pollfds(struct agent *a, struct pollfd *fds, int max, int *slots);
void local_handle(struct agent *a, const struct pollfd *fds, int n, const int *slots);
struct local_vm *local_find(struct agent *a, const char *name);
/* A migration this host takes part in is under way (tick faster). */
bool local_migrating(struct agent *a);
void local_stop_all_tracking(struct agent *a);

#endif
