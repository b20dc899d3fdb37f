/*
 * test_agg.c — the aggregator's core without a broker: the global message
 * it publishes, every way an update is rejected (each with its reason and
 * count, the round going on), counting once per (device, round), closing
 * on the cohort or at the deadline with the quorum (extending without it),
 * the late-update policies, the sample-weighted average, and resuming from
 * a checkpoint without counting anything twice.
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

#include "agg.h"

#define MODEL "logreg"
#define P 7850 /* logreg on 1x28x28, 10 classes */

static fmq_agg_cfg base_cfg(void)
{
    fmq_agg_cfg c = {
        .fleet = "f1", .model = MODEL, .in_c = 1, .in_h = 28, .in_w = 28,
        .classes = 10, .seed = 1, .cohort_size = 3, .quorum = 2,
        .round_ms = 1000, .late = FMQ_AGG_LATE_DROP,
        .train = {.epochs = 1, .batch = 64, .lr = 0.01f},
        .uq = {.scheme = FMQ_Q_F32, .error_feedback = true},
        .global_scheme = FMQ_Q_F32,
    };
    return c;
}

/* An encoded update whose delta is `value` everywhere. */
static void make_update(fmq_buf *b, const char *fleet, const char *dev,
                        uint64_t round, uint64_t version, uint64_t n,
                        float value, uint32_t len)
{
    float *d = malloc(len * sizeof *d);
    for (uint32_t i = 0; i < len; i++)
        d[i] = value;
    fmq_msg_update u;
    fmq_msg_update_init(&u);
    snprintf(u.fleet, sizeof u.fleet, "%s", fleet);
    snprintf(u.device, sizeof u.device, "%s", dev);
    u.round = round;
    u.version = version;
    u.samples = n;
    u.loss = 0.5f;
    fmq_quant_cfg f32 = {FMQ_Q_F32, 0, false};
    assert_int_equal(fmq_quant_encode(&f32, d, len, NULL, &u.delta), FMQ_OK);
    fmq_buf_init(b);
    assert_int_equal(fmq_codec_encode_update(&u, b), FMQ_OK);
    fmq_qtensor_fini(&u.delta);
    free(d);
}

static fmq_err send(fmq_agg *a, const char *dev, uint64_t round,
                    uint64_t version, uint64_t n, float value,
                    fmq_agg_verdict *v)
{
    fmq_buf b;
    make_update(&b, "f1", dev, round, version, n, value, P);
    char topic[128];
    snprintf(topic, sizeof topic, "fedmq/f1/update/%s", dev);
    fmq_err e = fmq_agg_on_update(a, topic, b.data, b.len, 0, v);
    fmq_buf_fini(&b);
    return e;
}

static void the_global_message_carries_the_round_instructions(void **state)
{
    (void)state;
    fmq_agg_cfg c = base_cfg();
    fmq_agg *a;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    assert_int_equal(fmq_agg_round(a), 1);
    assert_int_equal(fmq_agg_version(a), 1);
    assert_int_equal(fmq_agg_nparams(a), P);
    fmq_buf b;
    fmq_buf_init(&b);
    assert_int_equal(fmq_agg_encode_global(a, 5000, &b), FMQ_OK);
    fmq_msg_global g;
    assert_int_equal(fmq_codec_decode_global(b.data, b.len, NULL, &g, NULL),
                     FMQ_OK);
    assert_string_equal(g.fleet, "f1");
    assert_string_equal(g.model, MODEL);
    assert_int_equal(g.round, 1);
    assert_int_equal(g.version, 1);
    assert_int_equal(g.deadline_ms, 6000);
    assert_int_equal(g.weights.n, P);
    assert_int_equal(g.train.batch, 64);
    float *w = malloc(P * 4);
    assert_int_equal(fmq_quant_decode(&g.weights, w), FMQ_OK);
    assert_memory_equal(w, fmq_agg_weights(a), P * 4);
    free(w);
    fmq_msg_global_fini(&g);
    fmq_buf_fini(&b);
    fmq_agg_destroy(&a);
    assert_null(a);
}

static void bad_updates_are_rejected_with_their_reason(void **state)
{
    (void)state;
    fmq_log_set_level(FMQ_LOG_ERR);
    fmq_agg_cfg c = base_cfg();
    c.norm_bound = 10;
    fmq_agg *a;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    fmq_buf g;
    fmq_buf_init(&g);
    assert_int_equal(fmq_agg_encode_global(a, 0, &g), FMQ_OK);
    fmq_buf_fini(&g);
    fmq_agg_verdict v;
    fmq_buf b;
    /* garbage, truncated */
    static const uint8_t junk[] = {0x85, 0xa1, 0x74};
    assert_int_equal(fmq_agg_on_update(a, "fedmq/f1/update/d1", junk,
                                       sizeof junk, 0, &v),
                     FMQ_ERR_TRUNCATED);
    assert_int_equal(v, FMQ_AGG_REJECTED);
    /* another fleet */
    make_update(&b, "f2", "d1", 1, 1, 10, 0.01f, P);
    assert_int_equal(
        fmq_agg_on_update(a, "fedmq/f1/update/d1", b.data, b.len, 0, &v),
        FMQ_ERR_FLEET);
    fmq_buf_fini(&b);
    /* posted on someone else's topic */
    make_update(&b, "f1", "d1", 1, 1, 10, 0.01f, P);
    assert_int_equal(
        fmq_agg_on_update(a, "fedmq/f1/update/d2", b.data, b.len, 0, &v),
        FMQ_ERR_INVAL);
    assert_int_equal(
        fmq_agg_on_update(a, "fedmq/f9/update/d1", b.data, b.len, 0, &v),
        FMQ_ERR_INVAL);
    fmq_buf_fini(&b);
    /* wrong model size */
    make_update(&b, "f1", "d1", 1, 1, 10, 0.01f, P - 1);
    assert_int_equal(
        fmq_agg_on_update(a, "fedmq/f1/update/d1", b.data, b.len, 0, &v),
        FMQ_ERR_MODEL);
    fmq_buf_fini(&b);
    /* from the future; over the norm bound (0.2 * sqrt(7850) = 17.7) */
    assert_int_equal(send(a, "d1", 2, 2, 10, 0.01f, &v), FMQ_ERR_STALE);
    assert_int_equal(send(a, "d1", 1, 1, 10, 0.2f, &v), FMQ_ERR_NORM);
    /* a good one still counts after all that, and only once */
    assert_int_equal(send(a, "d1", 1, 1, 10, 0.01f, &v), FMQ_OK);
    assert_int_equal(v, FMQ_AGG_COUNTED);
    assert_int_equal(send(a, "d1", 1, 1, 10, 0.01f, &v), FMQ_ERR_DUPLICATE);
    assert_int_equal(send(a, "d2", 1, 1, 30, 0.03f, &v), FMQ_OK);
    assert_true(fmq_agg_tick(a, 1000)); /* deadline, quorum 2 */
    fmq_agg_report r;
    assert_int_equal(fmq_agg_close(a, NULL, 1000, &r), FMQ_OK);
    assert_int_equal(r.participants, 2);
    assert_int_equal(r.rejected, 8);
    static const struct {
        const char *why;
        uint64_t n;
    } want[] = {{"truncated", 1}, {"fleet", 1}, {"inval", 2}, {"model", 1},
                {"stale", 1},     {"norm", 1},  {"duplicate", 1}};
    for (unsigned k = 0; k < sizeof want / sizeof want[0]; k++) {
        uint64_t got = 0;
        for (uint32_t i = 0; i < r.nreasons; i++)
            if (strcmp(r.reasons[i].reason, want[k].why) == 0)
                got = r.reasons[i].count;
        assert_int_equal(got, want[k].n);
    }
    char line[512];
    fmq_agg_format_report(&r, line, sizeof line);
    assert_non_null(
        strstr(line, "round 1: 2/3 devices, 0 late (0 folded), 8 rejected"));
    assert_non_null(strstr(line, "norm:1"));
    fmq_buf m;
    fmq_buf_init(&m);
    assert_int_equal(fmq_agg_encode_metrics(a, &r, 2000, &m), FMQ_OK);
    fmq_msg_metrics mm;
    assert_int_equal(fmq_codec_decode_metrics(m.data, m.len, NULL, &mm, NULL),
                     FMQ_OK);
    assert_int_equal(mm.participants, 2);
    assert_int_equal(mm.nrejected, r.nreasons);
    fmq_msg_metrics_fini(&mm);
    fmq_buf_fini(&m);
    fmq_agg_destroy(&a);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

static void the_average_is_sample_weighted(void **state)
{
    (void)state;
    fmq_agg_cfg c = base_cfg();
    fmq_agg *a;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    float *w0 = malloc(P * 4);
    memcpy(w0, fmq_agg_weights(a), P * 4);
    fmq_agg_verdict v;
    assert_int_equal(send(a, "d1", 1, 1, 100, 0.01f, &v), FMQ_OK);
    assert_false(fmq_agg_tick(a, 10)); /* 2 of 3, before the deadline */
    assert_int_equal(send(a, "d2", 1, 1, 300, 0.05f, &v), FMQ_OK);
    assert_int_equal(send(a, "d3", 1, 1, 600, -0.02f, &v), FMQ_OK);
    assert_true(fmq_agg_tick(a, 20)); /* the whole cohort answered */
    fmq_agg_report r;
    assert_int_equal(fmq_agg_close(a, NULL, 20, &r), FMQ_OK);
    assert_int_equal(r.version, 2);
    assert_int_equal(fmq_agg_round(a), 2);
    double mean = (100 * 0.01 + 300 * 0.05 - 600 * 0.02) / 1000.0;
    for (int i = 0; i < P; i++)
        assert_float_equal(fmq_agg_weights(a)[i], w0[i] + mean, 1e-6);
    /* an update for round 1 now is late; dropped by this policy */
    assert_int_equal(send(a, "d4", 1, 1, 100, 0.01f, &v), FMQ_OK);
    assert_int_equal(v, FMQ_AGG_DROPPED);
    free(w0);
    fmq_agg_destroy(&a);
}

static void deadline_closes_with_quorum_and_extends_without(void **state)
{
    (void)state;
    fmq_log_set_level(FMQ_LOG_ERR);
    fmq_agg_cfg c = base_cfg();
    fmq_agg *a;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    fmq_buf g;
    fmq_buf_init(&g);
    assert_int_equal(fmq_agg_encode_global(a, 1000, &g), FMQ_OK); /* dl 2000 */
    fmq_buf_fini(&g);
    fmq_agg_verdict v;
    assert_int_equal(send(a, "d1", 1, 1, 10, 0.01f, &v), FMQ_OK);
    assert_false(fmq_agg_tick(a, 1999));
    assert_false(fmq_agg_tick(a, 2000)); /* 1 < quorum 2: extended */
    assert_false(fmq_agg_tick(a, 2999));
    assert_int_equal(send(a, "d2", 1, 1, 10, 0.01f, &v), FMQ_OK);
    assert_false(fmq_agg_tick(a, 2999)); /* quorum, but before deadline */
    assert_true(fmq_agg_tick(a, 3000));
    fmq_agg_report r;
    assert_int_equal(fmq_agg_close(a, NULL, 3000, &r), FMQ_OK);
    assert_int_equal(r.extensions, 1);
    assert_int_equal(r.participants, 2);
    assert_float_equal(r.seconds, 2.0, 1e-9);
    fmq_agg_destroy(&a);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

static void late_updates_fold_with_staleness_weight(void **state)
{
    (void)state;
    fmq_agg_cfg c = base_cfg();
    c.late = FMQ_AGG_LATE_FOLD;
    c.max_staleness = 2;
    c.cohort_size = 1;
    c.quorum = 1;
    fmq_agg *a;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    fmq_agg_verdict v;
    fmq_agg_report r;
    assert_int_equal(send(a, "d1", 1, 1, 100, 0.01f, &v), FMQ_OK);
    assert_true(fmq_agg_tick(a, 1));
    assert_int_equal(fmq_agg_close(a, NULL, 1, &r), FMQ_OK); /* now round 2 */
    float *w1 = malloc(P * 4);
    memcpy(w1, fmq_agg_weights(a), P * 4);
    /* d2 trained round 1 (tau = 1): weight 100/sqrt(2); d1 on time */
    assert_int_equal(send(a, "d2", 1, 1, 100, 0.04f, &v), FMQ_OK);
    assert_int_equal(v, FMQ_AGG_FOLDED);
    assert_int_equal(send(a, "d2", 1, 1, 100, 0.04f, &v), FMQ_ERR_DUPLICATE);
    assert_int_equal(send(a, "d1", 2, 2, 100, 0.01f, &v), FMQ_OK);
    assert_int_equal(v, FMQ_AGG_COUNTED);
    assert_true(fmq_agg_tick(a, 2));
    assert_int_equal(fmq_agg_close(a, NULL, 2, &r), FMQ_OK);
    assert_int_equal(r.late, 1);
    assert_int_equal(r.late_folded, 1);
    double wl = 100 / sqrt(2.0);
    double mean = (wl * 0.04 + 100 * 0.01) / (wl + 100);
    for (int i = 0; i < P; i++)
        assert_float_equal(fmq_agg_weights(a)[i], w1[i] + mean, 1e-6);
    /* round 3 closes too; then a round-1 update has staleness 3 > 2 */
    assert_int_equal(send(a, "d1", 3, 3, 100, 0.01f, &v), FMQ_OK);
    assert_true(fmq_agg_tick(a, 3));
    assert_int_equal(fmq_agg_close(a, NULL, 3, &r), FMQ_OK);
    assert_int_equal(send(a, "d4", 1, 1, 100, 0.01f, &v), FMQ_OK);
    assert_int_equal(v, FMQ_AGG_DROPPED);
    free(w1);
    fmq_agg_destroy(&a);
}

static char *tmpdir(const char *name)
{
    const char *b = getenv("FMQ_BUILD") ? getenv("FMQ_BUILD") : "build";
    static char path[512];
    snprintf(path, sizeof path, "%s/tmp/test_agg-%s-%d", b, name,
             (int)getpid());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    assert_int_equal(system(cmd), 0);
    return path;
}

static void a_restart_resumes_and_counts_nothing_twice(void **state)
{
    (void)state;
    fmq_log_set_level(FMQ_LOG_ERR);
    fmq_agg_cfg c = base_cfg();
    c.state_dir = tmpdir("resume");
    fmq_agg *a, *ref;
    fmq_agg_verdict v;
    fmq_agg_report r;
    /* the reference run never crashes */
    fmq_agg_cfg rc = base_cfg();
    assert_int_equal(fmq_agg_open(&rc, &ref), FMQ_OK);
    assert_int_equal(send(ref, "d1", 1, 1, 10, 0.01f, &v), FMQ_OK);
    assert_int_equal(send(ref, "d2", 1, 1, 20, 0.02f, &v), FMQ_OK);
    assert_int_equal(send(ref, "d3", 1, 1, 30, 0.03f, &v), FMQ_OK);
    assert_int_equal(fmq_agg_close(ref, NULL, 1, &r), FMQ_OK);

    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    assert_false(fmq_agg_resumed(a));
    assert_int_equal(send(a, "d1", 1, 1, 10, 0.01f, &v), FMQ_OK);
    assert_int_equal(send(a, "d2", 1, 1, 20, 0.02f, &v), FMQ_OK);
    assert_true(fmq_agg_dirty(a));
    assert_int_equal(fmq_agg_checkpoint(a), FMQ_OK);
    assert_false(fmq_agg_dirty(a));
    fmq_agg_destroy(&a); /* the crash: whatever came after is gone */

    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    assert_true(fmq_agg_resumed(a));
    assert_int_equal(fmq_agg_round(a), 1);
    /* devices resend when they see the same global again */
    assert_int_equal(send(a, "d1", 1, 1, 10, 0.01f, &v), FMQ_ERR_DUPLICATE);
    assert_int_equal(send(a, "d2", 1, 1, 20, 0.02f, &v), FMQ_ERR_DUPLICATE);
    assert_int_equal(send(a, "d3", 1, 1, 30, 0.03f, &v), FMQ_OK);
    assert_true(fmq_agg_tick(a, 5));
    assert_int_equal(fmq_agg_close(a, NULL, 5, &r), FMQ_OK);
    assert_int_equal(r.participants, 3);
    assert_memory_equal(fmq_agg_weights(a), fmq_agg_weights(ref), P * 4);
    fmq_agg_destroy(&a);
    /* after the close the file says round 2, version 2 */
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    assert_int_equal(fmq_agg_round(a), 2);
    assert_int_equal(fmq_agg_version(a), 2);
    assert_memory_equal(fmq_agg_weights(a), fmq_agg_weights(ref), P * 4);
    fmq_agg_destroy(&a);

    /* a corrupt checkpoint is refused, not silently replaced */
    char path[600];
    snprintf(path, sizeof path, "%s/aggregator.ckpt", c.state_dir);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 200, SEEK_SET);
    fputc(0x5a, f);
    fclose(f);
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_ERR_DATA);
    assert_null(a);
    /* and one for another model too */
    assert_int_equal(unlink(path), 0);
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK); /* a fresh one */
    fmq_agg_destroy(&a);
    c.model = "mlp:8";
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_ERR_DATA);
    fmq_agg_destroy(&ref);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_global_message_carries_the_round_instructions),
        cmocka_unit_test(bad_updates_are_rejected_with_their_reason),
        cmocka_unit_test(the_average_is_sample_weighted),
        cmocka_unit_test(deadline_closes_with_quorum_and_extends_without),
        cmocka_unit_test(late_updates_fold_with_staleness_weight),
        cmocka_unit_test(a_restart_resumes_and_counts_nothing_twice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
