/* The cluster state on disk: snapshot + journal, written by one worker
 * thread (state_store.h). The loop thread only serializes records and
 * queues them; the worker writes, fdatasyncs once per batch and reports
 * how far the files are durable. */
#include "state_store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/fileio.h"
#include "../proto/crc32.h"

#define SNAPSHOT_NAME "cluster-state.json"
#define JOURNAL_NAME "cluster-journal"
/* A new snapshot once the journal holds this much. */
#define SNAPSHOT_AFTER_BYTES (16u << 20)
/* What may wait for the disk before appends are dropped (a snapshot then
 * replaces them once the disk is back). */
#define MAX_QUEUED_BYTES (256u << 20)
#define JOURNAL_FILE_MAX (1u << 30)
#define SNAPSHOT_FILE_MAX (1u << 30)

enum op_kind { OP_APPEND, OP_SNAPSHOT };

struct op {
    enum op_kind kind;
    char *data;
    size_t len;
    uint64_t version;
    uint64_t gen;
    struct op *next;
};

struct state_store {
    char snap_path[4096];
    char journal_path[4096];
    int journal_fd;
    int event_fd;
    pthread_t thread;
    bool thread_started;

    pthread_mutex_t mu;
    pthread_cond_t cv;      /* work queued, or stop */
    pthread_cond_t idle_cv; /* queue drained */
    struct op *head, *tail;
    size_t queued_bytes;
    bool stop, busy;
    /* Published by the worker (under mu). */
    uint64_t durable_version, durable_gen;
    bool durable_new;
    char failure[TERN_ERR_MAX];
    bool failure_new;
    bool broken;            /* an append failed: nothing more until a snapshot */
    struct state_store_stats stats;

    /* The loop thread's own. */
    uint64_t gen;
    bool dropping;          /* appends dropped (queue full or disk failed): snapshot next */
    uint64_t journal_since_snapshot;
};

/* ---- records ---- */

/* "crc32hex json\n" for one record. */
static char *record_line(json_t *rec, size_t *len)
{
    char *body = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    if (!body)
        return NULL;
    size_t blen = strlen(body);
    char *line = malloc(blen + 11);
    if (!line) {
        free(body);
        return NULL;
    }
    snprintf(line, 10, "%08x ", tern_crc32(0, body, blen));
    memcpy(line + 9, body, blen);
    line[9 + blen] = '\n';
    free(body);
    *len = blen + 10;
    return line;
}

static json_t *config_record(const struct cl_config *c)
{
    json_t *m = json_array(), *l = json_array();
    for (size_t i = 0; m && i < c->nr_members; i++)
        json_array_append_new(m, json_integer(c->members[i]));
    for (size_t i = 0; l && i < c->nr_left; i++)
        json_array_append_new(l, json_pack("[I, b]", (json_int_t)c->left[i],
                                           c->left_reason[i] == CL_LEFT_NODE));
    /* "r": the ring it was applied under (its quorum epoch if quorate);
     * records written before it had none (0). */
    return json_pack("{s:o*, s:o*, s:I}", "m", m, "l", l, "r", (json_int_t)c->ring_seq);
}

/* Applies one journal record to `s`; -1 with err when it does not fit. */
static int replay_record(struct cl_state *s, const json_t *rec, struct tern_err *err)
{
    const json_t *jv = json_object_get(rec, "v");
    if (!json_is_integer(jv) || json_integer_value(jv) < 1)
        return tern_err_set(err, "the record has no version");
    uint64_t v = (uint64_t)json_integer_value(jv);
    if (v <= cl_state_version(s))
        return 1; /* older than the snapshot: already in it */
    if (v != cl_state_version(s) + 1)
        return tern_err_set(err, "version %llu follows %llu: records are missing",
                            (unsigned long long)v, (unsigned long long)cl_state_version(s));
    const json_t *msg = json_object_get(rec, "m"), *cfg = json_object_get(rec, "c");
    if (json_is_object(msg)) {
        const json_t *js = json_object_get(rec, "s");
        if (!json_is_integer(js) || json_integer_value(js) < 0 ||
            json_integer_value(js) > UINT32_MAX)
            return tern_err_set(err, "version %llu: no sender", (unsigned long long)v);
        if (cl_state_apply(s, (uint32_t)json_integer_value(js), msg, err) < 0)
            return tern_err_prefix(err, "version %llu does not apply again", (unsigned long long)v);
    } else if (json_is_object(cfg)) {
        const json_t *m = json_object_get(cfg, "m"), *l = json_object_get(cfg, "l");
        const json_t *ring = json_object_get(cfg, "r");
        if (!json_is_array(m) || !json_is_array(l) || json_array_size(m) > 4096 ||
            json_array_size(l) > 4096 ||
            (ring && (!json_is_integer(ring) || json_integer_value(ring) < 0)))
            return tern_err_set(err, "version %llu: a malformed configuration",
                                (unsigned long long)v);
        size_t nm = json_array_size(m), nl = json_array_size(l);
        uint32_t *members = calloc(nm + 1, sizeof(*members)), *left = calloc(nl + 1, sizeof(*left));
        enum cl_leave_reason *why = calloc(nl + 1, sizeof(*why));
        int rc = 0;
        if (!members || !left || !why)
            rc = tern_err_set(err, "out of memory");
        for (size_t i = 0; rc == 0 && i < nm; i++) {
            const json_t *x = json_array_get(m, i);
            if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > UINT32_MAX)
                rc = tern_err_set(err, "version %llu: a malformed member", (unsigned long long)v);
            else
                members[i] = (uint32_t)json_integer_value(x);
        }
        for (size_t i = 0; rc == 0 && i < nl; i++) {
            const json_t *x = json_array_get(l, i);
            const json_t *id = json_array_get(x, 0), *down = json_array_get(x, 1);
            if (!json_is_integer(id) || json_integer_value(id) < 0 ||
                json_integer_value(id) > UINT32_MAX || !json_is_boolean(down))
                rc = tern_err_set(err, "version %llu: a malformed departure", (unsigned long long)v);
            else {
                left[i] = (uint32_t)json_integer_value(id);
                why[i] = json_is_true(down) ? CL_LEFT_NODE : CL_LEFT_PROCESS;
            }
        }
        if (rc == 0) {
            struct cl_config c = {.members = members, .nr_members = nm, .left = left,
                                  .left_reason = why, .nr_left = nl,
                                  .ring_seq = ring ? (uint64_t)json_integer_value(ring) : 0};
            cl_state_apply_config(s, &c);
        }
        free(members);
        free(left);
        free(why);
        if (rc < 0)
            return -1;
    } else {
        return tern_err_set(err, "version %llu: neither a message nor a configuration",
                            (unsigned long long)v);
    }
    if (cl_state_version(s) != v)
        return tern_err_set(err, "version %llu applied as %llu", (unsigned long long)v,
                            (unsigned long long)cl_state_version(s));
    return 0;
}

int state_store_load_files(const char *snapshot_path, const char *journal_path,
                           struct cl_state *into, bool *torn, int *loaded, struct tern_err *err)
{
    if (torn)
        *torn = false;
    struct cl_state *s = cl_state_new();
    if (!s)
        return tern_err_set(err, "out of memory");
    int lr = cl_state_load(s, snapshot_path, err);
    if (lr < 0) {
        cl_state_free(s);
        return -1;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    struct stat sb;
    bool have_journal = stat(journal_path, &sb) == 0;
    if (!have_journal && errno != ENOENT) {
        cl_state_free(s);
        return tern_err_errno(err, errno, "cannot stat %s", journal_path);
    }
    if (have_journal && tern_read_file(journal_path, JOURNAL_FILE_MAX, &buf, &len, err) < 0) {
        cl_state_free(s);
        return tern_err_prefix(err, "loading the cluster state's journal");
    }
    size_t off = 0, lineno = 0, records = 0;
    int rc = 0;
    while (off < len) {
        lineno++;
        const char *line = (const char *)buf + off;
        const char *nl = memchr(line, '\n', len - off);
        size_t ll = nl ? (size_t)(nl - line) : len - off;
        bool last = !nl || off + ll + 1 >= len;
        unsigned crc;
        char hex[9];
        bool good = ll > 9 && line[8] == ' ';
        if (good) {
            memcpy(hex, line, 8);
            hex[8] = '\0';
            good = sscanf(hex, "%8x", &crc) == 1 && tern_crc32(0, line + 9, ll - 9) == crc;
        }
        if (!good || !nl) {
            if (last) {
                /* Cut by a crash while it was written: it was never
                 * reported durable, so nobody relies on it. */
                if (torn)
                    *torn = true;
                break;
            }
            rc = tern_err_set(err, "%s line %zu is damaged (checksum); the journal cannot be "
                              "trusted: move %s and %s away, and this host takes the state from "
                              "the other hosts",
                              journal_path, lineno, snapshot_path, journal_path);
            break;
        }
        json_error_t jerr;
        json_t *rec = json_loadb(line + 9, ll - 9, JSON_REJECT_DUPLICATES, &jerr);
        struct tern_err e2 = {0};
        int r = rec ? replay_record(s, rec, &e2) : tern_err_set(&e2, "not JSON: %s", jerr.text);
        json_decref(rec);
        if (r < 0) {
            rc = tern_err_set(err, "%s line %zu: %s; move %s and %s away, and this host takes "
                              "the state from the other hosts",
                              journal_path, lineno, e2.msg, snapshot_path, journal_path);
            break;
        }
        records += r == 0;
        off += ll + 1;
    }
    free(buf);
    if (rc < 0) {
        cl_state_free(s);
        return -1;
    }
    /* Hand the loaded state over by moving its contents. */
    json_t *doc = cl_state_to_json(s);
    int fr = doc ? cl_state_from_json(into, doc, err) : tern_err_set(err, "out of memory");
    json_decref(doc);
    cl_state_free(s);
    if (fr < 0)
        return tern_err_prefix(err, "loading the cluster state");
    if (loaded)
        *loaded = (lr == 1 && records == 0) ? 0 : 1;
    return 0;
}

/* ---- the worker ---- */

static void publish_failure(struct state_store *st, const char *what, int e)
{
    snprintf(st->failure, sizeof(st->failure), "%s: %s", what, strerror(e));
    st->failure_new = true;
}

static void signal_loop(struct state_store *st)
{
    uint64_t one = 1;
    ssize_t w = write(st->event_fd, &one, sizeof(one));
    (void)w; /* a full counter still wakes the loop */
}

static void *worker(void *arg)
{
    struct state_store *st = arg;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        while (!st->head && !st->stop)
            pthread_cond_wait(&st->cv, &st->mu);
        if (!st->head && st->stop)
            break;
        struct op *batch = st->head;
        st->head = st->tail = NULL;
        st->busy = true;
        bool broken = st->broken;
        pthread_mutex_unlock(&st->mu);

        uint64_t version = 0, gen = 0, appends = 0, snapshots = 0, bytes = 0;
        bool wrote = false, pending_sync = false;
        char what[TERN_ERR_MAX] = "";
        int err_no = 0;
        size_t freed = 0;
        for (struct op *o = batch; o;) {
            if (o->kind == OP_APPEND && !broken) {
                if (tern_write_all(st->journal_fd, o->data, o->len) < 0) {
                    err_no = errno;
                    snprintf(what, sizeof(what), "writing %.900s", st->journal_path);
                    broken = true;
                } else {
                    pending_sync = true;
                    version = o->version;
                    gen = o->gen;
                    appends++;
                    bytes += o->len;
                }
            } else if (o->kind == OP_SNAPSHOT) {
                struct tern_err e = {0};
                if (pending_sync && fdatasync(st->journal_fd) < 0) {
                    err_no = errno;
                    snprintf(what, sizeof(what), "syncing %.900s", st->journal_path);
                    broken = true;
                }
                pending_sync = false;
                if (tern_write_file_atomic(st->snap_path, o->data, o->len, 0600, &e) < 0) {
                    err_no = EIO;
                    snprintf(what, sizeof(what), "%s", e.msg);
                } else if (ftruncate(st->journal_fd, 0) < 0 || fdatasync(st->journal_fd) < 0) {
                    err_no = errno;
                    snprintf(what, sizeof(what), "emptying %.900s after a snapshot", st->journal_path);
                    broken = true; /* the next snapshot tries again */
                } else {
                    broken = false;
                    version = o->version;
                    gen = o->gen;
                    wrote = true;
                    snapshots++;
                }
            }
            struct op *next = o->next;
            freed += o->len;
            free(o->data);
            free(o);
            o = next;
        }
        if (pending_sync) {
            if (fdatasync(st->journal_fd) < 0) {
                err_no = errno;
                snprintf(what, sizeof(what), "syncing %.900s", st->journal_path);
                broken = true;
            } else {
                wrote = true;
            }
        }

        pthread_mutex_lock(&st->mu);
        st->queued_bytes -= freed;
        st->broken = broken;
        st->stats.appends += appends;
        st->stats.batches++;
        st->stats.snapshots += snapshots;
        st->stats.journal_bytes += bytes;
        if (wrote && !broken && version) {
            st->durable_version = version;
            st->durable_gen = gen;
            st->durable_new = true;
        }
        if (err_no)
            publish_failure(st, what, err_no);
        st->busy = false;
        if (!st->head)
            pthread_cond_broadcast(&st->idle_cv);
        signal_loop(st);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

static void enqueue(struct state_store *st, enum op_kind kind, char *data, size_t len,
                    uint64_t version)
{
    struct op *o = calloc(1, sizeof(*o));
    if (!o) {
        free(data);
        st->dropping = true;
        return;
    }
    *o = (struct op){.kind = kind, .data = data, .len = len, .version = version, .gen = st->gen};
    pthread_mutex_lock(&st->mu);
    if (st->tail)
        st->tail->next = o;
    else
        st->head = o;
    st->tail = o;
    st->queued_bytes += len;
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

static void enqueue_snapshot(struct state_store *st, const struct cl_state *state)
{
    size_t len;
    struct tern_err err;
    char *text = cl_state_file_text(state, &len, &err);
    if (!text) {
        st->dropping = true; /* try again at the next event */
        return;
    }
    st->dropping = false;
    st->journal_since_snapshot = 0;
    enqueue(st, OP_SNAPSHOT, text, len, cl_state_version(state));
}

void state_store_event(struct state_store *st, const struct replica_event *ev,
                       const struct cl_state *state)
{
    if (ev->kind == REPLICA_EV_INSTALL) {
        st->gen++;
        enqueue_snapshot(st, state);
        return;
    }
    pthread_mutex_lock(&st->mu);
    size_t queued = st->queued_bytes;
    bool broken = st->broken;
    pthread_mutex_unlock(&st->mu);
    if (queued > MAX_QUEUED_BYTES)
        st->dropping = true;
    if (st->dropping || broken || st->journal_since_snapshot > SNAPSHOT_AFTER_BYTES) {
        /* Records were (or would be) lost, or the journal is long: a whole
         * snapshot replaces them, once the disk has caught up. */
        if (queued <= MAX_QUEUED_BYTES / 2)
            enqueue_snapshot(st, state);
        else
            st->dropping = true;
        return;
    }
    json_t *rec;
    if (ev->kind == REPLICA_EV_MESSAGE)
        rec = json_pack("{s:I, s:I, s:O}", "v", (json_int_t)ev->version, "s",
                        (json_int_t)ev->sender, "m", (json_t *)ev->msg);
    else
        rec = json_pack("{s:I, s:o*}", "v", (json_int_t)ev->version, "c",
                        config_record(ev->config));
    size_t len = 0;
    char *line = rec ? record_line(rec, &len) : NULL;
    if (!line) {
        st->dropping = true;
        return;
    }
    st->journal_since_snapshot += len;
    enqueue(st, OP_APPEND, line, len, ev->version);
}

int state_store_fd(const struct state_store *st)
{
    return st->event_fd;
}

bool state_store_durable(struct state_store *st, uint64_t *version, char *failure,
                         size_t failure_len)
{
    uint64_t n;
    while (read(st->event_fd, &n, sizeof(n)) == (ssize_t)sizeof(n)) {
    }
    pthread_mutex_lock(&st->mu);
    bool fresh = st->durable_new && st->durable_gen == st->gen;
    st->durable_new = false;
    *version = st->durable_version;
    if (st->failure_new && failure && failure_len) {
        snprintf(failure, failure_len, "%s", st->failure);
        st->dropping = true; /* the next event writes a snapshot instead */
    } else if (failure && failure_len) {
        failure[0] = '\0';
    }
    st->failure_new = false;
    pthread_mutex_unlock(&st->mu);
    return fresh;
}

static void wait_idle(struct state_store *st)
{
    pthread_mutex_lock(&st->mu);
    while (st->head || st->busy)
        pthread_cond_wait(&st->idle_cv, &st->mu);
    pthread_mutex_unlock(&st->mu);
}

int state_store_reload(struct state_store *st, struct cl_state *into, struct tern_err *err)
{
    wait_idle(st);
    st->gen++;
    st->dropping = false;
    st->journal_since_snapshot = 0;
    int loaded;
    return state_store_load_files(st->snap_path, st->journal_path, into, NULL, &loaded, err);
}

struct state_store_stats state_store_stats(const struct state_store *st)
{
    struct state_store *m = (struct state_store *)st;
    pthread_mutex_lock(&m->mu);
    struct state_store_stats s = m->stats;
    pthread_mutex_unlock(&m->mu);
    return s;
}

int state_store_open(struct state_store **out, const char *state_dir, struct cl_state *into,
                     int *loaded, struct tern_err *err)
{
    *out = NULL;
    struct state_store *st = calloc(1, sizeof(*st));
    if (!st)
        return tern_err_set(err, "out of memory");
    st->journal_fd = st->event_fd = -1;
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
    pthread_cond_init(&st->idle_cv, NULL);
    if ((size_t)snprintf(st->snap_path, sizeof(st->snap_path), "%s/" SNAPSHOT_NAME, state_dir) >=
            sizeof(st->snap_path) ||
        (size_t)snprintf(st->journal_path, sizeof(st->journal_path), "%s/" JOURNAL_NAME,
                         state_dir) >= sizeof(st->journal_path)) {
        state_store_close(st);
        return tern_err_set(err, "state_dir %s is too long", state_dir);
    }
    bool torn = false;
    if (state_store_load_files(st->snap_path, st->journal_path, into, &torn, loaded, err) < 0) {
        state_store_close(st);
        return -1;
    }
    st->journal_fd = open(st->journal_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (st->journal_fd < 0) {
        int e = errno;
        state_store_close(st);
        return tern_err_errno(err, e, "cannot open the cluster state's journal %s", st->journal_path);
    }
    st->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (st->event_fd < 0) {
        int e = errno;
        state_store_close(st);
        return tern_err_errno(err, e, "eventfd");
    }
    /* The writer takes no signal of the process: a SIGTERM the kernel gave
     * it would end ternd at once (the default action), not through the
     * loop's orderly stop. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&st->thread, NULL, worker, st);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        state_store_close(st);
        return tern_err_errno(err, rc, "starting the state writer thread");
    }
    st->thread_started = true;
    /* A cut last line (or records of an older snapshot) stays in the file
     * until the next snapshot: write one now, so the journal is clean and
     * every later record follows the state as loaded. */
    if (torn || *loaded)
        enqueue_snapshot(st, into);
    *out = st;
    return 0;
}

void state_store_close(struct state_store *st)
{
    if (!st)
        return;
    if (st->thread_started) {
        pthread_mutex_lock(&st->mu);
        st->stop = true;
        pthread_cond_signal(&st->cv);
        pthread_mutex_unlock(&st->mu);
        pthread_join(st->thread, NULL);
    }
    for (struct op *o = st->head; o;) {
        struct op *n = o->next;
        free(o->data);
        free(o);
        o = n;
    }
    if (st->journal_fd >= 0)
        close(st->journal_fd);
    if (st->event_fd >= 0)
        close(st->event_fd);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
    pthread_cond_destroy(&st->idle_cv);
    free(st);
}
