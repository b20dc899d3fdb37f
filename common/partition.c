/*
 * partition.c — NIID-Bench's four ways of splitting a dataset across
 * parties (Li et al., ICDE 2022, §IV-A; their partition_data in utils.py):
 * homogeneous, Dirichlet label skew, #C=k label quantity skew and Dirichlet
 * quantity skew. Each scheme assigns every sample an owner (or none, for a
 * label that no party holds under labels:k); a counting sort by owner then
 * gives the (parties+1,) offsets and the index array, and each party's
 * indices are shuffled so that no scheme leaves them grouped by label.
 */
#include "partition.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Redraw bounds. A label-skew attempt is a pass over every sample; a
 * quantity-skew attempt is one (parties,) Dirichlet draw, and a small β
 * over many parties needs many: quantity:0.5 over 100 parties of 60,000
 * succeeds about once in 200,000 draws (NIID-Bench loops the same way,
 * without a bound). */
#define MAX_ATTEMPTS       1000
#define MAX_QUANTITY_DRAWS 1000000
#define NO_OWNER           UINT32_MAX

typedef enum { P_IID, P_DIRICHLET, P_LABELS, P_QUANTITY } part_kind;

typedef struct part_spec {
    part_kind kind;
    double beta; /* dirichlet:, quantity: */
    uint32_t k;  /* labels: */
} part_spec;

/* ------------------------------------------------------------- parsing */

static bool parse_beta(const char *s, double *beta)
{
    if (!((*s >= '0' && *s <= '9') || *s == '.'))
        return false; /* no sign, no blanks, no "inf"/"nan" */
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno == ERANGE || !isfinite(v) || v <= 0)
        return false;
    *beta = v;
    return true;
}

static bool parse_uint(const char *s, uint32_t *k)
{
    uint64_t v = 0;
    if (!*s)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > UINT32_MAX)
            return false;
    }
    *k = (uint32_t)v;
    return true;
}

static fmq_err parse_spec(const char *spec, uint32_t classes, part_spec *ps)
{
    memset(ps, 0, sizeof *ps);
    if (!spec) {
        fmq_log_err("partition: no spec (want iid, dirichlet:β, labels:k "
                    "or quantity:β)");
        return FMQ_ERR_CONFIG;
    }
    if (strcmp(spec, "iid") == 0) {
        ps->kind = P_IID;
        return FMQ_OK;
    }
    if (strncmp(spec, "dirichlet:", 10) == 0 ||
        strncmp(spec, "quantity:", 9) == 0) {
        bool dir = spec[0] == 'd';
        ps->kind = dir ? P_DIRICHLET : P_QUANTITY;
        if (!parse_beta(spec + (dir ? 10 : 9), &ps->beta)) {
            fmq_log_err("partition spec '%s': β must be a positive finite "
                        "number, as in %s:0.5",
                        spec, dir ? "dirichlet" : "quantity");
            return FMQ_ERR_CONFIG;
        }
        return FMQ_OK;
    }
    if (strncmp(spec, "labels:", 7) == 0) {
        ps->kind = P_LABELS;
        if (!parse_uint(spec + 7, &ps->k) || ps->k == 0 || ps->k > classes) {
            fmq_log_err("partition spec '%s': k must be an integer from 1 to "
                        "the number of classes (%u)",
                        spec, classes);
            return FMQ_ERR_CONFIG;
        }
        return FMQ_OK;
    }
    fmq_log_err("partition spec '%s' unknown (want iid, dirichlet:β, "
                "labels:k or quantity:β)",
                spec);
    return FMQ_ERR_CONFIG;
}

/* ----------------------------------------------------------- dirichlet */

/* p ~ Dir(β·1ₙ) from n gamma draws, restricted to the parties where
 * eligible[j] (NULL: all) and renormalised over them; p_j = 0 elsewhere.
 * At least one party must be eligible. The draws are kept as logarithms:
 * for β < 1 a gamma variate is Gamma(β+1)·U^(1/β) (Marsaglia & Tsang's
 * boost, as fmq_rng_gamma does it), and U^(1/β) underflows to 0 for small
 * β, which would leave nothing to renormalise. All n variates are drawn
 * whatever the mask, as numpy.random.dirichlet does before NIID-Bench
 * zeroes the full parties. lg is (n,) scratch. */
static void dirichlet_draw(fmq_rng *r, double beta, uint32_t n,
                           const bool *eligible, double *lg, double *p)
{
    for (uint32_t j = 0; j < n; j++) {
        if (beta < 1.0) {
            double u;
            do
                u = fmq_rng_double(r);
            while (u == 0.0);
            lg[j] = log(fmq_rng_gamma(r, beta + 1.0)) + log(u) / beta;
        } else {
            lg[j] = log(fmq_rng_gamma(r, beta));
        }
    }
    double mx = -INFINITY;
    for (uint32_t j = 0; j < n; j++)
        if ((!eligible || eligible[j]) && lg[j] > mx)
            mx = lg[j];
    double sum = 0;
    for (uint32_t j = 0; j < n; j++) {
        p[j] = (!eligible || eligible[j]) ? exp(lg[j] - mx) : 0.0;
        sum += p[j];
    }
    for (uint32_t j = 0; j < n; j++)
        p[j] /= sum; /* sum >= 1: the largest term is exp(0) */
}

/* NIID-Bench's split points, (np.cumsum(p) * len).astype(int)[:-1]: cut j
 * ends party j's share of [0, len). cut is (n,), cut[n-1] = len. */
static void cumsum_cuts(const double *p, uint32_t n, uint32_t len,
                        uint32_t *cut)
{
    double cum = 0;
    uint32_t prev = 0;
    for (uint32_t j = 0; j + 1 < n; j++) {
        cum += p[j];
        double c = cum * (double)len;
        uint32_t v = c >= (double)len ? len : (uint32_t)c;
        if (v < prev)
            v = prev;
        cut[j] = prev = v;
    }
    cut[n - 1] = len;
}

/* ------------------------------------------------------------- schemes */

/* Scratch shared by the schemes. byclass (n,) holds the sample indices
 * grouped by class, in ascending order within each (np.where's order);
 * class k is byclass[cstart[k]..cstart[k+1]). */
typedef struct part_work {
    fmq_rng rng;
    uint32_t n, classes, parties;
    uint32_t *owner;   /* (n,) party of each sample, or NO_OWNER */
    uint32_t *byclass; /* (n,) */
    uint32_t *cstart;  /* (classes+1,) */
} part_work;

/* A random permutation of 0..n-1 into perm (n,). */
static void permutation(fmq_rng *r, uint32_t *perm, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        perm[i] = i;
    fmq_rng_shuffle_u32(r, perm, n);
}

/* Give perm[cut[j-1]..cut[j]) to party j. */
static void assign_cuts(part_work *w, const uint32_t *perm, const uint32_t *cut)
{
    uint32_t from = 0;
    for (uint32_t j = 0; j < w->parties; j++) {
        for (uint32_t i = from; i < cut[j]; i++)
            w->owner[perm[i]] = j;
        from = cut[j];
    }
}

/* np.array_split(v, parts): the first len % parts pieces get one more. */
static void array_split_cuts(uint32_t len, uint32_t parts, uint32_t *cut)
{
    uint32_t base = len / parts, extra = len % parts, at = 0;
    for (uint32_t j = 0; j < parts; j++) {
        at += base + (j < extra);
        cut[j] = at;
    }
}

static fmq_err scheme_iid(part_work *w)
{
    uint32_t *perm = fmq_alloc_array(w->n, sizeof *perm);
    uint32_t *cut = fmq_alloc_array(w->parties, sizeof *cut);
    fmq_err e = FMQ_ERR_NOMEM;
    if (perm && cut) {
        permutation(&w->rng, perm, w->n);
        array_split_cuts(w->n, w->parties, cut);
        assign_cuts(w, perm, cut);
        e = FMQ_OK;
    }
    fmq_free(perm);
    fmq_free(cut);
    return e;
}

static fmq_err scheme_quantity(part_work *w, double beta, const char *spec)
{
    uint32_t P = w->parties;
    uint32_t *perm = fmq_alloc_array(w->n, sizeof *perm);
    uint32_t *cut = fmq_alloc_array(P, sizeof *cut);
    double *p = fmq_alloc_array(P, sizeof *p);
    double *lg = fmq_alloc_array(P, sizeof *lg);
    fmq_err e = FMQ_ERR_NOMEM;
    if (!perm || !cut || !p || !lg)
        goto done;
    permutation(&w->rng, perm, w->n);
    e = FMQ_ERR_CONFIG;
    for (int attempt = 0; attempt < MAX_QUANTITY_DRAWS; attempt++) {
        dirichlet_draw(&w->rng, beta, P, NULL, lg, p);
        /* NIID-Bench redraws while min(p)·N < 10; the integer sizes are
         * then >= 10 too, checked again against rounding. */
        bool ok = true;
        for (uint32_t j = 0; j < P && ok; j++)
            ok = p[j] * (double)w->n >= (double)FMQ_PARTITION_MIN_SIZE;
        if (!ok)
            continue;
        cumsum_cuts(p, P, w->n, cut);
        for (uint32_t j = 0; j < P && ok; j++)
            ok = cut[j] - (j ? cut[j - 1] : 0) >= FMQ_PARTITION_MIN_SIZE;
        if (ok) {
            assign_cuts(w, perm, cut);
            e = FMQ_OK;
            break;
        }
    }
    if (e)
        fmq_log_err("partition '%s': no draw in %d gave each of %u parties "
                    "%u samples (of %u)",
                    spec, MAX_QUANTITY_DRAWS, P, FMQ_PARTITION_MIN_SIZE, w->n);
done:
    fmq_free(perm);
    fmq_free(cut);
    fmq_free(p);
    fmq_free(lg);
    return e;
}

static fmq_err scheme_dirichlet(part_work *w, double beta, const char *spec)
{
    uint32_t P = w->parties;
    uint32_t *size = fmq_alloc_array(P, sizeof *size);
    uint32_t *cut = fmq_alloc_array(P, sizeof *cut);
    bool *open = fmq_alloc_array(P, sizeof *open);
    double *p = fmq_alloc_array(P, sizeof *p);
    double *lg = fmq_alloc_array(P, sizeof *lg);
    fmq_err e = FMQ_ERR_NOMEM;
    if (!size || !cut || !open || !p || !lg)
        goto done;
    e = FMQ_ERR_CONFIG;
    for (int attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        memset(size, 0, P * sizeof *size);
        for (uint32_t k = 0; k < w->classes; k++) {
            uint32_t *idx = w->byclass + w->cstart[k];
            uint32_t len = w->cstart[k + 1] - w->cstart[k];
            fmq_rng_shuffle_u32(&w->rng, idx, len);
            /* "Balance": no more for parties holding N/n already. Some
             * party is below N/n while samples remain, so one is open. */
            for (uint32_t j = 0; j < P; j++)
                open[j] = (uint64_t)size[j] * P < w->n;
            dirichlet_draw(&w->rng, beta, P, open, lg, p);
            cumsum_cuts(p, P, len, cut);
            uint32_t from = 0;
            for (uint32_t j = 0; j < P; j++) {
                for (uint32_t i = from; i < cut[j]; i++)
                    w->owner[idx[i]] = j;
                size[j] += cut[j] - from;
                from = cut[j];
            }
        }
        uint32_t min = UINT32_MAX;
        for (uint32_t j = 0; j < P; j++)
            min = size[j] < min ? size[j] : min;
        if (min >= FMQ_PARTITION_MIN_SIZE) {
            e = FMQ_OK;
            break;
        }
    }
    if (e)
        fmq_log_err("partition '%s': no draw in %d gave each of %u parties "
                    "%u samples (of %u)",
                    spec, MAX_ATTEMPTS, P, FMQ_PARTITION_MIN_SIZE, w->n);
done:
    fmq_free(size);
    fmq_free(cut);
    fmq_free(open);
    fmq_free(p);
    fmq_free(lg);
    return e;
}

static fmq_err scheme_labels(part_work *w, uint32_t k)
{
    uint32_t P = w->parties, K = w->classes;
    uint32_t *held = fmq_alloc_array((size_t)P * k, sizeof *held);
    uint32_t *times = fmq_calloc(K, sizeof *times);
    uint32_t *cut = fmq_alloc_array(P, sizeof *cut);
    fmq_err e = FMQ_ERR_NOMEM;
    if (!held || !times || !cut)
        goto done;
    /* party i: label i mod K, then k-1 further distinct labels drawn
     * uniformly by rejection (NIID-Bench's random.randint loop) */
    for (uint32_t i = 0; i < P; i++) {
        uint32_t *cur = held + (size_t)i * k;
        cur[0] = i % K;
        uint32_t have = 1;
        while (have < k) {
            uint32_t c = (uint32_t)fmq_rng_below(&w->rng, K);
            bool dup = false;
            for (uint32_t t = 0; t < have && !dup; t++)
                dup = cur[t] == c;
            if (!dup)
                cur[have++] = c;
        }
        for (uint32_t t = 0; t < k; t++)
            times[cur[t]]++;
    }
    /* each label: shuffled, array_split among its holders in party order;
     * a label nobody holds keeps NO_OWNER (dropped) */
    for (uint32_t c = 0; c < K; c++) {
        uint32_t *idx = w->byclass + w->cstart[c];
        uint32_t len = w->cstart[c + 1] - w->cstart[c];
        fmq_rng_shuffle_u32(&w->rng, idx, len);
        if (times[c] == 0)
            continue;
        array_split_cuts(len, times[c], cut);
        uint32_t piece = 0;
        for (uint32_t i = 0; i < P; i++) {
            const uint32_t *cur = held + (size_t)i * k;
            bool has = false;
            for (uint32_t t = 0; t < k && !has; t++)
                has = cur[t] == c;
            if (!has)
                continue;
            uint32_t from = piece ? cut[piece - 1] : 0;
            for (uint32_t s = from; s < cut[piece]; s++)
                w->owner[idx[s]] = i;
            piece++;
        }
    }
    e = FMQ_OK;
done:
    fmq_free(held);
    fmq_free(times);
    fmq_free(cut);
    return e;
}

/* ----------------------------------------------------------------- make */

fmq_err fmq_partition_make(const char *spec, const uint16_t *labels, uint32_t n,
                           uint32_t classes, uint32_t parties, uint64_t seed,
                           fmq_partition *out)
{
    memset(out, 0, sizeof *out);
    if (classes == 0 || classes > 65536u || (n && !labels)) {
        fmq_log_err("partition: %u classes", classes);
        return FMQ_ERR_INVAL;
    }
    part_spec ps;
    fmq_err e = parse_spec(spec, classes, &ps);
    if (e)
        return e;
    if (parties == 0 || n < parties) {
        fmq_log_err("partition '%s': %u samples cannot be split over %u "
                    "parties",
                    spec, n, parties);
        return FMQ_ERR_CONFIG;
    }
    if ((ps.kind == P_DIRICHLET || ps.kind == P_QUANTITY) &&
        (uint64_t)n < (uint64_t)FMQ_PARTITION_MIN_SIZE * parties) {
        fmq_log_err("partition '%s': every party needs %u samples, but %u "
                    "parties share %u",
                    spec, FMQ_PARTITION_MIN_SIZE, parties, n);
        return FMQ_ERR_CONFIG;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (labels[i] >= classes) {
            fmq_log_err("partition: label %u of sample %u is not below %u "
                        "classes",
                        labels[i], i, classes);
            return FMQ_ERR_INVAL;
        }
    }

    part_work w = {.n = n, .classes = classes, .parties = parties};
    fmq_rng_seed(&w.rng, seed);
    w.owner = fmq_alloc_array(n, sizeof *w.owner);
    w.byclass = fmq_alloc_array(n, sizeof *w.byclass);
    w.cstart = fmq_calloc((size_t)classes + 1, sizeof *w.cstart);
    out->off = fmq_calloc((size_t)parties + 1, sizeof *out->off);
    out->idx = fmq_alloc_array(n, sizeof *out->idx);
    e = FMQ_ERR_NOMEM;
    if (!w.owner || !w.byclass || !w.cstart || !out->off || !out->idx)
        goto fail;

    /* counting sort by class, stable: byclass keeps ascending order */
    for (uint32_t i = 0; i < n; i++)
        w.cstart[labels[i] + 1]++;
    for (uint32_t c = 0; c < classes; c++)
        w.cstart[c + 1] += w.cstart[c];
    {
        uint32_t *pos = fmq_alloc_array(classes, sizeof *pos);
        if (!pos)
            goto fail;
        memcpy(pos, w.cstart, classes * sizeof *pos);
        for (uint32_t i = 0; i < n; i++)
            w.byclass[pos[labels[i]]++] = i;
        fmq_free(pos);
    }
    for (uint32_t i = 0; i < n; i++)
        w.owner[i] = NO_OWNER;

    switch (ps.kind) {
    case P_IID:
        e = scheme_iid(&w);
        break;
    case P_QUANTITY:
        e = scheme_quantity(&w, ps.beta, spec);
        break;
    case P_DIRICHLET:
        e = scheme_dirichlet(&w, ps.beta, spec);
        break;
    case P_LABELS:
        e = scheme_labels(&w, ps.k);
        break;
    }
    if (e)
        goto fail;

    /* counting sort by owner; samples without one are left out */
    for (uint32_t i = 0; i < n; i++)
        if (w.owner[i] != NO_OWNER)
            out->off[w.owner[i] + 1]++;
    for (uint32_t j = 0; j < parties; j++)
        out->off[j + 1] += out->off[j];
    {
        uint32_t *pos = fmq_alloc_array(parties, sizeof *pos);
        if (!pos) {
            e = FMQ_ERR_NOMEM;
            goto fail;
        }
        memcpy(pos, out->off, parties * sizeof *pos);
        for (uint32_t i = 0; i < n; i++)
            if (w.owner[i] != NO_OWNER)
                out->idx[pos[w.owner[i]]++] = i;
        fmq_free(pos);
    }
    for (uint32_t j = 0; j < parties; j++)
        fmq_rng_shuffle_u32(&w.rng, out->idx + out->off[j],
                            out->off[j + 1] - out->off[j]);
    out->parties = parties;
    fmq_free(w.owner);
    fmq_free(w.byclass);
    fmq_free(w.cstart);
    return FMQ_OK;
fail:
    fmq_free(w.owner);
    fmq_free(w.byclass);
    fmq_free(w.cstart);
    fmq_partition_fini(out);
    return e;
}

void fmq_partition_fini(fmq_partition *p)
{
    if (!p)
        return;
    fmq_free(p->off);
    fmq_free(p->idx);
    memset(p, 0, sizeof *p);
}

/* ---------------------------------------------------------------- print */

void fmq_partition_print(const fmq_partition *p, const uint16_t *labels,
                         uint32_t classes, FILE *f)
{
    if (!f || !p || !p->off)
        return;
    uint32_t *count = classes ? fmq_calloc(classes, sizeof *count) : NULL;
    uint32_t P = p->parties, smin = UINT32_MAX, smax = 0;
    uint32_t lmin = UINT32_MAX, lmax = 0;
    uint64_t lsum = 0;
    for (uint32_t j = 0; j < P; j++) {
        uint32_t size = fmq_partition_size(p, j);
        smin = size < smin ? size : smin;
        smax = size > smax ? size : smax;
        fprintf(f, "party %3u: %7u samples", j, size);
        if (!count || !labels) {
            fputc('\n', f);
            continue;
        }
        memset(count, 0, classes * sizeof *count);
        for (uint32_t i = p->off[j]; i < p->off[j + 1]; i++)
            if (labels[p->idx[i]] < classes)
                count[labels[p->idx[i]]]++;
        uint32_t held = 0;
        fputs(" |", f);
        for (uint32_t c = 0; c < classes; c++) {
            if (!count[c])
                continue;
            held++;
            fprintf(f, " %u:%u", c, count[c]);
        }
        fprintf(f, " (%u labels)\n", held);
        lmin = held < lmin ? held : lmin;
        lmax = held > lmax ? held : lmax;
        lsum += held;
    }
    uint32_t total = P ? p->off[P] : 0;
    fprintf(f, "%u parties, %u samples; size min %u max %u mean %.1f", P, total,
            P ? smin : 0, smax, P ? (double)total / P : 0.0);
    if (count && labels && P)
        fprintf(f, "; labels per party min %u max %u mean %.2f", lmin, lmax,
                (double)lsum / P);
    fputc('\n', f);
    fmq_free(count);
}
