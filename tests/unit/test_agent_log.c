/* ternd's log (agent_log): whatever a request or another host sends, one
 * call is one line, and no control character reaches the log raw. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent/agent.h"
#include "tests/support/proc.h"

/* Runs agent_log(fmt, a, b) with stderr going to a file; returns what was
 * written (malloc'd). */
static char *logged(const char *fmt, const char *a, const char *b)
{
    char *dir = test_make_tmpdir("agentlog");
    assert_non_null(dir);
    char path[512];
    snprintf(path, sizeof(path), "%s/ternd.log", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, 2), 2);
    agent_log(fmt, a, b);
    fflush(stderr);
    assert_int_equal(dup2(saved, 2), 2);
    close(saved);
    close(fd);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[16384];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    test_rmtree(dir);
    free(dir);
    return strdup(buf);
}

static void expect_one_clean_line(const char *text)
{
    assert_int_equal(strncmp(text, "ternd: ", 7), 0);
    const char *nl = strchr(text, '\n');
    assert_non_null(nl);
    if (nl[1] != '\0')
        fail_msg("more than one line: '%s'", text);
    for (const char *p = text; p < nl; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            fail_msg("raw control character 0x%02x in '%s'", (unsigned char)*p, text);
}

static void test_forged_lines(void **state)
{
    (void)state;
    /* A refusal that quotes a VM name from a request. */
    char *t = logged("refused vm_define from %s: [invalid] \"name\": '%s' is not a valid name\n",
                     "h1", "web1\nternd: 12:00:00.000 h2 (node 2) up; control socket /x");
    expect_one_clean_line(t);
    assert_non_null(strstr(t, "'web1\\nternd: 12:00:00.000 h2 (node 2) up"));
    free(t);
    /* A disk path with a terminal escape, a carriage return, C1 CSI. */
    t = logged("VM %s: %s\n", "web1", "cannot open /srv/\033[2J\r\xc2\x9b" "31mx.img");
    expect_one_clean_line(t);
    assert_non_null(strstr(t, "/srv/\\x1b[2J\\r\\xc2\\x9b31mx.img"));
    free(t);
    /* Ordinary lines are as they were. */
    t = logged("%s (node %s) up\n", "h1", "1");
    expect_one_clean_line(t);
    assert_non_null(strstr(t, " h1 (node 1) up\n"));
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forged_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
