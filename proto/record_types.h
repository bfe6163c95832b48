/* Every record type, in one place, so no two modules pick the same number.
 * Layouts: docs/snapshot-format.md (0x00xx) and docs/snapshot-state.md
 * (0x01xx CPU and platform, 0x02xx devices), docs/migration-stream.md
 * (0x03xx live migration; migrate/session.h uses 0x03f0/0x03f1 for its
 * transport hello and reply). */
#ifndef TERN_PROTO_RECORD_TYPES_H
#define TERN_PROTO_RECORD_TYPES_H

/* Snapshot file framing. */
#define REC_TYPE_SNAP_HEADER 0x0001u
#define REC_TYPE_SNAP_CONFIG 0x0002u
#define REC_TYPE_SNAP_MEMORY 0x0003u
#define REC_TYPE_SNAP_END 0x00ffu

/* CPU and in-kernel platform state. */
#define REC_TYPE_VCPU_STATE 0x0101u
#define REC_TYPE_PLATFORM_STATE 0x0102u

/* Emulated devices. */
#define REC_TYPE_UART_STATE 0x0201u
#define REC_TYPE_HEARTBEAT_STATE 0x0202u
#define REC_TYPE_VIRTIO_BLK_STATE 0x0203u

/* Live-migration stream (proto/migration.h, docs/migration-stream.md). */
#define REC_TYPE_MIG_HELLO 0x0301u
#define REC_TYPE_MIG_PAGES 0x0302u
#define REC_TYPE_MIG_ROUND_END 0x0303u
#define REC_TYPE_MIG_STATE 0x0304u
#define REC_TYPE_MIG_END 0x0305u
#define REC_TYPE_MIG_READY 0x0306u
#define REC_TYPE_MIG_COMMIT 0x0307u
#define REC_TYPE_MIG_RUNNING 0x0308u
#define REC_TYPE_MIG_ERROR 0x0309u
#define REC_TYPE_MIG_CANCEL 0x030au
/* The transport's own hello and reply (migrate/session.h,
 * docs/migration-transport.md). */
#define REC_TYPE_MIG_XPORT_HELLO 0x03f0u
#define REC_TYPE_MIG_XPORT_REPLY 0x03f1u

#endif
