/* The port I/O bus, the heartbeat device and guest memory layout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "node-vmm/dev_heartbeat.h"
#include "node-vmm/guest_abi.h"
#include "node-vmm/guest_memory.h"
#include "node-vmm/pio.h"
#include "proto/record.h"

static void test_pio_bus_overlap_and_lookup(void **state)
{
    (void)state;
    struct pio_bus bus = {0};
    struct tern_err err;
    struct pio_device a = {.name = "a", .base = 0x3f8, .len = 8};
    struct pio_device b = {.name = "b", .base = 0x3ff, .len = 2};
    struct pio_device c = {.name = "c", .base = 0x400, .len = 1};
    struct pio_device empty = {.name = "empty", .base = 0x10, .len = 0};
    struct pio_device wrap = {.name = "wrap", .base = 0xffff, .len = 2};
    assert_int_equal(pio_bus_register(&bus, &a, &err), 0);
    assert_int_equal(pio_bus_register(&bus, &b, &err), -1);
    assert_non_null(strstr(err.msg, "overlap a"));
    assert_int_equal(pio_bus_register(&bus, &c, &err), 0);
    assert_int_equal(pio_bus_register(&bus, &empty, &err), -1);
    assert_int_equal(pio_bus_register(&bus, &wrap, &err), -1);
    assert_ptr_equal(pio_bus_find(&bus, 0x3f8), &a);
    assert_ptr_equal(pio_bus_find(&bus, 0x3ff), &a);
    assert_ptr_equal(pio_bus_find(&bus, 0x400), &c);
    assert_null(pio_bus_find(&bus, 0x401));
    assert_null(pio_bus_find(&bus, 0x3f7));
}

static void test_pio_bus_full(void **state)
{
    (void)state;
    struct pio_bus bus = {0};
    struct tern_err err;
    static struct pio_device devs[PIO_BUS_MAX_DEVICES + 1];
    for (unsigned i = 0; i < PIO_BUS_MAX_DEVICES; i++) {
        devs[i] = (struct pio_device){.name = "d", .base = (uint16_t)(i * 4), .len = 4};
        assert_int_equal(pio_bus_register(&bus, &devs[i], &err), 0);
    }
    devs[PIO_BUS_MAX_DEVICES] = (struct pio_device){.name = "x", .base = 0x1000, .len = 1};
    assert_int_equal(pio_bus_register(&bus, &devs[PIO_BUS_MAX_DEVICES], &err), -1);
    assert_non_null(strstr(err.msg, "full"));
}

static void test_heartbeat_gaps_and_sequence(void **state)
{
    (void)state;
    struct dev_heartbeat hb;
    struct heartbeat_state s;
    dev_heartbeat_init(&hb);
    dev_heartbeat_snapshot(&hb, &s);
    assert_int_equal(s.count, 0);
    dev_heartbeat_record(&hb, 1, 1000000);
    dev_heartbeat_record(&hb, 2, 2000000);
    dev_heartbeat_record(&hb, 3, 7000000); /* 5 ms gap */
    dev_heartbeat_record(&hb, 4, 8000000);
    dev_heartbeat_snapshot(&hb, &s);
    assert_int_equal(s.count, 4);
    assert_int_equal(s.last_seq, 4);
    assert_int_equal(s.seq_errors, 0);
    assert_int_equal(s.first_ns, 1000000);
    assert_int_equal(s.last_ns, 8000000);
    assert_int_equal(s.max_gap_ns, 5000000);
    assert_int_equal(s.max_gap_end_ns, 7000000);
    dev_heartbeat_record(&hb, 4, 9000000); /* repeat */
    dev_heartbeat_record(&hb, 9, 9500000); /* skip */
    dev_heartbeat_snapshot(&hb, &s);
    assert_int_equal(s.seq_errors, 2);
    dev_heartbeat_destroy(&hb);
}

static void test_heartbeat_handover_gap(void **state)
{
    (void)state;
    struct dev_heartbeat a, b;
    struct rec_buf buf;
    struct tern_err err;
    dev_heartbeat_init(&a);
    dev_heartbeat_init(&b);
    assert_int_equal(b.handover_gap_ns, -1);
    dev_heartbeat_record(&a, 1, 1000000);
    dev_heartbeat_record(&a, 2, 2000000);
    rec_buf_init(&buf);
    dev_heartbeat_state_save(&a, &buf);
    struct rec_reader r, p;
    struct rec_header h;
    rec_reader_init(&r, buf.data, buf.len);
    assert_int_equal(rec_next(&r, &h, &p, &err), 1);
    assert_int_equal(dev_heartbeat_state_load(&b, &h, &p, &err), 0);
    assert_int_equal(b.handover_gap_ns, -1); /* nothing arrived yet */
    dev_heartbeat_record(&b, 3, 9000000);    /* 7 ms after the last one saved */
    dev_heartbeat_record(&b, 4, 9500000);
    assert_int_equal(b.handover_gap_ns, 7000000);
    rec_buf_free(&buf);
    dev_heartbeat_destroy(&a);
    dev_heartbeat_destroy(&b);
}

static void test_heartbeat_port_write(void **state)
{
    (void)state;
    struct dev_heartbeat hb;
    struct heartbeat_state s;
    dev_heartbeat_init(&hb);
    assert_int_equal(hb.pio.base, TERN_PORT_HEARTBEAT);
    uint8_t seq[4] = {1, 0, 0, 0};
    hb.pio.ops->write(&hb.pio, 0, seq, 4);
    hb.pio.ops->write(&hb.pio, 0, seq, 1); /* partial writes are ignored */
    hb.pio.ops->write(&hb.pio, 1, seq, 4);
    dev_heartbeat_snapshot(&hb, &s);
    assert_int_equal(s.count, 1);
    assert_int_equal(s.last_seq, 1);
    assert_true(s.last_ns > 1600000000ll * 1000000000ll); /* a real-time clock stamp */
    dev_heartbeat_destroy(&hb);
}

static void test_guest_memory_layout(void **state)
{
    (void)state;
    struct guest_memory gm;
    struct tern_err err;
    assert_int_equal(guest_memory_layout(&gm, 512ull << 20, &err), 0);
    assert_int_equal(gm.nr_regions, 1);
    assert_int_equal(gm.regions[0].size, 512ull << 20);
    assert_int_equal(guest_memory_layout(&gm, 5ull << 30, &err), 0);
    assert_int_equal(gm.nr_regions, 2);
    assert_int_equal(gm.regions[0].size, TERN_MMIO_HOLE_START);
    assert_int_equal(gm.regions[1].gpa, TERN_HIGH_RAM_START);
    assert_int_equal(gm.regions[1].size, (5ull << 30) - TERN_MMIO_HOLE_START);
    assert_int_equal(gm.regions[1].offset, TERN_MMIO_HOLE_START);
    assert_int_equal(guest_memory_low_end(&gm), TERN_MMIO_HOLE_START);
    assert_int_equal(guest_memory_layout(&gm, 1ull << 20, &err), -1);
    assert_int_equal(guest_memory_layout(&gm, (64ull << 20) + 1, &err), -1);
}

static void test_guest_memory_ptr_bounds(void **state)
{
    (void)state;
    struct guest_memory gm;
    struct tern_err err;
    assert_int_equal(guest_memory_create(&gm, 3ull << 30 | 64ull << 20, &err), 0);
    assert_non_null(guest_memory_ptr(&gm, 0, 4096));
    assert_non_null(guest_memory_ptr(&gm, TERN_MMIO_HOLE_START - 4096, 4096));
    assert_null(guest_memory_ptr(&gm, TERN_MMIO_HOLE_START - 4096, 4097)); /* into the hole */
    assert_null(guest_memory_ptr(&gm, TERN_MMIO_HOLE_START, 1));
    uint8_t *hi = guest_memory_ptr(&gm, TERN_HIGH_RAM_START, 4096);
    assert_non_null(hi);
    assert_ptr_equal(hi, gm.host_base + TERN_MMIO_HOLE_START);
    assert_null(guest_memory_ptr(&gm, TERN_HIGH_RAM_START + (64ull << 20), 1));
    assert_null(guest_memory_ptr(&gm, UINT64_MAX, 2));
    hi[0] = 0x5a; /* the mapping is writable */
    guest_memory_destroy(&gm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pio_bus_overlap_and_lookup),
        cmocka_unit_test(test_pio_bus_full),
        cmocka_unit_test(test_heartbeat_gaps_and_sequence),
        cmocka_unit_test(test_heartbeat_port_write),
        cmocka_unit_test(test_heartbeat_handover_gap),
        cmocka_unit_test(test_guest_memory_layout),
        cmocka_unit_test(test_guest_memory_ptr_bounds),
    };
    return cmocka_run_group_tests_name("devices", tests, NULL, NULL);
}
