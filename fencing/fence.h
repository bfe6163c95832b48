/* Fencing drivers (design.md "High availability"; docs/fencing.md). This
 * module runs fence agents and feeds a watchdog; it knows nothing of the
 * cluster: which host to fence, when, and what to do with the outcome is
 * the caller's (agent/ha.c). Three parts, one header:
 *
 *   - configuration (fence_config.c): fence devices, each a fence agent
 *     of the fence-agents convention with its arguments; levels of devices
 *     per host; the agent timeout; the watchdog. Parsed from ternd.conf
 *     lines by agent/config.c through fence_config_set.
 *   - runs (fence_run.c, fence_op.c): one agent process with a deadline
 *     (fence_device_run), or the levels of one target host in order
 *     (fence_op_start). Asynchronous on a common/loop: nothing waits for a
 *     pipe or a process; results arrive through a callback, never from
 *     inside the call that started the work.
 *   - the watchdog (watchdog.c): a feeder thread that keeps a watchdog
 *     device from resetting the host only while the loop keeps saying the
 *     host is healthy (quorate and alive).
 *
 * Functions returning int give 0, or -1 with a message in err. */
#ifndef TERN_FENCING_FENCE_H
#define TERN_FENCING_FENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"
#include "../common/loop.h"

/* ---- configuration ---------------------------------------------------- */

/* Bounds: a line over one of them is a configuration error naming it. */
#define FENCE_NAME_MAX 64            /* device and host names: 1..63 of [A-Za-z0-9._-] */
#define FENCE_PATH_MAX 256           /* fence_agent_dir, watchdog, password files */
#define FENCE_DEVICES_MAX 32         /* fence_device lines */
#define FENCE_DEVICE_ARGS_MAX 16     /* key=value arguments of one device */
#define FENCE_ARG_LEN_MAX 255        /* one key=value argument */
#define FENCE_ARGS_BYTES 1536        /* all arguments of one device, NUL-separated */
#define FENCE_LEVELS_MAX 64          /* fence_level lines */
#define FENCE_HOST_LEVELS_MAX 9      /* levels of one host: index 1..9 */
#define FENCE_LEVEL_DEVICES_MAX 8    /* devices of one level */
#define FENCE_PASSWORD_MAX 255       /* bytes of a password file (one line) */

#define FENCE_AGENT_DIR_DEFAULT "/usr/sbin"
#define FENCE_TIMEOUT_DEFAULT_S 20
#define FENCE_TIMEOUT_MAX_S 600
/* A timed-out agent's process group gets SIGTERM, and SIGKILL this much
 * later if its leader has not ended by then. */
#define FENCE_KILL_GRACE_MS 2000
#define FENCE_MONITOR_DEFAULT_S 60
#define FENCE_MONITOR_MAX_S 86400
#define WATCHDOG_TIMEOUT_DEFAULT_S 10
#define WATCHDOG_TIMEOUT_MAX_S 600

/* `fence_device = NAME AGENT KEY=VALUE...` */
struct fence_device {
    char name[FENCE_NAME_MAX];
    char agent[FENCE_NAME_MAX];   /* fence_[a-z0-9_]+, found in agent_dir */
    unsigned nr_args;
    /* nr_args "key=value" strings one after the other, each ending in NUL,
     * in the order given; password_file=PATH among them (never handed to
     * the agent as such: its content is, as password=). */
    char args[FENCE_ARGS_BYTES];
    int line;                     /* of the configuration, for messages */
};

/* `fence_level = HOST INDEX DEVICE[,DEVICE...]` */
struct fence_level {
    char host[FENCE_NAME_MAX];
    unsigned index;               /* 1..9: tried in increasing order */
    unsigned nr_devices;
    char devices[FENCE_LEVEL_DEVICES_MAX][FENCE_NAME_MAX];
    int line;
};

struct fence_config {
    char agent_dir[FENCE_PATH_MAX];  /* fence_agent_dir */
    unsigned timeout_ms;             /* fence_timeout (seconds in the file) */
    unsigned monitor_interval_s;     /* fence_monitor_interval; 0: devices not checked */
    unsigned nr_devices;
    struct fence_device devices[FENCE_DEVICES_MAX];
    unsigned nr_levels;
    struct fence_level levels[FENCE_LEVELS_MAX];
    char watchdog[FENCE_PATH_MAX];   /* watchdog device; "" = none */
    unsigned watchdog_timeout_s;     /* watchdog_timeout */
};

void fence_config_defaults(struct fence_config *c);

/* One `key = value` line of ternd.conf (`where` is "FILE line N", `line`
 * that N). Returns 0 when the key is a fencing key and the value is good,
 * -1 with err when it is a fencing key and the value is not, 1 when the key
 * is not a fencing key (err untouched). Keys: fence_agent_dir,
 * fence_timeout, fence_monitor_interval, fence_device, fence_level,
 * watchdog, watchdog_timeout. */
int fence_config_set(struct fence_config *c, const char *key, const char *value,
                     const char *where, int line, struct tern_err *err);

/* After the last line: every level names devices that exist (a level may
 * come before the devices it names). `origin` names the file in messages. */
int fence_config_finish(struct fence_config *c, const char *origin, struct tern_err *err);

/* What only the file system can tell (ternd at start): every device's
 * agent exists in agent_dir and is executable, the watchdog (if any) is a
 * character device or a FIFO. Password files are read at run time. Errors
 * say "line N: ..." (the caller names the file). */
int fence_config_check(const struct fence_config *c, struct tern_err *err);

/* Whether `host` has at least one fence level. */
bool fence_config_has_levels(const struct fence_config *c, const char *host);

/* The devices of `host`'s levels, each once, in level order: up to `max`
 * names into `out` (pointers into c). Returns how many there are. */
size_t fence_config_host_devices(const struct fence_config *c, const char *host,
                                 const char **out, size_t max);

/* The device called `name`, or NULL. */
const struct fence_device *fence_config_device(const struct fence_config *c, const char *name);

/* The value of argument `key` of device d, or NULL. */
const char *fence_device_arg(const struct fence_device *d, const char *key);

/* ---- runs --------------------------------------------------------------- */

/* One agent run: the fence-agents calling convention. */
struct fence_result {
    bool ok;                 /* exit status 0 within the timeout */
    int exit_status;         /* or -1 if killed / could not start */
    bool timed_out;
    double ms;               /* wall time of the run */
    char device[64];
    char output[1024];       /* the tail of its stdout+stderr, for the operator;
                              * why it could not start, if it did not */
};

/* For `status` (and the on/off checks of other actions) fence agents exit 0
 * for "on", 2 for "off", anything else for "could not tell": */
#define FENCE_STATUS_OFF 2

/* The actions a run may ask for. */
bool fence_action_valid(const char *action);

/* One device, one action (e.g. `monitor` for `ternctl host list`, or
 * `status`). -1 with err (nothing started, done never called) for an
 * unknown device or action. Otherwise done(opaque, result) is called
 * exactly once, from a later loop callback (also when the agent could not
 * be started: a missing agent, a refused password file: ok false,
 * exit_status -1, the reason in output). `*out` (may be NULL) is the run
 * until done returns; it is freed then. `c` must stay valid and unchanged
 * until then. */
struct fence_run;
int fence_device_run(struct loop *l, const struct fence_config *c, const char *device,
                     const char *action, void (*done)(void *, const struct fence_result *),
                     void *opaque, struct fence_run **out, struct tern_err *err);
/* Kills the run's process group (SIGKILL); done is not called. The process
 * is reaped by a later loop callback (keep running the loop, or exit). Not
 * from inside the run's own done. */
void fence_run_cancel(struct fence_run *r);

/* A fence of one target host: its levels in order of index. All devices of
 * a level run in parallel; the level succeeds when every one of them
 * succeeds (when one fails, the others of its level are killed and the
 * next level starts); the first level that succeeds ends the fence with ok;
 * when every level failed, ok is false. `reboot` of a level with several
 * devices (say two PDUs of one host) is done as `off` on all of them, then
 * `on` on all of them (never one reboot after the other, which would leave
 * the host powered throughout); such a level succeeds when every `off`
 * did; the `on` runs are reported too. `runs` lists every run made, level
 * by level, in the order of the configuration (valid during the callback). */
struct fence_op;
typedef void (*fence_done_fn)(void *opaque, bool ok, const struct fence_result *runs,
                              size_t nr_runs);
/* action: "off", "reboot", "on", "status", "monitor". A host without
 * levels: -1, err says so (code not_found); an unknown action: -1
 * (invalid). Otherwise done is called exactly once from a later loop
 * callback, after which the op is freed. `c` must stay valid and unchanged
 * until then. `*out` may be NULL. */
int fence_op_start(struct loop *l, const struct fence_config *c, const char *host,
                   const char *action, fence_done_fn done, void *opaque, struct fence_op **out,
                   struct tern_err *err);
/* Kills its agents; done is not called. Not from inside its own done. */
void fence_op_cancel(struct fence_op *op);

/* ---- watchdog ------------------------------------------------------------ */

/* A watchdog device (/dev/watchdog; or a FIFO read by a stand-in in tests)
 * fed by a thread of its own: a keepalive every min(timeout/4, 250 ms), but
 * only while the last watchdog_healthy is younger than timeout/2. Once it
 * has let that window pass it never feeds again: the device resets the
 * host within `timeout` of the last keepalive, and nothing (a later
 * watchdog_healthy, a disarming close) stops that. So a host whose last
 * watchdog_healthy was at T is reset by T + watchdog_reset_deadline_ms():
 * what survivors may count on (docs/fencing.md). */
struct watchdog;

/* Opens and arms the device (one keepalive now; the open counts as a
 * healthy call), sets its timeout (WDIOC_SETTIMEOUT when the device has it;
 * a FIFO has not, which is fine). A device that insists on a longer
 * timeout than asked is refused (and disarmed). Never blocks: a FIFO
 * nobody reads yet is an error (ENXIO). */
int watchdog_open(const char *path, unsigned timeout_s, struct watchdog **out,
                  struct tern_err *err);
/* The loop says: quorate and alive, now. Cheap (an atomic store); call it
 * from a loop timer well within timeout/2. Any thread. */
void watchdog_healthy(struct watchdog *w);
/* Stops the thread and closes the device. With `disarm`, writes the magic
 * 'V' first so the device stops counting (an orderly shutdown of a healthy
 * host); without, the device keeps counting and resets the host unless
 * something opens and feeds it again in time. After the thread stopped
 * feeding (expired), nothing is written: the reset stays due. NULL is
 * ignored. */
void watchdog_close(struct watchdog *w, bool disarm);
/* The timeout the device runs with (what the device accepted). */
unsigned watchdog_timeout_s(const struct watchdog *w);
/* Milliseconds from a host's last watchdog_healthy by which its watchdog
 * has reset it: timeout/2 (still fed) + one feeding period (a keepalive
 * decided just before the window closed) + timeout (the device). */
int64_t watchdog_reset_deadline_ms(unsigned timeout_s);

struct watchdog_stats {
    uint64_t keepalives;     /* writes that fed it, the arming one included */
    uint64_t write_errors;
    int last_errno;          /* of the last failed write */
    bool expired;            /* it stopped feeding: the reset is due */
};
struct watchdog_stats watchdog_stats(struct watchdog *w);

#endif
