/* Live migration, the engine: the source side runs in its own thread inside
 * the VM's tern-vmm (started by the "migrate" control command), the
 * destination side is `tern-vmm run --incoming`. docs/migration.md has the
 * protocol and the guarantees; in short, whatever fails before the
 * destination is told to commit, the guest keeps running on the source. */
#ifndef TERN_MIGRATE_MIGRATE_H
#define TERN_MIGRATE_MIGRATE_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/err.h"
#include "../node-vmm/options.h"
#include "../proto/migration.h" /* MIG_MAX_STREAMS */

struct vm;

/* The source's phases, in order ("phase" in its status; "round" comes with
 * the round number in "round"). */
enum mig_phase {
    MIG_PHASE_STARTING,
    MIG_PHASE_CONNECTING,
    MIG_PHASE_ROUND,         /* pre-copy round "round" */
    MIG_PHASE_STOP_AND_COPY, /* guest paused, the rest being sent */
    MIG_PHASE_HANDOVER,      /* END sent, waiting for READY */
    MIG_PHASE_READY,         /* commit gate: all there, waiting for the agent */
    MIG_PHASE_COMMITTING,    /* COMMIT sent, waiting for RUNNING */
    MIG_PHASE_DONE,
    MIG_PHASE__COUNT
};

const char *mig_phase_name(enum mig_phase p);
/* The phase named `name`; -1 if none. */
int mig_phase_parse(const char *name, enum mig_phase *out);


struct mig_params {
    struct endpoint to;
    char tls_dir[PATH_MAX];
    char token[256];
    unsigned streams;      /* parallel TLS connections, default 1 */
    double downtime_ms;    /* pause budget, default 50 */
    double max_seconds;    /* give up after, default 300 */
    bool commit_gate;      /* after READY, wait for mig_source_commit/abort (the agent) */
    int timeout_ms;        /* a stalled send or an awaited reply fails after this (30 s) */
};

#define MIG_DEFAULT_TIMEOUT_MS 30000

/* Fills defaults and checks a "migrate" control request. */
int mig_params_from_json(json_t *req, struct mig_params *p, struct tern_err *err);

struct mig_source;

/* Starts migrating `vm` in a new thread. Fails at once (nothing started) if
 * a migration is already running or the parameters are bad; connection and
 * TLS errors are reported by the status. */
int mig_source_start(struct mig_source **slot, struct vm *vm, const struct mig_params *p,
                     struct tern_err *err);

/* Progress while running (phase, round, bytes sent and remaining, dirty
 * rate, bandwidth, predicted pause) or the final result (outcome, reason,
 * total time, pause, rounds, bytes per encoding). NULL when none ran. */
json_t *mig_source_status(struct mig_source *m);

/* Readable when the migration's phase or outcome changed since the last
 * mig_source_event_drain (-1 for NULL): the VMM's loop tells watchers. */
int mig_source_event_fd(struct mig_source *m);
void mig_source_event_drain(struct mig_source *m);

/* True while m's migration thread works (NULL: false). */
bool mig_source_running(struct mig_source *m);

/* Asks a running migration to stop; the guest keeps running here. Refused
 * while handing over; in phase "ready" of a gated migration it is
 * mig_source_abort. */
int mig_source_cancel(struct mig_source *m, struct tern_err *err);

/* The agent's decision for a migration started with commit_gate, accepted
 * only in phase "ready" (the destination has everything, the guest is
 * paused here); otherwise -1 and err says why. Both return at once; the
 * outcome shows in the status.
 *  commit: COMMIT goes out, RUNNING is awaited, outcome "succeeded" and
 *    the VMM ends. From this call on the guest never resumes here: if
 *    COMMIT cannot be sent or RUNNING does not come, outcome "unknown",
 *    guest paused. Also 0 when the destination already reported RUNNING
 *    (its agent committed first) and when repeated.
 *  abort: ERROR (cancelled) goes out if it can, the guest resumes here,
 *    outcome "cancelled", reason "aborted by the agent"; the VM can
 *    migrate again. Refused once committing. */
int mig_source_commit(struct mig_source *m, struct tern_err *err);
int mig_source_abort(struct mig_source *m, struct tern_err *err);

/* Waits for the migration thread (cancelling it if still running) and
 * frees it. In phase "ready" it decides nothing: no ERROR, no resume, the
 * connection just drops (the agents decide). NULL is fine. */
void mig_source_destroy(struct mig_source *m);

/* The receiving side (`run --incoming`), driven from the main loop. */
struct mig_incoming;

enum mig_incoming_outcome {
    MIG_INCOMING_PENDING = 0,
    MIG_INCOMING_RUN,    /* committed: start the vCPUs, then mig_incoming_running */
    MIG_INCOMING_FAILED, /* the guest must not run here (exit VMM_EXIT_MIGRATION) */
};

/* Loads the TLS files and listens on opts->incoming_at (errors here: -1,
 * nothing started), then receives in a thread of its own into `vm`
 * (created with opts, not started): accepts the one connection set bearing
 * opts->token, checks the configuration, receives memory and state,
 * answers READY and waits for the decision:
 *  - COMMIT from the source, or (only with opts->commit_gate)
 *    mig_incoming_commit: the outcome becomes RUN;
 *  - ERROR from the source, mig_incoming_abort, any failure before READY,
 *    or (without the gate) a lost connection or 30 s without COMMIT: FAILED.
 * With the gate, a connection lost after READY is not a failure: the wait
 * goes on, without a time limit, for the agent's commit or abort. */
int mig_incoming_start(struct mig_incoming **out, struct vm *vm, const struct run_options *opts,
                       struct tern_err *err);

/* Readable (poll) once the outcome is no longer PENDING. */
int mig_incoming_fd(const struct mig_incoming *in);

/* The outcome; for FAILED, err says why. */
enum mig_incoming_outcome mig_incoming_outcome(struct mig_incoming *in, struct tern_err *err);

/* {"phase":"waiting"|"receiving"|"ready"|"committing"|"failed",
 *  "bytes_received","pages_received","round","streams","commit_gate",
 *  "from" (once connected), "link_error" (after READY, if the source is
 *  unreachable)}. */
json_t *mig_incoming_status(struct mig_incoming *in);

/* The agent commits (--commit-gate only, once READY was sent): the guest
 * will run here. 0 also when already committing; -1 with the reason
 * otherwise (not gated, state incomplete, aborting). */
int mig_incoming_commit(struct mig_incoming *in, struct tern_err *err);

/* Gives up (agent abort, stop, signal): the outcome becomes FAILED with
 * `why`; after READY the source gets ERROR (cancelled) if it is still
 * there. Returns 0, or 1 when it is too late: the guest is committed here
 * and being started. */
int mig_incoming_abort(struct mig_incoming *in, const char *why);

/* After a RUN outcome, once the vCPUs started: tells the source (RUNNING,
 * if it is still connected), closes the connections and frees. */
void mig_incoming_running(struct mig_incoming *in);

/* After a FAILED outcome (or to give up): stops everything and frees.
 * NULL is fine. */
void mig_incoming_destroy(struct mig_incoming *in);

#endif
