/* A BMC for a test host (design.md "Test hosts on one machine";
 * docs/fencing.md "The test BMC"): OpenIPMI's ipmi_sim (Debian package
 * openipmi) answering IPMI over LAN at 10.77.0.(200+i):623 for test host
 * i, so that Debian's fence_ipmilan in any test host powers it off as it
 * would a real machine's.
 *
 * It must outlive the host it powers off: ipmi_sim runs in a network
 * namespace of its own joined to the test bridge (test_hosts_add_extra:
 * <prefix>bmcI) and in a cgroup of its own (<cgroup2>/<prefix>bmcI), not
 * the host's. Its chassis control is a script written into its directory:
 * "set power 0" (and a reset) writes "1" to the host's cgroup.kill and
 * returns once the cgroup is empty; "get power" answers on (1) while the
 * host's cgroup holds a process. Power on is accepted and changes nothing:
 * a BMC cannot start a test host's processes again. Every call is logged
 * to DIR/chassis.log.
 *
 * Its files (lan.conf, sim.emu, chassis, state/, ipmi_sim.log) are written
 * at start under the cluster's directory, bmcI/. BMCs are removed by
 * test_bmc_stop, at exit, and (being named after the test's pid) by
 * test_cluster_reap_stale after a killed run; ipmi_sim also dies with the
 * process that started it (PR_SET_PDEATHSIG). Needs root, iproute2,
 * ipmi_sim and ipmitool. */
#ifndef TERN_TESTS_SUPPORT_BMC_H
#define TERN_TESTS_SUPPORT_BMC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "cluster.h"

struct test_bmc {
    int host;            /* the test host it powers: 1..nr */
    pid_t pid;           /* ipmi_sim, or 0 */
    bool paused;
    char ns[32];         /* its network namespace */
    char addr[16];       /* 10.77.0.(200+host) */
    char dir[300];       /* its files */
    char cgroup[256];    /* its own cgroup */
    char host_cgroup[256];
    char user[32];
    char password[64];
};

/* Starts the BMC of host i of `c` with one administrator, `user` and
 * `password` (letters and digits), and waits (up to 10 s) until it answers
 * IPMI 2.0 (lanplus, cipher suite 3) with them. */
int test_bmc_start(struct test_bmc *b, struct test_cluster *c, int i, const char *user,
                   const char *password, char *err, size_t errlen);

/* Stops answering (SIGSTOP: a hung BMC, its packets unanswered) or
 * answers again (SIGCONT). */
int test_bmc_pause(struct test_bmc *b, bool paused, char *err, size_t errlen);

/* Kills ipmi_sim (by pid) and removes its cgroup. Its namespace goes with
 * the cluster's. Safe twice, and on a BMC that never started. */
void test_bmc_stop(struct test_bmc *b);

/* How many chassis control calls were logged containing `needle` (e.g.
 * "set power 0"). */
int test_bmc_chassis_calls(const struct test_bmc *b, const char *needle);

#endif
