#include "netns.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NS_PREFIX "tern-t"

/* Runs a command given as printf arguments, quietly; returns its status. */
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
    char cmd[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    char full[600];
    snprintf(full, sizeof(full), "%s >/dev/null 2>&1", cmd);
    int st = system(full);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static struct test_hosts *live[4];

static void destroy_live(void)
{
    for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++)
        if (live[i])
            test_hosts_destroy(live[i]);
}

void test_hosts_reap_stale(void)
{
    DIR *d = opendir("/run/netns");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, NS_PREFIX, strlen(NS_PREFIX)) != 0)
            continue;
        long pid = strtol(e->d_name + strlen(NS_PREFIX), NULL, 10);
        if (pid > 0 && kill((pid_t)pid, 0) < 0 && errno == ESRCH)
            run("ip netns del %s", e->d_name);
    }
    closedir(d);
}

int test_hosts_create(struct test_hosts *h, int nr, char *err, size_t errlen)
{
    memset(h, 0, sizeof(*h));
    if (nr < 1 || nr > TEST_HOSTS_MAX) {
        snprintf(err, errlen, "between 1 and %d hosts", TEST_HOSTS_MAX);
        return -1;
    }
    test_hosts_reap_stale();
    static int seq;
    int id = seq++;
    int pid = (int)getpid();
    h->nr = nr;
    snprintf(h->sw, sizeof(h->sw), NS_PREFIX "%d-%d-sw", pid, id);
    if (run("ip netns add %s", h->sw) || run("ip -n %s link add br0 type bridge", h->sw) ||
        run("ip -n %s link set br0 up", h->sw)) {
        snprintf(err, errlen, "cannot create the switch namespace %s (root and iproute2 needed)",
                 h->sw);
        run("ip netns del %s", h->sw);
        return -1;
    }
    h->created = true;
    for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++) {
        if (!live[i]) {
            live[i] = h;
            break;
        }
    }
    static bool registered;
    if (!registered) {
        atexit(destroy_live);
        registered = true;
    }
    for (int i = 0; i < nr; i++) {
        snprintf(h->ns[i], sizeof(h->ns[i]), NS_PREFIX "%d-%d-h%d", pid, id, i);
        /* Interface names are at most 15 characters. */
        snprintf(h->veth[i], sizeof(h->veth[i]), "t%05d%02dh%d", pid % 100000, id % 100, i);
        snprintf(h->addr[i], sizeof(h->addr[i]), "10.77.0.%d", i + 1);
        if (run("ip netns add %s", h->ns[i]) ||
            run("ip link add %s type veth peer name %ss", h->veth[i], h->veth[i]) ||
            run("ip link set %s netns %s", h->veth[i], h->ns[i]) ||
            run("ip link set %ss netns %s", h->veth[i], h->sw) ||
            run("ip -n %s link set %ss master br0", h->sw, h->veth[i]) ||
            run("ip -n %s link set %ss up", h->sw, h->veth[i]) ||
            run("ip -n %s addr add %s/24 dev %s", h->ns[i], h->addr[i], h->veth[i]) ||
            run("ip -n %s link set %s up", h->ns[i], h->veth[i]) ||
            run("ip -n %s link set lo up", h->ns[i])) {
            snprintf(err, errlen, "cannot set up test host %s", h->ns[i]);
            test_hosts_destroy(h);
            return -1;
        }
    }
    return 0;
}

void test_hosts_destroy(struct test_hosts *h)
{
    if (!h->created)
        return;
    /* Deleting a namespace removes the veth end inside it, and with it the
     * peer. */
    for (int i = 0; i < h->nr; i++)
        if (h->ns[i][0])
            run("ip netns del %s", h->ns[i]);
    run("ip netns del %s", h->sw);
    h->created = false;
    for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++)
        if (live[i] == h)
            live[i] = NULL;
}

int test_host_link(const struct test_hosts *h, int i, bool up)
{
    return run("ip -n %s link set %s %s", h->ns[i], h->veth[i], up ? "up" : "down") ? -1 : 0;
}

int test_proc_start_in(struct test_proc *p, const struct test_hosts *h, int i, const char *dir,
                       char *const argv[])
{
    char *full[64];
    int n = 0;
    full[n++] = "/usr/sbin/ip";
    full[n++] = "netns";
    full[n++] = "exec";
    full[n++] = (char *)h->ns[i];
    for (int k = 0; argv[k] && n < 63; k++)
        full[n++] = argv[k];
    full[n] = NULL;
    if (access(full[0], X_OK) != 0)
        full[0] = "/sbin/ip";
    return test_proc_start(p, dir, full);
}
