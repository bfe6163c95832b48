/* Snapshots on real KVM: save and restore the working test guest over and
 * over, each time in a new process, and check that memory, heartbeats and
 * the disk journal continue exactly; refuse mismatching configurations,
 * truncated and corrupted files; a SIGKILL loses only unflushed records. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "node-vmm/control.h"
#include "node-vmm/vm.h"
#include "tests/support/proc.h"
#include "tests/support/kvm.h"

#define GUEST_MEM "64M"

struct fixture {
    char *dir;
    struct test_proc vmm;
    char disk[512];
    char snap[512];
    char control[512];
    int serial_no;
    char serial[512]; /* the current process's console */
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f || !(f->dir = test_make_tmpdir("snap")))
        return -1;
    snprintf(f->disk, sizeof(f->disk), "%s/disk.img", f->dir);
    snprintf(f->snap, sizeof(f->snap), "%s/vm.snap", f->dir);
    snprintf(f->control, sizeof(f->control), "%s/control.sock", f->dir);
    if (test_make_disk(f->disk, 16 << 20) < 0)
        return -1;
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

static void show_logs(struct fixture *f)
{
    char *s = test_read_text(f->serial);
    char *e = test_read_text(f->vmm.err_path);
    print_message("--- serial %s ---\n%s\n--- stderr ---\n%s\n", f->serial, s, e);
    free(s);
    free(e);
}

/* Starts tern-vmm with `args` (NULL-terminated) after the common ones. */
static void start_vmm(struct fixture *f, const char *const *args)
{
    char serial_opt[600];
    snprintf(f->serial, sizeof(f->serial), "%s/serial-%d.log", f->dir, f->serial_no++);
    char *argv[32];
    test_vmm_argv(argv, 32, args, f->serial, serial_opt, sizeof(serial_opt), f->control);
    assert_int_equal(test_proc_start(&f->vmm, f->dir, argv), 0);
    for (int i = 0; i < 1000 && access(f->control, F_OK) != 0 && !test_proc_wait(&f->vmm, 0); i++)
        test_sleep_ms(10);
    if (access(f->control, F_OK) != 0) {
        show_logs(f);
        fail_msg("tern-vmm did not open its control socket");
    }
}

static json_t *ctl(struct fixture *f, json_t *req)
{
    json_t *reply = NULL;
    struct tern_err err;
    if (control_call(f->control, req, 60000, &reply, &err) < 0) {
        show_logs(f);
        fail_msg("control: %s", err.msg);
    }
    json_decref(req);
    if (!json_is_true(json_object_get(reply, "ok"))) {
        show_logs(f);
        fail_msg("control error: %s", json_string_value(json_object_get(reply, "error")));
    }
    return reply;
}

static json_t *heartbeat(struct fixture *f)
{
    json_t *s = ctl(f, json_pack("{s:s}", "cmd", "status"));
    json_t *hb = json_incref(json_object_get(s, "heartbeat"));
    json_decref(s);
    return hb;
}

/* The last value of `key` on the current console, -1 if none. */
static long last_value(struct fixture *f, const char *key)
{
    return test_last_value(f->serial, key);
}

static void assert_console_clean(struct fixture *f)
{
    const char *bad[] = {"CHECK FAILED", "JOURNAL BAD", "EXCEPTION", "DISK ERROR"};
    for (size_t i = 0; i < 4; i++) {
        if (test_count_text(f->serial, bad[i])) {
            show_logs(f);
            fail_msg("guest reported %s", bad[i]);
        }
    }
}

/* Waits until the console shows a status line with checks above
 * `min_checks` (so a full self-check passed in this process). */
static void wait_for_checks(struct fixture *f, long min_checks)
{
    for (int i = 0; i < 3000; i++) {
        if (last_value(f, "checks=") > min_checks)
            return;
        if (test_proc_wait(&f->vmm, 0))
            break;
        test_sleep_ms(10);
    }
    show_logs(f);
    fail_msg("no passing self-check beyond %ld", min_checks);
}

static void save(struct fixture *f, bool stop)
{
    json_decref(ctl(f, json_pack("{s:s, s:s, s:b}", "cmd", "save", "file", f->snap, "stop", stop)));
    if (stop) {
        assert_true(test_proc_wait(&f->vmm, 30000));
        if (f->vmm.status != 0)
            show_logs(f);
        assert_int_equal(f->vmm.status, 0);
        assert_int_equal(access(f->control, F_OK), -1);
    }
}

static int cycles(void)
{
    const char *e = getenv("TERN_SNAPSHOT_CYCLES");
    int n = e ? atoi(e) : 50;
    return n > 0 ? n : 50;
}

static void save_restore_cycles(void **state, const char *vcpus)
{
    struct fixture *f = *state;
    const char *boot[] = {"--kernel", test_build_path("testguest.elf"), "--mem", GUEST_MEM,
                          "--vcpus", vcpus, "--disk", f->disk, "--cmdline",
                          "fill=16 dirty=50 hb=1000 check=200 status=200 disk=1 disk_rate=50",
                          NULL};
    start_vmm(f, boot);
    wait_for_checks(f, 0);
    long checks = last_value(f, "checks=");
    long disk_seq = last_value(f, "disk_seq=");
    json_t *hb = heartbeat(f);
    json_int_t hb_count = json_integer_value(json_object_get(hb, "count"));
    json_decref(hb);

    int n = cycles();
    for (int c = 0; c < n; c++) {
        save(f, true);
        assert_console_clean(f);
        const char *restore[] = {"--restore", f->snap, NULL};
        start_vmm(f, restore);
        /* Restored state: the heartbeat history came along. */
        hb = heartbeat(f);
        json_int_t restored = json_integer_value(json_object_get(hb, "count"));
        assert_true(restored >= hb_count);
        json_decref(hb);
        wait_for_checks(f, checks); /* a full self-check passed after the restore */
        hb = heartbeat(f);
        if (json_integer_value(json_object_get(hb, "seq_errors")) != 0) {
            show_logs(f);
            fail_msg("cycle %d: heartbeat sequence broke", c);
        }
        assert_true(json_integer_value(json_object_get(hb, "count")) > restored);
        hb_count = json_integer_value(json_object_get(hb, "count"));
        json_decref(hb);
        long now_checks = last_value(f, "checks=");
        long now_seq = last_value(f, "disk_seq=");
        /* The guest's own counters continue. */
        if (now_checks < checks || now_seq < disk_seq) {
            show_logs(f);
            fail_msg("cycle %d: checks %ld -> %ld, disk_seq %ld -> %ld", c, checks, now_checks,
                     disk_seq, now_seq);
        }
        checks = now_checks;
        disk_seq = now_seq;
        assert_console_clean(f);
    }
    assert_true(disk_seq > 0);
    json_decref(ctl(f, json_pack("{s:s}", "cmd", "stop")));
    assert_true(test_proc_wait(&f->vmm, 10000));

    /* A fresh boot reads the whole journal back and verifies it. */
    const char *verify[] = {"--kernel", test_build_path("testguest.elf"), "--mem", GUEST_MEM,
                            "--disk", f->disk, "--cmdline", "disk=1 disk_rate=1 exit_after=1",
                            NULL};
    start_vmm(f, verify);
    assert_true(test_proc_wait(&f->vmm, 60000));
    if (f->vmm.status != 0)
        show_logs(f);
    assert_int_equal(f->vmm.status, 0);
    long recovered = last_value(f, "journal recovered records=");
    assert_true(recovered >= disk_seq);
}

static void test_cycles_one_vcpu(void **state)
{
    test_require_kvm();
    save_restore_cycles(state, "1");
}

static void test_cycles_two_vcpus(void **state)
{
    test_require_kvm();
    save_restore_cycles(state, "2");
}

/* Saves a running guest without stopping it; the original keeps running. */
static void make_snapshot(struct fixture *f)
{
    const char *boot[] = {"--kernel", test_build_path("testguest.elf"), "--mem", GUEST_MEM,
                          "--disk", f->disk, "--cmdline", "fill=8 hb=1000 check=200 status=200 disk=1",
                          NULL};
    start_vmm(f, boot);
    wait_for_checks(f, 0);
    save(f, false);
    long before = last_value(f, "up=");
    wait_for_checks(f, last_value(f, "checks="));
    assert_true(last_value(f, "up=") >= before); /* still running after the save */
    json_decref(ctl(f, json_pack("{s:s}", "cmd", "stop")));
    assert_true(test_proc_wait(&f->vmm, 10000));
    assert_int_equal(f->vmm.status, 0);
}

static void expect_restore_refused(struct fixture *f, const char *const *extra, const char *needle)
{
    char *argv[16];
    int n = 0;
    argv[n++] = (char *)test_build_path("tern-vmm");
    argv[n++] = "run";
    argv[n++] = "--restore";
    argv[n++] = f->snap;
    for (; *extra; extra++)
        argv[n++] = (char *)*extra;
    argv[n] = NULL;
    struct test_proc p;
    assert_int_equal(test_proc_start(&p, f->dir, argv), 0);
    if (!test_proc_wait(&p, 30000)) {
        test_proc_kill(&p);
        fail_msg("restore of a bad snapshot did not exit");
    }
    char *err = test_read_text(p.err_path);
    if (p.status != VMM_EXIT_SETUP || !strstr(err, needle))
        fail_msg("expected exit %d and '%s', got %d: %s", VMM_EXIT_SETUP, needle, p.status, err);
    free(err);
}

static void test_config_mismatch_refused(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    make_snapshot(f);
    const char *mem[] = {"--mem", "128M", NULL};
    expect_restore_refused(f, mem, "was taken with 64 MiB of memory, --mem asks for 128 MiB");
    const char *vcpus[] = {"--vcpus", "2", NULL};
    expect_restore_refused(f, vcpus, "has 1 vCPUs, --vcpus asks for 2");
    const char *nodisk[] = {"--disk", f->disk, "--disk", f->disk, NULL};
    expect_restore_refused(f, nodisk, "has 1 disk(s), 2 --disk option(s)");
    char ro[600];
    snprintf(ro, sizeof(ro), "%s,ro", f->disk);
    const char *rodisk[] = {"--disk", ro, NULL};
    expect_restore_refused(f, rodisk, "disk 0 was writable, --disk makes it read-only");
    struct test_proc p;
    char *argv[] = {(char *)test_build_path("tern-vmm"), "run", "--restore", f->snap, "--kernel",
                    "x", NULL};
    assert_int_equal(test_proc_start(&p, f->dir, argv), 0);
    assert_true(test_proc_wait(&p, 10000));
    assert_int_equal(p.status, VMM_EXIT_USAGE);
}

static void copy_file(const char *from, const char *to, long limit)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[65536];
    long done = 0;
    size_t n;
    while ((limit < 0 || done < limit) &&
           (n = fread(buf, 1, limit < 0 || limit - done > (long)sizeof(buf) ? sizeof(buf)
                                                                             : (size_t)(limit - done),
                      in)) > 0) {
        assert_int_equal(fwrite(buf, 1, n, out), n);
        done += (long)n;
    }
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

static void flip_byte(const char *path, long offset)
{
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, offset, SEEK_SET), 0);
    int c = fgetc(fp);
    assert_int_equal(fseek(fp, offset, SEEK_SET), 0);
    fputc(c ^ 0x40, fp);
    assert_int_equal(fclose(fp), 0);
}

static void test_truncated_and_corrupt_refused(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    make_snapshot(f);
    struct stat st;
    assert_int_equal(stat(f->snap, &st), 0);
    long size = (long)st.st_size;
    char good[600];
    snprintf(good, sizeof(good), "%s.good", f->snap);
    assert_int_equal(rename(f->snap, good), 0);
    const char *none[] = {NULL};

    long cuts[] = {0, 10, 40, 300, size / 3, size / 2, size - 40, size - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        copy_file(good, f->snap, cuts[i]);
        expect_restore_refused(f, none, cuts[i] == 0 ? "is empty" : "truncated");
    }
    /* Flipped bytes: in the header, the configuration, the vCPU state, the
     * RAM and the end record. */
    long flips[] = {20, 60, 200, 2000, size / 2, size - 5};
    for (size_t i = 0; i < sizeof(flips) / sizeof(flips[0]); i++) {
        copy_file(good, f->snap, -1);
        flip_byte(f->snap, flips[i]);
        expect_restore_refused(f, none, flips[i] == 20 ? "snapshot" : "corrupt");
    }
    /* Not a snapshot at all, and a missing file. */
    FILE *fp = fopen(f->snap, "w");
    fputs("hello, this is not a snapshot at all, just some text\n", fp);
    fclose(fp);
    expect_restore_refused(f, none, "");
    unlink(f->snap);
    expect_restore_refused(f, none, "cannot open snapshot");
    /* The good copy still restores. */
    assert_int_equal(rename(good, f->snap), 0);
    const char *restore[] = {"--restore", f->snap, NULL};
    start_vmm(f, restore);
    wait_for_checks(f, last_value(f, "checks="));
    assert_console_clean(f);
}

static void test_sigkill_loses_only_unflushed(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    const char *boot[] = {"--kernel", test_build_path("testguest.elf"), "--mem", GUEST_MEM,
                          "--disk", f->disk, "--cmdline",
                          "hb=1000 status=100 disk=1 disk_rate=100", NULL};
    start_vmm(f, boot);
    for (int i = 0; i < 3000 && last_value(f, "disk_seq=") < 50; i++)
        test_sleep_ms(10);
    long durable = last_value(f, "disk_seq=");
    assert_true(durable >= 50);
    test_proc_signal(&f->vmm, SIGKILL);
    assert_true(test_proc_wait(&f->vmm, 10000));
    unlink(f->control);
    const char *verify[] = {"--kernel", test_build_path("testguest.elf"), "--mem", GUEST_MEM,
                            "--disk", f->disk, "--cmdline", "disk=1 disk_rate=1 exit_after=1",
                            NULL};
    start_vmm(f, verify);
    assert_true(test_proc_wait(&f->vmm, 60000));
    if (f->vmm.status != 0)
        show_logs(f);
    assert_int_equal(f->vmm.status, 0);
    long recovered = last_value(f, "journal recovered records=");
    if (recovered < durable)
        fail_msg("durable record %ld lost: only %ld recovered", durable, recovered);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cycles_one_vcpu, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cycles_two_vcpus, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_mismatch_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_and_corrupt_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigkill_loses_only_unflushed, setup, teardown),
    };
    return cmocka_run_group_tests_name("snapshot", tests, NULL, NULL);
}
