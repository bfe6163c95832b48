/* Which disk images a VM may use (agent/disk_policy.c): inside the image
 * directories after every symlink, regular files, block devices only when
 * allowed, nothing when no directory is configured. */
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
#include <sys/sysmacros.h>
#include <unistd.h>

#include "agent/config.h"

static char root[64];
static char images[128], outside[128];

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof(root), "/tmp/tern-disk-policy-XXXXXX");
    if (!mkdtemp(root))
        return -1;
    snprintf(images, sizeof(images), "%s/images", root);
    snprintf(outside, sizeof(outside), "%s/outside", root);
    if (mkdir(images, 0755) < 0 || mkdir(outside, 0755) < 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : -1;
}

static void touch(const char *dir, const char *name)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    int fd = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    close(fd);
}

static void config(struct ternd_config *c, bool block)
{
    struct tern_err err;
    char text[512];
    ternd_config_defaults(c);
    snprintf(text, sizeof(text), "image_dirs = %s\nallow_block_devices = %s\n", images,
             block ? "yes" : "no");
    assert_int_equal(ternd_config_parse(c, text, "t.conf", &err), 0);
}

static void ok(const struct ternd_config *c, const char *path, bool must_exist)
{
    struct tern_err err;
    if (disk_policy_check(c, path, must_exist, &err) != 0)
        fail_msg("%s refused: %s", path, err.msg);
}

static void refused(const struct ternd_config *c, const char *path, bool must_exist,
                    const char *needle)
{
    struct tern_err err;
    if (disk_policy_check(c, path, must_exist, &err) == 0)
        fail_msg("%s allowed; expected refused (%s)", path, needle);
    assert_int_equal(err.code, TERN_ERR_INVALID);
    if (!strstr(err.msg, needle))
        fail_msg("error for %s: '%s' lacks '%s'", path, err.msg, needle);
}

static void test_inside_and_outside(void **state)
{
    (void)state;
    struct ternd_config c;
    config(&c, false);
    touch(images, "web1.img");
    touch(outside, "secret.img");
    char p[256];
    snprintf(p, sizeof(p), "%s/web1.img", images);
    ok(&c, p, true);
    snprintf(p, sizeof(p), "%s/secret.img", outside);
    refused(&c, p, true, "outside the image directories of this host");
    refused(&c, "/etc/shadow", true, "outside the image directories");
    refused(&c, "relative.img", false, "must be absolute");
    /* A directory with the images' name as a prefix is not inside. */
    char twin[200];
    snprintf(twin, sizeof(twin), "%s2", images);
    assert_int_equal(mkdir(twin, 0755), 0);
    touch(twin, "x.img");
    snprintf(p, sizeof(p), "%s/x.img", twin);
    refused(&c, p, true, "outside");
}

static void test_symlinks_cannot_lead_out(void **state)
{
    (void)state;
    struct ternd_config c;
    config(&c, false);
    touch(outside, "other.img");
    char link[256], target[256];
    snprintf(target, sizeof(target), "%s/other.img", outside);
    snprintf(link, sizeof(link), "%s/innocent.img", images);
    assert_int_equal(symlink(target, link), 0);
    refused(&c, link, true, "resolves to");
    /* .. that climbs out, for a file that exists and one that does not. */
    char p[256];
    snprintf(p, sizeof(p), "%s/../outside/other.img", images);
    refused(&c, p, true, "outside");
    snprintf(p, sizeof(p), "%s/../outside/not-yet.img", images);
    refused(&c, p, false, "must not contain '..'");
    /* A link that stays inside is fine. */
    touch(images, "real.img");
    snprintf(target, sizeof(target), "%s/real.img", images);
    snprintf(link, sizeof(link), "%s/alias.img", images);
    assert_int_equal(symlink(target, link), 0);
    ok(&c, link, true);
}

static void test_devices(void **state)
{
    (void)state;
    struct ternd_config c;
    config(&c, false);
    char blk[256], chr[256];
    snprintf(blk, sizeof(blk), "%s/disk0", images);
    snprintf(chr, sizeof(chr), "%s/null", images);
    assert_int_equal(mknod(blk, S_IFBLK | 0600, makedev(7, 200)), 0);
    assert_int_equal(mknod(chr, S_IFCHR | 0600, makedev(1, 3)), 0);
    refused(&c, blk, true, "is a block device");
    refused(&c, blk, true, "allow_block_devices = yes");
    refused(&c, chr, true, "not a regular file");
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/sub", images);
    assert_int_equal(mkdir(dir, 0755), 0);
    refused(&c, dir, true, "not a regular file");
    config(&c, true);
    ok(&c, blk, true);
    refused(&c, chr, true, "not a regular file or a block device");
}

static void test_missing_files(void **state)
{
    (void)state;
    struct ternd_config c;
    config(&c, false);
    char p[256];
    snprintf(p, sizeof(p), "%s/later.img", images);
    ok(&c, p, false);                      /* at define: the path is judged */
    refused(&c, p, true, "No such file");  /* where it starts: the file must be there */
    refused(&c, "/srv/elsewhere/later.img", false, "outside");
}

static void test_defaults(void **state)
{
    (void)state;
    struct ternd_config c;
    struct tern_err err;
    ternd_config_defaults(&c);
    assert_false(c.allow_block_devices);
    assert_int_equal(c.nr_image_dirs, 0);
    refused(&c, "/srv/a.img", false, "allows no disk images (set image_dirs, or shared_dir");
    /* shared_dir is the default image directory. */
    char text[256];
    snprintf(text, sizeof(text), "shared_dir = %s\n", images);
    assert_int_equal(ternd_config_parse(&c, text, "t.conf", &err), 0);
    touch(images, "s.img");
    char p[256];
    snprintf(p, sizeof(p), "%s/s.img", images);
    ok(&c, p, true);
    /* Bad configuration lines. */
    ternd_config_defaults(&c);
    assert_int_equal(ternd_config_parse(&c, "image_dirs = relative\n", "t.conf", &err), -1);
    assert_non_null(strstr(err.msg, "must be an absolute path"));
    assert_int_equal(ternd_config_parse(&c, "allow_block_devices = maybe\n", "t.conf", &err), -1);
    assert_non_null(strstr(err.msg, "allow_block_devices must be yes or no"));
    assert_int_equal(ternd_config_parse(&c, "image_dirs = /a /b /c\n", "t.conf", &err), 0);
    assert_int_equal(c.nr_image_dirs, 3);
    assert_string_equal(c.image_dirs[2], "/c");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inside_and_outside),
        cmocka_unit_test(test_symlinks_cannot_lead_out),
        cmocka_unit_test(test_devices),
        cmocka_unit_test(test_missing_files),
        cmocka_unit_test(test_defaults),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
