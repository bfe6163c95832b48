/* bench/boot: how fast tern-vmm gets a guest going, as JSON.
 *
 *  first_heartbeat_ms   process start -> first heartbeat of the test guest
 *  exits_per_s          steady-state VM exits per second of the test guest
 *                       (hb=1000, light dirtying)
 * next to ceilings measured in the same run:
 *  trivial_guest_ms     process start -> reaped exit of a guest whose first
 *                       instruction writes the debug-exit port: the VMM's own
 *                       set-up *and* tear-down cost (KVM VM destruction,
 *                       unmapping RAM), so it can exceed first_heartbeat_ms
 *  ceiling_exits_per_s  exits per second of a guest that does nothing but
 *                       port writes (how fast this host can exit at all)
 *
 * Usage: boot BUILD_DIR [RUNS]  (median of RUNS, default 5) */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "node-vmm/control.h"
#include "tests/support/proc.h"

static int64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static json_t *status(const char *sock)
{
    json_t *req = json_pack("{s:s}", "cmd", "status");
    json_t *reply = NULL;
    struct tern_err err;
    int rc = control_call(sock, req, 5000, &reply, &err);
    json_decref(req);
    return rc == 0 ? reply : NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ms from fork to first heartbeat; fills *exits_per_s from two status
 * samples 2 s apart. Returns < 0 on failure. */
static double run_test_guest(const char *dir, double *exits_per_s)
{
    char sock[512];
    snprintf(sock, sizeof(sock), "%s/bench.sock", dir);
    char serial[600];
    snprintf(serial, sizeof(serial), "file:%s/serial.log", dir);
    char *argv[] = {(char *)test_build_path("tern-vmm"), "run", "--kernel",
                    (char *)test_build_path("testguest.elf"), "--mem", "256M", "--cmdline",
                    "fill=16 dirty=10 hb=1000 check=1000", "--serial", serial, "--control", sock,
                    NULL};
    struct test_proc p;
    int64_t t0 = realtime_ns();
    if (test_proc_start(&p, dir, argv) < 0)
        return -1;
    double ms = -1;
    for (int i = 0; i < 30000 && ms < 0; i++) {
        json_t *s = access(sock, F_OK) == 0 ? status(sock) : NULL;
        if (s) {
            json_int_t first =
                json_integer_value(json_object_get(json_object_get(s, "heartbeat"), "first_ns"));
            if (first > 0)
                ms = (double)(first - t0) / 1e6;
            json_decref(s);
        }
        if (ms < 0)
            test_sleep_ms(1);
    }
    if (ms >= 0 && exits_per_s) {
        test_sleep_ms(1000);
        json_t *a = status(sock);
        int64_t ta = realtime_ns();
        test_sleep_ms(2000);
        json_t *b = status(sock);
        int64_t tb = realtime_ns();
        if (a && b) {
            json_int_t ea = json_integer_value(json_object_get(json_object_get(a, "exits"), "total"));
            json_int_t eb = json_integer_value(json_object_get(json_object_get(b, "exits"), "total"));
            *exits_per_s = (double)(eb - ea) / ((double)(tb - ta) / 1e9);
        }
        json_decref(a);
        json_decref(b);
    }
    test_proc_signal(&p, SIGTERM);
    if (!test_proc_wait(&p, 5000))
        test_proc_kill(&p);
    return ms;
}

/* The floor: a guest that exits with its first instruction. */
static double run_exit_guest(const char *dir)
{
    static const unsigned char code[] = {0xb0, 0x00, 0x66, 0xba, 0x01, 0x05, 0xee, 0xf4};
    char kernel[600];
    snprintf(kernel, sizeof(kernel), "%s/exit.elf", dir);
    if (test_write_pvh_elf(kernel, code, sizeof(code)) < 0)
        return -1;
    char *argv[] = {(char *)test_build_path("tern-vmm"), "run", "--kernel", kernel, "--mem",
                    "256M", NULL};
    struct test_proc p;
    int64_t t0 = realtime_ns();
    if (test_proc_start(&p, dir, argv) < 0)
        return -1;
    if (!test_proc_wait(&p, 10000)) {
        test_proc_kill(&p);
        return -1;
    }
    return p.status == 0 ? (double)(realtime_ns() - t0) / 1e6 : -1;
}

/* The ceiling: a guest spinning on `out %al,$0x80` (a port with no device). */
static double run_exit_storm(const char *dir)
{
    static const unsigned char code[] = {0xe6, 0x80, 0xeb, 0xfc}; /* 1: out %al,$0x80; jmp 1b */
    char kernel[600], sock[512];
    snprintf(kernel, sizeof(kernel), "%s/storm.elf", dir);
    snprintf(sock, sizeof(sock), "%s/storm.sock", dir);
    if (test_write_pvh_elf(kernel, code, sizeof(code)) < 0)
        return -1;
    char *argv[] = {(char *)test_build_path("tern-vmm"), "run", "--kernel", kernel, "--mem",
                    "64M", "--control", sock, NULL};
    struct test_proc p;
    if (test_proc_start(&p, dir, argv) < 0)
        return -1;
    double rate = -1;
    for (int i = 0; i < 500 && access(sock, F_OK) != 0; i++)
        test_sleep_ms(10);
    test_sleep_ms(300);
    json_t *a = status(sock);
    int64_t ta = realtime_ns();
    test_sleep_ms(1000);
    json_t *b = status(sock);
    int64_t tb = realtime_ns();
    if (a && b) {
        json_int_t ea = json_integer_value(json_object_get(json_object_get(a, "exits"), "total"));
        json_int_t eb = json_integer_value(json_object_get(json_object_get(b, "exits"), "total"));
        rate = (double)(eb - ea) / ((double)(tb - ta) / 1e9);
    }
    json_decref(a);
    json_decref(b);
    test_proc_signal(&p, SIGTERM);
    if (!test_proc_wait(&p, 5000))
        test_proc_kill(&p);
    return rate;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        setenv("TERN_BUILD", argv[1], 1);
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    if (runs < 1 || runs > 50)
        runs = 5;
    char *dir = test_make_tmpdir("bench-boot");
    if (!dir) {
        fprintf(stderr, "bench/boot: cannot create a temporary directory\n");
        return 1;
    }
    double first[50], floor_ms[50], exits[50];
    int ok = 1;
    for (int i = 0; i < runs && ok; i++) {
        exits[i] = -1;
        first[i] = run_test_guest(dir, &exits[i]);
        floor_ms[i] = run_exit_guest(dir);
        ok = first[i] >= 0 && floor_ms[i] >= 0 && exits[i] >= 0;
    }
    double storm = ok ? run_exit_storm(dir) : -1;
    test_rmtree(dir);
    free(dir);
    if (!ok || storm < 0) {
        fprintf(stderr, "bench/boot: a run failed (is build/testguest.elf built and KVM usable?)\n");
        return 1;
    }
    json_t *out = json_pack("{s:s, s:i, s:f, s:f, s:f, s:f}",
                            "bench", "boot", "runs", runs,
                            "first_heartbeat_ms", median(first, runs),
                            "trivial_guest_ms", median(floor_ms, runs),
                            "exits_per_s", median(exits, runs),
                            "ceiling_exits_per_s", storm);
    char *s = json_dumps(out, JSON_INDENT(2));
    printf("%s\n", s);
    free(s);
    json_decref(out);
    return 0;
}
