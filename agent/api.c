/* ternd's control socket: unix stream, one JSON request per line, replies
 * as JSON lines (docs/agent-api.md). Reading never blocks the loop; a
 * client that sends garbage gets an error line, one that sends more than
 * AGENT_MAX_LINE without a newline is dropped. */
#include "agent.h"

#include "../common/unix_listen.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int api_open(struct agent *a, struct tern_err *err)
{
    const char *path = a->cfg.control_socket;
    int fd = unix_listen_replace(path, "control socket", 64, 0660, err);
    if (fd == UNIX_LISTEN_IN_USE)
        return tern_err_set(err, "another ternd already serves %s; stop it first", path);
    if (fd < 0)
        return -1;
    a->listen_fd = fd;
    return 0;
}

static void client_close(struct agent *a, int i)
{
    struct agent_client *c = &a->clients[i];
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = 0;
}

void api_close(struct agent *a)
{
    for (int i = 0; i < AGENT_MAX_CLIENTS; i++)
        client_close(a, i);
    if (a->listen_fd >= 0) {
        close(a->listen_fd);
        unlink(a->cfg.control_socket);
    }
    a->listen_fd = -1;
}

int api_pollfds(struct agent *a, struct pollfd *fds, int max)
{
    int n = 0;
    if (a->listen_fd >= 0 && n < max)
        fds[n++] = (struct pollfd){.fd = a->listen_fd, .events = POLLIN};
    for (int i = 0; i < AGENT_MAX_CLIENTS && n < max; i++)
        if (a->clients[i].fd >= 0)
            fds[n++] = (struct pollfd){.fd = a->clients[i].fd, .events = POLLIN};
    return n;
}

static int client_slot_of_fd(struct agent *a, int fd)
{
    for (int i = 0; i < AGENT_MAX_CLIENTS; i++)
        if (a->clients[i].fd == fd)
            return i;
    return -1;
}

static void accept_clients(struct agent *a)
{
    for (;;) {
        int fd = accept4(a->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                agent_log("accepting a control client: %s\n", strerror(errno));
            return;
        }
        int slot = -1;
        for (int i = 0; i < AGENT_MAX_CLIENTS; i++)
            if (a->clients[i].fd < 0) {
                slot = i;
                break;
            }
        if (slot < 0) {
            static const char busy[] =
                "{\"ok\":false,\"error\":{\"code\":\"unavailable\",\"message\":\"too many clients\"}}\n";
            ssize_t w = write(fd, busy, sizeof(busy) - 1);
            (void)w;
            close(fd);
            continue;
        }
        /* Replies are small or streamed slowly: a bounded send timeout keeps
         * a stuck client from stalling the loop for long. */
        struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        a->clients[slot] = (struct agent_client){.fd = fd, .gen = ++a->next_gen};
    }
}

static void handle_line(struct agent *a, int slot, char *line, size_t len)
{
    uint64_t gen = a->clients[slot].gen;
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
        len--;
    if (len == 0)
        return;
    json_error_t je;
    json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    if (!req) {
        api_reply_err(a, slot, gen, "malformed", "the request is not valid JSON: %s (column %d)",
                      je.text, je.column);
        return;
    }
    if (!json_is_object(req)) {
        api_reply_err(a, slot, gen, "malformed", "the request must be a JSON object");
        json_decref(req);
        return;
    }
    requests_handle(a, slot, gen, req);
    json_decref(req);
}

static void read_client(struct agent *a, int slot)
{
    struct agent_client *c = &a->clients[slot];
    if (!c->buf) {
        c->buf = malloc(AGENT_MAX_LINE);
        if (!c->buf) {
            client_close(a, slot);
            return;
        }
    }
    ssize_t r = read(c->fd, c->buf + c->len, AGENT_MAX_LINE - c->len);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        client_close(a, slot);
        return;
    }
    c->len += (size_t)r;
    size_t start = 0;
    for (;;) {
        char *nl = memchr(c->buf + start, '\n', c->len - start);
        if (!nl)
            break;
        size_t n = (size_t)(nl - (c->buf + start));
        handle_line(a, slot, c->buf + start, n);
        if (a->clients[slot].fd < 0 || a->clients[slot].buf != c->buf)
            return; /* closed while handling */
        start += n + 1;
    }
    memmove(c->buf, c->buf + start, c->len - start);
    c->len -= start;
    if (c->len == AGENT_MAX_LINE) {
        api_reply_err(a, slot, c->gen, "malformed", "request line longer than %u bytes",
                      AGENT_MAX_LINE);
        client_close(a, slot);
    }
}

void api_handle(struct agent *a, const struct pollfd *fds, int n)
{
    for (int i = 0; i < n; i++) {
        if (!fds[i].revents)
            continue;
        if (fds[i].fd == a->listen_fd) {
            accept_clients(a);
            continue;
        }
        int slot = client_slot_of_fd(a, fds[i].fd);
        if (slot >= 0)
            read_client(a, slot);
    }
}

void api_send(struct agent *a, int client, uint64_t gen, json_t *obj)
{
    if (client < 0 || client >= AGENT_MAX_CLIENTS)
        return;
    struct agent_client *c = &a->clients[client];
    if (c->fd < 0 || c->gen != gen)
        return; /* the client left; the work goes on */
    char *text = json_dumps(obj, JSON_COMPACT);
    if (!text)
        return;
    size_t len = strlen(text);
    char *line = realloc(text, len + 2);
    if (!line) {
        free(text);
        return;
    }
    line[len++] = '\n';
    /* The socket is non-blocking for reads; write blocking (bounded by
     * SO_SNDTIMEO) so a slow reader still gets whole lines. */
    int fl = fcntl(c->fd, F_GETFL);
    if (fl >= 0)
        fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK);
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(c->fd, line + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            client_close(a, client);
            break;
        }
        done += (size_t)w;
    }
    if (c->fd >= 0 && fl >= 0)
        fcntl(c->fd, F_SETFL, fl);
    free(line);
}

void api_reply_ok(struct agent *a, int client, uint64_t gen, json_t *result)
{
    json_t *r = json_pack("{s:b, s:o}", "ok", 1, "result", result ? result : json_object());
    api_send(a, client, gen, r);
    json_decref(r);
}

void api_reply_err(struct agent *a, int client, uint64_t gen, const char *code, const char *fmt,
                   ...)
{
    char msg[TERN_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *r = json_pack("{s:b, s:{s:s, s:s}}", "ok", 0, "error", "code", code, "message", msg);
    api_send(a, client, gen, r);
    json_decref(r);
}
