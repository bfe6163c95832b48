/* ternd.conf parsing: every setting, defaults, and the errors an operator
 * sees for bad lines (with the line number). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/config.h"
#include "common/fileio.h"
#include "tests/support/proc.h"

static void parses_every_setting(void **state)
{
    (void)state;
    struct ternd_config c;
    struct tern_err err;
    ternd_config_defaults(&c);
    const char *text = "# a comment\n"
                       "host = h1\n"
                       "\n"
                       "run_dir = /tmp/r   # trailing comment\n"
                       "state_dir=/tmp/s\n"
                       "shared_dir = /tmp/shared\n"
                       "tls_dir = /tmp/tls\n"
                       "control_socket = /tmp/r/t.sock\n"
                       "vmm_path = /usr/bin/tern-vmm\n"
                       "migration_addr = 10.77.0.2\n"
                       "migration_ports = 8000-8009\n"
                       "mem = 8G\n"
                       "vcpus = 12\n"
                       "cpg_group = tern-test\n"
                       "cgroups = no\n"
                       "cgroup_layout = delegated\n"
                       "corosync_wait = 5\n"
                       "client_idle_timeout = 60\n"
                       "host_down_after = 5\n"
                       "client_stuck_timeout = 7\n"
                       "metrics_addr = 10.77.0.2:9650\n";
    assert_int_equal(ternd_config_parse(&c, text, "t.conf", &err), 0);
    assert_string_equal(c.host, "h1");
    assert_string_equal(c.run_dir, "/tmp/r");
    assert_string_equal(c.state_dir, "/tmp/s");
    assert_string_equal(c.shared_dir, "/tmp/shared");
    assert_string_equal(c.tls_dir, "/tmp/tls");
    assert_string_equal(c.control_socket, "/tmp/r/t.sock");
    assert_string_equal(c.vmm_path, "/usr/bin/tern-vmm");
    assert_string_equal(c.migration_addr, "10.77.0.2");
    assert_int_equal(c.migration_port_min, 8000);
    assert_int_equal(c.migration_port_max, 8009);
    assert_int_equal(c.mem_mib, 8192);
    assert_int_equal(c.vcpus, 12);
    assert_string_equal(c.cpg_group, "tern-test");
    assert_false(c.use_cgroups);
    assert_true(c.cgroup_delegated);
    assert_int_equal(c.corosync_wait_s, 5);
    assert_int_equal(c.client_idle_s, 60);
    assert_int_equal(c.host_down_after_s, 5);
    assert_int_equal(c.client_stuck_s, 7);
    assert_string_equal(c.metrics_host, "10.77.0.2");
    assert_int_equal(c.metrics_port, 9650);
}

static void defaults(void **state)
{
    (void)state;
    struct ternd_config c;
    ternd_config_defaults(&c);
    assert_string_equal(c.run_dir, "/run/tern");
    assert_string_equal(c.state_dir, "/var/lib/tern");
    assert_string_equal(c.tls_dir, "/etc/tern/tls");
    assert_string_equal(c.cpg_group, "tern");
    assert_int_equal(c.migration_port_min, 7400);
    assert_true(c.use_cgroups);
    assert_false(c.cgroup_delegated);
    assert_int_equal(c.corosync_wait_s, 60);
    assert_int_equal(c.client_idle_s, 300);
    assert_int_equal(c.host_down_after_s, 30);
    assert_int_equal(c.client_stuck_s, 30);
    assert_int_equal(c.metrics_port, 0); /* metrics off */
}

static void expect_error(const char *text, const char *needle)
{
    struct ternd_config c;
    struct tern_err err;
    ternd_config_defaults(&c);
    assert_int_equal(ternd_config_parse(&c, text, "t.conf", &err), -1);
    if (!strstr(err.msg, needle)) {
        fprintf(stderr, "error '%s' lacks '%s'\n", err.msg, needle);
        fail();
    }
}

static void bad_lines(void **state)
{
    (void)state;
    expect_error("host = h1\nbogus = 1\n", "t.conf line 2: unknown setting 'bogus'");
    expect_error("\n\nrun_dir = relative\n", "line 3: 'run_dir' must be an absolute path");
    expect_error("host = no spaces!\n", "host name 'no spaces!' is not valid");
    expect_error("just words\n", "expected 'key = value'");
    expect_error("mem =\n", "'mem' has no value");
    expect_error("mem = lots\n", "mem must be a size");
    expect_error("vcpus = 0\n", "vcpus must be 1..4096");
    expect_error("migration_ports = 9000-8000\n", "migration_ports must be a range");
    expect_error("migration_ports = 80-90\n", "migration_ports must be a range");
    expect_error("migration_addr = example.com\n", "must be an IPv4 or IPv6 address");
    expect_error("cgroups = maybe\n", "cgroups must be yes or no");
    expect_error("cgroup_layout = flat\n", "cgroup_layout must be nested or delegated, got 'flat'");
    expect_error("client_idle_timeout = 0\n", "client_idle_timeout must be 1..86400");
    expect_error("host_down_after = 3601\n", "host_down_after must be 0..3600");
    expect_error("host_down_after = 1m\n", "host_down_after must be 0..3600");
    expect_error("client_stuck_timeout = soon\n", "client_stuck_timeout must be 1..3600");
    expect_error("corosync_wait = 99999\n", "corosync_wait must be 0..3600");
    expect_error("metrics_addr = localhost:9650\n", "metrics_addr must be PORT (on 127.0.0.1), "
                 "IPV4:PORT or [IPV6]:PORT");
}

/* metrics_addr: a bare port is loopback; IPv4:port, [IPv6]:port; anything
 * else (names, no port, port 0 or > 65535, IPv6 without brackets) is
 * refused with what is expected and what was given. */
static void metrics_addr_forms(void **state)
{
    (void)state;
    static const struct {
        const char *value, *host;
        unsigned port;
    } good[] = {
        {"9650", "127.0.0.1", 9650},
        {"127.0.0.1:9650", "127.0.0.1", 9650},
        {"0.0.0.0:1", "0.0.0.0", 1},
        {"[::1]:9650", "::1", 9650},
        {"[fd00::7]:65535", "fd00::7", 65535},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct ternd_config c;
        struct tern_err err;
        char text[128];
        ternd_config_defaults(&c);
        snprintf(text, sizeof(text), "metrics_addr = %s\n", good[i].value);
        if (ternd_config_parse(&c, text, "t.conf", &err) < 0)
            fail_msg("%s: %s", good[i].value, err.msg);
        assert_string_equal(c.metrics_host, good[i].host);
        assert_int_equal(c.metrics_port, good[i].port);
    }
    static const char *const bad[] = {
        "0",           "65536",         "127.0.0.1",      "127.0.0.1:",     "127.0.0.1:0",
        "10.0.0.300:80", "::1:9650",    "[::1]",          "[::1]9650",      "[10.0.0.1]:80",
        "host-a:9650", "9650x",         ":9650",          "127.0.0.1:-1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[128], got[160];
        snprintf(text, sizeof(text), "\nmetrics_addr = %s\n", bad[i]);
        snprintf(got, sizeof(got), "got '%s'", bad[i]);
        expect_error(text, "t.conf line 2: metrics_addr must be");
        expect_error(text, got);
    }
}

/* The fencing keys (fencing/fence_config.c has their own tests): parsed
 * into c.fence, their errors with the file and line. */
static void fencing_keys(void **state)
{
    (void)state;
    struct ternd_config c;
    struct tern_err err;
    ternd_config_defaults(&c);
    assert_int_equal(c.fence.timeout_ms, 20000);
    assert_string_equal(c.fence.agent_dir, "/usr/sbin");
    assert_string_equal(c.fence.watchdog, "");
    assert_int_equal(c.fence.watchdog_timeout_s, 10);
    const char *text = "host = h1\n"
                       "fence_level = h2 1 h2-bmc\n"
                       "fence_agent_dir = /opt/fence\n"
                       "fence_timeout = 7\n"
                       "fence_device = h2-bmc fence_ipmilan ip=10.77.0.202 username=admin "
                       "password_file=/etc/tern/fence/h2 lanplus=1 cipher=3 power_wait=0\n"
                       "watchdog = /dev/watchdog\n"
                       "watchdog_timeout = 6\n";
    if (ternd_config_parse(&c, text, "t.conf", &err) < 0)
        fail_msg("%s", err.msg);
    assert_string_equal(c.host, "h1");
    assert_string_equal(c.fence.agent_dir, "/opt/fence");
    assert_int_equal(c.fence.timeout_ms, 7000);
    assert_int_equal(c.fence.nr_devices, 1);
    assert_string_equal(c.fence.devices[0].agent, "fence_ipmilan");
    assert_int_equal(c.fence.devices[0].line, 5);
    assert_true(fence_config_has_levels(&c.fence, "h2"));
    assert_false(fence_config_has_levels(&c.fence, "h1"));
    assert_string_equal(c.fence.watchdog, "/dev/watchdog");
    assert_int_equal(c.fence.watchdog_timeout_s, 6);

    expect_error("host = h1\nfence_device = a fence_x password=s\n",
                 "t.conf line 2: fence_device a: no 'password=' in ternd.conf");
    expect_error("fence_device = a fence_x ip=1\nfence_level = h1 1 a,b\n",
                 "t.conf line 2: fence_level h1 1: no fence_device named 'b'");
    expect_error("\nfence_timeout = 0\n", "t.conf line 2: fence_timeout must be 1..600");
    expect_error("fence_device = a fence_x ip=1\nfence_device = a fence_x ip=2\n",
                 "t.conf line 2: fence_device a is defined twice (first at line 1)");
}

/* ternd at start: a device whose agent is missing stops it, naming the
 * file and the line. */
static void load_checks_fence_agents(void **state)
{
    (void)state;
    char *dir = test_make_tmpdir("agent-config");
    assert_non_null(dir);
    char path[512], text[2048];
    static const char *const tls[] = {"ca.pem", "cert.pem", "key.pem"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, tls[i]);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fclose(f);
    }
    snprintf(path, sizeof(path), "%s/ternd.conf", dir);
    snprintf(text, sizeof(text),
             "run_dir = %s/run\nstate_dir = %s/state\ntls_dir = %s\nvmm_path = /bin/true\n"
             "fence_agent_dir = %s\n"
             "fence_device = h2-bmc fence_nothere ip=10.77.0.202\n",
             dir, dir, dir, dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    struct ternd_config c;
    struct tern_err err;
    int rc = ternd_config_load(&c, path, &err);
    char want[600];
    snprintf(want, sizeof(want), "%s: line 6: fence_device h2-bmc: agent %s/fence_nothere", path,
             dir);
    bool found = strstr(err.msg, want) != NULL;
    test_rmtree(dir);
    free(dir);
    assert_int_equal(rc, -1);
    if (!found)
        fail_msg("error '%s' lacks '%s'", err.msg, want);
}

static void check_names_missing_vmm(void **state)
{
    (void)state;
    struct ternd_config c;
    struct tern_err err;
    ternd_config_defaults(&c);
    snprintf(c.vmm_path, sizeof(c.vmm_path), "/nonexistent/tern-vmm");
    assert_int_equal(ternd_config_check(&c, &err), -1);
    assert_non_null(strstr(err.msg, "vmm_path /nonexistent/tern-vmm is not an executable"));
}

static void missing_file(void **state)
{
    (void)state;
    struct ternd_config c;
    struct tern_err err;
    assert_int_equal(ternd_config_load(&c, "/nonexistent/ternd.conf", &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/ternd.conf"));
}

/* The shipped example (dist/ternd.conf, installed as /etc/tern/ternd.conf):
 * with every commented-out "#key = value" line uncommented it still
 * parses, and the keys whose default is fixed show that default. */
static void shipped_example(void **state)
{
    (void)state;
    const char *src = getenv("TERN_SOURCE");
    char path[512];
    snprintf(path, sizeof(path), "%s/dist/ternd.conf", src ? src : ".");
    uint8_t *text;
    size_t len;
    struct tern_err err;
    if (tern_read_file(path, 1 << 20, &text, &len, &err) < 0)
        fail_msg("%s", err.msg);
    char *out = calloc(1, len + 1);
    assert_non_null(out);
    size_t o = 0;
    int uncommented = 0;
    for (size_t i = 0; i < len; i++) {
        bool line_start = i == 0 || text[i - 1] == '\n';
        if (line_start && text[i] == '#' && i + 1 < len && text[i + 1] >= 'a' && text[i + 1] <= 'z') {
            uncommented++;
            continue; /* drop the '#' */
        }
        out[o++] = (char)text[i];
    }
    free(text);
    struct ternd_config c, d;
    ternd_config_defaults(&c);
    ternd_config_defaults(&d);
    if (ternd_config_parse(&c, out, path, &err) < 0)
        fail_msg("%s", err.msg);
    free(out);
    assert_true(uncommented >= 13);
    assert_string_equal(c.run_dir, d.run_dir);
    assert_string_equal(c.state_dir, d.state_dir);
    assert_string_equal(c.tls_dir, d.tls_dir);
    assert_string_equal(c.cpg_group, d.cpg_group);
    assert_int_equal(c.migration_port_min, d.migration_port_min);
    assert_int_equal(c.migration_port_max, d.migration_port_max);
    assert_int_equal(c.use_cgroups, d.use_cgroups);
    char sock[PATH_MAX + 16];
    snprintf(sock, sizeof(sock), "%s/ternd.sock", d.run_dir);
    assert_string_equal(c.control_socket, sock);
    /* The shipped unit needs the delegated layout: the one active line. */
    assert_true(c.cgroup_delegated);
    /* The fencing example: one device, one level naming it. */
    assert_int_equal(c.fence.nr_devices, 1);
    assert_int_equal(c.fence.nr_levels, 1);
    assert_int_equal(c.fence.timeout_ms, d.fence.timeout_ms);
    assert_string_equal(c.fence.agent_dir, d.fence.agent_dir);
    assert_int_equal(c.fence.watchdog_timeout_s, d.fence.watchdog_timeout_s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_every_setting),
        cmocka_unit_test(defaults),
        cmocka_unit_test(bad_lines),
        cmocka_unit_test(metrics_addr_forms),
        cmocka_unit_test(fencing_keys),
        cmocka_unit_test(load_checks_fence_agents),
        cmocka_unit_test(check_names_missing_vmm),
        cmocka_unit_test(missing_file),
        cmocka_unit_test(shipped_example),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
