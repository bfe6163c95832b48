#include "cgroup.h"

#include "../common/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int write_str(const char *path, const char *s, struct tern_err *err)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return tern_err_errno(err, errno, "cannot open %s", path);
    size_t len = strlen(s);
    ssize_t n = write(fd, s, len);
    int e = errno;
    close(fd);
    if (n != (ssize_t)len)
        return tern_err_errno(err, n < 0 ? e : EIO, "writing '%s' to %s", s, path);
    return 0;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape_octal(char *s)
{
    char *w = s;
    for (char *r = s; *r;) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 4;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
}

/* Finds the cgroup2 mount: its mount point and the cgroup path it shows as
 * its root ("/" unless a subtree is bind-mounted). */
static int find_mount(char *point, size_t point_len, char *root, size_t root_len,
                      struct tern_err *err)
{
    point[0] = '\0';
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return tern_err_errno(err, errno, "cannot open /proc/self/mountinfo");
    char *line = NULL;
    size_t cap = 0;
    int rc = -1;
    while (getline(&line, &cap, f) > 0) {
        /* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER */
        char *sep = strstr(line, " - ");
        if (!sep || strncmp(sep + 3, "cgroup2 ", 8) != 0)
            continue;
        char *save = NULL, *fields[5];
        int n = 0;
        for (char *t = strtok_r(line, " ", &save); t && n < 5; t = strtok_r(NULL, " ", &save))
            fields[n++] = t;
        if (n < 5)
            continue;
        unescape_octal(fields[3]);
        unescape_octal(fields[4]);
        if (snprintf(point, point_len, "%s", fields[4]) >= (int)point_len ||
            snprintf(root, root_len, "%s", fields[3]) >= (int)root_len) {
            tern_err_set(err, "cgroup2 mount point %s is too long", fields[4]);
            break;
        }
        rc = 0;
        break;
    }
    if (rc < 0 && !point[0])
        tern_err_set(err, "no cgroup2 file system is mounted (see /proc/self/mountinfo); mount "
                          "one (mount -t cgroup2 none /sys/fs/cgroup) or run without cgroups");
    free(line);
    fclose(f);
    return rc;
}

int cgroup_mount_point(char *out, size_t len, struct tern_err *err)
{
    char root[PATH_MAX];
    return find_mount(out, len, root, sizeof(root), err);
}

int cgroup_of_pid(pid_t pid, char *out, size_t len, struct tern_err *err)
{
    char mnt[PATH_MAX], root[PATH_MAX];
    if (find_mount(mnt, sizeof(mnt), root, sizeof(root), err) < 0)
        return -1;
    char path[64], buf[8192];
    if (pid)
        snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
    else
        snprintf(path, sizeof(path), "/proc/self/cgroup");
    if (tern_read_small(path, buf, sizeof(buf), err) < 0)
        return -1;
    const char *cg = NULL;
    for (char *l = buf; l && *l;) {
        char *nl = strchr(l, '\n');
        if (nl)
            *nl = '\0';
        if (!strncmp(l, "0::", 3)) {
            cg = l + 3;
            break;
        }
        l = nl ? nl + 1 : NULL;
    }
    if (!cg || cg[0] != '/')
        return tern_err_set(err, "%s has no cgroup v2 entry (\"0::/...\")", path);
    /* A mount of a subtree shows paths below its root. */
    size_t rl = strlen(root);
    if (strcmp(root, "/") != 0) {
        if (strncmp(cg, root, rl) != 0 || (cg[rl] != '/' && cg[rl] != '\0'))
            return tern_err_set(err, "cgroup %s is outside the cgroup2 mount at %s (root %s)", cg,
                                mnt, root);
        cg += rl;
    }
    /* The root cgroup is "/": the mount point itself. */
    if (snprintf(out, len, "%s%s", mnt, strcmp(cg, "/") ? cg : "") >= (int)len)
        return tern_err_set(err, "cgroup path %s%s is too long", mnt, cg);
    return 0;
}

int cgroup_create(const char *dir, struct tern_err *err)
{
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return tern_err_errno(err, errno, "cannot create cgroup %s", dir);
    return 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

int cgroup_remove(const char *dir, struct tern_err *err)
{
    for (int tries = 0;; tries++) {
        if (rmdir(dir) == 0 || errno == ENOENT)
            return 0;
        if (errno != EBUSY || tries >= 20)
            break;
        sleep_ms(10);
    }
    if (errno == EBUSY)
        return tern_err_set(err, "cannot remove cgroup %s: it still holds processes "
                                 "(see its cgroup.procs) or child cgroups", dir);
    return tern_err_errno(err, errno, "cannot remove cgroup %s", dir);
}

int cgroup_move(const char *dir, pid_t pid, struct tern_err *err)
{
    char path[PATH_MAX + 16], num[24];
    if (snprintf(path, sizeof(path), "%s/cgroup.procs", dir) >= (int)sizeof(path))
        return tern_err_set(err, "cgroup path %s is too long", dir);
    snprintf(num, sizeof(num), "%d", (int)pid);
    if (write_str(path, num, err) < 0)
        return tern_err_prefix(err, "moving process %d into cgroup %s", (int)pid, dir);
    return 0;
}

int cgroup_enter_delegated(char *vms_dir, size_t len, struct tern_err *err)
{
    char d[PATH_MAX], mnt[PATH_MAX], agent[PATH_MAX + 8];
    if (cgroup_of_pid(0, d, sizeof(d), err) < 0 || cgroup_mount_point(mnt, sizeof(mnt), err) < 0)
        return -1;
    char *slash = strrchr(d, '/');
    if (slash && !strcmp(slash + 1, "agent") && strlen(d) > strlen(mnt))
        *slash = '\0';
    snprintf(agent, sizeof(agent), "%s/agent", d);
    if (snprintf(vms_dir, len, "%s/vms", d) >= (int)len)
        return tern_err_set(err, "cgroup path %s/vms is too long", d);
    if (cgroup_create(agent, err) < 0 || cgroup_move(agent, 0, err) < 0 ||
        cgroup_create(vms_dir, err) < 0)
        return tern_err_prefix(err, "cgroup_layout = delegated: ternd's cgroup %s must be "
                                    "delegated to it (systemd: Delegate=yes)", d);
    return 0;
}

int cgroup_open_procs(const char *dir, struct tern_err *err)
{
    char path[PATH_MAX + 16];
    if (snprintf(path, sizeof(path), "%s/cgroup.procs", dir) >= (int)sizeof(path))
        return tern_err_set(err, "cgroup path %s is too long", dir);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return tern_err_errno(err, errno, "cannot open %s", path);
    return fd;
}

int cgroup_populated(const char *dir, struct tern_err *err)
{
    char path[PATH_MAX + 16], buf[512];
    if (snprintf(path, sizeof(path), "%s/cgroup.events", dir) >= (int)sizeof(path))
        return tern_err_set(err, "cgroup path %s is too long", dir);
    if (tern_read_small(path, buf, sizeof(buf), err) < 0)
        return -1;
    const char *p = strstr(buf, "populated ");
    if (!p || (p != buf && p[-1] != '\n'))
        return tern_err_set(err, "%s has no 'populated' line", path);
    return p[10] == '1';
}

int cgroup_kill(const char *dir, struct tern_err *err)
{
    char path[PATH_MAX + 16];
    if (snprintf(path, sizeof(path), "%s/cgroup.kill", dir) >= (int)sizeof(path))
        return tern_err_set(err, "cgroup path %s is too long", dir);
    if (write_str(path, "1", err) < 0)
        return tern_err_prefix(err, "killing cgroup %s (cgroup.kill needs Linux 5.14)", dir);
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cgroup_wait_empty(const char *dir, int timeout_ms, struct tern_err *err)
{
    /* cgroup.events signals every change as POLLPRI: no polling loop. */
    char path[PATH_MAX + 16], buf[512];
    if (snprintf(path, sizeof(path), "%s/cgroup.events", dir) >= (int)sizeof(path))
        return tern_err_set(err, "cgroup path %s is too long", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tern_err_errno(err, errno, "cannot open %s", path);
    int64_t deadline = now_ms() + timeout_ms;
    int rc = -1;
    for (;;) {
        ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
        if (n < 0) {
            tern_err_errno(err, errno, "cannot read %s", path);
            break;
        }
        buf[n] = '\0';
        const char *p = strstr(buf, "populated ");
        if (!p) {
            tern_err_set(err, "%s has no 'populated' line", path);
            break;
        }
        if (p[10] == '0') {
            rc = 0;
            break;
        }
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            tern_err_set(err, "cgroup %s still holds processes after %d ms", dir, timeout_ms);
            break;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLPRI};
        if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR) {
            tern_err_errno(err, errno, "waiting for %s", path);
            break;
        }
    }
    close(fd);
    return rc;
}
