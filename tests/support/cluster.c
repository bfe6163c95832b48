/* Test hosts running corosync (cluster.h, docs/test-hosts.md). */
#include "cluster.h"

#include <corosync/corotypes.h>
#include <corosync/votequorum.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/cgroup.h"

#define STALE_PREFIX "tern-t"

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool valid_host(const struct test_cluster *c, int i)
{
    return c && i >= 1 && i <= c->nr;
}

/* ---- clusters to remove at exit ---- */

static struct test_cluster *live[4];

static void destroy_live(void)
{
    for (size_t k = 0; k < sizeof(live) / sizeof(live[0]); k++)
        if (live[k] && live[k]->owner == getpid())
            test_cluster_destroy(live[k]);
}

static void track(struct test_cluster *c, bool on)
{
    static bool registered;
    for (size_t k = 0; k < sizeof(live) / sizeof(live[0]); k++) {
        if (on && !live[k]) {
            live[k] = c;
            break;
        }
        if (!on && live[k] == c)
            live[k] = NULL;
    }
    if (on && !registered) {
        atexit(destroy_live);
        registered = true;
    }
}

/* ---- files ---- */

static int mkdir_p(const char *path, mode_t mode)
{
    char tmp[512];
    if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

static void host_path(const struct test_cluster *c, int i, const char *sub, char *out, size_t len)
{
    snprintf(out, len, "%s/h%d%s%s", c->dir, i, sub[0] ? "/" : "", sub);
}

/* The last `max` bytes of a file, for error messages. */
static void tail_of(const char *path, char *out, size_t max)
{
    out[0] = '\0';
    char *t = test_read_text(path);
    size_t len = strlen(t);
    const char *from = len > max - 1 ? t + len - (max - 1) : t;
    snprintf(out, max, "%s", from);
    free(t);
}

static int write_corosync_conf(const struct test_cluster *c, int i, char *err, size_t errlen)
{
    char path[512], log[512];
    host_path(c, i, "etc/corosync/corosync.conf", path, sizeof(path));
    host_path(c, i, "log/corosync.log", log, sizeof(log));
    FILE *f = fopen(path, "w");
    if (!f)
        return fail(err, errlen, "cannot write %s: %s", path, strerror(errno));
    fprintf(f,
            "# Written by tests/support/cluster.c for test host h%d (docs/test-hosts.md).\n"
            "totem {\n"
            "    version: 2\n"
            "    cluster_name: tern-test\n"
            "    transport: knet\n"
            "    crypto_cipher: none\n"
            "    crypto_hash: none\n"
            "    # Fast membership changes (design.md): no per-node token increment.\n"
            "    token: 300\n"
            "    token_coefficient: 0\n"
            "    interface {\n"
            "        linknumber: 0\n"
            "        # knet looks at its links every 200 ms; the default ping timeout\n"
            "        # for token 300 (150 ms) makes it drop every link ~9 s after it\n"
            "        # came up. Node failures are still found by the token timeout.\n"
            "        knet_ping_interval: 200\n"
            "        knet_ping_timeout: 800\n"
            "    }\n"
            "}\n"
            "logging {\n"
            "    to_logfile: yes\n"
            "    logfile: %s\n"
            "    to_stderr: no\n"
            "    to_syslog: no\n"
            "    timestamp: hires\n"
            "}\n"
            "quorum {\n"
            "    provider: corosync_votequorum\n"
            "%s"
            "}\n"
            "nodelist {\n",
            i, log, c->nr == 2 ? "    two_node: 1\n" : "");
    for (int n = 1; n <= c->nr; n++)
        fprintf(f,
                "    node {\n"
                "        nodeid: %d\n"
                "        name: h%d\n"
                "        ring0_addr: %s\n"
                "    }\n",
                n, n, c->net.addr[n - 1]);
    fprintf(f, "}\n");
    if (fclose(f) != 0)
        return fail(err, errlen, "cannot write %s: %s", path, strerror(errno));
    return 0;
}

/* ---- cgroups ---- */

/* Removes cgroup `dir` and every cgroup below it (the agent makes one per
 * VM under its host's), deepest first. They must hold no process. */
static void remove_cgroup_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_type != DT_DIR || !strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char sub[512];
        if (snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name) < (int)sizeof(sub))
            remove_cgroup_tree(sub);
    }
    closedir(d);
    struct tern_err te;
    if (cgroup_remove(dir, &te) < 0)
        fprintf(stderr, "test cluster: %s\n", te.msg);
}

/* Kills everything in cgroup `dir` (and below), waits, removes it. */
static void kill_and_remove_cgroup(const char *dir)
{
    if (access(dir, F_OK) != 0)
        return;
    struct tern_err te;
    if (cgroup_kill(dir, &te) < 0 || cgroup_wait_empty(dir, 5000, &te) < 0)
        fprintf(stderr, "test cluster: %s\n", te.msg);
    remove_cgroup_tree(dir);
}

/* Calls fn on every entry of `dir` whose name starts with `prefix`. */
static void for_each_named(const char *dir, const char *prefix, bool (*pick)(const char *),
                           void (*fn)(const char *path))
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 || (pick && !pick(e->d_name)))
            continue;
        char path[512];
        if (snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) < (int)sizeof(path))
            fn(path);
    }
    closedir(d);
}

/* "tern-t<pid>-..." whose process is gone. */
static bool stale_name(const char *name)
{
    long pid = strtol(name + strlen(STALE_PREFIX), NULL, 10);
    return pid > 0 && kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

/* /dev/shm/<prefix>dir links to the cluster's directory, so that the
 * directory of a killed run can be found and removed too. Only a
 * directory that looks like one this file made is removed. */
static void remove_linked_dir(const char *link)
{
    size_t len = strlen(link);
    if (len < 4 || strcmp(link + len - 4, "-dir") != 0)
        return;
    char target[512], conf[600];
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n > 0) {
        target[n] = '\0';
        snprintf(conf, sizeof(conf), "%s/h1/etc/corosync/corosync.conf", target);
        if (target[0] == '/' && access(conf, F_OK) == 0)
            test_rmtree(target);
    }
    unlink(link);
}

void test_cluster_reap_stale(void)
{
    test_hosts_reap_stale();
    for_each_named("/dev/shm", STALE_PREFIX, stale_name, remove_linked_dir);
    char mnt[256];
    struct tern_err te;
    if (cgroup_mount_point(mnt, sizeof(mnt), &te) == 0)
        for_each_named(mnt, STALE_PREFIX, stale_name, kill_and_remove_cgroup);
    for_each_named("/dev/shm", STALE_PREFIX, stale_name, test_rmtree);
}

void test_cluster_remove_prefix(const char *prefix)
{
    if (!prefix[0])
        return;
    char mnt[256];
    struct tern_err te;
    /* Processes first: deleting a namespace's name does not stop them. */
    if (cgroup_mount_point(mnt, sizeof(mnt), &te) == 0)
        for_each_named(mnt, prefix, NULL, kill_and_remove_cgroup);
    test_hosts_remove_prefix(prefix);
    for_each_named("/dev/shm", prefix, NULL, remove_linked_dir);
    for_each_named("/dev/shm", prefix, NULL, test_rmtree);
}

/* ---- create / attach / destroy ---- */

static int fill_names(struct test_cluster *c, int nr, const char *dir, const char *prefix,
                      char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    if (nr < 1 || nr > TEST_CLUSTER_MAX)
        return fail(err, errlen, "between 1 and %d test hosts, not %d", TEST_CLUSTER_MAX, nr);
    if (strlen(prefix) > 20 || strchr(prefix, '/'))
        return fail(err, errlen, "bad name prefix '%s' (at most 20 characters, no '/')", prefix);
    if (snprintf(c->dir, sizeof(c->dir), "%s", dir) >= (int)sizeof(c->dir) || dir[0] != '/')
        return fail(err, errlen, "test host directory must be an absolute path under %zu bytes",
                    sizeof(c->dir));
    c->nr = nr;
    c->owner = getpid();
    snprintf(c->prefix, sizeof(c->prefix), "%s", prefix);
    char mnt[256];
    struct tern_err te;
    if (cgroup_mount_point(mnt, sizeof(mnt), &te) < 0)
        return fail(err, errlen, "test hosts need cgroup v2: %s", te.msg);
    for (int i = 1; i <= nr; i++) {
        if (snprintf(c->cgroup[i], sizeof(c->cgroup[i]), "%s/%sh%d", mnt, prefix, i) >=
            (int)sizeof(c->cgroup[i]))
            return fail(err, errlen, "cgroup path under %s too long", mnt);
        snprintf(c->shm[i], sizeof(c->shm[i]), "/dev/shm/%sh%d", prefix, i);
    }
    return 0;
}

int test_cluster_create_named(struct test_cluster *c, int nr, const char *dir,
                              const char *prefix, bool keep, char *err, size_t errlen)
{
    if (fill_names(c, nr, dir, prefix, err, errlen) < 0)
        return -1;
    c->keep = keep;
    if (test_hosts_create_named(&c->net, nr, prefix, keep, err, errlen) < 0)
        return -1;
    c->created = true;
    if (!keep)
        track(c, true);
    char path[512];
    snprintf(path, sizeof(path), "%s/shared", c->dir);
    if (mkdir_p(path, 0755) < 0) {
        fail(err, errlen, "cannot create %s: %s", path, strerror(errno));
        goto fail;
    }
    snprintf(path, sizeof(path), "/dev/shm/%sdir", prefix);
    if (symlink(c->dir, path) < 0) {
        fail(err, errlen, "cannot create the link %s: %s", path, strerror(errno));
        goto fail;
    }
    static const char *const subdirs[] = {"etc/corosync", "var/lib/corosync", "run", "log"};
    for (int i = 1; i <= nr; i++) {
        for (size_t k = 0; k < sizeof(subdirs) / sizeof(subdirs[0]); k++) {
            host_path(c, i, subdirs[k], path, sizeof(path));
            if (mkdir_p(path, 0755) < 0) {
                fail(err, errlen, "cannot create %s: %s", path, strerror(errno));
                goto fail;
            }
        }
        if (write_corosync_conf(c, i, err, errlen) < 0)
            goto fail;
        /* 1777 like /dev/shm itself. */
        if (mkdir(c->shm[i], 01777) < 0 || chmod(c->shm[i], 01777) < 0) {
            fail(err, errlen, "cannot create %s: %s", c->shm[i], strerror(errno));
            goto fail;
        }
        struct tern_err te;
        if (access(c->cgroup[i], F_OK) == 0) {
            fail(err, errlen, "cgroup %s exists already (left by an earlier run?)", c->cgroup[i]);
            goto fail;
        }
        if (cgroup_create(c->cgroup[i], &te) < 0) {
            fail(err, errlen, "%s", te.msg);
            goto fail;
        }
    }
    return 0;
fail:
    test_cluster_destroy(c);
    return -1;
}

int test_cluster_create(struct test_cluster *c, int nr, const char *dir, char *err,
                        size_t errlen)
{
    test_cluster_reap_stale();
    static int seq;
    char prefix[24];
    snprintf(prefix, sizeof(prefix), STALE_PREFIX "%d-c%d-", (int)getpid(), seq++);
    return test_cluster_create_named(c, nr, dir, prefix, false, err, errlen);
}

int test_cluster_attach(struct test_cluster *c, int nr, const char *dir, const char *prefix,
                        char *err, size_t errlen)
{
    if (fill_names(c, nr, dir, prefix, err, errlen) < 0)
        return -1;
    c->keep = true;
    if (test_hosts_attach_named(&c->net, nr, prefix) < 0)
        return fail(err, errlen, "no test hosts named %s* exist (network namespace %ssw is missing)",
                    prefix, prefix);
    c->created = true;
    return 0;
}

void test_cluster_destroy(struct test_cluster *c)
{
    if (!c || !c->created)
        return;
    for (int i = 1; i <= c->nr; i++)
        kill_and_remove_cgroup(c->cgroup[i]);
    for (int i = 1; i <= c->nr; i++) {
        if (c->corosync[i] > 0) {
            /* Its cgroup is empty, so it has exited: this only reaps. */
            waitpid(c->corosync[i], NULL, 0);
            c->corosync[i] = 0;
        }
        test_rmtree(c->shm[i]);
    }
    test_hosts_destroy(&c->net);
    test_rmtree(c->dir);
    char link[64];
    snprintf(link, sizeof(link), "/dev/shm/%sdir", c->prefix);
    unlink(link);
    c->created = false;
    track(c, false);
}

/* ---- entering a host ---- */

static int bind_over(const char *src, const char *dst, char *err, size_t errlen)
{
    if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
        return fail(err, errlen, "cannot bind %s over %s: %s%s", src, dst, strerror(errno),
                    errno == ENOENT ? " (is corosync installed?)" : "");
    return 0;
}

int test_cluster_enter(const struct test_cluster *c, int i, bool join_cgroup, char *err,
                       size_t errlen)
{
    if (!valid_host(c, i))
        return fail(err, errlen, "no test host %d", i);
    if (join_cgroup) {
        struct tern_err te;
        if (cgroup_move(c->cgroup[i], 0, &te) < 0)
            return fail(err, errlen, "%s", te.msg);
    }
    char path[512];
    snprintf(path, sizeof(path), "/run/netns/%s", c->net.ns[i - 1]);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
    int rc = setns(fd, CLONE_NEWNET);
    int e = errno;
    close(fd);
    if (rc < 0)
        return fail(err, errlen, "cannot enter network namespace %s: %s", c->net.ns[i - 1],
                    strerror(e));
    if (unshare(CLONE_NEWNS | CLONE_NEWUTS) < 0)
        return fail(err, errlen, "unshare(mount, uts): %s", strerror(errno));
    /* Our binds must not propagate back to the machine's namespace. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return fail(err, errlen, "cannot make / private in the new mount namespace: %s",
                    strerror(errno));
    char src[512];
    host_path(c, i, "etc/corosync", src, sizeof(src));
    if (bind_over(src, "/etc/corosync", err, errlen) < 0)
        return -1;
    host_path(c, i, "var/lib/corosync", src, sizeof(src));
    if (bind_over(src, "/var/lib/corosync", err, errlen) < 0)
        return -1;
    if (bind_over(c->shm[i], "/dev/shm", err, errlen) < 0)
        return -1;
    /* Last: /run/netns disappears from view here (we are in already). */
    host_path(c, i, "run", src, sizeof(src));
    if (bind_over(src, "/run", err, errlen) < 0)
        return -1;
    char name[16];
    snprintf(name, sizeof(name), "h%d", i);
    if (sethostname(name, strlen(name)) < 0)
        return fail(err, errlen, "sethostname(%s): %s", name, strerror(errno));
    host_path(c, i, "", src, sizeof(src));
    snprintf(path, sizeof(path), "%s/shared", c->dir);
    if (setenv("TERN_TESTHOST", name, 1) < 0 || setenv("TERN_TESTHOST_DIR", src, 1) < 0 ||
        setenv("TERN_SHARED_DIR", path, 1) < 0)
        return fail(err, errlen, "setenv: %s", strerror(errno));
    return 0;
}

/* ---- corosync ---- */

/* Closes every descriptor above stderr in a child about to exec: whatever
 * the caller had open (a pipe a script waits on, a test's sockets) must
 * not live on in a host's long-lived processes. */
static void close_inherited(void)
{
    close_range(3, ~0u, 0);
}

static const char *corosync_bin(void)
{
    return access("/usr/sbin/corosync", X_OK) == 0 ? "/usr/sbin/corosync" : "corosync";
}

int test_cluster_start_corosync(struct test_cluster *c, int i, char *err, size_t errlen)
{
    if (!valid_host(c, i) || !c->created)
        return fail(err, errlen, "no test host %d", i);
    if (test_cluster_corosync_running(c, i))
        return fail(err, errlen, "corosync already runs on h%d", i);
    char out[512];
    host_path(c, i, "log/corosync.out", out, sizeof(out));
    pid_t pid = fork();
    if (pid < 0)
        return fail(err, errlen, "fork: %s", strerror(errno));
    if (pid == 0) {
        char e[512];
        /* Its own session: it outlives tern-testhosts and ignores the
         * terminal's signals. */
        setsid();
        if (test_cluster_enter(c, i, true, e, sizeof(e)) < 0) {
            fprintf(stderr, "test host h%d: %s\n", i, e);
            _exit(127);
        }
        int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int o = open(out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (in < 0 || o < 0 || dup2(in, 0) < 0 || dup2(o, 1) < 0 || dup2(o, 2) < 0) {
            fprintf(stderr, "test host h%d: cannot open %s: %s\n", i, out, strerror(errno));
            _exit(127);
        }
        close_inherited();
        execlp(corosync_bin(), "corosync", "-f", (char *)NULL);
        fprintf(stderr, "test host h%d: cannot run corosync: %s\n", i, strerror(errno));
        _exit(127);
    }
    c->corosync[i] = pid;
    return 0;
}

bool test_cluster_corosync_running(struct test_cluster *c, int i)
{
    if (!valid_host(c, i) || c->corosync[i] <= 0)
        return false;
    pid_t r = waitpid(c->corosync[i], NULL, WNOHANG);
    if (r == 0)
        return true;
    c->corosync[i] = 0; /* exited (reaped now) or not our child */
    return false;
}

int test_cluster_stop_corosync(struct test_cluster *c, int i, char *err, size_t errlen)
{
    if (!valid_host(c, i))
        return fail(err, errlen, "no test host %d", i);
    if (!test_cluster_corosync_running(c, i))
        return 0;
    pid_t pid = c->corosync[i];
    kill(pid, SIGTERM);
    for (long long end = now_ms() + 5000; now_ms() < end;) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            c->corosync[i] = 0;
            return 0;
        }
        test_sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    c->corosync[i] = 0;
    return fail(err, errlen, "corosync on h%d did not stop within 5 s of SIGTERM (killed)", i);
}

int test_cluster_quorate(const struct test_cluster *c, int i, unsigned *total_votes, char *err,
                         size_t errlen)
{
    if (!valid_host(c, i))
        return fail(err, errlen, "no test host %d", i);
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return fail(err, errlen, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return fail(err, errlen, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        /* Ask from inside the host: its corosync's IPC is only there. */
        char e[512];
        char line[600];
        if (test_cluster_enter(c, i, false, e, sizeof(e)) < 0) {
            int n = snprintf(line, sizeof(line), "E %s", e);
            if (write(p[1], line, (size_t)n) < 0)
                _exit(3);
            _exit(2);
        }
        votequorum_handle_t h;
        votequorum_callbacks_t cb = {0};
        cs_error_t rc = votequorum_initialize(&h, &cb);
        struct votequorum_info info;
        memset(&info, 0, sizeof(info));
        if (rc == CS_OK)
            rc = votequorum_getinfo(h, (unsigned)i, &info);
        int n = rc == CS_OK ? snprintf(line, sizeof(line), "Q %d %u",
                                       (info.flags & VOTEQUORUM_INFO_QUORATE) ? 1 : 0,
                                       info.total_votes)
                            : snprintf(line, sizeof(line), "E votequorum on h%d: error %d", i,
                                       (int)rc);
        if (write(p[1], line, (size_t)n) < 0)
            _exit(3);
        _exit(0);
    }
    close(p[1]);
    char buf[600];
    size_t len = 0;
    long long end = now_ms() + 2000;
    for (;;) {
        long long left = end - now_ms();
        struct pollfd pfd = {.fd = p[0], .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) {
            kill(pid, SIGKILL);
            break;
        }
        ssize_t r = read(p[0], buf + len, sizeof(buf) - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    close(p[0]);
    waitpid(pid, NULL, 0);
    int q;
    unsigned votes;
    if (sscanf(buf, "Q %d %u", &q, &votes) == 2) {
        if (total_votes)
            *total_votes = votes;
        return q;
    }
    if (buf[0] == 'E')
        return fail(err, errlen, "%s", buf + 2);
    return fail(err, errlen, "votequorum on h%d did not answer within 2 s", i);
}

int test_cluster_wait_quorate(struct test_cluster *c, int timeout_ms, char *err, size_t errlen)
{
    long long end = now_ms() + timeout_ms;
    char last[512] = "no corosync started";
    for (;;) {
        int running = 0, ok = 0;
        for (int i = 1; i <= c->nr; i++) {
            if (c->corosync[i] <= 0)
                continue;
            if (!test_cluster_corosync_running(c, i)) {
                char log[512], tail[600];
                host_path(c, i, "log/corosync.log", log, sizeof(log));
                tail_of(log, tail, 400);
                if (!tail[0]) {
                    host_path(c, i, "log/corosync.out", log, sizeof(log));
                    tail_of(log, tail, 400);
                }
                return fail(err, errlen, "corosync on h%d exited; %s ends with:\n%s", i, log,
                            tail);
            }
            running++;
        }
        for (int i = 1; i <= c->nr; i++) {
            if (c->corosync[i] <= 0)
                continue;
            unsigned votes = 0;
            int q = test_cluster_quorate(c, i, &votes, last, sizeof(last));
            if (q == 1 && votes == (unsigned)running)
                ok++;
            else if (q >= 0)
                snprintf(last, sizeof(last), "h%d: quorate %s, %u of %d votes", i,
                         q ? "yes" : "no", votes, running);
        }
        if (running > 0 && ok == running)
            return 0;
        if (now_ms() >= end)
            return fail(err, errlen, "test hosts not quorate with every host after %d ms (%s)",
                        timeout_ms, last);
        test_sleep_ms(50);
    }
}

/* ---- processes in a host ---- */

int test_cluster_spawn(const struct test_cluster *c, int i, char *const argv[],
                       const char *out_dir, struct test_proc *p, char *err, size_t errlen)
{
    static int counter;
    memset(p, 0, sizeof(*p));
    if (!valid_host(c, i))
        return fail(err, errlen, "no test host %d", i);
    int n = counter++;
    snprintf(p->out_path, sizeof(p->out_path), "%s/h%d-proc%d.out", out_dir, i, n);
    snprintf(p->err_path, sizeof(p->err_path), "%s/h%d-proc%d.err", out_dir, i, n);
    pid_t pid = fork();
    if (pid < 0)
        return fail(err, errlen, "fork: %s", strerror(errno));
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int out = open(p->out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        int errfd = open(p->err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (in < 0 || out < 0 || errfd < 0)
            _exit(127);
        char e[512];
        if (test_cluster_enter(c, i, true, e, sizeof(e)) < 0) {
            dprintf(errfd, "test host h%d: %s\n", i, e);
            _exit(127);
        }
        dup2(in, 0);
        dup2(out, 1);
        dup2(errfd, 2);
        close_inherited();
        execvp(argv[0], argv);
        dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    p->pid = pid;
    return 0;
}

int test_cluster_exec(const struct test_cluster *c, int i, char *const argv[], int timeout_ms,
                      char *out, size_t outlen)
{
    if (outlen)
        out[0] = '\0';
    if (!valid_host(c, i))
        return fail(out, outlen, "no test host %d", i);
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return fail(out, outlen, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return fail(out, outlen, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (in < 0 || dup2(in, 0) < 0 || dup2(p[1], 1) < 0 || dup2(p[1], 2) < 0)
            _exit(127);
        char e[512];
        if (test_cluster_enter(c, i, true, e, sizeof(e)) < 0) {
            fprintf(stderr, "test host h%d: %s\n", i, e);
            _exit(127);
        }
        close_inherited();
        execvp(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(p[1]);
    size_t len = 0;
    bool timed_out = false;
    long long end = now_ms() + timeout_ms;
    for (;;) {
        long long left = end - now_ms();
        struct pollfd pfd = {.fd = p[0], .events = POLLIN};
        int pr = left > 0 ? poll(&pfd, 1, (int)left) : 0;
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0) {
            timed_out = true;
            kill(pid, SIGKILL);
            break;
        }
        char buf[4096];
        ssize_t r = read(p[0], buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        /* Keep what fits; read the rest so the child never blocks. */
        size_t keep = outlen > len + 1 ? outlen - len - 1 : 0;
        if ((size_t)r < keep)
            keep = (size_t)r;
        memcpy(out + len, buf, keep);
        len += keep;
        if (outlen)
            out[len] = '\0';
    }
    close(p[0]);
    int ws;
    if (waitpid(pid, &ws, 0) != pid)
        return -1;
    if (timed_out) {
        size_t l = strlen(out);
        snprintf(out + l, outlen > l ? outlen - l : 0, "\n[killed after %d ms]", timeout_ms);
        return -1;
    }
    if (WIFEXITED(ws))
        return WEXITSTATUS(ws);
    return WIFSIGNALED(ws) ? 128 + WTERMSIG(ws) : -1;
}

/* ---- failures ---- */

int test_cluster_kill_host(struct test_cluster *c, int i, char *err, size_t errlen)
{
    if (!valid_host(c, i))
        return fail(err, errlen, "no test host %d", i);
    struct tern_err te;
    if (cgroup_kill(c->cgroup[i], &te) < 0 || cgroup_wait_empty(c->cgroup[i], 5000, &te) < 0)
        return fail(err, errlen, "killing test host h%d: %s", i, te.msg);
    if (c->corosync[i] > 0) {
        waitpid(c->corosync[i], NULL, 0);
        c->corosync[i] = 0;
    }
    return 0;
}

int test_cluster_freeze_host(const struct test_cluster *c, int i, bool frozen, char *err,
                             size_t errlen)
{
    if (!valid_host(c, i))
        return fail(err, errlen, "no test host %d", i);
    char path[512];
    snprintf(path, sizeof(path), "%s/cgroup.freeze", c->cgroup[i]);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
    ssize_t n = write(fd, frozen ? "1" : "0", 1);
    int e = errno;
    close(fd);
    if (n != 1)
        return fail(err, errlen, "cannot write %s: %s", path, strerror(e));
    snprintf(path, sizeof(path), "%s/cgroup.events", c->cgroup[i]);
    const char *want = frozen ? "frozen 1" : "frozen 0";
    if (!test_wait_for_text(path, want, 2000))
        return fail(err, errlen, "%s does not say '%s' after 2 s", path, want);
    return 0;
}

int test_cluster_partition(const struct test_cluster *c, int i, bool cut, char *err,
                           size_t errlen)
{
    if (!valid_host(c, i))
        return fail(err, errlen, "no test host %d", i);
    if (test_host_link(&c->net, i - 1, !cut) < 0)
        return fail(err, errlen, "cannot take %s of %s %s", c->net.veth[i - 1], c->net.ns[i - 1],
                    cut ? "down" : "up");
    return 0;
}

int test_cluster_split(const struct test_cluster *c, unsigned mask, char *err, size_t errlen)
{
    for (int i = 1; i <= c->nr; i++) {
        int bridge = (mask >> i) & 1;
        if (test_host_bridge(&c->net, i - 1, bridge) < 0)
            return fail(err, errlen, "cannot move %s's link to bridge %d", c->net.ns[i - 1],
                        bridge);
    }
    return 0;
}

const char *test_cluster_netns(const struct test_cluster *c, int i)
{
    return valid_host(c, i) ? c->net.ns[i - 1] : "";
}

const char *test_cluster_addr(const struct test_cluster *c, int i)
{
    return valid_host(c, i) ? c->net.addr[i - 1] : "";
}
