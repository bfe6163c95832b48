/* libFuzzer harness for the cluster state and its replica: any bytes as a
 * CPG delivery must be applied, refused or dropped without crashing or
 * leaking, and must leave a state that serializes and reloads (apply never
 * produces a state from_json would reject). The same bytes as a state
 * document must be refused, or accepted and round-trip exactly.
 *
 * First input byte: bits 0-1 the sender node id (0..3), bit 2 whether the
 * replica is in a sync round (it queues) rather than synced (it applies).
 * Bit 3: the rest is the tail of a sync_chunk header from node 2, the
 * winner of a round of nodes 1 and 2, carrying the base state whole and
 * with its CRC (so that the header's "ring", "left" and "nodes" reach the
 * install, and the departures it applies: host 3 is online in that state
 * and not a member; whatever the header says, no host but 1 and 2 may be
 * online after it).
 *
 * The two replicas are made once and only their state is reset per input
 * (a sync per input made this harness crawl at a few hundred runs a
 * second); one that an input moved out of its round is made again. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/replica.h"
#include "proto/crc32.h"

static json_t *base_doc; /* hosts h1..h3, VMs in every state, migrations */

struct outbox {
    char *msgs[8];
    size_t lens[8];
    size_t n;
};

static int cap_send(void *opaque, const void *data, size_t len)
{
    struct outbox *o = opaque;
    if (o->n == 8)
        return -1;
    o->msgs[o->n] = malloc(len ? len : 1);
    if (!o->msgs[o->n])
        return -1;
    memcpy(o->msgs[o->n], data, len);
    o->lens[o->n++] = len;
    return 0;
}

static const struct replica_ops ops = {.send = cap_send};

static void must(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_cluster_msg: %s\n", what);
        abort();
    }
}

static void apply_text(struct cl_state *s, uint32_t node, const char *text)
{
    struct tern_err err;
    json_t *m = json_loads(text, 0, NULL);
    must(m && cl_state_apply(s, node, m, &err) == 0, text);
    json_decref(m);
}

static void build_base(void)
{
    struct cl_state *s = cl_state_new();
    char m[512];
    for (unsigned id = 1; id <= 3; id++) {
        snprintf(m, sizeof(m),
                 "{\"type\":\"host_announce\",\"host\":\"h%u\",\"mem_mib\":8192,\"vcpus\":8,"
                 "\"migration_addr\":\"10.0.0.%u\",\"expected_votes\":3}",
                 id, id);
        apply_text(s, id, m);
    }
    uint32_t members[] = {1, 2, 3};
    struct cl_config c = {.members = members, .nr_members = 3};
    cl_state_apply_config(s, &c);
    const char *vms[] = {"a", "b", "c", "d", "e"};
    for (int i = 0; i < 5; i++) {
        snprintf(m, sizeof(m),
                 "{\"type\":\"vm_define\",\"name\":\"%s\",\"ha\":true,\"config\":{\"kernel\":"
                 "\"/k\",\"mem_mib\":512,\"vcpus\":1,\"disks\":[{\"path\":\"/d%d\"}]}}",
                 vms[i], i);
        apply_text(s, 1, m);
    }
    for (int i = 0; i < 4; i++) {
        snprintf(m, sizeof(m), "{\"type\":\"vm_start\",\"name\":\"%s\",\"host\":\"h1\"}",
                 vms[i]);
        apply_text(s, 2, m);
        snprintf(m, sizeof(m), "{\"type\":\"vm_report\",\"name\":\"%s\",\"run\":\"running\"}",
                 vms[i]);
        apply_text(s, 1, m);
    }
    apply_text(s, 1, "{\"type\":\"migration_begin\",\"vm\":\"a\",\"to\":\"h2\"}");
    apply_text(s, 1, "{\"type\":\"migration_begin\",\"vm\":\"b\",\"to\":\"h3\"}");
    apply_text(s, 3, "{\"type\":\"migration_listening\",\"id\":2,\"port\":7000,\"token\":\"t\"}");
    apply_text(s, 1, "{\"type\":\"migration_progress\",\"id\":2,\"progress\":{\"round\":1}}");
    apply_text(s, 1, "{\"type\":\"migration_begin\",\"vm\":\"c\",\"to\":\"h2\"}");
    apply_text(s, 2, "{\"type\":\"migration_listening\",\"id\":3,\"port\":7001,\"token\":\"u\"}");
    apply_text(s, 1, "{\"type\":\"migration_commit\",\"id\":3}");
    apply_text(s, 1, "{\"type\":\"vm_stop\",\"name\":\"d\"}");
    base_doc = cl_state_to_json(s);
    must(base_doc != NULL, "base state");
    cl_state_free(s);
}

static char *dump(const struct cl_state *s)
{
    json_t *j = cl_state_to_json(s);
    must(j != NULL, "to_json");
    char *t = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    must(t != NULL, "dumps");
    return t;
}

/* The state must reload as itself. */
static void check_round_trip(const struct cl_state *s)
{
    struct tern_err err;
    char *a = dump(s);
    json_t *doc = json_loads(a, 0, NULL);
    struct cl_state *t = cl_state_new();
    if (cl_state_from_json(t, doc, &err) != 0) {
        fprintf(stderr, "fuzz_cluster_msg: state does not reload: %s\n%s\n", err.msg, a);
        abort();
    }
    char *b = dump(t);
    must(strcmp(a, b) == 0, "round trip differs");
    free(a);
    free(b);
    json_decref(doc);
    cl_state_free(t);
}

static void drop(struct outbox *o)
{
    for (size_t i = 0; i < o->n; i++)
        free(o->msgs[i]);
    o->n = 0;
}

static void drain(struct replica *r, struct outbox *o, uint32_t self)
{
    /* Deliver what the replica sent back to itself (a one-node group). */
    size_t n = o->n;
    char *msgs[8];
    size_t lens[8];
    memcpy(msgs, o->msgs, sizeof(msgs));
    memcpy(lens, o->lens, sizeof(lens));
    o->n = 0;
    for (size_t i = 0; i < n; i++) {
        replica_deliver(r, self, msgs[i], lens[i]);
        free(msgs[i]);
    }
}

static struct outbox out_synced, out_round, out_chunk;
static struct replica *synced, *round_open;
static char *base_text; /* base_doc as node 2 sends it */
static size_t base_len;
static uint32_t base_crc;

/* A replica of the base state, synced alone (node 1), or in a sync round
 * waiting for node 2's offer. */
static struct replica *make_replica(bool in_round, struct outbox *o)
{
    struct tern_err err;
    struct cl_state *s = cl_state_new();
    must(cl_state_from_json(s, base_doc, &err) == 0, "base reload");
    struct replica *r = replica_new(1, s, &ops, o);
    uint32_t one[] = {1}, two[] = {1, 2}, joined[] = {2};
    replica_confchg(r, one, 1, NULL, NULL, 0, one, 1);
    drain(r, o, 1); /* offer, then the state: synced alone */
    drain(r, o, 1);
    must(replica_synced(r), "replica did not sync");
    if (in_round) {
        replica_confchg(r, two, 2, NULL, NULL, 0, joined, 1); /* waits for node 2's offer */
        drop(o);
    }
    return r;
}

/* Node 1 restarted (its base copy, unsynced) in a round with node 2, whose
 * synced offer of a newer quorum epoch wins: it waits for node 2's chunks. */
static struct replica *awaiting_chunks(void)
{
    struct tern_err err;
    struct cl_state *s = cl_state_new();
    must(cl_state_from_json(s, base_doc, &err) == 0, "base reload");
    struct replica *r = replica_new(1, s, &ops, &out_chunk);
    uint32_t two[] = {1, 2};
    replica_confchg(r, two, 2, NULL, NULL, 0, two, 2);
    drain(r, &out_chunk, 1); /* its own offer */
    static const char offer[] = "{\"type\":\"sync_offer\",\"members\":[1,2],\"quorum_epoch\":"
                                "1000,\"quorate_version\":1000,\"version\":1000,\"synced\":true}";
    replica_deliver(r, 2, offer, sizeof(offer) - 1);
    drop(&out_chunk);
    must(replica_round_open(r) && !replica_synced(r), "not waiting for node 2's state");
    return r;
}

static void chunk_header(const uint8_t *data, size_t size)
{
    if (!base_text) {
        base_text = json_dumps(base_doc, JSON_COMPACT | JSON_SORT_KEYS);
        must(base_text != NULL, "base text");
        base_len = strlen(base_text);
        base_crc = tern_crc32(0, base_text, base_len);
    }
    char head[160];
    int hl = snprintf(head, sizeof(head),
                      "{\"type\":\"sync_chunk\",\"members\":[1,2],\"seq\":0,\"total\":1,"
                      "\"bytes\":%zu,\"crc\":%u,",
                      base_len, base_crc);
    size_t n = (size_t)hl + size + 2 + base_len;
    char *m = malloc(n);
    must(m != NULL, "chunk");
    memcpy(m, head, (size_t)hl);
    memcpy(m + hl, data, size);
    memcpy(m + hl + size, "}\n", 2);
    memcpy(m + hl + size + 2, base_text, base_len);
    struct replica *r = awaiting_chunks();
    replica_deliver(r, 2, m, n);
    free(m);
    drop(&out_chunk);
    if (replica_synced(r)) {
        /* Installed: the members are 1 and 2, so nobody else is online;
         * host 3 left (lost, or offline with its ternd away). */
        const struct cl_state *s = replica_state(r);
        for (size_t i = 0; i < cl_state_nr_hosts(s); i++) {
            const struct cl_host *h = cl_state_host_at(s, i);
            must(!h->online || h->nodeid == 1 || h->nodeid == 2, "a non-member online");
        }
        check_round_trip(s);
    }
    replica_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!base_doc) {
        build_base();
        synced = make_replica(false, &out_synced);
        round_open = make_replica(true, &out_round);
    }
    if (size < 1)
        return 0;
    uint32_t sender = data[0] & 3;
    bool in_round = data[0] & 4;
    bool chunk = data[0] & 8;
    data++;
    size--;
    if (chunk) {
        chunk_header(data, size);
        return 0;
    }

    struct tern_err err;
    struct replica *r = in_round ? round_open : synced;
    struct outbox *o = in_round ? &out_round : &out_synced;
    uint64_t v0 = cl_state_version(replica_state(r));
    replica_deliver(r, sender, data, size);
    drop(o);
    /* Most inputs are refused and change nothing (the unit tests check
     * that a refusal leaves the state byte for byte): only a state that
     * changed is checked and reset, which keeps this harness fast. */
    if (cl_state_version(replica_state(r)) != v0) {
        check_round_trip(replica_state(r));
        must(cl_state_from_json(replica_state(r), base_doc, &err) == 0, "base reset");
    }
    if (replica_failed(r) || (in_round && !replica_round_open(r)) ||
        (!in_round && (!replica_synced(r) || replica_round_open(r)))) {
        replica_free(r);
        r = make_replica(in_round, o);
        if (in_round)
            round_open = r;
        else
            synced = r;
    }

    /* The bytes as a whole state document. */
    json_t *doc = json_loadb((const char *)data, size, 0, NULL);
    if (doc) {
        struct cl_state *t = cl_state_new();
        if (cl_state_from_json(t, doc, &err) == 0)
            check_round_trip(t);
        cl_state_free(t);
        json_decref(doc);
    }
    return 0;
}
