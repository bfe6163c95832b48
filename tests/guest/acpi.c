/* Just enough ACPI to count processors. Every table is checksummed and
 * every read stays inside the length the table states. */
#include "acpi.h"

#include "bootinfo.h"
#include "lib.h"

#define SDT_HEADER 36
#define MADT_ENTRIES 44
#define MADT_LAPIC 0
#define LAPIC_ENABLED 0x1
#define TABLE_MAX (1u << 20)       /* sanity bound on a table's length */
#define PHYS_LIMIT (16ull << 30)   /* the guest's identity map */

static int sum_ok(const uint8_t *p, uint32_t n)
{
    uint8_t s = 0;
    while (n--)
        s += *p++;
    return s == 0;
}

static uint32_t le32(const uint8_t *p)
{
    return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* A checksummed table with signature sig at pa, or NULL. */
static const uint8_t *sdt(uint64_t pa, const char *sig)
{
    if (!pa || pa + SDT_HEADER > PHYS_LIMIT)
        return 0;
    const uint8_t *t = phys_ptr(pa);
    uint32_t len = le32(t + 4);
    if (memcmp(t, sig, 4) || len < SDT_HEADER || len > TABLE_MAX || pa + len > PHYS_LIMIT ||
        !sum_ok(t, len))
        return 0;
    return t;
}

static const uint8_t *find_rsdp(uint64_t pa)
{
    if (pa) {
        const uint8_t *r = phys_ptr(pa);
        return pa + 20 <= PHYS_LIMIT && !memcmp(r, "RSD PTR ", 8) && sum_ok(r, 20) ? r : 0;
    }
    for (pa = 0xe0000; pa < 0x100000; pa += 16) {
        const uint8_t *r = phys_ptr(pa);
        if (!memcmp(r, "RSD PTR ", 8) && sum_ok(r, 20))
            return r;
    }
    return 0;
}

static const uint8_t *find_madt(const uint8_t *rsdp)
{
    const uint8_t *root = 0;
    unsigned width = 4;

    /* ACPI 2.0+: prefer the XSDT (64-bit entries) when it checks out. */
    if (rsdp[15] >= 2 && sum_ok(rsdp, 36) && (root = sdt(le64(rsdp + 24), "XSDT")))
        width = 8;
    else
        root = sdt(le32(rsdp + 16), "RSDT");
    if (!root)
        return 0;
    for (uint32_t off = SDT_HEADER; off + width <= le32(root + 4); off += width) {
        uint64_t pa = width == 8 ? le64(root + off) : le32(root + off);
        const uint8_t *t = sdt(pa, "APIC");
        if (t)
            return t;
    }
    return 0;
}

unsigned acpi_madt_cpus(uint64_t rsdp_pa, uint8_t bsp_id, uint8_t *apic_ids, unsigned max)
{
    const uint8_t *rsdp = find_rsdp(rsdp_pa);
    const uint8_t *madt = rsdp ? find_madt(rsdp) : 0;
    unsigned n = 0;

    if (!madt || le32(madt + 4) < MADT_ENTRIES)
        return 0;
    const uint8_t *e = madt + MADT_ENTRIES, *end = madt + le32(madt + 4);
    while (e + 2 <= end && e[1] >= 2 && e + e[1] <= end) {
        if (e[0] == MADT_LAPIC && e[1] >= 8 && (le32(e + 4) & LAPIC_ENABLED) && n < max) {
            if (e[3] == bsp_id) { /* keep the BSP in slot 0 */
                memmove(apic_ids + 1, apic_ids, n);
                apic_ids[0] = e[3];
            } else {
                apic_ids[n] = e[3];
            }
            n++;
        }
        e += e[1];
    }
    return n;
}
