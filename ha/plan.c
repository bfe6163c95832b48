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

/* Hosts a VM may be placed on: online, active, not being fenced. */
static bool candidate(const struct cl_host *h, const char *exclude)
{
    return h->online && h->mode == CL_HOST_ACTIVE && h->fence == CL_FENCE_NONE &&
           !(exclude && !strcmp(exclude, h->name));
}

/* Whether a VM of `group` other than `self` has (or is getting) its place
 * on `host`, in the state or earlier in this plan. */
static bool group_on_host(const struct cl_state *s, const struct cl_placement *p, size_t done,
                          const char *group, const char *self, const char *host)
{
    for (size_t i = 0; i < s->nr_vms; i++) {
        const struct cl_vm *v = &s->vms[i];
        if (strcmp(v->group, group) != 0 || !strcmp(v->name, self))
            continue;
        bool there = !strcmp(v->owner, host) && v->run != CL_RUN_STOPPED &&
                     v->run != CL_RUN_CRASHED;
        for (size_t k = 0; k < s->nr_migs && !there; k++)
            there = !strcmp(s->migs[k].vm, v->name) && !strcmp(s->migs[k].to, host);
        /* Moving away in this very plan: it leaves its host. */
        for (size_t k = 0; k < done && there; k++)
            if (!strcmp(p[k].vm, v->name) && p[k].host[0])
                there = false;
        if (there)
            return true;
    }
    for (size_t k = 0; k < done; k++) {
        const struct cl_vm *v = cl_state_vm(s, p[k].vm);
        if (v && !strcmp(p[k].host, host) && !strcmp(v->group, group))
            return true;
    }
    return false;
}

size_t cl_plan_place(const struct cl_state *s, struct cl_placement *p, size_t n,
                     const char *exclude)
{
    struct room *rooms = calloc(s->nr_hosts ? s->nr_hosts : 1, sizeof(*rooms));
    size_t nr = 0, placed = 0;
    if (!rooms) {
        for (size_t i = 0; i < n; i++) {
            p[i].host[0] = '\0';
            snprintf(p[i].why, sizeof(p[i].why), "%s", CL_PLAN_OOM);
        }
        return 0;
    }
    /* Hosts are sorted by name: on equal free memory the first wins. */
    for (size_t i = 0; i < s->nr_hosts; i++) {
        const struct cl_host *h = &s->hosts[i];
        if (!candidate(h, exclude))
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
        /* Fitting hosts; those without a VM of its group first (a group
         * shares a host only when nothing else fits), then the most free
         * memory. */
        ssize_t best = -1;
        bool best_clean = false;
        for (size_t k = 0; k < nr; k++) {
            if (rooms[k].mem < vm->cfg.mem_mib || rooms[k].vcpus < vm->cfg.vcpus)
                continue;
            bool clean = !vm->group[0] ||
                         !group_on_host(s, p, i, vm->group, vm->name, rooms[k].host);
            if (best < 0 || (clean && !best_clean) ||
                (clean == best_clean && rooms[k].mem > rooms[best].mem)) {
                best = (ssize_t)k;
                best_clean = clean;
            }
        }
        if (best < 0) {
            if (nr)
                snprintf(p[i].why, sizeof(p[i].why),
                         "none of the %zu online active hosts has %llu MiB and %u vCPUs free",
                         nr, (unsigned long long)vm->cfg.mem_mib, vm->cfg.vcpus);
            else if (exclude)
                snprintf(p[i].why, sizeof(p[i].why),
                         "no online host in active mode (besides '%s')", exclude);
            else
                snprintf(p[i].why, sizeof(p[i].why), "no online host in active mode");
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

/* The VMs matching `want`, highest priority first, then by name, placed. */
static size_t plan_ordered(const struct cl_state *s, bool (*want)(const struct cl_vm *, const char *),
                           const char *host, struct cl_placement *out, size_t max)
{
    const struct cl_vm **vms = calloc(s->nr_vms ? s->nr_vms : 1, sizeof(*vms));
    if (!vms)
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < s->nr_vms; i++)
        if (want(&s->vms[i], host))
            vms[n++] = &s->vms[i];
    qsort(vms, n, sizeof(*vms), by_priority_then_name);
    if (n > max)
        n = max;
    for (size_t i = 0; i < n; i++)
        snprintf(out[i].vm, sizeof(out[i].vm), "%s", vms[i]->name);
    free(vms);
    cl_plan_place(s, out, n, host);
    return n;
}

static bool waits_for_recovery(const struct cl_vm *vm, const char *unused)
{
    (void)unused;
    return vm->recover;
}

size_t cl_plan_recovery(const struct cl_state *s, struct cl_placement *out, size_t max)
{
    return plan_ordered(s, waits_for_recovery, NULL, out, max);
}

static bool runs_on(const struct cl_vm *vm, const char *host)
{
    return !strcmp(vm->owner, host) && !vm->migration_id && vm->run == CL_RUN_RUNNING;
}

size_t cl_plan_evacuation(const struct cl_state *s, const char *host, struct cl_placement *out,
                          size_t max)
{
    return plan_ordered(s, runs_on, host, out, max);
}

