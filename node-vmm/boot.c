/* boot_load(): everything between "here are a kernel, an initrd and a
 * command line" and a guest ready for its PVH entry. */
#include "boot.h"
#include "../common/fileio.h"
#include "guest_abi.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE_SIZE 4096ull
#define MIB (1ull << 20)

static uint64_t page_up(uint64_t v)
{
    return (v + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
}

/* Loads an ELF, or unpacks a bzImage (freeing the file buffer early: the
 * unpacked vmlinux is several times its size) and loads that. Takes
 * ownership of buf. */
static int boot_load_image(struct guest_memory *gm, uint8_t *buf, size_t len,
                           struct elf_pvh_image *img, int *from_bzimage, struct tern_err *err)
{
    if (len >= 4 && memcmp(buf, "\x7f" "ELF", 4) == 0) {
        int rc = elf_pvh_load(buf, len, gm, img, err);
        free(buf);
        return rc;
    }
    if (!bzimage_detect(buf, len)) {
        uint8_t head[4] = {0};
        memcpy(head, buf, len < 4 ? len : 4);
        free(buf);
        return tern_err_set(err, "neither an ELF kernel nor a Linux bzImage (%zu bytes, "
                                 "starting %02x %02x %02x %02x); pass a vmlinux built with "
                                 "CONFIG_PVH=y or a bzImage", len, head[0], head[1], head[2],
                            head[3]);
    }
    uint8_t *vmlinux;
    size_t vlen;
    int rc = bzimage_extract_vmlinux(buf, len, &vmlinux, &vlen, err);
    free(buf);
    if (rc < 0)
        return -1;
    rc = elf_pvh_load(vmlinux, vlen, gm, img, err);
    free(vmlinux);
    if (rc < 0)
        return tern_err_prefix(err, "vmlinux unpacked from its bzImage");
    *from_bzimage = 1;
    return 0;
}

static int boot_load_kernel(struct guest_memory *gm, const char *path,
                            struct elf_pvh_image *img, int *from_bzimage, struct tern_err *err)
{
    uint8_t *buf;
    size_t len;
    if (tern_read_file(path, BOOT_MAX_KERNEL_BYTES, &buf, &len, err) < 0)
        return tern_err_prefix(err, "loading kernel"); /* the message names the path */
    if (boot_load_image(gm, buf, len, img, from_bzimage, err) < 0)
        return tern_err_prefix(err, "kernel %s", path);
    return 0;
}

/* Reads exactly len bytes of fd into dst. */
static int read_full(int fd, uint8_t *dst, uint64_t len, const char *path, struct tern_err *err)
{
    uint64_t done = 0;
    while (done < len) {
        uint64_t chunk = len - done < (1ull << 30) ? len - done : (1ull << 30);
        ssize_t n = read(fd, dst + done, (size_t)chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return tern_err_errno(err, errno, "cannot read initrd %s", path);
        if (n == 0)
            return tern_err_set(err, "initrd %s shrank while being read", path);
        done += (uint64_t)n;
    }
    return 0;
}

/* Chooses the initrd's place: page-aligned, as high as possible below the
 * MMIO hole (where Linux looks first and where it is out of the kernel's
 * way), and not below the kernel's end or into the legacy area. */
static int initrd_place(const struct guest_memory *gm, uint64_t kernel_end, uint64_t size,
                        const char *path, uint64_t *gpa, struct tern_err *err)
{
    uint64_t top = guest_memory_low_end(gm);
    uint64_t floor = page_up(kernel_end) > MIB ? page_up(kernel_end) : MIB;
    if (floor > top || size > top - floor)
        return tern_err_set(err, "initrd %s (%" PRIu64 " bytes) does not fit between the "
                                 "kernel's end (0x%" PRIx64 ") and the top of RAM below 4 GiB "
                                 "(0x%" PRIx64 "); give the VM at least %" PRIu64 " MiB",
                            path, size, floor, top, (uint64_t)((floor + size + MIB - 1) / MIB));
    *gpa = (top - size) & ~(PAGE_SIZE - 1);
    return 0;
}

/* Reads the initrd straight into guest RAM: no second copy of a file that
 * may be hundreds of MiB. */
static int boot_load_initrd(struct guest_memory *gm, const char *path, uint64_t kernel_end,
                            uint64_t *gpa, uint64_t *size, struct tern_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tern_err_errno(err, errno, "cannot open initrd %s", path);
    struct stat st;
    int rc = -1;
    if (fstat(fd, &st) < 0)
        tern_err_errno(err, errno, "cannot stat initrd %s", path);
    else if (!S_ISREG(st.st_mode))
        tern_err_set(err, "initrd %s is not a regular file", path);
    else if (st.st_size == 0)
        tern_err_set(err, "initrd %s is empty", path);
    else if ((uint64_t)st.st_size > BOOT_MAX_INITRD_BYTES)
        tern_err_set(err, "initrd %s is too large (%lld bytes, limit %llu)", path,
                     (long long)st.st_size, BOOT_MAX_INITRD_BYTES);
    else if (initrd_place(gm, kernel_end, (uint64_t)st.st_size, path, gpa, err) == 0) {
        uint8_t *dst = guest_memory_ptr(gm, *gpa, (uint64_t)st.st_size);
        rc = dst ? read_full(fd, dst, (uint64_t)st.st_size, path, err)
                 : tern_err_set(err, "guest RAM is not mapped for initrd %s", path);
    }
    if (close(fd) < 0 && rc == 0)
        rc = tern_err_errno(err, errno, "closing initrd %s", path);
    if (rc == 0)
        *size = (uint64_t)st.st_size;
    return rc;
}

int boot_load(struct guest_memory *gm, const char *kernel_path, const char *initrd_path,
              const char *cmdline, unsigned nr_vcpus, struct boot_info *out,
              struct tern_err *err)
{
    if (!cmdline)
        cmdline = "";
    /* Cheap argument checks first, before reading files. */
    if (nr_vcpus < 1 || nr_vcpus > BOOT_MAX_VCPUS)
        return tern_err_set(err, "%u vCPUs: tern-vmm boots 1 to %d", nr_vcpus, BOOT_MAX_VCPUS);
    if (strnlen(cmdline, BOOT_MAX_CMDLINE + 1) > BOOT_MAX_CMDLINE)
        return tern_err_set(err, "kernel command line is %zu bytes; the limit is %d",
                            strlen(cmdline), BOOT_MAX_CMDLINE);

    struct boot_info bi = {0};
    struct elf_pvh_image img;
    if (boot_load_kernel(gm, kernel_path, &img, &bi.from_bzimage, err) < 0)
        return -1;
    bi.entry_gpa = img.entry;
    bi.kernel_start = img.low;
    bi.kernel_end = img.high;
    if (initrd_path &&
        boot_load_initrd(gm, initrd_path, img.high, &bi.initrd_gpa, &bi.initrd_size, err) < 0)
        return -1;
    if (pvh_write_start_info(gm, cmdline, bi.initrd_gpa, bi.initrd_size, &bi.start_info_gpa,
                             err) < 0 ||
        mptable_write(gm, nr_vcpus, err) < 0)
        return tern_err_prefix(err, "writing boot data");
    *out = bi;
    return 0;
}
