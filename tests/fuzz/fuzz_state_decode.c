/* libFuzzer harness for the saved-state decoders: vcpu_state_decode,
 * platform_state_decode, uart8250_state_decode, dev_heartbeat_state_decode
 * (the pure parsing halves; applying to KVM is not fuzzed). Arbitrary bytes
 * must give a clean success or error, never a crash, an out-of-bounds
 * access or a leak. And the encodings are canonical: whatever a decoder
 * accepts, encoding it again gives the very same bytes.
 *
 * The first input byte picks what the rest is:
 *   0-3  a payload for one decoder (vCPU, platform, UART, heartbeat);
 *   4    a stream of records, walked with rec_next (framing and CRC);
 *   5,6  a valid vCPU / platform record built from the bytes, then damaged
 *        (one byte changed, or cut short) where the bytes say, so the
 *        fuzzer reaches the checks deep inside without guessing tags.
 *
 *   clang -std=gnu11 -D_GNU_SOURCE -I. -g -O1 -fsanitize=fuzzer,address,undefined \
 *       tests/fuzz/fuzz_state_decode.c node-vmm/vcpu_state.c node-vmm/platform_state.c \
 *       node-vmm/uart8250.c node-vmm/dev_heartbeat.c proto/record.c common/err.c \
 *       -lz -lpthread -o fuzz_state_decode
 * (or `make fuzz`, which links the whole library). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "node-vmm/dev_heartbeat.h"
#include "node-vmm/platform_state.h"
#include "node-vmm/uart8250.h"
#include "node-vmm/vcpu_state.h"
#include "proto/record.h"

static const uint32_t types[4] = {VCPU_STATE_RECORD, PLATFORM_STATE_RECORD, UART_STATE_RECORD,
                                  HEARTBEAT_STATE_RECORD};

/* The payload of the single record in b (which must hold exactly one). */
static void same_payload(const struct rec_buf *b, const uint8_t *p, size_t n)
{
    if (b->failed || b->len != REC_HEADER_SIZE + n || memcmp(b->data + REC_HEADER_SIZE, p, n))
        abort(); /* a decoder accepted a non-canonical encoding */
}

/* Decodes with the decoder for `kind`; on success re-encodes and compares. */
static int decode_one(unsigned kind, uint16_t version, uint16_t flags, const uint8_t *p,
                      size_t n)
{
    struct rec_header h = {.type = types[kind], .version = version, .flags = flags,
                           .length = (uint32_t)n};
    struct rec_reader r;
    struct tern_err err;
    struct rec_buf b;
    rec_reader_init(&r, p, n);
    rec_buf_init(&b);
    int rc;
    switch (kind) {
    case 0: {
        struct vcpu_state s;
        rc = vcpu_state_decode(&h, &r, &s, &err);
        if (rc == 0)
            vcpu_state_encode(&s, &b);
        vcpu_state_free(&s);
        break;
    }
    case 1: {
        struct platform_state s;
        rc = platform_state_decode(&h, &r, &s, &err);
        if (rc == 0)
            platform_state_encode(&s, &b);
        break;
    }
    case 2: {
        struct uart8250 u;
        uart8250_init(&u, NULL, NULL);
        rc = uart8250_state_load(&u, &h, &r, &err);
        if (rc == 0) {
            uart8250_state_save(&u, &b);
            same_payload(&b, p, n);
            rec_buf_reset(&b);
            /* The restored model must take any guest access. */
            for (unsigned i = 0; i < 24; i++)
                (void)uart8250_read(&u, i % 9);
            uart8250_write(&u, 0, 'x');
            uint8_t in[20] = {0};
            uart8250_receive(&u, in, sizeof(in));
            if (uart8250_state_check(&u.s, &err) < 0)
                abort();
            uart8250_state_save(&u, &b); /* for the leak check only */
            rec_buf_free(&b);
            return rc;
        }
        break;
    }
    default: {
        static struct dev_heartbeat hb;
        static int ready;
        if (!ready) {
            dev_heartbeat_init(&hb);
            ready = 1;
        }
        rc = dev_heartbeat_state_load(&hb, &h, &r, &err);
        if (rc == 0)
            dev_heartbeat_state_save(&hb, &b);
        break;
    }
    }
    if (rc == 0)
        same_payload(&b, p, n);
    else if (err.msg[0] == '\0')
        abort(); /* every failure says why */
    rec_buf_free(&b);
    return rc;
}

static void walk_stream(const uint8_t *p, size_t n)
{
    struct rec_reader all, payload;
    struct rec_header h;
    struct tern_err err;
    rec_reader_init(&all, p, n);
    while (rec_next(&all, &h, &payload, &err) == 1) {
        for (unsigned k = 0; k < 4; k++)
            if (h.type == types[k])
                decode_one(k, h.version, h.flags, payload.p, payload.len);
    }
}

/* Takes bytes from the input, zeros once it runs out. */
struct src {
    const uint8_t *p;
    size_t n;
};

static uint8_t take8(struct src *s)
{
    if (!s->n)
        return 0;
    s->n--;
    return *s->p++;
}

static uint64_t take64(struct src *s)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | take8(s);
    return v;
}

static void take_bytes(struct src *s, void *out, size_t n)
{
    uint8_t *o = out;
    for (size_t i = 0; i < n; i++)
        o[i] = take8(s);
}

/* Builds a record of `kind` (0 vCPU, 1 platform) from the input, damages
 * it as the input says and decodes it. */
static void structured(unsigned kind, struct src *s)
{
    uint8_t how = take8(s);
    uint32_t where = (uint32_t)take64(s);
    uint8_t value = take8(s);
    struct rec_buf b;
    rec_buf_init(&b);
    if (kind == 0) {
        struct vcpu_state v;
        memset(&v, 0, sizeof(v));
        v.index = take8(s);
        take_bytes(s, &v.regs, sizeof(v.regs));
        take_bytes(s, &v.sregs, sizeof(v.sregs));
        v.xsave_size = VCPU_STATE_MIN_XSAVE + take8(s) * 64u;
        v.xsave = calloc(1, v.xsave_size);
        if (!v.xsave)
            abort();
        take_bytes(s, v.xsave, 64);
        v.xcrs.nr_xcrs = take8(s) % (KVM_MAX_XCRS + 1);
        for (uint32_t i = 0; i < v.xcrs.nr_xcrs; i++)
            v.xcrs.xcrs[i] = (struct kvm_xcr){.xcr = take8(s), .value = take64(s)};
        v.nr_msrs = take8(s);
        v.msrs = calloc(v.nr_msrs ? v.nr_msrs : 1, sizeof(*v.msrs));
        if (!v.msrs)
            abort();
        uint32_t idx = 0;
        for (uint32_t i = 0; i < v.nr_msrs; i++) {
            idx += 1 + take8(s);
            v.msrs[i] = (struct kvm_msr_entry){.index = idx, .data = take64(s)};
        }
        take_bytes(s, v.lapic.regs, 64);
        take_bytes(s, &v.events, sizeof(v.events));
        v.mp_state.mp_state = take8(s) % 12;
        take_bytes(s, &v.debugregs, sizeof(v.debugregs));
        /* Mostly valid values, so that the damage below is what fails. */
        struct kvm_segment *segs[8] = {&v.sregs.cs, &v.sregs.ds, &v.sregs.es, &v.sregs.fs,
                                       &v.sregs.gs, &v.sregs.ss, &v.sregs.tr, &v.sregs.ldt};
        for (int i = 0; i < 8; i++) {
            struct kvm_segment *g = segs[i];
            g->type &= 15, g->dpl &= 3, g->present &= 1, g->db &= 1, g->s &= 1, g->l &= 1;
            g->g &= 1, g->avl &= 1, g->unusable &= 1;
        }
        v.sregs.flags &= KVM_SREGS2_FLAGS_PDPTRS_VALID;
        if (!v.sregs.flags)
            memset(v.sregs.pdptrs, 0, sizeof(v.sregs.pdptrs));
        struct kvm_vcpu_events *e = &v.events;
        e->flags &= 0x3f, e->exception.nr &= 31, e->interrupt.shadow &= 3;
        e->exception.injected &= 1, e->exception.has_error_code &= 1, e->exception.pending &= 1;
        e->interrupt.injected &= 1, e->interrupt.soft &= 1, e->nmi.injected &= 1;
        e->nmi.pending &= 1, e->nmi.masked &= 1, e->smi.smm &= 1, e->smi.pending &= 1;
        e->smi.smm_inside_nmi &= 1, e->smi.latched_init &= 1, e->triple_fault.pending &= 1;
        e->exception_has_payload &= 1;
        v.debugregs.flags = 0;
        vcpu_state_encode(&v, &b);
        vcpu_state_free(&v);
    } else {
        struct platform_state p;
        take_bytes(s, &p, sizeof(p));
        for (int c = 0; c < 2; c++) {
            struct kvm_pic_state *q = &p.pic[c];
            q->priority_add &= 7, q->init_state &= 3, q->read_reg_select &= 1, q->poll &= 1;
            q->special_mask &= 1, q->auto_eoi &= 1, q->rotate_on_auto_eoi &= 1;
            q->special_fully_nested_mode &= 1, q->init4 &= 1;
        }
        for (int i = 0; i < 3; i++)
            p.pit.channels[i].count &= 0xffff;
        p.pit.flags &= 3;
        p.clock.flags &= 0xe;
        platform_state_encode(&p, &b);
    }
    if (b.failed || b.len < REC_HEADER_SIZE) {
        rec_buf_free(&b);
        return;
    }
    uint8_t *payload = b.data + REC_HEADER_SIZE;
    size_t n = b.len - REC_HEADER_SIZE;
    if (n && (how & 1))
        payload[where % n] = value;
    if (how & 2)
        n = where % (n + 1);
    decode_one(kind, 1, 0, payload, n);
    rec_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (mode % 7) {
    case 0: case 1: case 2: case 3:
        /* Mostly version 1 and no flags; sometimes what the input says. */
        if (mode >= 0x80 && n >= 4) {
            decode_one(mode % 7, (uint16_t)(p[0] | p[1] << 8), (uint16_t)(p[2] | p[3] << 8),
                       p + 4, n - 4);
        } else {
            decode_one(mode % 7, 1, 0, p, n);
        }
        break;
    case 4:
        walk_stream(p, n);
        break;
    default: {
        struct src s = {p, n};
        structured(mode % 7 - 5, &s);
        break;
    }
    }
    return 0;
}
