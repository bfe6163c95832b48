/* Intel MultiProcessor Specification 1.4 tables: how a guest without ACPI
 * (tern offers none) learns its CPUs, its IOAPIC and how ISA interrupts
 * reach the IOAPIC. Linux finds the floating pointer by scanning
 * 0xf0000-0xfffff, so both structures go at TERN_BIOS_START. */
#include "boot.h"
#include "guest_abi.h"

#include <string.h>

#define MP_SPEC_REV 4 /* 1.4 */
#define MP_LAPIC_GPA 0xfee00000u
#define MP_IOAPIC_GPA 0xfec00000u
#define MP_LAPIC_VERSION 0x14  /* what KVM's in-kernel LAPIC reports */
#define MP_IOAPIC_VERSION 0x11 /* KVM's 24-pin IOAPIC */
#define MP_ISA_BUS 0
#define MP_ISA_IRQS 16

enum mp_entry_type { MP_PROCESSOR = 0, MP_BUS = 1, MP_IOAPIC = 2, MP_IOINT = 3, MP_LINT = 4 };
enum mp_int_type { MP_INT = 0, MP_NMI = 1, MP_EXTINT = 3 };
#define MP_CPU_ENABLED 0x01
#define MP_CPU_BSP 0x02
#define MP_IOAPIC_ENABLED 0x01

struct mp_floating {
    char signature[4]; /* "_MP_" */
    uint32_t config_gpa;
    uint8_t length;    /* in 16-byte units */
    uint8_t spec_rev;
    uint8_t checksum;
    uint8_t features[5]; /* feature1 = 0: a configuration table is present */
} __attribute__((packed));

struct mp_config {
    char signature[4]; /* "PCMP" */
    uint16_t length;   /* base table, header included */
    uint8_t spec_rev;
    uint8_t checksum;
    char oem_id[8];
    char product_id[12];
    uint32_t oem_table_gpa;
    uint16_t oem_table_size;
    uint16_t entry_count;
    uint32_t lapic_gpa;
    uint16_t ext_length;
    uint8_t ext_checksum;
    uint8_t reserved;
} __attribute__((packed));

struct mp_processor {
    uint8_t type;
    uint8_t lapic_id;
    uint8_t lapic_version;
    uint8_t flags;
    uint32_t signature; /* CPUID.1 EAX; informational only */
    uint32_t features;  /* CPUID.1 EDX; informational only */
    uint32_t reserved[2];
} __attribute__((packed));

struct mp_bus {
    uint8_t type;
    uint8_t bus_id;
    char bus_type[6]; /* "ISA   " */
} __attribute__((packed));

struct mp_ioapic {
    uint8_t type;
    uint8_t id;
    uint8_t version;
    uint8_t flags;
    uint32_t gpa;
} __attribute__((packed));

/* I/O and local interrupt assignment entries share this layout. */
struct mp_irq {
    uint8_t type;
    uint8_t irq_type;
    uint16_t flags; /* 0: polarity and trigger conform to the bus (ISA: edge, high) */
    uint8_t src_bus;
    uint8_t src_irq;
    uint8_t dst_id;  /* IOAPIC id, or 0xff for all local APICs */
    uint8_t dst_pin; /* IOAPIC INTIN, or LINT0/1 */
} __attribute__((packed));

_Static_assert(sizeof(struct mp_floating) == 16, "MP floating pointer is 16 bytes");
_Static_assert(sizeof(struct mp_config) == 44, "MP configuration table header is 44 bytes");
_Static_assert(sizeof(struct mp_processor) == 20, "MP processor entry is 20 bytes");
_Static_assert(sizeof(struct mp_bus) == 8 && sizeof(struct mp_ioapic) == 8 &&
                   sizeof(struct mp_irq) == 8, "MP bus/IOAPIC/interrupt entries are 8 bytes");

/* ISA IRQ 2 is the PIC cascade and has no IOAPIC source of its own: IRQ 0
 * (the PIT) is wired to pin 2, like real chipsets, so IRQ 2 gets no entry. */
#define MP_NR_IOINTS (MP_ISA_IRQS - 1)
#define MP_NR_LINTS 2
#define MP_MAX_BYTES                                                                        \
    (sizeof(struct mp_floating) + sizeof(struct mp_config) +                                \
     BOOT_MAX_VCPUS * sizeof(struct mp_processor) + sizeof(struct mp_bus) +                 \
     sizeof(struct mp_ioapic) + (MP_NR_IOINTS + MP_NR_LINTS) * sizeof(struct mp_irq))
_Static_assert(TERN_BIOS_START + MP_MAX_BYTES <= 0x100000, "MP table fits below 1 MiB");

static uint8_t mp_checksum(const uint8_t *p, size_t len)
{
    uint8_t sum = 0;
    for (size_t i = 0; i < len; i++)
        sum = (uint8_t)(sum + p[i]);
    return (uint8_t)(0 - sum); /* the value that makes the bytes sum to zero */
}

/* Appends `len` bytes at *cur; the caller sized the area for all entries. */
static void mp_put(uint8_t **cur, const void *entry, size_t len)
{
    memcpy(*cur, entry, len);
    *cur += len;
}

static void mp_put_entries(uint8_t **cur, unsigned nr_vcpus)
{
    for (unsigned i = 0; i < nr_vcpus; i++) {
        struct mp_processor cpu = {
            .type = MP_PROCESSOR,
            .lapic_id = (uint8_t)i,
            .lapic_version = MP_LAPIC_VERSION,
            .flags = MP_CPU_ENABLED | (i == 0 ? MP_CPU_BSP : 0),
            .signature = 0x600,  /* family 6 */
            .features = 0x201,   /* FPU, APIC */
        };
        mp_put(cur, &cpu, sizeof(cpu));
    }
    struct mp_bus bus = {.type = MP_BUS, .bus_id = MP_ISA_BUS, .bus_type = "ISA   "};
    mp_put(cur, &bus, sizeof(bus));
    uint8_t ioapic_id = (uint8_t)nr_vcpus; /* just above the APIC ids */
    struct mp_ioapic ioapic = {.type = MP_IOAPIC, .id = ioapic_id,
                               .version = MP_IOAPIC_VERSION, .flags = MP_IOAPIC_ENABLED,
                               .gpa = MP_IOAPIC_GPA};
    mp_put(cur, &ioapic, sizeof(ioapic));
    for (unsigned irq = 0; irq < MP_ISA_IRQS; irq++) {
        if (irq == 2)
            continue;
        struct mp_irq e = {.type = MP_IOINT, .irq_type = MP_INT, .src_bus = MP_ISA_BUS,
                           .src_irq = (uint8_t)irq, .dst_id = ioapic_id,
                           .dst_pin = (uint8_t)(irq == 0 ? 2 : irq)};
        mp_put(cur, &e, sizeof(e));
    }
    /* The PIC's output reaches every CPU's LINT0 as ExtINT; NMI arrives on
     * LINT1: the virtual-wire wiring Linux expects. */
    struct mp_irq extint = {.type = MP_LINT, .irq_type = MP_EXTINT, .src_bus = MP_ISA_BUS,
                            .dst_id = 0xff, .dst_pin = 0};
    struct mp_irq nmi = {.type = MP_LINT, .irq_type = MP_NMI, .src_bus = MP_ISA_BUS,
                         .dst_id = 0xff, .dst_pin = 1};
    mp_put(cur, &extint, sizeof(extint));
    mp_put(cur, &nmi, sizeof(nmi));
}

int mptable_write(struct guest_memory *gm, unsigned nr_vcpus, struct tern_err *err)
{
    if (nr_vcpus < 1 || nr_vcpus > BOOT_MAX_VCPUS)
        return tern_err_set(err, "%u vCPUs cannot be described in an MP table (1 to %d)",
                            nr_vcpus, BOOT_MAX_VCPUS);
    size_t entries_len = nr_vcpus * sizeof(struct mp_processor) + sizeof(struct mp_bus) +
                         sizeof(struct mp_ioapic) +
                         (MP_NR_IOINTS + MP_NR_LINTS) * sizeof(struct mp_irq);
    size_t total = sizeof(struct mp_floating) + sizeof(struct mp_config) + entries_len;
    uint8_t *base = guest_memory_ptr(gm, TERN_BIOS_START, total);
    if (!base)
        return tern_err_set(err, "guest RAM does not cover the MP table at 0x%llx",
                            TERN_BIOS_START);

    uint8_t *cfg = base + sizeof(struct mp_floating);
    uint8_t *cur = cfg + sizeof(struct mp_config);
    mp_put_entries(&cur, nr_vcpus);

    struct mp_config hdr = {
        .signature = "PCMP",
        .length = (uint16_t)(sizeof(hdr) + entries_len),
        .spec_rev = MP_SPEC_REV,
        .oem_id = "TERN    ",
        .product_id = "TERN-VMM    ",
        .entry_count = (uint16_t)(nr_vcpus + 2 + MP_NR_IOINTS + MP_NR_LINTS),
        .lapic_gpa = MP_LAPIC_GPA,
    };
    memcpy(cfg, &hdr, sizeof(hdr));
    cfg[offsetof(struct mp_config, checksum)] = mp_checksum(cfg, hdr.length);

    struct mp_floating fp = {
        .signature = "_MP_",
        .config_gpa = (uint32_t)(TERN_BIOS_START + sizeof(fp)),
        .length = 1,
        .spec_rev = MP_SPEC_REV,
    };
    fp.checksum = mp_checksum((const uint8_t *)&fp, sizeof(fp));
    memcpy(base, &fp, sizeof(fp));
    return 0;
}
