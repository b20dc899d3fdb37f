/*
 * bench_quant.c — quantizer throughput and encoded sizes for every scheme
 * (proto/SPEC.md §5), at P = 101,770 (the mlp:128 model) and P = 1,000,000,
 * block 256 (the default) and, for q8, block 64 as well.
 *
 *   encode     fmq_quant_encode: check, allocate, quantize and pack;
 *              GB/s of float32 input (4P bytes / s)
 *   decode     fmq_quant_decode into a float array; GB/s of float32 output
 *   accumulate fmq_quant_accumulate, sum += w * dequant(q), the aggregator's
 *              fused hot loop; GB/s of the float32 sum (4P bytes / s)
 *
 * Each is printed beside memcpy of the same 4P bytes measured in the same
 * run, as a ratio (memcpy time / operation time: 1.00x is as fast as
 * copying the floats). memcpy is measured before and after each P's table
 * and the faster of the two is the baseline, so a clock that drifts during
 * the run makes the ratios lower, never higher. Every time is the best of
 * 5 windows of at least 0.2 s each (CLOCK_MONOTONIC), on one core.
 *
 * Sizes are the qtensor's codes + scales beside the theoretical
 * P*bits/8 + 4*ceil(P/B) (no scales for f32 and f16), and beside f32.
 *
 * This is a report, not a test: targets are printed as "met" or "NOT met"
 * and the exit status is 0 either way; it is 2 only on an internal error
 * (an encode, decode or accumulate failure, or out of memory).
 *
 * Data: P Gaussian values with sigma 0.01 (the size of a weight delta) from
 * fmq_rng seed 1, so every run quantizes the same floats; stochastic
 * rounding reseeds its generator before every encode, so the payload (and
 * its FNV-1a, printed per row) is the same from run to run.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quant.h"

#define WINDOWS 5
#define WINDOW_SECONDS 0.2
#define BATCH_SECONDS 0.01 /* reps between clock reads, sized once */
#define DELTA_SIGMA 0.01
#define DATA_SEED 1u
#define SR_SEED 2u
#define ACC_WEIGHT 0.125f
#define TARGET_Q8_RATIO 0.5
#define TARGET_SIZE_FACTOR 1.01
#define TARGET_SIZE_SLACK 64.0

/* Every output is folded in here so the compiler keeps the work. */
static volatile double sink;

typedef enum { OP_CPY, OP_ENC, OP_DEC, OP_ACC } op_kind;

typedef struct bench {
    op_kind op;
    uint32_t n;
    const float *x;   // x is (n,): the input
    float *out;       // out is (n,): decode output or accumulated sum
    float *copy;      // copy is (n,): memcpy destination
    fmq_quant_cfg cfg;
    fmq_rng rng;
    fmq_qtensor q; /* the last encode; decode and accumulate read it */
} bench;

static double now(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        perror("bench_quant: clock_gettime");
        exit(2);
    }
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, const bench *b, fmq_err e)
{
    fprintf(stderr, "bench_quant: %s %s B=%u P=%u failed: %s\n", what,
            fmq_scheme_name(b->cfg.scheme), b->cfg.block, b->n,
            fmq_strerror(e));
    exit(2);
}

/* Tell the compiler that memory behind p is read, so a store into it
 * (memcpy's) cannot be dropped. */
static inline void clobber(void *p)
{
#if defined(__GNUC__)
    __asm__ __volatile__("" : : "r"(p) : "memory");
#else
    sink = sink + ((volatile unsigned char *)p)[0];
#endif
}

static void run_once(bench *b)
{
    fmq_err e;
    switch (b->op) {
    case OP_CPY:
        memcpy(b->copy, b->x, (size_t)b->n * sizeof(float));
        clobber(b->copy);
        break;
    case OP_ENC:
        fmq_qtensor_fini(&b->q);
        fmq_rng_seed(&b->rng, SR_SEED);
        if ((e = fmq_quant_encode(&b->cfg, b->x, b->n, &b->rng, &b->q)))
            die("encode", b, e);
        break;
    case OP_DEC:
        if ((e = fmq_quant_decode(&b->q, b->out)))
            die("decode", b, e);
        break;
    case OP_ACC:
        if ((e = fmq_quant_accumulate(&b->q, ACC_WEIGHT, b->out)))
            die("accumulate", b, e);
        break;
    }
}

static double sum_floats(const float *v, uint32_t n)
{
    double s = 0;
    for (uint32_t i = 0; i < n; i++)
        s += v[i];
    return s;
}

/* Checksum what the operation produced (outside the timed windows). */
static void fold_output(const bench *b)
{
    switch (b->op) {
    case OP_CPY:
        sink = sink + sum_floats(b->copy, b->n);
        break;
    case OP_ENC:
        sink = sink + b->q.codes[b->q.codes_len / 2];
        break;
    case OP_DEC:
    case OP_ACC:
        sink = sink + sum_floats(b->out, b->n);
        break;
    }
}

/* Seconds per call of b->op: best of WINDOWS windows of at least
 * WINDOW_SECONDS, reading the clock every `batch` calls. */
static double time_op(bench *b)
{
    /* Size the batch (this also warms caches and the allocator). */
    long batch = 1;
    for (;;) {
        double t0 = now();
        for (long k = 0; k < batch; k++)
            run_once(b);
        if (now() - t0 >= BATCH_SECONDS)
            break;
        batch *= 2;
    }
    double best = INFINITY;
    for (int w = 0; w < WINDOWS; w++) {
        long calls = 0;
        double t0 = now(), t;
        do {
            for (long k = 0; k < batch; k++)
                run_once(b);
            calls += batch;
            t = now() - t0;
        } while (t < WINDOW_SECONDS);
        fold_output(b);
        if (t / (double)calls < best)
            best = t / (double)calls;
    }
    return best;
}

/* FNV-1a, 32 bits, over codes then scales: a fingerprint of the payload. */
static uint32_t payload_fnv(const fmq_qtensor *q)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < q->codes_len; i++)
        h = (h ^ q->codes[i]) * 16777619u;
    for (size_t i = 0; i < q->scales_len; i++)
        h = (h ^ q->scales[i]) * 16777619u;
    return h;
}

/* P*bits/8 + 4*ceil(P/B), counted here rather than asked of the library. */
static double theoretical_size(fmq_scheme s, uint32_t n, uint32_t block)
{
    double t = (double)n * fmq_scheme_bits(s) / 8.0;
    if (s != FMQ_Q_F32 && s != FMQ_Q_F16)
        t += 4.0 * (double)(((uint64_t)n + block - 1) / block);
    return t;
}

static void *alloc_floats(uint32_t n)
{
    size_t bytes = ((size_t)n * sizeof(float) + 63) / 64 * 64;
    void *p = aligned_alloc(64, bytes);
    if (!p) {
        fprintf(stderr, "bench_quant: out of memory (%zu bytes)\n", bytes);
        exit(2);
    }
    return p;
}

static const struct {
    fmq_scheme scheme;
    uint32_t block;
    bool stochastic;
} cases[] = {
    {FMQ_Q_F32, FMQ_QUANT_BLOCK_DEFAULT, false},
    {FMQ_Q_F16, FMQ_QUANT_BLOCK_DEFAULT, false},
    {FMQ_Q_Q8, FMQ_QUANT_BLOCK_DEFAULT, false},
    {FMQ_Q_Q8, 64, false},
    {FMQ_Q_Q8, FMQ_QUANT_BLOCK_DEFAULT, true},
    {FMQ_Q_Q4, FMQ_QUANT_BLOCK_DEFAULT, false},
    {FMQ_Q_Q4, FMQ_QUANT_BLOCK_DEFAULT, true},
    {FMQ_Q_Q1, FMQ_QUANT_BLOCK_DEFAULT, false},
    {FMQ_Q_Q1, FMQ_QUANT_BLOCK_DEFAULT, true},
};
#define NCASES (sizeof cases / sizeof cases[0])

typedef struct row {
    char name[16];
    char block[8]; /* "-" when the scheme has no scales */
    double tenc, tdec, tacc; /* seconds per call */
    size_t bytes;            /* codes + scales */
    double theory;
    uint32_t fnv;
} row;

/* Time encode, decode and accumulate of one case and record its size. */
static void measure_case(size_t k, bench b, row *r)
{
    b.cfg = (fmq_quant_cfg){cases[k].scheme, cases[k].block,
                            cases[k].stochastic};
    size_t fbytes = (size_t)b.n * sizeof(float);
    b.op = OP_ENC;
    r->tenc = time_op(&b); /* leaves the last payload in b.q */
    memset(b.out, 0, fbytes);
    b.op = OP_DEC;
    r->tdec = time_op(&b);
    memset(b.out, 0, fbytes);
    b.op = OP_ACC;
    r->tacc = time_op(&b);

    snprintf(r->name, sizeof r->name, "%s%s", fmq_scheme_name(b.cfg.scheme),
             b.cfg.stochastic ? "-sr" : "");
    if (fmq_scheme_has_scales(b.cfg.scheme))
        snprintf(r->block, sizeof r->block, "%u", b.cfg.block);
    else
        snprintf(r->block, sizeof r->block, "-");
    r->bytes = b.q.codes_len + b.q.scales_len;
    r->theory = theoretical_size(b.cfg.scheme, b.n, b.cfg.block);
    r->fnv = payload_fnv(&b.q);
    fmq_qtensor_fini(&b.q);
}

/* Print "target WHAT: met (DETAIL)" or "... NOT met (DETAIL)" and count it. */
static void target(unsigned *n_met, unsigned *n_all, bool met,
                   const char *what, const char *fmt, ...) FMQ_PRINTF(5, 6);
static void target(unsigned *n_met, unsigned *n_all, bool met,
                   const char *what, const char *fmt, ...)
{
    va_list ap;
    printf("target %s: %s (", what, met ? "met" : "NOT met");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf(")\n");
    *n_met += met;
    *n_all += 1;
}

static void report(uint32_t n, const row *rows, double tcpy0, double tcpy1,
                   unsigned *n_met, unsigned *n_all)
{
    double gb = (double)n * sizeof(float) / 1e9;
    double tcpy = tcpy0 < tcpy1 ? tcpy0 : tcpy1;
    printf("\nP = %u: memcpy %.2f GB/s (%.2f before the table, %.2f after)\n",
           n, gb / tcpy, gb / tcpy0, gb / tcpy1);
    printf("%-6s %4s | %-15s | %-15s | %-15s | %9s %11s %7s %7s | %s\n",
           "scheme", "B", "encode GB/s", "decode GB/s", "accum GB/s",
           "bytes", "theoretical", "ratio", "vs f32", "fnv32");
    for (size_t k = 0; k < NCASES; k++) {
        const row *r = &rows[k];
        printf("%-6s %4s | %6.2f (%5.3fx) | %6.2f (%5.3fx) | %6.2f (%5.3fx) "
               "| %9zu %11.2f %7.5f %6.2fx | %08x\n",
               r->name, r->block, gb / r->tenc, tcpy / r->tenc, gb / r->tdec,
               tcpy / r->tdec, gb / r->tacc, tcpy / r->tacc, r->bytes,
               r->theory, (double)r->bytes / r->theory,
               (double)n * sizeof(float) / (double)r->bytes,
               (unsigned)r->fnv);
    }
    for (size_t k = 0; k < NCASES; k++) {
        if (cases[k].scheme != FMQ_Q_Q8 || cases[k].stochastic ||
            cases[k].block != FMQ_QUANT_BLOCK_DEFAULT)
            continue;
        double dec = tcpy / rows[k].tdec, acc = tcpy / rows[k].tacc;
        target(n_met, n_all, dec >= TARGET_Q8_RATIO,
               "q8 decode >= 0.5x memcpy", "%.2fx", dec);
        target(n_met, n_all, acc >= TARGET_Q8_RATIO,
               "q8 accumulate >= 0.5x memcpy", "%.2fx", acc);
    }
    for (size_t k = 0; k < NCASES; k++) {
        const row *r = &rows[k];
        double limit = TARGET_SIZE_FACTOR * r->theory + TARGET_SIZE_SLACK;
        target(n_met, n_all, (double)r->bytes <= limit,
               "size <= 1.01x theoretical + 64 B", "%s B=%s, %.5fx", r->name,
               r->block, (double)r->bytes / r->theory);
    }
}

int main(void)
{
    static const uint32_t sizes[] = {101770, 1000000};
    const uint32_t nmax = 1000000;
    float *x = alloc_floats(nmax);
    float *out = alloc_floats(nmax);
    float *copy = alloc_floats(nmax);
    fmq_rng data_rng;
    fmq_rng_seed(&data_rng, DATA_SEED);
    for (uint32_t i = 0; i < nmax; i++) /* like a weight delta */
        x[i] = (float)(DELTA_SIGMA * fmq_rng_normal(&data_rng));

    printf("bench_quant: GB/s of float32 (4P bytes / s), (ratio) to memcpy "
           "of the same 4P bytes in the same run; one core; best of %d "
           "windows >= %.1f s\n",
           WINDOWS, WINDOW_SECONDS);
#if defined(__OPTIMIZE__) && !defined(__SANITIZE_ADDRESS__)
    printf("bench_quant: this binary is optimised (compiler %s)\n",
           __VERSION__);
#else
    printf("bench_quant: WARNING: not an optimised build (or sanitized); "
           "the numbers do not mean much\n");
#endif

    unsigned n_met = 0, n_all = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        uint32_t n = sizes[si];
        bench cpy = {.op = OP_CPY, .n = n, .x = x, .out = out, .copy = copy};
        row rows[NCASES];
        double tcpy0 = time_op(&cpy);
        for (size_t k = 0; k < NCASES; k++)
            measure_case(k, cpy, &rows[k]);
        double tcpy1 = time_op(&cpy);
        report(n, rows, tcpy0, tcpy1, &n_met, &n_all);
    }
    printf("\nbench_quant: %u of %u targets met (output checksum %.6g)\n",
           n_met, n_all, (double)sink);
    free(x);
    free(out);
    free(copy);
    return 0;
}
