/* libFuzzer harness for the PVH ELF loader: arbitrary bytes must give a
 * clean success or error from elf_pvh_inspect and elf_pvh_load, never a
 * crash or an out-of-bounds access.
 *
 *   clang -std=gnu11 -D_GNU_SOURCE -I. -g -O1 -fsanitize=fuzzer,address,undefined \
 *       tests/fuzz/fuzz_boot_elf.c node-vmm/boot_elf.c node-vmm/guest_memory.c \
 *       common/err.c -o fuzz_boot_elf */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "node-vmm/boot.h"

#define FUZZ_RAM (4u << 20)

/* A plain buffer stands in for guest RAM (memfd -1): no syscalls per run. */
static struct guest_memory *fuzz_guest(void)
{
    static struct guest_memory gm;
    static uint8_t *ram;
    if (!ram) {
        struct tern_err err;
        ram = calloc(1, FUZZ_RAM);
        if (!ram || guest_memory_layout(&gm, FUZZ_RAM, &err) < 0)
            abort();
        gm.host_base = ram;
    }
    return &gm;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tern_err err;
    struct elf_pvh_image a, b;
    int ri = elf_pvh_inspect(data, size, &a, &err);
    int rl = elf_pvh_load(data, size, fuzz_guest(), &b, &err);
    /* Loading can only fail where inspecting did, or on RAM placement. */
    if (ri < 0 && rl == 0)
        abort();
    if (rl == 0 && (a.entry != b.entry || a.low != b.low || a.high != b.high ||
                    b.entry < b.low || b.entry >= b.high))
        abort();
    return 0;
}
