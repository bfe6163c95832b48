/* ternctl's command line (cli/cli.h): pure parsing, size parsing, usage. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../common/api_limits.h" /* what the agent accepts: the same ranges */
#include "../common/text.h"

#define MAX_DAYS 36500

struct cmd_spec {
    enum cli_cmd cmd;
    const char *group; /* "vm", "host", "cluster"; NULL for status */
    const char *verb;
    int positionals;   /* how many positional arguments it takes */
    const char *synopsis;
    const char *help;
};

static const struct cmd_spec commands[] = {
    {CLI_CMD_STATUS, NULL, "status", 0, "status", "hosts, quorum, VMs and migrations at a glance"},
    {CLI_CMD_VM_DEFINE, "vm", "define", 1,
     "vm define NAME --kernel K --mem SIZE --vcpus N [--initrd F] [--disk PATH[,ro]]...\n"
     "                [--cmdline S] [--ha] [--priority N] [--group G]",
     "defines a VM (stopped); SIZE is 512M, 1G, 1.5G or MiB (2048); relative\n"
     "paths are made absolute; up to 4 disks; --ha restarts it elsewhere once its\n"
     "host is fenced after it died, higher --priority is placed first; two VMs of\n"
     "one --group share a host only when no other host fits"},
    {CLI_CMD_VM_START, "vm", "start", 1, "vm start NAME [--host H]",
     "starts the VM (on H, or where it fits best) and waits until it runs"},
    {CLI_CMD_VM_STOP, "vm", "stop", 1, "vm stop NAME", "stops the VM and waits until it has stopped"},
    {CLI_CMD_VM_UNDEFINE, "vm", "undefine", 1, "vm undefine NAME", "forgets a stopped VM"},
    {CLI_CMD_VM_SHOW, "vm", "show", 1, "vm show NAME", "the VM's state, configuration and last migration"},
    {CLI_CMD_VM_LIST, "vm", "list", 0, "vm list", "every VM as a table"},
    {CLI_CMD_VM_MIGRATE, "vm", "migrate", 1, "vm migrate NAME --to HOST [--downtime-ms N] [--no-wait]",
     "live-migrates the VM to HOST, showing progress; --downtime-ms is the\n"
     "pause budget (agent default 50); --no-wait prints the migration id and returns"},
    {CLI_CMD_HOST_LIST, "host", "list", 0, "host list", "every host as a table"},
    {CLI_CMD_HOST_EVACUATE, "host", "evacuate", 1, "host evacuate HOST [--parallel N] [--no-wait]",
     "puts HOST in maintenance and migrates its VMs away, N at a time;\n"
     "exit code 4 if some VMs could not be moved"},
    {CLI_CMD_HOST_ACTIVATE, "host", "activate", 1, "host activate HOST",
     "takes HOST out of maintenance: VMs may be placed on it again"},
    {CLI_CMD_HOST_REMOVE, "host", "remove", 1, "host remove HOST",
     "forgets HOST for good (only while it is not in the cluster): its name is\n"
     "free for another node, and VMs it still owned are marked crashed. Only for\n"
     "a host that is truly gone (powered off, reinstalled): its VMs must not run"},
    {CLI_CMD_HOST_FENCE, "host", "fence", 1, "host fence HOST",
     "fences HOST now (powers it off through its fence devices, level by level)\n"
     "and waits for the result; its VMs are then released and its HA VMs restarted\n"
     "elsewhere"},
    {CLI_CMD_HOST_CONFIRM_FENCED, "host", "confirm-fenced", 1, "host confirm-fenced HOST",
     "vouches that HOST is off (you checked: powered off, unplugged), when no fence\n"
     "device could do it: its VMs are released and its HA VMs restarted elsewhere.\n"
     "Wrong here means a VM running twice: be sure"},
    {CLI_CMD_CLUSTER_INIT_CA, "cluster", "init-ca", 1, "cluster init-ca DIR [--name CN] [--days N] [--force]",
     "local, no agent: creates the cluster CA, DIR/ca.pem and DIR/ca-key.pem\n"
     "(default 3650 days); refuses to replace an existing CA unless --force\n"
     "(the old one is kept as ca.pem.old / ca-key.pem.old)"},
    {CLI_CMD_CLUSTER_ISSUE_CERT, "cluster", "issue-cert", 2, "cluster issue-cert DIR HOST [--days N]",
     "local, no agent: writes DIR/HOST/{ca.pem,cert.pem,key.pem}, HOST's TLS\n"
     "directory signed by DIR's CA (default 825 days); copy it to HOST as\n"
     "ternd's tls_dir"},
};

#define NR_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static const struct cmd_spec *spec_of(enum cli_cmd cmd)
{
    for (size_t i = 0; i < NR_COMMANDS; i++)
        if (commands[i].cmd == cmd)
            return &commands[i];
    return NULL;
}

const char *cli_cmd_name(enum cli_cmd cmd)
{
    static char names[NR_COMMANDS][32];
    for (size_t i = 0; i < NR_COMMANDS; i++) {
        if (commands[i].cmd != cmd)
            continue;
        if (!commands[i].group)
            return commands[i].verb;
        if (!names[i][0])
            snprintf(names[i], sizeof(names[i]), "%s %s", commands[i].group, commands[i].verb);
        return names[i];
    }
    return "ternctl";
}

bool cli_cmd_is_long(enum cli_cmd cmd)
{
    return cmd == CLI_CMD_VM_MIGRATE || cmd == CLI_CMD_HOST_EVACUATE || cmd == CLI_CMD_HOST_FENCE;
}

static const char exit_codes_text[] =
    "Exit codes:\n"
    "    0  done\n"
    "    1  the agent refused the request or the work failed (message on stderr)\n"
    "    2  usage error (bad option or value, missing file)\n"
    "    3  cannot reach ternd, or its reply was malformed or late\n"
    "    4  partial failure: an evacuation left some VMs on the host\n"
    "  130  interrupted (Ctrl-C); work already started in the cluster goes on\n";

void cli_usage(FILE *out, enum cli_cmd cmd)
{
    const struct cmd_spec *s = spec_of(cmd);
    if (s) {
        fprintf(out, "usage: ternctl [GLOBAL OPTIONS] %s\n\n%s\n\nSee 'ternctl --help' for the global options and exit codes.\n",
                s->synopsis, s->help);
        return;
    }
    fprintf(out, "usage: ternctl [GLOBAL OPTIONS] COMMAND [ARGS]\n\n"
                 "The operator's CLI for a Tern cluster; talks to the local ternd.\n\n"
                 "Commands:\n");
    for (size_t i = 0; i < NR_COMMANDS; i++)
        fprintf(out, "  ternctl %s\n", commands[i].synopsis);
    fprintf(out,
            "\nGlobal options (before the command, or after it):\n"
            "  --socket PATH   ternd's control socket (default $TERN_SOCKET, else %s)\n"
            "  --json          print results as one JSON object; progress as JSON lines\n"
            "  --timeout SEC   how long to wait for ternd: connecting and its reply (a\n"
            "                  migration or evacuation waits for its work) (default %d)\n"
            "  -h, --help      this text; 'ternctl COMMAND --help' for one command\n"
            "  --version       print the version and exit\n\n"
            "%s",
            CLI_DEFAULT_SOCKET, CLI_DEFAULT_TIMEOUT_S, exit_codes_text);
}

/* ---- values ---- */

int cli_parse_size_mib(const char *s, uint64_t *mib, struct tern_err *err)
{
    static const char example[] = "expected e.g. 512M, 1G, 1.5G or 2048 (MiB)";
    if (!s || !*s)
        return tern_err_set(err, "empty size; %s", example);
    const char *p = s;
    unsigned __int128 num = 0; /* the digits, decimal point removed */
    unsigned frac_digits = 0;
    bool seen_digit = false, seen_point = false;
    for (; *p; p++) {
        if (*p == '.') {
            if (seen_point)
                return tern_err_set(err, "invalid size '%s'; %s", s, example);
            seen_point = true;
            continue;
        }
        if (!isdigit((unsigned char)*p))
            break;
        seen_digit = true;
        if (num > (unsigned __int128)UINT64_MAX)
            return tern_err_set(err, "size '%s' is too large", s);
        num = num * 10 + (unsigned)(*p - '0');
        if (seen_point && ++frac_digits > 6)
            return tern_err_set(err, "invalid size '%s': at most 6 decimals", s);
    }
    if (!seen_digit)
        return tern_err_set(err, "invalid size '%s'; %s", s, example);
    /* Unit, in KiB: bare numbers are MiB. */
    uint64_t unit_kib = 1024;
    if (*p) {
        switch (tolower((unsigned char)*p)) {
        case 'k': unit_kib = 1; break;
        case 'm': unit_kib = 1024; break;
        case 'g': unit_kib = 1024ULL * 1024; break;
        case 't': unit_kib = 1024ULL * 1024 * 1024; break;
        default:
            return tern_err_set(err, "invalid size suffix in '%s'; use K, M, G or T", s);
        }
        p++;
        if ((p[0] == 'i' || p[0] == 'I') && (p[1] == 'b' || p[1] == 'B'))
            p += 2;
        else if (p[0] == 'b' || p[0] == 'B')
            p++;
        if (*p)
            return tern_err_set(err, "invalid size '%s': trailing characters", s);
    }
    unsigned __int128 scale = 1;
    for (unsigned i = 0; i < frac_digits; i++)
        scale *= 10;
    unsigned __int128 kib_times_scale = num * unit_kib;
    if (kib_times_scale % scale)
        return tern_err_set(err, "size '%s' is not a whole number of KiB", s);
    unsigned __int128 kib = kib_times_scale / scale;
    if (kib % 1024)
        return tern_err_set(err, "size '%s' is not a whole number of MiB", s);
    unsigned __int128 m = kib / 1024;
    if (m == 0)
        return tern_err_set(err, "size '%s' is zero; %s", s, example);
    if (m > (unsigned __int128)(UINT64_MAX >> 20))
        return tern_err_set(err, "size '%s' is too large", s);
    *mib = (uint64_t)m;
    return 0;
}

static int parse_int(const char *opt, const char *s, long min, long max, int *out,
                     struct tern_err *err)
{
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno == ERANGE || isspace((unsigned char)*s))
        return tern_err_set(err, "%s needs a whole number, not '%s'", opt, s);
    if (v < min || v > max)
        return tern_err_set(err, "%s must be %ld..%ld, not %ld", opt, min, max, v);
    *out = (int)v;
    return 0;
}

/* Cluster host and VM names: [A-Za-z0-9._-], 1..CL_NAME_MAX-1 characters. */
static int check_name(const char *what, const char *s, struct tern_err *err)
{
    size_t n = strlen(s);
    if (n == 0 || n >= CL_NAME_MAX)
        return tern_err_set(err, "%s name must be 1..%d characters: '%s'", what, CL_NAME_MAX - 1, s);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!isalnum(ch) && ch != '.' && ch != '-' && ch != '_')
            return tern_err_set(err, "%s name '%s' may only hold letters, digits, '.', '-' and '_'",
                                what, s);
    }
    return 0;
}

static int copy_path(const char *opt, const char *s, char *dst, struct tern_err *err)
{
    if (!*s)
        return tern_err_set(err, "%s needs a path", opt);
    if (strlen(s) >= CL_PATH_MAX)
        return tern_err_set(err, "%s path is longer than %d bytes", opt, CL_PATH_MAX - 1);
    /* The cluster refuses them too (ha/state_json.c): logs and terminals. */
    const char *ctl = text_find_control(s);
    if (ctl) {
        char shown[CL_PATH_MAX * 4];
        text_escape(shown, sizeof(shown), s, 0, NULL);
        return tern_err_set(err, "%s path '%s' holds a control character at byte %zu; paths "
                                 "may not hold newlines, tabs or escapes", opt, shown,
                            (size_t)(ctl - s));
    }
    strcpy(dst, s);
    return 0;
}

/* "PATH" or "PATH,ro" / "PATH,rw". */
static int parse_disk(const char *s, struct cli_disk *d, struct tern_err *err)
{
    char tmp[CL_PATH_MAX + 8];
    if (strlen(s) >= sizeof(tmp))
        return tern_err_set(err, "--disk path is longer than %d bytes", CL_PATH_MAX - 1);
    strcpy(tmp, s);
    d->ro = false;
    char *comma = strrchr(tmp, ',');
    if (comma) {
        if (!strcmp(comma + 1, "ro"))
            d->ro = true;
        else if (strcmp(comma + 1, "rw"))
            return tern_err_set(err, "--disk '%s': after the comma only 'ro' or 'rw'", s);
        *comma = '\0';
    }
    return copy_path("--disk", tmp, d->path, err);
}

/* ---- the parser ---- */

enum opt_kind {
    OPT_FLAG,   /* bool, no value */
    OPT_INT,    /* int in [min, max] */
    OPT_SIZE,   /* uint64_t MiB (cli_parse_size_mib) */
    OPT_PATH,   /* char[CL_PATH_MAX] */
    OPT_TEXT,   /* const char * into argv, at most max bytes */
    OPT_NAME,   /* const char * into argv, a host/VM/CA name */
    OPT_DISK,   /* one more disks[] entry; may repeat */
    OPT_SOCKET, /* char socket[] */
    OPT_HELP,
};

struct opt_spec {
    enum cli_cmd cmd; /* CLI_CMD_NONE: a global option */
    const char *name;
    enum opt_kind kind;
    long min, max;
    size_t off; /* of the field in struct cli_args */
};

#define F(field) offsetof(struct cli_args, field)

static const struct opt_spec options[] = {
    {CLI_CMD_NONE, "--socket", OPT_SOCKET, 0, 0, F(socket)},
    {CLI_CMD_NONE, "--json", OPT_FLAG, 0, 0, F(json)},
    {CLI_CMD_NONE, "--timeout", OPT_INT, 1, CLI_MAX_TIMEOUT_S, F(timeout_s)},
    {CLI_CMD_NONE, "--help", OPT_HELP, 0, 0, F(help)},
    {CLI_CMD_NONE, "-h", OPT_HELP, 0, 0, F(help)},
    {CLI_CMD_NONE, "--version", OPT_FLAG, 0, 0, F(version)},
    {CLI_CMD_VM_DEFINE, "--kernel", OPT_PATH, 0, 0, F(kernel)},
    {CLI_CMD_VM_DEFINE, "--initrd", OPT_PATH, 0, 0, F(initrd)},
    {CLI_CMD_VM_DEFINE, "--mem", OPT_SIZE, 0, 0, F(mem_mib)},
    {CLI_CMD_VM_DEFINE, "--vcpus", OPT_INT, TERN_VM_VCPUS_MIN, TERN_VM_VCPUS_MAX, F(vcpus)},
    {CLI_CMD_VM_DEFINE, "--cmdline", OPT_TEXT, 0, CL_CMDLINE_MAX - 1, F(cmdline)},
    {CLI_CMD_VM_DEFINE, "--disk", OPT_DISK, 0, 0, 0},
    {CLI_CMD_VM_DEFINE, "--ha", OPT_FLAG, 0, 0, F(ha)},
    {CLI_CMD_VM_DEFINE, "--priority", OPT_INT, TERN_PRIORITY_MIN, TERN_PRIORITY_MAX, F(priority)},
    {CLI_CMD_VM_DEFINE, "--group", OPT_NAME, 0, 0, F(group)},
    {CLI_CMD_VM_START, "--host", OPT_NAME, 0, 0, F(host)},
    {CLI_CMD_VM_MIGRATE, "--to", OPT_NAME, 0, 0, F(host)},
    {CLI_CMD_VM_MIGRATE, "--downtime-ms", OPT_INT, TERN_DOWNTIME_MS_MIN, TERN_DOWNTIME_MS_MAX,
     F(downtime_ms)},
    {CLI_CMD_VM_MIGRATE, "--no-wait", OPT_FLAG, 0, 0, F(no_wait)},
    {CLI_CMD_HOST_EVACUATE, "--parallel", OPT_INT, TERN_PARALLEL_MIN, TERN_PARALLEL_MAX,
     F(parallel)},
    {CLI_CMD_HOST_EVACUATE, "--no-wait", OPT_FLAG, 0, 0, F(no_wait)},
    {CLI_CMD_CLUSTER_INIT_CA, "--force", OPT_FLAG, 0, 0, F(force)},
    {CLI_CMD_CLUSTER_INIT_CA, "--name", OPT_NAME, 0, 0, F(ca_name)},
    {CLI_CMD_CLUSTER_INIT_CA, "--days", OPT_INT, 1, MAX_DAYS, F(days)},
    {CLI_CMD_CLUSTER_ISSUE_CERT, "--days", OPT_INT, 1, MAX_DAYS, F(days)},
};

#undef F
#define NR_OPTIONS (sizeof(options) / sizeof(options[0]))

struct parser {
    int argc;
    char **argv;
    int i;
    struct cli_args *a;
    struct tern_err *err;
    uint64_t seen; /* bit per options[] entry: options other than --disk may not repeat */
};

/* "--opt=value" -> the length of "--opt". */
static size_t opt_name_len(const char *arg)
{
    const char *eq = strchr(arg, '=');
    return eq ? (size_t)(eq - arg) : strlen(arg);
}

static const struct opt_spec *find_option(enum cli_cmd cmd, const char *arg)
{
    size_t n = opt_name_len(arg);
    for (size_t k = 0; k < NR_OPTIONS; k++)
        if (options[k].cmd == cmd && strlen(options[k].name) == n &&
            !strncmp(arg, options[k].name, n))
            return &options[k];
    return NULL;
}

/* Applies the option at argv[ps->i] (taking its value from after '=' or
 * from the next argument). */
static int apply_option(struct parser *ps, const struct opt_spec *o)
{
    struct cli_args *a = ps->a;
    struct tern_err *err = ps->err;
    void *field = (char *)a + o->off;
    const char *arg = ps->argv[ps->i];
    const char *eq = strchr(arg, '=');
    const char *v = NULL;
    unsigned bit = (unsigned)(o - options);
    if (o->kind != OPT_DISK && o->kind != OPT_HELP) {
        if (ps->seen & (1ULL << bit))
            return tern_err_set(err, "%s given twice", o->name);
        ps->seen |= 1ULL << bit;
    }
    if (o->kind == OPT_FLAG || o->kind == OPT_HELP) {
        if (eq)
            return tern_err_set(err, "%s takes no value", o->name);
        *(bool *)field = true;
        return 0;
    }
    if (eq) {
        v = eq + 1;
    } else {
        if (ps->i + 1 >= ps->argc)
            return tern_err_set(err, "%s needs a value", o->name);
        v = ps->argv[++ps->i];
    }
    switch (o->kind) {
    case OPT_INT:
        return parse_int(o->name, v, o->min, o->max, (int *)field, err);
    case OPT_SIZE: {
        uint64_t *mib = field;
        if (cli_parse_size_mib(v, mib, err) < 0)
            return tern_err_prefix(err, "%s", o->name);
        if (*mib < TERN_VM_MEM_MIN_MIB || *mib > TERN_VM_MEM_MAX_MIB) {
            char lo[16], hi[16];
            cli_format_mib(lo, sizeof(lo), TERN_VM_MEM_MIN_MIB);
            cli_format_mib(hi, sizeof(hi), TERN_VM_MEM_MAX_MIB);
            return tern_err_set(err, "%s must be %s..%s, not %s", o->name, lo, hi, v);
        }
        return 0;
    }
    case OPT_PATH:
        return copy_path(o->name, v, (char *)field, err);
    case OPT_TEXT:
        if (strlen(v) > (size_t)o->max)
            return tern_err_set(err, "%s is longer than %ld bytes", o->name, o->max);
        *(const char **)field = v;
        return 0;
    case OPT_NAME:
        if (check_name(o->name, v, err) < 0)
            return -1;
        *(const char **)field = v;
        return 0;
    case OPT_DISK:
        if (a->nr_disks >= CL_MAX_DISKS)
            return tern_err_set(err, "at most %d --disk options", CL_MAX_DISKS);
        return parse_disk(v, &a->disks[a->nr_disks++], err);
    case OPT_SOCKET:
        if (!*v || strlen(v) >= sizeof(a->socket))
            return tern_err_set(err, "--socket needs a path of 1..%zu bytes", sizeof(a->socket) - 1);
        strcpy(a->socket, v);
        return 0;
    default:
        return tern_err_set(err, "internal: option %s has no handler", o->name);
    }
}

/* The command word(s) at ps->i. */
static int parse_command(struct parser *ps)
{
    const char *w = ps->argv[ps->i];
    bool group = false;
    for (size_t k = 0; k < NR_COMMANDS; k++) {
        const struct cmd_spec *s = &commands[k];
        if (!s->group) {
            if (!strcmp(w, s->verb)) {
                ps->a->cmd = s->cmd;
                ps->i++;
                return 0;
            }
            continue;
        }
        if (strcmp(w, s->group))
            continue;
        group = true;
        if (ps->i + 1 < ps->argc && !strcmp(ps->argv[ps->i + 1], s->verb)) {
            ps->a->cmd = s->cmd;
            ps->i += 2;
            return 0;
        }
    }
    if (!group)
        return tern_err_set(ps->err, "unknown command '%s'", w);
    /* A known group with a missing or unknown verb: list the verbs. */
    char verbs[200] = "";
    for (size_t k = 0; k < NR_COMMANDS; k++) {
        if (commands[k].group && !strcmp(commands[k].group, w)) {
            size_t l = strlen(verbs);
            snprintf(verbs + l, sizeof(verbs) - l, "%s%s", l ? ", " : "", commands[k].verb);
        }
    }
    if (ps->i + 1 >= ps->argc || ps->argv[ps->i + 1][0] == '-')
        return tern_err_set(ps->err, "'%s' needs a subcommand: %s", w, verbs);
    return tern_err_set(ps->err, "unknown command '%s %s' (%s has: %s)", w, ps->argv[ps->i + 1], w,
                        verbs);
}

static int check_required(struct cli_args *a, const char **pos, int npos, struct tern_err *err)
{
    const struct cmd_spec *s = spec_of(a->cmd);
    if (npos < s->positionals) {
        const char *missing;
        switch (a->cmd) {
        case CLI_CMD_HOST_EVACUATE: case CLI_CMD_HOST_ACTIVATE: case CLI_CMD_HOST_REMOVE:
        case CLI_CMD_HOST_FENCE: case CLI_CMD_HOST_CONFIRM_FENCED:
            missing = "a HOST";
            break;
        case CLI_CMD_CLUSTER_INIT_CA: missing = "a DIR"; break;
        case CLI_CMD_CLUSTER_ISSUE_CERT: missing = npos == 0 ? "a DIR and a HOST" : "a HOST"; break;
        default: missing = "a VM NAME"; break;
        }
        return tern_err_set(err, "%s needs %s (usage: ternctl %s)", cli_cmd_name(a->cmd), missing,
                            s->synopsis);
    }
    if (npos > s->positionals)
        return tern_err_set(err, "%s: unexpected argument '%s'", cli_cmd_name(a->cmd),
                            pos[s->positionals]);
    if (s->positionals >= 1)
        a->name = pos[0];
    if (s->positionals >= 2)
        a->host = pos[1];
    switch (a->cmd) {
    case CLI_CMD_VM_DEFINE:
        if (!a->kernel[0])
            return tern_err_set(err, "vm define needs --kernel");
        if (!a->mem_mib)
            return tern_err_set(err, "vm define needs --mem (e.g. --mem 1G)");
        if (!a->vcpus)
            return tern_err_set(err, "vm define needs --vcpus (e.g. --vcpus 2)");
        /* fall through */
    case CLI_CMD_VM_START: case CLI_CMD_VM_STOP: case CLI_CMD_VM_UNDEFINE:
    case CLI_CMD_VM_SHOW:
        return check_name("VM", a->name, err);
    case CLI_CMD_VM_MIGRATE:
        if (!a->host)
            return tern_err_set(err, "vm migrate needs --to HOST");
        return check_name("VM", a->name, err);
    case CLI_CMD_HOST_EVACUATE: case CLI_CMD_HOST_ACTIVATE: case CLI_CMD_HOST_REMOVE:
    case CLI_CMD_HOST_FENCE: case CLI_CMD_HOST_CONFIRM_FENCED:
        return check_name("host", a->name, err);
    case CLI_CMD_CLUSTER_INIT_CA: case CLI_CMD_CLUSTER_ISSUE_CERT:
        if (!*a->name)
            return tern_err_set(err, "%s needs a directory", cli_cmd_name(a->cmd));
        if (a->cmd == CLI_CMD_CLUSTER_ISSUE_CERT &&
            (!*a->host || strchr(a->host, '/') || !strcmp(a->host, ".") || !strcmp(a->host, "..")))
            return tern_err_set(err, "issue-cert needs a host name, not '%s'", a->host);
        return 0;
    default:
        return 0;
    }
}

static bool wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            return false;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            return true;
    }
    return false;
}

int cli_parse_args(int argc, char **argv, const char *env_socket, struct cli_args *a,
                   struct tern_err *err)
{
    memset(a, 0, sizeof(*a));
    a->timeout_s = CLI_DEFAULT_TIMEOUT_S;
    a->ca_name = CLI_DEFAULT_CA_NAME;
    struct parser ps = {.argc = argc, .argv = argv, .i = 1, .a = a, .err = err};
    /* With -h anywhere, help wins over every other complaint. */
    bool help = wants_help(argc, argv);
    _Static_assert(NR_OPTIONS <= 64, "one bit per option in parser.seen");
    int rc = -1;
    const char *pos[4];
    int npos = 0;
    bool opts_done = false;

    for (; ps.i < argc; ps.i++) {
        const char *arg = argv[ps.i];
        if (arg[0] != '-' || !arg[1])
            break;
        const struct opt_spec *o = find_option(CLI_CMD_NONE, arg);
        if (!o) {
            tern_err_set(err, "unknown option '%.*s' before the command", (int)opt_name_len(arg),
                         arg);
            goto out;
        }
        if (apply_option(&ps, o) < 0)
            goto out;
    }
    if (ps.i >= argc) {
        if (help || a->version) {
            rc = 0;
            goto out;
        }
        tern_err_set(err, "no command given");
        goto out;
    }
    if (parse_command(&ps) < 0)
        goto out;
    for (; ps.i < argc; ps.i++) {
        const char *arg = argv[ps.i];
        if (!opts_done && !strcmp(arg, "--")) {
            opts_done = true;
            continue;
        }
        if (!opts_done && arg[0] == '-' && arg[1]) {
            const struct opt_spec *o = find_option(CLI_CMD_NONE, arg);
            if (!o)
                o = find_option(a->cmd, arg);
            if (!o) {
                tern_err_set(err, "%s does not take option '%.*s'", cli_cmd_name(a->cmd),
                             (int)opt_name_len(arg), arg);
                goto out;
            }
            if (apply_option(&ps, o) < 0)
                goto out;
            continue;
        }
        if (npos < (int)(sizeof(pos) / sizeof(pos[0])))
            pos[npos] = arg;
        npos++;
    }
    if (npos > (int)(sizeof(pos) / sizeof(pos[0])))
        npos = (int)(sizeof(pos) / sizeof(pos[0]));
    if (!help && check_required(a, pos, npos, err) < 0)
        goto out;
    rc = 0;
out:
    if (help) {
        a->help = true;
        rc = 0;
    }
    if (!a->socket[0]) {
        const char *s = env_socket && *env_socket ? env_socket : CLI_DEFAULT_SOCKET;
        if (strlen(s) >= sizeof(a->socket)) {
            if (rc == 0 && !help)
                rc = tern_err_set(err, "TERN_SOCKET is longer than %zu bytes", sizeof(a->socket) - 1);
        } else {
            strcpy(a->socket, s);
        }
    }
    if (!a->days)
        a->days = a->cmd == CLI_CMD_CLUSTER_INIT_CA ? CLI_DEFAULT_CA_DAYS : CLI_DEFAULT_CERT_DAYS;
    return rc;
}

static int resolve_one(const char *opt, char *path, struct tern_err *err)
{
    if (path[0] == '/' || !path[0])
        return 0;
    char *abs = realpath(path, NULL);
    if (!abs)
        return tern_err_errno(err, errno, "%s %s", opt, path);
    int rc = 0;
    if (strlen(abs) >= CL_PATH_MAX)
        rc = tern_err_set(err, "%s %s: absolute path %s is longer than %d bytes", opt, path, abs,
                          CL_PATH_MAX - 1);
    else
        strcpy(path, abs);
    free(abs);
    return rc;
}

int cli_resolve_paths(struct cli_args *a, struct tern_err *err)
{
    if (a->cmd != CLI_CMD_VM_DEFINE)
        return 0;
    if (resolve_one("--kernel", a->kernel, err) < 0 || resolve_one("--initrd", a->initrd, err) < 0)
        return -1;
    for (unsigned i = 0; i < a->nr_disks; i++)
        if (resolve_one("--disk", a->disks[i].path, err) < 0)
            return -1;
    return 0;
}
