#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/fileio.h"

#define CONFIG_MAX_BYTES (64 * 1024)

void ternd_config_defaults(struct ternd_config *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->run_dir, sizeof(c->run_dir), "/run/tern");
    snprintf(c->state_dir, sizeof(c->state_dir), "/var/lib/tern");
    snprintf(c->tls_dir, sizeof(c->tls_dir), "/etc/tern/tls");
    snprintf(c->cpg_group, sizeof(c->cpg_group), "tern");
    c->migration_port_min = 7400;
    c->migration_port_max = 7499;
    c->use_cgroups = true;
    c->corosync_wait_s = 60;
    c->client_idle_s = 300;
    c->host_down_after_s = 30;
    c->client_stuck_s = 30;
    fence_config_defaults(&c->fence);
}

static int copy_str(char *dst, size_t cap, const char *v, const char *key, const char *where,
                    struct tern_err *err)
{
    if (strlen(v) >= cap)
        return tern_err_set(err, "%s: '%s' is too long (at most %zu characters)", where, key,
                            cap - 1);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

static int copy_abs_path(char *dst, size_t cap, const char *v, const char *key, const char *where,
                         struct tern_err *err)
{
    if (v[0] != '/')
        return tern_err_set(err, "%s: '%s' must be an absolute path, got '%s'", where, key, v);
    return copy_str(dst, cap, v, key, where, err);
}

static int parse_u64(const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-' || n < min || n > max)
        return -1;
    *out = n;
    return 0;
}

/* Sizes in MiB: "4096", "4096M", "4G". */
static int parse_mib(const char *v, uint64_t *out)
{
    char buf[32];
    size_t n = strlen(v);
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, v, n + 1);
    uint64_t mult = 1;
    char last = (char)toupper((unsigned char)buf[n - 1]);
    if (last == 'G' || last == 'M') {
        mult = last == 'G' ? 1024 : 1;
        buf[n - 1] = '\0';
    }
    uint64_t x;
    if (parse_u64(buf, 1, UINT64_MAX / 1024, &x) < 0)
        return -1;
    *out = x * mult;
    return 0;
}

static int parse_bool(const char *v, bool *out)
{
    if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "1")) {
        *out = true;
        return 0;
    }
    if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "0")) {
        *out = false;
        return 0;
    }
    return -1;
}

/* metrics_addr: "PORT" (loopback), "IPV4:PORT" or "[IPV6]:PORT". */
static int parse_metrics_addr(struct ternd_config *c, const char *v, const char *where,
                              struct tern_err *err)
{
    char host[CL_ADDR_MAX];
    const char *port;
    if (v[0] == '[') {
        const char *close = strchr(v, ']');
        if (!close || close[1] != ':' || (size_t)(close - v - 1) >= sizeof(host))
            goto bad;
        memcpy(host, v + 1, (size_t)(close - v - 1));
        host[close - v - 1] = '\0';
        port = close + 2;
        unsigned char tmp[16];
        if (inet_pton(AF_INET6, host, tmp) != 1)
            goto bad;
    } else if (strchr(v, ':')) {
        const char *colon = strrchr(v, ':');
        if ((size_t)(colon - v) >= sizeof(host))
            goto bad;
        memcpy(host, v, (size_t)(colon - v));
        host[colon - v] = '\0';
        port = colon + 1;
        unsigned char tmp[4];
        if (inet_pton(AF_INET, host, tmp) != 1)
            goto bad;
    } else {
        snprintf(host, sizeof(host), "127.0.0.1");
        port = v;
    }
    uint64_t n;
    if (parse_u64(port, 1, 65535, &n) < 0)
        goto bad;
    snprintf(c->metrics_host, sizeof(c->metrics_host), "%s", host);
    c->metrics_port = (uint16_t)n;
    return 0;
bad:
    return tern_err_set(err, "%s: metrics_addr must be PORT (on 127.0.0.1), IPV4:PORT or "
                             "[IPV6]:PORT with a port of 1..65535 (e.g. 127.0.0.1:9650 or "
                             "[::1]:9650), got '%s'", where, v);
}

static int set_key(struct ternd_config *c, const char *key, const char *v, const char *where,
                   int lineno, struct tern_err *err)
{
    if (!strcmp(key, "host")) {
        if (!cl_name_valid(v))
            return tern_err_set(err, "%s: host name '%s' is not valid (letters, digits, '.', '_', '-'; "
                                     "at most 63)", where, v);
        return copy_str(c->host, sizeof(c->host), v, key, where, err);
    }
    if (!strcmp(key, "run_dir"))
        return copy_abs_path(c->run_dir, sizeof(c->run_dir), v, key, where, err);
    if (!strcmp(key, "state_dir"))
        return copy_abs_path(c->state_dir, sizeof(c->state_dir), v, key, where, err);
    if (!strcmp(key, "shared_dir"))
        return copy_abs_path(c->shared_dir, sizeof(c->shared_dir), v, key, where, err);
    if (!strcmp(key, "tls_dir"))
        return copy_abs_path(c->tls_dir, sizeof(c->tls_dir), v, key, where, err);
    if (!strcmp(key, "control_socket"))
        return copy_abs_path(c->control_socket, sizeof(c->control_socket), v, key, where, err);
    if (!strcmp(key, "vmm_path"))
        return copy_abs_path(c->vmm_path, sizeof(c->vmm_path), v, key, where, err);
    if (!strcmp(key, "migration_addr")) {
        unsigned char tmp[16];
        if (inet_pton(AF_INET, v, tmp) != 1 && inet_pton(AF_INET6, v, tmp) != 1)
            return tern_err_set(err, "%s: migration_addr must be an IPv4 or IPv6 address, got '%s'",
                                where, v);
        return copy_str(c->migration_addr, sizeof(c->migration_addr), v, key, where, err);
    }
    if (!strcmp(key, "migration_ports")) {
        unsigned lo, hi;
        char extra;
        if (sscanf(v, "%u-%u%c", &lo, &hi, &extra) != 2 || lo < 1024 || hi > 65535 || lo > hi)
            return tern_err_set(err, "%s: migration_ports must be a range like 7400-7499 "
                                     "(1024..65535), got '%s'", where, v);
        c->migration_port_min = (uint16_t)lo;
        c->migration_port_max = (uint16_t)hi;
        return 0;
    }
    if (!strcmp(key, "mem")) {
        if (parse_mib(v, &c->mem_mib) < 0)
            return tern_err_set(err, "%s: mem must be a size like 8G or 8192M, got '%s'", where, v);
        return 0;
    }
    if (!strcmp(key, "vcpus")) {
        uint64_t n;
        if (parse_u64(v, 1, 4096, &n) < 0)
            return tern_err_set(err, "%s: vcpus must be 1..4096, got '%s'", where, v);
        c->vcpus = (uint32_t)n;
        return 0;
    }
    if (!strcmp(key, "cpg_group")) {
        if (!cl_name_valid(v))
            return tern_err_set(err, "%s: cpg_group '%s' is not a valid name", where, v);
        return copy_str(c->cpg_group, sizeof(c->cpg_group), v, key, where, err);
    }
    if (!strcmp(key, "corosync_wait")) {
        uint64_t n;
        if (parse_u64(v, 0, 3600, &n) < 0)
            return tern_err_set(err, "%s: corosync_wait must be 0..3600 (seconds), got '%s'",
                                where, v);
        c->corosync_wait_s = (unsigned)n;
        return 0;
    }
    if (!strcmp(key, "host_down_after")) {
        uint64_t n;
        if (parse_u64(v, 0, 3600, &n) < 0)
            return tern_err_set(err, "%s: host_down_after must be 0..3600 (seconds), got '%s'",
                                where, v);
        c->host_down_after_s = (unsigned)n;
        return 0;
    }
    if (!strcmp(key, "client_idle_timeout")) {
        uint64_t n;
        if (parse_u64(v, 1, 86400, &n) < 0)
            return tern_err_set(err,
                                "%s: client_idle_timeout must be 1..86400 (seconds), got '%s'",
                                where, v);
        c->client_idle_s = (unsigned)n;
        return 0;
    }
    if (!strcmp(key, "image_dirs")) {
        char buf[4096];
        if (strlen(v) >= sizeof(buf))
            return tern_err_set(err, "%s: image_dirs is too long", where);
        snprintf(buf, sizeof(buf), "%s", v);
        c->nr_image_dirs = 0;
        for (char *save, *tok = strtok_r(buf, " \t", &save); tok;
             tok = strtok_r(NULL, " \t", &save)) {
            if (c->nr_image_dirs == TERND_IMAGE_DIRS_MAX)
                return tern_err_set(err, "%s: at most %d image_dirs", where,
                                    TERND_IMAGE_DIRS_MAX);
            if (copy_abs_path(c->image_dirs[c->nr_image_dirs], sizeof(c->image_dirs[0]), tok,
                              key, where, err) < 0)
                return -1;
            c->nr_image_dirs++;
        }
        if (!c->nr_image_dirs)
            return tern_err_set(err, "%s: image_dirs needs at least one directory", where);
        return 0;
    }
    if (!strcmp(key, "allow_block_devices")) {
        if (parse_bool(v, &c->allow_block_devices) < 0)
            return tern_err_set(err, "%s: allow_block_devices must be yes or no, got '%s'", where,
                                v);
        return 0;
    }
    if (!strcmp(key, "client_stuck_timeout")) {
        uint64_t n;
        if (parse_u64(v, 1, 3600, &n) < 0)
            return tern_err_set(err,
                                "%s: client_stuck_timeout must be 1..3600 (seconds), got '%s'",
                                where, v);
        c->client_stuck_s = (unsigned)n;
        return 0;
    }
    if (!strcmp(key, "metrics_addr"))
        return parse_metrics_addr(c, v, where, err);
    if (!strcmp(key, "cgroups")) {
        if (parse_bool(v, &c->use_cgroups) < 0)
            return tern_err_set(err, "%s: cgroups must be yes or no, got '%s'", where, v);
        return 0;
    }
    if (!strcmp(key, "cgroup_layout")) {
        if (strcmp(v, "nested") && strcmp(v, "delegated"))
            return tern_err_set(err, "%s: cgroup_layout must be nested or delegated, got '%s'",
                                where, v);
        c->cgroup_delegated = !strcmp(v, "delegated");
        return 0;
    }
    int rc = fence_config_set(&c->fence, key, v, where, lineno, err);
    if (rc <= 0)
        return rc;
    return tern_err_set(err, "%s: unknown setting '%s' (see docs/ternd.md)", where, key);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

int ternd_config_parse(struct ternd_config *c, const char *text, const char *origin,
                       struct tern_err *err)
{
    int lineno = 0;
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        lineno++;
        char *line = strndup(p, n);
        if (!line)
            return tern_err_set(err, "out of memory");
        char where[PATH_MAX + 32];
        snprintf(where, sizeof(where), "%s line %d", origin, lineno);
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *l = trim(line);
        int rc = 0;
        if (*l) {
            char *eq = strchr(l, '=');
            if (!eq) {
                rc = tern_err_set(err, "%s: expected 'key = value', got '%s'", where, l);
            } else {
                *eq = '\0';
                char *key = trim(l), *val = trim(eq + 1);
                if (!*val)
                    rc = tern_err_set(err, "%s: '%s' has no value", where, key);
                else
                    rc = set_key(c, key, val, where, lineno, err);
            }
        }
        free(line);
        if (rc < 0)
            return -1;
        p += n;
        if (*p == '\n')
            p++;
    }
    /* Fence levels may name devices defined further down. */
    return fence_config_finish(&c->fence, origin, err);
}

static int ensure_dir(const char *path, const char *what, struct tern_err *err)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *s = tmp + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
            return tern_err_errno(err, errno, "creating %s directory %s", what, tmp);
        *s = '/';
    }
    if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
        return tern_err_errno(err, errno, "creating %s directory %s", what, path);
    struct stat st;
    if (stat(path, &st) < 0)
        return tern_err_errno(err, errno, "%s directory %s", what, path);
    if (!S_ISDIR(st.st_mode))
        return tern_err_set(err, "%s directory %s is not a directory", what, path);
    return 0;
}

static uint64_t host_mem_mib(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || psz <= 0)
        return 1024;
    uint64_t mib = (uint64_t)pages * (uint64_t)psz >> 20;
    /* Leave room for the host itself. */
    return mib > 2048 ? mib - 1024 : mib / 2;
}

/* The default vmm_path: tern-vmm next to ternd (a build tree), else the
 * installed one, TERN_LIBEXECDIR/tern/tern-vmm (the Makefile sets
 * TERN_LIBEXECDIR from its PREFIX; docs/install.md). */
static int default_vmm_path(char *out, size_t len, struct tern_err *err)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n < 0)
        return tern_err_errno(err, errno, "finding ternd's own path for the default vmm_path");
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    if (snprintf(out, len, "%s/tern-vmm", self) >= (int)len)
        return tern_err_set(err, "the path of tern-vmm next to ternd is too long");
#ifdef TERN_LIBEXECDIR
    if (access(out, X_OK) < 0 &&
        snprintf(out, len, "%s", TERN_LIBEXECDIR "/tern/tern-vmm") >= (int)len)
        return tern_err_set(err, "the installed tern-vmm's path is too long");
#endif
    return 0;
}

int ternd_config_check(struct ternd_config *c, struct tern_err *err)
{
    if (!c->control_socket[0] &&
        snprintf(c->control_socket, sizeof(c->control_socket), "%s/ternd.sock", c->run_dir) >=
            (int)sizeof(c->control_socket))
        return tern_err_set(err, "run_dir is too long for the control socket path");
    if (strlen(c->control_socket) >= 108)
        return tern_err_set(err, "control_socket %s is too long for a unix socket (at most 107 "
                                 "bytes)", c->control_socket);
    if (!c->vmm_path[0] && default_vmm_path(c->vmm_path, sizeof(c->vmm_path), err) < 0)
        return -1;
    if (access(c->vmm_path, X_OK) < 0)
        return tern_err_errno(err, errno, "vmm_path %s is not an executable tern-vmm (set vmm_path "
                                          "in the config)", c->vmm_path);
    static const char *const tls_files[] = {"ca.pem", "cert.pem", "key.pem"};
    for (size_t i = 0; i < 3; i++) {
        char p[PATH_MAX + 16];
        snprintf(p, sizeof(p), "%s/%s", c->tls_dir, tls_files[i]);
        if (access(p, R_OK) < 0)
            return tern_err_errno(err, errno, "tls_dir: cannot read %s (create it with `ternctl "
                                              "cluster issue-cert`)", p);
    }
    for (unsigned i = 0; i < c->nr_image_dirs; i++) {
        struct stat st;
        if (stat(c->image_dirs[i], &st) < 0 || !S_ISDIR(st.st_mode))
            return tern_err_set(err, "image_dirs: %s is not a directory", c->image_dirs[i]);
    }
    if (c->shared_dir[0]) {
        struct stat st;
        if (stat(c->shared_dir, &st) < 0 || !S_ISDIR(st.st_mode))
            return tern_err_set(err, "shared_dir %s is not a directory", c->shared_dir);
    }
    if (fence_config_check(&c->fence, err) < 0)
        return -1;
    if (ensure_dir(c->run_dir, "run", err) < 0 || ensure_dir(c->state_dir, "state", err) < 0)
        return -1;
    if (!c->mem_mib)
        c->mem_mib = host_mem_mib();
    if (!c->vcpus) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->vcpus = n > 0 ? (uint32_t)n : 1;
    }
    return 0;
}

int ternd_config_load(struct ternd_config *c, const char *path, struct tern_err *err)
{
    ternd_config_defaults(c);
    uint8_t *text;
    size_t len;
    if (tern_read_file(path, CONFIG_MAX_BYTES, &text, &len, err) < 0)
        return tern_err_prefix(err, "reading the ternd configuration (--config)");
    char *s = malloc(len + 1);
    if (!s) {
        free(text);
        return tern_err_set(err, "out of memory");
    }
    memcpy(s, text, len);
    s[len] = '\0';
    free(text);
    if (strlen(s) != len) {
        free(s);
        return tern_err_set(err, "%s: contains a NUL byte; is it a text file?", path);
    }
    int rc = ternd_config_parse(c, s, path, err);
    free(s);
    if (rc < 0)
        return -1;
    if (ternd_config_check(c, err) < 0)
        return tern_err_prefix(err, "%s", path);
    return 0;
}
