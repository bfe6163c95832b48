/* ternctl's views of replies: aligned tables and key/value lines. */
#include "cli.h"

#include "../common/text.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

struct cli_table {
    const struct cli_col *cols;
    size_t ncols;
    char **cells; /* rows * ncols, already cut to their column's width */
    size_t rows;
    size_t cap_rows;
};

/* Characters in a UTF-8 string (continuation bytes do not count). */
static size_t u8_width(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            n++;
    return n;
}

/* The next character of s: its length in bytes, and whether it is a
 * control (common/text.h: C0, DEL, C1, a byte of broken UTF-8), which a
 * cell shows as one space (a newline in a message would break a table,
 * an escape would drive the terminal). */
static size_t next_char(const char *s, bool *control)
{
    size_t ctl = text_control_len(s);
    *control = ctl > 0;
    if (ctl)
        return ctl;
    unsigned char b = (unsigned char)*s;
    return b < 0x80 ? 1 : b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2; /* well-formed: not a control */
}

void cli_truncate(char *dst, size_t cap, const char *src, size_t max_width)
{
    if (!cap)
        return;
    if (!src)
        src = "";
    size_t width = 0;
    bool control;
    for (const char *p = src; *p; p += next_char(p, &control))
        width++;
    bool cut = max_width && width > max_width;
    size_t keep = cut ? (max_width > 3 ? max_width - 3 : max_width) : width;
    size_t o = 0, chars = 0;
    const char *tail = cut && max_width > 3 ? "..." : "";
    if (strlen(tail) >= cap)
        tail = "";
    size_t room = cap - 1 - strlen(tail); /* bytes for the kept characters */
    for (const char *p = src; *p && chars < keep;) {
        size_t clen = next_char(p, &control);
        size_t olen = control ? 1 : clen;
        if (o + olen > room) /* room for this whole character? */
            break;
        if (control)
            dst[o] = ' ';
        else
            memcpy(dst + o, p, clen);
        o += olen;
        chars++;
        p += clen;
    }
    strcpy(dst + o, tail);
}

struct cli_table *cli_table_new(const struct cli_col *cols, size_t n)
{
    struct cli_table *t = calloc(1, sizeof(*t));
    if (t) {
        t->cols = cols;
        t->ncols = n;
    }
    return t;
}

int cli_table_add(struct cli_table *t, const char *const *cells)
{
    if (t->rows == t->cap_rows) {
        size_t ncap = t->cap_rows ? t->cap_rows * 2 : 16;
        char **nc = realloc(t->cells, ncap * t->ncols * sizeof(char *));
        if (!nc)
            return -1;
        t->cells = nc;
        t->cap_rows = ncap;
    }
    char **row = t->cells + t->rows * t->ncols;
    for (size_t c = 0; c < t->ncols; c++) {
        const char *src = cells[c] && cells[c][0] ? cells[c] : "-";
        size_t cap = strlen(src) + 4;
        row[c] = malloc(cap);
        if (!row[c]) {
            for (size_t k = 0; k < c; k++)
                free(row[k]);
            return -1;
        }
        cli_truncate(row[c], cap, src, t->cols[c].max_width);
    }
    t->rows++;
    return 0;
}

size_t cli_table_rows(const struct cli_table *t)
{
    return t->rows;
}

static void print_cell(FILE *out, const char *s, size_t width, bool right, bool last)
{
    size_t w = u8_width(s);
    size_t pad = width > w ? width - w : 0;
    if (right)
        fprintf(out, "%*s", (int)pad, "");
    fputs(s, out);
    if (!right && !last)
        fprintf(out, "%*s", (int)pad, "");
}

void cli_table_print(const struct cli_table *t, FILE *out)
{
    size_t widths[32];
    size_t n = t->ncols < 32 ? t->ncols : 32;
    for (size_t c = 0; c < n; c++) {
        widths[c] = u8_width(t->cols[c].title);
        for (size_t r = 0; r < t->rows; r++) {
            size_t w = u8_width(t->cells[r * t->ncols + c]);
            if (w > widths[c])
                widths[c] = w;
        }
    }
    for (size_t c = 0; c < n; c++) {
        if (c)
            fputs("  ", out);
        print_cell(out, t->cols[c].title, widths[c], t->cols[c].right, c + 1 == n);
    }
    fputc('\n', out);
    for (size_t r = 0; r < t->rows; r++) {
        for (size_t c = 0; c < n; c++) {
            if (c)
                fputs("  ", out);
            print_cell(out, t->cells[r * t->ncols + c], widths[c], t->cols[c].right, c + 1 == n);
        }
        fputc('\n', out);
    }
}

void cli_table_free(struct cli_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->rows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

void cli_format_mib(char *buf, size_t len, uint64_t mib)
{
    static const char units[] = {'M', 'G', 'T'};
    int u = 0;
    double v = (double)mib;
    uint64_t whole = mib;
    bool exact = true;
    while (u < 2 && whole >= 1024) {
        exact = exact && whole % 1024 == 0;
        whole /= 1024;
        v /= 1024;
        u++;
    }
    if (exact)
        snprintf(buf, len, "%" PRIu64 "%c", whole, units[u]);
    else
        snprintf(buf, len, "%.1f%c", v, units[u]);
}

/* ---- JSON field helpers: missing or mistyped fields print as "?" ---- */

static const char *jstr(const json_t *o, const char *key, const char *def)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : def;
}

static bool jint(const json_t *o, const char *key, json_int_t *v)
{
    json_t *j = json_object_get(o, key);
    if (json_is_integer(j)) {
        *v = json_integer_value(j);
        return true;
    }
    if (json_is_real(j)) {
        *v = (json_int_t)json_real_value(j);
        return true;
    }
    return false;
}

static void fmt_int(char *buf, size_t len, const json_t *o, const char *key)
{
    json_int_t v;
    if (jint(o, key, &v))
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, v);
    else
        snprintf(buf, len, "?");
}

static void fmt_mib(char *buf, size_t len, const json_t *o, const char *key)
{
    json_int_t v;
    if (jint(o, key, &v) && v >= 0)
        cli_format_mib(buf, len, (uint64_t)v);
    else
        snprintf(buf, len, "?");
}

static const char *yes_no(const json_t *o, const char *key)
{
    json_t *j = json_object_get(o, key);
    return json_is_boolean(j) ? (json_is_true(j) ? "yes" : "no") : "?";
}

/* ---- views ---- */

static const struct cli_col host_cols[] = {
    {"NAME", 32, false}, {"STATE", 12, false}, {"MODE", 12, false},
    {"VMS", 0, true},    {"MEM(free/total)", 0, true}, {"VCPUS(free/total)", 0, true},
    {"ADDR", 39, false}, {"FENCE", 8, false},
};

void cli_render_hosts(FILE *out, const json_t *hosts)
{
    if (!json_is_array(hosts) || json_array_size(hosts) == 0) {
        fputs("(no hosts)\n", out);
        return;
    }
    struct cli_table *t = cli_table_new(host_cols, 8);
    if (!t)
        return;
    size_t i;
    json_t *h;
    json_array_foreach(hosts, i, h) {
        const char *check = jstr(json_object_get(h, "fence"), "check", "unknown");
        char vms[24], mem[64], fm[24], tm[24], vc[64], fv[24], tv[24];
        json_t *online = json_object_get(h, "online");
        fmt_int(vms, sizeof(vms), h, "vms");
        fmt_mib(fm, sizeof(fm), h, "free_mem_mib");
        fmt_mib(tm, sizeof(tm), h, "mem_mib");
        snprintf(mem, sizeof(mem), "%s/%s", fm, tm);
        fmt_int(fv, sizeof(fv), h, "free_vcpus");
        fmt_int(tv, sizeof(tv), h, "vcpus");
        snprintf(vc, sizeof(vc), "%s/%s", fv, tv);
        const char *state = json_is_boolean(online) ? (json_is_true(online) ? "online" : "offline")
                                                    : "?";
        const char *fence = jstr(json_object_get(h, "fence"), "state", "none");
        if (!strcmp(fence, "pending"))
            state = "fencing";
        else if (!strcmp(fence, "failed"))
            state = "fence-failed";
        else if (!strcmp(fence, "fenced"))
            state = "fenced";
        else if (json_is_true(json_object_get(h, "lost")))
            state = "lost";
        const char *cells[] = {
            jstr(h, "name", "?"), state, jstr(h, "mode", "?"), vms, mem, vc,
            jstr(h, "migration_addr", ""),
            !strcmp(check, "ok") ? "ok" : !strcmp(check, "failing") ? "failing" : "-",
        };
        cli_table_add(t, cells);
    }
    cli_table_print(t, out);
    cli_table_free(t);
    /* Fencing: what holds up the recovery of a host's VMs, and devices that
     * would fail if it were needed, said in full (escaped: an agent's words). */
    json_array_foreach(hosts, i, h) {
        const json_t *f = json_object_get(h, "fence");
        const char *fs = jstr(f, "state", "none");
        const char *name = jstr(h, "name", "?");
        if (!strcmp(jstr(f, "check", "unknown"), "failing"))
            text_put_line(out, "%s: fence devices failing their check (by %s): %s", name,
                          jstr(f, "check_by", "?"), jstr(f, "check_detail", ""));
        if (!strcmp(fs, "none"))
            continue;
        json_int_t attempts = 0;
        jint(f, "attempts", &attempts);
        if (!strcmp(fs, "fenced"))
            text_put_line(out, "%s: fenced (%s): %s", name, jstr(f, "method", "?"),
                          jstr(f, "detail", ""));
        else if (!strcmp(fs, "failed"))
            text_put_line(out, "%s: fencing failed %" JSON_INTEGER_FORMAT " time%s, retried; its "
                          "VMs wait: %s", name, attempts, attempts == 1 ? "" : "s",
                          jstr(f, "detail", ""));
        else
            text_put_line(out, "%s: being fenced; its VMs wait: %s", name, jstr(f, "detail", ""));
    }
}

static const struct cli_col vm_cols[] = {
    {"NAME", 32, false}, {"STATE", 10, false}, {"OWNER", 24, false}, {"MEM", 0, true},
    {"VCPUS", 0, true},  {"HA", 3, false},     {"DETAIL", 48, false},
};

void cli_render_vms(FILE *out, const json_t *vms)
{
    if (!json_is_array(vms) || json_array_size(vms) == 0) {
        fputs("(no VMs)\n", out);
        return;
    }
    struct cli_table *t = cli_table_new(vm_cols, 7);
    if (!t)
        return;
    size_t i;
    json_t *v;
    json_array_foreach(vms, i, v) {
        const json_t *cfg = json_object_get(v, "config");
        char mem[24], vcpus[24], detail[64];
        fmt_mib(mem, sizeof(mem), cfg, "mem_mib");
        fmt_int(vcpus, sizeof(vcpus), cfg, "vcpus");
        const char *d = jstr(v, "detail", "");
        json_int_t mid;
        if (!d[0] && jint(v, "migration_id", &mid) && mid > 0) {
            snprintf(detail, sizeof(detail), "migration #%" JSON_INTEGER_FORMAT, mid);
            d = detail;
        }
        const char *cells[] = {
            jstr(v, "name", "?"), jstr(v, "state", "?"), jstr(v, "owner", ""), mem, vcpus,
            yes_no(v, "ha"), d,
        };
        cli_table_add(t, cells);
    }
    cli_table_print(t, out);
    cli_table_free(t);
}

static const struct cli_col mig_cols[] = {
    {"ID", 0, true}, {"VM", 32, false}, {"FROM", 24, false}, {"TO", 24, false},
    {"PHASE", 14, false}, {"PROGRESS", 72, false},
};

void cli_render_migrations(FILE *out, const json_t *migs)
{
    if (!json_is_array(migs) || json_array_size(migs) == 0) {
        fputs("(no migrations in flight)\n", out);
        return;
    }
    struct cli_table *t = cli_table_new(mig_cols, 6);
    if (!t)
        return;
    size_t i;
    json_t *m;
    json_array_foreach(migs, i, m) {
        char id[24], prog[256] = "";
        fmt_int(id, sizeof(id), m, "id");
        const json_t *p = json_object_get(m, "progress");
        if (json_is_object(p))
            cli_format_progress(prog, sizeof(prog), p);
        const char *cells[] = {
            id, jstr(m, "vm", "?"), jstr(m, "from", "?"), jstr(m, "to", "?"), jstr(m, "phase", "?"),
            prog,
        };
        cli_table_add(t, cells);
    }
    cli_table_print(t, out);
    cli_table_free(t);
}

void cli_render_status(FILE *out, const json_t *result)
{
    const json_t *c = json_object_get(result, "cluster");
    char nodeid[24], members[24], version[24];
    fmt_int(nodeid, sizeof(nodeid), c, "nodeid");
    fmt_int(members, sizeof(members), c, "members");
    fmt_int(version, sizeof(version), c, "version");
    char host[CL_NAME_MAX * 4];
    text_escape(host, sizeof(host), jstr(c, "local_host", "?"), 0, NULL);
    fprintf(out, "cluster: local host %s (node %s), quorate: %s, members: %s, version: %s", host,
            nodeid, yes_no(c, "quorate"), members, version);
    if (json_is_false(json_object_get(c, "synced")))
        fputs(", not yet synced", out);
    fputs("\n\nHOSTS\n", out);
    cli_render_hosts(out, json_object_get(result, "hosts"));
    fputs("\nVMS\n", out);
    cli_render_vms(out, json_object_get(result, "vms"));
    const json_t *migs = json_object_get(result, "migrations");
    if (json_is_array(migs) && json_array_size(migs)) {
        fputs("\nMIGRATIONS\n", out);
        cli_render_migrations(out, migs);
    }
}

static void kv(FILE *out, const char *key, const char *value)
{
    char k[48];
    snprintf(k, sizeof(k), "%s:", key);
    char v[CL_CMDLINE_MAX + 64];
    cli_truncate(v, sizeof(v), value && value[0] ? value : "-", 0);
    fprintf(out, "%-16s%s\n", k, v);
}

void cli_render_vm(FILE *out, const json_t *vm)
{
    char buf[1200];
    kv(out, "name", jstr(vm, "name", "?"));
    snprintf(buf, sizeof(buf), "%s (desired: %s)", jstr(vm, "state", "?"), jstr(vm, "desired", "?"));
    kv(out, "state", buf);
    kv(out, "owner", jstr(vm, "owner", ""));
    json_int_t prio = 0;
    jint(vm, "priority", &prio);
    snprintf(buf, sizeof(buf), "%s (priority %" JSON_INTEGER_FORMAT ")", yes_no(vm, "ha"), prio);
    kv(out, "ha", buf);
    kv(out, "detail", jstr(vm, "detail", ""));
    const json_t *cfg = json_object_get(vm, "config");
    kv(out, "kernel", jstr(cfg, "kernel", ""));
    kv(out, "initrd", jstr(cfg, "initrd", ""));
    kv(out, "cmdline", jstr(cfg, "cmdline", ""));
    fmt_mib(buf, sizeof(buf), cfg, "mem_mib");
    kv(out, "memory", buf);
    fmt_int(buf, sizeof(buf), cfg, "vcpus");
    kv(out, "vcpus", buf);
    const json_t *disks = json_object_get(cfg, "disks");
    size_t i;
    json_t *d;
    if (!json_array_size(disks))
        kv(out, "disks", "");
    json_array_foreach(disks, i, d) {
        char key[32];
        snprintf(key, sizeof(key), "disk %zu", i);
        snprintf(buf, sizeof(buf), "%s (%s)", jstr(d, "path", "?"),
                 json_is_true(json_object_get(d, "ro")) ? "read-only" : "read-write");
        kv(out, key, buf);
    }
    json_int_t mid;
    if (jint(vm, "migration_id", &mid) && mid > 0) {
        snprintf(buf, sizeof(buf), "#%" JSON_INTEGER_FORMAT " in flight", mid);
        kv(out, "migration", buf);
    }
    const json_t *last = json_object_get(vm, "last_migration");
    if (json_is_object(last)) {
        char sum[512];
        json_int_t id = 0;
        jint(last, "id", &id);
        cli_format_migration_summary(sum, sizeof(sum), last);
        snprintf(buf, sizeof(buf), "#%" JSON_INTEGER_FORMAT ": %s", id, sum);
        kv(out, "last migration", buf);
    } else {
        kv(out, "last migration", "");
    }
}
