/* The CPUID the guest sees: KVM_GET_SUPPORTED_CPUID, filtered in one place
 * to what tern-vmm really provides, and made per-vCPU (APIC ids,
 * topology). The policy, rule by rule, is in docs/cpuid-policy.md. */
#ifndef TERN_NODE_VMM_CPUID_H
#define TERN_NODE_VMM_CPUID_H

#include <linux/kvm.h>
#include <stdint.h>

#include "../common/err.h"

struct cpuid_config {
    unsigned vcpu_index; /* also this vCPU's APIC id */
    unsigned nr_vcpus;
    uint32_t tsc_khz;      /* for TERN_CPUID_TIMING */
    int tsc_deadline;      /* KVM_CAP_TSC_DEADLINE_TIMER with in-kernel irqchip */
    /* The host's KVM emulates guest kernel mode (kvm_pvm) with an emulator
     * that lacks CMPXCHG16B: hide CX16 so guests take their fallback path
     * instead of stopping on an internal error. */
    int kernel_mode_emulated;
};

/* How many entries cpuid_filter() may add to its input (synthesised
 * topology subleaves, the hypervisor and timing leaves): an output with
 * room for nin + CPUID_FILTER_EXTRA entries is always big enough. */
#define CPUID_FILTER_EXTRA 8

/* Filters `in` (as returned by KVM_GET_SUPPORTED_CPUID) into `out`, which has
 * room for `max_out` entries. Never grants a feature `in` lacks, except the
 * ones the VMM itself implements (hypervisor bit, TSC-deadline with the
 * in-kernel LAPIC, HTT for a multi-vCPU topology, the timing leaf).
 * Fails, with *nout untouched, if `out` is too small, `in` has no leaf 0
 * or 1, nr_vcpus is 0 or above 255, or vcpu_index >= nr_vcpus. `in` and
 * `out` must not overlap. */
int cpuid_filter(const struct kvm_cpuid_entry2 *in, unsigned nin,
                 struct kvm_cpuid_entry2 *out, unsigned max_out, unsigned *nout,
                 const struct cpuid_config *cfg, struct tern_err *err);

/* Whether `function` is a leaf whose subleaf (ECX) selects the answer. */
int cpuid_leaf_is_indexed(uint32_t function);

/* Finds the entry for (function, index); index is ignored for leaves that
 * are not indexed (neither in cpuid_leaf_is_indexed() nor flagged
 * KVM_CPUID_FLAG_SIGNIFCANT_INDEX). NULL if absent. */
const struct kvm_cpuid_entry2 *cpuid_find(const struct kvm_cpuid_entry2 *e, unsigned n,
                                          uint32_t function, uint32_t index);

#endif
