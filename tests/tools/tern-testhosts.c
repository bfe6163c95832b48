/* tern-testhosts: long-lived test hosts running corosync on this machine,
 * for demos and manual testing (docs/test-hosts.md). The same hosts as
 * the cluster tests use (tests/support/cluster.h), under the fixed name
 * prefix "tern-demo-", which the clean-up of test runs never touches; one
 * set of demo hosts at a time. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/cluster.h"

#define PREFIX "tern-demo-"
#define MARKER ".tern-testhosts"
#define EX_USAGE 64
#define EX_FAIL 1

static const char usage[] =
    "usage: tern-testhosts up DIR N            create N hosts (1-8) under DIR, start corosync\n"
    "                                          on each, wait until quorate, write DIR/hosts.json\n"
    "       tern-testhosts exec DIR I -- CMD...  run CMD in host I (foreground; its exit status)\n"
    "       tern-testhosts spawn DIR I LOG -- CMD...\n"
    "                                          start CMD in host I in the background, output to\n"
    "                                          LOG; prints its pid\n"
    "       tern-testhosts kill DIR I          crash host I: SIGKILL all its processes at once\n"
    "       tern-testhosts freeze DIR I on|off hang host I (cgroup.freeze) or let it run again\n"
    "       tern-testhosts partition DIR I cut|heal\n"
    "                                          take host I's network link down or up\n"
    "       tern-testhosts start-corosync DIR I  start corosync again in host I (after kill)\n"
    "       tern-testhosts down DIR            remove the hosts and DIR\n"
    "Hosts are h1..hN: nodeid I, address 10.77.0.I, run as root. See docs/test-hosts.md.\n";

static int die_usage(const char *why)
{
    if (why)
        fprintf(stderr, "tern-testhosts: %s\n", why);
    fputs(usage, stderr);
    return EX_USAGE;
}

/* DIR as an absolute path (it need not exist). */
static int absolute(const char *dir, char *out, size_t len)
{
    if (dir[0] == '/')
        return snprintf(out, len, "%s", dir) < (int)len ? 0 : -1;
    char cwd[512];
    if (!getcwd(cwd, sizeof(cwd)))
        return -1;
    return snprintf(out, len, "%s/%s", cwd, dir) < (int)len ? 0 : -1;
}

static int parse_host(const char *s, int nr)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 1 || v > nr)
        return -1;
    return (int)v;
}

static int write_hosts_json(const struct test_cluster *c, char *err, size_t errlen)
{
    json_t *arr = json_array();
    for (int i = 1; arr && i <= c->nr; i++) {
        char name[16], run_dir[512], shared[512];
        snprintf(name, sizeof(name), "h%d", i);
        snprintf(run_dir, sizeof(run_dir), "%s/h%d/run", c->dir, i);
        snprintf(shared, sizeof(shared), "%s/shared", c->dir);
        json_t *h = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:s}", "name", name, "nodeid", i,
                              "addr", test_cluster_addr(c, i), "netns", test_cluster_netns(c, i),
                              "cgroup", c->cgroup[i], "run_dir", run_dir, "shared_dir", shared);
        if (!h || json_array_append_new(arr, h) < 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    if (!arr) {
        snprintf(err, errlen, "out of memory building hosts.json");
        return -1;
    }
    char path[512], tmp[520];
    snprintf(path, sizeof(path), "%s/hosts.json", c->dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int rc = json_dump_file(arr, tmp, JSON_INDENT(2));
    json_decref(arr);
    if (rc < 0 || rename(tmp, path) < 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* The number of hosts, from DIR/hosts.json. */
static int read_nr(const char *dir)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/hosts.json", dir);
    json_error_t je;
    json_t *arr = json_load_file(path, 0, &je);
    if (!arr) {
        fprintf(stderr, "tern-testhosts: cannot read %s: %s (did `tern-testhosts up %s N` run?)\n",
                path, je.text, dir);
        return -1;
    }
    int nr = json_is_array(arr) ? (int)json_array_size(arr) : 0;
    json_decref(arr);
    if (nr < 1 || nr > TEST_CLUSTER_MAX) {
        fprintf(stderr, "tern-testhosts: %s does not list 1 to %d hosts\n", path,
                TEST_CLUSTER_MAX);
        return -1;
    }
    return nr;
}

/* Fills c for the hosts of DIR and parses the host number. */
static int attach(struct test_cluster *c, const char *dir, const char *host, int *i)
{
    int nr = read_nr(dir);
    if (nr < 0)
        return -1;
    char err[512];
    if (test_cluster_attach(c, nr, dir, PREFIX, err, sizeof(err)) < 0) {
        fprintf(stderr, "tern-testhosts: %s\n", err);
        return -1;
    }
    if (host && (*i = parse_host(host, nr)) < 0) {
        fprintf(stderr, "tern-testhosts: host must be a number from 1 to %d, not '%s'\n", nr,
                host);
        return -1;
    }
    return 0;
}

/* Whether `dir` is missing or empty; *ours says it holds the marker of an
 * earlier `up` (an interrupted one leaves it behind). */
static bool dir_usable(const char *dir, bool *ours)
{
    char marker[600];
    snprintf(marker, sizeof(marker), "%s/" MARKER, dir);
    *ours = access(marker, F_OK) == 0;
    struct stat st;
    if (stat(dir, &st) < 0)
        return errno == ENOENT;
    if (!S_ISDIR(st.st_mode))
        return false;
    int n = 0; /* only "." and ".." */
    DIR *d = opendir(dir);
    if (!d)
        return false;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n <= 2 || *ours;
}

static int write_marker(const char *dir, int nr)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/" MARKER, dir);
    FILE *m = NULL;
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        goto fail;
    m = fopen(path, "w");
    if (!m || fprintf(m, "test hosts %sh1..h%d; `tern-testhosts down %s` removes them\n",
                      PREFIX, nr, dir) < 0)
        goto fail;
    if (fclose(m) != 0) {
        m = NULL;
        goto fail;
    }
    return 0;
fail:
    fprintf(stderr, "tern-testhosts: cannot write %s: %s\n", path, strerror(errno));
    if (m)
        fclose(m);
    return -1;
}

static int cmd_up(const char *dir, const char *count)
{
    char err[1024];
    char path[600];
    int nr = parse_host(count, TEST_CLUSTER_MAX);
    if (nr < 0)
        return die_usage("N must be a number from 1 to 8");
    snprintf(path, sizeof(path), "/run/netns/%ssw", PREFIX);
    if (access(path, F_OK) == 0) {
        fprintf(stderr,
                "tern-testhosts: demo hosts (%s*) exist already; `tern-testhosts down DIR` "
                "removes them first\n",
                PREFIX);
        return EX_FAIL;
    }
    bool ours;
    if (!dir_usable(dir, &ours)) {
        fprintf(stderr, "tern-testhosts: %s must be an empty directory or not exist yet\n", dir);
        return EX_FAIL;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* Left-overs of an interrupted `up`: no switch namespace, but maybe
     * cgroups, host namespaces, shm directories, DIR's contents. */
    test_cluster_remove_prefix(PREFIX);
    if (ours)
        test_rmtree(dir);
    /* The marker first, so that an `up` killed from here on leaves a DIR
     * the next `up` or `down` recognises. */
    if (write_marker(dir, nr) < 0)
        return EX_FAIL;
    static struct test_cluster c;
    if (test_cluster_create_named(&c, nr, dir, PREFIX, true, err, sizeof(err)) < 0) {
        fprintf(stderr, "tern-testhosts: %s\n", err);
        test_rmtree(dir);
        return EX_FAIL;
    }
    for (int i = 1; i <= nr; i++) {
        if (test_cluster_start_corosync(&c, i, err, sizeof(err)) < 0) {
            fprintf(stderr, "tern-testhosts: %s\n", err);
            test_cluster_destroy(&c);
            return EX_FAIL;
        }
    }
    if (test_cluster_wait_quorate(&c, 20000, err, sizeof(err)) < 0 ||
        write_hosts_json(&c, err, sizeof(err)) < 0) {
        fprintf(stderr, "tern-testhosts: %s\n", err);
        test_cluster_destroy(&c);
        return EX_FAIL;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%d test hosts up and quorate in %.1f s: h1..h%d at 10.77.0.1-%d, corosync logs in "
           "%s/hI/log, hosts in %s/hosts.json\n",
           nr, secs, nr, nr, dir, dir);
    return 0;
}

static int cmd_exec(const char *dir, const char *host, char **argv)
{
    struct test_cluster c;
    int i;
    if (attach(&c, dir, host, &i) < 0)
        return EX_FAIL;
    char err[1024];
    if (test_cluster_enter(&c, i, true, err, sizeof(err)) < 0) {
        fprintf(stderr, "tern-testhosts: %s\n", err);
        return EX_FAIL;
    }
    execvp(argv[0], argv);
    fprintf(stderr, "tern-testhosts: cannot run %s in h%d: %s\n", argv[0], i, strerror(errno));
    return 127;
}

static int cmd_spawn(const char *dir, const char *host, const char *log, char **argv)
{
    struct test_cluster c;
    int i;
    if (attach(&c, dir, host, &i) < 0)
        return EX_FAIL;
    int out = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out < 0) {
        fprintf(stderr, "tern-testhosts: cannot open %s: %s\n", log, strerror(errno));
        return EX_FAIL;
    }
    /* The child reports a failure to start through this pipe; it closes
     * (close-on-exec) without a word when the exec worked. */
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        fprintf(stderr, "tern-testhosts: pipe: %s\n", strerror(errno));
        return EX_FAIL;
    }
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "tern-testhosts: fork: %s\n", strerror(errno));
        return EX_FAIL;
    }
    if (pid == 0) {
        char err[1024];
        close(p[0]);
        setsid();
        int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (in < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0) {
            dprintf(p[1], "cannot redirect output to %s: %s", log, strerror(errno));
            _exit(127);
        }
        if (test_cluster_enter(&c, i, true, err, sizeof(err)) < 0) {
            dprintf(p[1], "%s", err);
            _exit(127);
        }
        /* Nothing of our caller's stays open in it (a pipe a script reads
         * our output from, say), except the pipe for exec errors. */
        if (p[1] > 3)
            close_range(3, (unsigned)p[1] - 1, 0);
        close_range((unsigned)p[1] + 1, ~0u, 0);
        execvp(argv[0], argv);
        dprintf(p[1], "cannot run %s in h%d: %s", argv[0], i, strerror(errno));
        _exit(127);
    }
    close(p[1]);
    char msg[1024];
    ssize_t n;
    while ((n = read(p[0], msg, sizeof(msg) - 1)) < 0 && errno == EINTR) {
    }
    if (n > 0) {
        msg[n] = '\0';
        fprintf(stderr, "tern-testhosts: %s\n", msg);
        waitpid(pid, NULL, 0);
        return EX_FAIL;
    }
    /* Not waited for: it is reparented when we exit. */
    printf("%d\n", (int)pid);
    return 0;
}

static int cmd_kill(const char *dir, const char *host)
{
    struct test_cluster c;
    int i;
    char err[1024];
    if (attach(&c, dir, host, &i) < 0)
        return EX_FAIL;
    if (test_cluster_kill_host(&c, i, err, sizeof(err)) < 0) {
        fprintf(stderr, "tern-testhosts: %s\n", err);
        return EX_FAIL;
    }
    return 0;
}

static int cmd_freeze(const char *dir, const char *host, const char *how)
{
    bool on = !strcmp(how, "on");
    if (!on && strcmp(how, "off"))
        return die_usage("freeze takes on or off");
    struct test_cluster c;
    int i;
    char err[1024];
    if (attach(&c, dir, host, &i) < 0)
        return EX_FAIL;
    if (test_cluster_freeze_host(&c, i, on, err, sizeof(err)) < 0) {
        fprintf(stderr, "tern-testhosts: %s\n", err);
        return EX_FAIL;
    }
    return 0;
}

static int cmd_partition(const char *dir, const char *host, const char *how)
{
    bool cut = !strcmp(how, "cut");
    if (!cut && strcmp(how, "heal"))
        return die_usage("partition takes cut or heal");
    struct test_cluster c;
    int i;
    char err[1024];
    if (attach(&c, dir, host, &i) < 0)
        return EX_FAIL;
    if (test_cluster_partition(&c, i, cut, err, sizeof(err)) < 0) {
        fprintf(stderr, "tern-testhosts: %s\n", err);
        return EX_FAIL;
    }
    return 0;
}

static int cmd_start_corosync(const char *dir, const char *host)
{
    struct test_cluster c;
    int i;
    char err[1024];
    if (attach(&c, dir, host, &i) < 0)
        return EX_FAIL;
    char path[600];
    snprintf(path, sizeof(path), "%s/cgroup.procs", c.cgroup[i]);
    char *procs = test_read_text(path);
    bool busy = procs[0] != '\0';
    free(procs);
    if (busy) {
        fprintf(stderr,
                "tern-testhosts: h%d still has processes (%s); kill it first if corosync "
                "is to start afresh\n",
                i, path);
        return EX_FAIL;
    }
    if (test_cluster_start_corosync(&c, i, err, sizeof(err)) < 0) {
        fprintf(stderr, "tern-testhosts: %s\n", err);
        return EX_FAIL;
    }
    return 0;
}

static int cmd_down(const char *dir)
{
    test_cluster_remove_prefix(PREFIX);
    char path[600];
    snprintf(path, sizeof(path), "%s/" MARKER, dir);
    if (access(path, F_OK) == 0) {
        test_rmtree(dir);
    } else if (access(dir, F_OK) == 0) {
        fprintf(stderr,
                "tern-testhosts: hosts removed; %s left alone (no %s in it: not made by "
                "`tern-testhosts up`)\n",
                dir, MARKER);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return die_usage(argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
                             ? NULL
                             : "missing arguments");
    if (geteuid() != 0) {
        fprintf(stderr, "tern-testhosts: needs root (network namespaces, mounts, cgroups)\n");
        return EX_FAIL;
    }
    const char *cmd = argv[1];
    char dir[512];
    if (absolute(argv[2], dir, sizeof(dir)) < 0) {
        fprintf(stderr, "tern-testhosts: bad directory %s\n", argv[2]);
        return EX_FAIL;
    }
    /* Both callers see each other's output in order (e.g. through a pipe). */
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(cmd, "up") && argc == 4)
        return cmd_up(dir, argv[3]);
    if (!strcmp(cmd, "down") && argc == 3)
        return cmd_down(dir);
    if (!strcmp(cmd, "kill") && argc == 4)
        return cmd_kill(dir, argv[3]);
    if (!strcmp(cmd, "start-corosync") && argc == 4)
        return cmd_start_corosync(dir, argv[3]);
    if (!strcmp(cmd, "freeze") && argc == 5)
        return cmd_freeze(dir, argv[3], argv[4]);
    if (!strcmp(cmd, "partition") && argc == 5)
        return cmd_partition(dir, argv[3], argv[4]);
    if (!strcmp(cmd, "exec") && argc >= 6 && !strcmp(argv[4], "--"))
        return cmd_exec(dir, argv[3], argv + 5);
    if (!strcmp(cmd, "spawn") && argc >= 7 && !strcmp(argv[5], "--"))
        return cmd_spawn(dir, argv[3], argv[4], argv + 6);
    return die_usage("unknown command or wrong arguments");
}
