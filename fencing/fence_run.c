/* One fence agent run (fence.h): the fence-agents calling convention.
 *
 * The agent is spawned (posix_spawn) into a process group of its own (it
 * spawns helpers, e.g. ipmitool), with a minimal environment, stdin a pipe
 * already holding every `key=value` line (written before the spawn: the
 * lines are bounded below a pipe's smallest capacity, so the write cannot
 * block), stdout+stderr one non-blocking pipe read by a loop callback (the
 * last 1 KiB kept), and its end watched through a pidfd on the loop. The
 * timeout is a loop timer: SIGTERM to the whole group, SIGKILL after
 * FENCE_KILL_GRACE_MS. When the leader ends, whatever is left of its group
 * is SIGKILLed before it is reaped (while it is a zombie its pid, the
 * group's id, cannot be reused), then reaped with waitid(P_PIDFD, WNOHANG).
 * Nothing here waits. */
#include "fence.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Everything written to an agent's stdin fits in this; a pipe holds at
 * least one page, so writing it into a fresh pipe never blocks. The
 * configuration's bounds keep it there (checked again when writing). */
#define INPUT_MAX 4096

static char *const agent_env[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", NULL};

struct fence_run {
    struct loop *l;
    pid_t pid;          /* 0: never started */
    int pidfd;
    int out_fd;         /* -1 once at EOF */
    uint64_t timeout_timer, kill_timer, fail_timer;
    bool cancelled;     /* only the reaping is left */
    double t0;
    size_t out_len;
    unsigned timeout_ms;
    struct fence_result res;
    void (*done)(void *, const struct fence_result *);
    void *opaque;
};

static const char *const actions[] = {"off", "reboot", "on", "status", "monitor"};

bool fence_action_valid(const char *action)
{
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
        if (action && !strcmp(action, actions[i]))
            return true;
    return false;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Keeps the last sizeof(output) - 1 bytes of what the agent wrote. */
static void tail_append(struct fence_run *r, const char *data, size_t n)
{
    char *buf = r->res.output;
    const size_t keep = sizeof(r->res.output) - 1;
    if (n >= keep) {
        memcpy(buf, data + n - keep, keep);
        r->out_len = keep;
    } else {
        if (r->out_len + n > keep) {
            size_t drop = r->out_len + n - keep;
            memmove(buf, buf + drop, r->out_len - drop);
            r->out_len -= drop;
        }
        memcpy(buf + r->out_len, data, n);
        r->out_len += n;
    }
    /* A NUL would cut the string short. */
    for (size_t i = r->out_len - (n < keep ? n : keep); i < r->out_len; i++)
        if (buf[i] == '\0')
            buf[i] = ' ';
    buf[r->out_len] = '\0';
}

static void note(struct fence_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct fence_run *r, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    if (r->out_len && r->res.output[r->out_len - 1] != '\n')
        tail_append(r, "\n", 1);
    tail_append(r, line, len);
}

/* Reads what the agent wrote until the pipe is empty (or at EOF). */
static void drain(struct fence_run *r)
{
    if (r->out_fd < 0)
        return;
    char buf[4096];
    for (;;) {
        ssize_t n = read(r->out_fd, buf, sizeof(buf));
        if (n > 0) {
            tail_append(r, buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        /* EOF (every writer is gone) or an error: nothing more to read. */
        loop_del_fd(r->l, r->out_fd);
        close(r->out_fd);
        r->out_fd = -1;
        return;
    }
}

static void on_output(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)l;
    (void)fd;
    (void)events;
    drain(opaque);
}

static void release(struct fence_run *r)
{
    loop_del_timer(r->l, r->timeout_timer);
    loop_del_timer(r->l, r->kill_timer);
    loop_del_timer(r->l, r->fail_timer);
    r->timeout_timer = r->kill_timer = r->fail_timer = 0;
    if (r->out_fd >= 0) {
        loop_del_fd(r->l, r->out_fd);
        close(r->out_fd);
        r->out_fd = -1;
    }
    if (r->pidfd >= 0) {
        loop_del_fd(r->l, r->pidfd);
        close(r->pidfd);
        r->pidfd = -1;
    }
}

/* Hands the result over and frees the run. */
static void finish(struct fence_run *r)
{
    release(r);
    /* The operator reads the end: no trailing blank lines. */
    while (r->out_len && (r->res.output[r->out_len - 1] == '\n' ||
                          r->res.output[r->out_len - 1] == ' ' ||
                          r->res.output[r->out_len - 1] == '\r'))
        r->res.output[--r->out_len] = '\0';
    void (*done)(void *, const struct fence_result *) = r->done;
    void *opaque = r->opaque;
    struct fence_result res = r->res;
    free(r);
    done(opaque, &res);
}

/* SIGKILL to what is left of the group. Only while the leader is unreaped
 * (alive or a zombie), so the group id is still ours. */
static void kill_group(struct fence_run *r, int sig)
{
    if (r->pid > 0 && kill(-r->pid, sig) < 0 && errno != ESRCH)
        note(r, "[tern: cannot signal process group %d: %s]", (int)r->pid, strerror(errno));
}

static void on_exit_fd(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)l;
    (void)fd;
    (void)events;
    struct fence_run *r = opaque;
    /* The leader has ended: its helpers go with it, before it is reaped. */
    kill_group(r, SIGKILL);
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    int rc;
    while ((rc = waitid(P_PIDFD, (id_t)r->pidfd, &si, WEXITED | WNOHANG)) < 0 && errno == EINTR) {
    }
    int wait_errno = errno;
    if (rc == 0 && si.si_pid == 0)
        return; /* not ended after all: wait for the next wake-up */
    if (r->cancelled) {
        release(r);
        free(r);
        return;
    }
    r->res.ms = now_ms() - r->t0;
    drain(r);
    if (rc < 0) {
        note(r, "[tern: cannot reap the agent (pid %d): %s]", (int)r->pid, strerror(wait_errno));
        r->res.exit_status = -1;
    } else if (si.si_code == CLD_EXITED) {
        r->res.exit_status = si.si_status;
    } else {
        r->res.exit_status = -1;
        note(r, "[tern: the agent was killed by signal %d (%s)]", si.si_status,
             strsignal(si.si_status));
    }
    if (r->res.timed_out)
        note(r, "[tern: no result within %u ms: its process group was killed]", r->timeout_ms);
    r->res.ok = !r->res.timed_out && r->res.exit_status == 0;
    finish(r);
}

static void on_kill(struct loop *l, void *opaque)
{
    (void)l;
    struct fence_run *r = opaque;
    r->kill_timer = 0;
    kill_group(r, SIGKILL);
}

static void on_timeout(struct loop *l, void *opaque)
{
    struct fence_run *r = opaque;
    r->timeout_timer = 0;
    r->res.timed_out = true;
    kill_group(r, SIGTERM);
    r->kill_timer = loop_add_timer(l, FENCE_KILL_GRACE_MS, on_kill, r);
    if (!r->kill_timer)
        kill_group(r, SIGKILL);
}

static void on_fail(struct loop *l, void *opaque)
{
    (void)l;
    struct fence_run *r = opaque;
    r->fail_timer = 0;
    finish(r);
}

/* The password from `path`: a regular file owned by root that gives group
 * and others nothing, one line (a trailing newline is dropped). */
static int read_password(const char *path, char *out, size_t cap, struct tern_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return tern_err_errno(err, errno, "password file %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return tern_err_errno(err, e, "password file %s", path);
    }
    int rc = 0;
    if (!S_ISREG(st.st_mode))
        rc = tern_err_set(err, "password file %s is not a regular file", path);
    else if (st.st_uid != 0)
        rc = tern_err_set(err, "password file %s is owned by uid %u, not root: chown root:root it",
                          path, (unsigned)st.st_uid);
    else if (st.st_mode & 077)
        rc = tern_err_set(err,
                          "password file %s is readable or writable by group or others (mode "
                          "%04o): chmod 600 it (and change the password if others could read "
                          "it)",
                          path, (unsigned)(st.st_mode & 07777));
    else if (st.st_size > (off_t)FENCE_PASSWORD_MAX + 1)
        rc = tern_err_set(err, "password file %s is larger than %d bytes", path,
                          FENCE_PASSWORD_MAX);
    if (rc < 0) {
        close(fd);
        return -1;
    }
    char buf[FENCE_PASSWORD_MAX + 2];
    size_t len = 0;
    while (len < sizeof(buf)) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            explicit_bzero(buf, sizeof(buf));
            return tern_err_errno(err, e, "reading password file %s", path);
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (len && buf[len - 1] == '\n')
        len--;
    if (len == 0 || len > FENCE_PASSWORD_MAX || len >= cap || memchr(buf, '\n', len) ||
        memchr(buf, '\0', len) || memchr(buf, '\r', len)) {
        explicit_bzero(buf, sizeof(buf));
        return tern_err_set(err,
                            "password file %s must hold one line of 1..%d bytes (no NUL, no "
                            "carriage return)",
                            path, FENCE_PASSWORD_MAX);
    }
    memcpy(out, buf, len);
    out[len] = '\0';
    explicit_bzero(buf, sizeof(buf));
    return 0;
}

/* The agent's stdin: action, the device's arguments (password_file
 * replaced by password=), one per line. */
static int build_input(const struct fence_device *d, const char *action, char *in, size_t cap,
                       size_t *len, struct tern_err *err)
{
    size_t n = 0;
    int w = snprintf(in, cap, "action=%s\n", action);
    if (w < 0 || (size_t)w >= cap)
        return tern_err_set(err, "the agent's input is too long");
    n = (size_t)w;
    const char *a = d->args;
    const char *password_file = NULL;
    for (unsigned i = 0; i < d->nr_args; i++, a += strlen(a) + 1) {
        if (!strncmp(a, "password_file=", 14)) {
            password_file = a + 14;
            continue;
        }
        w = snprintf(in + n, cap - n, "%s\n", a);
        if (w < 0 || (size_t)w >= cap - n)
            return tern_err_set(err, "the agent's input is longer than %zu bytes", cap);
        n += (size_t)w;
    }
    if (password_file) {
        char pw[FENCE_PASSWORD_MAX + 1];
        if (read_password(password_file, pw, sizeof(pw), err) < 0)
            return -1;
        w = snprintf(in + n, cap - n, "password=%s\n", pw);
        explicit_bzero(pw, sizeof(pw));
        if (w < 0 || (size_t)w >= cap - n)
            return tern_err_set(err, "the agent's input is longer than %zu bytes", cap);
        n += (size_t)w;
    }
    *len = n;
    return 0;
}

/* A descriptor above stderr (the child's 0-2 are dup2 targets). */
static int above_stdio(int fd)
{
    if (fd > 2)
        return fd;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int e = errno;
    close(fd);
    errno = e;
    return nfd;
}

static void close_pair(int p[2])
{
    for (int i = 0; i < 2; i++)
        if (p[i] >= 0) {
            close(p[i]);
            p[i] = -1;
        }
}

/* Spawns the agent. -1 with err when it could not be started. */
static int spawn_agent(struct fence_run *r, const char *path, const char *input, size_t len,
                       struct tern_err *err)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
        int e = errno;
        close_pair(in);
        return tern_err_errno(err, e, "creating the agent's pipes");
    }
    for (int i = 0; i < 2; i++) {
        if ((in[i] = above_stdio(in[i])) < 0 || (out[i] = above_stdio(out[i])) < 0) {
            int e = errno;
            close_pair(in);
            close_pair(out);
            return tern_err_errno(err, e, "moving the agent's pipes above stderr");
        }
    }
    /* Into an empty pipe, at most one page: this write does not wait. */
    ssize_t w;
    while ((w = write(in[1], input, len)) < 0 && errno == EINTR) {
    }
    int e = errno;
    close(in[1]);
    in[1] = -1;
    if (w != (ssize_t)len) {
        close_pair(in);
        close_pair(out);
        return tern_err_errno(err, w < 0 ? e : EIO, "writing the agent's input");
    }
    if (fcntl(out[0], F_SETFL, O_NONBLOCK) < 0) {
        e = errno;
        close_pair(in);
        close_pair(out);
        return tern_err_errno(err, e, "making the agent's output pipe non-blocking");
    }

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc) {
        close_pair(in);
        close_pair(out);
        return tern_err_errno(err, rc, "posix_spawn_file_actions_init");
    }
    rc = posix_spawnattr_init(&attr);
    if (rc) {
        posix_spawn_file_actions_destroy(&fa);
        close_pair(in);
        close_pair(out);
        return tern_err_errno(err, rc, "posix_spawnattr_init");
    }
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    /* Its own process group (a timeout kills all of it); default signal
     * dispositions and an empty mask whatever the caller ignores or
     * blocks (ternd ignores SIGPIPE). Descriptors: only 0-2. */
    if ((rc = posix_spawn_file_actions_adddup2(&fa, in[0], 0)) ||
        (rc = posix_spawn_file_actions_adddup2(&fa, out[1], 1)) ||
        (rc = posix_spawn_file_actions_adddup2(&fa, out[1], 2)) ||
        (rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) ||
        (rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                  POSIX_SPAWN_SETSIGDEF)) ||
        (rc = posix_spawnattr_setpgroup(&attr, 0)) ||
        (rc = posix_spawnattr_setsigmask(&attr, &none)) ||
        (rc = posix_spawnattr_setsigdefault(&attr, &all))) {
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        close_pair(in);
        close_pair(out);
        return tern_err_errno(err, rc, "setting up the agent's spawn");
    }
    char *argv[] = {(char *)path, NULL};
    pid_t pid;
    rc = posix_spawn(&pid, path, &fa, &attr, argv, agent_env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(in[0]);
    close(out[1]);
    if (rc) {
        close(out[0]);
        return tern_err_errno(err, rc, "cannot execute %s", path);
    }
    r->pid = pid;
    r->out_fd = out[0];
    r->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (r->pidfd < 0) {
        /* Without a pidfd it cannot be watched: stop it at once. The only
         * wait in this file, for a process just SIGKILLed. */
        e = errno;
        kill(-pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        r->pid = 0;
        close(r->out_fd);
        r->out_fd = -1;
        return tern_err_errno(err, e, "pidfd_open for the agent (needs Linux 5.3)");
    }
    struct tern_err lerr;
    if (loop_add_fd(r->l, r->out_fd, LOOP_READ, on_output, r, &lerr) < 0 ||
        loop_add_fd(r->l, r->pidfd, LOOP_READ, on_exit_fd, r, &lerr) < 0 ||
        !(r->timeout_timer = loop_add_timer(r->l, r->timeout_ms, on_timeout, r))) {
        kill(-pid, SIGKILL);
        /* Reaped by on_exit_fd if registered; otherwise here, at once. */
        loop_del_fd(r->l, r->pidfd);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        r->pid = 0;
        release(r);
        return tern_err_set(err, "watching the agent on the loop: %s",
                            lerr.msg[0] ? lerr.msg : "out of memory");
    }
    return 0;
}

int fence_device_run(struct loop *l, const struct fence_config *c, const char *device,
                     const char *action, void (*done)(void *, const struct fence_result *),
                     void *opaque, struct fence_run **out, struct tern_err *err)
{
    if (out)
        *out = NULL;
    const struct fence_device *d = fence_config_device(c, device);
    if (!d)
        return tern_err_coded(err, TERN_ERR_NOT_FOUND,
                              "no fence device named '%s' (fence_device lines in ternd.conf)",
                              device);
    if (!fence_action_valid(action))
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "fence action '%s' is not one of off, reboot, on, status, monitor",
                              action ? action : "(null)");
    struct fence_run *r = calloc(1, sizeof(*r));
    if (!r)
        return tern_err_coded(err, TERN_ERR_INTERNAL, "out of memory for a fence run");
    r->l = l;
    r->pidfd = r->out_fd = -1;
    r->done = done;
    r->opaque = opaque;
    r->timeout_ms = c->timeout_ms ? c->timeout_ms : FENCE_TIMEOUT_DEFAULT_S * 1000u;
    snprintf(r->res.device, sizeof(r->res.device), "%s", d->name);
    r->res.exit_status = -1;
    r->t0 = now_ms();

    char input[INPUT_MAX];
    size_t len = 0;
    char path[FENCE_PATH_MAX + FENCE_NAME_MAX + 2];
    snprintf(path, sizeof(path), "%s/%s", c->agent_dir, d->agent);
    struct tern_err why;
    why.msg[0] = '\0';
    if (build_input(d, action, input, sizeof(input), &len, &why) < 0 ||
        spawn_agent(r, path, input, len, &why) < 0) {
        /* Could not start: reported like any failed run, from the loop. */
        explicit_bzero(input, sizeof(input));
        snprintf(r->res.output, sizeof(r->res.output), "tern: cannot run %s for %s: %s",
                 d->agent, d->name, why.msg);
        r->out_len = strlen(r->res.output);
        r->fail_timer = loop_add_timer(l, 0, on_fail, r);
        if (!r->fail_timer) {
            free(r);
            return tern_err_coded(err, TERN_ERR_INTERNAL, "out of memory for a loop timer");
        }
    }
    explicit_bzero(input, sizeof(input));
    if (out)
        *out = r;
    return 0;
}

void fence_run_cancel(struct fence_run *r)
{
    if (!r)
        return;
    if (r->pid <= 0 || r->pidfd < 0) {
        release(r);
        free(r);
        return;
    }
    /* Killed now, reaped when its pidfd says it has ended. */
    kill_group(r, SIGKILL);
    r->cancelled = true;
    loop_del_timer(r->l, r->timeout_timer);
    loop_del_timer(r->l, r->kill_timer);
    r->timeout_timer = r->kill_timer = 0;
    if (r->out_fd >= 0) {
        loop_del_fd(r->l, r->out_fd);
        close(r->out_fd);
        r->out_fd = -1;
    }
}
