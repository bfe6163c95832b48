/* Error reporting: a fixed buffer that carries one human-readable message up
 * the call chain, gaining context at each level ("loading kernel: reading
 * /x: No such file").  Functions that can fail take a `struct tern_err *` and
 * return -1 after filling it. */
#ifndef TERN_COMMON_ERR_H
#define TERN_COMMON_ERR_H

#include <stddef.h>

#define TERN_ERR_MAX 1024

/* What kind of failure, for callers that answer differently per kind (the
 * agent's API error codes). Most errors have none. */
enum tern_err_code {
    TERN_ERR_NONE = 0,
    TERN_ERR_INVALID,     /* malformed or out-of-range input */
    TERN_ERR_NOT_FOUND,   /* names something that does not exist */
    TERN_ERR_CONFLICT,    /* not possible in the current state */
    TERN_ERR_NO_CAPACITY, /* no host can take it */
    TERN_ERR_INTERNAL,    /* out of memory and the like */
    TERN_ERR_NO_QUORUM,   /* needs a quorate configuration of the cluster */
};

struct tern_err {
    char msg[TERN_ERR_MAX];
    int code; /* enum tern_err_code; tern_err_prefix keeps it */
};

/* Sets the message (printf-style). Always returns -1 so callers can write
 * `return tern_err_set(err, ...);`. `err` may be NULL. */
int tern_err_set(struct tern_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* tern_err_set with a code. */
int tern_err_coded(struct tern_err *err, enum tern_err_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "invalid", "not_found", "conflict", "no_capacity", "internal",
 * "no_quorum"; "failed" for TERN_ERR_NONE. */
const char *tern_err_code_name(int code);

/* Like tern_err_set, appending ": strerror(errno_value)". */
int tern_err_errno(struct tern_err *err, int errno_value, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "context: " to the existing message. Returns -1. */
int tern_err_prefix(struct tern_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
