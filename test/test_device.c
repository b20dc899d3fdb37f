/*
 * test_device.c — the device core (device/device.h) without a broker:
 * globals in, updates out, refusals, resends and device.state across a
 * restart. The built-in engine trains logreg on a small synthetic set.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "device.h"
#include "data.h"
#include "helper_broker.h"
#include "quant.h"

enum { N = 64, DIM = 4, CLASSES = 3 };
static float xs[N * DIM];
static uint16_t ys[N];
static fmq_dataset ds = {N, DIM, CLASSES, 1, 1, DIM, xs, ys};

/* A global of `fleet`, round r, version v, logreg on DIM inputs. */
static void make_global(fmq_buf *b, const char *fleet, uint64_t r, uint64_t v,
                        uint64_t ts)
{
    uint32_t P = DIM * CLASSES + CLASSES;
    float w[DIM * CLASSES + CLASSES];
    for (uint32_t i = 0; i < P; i++)
        w[i] = 0.01f * (float)i;
    fmq_msg_global g;
    fmq_msg_global_init(&g);
    snprintf(g.fleet, sizeof g.fleet, "%s", fleet);
    snprintf(g.model, sizeof g.model, "logreg");
    g.round = r;
    g.version = v;
    g.ts_ms = ts;
    g.train = (fmq_train_cfg){.epochs = 1, .batch = 8, .lr = 0.1f};
    g.uq = (fmq_uq){.scheme = FMQ_Q_Q8, .block = 4, .error_feedback = true};
    fmq_quant_cfg qc = {FMQ_Q_F32, 0, false};
    assert_int_equal(fmq_quant_encode(&qc, w, P, NULL, &g.weights), FMQ_OK);
    fmq_buf_init(b);
    assert_int_equal(fmq_codec_encode_global(&g, b), FMQ_OK);
    fmq_qtensor_fini(&g.weights);
    fmq_msg_global_fini(&g);
}

static fmq_device *open_dev(const char *dir)
{
    fmq_device_cfg c = {.fleet = "f1", .id = "dev-1", .state_dir = dir,
                        .setup = {.data = &ds, .n = N}, .seed = 3};
    fmq_device *d;
    assert_int_equal(fmq_device_open(&c, &d), FMQ_OK);
    return d;
}

static int setup(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++) {
        ys[i] = (uint16_t)(i % CLASSES);
        for (int j = 0; j < DIM; j++)
            xs[i * DIM + j] = (float)((i * 7 + j * 3) % 5) / 5.0f + ys[i];
    }
    return 0;
}

static void trains_once_and_refuses_other_fleets_and_older_versions(void **s)
{
    (void)s;
    fmq_device *d = open_dev(NULL);
    fmq_buf g, u, other;
    fmq_buf_init(&u);
    make_global(&g, "f1", 2, 2, 100);
    fmq_device_result res;
    assert_int_equal(fmq_device_on_global(d, g.data, g.len, &res, &u), FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_TRAINED);
    fmq_msg_update m;
    assert_int_equal(fmq_codec_decode_update(u.data, u.len, NULL, &m, NULL),
                     FMQ_OK);
    assert_int_equal(m.round, 2);
    assert_int_equal(m.samples, N);
    assert_int_equal(m.delta.scheme, FMQ_Q_Q8);
    /* the same global again: nothing to do */
    assert_int_equal(fmq_device_on_global(d, g.data, g.len, &res, &u), FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_ALREADY);
    /* another fleet, an older version: refused, counted */
    make_global(&other, "f2", 3, 3, 200);
    assert_int_equal(fmq_device_on_global(d, other.data, other.len, &res, &u),
                     FMQ_ERR_FLEET);
    fmq_buf_fini(&other);
    make_global(&other, "f1", 1, 1, 300);
    assert_int_equal(fmq_device_on_global(d, other.data, other.len, &res, &u),
                     FMQ_ERR_STALE);
    assert_int_equal(res.action, FMQ_DEV_REFUSED);
    fmq_device_stats st;
    fmq_device_get_stats(d, &st);
    assert_int_equal(st.refused, 2);
    assert_int_equal(st.version, 2);
    assert_int_equal(st.trained, 1);
    /* garbage is refused without a crash */
    uint8_t junk[5] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    assert_int_not_equal(fmq_device_on_global(d, junk, 5, &res, &u), FMQ_OK);
    fmq_buf_fini(&other);
    fmq_buf_fini(&g);
    fmq_buf_fini(&u);
    fmq_device_destroy(&d);
    assert_null(d);
}

static void a_republished_round_resends_the_same_bytes(void **s)
{
    (void)s;
    fmq_device *d = open_dev(NULL);
    fmq_buf g, g2, u, u2;
    fmq_buf_init(&u);
    fmq_buf_init(&u2);
    make_global(&g, "f1", 1, 1, 100);
    make_global(&g2, "f1", 1, 1, 999); /* same round, new timestamp */
    fmq_device_result res;
    assert_int_equal(fmq_device_on_global(d, g.data, g.len, &res, &u), FMQ_OK);
    assert_int_equal(fmq_device_on_global(d, g2.data, g2.len, &res, &u2),
                     FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_RESEND);
    assert_int_equal(u.len, u2.len);
    assert_memory_equal(u.data, u2.data, u.len);
    fmq_buf_fini(&g);
    fmq_buf_fini(&g2);
    fmq_buf_fini(&u);
    fmq_buf_fini(&u2);
    fmq_device_destroy(&d);
}

static void state_survives_a_restart(void **s)
{
    (void)s;
    char dir[512];
    assert_int_equal(fmq_test_tmpdir("device", dir, sizeof dir), FMQ_OK);
    fmq_device *d = open_dev(dir);
    fmq_buf g, u;
    fmq_buf_init(&u);
    make_global(&g, "f1", 4, 4, 100);
    fmq_device_result res;
    assert_int_equal(fmq_device_on_global(d, g.data, g.len, &res, &u), FMQ_OK);
    fmq_device_destroy(&d);

    d = open_dev(dir);
    const uint8_t *p;
    size_t len;
    bool acked = true;
    assert_int_equal(fmq_device_pending(d, &p, &len, &acked), FMQ_OK);
    assert_false(acked);
    assert_int_equal(len, u.len);
    assert_memory_equal(p, u.data, len);
    fmq_device_stats st;
    fmq_device_get_stats(d, &st);
    assert_int_equal(st.version, 4);
    assert_int_equal(st.last_trained, 4);
    /* the held global does not train round 4 again */
    assert_int_equal(fmq_device_held_global(d, &p, &len), FMQ_OK);
    fmq_buf held;
    fmq_buf_init(&held);
    assert_int_equal(fmq_buf_append(&held, p, len), FMQ_OK);
    assert_int_equal(fmq_device_on_global(d, held.data, held.len, &res, &u),
                     FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_ALREADY);
    assert_int_equal(fmq_device_mark_acked(d), FMQ_OK);
    fmq_device_destroy(&d);
    d = open_dev(dir);
    assert_int_equal(fmq_device_pending(d, &p, &len, &acked), FMQ_OK);
    assert_true(acked);
    fmq_device_destroy(&d);
    /* a corrupt state file is refused, not silently forgotten */
    char path[600];
    snprintf(path, sizeof path, "%s/device.state", dir);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 20, SEEK_SET);
    fputc(0x5a, f);
    fclose(f);
    fmq_device_cfg c = {.fleet = "f1", .id = "dev-1", .state_dir = dir,
                        .setup = {.data = &ds, .n = N}};
    assert_int_equal(fmq_device_open(&c, &d), FMQ_ERR_DATA);
    assert_null(d);
    fmq_buf_fini(&held);
    fmq_buf_fini(&g);
    fmq_buf_fini(&u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(trains_once_and_refuses_other_fleets_and_older_versions),
        cmocka_unit_test(a_republished_round_resends_the_same_bytes),
        cmocka_unit_test(state_survives_a_restart),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
