/* Which disk images a VM may use on this host (ternd.conf `image_dirs`,
 * `allow_block_devices`; docs/ternd.md "Disk images"): files inside the
 * image directories (by default shared_dir), resolved through every
 * symlink first so that a link cannot lead out of them; block devices only
 * when allowed; nothing else (no character devices, directories, FIFOs).
 * Checked where a request arrives (define: early, clear refusals) and
 * again by the host that starts the VM (its own policy, on the file as it
 * is then). */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* `path` is `dir` or below it (both resolved). */
static bool inside(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    if (n == 1 && dir[0] == '/')
        return true;
    return !strncmp(path, dir, n) && (path[n] == '/' || path[n] == '\0');
}

static bool has_dotdot(const char *p)
{
    for (const char *s = p; (s = strstr(s, "..")); s += 2)
        if ((s == p || s[-1] == '/') && (s[2] == '/' || s[2] == '\0'))
            return true;
    return false;
}

/* The allowed directories (image_dirs, else shared_dir), as "a, b". */
static void list_dirs(const struct ternd_config *c, char *out, size_t cap)
{
    size_t pos = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < c->nr_image_dirs && pos + 1 < cap; i++) {
        int w = snprintf(out + pos, cap - pos, "%s%s", i ? ", " : "", c->image_dirs[i]);
        if (w < 0)
            break;
        pos += (size_t)w < cap - pos ? (size_t)w : cap - pos - 1;
    }
    if (!c->nr_image_dirs && c->shared_dir[0] && cap > 0) {
        size_t n = strlen(c->shared_dir);
        if (n >= cap)
            n = cap - 1;
        memcpy(out, c->shared_dir, n);
        out[n] = '\0';
    }
}

int disk_policy_check(const struct ternd_config *c, const char *path, bool must_exist,
                      struct tern_err *err)
{
    char dirs[1024];
    list_dirs(c, dirs, sizeof(dirs));
    if (!dirs[0])
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "disk %s: this host allows no disk images (set image_dirs, or "
                              "shared_dir, in ternd.conf)", path);
    if (path[0] != '/')
        return tern_err_coded(err, TERN_ERR_INVALID, "disk %s: the path must be absolute", path);
    char real[PATH_MAX];
    const char *check = real;
    struct stat st;
    if (!realpath(path, real)) {
        int e = errno;
        if (e != ENOENT || must_exist)
            return tern_err_coded(err, TERN_ERR_INVALID, "disk %s: %s", path, strerror(e));
        /* Not there (yet) on this host: judged by its path alone, which must
         * not climb out with "..". The host that starts the VM checks the
         * file itself. */
        if (has_dotdot(path))
            return tern_err_coded(err, TERN_ERR_INVALID, "disk %s: the path must not contain "
                                  "'..'", path);
        check = path;
    } else {
        if (stat(real, &st) < 0)
            return tern_err_coded(err, TERN_ERR_INVALID, "disk %s: %s", path, strerror(errno));
        if (S_ISBLK(st.st_mode) && !c->allow_block_devices)
            return tern_err_coded(err, TERN_ERR_INVALID,
                                  "disk %s is a block device (%s); this host allows only image "
                                  "files (allow_block_devices = yes in ternd.conf allows them)",
                                  path, real);
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
            return tern_err_coded(err, TERN_ERR_INVALID,
                                  "disk %s is not a regular file%s", path,
                                  c->allow_block_devices ? " or a block device" : "");
    }
    unsigned n = c->nr_image_dirs ? c->nr_image_dirs : 1;
    for (unsigned i = 0; i < n; i++) {
        const char *dir = c->nr_image_dirs ? c->image_dirs[i] : c->shared_dir;
        char rdir[PATH_MAX];
        if (inside(check, dir) || (realpath(dir, rdir) && inside(check, rdir)))
            return 0;
    }
    if (check == real && strcmp(real, path) != 0)
        return tern_err_coded(err, TERN_ERR_INVALID,
                              "disk %s resolves to %s, outside the image directories of this "
                              "host (%s)", path, real, dirs);
    return tern_err_coded(err, TERN_ERR_INVALID,
                          "disk %s is outside the image directories of this host (%s; "
                          "image_dirs in ternd.conf)", path, dirs);
}
