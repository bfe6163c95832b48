/* ternd's control API against a real agent in this process, on a one-node
 * corosync stand-in (tests/support/inproc_agent.h): what the fuzzer
 * (tests/fuzz/fuzz_agent_request.c) found, kept as cases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/inproc_agent.h"

static struct inproc_agent agent;

static int setup(void **state)
{
    (void)state;
    struct tern_err err;
    if (inproc_agent_start(&agent, NULL, 10000, &err) < 0) {
        fprintf(stderr, "starting the agent: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    struct tern_err err;
    if (inproc_agent_stop(&agent, true, &err) < 0) {
        fprintf(stderr, "stopping the agent: %s\n", err.msg);
        return -1;
    }
    return 0;
}

/* Sends `lines`, returns the reply lines as a JSON array (every line must
 * be JSON); *took_ms how long until the agent closed the connection. */
static json_t *request(const char *lines, int timeout_ms, double *took_ms)
{
    struct tern_err err;
    char *out = inproc_request(&agent, lines, timeout_ms, took_ms, &err);
    if (!out)
        fail_msg("%s", err.msg);
    json_t *arr = json_array();
    for (char *save, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        json_error_t je;
        json_t *j = json_loads(l, 0, &je);
        if (!j)
            fail_msg("not JSON (%s): %s", je.text, l);
        json_array_append_new(arr, j);
    }
    free(out);
    return arr;
}

/* The stand-in cluster works: status, a change acknowledged, one reply per
 * request (blank lines ignored, a last line without a newline answered). */
static void test_basics(void **state)
{
    (void)state;
    json_t *r = request("{\"cmd\":\"status\"}\n\n  \r\n{\"cmd\":\"vm.define\",\"name\":\"a\","
                        "\"config\":{\"kernel\":\"/k\",\"mem_mib\":64}}\n{\"cmd\":\"vm.list\"}",
                        5000, NULL);
    assert_int_equal(json_array_size(r), 3);
    json_t *status = json_array_get(r, 0);
    assert_true(json_is_true(json_object_get(status, "ok")));
    json_t *cluster = json_object_get(json_object_get(status, "result"), "cluster");
    assert_true(json_is_true(json_object_get(cluster, "ready")));
    assert_string_equal(json_string_value(json_object_get(cluster, "local_host")), "fz1");
    /* The list may be answered before the define is acknowledged. */
    for (size_t i = 1; i < 3; i++)
        assert_true(json_is_true(json_object_get(json_array_get(r, i), "ok")));
    json_decref(r);
    r = request("{\"cmd\":\"vm.show\",\"name\":\"a\"}\n", 5000, NULL);
    assert_true(json_is_true(json_object_get(json_array_get(r, 0), "ok")));
    json_decref(r);
}

static const char *code_of(const json_t *reply)
{
    return json_string_value(json_object_get(json_object_get(reply, "error"), "code"));
}

/* A VM whose start failed, started again at once: the second failure is
 * reported too (it was held back for 5 s as "said already", while the VM
 * stayed `starting` and the agent kept trying to start it). */
static void test_start_fails_twice(void **state)
{
    (void)state;
    json_t *r = request("{\"cmd\":\"vm.define\",\"name\":\"b\",\"config\":{\"kernel\":\"/k\","
                        "\"mem_mib\":64}}\n",
                        5000, NULL);
    assert_true(json_is_true(json_object_get(json_array_get(r, 0), "ok")));
    json_decref(r);
    for (int i = 0; i < 3; i++) {
        double took;
        r = request("{\"cmd\":\"vm.start\",\"name\":\"b\"}\n", 10000, &took);
        print_message("start %d: %.0f ms\n", i + 1, took);
        assert_int_equal(json_array_size(r), 1);
        assert_string_equal(code_of(json_array_get(r, 0)), "failed");
        assert_true(took < 2500);
        json_decref(r);
    }
    const struct cl_vm *vm = cl_state_vm(agent_state(&agent.a), "b");
    assert_non_null(vm);
    assert_int_equal(vm->run, CL_RUN_CRASHED);
}

/* host.fence of the only host: nobody can fence it, so it is refused at
 * once (it waited 120 s for `timeout` and left the host being fenced, so
 * that no VM could be placed on it until its ternd restarted). */
static void test_fence_only_host(void **state)
{
    (void)state;
    double took;
    json_t *r = request("{\"cmd\":\"host.fence\",\"host\":\"fz1\"}\n", 10000, &took);
    assert_int_equal(json_array_size(r), 1);
    assert_string_equal(code_of(json_array_get(r, 0)), "conflict");
    assert_true(took < 2500);
    json_decref(r);
    const struct cl_host *h = cl_state_host(agent_state(&agent.a), "fz1");
    assert_non_null(h);
    assert_int_equal(h->fence, CL_FENCE_NONE);
    /* Still a host VMs are placed on (the start fails only at exec). */
    r = request("{\"cmd\":\"vm.define\",\"name\":\"c\",\"config\":{\"kernel\":\"/k\","
                "\"mem_mib\":64}}\n{\"cmd\":\"vm.start\",\"name\":\"c\"}\n",
                5000, NULL);
    assert_int_equal(json_array_size(r), 2);
    assert_string_equal(code_of(json_array_get(r, 1)), "failed");
    json_decref(r);
}

/* Lines near and over the 1 MiB limit: one just under it is a request like
 * any (the input buffer grows to it, the next line still read), one over
 * it gets one `malformed` and ends the reading. */
static void test_long_lines(void **state)
{
    (void)state;
    size_t pad = AGENT_MAX_LINE - 100;
    char *big = malloc(pad + 200);
    assert_non_null(big);
    int n = sprintf(big, "{\"cmd\":\"status\",\"pad\":\"");
    memset(big + n, 'x', pad - (size_t)n);
    strcpy(big + pad, "\"}\n{\"cmd\":\"vm.list\"}\n");
    json_t *r = request(big, 10000, NULL);
    assert_int_equal(json_array_size(r), 2);
    for (size_t i = 0; i < 2; i++)
        assert_true(json_is_true(json_object_get(json_array_get(r, i), "ok")));
    json_decref(r);

    size_t over = AGENT_MAX_LINE + 1000;
    big = realloc(big, over + 1);
    assert_non_null(big);
    memset(big, 'x', over);
    big[over] = '\0';
    r = request(big, 10000, NULL);
    assert_int_equal(json_array_size(r), 1);
    assert_string_equal(code_of(json_array_get(r, 0)), "malformed");
    const char *msg = json_string_value(
        json_object_get(json_object_get(json_array_get(r, 0), "error"), "message"));
    assert_non_null(strstr(msg, "longer than"));
    json_decref(r);

    /* A whole line (a valid request, newline and all) just over the
     * limit: refused as too long; the next line is served. */
    over = AGENT_MAX_LINE + 1000;
    big = realloc(big, over + 64);
    assert_non_null(big);
    n = sprintf(big, "{\"cmd\":\"status\",\"pad\":\"");
    memset(big + n, 'x', over - (size_t)n);
    strcpy(big + over, "\"}\n{\"cmd\":\"vm.list\"}\n");
    r = request(big, 10000, NULL);
    assert_int_equal(json_array_size(r), 2);
    assert_string_equal(code_of(json_array_get(r, 0)), "malformed");
    msg = json_string_value(
        json_object_get(json_object_get(json_array_get(r, 0), "error"), "message"));
    assert_non_null(strstr(msg, "longer than"));
    assert_true(json_is_true(json_object_get(json_array_get(r, 1), "ok")));
    json_decref(r);
    free(big);
}

/* An evacuation that fails answers with its one final line (ok false,
 * the error and the result) and that line ends the request: the
 * connection closes once everything asked was answered (it stayed open,
 * the request counted as waiting forever). */
static void test_evacuation_fails(void **state)
{
    (void)state;
    json_t *r = request("{\"cmd\":\"vm.define\",\"name\":\"a\",\"config\":{\"kernel\":\"/k\","
                        "\"mem_mib\":64}}\n",
                        5000, NULL);
    json_decref(r);
    /* The evacuation is applied right after the start: 'a' is starting
     * here, and no other host can take it. */
    r = request("{\"cmd\":\"vm.start\",\"name\":\"a\"}\n"
                "{\"cmd\":\"host.evacuate\",\"host\":\"fz1\"}\n",
                5000, NULL);
    assert_int_equal(json_array_size(r), 2);
    json_t *evac = NULL;
    for (size_t i = 0; i < 2; i++)
        if (json_object_get(json_array_get(r, i), "result"))
            evac = json_array_get(r, i);
    assert_non_null(evac);
    assert_string_equal(code_of(evac), "failed");
    json_t *failed = json_object_get(json_object_get(evac, "result"), "failed");
    assert_int_equal(json_array_size(failed), 1);
    json_decref(r);
}

/* An error message that echoes the request, cut to its 1 KiB in the
 * middle of a character: answered all the same (jansson refused the cut
 * character, no reply was made and the request waited for ever). */
static void test_cut_character(void **state)
{
    (void)state;
    char req[4096];
    int n = sprintf(req, "{\"cmd\":\"x");
    for (int i = 0; i < 600; i++)
        n += sprintf(req + n, "\xc3\xa9");
    strcpy(req + n, "\"}\n{\"cmd\":\"vm.show\",\"name\":\"y");
    n += (int)strlen(req + n);
    for (int i = 0; i < 600; i++)
        n += sprintf(req + n, "\xe2\x82\xac");
    strcpy(req + n, "\"}\n");
    json_t *r = request(req, 5000, NULL);
    assert_int_equal(json_array_size(r), 2);
    assert_string_equal(code_of(json_array_get(r, 0)), "unknown_command");
    assert_string_equal(code_of(json_array_get(r, 1)), "not_found");
    json_decref(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_basics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_fails_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fence_only_host, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_evacuation_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cut_character, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
