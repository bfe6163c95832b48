/* Disk image locks (invariant 7) in whole programs.
 *
 * Without KVM (these run everywhere):
 *  - tern-vmm refuses to start (exit 65, the message naming the disk and
 *    the holder) when another process holds its image in a conflicting way;
 *    it takes its locks before it even opens /dev/kvm, so its refusal is
 *    tested here; an incoming tern-vmm does not want the write lock while
 *    it receives;
 *  - tern-vmm-standin, which takes the same locks through the same module:
 *    two stand-ins on one read-write image (the second is refused, and
 *    starts once the first is killed), read-only sharing, and a migration's
 *    hand-over: the destination committed first waits for the source's
 *    commit to release the lock, and fails with exit 75 when it never
 *    comes (the source, aborted, keeps its lock).
 * On KVM (skipped without it): two tern-vmm on one read-write image, the
 * second refused; two on one read-only image, both running. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "node-vmm/control.h"
#include "node-vmm/disk_lock.h"
#include "node-vmm/vm.h"
#include "tests/support/kvm.h"
#include "tests/support/proc.h"
#include "tests/support/tls_certs.h"

#define TOKEN "disk-lock-token-0123456789abcdef"
#define MAX_PROCS 8

struct proc {
    struct test_proc p;
    char sock[600];
};

struct fixture {
    char *dir;
    char img[512], ro[520]; /* ro: "img,ro" */
    struct proc procs[MAX_PROCS];
    int nprocs;
    struct test_tls tls; /* made by tests that need it, removed at teardown */
    bool tls_made;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f || !(f->dir = test_make_tmpdir("disklocks")))
        return -1;
    snprintf(f->img, sizeof(f->img), "%s/web1.img", f->dir);
    snprintf(f->ro, sizeof(f->ro), "%s,ro", f->img);
    if (test_make_disk(f->img, 16 << 20) < 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < f->nprocs; i++)
        test_proc_kill(&f->procs[i].p);
    if (f->tls_made)
        test_tls_destroy(&f->tls);
    test_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Starts PROGRAM run --control SOCK ARGS... (tern-vmm also gets the test
 * guest and a serial file unless `args` has --incoming). */
static struct proc *start(struct fixture *f, const char *program, const char *const *args)
{
    assert_true(f->nprocs < MAX_PROCS);
    struct proc *p = &f->procs[f->nprocs];
    snprintf(p->sock, sizeof(p->sock), "%s/vm%d.sock", f->dir, f->nprocs);
    f->nprocs++;
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)test_build_path(program);
    argv[n++] = "run";
    argv[n++] = "--control";
    argv[n++] = p->sock;
    bool vmm = !strcmp(program, "tern-vmm"), incoming = false;
    for (; *args; args++) {
        incoming |= !strcmp(*args, "--incoming");
        argv[n++] = (char *)*args;
    }
    static char serial[600];
    if (vmm && !incoming) {
        argv[n++] = "--kernel";
        argv[n++] = (char *)test_build_path("testguest.elf");
        argv[n++] = "--cmdline";
        argv[n++] = "hb=1000 status=500";
        snprintf(serial, sizeof(serial), "file:%s/serial%d.log", f->dir, f->nprocs - 1);
        argv[n++] = "--serial";
        argv[n++] = serial;
    }
    if (vmm) {
        argv[n++] = "--mem";
        argv[n++] = "64M";
    }
    argv[n] = NULL;
    assert_int_equal(test_proc_start(&p->p, f->dir, argv), 0);
    return p;
}

static void show(struct proc *p)
{
    char *e = test_read_text(p->p.err_path);
    print_message("--- stderr of pid %d ---\n%s\n", (int)p->p.pid, e);
    free(e);
}

/* Waits for the control socket (the program is up). */
static void wait_up(struct proc *p)
{
    for (int i = 0; i < 1000 && access(p->sock, F_OK) != 0; i++) {
        if (test_proc_wait(&p->p, 0)) {
            show(p);
            fail_msg("pid %d exited with %d instead of starting", (int)p->p.pid, p->p.status);
        }
        test_sleep_ms(10);
    }
    assert_int_equal(access(p->sock, F_OK), 0);
}

/* Expects the program to exit with `status` and `needle` on its stderr. */
static void expect_exit(struct proc *p, int status, const char *needle, int timeout_ms)
{
    if (!test_proc_wait(&p->p, timeout_ms)) {
        show(p);
        fail_msg("pid %d still runs; expected exit %d", (int)p->p.pid, status);
    }
    char *e = test_read_text(p->p.err_path);
    if (p->p.status != status || !strstr(e, needle))
        fail_msg("expected exit %d and '%s', got %d: %s", status, needle, p->p.status, e);
    free(e);
}

static void expect_refused(struct fixture *f, struct proc *p, const char *how, pid_t holder)
{
    char needle[1024];
    snprintf(needle, sizeof(needle), "tern-vmm: disk %s is in use by another VM process (%s by pid %d",
             f->img, how, (int)holder);
    expect_exit(p, VMM_EXIT_SETUP, needle, 10000);
    assert_int_equal(access(p->sock, F_OK), -1); /* refused before its control socket */
}

static json_t *call(struct proc *p, json_t *req)
{
    json_t *reply = NULL;
    struct tern_err err;
    if (control_call(p->sock, req, 5000, &reply, &err) < 0)
        fail_msg("control %s: %s", p->sock, err.msg);
    json_decref(req);
    return reply;
}

static void expect_ok(struct proc *p, const char *cmd)
{
    json_t *r = call(p, json_pack("{s:s}", "cmd", cmd));
    if (!json_is_true(json_object_get(r, "ok")))
        fail_msg("%s: %s", cmd, json_string_value(json_object_get(r, "error")));
    json_decref(r);
}

static char *state_of(struct proc *p, char *buf, size_t len)
{
    json_t *s = call(p, json_pack("{s:s}", "cmd", "status"));
    snprintf(buf, len, "%s", json_string_value(json_object_get(s, "state")) ?: "?");
    json_t *in = json_object_get(s, "incoming");
    if (in) {
        size_t n = strlen(buf);
        snprintf(buf + n, len - n, "/%s", json_string_value(json_object_get(in, "phase")) ?: "?");
    }
    json_t *m = json_object_get(s, "migration");
    if (m) {
        size_t n = strlen(buf);
        snprintf(buf + n, len - n, "/%s", json_string_value(json_object_get(m, "phase")) ?: "?");
    }
    json_decref(s);
    return buf;
}

static void wait_state(struct proc *p, const char *want)
{
    char st[128] = "";
    for (int i = 0; i < 500; i++) {
        if (!strcmp(state_of(p, st, sizeof(st)), want))
            return;
        test_sleep_ms(10);
    }
    show(p);
    fail_msg("pid %d: state %s, expected %s", (int)p->p.pid, st, want);
}

/* A TCP port on 127.0.0.1 that was free a moment ago. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* --- tern-vmm, no KVM needed: the refusal comes before /dev/kvm --- */

static void test_vmm_refused_when_image_in_use(void **state)
{
    struct fixture *f = *state;
    /* This test process holds the image for writing, as another VM would. */
    struct disk_lock l;
    struct tern_err err;
    assert_int_equal(disk_lock_open(&l, f->img, true, &err), 0);
    assert_int_equal(disk_lock_take(&l, false, &err), 0);
    const char *rw[] = {"--disk", f->img, NULL};
    expect_refused(f, start(f, "tern-vmm", rw), "locked for writing", getpid());
    const char *ro[] = {"--disk", f->ro, NULL};
    struct proc *p = start(f, "tern-vmm", ro);
    expect_refused(f, p, "locked for writing", getpid());
    char *e = test_read_text(p->p.err_path);
    assert_non_null(strstr(e, "refusing to open it read-only here: a VM may not read an image "
                              "that another VM writes"));
    free(e);
    /* The same image twice in one VM: refused, whoever else holds it. */
    assert_int_equal(disk_lock_release(&l, &err), 0);
    char img2[600];
    snprintf(img2, sizeof(img2), "%s/web2.img", f->dir);
    assert_int_equal(test_make_disk(img2, 1 << 20), 0);
    const char *twice[] = {"--disk", img2, "--disk", f->img, "--disk", f->img, NULL};
    expect_exit(start(f, "tern-vmm", twice), VMM_EXIT_SETUP,
                "(locked for writing by this very process", 10000);

    /* Held read-only here: a read-only tern-vmm gets past the locks (to
     * /dev/kvm, or to a running guest where there is KVM); a writer not. */
    disk_lock_close(&l);
    assert_int_equal(disk_lock_open(&l, f->img, false, &err), 0);
    assert_int_equal(disk_lock_take(&l, false, &err), 0);
    expect_refused(f, start(f, "tern-vmm", rw), "open read-only", getpid());
    p = start(f, "tern-vmm", ro);
    const char *why;
    if (test_kvm_usable(&why)) {
        wait_up(p);
        expect_ok(p, "stop");
        assert_true(test_proc_wait(&p->p, 10000));
        assert_int_equal(p->p.status, 0);
    } else {
        expect_exit(p, VMM_EXIT_SETUP, "cannot open /dev/kvm", 10000);
        e = test_read_text(p->p.err_path);
        assert_null(strstr(e, "in use by another VM process"));
        free(e);
    }
    disk_lock_close(&l);
}

/* An incoming tern-vmm receives while the source still writes: it must
 * not want the write lock until its commit. */
static void test_vmm_incoming_not_refused_while_receiving(void **state)
{
    struct fixture *f = *state;
    struct disk_lock l;
    struct tern_err err;
    assert_int_equal(disk_lock_open(&l, f->img, true, &err), 0);
    assert_int_equal(disk_lock_take(&l, false, &err), 0);
    char terr[256];
    if (test_tls_make(&f->tls, terr, sizeof(terr)) < 0)
        fail_msg("test certificates: %s", terr);
    f->tls_made = true;
    char uri[64];
    snprintf(uri, sizeof(uri), "tls://127.0.0.1:%d", free_port());
    const char *args[] = {"--disk", f->img, "--incoming", uri, "--tls-dir", f->tls.host_b,
                          "--token", TOKEN, NULL};
    struct proc *p = start(f, "tern-vmm", args);
    const char *why;
    if (test_kvm_usable(&why)) {
        wait_up(p);
        char st[128];
        assert_string_equal(state_of(p, st, sizeof(st)), "incoming/waiting");
        expect_ok(p, "stop");
        expect_exit(p, VMM_EXIT_MIGRATION, "the guest was not started here", 10000);
    } else {
        expect_exit(p, VMM_EXIT_SETUP, "cannot open /dev/kvm", 10000);
    }
    char *e = test_read_text(p->p.err_path);
    assert_null(strstr(e, "in use by another VM process"));
    free(e);
    /* But a read-only disk held for writing is refused even so. */
    const char *ro[] = {"--disk", f->ro, "--incoming", uri, "--tls-dir", f->tls.host_b,
                        "--token", TOKEN, NULL};
    expect_refused(f, start(f, "tern-vmm", ro), "locked for writing", getpid());
    disk_lock_close(&l);
}

/* --- the stand-in, with the same locks --- */

static void test_two_standins_on_one_image(void **state)
{
    struct fixture *f = *state;
    const char *rw[] = {"--disk", f->img, NULL};
    const char *ro[] = {"--disk", f->ro, NULL};
    struct proc *a = start(f, "tern-vmm-standin", rw);
    wait_up(a);
    expect_refused(f, start(f, "tern-vmm-standin", rw), "locked for writing", a->p.pid);
    expect_refused(f, start(f, "tern-vmm-standin", ro), "locked for writing", a->p.pid);
    /* The holder dies: its lock dies with it, at once. */
    test_proc_kill(&a->p);
    struct proc *b = start(f, "tern-vmm-standin", rw);
    wait_up(b);
    char st[128];
    assert_string_equal(state_of(b, st, sizeof(st)), "running");
    expect_refused(f, start(f, "tern-vmm-standin", rw), "locked for writing", b->p.pid);
    /* Bad --disk options are usage errors, as for tern-vmm. */
    const char *bad[] = {"--disk", "x,rw", NULL};
    expect_exit(start(f, "tern-vmm-standin", bad), VMM_EXIT_USAGE, "invalid --disk 'x,rw'",
                10000);
}

static void test_standins_share_read_only(void **state)
{
    struct fixture *f = *state;
    const char *rw[] = {"--disk", f->img, NULL};
    const char *ro[] = {"--disk", f->ro, NULL};
    struct proc *r1 = start(f, "tern-vmm-standin", ro);
    struct proc *r2 = start(f, "tern-vmm-standin", ro);
    wait_up(r1);
    wait_up(r2);
    struct proc *w = start(f, "tern-vmm-standin", rw);
    expect_exit(w, VMM_EXIT_SETUP, "(open read-only by pid", 10000);
    char *e = test_read_text(w->p.err_path);
    assert_non_null(strstr(e, "a VM may not write an image that other VMs read"));
    free(e);
    expect_ok(r1, "stop");
    expect_ok(r2, "stop");
    assert_true(test_proc_wait(&r1->p, 5000) && test_proc_wait(&r2->p, 5000));
    wait_up(start(f, "tern-vmm-standin", rw));
}

/* Source and destination stand-ins on one read-write image, migrating
 * with the commit gate; returns once the source is in phase ready. */
static void to_ready(struct fixture *f, struct proc **src, struct proc **dst)
{
    const char *rw[] = {"--disk", f->img, NULL};
    *src = start(f, "tern-vmm-standin", rw);
    wait_up(*src);
    char uri[64];
    snprintf(uri, sizeof(uri), "tls://127.0.0.1:%d", free_port());
    const char *in[] = {"--disk", f->img, "--incoming", uri, "--token", TOKEN, "--commit-gate",
                        NULL};
    *dst = start(f, "tern-vmm-standin", in); /* not refused: no write lock while receiving */
    wait_up(*dst);
    json_t *r = call(*src, json_pack("{s:s, s:s, s:s, s:b}", "cmd", "migrate", "uri", uri, "token",
                                     TOKEN, "commit_gate", 1));
    assert_true(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
    wait_state(*src, "paused/ready");
    wait_state(*dst, "incoming/ready");
}

/* The destination's agent commits first: the destination waits, its
 * guest not running, until the source's commit releases the lock. */
static void test_standin_handover(void **state)
{
    struct fixture *f = *state;
    struct proc *src, *dst;
    to_ready(f, &src, &dst);
    expect_ok(dst, "migrate-commit");
    char st[128];
    for (int i = 0; i < 30; i++) { /* 300 ms: waiting, not running */
        assert_string_equal(state_of(dst, st, sizeof(st)), "incoming/committing");
        test_sleep_ms(10);
    }
    json_t *r = call(dst, json_pack("{s:s}", "cmd", "migrate-abort"));
    assert_non_null(strstr(json_string_value(json_object_get(r, "error")) ?: "", "too late"));
    json_decref(r);
    assert_true(test_wait_for_text(dst->p.err_path, "waiting up to 5000 ms for the source to "
                                                    "release its disk locks", 1000));
    expect_ok(src, "migrate-commit");
    wait_state(dst, "running");
    assert_true(test_proc_wait(&src->p, 5000)); /* the source ends on RUNNING */
    assert_int_equal(src->p.status, 0);
    /* The destination holds the image now. */
    const char *rw[] = {"--disk", f->img, NULL};
    expect_refused(f, start(f, "tern-vmm-standin", rw), "locked for writing", dst->p.pid);
}

/* The source's commit never comes: the destination gives up after
 * DISK_LOCK_HANDOVER_MS, loudly (exit 75, the disk named), without running
 * the guest; the source, aborted, runs on and keeps its lock. */
static void test_standin_handover_times_out(void **state)
{
    struct fixture *f = *state;
    struct proc *src, *dst;
    to_ready(f, &src, &dst);
    expect_ok(dst, "migrate-commit");
    char needle[1024];
    snprintf(needle, sizeof(needle), "the source did not release its disk locks within 5000 ms: "
                                     "disk %s is in use by another VM process (locked for "
                                     "writing by pid %d", f->img, (int)src->p.pid);
    expect_exit(dst, 75, needle, DISK_LOCK_HANDOVER_MS + 5000);
    char *e = test_read_text(dst->p.err_path);
    assert_non_null(strstr(e, "the guest was not started here"));
    assert_null(strstr(e, "the guest runs here"));
    free(e);
    expect_ok(src, "migrate-abort");
    wait_state(src, "running/done");
    const char *rw[] = {"--disk", f->img, NULL};
    expect_refused(f, start(f, "tern-vmm-standin", rw), "locked for writing", src->p.pid);
}

/* --- tern-vmm on KVM --- */

static void test_two_vmms_on_one_image(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    const char *rw[] = {"--disk", f->img, NULL};
    struct proc *a = start(f, "tern-vmm", rw);
    wait_up(a);
    char st[128];
    assert_string_equal(state_of(a, st, sizeof(st)), "running");
    expect_refused(f, start(f, "tern-vmm", rw), "locked for writing", a->p.pid);
    char *e = test_read_text(f->procs[1].p.err_path);
    assert_non_null(strstr(e, "(tern-vmm) on this host); refusing to open it for writing here"));
    free(e);
    assert_string_equal(state_of(a, st, sizeof(st)), "running"); /* undisturbed */
    expect_ok(a, "stop");
    assert_true(test_proc_wait(&a->p, 10000));
    assert_int_equal(a->p.status, 0);
    struct proc *b = start(f, "tern-vmm", rw); /* the image is free again */
    wait_up(b);
    assert_string_equal(state_of(b, st, sizeof(st)), "running");
}

static void test_two_vmms_share_read_only(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    const char *ro[] = {"--disk", f->ro, NULL};
    struct proc *a = start(f, "tern-vmm", ro), *b = start(f, "tern-vmm", ro);
    wait_up(a);
    wait_up(b);
    char st[128];
    assert_string_equal(state_of(a, st, sizeof(st)), "running");
    assert_string_equal(state_of(b, st, sizeof(st)), "running");
    const char *rw[] = {"--disk", f->img, NULL};
    struct proc *w = start(f, "tern-vmm", rw);
    expect_exit(w, VMM_EXIT_SETUP, "is in use by another VM process (open read-only by pid", 10000);
    char *e = test_read_text(w->p.err_path);
    char pa[32], pb[32];
    snprintf(pa, sizeof(pa), "by pid %d (", (int)a->p.pid);
    snprintf(pb, sizeof(pb), "by pid %d (", (int)b->p.pid);
    assert_true(strstr(e, pa) || strstr(e, pb)); /* either reader */
    free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_vmm_refused_when_image_in_use, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmm_incoming_not_refused_while_receiving, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_two_standins_on_one_image, setup, teardown),
        cmocka_unit_test_setup_teardown(test_standins_share_read_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_standin_handover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_standin_handover_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_vmms_on_one_image, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_vmms_share_read_only, setup, teardown),
    };
    return cmocka_run_group_tests_name("disk_locks", tests, NULL, NULL);
}
