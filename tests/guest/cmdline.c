/* Command-line parsing. */
#include "cmdline.h"

#include "kernel.h"
#include "lib.h"

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

static int apply(const char *w, size_t n, struct tg_params *p)
{
    size_t eq = 0;
    while (eq < n && w[eq] != '=')
        eq++;
    if (eq == n)
        return -1;
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
