/* Prometheus metrics (docs/ternd.md "Metrics"): an HTTP server on
 * metrics_addr (off unless set) that answers GET /metrics with the text
 * exposition format, built in memory at each scrape.
 *
 * The server is libmicrohttpd without threads of its own (MHD_USE_EPOLL
 * without MHD_USE_INTERNAL_POLLING_THREAD): its epoll fd sits in ternd's
 * loop; when it is readable, and when the timer MHD_get_timeout asks for
 * expires, MHD_run does the work there is (accept, read, write, time out)
 * without waiting, and the request callback runs on the loop's thread, so it
 * reads the agent's state like any other handler. Connections are few
 * (METRICS_MAX_CONNECTIONS) and time out (METRICS_CONNECTION_TIMEOUT_S).
 *
 * Gauges are computed from this host's replica at scrape time. Counters and
 * histograms are this ternd's own since it started: every host applies
 * every state message, so the cluster-wide ones (migrations, evacuations)
 * agree between hosts whose ternd ran over the same time; the HA ones
 * (fence attempts, failovers, restarts) count what this host did. */
#include "agent.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define METRICS_MAX_CONNECTIONS 8
#define METRICS_CONNECTION_TIMEOUT_S 10
#define METRICS_CONNECTION_MEMORY (16 * 1024)
/* MHD's error lines go to ternd's log, at most this many a minute. */
#define METRICS_LOG_PER_MINUTE 10
#define METRICS_MAX_BUCKETS 16

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Bucket upper bounds (seconds), +Inf implied. */
static const double migration_buckets[] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300};
/* Guest pause: the target is 50 ms (design.md "Convergence"). */
static const double pause_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                       0.1,   0.25,   0.5,   1,    2};
/* Failover: membership (~0.7 s) + fence + restart; timeouts as backstop. */
static const double failover_buckets[] = {0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120};

struct histogram {
    const double *bounds;
    size_t nr;                               /* bounds; counts has nr + 1 (+Inf) */
    uint64_t counts[METRICS_MAX_BUCKETS + 1]; /* per bucket, not cumulative */
    uint64_t count;
    double sum;
};

enum mig_outcome { OUT_SUCCEEDED, OUT_FAILED, OUT_CANCELLED, OUT__COUNT };
static const char *const outcome_names[OUT__COUNT] = {"succeeded", "failed", "cancelled"};

/* A migration in flight when the last message was applied. */
struct tracked {
    uint64_t id;
    char vm[CL_NAME_MAX];
};

struct metrics {
    struct agent *a;
    struct MHD_Daemon *mhd;
    int epoll_fd;
    uint64_t timer;
    double start_time;                  /* wall clock, for tern_agent_start_time_seconds */
    /* counters since this ternd started */
    uint64_t migrations[OUT__COUNT];
    uint64_t sent_bytes;
    uint64_t evacuations;
    uint64_t vm_restarts;
    uint64_t fences[2];                 /* [0] failed, [1] succeeded */
    struct histogram mig_duration, mig_pause, failover;
    /* Migrations that end without migration_done or migration_abort (a
     * membership change, the VM process ended, the host was removed or
     * fenced) are found missing from the state after the next message. */
    struct tracked *inflight;
    size_t nr_inflight, cap_inflight;
    uint64_t lineage;                   /* a->lineage the list belongs to */
    bool tracking;
    /* log rate limit */
    double log_window;
    unsigned log_lines;
};

static void histogram_init(struct histogram *h, const double *bounds, size_t nr)
{
    memset(h, 0, sizeof(*h));
    h->bounds = bounds;
    h->nr = nr < METRICS_MAX_BUCKETS ? nr : METRICS_MAX_BUCKETS;
}

static void histogram_observe(struct histogram *h, double v)
{
    if (!(v >= 0)) /* negative or NaN: not a duration */
        return;
    size_t i = 0;
    while (i < h->nr && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->count++;
    h->sum += v;
}

/* --- the text exposition format --- */

/* The shortest decimal form that reads back as the same double. */
static void fmt_double(char *out, size_t len, double v)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, len, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample_u64(FILE *f, const char *name, const char *labels, uint64_t v)
{
    fprintf(f, "%s%s %" PRIu64 "\n", name, labels ? labels : "", v);
}

static void sample_double(FILE *f, const char *name, double v)
{
    char num[40];
    fmt_double(num, sizeof(num), v);
    fprintf(f, "%s %s\n", name, num);
}

static void write_histogram(FILE *f, const char *name, const char *help, const struct histogram *h)
{
    family(f, name, "histogram", help);
    uint64_t cumulative = 0;
    char le[40];
    for (size_t i = 0; i <= h->nr; i++) {
        cumulative += h->counts[i];
        if (i < h->nr)
            fmt_double(le, sizeof(le), h->bounds[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        fprintf(f, "%s_bucket{le=\"%s\"} %" PRIu64 "\n", name, le, cumulative);
    }
    char sum[40];
    fmt_double(sum, sizeof(sum), h->sum);
    fprintf(f, "%s_sum %s\n%s_count %" PRIu64 "\n", name, sum, name, h->count);
}

/* A host's state as `ternctl host list` shows it. */
enum host_state { HS_ONLINE, HS_OFFLINE, HS_LOST, HS_FENCING, HS_FENCE_FAILED, HS_FENCED, HS__COUNT };
static const char *const host_state_names[HS__COUNT] = {"online",  "offline",      "lost",
                                                        "fencing", "fence-failed", "fenced"};

static enum host_state host_state(const struct cl_host *h)
{
    switch (h->fence) {
    case CL_FENCE_PENDING:
        return HS_FENCING;
    case CL_FENCE_FAILED:
        return HS_FENCE_FAILED;
    case CL_FENCE_FENCED:
        return HS_FENCED;
    case CL_FENCE_NONE:
        break;
    }
    return h->lost ? HS_LOST : h->online ? HS_ONLINE : HS_OFFLINE;
}

#define NR_VM_STATES (CL_RUN_LOST + 1)

static void write_gauges(FILE *f, struct agent *a)
{
    struct cl_state *s = agent_state(a);
    size_t hosts[HS__COUNT] = {0}, maintenance = 0, online = 0, check_failing = 0;
    for (size_t i = 0; i < cl_state_nr_hosts(s); i++) {
        const struct cl_host *h = cl_state_host_at(s, i);
        hosts[host_state(h)]++;
        check_failing += h->fence_check == CL_CHECK_FAILING;
        maintenance += h->mode == CL_HOST_MAINTENANCE;
        online += h->online;
    }
    size_t vms[NR_VM_STATES] = {0};
    for (size_t i = 0; i < cl_state_nr_vms(s); i++) {
        const struct cl_vm *vm = cl_state_vm_at(s, i);
        if ((unsigned)vm->run < NR_VM_STATES)
            vms[vm->run]++;
    }
    char labels[64];

    family(f, "tern_cluster_quorate", "gauge",
           "1 when this host is in a quorate partition (the cluster state's configuration "
           "and this node's votequorum agree), as in ternctl status.");
    sample_u64(f, "tern_cluster_quorate", NULL, cl_state_quorate(s) && a->quorate);
    family(f, "tern_cluster_ready", "gauge",
           "1 when this host's replica of the cluster state is in step with the cluster "
           "(synced, no sync round open): the other gauges are current.");
    sample_u64(f, "tern_cluster_ready", NULL, replica_ready(a->replica));
    family(f, "tern_cluster_members", "gauge", "Hosts whose ternd is in the cluster (online).");
    sample_u64(f, "tern_cluster_members", NULL, online);
    family(f, "tern_cluster_expected_votes", "gauge",
           "Expected votes (corosync's votequorum) the cluster's quorum is counted against.");
    sample_u64(f, "tern_cluster_expected_votes", NULL, cl_state_expected_votes(s));

    family(f, "tern_hosts", "gauge",
           "Hosts in the cluster by state, as ternctl host list shows it (online, offline, "
           "lost, fencing, fence-failed, fenced).");
    for (int i = 0; i < HS__COUNT; i++) {
        snprintf(labels, sizeof(labels), "{state=\"%s\"}", host_state_names[i]);
        sample_u64(f, "tern_hosts", labels, hosts[i]);
    }
    family(f, "tern_hosts_maintenance", "gauge",
           "Hosts in maintenance mode (evacuated; nothing is placed on them).");
    sample_u64(f, "tern_hosts_maintenance", NULL, maintenance);

    family(f, "tern_hosts_fence_check_failing", "gauge",
           "Hosts whose fence devices did not all answer their last check (monitor, run by "
           "the host that would fence them): fencing them would fail now.");
    sample_u64(f, "tern_hosts_fence_check_failing", NULL, check_failing);

    family(f, "tern_vms", "gauge", "VMs defined in the cluster by state.");
    for (int i = 0; i < NR_VM_STATES; i++) {
        snprintf(labels, sizeof(labels), "{state=\"%s\"}", cl_vm_run_name((enum cl_vm_run)i));
        sample_u64(f, "tern_vms", labels, vms[i]);
    }
    family(f, "tern_vms_recovering", "gauge",
           "HA VMs of fenced hosts waiting for a host with room.");
    sample_u64(f, "tern_vms_recovering", NULL, cl_state_nr_recovering(s));
    family(f, "tern_migrations_in_flight", "gauge", "Migrations in flight in the cluster.");
    sample_u64(f, "tern_migrations_in_flight", NULL, cl_state_nr_migrations(s));
}

static void write_counters(FILE *f, const struct metrics *m)
{
    char labels[64];
    family(f, "tern_agent_start_time_seconds", "gauge",
           "When this ternd started (Unix time); the counters below count since then.");
    sample_double(f, "tern_agent_start_time_seconds", m->start_time);

    family(f, "tern_migrations_total", "counter",
           "Migrations in the cluster that ended, by outcome, since this ternd started "
           "(every host sees every migration end; a restart resets the count).");
    for (int i = 0; i < OUT__COUNT; i++) {
        snprintf(labels, sizeof(labels), "{outcome=\"%s\"}", outcome_names[i]);
        sample_u64(f, "tern_migrations_total", labels, m->migrations[i]);
    }
    write_histogram(f, "tern_migration_duration_seconds",
                    "How long succeeded migrations sent (the source VMM's elapsed time), since "
                    "this ternd started.",
                    &m->mig_duration);
    write_histogram(f, "tern_migration_guest_pause_seconds",
                    "The pause the guest observed at the handover of succeeded migrations, since "
                    "this ternd started.",
                    &m->mig_pause);
    family(f, "tern_migration_sent_bytes_total", "counter",
           "Bytes the source VMMs of succeeded migrations sent, since this ternd started.");
    sample_u64(f, "tern_migration_sent_bytes_total", NULL, m->sent_bytes);
    family(f, "tern_evacuations_total", "counter",
           "Host evacuations started in the cluster (host_mode maintenance applied: "
           "ternctl host evacuate), since this ternd started.");
    sample_u64(f, "tern_evacuations_total", NULL, m->evacuations);
    family(f, "tern_vm_restarts_total", "counter",
           "HA restarts of VMs placed on this host, since this ternd started.");
    sample_u64(f, "tern_vm_restarts_total", NULL, m->vm_restarts);
    family(f, "tern_fence_attempts_total", "counter",
           "Fencing attempts this host ran (as the fencer), by result, since this ternd "
           "started.");
    sample_u64(f, "tern_fence_attempts_total", "{result=\"succeeded\"}", m->fences[1]);
    sample_u64(f, "tern_fence_attempts_total", "{result=\"failed\"}", m->fences[0]);
    write_histogram(f, "tern_failover_duration_seconds",
                    "From a host lost to its HA VMs placed elsewhere, for failovers this host "
                    "ran, since this ternd started.",
                    &m->failover);
}

/* The whole page (malloc'd, *len bytes), or NULL when out of memory. */
static char *render(struct metrics *m, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (!f)
        return NULL;
    write_gauges(f, m->a);
    write_counters(f, m);
    bool failed = ferror(f) != 0;
    if (fclose(f) != 0 || failed) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* --- counting --- */

static void count_outcome(struct metrics *m, const char *outcome)
{
    enum mig_outcome o = OUT_FAILED;
    if (outcome && !strcmp(outcome, "succeeded"))
        o = OUT_SUCCEEDED;
    else if (outcome && !strcmp(outcome, "cancelled"))
        o = OUT_CANCELLED;
    m->migrations[o]++;
}

static void count_done(struct metrics *m, const json_t *result)
{
    m->migrations[OUT_SUCCEEDED]++;
    json_t *v = json_object_get(result, "migration_s");
    if (json_is_number(v))
        histogram_observe(&m->mig_duration, json_number_value(v));
    v = json_object_get(result, "guest_pause_ms");
    if (json_is_number(v))
        histogram_observe(&m->mig_pause, json_number_value(v) / 1000.0);
    v = json_object_get(result, "bytes_sent");
    if (json_is_number(v) && json_number_value(v) > 0 && json_number_value(v) < 1e18)
        m->sent_bytes += (uint64_t)json_number_value(v);
}

/* Remembers the migrations in flight now (out of memory: stops tracking
 * until the next message, when it starts over without counting). The
 * first message after start sets the first list. */
static void track_inflight(struct metrics *m, struct cl_state *s)
{
    size_t n = cl_state_nr_migrations(s);
    if (n > m->cap_inflight) {
        size_t cap = n < 16 ? 16 : n * 2;
        struct tracked *t = realloc(m->inflight, cap * sizeof(*t));
        if (!t) {
            m->tracking = false;
            return;
        }
        m->inflight = t;
        m->cap_inflight = cap;
    }
    for (size_t i = 0; i < n; i++) {
        const struct cl_migration *mg = cl_state_migration_at(s, i);
        m->inflight[i].id = mg->id;
        memcpy(m->inflight[i].vm, mg->vm, sizeof(m->inflight[i].vm));
    }
    m->nr_inflight = n;
    m->tracking = true;
    m->lineage = m->a->lineage;
}

void metrics_on_applied(struct agent *a, const json_t *msg, int rc)
{
    struct metrics *m = a->metrics;
    if (!m)
        return;
    struct cl_state *s = agent_state(a);
    uint64_t ended = 0;
    if (rc == 0 && msg) {
        switch (cl_msg_type_of(msg)) {
        case CL_MSG_MIGRATION_DONE:
            ended = (uint64_t)json_integer_value(json_object_get(msg, "id"));
            count_done(m, json_object_get(msg, "result"));
            break;
        case CL_MSG_MIGRATION_ABORT: {
            ended = (uint64_t)json_integer_value(json_object_get(msg, "id"));
            const char *outcome = json_string_value(json_object_get(msg, "outcome"));
            count_outcome(m, outcome ? outcome : "failed");
            break;
        }
        case CL_MSG_HOST_MODE: {
            const char *mode = json_string_value(json_object_get(msg, "mode"));
            if (mode && !strcmp(mode, "maintenance"))
                m->evacuations++;
            break;
        }
        default:
            break;
        }
    }
    /* Ended some other way since the last message (not across a state
     * that was replaced: those ends happened elsewhere, or not at all). */
    if (m->tracking && m->lineage == a->lineage) {
        for (size_t i = 0; i < m->nr_inflight; i++) {
            const struct tracked *t = &m->inflight[i];
            if (t->id == ended || cl_state_migration(s, t->id))
                continue;
            const struct cl_vm *vm = cl_state_vm(s, t->vm);
            const json_t *last = vm ? vm->last_migration : NULL;
            bool same = last && (uint64_t)json_integer_value(json_object_get(last, "id")) == t->id;
            count_outcome(m, same ? json_string_value(json_object_get(last, "outcome")) : NULL);
        }
    }
    track_inflight(m, s);
}

void metrics_count_fence(struct agent *a, bool ok)
{
    if (a->metrics)
        a->metrics->fences[ok ? 1 : 0]++;
}

void metrics_observe_failover(struct agent *a, double seconds)
{
    if (a->metrics)
        histogram_observe(&a->metrics->failover, seconds);
}

void metrics_count_vm_restart(struct agent *a)
{
    if (a->metrics)
        a->metrics->vm_restarts++;
}

/* --- the HTTP server --- */

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct metrics *m = cls;
    double now = agent_now();
    if (now - m->log_window >= 60) {
        m->log_window = now;
        m->log_lines = 0;
    }
    if (++m->log_lines > METRICS_LOG_PER_MINUTE) {
        if (m->log_lines == METRICS_LOG_PER_MINUTE + 1)
            agent_log("metrics (HTTP): more messages this minute are not logged\n");
        return;
    }
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && line[n - 1] == '\n')
        line[--n] = '\0';
    agent_log("metrics (HTTP): %s\n", line);
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text,
                                  const char *allow)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO; /* out of memory: MHD closes the connection */
    enum MHD_Result ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                                 "text/plain; charset=utf-8");
    if (ok == MHD_YES && allow)
        ok = MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    if (ok == MHD_YES)
        ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

/* Every request, on the loop's thread (inside MHD_run). Answered on its
 * first call, before any body: nothing here takes a body. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct metrics *m = cls;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    if (strcmp(url, "/metrics") != 0)
        return reply_text(c, MHD_HTTP_NOT_FOUND, "not found: this server has /metrics only\n",
                          NULL);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: use GET\n",
                          "GET, HEAD");
    size_t len = 0;
    char *page = render(m, &len);
    if (!page)
        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n", NULL);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, page, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(page);
        return MHD_NO;
    }
    enum MHD_Result ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, CONTENT_TYPE);
    if (ok == MHD_YES)
        ok = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ok;
}

static void run_mhd(struct metrics *m);

static void on_mhd_timer(struct loop *l, void *opaque)
{
    (void)l;
    struct metrics *m = opaque;
    m->timer = 0;
    run_mhd(m);
}

static void on_mhd_fd(struct loop *l, int fd, unsigned events, void *opaque)
{
    (void)l;
    (void)fd;
    (void)events;
    run_mhd(opaque);
}

/* Lets MHD do what is ready (it never waits: epoll_wait with 0, non-blocking
 * sockets), then asks when it wants to run again even if no fd wakes it:
 * at once when it has data in hand, at its next connection timeout, or
 * never. */
static unsigned nr_connections(struct MHD_Daemon *d)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return i ? i->num_connections : 0;
}

static void run_mhd(struct metrics *m)
{
    unsigned before = nr_connections(m->mhd);
    MHD_run(m->mhd);
    /* At the connection limit MHD takes its listening socket out of its
     * epoll set, and puts it back at the start of a run, not when a
     * connection closes: after closing some, run once more, or a client
     * waiting to be accepted waits for an event that never comes. */
    if (nr_connections(m->mhd) < before)
        MHD_run(m->mhd);
    loop_del_timer(m->a->loop, m->timer);
    m->timer = 0;
    MHD_UNSIGNED_LONG_LONG ms;
    if (MHD_get_timeout(m->mhd, &ms) == MHD_YES) {
        int64_t wait = ms > 60000 ? 60000 : (int64_t)ms;
        m->timer = loop_add_timer(m->a->loop, wait, on_mhd_timer, m);
        if (!m->timer)
            agent_log("metrics: out of memory arming a timer; idle metrics connections may "
                      "stay open until their next activity\n");
    }
}

/* The listening socket, made here for errors that say what failed. */
static int listen_socket(const struct ternd_config *cfg, struct tern_err *err)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t sl;
    bool v6 = strchr(cfg->metrics_host, ':') != NULL;
    if (v6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(cfg->metrics_port);
        if (inet_pton(AF_INET6, cfg->metrics_host, &s6->sin6_addr) != 1)
            return tern_err_set(err, "metrics_addr: '%s' is not an IPv6 address",
                                cfg->metrics_host);
        sl = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(cfg->metrics_port);
        if (inet_pton(AF_INET, cfg->metrics_host, &s4->sin_addr) != 1)
            return tern_err_set(err, "metrics_addr: '%s' is not an IPv4 address",
                                cfg->metrics_host);
        sl = sizeof(*s4);
    }
    char where[CL_ADDR_MAX + 16];
    snprintf(where, sizeof(where), v6 ? "[%s]:%u" : "%s:%u", cfg->metrics_host,
             (unsigned)cfg->metrics_port);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return tern_err_errno(err, errno, "metrics_addr %s: creating a socket", where);
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (v6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)) {
        int e = errno;
        close(fd);
        return tern_err_errno(err, e, "metrics_addr %s: setting socket options", where);
    }
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0) {
        int e = errno;
        close(fd);
        const char *why = e == EADDRINUSE      ? " (another program listens on that port)"
                          : e == EADDRNOTAVAIL ? " (not an address of this host)"
                          : e == EACCES        ? " (a port below 1024 needs privileges)"
                                               : "";
        return tern_err_set(err, "metrics_addr %s: cannot listen there: %s%s; change "
                            "metrics_addr in ternd.conf, or remove it to run without metrics",
                            where, strerror(e), why);
    }
    if (listen(fd, 16) < 0) {
        int e = errno;
        close(fd);
        return tern_err_errno(err, e, "metrics_addr %s: listen", where);
    }
    return fd;
}

int metrics_open(struct agent *a, struct tern_err *err)
{
    if (!a->cfg.metrics_port)
        return 0; /* off */
    struct metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return tern_err_set(err, "out of memory");
    m->a = a;
    m->epoll_fd = -1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    m->start_time = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    histogram_init(&m->mig_duration, migration_buckets,
                   sizeof(migration_buckets) / sizeof(migration_buckets[0]));
    histogram_init(&m->mig_pause, pause_buckets, sizeof(pause_buckets) / sizeof(pause_buckets[0]));
    histogram_init(&m->failover, failover_buckets,
                   sizeof(failover_buckets) / sizeof(failover_buckets[0]));
    int fd = listen_socket(&a->cfg, err);
    if (fd < 0) {
        free(m);
        return -1;
    }
    /* From here MHD owns fd (it closes it when stopped, and on some of its
     * own failures: after a failure it is left alone, ternd exits). */
    m->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, m,
                              MHD_OPTION_EXTERNAL_LOGGER, mhd_log, m,
                              MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_MAX_CONNECTIONS,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_CONNECTION_TIMEOUT_S,
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                              (size_t)METRICS_CONNECTION_MEMORY, MHD_OPTION_END);
    if (!m->mhd) {
        free(m);
        return tern_err_set(err, "metrics_addr %s:%u: the HTTP server (libmicrohttpd) did not "
                            "start (see the lines above); remove metrics_addr from ternd.conf "
                            "to run without metrics", a->cfg.metrics_host,
                            (unsigned)a->cfg.metrics_port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    m->epoll_fd = info ? info->epoll_fd : -1;
    if (m->epoll_fd < 0) {
        MHD_stop_daemon(m->mhd);
        free(m);
        return tern_err_set(err, "metrics: libmicrohttpd gave no epoll fd (built without "
                                 "epoll?); remove metrics_addr from ternd.conf");
    }
    if (loop_add_fd(a->loop, m->epoll_fd, LOOP_READ, on_mhd_fd, m, err) < 0) {
        MHD_stop_daemon(m->mhd);
        free(m);
        return tern_err_prefix(err, "metrics");
    }
    a->metrics = m;
    run_mhd(m);
    agent_log("metrics on http://%s%s%s:%u/metrics\n", strchr(a->cfg.metrics_host, ':') ? "[" : "",
              a->cfg.metrics_host, strchr(a->cfg.metrics_host, ':') ? "]" : "",
              (unsigned)a->cfg.metrics_port);
    return 0;
}

void metrics_close(struct agent *a)
{
    struct metrics *m = a->metrics;
    if (!m)
        return;
    loop_del_timer(a->loop, m->timer);
    loop_del_fd(a->loop, m->epoll_fd);
    MHD_stop_daemon(m->mhd); /* closes its connections, the listening socket, its epoll fd */
    free(m->inflight);
    free(m);
    a->metrics = NULL;
}
