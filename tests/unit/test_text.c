/* common/text: what reaches logs and terminals has its controls escaped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>

#include "common/text.h"

static void expect_escaped(const char *in, unsigned flags, const char *want)
{
    char out[256];
    bool cut = true;
    size_t n = text_escape(out, sizeof(out), in, flags, &cut);
    assert_false(cut);
    assert_int_equal(n, strlen(out));
    if (strcmp(out, want))
        fail_msg("escaped '%s', wanted '%s'", out, want);
    /* text_fputs writes the same. */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    text_fputs(in, f, flags);
    fclose(f);
    assert_string_equal(buf, want);
    free(buf);
    /* And nothing that is left is a control, unless newlines were kept. */
    if (!(flags & TEXT_KEEP_NEWLINES))
        assert_null(text_find_control(out));
}

static void test_escapes(void **state)
{
    (void)state;
    expect_escaped("plain text, 100% /srv/a,b.img", 0, "plain text, 100% /srv/a,b.img");
    expect_escaped("web1\nternd: 12:00:00.000 forged", 0, "web1\\nternd: 12:00:00.000 forged");
    expect_escaped("\033[31mred\033[0m", 0, "\\x1b[31mred\\x1b[0m");
    expect_escaped("a\rb\tc\x7f" "d\x01", 0, "a\\rb\\tc\\x7fd\\x01");
    /* UTF-8 passes; the C1 controls and broken sequences do not. */
    expect_escaped("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\xa6", 0, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\xa6");
    expect_escaped("x\xc2\x9b" "31m", 0, "x\\xc2\\x9b31m");
    expect_escaped("\x9b" "2J", 0, "\\x9b2J");
    expect_escaped("\xc3(", 0, "\\xc3(");
    expect_escaped("\xe0\x80\x80", 0, "\\xe0\\x80\\x80"); /* overlong */
    expect_escaped("\xed\xa0\x80", 0, "\\xed\\xa0\\x80"); /* a surrogate */
    expect_escaped("\xf4\x90\x80\x80", 0, "\\xf4\\x90\\x80\\x80"); /* past U+10FFFF */
    expect_escaped("\xe2\x82", 0, "\\xe2\\x82"); /* cut short */
    /* Newlines kept on request, other controls still escaped. */
    expect_escaped("line 1\nline\0332\r\n", TEXT_KEEP_NEWLINES, "line 1\nline\\x1b2\\r\n");
    expect_escaped("", 0, "");
}

static void test_find_control(void **state)
{
    (void)state;
    assert_null(text_find_control("/srv/disk,ro.img"));
    assert_null(text_find_control("/srv/caf\xc3\xa9.img"));
    const char *s = "/srv/a\nb";
    assert_ptr_equal(text_find_control(s), s + 6);
    s = "/srv/\xc2\x85";
    assert_ptr_equal(text_find_control(s), s + 5);
    assert_int_equal(text_control_len(s + 5), 2);
    assert_int_equal(text_control_len("a"), 0);
    assert_int_equal(text_control_len("\033"), 1);
    assert_int_equal(text_control_len(""), 0);
}

static void test_cut(void **state)
{
    (void)state;
    char out[8];
    bool cut = false;
    /* An escape is never split: "ab\x1b" needs 6 bytes, "ab\x1bc" 7. */
    assert_int_equal(text_escape(out, sizeof(out), "ab\033cdef", 0, &cut), 7);
    assert_true(cut);
    assert_string_equal(out, "ab\\x1bc");
    assert_int_equal(text_escape(out, 6, "ab\033", 0, &cut), 2);
    assert_true(cut);
    assert_string_equal(out, "ab");
    /* Nor a UTF-8 character. */
    assert_int_equal(text_escape(out, 4, "a\xe2\x82\xac", 0, &cut), 1);
    assert_true(cut);
    assert_string_equal(out, "a");
    assert_int_equal(text_escape(out, 1, "abc", 0, NULL), 0);
    assert_string_equal(out, "");
}

static void test_put_line(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    const char *name = "web1\nternd: 00:00:00.000 refused everything";
    text_put_line(f, "defining %s\n", name);
    text_put_line(f, "no newline in the format: %s", "\033]0;title\007");
    fclose(f);
    assert_string_equal(buf, "defining web1\\nternd: 00:00:00.000 refused everything\n"
                             "no newline in the format: \\x1b]0;title\\x07\n");
    free(buf);

    /* A long line is cut, ending in "...", still one line. */
    char *big = malloc(10000);
    assert_non_null(big);
    memset(big, '\n', 9999);
    big[9999] = '\0';
    buf = NULL;
    f = open_memstream(&buf, &len);
    text_put_line(f, "%s", big);
    fclose(f);
    assert_true(strlen(buf) <= 4096);
    assert_int_equal(strchr(buf, '\n') - buf, (long)strlen(buf) - 1);
    assert_non_null(strstr(buf, "\\n...\n"));
    free(buf);
    free(big);
}

/* Well-formed UTF-8 for JSON: bad bytes and a character cut at the end
 * become '?', whole characters and controls stay. */
static void test_utf8_fix(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"plain \t\x1b[31m", "plain \t\x1b[31m"},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xc2\x9b", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xc2\x9b"},
        {"cut \xc3", "cut ?"},
        {"cut \xe2\x82", "cut ??"},
        {"cut \xf0\x9f\x98", "cut ???"},
        {"lone \x80 \xff \xc0\xaf end", "lone ? ? ?? end"},
        {"\xed\xa0\x80", "???"}, /* a UTF-16 surrogate */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[64];
        snprintf(buf, sizeof(buf), "%s", cases[i].in);
        text_utf8_fix(buf);
        assert_string_equal(buf, cases[i].out);
        json_t *j = json_string(buf);
        assert_non_null(j); /* jansson takes it */
        json_decref(j);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_find_control),
        cmocka_unit_test(test_cut),
        cmocka_unit_test(test_put_line),
        cmocka_unit_test(test_utf8_fix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
