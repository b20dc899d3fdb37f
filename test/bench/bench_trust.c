/*
 * bench_trust.c — what fedmq's cryptography costs per message: sign and
 * verify of a global, seal and open of an update, measured against memcpy
 * of the same bytes in the same run, for
 *   - the q8 update of the mlp:128 Fashion-MNIST model (P = 101,770
 *     values, block 256: ~104 KB) and of a P = 1,000,000 model (~1 MB),
 *     what devices seal and the aggregator opens;
 *   - float32 weights of the same two sizes (407 KB, 4 MB), what a signed
 *     global carries (the rows name the op that applies: sign, verify);
 * every op is timed on every message, the rows that apply are marked.
 *
 * Each figure is the best of 5 trials of at least 0.05 s (so about 2.5 s in
 * all). The fixed part (the P-256 operations: one scalar multiplication
 * for sign, two for verify, two for seal and one for open) dominates; the
 * per-byte part is SHA-256 (sign, verify) or AES-256-GCM (seal, open). A
 * 1-byte message shows the fixed part alone.
 */
#include "codec.h"
#include "quant.h"
#include "trust.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P_SMALL 101770u
#define P_LARGE 1000000u
#define BLOCK 256u
#define TRIALS 5
#define MIN_TRIAL_S 0.05

static void need(fmq_err e, const char *what)
{
    if (e) {
        fprintf(stderr, "bench_trust: %s: %s\n", what, fmq_strerror(e));
        exit(1);
    }
}

enum { OP_MEMCPY, OP_SIGN, OP_VERIFY, OP_SEAL, OP_OPEN };

struct ctx {
    fmq_trust_key *key;
    fmq_trust_rng *rng;
    const uint8_t *msg;
    size_t len;
    fmq_buf signed_env, sealed_env, out;
    uint8_t *copy;
};

static void run(struct ctx *c, int op)
{
    const fmq_trust_key *ks[] = {c->key};
    const uint8_t *b;
    size_t bl;
    fmq_buf_reset(&c->out);
    switch (op) {
    case OP_MEMCPY:
        memcpy(c->copy, c->msg, c->len);
        __asm__ volatile("" : : "r"(c->copy) : "memory");
        break;
    case OP_SIGN: need(fmq_trust_sign(c->key, c->rng, c->msg, c->len, &c->out), "sign"); break;
    case OP_VERIFY:
        need(fmq_trust_verify(ks, 1, c->signed_env.data, c->signed_env.len,
                              NULL, &b, &bl, NULL), "verify");
        break;
    case OP_SEAL:
        need(fmq_trust_seal(c->key, c->rng, "fleet", "dev-1", 1, c->msg, c->len,
                            &c->out), "seal");
        break;
    default:
        need(fmq_trust_open(c->key, c->rng, "fleet", "dev-1",
                            c->sealed_env.data, c->sealed_env.len, NULL,
                            &c->out, NULL, NULL), "open");
    }
}

/* Best seconds per call of op over TRIALS trials. */
static double best(struct ctx *c, int op)
{
    double bestt = 1e30;
    for (int t = 0; t < TRIALS; t++) {
        long n = 0;
        double t0 = fmq_mono_seconds(), dt;
        do {
            run(c, op);
            n++;
            dt = fmq_mono_seconds() - t0;
        } while (dt < MIN_TRIAL_S);
        if (dt / (double)n < bestt)
            bestt = dt / (double)n;
    }
    return bestt;
}

static void bench(const char *label, const uint8_t *msg, size_t len,
                  fmq_trust_key *key, fmq_trust_rng *rng, double budget[4])
{
    struct ctx c = {.key = key, .rng = rng, .msg = msg, .len = len};
    fmq_buf_init(&c.signed_env);
    fmq_buf_init(&c.sealed_env);
    fmq_buf_init(&c.out);
    c.copy = malloc(len);
    if (!c.copy)
        need(FMQ_ERR_NOMEM, "copy");
    need(fmq_trust_sign(key, rng, msg, len, &c.signed_env), "sign");
    need(fmq_trust_seal(key, rng, "fleet", "dev-1", 1, msg, len, &c.sealed_env),
         "seal");
    double cpy = best(&c, OP_MEMCPY);
    static const char *names[] = {"sign", "verify", "seal", "open"};
    for (int op = OP_SIGN; op <= OP_OPEN; op++) {
        double s = best(&c, op);
        budget[op - OP_SIGN] = s;
        printf("%-8s %-7s %9zu %9.3f %10.0f %12.1f\n", label, names[op - 1],
               len, s * 1e3, s / cpy, (double)len / s / 1e6);
    }
    fmq_buf_fini(&c.signed_env);
    fmq_buf_fini(&c.sealed_env);
    fmq_buf_fini(&c.out);
    free(c.copy);
}

/* A q8 update message of P values, as a device sends it, into msg. */
static void make_update(uint32_t P, fmq_buf *msg)
{
    float *x = malloc((size_t)P * sizeof *x);
    if (!x)
        need(FMQ_ERR_NOMEM, "delta");
    fmq_rng r;
    fmq_rng_seed(&r, P);
    for (uint32_t i = 0; i < P; i++)
        x[i] = (float)(fmq_rng_normal(&r) * 0.01);
    fmq_msg_update u;
    fmq_msg_update_init(&u);
    snprintf(u.fleet, sizeof u.fleet, "fleet");
    snprintf(u.device, sizeof u.device, "dev-1");
    u.round = u.version = u.samples = 1;
    u.loss = 0.5f;
    fmq_quant_cfg qc = {FMQ_Q_Q8, BLOCK, false};
    need(fmq_quant_encode(&qc, x, P, NULL, &u.delta), "quantize");
    fmq_buf_init(msg);
    need(fmq_codec_encode_update(&u, msg), "encode");
    fmq_qtensor_fini(&u.delta);
    free(x);
}

/* float32 weights of P values (the bulk of a global model message). */
static uint8_t *make_weights(uint32_t P, size_t *len)
{
    *len = (size_t)P * 4;
    uint8_t *w = malloc(*len);
    if (!w)
        need(FMQ_ERR_NOMEM, "weights");
    fmq_rng r;
    fmq_rng_seed(&r, P + 1);
    for (size_t i = 0; i < *len; i++)
        w[i] = (uint8_t)fmq_rng_u64(&r);
    return w;
}

int main(void)
{
    fmq_trust_key *key = NULL;
    fmq_trust_rng *rng = NULL;
    need(fmq_trust_rng_new(&rng), "rng");
    need(fmq_trust_key_generate(rng, &key), "key");

    printf("bench_trust: P-256 / SHA-256 / AES-256-GCM on mbedTLS; best of %d "
           "trials of >= %.2f s\n", TRIALS, MIN_TRIAL_S);
    printf("%-8s %-7s %9s %9s %10s %12s\n", "message", "op", "bytes", "ms",
           "x memcpy", "MB/s");
    double big[4], tiny[4], t[4];
    fmq_buf msg;
    make_update(P_SMALL, &msg);
    size_t small_len = msg.len;
    bench("q8 P", msg.data, msg.len, key, rng, big);
    fmq_buf_fini(&msg);
    bench("1 byte", (const uint8_t *)"x", 1, key, rng, tiny);
    make_update(P_LARGE, &msg);
    bench("q8 1M", msg.data, msg.len, key, rng, t);
    fmq_buf_fini(&msg);
    size_t wl;
    uint8_t *w = make_weights(P_SMALL, &wl);
    bench("f32 P", w, wl, key, rng, t);
    free(w);
    w = make_weights(P_LARGE, &wl);
    bench("f32 1M", w, wl, key, rng, t);
    free(w);
    printf("(P = %u, 1M = %u values. Devices seal and the aggregator opens "
           "the q8 rows; the aggregator signs and devices verify the f32 "
           "rows. x memcpy = operation time / memcpy time of the same bytes; "
           "the 1-byte rows are the fixed cost: per-byte cost of the "
           "%zu-byte update sign %.2f ms, verify %.2f, seal %.2f, open "
           "%.2f)\n", P_SMALL, P_LARGE,
           small_len, (big[0] - tiny[0]) * 1e3, (big[1] - tiny[1]) * 1e3,
           (big[2] - tiny[2]) * 1e3, (big[3] - tiny[3]) * 1e3);
    fmq_trust_key_destroy(&key);
    fmq_trust_rng_destroy(&rng);
    return 0;
}
