/* ternctl: one command line, end to end (cli_main). */
#include "cli.h"

#include "../common/text.h"
#include "../common/version.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static void print_json(FILE *out, const json_t *j);

/* "ternctl: MESSAGE" on stderr. Messages carry the agent's words, names
 * and paths from configurations and VMM logs: control characters are
 * escaped (common/text.h), newlines kept (a VMM log's tail spans lines).
 * With json_code (--json), {"error":{"code":json_code,"message":MESSAGE}}
 * goes to stdout first. Returns exit_code. */
static int vfail(const struct cli_io *io, const char *json_code, int exit_code, const char *fmt,
                 va_list ap) __attribute__((format(printf, 4, 0)));
static int vfail(const struct cli_io *io, const char *json_code, int exit_code, const char *fmt,
                 va_list ap)
{
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    const char *text = msg ? msg : "(out of memory formatting a message)";
    if (json_code) {
        json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", json_code, "message", text);
        if (!j) {
            /* Not UTF-8 (a path typed in another encoding): escaped, it is. */
            char safe[TERN_ERR_MAX * 4];
            text_escape(safe, sizeof(safe), text, TEXT_KEEP_NEWLINES, NULL);
            j = json_pack("{s:{s:s, s:s}}", "error", "code", json_code, "message", safe);
        }
        if (j)
            print_json(io->out, j);
        json_decref(j);
        fflush(io->out);
    }
    fputs("ternctl: ", io->err);
    text_fputs(text, io->err, TEXT_KEEP_NEWLINES);
    fputc('\n', io->err);
    free(msg);
    fflush(io->err);
    return exit_code;
}

/* An error with the message on stderr only (the JSON, if any, is out). */
static int fail(const struct cli_io *io, int exit_code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(const struct cli_io *io, int exit_code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(io, NULL, exit_code, fmt, ap);
    va_end(ap);
    return exit_code;
}

/* ternctl's own errors, which no agent reply describes: with --json also
 * as {"error":{"code":CODE,"message":...}} on stdout. CODE: "usage" (exit
 * 2), "unreachable" (exit 3), "failed" (a local command), "internal". */
static int fail_own(const struct cli_io *io, bool json, const char *code, int exit_code,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int fail_own(const struct cli_io *io, bool json, const char *code, int exit_code,
                    const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(io, json ? code : NULL, exit_code, fmt, ap);
    va_end(ap);
    return exit_code;
}

static void print_json(FILE *out, const json_t *j)
{
    /* ASCII only: nothing in it can be a terminal control (JSON escapes
     * C0; \u escapes the rest). */
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    if (s) {
        fprintf(out, "%s\n", s);
        free(s);
    }
}

static const char *jstr(const json_t *o, const char *key, const char *def)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s && s[0] ? s : def;
}

/* ---- local commands ---- */

static int run_cluster(const struct cli_args *a, const struct cli_io *io)
{
    struct tern_err err = {0};
    if (a->cmd == CLI_CMD_CLUSTER_INIT_CA) {
        if (cli_cluster_init_ca(a->name, a->ca_name, a->days, a->force, &err) < 0)
            return fail_own(io, a->json, "failed", CLI_EXIT_FAILED, "%s", err.msg);
        if (a->json) {
            json_t *j = json_pack("{s:s, s:s, s:s, s:i}", "dir", a->name, "name", a->ca_name,
                                  "files", "ca.pem ca-key.pem", "days", a->days);
            print_json(io->out, j);
            json_decref(j);
        } else {
            text_put_line(io->out, "created CA '%s' in %s: ca.pem, ca-key.pem (valid %d days)",
                          a->ca_name, a->name, a->days);
            text_put_line(io->out, "keep ca-key.pem off the hosts; next: ternctl cluster "
                                   "issue-cert %s HOST", a->name);
        }
        return CLI_EXIT_OK;
    }
    char out_dir[4096];
    if (cli_cluster_issue_cert(a->name, a->host, a->days, out_dir, sizeof(out_dir), &err) < 0)
        return fail_own(io, a->json, "failed", CLI_EXIT_FAILED, "%s", err.msg);
    if (a->json) {
        json_t *j = json_pack("{s:s, s:s, s:i}", "host", a->host, "dir", out_dir, "days", a->days);
        print_json(io->out, j);
        json_decref(j);
    } else {
        text_put_line(io->out, "issued a certificate for %s in %s: ca.pem, cert.pem, key.pem "
                               "(valid %d days)", a->host, out_dir, a->days);
        text_put_line(io->out, "copy that directory to %s as ternd's tls_dir (tern-vmm --tls-dir)",
                      a->host);
    }
    return CLI_EXIT_OK;
}

/* ---- results of agent commands ---- */

/* The id of a migration started with "wait":false. */
static json_int_t started_id(const json_t *result)
{
    const json_t *m = json_object_get(result, "migration");
    if (json_is_integer(json_object_get(m, "id")))
        return json_integer_value(json_object_get(m, "id"));
    if (json_is_integer(m))
        return json_integer_value(m);
    if (json_is_integer(json_object_get(result, "migration_id")))
        return json_integer_value(json_object_get(result, "migration_id"));
    if (json_is_integer(json_object_get(result, "id")))
        return json_integer_value(json_object_get(result, "id"));
    return -1;
}

/* vm migrate's final result; returns the exit code. */
static int migrate_done(const struct cli_args *a, const struct cli_io *io, const json_t *result)
{
    if (a->no_wait) {
        json_int_t id = started_id(result);
        if (a->json)
            print_json(io->out, result);
        else if (id >= 0)
            text_put_line(io->out, "migration %" JSON_INTEGER_FORMAT " of %s to %s started", id,
                          a->name, a->host);
        else
            text_put_line(io->out, "migration of %s to %s started", a->name, a->host);
        return CLI_EXIT_OK;
    }
    const json_t *m = json_object_get(result, "migration");
    if (!json_is_object(m))
        m = result;
    char sum[1024];
    cli_format_migration_summary(sum, sizeof(sum), m);
    bool ok = !strcmp(jstr(m, "outcome", "succeeded"), "succeeded");
    if (a->json)
        print_json(io->out, result);
    else if (ok)
        text_put_line(io->out, "%s", sum);
    if (!ok)
        return fail(io, CLI_EXIT_FAILED, "%s", sum);
    return CLI_EXIT_OK;
}

/* Lists what an evacuation moved and what it could not. Returns how many failed. */
static size_t print_evacuation(FILE *out, const char *host, const json_t *r)
{
    const json_t *moved = json_object_get(r, "moved"), *failed = json_object_get(r, "failed");
    size_t nm = json_array_size(moved), nf = json_array_size(failed);
    if (nm + nf == 0)
        text_put_line(out, "evacuated %s: no VMs to move", host);
    else
        text_put_line(out, "evacuated %s: %zu of %zu VM%s moved", host, nm, nm + nf,
                      nm + nf == 1 ? "" : "s");
    size_t i;
    json_t *e;
    json_array_foreach(moved, i, e) {
        char t[32] = "?", pause[48] = "";
        json_t *s = json_object_get(e, "total_s"), *p = json_object_get(e, "pause_ms");
        if (json_is_number(s))
            cli_format_seconds(t, sizeof(t), json_number_value(s));
        if (json_is_number(p))
            snprintf(pause, sizeof(pause), ", pause %.1f ms", json_number_value(p));
        text_put_line(out, "  %s -> %s in %s%s", jstr(e, "vm", "?"), jstr(e, "to", "?"), t, pause);
    }
    json_array_foreach(failed, i, e)
        text_put_line(out, "  %s: not moved: %s", jstr(e, "vm", "?"),
                      jstr(e, "error", "no reason given"));
    return nf;
}

static int evacuate_done(const struct cli_args *a, const struct cli_io *io, const json_t *result)
{
    if (a->json) {
        print_json(io->out, result);
    } else if (a->no_wait) {
        text_put_line(io->out, "evacuation of %s started", a->name);
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(result, "migrations"), i, m)
            text_put_line(io->out, "  migration %" JSON_INTEGER_FORMAT ": %s -> %s",
                          json_integer_value(json_object_get(m, "id")), jstr(m, "vm", "?"),
                          jstr(m, "to", "?"));
        return CLI_EXIT_OK;
    }
    size_t nf = a->json ? json_array_size(json_object_get(result, "failed"))
                        : print_evacuation(io->out, a->name, result);
    if (nf)
        return fail(io, CLI_EXIT_PARTIAL, "%zu VM%s could not be moved off %s", nf,
                    nf == 1 ? "" : "s", a->name);
    return CLI_EXIT_OK;
}

static int show_result(const struct cli_args *a, const struct cli_io *io, const json_t *result)
{
    const json_t *vm = json_object_get(result, "vm");
    char mem[32];
    switch (a->cmd) {
    case CLI_CMD_VM_MIGRATE:
        return migrate_done(a, io, result);
    case CLI_CMD_HOST_EVACUATE:
        return evacuate_done(a, io, result);
    default:
        break;
    }
    if (a->json) {
        print_json(io->out, result);
        return CLI_EXIT_OK;
    }
    FILE *out = io->out;
    switch (a->cmd) {
    case CLI_CMD_STATUS:
        cli_render_status(out, result);
        break;
    case CLI_CMD_VM_LIST:
        cli_render_vms(out, json_object_get(result, "vms"));
        break;
    case CLI_CMD_HOST_LIST:
        cli_render_hosts(out, json_object_get(result, "hosts"));
        break;
    case CLI_CMD_VM_SHOW:
        cli_render_vm(out, vm);
        break;
    case CLI_CMD_VM_DEFINE:
        cli_format_mib(mem, sizeof(mem), a->mem_mib);
        text_put_line(out, "defined VM %s: %s, %d vCPU%s%s (state: %s)", a->name, mem, a->vcpus,
                      a->vcpus == 1 ? "" : "s", a->ha ? ", HA" : "", jstr(vm, "state", "stopped"));
        break;
    case CLI_CMD_VM_START:
        text_put_line(out, "VM %s is %s on %s", a->name, jstr(vm, "state", "running"),
                      jstr(vm, "owner", "?"));
        break;
    case CLI_CMD_VM_STOP:
        text_put_line(out, "VM %s is %s", a->name, jstr(vm, "state", "stopped"));
        break;
    case CLI_CMD_VM_UNDEFINE:
        text_put_line(out, "VM %s undefined", a->name);
        break;
    case CLI_CMD_HOST_ACTIVATE: {
        const json_t *h = json_object_get(result, "host");
        text_put_line(out, "host %s is %s", a->name, jstr(h, "mode", "active"));
        break;
    }
    case CLI_CMD_HOST_REMOVE:
        text_put_line(out, "host %s removed from the cluster", a->name);
        break;
    case CLI_CMD_HOST_FENCE:
    case CLI_CMD_HOST_CONFIRM_FENCED: {
        const json_t *f = json_object_get(json_object_get(result, "host"), "fence");
        fprintf(out, "host %s is %s (%s)\n", a->name, jstr(f, "state", "fenced"),
                jstr(f, "detail", ""));
        break;
    }
    default:
        break;
    }
    return CLI_EXIT_OK;
}

static int show_error(const struct cli_args *a, const struct cli_io *io, const struct cli_reply *r)
{
    const json_t *details = a->cmd == CLI_CMD_HOST_EVACUATE ? cli_reply_evacuation(r) : NULL;
    if (a->json) {
        json_t *j = json_pack("{s:O}", "error", r->body);
        if (details)
            json_object_set(j, "result", (json_t *)details);
        print_json(io->out, j);
        json_decref(j);
    } else if (details) {
        print_evacuation(io->out, a->name, details);
    }
    fflush(io->out);
    return fail(io, cli_exit_for_error(a->cmd, r), "%s", r->message);
}

/* ---- agent commands ---- */

static int run_agent(const struct cli_args *a, const struct cli_io *io)
{
    struct tern_err err = {0};
    json_t *req = cli_build_request(a);
    if (!req)
        return fail_own(io, a->json, "internal", CLI_EXIT_FAILED,
                        "building the request: out of memory");
    /* --timeout bounds connecting, sending and the reply together. Long
     * work that is waited for may take minutes: its reply has no deadline
     * (the agent streams progress, and a dead agent closes the socket). */
    int64_t until = cli_now_ms() + (int64_t)a->timeout_s * 1000;
    bool streams = cli_cmd_is_long(a->cmd) && !a->no_wait;
    int64_t deadline = streams ? -1 : until;
    struct cli_conn c;
    if (cli_conn_open(&c, a->socket, until, &err) < 0) {
        json_decref(req);
        return fail_own(io, a->json, "unreachable", CLI_EXIT_UNREACHABLE, "%s", err.msg);
    }
    int rc;
    if (cli_conn_send(&c, req, until, &err) < 0) {
        /* ternd may have said why before it hung up (too many clients):
         * show that rather than the broken pipe. */
        struct cli_reply r;
        struct tern_err rerr;
        if (cli_conn_next(&c, cli_now_ms() + 1000, &r, &rerr) == 0) {
            rc = r.kind == CLI_REPLY_ERROR
                     ? show_error(a, io, &r)
                     : fail_own(io, a->json, "unreachable", CLI_EXIT_UNREACHABLE, "%s", err.msg);
            cli_reply_clear(&r);
        } else {
            rc = fail_own(io, a->json, "unreachable", CLI_EXIT_UNREACHABLE, "%s", err.msg);
        }
        goto out;
    }
    struct cli_progress prog = {
        .out = io->out, .tty = io->tty && !a->json, .cols = io->cols, .json = a->json,
        .evacuation = a->cmd == CLI_CMD_HOST_EVACUATE,
    };
    for (;;) {
        struct cli_reply r;
        if (cli_conn_next(&c, deadline, &r, &err) < 0) {
            cli_progress_end(&prog);
            rc = fail_own(io, a->json, "unreachable", CLI_EXIT_UNREACHABLE, "%s", err.msg);
            goto out;
        }
        if (r.kind == CLI_REPLY_PROGRESS) {
            cli_progress_event(&prog, r.body, (double)cli_now_ms() / 1000.0);
            cli_reply_clear(&r);
            continue;
        }
        cli_progress_end(&prog);
        rc = r.kind == CLI_REPLY_OK ? show_result(a, io, r.body) : show_error(a, io, &r);
        cli_reply_clear(&r);
        break;
    }
out:
    fflush(io->out);
    cli_conn_close(&c);
    json_decref(req);
    return rc;
}

/* --json among the arguments (before a "--"), for a command line that
 * did not parse as far as it. */
static bool wants_json(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            return false;
        if (!strcmp(argv[i], "--json"))
            return true;
    }
    return false;
}

int cli_main(int argc, char **argv, const struct cli_io *io)
{
    struct cli_args a;
    struct tern_err err = {0};
    if (cli_parse_args(argc, argv, io->env_socket, &a, &err) < 0) {
        fail_own(io, a.json || wants_json(argc, argv), "usage", CLI_EXIT_USAGE, "%s", err.msg);
        if (a.cmd == CLI_CMD_NONE)
            fprintf(io->err, "Try 'ternctl --help'.\n");
        else
            fprintf(io->err, "Try 'ternctl %s --help'.\n", cli_cmd_name(a.cmd));
        return CLI_EXIT_USAGE;
    }
    if (a.help) {
        cli_usage(io->out, a.cmd);
        return CLI_EXIT_OK;
    }
    if (a.version) {
        fprintf(io->out, "ternctl %s\n", tern_version());
        return CLI_EXIT_OK;
    }
    if (a.cmd == CLI_CMD_CLUSTER_INIT_CA || a.cmd == CLI_CMD_CLUSTER_ISSUE_CERT)
        return run_cluster(&a, io);
    if (cli_resolve_paths(&a, &err) < 0)
        return fail_own(io, a.json, "usage", CLI_EXIT_USAGE, "%s", err.msg);
    return run_agent(&a, io);
}
