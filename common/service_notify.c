#include "service_notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int service_notify(const char *state, struct tern_err *err)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return 0;
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    size_t n = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || n >= sizeof(addr.sun_path))
        return tern_err_set(err, "NOTIFY_SOCKET '%s' is not a socket path (absolute, or @name "
                                 "for an abstract socket, at most %zu bytes)",
                            path, sizeof(addr.sun_path) - 1);
    memcpy(addr.sun_path, path, n);
    if (path[0] == '@')
        addr.sun_path[0] = '\0'; /* abstract: no trailing NUL in the length */
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return tern_err_errno(err, errno, "telling the service manager '%s': socket", state);
    ssize_t sent = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&addr, alen);
    int e = errno;
    close(fd);
    if (sent < 0)
        return tern_err_errno(err, e, "telling the service manager '%s' through %s", state, path);
    if ((size_t)sent != strlen(state))
        return tern_err_set(err, "telling the service manager '%s' through %s: short send", state,
                            path);
    return 1;
}
