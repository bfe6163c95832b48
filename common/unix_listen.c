#include "unix_listen.h"
#include "unix_addr.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Whether some process accepts connections on `addr`. */
static int in_use(const struct sockaddr_un *addr)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int used = connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0;
    close(fd);
    return used;
}

int unix_listen_replace(const char *path, const char *what, int backlog, mode_t mode,
                        struct tern_err *err)
{
    struct sockaddr_un addr, tmp;
    if (unix_addr_fill(&addr, path, what, err) < 0)
        return -1;
    if (in_use(&addr)) {
        tern_err_set(err, "%s %s is in use by another process", what, path);
        return UNIX_LISTEN_IN_USE;
    }
    char tmp_path[sizeof(tmp.sun_path)];
    if (snprintf(tmp_path, sizeof(tmp_path), "%s.%d", path, (int)getpid()) >=
        (int)sizeof(tmp_path))
        return tern_err_set(err, "%s path '%s' is too long", what, path);
    if (unix_addr_fill(&tmp, tmp_path, what, err) < 0)
        return -1;
    unlink(tmp_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return tern_err_errno(err, errno, "creating the %s", what);
    if (bind(fd, (struct sockaddr *)&tmp, sizeof(tmp)) < 0 || chmod(tmp_path, mode) < 0 ||
        listen(fd, backlog) < 0 || rename(tmp_path, path) < 0) {
        int e = errno;
        close(fd);
        unlink(tmp_path);
        return tern_err_errno(err, e, "listening on %s %s", what, path);
    }
    return fd;
}
