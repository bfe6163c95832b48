/* The receiving side of a live migration (`tern-vmm run --incoming`):
 * accept the one connection set bearing our token, check the peer's HELLO
 * against this VM, write pages straight into guest RAM, apply the VM state,
 * answer READY and wait for the decision (COMMIT, or with the commit gate
 * only the agent's migrate-commit: a COMMIT from the source is then noted,
 * not obeyed, since the source's side may have applied the commit in a
 * partition this host's agent never saw). Only then may the caller run the guest. Any
 * failure before that leaves nothing running: the caller exits.
 *
 * One thread (receive_thread) does all of that and drives stream 0; streams
 * 1..N-1 have a thread each. The main loop polls mig_incoming_fd and
 * serves the control socket meanwhile (status, commit, abort). */
#include "migrate.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "../node-vmm/vm.h"
#include "../node-vmm/vm_state.h"
#include "../proto/migration.h"
#include "local_hello.h"
#include "page_codec.h"
#include "session.h"
#include "stream_io.h"
#include "../common/text.h"

#define ACCEPT_TIMEOUT_MS (10 * 60 * 1000) /* the source may start minutes later */
#define IDLE_TIMEOUT_MS 30000             /* silence from a live source */
#define COMMIT_TIMEOUT_MS 30000           /* without the commit gate */

enum in_phase { PH_WAITING, PH_RECEIVING, PH_READY, PH_COMMITTING, PH_FAILED };
static const char *const phase_names[] = {"waiting", "receiving", "ready", "committing", "failed"};

enum in_decision { DEC_NONE, DEC_COMMIT, DEC_ABORT };

struct mig_incoming {
    struct vm *vm;
    bool gate;
    struct mig_tls *tls;
    struct mig_listener *listener;
    struct mig_session *session;
    char token[MIG_TOKEN_MAX + 1];
    unsigned n;
    uint64_t nr_pages;
    pthread_t thread; /* receive_thread */
    bool thread_started;
    int done_fd;      /* eventfd: the outcome is known */
    int wake_fd;      /* eventfd: a decision for receive_thread */

    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t cond;
    enum in_phase phase;
    enum in_decision decision;
    char decided_by[16];        /* "source" or "agent" */
    bool source_committed;      /* COMMIT came from the source (with the gate: noted only) */
    char abort_why[TERN_ERR_MAX];
    enum mig_incoming_outcome outcome;
    char from[80];              /* the source's address */
    char link_error[TERN_ERR_MAX];
    int64_t final_round;        /* -1 until END says how many rounds */
    int64_t last_round[MIG_MAX_STREAMS];
    uint32_t round;             /* the round being received */
    bool stream_done[MIG_MAX_STREAMS];
    atomic_bool failed;
    struct tern_err err;        /* first failure */
    uint64_t pages;
    uint64_t bytes;             /* record bytes received, all streams */
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

static void count_record(struct mig_incoming *in, const struct rec_header *h)
{
    pthread_mutex_lock(&in->lock);
    in->bytes += REC_HEADER_SIZE + (uint64_t)h->length;
    pthread_mutex_unlock(&in->lock);
}

/* A run of consecutive RAW pages, written with one pwritev. */
#define RUN_MAX 256 /* MIG_PAGES_MAX_COUNT: a whole batch */

struct page_run {
    uint64_t first;
    int n;
    bool zero;  /* a run of ZERO pages (no iov) */
    bool map;   /* map the written pages here too (see apply_pages) */
    struct iovec iov[RUN_MAX];
};

/* Writes RAW pages into the memfd rather than through the mapping: a page
 * the destination never had (all of them, in round 0) is then allocated
 * without a page fault and without being cleared first (shmem skips the
 * clearing for a write of the whole page), and a run of pages costs one
 * system call. The mapping sees the same page cache. */
static int flush_run(struct mig_incoming *in, struct page_run *run, struct tern_err *err)
{
    if (run->zero) {
        /* Zero pages become holes: nothing to do where there is no page
         * yet (round 0), and no memory held for them. */
        if (fallocate(in->vm->mem.memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                      (off_t)(run->first * MIG_PAGE_SIZE), (off_t)run->n * MIG_PAGE_SIZE) < 0)
            return tern_err_errno(err, errno, "zeroing %d pages at page %llu of guest RAM",
                                  run->n, (unsigned long long)run->first);
        run->n = 0;
        return 0;
    }
    int done = 0;
    off_t off = (off_t)(run->first * MIG_PAGE_SIZE);
    while (done < run->n) {
        ssize_t w = pwritev(in->vm->mem.memfd, run->iov + done, run->n - done, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return tern_err_errno(err, w < 0 ? errno : EIO, "writing %d pages at page %llu into "
                                  "guest RAM", run->n - done, (unsigned long long)run->first);
        /* Whole pages are always taken by shmem; cope with less anyway. */
        off += w;
        while (w > 0) {
            size_t part = (size_t)w < run->iov[done].iov_len ? (size_t)w : run->iov[done].iov_len;
            run->iov[done].iov_base = (uint8_t *)run->iov[done].iov_base + part;
            run->iov[done].iov_len -= part;
            w -= (ssize_t)part;
            if (run->iov[done].iov_len == 0)
                done++;
        }
    }
    if (run->map) /* best effort: without it the first access maps the page */
        (void)madvise(in->vm->mem.host_base + run->first * MIG_PAGE_SIZE,
                      (size_t)run->n * MIG_PAGE_SIZE, MADV_POPULATE_WRITE);
    run->n = 0;
    return 0;
}

/* Applies a PAGES record received on stream s. Pages written with pwritev
 * are not mapped in this process, so the guest's first touch of each, once
 * it runs here, costs a fault in KVM; mapping them costs a third of the
 * write. So only the pages of rounds after the first are mapped as they
 * arrive: the ones the guest was writing, likely the first it touches
 * after the handover; round 0's bulk is left to fault in when used. */
static int apply_pages(struct mig_incoming *in, unsigned s, const struct rec_header *h,
                       struct rec_reader *r, struct tern_err *err)
{
    struct mig_pages_iter it;
    if (mig_pages_iter_init(&it, h, r, in->nr_pages, err) < 0)
        return -1;
    struct mig_page pg;
    uint64_t n = 0;
    struct page_run run;
    run.n = 0;
    run.zero = false;
    run.map = in->last_round[s] >= 0; /* written by this stream's thread only */
    bool use_fd = in->vm->mem.memfd >= 0;
    while (mig_pages_iter_next(&it, &pg)) {
        n++;
        if (use_fd && (pg.enc == MIG_PAGE_RAW || pg.enc == MIG_PAGE_ZERO)) {
            bool zero = pg.enc == MIG_PAGE_ZERO;
            if (run.n && (pg.index != run.first + (uint64_t)run.n || run.n == RUN_MAX ||
                          run.zero != zero) &&
                flush_run(in, &run, err) < 0)
                return -1;
            if (!run.n) {
                run.first = pg.index;
                run.zero = zero;
            }
            run.iov[run.n++] = (struct iovec){.iov_base = (void *)pg.data, .iov_len = MIG_PAGE_SIZE};
            continue;
        }
        /* Other encodings work on the page in place, after what came
         * before it. */
        if (run.n && flush_run(in, &run, err) < 0)
            return -1;
        uint8_t *dst = in->vm->mem.host_base + pg.index * MIG_PAGE_SIZE;
        if (page_decode(pg.enc, pg.data, pg.len, dst, err) < 0)
            return tern_err_prefix(err, "page %llu", (unsigned long long)pg.index);
    }
    if (run.n && flush_run(in, &run, err) < 0)
        return -1;
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
    count_record(in, h);
    switch (h->type) {
    case REC_TYPE_MIG_PAGES:
        if (mig_fault("dst-exit-in-round"))
            _exit(98);
        return apply_pages(in, s, h, r, err) < 0 ? -1 : 1;
    case REC_TYPE_MIG_ROUND_END: {
        struct mig_round_end re;
        if (mig_round_end_decode(h, r, &re, err) < 0)
            return -1;
        if (re.stream != s)
            return tern_err_set(err, "stream %u got the round end of stream %u", s, re.stream);
        pthread_mutex_lock(&in->lock);
        in->last_round[s] = re.round;
        if (re.round + 1 > in->round)
            in->round = re.round + 1;
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
    char name[16];
    snprintf(name, sizeof(name), "mig-recv%u", c->index);
    pthread_setname_np(pthread_self(), name);
    struct mig_channel *ch = mig_session_channel(in->session, (int)c->index);
    struct mig_rxbuf rx = {0};
    struct tern_err err = {0};
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
        count_record(in, &h);
        if (h.type != REC_TYPE_MIG_HELLO)
            return tern_err_set(err, "expected HELLO, got %s", mig_record_name(h.type));
        if (mig_hello_decode(&h, &r, &peer, err) < 0)
            return -1;
        if (mig_local_hello(in->vm, (uint16_t)i, (uint16_t)in->n, peer.session, &local, err) < 0)
            return -1;
        local.commit_gate = in->gate;
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

static double ms_between(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

static void set_phase(struct mig_incoming *in, enum in_phase p)
{
    pthread_mutex_lock(&in->lock);
    in->phase = p;
    pthread_mutex_unlock(&in->lock);
}

static void eventfd_signal(int fd)
{
    uint64_t one = 1;
    if (write(fd, &one, sizeof(one)) < 0) {
        /* Only on counter overflow: it is readable already. */
    }
}

static void eventfd_drain(int fd)
{
    uint64_t v;
    if (read(fd, &v, sizeof(v)) < 0) {
        /* EAGAIN: nothing pending; the decision is read under the lock. */
    }
}

/* After READY: waits for COMMIT from the source or the agent's decision.
 * Returns 0 to run the guest here, -1 (err set) not to. Without the gate,
 * COMMIT must come within COMMIT_TIMEOUT_MS on a live connection. With it,
 * a lost connection only means the agent decides: the wait goes on, with
 * no time limit. An ERROR from the source always ends it: the source has
 * taken the guest back. */
static int await_commit(struct mig_incoming *in, struct mig_rxbuf *rx, struct tern_err *err)
{
    struct mig_channel *ch0 = mig_session_channel(in->session, 0);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool link = true;
    for (;;) {
        pthread_mutex_lock(&in->lock);
        enum in_decision d = in->decision;
        char why[TERN_ERR_MAX];
        snprintf(why, sizeof(why), "%s", in->abort_why);
        if (d == DEC_COMMIT)
            in->phase = PH_COMMITTING;
        pthread_mutex_unlock(&in->lock);
        if (d == DEC_COMMIT)
            return 0;
        if (d == DEC_ABORT) {
            if (link)
                send_error(ch0, MIG_ERR_CANCELLED, why);
            return tern_err_set(err, "%s", why);
        }
        struct tern_err e = {0};
        int r = 2;
        if (link) {
            int left = -1;
            if (!in->gate) {
                struct timespec now;
                clock_gettime(CLOCK_MONOTONIC, &now);
                double ms = COMMIT_TIMEOUT_MS - ms_between(&t0, &now);
                left = ms > 0 ? (int)ms : 0;
            }
            r = mig_channel_wait_readable_or(ch0, in->wake_fd, left, &e);
            if (r == 0)
                return tern_err_set(err, "no COMMIT from the source within %d s",
                                    COMMIT_TIMEOUT_MS / 1000);
        } else {
            struct pollfd p = {.fd = in->wake_fd, .events = POLLIN};
            while (poll(&p, 1, -1) < 0 && errno == EINTR)
                ;
        }
        if (r == 2) {
            eventfd_drain(in->wake_fd);
            continue;
        }
        if (r == 1) {
            struct rec_header h;
            struct rec_reader rd;
            if (mig_recv_record(ch0, rx, IDLE_TIMEOUT_MS, &h, &rd, &e) == 0) {
                count_record(in, &h);
                if (h.type == REC_TYPE_MIG_COMMIT && mig_commit_decode(&h, &rd, &e) == 0) {
                    if (mig_fault("dst-exit-after-commit"))
                        _exit(95);
                    pthread_mutex_lock(&in->lock);
                    if (!in->gate && in->decision == DEC_NONE) {
                        in->decision = DEC_COMMIT;
                        snprintf(in->decided_by, sizeof(in->decided_by), "source");
                    }
                    /* With the gate, the source's word is not enough: the
                     * commit may have been applied on its side of a
                     * partition only. This host's agent decides, once it
                     * has applied the commit in a quorate configuration. */
                    bool noted = in->gate && !in->source_committed;
                    in->source_committed = true;
                    pthread_mutex_unlock(&in->lock);
                    if (noted)
                        text_put_line(stderr, "tern-vmm: migration: the source committed; waiting for "
                                        "this host's agent to confirm the commit\n");
                    continue; /* the decision, whoever made it, is read above */
                }
                if (h.type == REC_TYPE_MIG_ERROR) {
                    struct mig_error me;
                    if (mig_error_decode(&h, &rd, &me, err) < 0)
                        return -1;
                    return tern_err_set(err, "the source gave up: %s", me.msg);
                }
                if (h.type != REC_TYPE_MIG_COMMIT)
                    tern_err_set(&e, "expected COMMIT, got %s",
                                 mig_record_name(h.type) ?: "an unknown record");
            }
        }
        /* The connection broke (or carried nonsense). */
        if (!in->gate) {
            *err = e;
            return tern_err_prefix(err, "waiting for COMMIT");
        }
        link = false;
        pthread_mutex_lock(&in->lock);
        snprintf(in->link_error, sizeof(in->link_error), "%s", e.msg[0] ? e.msg : "connection lost");
        pthread_mutex_unlock(&in->lock);
        text_put_line(stderr, "tern-vmm: migration: READY was sent but the source is unreachable (%s); "
                        "waiting for the agent's migrate-commit or migrate-abort\n", e.msg);
    }
}

/* Accept, receive, READY, decision. Sets the outcome and signals done_fd. */
static void *receive_thread(void *arg)
{
    struct mig_incoming *in = arg;
    pthread_setname_np(pthread_self(), "mig-recv0"); /* stream 0 and the handover */
    struct mig_rxbuf rx = {0};
    uint8_t *state = NULL;
    size_t state_len = 0;
    struct tern_err e = {0};
    struct tern_err *err = &e;
    int rc = -1;

    int accepted = mig_session_accept(in->session, in->listener, in->token, ACCEPT_TIMEOUT_MS,
                                      err);
    mig_listener_close(in->listener); /* one listener, one connection set */
    in->listener = NULL;
    if (accepted < 0)
        goto out;
    int n = mig_session_streams(in->session);
    if (n < 1 || n > (int)MIG_MAX_STREAMS) {
        tern_err_set(err, "the source opened %d streams (1 to %d)", n, MIG_MAX_STREAMS);
        goto out;
    }
    pthread_mutex_lock(&in->lock);
    in->n = (unsigned)n;
    in->phase = PH_RECEIVING;
    snprintf(in->from, sizeof(in->from), "%s",
             mig_channel_peer_addr(mig_session_channel(in->session, 0)));
    pthread_mutex_unlock(&in->lock);
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
    if (apply_state(in->vm, state, state_len, err) < 0) {
        send_error(ch0, MIG_ERR_STATE, err->msg);
        tern_err_prefix(err, "applying the VM state");
        goto out;
    }
    clock_gettime(CLOCK_MONOTONIC, &tb);
    in->apply_ms = ms_between(&ta, &tb);
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
    set_phase(in, PH_READY);
    if (await_commit(in, &rx, err) < 0)
        goto out;
    clock_gettime(CLOCK_MONOTONIC, &ta);
    in->commit_wait_ms = ms_between(&tb, &ta);
    rc = 0;
out:
    free(state);
    mig_rxbuf_free(&rx);
    pthread_mutex_lock(&in->lock);
    if (rc < 0 && in->decision == DEC_ABORT)
        tern_err_set(err, "%s", in->abort_why); /* the real reason, not "aborted" */
    if (rc < 0) {
        in->phase = PH_FAILED;
        in->err = *err;
        atomic_store(&in->failed, true);
    }
    in->outcome = rc == 0 ? MIG_INCOMING_RUN : MIG_INCOMING_FAILED;
    pthread_mutex_unlock(&in->lock);
    eventfd_signal(in->done_fd);
    return NULL;
}

static void incoming_free(struct mig_incoming *in);

int mig_incoming_start(struct mig_incoming **out, struct vm *vm, const struct run_options *o,
                       struct tern_err *err)
{
    struct mig_incoming *in = calloc(1, sizeof(*in));
    if (!in)
        return tern_err_set(err, "out of memory");
    in->vm = vm;
    in->gate = o->commit_gate;
    in->done_fd = in->wake_fd = -1;
    in->final_round = -1;
    for (unsigned i = 0; i < MIG_MAX_STREAMS; i++)
        in->last_round[i] = -1;
    in->nr_pages = vm->mem.size / MIG_PAGE_SIZE;
    pthread_mutex_init(&in->lock, NULL);
    pthread_cond_init(&in->cond, NULL);
    if (strlen(o->token) > MIG_TOKEN_MAX) {
        incoming_free(in);
        return tern_err_set(err, "--token is longer than %d characters", MIG_TOKEN_MAX);
    }
    snprintf(in->token, sizeof(in->token), "%s", o->token);
    in->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    in->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (in->done_fd < 0 || in->wake_fd < 0) {
        int e = errno;
        incoming_free(in);
        return tern_err_errno(err, e, "creating eventfds for the incoming migration");
    }
    in->session = mig_session_new();
    if (!in->session) {
        incoming_free(in);
        return tern_err_set(err, "out of memory");
    }
    if (mig_tls_load(&in->tls, o->tls_dir, err) < 0 ||
        mig_listen(&in->listener, in->tls, o->incoming_at.host, o->incoming_at.port, err) < 0) {
        incoming_free(in);
        return -1;
    }
    int e = pthread_create(&in->thread, NULL, receive_thread, in);
    if (e) {
        incoming_free(in);
        return tern_err_errno(err, e, "starting the receive thread");
    }
    in->thread_started = true;
    /* Only now: whoever reads this may connect at once. */
    text_put_line(stderr, "tern-vmm: waiting for a migration on %s:%u%s\n", o->incoming_at.host,
            o->incoming_at.port, in->gate ? " (commit gate: the agent decides the handover)" : "");
    *out = in;
    return 0;
}

int mig_incoming_fd(const struct mig_incoming *in)
{
    return in->done_fd;
}

enum mig_incoming_outcome mig_incoming_outcome(struct mig_incoming *in, struct tern_err *err)
{
    pthread_mutex_lock(&in->lock);
    enum mig_incoming_outcome o = in->outcome;
    if (o == MIG_INCOMING_FAILED && err)
        *err = in->err;
    pthread_mutex_unlock(&in->lock);
    return o;
}

json_t *mig_incoming_status(struct mig_incoming *in)
{
    pthread_mutex_lock(&in->lock);
    json_t *j = json_pack("{s:s, s:I, s:I, s:I, s:i, s:b, s:b}", "phase", phase_names[in->phase],
                          "bytes_received", (json_int_t)in->bytes, "pages_received",
                          (json_int_t)in->pages, "round", (json_int_t)in->round, "streams",
                          (int)in->n, "commit_gate", in->gate, "source_committed",
                          in->source_committed);
    if (j && in->from[0])
        json_object_set_new(j, "from", json_string(in->from));
    if (j && in->link_error[0])
        json_object_set_new(j, "link_error", json_string(in->link_error));
    if (j && in->phase == PH_FAILED)
        json_object_set_new(j, "error", json_string(in->err.msg));
    pthread_mutex_unlock(&in->lock);
    return j;
}

int mig_incoming_commit(struct mig_incoming *in, struct tern_err *err)
{
    int rc = 0;
    pthread_mutex_lock(&in->lock);
    if (!in->gate)
        rc = tern_err_set(err, "migrate-commit: this destination was started without "
                               "--commit-gate; the source decides the handover");
    else if (in->decision == DEC_COMMIT)
        rc = 0; /* already committing (COMMIT came, or a repeated request) */
    else if (in->decision == DEC_ABORT)
        rc = tern_err_set(err, "migrate-commit: the incoming migration is being aborted (%s)",
                          in->abort_why);
    else if (in->phase != PH_READY)
        rc = tern_err_set(err, "migrate-commit: the destination has not received the complete "
                               "state yet (phase %s)", phase_names[in->phase]);
    else {
        in->decision = DEC_COMMIT;
        snprintf(in->decided_by, sizeof(in->decided_by), "agent");
        eventfd_signal(in->wake_fd);
    }
    pthread_mutex_unlock(&in->lock);
    return rc;
}

int mig_incoming_abort(struct mig_incoming *in, const char *why)
{
    pthread_mutex_lock(&in->lock);
    if (in->decision == DEC_COMMIT) {
        pthread_mutex_unlock(&in->lock);
        return 1;
    }
    bool first = in->decision == DEC_NONE;
    if (first) {
        in->decision = DEC_ABORT;
        snprintf(in->abort_why, sizeof(in->abort_why), "%s", why);
    }
    /* Before READY the receive is simply cut; after it, the thread
     * sends ERROR to the source first (if it still can). */
    bool cut = in->phase != PH_READY;
    eventfd_signal(in->wake_fd);
    pthread_mutex_unlock(&in->lock);
    if (first && cut)
        mig_session_abort(in->session);
    return 0;
}

void mig_incoming_running(struct mig_incoming *in)
{
    if (!in)
        return;
    if (in->thread_started) {
        pthread_join(in->thread, NULL);
        in->thread_started = false;
    }
    struct mig_channel *ch0 = mig_session_channel(in->session, 0);
    struct tern_err ignored;
    pthread_mutex_lock(&in->lock);
    bool link = in->link_error[0] == 0;
    pthread_mutex_unlock(&in->lock);
    if (ch0 && link)
        (void)send_rec(ch0, mig_running_encode, &ignored);
    text_put_line(stderr, "tern-vmm: migration: state applied in %.1f ms, committed by the %s after "
                    "%.1f ms\n",
            in->apply_ms, in->decided_by, in->commit_wait_ms);
    incoming_free(in);
}

void mig_incoming_destroy(struct mig_incoming *in)
{
    if (!in)
        return;
    if (in->thread_started) {
        (void)mig_incoming_abort(in, "the VMM is ending");
        mig_session_abort(in->session);
        pthread_join(in->thread, NULL);
        in->thread_started = false;
    }
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
    if (in->done_fd >= 0)
        close(in->done_fd);
    if (in->wake_fd >= 0)
        close(in->wake_fd);
    pthread_cond_destroy(&in->cond);
    pthread_mutex_destroy(&in->lock);
    free(in);
}
