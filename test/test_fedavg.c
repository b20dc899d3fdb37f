/*
 * test_fedavg.c — streaming sample-weighted averaging: the result equals
 * the weighted mean computed in double, does not depend on arrival order
 * beyond float rounding, mixes schemes, and refuses what does not fit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedavg.h"

enum { P = 1003, K = 7 };

static void weighted_mean_in_any_order(void **state)
{
    (void)state;
    static float d[K][P];
    double n[K], ref[P] = {0}, tot = 0;
    fmq_rng r;
    fmq_rng_seed(&r, 3);
    for (int k = 0; k < K; k++) {
        n[k] = 50 + (double)fmq_rng_below(&r, 6000);
        tot += n[k];
        for (int i = 0; i < P; i++)
            d[k][i] = (float)(0.01 * fmq_rng_normal(&r));
    }
    for (int i = 0; i < P; i++) {
        for (int k = 0; k < K; k++)
            ref[i] += n[k] * d[k][i];
        ref[i] /= tot;
    }
    fmq_quant_cfg f32 = {FMQ_Q_F32, 0, false};
    static const int orders[2][K] = {{0, 1, 2, 3, 4, 5, 6},
                                     {6, 2, 4, 0, 5, 1, 3}};
    float w[2][P];
    for (int o = 0; o < 2; o++) {
        fmq_fedavg fa;
        assert_int_equal(fmq_fedavg_init(&fa, P), FMQ_OK);
        for (int j = 0; j < K; j++) {
            int k = orders[o][j];
            fmq_qtensor q;
            assert_int_equal(fmq_quant_encode(&f32, d[k], P, NULL, &q), FMQ_OK);
            assert_int_equal(fmq_fedavg_add(&fa, &q, n[k]), FMQ_OK);
            fmq_qtensor_fini(&q);
        }
        assert_int_equal(fa.count, K);
        for (int i = 0; i < P; i++)
            w[o][i] = 1.0f;
        assert_int_equal(fmq_fedavg_apply(&fa, w[o]), FMQ_OK);
        for (int i = 0; i < P; i++)
            assert_float_equal(w[o][i], 1.0 + ref[i], 1e-6);
        fmq_fedavg_fini(&fa);
    }
    for (int i = 0; i < P; i++) /* order only changes float rounding */
        assert_true(fabsf(w[0][i] - w[1][i]) <= 1e-6f * fabsf(w[0][i]));
}

static void mixed_schemes_and_refusals(void **state)
{
    (void)state;
    float a[P], b[P], w[P] = {0};
    for (int i = 0; i < P; i++) {
        a[i] = 1.0f;
        b[i] = -1.0f;
    }
    fmq_quant_cfg q8 = {FMQ_Q_Q8, 64, false}, q4 = {FMQ_Q_Q4, 64, false};
    fmq_qtensor qa, qb;
    assert_int_equal(fmq_quant_encode(&q8, a, P, NULL, &qa), FMQ_OK);
    assert_int_equal(fmq_quant_encode(&q4, b, P, NULL, &qb), FMQ_OK);
    fmq_fedavg fa;
    assert_int_equal(fmq_fedavg_init(&fa, P), FMQ_OK);
    assert_int_equal(fmq_fedavg_apply(&fa, w), FMQ_ERR_STATE);
    assert_int_equal(fmq_fedavg_add(&fa, &qa, 3), FMQ_OK);
    assert_int_equal(fmq_fedavg_add(&fa, &qb, 1), FMQ_OK);
    assert_int_equal(fmq_fedavg_add(&fa, &qb, 0), FMQ_ERR_INVAL);
    assert_int_equal(fmq_fedavg_add(&fa, &qb, NAN), FMQ_ERR_INVAL);
    fmq_qtensor small;
    assert_int_equal(fmq_quant_encode(&q8, a, P - 1, NULL, &small), FMQ_OK);
    assert_int_equal(fmq_fedavg_add(&fa, &small, 1), FMQ_ERR_MODEL);
    assert_int_equal(fa.count, 2);
    assert_int_equal(fmq_fedavg_apply(&fa, w), FMQ_OK);
    for (int i = 0; i < P; i++) /* (3 * 1 + 1 * -1) / 4 */
        assert_float_equal(w[i], 0.5, 1e-6);
    fmq_fedavg_reset(&fa);
    assert_int_equal(fa.count, 0);
    fmq_qtensor_fini(&qa);
    fmq_qtensor_fini(&qb);
    fmq_qtensor_fini(&small);
    fmq_fedavg_fini(&fa);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(weighted_mean_in_any_order),
        cmocka_unit_test(mixed_schemes_and_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
