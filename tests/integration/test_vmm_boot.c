/* tern-vmm on real KVM: boots the test guest with 1 and 2 vCPUs, checks
 * heartbeats, self-checks, the control socket, exit status propagation,
 * SIGTERM, and clear errors for bad arguments, missing files and guests
 * that crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "node-vmm/control.h"
#include "node-vmm/vm.h"
#include "tests/support/proc.h"
#include "tests/support/kvm.h"

struct fixture {
    char *dir;
    struct test_proc vmm;
    char serial[512];
    char control[512];
    char serial_opt[600];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    f->dir = test_make_tmpdir("vmm");
    if (!f->dir)
        return -1;
    snprintf(f->serial, sizeof(f->serial), "%s/serial.log", f->dir);
    snprintf(f->control, sizeof(f->control), "%s/control.sock", f->dir);
    snprintf(f->serial_opt, sizeof(f->serial_opt), "file:%s", f->serial);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    test_proc_kill(&f->vmm);
    test_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void start_guest(struct fixture *f, const char *vcpus, const char *cmdline)
{
    char *argv[] = {(char *)test_build_path("tern-vmm"), "run", "--kernel",
                    (char *)test_build_path("testguest.elf"), "--mem", "256M", "--vcpus",
                    (char *)vcpus, "--cmdline", (char *)cmdline, "--serial", f->serial_opt,
                    "--control", f->control, NULL};
    assert_int_equal(test_proc_start(&f->vmm, f->dir, argv), 0);
}

static json_t *ctl(struct fixture *f, const char *cmd)
{
    json_t *req = json_pack("{s:s}", "cmd", cmd);
    json_t *reply = NULL;
    struct tern_err err;
    int rc = control_call(f->control, req, 10000, &reply, &err);
    json_decref(req);
    if (rc < 0)
        fail_msg("control %s: %s", cmd, err.msg);
    assert_true(json_is_true(json_object_get(reply, "ok")));
    return reply;
}

static long long heartbeat_count(struct fixture *f)
{
    json_t *s = ctl(f, "status");
    long long n = json_integer_value(json_object_get(json_object_get(s, "heartbeat"), "count"));
    json_decref(s);
    return n;
}

/* The last "checks=N" on the guest console. */
static long last_checks(const char *serial)
{
    return test_last_value(serial, "checks=");
}

static void show_logs(struct fixture *f)
{
    char *s = test_read_text(f->serial);
    char *e = test_read_text(f->vmm.err_path);
    print_message("--- serial ---\n%s\n--- stderr ---\n%s\n", s, e);
    free(s);
    free(e);
}

static void wait_for_control_socket(struct fixture *f)
{
    for (int i = 0; i < 500 && access(f->control, F_OK) != 0; i++)
        test_sleep_ms(10);
    assert_int_equal(access(f->control, F_OK), 0);
}

static void run_workload(void **state, const char *vcpus)
{
    struct fixture *f = *state;
    start_guest(f, vcpus, "fill=32 dirty=20 hb=1000 check=500 exit_after=4");
    wait_for_control_socket(f);
    if (!test_wait_for_text(f->serial, "tern-guest: running", 20000)) {
        show_logs(f);
        fail_msg("guest did not reach user mode");
    }
    long long hb1 = heartbeat_count(f);
    test_sleep_ms(500);
    long long hb2 = heartbeat_count(f);
    assert_true(hb2 > hb1); /* heartbeats keep arriving */
    json_t *s = ctl(f, "status");
    assert_string_equal(json_string_value(json_object_get(s, "state")), "running");
    assert_int_equal(json_integer_value(json_object_get(s, "vcpus")), atoi(vcpus));
    assert_int_equal(json_integer_value(json_object_get(s, "mem_bytes")), 256ll << 20);
    json_t *hb = json_object_get(s, "heartbeat");
    assert_int_equal(json_integer_value(json_object_get(hb, "seq_errors")), 0);
    assert_true(json_integer_value(json_object_get(json_object_get(s, "exits"), "total")) > 0);
    json_decref(s);
    if (!test_proc_wait(&f->vmm, 30000)) {
        show_logs(f);
        fail_msg("guest did not exit after exit_after=4");
    }
    if (f->vmm.status != 0)
        show_logs(f);
    assert_int_equal(f->vmm.status, 0);
    assert_true(last_checks(f->serial) >= 2); /* self-checks ran and passed */
    assert_int_equal(test_count_text(f->serial, "CHECK FAILED"), 0);
    assert_true(test_count_text(f->serial, "failures=0") >= 2);
    assert_int_equal(access(f->control, F_OK), -1); /* socket removed on exit */
}

static void test_boot_one_vcpu(void **state)
{
    test_require_kvm();
    run_workload(state, "1");
}

static void test_boot_two_vcpus(void **state)
{
    test_require_kvm();
    run_workload(state, "2");
    struct fixture *f = *state;
    assert_true(test_wait_for_text(f->serial, "cpus=2", 0));
}

static void test_exit_status_propagates(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    start_guest(f, "1", "hb=1000 exit_after=1 exit_code=7");
    assert_true(test_proc_wait(&f->vmm, 30000));
    assert_int_equal(f->vmm.status, 7);
    assert_true(test_wait_for_text(f->vmm.err_path, "debug-exit", 100));
}

static void test_sigterm_stops_cleanly(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    start_guest(f, "2", "fill=8 dirty=5 hb=1000 check=1000");
    wait_for_control_socket(f);
    assert_true(test_wait_for_text(f->serial, "tern-guest: running", 20000));
    test_proc_signal(&f->vmm, SIGTERM);
    assert_true(test_proc_wait(&f->vmm, 10000));
    assert_int_equal(f->vmm.status, 0);
    assert_true(test_wait_for_text(f->vmm.err_path, "stopped by signal", 100));
    assert_int_equal(access(f->control, F_OK), -1);
}

static void test_pause_resume_stop(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    start_guest(f, "1", "hb=1000");
    wait_for_control_socket(f);
    assert_true(test_wait_for_text(f->serial, "tern-guest: running", 20000));
    json_decref(ctl(f, "pause"));
    json_t *s = ctl(f, "status");
    assert_string_equal(json_string_value(json_object_get(s, "state")), "paused");
    assert_string_equal(json_string_value(json_array_get(json_object_get(s, "held_by"), 0)),
                        "operator");
    json_decref(s);
    /* A snapshot pauses and resumes with a hold of its own: the
     * operator's pause outlasts it. */
    char snap[600];
    snprintf(snap, sizeof(snap), "%s/paused.snap", f->dir);
    json_t *req = json_pack("{s:s, s:s}", "cmd", "save", "file", snap);
    json_t *reply = NULL;
    struct tern_err err;
    assert_int_equal(control_call(f->control, req, 10000, &reply, &err), 0);
    json_decref(req);
    assert_true(json_is_true(json_object_get(reply, "ok")));
    json_decref(reply);
    s = ctl(f, "status");
    assert_string_equal(json_string_value(json_object_get(s, "state")), "paused");
    json_t *held = json_object_get(s, "held_by");
    assert_int_equal(json_array_size(held), 1);
    assert_string_equal(json_string_value(json_array_get(held, 0)), "operator");
    long long a = heartbeat_count(f);
    test_sleep_ms(300);
    long long b = heartbeat_count(f);
    assert_int_equal(a, b); /* a paused guest sends nothing */
    json_decref(ctl(f, "resume"));
    json_decref(s);
    s = ctl(f, "status");
    assert_string_equal(json_string_value(json_object_get(s, "state")), "running");
    assert_int_equal(json_array_size(json_object_get(s, "held_by")), 0);
    json_decref(s);
    test_sleep_ms(300);
    assert_true(heartbeat_count(f) > b);
    json_decref(ctl(f, "stop"));
    assert_true(test_proc_wait(&f->vmm, 10000));
    assert_int_equal(f->vmm.status, 0);
}

static void expect_vmm_failure(struct fixture *f, char *const argv[], int status,
                               const char *needle)
{
    assert_int_equal(test_proc_start(&f->vmm, f->dir, argv), 0);
    assert_true(test_proc_wait(&f->vmm, 20000));
    char *err = test_read_text(f->vmm.err_path);
    if (f->vmm.status != status || !strstr(err, needle))
        fail_msg("expected status %d and '%s', got %d: %s", status, needle, f->vmm.status, err);
    free(err);
    f->vmm = (struct test_proc){0};
}

static void test_bad_arguments(void **state)
{
    struct fixture *f = *state;
    char *vmm = (char *)test_build_path("tern-vmm");
    char *guest = (char *)test_build_path("testguest.elf");
    expect_vmm_failure(f, (char *[]){vmm, "run", "--mem", "64M", NULL}, VMM_EXIT_USAGE,
                       "--kernel PATH is required");
    expect_vmm_failure(f, (char *[]){vmm, "run", "--kernel", guest, "--mem", "64Q", NULL},
                       VMM_EXIT_USAGE, "--mem");
    expect_vmm_failure(f, (char *[]){vmm, "bogus", NULL}, VMM_EXIT_USAGE, "unknown command");
    if (test_kvm_part("kernel files that cannot boot (checked once KVM is open)")) {
        expect_vmm_failure(f,
                           (char *[]){vmm, "run", "--kernel", "/nonexistent/k", "--mem", "64M", NULL},
                           VMM_EXIT_SETUP, "/nonexistent/k");
        char notelf[600];
        snprintf(notelf, sizeof(notelf), "%s/not-a-kernel", f->dir);
        FILE *nf = fopen(notelf, "w");
        assert_non_null(nf);
        fputs("this is not a kernel\n", nf);
        fclose(nf);
        expect_vmm_failure(f, (char *[]){vmm, "run", "--kernel", notelf, "--mem", "64M", NULL},
                           VMM_EXIT_SETUP, "not-a-kernel");
    } else {
        /* Without KVM the same command fails clearly, before any guest exists. */
        expect_vmm_failure(f, (char *[]){vmm, "run", "--kernel", guest, "--mem", "64M", NULL},
                           VMM_EXIT_SETUP, "/dev/kvm");
    }
    expect_vmm_failure(f, (char *[]){vmm, "ctl", "/nonexistent/sock", "status", NULL}, 69,
                       "cannot connect");
    expect_vmm_failure(f, (char *[]){vmm, "ctl", "/x", "dance", NULL}, VMM_EXIT_USAGE,
                       "unknown command 'dance'");
}

static void run_crashing_guest(struct fixture *f, const unsigned char *code, size_t len,
                               const char *needle)
{
    char kernel[600];
    snprintf(kernel, sizeof(kernel), "%s/crash.elf", f->dir);
    assert_int_equal(test_write_pvh_elf(kernel, code, len), 0);
    char *argv[] = {(char *)test_build_path("tern-vmm"), "run", "--kernel", kernel, "--mem",
                    "32M", "--serial", f->serial_opt, NULL};
    expect_vmm_failure(f, argv, VMM_EXIT_GUEST_CRASH, needle);
}

static void test_guest_crashes_reported(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    /* mov $0x42,%al; out %al,$0x99: a port nothing answers. */
    static const unsigned char bad_port[] = {0xb0, 0x42, 0xe6, 0x99, 0xf4};
    run_crashing_guest(f, bad_port, sizeof(bad_port), "unhandled port I/O: write of 1 byte(s) at port 0x99");
    /* ud2 with no IDT: #UD, #GP, double fault, triple fault. */
    static const unsigned char triple[] = {0x0f, 0x0b};
    run_crashing_guest(f, triple, sizeof(triple), "triple fault");
    /* mov 0xfed00000,%eax: a read of MMIO where no device is. */
    static const unsigned char bad_mmio[] = {0xa1, 0x00, 0x00, 0xd0, 0xfe, 0xf4};
    run_crashing_guest(f, bad_mmio, sizeof(bad_mmio), "unhandled MMIO: read of 4 byte(s) at 0xfed00000");
}

static void test_register_dump_on_crash(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    static const unsigned char bad_port[] = {0xb0, 0x42, 0xe6, 0x99, 0xf4};
    char kernel[600];
    snprintf(kernel, sizeof(kernel), "%s/crash.elf", f->dir);
    assert_int_equal(test_write_pvh_elf(kernel, bad_port, sizeof(bad_port)), 0);
    char *argv[] = {(char *)test_build_path("tern-vmm"), "run", "--kernel", kernel, "--mem",
                    "32M", NULL};
    assert_int_equal(test_proc_start(&f->vmm, f->dir, argv), 0);
    assert_true(test_proc_wait(&f->vmm, 20000));
    assert_int_equal(f->vmm.status, VMM_EXIT_GUEST_CRASH);
    /* rip points after the OUT at 0x101004, rax holds 0x42. */
    assert_true(test_wait_for_text(f->vmm.err_path, "rip=0000000000101004", 100));
    assert_true(test_wait_for_text(f->vmm.err_path, "rax=0000000000000042", 100));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_boot_one_vcpu, setup, teardown),
        cmocka_unit_test_setup_teardown(test_boot_two_vcpus, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exit_status_propagates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_stops_cleanly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_guest_crashes_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register_dump_on_crash, setup, teardown),
    };
    return cmocka_run_group_tests_name("vmm-boot", tests, NULL, NULL);
}
