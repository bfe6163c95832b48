/* Guest heartbeat device (port TERN_PORT_HEARTBEAT). Each 4-byte write of
 * the guest's sequence number is timestamped with CLOCK_REALTIME on arrival.
 * The largest gap between two heartbeats is how Tern measures the downtime a
 * guest observes (e.g. across a migration, when this state travels with the
 * VM), and later how HA notices a hung guest. */
#ifndef TERN_NODE_VMM_DEV_HEARTBEAT_H
#define TERN_NODE_VMM_DEV_HEARTBEAT_H

#include <pthread.h>
#include <stdint.h>

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
};

void dev_heartbeat_init(struct dev_heartbeat *hb);
void dev_heartbeat_destroy(struct dev_heartbeat *hb);

/* Records heartbeat `seq` arriving at `now_ns` (the port handler uses
 * CLOCK_REALTIME; tests pass their own times). */
void dev_heartbeat_record(struct dev_heartbeat *hb, uint32_t seq, int64_t now_ns);

/* A consistent copy of the state. */
void dev_heartbeat_snapshot(struct dev_heartbeat *hb, struct heartbeat_state *out);

#endif
