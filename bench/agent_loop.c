/* bench/agent_loop: how long ternd's loop makes a client wait while other
 * things would hold it (issue 12), on three test hosts running real
 * corosync and ternd, the VMs being tests/tools/tern-vmm-standin (no
 * guest: the loop is what is measured, so no KVM is needed).
 *
 * Load on h1: one VMM stopped by SIGSTOP and asked to stop (its agent
 * waits for a reply that never comes, then kills it), one client that
 * pipelines 200 status requests and never reads, 30 clients that each
 * pipeline 3000 status requests and read 4 KiB every 0.5 s.
 *
 *   status_ms            p50/p99/max of `status` from a fresh connection,
 *                        idle (the peer, same run) and under the load
 *                        (ceiling: 50 ms, the bound)
 *   define_ms            p50/max of vm.define asked at h1, idle and under
 *                        the load: a CPG round trip, applied and stored by
 *                        a majority (deliveries are not held up)
 *
 * Usage: agent_loop BUILD_DIR */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/proc.h"
#include "tests/support/ternd_hosts.h"

#define CEILING_MS 50.0
#define SLOW_CLIENTS 30
#define PROBES 400
#define DEFINES 20

static struct ternd_hosts T;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static json_t *summary(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return json_pack("{s:f, s:f, s:f, s:i}", "p50", v[n / 2], "p99", v[(n * 99) / 100], "max",
                     v[n - 1], "n", n);
}

static int agent_connect(int h)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/h%d/run/tern/ternd.sock", T.dir, h) >=
        (int)sizeof(sa.sun_path))
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

struct slow {
    int fd;
    int sent;
    int cap;
};

static struct slow slows[SLOW_CLIENTS + 1]; /* [SLOW_CLIENTS]: the one that never reads */
static double next_read;

/* Keeps the slow clients going: more requests as the agent takes them,
 * 4 KiB read every 0.5 s (not from the silent one). */
static void drive_slow(void)
{
    static const char line[] = "{\"cmd\":\"status\"}\n";
    const size_t len = sizeof(line) - 1;
    for (int i = 0; i <= SLOW_CLIENTS; i++)
        while (slows[i].fd >= 0 && slows[i].sent < slows[i].cap &&
               send(slows[i].fd, line, len, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)len)
            slows[i].sent++;
    if (now_s() < next_read)
        return;
    next_read = now_s() + 0.5;
    char buf[4096];
    for (int i = 0; i < SLOW_CLIENTS; i++)
        if (slows[i].fd >= 0 && recv(slows[i].fd, buf, sizeof(buf), MSG_DONTWAIT) == 0) {
            close(slows[i].fd);
            slows[i].fd = -1;
        }
}

static double timed(int h, const char *line)
{
    double t0 = now_s();
    json_t *r = ternd_api_line(&T, h, line, NULL, 30000);
    double ms = (now_s() - t0) * 1e3;
    bool ok = r && json_is_true(json_object_get(r, "ok"));
    json_decref(r);
    return ok ? ms : -1;
}

/* PROBES status requests and DEFINES defines at h1; fills the arrays. */
static int measure(const char *tag, double *status, double *define, bool load)
{
    char line[1024];
    for (int i = 0, d = 0; i < PROBES; i++) {
        if (load)
            drive_slow();
        if ((status[i] = timed(1, "{\"cmd\":\"status\"}")) < 0) {
            fprintf(stderr, "agent_loop: status at h1 failed (%s)\n", tag);
            return -1;
        }
        if (i % (PROBES / DEFINES) == 0 && d < DEFINES) {
            snprintf(line, sizeof(line),
                     "{\"cmd\":\"vm.define\",\"name\":\"%s-%d\",\"config\":{\"kernel\":\"%s\","
                     "\"mem_mib\":64,\"vcpus\":1}}",
                     tag, d, T.guest);
            if ((define[d++] = timed(1, line)) < 0) {
                fprintf(stderr, "agent_loop: vm.define at h1 failed (%s)\n", tag);
                return -1;
            }
        }
        usleep(5000);
    }
    return 0;
}

static pid_t vm_pid(int h, const char *vm)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/h%d/run/tern/vms/%s/pid", T.dir, h, vm);
    char *t = test_read_text(path);
    pid_t pid = t ? (pid_t)atoi(t) : 0;
    free(t);
    return pid;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    char err[1024], standin[PATH_MAX], extra[PATH_MAX + 64];
    if (!realpath(test_build_path("tern-vmm-standin"), standin)) {
        fprintf(stderr, "agent_loop: no %s (make all first)\n", test_build_path("tern-vmm-standin"));
        return 1;
    }
    if (ternd_hosts_create(&T, 3, "bench-loop", err, sizeof(err)) < 0) {
        fprintf(stderr, "agent_loop: test hosts: %s\n", err);
        ternd_hosts_destroy(&T);
        return 1;
    }
    int rc = 1;
    snprintf(extra, sizeof(extra), "vmm_path = %s\n", standin);
    for (int h = 1; h <= 3; h++)
        if (ternd_hosts_write_config(&T, h, extra) < 0 || ternd_hosts_start(&T, h, NULL) < 0)
            goto out;
    if (!ternd_hosts_agree(&T, 0xe, 3, true, 60000))
        goto out;

    static double idle_status[PROBES], idle_define[DEFINES], load_status[PROBES],
        load_define[DEFINES];
    if (measure("idle", idle_status, idle_define, false) < 0)
        goto out;

    /* The wedged VMM. */
    char def[1024];
    snprintf(def, sizeof(def),
             "{\"cmd\":\"vm.define\",\"name\":\"wedged\",\"config\":{\"kernel\":\"%s\","
             "\"mem_mib\":64,\"vcpus\":1}}",
             T.guest);
    json_t *r = ternd_api_line(&T, 1, def, NULL, 30000);
    json_decref(r);
    r = ternd_api_line(&T, 1, "{\"cmd\":\"vm.start\",\"name\":\"wedged\",\"host\":\"h1\"}", NULL,
                       30000);
    bool started = r && json_is_true(json_object_get(r, "ok"));
    json_decref(r);
    pid_t wedged = started ? vm_pid(1, "wedged") : 0;
    if (wedged <= 0 || kill(wedged, SIGSTOP) < 0) {
        fprintf(stderr, "agent_loop: could not start and stop the stand-in VM\n");
        goto out;
    }
    int stopper = agent_connect(1);
    const char stop[] = "{\"cmd\":\"vm.stop\",\"name\":\"wedged\"}\n";
    if (stopper < 0 || send(stopper, stop, sizeof(stop) - 1, MSG_NOSIGNAL) < 0) {
        fprintf(stderr, "agent_loop: asking to stop the wedged VM failed\n");
        goto out;
    }
    for (int i = 0; i <= SLOW_CLIENTS; i++) {
        slows[i].fd = agent_connect(1);
        slows[i].cap = i == SLOW_CLIENTS ? 200 : 3000;
        if (slows[i].fd < 0) {
            fprintf(stderr, "agent_loop: connecting a slow client failed\n");
            goto out;
        }
    }
    double t_load = now_s();
    if (measure("load", load_status, load_define, true) < 0)
        goto out;
    double load_s = now_s() - t_load;
    int sent = 0;
    for (int i = 0; i <= SLOW_CLIENTS; i++) {
        sent += slows[i].sent;
        if (slows[i].fd >= 0)
            close(slows[i].fd);
    }
    json_t *st = ternd_status(&T, 1);
    json_t *agent = json_incref(json_object_get(st, "agent"));
    json_decref(st);

    json_t *ls = summary(load_status, PROBES);
    double worst = json_real_value(json_object_get(ls, "max"));
    json_t *out = json_pack(
        "{s:s, s:f, s:{s:o, s:o}, s:{s:o, s:o}, s:{s:i, s:i, s:b, s:f}, s:o, s:f, s:b}",
        "bench", "agent_loop", "ceiling_status_ms", CEILING_MS, "status_ms", "idle",
        summary(idle_status, PROBES), "load", ls, "define_ms", "idle",
        summary(idle_define, DEFINES), "load", summary(load_define, DEFINES), "load",
        "slow_clients", SLOW_CLIENTS, "requests_pipelined", sent, "wedged_vmm", 1,
        "seconds", load_s, "agent", agent ? agent : json_null(), "worst_status_ms", worst,
        "within_ceiling", worst <= CEILING_MS);
    char *text = json_dumps(out, JSON_INDENT(2));
    printf("%s\n", text);
    free(text);
    json_decref(out);
    close(stopper);
    rc = 0;
out:
    ternd_hosts_destroy(&T);
    return rc;
}
