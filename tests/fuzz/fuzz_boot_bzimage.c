/* libFuzzer harness for bzImage parsing and LZ4 payload unpacking: any
 * input gives a clean success or error; whatever is unpacked is then fed to
 * the ELF inspector, as boot_load would.
 *
 *   clang -std=gnu11 -D_GNU_SOURCE -I. -g -O1 -fsanitize=fuzzer,address,undefined \
 *       tests/fuzz/fuzz_boot_bzimage.c node-vmm/boot_bzimage.c node-vmm/boot_elf.c \
 *       node-vmm/guest_memory.c common/err.c -llz4 -o fuzz_boot_bzimage */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "node-vmm/boot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tern_err err;
    struct bzimage_header h;
    (void)bzimage_detect(data, size);
    int rp = bzimage_parse_header(data, size, &h, &err);
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rx = bzimage_extract_vmlinux(data, size, &out, &out_len, &err);
    if (rp < 0 && rx == 0) /* extraction parses the same header */
        abort();
    if (rx == 0) {
        if (out_len < 4 || memcmp(out, "\x7f" "ELF", 4) != 0)
            abort();
        struct elf_pvh_image img;
        (void)elf_pvh_inspect(out, out_len, &img, &err);
        free(out);
    }
    return 0;
}
