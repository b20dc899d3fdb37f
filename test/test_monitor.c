/*
 * test_monitor.c — flags (stuck, noisy, rejected) round by round, the
 * metrics as a JSON line and as Prometheus text, the JSON-lines file.
 * The robust z-scores were computed independently with Python's
 * statistics.median: norms [1.0, 1.1, 0.9, 1.05, 0.95, 40.0] have median
 * 1.025, MAD 0.075, and z = 350.51 for 40.0, at most 1.124 for the rest.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "monitor.h"

static fmq_monitor *mk(void)
{
    fmq_monitor *m;
    assert_int_equal(fmq_monitor_new(NULL, &m), FMQ_OK);
    return m;
}

static void online(fmq_monitor *m, int n)
{
    char id[16];
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "d%d", i);
        assert_int_equal(fmq_monitor_on_status(m, id, true), FMQ_OK);
    }
}

/* every device but skip[] sends an update of norm 1 */
static void round_of(fmq_monitor *m, int n, int skip, fmq_monitor_flag *f,
                     size_t *nf)
{
    char id[16];
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "d%d", i);
        if (i != skip)
            assert_int_equal(fmq_monitor_on_update(m, id, 1.0), FMQ_OK);
    }
    fmq_monitor_close_round(m, NULL, NULL, f, 8, nf);
}

static void a_silent_online_cohort_member_is_stuck_after_three_rounds(void **state)
{
    (void)state;
    fmq_monitor *m = mk();
    online(m, 5);
    fmq_monitor_flag f[8];
    size_t n;
    round_of(m, 5, 4, f, &n);
    assert_int_equal(n, 0);
    round_of(m, 5, 4, f, &n);
    assert_int_equal(n, 0);
    round_of(m, 5, 4, f, &n);
    assert_int_equal(n, 1);
    assert_string_equal(f[0].flag.device, "d4");
    assert_string_equal(f[0].flag.why, "stuck");
    assert_non_null(strstr(f[0].detail, "silent for 3 rounds"));
    /* it answers: no longer stuck */
    round_of(m, 5, -1, f, &n);
    assert_int_equal(n, 0);
    fmq_monitor_destroy(&m);
    assert_null(m);
}

static bool not_d4(void *arg, const char *dev)
{
    (void)arg;
    return strcmp(dev, "d4") != 0;
}

static void offline_or_outside_the_cohort_is_not_stuck(void **state)
{
    (void)state;
    fmq_monitor *m = mk();
    online(m, 5);
    assert_int_equal(fmq_monitor_on_status(m, "d3", false), FMQ_OK);
    fmq_monitor_flag f[8];
    size_t n = 99;
    for (int r = 0; r < 5; r++) {
        assert_int_equal(fmq_monitor_on_update(m, "d0", 1.0), FMQ_OK);
        fmq_monitor_close_round(m, not_d4, NULL, f, 8, &n);
    }
    /* d1, d2 are online members and silent: stuck; d3 offline, d4 not a member */
    assert_int_equal(n, 2);
    assert_string_equal(f[0].flag.device, "d1");
    assert_string_equal(f[1].flag.device, "d2");
    fmq_monitor_destroy(&m);
}

static void a_norm_far_outside_the_round_is_noisy(void **state)
{
    (void)state;
    fmq_monitor *m = mk();
    const double norms[6] = {1.0, 1.1, 0.9, 1.05, 0.95, 40.0};
    char id[16];
    for (int i = 0; i < 6; i++) {
        snprintf(id, sizeof id, "d%d", i);
        assert_int_equal(fmq_monitor_on_update(m, id, norms[i]), FMQ_OK);
    }
    fmq_monitor_flag f[8];
    size_t n;
    fmq_monitor_close_round(m, NULL, NULL, f, 8, &n);
    assert_int_equal(n, 1);
    assert_string_equal(f[0].flag.device, "d5");
    assert_string_equal(f[0].flag.why, "noisy");
    assert_non_null(strstr(f[0].detail, "robust z 350.5"));
    assert_non_null(strstr(f[0].detail, "median 1.025"));
    fmq_monitor_destroy(&m);
}

static void few_or_identical_norms_flag_nothing(void **state)
{
    (void)state;
    fmq_monitor *m = mk();
    fmq_monitor_flag f[8];
    size_t n;
    /* 4 updates < noisy_min 5, however far one is */
    assert_int_equal(fmq_monitor_on_update(m, "a", 1), FMQ_OK);
    assert_int_equal(fmq_monitor_on_update(m, "b", 1), FMQ_OK);
    assert_int_equal(fmq_monitor_on_update(m, "c", 1), FMQ_OK);
    assert_int_equal(fmq_monitor_on_update(m, "d", 1000), FMQ_OK);
    fmq_monitor_close_round(m, NULL, NULL, f, 8, &n);
    assert_int_equal(n, 0);
    /* all identical: MAD 0 and no deviation */
    for (int i = 0; i < 7; i++) {
        char id[16];
        snprintf(id, sizeof id, "e%d", i);
        assert_int_equal(fmq_monitor_on_update(m, id, 2.5), FMQ_OK);
    }
    fmq_monitor_close_round(m, NULL, NULL, f, 8, &n);
    assert_int_equal(n, 0);
    /* MAD 0 but one differs: that one is noisy */
    for (int i = 0; i < 7; i++) {
        char id[16];
        snprintf(id, sizeof id, "e%d", i);
        assert_int_equal(fmq_monitor_on_update(m, id, i == 6 ? 2.6 : 2.5), FMQ_OK);
    }
    fmq_monitor_close_round(m, NULL, NULL, f, 8, &n);
    assert_int_equal(n, 1);
    assert_string_equal(f[0].flag.device, "e6");
    fmq_monitor_destroy(&m);
}

static void rejections_in_the_window_flag_and_age_out(void **state)
{
    (void)state;
    fmq_monitor_cfg c;
    fmq_monitor_cfg_defaults(&c);
    c.rejected_max = 3;
    c.rejected_window = 2;
    c.stuck_rounds = 0;
    fmq_monitor *m;
    assert_int_equal(fmq_monitor_new(&c, &m), FMQ_OK);
    fmq_monitor_flag f[8];
    size_t n;
    assert_int_equal(fmq_monitor_on_reject(m, "x", "nonfinite"), FMQ_OK);
    assert_int_equal(fmq_monitor_on_reject(m, "x", "nonfinite"), FMQ_OK);
    fmq_monitor_close_round(m, NULL, NULL, f, 8, &n);
    assert_int_equal(n, 0); /* 2 < 3 */
    assert_int_equal(fmq_monitor_on_reject(m, "x", "norm"), FMQ_OK);
    fmq_monitor_close_round(m, NULL, NULL, f, 8, &n);
    assert_int_equal(n, 1); /* 2 + 1 in the last 2 rounds */
    assert_string_equal(f[0].flag.why, "rejected");
    assert_non_null(strstr(f[0].detail, "3 updates rejected in the last 2 rounds (last: norm)"));
    fmq_monitor_close_round(m, NULL, NULL, f, 8, &n);
    assert_int_equal(n, 0); /* the first round's 2 aged out: 1 + 0 */
    c.rejected_window = 65;
    fmq_monitor *bad = NULL;
    assert_int_equal(fmq_monitor_new(&c, &bad), FMQ_ERR_INVAL);
    assert_null(bad);
    fmq_monitor_destroy(&m);
}

static void flags_beyond_max_are_counted_not_written(void **state)
{
    (void)state;
    fmq_monitor *m = mk();
    online(m, 6);
    fmq_monitor_flag f[2];
    size_t n;
    for (int r = 0; r < 3; r++)
        fmq_monitor_close_round(m, NULL, NULL, f, 2, &n);
    assert_int_equal(n, 6);
    assert_string_equal(f[0].flag.device, "d0");
    assert_string_equal(f[1].flag.device, "d1");
    fmq_monitor_destroy(&m);
}

static void metrics_fixture(fmq_msg_metrics *mt, fmq_reason_count *rc)
{
    fmq_msg_metrics_init(mt);
    snprintf(mt->fleet, sizeof mt->fleet, "kitchen");
    mt->round = 7;
    mt->version = 8;
    mt->cohort = 10;
    mt->participants = 9;
    mt->late = 1;
    snprintf(rc[0].reason, sizeof rc[0].reason, "nonfinite");
    rc[0].count = 2;
    mt->rejected = rc;
    mt->nrejected = 1;
    mt->loss_mean = 0.5;
    mt->test_acc = 0.8125;
    mt->bytes_in = 1000;
    mt->bytes_out = 4000;
    mt->seconds = 1.5;
    snprintf(mt->strategy, sizeof mt->strategy, "fedavg");
}

static void the_json_line_has_what_is_present_and_escapes_text(void **state)
{
    (void)state;
    fmq_msg_metrics mt;
    fmq_reason_count rc[1];
    metrics_fixture(&mt, rc);
    fmq_monitor_flag fl = {.flag = {"d\"1", "noisy"}, .detail = "z 9\n"};
    fmq_buf b;
    fmq_buf_init(&b);
    assert_int_equal(fmq_monitor_json(&mt, &fl, 1, &b), FMQ_OK);
    assert_int_equal(fmq_buf_append(&b, "", 1), FMQ_OK);
    assert_string_equal((const char *)b.data,
        "{\"fleet\":\"kitchen\",\"round\":7,\"version\":8,\"cohort\":10,"
        "\"participants\":9,\"late\":1,\"rejected\":{\"nonfinite\":2},"
        "\"loss\":0.5,\"test_acc\":0.8125,\"bytes_in\":1000,"
        "\"bytes_out\":4000,\"seconds\":1.5,\"strategy\":\"fedavg\","
        "\"flags\":[{\"device\":\"d\\\"1\",\"why\":\"noisy\","
        "\"detail\":\"z 9\\u000a\"}]}\n");
    fmq_buf_fini(&b);
}

static void prometheus_text_has_gauges_counters_and_labels(void **state)
{
    (void)state;
    fmq_monitor *m = mk();
    assert_int_equal(fmq_monitor_on_update(m, "d0", 1), FMQ_OK);
    assert_int_equal(fmq_monitor_on_reject(m, "d1", "nonfinite"), FMQ_OK);
    fmq_monitor_flag f[8];
    size_t n;
    fmq_monitor_close_round(m, NULL, NULL, f, 8, &n);
    fmq_msg_metrics mt;
    fmq_reason_count rc[1];
    metrics_fixture(&mt, rc);
    fmq_monitor_flag fl = {.flag = {"d1", "rejected"}, .detail = ""};
    fmq_buf b;
    fmq_buf_init(&b);
    assert_int_equal(fmq_monitor_prometheus(m, &mt, &fl, 1, &b), FMQ_OK);
    assert_int_equal(fmq_buf_append(&b, "", 1), FMQ_OK);
    const char *t = (const char *)b.data;
    const char *want[] = {
        "# TYPE fedmq_round gauge\nfedmq_round{fleet=\"kitchen\"} 7\n",
        "fedmq_test_accuracy{fleet=\"kitchen\"} 0.8125\n",
        "fedmq_round_rejected{fleet=\"kitchen\",reason=\"nonfinite\"} 2\n",
        "fedmq_flagged_devices{fleet=\"kitchen\"} 1\n",
        "fedmq_device_flagged{fleet=\"kitchen\",device=\"d1\",why=\"rejected\"} 1\n",
        "# TYPE fedmq_rounds_total counter\nfedmq_rounds_total{fleet=\"kitchen\"} 1\n",
        "fedmq_updates_total{fleet=\"kitchen\"} 1\n",
        "fedmq_rejected_total{fleet=\"kitchen\",reason=\"nonfinite\"} 1\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(t, want[i]))
            fail_msg("missing from the Prometheus text: %s\n---\n%s", want[i], t);
    assert_null(strstr(t, "fedmq_test_loss")); /* absent: left out */
    assert_null(strstr(t, "nan"));
    fmq_buf_fini(&b);
    fmq_monitor_destroy(&m);
}

static void the_jsonl_file_grows_by_whole_lines(void **state)
{
    (void)state;
    char path[256];
    const char *bd = getenv("FMQ_BUILD");
    snprintf(path, sizeof path, "%s/test/monitor-%ld.jsonl", bd ? bd : "build",
             (long)getpid());
    unlink(path);
    assert_int_equal(fmq_monitor_append(path, "{\"a\":1}\n", 8), FMQ_OK);
    assert_int_equal(fmq_monitor_append(path, "{\"a\":2}\n", 8), FMQ_OK);
    uint8_t *d;
    size_t len;
    assert_int_equal(fmq_file_read(path, 1024, &d, &len), FMQ_OK);
    assert_int_equal(len, 16);
    assert_memory_equal(d, "{\"a\":1}\n{\"a\":2}\n", 16);
    fmq_free(d);
    unlink(path);
    assert_int_equal(fmq_monitor_append("/nonexistent-dir/x.jsonl", "x", 1),
                     FMQ_ERR_NOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_silent_online_cohort_member_is_stuck_after_three_rounds),
        cmocka_unit_test(offline_or_outside_the_cohort_is_not_stuck),
        cmocka_unit_test(a_norm_far_outside_the_round_is_noisy),
        cmocka_unit_test(few_or_identical_norms_flag_nothing),
        cmocka_unit_test(rejections_in_the_window_flag_and_age_out),
        cmocka_unit_test(flags_beyond_max_are_counted_not_written),
        cmocka_unit_test(the_json_line_has_what_is_present_and_escapes_text),
        cmocka_unit_test(prometheus_text_has_gauges_counters_and_labels),
        cmocka_unit_test(the_jsonl_file_grows_by_whole_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
