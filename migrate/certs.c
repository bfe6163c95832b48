/* Cluster CA and host certificates (migrate/certs.h). */
#include "certs.h"
#include "transport_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SKEW_SECONDS 300L
#define MAX_DAYS 36500

static int ensure_dir(const char *dir, struct tern_err *err)
{
    if (mkdir(dir, 0700) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(dir, &st) < 0)
            return tern_err_errno(err, errno, "%s", dir);
        if (!S_ISDIR(st.st_mode))
            return tern_err_set(err, "%s is not a directory", dir);
        return 0;
    }
    return tern_err_errno(err, errno, "creating directory %s", dir);
}

/* Writes `len` bytes to `path` atomically with `mode`. */
static int write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                        struct tern_err *err)
{
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", path) >= sizeof(tmp))
        return tern_err_set(err, "path too long: %s", path);
    int fd = mkstemp(tmp); /* created 0600 */
    if (fd < 0)
        return tern_err_errno(err, errno, "creating %s", path);
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            close(fd);
            unlink(tmp);
            return tern_err_errno(err, e, "writing %s", path);
        }
        p += n;
        left -= (size_t)n;
    }
    if (fchmod(fd, mode) < 0 || fsync(fd) < 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return tern_err_errno(err, e, "writing %s", path);
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return tern_err_errno(err, e, "renaming %s into place", path);
    }
    return 0;
}

/* PEM of a certificate or a private key into `path`. */
static int write_pem(const char *path, X509 *cert, EVP_PKEY *key, mode_t mode,
                     struct tern_err *err)
{
    char why[256];
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return tern_err_set(err, "out of memory");
    int ok = cert ? PEM_write_bio_X509(b, cert)
                  : PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL);
    if (!ok) {
        BIO_free(b);
        return tern_err_set(err, "encoding %s: %s", path, mig__ossl_reason(why, sizeof(why)));
    }
    char *data;
    long len = BIO_get_mem_data(b, &data);
    int rc = write_atomic(path, data, (size_t)len, mode, err);
    BIO_free(b);
    return rc;
}

static EVP_PKEY *new_key(struct tern_err *err)
{
    char why[256];
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (!k)
        tern_err_set(err, "generating an EC P-256 key: %s", mig__ossl_reason(why, sizeof(why)));
    return k;
}

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value, struct tern_err *err)
{
    char why[256];
    X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
    if (!e)
        return tern_err_set(err, "certificate extension %s=%s: %s", OBJ_nid2sn(nid), value,
                            mig__ossl_reason(why, sizeof(why)));
    int ok = X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    if (!ok)
        return tern_err_set(err, "adding extension %s: %s", OBJ_nid2sn(nid),
                            mig__ossl_reason(why, sizeof(why)));
    return 0;
}

/* A certificate for `key` named `cn`, valid [now+nb, now+na], not yet
 * signed; issuer taken from `ca` (NULL: self-issued). */
static X509 *new_cert(const char *cn, EVP_PKEY *key, X509 *ca, long nb, long na,
                      struct tern_err *err)
{
    char why[256];
    X509 *x = X509_new();
    BIGNUM *bn = BN_new();
    if (!x || !bn)
        goto oom;
    unsigned char serial[16];
    if (RAND_bytes(serial, sizeof(serial)) != 1)
        goto ossl;
    serial[0] &= 0x7f; /* positive */
    serial[0] |= 0x01; /* and not short */
    if (!BN_bin2bn(serial, sizeof(serial), bn) || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
        goto ossl;
    if (!X509_set_version(x, X509_VERSION_3))
        goto ossl;
    X509_NAME *name = X509_get_subject_name(x);
    if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
                                    -1, 0))
        goto ossl;
    if (!X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : name))
        goto ossl;
    if (!X509_gmtime_adj(X509_getm_notBefore(x), nb) || !X509_gmtime_adj(X509_getm_notAfter(x), na))
        goto ossl;
    if (!X509_set_pubkey(x, key))
        goto ossl;
    BN_free(bn);
    return x;
oom:
    tern_err_set(err, "out of memory");
    goto out;
ossl:
    tern_err_set(err, "building certificate for %s: %s", cn, mig__ossl_reason(why, sizeof(why)));
out:
    BN_free(bn);
    X509_free(x);
    return NULL;
}

static bool valid_name(const char *name, bool *is_ip)
{
    unsigned char buf[16];
    *is_ip = inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
    if (*is_ip)
        return true;
    size_t n = strlen(name);
    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '-' || ch == '_'))
            return false;
    }
    return true;
}

int mig_certs_init_ca(const char *dir, const char *name, int days, struct tern_err *err)
{
    char cert_path[4096], key_path[4096], why[256];
    bool is_ip;
    if (!name || !valid_name(name, &is_ip))
        return tern_err_set(err, "CA name must be letters, digits, '.', '-' or '_': \"%s\"",
                            name ? name : "");
    if (days < 1 || days > MAX_DAYS)
        return tern_err_set(err, "CA validity must be 1..%d days, not %d", MAX_DAYS, days);
    if (ensure_dir(dir, err) < 0 || mig__path_in(cert_path, sizeof(cert_path), dir, "ca.pem", err) < 0 ||
        mig__path_in(key_path, sizeof(key_path), dir, "ca-key.pem", err) < 0)
        return -1;
    if (access(key_path, F_OK) == 0)
        return tern_err_set(err,
                            "%s already exists: refusing to replace a CA (every host certificate "
                            "it issued would stop working)",
                            key_path);
    int rc = -1;
    EVP_PKEY *key = new_key(err);
    X509 *x = key ? new_cert(name, key, NULL, -SKEW_SECONDS, (long)days * 86400L, err) : NULL;
    if (!x)
        goto out;
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    if (add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0", err) < 0 ||
        add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign", err) < 0 ||
        add_ext(x, &ctx, NID_subject_key_identifier, "hash", err) < 0 ||
        add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always", err) < 0)
        goto out;
    if (!X509_sign(x, key, EVP_sha256())) {
        tern_err_set(err, "signing the CA certificate: %s", mig__ossl_reason(why, sizeof(why)));
        goto out;
    }
    /* Key first: a ca.pem without its key would be useless. */
    if (write_pem(key_path, NULL, key, 0600, err) < 0 || write_pem(cert_path, x, NULL, 0644, err) < 0)
        goto out;
    rc = 0;
out:
    X509_free(x);
    EVP_PKEY_free(key);
    ERR_clear_error();
    return rc;
}

/* Reads the CA certificate and key from ca_dir and checks they belong
 * together. */
static int load_ca(const char *ca_dir, X509 **ca, EVP_PKEY **ca_key, struct tern_err *err)
{
    char cert_path[4096], key_path[4096], why[256];
    *ca = NULL;
    *ca_key = NULL;
    if (mig__path_in(cert_path, sizeof(cert_path), ca_dir, "ca.pem", err) < 0 ||
        mig__path_in(key_path, sizeof(key_path), ca_dir, "ca-key.pem", err) < 0)
        return -1;
    FILE *f = fopen(cert_path, "re");
    if (!f)
        return tern_err_errno(err, errno, "cannot read %s", cert_path);
    *ca = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!*ca)
        return tern_err_set(err, "%s is not a PEM certificate: %s", cert_path,
                            mig__ossl_reason(why, sizeof(why)));
    f = fopen(key_path, "re");
    if (!f) {
        tern_err_errno(err, errno, "cannot read %s", key_path);
        goto fail;
    }
    *ca_key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!*ca_key) {
        tern_err_set(err, "%s is not a PEM private key: %s", key_path,
                     mig__ossl_reason(why, sizeof(why)));
        goto fail;
    }
    if (X509_check_private_key(*ca, *ca_key) != 1) {
        tern_err_set(err, "%s does not match %s", key_path, cert_path);
        goto fail;
    }
    return 0;
fail:
    X509_free(*ca);
    EVP_PKEY_free(*ca_key);
    *ca = NULL;
    *ca_key = NULL;
    ERR_clear_error();
    return -1;
}

int mig_certs_issue_window(const char *ca_dir, const char *out_dir, const char *name,
                           long not_before_s, long not_after_s, struct tern_err *err)
{
    char path[4096], why[256], san[300];
    bool is_ip;
    if (!name || !valid_name(name, &is_ip))
        return tern_err_set(err,
                            "host name must be letters, digits, '.', '-', '_' or an address: \"%s\"",
                            name ? name : "");
    if (not_after_s <= not_before_s)
        return tern_err_set(err, "certificate would expire before it becomes valid");
    X509 *ca, *x = NULL;
    EVP_PKEY *ca_key, *key = NULL;
    if (load_ca(ca_dir, &ca, &ca_key, err) < 0)
        return -1;
    int rc = -1;
    if (ensure_dir(out_dir, err) < 0)
        goto out;
    key = new_key(err);
    x = key ? new_cert(name, key, ca, not_before_s, not_after_s, err) : NULL;
    if (!x)
        goto out;
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca, x, NULL, NULL, 0);
    snprintf(san, sizeof(san), "%s:%s", is_ip ? "IP" : "DNS", name);
    if (add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE", err) < 0 ||
        add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature", err) < 0 ||
        add_ext(x, &ctx, NID_ext_key_usage, "serverAuth,clientAuth", err) < 0 ||
        add_ext(x, &ctx, NID_subject_alt_name, san, err) < 0 ||
        add_ext(x, &ctx, NID_subject_key_identifier, "hash", err) < 0 ||
        add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always", err) < 0)
        goto out;
    if (!X509_sign(x, ca_key, EVP_sha256())) {
        tern_err_set(err, "signing the certificate for %s: %s", name,
                     mig__ossl_reason(why, sizeof(why)));
        goto out;
    }
    if (mig__path_in(path, sizeof(path), out_dir, "key.pem", err) < 0 ||
        write_pem(path, NULL, key, 0600, err) < 0)
        goto out;
    if (mig__path_in(path, sizeof(path), out_dir, "cert.pem", err) < 0 ||
        write_pem(path, x, NULL, 0644, err) < 0)
        goto out;
    if (mig__path_in(path, sizeof(path), out_dir, "ca.pem", err) < 0 ||
        write_pem(path, ca, NULL, 0644, err) < 0)
        goto out;
    rc = 0;
out:
    X509_free(x);
    EVP_PKEY_free(key);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    ERR_clear_error();
    return rc;
}

int mig_certs_issue(const char *ca_dir, const char *out_dir, const char *name, int days,
                    struct tern_err *err)
{
    if (days < 1 || days > MAX_DAYS)
        return tern_err_set(err, "certificate validity must be 1..%d days, not %d", MAX_DAYS,
                            days);
    return mig_certs_issue_window(ca_dir, out_dir, name, -SKEW_SECONDS, (long)days * 86400L,
                                  err);
}
