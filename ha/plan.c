/* Placement plans (plan.h). */
#include "plan.h"

#include "state_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct room {
    const char *host;
    uint64_t mem;
    uint32_t vcpus;
};

size_t cl_plan_place(const struct cl_state *s, struct cl_placement *p, size_t n,
                     const char *exclude)
{
    struct room *rooms = calloc(s->nr_hosts ? s->nr_hosts : 1, sizeof(*rooms));
    size_t nr = 0, placed = 0;
    if (!rooms) {
        for (size_t i = 0; i < n; i++) {
            p[i].host[0] = '\0';
            snprintf(p[i].why, sizeof(p[i].why), "out of memory planning");
        }
        return 0;
    }
    /* Hosts are sorted by name: on equal free memory the first wins. */
    for (size_t i = 0; i < s->nr_hosts; i++) {
        const struct cl_host *h = &s->hosts[i];
        if (!h->online || h->mode != CL_HOST_ACTIVE || (exclude && !strcmp(exclude, h->name)))
            continue;
        rooms[nr].host = h->name;
        cl_state_host_free(s, h->name, &rooms[nr].mem, &rooms[nr].vcpus);
        nr++;
    }
    for (size_t i = 0; i < n; i++) {
        const struct cl_vm *vm = cl_state_vm(s, p[i].vm);
        p[i].host[0] = '\0';
        p[i].why[0] = '\0';
        if (!vm) {
            snprintf(p[i].why, sizeof(p[i].why), "not defined");
            continue;
        }
        ssize_t best = -1;
        for (size_t k = 0; k < nr; k++)
            if (rooms[k].mem >= vm->cfg.mem_mib && rooms[k].vcpus >= vm->cfg.vcpus &&
                (best < 0 || rooms[k].mem > rooms[best].mem))
                best = (ssize_t)k;
        if (best < 0) {
            if (nr)
                snprintf(p[i].why, sizeof(p[i].why),
                         "none of the %zu online active hosts has %llu MiB and %u vCPUs free",
                         nr, (unsigned long long)vm->cfg.mem_mib, vm->cfg.vcpus);
            else
                snprintf(p[i].why, sizeof(p[i].why), "no other online host in active mode");
            continue;
        }
        snprintf(p[i].host, sizeof(p[i].host), "%s", rooms[best].host);
        rooms[best].mem -= vm->cfg.mem_mib;
        rooms[best].vcpus -= vm->cfg.vcpus;
        placed++;
    }
    free(rooms);
    return placed;
}

static int by_priority_then_name(const void *a, const void *b)
{
    const struct cl_vm *x = *(const struct cl_vm *const *)a, *y = *(const struct cl_vm *const *)b;
    if (x->priority != y->priority)
        return x->priority > y->priority ? -1 : 1;
    return strcmp(x->name, y->name);
}

size_t cl_plan_evacuation(const struct cl_state *s, const char *host, struct cl_placement *out,
                          size_t max)
{
    const struct cl_vm **vms = calloc(s->nr_vms ? s->nr_vms : 1, sizeof(*vms));
    if (!vms)
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < s->nr_vms; i++) {
        const struct cl_vm *vm = &s->vms[i];
        if (!strcmp(vm->owner, host) && !vm->migration_id &&
            (vm->run == CL_RUN_RUNNING))
            vms[n++] = vm;
    }
    qsort(vms, n, sizeof(*vms), by_priority_then_name);
    if (n > max)
        n = max;
    for (size_t i = 0; i < n; i++)
        snprintf(out[i].vm, sizeof(out[i].vm), "%s", vms[i]->name);
    free(vms);
    cl_plan_place(s, out, n, host);
    return n;
}
