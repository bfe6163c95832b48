/* Small file helpers shared by every subsystem. */
#ifndef TERN_COMMON_FILEIO_H
#define TERN_COMMON_FILEIO_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Reads the whole regular file at `path` (at most `max_len` bytes) into a
 * malloc'd buffer. On success *out and *out_len are set and 0 is returned; the
 * caller frees *out. Errors name the path and say what went wrong. */
int tern_read_file(const char *path, size_t max_len, uint8_t **out, size_t *out_len,
                   struct tern_err *err);

#endif
