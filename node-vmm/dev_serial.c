#include "dev_serial.h"
#include "guest_abi.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../common/unix_addr.h"

/* Moves ring bytes into the UART FIFO. Caller holds the lock. */
static void serial_refill(struct dev_serial *s)
{
    while (s->ring_count > 0) {
        size_t room = uart8250_rx_room(&s->uart);
        if (room == 0)
            return;
        uint8_t byte = s->ring[s->ring_head];
        if (uart8250_receive(&s->uart, &byte, 1) != 1)
            return;
        s->ring_head = (s->ring_head + 1) % SERIAL_INPUT_RING;
        s->ring_count--;
    }
}

static void serial_tx(void *opaque, uint8_t byte)
{
    struct dev_serial *s = opaque;
    s->tx_bytes++;
    if (s->out_fd < 0) {
        s->tx_dropped++;
        return;
    }
    for (;;) {
        ssize_t n = write(s->out_fd, &byte, 1);
        if (n == 1)
            return;
        if (n < 0 && errno == EINTR)
            continue;
        /* A slow or gone reader must not stall the vCPU: drop the byte. */
        s->tx_dropped++;
        return;
    }
}

static void serial_set_irq(void *opaque, int level)
{
    struct dev_serial *s = opaque;
    struct kvm_irq_level irq = {.irq = TERN_COM1_IRQ, .level = (uint32_t)level};
    if (s->vm_fd >= 0 && ioctl(s->vm_fd, KVM_IRQ_LINE, &irq) < 0)
        fprintf(stderr, "tern-vmm: serial: KVM_IRQ_LINE failed: %s\n", strerror(errno));
}

static const struct uart8250_ops serial_uart_ops = {
    .tx = serial_tx,
    .set_irq = serial_set_irq,
};

static void serial_pio_read(struct pio_device *dev, uint16_t offset, uint8_t *data, unsigned size)
{
    struct dev_serial *s = dev->opaque;
    memset(data, 0, size);
    pthread_mutex_lock(&s->lock);
    data[0] = uart8250_read(&s->uart, offset);
    if (offset == 0)
        serial_refill(s);
    pthread_mutex_unlock(&s->lock);
}

static void serial_pio_write(struct pio_device *dev, uint16_t offset, const uint8_t *data,
                             unsigned size)
{
    (void)size;
    struct dev_serial *s = dev->opaque;
    pthread_mutex_lock(&s->lock);
    uart8250_write(&s->uart, offset, data[0]);
    /* Enabling the FIFO or leaving loopback can make room for input. */
    serial_refill(s);
    pthread_mutex_unlock(&s->lock);
}

static const struct pio_device_ops serial_pio_ops = {
    .read = serial_pio_read,
    .write = serial_pio_write,
};

static int serial_open_unix(struct dev_serial *s, const char *path, struct tern_err *err)
{
    struct sockaddr_un addr;
    if (unix_addr_fill(&addr, path, "serial socket", err) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return tern_err_errno(err, errno, "serial: creating unix socket");
    if (unlink(path) < 0 && errno != ENOENT) {
        int e = errno;
        close(fd);
        return tern_err_errno(err, e, "serial: removing stale socket %s", path);
    }
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 1) < 0) {
        int e = errno;
        close(fd);
        return tern_err_errno(err, e, "serial: listening on %s", path);
    }
    s->listen_fd = fd;
    return 0;
}

int dev_serial_open(struct dev_serial *s, const struct serial_spec *spec, int vm_fd,
                    struct tern_err *err)
{
    memset(s, 0, sizeof(*s));
    s->vm_fd = vm_fd;
    s->spec = *spec;
    s->out_fd = s->in_fd = s->listen_fd = s->client_fd = s->watched_in = -1;
    pthread_mutex_init(&s->lock, NULL);
    uart8250_init(&s->uart, &serial_uart_ops, s);
    s->pio = (struct pio_device){
        .name = "serial-com1", .base = TERN_COM1_PORT, .len = 8, .ops = &serial_pio_ops,
        .opaque = s};

    switch (spec->kind) {
    case SERIAL_STDIO:
        s->out_fd = STDOUT_FILENO;
        s->in_fd = STDIN_FILENO;
        if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &s->saved_tty) == 0) {
            /* Raw input for the guest console, but keep ^C as a signal so an
             * operator can always stop the VMM. */
            struct termios raw = s->saved_tty;
            raw.c_iflag &= ~(unsigned)(ICRNL | IXON | INLCR | IGNCR);
            raw.c_lflag &= ~(unsigned)(ICANON | ECHO | IEXTEN);
            raw.c_cc[VMIN] = 1;
            raw.c_cc[VTIME] = 0;
            if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0)
                s->restore_tty = 1;
        }
        return 0;
    case SERIAL_FILE:
        s->out_fd = open(spec->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_APPEND, 0644);
        if (s->out_fd < 0)
            return tern_err_errno(err, errno, "serial: cannot open output file %s", spec->path);
        return 0;
    case SERIAL_UNIX:
        return serial_open_unix(s, spec->path, err);
    }
    return tern_err_set(err, "serial: unknown backend");
}

void dev_serial_close(struct dev_serial *s)
{
    if (s->restore_tty)
        tcsetattr(STDIN_FILENO, TCSANOW, &s->saved_tty);
    if (s->spec.kind == SERIAL_FILE && s->out_fd >= 0)
        close(s->out_fd);
    if (s->client_fd >= 0)
        close(s->client_fd);
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
        unlink(s->spec.path);
    }
    s->out_fd = s->in_fd = s->listen_fd = s->client_fd = -1;
    pthread_mutex_destroy(&s->lock);
}

void dev_serial_input(struct dev_serial *s, const uint8_t *buf, size_t len)
{
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < len && s->ring_count < SERIAL_INPUT_RING; i++) {
        s->ring[(s->ring_head + s->ring_count) % SERIAL_INPUT_RING] = buf[i];
        s->ring_count++;
    }
    serial_refill(s);
    pthread_mutex_unlock(&s->lock);
}

static void serial_unwatch_in(struct dev_serial *s)
{
    if (s->loop && s->watched_in >= 0)
        loop_del_fd(s->loop, s->watched_in);
    if (s->loop)
        loop_del_timer(s->loop, s->in_timer);
    s->watched_in = -1;
    s->in_timer = 0;
}

static void serial_drop_client(struct dev_serial *s)
{
    serial_unwatch_in(s);
    pthread_mutex_lock(&s->lock);
    close(s->client_fd);
    s->client_fd = s->in_fd = s->out_fd = -1;
    pthread_mutex_unlock(&s->lock);
}

/* Reads what input there is; false at its end (stdin: stop watching; a
 * client: forget it). */
static bool serial_read_in(struct dev_serial *s)
{
    uint8_t buf[256];
    ssize_t r = read(s->in_fd, buf, sizeof(buf));
    if (r > 0) {
        dev_serial_input(s, buf, (size_t)r);
        return true;
    }
    if (r < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (s->client_fd >= 0 && s->in_fd == s->client_fd) {
        serial_drop_client(s);
    } else {
        serial_unwatch_in(s);
        s->in_fd = -1;
    }
    return false;
}

static void on_serial_in(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)l;
    (void)fd;
    (void)events;
    serial_read_in(opaque);
}

static void on_serial_in_timer(struct loop *l, void *opaque)
{
    struct dev_serial *s = opaque;
    s->in_timer = 0;
    if (s->in_fd >= 0 && serial_read_in(s) && s->in_fd >= 0)
        s->in_timer = loop_add_timer(l, 10, on_serial_in_timer, s);
}

static void serial_watch_in(struct dev_serial *s)
{
    struct tern_err err;
    if (s->in_fd < 0 || !s->loop)
        return;
    if (loop_add_fd(s->loop, s->in_fd, LOOP_READ, on_serial_in, s, &err) == 0) {
        s->watched_in = s->in_fd;
        return;
    }
    /* EPERM: a regular file (or /dev/null), always "ready": read it in
     * small steps so that it cannot hold the loop. */
    s->in_timer = loop_add_timer(s->loop, 0, on_serial_in_timer, s);
}

static void on_serial_listen(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)l;
    (void)events;
    struct dev_serial *s = opaque;
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0)
        return;
    if (s->client_fd >= 0)
        serial_drop_client(s); /* the newest client wins */
    pthread_mutex_lock(&s->lock);
    s->client_fd = s->in_fd = s->out_fd = c;
    pthread_mutex_unlock(&s->lock);
    serial_watch_in(s);
}

int dev_serial_attach(struct dev_serial *s, struct loop *l, struct tern_err *err)
{
    s->loop = l;
    s->watched_in = -1;
    if (s->listen_fd >= 0 && loop_add_fd(l, s->listen_fd, LOOP_READ, on_serial_listen, s, err) < 0)
        return tern_err_prefix(err, "serial: watching %s", s->spec.path);
    serial_watch_in(s);
    return 0;
}

void dev_serial_detach(struct dev_serial *s)
{
    if (!s->loop)
        return;
    serial_unwatch_in(s);
    if (s->listen_fd >= 0)
        loop_del_fd(s->loop, s->listen_fd);
    s->loop = NULL;
}
