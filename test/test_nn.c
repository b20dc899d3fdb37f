/*
 * test_nn.c — the training engine: parameter counts and layouts, PyTorch-
 * default initialisation, a finite-difference gradient check of every layer
 * and the loss in double precision, the float kernels against the double
 * ones, the SGD/momentum/weight-decay/FedProx update rule step by step,
 * driving a tiny dataset to zero loss, evaluation, and refusals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "nn.h"

static fmq_nn *make(const char *spec, uint32_t c, uint32_t h, uint32_t w)
{
    fmq_nn *m = NULL;
    assert_int_equal(fmq_nn_new(spec, c, h, w, 10, &m), FMQ_OK);
    fmq_nn_init(m, 42);
    return m;
}

static void parameter_counts_match_the_published_models(void **state)
{
    (void)state;
    fmq_nn *m = make("mlp:128", 1, 28, 28);
    assert_int_equal(fmq_nn_nparams(m), 101770);
    assert_int_equal(fmq_nn_input_dim(m), 784);
    fmq_nn_destroy(&m);
    assert_null(m);
    m = make("cnn", 1, 28, 28);
    assert_int_equal(fmq_nn_nparams(m), 44426);
    /* PyTorch layout: conv1 156, conv2 2416, fc1 30840, fc2 10164, fc3 850 */
    static const size_t want[] = {156, 2416, 30840, 10164, 850};
    size_t off = 0;
    unsigned k = 0;
    for (uint32_t i = 0; i < fmq_nn_nlayers(m); i++) {
        const fmq_nn_layer *L = fmq_nn_layer_at(m, i);
        if (!L->w_len)
            continue;
        assert_int_equal(L->w_off, off);
        assert_int_equal(L->b_off, off + L->w_len);
        assert_int_equal(L->w_len + L->b_len, want[k]);
        off += want[k++];
    }
    assert_int_equal(k, 5);
    const fmq_nn_layer *fc1 = fmq_nn_layer_at(m, 6);
    assert_int_equal(fc1->kind, FMQ_NN_DENSE);
    assert_int_equal(fc1->in_c, 16 * 4 * 4);
    assert_null(fmq_nn_layer_at(m, 11));
    fmq_nn_destroy(&m);
    m = make("logreg", 1, 28, 28);
    assert_int_equal(fmq_nn_nparams(m), 7850);
    fmq_nn_destroy(&m);
    m = make("mlp:200,200", 1, 28, 28);
    assert_int_equal(fmq_nn_nparams(m), 784 * 200 + 200 + 200 * 200 + 200 +
                                            200 * 10 + 10);
    fmq_nn_destroy(&m);
    fmq_nn_destroy(&m); /* NULL is fine */
}

static void bad_specs_are_refused(void **state)
{
    (void)state;
    static const char *bad[] = {"", "mlp", "mlp:", "mlp:0", "mlp:12x",
                                "mlp:10,", "mlp:1,,2", "rnn", "cnn2",
                                "mlp:99999999"};
    fmq_log_set_level(FMQ_LOG_ERR - 1); /* quiet */
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fmq_nn *m = (fmq_nn *)1;
        assert_int_equal(fmq_nn_new(bad[i], 1, 28, 28, 10, &m),
                         FMQ_ERR_CONFIG);
        assert_null(m);
    }
    fmq_nn *m;
    assert_int_equal(fmq_nn_new("cnn", 1, 8, 8, 10, &m), FMQ_ERR_CONFIG);
    assert_int_equal(fmq_nn_new("logreg", 1, 28, 28, 1, &m), FMQ_ERR_CONFIG);
    assert_int_equal(fmq_nn_new(NULL, 1, 28, 28, 10, &m), FMQ_ERR_CONFIG);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

static void initialisation_is_pytorch_default_and_seeded(void **state)
{
    (void)state;
    fmq_nn *a = make("cnn", 1, 28, 28), *b = make("cnn", 1, 28, 28);
    uint32_t P = fmq_nn_nparams(a);
    assert_memory_equal(fmq_nn_params(a), fmq_nn_params(b), P * 4);
    fmq_nn_init(b, 43);
    assert_true(memcmp(fmq_nn_params(a), fmq_nn_params(b), P * 4) != 0);
    for (uint32_t i = 0; i < fmq_nn_nlayers(a); i++) {
        const fmq_nn_layer *L = fmq_nn_layer_at(a, i);
        if (!L->w_len)
            continue;
        double bound = 1 / sqrt((double)(L->w_len / L->out_c));
        double mx = 0, sum = 0, sq = 0;
        const float *w = fmq_nn_params(a) + L->w_off;
        for (size_t j = 0; j < L->w_len + L->b_len; j++) {
            mx = fmax(mx, fabs(w[j]));
            sum += w[j];
            sq += (double)w[j] * w[j];
        }
        size_t n = L->w_len + L->b_len;
        assert_true(mx <= bound);
        assert_true(mx > 0.9 * bound); /* fills the interval */
        /* uniform(-b, b): variance b^2/3 */
        assert_float_equal(sq / n, bound * bound / 3, bound * bound / 3 * 0.2);
        assert_true(fabs(sum / n) < 4 * bound / sqrt(3.0 * n));
    }
    fmq_nn_destroy(&a);
    fmq_nn_destroy(&b);
}

/* Central differences in double on a sample of each layer's weights and
 * biases: relative error below 1e-4. */
static void check_gradient(const char *spec, uint32_t c, uint32_t h,
                           uint32_t w, uint32_t B)
{
    fmq_nn *m = make(spec, c, h, w);
    uint32_t P = fmq_nn_nparams(m), D = fmq_nn_input_dim(m);
    double *p = malloc(P * sizeof *p), *g = malloc(P * sizeof *g);
    double *x = malloc((size_t)B * D * sizeof *x);
    uint16_t *y = malloc(B * sizeof *y);
    fmq_rng r;
    fmq_rng_seed(&r, 7);
    for (uint32_t i = 0; i < P; i++)
        p[i] = fmq_nn_params(m)[i];
    for (size_t i = 0; i < (size_t)B * D; i++)
        x[i] = fmq_rng_double(&r);
    for (uint32_t s = 0; s < B; s++)
        y[s] = (uint16_t)fmq_rng_below(&r, 10);
    double loss;
    assert_int_equal(fmq_nn_loss_grad_f64(m, p, x, y, B, &loss, g), FMQ_OK);
    assert_true(loss > 1.5 && loss < 3.5); /* about ln 10 at init */
    const double eps = 1e-5;
    unsigned checked = 0;
    for (uint32_t l = 0; l < fmq_nn_nlayers(m); l++) {
        const fmq_nn_layer *L = fmq_nn_layer_at(m, l);
        for (int part = 0; part < 2; part++) {
            size_t off = part ? L->b_off : L->w_off;
            size_t len = part ? L->b_len : L->w_len;
            for (int t = 0; t < 12 && len; t++) {
                size_t i = off + fmq_rng_below(&r, len);
                double save = p[i], lp, lm;
                p[i] = save + eps;
                assert_int_equal(
                    fmq_nn_loss_grad_f64(m, p, x, y, B, &lp, NULL), FMQ_OK);
                p[i] = save - eps;
                assert_int_equal(
                    fmq_nn_loss_grad_f64(m, p, x, y, B, &lm, NULL), FMQ_OK);
                p[i] = save;
                double fd = (lp - lm) / (2 * eps);
                double rel = fabs(fd - g[i]) / fmax(fabs(fd) + fabs(g[i]), 1e-7);
                if (rel >= 1e-4)
                    print_error("%s layer %u %s[%zu]: analytic %.10g, "
                                "numeric %.10g\n",
                                spec, l, part ? "b" : "W", i - off, g[i], fd);
                assert_true(rel < 1e-4);
                checked++;
            }
        }
    }
    assert_true(checked >= 24);
    /* the float kernels compute the same gradient */
    float *xf = malloc((size_t)B * D * sizeof *xf), *gf = malloc(P * 4);
    for (size_t i = 0; i < (size_t)B * D; i++)
        xf[i] = (float)x[i];
    double lf;
    assert_int_equal(fmq_nn_loss_grad(m, xf, y, B, &lf, gf), FMQ_OK);
    assert_float_equal(lf, loss, 1e-5 * loss);
    double num = 0, den = 0;
    for (uint32_t i = 0; i < P; i++) {
        num += (gf[i] - g[i]) * (gf[i] - g[i]);
        den += g[i] * g[i];
    }
    assert_true(sqrt(num / den) < 1e-4);
    free(xf);
    free(gf);
    free(p);
    free(g);
    free(x);
    free(y);
    fmq_nn_destroy(&m);
}

static void gradients_match_finite_differences_logreg(void **state)
{
    (void)state;
    check_gradient("logreg", 1, 28, 28, 5);
}

static void gradients_match_finite_differences_mlp(void **state)
{
    (void)state;
    check_gradient("mlp:32,16", 1, 28, 28, 5);
}

static void gradients_match_finite_differences_cnn(void **state)
{
    (void)state;
    check_gradient("cnn", 1, 28, 28, 3);
    check_gradient("cnn", 3, 20, 20, 2); /* several input channels */
}

/* A dataset of n random rows with random labels. */
static void random_dataset(fmq_dataset *ds, uint32_t n, uint32_t dim,
                           uint64_t seed)
{
    fmq_rng r;
    fmq_rng_seed(&r, seed);
    memset(ds, 0, sizeof *ds);
    ds->n = n;
    ds->dim = dim;
    ds->classes = 10;
    ds->c = 1;
    ds->h = 1;
    ds->w = dim;
    ds->x = malloc((size_t)n * dim * sizeof(float));
    ds->y = malloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < (size_t)n * dim; i++)
        ds->x[i] = fmq_rng_float(&r);
    for (uint32_t i = 0; i < n; i++)
        ds->y[i] = (uint16_t)fmq_rng_below(&r, 10);
}

static void sgd_follows_the_torch_update_rule(void **state)
{
    (void)state;
    /* Full batch, two epochs: the shuffle cannot matter, so the result must
     * be two steps of  g' = g + wd*w + mu*(w - w_ref); buf = mom*buf + g';
     * w -= lr*buf  with buf starting at zero. */
    fmq_dataset ds;
    random_dataset(&ds, 16, 20, 3);
    fmq_nn *m, *ref;
    assert_int_equal(fmq_nn_new("mlp:8", 1, 1, 20, 10, &m), FMQ_OK);
    assert_int_equal(fmq_nn_new("mlp:8", 1, 1, 20, 10, &ref), FMQ_OK);
    fmq_nn_init(m, 1);
    fmq_nn_init(ref, 1);
    uint32_t P = fmq_nn_nparams(m);
    float *wref = malloc(P * 4), *g = malloc(P * 4), *buf = calloc(P, 4);
    for (uint32_t i = 0; i < P; i++)
        wref[i] = fmq_nn_params(m)[i] + 0.05f;
    fmq_nn_train_cfg cfg = {.epochs = 2, .batch = 16, .lr = 0.1f,
                            .momentum = 0.9f, .weight_decay = 0.01f,
                            .mu = 0.5f, .w_ref = wref, .seed = 9};
    fmq_nn_train_result res;
    assert_int_equal(fmq_nn_train(m, &ds, NULL, 16, &cfg, &res), FMQ_OK);
    assert_int_equal(res.samples, 32);
    float *w = fmq_nn_params(ref);
    for (int step = 0; step < 2; step++) {
        assert_int_equal(fmq_nn_loss_grad(ref, ds.x, ds.y, 16, NULL, g),
                         FMQ_OK);
        for (uint32_t i = 0; i < P; i++) {
            float gi = g[i] + 0.01f * w[i] + 0.5f * (w[i] - wref[i]);
            buf[i] = 0.9f * buf[i] + gi;
            w[i] -= 0.1f * buf[i];
        }
    }
    for (uint32_t i = 0; i < P; i++)
        assert_float_equal(fmq_nn_params(m)[i], w[i], 1e-5);
    /* FedProx pulls toward w_ref: without it the weights end elsewhere */
    fmq_nn_init(ref, 1);
    cfg.mu = 0;
    assert_int_equal(fmq_nn_train(ref, &ds, NULL, 16, &cfg, &res), FMQ_OK);
    double dprox = 0, dplain = 0;
    for (uint32_t i = 0; i < P; i++) {
        dprox += pow(fmq_nn_params(m)[i] - wref[i], 2);
        dplain += pow(fmq_nn_params(ref)[i] - wref[i], 2);
    }
    assert_true(dprox < dplain);
    free(wref);
    free(g);
    free(buf);
    free(ds.x);
    free(ds.y);
    fmq_nn_destroy(&m);
    fmq_nn_destroy(&ref);
}

static void a_tiny_dataset_is_learned_to_zero_loss(void **state)
{
    (void)state;
    fmq_dataset ds;
    random_dataset(&ds, 40, 64, 5);
    fmq_nn *m;
    assert_int_equal(fmq_nn_new("mlp:64", 1, 8, 8, 10, &m), FMQ_OK);
    fmq_nn_init(m, 2);
    fmq_nn_eval ev;
    assert_int_equal(fmq_nn_evaluate(m, &ds, &ev), FMQ_OK);
    double loss0 = ev.loss;
    fmq_nn_eval_fini(&ev);
    fmq_nn_train_cfg cfg = {.epochs = 300, .batch = 8, .lr = 0.05f,
                            .momentum = 0.9f, .seed = 1};
    fmq_nn_train_result res;
    assert_int_equal(fmq_nn_train(m, &ds, NULL, 40, &cfg, &res), FMQ_OK);
    assert_int_equal(fmq_nn_evaluate(m, &ds, &ev), FMQ_OK);
    assert_true(loss0 > 2.0);
    assert_true(ev.loss < 0.01);
    assert_true(res.loss < 0.02);
    assert_true(ev.accuracy == 1.0);
    fmq_nn_eval_fini(&ev);
    /* the same seed trains to the same weights; a subset trains too */
    fmq_nn *m2;
    assert_int_equal(fmq_nn_new("mlp:64", 1, 8, 8, 10, &m2), FMQ_OK);
    fmq_nn_init(m2, 2);
    assert_int_equal(fmq_nn_train(m2, &ds, NULL, 40, &cfg, &res), FMQ_OK);
    assert_memory_equal(fmq_nn_params(m), fmq_nn_params(m2),
                        fmq_nn_nparams(m) * 4);
    uint32_t idx[3] = {39, 0, 7};
    cfg.epochs = 1;
    assert_int_equal(fmq_nn_train(m2, &ds, idx, 3, &cfg, &res), FMQ_OK);
    assert_int_equal(res.samples, 3);
    free(ds.x);
    free(ds.y);
    fmq_nn_destroy(&m);
    fmq_nn_destroy(&m2);
}

static void evaluation_reports_loss_accuracy_and_per_class(void **state)
{
    (void)state;
    /* logreg with W = 0 and a bias favouring class 3: predicts 3 always */
    fmq_dataset ds;
    random_dataset(&ds, 50, 12, 8);
    fmq_nn *m;
    assert_int_equal(fmq_nn_new("logreg", 1, 3, 4, 10, &m), FMQ_OK);
    float *p = fmq_nn_params(m);
    p[12 * 10 + 3] = 2.0f;
    fmq_nn_eval ev;
    assert_int_equal(fmq_nn_evaluate(m, &ds, &ev), FMQ_OK);
    uint32_t threes = 0;
    for (uint32_t i = 0; i < 50; i++)
        threes += ds.y[i] == 3;
    assert_true(threes > 0);
    assert_float_equal(ev.accuracy, threes / 50.0, 1e-12);
    double lse = log(9 + exp(2.0));
    double want = (threes * (lse - 2) + (50 - threes) * lse) / 50;
    assert_float_equal(ev.loss, want, 1e-6);
    for (uint32_t c = 0; c < 10; c++)
        assert_float_equal(ev.class_accuracy[c],
                           c == 3 && ev.class_count[c] ? 1.0 : 0.0, 1e-12);
    assert_int_equal(ev.class_count[3], threes);
    fmq_nn_eval_fini(&ev);
    free(ds.x);
    free(ds.y);
    fmq_nn_destroy(&m);
}

static void divergence_and_bad_inputs_are_refused(void **state)
{
    (void)state;
    fmq_log_set_level(FMQ_LOG_ERR - 1);
    fmq_dataset ds;
    random_dataset(&ds, 20, 16, 4);
    fmq_nn *m;
    assert_int_equal(fmq_nn_new("mlp:16", 1, 4, 4, 10, &m), FMQ_OK);
    fmq_nn_init(m, 3);
    uint32_t P = fmq_nn_nparams(m);
    float *before = malloc(P * 4);
    memcpy(before, fmq_nn_params(m), P * 4);
    fmq_nn_train_cfg cfg = {.epochs = 5, .batch = 4, .lr = 1e30f, .seed = 1};
    fmq_nn_train_result res;
    assert_int_equal(fmq_nn_train(m, &ds, NULL, 20, &cfg, &res),
                     FMQ_ERR_NONFINITE);
    assert_memory_equal(fmq_nn_params(m), before, P * 4);
    cfg.lr = 0;
    assert_int_equal(fmq_nn_train(m, &ds, NULL, 20, &cfg, &res),
                     FMQ_ERR_INVAL);
    cfg.lr = 0.1f;
    cfg.mu = 0.1f; /* FedProx without a reference */
    assert_int_equal(fmq_nn_train(m, &ds, NULL, 20, &cfg, &res),
                     FMQ_ERR_INVAL);
    cfg.mu = 0;
    uint32_t idx[1] = {20}; /* past the end */
    assert_int_equal(fmq_nn_train(m, &ds, idx, 1, &cfg, &res), FMQ_ERR_INVAL);
    ds.y[5] = 10; /* label outside the model's classes */
    assert_int_equal(fmq_nn_train(m, &ds, NULL, 20, &cfg, &res),
                     FMQ_ERR_INVAL);
    assert_memory_equal(fmq_nn_params(m), before, P * 4);
    ds.y[5] = 0;
    ds.dim = 15; /* shape does not fit */
    fmq_nn_eval ev;
    assert_int_equal(fmq_nn_evaluate(m, &ds, &ev), FMQ_ERR_INVAL);
    free(before);
    free(ds.x);
    free(ds.y);
    fmq_nn_destroy(&m);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

static void blas_and_portable_kernels_agree(void **state)
{
    (void)state;
    if (!fmq_nn_have_blas()) {
        assert_false(fmq_nn_set_blas(true));
        skip();
    }
    fmq_nn *m = make("cnn", 1, 28, 28);
    uint32_t P = fmq_nn_nparams(m), B = 7;
    float *x = malloc(B * 784 * 4), *g1 = malloc(P * 4), *g2 = malloc(P * 4);
    uint16_t y[7] = {0, 1, 2, 3, 4, 5, 9};
    fmq_rng r;
    fmq_rng_seed(&r, 1);
    for (uint32_t i = 0; i < B * 784; i++)
        x[i] = fmq_rng_float(&r);
    double l1, l2;
    assert_true(fmq_nn_set_blas(true));
    assert_int_equal(fmq_nn_loss_grad(m, x, y, B, &l1, g1), FMQ_OK);
    assert_false(fmq_nn_set_blas(false));
    assert_int_equal(fmq_nn_loss_grad(m, x, y, B, &l2, g2), FMQ_OK);
    fmq_nn_set_blas(true);
    assert_float_equal(l1, l2, 1e-5);
    for (uint32_t i = 0; i < P; i++)
        assert_float_equal(g1[i], g2[i], 1e-5 + 1e-3 * fabsf(g2[i]));
    free(x);
    free(g1);
    free(g2);
    fmq_nn_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parameter_counts_match_the_published_models),
        cmocka_unit_test(bad_specs_are_refused),
        cmocka_unit_test(initialisation_is_pytorch_default_and_seeded),
        cmocka_unit_test(gradients_match_finite_differences_logreg),
        cmocka_unit_test(gradients_match_finite_differences_mlp),
        cmocka_unit_test(gradients_match_finite_differences_cnn),
        cmocka_unit_test(sgd_follows_the_torch_update_rule),
        cmocka_unit_test(a_tiny_dataset_is_learned_to_zero_loss),
        cmocka_unit_test(evaluation_reports_loss_accuracy_and_per_class),
        cmocka_unit_test(divergence_and_bad_inputs_are_refused),
        cmocka_unit_test(blas_and_portable_kernels_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
