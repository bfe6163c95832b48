/* An agent in this process, on the one-node corosync stand-in
 * (inproc_agent.h). */
#include "inproc_agent.h"

#include "common/unix_addr.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int write_file(const char *path, const char *text, mode_t mode, struct tern_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return tern_err_errno(err, errno, "creating %s", path);
    size_t n = strlen(text);
    ssize_t w = write(fd, text, n);
    int e = errno;
    if (close(fd) < 0 || w != (ssize_t)n)
        return tern_err_errno(err, w != (ssize_t)n ? e : errno, "writing %s", path);
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) < 0 && errno != ENOENT)
        fprintf(stderr, "inproc_agent: removing %s: %s\n", path, strerror(errno));
    return 0;
}

static void remove_dir(struct inproc_agent *t)
{
    if (t->dir[0] && nftw(t->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT)
        fprintf(stderr, "inproc_agent: removing %s: %s\n", t->dir, strerror(errno));
    t->dir[0] = '\0';
}

void inproc_agent_discard(struct inproc_agent *t)
{
    remove_dir(t);
}

bool inproc_agent_ready(struct inproc_agent *t)
{
    struct agent *a = &t->a;
    return t->running && replica_ready(a->replica) && a->reconciled && agent_is_host(a) &&
           cl_state_quorate(agent_state(a)) && a->quorate &&
           replica_stable_version(a->replica) > 0;
}

int inproc_agent_round(struct inproc_agent *t, int wait_ms, struct tern_err *err)
{
    if (loop_run_once(t->a.loop, wait_ms, err) < 0)
        return tern_err_prefix(err, "the agent's loop");
    if (loop_stopping(t->a.loop))
        return tern_err_set(err, "the agent stopped itself (exit status %d)", t->a.exit_status);
    return 0;
}

int inproc_agent_start(struct inproc_agent *t, const char *extra, int timeout_ms,
                       struct tern_err *err)
{
    memset(t, 0, sizeof(*t));
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(t->dir, sizeof(t->dir), "%s/tern-inproc-XXXXXX", base);
    if (!mkdtemp(t->dir)) {
        int e = errno;
        t->dir[0] = '\0';
        return tern_err_errno(err, e, "mkdtemp in %s", base);
    }
    char p[256], vmm[256], conf[256], text[4096];
    snprintf(p, sizeof(p), "%s/tls", t->dir);
    if (mkdir(p, 0700) < 0) {
        tern_err_errno(err, errno, "mkdir %s", p);
        goto fail;
    }
    static const char *const tls[] = {"ca.pem", "cert.pem", "key.pem"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s/tls/%s", t->dir, tls[i]);
        if (write_file(p, "unused: no migration leaves a one-host cluster\n", 0600, err) < 0)
            goto fail;
    }
    /* ternd.conf needs an executable vmm_path; it is gone once the agent
     * runs, so every start fails at exec. */
    snprintf(vmm, sizeof(vmm), "%s/tern-vmm", t->dir);
    snprintf(conf, sizeof(conf), "%s/ternd.conf", t->dir);
    snprintf(text, sizeof(text),
             "run_dir = %s/run\nstate_dir = %s/state\ntls_dir = %s/tls\nvmm_path = %s\n"
             "cgroups = no\nmem = 64G\nvcpus = 32\nimage_dirs = /\ncorosync_wait = 0\n%s",
             t->dir, t->dir, t->dir, vmm, extra ? extra : "");
    if (write_file(vmm, "#!/bin/false\n", 0700, err) < 0 ||
        write_file(conf, text, 0600, err) < 0)
        goto fail;
    if (agent_init(&t->a, conf, err) < 0) {
        tern_err_prefix(err, "agent_init");
        agent_destroy(&t->a);
        goto fail;
    }
    t->running = true;
    if (unlink(vmm) < 0) {
        tern_err_errno(err, errno, "removing %s", vmm);
        goto fail;
    }
    /* agent_init blocks SIGINT and SIGTERM for its signalfd: here the
     * program (libFuzzer, cmocka) keeps handling them. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_UNBLOCK, &mask, NULL) < 0) {
        tern_err_errno(err, errno, "sigprocmask");
        goto fail;
    }
    double t0 = now_ms();
    while (!inproc_agent_ready(t)) {
        if (now_ms() - t0 > timeout_ms) {
            tern_err_set(err, "the agent was not ready within %d ms", timeout_ms);
            goto fail;
        }
        if (inproc_agent_round(t, 5, err) < 0)
            goto fail;
    }
    return 0;
fail:
    inproc_agent_stop(t, false, NULL);
    return -1;
}

char *inproc_state_text(struct cl_state *s)
{
    json_t *j = cl_state_to_json(s);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    return text;
}

int inproc_agent_stop(struct inproc_agent *t, bool check_stored, struct tern_err *err)
{
    int rc = 0;
    char *mem = NULL;
    if (t->running && check_stored) {
        mem = inproc_state_text(agent_state(&t->a));
        if (!mem)
            rc = tern_err_set(err, "out of memory");
    }
    if (t->running)
        agent_destroy(&t->a); /* writes what is queued */
    t->running = false;
    if (mem) {
        char snap[256], journal[256];
        snprintf(snap, sizeof(snap), "%s/state/cluster-state.json", t->dir);
        snprintf(journal, sizeof(journal), "%s/state/cluster-journal", t->dir);
        struct cl_state *s = cl_state_new();
        bool torn = false;
        int loaded = 0;
        char *disk = NULL;
        if (!s)
            rc = tern_err_set(err, "out of memory");
        else if (state_store_load_files(snap, journal, s, &torn, &loaded, err) < 0)
            rc = tern_err_prefix(err, "the agent's stored state does not load");
        else if (!(disk = inproc_state_text(s)))
            rc = tern_err_set(err, "out of memory");
        else if (torn || strcmp(mem, disk) != 0)
            rc = tern_err_set(err, "the stored state%s differs from the agent's: %.400s ... "
                                   "stored: %.400s ...", torn ? " (its last line cut)" : "",
                              mem, disk);
        free(disk);
        cl_state_free(s);
        free(mem);
    }
    remove_dir(t);
    return rc;
}

int inproc_connect(struct inproc_agent *t, struct inproc_client *c, struct tern_err *err)
{
    memset(c, 0, sizeof(*c));
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return tern_err_errno(err, errno, "socket");
    struct sockaddr_un sa;
    if (unix_addr_fill(&sa, t->a.cfg.control_socket, "control socket", err) < 0) {
        inproc_close(c);
        return -1;
    }
    double t0 = now_ms();
    while (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        /* EAGAIN: the backlog is full; the agent accepts in its loop. */
        if (errno != EAGAIN || now_ms() - t0 > 5000) {
            tern_err_errno(err, errno, "connecting to %s", sa.sun_path);
            inproc_close(c);
            return -1;
        }
        if (inproc_agent_round(t, 1, err) < 0) {
            inproc_close(c);
            return -1;
        }
    }
    return 0;
}

int inproc_read(struct inproc_client *c, struct tern_err *err)
{
    int got = 0;
    while (!c->eof) {
        if (c->cap - c->len < 2048) {
            size_t cap = c->cap ? c->cap * 2 : 4096;
            char *n = realloc(c->buf, cap);
            if (!n)
                return tern_err_set(err, "out of memory");
            c->buf = n;
            c->cap = cap;
            c->buf[c->len] = '\0';
        }
        ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (r < 0 && errno != ECONNRESET)
            return tern_err_errno(err, errno, "reading from the agent");
        if (r <= 0)
            c->eof = true;
        else
            c->len += (size_t)r;
        c->buf[c->len] = '\0';
        got = 1;
    }
    return got;
}

int inproc_write(struct inproc_agent *t, struct inproc_client *c, const void *data, size_t len,
                 bool shut, int timeout_ms, struct tern_err *err)
{
    size_t done = 0;
    double last = now_ms();
    while (done < len) {
        ssize_t w = send(c->fd, (const char *)data + done, len - done,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            done += (size_t)w;
            last = now_ms();
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EPIPE || errno == ECONNRESET))
            break; /* it stopped reading (a line too long) and closed */
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return tern_err_errno(err, errno, "writing to the agent");
        if (now_ms() - last > timeout_ms)
            return tern_err_set(err, "the agent read nothing for %d ms (%zu of %zu bytes written)",
                                timeout_ms, done, len);
        if (inproc_agent_round(t, 1, err) < 0 || inproc_read(c, err) < 0)
            return -1;
    }
    if (shut && shutdown(c->fd, SHUT_WR) < 0 && errno != ENOTCONN)
        return tern_err_errno(err, errno, "shutdown");
    return 0;
}

void inproc_close(struct inproc_client *c)
{
    if (c->fd >= 0 && close(c->fd) < 0)
        fprintf(stderr, "inproc_agent: close: %s\n", strerror(errno));
    free(c->buf);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

char *inproc_request(struct inproc_agent *t, const char *lines, int timeout_ms, double *took_ms,
                     struct tern_err *err)
{
    struct inproc_client c;
    double t0 = now_ms();
    if (inproc_connect(t, &c, err) < 0)
        return NULL;
    if (inproc_write(t, &c, lines, strlen(lines), true, timeout_ms, err) < 0)
        goto fail;
    while (!c.eof) {
        if (now_ms() - t0 > timeout_ms) {
            tern_err_set(err, "no end of the replies within %d ms; so far: %.500s", timeout_ms,
                         c.buf ? c.buf : "");
            goto fail;
        }
        if (inproc_agent_round(t, 1, err) < 0 || inproc_read(&c, err) < 0)
            goto fail;
    }
    if (took_ms)
        *took_ms = now_ms() - t0;
    char *out = c.buf ? c.buf : strdup("");
    c.buf = NULL;
    inproc_close(&c);
    if (!out)
        tern_err_set(err, "out of memory");
    return out;
fail:
    inproc_close(&c);
    return NULL;
}
