/*
 * fedprox — FedProx (Li et al., MLSys 2020): FedAvg's aggregation, and
 * the round's instructions ask every device to add the proximal term
 * μ/2·‖w − w_global‖² to its local loss (the global's tc.mu; the device's
 * engine applies it: common/nn.h, common/trainer.h). μ is the `mu`
 * configuration key, default 0.01 (Li et al. tune it over {0.001, 0.01,
 * 0.1, 1}); μ = 0 is FedAvg.
 */
#include "strategy_internal.h"

#include <stdio.h>

/* fedavg's state first: fedavg's ops run on it (strategy_internal.h) */
typedef struct fedprox {
    fmq_fedavg fa;
    float mu;
} fedprox;

static fmq_err fedprox_init(void *st, const fmq_strategy_cfg *cfg,
                            const char *args)
{
    fedprox *s = st;
    if (args) {
        fmq_log_err("strategy fedprox takes no parameters (got ':%s'); set "
                    "mu in the configuration",
                    args);
        return FMQ_ERR_CONFIG;
    }
    double mu;
    fmq_err e = fmq_strategy__hparam("fedprox", "mu", cfg->hp.mu, 0.01, 0,
                                     false, 1000, false, &mu);
    if (e)
        return e;
    s->mu = (float)mu;
    return fmq_fedavg_init(&s->fa, cfg->P);
}

static void fedprox_configure(void *st, fmq_msg_global *g)
{
    const fedprox *s = st;
    g->train.mu = s->mu;
}

static fmq_err fedprox_finish(void *st, uint64_t round,
                              const fmq_strategy_batch *batch, float *w,
                              fmq_strategy_result *res)
{
    const fedprox *s = st;
    snprintf(res->note, sizeof res->note, "mu %g", s->mu);
    return fmq_strategy__fedavg_finish(st, round, batch, w, res);
}

const fmq_strategy_ops fmq_strategy__fedprox = {
    .name = "fedprox",
    .usage = "fedprox (mu)",
    .state_size = sizeof(fedprox),
    .state_version = 1,
    .init = fedprox_init,
    .fini = fmq_strategy__fedavg_fini,
    .configure = fedprox_configure,
    .add = fmq_strategy__fedavg_add,
    .finish = fedprox_finish,
    .save = fmq_strategy__fedavg_save,
    .load = fmq_strategy__fedavg_load,
};
