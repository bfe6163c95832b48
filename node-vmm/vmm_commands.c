#include "vmm_commands.h"

#include "../migrate/migrate.h"
#include "snapshot.h"
#include "vm_state.h"

static json_t *heartbeat_json(struct vm *vm)
{
    struct heartbeat_state hb;
    dev_heartbeat_snapshot(&vm->heartbeat, &hb);
    pthread_mutex_lock(&vm->heartbeat.lock);
    int64_t handover = vm->heartbeat.handover_gap_ns;
    pthread_mutex_unlock(&vm->heartbeat.lock);
    json_t *j = json_pack("{s:I, s:I, s:I, s:I, s:I, s:f, s:I}",
                     "count", (json_int_t)hb.count,
                     "last_seq", (json_int_t)hb.last_seq,
                     "seq_errors", (json_int_t)hb.seq_errors,
                     "first_ns", (json_int_t)hb.first_ns,
                     "last_ns", (json_int_t)hb.last_ns,
                     "max_gap_ms", (double)hb.max_gap_ns / 1e6,
                     "max_gap_end_ns", (json_int_t)hb.max_gap_end_ns);
    if (j && handover >= 0)
        json_object_set_new(j, "handover_gap_ms", json_real((double)handover / 1e6));
    return j;
}

static json_t *exits_json(struct vm *vm)
{
    uint64_t total = 0, io = 0, mmio = 0, intr = 0;
    for (unsigned i = 0; i < vm->nr_vcpus; i++) {
        struct vcpu_stats *s = &vm->vcpus[i].stats;
        total += atomic_load_explicit(&s->exits, memory_order_relaxed);
        io += atomic_load_explicit(&s->io, memory_order_relaxed);
        mmio += atomic_load_explicit(&s->mmio, memory_order_relaxed);
        intr += atomic_load_explicit(&s->intr, memory_order_relaxed);
    }
    uint64_t absent = atomic_load_explicit(&vm->absent_io, memory_order_relaxed);
    return json_pack("{s:I, s:I, s:I, s:I, s:I}", "total", (json_int_t)total, "io",
                     (json_int_t)io, "mmio", (json_int_t)mmio, "interrupted",
                     (json_int_t)intr, "absent_io", (json_int_t)absent);
}

json_t *vmm_status_json(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    const char *state = vm_state_name(vm->state);
    unsigned holds = vm->holds;
    pthread_mutex_unlock(&vm->lock);
    json_t *held = json_array();
    for (unsigned bit = VM_HOLD_OPERATOR; bit <= VM_HOLD_SAVE; bit <<= 1)
        if (holds & bit)
            json_array_append_new(held, json_string(vm_hold_name(bit)));
    return json_pack("{s:s, s:o, s:i, s:I, s:f, s:i, s:o, s:o, s:{s:I, s:I}}",
                     "state", state,
                     "held_by", held,
                     "vcpus", (int)vm->nr_vcpus,
                     "mem_bytes", (json_int_t)vm->mem.size,
                     "uptime_s", vm_uptime(vm),
                     "tsc_khz", (int)vm->tsc_khz,
                     "exits", exits_json(vm),
                     "heartbeat", heartbeat_json(vm),
                     "serial", "tx_bytes", (json_int_t)vm->serial.tx_bytes,
                     "tx_dropped", (json_int_t)vm->serial.tx_dropped);
}

/* While receiving: refuses the commands that need a running guest. */
static int refuse_while_incoming(struct vmm_ctl *c, const char *cmd, struct tern_err *err)
{
    if (!c->incoming)
        return 0;
    return tern_err_set(err, "%s: this VM is receiving an incoming migration; until the guest "
                             "runs here only status, stop, migrate-commit and migrate-abort work",
                        cmd);
}

static json_t *cmd_status(void *opaque, json_t *req, struct tern_err *err)
{
    (void)req;
    struct vmm_ctl *c = opaque;
    struct vm *vm = c->vm;
    if (c->incoming) {
        json_t *s = json_pack("{s:s, s:i, s:I, s:o}", "state", "incoming", "vcpus",
                              (int)vm->nr_vcpus, "mem_bytes", (json_int_t)vm->mem.size,
                              "incoming", mig_incoming_status(c->incoming));
        if (!s)
            tern_err_set(err, "out of memory building status");
        return s;
    }
    json_t *s = vmm_status_json(vm);
    if (!s)
        tern_err_set(err, "out of memory building status");
    json_t *mig = mig_source_status(vm->migration);
    if (s && mig)
        json_object_set_new(s, "migration", mig);
    return s;
}

/* {"cmd":"migrate","uri":"tls://HOST:PORT","tls_dir":DIR,"token":T,
 *  "streams":N,"downtime_ms":N,"max_seconds":N,"commit_gate":BOOL}: starts
 * a live migration in the background; its progress and result appear in
 * status. */
static json_t *cmd_migrate(void *opaque, json_t *req, struct tern_err *err)
{
    struct vmm_ctl *c = opaque;
    struct vm *vm = c->vm;
    if (refuse_while_incoming(c, "migrate", err) < 0)
        return NULL;
    struct mig_params p;
    if (mig_params_from_json(req, &p, err) < 0)
        return NULL;
    pthread_mutex_lock(&vm->lock);
    enum vm_state st = vm->state;
    pthread_mutex_unlock(&vm->lock);
    if (st != VM_STATE_RUNNING)
        return tern_err_set(err, "only a running VM can migrate (it is %s)", vm_state_name(st)), NULL;
    if (c->migration_changed)
        c->migration_changed(c->loop_opaque, true);
    int rc = mig_source_start(&vm->migration, vm, &p, err);
    if (c->migration_changed)
        c->migration_changed(c->loop_opaque, false);
    if (rc < 0)
        return NULL;
    return json_pack("{s:s}", "migration", "started");
}

static json_t *cmd_migrate_cancel(void *opaque, json_t *req, struct tern_err *err)
{
    (void)req;
    struct vmm_ctl *c = opaque;
    if (refuse_while_incoming(c, "migrate-cancel", err) < 0)
        return NULL;
    if (mig_source_cancel(c->vm->migration, err) < 0)
        return NULL;
    return json_pack("{s:s}", "migration", "cancelling");
}

/* migrate-commit: on a destination, the agent's commit (--commit-gate);
 * on a source in phase "ready" of a gated migration, send COMMIT. */
static json_t *cmd_migrate_commit(void *opaque, json_t *req, struct tern_err *err)
{
    (void)req;
    struct vmm_ctl *c = opaque;
    if (c->incoming) {
        if (mig_incoming_commit(c->incoming, err) < 0)
            return NULL;
        return json_pack("{s:s}", "migration", "committing");
    }
    if (c->received && !c->vm->migration) /* the guest runs here already */
        return json_pack("{s:s}", "migration", "committed");
    if (mig_source_commit(c->vm->migration, err) < 0)
        return NULL;
    return json_pack("{s:s}", "migration", "committing");
}

/* migrate-abort: on a destination, give up (exit 75, the guest never ran
 * here); on a source in phase "ready", take the guest back. */
static json_t *cmd_migrate_abort(void *opaque, json_t *req, struct tern_err *err)
{
    (void)req;
    struct vmm_ctl *c = opaque;
    if (c->incoming) {
        if (mig_incoming_abort(c->incoming, "aborted by the agent") == 1)
            return tern_err_set(err, "migrate-abort: too late, the guest was committed here and "
                                     "is starting"),
                   NULL;
        return json_pack("{s:s}", "migration", "aborting");
    }
    if (c->received && !c->vm->migration)
        return tern_err_set(err, "migrate-abort: the guest was committed here and runs"), NULL;
    if (mig_source_abort(c->vm->migration, err) < 0)
        return NULL;
    return json_pack("{s:s}", "migration", "aborting");
}

/* The operator's pause is one hold among others (vm.h): resume lifts it,
 * but the guest runs again only when nothing else holds it. Pausing while
 * a migration runs is refused: the guest would run on at the destination
 * anyway once the migration succeeds. */
static json_t *cmd_pause(void *opaque, json_t *req, struct tern_err *err)
{
    (void)req;
    struct vmm_ctl *c = opaque;
    struct vm *vm = c->vm;
    if (refuse_while_incoming(c, "pause", err) < 0)
        return NULL;
    if (mig_source_running(vm->migration))
        return tern_err_set(err, "pause: a migration is running; cancel it first "
                                 "(migrate-cancel) or wait until it ends"),
               NULL;
    if (vm_pause(vm, VM_HOLD_OPERATOR, err) < 0)
        return NULL;
    return json_pack("{s:s}", "state", "paused");
}

static json_t *cmd_resume(void *opaque, json_t *req, struct tern_err *err)
{
    (void)req;
    struct vmm_ctl *c = opaque;
    struct vm *vm = c->vm;
    if (refuse_while_incoming(c, "resume", err) < 0)
        return NULL;
    int left = vm_resume(vm, VM_HOLD_OPERATOR, err);
    if (left < 0)
        return NULL;
    if (left > 0) {
        char names[96];
        return tern_err_set(err, "resume: the guest stays paused, held by the %s (%s); it runs "
                                 "again when that ends",
                            vm_hold_names((unsigned)left, names, sizeof(names)),
                            left & VM_HOLD_MIGRATION
                                ? "a migration that has paused the guest for its handover must "
                                  "not let it run here too"
                                : "not the operator's pause"),
               NULL;
    }
    return json_pack("{s:s}", "state", "running");
}

/* While receiving, stop gives up the incoming migration (exit 75, the
 * guest never ran here) unless it was already committed here: then the
 * guest is stopped right after it starts. */
static json_t *cmd_stop(void *opaque, json_t *req, struct tern_err *err)
{
    (void)req;
    (void)err;
    struct vmm_ctl *c = opaque;
    if (c->incoming) {
        if (mig_incoming_abort(c->incoming, "stopped through the control socket") == 1)
            c->stop_after_start = true;
        return json_pack("{s:s}", "state", "stopping");
    }
    vm_request_end(c->vm, VMM_EXIT_OK, "stopped through the control socket");
    return json_pack("{s:s}", "state", "stopping");
}

/* {"cmd":"save","file":ABSOLUTE_PATH,"stop":BOOL}: pause, drain devices,
 * write the snapshot, then resume (or end the VM when stop is true). A
 * failed save leaves the VM as it was. */
static json_t *cmd_save(void *opaque, json_t *req, struct tern_err *err)
{
    struct vmm_ctl *c = opaque;
    struct vm *vm = c->vm;
    if (refuse_while_incoming(c, "save", err) < 0)
        return NULL;
    const char *file = json_string_value(json_object_get(req, "file"));
    json_t *stop_j = json_object_get(req, "stop");
    if (!file || file[0] != '/')
        return tern_err_set(err, "save needs \"file\": an absolute path"), NULL;
    if (stop_j && !json_is_boolean(stop_j))
        return tern_err_set(err, "save: \"stop\" must be true or false"), NULL;
    bool stop = json_is_true(stop_j);
    /* A save drains and then restarts the disks, which would serve requests
     * the destination now serves: never after the hand-over (invariant 7). */
    if (atomic_load(&vm->disks_handed_over))
        return tern_err_set(err, "save: this VM was handed over to a migration's destination (its "
                                 "disk locks went with it); this copy must not run or write again"),
               NULL;
    /* Its own hold: a guest the operator paused stays paused afterwards. */
    if (vm_pause(vm, VM_HOLD_SAVE, err) < 0)
        return NULL;
    if (vm_quiesce_devices(vm, err) < 0) {
        vm_resume(vm, VM_HOLD_SAVE, NULL);
        return NULL;
    }
    struct snapshot_stats st;
    if (snapshot_write(vm, file, &st, err) < 0) {
        vm_unquiesce_devices(vm);
        vm_resume(vm, VM_HOLD_SAVE, NULL);
        return NULL;
    }
    if (stop) {
        vm_request_end(vm, VMM_EXIT_OK, "saved to %s and stopped", file);
    } else {
        vm_unquiesce_devices(vm);
        vm_resume(vm, VM_HOLD_SAVE, NULL);
    }
    return json_pack("{s:s, s:I, s:I, s:I, s:f, s:b}", "file", file, "bytes", (json_int_t)st.bytes,
                     "pages", (json_int_t)st.pages, "zero_pages", (json_int_t)st.zero_pages,
                     "seconds", st.seconds, "stopped", stop);
}

const struct control_command vmm_commands[] = {
    {"migrate", cmd_migrate},
    {"migrate-cancel", cmd_migrate_cancel},
    {"migrate-commit", cmd_migrate_commit},
    {"migrate-abort", cmd_migrate_abort},
    {"save", cmd_save},
    {"status", cmd_status},
    {"pause", cmd_pause},
    {"resume", cmd_resume},
    {"stop", cmd_stop},
};
const size_t vmm_nr_commands = sizeof(vmm_commands) / sizeof(vmm_commands[0]);
