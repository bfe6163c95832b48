/* Fencing configuration (fencing/fence_config.c): the fence_* and watchdog
 * lines, every error an operator can make with them (with the line), and
 * the file-system checks ternd makes at start. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fencing/fence.h"
#include "tests/support/proc.h"

/* Feeds `text` line by line as ternd.conf would ("key = value"). */
static int parse(struct fence_config *c, const char *text, struct tern_err *err)
{
    fence_config_defaults(c);
    char *copy = strdup(text);
    assert_non_null(copy);
    int line = 0, rc = 0;
    char *save = NULL;
    for (char *l = strtok_r(copy, "\n", &save); l && rc == 0; l = strtok_r(NULL, "\n", &save)) {
        line++;
        char *eq = strchr(l, '=');
        assert_non_null(eq);
        *eq = '\0';
        char *key = l, *val = eq + 1;
        while (*key == ' ')
            key++;
        for (char *e = key + strlen(key); e > key && e[-1] == ' ';)
            *--e = '\0';
        while (*val == ' ')
            val++;
        char where[64];
        snprintf(where, sizeof(where), "t.conf line %d", line);
        rc = fence_config_set(c, key, val, where, line, err);
        if (rc == 1) {
            snprintf(err->msg, sizeof(err->msg), "not a fencing key: %s", key);
            rc = -1;
        }
    }
    free(copy);
    if (rc == 0)
        rc = fence_config_finish(c, "t.conf", err);
    return rc;
}

static void expect_error(const char *text, const char *needle)
{
    struct fence_config *c = malloc(sizeof(*c));
    assert_non_null(c);
    struct tern_err err = {{0}, 0};
    int rc = parse(c, text, &err);
    free(c);
    if (rc != -1)
        fail_msg("accepted:\n%s", text);
    if (!strstr(err.msg, needle))
        fail_msg("error '%s' lacks '%s'", err.msg, needle);
}

static const char *const example =
    "fence_agent_dir = /usr/sbin\n"
    "fence_timeout = 15\n"
    "fence_monitor_interval = 0\n"
    "fence_device = h1-bmc fence_ipmilan ip=10.77.0.201 username=admin "
    "password_file=/etc/tern/fence/h1-bmc lanplus=1 cipher=3 power_wait=0\n"
    "fence_device = h1-pdu-a fence_apc_snmp ip=10.0.0.9 plug=3\n"
    "fence_device = h1-pdu-b fence_apc_snmp ip=10.0.0.10 plug=3\n"
    "fence_level = h1 2 h1-pdu-a,h1-pdu-b\n"
    "fence_level = h1 1 h1-bmc\n"
    "fence_level = h2 1 h2-bmc\n"
    "fence_device = h2-bmc fence_ipmilan ip=10.77.0.202 username=admin lanplus=1\n"
    "watchdog = /dev/watchdog\n"
    "watchdog_timeout = 12\n";

static void parses_example(void **state)
{
    (void)state;
    struct fence_config *c = malloc(sizeof(*c));
    assert_non_null(c);
    struct tern_err err;
    if (parse(c, example, &err) < 0)
        fail_msg("%s", err.msg);
    assert_string_equal(c->agent_dir, "/usr/sbin");
    assert_int_equal(c->timeout_ms, 15000);
    assert_int_equal(c->nr_devices, 4);
    const struct fence_device *d = fence_config_device(c, "h1-bmc");
    assert_non_null(d);
    assert_string_equal(d->agent, "fence_ipmilan");
    assert_int_equal(d->nr_args, 6);
    assert_int_equal(d->line, 4);
    assert_string_equal(fence_device_arg(d, "ip"), "10.77.0.201");
    assert_string_equal(fence_device_arg(d, "password_file"), "/etc/tern/fence/h1-bmc");
    assert_string_equal(fence_device_arg(d, "power_wait"), "0");
    assert_null(fence_device_arg(d, "power"));
    assert_null(fence_device_arg(d, "password"));
    assert_null(fence_config_device(c, "h3-bmc"));
    /* A level may name a device defined further down. */
    assert_int_equal(c->nr_levels, 3);
    assert_string_equal(c->levels[0].host, "h1");
    assert_int_equal(c->levels[0].index, 2);
    assert_int_equal(c->levels[0].nr_devices, 2);
    assert_string_equal(c->levels[0].devices[1], "h1-pdu-b");
    assert_true(fence_config_has_levels(c, "h1"));
    assert_true(fence_config_has_levels(c, "h2"));
    assert_false(fence_config_has_levels(c, "h3"));
    /* The devices a check of h1 asks: level 1's, then level 2's, each once. */
    const char *devs[8];
    assert_int_equal(fence_config_host_devices(c, "h1", devs, 8), 3);
    assert_string_equal(devs[0], "h1-bmc");
    assert_string_equal(devs[1], "h1-pdu-a");
    assert_string_equal(devs[2], "h1-pdu-b");
    assert_int_equal(fence_config_host_devices(c, "h2", devs, 8), 1);
    assert_string_equal(devs[0], "h2-bmc");
    assert_int_equal(fence_config_host_devices(c, "h3", devs, 8), 0);
    assert_int_equal(c->monitor_interval_s, 0);
    assert_string_equal(c->watchdog, "/dev/watchdog");
    assert_int_equal(c->watchdog_timeout_s, 12);
    free(c);
}

static void defaults(void **state)
{
    (void)state;
    struct fence_config *c = malloc(sizeof(*c));
    assert_non_null(c);
    fence_config_defaults(c);
    assert_string_equal(c->agent_dir, "/usr/sbin");
    assert_int_equal(c->timeout_ms, 20000);
    assert_int_equal(c->nr_devices, 0);
    assert_int_equal(c->nr_levels, 0);
    assert_string_equal(c->watchdog, "");
    assert_int_equal(c->watchdog_timeout_s, 10);
    assert_int_equal(c->monitor_interval_s, 60);
    struct tern_err err;
    /* Nothing configured: nothing to check. */
    assert_int_equal(fence_config_check(c, &err), 0);
    /* Not a fencing key: left to the caller. */
    assert_int_equal(fence_config_set(c, "host", "h1", "t.conf line 1", 1, &err), 1);
    assert_int_equal(fence_config_set(c, "watchdog", "none", "t.conf line 1", 1, &err), 0);
    assert_string_equal(c->watchdog, "");
    free(c);
}

static void device_errors(void **state)
{
    (void)state;
    expect_error("fence_device = a fence_x ip=1\nfence_device = a fence_y ip=2\n",
                 "t.conf line 2: fence_device a is defined twice (first at line 1)");
    expect_error("fence_device = a /usr/sbin/fence_ipmilan ip=1\n",
                 "agent '/usr/sbin/fence_ipmilan' is not a fence agent's name");
    expect_error("fence_device = a ipmilan ip=1\n", "agent 'ipmilan' is not a fence agent's name");
    expect_error("fence_device = a fence_IPMI ip=1\n", "agent 'fence_IPMI' is not");
    expect_error("fence_device = a fence_ ip=1\n", "agent 'fence_' is not");
    expect_error("fence_device = a fence_x ip=1 password=secret\n",
                 "t.conf line 1: fence_device a: no 'password=' in ternd.conf");
    expect_error("fence_device = a fence_x passwd=secret\n", "no 'passwd=' in ternd.conf");
    expect_error("fence_device = a fence_x action=off\n", "'action' cannot be configured");
    expect_error("fence_device = a fence_x ip=1 ip=2\n", "argument 'ip' is given twice");
    expect_error("fence_device = a fence_x IP=1\n", "argument key 'IP' must be lower-case");
    expect_error("fence_device = a fence_x ip\n", "argument 'ip' is not key=value");
    expect_error("fence_device = a fence_x ip=\n", "argument 'ip' has no value");
    expect_error("fence_device = a fence_x password_file=relative/path\n",
                 "password_file must be an absolute path");
    expect_error("fence_device = a\n", "fence_device needs a name and an agent");
    expect_error("fence_device = bad/name fence_x\n", "fence device name 'bad/name' is not valid");
}

static void level_errors(void **state)
{
    (void)state;
    expect_error("fence_device = a fence_x ip=1\nfence_level = h1 1 a,b\n",
                 "t.conf line 2: fence_level h1 1: no fence_device named 'b'");
    expect_error("fence_device = a fence_x ip=1\nfence_device = b fence_x ip=2\n"
                 "fence_level = h1 1 a\nfence_level = h1 1 b\n",
                 "t.conf line 4: fence_level h1 1 is defined twice (first at line 3)");
    expect_error("fence_level = h1 0 a\n", "index must be 1..9, got '0'");
    expect_error("fence_level = h1 10 a\n", "index must be 1..9, got '10'");
    expect_error("fence_level = h1 one a\n", "index must be 1..9, got 'one'");
    expect_error("fence_level = h1 1\n", "fence_level needs a host, an index and devices");
    expect_error("fence_level = h1 1 a, b\n", "fence_level needs a host, an index and devices");
    expect_error("fence_level = h1 1 a,,b\n", "'' is not a device name");
    expect_error("fence_level = h1 1 a,a\n", "device a is listed twice");
    expect_error("fence_level = h!1 1 a\n", "host name 'h!1' is not valid");
    /* The same index for two hosts is fine. */
    struct fence_config *c = malloc(sizeof(*c));
    assert_non_null(c);
    struct tern_err err;
    if (parse(c, "fence_device = a fence_x ip=1\nfence_level = h1 1 a\nfence_level = h2 1 a\n",
              &err) < 0)
        fail_msg("%s", err.msg);
    free(c);
}

static void other_keys(void **state)
{
    (void)state;
    expect_error("fence_timeout = 0\n", "fence_timeout must be 1..600");
    expect_error("fence_timeout = 601\n", "fence_timeout must be 1..600");
    expect_error("fence_timeout = 2.5\n", "fence_timeout must be 1..600");
    expect_error("fence_monitor_interval = -1\n", "fence_monitor_interval must be 0..86400");
    expect_error("fence_monitor_interval = 86401\n", "fence_monitor_interval must be 0..86400");
    expect_error("fence_monitor_interval = 1m\n", "fence_monitor_interval must be 0..86400");
    expect_error("fence_agent_dir = sbin\n", "'fence_agent_dir' must be an absolute path");
    expect_error("watchdog = watchdog\n", "'watchdog' must be an absolute path");
    expect_error("watchdog_timeout = 0\n", "watchdog_timeout must be 1..600 (whole seconds");
    expect_error("watchdog_timeout = 1.5\n", "watchdog_timeout must be 1..600");
}

/* Every bound is an error naming it, on the line that crosses it. */
static void bounds(void **state)
{
    (void)state;
    char *text = malloc(64 * 1024);
    assert_non_null(text);
    size_t n = 0;
    for (int i = 0; i <= FENCE_DEVICES_MAX; i++)
        n += (size_t)sprintf(text + n, "fence_device = d%d fence_x ip=%d\n", i, i);
    char needle[64];
    snprintf(needle, sizeof(needle), "line %d: more than %d fence_device lines",
             FENCE_DEVICES_MAX + 1, FENCE_DEVICES_MAX);
    expect_error(text, needle);

    n = (size_t)sprintf(text, "fence_device = d fence_x");
    for (int i = 0; i <= FENCE_DEVICE_ARGS_MAX; i++)
        n += (size_t)sprintf(text + n, " k%c=%d", 'a' + i, i);
    expect_error(text, "more than 16 arguments");

    n = (size_t)sprintf(text, "fence_device = d fence_x k=");
    memset(text + n, 'v', FENCE_ARG_LEN_MAX);
    text[n + FENCE_ARG_LEN_MAX] = '\0';
    expect_error(text, "argument 'k=...' is 257 bytes long; at most 255");

    /* Under every per-argument bound, over the device's total. */
    n = (size_t)sprintf(text, "fence_device = d fence_x");
    for (int i = 0; i < 7; i++) {
        n += (size_t)sprintf(text + n, " k%c=", 'a' + i);
        memset(text + n, 'v', 240);
        n += 240;
    }
    text[n] = '\0';
    expect_error(text, "its arguments are longer than 1535 bytes together");

    n = (size_t)sprintf(text, "fence_level = h1 1 ");
    for (int i = 0; i <= FENCE_LEVEL_DEVICES_MAX; i++)
        n += (size_t)sprintf(text + n, "%sd%d", i ? "," : "", i);
    expect_error(text, "more than 8 devices");

    n = (size_t)sprintf(text, "fence_device = d fence_x ip=1\n");
    for (int i = 0; i <= FENCE_LEVELS_MAX; i++)
        n += (size_t)sprintf(text + n, "fence_level = h%d 1 d\n", i);
    snprintf(needle, sizeof(needle), "line %d: more than %d fence_level lines",
             FENCE_LEVELS_MAX + 2, FENCE_LEVELS_MAX);
    expect_error(text, needle);

    n = (size_t)sprintf(text, "fence_device = ");
    memset(text + n, 'd', FENCE_NAME_MAX);
    text[n + FENCE_NAME_MAX] = '\0';
    strcat(text, " fence_x");
    expect_error(text, "is not valid (letters, digits, '.', '_', '-'; at most 63)");
    free(text);
}

/* What ternd checks at start: the agents are there and executable. */
static int make_dir(void **state)
{
    *state = test_make_tmpdir("fence-config");
    return *state ? 0 : -1;
}

static int remove_dir(void **state)
{
    test_rmtree(*state);
    free(*state);
    return 0;
}

static void check_agents(void **state)
{
    const char *dir = *state;
    char path[512], text[1024];
    snprintf(path, sizeof(path), "%s/fence_here", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0755);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "#!/bin/sh\nexit 0\n", 17), 17);
    close(fd);
    snprintf(path, sizeof(path), "%s/fence_noexec", dir);
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    close(fd);

    struct fence_config *c = malloc(sizeof(*c));
    assert_non_null(c);
    struct tern_err err;
    snprintf(text, sizeof(text), "fence_agent_dir = %s\nfence_device = a fence_here ip=1\n", dir);
    assert_int_equal(parse(c, text, &err), 0);
    assert_int_equal(fence_config_check(c, &err), 0);

    snprintf(text, sizeof(text),
             "fence_agent_dir = %s\nfence_device = a fence_here ip=1\n"
             "fence_device = b fence_nothere ip=1\n",
             dir);
    assert_int_equal(parse(c, text, &err), 0);
    assert_int_equal(fence_config_check(c, &err), -1);
    snprintf(path, sizeof(path), "line 3: fence_device b: agent %s/fence_nothere", dir);
    if (!strstr(err.msg, path) || !strstr(err.msg, "No such file"))
        fail_msg("%s", err.msg);

    snprintf(text, sizeof(text), "fence_agent_dir = %s\nfence_device = a fence_noexec ip=1\n",
             dir);
    assert_int_equal(parse(c, text, &err), 0);
    assert_int_equal(fence_config_check(c, &err), -1);
    assert_non_null(strstr(err.msg, "is not an executable file"));

    /* The watchdog must be a device (or a stand-in's FIFO). */
    snprintf(text, sizeof(text), "watchdog = %s/fence_here\n", dir);
    assert_int_equal(parse(c, text, &err), 0);
    assert_int_equal(fence_config_check(c, &err), -1);
    assert_non_null(strstr(err.msg, "is not a device"));
    snprintf(text, sizeof(text), "watchdog = %s/none\n", dir);
    assert_int_equal(parse(c, text, &err), 0);
    assert_int_equal(fence_config_check(c, &err), -1);
    assert_non_null(strstr(err.msg, "load a watchdog driver"));
    snprintf(path, sizeof(path), "%s/wd", dir);
    assert_int_equal(mkfifo(path, 0600), 0);
    snprintf(text, sizeof(text), "watchdog = %s\n", path);
    assert_int_equal(parse(c, text, &err), 0);
    assert_int_equal(fence_config_check(c, &err), 0);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_example), cmocka_unit_test(defaults),
        cmocka_unit_test(device_errors),  cmocka_unit_test(level_errors),
        cmocka_unit_test(other_keys),     cmocka_unit_test(bounds),
        cmocka_unit_test_setup_teardown(check_agents, make_dir, remove_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
