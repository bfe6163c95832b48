/* Live migration between two test hosts (network namespaces on a bridge),
 * over mutually authenticated TLS, on real KVM: the guest keeps running
 * and checking itself; heartbeat and disk journal continue; every failure
 * before COMMIT leaves it running on the source. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/unix_addr.h"
#include "migrate/certs.h"
#include "node-vmm/control.h"
#include "node-vmm/vm.h"
#include "tests/support/netns.h"
#include "tests/support/proc.h"
#include "tests/support/kvm.h"

#include <stdbool.h>

#define TOKEN "migration-token-0123456789abcdef"
#define PORT "7701"

struct vmm {
    struct test_proc p;
    char sock[512];
    char serial[512];
};

struct fixture {
    char *dir;
    struct test_hosts hosts;
    char disk[512];
    char tls[2][512]; /* host 0, host 1 */
    char rogue[512];  /* a cert from another CA */
    struct vmm vm[64];
    int nvm;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[256];
    if (!f || !(f->dir = test_make_tmpdir("mig")))
        return -1;
    if (test_hosts_create(&f->hosts, 2, err, sizeof(err)) < 0) {
        print_message("test hosts: %s\n", err);
        return -1;
    }
    char ca[512], ca2[512];
    snprintf(ca, sizeof(ca), "%s/ca", f->dir);
    snprintf(ca2, sizeof(ca2), "%s/ca2", f->dir);
    snprintf(f->tls[0], sizeof(f->tls[0]), "%s/host0", f->dir);
    snprintf(f->tls[1], sizeof(f->tls[1]), "%s/host1", f->dir);
    snprintf(f->rogue, sizeof(f->rogue), "%s/rogue", f->dir);
    struct tern_err e;
    if (mig_certs_init_ca(ca, "tern-test-ca", 7, &e) < 0 ||
        mig_certs_issue(ca, f->tls[0], "host0", 7, &e) < 0 ||
        mig_certs_issue(ca, f->tls[1], "host1", 7, &e) < 0 ||
        mig_certs_init_ca(ca2, "other-ca", 7, &e) < 0 ||
        mig_certs_issue(ca2, f->rogue, "host0", 7, &e) < 0) {
        print_message("certificates: %s\n", e.msg);
        return -1;
    }
    snprintf(f->disk, sizeof(f->disk), "%s/disk.img", f->dir);
    if (test_make_disk(f->disk, 16 << 20) < 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < f->nvm; i++)
        test_proc_kill(&f->vm[i].p);
    test_hosts_destroy(&f->hosts);
    test_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void show(struct vmm *v)
{
    char *s = test_read_text(v->serial), *e = test_read_text(v->p.err_path);
    print_message("--- %s ---\n%s--- stderr ---\n%s\n", v->serial, s, e);
    free(s);
    free(e);
}

/* Starts tern-vmm on `host` with the common options plus `args`. */
static struct vmm *start(struct fixture *f, int host, const char *const *args)
{
    assert_true(f->nvm < (int)(sizeof(f->vm) / sizeof(f->vm[0])));
    struct vmm *v = &f->vm[f->nvm];
    int id = f->nvm++;
    snprintf(v->sock, sizeof(v->sock), "%s/vm%d.sock", f->dir, id);
    snprintf(v->serial, sizeof(v->serial), "%s/vm%d.log", f->dir, id);
    char serial_opt[600];
    char *argv[40];
    test_vmm_argv(argv, 40, args, v->serial, serial_opt, sizeof(serial_opt), v->sock);
    assert_int_equal(test_proc_start_in(&v->p, &f->hosts, host, f->dir, argv), 0);
    return v;
}

static void wait_socket(struct vmm *v)
{
    for (int i = 0; i < 1000 && access(v->sock, F_OK) != 0 && !test_proc_wait(&v->p, 0); i++)
        test_sleep_ms(10);
    if (access(v->sock, F_OK) != 0) {
        show(v);
        fail_msg("no control socket");
    }
}

static json_t *call(struct vmm *v, json_t *req)
{
    json_t *reply = NULL;
    struct tern_err err;
    int rc = control_call(v->sock, req, 20000, &reply, &err);
    json_decref(req);
    if (rc < 0) {
        show(v);
        fail_msg("control: %s", err.msg);
    }
    return reply;
}

static void expect_reply(struct vmm *v, const char *cmd, const char *needle)
{
    json_t *r = call(v, json_pack("{s:s}", "cmd", cmd));
    const char *e = json_string_value(json_object_get(r, "error"));
    bool ok = json_is_true(json_object_get(r, "ok"));
    if (needle ? ok || !e || !strstr(e, needle) : !ok) {
        show(v);
        fail_msg("%s: expected %s, got %s", cmd, needle ? needle : "ok", e ? e : "ok");
    }
    json_decref(r);
}

static struct vmm *start_source(struct fixture *f, int host, const char *vcpus, const char *cmdline)
{
    const char *args[] = {"--kernel", test_build_path("testguest.elf"), "--mem", "128M",
                          "--vcpus", vcpus, "--disk", f->disk, "--cmdline", cmdline, NULL};
    struct vmm *v = start(f, host, args);
    wait_socket(v);
    if (!test_wait_for_text(v->serial, "checks=1 ", 20000)) {
        show(v);
        fail_msg("source guest did not pass a self-check");
    }
    return v;
}

static struct vmm *start_dest_gate(struct fixture *f, int host, const char *vcpus,
                                   const char *tls, const char *token, bool gate)
{
    char uri[64];
    snprintf(uri, sizeof(uri), "tls://%s:%s", f->hosts.addr[host], PORT);
    const char *args[] = {"--incoming", uri, "--tls-dir", tls, "--token", token, "--mem", "128M",
                          "--vcpus", vcpus, "--disk", f->disk, gate ? "--commit-gate" : NULL, NULL};
    struct vmm *v = start(f, host, args);
    for (int i = 0; i < 200 && !test_wait_for_text(v->p.err_path, "waiting for a migration", 0); i++)
        test_sleep_ms(10);
    test_sleep_ms(50); /* listening */
    return v;
}

static struct vmm *start_dest(struct fixture *f, int host, const char *vcpus, const char *tls,
                              const char *token)
{
    return start_dest_gate(f, host, vcpus, tls, token, false);
}

/* Asks `src` to migrate to `host` (with or without the commit gate). */
static void migrate_start(struct fixture *f, struct vmm *src, int host, const char *tls,
                          const char *token, int streams, bool gate)
{
    char uri[64];
    snprintf(uri, sizeof(uri), "tls://%s:%s", f->hosts.addr[host], PORT);
    json_t *r = call(src, json_pack("{s:s, s:s, s:s, s:s, s:i, s:b}", "cmd", "migrate", "uri", uri,
                                    "tls_dir", tls, "token", token, "streams", streams,
                                    "commit_gate", gate));
    if (!json_is_true(json_object_get(r, "ok"))) {
        show(src);
        fail_msg("migrate refused: %s", json_string_value(json_object_get(r, "error")));
    }
    json_decref(r);
}

/* Polls the source's status until the migration has an outcome (or, with
 * `phase`, reaches that phase); returns status.migration. A source that
 * stopped answering handed over: {"outcome":"succeeded"}. */
static json_t *wait_migration(struct vmm *src, const char *phase)
{
    for (int i = 0; i < 600; i++) {
        json_t *reply = NULL;
        struct tern_err err;
        json_t *req = json_pack("{s:s}", "cmd", "status");
        int rc = control_call(src->sock, req, 20000, &reply, &err);
        json_decref(req);
        if (rc < 0) /* the source ended: handed over */
            return json_pack("{s:s}", "outcome", "succeeded");
        json_t *m = json_incref(json_object_get(reply, "migration"));
        json_decref(reply);
        const char *o = json_string_value(json_object_get(m, "outcome"));
        const char *ph = json_string_value(json_object_get(m, "phase"));
        if ((o && *o) || (phase && ph && !strcmp(ph, phase)))
            return m;
        json_decref(m);
        test_sleep_ms(phase ? 20 : 100);
    }
    fail_msg("migration did not finish");
    return NULL;
}

/* Asks `src` to migrate to `host` and waits for the outcome. */
static json_t *migrate(struct fixture *f, struct vmm *src, int host, const char *tls,
                       const char *token, int streams)
{
    migrate_start(f, src, host, tls, token, streams, false);
    return wait_migration(src, NULL);
}

static long long hb(struct vmm *v, const char *field)
{
    json_t *s = call(v, json_pack("{s:s}", "cmd", "status"));
    long long n = json_integer_value(json_object_get(json_object_get(s, "heartbeat"), field));
    json_decref(s);
    return n;
}

static void assert_guest_healthy(struct vmm *v, long min_checks)
{
    for (int i = 0; i < 500 && test_last_value(v->serial, "checks=") <= min_checks; i++)
        test_sleep_ms(20);
    if (test_last_value(v->serial, "checks=") <= min_checks || test_count_text(v->serial, "FAILED") ||
        test_count_text(v->serial, "JOURNAL BAD") || test_count_text(v->serial, "EXCEPTION")) {
        show(v);
        fail_msg("guest unhealthy after migration");
    }
    assert_int_equal(hb(v, "seq_errors"), 0);
}

static void test_back_and_forth(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    const char *cmdline = "fill=32 dirty=25 hb=1000 check=300 status=200 disk=1 disk_rate=50";
    struct vmm *src = start_source(f, 0, "2", cmdline);
    int here = 0;
    const char *n_env = getenv("TERN_MIGRATION_BACK_AND_FORTH");
    int n = n_env && atoi(n_env) > 0 ? atoi(n_env) : 20;
    for (int i = 0; i < n; i++) {
        int there = 1 - here;
        long checks = test_last_value(src->serial, "checks=");
        long seq = test_last_value(src->serial, "disk_seq=");
        struct vmm *dst = start_dest(f, there, "2", f->tls[there], TOKEN);
        json_t *m_result = migrate(f, src, there, f->tls[here], TOKEN, i % 2 ? 2 : 1);
        if (strcmp(json_string_value(json_object_get(m_result, "outcome")), "succeeded")) {
            show(src);
            show(dst);
            fail_msg("migration %d: %s", i, json_string_value(json_object_get(m_result, "reason")));
        }
        assert_true(test_proc_wait(&src->p, 10000));
        assert_int_equal(src->p.status, 0);
        wait_socket(dst);
        assert_guest_healthy(dst, checks);
        assert_true(test_last_value(dst->serial, "disk_seq=") >= seq);
        json_t *st = call(dst, json_pack("{s:s}", "cmd", "status"));
        json_t *parts = json_object_get(m_result, "pause_parts_ms");
        print_message("migration %d (%d stream(s)): heartbeat gap (max so far) %.1f ms, VMM pause "
                      "%.1f ms (quiesce %.1f, last copy %.1f, state %.1f), %lld rounds, %.1f s, "
                      "%.0f MB/s\n",
                      i, i % 2 ? 2 : 1,
                      json_number_value(json_object_get(json_object_get(st, "heartbeat"), "max_gap_ms")),
                      json_number_value(json_object_get(m_result, "pause_ms")),
                      json_number_value(json_object_get(parts, "quiesce")),
                      json_number_value(json_object_get(parts, "last_copy")),
                      json_number_value(json_object_get(parts, "state")),
                      json_integer_value(json_object_get(m_result, "round")),
                      json_number_value(json_object_get(m_result, "elapsed_s")),
                      json_number_value(json_object_get(m_result, "bandwidth_MBps")));
        json_decref(m_result);
        json_decref(st);
        src = dst;
        here = there;
    }
}

/* Dirty rates 0, 25 and 100 MB/s, at 1 and 2 vCPUs: memory, heartbeats
 * and self-checks come through each. */
static void test_dirty_rates_and_vcpus(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    static const char *const rates[] = {"0", "25", "100"};
    static const char *const vcpus[] = {"1", "2"};
    for (int v = 0; v < 2; v++) {
        for (int r = 0; r < 3; r++) {
            char cmdline[128];
            snprintf(cmdline, sizeof(cmdline), "fill=48 dirty=%s hb=1000 check=300 status=200",
                     rates[r]);
            struct vmm *src = start_source(f, 0, vcpus[v], cmdline);
            long checks = test_last_value(src->serial, "checks=");
            struct vmm *dst = start_dest(f, 1, vcpus[v], f->tls[1], TOKEN);
            json_t *m = migrate(f, src, 1, f->tls[0], TOKEN, 1);
            if (strcmp(json_string_value(json_object_get(m, "outcome")), "succeeded")) {
                show(src);
                fail_msg("dirty=%s vcpus=%s: %s", rates[r], vcpus[v],
                         json_string_value(json_object_get(m, "reason")));
            }
            print_message("dirty=%s MB/s, %s vCPU(s): %lld rounds, VMM pause %.1f ms\n", rates[r],
                          vcpus[v], json_integer_value(json_object_get(m, "round")),
                          json_number_value(json_object_get(m, "pause_ms")));
            json_decref(m);
            assert_true(test_proc_wait(&src->p, 10000));
            assert_int_equal(src->p.status, 0);
            wait_socket(dst);
            assert_guest_healthy(dst, checks);
            test_proc_signal(&dst->p, SIGTERM);
            assert_true(test_proc_wait(&dst->p, 10000));
        }
    }
}

/* A refused migration leaves the source running and able to try again. */
static void expect_failure_then_success(struct fixture *f, struct vmm *src, const char *src_tls,
                                        const char *dst_tls, const char *dst_token,
                                        const char *needle)
{
    long checks = test_last_value(src->serial, "checks=");
    struct vmm *dst = start_dest(f, 1, "1", dst_tls, dst_token);
    json_t *m = migrate(f, src, 1, src_tls, TOKEN, 1);
    const char *o = json_string_value(json_object_get(m, "outcome"));
    const char *reason = json_string_value(json_object_get(m, "reason"));
    if (strcmp(o, "failed") || !strstr(reason, needle)) {
        show(dst);
        fail_msg("expected failure with '%s', got %s: %s", needle, o, reason);
    }
    json_decref(m);
    test_proc_kill(&dst->p);
    assert_guest_healthy(src, checks); /* still running here */
}

static void test_refusals_keep_source_running(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    struct vmm *src = start_source(f, 0, "1", "fill=16 dirty=10 hb=1000 check=300 status=200");
    expect_failure_then_success(f, src, f->tls[0], f->tls[1], "another-token-0123456789abcdef",
                                "token");
    expect_failure_then_success(f, src, f->rogue, f->tls[1], TOKEN, "");
    /* And then a good one works. */
    struct vmm *dst = start_dest(f, 1, "1", f->tls[1], TOKEN);
    json_t *m = migrate(f, src, 1, f->tls[0], TOKEN, 1);
    assert_string_equal(json_string_value(json_object_get(m, "outcome")), "succeeded");
    json_decref(m);
    wait_socket(dst);
    assert_guest_healthy(dst, 0);
}

static void test_config_mismatch_refused(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    struct vmm *src = start_source(f, 0, "1", "fill=16 hb=1000 check=300 status=200");
    long checks = test_last_value(src->serial, "checks=");
    struct vmm *dst = start_dest(f, 1, "2", f->tls[1], TOKEN); /* 2 vCPUs, source has 1 */
    json_t *m = migrate(f, src, 1, f->tls[0], TOKEN, 1);
    assert_string_equal(json_string_value(json_object_get(m, "outcome")), "failed");
    json_decref(m);
    assert_true(test_proc_wait(&dst->p, 10000));
    assert_int_equal(dst->p.status, VMM_EXIT_MIGRATION);
    assert_true(test_wait_for_text(dst->p.err_path, "does not match", 0));
    assert_guest_healthy(src, checks);
}

static void test_corrupt_stream_refused(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    setenv("TERN_TEST_FAULT", "src-corrupt-pages", 1);
    struct vmm *src = start_source(f, 0, "1", "fill=16 hb=1000 check=300 status=200");
    unsetenv("TERN_TEST_FAULT");
    long checks = test_last_value(src->serial, "checks=");
    struct vmm *dst = start_dest(f, 1, "1", f->tls[1], TOKEN);
    json_t *m = migrate(f, src, 1, f->tls[0], TOKEN, 1);
    assert_string_equal(json_string_value(json_object_get(m, "outcome")), "failed");
    json_decref(m);
    assert_true(test_proc_wait(&dst->p, 10000));
    assert_int_equal(dst->p.status, VMM_EXIT_MIGRATION);
    assert_true(test_wait_for_text(dst->p.err_path, "corrupt", 0));
    assert_guest_healthy(src, checks);
}

static void test_destination_dies_mid_round(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    struct vmm *src = start_source(f, 0, "1", "fill=32 dirty=10 hb=1000 check=300 status=200");
    long checks = test_last_value(src->serial, "checks=");
    setenv("TERN_TEST_FAULT", "dst-exit-in-round", 1);
    struct vmm *dst = start_dest(f, 1, "1", f->tls[1], TOKEN);
    unsetenv("TERN_TEST_FAULT");
    json_t *m = migrate(f, src, 1, f->tls[0], TOKEN, 1);
    assert_string_equal(json_string_value(json_object_get(m, "outcome")), "failed");
    json_decref(m);
    assert_true(test_proc_wait(&dst->p, 10000));
    assert_guest_healthy(src, checks);
}

/* The destination dies at `fault`: the source reports the failure and the
 * guest keeps running there. */
static void destination_dies_at(void **state, const char *fault)
{
    struct fixture *f = *state;
    struct vmm *src = start_source(f, 0, "1", "fill=16 dirty=10 hb=1000 check=300 status=200");
    long checks = test_last_value(src->serial, "checks=");
    setenv("TERN_TEST_FAULT", fault, 1);
    struct vmm *dst = start_dest(f, 1, "1", f->tls[1], TOKEN);
    unsetenv("TERN_TEST_FAULT");
    json_t *m = migrate(f, src, 1, f->tls[0], TOKEN, 1);
    if (strcmp(json_string_value(json_object_get(m, "outcome")), "failed")) {
        show(src);
        fail_msg("%s: outcome %s", fault, json_string_value(json_object_get(m, "outcome")));
    }
    json_decref(m);
    assert_true(test_proc_wait(&dst->p, 10000));
    assert_int_equal(test_count_text(dst->serial, "tern-guest"), 0); /* never ran there */
    assert_guest_healthy(src, checks);
}

static void test_destination_dies_after_hello(void **state)
{
    test_require_kvm();
    destination_dies_at(state, "dst-exit-after-hello");
}

static void test_destination_dies_before_ready(void **state)
{
    test_require_kvm();
    destination_dies_at(state, "dst-exit-before-ready");
}

/* COMMIT went out but RUNNING never came: the source must not resume (the
 * destination may be running the guest); it stays paused, outcome unknown. */
static void test_unconfirmed_commit_keeps_source_paused(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    struct vmm *src = start_source(f, 0, "1", "fill=16 hb=1000 check=300 status=200");
    setenv("TERN_TEST_FAULT", "dst-exit-after-commit", 1);
    struct vmm *dst = start_dest(f, 1, "1", f->tls[1], TOKEN);
    unsetenv("TERN_TEST_FAULT");
    json_t *m = migrate(f, src, 1, f->tls[0], TOKEN, 1);
    assert_string_equal(json_string_value(json_object_get(m, "outcome")), "unknown");
    json_decref(m);
    assert_true(test_proc_wait(&dst->p, 10000));
    json_t *s = call(src, json_pack("{s:s}", "cmd", "status"));
    assert_string_equal(json_string_value(json_object_get(s, "state")), "paused");
    json_decref(s);
    long long a = hb(src, "count");
    test_sleep_ms(300);
    assert_int_equal(hb(src, "count"), a); /* not running */
    /* Nor can an operator resume it: the destination may run it. */
    expect_reply(src, "resume", "held by the migration");
    test_sleep_ms(100);
    assert_int_equal(hb(src, "count"), a);
    /* And it refuses to migrate again. */
    char uri[64];
    snprintf(uri, sizeof(uri), "tls://%s:%s", f->hosts.addr[1], PORT);
    json_t *r = call(src, json_pack("{s:s, s:s, s:s, s:s}", "cmd", "migrate", "uri", uri, "tls_dir",
                                    f->tls[0], "token", TOKEN));
    assert_true(json_is_false(json_object_get(r, "ok")));
    json_decref(r);
}

/* An operator cancels while rounds are running: the guest keeps running
 * here and the destination gives up without running it. */
static void test_cancel_mid_migration(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    /* Dirtying faster than one throttled core sends keeps it in rounds. */
    struct vmm *src = start_source(f, 0, "1", "fill=96 dirty=400 hb=1000 check=300 status=200");
    long checks = test_last_value(src->serial, "checks=");
    struct vmm *dst = start_dest(f, 1, "1", f->tls[1], TOKEN);
    char uri[64];
    snprintf(uri, sizeof(uri), "tls://%s:%s", f->hosts.addr[1], PORT);
    json_decref(call(src, json_pack("{s:s, s:s, s:s, s:s, s:f}", "cmd", "migrate", "uri", uri,
                                    "tls_dir", f->tls[0], "token", TOKEN, "downtime_ms", 1.0)));
    /* Wait until it is sending rounds, then cancel. */
    for (int i = 0; i < 300; i++) {
        json_t *st = call(src, json_pack("{s:s}", "cmd", "status"));
        const char *phase = json_string_value(json_object_get(json_object_get(st, "migration"), "phase"));
        bool in_round = phase && !strncmp(phase, "round", 5);
        json_decref(st);
        if (in_round)
            break;
        test_sleep_ms(20);
    }
    json_t *r = call(src, json_pack("{s:s}", "cmd", "migrate-cancel"));
    if (!json_is_true(json_object_get(r, "ok"))) {
        /* It may have converged already; then there is nothing to check. */
        print_message("cancel refused: %s\n", json_string_value(json_object_get(r, "error")));
        json_decref(r);
        skip();
    }
    json_decref(r);
    json_t *m = NULL;
    for (int i = 0; i < 300 && !m; i++) {
        json_t *st = call(src, json_pack("{s:s}", "cmd", "status"));
        json_t *mg = json_object_get(st, "migration");
        const char *o = json_string_value(json_object_get(mg, "outcome"));
        if (o && *o)
            m = json_incref(mg);
        json_decref(st);
        test_sleep_ms(50);
    }
    assert_non_null(m);
    assert_string_equal(json_string_value(json_object_get(m, "outcome")), "cancelled");
    json_decref(m);
    assert_true(test_proc_wait(&dst->p, 15000));
    assert_int_equal(dst->p.status, VMM_EXIT_MIGRATION);
    assert_guest_healthy(src, checks);
}

static void test_source_dies_before_commit(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    setenv("TERN_TEST_FAULT", "src-exit-before-commit", 1);
    struct vmm *src = start_source(f, 0, "1", "fill=16 hb=1000 check=300 status=200");
    unsetenv("TERN_TEST_FAULT");
    struct vmm *dst = start_dest(f, 1, "1", f->tls[1], TOKEN);
    char uri[64];
    snprintf(uri, sizeof(uri), "tls://%s:%s", f->hosts.addr[1], PORT);
    json_decref(call(src, json_pack("{s:s, s:s, s:s, s:s}", "cmd", "migrate", "uri", uri,
                                    "tls_dir", f->tls[0], "token", TOKEN)));
    assert_true(test_proc_wait(&src->p, 30000));
    assert_int_equal(src->p.status, 99); /* the fault */
    /* The destination got everything but COMMIT: it must not run the guest. */
    assert_true(test_proc_wait(&dst->p, 60000));
    assert_int_equal(dst->p.status, VMM_EXIT_MIGRATION);
    assert_int_equal(test_count_text(dst->serial, "tern-guest"), 0);
}


/* ---- the commit gate: the agents decide the handover ---- */

/* Sends {"cmd":cmd}; expects ok (needle NULL) or an error containing needle. */

static const char *jstr(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "";
}

/* status.incoming of a destination still receiving; NULL once the guest
 * runs there (then the status is the ordinary one). */
static json_t *incoming_status(struct vmm *v)
{
    json_t *s = call(v, json_pack("{s:s}", "cmd", "status"));
    json_t *in = json_incref(json_object_get(s, "incoming"));
    assert_string_equal(jstr(s, "state"), in ? "incoming" : "running");
    json_decref(s);
    return in;
}

/* Polls until `v`'s status.migration (source) or status.incoming
 * (destination) has a non-empty string at `key`; returns that object. */
static json_t *wait_field(struct vmm *v, const char *obj, const char *key)
{
    for (int i = 0; i < 500; i++) {
        json_t *s = call(v, json_pack("{s:s}", "cmd", "status"));
        json_t *o = json_incref(json_object_get(s, obj));
        json_decref(s);
        if (o && *jstr(o, key))
            return o;
        json_decref(o);
        test_sleep_ms(10);
    }
    show(v);
    fail_msg("status.%s.%s never appeared", obj, key);
    return NULL;
}

/* Starts a gated migration src -> host 1 (the destination started with
 * --commit-gate) and waits for phase ready: everything is over there, the
 * guest is paused here, both sides wait for their agent. */
static void gated_to_ready(struct fixture *f, struct vmm *src, struct vmm *dst)
{
    migrate_start(f, src, 1, f->tls[0], TOKEN, 1, true);
    json_t *m = wait_migration(src, "ready");
    if (strcmp(jstr(m, "phase"), "ready")) {
        show(src);
        show(dst);
        fail_msg("gated migration ended before phase ready: %s: %s", jstr(m, "outcome"),
                 jstr(m, "reason"));
    }
    assert_true(json_is_true(json_object_get(m, "commit_gate")));
    json_decref(m);
    json_t *in = NULL;
    for (int i = 0; i < 200; i++) {
        json_decref(in);
        in = incoming_status(dst);
        if (in && !strcmp(jstr(in, "phase"), "ready"))
            break;
        test_sleep_ms(10);
    }
    assert_non_null(in);
    assert_string_equal(jstr(in, "phase"), "ready");
    assert_true(json_integer_value(json_object_get(in, "bytes_received")) > 16 << 20);
    json_decref(in);
}

static void assert_paused(struct vmm *v)
{
    json_t *s = call(v, json_pack("{s:s}", "cmd", "status"));
    assert_string_equal(jstr(s, "state"), "paused");
    json_decref(s);
    long long a = hb(v, "count");
    test_sleep_ms(300);
    assert_int_equal(hb(v, "count"), a); /* no heartbeat: the guest does not run */
}

static void assert_outcome(json_t *m, const char *outcome, const char *reason)
{
    if (strcmp(jstr(m, "outcome"), outcome) || (reason && !strstr(jstr(m, "reason"), reason)))
        fail_msg("expected outcome %s (%s), got %s: %s", outcome, reason ? reason : "",
                 jstr(m, "outcome"), jstr(m, "reason"));
    json_decref(m);
}

static void assert_never_ran(struct vmm *dst)
{
    assert_true(test_proc_wait(&dst->p, 10000));
    assert_int_equal(dst->p.status, VMM_EXIT_MIGRATION);
    assert_int_equal(test_count_text(dst->serial, "tern-guest"), 0);
}

/* Aborts at phase ready: the destination's agent first, then the source's
 * (the guest resumes there); then the other way round (the destination
 * leaves on the source's ERROR by itself); then an ordinary migration of
 * the same VM succeeds. */
static void test_gate_abort(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    struct vmm *src = start_source(f, 0, "1", "fill=16 dirty=10 hb=1000 check=300 status=200");
    expect_reply(src, "migrate-commit", "no migration has run");
    long checks = test_last_value(src->serial, "checks=");

    struct vmm *dst = start_dest_gate(f, 1, "1", f->tls[1], TOKEN, true);
    gated_to_ready(f, src, dst);
    assert_paused(src);
    /* The migration holds the paused guest: an operator's resume now would
     * run it here while the destination holds its complete state. */
    expect_reply(src, "pause", "a migration is running");
    expect_reply(src, "resume", "held by the migration");
    assert_paused(src);
    json_t *held = call(src, json_pack("{s:s}", "cmd", "status"));
    assert_string_equal(json_string_value(json_array_get(json_object_get(held, "held_by"), 0)),
                        "migration");
    json_decref(held);
    expect_reply(dst, "pause", "receiving an incoming migration");
    expect_reply(dst, "migrate-abort", NULL);
    assert_never_ran(dst);
    /* The source notes the destination's ERROR and still waits for its agent. */
    json_t *m = wait_field(src, "migration", "link_error");
    assert_string_equal(jstr(m, "phase"), "ready");
    assert_non_null(strstr(jstr(m, "link_error"), "aborted by the agent"));
    json_decref(m);
    assert_paused(src);
    expect_reply(src, "migrate-abort", NULL);
    assert_outcome(wait_migration(src, NULL), "cancelled", "aborted by the agent");
    assert_guest_healthy(src, checks); /* resumed: self-checks and heartbeats go on */
    expect_reply(src, "migrate-commit", "the migration is over");

    checks = test_last_value(src->serial, "checks=");
    dst = start_dest_gate(f, 1, "1", f->tls[1], TOKEN, true);
    gated_to_ready(f, src, dst);
    expect_reply(src, "migrate-cancel", NULL); /* in phase ready: the same as abort */
    assert_outcome(wait_migration(src, NULL), "cancelled", "aborted by the agent");
    assert_never_ran(dst);
    assert_true(test_wait_for_text(dst->p.err_path, "the source gave up", 0));
    assert_guest_healthy(src, checks);

    dst = start_dest(f, 1, "1", f->tls[1], TOKEN);
    assert_outcome(migrate(f, src, 1, f->tls[0], TOKEN, 1), "succeeded", NULL);
    assert_true(test_proc_wait(&src->p, 10000));
    assert_int_equal(src->p.status, 0);
    wait_socket(dst);
    assert_guest_healthy(dst, checks);
}

/* The source dies at phase ready: the destination keeps the complete state
 * and waits; its agent's migrate-commit runs the guest there, continuing
 * where it stopped (heartbeat sequence, disk journal, self-checks). */
static void test_gate_source_dies_agent_commits(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    struct vmm *src = start_source(f, 0, "1",
                                   "fill=16 dirty=10 hb=1000 check=300 status=200 disk=1 disk_rate=50");
    long checks = test_last_value(src->serial, "checks=");
    long seq = test_last_value(src->serial, "disk_seq=");
    struct vmm *dst = start_dest_gate(f, 1, "1", f->tls[1], TOKEN, true);
    gated_to_ready(f, src, dst);
    long long last = hb(src, "last_seq");
    test_proc_kill(&src->p);
    json_t *in = wait_field(dst, "incoming", "link_error");
    assert_string_equal(jstr(in, "phase"), "ready");
    json_decref(in);
    test_sleep_ms(200);
    assert_false(test_proc_wait(&dst->p, 0)); /* still there, waiting */
    expect_reply(dst, "migrate-commit", NULL);
    for (int i = 0; i < 500; i++) {
        json_t *st = incoming_status(dst);
        json_decref(st);
        if (!st)
            break;
        test_sleep_ms(10);
    }
    assert_guest_healthy(dst, checks);
    assert_true(hb(dst, "last_seq") > last);
    assert_true(test_last_value(dst->serial, "disk_seq=") >= seq);
    expect_reply(dst, "migrate-commit", NULL); /* repeated: harmless */
}

/* A {"cmd":"watch"} connection: the reply, then event lines. */
static int watch(struct vmm *v)
{
    struct sockaddr_un sa;
    struct tern_err err;
    if (unix_addr_fill(&sa, v->sock, "control socket", &err) < 0)
        fail_msg("%s", err.msg);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    static const char req[] = "{\"cmd\":\"watch\"}\n";
    assert_int_equal(send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL), (ssize_t)(sizeof(req) - 1));
    return fd;
}

/* Reads a watch connection until a line containing `needle` (true) or
 * EOF / 10 s of silence (false). */
static bool watch_until(int fd, const char *needle)
{
    static char buf[1 << 16];
    size_t len = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10000) <= 0)
            return false;
        ssize_t r = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
        if (r <= 0)
            return false;
        len += (size_t)r;
        buf[len] = 0;
        if (strstr(buf, needle))
            return true;
        char *nl = strrchr(buf, '\n'); /* keep only an unfinished line */
        if (nl) {
            len = strlen(nl + 1);
            memmove(buf, nl + 1, len + 1);
        }
        if (len >= sizeof(buf) - 1)
            len = 0;
    }
}

/* migrate-commit on the source at phase ready: COMMIT goes out, but the
 * destination runs the guest only on its own agent's migrate-commit (the
 * source's side may have committed in a partition the destination's agent
 * never saw); then RUNNING, done. Watchers hear of it without asking: the
 * source's phases up to ready, the destination's guest running. */
static void test_gate_commit_on_source(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    struct vmm *src = start_source(f, 0, "1", "fill=16 dirty=25 hb=1000 check=300 status=200");
    long checks = test_last_value(src->serial, "checks=");
    struct vmm *dst = start_dest_gate(f, 1, "1", f->tls[1], TOKEN, true);
    wait_socket(dst);
    expect_reply(dst, "migrate-commit", "has not received the complete state yet");
    int src_watch = watch(src), dst_watch = watch(dst);
    assert_true(watch_until(src_watch, "\"watching\":true"));
    assert_true(watch_until(dst_watch, "\"watching\":true"));
    gated_to_ready(f, src, dst);
    assert_true(watch_until(src_watch, "\"phase\":\"ready\""));
    close(src_watch);
    expect_reply(src, "migrate-commit", NULL);
    json_t *in = NULL;
    for (int i = 0; i < 500; i++) {
        json_decref(in);
        in = incoming_status(dst);
        assert_non_null(in); /* still incoming: it does not run on the source's word */
        if (json_is_true(json_object_get(in, "source_committed")))
            break;
        test_sleep_ms(10);
    }
    assert_true(json_is_true(json_object_get(in, "source_committed")));
    assert_string_equal(jstr(in, "phase"), "ready");
    json_decref(in);
    test_sleep_ms(300);
    in = incoming_status(dst);
    assert_non_null(in); /* a while later: still waiting for its own agent */
    json_decref(in);
    expect_reply(dst, "migrate-commit", NULL);
    assert_true(watch_until(dst_watch, "\"event\":\"running\""));
    close(dst_watch);
    assert_outcome(wait_migration(src, NULL), "succeeded", NULL);
    assert_true(test_proc_wait(&src->p, 10000));
    assert_int_equal(src->p.status, 0);
    assert_guest_healthy(dst, checks);
    json_t *st = call(dst, json_pack("{s:s}", "cmd", "status"));
    assert_string_equal(jstr(st, "state"), "running");
    assert_true(json_is_number(json_object_get(json_object_get(st, "heartbeat"), "handover_gap_ms")));
    json_decref(st);
    expect_reply(dst, "migrate-commit", NULL); /* repeated: harmless */
    expect_reply(dst, "migrate-abort", "committed here");
}

/* A destination answers its control socket from the start: status while
 * waiting and receiving, refusals, stop; a gated source and an ungated
 * destination do not agree. */
static void test_incoming_status(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    struct vmm *dst = start_dest_gate(f, 1, "1", f->tls[1], TOKEN, true);
    wait_socket(dst);
    json_t *in = incoming_status(dst);
    assert_non_null(in);
    assert_string_equal(jstr(in, "phase"), "waiting");
    assert_int_equal(json_integer_value(json_object_get(in, "bytes_received")), 0);
    assert_true(json_is_true(json_object_get(in, "commit_gate")));
    json_decref(in);
    expect_reply(dst, "migrate-commit", "has not received the complete state yet");
    expect_reply(dst, "save", "receiving an incoming migration");
    expect_reply(dst, "migrate", "receiving an incoming migration");
    expect_reply(dst, "stop", NULL);
    assert_never_ran(dst);

    struct vmm *src = start_source(f, 0, "1", "fill=96 dirty=25 hb=1000 check=300 status=200");
    long checks = test_last_value(src->serial, "checks=");
    dst = start_dest(f, 1, "1", f->tls[1], TOKEN);
    migrate_start(f, src, 1, f->tls[0], TOKEN, 1, true);
    assert_outcome(wait_migration(src, NULL), "failed", "--commit-gate differs");
    assert_never_ran(dst);

    dst = start_dest(f, 1, "1", f->tls[1], TOKEN);
    wait_socket(dst);
    expect_reply(dst, "migrate-commit", "without --commit-gate");
    migrate_start(f, src, 1, f->tls[0], TOKEN, 1, false);
    long long seen[64];
    int n = 0;
    for (int i = 0; i < 5000; i++) {
        in = incoming_status(dst);
        if (!in)
            break;
        long long b = json_integer_value(json_object_get(in, "bytes_received"));
        if (!strcmp(jstr(in, "phase"), "receiving") && b > 0 && n < 64 && (n == 0 || b > seen[n - 1]))
            seen[n++] = b;
        assert_true(n == 0 || b >= seen[n - 1]);
        json_decref(in);
        test_sleep_ms(2);
    }
    print_message("incoming: %d distinct bytes_received values while receiving, last %lld\n", n,
                  n ? seen[n - 1] : 0);
    assert_true(n >= 2);
    assert_outcome(wait_migration(src, NULL), "succeeded", NULL);
    assert_guest_healthy(dst, checks);
}

/* The destination's link goes down in the middle of a round: the source
 * notices (a send stalls past timeout_ms), keeps the guest running, and
 * migrates it once the link is back. */
static void test_link_cut_mid_round(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    /* Dirtying faster than it can be sent keeps it in rounds (as in
     * test_cancel_mid_migration). */
    struct vmm *src = start_source(f, 0, "1", "fill=96 dirty=400 hb=1000 check=300 status=200");
    long checks = test_last_value(src->serial, "checks=");
    struct vmm *dst = start_dest(f, 1, "1", f->tls[1], TOKEN);
    char uri[64];
    snprintf(uri, sizeof(uri), "tls://%s:%s", f->hosts.addr[1], PORT);
    json_t *r = call(src, json_pack("{s:s, s:s, s:s, s:s, s:f, s:i, s:i}", "cmd", "migrate", "uri",
                                    uri, "tls_dir", f->tls[0], "token", TOKEN, "downtime_ms", 1.0,
                                    "timeout_ms", 2000, "streams", 2));
    assert_true(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
    json_t *m = NULL;
    for (int i = 0; i < 500; i++) {
        json_decref(m);
        m = call(src, json_pack("{s:s}", "cmd", "status"));
        const char *phase = jstr(json_object_get(m, "migration"), "phase");
        if (!strncmp(phase, "round ", 6) && strcmp(phase, "round 0"))
            break;
        test_sleep_ms(5);
    }
    const char *phase = jstr(json_object_get(m, "migration"), "phase");
    if (strncmp(phase, "round ", 6)) {
        show(src);
        fail_msg("never saw a round after the first (phase %s)", phase);
    }
    print_message("cutting the destination's link in phase %s\n", phase);
    json_decref(m);
    assert_int_equal(test_host_link(&f->hosts, 1, false), 0);
    m = wait_migration(src, NULL);
    print_message("source: %s: %s\n", jstr(m, "outcome"), jstr(m, "reason"));
    assert_outcome(m, "failed", NULL);
    assert_guest_healthy(src, checks);
    json_t *st = call(src, json_pack("{s:s}", "cmd", "status"));
    assert_string_equal(jstr(st, "state"), "running");
    json_decref(st);

    assert_int_equal(test_host_link(&f->hosts, 1, true), 0);
    test_proc_kill(&dst->p); /* it would give up by itself after 30 s of silence */
    assert_int_equal(test_count_text(dst->serial, "tern-guest"), 0);
    checks = test_last_value(src->serial, "checks=");
    dst = start_dest(f, 1, "1", f->tls[1], TOKEN);
    m = migrate(f, src, 1, f->tls[0], TOKEN, 2);
    print_message("after the link came back: %s in %.1f s, %lld rounds, throttle %lld %%\n",
                  jstr(m, "outcome"), json_number_value(json_object_get(m, "elapsed_s")),
                  json_integer_value(json_object_get(m, "round")),
                  json_integer_value(json_object_get(m, "throttle_percent")));
    assert_outcome(m, "succeeded", NULL);
    assert_true(test_proc_wait(&src->p, 10000));
    assert_int_equal(src->p.status, 0);
    wait_socket(dst);
    assert_guest_healthy(dst, checks);
}

int main(void)
{
    if (geteuid() != 0) {
        print_message("migration tests need root (network namespaces)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_back_and_forth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dirty_rates_and_vcpus, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals_keep_source_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_mismatch_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_stream_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destination_dies_mid_round, setup, teardown),
        cmocka_unit_test_setup_teardown(test_source_dies_before_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destination_dies_after_hello, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destination_dies_before_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unconfirmed_commit_keeps_source_paused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_mid_migration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gate_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gate_source_dies_agent_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gate_commit_on_source, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incoming_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_link_cut_mid_round, setup, teardown),
    };
    /* TERN_TEST_FILTER=test_gate* runs only the matching tests. */
    if (getenv("TERN_TEST_FILTER"))
        cmocka_set_test_filter(getenv("TERN_TEST_FILTER"));
    return cmocka_run_group_tests_name("migration", tests, NULL, NULL);
}
