/*
 * krum:f and multi-krum:f[,m] — Blanchard et al., NeurIPS 2017, "Machine
 * Learning with Adversaries: Byzantine Tolerant Gradient Descent". With n
 * updates of which at most f are hostile, each update i is scored by the
 * sum of its squared L2 distances to its n − f − 2 closest other updates;
 * Krum takes the update with the lowest score, Multi-Krum the unweighted
 * mean of the m lowest (m default n − f; more than n − f is taken as
 * n − f). Needs n >= 2f + 3: the configuration's quorum is checked at
 * start, and a round with fewer updates keeps the model (FMQ_ERR_STATE).
 * Equal scores are ordered by device id, then staleness, so the choice
 * never depends on the order of arrival; distances are summed in
 * coordinate order and the selected updates in device-id order for the
 * same reason. Unweighted: a hostile device can claim any sample count.
 * Memory: the kept updates (~P bytes each for q8) plus n² distances.
 */
#include "strategy_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct krum {
    uint32_t P, f, m; /* m = 0: n − f */
    bool multi;
} krum;

static fmq_err krum_parse(krum *s, const fmq_strategy_cfg *cfg,
                          const char *args, bool multi)
{
    const char *name = multi ? "multi-krum" : "krum";
    s->P = cfg->P;
    s->multi = multi;
    char buf[64] = "";
    if (args)
        snprintf(buf, sizeof buf, "%s", args);
    char *comma = strchr(buf, ',');
    if (comma)
        *comma = 0;
    bool ok = args && fmq_strategy__parse_u32(buf, &s->f);
    s->m = multi ? 0 : 1;
    if (ok && comma)
        ok = multi && fmq_strategy__parse_u32(comma + 1, &s->m) && s->m >= 1;
    if (!ok) {
        fmq_log_err("strategy %s%s%s: give the number of hostile updates it "
                    "tolerates%s",
                    name, args ? ":" : "", args ? args : "",
                    multi ? " and, optionally, how many to average: "
                            "multi-krum:F[,M], e.g. multi-krum:2,5"
                          : ": krum:F, e.g. krum:2");
        return FMQ_ERR_CONFIG;
    }
    uint64_t need = 2 * (uint64_t)s->f + 3;
    if (cfg->quorum && cfg->quorum < need) {
        fmq_log_err("strategy %s: f = %u needs at least 2f + 3 = %llu "
                    "updates per round (Blanchard et al.); the quorum is %u",
                    name, s->f, (unsigned long long)need, cfg->quorum);
        return FMQ_ERR_CONFIG;
    }
    if (cfg->quorum && s->m > cfg->quorum - s->f) {
        fmq_log_err("strategy %s: m = %u is more than quorum - f = %u", name,
                    s->m, cfg->quorum - s->f);
        return FMQ_ERR_CONFIG;
    }
    return FMQ_OK;
}

static fmq_err krum_init(void *st, const fmq_strategy_cfg *cfg,
                         const char *args)
{
    return krum_parse(st, cfg, args, false);
}

static fmq_err multi_krum_init(void *st, const fmq_strategy_cfg *cfg,
                               const char *args)
{
    return krum_parse(st, cfg, args, true);
}

typedef struct cand {
    uint32_t i;
    double score;
    const char *dev;
    uint64_t staleness;
} cand;

static int by_device(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    int c = strcmp(x->dev, y->dev);
    if (c)
        return c;
    return (x->staleness > y->staleness) - (x->staleness < y->staleness);
}

/* by score, ties by device */
static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? -1 : 1;
    return by_device(a, b);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static fmq_err krum_finish(void *st, uint64_t round,
                           const fmq_strategy_batch *batch, float *w,
                           fmq_strategy_result *res)
{
    const krum *s = st;
    const char *name = s->multi ? "multi-krum" : "krum";
    uint32_t n = fmq_strategy_batch_count(batch), P = s->P;
    if (n < 2 * (uint64_t)s->f + 3) {
        fmq_log_warn("strategy %s: round %llu has %u updates, f = %u needs "
                     "%u: the model is kept",
                     name, (unsigned long long)round, n, s->f, 2 * s->f + 3);
        return FMQ_ERR_STATE;
    }
    const uint32_t C = FMQ_STRATEGY__CHUNK;
    double *D = fmq_calloc((size_t)n * n, sizeof *D); // (n, n) distances
    double *row = fmq_alloc_array(n, sizeof *row);
    float *block = fmq_alloc_array((size_t)n * C, sizeof *block);
    cand *c = fmq_calloc(n, sizeof *c);
    double *acc = fmq_alloc_array(C, sizeof *acc);
    fmq_err e = D && row && block && c && acc ? FMQ_OK : FMQ_ERR_NOMEM;
    /* squared distances, a block of coordinates at a time */
    for (uint32_t c0 = 0; !e && c0 < P; c0 += C) {
        uint32_t len = P - c0 < C ? P - c0 : C;
        for (uint32_t j = 0; !e && j < n; j++)
            e = fmq_strategy_batch_decode(batch, j, c0, len,
                                          block + (size_t)j * C);
        for (uint32_t i = 0; !e && i < n; i++)
            for (uint32_t j = i + 1; j < n; j++) {
                const float *a = block + (size_t)i * C;
                const float *b = block + (size_t)j * C;
                double d = 0;
                for (uint32_t k = 0; k < len; k++) {
                    double t = (double)a[k] - (double)b[k];
                    d += t * t;
                }
                D[(size_t)i * n + j] += d;
                D[(size_t)j * n + i] = D[(size_t)i * n + j];
            }
    }
    /* score: the n − f − 2 smallest distances to the others, summed
     * smallest first */
    uint32_t near = n - s->f - 2;
    for (uint32_t i = 0; !e && i < n; i++) {
        uint32_t k = 0;
        for (uint32_t j = 0; j < n; j++)
            if (j != i)
                row[k++] = D[(size_t)i * n + j];
        qsort(row, k, sizeof *row, cmp_double);
        double score = 0;
        for (uint32_t j = 0; j < near; j++)
            score += row[j];
        fmq_strategy_update u;
        fmq_strategy_batch_info(batch, i, &u);
        c[i] = (cand){i, score, u.device, u.staleness};
    }
    uint32_t m = s->m && s->m < n - s->f ? s->m : n - s->f;
    if (!e) {
        qsort(c, n, sizeof *c, cand_cmp);
        qsort(c, m, sizeof *c, by_device); /* the chosen, in id order */
    }
    /* their unweighted mean */
    for (uint32_t c0 = 0; !e && c0 < P; c0 += C) {
        uint32_t len = P - c0 < C ? P - c0 : C;
        for (uint32_t k = 0; k < len; k++)
            acc[k] = 0;
        for (uint32_t j = 0; !e && j < m; j++) {
            e = fmq_strategy_batch_decode(batch, c[j].i, c0, len, block);
            for (uint32_t k = 0; !e && k < len; k++)
                acc[k] += block[k];
        }
        for (uint32_t k = 0; !e && k < len; k++)
            w[c0 + k] += (float)(acc[k] / m);
    }
    if (!e) {
        res->used = m;
        int off = snprintf(res->note, sizeof res->note, "%s %s", name,
                           m == 1 ? "picked" : "averaged");
        for (uint32_t j = 0; j < m && off > 0 && (size_t)off < sizeof res->note;
             j++)
            off += snprintf(res->note + off, sizeof res->note - (size_t)off,
                            "%s%s", j ? "," : " ", c[j].dev);
    }
    fmq_free(D);
    fmq_free(row);
    fmq_free(block);
    fmq_free(c);
    fmq_free(acc);
    return e;
}

const fmq_strategy_ops fmq_strategy__krum = {
    .name = "krum",
    .usage = "krum:F",
    .state_size = sizeof(krum),
    .keeps_updates = true,
    .init = krum_init,
    .finish = krum_finish,
};

const fmq_strategy_ops fmq_strategy__multi_krum = {
    .name = "multi-krum",
    .usage = "multi-krum:F[,M]",
    .state_size = sizeof(krum),
    .keeps_updates = true,
    .init = multi_krum_init,
    .finish = krum_finish,
};
