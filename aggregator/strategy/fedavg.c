/*
 * fedavg — sample-weighted FedAvg (McMahan et al., AISTATS 2017), streaming
 * in O(P) memory: each update is folded into a running sum as it arrives
 * (common/fedavg.h, no dequantized copy) with weight n_k (times 1/√(1+τ)
 * for a late update the aggregator folds in), and the model moves by
 * sum / Σ weights when the round closes. The arithmetic is exactly that of
 * fedmq-train's in-process reference (test/it_fleet_ref.sh).
 *
 * Also the mean the FedAvg-like strategies (fedprox, the server
 * optimizers) reduce with: fmq_strategy__mean_*.
 */
#include "strategy_internal.h"

fmq_err fmq_strategy__mean_add(fmq_fedavg *fa, const fmq_strategy_update *u)
{
    return fmq_fedavg_add(fa, u->delta, fmq_strategy__weight(u));
}

void fmq_strategy__mean_save(const fmq_fedavg *fa, fmq_wr *w)
{
    fmq_wr_f64(w, fa->weight);
    fmq_wr_u32(w, fa->count);
    fmq_wr_floats(w, fa->sum, fa->P);
}

fmq_err fmq_strategy__mean_load(fmq_fedavg *fa, fmq_rd *r)
{
    fa->weight = fmq_rd_f64(r);
    fa->count = fmq_rd_u32(r);
    fmq_rd_floats(r, fa->sum, fa->P);
    return r->bad || !(fa->weight >= 0) ? FMQ_ERR_DATA : FMQ_OK;
}

/* The state is an fmq_fedavg; fedprox's begins with one, so these ops
 * take st as a pointer to its initial member (C11 6.7.2.1). */
static fmq_err fedavg_init(void *st, const fmq_strategy_cfg *cfg,
                           const char *args)
{
    if (args) {
        fmq_log_err("strategy fedavg takes no parameters (got ':%s')", args);
        return FMQ_ERR_CONFIG;
    }
    return fmq_fedavg_init(st, cfg->P);
}

void fmq_strategy__fedavg_fini(void *st)
{
    fmq_fedavg_fini(st);
}

fmq_err fmq_strategy__fedavg_add(void *st, const fmq_strategy_update *u)
{
    return fmq_strategy__mean_add(st, u);
}

fmq_err fmq_strategy__fedavg_finish(void *st, uint64_t round,
                                    const fmq_strategy_batch *batch, float *w,
                                    fmq_strategy_result *res)
{
    fmq_fedavg *fa = st;
    fmq_err e = fmq_fedavg_apply(fa, w);
    res->used = e ? 0 : fa->count;
    fmq_fedavg_reset(fa);
    return e;
}

void fmq_strategy__fedavg_save(const void *st, fmq_wr *w)
{
    fmq_strategy__mean_save(st, w);
}

fmq_err fmq_strategy__fedavg_load(void *st, fmq_rd *r, uint32_t version)
{
    return version == 1 ? fmq_strategy__mean_load(st, r) : FMQ_ERR_DATA;
}

const fmq_strategy_ops fmq_strategy__fedavg = {
    .name = "fedavg",
    .usage = "fedavg",
    .state_size = sizeof(fmq_fedavg),
    .state_version = 1,
    .init = fedavg_init,
    .fini = fmq_strategy__fedavg_fini,
    .add = fmq_strategy__fedavg_add,
    .finish = fmq_strategy__fedavg_finish,
    .save = fmq_strategy__fedavg_save,
    .load = fmq_strategy__fedavg_load,
};
