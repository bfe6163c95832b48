#include "local_hello.h"

#include <stdlib.h>
#include <string.h>

#include "../node-vmm/vm.h"

int mig_local_hello(const struct vm *vm, uint16_t stream, uint16_t nr_streams, uint64_t session,
                    struct mig_hello *out, struct tern_err *err)
{
    memset(out, 0, sizeof(*out));
    bool ro[VMM_MAX_DISKS];
    for (unsigned i = 0; i < vm->nr_disks; i++)
        ro[i] = vm->disk_specs[i].read_only;
    if (mig_config_digest(vm->mem.size, vm->nr_vcpus, vm->tsc_khz, vm->nr_disks, ro,
                          out->config_digest, err) < 0)
        return -1;
    out->protocol = MIG_PROTOCOL_VERSION;
    out->session = session;
    out->ram_bytes = vm->mem.size;
    out->page_size = MIG_PAGE_SIZE;
    out->stream = stream;
    out->nr_streams = nr_streams;
    out->nr_regions = vm->mem.nr_regions;
    for (unsigned i = 0; i < vm->mem.nr_regions; i++)
        out->regions[i] = (struct mig_region){.gpa = vm->mem.regions[i].gpa,
                                              .size = vm->mem.regions[i].size,
                                              .offset = vm->mem.regions[i].offset};
    return 0;
}

int mig_fault(const char *point)
{
    const char *f = getenv("TERN_TEST_FAULT");
    return f && !strcmp(f, point);
}
