/*
 * test_strategy.c — every aggregation strategy (aggregator/strategy.h)
 * against the weights an independent numpy reference computed from the same
 * update bytes (test/strategy_ref.py; its output is stored in
 * test/strategy_vectors.h, and one case here re-runs the script to check
 * that the stored file is still what it computes). The cases cover sample
 * weights, late updates, a single update, identical updates, every scheme
 * in one round, ties (an even median, equal values, equal Krum scores),
 * server optimizers over three rounds, FedBuff's staleness weights, Krum
 * against two hostile updates, trimmed means whose β·n is not an integer,
 * the norm bound (fixed or a median multiple, reject or clip), and
 * DP-FedAvg's clipping. Then, on the same cases: the arrival order does
 * not matter (robust strategies bit for bit), a save and load after every
 * update and between rounds gives the same bits, NaN is refused before any
 * strategy sees it, DP noise has the stated statistics and comes from the
 * seed, parameters and ops tables are checked, and configure writes the
 * round's instructions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strategy.h"
#include "strategy_vectors.h"

/* ------------------------------------------------------------- helpers */

/* An update of a vector case as a tensor view; scales go to LE bytes. */
typedef struct built {
    fmq_qtensor q;
    uint8_t scales[4 * SV_P];
} built;

static void build(const sv_update *u, built *b)
{
    for (uint32_t i = 0; i < u->nscales; i++)
        fmq_store_f32le(b->scales + 4 * i, u->scales[i]);
    assert_int_equal(fmq_qtensor_view(&b->q, (fmq_scheme)u->scheme, u->block,
                                      SV_P, u->codes, u->codes_len,
                                      u->nscales ? b->scales : NULL,
                                      4 * (size_t)u->nscales),
                     FMQ_OK);
}

static fmq_strategy_hparams hp_of(const sv_hp *h)
{
    fmq_strategy_hparams hp = fmq_strategy_hparams_none();
    hp.server_lr = h->server_lr;
    hp.beta1 = h->beta1;
    hp.beta2 = h->beta2;
    hp.tau_adapt = h->tau_adapt;
    hp.server_momentum = h->server_momentum;
    hp.mu = h->mu;
    hp.buffer_k = h->buffer_k;
    hp.dp_clip = h->dp_clip;
    hp.dp_noise = h->dp_noise;
    hp.dp_seed = h->dp_seed ? h->dp_seed : 1;
    return hp;
}

static fmq_strategy_cfg cfg_of(const sv_case *c)
{
    fmq_strategy_cfg cfg = {
        .spec = c->spec,
        .hp = hp_of(&c->hp),
        .P = SV_P,
        .round = 1,
        .cohort_size = c->cohort,
        .quorum = c->quorum,
        .max_staleness = c->max_staleness,
        .norm_bound = c->norm_bound,
        .norm_median = c->norm_median,
        .norm_action = c->norm_clip ? FMQ_NORM_CLIP : FMQ_NORM_REJECT,
    };
    return cfg;
}

static fmq_strategy *open_case(const sv_case *c)
{
    fmq_strategy_cfg cfg = cfg_of(c);
    fmq_strategy *s = NULL;
    assert_int_equal(fmq_strategy_new(&cfg, &s), FMQ_OK);
    return s;
}

/* Save, destroy, open and load again: a crash and a restart. */
static fmq_strategy *restart(const sv_case *c, fmq_strategy *s)
{
    fmq_wr w;
    fmq_wr_init(&w);
    fmq_strategy_save(s, &w);
    assert_int_equal(w.e, FMQ_OK);
    fmq_strategy_destroy(&s);
    fmq_strategy *n = open_case(c);
    fmq_rd r = {w.b.data, w.b.len, false};
    assert_int_equal(fmq_strategy_load(n, &r), FMQ_OK);
    assert_false(r.bad);
    assert_int_equal(r.left, 0);
    fmq_wr_fini(&w);
    return n;
}

enum { ORDER_GIVEN, ORDER_REVERSED, ORDER_SHUFFLED };

/* Runs case c; out (nrounds × SV_P) gets the weights after each round.
 * Checks the rejections and counts the reference expects. */
static void run_case(const sv_case *c, int order, bool restarts, float *out)
{
    fmq_strategy *s = open_case(c);
    float w[SV_P];
    memcpy(w, c->w0, sizeof w);
    fmq_rng rng;
    fmq_rng_seed(&rng, 99);
    for (uint32_t r = 0; r < c->nrounds; r++) {
        const sv_round *rd = &c->rounds[r];
        uint32_t idx[128];
        assert_true(rd->n <= 128);
        for (uint32_t i = 0; i < rd->n; i++)
            idx[i] = order == ORDER_REVERSED ? rd->n - 1 - i : i;
        if (order == ORDER_SHUFFLED)
            fmq_rng_shuffle_u32(&rng, idx, rd->n);
        for (uint32_t k = 0; k < rd->n; k++) {
            const sv_update *u = &rd->u[idx[k]];
            built b;
            build(u, &b);
            double norm;
            fmq_err e = fmq_strategy_check(s, &b.q, &norm);
            if (u->reject) {
                assert_string_equal(fmq_errname(e), u->reject);
                continue;
            }
            assert_int_equal(e, FMQ_OK);
            fmq_strategy_update su = {u->dev, &b.q, u->samples, u->staleness,
                                      norm};
            assert_int_equal(fmq_strategy_add(s, &su), FMQ_OK);
            if (restarts)
                s = restart(c, s);
        }
        if (fmq_strategy_async(s))
            assert_true(fmq_strategy_ready(s));
        fmq_strategy_result res;
        assert_int_equal(fmq_strategy_finish(s, r + 1, w, &res), FMQ_OK);
        assert_int_equal(res.used, rd->used);
        assert_int_equal(res.norm_rejected, rd->norm_rejected);
        memcpy(out + (size_t)r * SV_P, w, sizeof w);
        if (restarts)
            s = restart(c, s);
    }
    fmq_strategy_destroy(&s);
}

static bool keeps(const sv_case *c)
{
    char name[64];
    snprintf(name, sizeof name, "%s", c->spec);
    char *colon = strchr(name, ':');
    if (colon)
        *colon = 0;
    return fmq_strategy_find(name)->keeps_updates;
}

/* --------------------------------------------------------------- cases */

static void every_strategy_matches_the_numpy_reference(void **state)
{
    (void)state;
    fmq_log_set_level(FMQ_LOG_ERR);
    for (unsigned ci = 0; ci < SV_NCASES; ci++) {
        const sv_case *c = &sv_cases[ci];
        float *got = malloc((size_t)c->nrounds * SV_P * sizeof *got);
        run_case(c, ORDER_GIVEN, false, got);
        double worst = 0;
        for (uint32_t r = 0; r < c->nrounds; r++)
            for (uint32_t i = 0; i < SV_P; i++) {
                double want = c->rounds[r].expect[i];
                double err = fabs(got[(size_t)r * SV_P + i] - want);
                double tol = c->atol + c->rtol * fabs(want);
                if (err > worst)
                    worst = err;
                if (err > tol)
                    fail_msg("case %u (%s): round %u, w[%u] = %.9g, the "
                             "reference %.9g (tolerance %.3g)",
                             ci, c->name, r + 1, i,
                             got[(size_t)r * SV_P + i], want, tol);
            }
        print_message("  %-70.70s max |err| %.2g\n", c->name, worst);
        free(got);
    }
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

static void the_stored_vectors_are_what_the_numpy_reference_computes(void **s)
{
    (void)s;
    int rc = system("/usr/bin/python3 test/strategy_ref.py --check "
                    "test/strategy_vectors.h");
    assert_int_equal(rc, 0);
}

static void aggregation_does_not_depend_on_arrival_order(void **state)
{
    (void)state;
    fmq_log_set_level(FMQ_LOG_ERR);
    for (unsigned ci = 0; ci < SV_NCASES; ci++) {
        const sv_case *c = &sv_cases[ci];
        size_t n = (size_t)c->nrounds * SV_P;
        float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b),
              *d = malloc(n * sizeof *d);
        run_case(c, ORDER_GIVEN, false, a);
        run_case(c, ORDER_REVERSED, false, b);
        run_case(c, ORDER_SHUFFLED, false, d);
        if (keeps(c)) {
            /* sorted values, distances in coordinate order, ties by id */
            assert_memory_equal(a, b, n * sizeof *a);
            assert_memory_equal(a, d, n * sizeof *a);
        } else {
            /* float sums in another order: the last bits only */
            for (size_t i = 0; i < n; i++) {
                assert_float_equal(a[i], b[i], 1e-6 * (1 + fabs(a[i])));
                assert_float_equal(a[i], d[i], 1e-6 * (1 + fabs(a[i])));
            }
        }
        free(a);
        free(b);
        free(d);
    }
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

static void a_restart_after_any_update_gives_the_same_bits(void **state)
{
    (void)state;
    fmq_log_set_level(FMQ_LOG_ERR);
    for (unsigned ci = 0; ci < SV_NCASES; ci++) {
        const sv_case *c = &sv_cases[ci];
        size_t n = (size_t)c->nrounds * SV_P;
        float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
        run_case(c, ORDER_GIVEN, false, a);
        run_case(c, ORDER_GIVEN, true, b);
        if (memcmp(a, b, n * sizeof *a))
            fail_msg("case %u (%s): a restart changed the result", ci,
                     c->name);
        free(a);
        free(b);
    }
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

static fmq_strategy_cfg plain_cfg(const char *spec, uint32_t P)
{
    fmq_strategy_cfg c = {.spec = spec, .hp = fmq_strategy_hparams_none(),
                          .P = P, .round = 1, .cohort_size = 10,
                          .quorum = 10, .max_staleness = 2};
    c.hp.dp_seed = 5;
    return c;
}

static void nan_and_infinity_are_refused_before_any_strategy(void **state)
{
    (void)state;
    static const char *specs[] = {"fedavg", "fedadam", "fedbuff", "median",
                                  "krum:1", "dp-fedavg"};
    float x[8] = {0.1f, -0.2f, 0.3f, 0, 0, 0, 0, 0};
    uint8_t codes[32], scales[4];
    for (unsigned k = 0; k < sizeof specs / sizeof specs[0]; k++) {
        fmq_strategy_cfg cfg = plain_cfg(specs[k], 8);
        fmq_strategy *s;
        assert_int_equal(fmq_strategy_new(&cfg, &s), FMQ_OK);
        double norm;
        /* f32 with a NaN, made by hand: a decoder would refuse it first */
        for (int bad = 0; bad < 2; bad++) {
            x[5] = bad ? INFINITY : NAN;
            for (int i = 0; i < 8; i++)
                fmq_store_f32le(codes + 4 * i, x[i]);
            fmq_qtensor q = {.scheme = FMQ_Q_F32, .n = 8, .codes = codes,
                             .codes_len = 32};
            assert_int_equal(fmq_strategy_check(s, &q, &norm),
                             FMQ_ERR_NONFINITE);
        }
        /* q8 with a NaN scale */
        memset(codes, 1, 8);
        fmq_store_f32le(scales, NAN);
        fmq_qtensor q8 = {.scheme = FMQ_Q_Q8, .block = 8, .n = 8,
                          .codes = codes, .codes_len = 8, .scales = scales,
                          .scales_len = 4};
        assert_int_equal(fmq_strategy_check(s, &q8, &norm),
                         FMQ_ERR_NONFINITE);
        /* the wrong length */
        q8.n = 7;
        assert_int_equal(fmq_strategy_check(s, &q8, &norm), FMQ_ERR_MODEL);
        assert_int_equal(fmq_strategy_count(s), 0);
        fmq_strategy_destroy(&s);
        assert_null(s);
    }
}

/* DP-FedAvg: w' - w - (clipped sum)/cohort is Gaussian with std z·S/cohort,
 * and the same seed gives the same noise. */
static void dp_fedavg_noise_has_the_stated_spread_and_comes_from_the_seed(
    void **state)
{
    (void)state;
    enum { NP = 20000, NU = 6 };
    const double S = 0.5, z = 1.3;
    const uint32_t cohort = 8;
    float *x = malloc(NP * sizeof *x), *sum = calloc(NP, sizeof *sum);
    float *w1 = calloc(NP, sizeof *w1), *w2 = calloc(NP, sizeof *w2),
          *w3 = calloc(NP, sizeof *w3);
    fmq_qtensor q[NU];
    fmq_rng rng;
    fmq_rng_seed(&rng, 3);
    for (int k = 0; k < NU; k++) {
        /* norms from about 0.14 to 1.4: some clipped to S, some not */
        double sd = 0.001 * (1 + 1.8 * k);
        for (int i = 0; i < NP; i++)
            x[i] = (float)(sd * fmq_rng_normal(&rng));
        fmq_quant_cfg qc = {FMQ_Q_Q8, 64, false};
        assert_int_equal(fmq_quant_encode(&qc, x, NP, NULL, &q[k]), FMQ_OK);
        double n = sqrt(fmq_quant_sqnorm(&q[k])), f = n > S ? S / n : 1;
        float *dec = malloc(NP * sizeof *dec);
        assert_int_equal(fmq_quant_decode(&q[k], dec), FMQ_OK);
        for (int i = 0; i < NP; i++)
            sum[i] += (float)(f * dec[i]);
        free(dec);
    }
    float *outs[3] = {w1, w2, w3};
    uint64_t seeds[3] = {11, 11, 12};
    uint32_t clipped = 0;
    for (int t = 0; t < 3; t++) {
        fmq_strategy_cfg cfg = plain_cfg("dp-fedavg", NP);
        cfg.cohort_size = cohort;
        cfg.hp.dp_clip = S;
        cfg.hp.dp_noise = z;
        cfg.hp.dp_seed = seeds[t];
        fmq_strategy *s;
        assert_int_equal(fmq_strategy_new(&cfg, &s), FMQ_OK);
        for (int k = 0; k < NU; k++) {
            double norm;
            assert_int_equal(fmq_strategy_check(s, &q[k], &norm), FMQ_OK);
            fmq_strategy_update u = {"d", &q[k], 100, 0, norm};
            assert_int_equal(fmq_strategy_add(s, &u), FMQ_OK);
            clipped += t == 0 && norm > S;
        }
        fmq_strategy_result res;
        assert_int_equal(fmq_strategy_finish(s, 4, outs[t], &res), FMQ_OK);
        assert_float_equal(res.dp_clip, S, 0);
        assert_float_equal(res.dp_noise, z, 0);
        assert_non_null(strstr(res.note, "clipped"));
        fmq_strategy_destroy(&s);
    }
    assert_in_range(clipped, 1, NU - 1);
    /* w0 = 0: the noise is w·cohort − sum, expected N(0, (z·S)²) */
    double m = 0, m2 = 0;
    for (int i = 0; i < NP; i++) {
        double e = (double)w1[i] * cohort - sum[i];
        m += e;
        m2 += e * e;
    }
    m /= NP;
    double sd = sqrt(m2 / NP - m * m);
    print_message("  dp noise: mean %.4f, std %.4f (want 0, %.4f)\n", m, sd,
                  z * S);
    assert_true(fabs(m) < 4 * z * S / sqrt(NP));
    assert_true(fabs(sd / (z * S) - 1) < 0.03);
    assert_memory_equal(w1, w2, NP * sizeof *w1); /* same seed */
    assert_true(memcmp(w1, w3, NP * sizeof *w1) != 0);
    for (int k = 0; k < NU; k++)
        fmq_qtensor_fini(&q[k]);
    free(x);
    free(sum);
    free(w1);
    free(w2);
    free(w3);
}

static void parameters_are_checked_at_start(void **state)
{
    (void)state;
    fmq_log_set_level(FMQ_LOG_ERR - 1); /* quiet: refusals log */
    static const struct {
        const char *spec;
        uint32_t quorum;
        bool ok;
    } t[] = {
        {NULL, 10, true},          {"fedavg", 10, true},
        {"fedavg:1", 10, false},   {"fedx", 10, false},
        {"krum", 10, false},       {"krum:", 10, false},
        {"krum:x", 10, false},     {"krum:3", 10, true},
        {"krum:4", 10, false},     /* 2f + 3 = 11 > quorum 10 */
        {"multi-krum:2", 10, true}, {"multi-krum:2,8", 10, true},
        {"multi-krum:2,9", 10, false}, {"multi-krum:2,0", 10, false},
        {"krum:2,3", 10, false},   {"trimmed-mean", 10, true},
        {"trimmed-mean:0.49", 10, true}, {"trimmed-mean:0.5", 10, false},
        {"trimmed-mean:-0.1", 10, false}, {"trimmed-mean:abc", 10, false},
        {"median:1", 10, false},   {"dp-fedavg", 10, true},
        {"fedbuff", 10, true},     {"fedadam", 10, true},
    };
    for (unsigned i = 0; i < sizeof t / sizeof t[0]; i++) {
        fmq_strategy_cfg cfg = plain_cfg(t[i].spec, 10);
        cfg.quorum = t[i].quorum;
        fmq_strategy *s = NULL;
        fmq_err e = fmq_strategy_new(&cfg, &s);
        if ((e == FMQ_OK) != t[i].ok)
            fail_msg("spec %s: %s", t[i].spec ? t[i].spec : "(none)",
                     fmq_strerror(e));
        if (e)
            assert_int_equal(e, FMQ_ERR_CONFIG);
        if (!e && !t[i].spec)
            assert_string_equal(fmq_strategy_name(s), "fedavg");
        fmq_strategy_destroy(&s);
    }
    /* hyper-parameters out of range, and the norm settings */
    fmq_strategy_cfg cfg = plain_cfg("fedadam", 10);
    fmq_strategy *s = NULL;
    cfg.hp.beta1 = 1.0;
    assert_int_equal(fmq_strategy_new(&cfg, &s), FMQ_ERR_CONFIG);
    cfg = plain_cfg("fedadam", 10);
    cfg.hp.server_lr = 0;
    assert_int_equal(fmq_strategy_new(&cfg, &s), FMQ_ERR_CONFIG);
    cfg = plain_cfg("dp-fedavg", 10);
    cfg.hp.dp_clip = -1;
    assert_int_equal(fmq_strategy_new(&cfg, &s), FMQ_ERR_CONFIG);
    cfg = plain_cfg("fedavg", 10);
    cfg.norm_median = 0.5;
    assert_int_equal(fmq_strategy_new(&cfg, &s), FMQ_ERR_CONFIG);
    cfg.norm_median = 0;
    cfg.norm_bound = -1;
    assert_int_equal(fmq_strategy_new(&cfg, &s), FMQ_ERR_CONFIG);
    /* a value a strategy does not use is ignored */
    cfg = plain_cfg("median", 10);
    cfg.hp.beta1 = 7;
    assert_int_equal(fmq_strategy_new(&cfg, &s), FMQ_OK);
    fmq_strategy_destroy(&s);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

/* Ops tables for the checks: one that is fine, then each promise broken. */
static fmq_err t_init(void *st, const fmq_strategy_cfg *c, const char *a)
{
    return FMQ_OK;
}
static fmq_err t_add(void *st, const fmq_strategy_update *u)
{
    return FMQ_OK;
}
static bool t_ready(const void *st) { return false; }
static fmq_err t_finish(void *st, uint64_t r, const fmq_strategy_batch *b,
                        float *w, fmq_strategy_result *res)
{
    return FMQ_OK;
}
static void t_save(const void *st, fmq_wr *w) {}

static void the_core_checks_an_ops_table_once(void **state)
{
    (void)state;
    fmq_log_set_level(FMQ_LOG_ERR - 1);
    const fmq_strategy_ops good = {.name = "mine", .init = t_init,
                                   .add = t_add, .finish = t_finish};
    fmq_strategy_cfg cfg = plain_cfg(NULL, 4);
    fmq_strategy *s = NULL;
    assert_int_equal(fmq_strategy_new_with(&good, &cfg, NULL, &s), FMQ_OK);
    assert_string_equal(fmq_strategy_spec(s), "mine");
    fmq_strategy_destroy(&s);
    fmq_strategy_ops bad[7];
    for (int i = 0; i < 7; i++)
        bad[i] = good;
    bad[0].name = "not an id";
    bad[1].init = NULL;
    bad[2].finish = NULL;
    bad[3].add = NULL; /* a streaming strategy without add */
    bad[4].async = true; /* without ready */
    bad[5].save = t_save; /* save without load and a version */
    bad[6].async = bad[6].keeps_updates = true;
    bad[6].ready = t_ready;
    for (int i = 0; i < 7; i++)
        assert_int_equal(fmq_strategy_new_with(&bad[i], &cfg, NULL, &s),
                         FMQ_ERR_CONFIG);
    /* keeping updates, add may be left out */
    fmq_strategy_ops kept = good;
    kept.add = NULL;
    kept.keeps_updates = true;
    assert_int_equal(fmq_strategy_new_with(&kept, &cfg, NULL, &s), FMQ_OK);
    fmq_strategy_destroy(&s);
    /* every table entry passes */
    for (unsigned i = 0; fmq_strategy_at(i); i++) {
        const fmq_strategy_ops *o = fmq_strategy_at(i);
        assert_ptr_equal(fmq_strategy_find(o->name), o);
        assert_non_null(o->usage);
    }
    assert_null(fmq_strategy_find("nope"));
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

static void configure_writes_the_round_instructions(void **state)
{
    (void)state;
    fmq_msg_global g;
    fmq_strategy *s;
    /* fedprox sends mu: the default, then a given one */
    for (int given = 0; given < 2; given++) {
        fmq_strategy_cfg cfg = plain_cfg("fedprox", 4);
        if (given)
            cfg.hp.mu = 0.25;
        assert_int_equal(fmq_strategy_new(&cfg, &s), FMQ_OK);
        fmq_msg_global_init(&g);
        fmq_strategy_configure(s, &g);
        assert_string_equal(g.strategy, "fedprox");
        assert_float_equal(g.train.mu, given ? 0.25f : 0.01f, 0);
        assert_false(g.async);
        fmq_strategy_destroy(&s);
    }
    /* fedbuff: asynchronous, its staleness bound, no deadline */
    fmq_strategy_cfg cfg = plain_cfg("fedbuff", 4);
    cfg.max_staleness = 4;
    assert_int_equal(fmq_strategy_new(&cfg, &s), FMQ_OK);
    fmq_msg_global_init(&g);
    g.deadline_ms = 1234;
    fmq_strategy_configure(s, &g);
    assert_true(g.async);
    assert_int_equal(g.max_staleness, 4);
    assert_int_equal(g.deadline_ms, 0);
    assert_true(fmq_strategy_async(s));
    fmq_strategy_destroy(&s);
    /* the others name themselves and leave mu alone */
    for (unsigned i = 0; fmq_strategy_at(i); i++) {
        const char *name = fmq_strategy_at(i)->name;
        if (!strcmp(name, "fedprox") || !strcmp(name, "fedbuff"))
            continue;
        char spec[64];
        snprintf(spec, sizeof spec, "%s%s", name,
                 strstr(name, "krum") ? ":1" : "");
        cfg = plain_cfg(spec, 4);
        assert_int_equal(fmq_strategy_new(&cfg, &s), FMQ_OK);
        fmq_msg_global_init(&g);
        g.train.mu = 0;
        fmq_strategy_configure(s, &g);
        assert_string_equal(g.strategy, name);
        assert_float_equal(g.train.mu, 0, 0);
        assert_false(g.async);
        assert_false(fmq_strategy_async(s));
        fmq_strategy_destroy(&s);
    }
}

/* Krum with fewer than 2f + 3 updates cannot choose: the model is kept. */
static void krum_with_too_few_updates_keeps_the_model(void **state)
{
    (void)state;
    fmq_log_set_level(FMQ_LOG_ERR);
    const sv_case *c = &sv_cases[0]; /* five q8 updates */
    fmq_strategy_cfg cfg = plain_cfg("krum:1", SV_P);
    cfg.quorum = 0;
    fmq_strategy *s;
    assert_int_equal(fmq_strategy_new(&cfg, &s), FMQ_OK);
    for (uint32_t k = 0; k < 4; k++) {
        built b;
        build(&c->rounds[0].u[k], &b);
        double norm;
        assert_int_equal(fmq_strategy_check(s, &b.q, &norm), FMQ_OK);
        fmq_strategy_update u = {c->rounds[0].u[k].dev, &b.q, 1, 0, norm};
        assert_int_equal(fmq_strategy_add(s, &u), FMQ_OK);
    }
    float w[SV_P];
    memcpy(w, c->w0, sizeof w);
    fmq_strategy_result res;
    assert_int_equal(fmq_strategy_finish(s, 1, w, &res), FMQ_ERR_STATE);
    assert_memory_equal(w, c->w0, sizeof w);
    /* the next round starts empty */
    assert_int_equal(fmq_strategy_count(s), 0);
    fmq_strategy_destroy(&s);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

/* FedBuff closes a version at K updates, not before. */
static void fedbuff_is_ready_at_k_updates(void **state)
{
    (void)state;
    const sv_case *c = &sv_cases[0];
    fmq_strategy_cfg cfg = plain_cfg("fedbuff", SV_P);
    cfg.hp.buffer_k = 3;
    fmq_strategy *s;
    assert_int_equal(fmq_strategy_new(&cfg, &s), FMQ_OK);
    for (uint32_t k = 0; k < 3; k++) {
        assert_false(fmq_strategy_ready(s));
        built b;
        build(&c->rounds[0].u[k], &b);
        double norm;
        assert_int_equal(fmq_strategy_check(s, &b.q, &norm), FMQ_OK);
        fmq_strategy_update u = {"d", &b.q, 1, k, norm};
        assert_int_equal(fmq_strategy_add(s, &u), FMQ_OK);
    }
    assert_true(fmq_strategy_ready(s));
    float w[SV_P] = {0};
    fmq_strategy_result res;
    assert_int_equal(fmq_strategy_finish(s, 1, w, &res), FMQ_OK);
    assert_false(fmq_strategy_ready(s));
    assert_int_equal(res.used, 3);
    fmq_strategy_destroy(&s);
}

static void a_checkpoint_section_of_another_strategy_is_refused(void **st)
{
    (void)st;
    fmq_log_set_level(FMQ_LOG_ERR - 1);
    fmq_strategy_cfg a = plain_cfg("fedadam", 8), b = plain_cfg("fedyogi", 8);
    fmq_strategy *sa, *sb;
    assert_int_equal(fmq_strategy_new(&a, &sa), FMQ_OK);
    assert_int_equal(fmq_strategy_new(&b, &sb), FMQ_OK);
    fmq_wr w;
    fmq_wr_init(&w);
    fmq_strategy_save(sa, &w);
    fmq_rd r = {w.b.data, w.b.len, false};
    assert_int_equal(fmq_strategy_load(sb, &r), FMQ_ERR_DATA);
    /* truncated anywhere */
    for (size_t cut = 0; cut < w.b.len; cut += 7) {
        fmq_strategy_destroy(&sa);
        assert_int_equal(fmq_strategy_new(&a, &sa), FMQ_OK);
        fmq_rd t = {w.b.data, cut, false};
        assert_int_equal(fmq_strategy_load(sa, &t), FMQ_ERR_DATA);
    }
    /* another P */
    fmq_strategy_cfg a9 = plain_cfg("fedadam", 9);
    fmq_strategy *s9;
    assert_int_equal(fmq_strategy_new(&a9, &s9), FMQ_OK);
    fmq_rd r9 = {w.b.data, w.b.len, false};
    assert_int_equal(fmq_strategy_load(s9, &r9), FMQ_ERR_DATA);
    fmq_strategy_destroy(&s9);
    fmq_wr_fini(&w);
    fmq_strategy_destroy(&sa);
    fmq_strategy_destroy(&sb);
    fmq_log_set_level(FMQ_LOG_NOTICE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_strategy_matches_the_numpy_reference),
        cmocka_unit_test(
            the_stored_vectors_are_what_the_numpy_reference_computes),
        cmocka_unit_test(aggregation_does_not_depend_on_arrival_order),
        cmocka_unit_test(a_restart_after_any_update_gives_the_same_bits),
        cmocka_unit_test(nan_and_infinity_are_refused_before_any_strategy),
        cmocka_unit_test(
            dp_fedavg_noise_has_the_stated_spread_and_comes_from_the_seed),
        cmocka_unit_test(parameters_are_checked_at_start),
        cmocka_unit_test(the_core_checks_an_ops_table_once),
        cmocka_unit_test(configure_writes_the_round_instructions),
        cmocka_unit_test(krum_with_too_few_updates_keeps_the_model),
        cmocka_unit_test(fedbuff_is_ready_at_k_updates),
        cmocka_unit_test(a_checkpoint_section_of_another_strategy_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
