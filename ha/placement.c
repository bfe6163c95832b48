/* Free capacity and deterministic placement. Both read only the state, so
 * every host computes the same answer from the same state. */
#include "state_internal.h"

#include <string.h>

/* A VM holds its host's capacity from start until it is known to be gone. */
static bool vm_holds_capacity(const struct cl_vm *vm)
{
    return vm->run != CL_RUN_STOPPED && vm->run != CL_RUN_CRASHED;
}

void cl_state_host_free(const struct cl_state *s, const char *host, uint64_t *mem_mib,
                        uint32_t *vcpus)
{
    const struct cl_host *h = cl_state_host(s, host);
    if (!h) {
        *mem_mib = 0;
        *vcpus = 0;
        return;
    }
    uint64_t mem = 0, cpus = 0;
    for (size_t i = 0; i < s->nr_vms; i++) {
        const struct cl_vm *vm = &s->vms[i];
        if (vm_holds_capacity(vm) && strcmp(vm->owner, h->name) == 0) {
            mem += vm->cfg.mem_mib;
            cpus += vm->cfg.vcpus;
        }
    }
    /* Until it commits, an incoming VM is owned by its source but already
     * needs its room on the destination. */
    for (size_t i = 0; i < s->nr_migs; i++) {
        const struct cl_migration *m = &s->migs[i];
        if (m->phase == CL_MIG_COMMITTED || strcmp(m->to, h->name) != 0)
            continue;
        const struct cl_vm *vm = cl_state_vm(s, m->vm);
        if (vm) {
            mem += vm->cfg.mem_mib;
            cpus += vm->cfg.vcpus;
        }
    }
    /* A host may have announced less than it already runs: no room, not a
     * wrap-around. */
    *mem_mib = mem >= h->mem_mib ? 0 : h->mem_mib - mem;
    *vcpus = cpus >= h->vcpus ? 0 : (uint32_t)(h->vcpus - cpus);
}

int cl_state_place(const struct cl_state *s, const struct cl_vm_config *vm, const char *exclude,
                   char out[CL_NAME_MAX], struct tern_err *err)
{
    const struct cl_host *best = NULL;
    uint64_t best_mem = 0;
    size_t online_active = 0;
    /* Hosts are sorted by name, so on equal free memory the first wins. */
    for (size_t i = 0; i < s->nr_hosts; i++) {
        const struct cl_host *h = &s->hosts[i];
        if (!h->online || h->mode != CL_HOST_ACTIVE)
            continue;
        if (exclude && strcmp(exclude, h->name) == 0)
            continue;
        online_active++;
        uint64_t mem;
        uint32_t cpus;
        cl_state_host_free(s, h->name, &mem, &cpus);
        if (mem < vm->mem_mib || cpus < vm->vcpus)
            continue;
        if (!best || mem > best_mem) {
            best = h;
            best_mem = mem;
        }
    }
    if (!best) {
        if (online_active == 0)
            return tern_err_coded(err, TERN_ERR_NO_CAPACITY, "no online host in active mode%s%s%s",
                                exclude ? " (besides '" : "", exclude ? exclude : "",
                                exclude ? "')" : "");
        return tern_err_coded(err, TERN_ERR_NO_CAPACITY,
                            "none of the %zu online active hosts has %llu MiB "
                            "and %u vCPUs free",
                            online_active, (unsigned long long)vm->mem_mib, vm->vcpus);
    }
    memcpy(out, best->name, CL_NAME_MAX);
    return 0;
}
