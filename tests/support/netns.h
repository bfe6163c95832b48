/* Test hosts on one machine (design.md "Test hosts on one machine"): a
 * switch namespace holding a bridge, and one network namespace per host,
 * joined to the bridge by a veth, with an address 10.77.0.(i+1)/24. Names
 * carry the test process's pid, so concurrent test programs don't collide
 * and a later run can remove what a killed run left behind. Everything is
 * removed by test_hosts_destroy, and at exit if a test failed before. */
#ifndef TERN_TESTS_SUPPORT_NETNS_H
#define TERN_TESTS_SUPPORT_NETNS_H

#include <stdbool.h>
#include <stddef.h>

#include "proc.h"

#define TEST_HOSTS_MAX 8
#define TEST_HOSTS_EXTRA_MAX 8

struct test_hosts {
    int nr;
    bool created;
    char sw[32];                    /* switch namespace */
    char ns[TEST_HOSTS_MAX][32];    /* host namespaces */
    char veth[TEST_HOSTS_MAX][16];  /* host-side interface names */
    char addr[TEST_HOSTS_MAX][16];  /* 10.77.0.(i+1) */
    char veth_base[12];             /* veths are <veth_base>h<n>, <veth_base>x<k> */
    /* More namespaces on the bridge that are not hosts (a test host's BMC):
     * test_hosts_add_extra. Removed with the hosts. */
    int nr_extra;
    char extra_ns[TEST_HOSTS_EXTRA_MAX][32];
};

/* Creates `nr` hosts. Returns 0, or -1 with a message in err. Needs root
 * and iproute2. */
int test_hosts_create(struct test_hosts *h, int nr, char *err, size_t errlen);

/* Like test_hosts_create, but the namespaces are named `<prefix>sw` and
 * `<prefix>h1` ... `<prefix>h<nr>` (numbered from 1, like the test
 * cluster's hosts; ns[i] is host i+1, address 10.77.0.(i+1) as above).
 * With `keep`, nothing is removed at exit: for hosts that outlive the
 * program (tern-testhosts). A prefix that does not start with "tern-t"
 * followed by a pid is never touched by test_hosts_reap_stale. */
int test_hosts_create_named(struct test_hosts *h, int nr, const char *prefix, bool keep,
                            char *err, size_t errlen);

/* Fills `h` with the names test_hosts_create_named(nr, prefix) gave hosts
 * that another process created, and marks it created (so test_host_link
 * and test_hosts_destroy work on it). -1 if the switch namespace does not
 * exist. */
int test_hosts_attach_named(struct test_hosts *h, int nr, const char *prefix);

/* Deletes every network namespace whose name starts with `prefix` (for
 * hosts created by another process, or partly created). */
void test_hosts_remove_prefix(const char *prefix);

/* Removes the namespaces and links. Safe to call twice. */
void test_hosts_destroy(struct test_hosts *h);

/* One more network namespace on bridge 0 that is not a host, named
 * `<prefix><suffix>` (suffix: at most 6 characters, e.g. "bmc2") with
 * address `addr` (in 10.77.0.0/24, not a host's) and lo up: for a device
 * that must outlive the host it serves (a BMC, tests/support/bmc.h). Its
 * name goes to `ns`. Removed by test_hosts_destroy, and by the reaper like
 * the hosts'. */
int test_hosts_add_extra(struct test_hosts *h, const char *suffix, const char *addr, char *ns,
                         size_t nslen, char *err, size_t errlen);

/* Takes host i's link down (a network partition) or up again. */
int test_host_link(const struct test_hosts *h, int i, bool up);

/* Connects host i (0-based) to bridge `bridge` of the switch: 0 is the one
 * every host starts on; 1 is a second bridge (made on first use), so that
 * hosts on it see each other but not those on bridge 0 (a partition of
 * groups of hosts). */
int test_host_bridge(const struct test_hosts *h, int i, int bridge);

/* Starts argv inside host i's network namespace (ip netns exec). */
int test_proc_start_in(struct test_proc *p, const struct test_hosts *h, int i, const char *dir,
                       char *const argv[]);

/* Deletes namespaces named by earlier test runs whose process is gone. */
void test_hosts_reap_stale(void);

#endif
