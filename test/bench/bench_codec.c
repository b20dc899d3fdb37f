/*
 * bench_codec.c — how fast fedmq encodes and decodes an update message,
 * measured against memcpy of the same bytes in the same run.
 *
 * The message is an update whose delta has P = 101,770 values (the
 * parameter count of the mlp:128 Fashion-MNIST model, 784*128+128 +
 * 128*10+10), once per scheme, block size 256. Four operations:
 *   encode    fmq_codec_encode_update of an already quantized delta
 *   decode    fmq_codec_decode_update: the bounded prescan, msgpack-c's
 *             unpack, key checks, field extraction and fmq_quant_check
 *   q+enc     fmq_quant_encode + encode (what a device does per round)
 *   dec+dq    decode + fmq_quant_decode into P floats (what the aggregator
 *             would do without its fused accumulate)
 * encode and decode are reported in MB/s of message bytes beside memcpy of
 * the message's bytes; q+enc and dec+dq in MB/s of the float32 parameters
 * (4P bytes) beside memcpy of 4P bytes. Each figure is the best of 5
 * trials of at least 0.1 s, so it says what the code can do on an idle core;
 * the ratio ("x memcpy") is what to compare between machines.
 */
#include "codec.h"
#include "quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P 101770u
#define BLOCK 256u
#define TRIALS 5
#define MIN_TRIAL_S 0.1

static void die_on(fmq_err e, const char *what)
{
    if (e) {
        fprintf(stderr, "bench_codec: %s: %s\n", what, fmq_strerror(e));
        exit(1);
    }
}

/* Keeps the compiler from dropping or merging work whose result is unused. */
static void clobber(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

typedef struct ctx {
    fmq_scheme scheme;
    const float *x;      /* (P,) the delta */
    float *y;            /* (P,) dequantized */
    fmq_msg_update msg;  /* with the quantized delta */
    fmq_buf out;         /* encoded message */
    const void *src;     /* memcpy source and length */
    void *dst;
    size_t n;
    fmq_rng rng;
} ctx;

typedef void (*op_fn)(ctx *c);

static void op_memcpy(ctx *c)
{
    memcpy(c->dst, c->src, c->n);
    clobber(c->dst);
}

static void op_encode(ctx *c)
{
    fmq_buf_reset(&c->out);
    die_on(fmq_codec_encode_update(&c->msg, &c->out), "encode");
    clobber(c->out.data);
}

static void op_decode(ctx *c)
{
    fmq_msg_update m;
    die_on(fmq_codec_decode_update(c->out.data, c->out.len, NULL, &m, NULL),
           "decode");
    clobber(&m);
}

static void op_quant_encode(ctx *c)
{
    fmq_quant_cfg cfg = {.scheme = c->scheme, .block = BLOCK};
    fmq_msg_update m = c->msg;
    die_on(fmq_quant_encode(&cfg, c->x, P, &c->rng, &m.delta), "quantize");
    fmq_buf_reset(&c->out);
    die_on(fmq_codec_encode_update(&m, &c->out), "encode");
    fmq_qtensor_fini(&m.delta);
    clobber(c->out.data);
}

static void op_decode_dequant(ctx *c)
{
    fmq_msg_update m;
    die_on(fmq_codec_decode_update(c->out.data, c->out.len, NULL, &m, NULL),
           "decode");
    die_on(fmq_quant_decode(&m.delta, c->y), "dequantize");
    clobber(c->y);
}

/* Seconds per call: best of TRIALS trials of at least MIN_TRIAL_S each. */
static double time_op(op_fn fn, ctx *c)
{
    double best = 1e30;
    fn(c); /* warm caches and allocator */
    for (int t = 0; t < TRIALS; t++) {
        unsigned long reps = 0;
        double t0 = fmq_mono_seconds(), el;
        do {
            for (int i = 0; i < 16; i++)
                fn(c);
            reps += 16;
            el = fmq_mono_seconds() - t0;
        } while (el < MIN_TRIAL_S);
        if (el / (double)reps < best)
            best = el / (double)reps;
    }
    return best;
}

static double mbps(size_t bytes, double s)
{
    return (double)bytes / s / 1e6;
}

int main(void)
{
    static const fmq_scheme schemes[] = {FMQ_Q_F32, FMQ_Q_F16, FMQ_Q_Q8,
                                         FMQ_Q_Q4, FMQ_Q_Q1};
    float *x = fmq_alloc_array(P, sizeof *x);
    float *y = fmq_alloc_array(P, sizeof *y);
    void *dst = fmq_malloc((size_t)P * 4 + 4096);
    if (!x || !y || !dst) {
        fprintf(stderr, "bench_codec: out of memory\n");
        return 1;
    }
    fmq_rng r;
    fmq_rng_seed(&r, 1);
    for (uint32_t i = 0; i < P; i++) /* deltas of a few 1e-3 */
        x[i] = (float)(fmq_rng_normal(&r) * 0.003);

    printf("bench_codec: update message, P = %u, block %u; best of %d "
           "trials of >= %.1f s\n", P, BLOCK, TRIALS, MIN_TRIAL_S);
    printf("%-6s %8s | %9s %9s %9s %8s %8s | %9s %9s %9s %8s %8s\n",
           "scheme", "bytes", "encode", "decode", "memcpy", "enc/cpy",
           "dec/cpy", "q+enc", "dec+dq", "memcpy4P", "qe/cpy", "dd/cpy");
    printf("%-6s %8s | %9s %9s %9s %8s %8s | %9s %9s %9s %8s %8s\n", "", "",
           "MB/s", "MB/s", "MB/s", "", "", "MB/s", "MB/s", "MB/s", "", "");

    for (size_t k = 0; k < sizeof schemes / sizeof schemes[0]; k++) {
        ctx c;
        memset(&c, 0, sizeof c);
        c.scheme = schemes[k];
        c.x = x;
        c.y = y;
        c.dst = dst;
        fmq_rng_seed(&c.rng, 7);
        fmq_quant_cfg cfg = {.scheme = c.scheme, .block = BLOCK};
        fmq_msg_update_init(&c.msg);
        strcpy(c.msg.fleet, "fleet-a");
        strcpy(c.msg.device, "dev-007");
        c.msg.round = c.msg.version = 4;
        c.msg.samples = 600;
        c.msg.loss = 0.6875f;
        die_on(fmq_quant_encode(&cfg, x, P, NULL, &c.msg.delta), "quantize");
        fmq_buf_init(&c.out);
        op_encode(&c);
        size_t msg_bytes = c.out.len;

        /* sanity: what decodes is what was sent */
        fmq_msg_update m;
        die_on(fmq_codec_decode_update(c.out.data, c.out.len, NULL, &m, NULL),
               "decode");
        if (m.delta.n != P || m.delta.codes_len != c.msg.delta.codes_len ||
            memcmp(m.delta.codes, c.msg.delta.codes, m.delta.codes_len)) {
            fprintf(stderr, "bench_codec: %s: decoded tensor differs\n",
                    fmq_scheme_name(c.scheme));
            return 1;
        }

        c.src = c.out.data;
        c.n = msg_bytes;
        double t_cpy = time_op(op_memcpy, &c);
        double t_enc = time_op(op_encode, &c);
        double t_dec = time_op(op_decode, &c);
        c.src = x;
        c.n = (size_t)P * 4;
        double t_cpy4 = time_op(op_memcpy, &c);
        double t_qe = time_op(op_quant_encode, &c);
        op_encode(&c); /* the message again, for decode */
        double t_dd = time_op(op_decode_dequant, &c);

        size_t pb = (size_t)P * 4;
        printf("%-6s %8zu | %9.0f %9.0f %9.0f %8.3f %8.3f | %9.0f %9.0f "
               "%9.0f %8.3f %8.3f\n",
               fmq_scheme_name(c.scheme), msg_bytes, mbps(msg_bytes, t_enc),
               mbps(msg_bytes, t_dec), mbps(msg_bytes, t_cpy), t_cpy / t_enc,
               t_cpy / t_dec, mbps(pb, t_qe), mbps(pb, t_dd),
               mbps(pb, t_cpy4), t_cpy4 / t_qe, t_cpy4 / t_dd);
        fmq_qtensor_fini(&c.msg.delta);
        fmq_buf_fini(&c.out);
    }
    printf("(x/cpy = memcpy time / operation time: 1.0 would be as fast as "
           "copying the same bytes)\n");
    fmq_free(x);
    fmq_free(y);
    fmq_free(dst);
    return 0;
}
