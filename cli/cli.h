/* ternctl: the operator's CLI over ternd's control API (docs/agent-api.md,
 * docs/ternctl.md). Split so that everything but the socket and the
 * terminal is pure and unit-tested:
 *
 *   args.c           command line -> struct cli_args (no I/O), size parsing,
 *                    usage text; cli_resolve_paths makes paths absolute
 *   request.c        struct cli_args -> the JSON request
 *   client.c         the unix-socket connection: one request line out,
 *                    bounded reply lines in, reply parsing, exit codes
 *   render.c         tables and key/value views of replies
 *   progress.c       live progress of migrations/evacuations, summaries
 *   cluster_certs.c  `cluster init-ca` / `cluster issue-cert` (local)
 *   commands.c       cli_main: runs one command end to end
 *   main.c           the program: wires stdout/stderr/terminal to cli_main */
#ifndef TERN_CLI_CLI_H
#define TERN_CLI_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../common/err.h"
#include "../ha/cluster_state.h" /* name, path and disk limits of the API */

#define CLI_DEFAULT_SOCKET "/run/tern/ternd.sock"
#define CLI_DEFAULT_TIMEOUT_S 30
#define CLI_MAX_TIMEOUT_S 86400
#define CLI_MAX_LINE (1024 * 1024) /* longest request line, without its newline */
/* Longest reply line: `status` of a cluster whose state is at its limit
 * (CL_STATE_MAX_BYTES charged) fits with room to spare. */
#define CLI_MAX_REPLY (256u << 20)
#define CLI_SOCKET_MAX 108         /* sizeof(sun_path) */
#define CLI_DEFAULT_CA_DAYS 3650
#define CLI_DEFAULT_CERT_DAYS 825
#define CLI_DEFAULT_CA_NAME "tern-cluster-ca"

/* Exit codes (also in --help and docs/ternctl.md). */
enum cli_exit {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILED = 1,      /* the agent refused, or the work failed */
    CLI_EXIT_USAGE = 2,       /* bad command line (or a file it names is missing) */
    CLI_EXIT_UNREACHABLE = 3, /* cannot reach the agent, or its reply makes no sense */
    CLI_EXIT_PARTIAL = 4,     /* evacuation left some VMs behind */
};

enum cli_cmd {
    CLI_CMD_NONE = 0,
    CLI_CMD_STATUS,
    CLI_CMD_VM_DEFINE,
    CLI_CMD_VM_START,
    CLI_CMD_VM_STOP,
    CLI_CMD_VM_UNDEFINE,
    CLI_CMD_VM_SHOW,
    CLI_CMD_VM_LIST,
    CLI_CMD_VM_MIGRATE,
    CLI_CMD_HOST_LIST,
    CLI_CMD_HOST_EVACUATE,
    CLI_CMD_HOST_ACTIVATE,
    CLI_CMD_HOST_REMOVE,
    CLI_CMD_HOST_FENCE,
    CLI_CMD_HOST_CONFIRM_FENCED,
    CLI_CMD_CLUSTER_INIT_CA,
    CLI_CMD_CLUSTER_ISSUE_CERT,
};

struct cli_disk {
    char path[CL_PATH_MAX];
    bool ro;
};

struct cli_args {
    /* Global options. */
    char socket[CLI_SOCKET_MAX]; /* --socket, else $TERN_SOCKET, else the default */
    bool json;                   /* --json */
    int timeout_s;               /* --timeout for requests that are not long work */
    bool help;                   /* -h/--help: print usage (of `cmd` if known) and exit 0 */
    bool version;                /* --version: print the version and exit 0 */

    enum cli_cmd cmd;
    /* Positional arguments, pointing into argv: the VM (vm ...), the host
     * (host evacuate/activate) or the directory (cluster ...). */
    const char *name;
    /* vm start --host, vm migrate --to, cluster issue-cert HOST. */
    const char *host;

    /* vm define */
    char kernel[CL_PATH_MAX];
    char initrd[CL_PATH_MAX]; /* "" = none */
    const char *cmdline;      /* NULL = none */
    uint64_t mem_mib;
    int vcpus;
    struct cli_disk disks[CL_MAX_DISKS];
    unsigned nr_disks;
    bool ha;
    int priority;
    const char *group;        /* --group, NULL = none */

    /* vm migrate / host evacuate: 0 leaves the agent's default. */
    int downtime_ms;
    int parallel;
    bool no_wait;

    /* cluster init-ca / issue-cert */
    bool force;
    const char *ca_name; /* --name, default CLI_DEFAULT_CA_NAME */
    int days;            /* --days, 0 = the default for the command */
};

/* ---- args.c ---- */

/* Parses a memory size into MiB: "2048" (MiB), "512M", "1G", "1.5G",
 * "524288K", "2T", with an optional "B"/"iB" ("1GiB"); case-insensitive;
 * binary units. The result must be a whole number of MiB, at least 1.
 * Errors say what was wrong and show an example. */
int cli_parse_size_mib(const char *s, uint64_t *mib, struct tern_err *err);

/* Parses the whole command line (argv[0] is the program name). Global
 * options (--socket P, --json, --timeout S, -h/--help, --version; also as --opt=V)
 * come before the command and are accepted after it too. env_socket is
 * $TERN_SOCKET (NULL or "" if unset). Pure: no file is looked at. Returns
 * 0, or -1 with a message for the user (a usage error). With -h/--help
 * anywhere, returns 0 with help set (cmd filled in as far as known). */
int cli_parse_args(int argc, char **argv, const char *env_socket, struct cli_args *a,
                   struct tern_err *err);

/* Makes --kernel/--initrd/--disk paths that are relative absolute with
 * realpath(3); a missing file is an error naming the option and the path.
 * Absolute paths are left alone (they may name shared storage this host
 * does not see). */
int cli_resolve_paths(struct cli_args *a, struct tern_err *err);

/* Prints the usage of `cmd` (CLI_CMD_NONE: of everything, with the global
 * options and exit codes). */
void cli_usage(FILE *out, enum cli_cmd cmd);

/* "vm migrate" and friends, for messages. */
const char *cli_cmd_name(enum cli_cmd cmd);

/* True for the commands that stream progress (vm migrate, host evacuate). */
bool cli_cmd_is_long(enum cli_cmd cmd);

/* ---- request.c ---- */

/* The request object for `a` (a new reference), or NULL for the local
 * commands (cluster ...), which send nothing. Paths are used as they are:
 * call cli_resolve_paths first. */
json_t *cli_build_request(const struct cli_args *a);

/* ---- client.c ---- */

/* Monotonic milliseconds; deadlines below are absolute values of it, and
 * a negative deadline means none. */
int64_t cli_now_ms(void);

struct cli_conn {
    int fd;
    char *buf;   /* bytes read; buf[0..drop) is the line returned last */
    size_t len;
    size_t cap;
    size_t drop;    /* dropped before the next line is looked for */
    size_t scanned; /* buf[drop..scanned) holds no newline */
    size_t max_line; /* longest reply: CLI_MAX_REPLY unless a test lowers it */
    char path[CLI_SOCKET_MAX];
};

/* Connects to the agent's socket, giving up at deadline_ms (negative: no
 * deadline). On failure the message is "cannot reach ternd at PATH:
 * <strerror>; is ternd running?", or says that no connection came before
 * the deadline (a ternd that is stopped or swamped, its listen queue
 * full). */
int cli_conn_open(struct cli_conn *c, const char *path, int64_t deadline_ms,
                  struct tern_err *err);

/* Wraps an already connected stream socket (tests use a socketpair). The
 * connection owns fd from now on. */
void cli_conn_init_fd(struct cli_conn *c, int fd);

/* Sends `req` as one line (with its newline), all of it before deadline. */
int cli_conn_send(struct cli_conn *c, const json_t *req, int64_t deadline_ms,
                  struct tern_err *err);

/* Returns the next line (without its newline, NUL-terminated) in *line,
 * valid until the next call. Fails on a line longer than max_line (nothing
 * more is read after that), on end of stream before a newline, on a
 * read error and when the deadline passes. */
int cli_conn_read_line(struct cli_conn *c, int64_t deadline_ms, char **line, size_t *len,
                       struct tern_err *err);

void cli_conn_close(struct cli_conn *c);

enum cli_reply_kind {
    CLI_REPLY_PROGRESS, /* {"progress":{...}}: body is the progress object */
    CLI_REPLY_OK,       /* {"ok":true,"result":{...}}: body is the result ({} if absent) */
    CLI_REPLY_ERROR,    /* {"ok":false,"error":{...}}: body is the error object */
};

struct cli_reply {
    enum cli_reply_kind kind;
    json_t *root;        /* the whole line, owned */
    json_t *body;        /* borrowed from root */
    const char *code;    /* CLI_REPLY_ERROR: error code ("failed" if the agent gave none) */
    const char *message; /* CLI_REPLY_ERROR: message for people */
};

/* Parses one reply line. Anything but the three shapes above (not JSON,
 * not an object, "ok" not a boolean, a progress that is not an object, an
 * error without a message) is malformed: -1 with err saying what was
 * wrong and quoting the start of the line. */
int cli_reply_parse(const char *line, size_t len, struct cli_reply *r, struct tern_err *err);
void cli_reply_clear(struct cli_reply *r);

/* Reads the next line and parses it (cli_conn_read_line + cli_reply_parse):
 * a progress line or the final ok/error; r is cleared by the caller. */
int cli_conn_next(struct cli_conn *c, int64_t deadline_ms, struct cli_reply *r,
                  struct tern_err *err);

/* What an evacuation that ended in an error did: its result object
 * ({"host","moved","failed"}) found next to the error ("result"), inside
 * it, or as the error object itself; NULL if the reply has none. */
const json_t *cli_reply_evacuation(const struct cli_reply *r);

/* The exit code for an error reply to `cmd`: CLI_EXIT_PARTIAL for a host
 * evacuate that ran but left VMs behind (code "failed" with its result),
 * else CLI_EXIT_FAILED (refused, or the work failed). */
int cli_exit_for_error(enum cli_cmd cmd, const struct cli_reply *r);

/* ---- render.c ---- */

struct cli_col {
    const char *title;
    size_t max_width; /* longer cells are cut, ending in "..."; 0 = no limit */
    bool right;       /* right-aligned (numbers) */
};

struct cli_table;

/* A table of `n` columns (the array must outlive the table). */
struct cli_table *cli_table_new(const struct cli_col *cols, size_t n);
/* Adds a row of n cells (NULL cells print as "-"). Returns 0 or -1 (out of memory). */
int cli_table_add(struct cli_table *t, const char *const *cells);
size_t cli_table_rows(const struct cli_table *t);
/* Prints the header and rows: columns two spaces apart, each as wide as
 * its widest cell (in characters, UTF-8 aware), no trailing blanks. */
void cli_table_print(const struct cli_table *t, FILE *out);
void cli_table_free(struct cli_table *t);

/* Copies src into dst cut to max_width characters (UTF-8 aware: never
 * splits a character); a cut string ends in "...". */
void cli_truncate(char *dst, size_t cap, const char *src, size_t max_width);

/* MiB for people: "512M", "4G", "1.5G". */
void cli_format_mib(char *buf, size_t len, uint64_t mib);

/* The status reply: a cluster line, then HOSTS, VMS and MIGRATIONS (the
 * last only when some are in flight). Missing fields print as "?". */
void cli_render_status(FILE *out, const json_t *result);
void cli_render_hosts(FILE *out, const json_t *hosts);
void cli_render_vms(FILE *out, const json_t *vms);
void cli_render_migrations(FILE *out, const json_t *migrations);
/* vm show: "key: value" lines, config and last migration included. */
void cli_render_vm(FILE *out, const json_t *vm);

/* ---- progress.c ---- */

/* Byte counts and rates for people, decimal like the agent's MB/s:
 * "812 B", "64.0 MB", "1.20 GB". */
void cli_format_bytes(char *buf, size_t len, double bytes);
/* "0.4 s", "12 s", "3m05s". */
void cli_format_seconds(char *buf, size_t len, double s);

/* One line for a PROGRESS object: phase (and round), sent, remaining,
 * bandwidth, dirty rate, predicted pause, ETA (remaining/bandwidth).
 * Missing fields are left out. */
void cli_format_progress(char *buf, size_t len, const json_t *progress);
/* An evacuation event: "VM x/y: NAME -> HOST | <migration progress>". */
void cli_format_evacuation(char *buf, size_t len, const json_t *event);
/* The summary of a migration RESULT: "migrated NAME from A to B in T s,
 * pause P ms (guest-observed G ms), R rounds, X sent"; for one that failed
 * or was cancelled, says so with the reason. */
void cli_format_migration_summary(char *buf, size_t len, const json_t *result);

struct cli_progress {
    FILE *out;
    bool tty;      /* one line, rewritten in place */
    int cols;      /* terminal width (lines are cut to fit), 0 = unknown */
    bool json;     /* print each event as a JSON line */
    bool evacuation;
    double last_print_s;
    char last_key[160]; /* vm + phase of the last printed line */
    bool printed;
    bool line_open;     /* a tty line is on screen */
};

/* Shows one progress event (the object inside {"progress":...}) at time
 * now_s (monotonic seconds). Not a terminal: a plain line for the first
 * event, when the VM or phase changes, or when a second has passed since
 * the last line. Terminal: rewrites the line in place. */
void cli_progress_event(struct cli_progress *p, const json_t *event, double now_s);
/* Clears a live line, so what follows starts on a clean line. */
void cli_progress_end(struct cli_progress *p);

/* ---- cluster_certs.c ---- */

/* Creates the cluster CA in dir (dir/ca.pem, dir/ca-key.pem). An existing
 * CA is an error unless `force`: then the old files are kept as
 * ca.pem.old/ca-key.pem.old and the new CA takes their place. */
int cli_cluster_init_ca(const char *dir, const char *name, int days, bool force,
                        struct tern_err *err);

/* Issues a certificate for `host` from dir's CA into dir/host/ (ca.pem,
 * cert.pem, key.pem 0600): a tern TLS directory. out_dir receives the
 * directory written. */
int cli_cluster_issue_cert(const char *dir, const char *host, int days, char *out_dir,
                           size_t out_len, struct tern_err *err);

/* ---- commands.c ---- */

struct cli_io {
    FILE *out;              /* results, progress */
    FILE *err;              /* "ternctl: message" */
    bool tty;               /* out is a terminal: live progress line */
    int cols;               /* its width, 0 if unknown */
    const char *env_socket; /* $TERN_SOCKET */
};

/* Runs one ternctl command line; returns the exit code (enum cli_exit). */
int cli_main(int argc, char **argv, const struct cli_io *io);

#endif
