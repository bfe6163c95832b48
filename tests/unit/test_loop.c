/* The event loop (common/loop.h): fd callbacks, interest changes, removal
 * from inside a callback, timers in order and cancelled, the before-sleep
 * hook, waking from another thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "common/loop.h"

struct ctx {
    struct loop *l;
    int reads, writes, hups;
    int order[8];
    int nr_order;
    int victim_fd;    /* removed by the first callback that runs */
    bool victim_ran;
    int hooks;
    uint64_t timer_to_cancel;
};

static void on_read(struct loop *l, int fd, unsigned events, void *opaque)
{
    struct ctx *c = opaque;
    (void)l;
    if (events & LOOP_READ) {
        char b[64];
        ssize_t n = read(fd, b, sizeof(b));
        if (n > 0)
            c->reads++;
        else if (n == 0)
            c->hups++;
    }
    if (events & LOOP_HUP)
        c->hups++;
}

static void on_write(struct loop *l, int fd, unsigned events, void *opaque)
{
    struct ctx *c = opaque;
    if (events & LOOP_WRITE) {
        c->writes++;
        assert_int_equal(write(fd, "x", 1), 1);
        loop_set_events(l, fd, 0); /* one write only */
    }
}

static void test_fds(void **unused)
{
    (void)unused;
    struct loop *l;
    struct tern_err err;
    assert_int_equal(loop_new(&l, &err), 0);
    struct ctx c = {.l = l};
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(loop_add_fd(l, p[0], LOOP_READ, on_read, &c, &err), 0);
    assert_int_equal(loop_add_fd(l, p[0], LOOP_READ, on_read, &c, &err), -1); /* once */
    assert_int_equal(loop_add_fd(l, p[1], LOOP_WRITE, on_write, &c, &err), 0);
    assert_int_equal(loop_run_once(l, 1000, &err), 0); /* the write end is writable */
    assert_int_equal(c.writes, 1);
    assert_int_equal(loop_run_once(l, 1000, &err), 0); /* the byte arrives */
    assert_int_equal(c.reads, 1);
    assert_int_equal(loop_run_once(l, 50, &err), 0); /* nothing more: no spin */
    assert_int_equal(c.writes, 1);
    assert_int_equal(c.reads, 1);
    loop_del_fd(l, p[1]);
    close(p[1]);
    assert_int_equal(loop_run_once(l, 1000, &err), 0); /* EOF / hang-up */
    assert_true(c.hups >= 1);
    loop_del_fd(l, p[0]);
    close(p[0]);
    loop_free(l);
}

static void removing_cb(struct loop *l, int fd, unsigned events, void *opaque)
{
    struct ctx *c = opaque;
    (void)events;
    char b[8];
    ssize_t n = read(fd, b, sizeof(b));
    (void)n;
    if (fd == c->victim_fd) {
        c->victim_ran = true;
        return;
    }
    /* The first one to run removes the other: it must not run. */
    loop_del_fd(l, c->victim_fd);
    c->reads++;
}

static void test_remove_in_callback(void **unused)
{
    (void)unused;
    struct loop *l;
    struct tern_err err;
    assert_int_equal(loop_new(&l, &err), 0);
    int a[2], b[2];
    assert_int_equal(pipe2(a, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(pipe2(b, O_NONBLOCK | O_CLOEXEC), 0);
    struct ctx c = {.l = l};
    assert_int_equal(loop_add_fd(l, a[0], LOOP_READ, removing_cb, &c, &err), 0);
    assert_int_equal(loop_add_fd(l, b[0], LOOP_READ, removing_cb, &c, &err), 0);
    assert_int_equal(write(a[1], "1", 1), 1);
    assert_int_equal(write(b[1], "1", 1), 1);
    /* The victim is b: if a runs first it removes b, which must not run
     * then; if b runs first, it is not removed by anyone before. One ran. */
    c.victim_fd = b[0];
    assert_int_equal(loop_run_once(l, 1000, &err), 0);
    assert_int_equal(c.reads + c.victim_ran, 1);
    for (int i = 0; i < 2; i++) {
        close(a[i]);
        close(b[i]);
    }
    loop_del_fd(l, a[0]);
    loop_free(l);
}

static void record(struct loop *l, void *opaque)
{
    struct ctx *c = opaque;
    (void)l;
    c->order[c->nr_order++] = (int)(intptr_t)0;
}

struct tag {
    struct ctx *c;
    int n;
};

static void tagged(struct loop *l, void *opaque)
{
    struct tag *t = opaque;
    t->c->order[t->c->nr_order++] = t->n;
    if (t->n == 1)
        loop_del_timer(l, t->c->timer_to_cancel);
}

static void hook(struct loop *l, void *opaque)
{
    (void)l;
    ((struct ctx *)opaque)->hooks++;
}

static void test_timers(void **unused)
{
    (void)unused;
    struct loop *l;
    struct tern_err err;
    assert_int_equal(loop_new(&l, &err), 0);
    struct ctx c = {.l = l};
    loop_set_before_sleep(l, hook, &c);
    struct tag t1 = {&c, 1}, t2 = {&c, 2}, t3 = {&c, 3};
    int64_t t0 = loop_now_ms();
    loop_add_timer(l, 60, tagged, &t3);
    loop_add_timer(l, 20, tagged, &t1);
    c.timer_to_cancel = loop_add_timer(l, 40, tagged, &t2); /* t1 cancels it */
    while (c.nr_order < 2 && loop_now_ms() - t0 < 2000)
        assert_int_equal(loop_run_once(l, -1, &err), 0);
    assert_int_equal(c.nr_order, 2);
    assert_int_equal(c.order[0], 1);
    assert_int_equal(c.order[1], 3);
    assert_true(loop_now_ms() - t0 >= 60);
    assert_true(c.hooks >= 2);
    /* A 0 ms timer runs at the next round; an unknown id is ignored. */
    loop_add_timer(l, 0, record, &c);
    loop_del_timer(l, 12345);
    assert_int_equal(loop_run_once(l, 1000, &err), 0);
    assert_int_equal(c.nr_order, 3);
    loop_free(l);
}

static void *waker(void *arg)
{
    usleep(50000);
    loop_wake(arg);
    return NULL;
}

static void test_wake_and_stats(void **unused)
{
    (void)unused;
    struct loop *l;
    struct tern_err err;
    assert_int_equal(loop_new(&l, &err), 0);
    pthread_t th;
    int64_t t0 = loop_now_ms();
    assert_int_equal(pthread_create(&th, NULL, waker, l), 0);
    assert_int_equal(loop_run_once(l, 5000, &err), 0);
    int64_t took = loop_now_ms() - t0;
    pthread_join(th, NULL);
    assert_true(took < 4000); /* woken, not timed out */
    struct loop_stats s = loop_stats(l, true);
    assert_int_equal(s.rounds, 1);
    assert_int_equal(loop_stats(l, false).rounds, 0);
    loop_stop(l);
    assert_true(loop_stopping(l));
    assert_int_equal(loop_run(l, &err), 0); /* returns at once */
    loop_free(l);
}

static void stopping_cb(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)events;
    char ch;
    assert_int_equal(read(fd, &ch, 1), 1);
    (*(int *)opaque)++;
    loop_stop(l);
}

/* loop_stop ends the round: the other ready fd waits for the next
 * loop_run, which runs again. */
static void test_stop_ends_round(void **unused)
{
    (void)unused;
    struct loop *l;
    struct tern_err err;
    assert_int_equal(loop_new(&l, &err), 0);
    int a[2], b[2], ran = 0;
    assert_int_equal(pipe2(a, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(pipe2(b, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(loop_add_fd(l, a[0], LOOP_READ, stopping_cb, &ran, &err), 0);
    assert_int_equal(loop_add_fd(l, b[0], LOOP_READ, stopping_cb, &ran, &err), 0);
    assert_int_equal(write(a[1], "1", 1), 1);
    assert_int_equal(write(b[1], "1", 1), 1);
    assert_int_equal(loop_run(l, &err), 0);
    assert_int_equal(ran, 1);
    assert_false(loop_stopping(l));
    assert_int_equal(loop_run(l, &err), 0);
    assert_int_equal(ran, 2);
    for (int i = 0; i < 2; i++) {
        close(a[i]);
        close(b[i]);
    }
    loop_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fds),
        cmocka_unit_test(test_remove_in_callback),
        cmocka_unit_test(test_timers),
        cmocka_unit_test(test_wake_and_stats),
        cmocka_unit_test(test_stop_ends_round),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
