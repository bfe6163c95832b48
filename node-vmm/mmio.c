#include "mmio.h"

int mmio_bus_register(struct mmio_bus *bus, struct mmio_device *dev, struct tern_err *err)
{
    if (dev->len == 0 || dev->base + dev->len < dev->base)
        return tern_err_set(err, "device %s: invalid MMIO range 0x%llx+0x%llx", dev->name,
                            (unsigned long long)dev->base, (unsigned long long)dev->len);
    if (bus->nr_devices == MMIO_BUS_MAX_DEVICES)
        return tern_err_set(err, "device %s: MMIO bus is full", dev->name);
    for (unsigned i = 0; i < bus->nr_devices; i++) {
        const struct mmio_device *o = bus->devices[i];
        if (dev->base < o->base + o->len && o->base < dev->base + dev->len)
            return tern_err_set(err, "device %s: MMIO range 0x%llx+0x%llx overlaps %s", dev->name,
                                (unsigned long long)dev->base, (unsigned long long)dev->len,
                                o->name);
    }
    bus->devices[bus->nr_devices++] = dev;
    return 0;
}

struct mmio_device *mmio_bus_find(const struct mmio_bus *bus, uint64_t gpa)
{
    for (unsigned i = 0; i < bus->nr_devices; i++) {
        struct mmio_device *d = bus->devices[i];
        if (gpa >= d->base && gpa - d->base < d->len)
            return d;
    }
    return NULL;
}
