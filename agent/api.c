/* ternd's control socket: unix stream, one JSON request per line, replies
 * as JSON lines (docs/agent-api.md). Nothing here waits: requests are read
 * as they come, replies queue in a per-client output buffer that the loop
 * drains as the client reads. A client stops being read from while it has
 * AGENT_MAX_INFLIGHT requests waiting or 256 KiB of replies unread (it
 * blocks on its own writes, nothing is lost); one that reads nothing for
 * client_stuck_timeout (ternd.conf, 30 s) while replies wait is dropped; an
 * idle one after client_idle_timeout (300 s). A request line without a newline at the end of the
 * input is answered too. */
#include "agent.h"

#include "../common/text.h"
#include "../common/unix_listen.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define OUT_PAUSE_READING (256u << 10)
#define READ_CHUNK 65536
/* A client's input buffer starts this small and doubles while a request
 * needs more (up to the line limit and two chunks): an idle connection
 * holds 4 KiB, not 128 (256 of them: 1 MiB, not 32). */
#define IN_START 4096
/* Request handling per loop round, over all clients: past it, the rest
 * waits for the next round (after the next epoll_wait), so that a few busy
 * clients cannot make everyone else (and the cluster's deliveries) wait. */
#define ROUND_BUDGET_MS 5.0

struct client {
    struct agent *a;
    uint64_t consume_timer;  /* buffered requests to handle once below the limit */
    int fd;          /* -1 when free */
    uint64_t gen;    /* distinguishes reuse of the slot */
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_done, out_cap;
    unsigned inflight;       /* requests waiting for their final reply */
    bool eof;                /* no more input: close once everything is answered */
    bool reading;            /* LOOP_READ is set */
    double last_progress;    /* last byte read from it or written to it */
};

struct api {
    int listen_fd;
    uint64_t budget_round;   /* the loop round budget_used_ms is for */
    double budget_used_ms;
    struct client clients[AGENT_MAX_CLIENTS];
    uint64_t next_gen;
    uint64_t timer;
    struct api_stats stats;
};

static void client_close(struct agent *a, int i)
{
    struct client *c = &a->api->clients[i];
    if (c->fd >= 0) {
        loop_del_fd(a->loop, c->fd);
        close(c->fd);
    }
    loop_del_timer(a->loop, c->consume_timer);
    free(c->in);
    free(c->out);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

/* What the client is watched for: input unless paused, output while some
 * waits. */
static void client_watch(struct agent *a, int i)
{
    struct client *c = &a->api->clients[i];
    /* Input waits while 64 KiB of it holds a whole request not handled
     * yet; more is read only to complete a longer line. */
    bool backlog = c->in_len >= READ_CHUNK && memchr(c->in, '\n', c->in_len);
    bool read = !c->eof && c->inflight < AGENT_MAX_INFLIGHT &&
                c->out_len - c->out_done < OUT_PAUSE_READING && !backlog;
    bool write = c->out_len > c->out_done;
    c->reading = read;
    loop_set_events(a->loop, c->fd, (read ? LOOP_READ : 0u) | (write ? LOOP_WRITE : 0u));
}

static void on_consume(struct loop *l, void *opaque);

/* c holds a request to handle (a whole line, or the rest at its EOF). */
static bool has_request(const struct client *c)
{
    return c->in_len && (c->eof || memchr(c->in, '\n', c->in_len));
}

/* Whether more of c's requests may be handled now: below its limits (in
 * flight, replies unread) and within this round's budget. */
static bool may_consume(struct agent *a, const struct client *c)
{
    if (c->inflight >= AGENT_MAX_INFLIGHT || c->out_len - c->out_done >= OUT_PAUSE_READING)
        return false;
    uint64_t round = loop_stats(a->loop, false).rounds;
    if (round != a->api->budget_round) {
        a->api->budget_round = round;
        a->api->budget_used_ms = 0;
    }
    return a->api->budget_used_ms < ROUND_BUDGET_MS;
}

/* Writes what the socket takes now. -1 when the client is gone. */
static int client_flush(struct agent *a, int i)
{
    struct client *c = &a->api->clients[i];
    while (c->out_done < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_done, c->out_len - c->out_done,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (w <= 0) {
            client_close(a, i);
            return -1;
        }
        c->out_done += (size_t)w;
        c->last_progress = agent_now();
    }
    if (c->out_done == c->out_len)
        c->out_done = c->out_len = 0;
    else if (c->out_done > (1u << 20)) {
        memmove(c->out, c->out + c->out_done, c->out_len - c->out_done);
        c->out_len -= c->out_done;
        c->out_done = 0;
    }
    if (c->eof && c->inflight == 0 && c->out_len == 0 && c->in_len == 0) {
        client_close(a, i); /* everything asked was answered */
        return -1;
    }
    if (!c->consume_timer && has_request(c) && may_consume(a, c))
        c->consume_timer = loop_add_timer(a->loop, 0, on_consume, c);
    client_watch(a, i);
    return 0;
}

static int slot_of(struct agent *a, int client, uint64_t gen)
{
    if (client < 0 || client >= AGENT_MAX_CLIENTS)
        return -1;
    struct client *c = &a->api->clients[client];
    return c->fd >= 0 && c->gen == gen ? client : -1;
}

static void consume(struct agent *a, int i, bool eof);

static void on_consume(struct loop *l, void *opaque)
{
    (void)l;
    struct client *c = opaque;
    struct agent *a = c->a;
    int i = (int)(c - a->api->clients);
    c->consume_timer = 0;
    uint64_t gen = c->gen;
    consume(a, i, c->eof);
    if (slot_of(a, i, gen) >= 0)
        client_flush(a, i);
}

static void queue_line(struct agent *a, int i, json_t *obj, bool final)
{
    struct client *c = &a->api->clients[i];
    if (final && c->inflight > 0) {
        c->inflight--;
        /* Requests read while at the limit wait in the buffer: handle them
         * from the loop (not from inside this reply). */
        if (!c->consume_timer && has_request(c))
            c->consume_timer = loop_add_timer(a->loop, 0, on_consume, c);
    }
    size_t need = json_dumpb(obj, NULL, 0, JSON_COMPACT);
    if (need == 0) {
        client_close(a, i); /* cannot even say so: out of memory */
        return;
    }
    if (c->out_cap - c->out_len < need + 1) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap - c->out_len < need + 1)
            cap *= 2;
        char *n = realloc(c->out, cap);
        if (!n) {
            client_close(a, i);
            return;
        }
        c->out = n;
        c->out_cap = cap;
    }
    json_dumpb(obj, c->out + c->out_len, need, JSON_COMPACT);
    c->out_len += need;
    c->out[c->out_len++] = '\n';
    client_flush(a, i);
}

void api_send(struct agent *a, int client, uint64_t gen, json_t *obj)
{
    int i = slot_of(a, client, gen);
    if (i >= 0)
        queue_line(a, i, obj, false); /* a client that left: the work goes on */
}

/* The final reply, or the end of a client that cannot even be told (out
 * of memory): a request never stays without either. */
static void queue_final(struct agent *a, int i, json_t *r)
{
    if (r)
        queue_line(a, i, r, true);
    else
        client_close(a, i);
}

void api_reply(struct agent *a, int client, uint64_t gen, json_t *reply)
{
    int i = slot_of(a, client, gen);
    if (i >= 0)
        queue_final(a, i, reply);
}

void api_reply_ok(struct agent *a, int client, uint64_t gen, json_t *result)
{
    json_t *r = json_pack("{s:b, s:o}", "ok", 1, "result", result ? result : json_object());
    int i = slot_of(a, client, gen);
    if (i >= 0)
        queue_final(a, i, r);
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
    /* What the request said (a name, a command) may be cut here in the
     * middle of a character: JSON takes only whole ones. */
    text_utf8_fix(msg);
    json_t *r = json_pack("{s:b, s:{s:s, s:s}}", "ok", 0, "error", "code", code, "message", msg);
    int i = slot_of(a, client, gen);
    if (i >= 0)
        queue_final(a, i, r);
    json_decref(r);
}

static void handle_line(struct agent *a, int i, char *line, size_t len)
{
    struct client *c = &a->api->clients[i];
    uint64_t gen = c->gen;
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
        len--;
    if (len == 0)
        return;
    c->inflight++; /* every request gets exactly one final reply */
    /* The limit holds for a whole line too (the input buffer holds a
     * little more than it, so a line that ends just past it arrives). */
    if (len > AGENT_MAX_LINE) {
        api_reply_err(a, i, gen, "malformed", "request line longer than %u bytes", AGENT_MAX_LINE);
        return;
    }
    json_error_t je;
    json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    if (!req) {
        api_reply_err(a, i, gen, "malformed", "the request is not valid JSON: %s (column %d)",
                      je.text, je.column);
        return;
    }
    if (!json_is_object(req)) {
        api_reply_err(a, i, gen, "malformed", "the request must be a JSON object");
        json_decref(req);
        return;
    }
    requests_handle(a, i, gen, req);
    json_decref(req);
}

/* Handles the complete lines in the input (at most until the client's
 * in-flight limit); keeps the rest. With `eof`, a last line without a
 * newline counts too. */
static void consume(struct agent *a, int i, bool eof)
{
    struct client *c = &a->api->clients[i];
    uint64_t gen = c->gen;
    size_t start = 0;
    while (slot_of(a, i, gen) >= 0 && may_consume(a, c)) {
        char *nl = memchr(c->in + start, '\n', c->in_len - start);
        size_t n = nl ? (size_t)(nl - (c->in + start)) : c->in_len - start;
        if (!nl && !(eof && n > 0))
            break;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        handle_line(a, i, c->in + start, n);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        a->api->budget_used_ms +=
            (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        start += n + (nl ? 1 : 0);
    }
    if (slot_of(a, i, gen) < 0)
        return;
    memmove(c->in, c->in + start, c->in_len - start);
    c->in_len -= start;
    /* Stopped by the round's budget: go on next round. (Stopped by the
     * client's own limits: its replies or writes resume it.) */
    if (!c->consume_timer && has_request(c) && c->inflight < AGENT_MAX_INFLIGHT &&
        c->out_len - c->out_done < OUT_PAUSE_READING)
        c->consume_timer = loop_add_timer(a->loop, 0, on_consume, c);
}

static void read_client(struct agent *a, int i)
{
    struct client *c = &a->api->clients[i];
    uint64_t gen = c->gen;
    if (c->in_cap - c->in_len < IN_START / 2) {
        size_t cap = c->in_cap ? c->in_cap * 2 : IN_START;
        if (cap > AGENT_MAX_LINE + READ_CHUNK * 2)
            cap = AGENT_MAX_LINE + READ_CHUNK * 2;
        char *n = cap > c->in_cap ? realloc(c->in, cap) : c->in;
        if (!n) {
            client_close(a, i);
            return;
        }
        c->in = n;
        c->in_cap = cap;
    }
    ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (r < 0) {
        client_close(a, i);
        return;
    }
    c->last_progress = agent_now();
    if (r == 0)
        c->eof = true;
    c->in_len += (size_t)r;
    consume(a, i, c->eof);
    if (slot_of(a, i, gen) < 0)
        return;
    if (c->in_len > AGENT_MAX_LINE && !memchr(c->in, '\n', c->in_len)) {
        c->inflight++;
        api_reply_err(a, i, gen, "malformed", "request line longer than %u bytes", AGENT_MAX_LINE);
        c->eof = true; /* nothing after it can be read as a request */
        c->in_len = 0;
    }
    if (slot_of(a, i, gen) >= 0)
        client_flush(a, i);
}

static void on_client(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)l;
    struct client *c = opaque;
    struct agent *a = c->a;
    int i = (int)(c - a->api->clients);
    uint64_t gen = c->gen;
    (void)fd;
    if (events & LOOP_WRITE) {
        if (client_flush(a, i) < 0)
            return;
    }
    if ((events & (LOOP_READ | LOOP_HUP)) && slot_of(a, i, gen) >= 0 && c->reading)
        read_client(a, i);
    else if ((events & LOOP_HUP) && slot_of(a, i, gen) >= 0 && !c->reading)
        client_close(a, i); /* gone while we were not reading from it */
}

static void on_listen(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)l;
    (void)events;
    struct agent *a = opaque;
    for (;;) {
        int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (cfd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                agent_log("accepting a control client: %s\n", strerror(errno));
            return;
        }
        int slot = -1;
        for (int i = 0; i < AGENT_MAX_CLIENTS && slot < 0; i++)
            if (a->api->clients[i].fd < 0)
                slot = i;
        if (slot < 0) {
            /* Said as itself, so the client can show it (best effort: a
             * fresh socket takes this much). */
            char busy[256];
            int n = snprintf(busy, sizeof(busy),
                             "{\"ok\":false,\"error\":{\"code\":\"unavailable\",\"message\":"
                             "\"too many clients: ternd serves %d connections at a time; close "
                             "idle ones (they time out after %d s) and try again\"}}\n",
                             AGENT_MAX_CLIENTS, a->cfg.client_idle_s);
            ssize_t w = send(cfd, busy, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)w;
            close(cfd);
            a->api->stats.refused_full++;
            continue;
        }
        struct tern_err err;
        struct client *c = &a->api->clients[slot];
        *c = (struct client){.a = a, .fd = cfd, .gen = ++a->api->next_gen, .reading = true,
                             .last_progress = agent_now()};
        if (loop_add_fd(a->loop, cfd, LOOP_READ, on_client, c, &err) < 0) {
            agent_log("control client: %s\n", err.msg);
            close(cfd);
            c->fd = -1;
        }
    }
}

/* Drops clients that are stuck (replies wait, nothing read) or idle. */
static void on_api_timer(struct loop *l, void *opaque)
{
    struct agent *a = opaque;
    double now = agent_now();
    for (int i = 0; i < AGENT_MAX_CLIENTS; i++) {
        struct client *c = &a->api->clients[i];
        if (c->fd < 0)
            continue;
        bool output = c->out_len > c->out_done;
        if (output && now - c->last_progress > a->cfg.client_stuck_s) {
            agent_log("dropping a control client that read nothing for %d s (%zu bytes of "
                      "replies waiting)\n", a->cfg.client_stuck_s, c->out_len - c->out_done);
            client_close(a, i);
            a->api->stats.dropped_stuck++;
        } else if (!output && c->inflight == 0 && c->in_len == 0 &&
                   now - c->last_progress > a->cfg.client_idle_s) {
            client_close(a, i);
            a->api->stats.dropped_idle++;
        }
    }
    a->api->timer = loop_add_timer(l, 1000, on_api_timer, a);
}

int api_open(struct agent *a, struct tern_err *err)
{
    a->api = calloc(1, sizeof(*a->api));
    if (!a->api)
        return tern_err_set(err, "out of memory");
    a->api->listen_fd = -1;
    for (int i = 0; i < AGENT_MAX_CLIENTS; i++)
        a->api->clients[i].fd = -1;
    const char *path = a->cfg.control_socket;
    int fd = unix_listen_replace(path, "control socket", 128, 0660, err);
    if (fd == UNIX_LISTEN_IN_USE)
        return tern_err_set(err, "another ternd already serves %s; stop it first", path);
    if (fd < 0)
        return -1;
    a->api->listen_fd = fd;
    if (loop_add_fd(a->loop, fd, LOOP_READ, on_listen, a, err) < 0)
        return -1;
    a->api->timer = loop_add_timer(a->loop, 1000, on_api_timer, a);
    return 0;
}

void api_close(struct agent *a)
{
    if (!a->api)
        return;
    for (int i = 0; i < AGENT_MAX_CLIENTS; i++)
        if (a->api->clients[i].fd >= 0)
            client_close(a, i);
    if (a->api->listen_fd >= 0) {
        loop_del_fd(a->loop, a->api->listen_fd);
        close(a->api->listen_fd);
        unlink(a->cfg.control_socket);
    }
    loop_del_timer(a->loop, a->api->timer);
    free(a->api);
    a->api = NULL;
}

struct api_stats api_stats(struct agent *a)
{
    struct api_stats s = a->api->stats;
    s.clients = 0;
    for (int i = 0; i < AGENT_MAX_CLIENTS; i++)
        s.clients += a->api->clients[i].fd >= 0;
    return s;
}
