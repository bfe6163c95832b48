/* cgroup v2 for the agent: each VM process lives in a child cgroup of the
 * agent's own cgroup, so that killing or freezing the agent's cgroup (a
 * test host "crashing") takes its VMs along, and so that a VM's processes
 * can be counted and killed as one. All paths are absolute directories in
 * the cgroup2 file system. Only cgroup v2 is supported; nothing here
 * enables controllers (a cgroup with controllers in cgroup.subtree_control
 * may not hold processes itself, and the agent's does). */
#ifndef TERN_AGENT_CGROUP_H
#define TERN_AGENT_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "../common/err.h"

/* The mount point of the cgroup2 file system (from /proc/self/mountinfo),
 * e.g. "/sys/fs/cgroup" or "/sys/fs/cgroup/unified". -1 if there is none. */
int cgroup_mount_point(char *out, size_t len, struct tern_err *err);

/* The directory of the cgroup v2 that process `pid` is in (0 = the caller),
 * from /proc/PID/cgroup's "0::" line joined to the mount point. */
int cgroup_of_pid(pid_t pid, char *out, size_t len, struct tern_err *err);

/* cgroup_layout = delegated (docs/ternd.md): the cgroup ternd starts in,
 * D, is delegated to it (systemd's Delegate=yes). Moves the caller into
 * the leaf D/agent and writes D/vms (created) to `vms_dir`, the parent of
 * the VMs' cgroups; D itself then holds no process, as cgroup v2 wants of
 * a cgroup whose children may get controllers. A caller already in a
 * cgroup named "agent" (systemd's DelegateSubgroup=agent, or a repeated
 * call) takes its parent as D, so the VMs' cgroups stay where they were
 * across agent restarts. Call it before starting threads. */
int cgroup_enter_delegated(char *vms_dir, size_t len, struct tern_err *err);

/* Creates the cgroup `dir` (its parent must exist). An existing one is
 * fine. */
int cgroup_create(const char *dir, struct tern_err *err);

/* Removes the cgroup `dir`. A missing one is fine; one that still holds
 * processes is an error saying so. A cgroup whose last process has just
 * exited can stay busy for a moment; this retries for up to ~200 ms. */
int cgroup_remove(const char *dir, struct tern_err *err);

/* Moves process `pid` (0 = the caller) into `dir`. */
int cgroup_move(const char *dir, pid_t pid, struct tern_err *err);

/* Opens dir/cgroup.procs for writing (O_CLOEXEC): a forked child moves
 * itself by writing "0" to it, without allocating. */
int cgroup_open_procs(const char *dir, struct tern_err *err);

/* Whether `dir` (or any cgroup below it) holds a process: 1 yes, 0 no, -1
 * error (e.g. it does not exist). From cgroup.events "populated". */
int cgroup_populated(const char *dir, struct tern_err *err);

/* SIGKILLs every process in `dir` and below at once (cgroup.kill, Linux
 * 5.14+). Returns when the kill is issued, not when the processes are
 * gone; cgroup_wait_empty waits for that. */
int cgroup_kill(const char *dir, struct tern_err *err);

/* Waits until `dir` holds no process, up to timeout_ms. 0 when empty, -1
 * on timeout or error. */
int cgroup_wait_empty(const char *dir, int timeout_ms, struct tern_err *err);

#endif
