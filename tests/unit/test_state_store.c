/* ternd's copy of the cluster state on disk (agent/state_store.h): events
 * appended and replayed, durable versions reported by the writer thread,
 * snapshots on install, a cut last line forgiven, a damaged journal or
 * snapshot refused with what to do. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/state_store.h"
#include "tests/support/proc.h"

struct fx {
    char *dir;
    char snap[512], journal[512];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (!f || !(f->dir = test_make_tmpdir("store")))
        return -1;
    snprintf(f->snap, sizeof(f->snap), "%s/cluster-state.json", f->dir);
    snprintf(f->journal, sizeof(f->journal), "%s/cluster-journal", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    test_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static char *dump(const struct cl_state *s)
{
    json_t *j = cl_state_to_json(s);
    char *t = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(j);
    assert_non_null(t);
    return t;
}

/* Feeds what a replica would: the event applied to `s`, then to the store. */
static void apply_msg(struct state_store *st, struct cl_state *s, uint32_t sender, const char *text)
{
    json_t *m = json_loads(text, 0, NULL);
    assert_non_null(m);
    struct tern_err err;
    if (cl_state_apply(s, sender, m, &err) < 0)
        fail_msg("%s: %s", text, err.msg);
    struct replica_event ev = {.kind = REPLICA_EV_MESSAGE, .sender = sender, .msg = m,
                               .version = cl_state_version(s)};
    state_store_event(st, &ev, s);
    json_decref(m);
}

static void apply_config(struct state_store *st, struct cl_state *s, const uint32_t *members,
                         size_t n, uint32_t left, bool node_down)
{
    enum cl_leave_reason why = node_down ? CL_LEFT_NODE : CL_LEFT_PROCESS;
    struct cl_config c = {.members = members, .nr_members = n, .left = &left,
                          .left_reason = &why, .nr_left = left ? 1 : 0};
    cl_state_apply_config(s, &c);
    struct replica_event ev = {.kind = REPLICA_EV_CONFIG, .config = &c,
                               .version = cl_state_version(s)};
    state_store_event(st, &ev, s);
}

/* Waits until the store reports `version` durable. */
static void wait_durable(struct state_store *st, uint64_t version)
{
    uint64_t v = 0;
    char failure[TERN_ERR_MAX];
    for (int i = 0; i < 500 && v < version; i++) {
        struct pollfd p = {.fd = state_store_fd(st), .events = POLLIN};
        poll(&p, 1, 10);
        uint64_t got;
        if (state_store_durable(st, &got, failure, sizeof(failure)))
            v = got;
        if (failure[0])
            fail_msg("store failure: %s", failure);
    }
    assert_true(v >= version);
}

static const uint32_t ALL3[] = {1, 2, 3};

static void populate(struct state_store *st, struct cl_state *s)
{
    apply_config(st, s, ALL3, 3, 0, false);
    char m[256];
    for (uint32_t id = 1; id <= 3; id++) {
        snprintf(m, sizeof(m), "{\"type\":\"host_announce\",\"host\":\"h%u\",\"mem_mib\":4096,"
                 "\"vcpus\":4,\"migration_addr\":\"10.0.0.%u\",\"expected_votes\":3}", id, id);
        apply_msg(st, s, id, m);
    }
    for (int i = 0; i < 20; i++) {
        snprintf(m, sizeof(m), "{\"type\":\"vm_define\",\"name\":\"v%d\",\"config\":{\"kernel\":"
                 "\"/k\",\"mem_mib\":64},\"origin\":{\"node\":1,\"req\":%d}}", i, 100 + i);
        apply_msg(st, s, 1, m);
    }
    apply_msg(st, s, 2, "{\"type\":\"vm_start\",\"name\":\"v3\",\"host\":\"h2\"}");
    const uint32_t m13[] = {1, 3};
    apply_config(st, s, m13, 2, 2, true); /* h2's node left: v3 is lost */
}

static void test_journal_replays(void **state)
{
    struct fx *f = *state;
    struct cl_state *s = cl_state_new(), *into = cl_state_new();
    struct state_store *st;
    struct tern_err err;
    int loaded = -1;
    if (state_store_open(&st, f->dir, into, &loaded, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(loaded, 0);
    populate(st, s);
    wait_durable(st, cl_state_version(s));
    struct state_store_stats stats = state_store_stats(st);
    print_message("%llu appends in %llu batches\n", (unsigned long long)stats.appends,
                  (unsigned long long)stats.batches);
    assert_int_equal(stats.appends, cl_state_version(s));
    assert_true(stats.batches <= stats.appends);
    state_store_close(st);
    /* What the files hold replays to the very same state. */
    struct cl_state *back = cl_state_new();
    bool torn = true;
    assert_int_equal(state_store_load_files(f->snap, f->journal, back, &torn, &loaded, &err), 0);
    assert_false(torn);
    assert_int_equal(loaded, 1);
    char *a = dump(s), *b = dump(back);
    assert_string_equal(a, b);
    assert_int_equal(cl_state_vm(back, "v3")->run, CL_RUN_LOST);
    assert_int_equal(cl_state_origin_req(back, 1), 119);
    free(b);
    /* Opened again: loaded, then compacted into a snapshot (the journal
     * empties), and still the same. */
    struct cl_state *again = cl_state_new();
    assert_int_equal(state_store_open(&st, f->dir, again, &loaded, &err), 0);
    assert_int_equal(loaded, 1);
    b = dump(again);
    assert_string_equal(a, b);
    free(b);
    wait_durable(st, cl_state_version(s));
    struct stat sb;
    assert_int_equal(stat(f->journal, &sb), 0);
    assert_int_equal(sb.st_size, 0);
    /* More events on top of the snapshot. */
    apply_msg(st, s, 1, "{\"type\":\"vm_define\",\"name\":\"late\",\"config\":{\"kernel\":\"/k\","
                        "\"mem_mib\":64}}");
    wait_durable(st, cl_state_version(s));
    state_store_close(st);
    assert_int_equal(state_store_load_files(f->snap, f->journal, back, &torn, &loaded, &err), 0);
    assert_non_null(cl_state_vm(back, "late"));
    free(a);
    cl_state_free(s);
    cl_state_free(into);
    cl_state_free(back);
    cl_state_free(again);
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *b = malloc(*len + 1);
    assert_int_equal(fread(b, 1, *len, fp), *len);
    fclose(fp);
    return b;
}

static void spit(const char *path, const uint8_t *b, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(b, 1, len, fp), len);
    fclose(fp);
}

/* A crash while a line was written leaves it cut: forgiven (it was never
 * reported durable) and cleaned up by the next snapshot. A damaged line in
 * the middle, or a snapshot that fails its checksum, is refused. */
static void test_damage(void **state)
{
    struct fx *f = *state;
    struct cl_state *s = cl_state_new(), *into = cl_state_new();
    struct state_store *st;
    struct tern_err err;
    int loaded;
    assert_int_equal(state_store_open(&st, f->dir, into, &loaded, &err), 0);
    populate(st, s);
    wait_durable(st, cl_state_version(s));
    state_store_close(st);
    size_t len;
    uint8_t *j = slurp(f->journal, &len);
    uint8_t *copy = malloc(len);
    memcpy(copy, j, len);

    /* Cut in the middle of the last line. */
    spit(f->journal, j, len - 7);
    struct cl_state *back = cl_state_new();
    bool torn = false;
    assert_int_equal(state_store_load_files(f->snap, f->journal, back, &torn, &loaded, &err), 0);
    assert_true(torn);
    assert_int_equal(cl_state_version(back), cl_state_version(s) - 1);
    /* The store writes a snapshot at once: the cut line is gone for good. */
    struct cl_state *again = cl_state_new();
    assert_int_equal(state_store_open(&st, f->dir, again, &loaded, &err), 0);
    wait_durable(st, cl_state_version(back));
    state_store_close(st);
    assert_int_equal(state_store_load_files(f->snap, f->journal, back, &torn, &loaded, &err), 0);
    assert_false(torn);

    /* One flipped bit in a middle line: refused, naming the line. */
    unlink(f->snap);
    memcpy(j, copy, len);
    uint8_t *third = (uint8_t *)memchr((uint8_t *)memchr(j, '\n', len) + 1, '\n', len) + 1;
    third[20] ^= 0x04;
    spit(f->journal, j, len);
    assert_int_equal(state_store_load_files(f->snap, f->journal, back, &torn, &loaded, &err), -1);
    print_message("damaged journal: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "line 3 is damaged"));
    assert_non_null(strstr(err.msg, "move"));
    assert_int_equal(state_store_open(&st, f->dir, again, &loaded, &err), -1);

    /* A record that does not follow (a gap) is refused too. */
    memcpy(j, copy, len);
    uint8_t *second = memchr(j, '\n', len) + 1;
    size_t skip = (size_t)((uint8_t *)memchr(second, '\n', len - (size_t)(second - j)) + 1 - second);
    memmove(second, second + skip, len - (size_t)(second - j) - skip);
    spit(f->journal, j, len - skip);
    assert_int_equal(state_store_load_files(f->snap, f->journal, back, &torn, &loaded, &err), -1);
    assert_non_null(strstr(err.msg, "records are missing"));

    /* A snapshot with a flipped bit. */
    spit(f->journal, copy, len);
    assert_int_equal(cl_state_save(s, f->snap, &err), 0);
    unlink(f->journal);
    size_t slen;
    uint8_t *sn = slurp(f->snap, &slen);
    sn[slen / 2] ^= 0x01;
    spit(f->snap, sn, slen);
    assert_int_equal(state_store_load_files(f->snap, f->journal, back, &torn, &loaded, &err), -1);
    assert_non_null(strstr(err.msg, "fails its checksum"));
    free(sn);
    free(j);
    free(copy);
    cl_state_free(s);
    cl_state_free(into);
    cl_state_free(back);
    cl_state_free(again);
}

/* An install (a sync round) is a new snapshot and a new generation: what
 * was durable before counts no longer; reload starts another. */
static void test_install_and_reload(void **state)
{
    struct fx *f = *state;
    struct cl_state *s = cl_state_new(), *into = cl_state_new();
    struct state_store *st;
    struct tern_err err;
    int loaded;
    assert_int_equal(state_store_open(&st, f->dir, into, &loaded, &err), 0);
    populate(st, s);
    struct replica_event ev = {.kind = REPLICA_EV_INSTALL, .version = cl_state_version(s)};
    state_store_event(st, &ev, s);
    wait_durable(st, cl_state_version(s));
    assert_true(state_store_stats(st).snapshots >= 1);
    struct stat sb;
    assert_int_equal(stat(f->journal, &sb), 0);
    assert_int_equal(sb.st_size, 0); /* the snapshot holds it all */
    apply_msg(st, s, 1, "{\"type\":\"vm_define\",\"name\":\"after\",\"config\":{\"kernel\":"
                        "\"/k\",\"mem_mib\":64}}");
    struct cl_state *re = cl_state_new();
    assert_int_equal(state_store_reload(st, re, &err), 0);
    char *a = dump(s), *b = dump(re);
    assert_string_equal(a, b);
    free(a);
    free(b);
    state_store_close(st);
    cl_state_free(s);
    cl_state_free(into);
    cl_state_free(re);
}

/* Group commit keeps up: 2000 events, far fewer fdatasyncs. */
static void test_group_commit(void **state)
{
    struct fx *f = *state;
    struct cl_state *s = cl_state_new(), *into = cl_state_new();
    struct state_store *st;
    struct tern_err err;
    int loaded;
    assert_int_equal(state_store_open(&st, f->dir, into, &loaded, &err), 0);
    apply_config(st, s, ALL3, 3, 0, false);
    apply_msg(st, s, 1, "{\"type\":\"host_announce\",\"host\":\"h1\",\"mem_mib\":4096,"
                        "\"vcpus\":4,\"migration_addr\":\"10.0.0.1\",\"expected_votes\":3}");
    char m[256];
    for (int i = 0; i < 2000; i++) {
        snprintf(m, sizeof(m), "{\"type\":\"vm_define\",\"name\":\"g%04d\",\"config\":{\"kernel\":"
                 "\"/k\",\"mem_mib\":64}}", i);
        apply_msg(st, s, 1, m);
    }
    wait_durable(st, cl_state_version(s));
    struct state_store_stats stats = state_store_stats(st);
    print_message("2002 events: %llu batches (fdatasyncs)\n", (unsigned long long)stats.batches);
    assert_true(stats.batches < stats.appends);
    state_store_close(st);
    cl_state_free(s);
    cl_state_free(into);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_journal_replays, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_install_and_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
