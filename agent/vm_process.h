/* The agent's VM processes: one tern-vmm per VM, in its own cgroup, with
 * its control socket, pid file and log under the agent's run directory:
 *   RUN/vms/NAME/control.sock  RUN/vms/NAME/pid  RUN/vms/NAME/vmm.log
 *   RUN/vms/NAME/serial.log
 * The process is started in its own session and does not depend on the
 * agent: when ternd restarts, vm_process_attach finds it again. Exit is
 * watched with a pidfd, so it works for processes the agent did not start
 * itself (after a restart) too. */
#ifndef TERN_AGENT_VM_PROCESS_H
#define TERN_AGENT_VM_PROCESS_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

#include "../common/err.h"
#include "../ha/cluster_state.h"

struct vm_process {
    char name[CL_NAME_MAX];
    char dir[PATH_MAX];          /* RUN/vms/NAME */
    char control[PATH_MAX];      /* RUN/vms/NAME/control.sock */
    pid_t pid;
    int pidfd;                   /* readable when the process ended; -1 if none */
    bool child;                  /* started by this agent (can be reaped) */
    bool incoming;               /* started with --incoming */
    int exit_status;             /* after vm_process_reap: exit code, 128+sig, -1 unknown */
};

struct vm_process_env {
    char vmm_path[PATH_MAX];     /* the tern-vmm binary */
    char run_dir[PATH_MAX];      /* agent run directory */
    char cgroup_dir[PATH_MAX];   /* parent cgroup for VMs ("" = don't use cgroups) */
    char tls_dir[PATH_MAX];      /* for incoming migrations */
};

/* Starts `tern-vmm run` for cfg. incoming_port 0 = a normal boot; otherwise
 * `--incoming tls://listen_addr:port --tls-dir --token token --commit-gate`.
 * Returns once the control socket answers (or the process failed, with
 * the log's last lines in err). */
int vm_process_start(struct vm_process *p, const struct vm_process_env *env, const char *name,
                     const struct cl_vm_config *cfg, const char *listen_addr,
                     uint16_t incoming_port, const char *token, struct tern_err *err);

/* Finds a running tern-vmm for `name` (pid file + live control socket). 1
 * if found and attached, 0 if there is none (stale files removed), -1 on
 * error. */
int vm_process_attach(struct vm_process *p, const struct vm_process_env *env, const char *name,
                      struct tern_err *err);

/* Names of VM directories under RUN/vms (for re-attach at start). Returns a
 * JSON array of strings. */
json_t *vm_process_list_dirs(const struct vm_process_env *env);

/* One control request (JSON line) with a timeout. */
int vm_process_call(const struct vm_process *p, json_t *req, int timeout_ms, json_t **reply,
                    struct tern_err *err);

/* After the pidfd became readable: collects the exit status if the agent is
 * the parent, closes the pidfd, removes the pid file. */
void vm_process_reap(struct vm_process *p);

/* Asks it to stop (control "stop"), then SIGKILL after grace_ms. Waits for
 * the end and reaps it. */
int vm_process_stop(struct vm_process *p, int grace_ms, struct tern_err *err);

/* SIGKILL now (e.g. an incoming VMM of a migration that was aborted). */
void vm_process_kill(struct vm_process *p);

/* Last `max` bytes of the VMM log, for error messages. malloc'd. */
char *vm_process_log_tail(const struct vm_process *p, size_t max);

#endif
