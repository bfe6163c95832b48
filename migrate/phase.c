/* The source's migration phases and their names (migrate.h). */
#include "migrate.h"

#include <string.h>

static const char *const names[MIG_PHASE__COUNT] = {
    [MIG_PHASE_STARTING] = "starting",
    [MIG_PHASE_CONNECTING] = "connecting",
    [MIG_PHASE_ROUND] = "round",
    [MIG_PHASE_STOP_AND_COPY] = "stop-and-copy",
    [MIG_PHASE_HANDOVER] = "handover",
    [MIG_PHASE_READY] = "ready",
    [MIG_PHASE_COMMITTING] = "committing",
    [MIG_PHASE_DONE] = "done",
};

const char *mig_phase_name(enum mig_phase p)
{
    return p < MIG_PHASE__COUNT ? names[p] : "unknown";
}

int mig_phase_parse(const char *name, enum mig_phase *out)
{
    for (int i = 0; name && i < MIG_PHASE__COUNT; i++)
        if (!strcmp(name, names[i])) {
            *out = (enum mig_phase)i;
            return 0;
        }
    return -1;
}
