/* TLS context for the migration transport: loading and checking a
 * --tls-dir (migrate/tls.h). */
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "transport_internal.h"

#define CIPHERSUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
/* OpenSSL reads ahead up to this much ciphertext per call into its own
 * buffer (the channel receives straight into it). Larger buffers measured
 * slower: the ciphertext leaves the cache before it is decrypted. */
#define READ_BUFFER_LEN (64u << 10)

uint64_t mig__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t mig__deadline(int timeout_ms)
{
    if (timeout_ms < 0)
        return 0;
    return mig__now_ns() + (uint64_t)timeout_ms * 1000000ull;
}

const char *mig__ossl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (!e)
        snprintf(buf, len, "unknown OpenSSL error");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

int mig__path_in(char *out, size_t cap, const char *dir, const char *name, struct tern_err *err)
{
    if ((size_t)snprintf(out, cap, "%s/%s", dir, name) >= cap)
        return tern_err_set(err, "path too long: %s/%s", dir, name);
    return 0;
}

/* Opens the file for reading, to name it (and the reason) in the error
 * before OpenSSL's less helpful messages could. */
static int check_readable(const char *path, struct tern_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tern_err_errno(err, errno, "cannot read %s", path);
    close(fd);
    return 0;
}

static void print_time(const ASN1_TIME *t, char *buf, size_t len)
{
    BIO *b = BIO_new(BIO_s_mem());
    buf[0] = '\0';
    if (!b)
        return;
    if (ASN1_TIME_print(b, t) > 0) {
        int n = BIO_read(b, buf, (int)len - 1);
        buf[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
}

static void cert_cn(X509 *x, char *buf, size_t len)
{
    buf[0] = '\0';
    X509_NAME *n = x ? X509_get_subject_name(x) : NULL;
    if (!n || X509_NAME_get_text_by_NID(n, NID_commonName, buf, (int)len) < 0)
        snprintf(buf, len, "?");
}

/* Reads every certificate in ca.pem into the context's trust store (and
 * nothing else: no system store). */
static int load_ca(SSL_CTX *ctx, const char *path, struct tern_err *err)
{
    char why[256];
    BIO *b = BIO_new_file(path, "r");
    if (!b)
        return tern_err_set(err, "cannot read %s: %s", path, mig__ossl_reason(why, sizeof(why)));
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    int n = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        int ok = X509_STORE_add_cert(store, x);
        X509_free(x);
        if (!ok) {
            BIO_free(b);
            return tern_err_set(err, "%s: %s", path, mig__ossl_reason(why, sizeof(why)));
        }
        n++;
    }
    ERR_clear_error(); /* the end of the file shows up as a PEM "no start line" error */
    BIO_free(b);
    if (n == 0)
        return tern_err_set(err, "%s holds no PEM certificate (expected the cluster CA)", path);
    return 0;
}

/* Our own certificate must verify against ca.pem, now, for both TLS client
 * and server use: otherwise every peer would refuse it, with a less clear
 * message on the other host. */
static int check_own_cert(SSL_CTX *ctx, const char *cert_path, const char *ca_path,
                          struct tern_err *err)
{
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    STACK_OF(X509) *chain = NULL;
    SSL_CTX_get0_chain_certs(ctx, &chain);
    X509_STORE_CTX *sc = X509_STORE_CTX_new();
    if (!sc)
        return tern_err_set(err, "out of memory");
    int rc = -1;
    char cn[256], when[64];
    cert_cn(cert, cn, sizeof(cn));
    if (!X509_STORE_CTX_init(sc, SSL_CTX_get_cert_store(ctx), cert, chain)) {
        char why[256];
        tern_err_set(err, "checking %s: %s", cert_path, mig__ossl_reason(why, sizeof(why)));
        goto out;
    }
    if (X509_verify_cert(sc) != 1) {
        int e = X509_STORE_CTX_get_error(sc);
        X509 *bad = X509_STORE_CTX_get_current_cert(sc);
        switch (e) {
        case X509_V_ERR_CERT_HAS_EXPIRED:
            print_time(X509_get0_notAfter(bad ? bad : cert), when, sizeof(when));
            if (bad && bad != cert)
                tern_err_set(err, "the CA certificate in %s expired on %s", ca_path, when);
            else
                tern_err_set(err, "%s (CN=%s) expired on %s", cert_path, cn, when);
            break;
        case X509_V_ERR_CERT_NOT_YET_VALID:
            print_time(X509_get0_notBefore(bad ? bad : cert), when, sizeof(when));
            tern_err_set(err, "%s (CN=%s) is not valid before %s (is the clock right?)",
                         bad && bad != cert ? ca_path : cert_path, cn, when);
            break;
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
            tern_err_set(err, "%s (CN=%s) is not issued by the CA in %s", cert_path, cn,
                         ca_path);
            break;
        default:
            tern_err_set(err, "%s (CN=%s) does not verify against %s: %s", cert_path, cn,
                         ca_path, X509_verify_cert_error_string(e));
        }
        goto out;
    }
    if (X509_check_purpose(cert, X509_PURPOSE_SSL_CLIENT, 0) != 1 ||
        X509_check_purpose(cert, X509_PURPOSE_SSL_SERVER, 0) != 1) {
        tern_err_set(err,
                     "%s (CN=%s) is not valid for both TLS client and server use "
                     "(extendedKeyUsage must allow serverAuth and clientAuth)",
                     cert_path, cn);
        goto out;
    }
    rc = 0;
out:
    X509_STORE_CTX_free(sc);
    ERR_clear_error();
    return rc;
}

int mig_tls_load(struct mig_tls **out, const char *dir, struct tern_err *err)
{
    char ca[4096], cert[4096], key[4096], why[256];
    *out = NULL;
    if (!dir || !*dir)
        return tern_err_set(err, "no TLS directory given");
    if (mig__path_in(ca, sizeof(ca), dir, "ca.pem", err) < 0 ||
        mig__path_in(cert, sizeof(cert), dir, "cert.pem", err) < 0 ||
        mig__path_in(key, sizeof(key), dir, "key.pem", err) < 0)
        return -1;
    if (check_readable(ca, err) < 0 || check_readable(cert, err) < 0 ||
        check_readable(key, err) < 0)
        return -1;

    ERR_clear_error();
    struct mig_tls *t = calloc(1, sizeof(*t));
    if (!t || !(t->dir = strdup(dir))) {
        free(t);
        return tern_err_set(err, "out of memory");
    }
    t->ktls = true;
    SSL_CTX *ctx = t->ctx = SSL_CTX_new(TLS_method());
    if (!ctx) {
        tern_err_set(err, "creating TLS context: %s", mig__ossl_reason(why, sizeof(why)));
        goto fail;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_ciphersuites(ctx, CIPHERSUITES)) {
        tern_err_set(err, "configuring TLS 1.3: %s", mig__ossl_reason(why, sizeof(why)));
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    /* Send only cert.pem's chain, not the CA the peer has anyway. */
    SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, READ_BUFFER_LEN);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_verify_depth(ctx, 4);

    if (load_ca(ctx, ca, err) < 0)
        goto fail;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        tern_err_set(err, "%s is not a usable PEM certificate: %s", cert,
                     mig__ossl_reason(why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_error();
        if (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
            tern_err_set(err, "%s does not match the certificate in %s", key, cert);
        else
            tern_err_set(err, "%s is not a usable PEM private key: %s", key,
                         mig__ossl_reason(why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        tern_err_set(err, "%s does not match the certificate in %s", key, cert);
        goto fail;
    }
    if (check_own_cert(ctx, cert, ca, err) < 0)
        goto fail;
    cert_cn(SSL_CTX_get0_certificate(ctx), t->name, sizeof(t->name));
    ERR_clear_error();
    *out = t;
    return 0;
fail:
    ERR_clear_error();
    mig_tls_free(t);
    return -1;
}

void mig_tls_free(struct mig_tls *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    free(t->dir);
    free(t);
}

const char *mig_tls_dir(const struct mig_tls *t)
{
    return t->dir;
}

const char *mig_tls_name(const struct mig_tls *t)
{
    return t->name;
}

void mig_tls_set_ktls(struct mig_tls *t, bool enable)
{
    t->ktls = enable;
}

bool mig_tls_ktls_enabled(const struct mig_tls *t)
{
    return t->ktls;
}

bool mig_tls_kernel_has_ktls(void)
{
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "re");
    if (!f)
        return false;
    char word[64];
    bool found = false;
    while (fscanf(f, "%63s", word) == 1)
        if (strcmp(word, "tls") == 0)
            found = true;
    fclose(f);
    return found;
}
