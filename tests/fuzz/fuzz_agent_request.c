/* libFuzzer harness for ternd's control socket, end to end: one input is
 * what a client writes to the socket (request lines, the last one maybe
 * without a newline), then it shuts down its writing side. A real agent
 * serves it: agent_init with a ternd.conf of its own, on a one-node
 * corosync group in this process (tests/support/inproc_agent.h,
 * fake_corosync.h), state on /dev/shm, no cgroups, metrics, fencing or
 * watchdog, a vmm_path that is gone and no room for VM directories (a VM
 * it starts crashes before any process is made: see start_agent). Per
 * input the harness connects as a client, writes the input, and runs the
 * agent's loop (loop_run_once) until it has read the agent's EOF; then:
 *  - every line the agent wrote is a JSON object: a final reply with "ok"
 *    a boolean ("result" an object when true; when false an "error" with
 *    one of docs/agent-api.md's codes and a message), or a progress line;
 *    no raw control byte but the newline ending each line;
 *  - one final reply per non-empty request line (issue 12), allowing for
 *    the line-length limit (api.c: a line over AGENT_MAX_LINE may get one
 *    error and end the reading); the in-flight limit only delays;
 *  - the agent still answers {"cmd":"status"} on a fresh connection;
 *  - the cluster state serializes, reloads (cl_state_from_json checks its
 *    invariants) and serializes the same; the cluster stays quorate with
 *    its one host, which is never being fenced (nobody could); and when
 *    the agent is replaced, what it stored (snapshot and journal) replays
 *    to the state it had.
 * A hang (no byte from the agent for HANG_MS with replies missing) aborts,
 * with the input and what the agent answered.
 *
 * The agent is made once and kept across inputs, so its state grows
 * (defined VMs stay): past MAX_VMS VMs the harness removes them all through
 * requests, and every RECREATE_EVERY inputs a fresh agent in a fresh
 * directory replaces it.
 *
 * TERN_FUZZ_LOG=1 keeps the agent's log on stderr (otherwise it goes to
 * /dev/null; sanitizer reports and libFuzzer's own lines still show). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/inproc_agent.h"

#define HANG_MS 5000 /* no byte from the agent for this long: a hang */
#define START_MS 10000
#define RECREATE_EVERY 5000
#define MAX_VMS 8

static FILE *diag; /* the harness's own messages: the real stderr */
static struct inproc_agent agent;
static unsigned inputs_on_agent;
static uint64_t checked_version; /* the state's version check_state last saw */
/* For the line at exit: agents made, VM clean-ups. */
static unsigned nr_agents, nr_cleanups;

/* ASan's defaults, cheaper per malloc (the agent and jansson allocate a
 * lot per request): shorter allocation stacks, a smaller quarantine.
 * ASAN_OPTIONS overrides them (e.g. to reproduce a crash with full
 * stacks). */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "malloc_context_size=10:quarantine_size_mb=32";
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(diag, "fuzz_agent_request: ");
    vfprintf(diag, fmt, ap);
    fprintf(diag, "\n");
    va_end(ap);
    fflush(diag);
    inproc_agent_discard(&agent); /* libFuzzer keeps the input; nothing else stays */
    abort();
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void round_or_die(int wait_ms)
{
    struct tern_err err;
    if (inproc_agent_round(&agent, wait_ms, &err) < 0)
        die("%s", err.msg);
}

static void start_agent(void)
{
    struct tern_err err;
    if (inproc_agent_start(&agent, NULL, START_MS, &err) < 0)
        die("starting the agent: %s", err.msg);
    /* A VM's directory (RUN/vms/NAME) cannot be made under a file: every
     * start fails there, before vm_process_spawn forks to exec the missing
     * vmm_path. A fork of this process (and the copy-on-write faults after
     * it in ASan's heap and shadow) made the fuzzer 1.7 times slower once
     * its corpus had learnt vm.start; the agent sees the same: a start
     * that failed, reported as a crash. */
    char vms[256];
    snprintf(vms, sizeof(vms), "%s/run/vms", agent.dir);
    int fd = open(vms, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || close(fd) < 0)
        die("creating %s: %s", vms, strerror(errno));
    inputs_on_agent = 0;
    checked_version = 0;
    nr_agents++;
}

static void stop_agent(void)
{
    struct tern_err err;
    if (inproc_agent_stop(&agent, true, &err) < 0)
        die("stopping the agent: %s", err.msg);
}

static void at_exit(void)
{
    stop_agent();
    fprintf(diag, "fuzz_agent_request: %u agents, %u clean-ups of VMs\n", nr_agents,
            nr_cleanups);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    diag = stderr;
    if (!getenv("TERN_FUZZ_LOG")) {
        FILE *null = fopen("/dev/null", "w");
        if (!null)
            die("opening /dev/null: %s", strerror(errno));
        stderr = null; /* agent_log writes to stderr */
    }
    signal(SIGPIPE, SIG_IGN);
    start_agent();
    atexit(at_exit);
    return 0;
}

/* The agent's state serializes, reloads (with from_json's invariant
 * checks) and serializes the same; the one-node cluster holds. Only a
 * state that changed since the last check is checked again. */
static void check_state(void)
{
    struct cl_state *s = agent_state(&agent.a);
    if (cl_state_version(s) == checked_version)
        return;
    checked_version = cl_state_version(s);
    char *a = inproc_state_text(s);
    json_t *doc = a ? json_loads(a, 0, NULL) : NULL;
    struct cl_state *t = cl_state_new();
    struct tern_err err;
    if (!doc || !t)
        die("the state does not serialize and parse: %s", a ? a : "(null)");
    if (cl_state_from_json(t, doc, &err) < 0)
        die("the agent's state does not reload: %s\n%s", err.msg, a);
    char *b = inproc_state_text(t);
    if (!b || strcmp(a, b) != 0)
        die("the agent's state reloads differently:\n%s\n%s", a, b ? b : "(null)");
    const struct cl_host *self = cl_state_host(s, agent.a.host);
    if (!cl_state_quorate(s) || !agent_is_host(&agent.a) || !self->online ||
        self->fence != CL_FENCE_NONE)
        die("the one-node cluster lost quorum, or its host, or is fencing it:\n%s", a);
    free(a);
    free(b);
    json_decref(doc);
    cl_state_free(t);
}

/* --- what the agent must answer --- */

struct expect {
    unsigned before;    /* non-empty lines before the first over-long one (all if none) */
    bool has_long;      /* a line over AGENT_MAX_LINE */
    bool long_nonempty; /* ... that is not blank */
    unsigned after;     /* non-empty lines after it */
};

/* As api.c reads a line: trailing '\r' and ' ' do not count. */
static bool line_nonempty(const uint8_t *p, size_t n)
{
    while (n > 0 && (p[n - 1] == '\r' || p[n - 1] == ' '))
        n--;
    return n > 0;
}

static struct expect expect_of(const uint8_t *data, size_t size)
{
    struct expect e = {0};
    size_t start = 0;
    while (start < size) {
        const uint8_t *nl = memchr(data + start, '\n', size - start);
        size_t n = nl ? (size_t)(nl - (data + start)) : size - start;
        bool ne = line_nonempty(data + start, n);
        if (!e.has_long && n > AGENT_MAX_LINE) {
            e.has_long = true;
            e.long_nonempty = ne;
        } else if (ne) {
            if (e.has_long)
                e.after++;
            else
                e.before++;
        }
        start += n + 1;
    }
    return e;
}

static bool count_ok(const struct expect *e, unsigned finals)
{
    if (!e->has_long)
        return finals == e->before;
    /* Cut at the long line (one error for it), or it was read whole. */
    return finals == e->before + 1 || finals == e->before + e->long_nonempty + e->after;
}

static const char *const codes[] = {
    "malformed", "unknown_command", "invalid", "not_found", "conflict", "no_capacity",
    "no_quorum", "not_acknowledged", "failed", "timeout", "unavailable", "internal", NULL,
};

/* Checks every line the agent wrote; returns the number of final replies,
 * and the last line parsed in *last (if not NULL; the caller's). */
static unsigned check_output(const char *out, size_t len, json_t **last)
{
    if (last)
        *last = NULL;
    unsigned finals = 0;
    if (len && out[len - 1] != '\n')
        die("the agent's output ends in the middle of a line");
    size_t start = 0;
    while (start < len) {
        const char *nl = memchr(out + start, '\n', len - start);
        size_t n = (size_t)(nl - (out + start));
        const char *line = out + start;
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)line[i] < 0x20)
                die("raw control byte 0x%02x in a reply line: %.*s", (unsigned char)line[i],
                    (int)n, line);
        json_error_t je;
        json_t *j = json_loadb(line, n, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(j))
            die("a reply line is not a JSON object (%s): %.*s", j ? "not an object" : je.text,
                (int)n, line);
        json_t *ok = json_object_get(j, "ok");
        if (ok) {
            if (!json_is_boolean(ok))
                die("\"ok\" is not a boolean: %.*s", (int)n, line);
            finals++;
            if (json_is_true(ok) && !json_is_object(json_object_get(j, "result")))
                die("a reply with ok true has no result object: %.*s", (int)n, line);
            if (json_is_false(ok)) {
                json_t *e = json_object_get(j, "error");
                const char *code = json_string_value(json_object_get(e, "code"));
                bool known = false;
                for (int i = 0; code && codes[i] && !known; i++)
                    known = !strcmp(code, codes[i]);
                if (!known || !json_is_string(json_object_get(e, "message")))
                    die("an error without a documented code and a message: %.*s", (int)n, line);
            }
        } else if (!json_is_object(json_object_get(j, "progress"))) {
            die("a line that is neither a reply nor progress: %.*s", (int)n, line);
        }
        start += n + 1;
        if (last && start == len)
            *last = j;
        else
            json_decref(j);
    }
    return finals;
}

static void read_or_die(struct inproc_client *c, bool *got)
{
    struct tern_err err;
    int r = inproc_read(c, &err);
    if (r < 0)
        die("%s", err.msg);
    *got = r > 0;
}

/* Runs the agent until the client has read EOF. */
static void serve(struct inproc_client *c, const struct expect *e, const uint8_t *data,
                  size_t size)
{
    double last = now_ms();
    while (!c->eof) {
        bool got;
        round_or_die(1);
        read_or_die(c, &got);
        if (got) {
            last = now_ms();
            continue;
        }
        if (now_ms() - last > HANG_MS) {
            unsigned finals = check_output(c->buf, c->len, NULL);
            die("hang: no byte from the agent for %d ms; %u final replies of %u expected; "
                "input (%zu bytes):\n%.*s\noutput:\n%.*s",
                HANG_MS, finals, e->before, size, (int)(size > 4096 ? 4096 : size),
                (const char *)data, (int)(c->len > 8192 ? 8192 : c->len), c->buf);
        }
    }
}

static void check_status(void)
{
    static const char req[] = "{\"cmd\":\"status\"}\n";
    struct tern_err err;
    char *out = inproc_request(&agent, req, HANG_MS, NULL, &err);
    if (!out)
        die("status: %s", err.msg);
    json_t *j;
    if (check_output(out, strlen(out), &j) != 1)
        die("status: not one reply: %s", out);
    json_t *r = json_object_get(j, "result");
    if (!json_is_true(json_object_get(j, "ok")) || !json_is_object(json_object_get(r, "cluster")) ||
        !json_is_array(json_object_get(r, "hosts")) || !json_is_array(json_object_get(r, "vms")) ||
        !json_is_array(json_object_get(r, "migrations")) ||
        !json_is_object(json_object_get(r, "agent")))
        die("status: not the documented result: %s", out);
    json_decref(j);
    free(out);
}

/* Requests from the harness itself: one reply each, as `want_ok` says (or
 * any). */
static void harness_requests(const char *lines, unsigned nr, bool want_ok)
{
    struct tern_err err;
    char *out = inproc_request(&agent, lines, HANG_MS, NULL, &err);
    if (!out)
        die("%s: %s", lines, err.msg);
    if (check_output(out, strlen(out), NULL) != nr)
        die("%u requests, other than %u replies:\n%s\n%s", nr, nr, lines, out);
    for (char *l = out; want_ok && *l; l = strchr(l, '\n') + 1)
        if (strncmp(l, "{\"ok\":true", 10) != 0)
            die("refused:\n%s\n%s", lines, out);
    free(out);
}

/* Removes every VM through requests (stopped first where needed); in a
 * one-node cluster without VMMs, each can be. */
static void remove_vms(void)
{
    nr_cleanups++;
    for (int pass = 0; pass < 2; pass++) {
        struct cl_state *s = agent_state(&agent.a);
        size_t n = cl_state_nr_vms(s), len = 0;
        unsigned nr = 0;
        char *lines = malloc(n * 128 + 1);
        if (!lines)
            die("out of memory");
        for (size_t i = 0; i < n; i++) {
            const struct cl_vm *vm = cl_state_vm_at(s, i);
            bool down = (vm->run == CL_RUN_STOPPED || vm->run == CL_RUN_CRASHED) &&
                        vm->desired == CL_VM_STOPPED;
            if (pass == 1 || !down) {
                len += (size_t)sprintf(lines + len, "{\"cmd\":\"%s\",\"name\":\"%s\"}\n",
                                       pass ? "vm.undefine" : "vm.stop", vm->name);
                nr++;
            }
        }
        lines[len] = '\0';
        if (nr)
            harness_requests(lines, nr, pass == 1);
        free(lines);
    }
    if (cl_state_nr_vms(agent_state(&agent.a)))
        die("VMs left after removing them all");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tern_err err;
    struct expect e = expect_of(data, size);
    struct inproc_client c;
    if (inproc_connect(&agent, &c, &err) < 0 ||
        inproc_write(&agent, &c, data, size, true, HANG_MS, &err) < 0)
        die("%s", err.msg);
    serve(&c, &e, data, size);
    unsigned finals = check_output(c.buf, c.len, NULL);
    if (!count_ok(&e, finals))
        die("%u final replies for %u requests (a long line: %d, %u after it); input (%zu "
            "bytes):\n%.*s\noutput:\n%.*s",
            finals, e.before, e.has_long, e.after, size,
            (int)(size > 4096 ? 4096 : size), (const char *)data,
            (int)(c.len > 8192 ? 8192 : c.len), c.buf);
    inproc_close(&c);

    check_status();
    check_state();

    if (++inputs_on_agent >= RECREATE_EVERY) {
        stop_agent();
        start_agent();
    } else if (cl_state_nr_vms(agent_state(&agent.a)) > MAX_VMS) {
        remove_vms();
    }
    return 0;
}
