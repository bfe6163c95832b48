#include "vmm_rpc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../common/unix_addr.h"

#define RPC_MAX_REPLY (1u << 20)

struct vmm_rpc {
    struct loop *loop;
    int fd;
    uint64_t timer;
    uint64_t retry;     /* connect again (the listener's backlog was full) */
    struct sockaddr_un addr;
    vmm_rpc_fn fn;
    void *opaque;
    char what[96];
    char *out;          /* the request line */
    size_t out_len, out_done;
    char *in;
    size_t in_len, in_cap;
    struct tern_err err; /* a failure found before the loop ran it */
    bool failed_early;
};

static void rpc_free(struct vmm_rpc *c)
{
    if (c->fd >= 0) {
        loop_del_fd(c->loop, c->fd);
        close(c->fd);
    }
    loop_del_timer(c->loop, c->timer);
    loop_del_timer(c->loop, c->retry);
    free(c->out);
    free(c->in);
    free(c);
}

static void finish(struct vmm_rpc *c, json_t *reply, const struct tern_err *err)
{
    vmm_rpc_fn fn = c->fn;
    void *opaque = c->opaque;
    /* `err` may be the call's own (a failure found before the loop ran
     * it): kept past the free. */
    struct tern_err copy;
    if (err)
        copy = *err;
    c->fn = NULL;
    rpc_free(c);
    if (fn)
        fn(opaque, reply, err ? &copy : NULL);
}

static void fail(struct vmm_rpc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct vmm_rpc *c, const char *fmt, ...)
{
    struct tern_err err = {0};
    char msg[TERN_ERR_MAX - 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    tern_err_set(&err, "%s: %s", c->what, msg);
    finish(c, NULL, &err);
}

static void on_timeout(struct loop *l, void *opaque)
{
    (void)l;
    struct vmm_rpc *c = opaque;
    c->timer = 0;
    if (c->failed_early) {
        finish(c, NULL, &c->err);
        return;
    }
    fail(c, "no reply from its control socket in time (the VMM may be stopped or wedged)");
}

static void got_line(struct vmm_rpc *c, size_t len)
{
    json_error_t je;
    json_t *r = json_loadb(c->in, len, 0, &je);
    if (!r || !json_is_object(r)) {
        json_decref(r);
        fail(c, "malformed reply on its control socket");
        return;
    }
    if (!json_is_true(json_object_get(r, "ok"))) {
        const char *msg = json_string_value(json_object_get(r, "error"));
        struct tern_err err = {0};
        tern_err_set(&err, "%s: tern-vmm refused: %s", c->what, msg ? msg : "no reason given");
        json_decref(r);
        finish(c, NULL, &err);
        return;
    }
    finish(c, r, NULL);
    json_decref(r);
}

static void on_io(struct loop *l, int fd, unsigned events, void *opaque)
{
    struct vmm_rpc *c = opaque;
    if (c->out_done < c->out_len) {
        if (!(events & (LOOP_WRITE | LOOP_HUP)))
            return;
        ssize_t w = send(fd, c->out + c->out_done, c->out_len - c->out_done, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (w < 0) {
            fail(c, "sending to its control socket: %s", strerror(errno));
            return;
        }
        c->out_done += (size_t)w;
        if (c->out_done == c->out_len)
            loop_set_events(l, fd, LOOP_READ);
        return;
    }
    if (c->in_cap - c->in_len < 4096) {
        size_t ncap = c->in_cap ? c->in_cap * 2 : 8192;
        if (ncap > RPC_MAX_REPLY + 4096) {
            fail(c, "reply on its control socket is too long");
            return;
        }
        char *n = realloc(c->in, ncap);
        if (!n) {
            fail(c, "out of memory reading its reply");
            return;
        }
        c->in = n;
        c->in_cap = ncap;
    }
    ssize_t r = recv(fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        fail(c, "its control socket closed before a reply%s%s", r < 0 ? ": " : "",
             r < 0 ? strerror(errno) : "");
        return;
    }
    size_t from = c->in_len;
    c->in_len += (size_t)r;
    char *nl = memchr(c->in + from, '\n', c->in_len - from);
    if (nl)
        got_line(c, (size_t)(nl - c->in));
}

static void on_retry(struct loop *l, void *opaque)
{
    struct vmm_rpc *c = opaque;
    c->retry = 0;
    if (connect(c->fd, (struct sockaddr *)&c->addr, sizeof(c->addr)) < 0) {
        if (errno == EAGAIN) {
            c->retry = loop_add_timer(l, 10, on_retry, c);
            if (c->retry)
                return;
        }
        fail(c, "cannot connect to its control socket: %s", strerror(errno));
        return;
    }
    struct tern_err err;
    if (loop_add_fd(l, c->fd, LOOP_WRITE, on_io, c, &err) < 0)
        fail(c, "%s", err.msg);
}

struct vmm_rpc *vmm_rpc_start(struct loop *l, const char *path, const char *what,
                              const json_t *req, int timeout_ms, vmm_rpc_fn fn, void *opaque)
{
    struct vmm_rpc *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->loop = l;
    c->fd = -1;
    c->fn = fn;
    c->opaque = opaque;
    snprintf(c->what, sizeof(c->what), "%s", what);
    char *text = json_dumps(req, JSON_COMPACT);
    if (text) {
        c->out_len = strlen(text);
        c->out = realloc(text, c->out_len + 1);
        if (!c->out)
            free(text);
    }
    c->timer = loop_add_timer(l, timeout_ms, on_timeout, c);
    if (!c->out || !c->timer) {
        free(c->out);
        loop_del_timer(l, c->timer);
        free(c);
        return NULL;
    }
    c->out[c->out_len++] = '\n';
    /* Failures from here on are reported by the loop (through a 0 ms
     * timer), so the callback never runs inside this call. */
    struct sockaddr_un addr;
    struct tern_err err = {0};
    if (unix_addr_fill(&addr, path, "control socket", &err) < 0)
        goto early;
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        tern_err_errno(&err, errno, "creating a socket");
        goto early;
    }
    c->addr = addr;
    /* A unix connect completes at once, or fails with EAGAIN when the
     * listener's backlog is full: then it is tried again every 10 ms (a
     * unix socket does not finish a connect in the background). */
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        if (errno != EAGAIN) {
            tern_err_errno(&err, errno, "cannot connect to its control socket %s", path);
            goto early;
        }
        c->retry = loop_add_timer(l, 10, on_retry, c);
        if (!c->retry) {
            tern_err_set(&err, "out of memory");
            goto early;
        }
        return c;
    }
    if (loop_add_fd(l, c->fd, LOOP_WRITE, on_io, c, &err) < 0)
        goto early;
    return c;
early:
    c->failed_early = true;
    tern_err_set(&c->err, "%s: %s", c->what, err.msg);
    loop_del_timer(l, c->timer);
    c->timer = loop_add_timer(l, 0, on_timeout, c);
    if (!c->timer) {
        rpc_free(c);
        return NULL;
    }
    return c;
}

void vmm_rpc_cancel(struct vmm_rpc *c)
{
    if (c)
        rpc_free(c);
}
