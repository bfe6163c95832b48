/* Guest heartbeat device (port TERN_PORT_HEARTBEAT). Each 4-byte write of
 * the guest's sequence number is timestamped with CLOCK_REALTIME on arrival.
 * The largest gap between two heartbeats is how Tern measures the downtime a
 * guest observes (e.g. across a migration, when this state travels with the
 * VM), and later how HA notices a hung guest. */
#ifndef TERN_NODE_VMM_DEV_HEARTBEAT_H
#define TERN_NODE_VMM_DEV_HEARTBEAT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/err.h"
#include "../proto/record.h"
#include "../proto/record_types.h"
#include "pio.h"

/* Plain state: saved and restored with the VM. */
struct heartbeat_state {
    uint64_t count;         /* heartbeats received */
    uint32_t last_seq;      /* sequence number of the last one */
    uint64_t seq_errors;    /* writes whose sequence was not last_seq + 1 */
    int64_t first_ns;       /* CLOCK_REALTIME of the first, 0 if none */
    int64_t last_ns;        /* CLOCK_REALTIME of the last, 0 if none */
    int64_t max_gap_ns;     /* largest interval between two heartbeats */
    int64_t max_gap_end_ns; /* when the largest interval ended */
};

struct dev_heartbeat {
    struct pio_device pio;
    pthread_mutex_t lock;
    struct heartbeat_state s;
    /* Not part of the saved state: the gap the guest saw across the restore
     * or migration that brought it here (last heartbeat before the state
     * was captured to the first one after it was loaded), -1 until then. */
    bool awaiting_first_after_load;
    int64_t handover_gap_ns;
};

void dev_heartbeat_init(struct dev_heartbeat *hb);
void dev_heartbeat_destroy(struct dev_heartbeat *hb);

/* Records heartbeat `seq` arriving at `now_ns` (the port handler uses
 * CLOCK_REALTIME; tests pass their own times). */
void dev_heartbeat_record(struct dev_heartbeat *hb, uint32_t seq, int64_t now_ns);

/* A consistent copy of the state. */
void dev_heartbeat_snapshot(struct dev_heartbeat *hb, struct heartbeat_state *out);

/* --- saved state (layout in docs/snapshot-state.md) --- */

#define HEARTBEAT_STATE_RECORD REC_TYPE_HEARTBEAT_STATE
#define HEARTBEAT_STATE_VERSION 1u

/* Appends one HEARTBEAT_STATE_RECORD with a consistent copy of the state
 * (taken under the device lock); failures show in rec_buf_check(b). */
void dev_heartbeat_state_save(struct dev_heartbeat *hb, struct rec_buf *b);
/* Parses a HEARTBEAT_STATE_RECORD payload into *s: type, version, flags,
 * trailing bytes, and a state the device could have produced (nothing but
 * zeros before the first heartbeat, fewer sequence errors than heartbeats,
 * no negative gap). Pure. */
int dev_heartbeat_state_decode(const struct rec_header *h, struct rec_reader *payload,
                               struct heartbeat_state *s, struct tern_err *err);
/* Decodes, then replaces the device's state under its lock. The next
 * heartbeat is then measured against the restored last one, so the gap
 * across a migration or restore shows in max_gap_ns. On error the device
 * is unchanged. */
int dev_heartbeat_state_load(struct dev_heartbeat *hb, const struct rec_header *h,
                             struct rec_reader *payload, struct tern_err *err);

#endif
