/*
 * dp-fedavg — differentially private FedAvg (McMahan et al., ICLR 2018,
 * "Learning Differentially Private Recurrent Language Models", the
 * fixed-denominator estimator): every update is clipped to L2 norm S
 * (dp_clip, default 1), the clipped updates are summed with weight 1 each
 * (1/√(1+τ) for a late one: never more than 1, so one device moves the sum
 * by at most S), Gaussian noise of standard deviation z·S (z = dp_noise,
 * the noise multiplier, default 1) is added to every coordinate of the
 * sum, and the sum is divided by the expected number of updates, the
 * cohort size (not by the number that came: that would leak it):
 *   w = w + η · (Σ_k clip_S(Δ_k) + N(0, z²S²·I)) / cohort,  η = server_lr (1)
 * The noise comes from fmq_rng seeded with dp_seed and the round, so a
 * run is reproducible and a resumed round draws the same noise; dp_seed 0
 * (the default) draws a secret seed from the system at start, which the
 * checkpoint keeps. A fixed dp_seed is for tests: whoever knows it can
 * subtract the noise. There is no privacy accountant here: (ε, δ) follow
 * from z, the sampling rate and the number of rounds (the moments
 * accountant of Abadi et al. 2016). S and z are in the metrics (`dpc`,
 * `dpz`) and on the progress line.
 */
#include "strategy_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

typedef struct dpavg {
    uint32_t P;
    double S, z, lr, expected;
    uint64_t seed;
    float *sum; // (P,) Σ clipped updates
    uint32_t count, clipped;
} dpavg;

static fmq_err dp_init(void *st, const fmq_strategy_cfg *cfg, const char *args)
{
    dpavg *s = st;
    if (args) {
        fmq_log_err("strategy dp-fedavg takes no parameters (got ':%s'); "
                    "set dp_clip, dp_noise (and dp_seed) in the "
                    "configuration",
                    args);
        return FMQ_ERR_CONFIG;
    }
    fmq_err e;
    if ((e = fmq_strategy__hparam("dp-fedavg", "dp_clip", cfg->hp.dp_clip, 1.0,
                                  0, true, 1e30, false, &s->S)) ||
        (e = fmq_strategy__hparam("dp-fedavg", "dp_noise", cfg->hp.dp_noise,
                                  1.0, 0, false, 1e6, false, &s->z)) ||
        (e = fmq_strategy__hparam("dp-fedavg", "server_lr", cfg->hp.server_lr,
                                  1.0, 0, true, 1e6, false, &s->lr)))
        return e;
    if (cfg->cohort_size == 0) {
        fmq_log_err("strategy dp-fedavg: the cohort size (the expected "
                    "number of updates) must be >= 1");
        return FMQ_ERR_CONFIG;
    }
    s->P = cfg->P;
    s->expected = cfg->cohort_size;
    s->seed = cfg->hp.dp_seed;
    while (s->seed == 0)
        if (getrandom(&s->seed, sizeof s->seed, 0) != sizeof s->seed) {
            fmq_log_err("strategy dp-fedavg: no random seed from the system");
            return FMQ_ERR_CRYPTO;
        }
    s->sum = fmq_calloc(s->P, sizeof *s->sum);
    return s->sum ? FMQ_OK : FMQ_ERR_NOMEM;
}

static void dp_fini(void *st)
{
    dpavg *s = st;
    fmq_free(s->sum);
    s->sum = NULL;
}

static fmq_err dp_add(void *st, const fmq_strategy_update *u)
{
    dpavg *s = st;
    double f = u->norm > s->S ? s->S / u->norm : 1.0;
    if (u->staleness > 0)
        f /= sqrt(1.0 + (double)u->staleness);
    fmq_err e = fmq_quant_accumulate(u->delta, (float)f, s->sum);
    if (e)
        return e;
    s->count++;
    s->clipped += u->norm > s->S;
    return FMQ_OK;
}

static fmq_err dp_finish(void *st, uint64_t round,
                         const fmq_strategy_batch *batch, float *w,
                         fmq_strategy_result *res)
{
    dpavg *s = st;
    if (s->count == 0)
        return FMQ_ERR_STATE;
    fmq_rng rng;
    fmq_rng_seed(&rng, s->seed ^ (round * 0x9e3779b97f4a7c15ull));
    double sd = s->z * s->S, scale = s->lr / s->expected;
    for (uint32_t i = 0; i < s->P; i++) {
        double noisy = (double)s->sum[i] + sd * fmq_rng_normal(&rng);
        w[i] = (float)(w[i] + scale * noisy);
    }
    res->used = s->count;
    res->dp_clip = s->S;
    res->dp_noise = s->z;
    snprintf(res->note, sizeof res->note,
             "dp clip %g noise %g (std %.3g on the mean), %u of %u clipped",
             s->S, s->z, sd / s->expected, s->clipped, s->count);
    memset(s->sum, 0, (size_t)s->P * sizeof *s->sum);
    s->count = s->clipped = 0;
    return FMQ_OK;
}

static void dp_save(const void *st, fmq_wr *w)
{
    const dpavg *s = st;
    fmq_wr_u64(w, s->seed);
    fmq_wr_u32(w, s->count);
    fmq_wr_u32(w, s->clipped);
    fmq_wr_floats(w, s->sum, s->P);
}

static fmq_err dp_load(void *st, fmq_rd *r, uint32_t version)
{
    dpavg *s = st;
    if (version != 1)
        return FMQ_ERR_DATA;
    uint64_t seed = fmq_rd_u64(r);
    s->count = fmq_rd_u32(r);
    s->clipped = fmq_rd_u32(r);
    fmq_rd_floats(r, s->sum, s->P);
    s->seed = seed; /* the seed this run has drawn its noise with */
    return r->bad || s->seed == 0 ? FMQ_ERR_DATA : FMQ_OK;
}

const fmq_strategy_ops fmq_strategy__dp_fedavg = {
    .name = "dp-fedavg",
    .usage = "dp-fedavg (dp_clip, dp_noise, dp_seed, server_lr)",
    .state_size = sizeof(dpavg),
    .state_version = 1,
    .init = dp_init,
    .fini = dp_fini,
    .add = dp_add,
    .finish = dp_finish,
    .save = dp_save,
    .load = dp_load,
};
