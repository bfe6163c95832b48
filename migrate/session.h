/* A migration's connection set: N TLS channels (`--streams N`) bound to
 * the destination's one-time token (docs/migration-transport.md).
 *
 * The source opens N channels; on each, its first message is a transport
 * HELLO {set id, stream index, N, token}. The destination accepts
 * connections until it holds one complete set carrying its token, then
 * closes its listening socket (later connects are refused) and answers
 * every channel of the set with OK. Only then does mig_session_connect
 * return on the source: a refused certificate or token shows up there as
 * an error, not later in the migration.
 *
 * What the destination refuses, and how:
 *  - a peer that fails the TLS handshake (no certificate, another CA,
 *    expired, not TLS): that connection is dropped and the wait goes on
 *    (an unauthenticated connection must not be able to end a pending
 *    migration); if the set is not complete by the timeout, the error
 *    names the last refusal;
 *  - an authenticated peer with the wrong token, a HELLO of another set
 *    while one is being assembled, a duplicate or out-of-range stream
 *    index, a malformed HELLO: the peer gets an error answer, every
 *    channel accepted so far is refused too, and mig_session_accept fails
 *    with the reason.
 * Either way the listener accepts nothing after mig_session_accept
 * returns: one listener, one connection set.
 *
 * Tokens are compared in constant time (SHA-256 of each, CRYPTO_memcmp). */
#ifndef TERN_MIGRATE_SESSION_H
#define TERN_MIGRATE_SESSION_H

#include <stdint.h>

#include "../common/err.h"
#include "channel.h"
#include "tls.h"

/* Transport record types (proto/record_types.h's 0x03xx range, kept
 * apart from the stream records). */
#include "../proto/record_types.h" /* REC_TYPE_MIG_XPORT_HELLO, _REPLY */

#define MIG_SESSION_MAX_STREAMS 64
#define MIG_TOKEN_MAX 255

/* Answer codes in the transport REPLY. */
enum mig_xport_status {
    MIG_XPORT_OK = 0,
    MIG_XPORT_WRONG_TOKEN = 1,
    MIG_XPORT_BAD_SET = 2,   /* another set in progress, bad index/count, duplicate */
    MIG_XPORT_BAD_HELLO = 3, /* malformed */
    MIG_XPORT_REFUSED = 4,   /* the set failed because of another connection */
};

struct mig_session;

/* An empty session (so that another thread can abort the connect or
 * accept that fills it). NULL when out of memory. */
struct mig_session *mig_session_new(void);

/* Source: opens nr_streams (1..MIG_SESSION_MAX_STREAMS) channels to
 * HOST:PORT, sends the HELLOs and waits for the destination's answers,
 * all within timeout_ms (< 0: none). peer_name as in mig_channel_connect.
 * On failure every channel is closed and err says why, e.g. "HOST:PORT
 * refused the connection: wrong migration token". */
int mig_session_connect(struct mig_session *s, struct mig_tls *t, const char *host,
                        uint16_t port, const char *peer_name, const char *token,
                        int nr_streams, int timeout_ms, struct tern_err *err);

/* Destination: accepts on `l` until one complete connection set carries
 * `token`, within timeout_ms (< 0: none). See above for what is refused.
 * The listener is finished afterwards, whatever the outcome. */
int mig_session_accept(struct mig_session *s, struct mig_listener *l, const char *token,
                       int timeout_ms, struct tern_err *err);

/* The set, once connected or accepted: its size, its random id (the same
 * on both sides, fit for the stream HELLO's session field) and channel i
 * (0..streams-1, in stream-index order; owned by the session). */
int mig_session_streams(const struct mig_session *s);
uint64_t mig_session_id(const struct mig_session *s);
struct mig_channel *mig_session_channel(struct mig_session *s, int i);

/* Any thread, any time: fails the connect/accept in progress and every
 * blocked or later call on the session's channels ("aborted"). */
void mig_session_abort(struct mig_session *s);

/* Closes every channel (close_notify where healthy) and frees. Not
 * concurrently with mig_session_abort. NULL is fine. */
void mig_session_free(struct mig_session *s);

#endif
