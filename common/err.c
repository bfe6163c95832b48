#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* dst = a + ": " + b, cut to fit. Messages are for people, so truncation
 * is acceptable; overflowing is not. */
static void join(char *dst, size_t cap, const char *a, const char *b)
{
    size_t la = strnlen(a, cap - 1);
    memmove(dst, a, la);
    size_t pos = la;
    const char sep[] = ": ";
    for (size_t i = 0; sep[i] && pos < cap - 1; i++)
        dst[pos++] = sep[i];
    size_t lb = strnlen(b, cap - 1 - pos);
    memmove(dst + pos, b, lb);
    dst[pos + lb] = '\0';
}

static int set_v(struct tern_err *err, int code, const char *fmt, va_list ap)
{
    if (!err)
        return -1;
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    err->code = code;
    return -1;
}

int tern_err_set(struct tern_err *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_v(err, TERN_ERR_NONE, fmt, ap);
    va_end(ap);
    return -1;
}

int tern_err_coded(struct tern_err *err, enum tern_err_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_v(err, code, fmt, ap);
    va_end(ap);
    return -1;
}

const char *tern_err_code_name(int code)
{
    switch (code) {
    case TERN_ERR_INVALID: return "invalid";
    case TERN_ERR_NOT_FOUND: return "not_found";
    case TERN_ERR_CONFLICT: return "conflict";
    case TERN_ERR_NO_CAPACITY: return "no_capacity";
    case TERN_ERR_INTERNAL: return "internal";
    case TERN_ERR_NO_QUORUM: return "no_quorum";
    default: return "failed";
    }
}

int tern_err_errno(struct tern_err *err, int errno_value, const char *fmt, ...)
{
    if (!err)
        return -1;
    char head[TERN_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof(head), fmt, ap);
    va_end(ap);
    join(err->msg, sizeof(err->msg), head, strerror(errno_value));
    err->code = TERN_ERR_NONE;
    return -1;
}

int tern_err_prefix(struct tern_err *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    char head[TERN_ERR_MAX];
    char old[TERN_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof(head), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    old[sizeof(old) - 1] = '\0';
    join(err->msg, sizeof(err->msg), head, old);
    return -1;
}
