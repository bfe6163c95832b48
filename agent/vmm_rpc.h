/* One control request to a VM process (docs/control-protocol.md), without
 * blocking the agent's loop: connect, send one JSON line, read one JSON
 * line, all on non-blocking sockets driven by the loop, with a deadline.
 * A VMM that is stopped (SIGSTOP), wedged in the kernel or gone costs the
 * loop nothing: the call ends with an error when its time is up.
 *
 * The callback runs exactly once, from the loop (never from inside
 * vmm_rpc_start), unless the call is cancelled first. */
#ifndef TERN_AGENT_VMM_RPC_H
#define TERN_AGENT_VMM_RPC_H

#include <jansson.h>

#include "../common/err.h"
#include "../common/loop.h"

struct vmm_rpc;

/* reply: the VMM's {"ok":true,...} (the callback's to keep: json_incref),
 * or NULL with err saying why (no connection, timeout, {"ok":false}: the
 * VMM's own message). */
typedef void (*vmm_rpc_fn)(void *opaque, json_t *reply, const struct tern_err *err);

/* Sends `req` (not consumed) to the control socket at `path`. `what` names
 * the VM in errors. Returns the call, or NULL only when out of memory. */
struct vmm_rpc *vmm_rpc_start(struct loop *l, const char *path, const char *what,
                              const json_t *req, int timeout_ms, vmm_rpc_fn fn, void *opaque);

/* Forgets the call: the callback will not run. NULL is ignored. */
void vmm_rpc_cancel(struct vmm_rpc *c);

#endif
