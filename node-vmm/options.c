#include "options.h"
#include "../common/api_limits.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* tern-vmm runs whatever VM the cluster's API lets a client define. */
_Static_assert(TERN_VM_VCPUS_MAX <= VMM_MAX_VCPUS && TERN_VM_DISKS_MAX <= VMM_MAX_DISKS &&
                   TERN_VM_MEM_MIN_MIB >= 16 && TERN_VM_MEM_MAX_MIB <= (1u << 20),
               "common/api_limits.h allows VMs that tern-vmm cannot run");

int parse_size(const char *s, uint64_t *out, struct tern_err *err)
{
    if (!s || !*s)
        return tern_err_set(err, "empty size; expected a number with an optional K, M, G or T suffix");
    if (*s == '-' || *s == '+' || *s == ' ')
        return tern_err_set(err, "invalid size '%s'; expected e.g. 512M or 2G", s);
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno == ERANGE)
        return tern_err_set(err, "invalid size '%s'; expected e.g. 512M or 2G", s);
    unsigned shift = 0;
    if (*end) {
        switch (*end) {
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        case 't': case 'T': shift = 40; break;
        default:
            return tern_err_set(err, "invalid size suffix in '%s'; use K, M, G or T", s);
        }
        end++;
        if (*end == 'i' && end[1] == 'B')
            end += 2;
        else if (*end == 'B')
            end++;
        if (*end)
            return tern_err_set(err, "invalid size '%s': trailing characters", s);
    }
    if (shift && v > (UINT64_MAX >> shift))
        return tern_err_set(err, "size '%s' is too large", s);
    *out = (uint64_t)v << shift;
    return 0;
}

int parse_serial_spec(const char *s, struct serial_spec *out, struct tern_err *err)
{
    if (!strcmp(s, "stdio")) {
        *out = (struct serial_spec){.kind = SERIAL_STDIO};
        return 0;
    }
    if (!strncmp(s, "file:", 5) && s[5]) {
        *out = (struct serial_spec){.kind = SERIAL_FILE, .path = s + 5};
        return 0;
    }
    if (!strncmp(s, "unix:", 5) && s[5]) {
        *out = (struct serial_spec){.kind = SERIAL_UNIX, .path = s + 5};
        return 0;
    }
    return tern_err_set(err, "invalid --serial '%s'; expected stdio, file:PATH or unix:PATH", s);
}

static int parse_uint(const char *opt, const char *s, unsigned min, unsigned max, unsigned *out,
                      struct tern_err *err)
{
    errno = 0;
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || errno || *s == '-' || v < min || v > max)
        return tern_err_set(err, "invalid %s '%s'; expected a whole number from %u to %u", opt,
                            s, min, max);
    *out = (unsigned)v;
    return 0;
}

static int parse_uint(const char *opt, const char *s, unsigned min, unsigned max, unsigned *out,
                      struct tern_err *err);

int parse_endpoint(const char *s, struct endpoint *out, struct tern_err *err)
{
    memset(out, 0, sizeof(*out));
    if (strncmp(s, "tls://", 6) != 0)
        return tern_err_set(err, "invalid address '%s'; expected tls://HOST:PORT", s);
    const char *h = s + 6, *colon;
    size_t hlen;
    if (*h == '[') {
        const char *close = strchr(h, ']');
        if (!close || close[1] != ':')
            return tern_err_set(err, "invalid address '%s'; IPv6 hosts go in brackets: tls://[::1]:PORT", s);
        h++;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(h, ':');
        if (!colon)
            return tern_err_set(err, "invalid address '%s': no port (tls://HOST:PORT)", s);
        hlen = (size_t)(colon - h);
        if (memchr(h, ':', hlen))
            return tern_err_set(err, "invalid address '%s'; IPv6 hosts go in brackets: tls://[::1]:PORT", s);
    }
    if (hlen == 0 || hlen >= sizeof(out->host))
        return tern_err_set(err, "invalid address '%s': bad host", s);
    unsigned port;
    if (parse_uint("port", colon + 1, 1, 65535, &port, err) < 0)
        return tern_err_prefix(err, "address '%s'", s);
    memcpy(out->host, h, hlen);
    out->host[hlen] = '\0';
    out->port = (uint16_t)port;
    return 0;
}

int parse_disk_spec(char *s, struct disk_spec *out, struct tern_err *err)
{
    *out = (struct disk_spec){.path = s};
    char *comma = strchr(s, ',');
    if (comma) {
        /* Only "PATH,ro" with a PATH free of commas: any other comma could
         * be part of the file's name, and a guess would open the wrong
         * file (or the right one with the wrong access). */
        if (strcmp(comma + 1, "ro") != 0)
            return tern_err_set(err, "invalid --disk '%s': PATH[,ro] cannot hold a path with a "
                                     "comma; use --disk-rw PATH or --disk-ro PATH, which take "
                                     "the path as it is", s);
        *comma = '\0';
        out->read_only = true;
    }
    if (!*s)
        return tern_err_set(err, "--disk needs a path to a raw disk image");
    return 0;
}

int parse_run_options(int argc, char **argv, struct run_options *o, struct tern_err *err)
{
    memset(o, 0, sizeof(*o));
    o->vcpus = 1;
    o->serial.kind = SERIAL_STDIO;
    o->cmdline = "";
    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i];
        if (strncmp(opt, "--", 2))
            return tern_err_set(err, "unexpected argument '%s'; options start with --", opt);
        if (!strcmp(opt, "--commit-gate")) { /* the one option without a value */
            o->commit_gate = true;
            continue;
        }
        if (i + 1 >= argc)
            return tern_err_set(err, "option %s needs a value", opt);
        const char *val = argv[++i];
        if (!strcmp(opt, "--restore")) {
            o->restore = val;
        } else if (!strcmp(opt, "--incoming")) {
            if (parse_endpoint(val, &o->incoming_at, err) < 0)
                return tern_err_prefix(err, "--incoming");
            o->incoming = true;
        } else if (!strcmp(opt, "--tls-dir")) {
            o->tls_dir = val;
        } else if (!strcmp(opt, "--token")) {
            o->token = val;
        } else if (!strcmp(opt, "--kernel")) {
            o->kernel = val;
        } else if (!strcmp(opt, "--initrd")) {
            o->initrd = val;
        } else if (!strcmp(opt, "--cmdline")) {
            o->cmdline = val;
        } else if (!strcmp(opt, "--mem")) {
            if (parse_size(val, &o->mem_bytes, err) < 0)
                return tern_err_prefix(err, "--mem");
            o->mem_given = true;
        } else if (!strcmp(opt, "--vcpus")) {
            if (parse_uint("--vcpus", val, 1, VMM_MAX_VCPUS, &o->vcpus, err) < 0)
                return -1;
            o->vcpus_given = true;
        } else if (!strcmp(opt, "--serial")) {
            if (parse_serial_spec(val, &o->serial, err) < 0)
                return -1;
        } else if (!strcmp(opt, "--control")) {
            o->control_path = val;
        } else if (!strcmp(opt, "--disk") || !strcmp(opt, "--disk-rw") ||
                   !strcmp(opt, "--disk-ro")) {
            if (o->nr_disks == VMM_MAX_DISKS)
                return tern_err_set(err, "at most %d disks (--disk, --disk-rw, --disk-ro)",
                                    VMM_MAX_DISKS);
            struct disk_spec *d = &o->disks[o->nr_disks];
            if (!strcmp(opt, "--disk")) {
                if (parse_disk_spec(argv[i], d, err) < 0)
                    return -1;
            } else {
                /* The path exactly as given, whatever it holds. */
                if (!*val)
                    return tern_err_set(err, "%s needs a path to a raw disk image", opt);
                *d = (struct disk_spec){.path = val, .read_only = !strcmp(opt, "--disk-ro")};
            }
            o->nr_disks++;
            o->disks_given = true;
        } else {
            return tern_err_set(err, "unknown option '%s' (see tern-vmm --help)", opt);
        }
    }
    if (o->incoming) {
        if (o->restore || o->kernel || o->initrd || o->cmdline[0])
            return tern_err_set(err, "--incoming receives the running guest from its source; "
                                     "drop --restore, --kernel, --initrd and --cmdline");
        if (!o->tls_dir || !o->token)
            return tern_err_set(err, "--incoming needs --tls-dir DIR and --token TOKEN");
        if (strlen(o->token) < 16)
            return tern_err_set(err, "--token must be at least 16 characters (a one-time secret)");
        if (!o->mem_bytes)
            return tern_err_set(err, "--incoming needs --mem (and --vcpus, --disk) as on the source");
    } else if (o->tls_dir || o->token || o->commit_gate) {
        return tern_err_set(err, "--tls-dir, --token and --commit-gate go with --incoming");
    }
    if (o->restore) {
        if (o->kernel || o->initrd || o->cmdline[0])
            return tern_err_set(err, "--restore continues the guest saved in the snapshot; "
                                     "drop --kernel, --initrd and --cmdline");
        if (!o->mem_given)
            return 0; /* taken from the snapshot */
    } else if (!o->incoming) {
        if (!o->kernel)
            return tern_err_set(err, "--kernel PATH is required (or --restore FILE)");
        if (!o->mem_bytes)
            return tern_err_set(err, "--mem SIZE is required (e.g. --mem 512M)");
    }
    if (o->mem_bytes < (16ull << 20))
        return tern_err_set(err, "--mem %" PRIu64 " bytes is too small; at least 16M", o->mem_bytes);
    if (o->mem_bytes & 0xfffff)
        return tern_err_set(err, "--mem must be a whole number of MiB");
    if (o->mem_bytes > (1ull << 40))
        return tern_err_set(err, "--mem is larger than 1T; tern-vmm does not support that");
    return 0;
}
