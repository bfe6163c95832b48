#include "version.h"

/* The Makefile passes -DTERN_VERSION="..." for this file. */
#ifndef TERN_VERSION
#error "TERN_VERSION is not defined: build with the Makefile (it sets VERSION)"
#endif

const char *tern_version(void)
{
    return TERN_VERSION;
}
