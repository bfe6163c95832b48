/* Tests for the MP specification 1.4 tables (node-vmm/boot_mptable.c):
 * the tables are parsed back the way a guest would find them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node-vmm/boot.h"
#include "node-vmm/guest_abi.h"

#define MIB (1ull << 20)

static uint8_t sum8(const uint8_t *p, size_t len)
{
    uint8_t s = 0;
    for (size_t i = 0; i < len; i++)
        s = (uint8_t)(s + p[i]);
    return s;
}

static uint16_t rd16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* What a guest learns from the tables. */
struct mp_seen {
    unsigned count, cpus, bsp_count, buses, ioapics, ioints, lints;
    uint8_t cpu_ids[256];
    uint8_t ioapic_id;
    uint32_t ioapic_addr;
    int irq_pin[16]; /* ISA IRQ -> IOAPIC pin, -1 if unrouted */
    int extint_lint, nmi_lint;
};

/* Finds the floating pointer by scanning 0xf0000-0xfffff on 16-byte
 * boundaries, as Linux does, then walks the configuration table. */
static struct mp_seen parse_mp(struct guest_memory *gm)
{
    struct mp_seen s;
    memset(&s, 0, sizeof(s));
    memset(s.irq_pin, -1, sizeof(s.irq_pin));
    s.extint_lint = s.nmi_lint = -1;
    const uint8_t *bios = guest_memory_ptr(gm, 0xf0000, 0x10000);
    assert_non_null(bios);
    const uint8_t *fp = NULL;
    for (size_t o = 0; o < 0x10000; o += 16)
        if (memcmp(bios + o, "_MP_", 4) == 0 && sum8(bios + o, 16) == 0) {
            fp = bios + o;
            break;
        }
    assert_non_null(fp);
    assert_int_equal(fp[8], 1); /* length in paragraphs */
    assert_int_equal(fp[9], 4); /* spec 1.4 */
    assert_int_equal(fp[11], 0); /* a configuration table follows, no default config */

    uint32_t cfg_gpa = rd32(fp + 4);
    const uint8_t *cfg = guest_memory_ptr(gm, cfg_gpa, 44);
    assert_non_null(cfg);
    assert_memory_equal(cfg, "PCMP", 4);
    uint16_t len = rd16(cfg + 4);
    cfg = guest_memory_ptr(gm, cfg_gpa, len);
    assert_non_null(cfg);
    assert_int_equal(cfg[6], 4);
    assert_int_equal(sum8(cfg, len), 0);
    assert_int_equal(rd32(cfg + 36), 0xfee00000);
    uint16_t count = rd16(cfg + 34);
    s.count = count;

    size_t o = 44;
    for (unsigned i = 0; i < count; i++) {
        assert_true(o < len);
        const uint8_t *e = cfg + o;
        switch (e[0]) {
        case 0:
            s.cpu_ids[s.cpus++] = e[1];
            assert_int_equal(e[2], 0x14);
            assert_true(e[3] & 1);
            s.bsp_count += (e[3] & 2) != 0;
            if (e[3] & 2)
                assert_int_equal(e[1], 0);
            o += 20;
            break;
        case 1:
            s.buses++;
            assert_int_equal(e[1], 0);
            assert_memory_equal(e + 2, "ISA   ", 6);
            o += 8;
            break;
        case 2:
            s.ioapics++;
            s.ioapic_id = e[1];
            assert_true(e[3] & 1);
            s.ioapic_addr = rd32(e + 4);
            o += 8;
            break;
        case 3:
            s.ioints++;
            assert_int_equal(e[1], 0); /* INT */
            assert_int_equal(e[4], 0); /* ISA bus */
            assert_int_equal(e[6], s.ioapic_id);
            assert_true(e[5] < 16);
            assert_int_equal(s.irq_pin[e[5]], -1); /* each IRQ once */
            s.irq_pin[e[5]] = e[7];
            o += 8;
            break;
        case 4:
            s.lints++;
            assert_int_equal(e[6], 0xff); /* all local APICs */
            if (e[1] == 3)
                s.extint_lint = e[7];
            if (e[1] == 1)
                s.nmi_lint = e[7];
            o += 8;
            break;
        default:
            fail_msg("unknown MP entry type %u at offset %zu", e[0], o);
        }
    }
    assert_int_equal(o, len); /* the count and the length agree */
    return s;
}

static void check_vcpus(unsigned n)
{
    struct guest_memory gm;
    struct tern_err err = {0};
    if (guest_memory_create(&gm, 16 * MIB, &err) < 0)
        fail_msg("%s", err.msg);
    if (mptable_write(&gm, n, &err) < 0)
        fail_msg("%s", err.msg);
    struct mp_seen s = parse_mp(&gm);
    assert_int_equal(s.count, n + 1 + 1 + 15 + 2);
    assert_int_equal(s.cpus, n);
    assert_int_equal(s.bsp_count, 1);
    for (unsigned i = 0; i < n; i++)
        assert_int_equal(s.cpu_ids[i], i);
    assert_int_equal(s.buses, 1);
    assert_int_equal(s.ioapics, 1);
    assert_int_equal(s.ioapic_id, n);
    assert_int_equal(s.ioapic_addr, 0xfec00000);
    assert_int_equal(s.ioints, 15);
    assert_int_equal(s.irq_pin[0], 2); /* the PIT goes to pin 2 */
    assert_int_equal(s.irq_pin[2], -1); /* the cascade has no source */
    for (int irq = 1; irq < 16; irq++)
        if (irq != 2)
            assert_int_equal(s.irq_pin[irq], irq);
    assert_int_equal(s.lints, 2);
    assert_int_equal(s.extint_lint, 0);
    assert_int_equal(s.nmi_lint, 1);
    guest_memory_destroy(&gm);
}

static void test_one_vcpu(void **state)
{
    (void)state;
    check_vcpus(1);
}

static void test_four_vcpus(void **state)
{
    (void)state;
    check_vcpus(4);
}

static void test_max_vcpus(void **state)
{
    (void)state;
    check_vcpus(BOOT_MAX_VCPUS);
}

static void test_vcpu_bounds(void **state)
{
    (void)state;
    struct guest_memory gm;
    struct tern_err err = {0};
    if (guest_memory_create(&gm, 16 * MIB, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(mptable_write(&gm, 0, &err), -1);
    assert_non_null(strstr(err.msg, "0 vCPUs"));
    assert_int_equal(mptable_write(&gm, 255, &err), -1);
    assert_non_null(strstr(err.msg, "255 vCPUs"));
    assert_non_null(strstr(err.msg, "1 to 254"));
    guest_memory_destroy(&gm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_vcpu),
        cmocka_unit_test(test_four_vcpus),
        cmocka_unit_test(test_max_vcpus),
        cmocka_unit_test(test_vcpu_bounds),
    };
    return cmocka_run_group_tests_name("boot_mptable", tests, NULL, NULL);
}
