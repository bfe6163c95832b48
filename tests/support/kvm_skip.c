/* The cmocka side of tests/support/kvm.h: skip (or, with TERN_REQUIRE_KVM,
 * fail) a test or part of one that needs a VM. Linked into the test
 * programs only (benchmarks and tern-testhosts have no cmocka). */
#include "kvm.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static bool kvm_required(void)
{
    const char *v = getenv("TERN_REQUIRE_KVM");
    return v && *v && strcmp(v, "0") != 0;
}

void test_require_kvm(void)
{
    const char *why;
    if (test_kvm_usable(&why))
        return;
    if (kvm_required())
        fail_msg("KVM: not available (%s) and TERN_REQUIRE_KVM is set", why);
    print_message(TEST_KVM_SKIP_TAG "KVM: not available (%s)\n", why);
    skip();
}

bool test_kvm_part(const char *part)
{
    const char *why;
    if (test_kvm_usable(&why))
        return true;
    if (kvm_required())
        fail_msg("KVM: not available (%s) and TERN_REQUIRE_KVM is set", why);
    print_message(TEST_KVM_PART_TAG "%s; KVM: not available (%s)\n", part, why);
    return false;
}
