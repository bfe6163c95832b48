#include "unix_addr.h"

#include <string.h>
#include <sys/socket.h>

int unix_addr_fill(struct sockaddr_un *addr, const char *path, const char *what,
                   struct tern_err *err)
{
    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    size_t len = strlen(path);
    if (len >= sizeof(addr->sun_path))
        return tern_err_set(err, "%s path '%s' is too long (max %zu bytes)", what, path,
                            sizeof(addr->sun_path) - 1);
    memcpy(addr->sun_path, path, len + 1);
    return 0;
}
