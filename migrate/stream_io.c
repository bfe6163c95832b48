#include "stream_io.h"

#include <stdlib.h>
#include <sys/uio.h>

#include "../proto/crc32.h"

int mig_send_bytes(struct mig_channel *c, const void *p, size_t n, struct tern_err *err)
{
    struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
    return mig_channel_send(c, &iov, 1, err);
}

int mig_send_recbuf(struct mig_channel *c, const struct rec_buf *b, struct tern_err *err)
{
    if (rec_buf_check(b, err) < 0)
        return -1;
    return mig_send_bytes(c, b->data, b->len, err);
}

int mig_recv_record(struct mig_channel *c, struct mig_rxbuf *rx, int timeout_ms,
                    struct rec_header *h, struct rec_reader *payload, struct tern_err *err)
{
    uint8_t hdr[REC_HEADER_SIZE];
    int got = mig_channel_recv(c, hdr, sizeof(hdr), timeout_ms, err);
    if (got < 0)
        return -1;
    if (got == 0)
        return tern_err_set(err, "the peer closed the connection");
    if (rec_parse_header(hdr, h, err) < 0)
        return -1;
    if (h->length > rx->cap) {
        size_t cap = rx->cap ? rx->cap : 65536;
        while (cap < h->length)
            cap *= 2;
        uint8_t *p = realloc(rx->data, cap);
        if (!p)
            return tern_err_set(err, "out of memory for a %u-byte record", h->length);
        rx->data = p;
        rx->cap = cap;
    }
    if (h->length) {
        got = mig_channel_recv(c, rx->data, h->length, timeout_ms, err);
        if (got < 0)
            return -1;
        if (got == 0)
            return tern_err_set(err, "the peer closed the connection inside a record");
    }
    /* rec_check_crc's check, with the fast CRC (PAGES records are ~1 MiB). */
    if (rec_crc_done(h, tern_crc32(rec_crc_start(h), rx->data, h->length), err) < 0)
        return -1;
    rec_reader_init(payload, rx->data, h->length);
    return 0;
}

void mig_rxbuf_free(struct mig_rxbuf *rx)
{
    free(rx->data);
    rx->data = NULL;
    rx->cap = 0;
}
