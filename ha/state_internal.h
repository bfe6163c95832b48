/* Inside the cluster state: the struct behind struct cl_state and the
 * helpers its files (cluster_state.c, state_apply.c, state_json.c,
 * placement.c) share. Not for other modules: they use cluster_state.h. */
#ifndef TERN_HA_STATE_INTERNAL_H
#define TERN_HA_STATE_INTERNAL_H

#include "cluster_state.h"
#include "../common/api_limits.h"

/* Bounds that keep arithmetic far from overflow and documents small. */
#define CL_HOST_MEM_MAX (1ull << 40)     /* MiB: 1 EiB */
#define CL_HOST_VCPUS_MAX 65536u
/* What clients may ask for: the API's ranges (common/api_limits.h). */
#define CL_VM_MEM_MIN TERN_VM_MEM_MIN_MIB
#define CL_VM_MEM_MAX TERN_VM_MEM_MAX_MIB /* MiB: 1 TiB */
#define CL_VM_VCPUS_MAX TERN_VM_VCPUS_MAX
#define CL_DOWNTIME_DEFAULT TERN_DOWNTIME_MS_DEFAULT
#define CL_DOWNTIME_MAX TERN_DOWNTIME_MS_MAX
#define CL_WATCHDOG_MAX_S 3600u
#define CL_BLOB_MAX 8192                 /* progress objects, serialized */
#define CL_RESULT_MAX 2048               /* a migration's result record, serialized */
#define CL_MAX_ORIGINS 1024              /* nodes whose last request id is kept */
#define CL_MAX_MEMBERS 512               /* corosync allows 384 nodes */
/* What define charges per VM (besides its paths and command line), per
 * host and per migration against CL_STATE_MAX_BYTES: room for every other
 * field at its largest. */
#define CL_CHARGE_VM (1024u + CL_REASON_MAX + CL_RESULT_MAX)
#define CL_CHARGE_HOST 1024u
#define CL_CHARGE_MIGRATION (1024u + CL_BLOB_MAX)

struct cl_origin {
    uint32_t nodeid;
    uint64_t req;
};

/* Arrays, each sorted: hosts and VMs by name, migrations by id (ids only
 * grow, so appending keeps them sorted). Sorted arrays make every
 * iteration, and so every decision taken while iterating, the same on
 * every host. */
struct cl_state {
    struct cl_host *hosts;
    size_t nr_hosts, cap_hosts;
    struct cl_vm *vms;
    size_t nr_vms, cap_vms;
    struct cl_migration *migs;
    size_t nr_migs, cap_migs;
    uint64_t version;       /* messages applied (and membership changes) */
    uint64_t mig_counter;   /* last migration id handed out */
    /* The configuration last applied (cl_state_apply_config). */
    uint64_t config_epoch;  /* configurations applied */
    uint64_t q_epoch;       /* quorum epoch (cl_state_quorum_epoch): a ring sequence number */
    uint64_t q_version;     /* version of the last event applied while quorate */
    uint64_t config_ring;   /* ring sequence number of that configuration */
    uint32_t members[CL_MAX_MEMBERS]; /* sorted, distinct node ids */
    size_t nr_members;
    uint32_t expected_votes;
    bool quorate;
    bool fault;             /* cl_state_take_fault */
    uint64_t vm_charge;     /* sum of cl__vm_charge over the VMs */
    struct cl_origin *origins; /* sorted by node id */
    size_t nr_origins, cap_origins;
};

/* Mutable lookups (NULL if absent) and their insertion points. */
struct cl_host *cl__host(struct cl_state *s, const char *name, size_t *pos);
struct cl_vm *cl__vm(struct cl_state *s, const char *name, size_t *pos);
struct cl_migration *cl__mig(struct cl_state *s, uint64_t id, size_t *pos);

/* Grow an array so one more element fits; -1 when out of memory. */
int cl__reserve(void **arr, size_t *cap, size_t nr, size_t elem);

/* Removes migration at index i (frees its progress). */
void cl__mig_remove(struct cl_state *s, size_t i);
/* Ends migration `m` without success: its VM (if still defined) gets
 * migration_id 0 and last_migration {"id","vm","from","to","outcome",
 * "reason"}; the migration is removed. The VM's run state and detail are
 * the caller's to set. */
void cl__mig_end(struct cl_state *s, struct cl_migration *m, const char *outcome,
                 const char *reason);

/* Drops everything the state owns (arrays and JSON blobs); leaves it empty. */
void cl__state_clear(struct cl_state *s);

/* Recomputes expected votes and quorum from the members and the online
 * hosts' announcements; a change to quorate starts a new quorum epoch. */
void cl__update_quorum(struct cl_state *s);
/* Host h's node left corosync's membership: lost, and (unless fenced) its
 * fencing pending in a new episode; `why` starts the detail. */
void cl__host_lost(struct cl_host *h, const char *why);
/* After hosts went offline or were lost: migrations that lost an end end,
 * VMs of lost hosts are lost. */
void cl__settle_hosts(struct cl_state *s);

/* failover.c: host `h` is confirmed off (fence episode over): its VMs are
 * released; HA VMs meant to run wait for a host (recover). Then places
 * what waits. */
void cl__release_fenced(struct cl_state *s, struct cl_host *h);
/* Places HA VMs waiting for a host (in a quorate configuration only):
 * highest priority first, then by name (ha/plan.c). -1 when out of memory
 * (and s->fault set): nothing placed. */
int cl__recover(struct cl_state *s);

/* Records that origin `nodeid` had request `req` applied. -1 when the
 * table is full (the message is then refused) or out of memory. */
int cl__origin_note(struct cl_state *s, uint32_t nodeid, uint64_t req);

/* Ends every uncommitted migration that involves host `name` (failed,
 * `reason`), and with it the VM's "migrating": it is running again on the
 * source, or lost if the source is a lost host. */
void cl__end_migrations_of(struct cl_state *s, const char *name, const char *reason);

/* What a VM is charged against CL_STATE_MAX_BYTES. */
uint64_t cl__vm_charge(const struct cl_vm_config *cfg);

/* Copies `src` into dst[cap], cutting at a UTF-8 character boundary so the
 * result is still valid UTF-8 (and so still serializable). */
void cl__copy_utf8(char *dst, size_t cap, const char *src);

/* A copy of a JSON object no larger than CL_BLOB_MAX when serialized, or
 * NULL (err says why). */
json_t *cl__blob_copy(const json_t *j, const char *what, struct tern_err *err);

/* Field readers for message and document objects; errors name the field
 * and carry TERN_ERR_INVALID.
 * get_str: a string of at most cap-1 bytes without NUL; absent -> `def`,
 *   or an error when def is NULL.
 * get_uint: an integer in [min, max]; absent -> `def` if has_def.
 * get_bool: absent -> def.
 * get_enum: one of the NULL-terminated `names`; its index in *out. */
int cl__get_str(const json_t *obj, const char *key, const char *def, char *dst, size_t cap,
                struct tern_err *err);
int cl__get_uint(const json_t *obj, const char *key, bool has_def, uint64_t def, uint64_t min,
                 uint64_t max, uint64_t *out, struct tern_err *err);
int cl__get_bool(const json_t *obj, const char *key, bool def, bool *out, struct tern_err *err);
int cl__get_enum(const json_t *obj, const char *key, const char *const *names, int *out,
                 struct tern_err *err);

#endif
