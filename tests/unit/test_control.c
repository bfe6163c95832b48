/* The control socket: request parsing, dispatch, errors, and a real
 * round trip over a unix socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include <sys/stat.h>

#include "common/unix_listen.h"
#include "node-vmm/control.h"

static int echo_calls;

static json_t *cmd_echo(void *opaque, json_t *req, struct tern_err *err)
{
    (void)err;
    echo_calls++;
    json_t *arg = json_object_get(req, "arg");
    return json_pack("{s:O?, s:s}", "arg", arg, "who", (const char *)opaque);
}

static json_t *cmd_fail(void *opaque, json_t *req, struct tern_err *err)
{
    (void)opaque;
    (void)req;
    tern_err_set(err, "it failed on purpose");
    return NULL;
}

static const struct control_command commands[] = {
    {"echo", cmd_echo},
    {"fail", cmd_fail},
};

static json_t *dispatch(struct control_server *cs, const char *line)
{
    char *reply = control_dispatch_line(cs, line, strlen(line));
    assert_non_null(reply);
    json_t *j = json_loads(reply, 0, NULL);
    free(reply);
    assert_non_null(j);
    return j;
}

static void expect_error(struct control_server *cs, const char *line, const char *needle)
{
    json_t *j = dispatch(cs, line);
    assert_true(json_is_false(json_object_get(j, "ok")));
    const char *e = json_string_value(json_object_get(j, "error"));
    assert_non_null(e);
    if (!strstr(e, needle))
        fail_msg("error '%s' lacks '%s' for request '%s'", e, needle, line);
    json_decref(j);
}

static void test_dispatch(void **state)
{
    (void)state;
    struct control_server cs = {.commands = commands, .nr_commands = 2, .opaque = "me"};
    json_t *j = dispatch(&cs, "{\"cmd\":\"echo\",\"arg\":42}");
    assert_true(json_is_true(json_object_get(j, "ok")));
    assert_int_equal(json_integer_value(json_object_get(j, "arg")), 42);
    assert_string_equal(json_string_value(json_object_get(j, "who")), "me");
    json_decref(j);
    expect_error(&cs, "{\"cmd\":\"fail\"}", "it failed on purpose");
    expect_error(&cs, "{\"cmd\":\"nope\"}", "unknown command 'nope'");
    expect_error(&cs, "{\"cmd\":7}", "string \"cmd\"");
    expect_error(&cs, "[1,2]", "string \"cmd\"");
    expect_error(&cs, "{\"cmd\":", "malformed JSON");
    expect_error(&cs, "", "malformed JSON");
    expect_error(&cs, "{\"cmd\":\"echo\",\"cmd\":\"echo\"}", "malformed JSON");
    expect_error(&cs, "\xff\xfe", "malformed JSON");
}

struct server_thread {
    struct control_server cs;
    struct loop *loop;
    volatile int stop;
};

static void *serve(void *arg)
{
    struct server_thread *st = arg;
    struct tern_err err;
    while (!st->stop)
        if (loop_run_once(st->loop, 20, &err) < 0)
            break;
    return NULL;
}

static void serve_start(struct server_thread *st, pthread_t *t)
{
    struct tern_err err;
    assert_int_equal(loop_new(&st->loop, &err), 0);
    assert_int_equal(control_server_attach(&st->cs, st->loop, &err), 0);
    assert_int_equal(pthread_create(t, NULL, serve, st), 0);
}

static void serve_stop(struct server_thread *st, pthread_t t)
{
    st->stop = 1;
    pthread_join(t, NULL);
    control_server_close(&st->cs);
    loop_free(st->loop);
}

static void test_socket_round_trip(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof(path), "/tmp/tern-test-control-%d.sock", (int)getpid());
    struct server_thread st = {0};
    struct tern_err err;
    assert_int_equal(control_server_open(&st.cs, path, commands, 2, "srv", &err), 0);

    /* A second server on the same live socket is refused. */
    struct control_server other;
    assert_int_equal(control_server_open(&other, path, commands, 2, "x", &err), -1);
    assert_non_null(strstr(err.msg, "in use"));

    pthread_t t;
    serve_start(&st, &t);
    for (int i = 0; i < 3; i++) {
        json_t *req = json_pack("{s:s, s:i}", "cmd", "echo", "arg", i);
        json_t *reply = NULL;
        assert_int_equal(control_call(path, req, 5000, &reply, &err), 0);
        assert_int_equal(json_integer_value(json_object_get(reply, "arg")), i);
        json_decref(req);
        json_decref(reply);
    }
    serve_stop(&st, t);
    assert_int_equal(access(path, F_OK), -1); /* socket file removed */

    json_t *req = json_pack("{s:s}", "cmd", "echo");
    json_t *reply = NULL;
    assert_int_equal(control_call(path, req, 1000, &reply, &err), -1);
    assert_non_null(strstr(err.msg, "cannot connect"));
    json_decref(req);
}

static void test_stale_socket_replaced(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof(path), "/tmp/tern-test-stale-%d.sock", (int)getpid());
    struct control_server cs;
    struct tern_err err;
    assert_int_equal(control_server_open(&cs, path, commands, 2, "a", &err), 0);
    /* Simulate a crashed VMM: the file stays, nobody listens. */
    close(cs.listen_fd);
    cs.listen_fd = -1;
    assert_int_equal(access(path, F_OK), 0);
    struct control_server cs2;
    assert_int_equal(control_server_open(&cs2, path, commands, 2, "b", &err), 0);
    control_server_close(&cs2);
}

/* A client that pipelines requests and reads none of the replies is
 * dropped once its socket is full; the server never waits for it and
 * answers everyone else meanwhile. */
static void test_client_that_does_not_read(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof(path), "/tmp/tern-test-silent-%d.sock", (int)getpid());
    struct server_thread st = {0};
    struct tern_err err;
    assert_int_equal(control_server_open(&st.cs, path, commands, 2, "srv", &err), 0);
    pthread_t t;
    serve_start(&st, &t);

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    char line[1100];
    memset(line, 'x', sizeof(line));
    int n = snprintf(line, sizeof(line), "{\"cmd\":\"echo\",\"arg\":\"");
    line[n + 1000] = '\0';
    memset(line + n, 'y', 1000);
    strcat(line, "\"}\n");
    size_t len = strlen(line);
    int sent = 0;
    for (int i = 0; i < 4000; i++) {
        if (send(fd, line, len, MSG_NOSIGNAL) != (ssize_t)len)
            break; /* dropped: EPIPE / ECONNRESET */
        sent++;
    }
    /* Others are served all along. */
    json_t *req = json_pack("{s:s, s:i}", "cmd", "echo", "arg", 7), *reply = NULL;
    assert_int_equal(control_call(path, req, 5000, &reply, &err), 0);
    assert_int_equal(json_integer_value(json_object_get(reply, "arg")), 7);
    json_decref(req);
    json_decref(reply);
    /* The silent client was dropped: reading ends (EOF or reset). */
    char buf[65536];
    ssize_t r;
    long got = 0;
    while ((r = recv(fd, buf, sizeof(buf), 0)) > 0)
        got += r;
    fprintf(stderr, "silent client: %d requests sent, %ld reply bytes before the drop\n", sent,
            got);
    assert_true(got < (long)sent * 1050);
    close(fd);
    serve_stop(&st, t);
}

/* The socket is its owner's only, whatever the umask: a permissive one
 * must not open the VM to every local user. The helper under it sets any
 * mode exactly (ternd's API socket is 0660). */
static void test_socket_mode(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof(path), "/tmp/tern-test-mode-%d.sock", (int)getpid());
    struct tern_err err;
    mode_t old = umask(0);
    struct control_server cs;
    int rc = control_server_open(&cs, path, commands, 2, "a", &err);
    struct stat st;
    int st_rc = stat(path, &st);
    control_server_close(&cs);
    umask(old);
    assert_int_equal(rc, 0);
    assert_int_equal(st_rc, 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);

    static const mode_t umasks[] = {0, 022, 077};
    for (size_t i = 0; i < 3; i++) {
        old = umask(umasks[i]);
        int fd = unix_listen_replace(path, "test socket", 4, 0660, &err);
        umask(old);
        assert_true(fd >= 0);
        assert_int_equal(stat(path, &st), 0);
        close(fd);
        unlink(path);
        if ((st.st_mode & 07777) != 0660)
            fail_msg("umask %03o: socket mode %04o, wanted 0660", (unsigned)umasks[i],
                     (unsigned)(st.st_mode & 07777));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch),
        cmocka_unit_test(test_socket_round_trip),
        cmocka_unit_test(test_stale_socket_replaced),
        cmocka_unit_test(test_client_that_does_not_read),
        cmocka_unit_test(test_socket_mode),
    };
    return cmocka_run_group_tests_name("control", tests, NULL, NULL);
}
