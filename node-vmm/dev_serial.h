/* COM1: the 8250 register model wired to KVM (IRQ line) and to a host
 * backend: stdio, a file (output only) or a unix socket (one client at a
 * time; output is dropped while none is connected). Guest output is written
 * through as it comes, so nothing is lost if the VMM dies. */
#ifndef TERN_NODE_VMM_DEV_SERIAL_H
#define TERN_NODE_VMM_DEV_SERIAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <termios.h>

#include "../common/loop.h"
#include "options.h"
#include "pio.h"
#include "uart8250.h"

#define SERIAL_INPUT_RING 4096

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
    /* The main loop's side (dev_serial_attach): input fds watched there. */
    struct loop *loop;
    int watched_in;     /* in_fd as registered with the loop, -1 if none */
    uint64_t in_timer;  /* input that epoll cannot watch (a regular file) */
};

/* Opens the backend and prepares the device (not yet on a bus). */
int dev_serial_open(struct dev_serial *s, const struct serial_spec *spec, int vm_fd,
                    struct tern_err *err);
void dev_serial_close(struct dev_serial *s);

/* Host input from now on comes through `l` (common/loop.h): the unix
 * backend's listening socket and its client, or stdin. Input epoll cannot
 * watch (stdin from a regular file or /dev/null) is read on a timer. */
int dev_serial_attach(struct dev_serial *s, struct loop *l, struct tern_err *err);
/* Forgets the loop (before dev_serial_close, while the loop exists). */
void dev_serial_detach(struct dev_serial *s);

/* Feeds host input to the guest (used by the backends and tests). */
void dev_serial_input(struct dev_serial *s, const uint8_t *buf, size_t len);

#endif
