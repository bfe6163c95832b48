/* vCPU, platform and device state on real KVM: run the test guest, pause,
 * save every state record, load them into a second VM built with the same
 * options (guest RAM copied across), save that one again and compare the
 * encodings, then run the copy and check the guest goes on where it was
 * (heartbeats keep their sequence, self-checks keep passing). Also the
 * errors a load gives on real KVM, and a guest paused in the middle of
 * port I/O. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "node-vmm/dev_heartbeat.h"
#include "node-vmm/platform_state.h"
#include "node-vmm/uart8250.h"
#include "node-vmm/vcpu_state.h"
#include "node-vmm/vm.h"
#include "proto/record.h"
#include "tests/support/proc.h"
#include "tests/support/kvm.h"

#define GUEST_CMDLINE "fill=8 dirty=5 hb=1000 check=200 status=250"
#define LAPIC_TMCCT 0x390

struct fixture {
    char *dir;
    char serial_a[512], serial_b[512];
    struct vm a, b;
    bool a_made, b_made;
    struct rec_buf saved, again;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    f->dir = test_make_tmpdir("kvmstate");
    if (!f->dir)
        return -1;
    snprintf(f->serial_a, sizeof(f->serial_a), "%s/serial-a.log", f->dir);
    snprintf(f->serial_b, sizeof(f->serial_b), "%s/serial-b.log", f->dir);
    rec_buf_init(&f->saved);
    rec_buf_init(&f->again);
    *state = f;
    return 0;
}

static void end_vm(struct vm *vm, bool *made)
{
    if (!*made)
        return;
    vm_request_end(vm, 0, "test over");
    vm_join(vm);
    vm_destroy(vm);
    *made = false;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    end_vm(&f->a, &f->a_made);
    end_vm(&f->b, &f->b_made);
    rec_buf_free(&f->saved);
    rec_buf_free(&f->again);
    test_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void show_serial(const char *path)
{
    char *t = test_read_text(path);
    print_message("--- %s ---\n%s\n", path, t);
    free(t);
}

static void make_vm(struct vm *vm, bool *made, const char *kernel, const char *cmdline,
                    unsigned vcpus, const char *serial)
{
    struct run_options o = {
        .kernel = kernel,
        .cmdline = cmdline,
        .mem_bytes = 64ull << 20,
        .vcpus = vcpus,
        .serial = {.kind = SERIAL_FILE, .path = serial},
    };
    struct tern_err err;
    if (vm_create(vm, &o, &err) < 0)
        fail_msg("vm_create: %s", err.msg);
    *made = true;
}

static void copy_ram(struct vm *to, const struct vm *from)
{
    assert_int_equal(to->mem.size, from->mem.size);
    memcpy(to->mem.host_base, from->mem.host_base, from->mem.size);
}

/* The order a snapshot should hold them in (docs/snapshot-state.md):
 * vCPUs, devices, then the platform with the clock last. */
static void save_all(struct vm *vm, struct rec_buf *b)
{
    struct tern_err err;
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        if (vcpu_state_save(&vm->vcpus[i], b, &err) < 0)
            fail_msg("vcpu_state_save: %s", err.msg);
    pthread_mutex_lock(&vm->serial.lock);
    uart8250_state_save(&vm->serial.uart, b);
    pthread_mutex_unlock(&vm->serial.lock);
    dev_heartbeat_state_save(&vm->heartbeat, b);
    if (platform_state_save(vm, b, &err) < 0)
        fail_msg("platform_state_save: %s", err.msg);
    if (rec_buf_check(b, &err) < 0)
        fail_msg("%s", err.msg);
}

static int load_all(struct vm *vm, const struct rec_buf *b, struct tern_err *err)
{
    struct rec_reader all, payload;
    struct rec_header h;
    rec_reader_init(&all, b->data, b->len);
    int rc;
    unsigned vcpus = 0;
    while ((rc = rec_next(&all, &h, &payload, err)) == 1) {
        switch (h.type) {
        case VCPU_STATE_RECORD: {
            uint32_t index;
            if (vcpu_state_peek_index(&payload, &index, err) < 0)
                return -1;
            if (index >= vm->nr_vcpus)
                return tern_err_set(err, "state of vCPU %u for a VM with %u", index,
                                    vm->nr_vcpus);
            rc = vcpu_state_load(&vm->vcpus[index], &h, &payload, err);
            vcpus++;
            break;
        }
        case UART_STATE_RECORD:
            pthread_mutex_lock(&vm->serial.lock);
            rc = uart8250_state_load(&vm->serial.uart, &h, &payload, err);
            pthread_mutex_unlock(&vm->serial.lock);
            break;
        case HEARTBEAT_STATE_RECORD:
            rc = dev_heartbeat_state_load(&vm->heartbeat, &h, &payload, err);
            break;
        case PLATFORM_STATE_RECORD: rc = platform_state_load(vm, &h, &payload, err); break;
        default: return tern_err_set(err, "unexpected record type 0x%x", h.type);
        }
        if (rc < 0)
            return -1;
    }
    if (rc < 0)
        return -1;
    if (vcpus != vm->nr_vcpus)
        return tern_err_set(err, "%u vCPU records for %u vCPUs", vcpus, vm->nr_vcpus);
    return 0;
}

/* Re-encodes the records of `in` with the fields that legitimately differ
 * between a save and a save of its restored copy set to zero:
 *  - MSR IA32_TSC: the TSC runs on (and on kvm_pvm is the host's);
 *  - LAPIC current count (TMCCT): computed from the running timer;
 *  - clock, realtime, host_tsc of the KVM clock: time passes;
 *  - PIT count_load_time: host time of the last count load (KVM resets it
 *    to "now" when the PIT is restored). */
static void normalise(const struct rec_buf *in, struct rec_buf *out)
{
    struct rec_reader all, payload;
    struct rec_header h;
    struct tern_err err;
    rec_buf_init(out);
    rec_reader_init(&all, in->data, in->len);
    int rc;
    while ((rc = rec_next(&all, &h, &payload, &err)) == 1) {
        if (h.type == VCPU_STATE_RECORD) {
            struct vcpu_state s;
            if (vcpu_state_decode(&h, &payload, &s, &err) < 0)
                fail_msg("%s", err.msg);
            for (uint32_t i = 0; i < s.nr_msrs; i++)
                if (s.msrs[i].index == VCPU_MSR_IA32_TSC)
                    s.msrs[i].data = 0;
            memset(&s.lapic.regs[LAPIC_TMCCT], 0, 4);
            vcpu_state_encode(&s, out);
            vcpu_state_free(&s);
        } else if (h.type == PLATFORM_STATE_RECORD) {
            struct platform_state s;
            if (platform_state_decode(&h, &payload, &s, &err) < 0)
                fail_msg("%s", err.msg);
            s.clock.clock = s.clock.realtime = s.clock.host_tsc = 0;
            for (int i = 0; i < 3; i++)
                s.pit.channels[i].count_load_time = 0;
            platform_state_encode(&s, out);
        } else {
            rec_begin(out, h.type, h.version, h.flags);
            rec_put_bytes(out, payload.p, payload.len);
            rec_end(out);
        }
    }
    assert_int_equal(rc, 0);
    assert_int_equal(rec_buf_check(out, NULL), 0);
}

static void assert_same_state(const struct rec_buf *x, const struct rec_buf *y)
{
    struct rec_buf nx, ny;
    normalise(x, &nx);
    normalise(y, &ny);
    size_t n = nx.len < ny.len ? nx.len : ny.len;
    size_t i = 0;
    while (i < n && nx.data[i] == ny.data[i])
        i++;
    if (i < n || nx.len != ny.len) {
        /* Which record: walk the headers up to offset i. */
        size_t off = 0;
        uint32_t type = 0;
        while (off + REC_HEADER_SIZE <= nx.len) {
            uint32_t len = (uint32_t)nx.data[off + 8] | ((uint32_t)nx.data[off + 9] << 8) |
                           ((uint32_t)nx.data[off + 10] << 16) |
                           ((uint32_t)nx.data[off + 11] << 24);
            type = (uint32_t)nx.data[off] | ((uint32_t)nx.data[off + 1] << 8);
            if (i < off + REC_HEADER_SIZE + len)
                break;
            off += REC_HEADER_SIZE + len;
        }
        fail_msg("restored state differs from the saved one at byte %zu (record type 0x%04x, "
                 "payload offset %zu; lengths %zu/%zu)",
                 i, type, i - off - REC_HEADER_SIZE, nx.len, ny.len);
    }
    rec_buf_free(&nx);
    rec_buf_free(&ny);
}

static struct heartbeat_state heartbeat(struct vm *vm)
{
    struct heartbeat_state s;
    dev_heartbeat_snapshot(&vm->heartbeat, &s);
    return s;
}

static enum vm_state vm_state_now(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    enum vm_state s = vm->state;
    pthread_mutex_unlock(&vm->lock);
    return s;
}

/* The last value of "key=N" on the console, -1 if none. */
static long long last_value(const char *path, const char *key)
{
    char *t = test_read_text(path);
    long long v = -1;
    size_t kl = strlen(key);
    for (char *p = t; (p = strstr(p, key)) != NULL; p += kl)
        v = atoll(p + kl);
    free(t);
    return v;
}

static double first_up(const char *path)
{
    char *t = test_read_text(path);
    char *p = strstr(t, "up=");
    double v = p ? atof(p + 3) : -1;
    free(t);
    return v;
}

static double last_up(const char *path)
{
    char *t = test_read_text(path);
    double v = -1;
    for (char *p = t; (p = strstr(p, "up=")) != NULL; p += 3)
        v = atof(p + 3);
    free(t);
    return v;
}

static void save_restore_run(void **state, unsigned vcpus)
{
    struct fixture *f = *state;
    struct tern_err err;
    const char *kernel = test_build_path("testguest.elf");

    make_vm(&f->a, &f->a_made, kernel, GUEST_CMDLINE, vcpus, f->serial_a);
    if (vm_start(&f->a, &err) < 0)
        fail_msg("vm_start: %s", err.msg);
    if (!test_wait_for_text(f->serial_a, "tern-guest: running", 20000)) {
        show_serial(f->serial_a);
        fail_msg("guest did not reach user mode");
    }
    test_wait_for_text(f->serial_a, "checks=1", 5000);
    if (vm_pause(&f->a, VM_HOLD_OPERATOR, &err) < 0)
        fail_msg("vm_pause: %s", err.msg);
    save_all(&f->a, &f->saved);
    struct heartbeat_state hb_a = heartbeat(&f->a);
    assert_true(hb_a.count > 0);
    assert_int_equal(hb_a.seq_errors, 0);
    long long checks_a = last_value(f->serial_a, "checks=");
    double up_a = last_up(f->serial_a);

    make_vm(&f->b, &f->b_made, kernel, GUEST_CMDLINE, vcpus, f->serial_b);
    copy_ram(&f->b, &f->a);
    if (load_all(&f->b, &f->saved, &err) < 0)
        fail_msg("loading into the second VM: %s", err.msg);
    save_all(&f->b, &f->again);
    assert_same_state(&f->saved, &f->again);
    struct heartbeat_state hb_b = heartbeat(&f->b);
    assert_memory_equal(&hb_a, &hb_b, sizeof(hb_a));

    /* Only one copy may run: the original goes. */
    end_vm(&f->a, &f->a_made);

    if (vm_start(&f->b, &err) < 0)
        fail_msg("vm_start (restored): %s", err.msg);
    bool grew = false;
    for (int i = 0; i < 100 && !grew; i++) {
        test_sleep_ms(20);
        grew = heartbeat(&f->b).count > hb_a.count + 50;
    }
    /* Let a few self-checks and status lines through. */
    bool checked = false;
    for (int i = 0; i < 100 && !checked; i++) {
        test_sleep_ms(20);
        checked = last_value(f->serial_b, "checks=") >= checks_a + 2;
    }
    if (!grew || !checked || vm_state_now(&f->b) != VM_STATE_RUNNING) {
        show_serial(f->serial_a);
        show_serial(f->serial_b);
        fail_msg("restored guest: heartbeats %s, self-checks %s, state %s (%s)",
                 grew ? "grew" : "stalled", checked ? "advanced" : "stalled",
                 vm_state_name(vm_state_now(&f->b)), f->b.exit_reason);
    }
    struct heartbeat_state hb = heartbeat(&f->b);
    assert_int_equal(hb.seq_errors, 0); /* no heartbeat lost or sent twice */
    assert_int_equal(test_count_text(f->serial_b, "CHECK FAILED"), 0);
    assert_int_equal(test_count_text(f->serial_b, "EXCEPTION"), 0);
    assert_true(first_up(f->serial_b) >= up_a); /* guest time went on, not back */
    if (vcpus > 1)
        assert_true(test_wait_for_text(f->serial_a, "cpus=2", 0));

    /* Pause and resume work on the restored VM too. */
    assert_int_equal(vm_pause(&f->b, VM_HOLD_OPERATOR, &err), 0);
    uint64_t paused_at = heartbeat(&f->b).count;
    test_sleep_ms(100);
    assert_int_equal(heartbeat(&f->b).count, paused_at);
    assert_int_equal(vm_resume(&f->b, VM_HOLD_OPERATOR, &err), 0);
    for (int i = 0; i < 100 && heartbeat(&f->b).count <= paused_at + 20; i++)
        test_sleep_ms(20);
    assert_true(heartbeat(&f->b).count > paused_at + 20);
    assert_int_equal(heartbeat(&f->b).seq_errors, 0);
    end_vm(&f->b, &f->b_made);
}

static void test_save_restore_one_vcpu(void **state)
{
    test_require_kvm();
    save_restore_run(state, 1);
}

static void test_save_restore_two_vcpus(void **state)
{
    test_require_kvm();
    save_restore_run(state, 2);
}

/* The MSR list: probed from KVM, sorted, holding the TSC and TSC-deadline
 * MSRs; the same for a second VM. */
static void test_msr_list(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    struct tern_err err;
    make_vm(&f->a, &f->a_made, test_build_path("testguest.elf"), GUEST_CMDLINE, 1, f->serial_a);
    uint32_t *idx, n;
    if (vcpu_state_msr_list(&f->a.vcpus[0], &idx, &n, &err) < 0)
        fail_msg("%s", err.msg);
    assert_true(n > 10);
    bool tsc = false, deadline = false;
    for (uint32_t i = 0; i < n; i++) {
        if (i)
            assert_true(idx[i] > idx[i - 1]);
        tsc |= idx[i] == VCPU_MSR_IA32_TSC;
        deadline |= idx[i] == VCPU_MSR_IA32_TSC_DEADLINE;
    }
    assert_true(tsc);
    assert_true(deadline);
    print_message("KVM saves %u MSRs per vCPU here\n", n);
    make_vm(&f->b, &f->b_made, test_build_path("testguest.elf"), GUEST_CMDLINE, 1, f->serial_b);
    uint32_t *idx2, n2;
    if (vcpu_state_msr_list(&f->b.vcpus[0], &idx2, &n2, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(n, n2);
    assert_memory_equal(idx, idx2, n * sizeof(*idx));
    free(idx);
    free(idx2);
}

/* What a load refuses on real KVM, with the message it gives. */
static void test_load_errors(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    struct tern_err err;
    const char *kernel = test_build_path("testguest.elf");
    make_vm(&f->a, &f->a_made, kernel, GUEST_CMDLINE, 2, f->serial_a);
    /* A VM that has not run can be saved (vCPU 0 holds the PVH entry). */
    struct rec_buf b;
    rec_buf_init(&b);
    if (vcpu_state_save(&f->a.vcpus[0], &b, &err) < 0)
        fail_msg("%s", err.msg);
    struct rec_reader all, payload;
    struct rec_header h;
    rec_reader_init(&all, b.data, b.len);
    assert_int_equal(rec_next(&all, &h, &payload, &err), 1);
    struct rec_reader keep = payload;

    /* The wrong vCPU. */
    assert_int_equal(vcpu_state_load(&f->a.vcpus[1], &h, &payload, &err), -1);
    assert_string_equal(err.msg, "vCPU 1 state: the record holds vCPU 0's state");

    struct vcpu_state s;
    payload = keep;
    if (vcpu_state_decode(&h, &payload, &s, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(s.regs.rip, f->a.boot.entry_gpa);
    uint32_t host_xsave = s.xsave_size;

    /* An XSAVE area of another size. */
    uint8_t *xs = s.xsave;
    uint32_t xn = s.xsave_size;
    s.xsave_size = 2688;
    assert_int_equal(vcpu_state_apply(&f->a.vcpus[0], &s, &err), -1);
    char want[128];
    snprintf(want, sizeof(want),
             "vCPU 0 state: XSAVE area is 2688 bytes, this host's KVM uses %u", host_xsave);
    assert_string_equal(err.msg, want);
    s.xsave_size = xn;
    s.xsave = xs;

    /* An MSR KVM does not have: named in the error. */
    struct kvm_msr_entry *m = realloc(s.msrs, (s.nr_msrs + 1) * sizeof(*m));
    assert_non_null(m);
    s.msrs = m;
    s.msrs[s.nr_msrs++] = (struct kvm_msr_entry){.index = 0xdeadbeef, .data = 1};
    assert_int_equal(vcpu_state_apply(&f->a.vcpus[0], &s, &err), -1);
    assert_string_equal(err.msg, "KVM_SET_MSRS on vCPU 0: KVM refused MSR 0xdeadbeef = 0x1");
    s.nr_msrs--;

    /* A TSC far ahead: applied where KVM can set the TSC; refused where it
     * cannot (kvm_pvm keeps the host TSC), since the guest would see it
     * go backwards. */
    for (uint32_t i = 0; i < s.nr_msrs; i++)
        if (s.msrs[i].index == VCPU_MSR_IA32_TSC)
            s.msrs[i].data += (uint64_t)f->a.tsc_khz * 1000u * 3600u;
    int rc = vcpu_state_apply(&f->a.vcpus[0], &s, &err);
    if (f->a.kernel_mode_emulated) {
        assert_int_equal(rc, -1);
        assert_non_null(strstr(err.msg, "vCPU 0: guest TSC would go backwards"));
        print_message("kvm_pvm: %s\n", err.msg);
    } else {
        if (rc < 0)
            fail_msg("%s", err.msg);
    }
    vcpu_state_free(&s);

    /* The intact record loads. */
    payload = keep;
    if (vcpu_state_load(&f->a.vcpus[0], &h, &payload, &err) < 0)
        fail_msg("%s", err.msg);

    /* A running VM's state cannot be read. */
    if (vm_start(&f->a, &err) < 0)
        fail_msg("%s", err.msg);
    rec_buf_reset(&b);
    assert_int_equal(vcpu_state_save(&f->a.vcpus[0], &b, &err), -1);
    assert_string_equal(err.msg,
                        "cannot save the state of vCPU 0 while the VM is running: pause it first");
    rec_buf_free(&b);
}

/* A guest that does nothing but port I/O, so that a pause nearly always
 * lands right after a port-I/O exit: an IN from an absent port (must read
 * 0xff) and an OUT of its counter to the heartbeat port. The saved state
 * must include the completion of that I/O: otherwise the restored guest
 * would send the same heartbeat twice (a sequence error) or lose the IN's
 * data (it then ends itself with status 99). */
static void test_pause_mid_io(void **state)
{
    test_require_kvm();
    struct fixture *f = *state;
    struct tern_err err;
    static const unsigned char code[] = {
        0x31, 0xc0,             /* 0:  xor %eax,%eax */
        0xe4, 0x80,             /* 2:  in $0x80,%al (absent: reads 0xff) */
        0x3c, 0xff,             /* 4:  cmp $0xff,%al */
        0x75, 0x0a,             /* 6:  jne 18 */
        0x43,                   /* 8:  inc %ebx */
        0x89, 0xd8,             /* 9:  mov %ebx,%eax */
        0x66, 0xba, 0x10, 0x05, /* 11: mov $0x510,%dx */
        0xef,                   /* 15: out %eax,%dx (heartbeat) */
        0xeb, 0xee,             /* 16: jmp 0 */
        0xb0, 0x63,             /* 18: mov $99,%al */
        0x66, 0xba, 0x01, 0x05, /* 20: mov $0x501,%dx */
        0xee,                   /* 24: out %al,%dx (debug exit) */
        0xf4,                   /* 25: hlt */
    };
    char kernel[600];
    snprintf(kernel, sizeof(kernel), "%s/ioloop.elf", f->dir);
    assert_int_equal(test_write_pvh_elf(kernel, code, sizeof(code)), 0);
    make_vm(&f->a, &f->a_made, kernel, "", 1, f->serial_a);
    if (vm_start(&f->a, &err) < 0)
        fail_msg("%s", err.msg);
    for (int i = 0; i < 200 && heartbeat(&f->a).count < 100; i++)
        test_sleep_ms(10);
    assert_true(heartbeat(&f->a).count >= 100);

    /* Pause until both kinds were caught (about half the pauses land on
     * one), check the saved registers show the I/O completed, and for the
     * first rounds run a restored copy too. */
    unsigned mid_in = 0, mid_out = 0, rounds = 0;
    const uint64_t entry = f->a.boot.entry_gpa;
    for (; rounds < 200 && (rounds < 12 || !mid_in || !mid_out); rounds++) {
        if (vm_pause(&f->a, VM_HOLD_OPERATOR, &err) < 0)
            fail_msg("%s", err.msg);
        const struct kvm_run *run = f->a.vcpus[0].run;
        bool this_mid = run->exit_reason == KVM_EXIT_IO;
        bool in = this_mid && run->io.direction == KVM_EXIT_IO_IN;
        mid_in += in;
        mid_out += this_mid && !in;
        rec_buf_reset(&f->saved);
        if (vcpu_state_save(&f->a.vcpus[0], &f->saved, &err) < 0)
            fail_msg("%s", err.msg);
        /* Completed: RIP is past the instruction and an IN's data is in AL
         * (KVM hands it over only when KVM_RUN is entered again). */
        struct rec_reader all, payload;
        struct rec_header h;
        struct vcpu_state vs;
        rec_reader_init(&all, f->saved.data, f->saved.len);
        assert_int_equal(rec_next(&all, &h, &payload, &err), 1);
        if (vcpu_state_decode(&h, &payload, &vs, &err) < 0)
            fail_msg("%s", err.msg);
        if (in && (vs.regs.rip != entry + 4 || (vs.regs.rax & 0xff) != 0xff))
            fail_msg("saved right after an IN exit: rip=+%lld al=0x%02llx (want +4, 0xff)",
                     (long long)(vs.regs.rip - entry), vs.regs.rax & 0xff);
        if (this_mid && !in && vs.regs.rip != entry + 16)
            fail_msg("saved right after an OUT exit: rip=+%lld (want +16)",
                     (long long)(vs.regs.rip - entry));
        vcpu_state_free(&vs);

        if (rounds < 12) {
            dev_heartbeat_state_save(&f->a.heartbeat, &f->saved);
            if (platform_state_save(&f->a, &f->saved, &err) < 0)
                fail_msg("%s", err.msg);
            make_vm(&f->b, &f->b_made, kernel, "", 1, f->serial_b);
            copy_ram(&f->b, &f->a);
            if (load_all(&f->b, &f->saved, &err) < 0)
                fail_msg("%s", err.msg);
            uint64_t at = heartbeat(&f->b).count;
            if (vm_start(&f->b, &err) < 0)
                fail_msg("%s", err.msg);
            for (int i = 0; i < 200 && heartbeat(&f->b).count < at + 20 &&
                            vm_state_now(&f->b) == VM_STATE_RUNNING;
                 i++)
                test_sleep_ms(5);
            struct heartbeat_state hb = heartbeat(&f->b);
            enum vm_state st = vm_state_now(&f->b);
            if (st != VM_STATE_RUNNING || hb.seq_errors != 0 || hb.count < at + 20)
                fail_msg("round %u (paused after %s): restored guest %s, %llu heartbeats since, "
                         "%llu sequence errors (%s)",
                         rounds, !this_mid ? "no I/O" : in ? "an IN" : "an OUT",
                         vm_state_name(st), (unsigned long long)(hb.count - at),
                         (unsigned long long)hb.seq_errors, f->b.exit_reason);
            end_vm(&f->b, &f->b_made);
        }
        if (vm_resume(&f->a, VM_HOLD_OPERATOR, &err) < 0)
            fail_msg("%s", err.msg);
        test_sleep_ms(3);
    }
    print_message("%u pauses: %u right after an IN exit, %u after an OUT exit\n", rounds, mid_in,
                  mid_out);
    assert_true(mid_in > 0);
    assert_true(mid_out > 0);
    assert_int_equal(heartbeat(&f->a).seq_errors, 0);
    assert_int_equal(vm_state_now(&f->a), VM_STATE_RUNNING);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_msr_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_mid_io, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_restore_one_vcpu, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_restore_two_vcpus, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
