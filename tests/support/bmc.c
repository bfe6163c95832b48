/* A BMC for a test host: ipmi_sim outside the host (bmc.h). */
#include "bmc.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/cgroup.h"

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- removal at exit ---- */

static struct test_bmc *live[TEST_HOSTS_EXTRA_MAX];

static void stop_live(void)
{
    for (size_t k = 0; k < sizeof(live) / sizeof(live[0]); k++)
        if (live[k])
            test_bmc_stop(live[k]);
}

static void track(struct test_bmc *b, bool on)
{
    static bool registered;
    for (size_t k = 0; k < sizeof(live) / sizeof(live[0]); k++) {
        if (on && !live[k]) {
            live[k] = b;
            break;
        }
        if (!on && live[k] == b)
            live[k] = NULL;
    }
    if (on && !registered) {
        atexit(stop_live);
        registered = true;
    }
}

/* ---- files ---- */

static int write_text(const char *path, mode_t mode, const char *text, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return fail(err, errlen, "cannot create %s: %s", path, strerror(errno));
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    int e = errno;
    if (close(fd) < 0 && n == (ssize_t)len)
        return fail(err, errlen, "cannot write %s: %s", path, strerror(errno));
    if (n != (ssize_t)len)
        return fail(err, errlen, "cannot write %s: %s", path, n < 0 ? strerror(e) : "short write");
    return 0;
}

static bool plain_word(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n >= max)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
            return false;
    return true;
}

static int write_files(const struct test_bmc *b, char *err, size_t errlen)
{
    char path[400], text[4096];
    /* The chassis control: ipmi_sim runs it as `chassis 0x20 get power`
     * and `chassis 0x20 set power 0` (OpenIPMI's external power control
     * convention: "parm:value" lines for get, nothing for a good set). */
    snprintf(path, sizeof(path), "%s/chassis", b->dir);
    snprintf(text, sizeof(text),
             "#!/bin/sh\n"
             "# The chassis of test host h%d, for its BMC (tests/support/bmc.c).\n"
             "cg='%s'\n"
             "echo \"$(date +%%s.%%N) $*\" >> '%s/chassis.log'\n"
             "shift\n"
             "op=$1\n"
             "shift\n"
             "powered() { grep -q '^populated 1' \"$cg/cgroup.events\" 2>/dev/null; }\n"
             "power_off() {\n"
             "    powered || return 0\n"
             "    echo 1 > \"$cg/cgroup.kill\" || return 1\n"
             "    n=0\n"
             "    while powered && [ $n -lt 500 ]; do sleep 0.01; n=$((n + 1)); done\n"
             "    ! powered\n"
             "}\n"
             "case $op in\n"
             "get)\n"
             "    for p in \"$@\"; do\n"
             "        case $p in\n"
             "        power) if powered; then echo power:1; else echo power:0; fi ;;\n"
             "        boot) echo boot:default ;;\n"
             "        *) echo \"no parameter $p\"; exit 1 ;;\n"
             "        esac\n"
             "    done ;;\n"
             "set)\n"
             "    while [ $# -ge 2 ]; do\n"
             "        case $1 in\n"
             "        power) if [ \"$2\" = 0 ]; then power_off || { echo 'cannot power off'; exit 1; }; fi ;;\n"
             "        reset) if [ \"$2\" = 1 ]; then power_off || { echo 'cannot reset'; exit 1; }; fi ;;\n"
             "        boot) ;;\n"
             "        *) echo \"no parameter $1\"; exit 1 ;;\n"
             "        esac\n"
             "        shift 2\n"
             "    done ;;\n"
             "*) echo \"no operation $op\"; exit 1 ;;\n"
             "esac\n"
             "exit 0\n",
             b->host, b->host_cgroup, b->dir);
    if (write_text(path, 0755, text, err, errlen) < 0)
        return -1;
    snprintf(path, sizeof(path), "%s/lan.conf", b->dir);
    snprintf(text, sizeof(text),
             "# The BMC of test host h%d (tests/support/bmc.c): ipmi_lan(5).\n"
             "name \"tern-bmc-h%d\"\n"
             "set_working_mc 0x20\n"
             "  startlan 1\n"
             "    addr %s 623\n"
             "    priv_limit admin\n"
             "    allowed_auths_callback md5\n"
             "    allowed_auths_user md5\n"
             "    allowed_auths_operator md5\n"
             "    allowed_auths_admin md5\n"
             "    guid 7465726e2d626d632d68%02x0000000000\n"
             "  endlan\n"
             "  chassis_control \"%s/chassis 0x20\"\n"
             "  user 2 true \"%s\" \"%s\" admin 10 md5\n",
             b->host, b->host, b->addr, b->host, b->dir, b->user, b->password);
    if (write_text(path, 0600, text, err, errlen) < 0)
        return -1;
    /* The simulated machine: one management controller, the BMC, a
     * chassis device (device support bit 7). */
    snprintf(path, sizeof(path), "%s/sim.emu", b->dir);
    if (write_text(path, 0600,
                   "mc_setbmc 0x20\n"
                   "mc_add 0x20 0 no-device-sdrs 0x01 1 0 0x80 0x000000 0x0001\n"
                   "mc_enable 0x20\n",
                   err, errlen) < 0)
        return -1;
    snprintf(path, sizeof(path), "%s/state", b->dir);
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return fail(err, errlen, "cannot create %s: %s", path, strerror(errno));
    return 0;
}

/* ---- ipmi_sim ---- */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs argv to completion (no shell); its output to /dev/null. The exit
 * status, or -1. */
static int run_quiet(char *const argv[])
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
            _exit(127);
        close_range(3, ~0u, 0);
        execvp(argv[0], argv);
        _exit(127);
    }
    int ws;
    while (waitpid(pid, &ws, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
}

/* Whether it answers `chassis power status` over lanplus from its own
 * namespace. */
static bool answers(const struct test_bmc *b)
{
    char *argv[] = {"ip",     "netns", "exec", (char *)b->ns, "ipmitool", "-I", "lanplus",
                    "-C",     "3",     "-N",   "1",           "-R",       "1",  "-H",
                    (char *)b->addr,   "-U",   (char *)b->user, "-P", (char *)b->password,
                    "chassis", "power", "status", NULL};
    return run_quiet(argv) == 0;
}

static void __attribute__((noreturn)) child(const struct test_bmc *b, pid_t parent)
{
    /* It dies with the test that started it, whatever kills the test. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
        _exit(126);
    setsid();
    struct tern_err te;
    if (cgroup_move(b->cgroup, 0, &te) < 0) {
        fprintf(stderr, "BMC of h%d: %s\n", b->host, te.msg);
        _exit(127);
    }
    char path[400];
    snprintf(path, sizeof(path), "/run/netns/%s", b->ns);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) {
        fprintf(stderr, "BMC of h%d: cannot enter %s: %s\n", b->host, path, strerror(errno));
        _exit(127);
    }
    snprintf(path, sizeof(path), "%s/ipmi_sim.log", b->dir);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int log = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (null < 0 || log < 0 || dup2(null, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
        _exit(127);
    close_range(3, ~0u, 0);
    char lan[400], emu[400], state[400];
    snprintf(lan, sizeof(lan), "%s/lan.conf", b->dir);
    snprintf(emu, sizeof(emu), "%s/sim.emu", b->dir);
    snprintf(state, sizeof(state), "%s/state", b->dir);
    execlp("ipmi_sim", "ipmi_sim", "-c", lan, "-f", emu, "-s", state, "-n", (char *)NULL);
    fprintf(stderr, "BMC of h%d: cannot run ipmi_sim: %s (Debian package openipmi)\n", b->host,
            strerror(errno));
    _exit(127);
}

int test_bmc_start(struct test_bmc *b, struct test_cluster *c, int i, const char *user,
                   const char *password, char *err, size_t errlen)
{
    memset(b, 0, sizeof(*b));
    if (!c || !c->created || i < 1 || i > c->nr)
        return fail(err, errlen, "no test host %d for a BMC", i);
    if (!plain_word(user, sizeof(b->user)) || !plain_word(password, sizeof(b->password)))
        return fail(err, errlen, "BMC user and password: letters and digits only");
    b->host = i;
    snprintf(b->user, sizeof(b->user), "%s", user);
    snprintf(b->password, sizeof(b->password), "%s", password);
    snprintf(b->addr, sizeof(b->addr), "10.77.0.%d", 200 + (i & 31));
    snprintf(b->host_cgroup, sizeof(b->host_cgroup), "%s", c->cgroup[i]);
    snprintf(b->dir, sizeof(b->dir), "%s/bmc%d", c->dir, i);
    char mnt[256];
    struct tern_err te;
    if (cgroup_mount_point(mnt, sizeof(mnt), &te) < 0)
        return fail(err, errlen, "a BMC needs cgroup v2: %s", te.msg);
    if (snprintf(b->cgroup, sizeof(b->cgroup), "%s/%sbmc%d", mnt, c->prefix, i & 31) >=
        (int)sizeof(b->cgroup))
        return fail(err, errlen, "cgroup path under %s too long", mnt);
    if (mkdir(b->dir, 0700) < 0 && errno != EEXIST)
        return fail(err, errlen, "cannot create %s: %s", b->dir, strerror(errno));
    if (write_files(b, err, errlen) < 0)
        return -1;
    char suffix[16];
    snprintf(suffix, sizeof(suffix), "bmc%d", i);
    if (test_hosts_add_extra(&c->net, suffix, b->addr, b->ns, sizeof(b->ns), err, errlen) < 0)
        return -1;
    if (cgroup_create(b->cgroup, &te) < 0)
        return fail(err, errlen, "BMC of h%d: %s", i, te.msg);
    track(b, true);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        test_bmc_stop(b);
        return fail(err, errlen, "fork: %s", strerror(errno));
    }
    if (pid == 0)
        child(b, parent);
    b->pid = pid;
    for (long long end = now_ms() + 10000;;) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            b->pid = 0;
            char path[400];
            snprintf(path, sizeof(path), "%s/ipmi_sim.log", b->dir);
            char *log = test_read_text(path);
            fail(err, errlen, "ipmi_sim for h%d exited at start; %s: %s", i, path, log);
            free(log);
            test_bmc_stop(b);
            return -1;
        }
        if (answers(b))
            return 0;
        if (now_ms() > end) {
            test_bmc_stop(b);
            return fail(err, errlen, "the BMC of h%d (%s in %s) does not answer ipmitool after 10 s",
                        i, b->addr, b->ns);
        }
        test_sleep_ms(50);
    }
}

int test_bmc_pause(struct test_bmc *b, bool paused, char *err, size_t errlen)
{
    if (b->pid <= 0)
        return fail(err, errlen, "the BMC of h%d is not running", b->host);
    if (kill(b->pid, paused ? SIGSTOP : SIGCONT) < 0)
        return fail(err, errlen, "cannot %s the BMC of h%d: %s", paused ? "stop" : "continue",
                    b->host, strerror(errno));
    b->paused = paused;
    return 0;
}

void test_bmc_stop(struct test_bmc *b)
{
    if (b->pid > 0) {
        kill(b->pid, SIGKILL);
        while (waitpid(b->pid, NULL, 0) < 0 && errno == EINTR) {
        }
        b->pid = 0;
    }
    b->paused = false;
    if (b->cgroup[0] && access(b->cgroup, F_OK) == 0) {
        /* A chassis script it was running, if any. */
        struct tern_err te;
        if (cgroup_kill(b->cgroup, &te) < 0 || cgroup_wait_empty(b->cgroup, 5000, &te) < 0 ||
            cgroup_remove(b->cgroup, &te) < 0)
            fprintf(stderr, "BMC of h%d: %s\n", b->host, te.msg);
    }
    track(b, false);
}

int test_bmc_chassis_calls(const struct test_bmc *b, const char *needle)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/chassis.log", b->dir);
    return test_count_text(path, needle);
}
