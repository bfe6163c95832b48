/* Local APIC (xAPIC MMIO at its reset address). */
#include <stdint.h>

#include "kernel_api.h"
#include "x86.h"

#define LVT_MASKED (1u << 16)
#define LVT_PERIODIC (1u << 17)
#define SVR_ENABLE (1u << 8)
#define ICR_PENDING (1u << 12)

static inline void lapic_write(uint32_t reg, uint32_t v)
{
    mmio_write32(LAPIC_BASE + reg, v);
}

static inline uint32_t lapic_read(uint32_t reg)
{
    return mmio_read32(LAPIC_BASE + reg);
}

/* Software-enable the APIC and mask every local source we do not use:
 * LINT0 (ExtINT from the PIC under firmware), the error LVT and, until
 * lapic_timer_start, the timer. */
void lapic_enable(void)
{
    lapic_write(LAPIC_SVR, SVR_ENABLE | VEC_SPURIOUS);
    lapic_write(LAPIC_TPR, 0);
    lapic_write(LAPIC_LVT_LINT0, LVT_MASKED);
    lapic_write(LAPIC_LVT_ERROR, LVT_MASKED);
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
}

void lapic_timer_start(uint32_t initial_count)
{
    lapic_write(LAPIC_TIMER_DIV, 0xb); /* divide by 1 */
    lapic_write(LAPIC_LVT_TIMER, LVT_PERIODIC | VEC_TIMER);
    lapic_write(LAPIC_TIMER_INIT, initial_count);
}

/* Returns 0 once the ICR reports the IPI sent, -1 if it stays pending. */
long lapic_send_ipi(uint32_t apic_id, uint32_t icr_low)
{
    lapic_write(LAPIC_ICR_HI, apic_id << 24);
    lapic_write(LAPIC_ICR_LO, icr_low);
    for (int i = 0; i < 1000; i++)
        if (!(lapic_read(LAPIC_ICR_LO) & ICR_PENDING))
            return 0;
    return -1;
}
