/* The receiving side of a live migration (`tern-vmm run --incoming`):
 * accept the one connection set bearing our token, check the peer's HELLO
 * against this VM, write pages straight into guest RAM, apply the VM state,
 * answer READY and wait for COMMIT. Only then may the caller run the
 * guest. Any failure before that leaves nothing running: the caller exits. */
#include "migrate.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../node-vmm/vm.h"
#include "../node-vmm/vm_state.h"
#include "../proto/migration.h"
#include "local_hello.h"
#include "page_codec.h"
#include "session.h"
#include "stream_io.h"

#define ACCEPT_TIMEOUT_MS (10 * 60 * 1000) /* the source may start minutes later */
#define IDLE_TIMEOUT_MS 30000             /* silence from a live source */
#define COMMIT_TIMEOUT_MS 30000

struct mig_incoming {
    struct vm *vm;
    struct mig_tls *tls;
    struct mig_listener *listener;
    struct mig_session *session;
    unsigned n;
    uint64_t nr_pages;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    int64_t final_round;        /* -1 until END says how many rounds */
    int64_t last_round[MIG_MAX_STREAMS];
    bool stream_done[MIG_MAX_STREAMS];
    atomic_bool failed;
    struct tern_err err;        /* first failure */
    uint64_t pages;
    struct stream_ctx {
        struct mig_incoming *in;
        unsigned index;
        pthread_t thread;
    } streams[MIG_MAX_STREAMS];
    unsigned threads;           /* stream threads started (streams 1..threads) */
    double apply_ms, commit_wait_ms; /* for the log: where the pause goes */
    uint64_t end_pages;              /* pages the source says it sent */
};

static void fail_with(struct mig_incoming *in, const struct tern_err *e)
{
    pthread_mutex_lock(&in->lock);
    if (!atomic_load(&in->failed)) {
        in->err = *e;
        atomic_store(&in->failed, true);
    }
    pthread_cond_broadcast(&in->cond);
    pthread_mutex_unlock(&in->lock);
    mig_session_abort(in->session); /* unblock every stream */
}

static int apply_pages(struct mig_incoming *in, const struct rec_header *h, struct rec_reader *r,
                       struct tern_err *err)
{
    struct mig_pages_iter it;
    if (mig_pages_iter_init(&it, h, r, in->nr_pages, err) < 0)
        return -1;
    struct mig_page pg;
    uint64_t n = 0;
    while (mig_pages_iter_next(&it, &pg)) {
        uint8_t *dst = in->vm->mem.host_base + pg.index * MIG_PAGE_SIZE;
        if (page_decode(pg.enc, pg.data, pg.len, dst, err) < 0)
            return tern_err_prefix(err, "page %llu", (unsigned long long)pg.index);
        n++;
    }
    pthread_mutex_lock(&in->lock);
    in->pages += n;
    pthread_mutex_unlock(&in->lock);
    return 0;
}

/* Handles the records every stream carries; returns 1 if the record was
 * one of them, 0 if the caller must handle it, -1 on error. */
static int common_record(struct mig_incoming *in, unsigned s, const struct rec_header *h,
                         struct rec_reader *r, struct tern_err *err)
{
    switch (h->type) {
    case REC_TYPE_MIG_PAGES:
        if (mig_fault("dst-exit-in-round"))
            _exit(98);
        return apply_pages(in, h, r, err) < 0 ? -1 : 1;
    case REC_TYPE_MIG_ROUND_END: {
        struct mig_round_end re;
        if (mig_round_end_decode(h, r, &re, err) < 0)
            return -1;
        if (re.stream != s)
            return tern_err_set(err, "stream %u got the round end of stream %u", s, re.stream);
        pthread_mutex_lock(&in->lock);
        in->last_round[s] = re.round;
        pthread_cond_broadcast(&in->cond);
        pthread_mutex_unlock(&in->lock);
        return 1;
    }
    case REC_TYPE_MIG_ERROR: {
        struct mig_error e;
        if (mig_error_decode(h, r, &e, err) < 0)
            return -1;
        return tern_err_set(err, "the source gave up: %s", e.msg);
    }
    default:
        return 0;
    }
}

/* Streams 1..N-1 carry pages and round ends only. */
static void *stream_thread(void *arg)
{
    struct stream_ctx *c = arg;
    struct mig_incoming *in = c->in;
    struct mig_channel *ch = mig_session_channel(in->session, (int)c->index);
    struct mig_rxbuf rx = {0};
    struct tern_err err = {{0}};
    for (;;) {
        pthread_mutex_lock(&in->lock);
        bool done = in->final_round >= 0 && in->last_round[c->index] >= in->final_round;
        pthread_mutex_unlock(&in->lock);
        if (done || atomic_load(&in->failed))
            break;
        /* Blocking receive: once this stream's last round is in, nothing
         * more comes and the session abort at the end releases it. */
        struct rec_header h;
        struct rec_reader r;
        if (mig_recv_record(ch, &rx, -1, &h, &r, &err) < 0 ||
            common_record(in, c->index, &h, &r, &err) < 0) {
            pthread_mutex_lock(&in->lock);
            done = in->final_round >= 0 && in->last_round[c->index] >= in->final_round;
            pthread_mutex_unlock(&in->lock);
            if (!done) { /* not the abort at the end */
                tern_err_prefix(&err, "stream %u", c->index);
                fail_with(in, &err);
            }
            break;
        }
    }
    mig_rxbuf_free(&rx);
    return NULL;
}

static int send_rec(struct mig_channel *ch, void (*encode)(struct rec_buf *), struct tern_err *err)
{
    struct rec_buf b;
    rec_buf_init(&b);
    encode(&b);
    int rc = mig_send_recbuf(ch, &b, err);
    rec_buf_free(&b);
    return rc;
}

static void send_error(struct mig_channel *ch, uint32_t code, const char *msg)
{
    struct rec_buf b;
    struct tern_err ignored;
    rec_buf_init(&b);
    mig_error_encode(&b, code, msg);
    (void)mig_send_recbuf(ch, &b, &ignored);
    rec_buf_free(&b);
}

static int check_hellos(struct mig_incoming *in, struct mig_rxbuf *rx, struct tern_err *err)
{
    struct mig_hello first = {0};
    for (unsigned i = 0; i < in->n; i++) {
        struct mig_channel *ch = mig_session_channel(in->session, (int)i);
        struct rec_header h;
        struct rec_reader r;
        struct mig_hello peer, local;
        if (mig_recv_record(ch, rx, IDLE_TIMEOUT_MS, &h, &r, err) < 0)
            return -1;
        if (h.type != REC_TYPE_MIG_HELLO)
            return tern_err_set(err, "expected HELLO, got %s", mig_record_name(h.type));
        if (mig_hello_decode(&h, &r, &peer, err) < 0)
            return -1;
        if (mig_local_hello(in->vm, (uint16_t)i, (uint16_t)in->n, peer.session, &local, err) < 0)
            return -1;
        if (i > 0) {
            local.nr_streams = first.nr_streams;
            local.session = first.session;
        } else {
            local.nr_streams = 0; /* checked against the session's count below */
        }
        uint32_t code;
        if (mig_hello_check(&local, &peer, &code, err) < 0) {
            send_error(ch, code, err->msg);
            return tern_err_prefix(err, "the source's VM does not match this one");
        }
        if (peer.nr_streams != in->n || peer.stream != i) {
            send_error(ch, MIG_ERR_STREAMS, "stream numbering does not match the connection set");
            return tern_err_set(err, "HELLO of stream %u says %u/%u", i, peer.stream, peer.nr_streams);
        }
        if (i == 0)
            first = peer;
        struct rec_buf b;
        rec_buf_init(&b);
        local.nr_streams = (uint16_t)in->n;
        local.stream = (uint16_t)i;
        mig_hello_encode(&b, &local);
        int rc = mig_send_recbuf(ch, &b, err);
        rec_buf_free(&b);
        if (rc < 0)
            return -1;
    }
    if (mig_fault("dst-exit-after-hello"))
        _exit(97);
    return 0;
}

/* Stream 0: pages and round ends like the others, then STATE and END. */
static int receive_main_stream(struct mig_incoming *in, struct mig_rxbuf *rx, uint8_t **state,
                               size_t *state_len, struct tern_err *err)
{
    struct mig_channel *ch = mig_session_channel(in->session, 0);
    for (;;) {
        if (atomic_load(&in->failed)) {
            *err = in->err;
            return -1;
        }
        /* A failing stream thread aborts the session, which ends this
         * receive too. */
        struct rec_header h;
        struct rec_reader r;
        if (mig_recv_record(ch, rx, IDLE_TIMEOUT_MS, &h, &r, err) < 0) {
            if (atomic_load(&in->failed))
                *err = in->err;
            return -1;
        }
        int rc = common_record(in, 0, &h, &r, err);
        if (rc < 0)
            return -1;
        if (rc == 1)
            continue;
        if (h.type == REC_TYPE_MIG_STATE) {
            const uint8_t *s;
            size_t len;
            if (mig_state_decode(&h, &r, &s, &len, err) < 0)
                return -1;
            free(*state);
            *state = malloc(len ? len : 1);
            if (!*state)
                return tern_err_set(err, "out of memory for the VM state");
            memcpy(*state, s, len);
            *state_len = len;
            continue;
        }
        if (h.type == REC_TYPE_MIG_END) {
            struct mig_end end;
            if (mig_end_decode(&h, &r, &end, err) < 0)
                return -1;
            if (!*state)
                return tern_err_set(err, "END before the VM state");
            if (end.rounds == 0)
                return tern_err_set(err, "END with no rounds");
            in->end_pages = end.pages;
            pthread_mutex_lock(&in->lock);
            in->final_round = (int64_t)end.rounds - 1;
            pthread_cond_broadcast(&in->cond);
            /* Every stream must have finished the last round. */
            for (;;) {
                bool all = true;
                for (unsigned i = 0; i < in->n; i++)
                    all = all && in->last_round[i] >= in->final_round;
                if (all || atomic_load(&in->failed))
                    break;
                pthread_cond_wait(&in->cond, &in->lock);
            }
            pthread_mutex_unlock(&in->lock);
            if (atomic_load(&in->failed)) {
                *err = in->err;
                return -1;
            }
            return 0;
        }
        return tern_err_set(err, "unexpected %s on stream 0", mig_record_name(h.type));
    }
}

static int apply_state(struct vm *vm, const uint8_t *state, size_t len, struct tern_err *err)
{
    struct vm_state_restore ctx = {0};
    struct rec_reader r;
    rec_reader_init(&r, state, len);
    for (;;) {
        struct rec_header h;
        struct rec_reader p;
        int rc = rec_next(&r, &h, &p, err);
        if (rc < 0)
            return -1;
        if (rc == 0)
            break;
        rc = vm_state_apply(vm, &ctx, &h, &p, err);
        if (rc < 0)
            return -1;
        if (rc == 0)
            return tern_err_set(err, "unknown state record type 0x%x", h.type);
    }
    return vm_state_restore_finish(vm, &ctx, err);
}

static void incoming_free(struct mig_incoming *in);

int mig_incoming_receive(struct mig_incoming **out, struct vm *vm, const struct run_options *o,
                         struct tern_err *err)
{
    struct mig_incoming *in = calloc(1, sizeof(*in));
    if (!in)
        return tern_err_set(err, "out of memory");
    in->vm = vm;
    in->final_round = -1;
    for (unsigned i = 0; i < MIG_MAX_STREAMS; i++)
        in->last_round[i] = -1;
    in->nr_pages = vm->mem.size / MIG_PAGE_SIZE;
    pthread_mutex_init(&in->lock, NULL);
    pthread_cond_init(&in->cond, NULL);
    struct mig_rxbuf rx = {0};
    uint8_t *state = NULL;
    size_t state_len = 0;
    int rc = -1;

    in->session = mig_session_new();
    if (!in->session) {
        tern_err_set(err, "out of memory");
        goto out;
    }
    if (mig_tls_load(&in->tls, o->tls_dir, err) < 0 ||
        mig_listen(&in->listener, in->tls, o->incoming_at.host, o->incoming_at.port, err) < 0)
        goto out;
    /* Only now: whoever reads this may connect at once. */
    fprintf(stderr, "tern-vmm: waiting for a migration on %s:%u\n", o->incoming_at.host,
            o->incoming_at.port);
    if (mig_session_accept(in->session, in->listener, o->token, ACCEPT_TIMEOUT_MS, err) < 0)
        goto out;
    mig_listener_close(in->listener);
    in->listener = NULL;
    in->n = (unsigned)mig_session_streams(in->session);
    if (in->n < 1 || in->n > MIG_MAX_STREAMS) {
        tern_err_set(err, "the source opened %u streams (1 to %d)", in->n, MIG_MAX_STREAMS);
        goto out;
    }
    if (check_hellos(in, &rx, err) < 0)
        goto out;
    for (unsigned i = 1; i < in->n; i++) {
        in->streams[i] = (struct stream_ctx){.in = in, .index = i};
        if (pthread_create(&in->streams[i].thread, NULL, stream_thread, &in->streams[i]) != 0) {
            tern_err_set(err, "cannot start a receive thread");
            fail_with(in, err);
            break;
        }
        in->threads = i;
    }
    /* The other streams' threads finish on their own once they have seen
     * the last round (they are joined when this is freed, off the pause's
     * critical path). */
    int main_rc = receive_main_stream(in, &rx, &state, &state_len, err);
    if (main_rc < 0)
        fail_with(in, err);
    if (main_rc < 0 || atomic_load(&in->failed)) {
        if (main_rc == 0)
            *err = in->err;
        goto out;
    }
    struct mig_channel *ch0 = mig_session_channel(in->session, 0);
    if (in->pages != in->end_pages) {
        tern_err_set(err, "received %llu pages, the source sent %llu",
                     (unsigned long long)in->pages, (unsigned long long)in->end_pages);
        send_error(ch0, MIG_ERR_PROTOCOL, err->msg);
        goto out;
    }
    struct timespec ta, tb;
    clock_gettime(CLOCK_MONOTONIC, &ta);
    if (apply_state(vm, state, state_len, err) < 0) {
        send_error(ch0, MIG_ERR_STATE, err->msg);
        tern_err_prefix(err, "applying the VM state");
        goto out;
    }
    clock_gettime(CLOCK_MONOTONIC, &tb);
    in->apply_ms = (double)(tb.tv_sec - ta.tv_sec) * 1e3 + (double)(tb.tv_nsec - ta.tv_nsec) / 1e6;
    if (mig_fault("dst-exit-before-ready"))
        _exit(96);
    struct rec_buf b;
    rec_buf_init(&b);
    struct mig_ready ready = {.pages = in->pages};
    mig_ready_encode(&b, &ready);
    int sent = mig_send_recbuf(ch0, &b, err);
    rec_buf_free(&b);
    if (sent < 0)
        goto out;
    /* The source decides. Without COMMIT, the guest must not run here. */
    struct rec_header h;
    struct rec_reader r;
    if (mig_recv_record(ch0, &rx, COMMIT_TIMEOUT_MS, &h, &r, err) < 0) {
        tern_err_prefix(err, "waiting for COMMIT");
        goto out;
    }
    if (h.type != REC_TYPE_MIG_COMMIT || mig_commit_decode(&h, &r, err) < 0) {
        if (h.type == REC_TYPE_MIG_ERROR) {
            struct mig_error e;
            if (mig_error_decode(&h, &r, &e, err) == 0)
                tern_err_set(err, "the source gave up: %s", e.msg);
        } else if (h.type != REC_TYPE_MIG_COMMIT) {
            tern_err_set(err, "expected COMMIT, got %s", mig_record_name(h.type));
        }
        goto out;
    }
    if (mig_fault("dst-exit-after-commit"))
        _exit(95);
    clock_gettime(CLOCK_MONOTONIC, &ta);
    in->commit_wait_ms = (double)(ta.tv_sec - tb.tv_sec) * 1e3 + (double)(ta.tv_nsec - tb.tv_nsec) / 1e6;
    rc = 0;
out:
    free(state);
    mig_rxbuf_free(&rx);
    if (rc < 0) {
        incoming_free(in); /* no RUNNING: the guest does not run here */
        return -1;
    }
    *out = in;
    return 0;
}

void mig_incoming_running(struct mig_incoming *in)
{
    if (!in)
        return;
    struct mig_channel *ch0 = mig_session_channel(in->session, 0);
    struct tern_err ignored;
    if (ch0)
        (void)send_rec(ch0, mig_running_encode, &ignored);
    fprintf(stderr, "tern-vmm: migration: state applied in %.1f ms, COMMIT after %.1f ms\n",
            in->apply_ms, in->commit_wait_ms);
    incoming_free(in);
}

static void incoming_free(struct mig_incoming *in)
{
    if (in->threads) {
        mig_session_abort(in->session); /* releases the blocked stream threads */
        for (unsigned i = 1; i <= in->threads; i++)
            pthread_join(in->streams[i].thread, NULL);
    }
    if (in->listener)
        mig_listener_close(in->listener);
    mig_session_free(in->session);
    mig_tls_free(in->tls);
    pthread_cond_destroy(&in->cond);
    pthread_mutex_destroy(&in->lock);
    free(in);
}
