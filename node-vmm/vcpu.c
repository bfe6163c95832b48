/* vCPU creation, the PVH entry state, and the vCPU thread's run loop. */
#include "vm.h"
#include "cpuid.h"
#include "guest_abi.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define LAPIC_LVT_LINT0 0x350
#define LAPIC_LVT_LINT1 0x360
#define LAPIC_DELIVERY_NMI 4u
#define LAPIC_DELIVERY_EXTINT 7u

static int vcpu_set_cpuid(struct vm *vm, struct vcpu *v, const struct kvm_cpuid2 *supported,
                          struct tern_err *err)
{
    unsigned max = supported->nent + 8;
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + max * sizeof(c->entries[0]));
    if (!c)
        return tern_err_set(err, "out of memory for CPUID");
    struct cpuid_config cfg = {
        .vcpu_index = v->index,
        .nr_vcpus = vm->nr_vcpus,
        .tsc_khz = vm->tsc_khz,
        .tsc_deadline = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0,
        .kernel_mode_emulated = vm->kernel_mode_emulated,
    };
    unsigned n = 0;
    if (cpuid_filter(supported->entries, supported->nent, c->entries, max, &n, &cfg, err) < 0) {
        free(c);
        return tern_err_prefix(err, "vCPU %u CPUID", v->index);
    }
    c->nent = n;
    int rc = ioctl(v->fd, KVM_SET_CPUID2, c);
    int e = errno;
    free(c);
    if (rc < 0)
        return tern_err_errno(err, e, "KVM_SET_CPUID2 on vCPU %u", v->index);
    return 0;
}

/* Routes LINT0 to ExtINT and LINT1 to NMI, as PC firmware leaves them, so
 * the PIC's output reaches the BSP in virtual-wire mode. */
static int vcpu_set_lapic_lints(struct vcpu *v, struct tern_err *err)
{
    struct kvm_lapic_state lapic;
    if (ioctl(v->fd, KVM_GET_LAPIC, &lapic) < 0)
        return tern_err_errno(err, errno, "KVM_GET_LAPIC on vCPU %u", v->index);
    uint32_t lint0, lint1;
    memcpy(&lint0, &lapic.regs[LAPIC_LVT_LINT0], 4);
    memcpy(&lint1, &lapic.regs[LAPIC_LVT_LINT1], 4);
    lint0 = (lint0 & ~0x700u) | (LAPIC_DELIVERY_EXTINT << 8);
    lint1 = (lint1 & ~0x700u) | (LAPIC_DELIVERY_NMI << 8);
    memcpy(&lapic.regs[LAPIC_LVT_LINT0], &lint0, 4);
    memcpy(&lapic.regs[LAPIC_LVT_LINT1], &lint1, 4);
    if (ioctl(v->fd, KVM_SET_LAPIC, &lapic) < 0)
        return tern_err_errno(err, errno, "KVM_SET_LAPIC on vCPU %u", v->index);
    return 0;
}

static int vcpu_set_fpu(struct vcpu *v, struct tern_err *err)
{
    struct kvm_fpu fpu = {.fcw = 0x37f, .mxcsr = 0x1f80};
    if (ioctl(v->fd, KVM_SET_FPU, &fpu) < 0)
        return tern_err_errno(err, errno, "KVM_SET_FPU on vCPU %u", v->index);
    return 0;
}

static void flat_segment(struct kvm_segment *s, uint16_t selector, uint8_t type)
{
    *s = (struct kvm_segment){
        .base = 0, .limit = 0xffffffff, .selector = selector, .type = type,
        .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1};
}

/* The PVH entry state: 32-bit protected mode, paging off, flat segments,
 * EBX = start info. */
static int vcpu_set_pvh_entry(struct vm *vm, struct vcpu *v, struct tern_err *err)
{
    struct kvm_sregs sregs;
    if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
        return tern_err_errno(err, errno, "KVM_GET_SREGS");
    flat_segment(&sregs.cs, 0x10, 0xb);
    flat_segment(&sregs.ds, 0x18, 0x3);
    sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
    sregs.tr = (struct kvm_segment){
        .base = 0, .limit = 0x67, .selector = 0x20, .type = 0xb, .present = 1, .s = 0};
    sregs.cr0 = 0x11; /* PE | ET */
    sregs.cr4 = 0;
    sregs.efer = 0;
    if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0)
        return tern_err_errno(err, errno, "KVM_SET_SREGS");
    struct kvm_regs regs = {
        .rflags = 0x2,
        .rip = vm->boot.entry_gpa,
        .rbx = vm->boot.start_info_gpa,
    };
    if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0)
        return tern_err_errno(err, errno, "KVM_SET_REGS");
    return 0;
}

int vcpu_create(struct vm *vm, struct vcpu *v, unsigned index, const struct kvm_cpuid2 *supported,
                struct tern_err *err)
{
    v->vm = vm;
    v->index = index;
    v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
    if (v->fd < 0)
        return tern_err_errno(err, errno, "KVM_CREATE_VCPU %u", index);
    int run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size < (int)sizeof(struct kvm_run))
        return tern_err_errno(err, errno, "KVM_GET_VCPU_MMAP_SIZE");
    v->run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
    if (v->run == MAP_FAILED) {
        v->run = NULL;
        return tern_err_errno(err, errno, "mapping kvm_run of vCPU %u", index);
    }
    v->run_size = (size_t)run_size;
    if (index == 0) {
        int khz = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
        if (khz <= 0)
            return tern_err_errno(err, errno, "KVM_GET_TSC_KHZ");
        vm->tsc_khz = (uint32_t)khz;
    }
    if (vcpu_set_cpuid(vm, v, supported, err) < 0 || vcpu_set_lapic_lints(v, err) < 0 ||
        vcpu_set_fpu(v, err) < 0)
        return -1;
    /* Application processors stay in KVM's wait-for-SIPI state (the in-kernel
     * LAPIC puts them there); the guest starts them with INIT/SIPI. */
    if (index == 0 && !vm->restoring && vcpu_set_pvh_entry(vm, v, err) < 0)
        return tern_err_prefix(err, "setting the PVH entry state");
    return 0;
}

void vcpu_destroy(struct vcpu *v)
{
    if (v->run)
        munmap(v->run, v->run_size);
    if (v->fd >= 0)
        close(v->fd);
    v->run = NULL;
    v->fd = -1;
}

void vcpu_kick(struct vcpu *v)
{
    if (!v->run)
        return;
    v->run->immediate_exit = 1;
    if (v->thread_started)
        pthread_kill(v->thread, SIGUSR1);
}

static void dump_segment(const char *name, const struct kvm_segment *s)
{
    fprintf(stderr, "  %-3s sel=%04x base=%016llx limit=%08x type=%x p=%u dpl=%u db=%u s=%u l=%u g=%u\n",
            name, s->selector, (unsigned long long)s->base, s->limit, s->type, s->present, s->dpl,
            s->db, s->s, s->l, s->g);
}

void vcpu_dump_registers(struct vcpu *v)
{
    struct kvm_regs r;
    struct kvm_sregs s;
    fprintf(stderr, "tern-vmm: vCPU %u registers:\n", v->index);
    if (ioctl(v->fd, KVM_GET_REGS, &r) < 0 || ioctl(v->fd, KVM_GET_SREGS, &s) < 0) {
        fprintf(stderr, "  (cannot read registers: %s)\n", strerror(errno));
        return;
    }
    fprintf(stderr,
            "  rip=%016llx rsp=%016llx rflags=%016llx\n"
            "  rax=%016llx rbx=%016llx rcx=%016llx rdx=%016llx\n"
            "  rsi=%016llx rdi=%016llx rbp=%016llx\n"
            "  r8 =%016llx r9 =%016llx r10=%016llx r11=%016llx\n"
            "  r12=%016llx r13=%016llx r14=%016llx r15=%016llx\n"
            "  cr0=%016llx cr2=%016llx cr3=%016llx cr4=%016llx efer=%016llx\n",
            r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.r8, r.r9,
            r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, s.cr0, s.cr2, s.cr3, s.cr4, s.efer);
    dump_segment("cs", &s.cs);
    dump_segment("ss", &s.ss);
    dump_segment("ds", &s.ds);
    dump_segment("tr", &s.tr);
    fprintf(stderr, "  gdt base=%016llx limit=%04x  idt base=%016llx limit=%04x\n",
            (unsigned long long)s.gdt.base, s.gdt.limit, (unsigned long long)s.idt.base,
            s.idt.limit);
}

/* Ends the VM because of something the guest did that tern-vmm cannot
 * continue from. */
static void vcpu_fatal(struct vcpu *v, const char *what)
{
    fprintf(stderr, "tern-vmm: vCPU %u: %s\n", v->index, what);
    vcpu_dump_registers(v);
    vm_request_end(v->vm, VMM_EXIT_GUEST_CRASH, "vCPU %u: %s", v->index, what);
}

static void vcpu_handle_io(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    unsigned size = run->io.size;
    bool is_write = run->io.direction == KVM_EXIT_IO_OUT;
    struct pio_device *dev = pio_bus_find(&v->vm->pio, run->io.port);
    if (!dev || (uint32_t)run->io.port + size > (uint32_t)dev->base + dev->len) {
        char what[128];
        snprintf(what, sizeof(what), "unhandled port I/O: %s of %u byte(s) at port 0x%x",
                 is_write ? "write" : "read", size, run->io.port);
        vcpu_fatal(v, what);
        return;
    }
    atomic_fetch_add_explicit(&v->stats.io, 1, memory_order_relaxed);
    uint16_t offset = (uint16_t)(run->io.port - dev->base);
    for (uint32_t i = 0; i < run->io.count; i++, data += size) {
        if (is_write)
            dev->ops->write(dev, offset, data, size);
        else
            dev->ops->read(dev, offset, data, size);
    }
}

static void vcpu_handle_mmio(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    atomic_fetch_add_explicit(&v->stats.mmio, 1, memory_order_relaxed);
    uint64_t gpa = run->mmio.phys_addr;
    unsigned len = run->mmio.len;
    struct mmio_device *dev = mmio_bus_find(&v->vm->mmio, gpa);
    if (!dev || len == 0 || len > 8 || gpa + len - dev->base > dev->len) {
        char what[128];
        snprintf(what, sizeof(what), "unhandled MMIO: %s of %u byte(s) at 0x%llx",
                 run->mmio.is_write ? "write" : "read", len, (unsigned long long)gpa);
        vcpu_fatal(v, what);
        return;
    }
    if (run->mmio.is_write)
        dev->ops->write(dev, gpa - dev->base, run->mmio.data, len);
    else
        dev->ops->read(dev, gpa - dev->base, run->mmio.data, len);
}

/* Handles one KVM_RUN exit. */
static void vcpu_handle_exit(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    char what[256];
    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        vcpu_handle_io(v);
        return;
    case KVM_EXIT_MMIO:
        vcpu_handle_mmio(v);
        return;
    case KVM_EXIT_INTR:
        atomic_fetch_add_explicit(&v->stats.intr, 1, memory_order_relaxed);
        return;
    case KVM_EXIT_SHUTDOWN:
        vcpu_fatal(v, "guest triple fault (KVM_EXIT_SHUTDOWN)");
        return;
    case KVM_EXIT_INTERNAL_ERROR:
        snprintf(what, sizeof(what), "KVM internal error, suberror %u (ndata %u, data0 0x%llx)",
                 run->internal.suberror, run->internal.ndata,
                 run->internal.ndata ? (unsigned long long)run->internal.data[0] : 0ull);
        vcpu_fatal(v, what);
        return;
    case KVM_EXIT_FAIL_ENTRY:
        snprintf(what, sizeof(what), "VM entry failed, hardware reason 0x%llx",
                 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        vcpu_fatal(v, what);
        return;
    case KVM_EXIT_SYSTEM_EVENT:
        if (run->system_event.type == KVM_SYSTEM_EVENT_RESET)
            vm_request_end(v->vm, VMM_EXIT_OK, "guest asked for a reset; tern-vmm stops the VM");
        else
            vm_request_end(v->vm, VMM_EXIT_OK, "guest powered off (system event %u)",
                           run->system_event.type);
        return;
    case KVM_EXIT_HLT:
        /* Only without an in-kernel LAPIC; treat as a power-off. */
        vm_request_end(v->vm, VMM_EXIT_OK, "guest halted");
        return;
    default:
        snprintf(what, sizeof(what), "unexpected KVM exit reason %u", run->exit_reason);
        vcpu_fatal(v, what);
        return;
    }
}

void *vcpu_thread_main(void *arg)
{
    struct vcpu *v = arg;
    struct vm *vm = v->vm;
    char name[16];
    snprintf(name, sizeof(name), "vcpu%u", v->index);
    pthread_setname_np(pthread_self(), name);
    for (;;) {
        pthread_mutex_lock(&vm->lock);
        v->run->immediate_exit = 0;
        while (vm->state == VM_STATE_PAUSED) {
            v->parked = true;
            pthread_cond_broadcast(&vm->cond);
            pthread_cond_wait(&vm->cond, &vm->lock);
        }
        v->parked = false;
        if (vm->state == VM_STATE_ENDING) {
            v->exited = true;
            pthread_cond_broadcast(&vm->cond);
            pthread_mutex_unlock(&vm->lock);
            return NULL;
        }
        pthread_mutex_unlock(&vm->lock);

        int rc = ioctl(v->fd, KVM_RUN, 0);
        atomic_fetch_add_explicit(&v->stats.exits, 1, memory_order_relaxed);
        if (rc < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                atomic_fetch_add_explicit(&v->stats.intr, 1, memory_order_relaxed);
                continue;
            }
            char what[128];
            snprintf(what, sizeof(what), "KVM_RUN failed: %s", strerror(errno));
            vcpu_fatal(v, what);
            continue;
        }
        vcpu_handle_exit(v);
    }
}
