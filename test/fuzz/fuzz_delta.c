/*
 * fuzz_delta.c — libFuzzer target for fmq_codec_decode_delta, the decoder
 * a device following model/delta runs on every new version (after the
 * signature check, as for the global). Whatever the bytes, the decoder
 * must not crash, read out of bounds, leak or allocate much, must refuse
 * with one of its reasons and agree with fmq_codec_peek; whatever it
 * accepts (1 <= bv < mv included) the encoder must write back, and that
 * must decode to the same message and re-encode to the same bytes. Any
 * disagreement aborts.
 *
 *   make fuzz FUZZ_TIME=30        (all targets; see the Makefile)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "codec.h"
#include "quant.h"

#include "fuzz_harness.h"

/* ------------------------------------------------------------ target */

#include "fuzz_global_cmp.h"

static void same_delta(const fmq_msg_delta *a, const fmq_msg_delta *b)
{
    const fmq_msg_global *x = &a->g, *y = &b->g;
    CHECK(a->base == b->base && a->base >= 1 && a->base < x->version);
    same_tensor(&a->delta, &b->delta);
    CHECK(x->weights.n == 0 && y->weights.n == 0);
    same_instructions(x, y);
}

static void one(const uint8_t *data, size_t size)
{
    fmq_msg_delta m, m2;
    fmq_codec_detail d;
    fmq_err e = fmq_codec_decode_delta(data, size, NULL, &m, &d);
    check_verdict(FMQ_MSG_DELTA, data, size, e, &d);
    if (e) {
        /* the decoder has reset *out; _fini must still be harmless */
        CHECK(m.g.classes == NULL && m.g.cohort.ids == NULL);
        fmq_msg_delta_fini(&m);
        return;
    }
    fmq_buf b1, b2;
    fmq_buf_init(&b1);
    fmq_buf_init(&b2);
    CHECK(fmq_codec_encode_delta(&m, &b1) == FMQ_OK);
    CHECK(fmq_codec_decode_delta(b1.data, b1.len, NULL, &m2, &d) == FMQ_OK);
    same_delta(&m, &m2);
    CHECK(fmq_codec_encode_delta(&m2, &b2) == FMQ_OK);
    same_bytes(&b1, &b2);
    fmq_msg_delta_fini(&m);
    fmq_msg_delta_fini(&m2);
    fmq_buf_fini(&b1);
    fmq_buf_fini(&b2);
}

static fmq_uq uq_of(fmq_scheme s, uint32_t block, bool sr, bool ef)
{
    fmq_uq u = {.scheme = s,
                .block = fmq_scheme_has_scales(s) ? block : 0,
                .stochastic = sr,
                .error_feedback = ef};
    return u;
}

static void seed_delta(fmq_scheme ds, uint32_t block, int cohort, bool full)
{
    float x[40];
    for (int i = 0; i < 40; i++)
        x[i] = (float)(i - 20) / 512.0f;
    fmq_quant_cfg cfg = {.scheme = ds, .block = block};
    fmq_msg_delta m;
    fmq_msg_delta_init(&m);
    strcpy(m.g.fleet, "fleet-A");
    m.g.round = 3;
    m.g.version = 4;
    m.base = 3;
    m.g.deadline_ms = 1700000000000ull;
    strcpy(m.g.model, "mlp:16,8");
    CHECK(fmq_quant_encode(&cfg, x, 40, NULL, &m.delta) == FMQ_OK);
    m.g.train.epochs = 1;
    m.g.train.batch = 32;
    m.g.train.lr = 0.05f;
    m.g.uq = uq_of(FMQ_Q_Q8, 64, full, !full);
    if (cohort == 1) {
        m.g.cohort.kind = FMQ_COHORT_FRACTION;
        m.g.cohort.fraction = 0.5;
        m.g.cohort.seed = 99;
    } else if (cohort == 2) {
        m.g.cohort.kind = FMQ_COHORT_IDS;
        m.g.cohort.nids = 2;
        m.g.cohort.ids = fmq_calloc(2, sizeof *m.g.cohort.ids);
        CHECK(m.g.cohort.ids != NULL);
        strcpy(m.g.cohort.ids[0], "dev-001");
        strcpy(m.g.cohort.ids[1], "dev-002");
    }
    if (full) {
        m.g.ts_ms = 1699999999000ull;
        m.g.train.momentum = 0.9f;
        m.g.nclasses = 2;
        m.g.classes = fmq_calloc(2, sizeof *m.g.classes);
        CHECK(m.g.classes != NULL);
        strcpy(m.g.classes[0].cls, "cell");
        m.g.classes[0].uq = uq_of(FMQ_Q_Q4, 32, true, true);
        strcpy(m.g.classes[1].cls, "hub");
        m.g.classes[1].uq = uq_of(FMQ_Q_Q8, 64, false, true);
        strcpy(m.g.strategy, "fedavg");
        m.g.max_staleness = 2;
        m.g.deltas = true;
    }
    fmq_buf_init(&seeds[nseeds]);
    seed_add(fmq_codec_encode_delta(&m, &seeds[nseeds]));
    fmq_msg_delta_fini(&m);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    seed_delta(FMQ_Q_Q8, 16, 0, false);
    seed_delta(FMQ_Q_Q4, 7, 1, true);
    seed_delta(FMQ_Q_F16, 0, 2, true);
    seed_delta(FMQ_Q_Q1, 9, 0, true);
    return 0;
}
