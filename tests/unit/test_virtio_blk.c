/* virtio-blk over virtio-mmio (node-vmm/dev_virtio_blk.c, virtio_mmio.c):
 * the test plays the guest driver. Guest RAM is a memfd (as in tern-vmm),
 * the disk a temporary raw image, vm_fd -1 (no KVM): the test kicks the
 * queue with virtio_blk_test_notify or an MMIO QueueNotify write and
 * watches the used ring. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dirtylog/vmm_dirty.h"
#include "node-vmm/dev_virtio_blk.h"
#include "node-vmm/guest_memory.h"
#include "node-vmm/virtio_mmio.h"
#include "node-vmm/virtqueue.h"
#include "proto/record.h"
#include "tests/support/kvm.h"

#define RAM_SIZE (16u << 20)
#define IMAGE_SECTORS 2048u /* 1 MiB */
#define QNUM 256u
#define DESC_GPA 0x10000u
#define AVAIL_GPA 0x20000u
#define USED_GPA 0x30000u
#define HDR_GPA 0x40000u    /* 16 bytes per avail slot */
#define STATUS_GPA 0x50000u /* 1 byte per avail slot */
#define TABLE_GPA 0x60000u  /* indirect tables */
#define DATA_GPA 0x100000u

struct fx {
    char dir[64];
    char image[96];
    struct guest_memory gm;
    uint8_t *ram;
    struct virtio_blk *dev;
    struct vmm_dirty *dirty;
    uint16_t avail_idx;
    uint16_t next_desc;
    uint16_t num;
};

struct buf {
    uint64_t gpa;
    uint32_t len;
    uint16_t flags; /* VIRTQ_DESC_F_WRITE or 0 */
};

static uint8_t pattern(uint64_t off)
{
    return (uint8_t)(off * 7 + (off >> 9) + 1);
}

static void write_image(const char *path, uint64_t bytes)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    uint8_t *b = malloc(bytes ? bytes : 1);
    assert_non_null(b);
    for (uint64_t i = 0; i < bytes; i++)
        b[i] = pattern(i);
    assert_int_equal(write(fd, b, bytes), (ssize_t)bytes);
    free(b);
    close(fd);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct tern_err err;
    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/tern-vblk-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->image, sizeof(f->image), "%s/disk.img", f->dir);
    write_image(f->image, IMAGE_SECTORS * 512ull);
    if (guest_memory_create(&f->gm, RAM_SIZE, &err) < 0)
        return -1;
    f->ram = f->gm.host_base;
    f->num = QNUM;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    virtio_blk_destroy(f->dev);
    if (f->dirty) {
        vmm_dirty_free(f->dirty);
        free(f->dirty);
    }
    guest_memory_destroy(&f->gm);
    char path[128];
    const char *names[] = {"disk.img", "empty.img", "odd.img", "sub"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", f->dir, names[i]);
        if (unlink(path) < 0 && errno == EISDIR)
            rmdir(path);
        rmdir(path);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static struct virtio_blk_config blk_cfg(struct fx *f, bool ro)
{
    return (struct virtio_blk_config){.path = f->image, .read_only = ro,
                                      .mmio_base = VIRTIO_BLK_MMIO_BASE,
                                      .gsi = VIRTIO_BLK_GSI_BASE, .index = 0};
}

static void open_dev(struct fx *f, bool ro)
{
    struct tern_err err;
    struct virtio_blk_config cfg = blk_cfg(f, ro);
    if (virtio_blk_create(&f->dev, &cfg, &f->gm, -1, f->dirty, &err) < 0)
        fail_msg("create: %s", err.msg);
}

static void start_dev(struct fx *f)
{
    struct tern_err err;
    if (virtio_blk_start(f->dev, &err) < 0)
        fail_msg("start: %s", err.msg);
}

static uint32_t r32(struct virtio_blk *dev, uint64_t off)
{
    struct mmio_device *m = virtio_blk_mmio(dev);
    uint8_t b[4];
    m->ops->read(m, off, b, 4);
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void w32(struct virtio_blk *dev, uint64_t off, uint32_t v)
{
    struct mmio_device *m = virtio_blk_mmio(dev);
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    m->ops->write(m, off, b, 4);
}

static uint64_t device_features(struct virtio_blk *dev)
{
    w32(dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    uint64_t f = r32(dev, VIRTIO_MMIO_DEVICE_FEATURES);
    w32(dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    return f | (uint64_t)r32(dev, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
}

static void write_driver_features(struct virtio_blk *dev, uint64_t feat)
{
    w32(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    w32(dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)feat);
    w32(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    w32(dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(feat >> 32));
}

static void setup_queue(struct fx *f, uint32_t num, uint64_t desc, uint64_t avail, uint64_t used)
{
    w32(f->dev, VIRTIO_MMIO_QUEUE_SEL, 0);
    w32(f->dev, VIRTIO_MMIO_QUEUE_NUM, num);
    w32(f->dev, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
    w32(f->dev, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
    w32(f->dev, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)avail);
    w32(f->dev, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, (uint32_t)(avail >> 32));
    w32(f->dev, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)used);
    w32(f->dev, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, (uint32_t)(used >> 32));
    w32(f->dev, VIRTIO_MMIO_QUEUE_READY, 1);
}

/* The driver's side of initialisation (virtio 1.x section 3.1.1). */
static void drv_init(struct fx *f)
{
    /* Reset first: only then are the old rings the driver's again. */
    w32(f->dev, VIRTIO_MMIO_STATUS, 0);
    memset(f->ram + DESC_GPA, 0, 0x30000);
    f->avail_idx = 0;
    f->next_desc = 0;
    w32(f->dev, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
    w32(f->dev, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    uint64_t feat = device_features(f->dev);
    write_driver_features(f->dev, feat);
    uint32_t st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
    w32(f->dev, VIRTIO_MMIO_STATUS, st);
    assert_true(r32(f->dev, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK);
    setup_queue(f, f->num, DESC_GPA, AVAIL_GPA, USED_GPA);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_QUEUE_READY), 1);
    w32(f->dev, VIRTIO_MMIO_STATUS, st | VIRTIO_STATUS_DRIVER_OK);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_STATUS), st | VIRTIO_STATUS_DRIVER_OK);
}

static void put_desc_at(uint8_t *table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                        uint16_t next)
{
    uint8_t *d = table + 16u * i;
    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    memcpy(d + 12, &flags, 2);
    memcpy(d + 14, &next, 2);
}

static void offer(struct fx *f, uint16_t head)
{
    uint16_t slot = f->avail_idx & (f->num - 1);
    memcpy(f->ram + AVAIL_GPA + 4 + 2u * slot, &head, 2);
    f->avail_idx++;
    __atomic_store_n((uint16_t *)(void *)(f->ram + AVAIL_GPA + 2), f->avail_idx,
                     __ATOMIC_RELEASE);
}

/* Chains n buffers through the descriptor table and makes them available
 * (no notification). */
static uint16_t submit(struct fx *f, const struct buf *b, unsigned n)
{
    uint16_t head = f->next_desc;
    for (unsigned i = 0; i < n; i++) {
        uint16_t idx = (uint16_t)((head + i) % f->num);
        uint16_t next = (uint16_t)((head + i + 1) % f->num);
        put_desc_at(f->ram + DESC_GPA, idx, b[i].gpa, b[i].len,
                    (uint16_t)(b[i].flags | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0)), next);
    }
    f->next_desc = (uint16_t)((head + n) % f->num);
    offer(f, head);
    return head;
}

/* The same through an indirect table at `table` (one ring descriptor). */
static uint16_t submit_indirect(struct fx *f, const struct buf *b, unsigned n, uint64_t table)
{
    for (unsigned i = 0; i < n; i++)
        put_desc_at(f->ram + table, i, b[i].gpa, b[i].len,
                    (uint16_t)(b[i].flags | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0)),
                    (uint16_t)(i + 1));
    uint16_t head = f->next_desc;
    put_desc_at(f->ram + DESC_GPA, head, table, n * 16u, VIRTQ_DESC_F_INDIRECT, 0);
    f->next_desc = (uint16_t)((head + 1) % f->num);
    offer(f, head);
    return head;
}

static uint64_t hdr_at(struct fx *f, uint32_t type, uint64_t sector)
{
    uint64_t gpa = HDR_GPA + 16u * (f->avail_idx & (f->num - 1));
    uint32_t zero = 0;
    memcpy(f->ram + gpa, &type, 4);
    memcpy(f->ram + gpa + 4, &zero, 4);
    memcpy(f->ram + gpa + 8, &sector, 8);
    return gpa;
}

static uint64_t status_at(struct fx *f)
{
    uint64_t gpa = STATUS_GPA + (f->avail_idx & (f->num - 1));
    f->ram[gpa] = 0xee;
    return gpa;
}

/* A read or write of `len` bytes at `sector` with one data buffer. */
static uint16_t submit_rw(struct fx *f, uint32_t type, uint64_t sector, uint64_t data,
                          uint32_t len, uint64_t *status_gpa)
{
    struct buf b[3];
    unsigned n = 0;
    b[n++] = (struct buf){hdr_at(f, type, sector), 16, 0};
    if (len)
        b[n++] = (struct buf){data, len, type == VIRTIO_BLK_T_OUT ? 0 : VIRTQ_DESC_F_WRITE};
    *status_gpa = status_at(f);
    b[n++] = (struct buf){*status_gpa, 1, VIRTQ_DESC_F_WRITE};
    return submit(f, b, n);
}

static uint16_t used_idx(struct fx *f)
{
    return __atomic_load_n((uint16_t *)(void *)(f->ram + USED_GPA + 2), __ATOMIC_ACQUIRE);
}

static void used_elem(struct fx *f, uint16_t i, uint32_t *id, uint32_t *len)
{
    unsigned slot = i & (f->num - 1);
    memcpy(id, f->ram + USED_GPA + 4 + 8u * slot, 4);
    memcpy(len, f->ram + USED_GPA + 8 + 8u * slot, 4);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits (up to 10 s) for the used index to reach `target`. */
static void wait_used(struct fx *f, uint16_t target)
{
    for (int i = 0; i < 10000; i++) {
        if (used_idx(f) == target)
            return;
        sleep_ms(1);
    }
    fail_msg("used index stuck at %u, expected %u", used_idx(f), target);
}

/* Submits, notifies, waits; returns the status byte, *used_len the length. */
static uint8_t run_rw(struct fx *f, uint32_t type, uint64_t sector, uint64_t data, uint32_t len,
                      uint32_t *used_len)
{
    uint64_t st;
    uint16_t head = submit_rw(f, type, sector, data, len, &st);
    uint16_t before = used_idx(f);
    virtio_blk_test_notify(f->dev);
    wait_used(f, (uint16_t)(before + 1));
    uint32_t id, ulen;
    used_elem(f, before, &id, &ulen);
    assert_int_equal(id, head);
    if (used_len)
        *used_len = ulen;
    return f->ram[st];
}

static void ready_device(struct fx *f, bool ro)
{
    open_dev(f, ro);
    drv_init(f);
    start_dev(f);
}

/* ------------------------------------------------------------------ */

static void test_create_errors(void **state)
{
    struct fx *f = *state;
    struct tern_err err;
    struct virtio_blk *dev = NULL;
    struct virtio_blk_config cfg = blk_cfg(f, false);
    char path[128];

    snprintf(path, sizeof(path), "%s/missing.img", f->dir);
    cfg.path = path;
    assert_int_equal(virtio_blk_create(&dev, &cfg, &f->gm, -1, NULL, &err), -1);
    assert_null(dev);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "No such file"));

    snprintf(path, sizeof(path), "%s/sub", f->dir);
    assert_int_equal(mkdir(path, 0755), 0);
    cfg.read_only = true; /* a directory opens read-only */
    assert_int_equal(virtio_blk_create(&dev, &cfg, &f->gm, -1, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "not a regular file or block device"));
    cfg.read_only = false;

    snprintf(path, sizeof(path), "%s/odd.img", f->dir);
    write_image(path, 1000);
    assert_int_equal(virtio_blk_create(&dev, &cfg, &f->gm, -1, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "not a multiple of 512"));
    assert_non_null(strstr(err.msg, path));

    snprintf(path, sizeof(path), "%s/empty.img", f->dir);
    write_image(path, 0);
    assert_int_equal(virtio_blk_create(&dev, &cfg, &f->gm, -1, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "empty"));

    cfg = blk_cfg(f, false);
    cfg.mmio_base = 0xd0000800;
    assert_int_equal(virtio_blk_create(&dev, &cfg, &f->gm, -1, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "aligned"));

    /* A vm_fd that is not a KVM VM: registration fails, clearly. */
    cfg = blk_cfg(f, false);
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    assert_true(null_fd >= 0);
    assert_int_equal(virtio_blk_create(&dev, &cfg, &f->gm, null_fd, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "KVM_IOEVENTFD"));
    assert_non_null(strstr(err.msg, f->image));
    close(null_fd);
}

static void test_kvm_registration(void **state)
{
    struct fx *f = *state;
    test_require_kvm();
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    assert_true(kvm >= 0);
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0 || ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
        fail_msg("KVM_CREATE_VM / KVM_CREATE_IRQCHIP: %s", strerror(errno));
    struct tern_err err;
    struct virtio_blk *a = NULL, *b = NULL;
    struct virtio_blk_config cfg = blk_cfg(f, false);
    if (virtio_blk_create(&a, &cfg, &f->gm, vm, NULL, &err) < 0)
        fail_msg("create with KVM: %s", err.msg);
    /* The notify address is taken: a second device there is refused. */
    assert_int_equal(virtio_blk_create(&b, &cfg, &f->gm, vm, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "KVM_IOEVENTFD"));
    /* Destroy unregisters, so the address is free again. */
    virtio_blk_destroy(a);
    if (virtio_blk_create(&b, &cfg, &f->gm, vm, NULL, &err) < 0)
        fail_msg("re-create after destroy: %s", err.msg);
    virtio_blk_destroy(b);
    close(vm);
    close(kvm);
}

static void test_cmdline(void **state)
{
    struct fx *f = *state;
    struct tern_err err;
    struct virtio_blk_config cfg = blk_cfg(f, false);
    cfg.mmio_base = VIRTIO_BLK_MMIO_BASE + 2 * 0x1000;
    cfg.gsi = VIRTIO_BLK_GSI_BASE + 2;
    cfg.index = 2;
    assert_int_equal(virtio_blk_create(&f->dev, &cfg, &f->gm, -1, NULL, &err), 0);
    char buf[64];
    int n = virtio_blk_cmdline(f->dev, buf, sizeof(buf));
    assert_string_equal(buf, "virtio_mmio.device=4K@0xd0002000:7");
    assert_int_equal(n, (int)strlen(buf));
    assert_int_equal(virtio_blk_cmdline(f->dev, buf, 10), -1);
    assert_int_equal(virtio_blk_capacity(f->dev), IMAGE_SECTORS);
    struct mmio_device *m = virtio_blk_mmio(f->dev);
    assert_int_equal(m->base, 0xd0002000);
    assert_int_equal(m->len, 0x1000);
}

static void test_identity_registers(void **state)
{
    struct fx *f = *state;
    open_dev(f, false);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_MAGIC_VALUE), 0x74726976);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_VERSION_REG), 2);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_DEVICE_ID), 2);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_VENDOR_ID), 0x5445524e);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_STATUS), 0);
    uint64_t feat = device_features(f->dev);
    assert_true(feat & VIRTIO_F_VERSION_1);
    assert_true(feat & VIRTIO_BLK_F_FLUSH);
    assert_true(feat & VIRTIO_F_INDIRECT_DESC);
    assert_false(feat & VIRTIO_BLK_F_RO);
    assert_false(feat & (1ull << 29)); /* no EVENT_IDX */
    w32(f->dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_DEVICE_FEATURES), 0);
    w32(f->dev, VIRTIO_MMIO_QUEUE_SEL, 0);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_QUEUE_NUM_MAX), 256);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_QUEUE_READY), 0);
    w32(f->dev, VIRTIO_MMIO_QUEUE_SEL, 1);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_SHM_LEN_LOW), 0xffffffffu);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_CONFIG_GENERATION), 0);

    /* Registers want aligned 4-byte accesses; others read 0, write nothing. */
    struct mmio_device *m = virtio_blk_mmio(f->dev);
    uint8_t b[2] = {0xff, 0xff};
    m->ops->read(m, VIRTIO_MMIO_MAGIC_VALUE, b, 2);
    assert_int_equal(b[0], 0);
    assert_int_equal(b[1], 0);
    uint8_t one = VIRTIO_STATUS_ACKNOWLEDGE;
    m->ops->write(m, VIRTIO_MMIO_STATUS, &one, 1);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_STATUS), 0);
}

static void test_feature_negotiation(void **state)
{
    struct fx *f = *state;
    open_dev(f, false);
    uint32_t base = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;
    w32(f->dev, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
    w32(f->dev, VIRTIO_MMIO_STATUS, base);

    /* A legacy driver (no VERSION_1) is refused. */
    write_driver_features(f->dev, VIRTIO_BLK_F_FLUSH);
    w32(f->dev, VIRTIO_MMIO_STATUS, base | VIRTIO_STATUS_FEATURES_OK);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_STATUS), base);
    /* So is one accepting a feature we never offered (EVENT_IDX). */
    write_driver_features(f->dev, VIRTIO_F_VERSION_1 | (1ull << 29));
    w32(f->dev, VIRTIO_MMIO_STATUS, base | VIRTIO_STATUS_FEATURES_OK);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_STATUS), base);
    /* DRIVER_OK without FEATURES_OK is not taken either. */
    w32(f->dev, VIRTIO_MMIO_STATUS, base | VIRTIO_STATUS_DRIVER_OK);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_STATUS), base);

    write_driver_features(f->dev, VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH);
    w32(f->dev, VIRTIO_MMIO_STATUS, base | VIRTIO_STATUS_FEATURES_OK);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_STATUS), base | VIRTIO_STATUS_FEATURES_OK);
    /* Features are frozen after FEATURES_OK. */
    write_driver_features(f->dev, 0);
    struct virtio_blk_state s;
    virtio_blk_state_get(f->dev, &s);
    assert_int_equal(s.transport.driver_features, VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH);
    /* The driver cannot set DEVICE_NEEDS_RESET itself. */
    w32(f->dev, VIRTIO_MMIO_STATUS,
        base | VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_STATUS), base | VIRTIO_STATUS_FEATURES_OK);
}

static void test_config_space(void **state)
{
    struct fx *f = *state;
    open_dev(f, false);
    struct mmio_device *m = virtio_blk_mmio(f->dev);
    uint8_t b[8];
    m->ops->read(m, VIRTIO_MMIO_CONFIG + VIRTIO_BLK_CFG_CAPACITY, b, 8);
    uint64_t cap;
    memcpy(&cap, b, 8);
    assert_int_equal(cap, IMAGE_SECTORS);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_CONFIG + 0), IMAGE_SECTORS);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_CONFIG + 4), 0);
    m->ops->read(m, VIRTIO_MMIO_CONFIG + 1, b, 1); /* byte-wise */
    assert_int_equal(b[0], IMAGE_SECTORS >> 8);
    m->ops->read(m, VIRTIO_MMIO_CONFIG + 1, b, 2); /* unaligned */
    assert_int_equal(b[0], IMAGE_SECTORS >> 8);
    assert_int_equal(b[1], 0);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_CONFIG + VIRTIO_BLK_CFG_SEG_MAX), 254);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_CONFIG + VIRTIO_BLK_CFG_BLK_SIZE), 512);
    /* Past the end: zeros; straddling the end: the tail is zero. */
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_CONFIG + 0x200), 0);
    memset(b, 0xff, sizeof(b));
    m->ops->read(m, VIRTIO_MMIO_CONFIG + VIRTIO_BLK_CONFIG_SIZE - 2, b, 4);
    assert_int_equal(b[0], 1); /* num_queues = 1 */
    assert_int_equal(b[2], 0);
    assert_int_equal(b[3], 0);
    /* Writes are ignored. */
    uint8_t z[8] = {0};
    m->ops->write(m, VIRTIO_MMIO_CONFIG, z, 8);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_CONFIG), IMAGE_SECTORS);
}

static void test_write_then_read_back(void **state)
{
    struct fx *f = *state;
    ready_device(f, false);
    uint8_t *data = f->ram + DATA_GPA;
    for (unsigned i = 0; i < 4096; i++)
        data[i] = (uint8_t)(i ^ 0x5a);
    uint32_t ulen;
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_OUT, 10, DATA_GPA, 4096, &ulen), VIRTIO_BLK_S_OK);
    assert_int_equal(ulen, 1);

    /* The image holds it, and nothing around it moved. */
    int fd = open(f->image, O_RDONLY | O_CLOEXEC);
    uint8_t img[4096 + 1024];
    assert_int_equal(pread(fd, img, sizeof(img), 10 * 512 - 512), (ssize_t)sizeof(img));
    close(fd);
    for (unsigned i = 0; i < 512; i++)
        assert_int_equal(img[i], pattern(9 * 512 + i));
    assert_memory_equal(img + 512, data, 4096);
    assert_int_equal(img[512 + 4096], pattern(18 * 512));

    /* Read back in three writable pieces; the status shares the last one. */
    memset(f->ram + DATA_GPA + 0x10000, 0, 0x3000);
    struct buf b[] = {
        {hdr_at(f, VIRTIO_BLK_T_IN, 10), 16, 0},
        {DATA_GPA + 0x10000, 1000, VIRTQ_DESC_F_WRITE},
        {DATA_GPA + 0x11000, 3000, VIRTQ_DESC_F_WRITE},
        {DATA_GPA + 0x12000, 96 + 1, VIRTQ_DESC_F_WRITE},
    };
    f->ram[DATA_GPA + 0x12000 + 96] = 0xee;
    uint16_t head = submit(f, b, 4);
    virtio_blk_test_notify(f->dev);
    wait_used(f, 2);
    uint32_t id;
    used_elem(f, 1, &id, &ulen);
    assert_int_equal(id, head);
    assert_int_equal(ulen, 4097);
    assert_int_equal(f->ram[DATA_GPA + 0x12000 + 96], VIRTIO_BLK_S_OK);
    assert_memory_equal(f->ram + DATA_GPA + 0x10000, data, 1000);
    assert_memory_equal(f->ram + DATA_GPA + 0x11000, data + 1000, 3000);
    assert_memory_equal(f->ram + DATA_GPA + 0x12000, data + 4000, 96);

    struct virtio_blk_stats s;
    virtio_blk_get_stats(f->dev, &s);
    assert_int_equal(s.writes, 1);
    assert_int_equal(s.reads, 1);
    assert_int_equal(s.bytes_written, 4096);
    assert_int_equal(s.bytes_read, 4096);
    assert_int_equal(s.errors, 0);
    assert_true(virtio_blk_interrupts(f->dev) >= 1);
    assert_true(r32(f->dev, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_VRING);
    w32(f->dev, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
}

static void test_many_segments_and_indirect(void **state)
{
    struct fx *f = *state;
    ready_device(f, false);
    /* 20 data buffers of 512 bytes, through an indirect table. */
    struct buf b[22];
    b[0] = (struct buf){hdr_at(f, VIRTIO_BLK_T_OUT, 100), 16, 0};
    for (unsigned i = 0; i < 20; i++) {
        uint64_t gpa = DATA_GPA + i * 0x1000;
        memset(f->ram + gpa, (int)(i + 1), 512);
        b[1 + i] = (struct buf){gpa, 512, 0};
    }
    uint64_t st = status_at(f);
    b[21] = (struct buf){st, 1, VIRTQ_DESC_F_WRITE};
    submit_indirect(f, b, 22, TABLE_GPA);
    virtio_blk_test_notify(f->dev);
    wait_used(f, 1);
    assert_int_equal(f->ram[st], VIRTIO_BLK_S_OK);

    /* Back, direct, into 20 other buffers. */
    b[0] = (struct buf){hdr_at(f, VIRTIO_BLK_T_IN, 100), 16, 0};
    for (unsigned i = 0; i < 20; i++)
        b[1 + i] = (struct buf){DATA_GPA + 0x100000 + i * 0x1000, 512, VIRTQ_DESC_F_WRITE};
    st = status_at(f);
    b[21] = (struct buf){st, 1, VIRTQ_DESC_F_WRITE};
    submit(f, b, 22);
    virtio_blk_test_notify(f->dev);
    wait_used(f, 2);
    assert_int_equal(f->ram[st], VIRTIO_BLK_S_OK);
    for (unsigned i = 0; i < 20; i++) {
        const uint8_t *p = f->ram + DATA_GPA + 0x100000 + i * 0x1000;
        assert_int_equal(p[0], i + 1);
        assert_int_equal(p[511], i + 1);
    }
}

static void test_flush(void **state)
{
    struct fx *f = *state;
    ready_device(f, false);
    uint32_t ulen;
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_OUT, 0, DATA_GPA, 512, NULL), VIRTIO_BLK_S_OK);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_FLUSH, 0, 0, 0, &ulen), VIRTIO_BLK_S_OK);
    assert_int_equal(ulen, 1);
    struct virtio_blk_stats s;
    virtio_blk_get_stats(f->dev, &s);
    assert_int_equal(s.flushes, 1);
}

static void test_read_only(void **state)
{
    struct fx *f = *state;
    ready_device(f, true);
    assert_true(device_features(f->dev) & VIRTIO_BLK_F_RO);
    memset(f->ram + DATA_GPA, 0xab, 512);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_OUT, 3, DATA_GPA, 512, NULL), VIRTIO_BLK_S_IOERR);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_IN, 3, DATA_GPA + 0x1000, 512, NULL),
                     VIRTIO_BLK_S_OK);
    assert_int_equal(f->ram[DATA_GPA + 0x1000], pattern(3 * 512));
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_FLUSH, 0, 0, 0, NULL), VIRTIO_BLK_S_OK);
    int fd = open(f->image, O_RDONLY | O_CLOEXEC);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, 3 * 512), 1);
    close(fd);
    assert_int_equal(b, pattern(3 * 512));
    struct virtio_blk_stats s;
    virtio_blk_get_stats(f->dev, &s);
    assert_int_equal(s.errors, 1);
    assert_int_equal(s.writes, 0);
}

static void test_out_of_range(void **state)
{
    struct fx *f = *state;
    ready_device(f, false);
    /* The last sector is fine, one more is not. */
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_IN, IMAGE_SECTORS - 1, DATA_GPA, 512, NULL),
                     VIRTIO_BLK_S_OK);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_IN, IMAGE_SECTORS - 1, DATA_GPA, 1024, NULL),
                     VIRTIO_BLK_S_IOERR);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_OUT, IMAGE_SECTORS, DATA_GPA, 512, NULL),
                     VIRTIO_BLK_S_IOERR);
    /* sector * 512 would overflow */
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_IN, UINT64_MAX / 256, DATA_GPA, 512, NULL),
                     VIRTIO_BLK_S_IOERR);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_IN, UINT64_MAX, DATA_GPA, 512, NULL),
                     VIRTIO_BLK_S_IOERR);
    /* Data not a multiple of 512. */
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_IN, 0, DATA_GPA, 100, NULL), VIRTIO_BLK_S_IOERR);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_OUT, 0, DATA_GPA, 513, NULL), VIRTIO_BLK_S_IOERR);
    struct virtio_blk_stats s;
    virtio_blk_get_stats(f->dev, &s);
    assert_int_equal(s.errors, 6);
    assert_int_equal(s.reads, 1);
    /* The device is still fine. */
    assert_int_equal(virtio_blk_status(f->dev) & VIRTIO_STATUS_DEVICE_NEEDS_RESET, 0);
}

static void test_bad_requests(void **state)
{
    struct fx *f = *state;
    ready_device(f, false);
    uint32_t ulen, id;

    /* Header of 8 bytes. */
    uint64_t st = status_at(f);
    struct buf b[3] = {{hdr_at(f, VIRTIO_BLK_T_IN, 0), 8, 0}, {st, 1, VIRTQ_DESC_F_WRITE}};
    submit(f, b, 2);
    virtio_blk_test_notify(f->dev);
    wait_used(f, 1);
    assert_int_equal(f->ram[st], VIRTIO_BLK_S_IOERR);

    /* No writable byte at all: returned with length 0, nothing written. */
    b[0] = (struct buf){hdr_at(f, VIRTIO_BLK_T_IN, 0), 16, 0};
    uint16_t head = submit(f, b, 1);
    virtio_blk_test_notify(f->dev);
    wait_used(f, 2);
    used_elem(f, 1, &id, &ulen);
    assert_int_equal(id, head);
    assert_int_equal(ulen, 0);

    /* Unknown request type. */
    assert_int_equal(run_rw(f, 0x1234, 0, 0, 0, &ulen), VIRTIO_BLK_S_UNSUPP);
    assert_int_equal(ulen, 1);

    /* Data buffer outside guest RAM: IOERR in the (valid) status byte. */
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_IN, 0, RAM_SIZE - 256, 512, NULL),
                     VIRTIO_BLK_S_IOERR);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_IN, 0, 0xc0000000ull, 512, NULL),
                     VIRTIO_BLK_S_IOERR);

    /* GET_ID: a 20-byte id, status after it. */
    memset(f->ram + DATA_GPA, 0xcc, 32);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_GET_ID, 0, DATA_GPA, 20, &ulen), VIRTIO_BLK_S_OK);
    assert_int_equal(ulen, 21);
    assert_string_equal((char *)f->ram + DATA_GPA, "tern-disk0");
    for (unsigned i = 10; i < 20; i++)
        assert_int_equal(f->ram[DATA_GPA + i], 0); /* NUL padding */
    assert_int_equal(f->ram[DATA_GPA + 20], 0xcc);
    /* A short id buffer gets what fits. */
    memset(f->ram + DATA_GPA, 0xcc, 32);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_GET_ID, 0, DATA_GPA, 4, &ulen), VIRTIO_BLK_S_OK);
    assert_int_equal(ulen, 5);
    assert_memory_equal(f->ram + DATA_GPA, "tern", 4);
    assert_int_equal(f->ram[DATA_GPA + 4], 0xcc);

    assert_int_equal(virtio_blk_status(f->dev) & VIRTIO_STATUS_DEVICE_NEEDS_RESET, 0);
}

static void test_status_byte_placement(void **state)
{
    struct fx *f = *state;
    ready_device(f, false);
    /* IN: data and status in one 513-byte buffer. */
    memset(f->ram + DATA_GPA, 0, 1024);
    struct buf b[2] = {{hdr_at(f, VIRTIO_BLK_T_IN, 4), 16, 0},
                       {DATA_GPA, 513, VIRTQ_DESC_F_WRITE}};
    f->ram[DATA_GPA + 512] = 0xee;
    submit(f, b, 2);
    virtio_blk_test_notify(f->dev);
    wait_used(f, 1);
    assert_int_equal(f->ram[DATA_GPA + 512], VIRTIO_BLK_S_OK);
    for (unsigned i = 0; i < 512; i++)
        assert_int_equal(f->ram[DATA_GPA + i], pattern(4 * 512 + i));
    assert_int_equal(f->ram[DATA_GPA + 513], 0);

    /* OUT: header and data in one readable buffer, a 4-byte writable
     * buffer whose last byte is the status. */
    uint64_t out = DATA_GPA + 0x2000;
    uint32_t type = VIRTIO_BLK_T_OUT, zero = 0;
    uint64_t sector = 7;
    memcpy(f->ram + out, &type, 4);
    memcpy(f->ram + out + 4, &zero, 4);
    memcpy(f->ram + out + 8, &sector, 8);
    memset(f->ram + out + 16, 0x77, 512);
    memset(f->ram + DATA_GPA + 0x3000, 0xee, 4);
    struct buf c[2] = {{out, 16 + 512, 0}, {DATA_GPA + 0x3000, 4, VIRTQ_DESC_F_WRITE}};
    submit(f, c, 2);
    virtio_blk_test_notify(f->dev);
    wait_used(f, 2);
    assert_int_equal(f->ram[DATA_GPA + 0x3000 + 3], VIRTIO_BLK_S_OK);
    assert_int_equal(f->ram[DATA_GPA + 0x3000], 0xee);
    assert_int_equal(f->ram[DATA_GPA + 0x3002], 0xee);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_IN, 7, DATA_GPA + 0x4000, 512, NULL),
                     VIRTIO_BLK_S_OK);
    assert_int_equal(f->ram[DATA_GPA + 0x4000 + 511], 0x77);
}

static void test_dirty_marking(void **state)
{
    struct fx *f = *state;
    struct tern_err err;
    f->dirty = calloc(1, sizeof(*f->dirty));
    assert_int_equal(vmm_dirty_init(f->dirty, &f->gm, &err), 0);
    ready_device(f, false);
    assert_int_equal(vmm_dirty_count(f->dirty), 0); /* set-up wrote nothing */

    /* IN into two whole pages and a range straddling a page boundary. */
    uint64_t st = status_at(f);
    struct buf b[] = {
        {hdr_at(f, VIRTIO_BLK_T_IN, 0), 16, 0},
        {0x200000, 4096, VIRTQ_DESC_F_WRITE},
        {0x202000, 4096, VIRTQ_DESC_F_WRITE},
        {0x204e00, 1024, VIRTQ_DESC_F_WRITE},
        {st, 1, VIRTQ_DESC_F_WRITE},
    };
    submit(f, b, 5);
    virtio_blk_test_notify(f->dev);
    wait_used(f, 1);
    assert_int_equal(f->ram[st], VIRTIO_BLK_S_OK);
    uint64_t want[] = {0x200, 0x202, 0x204, 0x205, STATUS_GPA / 4096, USED_GPA / 4096};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!vmm_dirty_test(f->dirty, want[i]))
            fail_msg("page 0x%llx not marked", (unsigned long long)want[i]);
    assert_int_equal(vmm_dirty_count(f->dirty), 6);

    /* OUT: only the status byte and the used ring are device writes. */
    uint64_t words = (RAM_SIZE / 4096 + 63) / 64;
    uint64_t *tmp = calloc(words, 8);
    vmm_dirty_collect(f->dirty, tmp, 0, words);
    free(tmp);
    assert_int_equal(vmm_dirty_count(f->dirty), 0);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_OUT, 0, 0x300000, 4096, NULL), VIRTIO_BLK_S_OK);
    assert_int_equal(vmm_dirty_count(f->dirty), 2);
    assert_true(vmm_dirty_test(f->dirty, STATUS_GPA / 4096));
    assert_true(vmm_dirty_test(f->dirty, USED_GPA / 4096));
    assert_false(vmm_dirty_test(f->dirty, 0x300));

    /* GET_ID marks its buffer. */
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_GET_ID, 0, 0x400000, 20, NULL), VIRTIO_BLK_S_OK);
    assert_true(vmm_dirty_test(f->dirty, 0x400));
    assert_int_equal(vmm_dirty_count(f->dirty), 3);
}

static void test_no_interrupt_and_mmio_notify(void **state)
{
    struct fx *f = *state;
    ready_device(f, false);
    uint16_t flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
    memcpy(f->ram + AVAIL_GPA, &flags, 2);
    uint64_t before = virtio_blk_interrupts(f->dev);
    uint64_t st;
    submit_rw(f, VIRTIO_BLK_T_IN, 0, DATA_GPA, 512, &st);
    /* A notify that exits to userspace instead of hitting the ioeventfd. */
    w32(f->dev, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    wait_used(f, 1);
    assert_int_equal(f->ram[st], VIRTIO_BLK_S_OK);
    sleep_ms(10);
    assert_int_equal(virtio_blk_interrupts(f->dev), before);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_INTERRUPT_STATUS), 0);

    flags = 0;
    memcpy(f->ram + AVAIL_GPA, &flags, 2);
    submit_rw(f, VIRTIO_BLK_T_IN, 0, DATA_GPA, 512, &st);
    w32(f->dev, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    wait_used(f, 2);
    for (int i = 0; i < 1000 && virtio_blk_interrupts(f->dev) == before; i++)
        sleep_ms(1);
    assert_int_equal(virtio_blk_interrupts(f->dev), before + 1);
    /* A notify for a queue that does not exist is ignored. */
    w32(f->dev, VIRTIO_MMIO_QUEUE_NOTIFY, 5);
}

#define MANY 80
#define MANY_BYTES 0x10000u

static void submit_many(struct fx *f, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        uint64_t st;
        submit_rw(f, VIRTIO_BLK_T_IN, (i * 128) % IMAGE_SECTORS, DATA_GPA + i * MANY_BYTES,
                  MANY_BYTES, &st);
    }
}

/* After quiesce: everything taken has completed and nothing moves. */
static void check_quiet(struct fx *f)
{
    struct virtio_blk_state s;
    virtio_blk_state_get(f->dev, &s);
    const struct virtio_mmio_queue_state *q = &s.transport.queue[0];
    assert_int_equal(q->last_avail, q->used_idx);
    assert_int_equal(q->used_idx, used_idx(f));
    for (uint16_t i = 0; i < q->used_idx; i++) {
        uint32_t id, len;
        used_elem(f, i, &id, &len);
        assert_int_equal(len, MANY_BYTES + 1);
        /* Every request whose element is out has its status written. */
        assert_int_equal(f->ram[STATUS_GPA + id / 3], VIRTIO_BLK_S_OK);
    }
    uint64_t irqs = virtio_blk_interrupts(f->dev);
    uint16_t u = used_idx(f);
    sleep_ms(5);
    assert_int_equal(used_idx(f), u);
    assert_int_equal(virtio_blk_interrupts(f->dev), irqs);
}

static void wait_inflight(struct fx *f, unsigned n)
{
    for (int i = 0; i < 10000 && virtio_blk_test_inflight(f->dev) != n; i++)
        sleep_ms(1);
    assert_int_equal(virtio_blk_test_inflight(f->dev), n);
}

struct bg_call {
    struct fx *f;
    pthread_t thread;
    _Atomic int done;
    int rc;
    struct tern_err err;
};

static void *bg_quiesce(void *arg)
{
    struct bg_call *c = arg;
    c->rc = virtio_blk_quiesce(c->f->dev, &c->err);
    atomic_store(&c->done, 1);
    return NULL;
}

static void *bg_reset(void *arg)
{
    struct bg_call *c = arg;
    w32(c->f->dev, VIRTIO_MMIO_STATUS, 0); /* as a vCPU would */
    atomic_store(&c->done, 1);
    return NULL;
}

static void test_quiesce_waits_for_in_flight(void **state)
{
    struct fx *f = *state;
    struct tern_err err;
    ready_device(f, false);

    /* 80 requests taken and in flight (their I/O held back). */
    virtio_blk_test_hold_completions(f->dev, true);
    memset(f->ram + STATUS_GPA, 0xee, MANY);
    submit_many(f, MANY);
    virtio_blk_test_notify(f->dev);
    wait_inflight(f, MANY);
    assert_int_equal(used_idx(f), 0);

    struct bg_call c = {.f = f};
    assert_int_equal(pthread_create(&c.thread, NULL, bg_quiesce, &c), 0);
    sleep_ms(50);
    assert_int_equal(atomic_load(&c.done), 0); /* still waiting */
    assert_int_equal(used_idx(f), 0);
    uint64_t irqs = virtio_blk_interrupts(f->dev);
    virtio_blk_test_hold_completions(f->dev, false);
    pthread_join(c.thread, NULL);
    if (c.rc < 0)
        fail_msg("quiesce: %s", c.err.msg);
    /* When quiesce returned, all 80 were complete and signalled. */
    assert_int_equal(used_idx(f), MANY);
    assert_true(virtio_blk_interrupts(f->dev) > irqs);
    check_quiet(f);
    for (unsigned i = 0; i < MANY; i++) {
        assert_int_equal(f->ram[STATUS_GPA + i], VIRTIO_BLK_S_OK);
        uint64_t off = ((i * 128) % IMAGE_SECTORS) * 512ull;
        assert_int_equal(f->ram[DATA_GPA + i * MANY_BYTES + 1], pattern(off + 1));
    }
    virtio_blk_unquiesce(f->dev);

    /* Quiesce/unquiesce racing with a running batch keeps the invariant. */
    for (int round = 0; round < 5; round++) {
        drv_init(f);
        submit_many(f, MANY);
        virtio_blk_test_notify(f->dev);
        assert_int_equal(virtio_blk_quiesce(f->dev, &err), 0);
        check_quiet(f);
        virtio_blk_unquiesce(f->dev);
        wait_used(f, MANY);
    }

    /* A notify while quiesced waits for unquiesce. */
    assert_int_equal(virtio_blk_quiesce(f->dev, &err), 0);
    uint64_t st;
    submit_rw(f, VIRTIO_BLK_T_IN, 0, DATA_GPA, 512, &st);
    virtio_blk_test_notify(f->dev);
    sleep_ms(30);
    assert_int_equal(used_idx(f), MANY);
    virtio_blk_unquiesce(f->dev);
    wait_used(f, MANY + 1);
}

static int next_record(struct rec_buf *b, struct rec_header *h, struct rec_reader *payload)
{
    static struct rec_reader r;
    struct tern_err err;
    rec_reader_init(&r, b->data, b->len);
    int rc = rec_next(&r, h, payload, &err);
    if (rc != 1)
        fail_msg("rec_next: %d %s", rc, err.msg);
    return rc;
}

static void test_save_load_continue(void **state)
{
    struct fx *f = *state;
    struct tern_err err;
    ready_device(f, false);
    memset(f->ram + DATA_GPA, 0x42, 1024);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_OUT, 20, DATA_GPA, 1024, NULL), VIRTIO_BLK_S_OK);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_IN, 21, DATA_GPA + 0x1000, 512, NULL),
                     VIRTIO_BLK_S_OK);
    /* The interrupt is not acknowledged: it is part of the state. */
    assert_true(r32(f->dev, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_VRING);

    assert_int_equal(virtio_blk_quiesce(f->dev, &err), 0);
    /* The guest queues more work that the source never takes. */
    memset(f->ram + DATA_GPA + 0x2000, 0x99, 512);
    uint64_t st1, st2;
    uint16_t out_head = submit_rw(f, VIRTIO_BLK_T_OUT, 30, DATA_GPA + 0x2000, 512, &st1);
    uint16_t in_head = submit_rw(f, VIRTIO_BLK_T_IN, 20, DATA_GPA + 0x3000, 1024, &st2);
    virtio_blk_test_notify(f->dev);
    sleep_ms(20);
    assert_int_equal(used_idx(f), 2);

    struct rec_buf rb;
    rec_buf_init(&rb);
    virtio_blk_state_save(f->dev, &rb);
    assert_int_equal(rec_buf_check(&rb, &err), 0);
    virtio_blk_destroy(f->dev);
    f->dev = NULL;

    /* The destination: same configuration, state loaded, then started. */
    open_dev(f, false);
    struct rec_header h;
    struct rec_reader payload;
    next_record(&rb, &h, &payload);
    assert_int_equal(h.type, VIRTIO_BLK_STATE_RECORD);
    assert_int_equal(h.version, 1);
    uint32_t index = 99;
    assert_int_equal(virtio_blk_state_peek_index(&payload, &index, &err), 0);
    assert_int_equal(index, 0);
    if (virtio_blk_state_load(f->dev, &h, &payload, &err) < 0)
        fail_msg("load: %s", err.msg);
    rec_buf_free(&rb);
    uint32_t st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
                  VIRTIO_STATUS_DRIVER_OK;
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_STATUS), st);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_QUEUE_READY), 1);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_QUEUE_DESC_LOW), DESC_GPA);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_QUEUE_DEVICE_LOW), USED_GPA);
    assert_true(r32(f->dev, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_VRING);
    assert_int_equal(virtio_blk_interrupts(f->dev), 0);

    start_dev(f);
    /* It continues at available index 2 without a new notify. */
    wait_used(f, 4);
    assert_int_equal(f->ram[st1], VIRTIO_BLK_S_OK);
    assert_int_equal(f->ram[st2], VIRTIO_BLK_S_OK);
    assert_int_equal(f->ram[DATA_GPA + 0x3000], 0x42);
    assert_int_equal(f->ram[DATA_GPA + 0x3000 + 1023], 0x42);
    /* Used elements come in completion order. */
    uint32_t id2, len2, id3, len3;
    used_elem(f, 2, &id2, &len2);
    used_elem(f, 3, &id3, &len3);
    if (id2 == in_head) {
        assert_int_equal(len2, 1025);
        assert_int_equal(id3, out_head);
        assert_int_equal(len3, 1);
    } else {
        assert_int_equal(id2, out_head);
        assert_int_equal(id3, in_head);
        assert_int_equal(len3, 1025);
    }
    /* The pending interrupt was signalled again, plus the new one(s). */
    assert_true(virtio_blk_interrupts(f->dev) >= 2);
    /* And more work still flows. */
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_IN, 30, DATA_GPA + 0x4000, 512, NULL),
                     VIRTIO_BLK_S_OK);
    assert_int_equal(f->ram[DATA_GPA + 0x4000], 0x99);
    struct virtio_blk_stats s;
    virtio_blk_get_stats(f->dev, &s);
    assert_int_equal(s.reads, 2);
    assert_int_equal(s.writes, 1);
}

/* Encodes `s` (optionally with a different header or an extra byte). */
static void encode(struct rec_buf *b, const struct virtio_blk_state *s, uint32_t type,
                   uint16_t version, int extra)
{
    rec_buf_reset(b);
    rec_begin(b, type, version, 0);
    rec_put_u32(b, s->index);
    rec_put_u64(b, s->capacity);
    rec_put_u8(b, s->read_only);
    virtio_mmio_state_put(&s->transport, b);
    if (extra)
        rec_put_u8(b, 0);
    rec_end(b);
}

static void expect_refused(struct virtio_blk *dev, struct rec_buf *b, const char *what)
{
    struct rec_header h;
    struct rec_reader payload;
    struct tern_err err;
    next_record(b, &h, &payload);
    assert_int_equal(virtio_blk_state_load(dev, &h, &payload, &err), -1);
    if (!strstr(err.msg, what))
        fail_msg("expected '%s' in: %s", what, err.msg);
    if (!strstr(err.msg, "disk0"))
        fail_msg("message does not name the disk: %s", err.msg);
}

static void test_load_refuses_bad_states(void **state)
{
    struct fx *f = *state;
    struct tern_err err;
    ready_device(f, false);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_IN, 0, DATA_GPA, 512, NULL), VIRTIO_BLK_S_OK);
    assert_int_equal(virtio_blk_quiesce(f->dev, &err), 0);
    struct virtio_blk_state good;
    virtio_blk_state_get(f->dev, &good);

    struct virtio_blk *fresh;
    struct virtio_blk_config cfg = blk_cfg(f, false);
    cfg.mmio_base += 0x1000;
    assert_int_equal(virtio_blk_create(&fresh, &cfg, &f->gm, -1, NULL, &err), 0);

    struct rec_buf b;
    rec_buf_init(&b);
    struct virtio_blk_state s;
#define REFUSE(mutation, what)                                                               \
    do {                                                                                     \
        s = good;                                                                            \
        mutation;                                                                            \
        encode(&b, &s, VIRTIO_BLK_STATE_RECORD, 1, 0);                                       \
        expect_refused(fresh, &b, what);                                                     \
    } while (0)
    struct virtio_mmio_queue_state *q = &s.transport.queue[0];

    encode(&b, &good, 0x0202, 1, 0);
    expect_refused(fresh, &b, "not a virtio-blk state");
    encode(&b, &good, VIRTIO_BLK_STATE_RECORD, 2, 0);
    expect_refused(fresh, &b, "version 2 is not supported");
    encode(&b, &good, VIRTIO_BLK_STATE_RECORD, 1, 1);
    expect_refused(fresh, &b, "trailing");
    rec_buf_reset(&b);
    rec_begin(&b, VIRTIO_BLK_STATE_RECORD, 1, 0);
    rec_put_u32(&b, 0);
    rec_put_u64(&b, good.capacity);
    rec_end(&b);
    expect_refused(fresh, &b, "malformed");

    REFUSE(s.index = 1, "state is for disk 1");
    REFUSE(s.capacity = IMAGE_SECTORS + 1, "2049 sectors");
    REFUSE(s.read_only = 1, "read-only disk, this one is writable");
    REFUSE(s.read_only = 2, "not a boolean");
    REFUSE(s.transport.device_id = 1, "device ID 1");
    REFUSE(s.transport.device_features |= VIRTIO_BLK_F_RO, "offered features");
    REFUSE(s.transport.driver_features |= 1ull << 29, "not offered");
    REFUSE(s.transport.status |= 0x10, "unknown bits");
    REFUSE(s.transport.driver_features &= ~VIRTIO_F_VERSION_1, "without VERSION_1");
    REFUSE(s.transport.status &= ~VIRTIO_STATUS_FEATURES_OK, "DRIVER_OK without FEATURES_OK");
    REFUSE(s.transport.interrupt_status = 4, "interrupt status 0x4");
    REFUSE(s.transport.nr_queues = 2, "2 queues");
    REFUSE(s.transport.nr_queues = 1000, "1000 queues");
    REFUSE(q->num = 0, "queue size 0");
    REFUSE(q->num = 100, "queue size 100");
    REFUSE(q->num = 512, "queue size 512");
    REFUSE(q->desc = DESC_GPA + 8, "descriptor table address");
    REFUSE(q->desc = RAM_SIZE - 0x800, "not inside guest RAM");
    REFUSE(q->driver = 0xc0000000ull, "available ring");
    REFUSE(q->device = USED_GPA + 2, "used ring");
    REFUSE(q->device = (uint64_t)RAM_SIZE, "used ring");
    REFUSE(q->last_avail = (uint16_t)(q->used_idx + 3), "3 requests were in flight");
    REFUSE(q->broken = 1, "lacks DEVICE_NEEDS_RESET");
    REFUSE(q->ready = 2, "not booleans");
#undef REFUSE

    /* The refusals left the fresh device untouched, and the good state
     * loads. A not-ready queue's registers are accepted as they are. */
    assert_int_equal(r32(fresh, VIRTIO_MMIO_STATUS), 0);
    s = good;
    s.transport.queue[0].ready = 0;
    s.transport.queue[0].num = 3;
    encode(&b, &s, VIRTIO_BLK_STATE_RECORD, 1, 0);
    struct rec_header h;
    struct rec_reader payload;
    next_record(&b, &h, &payload);
    if (virtio_blk_state_load(fresh, &h, &payload, &err) < 0)
        fail_msg("load: %s", err.msg);
    /* A running device refuses to load. */
    encode(&b, &good, VIRTIO_BLK_STATE_RECORD, 1, 0);
    expect_refused(f->dev, &b, "running");
    virtio_blk_destroy(fresh);
    rec_buf_free(&b);
    virtio_blk_unquiesce(f->dev);
}

static void test_reset(void **state)
{
    struct fx *f = *state;
    ready_device(f, false);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_IN, 0, DATA_GPA, 512, NULL), VIRTIO_BLK_S_OK);

    /* Reset with a batch in flight: it returns only once nothing is in
     * flight; after that the device writes nothing more. */
    virtio_blk_test_hold_completions(f->dev, true);
    submit_many(f, MANY);
    virtio_blk_test_notify(f->dev);
    wait_inflight(f, MANY);
    struct bg_call c = {.f = f};
    assert_int_equal(pthread_create(&c.thread, NULL, bg_reset, &c), 0);
    sleep_ms(50);
    assert_int_equal(atomic_load(&c.done), 0);
    virtio_blk_test_hold_completions(f->dev, false);
    pthread_join(c.thread, NULL);
    assert_int_equal(virtio_blk_test_inflight(f->dev), 0);
    uint16_t u = used_idx(f);
    assert_int_equal(u, 1 + MANY);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_STATUS), 0);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_QUEUE_READY), 0);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_QUEUE_DESC_LOW), 0);
    struct virtio_blk_state s;
    virtio_blk_state_get(f->dev, &s);
    assert_int_equal(s.transport.driver_features, 0);
    assert_int_equal(s.transport.queue[0].last_avail, 0);
    /* Buffers made available after the reset are not touched. */
    submit_rw(f, VIRTIO_BLK_T_IN, 0, DATA_GPA, 512, &(uint64_t){0});
    virtio_blk_test_notify(f->dev);
    sleep_ms(20);
    assert_int_equal(used_idx(f), u);

    /* A fresh start works from index 0 again. */
    drv_init(f);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_IN, 1, DATA_GPA, 512, NULL), VIRTIO_BLK_S_OK);
    assert_int_equal(used_idx(f), 1);
    assert_int_equal(f->ram[DATA_GPA], pattern(512));
}

static void test_malformed_ring_needs_reset(void **state)
{
    struct fx *f = *state;
    ready_device(f, false);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_IN, 0, DATA_GPA, 512, NULL), VIRTIO_BLK_S_OK);
    w32(f->dev, VIRTIO_MMIO_INTERRUPT_ACK, 3);
    offer(f, 300); /* head beyond the queue */
    virtio_blk_test_notify(f->dev);
    for (int i = 0; i < 5000; i++) {
        if (virtio_blk_status(f->dev) & VIRTIO_STATUS_DEVICE_NEEDS_RESET)
            break;
        sleep_ms(1);
    }
    assert_true(virtio_blk_status(f->dev) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    for (int i = 0; i < 1000 && !(r32(f->dev, VIRTIO_MMIO_INTERRUPT_STATUS) & 2); i++)
        sleep_ms(1);
    assert_true(r32(f->dev, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG);
    /* Nothing more is taken, even valid requests. */
    uint64_t st;
    submit_rw(f, VIRTIO_BLK_T_IN, 0, DATA_GPA, 512, &st);
    virtio_blk_test_notify(f->dev);
    sleep_ms(20);
    assert_int_equal(used_idx(f), 1);
    /* A state saved now records it; it loads as such. */
    struct virtio_blk_state s;
    virtio_blk_state_get(f->dev, &s);
    assert_int_equal(s.transport.queue[0].broken, 1);
    /* Reset recovers. */
    drv_init(f);
    assert_int_equal(virtio_blk_status(f->dev) & VIRTIO_STATUS_DEVICE_NEEDS_RESET, 0);
    assert_int_equal(run_rw(f, VIRTIO_BLK_T_IN, 0, DATA_GPA, 512, NULL), VIRTIO_BLK_S_OK);
}

static void test_queue_ready_checks_rings(void **state)
{
    struct fx *f = *state;
    open_dev(f, false);
    uint32_t st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
    w32(f->dev, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    write_driver_features(f->dev, VIRTIO_F_VERSION_1);
    w32(f->dev, VIRTIO_MMIO_STATUS, st);
    /* Used ring in the MMIO hole. */
    setup_queue(f, 256, DESC_GPA, AVAIL_GPA, 0xd0000000ull);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_QUEUE_READY), 0);
    assert_true(r32(f->dev, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);

    /* After a reset, a size that is not a power of two is refused too. */
    w32(f->dev, VIRTIO_MMIO_STATUS, 0);
    w32(f->dev, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    write_driver_features(f->dev, VIRTIO_F_VERSION_1);
    w32(f->dev, VIRTIO_MMIO_STATUS, st);
    setup_queue(f, 200, DESC_GPA, AVAIL_GPA, USED_GPA);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_QUEUE_READY), 0);
    assert_true(r32(f->dev, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);

    /* A good queue; its layout registers are frozen while it is ready. */
    w32(f->dev, VIRTIO_MMIO_STATUS, 0);
    w32(f->dev, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    write_driver_features(f->dev, VIRTIO_F_VERSION_1);
    w32(f->dev, VIRTIO_MMIO_STATUS, st);
    setup_queue(f, 16, DESC_GPA, AVAIL_GPA, USED_GPA);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_QUEUE_READY), 1);
    w32(f->dev, VIRTIO_MMIO_QUEUE_NUM, 32);
    w32(f->dev, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_QUEUE_NUM), 16);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_QUEUE_DESC_LOW), DESC_GPA);
    /* Disabling it is allowed. */
    w32(f->dev, VIRTIO_MMIO_QUEUE_READY, 0);
    assert_int_equal(r32(f->dev, VIRTIO_MMIO_QUEUE_READY), 0);
}

static void test_small_queue(void **state)
{
    struct fx *f = *state;
    f->num = 4;
    ready_device(f, false);
    /* More requests than the queue size, in turns, across used-ring laps. */
    for (unsigned i = 0; i < 10; i++)
        assert_int_equal(run_rw(f, VIRTIO_BLK_T_IN, i, DATA_GPA, 512, NULL), VIRTIO_BLK_S_OK);
    assert_int_equal(used_idx(f), 10);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_create_errors),
        T(test_kvm_registration),
        T(test_cmdline),
        T(test_identity_registers),
        T(test_feature_negotiation),
        T(test_config_space),
        T(test_write_then_read_back),
        T(test_many_segments_and_indirect),
        T(test_flush),
        T(test_read_only),
        T(test_out_of_range),
        T(test_bad_requests),
        T(test_status_byte_placement),
        T(test_dirty_marking),
        T(test_no_interrupt_and_mmio_notify),
        T(test_quiesce_waits_for_in_flight),
        T(test_save_load_continue),
        T(test_load_refuses_bad_states),
        T(test_reset),
        T(test_malformed_ring_needs_reset),
        T(test_queue_ready_checks_rings),
        T(test_small_queue),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
