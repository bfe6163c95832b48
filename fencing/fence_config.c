/* Fencing configuration: the fence_* and watchdog lines of ternd.conf
 * (fence.h, docs/fencing.md). Pure parsing and bounds, except
 * fence_config_check, which looks at the file system. */
#include "fence.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void fence_config_defaults(struct fence_config *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->agent_dir, sizeof(c->agent_dir), "%s", FENCE_AGENT_DIR_DEFAULT);
    c->timeout_ms = FENCE_TIMEOUT_DEFAULT_S * 1000u;
    c->monitor_interval_s = FENCE_MONITOR_DEFAULT_S;
    c->watchdog_timeout_s = WATCHDOG_TIMEOUT_DEFAULT_S;
}

/* Names of devices and hosts: what the cluster accepts as a host name. */
static bool name_valid(const char *s, size_t len)
{
    if (len == 0 || len >= FENCE_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

/* fence_[a-z0-9_]+: a bare agent name, never a path. */
static bool agent_valid(const char *s)
{
    size_t len = strlen(s);
    if (len <= 6 || len >= FENCE_NAME_MAX || strncmp(s, "fence_", 6) != 0)
        return false;
    for (size_t i = 6; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

static bool key_valid(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || s[i] == '_'))
            return false;
    return true;
}

static int parse_uint(const char *v, unsigned min, unsigned max, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-' || v[0] == '+' || n < min || n > max)
        return -1;
    *out = (unsigned)n;
    return 0;
}

/* Splits `s` at blanks into at most `max` tokens (pointers into `s`, which
 * is modified). Returns the count, or max + 1 if there are more. */
static int split_blanks(char *s, char **tok, int max)
{
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(s, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (n == max)
            return max + 1;
        tok[n++] = t;
    }
    return n;
}

const struct fence_device *fence_config_device(const struct fence_config *c, const char *name)
{
    for (unsigned i = 0; i < c->nr_devices; i++)
        if (!strcmp(c->devices[i].name, name))
            return &c->devices[i];
    return NULL;
}

const char *fence_device_arg(const struct fence_device *d, const char *key)
{
    size_t klen = strlen(key);
    const char *a = d->args;
    for (unsigned i = 0; i < d->nr_args; i++) {
        if (!strncmp(a, key, klen) && a[klen] == '=')
            return a + klen + 1;
        a += strlen(a) + 1;
    }
    return NULL;
}

bool fence_config_has_levels(const struct fence_config *c, const char *host)
{
    for (unsigned i = 0; i < c->nr_levels; i++)
        if (!strcmp(c->levels[i].host, host))
            return true;
    return false;
}

size_t fence_config_host_devices(const struct fence_config *c, const char *host,
                                 const char **out, size_t max)
{
    size_t n = 0;
    for (unsigned index = 1; index <= FENCE_HOST_LEVELS_MAX; index++)
        for (unsigned i = 0; i < c->nr_levels; i++) {
            const struct fence_level *l = &c->levels[i];
            if (l->index != index || strcmp(l->host, host))
                continue;
            for (unsigned d = 0; d < l->nr_devices; d++) {
                bool seen = false;
                for (size_t k = 0; k < n && k < max && !seen; k++)
                    seen = !strcmp(out[k], l->devices[d]);
                if (seen)
                    continue;
                if (n < max)
                    out[n] = l->devices[d];
                n++;
            }
        }
    return n;
}

/* One key=value argument of a device, appended to d->args. */
static int add_arg(struct fence_device *d, const char *tok, size_t *used, const char *where,
                   struct tern_err *err)
{
    size_t len = strlen(tok);
    const char *eq = strchr(tok, '=');
    if (!eq)
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "%s: fence_device %s: argument '%s' is not key=value", where,
                              d->name, tok);
    size_t klen = (size_t)(eq - tok);
    if (!key_valid(tok, klen))
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "%s: fence_device %s: argument key '%.*s' must be lower-case "
                              "letters and '_'",
                              where, d->name, (int)klen, tok);
    if (len > FENCE_ARG_LEN_MAX)
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "%s: fence_device %s: argument '%.*s=...' is %zu bytes long; at "
                              "most %d",
                              where, d->name, (int)klen, tok, len, FENCE_ARG_LEN_MAX);
    const char *val = eq + 1;
    if (!*val)
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "%s: fence_device %s: argument '%.*s' has no value", where, d->name,
                              (int)klen, tok);
    for (const char *p = val; *p; p++)
        if ((unsigned char)*p < 0x21 || (unsigned char)*p == 0x7f)
            return tern_err_coded(err, TERN_ERR_INVALID,
                                  "%s: fence_device %s: argument '%.*s' has a control character",
                                  where, d->name, (int)klen, tok);
    char key[FENCE_ARG_LEN_MAX + 1];
    memcpy(key, tok, klen);
    key[klen] = '\0';
    if (!strcmp(key, "action"))
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "%s: fence_device %s: 'action' cannot be configured (each run "
                              "gives its own: off, reboot, on, status, monitor)",
                              where, d->name);
    if (!strcmp(key, "password") || !strcmp(key, "passwd"))
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "%s: fence_device %s: no '%s=' in ternd.conf (every host's copy "
                              "would hold the secret): put it in a file only root can read and "
                              "give password_file=PATH",
                              where, d->name, key);
    if (!strcmp(key, "password_file") && val[0] != '/')
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "%s: fence_device %s: password_file must be an absolute path, got "
                              "'%s'",
                              where, d->name, val);
    if (!strcmp(key, "password_file") && strlen(val) >= FENCE_PATH_MAX)
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "%s: fence_device %s: password_file is longer than %d bytes", where,
                              d->name, FENCE_PATH_MAX - 1);
    if (fence_device_arg(d, key))
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "%s: fence_device %s: argument '%s' is given twice", where, d->name,
                              key);
    if (d->nr_args == FENCE_DEVICE_ARGS_MAX)
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "%s: fence_device %s: more than %d arguments", where, d->name,
                              FENCE_DEVICE_ARGS_MAX);
    if (*used + len + 1 > sizeof(d->args))
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "%s: fence_device %s: its arguments are longer than %d bytes "
                              "together",
                              where, d->name, FENCE_ARGS_BYTES - 1);
    memcpy(d->args + *used, tok, len + 1);
    *used += len + 1;
    d->nr_args++;
    return 0;
}

/* fence_device = NAME AGENT KEY=VALUE... */
static int set_device(struct fence_config *c, char *v, const char *where, int line,
                      struct tern_err *err)
{
    char *tok[FENCE_DEVICE_ARGS_MAX + 3];
    int n = split_blanks(v, tok, FENCE_DEVICE_ARGS_MAX + 2);
    if (n < 2)
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "%s: fence_device needs a name and an agent: 'fence_device = NAME "
                              "fence_AGENT key=value...'",
                              where);
    if (n > FENCE_DEVICE_ARGS_MAX + 2)
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "%s: fence_device %s: more than %d arguments", where, tok[0],
                              FENCE_DEVICE_ARGS_MAX);
    if (!name_valid(tok[0], strlen(tok[0])))
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "%s: fence device name '%s' is not valid (letters, digits, '.', "
                              "'_', '-'; at most %d)",
                              where, tok[0], FENCE_NAME_MAX - 1);
    const struct fence_device *dup = fence_config_device(c, tok[0]);
    if (dup)
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "%s: fence_device %s is defined twice (first at line %d)", where,
                              tok[0], dup->line);
    if (!agent_valid(tok[1]))
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "%s: fence_device %s: agent '%s' is not a fence agent's name "
                              "(fence_ followed by a-z, 0-9, '_'; it is looked up in "
                              "fence_agent_dir, never given as a path)",
                              where, tok[0], tok[1]);
    if (c->nr_devices == FENCE_DEVICES_MAX)
        return tern_err_coded(err, TERN_ERR_INVALID, "%s: more than %d fence_device lines", where,
                              FENCE_DEVICES_MAX);
    struct fence_device *d = &c->devices[c->nr_devices];
    memset(d, 0, sizeof(*d));
    snprintf(d->name, sizeof(d->name), "%s", tok[0]);
    snprintf(d->agent, sizeof(d->agent), "%s", tok[1]);
    d->line = line;
    size_t used = 0;
    for (int i = 2; i < n; i++)
        if (add_arg(d, tok[i], &used, where, err) < 0)
            return -1;
    c->nr_devices++;
    return 0;
}

/* fence_level = HOST INDEX DEVICE[,DEVICE...] */
static int set_level(struct fence_config *c, char *v, const char *where, int line,
                     struct tern_err *err)
{
    char *tok[4];
    int n = split_blanks(v, tok, 3);
    if (n != 3)
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "%s: fence_level needs a host, an index and devices: 'fence_level = "
                              "HOST 1 DEVICE[,DEVICE...]'",
                              where);
    if (!name_valid(tok[0], strlen(tok[0])))
        return tern_err_coded(err, TERN_ERR_INVALID, "%s: fence_level: host name '%s' is not valid",
                              where, tok[0]);
    unsigned index;
    if (parse_uint(tok[1], 1, FENCE_HOST_LEVELS_MAX, &index) < 0)
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "%s: fence_level %s: index must be 1..%d, got '%s'", where, tok[0],
                              FENCE_HOST_LEVELS_MAX, tok[1]);
    for (unsigned i = 0; i < c->nr_levels; i++)
        if (!strcmp(c->levels[i].host, tok[0]) && c->levels[i].index == index)
            return tern_err_coded(err, TERN_ERR_INVALID,
                                  "%s: fence_level %s %u is defined twice (first at line %d)",
                                  where, tok[0], index, c->levels[i].line);
    if (c->nr_levels == FENCE_LEVELS_MAX)
        return tern_err_coded(err, TERN_ERR_INVALID, "%s: more than %d fence_level lines", where,
                              FENCE_LEVELS_MAX);
    struct fence_level *lv = &c->levels[c->nr_levels];
    memset(lv, 0, sizeof(*lv));
    snprintf(lv->host, sizeof(lv->host), "%s", tok[0]);
    lv->index = index;
    lv->line = line;
    const char *p = tok[2];
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (!name_valid(p, len))
            return tern_err_coded(err, TERN_ERR_INVALID,
                                  "%s: fence_level %s %u: '%.*s' is not a device name (devices "
                                  "are separated by commas, without blanks)",
                                  where, lv->host, index, (int)len, p);
        if (lv->nr_devices == FENCE_LEVEL_DEVICES_MAX)
            return tern_err_coded(err, TERN_ERR_INVALID,
                                  "%s: fence_level %s %u: more than %d devices", where, lv->host,
                                  index, FENCE_LEVEL_DEVICES_MAX);
        for (unsigned k = 0; k < lv->nr_devices; k++)
            if (strlen(lv->devices[k]) == len && !strncmp(lv->devices[k], p, len))
                return tern_err_coded(err, TERN_ERR_INVALID,
                                      "%s: fence_level %s %u: device %.*s is listed twice", where,
                                      lv->host, index, (int)len, p);
        memcpy(lv->devices[lv->nr_devices], p, len);
        lv->devices[lv->nr_devices][len] = '\0';
        lv->nr_devices++;
        if (!comma)
            break;
        p = comma + 1;
    }
    c->nr_levels++;
    return 0;
}

static int set_path(char *dst, const char *v, const char *key, const char *where,
                    struct tern_err *err)
{
    if (v[0] != '/')
        return tern_err_coded(err, TERN_ERR_INVALID, "%s: '%s' must be an absolute path, got '%s'",
                              where, key, v);
    if (strlen(v) >= FENCE_PATH_MAX)
        return tern_err_coded(err, TERN_ERR_INVALID, "%s: '%s' is longer than %d bytes", where,
                              key, FENCE_PATH_MAX - 1);
    snprintf(dst, FENCE_PATH_MAX, "%s", v);
    return 0;
}

int fence_config_set(struct fence_config *c, const char *key, const char *value,
                     const char *where, int line, struct tern_err *err)
{
    if (!strcmp(key, "fence_agent_dir"))
        return set_path(c->agent_dir, value, key, where, err);
    if (!strcmp(key, "fence_timeout")) {
        unsigned s;
        if (parse_uint(value, 1, FENCE_TIMEOUT_MAX_S, &s) < 0)
            return tern_err_coded(err, TERN_ERR_INVALID,
                                  "%s: fence_timeout must be 1..%d (seconds per agent run), got "
                                  "'%s'",
                                  where, FENCE_TIMEOUT_MAX_S, value);
        c->timeout_ms = s * 1000u;
        return 0;
    }
    if (!strcmp(key, "fence_monitor_interval")) {
        if (parse_uint(value, 0, FENCE_MONITOR_MAX_S, &c->monitor_interval_s) < 0)
            return tern_err_coded(err, TERN_ERR_INVALID,
                                  "%s: fence_monitor_interval must be 0..%d (seconds between "
                                  "checks of the fence devices; 0: none), got '%s'",
                                  where, FENCE_MONITOR_MAX_S, value);
        return 0;
    }
    if (!strcmp(key, "watchdog")) {
        if (!strcmp(value, "none")) {
            c->watchdog[0] = '\0';
            return 0;
        }
        return set_path(c->watchdog, value, key, where, err);
    }
    if (!strcmp(key, "watchdog_timeout")) {
        if (parse_uint(value, 1, WATCHDOG_TIMEOUT_MAX_S, &c->watchdog_timeout_s) < 0)
            return tern_err_coded(err, TERN_ERR_INVALID,
                                  "%s: watchdog_timeout must be 1..%d (whole seconds: Linux "
                                  "watchdogs count seconds), got '%s'",
                                  where, WATCHDOG_TIMEOUT_MAX_S, value);
        return 0;
    }
    if (strcmp(key, "fence_device") && strcmp(key, "fence_level"))
        return 1;
    char *copy = strdup(value);
    if (!copy)
        return tern_err_coded(err, TERN_ERR_INTERNAL, "%s: out of memory", where);
    int rc = !strcmp(key, "fence_device") ? set_device(c, copy, where, line, err)
                                          : set_level(c, copy, where, line, err);
    free(copy);
    return rc;
}

int fence_config_finish(struct fence_config *c, const char *origin, struct tern_err *err)
{
    for (unsigned i = 0; i < c->nr_levels; i++) {
        const struct fence_level *lv = &c->levels[i];
        for (unsigned k = 0; k < lv->nr_devices; k++)
            if (!fence_config_device(c, lv->devices[k]))
                return tern_err_coded(err, TERN_ERR_INVALID,
                                      "%s line %d: fence_level %s %u: no fence_device named '%s' "
                                      "(define it with 'fence_device = %s fence_AGENT ...')",
                                      origin, lv->line, lv->host, lv->index, lv->devices[k],
                                      lv->devices[k]);
    }
    return 0;
}

int fence_config_check(const struct fence_config *c, struct tern_err *err)
{
    for (unsigned i = 0; i < c->nr_devices; i++) {
        const struct fence_device *d = &c->devices[i];
        char path[FENCE_PATH_MAX + FENCE_NAME_MAX + 2];
        snprintf(path, sizeof(path), "%s/%s", c->agent_dir, d->agent);
        struct stat st;
        if (stat(path, &st) < 0)
            return tern_err_errno(err, errno,
                                  "line %d: fence_device %s: agent %s (install the package "
                                  "that has it, e.g. fence-agents, or set fence_agent_dir)",
                                  d->line, d->name, path);
        if (!S_ISREG(st.st_mode) || access(path, X_OK) < 0)
            return tern_err_set(err,
                                "line %d: fence_device %s: agent %s is not an executable file",
                                d->line, d->name, path);
    }
    if (c->watchdog[0]) {
        struct stat st;
        if (stat(c->watchdog, &st) < 0)
            return tern_err_errno(err, errno,
                                  "watchdog %s (load a watchdog driver, e.g. softdog, or "
                                  "remove the watchdog line)",
                                  c->watchdog);
        if (!S_ISCHR(st.st_mode) && !S_ISFIFO(st.st_mode))
            return tern_err_set(err, "watchdog %s is not a device", c->watchdog);
    }
    return 0;
}
