/* Unit tests for the CPUID filter (node-vmm/cpuid.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "node-vmm/cpuid.h"
#include "node-vmm/guest_abi.h"
#include "tests/support/kvm.h"

#define IDX KVM_CPUID_FLAG_SIGNIFCANT_INDEX
#define BIT(n) (1u << (n))
#define N(a) ((unsigned)(sizeof(a) / sizeof((a)[0])))

/* KVM_GET_SUPPORTED_CPUID as this machine's KVM (kvm_pvm on a Sapphire
 * Rapids Xeon) reported it, trimmed of the all-zero leaves that test no
 * rule. Columns: function, index, flags, eax, ebx, ecx, edx. */
static const struct kvm_cpuid_entry2 live[] = {
    {0x00000000, 0x0, 0x0, 0x00000020, 0x756e6547, 0x6c65746e, 0x49656e69, {0}},
    {0x00000001, 0x0, 0x0, 0x000806f8, 0x01020800, 0x81202000, 0x0f8bfbff, {0}},
    {0x00000002, 0x0, 0x0, 0x00feff01, 0x000000f0, 0x00000000, 0x00000000, {0}},
    {0x00000004, 0x0, IDX, 0x04000121, 0x02c0003f, 0x0000003f, 0x00000000, {0}},
    {0x00000004, 0x1, IDX, 0x04000122, 0x01c0003f, 0x0000003f, 0x00000000, {0}},
    {0x00000004, 0x2, IDX, 0x04000143, 0x03c0003f, 0x000007ff, 0x00000000, {0}},
    {0x00000004, 0x3, IDX, 0x04004163, 0x0380003f, 0x0001bfff, 0x00000004, {0}},
    {0x00000004, 0x4, IDX, 0x00000000, 0x00000000, 0x00000000, 0x00000000, {0}},
    {0x00000005, 0x0, 0x0, 0x00000000, 0x00000000, 0x00000000, 0x00000000, {0}},
    {0x00000006, 0x0, 0x0, 0x00000004, 0x00000000, 0x00000000, 0x00000000, {0}},
    {0x00000007, 0x0, IDX, 0x00000002, 0x01802042, 0x1a010104, 0xbc010400, {0}},
    {0x00000007, 0x1, IDX, 0x00001c00, 0x00000000, 0x00000000, 0x00000000, {0}},
    {0x00000007, 0x2, IDX, 0x00000000, 0x00000000, 0x00000000, 0x00000017, {0}},
    {0x0000000a, 0x0, 0x0, 0x00000000, 0x00000000, 0x00000000, 0x00000000, {0}},
    {0x0000000b, 0x0, IDX, 0x00000000, 0x00000000, 0x00000000, 0x00000001, {0}},
    {0x0000000d, 0x0, IDX, 0x000002e7, 0x00000a88, 0x00000a88, 0x00000000, {0}},
    {0x0000000d, 0x1, IDX, 0x00000000, 0x00000000, 0x00000000, 0x00000000, {0}},
    {0x0000000d, 0x2, IDX, 0x00000100, 0x00000240, 0x00000000, 0x00000000, {0}},
    {0x0000000d, 0x5, IDX, 0x00000040, 0x00000440, 0x00000000, 0x00000000, {0}},
    {0x0000000d, 0x6, IDX, 0x00000200, 0x00000480, 0x00000000, 0x00000000, {0}},
    {0x0000000d, 0x7, IDX, 0x00000400, 0x00000680, 0x00000000, 0x00000000, {0}},
    {0x0000000d, 0x9, IDX, 0x00000008, 0x00000a80, 0x00000000, 0x00000000, {0}},
    {0x00000012, 0x0, IDX, 0x00000000, 0x00000000, 0x00000000, 0x00000000, {0}},
    {0x00000014, 0x0, IDX, 0x00000000, 0x00000000, 0x00000000, 0x00000000, {0}},
    {0x0000001b, 0x0, 0x0, 0x00000000, 0x00000000, 0x00000000, 0x00000000, {0}},
    {0x0000001d, 0x0, IDX, 0x00000000, 0x00000000, 0x00000000, 0x00000000, {0}},
    {0x0000001f, 0x0, IDX, 0x00000000, 0x00000000, 0x00000000, 0x00000001, {0}},
    {0x80000000, 0x0, 0x0, 0x80000008, 0x00000000, 0x00000000, 0x00000000, {0}},
    {0x80000001, 0x0, 0x0, 0x00000000, 0x00000000, 0x00000101, 0x20100800, {0}},
    {0x80000006, 0x0, 0x0, 0x00000000, 0x00000000, 0x08007040, 0x00000000, {0}},
    {0x80000007, 0x0, 0x0, 0x00000000, 0x00000000, 0x00000000, 0x00000100, {0}},
    {0x80000008, 0x0, 0x0, 0x0000392e, 0x0100d200, 0x00000000, 0x00000000, {0}},
    {0x40000000, 0x0, 0x0, 0x40000001, 0x4b4d564b, 0x564b4d56, 0x0000004d, {0}},
    {0x40000001, 0x0, 0x0, 0x01007efb, 0x00000000, 0x00000000, 0x00000000, {0}},
};

#define MAX_ENTRIES 128

/* An input table the test can edit. */
struct table {
    struct kvm_cpuid_entry2 e[MAX_ENTRIES];
    unsigned n;
};

static void table_from(struct table *t, const struct kvm_cpuid_entry2 *src, unsigned n)
{
    assert_true(n <= MAX_ENTRIES);
    memset(t, 0, sizeof(*t));
    memcpy(t->e, src, n * sizeof(*src));
    t->n = n;
}

static struct kvm_cpuid_entry2 *table_get(struct table *t, uint32_t fn, uint32_t idx)
{
    struct kvm_cpuid_entry2 *e = (struct kvm_cpuid_entry2 *)cpuid_find(t->e, t->n, fn, idx);
    assert_non_null(e);
    return e;
}

static struct kvm_cpuid_entry2 *table_add(struct table *t, uint32_t fn, uint32_t idx,
                                          uint32_t flags)
{
    assert_true(t->n < MAX_ENTRIES);
    struct kvm_cpuid_entry2 *e = &t->e[t->n++];
    memset(e, 0, sizeof(*e));
    e->function = fn;
    e->index = idx;
    e->flags = flags;
    return e;
}

static void table_remove(struct table *t, uint32_t fn)
{
    unsigned k = 0;
    for (unsigned i = 0; i < t->n; i++)
        if (t->e[i].function != fn)
            t->e[k++] = t->e[i];
    t->n = k;
}

static const struct cpuid_config cfg_1 = {.vcpu_index = 0, .nr_vcpus = 1, .tsc_khz = 2100000,
                                          .tsc_deadline = 1};

/* Filters `in` into `out`, expecting success. */
static void filter_ok(const struct table *in, struct table *out, const struct cpuid_config *cfg)
{
    struct tern_err err = {0};
    memset(out, 0, sizeof(*out));
    int rc = cpuid_filter(in->e, in->n, out->e, MAX_ENTRIES, &out->n, cfg, &err);
    if (rc != 0)
        fail_msg("cpuid_filter: %s", err.msg);
}

static const struct kvm_cpuid_entry2 *find(const struct table *t, uint32_t fn, uint32_t idx)
{
    return cpuid_find(t->e, t->n, fn, idx);
}

static void test_vendor_family_model_kept(void **state)
{
    (void)state;
    struct table in, out;
    table_from(&in, live, N(live));
    filter_ok(&in, &out, &cfg_1);
    assert_memory_equal(find(&out, 0, 0), find(&in, 0, 0), sizeof(struct kvm_cpuid_entry2));
    assert_int_equal(find(&out, 1, 0)->eax, 0x000806f8);
    assert_memory_equal(find(&out, 0x80000000, 0), find(&in, 0x80000000, 0),
                        sizeof(struct kvm_cpuid_entry2));
    assert_memory_equal(find(&out, 0x80000008, 0), find(&in, 0x80000008, 0),
                        sizeof(struct kvm_cpuid_entry2));
    assert_memory_equal(find(&out, 0xd, 0), find(&in, 0xd, 0), sizeof(struct kvm_cpuid_entry2));
}

static void test_leaf1_denied_bits_cleared(void **state)
{
    (void)state;
    struct table in, out;
    table_from(&in, live, N(live));
    struct kvm_cpuid_entry2 *l1 = table_get(&in, 1, 0);
    l1->ecx = 0xffffffff;
    l1->edx = 0xffffffff;
    filter_ok(&in, &out, &cfg_1);
    const struct kvm_cpuid_entry2 *o = find(&out, 1, 0);
    static const struct { const char *name; unsigned bit; } ecx[] = {
        {"DTES64", 2}, {"MONITOR", 3}, {"DS-CPL", 4}, {"VMX", 5}, {"SMX", 6},
        {"EST", 7}, {"TM2", 8}, {"PDCM", 15},
    };
    for (unsigned i = 0; i < N(ecx); i++)
        if (o->ecx & BIT(ecx[i].bit))
            fail_msg("leaf 1 ECX %s still set", ecx[i].name);
    static const struct { const char *name; unsigned bit; } edx[] = {
        {"DS", 21}, {"ACPI", 22}, {"TM", 29}, {"PBE", 31}, {"HTT with one vCPU", 28},
    };
    for (unsigned i = 0; i < N(edx); i++)
        if (o->edx & BIT(edx[i].bit))
            fail_msg("leaf 1 EDX %s still set", edx[i].name);
    /* Everything else passes: x2APIC, SSE3, FPU, TSC, APIC... */
    assert_int_equal(o->ecx, 0xffffffffu & ~0x81fcu);
    assert_int_equal(o->edx, 0xffffffffu & ~(BIT(21) | BIT(22) | BIT(28) | BIT(29) | BIT(31)));
}

static void test_leaf1_hypervisor_and_tsc_deadline(void **state)
{
    (void)state;
    struct table in, out;
    table_from(&in, live, N(live));
    struct kvm_cpuid_entry2 *l1 = table_get(&in, 1, 0);
    l1->ecx &= ~(BIT(31) | BIT(24));
    struct cpuid_config cfg = cfg_1;
    filter_ok(&in, &out, &cfg);
    assert_true(find(&out, 1, 0)->ecx & BIT(31));
    assert_true(find(&out, 1, 0)->ecx & BIT(24)); /* granted by the VMM */

    l1->ecx |= BIT(24);
    cfg.tsc_deadline = 0;
    filter_ok(&in, &out, &cfg);
    assert_true(find(&out, 1, 0)->ecx & BIT(31));
    assert_false(find(&out, 1, 0)->ecx & BIT(24)); /* KVM has it, we don't */
}

static void test_leaf1_cx16_hidden_when_kernel_mode_emulated(void **state)
{
    (void)state;
    struct table in, out;
    table_from(&in, live, N(live));
    table_get(&in, 1, 0)->ecx |= BIT(13);
    struct cpuid_config cfg = cfg_1;
    filter_ok(&in, &out, &cfg);
    assert_true(find(&out, 1, 0)->ecx & BIT(13)); /* kept on ordinary hosts */
    cfg.kernel_mode_emulated = 1;
    filter_ok(&in, &out, &cfg);
    assert_false(find(&out, 1, 0)->ecx & BIT(13));
    assert_true(find(&out, 1, 0)->ecx & BIT(31)); /* nothing else changes */
}

static void test_leaf1_apic_id_and_count(void **state)
{
    (void)state;
    struct table in, out;
    table_from(&in, live, N(live));
    table_get(&in, 1, 0)->edx &= ~BIT(28);
    struct cpuid_config cfg = {.vcpu_index = 5, .nr_vcpus = 6, .tsc_khz = 1};
    filter_ok(&in, &out, &cfg);
    const struct kvm_cpuid_entry2 *o = find(&out, 1, 0);
    assert_int_equal(o->ebx >> 24, 5);
    assert_int_equal((o->ebx >> 16) & 0xff, 6);
    assert_int_equal(o->ebx & 0xffff, 0x0800); /* CLFLUSH size, brand index */
    assert_true(o->edx & BIT(28));

    cfg = (struct cpuid_config){.vcpu_index = 254, .nr_vcpus = 255};
    filter_ok(&in, &out, &cfg);
    assert_int_equal(find(&out, 1, 0)->ebx >> 16, 0xfeff);

    /* The host's own APIC id and count do not leak through. */
    table_get(&in, 1, 0)->ebx = 0xffffffff;
    cfg = (struct cpuid_config){.vcpu_index = 2, .nr_vcpus = 3};
    filter_ok(&in, &out, &cfg);
    assert_int_equal(find(&out, 1, 0)->ebx, 0x0203ffff);
}

static void test_leaf4_cache_topology(void **state)
{
    (void)state;
    struct table in, out;
    table_from(&in, live, N(live));
    struct cpuid_config cfg = {.vcpu_index = 0, .nr_vcpus = 4};
    filter_ok(&in, &out, &cfg);
    for (uint32_t sub = 0; sub < 4; sub++) {
        uint32_t eax = find(&out, 4, sub)->eax;
        uint32_t level = (eax >> 5) & 7;
        assert_int_equal(eax >> 26, 3); /* 4 cores */
        assert_int_equal((eax >> 14) & 0xfff, level >= 3 ? 3 : 0);
        assert_int_equal(eax & 0x3fff, find(&in, 4, sub)->eax & 0x3fff);
        /* EBX-EDX (geometry) untouched. */
        assert_int_equal(find(&out, 4, sub)->ebx, find(&in, 4, sub)->ebx);
        assert_int_equal(find(&out, 4, sub)->edx, find(&in, 4, sub)->edx);
    }
    assert_int_equal(find(&out, 4, 4)->eax, 0); /* terminator stays empty */

    cfg.nr_vcpus = 1;
    filter_ok(&in, &out, &cfg);
    for (uint32_t sub = 0; sub < 4; sub++)
        assert_int_equal(find(&out, 4, sub)->eax >> 14, 0);

    cfg.nr_vcpus = 100; /* more cores than the 6-bit field holds */
    filter_ok(&in, &out, &cfg);
    assert_int_equal(find(&out, 4, 0)->eax >> 26, 63);
    assert_int_equal((find(&out, 4, 3)->eax >> 14) & 0xfff, 99);
}

static void test_leaf6_leafa_80000007(void **state)
{
    (void)state;
    struct table in, out;
    table_from(&in, live, N(live));
    *table_get(&in, 6, 0) = (struct kvm_cpuid_entry2){
        .function = 6, .eax = 0xffffffff, .ebx = 1, .ecx = 9, .edx = 7};
    *table_get(&in, 0xa, 0) = (struct kvm_cpuid_entry2){
        .function = 0xa, .eax = 0x07300805, .ebx = 0xff, .ecx = 0, .edx = 0x603};
    *table_get(&in, 0x80000007, 0) = (struct kvm_cpuid_entry2){
        .function = 0x80000007, .eax = 1, .ebx = 2, .ecx = 3, .edx = 0xffffffff};
    filter_ok(&in, &out, &cfg_1);
    const struct kvm_cpuid_entry2 *l6 = find(&out, 6, 0);
    assert_int_equal(l6->eax, BIT(2)); /* ARAT only */
    assert_int_equal(l6->ebx | l6->ecx | l6->edx, 0);
    const struct kvm_cpuid_entry2 *la = find(&out, 0xa, 0);
    assert_int_equal(la->eax | la->ebx | la->ecx | la->edx, 0);
    const struct kvm_cpuid_entry2 *l87 = find(&out, 0x80000007, 0);
    assert_int_equal(l87->edx, BIT(8));
    assert_int_equal(l87->eax | l87->ebx | l87->ecx, 0);

    /* ARAT is kept, not granted. */
    table_get(&in, 6, 0)->eax = 0;
    filter_ok(&in, &out, &cfg_1);
    assert_int_equal(find(&out, 6, 0)->eax, 0);
}

/* Leaf 0xB and 0x1F for several sizes: SMT level of one, core level of
 * nr_vcpus, shifts that cover the APIC ids, an invalid level to end. */
static void check_topology_leaf(const struct table *out, uint32_t fn,
                                const struct cpuid_config *cfg)
{
    const struct kvm_cpuid_entry2 *smt = cpuid_find(out->e, out->n, fn, 0);
    const struct kvm_cpuid_entry2 *core = cpuid_find(out->e, out->n, fn, 1);
    const struct kvm_cpuid_entry2 *end = cpuid_find(out->e, out->n, fn, 2);
    assert_non_null(smt);
    assert_non_null(core);
    assert_non_null(end);
    assert_null(cpuid_find(out->e, out->n, fn, 3));
    assert_int_equal(smt->eax, 0);
    assert_int_equal(smt->ebx, 1);
    assert_int_equal(smt->ecx, 0x100);
    assert_int_equal(core->ebx, cfg->nr_vcpus);
    assert_int_equal(core->ecx, 0x201);
    /* The core shift must cover every APIC id, and no more than needed. */
    uint32_t shift = core->eax & 0x1f;
    assert_true((1u << shift) >= cfg->nr_vcpus);
    assert_true(shift == 0 || (1u << (shift - 1)) < cfg->nr_vcpus);
    assert_int_equal(core->eax, shift);
    assert_int_equal(end->eax | end->ebx, 0);
    assert_int_equal(end->ecx, 2); /* level type 0 = invalid, number 2 */
    for (uint32_t sub = 0; sub < 3; sub++) {
        const struct kvm_cpuid_entry2 *e = cpuid_find(out->e, out->n, fn, sub);
        assert_int_equal(e->edx, cfg->vcpu_index);
        assert_true(e->flags & IDX);
    }
    /* The package id (APIC id >> shift) is 0 for everyone. */
    assert_int_equal(cfg->vcpu_index >> shift, 0);
}

static void test_x2apic_topology(void **state)
{
    (void)state;
    struct table in, out;
    table_from(&in, live, N(live));
    static const unsigned sizes[] = {1, 2, 3, 4, 5, 8, 9, 64, 128, 200, 255};
    for (unsigned i = 0; i < N(sizes); i++) {
        for (unsigned idx = 0; idx < sizes[i]; idx += (sizes[i] + 2) / 3) {
            struct cpuid_config cfg = {.vcpu_index = idx, .nr_vcpus = sizes[i]};
            filter_ok(&in, &out, &cfg);
            check_topology_leaf(&out, 0xb, &cfg);
            check_topology_leaf(&out, 0x1f, &cfg);
        }
    }
}

static void test_topology_leaf_presence(void **state)
{
    (void)state;
    struct table in, out;
    struct cpuid_config cfg = {.vcpu_index = 1, .nr_vcpus = 2};
    /* No 0x1F on the host: none for the guest. No 0xB in KVM's table but
     * a max leaf above it: 0xB is added. */
    table_from(&in, live, N(live));
    table_remove(&in, 0x1f);
    table_remove(&in, 0xb);
    filter_ok(&in, &out, &cfg);
    assert_null(find(&out, 0x1f, 0));
    check_topology_leaf(&out, 0xb, &cfg);
    /* A CPU whose max basic leaf is below 0xB gets none. */
    table_get(&in, 0, 0)->eax = 0xa;
    filter_ok(&in, &out, &cfg);
    assert_null(find(&out, 0xb, 0));
    /* KVM's extra subleaves are replaced, not kept beside ours. */
    table_from(&in, live, N(live));
    for (uint32_t sub = 1; sub < 5; sub++)
        table_add(&in, 0xb, sub, IDX)->edx = 0xdead;
    filter_ok(&in, &out, &cfg);
    check_topology_leaf(&out, 0xb, &cfg);
}

static void test_hypervisor_leaves(void **state)
{
    (void)state;
    struct table in, out;
    table_from(&in, live, N(live));
    struct cpuid_config cfg = {.vcpu_index = 0, .nr_vcpus = 1, .tsc_khz = 2112000};
    filter_ok(&in, &out, &cfg);
    const struct kvm_cpuid_entry2 *base = find(&out, TERN_CPUID_HV_BASE, 0);
    assert_non_null(base);
    assert_int_equal(base->eax, TERN_CPUID_TIMING);
    char sig[12];
    memcpy(sig, &base->ebx, 4);
    memcpy(sig + 4, &base->ecx, 4);
    memcpy(sig + 8, &base->edx, 4);
    assert_memory_equal(sig, "KVMKVMKVM\0\0\0", 12);
    assert_memory_equal(find(&out, 0x40000001, 0), find(&in, 0x40000001, 0),
                        sizeof(struct kvm_cpuid_entry2));
    const struct kvm_cpuid_entry2 *t = find(&out, TERN_CPUID_TIMING, 0);
    assert_non_null(t);
    assert_int_equal(t->eax, 2112000);
    assert_int_equal(t->ebx, TERN_APIC_BUS_KHZ);
    assert_int_equal(t->ecx | t->edx, 0);

    /* A stale timing leaf and other hypervisor leaves in the input are not
     * passed on; without KVM's base leaf, ours still carries the signature. */
    table_remove(&in, TERN_CPUID_HV_BASE);
    table_add(&in, TERN_CPUID_TIMING, 0, 0)->eax = 1;
    table_add(&in, 0x40000005, 0, 0)->eax = 1;
    table_add(&in, 0x40000100, 0, 0)->eax = 1;
    filter_ok(&in, &out, &cfg);
    assert_int_equal(find(&out, TERN_CPUID_TIMING, 0)->eax, 2112000);
    assert_null(find(&out, 0x40000005, 0));
    assert_null(find(&out, 0x40000100, 0));
    base = find(&out, TERN_CPUID_HV_BASE, 0);
    assert_int_equal(base->ebx, 0x4b4d564b);
    assert_int_equal(base->ecx, 0x564b4d56);
    assert_int_equal(base->edx, 0x4d);
    unsigned timing_leaves = 0;
    for (unsigned i = 0; i < out.n; i++)
        timing_leaves += out.e[i].function == TERN_CPUID_TIMING;
    assert_int_equal(timing_leaves, 1);
}

static void test_dropped_leaves_and_their_bits(void **state)
{
    (void)state;
    struct table in, out;
    table_from(&in, live, N(live));
    struct kvm_cpuid_entry2 *l7 = table_get(&in, 7, 0);
    l7->ebx = 0xffffffff;
    l7->ecx = 0xffffffff;
    l7->edx = 0xffffffff;
    table_get(&in, 7, 1)->eax = 0xffffffff;
    table_get(&in, 0x80000001, 0)->ecx = 0xffffffff;
    table_get(&in, 0x12, 0)->eax = 0x3;
    table_get(&in, 0x14, 0)->eax = 0x1;
    table_add(&in, 0x12, 1, IDX)->eax = 0x1;
    table_add(&in, 0x0f, 0, IDX)->edx = 0x2;
    table_add(&in, 0x10, 0, IDX)->ebx = 0x2;
    table_add(&in, 0x19, 0, 0)->eax = 0x1;
    table_add(&in, 0x1a, 0, 0)->eax = 0x40000000;
    table_add(&in, 0x1c, 0, 0)->eax = 0x4;
    table_add(&in, 0x20, 0, IDX)->eax = 0x1;
    table_add(&in, 0x23, 0, IDX)->eax = 0x1;
    table_add(&in, 0x8000000a, 0, 0)->eax = 0x1;
    filter_ok(&in, &out, &cfg_1);
    static const uint32_t gone[] = {0x05, 0x0f, 0x10, 0x12, 0x14, 0x19, 0x1a,
                                    0x1b, 0x1c, 0x20, 0x23, 0x8000000a};
    for (unsigned i = 0; i < N(gone); i++)
        for (unsigned j = 0; j < out.n; j++)
            if (out.e[j].function == gone[i])
                fail_msg("leaf 0x%x should be dropped", gone[i]);
    const struct kvm_cpuid_entry2 *o7 = find(&out, 7, 0);
    assert_int_equal(o7->ebx, ~(BIT(2) | BIT(12) | BIT(15) | BIT(25)));
    assert_int_equal(o7->ecx, ~(BIT(23) | BIT(30)));
    assert_int_equal(o7->edx, ~(BIT(15) | BIT(18) | BIT(19)));
    assert_int_equal(find(&out, 7, 1)->eax, ~(BIT(8) | BIT(22)));
    assert_int_equal(find(&out, 0x80000001, 0)->ecx, ~BIT(2));
    /* Kept leaves are really kept. */
    assert_non_null(find(&out, 0x1d, 0));
    assert_non_null(find(&out, 0x02, 0));
    assert_int_equal(find(&out, 7, 2)->edx, 0x17);
}

/* The output needs exactly as many entries as it gets; one fewer fails
 * cleanly at every size below that. */
static void test_error_output_too_small(void **state)
{
    (void)state;
    struct table in, out;
    table_from(&in, live, N(live));
    struct cpuid_config cfg = {.vcpu_index = 0, .nr_vcpus = 2};
    filter_ok(&in, &out, &cfg);
    unsigned needed = out.n;
    for (unsigned max = 0; max < needed; max++) {
        struct tern_err err = {0};
        struct kvm_cpuid_entry2 small[MAX_ENTRIES];
        unsigned n = 12345;
        assert_int_equal(cpuid_filter(in.e, in.n, small, max, &n, &cfg, &err), -1);
        assert_int_equal(n, 12345);
        assert_non_null(strstr(err.msg, "room"));
    }
    struct kvm_cpuid_entry2 exact[MAX_ENTRIES];
    unsigned n = 0;
    assert_int_equal(cpuid_filter(in.e, in.n, exact, needed, &n, &cfg, NULL), 0);
    assert_int_equal(n, needed);
}

/* The worst case for growth: nothing to drop, one subleaf of 0xB and of
 * 0x1F, no hypervisor base leaf. */
static void test_filter_extra_is_enough(void **state)
{
    (void)state;
    struct table in, out;
    memset(&in, 0, sizeof(in));
    table_add(&in, 0, 0, 0)->eax = 0x1f;
    table_add(&in, 1, 0, 0);
    table_add(&in, 0xb, 0, IDX);
    table_add(&in, 0x1f, 0, IDX);
    filter_ok(&in, &out, &cfg_1);
    assert_true(out.n <= in.n + CPUID_FILTER_EXTRA);
    struct kvm_cpuid_entry2 buf[4 + CPUID_FILTER_EXTRA];
    unsigned n;
    assert_int_equal(cpuid_filter(in.e, in.n, buf, in.n + CPUID_FILTER_EXTRA, &n, &cfg_1,
                                  NULL), 0);
}

static void test_error_missing_leaves(void **state)
{
    (void)state;
    struct table in;
    struct kvm_cpuid_entry2 out[MAX_ENTRIES];
    unsigned n = 7;
    struct tern_err err = {0};

    assert_int_equal(cpuid_filter(NULL, 0, out, MAX_ENTRIES, &n, &cfg_1, &err), -1);
    assert_non_null(strstr(err.msg, "leaf 0"));

    table_from(&in, live, N(live));
    table_remove(&in, 0);
    assert_int_equal(cpuid_filter(in.e, in.n, out, MAX_ENTRIES, &n, &cfg_1, &err), -1);
    assert_non_null(strstr(err.msg, "leaf 0"));

    table_from(&in, live, N(live));
    table_remove(&in, 1);
    assert_int_equal(cpuid_filter(in.e, in.n, out, MAX_ENTRIES, &n, &cfg_1, &err), -1);
    assert_non_null(strstr(err.msg, "leaf 1"));
    assert_int_equal(n, 7);
}

static void test_error_bad_config(void **state)
{
    (void)state;
    struct table in;
    table_from(&in, live, N(live));
    struct kvm_cpuid_entry2 out[MAX_ENTRIES];
    static const struct { unsigned idx, nr; const char *msg; } bad[] = {
        {0, 0, "must be 1 to 255"},
        {0, 256, "must be 1 to 255"},
        {0, 100000, "must be 1 to 255"},
        {1, 1, "out of range"},
        {4, 4, "out of range"},
        {9, 4, "out of range"},
    };
    for (unsigned i = 0; i < N(bad); i++) {
        struct cpuid_config cfg = {.vcpu_index = bad[i].idx, .nr_vcpus = bad[i].nr};
        struct tern_err err = {0};
        unsigned n = 7;
        assert_int_equal(cpuid_filter(in.e, in.n, out, MAX_ENTRIES, &n, &cfg, &err), -1);
        assert_non_null(strstr(err.msg, bad[i].msg));
        assert_int_equal(n, 7);
    }
    struct cpuid_config edge = {.vcpu_index = 254, .nr_vcpus = 255};
    unsigned n;
    assert_int_equal(cpuid_filter(in.e, in.n, out, MAX_ENTRIES, &n, &edge, NULL), 0);
}

static void test_find(void **state)
{
    (void)state;
    assert_non_null(cpuid_find(live, N(live), 4, 3));
    assert_int_equal(cpuid_find(live, N(live), 4, 3)->index, 3);
    assert_null(cpuid_find(live, N(live), 4, 5));
    assert_int_equal(cpuid_find(live, N(live), 0xd, 9)->eax, 8);
    assert_null(cpuid_find(live, N(live), 0xd, 3));
    /* Not indexed: any ECX finds the one entry. */
    assert_int_equal(cpuid_find(live, N(live), 0x80000008, 77)->eax, 0x392e);
    assert_int_equal(cpuid_find(live, N(live), 2, 1)->eax, 0x00feff01);
    assert_null(cpuid_find(live, N(live), 0x80000005, 0));
    assert_null(cpuid_find(NULL, 0, 0, 0));
    /* The flag makes an unknown leaf indexed. */
    struct kvm_cpuid_entry2 e[2] = {
        {.function = 0x33, .index = 0, .flags = IDX, .eax = 1},
        {.function = 0x33, .index = 1, .flags = IDX, .eax = 2},
    };
    assert_int_equal(cpuid_find(e, 2, 0x33, 1)->eax, 2);
    assert_null(cpuid_find(e, 2, 0x33, 2));
    /* A known indexed leaf is indexed even when KVM forgot the flag. */
    struct kvm_cpuid_entry2 f[2] = {
        {.function = 0x7, .index = 0, .eax = 1},
        {.function = 0x7, .index = 1, .eax = 2},
    };
    assert_int_equal(cpuid_find(f, 2, 7, 1)->eax, 2);
    static const uint32_t indexed[] = {4, 7, 0xb, 0xd, 0xf, 0x10, 0x12, 0x14, 0x17, 0x18,
                                       0x1d, 0x1e, 0x1f, 0x20, 0x23, 0x24, 0x8000001d};
    for (unsigned i = 0; i < N(indexed); i++)
        assert_true(cpuid_leaf_is_indexed(indexed[i]));
    assert_false(cpuid_leaf_is_indexed(1));
    assert_false(cpuid_leaf_is_indexed(0x40000000));
}

/* --- Property test: random KVM tables of the live shape. ----------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* A register value biased towards many set bits, so a filter that forgets
 * to clear something gets caught. */
static uint32_t rnd_reg(void)
{
    switch (rnd() % 4) {
    case 0:
        return 0xffffffff;
    case 1:
        return 0;
    default:
        return rnd() | rnd();
    }
}

/* Bits of (function, register) that the filter may set although the input
 * lacks them: the ones the policy names. */
static uint32_t allowed_new_bits(uint32_t fn, int reg, const struct cpuid_config *cfg)
{
    enum { EAX, EBX, ECX, EDX };
    if (fn == 1 && reg == EBX)
        return 0xffff0000; /* APIC id, logical count */
    if (fn == 1 && reg == ECX)
        return BIT(31) | (cfg->tsc_deadline ? BIT(24) : 0);
    if (fn == 1 && reg == EDX)
        return cfg->nr_vcpus > 1 ? BIT(28) : 0;
    if (fn == 4 && reg == EAX)
        return 0xffffc000; /* cores, sharing */
    if (fn == TERN_CPUID_HV_BASE && reg == EAX)
        return 0xffffffff;
    return 0;
}

static int dropped(uint32_t fn)
{
    static const uint32_t gone[] = {0x05, 0x0f, 0x10, 0x12, 0x14, 0x19, 0x1a,
                                    0x1b, 0x1c, 0x20, 0x23, 0x8000000a};
    for (unsigned i = 0; i < N(gone); i++)
        if (fn == gone[i])
            return 1;
    return fn >= 0x40000002 && fn <= 0x4fffffff && fn != TERN_CPUID_TIMING;
}

static void check_property(const struct table *in, const struct table *out,
                           const struct cpuid_config *cfg)
{
    for (unsigned i = 0; i < out->n; i++) {
        const struct kvm_cpuid_entry2 *o = &out->e[i];
        if (dropped(o->function))
            fail_msg("dropped leaf 0x%x in output", o->function);
        /* No (function, index) twice. */
        for (unsigned j = i + 1; j < out->n; j++)
            if (out->e[j].function == o->function && out->e[j].index == o->index)
                fail_msg("leaf 0x%x.%u twice", o->function, o->index);
        if (o->function == 0xb || o->function == 0x1f || o->function == TERN_CPUID_TIMING)
            continue; /* synthesised: checked by value elsewhere */
        const struct kvm_cpuid_entry2 *src = cpuid_find(in->e, in->n, o->function, o->index);
        if (!src && o->function == TERN_CPUID_HV_BASE)
            continue; /* made up with KVM's signature: checked elsewhere */
        if (!src)
            fail_msg("leaf 0x%x.%u not in the input", o->function, o->index);
        const uint32_t ov[4] = {o->eax, o->ebx, o->ecx, o->edx};
        const uint32_t iv[4] = {src->eax, src->ebx, src->ecx, src->edx};
        for (int r = 0; r < 4; r++) {
            uint32_t extra = ov[r] & ~iv[r] & ~allowed_new_bits(o->function, r, cfg);
            if (extra)
                fail_msg("leaf 0x%x.%u reg %d gained bits 0x%08x (in 0x%08x out 0x%08x)",
                         o->function, o->index, r, extra, iv[r], ov[r]);
        }
        if (o->function == 1 && !cfg->tsc_deadline)
            assert_false(o->ecx & BIT(24));
        if (o->function == 1)
            assert_false(o->ecx & (BIT(3) | BIT(5)));
        if (o->function == 6)
            assert_int_equal(o->eax & ~BIT(2), 0);
        if (o->function == 0xa)
            assert_int_equal(o->eax | o->ebx | o->ecx | o->edx, 0);
        if (o->function == 0x80000007)
            assert_int_equal(o->eax | o->ebx | o->ecx | (o->edx & ~BIT(8)), 0);
    }
    const struct kvm_cpuid_entry2 *t = cpuid_find(out->e, out->n, TERN_CPUID_TIMING, 0);
    assert_non_null(t);
    assert_int_equal(t->eax, cfg->tsc_khz);
}

static void test_property_no_new_bits(void **state)
{
    (void)state;
    struct table in, out;
    for (unsigned iter = 0; iter < 2000; iter++) {
        table_from(&in, live, N(live));
        for (unsigned i = 0; i < in.n; i++) {
            in.e[i].eax = rnd_reg();
            in.e[i].ebx = rnd_reg();
            in.e[i].ecx = rnd_reg();
            in.e[i].edx = rnd_reg();
        }
        /* Some dropped leaves and stray hypervisor leaves too. */
        table_add(&in, 0x0f, 0, IDX)->ebx = rnd_reg();
        table_add(&in, 0x8000000a, 0, 0)->edx = rnd_reg();
        table_add(&in, 0x40000003, 0, 0)->eax = rnd_reg();
        /* Drop random entries, but never leaf 0 or 1. */
        for (unsigned k = rnd() % 4; k > 0; k--) {
            unsigned victim = 2 + rnd() % (in.n - 2);
            in.e[victim] = in.e[--in.n];
        }
        struct cpuid_config cfg;
        cfg.nr_vcpus = 1 + rnd() % 255;
        cfg.vcpu_index = rnd() % cfg.nr_vcpus;
        cfg.tsc_khz = rnd();
        cfg.tsc_deadline = rnd() & 1;
        filter_ok(&in, &out, &cfg);
        check_property(&in, &out, &cfg);
    }
}

/* --- Against the real KVM (skipped without /dev/kvm). --------------------- */

static struct kvm_cpuid2 *cpuid2_alloc(unsigned n)
{
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
    assert_non_null(c);
    c->nent = n;
    return c;
}

static void test_live_kvm_accepts_filtered_table(void **state)
{
    (void)state;
    test_require_kvm();
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    assert_true(kvm >= 0);
    struct kvm_cpuid2 *sup = cpuid2_alloc(512);
    assert_int_equal(ioctl(kvm, KVM_GET_SUPPORTED_CPUID, sup), 0);
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    assert_true(vm >= 0);
    assert_int_equal(ioctl(vm, KVM_CREATE_IRQCHIP, 0), 0);
    int deadline = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0;
    enum { NR = 2 };
    for (unsigned idx = 0; idx < NR; idx++) {
        int vcpu = ioctl(vm, KVM_CREATE_VCPU, idx);
        assert_true(vcpu >= 0);
        int khz = ioctl(vcpu, KVM_GET_TSC_KHZ, 0);
        struct cpuid_config cfg = {.vcpu_index = idx, .nr_vcpus = NR,
                                   .tsc_khz = khz > 0 ? (uint32_t)khz : 0,
                                   .tsc_deadline = deadline};
        unsigned max = sup->nent + CPUID_FILTER_EXTRA;
        struct kvm_cpuid2 *c = cpuid2_alloc(max);
        struct tern_err err = {0};
        unsigned n = 0;
        if (cpuid_filter(sup->entries, sup->nent, c->entries, max, &n, &cfg, &err) < 0)
            fail_msg("cpuid_filter on the live table: %s", err.msg);
        c->nent = n;
        if (ioctl(vcpu, KVM_SET_CPUID2, c) < 0)
            fail_msg("KVM_SET_CPUID2 rejected the filtered table: %s", strerror(errno));
        /* Read back the leaves that are ours. Not the whole table: KVM
         * rewrites some leaves at run time (XSAVE sizes, OSXSAVE), and this
         * machine's kvm_pvm answers KVM_GET_CPUID2 with its own view of
         * leaves 1 and 7 and without 0x1D/0x1E. */
        struct kvm_cpuid2 *back = cpuid2_alloc(max);
        assert_int_equal(ioctl(vcpu, KVM_GET_CPUID2, back), 0);
        const struct kvm_cpuid_entry2 *t =
            cpuid_find(back->entries, back->nent, TERN_CPUID_TIMING, 0);
        assert_non_null(t);
        assert_int_equal(t->eax, cfg.tsc_khz);
        const struct kvm_cpuid_entry2 *topo = cpuid_find(back->entries, back->nent, 0xb, 1);
        assert_non_null(topo);
        assert_int_equal(topo->edx, idx);
        struct table in, out;
        table_from(&in, sup->entries, sup->nent);
        table_from(&out, c->entries, n);
        check_property(&in, &out, &cfg);
        free(back);
        free(c);
        close(vcpu);
    }
    close(vm);
    close(kvm);
    free(sup);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vendor_family_model_kept),
        cmocka_unit_test(test_leaf1_denied_bits_cleared),
        cmocka_unit_test(test_leaf1_hypervisor_and_tsc_deadline),
        cmocka_unit_test(test_leaf1_cx16_hidden_when_kernel_mode_emulated),
        cmocka_unit_test(test_leaf1_apic_id_and_count),
        cmocka_unit_test(test_leaf4_cache_topology),
        cmocka_unit_test(test_leaf6_leafa_80000007),
        cmocka_unit_test(test_x2apic_topology),
        cmocka_unit_test(test_topology_leaf_presence),
        cmocka_unit_test(test_hypervisor_leaves),
        cmocka_unit_test(test_dropped_leaves_and_their_bits),
        cmocka_unit_test(test_error_output_too_small),
        cmocka_unit_test(test_filter_extra_is_enough),
        cmocka_unit_test(test_error_missing_leaves),
        cmocka_unit_test(test_error_bad_config),
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_property_no_new_bits),
        cmocka_unit_test(test_live_kvm_accepts_filtered_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
