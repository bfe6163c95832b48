/* bench/snapshot: save and restore of a 1 GiB guest with 768 MiB filled,
 * as JSON, next to ceilings measured in the same run on the same disk:
 * sequential write (+fsync) and read throughput of a plain file of the same
 * size as the snapshot.
 *
 *   save_s, restore_s        tern-vmm's figures (save: the control command's
 *                            own timing; restore: process start until the
 *                            control socket answers)
 *   disk_write_MBps          the ceiling for save
 *   disk_read_MBps           the ceiling for restore (file cache dropped for
 *                            both files with posix_fadvise before reading)
 *   save_ratio, restore_ratio  snapshot MB/s over the ceiling
 *
 * Usage: snapshot BUILD_DIR [DIR]  (DIR: where files go, default /var/tmp) */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "node-vmm/control.h"
#include "tests/support/proc.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static json_t *call(const char *sock, json_t *req, int timeout_ms)
{
    json_t *reply = NULL;
    struct tern_err err;
    int rc = control_call(sock, req, timeout_ms, &reply, &err);
    json_decref(req);
    if (rc < 0) {
        fprintf(stderr, "bench/snapshot: %s\n", err.msg);
        return NULL;
    }
    if (!json_is_true(json_object_get(reply, "ok"))) {
        fprintf(stderr, "bench/snapshot: %s\n", json_string_value(json_object_get(reply, "error")));
        json_decref(reply);
        return NULL;
    }
    return reply;
}

static void drop_cache(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

/* Plain sequential write of `bytes` (1 MiB writes, then fsync), and read. */
static int disk_ceilings(const char *path, long long bytes, double *write_mbps, double *read_mbps)
{
    size_t chunk = 1 << 20;
    char *buf = malloc(chunk);
    if (!buf)
        return -1;
    for (size_t i = 0; i < chunk; i++)
        buf[i] = (char)(i * 131 + 7);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    double t0 = now_s();
    for (long long done = 0; done < bytes; done += (long long)chunk)
        if (write(fd, buf, chunk) != (ssize_t)chunk)
            return -1;
    if (fsync(fd) < 0)
        return -1;
    *write_mbps = (double)bytes / 1e6 / (now_s() - t0);
    close(fd);
    drop_cache(path);
    fd = open(path, O_RDONLY);
    t0 = now_s();
    ssize_t n;
    long long total = 0;
    while ((n = read(fd, buf, chunk)) > 0)
        total += n;
    *read_mbps = (double)total / 1e6 / (now_s() - t0);
    close(fd);
    free(buf);
    unlink(path);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        setenv("TERN_BUILD", argv[1], 1);
    const char *where = argc > 2 ? argv[2] : "/var/tmp";
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/tern-bench-snapshot-XXXXXX", where);
    if (!mkdtemp(dir)) {
        fprintf(stderr, "bench/snapshot: cannot create a directory in %s: %s\n", where, strerror(errno));
        return 1;
    }
    char sock[600], snap[600], plain[600], serial[600];
    snprintf(sock, sizeof(sock), "%s/c.sock", dir);
    snprintf(snap, sizeof(snap), "%s/vm.snap", dir);
    snprintf(plain, sizeof(plain), "%s/plain", dir);
    snprintf(serial, sizeof(serial), "file:%s/serial.log", dir);
    int rc = 1;
    struct test_proc p = {0};
    char *boot[] = {(char *)test_build_path("tern-vmm"), "run", "--kernel",
                    (char *)test_build_path("testguest.elf"), "--mem", "1G", "--cmdline",
                    "fill=768 hb=1000 check=1000", "--serial", serial, "--control", sock, NULL};
    if (test_proc_start(&p, dir, boot) < 0)
        goto out;
    char serial_path[600];
    snprintf(serial_path, sizeof(serial_path), "%s/serial.log", dir);
    /* The fill is sliced between heartbeats: a passed self-check means every
     * page has been written. */
    if (!test_wait_for_text(serial_path, "checks=1 ", 120000)) {
        fprintf(stderr, "bench/snapshot: the guest did not finish filling its memory\n");
        goto out;
    }
    json_t *r = call(sock, json_pack("{s:s, s:s, s:b}", "cmd", "save", "file", snap, "stop", 1),
                     600000);
    if (!r)
        goto out;
    double save_s = json_real_value(json_object_get(r, "seconds"));
    long long bytes = json_integer_value(json_object_get(r, "bytes"));
    long long pages = json_integer_value(json_object_get(r, "pages"));
    json_decref(r);
    test_proc_wait(&p, 30000);
    test_proc_kill(&p);

    drop_cache(snap);
    char *restore[] = {(char *)test_build_path("tern-vmm"), "run", "--restore", snap,
                       "--serial", serial, "--control", sock, NULL};
    double t0 = now_s();
    if (test_proc_start(&p, dir, restore) < 0)
        goto out;
    double restore_s = -1;
    for (int i = 0; i < 600000; i++) {
        if (access(sock, F_OK) == 0) {
            json_t *s = call(sock, json_pack("{s:s}", "cmd", "status"), 10000);
            if (s) {
                restore_s = now_s() - t0;
                json_decref(s);
                break;
            }
        }
        if (test_proc_wait(&p, 0))
            break;
        test_sleep_ms(1);
    }
    test_proc_signal(&p, SIGTERM);
    if (!test_proc_wait(&p, 10000))
        test_proc_kill(&p);
    if (restore_s < 0) {
        fprintf(stderr, "bench/snapshot: the restored VM did not come up\n");
        goto out;
    }
    double wmbps, rmbps;
    if (disk_ceilings(plain, bytes, &wmbps, &rmbps) < 0) {
        fprintf(stderr, "bench/snapshot: measuring the disk failed: %s\n", strerror(errno));
        goto out;
    }
    double save_mbps = (double)bytes / 1e6 / save_s, restore_mbps = (double)bytes / 1e6 / restore_s;
    json_t *outj = json_pack("{s:s, s:s, s:s, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}",
                             "bench", "snapshot", "guest", "1 GiB, fill=768 MiB", "dir", where,
                             "snapshot_bytes", (json_int_t)bytes, "pages", (json_int_t)pages,
                             "save_s", save_s, "restore_s", restore_s,
                             "save_MBps", save_mbps, "restore_MBps", restore_mbps,
                             "disk_write_MBps", wmbps, "disk_read_MBps", rmbps,
                             "save_ratio", save_mbps / wmbps, "restore_ratio", restore_mbps / rmbps);
    char *s = json_dumps(outj, JSON_INDENT(2));
    printf("%s\n", s);
    free(s);
    json_decref(outj);
    rc = 0;
out:
    test_proc_kill(&p);
    test_rmtree(dir);
    return rc;
}
