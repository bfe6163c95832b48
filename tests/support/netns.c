#include "netns.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
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

/* Creates the switch `<prefix>sw` and hosts `<prefix>h<first>` onwards,
 * with veth names `<veth_base>h<n>` (host side) and `<veth_base>h<n>s`
 * (switch side). Registered for removal at exit unless `keep`. */
static int create(struct test_hosts *h, int nr, const char *prefix, int first, const char *veth_base,
                  bool keep, char *err, size_t errlen)
{
    memset(h, 0, sizeof(*h));
    if (nr < 1 || nr > TEST_HOSTS_MAX) {
        snprintf(err, errlen, "between 1 and %d hosts", TEST_HOSTS_MAX);
        return -1;
    }
    h->nr = nr;
    snprintf(h->veth_base, sizeof(h->veth_base), "%s", veth_base);
    /* The longest name is the last host's. */
    if (snprintf(h->sw, sizeof(h->sw), "%sh%d", prefix, nr + first) >= (int)sizeof(h->sw)) {
        snprintf(err, errlen, "namespace name prefix '%s' is too long", prefix);
        return -1;
    }
    snprintf(h->sw, sizeof(h->sw), "%ssw", prefix);
    if (run("ip netns add %s", h->sw) || run("ip -n %s link add br0 type bridge", h->sw) ||
        run("ip -n %s link set br0 up", h->sw)) {
        snprintf(err, errlen,
                 "cannot create the switch namespace %s (root and iproute2 needed; does it "
                 "exist already?)",
                 h->sw);
        run("ip netns del %s", h->sw);
        return -1;
    }
    h->created = true;
    if (!keep) {
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
    }
    for (int i = 0; i < nr; i++) {
        snprintf(h->ns[i], sizeof(h->ns[i]), "%sh%d", prefix, i + first);
        /* Interface names are at most 15 characters. */
        snprintf(h->veth[i], sizeof(h->veth[i]), "%sh%d", veth_base, i + first);
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

int test_hosts_create(struct test_hosts *h, int nr, char *err, size_t errlen)
{
    test_hosts_reap_stale();
    static int seq;
    int id = seq++;
    int pid = (int)getpid();
    char prefix[24], veth[12];
    snprintf(prefix, sizeof(prefix), NS_PREFIX "%d-%d-", pid, id);
    snprintf(veth, sizeof(veth), "t%05d%02d", pid % 100000, id % 100);
    /* Hosts are numbered from 0 here (…-h0 is 10.77.0.1), as before. */
    return create(h, nr, prefix, 0, veth, false, err, errlen);
}

/* Veth names only have to be unique while they pass through this
 * namespace on creation: derive them from the prefix (FNV-1a). */
static void named_veth_base(const char *prefix, char *out, size_t len)
{
    uint32_t hash = 2166136261u;
    for (const char *c = prefix; *c; c++)
        hash = (hash ^ (uint8_t)*c) * 16777619u;
    snprintf(out, len, "t%06x", (unsigned)(hash & 0xffffff));
}

int test_hosts_create_named(struct test_hosts *h, int nr, const char *prefix, bool keep,
                            char *err, size_t errlen)
{
    char veth[12];
    named_veth_base(prefix, veth, sizeof(veth));
    return create(h, nr, prefix, 1, veth, keep, err, errlen);
}

int test_hosts_attach_named(struct test_hosts *h, int nr, const char *prefix)
{
    memset(h, 0, sizeof(*h));
    if (nr < 1 || nr > TEST_HOSTS_MAX)
        return -1;
    char veth[12];
    named_veth_base(prefix, veth, sizeof(veth));
    h->nr = nr;
    snprintf(h->veth_base, sizeof(h->veth_base), "%s", veth);
    snprintf(h->sw, sizeof(h->sw), "%ssw", prefix);
    for (int i = 0; i < nr; i++) {
        snprintf(h->ns[i], sizeof(h->ns[i]), "%sh%d", prefix, i + 1);
        snprintf(h->veth[i], sizeof(h->veth[i]), "%sh%d", veth, i + 1);
        snprintf(h->addr[i], sizeof(h->addr[i]), "10.77.0.%d", i + 1);
    }
    char path[64];
    snprintf(path, sizeof(path), "/run/netns/%s", h->sw);
    if (access(path, F_OK) != 0)
        return -1;
    h->created = true;
    return 0;
}

void test_hosts_remove_prefix(const char *prefix)
{
    if (!prefix[0])
        return;
    DIR *d = opendir("/run/netns");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            run("ip netns del %s", e->d_name);
    closedir(d);
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
    for (int k = 0; k < h->nr_extra; k++)
        run("ip netns del %s", h->extra_ns[k]);
    h->nr_extra = 0;
    run("ip netns del %s", h->sw);
    h->created = false;
    for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++)
        if (live[i] == h)
            live[i] = NULL;
}

int test_hosts_add_extra(struct test_hosts *h, const char *suffix, const char *addr, char *ns,
                         size_t nslen, char *err, size_t errlen)
{
    if (!h->created || h->nr_extra == TEST_HOSTS_EXTRA_MAX || strlen(suffix) > 6 ||
        strlen(h->sw) < 2) {
        snprintf(err, errlen, "cannot add namespace '%s' to the test hosts (not created, or "
                              "%d extra ones already, or a suffix over 6 characters)",
                 suffix, TEST_HOSTS_EXTRA_MAX);
        return -1;
    }
    int k = h->nr_extra;
    char *name = h->extra_ns[k];
    /* The hosts' prefix is the switch's name without "sw". */
    if (snprintf(name, sizeof(h->extra_ns[k]), "%.*s%s", (int)strlen(h->sw) - 2, h->sw,
                 suffix) >= (int)sizeof(h->extra_ns[k])) {
        snprintf(err, errlen, "namespace name for '%s' too long", suffix);
        return -1;
    }
    char veth[16];
    snprintf(veth, sizeof(veth), "%sx%d", h->veth_base, k);
    if (run("ip netns add %s", name)) {
        snprintf(err, errlen, "cannot create network namespace %s", name);
        return -1;
    }
    h->nr_extra++;
    if (run("ip link add %s type veth peer name %ss", veth, veth) ||
        run("ip link set %s netns %s", veth, name) ||
        run("ip link set %ss netns %s", veth, h->sw) ||
        run("ip -n %s link set %ss master br0", h->sw, veth) ||
        run("ip -n %s link set %ss up", h->sw, veth) ||
        run("ip -n %s addr add %s/24 dev %s", name, addr, veth) ||
        run("ip -n %s link set %s up", name, veth) || run("ip -n %s link set lo up", name)) {
        snprintf(err, errlen, "cannot join namespace %s to the test bridge with address %s", name,
                 addr);
        return -1;
    }
    snprintf(ns, nslen, "%s", name);
    return 0;
}

int test_host_link(const struct test_hosts *h, int i, bool up)
{
    return run("ip -n %s link set %s %s", h->ns[i], h->veth[i], up ? "up" : "down") ? -1 : 0;
}

int test_host_bridge(const struct test_hosts *h, int i, int bridge)
{
    if (bridge != 0 && bridge != 1)
        return -1;
    if (bridge == 1 && run("ip -n %s link show br1", h->sw) != 0 &&
        (run("ip -n %s link add br1 type bridge", h->sw) || run("ip -n %s link set br1 up", h->sw)))
        return -1;
    return run("ip -n %s link set %ss master br%d", h->sw, h->veth[i], bridge) ? -1 : 0;
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
