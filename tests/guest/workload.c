/* The workload loop. Pages are split by index modulo ncpus: each CPU
 * writes and checks only its own, so the CPUs never race on a page. */
#include "workload.h"

#include "console.h"
#include "disk.h"
#include "kernel.h"
#include "pages.h"
#include "tern_guest.h"
#include "usys.h"
#include "x86.h"

#define CREDIT_ONE (1ull << 40) /* dirty credit: pages in 2^-40 units */

struct tg_config cfg;

/* Per-CPU state; one cache-line pair each so CPUs do not share lines. */
static struct cpu_state {
    unsigned cpu;
    uint64_t own;  /* number of pages this CPU owns */
    uint64_t rng;
    uint64_t slice; /* cycles per work slice */
    /* fill */
    uint64_t fill_k;
    int filled;
    /* check */
    int checking;
    uint64_t check_k, check_next;
    volatile uint64_t checks; /* full passes over own pages */
    /* dirty */
    uint64_t credit_per_cycle; /* CREDIT_ONE units */
    uint64_t credit, credit_cap, last_credit_tsc, max_delta;
    volatile uint64_t dirtied; /* pages */
} __attribute__((aligned(128))) cpus[TG_MAX_CPUS];

/* BSP-only state. Plain guest memory, so the heartbeat sequence carries on
 * across snapshot/restore and migration. */
static struct {
    uint32_t hb_seq;
    uint64_t hb_next, status_next;
} bsp;

static inline struct tg_page *page_at(uint64_t index)
{
    return (struct tg_page *)(uintptr_t)(cfg.fill_pa + index * TG_PAGE_SIZE);
}

static inline uint64_t own_index(const struct cpu_state *s, uint64_t k)
{
    return k * cfg.ncpus + s->cpu;
}

/* TSC cycles from `since` to `now`; 0 if the TSC went backwards (a VM
 * restored or migrated without its TSC carried over) rather than a huge
 * wrapped-around value. */
static inline uint64_t elapsed(uint64_t now, uint64_t since)
{
    return now > since ? now - since : 0;
}

/* A deadline more than one period ahead can only come from the TSC going
 * backwards: pull it in so nothing stops for as long as the jump. */
static inline uint64_t sane(uint64_t deadline, uint64_t period, uint64_t now)
{
    return deadline > now + period ? now + period : deadline;
}

static void status_line(uint64_t now)
{
    uint64_t ms = elapsed(now, cfg.t0) / cfg.tsc_khz, pages = 0, checks = UINT64_MAX;

    for (unsigned i = 0; i < cfg.ncpus; i++) {
        pages += cpus[i].dirtied;
        if (cpus[i].checks < checks)
            checks = cpus[i].checks;
    }
    if (cfg.disk)
        console_line(TG_FMT_STATUS_DISK, ms / 1000, ms % 1000, (unsigned long)bsp.hb_seq,
                     pages * TG_PAGE_SIZE / 1000000, checks, 0ul, disk_durable_seq());
    else
        console_line(TG_FMT_STATUS, ms / 1000, ms % 1000, (unsigned long)bsp.hb_seq,
                     pages * TG_PAGE_SIZE / 1000000, checks, 0ul);
}

/* Next deadline after `now` for a period that may have fallen behind
 * (a paused or migrated VM): skip missed beats instead of bursting. */
static inline uint64_t advance(uint64_t deadline, uint64_t period, uint64_t now)
{
    deadline += period;
    return deadline > now ? deadline : now + period;
}

/* Heartbeat, status, journal, exit: the BSP runs this between any two
 * slices. */
static void bsp_duties(void)
{
    uint64_t now = rdtsc();

    bsp.hb_next = sane(bsp.hb_next, cfg.hb_cycles, now);
    bsp.status_next = sane(bsp.status_next, cfg.status_cycles, now);
    if (cfg.hb_cycles && now >= bsp.hb_next) {
        outl(TG_PORT_HEARTBEAT, ++bsp.hb_seq);
        bsp.hb_next = advance(bsp.hb_next, cfg.hb_cycles, now);
    }
    if (cfg.status_cycles && now >= bsp.status_next) {
        status_line(now);
        bsp.status_next = advance(bsp.status_next, cfg.status_cycles, now);
    }
    if (cfg.disk)
        disk_step(now, cpus[0].slice);
    if (cfg.exit_after_s && elapsed(now, cfg.t0) >= cfg.exit_after_s * 1000 * cfg.tsc_khz) {
        console_line(TG_FMT_EXIT_AFTER, cfg.exit_after_s);
        guest_exit(cfg.exit_code);
    }
}

static void fill_slice(struct cpu_state *s)
{
    uint64_t end = rdtsc() + s->slice;

    while (s->fill_k < s->own) {
        uint64_t i = own_index(s, s->fill_k++);
        tg_page_init(page_at(i), (cfg.fill_pa >> 12) + i, cfg.seed);
        cfg.gen_table[i] = 1;
        if (rdtsc() >= end)
            return;
    }
    s->filled = 1;
    s->check_next = rdtsc() + cfg.check_cycles;
    s->last_credit_tsc = rdtsc(); /* dirtying starts now, not at boot */
}

static void check_failed(struct cpu_state *s, uint64_t i, enum tg_page_status st)
{
    const struct tg_page *p = page_at(i);
    console_line(TG_FMT_CHECK_FAILED, s->cpu, (cfg.fill_pa >> 12) + i, tg_page_reason(st),
                 p->gen, (unsigned long)cfg.gen_table[i]);
    guest_exit(TG_EXIT_CHECK_FAILED);
}

static void check_slice(struct cpu_state *s)
{
    uint64_t end = rdtsc() + s->slice;

    while (s->check_k < s->own) {
        uint64_t i = own_index(s, s->check_k++);
        enum tg_page_status st = tg_page_verify(page_at(i), (cfg.fill_pa >> 12) + i,
                                                cfg.gen_table[i]);
        if (st != TG_PAGE_OK)
            check_failed(s, i, st);
        if (rdtsc() >= end)
            return;
    }
    s->checking = 0;
    s->checks++;
}

/* Earns credit for the time since the last call, at the CPU's share of the
 * dirty rate; the cap stops a long pause from turning into a burst. */
static void earn_credit(struct cpu_state *s, uint64_t now)
{
    uint64_t delta = elapsed(now, s->last_credit_tsc);

    s->last_credit_tsc = now;
    if (delta > s->max_delta)
        delta = s->max_delta;
    s->credit += delta * s->credit_per_cycle;
    if (s->credit > s->credit_cap)
        s->credit = s->credit_cap;
}

static void dirty_slice(struct cpu_state *s)
{
    uint64_t end = rdtsc() + s->slice;

    while (s->credit >= CREDIT_ONE) {
        uint64_t i = own_index(s, tg_rng_next(&s->rng) % s->own);
        cfg.gen_table[i] = (uint32_t)tg_page_dirty(page_at(i), &s->rng);
        s->credit -= CREDIT_ONE;
        s->dirtied++;
        if (rdtsc() >= end)
            return;
    }
}

/* Nothing due: sleep until the next tick, unless the next deadline is so
 * close that spinning up to it is cheaper than overshooting by a tick. */
static void idle(struct cpu_state *s)
{
    uint64_t now = rdtsc(), next = UINT64_MAX;

    if (s->cpu == 0) {
        if (cfg.hb_cycles)
            next = bsp.hb_next;
        if (cfg.status_cycles && bsp.status_next < next)
            next = bsp.status_next;
        if (cfg.disk) {
            uint64_t d = disk_next(now);
            if (d < next)
                next = d;
        }
    }
    if (s->filled && cfg.check_cycles && s->check_next < next)
        next = s->check_next;
    if (s->filled && s->credit_per_cycle) {
        uint64_t need = (CREDIT_ONE - s->credit) / s->credit_per_cycle;
        if (now + need < next)
            next = now + need;
    }
    if (next > now && next - now < cfg.tsc_khz / 50) { /* 20 us */
        while (rdtsc() < next)
            cpu_relax();
        return;
    }
    if (next > now)
        usys_sleep();
}

static void cpu_state_init(struct cpu_state *s, unsigned cpu)
{
    uint64_t tsc_hz = cfg.tsc_khz * 1000;

    s->cpu = cpu;
    s->own = cfg.npages / cfg.ncpus + (cpu < cfg.npages % cfg.ncpus);
    s->rng = tg_rng_seed(cfg.seed, 0x1000 + cpu);
    s->slice = cfg.tsc_khz / 10; /* 100 us */
    s->filled = s->own == 0;
    s->check_next = rdtsc() + cfg.check_cycles;
    if (cfg.dirty_bytes_per_cpu && s->own) {
        /* CREDIT_ONE / (4096 * tsc_hz) pages per byte-cycle: bytes/s is at
         * most 10^10 < 2^34, so the shift cannot overflow. */
        s->credit_per_cycle = (cfg.dirty_bytes_per_cpu << 28) / tsc_hz;
        if (!s->credit_per_cycle)
            s->credit_per_cycle = 1;
        /* Keep up to 100 ms (or two ticks) of credit: enough to catch up
         * after a sleep, not enough for a burst after a pause. */
        uint64_t window_ms = cfg.tick_us / 500 > 100 ? cfg.tick_us / 500 : 100;
        uint64_t cap_pages = cfg.dirty_bytes_per_cpu / TG_PAGE_SIZE * window_ms / 1000;
        s->credit_cap = (cap_pages + 1) * CREDIT_ONE;
        s->max_delta = (UINT64_MAX >> 2) / s->credit_per_cycle;
    }
    s->last_credit_tsc = rdtsc();
}

void workload_run(unsigned cpu)
{
    struct cpu_state *s = &cpus[cpu];

    cpu_state_init(s, cpu);
    if (cpu == 0) {
        uint64_t now = rdtsc();
        bsp.hb_next = now;
        bsp.status_next = now + cfg.status_cycles;
    }
    for (;;) {
        if (cpu == 0)
            bsp_duties();
        console_pump(s->slice);
        if (!s->filled) {
            fill_slice(s);
            continue;
        }
        int busy = 0;
        if (s->credit_per_cycle) {
            earn_credit(s, rdtsc());
            if (s->credit >= CREDIT_ONE) {
                dirty_slice(s);
                busy = 1;
                if (cpu == 0)
                    bsp_duties();
            }
        }
        s->check_next = sane(s->check_next, cfg.check_cycles, rdtsc());
        if (cfg.check_cycles && !s->checking && rdtsc() >= s->check_next) {
            s->checking = 1;
            s->check_k = 0;
            s->check_next = rdtsc() + cfg.check_cycles;
        }
        if (s->checking) {
            check_slice(s);
            busy = 1;
        }
        if (!busy)
            idle(s);
    }
}
