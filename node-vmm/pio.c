#include "pio.h"

int pio_bus_register(struct pio_bus *bus, struct pio_device *dev, struct tern_err *err)
{
    if (dev->len == 0 || (uint32_t)dev->base + dev->len > 0x10000)
        return tern_err_set(err, "device %s: invalid port range 0x%x+%u", dev->name, dev->base,
                            dev->len);
    if (bus->nr_devices == PIO_BUS_MAX_DEVICES)
        return tern_err_set(err, "device %s: port I/O bus is full", dev->name);
    for (unsigned i = 0; i < bus->nr_devices; i++) {
        const struct pio_device *o = bus->devices[i];
        if (dev->base < o->base + o->len && o->base < dev->base + dev->len)
            return tern_err_set(err, "device %s: ports 0x%x-0x%x overlap %s (0x%x-0x%x)",
                                dev->name, dev->base, dev->base + dev->len - 1, o->name, o->base,
                                o->base + o->len - 1);
    }
    bus->devices[bus->nr_devices++] = dev;
    return 0;
}

struct pio_device *pio_bus_find(const struct pio_bus *bus, uint16_t port)
{
    for (unsigned i = 0; i < bus->nr_devices; i++) {
        struct pio_device *d = bus->devices[i];
        if (port >= d->base && port - d->base < d->len)
            return d;
    }
    return NULL;
}
