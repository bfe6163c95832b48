/* Snapshot files: `tern-vmm ctl PATH save FILE` and `tern-vmm run --restore
 * FILE`. The format (docs/snapshot-format.md) is a sequence of proto/record.h
 * records: a header, the VM configuration, the state records of
 * vm_state.h, guest RAM as runs of non-zero pages, and an end record. Every
 * record carries a CRC, so a truncated or corrupted file is refused before
 * the guest runs. */
#ifndef TERN_NODE_VMM_SNAPSHOT_H
#define TERN_NODE_VMM_SNAPSHOT_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/err.h"
#include "../proto/record_types.h"
#include "options.h"

#define SNAP_HEADER_RECORD REC_TYPE_SNAP_HEADER
#define SNAP_CONFIG_RECORD REC_TYPE_SNAP_CONFIG
#define SNAP_MEMORY_RECORD REC_TYPE_SNAP_MEMORY
#define SNAP_END_RECORD REC_TYPE_SNAP_END
#define SNAP_MAGIC "TERNSNAP"
#define SNAP_FORMAT_VERSION 1
/* Pages per memory record: keeps each record under REC_MAX_PAYLOAD. */
#define SNAP_MAX_RUN_PAGES 4096u

struct vm;

struct snapshot_config {
    uint64_t mem_bytes;
    unsigned vcpus;
    uint32_t tsc_khz;
    unsigned nr_disks;
    struct {
        char path[PATH_MAX];
        bool read_only;
    } disks[VMM_MAX_DISKS];
};

struct snapshot_stats {
    uint64_t bytes;        /* file size */
    uint64_t pages;        /* non-zero pages written */
    uint64_t zero_pages;   /* pages skipped */
    double seconds;
};

/* Writes the snapshot of a paused VM whose devices are quiesced: to
 * FILE.tmp-PID, fsync, rename over FILE, fsync the directory. On failure
 * the temporary file is removed and FILE is untouched. */
int snapshot_write(struct vm *vm, const char *path, struct snapshot_stats *stats,
                   struct tern_err *err);

struct snapshot_reader {
    int fd;
    char path[PATH_MAX];
    uint64_t size;
    uint64_t off;
    unsigned records;
    struct snapshot_config config;
};

/* Opens FILE and reads its header and configuration. */
int snapshot_open(struct snapshot_reader *r, const char *path, struct tern_err *err);

/* Fills what the options leave open (memory, vCPUs, disks) from the
 * snapshot, and refuses, saying what differs, where they disagree. */
int snapshot_apply_config(const struct snapshot_reader *r, struct run_options *o,
                          struct tern_err *err);

/* Reads the rest (state records and RAM) into `vm`, created from the same
 * configuration and not started. */
int snapshot_restore(struct snapshot_reader *r, struct vm *vm, struct tern_err *err);

void snapshot_close(struct snapshot_reader *r);

#endif
