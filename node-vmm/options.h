/* Command-line options of `tern-vmm run` and `tern-vmm ctl`. Parsing is pure
 * (no I/O) so every error path is unit-tested. */
#ifndef TERN_NODE_VMM_OPTIONS_H
#define TERN_NODE_VMM_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "../common/err.h"

#define VMM_MAX_VCPUS 64
#define VMM_MAX_DISKS 4

enum serial_kind {
    SERIAL_STDIO = 0,
    SERIAL_FILE,
    SERIAL_UNIX,
};

struct serial_spec {
    enum serial_kind kind;
    const char *path; /* for file: and unix: (points into argv) */
};

struct disk_spec {
    const char *path; /* points into argv */
    bool read_only;
};

/* tls://HOST:PORT (HOST: a name, an IPv4 address, or [IPv6]). */
struct endpoint {
    char host[256];
    uint16_t port;
};

struct run_options {
    const char *restore; /* --restore FILE: continue a snapshot instead of booting */
    /* --incoming tls://ADDR:PORT: wait for a live migration instead of
     * booting; needs --tls-dir and --token, and --mem/--vcpus/--disk as on
     * the source. */
    bool incoming;
    struct endpoint incoming_at;
    /* --commit-gate (with --incoming): after READY the guest runs here on
     * the source's COMMIT or the agent's migrate-commit; a connection lost
     * after READY leaves the decision to the agent instead of failing. */
    bool commit_gate;
    const char *tls_dir;
    const char *token;
    const char *kernel;
    const char *initrd;
    const char *cmdline;
    uint64_t mem_bytes;
    unsigned vcpus;
    struct serial_spec serial;
    const char *control_path;
    struct disk_spec disks[VMM_MAX_DISKS];
    unsigned nr_disks;
    /* With --restore, which of --mem/--vcpus/--disk were given (the rest
     * come from the snapshot; the given ones must match it). */
    bool mem_given, vcpus_given, disks_given;
};

/* Parses "512M", "1G", "4096K", "1048576" (bytes) and "2T". Suffixes are
 * binary (K = 1024). Fails on empty strings, junk, overflow. */
int parse_size(const char *s, uint64_t *out, struct tern_err *err);

/* Parses "stdio", "file:PATH" or "unix:PATH". */
int parse_serial_spec(const char *s, struct serial_spec *out, struct tern_err *err);

/* Parses "tls://HOST:PORT". */
int parse_endpoint(const char *s, struct endpoint *out, struct tern_err *err);

/* Parses --disk's "PATH" or "PATH,ro"; a PATH with a comma is refused
 * (ambiguous: --disk-rw PATH and --disk-ro PATH take any path as it is). */
int parse_disk_spec(char *s, struct disk_spec *out, struct tern_err *err);

/* Parses the arguments after "run" (argv[0] is the first option). Checks
 * required options and ranges, not whether files exist. With --restore,
 * --kernel/--initrd/--cmdline are refused and --mem is optional. May write
 * into argv strings (--disk PATH,ro is split at its comma). */
int parse_run_options(int argc, char **argv, struct run_options *out, struct tern_err *err);

#endif
