/* CPUID filtering: KVM_GET_SUPPORTED_CPUID in, this VMM's CPUID out. The
 * rules and their reasons are in docs/cpuid-policy.md; each rule here is a
 * small function so the policy and the code read side by side. */
#include "cpuid.h"
#include "guest_abi.h"

#include <string.h>

#define BIT(n) (1u << (n))

#define MAX_VCPUS 255 /* xAPIC ids are 8 bits and 0xff is broadcast */

/* Leaf 1 ECX. */
#define L1_ECX_DTES64 BIT(2)
#define L1_ECX_MONITOR BIT(3)
#define L1_ECX_DS_CPL BIT(4)
#define L1_ECX_VMX BIT(5)
#define L1_ECX_SMX BIT(6)
#define L1_ECX_EST BIT(7)
#define L1_ECX_TM2 BIT(8)
#define L1_ECX_PDCM BIT(15)
#define L1_ECX_TSC_DEADLINE BIT(24)
#define L1_ECX_HYPERVISOR BIT(31)
/* Leaf 1 EDX. */
#define L1_EDX_DS BIT(21)
#define L1_EDX_ACPI BIT(22)
#define L1_EDX_HTT BIT(28)
#define L1_EDX_TM BIT(29)
#define L1_EDX_PBE BIT(31)

/* Nested virtualisation, SMX, and the host's power, thermal and debug-store
 * machinery are not ours to offer (DTES64 and DS-CPL go with DS, PBE with
 * TM). */
#define L1_ECX_DENY (L1_ECX_DTES64 | L1_ECX_MONITOR | L1_ECX_DS_CPL | L1_ECX_VMX | \
                     L1_ECX_SMX | L1_ECX_EST | L1_ECX_TM2 | L1_ECX_PDCM)
#define L1_EDX_DENY (L1_EDX_DS | L1_EDX_ACPI | L1_EDX_TM | L1_EDX_PBE)

/* Leaf 6 EAX: the LAPIC timer keeps running in deep C-states. KVM's timer
 * always does, and Linux needs this bit to use the LAPIC timer for
 * high-resolution and tickless operation without an HPET. */
#define L6_EAX_ARAT BIT(2)
/* Leaf 0x80000007 EDX: the TSC runs at a constant rate. */
#define L80000007_EDX_INVARIANT_TSC BIT(8)

/* Leaf 4 EAX fields. */
#define L4_EAX_TYPE_MASK 0x1fu
#define L4_EAX_LEVEL(eax) (((eax) >> 5) & 7u)
#define L4_EAX_KEEP 0x3fffu /* type, level, self-init, fully assoc. */
#define L4_EAX_SHARING_SHIFT 14
#define L4_EAX_CORES_SHIFT 26
#define L4_EAX_CORES_MAX 63u /* a 6-bit field */

/* Leaf 0xB / 0x1F level types (ECX[15:8]). */
#define TOPO_LEVEL_INVALID 0u
#define TOPO_LEVEL_SMT 1u
#define TOPO_LEVEL_CORE 2u

enum cpuid_reg { REG_EAX, REG_EBX, REG_ECX, REG_EDX };

/* Leaves the VMM cannot stand behind, each with the feature bit that
 * announces it: the bit goes with the leaf, so a guest is never told to look
 * for a leaf that is gone. A leaf may appear on several rows when several
 * bits announce it. */
struct cpuid_drop {
    uint32_t first, last; /* leaf range */
    const char *what;
    uint32_t flag_leaf, flag_index; /* announcing bit; mask 0 if none */
    enum cpuid_reg flag_reg;
    uint32_t flag_mask;
};

static const struct cpuid_drop cpuid_drops[] = {
    {0x05, 0x05, "MONITOR/MWAIT parameters", 0x01, 0, REG_ECX, L1_ECX_MONITOR},
    {0x0f, 0x0f, "RDT monitoring", 0x07, 0, REG_EBX, BIT(12)},
    {0x10, 0x10, "RDT allocation", 0x07, 0, REG_EBX, BIT(15)},
    {0x12, 0x12, "SGX", 0x07, 0, REG_EBX, BIT(2)},
    {0x12, 0x12, "SGX launch control", 0x07, 0, REG_ECX, BIT(30)},
    {0x14, 0x14, "Intel PT", 0x07, 0, REG_EBX, BIT(25)},
    {0x19, 0x19, "Key Locker", 0x07, 0, REG_ECX, BIT(23)},
    {0x1a, 0x1a, "hybrid core type", 0x07, 0, REG_EDX, BIT(15)},
    {0x1b, 0x1b, "PCONFIG", 0x07, 0, REG_EDX, BIT(18)},
    {0x1c, 0x1c, "architectural LBR", 0x07, 0, REG_EDX, BIT(19)},
    {0x20, 0x20, "HRESET", 0x07, 1, REG_EAX, BIT(22)},
    {0x23, 0x23, "architectural PMU extensions", 0x07, 1, REG_EAX, BIT(8)},
    {0x8000000a, 0x8000000a, "SVM (nested virtualisation)", 0x80000001, 0, REG_ECX, BIT(2)},
    /* Only KVM's own leaves (0x40000000-1) and ours (0x40000010, added
     * afresh) are offered in the hypervisor range. */
    {0x40000002, 0x4fffffff, "other hypervisor leaves", 0, 0, REG_EAX, 0},
};

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static uint32_t *reg_of(struct kvm_cpuid_entry2 *e, enum cpuid_reg r)
{
    switch (r) {
    case REG_EAX:
        return &e->eax;
    case REG_EBX:
        return &e->ebx;
    case REG_ECX:
        return &e->ecx;
    case REG_EDX:
        break;
    }
    return &e->edx;
}

static int leaf_dropped(uint32_t function)
{
    for (size_t i = 0; i < ARRAY_SIZE(cpuid_drops); i++)
        if (function >= cpuid_drops[i].first && function <= cpuid_drops[i].last)
            return 1;
    return 0;
}

/* Leaves the filter writes itself rather than copying from KVM. */
static int leaf_synthesised(uint32_t function)
{
    return function == 0x0b || function == 0x1f || function == TERN_CPUID_HV_BASE ||
           function == TERN_CPUID_TIMING;
}

int cpuid_leaf_is_indexed(uint32_t function)
{
    static const uint32_t indexed[] = {
        0x04, 0x07, 0x0b, 0x0d, 0x0f, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1b,
        0x1d, 0x1e, 0x1f, 0x20, 0x23, 0x24, 0x8000001d, 0x80000020, 0x80000026,
    };
    for (size_t i = 0; i < ARRAY_SIZE(indexed); i++)
        if (indexed[i] == function)
            return 1;
    return 0;
}

static int entry_indexed(const struct kvm_cpuid_entry2 *e)
{
    return (e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || cpuid_leaf_is_indexed(e->function);
}

const struct kvm_cpuid_entry2 *cpuid_find(const struct kvm_cpuid_entry2 *e, unsigned n,
                                          uint32_t function, uint32_t index)
{
    for (unsigned i = 0; i < n; i++) {
        if (e[i].function != function)
            continue;
        if (entry_indexed(&e[i]) && e[i].index != index)
            continue;
        return &e[i];
    }
    return NULL;
}

/* The smallest s with (1 << s) >= n: the APIC-id bits a level needs. */
static unsigned count_order(unsigned n)
{
    unsigned s = 0;
    while ((1u << s) < n)
        s++;
    return s;
}

/* CMPXCHG16B: see cpuid_config.kernel_mode_emulated. */
#define L1_ECX_CX16 (1u << 13)

static void fix_leaf1(struct kvm_cpuid_entry2 *e, const struct cpuid_config *cfg)
{
    e->ecx &= ~L1_ECX_DENY;
    e->ecx |= L1_ECX_HYPERVISOR;
    /* KVM emulates the TSC-deadline timer only in its in-kernel LAPIC, so
     * the caller decides, whatever KVM's table says. */
    if (cfg->tsc_deadline)
        e->ecx |= L1_ECX_TSC_DEADLINE;
    else
        e->ecx &= ~L1_ECX_TSC_DEADLINE;
    if (cfg->kernel_mode_emulated)
        e->ecx &= ~L1_ECX_CX16;
    e->edx &= ~L1_EDX_DENY;
    /* HTT means "EBX[23:16] is valid", which only matters with siblings. */
    if (cfg->nr_vcpus > 1)
        e->edx |= L1_EDX_HTT;
    else
        e->edx &= ~L1_EDX_HTT;
    /* Keep brand index and CLFLUSH size; APIC id and logical count are ours. */
    e->ebx = (e->ebx & 0xffffu) | (cfg->vcpu_index << 24) | (cfg->nr_vcpus << 16);
}

/* One package of nr_vcpus single-threaded cores: L1 and L2 private to a
 * core, L3 and beyond shared by the package. */
static void fix_leaf4(struct kvm_cpuid_entry2 *e, const struct cpuid_config *cfg)
{
    if ((e->eax & L4_EAX_TYPE_MASK) == 0)
        return; /* the "no more caches" terminator stays all zero */
    unsigned sharing = L4_EAX_LEVEL(e->eax) >= 3 ? cfg->nr_vcpus - 1 : 0;
    unsigned cores = cfg->nr_vcpus - 1;
    if (cores > L4_EAX_CORES_MAX)
        cores = L4_EAX_CORES_MAX;
    e->eax = (e->eax & L4_EAX_KEEP) | (sharing << L4_EAX_SHARING_SHIFT) |
             (cores << L4_EAX_CORES_SHIFT);
}

static void fix_leaf6(struct kvm_cpuid_entry2 *e)
{
    e->eax &= L6_EAX_ARAT;
    e->ebx = e->ecx = e->edx = 0;
}

/* The guest gets no PMU: counters would need migrating and are host-specific. */
static void fix_leaf_a(struct kvm_cpuid_entry2 *e)
{
    e->eax = e->ebx = e->ecx = e->edx = 0;
}

static void fix_leaf_80000007(struct kvm_cpuid_entry2 *e)
{
    e->edx &= L80000007_EDX_INVARIANT_TSC;
    e->eax = e->ebx = e->ecx = 0;
}

static void fix_entry(struct kvm_cpuid_entry2 *e, const struct cpuid_config *cfg)
{
    switch (e->function) {
    case 0x01:
        fix_leaf1(e, cfg);
        break;
    case 0x04:
        fix_leaf4(e, cfg);
        break;
    case 0x06:
        fix_leaf6(e);
        break;
    case 0x0a:
        fix_leaf_a(e);
        break;
    case 0x80000007:
        fix_leaf_80000007(e);
        break;
    default:
        break;
    }
}

/* Output under construction. */
struct cpuid_out {
    struct kvm_cpuid_entry2 *e;
    unsigned n, max;
};

static struct kvm_cpuid_entry2 *out_push(struct cpuid_out *o, struct tern_err *err)
{
    if (o->n == o->max) {
        tern_err_set(err, "CPUID output has room for only %u entries", o->max);
        return NULL;
    }
    struct kvm_cpuid_entry2 *e = &o->e[o->n++];
    memset(e, 0, sizeof(*e));
    return e;
}

static int copy_filtered(const struct kvm_cpuid_entry2 *in, unsigned nin, struct cpuid_out *o,
                         const struct cpuid_config *cfg, struct tern_err *err)
{
    for (unsigned i = 0; i < nin; i++) {
        if (leaf_dropped(in[i].function) || leaf_synthesised(in[i].function))
            continue;
        struct kvm_cpuid_entry2 *e = out_push(o, err);
        if (!e)
            return -1;
        *e = in[i];
        fix_entry(e, cfg);
    }
    return 0;
}

/* x2APIC topology (leaf 0xB, and 0x1F with the same levels): an SMT level
 * of one thread, a core level of nr_vcpus, then the invalid level that
 * ends the list. EDX is the x2APIC id on every subleaf. */
static int add_topology(uint32_t function, struct cpuid_out *o, const struct cpuid_config *cfg,
                        struct tern_err *err)
{
    const struct { uint32_t shift, count, type; } levels[] = {
        {0, 1, TOPO_LEVEL_SMT},
        {count_order(cfg->nr_vcpus), cfg->nr_vcpus, TOPO_LEVEL_CORE},
        {0, 0, TOPO_LEVEL_INVALID},
    };
    for (uint32_t sub = 0; sub < ARRAY_SIZE(levels); sub++) {
        struct kvm_cpuid_entry2 *e = out_push(o, err);
        if (!e)
            return -1;
        e->function = function;
        e->index = sub;
        e->flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
        e->eax = levels[sub].shift;
        e->ebx = levels[sub].count;
        e->ecx = (levels[sub].type << 8) | sub;
        e->edx = cfg->vcpu_index;
    }
    return 0;
}

/* KVM's signature stays so Linux finds kvmclock and the PV features in
 * 0x40000001; EAX now reaches our timing leaf. */
static int add_hypervisor_leaves(const struct kvm_cpuid_entry2 *in, unsigned nin,
                                 struct cpuid_out *o, const struct cpuid_config *cfg,
                                 struct tern_err *err)
{
    static const char kvm_signature[12] = "KVMKVMKVM\0\0\0";
    struct kvm_cpuid_entry2 *base = out_push(o, err);
    if (!base)
        return -1;
    const struct kvm_cpuid_entry2 *kvm = cpuid_find(in, nin, TERN_CPUID_HV_BASE, 0);
    if (kvm) {
        *base = *kvm;
    } else {
        base->function = TERN_CPUID_HV_BASE;
        memcpy(&base->ebx, kvm_signature, 4);
        memcpy(&base->ecx, kvm_signature + 4, 4);
        memcpy(&base->edx, kvm_signature + 8, 4);
    }
    base->eax = TERN_CPUID_TIMING;

    struct kvm_cpuid_entry2 *timing = out_push(o, err);
    if (!timing)
        return -1;
    timing->function = TERN_CPUID_TIMING;
    timing->eax = cfg->tsc_khz;
    timing->ebx = TERN_APIC_BUS_KHZ;
    return 0;
}

/* Clears the bits that announce dropped leaves (after copying, because the
 * announcing leaf may come before or after the dropped one). */
static void clear_announcing_bits(struct cpuid_out *o)
{
    for (size_t i = 0; i < ARRAY_SIZE(cpuid_drops); i++) {
        const struct cpuid_drop *d = &cpuid_drops[i];
        if (!d->flag_mask)
            continue;
        struct kvm_cpuid_entry2 *e =
            (struct kvm_cpuid_entry2 *)cpuid_find(o->e, o->n, d->flag_leaf, d->flag_index);
        if (e)
            *reg_of(e, d->flag_reg) &= ~d->flag_mask;
    }
}

static int check_config(const struct cpuid_config *cfg, struct tern_err *err)
{
    if (cfg->nr_vcpus == 0 || cfg->nr_vcpus > MAX_VCPUS)
        return tern_err_set(err, "CPUID for %u vCPUs: must be 1 to %u", cfg->nr_vcpus,
                            MAX_VCPUS);
    if (cfg->vcpu_index >= cfg->nr_vcpus)
        return tern_err_set(err, "CPUID for vCPU %u of %u: index out of range",
                            cfg->vcpu_index, cfg->nr_vcpus);
    return 0;
}

static int check_input(const struct kvm_cpuid_entry2 *in, unsigned nin, struct tern_err *err)
{
    if (!cpuid_find(in, nin, 0x00, 0))
        return tern_err_set(err, "supported CPUID has no leaf 0 (vendor, max leaf)");
    if (!cpuid_find(in, nin, 0x01, 0))
        return tern_err_set(err, "supported CPUID has no leaf 1 (features)");
    return 0;
}

int cpuid_filter(const struct kvm_cpuid_entry2 *in, unsigned nin,
                 struct kvm_cpuid_entry2 *out, unsigned max_out, unsigned *nout,
                 const struct cpuid_config *cfg, struct tern_err *err)
{
    if (check_config(cfg, err) < 0 || check_input(in, nin, err) < 0)
        return -1;
    struct cpuid_out o = {.e = out, .n = 0, .max = max_out};
    if (copy_filtered(in, nin, &o, cfg, err) < 0)
        return -1;
    /* Leaf 0xB whenever the guest may ask for it; 0x1F only where the host
     * CPU has it, as Linux prefers 0x1F and it should not appear from
     * nowhere on older models. */
    if (cpuid_find(in, nin, 0x00, 0)->eax >= 0x0b && add_topology(0x0b, &o, cfg, err) < 0)
        return -1;
    if (cpuid_find(in, nin, 0x1f, 0) && add_topology(0x1f, &o, cfg, err) < 0)
        return -1;
    if (add_hypervisor_leaves(in, nin, &o, cfg, err) < 0)
        return -1;
    clear_announcing_bits(&o);
    *nout = o.n;
    return 0;
}
