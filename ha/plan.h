/* Placement plans: where VMs go when several must move at once (a host
 * evacuated, a fenced host's HA VMs recovered). Pure: a state in, a plan out;
 * every host computes the same plan from the same state. Placements
 * reserve room as they are made, so two VMs of one plan never count on the
 * same free memory. */
#ifndef TERN_HA_PLAN_H
#define TERN_HA_PLAN_H

#include <stdbool.h>
#include <stddef.h>

#include "cluster_state.h"

/* The `why` of a placement that failed for lack of memory on this host
 * (not a decision: callers inside apply treat it as a local fault). */
#define CL_PLAN_OOM "out of memory planning"

struct cl_placement {
    char vm[CL_NAME_MAX];
    char host[CL_NAME_MAX]; /* where it goes ("" when it fits nowhere) */
    char why[160];          /* when it fits nowhere: why */
};

/* Places p[0..n) in that order (each p[i].vm a defined VM) on online,
 * active hosts not being fenced, other than `exclude` (may be NULL): hosts
 * without a VM of the VM's anti-affinity group first, then the most free
 * memory, then name; room reserved for the earlier ones. Returns how many
 * found a host. */
size_t cl_plan_place(const struct cl_state *s, struct cl_placement *p, size_t n,
                     const char *exclude);

/* Evacuating `host`: the VMs it runs that are not migrating already,
 * highest priority first, then by name, placed as cl_plan_place does, at
 * most `max` of them. Returns how many entries were filled (placed or
 * not). */
size_t cl_plan_evacuation(const struct cl_state *s, const char *host, struct cl_placement *out,
                          size_t max);

/* Recovery: the HA VMs of fenced hosts that wait for a host (vm->recover),
 * highest priority first, then by name, placed as cl_plan_place does, at
 * most `max`. Returns how many entries were filled (placed or not). */
size_t cl_plan_recovery(const struct cl_state *s, struct cl_placement *out, size_t max);

#endif
