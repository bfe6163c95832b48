/* disk=1: the durable journal on the first virtio-mmio disk, run by the
 * BSP as a state machine stepped from its work loop (like dirtying and
 * checking), so waiting for the disk never holds up a heartbeat.
 *
 * First the read-back: the journal is read from sector 0 in chunks and
 * checked block by block (journal.c) until its end; then records are
 * appended at disk_rate per second, each a write of its block and a FLUSH,
 * and counted durable when the FLUSH completes. */
#ifndef TG_DISK_H
#define TG_DISK_H

#include <stdint.h>

#include "cmdline.h"

/* Sets the device up (exits with TG_EXIT_CHECK_FAILED if it cannot be
 * used) and prints TG_FMT_DISK_READY. BSP, before the workload starts. */
void disk_setup(const struct tg_params *p, uint64_t tsc_khz);

/* One step: consumes a completed request, checks read-back blocks for up
 * to `budget` TSC cycles, submits the next request when one is due.
 * Exits the guest on a bad journal or a failed request. */
void disk_step(uint64_t now, uint64_t budget);

/* When the disk task next has work: `now` if at once, the time the next
 * record is due, or UINT64_MAX while it waits for the device (polled at
 * the next timer tick) or has nothing more to do. */
uint64_t disk_next(uint64_t now);

/* The last durable record's sequence number (0 before the read-back ends,
 * then the recovered records, then each record whose FLUSH completed). */
uint64_t disk_durable_seq(void);

#endif
