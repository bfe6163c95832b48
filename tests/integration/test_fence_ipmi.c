/* Fencing for real: Debian's fence_ipmilan, run through fencing/ on a
 * common/loop from inside test host h1's network namespace, against
 * OpenIPMI's ipmi_sim acting as the BMC of each of three test hosts
 * (tests/support/bmc.h: its own namespace on the test bridge at
 * 10.77.0.20I, outside the host's cgroup; its chassis control kills the
 * host's cgroup). No corosync, no KVM: namespaces and cgroups only.
 *
 *   - off: h2's long-running process is gone afterwards, done said ok, and
 *     status then says off (exit 2) while h3's says on;
 *   - a wrong password fails with the agent's message, h3 untouched;
 *   - a BMC that does not answer (its ipmi_sim stopped) fails within the
 *     timeout (+ the SIGKILL grace);
 *   - two levels: the first (wrong password) fails, the second succeeds.
 *
 * The timings are printed (stderr) for docs/fencing.md. With
 * TERN_FENCE_MEASURE=1 it also times the slow settings (about 25 s more):
 * lanplus=1 without cipher=3 (ipmitool asks for the cipher suites first),
 * and plain IPMI 1.5 with the right and a wrong password. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/cgroup.h"
#include "fencing/fence.h"
#include "tests/support/bmc.h"
#include "tests/support/cluster.h"
#include "tests/support/proc.h"

#define HOSTS 3

static struct {
    char *dir;
    struct test_cluster c;
    struct test_bmc bmc[HOSTS + 1];
    struct test_proc work[HOSTS + 1]; /* a long-running process per host (2, 3) */
    struct fence_config *cfg;
    int root_netns;
    /* the per-test loop and results */
    struct loop *l;
    int done;
    struct fence_result res;
    int op_done;
    bool op_ok;
    struct fence_result runs[8];
    size_t nr_runs;
    /* timings for the closing summary (ms) */
    double t_off, t_off_op, t_status_off, t_status_on, t_wrong, t_down, t_levels;
    double t_lanplus, t_lan15, t_lan15_wrong; /* TERN_FENCE_MEASURE=1 */
} S = {.root_netns = -1};

static void conf(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conf(const char *key, const char *fmt, ...)
{
    char value[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(value, sizeof(value), fmt, ap);
    va_end(ap);
    struct tern_err err;
    if (fence_config_set(S.cfg, key, value, "test line", 1, &err) != 0) {
        fprintf(stderr, "%s = %s: %s\n", key, value, err.msg);
        abort();
    }
}

static int write_secret(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", S.dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

static bool host_powered(int i)
{
    struct tern_err err;
    return cgroup_populated(S.c.cgroup[i], &err) == 1;
}

static int group_teardown(void **state);

static int setup_hosts(void)
{
    char err[1024];
    if (geteuid() != 0) {
        fprintf(stderr, "test_fence_ipmi needs root (namespaces, cgroups)\n");
        return -1;
    }
    static const char *const tools[] = {"/usr/sbin/fence_ipmilan", "/usr/bin/ipmi_sim",
                                        "/usr/bin/ipmitool"};
    for (size_t i = 0; i < sizeof(tools) / sizeof(tools[0]); i++)
        if (access(tools[i], X_OK) != 0) {
            fprintf(stderr, "%s is missing: make deps installs fence-agents, openipmi, ipmitool\n",
                    tools[i]);
            return -1;
        }
    S.dir = test_make_tmpdir("fence-ipmi");
    S.cfg = malloc(sizeof(*S.cfg));
    if (!S.dir || !S.cfg)
        return -1;
    char cdir[512];
    snprintf(cdir, sizeof(cdir), "%s/hosts", S.dir);
    if (test_cluster_create(&S.c, HOSTS, cdir, err, sizeof(err)) < 0) {
        fprintf(stderr, "test hosts: %s\n", err);
        return -1;
    }
    fence_config_defaults(S.cfg);
    for (int i = 1; i <= HOSTS; i++) {
        char pw[32], name[32], text[40];
        snprintf(pw, sizeof(pw), "h%dsecret%d", i, (int)getpid() % 1000);
        if (test_bmc_start(&S.bmc[i], &S.c, i, "admin", pw, err, sizeof(err)) < 0) {
            fprintf(stderr, "BMC of h%d: %s\n", i, err);
            return -1;
        }
        snprintf(name, sizeof(name), "h%d-bmc.pw", i);
        snprintf(text, sizeof(text), "%s\n", pw);
        if (write_secret(name, text) < 0)
            return -1;
        conf("fence_device",
             "h%d-bmc fence_ipmilan ip=%s username=admin password_file=%s/%s lanplus=1 cipher=3 "
             "power_wait=0",
             i, S.bmc[i].addr, S.dir, name);
        conf("fence_device",
             "h%d-bmc-badpw fence_ipmilan ip=%s username=admin password_file=%s/wrong.pw "
             "lanplus=1 cipher=3 power_wait=0",
             i, S.bmc[i].addr, S.dir);
    }
    if (write_secret("wrong.pw", "not-the-password\n") < 0)
        return -1;
    conf("fence_device", "h1-bmc-lanplus-only fence_ipmilan ip=%s username=admin "
                         "password_file=%s/h1-bmc.pw lanplus=1 power_wait=0",
         S.bmc[1].addr, S.dir);
    conf("fence_device", "h1-bmc-lan15 fence_ipmilan ip=%s username=admin "
                         "password_file=%s/h1-bmc.pw power_wait=0",
         S.bmc[1].addr, S.dir);
    conf("fence_device", "h1-bmc-lan15-badpw fence_ipmilan ip=%s username=admin "
                         "password_file=%s/wrong.pw power_wait=0",
         S.bmc[1].addr, S.dir);
    conf("fence_level", "h1 1 h1-bmc");
    conf("fence_level", "h2 1 h2-bmc");
    conf("fence_level", "h3 1 h3-bmc-badpw");
    conf("fence_level", "h3 2 h3-bmc");
    struct tern_err te;
    if (fence_config_finish(S.cfg, "test", &te) < 0 || fence_config_check(S.cfg, &te) < 0) {
        fprintf(stderr, "fence config: %s\n", te.msg);
        return -1;
    }
    /* The hosts' work: what a power-off must end. */
    for (int i = 2; i <= HOSTS; i++) {
        char *argv[] = {"sleep", "3600", NULL};
        if (test_cluster_spawn(&S.c, i, argv, S.dir, &S.work[i], err, sizeof(err)) < 0) {
            fprintf(stderr, "h%d: %s\n", i, err);
            return -1;
        }
        for (int k = 0; k < 200 && !host_powered(i); k++)
            test_sleep_ms(10);
        if (!host_powered(i)) {
            fprintf(stderr, "h%d's process did not start\n", i);
            return -1;
        }
    }
    S.root_netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    return S.root_netns >= 0 ? 0 : -1;
}

/* Everything made so far is removed when a step fails. */
static int group_setup(void **state)
{
    if (setup_hosts() == 0)
        return 0;
    group_teardown(state);
    return -1;
}

static int group_teardown(void **state)
{
    (void)state;
    for (int i = 1; i <= HOSTS; i++) {
        test_bmc_stop(&S.bmc[i]);
        if (S.work[i].pid > 0)
            test_proc_kill(&S.work[i]);
    }
    test_cluster_destroy(&S.c);
    if (S.root_netns >= 0)
        close(S.root_netns);
    test_rmtree(S.dir);
    free(S.dir);
    free(S.cfg);
    S.dir = NULL;
    S.cfg = NULL;
    if (S.t_off_op == 0)
        return 0;
    fprintf(stderr,
            "fence timings (fence_ipmilan lanplus=1 cipher=3 power_wait=0 against ipmi_sim):\n"
            "  off %.0f ms (the whole fence_op %.0f ms); status: off %.0f ms, on %.0f ms\n"
            "  wrong password: failed in %.0f ms; BMC not answering: failed in %.0f ms "
            "(fence_timeout 4 s)\n"
            "  two levels, the first failing: %.0f ms\n",
            S.t_off, S.t_off_op, S.t_status_off, S.t_status_on, S.t_wrong, S.t_down, S.t_levels);
    if (S.t_lanplus > 0)
        fprintf(stderr,
                "  lanplus=1 without cipher=3: status in %.0f ms; IPMI 1.5 (no lanplus): status "
                "in %.0f ms, a wrong password failed in %.0f ms\n",
                S.t_lanplus, S.t_lan15, S.t_lan15_wrong);
    return 0;
}

/* Each test: a fresh loop, run from inside h1's network namespace (where
 * ternd on h1 would run the agents). */
static int setup(void **state)
{
    (void)state;
    struct tern_err err;
    if (loop_new(&S.l, &err) < 0)
        return -1;
    char path[128];
    snprintf(path, sizeof(path), "/run/netns/%s", test_cluster_netns(&S.c, 1));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = setns(fd, CLONE_NEWNET);
    close(fd);
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 20; i++)
        loop_run_once(S.l, 10, NULL);
    loop_free(S.l);
    S.l = NULL;
    if (setns(S.root_netns, CLONE_NEWNET) < 0)
        return -1;
    char err[256];
    for (int i = 1; i <= HOSTS; i++)
        if (S.bmc[i].paused && test_bmc_pause(&S.bmc[i], false, err, sizeof(err)) < 0)
            fprintf(stderr, "%s\n", err);
    return 0;
}

static void on_done(void *opaque, const struct fence_result *r)
{
    (void)opaque;
    S.done++;
    S.res = *r;
}

static void on_op_done(void *opaque, bool ok, const struct fence_result *runs, size_t n)
{
    (void)opaque;
    S.op_done++;
    S.op_ok = ok;
    S.nr_runs = n < 8 ? n : 8;
    memcpy(S.runs, runs, S.nr_runs * sizeof(runs[0]));
}

static void run_until(int *flag, int timeout_ms)
{
    struct tern_err err;
    for (int64_t end = loop_now_ms() + timeout_ms; !*flag && loop_now_ms() < end;)
        assert_int_equal(loop_run_once(S.l, 100, &err), 0);
    if (!*flag)
        fail_msg("no result within %d ms", timeout_ms);
}

static double device_run(const struct fence_config *c, const char *device, const char *action)
{
    S.done = 0;
    struct tern_err err;
    int64_t t0 = loop_now_ms();
    if (fence_device_run(S.l, c, device, action, on_done, NULL, NULL, &err) < 0)
        fail_msg("%s", err.msg);
    run_until(&S.done, 60000);
    return (double)(loop_now_ms() - t0);
}

static double op_run(const struct fence_config *c, const char *host, const char *action)
{
    S.op_done = 0;
    struct tern_err err;
    int64_t t0 = loop_now_ms();
    if (fence_op_start(S.l, c, host, action, on_op_done, NULL, NULL, &err) < 0)
        fail_msg("%s", err.msg);
    run_until(&S.op_done, 60000);
    return (double)(loop_now_ms() - t0);
}

static void expect_output(const struct fence_result *r, const char *needle)
{
    if (!strstr(r->output, needle))
        fail_msg("%s: output lacks '%s':\n%s", r->device, needle, r->output);
}

static void off_powers_the_host_off(void **state)
{
    (void)state;
    assert_true(host_powered(2));
    S.t_off_op = op_run(S.cfg, "h2", "off");
    if (!S.op_ok)
        fail_msg("fence of h2 failed: %s", S.nr_runs ? S.runs[0].output : "(no run)");
    assert_int_equal(S.nr_runs, 1);
    assert_string_equal(S.runs[0].device, "h2-bmc");
    assert_true(S.runs[0].ok);
    assert_int_equal(S.runs[0].exit_status, 0);
    expect_output(&S.runs[0], "Success: Powered OFF");
    S.t_off = S.runs[0].ms;
    /* The BMC did it, through its chassis control, and the host is off. */
    assert_true(test_bmc_chassis_calls(&S.bmc[2], "set power 0") >= 1);
    assert_false(host_powered(2));
    assert_int_equal(test_proc_wait(&S.work[2], 2000), 1);
    assert_int_equal(S.work[2].status, 128 + SIGKILL);

    /* status: off (fence-agents exit 2), and the other hosts' on. */
    S.t_status_off = device_run(S.cfg, "h2-bmc", "status");
    assert_false(S.res.ok);
    assert_int_equal(S.res.exit_status, FENCE_STATUS_OFF);
    expect_output(&S.res, "Status: OFF");
    S.t_status_on = device_run(S.cfg, "h3-bmc", "status");
    assert_true(S.res.ok);
    expect_output(&S.res, "Status: ON");
    assert_true(host_powered(3));
    if (getenv("TERN_FENCE_MEASURE")) {
        /* h1 runs nothing: its BMC says off. */
        device_run(S.cfg, "h1-bmc-lanplus-only", "status");
        S.t_lanplus = S.res.ms;
        assert_int_equal(S.res.exit_status, FENCE_STATUS_OFF);
        device_run(S.cfg, "h1-bmc-lan15", "status");
        S.t_lan15 = S.res.ms;
        assert_int_equal(S.res.exit_status, FENCE_STATUS_OFF);
        device_run(S.cfg, "h1-bmc-lan15-badpw", "status");
        S.t_lan15_wrong = S.res.ms;
        assert_false(S.res.ok);
        assert_int_not_equal(S.res.exit_status, FENCE_STATUS_OFF);
    }
}

static void wrong_password_fails(void **state)
{
    (void)state;
    assert_true(host_powered(3));
    int sets = test_bmc_chassis_calls(&S.bmc[3], "set power");
    device_run(S.cfg, "h3-bmc-badpw", "off");
    S.t_wrong = S.res.ms;
    assert_false(S.res.ok);
    assert_false(S.res.timed_out);
    assert_true(S.res.exit_status > 0);
    /* The agent's own words reach the operator. */
    expect_output(&S.res, "Failed: Unable to obtain correct plug status or plug is not available");
    assert_true(host_powered(3));
    assert_int_equal(test_bmc_chassis_calls(&S.bmc[3], "set power"), sets);
}

static void bmc_down_fails_within_the_timeout(void **state)
{
    (void)state;
    char err[256];
    struct fence_config *c = malloc(sizeof(*c));
    assert_non_null(c);
    memcpy(c, S.cfg, sizeof(*c));
    c->timeout_ms = 4000;
    if (test_bmc_pause(&S.bmc[1], true, err, sizeof(err)) < 0) {
        free(c);
        fail_msg("%s", err);
    }
    S.t_down = op_run(c, "h1", "off");
    free(c);
    assert_false(S.op_ok);
    assert_int_equal(S.nr_runs, 1);
    assert_true(S.runs[0].timed_out);
    assert_int_equal(S.runs[0].exit_status, -1);
    expect_output(&S.runs[0], "no result within 4000 ms");
    /* The timeout, then at most the SIGKILL grace (plus scheduling). */
    assert_true(S.t_down >= 4000);
    assert_true(S.t_down < 4000 + FENCE_KILL_GRACE_MS + 2000);
    /* Answering again, it reports h1 (which runs nothing) as off. */
    assert_int_equal(test_bmc_pause(&S.bmc[1], false, err, sizeof(err)), 0);
    device_run(S.cfg, "h1-bmc", "status");
    assert_int_equal(S.res.exit_status, FENCE_STATUS_OFF);
}

static void second_level_after_the_first_fails(void **state)
{
    (void)state;
    assert_true(host_powered(3));
    S.t_levels = op_run(S.cfg, "h3", "off");
    assert_true(S.op_ok);
    assert_int_equal(S.nr_runs, 2);
    assert_string_equal(S.runs[0].device, "h3-bmc-badpw");
    assert_false(S.runs[0].ok);
    expect_output(&S.runs[0], "Failed:");
    assert_string_equal(S.runs[1].device, "h3-bmc");
    assert_true(S.runs[1].ok);
    expect_output(&S.runs[1], "Success: Powered OFF");
    assert_false(host_powered(3));
    assert_int_equal(test_proc_wait(&S.work[3], 2000), 1);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(off_powers_the_host_off),
        T(wrong_password_fails),
        T(bmc_down_fails_within_the_timeout),
        T(second_level_after_the_first_fails),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
