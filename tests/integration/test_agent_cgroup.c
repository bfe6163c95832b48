/* cgroup_layout = delegated (agent/cgroup.c, cgroup_enter_delegated): in a
 * cgroup D delegated to it, the agent moves into D/agent and puts VMs below
 * D/vms, leaving D without processes; a restarted agent (placed in D again,
 * as systemd does, or already in D/agent) finds the same D/vms. Runs on
 * the real cgroup2 file system, in a cgroup of its own that it removes;
 * needs root. No VM is started. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent/cgroup.h"
#include "common/fileio.h"

static char delegated[PATH_MAX]; /* D, the test's stand-in for ternd.service */

/* What one "agent start" reports back through its pipe. */
struct report {
    int rc;
    char err[TERN_ERR_MAX];
    char vms_dir[PATH_MAX];
    char own_after[PATH_MAX];  /* the child's cgroup after the call */
    char d_procs[256];         /* D/cgroup.procs after the call */
};

static void remove_all(void)
{
    static const char *const subs[] = {"/vms", "/agent", ""};
    for (size_t i = 0; i < 3; i++) {
        char p[PATH_MAX + 8];
        snprintf(p, sizeof(p), "%s%s", delegated, subs[i]);
        if (rmdir(p) < 0 && errno != ENOENT)
            print_message("cannot remove test cgroup %s: %s\n", p, strerror(errno));
    }
}

static int setup(void **state)
{
    (void)state;
    struct tern_err err;
    char own[PATH_MAX];
    if (geteuid() != 0 || cgroup_of_pid(0, own, sizeof(own), &err) < 0) {
        print_message("skipping: needs root and a cgroup2 mount (%s)\n",
                      geteuid() ? "not root" : err.msg);
        return 0;
    }
    if (snprintf(delegated, sizeof(delegated), "%s/tern-t%d-delegated", own, (int)getpid()) >=
        (int)sizeof(delegated)) {
        delegated[0] = '\0';
        return -1;
    }
    if (cgroup_create(delegated, &err) < 0) {
        print_message("%s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (delegated[0])
        remove_all();
    return 0;
}

/* Forks an "agent" that first enters `start_in`, then calls
 * cgroup_enter_delegated, reports and exits. */
static struct report start_agent(const char *start_in)
{
    struct report r;
    memset(&r, 0, sizeof(r));
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct tern_err err = {0};
        close(fds[0]);
        r.rc = cgroup_move(start_in, 0, &err);
        if (r.rc == 0)
            r.rc = cgroup_enter_delegated(r.vms_dir, sizeof(r.vms_dir), &err);
        snprintf(r.err, sizeof(r.err), "%s", err.msg);
        if (cgroup_of_pid(0, r.own_after, sizeof(r.own_after), &err) < 0)
            snprintf(r.own_after, sizeof(r.own_after), "? %s", err.msg);
        char procs[PATH_MAX + 16];
        snprintf(procs, sizeof(procs), "%s/cgroup.procs", delegated);
        if (tern_read_small(procs, r.d_procs, sizeof(r.d_procs), &err) < 0)
            snprintf(r.d_procs, sizeof(r.d_procs), "? %.200s", err.msg);
        _exit(write(fds[1], &r, sizeof(r)) == (ssize_t)sizeof(r) ? 0 : 1);
    }
    close(fds[1]);
    ssize_t n = read(fds[0], &r, sizeof(r));
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(n, (ssize_t)sizeof(r));
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return r;
}

static void expect_layout(const struct report *r)
{
    char want_vms[PATH_MAX + 8], want_agent[PATH_MAX + 8];
    snprintf(want_vms, sizeof(want_vms), "%s/vms", delegated);
    snprintf(want_agent, sizeof(want_agent), "%s/agent", delegated);
    if (r->rc != 0)
        fail_msg("cgroup_enter_delegated failed: %s", r->err);
    assert_string_equal(r->vms_dir, want_vms);
    assert_string_equal(r->own_after, want_agent);
    assert_string_equal(r->d_procs, ""); /* D holds no process itself */
    struct stat st;
    assert_int_equal(stat(want_vms, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
}

static void enters_leaf_and_keeps_vms_dir(void **state)
{
    (void)state;
    if (!delegated[0])
        skip();
    /* First start: systemd puts the agent in D. */
    struct report r = start_agent(delegated);
    expect_layout(&r);
    /* A VM's cgroup below vms/ survives the agent. */
    char vm[PATH_MAX + 16];
    snprintf(vm, sizeof(vm), "%s/vm-a", r.vms_dir);
    struct tern_err err;
    assert_int_equal(cgroup_create(vm, &err), 0);
    /* Restart: placed in D again, the same vms/ (the VM's cgroup still there). */
    r = start_agent(delegated);
    expect_layout(&r);
    assert_int_equal(access(vm, F_OK), 0);
    /* Started already in D/agent (DelegateSubgroup=agent): the same layout,
     * not D/agent/agent. */
    char agent[PATH_MAX + 8];
    snprintf(agent, sizeof(agent), "%s/agent", delegated);
    r = start_agent(agent);
    expect_layout(&r);
    assert_int_equal(cgroup_remove(vm, &err), 0);
}

static void too_long_is_an_error(void **state)
{
    (void)state;
    if (!delegated[0])
        skip();
    /* Checked before anything is created or moved: this process stays put. */
    char before[PATH_MAX], after[PATH_MAX], buf[8];
    struct tern_err err;
    assert_int_equal(cgroup_of_pid(0, before, sizeof(before), &err), 0);
    assert_int_equal(cgroup_enter_delegated(buf, sizeof(buf), &err), -1);
    assert_non_null(strstr(err.msg, "/vms is too long"));
    assert_int_equal(cgroup_of_pid(0, after, sizeof(after), &err), 0);
    assert_string_equal(before, after);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(enters_leaf_and_keeps_vms_dir),
        cmocka_unit_test(too_long_is_an_error),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
