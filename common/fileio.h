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

/* Writes `len` bytes to `path` so that after a crash the file holds either
 * its old content or the new, never a mix: PATH.tmp (created with `mode`),
 * fsync, rename over PATH, fsync of the directory. Errors name the step
 * and the path. */
int tern_write_file_atomic(const char *path, const void *buf, size_t len, mode_t mode,
                           struct tern_err *err);

/* write(2) until all of it is written (EINTR retried). -1 with errno. */
int tern_write_all(int fd, const void *buf, size_t len);

/* fsyncs the directory that holds `path` (after a create or rename). */
int tern_fsync_dir_of(const char *path, struct tern_err *err);

#endif
