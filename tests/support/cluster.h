/* Test hosts running corosync, on one machine (design.md "Test hosts on
 * one machine"; docs/test-hosts.md). Host i (1..nr) has nodeid i, name
 * "hi" and address 10.77.0.i, and is:
 *   - a network namespace on the test bridge (netns.c),
 *   - a private mount namespace entered by every process of the host, in
 *     which DIR/hi/etc/corosync, DIR/hi/var/lib/corosync and DIR/hi/run are
 *     bound over /etc/corosync, /var/lib/corosync and /run, and a per-host
 *     directory /dev/shm/<prefix>hi over /dev/shm (libqb's IPC rings live
 *     there; its sockets are abstract, hence per network namespace),
 *   - a UTS namespace whose hostname is "hi",
 *   - a cgroup v2 <cgroup2 mount>/<prefix>hi holding every process of the
 *     host, so one write to cgroup.kill crashes the host and cgroup.freeze
 *     hangs it.
 * DIR/shared is the shared storage every host sees (at the same path).
 * Processes of a host get TERN_TESTHOST=hi, TERN_TESTHOST_DIR=DIR/hi and
 * TERN_SHARED_DIR=DIR/shared in their environment.
 *
 * Test runs name everything "tern-t<pid>-c<n>-..." so a later run removes
 * what a killed run left (test_cluster_reap_stale); clusters of a program
 * that exits are destroyed at exit. Long-lived hosts (tern-testhosts) use
 * a fixed prefix the reaper never touches.
 *
 * Needs root, iproute2, corosync and a cgroup2 mount with cgroup.kill
 * (Linux 5.14+). Functions returning int give 0, or -1 with a message in
 * err. */
#ifndef TERN_TESTS_SUPPORT_CLUSTER_H
#define TERN_TESTS_SUPPORT_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "netns.h"
#include "proc.h"

#define TEST_CLUSTER_MAX TEST_HOSTS_MAX

struct test_cluster {
    int nr;
    bool created;
    bool keep;                              /* outlives this process */
    pid_t owner;                            /* the process that created it */
    char prefix[24];                        /* of namespace, cgroup and shm names */
    char dir[256];                          /* DIR */
    struct test_hosts net;                  /* net.ns[i - 1] is host i */
    char cgroup[TEST_CLUSTER_MAX + 1][256]; /* [i], i = 1..nr */
    char shm[TEST_CLUSTER_MAX + 1][128];    /* [i] */
    pid_t corosync[TEST_CLUSTER_MAX + 1];   /* [i]: started by this process, or 0 */
};

/* Creates `nr` hosts under `dir` (created if missing; removed by
 * test_cluster_destroy): namespaces, directories, corosync.conf for each
 * host, cgroups. Starts nothing. Removes stale leftovers of earlier runs
 * first. */
int test_cluster_create(struct test_cluster *c, int nr, const char *dir, char *err,
                        size_t errlen);

/* The same with names starting with `prefix` (at most 20 characters, e.g.
 * "tern-demo-"); with `keep`, nothing is removed when this process exits. */
int test_cluster_create_named(struct test_cluster *c, int nr, const char *dir,
                              const char *prefix, bool keep, char *err, size_t errlen);

/* Fills `c` for hosts another process created with
 * test_cluster_create_named(nr, dir, prefix, keep = true), without checking
 * more than that host 1's namespace exists. Destroying it removes them. */
int test_cluster_attach(struct test_cluster *c, int nr, const char *dir, const char *prefix,
                        char *err, size_t errlen);

/* Kills every process of every host, removes the cgroups, namespaces, shm
 * directories and `dir`. Safe after a failed create and safe twice. */
void test_cluster_destroy(struct test_cluster *c);

/* Removes whatever hosts named `prefix...` exist (processes, cgroups,
 * namespaces, shm directories), created by any process, also partly. */
void test_cluster_remove_prefix(const char *prefix);

/* Removes leftovers of test runs whose process is gone: namespaces,
 * cgroups (after killing what runs in them) and shm directories named
 * "tern-t<pid>-...". */
void test_cluster_reap_stale(void);

/* Moves the calling process into host i: its cgroup (if `join_cgroup`),
 * network, mount and UTS namespaces, environment. For a freshly forked,
 * single-threaded child about to run the host's work. */
int test_cluster_enter(const struct test_cluster *c, int i, bool join_cgroup, char *err,
                       size_t errlen);

/* Starts `corosync -f` in host i (a new session; output appended to
 * DIR/hi/log/corosync.out, its log in DIR/hi/log/corosync.log). Returns
 * once it is started, not once it is ready: see test_cluster_wait_quorate. */
int test_cluster_start_corosync(struct test_cluster *c, int i, char *err, size_t errlen);

/* Stops host i's corosync (SIGTERM, SIGKILL after 5 s) and reaps it. */
int test_cluster_stop_corosync(struct test_cluster *c, int i, char *err, size_t errlen);

/* Whether host i's corosync (started by this process) still runs. */
bool test_cluster_corosync_running(struct test_cluster *c, int i);

/* Waits until the corosync of every host this process started answers
 * as quorate with all of those hosts' votes counted (all of them have
 * joined), up to timeout_ms. Fails early, quoting its log, when one of
 * them exited. */
int test_cluster_wait_quorate(struct test_cluster *c, int timeout_ms, char *err, size_t errlen);

/* Asks host i's corosync (votequorum) whether it is quorate: 1 yes, 0 no,
 * -1 cannot ask (corosync not answering). *total_votes (may be NULL) gets
 * the votes it counts. */
int test_cluster_quorate(const struct test_cluster *c, int i, unsigned *total_votes, char *err,
                         size_t errlen);

/* Starts argv (argv[0] looked up in PATH) in host i, in the background,
 * with stdin from /dev/null and stdout/stderr to files in out_dir (names
 * in p). test_proc_wait/test_proc_kill work on it as usual. */
int test_cluster_spawn(const struct test_cluster *c, int i, char *const argv[],
                       const char *out_dir, struct test_proc *p, char *err, size_t errlen);

/* Runs argv in host i to completion, up to timeout_ms (then it is killed
 * and the result is -1). Its stdout and stderr go to `out` (cut to fit).
 * Returns the exit status, 128+signal if killed by one, or -1. */
int test_cluster_exec(const struct test_cluster *c, int i, char *const argv[], int timeout_ms,
                      char *out, size_t outlen);

/* Crashes host i: SIGKILL to every process in its cgroup at once (corosync
 * and anything spawned there), then waits until they are gone. */
int test_cluster_kill_host(struct test_cluster *c, int i, char *err, size_t errlen);

/* Hangs host i (cgroup.freeze) or lets it run again. Returns once the
 * kernel reports the cgroup frozen (or thawed). */
int test_cluster_freeze_host(const struct test_cluster *c, int i, bool frozen, char *err,
                             size_t errlen);

/* Cuts host i off the network (its veth down) or reconnects it. */
int test_cluster_partition(const struct test_cluster *c, int i, bool cut, char *err,
                           size_t errlen);

/* Splits the hosts into two groups that see only each other: hosts whose
 * bit (1 << i) is set in `mask` move to a second bridge; the others stay.
 * mask 0 heals it (everyone back on one bridge). */
int test_cluster_split(const struct test_cluster *c, unsigned mask, char *err, size_t errlen);

/* Paths and names of host i, for messages and hosts.json. */
const char *test_cluster_netns(const struct test_cluster *c, int i);
const char *test_cluster_addr(const struct test_cluster *c, int i);

#endif
