/* The ranges of the values a client may ask for, in one place. ternd's
 * request handling (agent/requests.c), the cluster state that every host
 * applies (ha/state_internal.h) and ternctl (cli/args.c) check these same
 * numbers, so the CLI refuses exactly what the agent refuses; the docs
 * (docs/agent-api.md, docs/ternctl.md, ternctl(1)) state them. tern-vmm
 * can run any VM within them (checked in node-vmm/options.c). Byte sizes
 * of names, paths and command lines are in ha/cluster_state.h. */
#ifndef TERN_COMMON_API_LIMITS_H
#define TERN_COMMON_API_LIMITS_H

#include <stdint.h>

/* A VM's memory, in MiB: 16 MiB to 1 TiB. */
#define TERN_VM_MEM_MIN_MIB 16u
#define TERN_VM_MEM_MAX_MIB 1048576u

/* A VM's vCPUs. */
#define TERN_VM_VCPUS_MIN 1u
#define TERN_VM_VCPUS_MAX 64u

/* Disks per VM. */
#define TERN_VM_DISKS_MAX 4

/* A VM's placement priority (higher is placed first). */
#define TERN_PRIORITY_MIN INT32_MIN
#define TERN_PRIORITY_MAX INT32_MAX

/* vm.migrate's downtime_ms: the pause a migration aims for. */
#define TERN_DOWNTIME_MS_MIN 1u
#define TERN_DOWNTIME_MS_MAX 60000u
#define TERN_DOWNTIME_MS_DEFAULT 50u

/* host.evacuate's parallel: migrations at a time. */
#define TERN_PARALLEL_MIN 1u
#define TERN_PARALLEL_MAX 16u
#define TERN_PARALLEL_DEFAULT 2u

#endif
