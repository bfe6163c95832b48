#include "ternd_assert.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

json_t *tapi_ok(struct ternd_hosts *t, int h, json_t *req, json_t **reply)
{
    *reply = ternd_api(t, h, req, NULL, 120000);
    if (!*reply)
        fail_msg("host h%d's agent did not answer", h);
    if (!json_is_true(json_object_get(*reply, "ok"))) {
        char *s = json_dumps(*reply, 0);
        fprintf(stderr, "host h%d refused: %s\n", h, s);
        free(s);
        fail();
    }
    return json_object_get(*reply, "result");
}

void tdefine(struct ternd_hosts *t, int h, const char *name, int mem_mib, const char *args)
{
    json_t *reply;
    json_t *cfg = json_pack("{s:s, s:i, s:i}", "kernel", t->guest, "mem_mib", mem_mib, "vcpus", 1);
    if (args)
        json_object_set_new(cfg, "cmdline", json_string(args));
    tapi_ok(t, h, json_pack("{s:s, s:s, s:o}", "cmd", "vm.define", "name", name, "config", cfg),
            &reply);
    json_decref(reply);
}

void tagree(struct ternd_hosts *t, unsigned mask, int online, bool quorate, int timeout_ms)
{
    if (!ternd_hosts_agree(t, mask, online, quorate, timeout_ms))
        fail();
}

void tassert_same(struct ternd_hosts *t, unsigned mask)
{
    char *first = NULL;
    int first_h = 0;
    for (int h = 1; h <= t->nr; h++) {
        if (!(mask & (1u << h)))
            continue;
        char *v = ternd_shared_view(t, h);
        if (!v)
            fail_msg("host h%d's agent did not answer", h);
        if (!first) {
            first = v;
            first_h = h;
            continue;
        }
        if (strcmp(first, v) != 0) {
            fprintf(stderr, "h%d: %s\nh%d: %s\n", first_h, first, h, v);
            fail();
        }
        free(v);
    }
    free(first);
}
