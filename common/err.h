/* Error reporting: a fixed buffer that carries one human-readable message up
 * the call chain, gaining context at each level ("loading kernel: reading
 * /x: No such file").  Functions that can fail take a `struct tern_err *` and
 * return -1 after filling it. */
#ifndef TERN_COMMON_ERR_H
#define TERN_COMMON_ERR_H

#include <stddef.h>

#define TERN_ERR_MAX 1024

struct tern_err {
    char msg[TERN_ERR_MAX];
};

/* Sets the message (printf-style). Always returns -1 so callers can write
 * `return tern_err_set(err, ...);`. `err` may be NULL. */
int tern_err_set(struct tern_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Like tern_err_set, appending ": strerror(errno_value)". */
int tern_err_errno(struct tern_err *err, int errno_value, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "context: " to the existing message. Returns -1. */
int tern_err_prefix(struct tern_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
