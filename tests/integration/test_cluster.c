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

#include "common/unix_addr.h"
#include "migrate/certs.h"
#include "tests/support/cluster.h"
#include "tests/support/kvm.h"
#include "tests/support/proc.h"

#define HOSTS 3
#define GUEST_ARGS "fill=16 dirty=5 hb=10000 check=1000"

static struct test_cluster cl;
static struct test_proc ternd[HOSTS + 1];
static char dir[256];
static char guest[512];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A connected unix stream socket, or -1. */
static int connect_unix(const char *path)
{
    struct sockaddr_un sa;
    if (unix_addr_fill(&sa, path, "ternd API socket", NULL) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void sock_path(int h, char *out, size_t len)
{
    snprintf(out, len, "%s/h%d/run/tern/ternd.sock", dir, h);
}

/* One request to host h's ternd; returns the final reply (with "ok") and
 * counts progress lines. NULL if the agent could not be reached. */
static json_t *api_raw(int h, const char *line, int *progress, int timeout_ms)
{
    char path[300];
    sock_path(h, path, sizeof(path));
    int fd = connect_unix(path);
    if (fd < 0)
        return NULL;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    size_t len = strlen(line);
    if (write(fd, line, len) != (ssize_t)len || write(fd, "\n", 1) != 1) {
        close(fd);
        return NULL;
    }
    static char buf[1 << 20];
    size_t have = 0;
    json_t *final = NULL;
    if (progress)
        *progress = 0;
    while (!final) {
        char *nl;
        while (!(nl = memchr(buf, '\n', have))) {
            if (have == sizeof(buf))
                goto out;
            ssize_t r = read(fd, buf + have, sizeof(buf) - have);
            if (r <= 0)
                goto out;
            have += (size_t)r;
        }
        json_t *j = json_loadb(buf, (size_t)(nl - buf), 0, NULL);
        memmove(buf, nl + 1, have - (size_t)(nl - buf) - 1);
        have -= (size_t)(nl - buf) + 1;
        if (j && json_object_get(j, "ok"))
            final = j;
        else {
            if (j && progress && json_object_get(j, "progress"))
                (*progress)++;
            json_decref(j);
        }
    }
out:
    close(fd);
    return final;
}

static json_t *api(int h, json_t *req, int *progress, int timeout_ms)
{
    char *line = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    json_t *r = api_raw(h, line, progress, timeout_ms);
    free(line);
    return r;
}

/* Expects ok:true; returns the result (caller decrefs the reply it came in). */
static json_t *api_ok(int h, json_t *req, json_t **reply)
{
    *reply = api(h, req, NULL, 120000);
    assert_non_null(*reply);
    if (!json_is_true(json_object_get(*reply, "ok"))) {
        char *s = json_dumps(*reply, 0);
        fprintf(stderr, "host h%d refused: %s\n", h, s);
        free(s);
        fail();
    }
    return json_object_get(*reply, "result");
}

static const char *err_code(json_t *reply)
{
    return json_string_value(json_object_get(json_object_get(reply, "error"), "code"));
}

static int ternd_start(int h, const char *fault)
{
    char conf[300];
    snprintf(conf, sizeof(conf), "%s/h%d/ternd.conf", dir, h);
    if (fault)
        setenv("TERN_TEST_FAULT", fault, 1);
    char *argv[] = {(char *)test_build_path("ternd"), "--config", conf, NULL};
    char err[512];
    char out[300];
    snprintf(out, sizeof(out), "%s/h%d", dir, h);
    int rc = test_cluster_spawn(&cl, h, argv, out, &ternd[h], err, sizeof(err));
    unsetenv("TERN_TEST_FAULT");
    if (rc < 0)
        fprintf(stderr, "starting ternd on h%d: %s\n", h, err);
    return rc;
}

static json_t *status_of(int h)
{
    json_t *r = api(h, json_pack("{s:s}", "cmd", "status"), NULL, 5000);
    if (!r)
        return NULL;
    json_t *res = json_incref(json_object_get(r, "result"));
    json_decref(r);
    return res;
}

/* Waits until every host in `mask` is synced and quorate, sees `online`
 * hosts online, and all report the same state version. */
static void wait_agreed(unsigned mask, int online, int timeout_ms)
{
    double end = now_s() + timeout_ms / 1000.0;
    while (now_s() < end) {
        bool ok = true;
        json_int_t version = -1;
        for (int h = 1; h <= HOSTS && ok; h++) {
            if (!(mask & (1u << h)))
                continue;
            json_t *s = status_of(h);
            json_t *c = json_object_get(s, "cluster");
            int on = 0;
            size_t i;
            json_t *host;
            json_array_foreach(json_object_get(s, "hosts"), i, host) on +=
                json_is_true(json_object_get(host, "online"));
            json_int_t v = json_integer_value(json_object_get(c, "version"));
            ok = s && json_is_true(json_object_get(c, "synced")) &&
                 json_is_true(json_object_get(c, "quorate")) && on == online &&
                 (version < 0 || v == version);
            version = v;
            json_decref(s);
        }
        if (ok)
            return;
        test_sleep_ms(100);
    }
    fprintf(stderr, "hosts did not agree within %d ms\n", timeout_ms);
    for (int h = 1; h <= HOSTS; h++) {
        char p[300];
        snprintf(p, sizeof(p), "%s", ternd[h].err_path);
        char *t = test_read_text(p);
        bool ended = test_proc_wait(&ternd[h], 0) == 1;
        fprintf(stderr, "--- ternd h%d (%s, status %d)\n%s\n", h, ended ? "ended" : "running",
                ended ? ternd[h].status : 0, t);
        free(t);
    }
    fail();
}

/* The state without what legitimately differs per host. */
static char *shared_view(int h)
{
    json_t *s = status_of(h);
    assert_non_null(s);
    json_object_del(s, "cluster");
    /* Migration progress is relayed, not part of what must agree here. */
    char *d = json_dumps(s, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(s);
    return d;
}

static void assert_same_everywhere(void)
{
    char *a = shared_view(1);
    for (int h = 2; h <= HOSTS; h++) {
        char *b = shared_view(h);
        if (strcmp(a, b) != 0) {
            fprintf(stderr, "h1: %s\nh%d: %s\n", a, h, b);
            fail();
        }
        free(b);
    }
    free(a);
}

static void define_vm(int h, const char *name, int mem_mib, const char *args)
{
    json_t *reply;
    json_t *cfg = json_pack("{s:s, s:s, s:i, s:i}", "kernel", guest, "cmdline", args, "mem_mib",
                            mem_mib, "vcpus", 1);
    api_ok(h, json_pack("{s:s, s:s, s:o}", "cmd", "vm.define", "name", name, "config", cfg),
           &reply);
    json_decref(reply);
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

/* The VM's own control socket on host h (tern-vmm's status). */
static json_t *vmm_status(int h, const char *name)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/h%d/run/tern/vms/%s/control.sock", dir, h, name);
    int fd = connect_unix(path);
    if (fd < 0)
        return NULL;
    const char req[] = "{\"cmd\":\"status\"}\n";
    char buf[65536];
    size_t have = 0;
    json_t *j = NULL;
    if (write(fd, req, sizeof(req) - 1) == (ssize_t)(sizeof(req) - 1)) {
        while (have < sizeof(buf)) {
            ssize_t r = read(fd, buf + have, sizeof(buf) - have);
            if (r <= 0)
                break;
            have += (size_t)r;
            if (memchr(buf, '\n', have))
                break;
        }
        j = json_loadb(buf, have, JSON_DISABLE_EOF_CHECK, NULL);
    }
    close(fd);
    return j;
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

static int write_config(int h)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/h%d/ternd.conf", dir, h);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    char vmm[PATH_MAX];
    if (!realpath(test_build_path("tern-vmm"), vmm))
        return -1;
    fprintf(f,
            "host = h%d\nmigration_addr = %s\nmigration_ports = 7400-7420\n"
            "run_dir = %s/h%d/run/tern\nstate_dir = %s/h%d/state\nshared_dir = %s/shared\n"
            "tls_dir = %s/tls/h%d\nvmm_path = %s\nmem = 1G\nvcpus = 4\n",
            h, test_cluster_addr(&cl, h), dir, h, dir, h, dir, dir, h, vmm);
    return fclose(f);
}

static int setup(void **state)
{
    (void)state;
    char err[1024];
    char *tmp = test_make_tmpdir("cluster");
    snprintf(dir, sizeof(dir), "%s", tmp);
    free(tmp);
    if (!realpath(test_build_path("testguest.elf"), guest))
        return -1;
    if (test_cluster_create(&cl, HOSTS, dir, err, sizeof(err)) < 0) {
        fprintf(stderr, "creating the test hosts: %s\n", err);
        return -1;
    }
    char ca[300];
    snprintf(ca, sizeof(ca), "%s/ca", dir);
    struct tern_err terr;
    if (mig_certs_init_ca(ca, "tern-test-ca", 30, &terr) < 0) {
        fprintf(stderr, "CA: %s\n", terr.msg);
        return -1;
    }
    for (int h = 1; h <= HOSTS; h++) {
        char out[300], name[8];
        snprintf(out, sizeof(out), "%s/tls/h%d", dir, h);
        snprintf(name, sizeof(name), "h%d", h);
        snprintf(out, sizeof(out), "%s/tls", dir);
        mkdir(out, 0700);
        snprintf(out, sizeof(out), "%s/tls/h%d", dir, h);
        if (mig_certs_issue(ca, out, name, 30, &terr) < 0) {
            fprintf(stderr, "certificate for h%d: %s\n", h, terr.msg);
            return -1;
        }
        if (write_config(h) < 0) {
            fprintf(stderr, "writing h%d's ternd.conf: %s\n", h, strerror(errno));
            return -1;
        }
        if (test_cluster_start_corosync(&cl, h, err, sizeof(err)) < 0) {
            fprintf(stderr, "corosync h%d: %s\n", h, err);
            return -1;
        }
    }
    if (test_cluster_wait_quorate(&cl, 20000, err, sizeof(err)) < 0) {
        fprintf(stderr, "quorum: %s\n", err);
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
    for (int h = 1; h <= HOSTS; h++)
        test_proc_kill(&ternd[h]);
    if (getenv("TERN_CLUSTER_LOGS")) {
        char cmd[1024];
        snprintf(cmd, sizeof(cmd), "mkdir -p %s && cp -r %s/h1 %s/h2 %s/h3 %s/", getenv("TERN_CLUSTER_LOGS"), dir, dir, dir, getenv("TERN_CLUSTER_LOGS"));
        if (system(cmd) != 0)
            fprintf(stderr, "copying logs failed\n");
    }
    test_cluster_destroy(&cl);
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
    r = api(1, json_pack("{s:s, s:i}", "cmd", "vm.show", "name", 5), NULL, 5000);
    assert_string_equal(err_code(r), "malformed");
    json_decref(r);
    r = api(3, json_pack("{s:s, s:s, s:o}", "cmd", "vm.define", "name", "bad",
                         "config", json_pack("{s:s, s:i, s:i}", "kernel", "relative/k", "mem_mib",
                                             64, "vcpus", 1)),
            NULL, 10000);
    assert_string_equal(err_code(r), "invalid");
    json_decref(r);
    /* Every agent still answers after all that. */
    wait_agreed(0xe, 3, 5000);
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
    test_proc_kill(&ternd[2]); /* SIGKILL: no clean-up at all */
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
    test_proc_kill(&ternd[3]);
    assert_int_equal(test_cluster_stop_corosync(&cl, 3, err, sizeof(err)), 0);
    wait_agreed(0x6, 2, 20000);
    define_vm(1, "while-away", 64, GUEST_ARGS);
    bool run = test_kvm_part("a VM started while the host is away");
    if (run)
        start_vm(2, "while-away", "h1");
    assert_int_equal(test_cluster_start_corosync(&cl, 3, err, sizeof(err)), 0);
    assert_int_equal(test_cluster_wait_quorate(&cl, 20000, err, sizeof(err)), 0);
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
    test_proc_kill(&ternd[1]);
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
    test_proc_kill(&ternd[1]);
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
