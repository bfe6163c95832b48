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
    char cgroup[PATH_MAX];       /* its cgroup, removed at reap; "" if none */
    off_t log_from;              /* where this run's output starts in vmm.log */
};

struct vm_process_env {
    char vmm_path[PATH_MAX];     /* the tern-vmm binary */
    char run_dir[PATH_MAX];      /* agent run directory */
    char cgroup_dir[PATH_MAX];   /* parent cgroup for VMs ("" = don't use cgroups) */
    char tls_dir[PATH_MAX];      /* for incoming migrations */
};

/* vm_process_start without the wait: forks and execs tern-vmm (returning
 * once exec succeeded or failed, which takes a few milliseconds), opens
 * its pidfd and writes its pid file. Then vm_process_poll_ready tells,
 * without blocking, when it answers (1), that it ended (-1, reaped, err
 * with its log), or not yet (0); after vm_process_start_timeout_ms without
 * an answer, vm_process_give_up kills it and says so in err. The agent's
 * loop uses these; vm_process_start is for tools and tests. */
int vm_process_spawn(struct vm_process *p, const struct vm_process_env *env, const char *name,
                     const struct cl_vm_config *cfg, const char *listen_addr,
                     uint16_t incoming_port, const char *token, struct tern_err *err);
int vm_process_poll_ready(struct vm_process *p, struct tern_err *err);
void vm_process_give_up(struct vm_process *p, struct tern_err *err);
int vm_process_start_timeout_ms(void);

/* Sends `sig` through the pidfd (never to a recycled pid). */
void vm_process_signal(const struct vm_process *p, int sig);

/* Starts `tern-vmm run` for cfg. incoming_port 0 = a normal boot; otherwise
 * `--incoming tls://listen_addr:port --tls-dir --token token --commit-gate`.
 * Returns once the control socket answers (or the process failed, with
 * the log's last lines in err). An incoming VMM is also ready once its
 * log says it listens (tern-vmm without a control socket during the
 * incoming phase). Refuses while a tern-vmm for `name` still runs. With
 * env->cgroup_dir set, the VM goes into cgroup_dir/vm-NAME or does not
 * start. docs/vm-processes.md has the details. */
int vm_process_start(struct vm_process *p, const struct vm_process_env *env, const char *name,
                     const struct cl_vm_config *cfg, const char *listen_addr,
                     uint16_t incoming_port, const char *token, struct tern_err *err);

/* Finds a running tern-vmm for `name` (pid file + live control socket). 1
 * if found and attached, 0 if there is none (stale files removed), -1 on
 * error. A process counts as this VM's when it is alive (not a zombie),
 * its start time matches the pid file's and its command line is `run ...
 * --control RUN/vms/NAME/control.sock`; without a usable pid file, the
 * process listening on the control socket (SO_PEERCRED) is checked the
 * same way and the pid file rewritten. Such a process is attached even if
 * its socket does not answer at that moment: dropping a live VM would let
 * a second copy start. p->incoming comes from its command line. */
int vm_process_attach(struct vm_process *p, const struct vm_process_env *env, const char *name,
                      struct tern_err *err);

/* Names of VM directories under RUN/vms (for re-attach at start). Returns a
 * JSON array of strings, sorted; empty if RUN/vms does not exist. */
json_t *vm_process_list_dirs(const struct vm_process_env *env);

/* One control request (JSON line) with a timeout. 0 with *reply (the
 * caller's) only for {"ok":true,...}; an {"ok":false} reply is -1 with the
 * VMM's error in err, like a failure to connect or a timeout. */
int vm_process_call(const struct vm_process *p, json_t *req, int timeout_ms, json_t **reply,
                    struct tern_err *err);

/* After the pidfd became readable: collects the exit status if the agent is
 * the parent, closes the pidfd, removes the pid file. Also removes the
 * control socket and the VM's cgroup (if empty); vmm.log and serial.log
 * stay. Called too early, it waits for a child to end, while an attached
 * process that still runs is only forgotten (pidfd closed, files left
 * for the next attach). A second call does nothing. */
void vm_process_reap(struct vm_process *p);

/* Asks it to stop (control "stop"; SIGTERM if that cannot be delivered),
 * then SIGKILL after grace_ms. Waits for the end and reaps it: 0 once it
 * ended (for a child, exit_status says how: 0 clean, 137 killed), -1 only
 * if even SIGKILL did not end it within 10 s. No process: 0. */
int vm_process_stop(struct vm_process *p, int grace_ms, struct tern_err *err);

/* SIGKILL now (e.g. an incoming VMM of a migration that was aborted),
 * through the pidfd so a recycled pid is never hit; waits for the end (up
 * to 10 s) and reaps it. */
void vm_process_kill(struct vm_process *p);

/* Last `max` bytes of the VMM log, for error messages. malloc'd. */
char *vm_process_log_tail(const struct vm_process *p, size_t max);

#endif
