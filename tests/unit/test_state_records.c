/* Unit tests for the saved-state records (no KVM needed): the vCPU and
 * platform records (node-vmm/vcpu_state.c, platform_state.c), the UART and
 * heartbeat records (uart8250.c, dev_heartbeat.c). Round trips with
 * synthetic values, the byte layout of docs/snapshot-state.md, every decode
 * error, and the record CRC catching flipped bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node-vmm/dev_heartbeat.h"
#include "node-vmm/platform_state.h"
#include "node-vmm/uart8250.h"
#include "node-vmm/vcpu_state.h"
#include "proto/record.h"

/* ------------------------------------------------------------- helpers */

static uint64_t pat(unsigned i)
{
    return 0x0123456789abcdefull * (i + 1) ^ ((uint64_t)i << 56);
}

static void le32_at(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t rd32_at(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

/* Offset of the section header with `tag` in a payload whose sections
 * start at `start`; fails the test if absent. */
static size_t find_section(const uint8_t *p, size_t len, size_t start, uint32_t tag)
{
    size_t off = start;
    while (off + 8 <= len) {
        uint32_t t = rd32_at(p + off), l = rd32_at(p + off + 4);
        if (t == tag)
            return off;
        off += 8 + l;
    }
    fail_msg("section 0x%08x not found", tag);
    return 0;
}

/* A payload copy the tests can damage. */
struct bytes {
    uint8_t *p;
    size_t len;
};

static struct bytes payload_of(const struct rec_buf *b)
{
    assert_true(b->len >= REC_HEADER_SIZE);
    struct bytes x = {.len = b->len - REC_HEADER_SIZE};
    x.p = malloc(x.len + 16);
    assert_non_null(x.p);
    memcpy(x.p, b->data + REC_HEADER_SIZE, x.len);
    return x;
}

static void expect_msg(const struct tern_err *err, const char *needle)
{
    if (!strstr(err->msg, needle))
        fail_msg("error \"%s\" does not mention \"%s\"", err->msg, needle);
}

/* ---------------------------------------------------------- vCPU state */

#define TAG(s) STATE_TAG((s)[0], (s)[1], (s)[2], (s)[3])

static void fill_segment(struct kvm_segment *s, unsigned i)
{
    *s = (struct kvm_segment){.base = pat(i), .limit = (uint32_t)pat(i + 1),
                              .selector = (uint16_t)(0x10 + 8 * i), .type = (uint8_t)(i % 16),
                              .present = 1, .dpl = (uint8_t)(i % 4), .db = i & 1, .s = 1,
                              .l = (i >> 1) & 1, .g = 1, .avl = (i >> 2) & 1,
                              .unusable = (i == 7)};
}

/* A vCPU state with a distinct value in every field KVM would accept. */
static void fill_vcpu(struct vcpu_state *s, uint32_t index, uint32_t xsave_size,
                      uint32_t nr_msrs)
{
    memset(s, 0, sizeof(*s));
    s->index = index;
    struct kvm_regs *g = &s->regs;
    __u64 *gp[18] = {&g->rax, &g->rbx, &g->rcx, &g->rdx, &g->rsi, &g->rdi,
                     &g->rsp, &g->rbp, &g->r8,  &g->r9,  &g->r10, &g->r11,
                     &g->r12, &g->r13, &g->r14, &g->r15, &g->rip, &g->rflags};
    for (unsigned i = 0; i < 18; i++)
        *gp[i] = pat(i);
    struct kvm_sregs2 *sr = &s->sregs;
    struct kvm_segment *segs[8] = {&sr->cs, &sr->ds, &sr->es, &sr->fs,
                                   &sr->gs, &sr->ss, &sr->tr, &sr->ldt};
    for (unsigned i = 0; i < 8; i++)
        fill_segment(segs[i], i);
    sr->gdt = (struct kvm_dtable){.base = pat(20), .limit = 0x7f};
    sr->idt = (struct kvm_dtable){.base = pat(21), .limit = 0xfff};
    sr->cr0 = 0x80050033, sr->cr2 = pat(22), sr->cr3 = 0x1000, sr->cr4 = 0x6f0, sr->cr8 = 3;
    sr->efer = 0xd01, sr->apic_base = 0xfee00900;
    sr->flags = KVM_SREGS2_FLAGS_PDPTRS_VALID;
    for (unsigned i = 0; i < 4; i++)
        sr->pdptrs[i] = pat(30 + i);
    s->xsave_size = xsave_size;
    s->xsave = malloc(xsave_size);
    assert_non_null(s->xsave);
    for (uint32_t i = 0; i < xsave_size; i++)
        s->xsave[i] = (uint8_t)(i * 7 + 3);
    s->xcrs.nr_xcrs = 2;
    s->xcrs.xcrs[0] = (struct kvm_xcr){.xcr = 0, .value = 7};
    s->xcrs.xcrs[1] = (struct kvm_xcr){.xcr = 1, .value = pat(40)};
    s->nr_msrs = nr_msrs;
    s->msrs = calloc(nr_msrs ? nr_msrs : 1, sizeof(*s->msrs));
    assert_non_null(s->msrs);
    for (uint32_t i = 0; i < nr_msrs; i++)
        s->msrs[i] = (struct kvm_msr_entry){.index = 0x10 + 3 * i, .data = pat(50 + i)};
    for (unsigned i = 0; i < KVM_APIC_REG_SIZE; i++)
        s->lapic.regs[i] = (char)(i ^ 0x5a);
    struct kvm_vcpu_events *e = &s->events;
    e->exception.injected = 1, e->exception.nr = 14, e->exception.has_error_code = 1;
    e->exception.pending = 0, e->exception.error_code = 0x1234;
    e->interrupt.injected = 1, e->interrupt.nr = 0xec, e->interrupt.soft = 0;
    e->interrupt.shadow = KVM_X86_SHADOW_INT_STI;
    e->nmi.injected = 0, e->nmi.pending = 1, e->nmi.masked = 1;
    e->sipi_vector = 0x9a;
    e->flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW |
               KVM_VCPUEVENT_VALID_SMM | KVM_VCPUEVENT_VALID_PAYLOAD;
    e->smi.smm = 0, e->smi.pending = 1, e->smi.smm_inside_nmi = 0, e->smi.latched_init = 1;
    e->triple_fault.pending = 0;
    e->exception_has_payload = 1, e->exception_payload = pat(60);
    s->mp_state.mp_state = KVM_MP_STATE_HALTED;
    for (unsigned i = 0; i < 4; i++)
        s->debugregs.db[i] = pat(70 + i);
    s->debugregs.dr6 = 0xffff0ff0, s->debugregs.dr7 = 0x400;
}

static void assert_vcpu_equal(const struct vcpu_state *a, const struct vcpu_state *b)
{
    assert_int_equal(a->index, b->index);
    assert_memory_equal(&a->regs, &b->regs, sizeof(a->regs));
    assert_memory_equal(&a->sregs, &b->sregs, sizeof(a->sregs));
    assert_int_equal(a->xsave_size, b->xsave_size);
    assert_memory_equal(a->xsave, b->xsave, a->xsave_size);
    assert_memory_equal(&a->xcrs, &b->xcrs, sizeof(a->xcrs));
    assert_int_equal(a->nr_msrs, b->nr_msrs);
    if (a->nr_msrs)
        assert_memory_equal(a->msrs, b->msrs, a->nr_msrs * sizeof(a->msrs[0]));
    assert_memory_equal(&a->lapic, &b->lapic, sizeof(a->lapic));
    assert_memory_equal(&a->events, &b->events, sizeof(a->events));
    assert_memory_equal(&a->mp_state, &b->mp_state, sizeof(a->mp_state));
    assert_memory_equal(&a->debugregs, &b->debugregs, sizeof(a->debugregs));
}

static void encode_vcpu(const struct vcpu_state *s, struct rec_buf *b)
{
    rec_buf_init(b);
    vcpu_state_encode(s, b);
    assert_int_equal(rec_buf_check(b, NULL), 0);
}

static int decode_vcpu(const uint8_t *p, size_t len, uint16_t version, struct vcpu_state *out,
                       struct tern_err *err)
{
    struct rec_header h = {.type = VCPU_STATE_RECORD, .version = version,
                           .length = (uint32_t)len};
    struct rec_reader r;
    rec_reader_init(&r, p, len);
    return vcpu_state_decode(&h, &r, out, err);
}

/* Decoding must fail and say `needle`. */
static void expect_vcpu_error(const uint8_t *p, size_t len, const char *needle)
{
    struct vcpu_state out;
    struct tern_err err = {0};
    int rc = decode_vcpu(p, len, VCPU_STATE_VERSION, &out, &err);
    vcpu_state_free(&out);
    if (rc == 0)
        fail_msg("decode accepted a record that should fail with \"%s\"", needle);
    expect_msg(&err, needle);
}

static void test_vcpu_round_trip(void **state)
{
    (void)state;
    struct vcpu_state s, d;
    fill_vcpu(&s, 3, 4096, 40);
    struct rec_buf b;
    encode_vcpu(&s, &b);

    struct rec_reader all;
    struct rec_header h;
    struct rec_reader payload;
    struct tern_err err;
    rec_reader_init(&all, b.data, b.len);
    assert_int_equal(rec_next(&all, &h, &payload, &err), 1);
    assert_int_equal(h.type, VCPU_STATE_RECORD);
    assert_int_equal(h.version, 1);
    assert_int_equal(h.flags, 0);
    uint32_t index = 0;
    assert_int_equal(vcpu_state_peek_index(&payload, &index, &err), 0);
    assert_int_equal(index, 3);
    assert_int_equal(payload.off, 0); /* peeking consumed nothing */
    if (vcpu_state_decode(&h, &payload, &d, &err) < 0)
        fail_msg("%s", err.msg);
    assert_vcpu_equal(&s, &d);
    assert_int_equal(rec_next(&all, &h, &payload, &err), 0);

    /* Canonical: decoding and encoding again gives the same bytes. */
    struct rec_buf b2;
    encode_vcpu(&d, &b2);
    assert_int_equal(b.len, b2.len);
    assert_memory_equal(b.data, b2.data, b.len);

    /* The layout of docs/snapshot-state.md. */
    size_t want = 4 + (8 + 144) + (8 + 300) + (8 + 4096) + (8 + 8 + 12 * 2) + (8 + 4 + 12 * 40) +
                  (8 + 1024) + (8 + 37) + (8 + 4) + (8 + 56);
    assert_int_equal(h.length, want);
    const uint8_t *p = b.data + REC_HEADER_SIZE;
    assert_int_equal(rd32_at(p), 3);
    assert_int_equal(rd32_at(p + 4), TAG("REGS"));
    assert_int_equal(rd32_at(p + 8), 144);
    assert_int_equal(rd32_at(p + 12), (uint32_t)s.regs.rax);
    size_t ev = find_section(p, h.length, 4, TAG("EVNT"));
    assert_int_equal(p[ev + 8 + 1], 14);                 /* exception.nr */
    assert_int_equal(rd32_at(p + ev + 8 + 19), s.events.flags);
    size_t mp = find_section(p, h.length, 4, TAG("MPST"));
    assert_int_equal(rd32_at(p + mp + 8), KVM_MP_STATE_HALTED);

    rec_buf_free(&b);
    rec_buf_free(&b2);
    vcpu_state_free(&s);
    vcpu_state_free(&d);
}

static void test_vcpu_round_trip_edges(void **state)
{
    (void)state;
    /* No MSRs, no XCRs, the smallest and a large XSAVE area, no PDPTRs. */
    static const uint32_t sizes[] = {VCPU_STATE_MIN_XSAVE, 11008};
    for (size_t k = 0; k < 2; k++) {
        struct vcpu_state s, d;
        fill_vcpu(&s, 0, sizes[k], 0);
        memset(&s.xcrs, 0, sizeof(s.xcrs)); /* entries past nr_xcrs do not travel */
        s.xcrs.nr_xcrs = k ? KVM_MAX_XCRS : 0;
        for (unsigned i = 0; i < s.xcrs.nr_xcrs; i++)
            s.xcrs.xcrs[i] = (struct kvm_xcr){.xcr = i, .value = pat(i)};
        s.sregs.flags = 0;
        memset(s.sregs.pdptrs, 0, sizeof(s.sregs.pdptrs));
        struct rec_buf b;
        encode_vcpu(&s, &b);
        struct bytes x = payload_of(&b);
        struct tern_err err;
        if (decode_vcpu(x.p, x.len, 1, &d, &err) < 0)
            fail_msg("%s", err.msg);
        assert_vcpu_equal(&s, &d);
        free(x.p);
        rec_buf_free(&b);
        vcpu_state_free(&s);
        vcpu_state_free(&d);
    }
}

static void test_vcpu_truncated(void **state)
{
    (void)state;
    struct vcpu_state s;
    fill_vcpu(&s, 1, 1024, 5);
    struct rec_buf b;
    encode_vcpu(&s, &b);
    struct bytes x = payload_of(&b);
    /* Every proper prefix fails, with a message. */
    for (size_t len = 0; len < x.len; len++) {
        struct vcpu_state d;
        struct tern_err err = {0};
        int rc = decode_vcpu(x.p, len, 1, &d, &err);
        vcpu_state_free(&d);
        if (rc == 0)
            fail_msg("a %zu-byte prefix of a %zu-byte record decoded", len, x.len);
        assert_true(err.msg[0] != '\0');
    }
    expect_vcpu_error(x.p, 2, "too short for a vCPU index");
    expect_vcpu_error(x.p, 4, "vCPU 1 state: truncated before the registers section");
    expect_vcpu_error(x.p, 100, "registers section is 144 bytes but only");
    free(x.p);
    rec_buf_free(&b);
    vcpu_state_free(&s);
}

static void test_vcpu_header_errors(void **state)
{
    (void)state;
    struct vcpu_state s, d;
    fill_vcpu(&s, 1, 1024, 2);
    struct rec_buf b;
    encode_vcpu(&s, &b);
    struct bytes x = payload_of(&b);
    struct tern_err err;
    struct rec_reader r;

    assert_int_equal(decode_vcpu(x.p, x.len, 2, &d, &err), -1);
    expect_msg(&err, "version 2 is not supported (this tern-vmm reads version 1)");
    vcpu_state_free(&d);

    struct rec_header h = {.type = PLATFORM_STATE_RECORD, .version = 1};
    rec_reader_init(&r, x.p, x.len);
    assert_int_equal(vcpu_state_decode(&h, &r, &d, &err), -1);
    expect_msg(&err, "record type 0x0102 is not 0x0101");
    vcpu_state_free(&d);

    h = (struct rec_header){.type = VCPU_STATE_RECORD, .version = 1, .flags = 4};
    rec_reader_init(&r, x.p, x.len);
    assert_int_equal(vcpu_state_decode(&h, &r, &d, &err), -1);
    expect_msg(&err, "unknown record flags 0x0004");
    vcpu_state_free(&d);

    /* Trailing bytes after the last section. */
    x.p[x.len] = 0;
    expect_vcpu_error(x.p, x.len + 1, "vCPU 1 state has 1 unexpected trailing bytes");
    free(x.p);
    rec_buf_free(&b);
    vcpu_state_free(&s);
}

static void test_vcpu_section_errors(void **state)
{
    (void)state;
    struct vcpu_state s;
    fill_vcpu(&s, 2, 2688, 3);
    struct rec_buf b;
    encode_vcpu(&s, &b);
    struct bytes x = payload_of(&b);
    uint8_t *p = x.p;

    /* A fixed-size section with another length. */
    static const struct {
        const char *tag, *msg;
    } fixed[] = {
        {"REGS", "vCPU 2 state: registers section is 145 bytes, version 1 has 144"},
        {"SREG", "special registers section is 301 bytes, version 1 has 300"},
        {"LAPC", "LAPIC section is 1025 bytes, version 1 has 1024"},
        {"EVNT", "events section is 38 bytes, version 1 has 37"},
        {"MPST", "MP state section is 5 bytes, version 1 has 4"},
        {"DBGR", "debug registers section is 57 bytes, version 1 has 56"},
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        size_t at = find_section(p, x.len, 4, TAG(fixed[i].tag));
        uint32_t old = rd32_at(p + at + 4);
        le32_at(p + at + 4, old + 1);
        expect_vcpu_error(p, x.len, fixed[i].msg);
        le32_at(p + at + 4, old);
    }

    /* A section in the wrong place (its tag changed). */
    size_t at = find_section(p, x.len, 4, TAG("XSAV"));
    le32_at(p + at, TAG("XSAW"));
    expect_vcpu_error(p, x.len, "expected the XSAVE section ('XSAV'), found tag 0x57415358 ('XSAW')");
    le32_at(p + at, TAG("XSAV"));

    /* A section longer than what is left. */
    le32_at(p + at + 4, 1u << 19);
    expect_vcpu_error(p, x.len, "XSAVE section is 524288 bytes but only");
    le32_at(p + at + 4, VCPU_STATE_MAX_XSAVE + 1);
    expect_vcpu_error(p, x.len, "XSAVE section is 1048577 bytes, at most 1048576 allowed");
    le32_at(p + at + 4, 2688);

    /* XCRs: count against length, count limit, flags. */
    at = find_section(p, x.len, 4, TAG("XCRS"));
    le32_at(p + at + 8, 3);
    expect_vcpu_error(p, x.len, "XCRs section is 32 bytes, 3 XCRs take 44");
    le32_at(p + at + 8, 17);
    expect_vcpu_error(p, x.len, "17 XCRs, KVM has at most 16");
    le32_at(p + at + 8, 2);
    le32_at(p + at + 12, 1);
    expect_vcpu_error(p, x.len, "XCRs have unknown flags 0x1");
    le32_at(p + at + 12, 0);

    /* MSRs: count against length, count limit. */
    at = find_section(p, x.len, 4, TAG("MSRS"));
    le32_at(p + at + 8, 4);
    expect_vcpu_error(p, x.len, "MSRs section is 40 bytes, 4 MSRs take 52");
    le32_at(p + at + 8, VCPU_STATE_MAX_MSRS + 1);
    expect_vcpu_error(p, x.len, "4097 MSRs, at most 4096 allowed");
    le32_at(p + at + 8, 3);

    /* Still intact after all that. */
    struct vcpu_state d;
    struct tern_err err;
    if (decode_vcpu(p, x.len, 1, &d, &err) < 0)
        fail_msg("%s", err.msg);
    vcpu_state_free(&d);
    free(x.p);
    rec_buf_free(&b);
    vcpu_state_free(&s);
}

/* Encodes `s` (the encoder writes what it is given) and expects the
 * decoder to refuse it with `needle`. */
static void expect_vcpu_value_error(const struct vcpu_state *s, const char *needle)
{
    struct rec_buf b;
    encode_vcpu(s, &b);
    struct bytes x = payload_of(&b);
    expect_vcpu_error(x.p, x.len, needle);
    free(x.p);
    rec_buf_free(&b);
}

static void test_vcpu_value_errors(void **state)
{
    (void)state;
    struct vcpu_state s;
    fill_vcpu(&s, 1, 1024, 3);

    s.msrs[2].index = s.msrs[1].index;
    expect_vcpu_value_error(&s, "MSR 0x00000013 follows MSR 0x00000013 (must be ascending, once each)");
    s.msrs[2].index = 0x11;
    expect_vcpu_value_error(&s, "MSR 0x00000011 follows MSR 0x00000013");
    s.msrs[2].index = 0x16;

    s.sregs.cs.dpl = 4;
    expect_vcpu_value_error(&s, "segment cs has an out-of-range attribute");
    s.sregs.cs.dpl = 0;
    s.sregs.ldt.present = 2;
    expect_vcpu_value_error(&s, "segment ldt has an out-of-range attribute");
    s.sregs.ldt.present = 1;
    s.sregs.flags = 2;
    expect_vcpu_value_error(&s, "special registers have unknown flags 0x2");
    s.sregs.flags = 0;
    expect_vcpu_value_error(&s, "PAE PDPTRs present but not marked valid");
    s.sregs.flags = KVM_SREGS2_FLAGS_PDPTRS_VALID;

    s.events.flags |= 0x40;
    expect_vcpu_value_error(&s, "events have unknown flags 0x5d");
    s.events.flags &= ~0x40u;
    s.events.nmi.masked = 2;
    expect_vcpu_value_error(&s, "events: a yes/no field holds 2");
    s.events.nmi.masked = 1;
    s.events.exception.nr = 32;
    expect_vcpu_value_error(&s, "events: exception vector 32");
    s.events.exception.nr = 14;
    s.events.interrupt.shadow = 4;
    expect_vcpu_value_error(&s, "events: interrupt shadow 0x4");
    s.events.interrupt.shadow = 1;

    s.mp_state.mp_state = 11;
    expect_vcpu_value_error(&s, "unknown MP state 11");
    s.mp_state.mp_state = 0;
    s.debugregs.flags = 1;
    expect_vcpu_value_error(&s, "debug registers have unknown flags 0x1");
    s.debugregs.flags = 0;

    s.xsave_size = 575;
    expect_vcpu_value_error(&s, "XSAVE area is 575 bytes, less than the 576");
    s.xsave_size = 1024;

    /* An impossible XCR count is refused by the encoder. */
    struct rec_buf b;
    rec_buf_init(&b);
    s.xcrs.nr_xcrs = KVM_MAX_XCRS + 1;
    vcpu_state_encode(&s, &b);
    assert_int_equal(rec_buf_check(&b, NULL), -1);
    rec_buf_free(&b);
    vcpu_state_free(&s);
}

/* ------------------------------------------------------ platform state */

static void fill_platform(struct platform_state *s)
{
    memset(s, 0, sizeof(*s));
    for (int c = 0; c < 2; c++) {
        struct kvm_pic_state *p = &s->pic[c];
        p->last_irr = (uint8_t)(0x11 + c), p->irr = (uint8_t)(0x22 + c), p->imr = 0xfb;
        p->isr = (uint8_t)(0x40 >> c), p->priority_add = (uint8_t)(5 + c);
        p->irq_base = (uint8_t)(0x20 + 8 * c), p->read_reg_select = 1, p->poll = 0;
        p->special_mask = 1, p->init_state = 2, p->auto_eoi = 1, p->rotate_on_auto_eoi = 0;
        p->special_fully_nested_mode = 1, p->init4 = 1, p->elcr = (uint8_t)(0x0c - c);
        p->elcr_mask = (uint8_t)(0xf8 - c);
    }
    s->ioapic.base_address = 0xfec00000, s->ioapic.ioregsel = 0x10, s->ioapic.id = 1;
    s->ioapic.irr = 0x10;
    for (int i = 0; i < KVM_IOAPIC_NUM_PINS; i++)
        s->ioapic.redirtbl[i].bits = pat(i);
    for (int i = 0; i < 3; i++) {
        struct kvm_pit_channel_state *c = &s->pit.channels[i];
        c->count = i == 0 ? 0x10000 : (uint32_t)(1000 * i), c->latched_count = (uint16_t)(7 * i);
        c->count_latched = (uint8_t)i, c->status_latched = 1, c->status = 0x36;
        c->read_state = 3, c->write_state = 3, c->write_latch = 0x9c, c->rw_mode = 3;
        c->mode = (uint8_t)(i == 1 ? 0xff : 2), c->bcd = 0, c->gate = i != 2;
        c->count_load_time = -(int64_t)pat(i + 5);
    }
    s->pit.flags = KVM_PIT_FLAGS_SPEAKER_DATA_ON;
    s->clock = (struct kvm_clock_data){.clock = 123456789, .flags = 0xe,
                                       .realtime = 1795323600808146063ull,
                                       .host_tsc = 4688595006308ull};
}

static int decode_platform(const uint8_t *p, size_t len, struct platform_state *out,
                           struct tern_err *err)
{
    struct rec_header h = {.type = PLATFORM_STATE_RECORD, .version = 1,
                           .length = (uint32_t)len};
    struct rec_reader r;
    rec_reader_init(&r, p, len);
    return platform_state_decode(&h, &r, out, err);
}

static void expect_platform_error(const uint8_t *p, size_t len, const char *needle)
{
    struct platform_state out;
    struct tern_err err = {0};
    if (decode_platform(p, len, &out, &err) == 0)
        fail_msg("decode accepted a record that should fail with \"%s\"", needle);
    expect_msg(&err, needle);
}

static void encode_platform(const struct platform_state *s, struct rec_buf *b)
{
    rec_buf_init(b);
    platform_state_encode(s, b);
    assert_int_equal(rec_buf_check(b, NULL), 0);
}

static void test_platform_round_trip(void **state)
{
    (void)state;
    struct platform_state s, d;
    fill_platform(&s);
    struct rec_buf b;
    encode_platform(&s, &b);
    struct bytes x = payload_of(&b);
    assert_int_equal(x.len, (8 + 16) * 2 + (8 + 216) + (8 + 76) + (8 + 28));
    struct tern_err err;
    if (decode_platform(x.p, x.len, &d, &err) < 0)
        fail_msg("%s", err.msg);
    assert_memory_equal(&s, &d, sizeof(s));
    struct rec_buf b2;
    encode_platform(&d, &b2);
    assert_int_equal(b.len, b2.len);
    assert_memory_equal(b.data, b2.data, b.len);
    /* Layout spot checks. */
    size_t at = find_section(x.p, x.len, 0, TAG("IOAP"));
    assert_int_equal(rd32_at(x.p + at + 8 + 20), KVM_IOAPIC_NUM_PINS);
    at = find_section(x.p, x.len, 0, TAG("CLCK"));
    assert_int_equal(rd32_at(x.p + at + 8 + 8), 0xe);
    free(x.p);
    rec_buf_free(&b);
    rec_buf_free(&b2);
}

static void test_platform_errors(void **state)
{
    (void)state;
    struct platform_state s, d;
    fill_platform(&s);
    struct rec_buf b;
    encode_platform(&s, &b);
    struct bytes x = payload_of(&b);
    struct tern_err err;

    for (size_t len = 0; len < x.len; len++)
        if (decode_platform(x.p, len, &d, &err) == 0)
            fail_msg("a %zu-byte prefix decoded", len);
    expect_platform_error(x.p, 0, "platform state: truncated before the PIC master section");
    x.p[x.len] = 9;
    expect_platform_error(x.p, x.len + 1, "platform state has 1 unexpected trailing bytes");

    struct rec_reader r;
    struct rec_header h = {.type = PLATFORM_STATE_RECORD, .version = 3};
    rec_reader_init(&r, x.p, x.len);
    assert_int_equal(platform_state_decode(&h, &r, &d, &err), -1);
    expect_msg(&err, "platform state: version 3 is not supported");
    h = (struct rec_header){.type = UART_STATE_RECORD, .version = 1};
    rec_reader_init(&r, x.p, x.len);
    assert_int_equal(platform_state_decode(&h, &r, &d, &err), -1);
    expect_msg(&err, "record type 0x0201 is not 0x0102");

    size_t at = find_section(x.p, x.len, 0, TAG("PIT2"));
    le32_at(x.p + at + 4, 75);
    expect_platform_error(x.p, x.len, "PIT section is 75 bytes, version 1 has 76");
    le32_at(x.p + at + 4, 76);
    at = find_section(x.p, x.len, 0, TAG("IOAP"));
    le32_at(x.p + at + 8 + 20, 23);
    expect_platform_error(x.p, x.len, "IOAPIC has 23 pins, KVM's has 24");
    le32_at(x.p + at + 8 + 20, 24);
    le32_at(x.p + at, TAG("PIC1"));
    expect_platform_error(x.p, x.len, "expected the IOAPIC section ('IOAP')");
    le32_at(x.p + at, TAG("IOAP"));
    if (decode_platform(x.p, x.len, &d, &err) < 0)
        fail_msg("%s", err.msg);
    free(x.p);
    rec_buf_free(&b);

    static const struct {
        int field;
        const char *msg;
    } cases[] = {
        {0, "PIT channel 1 count 65537 exceeds 65536"},
        {1, "PIT has unknown flags 0x4"},
        {2, "clock has unknown flags 0x1"},
        {3, "PIC slave: priority_add 8"},
        {4, "PIC master: a yes/no field holds 2"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fill_platform(&s);
        switch (cases[i].field) {
        case 0: s.pit.channels[1].count = 0x10001; break;
        case 1: s.pit.flags = 4; break;
        case 2: s.clock.flags = 1; break;
        case 3: s.pic[1].priority_add = 8; break;
        case 4: s.pic[0].poll = 2; break;
        }
        encode_platform(&s, &b);
        x = payload_of(&b);
        expect_platform_error(x.p, x.len, cases[i].msg);
        free(x.p);
        rec_buf_free(&b);
    }
}

/* ------------------------------------------------------------------ UART */

struct irq_probe {
    int calls, level;
};

static void probe_set_irq(void *opaque, int level)
{
    struct irq_probe *p = opaque;
    p->calls++;
    p->level = level;
}

static const struct uart8250_ops probe_ops = {.set_irq = probe_set_irq};

/* A UART in a busy state: divisor, FIFO on, interrupts on, bytes waiting
 * in a wrapped ring, output high. */
static void busy_uart(struct uart8250 *u, struct irq_probe *p)
{
    uart8250_init(u, &probe_ops, p);
    uart8250_write(u, 3, 0x80); /* DLAB */
    uart8250_write(u, 0, 0x0c);
    uart8250_write(u, 1, 0x00);
    uart8250_write(u, 3, 0x03);
    uart8250_write(u, 2, 0xc1); /* FIFO on, trigger 14 */
    uart8250_write(u, 4, 0x0b); /* DTR RTS OUT2 */
    uart8250_write(u, 7, 0x5a);
    uart8250_write(u, 1, 0x01); /* RX interrupt */
    const uint8_t in[14] = "hello, world!";
    assert_int_equal(uart8250_receive(u, in, 10), 10);
    for (int i = 0; i < 7; i++)
        uart8250_read(u, 0);
    assert_int_equal(uart8250_receive(u, in, 14), 13);
    assert_int_equal(p->level, 1);
}

static int decode_uart(const uint8_t *p, size_t len, uint16_t version,
                       struct uart8250_state *out, struct tern_err *err)
{
    struct rec_header h = {.type = UART_STATE_RECORD, .version = version,
                           .length = (uint32_t)len};
    struct rec_reader r;
    rec_reader_init(&r, p, len);
    return uart8250_state_decode(&h, &r, out, err);
}

static void test_uart_round_trip(void **state)
{
    (void)state;
    struct uart8250 u, v;
    struct irq_probe pu = {0}, pv = {0};
    busy_uart(&u, &pu);
    struct rec_buf b;
    rec_buf_init(&b);
    uart8250_state_save(&u, &b);
    assert_int_equal(rec_buf_check(&b, NULL), 0);
    struct rec_reader all, payload;
    struct rec_header h;
    struct tern_err err;
    rec_reader_init(&all, b.data, b.len);
    assert_int_equal(rec_next(&all, &h, &payload, &err), 1);
    assert_int_equal(h.type, UART_STATE_RECORD);
    assert_int_equal(h.length, 30);
    assert_int_equal(payload.p[10], UART8250_RX_FIFO); /* the FIFO size byte */

    uart8250_init(&v, &probe_ops, &pv);
    if (uart8250_state_load(&v, &h, &payload, &err) < 0)
        fail_msg("%s", err.msg);
    assert_memory_equal(&u.s, &v.s, sizeof(u.s));
    assert_int_equal(pv.calls, 1); /* the raised line is reported */
    assert_int_equal(pv.level, 1);
    /* The restored UART behaves like the original. */
    for (int i = 0; i < 16; i++)
        assert_int_equal(uart8250_read(&u, i % 8), uart8250_read(&v, i % 8));

    /* Canonical. */
    struct rec_buf b2;
    rec_buf_init(&b2);
    uart8250_state_save(&v, &b2);
    /* (reads above changed both the same way; compare fresh saves) */
    rec_buf_reset(&b);
    uart8250_state_save(&u, &b);
    assert_int_equal(b.len, b2.len);
    assert_memory_equal(b.data, b2.data, b.len);
    rec_buf_free(&b);
    rec_buf_free(&b2);
}

static void test_uart_errors(void **state)
{
    (void)state;
    struct uart8250 u;
    struct irq_probe pu = {0};
    busy_uart(&u, &pu);
    struct rec_buf b;
    rec_buf_init(&b);
    uart8250_state_save(&u, &b);
    struct bytes x = payload_of(&b);
    struct uart8250_state d;
    struct tern_err err;

    for (size_t len = 0; len < x.len; len++)
        assert_int_equal(decode_uart(x.p, len, 1, &d, &err), -1);
    expect_msg(&err, "uart state is malformed");
    x.p[x.len] = 0;
    assert_int_equal(decode_uart(x.p, x.len + 1, 1, &d, &err), -1);
    expect_msg(&err, "uart state has 1 unexpected trailing bytes");
    assert_int_equal(decode_uart(x.p, x.len, 2, &d, &err), -1);
    expect_msg(&err, "uart state: version 2 is not supported (this tern-vmm reads version 1)");
    struct rec_header h = {.type = UART_STATE_RECORD, .version = 1, .flags = 1};
    struct rec_reader r;
    rec_reader_init(&r, x.p, x.len);
    assert_int_equal(uart8250_state_decode(&h, &r, &d, &err), -1);
    expect_msg(&err, "uart state: unknown record flags 0x0001");
    h = (struct rec_header){.type = HEARTBEAT_STATE_RECORD, .version = 1};
    rec_reader_init(&r, x.p, x.len);
    assert_int_equal(uart8250_state_decode(&h, &r, &d, &err), -1);
    expect_msg(&err, "uart state: record type 0x0202 is not 0x0201");

    /* The layout: ier lcr mcr lsr_err msr scr fcr dll dlm thre_pending
     * fifo_size fifo[16] rx_head rx_count irq_level. */
    static const struct {
        size_t off;
        uint8_t value;
        const char *msg;
    } bad[] = {
        {0, 0x10, "uart state: uart8250: IER 0x10 has reserved bits"},
        {2, 0x2b, "MCR 0x2b has reserved bits"},
        {3, 0x01, "LSR error bits 0x01 not modelled"},
        {4, 0x00, "MSR 0x00 does not match MCR"},
        {6, 0xc7, "FCR 0xc7 has bits the model never keeps"},
        {9, 2, "flag out of range"},
        {10, 8, "uart state: receive FIFO of 8 bytes, this model has 16"},
        {27, 16, "RX FIFO head 16 out of range"},
        {28, 17, "RX FIFO holds 17 bytes, capacity 16"},
        {29, 2, "flag out of range"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t old = x.p[bad[i].off];
        x.p[bad[i].off] = bad[i].value;
        assert_int_equal(decode_uart(x.p, x.len, 1, &d, &err), -1);
        expect_msg(&err, bad[i].msg);
        /* A failed load leaves the UART as it was. */
        struct uart8250 v;
        struct irq_probe pv = {0};
        busy_uart(&v, &pv);
        struct uart8250_state before = v.s;
        pv.calls = 0;
        h = (struct rec_header){.type = UART_STATE_RECORD, .version = 1};
        rec_reader_init(&r, x.p, x.len);
        assert_int_equal(uart8250_state_load(&v, &h, &r, &err), -1);
        assert_memory_equal(&before, &v.s, sizeof(before));
        assert_int_equal(pv.calls, 0);
        x.p[bad[i].off] = old;
    }
    if (decode_uart(x.p, x.len, 1, &d, &err) < 0)
        fail_msg("%s", err.msg);
    free(x.p);
    rec_buf_free(&b);
}

/* ------------------------------------------------------------- heartbeat */

static int decode_hb(const uint8_t *p, size_t len, struct heartbeat_state *out,
                     struct tern_err *err)
{
    struct rec_header h = {.type = HEARTBEAT_STATE_RECORD, .version = 1,
                           .length = (uint32_t)len};
    struct rec_reader r;
    rec_reader_init(&r, p, len);
    return dev_heartbeat_state_decode(&h, &r, out, err);
}

static void test_heartbeat_round_trip(void **state)
{
    (void)state;
    struct dev_heartbeat a, c;
    dev_heartbeat_init(&a);
    dev_heartbeat_init(&c);
    dev_heartbeat_record(&a, 1, 1000000000);
    dev_heartbeat_record(&a, 2, 1001000000);
    dev_heartbeat_record(&a, 4, 1005000000); /* a skipped sequence number */
    dev_heartbeat_record(&a, 5, -3);         /* the clock stepped back */
    struct rec_buf b;
    rec_buf_init(&b);
    dev_heartbeat_state_save(&a, &b);
    assert_int_equal(rec_buf_check(&b, NULL), 0);
    struct rec_reader all, payload;
    struct rec_header h;
    struct tern_err err;
    rec_reader_init(&all, b.data, b.len);
    assert_int_equal(rec_next(&all, &h, &payload, &err), 1);
    assert_int_equal(h.type, HEARTBEAT_STATE_RECORD);
    assert_int_equal(h.length, 52);
    if (dev_heartbeat_state_load(&c, &h, &payload, &err) < 0)
        fail_msg("%s", err.msg);
    struct heartbeat_state sa, sc;
    dev_heartbeat_snapshot(&a, &sa);
    dev_heartbeat_snapshot(&c, &sc);
    assert_memory_equal(&sa, &sc, sizeof(sa));
    assert_int_equal(sc.count, 4);
    assert_int_equal(sc.seq_errors, 1);
    assert_int_equal(sc.max_gap_ns, 4000000);
    /* The restored device goes on where the saved one was. */
    dev_heartbeat_record(&c, 6, 2000000000);
    dev_heartbeat_snapshot(&c, &sc);
    assert_int_equal(sc.seq_errors, 1);
    assert_int_equal(sc.max_gap_ns, 2000000003);

    /* Empty device round trip. */
    struct dev_heartbeat e;
    dev_heartbeat_init(&e);
    rec_buf_reset(&b);
    dev_heartbeat_state_save(&e, &b);
    struct bytes x = payload_of(&b);
    struct heartbeat_state d;
    assert_int_equal(decode_hb(x.p, x.len, &d, &err), 0);
    assert_int_equal(d.count, 0);
    free(x.p);
    rec_buf_free(&b);
    dev_heartbeat_destroy(&a);
    dev_heartbeat_destroy(&c);
    dev_heartbeat_destroy(&e);
}

static void put_hb(struct rec_buf *b, uint64_t count, uint32_t last_seq, uint64_t seq_errors,
                   int64_t first, int64_t last, int64_t gap, int64_t gap_end)
{
    rec_buf_reset(b);
    rec_begin(b, HEARTBEAT_STATE_RECORD, 1, 0);
    rec_put_u64(b, count);
    rec_put_u32(b, last_seq);
    rec_put_u64(b, seq_errors);
    rec_put_u64(b, (uint64_t)first);
    rec_put_u64(b, (uint64_t)last);
    rec_put_u64(b, (uint64_t)gap);
    rec_put_u64(b, (uint64_t)gap_end);
    rec_end(b);
}

static void test_heartbeat_errors(void **state)
{
    (void)state;
    struct rec_buf b;
    rec_buf_init(&b);
    struct heartbeat_state d;
    struct tern_err err;
    struct bytes x;

    put_hb(&b, 3, 3, 0, 10, 30, 10, 20);
    x = payload_of(&b);
    assert_int_equal(decode_hb(x.p, x.len, &d, &err), 0);
    for (size_t len = 0; len < x.len; len++)
        assert_int_equal(decode_hb(x.p, len, &d, &err), -1);
    expect_msg(&err, "heartbeat state is malformed");
    x.p[x.len] = 0;
    assert_int_equal(decode_hb(x.p, x.len + 1, &d, &err), -1);
    expect_msg(&err, "heartbeat state has 1 unexpected trailing bytes");
    struct rec_header h = {.type = HEARTBEAT_STATE_RECORD, .version = 0};
    struct rec_reader r;
    rec_reader_init(&r, x.p, x.len);
    assert_int_equal(dev_heartbeat_state_decode(&h, &r, &d, &err), -1);
    expect_msg(&err, "heartbeat state: version 0 is not supported");
    h = (struct rec_header){.type = HEARTBEAT_STATE_RECORD, .version = 1, .flags = 0x8000};
    rec_reader_init(&r, x.p, x.len);
    assert_int_equal(dev_heartbeat_state_decode(&h, &r, &d, &err), -1);
    expect_msg(&err, "unknown record flags 0x8000");
    free(x.p);

    static const struct {
        uint64_t count;
        uint32_t seq;
        uint64_t errors;
        int64_t first, last, gap, gap_end;
        const char *msg;
    } bad[] = {
        {0, 1, 0, 0, 0, 0, 0, "values recorded without any heartbeat"},
        {0, 0, 0, 0, 5, 0, 0, "values recorded without any heartbeat"},
        {2, 2, 2, 1, 2, 1, 2, "2 sequence errors in 2 heartbeats"},
        {2, 2, 0, 1, 2, -1, 2, "negative largest gap -1 ns"},
        {2, 2, 0, 1, 2, 0, 2, "a largest gap that ends but has no length"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        put_hb(&b, bad[i].count, bad[i].seq, bad[i].errors, bad[i].first, bad[i].last,
               bad[i].gap, bad[i].gap_end);
        x = payload_of(&b);
        assert_int_equal(decode_hb(x.p, x.len, &d, &err), -1);
        expect_msg(&err, bad[i].msg);
        /* A failed load leaves the device alone. */
        struct dev_heartbeat hb;
        dev_heartbeat_init(&hb);
        dev_heartbeat_record(&hb, 7, 99);
        rec_reader_init(&r, x.p, x.len);
        h = (struct rec_header){.type = HEARTBEAT_STATE_RECORD, .version = 1};
        assert_int_equal(dev_heartbeat_state_load(&hb, &h, &r, &err), -1);
        struct heartbeat_state s;
        dev_heartbeat_snapshot(&hb, &s);
        assert_int_equal(s.count, 1);
        assert_int_equal(s.last_seq, 7);
        dev_heartbeat_destroy(&hb);
        free(x.p);
    }
    rec_buf_free(&b);
}

/* ------------------------------------------------- a stream of records */

/* One buffer with every record kind, as a snapshot holds them. */
static void build_stream(struct rec_buf *b)
{
    rec_buf_init(b);
    struct vcpu_state v0, v1;
    fill_vcpu(&v0, 0, 4096, 43);
    fill_vcpu(&v1, 1, 4096, 43);
    vcpu_state_encode(&v0, b);
    vcpu_state_encode(&v1, b);
    struct platform_state p;
    fill_platform(&p);
    platform_state_encode(&p, b);
    struct uart8250 u;
    struct irq_probe pu = {0};
    busy_uart(&u, &pu);
    uart8250_state_save(&u, b);
    struct dev_heartbeat hb;
    dev_heartbeat_init(&hb);
    dev_heartbeat_record(&hb, 1, 5);
    dev_heartbeat_state_save(&hb, b);
    dev_heartbeat_destroy(&hb);
    assert_int_equal(rec_buf_check(b, NULL), 0);
    vcpu_state_free(&v0);
    vcpu_state_free(&v1);
}

/* Walks the stream, decoding each record by type; returns -1 at the first
 * error (err says what), else the number of records. */
static int walk_stream(const uint8_t *p, size_t len, struct tern_err *err)
{
    struct rec_reader all, payload;
    struct rec_header h;
    rec_reader_init(&all, p, len);
    int n = 0, rc;
    while ((rc = rec_next(&all, &h, &payload, err)) == 1) {
        struct vcpu_state v;
        struct platform_state ps;
        struct uart8250_state us;
        struct heartbeat_state hs;
        switch (h.type) {
        case VCPU_STATE_RECORD:
            rc = vcpu_state_decode(&h, &payload, &v, err);
            vcpu_state_free(&v);
            break;
        case PLATFORM_STATE_RECORD: rc = platform_state_decode(&h, &payload, &ps, err); break;
        case UART_STATE_RECORD: rc = uart8250_state_decode(&h, &payload, &us, err); break;
        case HEARTBEAT_STATE_RECORD:
            rc = dev_heartbeat_state_decode(&h, &payload, &hs, err);
            break;
        default: return tern_err_set(err, "unknown record 0x%x", h.type);
        }
        if (rc < 0)
            return -1;
        n++;
    }
    return rc < 0 ? -1 : n;
}

static void test_stream_walk(void **state)
{
    (void)state;
    struct rec_buf b;
    build_stream(&b);
    struct tern_err err;
    int n = walk_stream(b.data, b.len, &err);
    if (n < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(n, 5);
    rec_buf_free(&b);
}

/* Every single-bit flip anywhere in the stream is caught by rec_next
 * (CRC, or a length that no longer fits). */
static void test_crc_catches_flips(void **state)
{
    (void)state;
    struct rec_buf b;
    build_stream(&b);
    unsigned caught_crc = 0;
    for (size_t i = 0; i < b.len; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            b.data[i] ^= (uint8_t)(1u << bit);
            struct tern_err err = {0};
            int n = walk_stream(b.data, b.len, &err);
            if (n >= 0)
                fail_msg("flipping bit %d of byte %zu went unnoticed", bit, i);
            if (strstr(err.msg, "is corrupt: checksum"))
                caught_crc++;
            b.data[i] ^= (uint8_t)(1u << bit);
        }
    }
    assert_true(caught_crc > b.len); /* most by the checksum itself */
    struct tern_err err;
    assert_int_equal(walk_stream(b.data, b.len, &err), 5);
    rec_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vcpu_round_trip),
        cmocka_unit_test(test_vcpu_round_trip_edges),
        cmocka_unit_test(test_vcpu_truncated),
        cmocka_unit_test(test_vcpu_header_errors),
        cmocka_unit_test(test_vcpu_section_errors),
        cmocka_unit_test(test_vcpu_value_errors),
        cmocka_unit_test(test_platform_round_trip),
        cmocka_unit_test(test_platform_errors),
        cmocka_unit_test(test_uart_round_trip),
        cmocka_unit_test(test_uart_errors),
        cmocka_unit_test(test_heartbeat_round_trip),
        cmocka_unit_test(test_heartbeat_errors),
        cmocka_unit_test(test_stream_walk),
        cmocka_unit_test(test_crc_catches_flips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
