/* Tests for boot_load() (node-vmm/boot.c): kernel and initrd files on disk,
 * ELF and bzImage kernels, initrd placement, and errors that name the file. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <lz4.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "node-vmm/boot.h"
#include "node-vmm/guest_abi.h"
#include "node-vmm/pvh_abi.h"

#define MIB (1ull << 20)
#define ENTRY (MIB + 0x40)

struct fx {
    char dir[64];
    char path[4][128]; /* scratch file names */
    struct guest_memory gm;
};

static void put_u32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

/* Minimal 64-bit PVH ELF: PT_LOAD at 1 MiB (body bytes + 4 KiB bss),
 * PT_NOTE with the entry note unless with_note is 0. */
static uint8_t *make_elf(size_t body, int with_note, size_t *len)
{
    const size_t phoff = sizeof(Elf64_Ehdr), note_off = phoff + 2 * sizeof(Elf64_Phdr);
    const size_t data_off = 0x100;
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
        {.p_type = PT_NOTE, .p_offset = note_off, .p_filesz = 24, .p_memsz = 24, .p_align = 4},
    };
    memcpy(img, &eh, sizeof(eh));
    memcpy(img + phoff, ph, sizeof(ph));
    put_u32(img + note_off, 4), put_u32(img + note_off + 4, 8);
    put_u32(img + note_off + 8, with_note ? 18 : 17);
    memcpy(img + note_off + 12, "Xen", 4);
    uint64_t entry = ENTRY;
    memcpy(img + note_off + 16, &entry, 8);
    for (size_t i = 0; i < body; i++)
        img[data_off + i] = (uint8_t)(i % 251);
    return img;
}

/* bzImage (protocol 2.15) whose payload is `payload`. */
static uint8_t *make_bzimage(const uint8_t *payload, size_t plen, size_t *len)
{
    const size_t setup = 5 * 512;
    *len = setup + plen;
    uint8_t *img = calloc(1, *len);
    assert_non_null(img);
    memcpy(img + 0x202, "HdrS", 4);
    img[0x206] = 0x0f, img[0x207] = 0x02;
    img[0x211] = 1;
    put_u32(img + 0x248, 0);
    put_u32(img + 0x24c, (uint32_t)plen);
    memcpy(img + setup, payload, plen);
    return img;
}

/* The ELF as a one-block legacy LZ4 payload with the size trailer. */
static uint8_t *lz4_payload(const uint8_t *src, size_t n, size_t *len)
{
    int bound = LZ4_compressBound((int)n);
    uint8_t *out = malloc(12 + (size_t)bound);
    assert_non_null(out);
    put_u32(out, 0x184c2102u);
    int c = LZ4_compress_default((const char *)src, (char *)out + 8, (int)n, bound);
    assert_true(c > 0);
    put_u32(out + 4, (uint32_t)c);
    put_u32(out + 8 + c, (uint32_t)n);
    *len = 12 + (size_t)c;
    return out;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void write_pattern_file(const char *path, size_t len)
{
    uint8_t *buf = malloc(len ? len : 1);
    assert_non_null(buf);
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    write_file(path, buf, len);
    free(buf);
}

static int fx_setup_size(void **state, uint64_t mem)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct tern_err err;
    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/tern-test-boot-XXXXXX");
    if (!mkdtemp(f->dir) || guest_memory_create(&f->gm, mem, &err) < 0) {
        free(f);
        return -1;
    }
    for (int i = 0; i < 4; i++)
        snprintf(f->path[i], sizeof(f->path[i]), "%s/f%d", f->dir, i);
    *state = f;
    return 0;
}

static int fx_setup(void **state)
{
    return fx_setup_size(state, 64 * MIB);
}

static int fx_setup_small(void **state)
{
    return fx_setup_size(state, 4 * MIB);
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 4; i++)
        unlink(f->path[i]); /* may not exist */
    rmdir(f->dir);
    guest_memory_destroy(&f->gm);
    free(f);
    return 0;
}

static void expect_load_error(struct fx *f, const char *kernel, const char *initrd,
                              const char *cmdline, unsigned vcpus, const char *needle1,
                              const char *needle2)
{
    struct boot_info bi;
    struct tern_err err = {0};
    int rc = boot_load(&f->gm, kernel, initrd, cmdline, vcpus, &bi, &err);
    if (rc != -1 || !strstr(err.msg, needle1) || (needle2 && !strstr(err.msg, needle2))) {
        print_error("expected an error containing \"%s\" and \"%s\", got rc %d, \"%s\"\n",
                    needle1, needle2 ? needle2 : "", rc, err.msg);
        fail();
    }
}

static void check_start_info(struct fx *f, const struct boot_info *bi, const char *cmdline)
{
    struct pvh_start_info si;
    memcpy(&si, guest_memory_ptr(&f->gm, bi->start_info_gpa, sizeof(si)), sizeof(si));
    assert_int_equal(si.magic, PVH_START_MAGIC);
    assert_string_equal((const char *)guest_memory_ptr(&f->gm, si.cmdline_paddr, 1), cmdline);
    assert_int_equal(si.nr_modules, bi->initrd_size ? 1 : 0);
    if (bi->initrd_size) {
        struct pvh_modlist_entry m;
        memcpy(&m, guest_memory_ptr(&f->gm, si.modlist_paddr, sizeof(m)), sizeof(m));
        assert_int_equal(m.paddr, bi->initrd_gpa);
        assert_int_equal(m.size, bi->initrd_size);
    }
    assert_memory_equal(guest_memory_ptr(&f->gm, TERN_BIOS_START, 4), "_MP_", 4);
}

static void test_elf_with_initrd(void **state)
{
    struct fx *f = *state;
    size_t len;
    uint8_t *elf = make_elf(5000, 1, &len);
    write_file(f->path[0], elf, len);
    write_pattern_file(f->path[1], 100001);

    struct boot_info bi;
    struct tern_err err = {0};
    if (boot_load(&f->gm, f->path[0], f->path[1], "console=ttyS0", 2, &bi, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(bi.entry_gpa, ENTRY);
    assert_int_equal(bi.start_info_gpa, TERN_BOOT_DATA_START);
    assert_int_equal(bi.kernel_start, MIB);
    assert_int_equal(bi.kernel_end, MIB + 5000 + 0x1000);
    assert_int_equal(bi.from_bzimage, 0);
    assert_int_equal(bi.initrd_size, 100001);
    assert_int_equal(bi.initrd_gpa % 4096, 0);
    assert_int_equal(bi.initrd_gpa, (64 * MIB - 100001) & ~4095ull); /* top of RAM */
    const uint8_t *rd = guest_memory_ptr(&f->gm, bi.initrd_gpa, bi.initrd_size);
    for (size_t i = 0; i < bi.initrd_size; i++)
        assert_int_equal(rd[i], (uint8_t)(i * 7 + 3));
    assert_memory_equal(guest_memory_ptr(&f->gm, MIB, 5000), elf + 0x100, 5000);
    check_start_info(f, &bi, "console=ttyS0");
    free(elf);
}

static void test_bzimage_no_initrd(void **state)
{
    struct fx *f = *state;
    size_t elf_len, lz_len, bz_len;
    uint8_t *elf = make_elf(20000, 1, &elf_len);
    uint8_t *lz = lz4_payload(elf, elf_len, &lz_len);
    uint8_t *bz = make_bzimage(lz, lz_len, &bz_len);
    write_file(f->path[0], bz, bz_len);

    struct boot_info bi;
    struct tern_err err = {0};
    if (boot_load(&f->gm, f->path[0], NULL, NULL, 1, &bi, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(bi.from_bzimage, 1);
    assert_int_equal(bi.entry_gpa, ENTRY);
    assert_int_equal(bi.initrd_gpa, 0);
    assert_int_equal(bi.initrd_size, 0);
    assert_memory_equal(guest_memory_ptr(&f->gm, MIB, 20000), elf + 0x100, 20000);
    check_start_info(f, &bi, "");
    free(bz);
    free(lz);
    free(elf);
}

static void test_kernel_errors(void **state)
{
    struct fx *f = *state;
    char missing[160];
    snprintf(missing, sizeof(missing), "%s/no-such-kernel", f->dir);
    expect_load_error(f, missing, NULL, "", 1, missing, "No such file");

    write_file(f->path[0], "MZ\x90\0 this is a PE file", 22);
    expect_load_error(f, f->path[0], NULL, "", 1, f->path[0],
                      "neither an ELF kernel nor a Linux bzImage");
    write_file(f->path[0], "", 0);
    expect_load_error(f, f->path[0], NULL, "", 1, f->path[0], "0 bytes");

    size_t len;
    uint8_t *elf = make_elf(100, 0, &len);
    write_file(f->path[0], elf, len);
    expect_load_error(f, f->path[0], NULL, "", 1, f->path[0], "no Xen PVH entry note");

    uint8_t xz[32] = {0xfd, '7', 'z', 'X', 'Z', 0x00};
    size_t bz_len;
    uint8_t *bz = make_bzimage(xz, sizeof(xz), &bz_len);
    write_file(f->path[0], bz, bz_len);
    expect_load_error(f, f->path[0], NULL, "", 1, f->path[0], "payload is xz-compressed");
    free(bz);

    /* A bzImage whose vmlinux lacks the note says where the ELF came from. */
    size_t lz_len;
    uint8_t *lz = lz4_payload(elf, len, &lz_len);
    bz = make_bzimage(lz, lz_len, &bz_len);
    write_file(f->path[0], bz, bz_len);
    expect_load_error(f, f->path[0], NULL, "", 1, "vmlinux unpacked from its bzImage",
                      "no Xen PVH entry note");
    free(bz);
    free(lz);
    free(elf);
}

static void test_argument_errors(void **state)
{
    struct fx *f = *state;
    size_t len;
    uint8_t *elf = make_elf(100, 1, &len);
    write_file(f->path[0], elf, len);
    free(elf);
    expect_load_error(f, f->path[0], NULL, "", 0, "0 vCPUs", NULL);
    expect_load_error(f, f->path[0], NULL, "", 255, "255 vCPUs", NULL);
    char *huge = malloc(BOOT_MAX_CMDLINE + 2);
    assert_non_null(huge);
    memset(huge, 'a', BOOT_MAX_CMDLINE + 1);
    huge[BOOT_MAX_CMDLINE + 1] = '\0';
    expect_load_error(f, f->path[0], NULL, huge, 1, "command line is 4096 bytes", NULL);
    free(huge);
}

static void test_initrd_errors(void **state)
{
    struct fx *f = *state; /* a 4 MiB guest */
    size_t len;
    uint8_t *elf = make_elf(100, 1, &len);
    write_file(f->path[0], elf, len);
    free(elf);

    char missing[160];
    snprintf(missing, sizeof(missing), "%s/no-such-initrd", f->dir);
    expect_load_error(f, f->path[0], missing, "", 1, "cannot open initrd", missing);

    write_file(f->path[1], "", 0);
    expect_load_error(f, f->path[1 - 1], f->path[1], "", 1, "is empty", f->path[1]);

    expect_load_error(f, f->path[0], f->dir, "", 1, "not a regular file", f->dir);

    /* Kernel ends at 1 MiB + 0x1064 -> next page 0x102000; RAM ends at 4 MiB. */
    write_pattern_file(f->path[1], 4 * MIB - 0x102000 + 1);
    expect_load_error(f, f->path[0], f->path[1], "", 1, "does not fit", "give the VM at least 5 MiB");

    /* One byte less fits exactly, right after the kernel. */
    write_pattern_file(f->path[1], 4 * MIB - 0x102000);
    struct boot_info bi;
    struct tern_err err = {0};
    if (boot_load(&f->gm, f->path[0], f->path[1], "", 1, &bi, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(bi.initrd_gpa, 0x102000);
}

static void test_real_kernel(void **state)
{
    struct fx *f = *state;
    struct stat st;
    const char *kernel = getenv("TERN_REAL_KERNEL");
    if (stat(kernel, &st) < 0)
        fail_msg("TERN_REAL_KERNEL=%s: %s", kernel, strerror(errno));
    write_pattern_file(f->path[1], MIB);
    struct boot_info bi;
    struct tern_err err = {0};
    if (boot_load(&f->gm, kernel, f->path[1], "console=ttyS0", 2, &bi, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(bi.from_bzimage, 1);
    assert_int_equal(bi.kernel_start, 0x1000000);
    assert_true(bi.entry_gpa > bi.kernel_start && bi.entry_gpa < bi.kernel_end);
    assert_true(bi.initrd_gpa >= bi.kernel_end);
    assert_int_equal(bi.initrd_gpa + bi.initrd_size, 64 * MIB);
    check_start_info(f, &bi, "console=ttyS0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_elf_with_initrd, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_bzimage_no_initrd, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_kernel_errors, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_argument_errors, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_initrd_errors, fx_setup_small, fx_teardown),
        cmocka_unit_test_setup_teardown(test_real_kernel, fx_setup, fx_teardown),
    };
    /* The last test reads a real distribution kernel: `make test-slow`
     * downloads one and runs it with TERN_REAL_KERNEL set. */
    size_t n = sizeof(tests) / sizeof(tests[0]);
    if (!getenv("TERN_REAL_KERNEL")) {
        print_message("test_real_kernel: not run (it runs under make test-slow, TERN_REAL_KERNEL)\n");
        n--;
    }
    return _cmocka_run_group_tests("boot_load", tests, n, NULL, NULL);
}
