/* Whether this machine can run VMs, for tests. Machines without a usable
 * /dev/kvm (absent, not openable, or not speaking KVM's API 12) run every
 * test that needs no VM and skip the ones that do, each with one line that
 * says why; tests/run-tests.sh counts those lines. TERN_REQUIRE_KVM=1 in
 * the environment turns a missing KVM into a failure instead. */
#ifndef TERN_TESTS_SUPPORT_KVM_H
#define TERN_TESTS_SUPPORT_KVM_H

#include <stdbool.h>

/* The line each skipped test prints starts with this (run-tests.sh counts it). */
#define TEST_KVM_SKIP_TAG "skip: needs KVM; "
/* ... and a part of a test that was skipped, with this. */
#define TEST_KVM_PART_TAG "skip part: needs KVM; "

/* True when /dev/kvm opens read-write and KVM_GET_API_VERSION answers 12.
 * Otherwise false, with `why` set (e.g. "/dev/kvm: No such file or
 * directory"). Checked once per process. */
bool test_kvm_usable(const char **why);

/* Call first in a test that needs a VM. Without KVM: skips the test
 * (cmocka's skip()) after printing "skip: needs KVM; KVM: not available
 * (WHY)", or fails it when TERN_REQUIRE_KVM=1. Returns only if KVM is usable. */
void test_require_kvm(void);

/* For a test that needs KVM for only part of its work: true if that part
 * can run. Without KVM prints "skip part: needs KVM; PART; KVM: not
 * available (WHY)" and returns false (fails the test under TERN_REQUIRE_KVM=1). */
bool test_kvm_part(const char *part);

#endif
