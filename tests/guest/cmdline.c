/* Command-line parsing. */
#include "cmdline.h"

#include "kernel.h"
#include "lib.h"
#include "tern_guest.h"

#define VIRTIO_MMIO_KEY "virtio_mmio.device"
#define VIRTIO_MMIO_MIN_SIZE 0x200 /* registers and the block config */

static const struct key {
    const char *name;
    size_t offset;
    uint64_t min, max;
} keys[] = {
    {"fill", offsetof(struct tg_params, fill_mb), 0, 16384},
    {"dirty", offsetof(struct tg_params, dirty_mbs), 0, 10000},
    {"hb", offsetof(struct tg_params, hb_us), 0, 60000000},
    {"check", offsetof(struct tg_params, check_ms), 0, 3600000},
    {"tick", offsetof(struct tg_params, tick_us), 20, 1000000},
    {"status", offsetof(struct tg_params, status_ms), 0, 3600000},
    {"exit_after", offsetof(struct tg_params, exit_after_s), 0, 100000000},
    {"exit_code", offsetof(struct tg_params, exit_code), 0, 255},
    {"tsc_khz", offsetof(struct tg_params, tsc_khz), 1000, 100000000},
    {"cpus", offsetof(struct tg_params, cpus), 1, TG_MAX_CPUS},
    {"seed", offsetof(struct tg_params, seed), 0, UINT64_MAX},
    {"disk", offsetof(struct tg_params, disk), 0, 1},
    {"disk_rate", offsetof(struct tg_params, disk_rate), 0, 100000},
};

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Parses s[0..n) as decimal or 0x-hex without overflow. */
static int parse_u64(const char *s, size_t n, uint64_t *out)
{
    unsigned base = 10;
    uint64_t v = 0;

    if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
        n -= 2;
    }
    if (!n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (base == 16 && c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (base == 16 && c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return -1;
        if (v > (UINT64_MAX - d) / base)
            return -1;
        v = v * base + d;
    }
    *out = v;
    return 0;
}

/* Parses the longest number at s[0..n) the way Linux's memparse() does
 * (0x hex, 0 octal, else decimal; then an optional K/M/G suffix when
 * `suffix`). Returns the characters used, 0 if none or on overflow. */
static size_t parse_mem(const char *s, size_t n, int suffix, uint64_t *out)
{
    unsigned base = 10;
    size_t i = 0, digits = 0;
    uint64_t v = 0;

    if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        i = 2;
    } else if (n > 1 && s[0] == '0') {
        base = 8;
    }
    for (; i < n; i++, digits++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            break;
        if (d >= base)
            break;
        if (v > (UINT64_MAX - d) / base)
            return 0;
        v = v * base + d;
    }
    if (!digits)
        return 0;
    if (suffix && i < n) {
        unsigned shift = 0;
        switch (s[i]) {
        case 'k':
        case 'K':
            shift = 10;
            break;
        case 'm':
        case 'M':
            shift = 20;
            break;
        case 'g':
        case 'G':
            shift = 30;
            break;
        }
        if (shift) {
            if (v > UINT64_MAX >> shift)
                return 0;
            v <<= shift;
            i++;
        }
    }
    *out = v;
    return i;
}

/* SIZE@BASE:IRQ[:ID], as in Linux's virtio_mmio driver. The window must
 * lie in the 3-4 GiB MMIO hole (mapped uncached for the guest) and hold
 * at least the registers and the block device's configuration. */
static int apply_virtio_mmio(const char *v, size_t n, struct tg_params *p)
{
    uint64_t size, base, irq, id;
    size_t k, at = 0;

    if (!(k = parse_mem(v, n, 1, &size)) || (at += k) >= n || v[at++] != '@')
        return -1;
    if (!(k = parse_mem(v + at, n - at, 1, &base)) || (at += k) >= n || v[at++] != ':')
        return -1;
    if (!(k = parse_mem(v + at, n - at, 0, &irq)))
        return -1;
    at += k;
    if (at < n && (v[at++] != ':' || !(k = parse_mem(v + at, n - at, 0, &id)) ||
                   (at += k) != n))
        return -1;
    if (size < VIRTIO_MMIO_MIN_SIZE || base < TERN_MMIO_HOLE_START ||
        base >= TERN_HIGH_RAM_START || size > TERN_HIGH_RAM_START - base)
        return -1;
    if (!p->virtio_count++) {
        p->virtio_base = base;
        p->virtio_size = size;
        p->virtio_irq = irq;
    }
    return 0;
}

static int apply(const char *w, size_t n, struct tg_params *p)
{
    size_t eq = 0;
    while (eq < n && w[eq] != '=')
        eq++;
    if (eq == n)
        return -1;
    if (eq == strlen(VIRTIO_MMIO_KEY) && !memcmp(w, VIRTIO_MMIO_KEY, eq))
        return apply_virtio_mmio(w + eq + 1, n - eq - 1, p);
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        if (strlen(keys[k].name) != eq || memcmp(keys[k].name, w, eq))
            continue;
        uint64_t v;
        if (parse_u64(w + eq + 1, n - eq - 1, &v) || v < keys[k].min || v > keys[k].max)
            return -1;
        *(uint64_t *)((char *)p + keys[k].offset) = v;
        return 0;
    }
    return -1;
}

int params_parse(const char *cmdline, struct tg_params *p, char *bad, size_t badsize)
{
    *p = (struct tg_params){
        .hb_us = 1000,
        .check_ms = 1000,
        .tick_us = 1000,
        .status_ms = 1000,
        .seed = 1,
        .disk_rate = 20,
    };
    for (const char *s = cmdline; *s;) {
        while (is_space(*s))
            s++;
        size_t n = 0;
        while (s[n] && !is_space(s[n]))
            n++;
        if (n && apply(s, n, p)) {
            size_t m = n < badsize - 1 ? n : badsize - 1;
            memcpy(bad, s, m);
            bad[m] = '\0';
            return -1;
        }
        s += n;
    }
    return 0;
}
