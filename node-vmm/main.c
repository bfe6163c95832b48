/* tern-vmm: one process per VM. `run` boots a guest and serves its control
 * socket from a single event loop; `ctl` talks to a running one. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "../common/loop.h"
#include "../common/version.h"
#include "../migrate/migrate.h"
#include "control.h"
#include "options.h"
#include "snapshot.h"
#include "vm.h"
#include "vmm_commands.h"
#include "../common/text.h"

#define CTL_EXIT_FAILED 1      /* the VMM answered with an error */
#define CTL_EXIT_UNAVAILABLE 69 /* could not reach the VMM */
#define CTL_TIMEOUT_MS 30000
#define CTL_SAVE_TIMEOUT_MS (30 * 60 * 1000) /* writing a large guest takes a while */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: tern-vmm run --kernel PATH [--initrd PATH] [--cmdline STR] --mem SIZE\n"
            "                    [--vcpus N] [--disk PATH[,ro]]... [--serial stdio|file:PATH|unix:PATH]\n"
            "                    [--control PATH]\n"
            "       tern-vmm run --restore FILE [--mem SIZE] [--vcpus N] [--disk PATH[,ro]]...\n"
            "                    [--serial ...] [--control PATH]\n"
            "       tern-vmm ctl PATH status|pause|resume|stop\n"
            "       tern-vmm ctl PATH save FILE [--stop]\n"
            "       tern-vmm run --incoming tls://ADDR:PORT --tls-dir DIR --token T --mem SIZE\n"
            "                    [--vcpus N] [--disk PATH[,ro]]... [--serial ...] [--control PATH]\n"
            "                    [--commit-gate]\n"
            "       tern-vmm ctl PATH migrate tls://HOST:PORT --tls-dir DIR --token T\n"
            "                    [--downtime-ms N] [--streams N] [--max-seconds N] [--timeout-ms N]\n"
            "                    [--commit-gate]\n"
            "       tern-vmm ctl PATH migrate-cancel|migrate-commit|migrate-abort\n"
            "       tern-vmm --version\n"
            "\n"
            "run   boots a PVH ELF kernel or an LZ4-compressed Linux bzImage. The VM ends\n"
            "      when the guest writes its exit status to the debug-exit port (0x501),\n"
            "      on `ctl PATH stop`, or on SIGTERM/SIGINT (exit status 0).\n"
            "      --disk adds a virtio-blk disk backed by a raw image (,ro: read-only;\n"
            "      PATH without commas); --disk-rw PATH / --disk-ro PATH take any path\n"
            "      as it is, commas included. Disks are locked against other VM processes:\n"
            "      one writer, or any number of readers (docs/virtio-blk.md).\n"
            "      --restore continues a snapshot; options given must match it.\n"
            "ctl   sends one command to a running tern-vmm and prints the reply as JSON.\n"
            "      save pauses the VM, writes its state and memory to FILE atomically, then\n"
            "      resumes it (or, with --stop, ends it).\n"
            "--commit-gate (both sides): after the destination has everything, the guest\n"
            "      stays paused until the agent says migrate-commit (to either side) or\n"
            "      migrate-abort (docs/migration.md).\n"
            "\n"
            "exit status of run: the guest's debug-exit byte; 0 when stopped; %d bad\n"
            "arguments; %d set-up failed (missing file, bad kernel, no KVM, a disk image\n"
            "in use by another VM process); %d internal error; %d guest crashed (triple\n"
            "fault, KVM internal error, unhandled I/O); %d incoming migration failed or\n"
            "aborted (the guest never ran here).\n",
            VMM_EXIT_USAGE, VMM_EXIT_SETUP, VMM_EXIT_INTERNAL, VMM_EXIT_GUEST_CRASH,
            VMM_EXIT_MIGRATION);
}

static int signalfd_for_termination(struct tern_err *err)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return tern_err_errno(err, errno, "blocking termination signals");
    int fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd < 0)
        return tern_err_errno(err, errno, "signalfd");
    return fd;
}

/* The VMM's event loop (common/loop.h). Throughout: termination signals
 * and control clients. While an incoming migration is received: its
 * outcome. Then: the VM's end, its migration's phase changes (to
 * watchers) and serial input. */
struct vmm_loop {
    struct loop *loop;
    struct vm *vm;
    struct control_server *cs;
    struct mig_incoming *in; /* receiving: the guest has not run here */
    struct mig_source *mig;  /* the migration whose events are watched */
    int mig_fd;              /* ... its event fd, -1 if none */
};

static void on_signal(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)l;
    (void)events;
    struct vmm_loop *v = opaque;
    struct signalfd_siginfo si;
    if (read(fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
        return;
    if (v->in) {
        char why[128];
        snprintf(why, sizeof(why), "stopped by signal %s", strsignal((int)si.ssi_signo));
        (void)mig_incoming_abort(v->in, why); /* too late (committed): it runs */
    } else {
        vm_request_end(v->vm, VMM_EXIT_OK, "stopped by signal %s", strsignal((int)si.ssi_signo));
    }
}

/* The receive has an outcome: acted on before any later request (loop_stop
 * ends the round here). */
static void on_incoming_outcome(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)fd;
    (void)events;
    (void)opaque;
    loop_stop(l);
}

static void on_vm_end(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)fd;
    (void)events;
    (void)opaque;
    loop_stop(l);
}

static void on_migration_event(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)l;
    (void)fd;
    (void)events;
    struct vmm_loop *v = opaque;
    mig_source_event_drain(v->mig);
    json_t *ev = json_pack("{s:s, s:o*}", "event", "migration", "migration",
                           mig_source_status(v->mig));
    control_server_notify(v->cs, ev);
    json_decref(ev);
}

/* Watches the VM's current migration (a `migrate` command replaces it:
 * vmm_ctl.migration_changed calls this before and after). */
static void watch_migration(void *opaque, bool before_replace)
{
    struct vmm_loop *v = opaque;
    struct mig_source *m = before_replace ? NULL : v->vm->migration;
    int fd = mig_source_event_fd(m);
    if (m == v->mig && fd == v->mig_fd)
        return;
    if (v->mig_fd >= 0)
        loop_del_fd(v->loop, v->mig_fd);
    v->mig = m;
    v->mig_fd = -1;
    struct tern_err err;
    if (fd < 0)
        return;
    if (loop_add_fd(v->loop, fd, LOOP_READ, on_migration_event, v, &err) == 0)
        v->mig_fd = fd;
    else /* its status still answers; only the watchers miss the events */
        text_put_line(stderr, "tern-vmm: watching the migration's events: %s\n", err.msg);
}

/* Receives an incoming migration; returns its outcome, never PENDING. */
static enum mig_incoming_outcome receive(struct vmm_loop *v, struct tern_err *err)
{
    int fd = mig_incoming_fd(v->in);
    if (loop_add_fd(v->loop, fd, LOOP_READ, on_incoming_outcome, v, err) < 0)
        return MIG_INCOMING_FAILED;
    enum mig_incoming_outcome o;
    while ((o = mig_incoming_outcome(v->in, err)) == MIG_INCOMING_PENDING) {
        struct tern_err lerr;
        if (loop_run(v->loop, &lerr) < 0 && mig_incoming_abort(v->in, lerr.msg) != 1) {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = 10000000};
            nanosleep(&ts, NULL); /* the loop failed: nothing to wait on */
        }
    }
    loop_del_fd(v->loop, fd);
    return o;
}

static bool vm_ending(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    bool ending = vm->state == VM_STATE_ENDING;
    pthread_mutex_unlock(&vm->lock);
    return ending;
}

static void on_lock_retry(struct loop *l, void *opaque)
{
    (void)opaque;
    loop_stop(l);
}

/* The incoming migration committed here: the write locks of the
 * read-write disks (vm_lock_disks), before the guest may run. The source
 * lets go of them at its own commit, which may come a moment after this
 * side's (each agent tells its own VMM), so a disk still held is retried
 * from the loop, which keeps answering the control socket, for up to
 * DISK_LOCK_HANDOVER_MS; a stop (signal, or `stop`, flagged in
 * *stop_asked) ends the wait. */
static int take_disk_locks(struct vmm_loop *v, const bool *stop_asked, struct tern_err *err)
{
    if (vm_lock_disks(v->vm, false, err) == 0)
        return 0;
    if (err->code != TERN_ERR_CONFLICT)
        return -1;
    fprintf(stderr, "tern-vmm: waiting up to %d ms for the source to release its disk locks (%s)\n",
            DISK_LOCK_HANDOVER_MS, err->msg);
    if (loop_add_fd(v->loop, v->vm->end_eventfd, LOOP_READ, on_vm_end, v, err) < 0)
        return -1;
    int64_t start = loop_now_ms(), deadline = start + DISK_LOCK_HANDOVER_MS;
    int rc = -1;
    for (unsigned attempt = 0;; attempt++) {
        uint64_t t = loop_add_timer(v->loop, disk_lock_retry_ms(attempt), on_lock_retry, v);
        struct tern_err lerr;
        if (!t || loop_run(v->loop, &lerr) < 0) {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = 10000000};
            nanosleep(&ts, NULL); /* the loop failed: wait without it */
        }
        loop_del_timer(v->loop, t);
        if (vm_ending(v->vm) || *stop_asked) {
            tern_err_set(err, "told to stop while waiting for the source to release the disk locks");
            break;
        }
        bool last = loop_now_ms() >= deadline;
        if (vm_lock_disks(v->vm, last, err) == 0) {
            fprintf(stderr, "tern-vmm: disk locks taken after %lld ms\n",
                    (long long)(loop_now_ms() - start));
            rc = 0;
            break;
        }
        if (err->code != TERN_ERR_CONFLICT)
            break;
        if (last) {
            tern_err_prefix(err, "the source did not release its disk locks within %d ms",
                            DISK_LOCK_HANDOVER_MS);
            break;
        }
    }
    loop_del_fd(v->loop, v->vm->end_eventfd);
    return rc;
}

/* Runs until the VM ends. */
static void run_vm(struct vmm_loop *v)
{
    struct tern_err err;
    if (loop_add_fd(v->loop, v->vm->end_eventfd, LOOP_READ, on_vm_end, v, &err) < 0 ||
        dev_serial_attach(&v->vm->serial, v->loop, &err) < 0) {
        vm_request_end(v->vm, VMM_EXIT_INTERNAL, "%s", err.msg);
        return;
    }
    watch_migration(v, false);
    if (loop_run(v->loop, &err) < 0)
        vm_request_end(v->vm, VMM_EXIT_INTERNAL, "%s", err.msg);
    watch_migration(v, true);
    dev_serial_detach(&v->vm->serial);
    loop_del_fd(v->loop, v->vm->end_eventfd);
}

static int cmd_run(int argc, char **argv)
{
    struct run_options opts;
    struct tern_err err = {0};
    if (parse_run_options(argc, argv, &opts, &err) < 0) {
        text_put_line(stderr, "tern-vmm: %s\n", err.msg);
        return VMM_EXIT_USAGE;
    }
    signal(SIGPIPE, SIG_IGN);
    int sig_fd = signalfd_for_termination(&err);
    if (sig_fd < 0) {
        text_put_line(stderr, "tern-vmm: %s\n", err.msg);
        return VMM_EXIT_SETUP;
    }
    static struct snapshot_reader snap = {.fd = -1};
    if (opts.restore && (snapshot_open(&snap, opts.restore, &err) < 0 ||
                         snapshot_apply_config(&snap, &opts, &err) < 0)) {
        text_put_line(stderr, "tern-vmm: %s\n", err.msg);
        snapshot_close(&snap);
        close(sig_fd);
        return VMM_EXIT_SETUP;
    }
    static struct vm vm;
    if (vm_create(&vm, &opts, &err) < 0) {
        text_put_line(stderr, "tern-vmm: %s\n", err.msg);
        snapshot_close(&snap);
        close(sig_fd);
        return VMM_EXIT_SETUP;
    }
    if (opts.restore) {
        int rc = snapshot_restore(&snap, &vm, &err);
        snapshot_close(&snap);
        if (rc < 0) {
            text_put_line(stderr, "tern-vmm: restore failed: %s\n", err.msg);
            vm_destroy(&vm);
            close(sig_fd);
            return VMM_EXIT_SETUP;
        }
    }
    /* The control socket answers from here on, also while an incoming
     * migration is received. */
    static struct vmm_loop v;
    v = (struct vmm_loop){.vm = &vm, .mig_fd = -1};
    static struct vmm_ctl ctl;
    ctl = (struct vmm_ctl){.vm = &vm, .migration_changed = watch_migration, .loop_opaque = &v};
    struct control_server cs;
    struct control_server *csp = NULL;
    if (loop_new(&v.loop, &err) < 0 ||
        loop_add_fd(v.loop, sig_fd, LOOP_READ, on_signal, &v, &err) < 0) {
        text_put_line(stderr, "tern-vmm: %s\n", err.msg);
        loop_free(v.loop);
        vm_destroy(&vm);
        close(sig_fd);
        return VMM_EXIT_SETUP;
    }
    if (opts.control_path) {
        if (control_server_open(&cs, opts.control_path, vmm_commands, vmm_nr_commands, &ctl,
                                &err) < 0 ||
            control_server_attach(&cs, v.loop, &err) < 0) {
            text_put_line(stderr, "tern-vmm: %s\n", err.msg);
            control_server_close(&cs);
            loop_free(v.loop);
            vm_destroy(&vm);
            close(sig_fd);
            return VMM_EXIT_SETUP;
        }
        csp = &cs;
    }
    v.cs = csp;
    struct mig_incoming *incoming = NULL;
    if (opts.incoming) {
        enum mig_incoming_outcome o = MIG_INCOMING_FAILED;
        if (mig_incoming_start(&incoming, &vm, &opts, &err) == 0) {
            ctl.incoming = v.in = incoming;
            o = receive(&v, &err);
            v.in = NULL;
        }
        if (o == MIG_INCOMING_RUN && take_disk_locks(&v, &ctl.stop_after_start, &err) < 0) {
            o = MIG_INCOMING_FAILED;
            tern_err_prefix(&err, "the migration committed here");
        }
        if (o == MIG_INCOMING_RUN && vm_ending(&vm)) { /* a signal came after the commit */
            o = MIG_INCOMING_FAILED;
            tern_err_set(&err, "the migration committed here, but the VMM was told to stop before the "
                              "guest started");
        }
        if (o != MIG_INCOMING_RUN) {
            text_put_line(stderr, "tern-vmm: incoming migration failed: %s; the guest was not started here\n",
                    err.msg);
            ctl.incoming = NULL;
            mig_incoming_destroy(incoming);
            if (csp)
                control_server_close(csp);
            loop_free(v.loop);
            vm_destroy(&vm);
            close(sig_fd);
            return VMM_EXIT_MIGRATION;
        }
    }
    if (vm_start(&vm, &err) < 0)
        text_put_line(stderr, "tern-vmm: %s\n", err.msg);
    if (incoming) {
        mig_incoming_running(incoming); /* the source may end now */
        ctl.incoming = NULL;
        ctl.received = true;
        text_put_line(stderr, "tern-vmm: migration received; the guest runs here\n");
        json_t *ev = json_pack("{s:s}", "event", "running");
        control_server_notify(csp, ev);
        json_decref(ev);
        if (ctl.stop_after_start)
            vm_request_end(&vm, VMM_EXIT_OK, "stopped through the control socket");
    }
    run_vm(&v);
    int status = vm_join(&vm);
    text_put_line(stderr, "tern-vmm: VM ended: %s (exit status %d)\n", vm.exit_reason, status);
    if (csp)
        control_server_close(csp);
    loop_free(v.loop);
    vm_destroy(&vm);
    close(sig_fd);
    return status;
}

/* Builds the request for `ctl PATH save FILE [--stop]`; FILE is made
 * absolute, since the VMM may run in another directory. */
static json_t *save_request(int argc, char **argv)
{
    if (argc < 1 || argc > 2 || (argc == 2 && strcmp(argv[1], "--stop"))) {
        text_put_line(stderr, "tern-vmm ctl: usage: ctl PATH save FILE [--stop]\n");
        return NULL;
    }
    char file[PATH_MAX];
    if (argv[0][0] == '/') {
        snprintf(file, sizeof(file), "%s", argv[0]);
    } else {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof(cwd)) ||
            snprintf(file, sizeof(file), "%s/%s", cwd, argv[0]) >= (int)sizeof(file)) {
            text_put_line(stderr, "tern-vmm ctl: cannot make '%s' an absolute path\n", argv[0]);
            return NULL;
        }
    }
    return json_pack("{s:s, s:s, s:b}", "cmd", "save", "file", file, "stop", argc == 2);
}

/* `ctl PATH migrate tls://HOST:PORT --tls-dir DIR --token T [--downtime-ms N]
 * [--streams N] [--max-seconds N] [--timeout-ms N] [--commit-gate]`. */
static json_t *migrate_request(int argc, char **argv)
{
    if (argc < 1) {
        text_put_line(stderr, "tern-vmm ctl: usage: ctl PATH migrate tls://HOST:PORT --tls-dir DIR --token T "
                        "[--downtime-ms N] [--streams N] [--max-seconds N] [--timeout-ms N] [--commit-gate]\n");
        return NULL;
    }
    json_t *req = json_pack("{s:s, s:s}", "cmd", "migrate", "uri", argv[0]);
    for (int i = 1; i < argc; i += 2) {
        if (!strcmp(argv[i], "--commit-gate")) { /* no value */
            json_object_set_new(req, "commit_gate", json_true());
            i--;
            continue;
        }
        if (i + 1 >= argc) {
            text_put_line(stderr, "tern-vmm ctl: %s needs a value\n", argv[i]);
            json_decref(req);
            return NULL;
        }
        const char *o = argv[i], *v = argv[i + 1];
        char *end;
        if (!strcmp(o, "--tls-dir") || !strcmp(o, "--token")) {
            char abs[PATH_MAX];
            if (!strcmp(o, "--tls-dir") && v[0] != '/' && realpath(v, abs))
                v = abs;
            json_object_set_new(req, o[2] == 't' && o[3] == 'l' ? "tls_dir" : "token", json_string(v));
        } else if (!strcmp(o, "--downtime-ms") || !strcmp(o, "--streams") ||
                   !strcmp(o, "--max-seconds") || !strcmp(o, "--timeout-ms")) {
            double d = strtod(v, &end);
            if (*end || end == v) {
                text_put_line(stderr, "tern-vmm ctl: %s wants a number, not '%s'\n", o, v);
                json_decref(req);
                return NULL;
            }
            const char *key = !strcmp(o, "--downtime-ms")   ? "downtime_ms"
                              : !strcmp(o, "--streams")     ? "streams"
                              : !strcmp(o, "--timeout-ms")  ? "timeout_ms"
                                                            : "max_seconds";
            bool whole = !strcmp(key, "streams") || !strcmp(key, "timeout_ms");
            json_object_set_new(req, key, whole ? json_integer((json_int_t)d) : json_real(d));
        } else {
            text_put_line(stderr, "tern-vmm ctl: unknown migrate option '%s'\n", o);
            json_decref(req);
            return NULL;
        }
    }
    return req;
}

/* Follows a started migration through status until it has an outcome
 * (or, with the commit gate, reaches phase "ready": the agent decides
 * next), printing a progress line per change; returns the ctl exit
 * status. */
static int follow_migration(const char *path)
{
    char last[256] = "";
    for (;;) {
        json_t *req = json_pack("{s:s}", "cmd", "status");
        json_t *reply = NULL;
        struct tern_err err = {0};
        int rc = control_call(path, req, CTL_TIMEOUT_MS, &reply, &err);
        json_decref(req);
        if (rc < 0) {
            /* The source exits once the destination runs the guest. */
            printf("migration: %s stopped answering (it ends after a successful handover)\n", path);
            return 0;
        }
        json_t *m = json_object_get(reply, "migration");
        const char *outcome = json_string_value(json_object_get(m, "outcome"));
        if (outcome && *outcome) {
            char *s = json_dumps(m, JSON_INDENT(2) | JSON_SORT_KEYS);
            printf("%s\n", s ? s : "{}");
            free(s);
            int ok = !strcmp(outcome, "succeeded");
            json_decref(reply);
            return ok ? 0 : CTL_EXIT_FAILED;
        }
        if (!strcmp(json_string_value(json_object_get(m, "phase")) ?: "", "ready")) {
            printf("migration: ready: the destination holds the complete state and the guest is "
                   "paused here; now `ctl %s migrate-commit` or `ctl %s migrate-abort`\n",
                   path, path);
            json_decref(reply);
            return 0;
        }
        char line[256];
        snprintf(line, sizeof(line),
                 "migration: %s, sent %.1f MB, remaining %.1f MB, dirty %.1f MB/s, %.1f MB/s, "
                 "predicted pause %.1f ms",
                 json_string_value(json_object_get(m, "phase")) ?: "?",
                 (double)json_integer_value(json_object_get(m, "bytes_sent")) / 1e6,
                 (double)json_integer_value(json_object_get(m, "bytes_remaining")) / 1e6,
                 json_number_value(json_object_get(m, "dirty_MBps")),
                 json_number_value(json_object_get(m, "bandwidth_MBps")),
                 json_number_value(json_object_get(m, "predicted_pause_ms")));
        if (strcmp(line, last)) {
            printf("%s\n", line);
            fflush(stdout);
            snprintf(last, sizeof(last), "%s", line);
        }
        json_decref(reply);
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 200000000};
        nanosleep(&ts, NULL);
    }
}

static int cmd_ctl(int argc, char **argv)
{
    if (argc < 2) {
        text_put_line(stderr, "tern-vmm ctl: expected a socket path and a command\n");
        usage(stderr);
        return VMM_EXIT_USAGE;
    }
    const char *path = argv[0], *cmd = argv[1];
    json_t *req = NULL;
    int timeout_ms = CTL_TIMEOUT_MS;
    if (!strcmp(cmd, "save")) {
        req = save_request(argc - 2, argv + 2);
        timeout_ms = CTL_SAVE_TIMEOUT_MS;
        if (!req)
            return VMM_EXIT_USAGE;
    } else if (!strcmp(cmd, "migrate")) {
        req = migrate_request(argc - 2, argv + 2);
        if (!req)
            return VMM_EXIT_USAGE;
    } else {
        static const char *const known[] = {"status",         "pause",          "resume", "stop",
                                            "migrate-cancel", "migrate-commit", "migrate-abort"};
        int ok = 0;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            ok |= !strcmp(cmd, known[i]);
        if (!ok) {
            text_put_line(stderr, "tern-vmm ctl: unknown command '%s' (status, pause, resume, stop, save, "
                            "migrate, migrate-cancel, migrate-commit, migrate-abort)\n",
                    cmd);
            return VMM_EXIT_USAGE;
        }
        if (argc != 2) {
            text_put_line(stderr, "tern-vmm ctl: %s takes no arguments\n", cmd);
            return VMM_EXIT_USAGE;
        }
        req = json_pack("{s:s}", "cmd", cmd);
    }
    json_t *reply = NULL;
    struct tern_err err = {0};
    int rc = control_call(path, req, timeout_ms, &reply, &err);
    json_decref(req);
    if (rc < 0) {
        text_put_line(stderr, "tern-vmm ctl: %s\n", err.msg);
        return CTL_EXIT_UNAVAILABLE;
    }
    int status = json_is_true(json_object_get(reply, "ok")) ? 0 : CTL_EXIT_FAILED;
    if (status) {
        const char *e = json_string_value(json_object_get(reply, "error"));
        text_put_line(stderr, "tern-vmm ctl: %s failed: %s\n", cmd, e ? e : "(no reason given)");
    } else if (!strcmp(cmd, "migrate")) {
        json_decref(reply);
        return follow_migration(path);
    } else {
        char *s = json_dumps(reply, JSON_INDENT(2) | JSON_SORT_KEYS);
        if (s)
            printf("%s\n", s);
        free(s);
    }
    json_decref(reply);
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return VMM_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("tern-vmm %s\n", tern_version());
        return 0;
    }
    if (!strcmp(argv[1], "run"))
        return cmd_run(argc - 2, argv + 2);
    if (!strcmp(argv[1], "ctl"))
        return cmd_ctl(argc - 2, argv + 2);
    text_put_line(stderr, "tern-vmm: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return VMM_EXIT_USAGE;
}
