/* The MMIO bus: like pio.h, for guest-physical address ranges in the MMIO
 * hole. Devices register before the vCPUs start; lookups are lock-free. */
#ifndef TERN_NODE_VMM_MMIO_H
#define TERN_NODE_VMM_MMIO_H

#include <stdint.h>

#include "../common/err.h"

#define MMIO_BUS_MAX_DEVICES 16

struct mmio_device;

struct mmio_device_ops {
    /* `data` holds `size` (1, 2, 4 or 8) bytes, little-endian; `offset` is
     * relative to the device's base. */
    void (*read)(struct mmio_device *dev, uint64_t offset, uint8_t *data, unsigned size);
    void (*write)(struct mmio_device *dev, uint64_t offset, const uint8_t *data, unsigned size);
};

struct mmio_device {
    const char *name;
    uint64_t base;
    uint64_t len;
    const struct mmio_device_ops *ops;
    void *opaque;
};

struct mmio_bus {
    unsigned nr_devices;
    struct mmio_device *devices[MMIO_BUS_MAX_DEVICES];
};

int mmio_bus_register(struct mmio_bus *bus, struct mmio_device *dev, struct tern_err *err);
struct mmio_device *mmio_bus_find(const struct mmio_bus *bus, uint64_t gpa);

#endif
