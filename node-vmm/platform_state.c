/* VM-wide KVM state: PICs, IOAPIC, PIT, KVM clock. See platform_state.h
 * and docs/snapshot-state.md. */
#include "platform_state.h"
#include "vcpu_state.h" /* section helpers */
#include "vm.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#define WHAT "platform state"

#define TAG_PIC0 STATE_TAG('P', 'I', 'C', '0')
#define TAG_PIC1 STATE_TAG('P', 'I', 'C', '1')
#define TAG_IOAPIC STATE_TAG('I', 'O', 'A', 'P')
#define TAG_PIT STATE_TAG('P', 'I', 'T', '2')
#define TAG_CLOCK STATE_TAG('C', 'L', 'C', 'K')

#define PIC_WIRE 16u
#define IOAPIC_WIRE (8u + 4u + 4u + 4u + 4u + 8u * KVM_IOAPIC_NUM_PINS)
#define PIT_CHANNEL_WIRE 24u
#define PIT_WIRE (3u * PIT_CHANNEL_WIRE + 4u)
#define CLOCK_WIRE 28u

#define PIT_KNOWN_FLAGS (KVM_PIT_FLAGS_HPET_LEGACY | KVM_PIT_FLAGS_SPEAKER_DATA_ON)
#define CLOCK_KNOWN_FLAGS (KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC)

/* ------------------------------------------------------------------ encode */

static void put_pic(struct rec_buf *b, uint32_t tag, const struct kvm_pic_state *p)
{
    size_t at = state_section_begin(b, tag, PIC_WIRE);
    const uint8_t f[16] = {p->last_irr, p->irr, p->imr, p->isr, p->priority_add, p->irq_base,
                           p->read_reg_select, p->poll, p->special_mask, p->init_state,
                           p->auto_eoi, p->rotate_on_auto_eoi, p->special_fully_nested_mode,
                           p->init4, p->elcr, p->elcr_mask};
    for (int i = 0; i < 16; i++)
        rec_put_u8(b, f[i]);
    state_section_end(b, at, PIC_WIRE);
}

void platform_state_encode(const struct platform_state *s, struct rec_buf *b)
{
    rec_begin(b, PLATFORM_STATE_RECORD, PLATFORM_STATE_VERSION, 0);
    put_pic(b, TAG_PIC0, &s->pic[0]);
    put_pic(b, TAG_PIC1, &s->pic[1]);

    size_t at = state_section_begin(b, TAG_IOAPIC, IOAPIC_WIRE);
    rec_put_u64(b, s->ioapic.base_address);
    rec_put_u32(b, s->ioapic.ioregsel);
    rec_put_u32(b, s->ioapic.id);
    rec_put_u32(b, s->ioapic.irr);
    rec_put_u32(b, KVM_IOAPIC_NUM_PINS);
    for (int i = 0; i < KVM_IOAPIC_NUM_PINS; i++)
        rec_put_u64(b, s->ioapic.redirtbl[i].bits);
    state_section_end(b, at, IOAPIC_WIRE);

    at = state_section_begin(b, TAG_PIT, PIT_WIRE);
    for (int i = 0; i < 3; i++) {
        const struct kvm_pit_channel_state *c = &s->pit.channels[i];
        rec_put_u32(b, c->count);
        rec_put_u16(b, c->latched_count);
        rec_put_u8(b, c->count_latched);
        rec_put_u8(b, c->status_latched);
        rec_put_u8(b, c->status);
        rec_put_u8(b, c->read_state);
        rec_put_u8(b, c->write_state);
        rec_put_u8(b, c->write_latch);
        rec_put_u8(b, c->rw_mode);
        rec_put_u8(b, c->mode);
        rec_put_u8(b, c->bcd);
        rec_put_u8(b, c->gate);
        rec_put_u64(b, (uint64_t)c->count_load_time);
    }
    rec_put_u32(b, s->pit.flags);
    state_section_end(b, at, PIT_WIRE);

    at = state_section_begin(b, TAG_CLOCK, CLOCK_WIRE);
    rec_put_u64(b, s->clock.clock);
    rec_put_u32(b, s->clock.flags);
    rec_put_u64(b, s->clock.realtime);
    rec_put_u64(b, s->clock.host_tsc);
    state_section_end(b, at, CLOCK_WIRE);
    rec_end(b);
}

/* ------------------------------------------------------------------ decode */

static uint64_t get64(struct rec_reader *r)
{
    uint64_t v;
    rec_get_u64(r, &v);
    return v;
}

/* The 8259 model's fields are register bits and small state numbers;
 * anything else did not come from KVM. */
static int decode_pic(struct rec_reader *r, uint32_t tag, const char *name,
                      struct kvm_pic_state *p, struct tern_err *err)
{
    struct rec_reader sec;
    if (state_section_open(r, tag, WHAT, name, PIC_WIRE, 0, &sec, err) < 0)
        return -1;
    uint8_t *f[16] = {&p->last_irr, &p->irr, &p->imr, &p->isr, &p->priority_add, &p->irq_base,
                      &p->read_reg_select, &p->poll, &p->special_mask, &p->init_state,
                      &p->auto_eoi, &p->rotate_on_auto_eoi, &p->special_fully_nested_mode,
                      &p->init4, &p->elcr, &p->elcr_mask};
    for (int i = 0; i < 16; i++)
        rec_get_u8(&sec, f[i]);
    if (state_section_close(&sec, WHAT, name, err) < 0)
        return -1;
    if (p->priority_add > 7 || p->init_state > 3)
        return tern_err_set(err, WHAT ": %s: priority_add %u / init_state %u out of range", name,
                            p->priority_add, p->init_state);
    const uint8_t flags01[] = {p->read_reg_select, p->poll,   p->special_mask,
                               p->auto_eoi,        p->rotate_on_auto_eoi,
                               p->special_fully_nested_mode, p->init4};
    for (size_t i = 0; i < sizeof(flags01); i++)
        if (flags01[i] > 1)
            return tern_err_set(err, WHAT ": %s: a yes/no field holds %u", name, flags01[i]);
    return 0;
}

int platform_state_decode(const struct rec_header *h, struct rec_reader *payload,
                          struct platform_state *s, struct tern_err *err)
{
    memset(s, 0, sizeof(*s));
    if (state_check_header(h, PLATFORM_STATE_RECORD, PLATFORM_STATE_VERSION, WHAT, err) < 0)
        return -1;
    if (decode_pic(payload, TAG_PIC0, "PIC master", &s->pic[0], err) < 0 ||
        decode_pic(payload, TAG_PIC1, "PIC slave", &s->pic[1], err) < 0)
        return -1;

    struct rec_reader sec;
    if (state_section_open(payload, TAG_IOAPIC, WHAT, "IOAPIC", IOAPIC_WIRE, 0, &sec, err) < 0)
        return -1;
    s->ioapic.base_address = get64(&sec);
    rec_get_u32(&sec, &s->ioapic.ioregsel);
    rec_get_u32(&sec, &s->ioapic.id);
    rec_get_u32(&sec, &s->ioapic.irr);
    uint32_t pins;
    rec_get_u32(&sec, &pins);
    for (int i = 0; i < KVM_IOAPIC_NUM_PINS; i++)
        s->ioapic.redirtbl[i].bits = get64(&sec);
    if (state_section_close(&sec, WHAT, "IOAPIC", err) < 0)
        return -1;
    if (pins != KVM_IOAPIC_NUM_PINS)
        return tern_err_set(err, WHAT ": IOAPIC has %u pins, KVM's has %u", pins,
                            KVM_IOAPIC_NUM_PINS);

    if (state_section_open(payload, TAG_PIT, WHAT, "PIT", PIT_WIRE, 0, &sec, err) < 0)
        return -1;
    for (int i = 0; i < 3; i++) {
        struct kvm_pit_channel_state *c = &s->pit.channels[i];
        rec_get_u32(&sec, &c->count);
        rec_get_u16(&sec, &c->latched_count);
        rec_get_u8(&sec, &c->count_latched);
        rec_get_u8(&sec, &c->status_latched);
        rec_get_u8(&sec, &c->status);
        rec_get_u8(&sec, &c->read_state);
        rec_get_u8(&sec, &c->write_state);
        rec_get_u8(&sec, &c->write_latch);
        rec_get_u8(&sec, &c->rw_mode);
        rec_get_u8(&sec, &c->mode);
        rec_get_u8(&sec, &c->bcd);
        rec_get_u8(&sec, &c->gate);
        c->count_load_time = (int64_t)get64(&sec);
    }
    rec_get_u32(&sec, &s->pit.flags);
    if (state_section_close(&sec, WHAT, "PIT", err) < 0)
        return -1;
    for (int i = 0; i < 3; i++)
        if (s->pit.channels[i].count > 0x10000)
            return tern_err_set(err, WHAT ": PIT channel %d count %u exceeds 65536", i,
                                s->pit.channels[i].count);
    if (s->pit.flags & ~(uint32_t)PIT_KNOWN_FLAGS)
        return tern_err_set(err, WHAT ": PIT has unknown flags 0x%x", s->pit.flags);

    if (state_section_open(payload, TAG_CLOCK, WHAT, "clock", CLOCK_WIRE, 0, &sec, err) < 0)
        return -1;
    s->clock.clock = get64(&sec);
    rec_get_u32(&sec, &s->clock.flags);
    s->clock.realtime = get64(&sec);
    s->clock.host_tsc = get64(&sec);
    if (state_section_close(&sec, WHAT, "clock", err) < 0)
        return -1;
    if (s->clock.flags & ~(uint32_t)CLOCK_KNOWN_FLAGS)
        return tern_err_set(err, WHAT ": clock has unknown flags 0x%x", s->clock.flags);
    return rec_finish(payload, WHAT, err);
}

/* --------------------------------------------------------------- KVM side */

static int get_chip(struct vm *vm, uint32_t id, struct kvm_irqchip *chip, const char *name,
                    struct tern_err *err)
{
    memset(chip, 0, sizeof(*chip));
    chip->chip_id = id;
    if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, chip) < 0)
        return tern_err_errno(err, errno, "KVM_GET_IRQCHIP (%s)", name);
    return 0;
}

int platform_state_read(struct vm *vm, struct platform_state *s, struct tern_err *err)
{
    memset(s, 0, sizeof(*s));
    struct kvm_irqchip chip;
    if (get_chip(vm, KVM_IRQCHIP_PIC_MASTER, &chip, "PIC master", err) < 0)
        return -1;
    s->pic[0] = chip.chip.pic;
    if (get_chip(vm, KVM_IRQCHIP_PIC_SLAVE, &chip, "PIC slave", err) < 0)
        return -1;
    s->pic[1] = chip.chip.pic;
    if (get_chip(vm, KVM_IRQCHIP_IOAPIC, &chip, "IOAPIC", err) < 0)
        return -1;
    s->ioapic = chip.chip.ioapic;
    if (ioctl(vm->vm_fd, KVM_GET_PIT2, &s->pit) < 0)
        return tern_err_errno(err, errno, "KVM_GET_PIT2");
    if (ioctl(vm->vm_fd, KVM_GET_CLOCK, &s->clock) < 0)
        return tern_err_errno(err, errno, "KVM_GET_CLOCK");
    return 0;
}

int platform_state_apply(struct vm *vm, const struct platform_state *s, struct tern_err *err)
{
    static const char *const names[3] = {"PIC master", "PIC slave", "IOAPIC"};
    for (uint32_t id = 0; id < 3; id++) {
        struct kvm_irqchip chip;
        memset(&chip, 0, sizeof(chip));
        chip.chip_id = id;
        if (id == KVM_IRQCHIP_IOAPIC)
            chip.chip.ioapic = s->ioapic;
        else
            chip.chip.pic = s->pic[id];
        if (ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &chip) < 0)
            return tern_err_errno(err, errno, "KVM_SET_IRQCHIP (%s)", names[id]);
    }
    struct kvm_pit_state2 pit = s->pit;
    if (ioctl(vm->vm_fd, KVM_SET_PIT2, &pit) < 0)
        return tern_err_errno(err, errno, "KVM_SET_PIT2");
    /* Only the clock value: no KVM_CLOCK_REALTIME, so KVM does not add the
     * wall-clock time since the save (see platform_state.h). */
    struct kvm_clock_data clock = {.clock = s->clock.clock};
    if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &clock) < 0)
        return tern_err_errno(err, errno, "KVM_SET_CLOCK");
    return 0;
}

int platform_state_save(struct vm *vm, struct rec_buf *b, struct tern_err *err)
{
    struct platform_state s;
    if (platform_state_read(vm, &s, err) < 0)
        return -1;
    platform_state_encode(&s, b);
    if (rec_buf_check(b, err) < 0)
        return tern_err_prefix(err, WHAT);
    return 0;
}

int platform_state_load(struct vm *vm, const struct rec_header *h, struct rec_reader *payload,
                        struct tern_err *err)
{
    struct platform_state s;
    if (platform_state_decode(h, payload, &s, err) < 0)
        return -1;
    return platform_state_apply(vm, &s, err);
}
