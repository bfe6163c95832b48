/* The sending side of a live migration: one thread per migration, started
 * by the "migrate" control command. Rounds of pre-copy (all of RAM, then
 * what was dirtied meanwhile) until the convergence policy says the rest
 * fits the pause budget; then pause, send the rest and the VM state, and
 * hand over: END -> READY -> COMMIT -> RUNNING.
 *
 * The guest keeps running here on every failure before COMMIT is sent.
 * After COMMIT, the destination owns the guest: this side ends on RUNNING,
 * and if RUNNING never comes it stays paused (never resumes) and says so.
 *
 * With the commit gate (--commit-gate, for the cluster), READY is followed
 * by phase "ready": the guest stays paused and nothing happens until the
 * agent decides through the control socket (mig_source_commit/abort), the
 * way the cluster's ordered log decided. Once told to commit, this side
 * never resumes the guest, whether or not COMMIT gets through. */
#include "migrate.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "../dirtylog/dirtylog.h"
#include "../node-vmm/vm.h"
#include "../node-vmm/vm_state.h"
#include "../proto/migration.h"
#include "convergence.h"
#include "local_hello.h"
#include "page_codec.h"
#include "session.h"
#include "stream_io.h"
#include "../common/text.h"

#define CONNECT_TIMEOUT_MS 15000
/* Pages of one stream share a 2 MiB-aligned block (512 pages): good
 * locality per stream, and the page -> stream mapping never changes, as
 * the delta cache requires (page_codec.h). */
#define STREAM_BLOCK_SHIFT 9
/* Clear and send in chunks this large (pages), per design of dirtylog. */
#define CHUNK_PAGES 65536ull
#define BATCH_PAYLOAD (1u << 20)
#define THROTTLE_PERIOD_MS 20

struct stream_crew;

/* One stream: its channel, encoder and batch, and (with more than one
 * stream) the thread that encodes and sends its pages. */
struct mig_stream {
    struct mig_channel *ch;
    struct page_encoder *enc;
    struct mig_pages_writer w;
    uint64_t round_pages;
    unsigned index;
    pthread_t thread;
    bool thread_started;
    struct stream_crew *crew; /* where its thread takes jobs */
    /* The last job's results, read by the migration thread after it. */
    int64_t job_pages;
    uint64_t job_bytes;
    int job_rc;
    struct tern_err job_err;
};

/* Work for every stream at once: each takes its own pages of a range
 * (page -> stream is fixed, so every stream's XOR deltas decode in
 * order), or ends its part of a round. */
enum job_kind { JOB_PAGES, JOB_ROUND_END, JOB_QUIT };

struct send_job {
    enum job_kind kind;
    uint64_t *bitmap;   /* JOB_PAGES: pages to send (cleared as taken) */
    uint64_t first;     /* JOB_PAGES: [first, end), first a multiple of the block */
    uint64_t end;
    uint64_t nr_pages;
    uint32_t round;     /* JOB_ROUND_END */
};

/* The stream threads' meeting point (only with more than one stream). */
struct stream_crew {
    pthread_mutex_t lock;
    pthread_cond_t go, done;
    unsigned gen;       /* bumped for every job */
    unsigned finished;  /* streams done with job `gen` */
    int failed_first;   /* the stream whose failure stopped the job, -1: none */
    struct send_job job;
    struct mig_source *m;
    struct mig_stream *st;
    unsigned n;
};

/* What the agent decided in phase "ready" (commit gate). */
enum gate_decision {
    GATE_NONE = 0,
    GATE_COMMIT, /* migrate-commit: send COMMIT; never resume here again */
    GATE_ABORT,  /* migrate-abort (or migrate-cancel): ERROR, resume here */
    GATE_QUIT,   /* this VMM is ending: leave, deciding nothing (the agents will) */
};

#define AGENT_ABORT_REASON "aborted by the agent"

struct mig_source {
    struct vm *vm;
    struct mig_params p;
    pthread_t thread;
    bool thread_started;
    atomic_bool cancel;
    struct mig_session *session;
    int wake_fd;  /* eventfd: a gate decision was made */
    int event_fd; /* eventfd: the phase or outcome changed (mig_source_event_fd) */

    pthread_mutex_t lock; /* guards everything below */
    bool running;
    enum gate_decision decision;
    char link_error[TERN_ERR_MAX]; /* phase ready: why the destination is unreachable */
    enum mig_phase phase;
    char outcome[16]; /* "", succeeded, failed, cancelled, unknown */
    char reason[TERN_ERR_MAX];
    unsigned round;
    uint64_t pages_sent, bytes_sent, dirty_pages;
    double dirty_MBps, bandwidth_MBps, predicted_pause_ms, elapsed_s, pause_ms;
    double quiesce_ms, last_copy_ms, state_ms; /* parts of the pause */
    unsigned throttle_percent;
    struct {
        char what[16];
        double ms; /* since the start */
    } timeline[16]; /* where the time went, for status */
    unsigned timeline_len;
    double first_round_MBps; /* round 0's bytes over its time */
    struct page_codec_stats codec;
    char cipher[64];
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Notes that `what` was reached, t0 being the start (timeline_ms). */
static void mark(struct mig_source *m, const char *what, double t0)
{
    pthread_mutex_lock(&m->lock);
    if (m->timeline_len < sizeof(m->timeline) / sizeof(m->timeline[0])) {
        snprintf(m->timeline[m->timeline_len].what, sizeof(m->timeline[0].what), "%s", what);
        m->timeline[m->timeline_len].ms = (now_s() - t0) * 1000.0;
        m->timeline_len++;
    }
    pthread_mutex_unlock(&m->lock);
}

static void wake(int fd)
{
    uint64_t one = 1;
    if (write(fd, &one, sizeof(one)) < 0) {
        /* An eventfd write only fails on counter overflow: already awake. */
    }
}

static void drain(int fd)
{
    uint64_t v;
    if (read(fd, &v, sizeof(v)) < 0) {
        /* EAGAIN: nothing pending; the decision is read under the lock anyway. */
    }
}

static void set_phase(struct mig_source *m, enum mig_phase phase)
{
    pthread_mutex_lock(&m->lock);
    m->phase = phase;
    pthread_mutex_unlock(&m->lock);
    wake(m->event_fd);
}

/* Blocks until fd is readable (no timeout). */
static void wait_fd(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (poll(&p, 1, -1) < 0 && errno == EINTR)
        ;
}

static int flush_stream(struct mig_stream *s, struct tern_err *err)
{
    if (s->w.count == 0)
        return 0;
    const uint8_t *data;
    size_t len;
    if (mig_pages_seal(&s->w, &data, &len, err) < 0)
        return -1;
    if (mig_fault("src-corrupt-pages"))
        ((uint8_t *)data)[len - 1] ^= 0x5a; /* after the CRC: the receiver must refuse it */
    int rc = mig_send_bytes(s->ch, data, len, err);
    mig_pages_reset(&s->w);
    return rc;
}

/* Stream s's share of a job. JOB_PAGES: encodes and sends its pages set
 * in the range (clearing their bits; a bitmap word never spans two
 * streams' blocks), keeping a partly filled batch for later.
 * JOB_ROUND_END: sends that batch and ROUND_END. */
static int stream_job(struct mig_source *m, struct mig_stream *s, unsigned n,
                      const struct send_job *j, struct tern_err *err)
{
    s->job_pages = 0;
    s->job_bytes = 0;
    if (j->kind == JOB_ROUND_END) {
        if (flush_stream(s, err) < 0)
            return -1;
        struct rec_buf b;
        rec_buf_init(&b);
        struct mig_round_end re = {.round = j->round, .stream = (uint16_t)s->index,
                                   .pages = s->round_pages};
        mig_round_end_encode(&b, &re);
        int rc = mig_send_recbuf(s->ch, &b, err);
        rec_buf_free(&b);
        s->round_pages = 0;
        return rc;
    }
    if (j->kind != JOB_PAGES)
        return 0;
    uint8_t *base = m->vm->mem.host_base;
    uint64_t *bitmap = j->bitmap;
    uint64_t words_end = (j->end + 63) / 64;
    uint64_t first_block = j->first >> STREAM_BLOCK_SHIFT;
    /* The first block of the range that is this stream's. */
    uint64_t blk = first_block + (s->index + n - (unsigned)(first_block % n)) % n;
    for (; (blk << STREAM_BLOCK_SHIFT) < j->end; blk += n) {
        uint64_t w0 = (blk << STREAM_BLOCK_SHIFT) / 64;
        uint64_t w1 = w0 + (1u << STREAM_BLOCK_SHIFT) / 64;
        if (w1 > words_end)
            w1 = words_end;
        for (uint64_t w = w0; w < w1; w++) {
            uint64_t bits = bitmap[w];
            if (!bits)
                continue;
            bitmap[w] = 0;
            while (bits) {
                uint64_t page = w * 64 + (uint64_t)__builtin_ctzll(bits);
                bits &= bits - 1;
                if (page >= j->nr_pages)
                    break;
                if (mig_pages_full(&s->w) && flush_stream(s, err) < 0)
                    return -1;
                uint8_t enc;
                uint8_t *slot = mig_pages_slot(&s->w);
                uint32_t len = page_encode(s->enc, page, base + page * MIG_PAGE_SIZE, slot, &enc);
                if (mig_pages_commit(&s->w, page, enc, len, err) < 0)
                    return -1;
                s->job_bytes += MIG_PAGE_ENTRY_HEAD + len;
                s->round_pages++;
                s->job_pages++;
            }
        }
        if (atomic_load(&m->cancel))
            return tern_err_set(err, "cancelled by the operator");
    }
    return 0;
}

static void *stream_thread(void *arg)
{
    struct mig_stream *s = arg;
    struct stream_crew *c = s->crew;
    char name[16];
    snprintf(name, sizeof(name), "mig-send%u", s->index);
    pthread_setname_np(pthread_self(), name); /* for top -H and the benchmarks */
    unsigned seen = 0;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        while (c->gen == seen)
            pthread_cond_wait(&c->go, &c->lock);
        seen = c->gen;
        struct send_job j = c->job;
        pthread_mutex_unlock(&c->lock);
        if (j.kind == JOB_QUIT)
            return NULL;
        s->job_err.msg[0] = 0;
        s->job_rc = stream_job(c->m, s, c->n, &j, &s->job_err);
        pthread_mutex_lock(&c->lock);
        bool first = s->job_rc < 0 && c->failed_first < 0;
        if (first)
            c->failed_first = (int)s->index;
        pthread_mutex_unlock(&c->lock);
        /* The other streams must not go on waiting on a peer that stopped
         * reading; their errors are then "aborted", this one says why. */
        if (first)
            mig_session_abort(c->m->session);
        pthread_mutex_lock(&c->lock);
        c->finished++;
        pthread_cond_signal(&c->done);
        pthread_mutex_unlock(&c->lock);
    }
}

/* Runs a job on every stream (in their threads, or here with one stream)
 * and waits for all of them. Returns 0, or -1 with the first failure. */
static int run_job(struct stream_crew *c, const struct send_job *j, struct tern_err *err)
{
    if (c->n == 1) {
        c->st[0].job_rc = stream_job(c->m, &c->st[0], 1, j, err);
        return c->st[0].job_rc;
    }
    pthread_mutex_lock(&c->lock);
    c->job = *j;
    c->finished = 0;
    c->failed_first = -1;
    c->gen++;
    pthread_cond_broadcast(&c->go);
    while (c->finished < c->n)
        pthread_cond_wait(&c->done, &c->lock);
    int failed = c->failed_first;
    pthread_mutex_unlock(&c->lock);
    if (failed < 0)
        return 0;
    *err = c->st[failed].job_err;
    return -1;
}

/* Encodes and sends every page set in `bitmap` over all streams, chunk
 * by chunk (clearing KVM's dirty state per chunk first, so writes after
 * the clear show up next round). Returns pages sent, or -1. */
static int64_t send_pages(struct mig_source *m, struct stream_crew *c, struct dirtylog *dl,
                          uint64_t *bitmap, uint64_t nr_pages, uint64_t *bytes,
                          double *last_throttle, struct tern_err *err)
{
    int64_t sent = 0;
    for (uint64_t chunk = 0; chunk < nr_pages; chunk += CHUNK_PAGES) {
        uint64_t end = chunk + CHUNK_PAGES < nr_pages ? chunk + CHUNK_PAGES : nr_pages;
        bool any = false;
        for (uint64_t w = chunk / 64; w < (end + 63) / 64 && !any; w++)
            any = bitmap[w] != 0;
        if (!any)
            continue;
        if (dl && dirtylog_clear(dl, chunk, end - chunk, err) < 0)
            return -1;
        struct send_job j = {.kind = JOB_PAGES, .bitmap = bitmap, .first = chunk, .end = end,
                             .nr_pages = nr_pages};
        if (run_job(c, &j, err) < 0)
            return -1;
        for (unsigned i = 0; i < c->n; i++) {
            sent += c->st[i].job_pages;
            *bytes += c->st[i].job_bytes;
        }
        if (atomic_load(&m->cancel))
            return tern_err_set(err, "cancelled by the operator");
        /* Auto-converge: hold the vCPUs for throttle% of each period. */
        unsigned throttle;
        pthread_mutex_lock(&m->lock);
        throttle = m->throttle_percent;
        pthread_mutex_unlock(&m->lock);
        double t = now_s();
        /* Only in live rounds (dl set): in stop-and-copy the guest is paused
         * and must stay so. */
        if (dl && throttle && t - *last_throttle >= THROTTLE_PERIOD_MS / 1000.0) {
            if (vm_pause(m->vm, VM_HOLD_THROTTLE, err) < 0)
                return -1;
            struct timespec hold = {.tv_sec = 0,
                                    .tv_nsec = (long)THROTTLE_PERIOD_MS * 10000L * throttle};
            nanosleep(&hold, NULL);
            vm_resume(m->vm, VM_HOLD_THROTTLE, NULL);
            *last_throttle = now_s();
        }
    }
    return sent;
}

/* Every stream: the rest of its batch, then ROUND_END. */
static int send_round_end(struct stream_crew *c, uint32_t round, struct tern_err *err)
{
    struct send_job j = {.kind = JOB_ROUND_END, .round = round};
    return run_job(c, &j, err);
}

/* Starts the stream threads (none for a single stream). */
static int crew_start(struct stream_crew *c, struct mig_source *m, struct mig_stream *st,
                      unsigned n, struct tern_err *err)
{
    memset(c, 0, sizeof(*c));
    c->m = m;
    c->st = st;
    c->n = n;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->go, NULL);
    pthread_cond_init(&c->done, NULL);
    if (n == 1)
        return 0;
    for (unsigned i = 0; i < n; i++) {
        st[i].crew = c;
        int e = pthread_create(&st[i].thread, NULL, stream_thread, &st[i]);
        if (e)
            return tern_err_errno(err, e, "starting the sending thread of stream %u", i);
        st[i].thread_started = true;
    }
    return 0;
}

static void crew_stop(struct stream_crew *c)
{
    if (!c->st)
        return;
    pthread_mutex_lock(&c->lock);
    c->job = (struct send_job){.kind = JOB_QUIT};
    c->gen++;
    pthread_cond_broadcast(&c->go);
    pthread_mutex_unlock(&c->lock);
    for (unsigned i = 0; i < c->n; i++)
        if (c->st[i].thread_started) {
            pthread_join(c->st[i].thread, NULL);
            c->st[i].thread_started = false;
        }
    pthread_cond_destroy(&c->done);
    pthread_cond_destroy(&c->go);
    pthread_mutex_destroy(&c->lock);
    c->st = NULL;
}

/* Waits for one record of `type` on stream 0; an ERROR record fails with
 * the peer's message. */
static int expect_record(struct mig_stream *s0, struct mig_rxbuf *rx, uint32_t type,
                         int timeout_ms, struct tern_err *err)
{
    struct rec_header h;
    struct rec_reader r;
    if (mig_recv_record(s0->ch, rx, timeout_ms, &h, &r, err) < 0)
        return -1;
    if (h.type == REC_TYPE_MIG_ERROR) {
        struct mig_error e;
        if (mig_error_decode(&h, &r, &e, err) < 0)
            return -1;
        return tern_err_set(err, "the destination refused: %s", e.msg);
    }
    if (h.type != type)
        return tern_err_set(err, "expected %s from the destination, got %s",
                            mig_record_name(type), mig_record_name(h.type));
    return 0;
}

static int exchange_hellos(struct mig_source *m, struct mig_stream *st, unsigned n,
                           uint64_t session, struct mig_rxbuf *rx, struct tern_err *err)
{
    struct rec_buf b;
    rec_buf_init(&b);
    int rc = 0;
    for (unsigned i = 0; i < n && rc == 0; i++) {
        struct mig_hello h;
        rc = mig_local_hello(m->vm, (uint16_t)i, (uint16_t)n, session, &h, err);
        h.commit_gate = m->p.commit_gate;
        if (rc == 0) {
            rec_buf_reset(&b);
            mig_hello_encode(&b, &h);
            rc = mig_send_recbuf(st[i].ch, &b, err);
        }
    }
    rec_buf_free(&b);
    /* The destination answers every HELLO with its own, or an ERROR saying
     * what differs (configuration, memory layout). */
    for (unsigned i = 0; i < n && rc == 0; i++)
        rc = expect_record(&st[i], rx, REC_TYPE_MIG_HELLO, m->p.timeout_ms, err);
    return rc;
}

/* Round 0: every page the guest ever touched. Guest RAM is a memfd; pages
 * never written are holes, zero on both sides (the destination's RAM starts
 * as a fresh memfd), so they need not travel at all — a mostly empty guest
 * moves in a fraction of its size. Falls back to all pages if the memfd
 * cannot say. */
static uint64_t mark_used_pages(const struct vm *vm, uint64_t *bitmap, uint64_t nr_pages)
{
    uint64_t marked = 0;
    off_t off = 0, size = (off_t)vm->mem.size;
    while (off < size) {
        off_t data = lseek(vm->mem.memfd, off, SEEK_DATA);
        if (data < 0 && errno == ENXIO)
            break;
        off_t hole = data < 0 ? -1 : lseek(vm->mem.memfd, data, SEEK_HOLE);
        if (data < 0 || hole < 0) {
            data = 0;
            hole = size; /* cannot tell: send everything */
        }
        for (uint64_t pg = (uint64_t)data / MIG_PAGE_SIZE;
             pg < ((uint64_t)hole + MIG_PAGE_SIZE - 1) / MIG_PAGE_SIZE && pg < nr_pages; pg++) {
            bitmap[pg / 64] |= 1ull << (pg % 64);
            marked++;
        }
        off = hole;
    }
    return marked;
}

static void update_progress(struct mig_source *m, const struct conv_state *cs, uint64_t pages,
                            uint64_t bytes, uint64_t dirty, double t0, struct mig_stream *st,
                            unsigned n)
{
    struct page_codec_stats total = {0};
    for (unsigned i = 0; i < n; i++) {
        struct page_codec_stats s;
        page_encoder_stats(st[i].enc, &s);
        for (int k = 0; k < PAGE_ENC_COUNT; k++) {
            total.pages[k] += s.pages[k];
            total.bytes_in[k] += s.bytes_in[k];
            total.bytes_out[k] += s.bytes_out[k];
        }
        total.cache_hits += s.cache_hits;
        total.cache_misses += s.cache_misses;
    }
    pthread_mutex_lock(&m->lock);
    m->round = cs->round;
    m->pages_sent = pages;
    m->bytes_sent = bytes;
    m->dirty_pages = dirty;
    m->dirty_MBps = cs->dirty_pages_per_s * MIG_PAGE_SIZE / 1e6;
    m->bandwidth_MBps = cs->bandwidth_Bps / 1e6;
    m->predicted_pause_ms = cs->predicted_pause_ms;
    m->throttle_percent = cs->throttle_percent;
    m->elapsed_s = now_s() - t0;
    m->codec = total;
    pthread_mutex_unlock(&m->lock);
}

static void finish(struct mig_source *m, const char *outcome, const char *reason)
{
    pthread_mutex_lock(&m->lock);
    snprintf(m->outcome, sizeof(m->outcome), "%s", outcome);
    snprintf(m->reason, sizeof(m->reason), "%s", reason ? reason : "");
    m->phase = MIG_PHASE_DONE;
    m->running = false;
    pthread_mutex_unlock(&m->lock);
    wake(m->event_fd);
}

static void send_error(struct mig_stream *s0, uint32_t code, const char *msg)
{
    struct rec_buf b;
    struct tern_err ignored;
    rec_buf_init(&b);
    mig_error_encode(&b, code, msg);
    if (s0->ch)
        (void)mig_send_recbuf(s0->ch, &b, &ignored);
    rec_buf_free(&b);
}

/* Phase "ready" (commit gate): waits, without a time limit, for the
 * agent's decision. Meanwhile stream 0 is watched: RUNNING means the
 * destination's agent committed it first (the guest runs there: as good as
 * a commit); anything else that arrives, or a broken connection, is noted
 * for status and the wait goes on without the link (only the agents know
 * who owns the guest now). Returns the decision; *running_seen when RUNNING
 * already came. */
static enum gate_decision await_agent(struct mig_source *m, struct mig_stream *s0,
                                      struct mig_rxbuf *rx, bool *running_seen)
{
    bool link = true;
    for (;;) {
        pthread_mutex_lock(&m->lock);
        enum gate_decision d = m->decision;
        pthread_mutex_unlock(&m->lock);
        if (d != GATE_NONE)
            return d;
        struct tern_err e = {0};
        int r = 2;
        if (link)
            r = mig_channel_wait_readable_or(s0->ch, m->wake_fd, -1, &e);
        else
            wait_fd(m->wake_fd);
        if (r == 2) {
            drain(m->wake_fd);
            continue;
        }
        if (r == 1) {
            struct rec_header h;
            struct rec_reader rd;
            if (mig_recv_record(s0->ch, rx, m->p.timeout_ms, &h, &rd, &e) == 0) {
                if (h.type == REC_TYPE_MIG_RUNNING && mig_running_decode(&h, &rd, &e) == 0) {
                    /* The guest runs there: whatever was asked meanwhile,
                     * it must never resume here. */
                    pthread_mutex_lock(&m->lock);
                    m->decision = GATE_COMMIT;
                    m->phase = MIG_PHASE_COMMITTING;
                    wake(m->event_fd); /* an eventfd write never blocks */
                    pthread_mutex_unlock(&m->lock);
                    *running_seen = true;
                    return GATE_COMMIT;
                }
                if (h.type == REC_TYPE_MIG_ERROR) {
                    struct mig_error me;
                    if (mig_error_decode(&h, &rd, &me, &e) == 0)
                        tern_err_set(&e, "the destination gave up: %s", me.msg);
                } else if (h.type != REC_TYPE_MIG_RUNNING) {
                    tern_err_set(&e, "unexpected %s from the destination",
                                 mig_record_name(h.type) ?: "record");
                }
            }
        }
        link = false;
        pthread_mutex_lock(&m->lock);
        snprintf(m->link_error, sizeof(m->link_error), "%s", e.msg[0] ? e.msg : "connection lost");
        pthread_mutex_unlock(&m->lock);
        text_put_line(stderr, "tern-vmm: migration: ready, waiting for the agent; the destination is "
                        "unreachable (%s)\n", e.msg);
    }
}

/* The guest will never run here again (paused for good, disks quiesced
 * since stop-and-copy): the disks' write locks go to the destination,
 * which takes them before its guest runs (invariant 7). */
static void hand_over_disks(struct mig_source *m)
{
    vm_release_disks(m->vm);
    fprintf(stderr, "tern-vmm: migration: committing; disk write locks released for the "
                    "destination\n");
}

/* COMMIT could not be sent without the gate: the destination never got it
 * and the guest is to resume here, which needs the write locks back. If
 * they cannot be had (someone took them meanwhile), it must not. */
static int take_disks_back(struct mig_source *m, struct tern_err *err)
{
    struct tern_err e;
    if (vm_lock_disks(m->vm, true, &e) == 0)
        return 0;
    return tern_err_prefix(err, "the disk locks released for the destination cannot be taken "
                                "back (%s), so the guest stays paused here",
                           e.msg);
}

static void *source_thread(void *arg)
{
    struct mig_source *m = arg;
    struct vm *vm = m->vm;
    pthread_setname_np(pthread_self(), "mig-source");
    struct tern_err err = {0};
    unsigned n = m->p.streams;
    struct mig_stream st[MIG_MAX_STREAMS];
    memset(st, 0, sizeof(st));
    struct stream_crew crew = {0};
    struct mig_tls *tls = NULL;
    struct dirtylog *dl = NULL;
    struct mig_rxbuf rx = {0};
    uint64_t *bitmap = NULL;
    bool paused = false, committed = false;
    double t0 = now_s(), t_pause = 0;
    uint64_t session;
    uint64_t total_pages = 0, total_bytes = 0;
    struct rec_buf b;
    rec_buf_init(&b);

    set_phase(m, MIG_PHASE_CONNECTING);
    if (RAND_bytes((unsigned char *)&session, sizeof(session)) != 1) {
        tern_err_set(&err, "no random bytes for the session id");
        goto fail;
    }
    if (mig_tls_load(&tls, m->p.tls_dir, &err) < 0)
        goto fail;
    if (mig_session_connect(m->session, tls, m->p.to.host, m->p.to.port, NULL, m->p.token,
                            (int)n, CONNECT_TIMEOUT_MS, &err) < 0)
        goto fail;
    mark(m, "connected", t0);
    for (unsigned i = 0; i < n; i++) {
        st[i].ch = mig_session_channel(m->session, (int)i);
        st[i].index = i;
        mig_channel_set_send_timeout(st[i].ch, m->p.timeout_ms);
        if (page_encoder_create_lazy(&st[i].enc, PAGE_CODEC_DEFAULT_CACHE / n, &err) < 0 ||
            mig_pages_writer_init(&st[i].w, MIG_PAGES_MAX_COUNT, BATCH_PAYLOAD, &err) < 0)
            goto fail;
    }
    if (crew_start(&crew, m, st, n, &err) < 0)
        goto fail;
    pthread_mutex_lock(&m->lock);
    snprintf(m->cipher, sizeof(m->cipher), "%s", mig_channel_cipher(st[0].ch));
    pthread_mutex_unlock(&m->lock);
    if (exchange_hellos(m, st, n, session, &rx, &err) < 0)
        goto fail;
    mark(m, "hello", t0);
    if (mig_fault("src-fail-after-hello")) {
        tern_err_set(&err, "test fault src-fail-after-hello");
        goto fail;
    }

    if (dirtylog_start(&dl, vm, DIRTYLOG_BITMAP, &err) < 0)
        goto fail;
    uint64_t nr_pages = dirtylog_nr_pages(dl);
    /* Cache-line aligned: a stream's block (512 pages) is then one line
     * of the bitmap, never shared with another stream's thread. */
    size_t bitmap_bytes = (dirtylog_bitmap_words(nr_pages) * sizeof(uint64_t) + 63) & ~(size_t)63;
    bitmap = aligned_alloc(64, bitmap_bytes);
    if (bitmap)
        memset(bitmap, 0, bitmap_bytes);
    if (!bitmap) {
        tern_err_set(&err, "out of memory for the dirty bitmap");
        goto fail;
    }
    struct conv_params cp = {.downtime_ms = m->p.downtime_ms, .max_seconds = m->p.max_seconds};
    struct conv_state cs;
    conv_init(&cs, &cp);
    uint64_t used = mark_used_pages(vm, bitmap, nr_pages);
    dirtylog_report_pages(dl, bitmap); /* round 0's clears may then forget them */
    /* A first pass over more memory than the delta caches hold would only
     * cycle them, a copy per page for nothing: round 0 fills them only
     * when everything fits; later rounds (pages the guest writes again)
     * always do. */
    bool fill_caches = used * MIG_PAGE_SIZE <= PAGE_CODEC_DEFAULT_CACHE;
    for (unsigned i = 0; i < n; i++)
        page_encoder_set_insert(st[i].enc, fill_caches);
    mark(m, "tracking", t0);
    double last_throttle = 0;
    for (uint32_t round = 0;; round++) {
        char phase[32];
        snprintf(phase, sizeof(phase), "round %u", round);
        pthread_mutex_lock(&m->lock);
        m->round = round;
        pthread_mutex_unlock(&m->lock);
        set_phase(m, MIG_PHASE_ROUND);
        double r0 = now_s();
        uint64_t round_bytes = 0;
        int64_t sent = send_pages(m, &crew, dl, bitmap, nr_pages, &round_bytes, &last_throttle,
                                  &err);
        if (sent < 0 || send_round_end(&crew, round, &err) < 0)
            goto fail;
        mark(m, phase, t0);
        if (round == 0) {
            for (unsigned i = 0; i < n; i++)
                page_encoder_set_insert(st[i].enc, true);
            double secs = now_s() - r0;
            pthread_mutex_lock(&m->lock);
            m->first_round_MBps = secs > 0 ? (double)round_bytes / secs / 1e6 : 0;
            pthread_mutex_unlock(&m->lock);
        }
        total_pages += (uint64_t)sent;
        total_bytes += round_bytes;
        int64_t dirty = dirtylog_collect(dl, bitmap, &err);
        if (dirty < 0)
            goto fail;
        enum conv_decision d = conv_round_done(&cs, (uint64_t)sent, round_bytes, now_s() - r0,
                                               (uint64_t)dirty, now_s() - t0);
        pthread_mutex_lock(&m->lock);
        m->throttle_percent = cs.throttle_percent;
        pthread_mutex_unlock(&m->lock);
        update_progress(m, &cs, total_pages, total_bytes, (uint64_t)dirty, t0, st, n);
        if (d == CONV_STOP_AND_COPY)
            break;
        if (d == CONV_GIVE_UP) {
            tern_err_set(&err, "did not converge within %.0f s (dirty rate %.0f MB/s against %.0f MB/s of bandwidth); "
                               "try a larger --downtime-ms or --max-seconds",
                         m->p.max_seconds, cs.dirty_pages_per_s * MIG_PAGE_SIZE / 1e6,
                         cs.bandwidth_Bps / 1e6);
            goto fail;
        }
    }

    /* Stop-and-copy. */
    set_phase(m, MIG_PHASE_STOP_AND_COPY);
    t_pause = now_s();
    mark(m, "pause", t0);
    if (vm_pause(vm, VM_HOLD_MIGRATION, &err) < 0)
        goto fail;
    paused = true;
    double tq = now_s();
    if (vm_quiesce_devices(vm, &err) < 0)
        goto fail;
    double tc = now_s();
    if (dirtylog_collect(dl, bitmap, &err) < 0)
        goto fail;
    uint64_t last_bytes = 0;
    int64_t last = send_pages(m, &crew, NULL, bitmap, nr_pages, &last_bytes, &(double){0}, &err);
    if (last < 0 || send_round_end(&crew, cs.round, &err) < 0)
        goto fail;
    crew_stop(&crew); /* from here on stream 0 is this thread's alone */
    total_pages += (uint64_t)last;
    total_bytes += last_bytes;
    double ts = now_s();
    rec_buf_reset(&b);
    if (vm_state_save(vm, &b, &err) < 0)
        goto fail;
    pthread_mutex_lock(&m->lock);
    m->quiesce_ms = (tc - tq) * 1000.0;
    m->last_copy_ms = (ts - tc) * 1000.0;
    m->state_ms = (now_s() - ts) * 1000.0;
    pthread_mutex_unlock(&m->lock);
    struct rec_buf sb;
    rec_buf_init(&sb);
    mig_state_encode(&sb, b.data, b.len);
    struct mig_end end = {.rounds = cs.round + 1, .pages = total_pages, .bytes = total_bytes};
    mig_end_encode(&sb, &end);
    int rc = mig_send_recbuf(st[0].ch, &sb, &err);
    rec_buf_free(&sb);
    if (rc < 0)
        goto fail;
    mark(m, "end sent", t0);
    set_phase(m, MIG_PHASE_HANDOVER);
    if (expect_record(&st[0], &rx, REC_TYPE_MIG_READY, m->p.timeout_ms, &err) < 0)
        goto fail;
    mark(m, "ready", t0);
    if (mig_fault("src-exit-before-commit"))
        _exit(99); /* the source dies with the guest paused: the destination must not run it */
    bool running_seen = false;
    if (m->p.commit_gate) {
        set_phase(m, MIG_PHASE_READY);
        text_put_line(stderr, "tern-vmm: migration: the destination has everything; the guest stays "
                        "paused until migrate-commit or migrate-abort\n");
        enum gate_decision d = await_agent(m, &st[0], &rx, &running_seen);
        if (d == GATE_QUIT) {
            /* Ending without a decision: no ERROR (the destination's agent
             * decides, as if this process had died), no resume. */
            finish(m, "unknown", "the VMM ended in phase ready, before the agent decided");
            goto out;
        }
        if (d == GATE_ABORT) {
            atomic_store(&m->cancel, true);
            tern_err_set(&err, AGENT_ABORT_REASON);
            goto fail;
        }
        /* Commit: from here on the guest never resumes here. */
        committed = true;
        hand_over_disks(m);
        set_phase(m, MIG_PHASE_COMMITTING);
        if (mig_fault("src-exit-at-commit"))
            _exit(94); /* the agents agreed; COMMIT never goes out on the wire */
        pthread_mutex_lock(&m->lock);
        bool link_lost = m->link_error[0] != 0;
        if (link_lost)
            tern_err_set(&err, "COMMIT could not be sent: %s", m->link_error);
        pthread_mutex_unlock(&m->lock);
        if (link_lost && !running_seen)
            goto fail;
    }
    if (!running_seen) {
        rec_buf_reset(&b);
        mig_commit_encode(&b);
        /* Ungated, COMMIT is the decision: the locks go first, so that the
         * destination finds them free the moment COMMIT arrives. */
        bool ungated = !committed;
        if (ungated)
            hand_over_disks(m);
        if (mig_send_recbuf(st[0].ch, &b, &err) < 0) {
            /* Not sent: ungated, the destination never got it. */
            if (ungated && take_disks_back(m, &err) < 0)
                committed = true; /* stays paused: see fail */
            goto fail;
        }
        committed = true;
        if (expect_record(&st[0], &rx, REC_TYPE_MIG_RUNNING, m->p.timeout_ms, &err) < 0)
            goto fail;
    }
    mark(m, "running", t0);
    double pause_ms = (now_s() - t_pause) * 1000.0;
    update_progress(m, &cs, total_pages, total_bytes, 0, t0, st, n);
    pthread_mutex_lock(&m->lock);
    m->pause_ms = pause_ms;
    m->elapsed_s = now_s() - t0;
    pthread_mutex_unlock(&m->lock);
    finish(m, "succeeded", NULL);
    dirtylog_stop(dl);
    dl = NULL;
    json_t *result = mig_source_status(m);
    char *line = result ? json_dumps(result, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    text_put_line(stderr, "tern-vmm: migration result: %s\n", line ? line : "{}");
    free(line);
    json_decref(result);
    /* Keep answering status for a moment so whoever started the migration
     * can read the result; the guest runs on the destination already. */
    struct timespec grace = {.tv_sec = 2, .tv_nsec = 0};
    nanosleep(&grace, NULL);
    vm_request_end(vm, VMM_EXIT_OK, "migrated to %s:%u", m->p.to.host, m->p.to.port);
    goto out;

fail:
    if (committed) {
        /* COMMIT went out: the destination may be running the guest. Never
         * resume here; stay paused for the cluster (or an operator) to
         * decide. */
        finish(m, "unknown", err.msg);
        text_put_line(stderr, "tern-vmm: migration: COMMIT was sent but not confirmed (%s); the guest "
                        "stays paused here and must not be resumed until the destination is "
                        "known to be down\n", err.msg);
        goto out;
    }
    send_error(&st[0], atomic_load(&m->cancel) ? MIG_ERR_CANCELLED : MIG_ERR_OTHER, err.msg);
    dirtylog_stop(dl);
    dl = NULL;
    if (paused) {
        vm_unquiesce_devices(vm);
        vm_resume(vm, VM_HOLD_MIGRATION, NULL); /* an operator's pause stays */
    }
    finish(m, atomic_load(&m->cancel) ? "cancelled" : "failed", err.msg);
    text_put_line(stderr, "tern-vmm: migration to %s:%u failed: %s; the guest keeps running here\n",
            m->p.to.host, m->p.to.port, err.msg);
out:
    crew_stop(&crew);
    if (dl && !committed)
        dirtylog_stop(dl);
    free(bitmap);
    rec_buf_free(&b);
    mig_rxbuf_free(&rx);
    for (unsigned i = 0; i < n; i++) {
        page_encoder_destroy(st[i].enc);
        mig_pages_writer_free(&st[i].w);
    }
    mig_session_abort(m->session);
    mig_tls_free(tls);
    return NULL;
}

/* Frees m once its thread has ended (or never started). */
static void source_free(struct mig_source *m)
{
    mig_session_free(m->session);
    if (m->wake_fd >= 0)
        close(m->wake_fd);
    if (m->event_fd >= 0)
        close(m->event_fd);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

int mig_source_event_fd(struct mig_source *m)
{
    return m ? m->event_fd : -1;
}

void mig_source_event_drain(struct mig_source *m)
{
    if (m)
        drain(m->event_fd);
}

bool mig_source_running(struct mig_source *m)
{
    if (!m)
        return false;
    pthread_mutex_lock(&m->lock);
    bool running = m->running;
    pthread_mutex_unlock(&m->lock);
    return running;
}

int mig_source_start(struct mig_source **slot, struct vm *vm, const struct mig_params *p,
                     struct tern_err *err)
{
    struct mig_source *m = *slot;
    if (m) {
        if (mig_source_running(m))
            return tern_err_set(err, "a migration is already running; cancel it first");
        if (!strcmp(m->outcome, "unknown") || !strcmp(m->outcome, "succeeded"))
            return tern_err_set(err, "this VM was handed over (%s); it cannot migrate again", m->outcome);
        pthread_join(m->thread, NULL);
        source_free(m);
        *slot = NULL;
    }
    m = calloc(1, sizeof(*m));
    if (!m)
        return tern_err_set(err, "out of memory");
    m->vm = vm;
    m->p = *p;
    pthread_mutex_init(&m->lock, NULL);
    m->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    m->event_fd = m->wake_fd < 0 ? -1 : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (m->event_fd < 0) {
        int e = errno;
        source_free(m);
        return tern_err_errno(err, e, "creating the migration's eventfds");
    }
    m->session = mig_session_new();
    if (!m->session) {
        source_free(m);
        return tern_err_set(err, "out of memory");
    }
    m->running = true;
    m->phase = MIG_PHASE_STARTING;
    int e = pthread_create(&m->thread, NULL, source_thread, m);
    if (e) {
        source_free(m);
        return tern_err_errno(err, e, "starting the migration thread");
    }
    m->thread_started = true;
    *slot = m;
    return 0;
}

json_t *mig_source_status(struct mig_source *m)
{
    if (!m)
        return NULL;
    pthread_mutex_lock(&m->lock);
    json_t *enc = json_object();
    for (int k = 0; k < PAGE_ENC_COUNT; k++)
        json_object_set_new(enc, page_enc_name((uint8_t)k),
                            json_pack("{s:I, s:I}", "pages", (json_int_t)m->codec.pages[k],
                                      "bytes", (json_int_t)m->codec.bytes_out[k]));
    json_t *j = json_pack(
        "{s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:i, s:f, s:f, s:i, s:s, s:o}",
        "phase", mig_phase_name(m->phase), "outcome", m->outcome, "reason", m->reason, "to", m->p.to.host,
        "port", (int)m->p.to.port, "round", (json_int_t)m->round, "pages_sent",
        (json_int_t)m->pages_sent, "bytes_sent", (json_int_t)m->bytes_sent, "bytes_remaining",
        (json_int_t)(m->dirty_pages * MIG_PAGE_SIZE), "dirty_MBps", m->dirty_MBps,
        "bandwidth_MBps", m->bandwidth_MBps, "predicted_pause_ms", m->predicted_pause_ms,
        "throttle_percent", (int)m->throttle_percent, "elapsed_s", m->elapsed_s, "pause_ms",
        m->pause_ms, "streams", (int)m->p.streams, "cipher", m->cipher, "encodings", enc);
    json_object_set_new(j, "pause_parts_ms",
                        json_pack("{s:f, s:f, s:f}", "quiesce", m->quiesce_ms, "last_copy",
                                  m->last_copy_ms, "state", m->state_ms));
    json_object_set_new(j, "commit_gate", json_boolean(m->p.commit_gate));
    json_object_set_new(j, "first_round_MBps", json_real(m->first_round_MBps));
    json_t *tl = json_object();
    for (unsigned i = 0; i < m->timeline_len; i++)
        json_object_set_new(tl, m->timeline[i].what, json_real(m->timeline[i].ms));
    json_object_set_new(j, "timeline_ms", tl);
    if (m->link_error[0])
        json_object_set_new(j, "link_error", json_string(m->link_error));
    pthread_mutex_unlock(&m->lock);
    return j;
}

/* Records the agent's decision if the migration waits for one. */
static int decide(struct mig_source *m, enum gate_decision d, const char *cmd,
                  struct tern_err *err)
{
    if (!m)
        return tern_err_set(err, "%s: no migration has run from this VM", cmd);
    pthread_mutex_lock(&m->lock);
    int rc = 0;
    if (!m->p.commit_gate) {
        rc = tern_err_set(err, "%s: this migration was started without --commit-gate; it hands "
                               "over by itself", cmd);
    } else if (!m->running) {
        if (d == GATE_COMMIT && !strcmp(m->outcome, "succeeded"))
            rc = 0; /* the destination runs the guest already: nothing left to do */
        else
            rc = tern_err_set(err, "%s: the migration is over (outcome %s%s%s)", cmd, m->outcome,
                              m->reason[0] ? ": " : "", m->reason);
    } else if (m->decision == d) {
        rc = 0; /* a repeated request: the same decision stands */
    } else if (m->decision != GATE_NONE) {
        rc = tern_err_set(err, "%s: the agent already decided to %s", cmd,
                          m->decision == GATE_COMMIT ? "commit" : "abort");
    } else if (m->phase != MIG_PHASE_READY) {
        rc = tern_err_set(err, "%s: the migration is in phase '%s'; the decision is taken in "
                               "phase 'ready', once the destination holds the complete state",
                          cmd, mig_phase_name(m->phase));
    } else {
        m->decision = d;
        wake(m->wake_fd);
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int mig_source_commit(struct mig_source *m, struct tern_err *err)
{
    return decide(m, GATE_COMMIT, "migrate-commit", err);
}

int mig_source_abort(struct mig_source *m, struct tern_err *err)
{
    return decide(m, GATE_ABORT, "migrate-abort", err);
}

int mig_source_cancel(struct mig_source *m, struct tern_err *err)
{
    if (!m)
        return tern_err_set(err, "no migration is running");
    pthread_mutex_lock(&m->lock);
    bool running = m->running;
    bool handing_over = m->phase == MIG_PHASE_HANDOVER || m->phase == MIG_PHASE_COMMITTING;
    bool ready = m->phase == MIG_PHASE_READY;
    pthread_mutex_unlock(&m->lock);
    if (!running)
        return tern_err_set(err, "no migration is running");
    if (ready) /* the commit gate holds it: cancelling is the agent's abort */
        return decide(m, GATE_ABORT, "migrate-cancel", err);
    if (handing_over)
        return tern_err_set(err, "the migration is handing over the guest; it can no longer be cancelled");
    atomic_store(&m->cancel, true);
    mig_session_abort(m->session);
    return 0;
}

void mig_source_destroy(struct mig_source *m)
{
    if (!m)
        return;
    /* Ending in (or on the way to) phase ready decides nothing: the
     * destination's agent does, as if this process had died. */
    pthread_mutex_lock(&m->lock);
    if (m->decision == GATE_NONE)
        m->decision = GATE_QUIT;
    wake(m->wake_fd);
    bool ready = m->phase == MIG_PHASE_READY;
    pthread_mutex_unlock(&m->lock);
    struct tern_err ignored;
    if (!ready)
        (void)mig_source_cancel(m, &ignored);
    if (m->thread_started)
        pthread_join(m->thread, NULL);
    source_free(m);
}

int mig_params_from_json(json_t *req, struct mig_params *p, struct tern_err *err)
{
    memset(p, 0, sizeof(*p));
    const char *uri = json_string_value(json_object_get(req, "uri"));
    const char *dir = json_string_value(json_object_get(req, "tls_dir"));
    const char *token = json_string_value(json_object_get(req, "token"));
    if (!uri || !dir || !token)
        return tern_err_set(err, "migrate needs \"uri\" (tls://HOST:PORT), \"tls_dir\" and \"token\"");
    if (parse_endpoint(uri, &p->to, err) < 0)
        return -1;
    if (strlen(dir) >= sizeof(p->tls_dir) || strlen(token) >= sizeof(p->token))
        return tern_err_set(err, "migrate: tls_dir or token too long");
    strcpy(p->tls_dir, dir);
    strcpy(p->token, token);
    json_t *v;
    p->streams = 1;
    if ((v = json_object_get(req, "streams"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > MIG_MAX_STREAMS)
            return tern_err_set(err, "migrate: streams must be 1 to %d", MIG_MAX_STREAMS);
        p->streams = (unsigned)json_integer_value(v);
    }
    p->downtime_ms = CONV_DEFAULT_DOWNTIME_MS;
    if ((v = json_object_get(req, "downtime_ms"))) {
        if (!json_is_number(v) || json_number_value(v) < 1 || json_number_value(v) > 60000)
            return tern_err_set(err, "migrate: downtime_ms must be 1 to 60000");
        p->downtime_ms = json_number_value(v);
    }
    p->max_seconds = CONV_DEFAULT_MAX_SECONDS;
    if ((v = json_object_get(req, "max_seconds"))) {
        if (!json_is_number(v) || json_number_value(v) < 1 || json_number_value(v) > 86400)
            return tern_err_set(err, "migrate: max_seconds must be 1 to 86400");
        p->max_seconds = json_number_value(v);
    }
    p->timeout_ms = MIG_DEFAULT_TIMEOUT_MS;
    if ((v = json_object_get(req, "timeout_ms"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 1000 ||
            json_integer_value(v) > 600000)
            return tern_err_set(err, "migrate: timeout_ms must be a whole number from 1000 to 600000");
        p->timeout_ms = (int)json_integer_value(v);
    }
    if ((v = json_object_get(req, "commit_gate"))) {
        if (!json_is_boolean(v))
            return tern_err_set(err, "migrate: commit_gate must be true or false");
        p->commit_gate = json_is_true(v);
    }
    return 0;
}
