/* 16550A UART register model. See uart8250.h for what the guest sees. */
#include "uart8250.h"

#include <string.h>

/* Register offsets. With LCR.DLAB set, 0 and 1 are the divisor latch. */
enum {
    REG_RBR_THR = 0,
    REG_IER = 1,
    REG_IIR_FCR = 2,
    REG_LCR = 3,
    REG_MCR = 4,
    REG_LSR = 5,
    REG_MSR = 6,
    REG_SCR = 7,
};

#define IER_RDI 0x01  /* received data available */
#define IER_THRI 0x02 /* transmitter holding register empty */
#define IER_RLSI 0x04 /* receiver line status */
#define IER_MSI 0x08  /* modem status */
#define IER_MASK 0x0f

/* Interrupt identification, bits 3:0 of IIR. */
#define IIR_NONE 0x01
#define IIR_MSI 0x00
#define IIR_THRE 0x02
#define IIR_RDA 0x04
#define IIR_RLS 0x06
#define IIR_TIMEOUT 0x0c
#define IIR_FIFO_ON 0xc0 /* bits 7:6 read 11 on a 16550A with FIFOs on */

#define FCR_ENABLE 0x01
#define FCR_CLEAR_RX 0x02
#define FCR_CLEAR_TX 0x04
#define FCR_DMA 0x08
#define FCR_TRIGGER 0xc0
#define FCR_KEPT (FCR_ENABLE | FCR_DMA | FCR_TRIGGER)

#define LCR_DLAB 0x80

#define MCR_DTR 0x01
#define MCR_RTS 0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define MCR_MASK 0x1f

#define LSR_DR 0x01
#define LSR_OE 0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40

#define MSR_DCTS 0x01
#define MSR_DDSR 0x02
#define MSR_TERI 0x04
#define MSR_DDCD 0x08
#define MSR_DELTA 0x0f
#define MSR_CTS 0x10
#define MSR_DSR 0x20
#define MSR_RI 0x40
#define MSR_DCD 0x80
#define MSR_STATUS 0xf0

/* Outside loopback the far end looks like a connected, ready peer, so a
 * guest waiting for carrier or clear-to-send does not hang. */
#define MSR_EXTERNAL (MSR_DCD | MSR_DSR | MSR_CTS)

static int fifo_enabled(const struct uart8250_state *s)
{
    return s->fcr & FCR_ENABLE;
}

static int in_loopback(const struct uart8250_state *s)
{
    return s->mcr & MCR_LOOP;
}

/* In 16450 mode the "FIFO" is the single receive buffer register. */
static unsigned rx_capacity(const struct uart8250_state *s)
{
    return fifo_enabled(s) ? UART8250_RX_FIFO : 1;
}

static unsigned rx_trigger(const struct uart8250_state *s)
{
    static const unsigned levels[4] = {1, 4, 8, 14};
    return levels[(s->fcr & FCR_TRIGGER) >> 6];
}

/* The interrupt source IIR reports, by the 16550A's fixed priority: line
 * status, then received data, then THR empty, then modem status. */
static uint8_t pending_source(const struct uart8250_state *s)
{
    if ((s->ier & IER_RLSI) && s->lsr_err)
        return IIR_RLS;
    if ((s->ier & IER_RDI) && s->rx_count) {
        if (fifo_enabled(s) && s->rx_count < rx_trigger(s))
            return IIR_TIMEOUT;
        return IIR_RDA;
    }
    if ((s->ier & IER_THRI) && s->thre_pending)
        return IIR_THRE;
    if ((s->ier & IER_MSI) && (s->msr & MSR_DELTA))
        return IIR_MSI;
    return IIR_NONE;
}

/* The line as a PC wires it: OUT2 enables the IRQ driver, and the chip
 * holds its OUT2 pin inactive in loopback. */
static int irq_output(const struct uart8250_state *s)
{
    if (!(s->mcr & MCR_OUT2) || in_loopback(s))
        return 0;
    return pending_source(s) != IIR_NONE;
}

static void update_irq(struct uart8250 *u)
{
    int level = irq_output(&u->s);
    if (level == u->s.irq_level)
        return;
    u->s.irq_level = (uint8_t)level;
    if (u->ops && u->ops->set_irq)
        u->ops->set_irq(u->opaque, level);
}

static void rx_clear(struct uart8250_state *s)
{
    s->rx_head = 0;
    s->rx_count = 0;
}

static void rx_push(struct uart8250_state *s, uint8_t byte)
{
    unsigned tail = (s->rx_head + s->rx_count) % UART8250_RX_FIFO;
    s->rx_fifo[tail] = byte;
    s->rx_count++;
}

static uint8_t rx_pop(struct uart8250_state *s)
{
    uint8_t byte = s->rx_fifo[s->rx_head];
    s->rx_head = (uint8_t)((s->rx_head + 1) % UART8250_RX_FIFO);
    s->rx_count--;
    return byte;
}

/* A byte arriving from the line (only the loopback path can overrun: host
 * input is offered only as far as there is room). */
static void rx_from_line(struct uart8250_state *s, uint8_t byte)
{
    if (s->rx_count < rx_capacity(s)) {
        rx_push(s, byte);
        return;
    }
    s->lsr_err |= LSR_OE;
    /* A full FIFO drops the new byte; the 16450 holding register is
     * overwritten by it. */
    if (!fifo_enabled(s)) {
        rx_clear(s);
        rx_push(s, byte);
    }
}

/* Modem status inputs as the chip sees them now. */
static uint8_t modem_inputs(const struct uart8250_state *s)
{
    if (!in_loopback(s))
        return MSR_EXTERNAL;
    uint8_t in = 0;
    if (s->mcr & MCR_DTR)
        in |= MSR_DSR;
    if (s->mcr & MCR_RTS)
        in |= MSR_CTS;
    if (s->mcr & MCR_OUT1)
        in |= MSR_RI;
    if (s->mcr & MCR_OUT2)
        in |= MSR_DCD;
    return in;
}

/* Latches the delta bits for a change of the modem inputs: CTS, DSR, DCD
 * on any change, RI only on its trailing edge (TERI). */
static void msr_update(struct uart8250_state *s)
{
    uint8_t old = s->msr & MSR_STATUS;
    uint8_t now = modem_inputs(s);
    uint8_t changed = old ^ now;
    uint8_t delta = s->msr & MSR_DELTA;
    if (changed & MSR_CTS)
        delta |= MSR_DCTS;
    if (changed & MSR_DSR)
        delta |= MSR_DDSR;
    if (changed & MSR_DCD)
        delta |= MSR_DDCD;
    if ((old & MSR_RI) && !(now & MSR_RI))
        delta |= MSR_TERI;
    s->msr = (uint8_t)(now | delta);
}

void uart8250_init(struct uart8250 *u, const struct uart8250_ops *ops, void *opaque)
{
    memset(u, 0, sizeof(*u));
    u->ops = ops;
    u->opaque = opaque;
    u->s.dll = 1;
    u->s.msr = MSR_EXTERNAL;
}

static uint8_t read_rbr(struct uart8250 *u)
{
    if (!u->s.rx_count)
        return 0;
    uint8_t byte = rx_pop(&u->s);
    update_irq(u);
    return byte;
}

/* Reading IIR acknowledges a THRE interrupt, and only when IIR reports it:
 * a higher-priority source hides THRE, which then stays pending. */
static uint8_t read_iir(struct uart8250 *u)
{
    uint8_t src = pending_source(&u->s);
    if (src == IIR_THRE) {
        u->s.thre_pending = 0;
        update_irq(u);
    }
    return (uint8_t)(src | (fifo_enabled(&u->s) ? IIR_FIFO_ON : 0));
}

static uint8_t read_lsr(struct uart8250 *u)
{
    /* Transmission is instant, so THR and the shift register are always
     * empty by the time the guest can look. */
    uint8_t lsr = LSR_THRE | LSR_TEMT | u->s.lsr_err;
    if (u->s.rx_count)
        lsr |= LSR_DR;
    if (u->s.lsr_err) {
        u->s.lsr_err = 0;
        update_irq(u);
    }
    return lsr;
}

static uint8_t read_msr(struct uart8250 *u)
{
    uint8_t msr = u->s.msr;
    if (msr & MSR_DELTA) {
        u->s.msr &= MSR_STATUS;
        update_irq(u);
    }
    return msr;
}

uint8_t uart8250_read(struct uart8250 *u, unsigned offset)
{
    int dlab = u->s.lcr & LCR_DLAB;
    switch (offset) {
    case REG_RBR_THR:
        return dlab ? u->s.dll : read_rbr(u);
    case REG_IER:
        return dlab ? u->s.dlm : u->s.ier;
    case REG_IIR_FCR:
        return read_iir(u);
    case REG_LCR:
        return u->s.lcr;
    case REG_MCR:
        return u->s.mcr;
    case REG_LSR:
        return read_lsr(u);
    case REG_MSR:
        return read_msr(u);
    case REG_SCR:
        return u->s.scr;
    default:
        return 0xff;
    }
}

/* Writing THR acknowledges a THRE interrupt; the byte then leaves at once
 * and THR is empty again, so the condition comes straight back. The line
 * is updated in between so a guest sees the falling and rising edge a real
 * UART would give it (an edge-triggered PIC needs the second edge). */
static void write_thr(struct uart8250 *u, uint8_t byte)
{
    u->s.thre_pending = 0;
    update_irq(u);
    if (in_loopback(&u->s))
        rx_from_line(&u->s, byte);
    else if (u->ops && u->ops->tx)
        u->ops->tx(u->opaque, byte);
    u->s.thre_pending = (u->s.ier & IER_THRI) ? 1 : 0;
    update_irq(u);
}

/* Enabling THRI while THR is empty raises THRE again even if the guest had
 * acknowledged it: Linux's THRE test and Windows rely on this. Disabling
 * it forgets the condition, keeping the state canonical. */
static void write_ier(struct uart8250 *u, uint8_t value)
{
    uint8_t old = u->s.ier;
    u->s.ier = value & IER_MASK;
    if ((u->s.ier ^ old) & IER_THRI)
        u->s.thre_pending = (u->s.ier & IER_THRI) ? 1 : 0;
    update_irq(u);
}

/* FIFO control. Bit 0 must be set for the other bits to take effect, and
 * switching between FIFO and 16450 mode empties the FIFOs. */
static void write_fcr(struct uart8250 *u, uint8_t value)
{
    uint8_t was_enabled = u->s.fcr & FCR_ENABLE;
    if (!(value & FCR_ENABLE)) {
        u->s.fcr = 0;
        if (was_enabled)
            rx_clear(&u->s);
    } else {
        u->s.fcr = value & FCR_KEPT;
        if (!was_enabled || (value & FCR_CLEAR_RX))
            rx_clear(&u->s);
        /* FCR_CLEAR_TX: the transmit FIFO is always empty here. */
    }
    update_irq(u);
}

static void write_mcr(struct uart8250 *u, uint8_t value)
{
    u->s.mcr = value & MCR_MASK;
    msr_update(&u->s);
    update_irq(u);
}

void uart8250_write(struct uart8250 *u, unsigned offset, uint8_t value)
{
    int dlab = u->s.lcr & LCR_DLAB;
    switch (offset) {
    case REG_RBR_THR:
        if (dlab)
            u->s.dll = value;
        else
            write_thr(u, value);
        break;
    case REG_IER:
        if (dlab)
            u->s.dlm = value;
        else
            write_ier(u, value);
        break;
    case REG_IIR_FCR:
        write_fcr(u, value);
        break;
    case REG_LCR:
        u->s.lcr = value;
        break;
    case REG_MCR:
        write_mcr(u, value);
        break;
    case REG_SCR:
        u->s.scr = value;
        break;
    default:
        /* LSR and MSR are read-only (their factory-test writes are not
         * modelled); anything past offset 7 is not ours. */
        break;
    }
}

size_t uart8250_rx_room(const struct uart8250 *u)
{
    if (in_loopback(&u->s))
        return 0;
    return rx_capacity(&u->s) - u->s.rx_count;
}

size_t uart8250_receive(struct uart8250 *u, const uint8_t *buf, size_t len)
{
    size_t room = uart8250_rx_room(u);
    size_t n = len < room ? len : room;
    for (size_t i = 0; i < n; i++)
        rx_push(&u->s, buf[i]);
    if (n)
        update_irq(u);
    return n;
}

int uart8250_state_check(const struct uart8250_state *s, struct tern_err *err)
{
    if (s->ier & ~IER_MASK)
        return tern_err_set(err, "uart8250: IER 0x%02x has reserved bits", s->ier);
    if (s->mcr & ~MCR_MASK)
        return tern_err_set(err, "uart8250: MCR 0x%02x has reserved bits", s->mcr);
    if (s->fcr & ~FCR_KEPT)
        return tern_err_set(err, "uart8250: FCR 0x%02x has bits the model never keeps",
                            s->fcr);
    if (s->lsr_err & ~LSR_OE)
        return tern_err_set(err, "uart8250: LSR error bits 0x%02x not modelled",
                            s->lsr_err);
    if ((s->msr & MSR_STATUS) != modem_inputs(s))
        return tern_err_set(err, "uart8250: MSR 0x%02x does not match MCR 0x%02x",
                            s->msr, s->mcr);
    if (s->thre_pending > 1 || s->irq_level > 1)
        return tern_err_set(err, "uart8250: flag out of range");
    if (s->thre_pending && !(s->ier & IER_THRI))
        return tern_err_set(err, "uart8250: THRE pending with THRE interrupt disabled");
    if (s->rx_head >= UART8250_RX_FIFO)
        return tern_err_set(err, "uart8250: RX FIFO head %u out of range", s->rx_head);
    if (s->rx_count > rx_capacity(s))
        return tern_err_set(err, "uart8250: RX FIFO holds %u bytes, capacity %u",
                            s->rx_count, rx_capacity(s));
    return 0;
}

int uart8250_restore(struct uart8250 *u, const struct uart8250_state *s,
                     struct tern_err *err)
{
    if (uart8250_state_check(s, err) < 0)
        return -1;
    u->s = *s;
    u->s.irq_level = (uint8_t)irq_output(&u->s);
    if (u->s.irq_level && u->ops && u->ops->set_irq)
        u->ops->set_irq(u->opaque, 1);
    return 0;
}

/* ---- saved state ---- */

void uart8250_state_save(const struct uart8250 *u, struct rec_buf *b)
{
    const struct uart8250_state *s = &u->s;
    rec_begin(b, UART_STATE_RECORD, UART_STATE_VERSION, 0);
    rec_put_u8(b, s->ier);
    rec_put_u8(b, s->lcr);
    rec_put_u8(b, s->mcr);
    rec_put_u8(b, s->lsr_err);
    rec_put_u8(b, s->msr);
    rec_put_u8(b, s->scr);
    rec_put_u8(b, s->fcr);
    rec_put_u8(b, s->dll);
    rec_put_u8(b, s->dlm);
    rec_put_u8(b, s->thre_pending);
    rec_put_u8(b, UART8250_RX_FIFO);
    rec_put_bytes(b, s->rx_fifo, UART8250_RX_FIFO);
    rec_put_u8(b, s->rx_head);
    rec_put_u8(b, s->rx_count);
    rec_put_u8(b, s->irq_level);
    rec_end(b);
}

int uart8250_state_decode(const struct rec_header *h, struct rec_reader *r,
                          struct uart8250_state *s, struct tern_err *err)
{
    memset(s, 0, sizeof(*s));
    if (h->type != UART_STATE_RECORD)
        return tern_err_set(err, "uart state: record type 0x%04x is not 0x%04x", h->type,
                            UART_STATE_RECORD);
    if (h->version != UART_STATE_VERSION)
        return tern_err_set(err, "uart state: version %u is not supported (this tern-vmm reads version %u)",
                            h->version, UART_STATE_VERSION);
    if (h->flags != 0)
        return tern_err_set(err, "uart state: unknown record flags 0x%04x", h->flags);
    uint8_t fifo = 0;
    rec_get_u8(r, &s->ier);
    rec_get_u8(r, &s->lcr);
    rec_get_u8(r, &s->mcr);
    rec_get_u8(r, &s->lsr_err);
    rec_get_u8(r, &s->msr);
    rec_get_u8(r, &s->scr);
    rec_get_u8(r, &s->fcr);
    rec_get_u8(r, &s->dll);
    rec_get_u8(r, &s->dlm);
    rec_get_u8(r, &s->thre_pending);
    if (rec_get_u8(r, &fifo) == 0 && fifo != UART8250_RX_FIFO)
        return tern_err_set(err, "uart state: receive FIFO of %u bytes, this model has %u", fifo,
                            UART8250_RX_FIFO);
    rec_get_bytes(r, s->rx_fifo, UART8250_RX_FIFO);
    rec_get_u8(r, &s->rx_head);
    rec_get_u8(r, &s->rx_count);
    rec_get_u8(r, &s->irq_level);
    if (rec_finish(r, "uart state", err) < 0)
        return -1;
    if (uart8250_state_check(s, err) < 0)
        return tern_err_prefix(err, "uart state");
    return 0;
}

int uart8250_state_load(struct uart8250 *u, const struct rec_header *h,
                        struct rec_reader *payload, struct tern_err *err)
{
    struct uart8250_state s;
    if (uart8250_state_decode(h, payload, &s, err) < 0)
        return -1;
    return uart8250_restore(u, &s, err);
}
