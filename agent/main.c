/* ternd: the node agent (docs/ternd.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/service_notify.h"
#include "../common/version.h"
#include "agent.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: ternd [--config PATH] [--version]\n"
               "  Runs the Tern node agent in the foreground: joins the corosync cluster,\n"
               "  serves the control API (ternctl) and supervises this host's VMs.\n"
               "  --config PATH   configuration file (default %s)\n"
               "  --version       print the version and exit\n"
               "Exit status: 0 stopped by a signal, 1 runtime failure, 2 usage, 78 bad config,\n"
               "state refused, another ternd running, corosync not reachable at start, or this\n"
               "node cannot be the host its config names.\n",
            TERND_DEFAULT_CONFIG);
}

int main(int argc, char **argv)
{
    const char *config = TERND_DEFAULT_CONFIG;
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("ternd %s\n", tern_version());
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    setvbuf(stderr, NULL, _IOLBF, 0);
    static struct agent a; /* large: keep it off the stack */
    struct tern_err err;
    if (agent_init(&a, config, &err) < 0) {
        fprintf(stderr, "ternd: %s\n", err.msg);
        agent_destroy(&a);
        return 78;
    }
    /* systemd's Type=notify: up once the control socket answers and corosync
     * is joined. The VMMs must not inherit the variable. */
    if (service_notify("READY=1", &err) < 0)
        fprintf(stderr, "ternd: %s\n", err.msg);
    unsetenv("NOTIFY_SOCKET");
    int rc = agent_run(&a, &err);
    if (rc < 0)
        fprintf(stderr, "ternd: %s\n", err.msg);
    int status = a.exit_status ? a.exit_status : rc < 0 ? 1 : 0;
    agent_destroy(&a);
    return status;
}
