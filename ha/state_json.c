/* The cluster state as JSON (snapshots, persistence, status) and its files.
 * Parsing checks every field and the references between hosts, VMs and
 * migrations: a document that from_json accepts is a state apply could
 * have produced, so a bad snapshot or file is refused, not half-loaded. */
#include "state_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/fileio.h"
#include "../common/text.h"
#include "../proto/crc32.h"

#define STATE_FORMAT "tern-cluster-state"
/* 1: before the configuration and origins; 2: quorum epochs counted by each
 * copy and quorate versions counted (read, converted: parse_config). */
#define STATE_FORMAT_VERSION 3
#define STATE_FILE_MAX (256u << 20)

/* ---- field readers: each names the field in its error ---- */

/* A string field of at most cap-1 bytes without NUL. Absent: `def`, or an
 * error when def is NULL. */
int cl__get_str(const json_t *obj, const char *key, const char *def, char *dst, size_t cap,
                struct tern_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        if (!def)
            return tern_err_coded(err, TERN_ERR_INVALID, "\"%s\" is missing", key);
        cl__copy_utf8(dst, cap, def);
        return 0;
    }
    if (!json_is_string(v))
        return tern_err_coded(err, TERN_ERR_INVALID, "\"%s\" must be a string", key);
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (strlen(s) != n)
        return tern_err_coded(err, TERN_ERR_INVALID, "\"%s\" contains a NUL character", key);
    if (n >= cap)
        return tern_err_coded(err, TERN_ERR_INVALID, "\"%s\" is too long (%zu bytes, at most %zu)", key, n,
                            cap - 1);
    memcpy(dst, s, n + 1);
    return 0;
}

/* An integer field in [min, max]. Absent: `def` if has_def, else an error. */
int cl__get_uint(const json_t *obj, const char *key, bool has_def, uint64_t def, uint64_t min,
                 uint64_t max, uint64_t *out, struct tern_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        if (!has_def)
            return tern_err_coded(err, TERN_ERR_INVALID, "\"%s\" is missing", key);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v))
        return tern_err_coded(err, TERN_ERR_INVALID, "\"%s\" must be an integer", key);
    json_int_t x = json_integer_value(v);
    if (x < 0 || (uint64_t)x < min || (uint64_t)x > max)
        return tern_err_coded(err, TERN_ERR_INVALID, "\"%s\" must be between %llu and %llu (got %lld)", key,
                            (unsigned long long)min, (unsigned long long)max, (long long)x);
    *out = (uint64_t)x;
    return 0;
}

int cl__get_bool(const json_t *obj, const char *key, bool def, bool *out, struct tern_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return tern_err_coded(err, TERN_ERR_INVALID, "\"%s\" must be true or false", key);
    *out = json_is_true(v);
    return 0;
}

/* One of `names` (NULL-terminated); the index in *out. */
int cl__get_enum(const json_t *obj, const char *key, const char *const *names, int *out,
                 struct tern_err *err)
{
    char buf[32];
    if (cl__get_str(obj, key, NULL, buf, sizeof(buf), err) < 0)
        return -1;
    for (int i = 0; names[i]; i++)
        if (strcmp(buf, names[i]) == 0) {
            *out = i;
            return 0;
        }
    return tern_err_coded(err, TERN_ERR_INVALID, "\"%s\" has an unknown value '%s'", key, buf);
}

/* An absolute path; when not required, absent or "" is allowed too.
 * `printable`: control characters (common/text.h: newlines, escapes, C1)
 * are refused. A path reaches tern-vmm's command line, logs and
 * terminals; a newline in it would forge log lines, an escape drive the
 * operator's terminal. Checked where a VM is defined; documents (a state
 * saved or synced by an earlier version) are read as they were stored. */
static int get_path(const json_t *obj, const char *key, bool required, bool printable,
                    char *dst, struct tern_err *err)
{
    if (cl__get_str(obj, key, required ? NULL : "", dst, CL_PATH_MAX, err) < 0)
        return -1;
    if (dst[0] == '\0' && !required)
        return 0;
    char shown[CL_PATH_MAX * 4];
    text_escape(shown, sizeof(shown), dst, 0, NULL);
    const char *ctl = printable ? text_find_control(dst) : NULL;
    if (ctl)
        return tern_err_coded(err, TERN_ERR_INVALID, "\"%s\" holds a control character at byte "
                              "%zu ('%s'): newlines, escapes and other control characters are "
                              "not allowed in paths", key, (size_t)(ctl - dst), shown);
    if (dst[0] != '/')
        return tern_err_coded(err, TERN_ERR_INVALID, "\"%s\" must be an absolute path (got '%s')",
                              key, shown);
    return 0;
}

static int check_keys(const json_t *obj, const char *const *known, const char *what,
                      struct tern_err *err)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        bool ok = false;
        for (size_t i = 0; known[i] && !ok; i++)
            ok = strcmp(key, known[i]) == 0;
        if (!ok)
            return tern_err_coded(err, TERN_ERR_INVALID, "%s has an unknown field \"%s\"", what, key);
    }
    return 0;
}

/* ---- VM configuration ---- */

/* `defining`: a new VM's configuration (cl_vm_config_from_json); else
 * one read from a state document (see get_path). */
static int config_from_json(const json_t *j, bool defining, struct cl_vm_config *cfg,
                            struct tern_err *err)
{
    static const char *const keys[] = {"kernel", "initrd", "cmdline", "mem_mib",
                                       "vcpus",  "disks",  NULL};
    if (!json_is_object(j))
        return tern_err_coded(err, TERN_ERR_INVALID, "config must be an object");
    struct cl_vm_config c;
    memset(&c, 0, sizeof(c));
    uint64_t mem, vcpus;
    if (check_keys(j, keys, "config", err) < 0 ||
        get_path(j, "kernel", true, defining, c.kernel, err) < 0 ||
        get_path(j, "initrd", false, defining, c.initrd, err) < 0 ||
        cl__get_str(j, "cmdline", "", c.cmdline, sizeof(c.cmdline), err) < 0 ||
        cl__get_uint(j, "mem_mib", false, 0, CL_VM_MEM_MIN, CL_VM_MEM_MAX, &mem, err) < 0 ||
        cl__get_uint(j, "vcpus", true, 1, TERN_VM_VCPUS_MIN, CL_VM_VCPUS_MAX, &vcpus, err) < 0)
        return tern_err_prefix(err, "config");
    c.mem_mib = mem;
    c.vcpus = (uint32_t)vcpus;
    const json_t *disks = json_object_get(j, "disks");
    if (disks) {
        if (!json_is_array(disks))
            return tern_err_coded(err, TERN_ERR_INVALID, "config: \"disks\" must be an array");
        if (json_array_size(disks) > CL_MAX_DISKS)
            return tern_err_coded(err, TERN_ERR_INVALID, "config: at most %d disks (got %zu)", CL_MAX_DISKS,
                                json_array_size(disks));
        static const char *const dkeys[] = {"path", "ro", NULL};
        for (size_t i = 0; i < json_array_size(disks); i++) {
            const json_t *d = json_array_get(disks, i);
            if (!json_is_object(d))
                return tern_err_coded(err, TERN_ERR_INVALID, "config: disks[%zu] must be an object", i);
            if (check_keys(d, dkeys, "disk", err) < 0 ||
                get_path(d, "path", true, defining, c.disks[i].path, err) < 0 ||
                cl__get_bool(d, "ro", false, &c.disks[i].ro, err) < 0)
                return tern_err_prefix(err, "config: disks[%zu]", i);
            /* One image twice in a VM, written through either: two
             * devices writing one file corrupt it. */
            for (size_t k = 0; defining && k < i; k++)
                if (!strcmp(c.disks[k].path, c.disks[i].path) && !(c.disks[k].ro && c.disks[i].ro))
                    return tern_err_coded(err, TERN_ERR_INVALID, "config: disks[%zu] and "
                                          "disks[%zu] are the same image (%s); one image may be "
                                          "given twice only read-only", k, i, c.disks[i].path);
        }
        c.nr_disks = (unsigned)json_array_size(disks);
    }
    *cfg = c;
    return 0;
}

int cl_vm_config_from_json(const json_t *j, struct cl_vm_config *cfg, struct tern_err *err)
{
    return config_from_json(j, true, cfg, err);
}

json_t *cl_vm_config_to_json(const struct cl_vm_config *cfg)
{
    json_t *disks = json_array();
    for (unsigned i = 0; disks && i < cfg->nr_disks && i < CL_MAX_DISKS; i++)
        json_array_append_new(disks, json_pack("{s:s, s:b}", "path", cfg->disks[i].path, "ro",
                                               cfg->disks[i].ro));
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:o*}", "kernel", cfg->kernel, "initrd",
                     cfg->initrd, "cmdline", cfg->cmdline, "mem_mib", (json_int_t)cfg->mem_mib,
                     "vcpus", (json_int_t)cfg->vcpus, "disks", disks);
}

/* ---- hosts, VMs, migrations ---- */

static const char *const mode_names[] = {"active", "maintenance", NULL};
static const char *const desired_names[] = {"stopped", "running", NULL};
static const char *const run_names[] = {"stopped",  "starting", "running", "migrating",
                                        "stopping", "crashed",  "lost",    NULL};
static const char *const phase_names[] = {"preparing", "listening", "committed", NULL};

json_t *cl_host_to_json(const struct cl_state *s, const struct cl_host *h)
{
    uint64_t free_mem;
    uint32_t free_vcpus;
    cl_state_host_free(s, h->name, &free_mem, &free_vcpus);
    json_int_t nr_vms = 0;
    for (size_t i = 0; i < s->nr_vms; i++)
        if (strcmp(s->vms[i].owner, h->name) == 0)
            nr_vms++;
    return json_pack("{s:s, s:I, s:b, s:b, s:s, s:I, s:I, s:I, s:I, s:I, s:s, s:I, s:I, "
                     "s:{s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:s}}",
                     "name", h->name, "nodeid", (json_int_t)h->nodeid, "online", h->online,
                     "lost", h->lost, "mode", mode_names[h->mode == CL_HOST_MAINTENANCE],
                     "mem_mib", (json_int_t)h->mem_mib, "vcpus", (json_int_t)h->vcpus,
                     "free_mem_mib", (json_int_t)free_mem, "free_vcpus", (json_int_t)free_vcpus,
                     "vms", nr_vms, "migration_addr", h->migration_addr, "expected_votes",
                     (json_int_t)h->expected_votes, "watchdog_s", (json_int_t)h->watchdog_s,
                     "fence", "state", cl_fence_state_name(h->fence), "seq",
                     (json_int_t)h->fence_seq, "attempts", (json_int_t)h->fence_attempts,
                     "method", h->fence_method, "detail", h->fence_detail, "check",
                     cl_fence_check_name(h->fence_check), "check_by", h->fence_check_by,
                     "check_detail", h->fence_check_detail);
}

json_t *cl_vm_to_json(const struct cl_vm *vm)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:i, s:s, s:b, s:s, s:o*, s:I, s:O?}",
                     "name", vm->name, "owner", vm->owner, "desired",
                     desired_names[vm->desired == CL_VM_RUNNING], "state",
                     cl_vm_run_name(vm->run), "detail", vm->detail, "ha", vm->ha, "priority",
                     (int)vm->priority, "group", vm->group, "recover", vm->recover,
                     "recovered_from", vm->recovered_from, "config",
                     cl_vm_config_to_json(&vm->cfg), "migration_id",
                     (json_int_t)vm->migration_id, "last_migration", vm->last_migration);
}

json_t *cl_migration_to_json(const struct cl_migration *m)
{
    return json_pack("{s:I, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:O?, s:{s:I, s:I}}", "id",
                     (json_int_t)m->id, "vm", m->vm, "from", m->from, "to", m->to, "phase",
                     cl_mig_phase_name(m->phase), "downtime_ms", (json_int_t)m->downtime_ms,
                     "port", (json_int_t)m->port, "token", m->token, "progress", m->progress,
                     "origin", "node", (json_int_t)m->origin_nodeid, "req",
                     (json_int_t)m->origin_req);
}

json_t *cl_state_config_to_json(const struct cl_state *s)
{
    json_t *members = json_array();
    for (size_t i = 0; members && i < s->nr_members; i++)
        json_array_append_new(members, json_integer(s->members[i]));
    json_t *c = json_pack("{s:I, s:I, s:I, s:I, s:o*, s:I, s:b}", "config_epoch",
                          (json_int_t)s->config_epoch, "ring_seq", (json_int_t)s->config_ring,
                          "quorum_epoch", (json_int_t)s->q_epoch, "quorate_version",
                          (json_int_t)s->q_version, "members", members, "expected_votes",
                          (json_int_t)s->expected_votes, "quorate", s->quorate);
    if (c && json_array_size(members) != s->nr_members) {
        json_decref(c);
        return NULL;
    }
    return c;
}

json_t *cl_state_to_json(const struct cl_state *s)
{
    json_t *hosts = json_array(), *vms = json_array(), *migs = json_array();
    json_t *origins = json_array();
    for (size_t i = 0; hosts && i < s->nr_hosts; i++)
        json_array_append_new(hosts, cl_host_to_json(s, &s->hosts[i]));
    for (size_t i = 0; vms && i < s->nr_vms; i++)
        json_array_append_new(vms, cl_vm_to_json(&s->vms[i]));
    for (size_t i = 0; migs && i < s->nr_migs; i++)
        json_array_append_new(migs, cl_migration_to_json(&s->migs[i]));
    for (size_t i = 0; origins && i < s->nr_origins; i++)
        json_array_append_new(origins, json_pack("{s:I, s:I}", "node",
                                                 (json_int_t)s->origins[i].nodeid, "req",
                                                 (json_int_t)s->origins[i].req));
    json_t *doc = json_pack("{s:s, s:i, s:I, s:I, s:o*, s:o*, s:o*, s:o*, s:o*}", "format",
                            STATE_FORMAT, "format_version", STATE_FORMAT_VERSION, "version",
                            (json_int_t)s->version, "migration_counter",
                            (json_int_t)s->mig_counter, "config", cl_state_config_to_json(s),
                            "origins", origins, "hosts", hosts, "vms", vms, "migrations", migs);
    /* A member that failed to append (out of memory) must not pass for a
     * smaller state. */
    if (doc && (json_array_size(hosts) != s->nr_hosts || json_array_size(vms) != s->nr_vms ||
                json_array_size(migs) != s->nr_migs ||
                json_array_size(origins) != s->nr_origins || !json_object_get(doc, "config"))) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

/* Optional object-or-null blob; *out gets a copy or NULL. */
static int get_blob(const json_t *obj, const char *key, json_t **out, struct tern_err *err)
{
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    *out = cl__blob_copy(v, key, err);
    return *out ? 0 : -1;
}

static int host_from_json(const json_t *j, struct cl_host *h, struct tern_err *err)
{
    memset(h, 0, sizeof(*h));
    uint64_t nodeid, mem, vcpus;
    int mode;
    if (!json_is_object(j))
        return tern_err_coded(err, TERN_ERR_INVALID, "must be an object");
    uint64_t expected;
    if (cl__get_str(j, "name", NULL, h->name, sizeof(h->name), err) < 0 ||
        cl__get_uint(j, "nodeid", false, 0, 0, UINT32_MAX, &nodeid, err) < 0 ||
        cl__get_bool(j, "online", false, &h->online, err) < 0 ||
        cl__get_bool(j, "lost", false, &h->lost, err) < 0 ||
        cl__get_uint(j, "expected_votes", true, 0, 0, CL_MAX_MEMBERS, &expected, err) < 0 ||
        cl__get_enum(j, "mode", mode_names, &mode, err) < 0 ||
        cl__get_uint(j, "mem_mib", false, 0, 0, CL_HOST_MEM_MAX, &mem, err) < 0 ||
        cl__get_uint(j, "vcpus", false, 0, 0, CL_HOST_VCPUS_MAX, &vcpus, err) < 0 ||
        cl__get_str(j, "migration_addr", NULL, h->migration_addr, sizeof(h->migration_addr), err) <
            0)
        return -1;
    if (!cl_name_valid(h->name))
        return tern_err_coded(err, TERN_ERR_INVALID, "'%s' is not a valid host name", h->name);
    /* Fencing (format 2, later fields: absent in older files). */
    static const char *const fence_names[] = {"none", "pending", "failed", "fenced", NULL};
    static const char *const check_names[] = {"unknown", "ok", "failing", NULL};
    uint64_t watchdog, seq = 0, attempts = 0;
    int fence = 0, check = 0;
    const json_t *f = json_object_get(j, "fence");
    if (cl__get_uint(j, "watchdog_s", true, 0, 0, CL_WATCHDOG_MAX_S, &watchdog, err) < 0)
        return -1;
    if (f && (!json_is_object(f) || cl__get_enum(f, "state", fence_names, &fence, err) < 0 ||
              cl__get_uint(f, "seq", true, 0, 0, UINT32_MAX, &seq, err) < 0 ||
              cl__get_uint(f, "attempts", true, 0, 0, UINT32_MAX, &attempts, err) < 0 ||
              cl__get_str(f, "method", "", h->fence_method, sizeof(h->fence_method), err) < 0 ||
              cl__get_str(f, "detail", "", h->fence_detail, sizeof(h->fence_detail), err) < 0 ||
              (json_object_get(f, "check") &&
               cl__get_enum(f, "check", check_names, &check, err) < 0) ||
              cl__get_str(f, "check_by", "", h->fence_check_by, sizeof(h->fence_check_by),
                          err) < 0 ||
              cl__get_str(f, "check_detail", "", h->fence_check_detail,
                          sizeof(h->fence_check_detail), err) < 0))
        return f && !json_is_object(f)
                   ? tern_err_coded(err, TERN_ERR_INVALID, "\"fence\" must be an object")
                   : tern_err_prefix(err, "fence");
    h->watchdog_s = (uint32_t)watchdog;
    h->fence = (enum cl_fence_state)fence;
    h->fence_seq = (uint32_t)seq;
    h->fence_attempts = (uint32_t)attempts;
    h->fence_check = (enum cl_fence_check)check;
    h->nodeid = (uint32_t)nodeid;
    h->expected_votes = (uint32_t)expected;
    h->mode = mode ? CL_HOST_MAINTENANCE : CL_HOST_ACTIVE;
    h->mem_mib = mem;
    h->vcpus = (uint32_t)vcpus;
    if (h->nodeid == 0)
        h->online = false;
    return 0;
}

/* Fills vm; on success the caller owns vm->last_migration. */
static int vm_from_json(const json_t *j, struct cl_vm *vm, struct tern_err *err)
{
    memset(vm, 0, sizeof(*vm));
    int desired, run;
    uint64_t mig_id;
    if (!json_is_object(j))
        return tern_err_coded(err, TERN_ERR_INVALID, "must be an object");
    const json_t *prio = json_object_get(j, "priority");
    if (!json_is_integer(prio) || json_integer_value(prio) < INT32_MIN ||
        json_integer_value(prio) > INT32_MAX)
        return tern_err_coded(err, TERN_ERR_INVALID, "\"priority\" must be a 32-bit integer");
    if (cl__get_str(j, "name", NULL, vm->name, sizeof(vm->name), err) < 0 ||
        cl__get_str(j, "owner", NULL, vm->owner, sizeof(vm->owner), err) < 0 ||
        cl__get_enum(j, "desired", desired_names, &desired, err) < 0 ||
        cl__get_enum(j, "state", run_names, &run, err) < 0 ||
        cl__get_str(j, "detail", "", vm->detail, sizeof(vm->detail), err) < 0 ||
        cl__get_bool(j, "ha", false, &vm->ha, err) < 0 ||
        cl__get_uint(j, "migration_id", true, 0, 0, INT64_MAX, &mig_id, err) < 0)
        return -1;
    if (!cl_name_valid(vm->name))
        return tern_err_coded(err, TERN_ERR_INVALID, "'%s' is not a valid VM name", vm->name);
    if (cl__get_str(j, "group", "", vm->group, sizeof(vm->group), err) < 0 ||
        cl__get_bool(j, "recover", false, &vm->recover, err) < 0 ||
        cl__get_str(j, "recovered_from", "", vm->recovered_from, sizeof(vm->recovered_from),
                    err) < 0)
        return -1;
    if (vm->group[0] && !cl_name_valid(vm->group))
        return tern_err_coded(err, TERN_ERR_INVALID, "'%s' is not a valid group name", vm->group);
    if (config_from_json(json_object_get(j, "config"), false, &vm->cfg, err) < 0)
        return -1;
    vm->priority = (int32_t)json_integer_value(prio);
    vm->desired = desired ? CL_VM_RUNNING : CL_VM_STOPPED;
    vm->run = (enum cl_vm_run)run;
    vm->migration_id = mig_id;
    return get_blob(j, "last_migration", &vm->last_migration, err);
}

static int mig_from_json(const json_t *j, struct cl_migration *m, struct tern_err *err)
{
    memset(m, 0, sizeof(*m));
    uint64_t id, downtime, port, onode = 0, oreq = 0;
    int phase;
    if (!json_is_object(j))
        return tern_err_coded(err, TERN_ERR_INVALID, "must be an object");
    if (cl__get_uint(j, "id", false, 0, 1, INT64_MAX, &id, err) < 0 ||
        cl__get_str(j, "vm", NULL, m->vm, sizeof(m->vm), err) < 0 ||
        cl__get_str(j, "from", NULL, m->from, sizeof(m->from), err) < 0 ||
        cl__get_str(j, "to", NULL, m->to, sizeof(m->to), err) < 0 ||
        cl__get_enum(j, "phase", phase_names, &phase, err) < 0 ||
        cl__get_uint(j, "downtime_ms", false, 0, 1, CL_DOWNTIME_MAX, &downtime, err) < 0 ||
        cl__get_uint(j, "port", true, 0, 0, 65535, &port, err) < 0 ||
        cl__get_str(j, "token", "", m->token, sizeof(m->token), err) < 0)
        return -1;
    const json_t *origin = json_object_get(j, "origin");
    if (origin && (!json_is_object(origin) ||
                   cl__get_uint(origin, "node", true, 0, 0, UINT32_MAX, &onode, err) < 0 ||
                   cl__get_uint(origin, "req", true, 0, 0, INT64_MAX, &oreq, err) < 0))
        return tern_err_prefix(err, "origin");
    m->id = id;
    m->phase = (enum cl_mig_phase)phase;
    m->downtime_ms = (uint32_t)downtime;
    m->port = (uint16_t)port;
    m->origin_nodeid = (uint32_t)onode;
    m->origin_req = oreq;
    return get_blob(j, "progress", &m->progress, err);
}

static int cmp_host(const void *a, const void *b)
{
    return strcmp(((const struct cl_host *)a)->name, ((const struct cl_host *)b)->name);
}

static int cmp_vm(const void *a, const void *b)
{
    return strcmp(((const struct cl_vm *)a)->name, ((const struct cl_vm *)b)->name);
}

static int cmp_mig(const void *a, const void *b)
{
    uint64_t x = ((const struct cl_migration *)a)->id, y = ((const struct cl_migration *)b)->id;
    return x < y ? -1 : x > y;
}

/* The invariants apply keeps, checked on a freshly parsed state. */
static int check_consistency(struct cl_state *s, struct tern_err *err)
{
    if (s->nr_hosts > CL_MAX_HOSTS)
        return tern_err_coded(err, TERN_ERR_INVALID, "%zu hosts, more than %d", s->nr_hosts,
                              CL_MAX_HOSTS);
    for (size_t i = 0; i < s->nr_hosts; i++) {
        if (s->hosts[i].online && s->hosts[i].lost)
            return tern_err_coded(err, TERN_ERR_INVALID, "host '%s' is both online and lost",
                                  s->hosts[i].name);
        if (i > 0 && strcmp(s->hosts[i - 1].name, s->hosts[i].name) == 0)
            return tern_err_coded(err, TERN_ERR_INVALID, "host '%s' appears twice", s->hosts[i].name);
        for (size_t k = 0; k < i && s->hosts[i].nodeid; k++)
            if (s->hosts[k].nodeid == s->hosts[i].nodeid)
                return tern_err_coded(err, TERN_ERR_INVALID, "hosts '%s' and '%s' share node id %u",
                                    s->hosts[k].name, s->hosts[i].name, s->hosts[i].nodeid);
    }
    for (size_t i = 0; i < s->nr_migs; i++) {
        struct cl_migration *m = &s->migs[i];
        if (i > 0 && s->migs[i - 1].id == m->id)
            return tern_err_coded(err, TERN_ERR_INVALID, "migration %llu appears twice",
                                (unsigned long long)m->id);
        if (m->id > s->mig_counter)
            return tern_err_coded(err, TERN_ERR_INVALID, "migration %llu is above the counter %llu",
                                (unsigned long long)m->id, (unsigned long long)s->mig_counter);
        struct cl_vm *vm = cl__vm(s, m->vm, NULL);
        if (!vm || vm->migration_id != m->id)
            return tern_err_coded(err, TERN_ERR_INVALID, "migration %llu is for VM '%s', which does not "
                                "refer to it",
                                (unsigned long long)m->id, m->vm);
        if (!cl__host(s, m->from, NULL) || !cl__host(s, m->to, NULL) ||
            strcmp(m->from, m->to) == 0)
            return tern_err_coded(err, TERN_ERR_INVALID, "migration %llu goes from '%s' to '%s'",
                                (unsigned long long)m->id, m->from, m->to);
        const char *owner = m->phase == CL_MIG_COMMITTED ? m->to : m->from;
        if (strcmp(vm->owner, owner) != 0)
            return tern_err_coded(err, TERN_ERR_INVALID, "migration %llu is %s but VM '%s' is owned by "
                                "'%s'",
                                (unsigned long long)m->id, cl_mig_phase_name(m->phase), m->vm,
                                vm->owner);
    }
    for (size_t i = 0; i < s->nr_vms; i++) {
        struct cl_vm *vm = &s->vms[i];
        if (i > 0 && strcmp(s->vms[i - 1].name, vm->name) == 0)
            return tern_err_coded(err, TERN_ERR_INVALID, "VM '%s' appears twice", vm->name);
        bool placed = vm->run != CL_RUN_STOPPED && vm->run != CL_RUN_CRASHED;
        if (placed != (vm->owner[0] != '\0'))
            return tern_err_coded(err, TERN_ERR_INVALID, "VM '%s' is %s with owner '%s'", vm->name,
                                cl_vm_run_name(vm->run), vm->owner);
        if (placed && !cl__host(s, vm->owner, NULL))
            return tern_err_coded(err, TERN_ERR_INVALID, "VM '%s' is owned by unknown host '%s'",
                                vm->name, vm->owner);
        if ((vm->run == CL_RUN_MIGRATING) != (vm->migration_id != 0))
            return tern_err_coded(err, TERN_ERR_INVALID, "VM '%s' is %s with migration id %llu", vm->name,
                                cl_vm_run_name(vm->run), (unsigned long long)vm->migration_id);
        if (vm->migration_id) {
            struct cl_migration *m = cl__mig(s, vm->migration_id, NULL);
            if (!m || strcmp(m->vm, vm->name) != 0)
                return tern_err_coded(err, TERN_ERR_INVALID, "VM '%s' refers to migration %llu, which is "
                                    "not its own",
                                    vm->name, (unsigned long long)vm->migration_id);
        }
    }
    return 0;
}

static int parse_config(const json_t *c, uint64_t format_version, struct cl_state *n,
                        struct tern_err *err)
{
    uint64_t ce, qe, qv, ev, ring = 0;
    if (!json_is_object(c))
        return tern_err_coded(err, TERN_ERR_INVALID, "\"config\" must be an object");
    const json_t *members = json_object_get(c, "members");
    if ((format_version >= 3 &&
         cl__get_uint(c, "ring_seq", false, 0, 0, INT64_MAX, &ring, err) < 0) ||
        cl__get_uint(c, "config_epoch", false, 0, 0, INT64_MAX, &ce, err) < 0 ||
        cl__get_uint(c, "quorum_epoch", false, 0, 0, INT64_MAX, &qe, err) < 0 ||
        cl__get_uint(c, "quorate_version", false, 0, 0, INT64_MAX, &qv, err) < 0 ||
        cl__get_uint(c, "expected_votes", false, 0, 0, CL_MAX_MEMBERS, &ev, err) < 0 ||
        cl__get_bool(c, "quorate", false, &n->quorate, err) < 0)
        return tern_err_prefix(err, "config");
    if (!json_is_array(members) || json_array_size(members) > CL_MAX_MEMBERS)
        return tern_err_coded(err, TERN_ERR_INVALID, "config: \"members\" must be an array of at "
                              "most %d node ids", CL_MAX_MEMBERS);
    for (size_t i = 0; i < json_array_size(members); i++) {
        const json_t *v = json_array_get(members, i);
        if (!json_is_integer(v) || json_integer_value(v) <= 0 ||
            json_integer_value(v) > UINT32_MAX ||
            (i > 0 && json_integer_value(v) <= (json_int_t)n->members[i - 1]))
            return tern_err_coded(err, TERN_ERR_INVALID, "config: \"members\" must be ascending "
                                  "node ids");
        n->members[i] = (uint32_t)json_integer_value(v);
    }
    n->nr_members = json_array_size(members);
    n->config_epoch = ce;
    n->config_ring = ring;
    n->q_epoch = qe;
    n->q_version = qv;
    if (format_version < 3) {
        /* Format 2 counted quorum epochs per copy: not comparable with ring
         * sequence numbers. Such a copy reads as epoch 0 (below every
         * quorate configuration since), its old epoch and count folded into
         * the quorate version so that format-2 copies still order among
         * themselves as they did (a whole-cluster upgrade). */
        n->q_epoch = 0;
        n->q_version = (qe > INT32_MAX ? (uint64_t)INT32_MAX : qe) << 32 |
                       (qv > UINT32_MAX ? (uint64_t)UINT32_MAX : qv);
    }
    n->expected_votes = (uint32_t)ev;
    return 0;
}

static int parse_origins(const json_t *o, struct cl_state *n, struct tern_err *err)
{
    if (!json_is_array(o) || json_array_size(o) > CL_MAX_ORIGINS)
        return tern_err_coded(err, TERN_ERR_INVALID, "\"origins\" must be an array of at most %d "
                              "entries", CL_MAX_ORIGINS);
    size_t nr = json_array_size(o);
    n->origins = calloc(nr ? nr : 1, sizeof(*n->origins));
    if (!n->origins)
        return tern_err_coded(err, TERN_ERR_INTERNAL, "out of memory");
    n->cap_origins = nr ? nr : 1;
    for (size_t i = 0; i < nr; i++) {
        const json_t *e = json_array_get(o, i);
        uint64_t node, req;
        if (!json_is_object(e) ||
            cl__get_uint(e, "node", false, 0, 1, UINT32_MAX, &node, err) < 0 ||
            cl__get_uint(e, "req", false, 0, 0, INT64_MAX, &req, err) < 0)
            return tern_err_prefix(err, "origins[%zu]", i);
        if (i > 0 && node <= n->origins[i - 1].nodeid)
            return tern_err_coded(err, TERN_ERR_INVALID, "\"origins\" must be ascending by node");
        n->origins[i] = (struct cl_origin){.nodeid = (uint32_t)node, .req = req};
        n->nr_origins++;
    }
    return 0;
}

static int parse_array(const json_t *doc, const char *key, struct tern_err *err,
                       const json_t **out)
{
    *out = json_object_get(doc, key);
    if (!json_is_array(*out))
        return tern_err_coded(err, TERN_ERR_INVALID, "cluster state: \"%s\" must be an array", key);
    return 0;
}

int cl_state_from_json(struct cl_state *s, const json_t *doc, struct tern_err *err)
{
    if (!json_is_object(doc))
        return tern_err_coded(err, TERN_ERR_INVALID, "cluster state must be a JSON object");
    char format[32];
    uint64_t fv, version, counter;
    if (cl__get_str(doc, "format", NULL, format, sizeof(format), err) < 0 ||
        cl__get_uint(doc, "format_version", false, 0, 0, INT32_MAX, &fv, err) < 0 ||
        cl__get_uint(doc, "version", false, 0, 0, INT64_MAX, &version, err) < 0 ||
        cl__get_uint(doc, "migration_counter", false, 0, 0, INT64_MAX, &counter, err) < 0)
        return tern_err_prefix(err, "cluster state");
    if (strcmp(format, STATE_FORMAT) != 0)
        return tern_err_coded(err, TERN_ERR_INVALID, "not a cluster state (format '%s', expected '%s')",
                            format, STATE_FORMAT);
    if (fv < 1 || fv > STATE_FORMAT_VERSION)
        return tern_err_coded(err, TERN_ERR_INVALID, "cluster state format version %llu is not supported "
                            "(this build reads versions 1 to %d)",
                            (unsigned long long)fv, STATE_FORMAT_VERSION);
    const json_t *hosts, *vms, *migs;
    if (parse_array(doc, "hosts", err, &hosts) < 0 || parse_array(doc, "vms", err, &vms) < 0 ||
        parse_array(doc, "migrations", err, &migs) < 0)
        return -1;

    struct cl_state n;
    memset(&n, 0, sizeof(n));
    n.version = version;
    n.mig_counter = counter;
    /* Format 1 had no configuration: it reads as "no quorum seen". */
    if (fv >= 2 && (parse_config(json_object_get(doc, "config"), fv, &n, err) < 0 ||
                    parse_origins(json_object_get(doc, "origins"), &n, err) < 0)) {
        cl__state_clear(&n);
        return tern_err_prefix(err, "cluster state");
    }
    size_t nh = json_array_size(hosts), nv = json_array_size(vms), nm = json_array_size(migs);
    n.hosts = calloc(nh ? nh : 1, sizeof(*n.hosts));
    n.vms = calloc(nv ? nv : 1, sizeof(*n.vms));
    n.migs = calloc(nm ? nm : 1, sizeof(*n.migs));
    n.cap_hosts = nh ? nh : 1;
    n.cap_vms = nv ? nv : 1;
    n.cap_migs = nm ? nm : 1;
    if (!n.hosts || !n.vms || !n.migs) {
        cl__state_clear(&n);
        return tern_err_coded(err, TERN_ERR_INTERNAL, "out of memory loading the cluster state");
    }
    for (size_t i = 0; i < nh; i++, n.nr_hosts++)
        if (host_from_json(json_array_get(hosts, i), &n.hosts[i], err) < 0) {
            cl__state_clear(&n);
            return tern_err_prefix(err, "cluster state: hosts[%zu]", i);
        }
    for (size_t i = 0; i < nv; i++) {
        if (vm_from_json(json_array_get(vms, i), &n.vms[i], err) < 0) {
            json_decref(n.vms[i].last_migration);
            cl__state_clear(&n);
            return tern_err_prefix(err, "cluster state: vms[%zu]", i);
        }
        n.nr_vms++;
    }
    for (size_t i = 0; i < nm; i++) {
        if (mig_from_json(json_array_get(migs, i), &n.migs[i], err) < 0) {
            json_decref(n.migs[i].progress);
            cl__state_clear(&n);
            return tern_err_prefix(err, "cluster state: migrations[%zu]", i);
        }
        n.nr_migs++;
    }
    for (size_t i = 0; i < n.nr_vms; i++)
        n.vm_charge += cl__vm_charge(&n.vms[i].cfg);
    qsort(n.hosts, n.nr_hosts, sizeof(*n.hosts), cmp_host);
    qsort(n.vms, n.nr_vms, sizeof(*n.vms), cmp_vm);
    qsort(n.migs, n.nr_migs, sizeof(*n.migs), cmp_mig);
    if (check_consistency(&n, err) < 0) {
        cl__state_clear(&n);
        return tern_err_prefix(err, "cluster state");
    }
    cl__state_clear(s);
    *s = n;
    return 0;
}

/* ---- files ---- */

/* {"checksum":"crc32:XXXXXXXX","bytes":N,"state":DOC}\n: the checksum and
 * length cover DOC's bytes exactly as written, so a flipped bit anywhere in
 * the document is found before it is believed. */
#define FILE_HEAD "{\"checksum\":\"crc32:"
#define FILE_MID_FMT "\",\"bytes\":%zu,\"state\":"

char *cl_state_file_text(const struct cl_state *s, size_t *len, struct tern_err *err)
{
    json_t *doc = cl_state_to_json(s);
    char *body = doc ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    if (!body)
        return tern_err_coded(err, TERN_ERR_INTERNAL, "out of memory serializing the cluster "
                              "state"), NULL;
    size_t blen = strlen(body);
    char head[128];
    int hl = snprintf(head, sizeof(head), FILE_HEAD "%08x" FILE_MID_FMT,
                      tern_crc32(0, body, blen), blen);
    char *out = malloc((size_t)hl + blen + 3);
    if (!out) {
        free(body);
        return tern_err_coded(err, TERN_ERR_INTERNAL, "out of memory serializing the cluster "
                              "state"), NULL;
    }
    memcpy(out, head, (size_t)hl);
    memcpy(out + hl, body, blen);
    memcpy(out + hl + blen, "}\n", 3);
    free(body);
    *len = (size_t)hl + blen + 2;
    return out;
}

int cl_state_file_parse(struct cl_state *s, const char *buf, size_t len, const char *path,
                        struct tern_err *err)
{
    const char *doc_start = buf;
    size_t doc_len = len;
    unsigned crc = 0;
    size_t bytes = 0;
    int used = 0;
    bool wrapped = len >= sizeof(FILE_HEAD) - 1 && !memcmp(buf, FILE_HEAD, sizeof(FILE_HEAD) - 1);
    if (wrapped) {
        char head[128];
        size_t hl = len < sizeof(head) - 1 ? len : sizeof(head) - 1;
        memcpy(head, buf, hl);
        head[hl] = '\0';
        if (sscanf(head, FILE_HEAD "%8x\",\"bytes\":%zu,\"state\":%n", &crc, &bytes, &used) != 2 ||
            used == 0)
            return tern_err_coded(err, TERN_ERR_INVALID, "%s: the checksum header is damaged; "
                                  "the file cannot be trusted (move it away: this host then "
                                  "takes the state from the other hosts)", path);
        doc_start = buf + used;
        if (bytes > len - (size_t)used || len - (size_t)used - bytes < 1 ||
            doc_start[bytes] != '}')
            return tern_err_coded(err, TERN_ERR_INVALID, "%s is truncated or damaged (%zu bytes "
                                  "of state announced, %zu present); move it away: this host "
                                  "then takes the state from the other hosts",
                                  path, bytes, len - (size_t)used);
        doc_len = bytes;
        uint32_t have = tern_crc32(0, doc_start, doc_len);
        if (have != crc)
            return tern_err_coded(err, TERN_ERR_INVALID, "%s fails its checksum (crc32 %08x, "
                                  "file says %08x): the file is damaged and is not used; move "
                                  "it away: this host then takes the state from the other hosts",
                                  path, have, crc);
    }
    json_error_t jerr;
    json_t *doc = json_loadb(doc_start, doc_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        return tern_err_coded(err, TERN_ERR_INVALID, "%s is not valid JSON (line %d, column %d: "
                              "%s); move it away to start empty or to take the cluster's copy",
                              path, jerr.line, jerr.column, jerr.text);
    /* Without the wrapper only format 1 (before checksums) is believed. */
    const json_t *fv = json_object_get(doc, "format_version");
    if (!wrapped && !(json_is_integer(fv) && json_integer_value(fv) == 1)) {
        json_decref(doc);
        return tern_err_coded(err, TERN_ERR_INVALID, "%s has no checksum; it cannot be "
                              "trusted (move it away: this host then takes the state from the "
                              "other hosts)", path);
    }
    int rc = cl_state_from_json(s, doc, err);
    json_decref(doc);
    if (rc < 0)
        return tern_err_prefix(err, "%s", path);
    return 0;
}

int cl_state_save(const struct cl_state *s, const char *path, struct tern_err *err)
{
    size_t len;
    char *text = cl_state_file_text(s, &len, err);
    if (!text)
        return tern_err_prefix(err, "saving the cluster state to %s", path);
    int rc = tern_write_file_atomic(path, text, len, 0600, err);
    free(text);
    return rc < 0 ? tern_err_prefix(err, "saving the cluster state") : 0;
}

int cl_state_load(struct cl_state *s, const char *path, struct tern_err *err)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        if (errno == ENOENT) {
            cl__state_clear(s);
            return 1;
        }
        return tern_err_errno(err, errno, "loading the cluster state: cannot stat %s", path);
    }
    uint8_t *buf;
    size_t len;
    if (tern_read_file(path, STATE_FILE_MAX, &buf, &len, err) < 0)
        return tern_err_prefix(err, "loading the cluster state");
    int rc = cl_state_file_parse(s, (const char *)buf, len, path, err);
    free(buf);
    return rc < 0 ? tern_err_prefix(err, "loading the cluster state") : 0;
}
