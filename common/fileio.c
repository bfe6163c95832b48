#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int tern_read_file(const char *path, size_t max_len, uint8_t **out, size_t *out_len,
                   struct tern_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tern_err_errno(err, errno, "cannot open %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return tern_err_errno(err, e, "cannot stat %s", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return tern_err_set(err, "%s is not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_len) {
        close(fd);
        return tern_err_set(err, "%s is too large (%lld bytes, limit %zu)", path,
                            (long long)st.st_size, max_len);
    }
    size_t len = (size_t)st.st_size;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        close(fd);
        return tern_err_set(err, "out of memory reading %s (%zu bytes)", path, len);
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = read(fd, buf + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return tern_err_errno(err, e, "cannot read %s", path);
        }
        if (n == 0) {
            free(buf);
            close(fd);
            return tern_err_set(err, "%s shrank while being read", path);
        }
        done += (size_t)n;
    }
    close(fd);
    *out = buf;
    *out_len = len;
    return 0;
}

ssize_t tern_read_small(const char *path, char *buf, size_t cap, struct tern_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tern_err_errno(err, errno, "cannot open %s", path);
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            tern_err_errno(err, e, "cannot read %s", path);
            errno = e;
            return -1;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

int tern_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int tern_fsync_dir_of(const char *path, struct tern_err *err)
{
    char dir[4096];
    if ((size_t)snprintf(dir, sizeof(dir), "%s", path) >= sizeof(dir))
        return tern_err_set(err, "path %s is too long", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return tern_err_errno(err, errno, "cannot open directory %s", dir);
    if (fsync(dfd) < 0) {
        int e = errno;
        close(dfd);
        return tern_err_errno(err, e, "cannot sync directory %s", dir);
    }
    close(dfd);
    return 0;
}

int tern_write_file_atomic(const char *path, const void *buf, size_t len, mode_t mode,
                           struct tern_err *err)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
        return tern_err_set(err, "path %s is too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return tern_err_errno(err, errno, "cannot create %s", tmp);
    if (tern_write_all(fd, buf, len) < 0 || fsync(fd) < 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return tern_err_errno(err, e, "cannot write %s", tmp);
    }
    if (close(fd) < 0) {
        int e = errno;
        unlink(tmp);
        return tern_err_errno(err, e, "cannot close %s", tmp);
    }
    if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return tern_err_errno(err, e, "cannot rename %s to %s", tmp, path);
    }
    return tern_fsync_dir_of(path, err);
}
