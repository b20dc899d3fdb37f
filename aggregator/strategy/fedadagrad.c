/*
 * fedadagrad — FedAdagrad (Reddi et al., ICLR 2021, "Adaptive Federated
 * Optimization", Algorithm 2). The round's sample-weighted average delta Δ
 * is a pseudo-gradient:
 *   m = β1·m + (1 − β1)·Δ
 *   v = v + Δ²
 *   w = w + η·m / (√v + τ)
 * from m = 0 and v = τ², without bias correction. Defaults: η = 0.1
 * (server_lr), β1 = 0.9 (beta1: the value the paper's experiments
 * fix), τ = 1e-3 (tau_adapt). The paper tunes η and τ per task: these two are
 * starting points, not universal values. m and v are kept in the
 * checkpoint (fedopt.c).
 */
#include "strategy_internal.h"

static fmq_err fedadagrad_init(void *st, const fmq_strategy_cfg *cfg,
                               const char *args)
{
    return fmq_fedopt__init_adaptive(st, cfg, args, "fedadagrad",
                                     FMQ_FEDOPT_ADAGRAD, 0.1);
}

const fmq_strategy_ops fmq_strategy__fedadagrad = {
    .name = "fedadagrad",
    .usage = "fedadagrad (server_lr, beta1, tau_adapt)",
    .state_size = sizeof(fmq_fedopt),
    .state_version = 1,
    .init = fedadagrad_init,
    .fini = fmq_fedopt__fini,
    .add = fmq_fedopt__add,
    .finish = fmq_fedopt__finish,
    .save = fmq_fedopt__save,
    .load = fmq_fedopt__load,
};
