/* COM1 console: a line queue drained with polled THRE writes. */
#include "console.h"

#include <stdarg.h>

#include "kernel.h"
#include "lib.h"
#include "tern_guest.h"
#include "usys.h"
#include "x86.h"

#define UART_THR 0
#define UART_IER 1
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define LSR_THRE 0x20

#define QUEUE_SIZE 16384u /* power of two */
#define LINE_MAX 256

static struct {
    volatile uint32_t lock;
    uint32_t head, tail; /* free-running; head - tail bytes queued */
    char buf[QUEUE_SIZE];
} con;

static inline int try_lock(void)
{
    return !__atomic_exchange_n(&con.lock, 1, __ATOMIC_ACQUIRE);
}

static inline void lock(void)
{
    while (!try_lock())
        while (con.lock)
            cpu_relax();
}

static inline void unlock(void)
{
    __atomic_store_n(&con.lock, 0, __ATOMIC_RELEASE);
}

/* Bounded, so a missing UART cannot hang the guest. */
static int uart_ready(unsigned spins)
{
    do {
        if (inb(TG_PORT_COM1 + UART_LSR) & LSR_THRE)
            return 1;
        cpu_relax();
    } while (spins--);
    return 0;
}

static void uart_putc(char c, unsigned spins)
{
    if (uart_ready(spins))
        outb(TG_PORT_COM1 + UART_THR, (uint8_t)c);
}

void console_init(void)
{
    outb(TG_PORT_COM1 + UART_IER, 0);
    outb(TG_PORT_COM1 + UART_LCR, 0x03); /* 8N1, divisor latch off */
    outb(TG_PORT_COM1 + UART_MCR, 0x03); /* DTR, RTS; OUT2 off: no IRQ */
    /* End any line firmware left unfinished (SeaBIOS's "Booting from
     * ROM.."), so every guest line starts at the beginning of a line. */
    outb(TG_PORT_COM1 + UART_THR, '\n');
}

/* Caller holds the lock. */
static void drain_locked(uint64_t budget, int wait)
{
    uint64_t start = rdtsc();

    while (con.tail != con.head) {
        if (!uart_ready(wait ? 1000000 : 0))
            return;
        outb(TG_PORT_COM1 + UART_THR, (uint8_t)con.buf[con.tail % QUEUE_SIZE]);
        con.tail++;
        if (!wait && rdtsc() - start > budget)
            return;
    }
}

void console_line(const char *fmt, ...)
{
    char line[LINE_MAX];
    va_list ap;

    va_start(ap, fmt);
    int n = tg_vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';

    lock();
    while (QUEUE_SIZE - (con.head - con.tail) < (uint32_t)n)
        drain_locked(0, 1);
    for (int i = 0; i < n; i++)
        con.buf[con.head++ % QUEUE_SIZE] = line[i];
    unlock();
}

void console_pump(uint64_t budget)
{
    if (__atomic_load_n(&con.head, __ATOMIC_RELAXED) == con.tail || !try_lock())
        return;
    drain_locked(budget, 0);
    unlock();
}

void console_flush(void)
{
    lock();
    drain_locked(0, 1);
    unlock();
}

void console_write_direct(const char *s)
{
    for (; *s; s++)
        uart_putc(*s, 1000000);
}

void guest_exit(unsigned status)
{
    console_flush();
    outb(TG_PORT_DEBUG_EXIT, (uint8_t)status);
    for (;;)
        usys(TRAP_HALT, 0, 0);
}
