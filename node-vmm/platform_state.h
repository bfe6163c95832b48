/* Saving and restoring the VM-wide KVM state as one versioned record
 * (PLATFORM_STATE_RECORD, layout in docs/snapshot-state.md): the in-kernel
 * PICs (master and slave) and IOAPIC (KVM_GET_IRQCHIP), the PIT
 * (KVM_GET_PIT2) and the KVM clock (KVM_GET_CLOCK). The local APICs are
 * per vCPU (vcpu_state.h).
 *
 * Split like vcpu_state.h: read/apply talk to KVM, encode/decode to bytes
 * (pure, fuzzed), save/load are the two composed. */
#ifndef TERN_NODE_VMM_PLATFORM_STATE_H
#define TERN_NODE_VMM_PLATFORM_STATE_H

#include <linux/kvm.h>
#include <stdint.h>

#include "../common/err.h"
#include "../proto/record.h"
#include "../proto/record_types.h"

struct vm;

#define PLATFORM_STATE_RECORD REC_TYPE_PLATFORM_STATE
#define PLATFORM_STATE_VERSION 1u

struct platform_state {
    struct kvm_pic_state pic[2];    /* KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE */
    struct kvm_ioapic_state ioapic;
    struct kvm_pit_state2 pit;
    struct kvm_clock_data clock;    /* as KVM_GET_CLOCK returned it */
};

/* Reads the state from KVM. The VM should be paused (the PIT and the clock
 * run on regardless; the irqchip only changes when devices or vCPUs act).
 * Errors name the ioctl and errno. */
int platform_state_read(struct vm *vm, struct platform_state *s, struct tern_err *err);

/* Writes `s` into a VM built with the same configuration, in this order:
 * PIC master, PIC slave, IOAPIC, PIT, and the clock last. KVM restarts each
 * PIT channel's count from now (the saved count_load_time, a host
 * monotonic time, is not used). The clock is set to the saved value
 * (KVM_SET_CLOCK without KVM_CLOCK_REALTIME): the guest's kvmclock goes on
 * from where it was saved, so it never goes backwards and the time the VM
 * spent saved is not seen by the guest (as if paused). Call it last, just
 * before the vCPUs run: the clock runs from this moment. */
int platform_state_apply(struct vm *vm, const struct platform_state *s, struct tern_err *err);

/* Appends one PLATFORM_STATE_RECORD; failures show in rec_buf_check(b). */
void platform_state_encode(const struct platform_state *s, struct rec_buf *b);

/* Parses a PLATFORM_STATE_RECORD payload into `s`, checking type, version,
 * flags, every section's tag and length, values out of range, trailing
 * bytes. Pure. */
int platform_state_decode(const struct rec_header *h, struct rec_reader *payload,
                          struct platform_state *s, struct tern_err *err);

/* read + encode: PIC master+slave, IOAPIC, PIT, KVM clock. */
int platform_state_save(struct vm *vm, struct rec_buf *b, struct tern_err *err);
/* decode + apply. */
int platform_state_load(struct vm *vm, const struct rec_header *h, struct rec_reader *payload,
                        struct tern_err *err);

#endif
