/* Ceilings for benchmarks (tests/support/ceilings.h). */
#include "ceilings.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "migrate/channel.h"
#include "migrate/session.h"
#include "migrate/tls.h"

#define TOKEN "ceiling-token"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double ceiling_memcpy_MBps(size_t block, double seconds)
{
    char *a = malloc(block), *b = malloc(block);
    if (!a || !b) {
        free(a);
        free(b);
        return 0;
    }
    memset(a, 0x5a, block);
    memset(b, 0xa5, block);
    uint64_t bytes = 0;
    double t0 = now_s(), t;
    do {
        memcpy(b, a, block);
        __asm__ volatile("" : : "r"(b) : "memory");
        bytes += block;
        t = now_s();
    } while (t - t0 < seconds);
    free(a);
    free(b);
    return (double)bytes / (t - t0) / 1e6;
}

int ceiling_aead_MBps(const char *cipher, size_t record, double seconds, double *MBps,
                      struct tern_err *err)
{
    EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, cipher, NULL);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    unsigned char *in = malloc(record), *out = malloc(record + 64);
    int rc = -1;
    if (!c || !ctx || !in || !out) {
        tern_err_set(err, "AEAD %s: not available", cipher);
        goto out;
    }
    unsigned char key[32], iv[12], aad[13], tag[16];
    memset(key, 7, sizeof(key));
    memset(iv, 9, sizeof(iv));
    memset(aad, 1, sizeof(aad));
    memset(in, 0x33, record);
    if (EVP_EncryptInit_ex2(ctx, c, key, iv, NULL) != 1) {
        tern_err_set(err, "AEAD %s: init failed", cipher);
        goto out;
    }
    uint64_t bytes = 0, seq = 0;
    double t0 = now_s(), t;
    do {
        for (int k = 0; k < 16; k++) {
            int n = 0, f = 0;
            memcpy(iv + 4, &seq, sizeof(seq));
            seq++;
            if (EVP_EncryptInit_ex2(ctx, NULL, NULL, iv, NULL) != 1 ||
                EVP_EncryptUpdate(ctx, NULL, &n, aad, sizeof(aad)) != 1 ||
                EVP_EncryptUpdate(ctx, out, &n, in, (int)record) != 1 ||
                EVP_EncryptFinal_ex(ctx, out + n, &f) != 1 ||
                EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, sizeof(tag), tag) != 1) {
                tern_err_set(err, "AEAD %s: encryption failed", cipher);
                goto out;
            }
            bytes += record;
        }
        t = now_s();
    } while (t - t0 < seconds);
    *MBps = (double)bytes / (t - t0) / 1e6;
    rc = 0;
out:
    ERR_clear_error();
    free(in);
    free(out);
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_free(c);
    return rc;
}

const char *ceiling_suite_cipher(const char *suite)
{
    if (!suite)
        return NULL;
    if (!strcmp(suite, "TLS_AES_128_GCM_SHA256"))
        return "AES-128-GCM";
    if (!strcmp(suite, "TLS_AES_256_GCM_SHA384"))
        return "AES-256-GCM";
    if (!strcmp(suite, "TLS_CHACHA20_POLY1305_SHA256"))
        return "ChaCha20-Poly1305";
    return NULL;
}

/* ------------------------------------------------------- TLS ceiling */

static double thread_cpu_s(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) < 0)
        return 0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct tls_run {
    const struct ceiling_tls_opts *o;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint16_t port;       /* set by the server once listening */
    bool server_failed;
    struct mig_session *server, *client;
    struct tern_err server_err;
    double t_start;      /* first send */
};

struct stream_run {
    struct tls_run *run;
    struct mig_channel *c;
    uint64_t bytes;
    double t_end;
    double cpu_s; /* this thread's CPU time (user + system) */
    int rc;
    struct tern_err err;
};

static int enter_netns(const char *ns, struct tern_err *err)
{
    if (!ns || !*ns)
        return 0;
    char path[512];
    if (strchr(ns, '/'))
        snprintf(path, sizeof(path), "%s", ns);
    else
        snprintf(path, sizeof(path), "/run/netns/%s", ns);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tern_err_errno(err, errno, "opening network namespace %s", path);
    int rc = setns(fd, CLONE_NEWNET);
    int e = errno;
    close(fd);
    if (rc < 0)
        return tern_err_errno(err, e, "entering network namespace %s", path);
    return 0;
}

static void *server_main(void *arg)
{
    struct tls_run *run = arg;
    const struct ceiling_tls_opts *o = run->o;
    struct mig_tls *t = NULL;
    struct mig_listener *l = NULL;
    struct tern_err *err = &run->server_err;
    int rc = -1;
    if (enter_netns(o->server_netns, err) < 0 || mig_tls_load(&t, o->server_dir, err) < 0)
        goto out;
    if (o->no_ktls)
        mig_tls_set_ktls(t, false);
    if (mig_listen(&l, t, o->listen_addr, 0, err) < 0)
        goto out;
    pthread_mutex_lock(&run->lock);
    run->port = mig_listener_port(l);
    pthread_cond_broadcast(&run->cond);
    pthread_mutex_unlock(&run->lock);
    rc = mig_session_accept(run->server, l, TOKEN, 20000, err);
out:
    mig_listener_close(l);
    mig_tls_free(t);
    pthread_mutex_lock(&run->lock);
    run->server_failed = rc < 0;
    if (rc < 0)
        run->port = 0;
    pthread_cond_broadcast(&run->cond);
    pthread_mutex_unlock(&run->lock);
    return NULL;
}

struct client_job {
    const struct ceiling_tls_opts *o;
    struct mig_session *s;
    struct mig_tls *t;
    uint16_t port;
    int rc;
    struct tern_err err;
};

static void *client_main(void *arg)
{
    struct client_job *j = arg;
    j->rc = -1;
    if (enter_netns(j->o->client_netns, &j->err) < 0 ||
        mig_tls_load(&j->t, j->o->client_dir, &j->err) < 0)
        return NULL;
    if (j->o->no_ktls)
        mig_tls_set_ktls(j->t, false);
    j->rc = mig_session_connect(j->s, j->t, j->o->connect_addr, j->port, NULL, TOKEN,
                                j->o->streams, 20000, &j->err);
    return NULL;
}

static void *sender_main(void *arg)
{
    struct stream_run *s = arg;
    const struct ceiling_tls_opts *o = s->run->o;
    size_t chunk = o->chunk;
    uint8_t *buf = malloc(chunk);
    if (!buf) {
        s->rc = tern_err_set(&s->err, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < chunk; i++)
        buf[i] = (uint8_t)(i * 2654435761u >> 13);
    struct iovec iov = {.iov_base = buf, .iov_len = chunk};
    double end = s->run->t_start + o->seconds;
    while (now_s() < end) {
        if (mig_channel_send(s->c, &iov, 1, &s->err) < 0) {
            s->rc = -1;
            break;
        }
        s->bytes += chunk;
    }
    s->cpu_s = thread_cpu_s();
    free(buf);
    return NULL;
}

static void *receiver_main(void *arg)
{
    struct stream_run *s = arg;
    size_t chunk = s->run->o->chunk;
    uint8_t *buf = malloc(chunk);
    if (!buf) {
        s->rc = tern_err_set(&s->err, "out of memory");
        return NULL;
    }
    for (;;) {
        int r = mig_channel_recv(s->c, buf, chunk, 30000, &s->err);
        if (r < 0)
            s->rc = -1;
        if (r <= 0)
            break;
        s->bytes += chunk;
    }
    s->t_end = now_s();
    s->cpu_s = thread_cpu_s();
    free(buf);
    return NULL;
}

int ceiling_tls(const struct ceiling_tls_opts *opts, struct ceiling_tls_result *r,
                struct tern_err *err)
{
    struct ceiling_tls_opts o = *opts;
    if (!o.listen_addr)
        o.listen_addr = "127.0.0.1";
    if (!o.connect_addr)
        o.connect_addr = o.listen_addr;
    if (o.streams < 1)
        o.streams = 1;
    if (o.streams > MIG_SESSION_MAX_STREAMS)
        return tern_err_set(err, "at most %d streams", MIG_SESSION_MAX_STREAMS);
    if (o.seconds <= 0)
        o.seconds = 2;
    if (!o.chunk)
        o.chunk = 1 << 20;
    memset(r, 0, sizeof(*r));
    r->streams = o.streams;

    struct tls_run run = {.o = &o};
    pthread_mutex_init(&run.lock, NULL);
    pthread_cond_init(&run.cond, NULL);
    run.server = mig_session_new();
    run.client = mig_session_new();
    struct mig_tls *t = NULL;
    int rc = -1;
    pthread_t server;
    bool server_started = false;
    struct stream_run snd[MIG_SESSION_MAX_STREAMS], rcv[MIG_SESSION_MAX_STREAMS];
    pthread_t snd_th[MIG_SESSION_MAX_STREAMS], rcv_th[MIG_SESSION_MAX_STREAMS];
    memset(snd, 0, sizeof(snd));
    memset(rcv, 0, sizeof(rcv));
    if (!run.server || !run.client) {
        tern_err_set(err, "out of memory");
        goto out;
    }
    if (pthread_create(&server, NULL, server_main, &run) != 0) {
        tern_err_set(err, "cannot start a thread");
        goto out;
    }
    server_started = true;
    pthread_mutex_lock(&run.lock);
    while (!run.port && !run.server_failed)
        pthread_cond_wait(&run.cond, &run.lock);
    uint16_t port = run.port;
    pthread_mutex_unlock(&run.lock);
    if (!port) {
        pthread_join(server, NULL);
        server_started = false;
        *err = run.server_err;
        tern_err_prefix(err, "TLS ceiling: receiving side");
        goto out;
    }

    /* The sending side connects from its own thread, which enters the
     * client namespace (setns is per thread; the caller stays put). */
    struct client_job cj = {.o = &o, .s = run.client, .port = port, .err = {.msg = ""}};
    pthread_t client;
    double h0 = now_s();
    if (pthread_create(&client, NULL, client_main, &cj) != 0) {
        tern_err_set(err, "cannot start a thread");
        mig_session_abort(run.server);
        goto out;
    }
    pthread_join(client, NULL);
    t = cj.t;
    int crc = cj.rc;
    struct tern_err cerr = cj.err;
    r->handshake_ms = (now_s() - h0) * 1000;
    if (crc < 0)
        mig_session_abort(run.server);
    pthread_join(server, NULL);
    server_started = false;
    if (crc < 0 || run.server_failed) {
        if (crc < 0)
            *err = cerr;
        else
            *err = run.server_err;
        tern_err_prefix(err, "TLS ceiling: connecting");
        goto out;
    }
    struct mig_channel *c0 = mig_session_channel(run.client, 0);
    snprintf(r->cipher, sizeof(r->cipher), "%s", mig_channel_cipher(c0));
    snprintf(r->send_path, sizeof(r->send_path), "%s", mig_channel_ktls_status(c0));

    run.t_start = now_s();
    int nr = o.streams;
    for (int i = 0; i < nr; i++) {
        rcv[i].run = snd[i].run = &run;
        rcv[i].c = mig_session_channel(run.server, i);
        snd[i].c = mig_session_channel(run.client, i);
        pthread_create(&rcv_th[i], NULL, receiver_main, &rcv[i]);
        pthread_create(&snd_th[i], NULL, sender_main, &snd[i]);
    }
    for (int i = 0; i < nr; i++) {
        pthread_join(snd_th[i], NULL);
        /* Closing the sending channel ends the receiver with close_notify. */
    }
    mig_session_free(run.client);
    run.client = NULL;
    double t_end = run.t_start;
    rc = 0;
    for (int i = 0; i < nr; i++) {
        pthread_join(rcv_th[i], NULL);
        r->bytes += rcv[i].bytes;
        r->sender_cpu_s += snd[i].cpu_s;
        r->receiver_cpu_s += rcv[i].cpu_s;
        if (rcv[i].t_end > t_end)
            t_end = rcv[i].t_end;
        if (snd[i].rc < 0 || rcv[i].rc < 0) {
            *err = snd[i].rc < 0 ? snd[i].err : rcv[i].err;
            tern_err_prefix(err, "TLS ceiling: stream %d", i);
            rc = -1;
        }
    }
    r->seconds = t_end - run.t_start;
    r->MBps = r->seconds > 0 ? (double)r->bytes / r->seconds / 1e6 : 0;
out:
    if (server_started) {
        if (run.server)
            mig_session_abort(run.server);
        pthread_join(server, NULL);
    }
    mig_session_free(run.client);
    mig_session_free(run.server);
    mig_tls_free(t);
    pthread_mutex_destroy(&run.lock);
    pthread_cond_destroy(&run.cond);
    return rc;
}
