/* ternctl: the operator's CLI over ternd's control API (docs/ternctl.md).
 * Everything but wiring up the terminal lives in the library (cli/cli.h). */
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cli.h"

static bool out_is_tty;

/* Ctrl-C while waiting: the agent keeps going (a client that leaves does
 * not stop a migration), so say so, and leave a clean line behind a live
 * progress line. Only async-signal-safe calls here. */
static void on_interrupt(int sig)
{
    static const char clear[] = "\r\033[K";
    static const char msg[] =
        "ternctl: interrupted; work the cluster already started goes on (see 'ternctl status')\n";
    (void)sig;
    if (out_is_tty && write(STDOUT_FILENO, clear, sizeof(clear) - 1) < 0) {
        /* nothing more to do about it */
    }
    if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0) {
        /* likewise */
    }
    _exit(130);
}

int main(int argc, char **argv)
{
    struct cli_io io = {
        .out = stdout,
        .err = stderr,
        .tty = isatty(STDOUT_FILENO) == 1,
        .env_socket = getenv("TERN_SOCKET"),
    };
    struct winsize ws;
    if (io.tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0)
        io.cols = ws.ws_col;
    out_is_tty = io.tty;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) < 0)
        return CLI_EXIT_FAILED; /* cannot happen for SIGINT; do not run half set up */
    int rc = cli_main(argc, argv, &io);
    if (fflush(stdout) != 0 && rc == CLI_EXIT_OK)
        rc = CLI_EXIT_FAILED; /* e.g. stdout on a full disk: do not claim success */
    return rc;
}
