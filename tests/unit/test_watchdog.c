/* The watchdog driver (fencing/watchdog.c) on a FIFO read by the test: it
 * feeds while the loop says healthy, stops for good when it does not, and
 * disarms only with the magic close of a healthy host. Then with
 * tests/tools/tern-watchdog-standin guarding a cgroup, as the test hosts
 * use it (this machine has no /dev/watchdog): not fed, it kills the
 * cgroup's processes; disarmed, it keeps them; closed without the magic,
 * it kills them. (Needs root and cgroup v2 for those; skipped without.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/cgroup.h"
#include "fencing/fence.h"
#include "tests/support/cluster.h"
#include "tests/support/proc.h"

#define MAX_BYTES 4096

struct wd {
    char *dir;
    char fifo[512];
    /* the reader of the FIFO (a thread) */
    int rfd;
    pthread_t reader;
    bool reading;
    pthread_mutex_t mu;
    int64_t at[MAX_BYTES]; /* when each byte arrived */
    char bytes[MAX_BYTES];
    size_t n;
    bool eof;
    volatile bool stop;
    /* the stand-in and the "host" it guards */
    struct test_proc standin;
    char cgroup[512];
    bool cgroup_made;
    pid_t victim;
    struct watchdog *w;
};

static int64_t now_ms(void)
{
    return loop_now_ms();
}

static void *reader(void *opaque)
{
    struct wd *s = opaque;
    while (!s->stop) {
        struct pollfd p = {.fd = s->rfd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        char buf[256];
        ssize_t r = read(s->rfd, buf, sizeof(buf));
        if (r < 0)
            continue;
        pthread_mutex_lock(&s->mu);
        if (r == 0) {
            s->eof = true;
            pthread_mutex_unlock(&s->mu);
            break;
        }
        for (ssize_t i = 0; i < r && s->n < MAX_BYTES; i++) {
            s->at[s->n] = now_ms();
            s->bytes[s->n++] = buf[i];
        }
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

static int setup(void **state)
{
    struct wd *s = calloc(1, sizeof(*s));
    if (!s)
        return -1;
    s->rfd = -1;
    s->victim = 0;
    pthread_mutex_init(&s->mu, NULL);
    s->dir = test_make_tmpdir("watchdog");
    if (!s->dir)
        return -1;
    snprintf(s->fifo, sizeof(s->fifo), "%s/watchdog", s->dir);
    *state = s;
    return 0;
}

static void stop_reader(struct wd *s)
{
    if (s->reading) {
        s->stop = true;
        pthread_join(s->reader, NULL);
        s->reading = false;
    }
    if (s->rfd >= 0) {
        close(s->rfd);
        s->rfd = -1;
    }
}

static int teardown(void **state)
{
    struct wd *s = *state;
    if (s->w)
        watchdog_close(s->w, true);
    stop_reader(s);
    if (s->standin.pid > 0)
        test_proc_kill(&s->standin);
    struct tern_err err;
    if (s->cgroup_made) {
        if (cgroup_kill(s->cgroup, &err) < 0 || cgroup_wait_empty(s->cgroup, 5000, &err) < 0)
            fprintf(stderr, "teardown: %s\n", err.msg);
    }
    if (s->victim > 0)
        waitpid(s->victim, NULL, 0);
    if (s->cgroup_made && cgroup_remove(s->cgroup, &err) < 0)
        fprintf(stderr, "teardown: %s\n", err.msg);
    test_rmtree(s->dir);
    free(s->dir);
    pthread_mutex_destroy(&s->mu);
    free(s);
    return 0;
}

/* The test reads the FIFO itself. */
static void start_reader(struct wd *s)
{
    assert_int_equal(mkfifo(s->fifo, 0600), 0);
    s->rfd = open(s->fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    assert_true(s->rfd >= 0);
    assert_int_equal(pthread_create(&s->reader, NULL, reader, s), 0);
    s->reading = true;
}

static size_t nr_bytes(struct wd *s, int64_t *last_at, char *last)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->n;
    if (last_at)
        *last_at = n ? s->at[n - 1] : 0;
    if (last)
        *last = n ? s->bytes[n - 1] : 0;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static bool wait_eof(struct wd *s, int timeout_ms)
{
    for (int64_t end = now_ms() + timeout_ms; now_ms() < end; test_sleep_ms(10)) {
        pthread_mutex_lock(&s->mu);
        bool eof = s->eof;
        pthread_mutex_unlock(&s->mu);
        if (eof)
            return true;
    }
    return false;
}

/* Calls watchdog_healthy every 100 ms for `ms`; returns the last call's time. */
static int64_t healthy_for(struct watchdog *w, int ms)
{
    int64_t end = now_ms() + ms, last = 0;
    while (now_ms() < end) {
        watchdog_healthy(w);
        last = now_ms();
        test_sleep_ms(100);
    }
    return last;
}

static void feeds_only_while_healthy(void **state)
{
    struct wd *s = *state;
    start_reader(s);
    struct tern_err err;
    if (watchdog_open(s->fifo, 1, &s->w, &err) < 0)
        fail_msg("%s", err.msg);
    /* A FIFO has no WDIOC_SETTIMEOUT: the asked timeout stands. */
    assert_int_equal(watchdog_timeout_s(s->w), 1);
    int64_t opened = now_ms();
    int64_t last_healthy = healthy_for(s->w, 1500);
    size_t fed = nr_bytes(s, NULL, NULL);
    /* Every 250 ms (timeout 1 s / 4) plus the arming keepalive. */
    assert_true(fed >= 5);
    pthread_mutex_lock(&s->mu);
    int64_t longest_gap = 0;
    for (size_t i = 1; i < s->n; i++)
        if (s->at[i] - s->at[i - 1] > longest_gap)
            longest_gap = s->at[i] - s->at[i - 1];
    pthread_mutex_unlock(&s->mu);
    assert_true(longest_gap < 1000); /* the device would have fired */
    assert_false(watchdog_stats(s->w).expired);

    /* The loop goes quiet: feeding stops once the last healthy is 500 ms
     * old, and does not come back. */
    test_sleep_ms(1500);
    int64_t last_at;
    size_t after = nr_bytes(s, &last_at, NULL);
    struct watchdog_stats st = watchdog_stats(s->w);
    assert_true(st.expired);
    assert_int_equal(st.keepalives, after);
    assert_int_equal(st.write_errors, 0);
    /* The window (500 ms), and slack for two threads' scheduling on a
     * busy machine: without the window it would go on for good. */
    assert_true(last_at - last_healthy < 500 + 500);
    fprintf(stderr, "watchdog: %zu keepalives in %lld ms fed; the last %lld ms after the last "
                    "healthy call (window 500 ms)\n",
            fed, (long long)(last_healthy - opened), (long long)(last_at - last_healthy));

    watchdog_healthy(s->w);
    test_sleep_ms(600);
    assert_int_equal(nr_bytes(s, NULL, NULL), after);

    /* Expired: even a disarming close writes nothing. */
    watchdog_close(s->w, true);
    s->w = NULL;
    assert_true(wait_eof(s, 2000));
    char last;
    assert_int_equal(nr_bytes(s, NULL, &last), after);
    assert_true(last != 'V');
}

static void magic_close_disarms(void **state)
{
    struct wd *s = *state;
    start_reader(s);
    struct tern_err err;
    if (watchdog_open(s->fifo, 2, &s->w, &err) < 0)
        fail_msg("%s", err.msg);
    healthy_for(s->w, 300);
    watchdog_close(s->w, true);
    s->w = NULL;
    assert_true(wait_eof(s, 2000));
    char last;
    size_t n = nr_bytes(s, NULL, &last);
    assert_true(n >= 2);
    assert_int_equal(last, 'V');
}

static void close_without_magic(void **state)
{
    struct wd *s = *state;
    start_reader(s);
    struct tern_err err;
    if (watchdog_open(s->fifo, 2, &s->w, &err) < 0)
        fail_msg("%s", err.msg);
    healthy_for(s->w, 300);
    watchdog_close(s->w, false);
    s->w = NULL;
    assert_true(wait_eof(s, 2000));
    char last;
    assert_true(nr_bytes(s, NULL, &last) >= 1);
    assert_true(last != 'V');
}

static void expect_open_error(const char *path, unsigned timeout, const char *needle)
{
    struct watchdog *w = NULL;
    struct tern_err err;
    assert_int_equal(watchdog_open(path, timeout, &w, &err), -1);
    assert_null(w);
    if (!strstr(err.msg, needle))
        fail_msg("error '%s' lacks '%s'", err.msg, needle);
}

static void refusals(void **state)
{
    struct wd *s = *state;
    char path[600];
    snprintf(path, sizeof(path), "%s/missing", s->dir);
    expect_open_error(path, 10, "opening watchdog");
    expect_open_error(path, 10, "No such file");
    snprintf(path, sizeof(path), "%s/plain", s->dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    close(fd);
    expect_open_error(path, 10, "neither a device nor a FIFO");
    /* A FIFO whose stand-in is not reading it: never waits for one. */
    assert_int_equal(mkfifo(s->fifo, 0600), 0);
    expect_open_error(s->fifo, 10, "a FIFO nobody reads");
    expect_open_error(s->fifo, 0, "watchdog timeout must be 1..600");
}

static void deadline(void **state)
{
    (void)state;
    /* timeout/2 still fed, one feeding period, the device's timeout. */
    assert_int_equal(watchdog_reset_deadline_ms(10), 5000 + 250 + 10000);
    assert_int_equal(watchdog_reset_deadline_ms(1), 500 + 250 + 1000);
    assert_int_equal(watchdog_reset_deadline_ms(60), 30000 + 250 + 60000);
}

/* ---- with the stand-in ---- */

static bool can_use_cgroups(char *mnt, size_t len)
{
    struct tern_err err;
    if (geteuid() != 0)
        return false;
    return cgroup_mount_point(mnt, len, &err) == 0;
}

/* A cgroup with one long-running process: the "host". */
static void make_host(struct wd *s)
{
    char mnt[256];
    if (!can_use_cgroups(mnt, sizeof(mnt)))
        skip();
    test_cluster_reap_stale();
    static int seq;
    snprintf(s->cgroup, sizeof(s->cgroup), "%s/tern-t%d-wd%d", mnt, (int)getpid(), seq++);
    struct tern_err err;
    if (cgroup_create(s->cgroup, &err) < 0)
        fail_msg("%s", err.msg);
    s->cgroup_made = true;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (cgroup_move(s->cgroup, 0, &err) < 0)
            _exit(127);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
        }
        execl("/bin/sleep", "sleep", "600", (char *)NULL);
        _exit(127);
    }
    s->victim = pid;
    for (int i = 0; i < 200 && cgroup_populated(s->cgroup, &err) != 1; i++)
        test_sleep_ms(5);
    assert_int_equal(cgroup_populated(s->cgroup, &err), 1);
}

static void start_standin(struct wd *s, int timeout_ms)
{
    char t[16];
    snprintf(t, sizeof(t), "%d", timeout_ms);
    char *argv[] = {(char *)test_build_path("tern-watchdog-standin"), s->fifo, t, s->cgroup,
                    NULL};
    assert_int_equal(test_proc_start(&s->standin, s->dir, argv), 0);
    struct stat st;
    for (int i = 0; i < 400 && stat(s->fifo, &st) < 0; i++)
        test_sleep_ms(5);
    assert_int_equal(stat(s->fifo, &st), 0);
    assert_true(S_ISFIFO(st.st_mode));
}

static bool host_alive(struct wd *s)
{
    struct tern_err err;
    return cgroup_populated(s->cgroup, &err) == 1;
}

static void standin_resets_unfed_host(void **state)
{
    struct wd *s = *state;
    make_host(s);
    start_standin(s, 1000);
    struct tern_err err;
    if (watchdog_open(s->fifo, 1, &s->w, &err) < 0)
        fail_msg("%s", err.msg);
    assert_true(test_wait_for_text(s->standin.out_path, "armed", 2000));
    int64_t last_healthy = healthy_for(s->w, 2000);
    /* Fed for twice its timeout: the host lives. */
    assert_true(host_alive(s));
    struct tern_err e2;
    int64_t deadline = last_healthy + watchdog_reset_deadline_ms(1);
    while (host_alive(s) && now_ms() < deadline + 3000)
        test_sleep_ms(10);
    int64_t reset_at = now_ms();
    assert_false(host_alive(s));
    assert_int_equal(cgroup_wait_empty(s->cgroup, 2000, &e2), 0);
    assert_int_equal(test_proc_wait(&s->standin, 2000), 1);
    assert_int_equal(s->standin.status, 0);
    assert_true(test_wait_for_text(s->standin.out_path, "not fed for 1000 ms: killed every process",
                                   1000));
    /* Not before the device's timeout after the loop went quiet. */
    assert_true(reset_at - last_healthy >= 1000);
    fprintf(stderr, "watchdog stand-in: host reset %lld ms after the last healthy call "
                    "(deadline %lld ms)\n",
            (long long)(reset_at - last_healthy), (long long)watchdog_reset_deadline_ms(1));
    waitpid(s->victim, NULL, 0);
    s->victim = 0;
}

static void standin_disarmed_keeps_host(void **state)
{
    struct wd *s = *state;
    make_host(s);
    start_standin(s, 1000);
    struct tern_err err;
    if (watchdog_open(s->fifo, 1, &s->w, &err) < 0)
        fail_msg("%s", err.msg);
    healthy_for(s->w, 500);
    watchdog_close(s->w, true);
    s->w = NULL;
    assert_int_equal(test_proc_wait(&s->standin, 2000), 1);
    assert_int_equal(s->standin.status, 0);
    assert_true(test_wait_for_text(s->standin.out_path, "disarmed", 1000));
    test_sleep_ms(1500);
    assert_true(host_alive(s));
}

static void standin_unexpected_close_resets(void **state)
{
    struct wd *s = *state;
    make_host(s);
    start_standin(s, 1000);
    struct tern_err err;
    if (watchdog_open(s->fifo, 1, &s->w, &err) < 0)
        fail_msg("%s", err.msg);
    healthy_for(s->w, 500);
    /* ternd dying: its descriptor closes without the magic 'V'. */
    watchdog_close(s->w, false);
    s->w = NULL;
    assert_int_equal(test_proc_wait(&s->standin, 3000), 1);
    assert_int_equal(s->standin.status, 0);
    assert_true(test_wait_for_text(s->standin.out_path, "killed every process", 1000));
    assert_int_equal(cgroup_wait_empty(s->cgroup, 2000, &err), 0);
    waitpid(s->victim, NULL, 0);
    s->victim = 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(feeds_only_while_healthy, setup, teardown),
        cmocka_unit_test_setup_teardown(magic_close_disarms, setup, teardown),
        cmocka_unit_test_setup_teardown(close_without_magic, setup, teardown),
        cmocka_unit_test_setup_teardown(refusals, setup, teardown),
        cmocka_unit_test(deadline),
        cmocka_unit_test_setup_teardown(standin_resets_unfed_host, setup, teardown),
        cmocka_unit_test_setup_teardown(standin_disarmed_keeps_host, setup, teardown),
        cmocka_unit_test_setup_teardown(standin_unexpected_close_resets, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
