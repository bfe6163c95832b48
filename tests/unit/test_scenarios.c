/* The cluster's decisions, from scenario files (tests/scenarios/NAME.scn):
 * membership changes, messages and fencing results in, the expected state
 * of hosts and VMs out, checked line by line, as pve-ha-manager's
 * regression tests do for Proxmox. No I/O, no corosync, no VM: the state
 * machine (ha/) alone, exactly as every replica runs it.
 *
 * A scenario is lines of commands (# starts a comment):
 *   hosts h1 h2 h3 [mem=MiB] [vcpus=N] [watchdog=S] [votes=N]
 *                         hosts 1..N announce (node i is host hi's), all
 *                         members, N expected votes: a quorate configuration
 *   config MEMBERS [left=NODE:node|process,...]
 *                         a configuration change; MEMBERS like 1,2 (or -)
 *   announce NODE HOST [mem=..] [vcpus=..] [watchdog=..] [votes=..]
 *   define VM [mem=..] [vcpus=..] [ha] [priority=N] [group=G] [disk=PATH[:ro]]
 *   start VM [on HOST]     (sent by node 1)
 *   report VM running|stopped|crashed [host-failed]   (sent by its owner;
 *                          host-failed: its host lost it, not its guest)
 *   msg NODE {JSON}        any message from node NODE
 *   fenced HOST device|watchdog|operator  (from the fencer, with the open episode)
 *   fence-failed HOST      (from the fencer)
 *   refuse CODE COMMAND... the command's message must be refused with CODE
 *   expect vm VM KEY=VALUE...    KEY a field of the VM's JSON (dots for
 *   expect host HOST KEY=VALUE...  nested ones: fence.state); VALUE its JSON
 *                                  text without quotes; KEY~=TEXT: contains
 *   expect fencer TARGET HOST|none
 *   expect recovering N
 * Every command that sends a message expects it applied, unless `refuse`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ha/cluster_state.h"

struct scn {
    const char *file;
    int line;
    struct cl_state *s;
    char errors[8192];
    size_t elen;
    int failures;
};

static void failf(struct scn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(c->errors + c->elen, sizeof(c->errors) - c->elen, "%s:%d: ", c->file, c->line);
    if (n > 0 && (size_t)n < sizeof(c->errors) - c->elen)
        c->elen += (size_t)n;
    n = vsnprintf(c->errors + c->elen, sizeof(c->errors) - c->elen, fmt, ap);
    if (n > 0 && (size_t)n < sizeof(c->errors) - c->elen)
        c->elen += (size_t)n;
    if (c->elen + 1 < sizeof(c->errors))
        c->errors[c->elen++] = '\n';
    c->errors[c->elen] = '\0';
    c->failures++;
    va_end(ap);
}

/* "key=value" among the words: the value, or NULL. */
static const char *opt(char **w, int n, const char *key)
{
    size_t kl = strlen(key);
    for (int i = 0; i < n; i++)
        if (!strncmp(w[i], key, kl) && w[i][kl] == '=')
            return w[i] + kl + 1;
    return NULL;
}

static bool flag(char **w, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(w[i], name))
            return true;
    return false;
}

static uint32_t node_of(const struct cl_state *s, const char *host)
{
    const struct cl_host *h = cl_state_host(s, host);
    return h ? h->nodeid : 0;
}

/* Applies msg (consumed) from node; `refuse` is NULL or the code expected. */
static void send_msg(struct scn *c, uint32_t node, json_t *msg, const char *refuse)
{
    if (!msg) {
        failf(c, "could not build the message");
        return;
    }
    struct tern_err err = {0};
    int rc = cl_state_apply(c->s, node, msg, &err);
    char *text = json_dumps(msg, JSON_COMPACT);
    if (refuse && rc == 0)
        failf(c, "%s was applied; expected refused (%s)", text, refuse);
    else if (refuse && strcmp(tern_err_code_name(err.code), refuse) != 0)
        failf(c, "%s refused with [%s] %s; expected [%s]", text, tern_err_code_name(err.code),
              err.msg, refuse);
    else if (!refuse && rc != 0)
        failf(c, "%s refused: [%s] %s", text, tern_err_code_name(err.code), err.msg);
    free(text);
    json_decref(msg);
}

static void config(struct scn *c, const char *members, const char *left)
{
    uint32_t m[64], l[64];
    enum cl_leave_reason why[64];
    size_t nm = 0, nl = 0;
    if (strcmp(members, "-") != 0)
        for (const char *p = members; *p && nm < 64;) {
            m[nm++] = (uint32_t)strtoul(p, (char **)&p, 10);
            if (*p == ',')
                p++;
            else if (*p)
                break;
        }
    for (const char *p = left; p && *p && nl < 64;) {
        l[nl] = (uint32_t)strtoul(p, (char **)&p, 10);
        why[nl] = CL_LEFT_PROCESS;
        if (!strncmp(p, ":node", 5)) {
            why[nl] = CL_LEFT_NODE;
            p += 5;
        } else if (!strncmp(p, ":process", 8)) {
            p += 8;
        }
        nl++;
        if (*p == ',')
            p++;
        else if (*p)
            break;
    }
    struct cl_config cfg = {.members = m, .nr_members = nm, .left = l, .left_reason = why,
                            .nr_left = nl};
    cl_state_apply_config(c->s, &cfg);
    if (cl_state_take_fault(c->s))
        failf(c, "applying the configuration ran out of memory");
}

static json_t *announce_msg(const char *host, char **w, int n, uint32_t votes)
{
    const char *mem = opt(w, n, "mem"), *vcpus = opt(w, n, "vcpus"), *wd = opt(w, n, "watchdog");
    json_t *m = cl_msg_new(CL_MSG_HOST_ANNOUNCE);
    json_object_set_new(m, "host", json_string(host));
    json_object_set_new(m, "mem_mib", json_integer(mem ? atoll(mem) : 4096));
    json_object_set_new(m, "vcpus", json_integer(vcpus ? atoll(vcpus) : 8));
    json_object_set_new(m, "migration_addr", json_string("10.0.0.1"));
    if (wd)
        json_object_set_new(m, "watchdog_s", json_integer(atoll(wd)));
    const char *v = opt(w, n, "votes");
    json_object_set_new(m, "expected_votes", json_integer(v ? atoll(v) : votes));
    return m;
}

/* The JSON value at a dotted path. */
static const json_t *at_path(const json_t *j, const char *path)
{
    char key[128];
    while (j && *path) {
        const char *dot = strchr(path, '.');
        size_t len = dot ? (size_t)(dot - path) : strlen(path);
        if (len >= sizeof(key))
            return NULL;
        memcpy(key, path, len);
        key[len] = '\0';
        j = json_object_get(j, key);
        path += len + (dot ? 1 : 0);
    }
    return j;
}

static void expect_fields(struct scn *c, const char *what, const char *name, json_t *obj,
                          char **w, int n)
{
    if (!obj) {
        failf(c, "%s %s does not exist", what, name);
        return;
    }
    for (int i = 0; i < n; i++) {
        char *eq = strchr(w[i], '=');
        if (!eq) {
            failf(c, "expect: '%s' is not KEY=VALUE", w[i]);
            continue;
        }
        bool contains = eq > w[i] && eq[-1] == '~';
        char key[128];
        size_t kl = (size_t)(eq - w[i]) - (contains ? 1 : 0);
        snprintf(key, sizeof(key), "%.*s", (int)kl, w[i]);
        const char *want = eq + 1;
        const json_t *v = at_path(obj, key);
        char got[1024];
        if (!v)
            snprintf(got, sizeof(got), "(absent)");
        else if (json_is_string(v))
            snprintf(got, sizeof(got), "%s", json_string_value(v));
        else {
            char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            snprintf(got, sizeof(got), "%s", t ? t : "?");
            free(t);
        }
        bool ok = contains ? strstr(got, want) != NULL : !strcmp(got, want);
        if (!ok)
            failf(c, "%s %s: %s is '%s', expected %s'%s'", what, name, key, got,
                  contains ? "to contain " : "", want);
    }
}

static void run_line(struct scn *c, char **w, int n, const char *rest_json, const char *refuse)
{
    struct cl_state *s = c->s;
    const char *cmd = w[0];
    if (!strcmp(cmd, "hosts")) {
        int nh = 0;
        uint32_t members[64];
        for (int i = 1; i < n && !strchr(w[i], '='); i++)
            members[nh++] = (uint32_t)(i);
        char list[256] = "";
        for (int i = 0; i < nh; i++)
            snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%u", i ? "," : "",
                     members[i]);
        config(c, list, NULL);
        for (int i = 1; i <= nh; i++)
            send_msg(c, (uint32_t)i, announce_msg(w[i], w, n, (uint32_t)nh), NULL);
        if (!cl_state_quorate(s))
            failf(c, "the hosts did not make a quorate cluster");
    } else if (!strcmp(cmd, "config")) {
        if (n < 2) {
            failf(c, "config: members missing");
            return;
        }
        config(c, w[1], opt(w, n, "left"));
    } else if (!strcmp(cmd, "announce") && n >= 3) {
        uint32_t votes = cl_state_expected_votes(s);
        send_msg(c, (uint32_t)atoi(w[1]), announce_msg(w[2], w, n, votes ? votes : 3), refuse);
    } else if (!strcmp(cmd, "define") && n >= 2) {
        const char *mem = opt(w, n, "mem"), *vcpus = opt(w, n, "vcpus"),
                   *prio = opt(w, n, "priority"), *group = opt(w, n, "group"),
                   *disk = opt(w, n, "disk");
        json_t *cfg = json_pack("{s:s, s:I, s:I}", "kernel", "/boot/k", "mem_mib",
                                (json_int_t)(mem ? atoll(mem) : 512), "vcpus",
                                (json_int_t)(vcpus ? atoll(vcpus) : 1));
        if (disk) {
            char path[256];
            snprintf(path, sizeof(path), "%s", disk);
            char *colon = strchr(path, ':');
            bool ro = colon && !strcmp(colon, ":ro");
            if (colon)
                *colon = '\0';
            json_object_set_new(cfg, "disks", json_pack("[{s:s, s:b}]", "path", path, "ro", ro));
        }
        json_t *m = cl_msg_new(CL_MSG_VM_DEFINE);
        json_object_set_new(m, "name", json_string(w[1]));
        json_object_set_new(m, "config", cfg);
        json_object_set_new(m, "ha", json_boolean(flag(w, n, "ha")));
        if (prio)
            json_object_set_new(m, "priority", json_integer(atoll(prio)));
        if (group)
            json_object_set_new(m, "group", json_string(group));
        send_msg(c, 1, m, refuse);
    } else if (!strcmp(cmd, "start") && n >= 2) {
        json_t *m = cl_msg_new(CL_MSG_VM_START);
        json_object_set_new(m, "name", json_string(w[1]));
        if (n >= 4 && !strcmp(w[2], "on"))
            json_object_set_new(m, "host", json_string(w[3]));
        send_msg(c, 1, m, refuse);
    } else if (!strcmp(cmd, "report") && n >= 3) {
        const struct cl_vm *vm = cl_state_vm(s, w[1]);
        uint32_t node = vm ? node_of(s, vm->owner) : 0;
        json_t *m = cl_msg_new(CL_MSG_VM_REPORT);
        json_object_set_new(m, "name", json_string(w[1]));
        json_object_set_new(m, "run", json_string(w[2]));
        if (flag(w, n, "host-failed"))
            json_object_set_new(m, "host_failed", json_true());
        send_msg(c, node ? node : 1, m, refuse);
    } else if (!strcmp(cmd, "msg") && n >= 2 && rest_json) {
        json_error_t je;
        json_t *m = json_loads(rest_json, 0, &je);
        if (!m)
            failf(c, "msg: bad JSON: %s", je.text);
        else
            send_msg(c, (uint32_t)atoi(w[1]), m, refuse);
    } else if ((!strcmp(cmd, "fenced") && n >= 3) || (!strcmp(cmd, "fence-failed") && n >= 2)) {
        const struct cl_host *h = cl_state_host(s, w[1]);
        const struct cl_host *f = cl_state_fencer(s, w[1]);
        json_t *m = cl_msg_new(!strcmp(cmd, "fenced") ? CL_MSG_HOST_FENCED
                                                      : CL_MSG_HOST_FENCE_FAILED);
        json_object_set_new(m, "host", json_string(w[1]));
        json_object_set_new(m, "seq", json_integer(h ? h->fence_seq : 0));
        if (!strcmp(cmd, "fenced"))
            json_object_set_new(m, "method", json_string(w[2]));
        json_object_set_new(m, "detail", json_string("from the scenario"));
        send_msg(c, f ? f->nodeid : 1, m, refuse);
    } else if (!strcmp(cmd, "expect") && n >= 3) {
        if (!strcmp(w[1], "vm")) {
            const struct cl_vm *vm = cl_state_vm(s, w[2]);
            json_t *j = vm ? cl_vm_to_json(vm) : NULL;
            expect_fields(c, "VM", w[2], j, w + 3, n - 3);
            json_decref(j);
        } else if (!strcmp(w[1], "host")) {
            const struct cl_host *h = cl_state_host(s, w[2]);
            json_t *j = h ? cl_host_to_json(s, h) : NULL;
            expect_fields(c, "host", w[2], j, w + 3, n - 3);
            json_decref(j);
        } else if (!strcmp(w[1], "fencer") && n >= 4) {
            const struct cl_host *f = cl_state_fencer(s, w[2]);
            const char *got = f ? f->name : "none";
            if (strcmp(got, w[3]) != 0)
                failf(c, "the fencer of %s is %s, expected %s", w[2], got, w[3]);
        } else if (!strcmp(w[1], "recovering")) {
            size_t got = cl_state_nr_recovering(s);
            if (got != (size_t)atoi(w[2]))
                failf(c, "%zu VMs wait for recovery, expected %s", got, w[2]);
        } else {
            failf(c, "unknown expect '%s'", w[1]);
        }
    } else {
        failf(c, "unknown or incomplete command '%s'", cmd);
    }
}

static void run_file(struct scn *c, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        failf(c, "cannot open: %s", strerror(errno));
        return;
    }
    char line[4096];
    while (fgets(line, sizeof(line), f)) {
        c->line++;
        char *hash = strchr(line, '#');
        char *brace = strchr(line, '{');
        if (hash && (!brace || hash < brace))
            *hash = '\0';
        /* The JSON of `msg` is the rest of the line from its '{'. */
        char json[4096] = "";
        if (brace) {
            snprintf(json, sizeof(json), "%s", brace);
            *brace = '\0';
        }
        char *w[64];
        int n = 0;
        for (char *tok = strtok(line, " \t\r\n"); tok && n < 64; tok = strtok(NULL, " \t\r\n"))
            w[n++] = tok;
        if (n == 0)
            continue;
        const char *refuse = NULL;
        if (!strcmp(w[0], "refuse") && n >= 3) {
            refuse = w[1];
            memmove(w, w + 2, (size_t)(n - 2) * sizeof(*w));
            n -= 2;
        }
        run_line(c, w, n, json[0] ? json : NULL, refuse);
    }
    fclose(f);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void scenarios(void **state)
{
    (void)state;
    const char *src = getenv("TERN_SOURCE");
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/tests/scenarios", src ? src : ".");
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("cannot open %s: %s", dir, strerror(errno));
    char *names[256];
    int nr = 0;
    struct dirent *e;
    while ((e = readdir(d)) && nr < 256) {
        size_t l = strlen(e->d_name);
        if (l > 4 && !strcmp(e->d_name + l - 4, ".scn"))
            names[nr++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)nr, sizeof(*names), by_name);
    assert_true(nr >= 8);
    int failed = 0;
    for (int i = 0; i < nr; i++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        struct scn c = {.file = names[i], .s = cl_state_new()};
        assert_non_null(c.s);
        run_file(&c, path);
        fprintf(stderr, "%-44s %s\n", names[i], c.failures ? "FAILED" : "ok");
        if (c.failures) {
            fputs(c.errors, stderr);
            failed++;
        }
        cl_state_free(c.s);
        free(names[i]);
    }
    assert_int_equal(failed, 0);
}

/* The runner itself must be able to fail: a wrong expectation is caught. */
static void runner_catches_a_wrong_expectation(void **state)
{
    (void)state;
    char path[] = "/tmp/tern-scn-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = "hosts h1 h2 h3\n"
                        "define a ha\n"
                        "start a on h2\n"
                        "expect vm a owner=h3\n"           /* wrong: h2 */
                        "refuse conflict start a on h1\n"  /* right */
                        "refuse conflict define a\n";      /* right: already defined */
    assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
    close(fd);
    struct scn c = {.file = "inline", .s = cl_state_new()};
    run_file(&c, path);
    unlink(path);
    cl_state_free(c.s);
    assert_int_equal(c.failures, 1);
    assert_non_null(strstr(c.errors, "owner is 'h2', expected 'h3'"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(runner_catches_a_wrong_expectation),
        cmocka_unit_test(scenarios),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
