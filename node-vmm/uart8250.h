/* 8250/16550A UART register model (COM1 in tern-vmm). Pure logic: the
 * caller routes port I/O at offsets 0-7 here, supplies host input with
 * uart8250_receive(), and gets transmitted bytes and interrupt line changes
 * through the ops. Not thread-safe: the caller serialises access.
 *
 * What the guest sees (enough for Linux's 8250 driver to probe a 16550A):
 *  - Transmission is instant: a THR write reaches ops->tx at once, and THRE
 *    and TEMT read as set again before the write returns.
 *  - Receive FIFO of UART8250_RX_FIFO bytes (one byte in 16450 mode, FCR
 *    bit 0 clear). Host input is flow-controlled, never lost: bytes that do
 *    not fit are left with the caller. Overrun (LSR.OE) only happens in
 *    loopback, where the guest overfills its own FIFO.
 *  - The RX trigger level (FCR bits 7:6) decides between "received data"
 *    (IIR 0x4) and "character timeout" (IIR 0xC); having no clock, the model
 *    reports the timeout at once.
 *  - Modem lines: outside loopback the far end looks present (CTS, DSR, DCD
 *    asserted, RI not). In loopback (MCR bit 4) DTR, RTS, OUT1, OUT2 drive
 *    DSR, CTS, RI, DCD, and transmitted bytes come back as received ones;
 *    host input is not accepted then (the serial input is disconnected).
 *  - Interrupt output, as on a PC: pending interrupt AND MCR.OUT2, and never
 *    in loopback (the chip forces its OUT2 pin inactive there, and on PCs
 *    that pin gates the IRQ line). A guest that wants interrupts must set
 *    OUT2, as Linux does; QEMU's UART does not gate on OUT2, so a guest that
 *    forgets works there and not here (nor on real hardware).
 *  - Offsets 8 and above are not ours: reads return 0xff (floating bus),
 *    writes are ignored.
 *  - Parity, framing and break are not modelled (there is no wire). */
#ifndef TERN_NODE_VMM_UART8250_H
#define TERN_NODE_VMM_UART8250_H

#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"
#include "../proto/record.h"
#include "../proto/record_types.h"

#define UART8250_RX_FIFO 16
/* Number of I/O ports the UART decodes, from its base. */
#define UART8250_NR_PORTS 8

struct uart8250_ops {
    /* A byte the guest transmitted. */
    void (*tx)(void *opaque, uint8_t byte);
    /* The interrupt output changed to `level` (0 or 1). Only called on a
     * change. */
    void (*set_irq)(void *opaque, int level);
};

/* Plain register state, kept apart from the runtime struct so it can be
 * saved and restored (snapshot issue). It holds everything the model needs;
 * the values the guest reads that are always the same (LSR.THRE/TEMT, the
 * modem inputs outside loopback) are derived, not stored. */
struct uart8250_state {
    uint8_t ier;          /* bits 3:0 (16550A has no more) */
    uint8_t lcr;
    uint8_t mcr;          /* bits 4:0 */
    uint8_t lsr_err;      /* sticky LSR error bits (OE); cleared by an LSR read */
    uint8_t msr;          /* modem status 7:4 and delta bits 3:0 */
    uint8_t scr;
    uint8_t fcr;          /* kept FCR bits: FIFO enable, DMA mode, RX trigger */
    uint8_t dll, dlm;     /* divisor latch */
    uint8_t thre_pending; /* THRE interrupt latched, not yet acknowledged;
                           * only ever 1 while IER.THRI is set */
    uint8_t rx_fifo[UART8250_RX_FIFO];
    uint8_t rx_head, rx_count; /* ring: oldest byte at rx_head */
    uint8_t irq_level;    /* output level last reported through set_irq */
};

struct uart8250 {
    struct uart8250_state s;
    const struct uart8250_ops *ops;
    void *opaque;
};

/* Puts the UART in its power-on state (MCR 0, so no interrupts until the
 * guest sets OUT2; divisor 1 = 115200 baud). `ops` and either callback may
 * be NULL (output dropped / line not wired). Does not call set_irq: the
 * output starts low. */
void uart8250_init(struct uart8250 *u, const struct uart8250_ops *ops, void *opaque);
/* Guest read / write at `offset` from the base port (0-7). */
uint8_t uart8250_read(struct uart8250 *u, unsigned offset);
void uart8250_write(struct uart8250 *u, unsigned offset, uint8_t value);
/* Queues host input for the guest; returns how many bytes fit in the FIFO. */
size_t uart8250_receive(struct uart8250 *u, const uint8_t *buf, size_t len);
/* Room left in the receive FIFO (0 in loopback). */
size_t uart8250_rx_room(const struct uart8250 *u);

/* Checks that `s` is a state this model could have produced (indices in
 * range, no reserved bits): a restored state comes from outside. */
int uart8250_state_check(const struct uart8250_state *s, struct tern_err *err);
/* Replaces the state with `s` after checking it. The output level is
 * recomputed from the registers, and reported through set_irq if it is 1,
 * so that a fresh interrupt line matches the restored device. On error the
 * UART is unchanged. */
int uart8250_restore(struct uart8250 *u, const struct uart8250_state *s,
                     struct tern_err *err);

/* --- saved state (layout in docs/snapshot-state.md) --- */

#define UART_STATE_RECORD REC_TYPE_UART_STATE
#define UART_STATE_VERSION 1u

/* Appends one UART_STATE_RECORD holding u->s, field by field; failures
 * show in rec_buf_check(b). The caller serialises, as for every call here
 * (dev_serial: hold its lock). */
void uart8250_state_save(const struct uart8250 *u, struct rec_buf *b);
/* Parses a UART_STATE_RECORD payload into *s and checks it with
 * uart8250_state_check: type, version, flags, the FIFO size, trailing
 * bytes, and a state the model could have produced. Pure. */
int uart8250_state_decode(const struct rec_header *h, struct rec_reader *payload,
                          struct uart8250_state *s, struct tern_err *err);
/* uart8250_state_decode, then uart8250_restore (which reports a raised
 * interrupt line through set_irq). On error the UART is unchanged. */
int uart8250_state_load(struct uart8250 *u, const struct rec_header *h,
                        struct rec_reader *payload, struct tern_err *err);

#endif
