/* The replicated cluster state (ha/cluster_state.h): every message type
 * applied and refused, capacity and placement, membership, JSON round
 * trips and persistence. A refusal must leave the state byte-for-byte as it
 * was, which expect_refused checks on every call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "ha/cluster_state.h"

#define CFG1G "{\"kernel\":\"/boot/k\",\"mem_mib\":1024,\"vcpus\":1}"

static char *dump(const struct cl_state *s)
{
    json_t *j = cl_state_to_json(s);
    assert_non_null(j);
    char *t = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(j);
    assert_non_null(t);
    return t;
}

static int apply_text(struct cl_state *s, uint32_t node, const char *text, struct tern_err *err)
{
    json_error_t jerr;
    json_t *m = json_loads(text, 0, &jerr);
    if (!m)
        fail_msg("test message does not parse: %s: %s", text, jerr.text);
    int rc = cl_state_apply(s, node, m, err);
    json_decref(m);
    return rc;
}

static void expect_ok_at(struct cl_state *s, uint32_t node, const char *text, int line)
{
    struct tern_err err = {0};
    uint64_t v = cl_state_version(s);
    if (apply_text(s, node, text, &err) != 0)
        fail_msg("line %d: %s refused: %s", line, text, err.msg);
    assert_int_equal(cl_state_version(s), v + 1);
}
#define expect_ok(s, node, text) expect_ok_at(s, node, text, __LINE__)

/* "[invalid]" and so on: the error's code, as the tests write it. */
static const char *code_tag(const struct tern_err *err)
{
    static char tag[32];
    snprintf(tag, sizeof(tag), "[%s]", tern_err_code_name(err->code));
    return tag;
}

static void expect_refused_at(struct cl_state *s, uint32_t node, const char *text,
                              const char *code, const char *needle, int line)
{
    struct tern_err err = {0};
    char *before = dump(s);
    if (apply_text(s, node, text, &err) != -1)
        fail_msg("line %d: %s was applied, expected %s", line, text, code);
    if (strcmp(code_tag(&err), code) != 0 || !strstr(err.msg, needle))
        fail_msg("line %d: error %s '%s' lacks '%s' ... '%s'", line, code_tag(&err), err.msg, code,
                 needle);
    char *after = dump(s);
    if (strcmp(before, after) != 0)
        fail_msg("line %d: refused %s changed the state", line, text);
    free(before);
    free(after);
}
#define expect_refused(s, node, text, code, needle)                                             \
    expect_refused_at(s, node, text, code, needle, __LINE__)

/* A configuration change with these members; those that left, left with
 * their process only (their node is still in corosync's membership). */
/* Each configuration comes with a new totem ring (its sequence number). */
static uint64_t last_ring;

static void set_members(struct cl_state *s, const uint32_t *members, size_t n)
{
    last_ring += 4;
    struct cl_config c = {.members = members, .nr_members = n, .ring_seq = last_ring};
    cl_state_apply_config(s, &c);
}

/* Announces with 3 expected votes (a three-node corosync cluster). */
static void announce(struct cl_state *s, uint32_t node, const char *name, unsigned mem,
                     unsigned vcpus)
{
    char m[256];
    snprintf(m, sizeof(m),
             "{\"type\":\"host_announce\",\"host\":\"%s\",\"mem_mib\":%u,\"vcpus\":%u,"
             "\"migration_addr\":\"10.77.0.%u\",\"expected_votes\":3}",
             name, mem, vcpus, node);
    expect_ok(s, node, m);
}

/* h1 (node 1, 8 GiB, 8 vCPUs), h2 (node 2, 4 GiB, 4), h3 (node 3, 16 GiB,
 * 16), all online. */
static struct cl_state *three_hosts(void)
{
    struct cl_state *s = cl_state_new();
    assert_non_null(s);
    announce(s, 1, "h1", 8192, 8);
    announce(s, 2, "h2", 4096, 4);
    announce(s, 3, "h3", 16384, 16);
    uint32_t members[] = {1, 2, 3};
    set_members(s, members, 3);
    return s;
}

static void define(struct cl_state *s, const char *name, unsigned mem, unsigned vcpus)
{
    char m[256];
    snprintf(m, sizeof(m),
             "{\"type\":\"vm_define\",\"name\":\"%s\",\"config\":{\"kernel\":\"/boot/k\","
             "\"mem_mib\":%u,\"vcpus\":%u}}",
             name, mem, vcpus);
    expect_ok(s, 1, m);
}

static void start_on(struct cl_state *s, const char *vm, const char *host)
{
    char m[256];
    snprintf(m, sizeof(m), "{\"type\":\"vm_start\",\"name\":\"%s\",\"host\":\"%s\"}", vm, host);
    expect_ok(s, 1, m);
}

/* The owner reports the VM running. */
static void report_running(struct cl_state *s, const char *vm)
{
    const struct cl_vm *v = cl_state_vm(s, vm);
    const struct cl_host *h = cl_state_host(s, v->owner);
    char m[256];
    snprintf(m, sizeof(m), "{\"type\":\"vm_report\",\"name\":\"%s\",\"run\":\"running\"}", vm);
    expect_ok(s, h->nodeid, m);
}

static void test_names(void **unused)
{
    (void)unused;
    assert_true(cl_name_valid("web1"));
    assert_true(cl_name_valid("a.b_c-d"));
    assert_true(cl_name_valid("9lives"));
    char longest[CL_NAME_MAX];
    memset(longest, 'x', CL_NAME_MAX - 1);
    longest[CL_NAME_MAX - 1] = '\0';
    assert_true(cl_name_valid(longest));
    char too_long[CL_NAME_MAX + 1];
    memset(too_long, 'x', CL_NAME_MAX);
    too_long[CL_NAME_MAX] = '\0';
    assert_false(cl_name_valid(too_long));
    assert_false(cl_name_valid(""));
    assert_false(cl_name_valid(NULL));
    assert_false(cl_name_valid("."));
    assert_false(cl_name_valid(".."));
    assert_false(cl_name_valid(".hidden"));
    assert_false(cl_name_valid("-rf"));
    assert_false(cl_name_valid("a/b"));
    assert_false(cl_name_valid("a b"));
    assert_false(cl_name_valid("caf\xc3\xa9"));
}

static void expect_config_error(const char *text, const char *needle)
{
    struct cl_vm_config cfg;
    struct tern_err err = {0};
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    if (cl_vm_config_from_json(j, &cfg, &err) != -1)
        fail_msg("config %s accepted", text);
    if (err.code != TERN_ERR_INVALID || !strstr(err.msg, needle))
        fail_msg("config error %s '%s' lacks [invalid] ... '%s'", code_tag(&err), err.msg, needle);
    json_decref(j);
}

static void test_config(void **unused)
{
    (void)unused;
    const char *full = "{\"kernel\":\"/k\",\"initrd\":\"/i\",\"cmdline\":\"console=ttyS0\","
                       "\"mem_mib\":2048,\"vcpus\":4,\"disks\":[{\"path\":\"/d0\",\"ro\":true},"
                       "{\"path\":\"/d1\"}]}";
    json_t *j = json_loads(full, 0, NULL);
    struct cl_vm_config cfg;
    struct tern_err err;
    assert_int_equal(cl_vm_config_from_json(j, &cfg, &err), 0);
    assert_string_equal(cfg.kernel, "/k");
    assert_string_equal(cfg.initrd, "/i");
    assert_string_equal(cfg.cmdline, "console=ttyS0");
    assert_int_equal(cfg.mem_mib, 2048);
    assert_int_equal(cfg.vcpus, 4);
    assert_int_equal(cfg.nr_disks, 2);
    assert_true(cfg.disks[0].ro);
    assert_false(cfg.disks[1].ro);
    json_t *back = cl_vm_config_to_json(&cfg);
    struct cl_vm_config cfg2;
    assert_int_equal(cl_vm_config_from_json(back, &cfg2, &err), 0);
    assert_memory_equal(&cfg, &cfg2, sizeof(cfg)); /* both zero-filled before parsing */
    json_decref(back);
    json_decref(j);

    j = json_loads("{\"kernel\":\"/k\",\"mem_mib\":16}", 0, NULL);
    assert_int_equal(cl_vm_config_from_json(j, &cfg, &err), 0);
    assert_string_equal(cfg.initrd, "");
    assert_int_equal(cfg.vcpus, 1);
    assert_int_equal(cfg.nr_disks, 0);
    json_decref(j);

    expect_config_error("[]", "must be an object");
    expect_config_error("{\"mem_mib\":64}", "\"kernel\" is missing");
    expect_config_error("{\"kernel\":\"k\",\"mem_mib\":64}", "absolute path");
    expect_config_error("{\"kernel\":\"/k\",\"initrd\":\"i\",\"mem_mib\":64}", "absolute path");
    expect_config_error("{\"kernel\":\"/k\"}", "\"mem_mib\" is missing");
    expect_config_error("{\"kernel\":\"/k\",\"mem_mib\":15}", "between 16 and 1048576");
    expect_config_error("{\"kernel\":\"/k\",\"mem_mib\":1048577}", "between 16");
    expect_config_error("{\"kernel\":\"/k\",\"mem_mib\":-1}", "between 16");
    expect_config_error("{\"kernel\":\"/k\",\"mem_mib\":64.0}", "must be an integer");
    expect_config_error("{\"kernel\":\"/k\",\"mem_mib\":64,\"vcpus\":0}", "between 1 and 64");
    expect_config_error("{\"kernel\":\"/k\",\"mem_mib\":64,\"vcpus\":65}", "between 1 and 64");
    expect_config_error("{\"kernel\":\"/k\",\"mem_mib\":64,\"memory\":1}", "unknown field");
    expect_config_error("{\"kernel\":\"/k\",\"mem_mib\":64,\"disks\":{}}", "must be an array");
    expect_config_error("{\"kernel\":\"/k\",\"mem_mib\":64,\"disks\":[{\"path\":\"/a\"},"
                        "{\"path\":\"/a\"},{\"path\":\"/a\"},{\"path\":\"/a\"},{\"path\":\"/a\"}]}",
                        "at most 4 disks");
    expect_config_error("{\"kernel\":\"/k\",\"mem_mib\":64,\"disks\":[{\"path\":\"rel\"}]}",
                        "disks[0]");
    expect_config_error("{\"kernel\":\"/k\",\"mem_mib\":64,\"disks\":[{\"path\":\"/a\","
                        "\"ro\":1}]}",
                        "true or false");
    expect_config_error("{\"kernel\":\"/k\",\"mem_mib\":64,\"disks\":[7]}", "must be an object");
    expect_config_error("{\"kernel\":\"/k\",\"mem_mib\":64,\"cmdline\":5}", "must be a string");
    char big[2048];
    snprintf(big, sizeof(big), "{\"kernel\":\"/%0300d\",\"mem_mib\":64}", 0);
    expect_config_error(big, "too long");
    /* An embedded NUL would cut the path short on the host that runs it. */
    const char *nul = "{\"kernel\":\"/k\\u0000x\",\"mem_mib\":64}";
    j = json_loadb(nul, strlen(nul), JSON_ALLOW_NUL, NULL);
    assert_non_null(j);
    assert_int_equal(cl_vm_config_from_json(j, &cfg, &err), -1);
    assert_non_null(strstr(err.msg, "NUL"));
    json_decref(j);
}

/* Paths with control characters can never be shown or logged safely:
 * refused where a VM is defined. Commas are ordinary characters. A state
 * document that holds such a path (saved before this check) still loads. */
static void test_config_control_characters(void **unused)
{
    (void)unused;
    expect_config_error("{\"kernel\":\"/k\\nternd: 00:00:00.000 forged\",\"mem_mib\":64}",
                        "\"kernel\" holds a control character at byte 2");
    expect_config_error("{\"kernel\":\"/k\",\"initrd\":\"/i\\u001b[2J\",\"mem_mib\":64}",
                        "\"initrd\" holds a control character");
    expect_config_error("{\"kernel\":\"/k\",\"mem_mib\":64,\"disks\":[{\"path\":\"/d\\tx\"}]}",
                        "disks[0]: \"path\" holds a control character");
    expect_config_error("{\"kernel\":\"/k\",\"mem_mib\":64,\"disks\":[{\"path\":\"/d\\u007f\"}]}",
                        "control character");
    expect_config_error("{\"kernel\":\"/k\",\"mem_mib\":64,\"disks\":[{\"path\":\"/a\"},"
                        "{\"path\":\"/d\\u009b2J\"}]}",
                        "disks[1]: \"path\" holds a control character at byte 2");
    /* The message shows the path escaped, never raw. */
    struct cl_vm_config cfg;
    struct tern_err err = {0};
    json_t *j = json_loads("{\"kernel\":\"/k\\u001b]0;pwned\\u0007\",\"mem_mib\":64}", 0, NULL);
    assert_int_equal(cl_vm_config_from_json(j, &cfg, &err), -1);
    assert_non_null(strstr(err.msg, "'/k\\x1b]0;pwned\\x07'"));
    assert_null(strchr(err.msg, '\033'));
    json_decref(j);
    /* Commas, spaces and UTF-8 are fine. */
    j = json_loads("{\"kernel\":\"/k\",\"mem_mib\":64,\"disks\":[{\"path\":\"/x/a,b.img\"},"
                   "{\"path\":\"/x/y.img,ro\"},{\"path\":\"/x/caf\\u00e9 1.img\",\"ro\":true}]}",
                   0, NULL);
    assert_int_equal(cl_vm_config_from_json(j, &cfg, &err), 0);
    assert_string_equal(cfg.disks[0].path, "/x/a,b.img");
    assert_string_equal(cfg.disks[1].path, "/x/y.img,ro");
    assert_false(cfg.disks[1].ro);
    json_decref(j);

    /* Through the state: refused, and nothing changes. */
    struct cl_state *s = three_hosts();
    expect_refused(s, 1, "{\"type\":\"vm_define\",\"name\":\"v\",\"config\":{\"kernel\":\"/k\","
                         "\"mem_mib\":64,\"disks\":[{\"path\":\"/d\\n\"}]}}",
                   "[invalid]", "control character");
    /* A document from before keeps its VM. */
    define(s, "old", 64, 1);
    json_t *doc = cl_state_to_json(s);
    json_t *vm = json_array_get(json_object_get(doc, "vms"), 0);
    json_object_set_new(json_object_get(vm, "config"), "kernel", json_string("/boot/k\nx"));
    struct cl_state *t = cl_state_new();
    if (cl_state_from_json(t, doc, &err) != 0)
        fail_msg("a stored path with a newline made the document unreadable: %s", err.msg);
    assert_string_equal(cl_state_vm(t, "old")->cfg.kernel, "/boot/k\nx");
    json_decref(doc);
    cl_state_free(t);
    cl_state_free(s);
}

static void test_malformed_messages(void **unused)
{
    (void)unused;
    struct cl_state *s = three_hosts();
    expect_refused(s, 1, "{\"type\":\"vm_explode\"}", "[invalid]", "unknown cluster message");
    expect_refused(s, 1, "{\"name\":\"x\"}", "[invalid]", "\"type\" is missing");
    expect_refused(s, 1, "{\"type\":7}", "[invalid]", "must be a string");
    expect_refused(s, 1, "[1]", "[invalid]", "must be a JSON object");
    expect_refused(s, 1, "{\"type\":\"vm_define\",\"name\":\"a\",\"config\":" CFG1G
                         ",\"origin\":{\"node\":\"x\"}}",
                   "[invalid]", "origin");
    expect_refused(s, 1, "{\"type\":\"vm_define\",\"name\":7,\"config\":" CFG1G "}", "[invalid]",
                   "\"name\" must be a string");
    struct tern_err err;
    assert_int_equal(cl_state_apply(s, 1, NULL, &err), -1);
    cl_state_free(s);
}

static void test_host_announce(void **unused)
{
    (void)unused;
    struct cl_state *s = three_hosts();
    assert_int_equal(cl_state_nr_hosts(s), 3);
    const struct cl_host *h = cl_state_host(s, "h2");
    assert_non_null(h);
    assert_int_equal(h->nodeid, 2);
    assert_int_equal(h->mem_mib, 4096);
    assert_int_equal(h->vcpus, 4);
    assert_string_equal(h->migration_addr, "10.77.0.2");
    assert_true(h->online);
    assert_int_equal(h->mode, CL_HOST_ACTIVE);
    assert_ptr_equal(cl_state_host_by_nodeid(s, 2), h);
    assert_null(cl_state_host_by_nodeid(s, 9));
    assert_null(cl_state_host_by_nodeid(s, 0));
    assert_null(cl_state_host(s, "h9"));

    /* Sorted by name whatever the order of arrival. */
    announce(s, 4, "a0", 1024, 1);
    assert_string_equal(cl_state_host_at(s, 0)->name, "a0");
    assert_string_equal(cl_state_host_at(s, 3)->name, "h3");
    assert_null(cl_state_host_at(s, 4));

    /* Re-announcing updates capacity and address and keeps the mode. */
    expect_ok(s, 2, "{\"type\":\"host_mode\",\"host\":\"h2\",\"mode\":\"maintenance\"}");
    expect_ok(s, 2,
              "{\"type\":\"host_announce\",\"host\":\"h2\",\"mem_mib\":2048,\"vcpus\":2,"
              "\"migration_addr\":\"fd00::2\"}");
    h = cl_state_host(s, "h2");
    assert_int_equal(h->mem_mib, 2048);
    assert_string_equal(h->migration_addr, "fd00::2");
    assert_int_equal(h->mode, CL_HOST_MAINTENANCE);

    const char *fmt = "{\"type\":\"host_announce\",\"host\":\"%s\",\"mem_mib\":%s,\"vcpus\":1,"
                      "\"migration_addr\":\"%s\"}";
    char m[256];
    snprintf(m, sizeof(m), fmt, "h1", "1024", "10.0.0.9");
    expect_refused(s, 9, m, "[conflict]", "belongs to node 1 (online)");
    snprintf(m, sizeof(m), fmt, "bad/name", "1024", "10.0.0.9");
    expect_refused(s, 9, m, "[invalid]", "not a valid name");
    snprintf(m, sizeof(m), fmt, "h9", "1024", "10.0.0.256");
    expect_refused(s, 9, m, "[invalid]", "not an IPv4 or IPv6");
    snprintf(m, sizeof(m), fmt, "h9", "1024", "");
    expect_refused(s, 9, m, "[invalid]", "migration_addr");
    snprintf(m, sizeof(m), fmt, "h9", "-5", "10.0.0.9");
    expect_refused(s, 9, m, "[invalid]", "mem_mib");
    snprintf(m, sizeof(m), fmt, "h9", "1024", "10.0.0.9");
    expect_refused(s, 0, m, "[invalid]", "node id 0");
    expect_refused(s, 9, "{\"type\":\"host_announce\",\"host\":\"h9\",\"mem_mib\":1}",
                   "[invalid]", "\"vcpus\" is missing");

    /* A host that went offline keeps its name (it may come back, and its
     * VMs may still run there) until the operator removes it; then a new
     * node (reinstalled) may take it. */
    uint32_t without3[] = {1, 2, 4};
    set_members(s, without3, 3);
    assert_false(cl_state_host(s, "h3")->online);
    snprintf(m, sizeof(m), fmt, "h3", "4096", "10.0.0.33");
    expect_refused(s, 33, m, "[conflict]", "belongs to node 3 (offline)");
    expect_refused(s, 1, "{\"type\":\"host_remove\",\"host\":\"h1\"}", "[conflict]",
                   "'h1' is online");
    expect_refused(s, 1, "{\"type\":\"host_remove\",\"host\":\"h7\"}", "[not_found]", "h7");
    expect_ok(s, 1, "{\"type\":\"host_remove\",\"host\":\"h3\"}");
    assert_null(cl_state_host(s, "h3"));
    expect_ok(s, 33, m);
    assert_int_equal(cl_state_host(s, "h3")->nodeid, 33);
    assert_false(cl_state_host(s, "h3")->online); /* node 33 is not a member yet */
    uint32_t with33[] = {1, 2, 4, 33};
    set_members(s, with33, 4);
    assert_true(cl_state_host(s, "h3")->online);

    /* A node renaming itself: allowed when its old host holds nothing... */
    snprintf(m, sizeof(m), fmt, "a1", "1024", "10.0.0.4");
    expect_ok(s, 4, m);
    assert_int_equal(cl_state_host(s, "a0")->nodeid, 0);
    assert_false(cl_state_host(s, "a0")->online);
    assert_ptr_equal(cl_state_host_by_nodeid(s, 4), cl_state_host(s, "a1"));
    /* ...refused while a VM still belongs to it. */
    define(s, "v1", 512, 1);
    start_on(s, "v1", "a1");
    snprintf(m, sizeof(m), fmt, "a2", "1024", "10.0.0.4");
    expect_refused(s, 4, m, "[conflict]", "still has VMs");
    cl_state_free(s);
}

static void test_host_mode(void **unused)
{
    (void)unused;
    struct cl_state *s = three_hosts();
    expect_ok(s, 3, "{\"type\":\"host_mode\",\"host\":\"h1\",\"mode\":\"maintenance\"}");
    assert_int_equal(cl_state_host(s, "h1")->mode, CL_HOST_MAINTENANCE);
    expect_ok(s, 3, "{\"type\":\"host_mode\",\"host\":\"h1\",\"mode\":\"active\"}");
    assert_int_equal(cl_state_host(s, "h1")->mode, CL_HOST_ACTIVE);
    expect_refused(s, 3, "{\"type\":\"host_mode\",\"host\":\"h7\",\"mode\":\"active\"}",
                   "[not_found]", "host 'h7'");
    expect_refused(s, 3, "{\"type\":\"host_mode\",\"host\":\"h1\",\"mode\":\"sleepy\"}",
                   "[invalid]", "unknown value 'sleepy'");
    expect_refused(s, 3, "{\"type\":\"host_mode\",\"host\":\"h1\"}", "[invalid]",
                   "\"mode\" is missing");
    cl_state_free(s);
}

static void test_vm_define_undefine(void **unused)
{
    (void)unused;
    struct cl_state *s = three_hosts();
    expect_ok(s, 2,
              "{\"type\":\"vm_define\",\"name\":\"web1\",\"config\":" CFG1G
              ",\"ha\":true,\"priority\":-3}");
    const struct cl_vm *vm = cl_state_vm(s, "web1");
    assert_non_null(vm);
    assert_true(vm->ha);
    assert_int_equal(vm->priority, -3);
    assert_int_equal(vm->desired, CL_VM_STOPPED);
    assert_int_equal(vm->run, CL_RUN_STOPPED);
    assert_string_equal(vm->owner, "");
    assert_int_equal(vm->cfg.mem_mib, 1024);
    assert_null(vm->last_migration);
    define(s, "db", 512, 1);
    assert_string_equal(cl_state_vm_at(s, 0)->name, "db");
    assert_string_equal(cl_state_vm_at(s, 1)->name, "web1");
    assert_int_equal(cl_state_nr_vms(s), 2);

    expect_refused(s, 2, "{\"type\":\"vm_define\",\"name\":\"web1\",\"config\":" CFG1G "}",
                   "[conflict]", "VM 'web1' is already defined");
    expect_refused(s, 2, "{\"type\":\"vm_define\",\"name\":\"../x\",\"config\":" CFG1G "}",
                   "[invalid]", "not a valid name");
    expect_refused(s, 2, "{\"type\":\"vm_define\",\"name\":\"x\",\"config\":{\"kernel\":\"/k\"}}",
                   "[invalid]", "mem_mib");
    expect_refused(s, 2, "{\"type\":\"vm_define\",\"name\":\"x\"}", "[invalid]",
                   "config must be an object");
    expect_refused(s, 2,
                   "{\"type\":\"vm_define\",\"name\":\"x\",\"config\":" CFG1G
                   ",\"priority\":3000000000}",
                   "[invalid]", "priority");
    expect_refused(s, 2, "{\"type\":\"vm_define\",\"name\":\"x\",\"config\":" CFG1G ",\"ha\":1}",
                   "[invalid]", "\"ha\"");

    expect_refused(s, 2, "{\"type\":\"vm_undefine\",\"name\":\"nope\"}", "[not_found]",
                   "VM 'nope' is not defined");
    start_on(s, "web1", "h1");
    expect_refused(s, 2, "{\"type\":\"vm_undefine\",\"name\":\"web1\"}", "[conflict]",
                   "meant to run");
    expect_ok(s, 2, "{\"type\":\"vm_stop\",\"name\":\"web1\"}");
    expect_refused(s, 2, "{\"type\":\"vm_undefine\",\"name\":\"web1\"}", "[conflict]",
                   "stopping on h1");
    expect_ok(s, 1, "{\"type\":\"vm_report\",\"name\":\"web1\",\"run\":\"stopped\"}");
    expect_ok(s, 2, "{\"type\":\"vm_undefine\",\"name\":\"web1\"}");
    assert_null(cl_state_vm(s, "web1"));
    assert_int_equal(cl_state_nr_vms(s), 1);
    /* A crashed VM that is not meant to run can go too. */
    start_on(s, "db", "h2");
    expect_ok(s, 2, "{\"type\":\"vm_report\",\"name\":\"db\",\"run\":\"crashed\"}");
    expect_ok(s, 2, "{\"type\":\"vm_stop\",\"name\":\"db\"}");
    expect_ok(s, 2, "{\"type\":\"vm_undefine\",\"name\":\"db\"}");
    assert_int_equal(cl_state_nr_vms(s), 0);
    cl_state_free(s);
}

static void define_disks(struct cl_state *s, const char *name, const char *disks, const char *code,
                         const char *needle)
{
    char m[512];
    snprintf(m, sizeof(m),
             "{\"type\":\"vm_define\",\"name\":\"%s\",\"config\":{\"kernel\":\"/boot/k\","
             "\"mem_mib\":64,\"disks\":[%s]}}",
             name, disks);
    if (code)
        expect_refused(s, 1, m, code, needle);
    else
        expect_ok(s, 1, m);
}

/* One disk image read-write in two VMs is refused at define and at start
 * (naming the other VM); images shared read-only are fine. */
static void test_shared_disks(void **unused)
{
    (void)unused;
    struct cl_state *s = three_hosts();
    define_disks(s, "a", "{\"path\":\"/s/a.img\"},{\"path\":\"/s/iso\",\"ro\":true}", NULL, NULL);
    define_disks(s, "b", "{\"path\":\"/s/a.img\"}", "[conflict]",
                 "cannot define VM 'b': disk /s/a.img is used read-write by VM 'a'");
    /* Reading an image another VM writes is refused too. */
    define_disks(s, "b", "{\"path\":\"/s/b.img\"},{\"path\":\"/s/a.img\",\"ro\":true}", "[conflict]",
                 "disk /s/a.img is used read-write by VM 'a'");
    define_disks(s, "c", "{\"path\":\"/s/iso\",\"ro\":true}", NULL, NULL);
    define_disks(s, "d", "{\"path\":\"/s/iso\"}", "[conflict]",
                 "disk /s/iso is used read-only by VM 'a'; two VMs may share an image only "
                 "read-only");
    /* Within one VM: twice read-only is fine, written through either is not. */
    define_disks(s, "e", "{\"path\":\"/s/e.img\"},{\"path\":\"/s/e.img\",\"ro\":true}", "[invalid]",
                 "disks[0] and disks[1] are the same image (/s/e.img)");
    define_disks(s, "e", "{\"path\":\"/s/iso\",\"ro\":true},{\"path\":\"/s/iso\",\"ro\":true}",
                 NULL, NULL);
    /* Once 'a' is gone its image is free. */
    expect_ok(s, 1, "{\"type\":\"vm_undefine\",\"name\":\"a\"}");
    define_disks(s, "b", "{\"path\":\"/s/a.img\"}", NULL, NULL);

    /* A state from before the check may hold two VMs writing one image:
     * then only one of them starts at a time. */
    define_disks(s, "x", "{\"path\":\"/s/x.img\"}", NULL, NULL);
    define_disks(s, "y", "{\"path\":\"/s/y.img\"}", NULL, NULL);
    json_t *doc = cl_state_to_json(s);
    json_t *vms = json_object_get(doc, "vms");
    size_t i;
    json_t *v;
    json_array_foreach(vms, i, v) {
        if (!strcmp(json_string_value(json_object_get(v, "name")), "y"))
            json_object_set_new(json_array_get(json_object_get(json_object_get(v, "config"),
                                                               "disks"), 0),
                                "path", json_string("/s/x.img"));
    }
    struct cl_state *t = cl_state_new();
    struct tern_err err;
    if (cl_state_from_json(t, doc, &err) != 0)
        fail_msg("document refused: %s", err.msg);
    json_decref(doc);
    start_on(t, "x", "h1");
    expect_refused(t, 1, "{\"type\":\"vm_start\",\"name\":\"y\",\"host\":\"h2\"}", "[conflict]",
                   "cannot start VM 'y': disk /s/x.img is used read-write by VM 'x', which is "
                   "starting");
    expect_refused(t, 1, "{\"type\":\"vm_start\",\"name\":\"y\"}", "[conflict]", "VM 'x'");
    /* Crashed or stopped, x holds nothing. */
    expect_ok(t, 1, "{\"type\":\"vm_report\",\"name\":\"x\",\"run\":\"crashed\"}");
    start_on(t, "y", "h2");
    expect_refused(t, 1, "{\"type\":\"vm_start\",\"name\":\"x\",\"host\":\"h1\"}", "[conflict]",
                   "disk /s/x.img is used read-write by VM 'y', which is starting");
    cl_state_free(t);
    cl_state_free(s);
}

static void test_vm_start_stop(void **unused)
{
    (void)unused;
    struct cl_state *s = three_hosts();
    define(s, "a", 1024, 1);
    define(s, "big", 20000, 1);
    define(s, "b", 1024, 1);
    /* Placement: most free memory first (h3 has 16 GiB). */
    expect_ok(s, 2, "{\"type\":\"vm_start\",\"name\":\"a\"}");
    const struct cl_vm *vm = cl_state_vm(s, "a");
    assert_string_equal(vm->owner, "h3");
    assert_int_equal(vm->desired, CL_VM_RUNNING);
    assert_int_equal(vm->run, CL_RUN_STARTING);
    expect_refused(s, 2, "{\"type\":\"vm_start\",\"name\":\"a\"}", "[conflict]",
                   "VM 'a' is already running on h3");
    expect_refused(s, 2, "{\"type\":\"vm_start\",\"name\":\"big\"}", "[no_capacity]",
                   "20000 MiB");
    expect_refused(s, 2, "{\"type\":\"vm_start\",\"name\":\"nope\"}", "[not_found]",
                   "VM 'nope'");
    expect_refused(s, 2, "{\"type\":\"vm_start\",\"name\":\"b\",\"host\":\"h9\"}", "[not_found]",
                   "host 'h9'");
    expect_refused(s, 2, "{\"type\":\"vm_start\",\"name\":\"b\",\"host\":\"h2 \"}", "[invalid]",
                   "not a valid name");
    expect_ok(s, 2, "{\"type\":\"host_mode\",\"host\":\"h2\",\"mode\":\"maintenance\"}");
    expect_refused(s, 2, "{\"type\":\"vm_start\",\"name\":\"b\",\"host\":\"h2\"}", "[conflict]",
                   "host 'h2' is in maintenance");
    uint32_t m13[] = {1, 3};
    set_members(s, m13, 2);
    expect_refused(s, 1, "{\"type\":\"vm_start\",\"name\":\"b\",\"host\":\"h2\"}", "[conflict]",
                   "host 'h2' is offline");
    expect_refused(s, 1, "{\"type\":\"vm_start\",\"name\":\"big\",\"host\":\"h3\"}",
                   "[no_capacity]", "host 'h3' has 15360 MiB");
    expect_ok(s, 1, "{\"type\":\"vm_start\",\"name\":\"b\",\"host\":\"h1\"}");
    assert_string_equal(cl_state_vm(s, "b")->owner, "h1");

    /* Stop: starting -> stopping, stopping stays, stopped is a no-op. */
    expect_ok(s, 1, "{\"type\":\"vm_stop\",\"name\":\"b\"}");
    vm = cl_state_vm(s, "b");
    assert_int_equal(vm->run, CL_RUN_STOPPING);
    assert_int_equal(vm->desired, CL_VM_STOPPED);
    expect_refused(s, 1, "{\"type\":\"vm_start\",\"name\":\"b\"}", "[conflict]", "is stopping");
    expect_ok(s, 1, "{\"type\":\"vm_stop\",\"name\":\"b\"}");
    assert_int_equal(cl_state_vm(s, "b")->run, CL_RUN_STOPPING);
    expect_ok(s, 1, "{\"type\":\"vm_report\",\"name\":\"b\",\"run\":\"stopped\"}");
    char *before = dump(s);
    expect_ok(s, 1, "{\"type\":\"vm_stop\",\"name\":\"b\"}");
    char *after = dump(s);
    /* Only the version moved. */
    json_t *jb = json_loads(before, 0, NULL), *ja = json_loads(after, 0, NULL);
    json_object_del(jb, "version");
    json_object_del(ja, "version");
    json_object_del(json_object_get(jb, "config"), "quorate_version");
    json_object_del(json_object_get(ja, "config"), "quorate_version");
    assert_true(json_equal(jb, ja));
    json_decref(jb);
    json_decref(ja);
    free(before);
    free(after);
    /* running -> stopping */
    report_running(s, "a");
    assert_int_equal(cl_state_vm(s, "a")->run, CL_RUN_RUNNING);
    expect_ok(s, 1, "{\"type\":\"vm_stop\",\"name\":\"a\"}");
    assert_int_equal(cl_state_vm(s, "a")->run, CL_RUN_STOPPING);
    expect_refused(s, 1, "{\"type\":\"vm_stop\",\"name\":\"zz\"}", "[not_found]", "VM 'zz'");
    /* A start clears the previous error. */
    expect_ok(s, 3, "{\"type\":\"vm_report\",\"name\":\"a\",\"run\":\"crashed\",\"detail\":\"oops\"}");
    assert_string_equal(cl_state_vm(s, "a")->detail, "oops");
    expect_ok(s, 1, "{\"type\":\"vm_start\",\"name\":\"a\"}");
    assert_string_equal(cl_state_vm(s, "a")->detail, "");
    cl_state_free(s);
}

static void test_vm_report(void **unused)
{
    (void)unused;
    struct cl_state *s = three_hosts();
    define(s, "a", 1024, 1);
    expect_refused(s, 1, "{\"type\":\"vm_report\",\"name\":\"a\",\"run\":\"running\"}",
                   "[conflict]", "VM 'a' is not h1's (owner: none)");
    start_on(s, "a", "h2");
    expect_refused(s, 1, "{\"type\":\"vm_report\",\"name\":\"a\",\"run\":\"running\"}",
                   "[conflict]", "not h1's (owner: h2)");
    expect_refused(s, 77, "{\"type\":\"vm_report\",\"name\":\"a\",\"run\":\"running\"}",
                   "[conflict]", "node 77 has not announced");
    expect_refused(s, 2, "{\"type\":\"vm_report\",\"name\":\"a\",\"run\":\"paused\"}",
                   "[invalid]", "unknown value 'paused'");
    expect_refused(s, 2, "{\"type\":\"vm_report\",\"name\":\"b\",\"run\":\"running\"}",
                   "[not_found]", "VM 'b'");
    expect_ok(s, 2, "{\"type\":\"vm_report\",\"name\":\"a\",\"run\":\"running\"}");
    assert_int_equal(cl_state_vm(s, "a")->run, CL_RUN_RUNNING);
    /* A VM that stops by itself: desired stays running (HA decides). */
    expect_ok(s, 2, "{\"type\":\"vm_report\",\"name\":\"a\",\"run\":\"stopped\"}");
    const struct cl_vm *vm = cl_state_vm(s, "a");
    assert_int_equal(vm->run, CL_RUN_STOPPED);
    assert_int_equal(vm->desired, CL_VM_RUNNING);
    assert_string_equal(vm->owner, "");
    expect_refused(s, 2, "{\"type\":\"vm_report\",\"name\":\"a\",\"run\":\"running\"}",
                   "[conflict]", "owner: none");
    start_on(s, "a", "h2");
    char crash[600];
    char longdetail[400];
    /* 2-byte characters across the 256-byte cut: the stored detail stays
     * valid UTF-8 (serialization would fail otherwise). */
    for (int i = 0; i < 199; i++)
        memcpy(longdetail + 2 * i, "\xc3\xa9", 2);
    longdetail[398] = '\0';
    snprintf(crash, sizeof(crash),
             "{\"type\":\"vm_report\",\"name\":\"a\",\"run\":\"crashed\",\"detail\":\"%s\"}",
             longdetail);
    expect_ok(s, 2, crash);
    vm = cl_state_vm(s, "a");
    assert_int_equal(vm->run, CL_RUN_CRASHED);
    assert_string_equal(vm->owner, "");
    assert_int_equal(strlen(vm->detail), 254); /* 127 whole characters */
    free(dump(s));
    /* However long the report, it is kept (cut), not refused. */
    start_on(s, "a", "h2");
    char *huge = malloc(6000);
    int n = snprintf(huge, 6000, "{\"type\":\"vm_report\",\"name\":\"a\",\"run\":\"crashed\","
                                 "\"detail\":\"");
    memset(huge + n, 'y', 5000);
    strcpy(huge + n + 5000, "\"}");
    expect_ok(s, 2, huge);
    free(huge);
    assert_int_equal(strlen(cl_state_vm(s, "a")->detail), CL_REASON_MAX - 1);
    expect_refused(s, 2, "{\"type\":\"vm_report\",\"name\":\"a\",\"run\":\"crashed\","
                         "\"detail\":5}",
                   "[invalid]", "\"detail\" must be a string");
    start_on(s, "a", "h2");
    expect_ok(s, 2, "{\"type\":\"vm_report\",\"name\":\"a\",\"run\":\"crashed\"}");
    assert_string_equal(cl_state_vm(s, "a")->detail, "the VM process ended unexpectedly");
    /* A "running" that races with a stop does not undo the stop. */
    start_on(s, "a", "h2");
    expect_ok(s, 1, "{\"type\":\"vm_stop\",\"name\":\"a\"}");
    expect_ok(s, 2, "{\"type\":\"vm_report\",\"name\":\"a\",\"run\":\"running\"}");
    assert_int_equal(cl_state_vm(s, "a")->run, CL_RUN_STOPPING);
    cl_state_free(s);
}

static uint64_t begin(struct cl_state *s, const char *vm, const char *to)
{
    char m[256];
    snprintf(m, sizeof(m),
             "{\"type\":\"migration_begin\",\"vm\":\"%s\",\"to\":\"%s\",\"downtime_ms\":80,"
             "\"origin\":{\"node\":3,\"req\":42}}",
             vm, to);
    expect_ok(s, 3, m);
    return cl_state_vm(s, vm)->migration_id;
}

static void test_migration_success(void **unused)
{
    (void)unused;
    struct cl_state *s = three_hosts();
    define(s, "a", 1024, 2);
    start_on(s, "a", "h1");
    report_running(s, "a");
    uint64_t id = begin(s, "a", "h2");
    assert_int_equal(id, 1);
    const struct cl_migration *m = cl_state_migration(s, 1);
    assert_non_null(m);
    assert_string_equal(m->vm, "a");
    assert_string_equal(m->from, "h1");
    assert_string_equal(m->to, "h2");
    assert_int_equal(m->phase, CL_MIG_PREPARING);
    assert_int_equal(m->downtime_ms, 80);
    assert_int_equal(m->origin_nodeid, 3);
    assert_int_equal(m->origin_req, 42);
    assert_int_equal(cl_state_vm(s, "a")->run, CL_RUN_MIGRATING);
    assert_int_equal(cl_state_nr_migrations(s), 1);
    assert_ptr_equal(cl_state_migration_at(s, 0), m);

    const char *listen = "{\"type\":\"migration_listening\",\"id\":1,\"port\":7001,"
                         "\"token\":\"t0k3n\"}";
    expect_refused(s, 1, listen, "[conflict]", "only the destination 'h2'");
    expect_refused(s, 2,
                   "{\"type\":\"migration_listening\",\"id\":1,\"port\":0,\"token\":\"t\"}",
                   "[invalid]", "port");
    expect_refused(s, 2,
                   "{\"type\":\"migration_listening\",\"id\":1,\"port\":7001,\"token\":\"\"}",
                   "[invalid]", "token");
    expect_refused(s, 2,
                   "{\"type\":\"migration_listening\",\"id\":5,\"port\":7001,\"token\":\"t\"}",
                   "[not_found]", "migration 5");
    expect_refused(s, 1, "{\"type\":\"migration_commit\",\"id\":1}", "[conflict]",
                   "only while the destination listens");
    expect_ok(s, 2, listen);
    m = cl_state_migration(s, 1);
    assert_int_equal(m->phase, CL_MIG_LISTENING);
    assert_int_equal(m->port, 7001);
    assert_string_equal(m->token, "t0k3n");
    expect_refused(s, 2, listen, "[conflict]", "is listening, not preparing");

    const char *prog = "{\"type\":\"migration_progress\",\"id\":1,\"progress\":{\"round\":3,"
                       "\"bytes_sent\":1000,\"dirty_MBps\":12.5}}";
    expect_refused(s, 2, prog, "[conflict]", "only the source 'h1'");
    expect_refused(s, 1, "{\"type\":\"migration_progress\",\"id\":1,\"progress\":3}",
                   "[invalid]", "must be an object");
    expect_ok(s, 1, prog);
    m = cl_state_migration(s, 1);
    assert_int_equal(json_integer_value(json_object_get(m->progress, "round")), 3);

    expect_refused(s, 2, "{\"type\":\"migration_commit\",\"id\":1}", "[conflict]",
                   "only the source");
    expect_refused(s, 2, "{\"type\":\"migration_done\",\"id\":1,\"result\":{}}", "[conflict]",
                   "is listening, not committed");
    expect_ok(s, 1, "{\"type\":\"migration_commit\",\"id\":1}");
    assert_int_equal(cl_state_migration(s, 1)->phase, CL_MIG_COMMITTED);
    assert_string_equal(cl_state_vm(s, "a")->owner, "h2");
    expect_refused(s, 1, "{\"type\":\"migration_commit\",\"id\":1}", "[conflict]",
                   "is committed");
    expect_refused(s, 1, "{\"type\":\"migration_abort\",\"id\":1,\"reason\":\"late\"}",
                   "[conflict]", "already committed; the VM now belongs to h2");
    /* Progress after the commit is still just stored. */
    expect_ok(s, 1, "{\"type\":\"migration_progress\",\"id\":1,\"progress\":{\"round\":9}}");
    /* The source's view of the VM is over: its reports are refused. */
    expect_refused(s, 1, "{\"type\":\"vm_report\",\"name\":\"a\",\"run\":\"stopped\"}",
                   "[conflict]", "owner: h2");
    expect_refused(s, 1, "{\"type\":\"migration_done\",\"id\":1,\"result\":{}}", "[conflict]",
                   "only the destination");
    expect_refused(s, 2, "{\"type\":\"migration_done\",\"id\":1}", "[invalid]", "result");
    expect_ok(s, 2,
              "{\"type\":\"migration_done\",\"id\":1,\"result\":{\"total_s\":1.5,"
              "\"pause_ms\":12.25,\"vm\":\"liar\"}}");
    const struct cl_vm *vm = cl_state_vm(s, "a");
    assert_int_equal(vm->run, CL_RUN_RUNNING);
    assert_int_equal(vm->migration_id, 0);
    assert_string_equal(vm->owner, "h2");
    assert_non_null(vm->last_migration);
    assert_string_equal(json_string_value(json_object_get(vm->last_migration, "vm")), "a");
    assert_string_equal(json_string_value(json_object_get(vm->last_migration, "outcome")),
                        "succeeded");
    assert_int_equal(json_integer_value(json_object_get(vm->last_migration, "id")), 1);
    assert_true(json_real_value(json_object_get(vm->last_migration, "pause_ms")) == 12.25);
    assert_int_equal(cl_state_nr_migrations(s), 0);
    assert_null(cl_state_migration(s, 1));
    /* Ids are never reused. */
    assert_int_equal(begin(s, "a", "h1"), 2);
    cl_state_free(s);
}

static void test_migration_refusals_and_abort(void **unused)
{
    (void)unused;
    struct cl_state *s = three_hosts();
    define(s, "a", 1024, 1);
    define(s, "huge", 6000, 1);
    const char *b = "{\"type\":\"migration_begin\",\"vm\":\"%s\",\"to\":\"%s\"%s}";
    char m[256];
#define BEGIN(vm, to, extra) (snprintf(m, sizeof(m), b, vm, to, extra), m)
    expect_refused(s, 1, BEGIN("a", "h2", ""), "[conflict]", "is stopped; only a running VM");
    start_on(s, "a", "h1");
    expect_refused(s, 1, BEGIN("a", "h2", ""), "[conflict]", "is starting");
    report_running(s, "a");
    start_on(s, "huge", "h3");
    report_running(s, "huge");
    expect_refused(s, 1, BEGIN("zz", "h2", ""), "[not_found]", "VM 'zz'");
    expect_refused(s, 1, BEGIN("a", "h9", ""), "[not_found]", "host 'h9'");
    expect_refused(s, 1, BEGIN("a", "h1", ""), "[conflict]", "already runs on h1");
    expect_refused(s, 1, BEGIN("huge", "h2", ""), "[no_capacity]", "host 'h2' has 4096 MiB");
    expect_refused(s, 1, BEGIN("a", "h2", ",\"downtime_ms\":0"), "[invalid]", "downtime_ms");
    expect_refused(s, 1, BEGIN("a", "h2", ",\"downtime_ms\":60001"), "[invalid]",
                   "downtime_ms");
    expect_refused(s, 1, BEGIN("a", "h2", ",\"downtime_ms\":\"5\""), "[invalid]",
                   "downtime_ms");
    expect_ok(s, 1, "{\"type\":\"host_mode\",\"host\":\"h2\",\"mode\":\"maintenance\"}");
    expect_refused(s, 1, BEGIN("a", "h2", ""), "[conflict]", "in maintenance");
    expect_ok(s, 1, "{\"type\":\"host_mode\",\"host\":\"h2\",\"mode\":\"active\"}");
    uint32_t m13[] = {1, 3};
    set_members(s, m13, 2);
    expect_refused(s, 1, BEGIN("a", "h2", ""), "[conflict]", "offline");
    uint32_t all[] = {1, 2, 3};
    set_members(s, all, 3);

    expect_ok(s, 1, BEGIN("a", "h2", ""));
    assert_int_equal(cl_state_migration(s, 1)->downtime_ms, 50);
    assert_int_equal(cl_state_migration(s, 1)->origin_nodeid, 0);
    expect_refused(s, 1, BEGIN("a", "h3", ""), "[conflict]", "already being migrated (migration 1)");
    expect_refused(s, 1, "{\"type\":\"vm_stop\",\"name\":\"a\"}", "[conflict]",
                   "being migrated (migration 1)");
    expect_refused(s, 1, "{\"type\":\"vm_start\",\"name\":\"a\"}", "[conflict]",
                   "already running on h1");
    expect_refused(s, 1, "{\"type\":\"vm_undefine\",\"name\":\"a\"}", "[conflict]",
                   "meant to run");
    expect_refused(s, 1, "{\"type\":\"migration_abort\",\"id\":9}", "[not_found]",
                   "migration 9");
    expect_refused(s, 1, "{\"type\":\"migration_abort\",\"id\":1,\"outcome\":\"meh\"}",
                   "[invalid]", "outcome");
    /* Any host may abort before the commit. */
    expect_ok(s, 3, "{\"type\":\"migration_abort\",\"id\":1,\"reason\":\"no route\"}");
    const struct cl_vm *vm = cl_state_vm(s, "a");
    assert_int_equal(vm->run, CL_RUN_RUNNING);
    assert_string_equal(vm->owner, "h1");
    assert_string_equal(vm->detail, "no route");
    assert_int_equal(vm->migration_id, 0);
    json_t *expect = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s}", "id", 1, "vm", "a", "from",
                               "h1", "to", "h2", "outcome", "failed", "reason", "no route");
    assert_true(json_equal(vm->last_migration, expect));
    json_decref(expect);
    assert_int_equal(cl_state_nr_migrations(s), 0);
    expect_ok(s, 1, BEGIN("a", "h2", ""));
    assert_int_equal(cl_state_vm(s, "a")->migration_id, 2);
    expect_ok(s, 1, "{\"type\":\"migration_abort\",\"id\":2,\"outcome\":\"cancelled\"}");
    assert_string_equal(
        json_string_value(json_object_get(cl_state_vm(s, "a")->last_migration, "outcome")),
        "cancelled");

    /* The source's VM dying mid-migration ends the migration. */
    expect_ok(s, 1, BEGIN("a", "h2", ""));
    expect_ok(s, 1, "{\"type\":\"vm_report\",\"name\":\"a\",\"run\":\"crashed\",\"detail\":\"boom\"}");
    vm = cl_state_vm(s, "a");
    assert_int_equal(vm->run, CL_RUN_CRASHED);
    assert_int_equal(vm->migration_id, 0);
    assert_int_equal(cl_state_nr_migrations(s), 0);
    assert_string_equal(vm->detail, "boom");
    assert_non_null(strstr(json_string_value(json_object_get(vm->last_migration, "reason")),
                           "crashed on h1"));
    free(dump(s));
#undef BEGIN
    cl_state_free(s);
}

static void test_capacity_and_placement(void **unused)
{
    (void)unused;
    struct cl_state *s = three_hosts();
    uint64_t mem;
    uint32_t cpus;
    cl_state_host_free(s, "h1", &mem, &cpus);
    assert_int_equal(mem, 8192);
    assert_int_equal(cpus, 8);
    cl_state_host_free(s, "nope", &mem, &cpus);
    assert_int_equal(mem, 0);
    assert_int_equal(cpus, 0);
    define(s, "a", 3000, 2);
    define(s, "b", 5000, 3);
    define(s, "c", 1000, 6);
    start_on(s, "a", "h1");
    cl_state_host_free(s, "h1", &mem, &cpus);
    assert_int_equal(mem, 5192);
    assert_int_equal(cpus, 6);
    /* A migration holds room on its destination until it commits, then the
     * room moves with the owner. */
    report_running(s, "a");
    begin(s, "a", "h3");
    cl_state_host_free(s, "h3", &mem, &cpus);
    assert_int_equal(mem, 16384 - 3000);
    assert_int_equal(cpus, 14);
    cl_state_host_free(s, "h1", &mem, &cpus);
    assert_int_equal(mem, 5192);
    expect_ok(s, 3, "{\"type\":\"migration_listening\",\"id\":1,\"port\":1,\"token\":\"t\"}");
    expect_ok(s, 1, "{\"type\":\"migration_commit\",\"id\":1}");
    cl_state_host_free(s, "h1", &mem, &cpus);
    assert_int_equal(mem, 8192);
    cl_state_host_free(s, "h3", &mem, &cpus);
    assert_int_equal(mem, 16384 - 3000);
    expect_ok(s, 3, "{\"type\":\"migration_done\",\"id\":1,\"result\":{}}");
    cl_state_host_free(s, "h3", &mem, &cpus);
    assert_int_equal(mem, 16384 - 3000);
    /* Stopped and crashed VMs hold nothing. */
    expect_ok(s, 3, "{\"type\":\"vm_report\",\"name\":\"a\",\"run\":\"crashed\"}");
    cl_state_host_free(s, "h3", &mem, &cpus);
    assert_int_equal(mem, 16384);

    /* Placement: most free memory, then name; exclude; vCPUs count too. */
    char out[CL_NAME_MAX];
    struct tern_err err;
    assert_int_equal(cl_state_place(s, &cl_state_vm(s, "b")->cfg, NULL, out, &err), 0);
    assert_string_equal(out, "h3");
    assert_int_equal(cl_state_place(s, &cl_state_vm(s, "b")->cfg, "h3", out, &err), 0);
    assert_string_equal(out, "h1");
    assert_int_equal(cl_state_place(s, &cl_state_vm(s, "c")->cfg, "h3", out, &err), 0);
    assert_string_equal(out, "h1");
    start_on(s, "c", "h1"); /* h1: 2 vCPUs left */
    define(s, "d", 100, 3);
    assert_int_equal(cl_state_place(s, &cl_state_vm(s, "d")->cfg, "h3", out, &err), 0);
    assert_string_equal(out, "h2"); /* h1 has more memory but too few vCPUs */
    announce(s, 4, "h0", 16384, 16); /* equal to h3: the name decides */
    uint32_t all[] = {1, 2, 3, 4};
    set_members(s, all, 4);
    assert_int_equal(cl_state_place(s, &cl_state_vm(s, "d")->cfg, NULL, out, &err), 0);
    assert_string_equal(out, "h0");
    expect_ok(s, 1, "{\"type\":\"host_mode\",\"host\":\"h0\",\"mode\":\"maintenance\"}");
    assert_int_equal(cl_state_place(s, &cl_state_vm(s, "d")->cfg, NULL, out, &err), 0);
    assert_string_equal(out, "h3");
    uint32_t only4[] = {4};
    set_members(s, only4, 1);
    assert_int_equal(cl_state_place(s, &cl_state_vm(s, "d")->cfg, NULL, out, &err), -1);
    assert_int_equal(err.code, TERN_ERR_NO_CAPACITY);
    assert_non_null(strstr(err.msg, "no online host in active mode"));
    /* A host announcing less than it runs has no room, not a wrapped number. */
    set_members(s, all, 4);
    announce(s, 1, "h1", 1000, 1);
    cl_state_host_free(s, "h1", &mem, &cpus);
    assert_int_equal(mem, 0);
    assert_int_equal(cpus, 0);
    json_t *hj = cl_host_to_json(s, cl_state_host(s, "h1"));
    assert_int_equal(json_integer_value(json_object_get(hj, "free_mem_mib")), 0);
    assert_int_equal(json_integer_value(json_object_get(hj, "vms")), 1);
    json_decref(hj);
    cl_state_free(s);
}

static void test_set_members(void **unused)
{
    (void)unused;
    struct cl_state *s = three_hosts();
    define(s, "a", 512, 1);
    define(s, "b", 512, 1);
    define(s, "c", 512, 1);
    start_on(s, "a", "h1");
    start_on(s, "b", "h1");
    start_on(s, "c", "h3");
    report_running(s, "a");
    report_running(s, "b");
    report_running(s, "c");
    begin(s, "a", "h2");                                                    /* 1: preparing */
    begin(s, "b", "h3");                                                    /* 2: committed */
    expect_ok(s, 3, "{\"type\":\"migration_listening\",\"id\":2,\"port\":1,\"token\":\"t\"}");
    expect_ok(s, 1, "{\"type\":\"migration_commit\",\"id\":2}");
    begin(s, "c", "h2");                                                    /* 3: preparing */
    uint64_t v = cl_state_version(s);
    uint32_t m13[] = {3, 1}; /* any order */
    set_members(s, m13, 2);
    assert_int_equal(cl_state_version(s), v + 1);
    assert_true(cl_state_host(s, "h1")->online);
    assert_false(cl_state_host(s, "h2")->online);
    assert_true(cl_state_host(s, "h3")->online);
    /* 1 and 3 lost their destination; 2 committed and only waits for h3. */
    assert_int_equal(cl_state_nr_migrations(s), 1);
    assert_non_null(cl_state_migration(s, 2));
    const struct cl_vm *a = cl_state_vm(s, "a");
    assert_int_equal(a->run, CL_RUN_RUNNING);
    assert_string_equal(a->owner, "h1");
    assert_string_equal(a->detail, "host h2 left the cluster");
    assert_string_equal(json_string_value(json_object_get(a->last_migration, "reason")),
                        "host h2 left the cluster");
    assert_int_equal(cl_state_vm(s, "c")->run, CL_RUN_RUNNING);
    assert_int_equal(cl_state_vm(s, "b")->run, CL_RUN_MIGRATING);
    /* The committed one survives its source leaving too. */
    uint32_t m3[] = {3};
    set_members(s, m3, 1);
    assert_non_null(cl_state_migration(s, 2));
    assert_false(cl_state_host(s, "h1")->online);
    /* And a preparing migration loses its source. */
    uint32_t all[] = {1, 2, 3};
    set_members(s, all, 3);
    begin(s, "c", "h1");
    set_members(s, m3 /* h3 is the source */, 0);
    assert_null(cl_state_migration(s, 4));
    assert_string_equal(cl_state_vm(s, "c")->detail, "host h3 left the cluster");
    for (size_t i = 0; i < cl_state_nr_hosts(s); i++)
        assert_false(cl_state_host_at(s, i)->online);
    cl_state_free(s);
}

static void test_version_counting(void **unused)
{
    (void)unused;
    struct cl_state *s = cl_state_new();
    assert_int_equal(cl_state_version(s), 0);
    announce(s, 1, "h1", 1024, 1);
    assert_int_equal(cl_state_version(s), 1);
    /* Before any configuration: nothing is quorate. */
    expect_refused(s, 1, "{\"type\":\"vm_stop\",\"name\":\"x\"}", "[no_quorum]", "not quorate");
    assert_int_equal(cl_state_version(s), 1);
    uint32_t m[] = {1};
    set_members(s, m, 1);
    set_members(s, m, 1);
    assert_int_equal(cl_state_version(s), 3);
    /* Two states fed the same sequence agree, refusals included. */
    struct cl_state *t = cl_state_new();
    announce(t, 1, "h1", 1024, 1);
    expect_refused(t, 1, "{\"type\":\"vm_stop\",\"name\":\"x\"}", "[no_quorum]", "not quorate");
    last_ring -= 8; /* the same configurations, in the same rings */
    set_members(t, m, 1);
    set_members(t, m, 1);
    char *a = dump(s), *b = dump(t);
    assert_string_equal(a, b);
    free(a);
    free(b);
    cl_state_free(s);
    cl_state_free(t);
}

/* A state with a bit of everything: modes, offline hosts, every run state,
 * migrations in every phase with progress, last_migration records. */
static struct cl_state *busy_state(void)
{
    struct cl_state *s = three_hosts();
    announce(s, 4, "h4", 32768, 32);
    uint32_t all[] = {1, 2, 3, 4};
    set_members(s, all, 4);
    expect_ok(s, 1,
              "{\"type\":\"vm_define\",\"name\":\"full\",\"ha\":true,\"priority\":7,\"config\":"
              "{\"kernel\":\"/k\",\"initrd\":\"/i\",\"cmdline\":\"quiet \\\"x\\\" \\u00e9\","
              "\"mem_mib\":256,\"vcpus\":2,\"disks\":[{\"path\":\"/d\",\"ro\":true}]}}");
    const char *names[] = {"m1", "m2", "m3", "run", "start", "stopping", "crashed", "off"};
    for (size_t i = 0; i < 8; i++)
        define(s, names[i], 256, 1);
    start_on(s, "full", "h2");
    for (size_t i = 0; i < 5; i++)
        start_on(s, names[i], i % 2 ? "h1" : "h3");
    start_on(s, "stopping", "h3");
    start_on(s, "crashed", "h3");
    for (size_t i = 0; i < 4; i++)
        report_running(s, names[i]);
    expect_ok(s, 3, "{\"type\":\"vm_stop\",\"name\":\"stopping\"}");
    expect_ok(s, 3, "{\"type\":\"vm_report\",\"name\":\"crashed\",\"run\":\"crashed\","
                    "\"detail\":\"segfault\"}");
    begin(s, "m1", "h2");
    begin(s, "m2", "h4");
    expect_ok(s, 4, "{\"type\":\"migration_listening\",\"id\":2,\"port\":9,\"token\":\"tok\"}");
    expect_ok(s, 1, "{\"type\":\"migration_progress\",\"id\":2,\"progress\":{\"phase\":\"round\","
                    "\"bandwidth_MBps\":123.456,\"round\":2}}");
    begin(s, "m3", "h1");
    expect_ok(s, 1, "{\"type\":\"migration_listening\",\"id\":3,\"port\":10,\"token\":\"t3\"}");
    expect_ok(s, 3, "{\"type\":\"migration_commit\",\"id\":3}");
    begin(s, "run", "h4");
    expect_ok(s, 2, "{\"type\":\"migration_abort\",\"id\":4,\"reason\":\"test\"}");
    expect_ok(s, 2, "{\"type\":\"host_mode\",\"host\":\"h2\",\"mode\":\"maintenance\"}");
    announce(s, 5, "h5", 1024, 1); /* offline after the next membership */
    set_members(s, all, 4);
    /* Fencing and anti-affinity fields travel too. */
    expect_ok(s, 2, "{\"type\":\"host_fence\",\"host\":\"h5\"}");
    expect_ok(s, 2, "{\"type\":\"host_fence_failed\",\"host\":\"h5\",\"seq\":1,"
                    "\"detail\":\"bmc down\"}");
    expect_ok(s, 1, "{\"type\":\"host_fence_check\",\"host\":\"h3\",\"ok\":false,"
                    "\"detail\":\"h3-bmc: timed out\"}");
    expect_ok(s, 1, "{\"type\":\"vm_define\",\"name\":\"zgrouped\",\"group\":\"db\","
                    "\"config\":" CFG1G "}");
    return s;
}

/* What the would-be fencer found when it checked a host's fence devices:
 * stored with who checked, refused when it cannot be a check. */
static void test_fence_check(void **unused)
{
    (void)unused;
    struct cl_state *s = three_hosts();
    assert_int_equal(cl_state_host(s, "h3")->fence_check, CL_CHECK_UNKNOWN);
    expect_ok(s, 1, "{\"type\":\"host_fence_check\",\"host\":\"h3\",\"ok\":true,"
                    "\"detail\":\"h3-bmc: ok\"}");
    const struct cl_host *h = cl_state_host(s, "h3");
    assert_int_equal(h->fence_check, CL_CHECK_OK);
    assert_string_equal(h->fence_check_by, "h1");
    assert_string_equal(h->fence_check_detail, "h3-bmc: ok");
    expect_ok(s, 2, "{\"type\":\"host_fence_check\",\"host\":\"h3\",\"ok\":false,"
                    "\"detail\":\"h3-bmc: failed: bad password\"}");
    assert_int_equal(h->fence_check, CL_CHECK_FAILING);
    assert_string_equal(h->fence_check_by, "h2");
    /* No decision depends on it: the host stays as it was. */
    assert_int_equal(h->fence, CL_FENCE_NONE);
    assert_true(h->online);
    json_t *j = cl_host_to_json(s, h);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "fence"), "check")),
                        "failing");
    json_decref(j);
    expect_refused(s, 1, "{\"type\":\"host_fence_check\",\"host\":\"h9\",\"ok\":true}",
                   "[not_found]", "h9");
    expect_refused(s, 1, "{\"type\":\"host_fence_check\",\"host\":\"h3\",\"ok\":\"yes\"}",
                   "[invalid]", "'ok'");
    expect_refused(s, 1, "{\"type\":\"host_fence_check\",\"host\":\"h3\"}", "[invalid]",
                   "'ok'");
    expect_refused(s, 1, "{\"type\":\"host_fence_check\",\"host\":\"h3\",\"ok\":true,"
                         "\"detail\":7}", "[invalid]", "detail");
    expect_refused(s, 9, "{\"type\":\"host_fence_check\",\"host\":\"h3\",\"ok\":true}",
                   "[not_found]", "node 9");
    /* Without quorum, nothing is recorded. */
    uint32_t m1[] = {1};
    set_members(s, m1, 1);
    expect_refused(s, 1, "{\"type\":\"host_fence_check\",\"host\":\"h3\",\"ok\":true}",
                   "[no_quorum]", "not quorate");
    cl_state_free(s);
}

static void test_json_round_trip(void **unused)
{
    (void)unused;
    struct cl_state *s = busy_state();
    char *a = dump(s);
    json_t *doc = cl_state_to_json(s);
    struct cl_state *t = cl_state_new();
    struct tern_err err;
    if (cl_state_from_json(t, doc, &err) != 0)
        fail_msg("round trip refused: %s", err.msg);
    char *b = dump(t);
    assert_string_equal(a, b);
    assert_int_equal(cl_state_version(t), cl_state_version(s));
    /* The loaded copy keeps working the same way: the next migration id
     * continues the counter. */
    expect_ok(t, 1, "{\"type\":\"migration_begin\",\"vm\":\"run\",\"to\":\"h4\"}");
    assert_int_equal(cl_state_vm(t, "run")->migration_id, 5);
    expect_ok(s, 1, "{\"type\":\"migration_begin\",\"vm\":\"run\",\"to\":\"h4\"}");
    free(b);
    b = dump(t);
    free(a);
    a = dump(s);
    assert_string_equal(a, b);
    free(b);

    /* Documents that could not come from apply are refused whole, and the
     * target keeps its state. */
    struct {
        const char *path_key; /* array */
        size_t idx;
        const char *field;
        json_t *value;
        const char *needle;
    } bad[] = {
        {"vms", 1, "owner", json_string("ghost"), "unknown host 'ghost'"},
        {"vms", 1, "state", json_string("stopped"), "is stopped with owner"},
        {"vms", 1, "migration_id", json_integer(99), "migration id 99"},
        {"vms", 0, "name", json_string("m1"), "appears twice"},
        {"vms", 0, "config", json_pack("{s:s}", "kernel", "/k"), "mem_mib"},
        {"vms", 0, "priority", json_string("high"), "priority"},
        {"hosts", 0, "nodeid", json_integer(2), "share node id 2"},
        {"hosts", 0, "name", json_string("-x"), "not a valid host name"},
        {"hosts", 0, "mode", json_string("gone"), "unknown value 'gone'"},
        {"migrations", 0, "id", json_integer(77), "above the counter"},
        {"migrations", 0, "phase", json_string("committed"), "is committed but VM"},
        {"migrations", 0, "to", json_string("h3"), "from 'h3' to 'h3'"},
        {"migrations", 0, "progress", json_integer(1), "must be an object"},
        {"migrations", 1, "vm", json_string("run"), "which does not refer to it"},
    };
    char *t_before = dump(t);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *d = json_deep_copy(doc);
        json_t *arr = json_object_get(d, bad[i].path_key);
        json_object_set_new(json_array_get(arr, bad[i].idx), bad[i].field, bad[i].value);
        memset(&err, 0, sizeof(err));
        if (cl_state_from_json(t, d, &err) != -1)
            fail_msg("bad document %zu accepted", i);
        if (!strstr(err.msg, bad[i].needle) || err.code != TERN_ERR_INVALID)
            fail_msg("bad document %zu: error '%s' lacks '%s'", i, err.msg, bad[i].needle);
        json_decref(d);
    }
    /* Format 2: epochs counted per copy; read as epoch 0, the old epoch and
     * count folded into the quorate version (they order among themselves). */
    json_t *d2 = json_deep_copy(doc);
    json_object_set_new(d2, "format_version", json_integer(2));
    json_t *c2 = json_object_get(d2, "config");
    json_object_del(c2, "ring_seq");
    json_object_set_new(c2, "quorum_epoch", json_integer(5));
    json_object_set_new(c2, "quorate_version", json_integer(7));
    struct cl_state *old2 = cl_state_new();
    assert_int_equal(cl_state_from_json(old2, d2, &err), 0);
    assert_int_equal(cl_state_quorum_epoch(old2), 0);
    assert_int_equal(cl_state_quorate_version(old2), (5ull << 32) | 7);
    assert_int_equal(cl_state_config_ring(old2), 0);
    /* Format 3 needs the ring. */
    json_object_set_new(d2, "format_version", json_integer(3));
    assert_int_equal(cl_state_from_json(old2, d2, &err), -1);
    assert_non_null(strstr(err.msg, "ring_seq"));
    json_decref(d2);
    cl_state_free(old2);
    json_t *d = json_deep_copy(doc);
    json_object_set_new(d, "format_version", json_integer(4));
    assert_int_equal(cl_state_from_json(t, d, &err), -1);
    assert_non_null(strstr(err.msg, "format version 4 is not supported"));
    json_object_set_new(d, "format", json_string("other"));
    assert_int_equal(cl_state_from_json(t, d, &err), -1);
    json_decref(d);
    assert_int_equal(cl_state_from_json(t, json_object_get(doc, "hosts"), &err), -1);
    char *t_after = dump(t);
    assert_string_equal(t_before, t_after);
    free(t_before);
    free(t_after);
    free(a);
    json_decref(doc);
    cl_state_free(s);
    cl_state_free(t);
}

static char *tmpdir(void)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char *d = malloc(strlen(base) + 32);
    sprintf(d, "%s/tern-cs-XXXXXX", base);
    assert_non_null(mkdtemp(d));
    return d;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void test_save_load(void **unused)
{
    (void)unused;
    char *dir = tmpdir();
    char path[512], tmp[600], other[512];
    snprintf(path, sizeof(path), "%s/state.json", dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    snprintf(other, sizeof(other), "%s/sub", dir);
    struct tern_err err = {0};

    /* Missing file: empty state, 1. */
    struct cl_state *t = busy_state();
    assert_int_equal(cl_state_load(t, path, &err), 1);
    assert_int_equal(cl_state_nr_hosts(t), 0);
    assert_int_equal(cl_state_nr_vms(t), 0);
    assert_int_equal(cl_state_version(t), 0);

    struct cl_state *s = busy_state();
    if (cl_state_save(s, path, &err) != 0)
        fail_msg("save: %s", err.msg);
    assert_int_equal(access(tmp, F_OK), -1);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    if (cl_state_load(t, path, &err) != 0)
        fail_msg("load: %s", err.msg);
    char *a = dump(s), *b = dump(t);
    assert_string_equal(a, b);
    free(b);

    /* A failed save leaves the old file as it was. The temp path being a
     * directory makes the write fail... */
    expect_ok(s, 1, "{\"type\":\"vm_define\",\"name\":\"new\",\"config\":" CFG1G "}");
    assert_int_equal(mkdir(tmp, 0700), 0);
    assert_int_equal(cl_state_save(s, path, &err), -1);
    assert_non_null(strstr(err.msg, "cannot create"));
    assert_int_equal(rmdir(tmp), 0);
    /* ...and a target that cannot be replaced makes the rename fail. */
    assert_int_equal(mkdir(other, 0700), 0);
    char inner[600];
    snprintf(inner, sizeof(inner), "%s/x", other);
    write_text(inner, "x");
    assert_int_equal(cl_state_save(s, other, &err), -1);
    assert_non_null(strstr(err.msg, "cannot rename"));
    snprintf(inner, sizeof(inner), "%s.tmp", other);
    assert_int_equal(access(inner, F_OK), -1); /* cleaned up */
    snprintf(inner, sizeof(inner), "%s/nodir/state.json", dir);
    assert_int_equal(cl_state_save(s, inner, &err), -1);
    assert_int_equal(cl_state_load(t, path, &err), 0);
    b = dump(t);
    assert_string_equal(a, b); /* still the first save */
    free(b);

    /* Corrupted files are refused with the reason; the state is kept. */
    char *good = dump(s);
    write_text(path, "{\"format\":\"tern-cluster-state\",\"vers");
    assert_int_equal(cl_state_load(t, path, &err), -1);
    assert_non_null(strstr(err.msg, "is not valid JSON"));
    assert_non_null(strstr(err.msg, path));
    b = dump(t);
    assert_string_equal(a, b);
    free(b);
    write_text(path, "{\"format\":\"tern-cluster-state\",\"format_version\":1,\"version\":3,"
                     "\"migration_counter\":0,\"hosts\":[],\"vms\":[{}],\"migrations\":[]}");
    assert_int_equal(cl_state_load(t, path, &err), -1);
    assert_non_null(strstr(err.msg, "vms[0]"));
    write_text(path, "");
    assert_int_equal(cl_state_load(t, path, &err), -1);
    assert_int_equal(cl_state_load(t, dir, &err), -1); /* a directory */
    b = dump(t);
    assert_string_equal(a, b);
    free(b);
    /* One flipped bit anywhere in the document (its version, say) is found
     * by the checksum; a cut file by its length; a document of this format
     * without the wrapper is not believed. */
    assert_int_equal(cl_state_save(s, path, &err), 0);
    {
        uint8_t *buf;
        size_t len;
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        buf = malloc(1 << 20);
        len = fread(buf, 1, 1 << 20, f);
        fclose(f);
        char *vpos = strstr((char *)buf, "\"version\":");
        assert_non_null(vpos);
        vpos[10] ^= 0x01; /* a digit of the version becomes another digit */
        f = fopen(path, "wb");
        fwrite(buf, 1, len, f);
        fclose(f);
        assert_int_equal(cl_state_load(t, path, &err), -1);
        assert_non_null(strstr(err.msg, "fails its checksum"));
        assert_non_null(strstr(err.msg, "move it away"));
        vpos[10] ^= 0x01;
        f = fopen(path, "wb");
        fwrite(buf, 1, len / 2, f);
        fclose(f);
        assert_int_equal(cl_state_load(t, path, &err), -1);
        assert_non_null(strstr(err.msg, "truncated or damaged"));
        json_t *plain = cl_state_to_json(s);
        char *ptext = json_dumps(plain, JSON_COMPACT);
        write_text(path, ptext);
        free(ptext);
        json_decref(plain);
        assert_int_equal(cl_state_load(t, path, &err), -1);
        assert_non_null(strstr(err.msg, "has no checksum"));
        free(buf);
        b = dump(t);
        assert_string_equal(a, b); /* nothing was half-loaded */
        free(b);
    }
    /* Saving again replaces the bad file. */
    assert_int_equal(cl_state_save(s, path, &err), 0);
    assert_int_equal(cl_state_load(t, path, &err), 0);
    b = dump(t);
    assert_string_equal(good, b);
    free(b);
    free(good);
    free(a);

    snprintf(inner, sizeof(inner), "%s/x", other);
    unlink(inner);
    rmdir(other);
    unlink(path);
    assert_int_equal(rmdir(dir), 0);
    free(dir);
    cl_state_free(s);
    cl_state_free(t);
}

static double now_ms(void);

/* Quorum is part of the ordered state: client changes and commits are
 * refused in a configuration that is not quorate; hosts' own reports go on.
 * Every quorate configuration starts a new quorum epoch. */
static void test_quorum_rules(void **unused)
{
    (void)unused;
    struct cl_state *s = three_hosts();
    assert_true(cl_state_quorate(s));
    assert_int_equal(cl_state_expected_votes(s), 3);
    uint64_t q = cl_state_quorum_epoch(s);
    define(s, "v", 256, 1);
    define(s, "w", 256, 1);
    start_on(s, "v", "h1");
    report_running(s, "v");
    start_on(s, "w", "h1");
    report_running(s, "w");
    begin(s, "w", "h2");
    expect_ok(s, 2, "{\"type\":\"migration_listening\",\"id\":1,\"port\":1,\"token\":\"t\"}");
    uint32_t m1[] = {1};
    set_members(s, m1, 1);
    assert_false(cl_state_quorate(s));
    assert_int_equal(cl_state_quorum_epoch(s), q); /* no new epoch without quorum */
    const char *refused[] = {
        "{\"type\":\"vm_define\",\"name\":\"x\",\"config\":" CFG1G "}",
        "{\"type\":\"vm_undefine\",\"name\":\"v\"}",
        "{\"type\":\"vm_start\",\"name\":\"v\"}",
        "{\"type\":\"vm_stop\",\"name\":\"v\"}",
        "{\"type\":\"host_mode\",\"host\":\"h1\",\"mode\":\"maintenance\"}",
        "{\"type\":\"host_remove\",\"host\":\"h3\"}",
        "{\"type\":\"migration_begin\",\"vm\":\"v\",\"to\":\"h2\"}",
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        expect_refused(s, 1, refused[i], "[no_quorum]", "not quorate (1 of 3 expected votes)");
    /* The migration to h2 ended when h2 left; a host reports on. */
    assert_int_equal(cl_state_nr_migrations(s), 0);
    expect_ok(s, 1, "{\"type\":\"vm_report\",\"name\":\"v\",\"run\":\"crashed\"}");
    announce(s, 1, "h1", 8192, 8);
    /* Quorate again: a new epoch; a raised expected vote count is obeyed. */
    uint32_t m12[] = {1, 2};
    set_members(s, m12, 2);
    assert_true(cl_state_quorate(s));
    /* Its epoch is its ring's sequence number, above every one before. */
    assert_true(cl_state_quorum_epoch(s) > q);
    assert_int_equal(cl_state_quorum_epoch(s), cl_state_config_ring(s));
    q = cl_state_quorum_epoch(s);
    expect_ok(s, 2, "{\"type\":\"host_announce\",\"host\":\"h2\",\"mem_mib\":4096,\"vcpus\":4,"
                    "\"migration_addr\":\"10.77.0.2\",\"expected_votes\":5}");
    assert_false(cl_state_quorate(s)); /* 2 of 5 */
    expect_refused(s, 1, refused[0], "[no_quorum]", "2 of 5 expected votes");
    uint32_t m123[] = {1, 2, 3};
    set_members(s, m123, 3);
    assert_true(cl_state_quorate(s));
    assert_true(cl_state_quorum_epoch(s) > q);
    assert_int_equal(cl_state_quorum_epoch(s), cl_state_config_ring(s));
    /* A commit needs quorum too (a fresh migration, committed in a
     * minority: refused). */
    start_on(s, "v", "h1");
    report_running(s, "v");
    begin(s, "v", "h3");
    expect_ok(s, 3, "{\"type\":\"migration_listening\",\"id\":2,\"port\":1,\"token\":\"t\"}");
    set_members(s, m123, 3);
    expect_ok(s, 2, "{\"type\":\"host_announce\",\"host\":\"h2\",\"mem_mib\":4096,\"vcpus\":4,"
                    "\"migration_addr\":\"10.77.0.2\",\"expected_votes\":7}");
    expect_refused(s, 1, "{\"type\":\"migration_commit\",\"id\":2}", "[no_quorum]",
                   "migration_commit refused");
    cl_state_free(s);
}

/* A host whose node left (node down) is lost, and so is what its VMs run:
 * never silently "running". A host whose ternd alone left is not. */
static void test_lost_hosts(void **unused)
{
    (void)unused;
    struct cl_state *s = three_hosts();
    define(s, "a", 256, 1);
    define(s, "b", 256, 1);
    define(s, "c", 256, 1);
    start_on(s, "a", "h2");
    report_running(s, "a");
    start_on(s, "b", "h1");
    report_running(s, "b");
    begin(s, "b", "h2"); /* 1: committed to h2, then h2 is lost */
    expect_ok(s, 2, "{\"type\":\"migration_listening\",\"id\":1,\"port\":1,\"token\":\"t\"}");
    expect_ok(s, 1, "{\"type\":\"migration_commit\",\"id\":1}");
    start_on(s, "c", "h3");
    report_running(s, "c");
    /* h3's ternd stops (its node stays): its VMs keep running. */
    uint32_t m12[] = {1, 2}, gone3[] = {3};
    enum cl_leave_reason proc[] = {CL_LEFT_PROCESS}, node[] = {CL_LEFT_NODE};
    struct cl_config c = {.members = m12, .nr_members = 2, .left = gone3, .left_reason = proc,
                          .nr_left = 1};
    cl_state_apply_config(s, &c);
    assert_false(cl_state_host(s, "h3")->online);
    assert_false(cl_state_host(s, "h3")->lost);
    assert_int_equal(cl_state_vm(s, "c")->run, CL_RUN_RUNNING);
    /* A departure list naming a member (a hostile or broken sync_chunk
     * header; fuzz_cluster_msg found it made h1 online and lost at once, a
     * state that does not load): nothing changes for that member. */
    uint32_t gone1[] = {1};
    c = (struct cl_config){.members = m12, .nr_members = 2, .left = gone1, .left_reason = node,
                           .nr_left = 1};
    cl_state_apply_config(s, &c);
    assert_true(cl_state_host(s, "h1")->online);
    assert_false(cl_state_host(s, "h1")->lost);
    assert_int_equal(cl_state_host(s, "h1")->fence, CL_FENCE_NONE);
    assert_int_equal(cl_state_vm(s, "b")->run, CL_RUN_MIGRATING);
    /* h2's node goes down: its VMs, and the one just handed to it, are lost. */
    uint32_t m1[] = {1}, gone2[] = {2};
    c = (struct cl_config){.members = m1, .nr_members = 1, .left = gone2, .left_reason = node,
                           .nr_left = 1};
    cl_state_apply_config(s, &c);
    assert_true(cl_state_host(s, "h2")->lost);
    const struct cl_vm *a = cl_state_vm(s, "a"), *b = cl_state_vm(s, "b");
    assert_int_equal(a->run, CL_RUN_LOST);
    assert_string_equal(a->owner, "h2");
    assert_non_null(strstr(a->detail, "host h2 left the cluster (node down)"));
    assert_int_equal(b->run, CL_RUN_LOST);
    assert_string_equal(b->owner, "h2");
    assert_int_equal(b->migration_id, 0);
    assert_int_equal(cl_state_nr_migrations(s), 0);
    assert_string_equal(json_string_value(json_object_get(b->last_migration, "reason")),
                        "host h2 left the cluster after the migration committed");
    /* Back with quorum: a lost VM cannot be started elsewhere or undefined,
     * but may be asked to stop (done when its host returns). */
    uint32_t m13[] = {1, 3};
    set_members(s, m13, 2);
    expect_refused(s, 1, "{\"type\":\"vm_start\",\"name\":\"a\",\"host\":\"h1\"}", "[conflict]",
                   "may still run on h2");
    expect_refused(s, 1, "{\"type\":\"migration_begin\",\"vm\":\"a\",\"to\":\"h1\"}",
                   "[conflict]", "lost");
    expect_ok(s, 1, "{\"type\":\"vm_stop\",\"name\":\"a\"}");
    assert_int_equal(cl_state_vm(s, "a")->run, CL_RUN_LOST);
    expect_refused(s, 1, "{\"type\":\"vm_undefine\",\"name\":\"a\"}", "[conflict]", "lost");
    uint64_t mem;
    uint32_t cpus;
    cl_state_host_free(s, "h2", &mem, &cpus);
    assert_int_equal(mem, 4096 - 512); /* a lost VM still holds its room */
    /* h2 returns and reports: b runs there; a had stopped. */
    set_members(s, (uint32_t[]){1, 2, 3}, 3);
    assert_false(cl_state_host(s, "h2")->lost);
    expect_ok(s, 2, "{\"type\":\"vm_report\",\"name\":\"b\",\"run\":\"running\"}");
    assert_int_equal(cl_state_vm(s, "b")->run, CL_RUN_RUNNING);
    assert_string_equal(cl_state_vm(s, "b")->detail, "");
    expect_ok(s, 2, "{\"type\":\"vm_report\",\"name\":\"a\",\"run\":\"stopped\"}");
    assert_int_equal(cl_state_vm(s, "a")->run, CL_RUN_STOPPED);
    /* Removing a host that still owns VMs: they have no host any more. */
    set_members(s, m13, 2);
    expect_ok(s, 1, "{\"type\":\"host_remove\",\"host\":\"h2\"}");
    assert_int_equal(cl_state_vm(s, "b")->run, CL_RUN_CRASHED);
    assert_string_equal(cl_state_vm(s, "b")->owner, "");
    assert_non_null(strstr(cl_state_vm(s, "b")->detail, "removed from the cluster"));
    char *d = dump(s);
    struct cl_state *t = cl_state_new();
    json_t *doc = cl_state_to_json(s);
    struct tern_err err;
    assert_int_equal(cl_state_from_json(t, doc, &err), 0); /* consistent */
    json_decref(doc);
    free(d);
    cl_state_free(t);
    cl_state_free(s);
}

/* Defect 9: the state is bounded by what the cluster can carry: a define
 * that would pass the limit is refused, clearly. */
static void test_state_size_bound(void **unused)
{
    (void)unused;
    struct cl_state *s = three_hosts();
    char cmd[CL_CMDLINE_MAX];
    memset(cmd, 'x', sizeof(cmd) - 1);
    cmd[sizeof(cmd) - 1] = '\0';
    char *m = malloc(4096);
    struct tern_err err;
    size_t n = 0;
    double t0 = now_ms();
    for (;; n++) {
        snprintf(m, 4096, "{\"type\":\"vm_define\",\"name\":\"v%06zu\",\"config\":{\"kernel\":"
                 "\"/k\",\"mem_mib\":64,\"cmdline\":\"%s\"}}", n, cmd);
        json_t *j = json_loads(m, 0, NULL);
        int rc = cl_state_apply(s, 1, j, &err);
        json_decref(j);
        if (rc < 0)
            break;
        assert_true(n < 100000);
    }
    assert_int_equal(err.code, TERN_ERR_NO_CAPACITY);
    assert_non_null(strstr(err.msg, "would grow beyond 64 MiB"));
    assert_true(cl_state_charged_bytes(s) <= CL_STATE_MAX_BYTES);
    json_t *doc = cl_state_to_json(s);
    char *text = json_dumps(doc, JSON_COMPACT);
    size_t bytes = strlen(text);
    printf("# the state holds %zu VMs with the longest command line (%zu bytes as JSON, %llu "
           "charged) in %.0f ms of applies\n",
           n, bytes, (unsigned long long)cl_state_charged_bytes(s), now_ms() - t0);
    assert_true(bytes <= CL_STATE_MAX_BYTES);
    /* Undefining makes room again. */
    expect_ok(s, 1, "{\"type\":\"vm_undefine\",\"name\":\"v000000\"}");
    snprintf(m, 4096, "{\"type\":\"vm_define\",\"name\":\"again\",\"config\":{\"kernel\":"
             "\"/k\",\"mem_mib\":64,\"cmdline\":\"%s\"}}", cmd);
    expect_ok(s, 1, m);
    free(text);
    json_decref(doc);
    free(m);
    cl_state_free(s);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void test_thousand_vms(void **unused)
{
    (void)unused;
    struct cl_state *s = cl_state_new();
    uint32_t members[16];
    for (unsigned i = 0; i < 16; i++) {
        char name[16];
        snprintf(name, sizeof(name), "host%02u", i);
        announce(s, i + 1, name, 262144, 512);
        members[i] = i + 1;
    }
    set_members(s, members, 16);
    double t0 = now_ms();
    for (unsigned i = 0; i < 1000; i++) {
        char m[512];
        snprintf(m, sizeof(m),
                 "{\"type\":\"vm_define\",\"name\":\"vm%04u\",\"ha\":true,\"config\":{\"kernel\":"
                 "\"/var/lib/tern/images/vmlinux\",\"cmdline\":\"console=ttyS0 root=/dev/vda\","
                 "\"mem_mib\":%u,\"vcpus\":2,\"disks\":[{\"path\":\"/shared/vm%04u.img\"}]}}",
                 (i * 7919) % 1000, 512 + (i % 4) * 256, i);
        expect_ok(s, 1, m);
        snprintf(m, sizeof(m), "{\"type\":\"vm_start\",\"name\":\"vm%04u\"}", (i * 7919) % 1000);
        expect_ok(s, 1, m);
    }
    double t1 = now_ms();
    assert_int_equal(cl_state_nr_vms(s), 1000);
    /* Placement spread them: every host got some. */
    for (unsigned i = 0; i < 16; i++) {
        uint64_t mem;
        uint32_t cpus;
        cl_state_host_free(s, cl_state_host_at(s, i)->name, &mem, &cpus);
        assert_true(mem < 262144);
    }
    char *dir = tmpdir();
    char path[512];
    snprintf(path, sizeof(path), "%s/state.json", dir);
    struct tern_err err;
    double t2 = now_ms();
    json_t *doc = cl_state_to_json(s);
    char *text = json_dumps(doc, JSON_COMPACT);
    double t3 = now_ms();
    assert_int_equal(cl_state_save(s, path, &err), 0);
    double t4 = now_ms();
    struct cl_state *t = cl_state_new();
    assert_int_equal(cl_state_load(t, path, &err), 0);
    double t5 = now_ms();
    char *a = dump(s), *b = dump(t);
    assert_string_equal(a, b);
    printf("# 1000 VMs on 16 hosts: apply 2000 messages %.1f ms, to_json+dump %.1f ms "
           "(%zu bytes), save %.1f ms, load %.1f ms\n",
           t1 - t0, t3 - t2, strlen(text), t4 - t3, t5 - t4);
    free(a);
    free(b);
    free(text);
    json_decref(doc);
    unlink(path);
    rmdir(dir);
    free(dir);
    cl_state_free(s);
    cl_state_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_config_control_characters),
        cmocka_unit_test(test_malformed_messages),
        cmocka_unit_test(test_host_announce),
        cmocka_unit_test(test_host_mode),
        cmocka_unit_test(test_vm_define_undefine),
        cmocka_unit_test(test_shared_disks),
        cmocka_unit_test(test_vm_start_stop),
        cmocka_unit_test(test_vm_report),
        cmocka_unit_test(test_migration_success),
        cmocka_unit_test(test_migration_refusals_and_abort),
        cmocka_unit_test(test_capacity_and_placement),
        cmocka_unit_test(test_set_members),
        cmocka_unit_test(test_version_counting),
        cmocka_unit_test(test_fence_check), cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_thousand_vms),
        cmocka_unit_test(test_quorum_rules),
        cmocka_unit_test(test_lost_hosts),
        cmocka_unit_test(test_state_size_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
