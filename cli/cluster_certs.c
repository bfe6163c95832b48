/* ternctl cluster init-ca / issue-cert: local work on a CA directory, with
 * migrate/certs.h making the certificates, so they are exactly what
 * migrations accept. */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../migrate/certs.h"

static int path_in(char *out, size_t cap, const char *dir, const char *name, struct tern_err *err)
{
    if ((size_t)snprintf(out, cap, "%s/%s", dir, name) >= cap)
        return tern_err_set(err, "path too long: %s/%s", dir, name);
    return 0;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static int fsync_dir(const char *dir, struct tern_err *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return tern_err_errno(err, errno, "opening %s", dir);
    int rc = fsync(fd) < 0 ? tern_err_errno(err, errno, "syncing %s", dir) : 0;
    close(fd);
    return rc;
}

/* --force: make the new CA beside the old one, keep the old files as .old,
 * then move the new ones in (key first: a ca.pem without its key is
 * useless; the same order as mig_certs_init_ca). */
static int replace_ca(const char *dir, const char *name, int days, struct tern_err *err)
{
    char tmp[4096], from[4200], to[4200];
    static const char *const files[] = {"ca-key.pem", "ca.pem"};
    if (path_in(tmp, sizeof(tmp), dir, ".init-ca-XXXXXX", err) < 0)
        return -1;
    if (!mkdtemp(tmp))
        return tern_err_errno(err, errno, "creating a temporary directory in %s", dir);
    int rc = -1;
    if (mig_certs_init_ca(tmp, name, days, err) < 0)
        goto out;
    for (size_t i = 0; i < 2; i++) {
        char old[4200];
        if (path_in(to, sizeof(to), dir, files[i], err) < 0 ||
            (size_t)snprintf(old, sizeof(old), "%s.old", to) >= sizeof(old))
            goto out;
        if (exists(to) && rename(to, old) < 0) {
            tern_err_errno(err, errno, "keeping the old %s as %s", to, old);
            goto out;
        }
    }
    for (size_t i = 0; i < 2; i++) {
        if (path_in(from, sizeof(from), tmp, files[i], err) < 0 ||
            path_in(to, sizeof(to), dir, files[i], err) < 0)
            goto out;
        if (rename(from, to) < 0) {
            tern_err_errno(err, errno, "moving the new %s into place", to);
            goto out;
        }
    }
    rc = fsync_dir(dir, err);
out:
    for (size_t i = 0; i < 2; i++)
        if (path_in(from, sizeof(from), tmp, files[i], NULL) == 0)
            unlink(from); /* left only on failure */
    if (rmdir(tmp) < 0 && rc == 0)
        rc = tern_err_errno(err, errno, "removing %s", tmp);
    return rc;
}

int cli_cluster_init_ca(const char *dir, const char *name, int days, bool force,
                        struct tern_err *err)
{
    char cert[4096], key[4096];
    if (path_in(cert, sizeof(cert), dir, "ca.pem", err) < 0 ||
        path_in(key, sizeof(key), dir, "ca-key.pem", err) < 0)
        return -1;
    bool have = exists(cert) || exists(key);
    if (have && !force)
        return tern_err_set(err,
                            "%s already holds a CA (ca.pem/ca-key.pem); a new CA would cut off every "
                            "host certified by the old one: use --force to replace it anyway",
                            dir);
    if (have)
        return replace_ca(dir, name, days, err);
    return mig_certs_init_ca(dir, name, days, err);
}

int cli_cluster_issue_cert(const char *dir, const char *host, int days, char *out_dir,
                           size_t out_len, struct tern_err *err)
{
    char key[4096];
    if (path_in(key, sizeof(key), dir, "ca-key.pem", err) < 0 ||
        path_in(out_dir, out_len, dir, host, err) < 0)
        return -1;
    if (!exists(key))
        return tern_err_set(err, "%s has no CA key (%s); create one with 'ternctl cluster init-ca %s'",
                            dir, key, dir);
    return mig_certs_issue(dir, out_dir, host, days, err);
}
