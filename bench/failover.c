/* bench/failover: a host dies; how long until each of its HA VMs runs on a
 * survivor (issue 13), on three test hosts with real corosync (token 300
 * ms, token_coefficient 0) and ternd. h3 is SIGKILLed whole (every process
 * of its cgroup); its HA VMs are tern-vmm-standin (no guest: no KVM needed;
 * its first heartbeat, 10 ms after it runs, stands for the guest's), so
 * "VMM start" here is the stand-in's, not tern-vmm's boot.
 *
 * Scenarios: h3 fenced by fence_dummy, by fence_ipmilan through its BMC
 * (OpenIPMI's ipmi_sim, tests/support/bmc.h), and with no fence device
 * but a watchdog (its self-fence deadline); with 1 and 8 HA VMs.
 *
 * Each part is taken from the survivors' ternd logs (wall-clock stamps):
 *   membership_s      kill -> corosync's configuration change delivered to
 *                     the fencer's ternd: corosync's own time, the peer
 *   decision_ms       that -> the fencer starts the fence levels
 *   fence_agent_s     the fence agent's own run (its log line)
 *   fenced_to_start_ms the agent's result -> host_fenced broadcast, ordered,
 *                     applied, recovery placed, the new owner starting the VM
 *   vmm_start_ms      the new owner starts it -> its control socket answers
 *   first_heartbeat_ms -> the bench sees its first heartbeat (10 ms polls)
 *   tern_ms           decision + fenced_to_start: what Tern adds above
 *                     corosync, the fence agent and the VMM (ceiling 50 ms)
 *   total_s           kill -> the last VM's first heartbeat (target < 1 s
 *                     with a fence device; without, the deadline + 1 s)
 *
 * Usage: failover BUILD_DIR [RUNS]; TERN_BENCH_SCENARIO=NAME runs one. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "node-vmm/control.h"
#include "tests/support/bmc.h"
#include "tests/support/proc.h"
#include "tests/support/ternd_hosts.h"

#define HOSTS 3
#define MAX_VMS 8
#define WATCHDOG_S 1

enum scenario { SC_DUMMY, SC_IPMI, SC_WATCHDOG };
static const char *const sc_names[] = {"fence_dummy", "fence_ipmilan", "watchdog"};

static struct ternd_hosts T;
static struct test_bmc bmc3;
static struct test_proc wd[HOSTS + 1];
static enum scenario sc;

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Seconds since local midnight, as ternd's log stamps them. */
static double wall_of_day(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    return tm.tm_hour * 3600.0 + tm.tm_min * 60.0 + tm.tm_sec + ts.tv_nsec / 1e9;
}

/* The stamp of the first line of host h's ternd log at or after `after`
 * (seconds of day) containing every needle; -1 if none. */
static double log_time(int h, double after, const char *n1, const char *n2)
{
    FILE *f = fopen(T.ternd[h].err_path, "r");
    if (!f)
        return -1;
    char line[2048];
    double found = -1;
    while (found < 0 && fgets(line, sizeof(line), f)) {
        int hh, mm;
        double ss;
        if (sscanf(line, "ternd: %d:%d:%lf", &hh, &mm, &ss) != 3)
            continue;
        double t = hh * 3600.0 + mm * 60.0 + ss;
        if (t + 0.0005 >= after && strstr(line, n1) && (!n2 || strstr(line, n2)))
            found = t;
    }
    fclose(f);
    return found;
}

static double log_value(int h, double after, const char *needle, const char *fmt)
{
    FILE *f = fopen(T.ternd[h].err_path, "r");
    if (!f)
        return -1;
    char line[2048];
    double v = -1;
    while (v < 0 && fgets(line, sizeof(line), f)) {
        int hh, mm;
        double ss;
        if (sscanf(line, "ternd: %d:%d:%lf", &hh, &mm, &ss) != 3 ||
            hh * 3600.0 + mm * 60.0 + ss + 0.0005 < after)
            continue;
        const char *p = strstr(line, needle);
        if (p && sscanf(p + strlen(needle), fmt, &v) != 1)
            v = -1;
    }
    fclose(f);
    return v;
}

static json_t *api(int h, json_t *req)
{
    return ternd_api(&T, h, req, NULL, 30000);
}

static bool ok(json_t *r)
{
    bool good = r && json_is_true(json_object_get(r, "ok"));
    if (!good) {
        char *d = r ? json_dumps(r, 0) : NULL;
        fprintf(stderr, "failover: request refused: %s\n", d ? d : "(no answer)");
        free(d);
    }
    json_decref(r);
    return good;
}

static long long heartbeats(int h, const char *vm)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/h%d/run/tern/vms/%s/control.sock", T.dir, h, vm);
    json_t *req = json_pack("{s:s}", "cmd", "status"), *reply = NULL;
    struct tern_err err;
    long long n = -1;
    if (control_call(path, req, 1000, &reply, &err) == 0)
        n = json_integer_value(json_object_get(json_object_get(reply, "heartbeat"), "count"));
    json_decref(req);
    json_decref(reply);
    return n;
}

static int owner_of(int at, const char *vm, bool *running)
{
    json_t *r = api(at, json_pack("{s:s, s:s}", "cmd", "vm.show", "name", vm));
    json_t *v = json_object_get(json_object_get(r, "result"), "vm");
    const char *o = json_string_value(json_object_get(v, "owner"));
    int h = o && o[0] == 'h' ? atoi(o + 1) : 0;
    *running = !strcmp(json_string_value(json_object_get(v, "state")) ?: "", "running");
    json_decref(r);
    return h;
}

static int start_watchdog(int h)
{
    char fifo[512], ms[16], out[512];
    snprintf(fifo, sizeof(fifo), "%s/h%d.watchdog", T.dir, h);
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
        usleep(10000);
    }
    return -1;
}

static int start_host(int h)
{
    char standin[PATH_MAX], lines[4096], agents[600];
    if (!realpath(test_build_path("tern-vmm-standin"), standin))
        return -1;
    snprintf(agents, sizeof(agents), "%s/agents", T.dir);
    int n = snprintf(lines, sizeof(lines), "vmm_path = %s\nfence_agent_dir = %s\nvcpus = 16\n", standin,
                     agents);
    if (sc == SC_DUMMY)
        snprintf(lines + n, sizeof(lines) - (size_t)n,
                 "fence_device = h3-power fence_dummy type=file status_file=%s/h3.power\n"
                 "fence_level = h3 1 h3-power\n", T.dir);
    else if (sc == SC_IPMI)
        snprintf(lines + n, sizeof(lines) - (size_t)n,
                 "fence_device = h3-bmc fence_ipmilan ip=%s username=admin "
                 "password_file=%s/h3-bmc.pw lanplus=1 cipher=3 power_wait=0\n"
                 "fence_level = h3 1 h3-bmc\n", bmc3.addr, T.dir);
    else {
        char fifo[512];
        snprintf(fifo, sizeof(fifo), "%s/h%d.watchdog", T.dir, h);
        snprintf(lines + n, sizeof(lines) - (size_t)n, "watchdog = %s\nwatchdog_timeout = %d\n",
                 fifo, WATCHDOG_S);
        if (start_watchdog(h) < 0)
            return -1;
    }
    if (ternd_hosts_write_config(&T, h, lines) < 0)
        return -1;
    return ternd_hosts_start(&T, h, NULL);
}

/* With watchdogs: every host armed its own and the cluster knows (the
 * survivors count on a lost host's deadline only once it announced it). */
static int wait_armed(void)
{
    if (sc != SC_WATCHDOG)
        return 0;
    for (int i = 0; i < 200; i++) {
        json_t *st = ternd_status(&T, 1);
        int armed = 0;
        json_t *h;
        size_t k;
        /* Armed since it came back: announced again (fencing over). */
        json_array_foreach(json_object_get(st, "hosts"), k, h)
            armed += json_integer_value(json_object_get(h, "watchdog_s")) == WATCHDOG_S &&
                     json_is_true(json_object_get(h, "online")) &&
                     !strcmp(json_string_value(json_object_get(json_object_get(h, "fence"),
                                                               "state")) ?: "", "none");
        json_decref(st);
        if (armed == HOSTS)
            return 0;
        usleep(50000);
    }
    fprintf(stderr, "failover: the hosts never announced their watchdogs\n");
    return -1;
}

static int cluster_up(void)
{
    char err[1024];
    if (ternd_hosts_create(&T, HOSTS, "bench-failover", err, sizeof(err)) < 0) {
        fprintf(stderr, "failover: test hosts: %s\n", err);
        return -1;
    }
    char p[600];
    snprintf(p, sizeof(p), "%s/agents", T.dir);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/agents/fence_dummy", T.dir);
    if (symlink("/usr/sbin/fence_dummy", p) < 0)
        return -1;
    snprintf(p, sizeof(p), "%s/agents/fence_ipmilan", T.dir);
    if (symlink("/usr/sbin/fence_ipmilan", p) < 0)
        return -1;
    if (sc == SC_IPMI) {
        if (test_bmc_start(&bmc3, &T.cl, 3, "admin", "benchpw1", err, sizeof(err)) < 0) {
            fprintf(stderr, "failover: h3's BMC: %s\n", err);
            return -1;
        }
        snprintf(p, sizeof(p), "%s/h3-bmc.pw", T.dir);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, "benchpw1", 8) != 8 || close(fd) < 0)
            return -1;
    }
    for (int h = 1; h <= HOSTS; h++)
        if (start_host(h) < 0)
            return -1;
    return ternd_hosts_agree(&T, 0xe, HOSTS, true, 60000) ? wait_armed() : -1;
}

static void cluster_down(void)
{
    for (int h = 1; h <= HOSTS; h++)
        test_proc_kill(&wd[h]);
    test_bmc_stop(&bmc3);
    ternd_hosts_destroy(&T);
    memset(&bmc3, 0, sizeof(bmc3));
}

/* Puts VMs ha0..ha<nr-1> on h3, running (defining those not defined yet,
 * stopping the others where they run now). */
static int defined_vms;

static int vms_on_h3(int nr)
{
    for (int i = 0; i < nr; i++) {
        char name[16];
        snprintf(name, sizeof(name), "ha%d", i);
        if (i >= defined_vms) {
            defined_vms = i + 1;
            json_t *cfg = json_pack("{s:s, s:i, s:i}", "kernel", T.guest, "mem_mib", 64, "vcpus", 1);
            if (!ok(api(1, json_pack("{s:s, s:s, s:o, s:b, s:i}", "cmd", "vm.define", "name",
                                     name, "config", cfg, "ha", 1, "priority", nr - i))))
                return -1;
        } else if (!ok(api(1, json_pack("{s:s, s:s}", "cmd", "vm.stop", "name", name)))) {
            return -1;
        }
        if (!ok(api(1, json_pack("{s:s, s:s, s:s}", "cmd", "vm.start", "name", name, "host",
                                 "h3"))))
            return -1;
    }
    return 0;
}

struct parts {
    double total, membership, decision_ms, agent, to_start_ms, vmm_ms, hb_ms, tern_ms;
};

static int one_run(int nr, struct parts *out)
{
    char err[1024];
    double w0 = wall_of_day(), t0 = mono();
    if (test_cluster_kill_host(&T.cl, 3, err, sizeof(err)) < 0) {
        fprintf(stderr, "failover: killing h3: %s\n", err);
        return -1;
    }
    double seen[MAX_VMS] = {0};
    int owner[MAX_VMS] = {0}, left = nr;
    while (left > 0 && mono() - t0 < 60) {
        for (int i = 0; i < nr; i++) {
            if (seen[i])
                continue;
            char name[16];
            snprintf(name, sizeof(name), "ha%d", i);
            bool running;
            int o = owner_of(1, name, &running);
            if (o && o != 3 && running && heartbeats(o, name) > 0) {
                seen[i] = mono();
                owner[i] = o;
                left--;
            }
        }
        usleep(5000);
    }
    if (left) {
        fprintf(stderr, "failover: %d VMs never ran elsewhere\n", left);
        json_t *st = ternd_status(&T, 1);
        char *d = st ? json_dumps(json_object_get(st, "hosts"), 0) : NULL;
        fprintf(stderr, "failover: h1 sees the hosts as %s\n", d ? d : "?");
        free(d);
        json_decref(st);
        ternd_hosts_print_logs(&T);
        return -1;
    }
    double last = 0;
    for (int i = 0; i < nr; i++)
        last = seen[i] > last ? seen[i] : last;
    out->total = last - t0;
    /* The fencer is h1 (lowest node id). */
    double t_member = log_time(1, w0, "membership:", "1 of them with their node");
    double t_decide = sc == SC_WATCHDOG ? log_time(1, w0, "fencing h3", "lost for")
                                        : log_time(1, w0, "fencing h3", "running its fence levels");
    double t_fenced = sc == SC_WATCHDOG ? t_decide : log_time(1, w0, "fencing h3", "off after");
    double agent = sc == SC_WATCHDOG ? 0 : log_value(1, w0, "off after ", "%lf");
    /* The first VM's start on its new owner. */
    double t_start = -1, t_up = -1;
    for (int i = 0; i < nr; i++) {
        char name[40], up[48];
        snprintf(name, sizeof(name), "VM ha%d: starting it here", i);
        snprintf(up, sizeof(up), "VM ha%d: its process up", i);
        double s = log_time(owner[i], w0, name, NULL), u = log_time(owner[i], w0, up, NULL);
        if (s >= 0 && (t_start < 0 || s < t_start)) {
            t_start = s;
            t_up = u;
        }
    }
    if (t_member < 0 || t_decide < 0 || t_fenced < 0 || t_start < 0 || t_up < 0) {
        fprintf(stderr, "failover: a step is missing from the logs (%.3f %.3f %.3f %.3f %.3f)\n",
                t_member, t_decide, t_fenced, t_start, t_up);
        return -1;
    }
    out->membership = t_member - w0;
    out->decision_ms = (t_decide - t_member) * 1e3;
    out->agent = agent;
    /* The agent's own time is inside decision..fenced; the rest is Tern's. */
    out->to_start_ms = (t_start - t_fenced) * 1e3;
    out->vmm_ms = (t_up - t_start) * 1e3;
    out->hb_ms = (last - t0 - (t_up - w0)) * 1e3;
    out->tern_ms = sc == SC_WATCHDOG ? out->to_start_ms : out->decision_ms + out->to_start_ms;
    return 0;
}

static int revive3(void)
{
    char err[1024];
    if (test_cluster_start_corosync(&T.cl, 3, err, sizeof(err)) < 0) {
        fprintf(stderr, "failover: h3's corosync: %s\n", err);
        return -1;
    }
    if (sc == SC_DUMMY) {
        char p[600];
        snprintf(p, sizeof(p), "%s/h3.power", T.dir);
        FILE *f = fopen(p, "w");
        if (f) {
            fputs("on", f);
            fclose(f);
        }
    }
    if (start_host(3) < 0)
        return -1;
    return ternd_hosts_agree(&T, 0xe, HOSTS, true, 90000) ? wait_armed() : -1;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_d);
    return v[n / 2];
}

int main(int argc, char **argv)
{
    int runs = argc > 2 ? atoi(argv[2]) : 3;
    if (runs < 1 || runs > 20)
        runs = 3;
    json_t *results = json_array();
    static const int sizes[] = {1, MAX_VMS};
    const char *only = getenv("TERN_BENCH_SCENARIO");
    for (sc = SC_DUMMY; sc <= SC_WATCHDOG; sc++) {
        if (only && strcmp(only, sc_names[sc]) != 0)
            continue;
        if (cluster_up() < 0) {
            cluster_down();
            return 1;
        }
        defined_vms = 0;
        for (size_t z = 0; z < 2; z++) {
            int nr = sizes[z];
            double total[20], mem[20], dec[20], ag[20], ts[20], vm[20], hb[20], tern[20];
            for (int r = 0; r < runs; r++) {
                struct parts p;
                if (vms_on_h3(nr) < 0 ||
                    one_run(nr, &p) < 0 || revive3() < 0) {
                    cluster_down();
                    return 1;
                }
                total[r] = p.total, mem[r] = p.membership, dec[r] = p.decision_ms;
                ag[r] = p.agent, ts[r] = p.to_start_ms, vm[r] = p.vmm_ms, hb[r] = p.hb_ms;
                tern[r] = p.tern_ms;
                fprintf(stderr, "failover %s, %d VM%s, run %d: total %.3f s (membership %.3f s, "
                                "decision %.1f ms, agent %.3f s, fenced->start %.1f ms, VMM %.1f "
                                "ms, heartbeat %.1f ms)\n",
                        sc_names[sc], nr, nr == 1 ? "" : "s", r + 1, p.total, p.membership,
                        p.decision_ms, p.agent, p.to_start_ms, p.vmm_ms, p.hb_ms);
            }
            /* What the survivors count on (agent/ha.c deadline_s, without
             * its 1 s margin, which the target's "+ 1 s" stands for): the
             * reset after the last watchdog_healthy (timeout/2 + a feeding
             * period + timeout), a freeze shorter than the feeder's window
             * (timeout/2), and corosync noticing the cut (the test hosts'
             * token 300 ms + its default consensus, 1.2 x token). */
            double deadline = sc == SC_WATCHDOG
                                  ? (double)(WATCHDOG_S * 1000 / 2 + 250 + WATCHDOG_S * 1000 +
                                             WATCHDOG_S * 1000 / 2 + 300 + 360) /
                                        1e3
                                  : 0;
            double med_total = median(total, runs), med_tern = median(tern, runs);
            double ceiling = sc == SC_WATCHDOG ? median(mem, runs) + deadline + 1.0 : 1.0;
            json_array_append_new(
                results,
                json_pack("{s:s, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, "
                          "s:f, s:b, s:b}",
                          "scenario", sc_names[sc], "vms", nr, "runs", runs, "total_s", med_total,
                          "membership_s", median(mem, runs), "decision_ms", median(dec, runs),
                          "fence_agent_s", median(ag, runs), "fenced_to_start_ms",
                          median(ts, runs), "vmm_start_ms", median(vm, runs),
                          "first_heartbeat_ms", median(hb, runs), "tern_ms", med_tern,
                          "ceiling_tern_ms", 50.0, "ceiling_total_s", ceiling,
                          "self_fence_deadline_s", deadline, "within_total", med_total <= ceiling,
                          "within_tern", med_tern <= 50.0));
        }
        cluster_down();
    }
    json_t *out = json_pack("{s:s, s:s, s:o}", "bench", "failover", "corosync",
                            "token 300 ms, token_coefficient 0 (tests/support/cluster.c)",
                            "results", results);
    char *text = json_dumps(out, JSON_INDENT(2));
    printf("%s\n", text);
    free(text);
    json_decref(out);
    return 0;
}
