/*
 * fedavgm — FedAvg with server momentum (Hsu et al. 2019; the FedAvgM of
 * Reddi et al., ICLR 2021): the round's sample-weighted average delta Δ is
 * a pseudo-gradient, m = β·m + Δ, w = w + η·m. Defaults η = 1 (server_lr)
 * and β = 0.9 (server_momentum); β = 0 is FedAvg scaled by η. m is kept in
 * the checkpoint.
 */
#include "strategy_internal.h"

static fmq_err fedavgm_init(void *st, const fmq_strategy_cfg *cfg,
                            const char *args)
{
    if (args) {
        fmq_log_err("strategy fedavgm takes no parameters (got ':%s'); set "
                    "server_lr and server_momentum in the configuration",
                    args);
        return FMQ_ERR_CONFIG;
    }
    double lr, mom;
    fmq_err e;
    if ((e = fmq_strategy__hparam("fedavgm", "server_lr", cfg->hp.server_lr,
                                  1.0, 0, true, 1e6, false, &lr)) ||
        (e = fmq_strategy__hparam("fedavgm", "server_momentum",
                                  cfg->hp.server_momentum, 0.9, 0, false, 1,
                                  true, &mom)))
        return e;
    return fmq_fedopt__init(st, FMQ_FEDOPT_AVGM, cfg->P, lr, 0, 0, 0, mom);
}

const fmq_strategy_ops fmq_strategy__fedavgm = {
    .name = "fedavgm",
    .usage = "fedavgm (server_lr, server_momentum)",
    .state_size = sizeof(fmq_fedopt),
    .state_version = 1,
    .init = fedavgm_init,
    .fini = fmq_fedopt__fini,
    .add = fmq_fedopt__add,
    .finish = fmq_fedopt__finish,
    .save = fmq_fedopt__save,
    .load = fmq_fedopt__load,
};
