/* ternctl: parsed arguments -> the agent request (docs/agent-api.md). */
#include "cli.h"

static json_t *config_json(const struct cli_args *a)
{
    json_t *disks = json_array();
    for (unsigned i = 0; i < a->nr_disks; i++)
        json_array_append_new(disks, json_pack("{s:s, s:b}", "path", a->disks[i].path, "ro",
                                               a->disks[i].ro));
    return json_pack("{s:s, s:s, s:s, s:I, s:i, s:o}", "kernel", a->kernel, "initrd", a->initrd,
                     "cmdline", a->cmdline ? a->cmdline : "", "mem_mib", (json_int_t)a->mem_mib,
                     "vcpus", a->vcpus, "disks", disks);
}

json_t *cli_build_request(const struct cli_args *a)
{
    json_t *r = NULL;
    switch (a->cmd) {
    case CLI_CMD_STATUS:
        return json_pack("{s:s}", "cmd", "status");
    case CLI_CMD_VM_LIST:
        return json_pack("{s:s}", "cmd", "vm.list");
    case CLI_CMD_HOST_LIST:
        return json_pack("{s:s}", "cmd", "host.list");
    case CLI_CMD_VM_DEFINE:
        r = json_pack("{s:s, s:s, s:o, s:b, s:i}", "cmd", "vm.define", "name", a->name, "config",
                      config_json(a), "ha", a->ha, "priority", a->priority);
        if (r && a->group)
            json_object_set_new(r, "group", json_string(a->group));
        return r;
    case CLI_CMD_VM_START:
        r = json_pack("{s:s, s:s}", "cmd", "vm.start", "name", a->name);
        if (r && a->host)
            json_object_set_new(r, "host", json_string(a->host));
        return r;
    case CLI_CMD_VM_STOP:
        return json_pack("{s:s, s:s}", "cmd", "vm.stop", "name", a->name);
    case CLI_CMD_VM_UNDEFINE:
        return json_pack("{s:s, s:s}", "cmd", "vm.undefine", "name", a->name);
    case CLI_CMD_VM_SHOW:
        return json_pack("{s:s, s:s}", "cmd", "vm.show", "name", a->name);
    case CLI_CMD_VM_MIGRATE:
        r = json_pack("{s:s, s:s, s:s}", "cmd", "vm.migrate", "name", a->name, "to", a->host);
        if (r && a->downtime_ms)
            json_object_set_new(r, "downtime_ms", json_integer(a->downtime_ms));
        if (r)
            json_object_set_new(r, "wait", json_boolean(!a->no_wait));
        return r;
    case CLI_CMD_HOST_EVACUATE:
        r = json_pack("{s:s, s:s}", "cmd", "host.evacuate", "host", a->name);
        if (r && a->parallel)
            json_object_set_new(r, "parallel", json_integer(a->parallel));
        if (r)
            json_object_set_new(r, "wait", json_boolean(!a->no_wait));
        return r;
    case CLI_CMD_HOST_ACTIVATE:
        return json_pack("{s:s, s:s}", "cmd", "host.activate", "host", a->name);
    case CLI_CMD_HOST_REMOVE:
        return json_pack("{s:s, s:s}", "cmd", "host.remove", "host", a->name);
    case CLI_CMD_HOST_FENCE:
        return json_pack("{s:s, s:s}", "cmd", "host.fence", "host", a->name);
    case CLI_CMD_HOST_CONFIRM_FENCED:
        return json_pack("{s:s, s:s}", "cmd", "host.confirm_fenced", "host", a->name);
    default:
        return NULL; /* local commands, or none */
    }
}
