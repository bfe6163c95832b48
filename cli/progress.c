/* ternctl: progress of migrations and evacuations, and their summaries. */
#include "cli.h"

#include "../common/text.h"

#include <stdlib.h>
#include <stdarg.h>
#include <string.h>

void cli_format_bytes(char *buf, size_t len, double b)
{
    if (!(b >= 0))
        b = 0;
    if (b < 1000)
        snprintf(buf, len, "%.0f B", b);
    else if (b < 1e6)
        snprintf(buf, len, "%.1f kB", b / 1e3);
    else if (b < 1e9)
        snprintf(buf, len, "%.1f MB", b / 1e6);
    else if (b < 1e12)
        snprintf(buf, len, "%.2f GB", b / 1e9);
    else
        snprintf(buf, len, "%.2f TB", b / 1e12);
}

void cli_format_seconds(char *buf, size_t len, double s)
{
    if (!(s >= 0))
        s = 0;
    if (s < 10)
        snprintf(buf, len, "%.1f s", s);
    else if (s < 60)
        snprintf(buf, len, "%.0f s", s);
    else if (s < 3600) {
        long t = (long)(s + 0.5);
        snprintf(buf, len, "%ldm%02lds", t / 60, t % 60);
    } else {
        long t = (long)(s / 60 + 0.5);
        snprintf(buf, len, "%ldh%02ldm", t / 60, t % 60);
    }
}

static bool jnum(const json_t *o, const char *key, double *v)
{
    json_t *j = json_object_get(o, key);
    if (!json_is_number(j))
        return false;
    *v = json_number_value(j);
    return true;
}

static const char *jstr(const json_t *o, const char *key, const char *def)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s && s[0] ? s : def;
}

/* Appends printf output to buf (always NUL-terminated, cut if full). */
static void add(char *buf, size_t len, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void add(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
    if (*pos >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
    va_end(ap);
    if (n > 0)
        *pos = *pos + (size_t)n < len ? *pos + (size_t)n : len - 1;
}

void cli_format_progress(char *buf, size_t len, const json_t *p)
{
    size_t pos = 0;
    char a[32];
    double v, round, sent, left = 0, bw = 0;
    buf[0] = '\0';
    const char *phase = jstr(p, "phase", "working");
    if (!strcmp(phase, "round") && jnum(p, "round", &round))
        add(buf, len, &pos, "round %.0f", round);
    else
        add(buf, len, &pos, "%s", phase);
    const char *sep = ": ";
    if (jnum(p, "bytes_sent", &sent)) {
        cli_format_bytes(a, sizeof(a), sent);
        add(buf, len, &pos, "%ssent %s", sep, a);
        sep = ", ";
    }
    bool have_left = jnum(p, "bytes_remaining", &left);
    if (have_left) {
        cli_format_bytes(a, sizeof(a), left);
        add(buf, len, &pos, "%sleft %s", sep, a);
        sep = ", ";
    }
    bool have_bw = jnum(p, "bandwidth_MBps", &bw);
    if (have_bw) {
        add(buf, len, &pos, "%s%.0f MB/s", sep, bw);
        sep = ", ";
    }
    if (jnum(p, "dirty_MBps", &v)) {
        add(buf, len, &pos, "%sdirty %.0f MB/s", sep, v);
        sep = ", ";
    }
    if (jnum(p, "predicted_pause_ms", &v)) {
        add(buf, len, &pos, "%spause ~%.1f ms", sep, v);
        sep = ", ";
    }
    /* ETA: what is left at the measured bandwidth (MB/s is 1e6 bytes/s). */
    if (have_left && have_bw && bw > 0) {
        cli_format_seconds(a, sizeof(a), left / (bw * 1e6));
        add(buf, len, &pos, "%sETA %s", sep, a);
    }
}

void cli_format_evacuation(char *buf, size_t len, const json_t *ev)
{
    size_t pos = 0;
    double total = 0, done = 0;
    buf[0] = '\0';
    bool have_total = jnum(ev, "total", &total);
    jnum(ev, "done", &done);
    const char *vm = jstr(ev, "vm", NULL);
    if (!vm) {
        add(buf, len, &pos, "evacuating %s: %.0f/%.0f done", jstr(ev, "host", "?"), done, total);
        return;
    }
    double x = done + 1;
    if (have_total && x > total)
        x = total;
    if (have_total)
        add(buf, len, &pos, "VM %.0f/%.0f: ", x, total);
    add(buf, len, &pos, "%s -> %s", vm, jstr(ev, "to", "?"));
    const json_t *m = json_object_get(ev, "migration");
    if (json_is_object(m)) {
        char prog[512];
        cli_format_progress(prog, sizeof(prog), m);
        add(buf, len, &pos, ": %s", prog);
    }
}

void cli_format_migration_summary(char *buf, size_t len, const json_t *r)
{
    size_t pos = 0;
    char a[32];
    double v;
    buf[0] = '\0';
    const char *vm = jstr(r, "vm", "?"), *from = jstr(r, "from", "?"), *to = jstr(r, "to", "?");
    const char *outcome = jstr(r, "outcome", "succeeded");
    if (strcmp(outcome, "succeeded")) {
        add(buf, len, &pos, "migration of %s from %s to %s %s", vm, from, to,
            !strcmp(outcome, "cancelled") ? "was cancelled" : !strcmp(outcome, "failed") ? "failed" : outcome);
        if (jnum(r, "total_s", &v)) {
            cli_format_seconds(a, sizeof(a), v);
            add(buf, len, &pos, " after %s", a);
        }
        add(buf, len, &pos, ": %s", jstr(r, "reason", "no reason given"));
        return;
    }
    add(buf, len, &pos, "migrated %s from %s to %s", vm, from, to);
    if (jnum(r, "total_s", &v)) {
        cli_format_seconds(a, sizeof(a), v);
        add(buf, len, &pos, " in %s", a);
    }
    if (jnum(r, "pause_ms", &v))
        add(buf, len, &pos, ", pause %.1f ms", v);
    if (jnum(r, "guest_pause_ms", &v) && v > 0)
        add(buf, len, &pos, " (guest-observed %.1f ms)", v);
    if (jnum(r, "rounds", &v))
        add(buf, len, &pos, ", %.0f round%s", v, v == 1 ? "" : "s");
    if (jnum(r, "bytes_sent", &v)) {
        cli_format_bytes(a, sizeof(a), v);
        add(buf, len, &pos, ", %s sent", a);
    }
}

void cli_progress_event(struct cli_progress *p, const json_t *ev, double now_s)
{
    if (p->json) {
        json_t *wrap = json_pack("{s:O}", "progress", ev);
        char *s = wrap ? json_dumps(wrap, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        if (s)
            fprintf(p->out, "%s\n", s);
        free(s);
        json_decref(wrap);
        fflush(p->out);
        return;
    }
    char line[1024], key[sizeof(p->last_key)];
    const json_t *m = ev;
    if (p->evacuation) {
        cli_format_evacuation(line, sizeof(line), ev);
        m = json_object_get(ev, "migration");
        double done = 0;
        jnum(ev, "done", &done);
        snprintf(key, sizeof(key), "%.0f/%s/%s", done, jstr(ev, "vm", ""), jstr(m, "phase", ""));
    } else {
        char prog[900];
        cli_format_progress(prog, sizeof(prog), ev);
        const char *vm = jstr(ev, "vm", NULL);
        if (vm)
            snprintf(line, sizeof(line), "%s -> %s: %s", vm, jstr(ev, "to", "?"), prog);
        else
            snprintf(line, sizeof(line), "%s", prog);
        snprintf(key, sizeof(key), "%s/%s", jstr(ev, "vm", ""), jstr(ev, "phase", ""));
    }
    if (p->tty) {
        char cut[1024];
        /* One screen line: wider lines would wrap and \r could not redraw them. */
        cli_truncate(cut, sizeof(cut), line, p->cols > 1 ? (size_t)p->cols - 1 : 0);
        fprintf(p->out, "\r%s\033[K", cut);
        fflush(p->out);
        p->line_open = true;
        return;
    }
    bool changed = !p->printed || strcmp(key, p->last_key);
    if (!changed && now_s - p->last_print_s < 1.0)
        return;
    text_put_line(p->out, "%s", line);
    fflush(p->out);
    p->printed = true;
    p->last_print_s = now_s;
    snprintf(p->last_key, sizeof(p->last_key), "%s", key);
}

void cli_progress_end(struct cli_progress *p)
{
    if (p->tty && p->line_open) {
        fputs("\r\033[K", p->out);
        fflush(p->out);
    }
    p->line_open = false;
}
