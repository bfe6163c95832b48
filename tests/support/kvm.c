#include "kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

bool test_kvm_usable(const char **why)
{
    static int known = -1;
    static char reason[160];
    if (known < 0) {
        int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            snprintf(reason, sizeof(reason), "/dev/kvm: %s", strerror(errno));
            known = 0;
        } else {
            int api = ioctl(fd, KVM_GET_API_VERSION, 0);
            if (api < 0)
                snprintf(reason, sizeof(reason), "/dev/kvm: KVM_GET_API_VERSION: %s",
                         strerror(errno));
            else if (api != KVM_API_VERSION)
                snprintf(reason, sizeof(reason), "/dev/kvm: API version %d, not %d", api,
                         KVM_API_VERSION);
            known = api == KVM_API_VERSION;
            close(fd);
        }
    }
    if (why)
        *why = known ? "" : reason;
    return known;
}
