/* The port I/O bus: devices claim port ranges before the vCPUs start; the
 * vCPU threads then look ports up without locking (the bus never changes
 * while they run). */
#ifndef TERN_NODE_VMM_PIO_H
#define TERN_NODE_VMM_PIO_H

#include <stdint.h>

#include "../common/err.h"

#define PIO_BUS_MAX_DEVICES 32

struct pio_device;

struct pio_device_ops {
    /* `data` holds `size` (1, 2 or 4) bytes, little-endian. `offset` is
     * relative to the device's base port. */
    void (*read)(struct pio_device *dev, uint16_t offset, uint8_t *data, unsigned size);
    void (*write)(struct pio_device *dev, uint16_t offset, const uint8_t *data, unsigned size);
};

struct pio_device {
    const char *name;
    uint16_t base;
    uint16_t len;
    const struct pio_device_ops *ops;
    void *opaque;
};

struct pio_bus {
    unsigned nr_devices;
    struct pio_device *devices[PIO_BUS_MAX_DEVICES];
};

/* Adds `dev`; fails if its range is empty, wraps, or overlaps another. */
int pio_bus_register(struct pio_bus *bus, struct pio_device *dev, struct tern_err *err);

/* The device whose range holds `port`, or NULL. */
struct pio_device *pio_bus_find(const struct pio_bus *bus, uint16_t port);

#endif
