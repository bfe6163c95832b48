#include "vm.h"
#include "../migrate/migrate.h"
#include "dev_virtio_blk.h"
#include "guest_abi.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* KVM needs three pages for the real-mode TSS and one for the identity map
 * on Intel; they sit just below the BIOS area near 4 GiB, inside the MMIO
 * hole, never in RAM. */
#define KVM_IDENTITY_MAP_GPA 0xfffbc000ull
#define KVM_TSS_GPA 0xfffbd000ull

/* Legacy ports that a PC guest (Linux above all) probes. No device stands
 * behind them, so reads give all-ones ("nothing here") and writes are
 * ignored, like on real hardware without that device. Any other port with
 * no device is a guest error and ends the VM. */
static const struct {
    const char *name;
    uint16_t base, len;
} absent_ports[] = {
    {"i8042-data", 0x60, 1},
    {"i8042-cmd", 0x64, 1},
    {"rtc-cmos", 0x70, 2},
    {"post-code", 0x80, 1},
    {"dma-page", 0x81, 15},
    {"port-a", 0x92, 1},
    {"io-delay", 0xed, 1},
    {"fpu-error", 0xf0, 16},
    {"com4", 0x2e8, 8},
    {"com2", 0x2f8, 8},
    {"lpt2", 0x278, 8},
    {"lpt1", 0x378, 8},
    {"lpt0", 0x3bc, 4},
    {"vga", 0x3c0, 32},
    {"com3", 0x3e8, 8},
    {"fdc", 0x3f0, 6},
    {"pci-config", 0xcf8, 8},
};

static void absent_read(struct pio_device *dev, uint16_t offset, uint8_t *data, unsigned size)
{
    struct vm *vm = dev->opaque;
    (void)offset;
    atomic_fetch_add_explicit(&vm->absent_io, 1, memory_order_relaxed);
    memset(data, 0xff, size);
}

static void absent_write(struct pio_device *dev, uint16_t offset, const uint8_t *data,
                         unsigned size)
{
    struct vm *vm = dev->opaque;
    (void)offset;
    (void)data;
    (void)size;
    atomic_fetch_add_explicit(&vm->absent_io, 1, memory_order_relaxed);
}

static const struct pio_device_ops absent_ops = {.read = absent_read, .write = absent_write};

static void debug_exit_read(struct pio_device *dev, uint16_t offset, uint8_t *data, unsigned size)
{
    (void)dev;
    (void)offset;
    memset(data, 0, size);
}

static void debug_exit_write(struct pio_device *dev, uint16_t offset, const uint8_t *data,
                             unsigned size)
{
    (void)offset;
    (void)size;
    struct vm *vm = dev->opaque;
    vm_request_end(vm, data[0], "guest wrote %u to the debug-exit port", data[0]);
}

static const struct pio_device_ops debug_exit_ops = {
    .read = debug_exit_read,
    .write = debug_exit_write,
};

const char *vm_state_name(enum vm_state s)
{
    switch (s) {
    case VM_STATE_CREATED: return "created";
    case VM_STATE_RUNNING: return "running";
    case VM_STATE_PAUSED: return "paused";
    case VM_STATE_ENDING: return "stopping";
    }
    return "unknown";
}

static int kvm_open_checked(struct vm *vm, struct tern_err *err)
{
    vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (vm->kvm_fd < 0)
        return tern_err_errno(err, errno,
                              "cannot open /dev/kvm (is KVM enabled and are you allowed to use it?)");
    int api = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
    if (api != KVM_API_VERSION)
        return tern_err_set(err, "/dev/kvm speaks API version %d, tern-vmm needs %d", api,
                            KVM_API_VERSION);
    static const struct {
        int cap;
        const char *name;
    } required[] = {
        {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
        {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
        {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
        {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
        {KVM_CAP_GET_TSC_KHZ, "KVM_CAP_GET_TSC_KHZ"},
        {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
    };
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, required[i].cap) <= 0)
            return tern_err_set(err, "this kernel's KVM lacks %s, which tern-vmm needs",
                                required[i].name);
    }
    return 0;
}

static struct kvm_cpuid2 *get_supported_cpuid(int kvm_fd, struct tern_err *err)
{
    for (unsigned n = 128; n <= 4096; n *= 2) {
        struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
        if (!c) {
            tern_err_set(err, "out of memory for CPUID table");
            return NULL;
        }
        c->nent = n;
        if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
            return c;
        int e = errno;
        free(c);
        if (e != E2BIG) {
            tern_err_errno(err, e, "KVM_GET_SUPPORTED_CPUID");
            return NULL;
        }
    }
    tern_err_set(err, "KVM_GET_SUPPORTED_CPUID: table too large");
    return NULL;
}

static int vm_setup_memory(struct vm *vm, uint64_t size, struct tern_err *err)
{
    if (guest_memory_create(&vm->mem, size, err) < 0)
        return -1;
    for (unsigned i = 0; i < vm->mem.nr_regions; i++) {
        const struct guest_memory_region *r = &vm->mem.regions[i];
        struct kvm_userspace_memory_region slot = {
            .slot = i,
            .guest_phys_addr = r->gpa,
            .memory_size = r->size,
            .userspace_addr = (uint64_t)(uintptr_t)(vm->mem.host_base + r->offset),
        };
        if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
            return tern_err_errno(err, errno, "registering guest RAM slot %u (0x%llx+0x%llx)", i,
                                  (unsigned long long)r->gpa, (unsigned long long)r->size);
    }
    return 0;
}

static int vm_setup_platform(struct vm *vm, struct tern_err *err)
{
    uint64_t idmap = KVM_IDENTITY_MAP_GPA;
    if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
        return tern_err_errno(err, errno, "KVM_SET_IDENTITY_MAP_ADDR");
    if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_GPA) < 0)
        return tern_err_errno(err, errno, "KVM_SET_TSS_ADDR");
    if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
        return tern_err_errno(err, errno, "creating the in-kernel irqchip (KVM_CREATE_IRQCHIP)");
    struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
    if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
        return tern_err_errno(err, errno, "creating the in-kernel PIT (KVM_CREATE_PIT2)");
    return 0;
}

static int vm_setup_devices(struct vm *vm, const struct run_options *o, struct tern_err *err)
{
    if (dev_serial_open(&vm->serial, &o->serial, vm->vm_fd, err) < 0)
        return -1;
    if (pio_bus_register(&vm->pio, &vm->serial.pio, err) < 0)
        return -1;
    dev_heartbeat_init(&vm->heartbeat);
    if (pio_bus_register(&vm->pio, &vm->heartbeat.pio, err) < 0)
        return -1;
    vm->debug_exit = (struct pio_device){
        .name = "debug-exit", .base = TERN_PORT_DEBUG_EXIT, .len = 1, .ops = &debug_exit_ops,
        .opaque = vm};
    if (pio_bus_register(&vm->pio, &vm->debug_exit, err) < 0)
        return -1;
    size_t n = sizeof(absent_ports) / sizeof(absent_ports[0]);
    vm->absent = calloc(n, sizeof(*vm->absent));
    if (!vm->absent)
        return tern_err_set(err, "out of memory");
    for (size_t i = 0; i < n; i++) {
        vm->absent[i] = (struct pio_device){
            .name = absent_ports[i].name, .base = absent_ports[i].base,
            .len = absent_ports[i].len, .ops = &absent_ops, .opaque = vm};
        if (pio_bus_register(&vm->pio, &vm->absent[i], err) < 0)
            return -1;
        vm->nr_absent++;
    }
    return 0;
}

/* Creates the virtio disks on the MMIO bus and appends their
 * virtio_mmio.device= parameters to the guest command line. */
static int vm_setup_disks(struct vm *vm, const struct run_options *o, char *cmdline,
                          size_t cap, struct tern_err *err)
{
    if (vmm_dirty_init(&vm->dirty, &vm->mem, err) < 0)
        return -1;
    for (unsigned i = 0; i < o->nr_disks; i++) {
        snprintf(vm->disk_paths[i], sizeof(vm->disk_paths[i]), "%s", o->disks[i].path);
        vm->disk_specs[i] = (struct disk_spec){.path = vm->disk_paths[i],
                                               .read_only = o->disks[i].read_only};
        struct virtio_blk_config cfg = {
            .path = vm->disk_paths[i],
            .read_only = o->disks[i].read_only,
            .mmio_base = VM_VIRTIO_MMIO_BASE + i * VM_VIRTIO_MMIO_SIZE,
            .gsi = VM_VIRTIO_FIRST_GSI + i,
            .index = i,
        };
        if (virtio_blk_create(&vm->disks[i], &cfg, &vm->mem, vm->vm_fd, &vm->dirty, err) < 0)
            return tern_err_prefix(err, "disk %u", i);
        vm->nr_disks++;
        /* The file locked is the file written (the path may have changed). */
        if (disk_lock_same_file(&vm->disk_locks[i], virtio_blk_image_fd(vm->disks[i]), err) < 0)
            return -1;
        if (mmio_bus_register(&vm->mmio, virtio_blk_mmio(vm->disks[i]), err) < 0)
            return -1;
        size_t len = strlen(cmdline);
        char param[128];
        if (virtio_blk_cmdline(vm->disks[i], param, sizeof(param)) < 0 ||
            len + 1 + strlen(param) >= cap)
            return tern_err_set(err, "kernel command line too long with the disk parameters");
        snprintf(cmdline + len, cap - len, "%s%s", len ? " " : "", param);
    }
    return 0;
}

/* Opens a lock for every disk and takes them (invariant 7), before
 * anything else is set up: a VM whose disk another process uses goes no
 * further. An incoming VM takes only the read locks now (the source holds
 * and uses the write locks until its commit). */
static int vm_lock_disks_at_create(struct vm *vm, const struct run_options *o,
                                   struct tern_err *err)
{
    for (unsigned i = 0; i < o->nr_disks; i++) {
        if (disk_lock_open(&vm->disk_locks[i], o->disks[i].path, !o->disks[i].read_only, err) < 0)
            return -1;
        vm->nr_disk_locks++;
    }
    unsigned which = o->incoming ? DISK_LOCK_READERS : DISK_LOCK_ALL;
    return disk_lock_take_set(vm->disk_locks, vm->nr_disk_locks, which, true, err);
}

int vm_lock_disks(struct vm *vm, bool find_holder, struct tern_err *err)
{
    if (disk_lock_take_set(vm->disk_locks, vm->nr_disk_locks, DISK_LOCK_WRITERS, find_holder,
                           err) < 0)
        return -1;
    atomic_store(&vm->disks_handed_over, false);
    return 0;
}

void vm_release_disks(struct vm *vm)
{
    atomic_store(&vm->disks_handed_over, true);
    for (unsigned i = 0; i < vm->nr_disk_locks; i++) {
        struct disk_lock *l = &vm->disk_locks[i];
        struct tern_err e;
        if (!l->write || disk_lock_release(l, &e) == 0)
            continue;
        fprintf(stderr, "tern-vmm: %s; closing it instead\n", e.msg);
        disk_lock_close(l);
    }
}

int vm_create(struct vm *vm, const struct run_options *o, struct tern_err *err)
{
    memset(vm, 0, sizeof(*vm));
    vm->kvm_fd = vm->vm_fd = vm->end_eventfd = -1;
    vm->mem.memfd = -1;
    vm->serial.out_fd = vm->serial.in_fd = vm->serial.listen_fd = vm->serial.client_fd = -1;
    pthread_mutex_init(&vm->lock, NULL);
    pthread_cond_init(&vm->cond, NULL);
    vm->state = VM_STATE_CREATED;
    vm->nr_vcpus = o->vcpus;

    struct kvm_cpuid2 *supported = NULL;
    if (vm_lock_disks_at_create(vm, o, err) < 0)
        goto fail;
    if (kvm_open_checked(vm, err) < 0)
        goto fail;
    vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
    if (vm->vm_fd < 0) {
        tern_err_errno(err, errno, "KVM_CREATE_VM");
        goto fail;
    }
    vm->end_eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (vm->end_eventfd < 0) {
        tern_err_errno(err, errno, "eventfd");
        goto fail;
    }
    if (vm_setup_memory(vm, o->mem_bytes, err) < 0 || vm_setup_platform(vm, err) < 0)
        goto fail;
    vm->restoring = o->restore != NULL || o->incoming; /* state arrives later */
    static char cmdline[BOOT_MAX_CMDLINE + 1];
    snprintf(cmdline, sizeof(cmdline), "%s", o->cmdline ? o->cmdline : "");
    if (vm_setup_disks(vm, o, cmdline, sizeof(cmdline), err) < 0)
        goto fail;
    if (!vm->restoring &&
        boot_load(&vm->mem, o->kernel, o->initrd, cmdline, o->vcpus, &vm->boot, err) < 0)
        goto fail;
    if (vm_setup_devices(vm, o, err) < 0)
        goto fail;
    vm->kernel_mode_emulated = access("/sys/module/kvm_pvm", F_OK) == 0;
    supported = get_supported_cpuid(vm->kvm_fd, err);
    if (!supported)
        goto fail;
    vm->vcpus = calloc(o->vcpus, sizeof(*vm->vcpus));
    if (!vm->vcpus) {
        tern_err_set(err, "out of memory for vCPUs");
        goto fail;
    }
    for (unsigned i = 0; i < o->vcpus; i++) {
        vm->vcpus[i].fd = -1;
        if (vcpu_create(vm, &vm->vcpus[i], i, supported, err) < 0)
            goto fail;
    }
    free(supported);
    return 0;
fail:
    free(supported);
    vm_destroy(vm);
    return -1;
}

static void kick_signal_handler(int sig)
{
    (void)sig; /* only there to interrupt KVM_RUN */
}

int vm_start(struct vm *vm, struct tern_err *err)
{
    struct sigaction sa = {.sa_handler = kick_signal_handler};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) < 0)
        return tern_err_errno(err, errno, "installing the vCPU kick signal handler");
    clock_gettime(CLOCK_MONOTONIC, &vm->started);

    /* vCPU threads take the kick signal and nothing else: termination
     * signals go to the main loop's signalfd. */
    sigset_t all, old;
    sigfillset(&all);
    sigdelset(&all, SIGUSR1);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    pthread_sigmask(SIG_SETMASK, &all, &old);

    for (unsigned i = 0; i < vm->nr_disks; i++) {
        if (virtio_blk_start(vm->disks[i], err) < 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            return tern_err_prefix(err, "starting disk %u", i);
        }
    }
    pthread_mutex_lock(&vm->lock);
    vm->state = VM_STATE_RUNNING;
    pthread_mutex_unlock(&vm->lock);
    int rc = 0;
    for (unsigned i = 0; i < vm->nr_vcpus; i++) {
        struct vcpu *v = &vm->vcpus[i];
        int e = pthread_create(&v->thread, NULL, vcpu_thread_main, v);
        if (e) {
            tern_err_errno(err, e, "starting the thread of vCPU %u", i);
            vm_request_end(vm, VMM_EXIT_INTERNAL, "could not start vCPU %u", i);
            rc = -1;
            break;
        }
        v->thread_started = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

static bool all_vcpus_stopped(struct vm *vm)
{
    for (unsigned i = 0; i < vm->nr_vcpus; i++) {
        struct vcpu *v = &vm->vcpus[i];
        if (v->thread_started && !v->parked && !v->exited)
            return false;
    }
    return true;
}

int vm_pause(struct vm *vm, unsigned hold, struct tern_err *err)
{
    pthread_mutex_lock(&vm->lock);
    if (vm->state != VM_STATE_RUNNING && vm->state != VM_STATE_PAUSED) {
        enum vm_state s = vm->state;
        pthread_mutex_unlock(&vm->lock);
        return tern_err_set(err, "cannot pause a VM that is %s", vm_state_name(s));
    }
    vm->holds |= hold;
    vm->state = VM_STATE_PAUSED;
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        vcpu_kick(&vm->vcpus[i]);
    while (!all_vcpus_stopped(vm))
        pthread_cond_wait(&vm->cond, &vm->lock);
    pthread_mutex_unlock(&vm->lock);
    return 0;
}

int vm_resume(struct vm *vm, unsigned hold, struct tern_err *err)
{
    pthread_mutex_lock(&vm->lock);
    if (vm->state != VM_STATE_PAUSED && vm->state != VM_STATE_RUNNING) {
        enum vm_state s = vm->state;
        pthread_mutex_unlock(&vm->lock);
        return tern_err_set(err, "cannot resume a VM that is %s", vm_state_name(s));
    }
    vm->holds &= ~hold;
    unsigned left = vm->holds;
    if (!left) {
        vm->state = VM_STATE_RUNNING;
        pthread_cond_broadcast(&vm->cond);
    }
    pthread_mutex_unlock(&vm->lock);
    return (int)left;
}

const char *vm_hold_name(unsigned hold)
{
    switch (hold) {
    case VM_HOLD_OPERATOR: return "operator";
    case VM_HOLD_MIGRATION: return "migration";
    case VM_HOLD_THROTTLE: return "auto-converge";
    case VM_HOLD_SAVE: return "snapshot";
    default: return NULL;
    }
}

const char *vm_hold_names(unsigned holds, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = 0;
    for (unsigned bit = VM_HOLD_OPERATOR; bit <= VM_HOLD_SAVE; bit <<= 1) {
        if (!(holds & bit))
            continue;
        int n = snprintf(buf + off, len - off, "%s%s", off ? ", " : "", vm_hold_name(bit));
        if (n < 0 || (size_t)n >= len - off)
            break;
        off += (size_t)n;
    }
    return buf;
}

void vm_request_end(struct vm *vm, int status, const char *fmt, ...)
{
    pthread_mutex_lock(&vm->lock);
    if (vm->state != VM_STATE_ENDING) {
        vm->state = VM_STATE_ENDING;
        vm->exit_status = status;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(vm->exit_reason, sizeof(vm->exit_reason), fmt, ap);
        va_end(ap);
        for (unsigned i = 0; i < vm->nr_vcpus; i++)
            vcpu_kick(&vm->vcpus[i]);
        pthread_cond_broadcast(&vm->cond);
        uint64_t one = 1;
        if (write(vm->end_eventfd, &one, sizeof(one)) < 0) {
            /* The counter cannot overflow with one write; nothing to do. */
        }
    }
    pthread_mutex_unlock(&vm->lock);
}

int vm_join(struct vm *vm)
{
    for (unsigned i = 0; i < vm->nr_vcpus; i++) {
        struct vcpu *v = &vm->vcpus[i];
        if (v->thread_started) {
            pthread_join(v->thread, NULL);
            v->thread_started = false;
        }
    }
    return vm->exit_status;
}

void vm_destroy(struct vm *vm)
{
    /* The migration thread uses the VM: it goes first. */
    mig_source_destroy(vm->migration);
    vm->migration = NULL;
    if (vm->vcpus) {
        for (unsigned i = 0; i < vm->nr_vcpus; i++)
            vcpu_destroy(&vm->vcpus[i]);
        free(vm->vcpus);
        vm->vcpus = NULL;
    }
    /* Disks first: their threads write into guest RAM. */
    for (unsigned i = 0; i < vm->nr_disks; i++)
        virtio_blk_destroy(vm->disks[i]);
    vm->nr_disks = 0;
    /* Only now that nothing writes the images any more. */
    for (unsigned i = 0; i < vm->nr_disk_locks; i++)
        disk_lock_close(&vm->disk_locks[i]);
    vm->nr_disk_locks = 0;
    vmm_dirty_free(&vm->dirty);
    if (vm->serial.pio.ops)
        dev_serial_close(&vm->serial);
    if (vm->heartbeat.pio.ops)
        dev_heartbeat_destroy(&vm->heartbeat);
    free(vm->absent);
    vm->absent = NULL;
    free(vm->saved_msrs);
    vm->saved_msrs = NULL;
    guest_memory_destroy(&vm->mem);
    if (vm->end_eventfd >= 0)
        close(vm->end_eventfd);
    if (vm->vm_fd >= 0)
        close(vm->vm_fd);
    if (vm->kvm_fd >= 0)
        close(vm->kvm_fd);
    vm->end_eventfd = vm->vm_fd = vm->kvm_fd = -1;
}

double vm_uptime(struct vm *vm)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - vm->started.tv_sec) +
           (double)(now.tv_nsec - vm->started.tv_nsec) / 1e9;
}

int vm_set_slot_flags(struct vm *vm, uint32_t flags, struct tern_err *err)
{
    for (unsigned i = 0; i < vm->mem.nr_regions; i++) {
        const struct guest_memory_region *r = &vm->mem.regions[i];
        struct kvm_userspace_memory_region slot = {
            .slot = i,
            .flags = flags,
            .guest_phys_addr = r->gpa,
            .memory_size = r->size,
            .userspace_addr = (uint64_t)(uintptr_t)(vm->mem.host_base + r->offset),
        };
        if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
            return tern_err_errno(err, errno, "setting the flags of guest RAM slot %u to 0x%x", i,
                                  flags);
    }
    return 0;
}
