/* Private to migrate/tls.c, channel.c and session.c: the pieces of the
 * transport that its own files share and nobody else should use. */
#ifndef TERN_MIGRATE_TRANSPORT_INTERNAL_H
#define TERN_MIGRATE_TRANSPORT_INTERNAL_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/err.h"
#include "channel.h"
#include "tls.h"

struct mig_tls {
    SSL_CTX *ctx;
    char *dir;
    char name[256];
    bool ktls;
};

/* Monotonic clock in nanoseconds, and a deadline timeout_ms from now
 * (timeout_ms < 0: none, returned as 0). */
uint64_t mig__now_ns(void);
uint64_t mig__deadline(int timeout_ms);
/* The first OpenSSL error on this thread's queue as text (queue cleared). */
const char *mig__ossl_reason(char *buf, size_t len);
/* out = DIR/NAME, or an error if it does not fit. */
int mig__path_in(char *out, size_t cap, const char *dir, const char *name, struct tern_err *err);

/* Two-step channel set-up, so that a session can abort a channel while it
 * is still connecting or in its handshake: the channel exists (and
 * mig_channel_abort works on it) before any blocking call. */
int mig_channel__new(struct mig_channel **out, struct mig_tls *t, bool server,
                     struct tern_err *err);
/* Resolves, connects (trying every address) and runs the client handshake
 * before `deadline` (mig__deadline; 0: none). */
int mig_channel__dial(struct mig_channel *c, const char *host, uint16_t port,
                      const char *peer_name, uint64_t deadline, struct tern_err *err);
/* Accepts one TCP connection into `c` and runs the server handshake.
 * Returns 0; -1 with *handshake_failed false when the listener itself
 * failed (timeout, abort, error); -1 with *handshake_failed true when a
 * peer connected but was refused (bad certificate, no TLS, ...). */
int mig_channel__accept(struct mig_channel *c, struct mig_listener *l, uint64_t deadline,
                        bool *handshake_failed, struct tern_err *err);

/* No connection is accepted any more: the listening socket is closed, so
 * connects are refused. */
void mig_listener__stop(struct mig_listener *l);
/* The context the listener's connections use. */
struct mig_tls *mig_listener__tls(struct mig_listener *l);

/* mig_channel_recv with an absolute deadline. */
int mig_channel__recv_until(struct mig_channel *c, void *buf, size_t len, uint64_t deadline,
                            struct tern_err *err);

#endif
