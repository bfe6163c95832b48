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


struct mig_params {
    struct endpoint to;
    char tls_dir[PATH_MAX];
    char token[256];
    unsigned streams;      /* parallel TLS connections, default 1 */
    double downtime_ms;    /* pause budget, default 50 */
    double max_seconds;    /* give up after, default 300 */
};

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

/* Asks a running migration to stop; the guest keeps running here. */
int mig_source_cancel(struct mig_source *m, struct tern_err *err);

/* Waits for the migration thread (cancelling it if still running) and
 * frees it. NULL is fine. */
void mig_source_destroy(struct mig_source *m);

/* Receives a migration into `vm` (created with opts, not started): listens,
 * accepts the one connection set bearing opts->token, checks the
 * configuration, receives memory and state, answers READY, waits for
 * COMMIT. Returns 0 when the guest must now run here (the caller starts the
 * vCPUs, then calls mig_incoming_running), -1 when it must not (err says
 * why; nothing of the guest ran). */
struct mig_incoming;
int mig_incoming_receive(struct mig_incoming **out, struct vm *vm, const struct run_options *opts,
                         struct tern_err *err);
/* Tells the source the guest runs here, and closes the connections. */
void mig_incoming_running(struct mig_incoming *in);

#endif
