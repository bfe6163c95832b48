/* One virtual machine: KVM VM and vCPU file descriptors, guest RAM, the
 * port I/O bus with its devices, and the run state shared by the vCPU
 * threads and the main (event loop) thread. */
#ifndef TERN_NODE_VMM_VM_H
#define TERN_NODE_VMM_VM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <limits.h>

#include "../common/err.h"
#include "../dirtylog/vmm_dirty.h"
#include "boot.h"
#include "dev_heartbeat.h"
#include "dev_serial.h"
#include "disk_lock.h"
#include "guest_memory.h"
#include "mmio.h"
#include "options.h"
#include "pio.h"

struct virtio_blk;
struct mig_source;

/* virtio-mmio disks: one 4 KiB window each from here, interrupt GSI 5 + i. */
#define VM_VIRTIO_MMIO_BASE 0xd0000000ull
#define VM_VIRTIO_MMIO_SIZE 0x1000ull
#define VM_VIRTIO_FIRST_GSI 5u

/* tern-vmm exit statuses. A status the guest writes to the debug-exit port
 * is passed through unchanged; these are the VMM's own. */
#define VMM_EXIT_OK 0
#define VMM_EXIT_USAGE 64       /* bad command line */
#define VMM_EXIT_SETUP 65       /* could not set the VM up (file, KVM, kernel) */
#define VMM_EXIT_INTERNAL 70    /* VMM failure while running */
#define VMM_EXIT_GUEST_CRASH 71 /* triple fault, KVM internal error, unhandled I/O */
#define VMM_EXIT_MIGRATION 75   /* --incoming: the migration failed; the guest never ran here */

enum vm_state {
    VM_STATE_CREATED = 0,
    VM_STATE_RUNNING,
    VM_STATE_PAUSED,
    VM_STATE_ENDING,
};

struct vm;

struct vcpu_stats {
    _Atomic uint64_t exits;
    _Atomic uint64_t io;
    _Atomic uint64_t mmio;
    _Atomic uint64_t intr;   /* KVM_RUN interrupted by a kick or signal */
};

struct vcpu {
    struct vm *vm;
    unsigned index;
    int fd;
    struct kvm_run *run;
    size_t run_size;
    pthread_t thread;
    bool thread_started;
    bool parked; /* protected by vm->lock */
    bool exited; /* protected by vm->lock */
    struct vcpu_stats stats;
};

struct vm {
    int kvm_fd;
    int vm_fd;
    struct guest_memory mem;
    unsigned nr_vcpus;
    struct vcpu *vcpus;
    uint32_t tsc_khz;
    bool kernel_mode_emulated; /* kvm_pvm backend: see cpuid.h */
    struct boot_info boot;

    struct pio_bus pio;
    struct mmio_bus mmio;
    struct vmm_dirty dirty; /* pages the VMM's devices wrote */
    struct dev_serial serial;
    struct dev_heartbeat heartbeat;
    struct pio_device debug_exit;
    struct pio_device *absent; /* legacy ports that read as all-ones */
    unsigned nr_absent;
    _Atomic uint64_t absent_io; /* accesses to legacy ports with no device */
    unsigned nr_disks;
    struct disk_spec disk_specs[VMM_MAX_DISKS]; /* paths point into disk_paths */
    char disk_paths[VMM_MAX_DISKS][PATH_MAX];
    struct virtio_blk *disks[VMM_MAX_DISKS];
    /* Disk image locks (disk_lock.h; invariant 7), disk_locks[i] for disk
     * i: vm_create takes them all, except that an incoming VM takes its
     * write locks only at commit (vm_lock_disks); a migration's source
     * releases them at its commit (vm_release_disks). */
    struct disk_lock disk_locks[VMM_MAX_DISKS];
    unsigned nr_disk_locks;
    atomic_bool disks_handed_over; /* released at a migration's commit: never write again */
    bool restoring; /* created for --restore: no kernel loaded, state comes later */
    struct mig_source *migration; /* the last live migration from here (migrate/) */
    uint32_t *saved_msrs; /* MSRs that travel with vCPU state, probed once (vcpu_state.c) */
    uint32_t nr_saved_msrs;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    enum vm_state state;
    unsigned holds; /* enum vm_hold bits: paused while any is set */
    int exit_status;
    char exit_reason[512];
    int end_eventfd; /* readable once the VM is ending */
    struct timespec started;
};

/* Locks the disk images first (read-write disks for writing, read-only
 * ones for reading; with opts->incoming only the read-only ones: the
 * source still writes), refusing with disk_lock_take's message if another
 * process holds one; then opens KVM, creates the VM, its RAM, irqchip,
 * PIT, devices and vCPUs, and loads the kernel (unless opts->restore: then
 * RAM and state come from the snapshot). Nothing runs yet. On failure
 * everything is released. */
int vm_create(struct vm *vm, const struct run_options *opts, struct tern_err *err);

/* The write locks vm_create left untaken (an incoming VM's read-write
 * disks): one non-blocking attempt, all or nothing. A disk still held by
 * another process is TERN_ERR_CONFLICT: the caller retries (the source
 * releases at its commit). find_holder as in disk_lock_take. Also clears
 * disks_handed_over. */
int vm_lock_disks(struct vm *vm, bool find_holder, struct tern_err *err);

/* A migration's source, at its commit: lets go of the write locks of the
 * read-write disks so that the destination can take them, and marks the
 * VM handed over. Call only with the guest paused for good and the disks
 * quiesced: from here on nothing may write the images. A lock that will
 * not release is closed (which ends it). */
void vm_release_disks(struct vm *vm);

/* Starts the device threads, then one thread per vCPU. */
int vm_start(struct vm *vm, struct tern_err *err);

/* Why the vCPUs are held. The guest runs only while no hold is in place,
 * and each holder releases only its own: so an operator's pause outlasts
 * an auto-converge period or a failed migration, and an operator's resume
 * cannot start a guest that a migration holds for its handover (which
 * would run it on two hosts). */
enum vm_hold {
    VM_HOLD_OPERATOR = 1u << 0,  /* the control socket's pause */
    VM_HOLD_MIGRATION = 1u << 1, /* stop-and-copy and the handover */
    VM_HOLD_THROTTLE = 1u << 2,  /* auto-converge */
    VM_HOLD_SAVE = 1u << 3,      /* writing a snapshot */
};

/* Places `hold` and returns once every vCPU is parked outside KVM_RUN. */
int vm_pause(struct vm *vm, unsigned hold, struct tern_err *err);
/* Releases `hold`; the vCPUs run again once no hold is left. Returns the
 * holds still in place (0: running), or -1 if the VM is not running or
 * paused. */
int vm_resume(struct vm *vm, unsigned hold, struct tern_err *err);
/* "operator", "migration", "auto-converge" or "snapshot" for one hold
 * bit, NULL for anything else. */
const char *vm_hold_name(unsigned hold);
/* vm_hold_name of each bit of `holds`, joined by ", ". */
const char *vm_hold_names(unsigned holds, char *buf, size_t len);

/* Asks the VM to end with `status`; the first request wins. Safe from any
 * thread, including a vCPU's own. */
void vm_request_end(struct vm *vm, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Joins the vCPU threads (after vm_request_end) and returns the status. */
int vm_join(struct vm *vm);

void vm_destroy(struct vm *vm);

const char *vm_state_name(enum vm_state s);

/* Seconds since vm_start. */
double vm_uptime(struct vm *vm);

/* Re-registers every RAM slot (slot i is mem.regions[i]) with `flags`
 * (KVM_MEM_LOG_DIRTY_PAGES or 0), running or not: dirtylog.c's switch. */
int vm_set_slot_flags(struct vm *vm, uint32_t flags, struct tern_err *err);

/* --- vcpu.c --- */

/* Creates vCPU `index`: fd, kvm_run mapping, CPUID, LAPIC, FPU; the BSP also
 * gets the PVH entry state. */
int vcpu_create(struct vm *vm, struct vcpu *v, unsigned index,
                const struct kvm_cpuid2 *supported, struct tern_err *err);
void vcpu_destroy(struct vcpu *v);
void *vcpu_thread_main(void *arg);
/* Makes the vCPU leave KVM_RUN soon. Caller holds vm->lock. */
void vcpu_kick(struct vcpu *v);
/* Writes registers and segment state to stderr, for crash reports. */
void vcpu_dump_registers(struct vcpu *v);

#endif
