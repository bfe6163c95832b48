#include "control.h"

#include "../common/unix_addr.h"
#include "../common/unix_listen.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int control_server_open(struct control_server *cs, const char *path,
                        const struct control_command *commands, size_t nr_commands,
                        void *opaque, struct tern_err *err)
{
    memset(cs, 0, sizeof(*cs));
    cs->listen_fd = -1;
    for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
        cs->clients[i].fd = -1;
    cs->commands = commands;
    cs->nr_commands = nr_commands;
    cs->opaque = opaque;
    /* Root's only: whoever can connect can save the guest's memory to any
     * file and send it anywhere (docs/control-protocol.md). */
    int fd = unix_listen_replace(path, "control socket", 8, CONTROL_SOCKET_MODE, err);
    if (fd == UNIX_LISTEN_IN_USE)
        return tern_err_set(err,
                            "control socket %s is in use by another process; choose another --control path",
                            path);
    if (fd < 0)
        return -1;
    cs->listen_fd = fd;
    snprintf(cs->path, sizeof(cs->path), "%s", path);
    return 0;
}

static void client_drop(struct control_client *c)
{
    if (c->fd >= 0 && c->cs && c->cs->loop)
        loop_del_fd(c->cs->loop, c->fd);
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    c->buf = NULL;
    c->fd = -1;
    c->len = 0;
    c->watching = false;
}

void control_server_close(struct control_server *cs)
{
    for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
        client_drop(&cs->clients[i]);
    if (cs->listen_fd >= 0) {
        if (cs->loop)
            loop_del_fd(cs->loop, cs->listen_fd);
        close(cs->listen_fd);
        unlink(cs->path);
    }
    cs->listen_fd = -1;
    cs->loop = NULL;
}

static char *error_reply(const char *msg)
{
    json_t *o = json_pack("{s:b, s:s}", "ok", 0, "error", msg);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s ? s : strdup("{\"ok\":false,\"error\":\"out of memory\"}");
}

char *control_dispatch_line(struct control_server *cs, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    char msg[TERN_ERR_MAX];
    if (!req) {
        snprintf(msg, sizeof(msg), "malformed JSON request at column %d: %s", jerr.column,
                 jerr.text);
        return error_reply(msg);
    }
    const char *cmd = json_is_object(req) ? json_string_value(json_object_get(req, "cmd")) : NULL;
    if (!cmd) {
        json_decref(req);
        return error_reply("request must be an object with a string \"cmd\"");
    }
    const struct control_command *found = NULL;
    for (size_t i = 0; i < cs->nr_commands; i++)
        if (!strcmp(cs->commands[i].name, cmd))
            found = &cs->commands[i];
    if (!found) {
        snprintf(msg, sizeof(msg), "unknown command '%.200s'", cmd);
        json_decref(req);
        return error_reply(msg);
    }
    struct tern_err err = {0};
    json_t *result = found->handler(cs->opaque, req, &err);
    json_decref(req);
    if (!result)
        return error_reply(err.msg[0] ? err.msg : "command failed");
    json_object_set_new(result, "ok", json_true());
    char *s = json_dumps(result, JSON_COMPACT);
    json_decref(result);
    return s ? s : error_reply("out of memory");
}

/* Replies are small and a client reads each before it asks again; one
 * whose socket cannot take a reply at once (it pipelines without reading)
 * is dropped, never waited for: nothing may hold the VMM's loop. */
static void send_line(struct control_client *c, const char *s)
{
    size_t len = strlen(s);
    struct iovec iov[2] = {{.iov_base = (void *)s, .iov_len = len},
                           {.iov_base = "\n", .iov_len = 1}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    ssize_t w;
    do
        w = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)(len + 1))
        client_drop(c);
}

/* {"cmd":"watch"} is the server's own: it concerns the connection, not
 * the VM. */
static bool is_watch(const char *line, size_t len)
{
    json_t *req = json_loadb(line, len, 0, NULL);
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    bool watch = cmd && !strcmp(cmd, "watch");
    json_decref(req);
    return watch;
}

void control_server_notify(struct control_server *cs, json_t *event)
{
    if (!cs)
        return;
    char *s = json_dumps(event, JSON_COMPACT);
    if (!s)
        return;
    size_t len = strlen(s);
    s[len] = '\n'; /* json_dumps' NUL becomes the line end; len + 1 bytes go out */
    for (int i = 0; i < CONTROL_MAX_CLIENTS; i++) {
        struct control_client *c = &cs->clients[i];
        if (c->fd < 0 || !c->watching)
            continue;
        ssize_t w;
        do
            w = send(c->fd, s, len + 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (w < 0 && errno == EINTR);
        if (w != (ssize_t)(len + 1))
            client_drop(c);
    }
    free(s);
}

static void on_client(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)l;
    (void)fd;
    (void)events;
    struct control_client *c = opaque;
    struct control_server *cs = c->cs;
    ssize_t r = recv(c->fd, c->buf + c->len, CONTROL_MAX_LINE - c->len, MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) {
        client_drop(c);
        return;
    }
    if (r < 0)
        return;
    c->len += (size_t)r;
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (!nl)
            break;
        size_t line_len = (size_t)(nl - c->buf);
        if (is_watch(c->buf, line_len)) {
            c->watching = true;
            send_line(c, "{\"watching\":true,\"ok\":true}");
        } else {
            char *reply = control_dispatch_line(cs, c->buf, line_len);
            send_line(c, reply);
            free(reply);
        }
        if (c->fd < 0)
            return;
        memmove(c->buf, nl + 1, c->len - line_len - 1);
        c->len -= line_len + 1;
    }
    if (c->len == CONTROL_MAX_LINE) {
        send_line(c, "{\"ok\":false,\"error\":\"request line too long\"}");
        if (c->fd >= 0)
            client_drop(c);
    }
}

static void on_listen(struct loop *l, int lfd, unsigned events, void *opaque)
{
    (void)events;
    struct control_server *cs = opaque;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
        return;
    struct control_client *slot = NULL;
    for (int k = 0; k < CONTROL_MAX_CLIENTS && !slot; k++)
        if (cs->clients[k].fd < 0)
            slot = &cs->clients[k];
    char *buf = slot ? malloc(CONTROL_MAX_LINE) : NULL;
    struct tern_err err;
    if (buf) {
        *slot = (struct control_client){.cs = cs, .fd = fd, .len = 0, .buf = buf};
        if (loop_add_fd(l, fd, LOOP_READ, on_client, slot, &err) == 0)
            return;
        free(buf);
        *slot = (struct control_client){.cs = cs, .fd = -1};
    }
    static const char busy[] = "{\"ok\":false,\"error\":\"too many control clients\"}\n";
    (void)!send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    close(fd);
}

int control_server_attach(struct control_server *cs, struct loop *l, struct tern_err *err)
{
    if (loop_add_fd(l, cs->listen_fd, LOOP_READ, on_listen, cs, err) < 0)
        return tern_err_prefix(err, "control socket %s", cs->path);
    cs->loop = l;
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int control_call(const char *path, json_t *request, int timeout_ms, json_t **reply,
                 struct tern_err *err)
{
    struct sockaddr_un addr;
    if (unix_addr_fill(&addr, path, "control socket", err) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return tern_err_errno(err, errno, "creating a socket");
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        int e = errno;
        close(fd);
        return tern_err_errno(err, e, "cannot connect to control socket %s (is the VM running?)",
                              path);
    }
    char *line = json_dumps(request, JSON_COMPACT);
    if (!line) {
        close(fd);
        return tern_err_set(err, "cannot encode request");
    }
    size_t len = strlen(line);
    int rc = -1;
    if (send(fd, line, len, MSG_NOSIGNAL) != (ssize_t)len || send(fd, "\n", 1, MSG_NOSIGNAL) != 1) {
        tern_err_errno(err, errno, "sending request to %s", path);
        goto out;
    }
    char buf[CONTROL_MAX_LINE];
    size_t got = 0;
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            tern_err_set(err, "no reply from %s within %d ms", path, timeout_ms);
            goto out;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            continue;
        ssize_t r = recv(fd, buf + got, sizeof(buf) - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            tern_err_set(err, "%s closed the connection before replying", path);
            goto out;
        }
        got += (size_t)r;
        char *nl = memchr(buf, '\n', got);
        if (nl) {
            json_error_t jerr;
            *reply = json_loadb(buf, (size_t)(nl - buf), 0, &jerr);
            if (!*reply) {
                tern_err_set(err, "malformed reply from %s: %s", path, jerr.text);
                goto out;
            }
            rc = 0;
            goto out;
        }
        if (got == sizeof(buf)) {
            tern_err_set(err, "reply from %s is too long", path);
            goto out;
        }
    }
out:
    free(line);
    close(fd);
    return rc;
}
