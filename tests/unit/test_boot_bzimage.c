/* Tests for bzImage parsing and LZ4 payload unpacking
 * (node-vmm/boot_bzimage.c). bzImages are synthesised in memory around a
 * small PVH ELF compressed with liblz4; a real Debian kernel is used too
 * when present. */
#include <elf.h>
#include <errno.h>
#include <lz4.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "common/fileio.h"
#include "node-vmm/boot.h"

#define MIB (1ull << 20)
#define LZ4_MAGIC 0x184c2102u
#define PM_PAYLOAD_OFFSET 0x100 /* payload offset inside the protected-mode part */

static void put_u16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static void put_u64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

/* A minimal 64-bit PVH ELF: one PT_LOAD at 1 MiB holding `body` bytes of a
 * half-repetitive pattern (so LZ4 has something to do), one PT_NOTE. */
static uint8_t *make_pvh_elf(size_t body, size_t *len)
{
    const size_t phoff = sizeof(Elf64_Ehdr), note_off = phoff + 2 * sizeof(Elf64_Phdr);
    const size_t note_len = 24, data_off = 0x100;
    *len = data_off + body;
    uint8_t *img = calloc(1, *len);
    assert_non_null(img);
    Elf64_Ehdr eh = {.e_ident = {ELFMAG0, ELFMAG1, ELFMAG2, ELFMAG3, ELFCLASS64, ELFDATA2LSB,
                                 EV_CURRENT},
                     .e_type = ET_EXEC, .e_machine = EM_X86_64, .e_version = EV_CURRENT,
                     .e_phoff = phoff, .e_ehsize = sizeof(eh),
                     .e_phentsize = sizeof(Elf64_Phdr), .e_phnum = 2};
    Elf64_Phdr ph[2] = {
        {.p_type = PT_LOAD, .p_offset = data_off, .p_paddr = MIB, .p_filesz = body,
         .p_memsz = body + 0x1000, .p_align = 0x1000},
        {.p_type = PT_NOTE, .p_offset = note_off, .p_filesz = note_len, .p_memsz = note_len,
         .p_align = 4},
    };
    memcpy(img, &eh, sizeof(eh));
    memcpy(img + phoff, ph, sizeof(ph));
    put_u32(img + note_off, 4), put_u32(img + note_off + 4, 8), put_u32(img + note_off + 8, 18);
    memcpy(img + note_off + 12, "Xen", 4);
    put_u64(img + note_off + 16, MIB + 0x40);
    for (size_t i = 0; i < body; i++)
        img[data_off + i] = (i / 512) % 2 ? (uint8_t)(i * 2654435761u >> 13) : (uint8_t)(i % 61);
    return img;
}

/* Legacy LZ4 frame(s) of src, split into `block`-byte blocks, with a new
 * frame magic every `frame_blocks` blocks (0: one frame), then the
 * kernel's 4-byte size trailer. */
static uint8_t *lz4_legacy(const uint8_t *src, size_t n, size_t block, unsigned frame_blocks,
                           size_t *out_len)
{
    size_t nblocks = (n + block - 1) / block;
    size_t cap = 8 + nblocks * (8 + (size_t)LZ4_compressBound((int)block));
    uint8_t *out = malloc(cap);
    assert_non_null(out);
    size_t o = 0;
    put_u32(out, LZ4_MAGIC);
    o += 4;
    for (size_t b = 0; b < nblocks; b++) {
        if (frame_blocks && b && b % frame_blocks == 0) {
            put_u32(out + o, LZ4_MAGIC);
            o += 4;
        }
        size_t chunk = n - b * block < block ? n - b * block : block;
        int c = LZ4_compress_default((const char *)src + b * block, (char *)out + o + 4,
                                     (int)chunk, LZ4_compressBound((int)block));
        assert_true(c > 0);
        put_u32(out + o, (uint32_t)c);
        o += 4 + (size_t)c;
    }
    put_u32(out + o, (uint32_t)n);
    *out_len = o + 4;
    return out;
}

/* A bzImage around `payload`: setup sectors, header, then the payload at
 * PM_PAYLOAD_OFFSET into the protected-mode part, then a little tail. */
static uint8_t *make_bzimage(const uint8_t *payload, size_t plen, uint8_t setup_sects,
                             uint16_t version, size_t *len)
{
    size_t setup = ((size_t)(setup_sects ? setup_sects : 4) + 1) * 512;
    *len = setup + PM_PAYLOAD_OFFSET + plen + 0x40;
    uint8_t *img = calloc(1, *len);
    assert_non_null(img);
    img[0x1f1] = setup_sects;
    put_u16(img + 0x1fe, 0xaa55);
    memcpy(img + 0x202, "HdrS", 4);
    put_u16(img + 0x206, version);
    img[0x211] = 0x01; /* LOADED_HIGH */
    put_u16(img + 0x236, 0x7f);
    put_u32(img + 0x248, PM_PAYLOAD_OFFSET);
    put_u32(img + 0x24c, (uint32_t)plen);
    put_u64(img + 0x258, 0x1000000);
    put_u32(img + 0x260, 0x3000000);
    memcpy(img + setup + PM_PAYLOAD_OFFSET, payload, plen);
    return img;
}

static void expect_extract_error(const uint8_t *img, size_t len, const char *needle)
{
    struct tern_err err = {0};
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rc = bzimage_extract_vmlinux(img, len, &out, &out_len, &err);
    if (rc != -1 || !strstr(err.msg, needle)) {
        print_error("expected an error containing \"%s\", got rc %d, \"%s\"\n", needle, rc,
                    err.msg);
        free(out);
        fail();
    }
}

/* ELF -> LZ4 -> bzImage -> extract: must give back the ELF, byte for byte. */
static void roundtrip(size_t body, size_t block, unsigned frame_blocks, uint8_t setup_sects)
{
    size_t elf_len, lz_len, bz_len, out_len = 0;
    uint8_t *elf = make_pvh_elf(body, &elf_len);
    uint8_t *lz = lz4_legacy(elf, elf_len, block, frame_blocks, &lz_len);
    uint8_t *bz = make_bzimage(lz, lz_len, setup_sects, 0x020f, &bz_len);
    struct tern_err err = {0};
    uint8_t *out = NULL;
    if (bzimage_extract_vmlinux(bz, bz_len, &out, &out_len, &err) < 0)
        fail_msg("extract failed: %s", err.msg);
    assert_int_equal(out_len, elf_len);
    assert_memory_equal(out, elf, elf_len);
    struct elf_pvh_image img;
    assert_int_equal(elf_pvh_inspect(out, out_len, &img, &err), 0);
    assert_int_equal(img.entry, MIB + 0x40);
    free(out);
    free(bz);
    free(lz);
    free(elf);
}

/* --- header --- */

static void test_detect(void **state)
{
    (void)state;
    uint8_t payload[16] = {0x1f, 0x8b};
    size_t len;
    uint8_t *bz = make_bzimage(payload, sizeof(payload), 0, 0x020f, &len);
    assert_int_equal(bzimage_detect(bz, len), 1);
    assert_int_equal(bzimage_detect(bz, 0x205), 0); /* "HdrS" cut */
    assert_int_equal(bzimage_detect(bz, 0), 0);
    bz[0x203] = 'x';
    assert_int_equal(bzimage_detect(bz, len), 0);
    free(bz);
}

static void test_parse_good(void **state)
{
    (void)state;
    uint8_t payload[64] = {0x02, 0x21, 0x4c, 0x18};
    size_t len;
    uint8_t *bz = make_bzimage(payload, sizeof(payload), 0, 0x020f, &len);
    struct bzimage_header h;
    struct tern_err err = {0};
    assert_int_equal(bzimage_parse_header(bz, len, &h, &err), 0);
    assert_int_equal(h.protocol, 0x020f);
    assert_int_equal(h.setup_bytes, 5 * 512); /* setup_sects 0 means 4 */
    assert_int_equal(h.payload_offset, PM_PAYLOAD_OFFSET);
    assert_int_equal(h.payload_length, sizeof(payload));
    assert_int_equal(h.loadflags, 1);
    assert_int_equal(h.xloadflags, 0x7f);
    assert_int_equal(h.pref_address, 0x1000000);
    assert_int_equal(h.init_size, 0x3000000);
    free(bz);

    bz = make_bzimage(payload, sizeof(payload), 27, 0x0208, &len);
    assert_int_equal(bzimage_parse_header(bz, len, &h, &err), 0);
    assert_int_equal(h.setup_bytes, 28 * 512);
    assert_int_equal(h.pref_address, 0); /* a 2.08 header has none */
    assert_int_equal(h.init_size, 0);
    assert_int_equal(h.xloadflags, 0);
    free(bz);
}

static void expect_parse_error(const uint8_t *img, size_t len, const char *needle)
{
    struct bzimage_header h;
    struct tern_err err = {0};
    int rc = bzimage_parse_header(img, len, &h, &err);
    if (rc != -1 || !strstr(err.msg, needle)) {
        print_error("expected an error containing \"%s\", got rc %d, \"%s\"\n", needle, rc,
                    err.msg);
        fail();
    }
    expect_extract_error(img, len, needle);
}

static void test_parse_bad(void **state)
{
    (void)state;
    uint8_t payload[64] = {0x02, 0x21, 0x4c, 0x18};
    size_t len;
    uint8_t *bz = make_bzimage(payload, sizeof(payload), 4, 0x020f, &len);

    expect_parse_error(bz, 0x100, "no \"HdrS\"");
    expect_parse_error(bz, 0x208, "setup code"); /* header there, setup cut */
    expect_parse_error(bz, 5 * 512 - 1, "setup code");
    expect_parse_error(bz, 5 * 512 + PM_PAYLOAD_OFFSET + 10, "lies outside the file");

    memcpy(bz + 0x202, "HdrZ", 4);
    expect_parse_error(bz, len, "no \"HdrS\"");
    memcpy(bz + 0x202, "HdrS", 4);

    put_u16(bz + 0x206, 0x0206);
    expect_parse_error(bz, len, "boot protocol 2.06");
    expect_parse_error(bz, len, "2.08 or later");
    put_u16(bz + 0x206, 0x020f);

    bz[0x211] = 0;
    expect_parse_error(bz, len, "zImage");
    bz[0x211] = 1;

    bz[0x1f1] = 200;
    expect_parse_error(bz, len, "setup code (201 sectors");
    bz[0x1f1] = 4;

    put_u32(bz + 0x24c, 0xffffffffu);
    expect_parse_error(bz, len, "lies outside the file");
    put_u32(bz + 0x24c, sizeof(payload));
    put_u32(bz + 0x248, 0xffffffffu);
    expect_parse_error(bz, len, "lies outside the file");
    put_u32(bz + 0x248, PM_PAYLOAD_OFFSET);
    put_u32(bz + 0x24c, 0);
    expect_parse_error(bz, len, "is empty");
    free(bz);
}

/* --- payload formats --- */

static void test_compressions_named(void **state)
{
    (void)state;
    static const struct {
        uint8_t magic[8];
        const char *needle;
    } cases[] = {
        {{0x1f, 0x8b, 0x08}, "payload is gzip-compressed"},
        {{0xfd, '7', 'z', 'X', 'Z', 0x00}, "payload is xz-compressed"},
        {{0x5d, 0x00, 0x00, 0x80}, "payload is lzma-compressed"},
        {{'B', 'Z', 'h', '9'}, "payload is bzip2-compressed"},
        {{0x89, 'L', 'Z', 'O', 0}, "payload is lzo-compressed"},
        {{0x28, 0xb5, 0x2f, 0xfd}, "payload is zstd-compressed"},
        {{0xde, 0xad, 0xbe, 0xef}, "unknown format (starts de ad be ef)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t payload[32] = {0};
        memcpy(payload, cases[i].magic, sizeof(cases[i].magic));
        size_t len;
        uint8_t *bz = make_bzimage(payload, sizeof(payload), 0, 0x020f, &len);
        expect_extract_error(bz, len, cases[i].needle);
        if (i < 6) {
            expect_extract_error(bz, len, "tern-vmm unpacks LZ4 kernels only");
            expect_extract_error(bz, len, "extract-vmlinux");
        }
        free(bz);
    }
}

static void test_lz4_roundtrip(void **state)
{
    (void)state;
    roundtrip(3000, 8 << 20, 0, 0);     /* one block, as the kernel writes it */
    roundtrip(300000, 4096, 0, 27);     /* many blocks */
    roundtrip(300000, 65536, 2, 1);     /* concatenated frames */
    roundtrip(100000, 100000 + 0x100, 0, 0); /* exactly one full block */
}

static void test_uncompressed_elf_payload(void **state)
{
    (void)state;
    size_t elf_len, bz_len, out_len;
    uint8_t *elf = make_pvh_elf(1000, &elf_len);
    uint8_t *bz = make_bzimage(elf, elf_len, 0, 0x020f, &bz_len);
    struct tern_err err;
    uint8_t *out;
    assert_int_equal(bzimage_extract_vmlinux(bz, bz_len, &out, &out_len, &err), 0);
    assert_int_equal(out_len, elf_len);
    assert_memory_equal(out, elf, elf_len);
    free(out);
    free(bz);
    free(elf);
}

/* An LZ4 bzImage around a small ELF, for the corruption tests. */
struct lz4_bz {
    uint8_t *bz;
    size_t len;
    size_t payload; /* offset of the payload in bz */
    size_t plen;
};

static struct lz4_bz make_lz4_bz(size_t body, size_t block)
{
    size_t elf_len, lz_len;
    struct lz4_bz r;
    uint8_t *elf = make_pvh_elf(body, &elf_len);
    uint8_t *lz = lz4_legacy(elf, elf_len, block, 0, &lz_len);
    r.bz = make_bzimage(lz, lz_len, 0, 0x020f, &r.len);
    r.payload = 5 * 512 + PM_PAYLOAD_OFFSET;
    r.plen = lz_len;
    free(lz);
    free(elf);
    return r;
}

static void test_lz4_corrupt(void **state)
{
    (void)state;
    struct lz4_bz b = make_lz4_bz(20000, 8 << 20);
    uint8_t *p = b.bz + b.payload;
    uint32_t csize;
    memcpy(&csize, p + 4, 4);

    /* Garbage tokens: literal runs that run past the block. */
    uint8_t saved[64];
    memcpy(saved, p + 8, sizeof(saved));
    memset(p + 8, 0xff, sizeof(saved));
    expect_extract_error(b.bz, b.len, "LZ4 block 0 at payload offset 4 is corrupt");
    memcpy(p + 8, saved, sizeof(saved));

    /* A block size beyond the payload. */
    put_u32(p + 4, (uint32_t)b.plen);
    expect_extract_error(b.bz, b.len, "claims");
    put_u32(p + 4, 0);
    expect_extract_error(b.bz, b.len, "claims 0 compressed bytes");
    put_u32(p + 4, csize);

    /* Size trailer lies. */
    uint32_t total;
    memcpy(&total, p + b.plen - 4, 4);
    put_u32(p + b.plen - 4, total + 1);
    expect_extract_error(b.bz, b.len, "but its size trailer says");
    put_u32(p + b.plen - 4, total - 1);
    expect_extract_error(b.bz, b.len, "unpacks past");
    put_u32(p + b.plen - 4, 0);
    expect_extract_error(b.bz, b.len, "unpacks to 0 bytes");
    put_u32(p + b.plen - 4, (uint32_t)b.plen * 300);
    expect_extract_error(b.bz, b.len, "more than LZ4 can encode");
    put_u32(p + b.plen - 4, 0xfffffff0u);
    expect_extract_error(b.bz, b.len, "MiB limit");
    put_u32(p + b.plen - 4, total);

    /* Payload cut inside the block (the trailer is then read from the
     * block's bytes, so any of several complaints is right; just fail). */
    struct tern_err err;
    uint8_t *out;
    size_t out_len;
    for (uint32_t cut = 1; cut < b.plen; cut += 7) {
        put_u32(b.bz + 0x24c, cut);
        assert_int_equal(bzimage_extract_vmlinux(b.bz, b.len, &out, &out_len, &err), -1);
    }
    put_u32(b.bz + 0x24c, 10);
    expect_extract_error(b.bz, b.len, "only 10 bytes");
    free(b.bz);

    /* Valid LZ4 of something that is not an ELF. */
    uint8_t text[5000];
    memset(text, 'a', sizeof(text));
    size_t lz_len, bz_len;
    uint8_t *lz = lz4_legacy(text, sizeof(text), 4096, 0, &lz_len);
    uint8_t *bz = make_bzimage(lz, lz_len, 0, 0x020f, &bz_len);
    expect_extract_error(bz, bz_len, "not an ELF");
    free(bz);
    free(lz);
}

static void test_lz4_block_header_cut(void **state)
{
    (void)state;
    /* Two blocks; shorten the payload so only 2 bytes of the second
     * block's size field remain before the trailer. */
    struct lz4_bz b = make_lz4_bz(10000, 4096);
    uint8_t *p = b.bz + b.payload;
    uint32_t c0;
    memcpy(&c0, p + 4, 4);
    size_t cut = 4 + 4 + c0 + 2;
    memmove(p + cut, p + b.plen - 4, 4); /* keep a trailer */
    put_u32(b.bz + 0x24c, (uint32_t)(cut + 4));
    expect_extract_error(b.bz, b.len, "cut short");
    free(b.bz);
}

/* Byte flips all over an LZ4 bzImage: clean success or error only. */
static void test_lz4_mutations(void **state)
{
    (void)state;
    struct lz4_bz b = make_lz4_bz(20000, 4096);
    uint8_t *img = malloc(b.len);
    assert_non_null(img);
    uint32_t seed = 777;
    for (int iter = 0; iter < 5000; iter++) {
        memcpy(img, b.bz, b.len);
        for (int f = 0; f < 1 + iter % 3; f++) {
            seed = seed * 1103515245u + 12345u;
            /* Mostly the payload, sometimes the header. */
            size_t pos = iter % 5 ? b.payload + (seed >> 8) % b.plen : 0x1f0 + (seed >> 8) % 0x80;
            seed = seed * 1103515245u + 12345u;
            img[pos] ^= (uint8_t)(1u << ((seed >> 16) % 8));
        }
        struct tern_err err = {0};
        uint8_t *out = NULL;
        size_t out_len;
        int rc = bzimage_extract_vmlinux(img, b.len, &out, &out_len, &err);
        assert_true(rc == 0 || (rc == -1 && err.msg[0] != '\0'));
        if (rc == 0) {
            struct elf_pvh_image pi;
            (void)elf_pvh_inspect(out, out_len, &pi, &err);
            free(out);
        }
    }
    free(img);
    free(b.bz);
}

/* --- a real distribution kernel --- */

static void test_real_kernel(void **state)
{
    (void)state;
    struct stat st;
    const char *kernel = getenv("TERN_REAL_KERNEL");
    if (stat(kernel, &st) < 0)
        fail_msg("TERN_REAL_KERNEL=%s: %s", kernel, strerror(errno));
    uint8_t *bz, *vmlinux;
    size_t len, vlen;
    struct tern_err err = {0};
    if (tern_read_file(kernel, BOOT_MAX_KERNEL_BYTES, &bz, &len, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(bzimage_detect(bz, len), 1);
    struct bzimage_header h;
    assert_int_equal(bzimage_parse_header(bz, len, &h, &err), 0);
    assert_true(h.protocol >= 0x020f);
    if (bzimage_extract_vmlinux(bz, len, &vmlinux, &vlen, &err) < 0)
        fail_msg("%s", err.msg);
    assert_memory_equal(vmlinux, "\x7f" "ELF", 4);
    struct elf_pvh_image img;
    if (elf_pvh_inspect(vmlinux, vlen, &img, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(img.low, 0x1000000); /* Linux's physical start, 16 MiB */
    assert_true(img.entry > img.low && img.entry < img.high);
    print_message("vmlinux %zu bytes, PVH entry 0x%x, [0x%llx, 0x%llx)\n", vlen, img.entry,
                  (unsigned long long)img.low, (unsigned long long)img.high);
    free(vmlinux);
    free(bz);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_compressions_named),
        cmocka_unit_test(test_lz4_roundtrip),
        cmocka_unit_test(test_uncompressed_elf_payload),
        cmocka_unit_test(test_lz4_corrupt),
        cmocka_unit_test(test_lz4_block_header_cut),
        cmocka_unit_test(test_lz4_mutations),
        cmocka_unit_test(test_real_kernel),
    };
    /* The last test reads a real distribution kernel: `make test-slow`
     * downloads one and runs it with TERN_REAL_KERNEL set. */
    size_t n = sizeof(tests) / sizeof(tests[0]);
    if (!getenv("TERN_REAL_KERNEL")) {
        print_message("test_real_kernel: not run (it runs under make test-slow, TERN_REAL_KERNEL)\n");
        n--;
    }
    return _cmocka_run_group_tests("boot_bzimage", tests, n, NULL, NULL);
}
