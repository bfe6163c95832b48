#include "text.h"

#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#define LOG_LINE_MAX 4096

/* The next unit of s: one UTF-8 character, or one byte that is not part
 * of one. Its length, and whether it is a control (see text.h). At the
 * end of s: 0. */
static size_t next_unit(const unsigned char *s, bool *control)
{
    unsigned char b = s[0];
    *control = false;
    if (!b)
        return 0;
    if (b < 0x20 || b == 0x7f) {
        *control = true;
        return 1;
    }
    if (b < 0x80)
        return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range */
    if (b >= 0xc2 && b <= 0xdf) {
        n = 2;
    } else if (b >= 0xe0 && b <= 0xef) {
        n = 3;
        if (b == 0xe0)
            lo = 0xa0; /* overlong */
        else if (b == 0xed)
            hi = 0x9f; /* UTF-16 surrogates */
    } else if (b >= 0xf0 && b <= 0xf4) {
        n = 4;
        if (b == 0xf0)
            lo = 0x90; /* overlong */
        else if (b == 0xf4)
            hi = 0x8f; /* beyond U+10FFFF */
    } else {
        *control = true; /* a continuation byte alone, 0xc0/0xc1, 0xf5.. */
        return 1;
    }
    if (s[1] < lo || s[1] > hi) {
        *control = true;
        return 1;
    }
    for (size_t i = 2; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) {
            *control = true;
            return 1;
        }
    if (b == 0xc2 && s[1] <= 0x9f)
        *control = true; /* U+0080-U+009F, the C1 controls */
    return n;
}

void text_utf8_fix(char *s)
{
    unsigned char *p = (unsigned char *)s;
    bool control;
    size_t n;
    while ((n = next_unit(p, &control)) != 0) {
        if (n == 1 && p[0] >= 0x80)
            p[0] = '?';
        p += n;
    }
}

size_t text_control_len(const char *s)
{
    bool control;
    size_t n = next_unit((const unsigned char *)s, &control);
    return control ? n : 0;
}

const char *text_find_control(const char *s)
{
    bool control;
    size_t n;
    while ((n = next_unit((const unsigned char *)s, &control)) != 0) {
        if (control)
            return s;
        s += n;
    }
    return NULL;
}

/* The escape of one control byte into out[5]; its length. */
static size_t escape_byte(unsigned char b, unsigned flags, char *out)
{
    static const char hex[] = "0123456789abcdef";
    switch (b) {
    case '\n':
        if (flags & TEXT_KEEP_NEWLINES) {
            out[0] = '\n';
            return 1;
        }
        memcpy(out, "\\n", 2);
        return 2;
    case '\r':
        memcpy(out, "\\r", 2);
        return 2;
    case '\t':
        memcpy(out, "\\t", 2);
        return 2;
    default:
        out[0] = '\\';
        out[1] = 'x';
        out[2] = hex[b >> 4];
        out[3] = hex[b & 15];
        return 4;
    }
}

/* The escaped form of the unit of length n at s, into out (up to 16
 * bytes); its length. */
static size_t render_unit(const unsigned char *s, size_t n, bool control, unsigned flags,
                          char *out)
{
    if (!control) {
        memcpy(out, s, n);
        return n;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        o += escape_byte(s[i], flags, out + o);
    return o;
}

size_t text_escape(char *dst, size_t cap, const char *src, unsigned flags, bool *cut)
{
    if (cut)
        *cut = false;
    if (!cap)
        return 0;
    const unsigned char *s = (const unsigned char *)(src ? src : "");
    size_t o = 0, n;
    bool control;
    while ((n = next_unit(s, &control)) != 0) {
        char piece[16];
        size_t len = render_unit(s, n, control, flags, piece);
        if (o + len > cap - 1) {
            if (cut)
                *cut = true;
            break;
        }
        memcpy(dst + o, piece, len);
        o += len;
        s += n;
    }
    dst[o] = '\0';
    return o;
}

void text_fputs(const char *s, FILE *f, unsigned flags)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t n;
    bool control;
    while ((n = next_unit(p, &control)) != 0) {
        /* Printable runs go out whole. */
        if (!control) {
            size_t run = 0, m;
            bool c2 = false;
            while ((m = next_unit(p + run, &c2)) != 0 && !c2)
                run += m;
            fwrite(p, 1, run, f);
            p += run;
            continue;
        }
        char piece[16];
        fwrite(piece, 1, render_unit(p, n, control, flags, piece), f);
        p += n;
    }
}

void text_vput_line(FILE *f, const char *prefix, const char *fmt, va_list ap)
{
    char raw[LOG_LINE_MAX], line[LOG_LINE_MAX + 8];
    size_t o = 0;
    if (prefix) {
        o = strlen(prefix);
        if (o > LOG_LINE_MAX / 4)
            o = LOG_LINE_MAX / 4;
        memcpy(line, prefix, o);
    }
    int w = vsnprintf(raw, sizeof(raw), fmt, ap);
    if (w < 0) {
        snprintf(line + o, sizeof(line) - o, "(unprintable log message)\n");
        fputs(line, f);
        return;
    }
    bool cut = (size_t)w >= sizeof(raw);
    size_t len = strlen(raw);
    if (!cut && len && raw[len - 1] == '\n')
        raw[--len] = '\0';
    bool cut2;
    o += text_escape(line + o, LOG_LINE_MAX - 4 - o, raw, 0, &cut2);
    if (cut || cut2) {
        memcpy(line + o, "...", 3);
        o += 3;
    }
    line[o++] = '\n';
    line[o] = '\0';
    fputs(line, f);
}

void text_put_line(FILE *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    text_vput_line(f, NULL, fmt, ap);
    va_end(ap);
}
