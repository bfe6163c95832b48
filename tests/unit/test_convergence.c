/* The pre-copy convergence policy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "migrate/convergence.h"

static const struct conv_params defaults = {.downtime_ms = 50, .max_seconds = 10};

static void test_defaults_filled_in(void **state)
{
    (void)state;
    struct conv_state s;
    struct conv_params zero = {0};
    conv_init(&s, &zero);
    assert_true(s.p.downtime_ms == CONV_DEFAULT_DOWNTIME_MS);
    assert_true(s.p.max_seconds == CONV_DEFAULT_MAX_SECONDS);
    assert_int_equal(s.p.throttle_step, CONV_DEFAULT_THROTTLE_STEP);
    assert_int_equal(s.p.throttle_max, CONV_DEFAULT_THROTTLE_MAX);
}

static void test_idle_guest_stops_after_first_delta_round(void **state)
{
    (void)state;
    struct conv_state s;
    conv_init(&s, &defaults);
    /* Round 0: 1 GiB (262144 pages) at 1 GB/s; 100 pages dirty after. */
    assert_int_equal(conv_round_done(&s, 262144, 1ull << 30, 1.07, 100, 1.07), CONV_CONTINUE);
    /* Round 1: 100 pages in 0.5 ms, 10 dirty: 10 * 4 KiB at 1 GB/s is far
     * under 50 ms. */
    assert_int_equal(conv_round_done(&s, 100, 409600, 0.0004, 10, 1.08), CONV_STOP_AND_COPY);
    assert_true(s.predicted_pause_ms < 1.0);
}

static void test_prediction_uses_bandwidth_and_encoded_size(void **state)
{
    (void)state;
    struct conv_state s;
    conv_init(&s, &defaults);
    /* 100 MB/s, pages compress to 1 KiB on the wire. */
    conv_round_done(&s, 100000, 100000 * 1024ull, 1.024, 20000, 1.0);
    /* 20000 dirty * 1 KiB at 100 MB/s = 204.8 ms. */
    assert_true(s.predicted_pause_ms > 200.0 && s.predicted_pause_ms < 210.0);
}

static void test_heavy_dirtier_gets_throttled_then_gives_up(void **state)
{
    (void)state;
    struct conv_state s;
    conv_init(&s, &defaults);
    enum conv_decision d = conv_round_done(&s, 262144, 1ull << 30, 1.0, 50000, 1.0);
    assert_int_equal(d, CONV_CONTINUE);
    /* Rounds that never shrink: after two, throttle; and again. */
    int throttles = 0;
    double t = 1.0;
    for (int i = 0; i < 12 && d != CONV_GIVE_UP; i++) {
        t += 0.8;
        d = conv_round_done(&s, 50000, 50000 * 4096ull, 0.8, 50000, t);
        if (d == CONV_THROTTLE)
            throttles++;
        assert_int_not_equal(d, CONV_STOP_AND_COPY);
    }
    assert_true(throttles >= 2);
    assert_true(s.throttle_percent <= CONV_DEFAULT_THROTTLE_MAX);
    assert_int_equal(d, CONV_GIVE_UP);
    assert_true(s.elapsed_s >= 10.0);
}

static void test_throttle_capped(void **state)
{
    (void)state;
    struct conv_params p = {.downtime_ms = 1, .max_seconds = 1000, .throttle_step = 40,
                            .throttle_max = 70};
    struct conv_state s;
    conv_init(&s, &p);
    conv_round_done(&s, 1000, 4096000, 1.0, 1000, 1.0);
    for (int i = 0; i < 20; i++)
        conv_round_done(&s, 1000, 4096000, 1.0, 1000, 2.0 + i);
    assert_int_equal(s.throttle_percent, 70);
}

static void test_shrinking_rounds_do_not_throttle(void **state)
{
    (void)state;
    struct conv_state s;
    struct conv_params p = {.downtime_ms = 0.001, .max_seconds = 100};
    conv_init(&s, &p);
    uint64_t dirty = 100000;
    conv_round_done(&s, 262144, 1ull << 30, 1.0, dirty, 1.0);
    for (int i = 0; i < 8; i++) {
        dirty /= 2;
        assert_int_equal(conv_round_done(&s, dirty * 2, dirty * 2 * 4096, 0.1, dirty, 1.1 + i),
                         CONV_CONTINUE);
    }
    assert_int_equal(s.throttle_percent, 0);
}

static void test_decision_names(void **state)
{
    (void)state;
    assert_string_equal(conv_decision_name(CONV_STOP_AND_COPY), "stop-and-copy");
    assert_string_equal(conv_decision_name(CONV_GIVE_UP), "give-up");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_filled_in),
        cmocka_unit_test(test_idle_guest_stops_after_first_delta_round),
        cmocka_unit_test(test_prediction_uses_bandwidth_and_encoded_size),
        cmocka_unit_test(test_heavy_dirtier_gets_throttled_then_gives_up),
        cmocka_unit_test(test_throttle_capped),
        cmocka_unit_test(test_shrinking_rounds_do_not_throttle),
        cmocka_unit_test(test_decision_names),
    };
    return cmocka_run_group_tests_name("convergence", tests, NULL, NULL);
}
