/* tern-watchdog-standin FIFO TIMEOUT_MS CGROUP_DIR
 *
 * A stand-in for a watchdog device, for tests on machines without one
 * (this one has no /dev/watchdog and no softdog): what the device would do
 * to a test host, not a device. It makes FIFO (the path appears only once
 * it is being read, so a writer that finds it never gets ENXIO), and waits
 * for the first byte written to it (armed). From then on, if no byte
 * arrives for TIMEOUT_MS, it writes "1" to CGROUP_DIR/cgroup.kill (every
 * process of the test host dies at once: the host is reset), prints one
 * line saying so and exits 0. A 'V' as the last byte before the writer
 * closes disarms it, like a watchdog's magic close: it says so and exits 0,
 * the host kept. A close without 'V' does not stop the countdown (a writer
 * may open it again and feed it in time, as with /dev/watchdog).
 *
 * It runs outside the host it guards (in the root namespaces, not in the
 * host's cgroup), as a device would survive the software it resets. It
 * removes FIFO when it exits. Exit status 0, or 1 when it could not do its
 * job (usage, FIFO, cgroup.kill). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *fifo_path;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_term(int sig)
{
    (void)sig;
    if (fifo_path)
        unlink(fifo_path);
    _exit(0);
}

/* The read end, non-blocking: no writer yet is not an end of file. */
static int open_reader(const char *path)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        fprintf(stderr, "tern-watchdog-standin: cannot open %s: %s\n", path, strerror(errno));
    return fd;
}

static int reset_host(const char *cgroup_dir, long timeout_ms)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/cgroup.kill", cgroup_dir);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "1", 1) != 1) {
        fprintf(stderr, "tern-watchdog-standin: not fed for %ld ms, but cannot write %s: %s\n",
                timeout_ms, path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    close(fd);
    printf("tern-watchdog-standin: not fed for %ld ms: killed every process of %s (the host is "
           "reset)\n",
           timeout_ms, cgroup_dir);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: tern-watchdog-standin FIFO TIMEOUT_MS CGROUP_DIR\n");
        return 1;
    }
    const char *fifo = argv[1], *cgroup_dir = argv[3];
    char *end;
    long timeout_ms = strtol(argv[2], &end, 10);
    if (*end || timeout_ms < 1 || timeout_ms > 3600 * 1000) {
        fprintf(stderr, "tern-watchdog-standin: TIMEOUT_MS must be 1..3600000, got '%s'\n",
                argv[2]);
        return 1;
    }
    char kill_path[PATH_MAX];
    snprintf(kill_path, sizeof(kill_path), "%s/cgroup.kill", cgroup_dir);
    if (access(kill_path, W_OK) < 0) {
        fprintf(stderr, "tern-watchdog-standin: %s: %s (a cgroup v2 directory, Linux 5.14+)\n",
                kill_path, strerror(errno));
        return 1;
    }
    /* Made under a temporary name and opened, then renamed into place. */
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp%d", fifo, (int)getpid()) >= (int)sizeof(tmp)) {
        fprintf(stderr, "tern-watchdog-standin: FIFO path too long\n");
        return 1;
    }
    if (mkfifo(tmp, 0600) < 0) {
        fprintf(stderr, "tern-watchdog-standin: mkfifo %s: %s\n", tmp, strerror(errno));
        return 1;
    }
    int fd = open_reader(tmp);
    if (fd < 0 || rename(tmp, fifo) < 0) {
        fprintf(stderr, "tern-watchdog-standin: cannot put the FIFO at %s: %s\n", fifo,
                strerror(errno));
        unlink(tmp);
        return 1;
    }
    fifo_path = fifo;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    bool armed = false, magic = false;
    long long last = 0;
    for (;;) {
        int wait_ms = -1;
        if (armed) {
            long long left = last + timeout_ms - now_ms();
            if (left <= 0) {
                int rc = reset_host(cgroup_dir, timeout_ms);
                unlink(fifo);
                return rc;
            }
            wait_ms = (int)left;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, wait_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "tern-watchdog-standin: poll: %s\n", strerror(errno));
            unlink(fifo);
            return 1;
        }
        if (n == 0)
            continue;
        char buf[256];
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r > 0) {
            if (!armed) {
                printf("tern-watchdog-standin: armed (%ld ms)\n", timeout_ms);
                fflush(stdout);
            }
            armed = true;
            last = now_ms();
            magic = buf[r - 1] == 'V';
            continue;
        }
        /* End of file: the writer closed it. */
        if (armed && magic) {
            printf("tern-watchdog-standin: disarmed (magic close): the host is kept\n");
            fflush(stdout);
            unlink(fifo);
            return 0;
        }
        /* An unexpected close: counting goes on; a new writer may come. */
        close(fd);
        if ((fd = open_reader(fifo)) < 0)
            return 1;
    }
}
