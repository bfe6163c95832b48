/* COM1 console for all CPUs, used from user mode. Lines are queued whole
 * under a spinlock (so they never interleave) and drained to the UART a
 * bounded number of cycles at a time by console_pump(), so printing a
 * status line cannot hold up a heartbeat. */
#ifndef TG_CONSOLE_H
#define TG_CONSOLE_H

#include <stdint.h>

/* Polled mode: no UART interrupts, 8N1. Writes one "\n" first. */
void console_init(void);

/* Queues one line: the formatted text plus "\n". Only blocks (draining
 * the queue itself) if the queue is full. */
void console_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Writes queued bytes until the queue is empty, the UART is busy or
 * `budget` TSC cycles have passed. Returns at once if another CPU is
 * writing. */
void console_pump(uint64_t budget);

/* Writes everything queued, waiting for the UART as needed. */
void console_flush(void);

/* Writes straight to the UART, bypassing queue and lock: for the kernel's
 * last words on an exception. */
void console_write_direct(const char *s);

/* Flushes the console, then writes `status` to the debug-exit port. Never
 * returns (halts if there is no debug-exit device). */
__attribute__((noreturn)) void guest_exit(unsigned status);

#endif
