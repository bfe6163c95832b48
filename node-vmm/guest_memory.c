#include "guest_memory.h"
#include "guest_abi.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int guest_memory_layout(struct guest_memory *gm, uint64_t size, struct tern_err *err)
{
    memset(gm, 0, sizeof(*gm));
    gm->memfd = -1;
    if (size < (2ull << 20))
        return tern_err_set(err, "guest memory %llu bytes is too small (minimum 2M)",
                            (unsigned long long)size);
    if (size & 0xfff)
        return tern_err_set(err, "guest memory %llu bytes is not a multiple of 4 KiB",
                            (unsigned long long)size);
    gm->size = size;
    uint64_t low = size < TERN_MMIO_HOLE_START ? size : TERN_MMIO_HOLE_START;
    gm->regions[0] = (struct guest_memory_region){.gpa = 0, .size = low, .offset = 0};
    gm->nr_regions = 1;
    if (size > low) {
        gm->regions[1] = (struct guest_memory_region){
            .gpa = TERN_HIGH_RAM_START, .size = size - low, .offset = low};
        gm->nr_regions = 2;
    }
    return 0;
}

int guest_memory_create(struct guest_memory *gm, uint64_t size, struct tern_err *err)
{
    if (guest_memory_layout(gm, size, err) < 0)
        return -1;
    int fd = memfd_create("tern-guest-ram", MFD_CLOEXEC);
    if (fd < 0)
        return tern_err_errno(err, errno, "memfd_create for guest RAM");
    if (ftruncate(fd, (off_t)size) < 0) {
        int e = errno;
        close(fd);
        return tern_err_errno(err, e, "sizing guest RAM memfd to %llu bytes",
                              (unsigned long long)size);
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        close(fd);
        return tern_err_errno(err, e, "mapping %llu bytes of guest RAM",
                              (unsigned long long)size);
    }
    /* Guest RAM is large and should not end up in a core dump of the VMM. */
    (void)madvise(p, size, MADV_DONTDUMP);
    gm->memfd = fd;
    gm->host_base = p;
    return 0;
}

void guest_memory_destroy(struct guest_memory *gm)
{
    if (gm->host_base && gm->memfd >= 0)
        munmap(gm->host_base, gm->size);
    if (gm->memfd >= 0)
        close(gm->memfd);
    gm->host_base = NULL;
    gm->memfd = -1;
}

void *guest_memory_ptr(const struct guest_memory *gm, uint64_t gpa, uint64_t len)
{
    if (!gm->host_base)
        return NULL;
    for (unsigned i = 0; i < gm->nr_regions; i++) {
        const struct guest_memory_region *r = &gm->regions[i];
        if (gpa < r->gpa)
            continue;
        uint64_t off = gpa - r->gpa;
        if (off > r->size || len > r->size - off)
            continue;
        return gm->host_base + r->offset + off;
    }
    return NULL;
}

uint64_t guest_memory_low_end(const struct guest_memory *gm)
{
    return gm->regions[0].gpa + gm->regions[0].size;
}
