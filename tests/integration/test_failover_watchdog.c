/* High availability with no fence device, only each host's watchdog
 * (issue 13, design.md invariants 3 and 4), with real corosync and ternd on
 * three test hosts. This machine has no watchdog device: each host's is
 * tests/tools/tern-watchdog-standin, a FIFO read by a process outside the
 * host that kills the host's cgroup (resets it) when not fed for 1 s. The
 * VMs are tern-vmm-standin (no guest: the cluster's behaviour is tested,
 * not a VM).
 *
 * h3 is cut off the network: alive, alone, out of quorum. It must stop its
 * HA VM itself (out of quorum for 1 s) and stop feeding its watchdog, which
 * resets it; the survivors wait for h3's self-fence deadline (they never
 * reach it: no device), declare it fenced (method watchdog) and restart
 * the VM. The old copy must be gone before the new one runs.
 *
 * ternd stopped in order (SIGTERM) disarms its watchdog only when a
 * quorum saw it leave: connected, the host is kept; cut off (the others
 * lose its node, and will count on its watchdog), the watchdog stays armed
 * and resets the host before the survivors restart its HA VM. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "node-vmm/control.h"
#include "tests/support/proc.h"
#include "tests/support/ternd_assert.h"

#define HOSTS 3
#define ALL 0x0e
#define WATCHDOG_S 1

static struct ternd_hosts T;
static struct test_proc wd[HOSTS + 1];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}


static void fifo_path(int h, char *out, size_t len)
{
    snprintf(out, len, "%s/h%d.watchdog", T.dir, h);
}

/* Host h's watchdog stand-in, outside the host (root namespaces, own
 * process): it must be reading before ternd opens the FIFO. */
static int start_watchdog(int h)
{
    char fifo[512], ms[16], out[512];
    fifo_path(h, fifo, sizeof(fifo));
    snprintf(ms, sizeof(ms), "%d", WATCHDOG_S * 1000);
    snprintf(out, sizeof(out), "%s/wd%d", T.dir, h);
    mkdir(out, 0755);
    char *argv[] = {(char *)test_build_path("tern-watchdog-standin"), fifo, ms, T.cl.cgroup[h],
                    NULL};
    if (test_proc_start(&wd[h], out, argv) < 0)
        return -1;
    for (int i = 0; i < 200; i++) {
        struct stat st;
        if (stat(fifo, &st) == 0 && S_ISFIFO(st.st_mode))
            return 0;
        test_sleep_ms(10);
    }
    return -1;
}

static int configure_and_start(int h)
{
    char standin[1024], fifo[512], lines[2048];
    if (!realpath(test_build_path("tern-vmm-standin"), standin))
        return -1;
    fifo_path(h, fifo, sizeof(fifo));
    snprintf(lines, sizeof(lines), "vmm_path = %s\nwatchdog = %s\nwatchdog_timeout = %d\n",
             standin, fifo, WATCHDOG_S);
    if (start_watchdog(h) < 0 || ternd_hosts_write_config(&T, h, lines) < 0)
        return -1;
    return ternd_hosts_start(&T, h, NULL);
}

static json_t *vm_show(int h, const char *vm)
{
    return ternd_vm_show(&T, h, vm);
}


static int setup(void **state)
{
    (void)state;
    char err[1024];
    if (ternd_hosts_create(&T, HOSTS, "failover-wd", err, sizeof(err)) < 0) {
        fprintf(stderr, "creating the test hosts: %s\n", err);
        return -1;
    }
    for (int h = 1; h <= HOSTS; h++)
        if (configure_and_start(h) < 0)
            return -1;
    if (!ternd_hosts_agree(&T, ALL, HOSTS, true, 60000))
        return -1;
    /* Every host armed its watchdog and announced it. */
    for (int i = 0; i < 100; i++) {
        json_t *s = ternd_status(&T, 1);
        int armed = 0;
        json_t *h;
        size_t k;
        json_array_foreach(json_object_get(s, "hosts"), k, h)
            armed += json_integer_value(json_object_get(h, "watchdog_s")) == WATCHDOG_S;
        json_decref(s);
        if (armed == HOSTS)
            return 0;
        test_sleep_ms(100);
    }
    fprintf(stderr, "the hosts never announced their watchdogs\n");
    ternd_hosts_print_logs(&T);
    return -1;
}

static int teardown(void **state)
{
    (void)state;
    /* The watchdogs first: ternd killed without its magic close would have
     * them reset the hosts under the clean-up. */
    for (int h = 1; h <= HOSTS; h++)
        test_proc_kill(&wd[h]);
    ternd_hosts_destroy(&T);
    return 0;
}

/* Defines HA VM `vm` and starts it on h3; its process id. */
static pid_t start_ha_vm_on_h3(const char *vm)
{
    json_t *cfg = json_pack("{s:s, s:i, s:i}", "kernel", T.guest, "mem_mib", 64, "vcpus", 1);
    json_t *reply;
    tapi_ok(&T, 1, json_pack("{s:s, s:s, s:o, s:b}", "cmd", "vm.define", "name", vm, "config",
                             cfg, "ha", 1),
            &reply);
    json_decref(reply);
    tapi_ok(&T, 1, json_pack("{s:s, s:s, s:s}", "cmd", "vm.start", "name", vm, "host", "h3"),
            &reply);
    json_decref(reply);
    pid_t pid = ternd_hosts_vm_pid(&T, 3, vm);
    assert_true(pid > 0 && test_pid_running(pid));
    return pid;
}

/* h3, reset by its watchdog while cut off: reconnected and powered on
 * (corosync, a new watchdog, ternd), back in the cluster. */
static void bring_back_h3(void)
{
    char err[1024];
    assert_int_equal(test_cluster_partition(&T.cl, 3, false, err, sizeof(err)), 0);
    if (test_cluster_start_corosync(&T.cl, 3, err, sizeof(err)) < 0)
        fail_msg("h3's corosync: %s", err);
    assert_int_equal(configure_and_start(3), 0);
    tagree(&T, ALL, HOSTS, true, 90000);
}

/* Whether h1's state has `vm` running on a survivor (h1 or h2): that
 * host's number, else 0. By then its old copy on h3 (process `old`) must
 * be gone. */
static int survivor_runs(const char *vm, pid_t old)
{
    json_t *v = vm_show(1, vm);
    const char *o = tjson_str(v, "owner", NULL);
    int owner = 0;
    if (!strcmp(tjson_str(v, "state", NULL), "running") && o[0] && strcmp(o, "h3") != 0) {
        owner = atoi(o + 1);
        assert_false(test_pid_running(old));
    }
    json_decref(v);
    return owner;
}

static void partition_self_fences(void **state)
{
    (void)state;
    pid_t old = start_ha_vm_on_h3("w");

    char err[1024];
    double t0 = now_s(), t_gone = 0, t_reset = 0, t_run = 0;
    assert_int_equal(test_cluster_partition(&T.cl, 3, true, err, sizeof(err)), 0);
    int owner = 0;
    for (int i = 0; i < 3000 && !t_run; i++) {
        double now = now_s();
        if (!t_gone && !test_pid_running(old))
            t_gone = now;
        if (!t_reset && test_proc_wait(&wd[3], 0) == 1)
            t_reset = now;
        if ((owner = survivor_runs("w", old)))
            t_run = now;
        test_sleep_ms(10);
    }
    if (!t_run) {
        ternd_hosts_print_logs(&T);
        fail_msg("the HA VM was never restarted on a survivor");
    }
    if (!t_reset && test_proc_wait(&wd[3], 0) == 1)
        t_reset = now_s();
    fprintf(stderr, "h3 cut off (watchdog %d s, no fence device): its HA VM gone after %.2f s, "
                    "h3 reset by its watchdog after %.2f s, the VM running on h%d after %.2f s\n",
            WATCHDOG_S, t_gone - t0, t_reset ? t_reset - t0 : -1.0, owner, t_run - t0);
    assert_true(t_gone > 0 && t_gone < t_run);
    assert_true(t_reset > 0 && t_reset < t_run);
    /* h3 stopped it itself (it was still up then): its own log says so. */
    assert_true(test_count_text(T.ternd[3].err_path, "out of quorum: an HA VM stops") >= 1);
    json_t *s = ternd_status(&T, 1);
    json_t *h;
    size_t k;
    json_array_foreach(json_object_get(s, "hosts"), k, h)
        if (!strcmp(tjson_str(h, "name", NULL), "h3")) {
            assert_string_equal(tjson_str(h, "fence", "state"), "fenced");
            assert_string_equal(tjson_str(h, "fence", "method"), "watchdog");
        }
    json_decref(s);
    /* The survivors' watchdogs were fed all along. */
    assert_int_equal(test_proc_wait(&wd[1], 0), 0);
    assert_int_equal(test_proc_wait(&wd[2], 0), 0);

    bring_back_h3();
    json_t *v = vm_show(3, "w");
    assert_int_equal(atoi(tjson_str(v, "owner", NULL) + 1), owner);
    json_decref(v);
}

/* Waits until every host's state says all HOSTS armed their watchdogs
 * (announced: only then do the others count on them). */
static void wait_all_armed(void)
{
    for (int i = 0; i < 200; i++) {
        int armed = 0;
        for (int at = 1; at <= HOSTS; at++) {
            json_t *s = ternd_status(&T, at);
            json_t *h;
            size_t k;
            json_array_foreach(json_object_get(s, "hosts"), k, h)
                armed += json_integer_value(json_object_get(h, "watchdog_s")) == WATCHDOG_S;
            json_decref(s);
        }
        if (armed == HOSTS * HOSTS)
            return;
        test_sleep_ms(50);
    }
    ternd_hosts_print_logs(&T);
    fail_msg("the hosts never all announced their armed watchdogs");
}

/* The output of host h's watchdog stand-in (stdout). */
static bool wd_said(int h, const char *text)
{
    return test_count_text(wd[h].out_path, text) >= 1;
}

static void clean_stop(void **state)
{
    (void)state;
    wait_all_armed();
    /* Connected: h2's ternd leaves, a quorum sees it; disarmed, kept. */
    test_proc_signal(&T.ternd[2], SIGTERM);
    assert_int_equal(test_proc_wait(&T.ternd[2], 15000), 1);
    assert_int_equal(test_proc_wait(&wd[2], 5000), 1);
    assert_true(wd_said(2, "disarmed"));
    assert_true(test_count_text(T.ternd[2].err_path, "saw this ternd leave; the watchdog is "
                                                     "disarmed") >= 1);
    assert_int_equal(configure_and_start(2), 0);
    tagree(&T, ALL, HOSTS, true, 90000);
    wait_all_armed();

    /* Cut off, then stopped at once, before its corosync notices: the
     * others lose its node and count on its watchdog. */
    pid_t old = start_ha_vm_on_h3("w2");
    char err[1024];
    double t0 = now_s(), t_run = 0;
    assert_int_equal(test_cluster_partition(&T.cl, 3, true, err, sizeof(err)), 0);
    test_proc_signal(&T.ternd[3], SIGTERM);
    int owner = 0;
    for (int i = 0; i < 3000 && !t_run; i++) {
        if ((owner = survivor_runs("w2", old))) /* h3 was reset, not disarmed */
            t_run = now_s();
        test_sleep_ms(10);
    }
    if (!t_run) {
        ternd_hosts_print_logs(&T);
        fail_msg("the HA VM was never restarted on a survivor");
    }
    fprintf(stderr, "h3 cut off and its ternd stopped in order at once: h3 reset by its "
                    "watchdog, the VM running on h%d after %.2f s\n",
            owner, t_run - t0);
    assert_int_equal(test_proc_wait(&wd[3], 0), 1);
    assert_true(wd_said(3, "killed every process"));
    assert_false(wd_said(3, "disarmed"));
    assert_true(test_count_text(T.ternd[3].err_path, "leaving the group first") >= 1);
    bring_back_h3();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(partition_self_fences),
        cmocka_unit_test(clean_stop),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
