/* libFuzzer harness for the split virtqueue walker (node-vmm/virtqueue.c):
 * arbitrary guest memory contents and ring state must give chains that
 * respect every bound, or a clean VIRTQ_BROKEN, never a crash or an access
 * outside guest RAM.
 *
 * Input: u8 log2(queue size), u8 flags (bit 0: indirect negotiated),
 * u16 last_avail, u16 used_idx, u16 desc/avail/used addresses (each
 * scaled by 2 within the first RAM region), then the contents of that
 * region. Guest RAM is two 64 KiB regions, the second at 4 GiB, so ranges
 * that straddle regions or fall in the hole between them get exercised.
 *
 *   clang -std=gnu11 -D_GNU_SOURCE -I. -g -O1 -fsanitize=fuzzer,address,undefined \
 *       tests/fuzz/fuzz_virtqueue.c node-vmm/virtqueue.c node-vmm/guest_memory.c \
 *       dirtylog/vmm_dirty.c common/err.c -o fuzz_virtqueue */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dirtylog/vmm_dirty.h"
#include "node-vmm/guest_memory.h"
#include "node-vmm/virtqueue.h"

#define REGION (64u << 10)
#define HIGH_GPA 0x100000000ull

static uint8_t *ram;
static struct guest_memory gm;
static struct vmm_dirty dirty;
static struct virtq_chain chain;
static struct iovec iov[VIRTQ_CHAIN_MAX];
static struct virtq_span spans[VIRTQ_CHAIN_MAX];

static void init_once(void)
{
    if (ram)
        return;
    ram = calloc(1, 2 * REGION);
    if (!ram)
        abort();
    gm.memfd = -1;
    gm.host_base = ram;
    gm.size = 2 * REGION;
    gm.nr_regions = 2;
    gm.regions[0] = (struct guest_memory_region){.gpa = 0, .size = REGION, .offset = 0};
    gm.regions[1] = (struct guest_memory_region){.gpa = HIGH_GPA, .size = REGION,
                                                 .offset = REGION};
    struct tern_err err;
    if (vmm_dirty_init(&dirty, &gm, &err) < 0)
        abort();
}

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static void check_inside(const uint8_t *p, uint64_t len)
{
    if (p < ram || p + len > ram + 2 * REGION)
        abort();
    /* A buffer lies within one region. */
    if (p < ram + REGION && p + len > ram + REGION)
        abort();
}

static void check_chain(const struct virtq *vq, const struct virtq_chain *c)
{
    if (c->head >= vq->num || c->nr > VIRTQ_CHAIN_MAX)
        abort();
    uint64_t r = 0, w = 0;
    bool seen_w = false;
    for (unsigned i = 0; i < c->nr; i++) {
        const struct virtq_seg *s = &c->seg[i];
        if (s->len == 0)
            abort();
        if (s->write)
            seen_w = true;
        else if (seen_w)
            abort();
        if (s->host)
            check_inside(s->host, s->len);
        else if (!c->bad)
            abort();
        *(s->write ? &w : &r) += s->len;
    }
    if (r != c->readable || w != c->writable)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init_once();
    if (size < 12)
        return 0;
    memset(ram, 0, 2 * REGION);
    struct virtq vq = {0};
    vq.num = 1u << (data[0] % 9); /* 1..256 */
    vq.indirect = data[1] & 1;
    vq.last_avail = rd16(data + 2);
    vq.used_idx = rd16(data + 4);
    vq.desc_gpa = 2ull * rd16(data + 6);
    vq.avail_gpa = 2ull * rd16(data + 8);
    vq.used_gpa = 2ull * rd16(data + 10);
    size_t n = size - 12 < REGION ? size - 12 : REGION;
    memcpy(ram, data + 12, n);

    struct tern_err err;
    if (virtq_configure(&vq, &gm, &dirty, 256, &err) < 0)
        return 0;
    vq.ready = true;

    for (unsigned round = 0; round < 2 * vq.num + 2; round++) {
        int rc = virtq_pop(&vq, &chain);
        if (rc == VIRTQ_EMPTY)
            break;
        if (rc == VIRTQ_BROKEN) {
            if (!vq.broken || !vq.error[0] || virtq_pop(&vq, &chain) != VIRTQ_BROKEN)
                abort();
            break;
        }
        if (rc != VIRTQ_CHAIN)
            abort();
        check_chain(&vq, &chain);

        /* What a device does with a chain. */
        uint8_t hdr[16];
        size_t got = virtq_chain_read(&chain, 0, hdr, sizeof(hdr));
        if (got > sizeof(hdr) || (!chain.bad && got != (chain.readable < 16 ? chain.readable : 16)))
            abort();
        for (int dir = 0; dir < 2; dir++) {
            uint64_t total = dir ? chain.writable : chain.readable;
            uint64_t off = total > 16 ? 16 : 0;
            unsigned cnt = virtq_chain_iov_count(&chain, dir, off, total - off);
            int k = virtq_chain_iov(&chain, dir, off, total - off, iov, spans, VIRTQ_CHAIN_MAX);
            if (k >= 0) {
                if ((unsigned)k != cnt)
                    abort();
                uint64_t sum = 0;
                for (int i = 0; i < k; i++) {
                    check_inside(iov[i].iov_base, iov[i].iov_len);
                    if (guest_memory_ptr(&gm, spans[i].gpa, spans[i].len) != iov[i].iov_base)
                        abort();
                    sum += iov[i].iov_len;
                }
                if (sum != total - off)
                    abort();
            } else if (!chain.bad) {
                abort();
            }
        }
        if (chain.writable > 0) {
            uint8_t status = 0;
            virtq_chain_write(&chain, &dirty, chain.writable - 1, &status, 1);
        }
        virtq_push(&vq, chain.head, (uint32_t)(chain.writable & 0xffffffffu));
        (void)virtq_needs_interrupt(&vq);
    }
    return 0;
}
