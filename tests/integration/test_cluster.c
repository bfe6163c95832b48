/* The cluster, end to end: real corosync and real ternd on three test
 * hosts (network, mount and UTS namespaces, a cgroup each), real tern-vmm
 * processes running the test guest. Requests go to different hosts; the
 * replicated state must agree everywhere; VMs survive agent restarts;
 * migrations and evacuations move them; a migration whose final message on
 * the wire is lost still ends with exactly one owner. The tests that start
 * VMs need KVM and skip without it; formation, agreement on defines, a host
 * leaving and rejoining, maintenance and clear errors run everywhere. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/api_limits.h"
#include "node-vmm/control.h"
#include "tests/support/kvm.h"
#include "tests/support/proc.h"
#include "tests/support/ternd_assert.h"

#define HOSTS 3
#define GUEST_ARGS "fill=16 dirty=5 hb=10000 check=1000"

static struct ternd_hosts T;
static const char *dir = T.dir;

static json_t *api_raw(int h, const char *line, int *progress, int timeout_ms)
{
    return ternd_api_line(&T, h, line, progress, timeout_ms);
}

static json_t *api(int h, json_t *req, int *progress, int timeout_ms)
{
    return ternd_api(&T, h, req, progress, timeout_ms);
}

static json_t *api_ok(int h, json_t *req, json_t **reply)
{
    return tapi_ok(&T, h, req, reply);
}

#define err_code ternd_err_code

static int ternd_start(int h, const char *fault)
{
    return ternd_hosts_start(&T, h, fault);
}

static void wait_agreed(unsigned mask, int online, int timeout_ms)
{
    tagree(&T, mask, online, true, timeout_ms);
}

static void assert_same_everywhere(void)
{
    tassert_same(&T, 0xe);
}

static void define_vm(int h, const char *name, int mem_mib, const char *args)
{
    tdefine(&T, h, name, mem_mib, args);
}

static void start_vm(int h, const char *name, const char *host)
{
    json_t *reply;
    json_t *req = json_pack("{s:s, s:s}", "cmd", "vm.start", "name", name);
    if (host)
        json_object_set_new(req, "host", json_string(host));
    json_t *res = api_ok(h, req, &reply);
    assert_string_equal(json_string_value(json_object_get(json_object_get(res, "vm"), "state")),
                        "running");
    json_decref(reply);
}

static json_t *vm_show(int h, const char *name)
{
    json_t *reply;
    json_t *res = api_ok(h, json_pack("{s:s, s:s}", "cmd", "vm.show", "name", name), &reply);
    json_t *vm = json_incref(json_object_get(res, "vm"));
    json_decref(reply);
    return vm;
}

static char *vm_owner(int h, const char *name)
{
    json_t *vm = vm_show(h, name);
    char *o = strdup(json_string_value(json_object_get(vm, "owner")));
    json_decref(vm);
    return o;
}

/* The VM's own control socket on host h (tern-vmm's status), or NULL. */
static json_t *vmm_status(int h, const char *name)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/h%d/run/tern/vms/%s/control.sock", dir, h, name);
    json_t *req = json_pack("{s:s}", "cmd", "status"), *reply = NULL;
    struct tern_err err;
    if (control_call(path, req, 5000, &reply, &err) < 0)
        reply = NULL;
    json_decref(req);
    return reply;
}

/* The VMM on host h ends within a few seconds (a migration source keeps
 * answering status for 2 s after the handover). */
static bool vmm_gone(int h, const char *name)
{
    for (int i = 0; i < 100; i++) {
        json_t *s = vmm_status(h, name);
        if (!s)
            return true;
        json_decref(s);
        test_sleep_ms(100);
    }
    return false;
}

static long long heartbeats(int h, const char *name)
{
    json_t *s = vmm_status(h, name);
    long long n = s ? json_integer_value(json_object_get(json_object_get(s, "heartbeat"), "count"))
                    : -1;
    json_decref(s);
    return n;
}

static long long seq_errors(int h, const char *name)
{
    json_t *s = vmm_status(h, name);
    long long n =
        s ? json_integer_value(json_object_get(json_object_get(s, "heartbeat"), "seq_errors")) : -1;
    json_decref(s);
    return n;
}

/* The guest runs on host h: its heartbeats keep coming, in sequence. */
static void assert_guest_alive(int h, const char *name)
{
    long long a = heartbeats(h, name);
    test_sleep_ms(300);
    long long b = heartbeats(h, name);
    if (!(a >= 0 && b > a)) {
        fprintf(stderr, "VM %s on h%d: heartbeats %lld then %lld\n", name, h, a, b);
        fail();
    }
    assert_int_equal(seq_errors(h, name), 0);
}

static void migrate(int at, const char *name, const char *to, json_t **result)
{
    json_t *reply;
    int progress = 0;
    reply = api(at, json_pack("{s:s, s:s, s:s}", "cmd", "vm.migrate", "name", name, "to", to),
                &progress, 120000);
    assert_non_null(reply);
    if (!json_is_true(json_object_get(reply, "ok"))) {
        char *s = json_dumps(reply, 0);
        fprintf(stderr, "migrate %s to %s: %s\n", name, to, s);
        free(s);
        fail();
    }
    json_t *m = json_object_get(json_object_get(reply, "result"), "migration");
    assert_string_equal(json_string_value(json_object_get(m, "outcome")), "succeeded");
    fprintf(stderr, "migrated %s to %s (asked at h%d): %d progress lines, guest pause %.1f ms, "
                    "total %.2f s\n",
            name, to, at, progress, json_number_value(json_object_get(m, "guest_pause_ms")),
            json_number_value(json_object_get(m, "total_s")));
    /* The test guests send heartbeats: the pause they saw is reported. */
    assert_true(json_is_number(json_object_get(m, "guest_pause_ms")));
    assert_true(json_number_value(json_object_get(m, "guest_pause_ms")) > 0);
    if (result)
        *result = json_incref(m);
    json_decref(reply);
}

static void stop_and_undefine(int at, const char *name)
{
    json_t *reply;
    api_ok(at, json_pack("{s:s, s:s}", "cmd", "vm.stop", "name", name), &reply);
    json_decref(reply);
    api_ok(at, json_pack("{s:s, s:s}", "cmd", "vm.undefine", "name", name), &reply);
    json_decref(reply);
}

static int setup(void **state)
{
    (void)state;
    char err[1024];
    if (ternd_hosts_create(&T, HOSTS, "cluster", err, sizeof(err)) < 0) {
        fprintf(stderr, "creating the test hosts: %s\n", err);
        return -1;
    }
    for (int h = 1; h <= HOSTS; h++)
        if (ternd_start(h, NULL) < 0)
            return -1;
    wait_agreed(0xe, 3, 20000);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ternd_hosts_destroy(&T);
    return 0;
}

/* --- tests --- */

/* Defines, an undefine and an evacuation of an empty host, asked at
 * different hosts: every replica agrees (no VM runs, so no KVM needed). */
static void agree_on_defines_and_maintenance(void **state)
{
    (void)state;
    define_vm(1, "d1", 64, GUEST_ARGS);
    define_vm(2, "d2", 128, "fill=8");
    define_vm(3, "d3", 32, GUEST_ARGS);
    json_t *reply;
    api_ok(1, json_pack("{s:s, s:s}", "cmd", "vm.undefine", "name", "d2"), &reply);
    json_decref(reply);
    wait_agreed(0xe, 3, 5000);
    assert_same_everywhere();
    json_t *vm = vm_show(3, "d1");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(vm, "config"), "mem_mib")),
                     64);
    json_decref(vm);
    json_t *r = api(2, json_pack("{s:s, s:s}", "cmd", "vm.show", "name", "d2"), NULL, 5000);
    assert_string_equal(err_code(r), "not_found");
    json_decref(r);
    /* An evacuation with nothing to move puts the host in maintenance at
     * once; placement then avoids it until it is activated. */
    json_t *res = api_ok(3, json_pack("{s:s, s:s}", "cmd", "host.evacuate", "host", "h2"), &reply);
    assert_int_equal(json_array_size(json_object_get(res, "moved")), 0);
    json_decref(reply);
    r = api(1, json_pack("{s:s, s:s, s:s}", "cmd", "vm.start", "name", "d1", "host", "h2"), NULL,
            10000);
    assert_false(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
    wait_agreed(0xe, 3, 5000);
    assert_same_everywhere();
    api_ok(1, json_pack("{s:s, s:s}", "cmd", "host.activate", "host", "h2"), &reply);
    json_decref(reply);
    api_ok(2, json_pack("{s:s, s:s}", "cmd", "vm.undefine", "name", "d1"), &reply);
    json_decref(reply);
    api_ok(3, json_pack("{s:s, s:s}", "cmd", "vm.undefine", "name", "d3"), &reply);
    json_decref(reply);
    wait_agreed(0xe, 3, 5000);
    assert_same_everywhere();
}

static void agree_after_requests_at_different_hosts(void **state)
{
    (void)state;
    test_require_kvm();
    define_vm(1, "a1", 64, GUEST_ARGS);
    define_vm(2, "a2", 64, GUEST_ARGS);
    start_vm(3, "a1", "h1");
    start_vm(1, "a2", NULL);
    char *o = vm_owner(2, "a1");
    assert_string_equal(o, "h1");
    free(o);
    assert_guest_alive(1, "a1");
    /* Asked at h3, which neither owns the VM nor receives it. */
    migrate(3, "a1", "h2", NULL);
    o = vm_owner(1, "a1");
    assert_string_equal(o, "h2");
    free(o);
    assert_guest_alive(2, "a1");
    assert_true(vmm_gone(1, "a1")); /* the source process ends */
    migrate(2, "a1", "h3", NULL);
    assert_guest_alive(3, "a1");
    wait_agreed(0xe, 3, 5000);
    assert_same_everywhere();
    stop_and_undefine(2, "a1");
    stop_and_undefine(3, "a2");
    wait_agreed(0xe, 3, 5000);
    assert_same_everywhere();
}

static void clear_errors(void **state)
{
    (void)state;
    int p;
    json_t *r = api_raw(1, "{not json", &p, 5000);
    assert_non_null(r);
    assert_false(json_is_true(json_object_get(r, "ok")));
    assert_string_equal(err_code(r), "malformed");
    json_decref(r);
    r = api_raw(2, "[1,2]", &p, 5000);
    assert_string_equal(err_code(r), "malformed");
    json_decref(r);
    r = api(1, json_pack("{s:s}", "cmd", "vm.explode"), NULL, 5000);
    assert_string_equal(err_code(r), "unknown_command");
    json_decref(r);
    r = api(2, json_pack("{s:s, s:s}", "cmd", "vm.start", "name", "nosuchvm"), NULL, 5000);
    assert_string_equal(err_code(r), "not_found");
    json_decref(r);
    r = api(3, json_pack("{s:s, s:s}", "cmd", "host.evacuate", "host", "h9"), NULL, 5000);
    assert_string_equal(err_code(r), "not_found");
    json_decref(r);
    /* A field of the wrong type is invalid (a missing one malformed). */
    r = api(1, json_pack("{s:s, s:i}", "cmd", "vm.show", "name", 5), NULL, 5000);
    assert_string_equal(err_code(r), "invalid");
    json_decref(r);
    r = api(1, json_pack("{s:s}", "cmd", "vm.show"), NULL, 5000);
    assert_string_equal(err_code(r), "malformed");
    json_decref(r);
    r = api(3, json_pack("{s:s, s:s, s:o}", "cmd", "vm.define", "name", "bad",
                         "config", json_pack("{s:s, s:i, s:i}", "kernel", "relative/k", "mem_mib",
                                             64, "vcpus", 1)),
            NULL, 10000);
    assert_string_equal(err_code(r), "invalid");
    json_decref(r);
    /* The API's ranges (common/api_limits.h, which ternctl checks too): at
     * the edge a request gets past the check (and fails for another
     * reason), one beyond it is invalid. */
    r = api(1, json_pack("{s:s, s:s, s:i}", "cmd", "host.evacuate", "host", "h9", "parallel",
                         (int)TERN_PARALLEL_MAX + 1), NULL, 5000);
    assert_string_equal(err_code(r), "invalid");
    json_decref(r);
    r = api(1, json_pack("{s:s, s:s, s:i}", "cmd", "host.evacuate", "host", "h9", "parallel",
                         (int)TERN_PARALLEL_MAX), NULL, 5000);
    assert_string_equal(err_code(r), "not_found");
    json_decref(r);
    r = api(2, json_pack("{s:s, s:s, s:s, s:i}", "cmd", "vm.migrate", "name", "nosuchvm", "to",
                         "h1", "downtime_ms", (int)TERN_DOWNTIME_MS_MAX + 1), NULL, 5000);
    assert_string_equal(err_code(r), "invalid");
    json_decref(r);
    r = api(2, json_pack("{s:s, s:s, s:s, s:i, s:b}", "cmd", "vm.migrate", "name", "nosuchvm",
                         "to", "h1", "downtime_ms", (int)TERN_DOWNTIME_MS_MAX, "wait", 0),
            NULL, 10000);
    assert_string_equal(err_code(r), "not_found");
    json_decref(r);
    r = api(3, json_pack("{s:s, s:s, s:{s:s, s:i}}", "cmd", "vm.define", "name", "huge",
                         "config", "kernel", "/k", "mem_mib", (int)TERN_VM_MEM_MAX_MIB + 1),
            NULL, 10000);
    assert_string_equal(err_code(r), "invalid");
    json_decref(r);
    api_ok(3, json_pack("{s:s, s:s, s:{s:s, s:i, s:i}}", "cmd", "vm.define", "name", "huge",
                        "config", "kernel", "/k", "mem_mib", (int)TERN_VM_MEM_MAX_MIB, "vcpus",
                        (int)TERN_VM_VCPUS_MAX), &r);
    json_decref(r);
    api_ok(1, json_pack("{s:s, s:s}", "cmd", "vm.undefine", "name", "huge"), &r);
    json_decref(r);
    /* A name and a disk path that would forge lines in every host's log
     * (the cluster refuses both, and every host logs the refusal). */
    r = api(2, json_pack("{s:s, s:s, s:o}", "cmd", "vm.define",
                         "name", "x\nternd: 00:00:00.000 FORGED name",
                         "config", json_pack("{s:s, s:i}", "kernel", "/k", "mem_mib", 64)),
            NULL, 10000);
    assert_string_equal(err_code(r), "invalid");
    json_decref(r);
    r = api(3, json_pack("{s:s, s:s, s:o}", "cmd", "vm.define", "name", "esc",
                         "config", json_pack("{s:s, s:i, s:[{s:s}]}", "kernel", "/k", "mem_mib", 64,
                                             "disks", "path",
                                             "/d\nternd: 00:00:00.000 FORGED path\033[2J")),
            NULL, 10000);
    assert_string_equal(err_code(r), "invalid");
    json_decref(r);
    /* Every agent still answers after all that. */
    wait_agreed(0xe, 3, 5000);
    for (int h = 1; h <= HOSTS; h++) {
        char *text = test_read_text(T.ternd[h].err_path);
        assert_non_null(strstr(text, "refused vm_define")); /* it was logged */
        if (strstr(text, "\nternd: 00:00:00.000 FORGED") || strchr(text, '\033'))
            fail_msg("h%d's ternd log has a forged line or a raw escape:\n%s", h, text);
        free(text);
    }
}

/* Capacity refusals need VMs that run (hosts offer 1 GiB each). */
static void capacity_errors(void **state)
{
    (void)state;
    test_require_kvm();
    json_t *r;
    define_vm(1, "big", 900, GUEST_ARGS);
    define_vm(1, "big2", 900, GUEST_ARGS);
    start_vm(2, "big", "h1");
    r = api(3, json_pack("{s:s, s:s, s:s}", "cmd", "vm.start", "name", "big2", "host", "h1"), NULL,
            10000);
    assert_string_equal(err_code(r), "no_capacity");
    json_decref(r);
    start_vm(3, "big2", "h2");
    r = api(3, json_pack("{s:s, s:s, s:s}", "cmd", "vm.migrate", "name", "big", "to", "h2"), NULL,
            10000);
    assert_string_equal(err_code(r), "no_capacity");
    json_decref(r);
    r = api(3, json_pack("{s:s, s:s, s:s}", "cmd", "vm.migrate", "name", "big", "to", "h7"), NULL,
            10000);
    assert_false(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
    stop_and_undefine(1, "big");
    stop_and_undefine(1, "big2");
    /* Every agent still answers after all that. */
    wait_agreed(0xe, 3, 5000);
}

static void ternd_restart_keeps_vms(void **state)
{
    (void)state;
    test_require_kvm();
    define_vm(1, "r1", 64, GUEST_ARGS);
    start_vm(1, "r1", "h2");
    json_t *before = vmm_status(2, "r1");
    assert_non_null(before);
    long long hb0 = json_integer_value(json_object_get(json_object_get(before, "heartbeat"), "count"));
    json_decref(before);
    ternd_hosts_kill(&T, 2); /* SIGKILL: no clean-up at all */
    test_sleep_ms(300);
    assert_true(heartbeats(2, "r1") > hb0); /* the VM did not notice */
    assert_int_equal(ternd_start(2, NULL), 0);
    wait_agreed(0xe, 3, 20000);
    json_t *vm = vm_show(2, "r1");
    assert_string_equal(json_string_value(json_object_get(vm, "state")), "running");
    assert_string_equal(json_string_value(json_object_get(vm, "owner")), "h2");
    json_decref(vm);
    assert_guest_alive(2, "r1");
    /* Re-attached, not just left alone: the agent can still move it. */
    migrate(1, "r1", "h3", NULL);
    assert_guest_alive(3, "r1");
    stop_and_undefine(3, "r1");
}

static void host_leaves_and_rejoins(void **state)
{
    (void)state;
    char err[512];
    ternd_hosts_kill(&T, 3);
    assert_int_equal(test_cluster_stop_corosync(&T.cl, 3, err, sizeof(err)), 0);
    wait_agreed(0x6, 2, 20000);
    define_vm(1, "while-away", 64, GUEST_ARGS);
    bool run = test_kvm_part("a VM started while the host is away");
    if (run)
        start_vm(2, "while-away", "h1");
    assert_int_equal(test_cluster_start_corosync(&T.cl, 3, err, sizeof(err)), 0);
    assert_int_equal(test_cluster_wait_quorate(&T.cl, 20000, err, sizeof(err)), 0);
    assert_int_equal(ternd_start(3, NULL), 0);
    wait_agreed(0xe, 3, 20000);
    json_t *vm = vm_show(3, "while-away");
    if (run)
        assert_string_equal(json_string_value(json_object_get(vm, "owner")), "h1");
    else
        assert_string_equal(json_string_value(json_object_get(vm, "state")), "stopped");
    json_decref(vm);
    assert_same_everywhere();
    if (run)
        stop_and_undefine(3, "while-away");
    else {
        json_t *reply;
        api_ok(3, json_pack("{s:s, s:s}", "cmd", "vm.undefine", "name", "while-away"), &reply);
        json_decref(reply);
    }
}

static void evacuate_four(void **state)
{
    (void)state;
    test_require_kvm();
    const char *names[] = {"e1", "e2", "e3", "e4"};
    for (int i = 0; i < 4; i++) {
        define_vm(1 + i % 3, names[i], 64, GUEST_ARGS);
        start_vm(1 + (i + 1) % 3, names[i], "h2");
    }
    json_t *reply;
    int progress = 0;
    reply = api(3, json_pack("{s:s, s:s}", "cmd", "host.evacuate", "host", "h2"), &progress,
                240000);
    assert_non_null(reply);
    if (!json_is_true(json_object_get(reply, "ok"))) {
        char *s = json_dumps(reply, 0);
        fprintf(stderr, "evacuate: %s\n", s);
        free(s);
        fail();
    }
    json_t *res = json_object_get(reply, "result");
    assert_int_equal(json_array_size(json_object_get(res, "moved")), 4);
    assert_int_equal(json_array_size(json_object_get(res, "failed")), 0);
    assert_true(progress >= 4);
    json_decref(reply);
    for (int i = 0; i < 4; i++) {
        char *o = vm_owner(1, names[i]);
        assert_true(!strcmp(o, "h1") || !strcmp(o, "h3"));
        assert_guest_alive(o[1] - '0', names[i]);
        free(o);
    }
    /* In maintenance, h2 takes no new VMs. */
    json_t *r = api(1, json_pack("{s:s, s:s, s:s}", "cmd", "vm.migrate", "name", "e1", "to", "h2"),
                    NULL, 10000);
    assert_false(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
    api_ok(2, json_pack("{s:s, s:s}", "cmd", "host.activate", "host", "h2"), &reply);
    json_decref(reply);
    migrate(1, "e1", "h2", NULL);
    for (int i = 0; i < 4; i++)
        stop_and_undefine(1, names[i]);
    wait_agreed(0xe, 3, 5000);
    assert_same_everywhere();
}

/* The source VMM dies right after the agents agreed the VM moves, before
 * COMMIT goes out on the wire: the destination's agent commits it. */
static void lost_commit_still_one_owner(void **state)
{
    (void)state;
    test_require_kvm();
    ternd_hosts_kill(&T, 1);
    assert_int_equal(ternd_start(1, "src-exit-at-commit"), 0);
    wait_agreed(0xe, 3, 20000);
    define_vm(2, "lc", 64, GUEST_ARGS);
    start_vm(2, "lc", "h1");
    migrate(3, "lc", "h2", NULL);
    char *o = vm_owner(3, "lc");
    assert_string_equal(o, "h2");
    free(o);
    assert_guest_alive(2, "lc");
    assert_true(vmm_gone(1, "lc"));
    /* The source VMM never sent COMMIT (the fault makes it exit with 94
     * instead; its agent may also kill it first, once the VM runs on h2):
     * the destination's own agent committed it. */
    char log[600];
    snprintf(log, sizeof(log), "%s/h2/run/tern/vms/lc/vmm.log", dir);
    assert_true(test_wait_for_text(log, "committed by the agent", 5000));
    assert_false(test_wait_for_text(log, "committed by the source", 0));
    stop_and_undefine(1, "lc");
    ternd_hosts_kill(&T, 1);
    assert_int_equal(ternd_start(1, NULL), 0);
    wait_agreed(0xe, 3, 20000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(agree_on_defines_and_maintenance),
        cmocka_unit_test(agree_after_requests_at_different_hosts),
        cmocka_unit_test(clear_errors),
        cmocka_unit_test(capacity_errors),
        cmocka_unit_test(ternd_restart_keeps_vms),
        cmocka_unit_test(host_leaves_and_rejoins),
        cmocka_unit_test(evacuate_four),
        cmocka_unit_test(lost_commit_still_one_owner),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
