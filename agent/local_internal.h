/* Inside local_vms.c and local_migration.c: this host's VM processes. Not
 * for the other modules (they use agent.h's local_* functions). */
#ifndef TERN_AGENT_LOCAL_INTERNAL_H
#define TERN_AGENT_LOCAL_INTERNAL_H

#include "agent.h"
#include "vmm_rpc.h"

#include "../migrate/migrate.h"

#define LOCAL_MAX_VMS 256

/* A VM process's life, one phase at a time (lv_set_phase keeps the
 * transitions to the ones listed in local_vms.c). */
enum lv_phase {
    LV_STARTING,    /* spawned; its control socket does not answer yet */
    LV_RUNNING,     /* runs the guest here */
    LV_MIGRATING,   /* source: "migrate" accepted, rounds running */
    LV_READY,       /* source: guest paused, the destination has everything */
    LV_COMMIT_SENT, /* source: migration_commit broadcast, not applied yet */
    LV_HANDED_OVER, /* source: the commit applied; this copy never runs again */
    LV_INCOMING,    /* destination: waiting for / receiving the migration */
    LV_COMMITTING,  /* destination: the commit applied, told to run the guest */
    LV_STOPPING,    /* asked to stop; killed after the grace period */
    LV_KILLING,     /* SIGKILL sent; waiting for its end */
    LV__PHASES
};

struct local_vm {
    bool used;
    struct agent *a;
    struct vm_process proc;
    enum lv_phase phase;
    double phase_since;
    bool incoming_kind;        /* started with --incoming (phases INCOMING, COMMITTING) */
    uint64_t mig_id;           /* the migration it takes part in, 0 if none */
    uint16_t port;             /* destination: where it listens */
    char token[65];            /* destination: the one-time token */
    enum mig_phase vmm_phase;  /* source: what its VMM last said */
    double last_progress;      /* source: when progress was last broadcast */
    double running_since;      /* destination: guest first seen running */
    struct vmm_rpc *cmd;       /* a command in flight */
    struct vmm_rpc *poll;      /* a status request in flight */
    uint64_t timer;            /* the phase's timer (start probe, stop grace, status poll) */
    int watch_fd;              /* {"cmd":"watch"} connection to the VMM, -1 if none */
    /* What was broadcast already (so a message is not sent again before
     * it applies): the migration ids. */
    uint64_t listening_sent, commit_sent, done_sent, abort_sent;
    json_t *done_result;       /* destination: the migration_done result sent (to resend) */
    bool ended_expected;       /* its end is what was asked for */
    bool up;                   /* its control socket answered (or it listens, incoming) */
};

struct report_mark {
    char vm[CL_NAME_MAX];
    enum cl_vm_run run;
    double at;
    uint64_t req;   /* its request id: on its way until the state has it */
};

struct local {
    struct local_vm vms[LOCAL_MAX_VMS];
    struct report_mark reports[LOCAL_MAX_VMS];
    /* Migrations aborted by this host without a process to remember it. */
    uint64_t aborted[32];
    unsigned next_aborted;
};

struct local_vm *lv_find(struct agent *a, const char *name);
void lv_set_phase(struct local_vm *lv, enum lv_phase to, const char *why);
const char *lv_phase_name(enum lv_phase p);
/* Sends SIGKILL; its end (pidfd) is handled like any other end. */
void lv_kill(struct local_vm *lv, const char *why);
/* One command to its VMM; the previous one (if any) is cancelled. */
void lv_command(struct local_vm *lv, const char *cmd, json_t *extra, vmm_rpc_fn done);
void lv_watch_open(struct local_vm *lv);
void lv_watch_close(struct local_vm *lv);
void lv_timer(struct local_vm *lv, int ms, loop_timer_fn fn);

/* The agent reports what runs here: vm_report, once per (VM, state) until
 * it applies or 5 s pass. */
void local_report(struct agent *a, const char *vm, enum cl_vm_run run, const char *detail);
void local_report_as(struct agent *a, const char *vm, enum cl_vm_run run, const char *detail,
                     bool host_failed);
/* migration_abort for migration `id` (once per process and id). */
void local_abort(struct agent *a, struct local_vm *lv, uint64_t id, const char *reason);

/* Spawns an incoming VMM (local_vms.c); NULL with err. */
struct local_vm *local_spawn_incoming(struct agent *a, const struct cl_vm *vm, const char *listen,
                                      uint16_t port, const char *token, struct tern_err *err);

/* local_migration.c: both ends of a migration, driven by local_reconcile. */
void mig_start_incoming(struct agent *a, const struct cl_vm *vm, const struct cl_migration *m);
void mig_settle_incoming(struct agent *a, struct local_vm *lv, const struct cl_vm *vm,
                         const struct cl_migration *m);
void mig_settle_source(struct agent *a, struct local_vm *lv, const struct cl_migration *m);
void mig_hand_over(struct agent *a, struct local_vm *lv, const struct cl_migration *m);
void mig_resume_source(struct agent *a, struct local_vm *lv);
void mig_watch_readable(struct local_vm *lv);
/* The destination, guest running, commit applied: migration_done again
 * unless already sent in this configuration. */
void mig_done_again(struct agent *a, struct local_vm *lv, const struct cl_migration *m);

#endif
