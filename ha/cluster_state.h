/* The replicated cluster state (design.md "Cluster"): hosts, VMs, owners,
 * desired states and migrations in flight. A deterministic state machine:
 * every host applies the same CPG messages in the same (agreed) order and
 * so holds the same state. Messages are JSON objects (docs/cluster-state.md
 * lists them); apply either changes the state or refuses the message with
 * the same error on every host, so the host that sent it can tell its
 * client why. Nothing here does I/O except save/load. */
#ifndef TERN_HA_CLUSTER_STATE_H
#define TERN_HA_CLUSTER_STATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"

#define CL_NAME_MAX 64      /* host and VM names: [A-Za-z0-9._-], 1..63 chars */
#define CL_PATH_MAX 256     /* kernel, initrd, disk paths: absolute */
#define CL_CMDLINE_MAX 1024
#define CL_ADDR_MAX 64      /* an IPv4/IPv6 address literal */
#define CL_TOKEN_MAX 80
#define CL_MAX_DISKS 4
#define CL_REASON_MAX 256

enum cl_host_mode { CL_HOST_ACTIVE, CL_HOST_MAINTENANCE };

struct cl_host {
    char name[CL_NAME_MAX];
    uint32_t nodeid;              /* corosync node id */
    uint64_t mem_mib;             /* capacity offered to VMs */
    uint32_t vcpus;
    char migration_addr[CL_ADDR_MAX]; /* where its incoming migrations listen */
    bool online;                  /* in the current CPG membership */
    enum cl_host_mode mode;
};

struct cl_disk {
    char path[CL_PATH_MAX];
    bool ro;
};

struct cl_vm_config {
    char kernel[CL_PATH_MAX];
    char initrd[CL_PATH_MAX];     /* "" = none */
    char cmdline[CL_CMDLINE_MAX];
    uint64_t mem_mib;
    uint32_t vcpus;
    unsigned nr_disks;
    struct cl_disk disks[CL_MAX_DISKS];
};

enum cl_vm_desired { CL_VM_STOPPED, CL_VM_RUNNING };

/* What the owner last reported (or what the last message implies). */
enum cl_vm_run {
    CL_RUN_STOPPED,   /* no process */
    CL_RUN_STARTING,  /* owner chosen, process being started */
    CL_RUN_RUNNING,
    CL_RUN_MIGRATING, /* running on owner, a migration in flight */
    CL_RUN_STOPPING,
    CL_RUN_CRASHED,   /* the process died without being asked to */
};

struct cl_vm {
    char name[CL_NAME_MAX];
    struct cl_vm_config cfg;
    bool ha;
    int32_t priority;             /* higher first when placing */
    char owner[CL_NAME_MAX];      /* "" when it has no host */
    enum cl_vm_desired desired;
    enum cl_vm_run run;
    char detail[CL_REASON_MAX];   /* last error or crash reason, "" if none */
    uint64_t migration_id;        /* in flight, 0 if none */
    json_t *last_migration;       /* result of the last finished migration, or NULL */
};

enum cl_mig_phase {
    CL_MIG_PREPARING,  /* begun; the destination starts an incoming VMM */
    CL_MIG_LISTENING,  /* destination waits on port with token; source may send */
    CL_MIG_COMMITTED,  /* owner is now the destination */
};

struct cl_migration {
    uint64_t id;                  /* assigned by apply, never reused */
    char vm[CL_NAME_MAX];
    char from[CL_NAME_MAX];
    char to[CL_NAME_MAX];
    enum cl_mig_phase phase;
    uint32_t downtime_ms;
    uint16_t port;                /* set by migration_listening */
    char token[CL_TOKEN_MAX];     /* set by migration_listening */
    json_t *progress;             /* last migration_progress payload, or NULL */
    uint32_t origin_nodeid;       /* who asked (for replies) */
    uint64_t origin_req;
};

struct cl_state;

struct cl_state *cl_state_new(void);
void cl_state_free(struct cl_state *s);

/* Applies one message delivered by CPG from `sender_nodeid`. Returns 0 when
 * applied, -1 when refused (err says why, identically on every host; the
 * state is then unchanged). Malformed messages are refused, never crash.
 * Messages of types this module does not know are refused too. */
int cl_state_apply(struct cl_state *s, uint32_t sender_nodeid, const json_t *msg,
                   struct tern_err *err);

/* Membership as CPG delivered it (in order with the messages): hosts whose
 * nodeid is in `members` are online, all others offline. */
void cl_state_set_members(struct cl_state *s, const uint32_t *members, size_t n);

/* Counts every applied message; equal on hosts with equal state. */
uint64_t cl_state_version(const struct cl_state *s);

/* Lookups; pointers stay valid until the next apply/load. NULL if absent. */
const struct cl_host *cl_state_host(const struct cl_state *s, const char *name);
const struct cl_host *cl_state_host_by_nodeid(const struct cl_state *s, uint32_t nodeid);
const struct cl_vm *cl_state_vm(const struct cl_state *s, const char *name);
const struct cl_migration *cl_state_migration(const struct cl_state *s, uint64_t id);
size_t cl_state_nr_hosts(const struct cl_state *s);
const struct cl_host *cl_state_host_at(const struct cl_state *s, size_t i); /* sorted by name */
size_t cl_state_nr_vms(const struct cl_state *s);
const struct cl_vm *cl_state_vm_at(const struct cl_state *s, size_t i);     /* sorted by name */
size_t cl_state_nr_migrations(const struct cl_state *s);
const struct cl_migration *cl_state_migration_at(const struct cl_state *s, size_t i);

/* Memory and vCPUs a host has left: capacity minus the VMs it owns that are
 * not stopped, minus incoming migrations' VMs. */
void cl_state_host_free(const struct cl_state *s, const char *host, uint64_t *mem_mib,
                        uint32_t *vcpus);

/* Deterministic placement: the online, active host (not `exclude`, may be
 * NULL) with room for `vm`, most free memory first, then name. Returns 0
 * and copies the name, or -1 with err saying why none fits. */
int cl_state_place(const struct cl_state *s, const struct cl_vm_config *vm, const char *exclude,
                   char out[CL_NAME_MAX], struct tern_err *err);

/* The whole state as JSON (for snapshots, persistence and `status`), and
 * back. from_json replaces the state only if the document is valid. */
json_t *cl_state_to_json(const struct cl_state *s);
int cl_state_from_json(struct cl_state *s, const json_t *doc, struct tern_err *err);
json_t *cl_vm_to_json(const struct cl_vm *vm);
json_t *cl_host_to_json(const struct cl_state *s, const struct cl_host *h); /* with free capacity */
json_t *cl_migration_to_json(const struct cl_migration *m);

/* Persists atomically (temp file, fsync, rename, fsync dir) / reloads. A
 * missing file loads as an empty state (returns 1). */
int cl_state_save(const struct cl_state *s, const char *path, struct tern_err *err);
int cl_state_load(struct cl_state *s, const char *path, struct tern_err *err);

/* Config parsing shared with the agent API: {"kernel":..,"initrd":..,
 * "cmdline":..,"mem_mib":N,"vcpus":N,"disks":[{"path":..,"ro":false}]}. */
int cl_vm_config_from_json(const json_t *j, struct cl_vm_config *cfg, struct tern_err *err);
json_t *cl_vm_config_to_json(const struct cl_vm_config *cfg);

const char *cl_vm_run_name(enum cl_vm_run r);
const char *cl_mig_phase_name(enum cl_mig_phase p);
bool cl_name_valid(const char *name);

#endif
