/* Test hosts running corosync and ternd (tests/support/cluster.h plus the
 * agent): certificates from a test CA, a ternd.conf per host, ternd started
 * and stopped per host, and the agent's control API (docs/agent-api.md)
 * spoken from the test. Host i's socket is DIR/hi/run/tern/ternd.sock, its
 * state DIR/hi/state, its ternd log DIR/hi/ternd.err (test_proc's err
 * file); DIR/shared is the shared storage.
 *
 * These never fail a test themselves (benchmarks use them too): they
 * return NULL / false / -1 and print what went wrong. tests/support/
 * ternd_assert.h has the cmocka versions. */
#ifndef TERN_TESTS_SUPPORT_TERND_HOSTS_H
#define TERN_TESTS_SUPPORT_TERND_HOSTS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "cluster.h"
#include "proc.h"

struct ternd_hosts {
    struct test_cluster cl;
    struct test_proc ternd[TEST_CLUSTER_MAX + 1]; /* [i], i = 1..nr */
    int nr;
    char dir[256];
    char guest[512]; /* the test guest, as an absolute path */
};

/* Makes `nr` hosts in a fresh directory (tag names it): namespaces, a test
 * CA and each host's certificate, ternd.conf (1 GiB, 4 vCPUs offered),
 * corosync started and quorate with every vote. No ternd runs yet. */
int ternd_hosts_create(struct ternd_hosts *t, int nr, const char *tag, char *err, size_t errlen);

/* Writes host h's ternd.conf again, with `extra` (lines, may be NULL)
 * appended: a later key overrides an earlier one. */
int ternd_hosts_write_config(struct ternd_hosts *t, int h, const char *extra);

/* Starts ternd on host h (TERN_TEST_FAULT=fault if not NULL). */
int ternd_hosts_start(struct ternd_hosts *t, int h, const char *fault);
/* SIGKILLs host h's ternd (no clean-up at all). */
void ternd_hosts_kill(struct ternd_hosts *t, int h);

/* Kills every ternd, copies the hosts' directories to $TERN_CLUSTER_LOGS
 * if set, removes everything. */
void ternd_hosts_destroy(struct ternd_hosts *t);

/* One request line to host h's agent; returns its final reply (the line
 * with "ok") and counts progress lines. NULL if it could not be reached or
 * did not answer within timeout_ms. */
json_t *ternd_api_line(struct ternd_hosts *t, int h, const char *line, int *progress,
                       int timeout_ms);
/* The same with a JSON request (consumed). */
json_t *ternd_api(struct ternd_hosts *t, int h, json_t *req, int *progress, int timeout_ms);
/* The reply's error code, or NULL. */
const char *ternd_err_code(const json_t *reply);
/* `status`'s result, or NULL. */
json_t *ternd_status(struct ternd_hosts *t, int h);
/* `vm.show`'s VM as host h sees it, or NULL. */
json_t *ternd_vm_show(struct ternd_hosts *t, int h, const char *vm);
/* Host `host` as `host.list` at host h shows it, or NULL. */
json_t *ternd_host_show(struct ternd_hosts *t, int h, const char *host);
/* The string j.a (j.a.b if b is not NULL), "" if there is none. */
const char *tjson_str(const json_t *j, const char *a, const char *b);

/* Waits until every host in `mask` (bit i: host i) is synced, in step, and
 * quorate or not as `quorate` says, sees `online` hosts online, and all
 * report the same state version. False (with every host's log printed)
 * when that does not happen within timeout_ms. */
bool ternd_hosts_agree(struct ternd_hosts *t, unsigned mask, int online, bool quorate,
                       int timeout_ms);

/* Host h's state without what legitimately differs per host (the
 * "cluster" object), as canonical JSON text (malloc'd), or NULL. */
char *ternd_shared_view(struct ternd_hosts *t, int h);

/* Prints every host's ternd log to stderr. */
void ternd_hosts_print_logs(struct ternd_hosts *t);

/* The pid ternd recorded for `vm`'s process on host h (its VM directory's
 * pid file), 0 if none. */
pid_t ternd_hosts_vm_pid(struct ternd_hosts *t, int h, const char *vm);

#endif
