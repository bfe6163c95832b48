/* AP start-up: INIT, SIPI, SIPI, as firmware does it. The waits are short
 * (1 ms, 200 us): virtual CPUs need no settling time. */
#include "smp.h"

#include "bootinfo.h"
#include "kernel_api.h"
#include "lib.h"
#include "usys.h"
#include "x86.h"

#define ICR_INIT 0x00004500u    /* INIT, level assert */
#define ICR_STARTUP 0x00004600u /* start-up; vector = page of the code */

extern const uint8_t trampoline_start[], trampoline_end[];

static volatile uint32_t checked_in[TG_MAX_CPUS];

static void wait_us(uint64_t us, uint64_t tsc_khz)
{
    uint64_t end = rdtsc() + us * tsc_khz / 1000;
    while (rdtsc() < end)
        cpu_relax();
}

static void ipi_all(const uint8_t *apic_ids, unsigned n, uint32_t icr)
{
    for (unsigned i = 1; i < n; i++)
        usys(TRAP_IPI, apic_ids[i], icr);
}

void smp_checkin(unsigned cpu)
{
    __atomic_store_n(&checked_in[cpu], 1, __ATOMIC_RELEASE);
}

int smp_start_aps(const uint8_t *apic_ids, unsigned n, uint64_t tsc_khz, unsigned *missing)
{
    if (n < 2)
        return 0;
    memcpy(phys_ptr(TRAMPOLINE_PA), trampoline_start,
           (size_t)(trampoline_end - trampoline_start));
    for (unsigned i = 0; i < n; i++)
        apic_to_cpu[apic_ids[i]] = (uint8_t)i;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);

    ipi_all(apic_ids, n, ICR_INIT);
    wait_us(1000, tsc_khz);
    ipi_all(apic_ids, n, ICR_STARTUP | TRAMPOLINE_PA >> 12);
    wait_us(200, tsc_khz);
    ipi_all(apic_ids, n, ICR_STARTUP | TRAMPOLINE_PA >> 12);

    uint64_t deadline = rdtsc() + 1000 * tsc_khz;
    for (unsigned i = 1; i < n; i++) {
        while (!__atomic_load_n(&checked_in[i], __ATOMIC_ACQUIRE)) {
            if (rdtsc() > deadline) {
                *missing = i;
                return -1;
            }
            cpu_relax();
        }
    }
    return 0;
}
