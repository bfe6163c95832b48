/* Helpers for integration tests: start tern-vmm (or any program) with its
 * output captured in files, wait with a deadline, and always kill what was
 * started, by pid. */
#ifndef TERN_TESTS_SUPPORT_PROC_H
#define TERN_TESTS_SUPPORT_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct test_proc {
    pid_t pid;
    int status;  /* exit status once reaped; 128+signal if killed */
    bool exited;
    char out_path[256];
    char err_path[256];
};

/* Path of a build artefact: $TERN_BUILD/name (TERN_BUILD defaults to build). */
const char *test_build_path(const char *name);

/* A fresh directory under /tmp for one test; removed by test_rmtree. */
char *test_make_tmpdir(const char *tag);
void test_rmtree(const char *dir);

/* Starts argv (NULL-terminated) with stdin from /dev/null and stdout/stderr
 * to files in `dir`. Returns 0 on success. */
int test_proc_start(struct test_proc *p, const char *dir, char *const argv[]);

/* Waits up to timeout_ms for exit. Returns 1 if it exited, 0 on timeout. */
int test_proc_wait(struct test_proc *p, int timeout_ms);

/* Sends `sig` (if still running). */
void test_proc_signal(struct test_proc *p, int sig);

/* SIGKILLs the process if it still runs and reaps it. Safe to call twice. */
void test_proc_kill(struct test_proc *p);

/* Fills argv (room for `cap` entries) with `tern-vmm run ARGS...
 * --serial file:SERIAL --control CONTROL` and a NULL; `scratch` holds the
 * "file:SERIAL" option (cut to scratch_len). Returns the count. */
int test_vmm_argv(char **argv, int cap, const char *const *args, const char *serial,
                  char *scratch, size_t scratch_len, const char *control);

/* Creates (or truncates) a sparse raw disk image of `bytes`. 0 or -1. */
int test_make_disk(const char *path, long long bytes);

/* Reads a whole file into a NUL-terminated malloc'd string ("" if missing). */
char *test_read_text(const char *path);

/* Polls `path` until it contains `needle` or timeout_ms passes. */
bool test_wait_for_text(const char *path, const char *needle, int timeout_ms);

/* The number after the last `key` (e.g. "checks=") in the complete lines of
 * `path` (a line still being written is ignored), or -1 if none. */
long test_last_value(const char *path, const char *key);

/* Counts occurrences of `needle` in `path`. */
int test_count_text(const char *path, const char *needle);

/* Writes a minimal ELF64 PVH kernel whose entry (32-bit protected mode, at
 * 1 MiB + 0x1000) runs `code`. For testing how the VMM handles guests that
 * misbehave. */
int test_write_pvh_elf(const char *path, const unsigned char *code, size_t len);

void test_sleep_ms(int ms);

/* Whether process `pid` exists and is not a zombie (from /proc/PID/stat). */
bool test_pid_running(pid_t pid);

#endif
