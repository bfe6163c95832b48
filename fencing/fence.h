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
 * fence_timeout, fence_device, fence_level, watchdog, watchdog_timeout. */
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

/* The device called `name`, or NULL. */
const struct fence_device *fence_config_device(const struct fence_config *c, const char *name);

/* The value of argument `key` of device d, or NULL. */
const char *fence_device_arg(const struct fence_device *d, const char *key);

#endif
