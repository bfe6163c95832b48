/* Fence agent runs and fence operations (fencing/fence_run.c,
 * fencing/fence_op.c) on a common/loop, with fake agents the test writes
 * as shell scripts (what they read on stdin, their environment, process
 * group and descriptors; failures, hangs, helpers that ignore SIGTERM) and
 * with Debian's real /usr/sbin/fence_dummy. Levels: order, failure of one
 * device of a level, reboot of a level of two devices, cancellation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fencing/fence.h"
#include "tests/support/proc.h"

struct t {
    char *dir;
    struct loop *l;
    struct fence_config *c;
    int marker_fd; /* open without close-on-exec: no agent may inherit it */
    /* the last result of a single run */
    int done;
    struct fence_result res;
    /* the last op */
    int op_done;
    bool op_ok;
    struct fence_result runs[32];
    size_t nr_runs;
    int ticks;
};

static int setup(void **state)
{
    struct t *t = calloc(1, sizeof(*t));
    if (!t)
        return -1;
    t->dir = test_make_tmpdir("fence-run");
    t->c = malloc(sizeof(*t->c));
    struct tern_err err;
    if (!t->dir || !t->c || loop_new(&t->l, &err) < 0)
        return -1;
    fence_config_defaults(t->c);
    snprintf(t->c->agent_dir, sizeof(t->c->agent_dir), "%s", t->dir);
    t->marker_fd = open("/dev/null", O_RDONLY);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct t *t = *state;
    /* Reap whatever a failed test left running (cancelled runs included). */
    for (int i = 0; i < 20; i++)
        loop_run_once(t->l, 10, NULL);
    loop_free(t->l);
    if (t->marker_fd >= 0)
        close(t->marker_fd);
    test_rmtree(t->dir);
    free(t->dir);
    free(t->c);
    free(t);
    return 0;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

/* A fake agent: a shell script named `name` in the agent directory. */
static void agent(struct t *t, const char *name, const char *body)
{
    char path[512], text[4096];
    snprintf(path, sizeof(path), "%s/%s", t->dir, name);
    snprintf(text, sizeof(text), "#!/bin/sh\n%s\n", body);
    write_file(path, text, 0755);
}

/* Adds config lines as ternd.conf would ("key = value"). */
static void conf(struct t *t, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void conf(struct t *t, const char *key, const char *fmt, ...)
{
    char value[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(value, sizeof(value), fmt, ap);
    va_end(ap);
    struct tern_err err;
    if (fence_config_set(t->c, key, value, "t.conf line 1", 1, &err) != 0)
        fail_msg("%s = %s: %s", key, value, err.msg);
}

static void on_done(void *opaque, const struct fence_result *r)
{
    struct t *t = opaque;
    t->done++;
    t->res = *r;
}

static void on_op_done(void *opaque, bool ok, const struct fence_result *runs, size_t n)
{
    struct t *t = opaque;
    t->op_done++;
    t->op_ok = ok;
    t->nr_runs = n < 32 ? n : 32;
    memcpy(t->runs, runs, t->nr_runs * sizeof(runs[0]));
}

static void tick(struct loop *l, void *opaque)
{
    struct t *t = opaque;
    t->ticks++;
    loop_add_timer(l, 10, tick, t);
}

static void run_until(struct t *t, int *flag, int timeout_ms)
{
    int64_t end = loop_now_ms() + timeout_ms;
    struct tern_err err;
    while (!*flag && loop_now_ms() < end)
        assert_int_equal(loop_run_once(t->l, 50, &err), 0);
    if (!*flag)
        fail_msg("no result within %d ms", timeout_ms);
}

/* One run of `device`; its result in t->res. */
static void run(struct t *t, const char *device, const char *action, int timeout_ms)
{
    t->done = 0;
    struct tern_err err;
    if (fence_device_run(t->l, t->c, device, action, on_done, t, NULL, &err) < 0)
        fail_msg("%s", err.msg);
    /* Never from inside the call. */
    assert_int_equal(t->done, 0);
    run_until(t, &t->done, timeout_ms);
    assert_int_equal(t->done, 1);
    assert_string_equal(t->res.device, device);
}

static void op(struct t *t, const char *host, const char *action, int timeout_ms)
{
    t->op_done = 0;
    struct tern_err err;
    if (fence_op_start(t->l, t->c, host, action, on_op_done, t, NULL, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(t->op_done, 0);
    run_until(t, &t->op_done, timeout_ms);
    assert_int_equal(t->op_done, 1);
}

static void expect_output(const struct fence_result *r, const char *needle)
{
    if (!strstr(r->output, needle))
        fail_msg("%s: output lacks '%s':\n%s", r->device, needle, r->output);
}

/* Whether process `pid` has ended (gone, or a zombie nobody reaped yet). */
static bool process_gone(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return true;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return true;
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' && paren[2] == 'Z';
}

static bool wait_gone(pid_t pid, int timeout_ms)
{
    for (int64_t end = loop_now_ms() + timeout_ms; loop_now_ms() < end; test_sleep_ms(10))
        if (process_gone(pid))
            return true;
    return process_gone(pid);
}

static pid_t read_pid(struct t *t, const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", t->dir, name);
    char *s = test_read_text(path);
    long pid = strtol(s, NULL, 10);
    free(s);
    assert_true(pid > 1);
    return (pid_t)pid;
}

/* ---- one agent ---- */

static void calling_convention(void **state)
{
    struct t *t = *state;
    if (geteuid() != 0)
        skip(); /* password files must be root's */
    char body[1024];
    snprintf(body, sizeof(body),
             "while IFS= read -r line; do echo \"in: $line\"; done\n"
             "echo \"env: PATH=$PATH LANG=$LANG HOME=${HOME-unset} SECRET=${TERN_T_SECRET-unset}\"\n"
             "echo \"pgid: $(cut -d' ' -f5 /proc/$$/stat) pid: $$\"\n"
             "if [ -e /proc/$$/fd/%d ]; then echo 'marker: inherited'; else echo 'marker: closed'; "
             "fi\n"
             "echo 'to stderr' >&2\n"
             "exit 0",
             t->marker_fd);
    agent(t, "fence_echo", body);
    char pw[512];
    snprintf(pw, sizeof(pw), "%s/pw", t->dir);
    write_file(pw, "s3cret pass\n", 0600);
    conf(t, "fence_device", "e1 fence_echo ip=10.0.0.1 username=admin plug=7 password_file=%s",
         pw);
    setenv("TERN_T_SECRET", "leaked", 1);
    run(t, "e1", "off", 10000);
    unsetenv("TERN_T_SECRET");
    const struct fence_result *r = &t->res;
    assert_true(r->ok);
    assert_int_equal(r->exit_status, 0);
    assert_false(r->timed_out);
    assert_true(r->ms > 0);
    /* stdin: the action first, then the arguments, the password last. */
    expect_output(r, "in: action=off\nin: ip=10.0.0.1\nin: username=admin\nin: plug=7\n"
                     "in: password=s3cret pass\nenv:");
    assert_null(strstr(r->output, "password_file"));
    expect_output(r, "env: PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C HOME=unset SECRET=unset");
    expect_output(r, "marker: closed");
    expect_output(r, "to stderr");
    /* Its own process group. */
    int pgid = 0, pid = 0;
    const char *p = strstr(r->output, "pgid: ");
    assert_non_null(p);
    assert_int_equal(sscanf(p, "pgid: %d pid: %d", &pgid, &pid), 2);
    assert_int_equal(pgid, pid);
    assert_int_not_equal(pgid, getpgrp());
}

static void failure_and_status(void **state)
{
    struct t *t = *state;
    agent(t, "fence_fail", "cat >/dev/null\necho 'Failed: Unable to connect/login to fencing "
                           "device' >&2\nexit 1");
    agent(t, "fence_off", "cat >/dev/null\necho 'Status: OFF'\nexit 2");
    conf(t, "fence_device", "f1 fence_fail ip=1");
    conf(t, "fence_device", "s1 fence_off ip=1");
    run(t, "f1", "off", 10000);
    assert_false(t->res.ok);
    assert_int_equal(t->res.exit_status, 1);
    assert_false(t->res.timed_out);
    expect_output(&t->res, "Failed: Unable to connect/login to fencing device");
    run(t, "s1", "status", 10000);
    assert_false(t->res.ok);
    assert_int_equal(t->res.exit_status, FENCE_STATUS_OFF);
    assert_string_equal(t->res.output, "Status: OFF");
}

/* A hung agent whose helper ignores SIGTERM as it does: SIGTERM to the
 * group at the timeout, SIGKILL 2 s later; the loop runs on meanwhile. */
static void timeout_kills_the_group(void **state)
{
    struct t *t = *state;
    char body[512];
    snprintf(body, sizeof(body),
             "trap '' TERM\nsleep 300 &\necho $! > %s/helper.pid\necho started\nwait\nwait",
             t->dir);
    agent(t, "fence_hang", body);
    conf(t, "fence_device", "h1 fence_hang ip=1");
    t->c->timeout_ms = 500;
    t->ticks = 0;
    uint64_t ticker = loop_add_timer(t->l, 10, tick, t);
    assert_true(ticker > 0);
    run(t, "h1", "off", 10000);
    const struct fence_result *r = &t->res;
    assert_false(r->ok);
    assert_true(r->timed_out);
    assert_int_equal(r->exit_status, -1);
    assert_true(r->ms >= 500 + FENCE_KILL_GRACE_MS - 50);
    assert_true(r->ms < 500 + FENCE_KILL_GRACE_MS + 3000);
    expect_output(r, "started");
    expect_output(r, "killed by signal 9");
    expect_output(r, "[tern: no result within 500 ms: its process group was killed]");
    /* The helper went with it. */
    assert_true(wait_gone(read_pid(t, "helper.pid"), 2000));
    /* Nothing waited: the loop ticked all along (a 10 ms timer). */
    assert_true(t->ticks >= 50);
}

static void timeout_sigterm_is_enough(void **state)
{
    struct t *t = *state;
    agent(t, "fence_slow", "echo working\nsleep 300");
    conf(t, "fence_device", "s1 fence_slow ip=1");
    t->c->timeout_ms = 300;
    run(t, "s1", "off", 10000);
    assert_true(t->res.timed_out);
    assert_int_equal(t->res.exit_status, -1);
    expect_output(&t->res, "killed by signal 15");
    /* Ended on SIGTERM: no need for the SIGKILL. */
    assert_true(t->res.ms < 300 + FENCE_KILL_GRACE_MS);
}

static void output_keeps_the_tail(void **state)
{
    struct t *t = *state;
    agent(t, "fence_chatty",
          "i=0\nwhile [ $i -lt 200 ]; do echo \"line $i: some noise the operator does not need\"; "
          "i=$((i+1)); done\necho 'Failed: the last words'\nexit 1");
    conf(t, "fence_device", "c1 fence_chatty ip=1");
    run(t, "c1", "off", 10000);
    assert_true(strlen(t->res.output) <= sizeof(t->res.output) - 1);
    assert_true(strlen(t->res.output) > 900);
    const char *end = "Failed: the last words";
    assert_string_equal(t->res.output + strlen(t->res.output) - strlen(end), end);
    assert_null(strstr(t->res.output, "line 0:"));
}

/* Password files are checked when the agent is about to run; a refused
 * one is a failed run, and the agent never starts. */
static void password_file_refusals(void **state)
{
    struct t *t = *state;
    if (geteuid() != 0)
        skip();
    char body[256];
    snprintf(body, sizeof(body), "touch %s/ran\nexit 0", t->dir);
    agent(t, "fence_ran", body);
    char pw[512], ran[512], link[512];
    snprintf(pw, sizeof(pw), "%s/pw", t->dir);
    snprintf(ran, sizeof(ran), "%s/ran", t->dir);
    snprintf(link, sizeof(link), "%s/pw-link", t->dir);
    conf(t, "fence_device", "p1 fence_ran ip=1 password_file=%s", pw);
    conf(t, "fence_device", "p2 fence_ran ip=1 password_file=%s", link);

    run(t, "p1", "off", 5000);
    assert_false(t->res.ok);
    assert_int_equal(t->res.exit_status, -1);
    expect_output(&t->res, "tern: cannot run fence_ran for p1: password file");
    expect_output(&t->res, "No such file");

    write_file(pw, "secret\n", 0640);
    run(t, "p1", "off", 5000);
    assert_false(t->res.ok);
    assert_int_equal(t->res.exit_status, -1);
    expect_output(&t->res, "is readable or writable by group or others (mode 0640): chmod 600 it");

    write_file(pw, "secret\n", 0604);
    run(t, "p1", "off", 5000);
    expect_output(&t->res, "(mode 0604)");

    write_file(pw, "secret\n", 0600);
    assert_int_equal(chown(pw, 65534, 65534), 0);
    run(t, "p1", "off", 5000);
    assert_false(t->res.ok);
    expect_output(&t->res, "is owned by uid 65534, not root");
    assert_int_equal(chown(pw, 0, 0), 0);

    /* A second line would be another key=value for the agent. */
    write_file(pw, "secret\naction=on\n", 0600);
    run(t, "p1", "off", 5000);
    assert_false(t->res.ok);
    expect_output(&t->res, "must hold one line");

    write_file(pw, "", 0600);
    run(t, "p1", "off", 5000);
    expect_output(&t->res, "must hold one line");

    write_file(pw, "secret\n", 0600);
    assert_int_equal(symlink(pw, link), 0);
    run(t, "p2", "off", 5000);
    assert_false(t->res.ok);
    expect_output(&t->res, "password file");
    assert_int_equal(access(ran, F_OK), -1);

    /* And with a good one it runs. */
    run(t, "p1", "off", 5000);
    assert_true(t->res.ok);
    assert_int_equal(access(ran, F_OK), 0);
}

static void missing_agent_at_run_time(void **state)
{
    struct t *t = *state;
    agent(t, "fence_gone", "exit 0");
    conf(t, "fence_device", "g1 fence_gone ip=1");
    struct tern_err err;
    assert_int_equal(fence_config_check(t->c, &err), 0);
    char path[512];
    snprintf(path, sizeof(path), "%s/fence_gone", t->dir);
    unlink(path);
    run(t, "g1", "off", 5000);
    assert_false(t->res.ok);
    assert_int_equal(t->res.exit_status, -1);
    expect_output(&t->res, "cannot execute");
    expect_output(&t->res, "fence_gone: No such file or directory");
}

static void unknown_device_or_action(void **state)
{
    struct t *t = *state;
    agent(t, "fence_x", "exit 0");
    conf(t, "fence_device", "x1 fence_x ip=1");
    struct tern_err err;
    t->done = 0;
    assert_int_equal(fence_device_run(t->l, t->c, "nope", "off", on_done, t, NULL, &err), -1);
    assert_int_equal(err.code, TERN_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, "no fence device named 'nope'"));
    assert_int_equal(fence_device_run(t->l, t->c, "x1", "explode", on_done, t, NULL, &err), -1);
    assert_int_equal(err.code, TERN_ERR_INVALID);
    assert_non_null(strstr(err.msg, "'explode' is not one of off, reboot, on, status, monitor"));
    for (int i = 0; i < 5; i++)
        loop_run_once(t->l, 10, NULL);
    assert_int_equal(t->done, 0);
}

static void cancel_kills_without_done(void **state)
{
    struct t *t = *state;
    char body[512];
    snprintf(body, sizeof(body),
             "trap '' TERM\nsleep 300 &\necho $! > %s/helper.pid\necho $$ > %s/agent.pid\nwait",
             t->dir, t->dir);
    agent(t, "fence_hang", body);
    conf(t, "fence_device", "h1 fence_hang ip=1");
    t->done = 0;
    struct fence_run *r;
    struct tern_err err;
    assert_int_equal(fence_device_run(t->l, t->c, "h1", "off", on_done, t, &r, &err), 0);
    assert_non_null(r);
    char path[512];
    snprintf(path, sizeof(path), "%s/agent.pid", t->dir);
    for (int i = 0; i < 500 && !test_wait_for_text(path, "\n", 1); i++)
        loop_run_once(t->l, 10, NULL);
    pid_t helper = read_pid(t, "helper.pid"), agent_pid = read_pid(t, "agent.pid");
    fence_run_cancel(r);
    for (int i = 0; i < 50; i++)
        loop_run_once(t->l, 10, NULL);
    assert_int_equal(t->done, 0);
    assert_true(wait_gone(agent_pid, 2000));
    assert_true(wait_gone(helper, 2000));
}

/* Debian's fence_dummy, the real calling convention end to end. */
static void real_fence_dummy(void **state)
{
    struct t *t = *state;
    if (access("/usr/sbin/fence_dummy", X_OK) != 0)
        fail_msg("/usr/sbin/fence_dummy is missing (Debian package fence-agents; make deps)");
    snprintf(t->c->agent_dir, sizeof(t->c->agent_dir), "/usr/sbin");
    conf(t, "fence_device", "d1 fence_dummy type=file status_file=%s/dummy.status power_wait=0",
         t->dir);
    conf(t, "fence_device", "d2 fence_dummy type=fail power_timeout=1");
    struct tern_err err;
    assert_int_equal(fence_config_check(t->c, &err), 0);
    char path[512];
    snprintf(path, sizeof(path), "%s/dummy.status", t->dir);
    write_file(path, "on", 0600);
    run(t, "d1", "status", 20000);
    assert_true(t->res.ok);
    expect_output(&t->res, "Status: ON");
    run(t, "d1", "off", 20000);
    assert_true(t->res.ok);
    expect_output(&t->res, "Success: Powered OFF");
    double off_ms = t->res.ms;
    run(t, "d1", "status", 20000);
    assert_false(t->res.ok);
    assert_int_equal(t->res.exit_status, FENCE_STATUS_OFF);
    expect_output(&t->res, "Status: OFF");
    run(t, "d1", "on", 20000);
    assert_true(t->res.ok);
    run(t, "d1", "monitor", 20000);
    assert_true(t->res.ok);
    double monitor_ms = t->res.ms;
    /* type=fail never reaches "off" (power_timeout 1 s). */
    run(t, "d2", "off", 20000);
    assert_false(t->res.ok);
    assert_true(t->res.exit_status > 0);
    expect_output(&t->res, "Timed out waiting to power OFF");
    fprintf(stderr, "fence_dummy: off in %.0f ms, monitor in %.0f ms\n", off_ms, monitor_ms);
}

/* ---- levels ---- */

/* fence_rec: records "NAME ACTION" in DIR/actions and its pid in
 * DIR/NAME.pid, waits until the file `waitfor=` is there (up to 15 s),
 * sleeps `sleep=`, exits `result=`. */
static void rec_agent(struct t *t)
{
    char body[1024];
    snprintf(body, sizeof(body),
             "n=; a=; r=0; s=; w=\n"
             "while IFS= read -r l; do case \"$l\" in action=*) a=${l#action=};; "
             "name=*) n=${l#name=};; result=*) r=${l#result=};; sleep=*) s=${l#sleep=};; "
             "waitfor=*) w=${l#waitfor=};; esac; done\n"
             "echo \"$n $a\" >> %s/actions\necho $$ > %s/$n.pid\n"
             "i=0; while [ -n \"$w\" ] && [ ! -s \"$w\" ] && [ $i -lt 1500 ]; do sleep 0.01; "
             "i=$((i+1)); done\n"
             "[ -n \"$s\" ] && sleep \"$s\"\necho \"$n: $a -> $r\"\nexit $r",
             t->dir, t->dir);
    agent(t, "fence_rec", body);
    const char *devs[] = {"ok1 name=ok1", "ok2 name=ok2", "bad1 name=bad1 result=1",
                          "bad2 name=bad2 result=1", "slow1 name=slow1 sleep=300"};
    for (size_t i = 0; i < sizeof(devs) / sizeof(devs[0]); i++) {
        char name[16];
        sscanf(devs[i], "%15s", name);
        conf(t, "fence_device", "%s fence_rec %s", name, devs[i] + strlen(name) + 1);
    }
    /* Fails once slow1 has started (so that there is something to kill). */
    conf(t, "fence_device", "bad1late fence_rec name=bad1late result=1 waitfor=%s/slow1.pid",
         t->dir);
}

static char *actions(struct t *t)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/actions", t->dir);
    return test_read_text(path);
}

static void levels_in_order(void **state)
{
    struct t *t = *state;
    rec_agent(t);
    /* Given out of order: index decides. */
    conf(t, "fence_level", "h1 2 ok1,ok2");
    conf(t, "fence_level", "h1 1 bad1");
    conf(t, "fence_level", "h2 1 ok1");
    op(t, "h1", "off", 10000);
    assert_true(t->op_ok);
    assert_int_equal(t->nr_runs, 3);
    assert_string_equal(t->runs[0].device, "bad1");
    assert_false(t->runs[0].ok);
    assert_int_equal(t->runs[0].exit_status, 1);
    assert_string_equal(t->runs[1].device, "ok1");
    assert_true(t->runs[1].ok);
    assert_string_equal(t->runs[2].device, "ok2");
    assert_true(t->runs[2].ok);
    char *a = actions(t);
    assert_true(!strncmp(a, "bad1 off\n", 9));
    assert_non_null(strstr(a, "ok1 off\n"));
    assert_non_null(strstr(a, "ok2 off\n"));
    free(a);
}

static void all_levels_fail(void **state)
{
    struct t *t = *state;
    rec_agent(t);
    conf(t, "fence_level", "h1 1 bad1");
    conf(t, "fence_level", "h1 3 bad2");
    op(t, "h1", "reboot", 10000);
    assert_false(t->op_ok);
    assert_int_equal(t->nr_runs, 2);
    assert_string_equal(t->runs[0].device, "bad1");
    assert_string_equal(t->runs[1].device, "bad2");
    expect_output(&t->runs[1], "bad2: reboot -> 1");
}

/* One device of a level fails: the others of that level are not waited
 * for (killed), the next level starts. */
static void failed_device_ends_its_level(void **state)
{
    struct t *t = *state;
    rec_agent(t);
    conf(t, "fence_level", "h1 1 slow1,bad1late");
    conf(t, "fence_level", "h1 2 ok1");
    int64_t t0 = loop_now_ms();
    op(t, "h1", "off", 20000);
    assert_true(t->op_ok);
    assert_true(loop_now_ms() - t0 < 10000); /* slow1 sleeps 300 s */
    assert_int_equal(t->nr_runs, 3);
    assert_string_equal(t->runs[0].device, "slow1");
    assert_false(t->runs[0].ok);
    expect_output(&t->runs[0], "killed before it ended: bad1late, of the same level, failed");
    assert_string_equal(t->runs[1].device, "bad1late");
    assert_false(t->runs[1].ok);
    assert_string_equal(t->runs[2].device, "ok1");
    assert_true(t->runs[2].ok);
    for (int i = 0; i < 20; i++)
        loop_run_once(t->l, 10, NULL);
    assert_true(wait_gone(read_pid(t, "slow1.pid"), 2000));
}

/* A device that cannot even start (a refused password file) fails its
 * level like any other failure. */
static void unstartable_device_fails_its_level(void **state)
{
    struct t *t = *state;
    if (geteuid() != 0)
        skip();
    rec_agent(t);
    char pw[512];
    snprintf(pw, sizeof(pw), "%s/pw", t->dir);
    write_file(pw, "secret\n", 0644);
    conf(t, "fence_device", "locked fence_rec name=locked password_file=%s", pw);
    conf(t, "fence_level", "h1 1 locked");
    conf(t, "fence_level", "h1 2 ok1");
    op(t, "h1", "off", 10000);
    assert_true(t->op_ok);
    assert_int_equal(t->nr_runs, 2);
    assert_false(t->runs[0].ok);
    assert_int_equal(t->runs[0].exit_status, -1);
    expect_output(&t->runs[0], "readable or writable by group or others");
    assert_true(t->runs[1].ok);
}

/* reboot of a level of two devices (two power supplies): both off, then
 * both on; never one reboot after the other. */
static void reboot_of_two_devices(void **state)
{
    struct t *t = *state;
    rec_agent(t);
    conf(t, "fence_level", "h1 1 ok1,ok2");
    conf(t, "fence_level", "h2 1 ok1");
    op(t, "h1", "reboot", 10000);
    assert_true(t->op_ok);
    assert_int_equal(t->nr_runs, 4);
    char *a = actions(t);
    /* Both offs (in either order) before any on. */
    const char *on = strstr(a, " on\n");
    assert_non_null(on);
    const char *off1 = strstr(a, "ok1 off\n"), *off2 = strstr(a, "ok2 off\n");
    assert_non_null(off1);
    assert_non_null(off2);
    assert_true(off1 < on && off2 < on);
    assert_non_null(strstr(a, "ok1 on\n"));
    assert_non_null(strstr(a, "ok2 on\n"));
    assert_null(strstr(a, "reboot"));
    free(a);
    expect_output(&t->runs[0], "ok1: off -> 0");
    expect_output(&t->runs[3], "ok2: on -> 0");
    /* One device: the agent's own reboot. */
    char path[512];
    snprintf(path, sizeof(path), "%s/actions", t->dir);
    unlink(path);
    op(t, "h2", "reboot", 10000);
    assert_true(t->op_ok);
    assert_int_equal(t->nr_runs, 1);
    a = actions(t);
    assert_string_equal(a, "ok1 reboot\n");
    free(a);
}

static void host_without_levels(void **state)
{
    struct t *t = *state;
    rec_agent(t);
    conf(t, "fence_level", "h1 1 ok1");
    struct tern_err err;
    struct fence_op *o = (struct fence_op *)1;
    assert_int_equal(fence_op_start(t->l, t->c, "h9", "off", on_op_done, t, &o, &err), -1);
    assert_null(o);
    assert_int_equal(err.code, TERN_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, "host 'h9' has no fence levels"));
    assert_int_equal(fence_op_start(t->l, t->c, "h1", "destroy", on_op_done, t, &o, &err), -1);
    assert_int_equal(err.code, TERN_ERR_INVALID);
    assert_false(fence_config_has_levels(t->c, "h9"));
}

static void cancel_op(void **state)
{
    struct t *t = *state;
    rec_agent(t);
    conf(t, "fence_level", "h1 1 slow1,ok1");
    t->op_done = 0;
    struct fence_op *o;
    struct tern_err err;
    assert_int_equal(fence_op_start(t->l, t->c, "h1", "off", on_op_done, t, &o, &err), 0);
    char path[512];
    snprintf(path, sizeof(path), "%s/slow1.pid", t->dir);
    for (int i = 0; i < 500 && !test_wait_for_text(path, "\n", 1); i++)
        loop_run_once(t->l, 10, NULL);
    pid_t slow = read_pid(t, "slow1.pid");
    fence_op_cancel(o);
    for (int i = 0; i < 50; i++)
        loop_run_once(t->l, 10, NULL);
    assert_int_equal(t->op_done, 0);
    assert_true(wait_gone(slow, 2000));
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(calling_convention),
        T(failure_and_status),
        T(timeout_kills_the_group),
        T(timeout_sigterm_is_enough),
        T(output_keeps_the_tail),
        T(password_file_refusals),
        T(missing_agent_at_run_time),
        T(unknown_device_or_action),
        T(cancel_kills_without_done),
        T(real_fence_dummy),
        T(levels_in_order),
        T(all_levels_fail),
        T(failed_device_ends_its_level),
        T(unstartable_device_fails_its_level),
        T(reboot_of_two_devices),
        T(host_without_levels),
        T(cancel_op),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
