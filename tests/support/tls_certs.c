/* Test certificates (tests/support/tls_certs.h). */
#include "tls_certs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/certs.h"
#include "proc.h"

#define DAY 86400L

static int sub(char *out, const char *root, const char *name)
{
    return (size_t)snprintf(out, TEST_TLS_PATH, "%s/%s", root, name) >= TEST_TLS_PATH ? -1 : 0;
}

/* Copies src/ca.pem over dst/ca.pem. */
static int copy_ca(const char *src_dir, const char *dst_dir, struct tern_err *err)
{
    char src[TEST_TLS_PATH + 16], dst[TEST_TLS_PATH + 16];
    snprintf(src, sizeof(src), "%s/ca.pem", src_dir);
    snprintf(dst, sizeof(dst), "%s/ca.pem", dst_dir);
    FILE *in = fopen(src, "r");
    if (!in)
        return tern_err_set(err, "cannot read %s", src);
    FILE *out = fopen(dst, "w");
    if (!out) {
        fclose(in);
        return tern_err_set(err, "cannot write %s", dst);
    }
    char buf[4096];
    size_t n;
    int rc = 0;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            rc = tern_err_set(err, "writing %s", dst);
    fclose(in);
    if (fclose(out) != 0)
        rc = tern_err_set(err, "writing %s", dst);
    return rc;
}

int test_tls_make(struct test_tls *t, char *errbuf, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    struct tern_err err = {.msg = ""};
    char *root = test_make_tmpdir("tls");
    if (!root) {
        snprintf(errbuf, errlen, "cannot make a temporary directory");
        return -1;
    }
    snprintf(t->root, sizeof(t->root), "%s", root);
    free(root);
    if (sub(t->ca, t->root, "ca") || sub(t->host_a, t->root, "host-a") ||
        sub(t->host_b, t->root, "host-b") || sub(t->ca2, t->root, "ca2") ||
        sub(t->foreign, t->root, "foreign") || sub(t->rogue, t->root, "rogue") ||
        sub(t->expired, t->root, "expired") || sub(t->future, t->root, "future")) {
        tern_err_set(&err, "temporary path too long");
        goto fail;
    }
    if (mig_certs_init_ca(t->ca, "tern-test-ca", 30, &err) < 0 ||
        mig_certs_issue(t->ca, t->host_a, "host-a", 30, &err) < 0 ||
        mig_certs_issue(t->ca, t->host_b, "host-b", 30, &err) < 0 ||
        mig_certs_init_ca(t->ca2, "tern-other-ca", 30, &err) < 0 ||
        mig_certs_issue(t->ca2, t->foreign, "host-x", 30, &err) < 0 ||
        mig_certs_issue(t->ca2, t->rogue, "host-r", 30, &err) < 0 ||
        copy_ca(t->ca, t->rogue, &err) < 0 ||
        mig_certs_issue_window(t->ca, t->expired, "host-e", -2 * DAY, -DAY, &err) < 0 ||
        mig_certs_issue_window(t->ca, t->future, "host-f", DAY, 2 * DAY, &err) < 0)
        goto fail;
    return 0;
fail:
    snprintf(errbuf, errlen, "making test certificates: %s", err.msg);
    test_tls_destroy(t);
    return -1;
}

void test_tls_destroy(struct test_tls *t)
{
    if (t->root[0])
        test_rmtree(t->root);
    t->root[0] = '\0';
}
