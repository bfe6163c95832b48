/* Whole records over one migration channel: send a framed buffer, receive
 * the next record (header, payload, CRC checked) into a reusable buffer. */
#ifndef TERN_MIGRATE_STREAM_IO_H
#define TERN_MIGRATE_STREAM_IO_H

#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"
#include "../proto/record.h"
#include "channel.h"

struct mig_rxbuf {
    uint8_t *data;
    size_t cap;
};

int mig_send_bytes(struct mig_channel *c, const void *p, size_t n, struct tern_err *err);
int mig_send_recbuf(struct mig_channel *c, const struct rec_buf *b, struct tern_err *err);

/* Receives one record: *h and *payload (a reader over rx's buffer, valid
 * until the next call). Fails on timeout, EOF, an oversized or corrupt
 * record. */
int mig_recv_record(struct mig_channel *c, struct mig_rxbuf *rx, int timeout_ms,
                    struct rec_header *h, struct rec_reader *payload, struct tern_err *err);

void mig_rxbuf_free(struct mig_rxbuf *rx);

#endif
