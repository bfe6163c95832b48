/* ha/corosync_link.c against real corosync: three test hosts
 * (tests/support/cluster.h), one CPG member process in each. Agreed order
 * is the same on every member, membership changes and quorum follow a
 * partition and a host crash, the node list and large messages work. The
 * time corosync takes to drop a crashed host is printed, not asserted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent/corosync_link.h"
#include "tests/support/cluster.h"
#include "tests/support/proc.h"

#define NR 3
#define GROUP "tern-test"
#define BURST 200
#define MAX_EVENTS 4096

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- the member process: one per host, driven over a socket ----
 *
 * Commands (one per packet): "burst N", "big LEN", "nodes", "quorate",
 * "leave".
 * Reports (one per packet):
 *   R <nodeid> <quorate>               link open
 *   C <t_us> m=<ids> l=<ids> j=<ids>   CPG membership change
 *   Q <t_us> <0|1>                     quorum changed
 *   D <nodeid> <text>                  small message delivered
 *   B <nodeid> <len> <ok|bad>          large message delivered (content checked)
 *   N <id>:<name>:<addr> ...           node list
 *   q <0|1>                            cs_link_quorate()
 *   E <text>                           an error */

struct member_ctx {
    int sock;
};

static void report(int sock, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(int sock, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof(buf))
        n = sizeof(buf) - 1;
    if (send(sock, buf, (size_t)n, 0) < 0)
        _exit(3); /* the test is gone */
}

static uint8_t pattern(size_t k, uint32_t sender)
{
    return (uint8_t)(k * 131u + sender * 7u + (k >> 13));
}

static void ids(char *out, size_t cap, const uint32_t *v, size_t n)
{
    size_t pos = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && pos < cap; i++)
        pos += (size_t)snprintf(out + pos, cap - pos, "%s%u", i ? "," : "", v[i]);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void on_deliver(void *opaque, uint32_t nodeid, const void *msg, size_t len)
{
    struct member_ctx *m = opaque;
    const uint8_t *p = msg;
    if (len >= 4 && !memcmp(p, "BIG:", 4)) {
        bool ok = true;
        for (size_t k = 4; k < len && ok; k++)
            ok = p[k] == pattern(k, nodeid);
        report(m->sock, "B %u %zu %s", nodeid, len, ok ? "ok" : "bad");
    } else {
        report(m->sock, "D %u %.*s", nodeid, (int)(len < 200 ? len : 200), (const char *)msg);
    }
}

static void on_confchg(void *opaque, const uint32_t *members, size_t nr_members,
                       const uint32_t *left, const bool *left_node_down, size_t nr_left,
                       const uint32_t *joined, size_t nr_joined)
{
    struct member_ctx *m = opaque;
    uint32_t sorted[64];
    size_t n = nr_members < 64 ? nr_members : 64;
    memcpy(sorted, members, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), cmp_u32);
    char a[256], b[256], c[256];
    ids(a, sizeof(a), sorted, n);
    ids(b, sizeof(b), left, nr_left);
    ids(c, sizeof(c), joined, nr_joined);
    /* Why each left: d (its node left corosync's membership) or p (only
     * its process). */
    char r[64];
    size_t k = 0;
    for (size_t i = 0; i < nr_left && k + 1 < sizeof(r); i++)
        r[k++] = left_node_down[i] ? 'd' : 'p';
    r[k] = '\0';
    report(m->sock, "C %lld m=%s l=%s j=%s r=%s", now_us(), a, b, c, r);
}

/* Its own departure (after "leave"): how many others delivered it. */
static void on_left(void *opaque, size_t nr_members)
{
    struct member_ctx *m = opaque;
    report(m->sock, "L %lld %zu", now_us(), nr_members);
}

static void on_quorum(void *opaque, bool quorate)
{
    struct member_ctx *m = opaque;
    report(m->sock, "Q %lld %d", now_us(), quorate ? 1 : 0);
}

static int dispatch_ready(struct cs_link *l, int timeout_ms, struct tern_err *e)
{
    struct pollfd fds[CS_LINK_NFDS];
    if (cs_link_pollfds(l, fds) < 0)
        return tern_err_set(e, "cs_link_pollfds failed");
    int n = poll(fds, CS_LINK_NFDS, timeout_ms);
    if (n <= 0)
        return 0;
    return cs_link_dispatch(l, fds, e);
}

static void member_command(struct cs_link *l, struct member_ctx *m, uint32_t me, char *cmd)
{
    struct tern_err e;
    size_t arg;
    if (sscanf(cmd, "burst %zu", &arg) == 1) {
        for (size_t k = 0; k < arg; k++) {
            char msg[64];
            int len = snprintf(msg, sizeof(msg), "h%u-%zu", me, k);
            if (cs_link_send(l, msg, (size_t)len, &e) < 0) {
                report(m->sock, "E send %s: %s", msg, e.msg);
                return;
            }
            /* Keep our deliveries flowing while we send. */
            if (dispatch_ready(l, 0, &e) < 0) {
                report(m->sock, "E %s", e.msg);
                return;
            }
        }
    } else if (sscanf(cmd, "big %zu", &arg) == 1) {
        uint8_t *buf = malloc(arg < 4 ? 4 : arg);
        if (!buf) {
            report(m->sock, "E out of memory for %zu bytes", arg);
            return;
        }
        memcpy(buf, "BIG:", 4);
        for (size_t k = 4; k < arg; k++)
            buf[k] = pattern(k, me);
        if (cs_link_send(l, buf, arg, &e) < 0)
            report(m->sock, "E send big: %s", e.msg);
        free(buf);
    } else if (!strcmp(cmd, "nodes")) {
        struct cs_node nodes[16];
        size_t nr;
        if (cs_link_nodelist(l, nodes, 16, &nr, &e) < 0) {
            report(m->sock, "E nodelist: %s", e.msg);
            return;
        }
        char line[1024];
        size_t pos = 0;
        for (size_t i = 0; i < nr && pos < sizeof(line); i++)
            pos += (size_t)snprintf(line + pos, sizeof(line) - pos, " %u:%s:%s",
                                    nodes[i].nodeid, nodes[i].name, nodes[i].addr);
        report(m->sock, "N%s", line);
    } else if (!strcmp(cmd, "leave")) {
        if (cs_link_leave(l, &e) < 0)
            report(m->sock, "E leave: %s", e.msg);
    } else if (!strcmp(cmd, "quorate")) {
        report(m->sock, "q %d", cs_link_quorate(l) ? 1 : 0);
    } else {
        report(m->sock, "E unknown command %s", cmd);
    }
}

static void member_main(int sock)
{
    struct member_ctx m = {.sock = sock};
    struct cs_link_callbacks cb = {on_deliver, on_confchg, on_quorum, NULL, on_left};
    struct cs_link *l;
    struct tern_err e;
    if (cs_link_open(&l, GROUP, &cb, &m, &e) < 0) {
        report(sock, "E open: %s", e.msg);
        _exit(1);
    }
    uint32_t me = cs_link_local_nodeid(l);
    report(sock, "R %u %d", me, cs_link_quorate(l) ? 1 : 0);
    for (;;) {
        struct pollfd fds[CS_LINK_NFDS + 1];
        if (cs_link_pollfds(l, fds) < 0) {
            report(sock, "E cs_link_pollfds failed");
            _exit(1);
        }
        fds[CS_LINK_NFDS] = (struct pollfd){.fd = sock, .events = POLLIN};
        if (poll(fds, CS_LINK_NFDS + 1, -1) < 0 && errno != EINTR)
            _exit(1);
        if (cs_link_dispatch(l, fds, &e) < 0) {
            report(sock, "E %s", e.msg);
            _exit(1);
        }
        if (fds[CS_LINK_NFDS].revents & (POLLIN | POLLHUP)) {
            char cmd[256];
            ssize_t n = recv(sock, cmd, sizeof(cmd) - 1, 0);
            if (n <= 0)
                break;
            cmd[n] = '\0';
            member_command(l, &m, me, cmd);
        }
    }
    cs_link_close(l);
    _exit(0);
}

/* ---- the test's side ---- */

struct member {
    pid_t pid;
    int sock;
    bool gone;
    char *ev[MAX_EVENTS];
    int nev;
};

struct fixture {
    char *dir;
    struct test_cluster c;
    struct member m[NR + 1]; /* [1..NR] */
};

static struct fixture *live_fixture;

static void free_member(struct member *m)
{
    if (m->pid > 0) {
        kill(m->pid, SIGKILL);
        waitpid(m->pid, NULL, 0);
        m->pid = 0;
    }
    if (m->sock >= 0)
        close(m->sock);
    m->sock = -1;
    for (int k = 0; k < m->nev; k++)
        free(m->ev[k]);
    m->nev = 0;
}

static void cleanup(struct fixture *f)
{
    for (int i = 1; i <= NR; i++)
        free_member(&f->m[i]);
    test_cluster_destroy(&f->c); /* removes f->dir too */
    free(f->dir);
    f->dir = NULL;
}

static void cleanup_at_exit(void)
{
    if (live_fixture)
        cleanup(live_fixture);
}

/* Reads whatever the members reported within timeout_ms. */
static void pump(struct fixture *f, int timeout_ms)
{
    struct pollfd fds[NR];
    int who[NR], n = 0;
    for (int i = 1; i <= NR; i++) {
        if (f->m[i].gone || f->m[i].sock < 0)
            continue;
        fds[n] = (struct pollfd){.fd = f->m[i].sock, .events = POLLIN};
        who[n++] = i;
    }
    if (n == 0 || poll(fds, (nfds_t)n, timeout_ms) <= 0)
        return;
    for (int k = 0; k < n; k++) {
        struct member *m = &f->m[who[k]];
        if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        for (;;) {
            char buf[4096];
            ssize_t r = recv(m->sock, buf, sizeof(buf) - 1, MSG_DONTWAIT);
            if (r < 0 && errno == EAGAIN)
                break;
            if (r <= 0) {
                m->gone = true;
                break;
            }
            buf[r] = '\0';
            if (m->nev < MAX_EVENTS)
                m->ev[m->nev++] = strdup(buf);
        }
    }
}

/* Prints the errors member i reported since event `from`; their number. */
static int print_errors(const struct fixture *f, int i, int from)
{
    int n = 0;
    for (int k = from; k < f->m[i].nev; k++)
        if (f->m[i].ev[k][0] == 'E') {
            print_message("h%d member: %s\n", i, f->m[i].ev[k]);
            n++;
        }
    if (f->m[i].gone)
        print_message("h%d member: gone\n", i);
    return n;
}

/* Index of the first event of member i at or after `from` that starts
 * with `prefix` and contains `needle` (may be NULL), waiting up to
 * timeout_ms; -1 if none came. */
static int wait_event(struct fixture *f, int i, int from, const char *prefix, const char *needle,
                      int timeout_ms)
{
    long long end = now_us() + (long long)timeout_ms * 1000;
    for (;;) {
        struct member *m = &f->m[i];
        for (int k = from; k < m->nev; k++)
            if (!strncmp(m->ev[k], prefix, strlen(prefix)) &&
                (!needle || strstr(m->ev[k], needle)))
                return k;
        long long left = end - now_us();
        if (left <= 0) {
            if (timeout_ms > 0)
                print_errors(f, i, from);
            return -1;
        }
        pump(f, (int)(left / 1000) + 1 < 50 ? (int)(left / 1000) + 1 : 50);
    }
}

static int count_events(const struct member *m, int from, const char *prefix)
{
    int n = 0;
    for (int k = from; k < m->nev; k++)
        n += !strncmp(m->ev[k], prefix, strlen(prefix));
    return n;
}

static void command(struct fixture *f, int i, const char *cmd)
{
    assert_true(send(f->m[i].sock, cmd, strlen(cmd), 0) == (ssize_t)strlen(cmd));
}

static int start_member(struct fixture *f, int i)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(sv[0]);
        char err[512];
        if (test_cluster_enter(&f->c, i, true, err, sizeof(err)) < 0) {
            report(sv[1], "E enter: %s", err);
            _exit(1);
        }
        member_main(sv[1]);
    }
    close(sv[1]);
    f->m[i].pid = pid;
    f->m[i].sock = sv[0];
    return 0;
}

/* Membership of member i's latest confchg ("" if none). */
static const char *last_members(const struct member *m)
{
    for (int k = m->nev - 1; k >= 0; k--)
        if (m->ev[k][0] == 'C')
            return strstr(m->ev[k], "m=");
    return "";
}

static bool all_see_members(struct fixture *f, const int *hosts, int n, const char *members,
                            int timeout_ms)
{
    long long end = now_us() + (long long)timeout_ms * 1000;
    for (;;) {
        int ok = 0;
        for (int k = 0; k < n; k++) {
            const char *lm = last_members(&f->m[hosts[k]]);
            ok += !strncmp(lm, members, strlen(members)) && lm[strlen(members)] == ' ';
        }
        if (ok == n)
            return true;
        if (now_us() >= end)
            return false;
        pump(f, 50);
    }
}

/* Asks member i for cs_link_quorate() (answered after it dispatched what
 * was ready on its fds). 1, 0, or -1 when it does not answer. */
static int ask_quorate(struct fixture *f, int i)
{
    int from = f->m[i].nev;
    command(f, i, "quorate");
    int r = wait_event(f, i, from, "q ", NULL, 3000);
    if (r < 0)
        return -1;
    return atoi(f->m[i].ev[r] + 2);
}

static int group_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[1024];
    if (!f)
        return -1;
    *state = f; /* for the teardown, whatever happens next */
    if (!(f->dir = test_make_tmpdir("corosync")))
        return -1;
    for (int i = 0; i <= NR; i++)
        f->m[i].sock = -1;
    live_fixture = f;
    atexit(cleanup_at_exit);
    long long t0 = now_us();
    if (test_cluster_create(&f->c, NR, f->dir, err, sizeof(err)) < 0) {
        print_message("test hosts: %s\n", err);
        return -1;
    }
    for (int i = 1; i <= NR; i++) {
        if (test_cluster_start_corosync(&f->c, i, err, sizeof(err)) < 0) {
            print_message("%s\n", err);
            return -1;
        }
    }
    if (test_cluster_wait_quorate(&f->c, 15000, err, sizeof(err)) < 0) {
        print_message("%s\n", err);
        return -1;
    }
    long long t1 = now_us();
    for (int i = 1; i <= NR; i++) {
        if (start_member(f, i) < 0) {
            print_message("cannot start the member in h%d\n", i);
            return -1;
        }
    }
    const int all[] = {1, 2, 3};
    if (!all_see_members(f, all, NR, "m=1,2,3", 10000)) {
        print_message("the members did not all see each other join\n");
        return -1;
    }
    print_message("3 hosts created and quorate in %.2f s; CPG group complete %.2f s later\n",
                  (double)(t1 - t0) / 1e6, (double)(now_us() - t1) / 1e6);
    return 0;
}

static int group_teardown(void **state)
{
    struct fixture *f = *state;
    if (f) {
        cleanup(f);
        live_fixture = NULL;
        free(f);
    }
    return 0;
}

static void test_open_members_nodelist(void **state)
{
    struct fixture *f = *state;
    for (int i = 1; i <= NR; i++) {
        int r = wait_event(f, i, 0, "R ", NULL, 1000);
        assert_true(r >= 0);
        char want[16];
        snprintf(want, sizeof(want), "R %d 1", i); /* its nodeid, quorate */
        assert_string_equal(f->m[i].ev[r], want);
        /* The first membership it saw includes itself as joined. */
        int c = wait_event(f, i, 0, "C ", NULL, 1000);
        assert_true(c >= 0);
        char self[16];
        snprintf(self, sizeof(self), "%d", i);
        assert_non_null(strstr(strstr(f->m[i].ev[c], "j="), self));

        int from = f->m[i].nev;
        command(f, i, "nodes");
        int n = wait_event(f, i, from, "N", NULL, 3000);
        assert_true(n >= 0);
        assert_string_equal(f->m[i].ev[n],
                            "N 1:h1:10.77.0.1 2:h2:10.77.0.2 3:h3:10.77.0.3");
    }
}

/* Every member sends BURST numbered messages at once; everyone must see
 * the same interleaving. */
static void test_agreed_order_identical(void **state)
{
    struct fixture *f = *state;
    int from[NR + 1];
    for (int i = 1; i <= NR; i++)
        from[i] = f->m[i].nev;
    char cmd[32];
    snprintf(cmd, sizeof(cmd), "burst %d", BURST);
    long long t0 = now_us();
    for (int i = 1; i <= NR; i++)
        command(f, i, cmd);
    long long end = t0 + 15 * 1000000LL;
    for (;;) {
        int done = 0;
        for (int i = 1; i <= NR; i++)
            done += count_events(&f->m[i], from[i], "D ") >= NR * BURST;
        if (done == NR || now_us() >= end)
            break;
        pump(f, 50);
    }
    double secs = (double)(now_us() - t0) / 1e6;
    for (int i = 1; i <= NR; i++) {
        assert_int_equal(print_errors(f, i, from[i]), 0);
        assert_int_equal(count_events(&f->m[i], from[i], "D "), NR * BURST);
    }
    /* Same sequence everywhere; each sender's messages in its own order. */
    int switches = 0;
    int next[NR + 1] = {0};
    int k1 = from[1], k2 = from[2], k3 = from[3];
    const char *prev = NULL;
    for (int n = 0; n < NR * BURST; n++) {
        while (strncmp(f->m[1].ev[k1], "D ", 2))
            k1++;
        while (strncmp(f->m[2].ev[k2], "D ", 2))
            k2++;
        while (strncmp(f->m[3].ev[k3], "D ", 2))
            k3++;
        assert_string_equal(f->m[1].ev[k1], f->m[2].ev[k2]);
        assert_string_equal(f->m[1].ev[k1], f->m[3].ev[k3]);
        unsigned sender, hs, seq;
        assert_int_equal(sscanf(f->m[1].ev[k1], "D %u h%u-%u", &sender, &hs, &seq), 3);
        assert_int_equal(sender, hs);
        assert_true(sender >= 1 && sender <= NR);
        assert_int_equal(seq, next[sender]);
        next[sender]++;
        if (prev && strncmp(prev, f->m[1].ev[k1], 3))
            switches++;
        prev = f->m[1].ev[k1];
        k1++, k2++, k3++;
    }
    print_message("%d messages from 3 senders delivered in the same order to all 3 in %.2f s "
                  "(%d sender switches in the sequence)\n",
                  NR * BURST, secs, switches);
}

/* All three send a message of the largest size at once: each arrives
 * intact everywhere (libcpg reassembles fragments per sender), in the
 * same order. */
static void test_large_messages(void **state)
{
    struct fixture *f = *state;
    int from[NR + 1];
    for (int i = 1; i <= NR; i++)
        from[i] = f->m[i].nev;
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "big %u", CS_LINK_MAX_MSG);
    long long t0 = now_us();
    for (int i = 1; i <= NR; i++)
        command(f, i, cmd);
    int first[NR + 1];
    for (int i = 1; i <= NR; i++) {
        int b = from[i];
        for (int n = 0; n < NR; n++) {
            b = wait_event(f, i, b, "B ", NULL, 15000);
            assert_true(b >= 0);
            unsigned sender;
            size_t len;
            char verdict[8];
            assert_int_equal(sscanf(f->m[i].ev[b], "B %u %zu %7s", &sender, &len, verdict), 3);
            assert_int_equal(len, CS_LINK_MAX_MSG);
            assert_string_equal(verdict, "ok");
            if (n == 0)
                first[i] = b;
            /* Same order as member 1's. */
            if (i > 1) {
                int b1 = first[1];
                for (int k = 0; k < n; k++)
                    b1 = wait_event(f, 1, b1 + 1, "B ", NULL, 0);
                assert_string_equal(f->m[i].ev[b], f->m[1].ev[b1]);
            }
            b++;
        }
    }
    print_message("3 messages of %u bytes, sent at once, reached all 3 intact in %.0f ms\n",
                  CS_LINK_MAX_MSG, (double)(now_us() - t0) / 1e3);
    for (int i = 1; i <= NR; i++)
        assert_int_equal(print_errors(f, i, from[i]), 0);
    /* The limit is enforced with a clear error. */
    snprintf(cmd, sizeof(cmd), "big %u", CS_LINK_MAX_MSG + 1);
    command(f, 1, cmd);
    int e = wait_event(f, 1, from[1], "E ", NULL, 3000);
    assert_true(e >= 0);
    char limit[64];
    snprintf(limit, sizeof(limit), "larger than the %u-byte limit", CS_LINK_MAX_MSG);
    assert_non_null(strstr(f->m[1].ev[e], limit));
    /* None of it disturbed the membership. */
    pump(f, 100);
    for (int i = 1; i <= NR; i++)
        assert_int_equal(count_events(&f->m[i], from[i], "C "), 0);
}

/* cs_link_leave (ternd's orderly stop): the leaver learns how many others
 * delivered its departure. Connected: both others, who see its process
 * leave (its node stays). Cut off first (before corosync noticed): none,
 * while the others see its node leave: the case in which ternd keeps its
 * watchdog armed. */
/* Member h leaves the group: how many others delivered its departure
 * (and when it learnt it, into *t). */
static size_t leave(struct fixture *f, int h, long long *t)
{
    int from = f->m[h].nev;
    command(f, h, "leave");
    int l = wait_event(f, h, from, "L ", NULL, 10000);
    assert_true(l >= 0);
    size_t others;
    assert_int_equal(sscanf(f->m[h].ev[l], "L %lld %zu", t, &others), 2);
    return others;
}

/* A new member process on host h, and everyone together again. */
static void restart_member(struct fixture *f, int h, int timeout_ms)
{
    const int all[] = {1, 2, 3};
    free_member(&f->m[h]);
    f->m[h].gone = false;
    assert_int_equal(start_member(f, h), 0);
    assert_true(all_see_members(f, all, NR, "m=1,2,3", timeout_ms));
}

static void test_leave_seen_or_not(void **state)
{
    struct fixture *f = *state;
    int from[NR + 1];
    for (int i = 1; i <= NR; i++)
        from[i] = f->m[i].nev;
    long long t;
    assert_int_equal(leave(f, 2, &t), 2);
    const int rest13[] = {1, 3};
    assert_true(all_see_members(f, rest13, 2, "m=1,3", 10000));
    int c = wait_event(f, 1, from[1], "C ", "l=2 ", 0);
    assert_true(c >= 0);
    assert_non_null(strstr(f->m[1].ev[c], " r=p"));
    restart_member(f, 2, 10000);

    /* Cut off, then leave at once. */
    for (int i = 1; i <= NR; i++)
        from[i] = f->m[i].nev;
    char err[512];
    assert_int_equal(test_cluster_partition(&f->c, 3, true, err, sizeof(err)), 0);
    long long t0 = now_us();
    assert_int_equal(leave(f, 3, &t), 0);
    print_message("h3 cut off then leaving: its departure delivered to nobody else, after "
                  "%.0f ms\n", (double)(t - t0) / 1e3);
    const int rest12[] = {1, 2};
    assert_true(all_see_members(f, rest12, 2, "m=1,2", 10000));
    c = wait_event(f, 1, from[1], "C ", "l=3 ", 0);
    assert_true(c >= 0);
    assert_non_null(strstr(f->m[1].ev[c], " r=d")); /* its node, for the others */
    assert_int_equal(test_cluster_partition(&f->c, 3, false, err, sizeof(err)), 0);
    if (test_cluster_wait_quorate(&f->c, 15000, err, sizeof(err)) < 0)
        fail_msg("%s", err);
    restart_member(f, 3, 15000);
}

/* Host 1 alone loses quorum; 2 and 3 keep it and see 1 leave; after
 * healing, everyone is back together. */
static void test_partition_loses_quorum(void **state)
{
    struct fixture *f = *state;
    int from[NR + 1];
    for (int i = 1; i <= NR; i++)
        from[i] = f->m[i].nev;
    char err[512];
    long long t0 = now_us();
    assert_int_equal(test_cluster_partition(&f->c, 1, true, err, sizeof(err)), 0);
    int q = wait_event(f, 1, from[1], "Q ", NULL, 10000);
    assert_true(q >= 0);
    long long tq;
    int v;
    assert_int_equal(sscanf(f->m[1].ev[q], "Q %lld %d", &tq, &v), 2);
    assert_int_equal(v, 0);
    const int rest[] = {2, 3};
    assert_true(all_see_members(f, rest, 2, "m=2,3", 10000));
    for (int k = 0; k < 2; k++) {
        int i = rest[k];
        assert_int_equal(count_events(&f->m[i], from[i], "Q "), 0);
        int c = wait_event(f, i, from[i], "C ", "l=1 ", 0);
        assert_true(c >= 0);
        assert_int_equal(ask_quorate(f, i), 1);
    }
    print_message("partitioned h1 lost quorum after %.0f ms\n", (double)(tq - t0) / 1e3);

    int heal_from = f->m[1].nev;
    long long t1 = now_us();
    assert_int_equal(test_cluster_partition(&f->c, 1, false, err, sizeof(err)), 0);
    q = wait_event(f, 1, heal_from, "Q ", " 1", 15000);
    assert_true(q >= 0);
    const int all[] = {1, 2, 3};
    assert_true(all_see_members(f, all, NR, "m=1,2,3", 15000));
    print_message("healed: h1 quorate again and all 3 in the group after %.2f s\n",
                  (double)(now_us() - t1) / 1e6);
}

/* Host 2 hangs (cgroup.freeze: corosync and its member stop running): 1
 * and 3 see it leave and stay quorate; thawed, it finds itself alone for a
 * moment, then merges back. */
static void test_frozen_host_leaves_and_returns(void **state)
{
    struct fixture *f = *state;
    int from[NR + 1];
    for (int i = 1; i <= NR; i++)
        from[i] = f->m[i].nev;
    char err[512];
    long long t0 = now_us();
    assert_int_equal(test_cluster_freeze_host(&f->c, 2, true, err, sizeof(err)), 0);
    const int rest[] = {1, 3};
    bool left = all_see_members(f, rest, 2, "m=1,3", 10000);
    long long t1 = now_us();
    assert_int_equal(test_cluster_freeze_host(&f->c, 2, false, err, sizeof(err)), 0);
    assert_true(left);
    for (int k = 0; k < 2; k++) {
        int i = rest[k];
        int c = wait_event(f, i, from[i], "C ", "m=1,3 ", 0);
        assert_true(c >= 0);
        assert_true(wait_event(f, i, c + 1, "C ", "m=1,2,3 ", 15000) >= 0);
        assert_int_equal(count_events(&f->m[i], from[i], "Q "), 0);
    }
    /* h2's own view: back with everyone, and quorate again (votequorum
     * may tell it after CPG's confchg: they are separate connections). */
    assert_true(wait_event(f, 2, from[2], "C ", "m=1,2,3 ", 15000) >= 0);
    long long end = now_us() + 5000000;
    while (ask_quorate(f, 2) != 1 && now_us() < end)
        test_sleep_ms(20);
    assert_int_equal(ask_quorate(f, 2), 1);
    print_message("frozen h2 dropped after %.0f ms; thawed, back in the group after %.2f s "
                  "(%d quorum changes seen there)\n",
                  (double)(t1 - t0) / 1e3, (double)(now_us() - t1) / 1e6,
                  count_events(&f->m[2], from[2], "Q "));
}

/* Host 3 crashes (every process of it SIGKILLed at once): 1 and 2 see it
 * leave and stay quorate. */
static void test_killed_host_leaves(void **state)
{
    struct fixture *f = *state;
    int from[NR + 1];
    for (int i = 1; i <= NR; i++)
        from[i] = f->m[i].nev;
    char err[512];
    long long t0 = now_us();
    assert_int_equal(test_cluster_kill_host(&f->c, 3, err, sizeof(err)), 0);
    /* Its member process died with it. */
    int ws;
    assert_int_equal(waitpid(f->m[3].pid, &ws, 0), f->m[3].pid);
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
    f->m[3].pid = 0;
    assert_false(test_cluster_corosync_running(&f->c, 3));

    const int rest[] = {1, 2};
    assert_true(all_see_members(f, rest, 2, "m=1,2", 10000));
    for (int k = 0; k < 2; k++) {
        int i = rest[k];
        int c = wait_event(f, i, from[i], "C ", "l=3 ", 0);
        assert_true(c >= 0);
        assert_non_null(strstr(f->m[i].ev[c], " r=d")); /* its node went down */
        long long tc;
        assert_int_equal(sscanf(f->m[i].ev[c], "C %lld", &tc), 1);
        print_message("h%d saw h3 leave %.0f ms after the kill\n", i, (double)(tc - t0) / 1e3);
        assert_int_equal(count_events(&f->m[i], from[i], "Q "), 0);
        assert_int_equal(ask_quorate(f, i), 1);
    }
    /* corosync itself agrees. */
    unsigned votes = 0;
    assert_int_equal(test_cluster_quorate(&f->c, 1, &votes, err, sizeof(err)), 1);
    assert_int_equal(votes, 2);
}

/* The crashed host comes back (corosync restarted in the same cgroup and
 * namespaces) and rejoins; when its corosync then stops, its link reports
 * that corosync went away, and a new link fails saying corosync is not
 * running. */
static void test_restart_then_corosync_stops(void **state)
{
    struct fixture *f = *state;
    char err[1024];
    long long t0 = now_us();
    assert_int_equal(test_cluster_start_corosync(&f->c, 3, err, sizeof(err)), 0);
    if (test_cluster_wait_quorate(&f->c, 10000, err, sizeof(err)) < 0)
        fail_msg("%s", err);
    free_member(&f->m[3]);
    f->m[3].gone = false;
    assert_int_equal(start_member(f, 3), 0);
    const int all[] = {1, 2, 3};
    assert_true(all_see_members(f, all, NR, "m=1,2,3", 10000));
    print_message("h3 restarted and back in the group after %.2f s\n",
                  (double)(now_us() - t0) / 1e6);

    /* Only its member process dies: the others see a process leave, not a
     * node (corosync on h3 is still up). */
    int from1 = f->m[1].nev;
    int ws;
    kill(f->m[3].pid, SIGKILL);
    assert_int_equal(waitpid(f->m[3].pid, &ws, 0), f->m[3].pid);
    f->m[3].pid = 0;
    const int rest12[] = {1, 2};
    assert_true(all_see_members(f, rest12, 2, "m=1,2", 10000));
    int c = wait_event(f, 1, from1, "C ", "l=3 ", 0);
    assert_true(c >= 0);
    assert_non_null(strstr(f->m[1].ev[c], " r=p"));
    free_member(&f->m[3]);
    f->m[3].gone = false;
    assert_int_equal(start_member(f, 3), 0);
    assert_true(all_see_members(f, all, NR, "m=1,2,3", 10000));

    int from3 = f->m[3].nev;
    assert_int_equal(test_cluster_stop_corosync(&f->c, 3, err, sizeof(err)), 0);
    int e = wait_event(f, 3, from3, "E ", NULL, 5000);
    assert_true(e >= 0);
    print_message("h3's link, corosync stopped: %s\n", f->m[3].ev[e] + 2);
    assert_non_null(strstr(f->m[3].ev[e], "lost the connection to corosync"));
    assert_int_equal(waitpid(f->m[3].pid, &ws, 0), f->m[3].pid);
    f->m[3].pid = 0;
    const int rest[] = {1, 2};
    assert_true(all_see_members(f, rest, 2, "m=1,2", 10000));

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (test_cluster_enter(&f->c, 3, false, err, sizeof(err)) < 0)
            _exit(2);
        struct cs_link_callbacks cb = {0};
        struct cs_link *l;
        struct tern_err te;
        if (cs_link_open(&l, GROUP, &cb, NULL, &te) == 0)
            _exit(3);
        fprintf(stderr, "expected failure: %s\n", te.msg);
        _exit(strstr(te.msg, "cpg_model_initialize") &&
                      strstr(te.msg, "is corosync running on this host?")
                  ? 0
                  : 4);
    }
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_members_nodelist),
        cmocka_unit_test(test_agreed_order_identical),
        cmocka_unit_test(test_large_messages),
        cmocka_unit_test(test_leave_seen_or_not),
        cmocka_unit_test(test_partition_loses_quorum),
        cmocka_unit_test(test_frozen_host_leaves_and_returns),
        cmocka_unit_test(test_killed_host_leaves),
        cmocka_unit_test(test_restart_then_corosync_stops),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
