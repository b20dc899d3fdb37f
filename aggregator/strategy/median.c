/*
 * median — the coordinate-wise median of the round's updates (Yin et al.,
 * ICML 2018, "Byzantine-Robust Distributed Learning: Towards Optimal
 * Statistical Rates"): w_i = w_i + median_k Δ_k,i; for an even count the
 * mean of the two middle values. Unweighted: a hostile device can claim
 * any sample count. The round's updates are kept quantized by the core
 * (~P bytes each for q8) and decoded a block of coordinates at a time.
 */
#include "strategy_internal.h"

static float median_coord(float *v, uint32_t n, void *arg)
{
    (void)arg;
    fmq_strategy__sort_floats(v, n);
    if (n % 2)
        return v[n / 2];
    return (float)(0.5 * ((double)v[n / 2 - 1] + (double)v[n / 2]));
}

static fmq_err median_init(void *st, const fmq_strategy_cfg *cfg,
                           const char *args)
{
    if (args) {
        fmq_log_err("strategy median takes no parameters (got ':%s')", args);
        return FMQ_ERR_CONFIG;
    }
    uint32_t *P = st;
    *P = cfg->P;
    return FMQ_OK;
}

static fmq_err median_finish(void *st, uint64_t round,
                             const fmq_strategy_batch *batch, float *w,
                             fmq_strategy_result *res)
{
    const uint32_t *P = st;
    fmq_err e = fmq_strategy__reduce_coords(batch, *P, w, median_coord, NULL);
    if (!e)
        res->used = fmq_strategy_batch_count(batch);
    return e;
}

const fmq_strategy_ops fmq_strategy__median = {
    .name = "median",
    .usage = "median",
    .state_size = sizeof(uint32_t),
    .keeps_updates = true,
    .init = median_init,
    .finish = median_finish,
};
