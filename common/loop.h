/* One event loop for a process (ternd, tern-vmm): file descriptors with a
 * callback each, timers, and a hook that runs before every sleep. A module
 * adds itself with one loop_add_fd(loop, fd, events, callback, opaque) and
 * the loop never learns what the module is (Redis's ae.c is the model).
 * Callbacks must not block: they read and write non-blocking fds, and what
 * takes time is a timer or another fd. epoll underneath; single-threaded:
 * every call from the loop's thread (loop_wake may come from any thread).
 *
 * A callback may add and remove any fd or timer, its own included: removed
 * ones never fire afterwards, also within the same round. */
#ifndef TERN_COMMON_LOOP_H
#define TERN_COMMON_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

#define LOOP_READ 1u
#define LOOP_WRITE 2u
/* Reported (never asked for): the peer hung up or the fd is in error. */
#define LOOP_HUP 4u

struct loop;

typedef void (*loop_fd_fn)(struct loop *l, int fd, unsigned events, void *opaque);
typedef void (*loop_timer_fn)(struct loop *l, void *opaque);
typedef void (*loop_hook_fn)(struct loop *l, void *opaque);

int loop_new(struct loop **out, struct tern_err *err);
/* Closes nothing of the caller's: fds stay open. */
void loop_free(struct loop *l);

/* Watches `fd` for `events` (LOOP_READ, LOOP_WRITE, or 0 to keep it
 * registered but quiet). One registration per fd. */
int loop_add_fd(struct loop *l, int fd, unsigned events, loop_fd_fn fn, void *opaque,
                struct tern_err *err);
/* Changes what is watched (e.g. LOOP_WRITE while output is queued). */
int loop_set_events(struct loop *l, int fd, unsigned events);
/* Forgets `fd` (call before closing it). Unknown fds are ignored. */
void loop_del_fd(struct loop *l, int fd);

/* Runs fn once, `ms` from now (0: at the next round). Returns an id > 0,
 * or 0 when out of memory. */
uint64_t loop_add_timer(struct loop *l, int64_t ms, loop_timer_fn fn, void *opaque);
/* Cancels a timer that has not fired (0 and unknown ids are ignored). */
void loop_del_timer(struct loop *l, uint64_t id);

/* Runs before every wait for events (after the callbacks of a round): the
 * place for work that follows from many events at once. */
void loop_set_before_sleep(struct loop *l, loop_hook_fn fn, void *opaque);

/* One round: waits at most `max_wait_ms` (-1: until something happens)
 * for the next event or timer, runs what is ready. 0, or -1 with err on a
 * failure of the wait itself. */
int loop_run_once(struct loop *l, int max_wait_ms, struct tern_err *err);
/* Rounds until loop_stop; then it may be run again. loop_stop ends the
 * round too: callbacks not run yet in it wait for the next loop_run. */
int loop_run(struct loop *l, struct tern_err *err);
void loop_stop(struct loop *l);
bool loop_stopping(const struct loop *l);

/* Makes a waiting loop_run_once return (safe from any thread). */
void loop_wake(struct loop *l);

/* Monotonic milliseconds, as the timers see them. */
int64_t loop_now_ms(void);

/* Statistics for tests and benchmarks: rounds run, and the longest time a
 * round took (ms: the before-sleep hook and the callbacks, not the wait),
 * since the last reset. */
struct loop_stats {
    uint64_t rounds;
    double longest_round_ms;
};
struct loop_stats loop_stats(struct loop *l, bool reset);

#endif
