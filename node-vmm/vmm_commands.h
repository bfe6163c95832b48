/* The commands tern-vmm's control socket understands (docs/control-protocol.md)
 * and the JSON they return. One table serves the whole life of the process:
 * while an incoming migration is received (`run --incoming`) only status,
 * stop, migrate-commit and migrate-abort work; the others say why not. */
#ifndef TERN_NODE_VMM_VMM_COMMANDS_H
#define TERN_NODE_VMM_VMM_COMMANDS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "control.h"
#include "vm.h"

struct mig_incoming;

/* The control server's opaque: the VM and, while it is being received, the
 * incoming migration (main.c sets it and clears it once the guest runs). */
struct vmm_ctl {
    struct vm *vm;
    struct mig_incoming *incoming;
    bool received;          /* the guest came by an incoming migration, committed */
    bool stop_after_start;  /* `stop` arrived while committing: end once started */
    /* Called before (true) and after (false) `migrate` replaces
     * vm->migration, so the main loop stops watching the old one's events
     * before it is freed. NULL: nobody watches. */
    void (*migration_changed)(void *loop_opaque, bool before_replace);
    void *loop_opaque;
};

extern const struct control_command vmm_commands[];
extern const size_t vmm_nr_commands;

/* The status object: state, vcpus, mem, uptime, exits, heartbeat. */
json_t *vmm_status_json(struct vm *vm);

#endif
