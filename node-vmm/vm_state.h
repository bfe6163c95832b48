/* The whole state of a VM except its RAM, as a sequence of records: every
 * vCPU, the in-kernel platform devices and each emulated device. Snapshots
 * write it to a file; live migration sends it at the end of its stream.
 * Restoring applies the records one by one to a VM freshly created with the
 * same configuration, then checks nothing was missing. */
#ifndef TERN_NODE_VMM_VM_STATE_H
#define TERN_NODE_VMM_VM_STATE_H

#include <stdbool.h>

#include "../proto/record.h"
#include "options.h"
#include "vm.h"

/* Stops the devices from taking new work and waits for what is in flight
 * (virtio requests): after vm_pause, before saving state. */
int vm_quiesce_devices(struct vm *vm, struct tern_err *err);
void vm_unquiesce_devices(struct vm *vm);

/* Appends the state records of a paused, quiesced VM. */
int vm_state_save(struct vm *vm, struct rec_buf *b, struct tern_err *err);

struct vm_state_restore {
    bool vcpu_seen[VMM_MAX_VCPUS];
    bool disk_seen[VMM_MAX_DISKS];
    unsigned vcpus_loaded;
    bool platform, uart, heartbeat;
    unsigned disks_loaded;
};

/* Applies one record if it is a state record: 1 if applied, 0 if the type is
 * not a state record (the caller handles it), -1 on error. */
int vm_state_apply(struct vm *vm, struct vm_state_restore *ctx, const struct rec_header *h,
                   struct rec_reader *payload, struct tern_err *err);

/* After the last record: fails, naming it, if some state never came. */
int vm_state_restore_finish(struct vm *vm, const struct vm_state_restore *ctx,
                            struct tern_err *err);

#endif
