/* ternctl's output: tables from a recorded status reply (alignment,
 * truncation, empty lists), vm show, units, progress lines (ETA), the
 * live/plain/JSON progress display and migration summaries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cli/cli.h"

/* A status reply as ternd sends it (docs/agent-api.md), with a long VM
 * name, a long multi-line detail, an IPv6 address and a migration. */
static const char status_reply[] =
    "{\"cluster\":{\"local_host\":\"host-a\",\"nodeid\":1,\"quorate\":true,\"synced\":true,"
    "\"members\":3,\"version\":42},"
    "\"hosts\":["
    "{\"name\":\"host-a\",\"nodeid\":1,\"online\":true,\"mode\":\"active\",\"mem_mib\":4096,"
    "\"vcpus\":4,\"free_mem_mib\":2560,\"free_vcpus\":1,\"vms\":2,\"migration_addr\":\"10.77.0.2\"},"
    "{\"name\":\"host-b\",\"nodeid\":2,\"online\":true,\"mode\":\"maintenance\",\"mem_mib\":16384,"
    "\"vcpus\":16,\"free_mem_mib\":16384,\"free_vcpus\":16,\"vms\":0,\"migration_addr\":\"10.77.0.3\"},"
    "{\"name\":\"host-c\",\"nodeid\":3,\"online\":false,\"mode\":\"active\",\"mem_mib\":1536,"
    "\"vcpus\":2,\"free_mem_mib\":1536,\"free_vcpus\":2,\"vms\":0,\"migration_addr\":\"fd00::1234\"}],"
    "\"vms\":["
    "{\"name\":\"web1\",\"owner\":\"host-a\",\"desired\":\"running\",\"state\":\"running\","
    "\"detail\":\"\",\"ha\":true,\"priority\":5,\"config\":{\"kernel\":\"/srv/k/vmlinux\","
    "\"initrd\":\"\",\"cmdline\":\"console=ttyS0\",\"mem_mib\":1024,\"vcpus\":2,"
    "\"disks\":[{\"path\":\"/srv/web1.img\",\"ro\":false},{\"path\":\"/srv/iso.img\",\"ro\":true}]},"
    "\"migration_id\":0,\"last_migration\":{\"id\":4,\"vm\":\"web1\",\"from\":\"host-b\","
    "\"to\":\"host-a\",\"outcome\":\"succeeded\",\"reason\":\"\",\"total_s\":2.31,\"pause_ms\":12.04,"
    "\"guest_pause_ms\":14.2,\"rounds\":5,\"bytes_sent\":1203000000}},"
    "{\"name\":\"db-with-a-really-long-name-that-goes-on-and-on\",\"owner\":\"host-a\","
    "\"desired\":\"running\",\"state\":\"migrating\",\"detail\":\"\",\"ha\":false,\"priority\":0,"
    "\"config\":{\"kernel\":\"/k\",\"initrd\":\"\",\"cmdline\":\"\",\"mem_mib\":512,\"vcpus\":1,"
    "\"disks\":[]},\"migration_id\":7,\"last_migration\":null},"
    "{\"name\":\"batch\",\"owner\":\"\",\"desired\":\"running\",\"state\":\"crashed\","
    "\"detail\":\"tern-vmm exited with status 71:\\nguest touched port 0x1234; see vmm.log for "
    "the register dump\",\"ha\":false,\"priority\":0,\"config\":{\"kernel\":\"/k\",\"initrd\":\"\","
    "\"cmdline\":\"\",\"mem_mib\":2048,\"vcpus\":3,\"disks\":[]},\"migration_id\":0,"
    "\"last_migration\":null}],"
    "\"migrations\":[{\"id\":7,\"vm\":\"db-with-a-really-long-name-that-goes-on-and-on\","
    "\"from\":\"host-a\",\"to\":\"host-b\",\"phase\":\"listening\",\"downtime_ms\":50,"
    "\"progress\":{\"id\":7,\"phase\":\"round\",\"round\":3,\"bytes_sent\":734003200,"
    "\"bytes_remaining\":52428800,\"dirty_MBps\":95.5,\"bandwidth_MBps\":1100.0,"
    "\"predicted_pause_ms\":47.7,\"elapsed_s\":0.9}}]}";

static const char status_text[] =
    "cluster: local host host-a (node 1), quorate: yes, members: 3, version: 42\n"
    "\n"
    "HOSTS\n"
    "NAME    STATE    MODE         VMS  MEM(free/total)  VCPUS(free/total)  ADDR        FENCE\n"
    "host-a  online   active         2          2.5G/4G                1/4  10.77.0.2   -\n"
    "host-b  online   maintenance    0          16G/16G              16/16  10.77.0.3   -\n"
    "host-c  offline  active         0        1.5G/1.5G                2/2  fd00::1234  -\n"
    "\n"
    "VMS\n"
    "NAME                              STATE      OWNER    MEM  VCPUS  HA   DETAIL\n"
    "web1                              running    host-a    1G      2  yes  -\n"
    "db-with-a-really-long-name-th...  migrating  host-a  512M      1  no   migration #7\n"
    "batch                             crashed    -         2G      3  no   tern-vmm exited with status 71: guest touched...\n"
    "\n"
    "MIGRATIONS\n"
    "ID  VM                                FROM    TO      PHASE      PROGRESS\n"
    " 7  db-with-a-really-long-name-th...  host-a  host-b  listening  round 3: sent 734.0 MB, left 52.4 MB, 1100 MB/s, dirty 96 MB/s, pause...\n";

typedef void (*render_fn)(FILE *out, const json_t *j);

static char *render(render_fn fn, const json_t *j)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    fn(f, j);
    fclose(f);
    return buf;
}

static void expect_text(const char *got, const char *want)
{
    if (strcmp(got, want))
        fail_msg("got:\n%s\nwanted:\n%s", got, want);
}

static void test_status_table(void **state)
{
    (void)state;
    json_t *j = json_loads(status_reply, 0, NULL);
    assert_non_null(j);
    char *out = render(cli_render_status, j);
    /* The column layout is the point: padding, numbers right-aligned,
     * long names and details cut with "...", a newline in a detail made a
     * blank, "-" for empty cells, MIGRATIONS only when some are in flight. */
    expect_text(out, status_text);
    free(out);
    json_decref(j);
}

/* Hosts being fenced: the state column says where fencing stands, and a
 * line under the table says why their VMs wait. */
static void test_fencing_hosts(void **state)
{
    (void)state;
    json_t *j = json_loads(
        "[{\"name\":\"a\",\"online\":true,\"mode\":\"active\",\"fence\":{\"state\":\"none\","
        "\"check\":\"ok\",\"check_by\":\"f\",\"check_detail\":\"a-bmc: ok\"}},"
        "{\"name\":\"g\",\"online\":true,\"mode\":\"active\",\"fence\":{\"state\":\"none\","
        "\"check\":\"failing\",\"check_by\":\"a\",\"check_detail\":\"g-bmc: failed: "
        "\\u001b[2Jbad password\"}},"
        "{\"name\":\"b\",\"online\":false,\"lost\":true,\"mode\":\"active\","
        "\"fence\":{\"state\":\"failed\",\"attempts\":2,\"detail\":\"b-bmc: exit 1: Unable "
        "to connect\"}},"
        "{\"name\":\"c\",\"online\":false,\"lost\":true,\"mode\":\"active\","
        "\"fence\":{\"state\":\"fenced\",\"method\":\"device\",\"detail\":\"c-bmc off\"}},"
        "{\"name\":\"d\",\"online\":false,\"lost\":true,\"mode\":\"active\","
        "\"fence\":{\"state\":\"pending\",\"detail\":\"its node left\"}},"
        "{\"name\":\"e\",\"online\":false,\"lost\":true,\"mode\":\"active\"}]",
        0, NULL);
    assert_non_null(j);
    char *out = render(cli_render_hosts, j);
    if (!strstr(out, "\nb     fence-failed"))
        fail_msg("got:\n%s", out);
    assert_non_null(strstr(out, "\nc     fenced"));
    assert_non_null(strstr(out, "\nd     fencing"));
    assert_non_null(strstr(out, "\ne     lost"));
    assert_non_null(strstr(out, "b: fencing failed 2 times, retried; its VMs wait: b-bmc: exit 1"));
    assert_non_null(strstr(out, "c: fenced (device): c-bmc off"));
    assert_non_null(strstr(out, "d: being fenced; its VMs wait: its node left"));
    assert_null(strstr(out, "a: "));
    /* Device checks: a column, and a failing one said in full, escaped. */
    assert_non_null(strstr(out, "FENCE"));
    assert_non_null(strstr(out, "g: fence devices failing their check (by a): g-bmc: failed: "
                                "\\x1b[2Jbad password\n"));
    assert_null(strchr(out, '\x1b'));
    free(out);
    json_decref(j);
}

static void test_empty_and_partial(void **state)
{
    (void)state;
    json_t *j = json_loads("{\"cluster\":{\"local_host\":\"h\",\"nodeid\":1,\"quorate\":false,"
                           "\"synced\":false,\"members\":1,\"version\":0},\"hosts\":[],\"vms\":[],"
                           "\"migrations\":[]}",
                           0, NULL);
    char *out = render(cli_render_status, j);
    expect_text(out, "cluster: local host h (node 1), quorate: no, members: 1, version: 0, not yet synced\n"
                     "\nHOSTS\n(no hosts)\n\nVMS\n(no VMs)\n");
    free(out);
    json_decref(j);

    /* Missing fields print as "?", never crash. */
    j = json_loads("{\"hosts\":[{\"name\":\"x\"}],\"vms\":[{}]}", 0, NULL);
    out = render(cli_render_status, j);
    expect_text(out, "cluster: local host ? (node ?), quorate: ?, members: ?, version: ?\n\n"
                     "HOSTS\n"
                     "NAME  STATE  MODE  VMS  MEM(free/total)  VCPUS(free/total)  ADDR  FENCE\n"
                     "x     ?      ?       ?              ?/?                ?/?  -     -\n"
                     "\nVMS\n"
                     "NAME  STATE  OWNER  MEM  VCPUS  HA  DETAIL\n"
                     "?     ?      -        ?      ?  ?   -\n");
    free(out);
    json_decref(j);

    out = render(cli_render_migrations, NULL);
    expect_text(out, "(no migrations in flight)\n");
    free(out);
}

static void test_truncate(void **state)
{
    (void)state;
    char buf[64];
    cli_truncate(buf, sizeof(buf), "abcdefghij", 10);
    assert_string_equal(buf, "abcdefghij");
    cli_truncate(buf, sizeof(buf), "abcdefghijk", 10);
    assert_string_equal(buf, "abcdefg...");
    cli_truncate(buf, sizeof(buf), "abcdefghijk", 0);
    assert_string_equal(buf, "abcdefghijk");
    cli_truncate(buf, sizeof(buf), "abcdef", 3);
    assert_string_equal(buf, "abc"); /* too narrow for "..." */
    /* UTF-8: characters, not bytes, and never half a character. */
    cli_truncate(buf, sizeof(buf), "h\xc3\xa9h\xc3\xa9h\xc3\xa9", 6);
    assert_string_equal(buf, "h\xc3\xa9h\xc3\xa9h\xc3\xa9");
    cli_truncate(buf, sizeof(buf), "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 4);
    assert_string_equal(buf, "\xc3\xa9...");
    cli_truncate(buf, 4, "a\xc3\xa9\xc3\xa9", 0); /* 3 bytes of room: 'a' + one 2-byte char */
    assert_string_equal(buf, "a\xc3\xa9");
    cli_truncate(buf, 3, "a\xc3\xa9\xc3\xa9", 0); /* 2 bytes: the 2-byte char does not fit */
    assert_string_equal(buf, "a");
    /* Control characters would break the table. */
    cli_truncate(buf, sizeof(buf), "a\nb\tc\x1b[2J", 0);
    assert_string_equal(buf, "a b c [2J");
    cli_truncate(buf, sizeof(buf), NULL, 5);
    assert_string_equal(buf, "");
}

static void test_table(void **state)
{
    (void)state;
    static const struct cli_col cols[] = {{"NAME", 8, false}, {"N", 0, true}, {"LAST", 0, false}};
    struct cli_table *t = cli_table_new(cols, 3);
    assert_non_null(t);
    const char *r1[] = {"a", "1", "x"};
    const char *r2[] = {"a-very-long-name", "12345", NULL};
    const char *r3[] = {"\xc3\xa9t\xc3\xa9", "", "last"};
    assert_int_equal(cli_table_add(t, r1), 0);
    assert_int_equal(cli_table_add(t, r2), 0);
    assert_int_equal(cli_table_add(t, r3), 0);
    assert_int_equal(cli_table_rows(t), 3);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cli_table_print(t, f);
    fclose(f);
    expect_text(buf, "NAME          N  LAST\n"
                     "a             1  x\n"
                     "a-ver...  12345  -\n"
                     "\xc3\xa9t\xc3\xa9           -  last\n"); /* 3 characters wide, not 5 bytes */
    free(buf);
    cli_table_free(t);
}

static void test_format_mib(void **state)
{
    (void)state;
    static const struct {
        uint64_t mib;
        const char *s;
    } cases[] = {{1, "1M"}, {512, "512M"}, {1000, "1000M"}, {1024, "1G"}, {1536, "1.5G"},
                 {1100, "1.1G"}, {16384, "16G"}, {2097152, "2T"}, {3145728 + 524288, "3.5T"}};
    char buf[32];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cli_format_mib(buf, sizeof(buf), cases[i].mib);
        assert_string_equal(buf, cases[i].s);
    }
}

static void test_vm_show(void **state)
{
    (void)state;
    json_t *j = json_loads(status_reply, 0, NULL);
    json_t *vm = json_array_get(json_object_get(j, "vms"), 0);
    char *out = render(cli_render_vm, vm);
    expect_text(out, "name:           web1\n"
                     "state:          running (desired: running)\n"
                     "owner:          host-a\n"
                     "ha:             yes (priority 5)\n"
                     "detail:         -\n"
                     "kernel:         /srv/k/vmlinux\n"
                     "initrd:         -\n"
                     "cmdline:        console=ttyS0\n"
                     "memory:         1G\n"
                     "vcpus:          2\n"
                     "disk 0:         /srv/web1.img (read-write)\n"
                     "disk 1:         /srv/iso.img (read-only)\n"
                     "last migration: #4: migrated web1 from host-b to host-a in 2.3 s, pause 12.0 ms "
                     "(guest-observed 14.2 ms), 5 rounds, 1.20 GB sent\n");
    free(out);
    vm = json_array_get(json_object_get(j, "vms"), 1);
    out = render(cli_render_vm, vm);
    assert_non_null(strstr(out, "migration:      #7 in flight\n"));
    assert_non_null(strstr(out, "disks:          -\n"));
    assert_non_null(strstr(out, "last migration: -\n"));
    free(out);
    json_decref(j);
}

static void test_units(void **state)
{
    (void)state;
    char b[32];
    cli_format_bytes(b, sizeof(b), 0);
    assert_string_equal(b, "0 B");
    cli_format_bytes(b, sizeof(b), 999);
    assert_string_equal(b, "999 B");
    cli_format_bytes(b, sizeof(b), 1500);
    assert_string_equal(b, "1.5 kB");
    cli_format_bytes(b, sizeof(b), 64e6);
    assert_string_equal(b, "64.0 MB");
    cli_format_bytes(b, sizeof(b), 1.2e9);
    assert_string_equal(b, "1.20 GB");
    cli_format_bytes(b, sizeof(b), 3.5e12);
    assert_string_equal(b, "3.50 TB");
    cli_format_bytes(b, sizeof(b), -5);
    assert_string_equal(b, "0 B");
    cli_format_seconds(b, sizeof(b), 0.44);
    assert_string_equal(b, "0.4 s");
    cli_format_seconds(b, sizeof(b), 12.4);
    assert_string_equal(b, "12 s");
    cli_format_seconds(b, sizeof(b), 185);
    assert_string_equal(b, "3m05s");
    cli_format_seconds(b, sizeof(b), 7300);
    assert_string_equal(b, "2h02m");
}

static void expect_progress(const char *json, const char *want)
{
    json_t *j = json_loads(json, 0, NULL);
    assert_non_null(j);
    char buf[512];
    cli_format_progress(buf, sizeof(buf), j);
    if (strcmp(buf, want))
        fail_msg("%s\n gives '%s'\n wanted '%s'", json, buf, want);
    json_decref(j);
}

static void test_progress_line(void **state)
{
    (void)state;
    expect_progress("{\"phase\":\"round\",\"round\":3,\"bytes_sent\":734003200,\"bytes_remaining\":"
                    "2200000000,\"dirty_MBps\":95.5,\"bandwidth_MBps\":1100.0,\"predicted_pause_ms\":"
                    "2000.0}",
                    "round 3: sent 734.0 MB, left 2.20 GB, 1100 MB/s, dirty 96 MB/s, pause ~2000.0 ms, "
                    "ETA 2.0 s");
    /* ETA is remaining / bandwidth, bandwidth in 1e6 bytes/s. */
    expect_progress("{\"phase\":\"round\",\"round\":1,\"bytes_remaining\":66000000000,"
                    "\"bandwidth_MBps\":1100}",
                    "round 1: left 66.00 GB, 1100 MB/s, ETA 1m00s");
    expect_progress("{\"phase\":\"round\",\"round\":1,\"bytes_remaining\":1000,\"bandwidth_MBps\":0}",
                    "round 1: left 1.0 kB, 0 MB/s"); /* no bandwidth yet: no ETA */
    expect_progress("{\"phase\":\"connecting\",\"round\":0}", "connecting");
    expect_progress("{\"phase\":\"stop-and-copy\",\"round\":6,\"bytes_sent\":1000000}",
                    "stop-and-copy: sent 1.0 MB");
    expect_progress("{}", "working");
}

static void expect_evac(const char *json, const char *want)
{
    json_t *j = json_loads(json, 0, NULL);
    assert_non_null(j);
    char buf[512];
    cli_format_evacuation(buf, sizeof(buf), j);
    if (strcmp(buf, want))
        fail_msg("%s\n gives '%s'\n wanted '%s'", json, buf, want);
    json_decref(j);
}

static void test_evacuation_line(void **state)
{
    (void)state;
    expect_evac("{\"host\":\"a\",\"total\":3,\"done\":1,\"vm\":\"web2\",\"to\":\"b\",\"migration\":"
                "{\"phase\":\"round\",\"round\":2,\"bytes_sent\":5000000}}",
                "VM 2/3: web2 -> b: round 2: sent 5.0 MB");
    expect_evac("{\"host\":\"a\",\"total\":3,\"done\":3,\"vm\":\"web3\",\"to\":\"c\"}",
                "VM 3/3: web3 -> c");
    expect_evac("{\"host\":\"a\",\"total\":0,\"done\":0}", "evacuating a: 0/0 done");
}

static void expect_summary(const char *json, const char *want)
{
    json_t *j = json_loads(json, 0, NULL);
    assert_non_null(j);
    char buf[512];
    cli_format_migration_summary(buf, sizeof(buf), j);
    if (strcmp(buf, want))
        fail_msg("%s\n gives '%s'\n wanted '%s'", json, buf, want);
    json_decref(j);
}

static void test_summary(void **state)
{
    (void)state;
    expect_summary("{\"id\":9,\"vm\":\"web1\",\"from\":\"a\",\"to\":\"b\",\"outcome\":\"succeeded\","
                   "\"reason\":\"\",\"total_s\":3.42,\"pause_ms\":9.87,\"guest_pause_ms\":11.5,"
                   "\"rounds\":1,\"bytes_sent\":812000000}",
                   "migrated web1 from a to b in 3.4 s, pause 9.9 ms (guest-observed 11.5 ms), "
                   "1 round, 812.0 MB sent");
    expect_summary("{\"vm\":\"web1\",\"from\":\"a\",\"to\":\"b\",\"outcome\":\"succeeded\","
                   "\"total_s\":30,\"pause_ms\":20,\"rounds\":7}",
                   "migrated web1 from a to b in 30 s, pause 20.0 ms, 7 rounds");
    expect_summary("{\"vm\":\"web1\",\"from\":\"a\",\"to\":\"b\",\"outcome\":\"failed\","
                   "\"reason\":\"did not converge within 60 s\",\"total_s\":60.2}",
                   "migration of web1 from a to b failed after 1m00s: did not converge within 60 s");
    expect_summary("{\"vm\":\"web1\",\"from\":\"a\",\"to\":\"b\",\"outcome\":\"cancelled\"}",
                   "migration of web1 from a to b was cancelled: no reason given");
}

static char *progress_run(struct cli_progress *p, const char *const *events, const double *times,
                          size_t n)
{
    char *buf = NULL;
    size_t len = 0;
    p->out = open_memstream(&buf, &len);
    assert_non_null(p->out);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_loads(events[i], 0, NULL);
        assert_non_null(e);
        cli_progress_event(p, e, times[i]);
        json_decref(e);
    }
    cli_progress_end(p);
    fclose(p->out);
    return buf;
}

static const char *const mig_events[] = {
    "{\"vm\":\"w\",\"to\":\"b\",\"phase\":\"connecting\"}",
    "{\"vm\":\"w\",\"to\":\"b\",\"phase\":\"round\",\"round\":1,\"bytes_sent\":1000000}",
    "{\"vm\":\"w\",\"to\":\"b\",\"phase\":\"round\",\"round\":2,\"bytes_sent\":2000000}",
    "{\"vm\":\"w\",\"to\":\"b\",\"phase\":\"round\",\"round\":3,\"bytes_sent\":3000000}",
    "{\"vm\":\"w\",\"to\":\"b\",\"phase\":\"round\",\"round\":4,\"bytes_sent\":4000000}",
    "{\"vm\":\"w\",\"to\":\"b\",\"phase\":\"stop-and-copy\",\"round\":5,\"bytes_sent\":4500000}",
};
static const double mig_times[] = {0.0, 0.2, 0.5, 1.1, 1.3, 1.4};

static void test_progress_plain(void **state)
{
    (void)state;
    /* Not a terminal: the first line, each phase change, else one a second. */
    struct cli_progress p = {.tty = false};
    char *out = progress_run(&p, mig_events, mig_times, 6);
    expect_text(out, "w -> b: connecting\n"
                     "w -> b: round 1: sent 1.0 MB\n"
                     "w -> b: round 4: sent 4.0 MB\n" /* 1.1 s after round 1's line */
                     "w -> b: stop-and-copy: sent 4.5 MB\n");
    free(out);
}

static void test_progress_tty(void **state)
{
    (void)state;
    struct cli_progress p = {.tty = true, .cols = 20};
    char *out = progress_run(&p, mig_events, mig_times, 2);
    /* One line rewritten in place, cut to the terminal, cleared at the end. */
    expect_text(out, "\rw -> b: connecting\033[K"
                     "\rw -> b: round 1:...\033[K"
                     "\r\033[K");
    free(out);
}

static void test_progress_json(void **state)
{
    (void)state;
    struct cli_progress p = {.tty = true, .json = true};
    char *out = progress_run(&p, mig_events, mig_times, 3);
    /* Every event, as it came, one JSON line each. */
    char *save = NULL;
    int n = 0;
    for (char *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save), n++) {
        json_t *j = json_loads(l, 0, NULL);
        assert_non_null(j);
        json_t *want = json_loads(mig_events[n], 0, NULL);
        assert_true(json_equal(json_object_get(j, "progress"), want));
        json_decref(want);
        json_decref(j);
    }
    assert_int_equal(n, 3);
    free(out);
}

static void test_progress_evacuation(void **state)
{
    (void)state;
    static const char *const ev[] = {
        "{\"host\":\"a\",\"total\":2,\"done\":0,\"vm\":\"v1\",\"to\":\"b\"}",
        "{\"host\":\"a\",\"total\":2,\"done\":0,\"vm\":\"v1\",\"to\":\"b\",\"migration\":{\"phase\":\"round\",\"round\":1}}",
        "{\"host\":\"a\",\"total\":2,\"done\":0,\"vm\":\"v1\",\"to\":\"b\",\"migration\":{\"phase\":\"round\",\"round\":2}}",
        "{\"host\":\"a\",\"total\":2,\"done\":1,\"vm\":\"v1\",\"to\":\"b\"}",
        "{\"host\":\"a\",\"total\":2,\"done\":1,\"vm\":\"v2\",\"to\":\"c\"}",
    };
    static const double t[] = {0, 0.1, 0.2, 0.3, 0.4};
    struct cli_progress p = {.evacuation = true};
    char *out = progress_run(&p, ev, t, 5);
    expect_text(out, "VM 1/2: v1 -> b\n"
                     "VM 1/2: v1 -> b: round 1\n"
                     "VM 2/2: v1 -> b\n"
                     "VM 2/2: v2 -> c\n");
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_table),
        cmocka_unit_test(test_fencing_hosts),  cmocka_unit_test(test_empty_and_partial),
        cmocka_unit_test(test_truncate),      cmocka_unit_test(test_table),
        cmocka_unit_test(test_format_mib),    cmocka_unit_test(test_vm_show),
        cmocka_unit_test(test_units),         cmocka_unit_test(test_progress_line),
        cmocka_unit_test(test_evacuation_line), cmocka_unit_test(test_summary),
        cmocka_unit_test(test_progress_plain), cmocka_unit_test(test_progress_tty),
        cmocka_unit_test(test_progress_json), cmocka_unit_test(test_progress_evacuation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
