/* Unit tests for the 16550A register model (node-vmm/uart8250.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "node-vmm/uart8250.h"

enum { RBR = 0, THR = 0, DLL = 0, IER = 1, DLM = 1, IIR = 2, FCR = 2,
       LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };

/* What the UART told the outside world. */
struct probe {
    uint8_t tx[64];
    unsigned ntx;
    int irq_calls[64];
    unsigned nirq;
    int level; /* last level reported */
};

static void probe_tx(void *opaque, uint8_t byte)
{
    struct probe *p = opaque;
    assert_true(p->ntx < sizeof(p->tx));
    p->tx[p->ntx++] = byte;
}

static void probe_irq(void *opaque, int level)
{
    struct probe *p = opaque;
    assert_true(p->nirq < sizeof(p->irq_calls) / sizeof(p->irq_calls[0]));
    /* The contract: only called on a change. */
    assert_int_not_equal(level, p->level);
    p->irq_calls[p->nirq++] = level;
    p->level = level;
}

static const struct uart8250_ops probe_ops = {.tx = probe_tx, .set_irq = probe_irq};

struct fixture {
    struct uart8250 u;
    struct probe p;
};

static int setup(void **state)
{
    static struct fixture f;
    memset(&f, 0, sizeof(f));
    uart8250_init(&f.u, &probe_ops, &f.p);
    *state = &f;
    return 0;
}

#define F struct fixture *f = *state; struct uart8250 *u = &f->u; (void)u
#define OUT2 0x08
#define LOOP 0x10

static void test_reset_values(void **state)
{
    F;
    assert_int_equal(uart8250_read(u, IER), 0);
    assert_int_equal(uart8250_read(u, IIR), 0x01);
    assert_int_equal(uart8250_read(u, LCR), 0);
    assert_int_equal(uart8250_read(u, MCR), 0);
    assert_int_equal(uart8250_read(u, LSR), 0x60);
    assert_int_equal(uart8250_read(u, MSR), 0xb0);
    assert_int_equal(uart8250_read(u, SCR), 0);
    assert_int_equal(uart8250_rx_room(u), 1); /* 16450 mode until FCR */
    assert_int_equal(f->p.nirq, 0);
}

static void test_scratch_holds_every_value(void **state)
{
    F;
    for (unsigned v = 0; v < 256; v++) {
        uart8250_write(u, SCR, (uint8_t)v);
        assert_int_equal(uart8250_read(u, SCR), v);
    }
}

static void test_lcr_and_mcr_readback(void **state)
{
    F;
    for (unsigned v = 0; v < 256; v++) {
        uart8250_write(u, LCR, (uint8_t)v);
        assert_int_equal(uart8250_read(u, LCR), v);
        uart8250_write(u, MCR, (uint8_t)v);
        assert_int_equal(uart8250_read(u, MCR), v & 0x1f);
    }
}

/* Linux's first probe step: IER keeps exactly its four low bits. */
static void test_ier_low_nibble_only(void **state)
{
    F;
    uart8250_write(u, IER, 0);
    assert_int_equal(uart8250_read(u, IER) & 0x0f, 0);
    uart8250_write(u, IER, 0x0f);
    assert_int_equal(uart8250_read(u, IER), 0x0f);
    uart8250_write(u, IER, 0xff);
    assert_int_equal(uart8250_read(u, IER), 0x0f);
    uart8250_write(u, IER, 0x40); /* XScale UUE bit: must not stick */
    assert_int_equal(uart8250_read(u, IER), 0);
}

static void test_dlab_divisor_latch(void **state)
{
    F;
    uart8250_write(u, IER, 0x05);
    uart8250_write(u, LCR, 0x83); /* DLAB, 8N1 */
    assert_int_equal(uart8250_read(u, DLL), 1); /* reset divisor */
    assert_int_equal(uart8250_read(u, DLM), 0);
    uart8250_write(u, DLL, 0x0c);
    uart8250_write(u, DLM, 0xa5);
    assert_int_equal(uart8250_read(u, DLL), 0x0c);
    assert_int_equal(uart8250_read(u, DLM), 0xa5);
    assert_int_equal(f->p.ntx, 0); /* a DLL write is not a THR write */
    uart8250_write(u, LCR, 0x03);
    assert_int_equal(uart8250_read(u, IER), 0x05); /* untouched by DLM */
    assert_int_equal(uart8250_read(u, LCR), 0x03);
    uart8250_write(u, THR, 'x');
    assert_int_equal(f->p.ntx, 1);
    uart8250_write(u, LCR, 0x80);
    assert_int_equal(uart8250_read(u, DLL), 0x0c); /* THR write left it */
    assert_int_equal(uart8250_read(u, DLM), 0xa5);
    /* IIR, LCR, MCR, LSR, MSR and SCR do not depend on DLAB. */
    uart8250_write(u, SCR, 0x42);
    assert_int_equal(uart8250_read(u, SCR), 0x42);
    assert_int_equal(uart8250_read(u, LSR), 0x60);
    assert_int_equal(uart8250_read(u, IIR) & 0x0f, 0x01);
}

static void test_transmit_is_instant(void **state)
{
    F;
    const char *msg = "hello";
    for (const char *c = msg; *c; c++) {
        uart8250_write(u, THR, (uint8_t)*c);
        assert_int_equal(uart8250_read(u, LSR) & 0x60, 0x60);
    }
    assert_int_equal(f->p.ntx, 5);
    assert_memory_equal(f->p.tx, msg, 5);
}

static void test_fifo_enable_shows_in_iir(void **state)
{
    F;
    assert_int_equal(uart8250_read(u, IIR) & 0xc0, 0x00);
    uart8250_write(u, FCR, 0x01);
    assert_int_equal(uart8250_read(u, IIR), 0xc1);
    assert_int_equal(uart8250_rx_room(u), UART8250_RX_FIFO);
    uart8250_write(u, FCR, 0x00);
    assert_int_equal(uart8250_read(u, IIR), 0x01);
    /* Without bit 0 the other bits are not programmed. */
    uart8250_write(u, FCR, 0xc6);
    assert_int_equal(uart8250_read(u, IIR), 0x01);
    assert_int_equal(u->s.fcr, 0);
    /* The 16750 64-byte bit (5) never shows up in IIR. */
    uart8250_write(u, FCR, 0x21);
    assert_int_equal(uart8250_read(u, IIR), 0xc1);
    assert_int_equal(u->s.fcr, 0x01);
    /* Reset bits act once and are not kept; DMA mode and trigger are. */
    uart8250_write(u, FCR, 0xcf);
    assert_int_equal(u->s.fcr, 0xc9);
}

static void test_fifo_reset_and_mode_switch_clear_rx(void **state)
{
    F;
    uart8250_write(u, FCR, 0x01);
    assert_int_equal(uart8250_receive(u, (const uint8_t *)"abc", 3), 3);
    uart8250_write(u, FCR, 0x01 | 0x04); /* TX reset only */
    assert_int_equal(uart8250_read(u, LSR) & 0x01, 0x01);
    uart8250_write(u, FCR, 0x01 | 0x02); /* RX reset */
    assert_int_equal(uart8250_read(u, LSR) & 0x01, 0);
    assert_int_equal(uart8250_receive(u, (const uint8_t *)"abc", 3), 3);
    uart8250_write(u, FCR, 0x00); /* to 16450 mode */
    assert_int_equal(uart8250_read(u, LSR) & 0x01, 0);
    assert_int_equal(uart8250_receive(u, (const uint8_t *)"z", 1), 1);
    uart8250_write(u, FCR, 0x01); /* back to FIFO mode */
    assert_int_equal(uart8250_read(u, LSR) & 0x01, 0);
    assert_int_equal(uart8250_receive(u, (const uint8_t *)"q", 1), 1);
    uart8250_write(u, FCR, 0x41); /* FIFO stays on: data kept */
    assert_int_equal(uart8250_read(u, RBR), 'q');
}

static void test_lsr_bits_and_writes_ignored(void **state)
{
    F;
    assert_int_equal(uart8250_read(u, LSR), 0x60);
    uart8250_receive(u, (const uint8_t *)"a", 1);
    assert_int_equal(uart8250_read(u, LSR), 0x61);
    uart8250_write(u, LSR, 0x00);
    uart8250_write(u, MSR, 0x00);
    assert_int_equal(uart8250_read(u, LSR), 0x61);
    assert_int_equal(uart8250_read(u, MSR), 0xb0);
    assert_int_equal(uart8250_read(u, RBR), 'a');
    assert_int_equal(uart8250_read(u, LSR), 0x60);
    assert_int_equal(uart8250_read(u, RBR), 0); /* empty: reads 0, no underflow */
    assert_int_equal(uart8250_read(u, LSR), 0x60);
}

static void test_receive_in_order(void **state)
{
    F;
    uart8250_write(u, FCR, 0x01);
    const uint8_t in[] = "0123456789abcdef";
    /* Wrap the ring a few times. */
    for (int round = 0; round < 3; round++) {
        assert_int_equal(uart8250_receive(u, in, 10), 10);
        for (int i = 0; i < 10; i++)
            assert_int_equal(uart8250_read(u, RBR), in[i]);
    }
}

static void test_rx_fifo_full(void **state)
{
    F;
    uart8250_write(u, FCR, 0x01);
    uint8_t in[20];
    for (unsigned i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)i;
    assert_int_equal(uart8250_receive(u, in, sizeof(in)), UART8250_RX_FIFO);
    assert_int_equal(uart8250_rx_room(u), 0);
    assert_int_equal(uart8250_receive(u, in, 1), 0);
    /* Host input is flow-controlled: no overrun. */
    assert_int_equal(uart8250_read(u, LSR), 0x61);
    assert_int_equal(uart8250_read(u, RBR), 0);
    assert_int_equal(uart8250_rx_room(u), 1);
    assert_int_equal(uart8250_receive(u, in + 16, 4), 1);
    for (unsigned i = 1; i <= 16; i++)
        assert_int_equal(uart8250_read(u, RBR), i);
    assert_int_equal(uart8250_read(u, LSR) & 0x01, 0);
}

static void test_16450_mode_holds_one_byte(void **state)
{
    F;
    assert_int_equal(uart8250_receive(u, (const uint8_t *)"ab", 2), 1);
    assert_int_equal(uart8250_rx_room(u), 0);
    assert_int_equal(uart8250_read(u, RBR), 'a');
    assert_int_equal(uart8250_rx_room(u), 1);
}

/* Linux's loopback test: MCR = LOOP | OUT2 | RTS must read MSR 0x90. */
static void test_loopback_msr_mapping(void **state)
{
    F;
    uart8250_write(u, MCR, LOOP | 0x0a);
    assert_int_equal(uart8250_read(u, MSR) & 0xf0, 0x90);
    static const struct { uint8_t mcr, status; } map[] = {
        {0x01, 0x20}, /* DTR -> DSR */
        {0x02, 0x10}, /* RTS -> CTS */
        {0x04, 0x40}, /* OUT1 -> RI */
        {0x08, 0x80}, /* OUT2 -> DCD */
        {0x0f, 0xf0},
        {0x00, 0x00},
    };
    for (unsigned i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        uart8250_write(u, MCR, LOOP | map[i].mcr);
        assert_int_equal(uart8250_read(u, MSR) & 0xf0, map[i].status);
    }
    uart8250_write(u, MCR, 0x0f); /* out of loopback: the far end again */
    assert_int_equal(uart8250_read(u, MSR) & 0xf0, 0xb0);
}

static void test_msr_delta_bits(void **state)
{
    F;
    uart8250_write(u, MCR, LOOP); /* CTS, DSR, DCD drop */
    assert_int_equal(uart8250_read(u, MSR), 0x0b);
    assert_int_equal(uart8250_read(u, MSR), 0x00); /* read clears deltas */
    uart8250_write(u, MCR, LOOP | 0x04); /* RI rises: no TERI */
    assert_int_equal(uart8250_read(u, MSR), 0x40);
    uart8250_write(u, MCR, LOOP); /* RI falls: TERI */
    assert_int_equal(uart8250_read(u, MSR), 0x04);
    uart8250_write(u, MCR, LOOP | 0x01); /* DSR */
    uart8250_write(u, MCR, LOOP | 0x03); /* CTS */
    assert_int_equal(uart8250_read(u, MSR), 0x30 | 0x03);
    uart8250_write(u, MCR, LOOP | 0x0b); /* DCD */
    assert_int_equal(uart8250_read(u, MSR), 0xb0 | 0x08);
    uart8250_write(u, MCR, LOOP | 0x0b); /* no change: no delta */
    assert_int_equal(uart8250_read(u, MSR), 0xb0);
}

static void test_loopback_data(void **state)
{
    F;
    uart8250_write(u, FCR, 0x01);
    uart8250_write(u, MCR, LOOP);
    assert_int_equal(uart8250_rx_room(u), 0);
    assert_int_equal(uart8250_receive(u, (const uint8_t *)"h", 1), 0); /* SIN cut */
    uart8250_write(u, THR, 0x55);
    uart8250_write(u, THR, 0xaa);
    assert_int_equal(f->p.ntx, 0); /* nothing on the wire */
    assert_int_equal(uart8250_read(u, LSR), 0x61);
    assert_int_equal(uart8250_read(u, RBR), 0x55);
    assert_int_equal(uart8250_read(u, RBR), 0xaa);
    assert_int_equal(uart8250_read(u, LSR), 0x60);
    uart8250_write(u, MCR, 0);
    uart8250_write(u, THR, 'o');
    assert_int_equal(f->p.ntx, 1);
    assert_int_equal(uart8250_read(u, LSR), 0x60);
}

static void test_overrun_in_loopback(void **state)
{
    F;
    uart8250_write(u, FCR, 0x01);
    uart8250_write(u, MCR, LOOP);
    uart8250_write(u, IER, 0x05); /* RDI | RLSI */
    for (unsigned i = 0; i < UART8250_RX_FIFO + 1; i++)
        uart8250_write(u, THR, (uint8_t)(0x10 + i));
    assert_int_equal(uart8250_read(u, IIR), 0xc6); /* line status first */
    assert_int_equal(uart8250_read(u, LSR), 0x63); /* DR | OE */
    assert_int_equal(uart8250_read(u, LSR), 0x61); /* OE cleared by the read */
    assert_int_equal(uart8250_read(u, IIR), 0xc4);
    for (unsigned i = 0; i < UART8250_RX_FIFO; i++)
        assert_int_equal(uart8250_read(u, RBR), 0x10 + i); /* the 17th is lost */
    assert_int_equal(uart8250_read(u, IIR), 0xc1);
}

static void test_overrun_16450_overwrites(void **state)
{
    F;
    uart8250_write(u, MCR, LOOP);
    uart8250_write(u, THR, 'a');
    uart8250_write(u, THR, 'b');
    assert_int_equal(uart8250_read(u, LSR), 0x63);
    assert_int_equal(uart8250_read(u, RBR), 'b');
    assert_int_equal(uart8250_read(u, LSR), 0x60);
}

/* All four sources at once, then cleared one by one, each by its own
 * rule, in priority order. */
static void test_iir_priority_and_clearing(void **state)
{
    F;
    uart8250_write(u, FCR, 0x01);
    uart8250_write(u, MCR, LOOP);
    uart8250_read(u, MSR);
    uart8250_write(u, THR, 'a');
    uart8250_write(u, MCR, LOOP | 0x02); /* DCTS */
    for (unsigned i = 0; i < UART8250_RX_FIFO; i++)
        uart8250_write(u, THR, 'b'); /* the last overruns */
    uart8250_write(u, IER, 0x0f);
    assert_int_equal(uart8250_read(u, IIR), 0xc6);
    assert_int_equal(uart8250_read(u, IIR), 0xc6); /* IIR read does not clear RLS */
    uart8250_read(u, LSR);
    assert_int_equal(uart8250_read(u, IIR), 0xc4);
    /* The THRE hidden behind RDA was not acknowledged by these IIR reads. */
    while (uart8250_read(u, LSR) & 0x01)
        uart8250_read(u, RBR);
    assert_int_equal(uart8250_read(u, IIR), 0xc2);
    assert_int_equal(uart8250_read(u, IIR), 0xc0); /* THRE acked: modem status */
    uart8250_read(u, MSR);
    assert_int_equal(uart8250_read(u, IIR), 0xc1);
}

static void test_rx_trigger_level(void **state)
{
    F;
    uart8250_write(u, FCR, 0x81); /* trigger 8 */
    uart8250_write(u, IER, 0x01);
    uart8250_receive(u, (const uint8_t *)"1234567", 7);
    assert_int_equal(uart8250_read(u, IIR), 0xcc); /* below trigger: timeout */
    uart8250_receive(u, (const uint8_t *)"8", 1);
    assert_int_equal(uart8250_read(u, IIR), 0xc4);
    uart8250_write(u, FCR, 0xc1); /* trigger 14 */
    assert_int_equal(uart8250_read(u, IIR), 0xcc);
    uart8250_write(u, FCR, 0x41); /* trigger 4 */
    assert_int_equal(uart8250_read(u, IIR), 0xc4);
    uart8250_write(u, FCR, 0x01); /* trigger 1 */
    assert_int_equal(uart8250_read(u, IIR), 0xc4);
    uart8250_write(u, FCR, 0x00); /* 16450: plain RDA */
    uart8250_receive(u, (const uint8_t *)"x", 1);
    assert_int_equal(uart8250_read(u, IIR), 0x04);
}

static void test_thre_iir_read_clears_until_thr_write(void **state)
{
    F;
    uart8250_write(u, IER, 0x02);
    assert_int_equal(uart8250_read(u, IIR), 0x02);
    assert_int_equal(uart8250_read(u, IIR), 0x01);
    assert_int_equal(uart8250_read(u, LSR), 0x60); /* still empty, just acked */
    uart8250_write(u, THR, 'a');
    assert_int_equal(uart8250_read(u, IIR), 0x02);
    assert_int_equal(uart8250_read(u, IIR), 0x01);
}

/* Linux's THRE test in serial8250_do_startup: IER=THRI, read IIR, IER=0,
 * IER=THRI again, read IIR: a 16550 reasserts THRE. */
static void test_thre_reasserted_on_ier_enable(void **state)
{
    F;
    uart8250_write(u, IER, 0x02);
    assert_int_equal(uart8250_read(u, IIR) & 0x0f, 0x02);
    uart8250_write(u, IER, 0);
    uart8250_write(u, IER, 0x02);
    assert_int_equal(uart8250_read(u, IIR) & 0x0f, 0x02);
    /* Rewriting IER without a THRI edge does not bring it back. */
    assert_int_equal(uart8250_read(u, IIR) & 0x0f, 0x01);
    uart8250_write(u, IER, 0x03);
    assert_int_equal(uart8250_read(u, IIR) & 0x0f, 0x01);
}

static void test_thre_interrupt_on_ier_write(void **state)
{
    F;
    uart8250_write(u, MCR, OUT2);
    assert_int_equal(f->p.nirq, 0);
    uart8250_write(u, IER, 0x02);
    assert_int_equal(f->p.nirq, 1);
    assert_int_equal(f->p.level, 1);
    uart8250_read(u, IIR);
    assert_int_equal(f->p.nirq, 2);
    assert_int_equal(f->p.level, 0);
}

static void test_thre_interrupt_after_transmit(void **state)
{
    F;
    uart8250_write(u, MCR, OUT2);
    uart8250_write(u, IER, 0x02);
    uart8250_read(u, IIR); /* ack: line low */
    f->p.nirq = 0;
    uart8250_write(u, THR, 'a');
    assert_int_equal(f->p.nirq, 1);
    assert_int_equal(f->p.irq_calls[0], 1);
    /* Writing THR while THRE is still pending acks it and raises it anew:
     * the guest's edge-triggered PIC sees a fresh edge. */
    uart8250_write(u, THR, 'b');
    assert_int_equal(f->p.nirq, 3);
    assert_int_equal(f->p.irq_calls[1], 0);
    assert_int_equal(f->p.irq_calls[2], 1);
    /* Without THRI a transmit leaves the line alone. */
    uart8250_write(u, IER, 0);
    f->p.nirq = 0;
    uart8250_write(u, THR, 'c');
    assert_int_equal(f->p.nirq, 0);
    assert_int_equal(f->p.level, 0);
}

static void test_rx_interrupt(void **state)
{
    F;
    uart8250_write(u, FCR, 0x01);
    uart8250_write(u, MCR, OUT2);
    uart8250_write(u, IER, 0x01);
    assert_int_equal(f->p.nirq, 0);
    uart8250_receive(u, (const uint8_t *)"ab", 2);
    assert_int_equal(f->p.nirq, 1);
    assert_int_equal(f->p.level, 1);
    uart8250_receive(u, (const uint8_t *)"c", 1); /* already high: no call */
    assert_int_equal(f->p.nirq, 1);
    uart8250_read(u, RBR);
    uart8250_read(u, RBR);
    assert_int_equal(f->p.nirq, 1);
    uart8250_read(u, RBR);
    assert_int_equal(f->p.nirq, 2);
    assert_int_equal(f->p.level, 0);
    assert_int_equal(uart8250_receive(u, NULL, 0), 0); /* nothing: no call */
    assert_int_equal(f->p.nirq, 2);
}

static void test_modem_status_interrupt(void **state)
{
    F;
    uart8250_write(u, IER, 0x08);
    /* Loopback pins the line low, but IIR still reports the source. */
    uart8250_write(u, MCR, OUT2 | LOOP);
    assert_int_equal(uart8250_read(u, IIR), 0x00);
    assert_int_equal(f->p.nirq, 0);
    uart8250_read(u, MSR);
    assert_int_equal(uart8250_read(u, IIR), 0x01);
    uart8250_write(u, MCR, OUT2); /* leaving loopback changes CTS/DSR/DCD... */
    assert_int_equal(uart8250_read(u, IIR), 0x00);
    assert_int_equal(f->p.level, 1); /* ...and now the line can rise */
    uart8250_read(u, MSR);
    assert_int_equal(f->p.level, 0);
}

static void test_out2_gates_irq(void **state)
{
    F;
    uart8250_write(u, IER, 0x02);
    assert_int_equal(uart8250_read(u, IER), 0x02);
    assert_int_equal(f->p.nirq, 0); /* pending, but OUT2 clear */
    uart8250_write(u, MCR, OUT2);
    assert_int_equal(f->p.nirq, 1);
    assert_int_equal(f->p.level, 1);
    uart8250_write(u, MCR, 0x03); /* DTR | RTS without OUT2 */
    assert_int_equal(f->p.nirq, 2);
    assert_int_equal(f->p.level, 0);
    uart8250_write(u, MCR, OUT2 | LOOP); /* loopback forces OUT2 inactive */
    assert_int_equal(f->p.nirq, 2);
    uart8250_write(u, MCR, OUT2 | 0x03);
    assert_int_equal(f->p.nirq, 3);
    assert_int_equal(f->p.level, 1);
    /* The gate does not hide the source from IIR. */
    uart8250_write(u, MCR, 0);
    assert_int_equal(uart8250_read(u, IIR), 0x02);
}

static void test_irq_calls_only_on_change(void **state)
{
    F;
    uart8250_write(u, FCR, 0x01);
    uart8250_write(u, MCR, OUT2);
    uart8250_write(u, IER, 0x0f); /* THRE pending: 1 */
    uart8250_receive(u, (const uint8_t *)"xy", 2); /* RDA on top: still 1 */
    uart8250_write(u, IER, 0x0f);
    uart8250_write(u, MCR, OUT2 | 0x03);
    uart8250_read(u, IIR); /* reports RDA, THRE stays */
    uart8250_read(u, RBR);
    uart8250_read(u, RBR); /* RDA gone, THRE left: still 1 */
    uart8250_read(u, LSR);
    assert_int_equal(f->p.nirq, 1);
    uart8250_read(u, IIR); /* THRE acked: 0 */
    uart8250_read(u, IIR);
    uart8250_read(u, MSR);
    uart8250_write(u, SCR, 1);
    assert_int_equal(f->p.nirq, 2);
    assert_int_equal(f->p.irq_calls[0], 1);
    assert_int_equal(f->p.irq_calls[1], 0);
    assert_int_equal(u->s.irq_level, 0);
}

static void test_offsets_out_of_range(void **state)
{
    F;
    uart8250_write(u, FCR, 0x01);
    uart8250_write(u, IER, 0x0f);
    uart8250_receive(u, (const uint8_t *)"abc", 3);
    struct uart8250_state before = u->s;
    struct probe pbefore = f->p;
    for (unsigned off = UART8250_NR_PORTS; off < 300; off++) {
        assert_int_equal(uart8250_read(u, off), 0xff);
        uart8250_write(u, off, 0x5a);
    }
    uart8250_write(u, ~0u, 0);
    assert_int_equal(uart8250_read(u, ~0u), 0xff);
    assert_memory_equal(&before, &u->s, sizeof(before));
    assert_memory_equal(&pbefore, &f->p, sizeof(pbefore));
}

/* The register sequence of Linux's autoconfig() and startup, end to end:
 * it must come out as a 16550A with working THRE and no TXEN bug. */
static void test_linux_autoconfig_sequence(void **state)
{
    F;
    /* IER scratch test. */
    uint8_t scratch = uart8250_read(u, IER);
    uart8250_write(u, IER, 0);
    uint8_t s2 = uart8250_read(u, IER) & 0x0f;
    uart8250_write(u, IER, 0x0f);
    uint8_t s3 = uart8250_read(u, IER) & 0x0f;
    uart8250_write(u, IER, scratch);
    assert_int_equal(s2, 0);
    assert_int_equal(s3, 0x0f);
    /* Loopback test. */
    uint8_t save_mcr = uart8250_read(u, MCR);
    uart8250_write(u, MCR, LOOP | 0x0a);
    assert_int_equal(uart8250_read(u, MSR) & 0xf0, 0x90);
    uart8250_write(u, MCR, save_mcr);
    /* FIFO type: no EFR, IIR bits 7:6 = 11. */
    uart8250_write(u, LCR, 0xbf);
    uart8250_write(u, FCR, 0); /* EFR on a 16650, FCR here */
    uart8250_write(u, LCR, 0);
    uart8250_write(u, FCR, 0x01);
    assert_int_equal(uart8250_read(u, IIR) >> 6, 3);
    uart8250_write(u, LCR, 0xbf);
    assert_int_not_equal(uart8250_read(u, IIR), 0); /* "EFR" reads non-zero */
    uart8250_write(u, LCR, 0);
    uart8250_write(u, FCR, 0x21); /* 16750 64-byte probe */
    assert_int_equal(uart8250_read(u, IIR) & 0xe0, 0xc0);
    /* Startup: clear FIFOs, 8N1, OUT2, THRE test. */
    uart8250_write(u, FCR, 0x01);
    uart8250_write(u, FCR, 0x07);
    uart8250_write(u, FCR, 0);
    uart8250_read(u, LSR);
    uart8250_read(u, RBR);
    uart8250_read(u, IIR);
    uart8250_read(u, MSR);
    assert_int_not_equal(uart8250_read(u, LSR), 0xff);
    uart8250_write(u, LCR, 0x03);
    uart8250_write(u, MCR, OUT2 | 0x03);
    uart8250_write(u, IER, 0x02);
    uint8_t iir1 = uart8250_read(u, IIR);
    uart8250_write(u, IER, 0);
    uart8250_write(u, IER, 0x02);
    uint8_t iir = uart8250_read(u, IIR);
    uart8250_write(u, IER, 0);
    assert_false(!(iir1 & 0x01) && (iir & 0x01)); /* no UART_BUG_THRE */
    uart8250_write(u, IER, 0x02);
    uint8_t lsr = uart8250_read(u, LSR);
    iir = uart8250_read(u, IIR);
    uart8250_write(u, IER, 0);
    assert_false((lsr & 0x40) && (iir & 0x01)); /* no UART_BUG_TXEN */
    assert_int_equal(f->p.level, 0);
}

static void test_null_ops(void **state)
{
    (void)state;
    struct uart8250 u;
    uart8250_init(&u, NULL, NULL);
    uart8250_write(&u, MCR, OUT2);
    uart8250_write(&u, IER, 0x02);
    uart8250_write(&u, THR, 'a');
    assert_int_equal(u.s.irq_level, 1);
    static const struct uart8250_ops none = {0};
    uart8250_init(&u, &none, NULL);
    uart8250_write(&u, MCR, OUT2);
    uart8250_write(&u, IER, 0x02);
    uart8250_write(&u, THR, 'a');
    assert_int_equal(u.s.irq_level, 1);
}

static void test_restore_round_trip(void **state)
{
    F;
    uart8250_write(u, FCR, 0x81);
    uart8250_write(u, MCR, OUT2 | 0x03);
    uart8250_write(u, IER, 0x03);
    uart8250_write(u, SCR, 0x77);
    uart8250_write(u, LCR, 0x80);
    uart8250_write(u, DLL, 0x0c);
    uart8250_write(u, LCR, 0x03);
    uart8250_receive(u, (const uint8_t *)"hello", 5);
    uart8250_read(u, RBR);
    struct uart8250_state saved = u->s;

    struct fixture g;
    memset(&g, 0, sizeof(g));
    uart8250_init(&g.u, &probe_ops, &g.p);
    struct tern_err err = {0};
    assert_int_equal(uart8250_restore(&g.u, &saved, &err), 0);
    assert_memory_equal(&g.u.s, &saved, sizeof(saved));
    assert_int_equal(g.p.nirq, 1); /* the fresh line learns it is high */
    assert_int_equal(g.p.level, 1);
    for (const char *c = "ello"; *c; c++)
        assert_int_equal(uart8250_read(&g.u, RBR), *c);
    assert_int_equal(uart8250_read(&g.u, SCR), 0x77);
}

static void expect_rejected(const struct uart8250_state *bad)
{
    struct uart8250 u;
    struct probe p;
    memset(&p, 0, sizeof(p));
    uart8250_init(&u, &probe_ops, &p);
    struct uart8250_state before = u.s;
    struct tern_err err = {0};
    assert_int_equal(uart8250_restore(&u, bad, &err), -1);
    assert_true(strncmp(err.msg, "uart8250: ", 10) == 0);
    assert_memory_equal(&before, &u.s, sizeof(before));
    assert_int_equal(p.nirq, 0);
}

static void test_restore_rejects_bad_state(void **state)
{
    (void)state;
    struct uart8250 ref;
    uart8250_init(&ref, NULL, NULL);
    uart8250_write(&ref, FCR, 0x01);
    struct uart8250_state bad;

    bad = ref.s, bad.rx_head = UART8250_RX_FIFO;
    expect_rejected(&bad);
    bad = ref.s, bad.rx_count = UART8250_RX_FIFO + 1;
    expect_rejected(&bad);
    bad = ref.s, bad.fcr = 0, bad.rx_count = 2; /* 16450 holds one */
    expect_rejected(&bad);
    bad = ref.s, bad.ier = 0x10;
    expect_rejected(&bad);
    bad = ref.s, bad.mcr = 0x20;
    expect_rejected(&bad);
    bad = ref.s, bad.fcr = 0x07;
    expect_rejected(&bad);
    bad = ref.s, bad.lsr_err = 0x04;
    expect_rejected(&bad);
    bad = ref.s, bad.msr = 0x00; /* far end present outside loopback */
    expect_rejected(&bad);
    bad = ref.s, bad.thre_pending = 1; /* without THRI */
    expect_rejected(&bad);
    bad = ref.s, bad.irq_level = 2;
    expect_rejected(&bad);
}

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

/* Random guest and host traffic, biased to the registers that matter:
 * whatever happens, the state stays one the model can restore, and the
 * line the outside saw is the line the state says. */
static void test_random_traffic_keeps_invariants(void **state)
{
    F;
    static const uint8_t interesting[] = {0x00, 0x01, 0x02, 0x03, 0x08, 0x0a, 0x0b,
                                          0x0f, 0x10, 0x13, 0x1b, 0x41, 0x80, 0xc7, 0xff};
    for (unsigned i = 0; i < 200000; i++) {
        unsigned off = rnd() % 9; /* includes one offset out of range */
        uint8_t v = (rnd() & 1) ? interesting[rnd() % sizeof(interesting)] : (uint8_t)rnd();
        switch (rnd() % 3) {
        case 0:
            uart8250_read(u, off);
            break;
        case 1:
            uart8250_write(u, off, v);
            break;
        default: {
            uint8_t buf[20];
            size_t len = rnd() % sizeof(buf), room = uart8250_rx_room(u);
            memset(buf, v, sizeof(buf));
            assert_int_equal(uart8250_receive(u, buf, len), len < room ? len : room);
            break;
        }
        }
        f->p.ntx = 0;
        f->p.nirq = 0; /* keep the level: probe_irq checks changes */
        struct tern_err err = {0};
        if (uart8250_state_check(&u->s, &err) < 0)
            fail_msg("after %u operations: %s", i, err.msg);
        assert_int_equal(u->s.irq_level, f->p.level);
        /* A restore of this very state reports the same line. */
        struct uart8250 copy;
        uart8250_init(&copy, NULL, NULL);
        assert_int_equal(uart8250_restore(&copy, &u->s, NULL), 0);
        assert_int_equal(copy.s.irq_level, u->s.irq_level);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_reset_values, setup),
        cmocka_unit_test_setup(test_scratch_holds_every_value, setup),
        cmocka_unit_test_setup(test_lcr_and_mcr_readback, setup),
        cmocka_unit_test_setup(test_ier_low_nibble_only, setup),
        cmocka_unit_test_setup(test_dlab_divisor_latch, setup),
        cmocka_unit_test_setup(test_transmit_is_instant, setup),
        cmocka_unit_test_setup(test_fifo_enable_shows_in_iir, setup),
        cmocka_unit_test_setup(test_fifo_reset_and_mode_switch_clear_rx, setup),
        cmocka_unit_test_setup(test_lsr_bits_and_writes_ignored, setup),
        cmocka_unit_test_setup(test_receive_in_order, setup),
        cmocka_unit_test_setup(test_rx_fifo_full, setup),
        cmocka_unit_test_setup(test_16450_mode_holds_one_byte, setup),
        cmocka_unit_test_setup(test_loopback_msr_mapping, setup),
        cmocka_unit_test_setup(test_msr_delta_bits, setup),
        cmocka_unit_test_setup(test_loopback_data, setup),
        cmocka_unit_test_setup(test_overrun_in_loopback, setup),
        cmocka_unit_test_setup(test_overrun_16450_overwrites, setup),
        cmocka_unit_test_setup(test_iir_priority_and_clearing, setup),
        cmocka_unit_test_setup(test_rx_trigger_level, setup),
        cmocka_unit_test_setup(test_thre_iir_read_clears_until_thr_write, setup),
        cmocka_unit_test_setup(test_thre_reasserted_on_ier_enable, setup),
        cmocka_unit_test_setup(test_thre_interrupt_on_ier_write, setup),
        cmocka_unit_test_setup(test_thre_interrupt_after_transmit, setup),
        cmocka_unit_test_setup(test_rx_interrupt, setup),
        cmocka_unit_test_setup(test_modem_status_interrupt, setup),
        cmocka_unit_test_setup(test_out2_gates_irq, setup),
        cmocka_unit_test_setup(test_irq_calls_only_on_change, setup),
        cmocka_unit_test_setup(test_offsets_out_of_range, setup),
        cmocka_unit_test_setup(test_linux_autoconfig_sequence, setup),
        cmocka_unit_test(test_null_ops),
        cmocka_unit_test_setup(test_restore_round_trip, setup),
        cmocka_unit_test(test_restore_rejects_bad_state),
        cmocka_unit_test_setup(test_random_traffic_keeps_invariants, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
