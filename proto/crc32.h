/* CRC-32 as zlib computes it (IEEE 802.3, reflected, polynomial 0xEDB88320,
 * pre- and post-inverted): tern_crc32(crc32(0, NULL, 0) == 0, p, n) equals
 * zlib's crc32(0, p, n), and calls chain the same way. On CPUs with
 * PCLMULQDQ, buffers of 64 bytes and more are folded 64 bytes at a time
 * with carry-less multiplication (several times zlib's speed; record CRCs
 * are on the migration stream's hot path); otherwise, and for the tail,
 * zlib does the work. */
#ifndef TERN_PROTO_CRC32_H
#define TERN_PROTO_CRC32_H

#include <stddef.h>
#include <stdint.h>

uint32_t tern_crc32(uint32_t crc, const void *p, size_t n);

/* The same with zlib only (for tests and benchmarks). */
uint32_t tern_crc32_zlib(uint32_t crc, const void *p, size_t n);

#endif
