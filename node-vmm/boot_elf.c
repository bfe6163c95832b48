/* Loading a PVH ELF kernel: parse the (untrusted) ELF, find the Xen PVH
 * entry note, copy the PT_LOAD segments to their physical addresses.
 *
 * Every offset and size read from the file is checked against the file
 * length (or the containing segment) before use, with arithmetic that cannot
 * wrap: the checks are written as `off <= len && size <= len - off`.
 * Headers are memcpy'd into <elf.h> structs, so nothing is read unaligned;
 * the host is little-endian (pvh_abi.h insists) and so is every accepted
 * ELF, so fields need no byte swapping. */
#include "boot.h"
#include "guest_abi.h"
#include "pvh_abi.h"

#include <elf.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define MIB (1ull << 20)

/* What the file header says, class-independent. */
struct elf_file {
    const uint8_t *img;
    size_t len;
    int is64;
    uint64_t phoff;
    size_t phnum;
    uint64_t shoff;
    size_t shnum;
};

/* One program or section header, widened to 64 bits. */
struct elf_seg {
    uint32_t type;
    uint64_t offset, paddr, filesz, memsz, align;
};

static int range_in(uint64_t off, uint64_t size, uint64_t len)
{
    return off <= len && size <= len - off;
}

/* [a, a+alen) and [b, b+blen) intersect (both non-empty, neither wraps). */
static int ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

static int elf_check_ident(const uint8_t *img, size_t len, struct tern_err *err)
{
    if (len < SELFMAG || memcmp(img, ELFMAG, SELFMAG) != 0)
        return tern_err_set(err, "not an ELF file (no \\x7fELF magic at offset 0)");
    if (len < EI_NIDENT)
        return tern_err_set(err, "ELF identification is truncated (file has %zu bytes, "
                                 "needs %d); the file is truncated", len, EI_NIDENT);
    if (img[EI_CLASS] != ELFCLASS32 && img[EI_CLASS] != ELFCLASS64)
        return tern_err_set(err, "unknown ELF class %u (expected 1 for 32-bit or 2 for "
                                 "64-bit); the file is corrupt", img[EI_CLASS]);
    if (img[EI_DATA] != ELFDATA2LSB)
        return tern_err_set(err, "ELF is not little-endian (EI_DATA %u); x86 kernels are "
                                 "little-endian, so this is not an x86 kernel", img[EI_DATA]);
    if (img[EI_VERSION] != EV_CURRENT)
        return tern_err_set(err, "unknown ELF version %u; the file is corrupt",
                            img[EI_VERSION]);
    return 0;
}

/* Checks the fields both classes share, once widened. */
static int elf_check_common(uint16_t type, uint16_t machine, size_t phentsize,
                            size_t expect_phentsize, struct tern_err *err)
{
    if (type != ET_EXEC)
        return tern_err_set(err, "ELF type %u is not an executable (ET_EXEC); pass the "
                                 "kernel's vmlinux, not an object file or shared library",
                            type);
    if (machine != EM_386 && machine != EM_X86_64)
        return tern_err_set(err, "ELF machine %u is not x86 (EM_386 or EM_X86_64); this "
                                 "kernel was built for another architecture", machine);
    if (phentsize != expect_phentsize)
        return tern_err_set(err, "ELF program header entries are %zu bytes, expected %zu; "
                                 "the file is corrupt", phentsize, expect_phentsize);
    return 0;
}

static int elf_read_header(const uint8_t *img, size_t len, struct elf_file *f,
                           struct tern_err *err)
{
    if (elf_check_ident(img, len, err) < 0)
        return -1;
    memset(f, 0, sizeof(*f));
    f->img = img;
    f->len = len;
    f->is64 = img[EI_CLASS] == ELFCLASS64;
    size_t ehsize = f->is64 ? sizeof(Elf64_Ehdr) : sizeof(Elf32_Ehdr);
    if (len < ehsize)
        return tern_err_set(err, "ELF header is truncated: the file has %zu bytes, a %d-bit "
                                 "ELF header needs %zu", len, f->is64 ? 64 : 32, ehsize);
    size_t phentsize, shentsize, expect_ph, expect_sh;
    uint16_t type, machine;
    if (f->is64) {
        Elf64_Ehdr eh;
        memcpy(&eh, img, sizeof(eh));
        type = eh.e_type, machine = eh.e_machine;
        f->phoff = eh.e_phoff, f->phnum = eh.e_phnum, phentsize = eh.e_phentsize;
        f->shoff = eh.e_shoff, f->shnum = eh.e_shnum, shentsize = eh.e_shentsize;
        expect_ph = sizeof(Elf64_Phdr), expect_sh = sizeof(Elf64_Shdr);
    } else {
        Elf32_Ehdr eh;
        memcpy(&eh, img, sizeof(eh));
        type = eh.e_type, machine = eh.e_machine;
        f->phoff = eh.e_phoff, f->phnum = eh.e_phnum, phentsize = eh.e_phentsize;
        f->shoff = eh.e_shoff, f->shnum = eh.e_shnum, shentsize = eh.e_shentsize;
        expect_ph = sizeof(Elf32_Phdr), expect_sh = sizeof(Elf32_Shdr);
    }
    if (elf_check_common(type, machine, phentsize, expect_ph, err) < 0)
        return -1;
    if (f->phnum == 0)
        return tern_err_set(err, "ELF has no program headers; a loadable kernel needs "
                                 "PT_LOAD segments (is this an object file?)");
    if (f->phnum == PN_XNUM)
        return tern_err_set(err, "ELF uses extended program header numbering (PN_XNUM), "
                                 "which no kernel needs; the file is corrupt");
    if (!range_in(f->phoff, (uint64_t)f->phnum * expect_ph, len))
        return tern_err_set(err, "ELF program header table (offset 0x%" PRIx64 ", %zu "
                                 "entries of %zu bytes) runs past the end of the file "
                                 "(%zu bytes); the file is truncated or corrupt",
                            f->phoff, f->phnum, expect_ph, len);
    /* Sections are only a fallback for finding the PVH note: a table that
     * is absent or unusable is ignored here and reported if it is needed. */
    if (f->shoff == 0 || f->shnum == 0 || shentsize != expect_sh ||
        !range_in(f->shoff, (uint64_t)f->shnum * expect_sh, len))
        f->shnum = 0;
    return 0;
}

/* Program header i; the table was bounds-checked by elf_read_header. */
static void elf_get_phdr(const struct elf_file *f, size_t i, struct elf_seg *s)
{
    if (f->is64) {
        Elf64_Phdr ph;
        memcpy(&ph, f->img + f->phoff + i * sizeof(ph), sizeof(ph));
        *s = (struct elf_seg){ph.p_type, ph.p_offset, ph.p_paddr, ph.p_filesz, ph.p_memsz,
                              ph.p_align};
    } else {
        Elf32_Phdr ph;
        memcpy(&ph, f->img + f->phoff + i * sizeof(ph), sizeof(ph));
        *s = (struct elf_seg){ph.p_type, ph.p_offset, ph.p_paddr, ph.p_filesz, ph.p_memsz,
                              ph.p_align};
    }
}

/* Section header i, as an elf_seg (sh_size in filesz; paddr/memsz unused). */
static void elf_get_shdr(const struct elf_file *f, size_t i, struct elf_seg *s)
{
    if (f->is64) {
        Elf64_Shdr sh;
        memcpy(&sh, f->img + f->shoff + i * sizeof(sh), sizeof(sh));
        *s = (struct elf_seg){sh.sh_type, sh.sh_offset, 0, sh.sh_size, 0, sh.sh_addralign};
    } else {
        Elf32_Shdr sh;
        memcpy(&sh, f->img + f->shoff + i * sizeof(sh), sizeof(sh));
        *s = (struct elf_seg){sh.sh_type, sh.sh_offset, 0, sh.sh_size, 0, sh.sh_addralign};
    }
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) & ~(a - 1); /* v < 2^33 here, so this cannot wrap */
}

/* Result of scanning notes. */
struct pvh_note {
    int found;
    uint32_t entry;
};

/* Checks and decodes the descriptor of a XEN_ELFNOTE_PHYS32_ENTRY note.
 * Linux writes it with _ASM_PTR: 4 bytes on i386, 8 on x86-64. */
static int pvh_note_decode(const uint8_t *desc, uint32_t descsz, const char *where,
                           struct pvh_note *note, struct tern_err *err)
{
    if (descsz == 4) {
        uint32_t v;
        memcpy(&v, desc, 4);
        note->entry = v;
    } else if (descsz == 8) {
        uint64_t v;
        memcpy(&v, desc, 8);
        if (v > UINT32_MAX)
            return tern_err_set(err, "Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) in %s "
                                     "gives entry 0x%" PRIx64 ", above 4 GiB; a PVH entry "
                                     "is a 32-bit physical address", where, v);
        note->entry = (uint32_t)v;
    } else {
        return tern_err_set(err, "Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) in %s has "
                                 "a %" PRIu32 "-byte descriptor, expected 4 or 8; the ELF "
                                 "is corrupt", where, descsz);
    }
    note->found = 1;
    return 0;
}

/* Walks the notes in p[0, size) (a PT_NOTE segment or SHT_NOTE section,
 * described by `where`) looking for the first PVH entry note. */
static int elf_scan_notes(const uint8_t *p, uint64_t size, uint64_t align, const char *where,
                          struct pvh_note *note, struct tern_err *err)
{
    /* Notes are padded to 4 bytes (what Linux and most toolchains emit,
     * even in ELF64) or 8 (GNU property notes in segments aligned so). */
    if (align != 0 && align != 1 && align != 4 && align != 8)
        return tern_err_set(err, "%s has alignment %" PRIu64 "; ELF notes are 4- or "
                                 "8-byte aligned, so the ELF is corrupt", where, align);
    uint64_t a = align == 8 ? 8 : 4;
    uint64_t off = 0;
    while (size - off >= 12) {
        uint32_t hdr[3]; /* namesz, descsz, type */
        memcpy(hdr, p + off, sizeof(hdr));
        uint64_t body = off + 12;
        uint64_t name_span = align_up(hdr[0], a);
        /* The descriptor starts after the padded name; a last note with no
         * descriptor may lack its padding. Both terms < 2^33: no wrap. */
        uint64_t need = hdr[1] ? name_span + hdr[1] : hdr[0];
        if (need > size - body)
            return tern_err_set(err, "note at offset 0x%" PRIx64 " of %s (name %" PRIu32
                                     " bytes, descriptor %" PRIu32 " bytes) runs past its "
                                     "end (%" PRIu64 " bytes); the ELF is corrupt",
                                off, where, hdr[0], hdr[1], size);
        const uint8_t *name = p + body;
        if (!note->found && hdr[2] == PVH_XEN_ELFNOTE_PHYS32_ENTRY &&
            hdr[0] == sizeof(PVH_XEN_NOTE_NAME) &&
            memcmp(name, PVH_XEN_NOTE_NAME, sizeof(PVH_XEN_NOTE_NAME)) == 0 &&
            pvh_note_decode(name + name_span, hdr[1], where, note, err) < 0)
            return -1;
        uint64_t next = body + name_span + align_up(hdr[1], a);
        off = next < size ? next : size; /* the last note's padding may be cut */
    }
    for (; off < size; off++) /* a short tail is harmless padding only if zero */
        if (p[off] != 0)
            return tern_err_set(err, "%s ends with %" PRIu64 " stray bytes, too few for a "
                                     "note header; the ELF is corrupt", where, size - off);
    return 0;
}

/* Checks one PT_LOAD segment and widens [low, high) to cover it. */
static int elf_check_load(const struct elf_file *f, size_t i, const struct elf_seg *s,
                          struct elf_pvh_image *img, struct tern_err *err)
{
    if (s->filesz > s->memsz)
        return tern_err_set(err, "PT_LOAD segment %zu has p_filesz 0x%" PRIx64 " larger "
                                 "than p_memsz 0x%" PRIx64 "; the ELF is corrupt",
                            i, s->filesz, s->memsz);
    if (!range_in(s->offset, s->filesz, f->len))
        return tern_err_set(err, "PT_LOAD segment %zu (file offset 0x%" PRIx64 ", 0x%" PRIx64
                                 " bytes) runs past the end of the file (%zu bytes); the "
                                 "file is truncated or corrupt",
                            i, s->offset, s->filesz, f->len);
    if (s->memsz == 0)
        return 0;
    if (s->paddr > UINT64_MAX - s->memsz)
        return tern_err_set(err, "PT_LOAD segment %zu at 0x%" PRIx64 " (0x%" PRIx64 " bytes) "
                                 "wraps past the end of the address space; the ELF is "
                                 "corrupt", i, s->paddr, s->memsz);
    uint64_t end = s->paddr + s->memsz;
    if (ranges_overlap(s->paddr, s->memsz, TERN_BOOT_DATA_START,
                       TERN_BOOT_DATA_END - TERN_BOOT_DATA_START))
        return tern_err_set(err, "PT_LOAD segment %zu [0x%" PRIx64 ", 0x%" PRIx64 ") overlaps "
                                 "tern-vmm's boot data area [0x%llx, 0x%llx); link the "
                                 "kernel at 1 MiB or above", i, s->paddr, end,
                            TERN_BOOT_DATA_START, TERN_BOOT_DATA_END);
    if (ranges_overlap(s->paddr, s->memsz, TERN_LOW_RAM_END, MIB - TERN_LOW_RAM_END))
        return tern_err_set(err, "PT_LOAD segment %zu [0x%" PRIx64 ", 0x%" PRIx64 ") overlaps "
                                 "the reserved legacy BIOS area [0x%llx, 0x%llx); link the "
                                 "kernel at 1 MiB or above", i, s->paddr, end,
                            TERN_LOW_RAM_END, MIB);
    if (img->high == 0) {
        img->low = s->paddr;
        img->high = end;
    } else {
        img->low = s->paddr < img->low ? s->paddr : img->low;
        img->high = end > img->high ? end : img->high;
    }
    return 0;
}

static int elf_scan_note_sections(const struct elf_file *f, struct pvh_note *note,
                                  struct tern_err *err)
{
    for (size_t i = 0; i < f->shnum && !note->found; i++) {
        struct elf_seg s;
        elf_get_shdr(f, i, &s);
        if (s.type != SHT_NOTE)
            continue;
        char where[48];
        snprintf(where, sizeof(where), "SHT_NOTE section %zu", i);
        if (!range_in(s.offset, s.filesz, f->len))
            return tern_err_set(err, "%s (file offset 0x%" PRIx64 ", 0x%" PRIx64 " bytes) "
                                     "runs past the end of the file (%zu bytes); the file "
                                     "is truncated or corrupt", where, s.offset, s.filesz,
                                f->len);
        if (elf_scan_notes(f->img + s.offset, s.filesz, s.align, where, note, err) < 0)
            return -1;
    }
    return 0;
}

/* Checks every program header; finds the PVH note in PT_NOTE segments. */
static int elf_scan_phdrs(const struct elf_file *f, struct elf_pvh_image *img,
                          struct pvh_note *note, struct tern_err *err)
{
    for (size_t i = 0; i < f->phnum; i++) {
        struct elf_seg s;
        elf_get_phdr(f, i, &s);
        if (s.type == PT_LOAD && elf_check_load(f, i, &s, img, err) < 0)
            return -1;
        if (s.type != PT_NOTE)
            continue;
        char where[48];
        snprintf(where, sizeof(where), "PT_NOTE segment %zu", i);
        if (!range_in(s.offset, s.filesz, f->len))
            return tern_err_set(err, "%s (file offset 0x%" PRIx64 ", 0x%" PRIx64 " bytes) "
                                     "runs past the end of the file (%zu bytes); the file "
                                     "is truncated or corrupt", where, s.offset, s.filesz,
                                f->len);
        if (elf_scan_notes(f->img + s.offset, s.filesz, s.align, where, note, err) < 0)
            return -1;
    }
    return 0;
}

static int elf_inspect_file(const uint8_t *elf, size_t len, struct elf_file *f,
                            struct elf_pvh_image *out, struct tern_err *err)
{
    if (elf_read_header(elf, len, f, err) < 0)
        return -1;
    struct elf_pvh_image img = {0};
    struct pvh_note note = {0};
    if (elf_scan_phdrs(f, &img, &note, err) < 0)
        return -1;
    if (img.high == 0)
        return tern_err_set(err, "ELF has no PT_LOAD segment with anything to load; "
                                 "this is not a kernel image");
    if (!note.found && elf_scan_note_sections(f, &note, err) < 0)
        return -1;
    if (!note.found)
        return tern_err_set(err, "ELF has no Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); "
                                 "build the kernel with CONFIG_PVH=y or pass a bzImage");
    if (note.entry < img.low || note.entry >= img.high)
        return tern_err_set(err, "PVH entry 0x%" PRIx32 " lies outside the loaded segments "
                                 "[0x%" PRIx64 ", 0x%" PRIx64 "); the ELF is corrupt",
                            note.entry, img.low, img.high);
    img.entry = note.entry;
    *out = img;
    return 0;
}

int elf_pvh_inspect(const uint8_t *elf, size_t len, struct elf_pvh_image *out,
                    struct tern_err *err)
{
    struct elf_file f;
    return elf_inspect_file(elf, len, &f, out, err);
}

/* Fails when a PT_LOAD segment does not lie wholly inside one RAM region;
 * the hint sizes RAM for the whole image, ending at `high`. */
static int elf_check_fits(const struct elf_file *f, const struct guest_memory *gm,
                          uint64_t high, struct tern_err *err)
{
    for (size_t i = 0; i < f->phnum; i++) {
        struct elf_seg s;
        elf_get_phdr(f, i, &s);
        if (s.type != PT_LOAD || s.memsz == 0 || guest_memory_ptr(gm, s.paddr, s.memsz))
            continue;
        uint64_t end = s.paddr + s.memsz;
        char hint[64] = "give the VM more memory";
        if (high <= TERN_MMIO_HOLE_START) /* else no amount of RAM helps: the hole */
            snprintf(hint, sizeof(hint), "give the VM at least %" PRIu64 " MiB",
                     (uint64_t)((high + MIB - 1) / MIB));
        return tern_err_set(err, "PT_LOAD segment %zu [0x%" PRIx64 ", 0x%" PRIx64 ") lies "
                                 "outside guest RAM (%" PRIu64 " MiB: [0, 0x%" PRIx64 ")%s); %s",
                            i, s.paddr, end, gm->size >> 20, guest_memory_low_end(gm),
                            gm->nr_regions > 1 ? " and from 4 GiB up" : "", hint);
    }
    return 0;
}

int elf_pvh_load(const uint8_t *elf, size_t len, struct guest_memory *gm,
                 struct elf_pvh_image *out, struct tern_err *err)
{
    struct elf_file f;
    struct elf_pvh_image img;
    if (elf_inspect_file(elf, len, &f, &img, err) < 0 || elf_check_fits(&f, gm, img.high, err) < 0)
        return -1;
    /* Everything checked: only now touch guest memory. */
    for (size_t i = 0; i < f.phnum; i++) {
        struct elf_seg s;
        elf_get_phdr(&f, i, &s);
        if (s.type != PT_LOAD || s.memsz == 0)
            continue;
        uint8_t *dst = guest_memory_ptr(gm, s.paddr, s.memsz);
        memcpy(dst, elf + s.offset, s.filesz);
        memset(dst + s.filesz, 0, s.memsz - s.filesz);
    }
    *out = img;
    return 0;
}
