/* Failover, inside apply (deterministic, no I/O): what a fenced host's
 * VMs become, and placing the HA ones on the survivors (design.md "High
 * availability"). Only a fence releases a lost host's VMs: until then they
 * may still run there, so nothing of theirs starts elsewhere. */
#include "plan.h"
#include "state_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cl__release_fenced(struct cl_state *s, struct cl_host *h)
{
    char why[CL_REASON_MAX];
    /* Migrations still naming it end; a committed one to it: the VM was
     * its (released below with the rest). */
    snprintf(why, sizeof(why), "host %s was fenced", h->name);
    cl__end_migrations_of(s, h->name, why);
    for (size_t i = 0; i < s->nr_migs;) {
        struct cl_migration *m = &s->migs[i];
        if (!strcmp(m->to, h->name))
            cl__mig_end(s, m, "failed", why);
        else
            i++;
    }
    for (size_t i = 0; i < s->nr_vms; i++) {
        struct cl_vm *vm = &s->vms[i];
        if (strcmp(vm->owner, h->name) != 0 || vm->migration_id)
            continue;
        bool was_running = vm->run != CL_RUN_STOPPED && vm->run != CL_RUN_CRASHED;
        vm->owner[0] = '\0';
        vm->run = CL_RUN_STOPPED;
        if (vm->ha && vm->desired == CL_VM_RUNNING && was_running) {
            vm->recover = true;
            snprintf(vm->recovered_from, sizeof(vm->recovered_from), "%s", h->name);
            snprintf(vm->detail, sizeof(vm->detail),
                     "its host %s was fenced; waiting for a host to restart it", h->name);
        } else {
            if (was_running)
                vm->desired = CL_VM_STOPPED;
            snprintf(vm->detail, sizeof(vm->detail), "stopped: its host %s was fenced%s",
                     h->name, vm->ha ? "" : " (not an HA VM: start it again by hand)");
        }
    }
}

int cl__recover(struct cl_state *s)
{
    if (!s->quorate)
        return 0; /* starting is for a quorate configuration only */
    size_t n = cl_state_nr_recovering(s);
    if (n == 0)
        return 0;
    struct cl_placement *p = calloc(n, sizeof(*p));
    size_t got = p ? cl_plan_recovery(s, p, n) : 0;
    bool oom = !p || got < n;
    for (size_t i = 0; i < got && !oom; i++)
        oom = !p[i].host[0] && !strcmp(p[i].why, CL_PLAN_OOM);
    if (oom) {
        /* Out of memory here only: this replica would differ from the
         * others. It is rebuilt (cl_state_take_fault). */
        free(p);
        s->fault = true;
        return -1;
    }
    for (size_t i = 0; i < got; i++) {
        struct cl_vm *vm = cl__vm(s, p[i].vm, NULL);
        if (!vm)
            continue;
        if (!p[i].host[0]) {
            snprintf(vm->detail, sizeof(vm->detail), "HA restart waits for room: %s", p[i].why);
            continue;
        }
        snprintf(vm->owner, sizeof(vm->owner), "%s", p[i].host);
        vm->run = CL_RUN_STARTING;
        vm->desired = CL_VM_RUNNING;
        vm->recover = false;
        snprintf(vm->detail, sizeof(vm->detail), "restarted by HA on %s (its host %s failed)",
                 p[i].host, vm->recovered_from);
    }
    free(p);
    return 0;
}
