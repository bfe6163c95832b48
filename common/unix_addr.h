/* Filling a unix socket address from a path, with the length check every
 * user of one needs (sun_path holds 107 bytes and a NUL). */
#ifndef TERN_COMMON_UNIX_ADDR_H
#define TERN_COMMON_UNIX_ADDR_H

#include <sys/un.h>

#include "err.h"

/* Sets *addr to AF_UNIX `path`. A path too long for sun_path fails with
 * "<what> path '<path>' is too long (max N bytes)"; err may be NULL. */
int unix_addr_fill(struct sockaddr_un *addr, const char *path, const char *what,
                   struct tern_err *err);

#endif
