/* One control request to a VM process without blocking the loop
 * (agent/vmm_rpc.h): a call that fails before the loop runs it (no such
 * socket) reports through the loop, once, with the reason. Under
 * ASan+UBSan (make asan) this also checks that the error handed to the
 * callback outlives the call it came from: it was freed before the
 * callback read it, and ternd's log line about it read freed memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "agent/vmm_rpc.h"

struct seen {
    int calls;
    bool had_reply;
    char msg[TERN_ERR_MAX];
};

static void done(void *opaque, json_t *reply, const struct tern_err *err)
{
    struct seen *s = opaque;
    s->calls++;
    s->had_reply = reply != NULL;
    snprintf(s->msg, sizeof(s->msg), "%s", err ? err->msg : "");
}

static void test_early_failure_reported_by_the_loop(void **unused)
{
    (void)unused;
    struct loop *l;
    struct tern_err err;
    assert_int_equal(loop_new(&l, &err), 0);
    struct seen s = {0};
    json_t *req = json_pack("{s:s}", "cmd", "status");
    struct vmm_rpc *c = vmm_rpc_start(l, "/nonexistent/tern-test/control.sock", "VM 'x' (status)",
                                      req, 5000, done, &s);
    json_decref(req);
    assert_non_null(c);
    assert_int_equal(s.calls, 0); /* never from inside vmm_rpc_start */
    for (int i = 0; i < 100 && s.calls == 0; i++)
        assert_true(loop_run_once(l, 10, &err) >= 0);
    assert_int_equal(s.calls, 1);
    assert_false(s.had_reply);
    assert_non_null(strstr(s.msg, "VM 'x' (status)"));
    assert_non_null(strstr(s.msg, "cannot connect to its control socket"));
    for (int i = 0; i < 5; i++)
        assert_true(loop_run_once(l, 1, &err) >= 0);
    assert_int_equal(s.calls, 1); /* once */
    loop_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_early_failure_reported_by_the_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
