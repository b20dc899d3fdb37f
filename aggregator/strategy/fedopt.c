/*
 * fedopt.c — the server-optimizer machinery that fedavgm.c, fedadam.c,
 * fedyogi.c and fedadagrad.c share (Reddi et al., ICLR 2021, "Adaptive
 * Federated Optimization", Algorithm 2; the rules are in
 * strategy_internal.h). The round's pseudo-gradient Δ is the same
 * sample-weighted average fedavg computes (with the same float
 * arithmetic), so with η = 1 and no momentum fedavgm is fedavg.
 *
 * Checkpoint (version 1): u64 steps | the round's mean (fedavg's format) |
 * f32 m[P] | f32 v[P] (not for fedavgm).
 */
#include "strategy_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

fmq_err fmq_fedopt__init(fmq_fedopt *o, fmq_fedopt_kind kind, uint32_t P,
                         double lr, double beta1, double beta2, double tau,
                         double momentum)
{
    o->kind = kind;
    o->lr = lr;
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->tau = tau;
    o->momentum = momentum;
    fmq_err e = fmq_fedavg_init(&o->fa, P);
    if (e)
        return e;
    o->m = fmq_calloc(P, sizeof *o->m);
    o->delta = fmq_calloc(P, sizeof *o->delta);
    if (kind != FMQ_FEDOPT_AVGM) {
        o->v = fmq_alloc_array(P, sizeof *o->v);
        for (uint32_t i = 0; o->v && i < P; i++)
            o->v[i] = (float)(tau * tau); /* v_{-1} = τ² */
    }
    if (!o->m || !o->delta || (kind != FMQ_FEDOPT_AVGM && !o->v))
        return FMQ_ERR_NOMEM;
    return FMQ_OK;
}

fmq_err fmq_fedopt__init_adaptive(void *st, const fmq_strategy_cfg *cfg,
                                  const char *args, const char *name,
                                  fmq_fedopt_kind kind, double lr_default)
{
    bool has_beta2 = kind != FMQ_FEDOPT_ADAGRAD;
    if (args) {
        fmq_log_err("strategy %s takes no parameters (got ':%s'); set "
                    "server_lr, beta1, %stau_adapt in the configuration",
                    name, args, has_beta2 ? "beta2, " : "");
        return FMQ_ERR_CONFIG;
    }
    double lr, b1, b2 = 0, tau;
    fmq_err e;
    if ((e = fmq_strategy__hparam(name, "server_lr", cfg->hp.server_lr,
                                  lr_default, 0, true, 1e6, false, &lr)) ||
        (e = fmq_strategy__hparam(name, "beta1", cfg->hp.beta1, 0.9, 0, false,
                                  1, true, &b1)) ||
        (has_beta2 &&
         (e = fmq_strategy__hparam(name, "beta2", cfg->hp.beta2, 0.99, 0, false,
                                   1, true, &b2))) ||
        (e = fmq_strategy__hparam(name, "tau_adapt", cfg->hp.tau_adapt, 1e-3, 0,
                                  true, 1e6, false, &tau)))
        return e;
    return fmq_fedopt__init(st, kind, cfg->P, lr, b1, b2, tau, 0);
}

void fmq_fedopt__fini(void *st)
{
    fmq_fedopt *o = st;
    fmq_fedavg_fini(&o->fa);
    fmq_free(o->m);
    fmq_free(o->v);
    fmq_free(o->delta);
    o->m = o->v = o->delta = NULL;
}

fmq_err fmq_fedopt__add(void *st, const fmq_strategy_update *u)
{
    fmq_fedopt *o = st;
    return fmq_strategy__mean_add(&o->fa, u);
}

fmq_err fmq_fedopt__finish(void *st, uint64_t round,
                           const fmq_strategy_batch *batch, float *w,
                           fmq_strategy_result *res)
{
    fmq_fedopt *o = st;
    uint32_t P = o->fa.P;
    /* Δ = the round's average delta, computed as fedavg applies it */
    memset(o->delta, 0, (size_t)P * sizeof *o->delta);
    fmq_err e = fmq_fedavg_apply(&o->fa, o->delta);
    if (e)
        return e;
    res->used = o->fa.count;
    fmq_fedavg_reset(&o->fa);
    const double lr = o->lr, b1 = o->beta1, b2 = o->beta2, tau = o->tau;
    for (uint32_t i = 0; i < P; i++) {
        double d = o->delta[i];
        if (o->kind == FMQ_FEDOPT_AVGM) {
            double m = o->momentum * o->m[i] + d;
            o->m[i] = (float)m;
            w[i] = (float)(w[i] + lr * m);
            continue;
        }
        double m = b1 * o->m[i] + (1 - b1) * d, v = o->v[i], d2 = d * d;
        if (o->kind == FMQ_FEDOPT_ADAGRAD)
            v = v + d2;
        else if (o->kind == FMQ_FEDOPT_YOGI)
            v = v - (1 - b2) * d2 * (v > d2 ? 1.0 : v < d2 ? -1.0 : 0.0);
        else
            v = b2 * v + (1 - b2) * d2;
        o->m[i] = (float)m;
        o->v[i] = (float)v;
        w[i] = (float)(w[i] + lr * m / (sqrt(v) + tau));
    }
    o->steps++;
    snprintf(res->note, sizeof res->note, "server step %llu, lr %g",
             (unsigned long long)o->steps, lr);
    return FMQ_OK;
}

void fmq_fedopt__save(const void *st, fmq_wr *w)
{
    const fmq_fedopt *o = st;
    fmq_wr_u64(w, o->steps);
    fmq_strategy__mean_save(&o->fa, w);
    fmq_wr_floats(w, o->m, o->fa.P);
    if (o->v)
        fmq_wr_floats(w, o->v, o->fa.P);
}

fmq_err fmq_fedopt__load(void *st, fmq_rd *r, uint32_t version)
{
    fmq_fedopt *o = st;
    if (version != 1)
        return FMQ_ERR_DATA;
    o->steps = fmq_rd_u64(r);
    fmq_err e = fmq_strategy__mean_load(&o->fa, r);
    if (e)
        return e;
    fmq_rd_floats(r, o->m, o->fa.P);
    if (o->v)
        fmq_rd_floats(r, o->v, o->fa.P);
    return r->bad ? FMQ_ERR_DATA : FMQ_OK;
}
