/*
 * test_agg.c — the aggregator's core without a broker: the global message
 * it publishes, every way an update is rejected (each with its reason and
 * count, the round going on), counting once per (device, round), closing
 * on the cohort or at the deadline with the quorum (extending without it),
 * the late-update policies, the sample-weighted average, and resuming from
 * a checkpoint without counting anything twice. Trust (SPEC §7): the
 * global is signed with the aggregator's key; sealed updates open only for
 * the device of their topic and their round, sealed to this key; a
 * replay is a duplicate (also after a restart) or does not open; an
 * unsealed update is refused when sealing is required. The cases without
 * keys are the --no-sign --no-seal configuration. Strategies (strategy.h,
 * test_strategy.c has their arithmetic): the default fedavg is the FedAvg
 * of before bit for bit; FedBuff publishes a version every K updates with
 * no deadline and rejects updates past max staleness; the norm bound clips
 * or rejects, on arrival or (kept updates, the round's median) at close;
 * a strategy that cannot aggregate keeps the model; the strategy's state
 * survives a restart, a checkpoint of another strategy is refused, one of
 * the format before strategies resumes as fedavg; the global and the
 * metrics name the strategy. Global deltas (SPEC §6.6, gdelta.h): the
 * model moves by exactly the dequantized delta it publishes, the residual
 * goes into the next delta, both survive a restart. Per-class schemes: an
 * update that is not what its class was told is rejected `scheme`.
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
#include "blob.h"
#include "classes.h"
#include "fedavg.h"

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

/* ----------------------------------------------------------- trust */

static fmq_trust_key *agg_key, *other_key;

static int keys_setup(void **state)
{
    (void)state;
    if (fmq_trust_key_generate(NULL, &agg_key) ||
        fmq_trust_key_generate(NULL, &other_key))
        return -1;
    return 0;
}

static int keys_teardown(void **state)
{
    (void)state;
    fmq_trust_key_destroy(&agg_key);
    fmq_trust_key_destroy(&other_key);
    return 0;
}

static fmq_agg_cfg trust_cfg(void)
{
    fmq_agg_cfg c = base_cfg();
    c.sign_key = agg_key;
    c.seal_key = agg_key;
    c.require_seal = true;
    return c;
}

/* An update of dev for (round, version) sealed to `to` for (fleet,
 * sdev, sround): the honest device has sdev = dev, sround = round. */
static void make_sealed(fmq_buf *out, const fmq_trust_key *to,
                        const char *dev, uint64_t round, uint64_t version,
                        const char *sdev, uint64_t sround)
{
    fmq_buf plain;
    make_update(&plain, "f1", dev, round, version, 10, 0.01f, P);
    fmq_buf_init(out);
    assert_int_equal(fmq_trust_seal(to, NULL, "f1", sdev, sround, plain.data,
                                    plain.len, out),
                     FMQ_OK);
    fmq_buf_fini(&plain);
}

/* The same envelope with its clear `r` set to round (what an attacker
 * can change without the key). */
static void rewrite_round(fmq_buf *b, uint64_t round)
{
    fmq_msg_sealed m;
    assert_int_equal(fmq_codec_decode_sealed(b->data, b->len, NULL, &m, NULL),
                     FMQ_OK);
    m.round = round;
    fmq_buf nb;
    fmq_buf_init(&nb);
    assert_int_equal(fmq_codec_encode_sealed(&m, &nb), FMQ_OK);
    fmq_buf_fini(b);
    *b = nb;
}

static fmq_err post(fmq_agg *a, const char *topic_dev, const fmq_buf *b,
                    fmq_agg_verdict *v)
{
    char topic[128];
    snprintf(topic, sizeof topic, "fedmq/f1/update/%s", topic_dev);
    return fmq_agg_on_update(a, topic, b->data, b->len, 0, v);
}

static uint64_t reason_count(const fmq_agg_report *r, const char *why)
{
    for (uint32_t i = 0; i < r->nreasons; i++)
        if (strcmp(r->reasons[i].reason, why) == 0)
            return r->reasons[i].count;
    return 0;
}

static void the_global_is_signed_with_the_aggregator_key(void **state)
{
    (void)state;
    fmq_agg_cfg c = trust_cfg();
    fmq_agg *a;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    fmq_buf b, b2;
    fmq_buf_init(&b);
    fmq_buf_init(&b2);
    assert_int_equal(fmq_agg_encode_global(a, 5000, &b), FMQ_OK);
    fmq_trust_key *pub;
    assert_int_equal(fmq_trust_key_public_of(agg_key, &pub), FMQ_OK);
    const fmq_trust_key *ks[] = {pub};
    const uint8_t *body;
    size_t blen;
    assert_int_equal(fmq_trust_verify(ks, 1, b.data, b.len, NULL, &body,
                                      &blen, NULL),
                     FMQ_OK);
    fmq_msg_global g;
    assert_int_equal(fmq_codec_decode_global(body, blen, NULL, &g, NULL),
                     FMQ_OK);
    assert_int_equal(g.round, 1);
    assert_int_equal(g.weights.n, P);
    fmq_msg_global_fini(&g);
    /* deterministic: the same round and time give the same bytes */
    assert_int_equal(fmq_agg_encode_global(a, 5000, &b2), FMQ_OK);
    assert_int_equal(b.len, b2.len);
    assert_memory_equal(b.data, b2.data, b.len);
    /* another key does not verify it */
    fmq_trust_key *opub;
    assert_int_equal(fmq_trust_key_public_of(other_key, &opub), FMQ_OK);
    const fmq_trust_key *oks[] = {opub};
    assert_int_equal(fmq_trust_verify(oks, 1, b.data, b.len, NULL, &body,
                                      &blen, NULL),
                     FMQ_ERR_KEY);
    fmq_trust_key_destroy(&opub);
    /* a public key cannot sign or open: refused at open */
    fmq_agg_cfg bad = trust_cfg();
    bad.sign_key = pub;
    fmq_agg *x;
    fmq_log_set_level(FMQ_LOG_ERR);
    assert_int_equal(fmq_agg_open(&bad, &x), FMQ_ERR_CONFIG);
    bad = trust_cfg();
    bad.seal_key = NULL;
    assert_int_equal(fmq_agg_open(&bad, &x), FMQ_ERR_CONFIG);
    fmq_log_set_level(FMQ_LOG_NOTICE);
    fmq_trust_key_destroy(&pub);
    fmq_buf_fini(&b);
    fmq_buf_fini(&b2);
    fmq_agg_destroy(&a);
}

static void sealed_updates_open_only_for_their_topic_round_and_key(void **s)
{
    (void)s;
    fmq_log_set_level(FMQ_LOG_ERR);
    fmq_agg_cfg c = trust_cfg();
    fmq_agg *a;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    fmq_agg_verdict v;
    fmq_buf b;
    /* unsealed, when sealing is required */
    make_update(&b, "f1", "d1", 1, 1, 10, 0.01f, P);
    assert_int_equal(post(a, "d1", &b, &v), FMQ_ERR_SEAL);
    assert_int_equal(v, FMQ_AGG_REJECTED);
    fmq_buf_fini(&b);
    /* d2's sealed update republished on d1's topic */
    make_sealed(&b, agg_key, "d2", 1, 1, "d2", 1);
    assert_int_equal(post(a, "d1", &b, &v), FMQ_ERR_SEAL);
    fmq_buf_fini(&b);
    /* sealed to another key */
    make_sealed(&b, other_key, "d1", 1, 1, "d1", 1);
    assert_int_equal(post(a, "d1", &b, &v), FMQ_ERR_KEY);
    fmq_buf_fini(&b);
    /* its clear round changed */
    make_sealed(&b, agg_key, "d1", 1, 1, "d1", 1);
    rewrite_round(&b, 2);
    assert_int_equal(post(a, "d1", &b, &v), FMQ_ERR_SEAL);
    fmq_buf_fini(&b);
    /* sealed for round 2 by a device whose update says round 1 */
    make_sealed(&b, agg_key, "d1", 1, 1, "d1", 2);
    assert_int_equal(post(a, "d1", &b, &v), FMQ_ERR_SEAL);
    fmq_buf_fini(&b);
    /* one that says it is d9 inside, sealed for d1's topic */
    make_sealed(&b, agg_key, "d9", 1, 1, "d1", 1);
    assert_int_equal(post(a, "d1", &b, &v), FMQ_ERR_INVAL);
    fmq_buf_fini(&b);
    /* a flipped ciphertext byte */
    make_sealed(&b, agg_key, "d1", 1, 1, "d1", 1);
    b.data[b.len - 20] ^= 0x01;
    assert_int_equal(post(a, "d1", &b, &v), FMQ_ERR_SEAL);
    fmq_buf_fini(&b);
    /* the round went on: the honest ones count */
    fmq_buf h1, h2, h3;
    make_sealed(&h1, agg_key, "d1", 1, 1, "d1", 1);
    make_sealed(&h2, agg_key, "d2", 1, 1, "d2", 1);
    make_sealed(&h3, agg_key, "d3", 1, 1, "d3", 1);
    assert_int_equal(post(a, "d1", &h1, &v), FMQ_OK);
    assert_int_equal(v, FMQ_AGG_COUNTED);
    assert_int_equal(post(a, "d1", &h1, &v), FMQ_ERR_DUPLICATE); /* resend */
    assert_int_equal(post(a, "d2", &h2, &v), FMQ_OK);
    assert_int_equal(post(a, "d3", &h3, &v), FMQ_OK);
    assert_true(fmq_agg_tick(a, 1));
    fmq_agg_report r;
    assert_int_equal(fmq_agg_close(a, NULL, 1, &r), FMQ_OK);
    assert_int_equal(r.participants, 3);
    assert_int_equal(reason_count(&r, "seal"), 5);
    assert_int_equal(reason_count(&r, "key"), 1);
    assert_int_equal(reason_count(&r, "inval"), 1);
    assert_int_equal(reason_count(&r, "duplicate"), 1);
    char line[512];
    fmq_agg_format_report(&r, line, sizeof line);
    assert_non_null(strstr(line, "seal:5"));
    /* round 2: d1's round-1 update replayed as it was is a duplicate; with
     * its round rewritten to 2, or on d4's topic, it does not open */
    assert_int_equal(post(a, "d1", &h1, &v), FMQ_ERR_DUPLICATE);
    rewrite_round(&h1, 2);
    assert_int_equal(post(a, "d1", &h1, &v), FMQ_ERR_SEAL);
    assert_int_equal(post(a, "d4", &h2, &v), FMQ_ERR_SEAL);
    assert_int_equal(fmq_agg_round(a), 2);
    fmq_buf_fini(&h1);
    fmq_buf_fini(&h2);
    fmq_buf_fini(&h3);
    fmq_agg_destroy(&a);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

static void no_seal_accepts_plain_and_still_opens_sealed(void **state)
{
    (void)state;
    fmq_agg_cfg c = trust_cfg();
    c.require_seal = false;
    fmq_agg *a;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    fmq_agg_verdict v;
    fmq_buf b;
    make_update(&b, "f1", "d1", 1, 1, 10, 0.01f, P);
    assert_int_equal(post(a, "d1", &b, &v), FMQ_OK);
    fmq_buf_fini(&b);
    make_sealed(&b, agg_key, "d2", 1, 1, "d2", 1);
    assert_int_equal(post(a, "d2", &b, &v), FMQ_OK);
    assert_int_equal(v, FMQ_AGG_COUNTED);
    fmq_log_set_level(FMQ_LOG_ERR);
    assert_int_equal(post(a, "d3", &b, &v), FMQ_ERR_SEAL); /* moved */
    fmq_log_set_level(FMQ_LOG_NOTICE);
    fmq_buf_fini(&b);
    fmq_agg_destroy(&a);
}

static char *tmpdir(const char *name);

static void a_restart_with_sealing_counts_no_replay_twice(void **state)
{
    (void)state;
    fmq_log_set_level(FMQ_LOG_ERR);
    fmq_agg_cfg c = trust_cfg();
    c.state_dir = tmpdir("sealed");
    fmq_agg *a;
    fmq_agg_verdict v;
    fmq_buf h1, h2;
    make_sealed(&h1, agg_key, "d1", 1, 1, "d1", 1);
    make_sealed(&h2, agg_key, "d2", 1, 1, "d2", 1);
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    assert_int_equal(post(a, "d1", &h1, &v), FMQ_OK);
    assert_int_equal(fmq_agg_checkpoint(a), FMQ_OK);
    fmq_agg_destroy(&a);
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    assert_true(fmq_agg_resumed(a));
    assert_int_equal(post(a, "d1", &h1, &v), FMQ_ERR_DUPLICATE);
    assert_int_equal(post(a, "d2", &h2, &v), FMQ_OK);
    assert_int_equal(v, FMQ_AGG_COUNTED);
    fmq_buf_fini(&h1);
    fmq_buf_fini(&h2);
    fmq_agg_destroy(&a);
    fmq_log_set_level(FMQ_LOG_NOTICE);
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

/* ---------------------------------------------------------- strategies */

/* An encoded update carrying the tensor q (borrowed). */
static fmq_err send_q(fmq_agg *a, const char *dev, uint64_t round,
                      uint64_t version, uint64_t n, const fmq_qtensor *q,
                      fmq_agg_verdict *v)
{
    fmq_msg_update u;
    fmq_msg_update_init(&u);
    snprintf(u.fleet, sizeof u.fleet, "f1");
    snprintf(u.device, sizeof u.device, "%s", dev);
    u.round = round;
    u.version = version;
    u.samples = n;
    u.loss = 0.5f;
    u.delta = *q;
    u.delta.owned = NULL;
    fmq_buf b;
    fmq_buf_init(&b);
    assert_int_equal(fmq_codec_encode_update(&u, &b), FMQ_OK);
    char topic[128];
    snprintf(topic, sizeof topic, "fedmq/f1/update/%s", dev);
    fmq_err e = fmq_agg_on_update(a, topic, b.data, b.len, 0, v);
    fmq_buf_fini(&b);
    return e;
}

static void random_q8(fmq_qtensor *q, uint64_t seed, double sd)
{
    fmq_rng r;
    fmq_rng_seed(&r, seed);
    float *x = malloc(P * sizeof *x);
    for (int i = 0; i < P; i++)
        x[i] = (float)(sd * fmq_rng_normal(&r));
    fmq_quant_cfg qc = {FMQ_Q_Q8, 256, false};
    assert_int_equal(fmq_quant_encode(&qc, x, P, NULL, q), FMQ_OK);
    free(x);
}

static void the_fedavg_strategy_is_the_fedavg_of_before_bit_for_bit(void **s)
{
    (void)s;
    fmq_agg_cfg c = base_cfg();
    c.late = FMQ_AGG_LATE_FOLD;
    c.max_staleness = 2;
    c.cohort_size = 3;
    c.uq = (fmq_uq){FMQ_Q_Q8, 256, false, true}; /* what random_q8 sends */
    fmq_agg *a;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    fmq_qtensor q[5];
    for (int k = 0; k < 5; k++)
        random_q8(&q[k], 100 + k, 0.01 * (k + 1));
    fmq_agg_verdict v;
    fmq_agg_report r;
    assert_int_equal(send_q(a, "d1", 1, 1, 17, &q[0], &v), FMQ_OK);
    assert_int_equal(fmq_agg_close(a, NULL, 1, &r), FMQ_OK);
    float *w = malloc(P * 4);
    memcpy(w, fmq_agg_weights(a), P * 4);
    /* round 2: three on time and one from round 1 */
    static const uint64_t n[] = {0, 120, 7, 333, 50};
    assert_int_equal(send_q(a, "d2", 2, 2, n[1], &q[1], &v), FMQ_OK);
    assert_int_equal(send_q(a, "d3", 1, 1, n[4], &q[4], &v), FMQ_OK);
    assert_int_equal(v, FMQ_AGG_FOLDED);
    assert_int_equal(send_q(a, "d4", 2, 2, n[2], &q[2], &v), FMQ_OK);
    assert_int_equal(send_q(a, "d5", 2, 2, n[3], &q[3], &v), FMQ_OK);
    assert_true(fmq_agg_tick(a, 2));
    assert_int_equal(fmq_agg_close(a, NULL, 2, &r), FMQ_OK);
    assert_string_equal(r.strategy, "fedavg");
    /* the arithmetic of before: common/fedavg.h, n / sqrt(1 + tau) */
    fmq_fedavg fa;
    assert_int_equal(fmq_fedavg_init(&fa, P), FMQ_OK);
    assert_int_equal(fmq_fedavg_add(&fa, &q[1], 120.0), FMQ_OK);
    assert_int_equal(fmq_fedavg_add(&fa, &q[4], 50.0 / sqrt(2.0)), FMQ_OK);
    assert_int_equal(fmq_fedavg_add(&fa, &q[2], 7.0), FMQ_OK);
    assert_int_equal(fmq_fedavg_add(&fa, &q[3], 333.0), FMQ_OK);
    assert_int_equal(fmq_fedavg_apply(&fa, w), FMQ_OK);
    assert_memory_equal(fmq_agg_weights(a), w, P * 4);
    fmq_fedavg_fini(&fa);
    for (int k = 0; k < 5; k++)
        fmq_qtensor_fini(&q[k]);
    free(w);
    fmq_agg_destroy(&a);
}

static void fedbuff_makes_a_version_every_k_updates_without_rounds(void **s)
{
    (void)s;
    fmq_log_set_level(FMQ_LOG_ERR - 1);
    fmq_strategy_hparams hp = fmq_strategy_hparams_none();
    hp.buffer_k = 3;
    fmq_agg_cfg c = base_cfg();
    c.strategy = "fedbuff";
    c.hp = &hp;
    c.max_staleness = 2;
    fmq_agg *a;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    fmq_buf g;
    fmq_buf_init(&g);
    assert_int_equal(fmq_agg_encode_global(a, 5000, &g), FMQ_OK);
    fmq_msg_global gm;
    assert_int_equal(fmq_codec_decode_global(g.data, g.len, NULL, &gm, NULL),
                     FMQ_OK);
    assert_true(gm.async);
    assert_int_equal(gm.deadline_ms, 0);
    assert_int_equal(gm.max_staleness, 2);
    assert_string_equal(gm.strategy, "fedbuff");
    fmq_msg_global_fini(&gm);
    fmq_buf_fini(&g);
    fmq_agg_verdict v;
    fmq_agg_report r;
    float *w = malloc(P * 4);
    memcpy(w, fmq_agg_weights(a), P * 4);
    assert_int_equal(send(a, "d1", 1, 1, 10, 0.03f, &v), FMQ_OK);
    assert_int_equal(send(a, "d2", 1, 1, 90, 0.06f, &v), FMQ_OK);
    /* no deadline, no quorum: only K closes a version */
    assert_false(fmq_agg_tick(a, 1000000));
    assert_int_equal(send(a, "d3", 1, 1, 10, 0.09f, &v), FMQ_OK);
    assert_true(fmq_agg_tick(a, 1000001));
    assert_int_equal(fmq_agg_close(a, NULL, 1000001, &r), FMQ_OK);
    assert_int_equal(r.version, 2);
    assert_int_equal(fmq_agg_round(a), 2);
    assert_int_equal(r.cohort, 3);
    for (int i = 0; i < P; i++) /* samples do not weigh */
        assert_float_equal(fmq_agg_weights(a)[i], w[i] + 0.06, 1e-6);
    memcpy(w, fmq_agg_weights(a), P * 4);
    /* version 2: two trained from version 1 (tau = 1), one on time */
    assert_int_equal(send(a, "d4", 1, 1, 10, 0.04f, &v), FMQ_OK);
    assert_int_equal(v, FMQ_AGG_FOLDED);
    assert_int_equal(send(a, "d5", 1, 1, 10, 0.04f, &v), FMQ_OK);
    assert_int_equal(send(a, "d1", 2, 2, 10, 0.01f, &v), FMQ_OK);
    assert_int_equal(v, FMQ_AGG_COUNTED);
    assert_true(fmq_agg_tick(a, 1000002));
    assert_int_equal(fmq_agg_close(a, NULL, 1000002, &r), FMQ_OK);
    assert_int_equal(r.late, 2);
    assert_int_equal(r.participants, 3); /* stale ones too: a version */
    assert_float_equal(r.loss_mean, 0.5, 1e-6);
    double want = (2 * 0.04 / sqrt(2.0) + 0.01) / 3;
    for (int i = 0; i < P; i++)
        assert_float_equal(fmq_agg_weights(a)[i], w[i] + want, 1e-6);
    char line[512];
    fmq_agg_format_report(&r, line, sizeof line);
    assert_non_null(strstr(line, "strategy fedbuff (buffer 3 of K 3, 2 stale)"));
    /* version 3: one from version 1 is 2 behind (taken), then at version
     * 4 one from version 1 is 3 behind max staleness 2: stale */
    assert_int_equal(send(a, "d6", 1, 1, 10, 0.01f, &v), FMQ_OK);
    assert_int_equal(send(a, "d7", 3, 3, 10, 0.01f, &v), FMQ_OK);
    assert_int_equal(send(a, "d8", 3, 3, 10, 0.01f, &v), FMQ_OK);
    assert_true(fmq_agg_tick(a, 1000003));
    assert_int_equal(fmq_agg_close(a, NULL, 1000003, &r), FMQ_OK);
    assert_int_equal(send(a, "d9", 1, 1, 10, 0.01f, &v), FMQ_ERR_STALE);
    assert_int_equal(v, FMQ_AGG_REJECTED);
    free(w);
    fmq_agg_destroy(&a);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

static void the_norm_bound_clips_before_the_strategy(void **state)
{
    (void)state;
    fmq_agg_cfg c = base_cfg();
    c.norm_bound = 1.0;
    c.norm_action = FMQ_NORM_CLIP;
    c.cohort_size = 2;
    fmq_agg *a;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    float *w = malloc(P * 4);
    memcpy(w, fmq_agg_weights(a), P * 4);
    fmq_agg_verdict v;
    /* 0.2 everywhere: norm 0.2·sqrt(7850) = 17.7, clipped to 1 */
    assert_int_equal(send(a, "d1", 1, 1, 10, 0.2f, &v), FMQ_OK);
    assert_int_equal(v, FMQ_AGG_COUNTED);
    assert_int_equal(send(a, "d2", 1, 1, 10, 0.001f, &v), FMQ_OK);
    assert_true(fmq_agg_tick(a, 1));
    fmq_agg_report r;
    assert_int_equal(fmq_agg_close(a, NULL, 1, &r), FMQ_OK);
    assert_int_equal(r.participants, 2);
    assert_int_equal(r.clipped, 1);
    assert_int_equal(r.rejected, 0);
    double clipped = 1.0 / sqrt((double)P);
    for (int i = 0; i < P; i++)
        assert_float_equal(fmq_agg_weights(a)[i],
                           w[i] + (clipped + 0.001) / 2, 1e-6);
    char line[512];
    fmq_agg_format_report(&r, line, sizeof line);
    assert_non_null(strstr(line, "strategy fedavg (1 clipped)"));
    free(w);
    fmq_agg_destroy(&a);
}

static void kept_updates_over_the_rounds_median_are_rejected_at_close(void **s)
{
    (void)s;
    fmq_log_set_level(FMQ_LOG_ERR);
    fmq_agg_cfg c = base_cfg();
    c.strategy = "median";
    c.norm_median = 2;
    c.norm_action = FMQ_NORM_REJECT;
    fmq_agg *a;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    float *w = malloc(P * 4);
    memcpy(w, fmq_agg_weights(a), P * 4);
    fmq_agg_verdict v;
    assert_int_equal(send(a, "d1", 1, 1, 10, 0.01f, &v), FMQ_OK);
    assert_int_equal(send(a, "d2", 1, 1, 10, 0.012f, &v), FMQ_OK);
    assert_int_equal(send(a, "d3", 1, 1, 10, 0.5f, &v), FMQ_OK); /* 40x */
    assert_true(fmq_agg_tick(a, 1));
    fmq_agg_report r;
    assert_int_equal(fmq_agg_close(a, NULL, 1, &r), FMQ_OK);
    assert_int_equal(r.participants, 2);
    assert_int_equal(r.rejected, 1);
    assert_int_equal(reason_count(&r, "norm"), 1);
    for (int i = 0; i < P; i++) /* the median of the two left */
        assert_float_equal(fmq_agg_weights(a)[i], w[i] + 0.011, 1e-6);
    free(w);
    fmq_agg_destroy(&a);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

static void a_strategy_that_cannot_aggregate_keeps_the_model(void **state)
{
    (void)state;
    fmq_log_set_level(FMQ_LOG_ERR);
    fmq_agg_cfg c = base_cfg();
    c.strategy = "krum:1"; /* needs 5 */
    c.cohort_size = 5;
    c.quorum = 5;
    fmq_agg *a;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    float *w = malloc(P * 4);
    memcpy(w, fmq_agg_weights(a), P * 4);
    fmq_agg_verdict v;
    assert_int_equal(send(a, "d1", 1, 1, 10, 0.01f, &v), FMQ_OK);
    assert_int_equal(send(a, "d2", 1, 1, 10, 0.02f, &v), FMQ_OK);
    fmq_agg_report r;
    assert_int_equal(fmq_agg_close(a, NULL, 1, &r), FMQ_OK);
    assert_true(r.kept_model);
    assert_memory_equal(fmq_agg_weights(a), w, P * 4);
    assert_int_equal(fmq_agg_round(a), 2);
    char line[512];
    fmq_agg_format_report(&r, line, sizeof line);
    assert_non_null(strstr(line, "strategy krum:1 (model kept)"));
    /* a quorum below 2f + 3 is refused at start */
    c.quorum = 4;
    fmq_agg *b;
    assert_int_equal(fmq_agg_open(&c, &b), FMQ_ERR_CONFIG);
    free(w);
    fmq_agg_destroy(&a);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

/* Three rounds of strategy spec; with crash_dir, the aggregator is
 * destroyed and reopened from its checkpoint after round 1 closes and in
 * the middle of round 2. out gets the final weights. */
static void three_rounds(const char *spec, const char *crash_dir, float *out)
{
    fmq_strategy_hparams hp = fmq_strategy_hparams_none();
    hp.dp_seed = 42;
    fmq_agg_cfg c = base_cfg();
    c.strategy = spec;
    c.hp = &hp;
    c.quorum = 3; /* multi-krum:0,2 needs 2f + 3 */
    c.state_dir = crash_dir;
    fmq_agg *a;
    fmq_agg_verdict v;
    fmq_agg_report r;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    for (uint64_t round = 1; round <= 3; round++) {
        static const char *devs[] = {"d1", "d2", "d3"};
        for (int k = 0; k < 3; k++) {
            float value = 0.01f * (float)(k + 1) * (round == 2 ? -1 : 1);
            assert_int_equal(send(a, devs[k], round, round, 10 * (k + 1),
                                  value, &v),
                             FMQ_OK);
            if (crash_dir && round == 2 && k == 1) {
                assert_int_equal(fmq_agg_checkpoint(a), FMQ_OK);
                fmq_agg_destroy(&a);
                assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
                assert_true(fmq_agg_resumed(a));
                /* the resend of a counted one is a duplicate */
                assert_int_equal(send(a, "d2", 2, 2, 20, -0.02f, &v),
                                 FMQ_ERR_DUPLICATE);
            }
        }
        assert_true(fmq_agg_tick(a, round));
        assert_int_equal(fmq_agg_close(a, NULL, round, &r), FMQ_OK);
        if (crash_dir && round == 1) {
            fmq_agg_destroy(&a);
            assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
        }
    }
    memcpy(out, fmq_agg_weights(a), P * 4);
    fmq_agg_destroy(&a);
}

static void a_restart_resumes_the_strategy_state(void **state)
{
    (void)state;
    fmq_log_set_level(FMQ_LOG_ERR);
    static const char *specs[] = {"fedadam", "fedyogi", "fedavgm", "median",
                                  "trimmed-mean:0.2", "dp-fedavg",
                                  "multi-krum:0,2"};
    float *ref = malloc(P * 4), *got = malloc(P * 4);
    for (unsigned i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "strat%u", i);
        three_rounds(specs[i], NULL, ref);
        three_rounds(specs[i], tmpdir(name), got);
        if (memcmp(ref, got, P * 4))
            fail_msg("%s: a restart changed the weights", specs[i]);
    }
    /* the checkpoint is fedadam's: another strategy is refused */
    fmq_agg_cfg c = base_cfg();
    c.strategy = "fedadam";
    c.state_dir = tmpdir("other");
    fmq_agg *a;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    fmq_agg_destroy(&a);
    c.strategy = "fedyogi";
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_ERR_DATA);
    assert_null(a);
    free(ref);
    free(got);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

/* A checkpoint written before strategies (FMQAGG02, agg.c's comment has
 * the layout) holds FedAvg's running sum: it resumes as fedavg. */
static void a_checkpoint_from_before_strategies_resumes_as_fedavg(void **s)
{
    (void)s;
    fmq_log_set_level(FMQ_LOG_ERR);
    fmq_agg_cfg c = base_cfg();
    fmq_agg *ref;
    fmq_agg_verdict v;
    fmq_agg_report r;
    assert_int_equal(fmq_agg_open(&c, &ref), FMQ_OK);
    float *w0 = malloc(P * 4), *d = malloc(P * 4);
    memcpy(w0, fmq_agg_weights(ref), P * 4);
    assert_int_equal(send(ref, "d1", 1, 1, 10, 0.01f, &v), FMQ_OK);
    assert_int_equal(send(ref, "d2", 1, 1, 20, 0.02f, &v), FMQ_OK);
    assert_int_equal(fmq_agg_close(ref, NULL, 1, &r), FMQ_OK);
    /* the old file: d1 counted, its sum */
    for (int i = 0; i < P; i++)
        d[i] = 0.01f;
    fmq_qtensor q;
    fmq_quant_cfg f32 = {FMQ_Q_F32, 0, false};
    assert_int_equal(fmq_quant_encode(&f32, d, P, NULL, &q), FMQ_OK);
    fmq_fedavg fa;
    assert_int_equal(fmq_fedavg_init(&fa, P), FMQ_OK);
    assert_int_equal(fmq_fedavg_add(&fa, &q, 10.0), FMQ_OK);
    fmq_wr w;
    fmq_wr_init(&w);
    fmq_wr_bytes(&w, "FMQAGG02", 8);
    fmq_wr_u32(&w, P);
    fmq_wr_str(&w, "f1", FMQ_ID_MAX + 1);
    fmq_wr_str(&w, MODEL, FMQ_ID_MAX + 1);
    fmq_wr_u64(&w, 1); /* round */
    fmq_wr_u64(&w, 1); /* version */
    fmq_wr_u64(&w, 0);
    fmq_wr_u64(&w, 0);
    fmq_wr_f64(&w, fa.weight);
    fmq_wr_u32(&w, fa.count);
    fmq_wr_f64(&w, 0.5);
    fmq_wr_f64(&w, 0.25);
    fmq_wr_u32(&w, 0);
    fmq_wr_u32(&w, 0);
    fmq_wr_u32(&w, 0);
    fmq_wr_u64(&w, 100);
    fmq_wr_u64(&w, 0);
    fmq_wr_u32(&w, 0); /* reasons */
    fmq_wr_u32(&w, 1); /* seen */
    fmq_wr_str(&w, "d1", FMQ_ID_MAX + 1);
    fmq_wr_u64(&w, 1);
    fmq_wr_floats(&w, w0, P);
    fmq_wr_floats(&w, fa.sum, P);
    fmq_wr_crc(&w);
    assert_int_equal(w.e, FMQ_OK);
    c.state_dir = tmpdir("v2");
    assert_int_equal(fmq_mkdir_p(c.state_dir), FMQ_OK);
    char path[600];
    snprintf(path, sizeof path, "%s/aggregator.ckpt", c.state_dir);
    assert_int_equal(fmq_file_write_atomic(path, w.b.data, w.b.len), FMQ_OK);
    /* with another strategy it is refused */
    fmq_agg *a;
    c.strategy = "median";
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_ERR_DATA);
    c.strategy = NULL;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    assert_true(fmq_agg_resumed(a));
    assert_int_equal(send(a, "d1", 1, 1, 10, 0.01f, &v), FMQ_ERR_DUPLICATE);
    assert_int_equal(send(a, "d2", 1, 1, 20, 0.02f, &v), FMQ_OK);
    assert_int_equal(fmq_agg_close(a, NULL, 1, &r), FMQ_OK);
    assert_memory_equal(fmq_agg_weights(a), fmq_agg_weights(ref), P * 4);
    fmq_agg_destroy(&a);
    fmq_agg_destroy(&ref);
    fmq_fedavg_fini(&fa);
    fmq_qtensor_fini(&q);
    fmq_wr_fini(&w);
    free(w0);
    free(d);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

/* ------------------------------------------------------ global deltas */

/* An update of `scheme` (block 256) from dev, round = version = r, of
 * class cls (NULL: none), values x (P,). */
static fmq_err send_x(fmq_agg *a, const char *dev, uint64_t r, uint64_t n,
                      const float *x, fmq_scheme scheme, uint32_t block,
                      const char *cls, fmq_agg_verdict *v)
{
    fmq_quant_cfg qc = {scheme, block, false};
    fmq_qtensor q;
    assert_int_equal(fmq_quant_encode(&qc, x, P, NULL, &q), FMQ_OK);
    fmq_msg_update u;
    fmq_msg_update_init(&u);
    snprintf(u.fleet, sizeof u.fleet, "f1");
    snprintf(u.device, sizeof u.device, "%s", dev);
    if (cls)
        snprintf(u.cls, sizeof u.cls, "%s", cls);
    u.round = u.version = r;
    u.samples = n;
    u.loss = 0.5f;
    u.delta = q;
    fmq_buf b;
    fmq_buf_init(&b);
    assert_int_equal(fmq_codec_encode_update(&u, &b), FMQ_OK);
    char topic[128];
    snprintf(topic, sizeof topic, "fedmq/f1/update/%s", dev);
    fmq_err e = fmq_agg_on_update(a, topic, b.data, b.len, 0, v);
    fmq_buf_fini(&b);
    fmq_qtensor_fini(&q);
    return e;
}

static void wave(float *x, uint32_t seed, double sd)
{
    fmq_rng r;
    fmq_rng_seed(&r, seed);
    for (int i = 0; i < P; i++)
        x[i] = (float)(sd * fmq_rng_normal(&r));
}

/* Round r's three updates (f32, seeds from r) into a, then its close. */
static void round_of_three(fmq_agg *a, uint64_t r, float *x)
{
    fmq_agg_verdict v;
    static const uint64_t n[3] = {100, 300, 50};
    for (int k = 0; k < 3; k++) {
        char dev[16];
        snprintf(dev, sizeof dev, "d%d", k);
        wave(x, (uint32_t)(10 * r + k), 0.01);
        assert_int_equal(send_x(a, dev, r, n[k], x, FMQ_Q_F32, 0, NULL, &v),
                         FMQ_OK);
        assert_int_equal(v, FMQ_AGG_COUNTED);
    }
    fmq_agg_report rep;
    assert_true(fmq_agg_tick(a, r));
    assert_int_equal(fmq_agg_close(a, NULL, r, &rep), FMQ_OK);
    assert_false(rep.no_delta);
}

/* What the strategy makes of round r's updates from the weights w (P,):
 * an aggregator without deltas started from w. */
static void strategy_step(const float *w, uint64_t r, float *out, float *x)
{
    fmq_agg_cfg c = base_cfg();
    c.init = w;
    fmq_agg *ref;
    assert_int_equal(fmq_agg_open(&c, &ref), FMQ_OK);
    /* the reference is at round 1: its updates say round 1 */
    fmq_agg_verdict v;
    static const uint64_t n[3] = {100, 300, 50};
    for (int k = 0; k < 3; k++) {
        char dev[16];
        snprintf(dev, sizeof dev, "d%d", k);
        wave(x, (uint32_t)(10 * r + k), 0.01);
        assert_int_equal(send_x(ref, dev, 1, n[k], x, FMQ_Q_F32, 0, NULL, &v),
                         FMQ_OK);
    }
    fmq_agg_report rep;
    assert_int_equal(fmq_agg_close(ref, NULL, 1, &rep), FMQ_OK);
    memcpy(out, fmq_agg_weights(ref), P * 4);
    fmq_agg_destroy(&ref);
}

/* The published delta of a (plain), decoded; checks bv, mv and gd. */
static void published(fmq_agg *a, uint64_t now, fmq_buf *b, fmq_msg_delta *m)
{
    fmq_buf_init(b);
    assert_int_equal(fmq_agg_encode_delta(a, now, b), FMQ_OK);
    assert_int_equal(fmq_codec_decode_delta(b->data, b->len, NULL, m, NULL),
                     FMQ_OK);
    assert_int_equal(m->g.version, fmq_agg_version(a));
    assert_int_equal(m->base, fmq_agg_version(a) - 1);
    assert_int_equal(m->g.round, fmq_agg_round(a));
    assert_true(m->g.deltas);
    assert_int_equal(m->delta.n, P);
}

static void the_model_moves_by_the_dequantized_delta_and_keeps_the_residual(
    void **state)
{
    (void)state;
    char *dir = tmpdir("gdelta");
    fmq_agg_cfg c = base_cfg();
    c.global_delta = true;
    c.gdelta = (fmq_gdelta_cfg){FMQ_Q_Q4, 64};
    c.state_dir = dir;
    fmq_agg *a;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    float *w0 = malloc(P * 4), *step = malloc(P * 4), *x = malloc(P * 4),
          *v = malloc(P * 4), *dq = malloc(P * 4), *e = calloc(P, 4),
          *want = malloc(P * 4);
    memcpy(w0, fmq_agg_weights(a), P * 4);
    fmq_buf b;
    fmq_buf_init(&b);
    /* no delta before the first close; the global says gd */
    assert_int_equal(fmq_agg_encode_delta(a, 1, &b), FMQ_ERR_NOTFOUND);
    assert_int_equal(fmq_agg_encode_global(a, 1, &b), FMQ_OK);
    fmq_msg_global g;
    assert_int_equal(fmq_codec_decode_global(b.data, b.len, NULL, &g, NULL),
                     FMQ_OK);
    assert_true(g.deltas);
    fmq_msg_global_fini(&g);
    fmq_buf_fini(&b);

    for (uint64_t r = 1; r <= 3; r++) {
        /* v = strategy step + e; w = w0 + dequant(Q4(v)); e = v - dequant */
        strategy_step(w0, r, step, x);
        for (int i = 0; i < P; i++)
            v[i] = (step[i] - w0[i]) + e[i];
        fmq_quant_cfg qc = {FMQ_Q_Q4, 64, false};
        fmq_qtensor q;
        assert_int_equal(fmq_quant_encode(&qc, v, P, NULL, &q), FMQ_OK);
        assert_int_equal(fmq_quant_decode(&q, dq), FMQ_OK);
        for (int i = 0; i < P; i++) {
            want[i] = w0[i] + dq[i];
            e[i] = v[i] - dq[i];
        }
        round_of_three(a, r, x);
        assert_memory_equal(fmq_agg_weights(a), want, P * 4);
        fmq_msg_delta m;
        published(a, 100 + r, &b, &m);
        assert_int_equal(m.delta.scheme, FMQ_Q_Q4);
        assert_int_equal(m.delta.codes_len, q.codes_len);
        assert_memory_equal(m.delta.codes, q.codes, q.codes_len);
        assert_memory_equal(m.delta.scales, q.scales, q.scales_len);
        /* a device holding w0 that adds it has the aggregator's model */
        memcpy(dq, w0, P * 4);
        assert_int_equal(fmq_quant_add(&m.delta, dq, x), FMQ_OK);
        assert_memory_equal(dq, fmq_agg_weights(a), P * 4);
        fmq_msg_delta_fini(&m);
        fmq_qtensor_fini(&q);
        fmq_buf_fini(&b);
        memcpy(w0, want, P * 4);
        if (r == 2) {
            /* a restart: the same delta again, the residual goes on */
            fmq_buf b1, b2;
            fmq_buf_init(&b1);
            fmq_buf_init(&b2);
            assert_int_equal(fmq_agg_encode_delta(a, 7, &b1), FMQ_OK);
            assert_int_equal(fmq_agg_checkpoint(a), FMQ_OK); /* deadline */
            fmq_agg_destroy(&a);
            assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
            assert_true(fmq_agg_resumed(a));
            assert_memory_equal(fmq_agg_weights(a), want, P * 4);
            assert_int_equal(fmq_agg_encode_delta(a, 7, &b2), FMQ_OK);
            assert_int_equal(b1.len, b2.len);
            assert_memory_equal(b1.data, b2.data, b1.len);
            fmq_buf_fini(&b1);
            fmq_buf_fini(&b2);
        }
    }
    fmq_agg_destroy(&a);
    /* deltas turned off across a restart: the checkpoint resumes; the
     * last delta goes out once more without gd (devices that follow
     * deltas learn to read the global again), the global says no gd, and
     * after the next close there is no delta */
    c.global_delta = false;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    assert_memory_equal(fmq_agg_weights(a), want, P * 4);
    fmq_buf_init(&b);
    assert_int_equal(fmq_agg_encode_delta(a, 1, &b), FMQ_OK);
    fmq_msg_delta m;
    assert_int_equal(fmq_codec_decode_delta(b.data, b.len, NULL, &m, NULL),
                     FMQ_OK);
    assert_false(m.g.deltas);
    assert_int_equal(m.g.version, fmq_agg_version(a));
    fmq_msg_delta_fini(&m);
    fmq_buf_reset(&b);
    assert_int_equal(fmq_agg_encode_global(a, 1, &b), FMQ_OK);
    assert_int_equal(fmq_codec_decode_global(b.data, b.len, NULL, &g, NULL),
                     FMQ_OK);
    assert_false(g.deltas);
    fmq_msg_global_fini(&g);
    round_of_three(a, 4, x);
    fmq_buf_reset(&b);
    assert_int_equal(fmq_agg_encode_delta(a, 2, &b), FMQ_ERR_NOTFOUND);
    fmq_buf_fini(&b);
    fmq_agg_destroy(&a);
    free(w0);
    free(step);
    free(x);
    free(v);
    free(dq);
    free(e);
    free(want);
}

static void the_delta_setting_parses_and_auto_follows_the_updates(void **s)
{
    (void)s;
    bool on;
    fmq_gdelta_cfg g;
    assert_int_equal(fmq_gdelta_parse("auto", FMQ_Q_Q8, 256, &on, &g), FMQ_OK);
    assert_true(on && g.scheme == FMQ_Q_Q8 && g.block == 256);
    assert_int_equal(fmq_gdelta_parse("auto", FMQ_Q_Q1, 64, &on, &g), FMQ_OK);
    assert_true(on && g.scheme == FMQ_Q_Q8);
    assert_int_equal(fmq_gdelta_parse("auto", FMQ_Q_F32, 256, &on, &g), FMQ_OK);
    assert_false(on);
    assert_int_equal(fmq_gdelta_parse("off", FMQ_Q_Q8, 256, &on, &g), FMQ_OK);
    assert_false(on);
    assert_int_equal(fmq_gdelta_parse("f16", FMQ_Q_F32, 256, &on, &g), FMQ_OK);
    assert_true(on && g.scheme == FMQ_Q_F16);
    assert_int_equal(fmq_gdelta_parse("q4", FMQ_Q_F32, 32, &on, &g), FMQ_OK);
    assert_true(on && g.scheme == FMQ_Q_Q4 && g.block == 32);
    assert_int_equal(fmq_gdelta_parse("q1", FMQ_Q_Q8, 256, &on, &g),
                     FMQ_ERR_CONFIG);
    assert_int_equal(fmq_gdelta_parse("int8", FMQ_Q_Q8, 256, &on, &g),
                     FMQ_ERR_CONFIG);
    fmq_gdelta *gd;
    fmq_log_set_level(FMQ_LOG_ERR - 1);
    g = (fmq_gdelta_cfg){FMQ_Q_Q8, 0};
    assert_int_equal(fmq_gdelta_new(&g, P, &gd), FMQ_ERR_CONFIG);
    assert_null(gd);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

static void an_update_must_be_what_its_class_was_told(void **state)
{
    (void)state;
    fmq_uq def = {FMQ_Q_Q8, 256, false, true};
    fmq_uq_class *cl;
    uint32_t n;
    char why[160];
    assert_int_equal(fmq_classes_parse("cell:q4,hub:f16,edge:q8/128", &def,
                                       &cl, &n, why, sizeof why), FMQ_OK);
    assert_int_equal(n, 3);
    assert_string_equal(cl[0].cls, "cell");
    assert_true(cl[0].uq.scheme == FMQ_Q_Q4 && cl[0].uq.block == 256);
    assert_true(cl[1].uq.scheme == FMQ_Q_F16 && cl[1].uq.block == 0);
    assert_true(cl[2].uq.scheme == FMQ_Q_Q8 && cl[2].uq.block == 128);
    static const char *bad[] = {
        "cell", "cell:", ":q4", "cell:q9", "cell:q4,cell:q8", "cell:f32/8",
        "cell:q4/0", "cell:q4,", "ce ll:q4", "a:q8,b:q8,c:q8,d:q8,e:q8,f:q8,"
        "g:q8,h:q8,i:q8,j:q8,k:q8,l:q8,m:q8,n:q8,o:q8,p:q8,q:q8"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fmq_uq_class *x = (fmq_uq_class *)1;
        uint32_t k = 9;
        if (fmq_classes_parse(bad[i], &def, &x, &k, why, sizeof why) !=
            FMQ_ERR_CONFIG)
            fail_msg("'%s' was accepted", bad[i]);
        assert_null(x);
        assert_true(why[0] != '\0');
    }
    fmq_agg_cfg c = base_cfg();
    c.uq = def;
    c.uq_classes = cl;
    c.n_uq_classes = n;
    c.cohort_size = 10;
    fmq_agg *a;
    assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
    fmq_free(cl); /* the aggregator keeps a copy */
    fmq_buf b;
    fmq_buf_init(&b);
    assert_int_equal(fmq_agg_encode_global(a, 1, &b), FMQ_OK);
    fmq_msg_global g;
    assert_int_equal(fmq_codec_decode_global(b.data, b.len, NULL, &g, NULL),
                     FMQ_OK);
    assert_int_equal(g.nclasses, 3);
    assert_string_equal(g.classes[1].cls, "hub");
    assert_false(g.deltas);
    fmq_msg_global_fini(&g);
    fmq_buf_fini(&b);
    float *x = malloc(P * 4);
    wave(x, 1, 0.01);
    fmq_agg_verdict v;
    fmq_log_set_level(FMQ_LOG_ERR - 1);
    const struct {
        const char *dev, *cls;
        fmq_scheme s;
        uint32_t block;
        fmq_err want;
    } cases[] = {
        {"a1", NULL, FMQ_Q_Q8, 256, FMQ_OK},
        {"a2", "cell", FMQ_Q_Q4, 256, FMQ_OK},
        {"a3", "hub", FMQ_Q_F16, 0, FMQ_OK},
        {"a4", "edge", FMQ_Q_Q8, 128, FMQ_OK},
        {"a5", "unlisted", FMQ_Q_Q8, 256, FMQ_OK},
        {"b1", "cell", FMQ_Q_Q8, 256, FMQ_ERR_SCHEME},
        {"b2", NULL, FMQ_Q_Q4, 256, FMQ_ERR_SCHEME},
        {"b3", NULL, FMQ_Q_Q8, 128, FMQ_ERR_SCHEME},
        {"b4", "hub", FMQ_Q_F32, 0, FMQ_ERR_SCHEME},
        {"b5", "edge", FMQ_Q_Q8, 256, FMQ_ERR_SCHEME},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fmq_err e = send_x(a, cases[i].dev, 1, 10, x, cases[i].s,
                           cases[i].block, cases[i].cls, &v);
        if (e != cases[i].want)
            fail_msg("%s: %s", cases[i].dev, fmq_errname(e));
    }
    fmq_log_set_level(FMQ_LOG_NOTICE);
    fmq_agg_report rep;
    assert_int_equal(fmq_agg_close(a, NULL, 2, &rep), FMQ_OK);
    assert_int_equal(rep.participants, 5);
    assert_int_equal(rep.rejected, 5);
    assert_int_equal(rep.nreasons, 1);
    assert_string_equal(rep.reasons[0].reason, "scheme");
    assert_int_equal(rep.reasons[0].count, 5);
    free(x);
    fmq_agg_destroy(&a);
}

static void the_global_and_the_metrics_name_the_strategy(void **state)
{
    (void)state;
    fmq_strategy_hparams hp = fmq_strategy_hparams_none();
    hp.dp_clip = 2;
    hp.dp_noise = 0.5;
    hp.dp_seed = 9;
    hp.mu = 0.05;
    static const char *specs[] = {"dp-fedavg", "fedprox", "trimmed-mean:0.1"};
    for (unsigned k = 0; k < 3; k++) {
        fmq_agg_cfg c = base_cfg();
        c.strategy = specs[k];
        c.hp = &hp;
        fmq_agg *a;
        assert_int_equal(fmq_agg_open(&c, &a), FMQ_OK);
        fmq_buf b;
        fmq_buf_init(&b);
        assert_int_equal(fmq_agg_encode_global(a, 0, &b), FMQ_OK);
        fmq_msg_global g;
        assert_int_equal(
            fmq_codec_decode_global(b.data, b.len, NULL, &g, NULL), FMQ_OK);
        char name[32];
        snprintf(name, sizeof name, "%s", specs[k]);
        *strchrnul(name, ':') = 0;
        assert_string_equal(g.strategy, name);
        assert_float_equal(g.train.mu, k == 1 ? 0.05f : 0.0f, 0);
        fmq_msg_global_fini(&g);
        fmq_buf_reset(&b);
        fmq_agg_verdict v;
        assert_int_equal(send(a, "d1", 1, 1, 10, 0.01f, &v), FMQ_OK);
        fmq_agg_report r;
        assert_int_equal(fmq_agg_close(a, NULL, 1, &r), FMQ_OK);
        assert_int_equal(fmq_agg_encode_metrics(a, &r, 1, &b), FMQ_OK);
        fmq_msg_metrics m;
        assert_int_equal(
            fmq_codec_decode_metrics(b.data, b.len, NULL, &m, NULL), FMQ_OK);
        assert_string_equal(m.strategy, name);
        if (k == 0) {
            assert_float_equal(m.dp_clip, 2, 0);
            assert_float_equal(m.dp_noise, 0.5, 0);
        } else {
            assert_true(isnan(m.dp_clip) && isnan(m.dp_noise));
        }
        char line[512];
        fmq_agg_format_report(&r, line, sizeof line);
        assert_non_null(strstr(line, specs[k]));
        if (k == 0)
            assert_non_null(strstr(line, "dp clip 2 noise 0.5"));
        fmq_msg_metrics_fini(&m);
        fmq_buf_fini(&b);
        fmq_agg_destroy(&a);
    }
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
        cmocka_unit_test(the_global_is_signed_with_the_aggregator_key),
        cmocka_unit_test(sealed_updates_open_only_for_their_topic_round_and_key),
        cmocka_unit_test(no_seal_accepts_plain_and_still_opens_sealed),
        cmocka_unit_test(a_restart_with_sealing_counts_no_replay_twice),
        cmocka_unit_test(
            the_fedavg_strategy_is_the_fedavg_of_before_bit_for_bit),
        cmocka_unit_test(
            fedbuff_makes_a_version_every_k_updates_without_rounds),
        cmocka_unit_test(the_norm_bound_clips_before_the_strategy),
        cmocka_unit_test(
            kept_updates_over_the_rounds_median_are_rejected_at_close),
        cmocka_unit_test(a_strategy_that_cannot_aggregate_keeps_the_model),
        cmocka_unit_test(a_restart_resumes_the_strategy_state),
        cmocka_unit_test(
            a_checkpoint_from_before_strategies_resumes_as_fedavg),
        cmocka_unit_test(the_global_and_the_metrics_name_the_strategy),
        cmocka_unit_test(
            the_model_moves_by_the_dequantized_delta_and_keeps_the_residual),
        cmocka_unit_test(the_delta_setting_parses_and_auto_follows_the_updates),
        cmocka_unit_test(an_update_must_be_what_its_class_was_told),
    };
    return cmocka_run_group_tests(tests, keys_setup, keys_teardown);
}
