/* Ceilings that benchmarks report their figures against, measured in the
 * same run (design.md "Measuring"): memcpy bandwidth, one core's AEAD
 * throughput (the cipher TLS negotiates), and the migration transport's
 * own TLS throughput over loopback or between two network namespaces.
 * Used by bench/tls_ceiling and bench/migrate. MB = 10^6 bytes. */
#ifndef TERN_TESTS_SUPPORT_CEILINGS_H
#define TERN_TESTS_SUPPORT_CEILINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* memcpy between two `block`-byte buffers (pre-faulted), repeated for at
 * least `seconds`: MB copied per second (each byte counted once). */
double ceiling_memcpy_MBps(size_t block, double seconds);

/* One core's AEAD encryption done the way a TLS record layer does it: a
 * fresh nonce, 13 bytes of AAD, `record` bytes of plaintext and the tag,
 * record after record, for at least `seconds`. `cipher` is an OpenSSL
 * name ("AES-128-GCM", "AES-256-GCM", "ChaCha20-Poly1305"). Returns 0 with
 * *MBps (plaintext bytes), or -1. */
int ceiling_aead_MBps(const char *cipher, size_t record, double seconds, double *MBps,
                      struct tern_err *err);

/* The OpenSSL cipher name behind a TLS 1.3 suite name
 * ("TLS_AES_128_GCM_SHA256" -> "AES-128-GCM"), NULL if unknown. */
const char *ceiling_suite_cipher(const char *suite);

struct ceiling_tls_opts {
    const char *server_dir;   /* --tls-dir of the receiving side */
    const char *client_dir;   /* --tls-dir of the sending side */
    const char *server_netns; /* network namespace (name under /run/netns, or a path) for the
                                 receiving side; NULL: this one */
    const char *client_netns; /* likewise for the sending side */
    const char *listen_addr;  /* default "127.0.0.1" */
    const char *connect_addr; /* default listen_addr */
    int streams;              /* parallel connections, default 1 */
    double seconds;           /* how long the senders send, default 2 */
    size_t chunk;             /* bytes per mig_channel_send, default 1 MiB */
    bool no_ktls;             /* force userspace TLS */
};

struct ceiling_tls_result {
    double MBps;         /* application bytes received per second, all streams */
    double seconds;      /* from the first send to the last byte received */
    uint64_t bytes;
    int streams;
    /* CPU time of the sending and receiving threads (all streams). On
     * loopback or a veth pair the kernel's receive path mostly runs in
     * the sender's context (softirq on transmit). */
    double sender_cpu_s, receiver_cpu_s;
    double handshake_ms; /* mig_session_connect: TCP + TLS + token, all streams */
    char cipher[64];
    char send_path[160]; /* mig_channel_ktls_status of the sending side */
};

/* The migration transport (migrate/session.h + channel.h) at full speed:
 * a receiving thread per stream drains into a buffer, a sending thread per
 * stream sends `chunk`-byte buffers for `seconds`. Returns 0 or -1. */
int ceiling_tls(const struct ceiling_tls_opts *o, struct ceiling_tls_result *r,
                struct tern_err *err);

#endif
