/* Tests for the PVH ELF loader (node-vmm/boot_elf.c): ELF images of both
 * classes are built in memory, loaded into a memfd-backed guest, and broken
 * in every way the parser must catch. */
#include <elf.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node-vmm/boot.h"
#include "node-vmm/guest_abi.h"

#define MIB (1ull << 20)
#define GUEST_BYTES (64 * MIB)
#define ENTRY_DEFAULT (MIB + 0x10)

enum note_where { NOTE_PHDR, NOTE_SECTION, NOTE_NONE };

struct seg_spec {
    uint64_t paddr, filesz, memsz;
};

struct elf_spec {
    int is64;
    uint16_t type, machine;
    unsigned nsegs;
    struct seg_spec segs[4];
    enum note_where note_where;
    uint32_t note_descsz;
    uint64_t entry;
    uint64_t note_align;
};

/* Where build_elf put things, for tests that corrupt bytes. */
struct elf_layout {
    size_t ehsize, phoff, phentsize, phnum;
    size_t note_off, note_len, xen_note_off;
    size_t data_off[4];
    size_t shoff;
    size_t len;
};

static struct elf_spec spec64(void)
{
    return (struct elf_spec){
        .is64 = 1, .type = ET_EXEC, .machine = EM_X86_64, .nsegs = 1,
        .segs = {{.paddr = MIB, .filesz = 0x200, .memsz = 0x1000}},
        .note_where = NOTE_PHDR, .note_descsz = 8, .entry = ENTRY_DEFAULT, .note_align = 4,
    };
}

static struct elf_spec spec32(void)
{
    struct elf_spec s = spec64();
    s.is64 = 0;
    s.machine = EM_386;
    s.note_descsz = 4;
    return s;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

/* A GNU build-id-like note, then the Xen PVH note: the parser must skip
 * the first. Returns the blob's length. */
static size_t build_notes(const struct elf_spec *s, uint8_t *p, size_t *xen_off)
{
    size_t o = 0;
    put_u32(p + o, 4), put_u32(p + o + 4, 4), put_u32(p + o + 8, NT_GNU_BUILD_ID);
    memcpy(p + o + 12, "GNU", 4);
    put_u32(p + o + 16, 0xdeadbeef);
    o += 20;
    *xen_off = o;
    put_u32(p + o, 4), put_u32(p + o + 4, s->note_descsz), put_u32(p + o + 8, 18);
    memcpy(p + o + 12, "Xen", 4);
    o += 16;
    memset(p + o, 0, (s->note_descsz + 3) & ~3u);
    if (s->note_descsz == 4 || s->note_descsz == 8)
        memcpy(p + o, &s->entry, s->note_descsz); /* little-endian host */
    o += (s->note_descsz + 3) & ~3u;
    return o;
}

static void put_ehdr(const struct elf_spec *s, uint8_t *img, const struct elf_layout *l)
{
    unsigned char ident[EI_NIDENT] = {ELFMAG0, ELFMAG1, ELFMAG2, ELFMAG3,
                                      s->is64 ? ELFCLASS64 : ELFCLASS32, ELFDATA2LSB,
                                      EV_CURRENT};
    if (s->is64) {
        Elf64_Ehdr eh = {.e_type = s->type, .e_machine = s->machine, .e_version = EV_CURRENT,
                         .e_entry = 0x1000000, .e_phoff = l->phoff, .e_ehsize = sizeof(eh),
                         .e_phentsize = sizeof(Elf64_Phdr), .e_phnum = (uint16_t)l->phnum,
                         .e_shoff = l->shoff, .e_shentsize = sizeof(Elf64_Shdr),
                         .e_shnum = l->shoff ? 2 : 0};
        memcpy(eh.e_ident, ident, EI_NIDENT);
        memcpy(img, &eh, sizeof(eh));
    } else {
        Elf32_Ehdr eh = {.e_type = s->type, .e_machine = s->machine, .e_version = EV_CURRENT,
                         .e_entry = 0x100000, .e_phoff = (uint32_t)l->phoff,
                         .e_ehsize = sizeof(eh), .e_phentsize = sizeof(Elf32_Phdr),
                         .e_phnum = (uint16_t)l->phnum, .e_shoff = (uint32_t)l->shoff,
                         .e_shentsize = sizeof(Elf32_Shdr), .e_shnum = l->shoff ? 2 : 0};
        memcpy(eh.e_ident, ident, EI_NIDENT);
        memcpy(img, &eh, sizeof(eh));
    }
}

static void put_phdr(const struct elf_spec *s, uint8_t *img, const struct elf_layout *l,
                     size_t i, uint32_t type, uint64_t off, uint64_t paddr, uint64_t filesz,
                     uint64_t memsz, uint64_t align)
{
    uint8_t *p = img + l->phoff + i * l->phentsize;
    if (s->is64) {
        Elf64_Phdr ph = {.p_type = type, .p_offset = off, .p_vaddr = paddr, .p_paddr = paddr,
                         .p_filesz = filesz, .p_memsz = memsz, .p_align = align};
        memcpy(p, &ph, sizeof(ph));
    } else {
        Elf32_Phdr ph = {.p_type = type, .p_offset = (uint32_t)off, .p_vaddr = (uint32_t)paddr,
                         .p_paddr = (uint32_t)paddr, .p_filesz = (uint32_t)filesz,
                         .p_memsz = (uint32_t)memsz, .p_align = (uint32_t)align};
        memcpy(p, &ph, sizeof(ph));
    }
}

static void put_note_sections(const struct elf_spec *s, uint8_t *img,
                              const struct elf_layout *l)
{
    if (s->is64) {
        Elf64_Shdr sh[2] = {{0}, {.sh_type = SHT_NOTE, .sh_offset = l->note_off,
                                  .sh_size = l->note_len, .sh_addralign = 4}};
        memcpy(img + l->shoff, sh, sizeof(sh));
    } else {
        Elf32_Shdr sh[2] = {{0}, {.sh_type = SHT_NOTE, .sh_offset = (uint32_t)l->note_off,
                                  .sh_size = (uint32_t)l->note_len, .sh_addralign = 4}};
        memcpy(img + l->shoff, sh, sizeof(sh));
    }
}

/* Builds the image `s` describes (malloc'd). Layout: header, program
 * headers, notes, segment data, section headers. */
static uint8_t *build_elf(const struct elf_spec *s, struct elf_layout *l)
{
    uint8_t notes[128];
    memset(l, 0, sizeof(*l));
    l->ehsize = s->is64 ? sizeof(Elf64_Ehdr) : sizeof(Elf32_Ehdr);
    l->phentsize = s->is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr);
    l->phoff = l->ehsize;
    l->phnum = s->nsegs + (s->note_where == NOTE_PHDR);
    l->note_off = l->phoff + l->phnum * l->phentsize;
    l->note_len = s->note_where == NOTE_NONE ? 0 : build_notes(s, notes, &l->xen_note_off);
    l->xen_note_off += l->note_off;
    size_t off = (l->note_off + l->note_len + 15) & ~(size_t)15;
    for (unsigned i = 0; i < s->nsegs; i++) {
        l->data_off[i] = off;
        off = (off + s->segs[i].filesz + 15) & ~(size_t)15;
    }
    l->shoff = s->note_where == NOTE_SECTION ? off : 0;
    l->len = off + (l->shoff ? 2 * (s->is64 ? sizeof(Elf64_Shdr) : sizeof(Elf32_Shdr)) : 0);

    uint8_t *img = calloc(1, l->len);
    assert_non_null(img);
    put_ehdr(s, img, l);
    for (unsigned i = 0; i < s->nsegs; i++) {
        put_phdr(s, img, l, i, PT_LOAD, l->data_off[i], s->segs[i].paddr, s->segs[i].filesz,
                 s->segs[i].memsz, 0x1000);
        memset(img + l->data_off[i], 0x11 * (i + 1), s->segs[i].filesz);
    }
    if (s->note_where == NOTE_PHDR)
        put_phdr(s, img, l, s->nsegs, PT_NOTE, l->note_off, 0, l->note_len, l->note_len,
                 s->note_align);
    memcpy(img + l->note_off, notes, l->note_len);
    if (l->shoff)
        put_note_sections(s, img, l);
    return img;
}

static Elf64_Phdr get_ph64(const uint8_t *img, const struct elf_layout *l, size_t i)
{
    Elf64_Phdr ph;
    memcpy(&ph, img + l->phoff + i * sizeof(ph), sizeof(ph));
    return ph;
}

static void set_ph64(uint8_t *img, const struct elf_layout *l, size_t i, Elf64_Phdr ph)
{
    memcpy(img + l->phoff + i * sizeof(ph), &ph, sizeof(ph));
}

static Elf64_Ehdr get_eh64(const uint8_t *img)
{
    Elf64_Ehdr eh;
    memcpy(&eh, img, sizeof(eh));
    return eh;
}

static void set_eh64(uint8_t *img, Elf64_Ehdr eh)
{
    memcpy(img, &eh, sizeof(eh));
}

static void expect_error(const uint8_t *img, size_t len, const char *needle)
{
    struct tern_err err = {0};
    struct elf_pvh_image out;
    int rc = elf_pvh_inspect(img, len, &out, &err);
    if (rc != -1 || !strstr(err.msg, needle)) {
        print_error("expected an error containing \"%s\", got rc %d, \"%s\"\n", needle, rc,
                    err.msg);
        fail();
    }
}

static void expect_spec_error(const struct elf_spec *s, const char *needle)
{
    struct elf_layout l;
    uint8_t *img = build_elf(s, &l);
    expect_error(img, l.len, needle);
    free(img);
}

/* --- fixtures --- */

static int gm_setup(void **state)
{
    struct guest_memory *gm = calloc(1, sizeof(*gm));
    struct tern_err err;
    if (!gm || guest_memory_create(gm, GUEST_BYTES, &err) < 0) {
        free(gm);
        return -1;
    }
    *state = gm;
    return 0;
}

static int gm_teardown(void **state)
{
    guest_memory_destroy(*state);
    free(*state);
    return 0;
}

/* --- good images --- */

static void check_loaded(struct guest_memory *gm, const struct elf_spec *s)
{
    for (unsigned i = 0; i < s->nsegs; i++) {
        const uint8_t *p = guest_memory_ptr(gm, s->segs[i].paddr, s->segs[i].memsz);
        assert_non_null(p);
        for (uint64_t b = 0; b < s->segs[i].memsz; b++)
            assert_int_equal(p[b], b < s->segs[i].filesz ? 0x11 * (i + 1) : 0);
    }
}

static void load_good(struct guest_memory *gm, const struct elf_spec *s, uint64_t low,
                      uint64_t high)
{
    struct elf_layout l;
    uint8_t *img = build_elf(s, &l);
    struct tern_err err = {0};
    struct elf_pvh_image out;
    /* Garbage where the zero-filled tail goes proves the loader clears it. */
    memset(guest_memory_ptr(gm, MIB, 8 * MIB), 0xcc, 8 * MIB);
    assert_int_equal(elf_pvh_inspect(img, l.len, &out, &err), 0);
    assert_int_equal(out.entry, s->entry);
    assert_int_equal(out.low, low);
    assert_int_equal(out.high, high);
    memset(&out, 0, sizeof(out));
    if (elf_pvh_load(img, l.len, gm, &out, &err) < 0)
        fail_msg("load failed: %s", err.msg);
    assert_int_equal(out.entry, s->entry);
    assert_int_equal(out.low, low);
    assert_int_equal(out.high, high);
    check_loaded(gm, s);
    free(img);
}

static void test_good_elf64(void **state)
{
    struct elf_spec s = spec64();
    load_good(*state, &s, MIB, MIB + 0x1000);
}

static void test_good_elf32(void **state)
{
    struct elf_spec s = spec32();
    load_good(*state, &s, MIB, MIB + 0x1000);
}

static void test_good_two_segments(void **state)
{
    struct elf_spec s = spec64();
    s.nsegs = 2;
    s.segs[1] = (struct seg_spec){.paddr = 2 * MIB, .filesz = 0x1800, .memsz = 0x3000};
    load_good(*state, &s, MIB, 2 * MIB + 0x3000);
}

static void test_good_elf64_4byte_note(void **state)
{
    struct elf_spec s = spec64();
    s.note_descsz = 4;
    load_good(*state, &s, MIB, MIB + 0x1000);
}

static void test_note_in_section_only(void **state)
{
    struct elf_spec s = spec64();
    s.note_where = NOTE_SECTION;
    load_good(*state, &s, MIB, MIB + 0x1000);
    s = spec32();
    s.note_where = NOTE_SECTION;
    load_good(*state, &s, MIB, MIB + 0x1000);
}

static void test_note_align8(void **state)
{
    /* A PT_NOTE with p_align 8 pads names and descriptors to 8 bytes:
     * rewrite the notes as a lone 8-aligned Xen note. */
    struct elf_spec s = spec64();
    struct elf_layout l;
    uint8_t *img = build_elf(&s, &l);
    uint8_t *n = img + l.note_off;
    memset(n, 0, l.note_len);
    put_u32(n, 4), put_u32(n + 4, 8), put_u32(n + 8, 18);
    memcpy(n + 12, "Xen", 4); /* padded to 8: descriptor at 12 + 8 */
    uint64_t entry = ENTRY_DEFAULT;
    memcpy(n + 20, &entry, 8);
    Elf64_Phdr ph;
    memcpy(&ph, img + l.phoff + sizeof(ph), sizeof(ph));
    ph.p_filesz = ph.p_memsz = 28;
    ph.p_align = 8;
    memcpy(img + l.phoff + sizeof(ph), &ph, sizeof(ph));
    struct tern_err err = {0};
    struct elf_pvh_image out;
    if (elf_pvh_load(img, l.len, *state, &out, &err) < 0)
        fail_msg("load failed: %s", err.msg);
    assert_int_equal(out.entry, ENTRY_DEFAULT);
    /* Read with 4-byte rules, the descriptor starts in the padding: the
     * entry lands in its upper half. */
    ph.p_align = 4;
    memcpy(img + l.phoff + sizeof(ph), &ph, sizeof(ph));
    expect_error(img, l.len, "above 4 GiB");
    free(img);
}

/* --- broken images --- */

static void test_truncated(void **state)
{
    (void)state;
    for (int cls = 0; cls < 2; cls++) {
        struct elf_spec s = cls ? spec64() : spec32();
        struct elf_layout l;
        uint8_t *img = build_elf(&s, &l);
        struct {
            size_t len;
            const char *needle;
        } cuts[] = {
            {0, "not an ELF"},
            {3, "not an ELF"},
            {10, "identification is truncated"},
            {l.ehsize - 1, "ELF header is truncated"},
            {l.phoff + 5, "program header table"},
            /* Headers complete, notes cut: PT_LOAD 0 is checked first and
             * its data (after the notes) is missing too. */
            {l.note_off + l.note_len - 2, "PT_LOAD segment 0"},
            {l.data_off[0] + 1, "runs past the end of the file"},
        };
        for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++)
            expect_error(img, cuts[i].len, cuts[i].needle);
        /* Every shorter length must fail cleanly (and under ASan, safely). */
        struct tern_err err;
        struct elf_pvh_image out;
        for (size_t len = 0; len < l.len; len++)
            assert_int_equal(elf_pvh_inspect(img, len, &out, &err), -1);
        free(img);
    }
}

static void test_bad_ident(void **state)
{
    (void)state;
    struct elf_spec s = spec64();
    struct elf_layout l;
    uint8_t *img = build_elf(&s, &l);
    img[1] = 'X';
    expect_error(img, l.len, "not an ELF");
    img[1] = 'E';
    img[EI_CLASS] = 7;
    expect_error(img, l.len, "unknown ELF class 7");
    img[EI_CLASS] = ELFCLASS64;
    img[EI_DATA] = ELFDATA2MSB;
    expect_error(img, l.len, "not little-endian");
    img[EI_DATA] = ELFDATA2LSB;
    img[EI_VERSION] = 9;
    expect_error(img, l.len, "unknown ELF version");
    free(img);
}

static void test_wrong_machine_and_type(void **state)
{
    (void)state;
    struct elf_spec s = spec64();
    s.machine = EM_AARCH64;
    expect_spec_error(&s, "not x86");
    s = spec32();
    s.machine = EM_ARM;
    expect_spec_error(&s, "not x86");
    s = spec64();
    s.type = ET_DYN;
    expect_spec_error(&s, "not an executable");
    s = spec64();
    s.type = ET_REL;
    expect_spec_error(&s, "not an executable");
}

static void test_phdr_table_bad(void **state)
{
    (void)state;
    struct elf_spec s = spec64();
    struct elf_layout l;
    uint8_t *img = build_elf(&s, &l);
    Elf64_Ehdr orig = get_eh64(img), eh = orig;

    eh.e_phoff = UINT64_MAX - 8; /* offset + size wraps */
    set_eh64(img, eh);
    expect_error(img, l.len, "program header table");
    eh = orig;
    eh.e_phnum = 0xfffe; /* far more entries than the file holds */
    set_eh64(img, eh);
    expect_error(img, l.len, "program header table");
    eh = orig;
    eh.e_phnum = PN_XNUM;
    set_eh64(img, eh);
    expect_error(img, l.len, "PN_XNUM");
    eh = orig;
    eh.e_phnum = 0;
    set_eh64(img, eh);
    expect_error(img, l.len, "no program headers");
    eh = orig;
    eh.e_phentsize = 40;
    set_eh64(img, eh);
    expect_error(img, l.len, "entries are 40 bytes");
    free(img);
}

static void test_segment_bad(void **state)
{
    (void)state;
    struct elf_spec s = spec64();
    struct elf_layout l;
    uint8_t *img = build_elf(&s, &l);
    Elf64_Phdr orig = get_ph64(img, &l, 0), ph = orig;

    ph.p_filesz = ph.p_memsz + 1;
    set_ph64(img, &l, 0, ph);
    expect_error(img, l.len, "larger than p_memsz");
    ph = orig;
    ph.p_offset = UINT64_MAX - 0x10;
    set_ph64(img, &l, 0, ph);
    expect_error(img, l.len, "runs past the end of the file");
    ph = orig;
    ph.p_filesz = ph.p_memsz = l.len; /* starts inside, ends outside */
    set_ph64(img, &l, 0, ph);
    expect_error(img, l.len, "runs past the end of the file");
    ph = orig;
    ph.p_paddr = UINT64_MAX - 0x10;
    set_ph64(img, &l, 0, ph);
    expect_error(img, l.len, "wraps past the end");
    ph = orig;
    ph.p_filesz = ph.p_memsz = 0; /* nothing loadable left */
    set_ph64(img, &l, 0, ph);
    expect_error(img, l.len, "no PT_LOAD segment");
    free(img);
}

static void test_overlaps_boot_data(void **state)
{
    (void)state;
    struct elf_spec s = spec64();
    s.segs[0].paddr = 0x2000;
    s.entry = 0x2010;
    expect_spec_error(&s, "boot data area");
    s.segs[0].paddr = 0; /* [0, 0x1000) is fine, [0, 0x1001) is not */
    s.segs[0].memsz = 0x1001;
    s.entry = 0x10;
    expect_spec_error(&s, "boot data area");
    s.segs[0].memsz = 0x1000;
    struct elf_layout l;
    uint8_t *img = build_elf(&s, &l);
    struct tern_err err;
    struct elf_pvh_image out;
    assert_int_equal(elf_pvh_inspect(img, l.len, &out, &err), 0);
    free(img);
    s = spec32();
    s.segs[0].paddr = 0x3fff;
    s.entry = 0x3fff;
    expect_spec_error(&s, "boot data area");
    s.segs[0].paddr = 0xa0000;
    s.entry = 0xa0000;
    expect_spec_error(&s, "legacy BIOS area");
}

static void test_segment_outside_ram(void **state)
{
    struct guest_memory *gm = *state;
    struct elf_spec s = spec64();
    s.nsegs = 2;
    s.segs[1] = (struct seg_spec){.paddr = GUEST_BYTES - 0x800, .filesz = 0x100,
                                  .memsz = 0x1000}; /* straddles the end of RAM */
    struct elf_layout l;
    uint8_t *img = build_elf(&s, &l);
    uint8_t *seg0 = guest_memory_ptr(gm, MIB, 0x1000);
    memset(seg0, 0xcc, 0x1000);
    struct tern_err err = {0};
    struct elf_pvh_image out;
    assert_int_equal(elf_pvh_inspect(img, l.len, &out, &err), 0); /* RAM-independent */
    assert_int_equal(elf_pvh_load(img, l.len, gm, &out, &err), -1);
    assert_non_null(strstr(err.msg, "segment 1"));
    assert_non_null(strstr(err.msg, "outside guest RAM"));
    assert_non_null(strstr(err.msg, "give the VM at least 65 MiB"));
    /* Nothing was copied, not even the good segment. */
    for (int i = 0; i < 0x1000; i++)
        assert_int_equal(seg0[i], 0xcc);
    free(img);

    s.segs[1].paddr = 0x100000000ull; /* high RAM a 64 MiB guest lacks */
    img = build_elf(&s, &l);
    assert_int_equal(elf_pvh_load(img, l.len, gm, &out, &err), -1);
    assert_non_null(strstr(err.msg, "segment 1 [0x100000000, 0x100001000) lies outside"));
    free(img);
}

static void test_missing_note(void **state)
{
    (void)state;
    struct elf_spec s = spec64();
    s.note_where = NOTE_NONE;
    expect_spec_error(&s, "has no Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)");
    expect_spec_error(&s, "CONFIG_PVH=y or pass a bzImage");
    s = spec32();
    s.note_where = NOTE_NONE;
    expect_spec_error(&s, "no Xen PVH entry note");

    /* A note of the right type but another owner does not count. */
    s = spec64();
    struct elf_layout l;
    uint8_t *img = build_elf(&s, &l);
    memcpy(img + l.xen_note_off + 12, "Xyz", 4);
    expect_error(img, l.len, "no Xen PVH entry note");
    free(img);
}

static void test_note_bad_sizes(void **state)
{
    (void)state;
    struct elf_spec s = spec64();
    s.note_descsz = 2;
    expect_spec_error(&s, "2-byte descriptor");
    s.note_descsz = 12;
    expect_spec_error(&s, "12-byte descriptor");
    s = spec32();
    s.note_descsz = 0;
    expect_spec_error(&s, "0-byte descriptor");

    s = spec64();
    struct elf_layout l;
    uint8_t *img = build_elf(&s, &l);
    put_u32(img + l.xen_note_off, 1000); /* namesz */
    expect_error(img, l.len, "runs past its end");
    put_u32(img + l.xen_note_off, 4);
    put_u32(img + l.xen_note_off + 4, 0xfffffff0u); /* descsz */
    expect_error(img, l.len, "runs past its end");
    put_u32(img + l.xen_note_off + 4, 8);
    put_u32(img + l.xen_note_off, 0xffffffffu); /* padding would wrap a u32 */
    expect_error(img, l.len, "runs past its end");
    free(img);
}

static void test_note_segment_bad(void **state)
{
    (void)state;
    struct elf_spec s = spec64();
    s.note_align = 3;
    expect_spec_error(&s, "alignment 3");

    s = spec64();
    struct elf_layout l;
    uint8_t *img = build_elf(&s, &l);
    Elf64_Phdr orig = get_ph64(img, &l, 1), ph = orig;
    ph.p_offset = l.len - 4;
    set_ph64(img, &l, 1, ph);
    expect_error(img, l.len, "PT_NOTE segment 1");
    /* A few extra non-zero bytes after the last note are garbage. */
    ph = orig;
    ph.p_filesz += 5;
    set_ph64(img, &l, 1, ph);
    memset(img + l.note_off + l.note_len, 0x5a, 5);
    expect_error(img, l.len, "stray bytes");
    /* ...while zero padding is accepted. */
    memset(img + l.note_off + l.note_len, 0, 5);
    struct tern_err err;
    struct elf_pvh_image out;
    assert_int_equal(elf_pvh_inspect(img, l.len, &out, &err), 0);
    free(img);
}

static void test_note_entry_values(void **state)
{
    (void)state;
    struct elf_spec s = spec64();
    s.entry = 0x100000000ull + MIB;
    expect_spec_error(&s, "above 4 GiB");
    s.entry = 0x200000; /* valid encoding, but not inside the segment */
    expect_spec_error(&s, "outside the loaded segments");
    s = spec32();
    s.entry = MIB - 1;
    expect_spec_error(&s, "outside the loaded segments");
}

/* Deterministic byte flips over a good image: any result is fine as long
 * as it is a clean success or error (ASan/UBSan watch the rest). */
static void test_mutations(void **state)
{
    struct guest_memory *gm = *state;
    uint32_t seed = 12345;
    for (int cls = 0; cls < 2; cls++) {
        struct elf_spec s = cls ? spec64() : spec32();
        s.note_where = cls ? NOTE_PHDR : NOTE_SECTION;
        struct elf_layout l;
        uint8_t *good = build_elf(&s, &l);
        uint8_t *img = malloc(l.len);
        assert_non_null(img);
        for (int iter = 0; iter < 20000; iter++) {
            memcpy(img, good, l.len);
            int flips = 1 + iter % 4;
            for (int f = 0; f < flips; f++) {
                seed = seed * 1103515245u + 12345u;
                size_t pos = (seed >> 8) % l.len;
                seed = seed * 1103515245u + 12345u;
                img[pos] ^= (uint8_t)(1u << ((seed >> 16) % 8));
            }
            struct tern_err err = {0};
            struct elf_pvh_image out;
            int rc = elf_pvh_load(img, l.len, gm, &out, &err);
            assert_true(rc == 0 || (rc == -1 && err.msg[0] != '\0'));
        }
        free(img);
        free(good);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_good_elf64, gm_setup, gm_teardown),
        cmocka_unit_test_setup_teardown(test_good_elf32, gm_setup, gm_teardown),
        cmocka_unit_test_setup_teardown(test_good_two_segments, gm_setup, gm_teardown),
        cmocka_unit_test_setup_teardown(test_good_elf64_4byte_note, gm_setup,
                                        gm_teardown),
        cmocka_unit_test_setup_teardown(test_note_in_section_only, gm_setup, gm_teardown),
        cmocka_unit_test_setup_teardown(test_note_align8, gm_setup, gm_teardown),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_bad_ident),
        cmocka_unit_test(test_wrong_machine_and_type),
        cmocka_unit_test(test_phdr_table_bad),
        cmocka_unit_test(test_segment_bad),
        cmocka_unit_test(test_overlaps_boot_data),
        cmocka_unit_test_setup_teardown(test_segment_outside_ram, gm_setup, gm_teardown),
        cmocka_unit_test(test_missing_note),
        cmocka_unit_test(test_note_bad_sizes),
        cmocka_unit_test(test_note_segment_bad),
        cmocka_unit_test(test_note_entry_values),
        cmocka_unit_test_setup_teardown(test_mutations, gm_setup, gm_teardown),
    };
    return cmocka_run_group_tests_name("boot_elf", tests, NULL, NULL);
}
