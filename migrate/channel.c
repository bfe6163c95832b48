/* TLS channels over io_uring (migrate/channel.h).
 *
 * OpenSSL runs "blocking" on a BIO of our own whose callbacks do the
 * socket I/O through the channel's io_uring, bounded by the deadline of
 * the call in progress:
 *   write: ciphertext is appended to the current send buffer; a full
 *          buffer is handed to the kernel in one io_uring send while the
 *          other buffer fills. At most one send is in flight at any time,
 *          so the byte stream keeps its order even after a short send.
 *   read:  io_uring recv straight into OpenSSL's (read-ahead) buffer.
 *   flush: everything buffered goes out and is waited for.
 * A timeout while receiving sets the BIO's retry flag, so OpenSSL reports
 * WANT_READ and the connection stays consistent; every other failure is
 * final for the channel.
 *
 * kTLS: with SSL_OP_ENABLE_KTLS OpenSSL offers the send keys to its write
 * BIO through the (OpenSSL-internal) BIO_CTRL_SET_KTLS control once the
 * handshake is done. Our BIO installs them with setsockopt(TCP_ULP "tls",
 * SOL_TLS/TLS_TX) like OpenSSL's own socket BIO does; from then on the
 * kernel encrypts and mig_channel_send writes plaintext straight from the
 * caller's buffers. Where the kernel has no tls ULP the setsockopt fails,
 * the control returns 0 and OpenSSL keeps encrypting in userspace. */
#include "channel.h"

#include <errno.h>
#include <liburing.h>
#include <linux/tls.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport_internal.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

/* OpenSSL-internal BIO controls (include/internal/bio.h in OpenSSL 3.x;
 * the public bio.h lists their numbers in a comment). */
#define OSSL_BIO_CTRL_SET_KTLS 72
#define OSSL_BIO_CTRL_SET_KTLS_TX_SEND_CTRL_MSG 74
#define OSSL_BIO_CTRL_CLEAR_KTLS_TX_CTRL_MSG 75

/* Two send buffers of this size per channel: one io_uring send carries
 * 16 TLS records, and both buffers stay in the L2 cache between the
 * encryption that fills them and the kernel's copy (measured best of
 * 128 KiB..1 MiB, docs/migration-transport.md). Pages of a buffer are only
 * touched when used, so a mostly-receiving channel costs little. */
#define SEND_BUF_SIZE (256u << 10)
#define RING_ENTRIES 16
#define CLOSE_TIMEOUT_MS 1000

enum {
    TAG_SEND0 = 0, /* TAG_SEND0 + buffer index */
    TAG_SEND1 = 1,
    TAG_RECV = 2,
    TAG_CONNECT = 3,
    TAG_ACCEPT = 4,
    TAG_POLL = 5,
    TAG_SENDMSG = 6,
    TAG_COUNT = 7,
    TAG_TIMEOUT = 15, /* linked timeouts: reaped and ignored */
};

/* One io_uring with the bookkeeping to wait for one tagged operation while
 * recording the others' completions. Used by one thread at a time. */
struct ring {
    struct io_uring uring;
    bool ready;
    bool done[TAG_COUNT];
    int res[TAG_COUNT];
};

struct sendbuf {
    uint8_t *p;
    size_t len;  /* bytes filled */
    size_t off;  /* bytes the kernel has taken */
    bool queued; /* a send is submitted and not yet reaped */
};

struct mig_channel {
    SSL *ssl;
    BIO *bio;
    struct ring ring;
    pthread_mutex_t fd_lock; /* fd against mig_channel_abort */
    int fd;
    atomic_bool aborted;
    bool server;
    bool handshake_done;
    bool failed;     /* a final error happened: fail_msg says which */
    bool eof;        /* the TCP stream ended */
    bool timed_out;  /* the last BIO read or write hit the deadline */
    bool ktls_tx;
    int ktls_ctrl_type; /* record type of the next kTLS control message, 0: data */
    int ktls_errno;     /* why the kernel refused kTLS, 0 if it did not */
    bool ktls_offered;  /* OpenSSL offered us the keys */
    uint64_t deadline;  /* of the call in progress, 0: none */
    int op_timeout_ms;  /* its timeout, for messages */
    int send_timeout_ms;
    int io_errno; /* last socket error, 0: none */
    struct sendbuf sb[2];
    int cur;
    /* First certificate verification failure (verify callback). */
    int vfy_err;
    int vfy_depth;      /* 0: the peer's own certificate, 1+: its issuers */
    char vfy_cn[128];   /* the peer's own certificate */
    char vfy_bad[128];  /* the certificate that failed */
    char vfy_issuer[128];
    char vfy_when[64];
    char *tls_dir;
    char peer_addr[256];
    char peer_name[128];
    char cipher[64];
    char ktls_status[160];
    uint64_t bytes_sent, bytes_received;
    struct tern_err fail;
};

struct mig_listener {
    struct mig_tls *t;
    struct ring ring;
    pthread_mutex_t fd_lock;
    int fd;
    atomic_bool aborted;
    uint16_t port;
    char addr[96];
};

/* ---------------------------------------------------------------- ring */

static int ring_init(struct ring *r, struct tern_err *err)
{
    memset(r, 0, sizeof(*r));
    /* Every operation is waited for within the call that submits it, so
     * completions never need to interrupt the thread (COOP_TASKRUN: no
     * IPI per completion). Older kernels: plain flags. */
    struct io_uring_params p = {.flags = IORING_SETUP_COOP_TASKRUN};
    int rc = io_uring_queue_init_params(RING_ENTRIES, &r->uring, &p);
    if (rc == -EINVAL) {
        memset(&p, 0, sizeof(p));
        rc = io_uring_queue_init_params(RING_ENTRIES, &r->uring, &p);
    }
    if (rc < 0)
        return tern_err_errno(err, -rc, "setting up io_uring");
    r->ready = true;
    return 0;
}

static void ring_exit(struct ring *r)
{
    if (r->ready)
        io_uring_queue_exit(&r->uring);
    r->ready = false;
}

/* Submits the prepared `sqe` with tag `tag`, linked to a timeout firing at
 * `deadline` (0: none). The ring has room: every operation is submitted at
 * once, and at most two are outstanding. */
static int ring_submit(struct ring *r, struct io_uring_sqe *sqe, int tag, uint64_t deadline)
{
    io_uring_sqe_set_data64(sqe, (uint64_t)tag);
    r->done[tag] = false;
    if (deadline) {
        uint64_t now = mig__now_ns();
        uint64_t left = deadline > now ? deadline - now : 1;
        struct __kernel_timespec ts = {
            .tv_sec = (long long)(left / 1000000000ull),
            .tv_nsec = (long long)(left % 1000000000ull),
        };
        sqe->flags |= IOSQE_IO_LINK;
        struct io_uring_sqe *t = io_uring_get_sqe(&r->uring);
        if (!t)
            return -EBUSY;
        io_uring_prep_link_timeout(t, &ts, 0);
        io_uring_sqe_set_data64(t, TAG_TIMEOUT);
        /* The kernel copies ts while submitting, below. */
        int rc;
        do
            rc = io_uring_submit(&r->uring);
        while (rc == -EINTR);
        return rc < 0 ? rc : 0;
    }
    int rc;
    do
        rc = io_uring_submit(&r->uring);
    while (rc == -EINTR);
    return rc < 0 ? rc : 0;
}

static struct io_uring_sqe *ring_sqe(struct ring *r)
{
    return io_uring_get_sqe(&r->uring);
}

/* Waits for the completion of `tag` and returns its result (a negative
 * errno on failure; -ECANCELED when its linked timeout fired). */
static int ring_wait(struct ring *r, int tag)
{
    while (!r->done[tag]) {
        struct io_uring_cqe *cqe;
        int rc = io_uring_wait_cqe(&r->uring, &cqe);
        if (rc == -EINTR)
            continue;
        if (rc < 0)
            return rc;
        uint64_t t = io_uring_cqe_get_data64(cqe);
        if (t < TAG_COUNT) {
            r->done[t] = true;
            r->res[t] = cqe->res;
        }
        io_uring_cqe_seen(&r->uring, cqe);
    }
    r->done[tag] = false;
    return r->res[tag];
}

/* One operation, submitted and waited for. */
static int ring_run(struct ring *r, struct io_uring_sqe *sqe, int tag, uint64_t deadline)
{
    int rc = ring_submit(r, sqe, tag, deadline);
    if (rc < 0)
        return rc;
    return ring_wait(r, tag);
}

/* ------------------------------------------------------------- helpers */

static bool is_aborted(struct mig_channel *c)
{
    return atomic_load(&c->aborted);
}

static void format_addr(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[64], serv[16];
    if (getnameinfo(sa, sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                   : sizeof(struct sockaddr_in),
                    host, sizeof(host), serv, sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV)) {
        snprintf(buf, len, "?");
        return;
    }
    if (sa->sa_family == AF_INET6)
        snprintf(buf, len, "[%s]:%s", host, serv);
    else
        snprintf(buf, len, "%s:%s", host, serv);
}

/* Records the first final failure; later calls repeat it. Returns -1. */
static int channel_fail(struct mig_channel *c, struct tern_err *err)
{
    if (!c->failed) {
        c->failed = true;
        if (err)
            c->fail = *err;
        else
            snprintf(c->fail.msg, sizeof(c->fail.msg), "channel failed");
    }
    return -1;
}

static int check_usable(struct mig_channel *c, const char *what, struct tern_err *err)
{
    if (is_aborted(c))
        return tern_err_set(err, "%s %s: aborted", what, c->peer_addr);
    if (c->failed)
        return tern_err_set(err, "%s %s: channel unusable after an earlier error: %s", what,
                            c->peer_addr, c->fail.msg);
    if (!c->handshake_done)
        return tern_err_set(err, "%s: channel not connected", what);
    return 0;
}

/* ---------------------------------------------------------- send path */

static int sock_errno(int res)
{
    return res == -ECANCELED ? ETIMEDOUT : -res;
}

/* Hands buffer i to the kernel (from where it stopped). */
static int sendbuf_submit(struct mig_channel *c, int i)
{
    struct sendbuf *b = &c->sb[i];
    struct io_uring_sqe *sqe = ring_sqe(&c->ring);
    if (!sqe)
        return -EBUSY;
    io_uring_prep_send(sqe, c->fd, b->p + b->off, b->len - b->off, MSG_NOSIGNAL | MSG_WAITALL);
    int rc = ring_submit(&c->ring, sqe, TAG_SEND0 + i, c->deadline);
    if (rc == 0)
        b->queued = true;
    return rc;
}

/* Waits until buffer i is entirely with the kernel (resubmitting after a
 * short send), then empties it. Records the failure in the channel. */
static int sendbuf_finish(struct mig_channel *c, int i)
{
    struct sendbuf *b = &c->sb[i];
    while (b->len) {
        if (!b->queued) {
            int rc = sendbuf_submit(c, i);
            if (rc < 0) {
                c->io_errno = -rc;
                return -1;
            }
        }
        int res = ring_wait(&c->ring, TAG_SEND0 + i);
        b->queued = false;
        if (res <= 0) {
            if (res == -ECANCELED && !is_aborted(c))
                c->timed_out = true;
            c->io_errno = res == 0 ? EPIPE : sock_errno(res);
            return -1;
        }
        b->off += (size_t)res;
        if (b->off >= b->len)
            b->len = b->off = 0;
    }
    return 0;
}

/* The current buffer is full: wait for the other one (the earlier bytes)
 * to be out, queue the current one, and continue in the other. */
static int sendbuf_rotate(struct mig_channel *c)
{
    int other = c->cur ^ 1;
    if (sendbuf_finish(c, other) < 0)
        return -1;
    int rc = sendbuf_submit(c, c->cur);
    if (rc < 0) {
        c->io_errno = -rc;
        return -1;
    }
    c->cur = other;
    return 0;
}

/* Everything buffered goes out, in order, and is waited for. */
static int flush_all(struct mig_channel *c)
{
    int other = c->cur ^ 1;
    if (sendbuf_finish(c, other) < 0)
        return -1;
    return sendbuf_finish(c, c->cur);
}

static int alloc_sendbufs(struct mig_channel *c)
{
    for (int i = 0; i < 2; i++)
        if (!c->sb[i].p && !(c->sb[i].p = malloc(SEND_BUF_SIZE)))
            return -1;
    return 0;
}

/* kTLS: a record of type `type` (alert, handshake) as one sendmsg with
 * the record type in a control message. */
static int ktls_send_ctrl(struct mig_channel *c, int type, const void *p, size_t len)
{
    char cbuf[CMSG_SPACE(sizeof(unsigned char))];
    memset(cbuf, 0, sizeof(cbuf));
    struct iovec iov = {.iov_base = (void *)p, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                         .msg_controllen = sizeof(cbuf)};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_TLS;
    cm->cmsg_type = TLS_SET_RECORD_TYPE;
    cm->cmsg_len = CMSG_LEN(sizeof(unsigned char));
    *CMSG_DATA(cm) = (unsigned char)type;
    struct io_uring_sqe *sqe = ring_sqe(&c->ring);
    if (!sqe)
        return -1;
    io_uring_prep_sendmsg(sqe, c->fd, &msg, MSG_NOSIGNAL);
    int res = ring_run(&c->ring, sqe, TAG_SENDMSG, c->deadline);
    if (res != (int)len) {
        c->io_errno = res < 0 ? sock_errno(res) : EPIPE;
        return -1;
    }
    return 0;
}

/* kTLS: plaintext from the caller's buffers; the kernel frames and
 * encrypts. */
static int ktls_send_plain(struct mig_channel *c, const void *p, size_t len)
{
    const uint8_t *q = p;
    while (len) {
        struct io_uring_sqe *sqe = ring_sqe(&c->ring);
        if (!sqe)
            return -1;
        io_uring_prep_send(sqe, c->fd, q, len, MSG_NOSIGNAL | MSG_WAITALL);
        int res = ring_run(&c->ring, sqe, TAG_SENDMSG, c->deadline);
        if (res <= 0) {
            if (res == -ECANCELED && !is_aborted(c))
                c->timed_out = true;
            c->io_errno = res == 0 ? EPIPE : sock_errno(res);
            return -1;
        }
        q += res;
        len -= (size_t)res;
    }
    return 0;
}

/* ------------------------------------------------------------ the BIO */

static int bio_write_ex(BIO *bio, const char *in, size_t len, size_t *written)
{
    struct mig_channel *c = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    *written = 0;
    if (c->failed || c->fd < 0)
        return 0;
    if (c->ktls_tx) {
        /* After kTLS is on, OpenSSL writes plaintext: control records
         * (close_notify, alerts) with their type set just before. */
        if (flush_all(c) < 0)
            return 0;
        int rc = c->ktls_ctrl_type ? ktls_send_ctrl(c, c->ktls_ctrl_type, in, len)
                                   : ktls_send_plain(c, in, len);
        if (rc < 0)
            return 0;
        *written = len;
        return 1;
    }
    if (alloc_sendbufs(c) < 0) {
        c->io_errno = ENOMEM;
        return 0;
    }
    while (len) {
        struct sendbuf *b = &c->sb[c->cur];
        size_t room = SEND_BUF_SIZE - b->len;
        if (room == 0) {
            if (sendbuf_rotate(c) < 0)
                return 0;
            continue;
        }
        size_t n = len < room ? len : room;
        memcpy(b->p + b->len, in, n);
        b->len += n;
        in += n;
        len -= n;
        *written += n;
    }
    return 1;
}

static int bio_read_ex(BIO *bio, char *out, size_t len, size_t *readbytes)
{
    struct mig_channel *c = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    *readbytes = 0;
    if (c->failed || c->eof || c->fd < 0 || len == 0)
        return 0;
    /* Whatever we still hold must leave before we wait for an answer. */
    if (c->sb[c->cur].len && flush_all(c) < 0)
        return 0;
    struct io_uring_sqe *sqe = ring_sqe(&c->ring);
    if (!sqe) {
        c->io_errno = EBUSY;
        return 0;
    }
    io_uring_prep_recv(sqe, c->fd, out, len, 0);
    int res = ring_run(&c->ring, sqe, TAG_RECV, c->deadline);
    if (res > 0) {
        *readbytes = (size_t)res;
        return 1;
    }
    if (res == 0) {
        c->eof = true;
        return 0;
    }
    if (res == -ECANCELED && !is_aborted(c)) {
        c->timed_out = true;
        BIO_set_retry_read(bio); /* OpenSSL: WANT_READ, state intact */
        return 0;
    }
    c->io_errno = sock_errno(res);
    return 0;
}

/* Installs the kernel TLS send keys OpenSSL offers (see the top). */
static long bio_set_ktls(struct mig_channel *c, long is_tx, void *ptr)
{
    if (!is_tx || !ptr || c->fd < 0)
        return 0; /* receive offload: not offered for TLS 1.3 by OpenSSL 3.0; not taken */
    c->ktls_offered = true;
    const struct tls_crypto_info *ci = ptr;
    socklen_t len;
    switch (ci->cipher_type) {
    case TLS_CIPHER_AES_GCM_128:
        len = sizeof(struct tls12_crypto_info_aes_gcm_128);
        break;
    case TLS_CIPHER_AES_GCM_256:
        len = sizeof(struct tls12_crypto_info_aes_gcm_256);
        break;
#ifdef TLS_CIPHER_CHACHA20_POLY1305
    case TLS_CIPHER_CHACHA20_POLY1305:
        len = sizeof(struct tls12_crypto_info_chacha20_poly1305);
        break;
#endif
    default:
        c->ktls_errno = EOPNOTSUPP;
        return 0;
    }
    if (setsockopt(c->fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) < 0) {
        c->ktls_errno = errno;
        return 0;
    }
    if (setsockopt(c->fd, SOL_TLS, TLS_TX, ci, len) < 0) {
        c->ktls_errno = errno;
        return 0;
    }
    c->ktls_tx = true;
    return 1;
}

static long bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
    struct mig_channel *c = BIO_get_data(bio);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return flush_all(c) < 0 ? 0 : 1;
    case BIO_CTRL_EOF:
        return c->eof;
    case BIO_CTRL_PENDING:
        return 0;
    case BIO_CTRL_WPENDING:
        return (long)(c->sb[0].len + c->sb[1].len);
    case BIO_CTRL_GET_KTLS_SEND:
        return c->ktls_tx;
    case BIO_CTRL_GET_KTLS_RECV:
        return 0;
    case OSSL_BIO_CTRL_SET_KTLS:
        return bio_set_ktls(c, num, ptr);
    case OSSL_BIO_CTRL_SET_KTLS_TX_SEND_CTRL_MSG:
        c->ktls_ctrl_type = (int)num;
        return 1;
    case OSSL_BIO_CTRL_CLEAR_KTLS_TX_CTRL_MSG:
        c->ktls_ctrl_type = 0;
        return 1;
    default:
        return 0;
    }
}

static int bio_create(BIO *bio)
{
    BIO_set_init(bio, 1);
    return 1;
}

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static void bio_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tern io_uring");
    if (!m)
        return;
    BIO_meth_set_write_ex(m, bio_write_ex);
    BIO_meth_set_read_ex(m, bio_read_ex);
    BIO_meth_set_ctrl(m, bio_ctrl);
    BIO_meth_set_create(m, bio_create);
    bio_method = m;
}

/* ------------------------------------------------ verification, errors */

static int verify_ex_index = -1;
static pthread_once_t verify_once = PTHREAD_ONCE_INIT;

static void verify_index_init(void)
{
    verify_ex_index = SSL_get_ex_new_index(0, "tern channel", NULL, NULL, NULL);
}

static void asn1_time_text(const ASN1_TIME *t, char *buf, size_t len)
{
    buf[0] = '\0';
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return;
    if (t && ASN1_TIME_print(b, t) > 0) {
        int n = BIO_read(b, buf, (int)len - 1);
        buf[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
}

/* Keeps the first verification failure for the error message; OpenSSL's
 * verdict stands. */
static void name_cn(const X509_NAME *n, char *buf, size_t len)
{
    if (!n || X509_NAME_get_text_by_NID((X509_NAME *)n, NID_commonName, buf, (int)len) < 0)
        snprintf(buf, len, "?");
}

static int verify_cb(int ok, X509_STORE_CTX *sc)
{
    if (ok)
        return 1;
    SSL *ssl = X509_STORE_CTX_get_ex_data(sc, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct mig_channel *c = ssl ? SSL_get_ex_data(ssl, verify_ex_index) : NULL;
    if (c && !c->vfy_err) {
        c->vfy_err = X509_STORE_CTX_get_error(sc);
        c->vfy_depth = X509_STORE_CTX_get_error_depth(sc);
        X509 *leaf = X509_STORE_CTX_get0_cert(sc);
        X509 *bad = X509_STORE_CTX_get_current_cert(sc);
        name_cn(leaf ? X509_get_subject_name(leaf) : NULL, c->vfy_cn, sizeof(c->vfy_cn));
        name_cn(leaf ? X509_get_issuer_name(leaf) : NULL, c->vfy_issuer, sizeof(c->vfy_issuer));
        name_cn(bad ? X509_get_subject_name(bad) : NULL, c->vfy_bad, sizeof(c->vfy_bad));
        if (c->vfy_err == X509_V_ERR_CERT_HAS_EXPIRED)
            asn1_time_text(bad ? X509_get0_notAfter(bad) : NULL, c->vfy_when, sizeof(c->vfy_when));
        else if (c->vfy_err == X509_V_ERR_CERT_NOT_YET_VALID)
            asn1_time_text(bad ? X509_get0_notBefore(bad) : NULL, c->vfy_when,
                           sizeof(c->vfy_when));
    }
    return 0;
}

static int verify_error(struct mig_channel *c, const char *what, struct tern_err *err)
{
    switch (c->vfy_err) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        return tern_err_set(err,
                            "%s: peer certificate (CN=%s, issued by CN=%s) is not signed by the "
                            "cluster CA in %s",
                            what, c->vfy_cn, c->vfy_issuer, c->tls_dir);
    case X509_V_ERR_CERT_HAS_EXPIRED:
        if (c->vfy_depth > 0)
            return tern_err_set(err, "%s: the CA certificate (CN=%s) of the peer (CN=%s) expired on %s",
                                what, c->vfy_bad, c->vfy_cn, c->vfy_when);
        return tern_err_set(err, "%s: peer certificate (CN=%s) expired on %s", what, c->vfy_cn,
                            c->vfy_when);
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return tern_err_set(err, "%s: peer certificate (CN=%s) is not valid before %s (clock skew?)",
                            what, c->vfy_depth > 0 ? c->vfy_bad : c->vfy_cn, c->vfy_when);
    case X509_V_ERR_HOSTNAME_MISMATCH:
        return tern_err_set(err, "%s: peer certificate (CN=%s) is not issued to the expected host",
                            what, c->vfy_cn);
    case X509_V_ERR_INVALID_PURPOSE:
        return tern_err_set(err, "%s: peer certificate (CN=%s) is not valid for TLS %s use", what,
                            c->vfy_cn, c->server ? "client" : "server");
    default:
        return tern_err_set(err, "%s: peer certificate (CN=%s) refused: %s", what, c->vfy_cn,
                            X509_verify_cert_error_string(c->vfy_err));
    }
}

/* The reason a TLS call failed, from (in this order) an abort, our own
 * verification of the peer, OpenSSL's error queue (alerts the peer sent
 * us first), a timeout, a socket error, the peer closing. */
static int tls_error(struct mig_channel *c, const char *what, struct tern_err *err)
{
    unsigned long e = ERR_peek_error();
    int reason = e ? ERR_GET_REASON(e) : 0;
    int rc;
    if (is_aborted(c)) {
        rc = tern_err_set(err, "%s: aborted", what);
    } else if (c->vfy_err) {
        rc = verify_error(c, what, err);
    } else if (e && ERR_GET_LIB(e) == ERR_LIB_SSL && reason > SSL_AD_REASON_OFFSET &&
               reason < SSL_AD_REASON_OFFSET + 256) {
        int alert = reason - SSL_AD_REASON_OFFSET;
        switch (alert) {
        case SSL_AD_UNKNOWN_CA:
            rc = tern_err_set(err,
                              "%s: the peer refused our certificate: unknown CA (%s/cert.pem is "
                              "not issued by the CA the peer trusts)",
                              what, c->tls_dir);
            break;
        case SSL_AD_CERTIFICATE_EXPIRED:
            rc = tern_err_set(err, "%s: the peer refused our certificate: it has expired", what);
            break;
        case SSL_AD_BAD_CERTIFICATE:
        case SSL_AD_CERTIFICATE_UNKNOWN:
        case SSL_AD_UNSUPPORTED_CERTIFICATE:
        case SSL_AD_ACCESS_DENIED:
            rc = tern_err_set(err, "%s: the peer refused our certificate (%s)", what,
                              SSL_alert_desc_string_long(alert));
            break;
#ifdef SSL_AD_CERTIFICATE_REQUIRED
        case SSL_AD_CERTIFICATE_REQUIRED:
            rc = tern_err_set(err, "%s: the peer requires a certificate and got none", what);
            break;
#endif
        case SSL_AD_PROTOCOL_VERSION:
            rc = tern_err_set(err, "%s: the peer does not speak TLS 1.3", what);
            break;
        default:
            rc = tern_err_set(err, "%s: the peer sent TLS alert \"%s\"", what,
                              SSL_alert_desc_string_long(alert));
        }
    } else if (e && ERR_GET_LIB(e) == ERR_LIB_SSL &&
               reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
        rc = tern_err_set(err,
                          "%s: the peer presented no certificate (mutual TLS requires one issued "
                          "by the cluster CA)",
                          what);
    } else if (e && ERR_GET_LIB(e) == ERR_LIB_SSL &&
               (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_UNSUPPORTED_PROTOCOL ||
                reason == SSL_R_PACKET_LENGTH_TOO_LONG ||
                reason == SSL_R_UNKNOWN_PROTOCOL)) {
        char buf[200];
        ERR_error_string_n(e, buf, sizeof(buf));
        rc = tern_err_set(err, "%s: the peer does not speak TLS 1.3 (%s)", what, buf);
    } else if (c->timed_out) {
        rc = tern_err_set(err, "%s: timed out after %d ms", what, c->op_timeout_ms);
    } else if (c->io_errno) {
        rc = tern_err_errno(err, c->io_errno, "%s", what);
    } else if (c->eof || (e && ERR_GET_LIB(e) == ERR_LIB_SSL &&
                          reason == SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
        rc = tern_err_set(err, "%s: the peer closed the connection", what);
    } else if (e) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof(buf));
        rc = tern_err_set(err, "%s: %s", what, buf);
    } else {
        rc = tern_err_set(err, "%s: TLS failure", what);
    }
    ERR_clear_error();
    return rc;
}

/* ------------------------------------------------------------ set-up */

int mig_channel__new(struct mig_channel **out, struct mig_tls *t, bool server,
                     struct tern_err *err)
{
    *out = NULL;
    pthread_once(&bio_once, bio_method_init);
    pthread_once(&verify_once, verify_index_init);
    if (!bio_method || verify_ex_index < 0)
        return tern_err_set(err, "OpenSSL: cannot create the io_uring BIO");
    struct mig_channel *c = calloc(1, sizeof(*c));
    if (!c)
        return tern_err_set(err, "out of memory");
    c->fd = -1;
    c->server = server;
    c->send_timeout_ms = MIG_CHANNEL_SEND_TIMEOUT_MS;
    pthread_mutex_init(&c->fd_lock, NULL);
    snprintf(c->peer_addr, sizeof(c->peer_addr), "?");
    snprintf(c->ktls_status, sizeof(c->ktls_status), "not connected");
    if (!(c->tls_dir = strdup(t->dir))) {
        mig_channel_close(c);
        return tern_err_set(err, "out of memory");
    }
    if (ring_init(&c->ring, err) < 0) {
        mig_channel_close(c);
        return -1;
    }
    ERR_clear_error();
    c->ssl = SSL_new(t->ctx);
    c->bio = c->ssl ? BIO_new(bio_method) : NULL;
    if (!c->ssl || !c->bio) {
        BIO_free(c->bio);
        c->bio = NULL;
        ERR_clear_error();
        mig_channel_close(c);
        return tern_err_set(err, "OpenSSL: out of memory");
    }
    BIO_set_data(c->bio, c);
    SSL_set_bio(c->ssl, c->bio, c->bio); /* the SSL owns the BIO from here */
    SSL_set_ex_data(c->ssl, verify_ex_index, c);
    SSL_set_verify(c->ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
    if (t->ktls)
        SSL_set_options(c->ssl, SSL_OP_ENABLE_KTLS);
    else
        SSL_clear_options(c->ssl, SSL_OP_ENABLE_KTLS);
    if (server)
        SSL_set_accept_state(c->ssl);
    else
        SSL_set_connect_state(c->ssl);
    *out = c;
    return 0;
}

/* Publishes the socket so mig_channel_abort can shut it down; refuses if
 * the channel was aborted already. */
static int set_fd(struct mig_channel *c, int fd)
{
    pthread_mutex_lock(&c->fd_lock);
    bool aborted = is_aborted(c);
    if (!aborted)
        c->fd = fd;
    pthread_mutex_unlock(&c->fd_lock);
    if (aborted) {
        close(fd);
        return -1;
    }
    return 0;
}

static void drop_fd(struct mig_channel *c)
{
    pthread_mutex_lock(&c->fd_lock);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    pthread_mutex_unlock(&c->fd_lock);
}

/* Socket buffers, each way (the kernel doubles the value). Left to
 * autotuning they grow to several MiB whenever the receiver lags, and
 * whatever sits in them when the source pauses the guest must still be
 * received before READY: on the test hosts that put 3-13 ms into the pause
 * at 100 MB/s of dirtying. Bounded, the last round starts on an almost
 * empty pipe (0-1 ms), and throughput measured the same (bench/migrate,
 * docs/migration-transport.md). */
#define SOCKET_BUFFER (512 * 1024)

static void tune_socket(int fd)
{
    int one = 1, buf = SOCKET_BUFFER;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
}

static int op_timeout_ms(uint64_t deadline)
{
    if (!deadline)
        return -1;
    uint64_t now = mig__now_ns();
    return deadline > now ? (int)((deadline - now + 999999) / 1000000) : 0;
}

static void after_handshake(struct mig_channel *c)
{
    c->handshake_done = true;
    const char *name = SSL_get_cipher_name(c->ssl);
    snprintf(c->cipher, sizeof(c->cipher), "%s", name ? name : "?");
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    if (!peer || X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName,
                                           c->peer_name, sizeof(c->peer_name)) < 0)
        c->peer_name[0] = '\0';
    if (c->ktls_tx)
        snprintf(c->ktls_status, sizeof(c->ktls_status), "kernel TLS");
    else if (c->ktls_errno)
        snprintf(c->ktls_status, sizeof(c->ktls_status), "userspace (kernel TLS refused: %s)",
                 strerror(c->ktls_errno));
    else if (c->ktls_offered)
        snprintf(c->ktls_status, sizeof(c->ktls_status), "userspace (kernel TLS refused)");
    else if (SSL_get_options(c->ssl) & SSL_OP_ENABLE_KTLS)
        snprintf(c->ktls_status, sizeof(c->ktls_status),
                 "userspace (OpenSSL did not offer kernel TLS for %s)", c->cipher);
    else
        snprintf(c->ktls_status, sizeof(c->ktls_status), "userspace (kernel TLS disabled)");
}

static int handshake(struct mig_channel *c, uint64_t deadline, struct tern_err *err)
{
    char what[320];
    snprintf(what, sizeof(what), "TLS handshake with %s", c->peer_addr);
    c->deadline = deadline;
    c->timed_out = false;
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1 && flush_all(c) == 0) {
        ERR_clear_error();
        after_handshake(c);
        return 0;
    }
    tls_error(c, what, err);
    return channel_fail(c, err);
}

int mig_channel__dial(struct mig_channel *c, const char *host, uint16_t port,
                      const char *peer_name, uint64_t deadline, struct tern_err *err)
{
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", port);
    snprintf(c->peer_addr, sizeof(c->peer_addr), "%.200s:%u", host, port);
    c->op_timeout_ms = op_timeout_ms(deadline);
    if (peer_name && *peer_name) {
        if (SSL_set1_host(c->ssl, peer_name) != 1) {
            ERR_clear_error();
            return tern_err_set(err, "OpenSSL: cannot set the expected peer name");
        }
        SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(host, portstr, &hints, &res);
    if (g != 0)
        return tern_err_set(err, "connecting to %s:%u: cannot resolve %s: %s", host, port, host,
                            g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
    int last = 0;
    bool timed_out = false;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (is_aborted(c))
            break;
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            last = errno;
            continue;
        }
        tune_socket(fd);
        if (set_fd(c, fd) < 0)
            break;
        struct io_uring_sqe *sqe = ring_sqe(&c->ring);
        if (!sqe) {
            last = EBUSY;
            drop_fd(c);
            continue;
        }
        io_uring_prep_connect(sqe, fd, ai->ai_addr, ai->ai_addrlen);
        int r = ring_run(&c->ring, sqe, TAG_CONNECT, deadline);
        if (r == 0) {
            char numeric[96];
            format_addr(ai->ai_addr, numeric, sizeof(numeric));
            if (strcmp(numeric, c->peer_addr) != 0 && strlen(host) + strlen(numeric) < 200)
                snprintf(c->peer_addr, sizeof(c->peer_addr), "%.150s:%u (%.90s)", host, port, numeric);
            break;
        }
        if (r == -ECANCELED && !is_aborted(c))
            timed_out = true;
        last = r == -ECANCELED ? ETIMEDOUT : -r;
        drop_fd(c);
        if (timed_out)
            break;
    }
    freeaddrinfo(res);
    if (is_aborted(c))
        return tern_err_set(err, "connecting to %s:%u: aborted", host, port);
    if (c->fd < 0) {
        if (timed_out)
            return tern_err_set(err, "connecting to %s:%u: timed out after %d ms", host, port,
                                c->op_timeout_ms ? c->op_timeout_ms : op_timeout_ms(deadline));
        return tern_err_errno(err, last ? last : ECONNREFUSED, "connecting to %s:%u", host,
                              port);
    }
    return handshake(c, deadline, err);
}

int mig_channel_connect(struct mig_channel **out, struct mig_tls *t, const char *host,
                        uint16_t port, const char *peer_name, int timeout_ms,
                        struct tern_err *err)
{
    *out = NULL;
    struct mig_channel *c;
    if (mig_channel__new(&c, t, false, err) < 0)
        return -1;
    uint64_t deadline = mig__deadline(timeout_ms);
    if (mig_channel__dial(c, host, port, peer_name, deadline, err) < 0) {
        mig_channel_close(c);
        return -1;
    }
    *out = c;
    return 0;
}

/* ------------------------------------------------------------ listener */

int mig_listen(struct mig_listener **out, struct mig_tls *t, const char *addr, uint16_t port,
               struct tern_err *err)
{
    *out = NULL;
    const char *shown = addr && *addr ? addr : "*";
    struct mig_listener *l = calloc(1, sizeof(*l));
    if (!l)
        return tern_err_set(err, "out of memory");
    l->t = t;
    l->fd = -1;
    pthread_mutex_init(&l->fd_lock, NULL);
    if (ring_init(&l->ring, err) < 0) {
        mig_listener_close(l);
        return -1;
    }
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(addr && *addr ? addr : NULL, portstr, &hints, &res);
    if (g != 0) {
        tern_err_set(err, "listening on %s:%u: cannot resolve %s: %s", shown, port, shown,
                     g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
        mig_listener_close(l);
        return -1;
    }
    int last = 0;
    /* With no address, prefer the IPv6 wildcard (which also takes IPv4). */
    struct addrinfo *pick[2] = {NULL, NULL};
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET6 && !pick[0])
            pick[0] = ai;
        else if (ai->ai_family == AF_INET && !pick[1])
            pick[1] = ai;
    }
    if (addr && *addr) {
        pick[0] = res;
        pick[1] = NULL;
    }
    for (int i = 0; i < 2 && l->fd < 0; i++) {
        struct addrinfo *ai = pick[i];
        if (!ai)
            continue;
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            last = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (ai->ai_family == AF_INET6 && !(addr && *addr)) {
            int zero = 0;
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
        }
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
            last = errno;
            close(fd);
            continue;
        }
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
            l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                     : ((struct sockaddr_in *)&ss)->sin_port);
            format_addr((struct sockaddr *)&ss, l->addr, sizeof(l->addr));
        }
        l->fd = fd;
    }
    freeaddrinfo(res);
    if (l->fd < 0) {
        tern_err_errno(err, last ? last : EADDRNOTAVAIL, "listening on %s:%u", shown, port);
        mig_listener_close(l);
        return -1;
    }
    *out = l;
    return 0;
}

struct mig_tls *mig_listener__tls(struct mig_listener *l)
{
    return l->t;
}

uint16_t mig_listener_port(const struct mig_listener *l)
{
    return l->port;
}

void mig_listener_abort(struct mig_listener *l)
{
    pthread_mutex_lock(&l->fd_lock);
    atomic_store(&l->aborted, true);
    if (l->fd >= 0)
        shutdown(l->fd, SHUT_RDWR); /* wakes a pending accept */
    pthread_mutex_unlock(&l->fd_lock);
}

void mig_listener__stop(struct mig_listener *l)
{
    pthread_mutex_lock(&l->fd_lock);
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
    pthread_mutex_unlock(&l->fd_lock);
}

void mig_listener_close(struct mig_listener *l)
{
    if (!l)
        return;
    mig_listener__stop(l);
    ring_exit(&l->ring);
    pthread_mutex_destroy(&l->fd_lock);
    free(l);
}

int mig_channel__accept(struct mig_channel *c, struct mig_listener *l, uint64_t deadline,
                        bool *handshake_failed, struct tern_err *err)
{
    *handshake_failed = false;
    c->op_timeout_ms = op_timeout_ms(deadline);
    if (atomic_load(&l->aborted))
        return tern_err_set(err, "accepting on %s: aborted", l->addr);
    if (l->fd < 0)
        return tern_err_set(err, "accepting: the listener is closed");
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    struct io_uring_sqe *sqe = ring_sqe(&l->ring);
    if (!sqe)
        return tern_err_set(err, "accepting on %s: io_uring queue full", l->addr);
    io_uring_prep_accept(sqe, l->fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
    int fd = ring_run(&l->ring, sqe, TAG_ACCEPT, deadline);
    if (atomic_load(&l->aborted) || is_aborted(c)) {
        if (fd >= 0)
            close(fd);
        return tern_err_set(err, "accepting on %s: aborted", l->addr);
    }
    if (fd == -ECANCELED)
        return tern_err_set(err, "accepting on %s: no connection within %d ms", l->addr,
                            c->op_timeout_ms);
    if (fd < 0)
        return tern_err_errno(err, -fd, "accepting on %s", l->addr);
    tune_socket(fd);
    format_addr((struct sockaddr *)&ss, c->peer_addr, sizeof(c->peer_addr));
    if (set_fd(c, fd) < 0)
        return tern_err_set(err, "accepting on %s: aborted", l->addr);
    if (handshake(c, deadline, err) < 0) {
        *handshake_failed = !is_aborted(c);
        return -1;
    }
    return 0;
}

int mig_accept(struct mig_listener *l, struct mig_channel **out, int timeout_ms,
               struct tern_err *err)
{
    *out = NULL;
    struct mig_channel *c;
    if (mig_channel__new(&c, l->t, true, err) < 0)
        return -1;
    bool hs_failed;
    if (mig_channel__accept(c, l, mig__deadline(timeout_ms), &hs_failed, err) < 0) {
        mig_channel_close(c);
        return -1;
    }
    *out = c;
    return 0;
}

/* --------------------------------------------------------------- data */

int mig_channel_send(struct mig_channel *c, const struct iovec *iov, int iovcnt,
                     struct tern_err *err)
{
    char what[320];
    snprintf(what, sizeof(what), "sending to %s", c->peer_addr);
    if (check_usable(c, "sending to", err) < 0)
        return -1;
    c->deadline = mig__deadline(c->send_timeout_ms);
    c->op_timeout_ms = c->send_timeout_ms;
    c->timed_out = false;
    uint64_t total = 0;
    ERR_clear_error();
    for (int i = 0; i < iovcnt; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t len = iov[i].iov_len;
        if (c->ktls_tx) {
            if (ktls_send_plain(c, p, len) < 0)
                goto fail;
            total += len;
            continue;
        }
        while (len) {
            size_t n = 0;
            if (SSL_write_ex(c->ssl, p, len, &n) != 1)
                goto fail;
            p += n;
            len -= n;
            total += n;
        }
    }
    /* Return only once the kernel has everything: no operation outlives
     * the call, so the channel can pass to another thread, and the thread
     * can exit (io_uring cancels what an exiting thread left in flight).
     * Leaving the last buffer in flight measured no faster (within noise). */
    if (flush_all(c) < 0)
        goto fail;
    c->bytes_sent += total;
    return 0;
fail:
    tls_error(c, what, err);
    return channel_fail(c, err);
}

int mig_channel__recv_until(struct mig_channel *c, void *buf, size_t len, uint64_t deadline,
                            struct tern_err *err)
{
    char what[320];
    snprintf(what, sizeof(what), "receiving from %s", c->peer_addr);
    if (check_usable(c, "receiving from", err) < 0)
        return -1;
    c->deadline = deadline;
    c->op_timeout_ms = op_timeout_ms(deadline);
    c->timed_out = false;
    uint8_t *p = buf;
    size_t got = 0;
    ERR_clear_error();
    while (got < len) {
        size_t n = 0;
        int r = SSL_read_ex(c->ssl, p + got, len - got, &n);
        if (r == 1) {
            got += n;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN) {
            ERR_clear_error();
            if (got == 0)
                return 0;
            tern_err_set(err, "%s: the peer closed the connection after %zu of %zu bytes", what,
                         got, len);
            return channel_fail(c, err);
        }
        if (e == SSL_ERROR_WANT_READ && c->timed_out && !is_aborted(c)) {
            ERR_clear_error();
            if (got == 0)
                return tern_err_set(err, "%s: nothing received within %d ms", what,
                                    c->op_timeout_ms);
            tern_err_set(err, "%s: timed out after %d ms with %zu of %zu bytes received", what,
                         c->op_timeout_ms, got, len);
            return channel_fail(c, err);
        }
        if (c->eof && !is_aborted(c) && !c->vfy_err && !(ERR_peek_error() &&
                                                          ERR_GET_REASON(ERR_peek_error()) >
                                                              SSL_AD_REASON_OFFSET)) {
            ERR_clear_error();
            tern_err_set(err,
                         "%s: the peer closed the connection without TLS close_notify after %zu "
                         "of %zu bytes",
                         what, got, len);
            return channel_fail(c, err);
        }
        tls_error(c, what, err);
        return channel_fail(c, err);
    }
    c->bytes_received += len;
    return 1;
}

int mig_channel_recv(struct mig_channel *c, void *buf, size_t len, int timeout_ms,
                     struct tern_err *err)
{
    return mig_channel__recv_until(c, buf, len, mig__deadline(timeout_ms), err);
}

int mig_channel_wait_readable(struct mig_channel *c, int timeout_ms, struct tern_err *err)
{
    if (check_usable(c, "waiting for", err) < 0)
        return -1;
    if (SSL_has_pending(c->ssl) || c->eof)
        return 1;
    struct io_uring_sqe *sqe = ring_sqe(&c->ring);
    if (!sqe)
        return tern_err_set(err, "waiting for %s: io_uring queue full", c->peer_addr);
    io_uring_prep_poll_add(sqe, c->fd, POLLIN);
    uint64_t deadline = timeout_ms < 0 ? 0 : mig__now_ns() + (uint64_t)timeout_ms * 1000000ull + 1;
    int res = ring_run(&c->ring, sqe, TAG_POLL, deadline);
    if (is_aborted(c))
        return tern_err_set(err, "waiting for %s: aborted", c->peer_addr);
    if (res > 0)
        return 1;
    if (res == -ECANCELED)
        return 0;
    return tern_err_errno(err, -res, "waiting for %s", c->peer_addr);
}

int mig_channel_wait_readable_or(struct mig_channel *c, int wake_fd, int timeout_ms,
                                 struct tern_err *err)
{
    if (check_usable(c, "waiting for", err) < 0)
        return -1;
    if (SSL_has_pending(c->ssl) || c->eof)
        return 1;
    /* Nothing of the channel is in flight between calls (sends complete
     * within mig_channel_send), so a plain poll on its socket is safe; an
     * abort shuts the socket down, which wakes it. */
    struct pollfd p[2] = {{.fd = c->fd, .events = POLLIN}, {.fd = wake_fd, .events = POLLIN}};
    uint64_t deadline = timeout_ms < 0 ? 0 : mig__now_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        int left = -1;
        if (deadline) {
            uint64_t now = mig__now_ns();
            left = now >= deadline ? 0 : (int)((deadline - now + 999999ull) / 1000000ull);
        }
        int n = poll(p, 2, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return tern_err_errno(err, errno, "waiting for %s", c->peer_addr);
        if (is_aborted(c))
            return tern_err_set(err, "waiting for %s: aborted", c->peer_addr);
        if (p[0].revents)
            return 1;
        if (p[1].revents)
            return 2;
        if (n == 0)
            return 0;
    }
}

void mig_channel_set_send_timeout(struct mig_channel *c, int timeout_ms)
{
    c->send_timeout_ms = timeout_ms;
}

void mig_channel_abort(struct mig_channel *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->fd_lock);
    atomic_store(&c->aborted, true);
    if (c->fd >= 0)
        shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&c->fd_lock);
}

void mig_channel_close(struct mig_channel *c)
{
    if (!c)
        return;
    if (c->ssl && c->handshake_done && !c->failed && !is_aborted(c) && c->fd >= 0) {
        /* close_notify, so the peer can tell a clean end from a cut. */
        c->deadline = mig__deadline(CLOSE_TIMEOUT_MS);
        ERR_clear_error();
        SSL_shutdown(c->ssl);
        flush_all(c);
        ERR_clear_error();
    }
    for (int i = 0; i < 2; i++) {
        if (c->sb[i].queued) {
            /* A send still queued after a failure: end it before its
             * buffer goes away. */
            if (c->fd >= 0)
                shutdown(c->fd, SHUT_RDWR);
            ring_wait(&c->ring, TAG_SEND0 + i);
            c->sb[i].queued = false;
        }
    }
    drop_fd(c);
    ring_exit(&c->ring);
    SSL_free(c->ssl);    /* frees the BIO too */
    for (int i = 0; i < 2; i++)
        free(c->sb[i].p);
    free(c->tls_dir);
    pthread_mutex_destroy(&c->fd_lock);
    free(c);
}

/* -------------------------------------------------------------- facts */

const char *mig_channel_cipher(const struct mig_channel *c)
{
    return c->cipher;
}

bool mig_channel_ktls(const struct mig_channel *c)
{
    return c->ktls_tx;
}

const char *mig_channel_ktls_status(const struct mig_channel *c)
{
    return c->ktls_status;
}

const char *mig_channel_peer_name(const struct mig_channel *c)
{
    return c->peer_name;
}

const char *mig_channel_peer_addr(const struct mig_channel *c)
{
    return c->peer_addr;
}

uint64_t mig_channel_bytes_sent(const struct mig_channel *c)
{
    return c->bytes_sent;
}

uint64_t mig_channel_bytes_received(const struct mig_channel *c)
{
    return c->bytes_received;
}
