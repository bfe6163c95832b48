#include "ternd_hosts.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/unix_addr.h"
#include "migrate/certs.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int ternd_hosts_write_config(struct ternd_hosts *t, int h, const char *extra)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/h%d/ternd.conf", t->dir, h);
    char vmm[PATH_MAX];
    if (!realpath(test_build_path("tern-vmm"), vmm))
        return -1;
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "host = h%d\nmigration_addr = %s\nmigration_ports = 7400-7420\n"
            "run_dir = %s/h%d/run/tern\nstate_dir = %s/h%d/state\nshared_dir = %s/shared\n"
            "tls_dir = %s/tls/h%d\nvmm_path = %s\nmem = 1G\nvcpus = 4\n%s",
            h, test_cluster_addr(&t->cl, h), t->dir, h, t->dir, h, t->dir, t->dir, h, vmm,
            extra ? extra : "");
    return fclose(f);
}

int ternd_hosts_create(struct ternd_hosts *t, int nr, const char *tag, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    t->nr = nr;
    char *tmp = test_make_tmpdir(tag);
    if (!tmp) {
        snprintf(err, errlen, "cannot make a directory for the hosts: %s", strerror(errno));
        return -1;
    }
    snprintf(t->dir, sizeof(t->dir), "%s", tmp);
    free(tmp);
    if (!realpath(test_build_path("testguest.elf"), t->guest)) {
        snprintf(err, errlen, "no test guest at %s", test_build_path("testguest.elf"));
        return -1;
    }
    if (test_cluster_create(&t->cl, nr, t->dir, err, errlen) < 0)
        return -1;
    char ca[400], out[400];
    snprintf(ca, sizeof(ca), "%s/ca", t->dir);
    struct tern_err terr;
    if (mig_certs_init_ca(ca, "tern-test-ca", 30, &terr) < 0) {
        snprintf(err, errlen, "test CA: %s", terr.msg);
        return -1;
    }
    snprintf(out, sizeof(out), "%s/tls", t->dir);
    mkdir(out, 0700);
    for (int h = 1; h <= nr; h++) {
        char name[16];
        snprintf(name, sizeof(name), "h%d", h);
        snprintf(out, sizeof(out), "%s/tls/h%d", t->dir, h);
        if (mig_certs_issue(ca, out, name, 30, &terr) < 0) {
            snprintf(err, errlen, "certificate for h%d: %s", h, terr.msg);
            return -1;
        }
        if (ternd_hosts_write_config(t, h, NULL) < 0) {
            snprintf(err, errlen, "writing h%d's ternd.conf: %s", h, strerror(errno));
            return -1;
        }
        if (test_cluster_start_corosync(&t->cl, h, err, errlen) < 0)
            return -1;
    }
    return test_cluster_wait_quorate(&t->cl, 30000, err, errlen);
}

int ternd_hosts_start(struct ternd_hosts *t, int h, const char *fault)
{
    char conf[400], out[400], err[512];
    snprintf(conf, sizeof(conf), "%s/h%d/ternd.conf", t->dir, h);
    snprintf(out, sizeof(out), "%s/h%d", t->dir, h);
    if (fault)
        setenv("TERN_TEST_FAULT", fault, 1);
    char *argv[] = {(char *)test_build_path("ternd"), "--config", conf, NULL};
    int rc = test_cluster_spawn(&t->cl, h, argv, out, &t->ternd[h], err, sizeof(err));
    unsetenv("TERN_TEST_FAULT");
    if (rc < 0)
        fprintf(stderr, "starting ternd on h%d: %s\n", h, err);
    return rc;
}

void ternd_hosts_kill(struct ternd_hosts *t, int h)
{
    test_proc_kill(&t->ternd[h]);
}

void ternd_hosts_destroy(struct ternd_hosts *t)
{
    for (int h = 1; h <= t->nr; h++)
        test_proc_kill(&t->ternd[h]);
    const char *logs = getenv("TERN_CLUSTER_LOGS");
    if (logs && t->dir[0]) {
        char cmd[1024];
        snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && cp -r '%s'/h* '%s'/", logs, t->dir, logs);
        if (system(cmd) != 0)
            fprintf(stderr, "copying the hosts' logs to %s failed\n", logs);
    }
    test_cluster_destroy(&t->cl);
}

static int connect_unix(const char *path)
{
    struct sockaddr_un sa;
    if (unix_addr_fill(&sa, path, "ternd API socket", NULL) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

json_t *ternd_api_line(struct ternd_hosts *t, int h, const char *line, int *progress,
                       int timeout_ms)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/h%d/run/tern/ternd.sock", t->dir, h);
    int fd = connect_unix(path);
    if (fd < 0)
        return NULL;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    size_t len = strlen(line);
    if (write(fd, line, len) != (ssize_t)len || write(fd, "\n", 1) != 1) {
        close(fd);
        return NULL;
    }
    size_t cap = 1 << 20, have = 0;
    char *buf = malloc(cap);
    json_t *final = NULL;
    if (progress)
        *progress = 0;
    while (buf && !final) {
        char *nl;
        while (!(nl = memchr(buf, '\n', have))) {
            if (have == cap) {
                char *nb = cap < (256u << 20) ? realloc(buf, cap * 2) : NULL;
                if (!nb)
                    goto out;
                buf = nb;
                cap *= 2;
            }
            ssize_t r = read(fd, buf + have, cap - have);
            if (r <= 0)
                goto out;
            have += (size_t)r;
        }
        json_t *j = json_loadb(buf, (size_t)(nl - buf), 0, NULL);
        memmove(buf, nl + 1, have - (size_t)(nl - buf) - 1);
        have -= (size_t)(nl - buf) + 1;
        if (j && json_object_get(j, "ok"))
            final = j;
        else {
            if (j && progress && json_object_get(j, "progress"))
                (*progress)++;
            json_decref(j);
        }
    }
out:
    free(buf);
    close(fd);
    return final;
}

json_t *ternd_api(struct ternd_hosts *t, int h, json_t *req, int *progress, int timeout_ms)
{
    char *line = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    json_t *r = line ? ternd_api_line(t, h, line, progress, timeout_ms) : NULL;
    free(line);
    return r;
}

const char *ternd_err_code(const json_t *reply)
{
    return json_string_value(json_object_get(json_object_get(reply, "error"), "code"));
}

json_t *ternd_status(struct ternd_hosts *t, int h)
{
    json_t *r = ternd_api(t, h, json_pack("{s:s}", "cmd", "status"), NULL, 10000);
    if (!r)
        return NULL;
    json_t *res = json_incref(json_object_get(r, "result"));
    json_decref(r);
    return res;
}

json_t *ternd_vm_show(struct ternd_hosts *t, int h, const char *vm)
{
    json_t *r = ternd_api(t, h, json_pack("{s:s, s:s}", "cmd", "vm.show", "name", vm), NULL, 5000);
    json_t *v = json_incref(json_object_get(json_object_get(r, "result"), "vm"));
    json_decref(r);
    return v;
}

json_t *ternd_host_show(struct ternd_hosts *t, int h, const char *host)
{
    json_t *r = ternd_api(t, h, json_pack("{s:s}", "cmd", "host.list"), NULL, 5000);
    json_t *found = NULL, *x;
    size_t i;
    json_array_foreach(json_object_get(json_object_get(r, "result"), "hosts"), i, x)
        if (!found && !strcmp(tjson_str(x, "name", NULL), host))
            found = json_incref(x);
    json_decref(r);
    return found;
}

const char *tjson_str(const json_t *j, const char *a, const char *b)
{
    const json_t *v = json_object_get(j, a);
    if (b)
        v = json_object_get(v, b);
    return json_string_value(v) ? json_string_value(v) : "";
}

void ternd_hosts_print_logs(struct ternd_hosts *t)
{
    for (int h = 1; h <= t->nr; h++) {
        char *text = test_read_text(t->ternd[h].err_path);
        bool ended = t->ternd[h].pid && test_proc_wait(&t->ternd[h], 0) == 1;
        fprintf(stderr, "--- ternd h%d (%s, status %d)\n%s\n", h,
                !t->ternd[h].pid ? "not started" : ended ? "ended" : "running",
                ended ? t->ternd[h].status : 0, text);
        free(text);
    }
}

bool ternd_hosts_agree(struct ternd_hosts *t, unsigned mask, int online, bool quorate,
                       int timeout_ms)
{
    double end = now_s() + timeout_ms / 1000.0;
    while (now_s() < end) {
        bool ok = true;
        json_int_t version = -1;
        for (int h = 1; h <= t->nr && ok; h++) {
            if (!(mask & (1u << h)))
                continue;
            json_t *s = ternd_status(t, h);
            json_t *c = json_object_get(s, "cluster");
            int on = 0;
            size_t i;
            json_t *host;
            json_array_foreach(json_object_get(s, "hosts"), i, host) on +=
                json_is_true(json_object_get(host, "online"));
            json_int_t v = json_integer_value(json_object_get(c, "version"));
            ok = s && json_is_true(json_object_get(c, "ready")) &&
                 json_is_true(json_object_get(c, "quorate")) == quorate && on == online &&
                 (version < 0 || v == version);
            version = v;
            json_decref(s);
        }
        if (ok)
            return true;
        test_sleep_ms(100);
    }
    fprintf(stderr, "hosts 0x%x did not agree (%d online, %s) within %d ms\n", mask, online,
            quorate ? "quorate" : "not quorate", timeout_ms);
    ternd_hosts_print_logs(t);
    return false;
}

char *ternd_shared_view(struct ternd_hosts *t, int h)
{
    json_t *s = ternd_status(t, h);
    if (!s)
        return NULL;
    json_object_del(s, "cluster");
    json_object_del(s, "agent");
    char *d = json_dumps(s, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(s);
    return d;
}

pid_t ternd_hosts_vm_pid(struct ternd_hosts *t, int h, const char *vm)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/h%d/run/tern/vms/%s/pid", t->dir, h, vm);
    char *text = test_read_text(path);
    pid_t pid = text ? (pid_t)atoi(text) : 0;
    free(text);
    return pid;
}
