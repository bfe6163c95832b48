/* common/service_notify: the datagram systemd's Type=notify expects, on a
 * path socket and an abstract one; nothing without $NOTIFY_SOCKET; bad
 * values and an absent listener are errors that say so. */
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

#include "common/service_notify.h"

/* A datagram socket bound to `name` (abstract when it starts with '@'). */
static int listener(const char *name)
{
    struct sockaddr_un a;
    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    size_t n = strlen(name);
    memcpy(a.sun_path, name, n);
    if (name[0] == '@')
        a.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)), 0);
    return fd;
}

static void expect_datagram(int fd, const char *want)
{
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    assert_true(n >= 0);
    buf[n] = '\0';
    assert_string_equal(buf, want);
}

static void unset_does_nothing(void **state)
{
    (void)state;
    struct tern_err err;
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(service_notify("READY=1", &err), 0);
    setenv("NOTIFY_SOCKET", "", 1);
    assert_int_equal(service_notify("READY=1", &err), 0);
}

static void path_socket(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof(path), "/tmp/tern-notify-%d.sock", (int)getpid());
    unlink(path);
    int fd = listener(path);
    setenv("NOTIFY_SOCKET", path, 1);
    struct tern_err err;
    assert_int_equal(service_notify("READY=1", &err), 1);
    expect_datagram(fd, "READY=1");
    assert_int_equal(service_notify("STATUS=up", &err), 1);
    expect_datagram(fd, "STATUS=up");
    close(fd);
    unlink(path);
    /* Nobody listening any more: an error naming the socket. */
    assert_int_equal(service_notify("READY=1", &err), -1);
    assert_non_null(strstr(err.msg, path));
    unsetenv("NOTIFY_SOCKET");
}

static void abstract_socket(void **state)
{
    (void)state;
    char name[64];
    snprintf(name, sizeof(name), "@tern-notify-test-%d", (int)getpid());
    int fd = listener(name);
    setenv("NOTIFY_SOCKET", name, 1);
    struct tern_err err;
    assert_int_equal(service_notify("READY=1", &err), 1);
    expect_datagram(fd, "READY=1");
    close(fd);
    unsetenv("NOTIFY_SOCKET");
}

static void bad_values(void **state)
{
    (void)state;
    struct tern_err err;
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    assert_int_equal(service_notify("READY=1", &err), -1);
    assert_non_null(strstr(err.msg, "NOTIFY_SOCKET 'relative/path' is not a socket path"));
    char longp[200] = "/";
    memset(longp + 1, 'x', 150);
    setenv("NOTIFY_SOCKET", longp, 1);
    assert_int_equal(service_notify("READY=1", &err), -1);
    assert_non_null(strstr(err.msg, "at most 107 bytes"));
    unsetenv("NOTIFY_SOCKET");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unset_does_nothing),
        cmocka_unit_test(path_socket),
        cmocka_unit_test(abstract_socket),
        cmocka_unit_test(bad_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
