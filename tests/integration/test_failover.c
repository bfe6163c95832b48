/* High availability (issue 13), with real corosync and ternd on three test
 * hosts and fence agents from Debian's fence-agents: h3 is powered off by
 * fence_ipmilan through its BMC (OpenIPMI's ipmi_sim, tests/support/bmc.h,
 * living outside the host), h1 by fence_dummy, and h2's only device is
 * broken. The VMs are tests/tools/tern-vmm-standin (no guest: these run on
 * machines without KVM; what is tested is the cluster's fencing and
 * failover, not a VM; its heartbeat counter stands for the guest's first
 * heartbeat):
 *  - h3 crashes (every process of it SIGKILLed): the survivors fence it
 *    through its BMC and restart its HA VMs, highest priority first; its
 *    other VMs are stopped; back, it starts nothing twice;
 *  - h3 is cut off the network (alive, alone, without quorum): the
 *    survivors' fencer powers it off through its BMC and restarts its HA
 *    VMs; the old copies were gone before the new ones ran;
 *  - h2's fence device fails: nothing restarts, `ternctl host list` says
 *    why; the operator's confirm-fenced restarts them;
 *  - h3 lost in the middle of a migration, as its destination and as its
 *    source;
 *  - h3's ternd stops (offline, its VM runs on), then h3 crashes: CPG
 *    says nothing (its ternd had left), corosync's ring loses its node:
 *    after host_down_after (5 s here), host_down, fenced through its BMC,
 *    the HA VM restarted elsewhere; its corosync restarting meanwhile is
 *    not a reason to fence it;
 *  - every host loses its power at once and comes back: the HA VM runs
 *    again (its host's ternd finds no process for it and says the host
 *    failed), the plain one is reported crashed.
 * test_failover_watchdog covers a host with only a watchdog. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "node-vmm/control.h"
#include "tests/support/bmc.h"
#include "tests/support/proc.h"
#include "tests/support/ternd_assert.h"

#define HOSTS 3
#define ALL 0x0e

static struct ternd_hosts T;
static char agent_dir[512];
static struct test_bmc bmc3;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}


/* The ternd.conf lines every host gets: the fence topology of all three
 * (any survivor may fence any host), and `extra`. */
static void configure(int h, const char *extra)
{
    char standin[1024], lines[8192];
    assert_non_null(realpath(test_build_path("tern-vmm-standin"), standin));
    snprintf(lines, sizeof(lines),
             "vmm_path = %s\nfence_agent_dir = %s\nfence_timeout = 10\n"
             "fence_monitor_interval = 2\nhost_down_after = 5\n"
             "fence_device = h1-power fence_dummy type=file status_file=%s/h1.power\n"
             "fence_level = h1 1 h1-power\n"
             "fence_device = h2-broken fence_broken\n"
             "fence_level = h2 1 h2-broken\n"
             "fence_device = h3-bmc fence_ipmilan ip=%s username=admin "
             "password_file=%s/h3-bmc.pw lanplus=1 cipher=3 power_wait=0\n"
             "fence_level = h3 1 h3-bmc\n%s",
             standin, agent_dir, T.dir, bmc3.addr, T.dir, extra ? extra : "");
    assert_int_equal(ternd_hosts_write_config(&T, h, lines), 0);
}

static void set_power(int h, const char *state)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/h%d.power", T.dir, h);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(state, f); /* no newline: fence_dummy compares the whole file */
    fclose(f);
}

static json_t *vm_show(int h, const char *vm)
{
    return ternd_vm_show(&T, h, vm);
}

static json_t *host_show(int at, const char *host)
{
    return ternd_host_show(&T, at, host);
}

/* The stand-in of `vm` on host h: its status, or NULL. */
static json_t *vmm_status(int h, const char *vm)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/h%d/run/tern/vms/%s/control.sock", T.dir, h, vm);
    json_t *req = json_pack("{s:s}", "cmd", "status"), *reply = NULL;
    struct tern_err err;
    if (control_call(path, req, 2000, &reply, &err) < 0)
        reply = NULL;
    json_decref(req);
    return reply;
}


static void hold(int h, const char *vm, bool on)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/h%d/run/tern/vms/%s/standin-hold", T.dir, h, vm);
    if (on) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fclose(f);
    } else {
        unlink(path);
    }
}


/* The stand-in of `vm` on h reaches `state` (and migration phase). */
static void wait_vmm(int h, const char *vm, const char *state, const char *phase)
{
    for (int i = 0; i < 400; i++) {
        json_t *st = vmm_status(h, vm);
        bool ok = st && !strcmp(tjson_str(st, "state", NULL), state) &&
                  (!phase || !strcmp(tjson_str(st, "migration", "phase"), phase));
        json_decref(st);
        if (ok)
            return;
        test_sleep_ms(50);
    }
    fail_msg("VM %s on h%d never reached %s/%s", vm, h, state, phase ? phase : "-");
}

/* Starts a migration of vm to `to` (asked at h1) without waiting for it. */
static int migrate_async(const char *vm, const char *to)
{
    char line[256];
    snprintf(line, sizeof(line), "{\"cmd\":\"vm.migrate\",\"name\":\"%s\",\"to\":\"%s\"}\n",
             vm, to);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/h1/run/tern/ternd.sock", T.dir) >=
        (int)sizeof(sa.sun_path))
        fail_msg("socket path too long");
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(send(fd, line, strlen(line), MSG_NOSIGNAL), (ssize_t)strlen(line));
    return fd;
}

static int host_num(const char *name)
{
    return name[0] == 'h' ? atoi(name + 1) : 0;
}

/* Waits until `vm` runs on a host other than `not` (per host `at`'s state
 * and its stand-in's own heartbeat); returns that host's number and when
 * (monotonic s), or fails. */
static int wait_running_elsewhere(int at, const char *vm, int not, int timeout_ms, double *when)
{
    json_t *v = NULL;
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
        json_decref(v);
        v = vm_show(at, vm);
        int owner = host_num(tjson_str(v, "owner", NULL));
        if (owner && owner != not && !strcmp(tjson_str(v, "state", NULL), "running")) {
            json_t *st = vmm_status(owner, vm);
            long long hb = json_integer_value(json_object_get(json_object_get(st, "heartbeat"),
                                                              "count"));
            json_decref(st);
            if (hb > 0) {
                *when = now_s();
                json_decref(v);
                return owner;
            }
        }
        test_sleep_ms(10);
    }
    char *d = v ? json_dumps(v, 0) : NULL;
    fprintf(stderr, "VM %s never ran elsewhere than h%d; last %s\n", vm, not, d ? d : "(none)");
    free(d);
    json_decref(v);
    ternd_hosts_print_logs(&T);
    fail();
    return 0;
}

static void define_start(const char *vm, bool ha, int priority, const char *host)
{
    json_t *cfg = json_pack("{s:s, s:i, s:i}", "kernel", T.guest, "mem_mib", 64, "vcpus", 1);
    json_t *reply;
    tapi_ok(&T, 1, json_pack("{s:s, s:s, s:o, s:b, s:i}", "cmd", "vm.define", "name", vm,
                             "config", cfg, "ha", ha, "priority", priority),
            &reply);
    json_decref(reply);
    tapi_ok(&T, 1, json_pack("{s:s, s:s, s:s}", "cmd", "vm.start", "name", vm, "host", host),
            &reply);
    json_decref(reply);
}

static void stop_undefine(int at, const char *vm)
{
    json_t *reply;
    tapi_ok(&T, at, json_pack("{s:s, s:s}", "cmd", "vm.stop", "name", vm), &reply);
    json_decref(reply);
    tapi_ok(&T, at, json_pack("{s:s, s:s}", "cmd", "vm.undefine", "name", vm), &reply);
    json_decref(reply);
}

/* Brings host h back after a crash: corosync and ternd again, powered on. */
static void revive(int h)
{
    char err[1024];
    set_power(h, "on");
    if (test_cluster_corosync_running(&T.cl, h) == false &&
        test_cluster_start_corosync(&T.cl, h, err, sizeof(err)) < 0)
        fail_msg("restarting h%d's corosync: %s", h, err);
    assert_int_equal(ternd_hosts_start(&T, h, NULL), 0);
    tagree(&T, ALL, HOSTS, true, 90000);
    /* Its announce applied everywhere: its fencing is over. */
    char name[8];
    snprintf(name, sizeof(name), "h%d", h);
    for (int i = 0; i < 300; i++) {
        int none = 0;
        for (int at = 1; at <= HOSTS; at++) {
            json_t *x = host_show(at, name);
            none += !strcmp(tjson_str(x, "fence", "state"), "none");
            json_decref(x);
        }
        if (none == HOSTS)
            return;
        test_sleep_ms(50);
    }
    fail_msg("h%d's fencing never ended after it came back", h);
}

static int setup(void **state)
{
    (void)state;
    char err[1024];
    if (ternd_hosts_create(&T, HOSTS, "failover", err, sizeof(err)) < 0) {
        fprintf(stderr, "creating the test hosts: %s\n", err);
        return -1;
    }
    /* The agents: Debian's fence_dummy, and one that always fails. */
    snprintf(agent_dir, sizeof(agent_dir), "%s/fence-agents", T.dir);
    if (mkdir(agent_dir, 0755) < 0)
        return -1;
    char p[600];
    snprintf(p, sizeof(p), "%s/fence_dummy", agent_dir);
    if (symlink("/usr/sbin/fence_dummy", p) < 0)
        return -1;
    snprintf(p, sizeof(p), "%s/fence_ipmilan", agent_dir);
    if (symlink("/usr/sbin/fence_ipmilan", p) < 0)
        return -1;
    char pw[32];
    snprintf(pw, sizeof(pw), "h3bmc%d", (int)getpid() % 10000);
    if (test_bmc_start(&bmc3, &T.cl, 3, "admin", pw, err, sizeof(err)) < 0) {
        fprintf(stderr, "h3's BMC: %s\n", err);
        return -1;
    }
    snprintf(p, sizeof(p), "%s/h3-bmc.pw", T.dir);
    int pfd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (pfd < 0 || write(pfd, pw, strlen(pw)) != (ssize_t)strlen(pw) || close(pfd) < 0)
        return -1;
    snprintf(p, sizeof(p), "%s/fence_broken", agent_dir);
    FILE *f = fopen(p, "w");
    if (!f)
        return -1;
    fputs("#!/bin/sh\ncat >/dev/null\necho 'Unable to connect/login to fencing device' >&2\n"
          "exit 1\n", f);
    fclose(f);
    if (chmod(p, 0755) < 0)
        return -1;
    for (int h = 1; h <= HOSTS; h++) {
        set_power(h, "on");
        configure(h, NULL);
        if (ternd_hosts_start(&T, h, NULL) < 0)
            return -1;
    }
    if (!ternd_hosts_agree(&T, ALL, HOSTS, true, 60000))
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    test_bmc_stop(&bmc3);
    ternd_hosts_destroy(&T);
    return 0;
}

/* h3 crashes: fenced through its BMC, its HA VMs run elsewhere (priority
 * first), its plain VM is stopped; back, it runs nothing twice. */
static void crash_restarts_ha_vms(void **state)
{
    (void)state;
    define_start("ha-hi", true, 10, "h3");
    define_start("ha-lo", true, 1, "h3");
    define_start("plain", false, 0, "h3");
    char err[1024];
    double t0 = now_s();
    assert_int_equal(test_cluster_kill_host(&T.cl, 3, err, sizeof(err)), 0);
    double t_hi, t_lo;
    int hi = wait_running_elsewhere(1, "ha-hi", 3, 30000, &t_hi);
    int lo = wait_running_elsewhere(1, "ha-lo", 3, 30000, &t_lo);
    fprintf(stderr, "h3 killed -> ha-hi running on h%d after %.3f s, ha-lo on h%d after %.3f s "
                    "(fence_ipmilan through its BMC, corosync token 300 ms)\n",
            hi, t_hi - t0, lo, t_lo - t0);
    json_t *h3 = host_show(1, "h3");
    assert_string_equal(tjson_str(h3, "fence", "state"), "fenced");
    assert_string_equal(tjson_str(h3, "fence", "method"), "device");
    assert_non_null(strstr(tjson_str(h3, "fence", "detail"), "h3-bmc: ok"));
    json_decref(h3);
    assert_true(test_bmc_chassis_calls(&bmc3, "get power") >= 1); /* asked; off already */
    json_t *v = vm_show(2, "plain");
    assert_string_equal(tjson_str(v, "state", NULL), "stopped");
    assert_non_null(strstr(tjson_str(v, "detail", NULL), "fenced"));
    json_decref(v);
    /* Back: nothing of it runs there. */
    revive(3);
    json_t *h = host_show(2, "h3");
    assert_string_equal(tjson_str(h, "fence", "state"), "none");
    json_decref(h);
    for (int i = 0; i < 2; i++) {
        const char *vm = i ? "ha-lo" : "ha-hi";
        json_t *st = vmm_status(3, vm);
        assert_null(st);
        v = vm_show(3, vm);
        assert_int_not_equal(host_num(tjson_str(v, "owner", NULL)), 3);
        json_decref(v);
    }
    stop_undefine(1, "ha-hi");
    stop_undefine(1, "ha-lo");
    json_t *reply;
    tapi_ok(&T, 1, json_pack("{s:s, s:s}", "cmd", "vm.undefine", "name", "plain"), &reply);
    json_decref(reply);
}

/* `ternctl host list` at host h, its output in a file (path into out). */
static void ternctl_host_list(int h, char *out, size_t cap)
{
    char sock[512], cmd[1400];
    snprintf(sock, sizeof(sock), "%s/h%d/run/tern/ternd.sock", T.dir, h);
    snprintf(out, cap, "%s/host-list-h%d.out", T.dir, h);
    snprintf(cmd, sizeof(cmd), "%s --socket %s host list >%s 2>&1", test_build_path("ternctl"),
             sock, out);
    assert_int_equal(system(cmd), 0);
}

/* Waits (up to 30 s) until host `at` says the check of `host`'s fence
 * devices is `check`; returns the host as listed. */
static json_t *wait_check(int at, const char *host, const char *check)
{
    json_t *h = NULL;
    for (int i = 0; i < 300; i++) {
        json_decref(h);
        h = host_show(at, host);
        if (!strcmp(tjson_str(h, "fence", "check"), check))
            return h;
        test_sleep_ms(100);
    }
    fail_msg("the check of %s's fence devices never became %s at h%d: %s (%s)", host, check, at,
             tjson_str(h, "fence", "check"), tjson_str(h, "fence", "check_detail"));
    return NULL;
}

/* The host that would fence another checks its devices (monitor) every
 * fence_monitor_interval: a device that stops answering shows before it is
 * needed, and shows as fixed once it answers again. */
static void device_checks(void **state)
{
    (void)state;
    /* h1 fences (and checks) h2 and h3, h2 checks h1. */
    json_t *h = wait_check(3, "h3", "ok");
    assert_string_equal(tjson_str(h, "fence", "check_by"), "h1");
    assert_string_equal(tjson_str(h, "fence", "check_detail"), "h3-bmc: ok");
    json_decref(h);
    h = wait_check(3, "h1", "ok");
    assert_string_equal(tjson_str(h, "fence", "check_by"), "h2");
    json_decref(h);
    h = wait_check(1, "h2", "failing");
    assert_string_equal(tjson_str(h, "fence", "check_by"), "h1");
    assert_non_null(strstr(tjson_str(h, "fence", "check_detail"),
                           "h2-broken: failed: Unable to connect"));
    json_decref(h);
    /* The BMC's password changed under the cluster's feet. */
    char pw[600], good[64] = "";
    snprintf(pw, sizeof(pw), "%s/h3-bmc.pw", T.dir);
    FILE *f = fopen(pw, "r");
    assert_non_null(f);
    assert_non_null(fgets(good, sizeof(good), f));
    fclose(f);
    f = fopen(pw, "w");
    assert_non_null(f);
    fputs("wrong", f);
    fclose(f);
    h = wait_check(2, "h3", "failing");
    assert_non_null(strstr(tjson_str(h, "fence", "check_detail"), "h3-bmc: failed"));
    assert_string_equal(tjson_str(h, "fence", "state"), "none"); /* nothing else changes */
    json_decref(h);
    /* ternctl shows it under the table. */
    char out[600];
    ternctl_host_list(2, out, sizeof(out));
    assert_int_equal(test_count_text(out, "h3: fence devices failing their check (by h1): "
                                          "h3-bmc: failed"), 1);
    assert_int_equal(test_count_text(out, "h2: fence devices failing their check (by h1): "
                                          "h2-broken: failed"), 1);
    /* Fixed: the next check says so. */
    f = fopen(pw, "w");
    assert_non_null(f);
    fputs(good, f);
    fclose(f);
    json_decref(wait_check(2, "h3", "ok"));
}

/* A fence device that fails: nothing restarts, the failure shows; the
 * operator confirms the host is off: then it restarts. */
static void failed_fence_then_confirm(void **state)
{
    (void)state;
    /* h2's only fence device is broken (the topology, on every host). */
    define_start("ha-b", true, 0, "h2");
    char err[1024];
    assert_int_equal(test_cluster_kill_host(&T.cl, 2, err, sizeof(err)), 0);
    /* The failure is counted and said. */
    json_t *h = NULL;
    for (int i = 0; i < 300; i++) {
        json_decref(h);
        h = host_show(1, "h2");
        if (!strcmp(tjson_str(h, "fence", "state"), "failed"))
            break;
        test_sleep_ms(100);
    }
    assert_string_equal(tjson_str(h, "fence", "state"), "failed");
    assert_non_null(strstr(tjson_str(h, "fence", "detail"), "Unable to connect"));
    json_decref(h);
    json_t *v = vm_show(1, "ha-b");
    assert_string_equal(tjson_str(v, "owner", NULL), "h2");
    assert_string_equal(tjson_str(v, "state", NULL), "lost");
    json_decref(v);
    /* ternctl shows it. */
    char out[600];
    ternctl_host_list(1, out, sizeof(out));
    assert_int_equal(test_count_text(out, "fence-failed"), 1);
    assert_true(test_count_text(out, "h2: fencing failed") == 1);
    /* The operator checked: it is off. */
    json_t *reply;
    double t0 = now_s(), t1;
    tapi_ok(&T, 3, json_pack("{s:s, s:s}", "cmd", "host.confirm_fenced", "host", "h2"), &reply);
    json_decref(reply);
    int at = wait_running_elsewhere(1, "ha-b", 2, 30000, &t1);
    fprintf(stderr, "confirm-fenced h2 -> ha-b running on h%d after %.3f s\n", at, t1 - t0);
    h = host_show(1, "h2");
    assert_string_equal(tjson_str(h, "fence", "method"), "operator");
    json_decref(h);
    revive(2);
    stop_undefine(1, "ha-b");
}


/* h3 cut off the network: alive, alone, out of quorum. The survivors'
 * fencer powers it off through its BMC (which it still reaches: the BMC is
 * not on the host) and restarts its HA VM; the old copy was gone first. */
static void partition_fenced_through_bmc(void **state)
{
    (void)state;
    define_start("ha-p", true, 0, "h3");
    pid_t old = ternd_hosts_vm_pid(&T, 3, "ha-p");
    assert_true(old > 0 && test_pid_running(old));
    char err[1024];
    double t0 = now_s(), t1;
    assert_int_equal(test_cluster_partition(&T.cl, 3, true, err, sizeof(err)), 0);
    int at = wait_running_elsewhere(1, "ha-p", 3, 30000, &t1);
    /* Powered off before the restart: the old process is gone. */
    assert_false(test_pid_running(old));
    fprintf(stderr, "h3 cut off -> powered off by its BMC, ha-p running on h%d after %.3f s\n",
            at, t1 - t0);
    assert_int_equal(test_cluster_partition(&T.cl, 3, false, err, sizeof(err)), 0);
    revive(3);
    assert_null(vmm_status(3, "ha-p"));
    stop_undefine(1, "ha-p");
}

/* h3 lost while a migration to it is in flight: the migration ends, the
 * source resumes and keeps the VM (nothing is restarted); lost as the
 * source: the VM is restarted elsewhere once h3 is fenced, and the
 * destination's incoming VMM is not taken for it. */
static void lost_mid_migration(void **state)
{
    (void)state;
    char err[1024];
    /* h3 the destination. */
    define_start("mig-d", true, 0, "h1");
    pid_t src = ternd_hosts_vm_pid(&T, 1, "mig-d");
    hold(1, "mig-d", true);
    int fd = migrate_async("mig-d", "h3");
    wait_vmm(1, "mig-d", "paused", "stop-and-copy");
    wait_vmm(3, "mig-d", "incoming", NULL);
    assert_int_equal(test_cluster_kill_host(&T.cl, 3, err, sizeof(err)), 0);
    wait_vmm(1, "mig-d", "running", NULL);
    hold(1, "mig-d", false);
    close(fd);
    for (int i = 0; i < 300; i++) {
        json_t *h = host_show(1, "h3");
        bool fenced = !strcmp(tjson_str(h, "fence", "state"), "fenced");
        json_decref(h);
        if (fenced)
            break;
        test_sleep_ms(50);
    }
    json_t *v = vm_show(2, "mig-d");
    assert_string_equal(tjson_str(v, "owner", NULL), "h1");
    assert_string_equal(tjson_str(v, "state", NULL), "running");
    json_decref(v);
    /* The same process: resumed, not restarted. */
    assert_int_equal(ternd_hosts_vm_pid(&T, 1, "mig-d"), src);
    revive(3);
    /* h3 the source. */
    define_start("mig-s", true, 0, "h3");
    hold(3, "mig-s", true);
    fd = migrate_async("mig-s", "h2");
    wait_vmm(3, "mig-s", "paused", "stop-and-copy");
    wait_vmm(2, "mig-s", "incoming", NULL);
    pid_t incoming = ternd_hosts_vm_pid(&T, 2, "mig-s");
    double t0 = now_s(), t1;
    assert_int_equal(test_cluster_kill_host(&T.cl, 3, err, sizeof(err)), 0);
    int at = wait_running_elsewhere(1, "mig-s", 3, 30000, &t1);
    close(fd);
    assert_int_not_equal(ternd_hosts_vm_pid(&T, at, "mig-s"), incoming);
    fprintf(stderr, "source h3 lost mid-migration -> mig-s restarted on h%d after %.3f s\n", at,
            t1 - t0);
    revive(3);
    stop_undefine(1, "mig-d");
    stop_undefine(1, "mig-s");
}

/* SIGTERM to h3's ternd; h3 offline (not lost) everywhere; returns. */
static void stop_ternd_h3(void)
{
    test_proc_signal(&T.ternd[3], SIGTERM);
    assert_int_equal(test_proc_wait(&T.ternd[3], 15000), 1);
    json_t *h = NULL;
    for (int i = 0; i < 300; i++) {
        json_decref(h);
        h = host_show(1, "h3");
        if (h && !json_is_true(json_object_get(h, "online")))
            break;
        test_sleep_ms(50);
    }
    assert_false(json_is_true(json_object_get(h, "online")));
    assert_false(json_is_true(json_object_get(h, "lost")));
    json_decref(h);
}

/* h3's ternd is stopped and its corosync restarts (an upgrade): its node
 * is out of the ring for a moment, shorter than host_down_after: nothing
 * is fenced, and its VM runs on, h3's. */
static void corosync_restart_is_not_down(void **state)
{
    (void)state;
    define_start("ha-cr", true, 0, "h3");
    pid_t vm = ternd_hosts_vm_pid(&T, 3, "ha-cr");
    stop_ternd_h3();
    char err[1024];
    double t0 = now_s();
    assert_int_equal(test_cluster_stop_corosync(&T.cl, 3, err, sizeof(err)), 0);
    assert_int_equal(test_cluster_start_corosync(&T.cl, 3, err, sizeof(err)), 0);
    if (test_cluster_wait_quorate(&T.cl, 30000, err, sizeof(err)) < 0)
        fail_msg("h3's corosync back: %s", err);
    fprintf(stderr, "h3's corosync restarted in %.2f s\n", now_s() - t0);
    while (now_s() - t0 < 7.0) /* past host_down_after (5 s) */
        test_sleep_ms(100);
    json_t *h = host_show(1, "h3");
    assert_string_equal(tjson_str(h, "fence", "state"), "none");
    assert_false(json_is_true(json_object_get(h, "lost")));
    json_decref(h);
    assert_true(test_pid_running(vm));
    assert_int_equal(ternd_hosts_start(&T, 3, NULL), 0);
    tagree(&T, ALL, HOSTS, true, 90000);
    json_t *v = vm_show(1, "ha-cr");
    assert_string_equal(tjson_str(v, "owner", NULL), "h3");
    json_decref(v);
    assert_int_equal(ternd_hosts_vm_pid(&T, 3, "ha-cr"), vm);
    stop_undefine(1, "ha-cr");
}

/* h3's ternd stops: h3 is offline, not lost, and its VM runs on (VMs
 * survive ternd). Then h3 crashes. CPG has nothing to say (its process had
 * left), but corosync's ring loses its node: h1, its would-be fencer, sends
 * host_down; h3 is lost, fenced through its BMC, its HA VM restarted. */
static void ternd_stopped_then_host_dies(void **state)
{
    (void)state;
    define_start("ha-td", true, 0, "h3");
    pid_t old = ternd_hosts_vm_pid(&T, 3, "ha-td");
    assert_true(old > 0);
    stop_ternd_h3();
    assert_true(test_pid_running(old)); /* it runs on without its ternd */
    json_t *v = vm_show(1, "ha-td");
    assert_string_equal(tjson_str(v, "owner", NULL), "h3");
    json_decref(v);
    char err[1024];
    double t0 = now_s(), t1;
    assert_int_equal(test_cluster_kill_host(&T.cl, 3, err, sizeof(err)), 0);
    int at = wait_running_elsewhere(1, "ha-td", 3, 30000, &t1);
    fprintf(stderr, "h3 (ternd stopped before) crashed -> host_down after host_down_after (5 s), "
                    "fenced, ha-td running on h%d after %.3f s\n", at, t1 - t0);
    json_t *h = host_show(2, "h3");
    assert_string_equal(tjson_str(h, "fence", "state"), "fenced");
    assert_string_equal(tjson_str(h, "fence", "method"), "device");
    json_decref(h);
    assert_true(test_count_text(T.ternd[1].err_path, "its node has left corosync's membership "
                                                     "too") >= 1);
    revive(3);
    assert_null(vmm_status(3, "ha-td"));
    stop_undefine(1, "ha-td");
}

/* All three lose their power at once (every process of every host
 * SIGKILLed) and come back. Every disk copy has the VMs running on h3;
 * nobody saw h3 fail, so nothing is fenced: h3's ternd finds no process
 * for them at start and says its host failed. The HA VM is restarted (by
 * the state's placement, anywhere); the plain one is crashed. Without that
 * word the HA VM would be taken for a guest's crash and stay down
 * (ha/failover.pml, RECOVER_LOST_ONLY). */
static void power_loss_everywhere(void **state)
{
    (void)state;
    define_start("ha-pl", true, 0, "h3");
    define_start("plain-pl", false, 0, "h3");
    pid_t old = ternd_hosts_vm_pid(&T, 3, "ha-pl");
    assert_true(old > 0);
    char err[1024];
    for (int h = 1; h <= HOSTS; h++)
        assert_int_equal(test_cluster_kill_host(&T.cl, h, err, sizeof(err)), 0);
    assert_false(test_pid_running(old));
    /* Power back: corosync first on all, in one ring (so that no ternd
     * sees another's node missing: nobody is lost), then the agents. */
    double t0 = now_s(), t1;
    for (int h = 1; h <= HOSTS; h++) {
        set_power(h, "on");
        if (!test_cluster_corosync_running(&T.cl, h) &&
            test_cluster_start_corosync(&T.cl, h, err, sizeof(err)) < 0)
            fail_msg("restarting h%d's corosync: %s", h, err);
    }
    if (test_cluster_wait_quorate(&T.cl, 60000, err, sizeof(err)) < 0)
        fail_msg("corosync after the power loss: %s", err);
    for (int h = 1; h <= HOSTS; h++)
        assert_int_equal(ternd_hosts_start(&T, h, NULL), 0);
    tagree(&T, ALL, HOSTS, true, 90000);
    int at = wait_running_elsewhere(1, "ha-pl", 0, 30000, &t1);
    fprintf(stderr, "power lost everywhere -> ha-pl running on h%d %.3f s after the ternds "
                    "started\n", at, t1 - t0);
    json_t *v = vm_show(2, "ha-pl");
    assert_string_equal(tjson_str(v, "recovered_from", NULL), "h3");
    json_decref(v);
    v = vm_show(2, "plain-pl");
    assert_string_equal(tjson_str(v, "state", NULL), "crashed");
    assert_non_null(strstr(tjson_str(v, "detail", NULL), "not found when ternd started"));
    json_decref(v);
    for (int h = 1; h <= HOSTS; h++) {
        char name[8];
        snprintf(name, sizeof(name), "h%d", h);
        json_t *x = host_show(1, name);
        assert_string_equal(tjson_str(x, "fence", "state"), "none"); /* nobody was fenced */
        json_decref(x);
    }
    stop_undefine(1, "ha-pl");
    stop_undefine(1, "plain-pl"); /* crashed, still meant to run */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(device_checks),
        cmocka_unit_test(crash_restarts_ha_vms),
        cmocka_unit_test(partition_fenced_through_bmc),
        cmocka_unit_test(lost_mid_migration),
        cmocka_unit_test(failed_fence_then_confirm),
        cmocka_unit_test(corosync_restart_is_not_down),
        cmocka_unit_test(ternd_stopped_then_host_dies),
        cmocka_unit_test(power_loss_everywhere),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
