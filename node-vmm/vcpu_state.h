/* Saving and restoring the complete KVM state of one vCPU as one versioned
 * record (VCPU_STATE_RECORD, layout in docs/snapshot-state.md).
 *
 * Two halves, so that everything that parses untrusted bytes can be tested
 * and fuzzed without KVM:
 *   - vcpu_state_read / vcpu_state_apply move a struct vcpu_state between
 *     KVM and memory (ioctls only, no parsing);
 *   - vcpu_state_encode / vcpu_state_decode move it between memory and the
 *     record payload (no ioctls).
 * vcpu_state_save and vcpu_state_load are the two composed.
 *
 * The wire layout is field by field, fixed-width little-endian, grouped in
 * tagged sections whose lengths are checked; the two areas whose layout is
 * defined by the hardware (the XSAVE image and the LAPIC register page)
 * travel as raw bytes with their size recorded and checked. */
#ifndef TERN_NODE_VMM_VCPU_STATE_H
#define TERN_NODE_VMM_VCPU_STATE_H

#include <linux/kvm.h>
#include <stdint.h>

#include "../common/err.h"
#include "../proto/record.h"
#include "../proto/record_types.h"

struct vcpu;
struct vm;

#define VCPU_STATE_RECORD REC_TYPE_VCPU_STATE /* one per vCPU */
#define VCPU_STATE_VERSION 1u

/* Bounds a decoder accepts (far above what any KVM produces today). */
#define VCPU_STATE_MAX_MSRS 4096u
#define VCPU_STATE_MIN_XSAVE 576u        /* legacy FXSAVE area + XSAVE header */
#define VCPU_STATE_MAX_XSAVE (1u << 20)

/* Well-known MSRs the restore treats specially. */
#define VCPU_MSR_IA32_TSC 0x00000010u
#define VCPU_MSR_IA32_TSC_DEADLINE 0x000006e0u
#define VCPU_MSR_KVM_ASYNC_PF_EN 0x4b564d02u

/* Everything KVM holds for one vCPU. The KVM structs are used as they are
 * (they are the kernel's stable ABI); the special registers use the
 * KVM_GET_SREGS2 layout whichever ioctl read them. */
struct vcpu_state {
    uint32_t index;                 /* vCPU index the state belongs to */
    struct kvm_regs regs;
    struct kvm_sregs2 sregs;        /* flags: KVM_SREGS2_FLAGS_PDPTRS_VALID or 0 */
    uint32_t xsave_size;            /* bytes in xsave */
    uint8_t *xsave;                 /* malloc'd XSAVE image (KVM's uabi format) */
    struct kvm_xcrs xcrs;
    uint32_t nr_msrs;
    struct kvm_msr_entry *msrs;     /* malloc'd, sorted by index, no duplicates */
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_mp_state mp_state;
    struct kvm_debugregs debugregs;
};

/* Releases the arrays; the struct can be reused (it is zeroed). */
void vcpu_state_free(struct vcpu_state *s);

/* Reads the whole state of `v` from KVM into `s` (which it initialises;
 * free with vcpu_state_free even on failure). Only while the VM is paused
 * or not yet started: fails if the vCPU's thread is not parked. Completes
 * any port/MMIO access the vCPU is in the middle of first (KVM_RUN with
 * immediate_exit), so the state is consistent: an I/O instruction is
 * neither lost nor run twice on restore. Errors name the ioctl, the vCPU
 * and errno. */
int vcpu_state_read(struct vcpu *v, struct vcpu_state *s, struct tern_err *err);

/* Writes `s` into vCPU `v` in the order KVM needs (see vcpu_state.c).
 * For a freshly created vCPU of a VM built with the same configuration
 * (CPUID already set by vcpu_create), whose guest RAM is already in
 * place (restoring the kvmclock MSRs makes KVM write into guest memory).
 * Checks first, before touching KVM: the vCPU index and the XSAVE size.
 * An MSR that KVM refuses is an error naming it. */
int vcpu_state_apply(struct vcpu *v, const struct vcpu_state *s, struct tern_err *err);

/* Appends one VCPU_STATE_RECORD; failures show in rec_buf_check(b). */
void vcpu_state_encode(const struct vcpu_state *s, struct rec_buf *b);

/* Parses a VCPU_STATE_RECORD payload (header h, as rec_next returned it)
 * into `s` (initialised here; free with vcpu_state_free, also on failure).
 * Checks type, version, flags, every section's tag and length, value
 * ranges KVM would reject anyway, MSR order, and trailing bytes. Pure. */
int vcpu_state_decode(const struct rec_header *h, struct rec_reader *payload,
                      struct vcpu_state *s, struct tern_err *err);

/* read + encode. Only while the VM is paused (vCPU threads parked outside
 * KVM_RUN). */
int vcpu_state_save(struct vcpu *v, struct rec_buf *b, struct tern_err *err);

/* decode + apply, into a freshly created vCPU of a VM built with the same
 * config (CPUID already set by vcpu_create). */
int vcpu_state_load(struct vcpu *v, const struct rec_header *h, struct rec_reader *payload,
                    struct tern_err *err);

/* The vCPU index a VCPU_STATE_RECORD payload names (its first field),
 * without consuming the reader; for dispatching records to vCPUs. */
int vcpu_state_peek_index(const struct rec_reader *payload, uint32_t *index,
                          struct tern_err *err);

/* The MSRs this VM's vCPUs save: KVM_GET_MSR_INDEX_LIST plus the machine
 * check bank MSRs MCG_CAP announces, minus those KVM_GET_MSRS refuses,
 * sorted. Probed through `v` on first use for a VM and cached (one VM at a
 * time: another VM re-probes). *indices is a malloc'd copy for the caller
 * to free. Exposed for tests and diagnostics. */
int vcpu_state_msr_list(struct vcpu *v, uint32_t **indices, uint32_t *n, struct tern_err *err);

/* --- section helpers shared with platform_state.c --- */

/* A section: u32 tag (four ASCII bytes), u32 length, `length` bytes. */
#define STATE_TAG(a, b, c, d) \
    ((uint32_t)(a) | ((uint32_t)(b) << 8) | ((uint32_t)(c) << 16) | ((uint32_t)(d) << 24))

/* Writes a section header; returns the offset where its body starts, for
 * state_section_end. */
size_t state_section_begin(struct rec_buf *b, uint32_t tag, uint32_t len);
/* Marks the buffer failed if the body written since `start` is not the
 * length announced (a bug in the encoder, never silent). */
void state_section_end(struct rec_buf *b, size_t start, uint32_t len);

/* Reads the next section header, checks its tag is `tag` and its length
 * is `exact` (or, when exact is 0, at most `max`), and sets *sec to a
 * reader over the body. `what` names the record for messages, `name` the
 * section. */
int state_section_open(struct rec_reader *r, uint32_t tag, const char *what, const char *name,
                       uint32_t exact, uint32_t max, struct rec_reader *sec,
                       struct tern_err *err);
/* rec_finish for a section: "WHAT: NAME section is malformed: ...". */
int state_section_close(const struct rec_reader *sec, const char *what, const char *name,
                        struct tern_err *err);
/* Checks a record header's type, version and flags. */
int state_check_header(const struct rec_header *h, uint32_t type, uint16_t version,
                       const char *what, struct tern_err *err);

#endif
