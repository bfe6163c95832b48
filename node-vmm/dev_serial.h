/* COM1: the 8250 register model wired to KVM (IRQ line) and to a host
 * backend: stdio, a file (output only) or a unix socket (one client at a
 * time; output is dropped while none is connected). Guest output is written
 * through as it comes, so nothing is lost if the VMM dies. */
#ifndef TERN_NODE_VMM_DEV_SERIAL_H
#define TERN_NODE_VMM_DEV_SERIAL_H

#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <termios.h>

#include "options.h"
#include "pio.h"
#include "uart8250.h"

#define SERIAL_INPUT_RING 4096
#define SERIAL_MAX_POLLFDS 2

struct dev_serial {
    struct pio_device pio;
    pthread_mutex_t lock;
    struct uart8250 uart;
    int vm_fd;     /* for KVM_IRQ_LINE */
    struct serial_spec spec;
    int out_fd;    /* -1: output dropped */
    int in_fd;     /* -1: no input */
    int listen_fd; /* unix backend */
    int client_fd; /* unix backend */
    int restore_tty;
    struct termios saved_tty;
    uint8_t ring[SERIAL_INPUT_RING]; /* host input not yet taken by the UART FIFO */
    unsigned ring_head, ring_count;
    uint64_t tx_bytes, tx_dropped;
};

/* Opens the backend and prepares the device (not yet on a bus). */
int dev_serial_open(struct dev_serial *s, const struct serial_spec *spec, int vm_fd,
                    struct tern_err *err);
void dev_serial_close(struct dev_serial *s);

/* Fills up to SERIAL_MAX_POLLFDS pollfds the main loop should watch;
 * returns how many. */
int dev_serial_pollfds(struct dev_serial *s, struct pollfd *fds);
/* Handles the events on those pollfds. */
void dev_serial_handle(struct dev_serial *s, const struct pollfd *fds, int n);

/* Feeds host input to the guest (used by the backends and tests). */
void dev_serial_input(struct dev_serial *s, const uint8_t *buf, size_t len);

#endif
