/* GDT and the per-CPU TSSs, as static data. The only parts filled in at
 * run time are each CPU's TSS descriptor and RSP0 (cpu.c), because their
 * base addresses cannot be split into descriptor fields by the assembler. */
#include "kernel.h"

#define SEG_LIMIT_4G 0x000f00000000ffff
#define SEG_G (1 << 55)
#define SEG_DB (1 << 54)
#define SEG_L (1 << 53)
#define SEG_P (1 << 47)
#define SEG_DPL3 (3 << 45)
#define SEG_S (1 << 44)
#define SEG_CODE (0xa << 40) /* execute/read */
#define SEG_DATA (0x2 << 40) /* read/write */

    .data
    .balign 16
    .globl gdt, gdt_ptr
gdt:
    .quad 0
    .quad SEG_LIMIT_4G | SEG_G | SEG_DB | SEG_P | SEG_S | SEG_CODE             /* 0x08 code32 */
    .quad SEG_LIMIT_4G | SEG_G | SEG_L | SEG_P | SEG_S | SEG_CODE              /* 0x10 code64 */
    .quad SEG_LIMIT_4G | SEG_G | SEG_DB | SEG_P | SEG_S | SEG_DATA             /* 0x18 data */
    .quad SEG_LIMIT_4G | SEG_G | SEG_DB | SEG_P | SEG_DPL3 | SEG_S | SEG_DATA  /* 0x20 user data */
    .quad SEG_LIMIT_4G | SEG_G | SEG_L | SEG_P | SEG_DPL3 | SEG_S | SEG_CODE   /* 0x28 user code */
    .fill 2 * TG_MAX_CPUS, 8, 0                                                /* TSS descriptors */
gdt_end:
    .if gdt_end - gdt - GDT_BYTES
    .error "GDT size does not match GDT_BYTES"
    .endif

    /* lgdt operand; also used from 32-bit code, where the base is 4 bytes */
    .balign 8
gdt_ptr:
    .word GDT_BYTES - 1
    .quad gdt

/* One TSS per CPU. The I/O permission bitmap is 1 (fault) for every port
 * except those the CPL3 workload uses: PIT channel 2 and its gate (0x42,
 * 0x43, 0x61) for TSC calibration, COM1 (0x3f8-0x3ff), the debug exit
 * (0x501) and the heartbeat port (0x510-0x513). IOPL stays 0. */
    .macro iomap_bytes from, to, value
    .fill \to - \from, 1, \value
    .endm

    .balign 64
    .globl tss_area
tss_area:
    .rept TG_MAX_CPUS
1:  .fill TSS_IOMAP_OFFSET - 2, 1, 0
    .word TSS_IOMAP_OFFSET
    iomap_bytes 0x00, 0x08, 0xff
    .byte 0xf3          /* 0x40-0x47: allow 0x42, 0x43 */
    iomap_bytes 0x09, 0x0c, 0xff
    .byte 0xfd          /* 0x60-0x67: allow 0x61 */
    iomap_bytes 0x0d, 0x7f, 0xff
    .byte 0x00          /* 0x3f8-0x3ff: COM1 */
    iomap_bytes 0x80, 0xa0, 0xff
    .byte 0xfd          /* 0x500-0x507: allow 0x501 */
    .byte 0xff          /* 0x508-0x50f */
    .byte 0xf0          /* 0x510-0x517: allow 0x510-0x513 */
    .byte 0xff          /* required after the bitmap */
2:  .if 2b - 1b - TSS_BYTES
    .error "TSS size does not match TSS_BYTES"
    .endif
    .fill TSS_STRIDE - TSS_BYTES, 1, 0
    .endr
