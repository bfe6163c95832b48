#include "vm_state.h"

#include "dev_virtio_blk.h"
#include "platform_state.h"
#include "vcpu_state.h"

int vm_quiesce_devices(struct vm *vm, struct tern_err *err)
{
    for (unsigned i = 0; i < vm->nr_disks; i++) {
        if (virtio_blk_quiesce(vm->disks[i], err) < 0) {
            for (unsigned k = 0; k < i; k++)
                virtio_blk_unquiesce(vm->disks[k]);
            return tern_err_prefix(err, "quiescing disk %u", i);
        }
    }
    return 0;
}

void vm_unquiesce_devices(struct vm *vm)
{
    for (unsigned i = 0; i < vm->nr_disks; i++)
        virtio_blk_unquiesce(vm->disks[i]);
}

int vm_state_save(struct vm *vm, struct rec_buf *b, struct tern_err *err)
{
    /* Restore applies records in this order. The platform comes last: a
     * device's restore may raise its interrupt line, and KVM_SET_IRQCHIP
     * afterwards puts the interrupt controllers back exactly as saved; and
     * the KVM clock starts running the moment it is set. */
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        if (vcpu_state_save(&vm->vcpus[i], b, err) < 0)
            return -1;
    pthread_mutex_lock(&vm->serial.lock);
    uart8250_state_save(&vm->serial.uart, b);
    pthread_mutex_unlock(&vm->serial.lock);
    dev_heartbeat_state_save(&vm->heartbeat, b);
    for (unsigned i = 0; i < vm->nr_disks; i++)
        virtio_blk_state_save(vm->disks[i], b);
    if (platform_state_save(vm, b, err) < 0)
        return -1;
    return rec_buf_check(b, err);
}

int vm_state_apply(struct vm *vm, struct vm_state_restore *ctx, const struct rec_header *h,
                   struct rec_reader *payload, struct tern_err *err)
{
    switch (h->type) {
    case VCPU_STATE_RECORD: {
        uint32_t index;
        if (vcpu_state_peek_index(payload, &index, err) < 0)
            return -1;
        if (index >= vm->nr_vcpus)
            return tern_err_set(err, "state for vCPU %u, but the VM has %u vCPUs", index,
                                vm->nr_vcpus);
        if (ctx->vcpu_seen[index])
            return tern_err_set(err, "two state records for vCPU %u", index);
        if (vcpu_state_load(&vm->vcpus[index], h, payload, err) < 0)
            return -1;
        ctx->vcpu_seen[index] = true;
        ctx->vcpus_loaded++;
        return 1;
    }
    case PLATFORM_STATE_RECORD:
        if (platform_state_load(vm, h, payload, err) < 0)
            return -1;
        ctx->platform = true;
        return 1;
    case UART_STATE_RECORD: {
        pthread_mutex_lock(&vm->serial.lock);
        int rc = uart8250_state_load(&vm->serial.uart, h, payload, err);
        pthread_mutex_unlock(&vm->serial.lock);
        if (rc < 0)
            return -1;
        ctx->uart = true;
        return 1;
    }
    case HEARTBEAT_STATE_RECORD:
        if (dev_heartbeat_state_load(&vm->heartbeat, h, payload, err) < 0)
            return -1;
        ctx->heartbeat = true;
        return 1;
    case VIRTIO_BLK_STATE_RECORD: {
        uint32_t index;
        if (virtio_blk_state_peek_index(payload, &index, err) < 0)
            return -1;
        if (index >= vm->nr_disks)
            return tern_err_set(err, "state for disk %u, but the VM has %u disk(s)", index,
                                vm->nr_disks);
        if (ctx->disk_seen[index])
            return tern_err_set(err, "two state records for disk %u", index);
        if (virtio_blk_state_load(vm->disks[index], h, payload, err) < 0)
            return tern_err_prefix(err, "disk %u", index);
        ctx->disk_seen[index] = true;
        ctx->disks_loaded++;
        return 1;
    }
    default:
        return 0;
    }
}

int vm_state_restore_finish(struct vm *vm, const struct vm_state_restore *ctx,
                            struct tern_err *err)
{
    if (ctx->vcpus_loaded != vm->nr_vcpus)
        return tern_err_set(err, "state for %u of %u vCPUs", ctx->vcpus_loaded, vm->nr_vcpus);
    if (!ctx->platform)
        return tern_err_set(err, "no interrupt controller / timer state");
    if (!ctx->uart)
        return tern_err_set(err, "no serial port state");
    if (!ctx->heartbeat)
        return tern_err_set(err, "no heartbeat device state");
    if (ctx->disks_loaded != vm->nr_disks)
        return tern_err_set(err, "state for %u of %u disks", ctx->disks_loaded, vm->nr_disks);
    return 0;
}
