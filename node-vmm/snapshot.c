#include "snapshot.h"
#include "../proto/le.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "../proto/record.h"
#include "vm.h"
#include "vm_state.h"

#define PAGE_SIZE 4096u
#define MEMORY_PREFIX 12u /* u64 gpa, u32 pages */
/* Runs gathered into one writev (3 iovecs each, under IOV_MAX). */
#define RUNS_PER_WRITE 256

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int write_all(int fd, const void *p, size_t n, const char *path, struct tern_err *err)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return tern_err_errno(err, errno, "writing %s", path);
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* writev that finishes partial writes. Modifies iov. */
static int writev_all(int fd, struct iovec *iov, int cnt, const char *path, struct tern_err *err)
{
    while (cnt > 0) {
        ssize_t w = writev(fd, iov, cnt);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return tern_err_errno(err, errno, "writing %s", path);
        size_t left = (size_t)w;
        while (cnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

static bool page_is_zero(const uint8_t *p)
{
    const uint64_t *w = (const uint64_t *)p;
    for (unsigned i = 0; i < PAGE_SIZE / 8; i += 8) {
        if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7])
            return false;
    }
    return true;
}

struct run_batch {
    struct iovec iov[RUNS_PER_WRITE * 3];
    uint8_t heads[RUNS_PER_WRITE][REC_HEADER_SIZE + MEMORY_PREFIX];
    int runs;
};

static int batch_flush(int fd, struct run_batch *rb, const char *path, struct tern_err *err)
{
    int rc = rb->runs ? writev_all(fd, rb->iov, rb->runs * 3, path, err) : 0;
    rb->runs = 0;
    return rc;
}

/* Adds one memory record for `pages` pages at `gpa`, backed by `host`. */
static int batch_add(int fd, struct run_batch *rb, uint64_t gpa, const uint8_t *host,
                     uint32_t pages, const char *path, struct tern_err *err)
{
    uint8_t *head = rb->heads[rb->runs];
    uint8_t *prefix = head + REC_HEADER_SIZE;
    le64_put(prefix, gpa);
    le32_put(prefix + 8, pages);
    struct iovec payload[2] = {
        {.iov_base = prefix, .iov_len = MEMORY_PREFIX},
        {.iov_base = (void *)host, .iov_len = (size_t)pages * PAGE_SIZE},
    };
    if (rec_header_for_iov(head, SNAP_MEMORY_RECORD, 1, 0, payload, 2, err) < 0)
        return -1;
    struct iovec *v = &rb->iov[rb->runs * 3];
    v[0] = (struct iovec){.iov_base = head, .iov_len = REC_HEADER_SIZE};
    v[1] = payload[0];
    v[2] = payload[1];
    if (++rb->runs == RUNS_PER_WRITE)
        return batch_flush(fd, rb, path, err);
    return 0;
}

/* Writes the non-zero pages of [first, first + npages) of one region. */
static int write_extent(int fd, struct run_batch *rb, const struct guest_memory *mem,
                        const struct guest_memory_region *reg, uint64_t first, uint64_t npages,
                        const char *path, struct snapshot_stats *st, uint64_t *records,
                        struct tern_err *err)
{
    const uint8_t *base = mem->host_base + reg->offset;
    uint64_t run_start = 0;
    uint32_t run_len = 0;
    for (uint64_t pg = first; pg <= first + npages; pg++) {
        bool data = pg < first + npages && !page_is_zero(base + pg * PAGE_SIZE);
        if (data) {
            if (run_len == 0)
                run_start = pg;
            run_len++;
            st->pages++;
        } else if (pg < first + npages) {
            st->zero_pages++;
        }
        if (run_len > 0 && (!data || run_len == SNAP_MAX_RUN_PAGES || pg + 1 == first + npages)) {
            if (batch_add(fd, rb, reg->gpa + run_start * PAGE_SIZE, base + run_start * PAGE_SIZE,
                          run_len, path, err) < 0)
                return -1;
            (*records)++;
            run_len = 0;
        }
    }
    return 0;
}

/* Guest RAM is a memfd: pages the guest never touched are holes, which
 * SEEK_DATA/SEEK_HOLE skip without reading (reading them would allocate
 * them). Pages inside data extents are still checked for zeroes. */
static int write_memory(int fd, struct vm *vm, const char *path, struct snapshot_stats *st,
                        uint64_t *records, struct tern_err *err)
{
    struct run_batch *rb = calloc(1, sizeof(*rb));
    if (!rb)
        return tern_err_set(err, "out of memory");
    int rc = 0;
    for (unsigned r = 0; r < vm->mem.nr_regions && rc == 0; r++) {
        const struct guest_memory_region *reg = &vm->mem.regions[r];
        uint64_t npages = reg->size / PAGE_SIZE;
        uint64_t pg = 0;
        while (pg < npages && rc == 0) {
            off_t data = (off_t)(reg->offset + pg * PAGE_SIZE), hole;
            if (vm->mem.memfd >= 0) {
                data = lseek(vm->mem.memfd, data, SEEK_DATA);
                if (data < 0 && errno == ENXIO)
                    data = (off_t)(reg->offset + reg->size); /* only holes left */
                else if (data < 0) {
                    rc = tern_err_errno(err, errno, "finding guest RAM in use (SEEK_DATA)");
                    break;
                }
                hole = lseek(vm->mem.memfd, data, SEEK_HOLE);
                if (hole < 0 && (uint64_t)data < reg->offset + reg->size) {
                    rc = tern_err_errno(err, errno, "finding guest RAM in use (SEEK_HOLE)");
                    break;
                }
            } else {
                hole = (off_t)(reg->offset + reg->size);
            }
            uint64_t region_end = reg->offset + reg->size;
            uint64_t from = (uint64_t)data < region_end ? (uint64_t)data : region_end;
            uint64_t to = (uint64_t)hole < region_end ? (uint64_t)hole : region_end;
            uint64_t first = (from - reg->offset) / PAGE_SIZE;
            uint64_t last = (to - reg->offset + PAGE_SIZE - 1) / PAGE_SIZE;
            if (first >= npages || last <= first) {
                st->zero_pages += npages - pg; /* only holes left */
                break;
            }
            st->zero_pages += first - pg; /* the hole before this extent */
            rc = write_extent(fd, rb, &vm->mem, reg, first, last - first, path, st, records, err);
            pg = last;
        }
    }
    if (rc == 0)
        rc = batch_flush(fd, rb, path, err);
    free(rb);
    return rc;
}

static void put_config(struct rec_buf *b, struct vm *vm)
{
    rec_begin(b, SNAP_CONFIG_RECORD, 1, 0);
    rec_put_u64(b, vm->mem.size);
    rec_put_u32(b, vm->nr_vcpus);
    rec_put_u32(b, vm->tsc_khz);
    rec_put_u32(b, vm->nr_disks);
    for (unsigned i = 0; i < vm->nr_disks; i++) {
        rec_put_str(b, vm->disk_specs[i].path);
        rec_put_u8(b, vm->disk_specs[i].read_only);
    }
    rec_end(b);
}

static int fsync_parent_dir(const char *path, struct tern_err *err)
{
    char copy[PATH_MAX];
    snprintf(copy, sizeof(copy), "%s", path);
    const char *dir = dirname(copy);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return tern_err_errno(err, errno, "opening directory %s to sync it", dir);
    int rc = fsync(fd) < 0 ? tern_err_errno(err, errno, "syncing directory %s", dir) : 0;
    close(fd);
    return rc;
}

int snapshot_write(struct vm *vm, const char *path, struct snapshot_stats *stats,
                   struct tern_err *err)
{
    double t0 = now_s();
    struct snapshot_stats st = {0};
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp-%d", path, (int)getpid()) >= (int)sizeof(tmp))
        return tern_err_set(err, "snapshot path %s is too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return tern_err_errno(err, errno, "cannot create snapshot %s", tmp);

    struct rec_buf b;
    rec_buf_init(&b);
    uint64_t records = 2;
    rec_begin(&b, SNAP_HEADER_RECORD, 1, 0);
    rec_put_bytes(&b, SNAP_MAGIC, 8);
    rec_put_u32(&b, SNAP_FORMAT_VERSION);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    rec_put_u64(&b, (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec);
    rec_end(&b);
    put_config(&b, vm);
    int rc = vm_state_save(vm, &b, err);
    if (rc == 0)
        rc = rec_buf_check(&b, err);
    if (rc == 0) {
        /* Count the state records for the end record's tally. */
        struct rec_reader r;
        struct rec_header h;
        struct rec_reader p;
        rec_reader_init(&r, b.data, b.len);
        records = 0;
        while (rec_next(&r, &h, &p, err) == 1)
            records++;
        rc = write_all(fd, b.data, b.len, tmp, err);
    }
    if (rc == 0)
        rc = write_memory(fd, vm, tmp, &st, &records, err);
    if (rc == 0) {
        rec_buf_reset(&b);
        rec_begin(&b, SNAP_END_RECORD, 1, 0);
        rec_put_u64(&b, records);
        rec_put_u64(&b, st.pages);
        rec_end(&b);
        rc = rec_buf_check(&b, err);
        if (rc == 0)
            rc = write_all(fd, b.data, b.len, tmp, err);
    }
    rec_buf_free(&b);
    if (rc == 0 && fsync(fd) < 0)
        rc = tern_err_errno(err, errno, "syncing snapshot %s", tmp);
    struct stat sb;
    if (rc == 0 && fstat(fd, &sb) == 0)
        st.bytes = (uint64_t)sb.st_size;
    if (close(fd) < 0 && rc == 0)
        rc = tern_err_errno(err, errno, "closing snapshot %s", tmp);
    if (rc == 0 && rename(tmp, path) < 0)
        rc = tern_err_errno(err, errno, "renaming %s to %s", tmp, path);
    if (rc == 0)
        rc = fsync_parent_dir(path, err);
    if (rc < 0) {
        unlink(tmp);
        return -1;
    }
    st.seconds = now_s() - t0;
    if (stats)
        *stats = st;
    return 0;
}

/* ---- reading ---- */

static int read_exact(struct snapshot_reader *r, void *dst, size_t n, const char *what,
                      struct tern_err *err)
{
    uint8_t *b = dst;
    size_t done = 0;
    while (done < n) {
        ssize_t got = read(r->fd, b + done, n - done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return tern_err_errno(err, errno, "reading snapshot %s", r->path);
        if (got == 0)
            return tern_err_set(err,
                                "snapshot %s is truncated: it ends inside %s at byte %" PRIu64
                                " (file is %" PRIu64 " bytes)",
                                r->path, what, r->off + done, r->size);
        done += (size_t)got;
    }
    r->off += n;
    return 0;
}

/* Reads the next record header; 0 at a clean end of file. */
static int next_header(struct snapshot_reader *r, struct rec_header *h, struct tern_err *err)
{
    if (r->off == r->size)
        return 0;
    uint8_t hdr[REC_HEADER_SIZE];
    if (read_exact(r, hdr, sizeof(hdr), "a record header", err) < 0)
        return -1;
    if (rec_parse_header(hdr, h, err) < 0)
        return tern_err_prefix(err, "snapshot %s at byte %" PRIu64, r->path,
                               r->off - REC_HEADER_SIZE);
    if (h->length > r->size - r->off)
        return tern_err_set(err,
                            "snapshot %s is truncated: record type 0x%x at byte %" PRIu64
                            " needs %u bytes, %" PRIu64 " remain",
                            r->path, h->type, r->off - REC_HEADER_SIZE, h->length,
                            r->size - r->off);
    r->records++;
    return 1;
}

/* Reads a (small) record payload into a malloc'd buffer, checking its CRC. */
static uint8_t *read_payload(struct snapshot_reader *r, const struct rec_header *h,
                             struct tern_err *err)
{
    uint8_t *p = malloc(h->length ? h->length : 1);
    if (!p) {
        tern_err_set(err, "out of memory reading snapshot record (%u bytes)", h->length);
        return NULL;
    }
    uint64_t at = r->off - REC_HEADER_SIZE;
    if (read_exact(r, p, h->length, "a record", err) < 0 || rec_check_crc(h, p, err) < 0) {
        tern_err_prefix(err, "snapshot %s, record at byte %" PRIu64, r->path, at);
        free(p);
        return NULL;
    }
    return p;
}

static int parse_header_record(struct snapshot_reader *r, struct tern_err *err)
{
    struct rec_header h;
    int rc = next_header(r, &h, err);
    if (rc == 0)
        return tern_err_set(err, "snapshot %s is empty", r->path);
    if (rc < 0)
        return -1;
    if (h.type != SNAP_HEADER_RECORD)
        return tern_err_set(err, "%s is not a tern-vmm snapshot (first record type 0x%x)",
                            r->path, h.type);
    uint8_t *p = read_payload(r, &h, err);
    if (!p)
        return -1;
    struct rec_reader pr;
    rec_reader_init(&pr, p, h.length);
    char magic[8];
    uint32_t version;
    uint64_t created;
    rec_get_bytes(&pr, magic, 8);
    rec_get_u32(&pr, &version);
    rec_get_u64(&pr, &created);
    rc = rec_finish(&pr, "snapshot header", err);
    free(p);
    if (rc < 0)
        return tern_err_prefix(err, "%s", r->path);
    if (memcmp(magic, SNAP_MAGIC, 8) != 0)
        return tern_err_set(err, "%s is not a tern-vmm snapshot (bad magic)", r->path);
    if (version != SNAP_FORMAT_VERSION || h.version != 1)
        return tern_err_set(err,
                            "snapshot %s has format version %u; this tern-vmm reads version %d",
                            r->path, version, SNAP_FORMAT_VERSION);
    return 0;
}

static int parse_config_record(struct snapshot_reader *r, struct tern_err *err)
{
    struct rec_header h;
    int rc = next_header(r, &h, err);
    if (rc <= 0)
        return rc < 0 ? -1 : tern_err_set(err, "snapshot %s is truncated after its header", r->path);
    if (h.type != SNAP_CONFIG_RECORD || h.version != 1)
        return tern_err_set(err, "snapshot %s: expected the configuration record, found type 0x%x v%u",
                            r->path, h.type, h.version);
    uint8_t *p = read_payload(r, &h, err);
    if (!p)
        return -1;
    struct rec_reader pr;
    rec_reader_init(&pr, p, h.length);
    struct snapshot_config *c = &r->config;
    uint32_t vcpus, disks;
    rec_get_u64(&pr, &c->mem_bytes);
    rec_get_u32(&pr, &vcpus);
    rec_get_u32(&pr, &c->tsc_khz);
    rec_get_u32(&pr, &disks);
    if (disks > VMM_MAX_DISKS) {
        free(p);
        return tern_err_set(err, "snapshot %s lists %u disks (at most %d)", r->path, disks,
                            VMM_MAX_DISKS);
    }
    for (uint32_t i = 0; i < disks; i++) {
        uint8_t ro;
        rec_get_str(&pr, c->disks[i].path, sizeof(c->disks[i].path));
        rec_get_u8(&pr, &ro);
        c->disks[i].read_only = ro != 0;
    }
    rc = rec_finish(&pr, "snapshot configuration", err);
    free(p);
    if (rc < 0)
        return tern_err_prefix(err, "%s", r->path);
    c->vcpus = vcpus;
    c->nr_disks = disks;
    if (vcpus < 1 || vcpus > VMM_MAX_VCPUS || c->mem_bytes < (16ull << 20) ||
        (c->mem_bytes & 0xfffff) || c->mem_bytes > (1ull << 40))
        return tern_err_set(err, "snapshot %s has an invalid configuration (%u vCPUs, %" PRIu64
                                 " bytes of memory)",
                            r->path, vcpus, c->mem_bytes);
    return 0;
}

int snapshot_open(struct snapshot_reader *r, const char *path, struct tern_err *err)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->path, sizeof(r->path), "%s", path);
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0)
        return tern_err_errno(err, errno, "cannot open snapshot %s", path);
    struct stat st;
    if (fstat(r->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snapshot_close(r);
        return tern_err_set(err, "snapshot %s is not a regular file", path);
    }
    r->size = (uint64_t)st.st_size;
    posix_fadvise(r->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    if (parse_header_record(r, err) < 0 || parse_config_record(r, err) < 0) {
        snapshot_close(r);
        return -1;
    }
    return 0;
}

int snapshot_apply_config(const struct snapshot_reader *r, struct run_options *o,
                          struct tern_err *err)
{
    const struct snapshot_config *c = &r->config;
    if (o->mem_given && o->mem_bytes != c->mem_bytes)
        return tern_err_set(err, "snapshot %s was taken with %" PRIu64 " MiB of memory, --mem asks for %" PRIu64
                                 " MiB; drop --mem or give the same size",
                            r->path, c->mem_bytes >> 20, o->mem_bytes >> 20);
    if (o->vcpus_given && o->vcpus != c->vcpus)
        return tern_err_set(err, "snapshot %s has %u vCPUs, --vcpus asks for %u; drop --vcpus or give the same count",
                            r->path, c->vcpus, o->vcpus);
    if (o->disks_given) {
        if (o->nr_disks != c->nr_disks)
            return tern_err_set(err, "snapshot %s has %u disk(s), %u --disk option(s) were given",
                                r->path, c->nr_disks, o->nr_disks);
        for (unsigned i = 0; i < c->nr_disks; i++)
            if (o->disks[i].read_only != c->disks[i].read_only)
                return tern_err_set(err, "snapshot %s: disk %u was %s, --disk makes it %s",
                                    r->path, i, c->disks[i].read_only ? "read-only" : "writable",
                                    o->disks[i].read_only ? "read-only" : "writable");
        /* Paths may differ: the same shared image can be mounted elsewhere. */
    } else {
        o->nr_disks = c->nr_disks;
        for (unsigned i = 0; i < c->nr_disks; i++)
            o->disks[i] = (struct disk_spec){.path = c->disks[i].path,
                                             .read_only = c->disks[i].read_only};
    }
    o->mem_bytes = c->mem_bytes;
    o->vcpus = c->vcpus;
    return 0;
}

/* Reads one memory record straight into guest RAM. The VM has not run yet,
 * so a record that turns out corrupt harms nothing: restore fails. */
static int read_memory_record(struct snapshot_reader *r, struct vm *vm, const struct rec_header *h,
                              uint64_t *pages, struct tern_err *err)
{
    uint64_t at = r->off - REC_HEADER_SIZE;
    uint8_t prefix[MEMORY_PREFIX];
    if (h->length < MEMORY_PREFIX)
        return tern_err_set(err, "snapshot %s: memory record at byte %" PRIu64 " is too short",
                            r->path, at);
    if (read_exact(r, prefix, sizeof(prefix), "a memory record", err) < 0)
        return -1;
    uint64_t gpa = 0;
    uint32_t npages = 0;
    for (int i = 7; i >= 0; i--)
        gpa = (gpa << 8) | prefix[i];
    for (int i = 3; i >= 0; i--)
        npages = (npages << 8) | prefix[8 + i];
    if (npages == 0 || npages > SNAP_MAX_RUN_PAGES ||
        (uint64_t)npages * PAGE_SIZE + MEMORY_PREFIX != h->length || (gpa & (PAGE_SIZE - 1)))
        return tern_err_set(err, "snapshot %s: memory record at byte %" PRIu64
                                 " is malformed (gpa 0x%" PRIx64 ", %u pages, %u bytes)",
                            r->path, at, gpa, npages, h->length);
    uint8_t *dst = guest_memory_ptr(&vm->mem, gpa, (uint64_t)npages * PAGE_SIZE);
    if (!dst)
        return tern_err_set(err, "snapshot %s: memory record at byte %" PRIu64
                                 " covers 0x%" PRIx64 "+%u pages, outside guest RAM",
                            r->path, at, gpa, npages);
    /* Fault the pages in with one call instead of one fault per page as
     * read() fills them (best effort: older kernels lack it). */
    (void)madvise(dst, (size_t)npages * PAGE_SIZE, MADV_POPULATE_WRITE);
    if (read_exact(r, dst, (size_t)npages * PAGE_SIZE, "a memory record", err) < 0)
        return -1;
    uint32_t crc = rec_crc_add(rec_crc_start(h), prefix, sizeof(prefix));
    crc = rec_crc_add(crc, dst, (size_t)npages * PAGE_SIZE);
    if (rec_crc_done(h, crc, err) < 0)
        return tern_err_prefix(err, "snapshot %s, memory record at byte %" PRIu64, r->path, at);
    *pages += npages;
    return 0;
}

int snapshot_restore(struct snapshot_reader *r, struct vm *vm, struct tern_err *err)
{
    struct vm_state_restore ctx = {0};
    uint64_t pages = 0;
    for (;;) {
        struct rec_header h;
        int rc = next_header(r, &h, err);
        if (rc < 0)
            return -1;
        if (rc == 0)
            return tern_err_set(err, "snapshot %s is truncated: it has no end record", r->path);
        if (h.type == SNAP_MEMORY_RECORD) {
            if (read_memory_record(r, vm, &h, &pages, err) < 0)
                return -1;
            continue;
        }
        uint8_t *p = read_payload(r, &h, err);
        if (!p)
            return -1;
        struct rec_reader pr;
        rec_reader_init(&pr, p, h.length);
        if (h.type == SNAP_END_RECORD) {
            uint64_t want_records, want_pages;
            rec_get_u64(&pr, &want_records);
            rec_get_u64(&pr, &want_pages);
            rc = rec_finish(&pr, "snapshot end record", err);
            free(p);
            if (rc < 0)
                return tern_err_prefix(err, "%s", r->path);
            /* The tally excludes the end record itself. */
            if (want_records != r->records - 1 || want_pages != pages)
                return tern_err_set(err, "snapshot %s is inconsistent: %u records and %" PRIu64
                                         " pages read, its end record says %" PRIu64 " and %" PRIu64,
                                    r->path, r->records - 1, pages, want_records, want_pages);
            if (r->off != r->size)
                return tern_err_set(err, "snapshot %s has %" PRIu64 " bytes after its end record",
                                    r->path, r->size - r->off);
            return vm_state_restore_finish(vm, &ctx, err) < 0 ? tern_err_prefix(err, "snapshot %s", r->path) : 0;
        }
        rc = vm_state_apply(vm, &ctx, &h, &pr, err);
        free(p);
        if (rc < 0)
            return tern_err_prefix(err, "snapshot %s", r->path);
        if (rc == 0)
            return tern_err_set(err, "snapshot %s: unknown record type 0x%x (written by a newer tern-vmm?)",
                                r->path, h.type);
    }
}

void snapshot_close(struct snapshot_reader *r)
{
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
}
