/* ternctl cluster init-ca / issue-cert: the files, their modes, that the
 * host certificate chains to the CA (OpenSSL X509_verify_cert) and loads
 * as a migration TLS directory, refusing to replace a CA without --force,
 * and what --force keeps. */
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "cli/cli.h"
#include "migrate/certs.h"
#include "migrate/tls.h"
#include "tests/support/proc.h"

static char *path_of(const char *dir, const char *name)
{
    static char buf[8][1024];
    static int next;
    char *p = buf[next++ % 8];
    if (strlen(dir) + strlen(name) + 2 > sizeof(buf[0]))
        fail_msg("path too long: %s/%s", dir, name);
    strcpy(p, dir);
    strcat(p, "/");
    strcat(p, name);
    return p;
}

static X509 *load_cert(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s", path);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    return x;
}

static int mode_of(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        fail_msg("%s is missing", path);
    return (int)(st.st_mode & 0777);
}

/* X509_verify_cert of `cert` against the single trust anchor `ca`, for
 * the given purpose. Returns the verify result (1 = chains). */
static int verify(X509 *ca, X509 *cert, int purpose)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    assert_non_null(store);
    assert_non_null(ctx);
    assert_int_equal(X509_STORE_add_cert(store, ca), 1);
    assert_int_equal(X509_STORE_CTX_init(ctx, store, cert, NULL), 1);
    assert_int_equal(X509_STORE_CTX_set_purpose(ctx, purpose), 1);
    int rc = X509_verify_cert(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return rc;
}

static char *slurp(const char *path)
{
    char *s = test_read_text(path);
    assert_non_null(s);
    return s;
}

static void test_init_and_issue(void **state)
{
    (void)state;
    char *dir = test_make_tmpdir("cli-certs");
    assert_non_null(dir);
    char ca_dir[512];
    snprintf(ca_dir, sizeof(ca_dir), "%s/ca", dir); /* created by init-ca */
    struct tern_err err = {0};
    if (cli_cluster_init_ca(ca_dir, "test-ca", 30, false, &err) != 0)
        fail_msg("init-ca: %s", err.msg);
    assert_int_equal(mode_of(path_of(ca_dir, "ca-key.pem")), 0600);
    assert_int_equal(mode_of(ca_dir), 0700);

    char out[4096];
    if (cli_cluster_issue_cert(ca_dir, "host-a", 10, out, sizeof(out), &err) != 0)
        fail_msg("issue-cert: %s", err.msg);
    assert_string_equal(out, path_of(ca_dir, "host-a"));
    assert_int_equal(mode_of(path_of(out, "key.pem")), 0600);
    mode_of(path_of(out, "cert.pem"));
    /* ca.pem in the host's directory is a copy of the CA's. */
    char *a = slurp(path_of(ca_dir, "ca.pem")), *b = slurp(path_of(out, "ca.pem"));
    assert_string_equal(a, b);
    free(a);
    free(b);

    X509 *ca = load_cert(path_of(ca_dir, "ca.pem"));
    X509 *cert = load_cert(path_of(out, "cert.pem"));
    /* Chains to the CA, usable both as TLS server and client. */
    assert_int_equal(verify(ca, cert, X509_PURPOSE_SSL_SERVER), 1);
    assert_int_equal(verify(ca, cert, X509_PURPOSE_SSL_CLIENT), 1);
    assert_int_equal(X509_check_host(cert, "host-a", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(cert, "host-b", 0, 0, NULL), 0);
    char cn[64];
    assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn,
                                          sizeof(cn)) > 0);
    assert_string_equal(cn, "host-a");
    assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(ca), NID_commonName, cn,
                                          sizeof(cn)) > 0);
    assert_string_equal(cn, "test-ca");
    /* The key belongs to the certificate. */
    FILE *f = fopen(path_of(out, "key.pem"), "r");
    assert_non_null(f);
    EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(key);
    assert_int_equal(X509_check_private_key(cert, key), 1);
    EVP_PKEY_free(key);
    /* Exactly what the migration transport loads (tern-vmm --tls-dir). */
    struct mig_tls *tls = NULL;
    if (mig_tls_load(&tls, out, &err) != 0)
        fail_msg("mig_tls_load: %s", err.msg);
    assert_string_equal(mig_tls_name(tls), "host-a");
    mig_tls_free(tls);

    /* A certificate from another CA does not chain to this one. */
    char other[512];
    snprintf(other, sizeof(other), "%s/other", dir);
    assert_int_equal(cli_cluster_init_ca(other, "other-ca", 30, false, &err), 0);
    X509 *other_ca = load_cert(path_of(other, "ca.pem"));
    assert_int_not_equal(verify(other_ca, cert, X509_PURPOSE_SSL_SERVER), 1);
    X509_free(other_ca);

    /* No silent replacement of a CA. */
    char *before = slurp(path_of(ca_dir, "ca-key.pem"));
    assert_int_equal(cli_cluster_init_ca(ca_dir, "test-ca", 30, false, &err), -1);
    assert_non_null(strstr(err.msg, "already holds a CA"));
    assert_non_null(strstr(err.msg, "--force"));
    char *after = slurp(path_of(ca_dir, "ca-key.pem"));
    assert_string_equal(before, after);
    free(after);

    /* --force: a new CA, the old one kept beside it as .old. */
    char *old_cert = slurp(path_of(ca_dir, "ca.pem"));
    if (cli_cluster_init_ca(ca_dir, "test-ca", 30, true, &err) != 0)
        fail_msg("init-ca --force: %s", err.msg);
    after = slurp(path_of(ca_dir, "ca-key.pem"));
    assert_string_not_equal(before, after);
    char *kept = slurp(path_of(ca_dir, "ca-key.pem.old"));
    assert_string_equal(before, kept);
    free(kept);
    kept = slurp(path_of(ca_dir, "ca.pem.old"));
    assert_string_equal(old_cert, kept);
    free(kept);
    assert_int_equal(mode_of(path_of(ca_dir, "ca-key.pem")), 0600);
    assert_int_equal(mode_of(path_of(ca_dir, "ca-key.pem.old")), 0600);
    X509 *new_ca = load_cert(path_of(ca_dir, "ca.pem"));
    assert_int_not_equal(verify(new_ca, cert, X509_PURPOSE_SSL_SERVER), 1); /* the old host cert is cut off */
    /* No temporary directory left behind. */
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "ls -a %s | grep -q init-ca", ca_dir);
    assert_int_not_equal(system(cmd), 0);
    /* Reissued from the new CA, it chains again. */
    assert_int_equal(cli_cluster_issue_cert(ca_dir, "host-a", 10, out, sizeof(out), &err), 0);
    X509 *cert2 = load_cert(path_of(out, "cert.pem"));
    assert_int_equal(verify(new_ca, cert2, X509_PURPOSE_SSL_SERVER), 1);
    X509_free(cert2);
    X509_free(new_ca);
    free(before);
    free(after);
    free(old_cert);

    X509_free(cert);
    X509_free(ca);
    test_rmtree(dir);
    free(dir);
}

static void test_issue_errors(void **state)
{
    (void)state;
    char *dir = test_make_tmpdir("cli-certs");
    assert_non_null(dir);
    struct tern_err err = {0};
    char out[4096];
    assert_int_equal(cli_cluster_issue_cert(dir, "host-a", 10, out, sizeof(out), &err), -1);
    assert_non_null(strstr(err.msg, "has no CA key"));
    assert_non_null(strstr(err.msg, "ternctl cluster init-ca"));
    assert_int_equal(cli_cluster_init_ca(dir, "ca", 10, false, &err), 0);
    assert_int_equal(cli_cluster_issue_cert(dir, "bad name", 10, out, sizeof(out), &err), -1);
    assert_non_null(strstr(err.msg, "host name must be"));
    /* An IP address as the host name is fine (SAN IP). */
    assert_int_equal(cli_cluster_issue_cert(dir, "10.77.0.2", 10, out, sizeof(out), &err), 0);
    X509 *cert = load_cert(path_of(out, "cert.pem"));
    assert_int_equal(X509_check_ip_asc(cert, "10.77.0.2", 0), 1);
    X509_free(cert);
    test_rmtree(dir);
    free(dir);
}

static struct {
    int rc;
    char *out, *err;
} run;

static void run_cli(const char *const *args)
{
    char *argv[16];
    int argc = 0;
    argv[argc++] = "ternctl";
    for (; *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    size_t l1, l2;
    free(run.out);
    free(run.err);
    struct cli_io io = {.out = open_memstream(&run.out, &l1), .err = open_memstream(&run.err, &l2)};
    run.rc = cli_main(argc, argv, &io);
    fclose(io.out);
    fclose(io.err);
}

static void test_commands(void **state)
{
    (void)state;
    char *dir = test_make_tmpdir("cli-certs");
    assert_non_null(dir);
    char ca[512];
    snprintf(ca, sizeof(ca), "%s/ca", dir);
    /* Local: no agent socket is needed (this one does not exist). */
    const char *init[] = {"--socket", "/nonexistent", "cluster", "init-ca", ca, "--name", "prod", NULL};
    run_cli(init);
    assert_int_equal(run.rc, CLI_EXIT_OK);
    assert_non_null(strstr(run.out, "created CA 'prod' in "));
    assert_non_null(strstr(run.out, "(valid 3650 days)"));
    assert_string_equal(run.err, "");
    run_cli(init);
    assert_int_equal(run.rc, CLI_EXIT_FAILED);
    assert_non_null(strstr(run.err, "ternctl: "));
    assert_non_null(strstr(run.err, "use --force to replace it"));
    /* With --json a failure is an {"error":...} object on stdout too. */
    const char *init_json[] = {"--json", "cluster", "init-ca", ca, NULL};
    run_cli(init_json);
    assert_int_equal(run.rc, CLI_EXIT_FAILED);
    json_t *e = json_loads(run.out, 0, NULL);
    if (!e)
        fail_msg("init-ca --json failure printed no JSON: '%s'", run.out);
    assert_string_equal(json_string_value(json_object_get(json_object_get(e, "error"), "code")),
                        "failed");
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(e, "error"),
                                                             "message")),
                           "use --force to replace it"));
    json_decref(e);
    char noca[600];
    snprintf(noca, sizeof(noca), "%s/no-ca-here", dir);
    const char *issue_json[] = {"--json", "cluster", "issue-cert", noca, "h1", NULL};
    run_cli(issue_json);
    assert_int_equal(run.rc, CLI_EXIT_FAILED);
    e = json_loads(run.out, 0, NULL);
    if (!e)
        fail_msg("issue-cert --json failure printed no JSON: '%s'", run.out);
    assert_string_equal(json_string_value(json_object_get(json_object_get(e, "error"), "code")),
                        "failed");
    json_decref(e);
    assert_non_null(strstr(run.err, "ternctl: "));
    const char *force[] = {"cluster", "init-ca", ca, "--force", NULL};
    run_cli(force);
    assert_int_equal(run.rc, CLI_EXIT_OK);

    const char *issue[] = {"--json", "cluster", "issue-cert", ca, "host-b", "--days", "90", NULL};
    run_cli(issue);
    assert_int_equal(run.rc, CLI_EXIT_OK);
    json_t *j = json_loads(run.out, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "host")), "host-b");
    assert_string_equal(json_string_value(json_object_get(j, "dir")), path_of(ca, "host-b"));
    assert_int_equal(json_integer_value(json_object_get(j, "days")), 90);
    json_decref(j);
    X509 *c = load_cert(path_of(path_of(ca, "host-b"), "cert.pem"));
    X509 *root = load_cert(path_of(ca, "ca.pem"));
    assert_int_equal(verify(root, c, X509_PURPOSE_SSL_CLIENT), 1);
    /* --days 90: notAfter within 90 days and a bit from now. */
    time_t t = time(NULL) + 89L * 86400;
    assert_true(X509_cmp_time(X509_get0_notAfter(c), &t) > 0);
    t = time(NULL) + 91L * 86400;
    assert_true(X509_cmp_time(X509_get0_notAfter(c), &t) < 0);
    X509_free(c);
    X509_free(root);
    free(run.out);
    free(run.err);
    run.out = run.err = NULL;
    test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_and_issue),
        cmocka_unit_test(test_issue_errors),
        cmocka_unit_test(test_commands),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
