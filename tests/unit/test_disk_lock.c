/* Disk image locks (node-vmm/disk_lock.c) across real processes: every
 * other holder here is a forked process that takes its lock through the
 * same module and then does what it is told over a pipe (release, take
 * again, exit), or is SIGKILLed. Checked: two writers are refused, readers
 * share, a writer and a reader exclude each other both ways, a lock ends
 * when its process ends (also by SIGKILL, at once), a lock released at a
 * migration's commit is taken by another process (and then refused to the
 * first), sets are taken all or nothing, the error text, a replaced path,
 * and files that are not images. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "node-vmm/disk_lock.h"
#include "tests/support/proc.h"

struct fixture {
    char *dir;
    char img[512], img2[512];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f || !(f->dir = test_make_tmpdir("disklock")))
        return -1;
    snprintf(f->img, sizeof(f->img), "%s/web1.img", f->dir);
    snprintf(f->img2, sizeof(f->img2), "%s/web2.img", f->dir);
    if (test_make_disk(f->img, 1 << 20) < 0 || test_make_disk(f->img2, 1 << 20) < 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    test_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* --- another process holding a lock --- */

struct holder {
    pid_t pid;
    int cmd; /* parent writes commands */
    int ans; /* parent reads answers */
};

#define CHILD_CMD 100
#define CHILD_ANS 101

/* The child: takes the lock on `path`, answers 'y' (held) or 'n'
 * (refused), then obeys: 'r' release (answers 'r'), 't' take again ('y' or
 * 'n'), 'q' or EOF exit without releasing (the exit ends the lock). */
static void holder_main(const char *path, bool rw)
{
    struct disk_lock l;
    struct tern_err err;
    char a = 'n';
    if (disk_lock_open(&l, path, rw, &err) == 0 && disk_lock_take(&l, false, &err) == 0)
        a = 'y';
    if (write(CHILD_ANS, &a, 1) != 1)
        _exit(2);
    for (;;) {
        char c;
        if (read(CHILD_CMD, &c, 1) != 1 || c == 'q')
            _exit(0);
        if (c == 'r')
            a = disk_lock_release(&l, &err) == 0 ? 'r' : 'e';
        else if (c == 't')
            a = disk_lock_take(&l, false, &err) == 0 ? 'y' : 'n';
        else
            a = '?';
        if (write(CHILD_ANS, &a, 1) != 1)
            _exit(2);
    }
}

/* Starts a holder and returns its first answer ('y' or 'n'). The child
 * keeps no descriptor of the parent's but its two pipe ends: an inherited
 * lock descriptor would keep the parent's locks alive. */
static char holder_start(struct holder *h, const char *path, bool rw)
{
    int to[2], from[2];
    assert_int_equal(pipe2(to, O_CLOEXEC), 0);
    assert_int_equal(pipe2(from, O_CLOEXEC), 0);
    h->pid = fork();
    assert_true(h->pid >= 0);
    if (h->pid == 0) {
        if (dup2(to[0], CHILD_CMD) < 0 || dup2(from[1], CHILD_ANS) < 0)
            _exit(3);
        close_range(3, CHILD_CMD - 1, 0);
        close_range(CHILD_ANS + 1, ~0u, 0);
        holder_main(path, rw);
    }
    close(to[0]);
    close(from[1]);
    h->cmd = to[1];
    h->ans = from[0];
    char a = 0;
    assert_int_equal(read(h->ans, &a, 1), 1);
    return a;
}

static char holder_ask(struct holder *h, char cmd)
{
    assert_int_equal(write(h->cmd, &cmd, 1), 1);
    char a = 0;
    assert_int_equal(read(h->ans, &a, 1), 1);
    return a;
}

/* Ends the holder (normally, or with SIGKILL) and reaps it. */
static void holder_end(struct holder *h, bool kill_it)
{
    if (kill_it)
        assert_int_equal(kill(h->pid, SIGKILL), 0);
    else
        assert_int_equal(write(h->cmd, "q", 1), 1);
    int status;
    assert_int_equal(waitpid(h->pid, &status, 0), h->pid);
    if (kill_it)
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    else
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(h->cmd);
    close(h->ans);
    h->pid = 0;
}

static void open_lock(struct disk_lock *l, const char *path, bool rw)
{
    struct tern_err err;
    if (disk_lock_open(l, path, rw, &err) < 0)
        fail_msg("%s", err.msg);
}

/* Expects the attempt to be refused as a conflict with `needle` (and the
 * image's path) in the message. */
static void expect_refused(struct disk_lock *l, bool find_holder, const char *needle)
{
    struct tern_err err = {0};
    assert_int_equal(disk_lock_take(l, find_holder, &err), -1);
    assert_int_equal(err.code, TERN_ERR_CONFLICT);
    assert_false(l->held);
    char disk[PATH_MAX + 64];
    snprintf(disk, sizeof(disk), "disk %s is in use by another VM process (", l->path);
    if (!strstr(err.msg, disk) || !strstr(err.msg, needle))
        fail_msg("expected '%s' and '%s' in: %s", disk, needle, err.msg);
}

static void expect_taken(struct disk_lock *l)
{
    struct tern_err err = {0};
    if (disk_lock_take(l, true, &err) < 0)
        fail_msg("expected the lock, got: %s", err.msg);
    assert_true(l->held);
}

static void test_two_writers_refused(void **state)
{
    struct fixture *f = *state;
    struct holder w;
    assert_int_equal(holder_start(&w, f->img, true), 'y');
    struct disk_lock l;
    open_lock(&l, f->img, true);
    char who[128];
    snprintf(who, sizeof(who), "locked for writing by pid %d (test_disk_lock) on this host",
             (int)w.pid);
    expect_refused(&l, true, who);
    expect_refused(&l, true, "refusing to open it for writing here: two VMs must never write");
    /* Without the search, the kind of lock but no holder. */
    expect_refused(&l, false, "(locked for writing); refusing");
    /* A third process is refused as well. */
    struct holder w2;
    assert_int_equal(holder_start(&w2, f->img, true), 'n');
    holder_end(&w2, false);
    /* The other image is not affected. */
    struct disk_lock other;
    open_lock(&other, f->img2, true);
    expect_taken(&other);
    disk_lock_close(&other);
    holder_end(&w, false);
    expect_taken(&l);
    disk_lock_close(&l);
}

static void test_readers_share(void **state)
{
    struct fixture *f = *state;
    struct holder r1, r2;
    assert_int_equal(holder_start(&r1, f->img, false), 'y');
    assert_int_equal(holder_start(&r2, f->img, false), 'y');
    struct disk_lock l;
    open_lock(&l, f->img, false);
    expect_taken(&l);
    /* A second read lock of this process, through another open: fine. */
    struct disk_lock l2;
    open_lock(&l2, f->img, false);
    expect_taken(&l2);
    disk_lock_close(&l2);
    disk_lock_close(&l);
    holder_end(&r1, false);
    holder_end(&r2, false);
}

/* The cluster shares an image only if every VM has it read-only; so does
 * the lock, either way round. */
static void test_writer_and_reader_exclude(void **state)
{
    struct fixture *f = *state;
    struct holder r;
    assert_int_equal(holder_start(&r, f->img, false), 'y');
    struct disk_lock w;
    open_lock(&w, f->img, true);
    char who[128];
    snprintf(who, sizeof(who), "open read-only by pid %d", (int)r.pid);
    expect_refused(&w, true, who);
    expect_refused(&w, true, "a VM may not write an image that other VMs read");
    struct holder w2;
    assert_int_equal(holder_start(&w2, f->img, true), 'n');
    holder_end(&w2, false);
    holder_end(&r, false);

    expect_taken(&w);
    struct holder r2;
    assert_int_equal(holder_start(&r2, f->img, false), 'n');
    holder_end(&r2, false);
    /* This process itself, through a second open: named as such. */
    struct disk_lock self;
    open_lock(&self, f->img, false);
    char me[128];
    snprintf(me, sizeof(me), "locked for writing by this very process (pid %d): the image is named "
                             "twice", (int)getpid());
    expect_refused(&self, true, me);
    expect_refused(&self, true, "a VM may not read an image that another VM writes");
    disk_lock_close(&self);
    disk_lock_close(&w);
}

static void released_when_holder_ends(void **state, bool kill_it)
{
    struct fixture *f = *state;
    struct holder w;
    assert_int_equal(holder_start(&w, f->img, true), 'y');
    struct disk_lock l;
    open_lock(&l, f->img, true);
    expect_refused(&l, false, "locked for writing");
    holder_end(&w, kill_it);
    /* At once: the process is reaped, so its lock is gone (no retry). */
    expect_taken(&l);
    disk_lock_close(&l);
    /* And a reader that dies leaves nothing behind either. */
    struct holder r;
    assert_int_equal(holder_start(&r, f->img, false), 'y');
    open_lock(&l, f->img, true);
    expect_refused(&l, false, "open read-only");
    holder_end(&r, kill_it);
    expect_taken(&l);
    disk_lock_close(&l);
}

static void test_released_when_holder_exits(void **state)
{
    released_when_holder_ends(state, false);
}

static void test_released_when_holder_is_killed(void **state)
{
    released_when_holder_ends(state, true);
}

/* A migration's hand-over: the destination may not write while the
 * source holds the lock; the source releases at its commit (its process
 * goes on, file still open); the destination takes it; from then on the
 * source cannot take it back; closing hands it back again. */
static void test_release_at_commit_then_take(void **state)
{
    struct fixture *f = *state;
    struct holder src;
    assert_int_equal(holder_start(&src, f->img, true), 'y');
    struct disk_lock dst;
    open_lock(&dst, f->img, true);
    expect_refused(&dst, false, "locked for writing");
    expect_refused(&dst, false, "locked for writing"); /* a retry before the commit */
    assert_int_equal(holder_ask(&src, 'r'), 'r');      /* the source commits */
    expect_taken(&dst);
    assert_int_equal(holder_ask(&src, 't'), 'n'); /* the source can no longer write */
    struct tern_err err;
    assert_int_equal(disk_lock_release(&dst, &err), 0);
    assert_false(dst.held);
    assert_int_equal(disk_lock_release(&dst, &err), 0); /* not held: nothing to do */
    assert_int_equal(holder_ask(&src, 't'), 'y');
    expect_refused(&dst, true, "locked for writing by pid");
    disk_lock_close(&dst);
    disk_lock_close(&dst); /* twice: harmless */
    holder_end(&src, false);
}

/* A VM's disks are locked all or nothing, writers and readers apart (an
 * incoming VM takes only its read locks while it receives). */
static void test_sets(void **state)
{
    struct fixture *f = *state;
    struct holder w;
    assert_int_equal(holder_start(&w, f->img2, true), 'y');
    struct disk_lock set[2];
    open_lock(&set[0], f->img, true);
    open_lock(&set[1], f->img2, true);
    struct tern_err err = {0};
    assert_int_equal(disk_lock_take_set(set, 2, DISK_LOCK_ALL, true, &err), -1);
    assert_int_equal(err.code, TERN_ERR_CONFLICT);
    assert_non_null(strstr(err.msg, f->img2));
    assert_false(set[0].held); /* taken and given back */
    assert_false(set[1].held);
    struct holder other;
    assert_int_equal(holder_start(&other, f->img, true), 'y'); /* so img is really free */
    holder_end(&other, false);
    assert_true(disk_lock_set_pending(set, 2, DISK_LOCK_WRITERS));
    disk_lock_close(&set[0]);
    disk_lock_close(&set[1]);

    /* img read-only, img2 read-write (held elsewhere): the readers now,
     * the writers later. */
    open_lock(&set[0], f->img, false);
    open_lock(&set[1], f->img2, true);
    assert_int_equal(disk_lock_take_set(set, 2, DISK_LOCK_READERS, true, &err), 0);
    assert_true(set[0].held);
    assert_false(set[1].held);
    assert_false(disk_lock_set_pending(set, 2, DISK_LOCK_READERS));
    assert_true(disk_lock_set_pending(set, 2, DISK_LOCK_WRITERS));
    assert_int_equal(disk_lock_take_set(set, 2, DISK_LOCK_WRITERS, false, &err), -1);
    assert_int_equal(err.code, TERN_ERR_CONFLICT);
    assert_true(set[0].held); /* the readers stay */
    assert_int_equal(holder_ask(&w, 'r'), 'r');
    assert_int_equal(disk_lock_take_set(set, 2, DISK_LOCK_WRITERS, false, &err), 0);
    assert_true(set[1].held);
    assert_false(disk_lock_set_pending(set, 2, DISK_LOCK_ALL));
    /* Releasing the writers leaves the readers. */
    assert_int_equal(disk_lock_release_set(set, 2, DISK_LOCK_WRITERS, &err), 0);
    assert_true(set[0].held);
    assert_false(set[1].held);
    assert_int_equal(holder_ask(&w, 't'), 'y');
    disk_lock_close(&set[0]);
    disk_lock_close(&set[1]);
    holder_end(&w, false);
}

static void test_same_file(void **state)
{
    struct fixture *f = *state;
    struct disk_lock l;
    open_lock(&l, f->img, true);
    struct tern_err err;
    int fd = open(f->img, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(disk_lock_same_file(&l, fd, &err), 0);
    close(fd);
    /* The path now names another file: not the locked one. */
    char moved[600];
    snprintf(moved, sizeof(moved), "%s.old", f->img);
    assert_int_equal(rename(f->img, moved), 0);
    assert_int_equal(test_make_disk(f->img, 1 << 20), 0);
    fd = open(f->img, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(disk_lock_same_file(&l, fd, &err), -1);
    assert_non_null(strstr(err.msg, "was replaced while it was being opened"));
    assert_non_null(strstr(err.msg, f->img));
    close(fd);
    disk_lock_close(&l);
}

static void test_not_images(void **state)
{
    struct fixture *f = *state;
    struct disk_lock l;
    struct tern_err err;
    char path[600];
    snprintf(path, sizeof(path), "%s/missing.img", f->dir);
    assert_int_equal(disk_lock_open(&l, path, true, &err), -1);
    assert_int_equal(l.fd, -1);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "No such file or directory"));
    disk_lock_close(&l); /* an unopened lock closes fine */
    assert_int_equal(disk_lock_open(&l, f->dir, false, &err), -1);
    assert_non_null(strstr(err.msg, "not a regular file or block device"));
    assert_int_equal(disk_lock_open(&l, "", true, &err), -1);
    /* A FIFO neither hangs the open nor passes for an image. */
    snprintf(path, sizeof(path), "%s/fifo", f->dir);
    assert_int_equal(mkfifo(path, 0600), 0);
    alarm(10); /* a hung open fails the test instead of hanging it */
    assert_int_equal(disk_lock_open(&l, path, false, &err), -1);
    alarm(0);
    assert_non_null(strstr(err.msg, "not a regular file or block device"));
    /* A read-only image cannot be locked for writing (it cannot be written). */
    assert_int_equal(chmod(f->img, 0444), 0);
    if (geteuid() != 0) {
        assert_int_equal(disk_lock_open(&l, f->img, true, &err), -1);
        assert_non_null(strstr(err.msg, "for reading and writing"));
    }
    assert_int_equal(disk_lock_open(&l, f->img, false, &err), 0);
    expect_taken(&l);
    disk_lock_close(&l);
}

static void test_retry_delays(void **state)
{
    (void)state;
    int total = 0, attempts = 0, prev = 0;
    for (unsigned a = 0; total < DISK_LOCK_HANDOVER_MS; a++, attempts++) {
        int ms = disk_lock_retry_ms(a);
        assert_true(ms >= 1 && ms <= 25);
        assert_true(ms >= prev); /* never shorter than the one before */
        prev = ms;
        total += ms;
    }
    assert_int_equal(disk_lock_retry_ms(0), 1); /* the first retry comes quickly */
    assert_true(attempts >= 150);               /* and later ones keep trying */
    assert_int_equal(disk_lock_retry_ms(1000000), 25);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_two_writers_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readers_share, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_and_reader_exclude, setup, teardown),
        cmocka_unit_test_setup_teardown(test_released_when_holder_exits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_released_when_holder_is_killed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_at_commit_then_take, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_images, setup, teardown),
        cmocka_unit_test(test_retry_delays),
    };
    return cmocka_run_group_tests_name("disk_lock", tests, NULL, NULL);
}
