/* MP table parsing; every read stays inside the lengths the table states. */
#include "mptable.h"

#include "bootinfo.h"
#include "lib.h"

#define SCAN_START 0xf0000u
#define SCAN_END 0x100000u
#define CFG_HEADER 44
#define ENTRY_PROCESSOR 0
#define PROC_ENABLED 0x01
#define PROC_BSP 0x02

static int sum_ok(const uint8_t *p, unsigned n)
{
    uint8_t s = 0;
    while (n--)
        s += *p++;
    return s == 0;
}

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
    return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

static const uint8_t *find_config(void)
{
    for (uint32_t pa = SCAN_START; pa < SCAN_END; pa += 16) {
        const uint8_t *fp = phys_ptr(pa);
        if (memcmp(fp, "_MP_", 4))
            continue;
        unsigned len = fp[8] * 16u;
        if (len < 16 || pa + len > SCAN_END || !sum_ok(fp, len))
            continue;
        uint32_t cfg_pa = le32(fp + 4);
        if (!cfg_pa || fp[11]) /* no table, or a "default configuration" */
            return 0;
        const uint8_t *cfg = phys_ptr(cfg_pa);
        if (memcmp(cfg, "PCMP", 4) || le16(cfg + 4) < CFG_HEADER || !sum_ok(cfg, le16(cfg + 4)))
            return 0;
        return cfg;
    }
    return 0;
}

unsigned mptable_cpus(uint8_t *apic_ids, unsigned max)
{
    const uint8_t *cfg = find_config();
    unsigned n = 0;

    if (!cfg)
        return 0;
    const uint8_t *e = cfg + CFG_HEADER, *end = cfg + le16(cfg + 4);
    for (unsigned i = 0, count = le16(cfg + 34); i < count && e < end; i++) {
        unsigned size = e[0] == ENTRY_PROCESSOR ? 20 : 8;
        if (e[0] > 4 || e + size > end)
            break;
        if (e[0] == ENTRY_PROCESSOR && (e[3] & PROC_ENABLED) && n < max) {
            if (e[3] & PROC_BSP) { /* keep the BSP in slot 0 */
                memmove(apic_ids + 1, apic_ids, n);
                apic_ids[0] = e[1];
            } else {
                apic_ids[n] = e[1];
            }
            n++;
        }
        e += size;
    }
    return n;
}
