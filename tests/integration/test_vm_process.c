/* The agent's VM processes (agent/vm_process.c) on real KVM: tern-vmm
 * started in its own session and cgroup, found again after an "agent
 * restart" (the starting process exits, a fresh one attaches), killed from
 * outside (noticed through the pidfd, leftovers removed), stopped cleanly,
 * failing to start with its log in the error; stale pid files that name
 * unrelated processes are never attached. Also the cgroup helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent/cgroup.h"
#include "agent/vm_process.h"
#include "node-vmm/options.h"
#include "tests/support/proc.h"
#include "tests/support/tls_certs.h"
#include "tests/support/kvm.h"

#define TOKEN "vm-process-token-0123456789abcdef"

struct fixture {
    char *dir;
    struct vm_process_env env;
    char cgroup[PATH_MAX]; /* the test's parent cgroup for its VMs */
    struct cl_vm_config cfg;
    pid_t pids[8]; /* every VMM started, killed at teardown if still there */
    int npids;
};

static void remember(struct fixture *f, pid_t pid)
{
    if (pid > 0 && f->npids < 8)
        f->pids[f->npids++] = pid;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f || !(f->dir = test_make_tmpdir("vmproc")))
        return -1;
    /* VMMs orphaned by an "old agent" come back to this process, so the
     * test can reap them (and none is left to init). */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        return -1;
    if (!realpath(test_build_path("tern-vmm"), f->env.vmm_path)) {
        print_message("no tern-vmm at %s\n", test_build_path("tern-vmm"));
        return -1;
    }
    snprintf(f->env.run_dir, sizeof(f->env.run_dir), "%s/run", f->dir);
    struct tern_err err;
    char own[PATH_MAX - 64];
    if (cgroup_of_pid(0, own, sizeof(own), &err) < 0) {
        print_message("cgroup: %s\n", err.msg);
        return -1;
    }
    snprintf(f->cgroup, sizeof(f->cgroup), "%s/tern-test-vmproc-%d", own, (int)getpid());
    if (cgroup_create(f->cgroup, &err) < 0) {
        print_message("cgroup: %s\n", err.msg);
        return -1;
    }
    memcpy(f->env.cgroup_dir, f->cgroup, sizeof(f->cgroup));
    if (!realpath(test_build_path("testguest.elf"), f->cfg.kernel))
        return -1;
    snprintf(f->cfg.cmdline, sizeof(f->cfg.cmdline), "hb=10000 status=0");
    f->cfg.mem_mib = 64;
    f->cfg.vcpus = 1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < f->npids; i++) {
        kill(f->pids[i], SIGKILL);
        waitpid(f->pids[i], NULL, 0); /* ours or, as subreaper, orphaned to us */
    }
    struct tern_err err;
    char vm[PATH_MAX + 16];
    const char *names[] = {"web1", "web2", "web3", "web4", "bad", "in1", "stale", "cgtest",
                           "disks", "logs"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(vm, sizeof(vm), "%s/vm-%s", f->cgroup, names[i]);
        if (cgroup_remove(vm, &err) < 0)
            print_message("teardown: %s\n", err.msg);
    }
    if (cgroup_remove(f->cgroup, &err) < 0)
        print_message("teardown: %s\n", err.msg);
    test_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static bool exists(const char *path)
{
    return access(path, F_OK) == 0;
}

static void vm_file(const struct vm_process *p, const char *leaf, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", p->dir, leaf);
}

static void show_log(const struct vm_process *p)
{
    char *t = vm_process_log_tail(p, 4000);
    print_message("--- vmm.log of %s ---\n%s\n", p->name, t ? t : "");
    free(t);
}

static json_t *status(const struct vm_process *p)
{
    json_t *req = json_pack("{s:s}", "cmd", "status"), *reply = NULL;
    struct tern_err err;
    int rc = vm_process_call(p, req, 5000, &reply, &err);
    json_decref(req);
    if (rc < 0) {
        show_log(p);
        fail_msg("status: %s", err.msg);
    }
    return reply;
}

static long heartbeats(const struct vm_process *p)
{
    json_t *s = status(p);
    long n = (long)json_integer_value(json_object_get(json_object_get(s, "heartbeat"), "count"));
    json_decref(s);
    return n;
}

/* Waits until the guest has sent more than `than` heartbeats. */
static long heartbeats_above(const struct vm_process *p, long than)
{
    long n = 0;
    for (int i = 0; i < 500; i++) {
        if ((n = heartbeats(p)) > than)
            return n;
        test_sleep_ms(10);
    }
    show_log(p);
    fail_msg("heartbeats stuck at %ld", n);
    return n;
}

static void start(struct fixture *f, struct vm_process *p, const char *name)
{
    struct tern_err err;
    if (vm_process_start(p, &f->env, name, &f->cfg, NULL, 0, NULL, &err) < 0)
        fail_msg("%s", err.msg);
    remember(f, p->pid);
}

/* The pidfd becomes readable within timeout_ms. */
static void assert_ends(const struct vm_process *p, int timeout_ms)
{
    struct pollfd pf = {.fd = p->pidfd, .events = POLLIN};
    assert_int_equal(poll(&pf, 1, timeout_ms), 1);
}

static void assert_leftovers_gone(const struct vm_process *p)
{
    char path[PATH_MAX + 8];
    vm_file(p, "pid", path, sizeof(path));
    assert_false(exists(path));
    assert_false(exists(p->control));
    if (p->cgroup[0])
        assert_false(exists(p->cgroup));
    /* The log stays, for whoever wants to know why it ended. */
    vm_file(p, "vmm.log", path, sizeof(path));
    assert_true(exists(path));
}

/* Start: the control socket answers, the VM is in its own cgroup and its
 * own session, the pid file names it; a second start is refused; a
 * SIGKILL from outside is seen on the pidfd and reaped as 128+9. */
static void test_start_cgroup_session_kill(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    struct vm_process p;
    start(f, &p, "web1");
    assert_true(p.pid > 0);
    assert_true(p.pidfd >= 0);
    assert_true(p.child);
    assert_false(p.incoming);

    json_t *s = status(&p);
    assert_string_equal(json_string_value(json_object_get(s, "state")), "running");
    json_decref(s);
    heartbeats_above(&p, 0);

    char want[PATH_MAX + 16], got[PATH_MAX];
    struct tern_err err;
    snprintf(want, sizeof(want), "%s/vm-web1", f->cgroup);
    assert_string_equal(p.cgroup, want);
    assert_int_equal(cgroup_of_pid(p.pid, got, sizeof(got), &err), 0);
    assert_string_equal(got, want);
    assert_int_equal(cgroup_populated(want, &err), 1);

    assert_int_equal(getsid(p.pid), p.pid);
    assert_int_not_equal(getsid(p.pid), getsid(0));
    assert_int_not_equal(getpgid(p.pid), getpgid(0));

    char path[PATH_MAX + 8];
    vm_file(&p, "pid", path, sizeof(path));
    char *pidtext = test_read_text(path);
    int fpid = 0;
    unsigned long long fstart = 0;
    assert_int_equal(sscanf(pidtext, "%d %llu", &fpid, &fstart), 2);
    assert_int_equal(fpid, p.pid);
    assert_true(fstart > 0);
    free(pidtext);

    json_t *dirs = vm_process_list_dirs(&f->env);
    assert_int_equal(json_array_size(dirs), 1);
    assert_string_equal(json_string_value(json_array_get(dirs, 0)), "web1");
    json_decref(dirs);

    struct vm_process again;
    assert_int_equal(vm_process_start(&again, &f->env, "web1", &f->cfg, NULL, 0, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "already runs"));

    char *log = vm_process_log_tail(&p, 4096);
    assert_non_null(strstr(log, "ternd starts:"));
    assert_non_null(strstr(log, "--control"));
    free(log);

    assert_int_equal(kill(p.pid, SIGKILL), 0);
    assert_ends(&p, 5000);
    vm_process_reap(&p);
    assert_int_equal(p.exit_status, 128 + SIGKILL);
    assert_int_equal(p.pidfd, -1);
    assert_leftovers_gone(&p);
    vm_process_reap(&p); /* twice is harmless */
    assert_int_equal(p.exit_status, 128 + SIGKILL);
}

/* "Agent restart": a process starts the VM and exits; a fresh one attaches
 * (same pid, status answers, the guest keeps running), forgets it and
 * attaches again; then a SIGKILL from outside is noticed, the status is
 * unknown (not our child) and the leftovers are removed. */
static void test_agent_restart(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    pid_t agent = fork();
    assert_true(agent >= 0);
    if (agent == 0) {
        struct vm_process p;
        struct tern_err err;
        if (vm_process_start(&p, &f->env, "web2", &f->cfg, NULL, 0, NULL, &err) < 0) {
            fprintf(stderr, "old agent: %s\n", err.msg);
            _exit(1);
        }
        _exit(0); /* without stopping its VM, as a crashing agent would */
    }
    int ws;
    assert_int_equal(waitpid(agent, &ws, 0), agent);
    assert_true(WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), 0);

    struct vm_process p;
    struct tern_err err;
    int rc = vm_process_attach(&p, &f->env, "web2", &err);
    if (rc < 0)
        fail_msg("attach: %s", err.msg);
    assert_int_equal(rc, 1);
    remember(f, p.pid);
    assert_false(p.child);
    assert_false(p.incoming);
    assert_true(p.pidfd >= 0);
    long h1 = heartbeats(&p);
    long h2 = heartbeats_above(&p, h1);
    assert_true(h2 > h1);

    /* Forget it (the agent restarts again) and attach once more. */
    pid_t first = p.pid;
    close(p.pidfd);
    rc = vm_process_attach(&p, &f->env, "web2", &err);
    assert_int_equal(rc, 1);
    assert_int_equal(p.pid, first);
    heartbeats_above(&p, h2);

    /* The pid file is lost (say, the agent died before writing it): the
     * process serving the control socket is found and the file rewritten. */
    char path[PATH_MAX + 8];
    vm_file(&p, "pid", path, sizeof(path));
    close(p.pidfd);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(vm_process_attach(&p, &f->env, "web2", &err), 1);
    assert_int_equal(p.pid, first);
    assert_true(exists(path));

    assert_int_equal(kill(p.pid, SIGKILL), 0);
    assert_ends(&p, 5000);
    vm_process_reap(&p);
    assert_int_equal(p.exit_status, -1);
    assert_leftovers_gone(&p);
    assert_int_equal(waitpid(first, &ws, 0), first); /* as its subreaper */
}

/* Killed while no agent watched: the next attach finds a dead process (a
 * zombie here, until its parent reaps it) and cleans up. */
static void test_killed_while_detached(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    struct vm_process p;
    start(f, &p, "web3");
    pid_t pid = p.pid;
    close(p.pidfd); /* the agent goes away */
    assert_int_equal(kill(pid, SIGKILL), 0);
    char stat_path[64];
    snprintf(stat_path, sizeof(stat_path), "/proc/%d/stat", (int)pid);
    for (int i = 0; i < 500; i++) {
        char *t = test_read_text(stat_path);
        bool zombie = strstr(t, ") Z ") != NULL;
        free(t);
        if (zombie)
            break;
        test_sleep_ms(10);
    }
    struct tern_err err;
    struct vm_process q;
    assert_int_equal(vm_process_attach(&q, &f->env, "web3", &err), 0);
    assert_int_equal(q.pidfd, -1);
    assert_leftovers_gone(&q);
    int ws;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFSIGNALED(ws));
    /* Nothing left: attach says so again, and the VM can start anew. */
    assert_int_equal(vm_process_attach(&q, &f->env, "web3", &err), 0);
    start(f, &q, "web3");
    assert_int_equal(vm_process_stop(&q, 5000, &err), 0);
}

/* stop: the control "stop" ends it with status 0; its files go. */
static void test_stop(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    struct vm_process p;
    start(f, &p, "web4");
    heartbeats_above(&p, 0);
    struct tern_err err;
    if (vm_process_stop(&p, 5000, &err) < 0)
        fail_msg("stop: %s", err.msg);
    assert_int_equal(p.exit_status, 0);
    assert_int_equal(p.pidfd, -1);
    assert_leftovers_gone(&p);
    char *log = vm_process_log_tail(&p, 4096);
    assert_non_null(strstr(log, "VM ended"));
    free(log);
    /* Stopping what is already stopped is a no-op. */
    assert_int_equal(vm_process_stop(&p, 100, &err), 0);
}

/* A kernel that does not exist: tern-vmm exits 65; the error says so and
 * carries the log; nothing is left running or behind. A missing tern-vmm
 * binary is reported as such. */
static void test_bad_kernel(void **state)
{
    struct fixture *f = *state;
    struct cl_vm_config cfg = f->cfg;
    snprintf(cfg.kernel, sizeof(cfg.kernel), "/nonexistent/kernel.elf");
    struct vm_process p;
    struct tern_err err;
    /* Without KVM tern-vmm stops at /dev/kvm before it looks at the kernel;
     * either way the error carries its log and nothing is left behind. */
    bool kvm = test_kvm_part("the kernel file's own error (checked once KVM is open)");
    assert_int_equal(vm_process_start(&p, &f->env, "bad", &cfg, NULL, 0, NULL, &err), -1);
    print_message("error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "starting VM 'bad'"));
    assert_non_null(strstr(err.msg, "exited with status 65"));
    assert_non_null(strstr(err.msg, kvm ? "/nonexistent/kernel.elf" : "/dev/kvm"));
    assert_int_equal(p.pidfd, -1);
    assert_leftovers_gone(&p);
    int ws;
    assert_int_equal(waitpid(-1, &ws, WNOHANG), -1); /* no child left at all */
    assert_int_equal(errno, ECHILD);

    struct vm_process_env env = f->env;
    snprintf(env.vmm_path, sizeof(env.vmm_path), "%s/no-such-vmm", f->dir);
    assert_int_equal(vm_process_start(&p, &env, "bad", &f->cfg, NULL, 0, NULL, &err), -1);
    print_message("error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "cannot execute"));
    assert_non_null(strstr(err.msg, "No such file"));
    assert_int_equal(waitpid(-1, &ws, WNOHANG), -1);

    /* A cgroup_dir that is no cgroup: refused before anything runs. */
    env = f->env;
    snprintf(env.cgroup_dir, sizeof(env.cgroup_dir), "%s", f->dir);
    assert_int_equal(vm_process_start(&p, &env, "bad", &f->cfg, NULL, 0, NULL, &err), -1);
    print_message("error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "cgroup.events"));
    assert_int_equal(waitpid(-1, &ws, WNOHANG), -1);
    char notcg[PATH_MAX + 16];
    snprintf(notcg, sizeof(notcg), "%s/vm-bad", f->dir);
    assert_false(exists(notcg));

    assert_int_equal(vm_process_start(&p, &f->env, "../x", &f->cfg, NULL, 0, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "invalid VM name"));
}

/* Disk paths reach tern-vmm as they are, commas and all, with their
 * read-only flag beside them: a stand-in VMM records its arguments, and
 * tern-vmm's own parser reads them back. The real tern-vmm accepts them
 * (without KVM it then stops at /dev/kvm, status 65, not 64 for bad
 * arguments). */
static void test_disk_paths_reach_vmm(void **state)
{
    struct fixture *f = *state;
    struct cl_vm_config cfg = f->cfg;
    static const char *const paths[] = {"/x/y.img,ro", "/x/a,b.img", "/x/c.img", "/x/d,ro,rw"};
    static const bool ro[] = {false, true, false, true};
    for (unsigned i = 0; i < 4; i++) {
        snprintf(cfg.disks[i].path, sizeof(cfg.disks[i].path), "%s", paths[i]);
        cfg.disks[i].ro = ro[i];
    }
    cfg.nr_disks = 4;

    char script[PATH_MAX], args_file[PATH_MAX];
    snprintf(script, sizeof(script), "%s/record-vmm", f->dir);
    snprintf(args_file, sizeof(args_file), "%s/vmm-args", f->dir);
    FILE *sf = fopen(script, "w");
    assert_non_null(sf);
    fprintf(sf, "#!/bin/sh\nprintf '%%s\\0' \"$@\" > '%s'\nexit 64\n", args_file);
    assert_int_equal(fclose(sf), 0);
    assert_int_equal(chmod(script, 0755), 0);
    struct vm_process_env env = f->env;
    snprintf(env.vmm_path, sizeof(env.vmm_path), "%s", script);
    env.cgroup_dir[0] = '\0';
    struct vm_process p;
    struct tern_err err;
    assert_int_equal(vm_process_start(&p, &env, "disks", &cfg, NULL, 0, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "status 64"));

    /* Its arguments, NUL-separated: "run" and the options. */
    static char buf[16384];
    FILE *af = fopen(args_file, "r");
    assert_non_null(af);
    size_t len = fread(buf, 1, sizeof(buf) - 1, af);
    fclose(af);
    assert_true(len > 0 && buf[len - 1] == '\0');
    char *argv[64];
    int argc = 0;
    for (size_t o = 0; o < len && argc < 64; o += strlen(buf + o) + 1)
        argv[argc++] = buf + o;
    assert_string_equal(argv[0], "run");
    struct run_options opts;
    if (parse_run_options(argc - 1, argv + 1, &opts, &err) < 0)
        fail_msg("tern-vmm would refuse the agent's arguments: %s", err.msg);
    assert_int_equal(opts.nr_disks, 4);
    for (unsigned i = 0; i < 4; i++) {
        assert_string_equal(opts.disks[i].path, paths[i]);
        assert_int_equal(opts.disks[i].read_only, ro[i]);
    }

    /* The real tern-vmm gets past its arguments. */
    int rc = vm_process_start(&p, &f->env, "disks", &cfg, NULL, 0, NULL, &err);
    if (rc == 0) {
        remember(f, p.pid);
        vm_process_kill(&p); /* with KVM it may run (its disks are checked later) */
        return;
    }
    print_message("error: %s\n", err.msg);
    assert_null(strstr(err.msg, "status 64"));
    assert_null(strstr(err.msg, "invalid --disk"));
}

/* No line in `text` starts with `forged`, and no raw control character
 * but the newlines is in it. */
static void assert_not_forged(const char *what, const char *text, const char *forged)
{
    for (const char *l = text; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l))
        if (!strncmp(l, forged, strlen(forged)))
            fail_msg("%s has a forged line:\n%s", what, text);
    for (const char *p = text; *p; p++)
        if (((unsigned char)*p < 0x20 && *p != '\n') || *p == 0x7f)
            fail_msg("%s holds a raw control character 0x%02x:\n%s", what, (unsigned char)*p,
                     text);
}

/* A command line (and disk paths) with newlines and terminal escapes: the
 * line ternd writes into vmm.log before each start stays one line, and
 * tern-vmm's own messages quote such text escaped. */
static void test_logs_not_forged(void **state)
{
    struct fixture *f = *state;
    struct cl_vm_config cfg = f->cfg;
    snprintf(cfg.cmdline, sizeof(cfg.cmdline),
             "quiet\n=== 2000-01-01T00:00:00+0000 ternd starts: forged\033[2J");
    char script[PATH_MAX];
    snprintf(script, sizeof(script), "%s/quiet-vmm", f->dir);
    FILE *sf = fopen(script, "w");
    assert_non_null(sf);
    fputs("#!/bin/sh\nexit 64\n", sf);
    assert_int_equal(fclose(sf), 0);
    assert_int_equal(chmod(script, 0755), 0);
    struct vm_process_env env = f->env;
    snprintf(env.vmm_path, sizeof(env.vmm_path), "%s", script);
    env.cgroup_dir[0] = '\0';
    struct vm_process p;
    struct tern_err err;
    assert_int_equal(vm_process_start(&p, &env, "logs", &cfg, NULL, 0, NULL, &err), -1);
    char log[PATH_MAX + 32];
    snprintf(log, sizeof(log), "%s/vms/logs/vmm.log", env.run_dir);
    char *text = test_read_text(log);
    assert_int_equal(test_count_text(log, "\n"), 1); /* the stand-in writes nothing */
    assert_non_null(strstr(text, "--cmdline quiet\\n=== 2000-01-01T00:00:00+0000 ternd starts: "
                                 "forged\\x1b[2J"));
    assert_not_forged("vmm.log", text, "=== 2000");
    free(text);

    /* tern-vmm itself, refusing arguments that hold such text. */
    char out_dir[200];
    assert_true(strlen(f->dir) < 150);
    snprintf(out_dir, sizeof(out_dir), "%s/direct", f->dir);
    assert_int_equal(mkdir(out_dir, 0700), 0);
    char *const argv[] = {f->env.vmm_path, "run", "--kernel", "/k", "--mem", "64M", "--disk",
                          "/x/a\ntern-vmm: VM ended: forged\033[2J,b.img", NULL};
    struct test_proc tp;
    assert_int_equal(test_proc_start(&tp, out_dir, argv), 0);
    assert_int_equal(test_proc_wait(&tp, 10000), 1);
    assert_int_equal(tp.status, 64);
    text = test_read_text(tp.err_path);
    print_message("tern-vmm: %s", text);
    assert_non_null(strstr(text, "/x/a\\ntern-vmm: VM ended: forged\\x1b[2J,b.img"));
    assert_not_forged("tern-vmm's stderr", text, "tern-vmm: VM ended");
    free(text);
}

static unsigned long long start_time(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    char *t = test_read_text(path);
    char *s = strrchr(t, ')');
    unsigned long long v = 0;
    int field = 2;
    for (char *tok = s ? strtok(s + 1, " ") : NULL; tok; tok = strtok(NULL, " "))
        if (++field == 22) {
            v = strtoull(tok, NULL, 10);
            break;
        }
    free(t);
    return v;
}

static void write_pid_file(const char *dir, pid_t pid, unsigned long long start)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/pid", dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp, "%d %llu\n", (int)pid, start);
    assert_int_equal(fclose(fp), 0);
}

/* A pid file naming a live process that is not this VM's tern-vmm (the
 * test itself with its true start time, pid 1, a wrong start time) is
 * stale: never attached, removed, and no obstacle to a start. */
static void test_stale_pid_file(void **state)
{
    struct fixture *f = *state;
    char dir[PATH_MAX + 16];
    assert_int_equal(mkdir(f->env.run_dir, 0700) < 0 && errno != EEXIST, 0);
    snprintf(dir, sizeof(dir), "%s/vms", f->env.run_dir);
    assert_int_equal(mkdir(dir, 0700) < 0 && errno != EEXIST, 0);
    snprintf(dir, sizeof(dir), "%s/vms/stale", f->env.run_dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    char pidpath[PATH_MAX + 32];
    snprintf(pidpath, sizeof(pidpath), "%s/pid", dir);

    struct { pid_t pid; unsigned long long start; } cases[] = {
        {getpid(), start_time(getpid())},
        {1, start_time(1)},
        {getpid(), start_time(getpid()) + 1},
        {getppid(), 12345},
    };
    struct vm_process p;
    struct tern_err err;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_pid_file(dir, cases[i].pid, cases[i].start);
        assert_int_equal(vm_process_attach(&p, &f->env, "stale", &err), 0);
        assert_int_equal(p.pidfd, -1);
        assert_false(exists(pidpath));
    }
    assert_int_equal(kill(1, 0), 0); /* nobody was harmed */

    if (test_kvm_part("a VM starting over a stale pid file")) {
        write_pid_file(dir, getpid(), start_time(getpid()));
        start(f, &p, "stale");
        assert_int_not_equal(p.pid, getpid());
        assert_int_equal(vm_process_stop(&p, 5000, &err), 0);
        assert_int_equal(p.exit_status, 0);
    }

    /* A VM that was never here. */
    assert_int_equal(vm_process_attach(&p, &f->env, "never", &err), 0);
}

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* An incoming VMM is ready once it listens; kill ends it (status 137). */
static void test_incoming(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    struct test_tls tls;
    char msg[256];
    assert_int_equal(test_tls_make(&tls, msg, sizeof(msg)), 0);
    snprintf(f->env.tls_dir, sizeof(f->env.tls_dir), "%s", tls.host_a);
    struct vm_process p;
    struct tern_err err;
    int rc = vm_process_start(&p, &f->env, "in1", &f->cfg, "127.0.0.1", free_port(), TOKEN, &err);
    if (rc < 0) {
        test_tls_destroy(&tls);
        fail_msg("%s", err.msg);
    }
    remember(f, p.pid);
    assert_true(p.incoming);
    /* A tern-vmm that answers during the incoming phase says so. */
    json_t *req = json_pack("{s:s}", "cmd", "status"), *reply = NULL;
    if (vm_process_call(&p, req, 2000, &reply, &err) == 0)
        assert_string_equal(json_string_value(json_object_get(reply, "state")), "incoming");
    else
        print_message("no status while incoming (%s)\n", err.msg);
    json_decref(req);
    json_decref(reply);
    /* After an agent restart it is found again, as incoming. */
    close(p.pidfd);
    assert_int_equal(vm_process_attach(&p, &f->env, "in1", &err), 1);
    assert_true(p.incoming);
    vm_process_kill(&p);
    assert_int_equal(p.exit_status, -1); /* attached: not known */
    assert_leftovers_gone(&p);
    int ws;
    assert_int_equal(waitpid(-1, &ws, 0), p.pid); /* still our child, in fact */
    assert_true(WIFSIGNALED(ws));
    test_tls_destroy(&tls);
}

/* cgroup helpers: create, move, populated, kill (all at once), remove. */
static void test_cgroup_kill(void **state)
{
    struct fixture *f = *state;
    char cg[PATH_MAX + 16], mnt[PATH_MAX];
    struct tern_err err;
    assert_int_equal(cgroup_mount_point(mnt, sizeof(mnt), &err), 0);
    assert_int_equal(strncmp(f->cgroup, mnt, strlen(mnt)), 0);
    snprintf(cg, sizeof(cg), "%s/vm-cgtest", f->cgroup);
    assert_int_equal(cgroup_create(cg, &err), 0);
    assert_int_equal(cgroup_create(cg, &err), 0); /* exists: fine */
    assert_int_equal(cgroup_populated(cg, &err), 0);
    pid_t kids[2];
    for (int i = 0; i < 2; i++) {
        kids[i] = fork();
        assert_true(kids[i] >= 0);
        if (kids[i] == 0) {
            for (;;)
                pause();
        }
        remember(f, kids[i]);
        assert_int_equal(cgroup_move(cg, kids[i], &err), 0);
    }
    assert_int_equal(cgroup_populated(cg, &err), 1);
    assert_int_equal(cgroup_remove(cg, &err), -1);
    assert_non_null(strstr(err.msg, "still holds processes"));
    assert_int_equal(cgroup_wait_empty(cg, 50, &err), -1);
    assert_int_equal(cgroup_kill(cg, &err), 0);
    assert_int_equal(cgroup_wait_empty(cg, 5000, &err), 0);
    for (int i = 0; i < 2; i++) {
        int ws;
        assert_int_equal(waitpid(kids[i], &ws, 0), kids[i]);
        assert_true(WIFSIGNALED(ws));
        assert_int_equal(WTERMSIG(ws), SIGKILL);
    }
    assert_int_equal(cgroup_remove(cg, &err), 0);
    assert_false(exists(cg));
    assert_int_equal(cgroup_remove(cg, &err), 0); /* gone: fine */
    assert_int_equal(cgroup_move(cg, getpid(), &err), -1);
    assert_non_null(strstr(err.msg, "vm-cgtest"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_start_cgroup_session_kill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_killed_while_detached, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_kernel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_paths_reach_vmm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logs_not_forged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_pid_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incoming, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cgroup_kill, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
