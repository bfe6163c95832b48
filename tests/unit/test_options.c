/* Option and size parsing of tern-vmm run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "node-vmm/options.h"

static void test_parse_size_suffixes(void **state)
{
    (void)state;
    struct tern_err err;
    uint64_t v;
    assert_int_equal(parse_size("4096", &v, &err), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(parse_size("4K", &v, &err), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(parse_size("512M", &v, &err), 0);
    assert_int_equal(v, 512ull << 20);
    assert_int_equal(parse_size("2g", &v, &err), 0);
    assert_int_equal(v, 2ull << 30);
    assert_int_equal(parse_size("1GiB", &v, &err), 0);
    assert_int_equal(v, 1ull << 30);
    assert_int_equal(parse_size("3MB", &v, &err), 0);
    assert_int_equal(v, 3ull << 20);
    assert_int_equal(parse_size("1T", &v, &err), 0);
    assert_int_equal(v, 1ull << 40);
}

static void test_parse_size_errors(void **state)
{
    (void)state;
    struct tern_err err;
    uint64_t v = 77;
    const char *bad[] = {"", "M", "-1M", "+5", " 5", "12X", "5MM", "5Mi", "99999999999999999999",
                         "17179869184G"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(parse_size(bad[i], &v, &err), -1);
        assert_true(strlen(err.msg) > 0);
    }
    assert_int_equal(v, 77);
    assert_int_equal(parse_size("12X", &v, &err), -1);
    assert_non_null(strstr(err.msg, "suffix"));
}

static void test_serial_spec(void **state)
{
    (void)state;
    struct tern_err err;
    struct serial_spec s;
    assert_int_equal(parse_serial_spec("stdio", &s, &err), 0);
    assert_int_equal(s.kind, SERIAL_STDIO);
    assert_int_equal(parse_serial_spec("file:/tmp/x", &s, &err), 0);
    assert_int_equal(s.kind, SERIAL_FILE);
    assert_string_equal(s.path, "/tmp/x");
    assert_int_equal(parse_serial_spec("unix:/tmp/s", &s, &err), 0);
    assert_int_equal(s.kind, SERIAL_UNIX);
    assert_int_equal(parse_serial_spec("file:", &s, &err), -1);
    assert_int_equal(parse_serial_spec("tcp:1.2.3.4:5", &s, &err), -1);
    assert_non_null(strstr(err.msg, "stdio, file:PATH or unix:PATH"));
}

static int parse(struct run_options *o, struct tern_err *err, int argc, ...)
{
    char *argv[32];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    return parse_run_options(argc, argv, o, err);
}

static void test_run_options_good(void **state)
{
    (void)state;
    struct tern_err err;
    struct run_options o;
    assert_int_equal(parse(&o, &err, 12, "--kernel", "k.elf", "--mem", "512M", "--vcpus", "2",
                           "--cmdline", "fill=1", "--serial", "file:/tmp/o", "--control",
                           "/tmp/c.sock"),
                     0);
    assert_string_equal(o.kernel, "k.elf");
    assert_int_equal(o.mem_bytes, 512ull << 20);
    assert_int_equal(o.vcpus, 2);
    assert_string_equal(o.cmdline, "fill=1");
    assert_int_equal(o.serial.kind, SERIAL_FILE);
    assert_string_equal(o.control_path, "/tmp/c.sock");
    assert_null(o.initrd);

    assert_int_equal(parse(&o, &err, 4, "--kernel", "k", "--mem", "16M"), 0);
    assert_int_equal(o.vcpus, 1);
    assert_int_equal(o.serial.kind, SERIAL_STDIO);
    assert_string_equal(o.cmdline, "");
}

static void expect_error(const char *needle, int rc, const struct tern_err *err)
{
    assert_int_equal(rc, -1);
    if (!strstr(err->msg, needle))
        fail_msg("error '%s' does not mention '%s'", err->msg, needle);
}

static void test_run_options_errors(void **state)
{
    (void)state;
    struct tern_err err;
    struct run_options o;
    expect_error("--kernel PATH is required", parse(&o, &err, 2, "--mem", "1G"), &err);
    expect_error("--mem SIZE is required", parse(&o, &err, 2, "--kernel", "k"), &err);
    expect_error("needs a value", parse(&o, &err, 3, "--mem", "1G", "--kernel"), &err);
    expect_error("unknown option '--bogus'", parse(&o, &err, 6, "--kernel", "k", "--mem", "1G",
                                                   "--bogus", "1"), &err);
    expect_error("unexpected argument 'stray'", parse(&o, &err, 1, "stray"), &err);
    expect_error("--vcpus", parse(&o, &err, 6, "--kernel", "k", "--mem", "1G", "--vcpus", "0"),
                 &err);
    expect_error("--vcpus", parse(&o, &err, 6, "--kernel", "k", "--mem", "1G", "--vcpus", "65"),
                 &err);
    expect_error("--vcpus", parse(&o, &err, 6, "--kernel", "k", "--mem", "1G", "--vcpus", "2x"),
                 &err);
    expect_error("too small", parse(&o, &err, 4, "--kernel", "k", "--mem", "1M"), &err);
    expect_error("whole number of MiB", parse(&o, &err, 4, "--kernel", "k", "--mem", "16388K"),
                 &err);
    expect_error("--mem", parse(&o, &err, 4, "--kernel", "k", "--mem", "lots"), &err);
    expect_error("larger than 1T", parse(&o, &err, 4, "--kernel", "k", "--mem", "2T"), &err);
    expect_error("--serial", parse(&o, &err, 6, "--kernel", "k", "--mem", "1G", "--serial", "x"),
                 &err);
}

static void test_disks_and_restore(void **state)
{
    (void)state;
    struct tern_err err;
    struct run_options o;
    char d0[] = "/img/a.raw", d1[] = "/img/b.raw,ro", bad[] = "/img/c.raw,rw", empty[] = ",ro";
    assert_int_equal(parse(&o, &err, 8, "--kernel", "k", "--mem", "64M", "--disk", d0, "--disk", d1),
                     0);
    assert_int_equal(o.nr_disks, 2);
    assert_string_equal(o.disks[0].path, "/img/a.raw");
    assert_false(o.disks[0].read_only);
    assert_string_equal(o.disks[1].path, "/img/b.raw");
    assert_true(o.disks[1].read_only);
    assert_true(o.disks_given);
    expect_error("--disk-rw PATH", parse(&o, &err, 6, "--kernel", "k", "--mem", "64M", "--disk", bad),
                 &err);
    expect_error("needs a path", parse(&o, &err, 6, "--kernel", "k", "--mem", "64M", "--disk", empty),
                 &err);
    char e0[] = "a", e1[] = "b", e2[] = "c", e3[] = "d", e4[] = "e";
    expect_error("at most 4", parse(&o, &err, 14, "--kernel", "k", "--mem", "64M", "--disk", e0,
                                    "--disk", e1, "--disk", e2, "--disk", e3, "--disk", e4),
                 &err);

    /* --restore: memory and vCPUs may come from the snapshot. */
    assert_int_equal(parse(&o, &err, 2, "--restore", "/s/vm.snap"), 0);
    assert_string_equal(o.restore, "/s/vm.snap");
    assert_false(o.mem_given);
    assert_false(o.vcpus_given);
    assert_int_equal(parse(&o, &err, 6, "--restore", "s", "--mem", "64M", "--vcpus", "2"), 0);
    assert_true(o.mem_given);
    assert_true(o.vcpus_given);
    expect_error("drop --kernel", parse(&o, &err, 4, "--restore", "s", "--kernel", "k"), &err);
    expect_error("drop --kernel", parse(&o, &err, 4, "--restore", "s", "--cmdline", "x"), &err);
    expect_error("too small", parse(&o, &err, 4, "--restore", "s", "--mem", "1M"), &err);
}

/* Paths with commas: --disk-rw/--disk-ro take them as they are (what the
 * agent passes); --disk PATH,ro, for people, refuses any other comma
 * rather than guess where the path ends. */
static void test_disk_paths_with_commas(void **state)
{
    (void)state;
    struct tern_err err;
    struct run_options o;
    char rw_ro_suffix[] = "/x/y.img,ro", ro_comma[] = "/x/a,b.img", plain[] = "/x/c.img",
         hand[] = "/x/d.img,ro";
    assert_int_equal(parse(&o, &err, 12, "--kernel", "k", "--mem", "64M", "--disk-rw", rw_ro_suffix,
                           "--disk-ro", ro_comma, "--disk", plain, "--disk", hand),
                     0);
    assert_int_equal(o.nr_disks, 4);
    assert_string_equal(o.disks[0].path, "/x/y.img,ro"); /* not /x/y.img read-only */
    assert_false(o.disks[0].read_only);
    assert_string_equal(o.disks[1].path, "/x/a,b.img");
    assert_true(o.disks[1].read_only);
    assert_string_equal(o.disks[2].path, "/x/c.img");
    assert_false(o.disks[2].read_only);
    assert_string_equal(o.disks[3].path, "/x/d.img");
    assert_true(o.disks[3].read_only);
    /* Verbatim means verbatim: the argument is not written to. */
    assert_string_equal(rw_ro_suffix, "/x/y.img,ro");

    char comma[] = "/x/a,b.img", comma_ro[] = "/x/a,b.img,ro", empty[] = "";
    expect_error("--disk-rw PATH or --disk-ro PATH",
                 parse(&o, &err, 6, "--kernel", "k", "--mem", "64M", "--disk", comma), &err);
    expect_error("--disk-rw PATH or --disk-ro PATH",
                 parse(&o, &err, 6, "--kernel", "k", "--mem", "64M", "--disk", comma_ro), &err);
    expect_error("--disk-ro needs a path",
                 parse(&o, &err, 6, "--kernel", "k", "--mem", "64M", "--disk-ro", empty), &err);
    char a[] = "a", b[] = "b";
    expect_error("at most 4", parse(&o, &err, 14, "--kernel", "k", "--mem", "64M", "--disk-rw", a,
                                    "--disk-ro", b, "--disk", a, "--disk-rw", b, "--disk-ro", a),
                 &err);
}

static void test_endpoints_and_incoming(void **state)
{
    (void)state;
    struct tern_err err;
    struct endpoint e;
    assert_int_equal(parse_endpoint("tls://10.77.0.2:7000", &e, &err), 0);
    assert_string_equal(e.host, "10.77.0.2");
    assert_int_equal(e.port, 7000);
    assert_int_equal(parse_endpoint("tls://host-b:1", &e, &err), 0);
    assert_string_equal(e.host, "host-b");
    assert_int_equal(parse_endpoint("tls://[::1]:65535", &e, &err), 0);
    assert_string_equal(e.host, "::1");
    assert_int_equal(e.port, 65535);
    const char *bad[] = {"10.0.0.1:7000", "tcp://a:1", "tls://a", "tls://:7", "tls://a:0",
                         "tls://a:65536", "tls://a:x", "tls://::1:7", "tls://[::1]7", "tls://a:7 "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (parse_endpoint(bad[i], &e, &err) == 0)
            fail_msg("'%s' accepted", bad[i]);

    struct run_options o;
    const char *tok = "0123456789abcdef0123";
    assert_int_equal(parse(&o, &err, 10, "--incoming", "tls://0.0.0.0:7000", "--tls-dir", "/t",
                           "--token", tok, "--mem", "1G", "--vcpus", "2"),
                     0);
    assert_true(o.incoming);
    assert_int_equal(o.incoming_at.port, 7000);
    assert_string_equal(o.tls_dir, "/t");
    expect_error("needs --tls-dir", parse(&o, &err, 4, "--incoming", "tls://a:1", "--mem", "1G"),
                 &err);
    expect_error("at least 16", parse(&o, &err, 8, "--incoming", "tls://a:1", "--tls-dir", "/t",
                                      "--token", "short", "--mem", "1G"),
                 &err);
    expect_error("needs --mem", parse(&o, &err, 6, "--incoming", "tls://a:1", "--tls-dir", "/t",
                                      "--token", tok),
                 &err);
    expect_error("drop --restore", parse(&o, &err, 10, "--incoming", "tls://a:1", "--tls-dir", "/t",
                                         "--token", tok, "--mem", "1G", "--kernel", "k"),
                 &err);
    expect_error("go with --incoming", parse(&o, &err, 6, "--kernel", "k", "--mem", "1G",
                                             "--token", tok),
                 &err);
    /* The commit gate (docs/migration.md): only for incoming VMs. */
    assert_false(o.commit_gate);
    assert_int_equal(parse(&o, &err, 9, "--incoming", "tls://127.0.0.1:1", "--tls-dir", "d",
                           "--token", "0123456789abcdef", "--mem", "64M", "--commit-gate"),
                     0);
    assert_true(o.commit_gate);
    assert_int_equal(parse(&o, &err, 8, "--incoming", "tls://127.0.0.1:1", "--tls-dir", "d",
                           "--token", "0123456789abcdef", "--mem", "64M"),
                     0);
    assert_false(o.commit_gate);
    expect_error("go with --incoming",
                 parse(&o, &err, 5, "--kernel", "k", "--mem", "1G", "--commit-gate"), &err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_size_suffixes),
        cmocka_unit_test(test_parse_size_errors),
        cmocka_unit_test(test_serial_spec),
        cmocka_unit_test(test_run_options_good),
        cmocka_unit_test(test_run_options_errors),
        cmocka_unit_test(test_disks_and_restore),
        cmocka_unit_test(test_disk_paths_with_commas),
        cmocka_unit_test(test_endpoints_and_incoming),
    };
    return cmocka_run_group_tests_name("options", tests, NULL, NULL);
}
