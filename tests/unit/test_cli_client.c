/* ternctl's client side: reply parsing, bounded line reading, deadlines,
 * exit codes, and whole commands (in-process and the real binary) against
 * a tiny unix-socket server thread that replays scripted replies. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "cli/cli.h"
#include "tests/support/proc.h"

/* ---- reply parsing ---- */

static void parse_good(const char *line, enum cli_reply_kind kind, struct cli_reply *r)
{
    struct tern_err err = {0};
    if (cli_reply_parse(line, strlen(line), r, &err) != 0)
        fail_msg("'%s' refused: %s", line, err.msg);
    assert_int_equal(r->kind, kind);
    assert_non_null(r->body);
}

static void parse_bad(const char *line, const char *needle)
{
    struct cli_reply r;
    struct tern_err err = {0};
    if (cli_reply_parse(line, strlen(line), &r, &err) == 0)
        fail_msg("'%s' accepted", line);
    if (!strstr(err.msg, needle))
        fail_msg("'%s': '%s' lacks '%s'", line, err.msg, needle);
    assert_null(r.root);
}

static void test_reply_parse(void **state)
{
    (void)state;
    struct cli_reply r;
    parse_good("{\"progress\":{\"phase\":\"round\",\"round\":2}}", CLI_REPLY_PROGRESS, &r);
    assert_int_equal(json_integer_value(json_object_get(r.body, "round")), 2);
    cli_reply_clear(&r);
    assert_null(r.root);

    parse_good("{\"ok\":true,\"result\":{\"vms\":[]}}", CLI_REPLY_OK, &r);
    assert_true(json_is_array(json_object_get(r.body, "vms")));
    cli_reply_clear(&r);
    parse_good("{\"ok\":true}", CLI_REPLY_OK, &r); /* vm.undefine's {} may be left out */
    assert_int_equal(json_object_size(r.body), 0);
    cli_reply_clear(&r);

    parse_good("{\"ok\":false,\"error\":{\"code\":\"not_found\",\"message\":\"VM 'x' is not defined\"}}",
               CLI_REPLY_ERROR, &r);
    assert_string_equal(r.code, "not_found");
    assert_string_equal(r.message, "VM 'x' is not defined");
    cli_reply_clear(&r);
    parse_good("{\"ok\":false,\"error\":{\"message\":\"no code\"}}", CLI_REPLY_ERROR, &r);
    assert_string_equal(r.code, "failed");
    cli_reply_clear(&r);
    parse_good("{\"ok\":false,\"error\":\"a bare message\"}", CLI_REPLY_ERROR, &r);
    assert_string_equal(r.code, "failed");
    assert_string_equal(r.message, "a bare message");
    cli_reply_clear(&r);

    parse_bad("hello", "malformed reply from ternd (not JSON");
    parse_bad("hello", ": hello");
    parse_bad("", "not JSON");
    parse_bad("[1,2]", "not a JSON object");
    parse_bad("{}", "neither \"ok\" nor \"progress\"");
    parse_bad("{\"ok\":1}", "\"ok\" is not true or false");
    parse_bad("{\"ok\":false}", "\"ok\":false without an error message");
    parse_bad("{\"ok\":false,\"error\":{\"code\":\"x\"}}", "without an error message");
    parse_bad("{\"ok\":false,\"error\":{\"code\":7,\"message\":\"m\"}}", "error \"code\" is not a string");
    parse_bad("{\"ok\":true,\"result\":[1]}", "\"result\" is not an object");
    parse_bad("{\"progress\":3}", "\"progress\" is not an object");
    parse_bad("{\"ok\":true,\"ok\":true}", "not JSON"); /* duplicate keys */
    /* Long or binary lines are quoted cut and printable. */
    char junk[300];
    memset(junk, 'z', sizeof(junk));
    junk[0] = '\x01';
    struct tern_err err = {0};
    assert_int_equal(cli_reply_parse(junk, sizeof(junk), &r, &err), -1);
    assert_non_null(strstr(err.msg, ": ?zzz"));
    assert_non_null(strstr(err.msg, "z..."));
    assert_true(strlen(err.msg) < 200);
}

static int exit_for(enum cli_cmd cmd, const char *line)
{
    struct cli_reply r;
    struct tern_err err = {0};
    if (cli_reply_parse(line, strlen(line), &r, &err) != 0)
        fail_msg("'%s': %s", line, err.msg);
    int rc = cli_exit_for_error(cmd, &r);
    cli_reply_clear(&r);
    return rc;
}

static void test_exit_codes(void **state)
{
    (void)state;
    static const char evac_ran[] =
        "{\"ok\":false,\"error\":{\"code\":\"failed\",\"message\":\"some VMs could not be moved\"},"
        "\"result\":{\"host\":\"a\",\"moved\":[],\"failed\":[{\"vm\":\"v\",\"error\":\"e\"}]}}";
    static const char evac_inside[] =
        "{\"ok\":false,\"error\":{\"code\":\"failed\",\"message\":\"m\",\"failed\":[]}}";
    static const char failed[] = "{\"ok\":false,\"error\":{\"code\":\"failed\",\"message\":\"m\"}}";
    static const char not_found[] = "{\"ok\":false,\"error\":{\"code\":\"not_found\",\"message\":\"m\"}}";
    static const char no_code[] = "{\"ok\":false,\"error\":\"m\"}";
    /* 4 only for an evacuation that ran and left VMs behind. */
    assert_int_equal(exit_for(CLI_CMD_HOST_EVACUATE, evac_ran), CLI_EXIT_PARTIAL);
    assert_int_equal(exit_for(CLI_CMD_HOST_EVACUATE, evac_inside), CLI_EXIT_PARTIAL);
    assert_int_equal(exit_for(CLI_CMD_HOST_EVACUATE, failed), CLI_EXIT_FAILED); /* refused before it ran */
    assert_int_equal(exit_for(CLI_CMD_HOST_EVACUATE, not_found), CLI_EXIT_FAILED);
    assert_int_equal(exit_for(CLI_CMD_VM_MIGRATE, failed), CLI_EXIT_FAILED);
    assert_int_equal(exit_for(CLI_CMD_VM_MIGRATE, evac_ran), CLI_EXIT_FAILED);
    assert_int_equal(exit_for(CLI_CMD_STATUS, no_code), CLI_EXIT_FAILED);
    assert_int_equal(CLI_EXIT_OK, 0);
    assert_int_equal(CLI_EXIT_USAGE, 2);
    assert_int_equal(CLI_EXIT_UNREACHABLE, 3);
}

/* ---- line reading over a socketpair ---- */

static void write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        assert_true(w > 0);
        c += w;
        n -= (size_t)w;
    }
}

static void test_read_lines(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct cli_conn c;
    cli_conn_init_fd(&c, sv[0]);
    struct tern_err err = {0};
    char *line;
    size_t len;
    int64_t dl = cli_now_ms() + 2000;
    write_all(sv[1], "{\"progress\":{}}\nsecond\nthi", 26);
    assert_int_equal(cli_conn_read_line(&c, dl, &line, &len, &err), 0);
    assert_string_equal(line, "{\"progress\":{}}");
    assert_int_equal(len, 15);
    assert_int_equal(cli_conn_read_line(&c, dl, &line, &len, &err), 0);
    assert_string_equal(line, "second");
    write_all(sv[1], "rd\n\n", 4);
    assert_int_equal(cli_conn_read_line(&c, dl, &line, &len, &err), 0);
    assert_string_equal(line, "third"); /* split across two reads */
    assert_int_equal(cli_conn_read_line(&c, dl, &line, &len, &err), 0);
    assert_int_equal(len, 0);
    /* Parsed replies: a progress line, then the final one. */
    write_all(sv[1], "{\"progress\":{\"round\":1}}\n{\"ok\":true,\"result\":{\"a\":1}}\n", 55);
    struct cli_reply r;
    assert_int_equal(cli_conn_next(&c, dl, &r, &err), 0);
    assert_int_equal(r.kind, CLI_REPLY_PROGRESS);
    cli_reply_clear(&r);
    assert_int_equal(cli_conn_next(&c, dl, &r, &err), 0);
    assert_int_equal(r.kind, CLI_REPLY_OK);
    assert_int_equal(json_integer_value(json_object_get(r.body, "a")), 1);
    cli_reply_clear(&r);
    /* A deadline with nothing coming. */
    int64_t t0 = cli_now_ms();
    assert_int_equal(cli_conn_read_line(&c, t0 + 150, &line, &len, &err), -1);
    assert_true(cli_now_ms() - t0 >= 150);
    assert_non_null(strstr(err.msg, "timed out waiting for ternd's reply"));
    /* End of stream in the middle of a line. */
    write_all(sv[1], "{\"ok\":tr", 8);
    close(sv[1]);
    assert_int_equal(cli_conn_read_line(&c, dl, &line, &len, &err), -1);
    assert_string_equal(err.msg, "ternd closed the connection in the middle of a reply line");
    cli_conn_close(&c);

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cli_conn_init_fd(&c, sv[0]);
    close(sv[1]);
    assert_int_equal(cli_conn_read_line(&c, dl, &line, &len, &err), -1);
    assert_string_equal(err.msg, "ternd closed the connection before its final reply");
    cli_conn_close(&c);
}

static void test_line_limit(void **state)
{
    (void)state;
    int sv[2];
    char big[300];
    struct tern_err err = {0};
    char *line;
    size_t len;
    int64_t dl = cli_now_ms() + 2000;
    /* Exactly the limit is fine; one more byte is not (with or without a newline). */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct cli_conn c;
    cli_conn_init_fd(&c, sv[0]);
    c.max_line = 100;
    memset(big, 'a', 100);
    big[100] = '\n';
    write_all(sv[1], big, 101);
    assert_int_equal(cli_conn_read_line(&c, dl, &line, &len, &err), 0);
    assert_int_equal(len, 100);
    memset(big, 'b', 101);
    big[101] = '\n';
    write_all(sv[1], big, 102);
    assert_int_equal(cli_conn_read_line(&c, dl, &line, &len, &err), -1);
    assert_string_equal(err.msg, "reply line from ternd is longer than 100 bytes");
    cli_conn_close(&c);
    close(sv[1]);

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cli_conn_init_fd(&c, sv[0]);
    c.max_line = 100;
    memset(big, 'c', 250); /* no newline at all: refused without waiting for one */
    write_all(sv[1], big, 250);
    assert_int_equal(cli_conn_read_line(&c, dl, &line, &len, &err), -1);
    assert_string_equal(err.msg, "reply line from ternd is longer than 100 bytes");
    cli_conn_close(&c);
    close(sv[1]);
}

/* ---- a scripted ternd ---- */

struct script {
    char dir[64]; /* /tmp/tern-test-cli-XXXXXX */
    char path[108];
    int listen_fd;
    const char *const *lines; /* sent one by one, each with a newline */
    size_t nlines;
    int delay_ms;   /* before each line */
    int hold_ms;    /* after the lines, before closing */
    size_t raw_len; /* > 0: send that many 'x' bytes instead (an oversized line) */
    char request[65536];
    pthread_t thread;
};

static void *serve(void *arg)
{
    struct script *s = arg;
    struct pollfd p = {.fd = s->listen_fd, .events = POLLIN};
    if (poll(&p, 1, 10000) != 1)
        return NULL;
    int fd = accept(s->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    size_t n = 0;
    while (n < sizeof(s->request) - 1 && !memchr(s->request, '\n', n)) {
        ssize_t r = read(fd, s->request + n, sizeof(s->request) - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    s->request[n] = '\0';
    if (s->raw_len) {
        char *x = malloc(s->raw_len);
        memset(x, 'x', s->raw_len);
        size_t off = 0;
        while (off < s->raw_len) {
            ssize_t w = send(fd, x + off, s->raw_len - off, MSG_NOSIGNAL);
            if (w <= 0)
                break; /* the client gave up reading: expected */
            off += (size_t)w;
        }
        free(x);
    }
    for (size_t i = 0; i < s->nlines; i++) {
        if (s->delay_ms)
            test_sleep_ms(s->delay_ms);
        char line[8192];
        int l = snprintf(line, sizeof(line), "%s\n", s->lines[i]);
        if (send(fd, line, (size_t)l, MSG_NOSIGNAL) != l)
            break;
    }
    if (s->hold_ms)
        test_sleep_ms(s->hold_ms);
    close(fd);
    return NULL;
}

static void script_start(struct script *s)
{
    char *dir = test_make_tmpdir("cli");
    assert_non_null(dir);
    assert_true(strlen(dir) < sizeof(s->dir));
    snprintf(s->dir, sizeof(s->dir), "%s", dir);
    free(dir);
    snprintf(s->path, sizeof(s->path), "%s/ternd.sock", s->dir);
    s->listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(s->listen_fd >= 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", s->path);
    assert_int_equal(bind(s->listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->listen_fd, 4), 0);
    assert_int_equal(pthread_create(&s->thread, NULL, serve, s), 0);
}

static void script_stop(struct script *s)
{
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
    test_rmtree(s->dir);
}

struct run {
    int rc;
    char *out;
    char *err;
};

/* Runs `ternctl --socket S ARGS...` in-process (stdout not a terminal). */
static struct run run_cli(const char *socket, const char *const *args)
{
    char *argv[40];
    int argc = 0;
    argv[argc++] = "ternctl";
    if (socket) {
        argv[argc++] = "--socket";
        argv[argc++] = (char *)socket;
    }
    for (; *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    struct run r = {0};
    size_t ol, el;
    struct cli_io io = {.out = open_memstream(&r.out, &ol), .err = open_memstream(&r.err, &el)};
    r.rc = cli_main(argc, argv, &io);
    fclose(io.out);
    fclose(io.err);
    return r;
}

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

static void expect_request(const struct script *s, const char *want)
{
    json_t *got = json_loads(s->request, 0, NULL);
    json_t *w = json_loads(want, 0, NULL);
    assert_non_null(w);
    if (!got || !json_equal(got, w))
        fail_msg("request %s, expected %s", s->request, want);
    assert_non_null(strchr(s->request, '\n')); /* one line */
    assert_ptr_equal(strchr(s->request, '\n'), s->request + strlen(s->request) - 1);
    json_decref(got);
    json_decref(w);
}

static const char *const migrate_lines[] = {
    "{\"progress\":{\"id\":12,\"vm\":\"web1\",\"from\":\"a\",\"to\":\"b\",\"phase\":\"connecting\","
    "\"round\":0,\"bytes_sent\":0,\"bytes_remaining\":1073741824,\"elapsed_s\":0.01}}",
    "{\"progress\":{\"id\":12,\"vm\":\"web1\",\"from\":\"a\",\"to\":\"b\",\"phase\":\"round\","
    "\"round\":1,\"bytes_sent\":536870912,\"bytes_remaining\":536870912,\"dirty_MBps\":100.0,"
    "\"bandwidth_MBps\":1000.0,\"predicted_pause_ms\":536.9,\"elapsed_s\":0.5}}",
    "{\"progress\":{\"id\":12,\"vm\":\"web1\",\"from\":\"a\",\"to\":\"b\",\"phase\":\"stop-and-copy\","
    "\"round\":4,\"bytes_sent\":1100000000,\"bytes_remaining\":4000000,\"dirty_MBps\":100.0,"
    "\"bandwidth_MBps\":1000.0,\"predicted_pause_ms\":4.0,\"elapsed_s\":1.3}}",
    "{\"ok\":true,\"result\":{\"migration\":{\"id\":12,\"vm\":\"web1\",\"from\":\"a\",\"to\":\"b\","
    "\"outcome\":\"succeeded\",\"reason\":\"\",\"total_s\":1.42,\"pause_ms\":6.2,"
    "\"guest_pause_ms\":7.9,\"rounds\":4,\"bytes_sent\":1104000000}}}",
};

static const char migrate_stdout[] =
    "web1 -> b: connecting: sent 0 B, left 1.07 GB\n"
    "web1 -> b: round 1: sent 536.9 MB, left 536.9 MB, 1000 MB/s, dirty 100 MB/s, pause ~536.9 ms, ETA 0.5 s\n"
    "web1 -> b: stop-and-copy: sent 1.10 GB, left 4.0 MB, 1000 MB/s, dirty 100 MB/s, pause ~4.0 ms, ETA 0.0 s\n"
    "migrated web1 from a to b in 1.4 s, pause 6.2 ms (guest-observed 7.9 ms), 4 rounds, 1.10 GB sent\n";

static void test_e2e_migrate(void **state)
{
    (void)state;
    struct script s = {.lines = migrate_lines, .nlines = 4};
    script_start(&s);
    const char *args[] = {"vm", "migrate", "web1", "--to", "b", "--downtime-ms", "20", NULL};
    struct run r = run_cli(s.path, args);
    script_stop(&s);
    expect_request(&s, "{\"cmd\":\"vm.migrate\",\"name\":\"web1\",\"to\":\"b\",\"downtime_ms\":20,"
                       "\"wait\":true}");
    assert_int_equal(r.rc, CLI_EXIT_OK);
    if (strcmp(r.out, migrate_stdout))
        fail_msg("stdout:\n%s\nexpected:\n%s", r.out, migrate_stdout);
    assert_string_equal(r.err, "");
    run_free(&r);
}

static void test_e2e_migrate_json(void **state)
{
    (void)state;
    struct script s = {.lines = migrate_lines, .nlines = 4};
    script_start(&s);
    const char *args[] = {"--json", "vm", "migrate", "web1", "--to", "b", NULL};
    struct run r = run_cli(s.path, args);
    script_stop(&s);
    assert_int_equal(r.rc, CLI_EXIT_OK);
    /* Each progress line as it came, then the result object. */
    char *save = NULL;
    size_t n = 0;
    for (char *l = strtok_r(r.out, "\n", &save); l; l = strtok_r(NULL, "\n", &save), n++) {
        assert_true(n < 4);
        json_t *got = json_loads(l, 0, NULL);
        json_t *sent = json_loads(migrate_lines[n], 0, NULL);
        assert_non_null(got);
        assert_true(json_equal(got, n < 3 ? sent : json_object_get(sent, "result")));
        json_decref(got);
        json_decref(sent);
    }
    assert_int_equal(n, 4);
    run_free(&r);
}

static void test_e2e_migrate_no_wait(void **state)
{
    (void)state;
    static const char *const lines[] = {"{\"ok\":true,\"result\":{\"migration_id\":12}}"};
    struct script s = {.lines = lines, .nlines = 1};
    script_start(&s);
    const char *args[] = {"vm", "migrate", "web1", "--to", "b", "--no-wait", NULL};
    struct run r = run_cli(s.path, args);
    script_stop(&s);
    expect_request(&s, "{\"cmd\":\"vm.migrate\",\"name\":\"web1\",\"to\":\"b\",\"wait\":false}");
    assert_int_equal(r.rc, CLI_EXIT_OK);
    assert_string_equal(r.out, "migration 12 of web1 to b started\n");
    run_free(&r);
}

static void test_e2e_error(void **state)
{
    (void)state;
    static const char *const lines[] = {
        "{\"ok\":false,\"error\":{\"code\":\"not_found\",\"message\":\"VM 'web9' is not defined\"}}"};
    struct script s = {.lines = lines, .nlines = 1};
    script_start(&s);
    const char *args[] = {"vm", "start", "web9", "--host", "b", NULL};
    struct run r = run_cli(s.path, args);
    script_stop(&s);
    expect_request(&s, "{\"cmd\":\"vm.start\",\"name\":\"web9\",\"host\":\"b\"}");
    assert_int_equal(r.rc, CLI_EXIT_FAILED);
    assert_string_equal(r.out, "");
    assert_string_equal(r.err, "ternctl: VM 'web9' is not defined\n");
    run_free(&r);

    /* In --json mode the error object goes to stdout as well. */
    struct script s2 = {.lines = lines, .nlines = 1};
    script_start(&s2);
    const char *args2[] = {"vm", "show", "web9", "--json", NULL};
    r = run_cli(s2.path, args2);
    script_stop(&s2);
    assert_int_equal(r.rc, CLI_EXIT_FAILED);
    assert_string_equal(r.out, "{\"error\":{\"code\":\"not_found\",\"message\":\"VM 'web9' is not defined\"}}\n");
    assert_string_equal(r.err, "ternctl: VM 'web9' is not defined\n");
    run_free(&r);
}

static void test_e2e_evacuate(void **state)
{
    (void)state;
    /* What ternd sends when one VM moved and one could not. */
    static const char *const partial[] = {
        "{\"progress\":{\"host\":\"a\",\"total\":2,\"done\":0,\"vm\":\"v1\",\"to\":\"b\"}}",
        "{\"progress\":{\"host\":\"a\",\"total\":2,\"done\":0,\"vm\":\"v1\",\"to\":\"b\",\"migration\":"
        "{\"phase\":\"round\",\"round\":1,\"bytes_sent\":1000000}}}",
        "{\"progress\":{\"host\":\"a\",\"total\":2,\"done\":1,\"vm\":\"v1\",\"to\":\"b\"}}",
        "{\"ok\":false,\"error\":{\"code\":\"failed\",\"message\":\"some VMs could not be moved\"},"
        "\"result\":{\"host\":\"a\",\"moved\":[{\"id\":3,\"vm\":\"v1\",\"to\":\"b\",\"outcome\":"
        "\"succeeded\",\"total_s\":2.5,\"pause_ms\":8.25}],\"failed\":[{\"vm\":\"v2\",\"error\":"
        "\"no host has room for 64G\"}]}}",
    };
    struct script s = {.lines = partial, .nlines = 4};
    script_start(&s);
    const char *args[] = {"host", "evacuate", "a", "--parallel", "2", NULL};
    struct run r = run_cli(s.path, args);
    script_stop(&s);
    expect_request(&s, "{\"cmd\":\"host.evacuate\",\"host\":\"a\",\"parallel\":2,\"wait\":true}");
    assert_int_equal(r.rc, CLI_EXIT_PARTIAL);
    assert_string_equal(r.out, "VM 1/2: v1 -> b\n"
                               "VM 1/2: v1 -> b: round 1: sent 1.0 MB\n"
                               "VM 2/2: v1 -> b\n"
                               "evacuated a: 1 of 2 VMs moved\n"
                               "  v1 -> b in 2.5 s, pause 8.2 ms\n"
                               "  v2: not moved: no host has room for 64G\n");
    assert_string_equal(r.err, "ternctl: some VMs could not be moved\n");
    run_free(&r);

    static const char *const ok[] = {
        "{\"ok\":true,\"result\":{\"host\":\"a\",\"moved\":[],\"failed\":[]}}",
    };
    struct script s2 = {.lines = ok, .nlines = 1};
    script_start(&s2);
    const char *args2[] = {"host", "evacuate", "a", NULL};
    r = run_cli(s2.path, args2);
    script_stop(&s2);
    assert_int_equal(r.rc, CLI_EXIT_OK);
    assert_string_equal(r.out, "evacuated a: no VMs to move\n");
    run_free(&r);
}

/* No raw control character in `s` (newlines only where `lines` allows),
 * and no line of it starts with `forged`. */
static void assert_clean(const char *what, const char *s, bool newlines, const char *forged)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\n' && newlines)
            continue;
        if (*p < 0x20 || *p == 0x7f || (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f))
            fail_msg("%s holds a raw control character 0x%02x: '%s'", what, *p, s);
    }
    for (const char *l = s; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (forged && !strncmp(l, forged, strlen(forged)))
            fail_msg("%s has a forged line: '%s'", what, s);
}

/* Names, paths and messages from the agent (and so from configurations and
 * VMM logs) reach the terminal with their control characters escaped:
 * errors, results, progress, summaries, tables and --json. */
static void test_e2e_hostile_text(void **state)
{
    (void)state;
    /* An error carrying a VMM log's tail with an escape in a disk path. */
    static const char *const err_lines[] = {
        "{\"ok\":false,\"error\":{\"code\":\"failed\",\"message\":\"starting VM 'w': tern-vmm "
        "exited with status 65: cannot open /srv/\\u001b[2J\\u001b]0;owned\\u0007x.img\\r\\n"
        "ternctl: forged\\u009b31m\"}}"};
    struct script s = {.lines = err_lines, .nlines = 1};
    script_start(&s);
    const char *args[] = {"vm", "start", "w", NULL};
    struct run r = run_cli(s.path, args);
    script_stop(&s);
    assert_int_equal(r.rc, CLI_EXIT_FAILED);
    assert_clean("stderr", r.err, true, NULL);
    assert_string_equal(r.err, "ternctl: starting VM 'w': tern-vmm exited with status 65: cannot "
                               "open /srv/\\x1b[2J\\x1b]0;owned\\x07x.img\\r\n"
                               "ternctl: forged\\xc2\\x9b31m\n");
    run_free(&r);
    /* The same with --json: the object is ASCII, the message as above. */
    struct script s1 = {.lines = err_lines, .nlines = 1};
    script_start(&s1);
    const char *jargs[] = {"--json", "vm", "start", "w", NULL};
    r = run_cli(s1.path, jargs);
    script_stop(&s1);
    assert_int_equal(r.rc, CLI_EXIT_FAILED);
    assert_clean("--json stdout", r.out, true, NULL);
    for (const char *p = r.out; *p; p++)
        assert_true((unsigned char)*p < 0x80);
    assert_non_null(strstr(r.out, "\\u001B[2J"));
    assert_non_null(strstr(r.out, "\\u009B31m"));
    assert_clean("stderr", r.err, true, NULL);
    run_free(&r);

    /* A result whose fields hold a newline and an escape. */
    static const char *const ok_lines[] = {
        "{\"ok\":true,\"result\":{\"vm\":{\"state\":\"running\\u001b[8m\",\"owner\":"
        "\"h1\\nVM w is stopped\"}}}"};
    struct script s2 = {.lines = ok_lines, .nlines = 1};
    script_start(&s2);
    r = run_cli(s2.path, args);
    script_stop(&s2);
    assert_int_equal(r.rc, CLI_EXIT_OK);
    assert_string_equal(r.out, "VM w is running\\x1b[8m on h1\\nVM w is stopped\n");
    run_free(&r);

    /* Progress (not a terminal), the summary and an evacuation's list. */
    static const char *const evac[] = {
        "{\"progress\":{\"host\":\"a\",\"total\":1,\"done\":0,\"vm\":\"v\\u001b[1A\",\"to\":\"b\"}}",
        "{\"ok\":false,\"error\":{\"code\":\"failed\",\"message\":\"some VMs could not be moved\"},"
        "\"result\":{\"host\":\"a\",\"moved\":[{\"vm\":\"m\\r\",\"to\":\"b\\u0007\",\"total_s\":1}],"
        "\"failed\":[{\"vm\":\"v\",\"error\":\"no room\\nevacuated a: 2 of 2 VMs moved\"}]}}"};
    struct script s3 = {.lines = evac, .nlines = 2};
    script_start(&s3);
    const char *eargs[] = {"host", "evacuate", "a", NULL};
    r = run_cli(s3.path, eargs);
    script_stop(&s3);
    assert_int_equal(r.rc, CLI_EXIT_PARTIAL);
    assert_clean("stdout", r.out, true, "evacuated a: 2 of 2");
    assert_string_equal(r.out, "VM 1/1: v\\x1b[1A -> b\n"
                               "evacuated a: 1 of 2 VMs moved\n"
                               "  m\\r -> b\\x07 in 1.0 s\n"
                               "  v: not moved: no room\\nevacuated a: 2 of 2 VMs moved\n");
    run_free(&r);

    /* A migration that failed, with the reason from another host. */
    static const char *const mig[] = {
        "{\"ok\":true,\"result\":{\"migration\":{\"id\":1,\"vm\":\"w\",\"from\":\"a\",\"to\":\"b\","
        "\"outcome\":\"failed\",\"reason\":\"lost\\u001bc\"}}}"};
    struct script s4 = {.lines = mig, .nlines = 1};
    script_start(&s4);
    const char *margs[] = {"vm", "migrate", "w", "--to", "b", NULL};
    r = run_cli(s4.path, margs);
    script_stop(&s4);
    assert_int_equal(r.rc, CLI_EXIT_FAILED);
    assert_string_equal(r.err, "ternctl: migration of w from a to b failed: lost\\x1bc\n");
    run_free(&r);

    /* status and vm show: the cluster line, tables and key/value lines. */
    static const char *const status[] = {
        "{\"ok\":true,\"result\":{\"cluster\":{\"local_host\":\"h\\u001b]0;x\\u0007\",\"nodeid\":1,"
        "\"quorate\":true,\"members\":1,\"version\":1},\"hosts\":[{\"name\":\"h\\u009b1\","
        "\"online\":true}],\"vms\":[{\"name\":\"v\",\"state\":\"crashed\",\"detail\":"
        "\"x\\u001b[2J\\ny\",\"config\":{}}],\"migrations\":[]}}"};
    struct script s5 = {.lines = status, .nlines = 1};
    script_start(&s5);
    const char *sargs[] = {"status", NULL};
    r = run_cli(s5.path, sargs);
    script_stop(&s5);
    assert_int_equal(r.rc, CLI_EXIT_OK);
    assert_clean("status", r.out, true, "y");
    assert_non_null(strstr(r.out, "local host h\\x1b]0;x\\x07 (node 1)"));
    run_free(&r);
    static const char *const show[] = {
        "{\"ok\":true,\"result\":{\"vm\":{\"name\":\"v\",\"config\":{\"cmdline\":\"a\\u001b[2Jb\","
        "\"disks\":[{\"path\":\"/d\\u0085\\nx\"}]}}}}"};
    struct script s6 = {.lines = show, .nlines = 1};
    script_start(&s6);
    const char *vargs[] = {"vm", "show", "v", NULL};
    r = run_cli(s6.path, vargs);
    script_stop(&s6);
    assert_int_equal(r.rc, CLI_EXIT_OK);
    assert_clean("vm show", r.out, true, "x");
    run_free(&r);
}

static void test_e2e_bad_agent(void **state)
{
    (void)state;
    /* Nobody listening. */
    const char *args[] = {"status", NULL};
    struct run r = run_cli("/nonexistent/ternd.sock", args);
    assert_int_equal(r.rc, CLI_EXIT_UNREACHABLE);
    assert_string_equal(r.err, "ternctl: cannot reach ternd at /nonexistent/ternd.sock: No such file "
                               "or directory; is ternd running?\n");
    run_free(&r);

    /* Not JSON. */
    static const char *const junk[] = {"hello there"};
    struct script s = {.lines = junk, .nlines = 1};
    script_start(&s);
    r = run_cli(s.path, args);
    script_stop(&s);
    assert_int_equal(r.rc, CLI_EXIT_UNREACHABLE);
    assert_non_null(strstr(r.err, "ternctl: malformed reply from ternd (not JSON"));
    assert_string_equal(r.out, "");
    run_free(&r);

    /* Closes without a final reply, after some progress. */
    struct script s2 = {.lines = migrate_lines, .nlines = 2};
    script_start(&s2);
    const char *margs[] = {"vm", "migrate", "web1", "--to", "b", NULL};
    r = run_cli(s2.path, margs);
    script_stop(&s2);
    assert_int_equal(r.rc, CLI_EXIT_UNREACHABLE);
    assert_string_equal(r.err, "ternctl: ternd closed the connection before its final reply\n");
    run_free(&r);

    /* A reply line over 1 MiB is read on (a large cluster's status is
     * that long; the cap is CLI_MAX_REPLY, checked with a lowered cap
     * above); cut short, it is reported as such. */
    struct script s3 = {.raw_len = CLI_MAX_LINE + 4096};
    script_start(&s3);
    r = run_cli(s3.path, args);
    script_stop(&s3);
    assert_int_equal(r.rc, CLI_EXIT_UNREACHABLE);
    assert_string_equal(r.err, "ternctl: ternd closed the connection in the middle of a reply "
                               "line\n");
    run_free(&r);

    /* Silent past --timeout. */
    struct script s4 = {.hold_ms = 2500};
    script_start(&s4);
    const char *targs[] = {"--timeout", "1", "status", NULL};
    int64_t t0 = cli_now_ms();
    r = run_cli(s4.path, targs);
    int64_t took = cli_now_ms() - t0;
    script_stop(&s4);
    assert_int_equal(r.rc, CLI_EXIT_UNREACHABLE);
    /* Timed out (the server would have closed the connection at 2.5 s,
     * a different message), and not before the deadline. */
    assert_non_null(strstr(r.err, "timed out waiting for ternd's reply"));
    assert_true(took >= 1000);
    run_free(&r);
}

static void test_e2e_status_and_define(void **state)
{
    (void)state;
    static const char *const lines[] = {
        "{\"ok\":true,\"result\":{\"cluster\":{\"local_host\":\"a\",\"nodeid\":1,\"quorate\":true,"
        "\"synced\":true,\"members\":1,\"version\":3},\"hosts\":[{\"name\":\"a\",\"nodeid\":1,"
        "\"online\":true,\"mode\":\"active\",\"mem_mib\":2048,\"vcpus\":2,\"free_mem_mib\":2048,"
        "\"free_vcpus\":2,\"vms\":0,\"migration_addr\":\"10.77.0.2\"}],\"vms\":[],\"migrations\":[]}}"};
    struct script s = {.lines = lines, .nlines = 1};
    script_start(&s);
    const char *args[] = {"status", NULL};
    struct run r = run_cli(s.path, args);
    script_stop(&s);
    expect_request(&s, "{\"cmd\":\"status\"}");
    assert_int_equal(r.rc, CLI_EXIT_OK);
    assert_string_equal(r.out, "cluster: local host a (node 1), quorate: yes, members: 1, version: 3\n\n"
                               "HOSTS\n"
                               "NAME  STATE   MODE    VMS  MEM(free/total)  VCPUS(free/total)  ADDR       FENCE\n"
                               "a     online  active    0            2G/2G                2/2  10.77.0.2  -\n"
                               "\nVMS\n(no VMs)\n");
    run_free(&r);

    /* vm define sends absolute paths for relative ones. */
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    static const char *const defined[] = {
        "{\"ok\":true,\"result\":{\"vm\":{\"name\":\"w\",\"state\":\"stopped\"}}}"};
    struct script s2 = {.lines = defined, .nlines = 1};
    script_start(&s2);
    assert_int_equal(chdir(s2.dir), 0);
    FILE *f = fopen("kern", "w");
    assert_non_null(f);
    fclose(f);
    const char *dargs[] = {"vm", "define", "w", "--kernel", "kern", "--mem", "1536", "--vcpus", "2",
                           "--ha", NULL};
    r = run_cli(s2.path, dargs);
    assert_int_equal(chdir(cwd), 0);
    char want[1024];
    snprintf(want, sizeof(want),
             "{\"cmd\":\"vm.define\",\"name\":\"w\",\"ha\":true,\"priority\":0,\"config\":{\"kernel\":"
             "\"%s/kern\",\"initrd\":\"\",\"cmdline\":\"\",\"mem_mib\":1536,\"vcpus\":2,\"disks\":[]}}",
             s2.dir);
    script_stop(&s2);
    expect_request(&s2, want);
    assert_int_equal(r.rc, CLI_EXIT_OK);
    assert_string_equal(r.out, "defined VM w: 1.5G, 2 vCPUs, HA (state: stopped)\n");
    run_free(&r);

    /* A missing file is a usage error, found before anything is sent. */
    const char *margs[] = {"vm", "define", "w", "--kernel", "no-such-kernel", "--mem", "1G", "--vcpus",
                           "1", NULL};
    r = run_cli("/nonexistent/sock", margs);
    assert_int_equal(r.rc, CLI_EXIT_USAGE);
    assert_string_equal(r.err, "ternctl: --kernel no-such-kernel: No such file or directory\n");
    run_free(&r);

    /* Usage errors say how to get help. */
    const char *uargs[] = {"vm", "migrate", "web1", NULL};
    r = run_cli(NULL, uargs);
    assert_int_equal(r.rc, CLI_EXIT_USAGE);
    assert_string_equal(r.err, "ternctl: vm migrate needs --to HOST\nTry 'ternctl vm migrate --help'.\n");
    run_free(&r);
    const char *hargs[] = {"host", "evacuate", "--help", NULL};
    r = run_cli(NULL, hargs);
    assert_int_equal(r.rc, CLI_EXIT_OK);
    assert_non_null(strstr(r.out, "usage: ternctl [GLOBAL OPTIONS] host evacuate HOST"));
    run_free(&r);
}

/* Each remaining command: the request it sends and what it prints. */
static void test_e2e_simple_commands(void **state)
{
    (void)state;
    static const struct {
        const char *args[8];
        const char *request;
        const char *reply;
        const char *out;
    } cases[] = {
        {{"vm", "start", "web1", NULL}, "{\"cmd\":\"vm.start\",\"name\":\"web1\"}",
         "{\"ok\":true,\"result\":{\"vm\":{\"name\":\"web1\",\"state\":\"running\",\"owner\":\"host-b\"}}}",
         "VM web1 is running on host-b\n"},
        {{"vm", "stop", "web1", NULL}, "{\"cmd\":\"vm.stop\",\"name\":\"web1\"}",
         "{\"ok\":true,\"result\":{\"vm\":{\"name\":\"web1\",\"state\":\"stopped\",\"owner\":\"\"}}}",
         "VM web1 is stopped\n"},
        {{"vm", "undefine", "web1", NULL}, "{\"cmd\":\"vm.undefine\",\"name\":\"web1\"}",
         "{\"ok\":true,\"result\":{}}", "VM web1 undefined\n"},
        {{"host", "activate", "a", NULL}, "{\"cmd\":\"host.activate\",\"host\":\"a\"}",
         "{\"ok\":true,\"result\":{\"host\":{\"name\":\"a\",\"mode\":\"active\"}}}",
         "host a is active\n"},
        {{"host", "evacuate", "a", "--no-wait", NULL},
         "{\"cmd\":\"host.evacuate\",\"host\":\"a\",\"wait\":false}",
         "{\"ok\":true,\"result\":{\"host\":\"a\",\"evacuation\":\"started\"}}",
         "evacuation of a started\n"},
        {{"vm", "list", NULL}, "{\"cmd\":\"vm.list\"}", "{\"ok\":true,\"result\":{\"vms\":[]}}",
         "(no VMs)\n"},
        {{"host", "list", NULL}, "{\"cmd\":\"host.list\"}",
         "{\"ok\":true,\"result\":{\"hosts\":[{\"name\":\"a\",\"online\":true,\"mode\":\"active\","
         "\"vms\":1,\"mem_mib\":1024,\"free_mem_mib\":512,\"vcpus\":2,\"free_vcpus\":1,"
         "\"migration_addr\":\"10.0.0.1\"}]}}",
         "NAME  STATE   MODE    VMS  MEM(free/total)  VCPUS(free/total)  ADDR      FENCE\n"
         "a     online  active    1          512M/1G                1/2  10.0.0.1  -\n"},
        {{"vm", "show", "web1", NULL}, "{\"cmd\":\"vm.show\",\"name\":\"web1\"}",
         "{\"ok\":true,\"result\":{\"vm\":{\"name\":\"web1\",\"state\":\"stopped\",\"desired\":"
         "\"stopped\",\"owner\":\"\",\"ha\":false,\"priority\":0,\"detail\":\"\",\"config\":{"
         "\"kernel\":\"/k\",\"initrd\":\"\",\"cmdline\":\"\",\"mem_mib\":256,\"vcpus\":1,\"disks\":[]},"
         "\"migration_id\":0,\"last_migration\":null}}}",
         "name:           web1\nstate:          stopped (desired: stopped)\nowner:          -\n"
         "ha:             no (priority 0)\ndetail:         -\nkernel:         /k\ninitrd:         -\n"
         "cmdline:        -\nmemory:         256M\nvcpus:          1\ndisks:          -\n"
         "last migration: -\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *lines[] = {cases[i].reply};
        struct script s = {.lines = lines, .nlines = 1};
        script_start(&s);
        struct run r = run_cli(s.path, cases[i].args);
        script_stop(&s);
        expect_request(&s, cases[i].request);
        if (r.rc != CLI_EXIT_OK || strcmp(r.out, cases[i].out))
            fail_msg("%s %s: exit %d, stdout:\n%s\nexpected:\n%s\nstderr: %s", cases[i].args[0],
                     cases[i].args[1], r.rc, r.out, cases[i].out, r.err);
        run_free(&r);
    }
}

/* The real program: exit status and stdout in a file (not a terminal). */
static void test_binary(void **state)
{
    (void)state;
    const char *bin = test_build_path("ternctl");
    if (access(bin, X_OK) != 0)
        fail_msg("%s is missing: build it first (make BUILD=... all)", bin);
    struct script s = {.lines = migrate_lines, .nlines = 4, .delay_ms = 20};
    script_start(&s);
    char *argv[] = {(char *)bin, "--socket", s.path, "vm", "migrate", "web1", "--to", "b", NULL};
    struct test_proc p;
    assert_int_equal(test_proc_start(&p, s.dir, argv), 0);
    int exited = test_proc_wait(&p, 10000);
    test_proc_kill(&p);
    char *out = test_read_text(p.out_path);
    char *err = test_read_text(p.err_path);
    script_stop(&s);
    assert_true(exited);
    assert_int_equal(p.status, 0);
    if (strcmp(out, migrate_stdout))
        fail_msg("stdout:\n%s\nexpected:\n%s", out, migrate_stdout);
    assert_string_equal(err, "");
    free(out);
    free(err);

    static const char *const refused[] = {
        "{\"ok\":false,\"error\":{\"code\":\"no_quorum\",\"message\":\"this host is not in a quorate "
        "partition\"}}"};
    struct script s2 = {.lines = refused, .nlines = 1};
    script_start(&s2);
    char *argv2[] = {(char *)bin, "--socket", s2.path, "host", "activate", "a", NULL};
    assert_int_equal(test_proc_start(&p, s2.dir, argv2), 0);
    exited = test_proc_wait(&p, 10000);
    test_proc_kill(&p);
    err = test_read_text(p.err_path);
    script_stop(&s2);
    assert_true(exited);
    assert_int_equal(p.status, 1);
    assert_string_equal(err, "ternctl: this host is not in a quorate partition\n");
    free(err);
}

/* stdout is exactly one JSON object {"error":{"code":CODE,"message":M}},
 * and M is what stderr says after "ternctl: ". */
static void expect_json_error(const struct run *r, const char *code)
{
    json_error_t jerr;
    json_t *j = json_loads(r->out, 0, &jerr);
    if (!j)
        fail_msg("stdout is not one JSON object (%s): '%s'", jerr.text, r->out);
    assert_ptr_equal(strchr(r->out, '\n'), r->out + strlen(r->out) - 1);
    json_t *e = json_object_get(j, "error");
    assert_true(json_is_object(e));
    assert_int_equal(json_object_size(j), 1);
    if (strcmp(json_string_value(json_object_get(e, "code")) ?: "", code))
        fail_msg("error code in '%s', expected %s", r->out, code);
    const char *msg = json_string_value(json_object_get(e, "message"));
    assert_non_null(msg);
    assert_true(strlen(msg) > 0);
    assert_int_equal(strncmp(r->err, "ternctl: ", 9), 0);
    assert_int_equal(strncmp(r->err + 9, msg, strlen(msg)), 0);
    json_decref(j);
}

/* --json: errors that no agent reply describes (unreachable, usage) are
 * still one {"error":...} object on stdout, with the usual exit code. */
static void test_e2e_json_own_errors(void **state)
{
    (void)state;
    const char *args[] = {"--json", "status", NULL};
    struct run r = run_cli("/nonexistent/ternd.sock", args);
    assert_int_equal(r.rc, CLI_EXIT_UNREACHABLE);
    expect_json_error(&r, "unreachable");
    assert_non_null(strstr(r.out, "cannot reach ternd at /nonexistent/ternd.sock"));
    run_free(&r);

    /* A reply that is not JSON, and one that does not come in time. */
    static const char *const junk[] = {"hello there"};
    struct script s = {.lines = junk, .nlines = 1};
    script_start(&s);
    r = run_cli(s.path, args);
    script_stop(&s);
    assert_int_equal(r.rc, CLI_EXIT_UNREACHABLE);
    expect_json_error(&r, "unreachable");
    run_free(&r);
    struct script s2 = {.hold_ms = 1500};
    script_start(&s2);
    const char *targs[] = {"vm", "list", "--timeout", "1", "--json", NULL};
    r = run_cli(s2.path, targs);
    script_stop(&s2);
    assert_int_equal(r.rc, CLI_EXIT_UNREACHABLE);
    expect_json_error(&r, "unreachable");
    run_free(&r);

    /* Usage errors: a missing argument, an unknown option before --json
     * was even reached, a file named by --kernel that does not exist. */
    const char *u1[] = {"--json", "vm", "start", NULL};
    r = run_cli("/nonexistent/ternd.sock", u1);
    assert_int_equal(r.rc, CLI_EXIT_USAGE);
    expect_json_error(&r, "usage");
    run_free(&r);
    const char *u2[] = {"status", "--bogus", "--json", NULL};
    r = run_cli("/nonexistent/ternd.sock", u2);
    assert_int_equal(r.rc, CLI_EXIT_USAGE);
    expect_json_error(&r, "usage");
    run_free(&r);
    const char *u3[] = {"--json", "vm", "define", "w", "--kernel", "no/such/kernel", "--mem", "1G",
                        "--vcpus", "1", NULL};
    r = run_cli("/nonexistent/ternd.sock", u3);
    assert_int_equal(r.rc, CLI_EXIT_USAGE);
    expect_json_error(&r, "usage");
    run_free(&r);
    /* A path that is not UTF-8 still makes a JSON error (escaped). */
    const char *u5[] = {"--json", "vm", "define", "w", "--kernel", "no/such/k\xff", "--mem", "1G",
                        "--vcpus", "1", NULL};
    r = run_cli("/nonexistent/ternd.sock", u5);
    assert_int_equal(r.rc, CLI_EXIT_USAGE);
    assert_non_null(strstr(r.out, "\"code\":\"usage\""));
    assert_non_null(strstr(r.out, "no/such/k\\\\xff"));
    run_free(&r);
    /* Without --json, stdout stays empty. */
    const char *u4[] = {"vm", "start", NULL};
    r = run_cli("/nonexistent/ternd.sock", u4);
    assert_int_equal(r.rc, CLI_EXIT_USAGE);
    assert_string_equal(r.out, "");
    run_free(&r);
}

/* A ternd that does not accept (stopped, swamped) with its listen queue
 * full: `ternctl --timeout 2 status` gives up after about 2 s, exit 3,
 * saying why; it does not hang in connect(). */
static void test_connect_timeout(void **state)
{
    (void)state;
    const char *bin = test_build_path("ternctl");
    if (access(bin, X_OK) != 0)
        fail_msg("%s is missing: build it first (make BUILD=... all)", bin);
    char *dir = test_make_tmpdir("cli-backlog");
    assert_non_null(dir);
    char path[108];
    assert_true(strlen(dir) + 16 < sizeof(path));
    snprintf(path, sizeof(path), "%s/ternd.sock", dir);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(lfd >= 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 0), 0);
    /* Fill the queue: connect until the kernel says it is full. */
    int fill[64], nfill = 0;
    bool full = false;
    while (nfill < 64 && !full) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        assert_true(fd >= 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
            fill[nfill++] = fd;
            continue;
        }
        assert_int_equal(errno, EAGAIN);
        close(fd);
        full = true;
    }
    assert_true(full);

    char *argv[] = {(char *)bin, "--socket", path, "--timeout", "2", "status", NULL};
    struct test_proc p;
    int64_t t0 = cli_now_ms();
    assert_int_equal(test_proc_start(&p, dir, argv), 0);
    int exited = test_proc_wait(&p, 10000);
    int64_t took = cli_now_ms() - t0;
    test_proc_kill(&p);
    char *err = test_read_text(p.err_path);
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    close(lfd);
    test_rmtree(dir);
    free(dir);
    if (!exited)
        fail_msg("ternctl --timeout 2 still waited after 10 s");
    print_message("gave up after %lld ms: %s", (long long)took, err);
    assert_int_equal(p.status, CLI_EXIT_UNREACHABLE);
    assert_true(took >= 1900 && took < 6000);
    assert_non_null(strstr(err, "cannot reach ternd at "));
    assert_non_null(strstr(err, "listen queue is full"));
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_parse),        cmocka_unit_test(test_exit_codes),
        cmocka_unit_test(test_read_lines),         cmocka_unit_test(test_line_limit),
        cmocka_unit_test(test_e2e_migrate),        cmocka_unit_test(test_e2e_migrate_json),
        cmocka_unit_test(test_e2e_migrate_no_wait), cmocka_unit_test(test_e2e_error),
        cmocka_unit_test(test_e2e_evacuate),       cmocka_unit_test(test_e2e_bad_agent),
        cmocka_unit_test(test_e2e_hostile_text),   cmocka_unit_test(test_e2e_json_own_errors),
        cmocka_unit_test(test_e2e_status_and_define), cmocka_unit_test(test_e2e_simple_commands),
        cmocka_unit_test(test_binary),             cmocka_unit_test(test_connect_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
