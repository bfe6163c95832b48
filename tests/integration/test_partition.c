/* The cluster state under partitions, merges and lost hosts (issue 11),
 * with real corosync and ternd on five test hosts, no VMs (so these run on
 * machines without KVM too):
 *  - a minority of two on its own bridge, whose agents and corosync
 *    restart a few times (its history grows) while the majority goes on:
 *    after the heal the majority's state is everywhere and every change it
 *    acknowledged is there; the minority refused changes meanwhile;
 *  - one host cut off alone, then back;
 *  - a state file with one flipped bit is refused at start;
 *  - a node configured with another node's host name never acts and stops;
 *  - a second ternd on a node is refused before it joins the group;
 *  - a replica that refused a message on its own (out of memory, injected)
 *    leaves the group, reloads and syncs again, VMs untouched;
 *  - a state larger than one CPG message reaches a joining host;
 *  - an offline host is removed by the operator and its name is free. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/proc.h"
#include "tests/support/ternd_assert.h"

#define HOSTS 5
#define ALL 0x3e       /* hosts 1..5 */
#define MAJORITY 0x0e  /* hosts 1..3 */
#define MINORITY 0x30  /* hosts 4 and 5 */

static struct ternd_hosts T;

static json_t *define_req(const char *name)
{
    json_t *cfg = json_pack("{s:s, s:i, s:i}", "kernel", T.guest, "mem_mib", 64, "vcpus", 1);
    return json_pack("{s:s, s:s, s:o}", "cmd", "vm.define", "name", name, "config", cfg);
}

static bool has_vm(int h, const char *name)
{
    json_t *r = ternd_api(&T, h, json_pack("{s:s, s:s}", "cmd", "vm.show", "name", name), NULL,
                          10000);
    bool ok = r && json_is_true(json_object_get(r, "ok"));
    json_decref(r);
    return ok;
}

static json_int_t cluster_field(int h, const char *key)
{
    json_t *s = ternd_status(&T, h);
    json_int_t v = json_integer_value(json_object_get(json_object_get(s, "cluster"), key));
    json_decref(s);
    return v;
}

/* Lines of host h's ternd log containing `needle`. */
static int log_count(int h, const char *needle)
{
    return test_count_text(T.ternd[h].err_path, needle);
}

static void restart_ternd(int h)
{
    ternd_hosts_kill(&T, h);
    assert_int_equal(ternd_hosts_start(&T, h, NULL), 0);
}

static int setup(void **state)
{
    (void)state;
    char err[1024];
    if (ternd_hosts_create(&T, HOSTS, "partition", err, sizeof(err)) < 0) {
        fprintf(stderr, "creating the test hosts: %s\n", err);
        return -1;
    }
    for (int h = 1; h <= HOSTS; h++)
        if (ternd_hosts_start(&T, h, NULL) < 0)
            return -1;
    return ternd_hosts_agree(&T, ALL, HOSTS, true, 30000) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    ternd_hosts_destroy(&T);
    return 0;
}

/* Defects 1 and 2. */
static void majority_wins_after_minority_flaps(void **state)
{
    (void)state;
    char err[512];
    json_t *reply;
    assert_int_equal(test_cluster_split(&T.cl, MINORITY, err, sizeof(err)), 0);
    tagree(&T, MAJORITY, 3, true, 20000);
    tagree(&T, MINORITY, 2, false, 20000);
    /* The minority refuses changes: nothing it could acknowledge. */
    reply = ternd_api(&T, 4, define_req("from-minority"), NULL, 10000);
    assert_non_null(reply);
    assert_string_equal(ternd_err_code(reply), "no_quorum");
    json_decref(reply);
    /* It flaps: agents and corosync restart. */
    for (int round = 0; round < 3; round++) {
        restart_ternd(4);
        tagree(&T, MINORITY, 2, false, 20000);
        restart_ternd(5);
        tagree(&T, MINORITY, 2, false, 20000);
    }
    ternd_hosts_kill(&T, 4);
    assert_int_equal(test_cluster_stop_corosync(&T.cl, 4, err, sizeof(err)), 0);
    assert_int_equal(test_cluster_start_corosync(&T.cl, 4, err, sizeof(err)), 0);
    assert_int_equal(ternd_hosts_start(&T, 4, NULL), 0);
    /* A restarted corosync can take a while to be let back in (here up to
     * ~30 s of membership rounds, seen in corosync's own log). */
    tagree(&T, MINORITY, 2, false, 90000);
    /* The majority acknowledges changes meanwhile. */
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof(name), "acked%d", i);
        tapi_ok(&T, 1 + i, define_req(name), &reply);
        json_decref(reply);
    }
    json_int_t maj_v = cluster_field(1, "version"), min_v = cluster_field(4, "version");
    json_int_t maj_q = cluster_field(1, "quorum_epoch"), min_q = cluster_field(4, "quorum_epoch");
    print_message("before the heal: majority version %lld (quorum epoch %lld), minority "
                  "version %lld (quorum epoch %lld)\n",
                  (long long)maj_v, (long long)maj_q, (long long)min_v, (long long)min_q);
    /* The majority went on in the epoch it had (its members came from one
     * configuration, no sync round) and only it raised the quorate version;
     * the minority's rounds never made it quorate. */
    assert_true(maj_q >= min_q);
    assert_true(min_v > maj_v); /* "the higher version wins" would have lost acked0..2 */
    assert_int_equal(test_cluster_split(&T.cl, 0, err, sizeof(err)), 0);
    tagree(&T, ALL, HOSTS, true, 90000);
    tassert_same(&T, ALL);
    for (int h = 1; h <= HOSTS; h++) {
        assert_true(has_vm(h, "acked0") && has_vm(h, "acked1") && has_vm(h, "acked2"));
        assert_false(has_vm(h, "from-minority"));
    }
    /* The minority's copies were replaced, and said so. */
    assert_true(log_count(5, "installed the cluster state of another host") >= 1);
}

/* One host cut off alone, then back. */
static void single_host_cut_off(void **state)
{
    (void)state;
    char err[512];
    json_t *reply;
    assert_int_equal(test_cluster_partition(&T.cl, 5, true, err, sizeof(err)), 0);
    tagree(&T, 0x1e, 4, true, 20000);
    tagree(&T, 0x20, 1, false, 20000);
    tapi_ok(&T, 2, define_req("while-h5-away"), &reply);
    json_decref(reply);
    assert_int_equal(test_cluster_partition(&T.cl, 5, false, err, sizeof(err)), 0);
    tagree(&T, ALL, HOSTS, true, 90000);
    tassert_same(&T, ALL);
    assert_true(has_vm(5, "while-h5-away"));
}

/* Defect 11: one flipped bit in the persisted state is refused. */
static void flipped_bit_refused(void **state)
{
    (void)state;
    char path[400], moved[420];
    snprintf(path, sizeof(path), "%s/h3/state/cluster-state.json", T.dir);
    test_proc_signal(&T.ternd[3], SIGTERM); /* a clean stop: everything written */
    assert_true(test_proc_wait(&T.ternd[3], 10000));
    char *text = test_read_text(path);
    char *v = strstr(text, "\"version\":");
    assert_non_null(v);
    v[10] = v[10] == '9' ? '8' : v[10] + 1; /* the version, one digit changed */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    free(text);
    assert_int_equal(ternd_hosts_start(&T, 3, NULL), 0);
    assert_true(test_proc_wait(&T.ternd[3], 10000));
    assert_int_equal(T.ternd[3].status, 78);
    assert_true(test_wait_for_text(T.ternd[3].err_path, "fails its checksum", 0));
    /* Moved away (as the message says), the host takes the cluster's copy. */
    snprintf(moved, sizeof(moved), "%s.damaged", path);
    assert_int_equal(rename(path, moved), 0);
    snprintf(path, sizeof(path), "%s/h3/state/cluster-journal", T.dir);
    unlink(path);
    assert_int_equal(ternd_hosts_start(&T, 3, NULL), 0);
    tagree(&T, ALL, HOSTS, true, 30000);
    tassert_same(&T, ALL);
}

/* Defect 10: a node whose config names another node's host never acts. */
static void duplicate_host_never_acts(void **state)
{
    (void)state;
    ternd_hosts_kill(&T, 5);
    tagree(&T, 0x1e, 4, true, 20000);
    assert_int_equal(ternd_hosts_write_config(&T, 5, "host = h1\n"), 0);
    assert_int_equal(ternd_hosts_start(&T, 5, NULL), 0);
    assert_true(test_proc_wait(&T.ternd[5], 20000));
    assert_int_equal(T.ternd[5].status, 78);
    assert_true(test_wait_for_text(T.ternd[5].err_path, "cannot be host 'h1'", 0));
    assert_true(test_wait_for_text(T.ternd[5].err_path, "belongs to node 1", 0));
    /* h1 is still node 1's. */
    json_t *s = ternd_status(&T, 2);
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(s, "hosts"), i, h)
        if (!strcmp(json_string_value(json_object_get(h, "name")), "h1"))
            assert_int_equal(json_integer_value(json_object_get(h, "nodeid")), 1);
    json_decref(s);
    assert_int_equal(ternd_hosts_write_config(&T, 5, NULL), 0);
    assert_int_equal(ternd_hosts_start(&T, 5, NULL), 0);
    tagree(&T, ALL, HOSTS, true, 30000);
}

/* Defect 5: a second ternd on a node stops before joining the group. */
static void second_ternd_refused(void **state)
{
    (void)state;
    int before = log_count(1, "membership:");
    struct test_proc second;
    char conf[400], out[400], err[512];
    snprintf(conf, sizeof(conf), "%s/h2/ternd.conf", T.dir);
    snprintf(out, sizeof(out), "%s/h2/second", T.dir);
    mkdir(out, 0700);
    char *argv[] = {(char *)test_build_path("ternd"), "--config", conf, NULL};
    assert_int_equal(test_cluster_spawn(&T.cl, 2, argv, out, &second, err, sizeof(err)), 0);
    assert_true(test_proc_wait(&second, 10000));
    assert_int_equal(second.status, 78);
    assert_true(test_wait_for_text(second.err_path, "another ternd already runs", 0));
    test_sleep_ms(1500); /* a join would show up as membership changes by now */
    assert_int_equal(log_count(1, "membership:"), before);
    tagree(&T, ALL, HOSTS, true, 10000);
}

/* Defect 6: a replica that refused a message on its own rejoins from disk. */
static void replica_failure_rejoins(void **state)
{
    (void)state;
    ternd_hosts_kill(&T, 2);
    assert_int_equal(ternd_hosts_start(&T, 2, "replica-local-refusal"), 0);
    tagree(&T, ALL, HOSTS, true, 30000);
    pid_t pid = T.ternd[2].pid;
    json_t *reply;
    tapi_ok(&T, 1, define_req("makes-h2-fail"), &reply);
    json_decref(reply);
    assert_true(test_wait_for_text(T.ternd[2].err_path, "can no longer be trusted", 10000));
    assert_true(test_wait_for_text(T.ternd[2].err_path, "rejoined the cluster group", 10000));
    tagree(&T, ALL, HOSTS, true, 30000);
    tassert_same(&T, ALL);
    assert_true(has_vm(2, "makes-h2-fail"));
    assert_false(test_proc_wait(&T.ternd[2], 0)); /* the same process, still running */
    assert_int_equal(T.ternd[2].pid, pid);
}

/* Defect 4: an offline host keeps its name until the operator removes it. */
static void host_remove_frees_name(void **state)
{
    (void)state;
    char err[512];
    json_t *reply = ternd_api(&T, 1, json_pack("{s:s, s:s}", "cmd", "host.remove", "host", "h4"),
                              NULL, 10000);
    assert_string_equal(ternd_err_code(reply), "conflict"); /* h4 is online */
    json_decref(reply);
    ternd_hosts_kill(&T, 5);
    assert_int_equal(test_cluster_stop_corosync(&T.cl, 5, err, sizeof(err)), 0);
    tagree(&T, 0x1e, 4, true, 20000);
    tapi_ok(&T, 3, json_pack("{s:s, s:s}", "cmd", "host.remove", "host", "h5"), &reply);
    json_decref(reply);
    json_t *s = ternd_status(&T, 1);
    assert_int_equal(json_array_size(json_object_get(s, "hosts")), 4);
    json_decref(s);
    /* The node comes back and announces itself anew. */
    assert_int_equal(test_cluster_start_corosync(&T.cl, 5, err, sizeof(err)), 0);
    assert_int_equal(ternd_hosts_start(&T, 5, NULL), 0);
    tagree(&T, ALL, HOSTS, true, 90000);
    tassert_same(&T, ALL);
}

/* Defect 9: a state larger than one CPG message (4 MiB) reaches a host that
 * joins with nothing; status replies that large reach ternctl. */
static void large_state_syncs_to_joiner(void **state)
{
    (void)state;
    /* Configurations of the largest size (as the probe that found the
     * defect used): 1023-byte command lines, four 255-byte disk paths. */
    char cmd[1024], disk[4][256];
    memset(cmd, 'c', 1023);
    cmd[1023] = '\0';
    int n = 1800;
    double t0 = (double)time(NULL);
    for (int i = 0; i < n; i++) {
        for (int d = 0; d < 4; d++) {
            memset(disk[d], 'd', 255);
            disk[d][255] = '\0';
            /* Inside the hosts' shared_dir (their image directory). */
            snprintf(disk[d], 128, "%.100s/shared/%04d-%d-", T.dir, i, d);
            disk[d][strlen(disk[d])] = 'd';
        }
        json_t *disks = json_pack("[{s:s},{s:s},{s:s},{s:s, s:b}]", "path", disk[0], "path",
                                  disk[1], "path", disk[2], "path", disk[3], "ro", 1);
        json_t *cfg = json_pack("{s:s, s:s, s:i, s:i, s:o}", "kernel", T.guest, "cmdline", cmd,
                                "mem_mib", 64, "vcpus", 1, "disks", disks);
        char name[16];
        snprintf(name, sizeof(name), "big%04d", i);
        json_t *reply;
        tapi_ok(&T, 1 + i % 4, json_pack("{s:s, s:s, s:o}", "cmd", "vm.define", "name", name,
                                         "config", cfg),
                &reply);
        json_decref(reply);
    }
    print_message("%d defines of the largest configurations acknowledged in %.0f s\n", n,
                  (double)time(NULL) - t0);
    ternd_hosts_kill(&T, 5);
    char st[400];
    snprintf(st, sizeof(st), "%s/h5/state", T.dir);
    test_rmtree(st);
    assert_int_equal(mkdir(st, 0700), 0);
    assert_int_equal(ternd_hosts_start(&T, 5, NULL), 0);
    tagree(&T, ALL, HOSTS, true, 60000);
    json_t *s = ternd_status(&T, 5);
    char *text = json_dumps(s, JSON_COMPACT);
    size_t bytes = strlen(text);
    assert_true(bytes > (4u << 20));
    assert_true(json_array_size(json_object_get(s, "vms")) >= (size_t)n);
    print_message("a joining host took %zu bytes of state (status)\n", bytes);
    free(text);
    json_decref(s);
    /* ternctl reads a reply line that large. */
    char sock[400], out[256];
    snprintf(sock, sizeof(sock), "%s/h5/run/tern/ternd.sock", T.dir);
    char *argv[] = {(char *)test_build_path("ternctl"), "--socket", sock, "--json", "vm",
                    "list", NULL};
    struct test_proc p;
    char pdir[400];
    snprintf(pdir, sizeof(pdir), "%s/ternctl-out", T.dir);
    mkdir(pdir, 0700);
    assert_int_equal(test_proc_start(&p, pdir, argv), 0);
    assert_true(test_proc_wait(&p, 60000));
    assert_int_equal(p.status, 0);
    snprintf(out, sizeof(out), "\"big%04d\"", n - 1);
    assert_true(test_wait_for_text(p.out_path, out, 0));
    tassert_same(&T, ALL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(majority_wins_after_minority_flaps),
        cmocka_unit_test(single_host_cut_off),
        cmocka_unit_test(flipped_bit_refused),
        cmocka_unit_test(duplicate_host_never_acts),
        cmocka_unit_test(second_ternd_refused),
        cmocka_unit_test(replica_failure_rejoins),
        cmocka_unit_test(host_remove_frees_name),
        cmocka_unit_test(large_state_syncs_to_joiner),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
