/* The watchdog self-fence (fence.h, docs/fencing.md): a thread feeds the
 * device while the loop keeps calling watchdog_healthy, and stops for good
 * once it has not heard from the loop for timeout/2. The loop never waits
 * for the device: watchdog_healthy is one atomic store. */
#include "fence.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/watchdog.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FEED_PERIOD_MAX_MS 250

struct watchdog {
    int fd;
    unsigned timeout_s;
    int64_t window_ms;   /* feeds only while the last healthy is younger */
    int64_t period_ms;   /* between keepalives */
    _Atomic int64_t last_healthy_ms;
    /* Set by watchdog_healthy when it comes after the window: the loop
     * (or the whole host) was stopped longer than the feeder allows, and
     * the loop may run before the feeder looks; it must not revive the
     * feeding then (the model's LATCH_RACE, ha/failover.pml). */
    _Atomic bool latched;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;   /* CLOCK_MONOTONIC */
    bool stop;
    struct watchdog_stats st; /* under mu */
    char path[FENCE_PATH_MAX];
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t feed_period_ms(unsigned timeout_s)
{
    int64_t p = (int64_t)timeout_s * 1000 / 4;
    return p < FEED_PERIOD_MAX_MS ? p : FEED_PERIOD_MAX_MS;
}

int64_t watchdog_reset_deadline_ms(unsigned timeout_s)
{
    int64_t t = (int64_t)timeout_s * 1000;
    return t / 2 + feed_period_ms(timeout_s) + t;
}

/* One keepalive (any byte but the magic 'V'). Called with mu held. */
static void keepalive(struct watchdog *w)
{
    ssize_t n;
    while ((n = write(w->fd, "k", 1)) < 0 && errno == EINTR) {
    }
    if (n == 1) {
        w->st.keepalives++;
    } else {
        w->st.write_errors++;
        w->st.last_errno = n < 0 ? errno : EIO;
    }
}

static void *feeder(void *opaque)
{
    struct watchdog *w = opaque;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        if (!w->st.expired) {
            int64_t age = mono_ms() - atomic_load(&w->last_healthy_ms);
            if (age < w->window_ms && !atomic_load(&w->latched))
                keepalive(w);
            else
                w->st.expired = true; /* for good: the reset is due */
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = ts.tv_nsec + (w->st.expired ? 1000 : w->period_ms) * 1000000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        while (!w->stop) {
            int rc = pthread_cond_timedwait(&w->cv, &w->mu, &ts);
            if (rc == ETIMEDOUT)
                break;
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void close_fd(int fd, bool disarm)
{
    if (disarm) {
        ssize_t n = write(fd, "V", 1);
        (void)n;
    }
    close(fd);
}

int watchdog_open(const char *path, unsigned timeout_s, struct watchdog **out,
                  struct tern_err *err)
{
    *out = NULL;
    if (timeout_s < 1 || timeout_s > WATCHDOG_TIMEOUT_MAX_S)
        return tern_err_coded(err, TERN_ERR_INVALID, "watchdog timeout must be 1..%d s, not %u",
                              WATCHDOG_TIMEOUT_MAX_S, timeout_s);
    if (strlen(path) >= FENCE_PATH_MAX)
        return tern_err_coded(err, TERN_ERR_INVALID, "watchdog path %s is too long", path);
    /* O_NONBLOCK: a FIFO without its reader fails (ENXIO) instead of
     * waiting; a watchdog device ignores it. */
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        if (e == ENXIO)
            return tern_err_set(err, "watchdog %s: a FIFO nobody reads (start its stand-in first)",
                                path);
        return tern_err_errno(err, e, "opening watchdog %s%s", path,
                              e == ENOENT ? " (load a watchdog driver, e.g. softdog)"
                              : e == EBUSY ? " (another program, e.g. a watchdog daemon, has it)"
                                           : "");
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return tern_err_errno(err, e, "watchdog %s", path);
    }
    if (!S_ISCHR(st.st_mode) && !S_ISFIFO(st.st_mode)) {
        close(fd);
        return tern_err_set(err, "watchdog %s is neither a device nor a FIFO", path);
    }
    /* Opened: a device is armed from here on. Every failure below disarms. */
    unsigned effective = timeout_s;
    int t = (int)timeout_s;
    if (ioctl(fd, WDIOC_SETTIMEOUT, &t) == 0) {
        effective = t > 0 ? (unsigned)t : timeout_s;
    } else if (errno == ENOTTY && S_ISFIFO(st.st_mode)) {
        /* A stand-in's FIFO: it counts what the test told it. */
    } else {
        int e = errno;
        t = 0;
        if (ioctl(fd, WDIOC_GETTIMEOUT, &t) == 0 && t > 0) {
            effective = (unsigned)t;
        } else {
            /* Its deadline unknown, survivors could not count on it. */
            close_fd(fd, true);
            return tern_err_errno(err, e, "watchdog %s: cannot set its timeout to %u s, nor read "
                                          "it (WDIOC_SETTIMEOUT)",
                                  path, timeout_s);
        }
    }
    if (effective > timeout_s) {
        close_fd(fd, true);
        return tern_err_set(err,
                            "watchdog %s runs with a %u s timeout, longer than the %u s asked: "
                            "survivors would wait too little (set watchdog_timeout = %u)",
                            path, effective, timeout_s, effective);
    }
    struct watchdog *w = calloc(1, sizeof(*w));
    if (!w) {
        close_fd(fd, true);
        return tern_err_set(err, "out of memory for the watchdog");
    }
    w->fd = fd;
    w->timeout_s = effective;
    w->window_ms = (int64_t)effective * 1000 / 2;
    w->period_ms = feed_period_ms(effective);
    snprintf(w->path, sizeof(w->path), "%s", path);
    atomic_store(&w->last_healthy_ms, mono_ms());
    pthread_condattr_t ca;
    int rc;
    if ((rc = pthread_condattr_init(&ca)) || (rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC)) ||
        (rc = pthread_cond_init(&w->cv, &ca))) {
        close_fd(fd, true);
        free(w);
        return tern_err_errno(err, rc, "watchdog: condition variable");
    }
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&w->mu, NULL);
    keepalive(w);
    if (w->st.keepalives == 0) {
        int e = w->st.last_errno;
        close_fd(fd, true);
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return tern_err_errno(err, e, "watchdog %s: the first keepalive", path);
    }
    /* The thread takes no signal of the process (and a FIFO whose reader
     * went away gives it EPIPE, not SIGPIPE). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = pthread_create(&w->thread, NULL, feeder, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        close_fd(fd, true);
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return tern_err_errno(err, rc, "watchdog: starting its feeding thread");
    }
    pthread_setname_np(w->thread, "watchdog");
    *out = w;
    return 0;
}

void watchdog_healthy(struct watchdog *w)
{
    if (!w)
        return;
    /* Only the loop's thread calls this: nothing else moves the value
     * between the load and the store. */
    int64_t now = mono_ms();
    if (now - atomic_load(&w->last_healthy_ms) >= w->window_ms)
        atomic_store(&w->latched, true); /* too late: the reset is due, whoever looks first */
    else
        atomic_store(&w->last_healthy_ms, now);
}

void watchdog_close(struct watchdog *w, bool disarm)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    close_fd(w->fd, disarm && !w->st.expired && !atomic_load(&w->latched));
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

unsigned watchdog_timeout_s(const struct watchdog *w)
{
    return w ? w->timeout_s : 0;
}

struct watchdog_stats watchdog_stats(struct watchdog *w)
{
    struct watchdog_stats s;
    memset(&s, 0, sizeof(s));
    if (!w)
        return s;
    pthread_mutex_lock(&w->mu);
    s = w->st;
    pthread_mutex_unlock(&w->mu);
    s.expired = s.expired || atomic_load(&w->latched);
    return s;
}
