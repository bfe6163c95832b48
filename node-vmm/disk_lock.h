/* Disk image locks (design.md, invariant 7): a disk image is open for
 * writing by at most one VM process on any host, whatever the cluster
 * believes. The last guard, never a replacement for fencing.
 *
 * The lock is an open file description lock (fcntl F_OFD_SETLK, never
 * the blocking F_OFD_SETLKW) on one byte of the image, DISK_LOCK_OFFSET,
 * taken through a file descriptor of its own (not the one the disk's I/O
 * uses):
 *
 *   read-write user  F_WRLCK on the byte   (the fd is opened O_RDWR)
 *   read-only user   F_RDLCK on the byte   (the fd is opened O_RDONLY)
 *
 * so the kernel's read/write lock rules are the semantics, checked and
 * taken in one atomic call:
 *   - two writers: refused;
 *   - any number of read-only users: allowed;
 *   - a writer and a read-only user: refused, either way round. The
 *     cluster refuses the same (two VMs share an image only if both have
 *     it read-only), and a guest reading a file system that another guest
 *     changes under it sees garbage.
 * A lock need not cover bytes that exist and does not affect I/O; the
 * byte is far from the ranges QEMU locks, so neither confuses the other.
 * Locks are advisory: they bind only the programs that take them
 * (tern-vmm and its stand-in).
 *
 * An OFD lock belongs to the open file description: it ends when that is
 * closed, which the kernel does when the process ends however it ends
 * (SIGKILL and crashes included), before its parent can reap it. It
 * survives nothing else: not a restart, not an exec. Since it lives on
 * a descriptor that only this module uses, nothing the disk's I/O does
 * (io_uring requests in flight) keeps it alive longer.
 *
 * Where the image is on NFS, the client turns OFD locks into NFS locks on
 * the server (NFSv4 byte-range locks; NFSv3 through the lock manager, which
 * must run: a mount with `nolock` or `local_lock=` keeps locks on one host
 * and protects nothing across hosts). A host that dies keeps its locks on
 * the server until its lease expires (nfsd's lease time, 90 s by default):
 * another host's attempt fails until then and succeeds afterwards.
 * Locking is also NFS's cache coherency point: the client writes back
 * dirty data before it unlocks and revalidates its cache when it locks, so
 * a destination that takes the lock after the source released it reads
 * what the source wrote. A block device's lock is on its device node, so
 * it protects within one host only.
 *
 * No locking here blocks: every call is one attempt. A caller that must
 * wait (a migration's destination, while the source lets go) retries from
 * its event loop, every disk_lock_retry_ms(attempt). */
#ifndef TERN_NODE_VMM_DISK_LOCK_H
#define TERN_NODE_VMM_DISK_LOCK_H

#include <limits.h>
#include <stdbool.h>

#include "../common/err.h"

/* The locked byte: "TERN" read as a big-endian number. */
#define DISK_LOCK_OFFSET 0x5445524eLL

/* How long a migration's destination waits, at its commit, for the write
 * locks the source releases at its own commit. */
#define DISK_LOCK_HANDOVER_MS 5000

struct disk_lock {
    int fd;       /* -1: not open */
    bool write;   /* a read-write user: opened O_RDWR, takes F_WRLCK */
    bool held;
    char path[PATH_MAX];
};

/* Which locks of a set disk_lock_take_set and disk_lock_release_set act on. */
#define DISK_LOCK_READERS 1u
#define DISK_LOCK_WRITERS 2u
#define DISK_LOCK_ALL (DISK_LOCK_READERS | DISK_LOCK_WRITERS)

/* An unopened lock (fd -1): safe to close. */
void disk_lock_init(struct disk_lock *l);

/* Opens `path` for the lock (O_RDWR for a writer, O_RDONLY otherwise;
 * O_CLOEXEC, and O_NONBLOCK so that a FIFO cannot hang the open). Takes
 * nothing yet. Refuses what is not a regular file or a block device.
 * On failure l stays closed and err names the image. */
int disk_lock_open(struct disk_lock *l, const char *path, bool write, struct tern_err *err);

/* One non-blocking attempt at the lock (0 at once if already held). When
 * another open file description holds a conflicting lock: -1 with code
 * TERN_ERR_CONFLICT and a message that names the image and how it is
 * held ("locked for writing" or "open read-only"). With `find_holder`
 * the message also says by whom when this host can tell: the kernel does
 * not report the owner of an OFD lock, so the holder is looked for in
 * /proc/locks and /proc/PID/fdinfo (at most DISK_LOCK_FIND_MS): "by pid
 * N (comm) on this host", or, when no process here holds it, that another
 * host sharing the storage does. Callers that retry ask for it on their
 * last attempt only. Any other failure (no lock support, NFS lock manager
 * missing): -1, no code. */
int disk_lock_take(struct disk_lock *l, bool find_holder, struct tern_err *err);

/* The longest disk_lock_take spends looking for a holder in /proc. */
#define DISK_LOCK_FIND_MS 250

/* Drops the lock, keeping the file open (disk_lock_take can take it again).
 * 0 also when not held. */
int disk_lock_release(struct disk_lock *l, struct tern_err *err);

/* Closes the file, which ends the lock. Safe on an unopened lock. */
void disk_lock_close(struct disk_lock *l);

/* 0 if `fd` is the same file as the lock's (device and inode): what a
 * caller that opens the image separately checks, so that the locked file
 * is the one written even if the path was replaced in between. */
int disk_lock_same_file(const struct disk_lock *l, int fd, struct tern_err *err);

/* Takes the locks of `n` that `which` selects (writers, readers, or both),
 * all or nothing: on failure the ones this call took are released again,
 * and err (with its code) is the failing lock's. */
int disk_lock_take_set(struct disk_lock *locks, unsigned n, unsigned which, bool find_holder,
                       struct tern_err *err);

/* Releases the locks of `n` that `which` selects; every one is tried.
 * -1 with the first error if any release failed. */
int disk_lock_release_set(struct disk_lock *locks, unsigned n, unsigned which,
                          struct tern_err *err);

/* True if any lock of the set that `which` selects is open but not held. */
bool disk_lock_set_pending(const struct disk_lock *locks, unsigned n, unsigned which);

/* Milliseconds to wait before retry number `attempt` (0, 1, ...): short
 * at first (a hand-over usually completes within a millisecond or two),
 * then longer, never more than 25. */
int disk_lock_retry_ms(unsigned attempt);

#endif
