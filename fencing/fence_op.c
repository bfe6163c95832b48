/* A fence of one target host (fence.h): its levels in order of index, the
 * devices of a level in parallel. Every run is a fence_device_run; this
 * file only decides what runs next:
 *
 *   start_level --(all of the level ok)--> done(ok)
 *        |  \--(one failed: the others are killed)--> next level, or done(!ok)
 *        \--(reboot, several devices)--> phase OFF --(all ok)--> phase ON --> done(ok)
 *
 * done is always called from a loop callback (a run's, or a timer's when no
 * run of a level could even be asked for), never from fence_op_start. */
#include "fence.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum phase {
    PHASE_ACTION, /* the op's own action on every device of the level */
    PHASE_OFF,    /* reboot of a level of several devices: off on all... */
    PHASE_ON,     /* ...then on on all */
};

struct slot {
    struct fence_op *op;
    struct fence_run *run;  /* NULL when ended */
    size_t result;          /* index into op->results */
    double t0;
};

struct fence_op {
    struct loop *l;
    const struct fence_config *c;
    char action[16];
    const struct fence_level *levels[FENCE_HOST_LEVELS_MAX];
    unsigned nr_levels, cur;
    enum phase phase;
    struct slot slots[FENCE_LEVEL_DEVICES_MAX];
    unsigned nr_slots, pending;
    bool level_failed;
    uint64_t advance_timer;
    struct fence_result *results;
    size_t nr_results, cap_results;
    fence_done_fn done;
    void *opaque;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void advance(struct fence_op *op);

static void op_free(struct fence_op *op)
{
    loop_del_timer(op->l, op->advance_timer);
    free(op->results);
    free(op);
}

static void op_finish(struct fence_op *op, bool ok)
{
    fence_done_fn done = op->done;
    void *opaque = op->opaque;
    /* The callback may start another op; this one is gone after it. */
    struct fence_result *results = op->results;
    size_t n = op->nr_results;
    op->results = NULL;
    op_free(op);
    done(opaque, ok, results, n);
    free(results);
}

static struct fence_result *new_result(struct fence_op *op, const char *device)
{
    if (op->nr_results == op->cap_results) {
        size_t cap = op->cap_results ? op->cap_results * 2 : 4;
        struct fence_result *n = realloc(op->results, cap * sizeof(*n));
        if (!n)
            return NULL;
        op->results = n;
        op->cap_results = cap;
    }
    struct fence_result *r = &op->results[op->nr_results++];
    memset(r, 0, sizeof(*r));
    r->exit_status = -1;
    snprintf(r->device, sizeof(r->device), "%s", device);
    return r;
}

/* The others of a failed level are not waited for. */
static void kill_rest(struct fence_op *op, const char *failed)
{
    for (unsigned i = 0; i < op->nr_slots; i++) {
        struct slot *s = &op->slots[i];
        if (!s->run)
            continue;
        fence_run_cancel(s->run);
        s->run = NULL;
        op->pending--;
        struct fence_result *r = &op->results[s->result];
        r->ms = now_ms() - s->t0;
        snprintf(r->output, sizeof(r->output),
                 "tern: killed before it ended: %s, of the same level, failed", failed);
    }
}

static void on_run_done(void *opaque, const struct fence_result *res)
{
    struct slot *s = opaque;
    struct fence_op *op = s->op;
    op->results[s->result] = *res;
    s->run = NULL;
    op->pending--;
    /* In the ON phase the host has been off already: every on runs. */
    if (!res->ok && op->phase != PHASE_ON) {
        op->level_failed = true;
        kill_rest(op, res->device);
    }
    if (op->pending == 0)
        advance(op);
}

static void on_advance(struct loop *l, void *opaque)
{
    (void)l;
    struct fence_op *op = opaque;
    op->advance_timer = 0;
    advance(op);
}

/* Asks every device of the current level for `action`. */
static void start_phase(struct fence_op *op, enum phase phase, const char *action)
{
    const struct fence_level *lv = op->levels[op->cur];
    op->phase = phase;
    op->nr_slots = 0;
    op->pending = 0;
    for (unsigned i = 0; i < lv->nr_devices; i++) {
        struct slot *s = &op->slots[op->nr_slots++];
        memset(s, 0, sizeof(*s));
        s->op = op;
        s->t0 = now_ms();
        struct fence_result *r = new_result(op, lv->devices[i]);
        if (!r) {
            /* No room to even report it: the level fails. */
            op->nr_slots--;
            op->level_failed = true;
            break;
        }
        s->result = (size_t)(r - op->results);
        struct tern_err err;
        if (fence_device_run(op->l, op->c, lv->devices[i], action, on_run_done, s, &s->run,
                             &err) < 0) {
            snprintf(r->output, sizeof(r->output), "tern: %.1000s", err.msg);
            op->level_failed = true;
            break;
        }
        op->pending++;
    }
    if (op->level_failed) {
        kill_rest(op, "another device");
        if (op->pending == 0 && !op->advance_timer)
            op->advance_timer = loop_add_timer(op->l, 0, on_advance, op);
    }
}

static void start_level(struct fence_op *op)
{
    op->level_failed = false;
    bool split = !strcmp(op->action, "reboot") && op->levels[op->cur]->nr_devices > 1;
    if (split)
        start_phase(op, PHASE_OFF, "off");
    else
        start_phase(op, PHASE_ACTION, op->action);
}

/* Every run of the current phase has ended. */
static void advance(struct fence_op *op)
{
    if (!op->level_failed) {
        if (op->phase == PHASE_OFF) {
            start_phase(op, PHASE_ON, "on");
            return;
        }
        op_finish(op, true);
        return;
    }
    if (++op->cur < op->nr_levels) {
        start_level(op);
        return;
    }
    op_finish(op, false);
}

static int by_index(const void *a, const void *b)
{
    const struct fence_level *x = *(const struct fence_level *const *)a;
    const struct fence_level *y = *(const struct fence_level *const *)b;
    return (x->index > y->index) - (x->index < y->index);
}

int fence_op_start(struct loop *l, const struct fence_config *c, const char *host,
                   const char *action, fence_done_fn done, void *opaque, struct fence_op **out,
                   struct tern_err *err)
{
    if (out)
        *out = NULL;
    if (!fence_action_valid(action))
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "fence action '%s' is not one of off, reboot, on, status, monitor",
                              action ? action : "(null)");
    struct fence_op *op = calloc(1, sizeof(*op));
    if (!op)
        return tern_err_coded(err, TERN_ERR_INTERNAL, "out of memory for a fence operation");
    for (unsigned i = 0; i < c->nr_levels && op->nr_levels < FENCE_HOST_LEVELS_MAX; i++)
        if (!strcmp(c->levels[i].host, host))
            op->levels[op->nr_levels++] = &c->levels[i];
    if (op->nr_levels == 0) {
        free(op);
        return tern_err_coded(err, TERN_ERR_NOT_FOUND,
                              "host '%s' has no fence levels: it cannot be fenced (add "
                              "'fence_level = %s 1 DEVICE' to ternd.conf)",
                              host, host);
    }
    qsort(op->levels, op->nr_levels, sizeof(op->levels[0]), by_index);
    op->l = l;
    op->c = c;
    snprintf(op->action, sizeof(op->action), "%s", action);
    op->done = done;
    op->opaque = opaque;
    start_level(op);
    if (out)
        *out = op;
    return 0;
}

void fence_op_cancel(struct fence_op *op)
{
    if (!op)
        return;
    for (unsigned i = 0; i < op->nr_slots; i++)
        if (op->slots[i].run)
            fence_run_cancel(op->slots[i].run);
    op_free(op);
}
