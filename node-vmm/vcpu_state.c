/* vCPU state: read from KVM, write back to KVM, encode, decode.
 * See vcpu_state.h for the split and docs/snapshot-state.md for the bytes.
 *
 * Choices, and why:
 *  - Special registers through KVM_GET/SET_SREGS2 when KVM has it
 *    (KVM_CAP_SREGS2). Its extra content, the PAE PDPTRs, is CPU state a
 *    guest in 32-bit PAE paging depends on: KVM_SET_SREGS reloads them
 *    from guest memory, which the guest may have changed since it loaded
 *    CR3. And it has no interrupt bitmap, which with the in-kernel irqchip
 *    only repeats the injected interrupt that KVM_GET_VCPU_EVENTS carries.
 *    Without SREGS2 we use SREGS and refuse a record whose PDPTRs are valid.
 *  - The TSC travels as the IA32_TSC MSR (value), not as the
 *    KVM_VCPU_TSC_OFFSET attribute (host TSC to guest TSC offset). A value
 *    means the same on any host and after a host reboot; an offset only
 *    means something against the host TSC it was taken on. With the kvmclock
 *    restored to its saved value too (platform_state.c), the guest's clocks
 *    pause while the VM is saved, and never go backwards. (On this
 *    machine's kvm_pvm the TSC cannot be changed at all, see the restore.)
 *  - Big hardware-defined areas (XSAVE image, LAPIC page) travel as bytes;
 *    everything else field by field. */
#include "vcpu_state.h"
#include "vm.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define WHAT_MAX 48

/* KVM_GET/SET_MSRS take fewer than MAX_IO_MSRS (256) entries per call. */
#define MSR_CHUNK 128u

#define MSR_IA32_MCG_CAP 0x179u
#define MCG_CAP_COUNT 0xffu
#define MCG_CAP_CMCI_P (1ull << 10)
#define MSR_IA32_MC0_CTL 0x400u
#define MSR_IA32_MC0_CTL2 0x280u

/* Events flags this decoder knows (KVM_VCPUEVENT_VALID_*). */
#define EVENTS_KNOWN_FLAGS                                                                   \
    (KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR |                     \
     KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM | KVM_VCPUEVENT_VALID_PAYLOAD |     \
     KVM_VCPUEVENT_VALID_TRIPLE_FAULT)
#define MP_STATE_MAX 10u /* KVM_MP_STATE_SUSPENDED */

/* Section tags and fixed sizes of version 1. */
#define TAG_REGS STATE_TAG('R', 'E', 'G', 'S')
#define TAG_SREGS STATE_TAG('S', 'R', 'E', 'G')
#define TAG_XSAVE STATE_TAG('X', 'S', 'A', 'V')
#define TAG_XCRS STATE_TAG('X', 'C', 'R', 'S')
#define TAG_MSRS STATE_TAG('M', 'S', 'R', 'S')
#define TAG_LAPIC STATE_TAG('L', 'A', 'P', 'C')
#define TAG_EVENTS STATE_TAG('E', 'V', 'N', 'T')
#define TAG_MP STATE_TAG('M', 'P', 'S', 'T')
#define TAG_DEBUG STATE_TAG('D', 'B', 'G', 'R')

#define SEGMENT_WIRE 23u
#define DTABLE_WIRE 10u
#define REGS_WIRE (18u * 8u)
#define SREGS_WIRE (8u * SEGMENT_WIRE + 2u * DTABLE_WIRE + 8u * 8u + 4u * 8u)
#define XCR_WIRE 12u
#define MSR_WIRE 12u
#define LAPIC_WIRE ((uint32_t)KVM_APIC_REG_SIZE)
#define EVENTS_WIRE 37u
#define MP_WIRE 4u
#define DEBUG_WIRE (7u * 8u)

/* ---------------------------------------------------------------- sections */

size_t state_section_begin(struct rec_buf *b, uint32_t tag, uint32_t len)
{
    rec_put_u32(b, tag);
    rec_put_u32(b, len);
    return b->len;
}

void state_section_end(struct rec_buf *b, size_t start, uint32_t len)
{
    if (!b->failed && b->len - start != len)
        b->failed = true;
}

static void tag_name(uint32_t tag, char out[5])
{
    for (int i = 0; i < 4; i++) {
        uint8_t c = (uint8_t)(tag >> (8 * i));
        out[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[4] = '\0';
}

int state_section_open(struct rec_reader *r, uint32_t tag, const char *what, const char *name,
                       uint32_t exact, uint32_t max, struct rec_reader *sec,
                       struct tern_err *err)
{
    uint32_t got_tag, len;
    rec_get_u32(r, &got_tag);
    rec_get_u32(r, &len);
    if (r->failed)
        return tern_err_set(err, "%s: truncated before the %s section (%s)", what, name, r->what);
    if (got_tag != tag) {
        char want[5], got[5];
        tag_name(tag, want);
        tag_name(got_tag, got);
        return tern_err_set(err, "%s: expected the %s section ('%s'), found tag 0x%08x ('%s')",
                            what, name, want, got_tag, got);
    }
    if (exact && len != exact)
        return tern_err_set(err, "%s: %s section is %u bytes, version 1 has %u", what, name, len,
                            exact);
    if (!exact && len > max)
        return tern_err_set(err, "%s: %s section is %u bytes, at most %u allowed", what, name,
                            len, max);
    const uint8_t *body;
    if (rec_get_view(r, &body, len) < 0)
        return tern_err_set(err, "%s: %s section is %u bytes but only %zu remain", what, name,
                            len, r->len - (r->off));
    rec_reader_init(sec, body, len);
    return 0;
}

int state_section_close(const struct rec_reader *sec, const char *what, const char *name,
                        struct tern_err *err)
{
    char ctx[WHAT_MAX + 48];
    snprintf(ctx, sizeof(ctx), "%s: %s section", what, name);
    return rec_finish(sec, ctx, err);
}

int state_check_header(const struct rec_header *h, uint32_t type, uint16_t version,
                       const char *what, struct tern_err *err)
{
    if (h->type != type)
        return tern_err_set(err, "%s: record type 0x%04x is not 0x%04x", what, h->type, type);
    if (h->version != version)
        return tern_err_set(err, "%s: version %u is not supported (this tern-vmm reads version %u)",
                            what, h->version, version);
    if (h->flags != 0)
        return tern_err_set(err, "%s: unknown record flags 0x%04x", what, h->flags);
    return 0;
}

/* ------------------------------------------------------------------ encode */

static void put_segment(struct rec_buf *b, const struct kvm_segment *s)
{
    rec_put_u64(b, s->base);
    rec_put_u32(b, s->limit);
    rec_put_u16(b, s->selector);
    rec_put_u8(b, s->type);
    rec_put_u8(b, s->present);
    rec_put_u8(b, s->dpl);
    rec_put_u8(b, s->db);
    rec_put_u8(b, s->s);
    rec_put_u8(b, s->l);
    rec_put_u8(b, s->g);
    rec_put_u8(b, s->avl);
    rec_put_u8(b, s->unusable);
}

static void put_dtable(struct rec_buf *b, const struct kvm_dtable *d)
{
    rec_put_u64(b, d->base);
    rec_put_u16(b, d->limit);
}

void vcpu_state_encode(const struct vcpu_state *s, struct rec_buf *b)
{
    rec_begin(b, VCPU_STATE_RECORD, VCPU_STATE_VERSION, 0);
    rec_put_u32(b, s->index);

    size_t at = state_section_begin(b, TAG_REGS, REGS_WIRE);
    const struct kvm_regs *r = &s->regs;
    const uint64_t gp[18] = {r->rax, r->rbx, r->rcx, r->rdx, r->rsi, r->rdi, r->rsp, r->rbp,
                             r->r8,  r->r9,  r->r10, r->r11, r->r12, r->r13, r->r14, r->r15,
                             r->rip, r->rflags};
    for (int i = 0; i < 18; i++)
        rec_put_u64(b, gp[i]);
    state_section_end(b, at, REGS_WIRE);

    at = state_section_begin(b, TAG_SREGS, SREGS_WIRE);
    const struct kvm_sregs2 *sr = &s->sregs;
    const struct kvm_segment *segs[8] = {&sr->cs, &sr->ds, &sr->es, &sr->fs,
                                         &sr->gs, &sr->ss, &sr->tr, &sr->ldt};
    for (int i = 0; i < 8; i++)
        put_segment(b, segs[i]);
    put_dtable(b, &sr->gdt);
    put_dtable(b, &sr->idt);
    const uint64_t cr[8] = {sr->cr0, sr->cr2,  sr->cr3,       sr->cr4,
                            sr->cr8, sr->efer, sr->apic_base, sr->flags};
    for (int i = 0; i < 8; i++)
        rec_put_u64(b, cr[i]);
    for (int i = 0; i < 4; i++)
        rec_put_u64(b, sr->pdptrs[i]);
    state_section_end(b, at, SREGS_WIRE);

    at = state_section_begin(b, TAG_XSAVE, s->xsave_size);
    rec_put_bytes(b, s->xsave, s->xsave_size);
    state_section_end(b, at, s->xsave_size);

    uint32_t nx = s->xcrs.nr_xcrs;
    if (nx > KVM_MAX_XCRS) {
        b->failed = true; /* KVM never reports more; refuse to write it */
        nx = 0;
    }
    uint32_t len = 8 + XCR_WIRE * nx;
    at = state_section_begin(b, TAG_XCRS, len);
    rec_put_u32(b, nx);
    rec_put_u32(b, s->xcrs.flags);
    for (uint32_t i = 0; i < nx; i++) {
        rec_put_u32(b, s->xcrs.xcrs[i].xcr);
        rec_put_u64(b, s->xcrs.xcrs[i].value);
    }
    state_section_end(b, at, len);

    len = 4 + MSR_WIRE * s->nr_msrs;
    at = state_section_begin(b, TAG_MSRS, len);
    rec_put_u32(b, s->nr_msrs);
    for (uint32_t i = 0; i < s->nr_msrs; i++) {
        rec_put_u32(b, s->msrs[i].index);
        rec_put_u64(b, s->msrs[i].data);
    }
    state_section_end(b, at, len);

    at = state_section_begin(b, TAG_LAPIC, LAPIC_WIRE);
    rec_put_bytes(b, s->lapic.regs, LAPIC_WIRE);
    state_section_end(b, at, LAPIC_WIRE);

    at = state_section_begin(b, TAG_EVENTS, EVENTS_WIRE);
    const struct kvm_vcpu_events *e = &s->events;
    rec_put_u8(b, e->exception.injected);
    rec_put_u8(b, e->exception.nr);
    rec_put_u8(b, e->exception.has_error_code);
    rec_put_u8(b, e->exception.pending);
    rec_put_u32(b, e->exception.error_code);
    rec_put_u8(b, e->interrupt.injected);
    rec_put_u8(b, e->interrupt.nr);
    rec_put_u8(b, e->interrupt.soft);
    rec_put_u8(b, e->interrupt.shadow);
    rec_put_u8(b, e->nmi.injected);
    rec_put_u8(b, e->nmi.pending);
    rec_put_u8(b, e->nmi.masked);
    rec_put_u32(b, e->sipi_vector);
    rec_put_u32(b, e->flags);
    rec_put_u8(b, e->smi.smm);
    rec_put_u8(b, e->smi.pending);
    rec_put_u8(b, e->smi.smm_inside_nmi);
    rec_put_u8(b, e->smi.latched_init);
    rec_put_u8(b, e->triple_fault.pending);
    rec_put_u8(b, e->exception_has_payload);
    rec_put_u64(b, e->exception_payload);
    state_section_end(b, at, EVENTS_WIRE);

    at = state_section_begin(b, TAG_MP, MP_WIRE);
    rec_put_u32(b, s->mp_state.mp_state);
    state_section_end(b, at, MP_WIRE);

    at = state_section_begin(b, TAG_DEBUG, DEBUG_WIRE);
    for (int i = 0; i < 4; i++)
        rec_put_u64(b, s->debugregs.db[i]);
    rec_put_u64(b, s->debugregs.dr6);
    rec_put_u64(b, s->debugregs.dr7);
    rec_put_u64(b, s->debugregs.flags);
    state_section_end(b, at, DEBUG_WIRE);

    rec_end(b);
}

/* ------------------------------------------------------------------ decode */

void vcpu_state_free(struct vcpu_state *s)
{
    free(s->xsave);
    free(s->msrs);
    memset(s, 0, sizeof(*s));
}

/* For the KVM structs' __u64 fields (unsigned long long, not uint64_t). */
static uint64_t get64(struct rec_reader *r)
{
    uint64_t v;
    rec_get_u64(r, &v);
    return v;
}

static void get_segment(struct rec_reader *r, struct kvm_segment *s)
{
    s->base = get64(r);
    rec_get_u32(r, &s->limit);
    rec_get_u16(r, &s->selector);
    rec_get_u8(r, &s->type);
    rec_get_u8(r, &s->present);
    rec_get_u8(r, &s->dpl);
    rec_get_u8(r, &s->db);
    rec_get_u8(r, &s->s);
    rec_get_u8(r, &s->l);
    rec_get_u8(r, &s->g);
    rec_get_u8(r, &s->avl);
    rec_get_u8(r, &s->unusable);
}

/* The descriptor-cache bits KVM reports are single bits (type 4, dpl 2). */
static int check_segment(const struct kvm_segment *s, const char *what, const char *name,
                         struct tern_err *err)
{
    if (s->type > 15 || s->dpl > 3 || s->present > 1 || s->db > 1 || s->s > 1 || s->l > 1 ||
        s->g > 1 || s->avl > 1 || s->unusable > 1)
        return tern_err_set(err,
                            "%s: segment %s has an out-of-range attribute (type %u dpl %u p %u "
                            "db %u s %u l %u g %u avl %u unusable %u)",
                            what, name, s->type, s->dpl, s->present, s->db, s->s, s->l, s->g,
                            s->avl, s->unusable);
    return 0;
}

static int decode_regs(struct rec_reader *r, struct vcpu_state *s, const char *what,
                       struct tern_err *err)
{
    struct rec_reader sec;
    if (state_section_open(r, TAG_REGS, what, "registers", REGS_WIRE, 0, &sec, err) < 0)
        return -1;
    struct kvm_regs *g = &s->regs;
    __u64 *gp[18] = {&g->rax, &g->rbx, &g->rcx, &g->rdx, &g->rsi, &g->rdi,
                     &g->rsp, &g->rbp, &g->r8,  &g->r9,  &g->r10, &g->r11,
                     &g->r12, &g->r13, &g->r14, &g->r15, &g->rip, &g->rflags};
    for (int i = 0; i < 18; i++)
        *gp[i] = get64(&sec);
    return state_section_close(&sec, what, "registers", err);
}

static int decode_sregs(struct rec_reader *r, struct vcpu_state *s, const char *what,
                        struct tern_err *err)
{
    struct rec_reader sec;
    if (state_section_open(r, TAG_SREGS, what, "special registers", SREGS_WIRE, 0, &sec, err) <
        0)
        return -1;
    struct kvm_sregs2 *sr = &s->sregs;
    struct kvm_segment *segs[8] = {&sr->cs, &sr->ds, &sr->es, &sr->fs,
                                   &sr->gs, &sr->ss, &sr->tr, &sr->ldt};
    static const char *const names[8] = {"cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"};
    for (int i = 0; i < 8; i++)
        get_segment(&sec, segs[i]);
    sr->gdt.base = get64(&sec);
    rec_get_u16(&sec, &sr->gdt.limit);
    sr->idt.base = get64(&sec);
    rec_get_u16(&sec, &sr->idt.limit);
    __u64 *cr[8] = {&sr->cr0, &sr->cr2,  &sr->cr3,       &sr->cr4,
                    &sr->cr8, &sr->efer, &sr->apic_base, &sr->flags};
    for (int i = 0; i < 8; i++)
        *cr[i] = get64(&sec);
    for (int i = 0; i < 4; i++)
        sr->pdptrs[i] = get64(&sec);
    if (state_section_close(&sec, what, "special registers", err) < 0)
        return -1;
    for (int i = 0; i < 8; i++)
        if (check_segment(segs[i], what, names[i], err) < 0)
            return -1;
    if (sr->flags & ~(uint64_t)KVM_SREGS2_FLAGS_PDPTRS_VALID)
        return tern_err_set(err, "%s: special registers have unknown flags 0x%llx", what,
                            (unsigned long long)sr->flags);
    if (!(sr->flags & KVM_SREGS2_FLAGS_PDPTRS_VALID) &&
        (sr->pdptrs[0] | sr->pdptrs[1] | sr->pdptrs[2] | sr->pdptrs[3]))
        return tern_err_set(err, "%s: PAE PDPTRs present but not marked valid", what);
    return 0;
}

static int decode_xsave(struct rec_reader *r, struct vcpu_state *s, const char *what,
                        struct tern_err *err)
{
    struct rec_reader sec;
    if (state_section_open(r, TAG_XSAVE, what, "XSAVE", 0, VCPU_STATE_MAX_XSAVE, &sec, err) < 0)
        return -1;
    uint32_t n = (uint32_t)sec.len;
    if (n < VCPU_STATE_MIN_XSAVE)
        return tern_err_set(err, "%s: XSAVE area is %u bytes, less than the %u every XSAVE image has",
                            what, n, VCPU_STATE_MIN_XSAVE);
    s->xsave = malloc(n);
    if (!s->xsave)
        return tern_err_set(err, "%s: out of memory for a %u-byte XSAVE area", what, n);
    s->xsave_size = n;
    rec_get_bytes(&sec, s->xsave, n);
    return state_section_close(&sec, what, "XSAVE", err);
}

static int decode_xcrs(struct rec_reader *r, struct vcpu_state *s, const char *what,
                       struct tern_err *err)
{
    struct rec_reader sec;
    if (state_section_open(r, TAG_XCRS, what, "XCRs", 0, 8 + XCR_WIRE * KVM_MAX_XCRS, &sec,
                           err) < 0)
        return -1;
    uint32_t nr;
    rec_get_u32(&sec, &nr);
    rec_get_u32(&sec, &s->xcrs.flags);
    if (sec.failed)
        return state_section_close(&sec, what, "XCRs", err);
    if (nr > KVM_MAX_XCRS)
        return tern_err_set(err, "%s: %u XCRs, KVM has at most %u", what, nr, KVM_MAX_XCRS);
    if (sec.len != 8 + XCR_WIRE * nr)
        return tern_err_set(err, "%s: XCRs section is %zu bytes, %u XCRs take %u", what, sec.len,
                            nr, 8 + XCR_WIRE * nr);
    if (s->xcrs.flags != 0)
        return tern_err_set(err, "%s: XCRs have unknown flags 0x%x", what, s->xcrs.flags);
    s->xcrs.nr_xcrs = nr;
    for (uint32_t i = 0; i < nr; i++) {
        rec_get_u32(&sec, &s->xcrs.xcrs[i].xcr);
        s->xcrs.xcrs[i].value = get64(&sec);
    }
    return state_section_close(&sec, what, "XCRs", err);
}

static int decode_msrs(struct rec_reader *r, struct vcpu_state *s, const char *what,
                       struct tern_err *err)
{
    struct rec_reader sec;
    if (state_section_open(r, TAG_MSRS, what, "MSRs", 0, 4 + MSR_WIRE * VCPU_STATE_MAX_MSRS,
                           &sec, err) < 0)
        return -1;
    uint32_t n;
    if (rec_get_u32(&sec, &n) < 0)
        return state_section_close(&sec, what, "MSRs", err);
    if (n > VCPU_STATE_MAX_MSRS)
        return tern_err_set(err, "%s: %u MSRs, at most %u allowed", what, n, VCPU_STATE_MAX_MSRS);
    if (sec.len != 4 + (size_t)MSR_WIRE * n)
        return tern_err_set(err, "%s: MSRs section is %zu bytes, %u MSRs take %u", what, sec.len,
                            n, 4 + MSR_WIRE * n);
    if (n) {
        s->msrs = calloc(n, sizeof(*s->msrs));
        if (!s->msrs)
            return tern_err_set(err, "%s: out of memory for %u MSRs", what, n);
    }
    s->nr_msrs = n;
    for (uint32_t i = 0; i < n; i++) {
        rec_get_u32(&sec, &s->msrs[i].index);
        s->msrs[i].data = get64(&sec);
        if (i > 0 && !sec.failed && s->msrs[i].index <= s->msrs[i - 1].index)
            return tern_err_set(err, "%s: MSR 0x%08x follows MSR 0x%08x (must be ascending, once each)",
                                what, s->msrs[i].index, s->msrs[i - 1].index);
    }
    return state_section_close(&sec, what, "MSRs", err);
}

static int decode_lapic(struct rec_reader *r, struct vcpu_state *s, const char *what,
                        struct tern_err *err)
{
    struct rec_reader sec;
    if (state_section_open(r, TAG_LAPIC, what, "LAPIC", LAPIC_WIRE, 0, &sec, err) < 0)
        return -1;
    rec_get_bytes(&sec, s->lapic.regs, LAPIC_WIRE);
    return state_section_close(&sec, what, "LAPIC", err);
}

static int decode_events(struct rec_reader *r, struct vcpu_state *s, const char *what,
                         struct tern_err *err)
{
    struct rec_reader sec;
    if (state_section_open(r, TAG_EVENTS, what, "events", EVENTS_WIRE, 0, &sec, err) < 0)
        return -1;
    struct kvm_vcpu_events *e = &s->events;
    rec_get_u8(&sec, &e->exception.injected);
    rec_get_u8(&sec, &e->exception.nr);
    rec_get_u8(&sec, &e->exception.has_error_code);
    rec_get_u8(&sec, &e->exception.pending);
    rec_get_u32(&sec, &e->exception.error_code);
    rec_get_u8(&sec, &e->interrupt.injected);
    rec_get_u8(&sec, &e->interrupt.nr);
    rec_get_u8(&sec, &e->interrupt.soft);
    rec_get_u8(&sec, &e->interrupt.shadow);
    rec_get_u8(&sec, &e->nmi.injected);
    rec_get_u8(&sec, &e->nmi.pending);
    rec_get_u8(&sec, &e->nmi.masked);
    rec_get_u32(&sec, &e->sipi_vector);
    rec_get_u32(&sec, &e->flags);
    rec_get_u8(&sec, &e->smi.smm);
    rec_get_u8(&sec, &e->smi.pending);
    rec_get_u8(&sec, &e->smi.smm_inside_nmi);
    rec_get_u8(&sec, &e->smi.latched_init);
    rec_get_u8(&sec, &e->triple_fault.pending);
    rec_get_u8(&sec, &e->exception_has_payload);
    e->exception_payload = get64(&sec);
    if (state_section_close(&sec, what, "events", err) < 0)
        return -1;
    if (e->flags & ~(uint32_t)EVENTS_KNOWN_FLAGS)
        return tern_err_set(err, "%s: events have unknown flags 0x%x", what, e->flags);
    const uint8_t flags01[] = {e->exception.injected, e->exception.has_error_code,
                               e->exception.pending,  e->interrupt.injected,
                               e->interrupt.soft,     e->nmi.injected,
                               e->nmi.pending,        e->nmi.masked,
                               e->smi.smm,            e->smi.pending,
                               e->smi.smm_inside_nmi, e->smi.latched_init,
                               e->triple_fault.pending, e->exception_has_payload};
    for (size_t i = 0; i < sizeof(flags01); i++)
        if (flags01[i] > 1)
            return tern_err_set(err, "%s: events: a yes/no field holds %u", what, flags01[i]);
    if (e->exception.nr > 31)
        return tern_err_set(err, "%s: events: exception vector %u (at most 31)", what,
                            e->exception.nr);
    if (e->interrupt.shadow & ~(KVM_X86_SHADOW_INT_MOV_SS | KVM_X86_SHADOW_INT_STI))
        return tern_err_set(err, "%s: events: interrupt shadow 0x%x", what, e->interrupt.shadow);
    return 0;
}

static int decode_mp(struct rec_reader *r, struct vcpu_state *s, const char *what,
                     struct tern_err *err)
{
    struct rec_reader sec;
    if (state_section_open(r, TAG_MP, what, "MP state", MP_WIRE, 0, &sec, err) < 0)
        return -1;
    rec_get_u32(&sec, &s->mp_state.mp_state);
    if (state_section_close(&sec, what, "MP state", err) < 0)
        return -1;
    if (s->mp_state.mp_state > MP_STATE_MAX)
        return tern_err_set(err, "%s: unknown MP state %u", what, s->mp_state.mp_state);
    return 0;
}

static int decode_debugregs(struct rec_reader *r, struct vcpu_state *s, const char *what,
                            struct tern_err *err)
{
    struct rec_reader sec;
    if (state_section_open(r, TAG_DEBUG, what, "debug registers", DEBUG_WIRE, 0, &sec, err) < 0)
        return -1;
    struct kvm_debugregs *d = &s->debugregs;
    for (int i = 0; i < 4; i++)
        d->db[i] = get64(&sec);
    d->dr6 = get64(&sec);
    d->dr7 = get64(&sec);
    d->flags = get64(&sec);
    if (state_section_close(&sec, what, "debug registers", err) < 0)
        return -1;
    if (d->flags != 0)
        return tern_err_set(err, "%s: debug registers have unknown flags 0x%llx", what,
                            (unsigned long long)d->flags);
    return 0;
}

int vcpu_state_peek_index(const struct rec_reader *payload, uint32_t *index,
                          struct tern_err *err)
{
    struct rec_reader r = *payload;
    if (rec_get_u32(&r, index) < 0)
        return tern_err_set(err, "vCPU state: record too short for a vCPU index");
    return 0;
}

int vcpu_state_decode(const struct rec_header *h, struct rec_reader *payload,
                      struct vcpu_state *s, struct tern_err *err)
{
    memset(s, 0, sizeof(*s));
    if (state_check_header(h, VCPU_STATE_RECORD, VCPU_STATE_VERSION, "vCPU state", err) < 0)
        return -1;
    if (rec_get_u32(payload, &s->index) < 0)
        return tern_err_set(err, "vCPU state: record too short for a vCPU index");
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "vCPU %u state", s->index);
    if (decode_regs(payload, s, what, err) < 0 || decode_sregs(payload, s, what, err) < 0 ||
        decode_xsave(payload, s, what, err) < 0 || decode_xcrs(payload, s, what, err) < 0 ||
        decode_msrs(payload, s, what, err) < 0 || decode_lapic(payload, s, what, err) < 0 ||
        decode_events(payload, s, what, err) < 0 || decode_mp(payload, s, what, err) < 0 ||
        decode_debugregs(payload, s, what, err) < 0)
        return -1;
    return rec_finish(payload, what, err);
}

/* --------------------------------------------------------------- KVM side */

/* The vCPU must not be in KVM_RUN, nor about to enter it. */
static int check_quiescent(struct vcpu *v, const char *verb, struct tern_err *err)
{
    struct vm *vm = v->vm;
    pthread_mutex_lock(&vm->lock);
    bool ok = !v->thread_started || v->exited || (v->parked && vm->state == VM_STATE_PAUSED);
    enum vm_state st = vm->state;
    pthread_mutex_unlock(&vm->lock);
    if (!ok)
        return tern_err_set(err, "cannot %s the state of vCPU %u while the VM is %s: pause it first",
                            verb, v->index, vm_state_name(st));
    return 0;
}

/* Bytes of KVM's XSAVE image on this host: KVM_CAP_XSAVE2 gives the size
 * (which grows with dynamically enabled features such as AMX), else the
 * fixed 4 KiB struct kvm_xsave. 0 when KVM has no XSAVE at all. */
static uint32_t host_xsave_size(struct vm *vm, bool *xsave2)
{
    int r = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
    *xsave2 = r > 0;
    if (r > 0)
        return (uint32_t)r < sizeof(struct kvm_xsave) ? (uint32_t)sizeof(struct kvm_xsave)
                                                      : (uint32_t)r;
    if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0)
        return (uint32_t)sizeof(struct kvm_xsave);
    return 0;
}

static bool have_sregs2(struct vm *vm)
{
    return ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SREGS2) > 0;
}

/* A buffer for KVM_GET/SET_MSRS with room for MSR_CHUNK entries. */
static struct kvm_msrs *msr_buf_new(void)
{
    return calloc(1, sizeof(struct kvm_msrs) + MSR_CHUNK * sizeof(struct kvm_msr_entry));
}

/* Clears the buffer and fills the indices of `n` entries. */
static void msr_buf_fill(struct kvm_msrs *m, const uint32_t *idx, uint32_t n)
{
    memset(m, 0, sizeof(*m) + MSR_CHUNK * sizeof(m->entries[0]));
    m->nmsrs = n;
    for (uint32_t k = 0; k < n; k++)
        m->entries[k].index = idx[k];
}

static int msr_list_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int probe_msrs(struct vcpu *v, uint32_t **out, uint32_t *out_n, struct tern_err *err)
{
    struct vm *vm = v->vm;
    struct kvm_msr_list probe = {.nmsrs = 0};
    if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
        return tern_err_errno(err, errno, "KVM_GET_MSR_INDEX_LIST");
    uint32_t listed = probe.nmsrs;
    /* Room for the machine-check banks too: at most 255 banks x 5 MSRs. */
    size_t cap = (size_t)listed + 255u * 5u;
    struct kvm_msr_list *list = calloc(1, sizeof(*list) + cap * sizeof(uint32_t));
    if (!list)
        return tern_err_set(err, "out of memory for the MSR list");
    list->nmsrs = listed;
    if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
        int e = errno;
        free(list);
        return tern_err_errno(err, e, "KVM_GET_MSR_INDEX_LIST (%u entries)", listed);
    }
    uint32_t n = list->nmsrs;
    uint32_t *idx = list->indices;

    struct kvm_msrs *m = msr_buf_new();
    if (!m) {
        free(list);
        return tern_err_set(err, "out of memory for the MSR list");
    }
    /* The machine-check bank MSRs (CTL, STATUS, ADDR, MISC per bank, and
     * CTL2 with CMCI) are guest state KVM does not list: as many banks as
     * MCG_CAP announces (KVM's default, without KVM_X86_SETUP_MCE, is 32). */
    const uint32_t mcg_cap = MSR_IA32_MCG_CAP;
    msr_buf_fill(m, &mcg_cap, 1);
    if (ioctl(v->fd, KVM_GET_MSRS, m) == 1) {
        uint64_t cap_value = m->entries[0].data;
        uint32_t banks = (uint32_t)(cap_value & MCG_CAP_COUNT);
        for (uint32_t i = 0; i < 4 * banks; i++)
            idx[n++] = MSR_IA32_MC0_CTL + i;
        if (cap_value & MCG_CAP_CMCI_P)
            for (uint32_t i = 0; i < banks; i++)
                idx[n++] = MSR_IA32_MC0_CTL2 + i;
    }

    qsort(idx, n, sizeof(*idx), msr_list_cmp);
    uint32_t u = 0;
    for (uint32_t i = 0; i < n; i++)
        if (u == 0 || idx[i] != idx[u - 1])
            idx[u++] = idx[i];
    n = u;

    /* Keep what KVM_GET_MSRS returns. It stops at the first MSR it cannot
     * read and returns how many it did: drop that one and go on. */
    uint32_t i = 0;
    while (i < n) {
        uint32_t c = n - i < MSR_CHUNK ? n - i : MSR_CHUNK;
        msr_buf_fill(m, &idx[i], c);
        int r = ioctl(v->fd, KVM_GET_MSRS, m);
        if (r < 0) {
            int e = errno;
            free(m);
            free(list);
            return tern_err_errno(err, e, "KVM_GET_MSRS on vCPU %u (probing %u MSRs)", v->index,
                                  c);
        }
        if ((uint32_t)r >= c) {
            i += c;
            continue;
        }
        i += (uint32_t)r;
        memmove(&idx[i], &idx[i + 1], (n - i - 1) * sizeof(*idx));
        n--;
    }
    free(m);
    uint32_t *copy = malloc((n ? n : 1) * sizeof(*copy));
    if (!copy) {
        free(list);
        return tern_err_set(err, "out of memory for the MSR list");
    }
    memcpy(copy, idx, n * sizeof(*copy));
    free(list);
    *out = copy;
    *out_n = n;
    return 0;
}

int vcpu_state_msr_list(struct vcpu *v, uint32_t **indices, uint32_t *n, struct tern_err *err)
{
    struct vm *vm = v->vm;
    *indices = NULL;
    *n = 0;
    /* Probed once per VM; saves and restores run on the main thread only. */
    if (!vm->saved_msrs) {
        uint32_t *idx = NULL, cnt = 0;
        if (probe_msrs(v, &idx, &cnt, err) < 0)
            return -1;
        vm->saved_msrs = idx;
        vm->nr_saved_msrs = cnt;
    }
    uint32_t *copy = malloc((vm->nr_saved_msrs ? vm->nr_saved_msrs : 1) * sizeof(*copy));
    if (copy) {
        memcpy(copy, vm->saved_msrs, vm->nr_saved_msrs * sizeof(*copy));
        *n = vm->nr_saved_msrs;
    }
    if (!copy)
        return tern_err_set(err, "out of memory for the MSR list");
    *indices = copy;
    return 0;
}

/* KVM finishes an exit that needs the VMM's answer (port or MMIO read
 * data, the instruction's completion) only when KVM_RUN is entered again;
 * until then that part of the state lives nowhere userspace can read. A
 * vCPU parked right after such an exit would otherwise be saved mid-
 * instruction: restored, it would run the OUT again or lose the IN. So
 * enter KVM_RUN once with immediate_exit set: KVM completes the access
 * and returns EINTR before running a single guest instruction. */
static int complete_pending_exit(struct vcpu *v, struct tern_err *err)
{
    struct kvm_run *run = v->run;
    if (!run)
        return 0;
    switch (run->exit_reason) {
    case KVM_EXIT_IO:
    case KVM_EXIT_MMIO:
    case KVM_EXIT_X86_RDMSR:
    case KVM_EXIT_X86_WRMSR:
    case KVM_EXIT_HYPERCALL:
        break;
    default:
        return 0;
    }
    run->immediate_exit = 1; /* left set: the vCPU thread clears it before its next run */
    int r = ioctl(v->fd, KVM_RUN, 0);
    if (r == 0 || errno != EINTR)
        return tern_err_errno(err, r == 0 ? EIO : errno,
                              "KVM_RUN (immediate exit, to complete exit reason %u) on vCPU %u",
                              run->exit_reason, v->index);
    run->exit_reason = KVM_EXIT_INTR;
    return 0;
}

static int read_msrs(struct vcpu *v, struct vcpu_state *s, struct tern_err *err)
{
    uint32_t *idx, n;
    if (vcpu_state_msr_list(v, &idx, &n, err) < 0)
        return tern_err_prefix(err, "vCPU %u", v->index);
    s->msrs = calloc(n ? n : 1, sizeof(*s->msrs));
    if (!s->msrs) {
        free(idx);
        return tern_err_set(err, "out of memory for %u MSRs", n);
    }
    struct kvm_msrs *m = msr_buf_new();
    if (!m) {
        free(idx);
        return tern_err_set(err, "out of memory for %u MSRs", n);
    }
    int rc = 0;
    for (uint32_t i = 0; i < n && rc == 0; i += MSR_CHUNK) {
        uint32_t c = n - i < MSR_CHUNK ? n - i : MSR_CHUNK;
        msr_buf_fill(m, &idx[i], c);
        int r = ioctl(v->fd, KVM_GET_MSRS, m);
        if (r < 0)
            rc = tern_err_errno(err, errno, "KVM_GET_MSRS on vCPU %u", v->index);
        else if ((uint32_t)r < c)
            rc = tern_err_set(err, "KVM_GET_MSRS on vCPU %u: KVM refused MSR 0x%08x, which it "
                              "read when this VM's MSR list was probed",
                              v->index, idx[i + (uint32_t)r]);
        else
            memcpy(&s->msrs[i], m->entries, c * sizeof(m->entries[0]));
    }
    if (rc == 0)
        s->nr_msrs = n;
    free(m);
    free(idx);
    return rc;
}

#define KVM_GET(fd, req, arg, name)                                                          \
    do {                                                                                     \
        if (ioctl((fd), (req), (arg)) < 0)                                                   \
            return tern_err_errno(err, errno, name " on vCPU %u", v->index);               \
    } while (0)

int vcpu_state_read(struct vcpu *v, struct vcpu_state *s, struct tern_err *err)
{
    struct vm *vm = v->vm;
    memset(s, 0, sizeof(*s));
    s->index = v->index;
    if (check_quiescent(v, "save", err) < 0)
        return -1;
    if (complete_pending_exit(v, err) < 0)
        return -1;

    /* MP state first: reading it makes KVM act on a pending INIT or SIPI
     * (kvm_apic_accept_events), which can reset the registers read below. */
    KVM_GET(v->fd, KVM_GET_MP_STATE, &s->mp_state, "KVM_GET_MP_STATE");
    /* Events next: reading them moves queued NMIs to pending. */
    KVM_GET(v->fd, KVM_GET_VCPU_EVENTS, &s->events, "KVM_GET_VCPU_EVENTS");
    KVM_GET(v->fd, KVM_GET_REGS, &s->regs, "KVM_GET_REGS");
    if (have_sregs2(vm)) {
        KVM_GET(v->fd, KVM_GET_SREGS2, &s->sregs, "KVM_GET_SREGS2");
    } else {
        struct kvm_sregs sr;
        KVM_GET(v->fd, KVM_GET_SREGS, &sr, "KVM_GET_SREGS");
        struct kvm_sregs2 *d = &s->sregs;
        d->cs = sr.cs, d->ds = sr.ds, d->es = sr.es, d->fs = sr.fs, d->gs = sr.gs, d->ss = sr.ss;
        d->tr = sr.tr, d->ldt = sr.ldt, d->gdt = sr.gdt, d->idt = sr.idt;
        d->cr0 = sr.cr0, d->cr2 = sr.cr2, d->cr3 = sr.cr3, d->cr4 = sr.cr4, d->cr8 = sr.cr8;
        d->efer = sr.efer, d->apic_base = sr.apic_base;
        /* sr.interrupt_bitmap: with the in-kernel irqchip it only shows the
         * injected interrupt, which the events carry. */
    }
    bool xsave2;
    uint32_t xs = host_xsave_size(vm, &xsave2);
    if (xs == 0)
        return tern_err_set(err, "vCPU %u: this KVM has no KVM_CAP_XSAVE, which saving the FPU state needs",
                            v->index);
    s->xsave = calloc(1, xs);
    if (!s->xsave)
        return tern_err_set(err, "out of memory for vCPU %u's XSAVE area", v->index);
    s->xsave_size = xs;
    if (xsave2)
        KVM_GET(v->fd, KVM_GET_XSAVE2, s->xsave, "KVM_GET_XSAVE2");
    else
        KVM_GET(v->fd, KVM_GET_XSAVE, s->xsave, "KVM_GET_XSAVE");
    KVM_GET(v->fd, KVM_GET_XCRS, &s->xcrs, "KVM_GET_XCRS");
    if (s->xcrs.nr_xcrs > KVM_MAX_XCRS)
        return tern_err_set(err, "KVM_GET_XCRS on vCPU %u returned %u XCRs", v->index,
                            s->xcrs.nr_xcrs);
    if (read_msrs(v, s, err) < 0)
        return -1;
    KVM_GET(v->fd, KVM_GET_LAPIC, &s->lapic, "KVM_GET_LAPIC");
    KVM_GET(v->fd, KVM_GET_DEBUGREGS, &s->debugregs, "KVM_GET_DEBUGREGS");
    return 0;
}

/* Which batch an MSR is restored in. */
enum msr_phase {
    MSR_PHASE_EARLY = 0, /* with the bulk, right after the special registers */
    MSR_PHASE_LAST,      /* after the bulk: needs others set first */
    MSR_PHASE_AFTER_LAPIC,
};

static enum msr_phase msr_phase(uint32_t index)
{
    switch (index) {
    case VCPU_MSR_IA32_TSC_DEADLINE:
        /* KVM ignores a deadline unless the LAPIC timer is in TSC-deadline
         * mode, and the deadline is in guest TSC: after IA32_TSC and the
         * LAPIC. */
        return MSR_PHASE_AFTER_LAPIC;
    case VCPU_MSR_KVM_ASYNC_PF_EN:
        /* Enabling async page faults uses the vector in MSR_KVM_ASYNC_PF_INT
         * (0x4b564d06, above it in index order). */
        return MSR_PHASE_LAST;
    default:
        return MSR_PHASE_EARLY;
    }
}

static int write_msrs(struct vcpu *v, const struct vcpu_state *s, enum msr_phase phase,
                      struct tern_err *err)
{
    struct kvm_msrs *m = msr_buf_new();
    if (!m)
        return tern_err_set(err, "out of memory for vCPU %u's MSRs", v->index);
    int rc = 0;
    uint32_t i = 0;
    while (i < s->nr_msrs && rc == 0) {
        msr_buf_fill(m, NULL, 0);
        uint32_t c = 0;
        for (; i < s->nr_msrs && c < MSR_CHUNK; i++)
            if (msr_phase(s->msrs[i].index) == phase)
                m->entries[c++] = (struct kvm_msr_entry){.index = s->msrs[i].index,
                                                         .data = s->msrs[i].data};
        if (c == 0)
            break;
        m->nmsrs = c;
        int r = ioctl(v->fd, KVM_SET_MSRS, m);
        if (r < 0)
            rc = tern_err_errno(err, errno, "KVM_SET_MSRS on vCPU %u", v->index);
        else if ((uint32_t)r < c)
            rc = tern_err_set(err, "KVM_SET_MSRS on vCPU %u: KVM refused MSR 0x%08x = 0x%llx",
                              v->index, m->entries[r].index,
                              (unsigned long long)m->entries[r].data);
    }
    free(m);
    return rc;
}

static const struct kvm_msr_entry *find_msr(const struct vcpu_state *s, uint32_t index)
{
    for (uint32_t i = 0; i < s->nr_msrs; i++)
        if (s->msrs[i].index == index)
            return &s->msrs[i];
    return NULL;
}

/* After IA32_TSC is written back, the guest TSC must not be behind the
 * saved value: a guest whose TSC goes backwards breaks (its clocks, its
 * deadlines). On most KVMs it reads the saved value plus the few cycles
 * since. KVM itself may snap the TSCs of several vCPUs written within one
 * second of each other to one offset (its TSC synchronisation), so allow
 * one second. On kvm_pvm the write is accepted and ignored (the guest TSC
 * is the host TSC), which passes this check on the host the state was
 * saved on and fails where the host TSC is behind. */
static int check_tsc(struct vcpu *v, const struct vcpu_state *s, struct tern_err *err)
{
    const struct kvm_msr_entry *saved = find_msr(s, VCPU_MSR_IA32_TSC);
    if (!saved)
        return 0;
    struct kvm_msrs *m = msr_buf_new();
    if (!m)
        return tern_err_set(err, "out of memory");
    const uint32_t tsc = VCPU_MSR_IA32_TSC;
    msr_buf_fill(m, &tsc, 1);
    int r = ioctl(v->fd, KVM_GET_MSRS, m);
    int e = errno;
    uint64_t now = m->entries[0].data;
    free(m);
    if (r != 1)
        return tern_err_errno(err, r < 0 ? e : EIO, "KVM_GET_MSRS (IA32_TSC) on vCPU %u",
                              v->index);
    uint64_t slack = (uint64_t)(v->vm->tsc_khz ? v->vm->tsc_khz : 1000000u) * 1000u;
    if (now + slack < saved->data)
        return tern_err_set(err,
                            "vCPU %u: guest TSC would go backwards: saved 0x%llx, KVM now reads "
                            "0x%llx after writing it (this KVM does not apply IA32_TSC writes)",
                            v->index, (unsigned long long)saved->data,
                            (unsigned long long)now);
    return 0;
}

#define KVM_SET(fd, req, arg, name)                                                          \
    do {                                                                                     \
        if (ioctl((fd), (req), (arg)) < 0)                                                   \
            return tern_err_errno(err, errno, name " on vCPU %u", v->index);               \
    } while (0)

/* Restore order, and why:
 *  1. special registers: CR0/CR3/CR4/EFER give the mode everything else is
 *     interpreted in, and the APIC base (enable, x2APIC) must be in place
 *     before the LAPIC registers, whose ID format depends on it.
 *  2. MSRs (all but the two below), IA32_TSC among them: kvmclock, PAT,
 *     SYSENTER/STAR/LSTAR, TSC_ADJUST (a host write of it does not move
 *     the TSC). KVM writes the kvmclock page into guest RAM here.
 *     Then MSR_KVM_ASYNC_PF_EN, which uses MSR_KVM_ASYNC_PF_INT.
 *  3. LAPIC: after the APIC base, and after IA32_TSC so its timer is armed
 *     against the restored TSC. (KVM restarts a one-shot or periodic timer
 *     from its initial count: the current count is not restored.)
 *  4. TSC-deadline MSR: KVM ignores it unless the LAPIC timer is in
 *     TSC-deadline mode (step 3) and reads it as guest TSC (step 2).
 *  5. XCRs then XSAVE: XCR0 first, so the enabled feature set matches the
 *     image loaded next.
 *  6. general registers: RIP/RFLAGS in the mode of step 1.
 *  7. debug registers.
 *  8. events: after the registers (KVM_SET_REGS drops a pending exception)
 *     and the special registers (KVM_SET_SREGS queues interrupts from its
 *     bitmap).
 *  9. MP state last: KVM_SET_SREGS can make a BSP runnable and the events
 *     can latch an INIT; the saved state (halted, waiting for SIPI) wins. */
int vcpu_state_apply(struct vcpu *v, const struct vcpu_state *s, struct tern_err *err)
{
    struct vm *vm = v->vm;
    if (s->index != v->index)
        return tern_err_set(err, "vCPU %u state: the record holds vCPU %u's state", v->index,
                            s->index);
    if (check_quiescent(v, "load", err) < 0)
        return -1;
    bool xsave2;
    uint32_t xs = host_xsave_size(vm, &xsave2);
    if (xs == 0)
        return tern_err_set(err, "vCPU %u state: this KVM has no KVM_CAP_XSAVE", v->index);
    if (s->xsave_size != xs)
        return tern_err_set(err, "vCPU %u state: XSAVE area is %u bytes, this host's KVM uses %u",
                            v->index, s->xsave_size, xs);
    bool sregs2 = have_sregs2(vm);
    if (!sregs2 && (s->sregs.flags & KVM_SREGS2_FLAGS_PDPTRS_VALID))
        return tern_err_set(err, "vCPU %u state: the saved PAE PDPTRs need KVM_CAP_SREGS2, "
                            "which this KVM lacks", v->index);

    /* 1 */
    if (sregs2) {
        KVM_SET(v->fd, KVM_SET_SREGS2, &s->sregs, "KVM_SET_SREGS2");
    } else {
        const struct kvm_sregs2 *d = &s->sregs;
        struct kvm_sregs sr = {
            .cs = d->cs, .ds = d->ds, .es = d->es, .fs = d->fs, .gs = d->gs, .ss = d->ss,
            .tr = d->tr, .ldt = d->ldt, .gdt = d->gdt, .idt = d->idt,
            .cr0 = d->cr0, .cr2 = d->cr2, .cr3 = d->cr3, .cr4 = d->cr4, .cr8 = d->cr8,
            .efer = d->efer, .apic_base = d->apic_base};
        KVM_SET(v->fd, KVM_SET_SREGS, &sr, "KVM_SET_SREGS");
    }
    /* 2 */
    if (write_msrs(v, s, MSR_PHASE_EARLY, err) < 0 || check_tsc(v, s, err) < 0 ||
        write_msrs(v, s, MSR_PHASE_LAST, err) < 0)
        return -1;
    /* 3 */
    KVM_SET(v->fd, KVM_SET_LAPIC, &s->lapic, "KVM_SET_LAPIC");
    /* 4 */
    if (write_msrs(v, s, MSR_PHASE_AFTER_LAPIC, err) < 0)
        return -1;
    /* 5 */
    KVM_SET(v->fd, KVM_SET_XCRS, &s->xcrs, "KVM_SET_XCRS");
    KVM_SET(v->fd, KVM_SET_XSAVE, s->xsave, "KVM_SET_XSAVE");
    /* 6 */
    KVM_SET(v->fd, KVM_SET_REGS, &s->regs, "KVM_SET_REGS");
    /* 7 */
    KVM_SET(v->fd, KVM_SET_DEBUGREGS, &s->debugregs, "KVM_SET_DEBUGREGS");
    /* 8 */
    KVM_SET(v->fd, KVM_SET_VCPU_EVENTS, &s->events, "KVM_SET_VCPU_EVENTS");
    /* 9 */
    KVM_SET(v->fd, KVM_SET_MP_STATE, &s->mp_state, "KVM_SET_MP_STATE");
    return 0;
}

/* ------------------------------------------------------------- composites */

int vcpu_state_save(struct vcpu *v, struct rec_buf *b, struct tern_err *err)
{
    struct vcpu_state s;
    int rc = vcpu_state_read(v, &s, err);
    if (rc == 0) {
        vcpu_state_encode(&s, b);
        rc = rec_buf_check(b, err);
        if (rc < 0)
            tern_err_prefix(err, "vCPU %u state", v->index);
    }
    vcpu_state_free(&s);
    return rc;
}

int vcpu_state_load(struct vcpu *v, const struct rec_header *h, struct rec_reader *payload,
                    struct tern_err *err)
{
    struct vcpu_state s;
    int rc = vcpu_state_decode(h, payload, &s, err);
    if (rc == 0)
        rc = vcpu_state_apply(v, &s, err);
    vcpu_state_free(&s);
    return rc;
}
