/* ternd's Prometheus metrics (issue 15; agent/metrics.c), with real
 * corosync and ternd on three test hosts and stand-in VMMs
 * (tests/tools/tern-vmm-standin: no guest, no KVM needed). Each host's
 * /metrics is scraped from inside its network namespace by Python's
 * prometheus_client parser (text_string_to_metric_families), and the
 * values are compared with `ternctl --json status` of the same host.
 *
 *  - every family is there with HELP and TYPE; gauges (quorum, members,
 *    hosts and VMs by state, migrations in flight) match the status; a
 *    migration between stand-ins counts as succeeded everywhere, with its
 *    duration, guest pause and bytes;
 *  - HTTP: 404 for another path, 405 (with Allow) for POST, HEAD works, a
 *    bare port listens on loopback only;
 *  - clients that connect and send nothing (or half a request), up to the
 *    connection limit, hold nothing up: ternd answers status, its loop
 *    does not spin, they are closed at the connection timeout and
 *    scrapes work again;
 *  - a migration ended by a membership change counts as failed on the
 *    hosts that saw it; an evacuation counts once everywhere; a ternd
 *    restarted starts from zero; a metrics_addr that cannot be listened on
 *    stops ternd at start with a message that names it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/proc.h"
#include "tests/support/ternd_assert.h"

#define HOSTS 3
#define ALL 0x0e
#define PORT 9650
#define LOOPBACK_PORT 9651 /* host 3: metrics_addr = 9651 (a bare port) */
/* Debian's python3-prometheus-client is installed for the system's Python
 * (not one a PATH may put first). */
#define PYTHON "/usr/bin/python3"

static struct ternd_hosts T;
static struct test_proc holder; /* the client that holds connections open */

/* Run inside a test host: MODE URL [TIMEOUT_S]; prints one line
 * "RESULT {json}" with the HTTP status (0: no answer), headers, body and,
 * for a scrape, the families as the client library parsed them. */
static const char scrape_py[] =
    "import json, sys, urllib.request, urllib.error\n"
    "from prometheus_client.parser import text_string_to_metric_families\n"
    "mode, url = sys.argv[1], sys.argv[2]\n"
    "timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 10\n"
    "method = {'scrape': 'GET', 'get': 'GET', 'post': 'POST', 'head': 'HEAD'}[mode]\n"
    "req = urllib.request.Request(url, method=method,\n"
    "                             data=b'x=1' if mode == 'post' else None)\n"
    "out = {'status': 0}\n"
    "body = ''\n"
    "try:\n"
    "    with urllib.request.urlopen(req, timeout=timeout) as r:\n"
    "        out['status'], out['headers'] = r.status, dict(r.headers)\n"
    "        body = r.read().decode()\n"
    "except urllib.error.HTTPError as e:\n"
    "    out['status'], out['headers'] = e.code, dict(e.headers)\n"
    "    body = e.read().decode()\n"
    "except OSError as e:\n"
    "    out['error'] = str(e)\n"
    "out['body'] = body\n"
    "if mode == 'scrape' and out['status'] == 200:\n"
    "    out['families'] = {f.name: {'type': f.type, 'help': f.documentation,\n"
    "                               'samples': [[s.name, s.labels, s.value] for s in f.samples]}\n"
    "                       for f in text_string_to_metric_families(body)}\n"
    "print('RESULT ' + json.dumps(out), flush=True)\n";

/* Run inside a test host, in the background: HOST PORT N opens N
 * connections to the metrics server; the odd ones send half a request
 * (headers never finished), the others nothing. Prints "held N", then
 * "closed I after S s" as the server closes each, then "all closed". */
static const char holder_py[] =
    "import socket, sys, time\n"
    "host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
    "socks = []\n"
    "for i in range(n):\n"
    "    s = socket.create_connection((host, port), timeout=5)\n"
    "    if i % 2:\n"
    "        s.sendall(b'GET /metrics HTTP/1.1\\r\\nHost: t\\r\\n')\n"
    "    socks.append(s)\n"
    "print('held %d' % n, flush=True)\n"
    "t0 = time.monotonic()\n"
    "for i, s in enumerate(socks):\n"
    "    while True:\n"
    "        s.settimeout(max(0.1, 90 - (time.monotonic() - t0)))\n"
    "        try:\n"
    "            d = s.recv(4096)\n"
    "        except socket.timeout:\n"
    "            print('still open %d' % i, flush=True)\n"
    "            sys.exit(1)\n"
    "        except OSError:\n"
    "            d = b''\n"
    "        if not d:\n"
    "            break\n"
    "    print('closed %d after %.1f s' % (i, time.monotonic() - t0), flush=True)\n"
    "print('all closed', flush=True)\n";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *jstr(const json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : "";
}

static void metrics_url(int h, char *out, size_t len)
{
    if (h == 3)
        snprintf(out, len, "http://127.0.0.1:%d/metrics", LOOPBACK_PORT);
    else
        snprintf(out, len, "http://%s:%d/metrics", test_cluster_addr(&T.cl, h), PORT);
}

/* Runs scrape_py in host h; its RESULT object (the test fails without). */
static json_t *http(int h, const char *mode, const char *url, int timeout_s)
{
    static char out[1 << 20];
    char tmo[16];
    snprintf(tmo, sizeof(tmo), "%d", timeout_s);
    char *argv[] = {PYTHON, "-c", (char *)scrape_py, (char *)mode, (char *)url, tmo, NULL};
    int rc = test_cluster_exec(&T.cl, h, argv, (timeout_s + 20) * 1000, out, sizeof(out));
    char *line = strstr(out, "RESULT ");
    json_t *j = line ? json_loads(line + 7, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
    if (rc != 0 || !j)
        fail_msg("%s %s in h%d: exit %d: %.2000s", mode, url, h, rc, out);
    return j;
}

static json_t *scrape(int h)
{
    char url[128];
    metrics_url(h, url, sizeof(url));
    json_t *r = http(h, "scrape", url, 10);
    if (json_integer_value(json_object_get(r, "status")) != 200)
        fail_msg("scraping %s in h%d: %s %s", url, h,
                 json_dumps(json_object_get(r, "status"), JSON_ENCODE_ANY), jstr(r, "error"));
    return r;
}

/* The value of the sample `sample` of family `family` whose label `key`
 * is `value` (key NULL: the sample without labels); NAN if absent. */
static double sample(const json_t *scr, const char *family, const char *sample, const char *key,
                     const char *value)
{
    json_t *fam = json_object_get(json_object_get(scr, "families"), family);
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(fam, "samples"), i, s) {
        const json_t *labels = json_array_get(s, 1);
        if (strcmp(json_string_value(json_array_get(s, 0)), sample) != 0)
            continue;
        if (key ? strcmp(jstr(labels, key), value) != 0 : json_object_size(labels) != 0)
            continue;
        return json_number_value(json_array_get(s, 2));
    }
    return NAN;
}

static void expect_sample(const json_t *scr, int h, const char *family, const char *name,
                          const char *key, const char *value, double want)
{
    double got = sample(scr, family, name, key, value);
    if (!(fabs(got - want) < 1e-9))
        fail_msg("h%d: %s%s%s%s%s = %g, expected %g", h, name, key ? "{" : "", key ? key : "",
                 key ? "=" : "", key ? value : "", got, want);
}

/* `ternctl --json status` at host h, parsed. */
static json_t *ternctl_status(int h)
{
    char cmd[1400], out[400];
    snprintf(out, sizeof(out), "%s/ternctl-status-h%d.json", T.dir, h);
    snprintf(cmd, sizeof(cmd), "%s --socket %s/h%d/run/tern/ternd.sock --json status >%s",
             test_build_path("ternctl"), T.dir, h, out);
    assert_int_equal(system(cmd), 0);
    json_t *j = json_load_file(out, 0, NULL);
    assert_non_null(j);
    return j;
}

/* A host's state as `ternctl host list` shows it. */
static const char *host_state(const json_t *h)
{
    const char *fence = jstr(json_object_get(h, "fence"), "state");
    if (!strcmp(fence, "pending"))
        return "fencing";
    if (!strcmp(fence, "failed"))
        return "fence-failed";
    if (!strcmp(fence, "fenced"))
        return "fenced";
    if (json_is_true(json_object_get(h, "lost")))
        return "lost";
    return json_is_true(json_object_get(h, "online")) ? "online" : "offline";
}

/* The counters a host should show. */
struct counts {
    int succeeded, failed, cancelled, evacuations;
};

static const char *const host_states[] = {"online",  "offline",      "lost",
                                          "fencing", "fence-failed", "fenced"};
static const char *const vm_states[] = {"stopped", "starting", "running", "migrating",
                                        "stopping", "crashed", "lost"};

/* Every gauge of host h's scrape against its `ternctl --json status`
 * (taken just before and just after, with the same state version), and
 * the counters against `want`. Returns the scrape. */
static json_t *check_host(int h, const struct counts *want)
{
    json_t *scr = NULL, *st = NULL;
    for (int tries = 0;; tries++) {
        st = ternctl_status(h);
        scr = scrape(h);
        json_t *after = ternctl_status(h);
        json_int_t v1 = json_integer_value(json_object_get(json_object_get(st, "cluster"), "version"));
        json_int_t v2 =
            json_integer_value(json_object_get(json_object_get(after, "cluster"), "version"));
        json_decref(after);
        if (v1 == v2)
            break;
        assert_true(tries < 20); /* the state keeps changing: cannot compare */
        json_decref(st);
        json_decref(scr);
        test_sleep_ms(200);
    }
    const json_t *cl = json_object_get(st, "cluster");
    expect_sample(scr, h, "tern_cluster_quorate", "tern_cluster_quorate", NULL, NULL,
                  json_is_true(json_object_get(cl, "quorate")));
    expect_sample(scr, h, "tern_cluster_ready", "tern_cluster_ready", NULL, NULL,
                  json_is_true(json_object_get(cl, "ready")));
    expect_sample(scr, h, "tern_cluster_members", "tern_cluster_members", NULL, NULL,
                  (double)json_integer_value(json_object_get(cl, "members")));
    expect_sample(scr, h, "tern_cluster_expected_votes", "tern_cluster_expected_votes", NULL, NULL,
                  (double)json_integer_value(json_object_get(cl, "expected_votes")));
    size_t i;
    json_t *x;
    for (size_t k = 0; k < sizeof(host_states) / sizeof(host_states[0]); k++) {
        int n = 0;
        json_array_foreach(json_object_get(st, "hosts"), i, x)
            n += !strcmp(host_state(x), host_states[k]);
        expect_sample(scr, h, "tern_hosts", "tern_hosts", "state", host_states[k], n);
    }
    int maint = 0;
    json_array_foreach(json_object_get(st, "hosts"), i, x)
        maint += !strcmp(jstr(x, "mode"), "maintenance");
    expect_sample(scr, h, "tern_hosts_maintenance", "tern_hosts_maintenance", NULL, NULL, maint);
    int recovering = 0;
    for (size_t k = 0; k < sizeof(vm_states) / sizeof(vm_states[0]); k++) {
        int n = 0;
        json_array_foreach(json_object_get(st, "vms"), i, x)
            n += !strcmp(jstr(x, "state"), vm_states[k]);
        expect_sample(scr, h, "tern_vms", "tern_vms", "state", vm_states[k], n);
    }
    json_array_foreach(json_object_get(st, "vms"), i, x)
        recovering += json_is_true(json_object_get(x, "recover"));
    expect_sample(scr, h, "tern_vms_recovering", "tern_vms_recovering", NULL, NULL, recovering);
    int check_failing = 0;
    json_array_foreach(json_object_get(st, "hosts"), i, x)
        check_failing += !strcmp(jstr(json_object_get(x, "fence"), "check"), "failing");
    expect_sample(scr, h, "tern_hosts_fence_check_failing", "tern_hosts_fence_check_failing",
                  NULL, NULL, check_failing);
    expect_sample(scr, h, "tern_migrations_in_flight", "tern_migrations_in_flight", NULL, NULL,
                  (double)json_array_size(json_object_get(st, "migrations")));

    expect_sample(scr, h, "tern_migrations", "tern_migrations_total", "outcome", "succeeded",
                  want->succeeded);
    expect_sample(scr, h, "tern_migrations", "tern_migrations_total", "outcome", "failed",
                  want->failed);
    expect_sample(scr, h, "tern_migrations", "tern_migrations_total", "outcome", "cancelled",
                  want->cancelled);
    expect_sample(scr, h, "tern_evacuations", "tern_evacuations_total", NULL, NULL,
                  want->evacuations);
    /* Every succeeded migration between stand-ins reports its time, the
     * guest's pause and its bytes: each one is observed. */
    expect_sample(scr, h, "tern_migration_duration_seconds", "tern_migration_duration_seconds_count",
                  NULL, NULL, want->succeeded);
    expect_sample(scr, h, "tern_migration_guest_pause_seconds",
                  "tern_migration_guest_pause_seconds_count", NULL, NULL, want->succeeded);
    expect_sample(scr, h, "tern_migration_duration_seconds", "tern_migration_duration_seconds_bucket",
                  "le", "+Inf", want->succeeded);
    json_decref(st);
    return scr;
}

/* --- VMs (stand-ins) --- */

static void define_and_start(int h, const char *name, const char *host)
{
    tdefine(&T, h, name, 64, NULL);
    json_t *reply;
    json_t *res = tapi_ok(&T, h, json_pack("{s:s, s:s, s:s}", "cmd", "vm.start", "name", name,
                                           "host", host), &reply);
    assert_string_equal(jstr(json_object_get(res, "vm"), "state"), "running");
    json_decref(reply);
}

static json_t *vm_show(int h, const char *vm)
{
    json_t *r = ternd_api(&T, h, json_pack("{s:s, s:s}", "cmd", "vm.show", "name", vm), NULL,
                          5000);
    assert_non_null(r);
    json_t *v = json_incref(json_object_get(json_object_get(r, "result"), "vm"));
    json_decref(r);
    assert_non_null(v);
    return v;
}

static bool vm_settles(int h, const char *vm, const char *owner, const char *run, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 100) {
        json_t *v = vm_show(h, vm);
        bool ok = !strcmp(jstr(v, "owner"), owner) && !strcmp(jstr(v, "state"), run) &&
                  json_integer_value(json_object_get(v, "migration_id")) == 0;
        json_decref(v);
        if (ok)
            return true;
        test_sleep_ms(100);
    }
    return false;
}

static void hold(int h, const char *vm, bool on)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/h%d/run/tern/vms/%s/standin-hold", T.dir, h, vm);
    if (on) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fclose(f);
    } else {
        unlink(path);
    }
}

static json_int_t agent_stat(int h, const char *key)
{
    json_t *s = ternd_status(&T, h);
    assert_non_null(s);
    json_int_t v = json_integer_value(json_object_get(json_object_get(s, "agent"), key));
    json_decref(s);
    return v;
}

/* --- setup --- */

static int write_config(int h, const char *metrics_addr)
{
    char standin[4096], extra[4400];
    if (!realpath(test_build_path("tern-vmm-standin"), standin)) {
        fprintf(stderr, "no %s: build it first\n", test_build_path("tern-vmm-standin"));
        return -1;
    }
    snprintf(extra, sizeof(extra), "vmm_path = %s\nmetrics_addr = %s\n", standin, metrics_addr);
    return ternd_hosts_write_config(&T, h, extra);
}

static int good_config(int h)
{
    char addr[64];
    if (h == 3)
        snprintf(addr, sizeof(addr), "%d", LOOPBACK_PORT);
    else
        snprintf(addr, sizeof(addr), "%s:%d", test_cluster_addr(&T.cl, h), PORT);
    return write_config(h, addr);
}

static int setup(void **state)
{
    (void)state;
    char err[1024];
    if (ternd_hosts_create(&T, HOSTS, "metrics", err, sizeof(err)) < 0) {
        fprintf(stderr, "creating the test hosts: %s\n", err);
        return -1;
    }
    for (int h = 1; h <= HOSTS; h++)
        if (good_config(h) < 0 || ternd_hosts_start(&T, h, NULL) < 0)
            return -1;
    if (!ternd_hosts_agree(&T, ALL, HOSTS, true, 30000))
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    test_proc_kill(&holder);
    ternd_hosts_destroy(&T);
    return 0;
}

/* --- tests --- */

/* The families with HELP and TYPE; gauges as in ternctl status; one
 * migration between stand-ins counted on every host. */
static void scrape_matches_status(void **state)
{
    (void)state;
    struct counts zero = {0};
    for (int h = 1; h <= HOSTS; h++)
        json_decref(check_host(h, &zero));

    define_and_start(1, "v1", "h1");
    define_and_start(2, "v2", "h2");
    tdefine(&T, 3, "v3", 64, NULL); /* defined, stopped */
    json_t *reply;
    json_t *res = tapi_ok(&T, 3, json_pack("{s:s, s:s, s:s}", "cmd", "vm.migrate", "name", "v1",
                                           "to", "h2"), &reply);
    json_t *mig = json_deep_copy(json_object_get(res, "migration"));
    json_decref(reply);
    assert_string_equal(jstr(mig, "outcome"), "succeeded");
    tagree(&T, ALL, HOSTS, true, 30000);

    static const struct {
        const char *name, *type;
    } families[] = {
        {"tern_cluster_quorate", "gauge"},
        {"tern_cluster_ready", "gauge"},
        {"tern_cluster_members", "gauge"},
        {"tern_cluster_expected_votes", "gauge"},
        {"tern_hosts", "gauge"},
        {"tern_hosts_maintenance", "gauge"},
        {"tern_vms", "gauge"},
        {"tern_vms_recovering", "gauge"},
        {"tern_hosts_fence_check_failing", "gauge"},
        {"tern_migrations_in_flight", "gauge"},
        {"tern_agent_start_time_seconds", "gauge"},
        {"tern_migrations", "counter"},
        {"tern_migration_duration_seconds", "histogram"},
        {"tern_migration_guest_pause_seconds", "histogram"},
        {"tern_migration_sent_bytes", "counter"},
        {"tern_evacuations", "counter"},
        {"tern_vm_restarts", "counter"},
        {"tern_fence_attempts", "counter"},
        {"tern_failover_duration_seconds", "histogram"},
    };
    struct counts one = {.succeeded = 1};
    for (int h = 1; h <= HOSTS; h++) {
        json_t *scr = check_host(h, &one);
        json_t *fams = json_object_get(scr, "families");
        const char *body = jstr(scr, "body");
        for (size_t k = 0; k < sizeof(families) / sizeof(families[0]); k++) {
            json_t *f = json_object_get(fams, families[k].name);
            if (!f)
                fail_msg("h%d: no family %s", h, families[k].name);
            assert_string_equal(jstr(f, "type"), families[k].type);
            assert_true(strlen(jstr(f, "help")) > 20);
            /* The exposition itself: HELP and TYPE lines under the metric's name. */
            char line[160];
            const char *metric = families[k].name;
            char counter[128];
            if (!strcmp(families[k].type, "counter")) {
                snprintf(counter, sizeof(counter), "%s_total", metric);
                metric = counter;
            }
            snprintf(line, sizeof(line), "# HELP %s ", metric);
            assert_non_null(strstr(body, line));
            snprintf(line, sizeof(line), "# TYPE %s %s\n", metric, families[k].type);
            assert_non_null(strstr(body, line));
            /* Counters say they count since this ternd started. */
            if (strcmp(families[k].type, "gauge") != 0 &&
                !strstr(jstr(f, "help"), "since this ternd started"))
                fail_msg("h%d: %s's HELP does not say since when it counts", h,
                         families[k].name);
        }
        assert_int_equal(json_object_size(fams), sizeof(families) / sizeof(families[0]));
        /* What the migration's result said: its time, the guest's pause,
         * its bytes. */
        double pause_ms = json_number_value(json_object_get(mig, "guest_pause_ms"));
        double secs = json_number_value(json_object_get(mig, "migration_s"));
        assert_true(pause_ms > 0 && secs > 0);
        expect_sample(scr, h, "tern_migration_guest_pause_seconds",
                      "tern_migration_guest_pause_seconds_sum", NULL, NULL, pause_ms / 1000.0);
        expect_sample(scr, h, "tern_migration_duration_seconds",
                      "tern_migration_duration_seconds_sum", NULL, NULL, secs);
        expect_sample(scr, h, "tern_migration_sent_bytes", "tern_migration_sent_bytes_total",
                      NULL, NULL,
                      (double)json_integer_value(json_object_get(mig, "bytes_sent")));
        /* 5 ms of pause: not in the 2.5 ms bucket, in the 5 ms one. */
        expect_sample(scr, h, "tern_migration_guest_pause_seconds",
                      "tern_migration_guest_pause_seconds_bucket", "le", "0.0025", 0);
        expect_sample(scr, h, "tern_migration_guest_pause_seconds",
                      "tern_migration_guest_pause_seconds_bucket", "le", "0.005", 1);
        /* Nothing of HA happened. */
        expect_sample(scr, h, "tern_vm_restarts", "tern_vm_restarts_total", NULL, NULL, 0);
        expect_sample(scr, h, "tern_fence_attempts", "tern_fence_attempts_total", "result",
                      "succeeded", 0);
        expect_sample(scr, h, "tern_fence_attempts", "tern_fence_attempts_total", "result",
                      "failed", 0);
        expect_sample(scr, h, "tern_failover_duration_seconds",
                      "tern_failover_duration_seconds_count", NULL, NULL, 0);
        double started = sample(scr, "tern_agent_start_time_seconds",
                                "tern_agent_start_time_seconds", NULL, NULL);
        assert_true(started > 1.6e9 && started <= (double)time(NULL) + 1);
        json_decref(scr);
    }
    json_decref(mig);
    /* What the gauges saw: two running, one stopped, three online. */
    json_t *scr = scrape(1);
    expect_sample(scr, 1, "tern_vms", "tern_vms", "state", "running", 2);
    expect_sample(scr, 1, "tern_vms", "tern_vms", "state", "stopped", 1);
    expect_sample(scr, 1, "tern_hosts", "tern_hosts", "state", "online", 3);
    expect_sample(scr, 1, "tern_cluster_quorate", "tern_cluster_quorate", NULL, NULL, 1);
    json_decref(scr);
}

/* Only GET /metrics (and HEAD); a bare port is loopback only. */
static void http_contract(void **state)
{
    (void)state;
    char url[128], other[160];
    metrics_url(1, url, sizeof(url));
    snprintf(other, sizeof(other), "http://%s:%d/other", test_cluster_addr(&T.cl, 1), PORT);
    json_t *r = http(1, "get", other, 10);
    assert_int_equal(json_integer_value(json_object_get(r, "status")), 404);
    json_decref(r);
    snprintf(other, sizeof(other), "http://%s:%d/", test_cluster_addr(&T.cl, 1), PORT);
    r = http(1, "get", other, 10);
    assert_int_equal(json_integer_value(json_object_get(r, "status")), 404);
    json_decref(r);

    r = http(1, "post", url, 10);
    assert_int_equal(json_integer_value(json_object_get(r, "status")), 405);
    assert_non_null(strstr(jstr(json_object_get(r, "headers"), "Allow"), "GET"));
    json_decref(r);

    r = http(1, "head", url, 10);
    assert_int_equal(json_integer_value(json_object_get(r, "status")), 200);
    assert_string_equal(jstr(r, "body"), "");
    json_decref(r);

    r = http(1, "get", url, 10);
    assert_int_equal(json_integer_value(json_object_get(r, "status")), 200);
    assert_string_equal(jstr(json_object_get(r, "headers"), "Content-Type"),
                        "text/plain; version=0.0.4; charset=utf-8");
    json_decref(r);

    /* Host 3 has metrics_addr = 9651: 127.0.0.1 only. */
    snprintf(other, sizeof(other), "http://%s:%d/metrics", test_cluster_addr(&T.cl, 3),
             LOOPBACK_PORT);
    r = http(3, "get", other, 5);
    assert_int_equal(json_integer_value(json_object_get(r, "status")), 0);
    assert_non_null(strstr(jstr(r, "error"), "refused"));
    json_decref(r);
    metrics_url(3, url, sizeof(url));
    r = http(3, "get", url, 10);
    assert_int_equal(json_integer_value(json_object_get(r, "status")), 200);
    json_decref(r);
}

/* Eight clients (the connection limit) that connect and send nothing or
 * half a request: ternd answers status meanwhile and its loop does not
 * spin; a ninth scrape waits (not served while every connection is taken);
 * they are closed at the connection timeout (10 s) and a scrape works. */
static void silent_clients_block_nothing(void **state)
{
    (void)state;
    char port[16], out_dir[400];
    snprintf(port, sizeof(port), "%d", PORT);
    snprintf(out_dir, sizeof(out_dir), "%s/holder", T.dir);
    assert_int_equal(mkdir(out_dir, 0755), 0);
    char *argv[] = {PYTHON, "-c", (char *)holder_py, (char *)test_cluster_addr(&T.cl, 1),
                    port, "8", NULL};
    char err[512];
    if (test_cluster_spawn(&T.cl, 1, argv, out_dir, &holder, err, sizeof(err)) < 0)
        fail_msg("starting the holding client: %s", err);
    if (!test_wait_for_text(holder.out_path, "held 8", 10000)) {
        char *t = test_read_text(holder.err_path);
        fail_msg("the holding client did not connect: %s", t);
    }
    double t_held = now_s();

    /* The loop sleeps: 3 s of rounds with eight silent HTTP clients, as
     * for an idle agent (test_agent_loop: the 200 ms tick and two status
     * requests, < 60; a loop that polled them would be thousands). */
    json_int_t r0 = agent_stat(1, "loop_rounds");
    test_sleep_ms(3000);
    json_int_t rounds = agent_stat(1, "loop_rounds") - r0;
    fprintf(stderr, "h1's loop with 8 silent metrics clients: %lld rounds in 3 s\n",
            (long long)rounds);
    assert_true(rounds < 60);
    /* And answers. */
    for (int i = 0; i < 10; i++) {
        double t0 = now_s();
        json_t *r = ternd_api_line(&T, 1, "{\"cmd\":\"status\"}", NULL, 10000);
        assert_non_null(r);
        assert_true(json_is_true(json_object_get(r, "ok")));
        json_decref(r);
        fprintf(stderr, "%s%.1f ms", i ? ", " : "status with 8 silent metrics clients: ",
                (now_s() - t0) * 1e3);
        test_sleep_ms(50);
    }
    fprintf(stderr, "\n");
    /* Changes still apply there. */
    tdefine(&T, 2, "while-held", 64, NULL);
    json_t *v = vm_show(1, "while-held");
    json_decref(v);

    /* Every connection is taken: a ninth client is not served (yet). */
    char url[128];
    metrics_url(1, url, sizeof(url));
    json_t *r = http(1, "scrape", url, 2);
    if (now_s() - t_held < 9) /* the eight are still held: not served */
        assert_int_equal(json_integer_value(json_object_get(r, "status")), 0);
    json_decref(r);

    /* The server closes them at its connection timeout (10 s). */
    if (!test_wait_for_text(holder.out_path, "all closed", 40000)) {
        char *t = test_read_text(holder.out_path);
        fail_msg("the server did not close the silent connections: %s", t);
    }
    double closed_after = now_s() - t_held;
    fprintf(stderr, "the 8 silent connections were closed after %.1f s\n", closed_after);
    assert_true(closed_after >= 5);
    assert_int_equal(test_proc_wait(&holder, 5000), 1);
    assert_int_equal(holder.status, 0);
    json_decref(scrape(1));
}

/* A migration ended by a membership change (its destination's ternd
 * killed) counts as failed on the hosts that saw it end; the host whose
 * ternd restarts counts from zero. A metrics_addr this host cannot listen
 * on stops ternd at start (exit 78), naming it. An evacuation counts once
 * on every host, with its migrations. */
static void failures_restarts_evacuations(void **state)
{
    (void)state;
    /* From scrape_matches_status: v1 and v2 run on h2, v3 stopped. */
    assert_true(vm_settles(1, "v1", "h2", "running", 5000));
    hold(2, "v1", true);
    json_t *r = ternd_api(&T, 1, json_pack("{s:s, s:s, s:s, s:b}", "cmd", "vm.migrate", "name",
                                           "v1", "to", "h3", "wait", 0), NULL, 10000);
    assert_non_null(r);
    assert_true(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
    /* In flight (the source holds it), then h3's ternd goes. */
    bool in_flight = false;
    for (int i = 0; i < 100 && !in_flight; i++) {
        json_t *scr = scrape(1);
        in_flight = sample(scr, "tern_migrations_in_flight", "tern_migrations_in_flight", NULL,
                           NULL) == 1 &&
                    sample(scr, "tern_vms", "tern_vms", "state", "migrating") == 1;
        json_decref(scr);
        if (!in_flight)
            test_sleep_ms(100);
    }
    assert_true(in_flight);
    ternd_hosts_kill(&T, 3);
    assert_true(vm_settles(1, "v1", "h2", "running", 20000));
    hold(2, "v1", false);
    tagree(&T, 0x6, 2, true, 30000);
    struct counts survivors = {.succeeded = 1, .failed = 1};
    json_decref(check_host(1, &survivors));
    json_decref(check_host(2, &survivors));

    /* h3 with an address that is not its own: ternd stops at start. */
    char bad[64];
    snprintf(bad, sizeof(bad), "%s:%d", test_cluster_addr(&T.cl, 1), PORT);
    assert_int_equal(write_config(3, bad), 0);
    assert_int_equal(ternd_hosts_start(&T, 3, NULL), 0);
    assert_int_equal(test_proc_wait(&T.ternd[3], 30000), 1);
    assert_int_equal(T.ternd[3].status, 78);
    char needle[128];
    snprintf(needle, sizeof(needle), "metrics_addr %s: cannot listen there", bad);
    if (test_count_text(T.ternd[3].err_path, needle) != 1) {
        char *t = test_read_text(T.ternd[3].err_path);
        fail_msg("h3's ternd did not say why it stopped: %s", t);
    }
    /* And a value that is not an address at all, with the line. */
    assert_int_equal(write_config(3, "localhost:9651"), 0);
    assert_int_equal(ternd_hosts_start(&T, 3, NULL), 0);
    assert_int_equal(test_proc_wait(&T.ternd[3], 30000), 1);
    assert_int_equal(T.ternd[3].status, 78);
    assert_int_equal(test_count_text(T.ternd[3].err_path, "metrics_addr must be PORT"), 1);

    /* Back with its own address: it counts from zero (a restart resets
     * the counters; the gauges are the cluster's). */
    assert_int_equal(good_config(3), 0);
    assert_int_equal(ternd_hosts_start(&T, 3, NULL), 0);
    tagree(&T, ALL, HOSTS, true, 60000);
    struct counts fresh = {0};
    json_decref(check_host(3, &fresh));

    /* Evacuate h2 (v1 and v2 move): counted once on every host, with its
     * two migrations; h2 shows in maintenance. */
    json_t *reply;
    json_t *res = tapi_ok(&T, 1, json_pack("{s:s, s:s}", "cmd", "host.evacuate", "host", "h2"),
                          &reply);
    assert_int_equal(json_array_size(json_object_get(res, "moved")), 2);
    json_decref(reply);
    tagree(&T, ALL, HOSTS, true, 30000);
    struct counts evac = {.succeeded = 3, .failed = 1, .evacuations = 1};
    struct counts evac3 = {.succeeded = 2, .evacuations = 1};
    for (int h = 1; h <= HOSTS; h++) {
        json_t *scr = check_host(h, h == 3 ? &evac3 : &evac);
        expect_sample(scr, h, "tern_hosts_maintenance", "tern_hosts_maintenance", NULL, NULL, 1);
        json_decref(scr);
    }
    tapi_ok(&T, 1, json_pack("{s:s, s:s}", "cmd", "host.activate", "host", "h2"), &reply);
    json_decref(reply);
    tagree(&T, ALL, HOSTS, true, 30000);
    for (int h = 1; h <= HOSTS; h++) {
        json_t *scr = check_host(h, h == 3 ? &evac3 : &evac); /* activate is no evacuation */
        expect_sample(scr, h, "tern_hosts_maintenance", "tern_hosts_maintenance", NULL, NULL, 0);
        json_decref(scr);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(scrape_matches_status),
        cmocka_unit_test(http_contract),
        cmocka_unit_test(silent_clients_block_nothing),
        cmocka_unit_test(failures_restarts_evacuations),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
