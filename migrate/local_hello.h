/* This VM's HELLO: what both sides compare before any memory moves. */
#ifndef TERN_MIGRATE_LOCAL_HELLO_H
#define TERN_MIGRATE_LOCAL_HELLO_H

#include <stdint.h>

#include "../common/err.h"
#include "../proto/migration.h"

struct vm;

/* Fills `out` from the VM's configuration and RAM layout. */
int mig_local_hello(const struct vm *vm, uint16_t stream, uint16_t nr_streams, uint64_t session,
                    struct mig_hello *out, struct tern_err *err);

/* Test-only fault switch: the name in TERN_TEST_FAULT, so tests can make
 * either side fail at a chosen step. Returns 1 when `point` is selected. */
int mig_fault(const char *point);

#endif
