/* The little of a C library the guest needs. */
#ifndef TG_LIB_H
#define TG_LIB_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* gcc may emit calls to these even in freestanding code. */
void *memset(void *s, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

/* printf-style formatting into buf (always NUL-terminated when size > 0).
 * Supports %% %c %s %d %i %u %x %p with '0' / '-' flags, a width, and the
 * l / ll / z length modifiers. Returns the length it wanted to write. */
int tg_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int tg_snprintf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
