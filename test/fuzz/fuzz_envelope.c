/*
 * fuzz_envelope.c — libFuzzer target for the two envelopes and the small
 * aggregator status: fmq_codec_decode_signed (what a device reads first
 * from the retained global), fmq_codec_decode_sealed (what the aggregator
 * reads first from every update) and fmq_codec_decode_agg. Each input goes
 * to all three. Whatever the bytes, a decoder must not crash, read out of
 * bounds or allocate much (make fuzz sets -malloc_limit_mb), must refuse
 * with one of its reasons, and must agree with fmq_codec_peek; whatever
 * it accepts, the encoder must write back, and that must decode to the
 * same message and re-encode to the same bytes. A signed body is then fed
 * to fmq_codec_peek, as a device would before choosing the inner decoder.
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

static void one_signed(const uint8_t *data, size_t size)
{
    fmq_msg_signed m, m2;
    fmq_codec_detail d;
    fmq_err e = fmq_codec_decode_signed(data, size, NULL, &m, &d);
    check_verdict(FMQ_MSG_SIGNED, data, size, e, &d);
    if (e)
        return;
    /* zero-copy: the body lies inside the input */
    CHECK(m.body_len >= 1 && m.body >= data && m.body + m.body_len <= data + size);
    fmq_msg_type t;
    (void)fmq_codec_peek(m.body, m.body_len, NULL, &t, NULL);
    fmq_buf b1, b2;
    fmq_buf_init(&b1);
    fmq_buf_init(&b2);
    CHECK(fmq_codec_encode_signed(&m, &b1) == FMQ_OK);
    CHECK(fmq_codec_decode_signed(b1.data, b1.len, NULL, &m2, &d) == FMQ_OK);
    CHECK(strcmp(m.kid, m2.kid) == 0);
    CHECK(m.body_len == m2.body_len &&
          memcmp(m.body, m2.body, m.body_len) == 0);
    CHECK(memcmp(m.sig, m2.sig, FMQ_SIG_LEN) == 0);
    CHECK(fmq_codec_encode_signed(&m2, &b2) == FMQ_OK);
    same_bytes(&b1, &b2);
    fmq_buf_fini(&b1);
    fmq_buf_fini(&b2);
}

static void one_sealed(const uint8_t *data, size_t size)
{
    fmq_msg_sealed m, m2;
    fmq_codec_detail d;
    fmq_err e = fmq_codec_decode_sealed(data, size, NULL, &m, &d);
    check_verdict(FMQ_MSG_SEALED, data, size, e, &d);
    if (e)
        return;
    CHECK(m.ct_len >= FMQ_TAG_LEN && m.ct >= data && m.ct + m.ct_len <= data + size);
    CHECK(m.epk[0] == 0x04);
    fmq_buf b1, b2;
    fmq_buf_init(&b1);
    fmq_buf_init(&b2);
    CHECK(fmq_codec_encode_sealed(&m, &b1) == FMQ_OK);
    CHECK(fmq_codec_decode_sealed(b1.data, b1.len, NULL, &m2, &d) == FMQ_OK);
    CHECK(strcmp(m.kid, m2.kid) == 0 && m.round == m2.round);
    CHECK(memcmp(m.epk, m2.epk, FMQ_EPK_LEN) == 0);
    CHECK(memcmp(m.iv, m2.iv, FMQ_IV_LEN) == 0);
    CHECK(m.ct_len == m2.ct_len && memcmp(m.ct, m2.ct, m.ct_len) == 0);
    CHECK(fmq_codec_encode_sealed(&m2, &b2) == FMQ_OK);
    same_bytes(&b1, &b2);
    fmq_buf_fini(&b1);
    fmq_buf_fini(&b2);
}

static void one_agg(const uint8_t *data, size_t size)
{
    fmq_msg_agg m, m2;
    fmq_codec_detail d;
    fmq_err e = fmq_codec_decode_agg(data, size, NULL, &m, &d);
    check_verdict(FMQ_MSG_AGG, data, size, e, &d);
    if (e)
        return;
    fmq_buf b1, b2;
    fmq_buf_init(&b1);
    fmq_buf_init(&b2);
    CHECK(fmq_codec_encode_agg(&m, &b1) == FMQ_OK);
    CHECK(fmq_codec_decode_agg(b1.data, b1.len, NULL, &m2, &d) == FMQ_OK);
    CHECK(strcmp(m.fleet, m2.fleet) == 0 && m.online == m2.online);
    CHECK(m.round == m2.round && m.version == m2.version);
    CHECK(m.ts_ms == m2.ts_ms);
    CHECK(fmq_codec_encode_agg(&m2, &b2) == FMQ_OK);
    same_bytes(&b1, &b2);
    fmq_buf_fini(&b1);
    fmq_buf_fini(&b2);
}

static void one(const uint8_t *data, size_t size)
{
    one_signed(data, size);
    one_sealed(data, size);
    one_agg(data, size);
}

static uint8_t seed_body[48];
static uint8_t seed_ct[40];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* the body of the signed seed is itself a message (an agg) */
    fmq_msg_agg a;
    fmq_msg_agg_init(&a);
    strcpy(a.fleet, "fleet-A");
    a.online = true;
    a.round = 3;
    a.version = 4;
    a.ts_ms = 1700000000000ull;
    fmq_buf_init(&seeds[nseeds]);
    seed_add(fmq_codec_encode_agg(&a, &seeds[nseeds]));
    CHECK(seeds[0].len <= sizeof seed_body);
    memcpy(seed_body, seeds[0].data, seeds[0].len);

    fmq_msg_signed s;
    memset(&s, 0, sizeof s);
    strcpy(s.kid, "agg-key-1");
    s.body = seed_body;
    s.body_len = seeds[0].len;
    for (int i = 0; i < FMQ_SIG_LEN; i++)
        s.sig[i] = (uint8_t)(i * 5 + 3);
    fmq_buf_init(&seeds[nseeds]);
    seed_add(fmq_codec_encode_signed(&s, &seeds[nseeds]));

    fmq_msg_sealed e;
    memset(&e, 0, sizeof e);
    strcpy(e.kid, "agg-seal-1");
    e.round = 3;
    e.epk[0] = 0x04;
    for (int i = 1; i < FMQ_EPK_LEN; i++)
        e.epk[i] = (uint8_t)i;
    for (int i = 0; i < FMQ_IV_LEN; i++)
        e.iv[i] = (uint8_t)(0xf0 + i);
    for (size_t i = 0; i < sizeof seed_ct; i++)
        seed_ct[i] = (uint8_t)(i * 11);
    e.ct = seed_ct;
    e.ct_len = sizeof seed_ct;
    fmq_buf_init(&seeds[nseeds]);
    seed_add(fmq_codec_encode_sealed(&e, &seeds[nseeds]));

    a.online = false;
    a.round = a.version = a.ts_ms = FMQ_ABSENT;
    fmq_buf_init(&seeds[nseeds]);
    seed_add(fmq_codec_encode_agg(&a, &seeds[nseeds]));
    return 0;
}
