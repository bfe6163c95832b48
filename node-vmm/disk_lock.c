/* Disk image locks: one OFD lock on one byte of the image (disk_lock.h). */
#include "disk_lock.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

void disk_lock_init(struct disk_lock *l)
{
    memset(l, 0, sizeof(*l));
    l->fd = -1;
}

int disk_lock_open(struct disk_lock *l, const char *path, bool write, struct tern_err *err)
{
    disk_lock_init(l);
    if (!path || !path[0])
        return tern_err_set(err, "no disk image path given");
    if (strlen(path) >= sizeof(l->path))
        return tern_err_set(err, "disk image path is too long (%zu bytes)", strlen(path));
    int fd = open(path, (write ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return tern_err_errno(err, errno, "cannot open disk image %s %s to lock it", path,
                              write ? "for reading and writing" : "read-only");
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return tern_err_errno(err, e, "cannot stat disk image %s", path);
    }
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
        close(fd);
        return tern_err_set(err, "disk image %s is not a regular file or block device", path);
    }
    l->fd = fd;
    l->write = write;
    snprintf(l->path, sizeof(l->path), "%s", path);
    return 0;
}

static struct flock lock_request(short type)
{
    struct flock fl;
    memset(&fl, 0, sizeof(fl)); /* l_pid must be 0 for OFD locks */
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = DISK_LOCK_OFFSET;
    fl.l_len = 1;
    return fl;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- who holds it: /proc/locks and /proc/PID/fdinfo --- */

/* True if `line` (a /proc/locks or fdinfo "lock:" line) is an OFD lock,
 * not a waiter, on the file whose "MAJ:MIN:INO " token is `devino`, and
 * its range covers DISK_LOCK_OFFSET. The kernel prints
 * "N: OFDLCK ADVISORY  WRITE -1 fe:00:10952850 1413829198 1413829198"
 * (device numbers in hex, the end "EOF" when unbounded). */
static bool lock_line_matches(const char *line, const char *devino)
{
    if (!strstr(line, "OFDLCK") || strstr(line, "->"))
        return false;
    const char *p = strstr(line, devino);
    if (!p)
        return false;
    p += strlen(devino);
    char *end;
    errno = 0;
    unsigned long long start = strtoull(p, &end, 10);
    if (end == p || errno)
        return false;
    while (*end == ' ')
        end++;
    if (!strncmp(end, "EOF", 3))
        return start <= (unsigned long long)DISK_LOCK_OFFSET;
    const char *q = end;
    unsigned long long last = strtoull(q, &end, 10);
    if (end == q || errno)
        return false;
    return start <= (unsigned long long)DISK_LOCK_OFFSET &&
           (unsigned long long)DISK_LOCK_OFFSET <= last;
}

/* Reads up to cap - 1 bytes of a small /proc file (`path` relative to
 * `dir`, or AT_FDCWD); "" if it cannot. */
static void read_small(int dir, const char *path, char *buf, size_t cap)
{
    buf[0] = '\0';
    int fd = openat(dir, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    size_t len = 0;
    while (len < cap - 1) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(fd);
}

static bool text_has_lock(char *text, const char *devino, bool fdinfo)
{
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        bool hit = (!fdinfo || !strncmp(line, "lock:", 5)) && lock_line_matches(line, devino);
        if (nl)
            *nl = '\n';
        if (hit)
            return true;
        line = nl ? nl + 1 : NULL;
    }
    return false;
}

/* Looks in /proc for the process whose open file holds a lock on the
 * file `st` describes covering the locked byte. 1 and *pid when found; 0
 * when no lock of this host covers it (/proc/locks says so: the holder is
 * elsewhere); -1 when one does but its process was not found in time (or
 * is not visible to us). */
static int find_local_holder(const struct stat *st, pid_t *pid)
{
    char devino[64];
    snprintf(devino, sizeof(devino), " %02x:%02x:%llu ", major(st->st_dev), minor(st->st_dev),
             (unsigned long long)st->st_ino);
    /* /proc/locks: every lock on this host, one short line each. */
    FILE *f = fopen("/proc/locks", "re");
    if (f) {
        char line[256];
        bool here = false;
        while (!here && fgets(line, sizeof(line), f))
            here = lock_line_matches(line, devino);
        fclose(f);
        if (!here)
            return 0;
    }
    int64_t deadline = now_ms() + DISK_LOCK_FIND_MS;
    DIR *proc = opendir("/proc");
    if (!proc)
        return -1;
    int found = -1;
    struct dirent *de;
    char text[8192];
    while (found < 0 && (de = readdir(proc)) != NULL && now_ms() < deadline) {
        char *endp;
        long p = strtol(de->d_name, &endp, 10);
        if (*endp || p <= 0)
            continue;
        char dir[64];
        snprintf(dir, sizeof(dir), "/proc/%ld/fdinfo", p);
        DIR *fds = opendir(dir);
        if (!fds)
            continue; /* gone, or not ours to see */
        struct dirent *fe;
        while ((fe = readdir(fds)) != NULL) {
            if (fe->d_name[0] == '.')
                continue;
            read_small(dirfd(fds), fe->d_name, text, sizeof(text));
            if (text_has_lock(text, devino, true)) {
                *pid = (pid_t)p;
                found = 1;
                break;
            }
        }
        closedir(fds);
    }
    closedir(proc);
    return found;
}

/* " by pid N (comm) on this host", " by this very process (...)", ... */
static void describe_holder(const struct disk_lock *l, pid_t kernel_pid, bool search, char *out,
                            size_t cap)
{
    out[0] = '\0';
    pid_t pid = kernel_pid > 0 ? kernel_pid : 0; /* a classic POSIX lock names its owner */
    int where = pid > 0 ? 1 : 0;
    if (!pid && search) {
        struct stat st;
        if (fstat(l->fd, &st) < 0)
            return;
        where = find_local_holder(&st, &pid);
    }
    if (where == 1 && pid == getpid()) {
        snprintf(out, cap, " by this very process (pid %d): the image is named twice", (int)pid);
    } else if (where == 1) {
        char path[64], comm[64];
        snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
        read_small(AT_FDCWD, path, comm, sizeof(comm));
        comm[strcspn(comm, "\n")] = '\0';
        snprintf(out, cap, " by pid %d%s%s%s on this host", (int)pid, comm[0] ? " (" : "", comm,
                 comm[0] ? ")" : "");
    } else if (where < 0) {
        snprintf(out, cap, " by a process on this host that could not be identified");
    } else if (search) {
        snprintf(out, cap, ", by no process on this host: by another host sharing the storage, "
                           "or on NFS by one that died less than a lease time ago");
    }
}

static int refuse(const struct disk_lock *l, short held_as, pid_t kernel_pid, bool search,
                  struct tern_err *err)
{
    char who[512];
    describe_holder(l, kernel_pid, search, who, sizeof(who));
    const char *how = held_as == F_WRLCK ? "locked for writing" : "open read-only";
    const char *why;
    if (l->write && held_as == F_WRLCK)
        why = "two VMs must never write one image: stop that VM first, or fence its host if "
              "that is down";
    else if (l->write)
        why = "a VM may not write an image that other VMs read: stop the VMs that have it "
              "read-only first";
    else
        why = "a VM may not read an image that another VM writes: stop that VM first";
    return tern_err_coded(err, TERN_ERR_CONFLICT,
                          "disk %s is in use by another VM process (%s%s); refusing to open it %s "
                          "here: %s",
                          l->path, how, who, l->write ? "for writing" : "read-only", why);
}

int disk_lock_take(struct disk_lock *l, bool find_holder, struct tern_err *err)
{
    if (l->fd < 0)
        return tern_err_set(err, "disk %s: the lock file is not open", l->path);
    if (l->held)
        return 0;
    /* A conflicting lock can vanish between the attempt and the question
     * who holds it; then try again (a few times at most). */
    for (int tries = 0; tries < 3; tries++) {
        struct flock fl = lock_request(l->write ? F_WRLCK : F_RDLCK);
        int rc;
        while ((rc = fcntl(l->fd, F_OFD_SETLK, &fl)) < 0 && errno == EINTR)
            ;
        if (rc == 0) {
            l->held = true;
            return 0;
        }
        int e = errno;
        if (e == ENOLCK)
            return tern_err_errno(err, e, "cannot lock disk %s (on NFS: the lock manager must "
                                          "run and the mount must not use nolock)",
                                  l->path);
        if (e == EINVAL)
            return tern_err_errno(err, e, "cannot lock disk %s: its file system or this kernel "
                                          "has no open file description locks",
                                  l->path);
        if (e != EAGAIN && e != EACCES)
            return tern_err_errno(err, e, "cannot lock disk %s", l->path);
        struct flock q = lock_request(l->write ? F_WRLCK : F_RDLCK);
        if (fcntl(l->fd, F_OFD_GETLK, &q) < 0)
            return tern_err_errno(err, errno, "disk %s is in use by another VM process; asking "
                                              "the kernel how failed",
                                  l->path);
        if (q.l_type != F_UNLCK)
            return refuse(l, q.l_type, q.l_pid, find_holder, err);
    }
    return tern_err_coded(err, TERN_ERR_CONFLICT,
                          "disk %s is in use by another VM process (its lock comes and goes); "
                          "refusing to open it %s here",
                          l->path, l->write ? "for writing" : "read-only");
}

int disk_lock_release(struct disk_lock *l, struct tern_err *err)
{
    if (l->fd < 0 || !l->held)
        return 0;
    struct flock fl = lock_request(F_UNLCK);
    int rc;
    while ((rc = fcntl(l->fd, F_OFD_SETLK, &fl)) < 0 && errno == EINTR)
        ;
    if (rc < 0)
        return tern_err_errno(err, errno, "cannot release the lock of disk %s", l->path);
    l->held = false;
    return 0;
}

void disk_lock_close(struct disk_lock *l)
{
    if (l->fd >= 0)
        close(l->fd); /* ends the lock, whatever close reports */
    l->fd = -1;
    l->held = false;
}

int disk_lock_same_file(const struct disk_lock *l, int fd, struct tern_err *err)
{
    struct stat a, b;
    if (fstat(l->fd, &a) < 0)
        return tern_err_errno(err, errno, "cannot stat the locked disk image %s", l->path);
    if (fstat(fd, &b) < 0)
        return tern_err_errno(err, errno, "cannot stat disk image %s", l->path);
    if (a.st_dev != b.st_dev || a.st_ino != b.st_ino || a.st_rdev != b.st_rdev)
        return tern_err_set(err, "disk image %s was replaced while it was being opened (the "
                                 "locked file is not the one opened); try again",
                            l->path);
    return 0;
}

static bool selected(const struct disk_lock *l, unsigned which)
{
    return l->fd >= 0 && (which & (l->write ? DISK_LOCK_WRITERS : DISK_LOCK_READERS));
}

int disk_lock_take_set(struct disk_lock *locks, unsigned n, unsigned which, bool find_holder,
                       struct tern_err *err)
{
    bool took[n ? n : 1];
    for (unsigned i = 0; i < n; i++) {
        took[i] = false;
        if (!selected(&locks[i], which) || locks[i].held)
            continue;
        if (disk_lock_take(&locks[i], find_holder, err) < 0) {
            for (unsigned k = 0; k < i; k++)
                if (took[k])
                    (void)disk_lock_release(&locks[k], NULL); /* closing would end it too */
            return -1;
        }
        took[i] = true;
    }
    return 0;
}

int disk_lock_release_set(struct disk_lock *locks, unsigned n, unsigned which,
                          struct tern_err *err)
{
    int rc = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!selected(&locks[i], which))
            continue;
        struct tern_err e;
        if (disk_lock_release(&locks[i], &e) < 0 && rc == 0) {
            rc = -1;
            if (err)
                *err = e;
        }
    }
    return rc;
}

bool disk_lock_set_pending(const struct disk_lock *locks, unsigned n, unsigned which)
{
    for (unsigned i = 0; i < n; i++)
        if (selected(&locks[i], which) && !locks[i].held)
            return true;
    return false;
}

int disk_lock_retry_ms(unsigned attempt)
{
    return attempt < 5 ? 1 << attempt : 25; /* 1, 2, 4, 8, 16, then 25 */
}
