/* User-mode side of the int3 trap (see kernel.h for the numbers). */
#ifndef TG_USYS_H
#define TG_USYS_H

#include "kernel.h"

/* The kernel preserves every register but %rax. */
static inline long usys(long nr, long a, long b)
{
    long ret;
    __asm__ volatile("int3" : "=a"(ret) : "a"(nr), "D"(a), "S"(b) : "memory");
    return ret;
}

/* Halts until the next interrupt (the LAPIC timer at the latest). */
static inline void usys_sleep(void)
{
    usys(TRAP_SLEEP, 0, 0);
}

#endif
