/*
 * fuzz_metrics.c — libFuzzer target for fmq_codec_decode_metrics, which
 * the dashboard and operators' tools run on the aggregator's retained
 * per-round metrics (the variable lists, "rej" and "fg", are the
 * allocating part). Whatever the bytes, the decoder must not crash, read
 * out of bounds, leak or allocate much (make fuzz sets -malloc_limit_mb),
 * must refuse with one of its reasons, and must agree with
 * fmq_codec_peek; whatever it accepts, the encoder must write back, and
 * that must decode to the same message and re-encode to the same bytes.
 * Any disagreement aborts.
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

static void same_metrics(const fmq_msg_metrics *a, const fmq_msg_metrics *b)
{
    CHECK(strcmp(a->fleet, b->fleet) == 0);
    CHECK(a->round == b->round && a->version == b->version);
    CHECK(a->cohort == b->cohort && a->participants == b->participants);
    CHECK(a->late == b->late);
    CHECK(a->nrejected == b->nrejected);
    for (uint32_t i = 0; i < a->nrejected; i++) {
        CHECK(strcmp(a->rejected[i].reason, b->rejected[i].reason) == 0);
        CHECK(a->rejected[i].count == b->rejected[i].count);
    }
    CHECK(same_f(a->loss_mean, b->loss_mean));
    CHECK(same_f(a->loss_std, b->loss_std));
    CHECK(same_f(a->test_loss, b->test_loss));
    CHECK(same_f(a->test_acc, b->test_acc));
    CHECK(a->bytes_in == b->bytes_in && a->bytes_out == b->bytes_out);
    CHECK(same_f(a->seconds, b->seconds));
    CHECK(strcmp(a->strategy, b->strategy) == 0);
    CHECK(a->nflags == b->nflags);
    for (uint32_t i = 0; i < a->nflags; i++) {
        CHECK(strcmp(a->flags[i].device, b->flags[i].device) == 0);
        CHECK(strcmp(a->flags[i].why, b->flags[i].why) == 0);
    }
    CHECK(a->ts_ms == b->ts_ms);
}

static void one(const uint8_t *data, size_t size)
{
    fmq_msg_metrics m, m2;
    fmq_codec_detail d;
    fmq_err e = fmq_codec_decode_metrics(data, size, NULL, &m, &d);
    check_verdict(FMQ_MSG_METRICS, data, size, e, &d);
    if (e) {
        CHECK(m.rejected == NULL && m.flags == NULL);
        fmq_msg_metrics_fini(&m);
        return;
    }
    fmq_buf b1, b2;
    fmq_buf_init(&b1);
    fmq_buf_init(&b2);
    CHECK(fmq_codec_encode_metrics(&m, &b1) == FMQ_OK);
    CHECK(fmq_codec_decode_metrics(b1.data, b1.len, NULL, &m2, &d) == FMQ_OK);
    same_metrics(&m, &m2);
    CHECK(fmq_codec_encode_metrics(&m2, &b2) == FMQ_OK);
    same_bytes(&b1, &b2);
    fmq_msg_metrics_fini(&m);
    fmq_msg_metrics_fini(&m2);
    fmq_buf_fini(&b1);
    fmq_buf_fini(&b2);
}

static void seed_metrics(bool full)
{
    fmq_msg_metrics m;
    fmq_msg_metrics_init(&m);
    strcpy(m.fleet, "fleet-A");
    m.round = 3;
    m.version = 5;
    m.cohort = 10;
    m.participants = 8;
    m.late = 1;
    m.bytes_in = 8000;
    m.bytes_out = 400000;
    m.seconds = 2.5;
    if (full) {
        m.nrejected = 2;
        m.rejected = fmq_calloc(2, sizeof *m.rejected);
        CHECK(m.rejected != NULL);
        strcpy(m.rejected[0].reason, "stale");
        m.rejected[0].count = 2;
        strcpy(m.rejected[1].reason, "norm");
        m.rejected[1].count = 1;
        m.loss_mean = 0.5;
        m.loss_std = 0.1;
        m.test_loss = 0.6;
        m.test_acc = 0.85;
        strcpy(m.strategy, "fedavg");
        m.nflags = 2;
        m.flags = fmq_calloc(2, sizeof *m.flags);
        CHECK(m.flags != NULL);
        strcpy(m.flags[0].device, "dev-003");
        strcpy(m.flags[0].why, "stuck");
        strcpy(m.flags[1].device, "dev-004");
        strcpy(m.flags[1].why, "rejected");
        m.ts_ms = 1700000000000ull;
    }
    fmq_buf_init(&seeds[nseeds]);
    seed_add(fmq_codec_encode_metrics(&m, &seeds[nseeds]));
    fmq_msg_metrics_fini(&m);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    seed_metrics(true);
    seed_metrics(false);
    return 0;
}
