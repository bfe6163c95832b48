/* One mutually authenticated TLS 1.3 connection of the migration
 * transport, with its socket I/O on io_uring (docs/migration-transport.md).
 *
 * OpenSSL does the TLS; its BIO is ours: ciphertext goes from OpenSSL
 * into one of two large send buffers and leaves in one io_uring send per
 * buffer (the next buffer fills while the previous one is being sent);
 * ciphertext arrives by io_uring recv straight into OpenSSL's own read
 * buffer. Where the kernel offers kTLS (migrate/tls.h), sends skip
 * OpenSSL altogether and go from the caller's buffers to the socket.
 *
 * Calls block, with timeouts, and are meant for the VMM's migration
 * threads (never a vCPU thread): one thread drives a channel at a time
 * (OpenSSL does not allow concurrent reads and writes on one connection).
 * The only calls allowed from another thread are mig_channel_abort and
 * mig_listener_abort, which unblock whatever the owner is waiting in.
 *
 * Return values: 0 (or 1 where said) on success, -1 with err filled in.
 * Sockets never raise SIGPIPE (MSG_NOSIGNAL). */
#ifndef TERN_MIGRATE_CHANNEL_H
#define TERN_MIGRATE_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "../common/err.h"
#include "tls.h"

struct mig_channel;
struct mig_listener;

/* Default for mig_channel_set_send_timeout. */
#define MIG_CHANNEL_SEND_TIMEOUT_MS 30000

/* --- server side --- */

/* Listens on ADDR:PORT (ADDR NULL or "" for every address; PORT 0 for an
 * ephemeral port, see mig_listener_port). Connections accepted from it use
 * `t`, which must outlive the listener. Errors name the address. */
int mig_listen(struct mig_listener **out, struct mig_tls *t, const char *addr, uint16_t port,
               struct tern_err *err);

/* The port actually bound. */
uint16_t mig_listener_port(const struct mig_listener *l);

/* Accepts one connection and runs the TLS handshake, all within
 * timeout_ms (< 0: no limit). A peer that fails the handshake makes this
 * return -1 with the reason (e.g. "peer certificate (CN=x) is not signed
 * by the cluster CA in DIR"); the listener stays usable. For a migration,
 * use mig_session_accept (migrate/session.h), which adds the token check
 * and accepts exactly one connection set. */
int mig_accept(struct mig_listener *l, struct mig_channel **out, int timeout_ms,
               struct tern_err *err);

/* Any thread: makes a blocked or later mig_accept fail ("aborted"). */
void mig_listener_abort(struct mig_listener *l);

/* Closes the socket and frees. */
void mig_listener_close(struct mig_listener *l);

/* --- client side --- */

/* Connects to HOST:PORT (a name or address; every resolved address is
 * tried) and runs the TLS handshake, all within timeout_ms (< 0: no
 * limit). The server's certificate must verify against ca.pem; with
 * peer_name set it must also be issued to that name (subjectAltName), NULL
 * accepts any host of the cluster. Errors say what failed: "connecting to
 * HOST:PORT: Connection refused", a timeout, or the certificate problem.
 * Note (TLS 1.3): the server checks OUR certificate after this returns, so
 * a refusal of our certificate shows up at the first receive; sessions
 * (migrate/session.h) wait for the server's answer and report it there. */
int mig_channel_connect(struct mig_channel **out, struct mig_tls *t, const char *host,
                        uint16_t port, const char *peer_name, int timeout_ms,
                        struct tern_err *err);

/* --- data --- */

/* Sends all of iov, in order, or fails; returns once the kernel has taken
 * every byte (within the call, encryption of the next 256 KiB overlaps
 * with the kernel taking the previous). Bounded by the send timeout; a
 * failed or timed-out send leaves the channel unusable (later calls fail
 * at once). Nothing stays in flight after the call returns, so a channel
 * may be handed to another thread between calls. */
int mig_channel_send(struct mig_channel *c, const struct iovec *iov, int iovcnt,
                     struct tern_err *err);

/* Receives exactly len bytes within timeout_ms (< 0: no limit). Returns 1
 * when they are in; 0 when the peer closed the connection cleanly (TLS
 * close_notify) before the first byte; -1 on error, on a close or reset in
 * the middle, and on timeout. A timeout before the first byte leaves the
 * channel usable; any other failure does not. */
int mig_channel_recv(struct mig_channel *c, void *buf, size_t len, int timeout_ms,
                     struct tern_err *err);

/* Waits until a receive would make progress (decrypted data is buffered,
 * bytes or a close arrived) for at most timeout_ms (0: just check; < 0:
 * no limit). Returns 1 (readable), 0 (timeout) or -1 (error, abort). Lets
 * a sender notice an ERROR record from the receiver between batches. */
int mig_channel_wait_readable(struct mig_channel *c, int timeout_ms, struct tern_err *err);

/* Like mig_channel_wait_readable, but also returns 2 as soon as `wake_fd`
 * (an eventfd or pipe another thread writes to) is readable, so a thread
 * can wait for its peer and for a local decision at once. The channel is
 * checked first: 1 wins when both are ready. wake_fd is not read. */
int mig_channel_wait_readable_or(struct mig_channel *c, int wake_fd, int timeout_ms,
                                 struct tern_err *err);

/* Timeout of each mig_channel_send call (default
 * MIG_CHANNEL_SEND_TIMEOUT_MS; < 0: none). */
void mig_channel_set_send_timeout(struct mig_channel *c, int timeout_ms);

/* Any thread: makes the blocked call (connect, handshake, send, recv,
 * wait) and every later one fail with "aborted", at once (shuts the socket
 * down). The owner still calls mig_channel_close. */
void mig_channel_abort(struct mig_channel *c);

/* Sends TLS close_notify if the channel is healthy (bounded wait), closes
 * the socket and frees. NULL is fine. */
void mig_channel_close(struct mig_channel *c);

/* --- facts --- */

/* Negotiated cipher suite, e.g. "TLS_AES_128_GCM_SHA256". */
const char *mig_channel_cipher(const struct mig_channel *c);
/* True when sends go through kernel TLS. */
bool mig_channel_ktls(const struct mig_channel *c);
/* Which path sends take and why, e.g. "userspace (kernel TLS refused: No
 * such file or directory)" or "kernel TLS". */
const char *mig_channel_ktls_status(const struct mig_channel *c);
/* The peer certificate's common name ("" before the handshake). */
const char *mig_channel_peer_name(const struct mig_channel *c);
/* The peer's address, "ADDR:PORT". */
const char *mig_channel_peer_addr(const struct mig_channel *c);
/* Application bytes sent and received so far. */
uint64_t mig_channel_bytes_sent(const struct mig_channel *c);
uint64_t mig_channel_bytes_received(const struct mig_channel *c);

#endif
