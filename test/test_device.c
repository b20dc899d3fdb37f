/*
 * test_device.c — the device core (device/device.h) without a broker:
 * globals in, updates out, refusals, resends and device.state across a
 * restart. The built-in engine trains logreg on a small synthetic set.
 * Trust (SPEC §7): globals are signed with a key made for the run and
 * updates come out sealed to it; unsigned, other-key, tampered, bit-flipped,
 * other-fleet, rolled-back and same-version-other-content globals are
 * refused with their reason while the device keeps its model and pending
 * update; key rotation; sealing off and checking off for debugging.
 * The hostile-device hook (tamper_fn) and its ready-made attacks: a scaled
 * delta and Gaussian noise are what the device publishes, within the q8
 * quantization error.
 * Global deltas (SPEC §6.6): applied bit for bit (the weights equal the
 * base plus the dequantized delta, as the aggregator computes them), a
 * broken chain is FMQ_DEV_BEHIND with nothing changed, forged, stale and
 * misfit deltas are refused, the weights survive a restart; and a runner
 * on a real broker follows deltas, fetches the retained global once when
 * it misses one, and goes back to deltas.
 */
#include <math.h>
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
#include "trust.h"

enum { N = 64, DIM = 4, CLASSES = 3 };
static float xs[N * DIM];
static uint16_t ys[N];
static fmq_dataset ds = {N, DIM, CLASSES, 1, 1, DIM, xs, ys};

/* The aggregator's key (private, signs; the device pins its public half),
 * a second aggregator key (rotation) and a stranger's. */
static fmq_trust_key *agg, *agg_pub, *agg2, *agg2_pub, *stranger;

/* Set to make the next plain globals say gd (deltas on model/delta). */
static bool plain_gd;

/* A plain global of `fleet`, round r, version v, logreg on DIM inputs,
 * weights 0.01 * i * wscale. */
static void make_plain(fmq_buf *b, const char *fleet, uint64_t r, uint64_t v,
                       uint64_t ts, float wscale)
{
    uint32_t P = DIM * CLASSES + CLASSES;
    float w[DIM * CLASSES + CLASSES];
    for (uint32_t i = 0; i < P; i++)
        w[i] = 0.01f * (float)i * wscale;
    fmq_msg_global g;
    fmq_msg_global_init(&g);
    snprintf(g.fleet, sizeof g.fleet, "%s", fleet);
    snprintf(g.model, sizeof g.model, "logreg");
    g.round = r;
    g.version = v;
    g.ts_ms = ts;
    g.train = (fmq_train_cfg){.epochs = 1, .batch = 8, .lr = 0.1f};
    g.uq = (fmq_uq){.scheme = FMQ_Q_Q8, .block = 4, .error_feedback = true};
    g.deltas = plain_gd;
    fmq_quant_cfg qc = {FMQ_Q_F32, 0, false};
    assert_int_equal(fmq_quant_encode(&qc, w, P, NULL, &g.weights), FMQ_OK);
    fmq_buf_init(b);
    assert_int_equal(fmq_codec_encode_global(&g, b), FMQ_OK);
    fmq_qtensor_fini(&g.weights);
    fmq_msg_global_fini(&g);
}

/* The same, signed by key (as the aggregator does). */
static void make_signed(fmq_buf *b, const fmq_trust_key *key,
                        const char *fleet, uint64_t r, uint64_t v, uint64_t ts,
                        float wscale)
{
    fmq_buf plain;
    make_plain(&plain, fleet, r, v, ts, wscale);
    fmq_buf_init(b);
    assert_int_equal(fmq_trust_sign(key, NULL, plain.data, plain.len, b),
                     FMQ_OK);
    fmq_buf_fini(&plain);
}

/* A global as the aggregator publishes it. */
static void make_global(fmq_buf *b, const char *fleet, uint64_t r, uint64_t v,
                        uint64_t ts)
{
    make_signed(b, agg, fleet, r, v, ts, 1.0f);
}

static fmq_device_cfg dev_cfg(const char *dir)
{
    static const fmq_trust_key *pinned[1];
    pinned[0] = agg_pub;
    fmq_device_cfg c = {.fleet = "f1", .id = "dev-1", .state_dir = dir,
                        .setup = {.data = &ds, .n = N}, .seed = 3,
                        .agg_keys = pinned, .nagg_keys = 1};
    return c;
}

static fmq_device *open_dev(const char *dir)
{
    fmq_device_cfg c = dev_cfg(dir);
    fmq_device *d;
    assert_int_equal(fmq_device_open(&c, &d), FMQ_OK);
    return d;
}

/* Opens the sealed update u with the aggregator's key, as the aggregator
 * does for (f1, dev, its round), and decodes it into m (views into
 * plain). */
static fmq_err open_update(const fmq_trust_key *key, const char *dev,
                           const fmq_buf *u, fmq_buf *plain, fmq_msg_update *m)
{
    uint64_t r = 0;
    fmq_buf_init(plain);
    fmq_err e = fmq_trust_open(key, NULL, "f1", dev, u->data, u->len, NULL,
                               plain, &r, NULL);
    if (e)
        return e;
    e = fmq_codec_decode_update(plain->data, plain->len, NULL, m, NULL);
    if (!e && m->round != r)
        e = FMQ_ERR_SEAL;
    return e;
}

static uint64_t reason(const fmq_device *d, const char *why)
{
    fmq_device_stats st;
    fmq_device_get_stats(d, &st);
    for (uint32_t i = 0; i < st.nreasons; i++)
        if (strcmp(st.reasons[i].reason, why) == 0)
            return st.reasons[i].count;
    return 0;
}

static int setup(void **state)
{
    (void)state;
    if (fmq_trust_key_generate(NULL, &agg) ||
        fmq_trust_key_public_of(agg, &agg_pub) ||
        fmq_trust_key_generate(NULL, &agg2) ||
        fmq_trust_key_public_of(agg2, &agg2_pub) ||
        fmq_trust_key_generate(NULL, &stranger))
        return -1;
    for (int i = 0; i < N; i++) {
        ys[i] = (uint16_t)(i % CLASSES);
        for (int j = 0; j < DIM; j++)
            xs[i * DIM + j] = (float)((i * 7 + j * 3) % 5) / 5.0f + ys[i];
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fmq_trust_key_destroy(&agg);
    fmq_trust_key_destroy(&agg_pub);
    fmq_trust_key_destroy(&agg2);
    fmq_trust_key_destroy(&agg2_pub);
    fmq_trust_key_destroy(&stranger);
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
    fmq_buf plain;
    assert_int_equal(open_update(agg, "dev-1", &u, &plain, &m), FMQ_OK);
    assert_string_equal(m.device, "dev-1");
    assert_int_equal(m.round, 2);
    assert_int_equal(m.samples, N);
    assert_int_equal(m.delta.scheme, FMQ_Q_Q8);
    fmq_buf_fini(&plain);
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
    fmq_device_cfg c = dev_cfg(dir);
    assert_int_equal(fmq_device_open(&c, &d), FMQ_ERR_DATA);
    assert_null(d);
    fmq_buf_fini(&held);
    fmq_buf_fini(&g);
    fmq_buf_fini(&u);
}

/* Expects buf refused with reason e, the model, pending update and
 * counters otherwise as they were. */
static void expect_refused(fmq_device *d, const fmq_buf *buf, fmq_err e,
                           const char *detail_has)
{
    fmq_device_stats before, after;
    fmq_device_get_stats(d, &before);
    uint32_t P;
    const float *w = fmq_device_weights(d, &P);
    float keep[DIM * CLASSES + CLASSES];
    assert_int_equal(P, sizeof keep / sizeof keep[0]);
    memcpy(keep, w, sizeof keep);
    const uint8_t *p0;
    size_t l0;
    assert_int_equal(fmq_device_pending(d, &p0, &l0, NULL), FMQ_OK);
    fmq_buf pend;
    fmq_buf_init(&pend);
    assert_int_equal(fmq_buf_append(&pend, p0, l0), FMQ_OK);

    fmq_buf u;
    fmq_buf_init(&u);
    fmq_device_result res;
    assert_int_equal(fmq_device_on_global(d, buf->data, buf->len, &res, &u),
                     e);
    assert_int_equal(res.action, FMQ_DEV_REFUSED);
    assert_int_equal(u.len, 0);
    if (detail_has)
        assert_non_null(strstr(res.detail.what, detail_has));
    fmq_device_get_stats(d, &after);
    assert_int_equal(after.refused, before.refused + 1);
    assert_int_equal(after.last_error, e);
    assert_int_equal(after.version, before.version);
    assert_int_equal(after.round, before.round);
    assert_int_equal(after.trained, before.trained);
    assert_memory_equal(fmq_device_weights(d, NULL), keep, sizeof keep);
    const uint8_t *p1;
    size_t l1;
    assert_int_equal(fmq_device_pending(d, &p1, &l1, NULL), FMQ_OK);
    assert_int_equal(l1, pend.len);
    assert_memory_equal(p1, pend.data, l1);
    fmq_buf_fini(&pend);
    fmq_buf_fini(&u);
}

static void forged_globals_are_refused_and_the_model_kept(void **s)
{
    (void)s;
    fmq_log_set_level(FMQ_LOG_ERR);
    char dir[512];
    assert_int_equal(fmq_test_tmpdir("device-forged", dir, sizeof dir),
                     FMQ_OK);
    fmq_device *d = open_dev(dir);
    fmq_buf g, u, x;
    fmq_buf_init(&u);
    make_global(&g, "f1", 2, 2, 100);
    fmq_device_result res;
    assert_int_equal(fmq_device_on_global(d, g.data, g.len, &res, &u), FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_TRAINED);

    /* unsigned: a plain global, newer */
    make_plain(&x, "f1", 3, 3, 200, 2.0f);
    expect_refused(d, &x, FMQ_ERR_SIG, "unsigned");
    fmq_buf_fini(&x);
    /* signed by a key the device does not pin */
    make_signed(&x, stranger, "f1", 3, 3, 200, 2.0f);
    expect_refused(d, &x, FMQ_ERR_KEY, "not a trusted key");
    fmq_buf_fini(&x);
    /* tampered: one byte of the body's weights changed after signing */
    make_global(&x, "f1", 3, 3, 200);
    x.data[x.len / 2] ^= 0x40;
    expect_refused(d, &x, FMQ_ERR_SIG, "does not verify");
    fmq_buf_fini(&x);
    /* one bit of the signature (the last key of the envelope) flipped */
    make_global(&x, "f1", 3, 3, 200);
    x.data[x.len - 1] ^= 0x01;
    expect_refused(d, &x, FMQ_ERR_SIG, "does not verify");
    fmq_buf_fini(&x);
    /* a genuine signature over another fleet's global */
    make_global(&x, "f2", 3, 3, 200);
    expect_refused(d, &x, FMQ_ERR_FLEET, "f2");
    fmq_buf_fini(&x);
    /* rolled back: a genuine older global (what a replay looks like) */
    make_global(&x, "f1", 1, 1, 50);
    expect_refused(d, &x, FMQ_ERR_STALE, "older");
    fmq_buf_fini(&x);
    /* the same version with other weights, or for another round */
    make_signed(&x, agg, "f1", 2, 2, 300, 3.0f);
    expect_refused(d, &x, FMQ_ERR_STALE, "other content");
    fmq_buf_fini(&x);
    make_global(&x, "f1", 3, 2, 300);
    expect_refused(d, &x, FMQ_ERR_STALE, "other content");
    fmq_buf_fini(&x);
    /* bytes that are no envelope at all */
    static const uint8_t junk[] = {0x81, 0xa1};
    fmq_buf_init(&x);
    assert_int_equal(fmq_buf_append(&x, junk, sizeof junk), FMQ_OK);
    expect_refused(d, &x, FMQ_ERR_TRUNCATED, NULL);
    fmq_buf_fini(&x);

    assert_int_equal(reason(d, "sig"), 3);
    assert_int_equal(reason(d, "key"), 1);
    assert_int_equal(reason(d, "fleet"), 1);
    assert_int_equal(reason(d, "stale"), 3);
    assert_int_equal(reason(d, "truncated"), 1);
    /* nothing of that reached device.state: a restart holds version 2 */
    fmq_device_destroy(&d);
    d = open_dev(dir);
    fmq_device_stats st;
    fmq_device_get_stats(d, &st);
    assert_int_equal(st.version, 2);
    /* the same global republished (new timestamp) is not stale: resend */
    make_global(&x, "f1", 2, 2, 400);
    fmq_buf u2;
    fmq_buf_init(&u2);
    assert_int_equal(fmq_device_on_global(d, x.data, x.len, &res, &u2),
                     FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_RESEND);
    assert_int_equal(u2.len, u.len);
    assert_memory_equal(u2.data, u.data, u.len);
    fmq_buf_fini(&x);
    /* and the next genuine global trains */
    make_global(&x, "f1", 3, 3, 500);
    assert_int_equal(fmq_device_on_global(d, x.data, x.len, &res, &u2),
                     FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_TRAINED);
    fmq_buf_fini(&x);
    fmq_buf_fini(&u2);
    fmq_buf_fini(&g);
    fmq_buf_fini(&u);
    fmq_device_destroy(&d);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

static void updates_are_sealed_for_this_device_and_round(void **s)
{
    (void)s;
    fmq_device *d = open_dev(NULL);
    fmq_buf g, u, plain;
    fmq_buf_init(&u);
    make_global(&g, "f1", 5, 5, 100);
    fmq_device_result res;
    assert_int_equal(fmq_device_on_global(d, g.data, g.len, &res, &u), FMQ_OK);
    fmq_msg_type t;
    assert_int_equal(fmq_codec_peek(u.data, u.len, NULL, &t, NULL), FMQ_OK);
    assert_int_equal(t, FMQ_MSG_SEALED);
    fmq_msg_sealed env;
    assert_int_equal(fmq_codec_decode_sealed(u.data, u.len, NULL, &env, NULL),
                     FMQ_OK);
    assert_string_equal(env.kid, fmq_trust_key_id(agg));
    assert_int_equal(env.round, 5);
    fmq_msg_update m;
    assert_int_equal(open_update(agg, "dev-1", &u, &plain, &m), FMQ_OK);
    assert_int_equal(m.round, 5);
    fmq_buf_fini(&plain);
    /* under another device's name it does not open; nor with another key */
    assert_int_equal(open_update(agg, "dev-2", &u, &plain, &m), FMQ_ERR_SEAL);
    fmq_buf_fini(&plain);
    assert_int_equal(open_update(stranger, "dev-1", &u, &plain, &m),
                     FMQ_ERR_KEY);
    fmq_buf_fini(&plain);
    fmq_buf_fini(&g);
    fmq_buf_fini(&u);
    fmq_device_destroy(&d);
}

static void a_rotated_key_is_accepted_and_sealed_to(void **s)
{
    (void)s;
    const fmq_trust_key *pinned[] = {agg_pub, agg2_pub};
    fmq_device_cfg c = dev_cfg(NULL);
    c.agg_keys = pinned;
    c.nagg_keys = 2;
    fmq_device *d;
    assert_int_equal(fmq_device_open(&c, &d), FMQ_OK);
    fmq_buf g, u, plain;
    fmq_buf_init(&u);
    make_global(&g, "f1", 1, 1, 100);
    fmq_device_result res;
    assert_int_equal(fmq_device_on_global(d, g.data, g.len, &res, &u), FMQ_OK);
    fmq_buf_fini(&g);
    make_signed(&g, agg2, "f1", 2, 2, 200, 1.5f); /* the new key */
    assert_int_equal(fmq_device_on_global(d, g.data, g.len, &res, &u), FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_TRAINED);
    fmq_msg_update m;
    assert_int_equal(open_update(agg2, "dev-1", &u, &plain, &m), FMQ_OK);
    assert_int_equal(m.round, 2);
    fmq_buf_fini(&plain);
    fmq_buf_fini(&g);
    /* an explicit seal_key wins over the signer */
    c.agg_keys = pinned;
    c.nagg_keys = 1;
    c.seal_key = agg2_pub;
    fmq_device *d2;
    assert_int_equal(fmq_device_open(&c, &d2), FMQ_OK);
    make_global(&g, "f1", 3, 3, 300);
    assert_int_equal(fmq_device_on_global(d2, g.data, g.len, &res, &u),
                     FMQ_OK);
    assert_int_equal(open_update(agg2, "dev-1", &u, &plain, &m), FMQ_OK);
    fmq_buf_fini(&plain);
    fmq_buf_fini(&g);
    fmq_buf_fini(&u);
    fmq_device_destroy(&d);
    fmq_device_destroy(&d2);
}

static void without_keys_a_device_does_not_open_unless_told(void **s)
{
    (void)s;
    fmq_log_set_level(2 /* quiet: errors expected */);
    fmq_device_cfg c = dev_cfg(NULL);
    c.agg_keys = NULL;
    c.nagg_keys = 0;
    fmq_device *d;
    assert_int_equal(fmq_device_open(&c, &d), FMQ_ERR_CONFIG);
    assert_null(d);
    c.no_verify = true; /* still nothing to seal to */
    assert_int_equal(fmq_device_open(&c, &d), FMQ_ERR_CONFIG);
    c.no_seal = true;   /* debugging: plain in, plain out */
    assert_int_equal(fmq_device_open(&c, &d), FMQ_OK);
    fmq_log_set_level(FMQ_LOG_NOTICE);
    fmq_buf g, u;
    fmq_buf_init(&u);
    make_plain(&g, "f1", 1, 1, 100, 1.0f);
    fmq_device_result res;
    assert_int_equal(fmq_device_on_global(d, g.data, g.len, &res, &u), FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_TRAINED);
    fmq_msg_update m;
    assert_int_equal(fmq_codec_decode_update(u.data, u.len, NULL, &m, NULL),
                     FMQ_OK);
    fmq_buf_fini(&g);
    /* no_verify unwraps a signed envelope without checking it */
    make_signed(&g, stranger, "f1", 2, 2, 200, 1.0f);
    assert_int_equal(fmq_device_on_global(d, g.data, g.len, &res, &u), FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_TRAINED);
    fmq_buf_fini(&g);
    fmq_buf_fini(&u);
    fmq_device_destroy(&d);
}

static void agg_key_lists_load_public_keys_only(void **s)
{
    (void)s;
    char dir[512];
    assert_int_equal(fmq_test_tmpdir("device-keys", dir, sizeof dir), FMQ_OK);
    char pub1[600], pub2[600], priv[600], list[1900];
    snprintf(pub1, sizeof pub1, "%s/a.pub", dir);
    snprintf(pub2, sizeof pub2, "%s/b.pub", dir);
    snprintf(priv, sizeof priv, "%s/a.pem", dir);
    fmq_buf b;
    fmq_buf_init(&b);
    assert_int_equal(fmq_trust_key_write_pem(agg, false, &b), FMQ_OK);
    assert_int_equal(fmq_file_write_atomic(pub1, b.data, b.len), FMQ_OK);
    fmq_buf_reset(&b);
    assert_int_equal(fmq_trust_key_write_pem(agg2, false, &b), FMQ_OK);
    assert_int_equal(fmq_file_write_atomic(pub2, b.data, b.len), FMQ_OK);
    fmq_buf_reset(&b);
    assert_int_equal(fmq_trust_key_write_pem(agg, true, &b), FMQ_OK);
    assert_int_equal(fmq_file_write_atomic(priv, b.data, b.len), FMQ_OK);
    fmq_buf_fini(&b);
    fmq_device_keys ks;
    fmq_device_cfg c = dev_cfg(NULL);
    snprintf(list, sizeof list, "%s,%s", pub1, pub2);
    assert_int_equal(fmq_device_keys_load(&ks, list, pub2, &c), FMQ_OK);
    assert_int_equal(ks.n, 2);
    assert_int_equal(c.nagg_keys, 2);
    assert_string_equal(fmq_trust_key_id(c.agg_keys[1]),
                        fmq_trust_key_id(agg2));
    assert_ptr_equal(c.seal_key, ks.seal);
    fmq_device_keys_fini(&ks);
    assert_int_equal(ks.n, 0);
    fmq_log_set_level(2 /* quiet: errors expected */);
    assert_int_equal(fmq_device_keys_load(&ks, priv, NULL, NULL),
                     FMQ_ERR_CONFIG);
    snprintf(list, sizeof list, "%s,", pub1);
    assert_int_equal(fmq_device_keys_load(&ks, list, NULL, NULL),
                     FMQ_ERR_CONFIG);
    assert_int_equal(ks.n, 0);
    snprintf(list, sizeof list, "%s/none.pub", dir);
    assert_int_equal(fmq_device_keys_load(&ks, list, NULL, NULL),
                     FMQ_ERR_NOTFOUND);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

/* ------------------------------------------------------------- deltas */

enum { P_DELTA = DIM * CLASSES + CLASSES };

/* A delta message from base bv to version mv for round r, the tensor
 * x (P_DELTA,) quantized with scheme s (block 4), signed by key (NULL:
 * plain); n values (P_DELTA unless testing a misfit). */
static void make_delta(fmq_buf *b, const fmq_trust_key *key, const char *fleet,
                       uint64_t r, uint64_t mv, uint64_t bv, uint64_t ts,
                       fmq_scheme sch, const float *x, uint32_t n)
{
    fmq_msg_delta m;
    fmq_msg_delta_init(&m);
    snprintf(m.g.fleet, sizeof m.g.fleet, "%s", fleet);
    snprintf(m.g.model, sizeof m.g.model, "logreg");
    m.g.round = r;
    m.g.version = mv;
    m.base = bv;
    m.g.ts_ms = ts;
    m.g.train = (fmq_train_cfg){.epochs = 1, .batch = 8, .lr = 0.1f};
    m.g.uq = (fmq_uq){.scheme = FMQ_Q_Q8, .block = 4, .error_feedback = true};
    m.g.deltas = true;
    fmq_quant_cfg qc = {sch, 4, false};
    assert_int_equal(fmq_quant_encode(&qc, x, n, NULL, &m.delta), FMQ_OK);
    fmq_buf plain;
    fmq_buf_init(&plain);
    assert_int_equal(fmq_codec_encode_delta(&m, &plain), FMQ_OK);
    fmq_buf_init(b);
    if (key)
        assert_int_equal(fmq_trust_sign(key, NULL, plain.data, plain.len, b),
                         FMQ_OK);
    else
        assert_int_equal(fmq_buf_append(b, plain.data, plain.len), FMQ_OK);
    fmq_buf_fini(&plain);
    fmq_msg_delta_fini(&m);
}

/* base + dequant(Q_s(x)), each a float32 addition: what the aggregator
 * holds after publishing that delta (computed here without the device). */
static void expect_after(const float *base, const float *x, fmq_scheme sch,
                         float *out)
{
    fmq_quant_cfg qc = {sch, 4, false};
    fmq_qtensor q;
    float dq[P_DELTA];
    assert_int_equal(fmq_quant_encode(&qc, x, P_DELTA, NULL, &q), FMQ_OK);
    assert_int_equal(fmq_quant_decode(&q, dq), FMQ_OK);
    for (uint32_t i = 0; i < P_DELTA; i++)
        out[i] = base[i] + dq[i];
    fmq_qtensor_fini(&q);
}

static void delta_values(float *x, uint32_t seed)
{
    fmq_rng r;
    fmq_rng_seed(&r, seed);
    for (uint32_t i = 0; i < P_DELTA; i++)
        x[i] = (float)(0.01 * fmq_rng_normal(&r));
}

static void deltas_apply_bit_for_bit_and_a_broken_chain_is_behind(void **s)
{
    (void)s;
    fmq_log_set_level(FMQ_LOG_ERR);
    char dir[512];
    assert_int_equal(fmq_test_tmpdir("device-delta", dir, sizeof dir),
                     FMQ_OK);
    fmq_device *d = open_dev(dir);
    fmq_buf g1, u, dl;
    fmq_buf_init(&u);
    plain_gd = true;
    make_global(&g1, "f1", 1, 1, 100);
    plain_gd = false;
    fmq_device_result res;
    assert_int_equal(fmq_device_on_global(d, g1.data, g1.len, &res, &u),
                     FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_TRAINED);
    assert_true(fmq_device_follows_deltas(d));
    float want[P_DELTA], x[P_DELTA], keep[P_DELTA];
    uint32_t P;
    memcpy(want, fmq_device_weights(d, &P), sizeof want);
    assert_int_equal(P, P_DELTA);

    /* v1 -> v2 (q8), v2 -> v3 (q4), v3 -> v4 (f16): applied exactly */
    const fmq_scheme sch[3] = {FMQ_Q_Q8, FMQ_Q_Q4, FMQ_Q_F16};
    for (uint64_t v = 1; v <= 3; v++) {
        delta_values(x, (uint32_t)v);
        expect_after(want, x, sch[v - 1], want);
        make_delta(&dl, agg, "f1", v + 1, v + 1, v, 100 + v, sch[v - 1], x,
                   P_DELTA);
        assert_int_equal(fmq_device_on_global(d, dl.data, dl.len, &res, &u),
                         FMQ_OK);
        assert_int_equal(res.action, FMQ_DEV_TRAINED);
        assert_int_equal(res.version, v + 1);
        assert_memory_equal(fmq_device_weights(d, NULL), want, sizeof want);
        fmq_buf_fini(&dl);
    }
    fmq_device_stats st;
    fmq_device_get_stats(d, &st);
    assert_int_equal(st.deltas, 3);
    assert_int_equal(st.trained, 4);
    assert_int_equal(st.version, 4);

    /* the same version announced again: nothing applied; a new ts resends */
    delta_values(x, 3);
    make_delta(&dl, agg, "f1", 4, 4, 3, 103, FMQ_Q_F16, x, P_DELTA);
    assert_int_equal(fmq_device_on_global(d, dl.data, dl.len, &res, &u),
                     FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_ALREADY);
    fmq_buf_fini(&dl);
    make_delta(&dl, agg, "f1", 4, 4, 3, 999, FMQ_Q_F16, x, P_DELTA);
    assert_int_equal(fmq_device_on_global(d, dl.data, dl.len, &res, &u),
                     FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_RESEND);
    assert_memory_equal(fmq_device_weights(d, NULL), want, sizeof want);
    fmq_buf_fini(&dl);

    /* a missed delta: v5 -> v6 while holding v4 is behind, nothing moves */
    memcpy(keep, want, sizeof keep);
    make_delta(&dl, agg, "f1", 6, 6, 5, 200, FMQ_Q_Q8, x, P_DELTA);
    fmq_buf_reset(&u);
    assert_int_equal(fmq_device_on_global(d, dl.data, dl.len, &res, &u),
                     FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_BEHIND);
    assert_int_equal(u.len, 0);
    fmq_device_get_stats(d, &st);
    assert_int_equal(st.behind, 1);
    assert_int_equal(st.version, 4);
    assert_int_equal(st.refused, 0);
    assert_memory_equal(fmq_device_weights(d, NULL), keep, sizeof keep);
    fmq_buf_fini(&dl);

    /* refused with their reasons, model and pending update kept */
    make_delta(&dl, agg, "f1", 3, 3, 2, 300, FMQ_Q_Q8, x, P_DELTA);
    expect_refused(d, &dl, FMQ_ERR_STALE, "older");
    fmq_buf_fini(&dl);
    make_delta(&dl, agg, "f1", 9, 4, 3, 300, FMQ_Q_Q8, x, P_DELTA);
    expect_refused(d, &dl, FMQ_ERR_STALE, "other content");
    fmq_buf_fini(&dl);
    make_delta(&dl, agg, "f1", 5, 5, 4, 300, FMQ_Q_Q8, x, P_DELTA - 1);
    expect_refused(d, &dl, FMQ_ERR_MODEL, "values");
    fmq_buf_fini(&dl);
    make_delta(&dl, agg, "f2", 5, 5, 4, 300, FMQ_Q_Q8, x, P_DELTA);
    expect_refused(d, &dl, FMQ_ERR_FLEET, "f2");
    fmq_buf_fini(&dl);
    make_delta(&dl, stranger, "f1", 5, 5, 4, 300, FMQ_Q_Q8, x, P_DELTA);
    expect_refused(d, &dl, FMQ_ERR_KEY, NULL);
    fmq_buf_fini(&dl);
    make_delta(&dl, NULL, "f1", 5, 5, 4, 300, FMQ_Q_Q8, x, P_DELTA);
    expect_refused(d, &dl, FMQ_ERR_SIG, NULL);
    fmq_buf_fini(&dl);
    make_delta(&dl, agg, "f1", 5, 5, 4, 300, FMQ_Q_Q8, x, P_DELTA);
    dl.data[dl.len / 2] ^= 0x10; /* inside the body */
    assert_int_not_equal(fmq_device_on_global(d, dl.data, dl.len, &res, &u),
                         FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_REFUSED);
    assert_memory_equal(fmq_device_weights(d, NULL), keep, sizeof keep);
    fmq_buf_fini(&dl);

    /* the fetched full model, then deltas again from it */
    fmq_buf g6;
    plain_gd = true;
    make_global(&g6, "f1", 6, 6, 400);
    plain_gd = false;
    assert_int_equal(fmq_device_on_global(d, g6.data, g6.len, &res, &u),
                     FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_TRAINED);
    memcpy(want, fmq_device_weights(d, NULL), sizeof want);
    delta_values(x, 7);
    expect_after(want, x, FMQ_Q_Q8, want);
    make_delta(&dl, agg, "f1", 7, 7, 6, 500, FMQ_Q_Q8, x, P_DELTA);
    assert_int_equal(fmq_device_on_global(d, dl.data, dl.len, &res, &u),
                     FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_TRAINED);
    assert_memory_equal(fmq_device_weights(d, NULL), want, sizeof want);
    fmq_buf_fini(&dl);
    fmq_device_destroy(&d);

    /* a restart: the weights built by deltas come back bit for bit, and
     * the held delta (the last message taken) trains nothing again */
    d = open_dev(dir);
    assert_memory_equal(fmq_device_weights(d, NULL), want, sizeof want);
    assert_true(fmq_device_follows_deltas(d));
    const uint8_t *p;
    size_t len;
    assert_int_equal(fmq_device_held_global(d, &p, &len), FMQ_OK);
    fmq_buf held;
    fmq_buf_init(&held);
    assert_int_equal(fmq_buf_append(&held, p, len), FMQ_OK);
    assert_int_equal(fmq_device_on_global(d, held.data, held.len, &res, &u),
                     FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_ALREADY);
    /* a global of its own version from the aggregator is not stale */
    fmq_buf g7;
    make_global(&g7, "f1", 7, 7, 500);
    assert_int_equal(fmq_device_on_global(d, g7.data, g7.len, &res, &u),
                     FMQ_OK);
    assert_int_equal(res.action, FMQ_DEV_ALREADY);
    assert_false(fmq_device_follows_deltas(d)); /* it did not say gd */
    fmq_buf_fini(&g7);
    fmq_buf_fini(&held);
    fmq_buf_fini(&g6);
    fmq_buf_fini(&g1);
    fmq_buf_fini(&u);
    fmq_device_destroy(&d);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

/* Polls r until cond(d) or about 10 s. */
static bool poll_until(fmq_devrun *r, fmq_device *d,
                       bool (*cond)(fmq_device *d, uint64_t arg),
                       uint64_t arg)
{
    for (int i = 0; i < 1000; i++) {
        if (cond(d, arg))
            return true;
        bool did;
        assert_int_equal(fmq_devrun_poll(r, 10, &did), FMQ_OK);
    }
    return cond(d, arg);
}

static bool holds_version(fmq_device *d, uint64_t v)
{
    fmq_device_stats st;
    fmq_device_get_stats(d, &st);
    return st.version == v;
}

static void publish(fmq_mqtt *m, const char *topic, const fmq_buf *b,
                    bool retain)
{
    assert_int_equal(fmq_mqtt_publish(m, topic, b->data, b->len, 1, retain,
                                      5000), FMQ_OK);
}

static void a_runner_follows_deltas_and_fetches_the_global_when_behind(
    void **s)
{
    (void)s;
    fmq_log_set_level(FMQ_LOG_ERR);
    fmq_test_broker br;
    assert_int_equal(fmq_test_broker_start(false, &br), FMQ_OK);
    fmq_mqtt_cfg mc;
    fmq_mqtt_cfg_defaults(&mc);
    mc.uri = br.uri;
    mc.client_id = "fedmq-agg-f1";
    fmq_mqtt *agg_mq;
    assert_int_equal(fmq_mqtt_new(&mc, &agg_mq), FMQ_OK);
    assert_int_equal(fmq_mqtt_connect(agg_mq, 5000), FMQ_OK);
    const char *tg = "fedmq/f1/model/global", *td = "fedmq/f1/model/delta";

    /* v1 retained (gd) before the device exists */
    fmq_buf g, dl;
    plain_gd = true;
    make_global(&g, "f1", 1, 1, 100);
    publish(agg_mq, tg, &g, true);
    fmq_buf_fini(&g);
    fmq_device *d = open_dev(NULL);
    fmq_devrun *r;
    fmq_mqtt_cfg dc;
    fmq_mqtt_cfg_defaults(&dc);
    dc.uri = br.uri;
    assert_int_equal(fmq_devrun_new(d, &dc, 5000, &r), FMQ_OK);
    assert_true(poll_until(r, d, holds_version, 1));
    float want[P_DELTA], x[P_DELTA];
    memcpy(want, fmq_device_weights(d, NULL), sizeof want);
    for (int i = 0; i < 20; i++) /* let it switch to deltas */
        assert_int_equal(fmq_devrun_poll(r, 10, NULL), FMQ_OK);

    /* v2: the global (retained) and its delta; the device takes the delta */
    make_global(&g, "f1", 2, 2, 200);
    publish(agg_mq, tg, &g, true);
    fmq_buf_fini(&g);
    delta_values(x, 2);
    expect_after(want, x, FMQ_Q_Q8, want);
    make_delta(&dl, agg, "f1", 2, 2, 1, 200, FMQ_Q_Q8, x, P_DELTA);
    publish(agg_mq, td, &dl, false);
    fmq_buf_fini(&dl);
    assert_true(poll_until(r, d, holds_version, 2));
    assert_memory_equal(fmq_device_weights(d, NULL), want, sizeof want);

    /* v3's delta is lost; v4's does not chain: the device fetches the
     * retained v4, then takes v5's delta */
    make_global(&g, "f1", 3, 3, 300);
    publish(agg_mq, tg, &g, true);
    fmq_buf_fini(&g);
    make_global(&g, "f1", 4, 4, 400);
    publish(agg_mq, tg, &g, true);
    fmq_buf_fini(&g);
    make_delta(&dl, agg, "f1", 4, 4, 3, 400, FMQ_Q_Q8, x, P_DELTA);
    publish(agg_mq, td, &dl, false);
    fmq_buf_fini(&dl);
    assert_true(poll_until(r, d, holds_version, 4));
    memcpy(want, fmq_device_weights(d, NULL), sizeof want);
    for (int i = 0; i < 20; i++) /* the unsubscribe */
        assert_int_equal(fmq_devrun_poll(r, 10, NULL), FMQ_OK);
    make_global(&g, "f1", 5, 5, 500);
    publish(agg_mq, tg, &g, true);
    fmq_buf_fini(&g);
    delta_values(x, 5);
    expect_after(want, x, FMQ_Q_Q4, want);
    make_delta(&dl, agg, "f1", 5, 5, 4, 500, FMQ_Q_Q4, x, P_DELTA);
    publish(agg_mq, td, &dl, false);
    fmq_buf_fini(&dl);
    assert_true(poll_until(r, d, holds_version, 5));
    assert_memory_equal(fmq_device_weights(d, NULL), want, sizeof want);
    plain_gd = false;
    for (int i = 0; i < 20; i++)
        assert_int_equal(fmq_devrun_poll(r, 10, NULL), FMQ_OK);

    /* what came: global v1, delta v2, delta v4 (behind), global v4 (the
     * fetch), delta v5: the globals v2, v3 and v5 never reached it */
    fmq_device_stats st;
    fmq_device_get_stats(d, &st);
    assert_int_equal(st.deltas, 2);
    assert_int_equal(st.behind, 1);
    assert_int_equal(st.refused, 0);
    assert_int_equal(st.trained, 4);
    fmq_mqtt_stats ms;
    fmq_devrun_mqtt_stats(r, &ms);
    assert_int_equal(ms.msgs_in, 5);
    fmq_devrun_destroy(&r);
    fmq_device_destroy(&d);
    fmq_mqtt_destroy(&agg_mq);
    fmq_test_broker_stop(&br);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

/* ------------------------------------------------------------- tamper */

enum { P_LOGREG = DIM * CLASSES + CLASSES };

/* A tamper_fn that records the honest delta, then applies an attack. */
typedef struct recorder {
    const fmq_device_attack *attack;
    float honest[P_LOGREG];
    uint32_t P, calls;
    uint64_t round;
} recorder;

static void record_then_attack(void *arg, float *delta, uint32_t P,
                               uint64_t round)
{
    recorder *r = arg;
    assert_int_equal(P, P_LOGREG);
    memcpy(r->honest, delta, sizeof r->honest);
    r->P = P;
    r->round = round;
    r->calls++;
    if (r->attack)
        fmq_device_attack_apply((void *)r->attack, delta, P, round);
}

/* The delta of a sealed update u of dev-1, decoded to floats (P,), and
 * the largest rounding error q8 may have made on each value: half of its
 * block's scale. */
static void published_delta(const fmq_buf *u, float *delta, float *err)
{
    fmq_buf plain;
    fmq_msg_update m;
    assert_int_equal(open_update(agg, "dev-1", u, &plain, &m), FMQ_OK);
    assert_int_equal(m.delta.scheme, FMQ_Q_Q8);
    assert_int_equal(m.delta.n, P_LOGREG);
    assert_int_equal(fmq_quant_decode(&m.delta, delta), FMQ_OK);
    for (uint32_t i = 0; i < P_LOGREG; i++) {
        uint32_t b0 = i / m.delta.block * m.delta.block;
        float mx = 0;
        for (uint32_t j = b0; j < b0 + m.delta.block && j < P_LOGREG; j++)
            mx = fmaxf(mx, fabsf(delta[j]));
        /* the block's max decodes exactly (code 127); scale = max / 127 */
        err[i] = mx / 127.0f * 0.5f * (1 + 1e-5f) + 1e-7f;
    }
    fmq_buf_fini(&plain);
}

static void a_scale_attack_publishes_minus_ten_times_the_honest_delta(
    void **s)
{
    (void)s;
    fmq_device_attack atk;
    assert_int_equal(fmq_device_attack_parse("scale:-10", &atk), FMQ_OK);
    assert_int_equal(atk.kind, FMQ_DEVICE_ATTACK_SCALE);
    assert_true(atk.param == -10.0);
    recorder rec = {.attack = &atk};
    fmq_device_cfg c = dev_cfg(NULL);
    fmq_device *honest = open_dev(NULL), *hostile;
    c.tamper_fn = record_then_attack;
    c.tamper_arg = &rec;
    assert_int_equal(fmq_device_open(&c, &hostile), FMQ_OK);
    fmq_buf g, uh, ux;
    fmq_buf_init(&uh);
    fmq_buf_init(&ux);
    make_global(&g, "f1", 3, 3, 100);
    fmq_device_result rh, rx;
    assert_int_equal(fmq_device_on_global(honest, g.data, g.len, &rh, &uh),
                     FMQ_OK);
    assert_int_equal(fmq_device_on_global(hostile, g.data, g.len, &rx, &ux),
                     FMQ_OK);
    assert_int_equal(rx.action, FMQ_DEV_TRAINED);
    assert_int_equal(rec.calls, 1);
    assert_int_equal(rec.round, 3);
    float h[P_LOGREG], herr[P_LOGREG], x[P_LOGREG], xerr[P_LOGREG];
    published_delta(&uh, h, herr);
    published_delta(&ux, x, xerr);
    double nh = 0, nx = 0;
    for (uint32_t i = 0; i < P_LOGREG; i++) {
        /* the hook saw the honest delta: same seed, same training */
        assert_true(fabsf(rec.honest[i] - h[i]) <= herr[i]);
        /* what went out is -10 x that, within q8's rounding of it */
        assert_true(fabsf(x[i] + 10.0f * rec.honest[i]) <= xerr[i]);
        /* and -10 x the honest device's published delta, within both */
        assert_true(fabsf(x[i] + 10.0f * h[i]) <= xerr[i] + 10 * herr[i]);
        nh += (double)h[i] * h[i];
        nx += (double)x[i] * x[i];
    }
    assert_true(nh > 0);
    assert_true(fabs(sqrt(nx / nh) - 10.0) < 0.1);
    assert_true(fabs(rx.norm / rh.norm - 10.0) < 0.1);
    /* the same global again is not trained again: no second call */
    assert_int_equal(fmq_device_on_global(hostile, g.data, g.len, &rx, &ux),
                     FMQ_OK);
    assert_int_equal(rx.action, FMQ_DEV_ALREADY);
    assert_int_equal(rec.calls, 1);
    fmq_buf_fini(&g);
    fmq_buf_fini(&uh);
    fmq_buf_fini(&ux);
    fmq_device_destroy(&honest);
    fmq_device_destroy(&hostile);
}

static void a_noise_attack_has_the_requested_std_per_device_and_round(
    void **s)
{
    (void)s;
    fmq_device_attack atk;
    assert_int_equal(fmq_device_attack_parse("noise:5", &atk), FMQ_OK);
    assert_int_equal(atk.kind, FMQ_DEVICE_ATTACK_NOISE);
    atk.seed = 42;
    /* the kernel: mean 0, std 5 over 200,000 draws (the standard error
     * of the std is 5 / sqrt(2n) = 0.008; 0.05 is six of them) */
    enum { BIG = 200000 };
    float *a = fmq_calloc(BIG, sizeof(float));
    float *b = fmq_calloc(BIG, sizeof(float));
    assert_non_null(a);
    assert_non_null(b);
    fmq_device_attack_apply(&atk, a, BIG, 7);
    double sum = 0, sq = 0;
    for (uint32_t i = 0; i < BIG; i++) {
        sum += a[i];
        sq += (double)a[i] * a[i];
    }
    double mean = sum / BIG, sd = sqrt(sq / BIG - mean * mean);
    assert_true(fabs(mean) < 5.0 * 6 / sqrt(BIG));
    assert_true(fabs(sd - 5.0) < 0.05);
    /* the same (seed, round) gives the same draws, whatever the delta
     * was; another round or another seed does not */
    for (uint32_t i = 0; i < BIG; i++)
        b[i] = (float)i;
    fmq_device_attack_apply(&atk, b, BIG, 7);
    assert_memory_equal(a, b, BIG * sizeof(float));
    fmq_device_attack_apply(&atk, b, BIG, 8);
    assert_memory_not_equal(a, b, BIG * sizeof(float));
    fmq_device_attack other = atk;
    other.seed = 43;
    fmq_device_attack_apply(&other, b, BIG, 7);
    assert_memory_not_equal(a, b, BIG * sizeof(float));
    fmq_free(a);
    fmq_free(b);

    /* through a device: what it publishes is that noise, not its delta */
    recorder rec = {.attack = &atk};
    fmq_device_cfg c = dev_cfg(NULL);
    c.tamper_fn = record_then_attack;
    c.tamper_arg = &rec;
    fmq_device *d;
    assert_int_equal(fmq_device_open(&c, &d), FMQ_OK);
    fmq_buf g, u;
    fmq_buf_init(&u);
    make_global(&g, "f1", 4, 4, 100);
    fmq_device_result res;
    assert_int_equal(fmq_device_on_global(d, g.data, g.len, &res, &u),
                     FMQ_OK);
    assert_int_equal(rec.calls, 1);
    float want[P_LOGREG] = {0}, x[P_LOGREG], xerr[P_LOGREG];
    fmq_device_attack_apply(&atk, want, P_LOGREG, 4);
    published_delta(&u, x, xerr);
    for (uint32_t i = 0; i < P_LOGREG; i++)
        assert_true(fabsf(x[i] - want[i]) <= xerr[i]);
    fmq_buf_fini(&g);
    fmq_buf_fini(&u);
    fmq_device_destroy(&d);
}

static void attack_specs_are_checked(void **s)
{
    (void)s;
    static const char *bad[] = {"", "scale", "scale:", "scale:1x",
                                "scale:nan", "scale:inf", "noise:0",
                                "noise:-1", "noise:", "flip:1", "Scale:2",
                                "noise:5,"};
    fmq_device_attack a = {.kind = FMQ_DEVICE_ATTACK_SCALE, .param = 7};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(fmq_device_attack_parse(bad[i], &a), FMQ_ERR_INVAL);
        assert_true(a.param == 7); /* unchanged */
    }
    assert_int_equal(fmq_device_attack_parse("scale:0.5", &a), FMQ_OK);
    assert_true(a.param == 0.5);
    assert_int_equal(fmq_device_attack_parse("noise:1e-3", &a), FMQ_OK);
    assert_true(a.kind == FMQ_DEVICE_ATTACK_NOISE && a.param == 1e-3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(trains_once_and_refuses_other_fleets_and_older_versions),
        cmocka_unit_test(a_republished_round_resends_the_same_bytes),
        cmocka_unit_test(state_survives_a_restart),
        cmocka_unit_test(forged_globals_are_refused_and_the_model_kept),
        cmocka_unit_test(updates_are_sealed_for_this_device_and_round),
        cmocka_unit_test(a_rotated_key_is_accepted_and_sealed_to),
        cmocka_unit_test(without_keys_a_device_does_not_open_unless_told),
        cmocka_unit_test(agg_key_lists_load_public_keys_only),
        cmocka_unit_test(a_scale_attack_publishes_minus_ten_times_the_honest_delta),
        cmocka_unit_test(a_noise_attack_has_the_requested_std_per_device_and_round),
        cmocka_unit_test(attack_specs_are_checked),
        cmocka_unit_test(deltas_apply_bit_for_bit_and_a_broken_chain_is_behind),
        cmocka_unit_test(a_runner_follows_deltas_and_fetches_the_global_when_behind),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
