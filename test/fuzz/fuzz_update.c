/*
 * fuzz_update.c — libFuzzer target for fmq_codec_decode_update, the
 * decoder the aggregator runs on every device's (opened) update. Whatever
 * the bytes, the decoder must not crash, read out of bounds or allocate
 * much (make fuzz sets -malloc_limit_mb), must refuse with one of its
 * reasons, and must agree with fmq_codec_peek; whatever it accepts, the
 * encoder must write back, and that must decode to the same message and
 * re-encode to the same bytes. Any disagreement aborts.
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

static void same_update(const fmq_msg_update *a, const fmq_msg_update *b)
{
    CHECK(strcmp(a->fleet, b->fleet) == 0);
    CHECK(strcmp(a->device, b->device) == 0);
    CHECK(a->round == b->round && a->version == b->version);
    CHECK(a->samples == b->samples);
    CHECK(same_f(a->loss, b->loss));
    same_tensor(&a->delta, &b->delta);
    CHECK(a->ts_ms == b->ts_ms);
    CHECK(same_f(a->train_s, b->train_s));
    CHECK(strcmp(a->cls, b->cls) == 0);
}

static void one(const uint8_t *data, size_t size)
{
    fmq_msg_update m, m2;
    fmq_codec_detail d;
    fmq_err e = fmq_codec_decode_update(data, size, NULL, &m, &d);
    check_verdict(FMQ_MSG_UPDATE, data, size, e, &d);
    if (e)
        return;
    fmq_buf b1, b2;
    fmq_buf_init(&b1);
    fmq_buf_init(&b2);
    CHECK(fmq_codec_encode_update(&m, &b1) == FMQ_OK);
    CHECK(fmq_codec_decode_update(b1.data, b1.len, NULL, &m2, &d) == FMQ_OK);
    same_update(&m, &m2);
    CHECK(fmq_codec_encode_update(&m2, &b2) == FMQ_OK);
    same_bytes(&b1, &b2);
    fmq_buf_fini(&b1);
    fmq_buf_fini(&b2);
}

static void seed_update(fmq_scheme s, uint32_t n, uint32_t block, bool full)
{
    float x[64];
    for (uint32_t i = 0; i < n; i++)
        x[i] = (float)((int)(i * 37 % 23) - 11) / 16.0f;
    fmq_quant_cfg cfg = {.scheme = s, .block = block};
    fmq_msg_update m;
    fmq_msg_update_init(&m);
    strcpy(m.fleet, "fleet-A");
    strcpy(m.device, "dev-001");
    m.round = 3;
    m.version = 4;
    m.samples = 600;
    m.loss = 0.5f;
    CHECK(fmq_quant_encode(&cfg, x, n, NULL, &m.delta) == FMQ_OK);
    if (full) {
        m.ts_ms = 1700000000000ull;
        m.train_s = 1.5f;
        strcpy(m.cls, "phone");
    }
    fmq_buf_init(&seeds[nseeds]);
    seed_add(fmq_codec_encode_update(&m, &seeds[nseeds]));
    fmq_qtensor_fini(&m.delta);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    seed_update(FMQ_Q_F32, 5, 0, false);
    seed_update(FMQ_Q_F16, 9, 0, true);
    seed_update(FMQ_Q_Q8, 40, 16, true);
    seed_update(FMQ_Q_Q4, 33, 8, true);
    seed_update(FMQ_Q_Q1, 64, 24, false);
    return 0;
}
