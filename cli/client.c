/* ternctl's connection to ternd: one JSON request line out, reply lines in
 * (each at most max_line bytes), parsed into progress / ok / error. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../common/unix_addr.h"

#define READ_CHUNK 65536

int64_t cli_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds poll may wait before `deadline` (-1: forever). */
static int poll_wait_ms(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - cli_now_ms();
    if (left <= 0)
        return 0;
    return left > 60000 ? 60000 : (int)left;
}

void cli_conn_init_fd(struct cli_conn *c, int fd)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->max_line = CLI_MAX_REPLY;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK); /* without it, poll still guards every read */
}

/* How often a connect to a full listen queue is tried again. */
#define CONNECT_RETRY_MS 20

/* connect() without blocking past the deadline. A unix socket whose
 * listen queue is full (a stopped or swamped ternd) does not queue a
 * non-blocking connect: it fails with EAGAIN at once, and is tried again
 * until there is room or the deadline passes. -1 with errno (ETIMEDOUT
 * when the deadline passed). */
static int connect_until(int fd, const struct sockaddr_un *addr, int64_t deadline_ms)
{
    for (;;) {
        if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0)
            return 0;
        int e = errno;
        if (e == EINTR)
            continue;
        if (e != EAGAIN && e != EINPROGRESS)
            return -1;
        int w = poll_wait_ms(deadline_ms);
        if (w == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (e == EAGAIN) {
            if (poll(NULL, 0, w < 0 || w > CONNECT_RETRY_MS ? CONNECT_RETRY_MS : w) < 0 &&
                errno != EINTR)
                return -1;
            continue;
        }
        /* EINPROGRESS (not what Linux does for unix sockets, but allowed):
         * wait for the outcome; connect() is not called again. */
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int n;
        while ((n = poll(&p, 1, w)) < 0 && errno == EINTR)
            w = poll_wait_ms(deadline_ms);
        if (n < 0)
            return -1;
        if (n == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
            return -1;
        if (soerr) {
            errno = soerr;
            return -1;
        }
        return 0;
    }
}

int cli_conn_open(struct cli_conn *c, const char *path, int64_t deadline_ms,
                  struct tern_err *err)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    struct sockaddr_un addr;
    if (unix_addr_fill(&addr, path, "socket", err) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return tern_err_errno(err, errno, "creating a unix socket");
    int64_t t0 = cli_now_ms();
    if (connect_until(fd, &addr, deadline_ms) < 0) {
        int e = errno;
        close(fd);
        if (e == ETIMEDOUT)
            return tern_err_set(err, "cannot reach ternd at %s: no connection within %.1f s "
                                     "(its listen queue is full: is ternd stopped or "
                                     "overloaded?)", path, (double)(cli_now_ms() - t0) / 1000.0);
        return tern_err_set(err, "cannot reach ternd at %s: %s; is ternd running?", path,
                            strerror(e));
    }
    cli_conn_init_fd(c, fd);
    snprintf(c->path, sizeof(c->path), "%s", path);
    return 0;
}

void cli_conn_close(struct cli_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = c->drop = c->scanned = 0;
}

int cli_conn_send(struct cli_conn *c, const json_t *req, int64_t deadline_ms,
                  struct tern_err *err)
{
    char *text = json_dumps(req, JSON_COMPACT);
    if (!text)
        return tern_err_set(err, "encoding the request: out of memory");
    size_t len = strlen(text);
    if (len > CLI_MAX_LINE) {
        free(text);
        return tern_err_set(err, "the request is longer than %d bytes", CLI_MAX_LINE);
    }
    char *line = realloc(text, len + 1);
    if (!line) {
        free(text);
        return tern_err_set(err, "encoding the request: out of memory");
    }
    line[len++] = '\n';
    size_t off = 0;
    int rc = 0;
    while (off < len) {
        ssize_t n = send(c->fd, line + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            int w = poll_wait_ms(deadline_ms);
            if (w == 0) {
                rc = tern_err_set(err, "timed out sending the request to ternd");
                break;
            }
            if (poll(&p, 1, w) < 0 && errno != EINTR) {
                rc = tern_err_errno(err, errno, "waiting to send to ternd");
                break;
            }
            continue;
        }
        rc = tern_err_errno(err, n < 0 ? errno : EIO, "sending the request to ternd");
        break;
    }
    free(line);
    return rc;
}

int cli_conn_read_line(struct cli_conn *c, int64_t deadline_ms, char **line, size_t *len,
                       struct tern_err *err)
{
    /* Forget the line returned last time. */
    if (c->drop) {
        memmove(c->buf, c->buf + c->drop, c->len - c->drop);
        c->len -= c->drop;
        c->scanned -= c->drop;
        c->drop = 0;
    }
    for (;;) {
        char *nl = c->scanned < c->len ? memchr(c->buf + c->scanned, '\n', c->len - c->scanned) : NULL;
        if (nl) {
            size_t l = (size_t)(nl - c->buf);
            if (l > c->max_line)
                return tern_err_set(err, "reply line from ternd is longer than %zu bytes",
                                    c->max_line);
            *nl = '\0';
            *line = c->buf;
            *len = l;
            c->drop = l + 1;
            c->scanned = c->drop;
            return 0;
        }
        c->scanned = c->len;
        if (c->len > c->max_line)
            return tern_err_set(err, "reply line from ternd is longer than %zu bytes", c->max_line);
        if (c->cap - c->len < READ_CHUNK) {
            size_t ncap = c->cap ? c->cap * 2 : READ_CHUNK * 2;
            while (ncap - c->len < READ_CHUNK)
                ncap *= 2;
            char *nb = realloc(c->buf, ncap);
            if (!nb)
                return tern_err_set(err, "reading ternd's reply: out of memory");
            c->buf = nb;
            c->cap = ncap;
        }
        ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len - 1);
        if (n > 0) {
            c->len += (size_t)n;
            continue;
        }
        if (n == 0)
            return tern_err_set(err, c->len ? "ternd closed the connection in the middle of a reply line"
                                            : "ternd closed the connection before its final reply");
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return tern_err_errno(err, errno, "reading ternd's reply");
        int w = poll_wait_ms(deadline_ms);
        if (w == 0)
            return tern_err_set(err, "timed out waiting for ternd's reply (raise --timeout if the "
                                     "cluster is busy)");
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (poll(&p, 1, w) < 0 && errno != EINTR)
            return tern_err_errno(err, errno, "waiting for ternd's reply");
    }
}

/* The start of a line, printable, for error messages. */
static const char *quote_start(const char *line, size_t len, char *buf, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 4 < cap; i++)
        buf[o++] = isprint((unsigned char)line[i]) ? line[i] : '?';
    if (o + 4 >= cap && len > o) {
        buf[o++] = '.';
        buf[o++] = '.';
        buf[o++] = '.';
    }
    buf[o] = '\0';
    return buf;
}

void cli_reply_clear(struct cli_reply *r)
{
    json_decref(r->root);
    memset(r, 0, sizeof(*r));
}

int cli_reply_parse(const char *line, size_t len, struct cli_reply *r, struct tern_err *err)
{
    char q[72];
    memset(r, 0, sizeof(*r));
    json_error_t jerr;
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return tern_err_set(err, "malformed reply from ternd (not JSON: %s): %s", jerr.text,
                            quote_start(line, len, q, sizeof(q)));
    const char *why = NULL;
    if (!json_is_object(root)) {
        why = "not a JSON object";
        goto bad;
    }
    json_t *progress = json_object_get(root, "progress");
    json_t *ok = json_object_get(root, "ok");
    if (progress && !ok) {
        if (!json_is_object(progress)) {
            why = "\"progress\" is not an object";
            goto bad;
        }
        r->kind = CLI_REPLY_PROGRESS;
        r->body = progress;
        r->root = root;
        return 0;
    }
    if (!ok) {
        why = "neither \"ok\" nor \"progress\"";
        goto bad;
    }
    if (!json_is_boolean(ok)) {
        why = "\"ok\" is not true or false";
        goto bad;
    }
    if (json_is_true(ok)) {
        json_t *result = json_object_get(root, "result");
        if (!result) {
            result = json_object();
            json_object_set_new(root, "result", result);
        }
        if (!json_is_object(result)) {
            why = "\"result\" is not an object";
            goto bad;
        }
        r->kind = CLI_REPLY_OK;
        r->body = result;
        r->root = root;
        return 0;
    }
    json_t *e = json_object_get(root, "error");
    if (json_is_string(e)) {
        /* A bare message (tern-vmm's style): code "failed". */
        json_t *obj = json_pack("{s:s, s:O}", "code", "failed", "message", e);
        json_object_set_new(root, "error", obj);
        e = obj;
    }
    if (!json_is_object(e) || !json_is_string(json_object_get(e, "message"))) {
        why = "\"ok\":false without an error message";
        goto bad;
    }
    json_t *code = json_object_get(e, "code");
    if (code && !json_is_string(code)) {
        why = "error \"code\" is not a string";
        goto bad;
    }
    r->kind = CLI_REPLY_ERROR;
    r->body = e;
    r->code = code ? json_string_value(code) : "failed";
    r->message = json_string_value(json_object_get(e, "message"));
    r->root = root;
    return 0;
bad:
    json_decref(root);
    return tern_err_set(err, "malformed reply from ternd (%s): %s", why,
                        quote_start(line, len, q, sizeof(q)));
}

int cli_conn_next(struct cli_conn *c, int64_t deadline_ms, struct cli_reply *r,
                  struct tern_err *err)
{
    char *line;
    size_t len;
    if (cli_conn_read_line(c, deadline_ms, &line, &len, err) < 0)
        return -1;
    return cli_reply_parse(line, len, r, err);
}

const json_t *cli_reply_evacuation(const struct cli_reply *r)
{
    if (r->kind != CLI_REPLY_ERROR)
        return NULL;
    const json_t *res = json_object_get(r->root, "result");
    if (json_is_object(res))
        return res;
    res = json_object_get(r->body, "result");
    if (json_is_object(res))
        return res;
    if (json_is_array(json_object_get(r->body, "moved")) ||
        json_is_array(json_object_get(r->body, "failed")))
        return r->body;
    return NULL;
}

int cli_exit_for_error(enum cli_cmd cmd, const struct cli_reply *r)
{
    if (cmd == CLI_CMD_HOST_EVACUATE && r->code && !strcmp(r->code, "failed") &&
        cli_reply_evacuation(r))
        return CLI_EXIT_PARTIAL;
    return CLI_EXIT_FAILED;
}
