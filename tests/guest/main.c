/* The CPL3 entry points. The BSP reads the boot information and command
 * line, sets the workload up, starts the APs and joins the workload; an AP
 * starts its timer, checks in and joins. All of it runs in user mode (fast
 * here); the kernel is only asked for what needs CPL0. */
#include <stdint.h>

#include "acpi.h"
#include "bootinfo.h"
#include "clock.h"
#include "cmdline.h"
#include "console.h"
#include "disk.h"
#include "kernel_api.h"
#include "lib.h"
#include "mptable.h"
#include "pages.h"
#include "smp.h"
#include "tern_guest.h"
#include "usys.h"
#include "workload.h"
#include "x86.h"

/* The TSS I/O bitmap (descriptors.S) opens exactly these ports. */
_Static_assert(TG_PORT_COM1 == 0x3f8 && TG_PORT_DEBUG_EXIT == 0x501 && TG_PORT_HEARTBEAT == 0x510,
               "ports must match the TSS I/O bitmap");

#define MIB ((uint64_t)1 << 20)
#define MAPPED_LIMIT ((uint64_t)16 << 30) /* pagetables.S maps 0 .. 16 GiB */

extern char __bss_start[], __bss_end[], _end[];

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) & ~(a - 1);
}

/* CPUs: cpus= if given, else the processors of the ACPI MADT (firmware
 * with ACPI: QEMU), else of the MP table (tern-vmm), else 1. APIC ids come
 * from the table where it has them, else 0, 1, 2, ... skipping the BSP's
 * own id (from CPUID). Returns the count. */
static unsigned pick_cpus(const struct tg_params *p, const struct bootinfo *b, uint8_t *ids)
{
    uint32_t r[4];
    clock_cpuid(1, r);
    uint8_t bsp_id = (uint8_t)(r[1] >> 24);
    unsigned n = acpi_madt_cpus(b->si->rsdp_paddr, bsp_id, ids, TG_MAX_CPUS);
    if (!n)
        n = mptable_cpus(ids, TG_MAX_CPUS);
    unsigned want = p->cpus ? (unsigned)p->cpus : (n ? n : 1);

    if (!n) {
        ids[0] = bsp_id;
        n = 1;
    }
    for (unsigned id = 0; n < want; id++) {
        int used = 0;
        for (unsigned i = 0; i < n; i++)
            used |= ids[i] == id;
        if (!used)
            ids[n++] = (uint8_t)id;
    }
    return want;
}

/* Generation table right after the kernel image, fill area from 16 MiB
 * or the next 2 MiB boundary above the table; both must be RAM. */
static void place_fill(const struct tg_params *p, const struct bootinfo *b)
{
    uint64_t npages = p->fill_mb * MIB / TG_PAGE_SIZE;
    uint64_t table = align_up((uintptr_t)_end, 4096);
    uint64_t table_end = table + npages * sizeof(uint32_t);
    uint64_t fill = align_up(table_end, 2 * MIB);

    if (fill < TG_FILL_BASE)
        fill = TG_FILL_BASE;
    if (npages && (fill + p->fill_mb * MIB > MAPPED_LIMIT || !bootinfo_is_ram(b, table, table_end) ||
                   !bootinfo_is_ram(b, fill, fill + p->fill_mb * MIB))) {
        console_line(TG_FMT_FILL_NO_FIT, p->fill_mb, fill, fill + p->fill_mb * MIB);
        guest_exit(TG_EXIT_BAD_PARAM);
    }
    cfg.fill_pa = fill;
    cfg.npages = npages;
    cfg.gen_table = (uint32_t *)(uintptr_t)table;
}

void user_bsp_main(unsigned cpu)
{
    struct bootinfo b;
    struct tg_params p;
    struct tg_clock clk;
    char bad[64];
    uint8_t ids[TG_MAX_CPUS];
    unsigned missing;

    (void)cpu;
    /* .bss is ours to clear: the loader may not have (QEMU's firmware ran
     * first), and doing it here costs native, not emulated, time. */
    memset(__bss_start, 0, (size_t)(__bss_end - __bss_start));
    cfg.t0 = rdtsc();
    console_init();

    if (bootinfo_get(&b)) {
        console_line(TG_PREFIX "no PVH start info (ebx=0x%x)", boot_start_info);
        guest_exit(TG_EXIT_BOOT);
    }
    if (params_parse(b.cmdline, &p, bad, sizeof(bad))) {
        console_line(TG_FMT_BAD_PARAM, bad);
        guest_exit(TG_EXIT_BAD_PARAM);
    }
    if (p.disk && !p.virtio_count) {
        console_line(TG_FMT_DISK_NO_DEVICE);
        guest_exit(TG_EXIT_BAD_PARAM);
    }
    if (clock_detect(&p, &clk)) {
        console_line(TG_PREFIX "cannot calibrate the TSC: pass tsc_khz=");
        guest_exit(TG_EXIT_BOOT);
    }

    cfg.ncpus = pick_cpus(&p, &b, ids);
    cfg.tsc_khz = clk.tsc_khz;
    cfg.tick_us = p.tick_us;
    cfg.timer_count = p.tick_us * clk.apic_khz / 1000;
    if (!cfg.timer_count)
        cfg.timer_count = 1;
    if (cfg.timer_count > UINT32_MAX)
        cfg.timer_count = UINT32_MAX;
    cfg.seed = p.seed;
    cfg.dirty_bytes_per_cpu = p.dirty_mbs * 1000000 / cfg.ncpus;
    cfg.hb_cycles = p.hb_us * clk.tsc_khz / 1000;
    cfg.check_cycles = p.check_ms * clk.tsc_khz;
    cfg.status_cycles = p.status_ms * clk.tsc_khz;
    cfg.exit_after_s = p.exit_after_s;
    cfg.exit_code = (unsigned)p.exit_code;
    cfg.disk = (unsigned)p.disk;
    place_fill(&p, &b);

    console_line(TG_FMT_START, cfg.ncpus, p.fill_mb, p.dirty_mbs, p.hb_us, p.check_ms,
                 clk.tsc_khz);
    if (cfg.disk)
        disk_setup(&p, clk.tsc_khz);
    usys(TRAP_TIMER, (long)cfg.timer_count, 0);
    if (smp_start_aps(ids, cfg.ncpus, cfg.tsc_khz, &missing)) {
        console_line(TG_FMT_AP_FAILED, missing, ids[missing]);
        guest_exit(TG_EXIT_SMP);
    }
    console_line(TG_LINE_RUNNING);
    workload_run(0);
}

void user_ap_main(unsigned cpu)
{
    usys(TRAP_TIMER, (long)cfg.timer_count, 0);
    smp_checkin(cpu);
    workload_run(cpu);
}
