/* Small file helpers shared by every subsystem. */
#ifndef TERN_COMMON_FILEIO_H
#define TERN_COMMON_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

/* Reads the whole regular file at `path` (at most `max_len` bytes) into a
 * malloc'd buffer. On success *out and *out_len are set and 0 is returned; the
 * caller frees *out. Errors name the path and say what went wrong. */
int tern_read_file(const char *path, size_t max_len, uint8_t **out, size_t *out_len,
                   struct tern_err *err);

/* Reads a small file whole into buf (cap bytes, NUL-terminated), reading
 * until EOF: proc and cgroupfs files report size 0. Returns the length
 * (cut at cap - 1), or -1 with err set (err may be NULL; errno is kept). */
ssize_t tern_read_small(const char *path, char *buf, size_t cap, struct tern_err *err);

#endif
