/*
 * fedbuff — buffered asynchronous aggregation (Nguyen et al., AISTATS
 * 2022, "Federated Learning with Buffered Asynchronous Aggregation",
 * Algorithm 1). There are no synchronous rounds: any device may send an
 * update for the version it holds at any time; the aggregator buffers
 * them and makes a new model version every K updates (buffer_k, default
 * 10, the paper's usual K):
 *   Δ̄ = (1/K) Σ_k s(τ_k)·Δ_k,  s(τ) = 1/√(1 + τ),  w = w + η·Δ̄
 * with τ = current version − the version the device trained from, η =
 * server_lr (default 1). An update more than max_staleness versions
 * behind is rejected as `stale` by the aggregator (agg.c). As in the paper
 * the devices' sample counts do not weigh. The globals it configures say
 * `as` = true, `ms` = max staleness and carry no deadline; their round
 * number counts versions (SPEC §9.2). The buffer (sum, count) is kept in
 * the checkpoint.
 */
#include "strategy_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct fedbuff {
    uint32_t P, K, max_staleness;
    double lr;
    float *sum; // (P,) Σ s(τ_k)·Δ_k of the buffer
    uint32_t count;
    uint32_t stale; /* of count: with τ > 0 */
} fedbuff;

static fmq_err fedbuff_init(void *st, const fmq_strategy_cfg *cfg,
                            const char *args)
{
    fedbuff *s = st;
    if (args) {
        fmq_log_err("strategy fedbuff takes no parameters (got ':%s'); set "
                    "buffer_k and server_lr in the configuration",
                    args);
        return FMQ_ERR_CONFIG;
    }
    s->P = cfg->P;
    s->K = cfg->hp.buffer_k ? cfg->hp.buffer_k : 10;
    s->max_staleness = cfg->max_staleness;
    fmq_err e = fmq_strategy__hparam("fedbuff", "server_lr", cfg->hp.server_lr,
                                     1.0, 0, true, 1e6, false, &s->lr);
    if (e)
        return e;
    s->sum = fmq_calloc(s->P, sizeof *s->sum);
    return s->sum ? FMQ_OK : FMQ_ERR_NOMEM;
}

static void fedbuff_fini(void *st)
{
    fedbuff *s = st;
    fmq_free(s->sum);
    s->sum = NULL;
}

static void fedbuff_configure(void *st, fmq_msg_global *g)
{
    const fedbuff *s = st;
    g->async = true;
    g->max_staleness = s->max_staleness;
    g->deadline_ms = 0; /* no rounds, no deadline */
}

static fmq_err fedbuff_add(void *st, const fmq_strategy_update *u)
{
    fedbuff *s = st;
    float f = (float)(1.0 / sqrt(1.0 + (double)u->staleness));
    fmq_err e = fmq_quant_accumulate(u->delta, f, s->sum);
    if (e)
        return e;
    s->count++;
    s->stale += u->staleness > 0;
    return FMQ_OK;
}

static bool fedbuff_ready(const void *st)
{
    const fedbuff *s = st;
    return s->count >= s->K;
}

static fmq_err fedbuff_finish(void *st, uint64_t round,
                              const fmq_strategy_batch *batch, float *w,
                              fmq_strategy_result *res)
{
    fedbuff *s = st;
    if (s->count == 0)
        return FMQ_ERR_STATE;
    /* ÷ the number buffered: K when the buffer closed on ready() */
    float inv = (float)(s->lr / s->count);
    for (uint32_t i = 0; i < s->P; i++)
        w[i] += s->sum[i] * inv;
    res->used = s->count;
    snprintf(res->note, sizeof res->note, "buffer %u of K %u, %u stale",
             s->count, s->K, s->stale);
    memset(s->sum, 0, (size_t)s->P * sizeof *s->sum);
    s->count = s->stale = 0;
    return FMQ_OK;
}

static void fedbuff_save(const void *st, fmq_wr *w)
{
    const fedbuff *s = st;
    fmq_wr_u32(w, s->count);
    fmq_wr_u32(w, s->stale);
    fmq_wr_floats(w, s->sum, s->P);
}

static fmq_err fedbuff_load(void *st, fmq_rd *r, uint32_t version)
{
    fedbuff *s = st;
    if (version != 1)
        return FMQ_ERR_DATA;
    s->count = fmq_rd_u32(r);
    s->stale = fmq_rd_u32(r);
    fmq_rd_floats(r, s->sum, s->P);
    return r->bad || s->stale > s->count ? FMQ_ERR_DATA : FMQ_OK;
}

const fmq_strategy_ops fmq_strategy__fedbuff = {
    .name = "fedbuff",
    .usage = "fedbuff (buffer_k, server_lr, max_staleness)",
    .state_size = sizeof(fedbuff),
    .async = true,
    .state_version = 1,
    .init = fedbuff_init,
    .fini = fedbuff_fini,
    .configure = fedbuff_configure,
    .add = fedbuff_add,
    .ready = fedbuff_ready,
    .finish = fedbuff_finish,
    .save = fedbuff_save,
    .load = fedbuff_load,
};
