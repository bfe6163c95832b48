/* Tests for the PVH start info, memory map, module list and command line
 * (node-vmm/boot_pvh.c) on small, hole-sized and above-4-GiB guests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node-vmm/boot.h"
#include "node-vmm/guest_abi.h"
#include "node-vmm/pvh_abi.h"

#define MIB (1ull << 20)
#define GIB (1ull << 30)

/* Guest RAM is a sparse memfd mapped MAP_NORESERVE: 5 GiB costs only the
 * pages the test touches. */
static struct guest_memory *make_gm(uint64_t size)
{
    struct guest_memory *gm = calloc(1, sizeof(*gm));
    struct tern_err err;
    assert_non_null(gm);
    if (guest_memory_create(gm, size, &err) < 0)
        fail_msg("%s", err.msg);
    return gm;
}

static void free_gm(struct guest_memory *gm)
{
    guest_memory_destroy(gm);
    free(gm);
}

static struct pvh_start_info read_si(struct guest_memory *gm, uint64_t gpa)
{
    struct pvh_start_info si;
    const void *p = guest_memory_ptr(gm, gpa, sizeof(si));
    assert_non_null(p);
    memcpy(&si, p, sizeof(si));
    return si;
}

static void expect_entry(struct guest_memory *gm, const struct pvh_start_info *si, unsigned i,
                         uint64_t addr, uint64_t size, uint32_t type)
{
    struct pvh_memmap_entry e;
    assert_true(i < si->memmap_entries);
    memcpy(&e, guest_memory_ptr(gm, si->memmap_paddr + i * sizeof(e), sizeof(e)), sizeof(e));
    assert_int_equal(e.addr, addr);
    assert_int_equal(e.size, size);
    assert_int_equal(e.type, type);
    assert_int_equal(e.reserved, 0);
}

/* Start info with `cmdline` and no initrd; checks the common fields. */
static struct pvh_start_info write_and_check(struct guest_memory *gm, const char *cmdline)
{
    uint64_t gpa = 0;
    struct tern_err err = {0};
    if (pvh_write_start_info(gm, cmdline, 0, 0, &gpa, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(gpa, TERN_BOOT_DATA_START);
    struct pvh_start_info si = read_si(gm, gpa);
    assert_int_equal(si.magic, 0x336ec578);
    assert_int_equal(si.version, 1);
    assert_int_equal(si.flags, 0);
    assert_int_equal(si.nr_modules, 0);
    assert_int_equal(si.modlist_paddr, 0);
    assert_int_equal(si.rsdp_paddr, 0);
    /* Everything lies inside the boot data area, in order. */
    assert_true(si.memmap_paddr > gpa);
    assert_true(si.cmdline_paddr > si.memmap_paddr);
    assert_true(si.cmdline_paddr < TERN_BOOT_DATA_END);
    const char *c = guest_memory_ptr(gm, si.cmdline_paddr, 1);
    assert_string_equal(c, cmdline ? cmdline : "");
    return si;
}

static void test_memmap_64m(void **state)
{
    (void)state;
    struct guest_memory *gm = make_gm(64 * MIB);
    struct pvh_start_info si = write_and_check(gm, "console=ttyS0 earlyprintk=serial");
    assert_int_equal(si.memmap_entries, 3);
    expect_entry(gm, &si, 0, 0, TERN_LOW_RAM_END, 1);
    expect_entry(gm, &si, 1, TERN_LOW_RAM_END, MIB - TERN_LOW_RAM_END, 2);
    expect_entry(gm, &si, 2, MIB, 63 * MIB, 1);
    free_gm(gm);
}

static void test_memmap_3g(void **state)
{
    (void)state;
    struct guest_memory *gm = make_gm(3 * GIB); /* exactly up to the MMIO hole */
    struct pvh_start_info si = write_and_check(gm, NULL);
    assert_int_equal(si.memmap_entries, 3);
    expect_entry(gm, &si, 2, MIB, 3 * GIB - MIB, 1);
    free_gm(gm);
}

static void test_memmap_5g(void **state)
{
    (void)state;
    struct guest_memory *gm = make_gm(5 * GIB);
    struct pvh_start_info si = write_and_check(gm, "");
    assert_int_equal(si.memmap_entries, 4);
    expect_entry(gm, &si, 0, 0, TERN_LOW_RAM_END, 1);
    expect_entry(gm, &si, 1, TERN_LOW_RAM_END, MIB - TERN_LOW_RAM_END, 2);
    expect_entry(gm, &si, 2, MIB, TERN_MMIO_HOLE_START - MIB, 1);
    expect_entry(gm, &si, 3, TERN_HIGH_RAM_START, 5 * GIB - TERN_MMIO_HOLE_START, 1);
    free_gm(gm);
}

static void test_initrd_module(void **state)
{
    (void)state;
    struct guest_memory *gm = make_gm(64 * MIB);
    uint64_t gpa;
    struct tern_err err = {0};
    assert_int_equal(pvh_write_start_info(gm, "root=/dev/ram0", 60 * MIB, 0x12345, &gpa, &err),
                     0);
    struct pvh_start_info si = read_si(gm, gpa);
    assert_int_equal(si.nr_modules, 1);
    assert_true(si.modlist_paddr > si.memmap_paddr && si.modlist_paddr < si.cmdline_paddr);
    assert_int_equal(si.modlist_paddr % 8, 0);
    struct pvh_modlist_entry m;
    memcpy(&m, guest_memory_ptr(gm, si.modlist_paddr, sizeof(m)), sizeof(m));
    assert_int_equal(m.paddr, 60 * MIB);
    assert_int_equal(m.size, 0x12345);
    assert_int_equal(m.cmdline_paddr, 0);
    assert_int_equal(m.reserved, 0);

    /* An initrd that is not in RAM is refused. */
    assert_int_equal(pvh_write_start_info(gm, "", 63 * MIB, 2 * MIB, &gpa, &err), -1);
    assert_non_null(strstr(err.msg, "initrd"));
    assert_non_null(strstr(err.msg, "outside guest RAM"));
    free_gm(gm);
}

static void test_cmdline_limits(void **state)
{
    (void)state;
    struct guest_memory *gm = make_gm(16 * MIB);
    char *longest = malloc(BOOT_MAX_CMDLINE + 2);
    assert_non_null(longest);
    memset(longest, 'x', BOOT_MAX_CMDLINE);
    longest[BOOT_MAX_CMDLINE] = '\0';
    struct pvh_start_info si = write_and_check(gm, longest);
    const char *c = guest_memory_ptr(gm, si.cmdline_paddr, BOOT_MAX_CMDLINE + 1);
    assert_non_null(c);
    assert_true(si.cmdline_paddr + BOOT_MAX_CMDLINE + 1 <= TERN_BOOT_DATA_END);
    assert_int_equal(strlen(c), BOOT_MAX_CMDLINE);

    longest[BOOT_MAX_CMDLINE] = 'y';
    longest[BOOT_MAX_CMDLINE + 1] = '\0';
    uint64_t gpa;
    struct tern_err err = {0};
    assert_int_equal(pvh_write_start_info(gm, longest, 0, 0, &gpa, &err), -1);
    assert_non_null(strstr(err.msg, "command line is 4096 bytes; the limit is 4095"));

    /* A shorter command line afterwards leaves nothing of the longer one. */
    si = write_and_check(gm, "quiet");
    assert_int_equal(c[6], 0);
    assert_int_equal(c[BOOT_MAX_CMDLINE - 1], 0);
    free(longest);
    free_gm(gm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memmap_64m),
        cmocka_unit_test(test_memmap_3g),
        cmocka_unit_test(test_memmap_5g),
        cmocka_unit_test(test_initrd_module),
        cmocka_unit_test(test_cmdline_limits),
    };
    return cmocka_run_group_tests_name("boot_pvh", tests, NULL, NULL);
}
