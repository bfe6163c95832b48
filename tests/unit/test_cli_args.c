/* ternctl's command line: every command parsed, sizes, bad input as usage
 * errors with a message, relative paths made absolute, and the request
 * JSON each command sends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cli/cli.h"
#include "common/api_limits.h"
#include "tests/support/proc.h"

#define MAXARGS 40

/* Splits `line` at '|' into argv (argv[0] = "ternctl") and parses it. */
static int parse(const char *line, const char *env, struct cli_args *a, struct tern_err *err)
{
    static char store[2048];
    static char *argv[MAXARGS];
    snprintf(store, sizeof(store), "%s", line);
    int argc = 0;
    argv[argc++] = "ternctl";
    if (store[0]) {
        for (char *tok = store, *next; tok; tok = next) {
            next = strchr(tok, '|');
            if (next)
                *next++ = '\0';
            assert_true(argc < MAXARGS - 1);
            argv[argc++] = tok;
        }
    }
    argv[argc] = NULL;
    memset(err, 0, sizeof(*err));
    return cli_parse_args(argc, argv, env, a, err);
}

static void parse_ok(const char *line, struct cli_args *a)
{
    struct tern_err err;
    if (parse(line, NULL, a, &err) != 0)
        fail_msg("'%s' was refused: %s", line, err.msg);
}

static void parse_bad(const char *line, const char *needle)
{
    struct cli_args a;
    struct tern_err err;
    if (parse(line, NULL, &a, &err) == 0)
        fail_msg("'%s' was accepted", line);
    if (!strstr(err.msg, needle))
        fail_msg("error for '%s' is '%s', lacks '%s'", line, err.msg, needle);
}

static void test_size(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        uint64_t mib;
    } good[] = {
        {"2048", 2048}, {"512M", 512}, {"512m", 512}, {"1G", 1024}, {"1g", 1024}, {"1GiB", 1024},
        {"1GB", 1024}, {"1.5G", 1536}, {"0.5G", 512}, {"524288K", 512}, {"2T", 2097152},
        {"1", 1}, {"16MiB", 16}, {"1.25G", 1280},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        uint64_t v = 0;
        struct tern_err err = {0};
        if (cli_parse_size_mib(good[i].in, &v, &err) != 0)
            fail_msg("'%s' refused: %s", good[i].in, err.msg);
        assert_int_equal(v, good[i].mib);
    }
    static const struct {
        const char *in, *needle;
    } bad[] = {
        {"", "empty size"}, {"G", "invalid size"}, {"-1G", "invalid size"}, {"1X", "suffix"},
        {"1Gx", "trailing"}, {"0", "zero"}, {"0M", "zero"}, {"100K", "whole number of MiB"},
        {"1.1M", "whole number of KiB"}, {"1..5G", "invalid size"}, {"1.0000001G", "decimals"},
        {"99999999999999999999999G", "too large"}, {"17592186044416T", "too large"},
        {" 1G", "invalid size"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 7;
        struct tern_err err = {0};
        if (cli_parse_size_mib(bad[i].in, &v, &err) == 0)
            fail_msg("'%s' accepted as %llu", bad[i].in, (unsigned long long)v);
        if (!strstr(err.msg, bad[i].needle))
            fail_msg("'%s': '%s' lacks '%s'", bad[i].in, err.msg, bad[i].needle);
        assert_int_equal(v, 7); /* untouched on error */
    }
}

static void test_globals(void **state)
{
    (void)state;
    struct cli_args a;
    struct tern_err err;
    parse_ok("status", &a);
    assert_int_equal(a.cmd, CLI_CMD_STATUS);
    assert_string_equal(a.socket, CLI_DEFAULT_SOCKET);
    assert_false(a.json);
    assert_int_equal(a.timeout_s, CLI_DEFAULT_TIMEOUT_S);

    assert_int_equal(parse("status", "/tmp/env.sock", &a, &err), 0);
    assert_string_equal(a.socket, "/tmp/env.sock");
    assert_int_equal(parse("--socket|/x.sock|status", "/tmp/env.sock", &a, &err), 0);
    assert_string_equal(a.socket, "/x.sock"); /* the option beats the environment */
    assert_int_equal(parse("status", "", &a, &err), 0);
    assert_string_equal(a.socket, CLI_DEFAULT_SOCKET);

    parse_ok("--socket=/s|--json|--timeout|5|vm|list", &a);
    assert_int_equal(a.cmd, CLI_CMD_VM_LIST);
    assert_string_equal(a.socket, "/s");
    assert_true(a.json);
    assert_int_equal(a.timeout_s, 5);
    /* Also accepted after the command. */
    parse_ok("vm|list|--json|--timeout=7", &a);
    assert_true(a.json);
    assert_int_equal(a.timeout_s, 7);

    parse_bad("", "no command");
    parse_bad("--json", "no command");
    parse_bad("--bogus|status", "unknown option '--bogus'");
    parse_bad("frobnicate", "unknown command 'frobnicate'");
    parse_bad("vm", "'vm' needs a subcommand: define, start, stop, undefine, show, list, migrate");
    parse_bad("vm|explode|x", "unknown command 'vm explode'");
    parse_bad("host", "needs a subcommand: list, evacuate, activate");
    parse_bad("--timeout|0|status", "--timeout must be 1..86400");
    parse_bad("--timeout|soon|status", "--timeout needs a whole number");
    parse_bad("--timeout", "--timeout needs a value");
    parse_bad("--socket||status", "--socket needs a path");
    parse_bad("--socket|/a|--socket|/b|status", "--socket given twice");
    parse_bad("--json=yes|status", "--json takes no value");
    char longsock[300] = "--socket|/";
    memset(longsock + 10, 'x', 200);
    strcpy(longsock + 210, "|status");
    parse_bad(longsock, "--socket needs a path of 1..107 bytes");
    parse_bad("status|extra", "status: unexpected argument 'extra'");
    parse_bad("status|--to|x", "status does not take option '--to'");

    /* Help wins, and knows the command when it can. */
    parse_ok("--help", &a);
    assert_true(a.help);
    assert_int_equal(a.cmd, CLI_CMD_NONE);
    parse_ok("vm|migrate|-h", &a);
    assert_true(a.help);
    assert_int_equal(a.cmd, CLI_CMD_VM_MIGRATE);
    parse_ok("vm|migrate|--bogus|--help", &a);
    assert_true(a.help);

    /* --version needs no command. */
    parse_ok("--version", &a);
    assert_true(a.version);
    assert_int_equal(a.cmd, CLI_CMD_NONE);
    parse_ok("status", &a);
    assert_false(a.version);
    parse_bad("--version=1", "--version takes no value");
}

static void test_vm_define(void **state)
{
    (void)state;
    struct cli_args a;
    parse_ok("vm|define|web1|--kernel|/k/vmlinux|--mem|1G|--vcpus|2|--initrd=/k/initrd|"
             "--disk|/d/a.img|--disk|/d/b.img,ro|--disk|/d/c,d.img,rw|--cmdline|console=ttyS0 quiet|"
             "--ha|--priority|-5",
             &a);
    assert_int_equal(a.cmd, CLI_CMD_VM_DEFINE);
    assert_string_equal(a.name, "web1");
    assert_string_equal(a.kernel, "/k/vmlinux");
    assert_string_equal(a.initrd, "/k/initrd");
    assert_int_equal(a.mem_mib, 1024);
    assert_int_equal(a.vcpus, 2);
    assert_int_equal(a.nr_disks, 3);
    assert_string_equal(a.disks[0].path, "/d/a.img");
    assert_false(a.disks[0].ro);
    assert_string_equal(a.disks[1].path, "/d/b.img");
    assert_true(a.disks[1].ro);
    assert_string_equal(a.disks[2].path, "/d/c,d.img"); /* only the last comma is the flag */
    assert_false(a.disks[2].ro);
    assert_string_equal(a.cmdline, "console=ttyS0 quiet");
    assert_true(a.ha);
    assert_int_equal(a.priority, -5);

    parse_bad("vm|define|web1|--mem|1G|--vcpus|2", "vm define needs --kernel");
    parse_bad("vm|define|web1|--kernel|/k|--vcpus|2", "vm define needs --mem");
    parse_bad("vm|define|web1|--kernel|/k|--mem|1G", "vm define needs --vcpus");
    parse_bad("vm|define|--kernel|/k|--mem|1G|--vcpus|1", "vm define needs a VM NAME");
    parse_bad("vm|define|web1|--kernel|/k|--mem|lots|--vcpus|1", "--mem: invalid size 'lots'");
    parse_bad("vm|define|web1|--kernel|/k|--mem|1G|--vcpus|0", "--vcpus must be 1..64, not 0");
    parse_bad("vm|define|web1|--kernel|/k|--mem|1G|--vcpus|65", "--vcpus must be 1..64");
    parse_bad("vm|define|web1|--kernel|/k|--mem|1G|--vcpus|2x", "--vcpus needs a whole number");
    parse_bad("vm|define|web1|--kernel|/k|--mem|1G|--mem|2G|--vcpus|1", "--mem given twice");
    parse_bad("vm|define|web1|--kernel|/k|--mem|1G|--vcpus|1|--disk|/a,rx", "only 'ro' or 'rw'");
    parse_bad("vm|define|web1|--kernel|/k|--mem|1G|--vcpus|1|--disk|/a|--disk|/b|--disk|/c|--disk|/d|"
              "--disk|/e",
              "at most 4 --disk");
    parse_bad("vm|define|web1|--kernel||--mem|1G|--vcpus|1", "--kernel needs a path");
    /* Control characters: what the cluster refuses, shown escaped. */
    parse_bad("vm|define|web1|--kernel|/k\nx|--mem|1G|--vcpus|1",
              "--kernel path '/k\\nx' holds a control character at byte 2");
    parse_bad("vm|define|web1|--kernel|/k|--initrd|/i\033[2J|--mem|1G|--vcpus|1",
              "--initrd path '/i\\x1b[2J' holds a control character");
    parse_bad("vm|define|web1|--kernel|/k|--mem|1G|--vcpus|1|--disk|/d\tx.img,ro",
              "--disk path '/d\\tx.img' holds a control character");
    parse_bad("vm|define|web1|--kernel|/k|--mem|1G|--vcpus|1|--ha=1", "--ha takes no value");
    parse_bad("vm|define|web/1|--kernel|/k|--mem|1G|--vcpus|1", "VM name 'web/1' may only hold");
    parse_bad("vm|define|web1|--kernel|/k|--mem|1G|--vcpus|1|--to|x", "vm define does not take option '--to'");
    parse_bad("vm|define|web1|--kernel|/k|--mem|1G|--vcpus|1|--priority|high", "--priority needs a whole number");
    parse_bad("vm|define|web1|web2|--kernel|/k|--mem|1G|--vcpus|1", "unexpected argument 'web2'");
    char longname[200] = "vm|show|";
    memset(longname + 8, 'n', 64);
    parse_bad(longname, "VM name must be 1..63 characters");
    char longpath[600] = "vm|define|w|--mem|1G|--vcpus|1|--kernel|/";
    memset(longpath + strlen(longpath), 'p', 300);
    parse_bad(longpath, "--kernel path is longer than 255 bytes");
}

static void test_other_commands(void **state)
{
    (void)state;
    struct cli_args a;
    parse_ok("vm|start|web1", &a);
    assert_int_equal(a.cmd, CLI_CMD_VM_START);
    assert_null(a.host);
    parse_ok("vm|start|web1|--host|host-b", &a);
    assert_string_equal(a.host, "host-b");
    parse_ok("vm|stop|web1", &a);
    assert_int_equal(a.cmd, CLI_CMD_VM_STOP);
    parse_ok("vm|undefine|web1", &a);
    assert_int_equal(a.cmd, CLI_CMD_VM_UNDEFINE);
    parse_ok("vm|show|web1", &a);
    assert_int_equal(a.cmd, CLI_CMD_VM_SHOW);
    parse_ok("vm|migrate|web1|--to|host-b|--downtime-ms|20|--no-wait", &a);
    assert_int_equal(a.cmd, CLI_CMD_VM_MIGRATE);
    assert_string_equal(a.host, "host-b");
    assert_int_equal(a.downtime_ms, 20);
    assert_true(a.no_wait);
    parse_ok("host|list", &a);
    assert_int_equal(a.cmd, CLI_CMD_HOST_LIST);
    parse_ok("host|evacuate|host-a|--parallel|3", &a);
    assert_int_equal(a.cmd, CLI_CMD_HOST_EVACUATE);
    assert_string_equal(a.name, "host-a");
    assert_int_equal(a.parallel, 3);
    assert_false(a.no_wait);
    parse_ok("host|activate|host-a", &a);
    assert_int_equal(a.cmd, CLI_CMD_HOST_ACTIVATE);
    parse_ok("cluster|init-ca|/etc/tern/ca", &a);
    assert_int_equal(a.cmd, CLI_CMD_CLUSTER_INIT_CA);
    assert_string_equal(a.name, "/etc/tern/ca");
    assert_false(a.force);
    assert_int_equal(a.days, CLI_DEFAULT_CA_DAYS);
    assert_string_equal(a.ca_name, CLI_DEFAULT_CA_NAME);
    parse_ok("cluster|init-ca|ca|--force|--name|prod-ca|--days|10", &a);
    assert_true(a.force);
    assert_string_equal(a.ca_name, "prod-ca");
    assert_int_equal(a.days, 10);
    parse_ok("cluster|issue-cert|ca|host-a", &a);
    assert_int_equal(a.cmd, CLI_CMD_CLUSTER_ISSUE_CERT);
    assert_string_equal(a.name, "ca");
    assert_string_equal(a.host, "host-a");
    assert_int_equal(a.days, CLI_DEFAULT_CERT_DAYS);
    /* "--" ends options: a name may then start with '-'. */
    parse_ok("vm|show|--|-odd", &a);
    assert_string_equal(a.name, "-odd");

    parse_bad("vm|start|web1|--host", "--host needs a value");
    parse_bad("vm|start|web1|--host|bad host", "--host name 'bad host' may only hold");
    parse_bad("vm|migrate|web1", "vm migrate needs --to HOST");
    parse_bad("vm|migrate|--to|b", "vm migrate needs a VM NAME");
    parse_bad("vm|migrate|web1|--to|b|--downtime-ms|0", "--downtime-ms must be 1..60000");
    parse_bad("vm|migrate|web1|--to|b|--parallel|2", "vm migrate does not take option '--parallel'");
    parse_bad("vm|list|web1", "unexpected argument 'web1'");
    parse_bad("host|evacuate", "host evacuate needs a HOST");
    parse_bad("host|evacuate|a|--parallel|0", "--parallel must be 1..16");
    parse_bad("host|evacuate|a|--no-wait=1", "--no-wait takes no value");
    parse_bad("host|activate|a|--force", "host activate does not take option '--force'");
    parse_bad("cluster|init-ca", "cluster init-ca needs a DIR");
    parse_bad("cluster|init-ca|ca|--days|0", "--days must be 1..36500");
    parse_bad("cluster|issue-cert|ca", "cluster issue-cert needs a HOST");
    parse_bad("cluster|issue-cert", "needs a DIR and a HOST");
    parse_bad("cluster|issue-cert|ca|../x", "issue-cert needs a host name, not '../x'");
    parse_bad("cluster|issue-cert|ca|h|--force", "cluster issue-cert does not take option '--force'");
}

static json_t *request_for(const char *line)
{
    struct cli_args a;
    parse_ok(line, &a);
    return cli_build_request(&a);
}

static void expect_request(const char *line, const char *expected)
{
    json_t *got = request_for(line);
    assert_non_null(got);
    json_t *want = json_loads(expected, 0, NULL);
    assert_non_null(want);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
        fail_msg("'%s' sends %s, expected %s", line, g, expected);
    }
    json_decref(got);
    json_decref(want);
}

static void test_requests(void **state)
{
    (void)state;
    expect_request("status", "{\"cmd\":\"status\"}");
    expect_request("vm|list", "{\"cmd\":\"vm.list\"}");
    expect_request("host|list", "{\"cmd\":\"host.list\"}");
    expect_request(
        "vm|define|web1|--kernel|/k/vmlinux|--mem|1.5G|--vcpus|2|--disk|/d/a.img|--disk|/d/b.img,ro|"
        "--cmdline|console=ttyS0|--ha|--priority|3",
        "{\"cmd\":\"vm.define\",\"name\":\"web1\",\"ha\":true,\"priority\":3,\"config\":"
        "{\"kernel\":\"/k/vmlinux\",\"initrd\":\"\",\"cmdline\":\"console=ttyS0\",\"mem_mib\":1536,"
        "\"vcpus\":2,\"disks\":[{\"path\":\"/d/a.img\",\"ro\":false},{\"path\":\"/d/b.img\",\"ro\":true}]}}");
    expect_request("vm|define|w|--kernel|/k|--mem|512|--vcpus|1|--initrd|/i",
                   "{\"cmd\":\"vm.define\",\"name\":\"w\",\"ha\":false,\"priority\":0,\"config\":"
                   "{\"kernel\":\"/k\",\"initrd\":\"/i\",\"cmdline\":\"\",\"mem_mib\":512,"
                   "\"vcpus\":1,\"disks\":[]}}");
    expect_request("vm|start|web1", "{\"cmd\":\"vm.start\",\"name\":\"web1\"}");
    expect_request("vm|start|web1|--host|b", "{\"cmd\":\"vm.start\",\"name\":\"web1\",\"host\":\"b\"}");
    expect_request("vm|stop|web1", "{\"cmd\":\"vm.stop\",\"name\":\"web1\"}");
    expect_request("vm|undefine|web1", "{\"cmd\":\"vm.undefine\",\"name\":\"web1\"}");
    expect_request("vm|show|web1", "{\"cmd\":\"vm.show\",\"name\":\"web1\"}");
    expect_request("vm|migrate|web1|--to|b",
                   "{\"cmd\":\"vm.migrate\",\"name\":\"web1\",\"to\":\"b\",\"wait\":true}");
    expect_request("vm|migrate|web1|--to|b|--downtime-ms|20|--no-wait",
                   "{\"cmd\":\"vm.migrate\",\"name\":\"web1\",\"to\":\"b\",\"downtime_ms\":20,"
                   "\"wait\":false}");
    expect_request("host|evacuate|a", "{\"cmd\":\"host.evacuate\",\"host\":\"a\",\"wait\":true}");
    expect_request("host|evacuate|a|--parallel|2|--no-wait",
                   "{\"cmd\":\"host.evacuate\",\"host\":\"a\",\"parallel\":2,\"wait\":false}");
    expect_request("host|activate|a", "{\"cmd\":\"host.activate\",\"host\":\"a\"}");
    expect_request("host|fence|a", "{\"cmd\":\"host.fence\",\"host\":\"a\"}");
    expect_request("host|confirm-fenced|a", "{\"cmd\":\"host.confirm_fenced\",\"host\":\"a\"}");
    assert_null(request_for("cluster|init-ca|dir"));
    assert_null(request_for("cluster|issue-cert|dir|h"));
}

static void test_resolve_paths(void **state)
{
    (void)state;
    char *dir = test_make_tmpdir("cli-args");
    assert_non_null(dir);
    char path[512], cwd[4096];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    const char *files[] = {"vmlinux", "initrd", "a.img"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fclose(f);
    }
    assert_int_equal(chdir(dir), 0);

    struct cli_args a;
    struct tern_err err = {0};
    parse_ok("vm|define|w|--kernel|vmlinux|--initrd|./initrd|--disk|a.img,ro|--disk|/elsewhere/b.img|"
             "--mem|1G|--vcpus|1",
             &a);
    assert_int_equal(cli_resolve_paths(&a, &err), 0);
    char want[600];
    snprintf(want, sizeof(want), "%s/vmlinux", dir);
    assert_string_equal(a.kernel, want);
    snprintf(want, sizeof(want), "%s/initrd", dir);
    assert_string_equal(a.initrd, want);
    snprintf(want, sizeof(want), "%s/a.img", dir);
    assert_string_equal(a.disks[0].path, want);
    assert_true(a.disks[0].ro);
    /* Absolute paths are left alone: they may be on storage only the hosts see. */
    assert_string_equal(a.disks[1].path, "/elsewhere/b.img");

    parse_ok("vm|define|w|--kernel|vmlinux|--disk|missing.img|--mem|1G|--vcpus|1", &a);
    assert_int_equal(cli_resolve_paths(&a, &err), -1);
    assert_string_equal(err.msg, "--disk missing.img: No such file or directory");
    parse_ok("vm|define|w|--kernel|nokernel|--mem|1G|--vcpus|1", &a);
    assert_int_equal(cli_resolve_paths(&a, &err), -1);
    assert_string_equal(err.msg, "--kernel nokernel: No such file or directory");

    assert_int_equal(chdir(cwd), 0);
    test_rmtree(dir);
    free(dir);
}

/* Whether ternctl accepts `line` (with %llu filled in by v). */
static bool cli_accepts(const char *fmt, long long v)
{
    char line[512];
    snprintf(line, sizeof(line), fmt, v);
    struct cli_args a;
    struct tern_err err;
    return parse(line, NULL, &a, &err) == 0;
}

/* Whether the cluster state accepts a configuration with this memory and
 * these vCPUs (what ternd's vm.define ends in). */
static bool state_accepts(long long mem_mib, long long vcpus)
{
    char text[256];
    snprintf(text, sizeof(text), "{\"kernel\":\"/k\",\"mem_mib\":%lld,\"vcpus\":%lld}", mem_mib,
             vcpus);
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    struct cl_vm_config cfg;
    struct tern_err err;
    bool ok = cl_vm_config_from_json(j, &cfg, &err) == 0;
    json_decref(j);
    return ok;
}

/* ternctl refuses exactly what the agent refuses: the ranges of
 * common/api_limits.h, at both edges, for every option that has one; for
 * memory and vCPUs the cluster state's own check agrees value by value. */
static void test_limits_match_agent(void **state)
{
    (void)state;
    static const struct {
        const char *fmt;
        long long min, max;
    } ranges[] = {
        {"vm|define|v|--kernel|/k|--mem|%lld|--vcpus|1", TERN_VM_MEM_MIN_MIB, TERN_VM_MEM_MAX_MIB},
        {"vm|define|v|--kernel|/k|--mem|1G|--vcpus|%lld", TERN_VM_VCPUS_MIN, TERN_VM_VCPUS_MAX},
        {"vm|define|v|--kernel|/k|--mem|1G|--vcpus|1|--priority|%lld", TERN_PRIORITY_MIN,
         TERN_PRIORITY_MAX},
        {"vm|migrate|v|--to|h|--downtime-ms|%lld", TERN_DOWNTIME_MS_MIN, TERN_DOWNTIME_MS_MAX},
        {"host|evacuate|h|--parallel|%lld", TERN_PARALLEL_MIN, TERN_PARALLEL_MAX},
    };
    for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
        const char *f = ranges[i].fmt;
        if (!cli_accepts(f, ranges[i].min) || !cli_accepts(f, ranges[i].max))
            fail_msg("'%s' refuses %lld or %lld, which the agent accepts", f, ranges[i].min,
                     ranges[i].max);
        if (cli_accepts(f, ranges[i].min - 1) || cli_accepts(f, ranges[i].max + 1))
            fail_msg("'%s' accepts %lld or %lld, which the agent refuses", f, ranges[i].min - 1,
                     ranges[i].max + 1);
    }
    /* The documented sizes: 1T is the most, 2T is refused, as are 15M. */
    struct cli_args a;
    parse_ok("vm|define|v|--kernel|/k|--mem|1T|--vcpus|1", &a);
    assert_int_equal(a.mem_mib, TERN_VM_MEM_MAX_MIB);
    parse_bad("vm|define|v|--kernel|/k|--mem|2T|--vcpus|1", "--mem must be 16M..1T, not 2T");
    parse_bad("vm|define|v|--kernel|/k|--mem|15M|--vcpus|1", "--mem must be 16M..1T, not 15M");
    parse_bad("host|evacuate|h|--parallel|17", "--parallel must be 1..16, not 17");
    /* Value by value against the cluster state, around every edge. */
    static const long long mems[] = {1, 15, 16, 17, 1024, 1048575, 1048576, 1048577, 2097152};
    for (size_t i = 0; i < sizeof(mems) / sizeof(mems[0]); i++)
        if (cli_accepts("vm|define|v|--kernel|/k|--mem|%lld|--vcpus|1", mems[i]) !=
            state_accepts(mems[i], 1))
            fail_msg("--mem %lld: ternctl and the cluster state disagree", mems[i]);
    for (long long v = 0; v <= 66; v++)
        if (cli_accepts("vm|define|v|--kernel|/k|--mem|64|--vcpus|%lld", v) != state_accepts(64, v))
            fail_msg("--vcpus %lld: ternctl and the cluster state disagree", v);
    /* Disks: as many as the state keeps. */
    char line[512] = "vm|define|v|--kernel|/k|--mem|64|--vcpus|1";
    for (int d = 0; d < TERN_VM_DISKS_MAX; d++)
        snprintf(line + strlen(line), sizeof(line) - strlen(line), "|--disk|/d%d", d);
    parse_ok(line, &a);
    assert_int_equal(a.nr_disks, CL_MAX_DISKS);
    strcat(line, "|--disk|/dx");
    parse_bad(line, "at most 4 --disk");
}

static void test_usage_text(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cli_usage(f, CLI_CMD_NONE);
    fclose(f);
    /* Every command and every exit code is in the help. */
    const char *needles[] = {
        "ternctl status", "vm define NAME", "vm migrate NAME --to HOST", "host evacuate HOST",
        "cluster init-ca DIR", "cluster issue-cert DIR HOST", "--socket PATH", "--json",
        "--timeout SEC", "--version", "$TERN_SOCKET", "  0  done", "  1  the agent refused", "  2  usage error",
        "  3  cannot reach ternd", "  4  partial failure",
    };
    for (size_t i = 0; i < sizeof(needles) / sizeof(needles[0]); i++)
        if (!strstr(buf, needles[i]))
            fail_msg("help lacks '%s'", needles[i]);
    free(buf);
    buf = NULL;
    f = open_memstream(&buf, &len);
    cli_usage(f, CLI_CMD_HOST_EVACUATE);
    fclose(f);
    assert_non_null(strstr(buf, "usage: ternctl [GLOBAL OPTIONS] host evacuate HOST [--parallel N]"));
    assert_null(strstr(buf, "vm define"));
    free(buf);
    assert_string_equal(cli_cmd_name(CLI_CMD_VM_MIGRATE), "vm migrate");
    assert_string_equal(cli_cmd_name(CLI_CMD_STATUS), "status");
    assert_true(cli_cmd_is_long(CLI_CMD_HOST_EVACUATE));
    assert_false(cli_cmd_is_long(CLI_CMD_VM_START));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size),           cmocka_unit_test(test_globals),
        cmocka_unit_test(test_vm_define),      cmocka_unit_test(test_other_commands),
        cmocka_unit_test(test_requests),       cmocka_unit_test(test_resolve_paths),
        cmocka_unit_test(test_usage_text),     cmocka_unit_test(test_limits_match_agent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
