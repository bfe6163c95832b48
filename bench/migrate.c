/* bench/migrate: live migrations between two test hosts (network
 * namespaces), as JSON, next to ceilings measured in the same run: memcpy
 * bandwidth, one core's AEAD throughput for the negotiated cipher, and
 * loopback TLS throughput of the migration transport between the same two
 * namespaces.
 *
 * Runs (1 vCPU; issue 4): a 1 GiB guest with 768 MiB filled at dirty 0, 25
 * and 100 MB/s, and a 4 GiB guest with 512 MiB filled, idle. Per run: total
 * seconds, VMM-measured pause, guest-observed pause (the heartbeat gap across
 * the handover), the guest's longest heartbeat gap before the migration and
 * through its rounds (a stall outside the handover would show there),
 * rounds, bytes on the wire and per encoding, and the bytes
 * on the wire per total second (connection and handover included) as a
 * ratio to the TLS ceiling.
 *
 * Each run also reports the CPU seconds per GB moved on each side (vCPU
 * threads left out), next to what the transport alone costs per GB on each
 * side (the ceiling's sending and receiving threads): on a machine whose
 * cores are all busy, their ratio bounds the throughput ratio.
 *
 * Usage: migrate BUILD_DIR [STREAMS]   (needs root: network namespaces)
 * TERN_BENCH_RUNS=1G-dirty0,...  only these runs
 * TERN_BENCH_THREADS=1           each VMM thread's CPU seconds on stderr */
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migrate/certs.h"
#include "node-vmm/control.h"
#include "tests/support/ceilings.h"
#include "tests/support/netns.h"
#include "tests/support/proc.h"

#define TOKEN "bench-migration-token-0123456789"
/* The pause budget asked for: issue 4 aims for 10 ms at 100 MB/s. */
#define BENCH_DOWNTIME_MS 10.0

static json_t *call(const char *sock, json_t *req)
{
    json_t *reply = NULL;
    struct tern_err err;
    int rc = control_call(sock, req, 30000, &reply, &err);
    json_decref(req);
    return rc == 0 ? reply : NULL;
}

static int wait_file(const char *path, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        if (access(path, F_OK) == 0)
            return 0;
        test_sleep_ms(10);
    }
    return -1;
}

struct run {
    const char *name, *mem, *cmdline;
};

/* utime + stime of a /proc/.../stat file, in seconds. */
static double stat_cpu_s(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* comm may hold spaces */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds of a tern-vmm process so far, its vCPU threads left out:
 * what the migration itself cost that side (threads that ended count
 * too), whatever else the machine was doing meanwhile. */
static double vmm_cpu_s(pid_t pid)
{
    char path[128];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    double total = stat_cpu_s(path);
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return total;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char comm[64] = "", cpath[300];
        snprintf(cpath, sizeof(cpath), "/proc/%d/task/%s/comm", (int)pid, e->d_name);
        FILE *f = fopen(cpath, "r");
        if (f) {
            if (!fgets(comm, sizeof(comm), f))
                comm[0] = 0;
            fclose(f);
        }
        snprintf(cpath, sizeof(cpath), "/proc/%d/task/%s/stat", (int)pid, e->d_name);
        comm[strcspn(comm, "\n")] = 0;
        if (getenv("TERN_BENCH_THREADS"))
            fprintf(stderr, "pid %d task %s %s cpu %.3f\n", (int)pid, e->d_name, comm, stat_cpu_s(cpath));
        if (!strncmp(comm, "vcpu", 4))
            total -= stat_cpu_s(cpath);
    }
    closedir(d);
    return total;
}

/* heartbeat.max_gap_ms of a running VMM, -1 if it does not answer. */
static double src_heartbeat_max_gap_ms(const char *sock)
{
    json_t *st = call(sock, json_pack("{s:s}", "cmd", "status"));
    json_t *g = json_object_get(json_object_get(st, "heartbeat"), "max_gap_ms");
    double v = json_is_number(g) ? json_number_value(g) : -1;
    json_decref(st);
    return v;
}

/* The TLS ceiling between the two hosts right now (MB/s), 0 on failure:
 * measured next to each migration, since the machine's load moves. */
static double tls_ceiling_now(struct test_hosts *h, const char *tls0, const char *tls1,
                              int streams, double seconds)
{
    struct ceiling_tls_opts o = {.server_dir = tls1, .client_dir = tls0,
                                 .server_netns = h->ns[1], .client_netns = h->ns[0],
                                 .listen_addr = h->addr[1], .streams = streams,
                                 .seconds = seconds};
    struct ceiling_tls_result tr = {0};
    struct tern_err err = {0};
    return ceiling_tls(&o, &tr, &err) == 0 ? tr.MBps : 0;
}

static json_t *one_run(const struct run *r, struct test_hosts *h, const char *dir,
                       const char *tls0, const char *tls1, int streams)
{
    char src_sock[512], dst_sock[512], src_log[512], dst_log[512], s_opt[600], d_opt[600], uri[64];
    snprintf(src_sock, sizeof(src_sock), "%s/%s-src.sock", dir, r->name);
    snprintf(dst_sock, sizeof(dst_sock), "%s/%s-dst.sock", dir, r->name);
    snprintf(src_log, sizeof(src_log), "%s/%s-src.log", dir, r->name);
    snprintf(dst_log, sizeof(dst_log), "%s/%s-dst.log", dir, r->name);
    snprintf(s_opt, sizeof(s_opt), "file:%s", src_log);
    snprintf(d_opt, sizeof(d_opt), "file:%s", dst_log);
    snprintf(uri, sizeof(uri), "tls://%s:7800", h->addr[1]);
    struct test_proc src = {0}, dst = {0};
    json_t *out = NULL;
    char *sargv[] = {(char *)test_build_path("tern-vmm"), "run", "--kernel",
                     (char *)test_build_path("testguest.elf"), "--mem", (char *)r->mem,
                     "--cmdline", (char *)r->cmdline, "--serial", s_opt, "--control", src_sock,
                     NULL};
    char *dargv[] = {(char *)test_build_path("tern-vmm"), "run", "--incoming", uri, "--tls-dir",
                     (char *)tls1, "--token", TOKEN, "--mem", (char *)r->mem, "--serial", d_opt,
                     "--control", dst_sock, NULL};
    if (test_proc_start_in(&src, h, 0, dir, sargv) < 0 || wait_file(src_sock, 10000) < 0)
        goto out;
    /* The fill is sliced between heartbeats; a passed check means it is
     * done. Checks are 10 s apart: a full check reads all the filled
     * memory (0.7 s of a core for 768 MiB here), which must not overlap
     * the migration or the ceilings measured around it. */
    if (!test_wait_for_text(src_log, "checks=1 ", 120000))
        goto out;
    test_sleep_ms(1000); /* steady dirtying */
    /* The transport's speed just before, with this guest running. */
    double ceiling_before = tls_ceiling_now(h, tls0, tls1, streams, 1.0);
    if (test_proc_start_in(&dst, h, 1, dir, dargv) < 0)
        goto out;
    for (int i = 0; i < 500 && !test_wait_for_text(dst.err_path, "waiting for a migration", 0); i++)
        test_sleep_ms(10);
    test_sleep_ms(100);
    double src_cpu0 = vmm_cpu_s(src.pid), dst_cpu0 = vmm_cpu_s(dst.pid);
    /* The guest's longest heartbeat gap so far; if it grows before the
     * pause, the migration stalled the guest outside the handover. */
    double gap_before = src_heartbeat_max_gap_ms(src_sock);
    json_t *rep = call(src_sock, json_pack("{s:s, s:s, s:s, s:s, s:i, s:f}", "cmd", "migrate", "uri",
                                           uri, "tls_dir", tls0, "token", TOKEN, "streams", streams,
                                           "downtime_ms", BENCH_DOWNTIME_MS));
    if (!rep || !json_is_true(json_object_get(rep, "ok"))) {
        json_decref(rep);
        goto out;
    }
    json_decref(rep);
    json_t *result = NULL;
    for (int i = 0; i < 1200 && !result; i++) {
        json_t *st = call(src_sock, json_pack("{s:s}", "cmd", "status"));
        if (!st)
            break;
        json_t *m = json_object_get(st, "migration");
        const char *o = json_string_value(json_object_get(m, "outcome"));
        if (o && *o)
            result = json_incref(m);
        json_decref(st);
        if (!result)
            test_sleep_ms(100);
    }
    if (!result)
        goto out;
    double src_cpu = vmm_cpu_s(src.pid) - src_cpu0; /* it lingers 2 s after the handover */
    /* The source's heartbeats end at the pause, so its longest gap now
     * covers the rounds but not the handover. */
    double gap_after = src_heartbeat_max_gap_ms(src_sock);
    wait_file(dst_sock, 10000);
    test_sleep_ms(300);
    json_t *dst_status = call(dst_sock, json_pack("{s:s}", "cmd", "status"));
    double dst_cpu = vmm_cpu_s(dst.pid) - dst_cpu0;
    json_t *hb = json_object_get(dst_status, "heartbeat");
    json_t *gap = json_object_get(hb, "handover_gap_ms");
    json_t *parts = json_object_get(result, "pause_parts_ms");
    double total_s = json_number_value(json_object_get(result, "elapsed_s"));
    double wire = (double)json_integer_value(json_object_get(result, "bytes_sent"));
    out = json_pack("{s:s, s:s, s:s, s:f, s:O, s:O, s:O, s:O, s:O, s:O, s:O, s:O, s:O}",
                    "run", r->name, "mem", r->mem, "cmdline", r->cmdline,
                    "wire_MBps", total_s > 0 ? wire / total_s / 1e6 : 0.0,
                    "outcome", json_object_get(result, "outcome"),
                    "total_s", json_object_get(result, "elapsed_s"),
                    "pause_ms_vmm", json_object_get(result, "pause_ms"),
                    "pause_ms_guest", gap ? gap : json_null(),
                    "pause_parts_ms", parts ? parts : json_null(),
                    "rounds", json_object_get(result, "round"),
                    "bytes_on_wire", json_object_get(result, "bytes_sent"),
                    "encodings", json_object_get(result, "encodings"),
                    "streams", json_object_get(result, "streams"));
    json_object_set(out, "first_round_MBps", json_object_get(result, "first_round_MBps"));
    if (gap_before >= 0 && gap_after >= 0) {
        json_object_set_new(out, "guest_max_gap_ms_before", json_real(gap_before));
        json_object_set_new(out, "guest_max_gap_ms_through_rounds", json_real(gap_after));
    }
    json_object_set(out, "timeline_ms", json_object_get(result, "timeline_ms"));
    /* And just after (the destination guest runs now; the source is gone). */
    double ceiling_after = tls_ceiling_now(h, tls0, tls1, streams, 1.0);
    if (ceiling_before > 0 && ceiling_after > 0) {
        double c = (ceiling_before + ceiling_after) / 2;
        json_object_set_new(out, "tls_ceiling_around_MBps", json_real(c));
        json_object_set_new(out, "wire_to_ceiling_around", json_real(wire / total_s / 1e6 / c));
        json_object_set_new(out, "first_round_to_ceiling_around",
                            json_real(json_number_value(json_object_get(result, "first_round_MBps")) / c));
    }
    /* CPU per GB moved: independent of what else the machine runs. */
    if (wire > 0) {
        json_object_set_new(out, "src_cpu_s_per_GB", json_real(src_cpu / (wire / 1e9)));
        json_object_set_new(out, "dst_cpu_s_per_GB", json_real(dst_cpu / (wire / 1e9)));
    }
    json_decref(dst_status);
    json_decref(result);
out:
    test_proc_signal(&dst, SIGTERM);
    test_proc_signal(&src, SIGTERM);
    if (!test_proc_wait(&dst, 10000))
        test_proc_kill(&dst);
    if (!test_proc_wait(&src, 10000))
        test_proc_kill(&src);
    return out ? out : json_pack("{s:s, s:s}", "run", r->name, "outcome", "error");
}

int main(int argc, char **argv)
{
    if (argc > 1)
        setenv("TERN_BUILD", argv[1], 1);
    int streams = argc > 2 ? atoi(argv[2]) : 1;
    if (streams < 1 || streams > 8)
        streams = 1;
    if (geteuid() != 0) {
        fprintf(stderr, "bench/migrate: needs root (network namespaces)\n");
        return 1;
    }
    char *dir = test_make_tmpdir("bench-migrate");
    struct test_hosts h;
    char errs[256];
    if (!dir || test_hosts_create(&h, 2, errs, sizeof(errs)) < 0) {
        fprintf(stderr, "bench/migrate: %s\n", dir ? errs : "no temporary directory");
        return 1;
    }
    char ca[600], tls0[600], tls1[600];
    snprintf(ca, sizeof(ca), "%s/ca", dir);
    snprintf(tls0, sizeof(tls0), "%s/host0", dir);
    snprintf(tls1, sizeof(tls1), "%s/host1", dir);
    struct tern_err err;
    if (mig_certs_init_ca(ca, "bench-ca", 2, &err) < 0 ||
        mig_certs_issue(ca, tls0, "host0", 2, &err) < 0 ||
        mig_certs_issue(ca, tls1, "host1", 2, &err) < 0) {
        fprintf(stderr, "bench/migrate: certificates: %s\n", err.msg);
        test_hosts_destroy(&h);
        return 1;
    }
    static const struct run runs[] = {
        {"1G-dirty0", "1G", "fill=768 dirty=0 hb=1000 check=10000"},
        {"1G-dirty25", "1G", "fill=768 dirty=25 hb=1000 check=10000"},
        {"1G-dirty100", "1G", "fill=768 dirty=100 hb=1000 check=10000"},
        {"4G-fill512-idle", "4G", "fill=512 dirty=0 hb=1000 check=10000"},
    };
    /* TERN_BENCH_RUNS=1G-dirty0,4G-fill512-idle picks runs (for profiling). */
    const char *only = getenv("TERN_BENCH_RUNS");
    json_t *results = json_array();
    for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
        if (only) {
            char pat[64];
            snprintf(pat, sizeof(pat), ",%s,", runs[i].name);
            char list[512];
            snprintf(list, sizeof(list), ",%s,", only);
            if (!strstr(list, pat))
                continue;
        }
        json_array_append_new(results, one_run(&runs[i], &h, dir, tls0, tls1, streams));
    }

    /* Ceilings, measured now, on the same machine and the same path. */
    double memcpy_MBps = ceiling_memcpy_MBps(64u << 20, 1.0);
    struct ceiling_tls_opts o = {.server_dir = tls1, .client_dir = tls0,
                                 .server_netns = h.ns[1], .client_netns = h.ns[0],
                                 .listen_addr = h.addr[1], .streams = streams, .seconds = 2};
    struct ceiling_tls_result tr = {0};
    struct tern_err terr = {0};
    int tls_ok = ceiling_tls(&o, &tr, &terr) == 0;
    /* One core's AEAD for the cipher TLS actually negotiated. */
    const char *cipher = tls_ok ? ceiling_suite_cipher(tr.cipher) : "AES-128-GCM";
    double aead = 0;
    struct tern_err aerr;
    (void)ceiling_aead_MBps(cipher, 16384, 1.0, &aead, &aerr);
    json_t *ceil = json_pack("{s:f, s:s, s:f, s:o}", "memcpy_MBps", memcpy_MBps, "aead_cipher",
                             cipher, "aead_one_core_MBps", aead, "tls_loopback_MBps",
                             tls_ok ? json_real(tr.MBps) : json_string(terr.msg));
    /* What the transport alone costs per GB on each side: with both cores
     * busy, the migration's throughput relative to the ceiling can be at
     * most the ratio of the two sides' CPU per GB (cpu_bound_ratio). */
    double ceil_cpu = 0;
    if (tls_ok && tr.bytes) {
        double snd = tr.sender_cpu_s * 1e9 / (double)tr.bytes;
        double rcv = tr.receiver_cpu_s * 1e9 / (double)tr.bytes;
        ceil_cpu = snd + rcv;
        json_object_set_new(ceil, "tls_sender_cpu_s_per_GB", json_real(snd));
        json_object_set_new(ceil, "tls_receiver_cpu_s_per_GB", json_real(rcv));
    }
    /* Ratios to the ceiling of the same run: the transport's own speed. */
    size_t i;
    json_t *run;
    json_array_foreach(results, i, run) {
        json_t *w = json_object_get(run, "wire_MBps");
        json_t *r0 = json_object_get(run, "first_round_MBps");
        if (w && tls_ok && tr.MBps > 0)
            json_object_set_new(run, "wire_to_tls_ceiling", json_real(json_number_value(w) / tr.MBps));
        if (r0 && tls_ok && tr.MBps > 0)
            json_object_set_new(run, "first_round_to_tls_ceiling",
                                json_real(json_number_value(r0) / tr.MBps));
        double mig_cpu = json_number_value(json_object_get(run, "src_cpu_s_per_GB")) +
                         json_number_value(json_object_get(run, "dst_cpu_s_per_GB"));
        if (ceil_cpu > 0 && mig_cpu > 0)
            json_object_set_new(run, "cpu_bound_ratio", json_real(ceil_cpu / mig_cpu));
    }
    json_t *outj = json_pack("{s:s, s:i, s:f, s:o, s:o}", "bench", "migrate", "streams", streams,
                             "downtime_ms", BENCH_DOWNTIME_MS, "ceilings", ceil, "runs", results);
    char *s = json_dumps(outj, JSON_INDENT(2));
    printf("%s\n", s);
    free(s);
    json_decref(outj);
    test_hosts_destroy(&h);
    test_rmtree(dir);
    free(dir);
    return 0;
}
