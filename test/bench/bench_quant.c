/*
 * bench_quant.c — quantizer throughput and sizes, every scheme, P = 101,770
 * (mlp:128) and P = 1,000,000, block 256 (and 64 for q8).
 *
 * encode     = quantize + pack, GB/s of float32 input (4P bytes / s)
 * decode     = unpack + dequantize into a float array, GB/s of float32 out
 * accumulate = sum += w * dequant(codes), the aggregator's fused hot loop,
 *              GB/s of the float32 sum (4P bytes / s)
 * each beside memcpy of the same 4P bytes measured in the same run (ratio =
 * memcpy time / operation time, so 1.0 means as fast as copying the
 * floats), and the encoded size beside the theoretical P*bits/8 + 4 per
 * scale. One core; best of 5 windows of at least 0.2 s each.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

static volatile float sink;

typedef enum { OP_ENC, OP_DEC, OP_ACC, OP_CPY } op_kind;

typedef struct ctx {
    op_kind op;
    fmq_quant_cfg cfg;
    const float *x;
    float *out;
    uint8_t *copy;
    uint32_t n;
    fmq_qtensor q;
    fmq_rng rng;
} ctx;

static void run_once(ctx *c)
{
    switch (c->op) {
    case OP_ENC: {
        fmq_qtensor t;
        if (fmq_quant_encode(&c->cfg, c->x, c->n, &c->rng, &t)) {
            fprintf(stderr, "bench_quant: encode failed\n");
            exit(1);
        }
        sink = (float)t.codes[t.codes_len / 2];
        fmq_qtensor_fini(&t);
        break;
    }
    case OP_DEC:
        if (fmq_quant_decode(&c->q, c->out))
            exit(1);
        sink = c->out[c->n / 2];
        break;
    case OP_ACC:
        if (fmq_quant_accumulate(&c->q, 0.125f, c->out))
            exit(1);
        sink = c->out[c->n / 3];
        break;
    case OP_CPY:
        memcpy(c->copy, c->x, (size_t)c->n * 4);
        sink = (float)c->copy[c->n];
        break;
    }
}

/* Seconds per call: best of 5 windows of >= 0.2 s. */
static double time_op(ctx *c)
{
    double best = 1e30;
    run_once(c);
    for (int w = 0; w < 5; w++) {
        double t0 = fmq_mono_seconds(), t;
        long k = 0;
        do {
            run_once(c);
            k++;
            t = fmq_mono_seconds() - t0;
        } while (t < 0.2);
        if (t / k < best)
            best = t / k;
    }
    return best;
}

int main(void)
{
    static const uint32_t sizes[] = {101770, 1000000};
    static const struct {
        fmq_scheme s;
        uint32_t block;
        bool stochastic;
    } cases[] = {
        {FMQ_Q_F32, 256, false}, {FMQ_Q_F16, 256, false},
        {FMQ_Q_Q8, 256, false},  {FMQ_Q_Q8, 64, false},
        {FMQ_Q_Q8, 256, true},   {FMQ_Q_Q4, 256, false},
        {FMQ_Q_Q4, 256, true},   {FMQ_Q_Q1, 256, false},
        {FMQ_Q_Q1, 256, true},
    };
    int unmet = 0;
    printf("bench_quant: GB/s of float32 (4P bytes), ratio to memcpy of the "
           "same bytes in the same run; one core\n");
    for (unsigned si = 0; si < 2; si++) {
        uint32_t n = sizes[si];
        float *x = malloc((size_t)n * 4), *out = malloc((size_t)n * 4);
        uint8_t *copy = malloc((size_t)n * 4 + 1);
        if (!x || !out || !copy)
            return 1;
        fmq_rng r;
        fmq_rng_seed(&r, 1);
        for (uint32_t i = 0; i < n; i++) /* like a weight delta */
            x[i] = (float)(0.01 * fmq_rng_normal(&r));
        memset(out, 0, (size_t)n * 4);
        ctx c = {.op = OP_CPY, .x = x, .out = out, .copy = copy, .n = n};
        double tcpy = time_op(&c);
        double gb = (double)n * 4 / 1e9;
        printf("\nP = %u: memcpy %.2f GB/s\n", n, gb / tcpy);
        printf("%-10s %6s | %14s | %14s | %14s | %9s %9s %6s %7s\n", "scheme",
               "block", "encode GB/s", "decode GB/s", "accum GB/s", "bytes",
               "theory", "ratio", "vs f32");
        for (unsigned k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            fmq_quant_cfg cfg = {cases[k].s, cases[k].block,
                                 cases[k].stochastic};
            ctx e = c;
            e.cfg = cfg;
            fmq_rng_seed(&e.rng, 2);
            e.op = OP_ENC;
            double tenc = time_op(&e);
            if (fmq_quant_encode(&cfg, x, n, &e.rng, &e.q))
                return 1;
            e.op = OP_DEC;
            double tdec = time_op(&e);
            e.op = OP_ACC;
            double tacc = time_op(&e);
            size_t bytes = e.q.codes_len + e.q.scales_len;
            size_t theory = ((uint64_t)n * fmq_scheme_bits(cfg.scheme) + 7) / 8 +
                            4 * fmq_quant_nblocks(cfg.scheme, n, cfg.block);
            char name[16];
            snprintf(name, sizeof name, "%s%s", fmq_scheme_name(cfg.scheme),
                     cfg.stochastic ? "-sr" : "");
            printf("%-10s %6u | %6.2f (%4.2fx) | %6.2f (%4.2fx) | %6.2f "
                   "(%4.2fx) | %9zu %9zu %6.4f %6.1fx\n",
                   name, fmq_scheme_has_scales(cfg.scheme) ? cfg.block : 0,
                   gb / tenc, tcpy / tenc, gb / tdec, tcpy / tdec, gb / tacc,
                   tcpy / tacc, bytes, theory, (double)bytes / theory,
                   (double)n * 4 / bytes);
            if (cfg.scheme == FMQ_Q_Q8 && !cfg.stochastic && cfg.block == 256) {
                bool met = tcpy / tacc >= 0.5;
                unmet += !met;
                printf("  target q8 decode-and-accumulate >= 0.5x memcpy: %s "
                       "(%.2fx)\n",
                       met ? "met" : "NOT met", tcpy / tacc);
            }
            bool size_ok = (double)bytes <= 1.01 * theory + 64;
            unmet += !size_ok;
            if (!size_ok)
                printf("  target size <= 1.01x theoretical + 64 B: NOT met\n");
            fmq_qtensor_fini(&e.q);
        }
        printf("  target size <= 1.01x theoretical + 64 B: %s for every "
               "scheme above\n",
               unmet ? "see lines above" : "met");
        free(x);
        free(out);
        free(copy);
    }
    return 0;
}
