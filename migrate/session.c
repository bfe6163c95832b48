/* Connection sets bound to a one-time token (migrate/session.h). */
#include "session.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../proto/record.h"
#include "transport_internal.h"

#define XPORT_MAGIC "TERNXPRT"
#define XPORT_VERSION 1
/* A HELLO or REPLY payload is never bigger than this. */
#define XPORT_MAX_PAYLOAD 2048u
/* How long an accepted peer may take to send its HELLO. */
#define HELLO_TIMEOUT_MS 10000

struct mig_session {
    pthread_mutex_t lock; /* aborted, channels, listener: against mig_session_abort */
    bool aborted;
    int nr;
    uint64_t id;
    struct mig_channel *ch[MIG_SESSION_MAX_STREAMS];
    struct mig_channel *pending; /* accepted, not yet placed in the set */
    struct mig_listener *listener;
};

struct xport_hello {
    uint64_t id;
    uint16_t index;
    uint16_t nr;
    char token[MIG_TOKEN_MAX + 1];
};

struct mig_session *mig_session_new(void)
{
    struct mig_session *s = calloc(1, sizeof(*s));
    if (s)
        pthread_mutex_init(&s->lock, NULL);
    return s;
}

int mig_session_streams(const struct mig_session *s)
{
    return s->nr;
}

uint64_t mig_session_id(const struct mig_session *s)
{
    return s->id;
}

struct mig_channel *mig_session_channel(struct mig_session *s, int i)
{
    return i >= 0 && i < s->nr ? s->ch[i] : NULL;
}

void mig_session_abort(struct mig_session *s)
{
    pthread_mutex_lock(&s->lock);
    s->aborted = true;
    for (int i = 0; i < MIG_SESSION_MAX_STREAMS; i++)
        mig_channel_abort(s->ch[i]);
    mig_channel_abort(s->pending);
    if (s->listener)
        mig_listener_abort(s->listener);
    pthread_mutex_unlock(&s->lock);
}

/* Places (or removes, c NULL) a channel where abort can reach it; fails
 * if the session was aborted already. */
static int publish(struct mig_session *s, struct mig_channel **slot, struct mig_channel *c)
{
    pthread_mutex_lock(&s->lock);
    bool aborted = s->aborted;
    *slot = c;
    if (aborted)
        mig_channel_abort(c);
    pthread_mutex_unlock(&s->lock);
    return aborted ? -1 : 0;
}

static void close_all(struct mig_session *s)
{
    for (int i = 0; i < MIG_SESSION_MAX_STREAMS; i++) {
        struct mig_channel *c = s->ch[i];
        publish(s, &s->ch[i], NULL);
        mig_channel_close(c);
    }
    s->nr = 0;
}

void mig_session_free(struct mig_session *s)
{
    if (!s)
        return;
    close_all(s);
    mig_channel_close(s->pending);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* ------------------------------------------------------------ records */

static int send_record(struct mig_channel *c, struct rec_buf *b, struct tern_err *err)
{
    if (rec_buf_check(b, err) < 0)
        return -1;
    struct iovec iov = {.iov_base = b->data, .iov_len = b->len};
    return mig_channel_send(c, &iov, 1, err);
}

static int send_hello(struct mig_channel *c, const struct xport_hello *h, struct tern_err *err)
{
    struct rec_buf b;
    rec_buf_init(&b);
    rec_begin(&b, REC_TYPE_MIG_XPORT_HELLO, XPORT_VERSION, 0);
    rec_put_bytes(&b, XPORT_MAGIC, 8);
    rec_put_u64(&b, h->id);
    rec_put_u16(&b, h->index);
    rec_put_u16(&b, h->nr);
    rec_put_str(&b, h->token);
    rec_end(&b);
    int rc = send_record(c, &b, err);
    rec_buf_free(&b);
    return rc;
}

static int send_reply(struct mig_channel *c, uint32_t status, const char *msg,
                      struct tern_err *err)
{
    struct rec_buf b;
    rec_buf_init(&b);
    rec_begin(&b, REC_TYPE_MIG_XPORT_REPLY, XPORT_VERSION, 0);
    rec_put_u32(&b, status);
    char m[1000];
    snprintf(m, sizeof(m), "%s", msg);
    rec_put_str(&b, m);
    rec_end(&b);
    int rc = send_record(c, &b, err);
    rec_buf_free(&b);
    return rc;
}

/* Reads one transport record of `type` into buf (payload). Returns 1, 0
 * if the peer closed cleanly first, -1 on error (*malformed says whether
 * the bytes were wrong rather than missing). */
static int recv_record(struct mig_channel *c, uint32_t type, uint8_t *payload, uint32_t *len,
                       uint64_t deadline, bool *malformed, struct tern_err *err)
{
    uint8_t hdr[REC_HEADER_SIZE];
    *malformed = false;
    int r = mig_channel__recv_until(c, hdr, sizeof(hdr), deadline, err);
    if (r <= 0)
        return r;
    struct rec_header h;
    if (rec_parse_header(hdr, &h, err) < 0) {
        *malformed = true;
        return -1;
    }
    if (h.type != type || h.version != XPORT_VERSION || h.flags != 0 ||
        h.length > XPORT_MAX_PAYLOAD) {
        *malformed = true;
        return tern_err_set(err, "expected transport record 0x%x v%d, got 0x%x v%u (%u bytes)",
                            type, XPORT_VERSION, h.type, h.version, h.length);
    }
    if (h.length) {
        r = mig_channel__recv_until(c, payload, h.length, deadline, err);
        if (r == 0)
            tern_err_set(err, "the peer closed the connection inside a transport record");
        if (r <= 0)
            return -1;
    }
    if (rec_check_crc(&h, payload, err) < 0) {
        *malformed = true;
        return -1;
    }
    *len = h.length;
    return 1;
}

static int decode_hello(const uint8_t *p, uint32_t len, struct xport_hello *h,
                        struct tern_err *err)
{
    struct rec_reader r;
    uint8_t magic[8];
    memset(h, 0, sizeof(*h));
    rec_reader_init(&r, p, len);
    rec_get_bytes(&r, magic, sizeof(magic));
    rec_get_u64(&r, &h->id);
    rec_get_u16(&r, &h->index);
    rec_get_u16(&r, &h->nr);
    rec_get_str(&r, h->token, sizeof(h->token));
    if (rec_finish(&r, "transport HELLO", err) < 0)
        return -1;
    if (memcmp(magic, XPORT_MAGIC, sizeof(magic)) != 0)
        return tern_err_set(err, "transport HELLO: bad magic");
    return 0;
}

/* ------------------------------------------------------------- source */

static int check_token(const char *token, struct tern_err *err)
{
    if (!token || !*token)
        return tern_err_set(err, "no migration token given");
    if (strlen(token) > MIG_TOKEN_MAX)
        return tern_err_set(err, "migration token longer than %d bytes", MIG_TOKEN_MAX);
    return 0;
}

/* Reads channel c's answer: 0 for OK, -1 with the refusal (or the
 * failure to read it) in err. */
static int read_answer(struct mig_channel *c, const char *host, uint16_t port,
                       uint64_t deadline, struct tern_err *err)
{
    uint8_t payload[XPORT_MAX_PAYLOAD];
    uint32_t len = 0;
    bool malformed;
    int r = recv_record(c, REC_TYPE_MIG_XPORT_REPLY, payload, &len, deadline, &malformed, err);
    if (r == 0)
        tern_err_set(err, "%s:%u closed the connection instead of answering", host, port);
    if (r <= 0)
        return tern_err_prefix(err, "waiting for %s:%u to accept the connection", host, port);
    struct rec_reader rr;
    uint32_t status = 0;
    char msg[1024];
    rec_reader_init(&rr, payload, len);
    rec_get_u32(&rr, &status);
    rec_get_str(&rr, msg, sizeof(msg));
    if (rec_finish(&rr, "transport REPLY", err) < 0)
        return tern_err_prefix(err, "%s:%u", host, port);
    if (status != MIG_XPORT_OK)
        return tern_err_set(err, "%s:%u refused the connection: %s", host, port, msg);
    return 0;
}

/* Connection i failed. If the destination already refused an earlier
 * connection of the set (and then stopped listening, which is likely why
 * this one failed), its reason is the one worth reporting. */
static int connect_fail(struct mig_session *s, int i, int n, const char *host, uint16_t port,
                        struct tern_err *err)
{
    if (n > 1)
        tern_err_prefix(err, "connection %d of %d", i + 1, n);
    uint64_t soon = mig__deadline(500);
    for (int k = 0; k < i; k++) {
        struct tern_err e;
        if (s->ch[k] && read_answer(s->ch[k], host, port, soon, &e) < 0 &&
            strstr(e.msg, "refused the connection")) {
            *err = e;
            break;
        }
    }
    close_all(s);
    return -1;
}

int mig_session_connect(struct mig_session *s, struct mig_tls *t, const char *host,
                        uint16_t port, const char *peer_name, const char *token,
                        int nr_streams, int timeout_ms, struct tern_err *err)
{
    if (check_token(token, err) < 0)
        return -1;
    if (nr_streams < 1 || nr_streams > MIG_SESSION_MAX_STREAMS)
        return tern_err_set(err, "streams must be 1..%d, not %d", MIG_SESSION_MAX_STREAMS,
                            nr_streams);
    if (s->nr)
        return tern_err_set(err, "session already connected");
    uint64_t deadline = mig__deadline(timeout_ms);
    struct xport_hello h = {.nr = (uint16_t)nr_streams};
    if (RAND_bytes((unsigned char *)&h.id, sizeof(h.id)) != 1)
        return tern_err_set(err, "no random bytes for the session id");
    snprintf(h.token, sizeof(h.token), "%s", token);
    s->nr = nr_streams;
    s->id = h.id;

    for (int i = 0; i < nr_streams; i++) {
        struct mig_channel *c;
        if (mig_channel__new(&c, t, false, err) < 0)
            return connect_fail(s, i, nr_streams, host, port, err);
        if (publish(s, &s->ch[i], c) < 0) {
            tern_err_set(err, "connecting to %s:%u: aborted", host, port);
            return connect_fail(s, i, nr_streams, host, port, err);
        }
        if (mig_channel__dial(c, host, port, peer_name, deadline, err) < 0)
            return connect_fail(s, i, nr_streams, host, port, err);
        h.index = (uint16_t)i;
        if (send_hello(c, &h, err) < 0)
            return connect_fail(s, i, nr_streams, host, port, err);
    }
    for (int i = 0; i < nr_streams; i++) {
        if (read_answer(s->ch[i], host, port, deadline, err) < 0) {
            if (nr_streams > 1)
                tern_err_prefix(err, "connection %d of %d", i + 1, nr_streams);
            close_all(s);
            return -1;
        }
    }
    return 0;
}

/* -------------------------------------------------------- destination */

static void token_digest(const char *token, unsigned char out[32])
{
    unsigned int n = 32;
    if (EVP_Digest(token, strlen(token), out, &n, EVP_sha256(), NULL) != 1)
        memset(out, 0, 32); /* never equal to a real digest by chance */
}

/* Refuses the whole set: `c` (the offender, may be NULL) with `status`,
 * the channels accepted so far with MIG_XPORT_REFUSED. */
static void refuse_set(struct mig_session *s, struct mig_channel *c, uint32_t status,
                       const char *why)
{
    struct tern_err ignored;
    if (c)
        send_reply(c, status, why, &ignored);
    char msg[1024];
    snprintf(msg, sizeof(msg), "connection set refused: %s", why);
    for (int i = 0; i < MIG_SESSION_MAX_STREAMS; i++)
        if (s->ch[i])
            send_reply(s->ch[i], MIG_XPORT_REFUSED, msg, &ignored);
}

static void drop_pending(struct mig_session *s)
{
    struct mig_channel *c = s->pending;
    publish(s, &s->pending, NULL);
    mig_channel_close(c);
}

int mig_session_accept(struct mig_session *s, struct mig_listener *l, const char *token,
                       int timeout_ms, struct tern_err *err)
{
    if (check_token(token, err) < 0)
        return -1;
    if (s->nr)
        return tern_err_set(err, "session already connected");
    unsigned char want[32];
    token_digest(token, want);
    uint64_t deadline = mig__deadline(timeout_ms);
    pthread_mutex_lock(&s->lock);
    s->listener = l;
    bool aborted = s->aborted;
    pthread_mutex_unlock(&s->lock);
    if (aborted)
        mig_listener_abort(l);

    struct tern_err last = {.msg = ""};
    int refused = 0, have = 0, n = 0;
    uint64_t id = 0;
    bool started = false;
    bool seen[MIG_SESSION_MAX_STREAMS] = {false};
    int rc = -1;
    while (!started || have < n) {
        struct mig_channel *c;
        if (mig_channel__new(&c, mig_listener__tls(l), true, err) < 0)
            goto fail;
        if (publish(s, &s->pending, c) < 0) {
            tern_err_set(err, "accepting migration connections: aborted");
            goto fail;
        }
        bool hs_failed = false;
        if (mig_channel__accept(c, l, deadline, &hs_failed, err) < 0) {
            if (hs_failed) {
                /* Unauthenticated: drop it, keep waiting. */
                last = *err;
                refused++;
                drop_pending(s);
                continue;
            }
            if (refused) {
                struct tern_err why = *err;
                tern_err_set(err, "%s (refused %d connection%s; last: %s)", why.msg, refused,
                             refused == 1 ? "" : "s", last.msg);
            }
            goto fail;
        }
        uint64_t hello_deadline = mig__deadline(HELLO_TIMEOUT_MS);
        if (deadline && deadline < hello_deadline)
            hello_deadline = deadline;
        uint8_t payload[XPORT_MAX_PAYLOAD];
        uint32_t len = 0;
        bool malformed = false;
        struct xport_hello h;
        struct tern_err e;
        int r = recv_record(c, REC_TYPE_MIG_XPORT_HELLO, payload, &len, hello_deadline,
                            &malformed, &e);
        if (r == 1 && decode_hello(payload, len, &h, &e) < 0) {
            r = -1;
            malformed = true;
        }
        if (r <= 0 && !malformed) {
            /* Closed or silent before its HELLO: drop it, keep waiting. */
            if (r == 0)
                tern_err_set(&e, "closed before sending its HELLO");
            tern_err_set(&last, "%s (CN=%s): %s", mig_channel_peer_addr(c),
                         mig_channel_peer_name(c), e.msg);
            refused++;
            drop_pending(s);
            continue;
        }
        const char *who_addr = mig_channel_peer_addr(c);
        const char *who = mig_channel_peer_name(c);
        if (malformed) {
            refuse_set(s, c, MIG_XPORT_BAD_HELLO, e.msg);
            tern_err_set(err, "refused connection from %s (CN=%s): %s", who_addr, who, e.msg);
            goto fail;
        }
        unsigned char got[32];
        token_digest(h.token, got);
        memset(h.token, 0, sizeof(h.token));
        if (CRYPTO_memcmp(got, want, sizeof(want)) != 0) {
            refuse_set(s, c, MIG_XPORT_WRONG_TOKEN, "wrong migration token");
            tern_err_set(err, "refused connection from %s (CN=%s): wrong migration token",
                         who_addr, who);
            goto fail;
        }
        const char *bad = NULL;
        char why[200];
        if (h.nr < 1 || h.nr > MIG_SESSION_MAX_STREAMS) {
            snprintf(why, sizeof(why), "stream count %u out of range 1..%d", h.nr,
                     MIG_SESSION_MAX_STREAMS);
            bad = why;
        } else if (h.index >= h.nr) {
            snprintf(why, sizeof(why), "stream index %u not below the count %u", h.index, h.nr);
            bad = why;
        } else if (started && h.id != id) {
            bad = "another connection set is already being accepted";
        } else if (started && h.nr != n) {
            snprintf(why, sizeof(why), "stream count %u differs from the set's %d", h.nr, n);
            bad = why;
        } else if (started && seen[h.index]) {
            snprintf(why, sizeof(why), "stream %u connected twice", h.index);
            bad = why;
        }
        if (bad) {
            refuse_set(s, c, MIG_XPORT_BAD_SET, bad);
            tern_err_set(err, "refused connection from %s (CN=%s): %s", who_addr, who, bad);
            goto fail;
        }
        if (!started) {
            started = true;
            id = h.id;
            n = h.nr;
        }
        seen[h.index] = true;
        have++;
        pthread_mutex_lock(&s->lock);
        s->ch[h.index] = c;
        s->pending = NULL;
        pthread_mutex_unlock(&s->lock);
    }
    /* The set is complete: nothing more gets in, then everyone hears OK. */
    mig_listener__stop(l);
    s->nr = n;
    s->id = id;
    for (int i = 0; i < n; i++) {
        if (send_reply(s->ch[i], MIG_XPORT_OK, "", err) < 0) {
            tern_err_prefix(err, "answering connection %d of %d", i + 1, n);
            goto fail;
        }
    }
    rc = 0;
fail:
    mig_listener__stop(l);
    pthread_mutex_lock(&s->lock);
    s->listener = NULL;
    pthread_mutex_unlock(&s->lock);
    if (rc < 0) {
        drop_pending(s);
        close_all(s);
    }
    return rc;
}
