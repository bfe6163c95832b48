/* The replicated cluster state (design.md "Cluster"): hosts, VMs, owners,
 * desired states and migrations in flight, and the configuration (members,
 * quorum) they were applied in. A deterministic state machine: every host
 * applies the same CPG messages and configuration changes in the same
 * (agreed) order and so holds the same state. Messages are JSON objects
 * (docs/cluster-state.md lists them); apply either changes the state or
 * refuses the message with the same error on every host, so the host that
 * sent it can tell its client why. Changes that cannot be undone (starting
 * a VM, committing a migration) are refused in a configuration that is not
 * quorate. Nothing here does I/O except the file functions at the end. */
#ifndef TERN_HA_CLUSTER_STATE_H
#define TERN_HA_CLUSTER_STATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/api_limits.h"
#include "../common/err.h"

#define CL_NAME_MAX 64      /* host and VM names: [A-Za-z0-9._-], 1..63 chars */
#define CL_PATH_MAX 256     /* kernel, initrd, disk paths: absolute */
#define CL_CMDLINE_MAX 1024
#define CL_ADDR_MAX 64      /* an IPv4/IPv6 address literal */
#define CL_TOKEN_MAX 80
#define CL_MAX_DISKS TERN_VM_DISKS_MAX
#define CL_REASON_MAX 256

enum cl_host_mode { CL_HOST_ACTIVE, CL_HOST_MAINTENANCE };

/* Fencing of a host (design.md "High availability"): a host whose node
 * left the membership (or that the operator asked to fence) must be
 * confirmed off before its VMs are released and its HA VMs restarted
 * elsewhere. One episode per fence_seq: a result for another episode is
 * refused. */
enum cl_fence_state {
    CL_FENCE_NONE,     /* nothing to do */
    CL_FENCE_PENDING,  /* lost (or asked for): to be fenced */
    CL_FENCE_FAILED,   /* fencing failed so far; retried, recovery waits */
    CL_FENCE_FENCED,   /* confirmed off: its VMs were released (until it announces again) */
};

/* Whether a host's fence devices answer (`monitor`, run periodically by the
 * host that would fence it): a failing device is found before it is
 * needed. Information for the operator; no decision depends on it. */
enum cl_fence_check {
    CL_CHECK_UNKNOWN,  /* not checked (no device, or not yet) */
    CL_CHECK_OK,       /* every device of its levels answered */
    CL_CHECK_FAILING,  /* at least one did not */
};

/* Bounds on what the state holds, so that it always fits what the cluster
 * can carry (a joining host gets all of it) and what clients can read. */
#define CL_MAX_HOSTS 256
#define CL_STATE_MAX_BYTES (64u << 20) /* the state's size as charged by define */

struct cl_host {
    char name[CL_NAME_MAX];
    uint32_t nodeid;              /* corosync node id; the name stays bound to it */
    uint64_t mem_mib;             /* capacity offered to VMs */
    uint32_t vcpus;
    char migration_addr[CL_ADDR_MAX]; /* where its incoming migrations listen */
    bool online;                  /* its ternd is in the current CPG membership */
    bool lost;                    /* its node left the membership (node down, not just its
                                     ternd): its VMs' state is unknown until it returns */
    uint32_t expected_votes;      /* votequorum's expected votes, as it last announced */
    enum cl_host_mode mode;
    uint32_t watchdog_s;          /* its self-fence watchdog's timeout, as announced (0: none) */
    enum cl_fence_state fence;
    uint32_t fence_seq;           /* the fencing episode (incremented when one starts) */
    uint32_t fence_attempts;      /* failed attempts in this episode */
    char fence_method[16];        /* how it was fenced: device, watchdog, operator */
    char fence_detail[CL_REASON_MAX]; /* why it is fenced, or the last failure */
    enum cl_fence_check fence_check;  /* its devices, as last checked */
    char fence_check_by[CL_NAME_MAX]; /* the host that checked them */
    char fence_check_detail[CL_REASON_MAX]; /* each device's answer */
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
    CL_RUN_LOST,      /* its owner's node left the cluster: it may still run there */
};

struct cl_vm {
    char name[CL_NAME_MAX];
    struct cl_vm_config cfg;
    bool ha;
    int32_t priority;             /* higher first when placing */
    char group[CL_NAME_MAX];      /* anti-affinity group ("" none): two VMs of one group
                                     share a host only when no other host fits */
    bool recover;                 /* HA VM of a fenced host, waiting to be placed */
    char recovered_from[CL_NAME_MAX]; /* the fenced host of its last HA restart ("" none) */
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

/* Why a member left a CPG configuration (corosync's cpg_reason). */
enum cl_leave_reason {
    CL_LEFT_PROCESS, /* its ternd left or died; the node is still in the membership */
    CL_LEFT_NODE,    /* the node itself left the membership (down, or cut off) */
};

/* One CPG configuration change, as delivered in agreed order. */
struct cl_config {
    const uint32_t *members;      /* node ids, any order, duplicates allowed */
    size_t nr_members;
    const uint32_t *left;         /* node ids that left, with reasons */
    const enum cl_leave_reason *left_reason;
    size_t nr_left;
    /* The sequence number of corosync's totem ring this configuration is
     * applied under (struct cpg_ring_id's seq; 0: not known). Unique and
     * increasing across the cluster: a quorate configuration takes it as
     * its quorum epoch (docs/cluster-state.md, "Quorum epochs"). */
    uint64_t ring_seq;
};

/* The state messages (docs/cluster-state.md "Messages"), as an enum with
 * one name table: code dispatches on these, never on strings parsed back. */
enum cl_msg_type {
    CL_MSG_UNKNOWN = 0,
    CL_MSG_HOST_ANNOUNCE,
    CL_MSG_HOST_MODE,
    CL_MSG_HOST_REMOVE,
    CL_MSG_VM_DEFINE,
    CL_MSG_VM_UNDEFINE,
    CL_MSG_VM_START,
    CL_MSG_VM_STOP,
    CL_MSG_VM_REPORT,
    CL_MSG_MIGRATION_BEGIN,
    CL_MSG_MIGRATION_LISTENING,
    CL_MSG_MIGRATION_PROGRESS,
    CL_MSG_MIGRATION_COMMIT,
    CL_MSG_MIGRATION_DONE,
    CL_MSG_MIGRATION_ABORT,
    CL_MSG_HOST_FENCE,
    CL_MSG_HOST_FENCED,
    CL_MSG_HOST_FENCE_FAILED,
    CL_MSG_HOST_FENCE_CHECK,
    CL_MSG_HOST_DOWN,
    CL_MSG__COUNT
};

/* "host_announce" ...; NULL for CL_MSG_UNKNOWN and out of range. */
const char *cl_msg_type_name(enum cl_msg_type t);
/* The type of a message object ({"type": NAME, ...}): CL_MSG_UNKNOWN if it
 * has none or an unknown one. */
enum cl_msg_type cl_msg_type_of(const json_t *msg);
/* {"type": NAME} to add fields to (NULL when out of memory). */
json_t *cl_msg_new(enum cl_msg_type t);

struct cl_state;

struct cl_state *cl_state_new(void);
void cl_state_free(struct cl_state *s);

/* Applies one message delivered by CPG from `sender_nodeid`. Returns 0 when
 * applied, -1 when refused (err says why, identically on every host; the
 * state is then unchanged). Malformed messages are refused, never crash.
 * Messages of types this module does not know are refused too. */
int cl_state_apply(struct cl_state *s, uint32_t sender_nodeid, const json_t *msg,
                   struct tern_err *err);

/* A configuration change (in order with the messages): hosts whose node id
 * is a member are online, the others offline; a host whose node left
 * (CL_LEFT_NODE) is lost and so are its VMs' states; migrations missing an
 * end end. The configuration is quorate when its distinct members are a
 * majority of the expected votes (the highest that an online host
 * announced; none known: not quorate); a quorate configuration takes its
 * ring sequence number (c->ring_seq) as quorum epoch, what decides which
 * side wins a merge. Counts as one version. Never refused. */
void cl_state_apply_config(struct cl_state *s, const struct cl_config *c);
/* True (once) when applying ran out of memory on this host after the point
 * where it could refuse (the failover placement of a configuration
 * change): this replica differs from the others and must be rebuilt. */
bool cl_state_take_fault(struct cl_state *s);

/* Counts every applied message and configuration; equal on hosts with
 * equal state. */
uint64_t cl_state_version(const struct cl_state *s);
/* Quorum epoch: when a quorate configuration is applied (or a configuration
 * becomes quorate), the ring sequence number of that configuration
 * (cl_config.ring_seq; never lower than before). The same number on every
 * replica that applies that configuration, and never the number of another
 * history's quorate configuration. Of two copies of the state, the one with
 * the higher quorum epoch held quorum last. */
uint64_t cl_state_quorum_epoch(const struct cl_state *s);
/* The version of the last event (message or configuration) applied while
 * the configuration was quorate. Of two copies with the same quorum epoch,
 * the one with the higher quorate version holds more of that epoch's
 * history: a copy that only went on without quorum (a minority whose
 * membership changed) cannot raise it. */
uint64_t cl_state_quorate_version(const struct cl_state *s);
/* The ring sequence number of the configuration last applied. */
uint64_t cl_state_config_ring(const struct cl_state *s);
/* The configuration the state was last applied in. */
bool cl_state_quorate(const struct cl_state *s);
uint32_t cl_state_expected_votes(const struct cl_state *s);
uint64_t cl_state_config_epoch(const struct cl_state *s);
size_t cl_state_nr_members(const struct cl_state *s);
/* The highest request id applied from origin node `nodeid` (0: none).
 * Requests from one node are delivered in the order they were sent, so a
 * request of that node is in the state iff its id is <= this. */
uint64_t cl_state_origin_req(const struct cl_state *s, uint32_t nodeid);
/* What the state is charged against CL_STATE_MAX_BYTES. */
uint64_t cl_state_charged_bytes(const struct cl_state *s);

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

/* The configuration part of the JSON document ("config"). */
json_t *cl_state_config_to_json(const struct cl_state *s);

/* The persisted form: the JSON document wrapped with its CRC-32 and length
 * ({"checksum":"crc32:..","bytes":N,"state":DOC}), so that a damaged file
 * is refused rather than believed (docs/cluster-state.md "Persistence").
 * file_text returns a malloc'd buffer of *len bytes; file_parse replaces the
 * state only if checksum and document are good (a file of format 1, from
 * before checksums, is read without one). */
char *cl_state_file_text(const struct cl_state *s, size_t *len, struct tern_err *err);
int cl_state_file_parse(struct cl_state *s, const char *buf, size_t len, const char *path,
                        struct tern_err *err);

/* Persists atomically (temp file, fsync, rename, fsync dir) / reloads, in
 * that form. A missing file loads as an empty state (returns 1). */
int cl_state_save(const struct cl_state *s, const char *path, struct tern_err *err);
int cl_state_load(struct cl_state *s, const char *path, struct tern_err *err);

/* Config parsing shared with the agent API: {"kernel":..,"initrd":..,
 * "cmdline":..,"mem_mib":N,"vcpus":N,"disks":[{"path":..,"ro":false}]}.
 * For a VM being defined: paths must be absolute and free of control
 * characters (common/text.h); a state document read back keeps the paths
 * it holds. */
int cl_vm_config_from_json(const json_t *j, struct cl_vm_config *cfg, struct tern_err *err);
json_t *cl_vm_config_to_json(const struct cl_vm_config *cfg);

const char *cl_vm_run_name(enum cl_vm_run r);
const char *cl_fence_state_name(enum cl_fence_state f);
const char *cl_fence_check_name(enum cl_fence_check c);
/* The member that runs fencing against `target`: the online host with the
 * lowest node id other than the target, in a quorate configuration; NULL
 * if none. Every host computes the same. */
const struct cl_host *cl_state_fencer(const struct cl_state *s, const char *target);
/* HA VMs of fenced hosts that wait for room. */
size_t cl_state_nr_recovering(const struct cl_state *s);
const char *cl_mig_phase_name(enum cl_mig_phase p);
bool cl_name_valid(const char *name);

#endif
