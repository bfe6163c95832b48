/* ternd's configuration file (/etc/tern/ternd.conf by default): one
 * `key = value` per line, `#` comments. docs/ternd.md lists the keys.
 * Everything is checked at start, with the file and line in the error. */
#ifndef TERN_AGENT_CONFIG_H
#define TERN_AGENT_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/err.h"
#include "../fencing/fence.h"
#include "../ha/cluster_state.h"

#define TERND_DEFAULT_CONFIG "/etc/tern/ternd.conf"
#define TERND_IMAGE_DIRS_MAX 16

struct ternd_config {
    char host[CL_NAME_MAX];          /* "" = the corosync nodelist name of this node */
    char run_dir[PATH_MAX];          /* sockets, VM process dirs */
    char state_dir[PATH_MAX];        /* persisted cluster state */
    char shared_dir[PATH_MAX];       /* shared storage ("" = none) */
    char tls_dir[PATH_MAX];          /* ca.pem, cert.pem, key.pem */
    char control_socket[PATH_MAX];   /* default RUN/ternd.sock */
    char vmm_path[PATH_MAX];         /* default: tern-vmm next to ternd, else the installed one */
    char migration_addr[CL_ADDR_MAX];/* address incoming migrations listen on */
    uint16_t migration_port_min, migration_port_max;
    uint64_t mem_mib;                /* capacity offered to VMs */
    uint32_t vcpus;
    char cpg_group[64];
    bool use_cgroups;
    unsigned corosync_wait_s;        /* how long to wait at start for corosync to answer */
    unsigned client_idle_s;          /* a control connection with nothing going on is closed */
    unsigned host_down_after_s;      /* an offline host's node gone this long: host_down */
    unsigned client_stuck_s;         /* ... one that reads none of its replies is dropped */
    /* cgroup_layout = delegated: ternd's starting cgroup is delegated to it
     * (systemd's Delegate=yes); see cgroup_enter_delegated. */
    bool cgroup_delegated;
    /* Where disk images may be (image_dirs; none given: shared_dir), and
     * whether block devices may be disks (disk_policy_check). */
    char image_dirs[TERND_IMAGE_DIRS_MAX][PATH_MAX];
    unsigned nr_image_dirs;
    bool allow_block_devices;
    /* metrics_addr: where ternd serves Prometheus metrics (agent/metrics.c);
     * metrics_port 0 = off (the default). metrics_host is an IPv4 or IPv6
     * literal (a bare port in the file means 127.0.0.1). */
    char metrics_host[CL_ADDR_MAX];
    uint16_t metrics_port;
    /* fence_agent_dir, fence_timeout, fence_device, fence_level, watchdog,
     * watchdog_timeout (fencing/fence.h, docs/fencing.md). */
    struct fence_config fence;
};

/* Fills defaults, reads `path`, checks the result (directories exist or
 * can be created, tls_dir holds the three files, the VMM binary exists,
 * ports are a valid range). */
int ternd_config_load(struct ternd_config *c, const char *path, struct tern_err *err);

/* Parses config text (for tests); `origin` names it in errors. Does not
 * check the filesystem. */
int ternd_config_parse(struct ternd_config *c, const char *text, const char *origin,
                       struct tern_err *err);
void ternd_config_defaults(struct ternd_config *c);
int ternd_config_check(struct ternd_config *c, struct tern_err *err);

/* Whether a VM may use the disk image `path` on this host (disk_policy.c):
 * inside the image directories after resolving symlinks, a regular file
 * (or a block device if allowed). A path that does not exist passes on its
 * path alone unless `must_exist` (the host that starts the VM). -1 with an
 * `invalid` error naming the path and the allowed directories. */
int disk_policy_check(const struct ternd_config *c, const char *path, bool must_exist,
                      struct tern_err *err);

#endif
