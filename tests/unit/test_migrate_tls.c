/* The migration transport: certificates (migrate/certs.c), TLS contexts
 * (migrate/tls.c), channels over io_uring (migrate/channel.c) and token-
 * bound connection sets (migrate/session.c), over loopback with ephemeral
 * ports. Peers that Tern itself would never be (no certificate, expired
 * or foreign certificates that mig_tls_load refuses to load) are played
 * by raw OpenSSL clients and servers. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "migrate/certs.h"
#include "migrate/channel.h"
#include "migrate/session.h"
#include "migrate/tls.h"
#include "proto/record.h"
#include "tests/support/proc.h"
#include "tests/support/tls_certs.h"

#define BIG (64u << 20)
#define TOKEN "token-0123456789abcdef"

static struct test_tls certs;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

#define assert_contains(haystack, needle) assert_contains_at(haystack, needle, __FILE__, __LINE__)
static void assert_contains_at(const char *haystack, const char *needle, const char *file,
                               int line)
{
    if (!strstr(haystack, needle)) {
        print_error("%s:%d: \"%s\" does not contain \"%s\"\n", file, line, haystack, needle);
        fail();
    }
}

static struct mig_tls *load(const char *dir)
{
    struct mig_tls *t = NULL;
    struct tern_err err;
    if (mig_tls_load(&t, dir, &err) < 0) {
        print_error("mig_tls_load %s: %s\n", dir, err.msg);
        fail();
    }
    return t;
}

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

static void sha256(const void *p, size_t n, unsigned char out[32])
{
    unsigned int len = 32;
    assert_int_equal(EVP_Digest(p, n, out, &len, EVP_sha256(), NULL), 1);
}

/* ------------------------------------------------- background callers */

/* A call run in a thread: mig_accept, mig_session_accept, ... */
struct bg {
    pthread_t th;
    int rc;
    struct tern_err err;
    double ms; /* how long the call took */
    /* inputs */
    struct mig_listener *l;
    struct mig_session *s;
    struct mig_channel *c;
    struct mig_tls *t;
    const char *token;
    int timeout_ms;
    int streams;
    uint16_t port;
    void *buf;
    size_t len;
    /* outputs */
    struct mig_channel *out;
};

static void *bg_accept(void *arg)
{
    struct bg *b = arg;
    double t0 = now_ms();
    b->rc = mig_accept(b->l, &b->out, b->timeout_ms, &b->err);
    b->ms = now_ms() - t0;
    return NULL;
}

static void *bg_session_accept(void *arg)
{
    struct bg *b = arg;
    double t0 = now_ms();
    b->rc = mig_session_accept(b->s, b->l, b->token, b->timeout_ms, &b->err);
    b->ms = now_ms() - t0;
    return NULL;
}

static void *bg_session_connect(void *arg)
{
    struct bg *b = arg;
    double t0 = now_ms();
    b->rc = mig_session_connect(b->s, b->t, "127.0.0.1", b->port, NULL, b->token, b->streams,
                                b->timeout_ms, &b->err);
    b->ms = now_ms() - t0;
    return NULL;
}

static void *bg_recv(void *arg)
{
    struct bg *b = arg;
    double t0 = now_ms();
    b->rc = mig_channel_recv(b->c, b->buf, b->len, b->timeout_ms, &b->err);
    b->ms = now_ms() - t0;
    return NULL;
}

static void *bg_send(void *arg)
{
    struct bg *b = arg;
    double t0 = now_ms();
    struct iovec iov = {.iov_base = b->buf, .iov_len = b->len};
    b->rc = mig_channel_send(b->c, &iov, 1, &b->err);
    b->ms = now_ms() - t0;
    return NULL;
}

static void bg_start(struct bg *b, void *(*fn)(void *))
{
    assert_int_equal(pthread_create(&b->th, NULL, fn, b), 0);
}

static void bg_join(struct bg *b)
{
    pthread_join(b->th, NULL);
}

/* A connected channel pair over loopback: client from host-a, server host-b. */
struct pair {
    struct mig_tls *ta, *tb;
    struct mig_listener *l;
    struct mig_channel *client, *server;
};

static void pair_open(struct pair *p)
{
    memset(p, 0, sizeof(*p));
    struct tern_err err;
    p->ta = load(certs.host_a);
    p->tb = load(certs.host_b);
    assert_int_equal(mig_listen(&p->l, p->tb, "127.0.0.1", 0, &err), 0);
    struct bg acc = {.l = p->l, .timeout_ms = 5000};
    bg_start(&acc, bg_accept);
    int rc = mig_channel_connect(&p->client, p->ta, "127.0.0.1", mig_listener_port(p->l),
                                 "host-b", 5000, &err);
    bg_join(&acc);
    if (rc < 0 || acc.rc < 0) {
        print_error("connect: %s / accept: %s\n", rc < 0 ? err.msg : "ok",
                    acc.rc < 0 ? acc.err.msg : "ok");
        fail();
    }
    p->server = acc.out;
}

static void pair_close(struct pair *p)
{
    mig_channel_close(p->client);
    mig_channel_close(p->server);
    mig_listener_close(p->l);
    mig_tls_free(p->ta);
    mig_tls_free(p->tb);
}

/* ---------------------------------------------------- raw OpenSSL peers */

static SSL_CTX *raw_ctx(bool server, const char *dir, bool with_cert)
{
    char path[600];
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    assert_non_null(ctx);
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    if (with_cert) {
        snprintf(path, sizeof(path), "%s/cert.pem", dir);
        assert_int_equal(SSL_CTX_use_certificate_file(ctx, path, SSL_FILETYPE_PEM), 1);
        snprintf(path, sizeof(path), "%s/key.pem", dir);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, path, SSL_FILETYPE_PEM), 1);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    return ctx;
}

static int tcp_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

static int tcp_listen(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

struct raw {
    pthread_t th;
    const char *dir;
    bool with_cert;
    uint16_t port;
    int listen_fd;
    int handshake_rc;
};

/* A client that presents whatever it is given (or nothing) and trusts
 * anything, then waits for the server's verdict. */
static void *raw_client_main(void *arg)
{
    struct raw *r = arg;
    SSL_CTX *ctx = raw_ctx(false, r->dir, r->with_cert);
    int fd = tcp_connect(r->port);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    r->handshake_rc = SSL_connect(ssl);
    char b;
    SSL_read(ssl, &b, 1); /* the server's alert, or its close */
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
}

/* A server with the given certificate that asks for none. */
static void *raw_server_main(void *arg)
{
    struct raw *r = arg;
    SSL_CTX *ctx = raw_ctx(true, r->dir, true);
    int fd = accept(r->listen_fd, NULL, NULL);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    r->handshake_rc = SSL_accept(ssl);
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
}

/* Server side of a handshake with a raw client: returns mig_accept's error. */
static void accept_raw_client(const char *client_dir, bool with_cert, struct tern_err *err)
{
    struct mig_tls *tb = load(certs.host_b);
    struct mig_listener *l;
    assert_int_equal(mig_listen(&l, tb, "127.0.0.1", 0, err), 0);
    struct raw r = {.dir = client_dir, .with_cert = with_cert, .port = mig_listener_port(l)};
    assert_int_equal(pthread_create(&r.th, NULL, raw_client_main, &r), 0);
    struct mig_channel *c = NULL;
    int rc = mig_accept(l, &c, 5000, err);
    pthread_join(r.th, NULL);
    assert_int_equal(rc, -1);
    assert_null(c);
    mig_listener_close(l);
    mig_tls_free(tb);
}

/* ================================================================ tests */

static void test_certs_files_and_modes(void **state)
{
    (void)state;
    char path[700];
    struct stat st;
    snprintf(path, sizeof(path), "%s/key.pem", certs.host_a);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    snprintf(path, sizeof(path), "%s/ca-key.pem", certs.ca);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    snprintf(path, sizeof(path), "%s/cert.pem", certs.host_a);
    assert_int_equal(stat(path, &st), 0);
    snprintf(path, sizeof(path), "%s/ca.pem", certs.host_a);
    assert_int_equal(stat(path, &st), 0);

    struct tern_err err;
    assert_int_equal(mig_certs_init_ca(certs.ca, "again", 10, &err), -1);
    assert_contains(err.msg, "already exists");
    assert_int_equal(mig_certs_issue(certs.ca, certs.root, "bad,name", 10, &err), -1);
    assert_contains(err.msg, "host name must be");
    assert_int_equal(mig_certs_issue(certs.root, certs.root, "host-q", 10, &err), -1);
    assert_contains(err.msg, "ca.pem");
    assert_int_equal(mig_certs_issue(certs.ca, certs.root, "host-q", 0, &err), -1);

    /* An address gets an IP subjectAltName and still loads. */
    char dir[700];
    snprintf(dir, sizeof(dir), "%s/ip", certs.root);
    assert_int_equal(mig_certs_issue(certs.ca, dir, "10.77.0.1", 10, &err), 0);
    struct mig_tls *t = load(dir);
    assert_string_equal(mig_tls_name(t), "10.77.0.1");
    mig_tls_free(t);
}

static void test_load_checks(void **state)
{
    (void)state;
    struct mig_tls *t = load(certs.host_a);
    assert_string_equal(mig_tls_name(t), "host-a");
    assert_string_equal(mig_tls_dir(t), certs.host_a);
    assert_true(mig_tls_ktls_enabled(t));
    mig_tls_free(t);

    struct tern_err err;
    char dir[700], path[800], cmd[2000];
    /* Missing directory / file: the file is named. */
    snprintf(dir, sizeof(dir), "%s/nowhere", certs.root);
    assert_int_equal(mig_tls_load(&t, dir, &err), -1);
    assert_null(t);
    assert_contains(err.msg, "nowhere/ca.pem");
    assert_contains(err.msg, "No such file");

    snprintf(dir, sizeof(dir), "%s/partial", certs.root);
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(cmd, sizeof(cmd), "cp %s/ca.pem %s/cert.pem %s/", certs.host_a, certs.host_a, dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(mig_tls_load(&t, dir, &err), -1);
    assert_contains(err.msg, "partial/key.pem");

    /* Key of another host. */
    snprintf(cmd, sizeof(cmd), "cp %s/key.pem %s/", certs.host_b, dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(mig_tls_load(&t, dir, &err), -1);
    assert_contains(err.msg, "key.pem does not match");

    /* Not PEM at all. */
    snprintf(path, sizeof(path), "%s/ca.pem", dir);
    FILE *f = fopen(path, "w");
    fputs("not a certificate\n", f);
    fclose(f);
    assert_int_equal(mig_tls_load(&t, dir, &err), -1);
    assert_contains(err.msg, "holds no PEM certificate");

    /* Our own certificate: expired, not yet valid, from another CA. */
    assert_int_equal(mig_tls_load(&t, certs.expired, &err), -1);
    assert_contains(err.msg, "expired on");
    assert_contains(err.msg, "CN=host-e");
    assert_int_equal(mig_tls_load(&t, certs.future, &err), -1);
    assert_contains(err.msg, "not valid before");
    assert_int_equal(mig_tls_load(&t, certs.rogue, &err), -1);
    assert_contains(err.msg, "is not issued by the CA in");
}

/* 64 MiB each way... one way is enough for the hash; a small answer comes
 * back to show both directions work. */
static void test_round_trip_one_stream(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p);
    assert_string_equal(mig_channel_cipher(p.client), "TLS_AES_128_GCM_SHA256");
    assert_string_equal(mig_channel_cipher(p.server), "TLS_AES_128_GCM_SHA256");
    assert_string_equal(mig_channel_peer_name(p.client), "host-b");
    assert_string_equal(mig_channel_peer_name(p.server), "host-a");
    assert_contains(mig_channel_peer_addr(p.server), "127.0.0.1:");
    if (!mig_tls_kernel_has_ktls()) {
        assert_false(mig_channel_ktls(p.client));
        assert_contains(mig_channel_ktls_status(p.client), "userspace");
    }

    uint8_t *out = malloc(BIG), *in = malloc(BIG);
    assert_non_null(out);
    assert_non_null(in);
    fill(out, BIG, 1);
    unsigned char h_out[32], h_in[32];
    sha256(out, BIG, h_out);
    struct bg rcv = {.c = p.server, .buf = in, .len = BIG, .timeout_ms = 30000};
    bg_start(&rcv, bg_recv);
    struct tern_err err;
    /* Three pieces in one call: iovecs are sent in order. */
    struct iovec iov[3] = {{out, 100}, {out + 100, (BIG - 100) / 2},
                           {out + 100 + (BIG - 100) / 2, BIG - 100 - (BIG - 100) / 2}};
    assert_int_equal(mig_channel_send(p.client, iov, 3, &err), 0);
    bg_join(&rcv);
    assert_int_equal(rcv.rc, 1);
    sha256(in, BIG, h_in);
    assert_memory_equal(h_in, h_out, 32);
    assert_int_equal(mig_channel_bytes_sent(p.client), BIG);
    assert_int_equal(mig_channel_bytes_received(p.server), BIG);

    struct iovec back = {.iov_base = "ready", .iov_len = 5};
    char answer[5];
    assert_int_equal(mig_channel_send(p.server, &back, 1, &err), 0);
    assert_int_equal(mig_channel_recv(p.client, answer, 5, 5000, &err), 1);
    assert_memory_equal(answer, "ready", 5);

    /* A clean close reads as 0 on the other side. */
    mig_channel_close(p.client);
    p.client = NULL;
    assert_int_equal(mig_channel_recv(p.server, answer, 1, 5000, &err), 0);
    free(out);
    free(in);
    pair_close(&p);
}

struct stream_job {
    pthread_t th;
    struct mig_channel *c;
    bool sender;
    int index;
    uint8_t *buf;
    size_t len;
    int rc;
    struct tern_err err;
};

static void *stream_main(void *arg)
{
    struct stream_job *j = arg;
    uint32_t idx = (uint32_t)j->index;
    if (j->sender) {
        struct iovec iov[2] = {{&idx, sizeof(idx)}, {j->buf, j->len}};
        j->rc = mig_channel_send(j->c, iov, 2, &j->err);
    } else {
        uint32_t got = 0xffffffff;
        j->rc = mig_channel_recv(j->c, &got, sizeof(got), 30000, &j->err) == 1 &&
                        got == idx &&
                        mig_channel_recv(j->c, j->buf, j->len, 30000, &j->err) == 1
                    ? 0
                    : -1;
    }
    return NULL;
}

static void session_pair(struct mig_tls *ta, struct mig_tls *tb, int streams,
                         struct mig_session **client, struct mig_session **server)
{
    struct tern_err err;
    struct mig_listener *l;
    assert_int_equal(mig_listen(&l, tb, "127.0.0.1", 0, &err), 0);
    struct bg acc = {.l = l, .s = mig_session_new(), .token = TOKEN, .timeout_ms = 10000};
    bg_start(&acc, bg_session_accept);
    struct mig_session *c = mig_session_new();
    int rc = mig_session_connect(c, ta, "127.0.0.1", mig_listener_port(l), "host-b", TOKEN,
                                 streams, 10000, &err);
    bg_join(&acc);
    if (rc < 0 || acc.rc < 0) {
        print_error("session connect: %s / accept: %s\n", rc < 0 ? err.msg : "ok",
                    acc.rc < 0 ? acc.err.msg : "ok");
        fail();
    }
    mig_listener_close(l);
    *client = c;
    *server = acc.s;
}

static void run_streams(int streams)
{
    struct mig_tls *ta = load(certs.host_a), *tb = load(certs.host_b);
    struct mig_session *cs, *ss;
    session_pair(ta, tb, streams, &cs, &ss);
    assert_int_equal(mig_session_streams(cs), streams);
    assert_int_equal(mig_session_streams(ss), streams);
    assert_true(mig_session_id(cs) == mig_session_id(ss));
    assert_null(mig_session_channel(cs, streams));

    size_t per = BIG / (size_t)streams;
    uint8_t *out = malloc(BIG), *in = malloc(BIG);
    assert_non_null(out);
    assert_non_null(in);
    fill(out, BIG, 7);
    struct stream_job snd[8], rcv[8];
    for (int i = 0; i < streams; i++) {
        snd[i] = (struct stream_job){.c = mig_session_channel(cs, i), .sender = true,
                                     .index = i, .buf = out + (size_t)i * per, .len = per};
        rcv[i] = (struct stream_job){.c = mig_session_channel(ss, i), .index = i,
                                     .buf = in + (size_t)i * per, .len = per};
        assert_int_equal(pthread_create(&rcv[i].th, NULL, stream_main, &rcv[i]), 0);
        assert_int_equal(pthread_create(&snd[i].th, NULL, stream_main, &snd[i]), 0);
    }
    for (int i = 0; i < streams; i++) {
        pthread_join(snd[i].th, NULL);
        pthread_join(rcv[i].th, NULL);
        if (snd[i].rc < 0 || rcv[i].rc < 0)
            print_error("stream %d: %s / %s\n", i, snd[i].err.msg, rcv[i].err.msg);
        assert_int_equal(snd[i].rc, 0);
        assert_int_equal(rcv[i].rc, 0);
    }
    unsigned char h_out[32], h_in[32];
    sha256(out, BIG, h_out);
    sha256(in, BIG, h_in);
    assert_memory_equal(h_in, h_out, 32);
    free(out);
    free(in);
    mig_session_free(cs);
    mig_session_free(ss);
    mig_tls_free(ta);
    mig_tls_free(tb);
}

static void test_session_one_stream(void **state)
{
    (void)state;
    run_streams(1);
}

static void test_session_four_streams(void **state)
{
    (void)state;
    run_streams(4);
}

static void test_ktls_disabled_path(void **state)
{
    (void)state;
    struct mig_tls *ta = load(certs.host_a), *tb = load(certs.host_b);
    mig_tls_set_ktls(ta, false);
    assert_false(mig_tls_ktls_enabled(ta));
    struct mig_session *cs, *ss;
    session_pair(ta, tb, 1, &cs, &ss);
    struct mig_channel *c = mig_session_channel(cs, 0);
    assert_false(mig_channel_ktls(c));
    assert_contains(mig_channel_ktls_status(c), "disabled");
    struct tern_err err;
    char buf[3];
    struct iovec iov = {.iov_base = "abc", .iov_len = 3};
    assert_int_equal(mig_channel_send(c, &iov, 1, &err), 0);
    assert_int_equal(mig_channel_recv(mig_session_channel(ss, 0), buf, 3, 5000, &err), 1);
    assert_memory_equal(buf, "abc", 3);
    mig_session_free(cs);
    mig_session_free(ss);
    mig_tls_free(ta);
    mig_tls_free(tb);
}

/* Another cluster's host (its own CA in ca.pem) meets ours: the client
 * refuses the server's certificate, the server hears why. */
static void test_wrong_ca_refused_by_client(void **state)
{
    (void)state;
    struct mig_tls *tf = load(certs.foreign), *tb = load(certs.host_b);
    struct tern_err err;
    struct mig_listener *l;
    assert_int_equal(mig_listen(&l, tb, "127.0.0.1", 0, &err), 0);
    struct bg acc = {.l = l, .timeout_ms = 5000};
    bg_start(&acc, bg_accept);
    struct mig_channel *c = NULL;
    assert_int_equal(mig_channel_connect(&c, tf, "127.0.0.1", mig_listener_port(l), NULL, 5000,
                                         &err),
                     -1);
    bg_join(&acc);
    assert_null(c);
    assert_contains(err.msg, "peer certificate (CN=host-b, issued by CN=tern-test-ca) is not signed by the cluster CA in");
    assert_contains(err.msg, certs.foreign);
    assert_int_equal(acc.rc, -1);
    assert_contains(acc.err.msg, "refused our certificate: unknown CA");
    mig_listener_close(l);
    mig_tls_free(tf);
    mig_tls_free(tb);
}

/* A client with a certificate from another CA: the server refuses it. */
static void test_wrong_ca_refused_by_server(void **state)
{
    (void)state;
    struct tern_err err;
    accept_raw_client(certs.rogue, true, &err);
    assert_contains(err.msg, "peer certificate (CN=host-r, issued by CN=tern-other-ca) is not signed by the cluster CA in");
    assert_contains(err.msg, certs.host_b);
    /* And the foreign cluster's own host, through a session: the source
     * learns at connect time, the destination keeps waiting (an
     * unauthenticated peer cannot end it) and names the refusal. */
    struct mig_tls *tf = load(certs.foreign), *tb = load(certs.host_b);
    struct mig_listener *l;
    assert_int_equal(mig_listen(&l, tb, "127.0.0.1", 0, &err), 0);
    struct bg acc = {.l = l, .s = mig_session_new(), .token = TOKEN, .timeout_ms = 1500};
    bg_start(&acc, bg_session_accept);
    struct mig_session *cs = mig_session_new();
    assert_int_equal(mig_session_connect(cs, tf, "127.0.0.1", mig_listener_port(l), NULL, TOKEN,
                                         1, 5000, &err),
                     -1);
    assert_contains(err.msg, "is not signed by the cluster CA");
    bg_join(&acc);
    assert_int_equal(acc.rc, -1);
    assert_contains(acc.err.msg, "no connection within");
    assert_contains(acc.err.msg, "refused 1 connection");
    assert_contains(acc.err.msg, "unknown CA");
    mig_session_free(cs);
    mig_session_free(acc.s);
    mig_listener_close(l);
    mig_tls_free(tf);
    mig_tls_free(tb);
}

static void test_client_without_cert_refused(void **state)
{
    (void)state;
    struct tern_err err;
    accept_raw_client(certs.host_a, false, &err);
    assert_contains(err.msg, "presented no certificate");
}

static void test_expired_cert_refused(void **state)
{
    (void)state;
    struct tern_err err;
    /* An expired client certificate. */
    accept_raw_client(certs.expired, true, &err);
    assert_contains(err.msg, "peer certificate (CN=host-e) expired on");
    /* A not yet valid one. */
    accept_raw_client(certs.future, true, &err);
    assert_contains(err.msg, "peer certificate (CN=host-f) is not valid before");

    /* An expired server certificate. */
    uint16_t port;
    struct raw r = {.dir = certs.expired};
    r.listen_fd = tcp_listen(&port);
    assert_int_equal(pthread_create(&r.th, NULL, raw_server_main, &r), 0);
    struct mig_tls *ta = load(certs.host_a);
    struct mig_channel *c = NULL;
    assert_int_equal(mig_channel_connect(&c, ta, "127.0.0.1", port, NULL, 5000, &err), -1);
    pthread_join(r.th, NULL);
    close(r.listen_fd);
    assert_contains(err.msg, "peer certificate (CN=host-e) expired on");
    mig_tls_free(ta);
}

static void test_peer_name_checked(void **state)
{
    (void)state;
    struct mig_tls *ta = load(certs.host_a), *tb = load(certs.host_b);
    struct tern_err err;
    struct mig_listener *l;
    assert_int_equal(mig_listen(&l, tb, "127.0.0.1", 0, &err), 0);
    struct bg acc = {.l = l, .timeout_ms = 5000};
    bg_start(&acc, bg_accept);
    struct mig_channel *c = NULL;
    assert_int_equal(mig_channel_connect(&c, ta, "127.0.0.1", mig_listener_port(l), "host-z",
                                         5000, &err),
                     -1);
    bg_join(&acc);
    assert_contains(err.msg, "not issued to the expected host");
    assert_int_equal(acc.rc, -1);
    mig_listener_close(l);
    mig_tls_free(ta);
    mig_tls_free(tb);
}

static void test_wrong_token_refused(void **state)
{
    (void)state;
    struct mig_tls *ta = load(certs.host_a), *tb = load(certs.host_b);
    struct tern_err err;
    struct mig_listener *l;
    assert_int_equal(mig_listen(&l, tb, "127.0.0.1", 0, &err), 0);
    uint16_t port = mig_listener_port(l);
    struct bg acc = {.l = l, .s = mig_session_new(), .token = TOKEN, .timeout_ms = 5000};
    bg_start(&acc, bg_session_accept);
    struct mig_session *cs = mig_session_new();
    assert_int_equal(mig_session_connect(cs, ta, "127.0.0.1", port, NULL, "not-the-token", 2,
                                         5000, &err),
                     -1);
    bg_join(&acc);
    assert_contains(err.msg, "refused the connection: wrong migration token");
    assert_int_equal(acc.rc, -1);
    assert_contains(acc.err.msg, "wrong migration token");
    assert_contains(acc.err.msg, "CN=host-a");
    assert_int_equal(mig_session_streams(cs), 0);
    assert_int_equal(mig_session_streams(acc.s), 0);
    /* The listener is finished: the right token now finds nobody. */
    assert_int_equal(mig_session_connect(cs, ta, "127.0.0.1", port, NULL, TOKEN, 1, 5000, &err),
                     -1);
    assert_contains(err.msg, "Connection refused");
    mig_session_free(cs);
    mig_session_free(acc.s);
    mig_listener_close(l);
    mig_tls_free(ta);
    mig_tls_free(tb);
}

static void test_second_set_refused(void **state)
{
    (void)state;
    struct mig_tls *ta = load(certs.host_a), *tb = load(certs.host_b);
    struct tern_err err;
    struct mig_listener *l;
    assert_int_equal(mig_listen(&l, tb, "127.0.0.1", 0, &err), 0);
    uint16_t port = mig_listener_port(l);
    struct bg acc = {.l = l, .s = mig_session_new(), .token = TOKEN, .timeout_ms = 5000};
    bg_start(&acc, bg_session_accept);
    struct mig_session *first = mig_session_new(), *second = mig_session_new();
    assert_int_equal(mig_session_connect(first, ta, "127.0.0.1", port, NULL, TOKEN, 2, 5000,
                                         &err),
                     0);
    bg_join(&acc);
    assert_int_equal(acc.rc, 0);
    /* Same token, same everything: refused, the set is complete. */
    assert_int_equal(mig_session_connect(second, ta, "127.0.0.1", port, NULL, TOKEN, 2, 5000,
                                         &err),
                     -1);
    assert_contains(err.msg, "connecting to 127.0.0.1:");
    assert_contains(err.msg, "Connection refused");
    /* Accepting again on the spent listener fails at once. */
    struct mig_session *again = mig_session_new();
    assert_int_equal(mig_session_accept(again, l, TOKEN, 200, &err), -1);
    mig_session_free(again);
    mig_session_free(first);
    mig_session_free(second);
    mig_session_free(acc.s);
    mig_listener_close(l);
    mig_tls_free(ta);
    mig_tls_free(tb);
}

/* Transport HELLOs written by hand (session.c's format) to make sets that
 * mig_session_connect would never produce. */
static struct mig_channel *hello_channel(struct mig_tls *ta, uint16_t port, uint64_t id,
                                         uint16_t index, uint16_t nr)
{
    struct tern_err err;
    struct mig_channel *c;
    assert_int_equal(mig_channel_connect(&c, ta, "127.0.0.1", port, NULL, 5000, &err), 0);
    struct rec_buf b;
    rec_buf_init(&b);
    rec_begin(&b, REC_TYPE_MIG_XPORT_HELLO, 1, 0);
    rec_put_bytes(&b, "TERNXPRT", 8);
    rec_put_u64(&b, id);
    rec_put_u16(&b, index);
    rec_put_u16(&b, nr);
    rec_put_str(&b, TOKEN);
    rec_end(&b);
    struct iovec iov = {.iov_base = b.data, .iov_len = b.len};
    assert_int_equal(mig_channel_send(c, &iov, 1, &err), 0);
    rec_buf_free(&b);
    return c;
}

static uint32_t read_reply(struct mig_channel *c, char *msg, size_t cap)
{
    struct tern_err err;
    uint8_t hdr[REC_HEADER_SIZE], payload[2048];
    struct rec_header h;
    assert_int_equal(mig_channel_recv(c, hdr, sizeof(hdr), 5000, &err), 1);
    assert_int_equal(rec_parse_header(hdr, &h, &err), 0);
    assert_int_equal(h.type, REC_TYPE_MIG_XPORT_REPLY);
    assert_true(h.length <= sizeof(payload));
    assert_int_equal(mig_channel_recv(c, payload, h.length, 5000, &err), 1);
    struct rec_reader r;
    uint32_t status;
    rec_reader_init(&r, payload, h.length);
    rec_get_u32(&r, &status);
    rec_get_str(&r, msg, cap);
    assert_int_equal(rec_finish(&r, "reply", &err), 0);
    return status;
}

static void bad_set(uint64_t id2, uint16_t index2, uint16_t nr2, uint32_t want_status,
                    const char *want)
{
    struct mig_tls *ta = load(certs.host_a), *tb = load(certs.host_b);
    struct tern_err err;
    struct mig_listener *l;
    assert_int_equal(mig_listen(&l, tb, "127.0.0.1", 0, &err), 0);
    uint16_t port = mig_listener_port(l);
    struct bg acc = {.l = l, .s = mig_session_new(), .token = TOKEN, .timeout_ms = 5000};
    bg_start(&acc, bg_session_accept);
    struct mig_channel *a = hello_channel(ta, port, 1, 0, 2);
    struct mig_channel *b = hello_channel(ta, port, id2, index2, nr2);
    bg_join(&acc);
    assert_int_equal(acc.rc, -1);
    assert_contains(acc.err.msg, want);
    char msg[1024];
    assert_int_equal(read_reply(b, msg, sizeof(msg)), want_status);
    assert_contains(msg, want);
    assert_int_equal(read_reply(a, msg, sizeof(msg)), MIG_XPORT_REFUSED);
    assert_contains(msg, "connection set refused");
    mig_channel_close(a);
    mig_channel_close(b);
    mig_session_free(acc.s);
    mig_listener_close(l);
    mig_tls_free(ta);
    mig_tls_free(tb);
}

static void test_incomplete_or_duplicate_set_refused(void **state)
{
    (void)state;
    bad_set(2, 0, 2, MIG_XPORT_BAD_SET, "another connection set");
    bad_set(1, 0, 2, MIG_XPORT_BAD_SET, "stream 0 connected twice");
    bad_set(1, 1, 3, MIG_XPORT_BAD_SET, "differs from the set's 2");
    bad_set(1, 5, 2, MIG_XPORT_BAD_SET, "not below the count");
}

/* The receiver goes away in the middle of 64 MiB: the sender gets an
 * error, quickly, not a hang. */
static void test_receiver_closes_mid_transfer(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p);
    uint8_t *out = malloc(BIG);
    assert_non_null(out);
    fill(out, BIG, 3);
    struct bg snd = {.c = p.client, .buf = out, .len = BIG};
    bg_start(&snd, bg_send);
    char buf[65536];
    struct tern_err err;
    assert_int_equal(mig_channel_recv(p.server, buf, sizeof(buf), 5000, &err), 1);
    mig_channel_close(p.server); /* with unread data: the kernel resets */
    p.server = NULL;
    bg_join(&snd);
    assert_int_equal(snd.rc, -1);
    assert_contains(snd.err.msg, "sending to 127.0.0.1:");
    assert_true(snd.ms < 10000);
    /* The channel stays failed. */
    struct iovec iov = {.iov_base = out, .iov_len = 1};
    assert_int_equal(mig_channel_send(p.client, &iov, 1, &err), -1);
    assert_contains(err.msg, "unusable after an earlier error");
    free(out);
    pair_close(&p);
}

/* The sender dies in the middle of a message (no close_notify). */
static void test_sender_cut_mid_message(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p);
    uint8_t *in = malloc(BIG), *out = malloc(1 << 20);
    assert_non_null(in);
    assert_non_null(out);
    struct bg rcv = {.c = p.server, .buf = in, .len = BIG, .timeout_ms = -1};
    bg_start(&rcv, bg_recv);
    struct tern_err err;
    struct iovec iov = {.iov_base = out, .iov_len = 1 << 20};
    assert_int_equal(mig_channel_send(p.client, &iov, 1, &err), 0);
    mig_channel_abort(p.client); /* a cut, not a goodbye */
    bg_join(&rcv);
    assert_int_equal(rcv.rc, -1);
    assert_contains(rcv.err.msg, "closed the connection without TLS close_notify after 1048576 of");
    free(in);
    free(out);
    pair_close(&p);
}

static void test_timeouts(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p);
    struct tern_err err;
    char buf[4];
    /* Nothing to read: a timeout, and the channel is still good. */
    double t0 = now_ms();
    assert_int_equal(mig_channel_recv(p.server, buf, 4, 200, &err), -1);
    double took = now_ms() - t0;
    assert_contains(err.msg, "nothing received within 200 ms");
    assert_true(took >= 190 && took < 3000);
    assert_int_equal(mig_channel_wait_readable(p.server, 0, &err), 0);
    assert_int_equal(mig_channel_wait_readable(p.server, 100, &err), 0);
    struct iovec iov = {.iov_base = "ping", .iov_len = 4};
    assert_int_equal(mig_channel_send(p.client, &iov, 1, &err), 0);
    assert_int_equal(mig_channel_wait_readable(p.server, 5000, &err), 1);
    assert_int_equal(mig_channel_recv(p.server, buf, 4, 5000, &err), 1);
    assert_memory_equal(buf, "ping", 4);

    /* A receiver that stops reading: the send times out. */
    mig_channel_set_send_timeout(p.client, 300);
    uint8_t *big = calloc(1, BIG);
    struct iovec bigv = {.iov_base = big, .iov_len = BIG};
    t0 = now_ms();
    int rc = mig_channel_send(p.client, &bigv, 1, &err);
    took = now_ms() - t0;
    assert_int_equal(rc, -1);
    assert_contains(err.msg, "timed out after 300 ms");
    assert_true(took < 5000);
    free(big);
    pair_close(&p);

    /* Accept with nobody coming. */
    struct mig_tls *tb = load(certs.host_b), *ta = load(certs.host_a);
    struct mig_listener *l;
    assert_int_equal(mig_listen(&l, tb, "127.0.0.1", 0, &err), 0);
    struct mig_channel *c = NULL;
    assert_int_equal(mig_accept(l, &c, 150, &err), -1);
    assert_contains(err.msg, "no connection within 150 ms");
    struct mig_session *s = mig_session_new();
    assert_int_equal(mig_session_accept(s, l, TOKEN, 150, &err), -1);
    assert_contains(err.msg, "no connection within");
    mig_session_free(s);
    mig_listener_close(l);

    /* A server that accepts TCP but never speaks TLS: handshake timeout. */
    uint16_t port;
    int fd = tcp_listen(&port);
    t0 = now_ms();
    assert_int_equal(mig_channel_connect(&c, ta, "127.0.0.1", port, NULL, 300, &err), -1);
    took = now_ms() - t0;
    close(fd);
    assert_contains(err.msg, "TLS handshake with 127.0.0.1:");
    assert_contains(err.msg, "timed out");
    assert_true(took >= 290 && took < 3000);
    mig_tls_free(ta);
    mig_tls_free(tb);
}

static void test_connection_refused_names_address(void **state)
{
    (void)state;
    struct mig_tls *ta = load(certs.host_a);
    uint16_t port;
    int fd = tcp_listen(&port);
    close(fd); /* a port nobody listens on now */
    struct tern_err err;
    struct mig_channel *c = NULL;
    char want[64];
    snprintf(want, sizeof(want), "connecting to 127.0.0.1:%u: Connection refused", port);
    assert_int_equal(mig_channel_connect(&c, ta, "127.0.0.1", port, NULL, 2000, &err), -1);
    assert_contains(err.msg, want);
    assert_int_equal(mig_channel_connect(&c, ta, "no-such-host.invalid", port, NULL, 2000, &err),
                     -1);
    assert_contains(err.msg, "cannot resolve no-such-host.invalid");
    struct mig_listener *l;
    assert_int_equal(mig_listen(&l, ta, "127.0.0.1", 0, &err), 0);
    struct mig_listener *l2;
    assert_int_equal(mig_listen(&l2, ta, "127.0.0.1", mig_listener_port(l), &err), -1);
    assert_contains(err.msg, "listening on 127.0.0.1:");
    assert_contains(err.msg, "in use");
    mig_listener_close(l);
    mig_tls_free(ta);
}

/* Cancel: another thread unblocks a receive, an accept, a session
 * accept, a session connect in its handshake. */
static void test_abort_unblocks(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p);
    char buf[16];
    struct bg rcv = {.c = p.server, .buf = buf, .len = sizeof(buf), .timeout_ms = -1};
    bg_start(&rcv, bg_recv);
    test_sleep_ms(100);
    double t0 = now_ms();
    mig_channel_abort(p.server);
    bg_join(&rcv);
    assert_true(now_ms() - t0 < 2000);
    assert_int_equal(rcv.rc, -1);
    assert_contains(rcv.err.msg, "aborted");
    struct tern_err err;
    assert_int_equal(mig_channel_recv(p.server, buf, 1, 100, &err), -1);
    assert_contains(err.msg, "aborted");
    pair_close(&p);

    struct mig_tls *tb = load(certs.host_b), *ta = load(certs.host_a);
    struct mig_listener *l;
    assert_int_equal(mig_listen(&l, tb, "127.0.0.1", 0, &err), 0);
    struct bg acc = {.l = l, .timeout_ms = -1};
    bg_start(&acc, bg_accept);
    test_sleep_ms(100);
    mig_listener_abort(l);
    bg_join(&acc);
    assert_int_equal(acc.rc, -1);
    assert_contains(acc.err.msg, "aborted");
    mig_listener_close(l);

    assert_int_equal(mig_listen(&l, tb, "127.0.0.1", 0, &err), 0);
    struct bg sacc = {.l = l, .s = mig_session_new(), .token = TOKEN, .timeout_ms = -1};
    bg_start(&sacc, bg_session_accept);
    test_sleep_ms(100);
    mig_session_abort(sacc.s);
    bg_join(&sacc);
    assert_int_equal(sacc.rc, -1);
    assert_contains(sacc.err.msg, "aborted");
    mig_session_free(sacc.s);
    mig_listener_close(l);

    /* A session connect stuck in its handshake (the server never speaks). */
    uint16_t port;
    int fd = tcp_listen(&port);
    struct bg con = {.s = mig_session_new(), .t = ta, .port = port, .token = TOKEN,
                     .streams = 2, .timeout_ms = -1};
    bg_start(&con, bg_session_connect);
    test_sleep_ms(150);
    mig_session_abort(con.s);
    bg_join(&con);
    close(fd);
    assert_int_equal(con.rc, -1);
    assert_contains(con.err.msg, "aborted");
    mig_session_free(con.s);
    mig_tls_free(ta);
    mig_tls_free(tb);
}

static void test_session_argument_checks(void **state)
{
    (void)state;
    struct mig_tls *ta = load(certs.host_a);
    struct mig_session *s = mig_session_new();
    struct tern_err err;
    assert_int_equal(mig_session_connect(s, ta, "127.0.0.1", 1, NULL, "", 1, 100, &err), -1);
    assert_contains(err.msg, "no migration token");
    assert_int_equal(mig_session_connect(s, ta, "127.0.0.1", 1, NULL, TOKEN, 0, 100, &err), -1);
    assert_contains(err.msg, "streams must be");
    assert_int_equal(mig_session_connect(s, ta, "127.0.0.1", 1, NULL, TOKEN,
                                         MIG_SESSION_MAX_STREAMS + 1, 100, &err),
                     -1);
    char longtok[MIG_TOKEN_MAX + 2];
    memset(longtok, 'x', sizeof(longtok) - 1);
    longtok[sizeof(longtok) - 1] = '\0';
    assert_int_equal(mig_session_connect(s, ta, "127.0.0.1", 1, NULL, longtok, 1, 100, &err), -1);
    assert_contains(err.msg, "longer than");
    mig_session_free(s);
    mig_session_free(NULL);
    mig_channel_close(NULL);
    mig_tls_free(ta);
}

static int group_setup(void **state)
{
    (void)state;
    char msg[1024];
    if (test_tls_make(&certs, msg, sizeof(msg)) < 0) {
        fprintf(stderr, "%s\n", msg);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    test_tls_destroy(&certs);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_certs_files_and_modes),
        cmocka_unit_test(test_load_checks),
        cmocka_unit_test(test_round_trip_one_stream),
        cmocka_unit_test(test_session_one_stream),
        cmocka_unit_test(test_session_four_streams),
        cmocka_unit_test(test_ktls_disabled_path),
        cmocka_unit_test(test_wrong_ca_refused_by_client),
        cmocka_unit_test(test_wrong_ca_refused_by_server),
        cmocka_unit_test(test_client_without_cert_refused),
        cmocka_unit_test(test_expired_cert_refused),
        cmocka_unit_test(test_peer_name_checked),
        cmocka_unit_test(test_wrong_token_refused),
        cmocka_unit_test(test_second_set_refused),
        cmocka_unit_test(test_incomplete_or_duplicate_set_refused),
        cmocka_unit_test(test_receiver_closes_mid_transfer),
        cmocka_unit_test(test_sender_cut_mid_message),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_connection_refused_names_address),
        cmocka_unit_test(test_abort_unblocks),
        cmocka_unit_test(test_session_argument_checks),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
