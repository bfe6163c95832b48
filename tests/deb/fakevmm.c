/* A stand-in for tern-vmm in tests/deb/test_systemd.sh, where there is no
 * KVM: `fakevmm run ... --control PATH` listens on PATH and answers every
 * JSON line with {"ok":true,"state":"running",...}, as tern-vmm's control
 * socket does (docs/control-protocol.md); {"cmd":"stop"} ends it (exit 0),
 * as does SIGTERM. Enough for ternd to start, re-attach and stop a "VM". */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static const char reply[] = "{\"ok\":true,\"state\":\"running\",\"held_by\":[],\"migration\":{}}\n";

/* Serves one connection; 1 when it asked to stop. */
static int serve(int c)
{
    char buf[8192];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(c, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            return 0;
        len += (size_t)n;
        buf[len] = '\0';
        char *nl;
        while ((nl = strchr(buf, '\n'))) {
            *nl = '\0';
            int stop = strstr(buf, "\"stop\"") != NULL;
            if (write(c, reply, sizeof(reply) - 1) != (ssize_t)sizeof(reply) - 1)
                return 0;
            if (stop)
                return 1;
            size_t used = (size_t)(nl + 1 - buf);
            memmove(buf, nl + 1, len - used + 1);
            len -= used;
        }
        if (len == sizeof(buf) - 1)
            return 0; /* a line too long: drop the client */
    }
}

int main(int argc, char **argv)
{
    const char *ctl = NULL;
    if (argc < 2 || strcmp(argv[1], "run") != 0)
        return 64;
    for (int i = 2; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--control"))
            ctl = argv[i + 1];
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (!ctl || strlen(ctl) >= sizeof(a.sun_path)) {
        fprintf(stderr, "fakevmm: --control PATH missing or too long\n");
        return 64;
    }
    strcpy(a.sun_path, ctl);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0 || (unlink(ctl) < 0 && errno != ENOENT) || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        listen(s, 16) < 0) {
        fprintf(stderr, "fakevmm: control socket %s: %s\n", ctl, strerror(errno));
        return 65;
    }
    printf("fakevmm %d: control socket %s\n", (int)getpid(), ctl);
    fflush(stdout);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "fakevmm: accept: %s\n", strerror(errno));
            return 70;
        }
        int stop = serve(c);
        close(c);
        if (stop) {
            unlink(ctl);
            return 0;
        }
    }
}
