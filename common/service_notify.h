/* Telling the service manager how a daemon is doing: systemd's
 * Type=notify protocol, without libsystemd. One datagram such as
 * "READY=1" to the unix socket named by $NOTIFY_SOCKET (a path, or
 * "@name" for an abstract socket). */
#ifndef TERN_COMMON_SERVICE_NOTIFY_H
#define TERN_COMMON_SERVICE_NOTIFY_H

#include "err.h"

/* Sends `state` ("READY=1", "STOPPING=1", "STATUS=...") to $NOTIFY_SOCKET.
 * Returns 1 when sent, 0 when $NOTIFY_SOCKET is unset or empty (not
 * started by a service manager that listens), -1 with the reason. Does
 * not unset the variable: a daemon that starts other programs should
 * (they would otherwise inherit it). */
int service_notify(const char *state, struct tern_err *err);

#endif
