/* The migration transport's TLS configuration: one context per `--tls-dir`
 * (docs/migration-transport.md).
 *
 * A directory holds the cluster CA and this host's identity:
 *   ca.pem    the cluster CA certificate(s): the only trust anchors (no
 *             system store); peers must present a certificate it signed
 *   cert.pem  this host's certificate (issued by that CA)
 *   key.pem   its private key
 * (migrate/certs.h makes them; `ternctl cluster init-ca/issue-cert` later.)
 *
 * Every connection is TLS 1.3 only, mutually authenticated (both sides
 * must present a certificate that verifies against ca.pem), without
 * session tickets or resumption. AES-128-GCM is preferred (the fastest
 * suite on AES-NI hosts), then AES-256-GCM and ChaCha20-Poly1305.
 *
 * A context is immutable after loading and may be shared by any number of
 * threads and channels; channels keep what they need, so it may be freed
 * while channels made from it are still open. */
#ifndef TERN_MIGRATE_TLS_H
#define TERN_MIGRATE_TLS_H

#include <stdbool.h>

#include "../common/err.h"

struct mig_tls;

/* Loads DIR/ca.pem, DIR/cert.pem and DIR/key.pem and checks them before
 * any connection is made, so a broken setup fails here with a message
 * naming the file: missing or unreadable file, not PEM, key not matching
 * the certificate, our certificate not issued by the CA in ca.pem, our
 * certificate expired or not yet valid. Returns 0 and *out, or -1. */
int mig_tls_load(struct mig_tls **out, const char *dir, struct tern_err *err);

void mig_tls_free(struct mig_tls *t);

/* The directory it was loaded from (for messages). */
const char *mig_tls_dir(const struct mig_tls *t);

/* Our certificate's subject common name (the host name it was issued to). */
const char *mig_tls_name(const struct mig_tls *t);

/* Kernel TLS (kTLS) for sending. On by default: after each handshake
 * OpenSSL (SSL_OP_ENABLE_KTLS) hands the send keys to the kernel where the
 * kernel offers the `tls` ULP, and the channel then sends plaintext
 * straight from the caller's buffers; where it does not (this development
 * machine), encryption stays in userspace. Receiving is always in
 * userspace: OpenSSL 3.0 does not offload TLS 1.3 receive keys.
 * mig_channel_ktls() tells which path a channel took. Set before
 * connecting; not thread-safe against connections being made. */
void mig_tls_set_ktls(struct mig_tls *t, bool enable);
bool mig_tls_ktls_enabled(const struct mig_tls *t);

/* Whether this kernel lists the `tls` ULP in
 * /proc/sys/net/ipv4/tcp_available_ulp right now (a module that is not
 * loaded yet may still be loaded on first use). For reports. */
bool mig_tls_kernel_has_ktls(void);

#endif
