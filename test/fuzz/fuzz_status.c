/*
 * fuzz_status.c — libFuzzer target for fmq_codec_decode_status, which the
 * aggregator and the dashboard run on every device's retained status (and
 * last will). Whatever the bytes, the decoder must not crash, read out of
 * bounds or allocate much (make fuzz sets -malloc_limit_mb), must refuse
 * with one of its reasons, and must agree with fmq_codec_peek; whatever it
 * accepts, the encoder must write back, and that must decode to the same
 * message and re-encode to the same bytes. Any disagreement aborts.
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

static void same_status(const fmq_msg_status *a, const fmq_msg_status *b)
{
    CHECK(strcmp(a->fleet, b->fleet) == 0);
    CHECK(strcmp(a->device, b->device) == 0);
    CHECK(a->online == b->online);
    CHECK(a->version == b->version && a->last_round == b->last_round);
    CHECK(a->samples == b->samples && a->rss_bytes == b->rss_bytes);
    CHECK(same_f(a->train_s, b->train_s) && same_f(a->cpu_s, b->cpu_s));
    CHECK(same_f(a->norm, b->norm) && same_f(a->battery_pct, b->battery_pct));
    CHECK(same_f(a->temp_c, b->temp_c));
    CHECK(a->ts_ms == b->ts_ms);
}

static void one(const uint8_t *data, size_t size)
{
    fmq_msg_status m, m2;
    fmq_codec_detail d;
    fmq_err e = fmq_codec_decode_status(data, size, NULL, &m, &d);
    check_verdict(FMQ_MSG_STATUS, data, size, e, &d);
    if (e)
        return;
    fmq_buf b1, b2;
    fmq_buf_init(&b1);
    fmq_buf_init(&b2);
    CHECK(fmq_codec_encode_status(&m, &b1) == FMQ_OK);
    CHECK(fmq_codec_decode_status(b1.data, b1.len, NULL, &m2, &d) == FMQ_OK);
    same_status(&m, &m2);
    CHECK(fmq_codec_encode_status(&m2, &b2) == FMQ_OK);
    same_bytes(&b1, &b2);
    fmq_buf_fini(&b1);
    fmq_buf_fini(&b2);
}

static void seed_status(bool full)
{
    fmq_msg_status m;
    fmq_msg_status_init(&m);
    strcpy(m.fleet, "fleet-A");
    strcpy(m.device, "dev-001");
    m.online = full;
    if (full) {
        m.version = 4;
        m.last_round = 3;
        m.samples = 600;
        m.train_s = 1.5f;
        m.rss_bytes = 40000000;
        m.cpu_s = 12.25f;
        m.norm = 0.75f;
        m.battery_pct = 80;
        m.temp_c = 41.5f;
        m.ts_ms = 1700000000000ull;
    }
    fmq_buf_init(&seeds[nseeds]);
    seed_add(fmq_codec_encode_status(&m, &seeds[nseeds]));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    seed_status(true);
    seed_status(false);
    return 0;
}
