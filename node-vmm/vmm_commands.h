/* The commands tern-vmm's control socket understands (status, pause,
 * resume, stop) and the JSON they return. */
#ifndef TERN_NODE_VMM_VMM_COMMANDS_H
#define TERN_NODE_VMM_VMM_COMMANDS_H

#include <jansson.h>
#include <stddef.h>

#include "control.h"
#include "vm.h"

extern const struct control_command vmm_commands[];
extern const size_t vmm_nr_commands;

/* The status object: state, vcpus, mem, uptime, exits, heartbeat. */
json_t *vmm_status_json(struct vm *vm);

#endif
