/* ternd's loop (issue 12), with real corosync and ternd on three test
 * hosts. The VMs are tests/tools/tern-vmm-standin: a process that speaks
 * tern-vmm's control protocol and runs no guest, so these run on machines
 * without KVM; what is tested is the agent (its loop, its clients, its
 * reconciliation), not a VM. The guest side of migrations is tested by
 * test_cluster and test_migration on KVM.
 *
 *  - a client that pipelines 3000 status requests and reads slowly, one
 *    that never reads and a VMM stopped by SIGSTOP hold nothing up: other
 *    clients are answered, deliveries are applied, the wedged VMM is
 *    killed by its stop, the silent client is dropped;
 *  - 300 defines pipelined on one connection: 300 replies;
 *  - idle connections time out; past the limit a client is told "too many
 *    clients" (ternctl shows that, not a broken pipe);
 *  - a migration ended by a membership change: the paused source resumes,
 *    the stale incoming VMM is ended when its agent returns;
 *  - an evacuation whose migration a membership change ended finishes, and
 *    without quorum it starts no further migration;
 *  - an idle agent sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "node-vmm/control.h"
#include "tests/support/proc.h"
#include "tests/support/ternd_assert.h"

#define HOSTS 3
#define ALL 0x0e

static struct ternd_hosts T;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --- raw connections to an agent --- */

static int agent_connect(int h)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/h%d/run/tern/ternd.sock", T.dir, h) >=
        (int)sizeof(sa.sun_path))
        fail_msg("socket path under %s too long", T.dir);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fprintf(stderr, "connecting to %s: %s\n", sa.sun_path, strerror(errno));
        fail();
    }
    return fd;
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    assert_true(fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0);
}

/* Reads what is there (non-blocking fd); counts final replies ("ok" at the
 * start of a line's object) and ok:true ones. -1 at EOF. */
struct reader {
    char buf[1 << 16];
    size_t len;
    int finals, oks;
    char last_error[512];
};

static int reader_take(struct reader *r, int fd, size_t max)
{
    size_t room = sizeof(r->buf) - 1 - r->len;
    if (max && room > max)
        room = max;
    ssize_t n = recv(fd, r->buf + r->len, room, MSG_DONTWAIT);
    if (n == 0)
        return -1;
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    r->len += (size_t)n;
    r->buf[r->len] = '\0';
    char *nl;
    while ((nl = strchr(r->buf, '\n'))) {
        *nl = '\0';
        if (!strncmp(r->buf, "{\"ok\":", 6)) {
            r->finals++;
            if (!strncmp(r->buf, "{\"ok\":true", 10))
                r->oks++;
            else
                snprintf(r->last_error, sizeof(r->last_error), "%.500s", r->buf);
        }
        size_t used = (size_t)(nl + 1 - r->buf);
        memmove(r->buf, nl + 1, r->len - used + 1);
        r->len -= used;
    }
    return (int)n;
}

/* One status from a fresh connection; its latency in ms, or -1 if no answer
 * within 10 s. */
static double status_latency_ms(int h)
{
    double t0 = now_s();
    json_t *r = ternd_api_line(&T, h, "{\"cmd\":\"status\"}", NULL, 10000);
    double ms = (now_s() - t0) * 1e3;
    bool ok = r && json_is_true(json_object_get(r, "ok"));
    json_decref(r);
    return ok ? ms : -1;
}

static json_int_t agent_stat(int h, const char *key)
{
    json_t *s = ternd_status(&T, h);
    json_int_t v = json_integer_value(json_object_get(json_object_get(s, "agent"), key));
    json_decref(s);
    return v;
}

/* --- VMs (stand-ins) --- */

static void define_and_start(int h, const char *name, const char *host)
{
    tdefine(&T, h, name, 64, NULL);
    json_t *reply;
    json_t *res = tapi_ok(&T, h, json_pack("{s:s, s:s, s:s}", "cmd", "vm.start", "name", name,
                                           "host", host), &reply);
    assert_string_equal(json_string_value(json_object_get(json_object_get(res, "vm"), "state")),
                        "running");
    json_decref(reply);
}

static void vm_path(int h, const char *vm, const char *file, char *out, size_t len)
{
    snprintf(out, len, "%s/h%d/run/tern/vms/%s/%s", T.dir, h, vm, file);
}


static bool pid_ends(pid_t pid, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 50) {
        if (!test_pid_running(pid))
            return true;
        test_sleep_ms(50);
    }
    return false;
}

/* The stand-in's own status (its control socket), or NULL. */
static json_t *vmm_status(int h, const char *vm)
{
    char path[512];
    vm_path(h, vm, "control.sock", path, sizeof(path));
    json_t *req = json_pack("{s:s}", "cmd", "status"), *reply = NULL;
    struct tern_err err;
    if (control_call(path, req, 3000, &reply, &err) < 0)
        reply = NULL;
    json_decref(req);
    return reply;
}


/* Waits until the stand-in of `vm` on h says state `state` (and, if not
 * NULL, migration phase `phase`). */
static bool vmm_reaches(int h, const char *vm, const char *state, const char *phase,
                        int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 50) {
        json_t *s = vmm_status(h, vm);
        bool ok = s && !strcmp(tjson_str(s, "state", NULL), state) &&
                  (!phase || !strcmp(tjson_str(s, "migration", "phase"), phase));
        json_decref(s);
        if (ok)
            return true;
        test_sleep_ms(50);
    }
    json_t *s = vmm_status(h, vm);
    char *d = s ? json_dumps(s, 0) : NULL;
    fprintf(stderr, "VM %s on h%d: wanted %s/%s, last status %s\n", vm, h, state,
            phase ? phase : "-", d ? d : "(none)");
    free(d);
    json_decref(s);
    return false;
}

/* Waits until host h's state has VM `vm` owned by `owner` (NULL: any), in
 * run state `run`, with no migration. */
static bool vm_settles(int h, const char *vm, const char *owner, const char *run, int timeout_ms)
{
    json_t *last = NULL;
    for (int waited = 0; waited <= timeout_ms; waited += 100) {
        json_decref(last);
        last = ternd_api(&T, h, json_pack("{s:s, s:s}", "cmd", "vm.show", "name", vm), NULL,
                         5000);
        json_t *v = json_object_get(json_object_get(last, "result"), "vm");
        if ((!owner || !strcmp(tjson_str(v, "owner", NULL), owner)) &&
            !strcmp(tjson_str(v, "state", NULL), run) &&
            json_integer_value(json_object_get(v, "migration_id")) == 0) {
            json_decref(last);
            return true;
        }
        test_sleep_ms(100);
    }
    char *d = last ? json_dumps(last, 0) : NULL;
    fprintf(stderr, "VM %s at h%d: wanted %s on %s, last %s\n", vm, h, run, owner ? owner : "any",
            d ? d : "(none)");
    free(d);
    json_decref(last);
    return false;
}

static void hold(int h, const char *vm, bool on)
{
    char path[512];
    vm_path(h, vm, "standin-hold", path, sizeof(path));
    if (on) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fclose(f);
    } else {
        unlink(path);
    }
}

/* Reads one final reply from fd (blocking up to timeout_ms). */
static json_t *read_final(int fd, int timeout_ms)
{
    static char buf[1 << 16];
    size_t len = 0;
    double end = now_s() + timeout_ms / 1e3;
    for (;;) {
        char *nl;
        while ((nl = memchr(buf, '\n', len))) {
            *nl = '\0';
            json_t *j = json_loads(buf, 0, NULL);
            size_t used = (size_t)(nl + 1 - buf);
            memmove(buf, nl + 1, len - used);
            len -= used;
            if (j && json_object_get(j, "ok"))
                return j;
            json_decref(j);
        }
        int left = (int)((end - now_s()) * 1e3);
        if (left <= 0)
            return NULL;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, left) <= 0)
            return NULL;
        ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
        if (n <= 0)
            return NULL;
        len += (size_t)n;
    }
}

static void send_line(int fd, const char *line)
{
    size_t n = strlen(line);
    assert_int_equal(send(fd, line, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* --- setup --- */

static int setup(void **state)
{
    (void)state;
    char err[1024];
    if (ternd_hosts_create(&T, HOSTS, "agentloop", err, sizeof(err)) < 0) {
        fprintf(stderr, "creating the test hosts: %s\n", err);
        return -1;
    }
    char standin[4096], extra[4300];
    if (!realpath(test_build_path("tern-vmm-standin"), standin)) {
        fprintf(stderr, "no %s: build it first\n", test_build_path("tern-vmm-standin"));
        return -1;
    }
    snprintf(extra, sizeof(extra),
             "vmm_path = %s\nclient_idle_timeout = 3\nclient_stuck_timeout = 3\n", standin);
    for (int h = 1; h <= HOSTS; h++)
        if (ternd_hosts_write_config(&T, h, extra) < 0 || ternd_hosts_start(&T, h, NULL) < 0)
            return -1;
    if (!ternd_hosts_agree(&T, ALL, HOSTS, true, 30000))
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ternd_hosts_destroy(&T);
    return 0;
}

/* --- tests --- */

/* Defect 3 and the loop that never blocks: a VMM stopped by SIGSTOP (and
 * asked to stop), a client pipelining 3000 status requests and reading
 * 4 KiB every 0.5 s, one that never reads. Meanwhile every other client is
 * answered and changes made at another host are applied here. */
static void slow_clients_and_wedged_vmm(void **state)
{
    (void)state;
    define_and_start(1, "wedged", "h1");
    pid_t wedged = ternd_hosts_vm_pid(&T, 1, "wedged");
    assert_true(wedged > 0 && test_pid_running(wedged));
    assert_int_equal(kill(wedged, SIGSTOP), 0);

    int stopper = agent_connect(1);
    send_line(stopper, "{\"cmd\":\"vm.stop\",\"name\":\"wedged\"}\n");

    const char *status_line = "{\"cmd\":\"status\"}\n";
    size_t line_len = strlen(status_line);
    int slow = agent_connect(1), silent = agent_connect(1);
    set_nonblock(slow);
    set_nonblock(silent);
    int slow_sent = 0, silent_sent = 0;
    struct reader rd = {0};

    double worst = 0, sum = 0;
    int asked = 0, defines = 0;
    double t_end = now_s() + 4.0, next_read = 0;
    while (now_s() < t_end) {
        while (slow_sent < 3000 && send(slow, status_line, line_len, MSG_NOSIGNAL) ==
                                       (ssize_t)line_len)
            slow_sent++;
        while (silent_sent < 200 && send(silent, status_line, line_len, MSG_NOSIGNAL) ==
                                        (ssize_t)line_len)
            silent_sent++;
        if (now_s() >= next_read) {
            assert_true(reader_take(&rd, slow, 4096) >= 0);
            next_read = now_s() + 0.5;
        }
        double ms = status_latency_ms(1);
        assert_true(ms >= 0); /* answered (within 10 s) */
        worst = ms > worst ? ms : worst;
        sum += ms;
        asked++;
        if (asked % 10 == 0) {
            char name[32];
            snprintf(name, sizeof(name), "while-%d", defines++);
            tdefine(&T, 2, name, 64, NULL);
            /* Applied at h1 too, while its clients wait. */
            json_t *r = ternd_api(&T, 1, json_pack("{s:s, s:s}", "cmd", "vm.show", "name", name),
                                  NULL, 10000);
            assert_non_null(r);
            assert_true(json_is_true(json_object_get(r, "ok")));
            json_decref(r);
        }
    }
    fprintf(stderr, "h1 under a wedged VMM and two slow clients: %d status requests from fresh "
                    "connections, mean %.2f ms, worst %.2f ms; %d defines at h2 seen at h1; the "
                    "slow client sent %d and got %d replies; the silent one sent %d\n",
            asked, sum / asked, worst, defines, slow_sent, rd.finals, silent_sent);
    assert_true(defines >= 1);
    assert_true(slow_sent > 64); /* read past one connection's in-flight limit */

    /* The wedged VMM does not answer its stop: it is killed. */
    json_t *r = read_final(stopper, 60000);
    assert_non_null(r);
    assert_true(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
    close(stopper);
    assert_true(pid_ends(wedged, 10000));
    assert_true(vm_settles(1, "wedged", NULL, "stopped", 10000));

    /* The client that never reads is dropped (client_stuck_timeout 3 s);
     * so is the slow one once it stops reading. */
    bool dropped = false;
    for (int i = 0; i < 200 && !dropped; i++) {
        char b[65536];
        ssize_t n;
        while ((n = recv(silent, b, sizeof(b), MSG_DONTWAIT)) > 0) {
        }
        dropped = n == 0 || (n < 0 && errno != EAGAIN);
        if (!dropped)
            test_sleep_ms(100);
    }
    assert_true(dropped);
    assert_true(agent_stat(1, "clients_dropped_stuck") >= 1);
    close(silent);
    close(slow);
}

/* Defect 4: 300 defines pipelined on one connection each get their reply
 * (the agent stops reading at its in-flight limit, it does not hang up). */
static void pipelined_defines_all_answered(void **state)
{
    (void)state;
    const int n = 300;
    int fd = agent_connect(2);
    set_nonblock(fd);
    struct reader rd = {0};
    int sent = 0;
    size_t off = 0;
    char line[1024];
    int line_len = 0;
    double deadline = now_s() + 120;
    while (rd.finals < n && now_s() < deadline) {
        if (sent < n && off == 0) {
            line_len = snprintf(line, sizeof(line),
                                "{\"cmd\":\"vm.define\",\"name\":\"p%d\",\"config\":{\"kernel\":"
                                "\"%s\",\"mem_mib\":64,\"vcpus\":1}}\n",
                                sent, T.guest);
        }
        if (sent < n) {
            ssize_t w = send(fd, line + off, (size_t)line_len - off, MSG_NOSIGNAL);
            if (w > 0) {
                off += (size_t)w;
                if (off == (size_t)line_len) {
                    off = 0;
                    sent++;
                }
            }
        }
        assert_true(reader_take(&rd, fd, 0) >= 0);
        if (sent == n || off != 0) {
            struct pollfd p = {.fd = fd, .events = POLLIN | (sent < n ? POLLOUT : 0)};
            poll(&p, 1, 100);
        }
    }
    if (rd.oks != n)
        fprintf(stderr, "%d finals, %d ok; last error %s\n", rd.finals, rd.oks, rd.last_error);
    assert_int_equal(rd.finals, n);
    assert_int_equal(rd.oks, n);
    close(fd);
    /* All 300 are everywhere. */
    json_t *s = ternd_status(&T, 3);
    int found = 0;
    json_t *v;
    size_t i;
    json_array_foreach(json_object_get(s, "vms"), i, v)
        found += tjson_str(v, "name", NULL)[0] == 'p';
    json_decref(s);
    assert_int_equal(found, n);
    fprintf(stderr, "300 pipelined defines: 300 replies, all ok\n");

    /* And 300 undefines the same way (the state stays small for the
     * tests after this one). */
    fd = agent_connect(3);
    struct reader ru = {0};
    for (int k = 0; k < n; k++) {
        char u[128];
        snprintf(u, sizeof(u), "{\"cmd\":\"vm.undefine\",\"name\":\"p%d\"}\n", k);
        send_line(fd, u); /* blocks while the agent is at its limit */
        assert_true(reader_take(&ru, fd, 0) >= 0);
    }
    set_nonblock(fd);
    deadline = now_s() + 60;
    while (ru.finals < n && now_s() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, 100);
        assert_true(reader_take(&ru, fd, 0) >= 0);
    }
    assert_int_equal(ru.oks, n);
    close(fd);
}

/* Defect 5: idle connections time out; past the limit a client is told
 * why, and ternctl says so. */
static void idle_connections_time_out(void **state)
{
    (void)state;
    int fds[256];
    for (int i = 0; i < 256; i++)
        fds[i] = agent_connect(3);
    /* The 257th: refused as itself. */
    int extra = agent_connect(3);
    json_t *r = read_final(extra, 5000);
    assert_non_null(r);
    assert_false(json_is_true(json_object_get(r, "ok")));
    assert_string_equal(tjson_str(r, "error", "code"), "unavailable");
    assert_non_null(strstr(tjson_str(r, "error", "message"), "too many clients"));
    json_decref(r);
    close(extra);

    char sock[400], cmd[1200], out[400];
    snprintf(sock, sizeof(sock), "%s/h3/run/tern/ternd.sock", T.dir);
    snprintf(out, sizeof(out), "%s/ternctl-busy.err", T.dir);
    snprintf(cmd, sizeof(cmd), "%s --socket %s status >/dev/null 2>%s",
             test_build_path("ternctl"), sock, out);
    int rc = system(cmd);
    char *said = test_read_text(out);
    fprintf(stderr, "ternctl status with every slot taken (exit %d): %s", rc, said ? said : "");
    free(said);
    assert_true(rc != 0);
    assert_int_equal(test_count_text(out, "too many clients"), 1);
    assert_int_equal(test_count_text(out, "Broken pipe"), 0);

    /* client_idle_timeout is 3 s: the idle ones are closed (EOF), and a new
     * client is served. */
    int closed = 0;
    for (int i = 0; i < 256; i++) {
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        char b[64];
        if (poll(&p, 1, 15000) == 1 && recv(fds[i], b, sizeof(b), 0) == 0)
            closed++;
        close(fds[i]);
    }
    assert_int_equal(closed, 256);
    assert_true(status_latency_ms(3) >= 0);
    assert_true(agent_stat(3, "clients_dropped_idle") >= 256);
    assert_true(agent_stat(3, "clients_refused") >= 2);
}

/* Defect 1: a migration ended by a membership change (its destination's
 * agent died) leaves no paused source and no stale incoming VMM. */
static void membership_change_ends_migration(void **state)
{
    (void)state;
    define_and_start(1, "m1", "h1");
    hold(1, "m1", true);
    int mig = agent_connect(1);
    send_line(mig, "{\"cmd\":\"vm.migrate\",\"name\":\"m1\",\"to\":\"h2\"}\n");
    /* The source paused in flight, the destination's VMM waits. */
    assert_true(vmm_reaches(1, "m1", "paused", "stop-and-copy", 20000));
    assert_true(vmm_reaches(2, "m1", "incoming", NULL, 10000));
    pid_t incoming = ternd_hosts_vm_pid(&T, 2, "m1");
    assert_true(incoming > 0 && test_pid_running(incoming));

    ternd_hosts_kill(&T, 2); /* its CPG member leaves: the migration ends */
    /* The source resumes (level-triggered: no message asked for it). */
    assert_true(vmm_reaches(1, "m1", "running", NULL, 20000));
    assert_true(vm_settles(1, "m1", "h1", "running", 10000));
    json_t *r = read_final(mig, 20000);
    assert_non_null(r);
    assert_false(json_is_true(json_object_get(r, "ok")));
    char *d = json_dumps(r, 0);
    fprintf(stderr, "the migration's reply: %s\n", d);
    free(d);
    json_decref(r);
    close(mig);
    hold(1, "m1", false);
    json_t *reply;
    tapi_ok(&T, 1, json_pack("{s:s, s:s}", "cmd", "vm.stop", "name", "m1"), &reply);
    json_decref(reply);
    /* The incoming VMM outlived its agent (VMs survive an agent restart);
     * the agent back ends it: no migration is left for it. */
    assert_true(test_pid_running(incoming));
    assert_int_equal(ternd_hosts_start(&T, 2, NULL), 0);
    tagree(&T, ALL, HOSTS, true, 60000);
    assert_true(pid_ends(incoming, 20000));
    /* ... and a later start there starts the VM, not mistaking the stale
     * process for it. */
    assert_true(vm_settles(2, "m1", NULL, "stopped", 5000));
    json_t *res = tapi_ok(&T, 3, json_pack("{s:s, s:s, s:s}", "cmd", "vm.start", "name", "m1",
                                           "host", "h2"), &reply);
    assert_string_equal(tjson_str(json_object_get(res, "vm"), "state", NULL), "running");
    json_decref(reply);
    assert_true(vmm_reaches(2, "m1", "running", NULL, 5000));
    assert_true(ternd_hosts_vm_pid(&T, 2, "m1") != incoming);
    tapi_ok(&T, 3, json_pack("{s:s, s:s}", "cmd", "vm.stop", "name", "m1"), &reply);
    json_decref(reply);
}

/* Defect 1 (evacuations): one of its migrations ended by a membership
 * change; the evacuation goes on with the rest and finishes. */
static void evacuation_finishes_after_membership_change(void **state)
{
    (void)state;
    define_and_start(1, "e1", "h1");
    define_and_start(1, "e2", "h1");
    define_and_start(1, "e3", "h1");
    hold(1, "e2", true);
    int ev = agent_connect(1);
    send_line(ev, "{\"cmd\":\"host.evacuate\",\"host\":\"h1\",\"parallel\":1}\n");
    assert_true(vmm_reaches(1, "e2", "paused", "stop-and-copy", 30000));
    json_t *show = ternd_api(&T, 1, json_pack("{s:s, s:s}", "cmd", "vm.show", "name", "e2"),
                             NULL, 5000);
    const char *to = tjson_str(json_object_get(json_object_get(show, "result"), "vm"), "migration",
                          "to");
    int dest = !strcmp(to, "h2") ? 2 : !strcmp(to, "h3") ? 3 : 0;
    json_decref(show);
    assert_true(dest != 0);
    ternd_hosts_kill(&T, dest);
    json_t *r = read_final(ev, 60000);
    assert_non_null(r);
    char *d = json_dumps(r, 0);
    fprintf(stderr, "the evacuation's reply: %s\n", d);
    free(d);
    json_t *res = json_object_get(r, "result");
    assert_int_equal(json_array_size(json_object_get(res, "moved")), 2);
    assert_int_equal(json_array_size(json_object_get(res, "failed")), 1);
    assert_string_equal(tjson_str(json_array_get(json_object_get(res, "failed"), 0), "vm", NULL),
                        "e2");
    json_decref(r);
    close(ev);
    hold(1, "e2", false);
    assert_true(vmm_reaches(1, "e2", "running", NULL, 10000));
    assert_int_equal(ternd_hosts_start(&T, dest, NULL), 0);
    tagree(&T, ALL, HOSTS, true, 60000);
    /* Maintenance ends; these VMs are done with. */
    json_t *reply;
    tapi_ok(&T, 1, json_pack("{s:s, s:s}", "cmd", "host.activate", "host", "h1"), &reply);
    json_decref(reply);
    static const char *const names[] = {"e1", "e2", "e3"};
    for (int i = 0; i < 3; i++) {
        tapi_ok(&T, 1, json_pack("{s:s, s:s}", "cmd", "vm.stop", "name", names[i]), &reply);
        json_decref(reply);
    }
}

/* Defect 2: a host that lost quorum during an evacuation starts no further
 * migration (the evacuation's next migration_begin is refused before it
 * is sent). */
static void evacuation_without_quorum_stops(void **state)
{
    (void)state;
    define_and_start(1, "q1", "h1");
    define_and_start(1, "q2", "h1");
    hold(1, "q1", true);
    int ev = agent_connect(1);
    send_line(ev, "{\"cmd\":\"host.evacuate\",\"host\":\"h1\",\"parallel\":1}\n");
    assert_true(vmm_reaches(1, "q1", "paused", "stop-and-copy", 30000));
    json_t *show = ternd_api(&T, 1, json_pack("{s:s, s:s}", "cmd", "vm.show", "name", "q1"),
                             NULL, 5000);
    const char *to = tjson_str(json_object_get(json_object_get(show, "result"), "vm"), "migration",
                          "to");
    int dest = !strcmp(to, "h2") ? 2 : 3, other = 5 - dest;
    json_decref(show);
    /* The other host first (still quorate, q1 still in flight), then q1's
     * destination: its migration ends with quorum gone. */
    ternd_hosts_kill(&T, other);
    tagree(&T, 0x2 | (1u << dest), 2, true, 30000);
    ternd_hosts_kill(&T, dest); /* h1 alone: no quorum */
    json_t *r = read_final(ev, 60000);
    assert_non_null(r);
    char *d = json_dumps(r, 0);
    fprintf(stderr, "the evacuation's reply without quorum: %s\n", d);
    free(d);
    json_t *failed = json_object_get(json_object_get(r, "result"), "failed");
    assert_int_equal(json_array_size(failed), 2);
    bool quorum_said = false;
    json_t *f;
    size_t i;
    json_array_foreach(failed, i, f)
        if (!strcmp(tjson_str(f, "vm", NULL), "q2"))
            quorum_said = strstr(tjson_str(f, "error", NULL), "quorum") != NULL;
    assert_true(quorum_said);
    json_decref(r);
    close(ev);
    hold(1, "q1", false);
    /* q1's source resumed; q2 never left. */
    assert_true(vmm_reaches(1, "q1", "running", NULL, 10000));
    assert_true(vmm_reaches(1, "q2", "running", NULL, 1000));
    assert_int_equal(ternd_hosts_start(&T, 2, NULL), 0);
    assert_int_equal(ternd_hosts_start(&T, 3, NULL), 0);
    tagree(&T, ALL, HOSTS, true, 60000);
    assert_true(vm_settles(3, "q1", "h1", "running", 5000));
    assert_true(vm_settles(3, "q2", "h1", "running", 5000));
}

/* Request contracts (issue 14): a field of the wrong type is refused as
 * `invalid`, never ignored; a disk outside the image directories is
 * refused; the last request of a client that shuts down its writing side
 * without a newline is answered. */
static void request_contracts(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{\"cmd\":\"vm.start\",\"name\":\"nosuch\",\"host\":5}",
        "{\"cmd\":\"vm.migrate\",\"name\":\"nosuch\",\"to\":\"h2\",\"wait\":\"no\"}",
        "{\"cmd\":\"host.evacuate\",\"host\":\"h1\",\"parallel\":\"2\"}",
        "{\"cmd\":\"vm.define\",\"name\":\"t\",\"priority\":\"high\",\"config\":{}}",
        "{\"cmd\":7}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *r = ternd_api_line(&T, 1, bad[i], NULL, 5000);
        assert_non_null(r);
        if (strcmp(tjson_str(r, "error", "code"), "invalid") != 0) {
            char *d = json_dumps(r, 0);
            fail_msg("%s: %s (expected invalid)", bad[i], d);
        }
        json_decref(r);
    }
    json_t *r = ternd_api_line(&T, 1, "{\"name\":\"x\"}", NULL, 5000);
    assert_string_equal(tjson_str(r, "error", "code"), "malformed");
    json_decref(r);
    /* Disks: only inside the image directories (shared_dir here). */
    json_t *cfg = json_pack("{s:s, s:i, s:i, s:[{s:s}]}", "kernel", T.guest, "mem_mib", 64,
                            "vcpus", 1, "disks", "path", "/etc/shadow");
    r = ternd_api(&T, 2, json_pack("{s:s, s:s, s:o}", "cmd", "vm.define", "name", "shadow",
                                   "config", cfg), NULL, 5000);
    assert_string_equal(tjson_str(r, "error", "code"), "invalid");
    assert_non_null(strstr(tjson_str(r, "error", "message"), "outside the image directories"));
    json_decref(r);
    /* No newline, then EOF on our side: still answered. */
    int fd = agent_connect(3);
    send_line(fd, "{\"cmd\":\"host.list\"}");
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    r = read_final(fd, 5000);
    assert_non_null(r);
    assert_true(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
    close(fd);
}

/* The loop sleeps when there is nothing to do (it used to wake every
 * 20 ms for good): VMs running, no client, no migration. */
static void idle_agent_sleeps(void **state)
{
    (void)state;
    json_int_t a = agent_stat(1, "loop_rounds");
    test_sleep_ms(3000);
    json_int_t b = agent_stat(1, "loop_rounds");
    fprintf(stderr, "idle agent: %lld loop rounds in 3 s\n", (long long)(b - a));
    /* The 200 ms tick, the clients' timer, the two status requests: a
     * 20 ms tick alone would be 150. */
    assert_true(b - a < 60);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(slow_clients_and_wedged_vmm),
        cmocka_unit_test(pipelined_defines_all_answered),
        cmocka_unit_test(idle_connections_time_out),
        cmocka_unit_test(membership_change_ends_migration),
        cmocka_unit_test(evacuation_finishes_after_membership_change),
        cmocka_unit_test(evacuation_without_quorum_stops),
        cmocka_unit_test(request_contracts),
        cmocka_unit_test(idle_agent_sleeps),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
