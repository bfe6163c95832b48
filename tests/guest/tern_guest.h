/* The test guest's observable interface: exit statuses, output lines and
 * ports. Host-side tests include this to parse the guest's console and to
 * check its exit status; the guest prints with these very formats.
 *
 * Every line starts with TG_PREFIX and ends with "\n" (the formats below
 * leave the newline out); the output begins with one empty line. Numbers
 * are decimal unless written 0x... */
#ifndef TERN_TESTS_GUEST_TERN_GUEST_H
#define TERN_TESTS_GUEST_TERN_GUEST_H

#include "../../node-vmm/guest_abi.h"

/* Exit statuses, written as one byte to the debug-exit port 0x501.
 * tern-vmm exits with the byte itself; QEMU's isa-debug-exit with
 * (byte << 1) | 1. */
#define TG_EXIT_OK 0           /* exit_after reached (or exit_code=N instead) */
#define TG_EXIT_BAD_PARAM 2    /* bad command line, or the fill area does not fit */
#define TG_EXIT_CHECK_FAILED 3 /* a self-check found a bad page, or (disk=1) the
                                  journal is bad or the disk failed */
#define TG_EXIT_EXCEPTION 4    /* an unexpected CPU exception */
#define TG_EXIT_SMP 5          /* an AP did not come up */
#define TG_EXIT_BOOT 6         /* no usable boot information / TSC frequency */

#define TG_PREFIX "tern-guest: "

/* At start, once the parameters are known. */
#define TG_FMT_START                                                                  \
    TG_PREFIX "start cpus=%u fill_mb=%lu dirty_mbs=%lu hb_us=%lu check_ms=%lu tsc_khz=%lu"
/* Once every CPU runs its workload in user mode. */
#define TG_LINE_RUNNING TG_PREFIX "running"
/* Every status=ms: uptime (seconds, 3 decimals), last heartbeat sequence
 * number sent, MB (10^6 bytes, 4096 per page write) dirtied so far, number of
 * full self-checks every page has passed, failures (always 0: a failure
 * ends the guest). */
#define TG_FMT_STATUS TG_PREFIX "up=%lu.%03lu hb=%lu dirtied_mb=%lu checks=%lu failures=%lu"
/* The status line with disk=1: the same, then the journal's durable
 * sequence number (the last record whose FLUSH has completed; the
 * recovered records count as durable). */
#define TG_FMT_STATUS_DISK TG_FMT_STATUS " disk_seq=%lu"
/* exit_after reached; the guest then exits with TG_EXIT_OK or exit_code. */
#define TG_FMT_EXIT_AFTER TG_PREFIX "exit after %lu s"
/* Then TG_EXIT_BAD_PARAM. %s is the offending word of the command line. */
#define TG_FMT_BAD_PARAM TG_PREFIX "bad parameter '%s'"
/* Then TG_EXIT_BAD_PARAM: the fill area [start, end) is not RAM (or beyond
 * the guest's 16 GiB identity map). */
#define TG_FMT_FILL_NO_FIT TG_PREFIX "fill does not fit: fill_mb=%lu needs [0x%lx, 0x%lx) in RAM"
/* Then TG_EXIT_BAD_PARAM: disk=1 but the command line names no device. */
#define TG_FMT_DISK_NO_DEVICE                                                         \
    TG_PREFIX "bad parameter 'disk=1' (no virtio_mmio.device= on the command line)"
/* Then TG_EXIT_CHECK_FAILED. reason is one of the TG_REASON_* words; gen is
 * the page's generation, want the one the guest last wrote. */
#define TG_FMT_CHECK_FAILED TG_PREFIX "CHECK FAILED cpu=%u page=0x%lx reason=%s gen=%lu want=%lu"
#define TG_REASON_MISPLACED "misplaced" /* frame number is not the page's own */
#define TG_REASON_CORRUPT "corrupt"     /* checksum mismatch */
#define TG_REASON_STALE "stale"         /* older (or newer) generation than written */
/* Then TG_EXIT_EXCEPTION. vector in decimal, error and rip in hex. */
#define TG_FMT_EXCEPTION TG_PREFIX "EXCEPTION vector=%lu error=0x%lx rip=0x%lx cpu=%u"
/* Then TG_EXIT_SMP. */
#define TG_FMT_AP_FAILED TG_PREFIX "cpu %u (apic id %u) did not start"


/* disk=1: the journal disk (the first virtio_mmio.device=) is set up, after
 * the start line: MMIO base, capacity in 512-byte sectors, queue size. */
#define TG_FMT_DISK_READY TG_PREFIX "disk base=0x%lx sectors=%lu queue=%u"
/* Once the read-back of the journal has ended; appending continues at
 * records + 1. */
#define TG_FMT_JOURNAL_RECOVERED TG_PREFIX "journal recovered records=%lu"
/* Once, when the disk has no room for the next record (not an error:
 * the guest carries on without appending). */
#define TG_FMT_JOURNAL_FULL TG_PREFIX "journal full records=%lu"
/* Then TG_EXIT_CHECK_FAILED: the read-back found block B (0-based, 4 KiB
 * blocks from sector 0) bad; reason is one of the TG_JREASON_* words. */
#define TG_FMT_JOURNAL_BAD TG_PREFIX "JOURNAL BAD block=%lu reason=%s"
#define TG_JREASON_CHECKSUM "checksum" /* record magic, but the checksum does not match */
#define TG_JREASON_SEQUENCE "sequence" /* intact record, but its sequence is not block + 1 */
#define TG_JREASON_GAP "gap"           /* no record at B, but one at B + 1 */
/* Then TG_EXIT_CHECK_FAILED: a request completed with a status other than
 * OK. op is read, write or flush; sector the request's first sector;
 * status the virtio-blk status byte (1 IOERR, 2 UNSUPP, else malformed). */
#define TG_FMT_DISK_IO_ERROR TG_PREFIX "DISK ERROR op=%s sector=%lu status=%u"
/* Then TG_EXIT_CHECK_FAILED: the device at base cannot be used (not a
 * modern virtio-mmio block device, no FLUSH, read-only, rejected the
 * features, no usable queue, ...), or it has set DEVICE_NEEDS_RESET while
 * a request was outstanding; what says which, in words. */
#define TG_FMT_DISK_DEVICE_ERROR TG_PREFIX "DISK ERROR base=0x%lx: %s"

/* Ports, as node-vmm/guest_abi.h defines them for both sides. */
#define TG_PORT_COM1 TERN_COM1_PORT
#define TG_PORT_DEBUG_EXIT TERN_PORT_DEBUG_EXIT
#define TG_PORT_HEARTBEAT TERN_PORT_HEARTBEAT /* 4-byte OUT of the sequence number 1, 2, 3, ... */

/* Physical placement of the fill area: 16 MiB, or the first 2 MiB boundary
 * above the kernel image and the generation table if that is higher. */
#define TG_FILL_BASE (16ull << 20)

#endif
