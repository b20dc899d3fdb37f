/*
 * nn.c — models by spec, PyTorch-default initialisation, minibatch SGD
 * with momentum, weight decay and the FedProx term, and evaluation. The
 * numeric kernels are in nn_kernels.inc, instantiated here for float and
 * double. See nn.h for the contract.
 */
#include "nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"

#ifndef FMQ_NN_BLAS
#define FMQ_NN_BLAS 0
#endif
#if FMQ_NN_BLAS
#include <cblas.h>
/* OpenBLAS's thread control (cblas.h of Debian's libopenblas-dev). */
void openblas_set_num_threads(int num_threads);
#endif

static bool nn_use_blas = FMQ_NN_BLAS;
#if FMQ_NN_BLAS
static bool nn_threads_set; /* fmq_nn_set_threads or the first model */
#endif

static size_t layer_out_size(const fmq_nn_layer *L)
{
    return (size_t)L->out_c * L->out_h * L->out_w;
}
static size_t layer_in_size(const fmq_nn_layer *L)
{
    return (size_t)L->in_c * L->in_h * L->in_w;
}

#define T float
#define FN(x) x##_f
#include "nn_kernels.inc"
#undef T
#undef FN
#define T double
#define FN(x) x##_d
#include "nn_kernels.inc"
#undef T
#undef FN

struct fmq_nn {
    char spec[64];
    fmq_nn_layer layers[FMQ_NN_MAX_LAYERS];
    uint32_t nl;
    uint32_t P, in_dim, classes;
    uint32_t in_c, in_h, in_w; /* input shape */
    float *params; // (P,)
    ws_f wsf;
    ws_d wsd;
    float *grad; // (P,) training gradient
};

bool fmq_nn_have_blas(void)
{
    return FMQ_NN_BLAS;
}

bool fmq_nn_set_blas(bool on)
{
    nn_use_blas = FMQ_NN_BLAS && on;
    return nn_use_blas;
}

void fmq_nn_set_threads(int n)
{
#if FMQ_NN_BLAS
    nn_threads_set = true;
    openblas_set_num_threads(n < 1 ? 1 : n);
#else
    (void)n;
#endif
}

/* ------------------------------------------------------------ building */

static fmq_err add_layer(fmq_nn *m, fmq_nn_kind kind, uint32_t out_c,
                         uint32_t k)
{
    if (m->nl >= FMQ_NN_MAX_LAYERS) {
        fmq_log_err("nn: model '%s' has more than %d layers", m->spec,
                    FMQ_NN_MAX_LAYERS);
        return FMQ_ERR_CONFIG;
    }
    fmq_nn_layer *L = &m->layers[m->nl];
    memset(L, 0, sizeof *L);
    if (m->nl == 0) {
        L->in_c = m->in_c;
        L->in_h = m->in_h;
        L->in_w = m->in_w;
    } else {
        const fmq_nn_layer *prev = &m->layers[m->nl - 1];
        L->in_c = prev->out_c;
        L->in_h = prev->out_h;
        L->in_w = prev->out_w;
    }
    L->kind = kind;
    L->k = k;
    switch (kind) {
    case FMQ_NN_DENSE: /* flattens whatever comes in, in (c, h, w) order */
        L->in_c = L->in_c * L->in_h * L->in_w;
        L->in_h = L->in_w = 1;
        L->out_c = out_c;
        L->out_h = L->out_w = 1;
        L->w_len = (size_t)out_c * L->in_c;
        L->b_len = out_c;
        break;
    case FMQ_NN_CONV:
        if (L->in_h < k || L->in_w < k) {
            fmq_log_err("nn: '%s': %ux%u input is smaller than a %ux%u kernel",
                        m->spec, L->in_h, L->in_w, k, k);
            return FMQ_ERR_CONFIG;
        }
        L->out_c = out_c;
        L->out_h = L->in_h - k + 1;
        L->out_w = L->in_w - k + 1;
        L->w_len = (size_t)out_c * L->in_c * k * k;
        L->b_len = out_c;
        break;
    case FMQ_NN_POOL:
        L->out_c = L->in_c;
        L->out_h = L->in_h / k;
        L->out_w = L->in_w / k;
        if (L->out_h == 0 || L->out_w == 0) {
            fmq_log_err("nn: '%s': %ux%u input is too small to pool by %u",
                        m->spec, L->in_h, L->in_w, k);
            return FMQ_ERR_CONFIG;
        }
        break;
    case FMQ_NN_RELU:
        L->out_c = L->in_c;
        L->out_h = L->in_h;
        L->out_w = L->in_w;
        break;
    }
    L->w_off = m->P;
    L->b_off = m->P + L->w_len;
    uint64_t P = (uint64_t)m->P + L->w_len + L->b_len;
    if (P > 100000000u) {
        fmq_log_err("nn: '%s' has more than 100,000,000 parameters", m->spec);
        return FMQ_ERR_CONFIG;
    }
    m->P = (uint32_t)P;
    m->nl++;
    return FMQ_OK;
}

static fmq_err build(fmq_nn *m, const char *spec)
{
    fmq_err e;
    if (strcmp(spec, "logreg") == 0)
        return add_layer(m, FMQ_NN_DENSE, m->classes, 0);
    if (strcmp(spec, "cnn") == 0) {
        if ((e = add_layer(m, FMQ_NN_CONV, 6, 5)) ||
            (e = add_layer(m, FMQ_NN_RELU, 0, 0)) ||
            (e = add_layer(m, FMQ_NN_POOL, 0, 2)) ||
            (e = add_layer(m, FMQ_NN_CONV, 16, 5)) ||
            (e = add_layer(m, FMQ_NN_RELU, 0, 0)) ||
            (e = add_layer(m, FMQ_NN_POOL, 0, 2)) ||
            (e = add_layer(m, FMQ_NN_DENSE, 120, 0)) ||
            (e = add_layer(m, FMQ_NN_RELU, 0, 0)) ||
            (e = add_layer(m, FMQ_NN_DENSE, 84, 0)) ||
            (e = add_layer(m, FMQ_NN_RELU, 0, 0)) ||
            (e = add_layer(m, FMQ_NN_DENSE, m->classes, 0)))
            return e;
        return FMQ_OK;
    }
    if (strncmp(spec, "mlp:", 4) == 0) {
        const char *p = spec + 4;
        for (;;) {
            char *end;
            unsigned long h = strtoul(p, &end, 10);
            if (end == p || h == 0 || h > 65536 || (*end && *end != ',')) {
                fmq_log_err("nn: '%s': hidden sizes must be integers 1..65536 "
                            "separated by commas",
                            spec);
                return FMQ_ERR_CONFIG;
            }
            if ((e = add_layer(m, FMQ_NN_DENSE, (uint32_t)h, 0)) ||
                (e = add_layer(m, FMQ_NN_RELU, 0, 0)))
                return e;
            if (!*end)
                break;
            p = end + 1;
        }
        return add_layer(m, FMQ_NN_DENSE, m->classes, 0);
    }
    fmq_log_err("nn: unknown model '%s' (logreg, mlp:H[,H...], cnn)", spec);
    return FMQ_ERR_CONFIG;
}

fmq_err fmq_nn_new(const char *spec, uint32_t c, uint32_t h, uint32_t w,
                   uint32_t classes, fmq_nn **out)
{
    *out = NULL;
    if (!spec || strlen(spec) >= sizeof ((fmq_nn *)0)->spec) {
        fmq_log_err("nn: model spec missing or longer than 63 characters");
        return FMQ_ERR_CONFIG;
    }
    if (c == 0 || h == 0 || w == 0 || classes < 2 ||
        classes > FMQ_NN_MAX_CLASSES ||
        (uint64_t)c * h * w > 16u * 1024 * 1024) {
        fmq_log_err("nn: '%s': bad input shape %ux%ux%u or %u classes", spec,
                    c, h, w, classes);
        return FMQ_ERR_CONFIG;
    }
#if FMQ_NN_BLAS
    /* One BLAS thread unless the program or OPENBLAS_NUM_THREADS says
     * otherwise: a device trains beside its other work, and OpenBLAS's
     * default of one thread per core oversubscribes small matrices. */
    if (!nn_threads_set && !getenv("OPENBLAS_NUM_THREADS"))
        openblas_set_num_threads(1);
    nn_threads_set = true;
#endif
    fmq_nn *m = fmq_calloc(1, sizeof *m);
    if (!m)
        return FMQ_ERR_NOMEM;
    snprintf(m->spec, sizeof m->spec, "%s", spec);
    m->classes = classes;
    m->in_dim = c * h * w;
    m->in_c = c;
    m->in_h = h;
    m->in_w = w;
    fmq_err e = build(m, spec);
    if (!e && !(m->params = fmq_calloc(m->P, sizeof(float))))
        e = FMQ_ERR_NOMEM;
    if (e) {
        fmq_free(m);
        return e;
    }
    *out = m;
    return FMQ_OK;
}

void fmq_nn_destroy(fmq_nn **mp)
{
    if (!mp || !*mp)
        return;
    fmq_nn *m = *mp;
    ws_free_f(&m->wsf);
    ws_free_d(&m->wsd);
    fmq_free(m->params);
    fmq_free(m->grad);
    fmq_free(m);
    *mp = NULL;
}

void fmq_nn_init(fmq_nn *m, uint64_t seed)
{
    fmq_rng r;
    fmq_rng_seed(&r, seed);
    for (uint32_t l = 0; l < m->nl; l++) {
        const fmq_nn_layer *L = &m->layers[l];
        if (!L->w_len)
            continue;
        /* PyTorch: kaiming_uniform_(a=sqrt(5)) gives bound 1/sqrt(fan_in)
         * for the weights; the bias is uniform in the same bound. */
        size_t fan_in = L->w_len / L->out_c;
        double bound = 1.0 / sqrt((double)fan_in);
        for (size_t i = 0; i < L->w_len + L->b_len; i++)
            m->params[L->w_off + i] =
                (float)((2 * fmq_rng_double(&r) - 1) * bound);
    }
}

const char *fmq_nn_spec(const fmq_nn *m)
{
    return m->spec;
}
uint32_t fmq_nn_nparams(const fmq_nn *m)
{
    return m->P;
}
uint32_t fmq_nn_input_dim(const fmq_nn *m)
{
    return m->in_dim;
}
uint32_t fmq_nn_classes(const fmq_nn *m)
{
    return m->classes;
}
float *fmq_nn_params(fmq_nn *m)
{
    return m->params;
}
uint32_t fmq_nn_nlayers(const fmq_nn *m)
{
    return m->nl;
}
const fmq_nn_layer *fmq_nn_layer_at(const fmq_nn *m, uint32_t i)
{
    return i < m->nl ? &m->layers[i] : NULL;
}

/* ---------------------------------------------------------- loss, grad */

static fmq_err check_labels(const fmq_nn *m, const uint16_t *y, uint32_t B)
{
    for (uint32_t s = 0; s < B; s++)
        if (y[s] >= m->classes) {
            fmq_log_err("nn: label %u is not below the model's %u classes",
                        y[s], m->classes);
            return FMQ_ERR_INVAL;
        }
    return FMQ_OK;
}

fmq_err fmq_nn_loss_grad(fmq_nn *m, const float *x, const uint16_t *y,
                         uint32_t B, double *loss, float *grad)
{
    fmq_err e;
    if (B == 0 || !x || !y)
        return FMQ_ERR_INVAL;
    if ((e = check_labels(m, y, B)) ||
        (e = ws_reserve_f(&m->wsf, m->layers, m->nl, B)))
        return e;
    memcpy(m->wsf.act[0], x, (size_t)B * m->in_dim * sizeof(float));
    forward_f(m->layers, m->nl, m->params, B, &m->wsf);
    double l = softmax_xent_f(m->wsf.act[m->nl], y, B, m->classes,
                              grad ? m->wsf.dact[m->nl] : NULL, NULL, NULL);
    if (grad) {
        memset(grad, 0, (size_t)m->P * sizeof(float));
        backward_f(m->layers, m->nl, m->params, B, &m->wsf, grad);
    }
    if (loss)
        *loss = l;
    return FMQ_OK;
}

fmq_err fmq_nn_loss_grad_f64(fmq_nn *m, const double *params, const double *x,
                             const uint16_t *y, uint32_t B, double *loss,
                             double *grad)
{
    fmq_err e;
    if (B == 0 || !x || !y || !params)
        return FMQ_ERR_INVAL;
    if ((e = check_labels(m, y, B)) ||
        (e = ws_reserve_d(&m->wsd, m->layers, m->nl, B)))
        return e;
    memcpy(m->wsd.act[0], x, (size_t)B * m->in_dim * sizeof(double));
    forward_d(m->layers, m->nl, params, B, &m->wsd);
    double l = softmax_xent_d(m->wsd.act[m->nl], y, B, m->classes,
                              grad ? m->wsd.dact[m->nl] : NULL, NULL, NULL);
    if (grad) {
        memset(grad, 0, (size_t)m->P * sizeof(double));
        backward_d(m->layers, m->nl, params, B, &m->wsd, grad);
    }
    if (loss)
        *loss = l;
    return FMQ_OK;
}

/* -------------------------------------------------------------- training */

static fmq_err check_data(const fmq_nn *m, const fmq_dataset *ds)
{
    if (!ds || !ds->x || !ds->y || ds->dim != m->in_dim) {
        fmq_log_err("nn: dataset of %u features does not fit model '%s' "
                    "(%u inputs)",
                    ds ? ds->dim : 0, m->spec, m->in_dim);
        return FMQ_ERR_INVAL;
    }
    if (ds->classes > m->classes) {
        fmq_log_err("nn: dataset has %u classes, model '%s' %u", ds->classes,
                    m->spec, m->classes);
        return FMQ_ERR_INVAL;
    }
    return FMQ_OK;
}

fmq_err fmq_nn_train(fmq_nn *m, const fmq_dataset *ds, const uint32_t *idx,
                     uint32_t n, const fmq_nn_train_cfg *cfg,
                     fmq_nn_train_result *res)
{
    fmq_err e;
    double t0 = fmq_mono_seconds();
    if (res)
        memset(res, 0, sizeof *res);
    if ((e = check_data(m, ds)))
        return e;
    if (!cfg || cfg->epochs == 0 || cfg->batch == 0 || !(cfg->lr > 0) ||
        !isfinite(cfg->lr) || !(cfg->momentum >= 0 && cfg->momentum < 1) ||
        !(cfg->weight_decay >= 0) || !(cfg->mu >= 0) ||
        (cfg->mu > 0 && !cfg->w_ref) || n == 0) {
        fmq_log_err("nn: bad training configuration (epochs >= 1, batch >= "
                    "1, lr > 0, 0 <= momentum < 1, weight decay and mu >= 0, "
                    "w_ref with mu, n >= 1)");
        return FMQ_ERR_INVAL;
    }
    if (!idx && n > ds->n)
        return FMQ_ERR_INVAL;
    for (uint32_t i = 0; idx && i < n; i++)
        if (idx[i] >= ds->n)
            return FMQ_ERR_INVAL;
    uint32_t B = cfg->batch < n ? cfg->batch : n;
    size_t P = m->P, dim = m->in_dim;
    uint32_t *order = fmq_alloc_array(n, sizeof *order);
    float *mom = cfg->momentum > 0 ? fmq_calloc(P, sizeof(float)) : NULL;
    float *backup = fmq_alloc_array(P, sizeof(float));
    uint16_t *yb = fmq_alloc_array(B, sizeof *yb);
    if (!m->grad)
        m->grad = fmq_alloc_array(P, sizeof(float));
    if (!order || (cfg->momentum > 0 && !mom) || !backup || !yb ||
        !m->grad || (e = ws_reserve_f(&m->wsf, m->layers, m->nl, B))) {
        e = FMQ_ERR_NOMEM;
        goto done;
    }
    memcpy(backup, m->params, P * sizeof(float));
    for (uint32_t i = 0; i < n; i++)
        order[i] = idx ? idx[i] : i;
    fmq_rng r;
    fmq_rng_seed(&r, cfg->seed);
    float *w = m->params, *g = m->grad;
    double epoch_loss = 0;
    for (uint32_t ep = 0; ep < cfg->epochs; ep++) {
        fmq_rng_shuffle_u32(&r, order, n);
        double sum = 0;
        uint32_t nb = 0;
        for (uint32_t start = 0; start < n; start += B, nb++) {
            uint32_t bs = n - start < B ? n - start : B;
            float *xb = m->wsf.act[0];
            for (uint32_t s = 0; s < bs; s++) {
                uint32_t row = order[start + s];
                memcpy(xb + s * dim, ds->x + (size_t)row * dim,
                       dim * sizeof(float));
                yb[s] = ds->y[row];
            }
            if ((e = check_labels(m, yb, bs)))
                goto restore;
            forward_f(m->layers, m->nl, w, bs, &m->wsf);
            double l = softmax_xent_f(m->wsf.act[m->nl], yb, bs, m->classes,
                                      m->wsf.dact[m->nl], NULL, NULL);
            if (!isfinite(l)) {
                fmq_log_err("nn: training loss became %g at epoch %u; weights "
                            "restored (learning rate too high?)",
                            l, ep + 1);
                e = FMQ_ERR_NONFINITE;
                goto restore;
            }
            sum += l;
            memset(g, 0, P * sizeof(float));
            backward_f(m->layers, m->nl, w, bs, &m->wsf, g);
            /* torch.optim.SGD: g += wd*w; buf = mom*buf + g; w -= lr*buf.
             * FedProx adds mu*(w - w_global) to g (the proximal gradient). */
            const float lr = cfg->lr, wd = cfg->weight_decay, mu = cfg->mu;
            const float mo = cfg->momentum;
            const float *wr = cfg->w_ref;
            for (size_t i = 0; i < P; i++) {
                float gi = g[i] + wd * w[i];
                if (mu > 0)
                    gi += mu * (w[i] - wr[i]);
                if (mom) {
                    mom[i] = mo * mom[i] + gi;
                    gi = mom[i];
                }
                w[i] -= lr * gi;
            }
        }
        epoch_loss = sum / nb;
        if (cfg->on_epoch &&
            cfg->on_epoch(cfg->arg, ep + 1, epoch_loss,
                          fmq_mono_seconds() - t0))
            break;
    }
    for (size_t i = 0; i < P; i++)
        if (!isfinite(w[i])) {
            fmq_log_err("nn: weights became non-finite; restored");
            e = FMQ_ERR_NONFINITE;
            goto restore;
        }
    if (res) {
        res->samples = (uint64_t)cfg->epochs * n;
        res->loss = epoch_loss;
    }
    e = FMQ_OK;
    goto done;
restore:
    memcpy(m->params, backup, P * sizeof(float));
done:
    if (res)
        res->seconds = fmq_mono_seconds() - t0;
    fmq_free(order);
    fmq_free(mom);
    fmq_free(backup);
    fmq_free(yb);
    return e;
}

/* ------------------------------------------------------------ evaluation */

fmq_err fmq_nn_evaluate(fmq_nn *m, const fmq_dataset *ds, fmq_nn_eval *ev)
{
    fmq_err e;
    memset(ev, 0, sizeof *ev);
    if ((e = check_data(m, ds)))
        return e;
    if (ds->n == 0)
        return FMQ_ERR_INVAL;
    const uint32_t B = 256;
    uint32_t C = m->classes;
    ev->classes = C;
    ev->class_accuracy = fmq_calloc(C, sizeof(double));
    ev->class_count = fmq_calloc(C, sizeof(uint32_t));
    uint32_t *hit = fmq_calloc(C, sizeof(uint32_t));
    uint16_t *yb = fmq_alloc_array(B, sizeof *yb);
    if (!ev->class_accuracy || !ev->class_count || !hit || !yb ||
        (e = ws_reserve_f(&m->wsf, m->layers, m->nl, B))) {
        e = FMQ_ERR_NOMEM;
        goto done;
    }
    double total = 0;
    uint32_t correct = 0;
    size_t dim = m->in_dim;
    for (uint32_t start = 0; start < ds->n; start += B) {
        uint32_t bs = ds->n - start < B ? ds->n - start : B;
        memcpy(m->wsf.act[0], ds->x + (size_t)start * dim,
               (size_t)bs * dim * sizeof(float));
        memcpy(yb, ds->y + start, bs * sizeof *yb);
        if ((e = check_labels(m, yb, bs)))
            goto done;
        forward_f(m->layers, m->nl, m->params, bs, &m->wsf);
        const float *z = m->wsf.act[m->nl];
        total += bs * softmax_xent_f(z, yb, bs, C, NULL, NULL, NULL);
        for (uint32_t s = 0; s < bs; s++) {
            const float *zs = z + (size_t)s * C;
            uint32_t am = 0;
            for (uint32_t c = 1; c < C; c++)
                if (zs[c] > zs[am])
                    am = c;
            ev->class_count[yb[s]]++;
            if (am == yb[s]) {
                hit[yb[s]]++;
                correct++;
            }
        }
    }
    ev->n = ds->n;
    ev->loss = total / ds->n;
    ev->accuracy = (double)correct / ds->n;
    for (uint32_t c = 0; c < C; c++)
        ev->class_accuracy[c] =
            ev->class_count[c] ? (double)hit[c] / ev->class_count[c] : 0;
    e = FMQ_OK;
done:
    fmq_free(hit);
    fmq_free(yb);
    if (e)
        fmq_nn_eval_fini(ev);
    return e;
}

void fmq_nn_eval_fini(fmq_nn_eval *ev)
{
    if (!ev)
        return;
    fmq_free(ev->class_accuracy);
    fmq_free(ev->class_count);
    memset(ev, 0, sizeof *ev);
}
