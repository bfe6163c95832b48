/* libFuzzer harness for ternctl's reply parser: any line from a (possibly
 * hostile or broken) agent is parsed or refused without crashing or
 * leaking, and what it accepts is one of the documented shapes. */
#include <stdint.h>
#include <stdlib.h>

#include "cli/cli.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cli_reply r = {0};
    struct tern_err err;
    if (cli_reply_parse((const char *)data, size, &r, &err) == 0) {
        if (!r.root)
            abort();
        if (r.kind == CLI_REPLY_ERROR && (!r.code || !r.message))
            abort();
        (void)cli_reply_evacuation(&r);
    }
    cli_reply_clear(&r);
    return 0;
}
