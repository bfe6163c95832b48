/* bench/agent: ternd against design.md's budgets, on three test hosts
 * running real corosync:
 *
 *   define_ms_per_vm     a vm.define through the API, applied (CPG round trip)
 *   rss_mib              ternd's resident memory holding 1000 VMs
 *                        (budget: about 30 MiB for 16 hosts and 1000 VMs)
 *   idle_cpu_percent     ternd's CPU use over 5 s with nothing happening
 *                        (budget: near zero)
 *   join_sync_s          a third host's ternd starting until it holds the
 *                        1000-VM state (budget: well under a second)
 *   ceiling_cpg_s        the same number of bytes (the state's size) sent
 *                        as one raw CPG message and delivered back: the
 *                        transport's share of join_sync_s
 *
 * Usage: agent BUILD_DIR */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/corosync_link.h"
#include "migrate/certs.h"
#include "cli/cli.h"
#include "tests/support/cluster.h"
#include "tests/support/proc.h"

#define NR_VMS 1000

static struct test_cluster cl;
static struct test_proc ternd[4];
static char dir[256];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One request to host h's ternd; the reply object, or NULL. (ternctl's
 * client: a 1000-VM status is larger than the VMM control client takes.) */
static json_t *call(int h, json_t *req)
{
    char sock[320];
    snprintf(sock, sizeof(sock), "%s/h%d/run/tern/ternd.sock", dir, h);
    struct cli_conn c;
    struct cli_reply r = {0};
    struct tern_err err;
    json_t *reply = NULL;
    int64_t deadline = cli_now_ms() + 30000;
    if (cli_conn_open(&c, sock, deadline, &err) == 0) {
        if (cli_conn_send(&c, req, deadline, &err) == 0 && cli_conn_next(&c, deadline, &r, &err) == 0)
            reply = json_incref(r.root);
        cli_reply_clear(&r);
        cli_conn_close(&c);
    }
    json_decref(req);
    return reply;
}

static json_int_t version_of(int h, bool *synced)
{
    json_t *r = call(h, json_pack("{s:s}", "cmd", "status"));
    json_t *c = json_object_get(json_object_get(r, "result"), "cluster");
    json_int_t v = json_integer_value(json_object_get(c, "version"));
    *synced = json_is_true(json_object_get(c, "synced"));
    json_decref(r);
    return r ? v : -1;
}

static int start_ternd(int h)
{
    char conf[320], out[300], err[512];
    snprintf(conf, sizeof(conf), "%s/h%d/ternd.conf", dir, h);
    snprintf(out, sizeof(out), "%s/h%d", dir, h);
    char *argv[] = {(char *)test_build_path("ternd"), "--config", conf, NULL};
    if (test_cluster_spawn(&cl, h, argv, out, &ternd[h], err, sizeof(err)) < 0) {
        fprintf(stderr, "agent: starting ternd on h%d: %s\n", h, err);
        return -1;
    }
    return 0;
}

static long proc_status_kib(pid_t pid, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    while (f && fgets(line, sizeof(line), f))
        if (!strncmp(line, key, strlen(key)))
            v = strtol(line + strlen(key), NULL, 10);
    if (f)
        fclose(f);
    return v;
}

static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f || !fgets(buf, sizeof(buf), f)) {
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* fields after ')': state(3) ... utime(14) stime(15) */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* The ceiling: one raw CPG message of `size` bytes from host 1, timed from
 * send to its delivery back (agreed order means every member has it). */
static void cpg_deliver(void *opaque, uint32_t nodeid, const void *msg, size_t len)
{
    (void)nodeid;
    (void)msg;
    *(size_t *)opaque = len;
}

static double ceiling_cpg(size_t size)
{
    int pfd[2];
    if (pipe(pfd) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        char err[256];
        double result = -1;
        if (test_cluster_enter(&cl, 1, false, err, sizeof(err)) == 0) {
            size_t got = 0;
            struct cs_link_callbacks cb = {.deliver = cpg_deliver};
            struct cs_link *l;
            struct tern_err terr;
            if (cs_link_open(&l, "tern-bench", &cb, &got, &terr) == 0) {
                char *msg = calloc(1, size);
                double t0 = now_s();
                if (msg && cs_link_send(l, msg, size, &terr) == 0) {
                    while (got != size && now_s() - t0 < 10) {
                        struct pollfd fds[CS_LINK_NFDS];
                        cs_link_pollfds(l, fds);
                        poll(fds, CS_LINK_NFDS, 100);
                        if (cs_link_dispatch(l, fds, &terr) < 0)
                            break;
                    }
                    if (got == size)
                        result = now_s() - t0;
                }
                free(msg);
                cs_link_close(l);
            }
        }
        if (write(pfd[1], &result, sizeof(result)) != sizeof(result))
            _exit(1);
        _exit(0);
    }
    close(pfd[1]);
    double r = -1;
    if (read(pfd[0], &r, sizeof(r)) != sizeof(r))
        r = -1;
    close(pfd[0]);
    waitpid(pid, NULL, 0);
    return r;
}

static int setup(void)
{
    char err[1024];
    char *tmp = test_make_tmpdir("bench-agent");
    snprintf(dir, sizeof(dir), "%s", tmp);
    free(tmp);
    if (test_cluster_create(&cl, 3, dir, err, sizeof(err)) < 0) {
        fprintf(stderr, "agent: test hosts: %s\n", err);
        return -1;
    }
    char ca[320], vmm[PATH_MAX];
    snprintf(ca, sizeof(ca), "%s/ca", dir);
    struct tern_err terr;
    if (mig_certs_init_ca(ca, "bench-ca", 30, &terr) < 0 ||
        !realpath(test_build_path("tern-vmm"), vmm)) {
        fprintf(stderr, "agent: CA: %s\n", terr.msg);
        return -1;
    }
    for (int h = 1; h <= 3; h++) {
        char tls[320], conf[320], name[8];
        snprintf(tls, sizeof(tls), "%s/h%d/tls", dir, h);
        snprintf(name, sizeof(name), "h%d", h);
        if (mig_certs_issue(ca, tls, name, 30, &terr) < 0) {
            fprintf(stderr, "agent: certificate: %s\n", terr.msg);
            return -1;
        }
        snprintf(conf, sizeof(conf), "%s/h%d/ternd.conf", dir, h);
        FILE *f = fopen(conf, "w");
        if (!f)
            return -1;
        fprintf(f, "host = h%d\nrun_dir = %s/h%d/run/tern\nstate_dir = %s/h%d/state\n"
                   "tls_dir = %s\nvmm_path = %s\nmem = 100000G\nvcpus = 4096\n"
                   "shared_dir = %s/shared\n",
                h, dir, h, dir, h, tls, vmm, dir);
        fclose(f);
        if (test_cluster_start_corosync(&cl, h, err, sizeof(err)) < 0) {
            fprintf(stderr, "agent: corosync: %s\n", err);
            return -1;
        }
    }
    if (test_cluster_wait_quorate(&cl, 20000, err, sizeof(err)) < 0) {
        fprintf(stderr, "agent: quorum: %s\n", err);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        setenv("TERN_BUILD", argv[1], 1);
    int rc = 1;
    if (setup() < 0)
        goto out;
    if (start_ternd(1) < 0 || start_ternd(2) < 0)
        goto out;
    bool synced = false;
    for (int i = 0; i < 200 && !synced; i++) {
        version_of(1, &synced);
        if (!synced)
            test_sleep_ms(50);
    }
    if (!synced) {
        fprintf(stderr, "agent: ternd on h1 never synced\n");
        goto out;
    }
    char guest[PATH_MAX];
    if (!realpath(test_build_path("testguest.elf"), guest))
        goto out;
    double t0 = now_s();
    for (int i = 0; i < NR_VMS; i++) {
        char name[32], disk[384];
        snprintf(name, sizeof(name), "vm%04d", i);
        /* Each VM its own image (two VMs may not write one), in the hosts'
         * image directory (shared_dir); never created. */
        snprintf(disk, sizeof(disk), "%s/shared/vms/%s-long-disk-image-name.img", dir, name);
        json_t *r = call(1 + i % 2, json_pack("{s:s, s:s, s:{s:s, s:s, s:i, s:i, s:[{s:s, s:b}]}, s:b, s:i}",
                                     "cmd", "vm.define", "name", name, "config", "kernel", guest,
                                     "cmdline", "fill=64 dirty=10 hb=1000 check=1000 disk=1",
                                     "mem_mib", 1024, "vcpus", 2, "disks", "path", disk, "ro", 0,
                                     "ha", 1,
                                     "priority", i % 10));
        if (!r || !json_is_true(json_object_get(r, "ok"))) {
            fprintf(stderr, "agent: defining %s failed\n", name);
            json_decref(r);
            goto out;
        }
        json_decref(r);
    }
    double define_ms = (now_s() - t0) * 1000.0 / NR_VMS;

    double c0 = proc_cpu_s(ternd[1].pid);
    test_sleep_ms(5000);
    double idle_cpu = (proc_cpu_s(ternd[1].pid) - c0) / 5.0 * 100.0;
    long rss_kib = proc_status_kib(ternd[1].pid, "VmRSS:");

    json_t *st = call(1, json_pack("{s:s}", "cmd", "status"));
    char *doc = json_dumps(json_object_get(st, "result"), JSON_COMPACT);
    size_t state_bytes = doc ? strlen(doc) : 0;
    free(doc);
    json_decref(st);
    json_int_t target = version_of(1, &synced);

    double j0 = now_s();
    if (start_ternd(3) < 0)
        goto out;
    double join_s = -1;
    while (now_s() - j0 < 30) {
        bool s3 = false;
        json_int_t v = version_of(3, &s3);
        if (s3 && v >= target) {
            join_s = now_s() - j0;
            break;
        }
        test_sleep_ms(5);
    }
    double ceiling = ceiling_cpg(state_bytes);

    json_t *out = json_pack("{s:s, s:i, s:f, s:f, s:f, s:f, s:I, s:f, s:f, s:f}", "bench", "agent",
                            "vms", NR_VMS, "define_ms_per_vm", define_ms, "rss_mib",
                            rss_kib / 1024.0, "rss_budget_mib", 30.0, "idle_cpu_percent",
                            idle_cpu, "state_bytes", (json_int_t)state_bytes, "join_sync_s",
                            join_s, "join_sync_budget_s", 1.0, "ceiling_cpg_s", ceiling);
    char *line = json_dumps(out, JSON_INDENT(2));
    printf("%s\n", line);
    free(line);
    json_decref(out);
    rc = join_s < 0 ? 1 : 0;
out:
    for (int h = 1; h <= 3; h++)
        test_proc_kill(&ternd[h]);
    test_cluster_destroy(&cl);
    return rc;
}
