/* bench/tls_ceiling: the migration transport's ceilings, as JSON:
 *
 *   memcpy_MBps               memcpy between two 64 MiB buffers, one core
 *   aead_MBps                 one core's AEAD encryption in 16 KiB records,
 *                             for each TLS 1.3 cipher (EVP, as TLS uses it)
 *   kernel_ktls               whether the kernel lists the tls ULP
 *   tls[]                     mig_session over loopback, one entry per
 *                             stream count: MB/s of application data, the
 *                             negotiated suite, the send path (kernel TLS
 *                             or userspace), handshake time for the set,
 *                             and the ratio to the negotiated cipher's
 *                             one-core ceiling
 *
 * MB = 10^6 bytes. Certificates are made fresh in a temporary directory
 * (tests/support/tls_certs) and removed at the end.
 *
 * Usage: tls_ceiling [--seconds S] [--streams 1,2] [--chunk BYTES] [--no-ktls]
 *                    [--server-netns NS --client-netns NS --addr ADDR] */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/tls.h"
#include "tests/support/ceilings.h"
#include "tests/support/tls_certs.h"

static void usage(void)
{
    fprintf(stderr, "usage: tls_ceiling [--seconds S] [--streams 1,2,...] [--chunk BYTES] "
                    "[--no-ktls] [--server-netns NS] [--client-netns NS] [--addr ADDR]\n");
    exit(64);
}

int main(int argc, char **argv)
{
    double seconds = 3;
    const char *streams = "1,2";
    size_t chunk = 1 << 20;
    struct ceiling_tls_opts base = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-ktls")) {
            base.no_ktls = true;
            continue;
        }
        if (!v)
            usage();
        i++;
        if (!strcmp(a, "--seconds"))
            seconds = atof(v);
        else if (!strcmp(a, "--streams"))
            streams = v;
        else if (!strcmp(a, "--chunk"))
            chunk = strtoul(v, NULL, 0);
        else if (!strcmp(a, "--server-netns"))
            base.server_netns = v;
        else if (!strcmp(a, "--client-netns"))
            base.client_netns = v;
        else if (!strcmp(a, "--addr"))
            base.listen_addr = v;
        else
            usage();
    }
    if (seconds <= 0 || chunk == 0)
        usage();

    struct test_tls certs;
    char msg[1024];
    if (test_tls_make(&certs, msg, sizeof(msg)) < 0) {
        fprintf(stderr, "bench/tls_ceiling: %s\n", msg);
        return 1;
    }
    json_t *out = json_object();
    json_object_set_new(out, "bench", json_string("tls_ceiling"));
    json_object_set_new(out, "kernel_ktls", json_boolean(mig_tls_kernel_has_ktls()));
    json_object_set_new(out, "memcpy_MBps",
                        json_real(ceiling_memcpy_MBps(64u << 20, seconds / 2)));
    json_t *aead = json_object();
    const char *ciphers[] = {"AES-128-GCM", "AES-256-GCM", "ChaCha20-Poly1305"};
    for (size_t i = 0; i < sizeof(ciphers) / sizeof(ciphers[0]); i++) {
        double mbps;
        struct tern_err err;
        if (ceiling_aead_MBps(ciphers[i], 16384, seconds / 2, &mbps, &err) == 0)
            json_object_set_new(aead, ciphers[i], json_real(mbps));
    }
    json_object_set_new(out, "aead_MBps", aead);

    json_t *runs = json_array();
    int failed = 0;
    char list[256];
    snprintf(list, sizeof(list), "%s", streams);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        struct ceiling_tls_opts o = base;
        o.server_dir = certs.host_b;
        o.client_dir = certs.host_a;
        o.streams = atoi(tok);
        o.seconds = seconds;
        o.chunk = chunk;
        struct ceiling_tls_result r;
        struct tern_err err;
        if (ceiling_tls(&o, &r, &err) < 0) {
            fprintf(stderr, "bench/tls_ceiling: %s\n", err.msg);
            failed = 1;
            continue;
        }
        json_t *run = json_object();
        json_object_set_new(run, "streams", json_integer(r.streams));
        json_object_set_new(run, "MBps", json_real(r.MBps));
        json_object_set_new(run, "bytes", json_integer((json_int_t)r.bytes));
        json_object_set_new(run, "seconds", json_real(r.seconds));
        json_object_set_new(run, "handshake_ms", json_real(r.handshake_ms));
        if (r.bytes) {
            json_object_set_new(run, "sender_cpu_s_per_GB", json_real(r.sender_cpu_s * 1e9 / (double)r.bytes));
            json_object_set_new(run, "receiver_cpu_s_per_GB",
                                json_real(r.receiver_cpu_s * 1e9 / (double)r.bytes));
        }
        json_object_set_new(run, "cipher", json_string(r.cipher));
        json_object_set_new(run, "send_path", json_string(r.send_path));
        json_object_set_new(run, "chunk", json_integer((json_int_t)chunk));
        const char *evp = ceiling_suite_cipher(r.cipher);
        json_t *ceil = evp ? json_object_get(aead, evp) : NULL;
        if (ceil && json_real_value(ceil) > 0)
            json_object_set_new(run, "ratio_to_aead", json_real(r.MBps / json_real_value(ceil)));
        json_array_append_new(runs, run);
    }
    json_object_set_new(out, "tls", runs);
    char *text = json_dumps(out, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    printf("%s\n", text);
    free(text);
    json_decref(out);
    test_tls_destroy(&certs);
    return failed;
}
