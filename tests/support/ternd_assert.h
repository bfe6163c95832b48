/* cmocka checks over tests/support/ternd_hosts.h: each fails the test
 * (with the hosts' logs or the refusal) instead of returning an error.
 * Linked into the test programs only. */
#ifndef TERN_TESTS_SUPPORT_TERND_ASSERT_H
#define TERN_TESTS_SUPPORT_TERND_ASSERT_H

#include "ternd_hosts.h"

/* Sends `req` (consumed) to host h and expects ok:true; returns its
 * "result" (valid until the caller decrefs *reply). */
json_t *tapi_ok(struct ternd_hosts *t, int h, json_t *req, json_t **reply);

/* vm.define NAME (the test guest, mem_mib, 1 vCPU, cmdline args if not NULL) at host h. */
void tdefine(struct ternd_hosts *t, int h, const char *name, int mem_mib, const char *args);

/* ternd_hosts_agree, or the test fails. */
void tagree(struct ternd_hosts *t, unsigned mask, int online, bool quorate, int timeout_ms);

/* Every host in `mask` shows the same state (ternd_shared_view). */
void tassert_same(struct ternd_hosts *t, unsigned mask);

#endif
