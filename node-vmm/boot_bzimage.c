/* Linux bzImage: parse the x86 boot protocol setup header, find the
 * compressed payload (the vmlinux ELF the kernel would decompress itself)
 * and unpack it when it is LZ4.
 *
 * Entering through PVH with the unpacked vmlinux skips the kernel's own
 * real-mode setup and self-decompression, which on an emulating KVM are by
 * far the slowest part of boot (see design.md).
 *
 * Header offsets follow Documentation/arch/x86/boot.rst. The file is
 * untrusted: every field is range-checked before it is used. */
#include "boot.h"
#include "../proto/le.h"

#include <inttypes.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>

/* Setup header fields (offsets from the start of the file). */
#define BZ_SETUP_SECTS 0x1f1
#define BZ_HEADER 0x202 /* "HdrS" */
#define BZ_VERSION 0x206
#define BZ_LOADFLAGS 0x211
#define BZ_XLOADFLAGS 0x236
#define BZ_PAYLOAD_OFFSET 0x248
#define BZ_PAYLOAD_LENGTH 0x24c
#define BZ_PREF_ADDRESS 0x258
#define BZ_INIT_SIZE 0x260
#define BZ_LOADED_HIGH 0x01
#define BZ_SECTOR 512u
/* payload_offset/payload_length appeared in 2.08. */
#define BZ_MIN_PROTOCOL 0x0208

/* The kernel's CONFIG_KERNEL_LZ4 payload: `lz4 -l` (legacy frame) output,
 * then the uncompressed size as a 4-byte LE trailer (added by the kernel's
 * build for every compression). */
#define LZ4_LEGACY_MAGIC 0x184c2102u
#define LZ4_LEGACY_BLOCK (8u << 20)
/* LZ4 cannot expand better than 255:1 (each extra match-length byte adds
 * at most 255 output bytes), which bounds what a trailer may claim. */
#define LZ4_MAX_RATIO 255u

int bzimage_detect(const uint8_t *img, size_t len)
{
    return len >= BZ_HEADER + 4 && memcmp(img + BZ_HEADER, "HdrS", 4) == 0;
}

int bzimage_parse_header(const uint8_t *img, size_t len, struct bzimage_header *out,
                         struct tern_err *err)
{
    if (!bzimage_detect(img, len))
        return tern_err_set(err, "not a Linux bzImage (no \"HdrS\" setup header magic at "
                                 "0x%x%s)", BZ_HEADER, len < BZ_HEADER + 4 ? "; file too short" : "");
    /* Checking the setup size first makes every later header read safe:
     * the setup code is at least 2 sectors, past the end of the header. */
    unsigned sects = img[BZ_SETUP_SECTS] ? img[BZ_SETUP_SECTS] : 4; /* 0 means 4 */
    uint32_t setup_bytes = (sects + 1) * BZ_SECTOR;
    if (setup_bytes > len)
        return tern_err_set(err, "bzImage setup code (%u sectors, %" PRIu32 " bytes) runs past "
                                 "the end of the file (%zu bytes); the file is truncated",
                            sects + 1, setup_bytes, len);
    uint16_t version = le16_get(img + BZ_VERSION);
    if (version < BZ_MIN_PROTOCOL)
        return tern_err_set(err, "bzImage uses boot protocol %u.%02u; tern-vmm needs 2.08 or "
                                 "later to find the compressed kernel; pass the "
                                 "uncompressed vmlinux instead", version >> 8, version & 0xff);
    if (!(img[BZ_LOADFLAGS] & BZ_LOADED_HIGH))
        return tern_err_set(err, "image is a zImage (LOADED_HIGH clear in loadflags), not a "
                                 "bzImage; pass the uncompressed vmlinux instead");
    struct bzimage_header h = {
        .protocol = version,
        .setup_bytes = setup_bytes,
        .payload_offset = le32_get(img + BZ_PAYLOAD_OFFSET),
        .payload_length = le32_get(img + BZ_PAYLOAD_LENGTH),
        .loadflags = img[BZ_LOADFLAGS],
        .xloadflags = version >= 0x020c ? le16_get(img + BZ_XLOADFLAGS) : 0,
        .pref_address = version >= 0x020a ? le64_get(img + BZ_PREF_ADDRESS) : 0,
        .init_size = version >= 0x020a ? le32_get(img + BZ_INIT_SIZE) : 0,
    };
    size_t pm_len = len - setup_bytes; /* the protected-mode part */
    if (h.payload_length == 0 || h.payload_offset > pm_len ||
        h.payload_length > pm_len - h.payload_offset)
        return tern_err_set(err, "bzImage payload (offset 0x%" PRIx32 ", %" PRIu32 " bytes, "
                                 "after %" PRIu32 " bytes of setup) %s; the file is truncated "
                                 "or corrupt", h.payload_offset, h.payload_length, setup_bytes,
                            h.payload_length ? "lies outside the file" : "is empty");
    *out = h;
    return 0;
}

/* Names the format of a payload from its first bytes; NULL if unknown. */
static const char *payload_format(const uint8_t *p, size_t len)
{
    static const struct {
        const char *name;
        uint8_t magic[6];
        size_t magic_len;
    } formats[] = {
        {"gzip", {0x1f, 0x8b}, 2},
        {"xz", {0xfd, '7', 'z', 'X', 'Z', 0x00}, 6},
        {"lzma", {0x5d, 0x00}, 2},
        {"bzip2", {'B', 'Z', 'h'}, 3},
        {"lzo", {0x89, 'L', 'Z', 'O'}, 4},
        {"zstd", {0x28, 0xb5, 0x2f, 0xfd}, 4},
        {"lz4", {0x02, 0x21, 0x4c, 0x18}, 4},
        {"elf", {0x7f, 'E', 'L', 'F'}, 4}, /* CONFIG_KERNEL_UNCOMPRESSED */
    };
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
        if (len >= formats[i].magic_len && memcmp(p, formats[i].magic, formats[i].magic_len) == 0)
            return formats[i].name;
    return NULL;
}

/* Checks the size trailer: it sizes the output buffer, so it must be
 * plausible for the compressed bytes before anything is allocated. */
static int lz4_check_total(uint32_t total, size_t stream_len, struct tern_err *err)
{
    if (total == 0)
        return tern_err_set(err, "LZ4 payload's size trailer says it unpacks to 0 bytes; "
                                 "the bzImage is corrupt");
    if (total > BOOT_MAX_VMLINUX_BYTES)
        return tern_err_set(err, "LZ4 payload's size trailer says it unpacks to %" PRIu32
                                 " bytes, more than tern-vmm's %llu MiB limit",
                            total, BOOT_MAX_VMLINUX_BYTES >> 20);
    if ((uint64_t)total > (uint64_t)stream_len * LZ4_MAX_RATIO)
        return tern_err_set(err, "LZ4 payload's size trailer says %zu compressed bytes unpack "
                                 "to %" PRIu32 ", more than LZ4 can encode; the bzImage is "
                                 "corrupt", stream_len, total);
    return 0;
}

/* Unpacks one legacy-frame block at p[*pos] into buf[*done, total). */
static int lz4_unpack_block(const uint8_t *p, size_t end, size_t *pos, uint8_t *buf,
                            size_t total, size_t *done, unsigned block, struct tern_err *err)
{
    uint32_t csize = le32_get(p + *pos);
    *pos += 4;
    if (csize == 0 || csize > (uint32_t)LZ4_compressBound(LZ4_LEGACY_BLOCK) ||
        csize > end - *pos)
        return tern_err_set(err, "LZ4 block %u at payload offset %zu claims %" PRIu32
                                 " compressed bytes (%zu remain, a block holds at most %d); "
                                 "the payload is truncated or corrupt", block, *pos - 4, csize,
                            end - *pos, LZ4_compressBound(LZ4_LEGACY_BLOCK));
    size_t room = total - *done;
    size_t cap = room < LZ4_LEGACY_BLOCK ? room : LZ4_LEGACY_BLOCK;
    int n = cap ? LZ4_decompress_safe((const char *)p + *pos, (char *)buf + *done, (int)csize,
                                      (int)cap)
                : -1;
    if (n < 0)
        return tern_err_set(err, "LZ4 block %u at payload offset %zu is corrupt, or unpacks "
                                 "past the %zu bytes the payload's size trailer states; the "
                                 "bzImage is corrupt", block, *pos - 4, total);
    *done += (size_t)n;
    *pos += csize;
    return 0;
}

/* Legacy LZ4 frame: magic, then [u32 LE compressed size][block] ... (a
 * repeated magic starts another frame), then the kernel's size trailer. */
static int lz4_legacy_unpack(const uint8_t *p, size_t len, uint8_t **out, size_t *out_len,
                             struct tern_err *err)
{
    if (len < 4 + 4 + 4)
        return tern_err_set(err, "LZ4 payload is only %zu bytes; the bzImage is truncated", len);
    size_t end = len - 4; /* blocks end where the size trailer starts */
    uint32_t total = le32_get(p + end);
    if (lz4_check_total(total, end, err) < 0)
        return -1;
    uint8_t *buf = malloc(total);
    if (!buf)
        return tern_err_set(err, "out of memory unpacking the LZ4 payload (%" PRIu32 " bytes)",
                            total);
    size_t pos = 4, done = 0;
    for (unsigned block = 0; pos < end; block++) {
        if (end - pos < 4) {
            free(buf);
            return tern_err_set(err, "LZ4 block header at payload offset %zu is cut short by "
                                     "the end of the payload; the bzImage is corrupt", pos);
        }
        if (le32_get(p + pos) == LZ4_LEGACY_MAGIC) { /* concatenated frame */
            pos += 4;
            continue;
        }
        if (lz4_unpack_block(p, end, &pos, buf, total, &done, block, err) < 0) {
            free(buf);
            return -1;
        }
    }
    if (done != total) {
        free(buf);
        return tern_err_set(err, "LZ4 payload unpacked to %zu bytes but its size trailer says "
                                 "%" PRIu32 "; the bzImage is corrupt", done, total);
    }
    *out = buf;
    *out_len = done;
    return 0;
}

static int copy_elf_payload(const uint8_t *p, size_t len, uint8_t **out, size_t *out_len,
                            struct tern_err *err)
{
    uint8_t *buf = malloc(len);
    if (!buf)
        return tern_err_set(err, "out of memory copying the bzImage payload (%zu bytes)", len);
    memcpy(buf, p, len);
    *out = buf;
    *out_len = len;
    return 0;
}

int bzimage_extract_vmlinux(const uint8_t *img, size_t len, uint8_t **out, size_t *out_len,
                            struct tern_err *err)
{
    struct bzimage_header h;
    if (bzimage_parse_header(img, len, &h, err) < 0)
        return -1;
    const uint8_t *p = img + h.setup_bytes + h.payload_offset;
    size_t plen = h.payload_length;
    const char *fmt = payload_format(p, plen);
    int rc;
    if (!fmt)
        return tern_err_set(err, "bzImage payload has an unknown format (starts %02x %02x %02x "
                                 "%02x); pass the uncompressed vmlinux instead",
                            p[0], plen > 1 ? p[1] : 0, plen > 2 ? p[2] : 0, plen > 3 ? p[3] : 0);
    if (strcmp(fmt, "elf") == 0)
        rc = copy_elf_payload(p, plen, out, out_len, err);
    else if (strcmp(fmt, "lz4") == 0)
        rc = lz4_legacy_unpack(p, plen, out, out_len, err);
    else
        return tern_err_set(err, "bzImage payload is %s-compressed; tern-vmm unpacks LZ4 "
                                 "kernels only; pass the uncompressed vmlinux (e.g. from "
                                 "extract-vmlinux) instead", fmt);
    if (rc < 0)
        return -1;
    if (*out_len < 4 || memcmp(*out, "\x7f" "ELF", 4) != 0) {
        free(*out);
        *out = NULL;
        return tern_err_set(err, "bzImage payload unpacked to %zu bytes that are not an ELF "
                                 "image; pass the uncompressed vmlinux instead", *out_len);
    }
    return 0;
}
