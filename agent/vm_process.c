#include "vm_process.h"

#include "../common/fileio.h"
#include "../common/text.h"
#include "../common/unix_addr.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../node-vmm/control.h"
#include "cgroup.h"

#define START_TIMEOUT_MS 10000  /* until the control socket answers */
#define STATUS_TIMEOUT_MS 2000  /* one status request while starting/attaching */
#define KILL_WAIT_MS 10000      /* after SIGKILL, for the process to be gone */
#define ERR_TAIL_BYTES 480      /* of vmm.log, in error messages (TERN_ERR_MAX is 1024) */
#define INCOMING_READY "tern-vmm: waiting for a migration on"

extern char **environ;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int sys_pidfd_open(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int sys_pidfd_send_signal(int pidfd, int sig)
{
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

/* Whether the process behind pidfd has ended, waiting up to timeout_ms
 * (-1 = forever). A pidfd becomes readable when its process exits. */
static bool pidfd_wait(int pidfd, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        int left = timeout_ms < 0 ? -1 : (int)(deadline - now_ms());
        if (timeout_ms >= 0 && left < 0)
            left = 0;
        struct pollfd pf = {.fd = pidfd, .events = POLLIN};
        int r = poll(&pf, 1, left);
        if (r > 0)
            return true;
        if (r == 0)
            return false;
        if (errno != EINTR)
            return false;
    }
}

/* VM names become directory and cgroup names: [A-Za-z0-9._-], 1-63
 * characters, and not "." or "..". */
static bool name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= CL_NAME_MAX || !strcmp(name, ".") || !strcmp(name, ".."))
        return false;
    for (const char *c = name; *c; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '.' || *c == '_' || *c == '-'))
            return false;
    }
    return true;
}

static void clear(struct vm_process *p)
{
    memset(p, 0, sizeof(*p));
    p->pidfd = -1;
    p->exit_status = -1;
}

static int fill_paths(struct vm_process *p, const struct vm_process_env *env, const char *name,
                      struct tern_err *err)
{
    if (!name_ok(name))
        return tern_err_set(err, "invalid VM name '%s'; use 1-63 letters, digits, '.', '_' or '-'",
                            name);
    snprintf(p->name, sizeof(p->name), "%s", name);
    if (snprintf(p->dir, sizeof(p->dir), "%s/vms/%s", env->run_dir, name) >= (int)sizeof(p->dir))
        return tern_err_set(err, "run directory %s is too long", env->run_dir);
    /* A unix socket path holds at most 107 bytes. */
    if (snprintf(p->control, sizeof(p->control), "%s/control.sock", p->dir) >=
        (int)sizeof(((struct sockaddr_un *)0)->sun_path))
        return tern_err_set(err, "control socket path %s/control.sock is longer than a unix socket "
                                 "allows (107 bytes); use a shorter run directory", p->dir);
    if (env->cgroup_dir[0] &&
        snprintf(p->cgroup, sizeof(p->cgroup), "%s/vm-%s", env->cgroup_dir, name) >=
            (int)sizeof(p->cgroup))
        return tern_err_set(err, "cgroup directory %s is too long", env->cgroup_dir);
    return 0;
}

static void file_path(const struct vm_process *p, const char *leaf, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", p->dir, leaf);
}

static int mkdir_p(const char *path, mode_t mode, struct tern_err *err)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return tern_err_set(err, "path %s is too long", path);
    for (char *s = buf + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return tern_err_errno(err, errno, "cannot create directory %s", buf);
        *s = c;
        if (!c)
            break;
    }
    struct stat st;
    if (stat(path, &st) < 0)
        return tern_err_errno(err, errno, "cannot stat %s", path);
    if (!S_ISDIR(st.st_mode))
        return tern_err_set(err, "%s exists and is not a directory", path);
    return 0;
}


/* State letter and start time (clock ticks since boot, field 22) of pid,
 * from /proc/PID/stat. The start time never changes for a process and a
 * recycled pid gets a new one, so (pid, start time) names one process. */
static int proc_stat(pid_t pid, char *state, unsigned long long *start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (tern_read_small(path, buf, sizeof(buf), NULL) < 0)
        return -1;
    /* The command name (field 2) may hold spaces and ')': skip to the last one. */
    char *s = strrchr(buf, ')');
    if (!s)
        return -1;
    s++;
    char *save = NULL;
    int field = 2;
    for (char *t = strtok_r(s, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 3)
            *state = t[0];
        if (field == 22) {
            char *end;
            errno = 0;
            *start = strtoull(t, &end, 10);
            return errno || *end ? -1 : 0;
        }
    }
    return -1;
}

/* Whether pid's command line is `... run ... --control CONTROL ...`: a
 * tern-vmm serving exactly this VM's socket. Sets *incoming if it has
 * --incoming. A zombie has an empty command line and fails. */
static bool cmdline_matches(pid_t pid, const char *control, bool *incoming)
{
    char path[64];
    const size_t cap = 65536;
    char *buf = malloc(cap);
    if (!buf)
        return false;
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    ssize_t len = tern_read_small(path, buf, cap, NULL);
    if (len <= 0) {
        free(buf);
        return false;
    }
    const char *args[256];
    int n = 0;
    for (ssize_t i = 0; i < len && n < 256; i += (ssize_t)strlen(buf + i) + 1)
        args[n++] = buf + i;
    bool found = false;
    *incoming = false;
    for (int i = 2; n >= 2 && !strcmp(args[1], "run") && i < n; i++) {
        if (!strcmp(args[i], "--control") && i + 1 < n && !strcmp(args[i + 1], control))
            found = true;
        if (!strcmp(args[i], "--incoming"))
            *incoming = true;
    }
    free(buf);
    return found;
}

/* Opens a pidfd for pid if it is this VM's live tern-vmm (and, if
 * want_start is not 0, the process started at want_start). The pidfd is
 * opened first and the identity checked after: if it names the right
 * process then, it cannot be a recycled pid. -1 if not. */
static int open_verified(const struct vm_process *p, pid_t pid, unsigned long long want_start,
                         unsigned long long *start, bool *incoming)
{
    if (pid <= 0)
        return -1;
    int fd = sys_pidfd_open(pid);
    if (fd < 0)
        return -1;
    char state = '?';
    if (proc_stat(pid, &state, start) < 0 || state == 'Z' || state == 'X' ||
        (want_start && *start != want_start) || !cmdline_matches(pid, p->control, incoming) ||
        pidfd_wait(fd, 0)) {
        close(fd);
        return -1;
    }
    return fd;
}

static int read_pid_file(const struct vm_process *p, pid_t *pid, unsigned long long *start)
{
    char path[PATH_MAX + 8], buf[128];
    file_path(p, "pid", path, sizeof(path));
    if (tern_read_small(path, buf, sizeof(buf), NULL) < 0)
        return -1;
    int v;
    if (sscanf(buf, "%d %llu", &v, start) != 2 || v <= 0)
        return -1;
    *pid = v;
    return 0;
}

/* "PID STARTTIME\n", written to a temporary file and renamed, so a reader
 * never sees half of it. No fsync: the run directory does not outlive a
 * reboot, and neither do the VMs. */
static int write_pid_file(const struct vm_process *p, unsigned long long start,
                          struct tern_err *err)
{
    char path[PATH_MAX + 8], tmp[PATH_MAX + 8], buf[64];
    file_path(p, "pid", path, sizeof(path));
    file_path(p, "pid.tmp", tmp, sizeof(tmp));
    int len = snprintf(buf, sizeof(buf), "%d %llu\n", (int)p->pid, start);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return tern_err_errno(err, errno, "cannot create %s", tmp);
    if (write(fd, buf, (size_t)len) != len) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return tern_err_errno(err, e, "cannot write %s", tmp);
    }
    if (close(fd) < 0 || rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return tern_err_errno(err, e, "cannot write %s", path);
    }
    return 0;
}

/* The pid of whoever listens on the control socket (SO_PEERCRED gives the
 * credentials of the process that called listen()), 0 if nobody does. */
static pid_t socket_owner(const char *path)
{
    struct sockaddr_un addr;
    if (unix_addr_fill(&addr, path, "control socket", NULL) < 0)
        return 0;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return 0;
    pid_t pid = 0;
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
        struct ucred cred;
        socklen_t clen = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0)
            pid = cred.pid;
    }
    close(fd);
    return pid;
}

/* Finds this VM's live tern-vmm: the one in the pid file, or else the one
 * serving its control socket (the agent may have died between starting it
 * and writing the pid file). 1 with *pidfd set, or 0. */
static int find_live(struct vm_process *p, int *pidfd, unsigned long long *start,
                     bool *pid_file_ok)
{
    pid_t pid;
    unsigned long long want;
    bool incoming = false;
    *pid_file_ok = false;
    if (read_pid_file(p, &pid, &want) == 0) {
        *pidfd = open_verified(p, pid, want, start, &incoming);
        if (*pidfd >= 0) {
            p->pid = pid;
            p->incoming = incoming;
            *pid_file_ok = true;
            return 1;
        }
    }
    pid = socket_owner(p->control);
    if (pid > 0) {
        *pidfd = open_verified(p, pid, 0, start, &incoming);
        if (*pidfd >= 0) {
            p->pid = pid;
            p->incoming = incoming;
            return 1;
        }
    }
    return 0;
}

/* Removes what a VM process that is gone left behind. The logs stay: they
 * are what an operator reads to learn why it ended. */
static void remove_leftovers(const struct vm_process *p)
{
    char path[PATH_MAX + 8];
    file_path(p, "pid", path, sizeof(path));
    unlink(path);
    file_path(p, "pid.tmp", path, sizeof(path));
    unlink(path);
    unlink(p->control);
    if (p->cgroup[0]) {
        struct tern_err ignored;
        /* Only if empty: something still in it must be seen, not hidden. */
        cgroup_remove(p->cgroup, &ignored);
    }
}

char *vm_process_log_tail(const struct vm_process *p, size_t max)
{
    char path[PATH_MAX + 8];
    file_path(p, "vmm.log", path, sizeof(path));
    char *out = malloc(max + 1);
    if (!out)
        return NULL;
    out[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return out;
    struct stat st;
    if (fstat(fd, &st) == 0) {
        off_t from = st.st_size > (off_t)max ? st.st_size - (off_t)max : 0;
        ssize_t n = pread(fd, out, max, from);
        if (n > 0) {
            out[n] = '\0';
            /* Start at a line boundary when the cut fell inside a line. */
            char *nl = from > 0 ? strchr(out, '\n') : NULL;
            if (nl && nl[1])
                memmove(out, nl + 1, strlen(nl + 1) + 1);
        }
    }
    close(fd);
    return out;
}

/* The log written since offset `from` (this start's output), its last
 * lines joined by " | ", for an error message. */
static void log_since(const struct vm_process *p, off_t from, char *out, size_t len)
{
    char path[PATH_MAX + 8];
    file_path(p, "vmm.log", path, sizeof(path));
    out[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat st;
    char buf[ERR_TAIL_BYTES + 1];
    if (fstat(fd, &st) == 0 && st.st_size > from) {
        off_t at = st.st_size - from > ERR_TAIL_BYTES ? st.st_size - ERR_TAIL_BYTES : from;
        ssize_t n = pread(fd, buf, ERR_TAIL_BYTES, at);
        if (n > 0) {
            buf[n] = '\0';
            char *s = buf;
            if (at > from && strchr(s, '\n'))
                s = strchr(s, '\n') + 1;
            size_t o = 0;
            char *save = NULL;
            for (char *line = strtok_r(s, "\n", &save); line && o + 1 < len;
                 line = strtok_r(NULL, "\n", &save)) {
                int w = snprintf(out + o, len - o, "%s%s", o ? " | " : "", line);
                if (w < 0)
                    break;
                o += (size_t)w;
            }
        }
    }
    close(fd);
}

static bool log_contains(const struct vm_process *p, off_t from, const char *needle)
{
    char path[PATH_MAX + 8], buf[8192];
    file_path(p, "vmm.log", path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

int vm_process_call(const struct vm_process *p, json_t *req, int timeout_ms, json_t **reply,
                    struct tern_err *err)
{
    json_t *r = NULL;
    *reply = NULL;
    if (control_call(p->control, req, timeout_ms, &r, err) < 0)
        return tern_err_prefix(err, "VM '%s'", p->name);
    if (!json_is_true(json_object_get(r, "ok"))) {
        const char *msg = json_string_value(json_object_get(r, "error"));
        const char *cmd = json_string_value(json_object_get(req, "cmd"));
        tern_err_set(err, "VM '%s': tern-vmm refused '%s': %s", p->name, cmd ? cmd : "?",
                     msg ? msg : "no reason given");
        json_decref(r);
        return -1;
    }
    *reply = r;
    return 0;
}

static int status_ok(const struct vm_process *p, int timeout_ms, struct tern_err *err)
{
    json_t *req = json_pack("{s:s}", "cmd", "status"), *reply = NULL;
    if (!req)
        return tern_err_set(err, "out of memory");
    int rc = vm_process_call(p, req, timeout_ms, &reply, err);
    json_decref(req);
    json_decref(reply);
    return rc;
}

/* Exit status from a waitid result: the exit code, or 128 + signal. */
static int decode_status(const siginfo_t *si)
{
    if (si->si_code == CLD_EXITED)
        return si->si_status;
    if (si->si_code == CLD_KILLED || si->si_code == CLD_DUMPED)
        return 128 + si->si_status;
    return -1;
}

void vm_process_reap(struct vm_process *p)
{
    if (p->pidfd < 0)
        return;
    bool ended;
    if (p->child) {
        siginfo_t si;
        memset(&si, 0, sizeof(si));
        int r;
        while ((r = waitid(P_PIDFD, (id_t)p->pidfd, &si, WEXITED)) < 0 && errno == EINTR) {
        }
        p->exit_status = r == 0 ? decode_status(&si) : -1;
        ended = true;
    } else {
        /* Not our child: its parent (init or a subreaper) collects the
         * status, which tern-vmm records nowhere, so it stays unknown. */
        p->exit_status = -1;
        ended = pidfd_wait(p->pidfd, 0);
    }
    close(p->pidfd);
    p->pidfd = -1;
    /* A process that still runs (reap called too early) is only
     * forgotten: its files are how the next attach finds it. */
    if (ended)
        remove_leftovers(p);
}

static int open_log(const struct vm_process *p, off_t *size, struct tern_err *err)
{
    char path[PATH_MAX + 8];
    file_path(p, "vmm.log", path, sizeof(path));
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return tern_err_errno(err, errno, "cannot open %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return tern_err_errno(err, e, "cannot stat %s", path);
    }
    *size = st.st_size;
    return fd;
}

/* Moves fd to 3 or above, so that setting up the child's 0-2 cannot
 * overwrite it (an agent started with a closed stdin gets low fds). */
static int above_stdio(int fd, struct tern_err *err)
{
    if (fd < 0 || fd > 2)
        return fd;
    int n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (n < 0)
        tern_err_errno(err, errno, "duplicating file descriptor %d", fd);
    close(fd);
    return n;
}

enum child_stage { STAGE_SETSID, STAGE_CGROUP, STAGE_STDIO, STAGE_CLOSE, STAGE_EXEC };

struct child_failure {
    int stage;
    int err;
};

static const char *stage_name(int stage)
{
    switch (stage) {
    case STAGE_SETSID: return "starting a new session (setsid)";
    case STAGE_CGROUP: return "moving into the VM's cgroup";
    case STAGE_STDIO: return "redirecting stdio to vmm.log";
    case STAGE_CLOSE: return "closing inherited file descriptors";
    default: return "executing";
    }
}

/* In the forked child: only async-signal-safe calls (the agent may have
 * threads), no allocation. Reports a failure through `report` (closed by
 * exec when all goes well). */
static void __attribute__((noreturn))
child_exec(const char *path, char *const argv[], int null_fd, int log_fd, int procs_fd,
           int report)
{
    struct child_failure f = {STAGE_SETSID, 0};
    /* Ignored signals and the blocked mask survive exec: the agent's must
     * not become tern-vmm's. (Some numbers are refused; that is fine.) */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++)
        sigaction(s, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Its own session and process group: a signal to the agent's group
     * (Ctrl-C, systemd's KillMode=control-group aside) never reaches it. */
    if (setsid() < 0)
        goto fail;
    f.stage = STAGE_CGROUP;
    if (procs_fd >= 0 && write(procs_fd, "0", 1) != 1)
        goto fail;
    f.stage = STAGE_STDIO;
    if (dup2(null_fd, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0)
        goto fail;
    f.stage = STAGE_CLOSE;
    /* Everything but 0-2 and the report pipe (close-on-exec) goes. */
    if ((report > 3 && close_range(3, (unsigned)report - 1, 0) < 0) ||
        close_range((unsigned)report + 1, ~0U, 0) < 0)
        goto fail;
    f.stage = STAGE_EXEC;
    execve(path, argv, environ);
fail:
    f.err = errno;
    ssize_t w = write(report, &f, sizeof(f));
    (void)w;
    _exit(127);
}

/* The tern-vmm command line. Strings live in `a`. */
struct vmm_args {
    char *argv[48];
    int argc;
    char mem[32], vcpus[16], serial[PATH_MAX + 16], control[PATH_MAX];
    char uri[CL_ADDR_MAX + 32];
};

static int build_args(struct vmm_args *a, const struct vm_process *p,
                      const struct vm_process_env *env, const struct cl_vm_config *cfg,
                      const char *listen_addr, uint16_t port, const char *token,
                      struct tern_err *err)
{
    if (cfg->mem_mib == 0 || cfg->vcpus == 0)
        return tern_err_set(err, "the configuration needs mem_mib and vcpus above 0");
    if (cfg->nr_disks > CL_MAX_DISKS)
        return tern_err_set(err, "the configuration has %u disks; at most %d", cfg->nr_disks,
                            CL_MAX_DISKS);
    int n = 0;
    a->argv[n++] = (char *)env->vmm_path;
    a->argv[n++] = "run";
    if (port) {
        if (!listen_addr || !listen_addr[0] || !token || !token[0])
            return tern_err_set(err, "an incoming VM needs a listen address and a token");
        if (!env->tls_dir[0])
            return tern_err_set(err, "an incoming VM needs the agent's TLS directory");
        /* IPv6 literals go in brackets. */
        const char *fmt = strchr(listen_addr, ':') ? "tls://[%s]:%u" : "tls://%s:%u";
        if (snprintf(a->uri, sizeof(a->uri), fmt, listen_addr, (unsigned)port) >=
            (int)sizeof(a->uri))
            return tern_err_set(err, "listen address '%s' is too long", listen_addr);
        a->argv[n++] = "--incoming";
        a->argv[n++] = a->uri;
        a->argv[n++] = "--tls-dir";
        a->argv[n++] = (char *)env->tls_dir;
        a->argv[n++] = "--token";
        a->argv[n++] = (char *)token;
        a->argv[n++] = "--commit-gate";
    } else {
        if (!cfg->kernel[0])
            return tern_err_set(err, "the configuration has no kernel");
        a->argv[n++] = "--kernel";
        a->argv[n++] = (char *)cfg->kernel;
        if (cfg->initrd[0]) {
            a->argv[n++] = "--initrd";
            a->argv[n++] = (char *)cfg->initrd;
        }
        if (cfg->cmdline[0]) {
            a->argv[n++] = "--cmdline";
            a->argv[n++] = (char *)cfg->cmdline;
        }
    }
    snprintf(a->mem, sizeof(a->mem), "%" PRIu64 "M", cfg->mem_mib);
    snprintf(a->vcpus, sizeof(a->vcpus), "%" PRIu32, cfg->vcpus);
    a->argv[n++] = "--mem";
    a->argv[n++] = a->mem;
    a->argv[n++] = "--vcpus";
    a->argv[n++] = a->vcpus;
    /* --disk-rw/--disk-ro take the path as it is: a comma in it is part of
     * the file's name, never a flag. */
    for (unsigned i = 0; i < cfg->nr_disks; i++) {
        a->argv[n++] = cfg->disks[i].ro ? "--disk-ro" : "--disk-rw";
        a->argv[n++] = (char *)cfg->disks[i].path;
    }
    if (snprintf(a->serial, sizeof(a->serial), "file:%s/serial.log", p->dir) >=
        (int)sizeof(a->serial))
        return tern_err_set(err, "VM directory %s is too long", p->dir);
    snprintf(a->control, sizeof(a->control), "%s", p->control);
    a->argv[n++] = "--serial";
    a->argv[n++] = a->serial;
    a->argv[n++] = "--control";
    a->argv[n++] = a->control;
    a->argv[n] = NULL;
    a->argc = n;
    return 0;
}

/* One line in vmm.log before tern-vmm's own output, so the log says which
 * start each part belongs to. The token is a secret and is not written.
 * Returns the bytes written. */
static off_t log_header(int fd, const struct vmm_args *a)
{
    char line[4096];
    time_t t = time(NULL);
    struct tm tm;
    size_t o = strftime(line, sizeof(line), "=== %Y-%m-%dT%H:%M:%S%z ternd starts:",
                        localtime_r(&t, &tm));
    for (int i = 0; i < a->argc && o + 2 < sizeof(line); i++) {
        bool secret = i > 0 && !strcmp(a->argv[i - 1], "--token");
        line[o++] = ' ';
        /* Escaped: a command line with a newline must not forge lines. */
        o += text_escape(line + o, sizeof(line) - o, secret ? "<token>" : a->argv[i], 0, NULL);
    }
    if (o >= sizeof(line) - 1)
        o = sizeof(line) - 2;
    line[o++] = '\n';
    ssize_t w = write(fd, line, o);
    return w > 0 ? w : 0;
}

/* Ends a process that failed to start: SIGKILL, reap, remove its files. */
static void abandon(struct vm_process *p)
{
    if (p->pidfd >= 0) {
        sys_pidfd_send_signal(p->pidfd, SIGKILL);
        vm_process_reap(p);
    } else if (p->pid > 0) {
        /* Our unreaped child: its pid cannot have been reused. */
        kill(p->pid, SIGKILL);
        int ws;
        while (waitpid(p->pid, &ws, 0) < 0 && errno == EINTR) {
        }
        remove_leftovers(p);
    }
}

/* Waits until the new process is ready: its control socket answers, or
 * for an incoming VM it listens for the migration. */
static int wait_ready(struct vm_process *p, off_t log_from, struct tern_err *err)
{
    int64_t deadline = now_ms() + START_TIMEOUT_MS;
    int delay = 5;
    struct tern_err last = {0};
    for (;;) {
        if (pidfd_wait(p->pidfd, delay)) {
            vm_process_reap(p);
            char tail[ERR_TAIL_BYTES + 64];
            log_since(p, log_from, tail, sizeof(tail));
            return tern_err_set(err, "tern-vmm exited with status %d before its control socket "
                                     "answered: %s",
                                p->exit_status, tail[0] ? tail : "(no output)");
        }
        if (access(p->control, F_OK) == 0 && status_ok(p, STATUS_TIMEOUT_MS, &last) == 0)
            return 0;
        /* Until tern-vmm opens its socket during the incoming phase, an
         * incoming VMM is ready once it listens for the migration. */
        if (p->incoming && log_contains(p, log_from, INCOMING_READY))
            return 0;
        if (now_ms() >= deadline) {
            char tail[ERR_TAIL_BYTES + 64];
            log_since(p, log_from, tail, sizeof(tail));
            abandon(p);
            return tern_err_set(err, "tern-vmm (pid %d) did not answer on %s within %d s%s%s; "
                                     "killed it. Its log: %s", (int)p->pid, p->control,
                                START_TIMEOUT_MS / 1000, last.msg[0] ? ": " : "", last.msg,
                                tail[0] ? tail : "(no output)");
        }
        if (delay < 100)
            delay *= 2;
    }
}

int vm_process_spawn(struct vm_process *p, const struct vm_process_env *env, const char *name,
                     const struct cl_vm_config *cfg, const char *listen_addr,
                     uint16_t incoming_port, const char *token, struct tern_err *err)
{
    clear(p);
    if (fill_paths(p, env, name, err) < 0)
        return tern_err_prefix(err, "starting VM '%s'", name);
    p->incoming = incoming_port != 0;
    p->child = true;
    if (mkdir_p(p->dir, 0700, err) < 0)
        return tern_err_prefix(err, "starting VM '%s'", name);

    /* Never two processes for one VM (design invariant 1). */
    int live_fd;
    unsigned long long start;
    bool pid_file_ok;
    struct vm_process other = *p;
    if (find_live(&other, &live_fd, &start, &pid_file_ok)) {
        close(live_fd);
        return tern_err_set(err, "starting VM '%s': it already runs here (tern-vmm pid %d); "
                                 "attach to it or stop it first", name, (int)other.pid);
    }
    remove_leftovers(p);

    struct vmm_args args;
    if (build_args(&args, p, env, cfg, listen_addr, incoming_port, token, err) < 0)
        return tern_err_prefix(err, "starting VM '%s'", name);

    int procs_fd = -1, null_fd = -1, log_fd = -1, report[2] = {-1, -1};
    off_t log_from = 0;
    if (p->cgroup[0]) {
        if (cgroup_create(p->cgroup, err) < 0)
            return tern_err_prefix(err, "starting VM '%s'", name);
        int pop = cgroup_populated(p->cgroup, err);
        if (pop < 0) {
            struct tern_err ignored;
            cgroup_remove(p->cgroup, &ignored);
            return tern_err_prefix(err, "starting VM '%s': is %s a cgroup v2 directory?", name,
                                   env->cgroup_dir);
        }
        if (pop)
            return tern_err_set(err, "starting VM '%s': its cgroup %s still holds processes "
                                     "from an earlier run (see its cgroup.procs); end them first",
                                name, p->cgroup);
        if ((procs_fd = above_stdio(cgroup_open_procs(p->cgroup, err), err)) < 0) {
            tern_err_prefix(err, "starting VM '%s'", name);
            goto fail_fds;
        }
    }
    if ((log_fd = above_stdio(open_log(p, &log_from, err), err)) < 0) {
        tern_err_prefix(err, "starting VM '%s'", name);
        goto fail_fds;
    }
    null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0)
        tern_err_errno(err, errno, "cannot open /dev/null");
    if ((null_fd = above_stdio(null_fd, err)) < 0) {
        tern_err_prefix(err, "starting VM '%s'", name);
        goto fail_fds;
    }
    if (pipe2(report, O_CLOEXEC) < 0) {
        tern_err_errno(err, errno, "starting VM '%s': cannot create a pipe", name);
        goto fail_fds;
    }
    if ((report[1] = above_stdio(report[1], err)) < 0) {
        tern_err_prefix(err, "starting VM '%s'", name);
        goto fail_fds;
    }
    /* Errors quote tern-vmm's output from here on. */
    log_from += log_header(log_fd, &args);

    pid_t pid = fork();
    if (pid < 0) {
        tern_err_errno(err, errno, "starting VM '%s': fork", name);
        goto fail_fds;
    }
    if (pid == 0)
        child_exec(env->vmm_path, args.argv, null_fd, log_fd, procs_fd, report[1]);
    p->pid = pid;
    close(report[1]);
    close(null_fd);
    close(log_fd);
    if (procs_fd >= 0)
        close(procs_fd);

    /* EOF: exec succeeded (the pipe is close-on-exec). */
    struct child_failure cf;
    ssize_t n;
    while ((n = read(report[0], &cf, sizeof(cf))) < 0 && errno == EINTR) {
    }
    close(report[0]);
    if (n == (ssize_t)sizeof(cf)) {
        abandon(p);
        if (cf.stage == STAGE_EXEC)
            return tern_err_errno(err, cf.err, "starting VM '%s': cannot execute %s", name,
                                  env->vmm_path);
        return tern_err_errno(err, cf.err, "starting VM '%s': %s%s%s", name,
                              stage_name(cf.stage), cf.stage == STAGE_CGROUP ? " " : "",
                              cf.stage == STAGE_CGROUP ? p->cgroup : "");
    }

    p->pidfd = sys_pidfd_open(pid);
    if (p->pidfd < 0) {
        int e = errno;
        abandon(p);
        return tern_err_errno(err, e, "starting VM '%s': pidfd_open (needs Linux 5.3)", name);
    }
    char state;
    if (proc_stat(pid, &state, &start) < 0) {
        /* It died already: wait_ready reports how. */
        start = 0;
    }
    if (start && write_pid_file(p, start, err) < 0) {
        abandon(p);
        return tern_err_prefix(err, "starting VM '%s'", name);
    }
    p->log_from = log_from;
    return 0;

fail_fds:
    if (procs_fd >= 0)
        close(procs_fd);
    if (log_fd >= 0)
        close(log_fd);
    if (null_fd >= 0)
        close(null_fd);
    if (report[0] >= 0)
        close(report[0]);
    if (report[1] >= 0)
        close(report[1]);
    if (p->cgroup[0]) {
        struct tern_err ignored;
        cgroup_remove(p->cgroup, &ignored);
    }
    return -1;
}

int vm_process_attach(struct vm_process *p, const struct vm_process_env *env, const char *name,
                      struct tern_err *err)
{
    clear(p);
    if (fill_paths(p, env, name, err) < 0)
        return tern_err_prefix(err, "attaching to VM '%s'", name);
    struct stat st;
    if (stat(p->dir, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        return tern_err_errno(err, errno, "attaching to VM '%s': cannot stat %s", name, p->dir);
    }
    int fd;
    unsigned long long start;
    bool pid_file_ok;
    if (!find_live(p, &fd, &start, &pid_file_ok)) {
        remove_leftovers(p);
        p->pid = 0;
        return 0;
    }
    p->pidfd = fd;
    p->child = false;
    if (!pid_file_ok && write_pid_file(p, start, err) < 0) {
        close(p->pidfd);
        clear(p);
        return tern_err_prefix(err, "attaching to VM '%s'", name);
    }
    /* A process verified by start time and command line is this VM's
     * tern-vmm even when its socket does not answer right now (busy, or
     * an incoming VMM that has not opened it yet): dropping it would lose
     * a running VM and let a second one start. The caller's next status
     * request tells whether it answers. */
    return 1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

json_t *vm_process_list_dirs(const struct vm_process_env *env)
{
    json_t *out = json_array();
    char path[PATH_MAX + 8];
    snprintf(path, sizeof(path), "%s/vms", env->run_dir);
    DIR *d = opendir(path);
    if (!d || !out)
        return out;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!name_ok(e->d_name))
            continue;
        if (e->d_type != DT_DIR) {
            struct stat st;
            if (e->d_type != DT_UNKNOWN || fstatat(dirfd(d), e->d_name, &st, 0) < 0 ||
                !S_ISDIR(st.st_mode))
                continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = realloc(names, cap * sizeof(*names));
            if (!nn)
                break;
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name)))
            break;
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof(*names), cmp_str);
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(out, json_string(names[i]));
        free(names[i]);
    }
    free(names);
    return out;
}

int vm_process_stop(struct vm_process *p, int grace_ms, struct tern_err *err)
{
    if (p->pidfd < 0)
        return 0;
    int64_t deadline = now_ms() + grace_ms;
    json_t *req = json_pack("{s:s}", "cmd", "stop"), *reply = NULL;
    struct tern_err call_err;
    int timeout = grace_ms < STATUS_TIMEOUT_MS ? grace_ms : STATUS_TIMEOUT_MS;
    if (!req || vm_process_call(p, req, timeout > 0 ? timeout : 1, &reply, &call_err) < 0) {
        /* No answer (hung, or an incoming VMM without its socket yet):
         * SIGTERM is tern-vmm's other way to stop cleanly. */
        sys_pidfd_send_signal(p->pidfd, SIGTERM);
    }
    json_decref(req);
    json_decref(reply);
    int left = (int)(deadline - now_ms());
    if (!pidfd_wait(p->pidfd, left > 0 ? left : 0)) {
        if (sys_pidfd_send_signal(p->pidfd, SIGKILL) < 0 && errno != ESRCH)
            return tern_err_errno(err, errno, "stopping VM '%s': SIGKILL to pid %d", p->name,
                                  (int)p->pid);
        if (!pidfd_wait(p->pidfd, KILL_WAIT_MS))
            return tern_err_set(err, "stopping VM '%s': tern-vmm pid %d did not end within %d s "
                                     "of SIGKILL (stuck in the kernel? see /proc/%d/stack)",
                                p->name, (int)p->pid, KILL_WAIT_MS / 1000, (int)p->pid);
    }
    vm_process_reap(p);
    return 0;
}

void vm_process_kill(struct vm_process *p)
{
    if (p->pidfd < 0)
        return;
    /* By pidfd: the signal cannot reach a process that reused the pid. */
    sys_pidfd_send_signal(p->pidfd, SIGKILL);
    pidfd_wait(p->pidfd, KILL_WAIT_MS);
    vm_process_reap(p);
}

int vm_process_start(struct vm_process *p, const struct vm_process_env *env, const char *name,
                     const struct cl_vm_config *cfg, const char *listen_addr,
                     uint16_t incoming_port, const char *token, struct tern_err *err)
{
    if (vm_process_spawn(p, env, name, cfg, listen_addr, incoming_port, token, err) < 0)
        return -1;
    if (wait_ready(p, p->log_from, err) < 0)
        return tern_err_prefix(err, "starting VM '%s'", name);
    return 0;
}

/* A connect that succeeds at once: the control socket listens. */
static bool control_listens(const struct vm_process *p)
{
    struct sockaddr_un addr;
    if (unix_addr_fill(&addr, p->control, "control socket", NULL) < 0)
        return false;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return false;
    bool ok = connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0;
    close(fd);
    return ok;
}

int vm_process_poll_ready(struct vm_process *p, struct tern_err *err)
{
    if (p->pidfd < 0 || pidfd_wait(p->pidfd, 0)) {
        vm_process_reap(p);
        char tail[ERR_TAIL_BYTES + 64];
        log_since(p, p->log_from, tail, sizeof(tail));
        return tern_err_set(err, "starting VM '%s': tern-vmm exited with status %d before its "
                                 "control socket answered: %s",
                            p->name, p->exit_status, tail[0] ? tail : "(no output)");
    }
    if (access(p->control, F_OK) == 0 && control_listens(p))
        return 1;
    if (p->incoming && log_contains(p, p->log_from, INCOMING_READY))
        return 1;
    return 0;
}

void vm_process_give_up(struct vm_process *p, struct tern_err *err)
{
    char tail[ERR_TAIL_BYTES + 64];
    log_since(p, p->log_from, tail, sizeof(tail));
    pid_t pid = p->pid;
    abandon(p);
    tern_err_set(err, "starting VM '%s': tern-vmm (pid %d) did not answer on %s within %d s; "
                      "killed it. Its log: %s",
                 p->name, (int)pid, p->control, START_TIMEOUT_MS / 1000,
                 tail[0] ? tail : "(no output)");
}

int vm_process_start_timeout_ms(void)
{
    return START_TIMEOUT_MS;
}

void vm_process_signal(const struct vm_process *p, int sig)
{
    if (p->pidfd >= 0)
        sys_pidfd_send_signal(p->pidfd, sig);
}
