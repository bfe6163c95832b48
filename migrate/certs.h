/* The cluster CA and host certificates (OpenSSL 3 API; no openssl(1)).
 * Used by tests, benchmarks and, later, `ternctl cluster init-ca` and
 * `ternctl cluster issue-cert`.
 *
 * A CA directory holds ca.pem (the CA certificate) and ca-key.pem (its
 * private key, mode 0600: keep it off the hosts if you can). A host's TLS
 * directory (tern-vmm --tls-dir, migrate/tls.h) holds ca.pem (a copy of
 * the CA certificate), cert.pem and key.pem (0600).
 *
 * Keys are EC P-256; signatures ECDSA with SHA-256; serial numbers 127
 * random bits. The CA: basicConstraints CA:TRUE, pathlen 0, keyUsage
 * keyCertSign/cRLSign. Host certificates: CA:FALSE, keyUsage
 * digitalSignature, extendedKeyUsage serverAuth + clientAuth (every host
 * both sends and receives migrations), subjectAltName DNS:NAME (IP:NAME
 * when NAME is an address), subject CN=NAME. notBefore is set 5 minutes
 * back to tolerate clock skew between hosts.
 *
 * Files are written atomically (temporary file, fsync, rename); the
 * directory is created (0700) when missing. */
#ifndef TERN_MIGRATE_CERTS_H
#define TERN_MIGRATE_CERTS_H

#include "../common/err.h"

/* Creates a new CA named `name` (its CN) valid for `days` in DIR. Refuses
 * to replace an existing DIR/ca-key.pem: a new CA would cut off every host
 * certified by the old one. */
int mig_certs_init_ca(const char *dir, const char *name, int days, struct tern_err *err);

/* Issues a certificate for host `name` (letters, digits, '.', '-', '_',
 * or an IPv4/IPv6 address), valid for `days`, signed by the CA in ca_dir,
 * and writes out_dir/ca.pem, cert.pem and key.pem (replacing them). */
int mig_certs_issue(const char *ca_dir, const char *out_dir, const char *name, int days,
                    struct tern_err *err);

/* Like mig_certs_issue with an explicit validity window, in seconds from
 * now (negative: in the past). For tests: expired (-2 days .. -1 day) or
 * not yet valid certificates. */
int mig_certs_issue_window(const char *ca_dir, const char *out_dir, const char *name,
                           long not_before_s, long not_after_s, struct tern_err *err);

#endif
