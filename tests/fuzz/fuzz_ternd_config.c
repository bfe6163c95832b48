/* libFuzzer harness for ternd.conf parsing: any text is parsed or refused
 * with a message, never a crash; accepted values respect their limits. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    struct ternd_config c;
    struct tern_err err;
    ternd_config_defaults(&c);
    if (ternd_config_parse(&c, text, "fuzz.conf", &err) == 0) {
        if (c.migration_port_min > c.migration_port_max || c.migration_port_min < 1024)
            abort();
        if (c.run_dir[0] != '/' || c.state_dir[0] != '/')
            abort();
    } else if (!err.msg[0]) {
        abort();
    }
    free(text);
    return 0;
}
