/*
 * fuzz_global.c — libFuzzer target for fmq_codec_decode_global, the
 * decoder every device runs on the retained global model (after checking
 * its signature, but the aggregator's key is not the only thing between a
 * device and hostile bytes). Whatever the bytes, the decoder must not
 * crash, read out of bounds, leak or allocate much (make fuzz sets
 * -malloc_limit_mb), must refuse with one of its reasons, and must agree
 * with fmq_codec_peek; whatever it accepts, the encoder must write back,
 * and that must decode to the same message and re-encode to the same
 * bytes. Any disagreement aborts.
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

static void same_global(const fmq_msg_global *a, const fmq_msg_global *b)
{
    same_instructions(a, b);
    same_tensor(&a->weights, &b->weights);
}

static void one(const uint8_t *data, size_t size)
{
    fmq_msg_global m, m2;
    fmq_codec_detail d;
    fmq_err e = fmq_codec_decode_global(data, size, NULL, &m, &d);
    check_verdict(FMQ_MSG_GLOBAL, data, size, e, &d);
    if (e) {
        /* the decoder has reset *out; _fini must still be harmless */
        CHECK(m.classes == NULL && m.cohort.ids == NULL);
        fmq_msg_global_fini(&m);
        return;
    }
    fmq_buf b1, b2;
    fmq_buf_init(&b1);
    fmq_buf_init(&b2);
    CHECK(fmq_codec_encode_global(&m, &b1) == FMQ_OK);
    CHECK(fmq_codec_decode_global(b1.data, b1.len, NULL, &m2, &d) == FMQ_OK);
    same_global(&m, &m2);
    CHECK(fmq_codec_encode_global(&m2, &b2) == FMQ_OK);
    same_bytes(&b1, &b2);
    fmq_msg_global_fini(&m);
    fmq_msg_global_fini(&m2);
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

static void seed_global(fmq_scheme ws, fmq_scheme us, int cohort, bool full)
{
    float x[24];
    for (int i = 0; i < 24; i++)
        x[i] = (float)(i - 12) / 8.0f;
    fmq_quant_cfg cfg = {.scheme = ws};
    fmq_msg_global m;
    fmq_msg_global_init(&m);
    strcpy(m.fleet, "fleet-A");
    m.round = 3;
    m.version = 4;
    m.deadline_ms = 1700000000000ull;
    strcpy(m.model, "mlp:16,8");
    CHECK(fmq_quant_encode(&cfg, x, 24, NULL, &m.weights) == FMQ_OK);
    m.train.epochs = 1;
    m.train.batch = 32;
    m.train.lr = 0.05f;
    m.uq = uq_of(us, 64, full, !full);
    if (cohort == 1) {
        m.cohort.kind = FMQ_COHORT_FRACTION;
        m.cohort.fraction = 0.5;
        m.cohort.seed = 99;
    } else if (cohort == 2) {
        m.cohort.kind = FMQ_COHORT_IDS;
        m.cohort.nids = 2;
        m.cohort.ids = fmq_calloc(2, sizeof *m.cohort.ids);
        CHECK(m.cohort.ids != NULL);
        strcpy(m.cohort.ids[0], "dev-001");
        strcpy(m.cohort.ids[1], "dev-002");
    }
    if (full) {
        m.ts_ms = 1699999999000ull;
        m.train.momentum = 0.9f;
        m.train.weight_decay = 1e-4f;
        m.train.mu = 0.01f;
        m.nclasses = 2;
        m.classes = fmq_calloc(2, sizeof *m.classes);
        CHECK(m.classes != NULL);
        strcpy(m.classes[0].cls, "phone");
        m.classes[0].uq = uq_of(FMQ_Q_Q4, 32, true, true);
        strcpy(m.classes[1].cls, "mcu");
        m.classes[1].uq = uq_of(FMQ_Q_F16, 0, false, false);
        strcpy(m.strategy, "fedavg");
        m.async = true;
        m.max_staleness = 2;
    }
    fmq_buf_init(&seeds[nseeds]);
    seed_add(fmq_codec_encode_global(&m, &seeds[nseeds]));
    fmq_msg_global_fini(&m);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    seed_global(FMQ_Q_F32, FMQ_Q_F32, 0, false);
    seed_global(FMQ_Q_F16, FMQ_Q_Q8, 1, true);
    seed_global(FMQ_Q_F32, FMQ_Q_Q1, 2, true);
    seed_global(FMQ_Q_F16, FMQ_Q_Q4, 2, false);
    return 0;
}
