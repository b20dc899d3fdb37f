/*
 * trainer.c — the trainer handle and the built-in trainer on nn.h.
 */
#include "trainer.h"

#include <string.h>

#include "data.h"
#include "nn.h"

fmq_err fmq_trainer_open(fmq_trainer *t, const fmq_trainer_ops *ops,
                         const fmq_trainer_setup *setup)
{
    memset(t, 0, sizeof *t);
    if (!ops || !ops->init || !ops->load || !ops->train || !ops->weights ||
        !ops->fini) {
        fmq_log_err("trainer '%s': ops table lacks a required entry",
                    ops && ops->name ? ops->name : "?");
        return FMQ_ERR_INVAL;
    }
    void *st = fmq_calloc(1, ops->state_size ? ops->state_size : 1);
    if (!st)
        return FMQ_ERR_NOMEM;
    uint32_t P = 0;
    fmq_err e = ops->init(st, setup, &P);
    if (e) {
        fmq_free(st);
        return e;
    }
    t->ops = ops;
    t->state = st;
    t->P = P;
    return FMQ_OK;
}

void fmq_trainer_close(fmq_trainer *t)
{
    if (!t || !t->ops)
        return;
    t->ops->fini(t->state);
    fmq_free(t->state);
    memset(t, 0, sizeof *t);
}

uint64_t fmq_trainer_seed(uint64_t base, uint32_t round, uint32_t who)
{
    /* splitmix64 finaliser over the three inputs */
    uint64_t z = base ^ ((uint64_t)round << 32 | who);
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ------------------------------------------------------------- built-in */

typedef struct builtin {
    fmq_nn *nn;
    const fmq_dataset *data;
    const uint32_t *idx;
    uint32_t n;
    float *w_ref; // (P,) the loaded global weights, for FedProx
} builtin;

static fmq_err builtin_init(void *state, const fmq_trainer_setup *s,
                            uint32_t *P)
{
    builtin *b = state;
    if (!s || !s->model || !s->data)
        return FMQ_ERR_INVAL;
    const fmq_dataset *d = s->data;
    fmq_err e = fmq_nn_new(s->model, d->c, d->h, d->w,
                           d->classes > 2 ? d->classes : 2, &b->nn);
    if (e)
        return e;
    *P = fmq_nn_nparams(b->nn);
    b->w_ref = fmq_alloc_array(*P, sizeof(float));
    if (!b->w_ref) {
        fmq_nn_destroy(&b->nn);
        return FMQ_ERR_NOMEM;
    }
    b->data = d;
    b->idx = s->idx;
    b->n = s->n;
    return FMQ_OK;
}

static fmq_err builtin_load(void *state, const float *w, uint32_t P)
{
    builtin *b = state;
    if (P != fmq_nn_nparams(b->nn))
        return FMQ_ERR_MODEL;
    memcpy(fmq_nn_params(b->nn), w, (size_t)P * sizeof(float));
    memcpy(b->w_ref, w, (size_t)P * sizeof(float));
    return FMQ_OK;
}

static fmq_err builtin_train(void *state, const fmq_trainer_round *r,
                             fmq_trainer_report *out)
{
    builtin *b = state;
    fmq_nn_train_cfg cfg = {
        .epochs = r->epochs,
        .batch = r->batch,
        .lr = r->lr,
        .momentum = r->momentum,
        .weight_decay = r->weight_decay,
        .mu = r->mu,
        .w_ref = r->mu > 0 ? b->w_ref : NULL,
        .seed = r->seed,
    };
    fmq_nn_train_result res;
    fmq_err e = fmq_nn_train(b->nn, b->data, b->idx, b->n, &cfg, &res);
    if (out) {
        out->samples = b->n;
        out->steps = res.samples;
        out->loss = res.loss;
        out->seconds = res.seconds;
    }
    return e;
}

static fmq_err builtin_weights(void *state, float *w, uint32_t P)
{
    builtin *b = state;
    if (P != fmq_nn_nparams(b->nn))
        return FMQ_ERR_MODEL;
    memcpy(w, fmq_nn_params(b->nn), (size_t)P * sizeof(float));
    return FMQ_OK;
}

static void builtin_fini(void *state)
{
    builtin *b = state;
    fmq_nn_destroy(&b->nn);
    fmq_free(b->w_ref);
    b->w_ref = NULL;
}

const fmq_trainer_ops fmq_trainer_builtin = {
    .name = "builtin",
    .state_size = sizeof(builtin),
    .init = builtin_init,
    .load = builtin_load,
    .train = builtin_train,
    .weights = builtin_weights,
    .fini = builtin_fini,
};
