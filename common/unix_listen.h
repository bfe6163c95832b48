/* A listening unix stream socket for a control API (tern-vmm's control
 * socket, ternd's API socket): never two servers on one path, and never a
 * path that exists but refuses connections. */
#ifndef TERN_COMMON_UNIX_LISTEN_H
#define TERN_COMMON_UNIX_LISTEN_H

#include <sys/types.h>

#include "err.h"

#define UNIX_LISTEN_IN_USE (-2)

/* Listens on `path` (non-blocking, close-on-exec). A socket file nobody
 * answers on is replaced; one that another process still serves is
 * refused with UNIX_LISTEN_IN_USE. The socket is bound under a temporary
 * name, made exactly `mode` whatever the umask (nobody can connect before
 * that: it does not listen yet) and renamed into place once listening, so
 * whoever finds `path` can connect at once. `what` names the socket in
 * errors ("control socket"). Returns the fd, or -1 or UNIX_LISTEN_IN_USE
 * with err set. */
int unix_listen_replace(const char *path, const char *what, int backlog, mode_t mode,
                        struct tern_err *err);

#endif
