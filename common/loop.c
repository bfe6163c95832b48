#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 64

struct reg {
    loop_fd_fn fn;
    void *opaque;
    unsigned events;
    uint32_t gen; /* 0: free */
};

struct timer {
    uint64_t id;
    int64_t due;
    loop_timer_fn fn;
    void *opaque;
};

struct loop {
    int epfd;
    int wake_fd;
    struct reg *regs; /* by fd */
    size_t nr_regs;
    uint32_t next_gen;
    struct timer *timers;
    size_t nr_timers, cap_timers;
    uint64_t next_timer;
    loop_hook_fn before_sleep;
    void *before_sleep_opaque;
    bool stop;
    struct loop_stats stats;
};

int64_t loop_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double now_precise_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static uint32_t ep_flags(unsigned events)
{
    return (events & LOOP_READ ? EPOLLIN : 0u) | (events & LOOP_WRITE ? EPOLLOUT : 0u);
}

static void on_wake(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)l;
    (void)events;
    (void)opaque;
    uint64_t v;
    while (read(fd, &v, sizeof(v)) == (ssize_t)sizeof(v)) {
    }
}

int loop_new(struct loop **out, struct tern_err *err)
{
    *out = NULL;
    struct loop *l = calloc(1, sizeof(*l));
    if (!l)
        return tern_err_set(err, "out of memory for the event loop");
    l->wake_fd = -1;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        int e = errno;
        free(l);
        return tern_err_errno(err, e, "epoll_create1");
    }
    l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (l->wake_fd < 0) {
        int e = errno;
        loop_free(l);
        return tern_err_errno(err, e, "eventfd for the event loop");
    }
    if (loop_add_fd(l, l->wake_fd, LOOP_READ, on_wake, NULL, err) < 0) {
        loop_free(l);
        return -1;
    }
    *out = l;
    return 0;
}

void loop_free(struct loop *l)
{
    if (!l)
        return;
    if (l->epfd >= 0)
        close(l->epfd);
    if (l->wake_fd >= 0)
        close(l->wake_fd);
    free(l->regs);
    free(l->timers);
    free(l);
}

int loop_add_fd(struct loop *l, int fd, unsigned events, loop_fd_fn fn, void *opaque,
                struct tern_err *err)
{
    if (fd < 0)
        return tern_err_set(err, "loop_add_fd: bad fd %d", fd);
    if ((size_t)fd >= l->nr_regs) {
        size_t n = l->nr_regs ? l->nr_regs : 64;
        while (n <= (size_t)fd)
            n *= 2;
        struct reg *r = realloc(l->regs, n * sizeof(*r));
        if (!r)
            return tern_err_set(err, "out of memory registering fd %d", fd);
        memset(r + l->nr_regs, 0, (n - l->nr_regs) * sizeof(*r));
        l->regs = r;
        l->nr_regs = n;
    }
    struct reg *r = &l->regs[fd];
    if (r->gen)
        return tern_err_set(err, "loop_add_fd: fd %d is already registered", fd);
    if (++l->next_gen == 0)
        l->next_gen = 1;
    struct epoll_event ev = {.events = ep_flags(events),
                             .data.u64 = (uint64_t)(uint32_t)fd | (uint64_t)l->next_gen << 32};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return tern_err_errno(err, errno, "epoll_ctl(ADD, fd %d)", fd);
    *r = (struct reg){.fn = fn, .opaque = opaque, .events = events, .gen = l->next_gen};
    return 0;
}

int loop_set_events(struct loop *l, int fd, unsigned events)
{
    if (fd < 0 || (size_t)fd >= l->nr_regs || !l->regs[fd].gen)
        return -1;
    struct reg *r = &l->regs[fd];
    if (r->events == events)
        return 0;
    struct epoll_event ev = {.events = ep_flags(events),
                             .data.u64 = (uint64_t)(uint32_t)fd | (uint64_t)r->gen << 32};
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
        return -1;
    r->events = events;
    return 0;
}

void loop_del_fd(struct loop *l, int fd)
{
    if (fd < 0 || (size_t)fd >= l->nr_regs || !l->regs[fd].gen)
        return;
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL); /* fails only for a closed fd: fine */
    memset(&l->regs[fd], 0, sizeof(l->regs[fd]));
}

uint64_t loop_add_timer(struct loop *l, int64_t ms, loop_timer_fn fn, void *opaque)
{
    if (l->nr_timers == l->cap_timers) {
        size_t n = l->cap_timers ? l->cap_timers * 2 : 16;
        struct timer *t = realloc(l->timers, n * sizeof(*t));
        if (!t)
            return 0;
        l->timers = t;
        l->cap_timers = n;
    }
    uint64_t id = ++l->next_timer;
    l->timers[l->nr_timers++] = (struct timer){.id = id, .due = loop_now_ms() + (ms > 0 ? ms : 0),
                                               .fn = fn, .opaque = opaque};
    return id;
}

void loop_del_timer(struct loop *l, uint64_t id)
{
    if (!id)
        return;
    for (size_t i = 0; i < l->nr_timers; i++)
        if (l->timers[i].id == id) {
            l->timers[i] = l->timers[--l->nr_timers];
            return;
        }
}

void loop_set_before_sleep(struct loop *l, loop_hook_fn fn, void *opaque)
{
    l->before_sleep = fn;
    l->before_sleep_opaque = opaque;
}

void loop_stop(struct loop *l)
{
    l->stop = true;
    loop_wake(l);
}

bool loop_stopping(const struct loop *l)
{
    return l->stop;
}

void loop_wake(struct loop *l)
{
    uint64_t one = 1;
    ssize_t w = write(l->wake_fd, &one, sizeof(one));
    (void)w; /* a full counter wakes it just the same */
}

/* Runs the timers that are due, oldest first; ones added meanwhile wait
 * for the next round. */
static void run_timers(struct loop *l)
{
    int64_t now = loop_now_ms();
    uint64_t last = l->next_timer;
    for (;;) {
        ssize_t pick = -1;
        for (size_t i = 0; i < l->nr_timers; i++)
            if (l->timers[i].due <= now && l->timers[i].id <= last &&
                (pick < 0 || l->timers[i].due < l->timers[pick].due ||
                 (l->timers[i].due == l->timers[pick].due && l->timers[i].id < l->timers[pick].id)))
                pick = (ssize_t)i;
        if (pick < 0 || l->stop)
            return;
        struct timer t = l->timers[pick];
        l->timers[pick] = l->timers[--l->nr_timers];
        t.fn(l, t.opaque);
    }
}

static int next_timeout(const struct loop *l, int max_wait_ms)
{
    if (l->nr_timers == 0)
        return max_wait_ms;
    int64_t due = l->timers[0].due;
    for (size_t i = 1; i < l->nr_timers; i++)
        if (l->timers[i].due < due)
            due = l->timers[i].due;
    int64_t left = due - loop_now_ms();
    if (left < 0)
        left = 0;
    if (max_wait_ms >= 0 && left > max_wait_ms)
        left = max_wait_ms;
    return left > 1000000000 ? 1000000000 : (int)left;
}

int loop_run_once(struct loop *l, int max_wait_ms, struct tern_err *err)
{
    /* A round: the hook before sleeping, then what woke the loop. */
    double b = now_precise_ms();
    if (l->before_sleep)
        l->before_sleep(l, l->before_sleep_opaque);
    double hook_ms = now_precise_ms() - b;
    struct epoll_event evs[MAX_EVENTS];
    int n = epoll_wait(l->epfd, evs, MAX_EVENTS, next_timeout(l, max_wait_ms));
    if (n < 0) {
        if (errno == EINTR)
            return 0;
        return tern_err_errno(err, errno, "epoll_wait");
    }
    double t0 = now_precise_ms();
    for (int i = 0; i < n && !l->stop; i++) {
        int fd = (int)(uint32_t)evs[i].data.u64;
        uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
        /* Removed (or replaced) by an earlier callback of this round. */
        if ((size_t)fd >= l->nr_regs || l->regs[fd].gen != gen)
            continue;
        struct reg r = l->regs[fd];
        unsigned ev = (evs[i].events & EPOLLIN ? LOOP_READ : 0u) |
                      (evs[i].events & EPOLLOUT ? LOOP_WRITE : 0u) |
                      (evs[i].events & (EPOLLHUP | EPOLLERR) ? LOOP_HUP : 0u);
        r.fn(l, fd, ev, r.opaque);
    }
    run_timers(l);
    double took = now_precise_ms() - t0 + hook_ms;
    l->stats.rounds++;
    if (took > l->stats.longest_round_ms)
        l->stats.longest_round_ms = took;
    return 0;
}

int loop_run(struct loop *l, struct tern_err *err)
{
    while (!l->stop)
        if (loop_run_once(l, -1, err) < 0)
            return -1;
    l->stop = false; /* a later loop_run runs again */
    return 0;
}

struct loop_stats loop_stats(struct loop *l, bool reset)
{
    struct loop_stats s = l->stats;
    if (reset)
        memset(&l->stats, 0, sizeof(l->stats));
    return s;
}
