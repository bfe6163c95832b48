/* ternd's copy of the cluster state on disk (docs/cluster-state.md,
 * "Persistence"): a snapshot (STATE_DIR/cluster-state.json, checksummed)
 * and a journal of every event applied since (STATE_DIR/cluster-journal,
 * one CRC-checked line per event). Appends are written and fdatasync'd by a
 * worker thread in batches (group commit), so the agent's loop never waits
 * for the disk; the worker tells the loop, through an eventfd, how far the
 * journal is durable, and the replica passes that on to the other hosts
 * (replica_persisted), which is what acknowledgements wait for.
 *
 * Loading replays the journal over the snapshot through the same apply
 * functions as live, checking every record's version. A journal whose last
 * line was cut by a crash loses only that line (it was never reported
 * durable); a damaged line anywhere else, or a snapshot that fails its
 * checksum, refuses the whole copy with the file, the line and what to do. */
#ifndef TERN_AGENT_STATE_STORE_H
#define TERN_AGENT_STATE_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "../common/err.h"
#include "../ha/cluster_state.h"
#include "../ha/replica.h"

struct state_store;

/* Opens (creates) STATE_DIR's files and loads them into `into` (replaced
 * only on success). *loaded: 0 nothing on disk yet, 1 a copy was loaded.
 * Starts the worker. */
int state_store_open(struct state_store **out, const char *state_dir, struct cl_state *into,
                     int *loaded, struct tern_err *err);
/* Waits for what is queued to be written, stops the worker, closes. */
void state_store_close(struct state_store *st);

/* Records one event the replica applied; `state` is the state after it (an
 * install is written as a new snapshot). Never blocks on the disk. */
void state_store_event(struct state_store *st, const struct replica_event *ev,
                       const struct cl_state *state);

/* Readable when the worker made progress (or failed). */
int state_store_fd(const struct state_store *st);
/* Drains the fd. Returns true when something new is durable: *version is
 * the state version the files now hold, valid for the current generation
 * (the generation changes with every install and reload: a version is
 * only comparable within one). If the disk failed, *failure (if not NULL)
 * gets the message once. */
bool state_store_durable(struct state_store *st, uint64_t *version, char *failure,
                         size_t failure_len);

/* Loads the files again into `into` (after everything queued is written),
 * as at start; starts a new generation. For a replica that must rejoin. */
int state_store_reload(struct state_store *st, struct cl_state *into, struct tern_err *err);

/* Figures for the log and tests. */
struct state_store_stats {
    uint64_t appends, batches, snapshots, journal_bytes;
};
struct state_store_stats state_store_stats(const struct state_store *st);

/* Replays a snapshot + journal pair into `into` without a store (tools and
 * tests); the same checks as state_store_open. `torn` (may be NULL) is set
 * when a cut last line was ignored. */
int state_store_load_files(const char *snapshot_path, const char *journal_path,
                           struct cl_state *into, bool *torn, int *loaded, struct tern_err *err);

#endif
