/* The version all three programs print with --version: `git describe` of
 * the tree they were built from, the package's version when built by
 * dpkg, or the VERSION file's (see scripts/version.sh and the Makefile's
 * VERSION variable). Compiled into common/version.o only, so a new
 * version rebuilds one object. */
#ifndef TERN_COMMON_VERSION_H
#define TERN_COMMON_VERSION_H

/* The version string, e.g. "0.1.0", "0.1.0-gc92ea72-dirty" or
 * "0.1.0-3-g1a2b3c4"; never NULL or empty. */
const char *tern_version(void);

#endif
