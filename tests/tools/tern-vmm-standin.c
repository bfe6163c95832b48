/* tern-vmm-standin: a STAND-IN for tern-vmm in tests of the agent (ternd)
 * on machines without KVM. It runs NO guest. What it imitates of tern-vmm:
 *  - the command line ternd gives it (`run ... --control PATH [--disk-rw
 *    PATH | --disk-ro PATH | --disk PATH[,ro]]... [--incoming
 *    tls://ADDR:PORT --token T --commit-gate]`; --disk is parsed by
 *    tern-vmm's own parse_disk_spec, --disk-rw/--disk-ro take the path as
 *    it is, everything else is ignored);
 *  - the disk image locks (node-vmm/disk_lock.h, invariant 7), taken
 *    through the same module at the same moments: every disk's lock
 *    before anything else (a disk in use elsewhere: the same message on
 *    stderr, exit status 65, no control socket); an incoming VM only the
 *    read-only disks' at start and the write locks at its commit, retried
 *    for up to DISK_LOCK_HANDOVER_MS (then exit 75, "the guest was not
 *    started here"); a source releases its write locks when told to
 *    commit, and keeps them on an abort;
 *  - its control protocol (docs/control-protocol.md: status, stop, watch,
 *    migrate, migrate-commit, migrate-abort, migrate-cancel) and its exit
 *    statuses (0, 64, 65, 75);
 * so that ternd's supervision, migrations, evacuations, failovers and its
 * handling of a refused start can be exercised: what the agent does, not
 * what a VM does. Tests that need a guest use the real tern-vmm on KVM.
 *
 * A "migration" between two stand-ins is a TCP connection from the source
 * to the destination's --incoming address carrying the token: the
 * destination answers READY at once; the source then waits in phase
 * "ready" (commit gate) for its agent, and sends COMMIT or ABORT; the
 * destination runs only on its own agent's migrate-commit, as tern-vmm
 * does, once it holds its disks' write locks. A heartbeat counter
 * advances every 10 ms while "running". Its status reports the
 * migration's elapsed_s (from the migrate command to the destination's
 * READY) and a constant bytes_sent, as tern-vmm reports its own.
 *
 * TERN_STANDIN_FAIL_MIGRATE=1 makes a source fail its migration at once.
 * While a file named `standin-hold` exists next to the control socket, a
 * source told to migrate pauses its "guest" in phase stop-and-copy and
 * does not reach the destination (a migration caught in flight). */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/loop.h"
#include "common/unix_listen.h"
#include "node-vmm/disk_lock.h"
#include "node-vmm/options.h"

#define MAX_CONN 16

enum state { ST_RUNNING, ST_INCOMING, ST_PAUSED };

struct conn {
    int fd;
    bool watch;
    char buf[8192];
    size_t len;
};

static struct {
    struct loop *loop;
    enum state state;
    unsigned long long heartbeats;
    int64_t paused_at;
    double handover_gap_ms;
    struct conn conns[MAX_CONN];
    /* source side */
    char phase[32];   /* "", "connecting", "ready", "committing", "done" */
    char outcome[16];
    char reason[256];
    int peer;         /* source: connection to the destination */
    char uri[128], out_token[128];
    int64_t mig_started, mig_sent; /* loop_now_ms at migrate and at READY (0: not yet) */
    bool held;        /* told to migrate while standin-hold exists */
    char hold_path[4200];
    /* destination side */
    int listen_fd;
    int in_peer;      /* destination: the source's connection */
    char token[128];
    char in_phase[16]; /* waiting, ready, committing */
    bool source_committed;
    bool gate;
    /* disks: their locks, as tern-vmm's (disk_lock.h) */
    struct disk_lock locks[VMM_MAX_DISKS];
    unsigned nr_disks;
    int64_t lock_deadline; /* destination committing: until when it retries */
    unsigned lock_attempt;
    const char *control;
    int exit_code;
} S = {.peer = -1, .listen_fd = -1, .in_peer = -1};

static void notify(const char *event, const char *key, const char *value)
{
    char line[256];
    int n = key ? snprintf(line, sizeof(line), "{\"event\":\"%s\",\"%s\":\"%s\"}\n", event, key,
                           value)
                : snprintf(line, sizeof(line), "{\"event\":\"%s\"}\n", event);
    for (int i = 0; i < MAX_CONN; i++)
        if (S.conns[i].fd > 0 && S.conns[i].watch)
            if (send(S.conns[i].fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
                /* a slow watcher misses an event; it polls anyway */
            }
}

static void set_phase(const char *p)
{
    snprintf(S.phase, sizeof(S.phase), "%s", p);
    notify("phase", "phase", p);
}

static json_t *status(void)
{
    static const char *const names[] = {"running", "incoming", "paused"};
    json_t *j = json_pack("{s:b, s:s, s:{s:I}}", "ok", 1, "state", names[S.state], "heartbeat",
                          "count", (json_int_t)S.heartbeats);
    if (S.handover_gap_ms > 0)
        json_object_set_new(json_object_get(j, "heartbeat"), "handover_gap_ms",
                            json_real(S.handover_gap_ms));
    if (S.phase[0]) {
        int64_t end = S.mig_sent ? S.mig_sent : loop_now_ms();
        json_object_set_new(j, "migration",
                            json_pack("{s:s, s:s, s:s, s:i, s:I, s:f}", "phase", S.phase,
                                      "outcome", S.outcome, "reason", S.reason, "round", 0,
                                      "bytes_sent", (json_int_t)4096, "elapsed_s",
                                      (double)(end - S.mig_started) / 1000.0));
    }
    if (S.state == ST_INCOMING)
        json_object_set_new(j, "incoming", json_pack("{s:s, s:b, s:b}", "phase", S.in_phase,
                                                     "commit_gate", S.gate, "source_committed",
                                                     S.source_committed));
    return j;
}

static void source_connect(void);

static void on_heartbeat(struct loop *l, void *opaque)
{
    (void)opaque;
    if (S.state == ST_RUNNING)
        S.heartbeats++;
    if (S.held && access(S.hold_path, F_OK) != 0) {
        S.held = false;
        source_connect();
    }
    loop_add_timer(l, 10, on_heartbeat, NULL);
}

static void end_now(int code)
{
    S.exit_code = code;
    loop_stop(S.loop);
}

static void close_peer(int *fd)
{
    if (*fd >= 0) {
        loop_del_fd(S.loop, *fd);
        close(*fd);
    }
    *fd = -1;
}

/* --- source: the stand-in "migration" --- */

static void source_fail(const char *why)
{
    close_peer(&S.peer);
    snprintf(S.outcome, sizeof(S.outcome), "failed");
    snprintf(S.reason, sizeof(S.reason), "%s", why);
    set_phase("done");
    S.state = ST_RUNNING; /* the guest goes on here */
}

static void on_peer(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)l;
    (void)events;
    (void)opaque;
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0) {
        close_peer(&S.peer);
        if (!strcmp(S.phase, "connecting"))
            source_fail("the destination closed the connection");
        return;
    }
    buf[n] = '\0';
    if (strstr(buf, "READY") && !strcmp(S.phase, "connecting")) {
        /* the whole "state" went over: paused, waiting for the agent */
        S.state = ST_PAUSED;
        S.paused_at = loop_now_ms();
        S.mig_sent = S.paused_at;
        set_phase("ready");
    }
    if (strstr(buf, "RUNNING")) {
        snprintf(S.outcome, sizeof(S.outcome), "succeeded");
        set_phase("done");
        end_now(0); /* migrated: this copy ends */
    }
}

static const char *source_migrate(const json_t *req)
{
    if (S.state != ST_RUNNING || (S.phase[0] && strcmp(S.phase, "done")))
        return "a migration is running or the guest is not running";
    S.mig_started = loop_now_ms();
    S.mig_sent = 0;
    if (getenv("TERN_STANDIN_FAIL_MIGRATE")) {
        snprintf(S.outcome, sizeof(S.outcome), "failed");
        snprintf(S.reason, sizeof(S.reason), "stand-in told to fail");
        set_phase("done");
        return NULL;
    }
    const char *uri = json_string_value(json_object_get(req, "uri"));
    const char *token = json_string_value(json_object_get(req, "token"));
    if (!uri || !token || strlen(uri) >= sizeof(S.uri) || strlen(token) >= sizeof(S.out_token))
        return "bad migrate request";
    snprintf(S.uri, sizeof(S.uri), "%s", uri);
    snprintf(S.out_token, sizeof(S.out_token), "%s", token);
    S.outcome[0] = S.reason[0] = '\0';
    if (access(S.hold_path, F_OK) == 0) {
        S.held = true;
        S.state = ST_PAUSED;
        set_phase("stop-and-copy");
        return NULL;
    }
    set_phase("connecting");
    source_connect();
    return NULL;
}

static void source_connect(void)
{
    char host[64];
    unsigned port;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (sscanf(S.uri, "tls://%63[^:]:%u", host, &port) != 2 ||
        inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        source_fail("bad destination address");
        return;
    }
    sa.sin_port = htons((uint16_t)port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (fd >= 0)
            close(fd);
        source_fail("cannot connect to the destination");
        return;
    }
    char line[256];
    int n = snprintf(line, sizeof(line), "TOKEN %s\n", S.out_token);
    struct tern_err err;
    if (send(fd, line, (size_t)n, MSG_NOSIGNAL) != n ||
        loop_add_fd(S.loop, fd, LOOP_READ, on_peer, NULL, &err) < 0) {
        close(fd);
        source_fail("cannot send to the destination");
        return;
    }
    S.peer = fd;
    set_phase("connecting");
}

static const char *source_decide(bool commit)
{
    bool in_flight = !strcmp(S.phase, "connecting") || !strcmp(S.phase, "stop-and-copy") ||
                     !strcmp(S.phase, "ready");
    if (commit ? strcmp(S.phase, "ready") != 0 : !in_flight)
        return commit ? "migrate-commit: not in phase ready" : "migrate-abort: no migration runs";
    S.held = false;
    if (commit) {
        /* As tern-vmm at its commit: the guest never runs here again, the
         * destination takes the disks' write locks. */
        struct tern_err err;
        if (disk_lock_release_set(S.locks, S.nr_disks, DISK_LOCK_WRITERS, &err) < 0)
            fprintf(stderr, "tern-vmm: %s\n", err.msg);
        set_phase("committing");
        if (S.peer >= 0 && send(S.peer, "COMMIT\n", 7, MSG_NOSIGNAL) != 7)
            close_peer(&S.peer);
        return NULL; /* ends on RUNNING; never resumes */
    }
    if (S.peer >= 0 && send(S.peer, "ABORT\n", 6, MSG_NOSIGNAL) != 6) {
        /* the destination learns it from the closed connection */
    }
    close_peer(&S.peer);
    snprintf(S.outcome, sizeof(S.outcome), "cancelled");
    snprintf(S.reason, sizeof(S.reason), "aborted by the agent");
    set_phase("done");
    S.state = ST_RUNNING;
    return NULL;
}

/* --- destination --- */

static void on_in_peer(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)l;
    (void)events;
    (void)opaque;
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0) {
        close_peer(&S.in_peer);
        if (S.state == ST_INCOMING && !strcmp(S.in_phase, "waiting"))
            end_now(75); /* before READY: the guest never ran here */
        return;          /* after READY: the agent decides */
    }
    buf[n] = '\0';
    if (!strncmp(buf, "TOKEN ", 6) && !strcmp(S.in_phase, "waiting")) {
        char *nl = strchr(buf, '\n');
        if (nl)
            *nl = '\0';
        if (strcmp(buf + 6, S.token) != 0) {
            close_peer(&S.in_peer);
            return;
        }
        snprintf(S.in_phase, sizeof(S.in_phase), "ready");
        if (send(fd, "READY\n", 6, MSG_NOSIGNAL) != 6)
            close_peer(&S.in_peer);
        return;
    }
    if (strstr(buf, "COMMIT"))
        S.source_committed = true; /* noted, not obeyed: the agent decides */
    if (strstr(buf, "ABORT") && S.state == ST_INCOMING && !strcmp(S.in_phase, "ready"))
        end_now(75); /* once committing here, the agent's commit stands */
}

static void on_listen(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)events;
    (void)opaque;
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0)
        return;
    if (S.in_peer >= 0) {
        close(c);
        return;
    }
    struct tern_err err;
    if (loop_add_fd(l, c, LOOP_READ, on_in_peer, NULL, &err) < 0) {
        close(c);
        return;
    }
    S.in_peer = c;
}

static void dest_run(void)
{
    S.state = ST_RUNNING;
    S.handover_gap_ms = 5.0;
    S.heartbeats++;
    if (S.in_peer >= 0 && send(S.in_peer, "RUNNING\n", 8, MSG_NOSIGNAL) != 8)
        close_peer(&S.in_peer);
    close_peer(&S.listen_fd);
    fprintf(stderr, "tern-vmm: migration received; the guest runs here (committed by the agent)\n");
    notify("running", NULL, NULL);
}

static void dest_fail(const char *why)
{
    fprintf(stderr, "tern-vmm: incoming migration failed: the migration committed here: %s; the "
                    "guest was not started here\n",
            why);
    end_now(75);
}

/* Committed here: the write locks first, retried (the source releases at
 * its own commit) until DISK_LOCK_HANDOVER_MS have passed, as tern-vmm. */
static void dest_take_locks(struct loop *l, void *opaque)
{
    (void)opaque;
    if (S.state != ST_INCOMING || strcmp(S.in_phase, "committing") != 0)
        return; /* stopped meanwhile */
    bool last = loop_now_ms() >= S.lock_deadline;
    struct tern_err err;
    if (disk_lock_take_set(S.locks, S.nr_disks, DISK_LOCK_WRITERS, last, &err) == 0) {
        dest_run();
        return;
    }
    if (err.code != TERN_ERR_CONFLICT) {
        dest_fail(err.msg);
        return;
    }
    if (last) {
        char why[TERN_ERR_MAX + 96];
        snprintf(why, sizeof(why), "the source did not release its disk locks within %d ms: %s",
                 DISK_LOCK_HANDOVER_MS, err.msg);
        dest_fail(why);
        return;
    }
    if (S.lock_attempt == 0)
        fprintf(stderr, "tern-vmm: waiting up to %d ms for the source to release its disk locks "
                        "(%s)\n",
                DISK_LOCK_HANDOVER_MS, err.msg);
    loop_add_timer(l, disk_lock_retry_ms(S.lock_attempt++), dest_take_locks, NULL);
}

static const char *dest_commit(void)
{
    if (S.state != ST_INCOMING || !strcmp(S.in_phase, "committing"))
        return NULL; /* running or committing already: a repeat is harmless */
    if (strcmp(S.in_phase, "ready") != 0)
        return "migrate-commit: the destination has not received the complete state yet";
    snprintf(S.in_phase, sizeof(S.in_phase), "committing");
    S.lock_deadline = loop_now_ms() + DISK_LOCK_HANDOVER_MS;
    S.lock_attempt = 0;
    dest_take_locks(S.loop, NULL);
    return NULL;
}

/* --- control socket --- */

static void reply(int fd, json_t *r)
{
    char *t = json_dumps(r, JSON_COMPACT);
    json_decref(r);
    if (!t)
        return;
    size_t n = strlen(t);
    if (send(fd, t, n, MSG_NOSIGNAL) != (ssize_t)n || send(fd, "\n", 1, MSG_NOSIGNAL) != 1) {
        /* the client went away */
    }
    free(t);
}

static void answer(struct conn *c, const char *line)
{
    json_t *req = json_loads(line, 0, NULL);
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    const char *refused = NULL;
    if (!cmd) {
        refused = "malformed request";
    } else if (!strcmp(cmd, "status")) {
        reply(c->fd, status());
        json_decref(req);
        return;
    } else if (!strcmp(cmd, "watch")) {
        c->watch = true;
        reply(c->fd, json_pack("{s:b, s:b}", "ok", 1, "watching", 1));
        json_decref(req);
        return;
    } else if (!strcmp(cmd, "stop")) {
        reply(c->fd, json_pack("{s:b}", "ok", 1));
        json_decref(req);
        if (S.state == ST_INCOMING && !strcmp(S.in_phase, "committing"))
            dest_fail("told to stop while waiting for the source to release the disk locks");
        else
            end_now(0);
        return;
    } else if (!strcmp(cmd, "migrate")) {
        refused = source_migrate(req);
    } else if (!strcmp(cmd, "migrate-commit")) {
        refused = S.state == ST_INCOMING || S.listen_fd >= 0 ? dest_commit() : source_decide(true);
    } else if (!strcmp(cmd, "migrate-abort") || !strcmp(cmd, "migrate-cancel")) {
        if (S.state == ST_INCOMING && !strcmp(S.in_phase, "committing")) {
            refused = "migrate-abort: too late, the guest was committed here and is starting";
        } else if (S.state == ST_INCOMING) {
            reply(c->fd, json_pack("{s:b}", "ok", 1));
            json_decref(req);
            end_now(75);
            return;
        } else {
            refused = source_decide(false);
        }
    } else {
        refused = "unknown command";
    }
    json_decref(req);
    if (refused)
        reply(c->fd, json_pack("{s:b, s:s}", "ok", 0, "error", refused));
    else
        reply(c->fd, json_pack("{s:b}", "ok", 1));
}

static void on_conn(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)events;
    struct conn *c = opaque;
    ssize_t n = recv(fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, MSG_DONTWAIT);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0 || c->len + (size_t)n >= sizeof(c->buf) - 1) {
        loop_del_fd(l, fd);
        close(fd);
        c->fd = 0;
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    char *nl;
    while (c->fd > 0 && (nl = strchr(c->buf, '\n'))) {
        *nl = '\0';
        answer(c, c->buf);
        size_t used = (size_t)(nl + 1 - c->buf);
        memmove(c->buf, nl + 1, c->len - used + 1);
        c->len -= used;
    }
}

static void on_control(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)events;
    (void)opaque;
    int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (cfd < 0)
        return;
    for (int i = 0; i < MAX_CONN; i++)
        if (S.conns[i].fd <= 0) {
            S.conns[i] = (struct conn){.fd = cfd};
            struct tern_err err;
            if (loop_add_fd(l, cfd, LOOP_READ, on_conn, &S.conns[i], &err) == 0)
                return;
            S.conns[i].fd = 0;
            break;
        }
    close(cfd);
}

static void on_signal(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)l;
    (void)events;
    (void)opaque;
    struct signalfd_siginfo si;
    if (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        end_now(0);
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "run") != 0) {
        fprintf(stderr, "usage: tern-vmm-standin run ... --control PATH [--incoming "
                        "tls://ADDR:PORT --token T --commit-gate]\n");
        return 64;
    }
    const char *incoming = NULL;
    struct disk_spec disks[VMM_MAX_DISKS];
    struct tern_err err;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--disk") && i + 1 < argc) {
            if (S.nr_disks == VMM_MAX_DISKS) {
                fprintf(stderr, "tern-vmm: at most %d --disk options\n", VMM_MAX_DISKS);
                return 64;
            }
            if (parse_disk_spec(argv[++i], &disks[S.nr_disks], &err) < 0) {
                fprintf(stderr, "tern-vmm: %s\n", err.msg);
                return 64;
            }
            S.nr_disks++;
        } else if ((!strcmp(argv[i], "--disk-rw") || !strcmp(argv[i], "--disk-ro")) &&
                   i + 1 < argc) {
            /* The path as given (ternd passes disks this way). */
            if (S.nr_disks == VMM_MAX_DISKS || !argv[i + 1][0]) {
                fprintf(stderr, "tern-vmm: bad or too many disk options\n");
                return 64;
            }
            disks[S.nr_disks++] = (struct disk_spec){.path = argv[i + 1],
                                                     .read_only = !strcmp(argv[i], "--disk-ro")};
            i++;
        } else if (!strcmp(argv[i], "--control") && i + 1 < argc)
            S.control = argv[++i];
        else if (!strcmp(argv[i], "--incoming") && i + 1 < argc)
            incoming = argv[++i];
        else if (!strcmp(argv[i], "--token") && i + 1 < argc)
            snprintf(S.token, sizeof(S.token), "%s", argv[++i]);
        else if (!strcmp(argv[i], "--commit-gate"))
            S.gate = true;
    }
    if (!S.control) {
        fprintf(stderr, "tern-vmm-standin: --control PATH is required\n");
        return 64;
    }
    const char *slash = strrchr(S.control, '/');
    snprintf(S.hold_path, sizeof(S.hold_path), "%.*sstandin-hold",
             slash ? (int)(slash - S.control + 1) : 0, S.control);
    /* The disks' locks before anything else, as tern-vmm's vm_create: an
     * incoming VM takes its write locks only at commit. */
    for (unsigned i = 0; i < S.nr_disks; i++) {
        if (disk_lock_open(&S.locks[i], disks[i].path, !disks[i].read_only, &err) < 0) {
            fprintf(stderr, "tern-vmm: %s\n", err.msg);
            return 65;
        }
    }
    if (disk_lock_take_set(S.locks, S.nr_disks, incoming ? DISK_LOCK_READERS : DISK_LOCK_ALL, true,
                           &err) < 0) {
        fprintf(stderr, "tern-vmm: %s\n", err.msg);
        return 65;
    }
    signal(SIGPIPE, SIG_IGN);
    if (loop_new(&S.loop, &err) < 0) {
        fprintf(stderr, "tern-vmm-standin: %s\n", err.msg);
        return 70;
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0 || loop_add_fd(S.loop, sfd, LOOP_READ, on_signal, NULL, &err) < 0) {
        fprintf(stderr, "tern-vmm-standin: signals: %s\n", strerror(errno));
        return 70;
    }
    if (incoming) {
        char host[64];
        unsigned port;
        if (sscanf(incoming, "tls://%63[^:]:%u", host, &port) != 2) {
            fprintf(stderr, "tern-vmm-standin: bad --incoming %s\n", incoming);
            return 64;
        }
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        inet_pton(AF_INET, host, &sa.sin_addr);
        S.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        int one = 1;
        setsockopt(S.listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (S.listen_fd < 0 || bind(S.listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
            listen(S.listen_fd, 4) < 0 ||
            loop_add_fd(S.loop, S.listen_fd, LOOP_READ, on_listen, NULL, &err) < 0) {
            fprintf(stderr, "tern-vmm-standin: cannot listen on %s: %s\n", incoming,
                    strerror(errno));
            return 65;
        }
        S.state = ST_INCOMING;
        snprintf(S.in_phase, sizeof(S.in_phase), "waiting");
    }
    int cfd = unix_listen_replace(S.control, "control socket", 16, 0600, &err);
    if (cfd < 0 || loop_add_fd(S.loop, cfd, LOOP_READ, on_control, NULL, &err) < 0) {
        fprintf(stderr, "tern-vmm-standin: %s\n", err.msg);
        return 65;
    }
    if (incoming)
        fprintf(stderr, "tern-vmm: waiting for a migration on %s (stand-in)\n", incoming);
    else
        fprintf(stderr, "tern-vmm-standin: running (no guest: a stand-in for tests)\n");
    loop_add_timer(S.loop, 10, on_heartbeat, NULL);
    if (loop_run(S.loop, &err) < 0)
        fprintf(stderr, "tern-vmm-standin: %s\n", err.msg);
    unlink(S.control);
    return S.exit_code;
}
