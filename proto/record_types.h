/* Every record type, in one place, so no two modules pick the same number.
 * Layouts: docs/snapshot-format.md (0x00xx) and docs/snapshot-state.md
 * (0x01xx CPU and platform, 0x02xx devices). Migration stream records will
 * take 0x03xx. */
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

#endif
