/* ternd's agent (agent/agent.c, agent_init as ternd runs it) in the
 * calling process, for fuzzers and unit tests: a ternd.conf in a fresh
 * directory on /dev/shm (the journal is fdatasync'd per batch: tmpfs makes
 * that free), the one-node corosync stand-in (fake_corosync.h), no cgroups,
 * metrics, fence devices or watchdog, image_dirs = /. Its vmm_path exists
 * while agent_init checks it and is removed right after, so every VM it
 * starts fails at exec and crashes: no VMM ever runs. The caller runs the
 * agent's loop a round at a time and talks to its control socket as a
 * client does.
 *
 * Link tests/support/inproc_agent.o and fake_corosync.o before the
 * library (the Makefile's INPROC_AGENT_OBJS). Functions returning int give
 * 0 (or what they say), or -1 with err. */
#ifndef TERN_TESTS_SUPPORT_INPROC_AGENT_H
#define TERN_TESTS_SUPPORT_INPROC_AGENT_H

#include <stdbool.h>
#include <stddef.h>

#include "agent/agent.h"

/* Large (the agent's config holds many paths): static or on the heap. */
struct inproc_agent {
    struct agent a;
    char dir[128];
    bool running; /* agent_init succeeded, agent_destroy not called yet */
};

/* A fresh agent, `extra` (lines, may be NULL) appended to its ternd.conf,
 * run until it is ready: synced, quorate, its host announced and settled,
 * that on a majority's disk. */
int inproc_agent_start(struct inproc_agent *t, const char *extra, int timeout_ms,
                       struct tern_err *err);
bool inproc_agent_ready(struct inproc_agent *t);
/* One round of the agent's loop, waiting at most wait_ms for something to
 * happen; -1 when the loop failed or the agent stopped itself. */
int inproc_agent_round(struct inproc_agent *t, int wait_ms, struct tern_err *err);
/* Stops the agent (agent_destroy, as ternd does at exit), and removes its
 * directory. With check_stored, first checks that its snapshot and journal
 * replay to the state it had. Safe on an agent that is not running. */
int inproc_agent_stop(struct inproc_agent *t, bool check_stored, struct tern_err *err);

/* Removes the agent's directory without stopping it: for a program about
 * to abort (a fuzzer's own check failed), so that nothing is left behind. */
void inproc_agent_discard(struct inproc_agent *t);

/* The state as canonical JSON text (malloc'd), NULL if out of memory. */
char *inproc_state_text(struct cl_state *s);

struct inproc_client {
    int fd;
    char *buf; /* what the agent wrote (NUL-terminated) */
    size_t len, cap;
    bool eof;
};

int inproc_connect(struct inproc_agent *t, struct inproc_client *c, struct tern_err *err);
/* Reads what the agent wrote so far: 1 if anything came (or EOF), 0 if
 * nothing. A reset (the agent closed with our input unread) counts as EOF. */
int inproc_read(struct inproc_client *c, struct tern_err *err);
/* Writes all of data, running the agent's loop while the socket is full;
 * stops early when the agent closed the connection. Then shuts the
 * writing side down if `shut`. -1 also when the agent read nothing for
 * timeout_ms. */
int inproc_write(struct inproc_agent *t, struct inproc_client *c, const void *data, size_t len,
                 bool shut, int timeout_ms, struct tern_err *err);
void inproc_close(struct inproc_client *c);

/* Connects, writes `lines` and shuts down the writing side, runs the agent
 * until it closed the connection: everything it wrote (malloc'd,
 * NUL-terminated), or NULL with err when that took more than timeout_ms.
 * *took_ms (may be NULL): how long. */
char *inproc_request(struct inproc_agent *t, const char *lines, int timeout_ms, double *took_ms,
                     struct tern_err *err);

#endif
