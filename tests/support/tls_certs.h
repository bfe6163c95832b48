/* Certificates for tests and benchmarks, made with migrate/certs.h in a
 * fresh temporary directory (removed by test_tls_destroy):
 *
 *   ca/        the cluster CA (ca.pem, ca-key.pem)
 *   host-a/    TLS dir for "host-a" (ca.pem, cert.pem, key.pem) from ca/
 *   host-b/    TLS dir for "host-b" from ca/
 *   ca2/       a second, unrelated CA
 *   foreign/   TLS dir of another cluster: ca2's ca.pem and a "host-x"
 *              certificate from ca2
 *   rogue/     trusts ca/ (its ca.pem) but holds a "host-r" certificate
 *              from ca2: what an intruder with the wrong CA would have
 *              (mig_tls_load refuses it; tests present it with raw OpenSSL)
 *   expired/   trusts ca/, holds a "host-e" certificate from ca/ that
 *              expired yesterday (likewise refused by mig_tls_load)
 *   future/    like expired/ but valid only from tomorrow */
#ifndef TERN_TESTS_SUPPORT_TLS_CERTS_H
#define TERN_TESTS_SUPPORT_TLS_CERTS_H

#include <stddef.h>

#define TEST_TLS_PATH 512

struct test_tls {
    char root[TEST_TLS_PATH];
    char ca[TEST_TLS_PATH];
    char host_a[TEST_TLS_PATH];
    char host_b[TEST_TLS_PATH];
    char ca2[TEST_TLS_PATH];
    char foreign[TEST_TLS_PATH];
    char rogue[TEST_TLS_PATH];
    char expired[TEST_TLS_PATH];
    char future[TEST_TLS_PATH];
};

/* Makes all of the above. Returns 0, or -1 with a message in err (and
 * nothing left behind). */
int test_tls_make(struct test_tls *t, char *err, size_t errlen);

/* Removes the directory tree. Safe to call twice. */
void test_tls_destroy(struct test_tls *t);

#endif
