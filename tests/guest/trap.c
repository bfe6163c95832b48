/* The user-mode trap (int3): the few things CPL3 cannot do itself.
 * TRAP_SLEEP never gets here; isr.S handles it in three instructions. */
#include <stdint.h>

#include "kernel_api.h"
#include "x86.h"

long trap_dispatch(long nr, long a, long b)
{
    switch (nr) {
    case TRAP_TIMER:
        lapic_timer_start((uint32_t)a);
        return 0;
    case TRAP_IPI:
        return lapic_send_ipi((uint32_t)a, (uint32_t)b);
    case TRAP_CPUID:
        /* CPL3 code may run natively on this machine's KVM, where cpuid
         * could give the host's answer; at CPL0 it is the hypervisor's. */
        cpuid((uint32_t)a, 0, (uint32_t *)(uintptr_t)b);
        return 0;
    case TRAP_HALT:
        for (;;)
            __asm__ volatile("cli; hlt");
    }
    return -1;
}
