/* libFuzzer harness for the control socket's request handling: any bytes
 * as one request line must give one well-formed JSON reply object with an
 * "ok" member, never a crash. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

#include "node-vmm/control.h"

static json_t *echo(void *opaque, json_t *req, struct tern_err *err)
{
    (void)opaque;
    (void)err;
    return json_pack("{s:O?}", "arg", json_object_get(req, "arg"));
}

static json_t *refuse(void *opaque, json_t *req, struct tern_err *err)
{
    (void)opaque;
    (void)req;
    tern_err_set(err, "refused");
    return NULL;
}

static const struct control_command commands[] = {{"status", echo}, {"stop", refuse}};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct control_server cs = {.commands = commands, .nr_commands = 2};
    char *reply = control_dispatch_line(&cs, (const char *)data, size);
    if (!reply)
        abort();
    json_t *j = json_loads(reply, 0, NULL);
    if (!j || !json_is_boolean(json_object_get(j, "ok")))
        abort();
    json_decref(j);
    free(reply);
    return 0;
}
