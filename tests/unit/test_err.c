/* common/err: messages gain context, codes survive it. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/unix_addr.h"

static void test_codes_survive_prefixes(void **unused)
{
    (void)unused;
    struct tern_err err = {0};
    assert_int_equal(tern_err_coded(&err, TERN_ERR_NOT_FOUND, "VM '%s' is not defined", "web1"),
                     -1);
    assert_int_equal(tern_err_prefix(&err, "vm_start"), -1);
    assert_string_equal(err.msg, "vm_start: VM 'web1' is not defined");
    assert_int_equal(err.code, TERN_ERR_NOT_FOUND);
    assert_string_equal(tern_err_code_name(err.code), "not_found");
    /* A new error replaces the code as well as the message. */
    tern_err_set(&err, "plain");
    assert_int_equal(err.code, TERN_ERR_NONE);
    assert_string_equal(tern_err_code_name(err.code), "failed");
    tern_err_coded(&err, TERN_ERR_CONFLICT, "busy");
    tern_err_errno(&err, ENOENT, "opening %s", "/x");
    assert_int_equal(err.code, TERN_ERR_NONE);
    assert_non_null(strstr(err.msg, "opening /x: "));
    assert_int_equal(tern_err_coded(NULL, TERN_ERR_INVALID, "nowhere"), -1);
}

static void test_code_names(void **unused)
{
    (void)unused;
    assert_string_equal(tern_err_code_name(TERN_ERR_INVALID), "invalid");
    assert_string_equal(tern_err_code_name(TERN_ERR_NO_CAPACITY), "no_capacity");
    assert_string_equal(tern_err_code_name(TERN_ERR_INTERNAL), "internal");
    assert_string_equal(tern_err_code_name(99), "failed");
}

static void test_unix_addr(void **unused)
{
    (void)unused;
    struct sockaddr_un a;
    struct tern_err err = {0};
    assert_int_equal(unix_addr_fill(&a, "/run/tern/x.sock", "control socket", &err), 0);
    assert_int_equal(a.sun_family, AF_UNIX);
    assert_string_equal(a.sun_path, "/run/tern/x.sock");
    char longp[200];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = 0;
    assert_int_equal(unix_addr_fill(&a, longp, "control socket", &err), -1);
    assert_non_null(strstr(err.msg, "control socket path '/aaa"));
    assert_non_null(strstr(err.msg, "is too long (max 107 bytes)"));
    assert_int_equal(unix_addr_fill(&a, longp, "control socket", NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_survive_prefixes),
        cmocka_unit_test(test_code_names),
        cmocka_unit_test(test_unix_addr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
