/* The VMM's control socket: a unix stream socket carrying one JSON object
 * per line each way. Requests look like {"cmd":"status"}; replies are
 * {"ok":true,...} or {"ok":false,"error":"..."}. The server side is served
 * by the VMM's event loop (common/loop.h; no thread of its own) and never
 * waits for a client: one that does not read its replies is dropped. The
 * client side is what `tern-vmm ctl` uses. docs/control-protocol.md lists
 * the commands. */
#ifndef TERN_NODE_VMM_CONTROL_H
#define TERN_NODE_VMM_CONTROL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "../common/err.h"
#include "../common/loop.h"

#define CONTROL_MAX_CLIENTS 8
#define CONTROL_MAX_LINE 65536

/* Handles one request. Returns a new JSON object with the reply fields (the
 * server adds "ok":true), or NULL with `err` set (sent as the error). */
typedef json_t *(*control_handler_fn)(void *opaque, json_t *request, struct tern_err *err);

struct control_command {
    const char *name;
    control_handler_fn handler;
};

struct control_server;

struct control_client {
    struct control_server *cs;
    int fd;
    size_t len;
    char *buf;     /* CONTROL_MAX_LINE bytes */
    bool watching; /* sent {"cmd":"watch"}: gets control_server_notify's events */
};

struct control_server {
    int listen_fd;
    char path[108];
    const struct control_command *commands;
    size_t nr_commands;
    void *opaque;
    struct loop *loop; /* control_server_attach */
    struct control_client clients[CONTROL_MAX_CLIENTS];
};

/* The control socket's mode, whatever the umask: its owner's only (root's
 * under ternd). */
#define CONTROL_SOCKET_MODE 0600

/* Listens on `path`, mode CONTROL_SOCKET_MODE. A stale socket file (nobody
 * answering) is replaced; one that another process still serves is an
 * error. */
int control_server_open(struct control_server *cs, const char *path,
                        const struct control_command *commands, size_t nr_commands,
                        void *opaque, struct tern_err *err);
/* Closes every connection and the socket (and leaves the loop). */
void control_server_close(struct control_server *cs);

/* Serves clients from `l` from now on. */
int control_server_attach(struct control_server *cs, struct loop *l, struct tern_err *err);

/* Sends `event` (an object with "event") as one line to every client that
 * asked to watch ({"cmd":"watch"}). A watcher whose socket is full is
 * dropped, never waited for: events must not stall the VMM's loop, and a
 * dropped watcher sees EOF and can reconnect. */
void control_server_notify(struct control_server *cs, json_t *event);

/* Turns one request line into one reply line (without the newline);
 * exposed for tests. The result is malloc'd. */
char *control_dispatch_line(struct control_server *cs, const char *line, size_t len);

/* Client: sends `request`, waits up to timeout_ms for the reply object. */
int control_call(const char *path, json_t *request, int timeout_ms, json_t **reply,
                 struct tern_err *err);

#endif
