/*
 * fedyogi — FedYogi (Reddi et al., ICLR 2021, "Adaptive Federated
 * Optimization", Algorithm 2). The round's sample-weighted average delta Δ
 * is a pseudo-gradient:
 *   m = β1·m + (1 − β1)·Δ
 *   v = v − (1 − β2)·Δ²·sign(v − Δ²)   (Yogi, Zaheer et al. 2018)
 *   w = w + η·m / (√v + τ)
 * from m = 0 and v = τ², without bias correction. Defaults: η = 0.01
 * (server_lr), β1 = 0.9 and β2 = 0.99 (beta1, beta2: the values the
 * paper's experiments fix), τ = 1e-3 (tau_adapt). The paper tunes η and τ per
 * task: these two are starting points, not universal values. m and v are kept
 * in the checkpoint (fedopt.c).
 */
#include "strategy_internal.h"

static fmq_err fedyogi_init(void *st, const fmq_strategy_cfg *cfg,
                            const char *args)
{
    return fmq_fedopt__init_adaptive(st, cfg, args, "fedyogi", FMQ_FEDOPT_YOGI,
                                     0.01);
}

const fmq_strategy_ops fmq_strategy__fedyogi = {
    .name = "fedyogi",
    .usage = "fedyogi (server_lr, beta1, beta2, tau_adapt)",
    .state_size = sizeof(fmq_fedopt),
    .state_version = 1,
    .init = fedyogi_init,
    .fini = fmq_fedopt__fini,
    .add = fmq_fedopt__add,
    .finish = fmq_fedopt__finish,
    .save = fmq_fedopt__save,
    .load = fmq_fedopt__load,
};
