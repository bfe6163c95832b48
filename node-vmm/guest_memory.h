/* Guest RAM: one memfd, mapped once in this process, split into the regions
 * of the guest physical layout (see guest_abi.h). The memfd is what
 * snapshots and migration map later. */
#ifndef TERN_NODE_VMM_GUEST_MEMORY_H
#define TERN_NODE_VMM_GUEST_MEMORY_H

#include <stdbool.h>
#include <stdint.h>

#include "../common/err.h"

#define GUEST_MEMORY_MAX_REGIONS 2

struct guest_memory_region {
    uint64_t gpa;    /* guest physical start */
    uint64_t size;   /* bytes */
    uint64_t offset; /* offset in the memfd / host mapping */
};

struct guest_memory {
    int memfd;          /* -1 when the memory is a plain buffer (unit tests) */
    uint8_t *host_base; /* mapping of the whole memfd */
    uint64_t size;      /* total RAM in bytes */
    unsigned nr_regions;
    struct guest_memory_region regions[GUEST_MEMORY_MAX_REGIONS];
};

/* Computes the region layout for `size` bytes of RAM (no allocation).
 * Fails if size is zero, not a multiple of 4 KiB, or below 2 MiB. */
int guest_memory_layout(struct guest_memory *gm, uint64_t size, struct tern_err *err);

/* Lays out `size` bytes and backs them with a fresh memfd mapped shared. */
int guest_memory_create(struct guest_memory *gm, uint64_t size, struct tern_err *err);

/* Unmaps and closes. Safe on a zeroed struct. */
void guest_memory_destroy(struct guest_memory *gm);

/* Host pointer for [gpa, gpa+len) when that range lies wholly inside one RAM
 * region, else NULL. len may be 0 (then gpa must be inside or at the end of
 * a region). */
void *guest_memory_ptr(const struct guest_memory *gm, uint64_t gpa, uint64_t len);

/* Highest guest physical address + 1 of RAM below 4 GiB. */
uint64_t guest_memory_low_end(const struct guest_memory *gm);

#endif
