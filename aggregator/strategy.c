/*
 * strategy.c — the strategy table and the core around every strategy: the
 * checks of the ops, the norm bound, the kept updates of a round, and the
 * checkpoint section; the contract is in strategy.h.
 *
 * Checkpoint section (little-endian, inside agg.c's file):
 *   name[65] | u32 section version (1) | u32 P | u32 count | u32 clipped |
 *   f64 previous median norm (NaN: none) | u32 nnorms | f64 norm[nnorms] |
 *   u32 nkept | {dev[65] u64 samples u64 staleness f64 norm f64 scale
 *   u32 scheme u32 block u32 n u64 codes_len codes u64 scales_len scales}* |
 *   u32 state version | u64 payload length | payload (the ops' save)
 */
#include "strategy_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The table: adding a strategy is one file in strategy/ and one line. */
static const fmq_strategy_ops *const table[] = {
    &fmq_strategy__fedavg,       &fmq_strategy__fedprox,
    &fmq_strategy__fedavgm,      &fmq_strategy__fedadam,
    &fmq_strategy__fedyogi,      &fmq_strategy__fedadagrad,
    &fmq_strategy__fedbuff,      &fmq_strategy__median,
    &fmq_strategy__trimmed_mean, &fmq_strategy__krum,
    &fmq_strategy__multi_krum,   &fmq_strategy__dp_fedavg,
};
#define NTABLE (sizeof table / sizeof table[0])

const fmq_strategy_ops *fmq_strategy_find(const char *name)
{
    for (unsigned i = 0; name && i < NTABLE; i++)
        if (strcmp(table[i]->name, name) == 0)
            return table[i];
    return NULL;
}

const fmq_strategy_ops *fmq_strategy_at(unsigned i)
{
    return i < NTABLE ? table[i] : NULL;
}

fmq_strategy_hparams fmq_strategy_hparams_none(void)
{
    return (fmq_strategy_hparams){.server_lr = NAN,
                                  .beta1 = NAN,
                                  .beta2 = NAN,
                                  .tau_adapt = NAN,
                                  .server_momentum = NAN,
                                  .mu = NAN,
                                  .buffer_k = 0,
                                  .dp_clip = NAN,
                                  .dp_noise = NAN,
                                  .dp_seed = 0};
}

/* ------------------------------------------------------ shared helpers */

fmq_err fmq_strategy__hparam(const char *strategy, const char *key,
                             double given, double def, double lo, bool lo_open,
                             double hi, bool hi_open, double *out)
{
    double v = isnan(given) ? def : given;
    if (!isfinite(v) || (lo_open ? v <= lo : v < lo) ||
        (hi_open ? v >= hi : v > hi)) {
        fmq_log_err("strategy %s: %s %g is out of range (%s%g, %g%s)", strategy,
                    key, v, lo_open ? "(" : "[", lo, hi, hi_open ? ")" : "]");
        return FMQ_ERR_CONFIG;
    }
    *out = v;
    return FMQ_OK;
}

bool fmq_strategy__parse_double(const char *s, double *out)
{
    if (!s || !*s)
        return false;
    char *end;
    double v = strtod(s, &end);
    if (*end || !isfinite(v))
        return false;
    *out = v;
    return true;
}

bool fmq_strategy__parse_u32(const char *s, uint32_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

double fmq_strategy__weight(const fmq_strategy_update *u)
{
    double weight = (double)u->samples;
    if (u->staleness > 0)
        weight /= sqrt(1.0 + (double)u->staleness); /* FedBuff's factor */
    return weight;
}

/* ----------------------------------------------------------- the batch */

typedef struct kept {
    char dev[FMQ_ID_MAX + 1];
    uint64_t samples, staleness;
    double norm;   /* as received */
    double scale;  /* clipping factor, 1 = none */
    fmq_qtensor q; /* owned copy of codes and scales */
} kept;

struct fmq_strategy_batch {
    kept *k;
    uint32_t n, cap;
};

uint32_t fmq_strategy_batch_count(const fmq_strategy_batch *b)
{
    return b ? b->n : 0;
}

void fmq_strategy_batch_info(const fmq_strategy_batch *b, uint32_t i,
                             fmq_strategy_update *out)
{
    memset(out, 0, sizeof *out);
    if (!b || i >= b->n)
        return;
    out->device = b->k[i].dev;
    out->samples = b->k[i].samples;
    out->staleness = b->k[i].staleness;
    out->norm = b->k[i].norm * b->k[i].scale;
}

fmq_err fmq_strategy_batch_decode(const fmq_strategy_batch *b, uint32_t i,
                                  uint32_t start, uint32_t count, float *out)
{
    if (!b || i >= b->n)
        return FMQ_ERR_RANGE;
    const kept *k = &b->k[i];
    fmq_err e = fmq_quant_decode_range(&k->q, start, count, out);
    if (e || k->scale == 1.0)
        return e;
    float f = (float)k->scale;
    for (uint32_t j = 0; j < count; j++)
        out[j] *= f;
    return FMQ_OK;
}

static void batch_clear(fmq_strategy_batch *b)
{
    for (uint32_t i = 0; i < b->n; i++)
        fmq_qtensor_fini(&b->k[i].q);
    b->n = 0;
}

/* A copy of v's wire bytes that the batch owns; v has passed
 * fmq_quant_check (the codec's decode, or the checkpoint's view), so it is
 * not checked again. */
static fmq_err qtensor_copy(fmq_qtensor *dst, const fmq_qtensor *v)
{
    memset(dst, 0, sizeof *dst);
    size_t clen = v->codes_len, slen = v->scales_len;
    uint8_t *mem = fmq_malloc(clen + slen ? clen + slen : 1);
    if (!mem)
        return FMQ_ERR_NOMEM;
    memcpy(mem, v->codes, clen);
    if (slen)
        memcpy(mem + clen, v->scales, slen);
    *dst = *v;
    dst->owned = mem;
    dst->codes = mem;
    dst->scales = slen ? mem + clen : NULL;
    return FMQ_OK;
}

static fmq_err batch_reserve(fmq_strategy_batch *b)
{
    if (b->n < b->cap)
        return FMQ_OK;
    uint32_t cap = b->cap ? 2 * b->cap : 16;
    kept *k = fmq_realloc(b->k, (size_t)cap * sizeof *k);
    if (!k)
        return FMQ_ERR_NOMEM;
    b->k = k;
    b->cap = cap;
    return FMQ_OK;
}

fmq_err fmq_strategy__reduce_coords(const fmq_strategy_batch *b, uint32_t P,
                                    float *w, fmq_strategy__coord_fn fn,
                                    void *arg)
{
    uint32_t n = fmq_strategy_batch_count(b);
    if (n == 0)
        return FMQ_ERR_STATE;
    // block is (n, CHUNK): update j's values of the chunk in row j
    float *block =
        fmq_alloc_array((size_t)n * FMQ_STRATEGY__CHUNK, sizeof *block);
    float *vals = fmq_alloc_array(n, sizeof *vals);
    fmq_err e = block && vals ? FMQ_OK : FMQ_ERR_NOMEM;
    for (uint32_t c0 = 0; !e && c0 < P; c0 += FMQ_STRATEGY__CHUNK) {
        uint32_t len =
            P - c0 < FMQ_STRATEGY__CHUNK ? P - c0 : FMQ_STRATEGY__CHUNK;
        for (uint32_t j = 0; !e && j < n; j++)
            e = fmq_strategy_batch_decode(
                b, j, c0, len, block + (size_t)j * FMQ_STRATEGY__CHUNK);
        for (uint32_t i = 0; !e && i < len; i++) {
            for (uint32_t j = 0; j < n; j++)
                vals[j] = block[(size_t)j * FMQ_STRATEGY__CHUNK + i];
            w[c0 + i] += fn(vals, n, arg);
        }
    }
    fmq_free(block);
    fmq_free(vals);
    return e;
}

/* A total order on finite floats: -0 before +0, so that the order of
 * arrival never shows in a result's bits. */
static inline bool before(float a, float b)
{
    return a < b || (a == b && signbit(a) && !signbit(b));
}

void fmq_strategy__sort_floats(float *v, uint32_t n)
{
    /* Shell sort (Ciura's gaps): insertion sort for a round's small
     * counts, no recursion or allocation for large ones */
    static const uint32_t gaps[] = {1750, 701, 301, 132, 57, 23, 10, 4, 1};
    for (unsigned g = 0; g < sizeof gaps / sizeof gaps[0]; g++) {
        uint32_t gap = gaps[g];
        for (uint32_t i = gap; i < n; i++) {
            float x = v[i];
            uint32_t j = i;
            for (; j >= gap && before(x, v[j - gap]); j -= gap)
                v[j] = v[j - gap];
            v[j] = x;
        }
    }
}

/* ------------------------------------------------------------- the core */

struct fmq_strategy {
    const fmq_strategy_ops *ops;
    void *st;
    bool inited;
    char spec[128];
    fmq_strategy_cfg cfg;
    uint32_t count, clipped;
    double prev_median; /* median norm of the previous round; NaN: none */
    double *norms;      /* this round's norms as received */
    uint32_t nnorms, capnorms;
    fmq_strategy_batch batch;
    uint8_t *scratch; /* a clipped streaming update */
    size_t scratch_cap;
};

const fmq_strategy_ops *fmq_strategy_ops_of(const fmq_strategy *s)
{
    return s->ops;
}
const char *fmq_strategy_name(const fmq_strategy *s)
{
    return s->ops->name;
}
const char *fmq_strategy_spec(const fmq_strategy *s)
{
    return s->spec;
}
bool fmq_strategy_async(const fmq_strategy *s)
{
    return s->ops->async;
}
uint32_t fmq_strategy_count(const fmq_strategy *s)
{
    return s->count;
}

bool fmq_strategy_ready(const fmq_strategy *s)
{
    return s->ops->async && s->ops->ready(s->st);
}

/* The table's promises, checked once. */
static bool ops_ok(const fmq_strategy_ops *o)
{
    const char *why = NULL;
    if (!o->name || !fmq_id_valid(o->name))
        why = "a name that is an id";
    else if (!o->init || !o->finish)
        why = "init and finish";
    else if (!o->keeps_updates && !o->add)
        why = "add (it keeps no updates)";
    else if (o->async && !o->ready)
        why = "ready (it is asynchronous)";
    else if (o->async && o->keeps_updates)
        why = "not both async and keeps_updates";
    else if (!o->save != !o->load || !o->save != !o->state_version)
        why = "save, load and a state version together, or none of them";
    if (why)
        fmq_log_err("strategy %s: its ops table needs %s",
                    o->name ? o->name : "?", why);
    return why == NULL;
}

fmq_err fmq_strategy_new(const fmq_strategy_cfg *cfg, fmq_strategy **out)
{
    *out = NULL;
    const char *spec = cfg->spec && cfg->spec[0] ? cfg->spec : "fedavg";
    char name[sizeof((fmq_strategy *)0)->spec];
    if (strlen(spec) >= sizeof name) {
        fmq_log_err("strategy '%.40s...': too long", spec);
        return FMQ_ERR_CONFIG;
    }
    snprintf(name, sizeof name, "%s", spec);
    char *colon = strchr(name, ':');
    const char *args = NULL;
    if (colon) {
        *colon = 0;
        args = colon + 1;
    }
    const fmq_strategy_ops *ops = fmq_strategy_find(name);
    if (!ops) {
        char known[400] = "";
        size_t off = 0;
        for (unsigned i = 0; i < NTABLE && off < sizeof known; i++)
            off += (size_t)snprintf(known + off, sizeof known - off, "%s%s",
                                    i ? ", " : "", table[i]->name);
        fmq_log_err("strategy '%s' is unknown (known: %s)", name, known);
        return FMQ_ERR_CONFIG;
    }
    fmq_strategy_cfg c = *cfg;
    c.spec = spec;
    return fmq_strategy_new_with(ops, &c, args, out);
}

fmq_err fmq_strategy_new_with(const fmq_strategy_ops *ops,
                              const fmq_strategy_cfg *cfg, const char *args,
                              fmq_strategy **out)
{
    *out = NULL;
    if (!ops || !ops_ok(ops))
        return FMQ_ERR_CONFIG;
    const char *spec = cfg->spec && cfg->spec[0] ? cfg->spec : ops->name;
    if (!(cfg->norm_bound >= 0) || !isfinite(cfg->norm_bound) ||
        !(cfg->norm_median == 0 || cfg->norm_median >= 1) ||
        !isfinite(cfg->norm_median) || cfg->P == 0) {
        fmq_log_err("strategy %s: the norm bound must be >= 0 and its "
                    "median multiple 0 (off) or >= 1 (bound %g, multiple %g)",
                    ops->name, cfg->norm_bound, cfg->norm_median);
        return FMQ_ERR_CONFIG;
    }
    fmq_strategy *s = fmq_calloc(1, sizeof *s);
    if (!s)
        return FMQ_ERR_NOMEM;
    s->ops = ops;
    s->cfg = *cfg;
    snprintf(s->spec, sizeof s->spec, "%s", spec);
    s->cfg.spec = s->spec;
    s->prev_median = NAN;
    fmq_err e = FMQ_OK;
    s->st = fmq_calloc(1, ops->state_size ? ops->state_size : 1);
    if (!s->st)
        e = FMQ_ERR_NOMEM;
    if (!e) {
        s->inited = true; /* fini runs after a failed init too */
        e = ops->init(s->st, &s->cfg, args);
    }
    if (e) {
        fmq_strategy_destroy(&s);
        return e;
    }
    if (ops->begin)
        ops->begin(s->st, cfg->round);
    *out = s;
    return FMQ_OK;
}

void fmq_strategy_destroy(fmq_strategy **sp)
{
    if (!sp || !*sp)
        return;
    fmq_strategy *s = *sp;
    if (s->inited && s->ops->fini)
        s->ops->fini(s->st);
    fmq_free(s->st);
    batch_clear(&s->batch);
    fmq_free(s->batch.k);
    fmq_free(s->norms);
    fmq_free(s->scratch);
    fmq_free(s);
    *sp = NULL;
}

void fmq_strategy_configure(fmq_strategy *s, fmq_msg_global *g)
{
    snprintf(g->strategy, sizeof g->strategy, "%s", s->ops->name);
    if (s->ops->configure)
        s->ops->configure(s->st, g);
}

/* The bound an arriving update is held to: the fixed one, and for
 * streaming strategies the previous round's median multiple; 0 = none. */
static double arrival_bound(const fmq_strategy *s)
{
    double b = s->cfg.norm_bound;
    if (s->cfg.norm_median > 0 && !s->ops->keeps_updates &&
        s->prev_median > 0) {
        double m = s->cfg.norm_median * s->prev_median;
        b = b > 0 ? fmin(b, m) : m;
    }
    return b;
}

double fmq_strategy_norm_bound(const fmq_strategy *s)
{
    return arrival_bound(s);
}

fmq_err fmq_strategy_check(const fmq_strategy *s, const fmq_qtensor *delta,
                           double *norm)
{
    *norm = 0;
    if (!delta || delta->n != s->cfg.P)
        return FMQ_ERR_MODEL;
    double sq = fmq_quant_sqnorm(delta);
    if (!isfinite(sq))
        return FMQ_ERR_NONFINITE;
    *norm = sqrt(sq);
    double b = arrival_bound(s);
    if (s->cfg.norm_action == FMQ_NORM_REJECT && b > 0 && *norm > b)
        return FMQ_ERR_NORM;
    return FMQ_OK;
}

static fmq_err scratch_reserve(fmq_strategy *s, size_t n)
{
    if (n <= s->scratch_cap)
        return FMQ_OK;
    uint8_t *p = fmq_realloc(s->scratch, n);
    if (!p)
        return FMQ_ERR_NOMEM;
    s->scratch = p;
    s->scratch_cap = n;
    return FMQ_OK;
}

/* v = q scaled by f, in the scratch: new scales for q8/q4/q1 (the codes
 * stay the message's), float32 values otherwise. */
static fmq_err clipped_view(fmq_strategy *s, const fmq_qtensor *q, double f,
                            fmq_qtensor *v)
{
    *v = *q;
    v->owned = NULL;
    fmq_err e;
    if (fmq_scheme_has_scales(q->scheme)) {
        if ((e = scratch_reserve(s, q->scales_len)))
            return e;
        for (size_t b = 0; b < q->scales_len / 4; b++)
            fmq_store_f32le(s->scratch + 4 * b,
                            (float)(fmq_load_f32le(q->scales + 4 * b) * f));
        v->scales = s->scratch;
        return FMQ_OK;
    }
    size_t n = q->n;
    if ((e = scratch_reserve(s, 8 * n)))
        return e;
    float *x = (float *)(void *)(s->scratch + 4 * n); /* realloc: aligned */
    if ((e = fmq_quant_decode(q, x)))
        return e;
    for (size_t i = 0; i < n; i++)
        fmq_store_f32le(s->scratch + 4 * i, (float)(x[i] * f));
    v->scheme = FMQ_Q_F32;
    v->block = 0;
    v->codes = s->scratch;
    v->codes_len = 4 * n;
    v->scales = NULL;
    v->scales_len = 0;
    return FMQ_OK;
}

static fmq_err norms_reserve(fmq_strategy *s)
{
    if (s->nnorms < s->capnorms)
        return FMQ_OK;
    uint32_t cap = s->capnorms ? 2 * s->capnorms : 64;
    double *p = fmq_realloc(s->norms, (size_t)cap * sizeof *p);
    if (!p)
        return FMQ_ERR_NOMEM;
    s->norms = p;
    s->capnorms = cap;
    return FMQ_OK;
}

fmq_err fmq_strategy_add(fmq_strategy *s, const fmq_strategy_update *u)
{
    if (!u->delta || u->delta->n != s->cfg.P)
        return FMQ_ERR_MODEL;
    double b = arrival_bound(s), f = 1.0;
    if (b > 0 && u->norm > b) {
        if (s->cfg.norm_action == FMQ_NORM_REJECT)
            return FMQ_ERR_NORM; /* fmq_strategy_check said so already */
        f = b / u->norm;
    }
    fmq_err e;
    if ((e = norms_reserve(s))) /* first, so nothing fails after the add */
        return e;
    if (s->ops->keeps_updates) {
        if ((e = batch_reserve(&s->batch)))
            return e;
        kept *k = &s->batch.k[s->batch.n];
        memset(k, 0, sizeof *k);
        if ((e = qtensor_copy(&k->q, u->delta)))
            return e;
        snprintf(k->dev, sizeof k->dev, "%s", u->device ? u->device : "");
        k->samples = u->samples;
        k->staleness = u->staleness;
        k->norm = u->norm;
        k->scale = f;
        s->batch.n++;
    } else {
        fmq_strategy_update cu = *u;
        fmq_qtensor v;
        if (f < 1.0) {
            if ((e = clipped_view(s, u->delta, f, &v)))
                return e;
            cu.delta = &v;
            cu.norm = u->norm * f;
        }
        if ((e = s->ops->add(s->st, &cu)))
            return e;
    }
    s->norms[s->nnorms++] = u->norm;
    s->count++;
    s->clipped += f < 1.0;
    return FMQ_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0..n) (sorts v); NaN for n = 0. */
static double median_of(double *v, uint32_t n)
{
    if (n == 0)
        return NAN;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The current round's median bound over the kept updates. */
static fmq_err kept_median_bound(fmq_strategy *s, fmq_strategy_result *res)
{
    fmq_strategy_batch *b = &s->batch;
    if (!(s->cfg.norm_median > 0) || b->n == 0)
        return FMQ_OK;
    double *v = fmq_alloc_array(b->n, sizeof *v);
    if (!v)
        return FMQ_ERR_NOMEM;
    for (uint32_t i = 0; i < b->n; i++)
        v[i] = b->k[i].norm;
    double bound = s->cfg.norm_median * median_of(v, b->n);
    fmq_free(v);
    if (!(bound > 0))
        return FMQ_OK;
    uint32_t keep = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        kept *k = &b->k[i];
        double norm = k->norm * k->scale;
        if (norm > bound && s->cfg.norm_action == FMQ_NORM_REJECT) {
            fmq_log_warn("strategy %s: update from %s rejected: norm: L2 "
                         "norm %.4g > %.4g (%g x the round's median)",
                         s->ops->name, k->dev, norm, bound, s->cfg.norm_median);
            fmq_qtensor_fini(&k->q);
            res->norm_rejected++;
            res->norm_rejected_late += k->staleness > 0;
            continue;
        }
        if (norm > bound) {
            s->clipped += k->scale == 1.0;
            k->scale = bound / k->norm;
        }
        b->k[keep++] = *k;
    }
    b->n = keep;
    return FMQ_OK;
}

fmq_err fmq_strategy_finish(fmq_strategy *s, uint64_t round, float *w,
                            fmq_strategy_result *res)
{
    memset(res, 0, sizeof *res);
    res->dp_clip = res->dp_noise = NAN;
    fmq_err e = FMQ_OK;
    if (s->ops->keeps_updates)
        e = kept_median_bound(s, res);
    if (!e)
        e = s->ops->finish(s->st, round,
                           s->ops->keeps_updates ? &s->batch : NULL, w, res);
    if (e == FMQ_ERR_NOMEM)
        return e; /* the round is in an unspecified state: resume from the
                     checkpoint */
    res->clipped = s->clipped;
    if (s->nnorms)
        s->prev_median = median_of(s->norms, s->nnorms);
    s->nnorms = 0;
    s->count = s->clipped = 0;
    batch_clear(&s->batch);
    if (s->ops->begin)
        s->ops->begin(s->st, round + 1);
    return e;
}

/* ----------------------------------------------------------- checkpoint */

#define SECTION_VERSION 1u

void fmq_strategy_save(const fmq_strategy *s, fmq_wr *w)
{
    fmq_wr_str(w, s->ops->name, FMQ_ID_MAX + 1);
    fmq_wr_u32(w, SECTION_VERSION);
    fmq_wr_u32(w, s->cfg.P);
    fmq_wr_u32(w, s->count);
    fmq_wr_u32(w, s->clipped);
    fmq_wr_f64(w, s->prev_median);
    fmq_wr_u32(w, s->nnorms);
    for (uint32_t i = 0; i < s->nnorms; i++)
        fmq_wr_f64(w, s->norms[i]);
    fmq_wr_u32(w, s->batch.n);
    for (uint32_t i = 0; i < s->batch.n; i++) {
        const kept *k = &s->batch.k[i];
        fmq_wr_str(w, k->dev, sizeof k->dev);
        fmq_wr_u64(w, k->samples);
        fmq_wr_u64(w, k->staleness);
        fmq_wr_f64(w, k->norm);
        fmq_wr_f64(w, k->scale);
        fmq_wr_u32(w, (uint32_t)k->q.scheme);
        fmq_wr_u32(w, k->q.block);
        fmq_wr_u32(w, k->q.n);
        fmq_wr_u64(w, k->q.codes_len);
        fmq_wr_bytes(w, k->q.codes, k->q.codes_len);
        fmq_wr_u64(w, k->q.scales_len);
        fmq_wr_bytes(w, k->q.scales, k->q.scales_len);
    }
    fmq_wr_u32(w, s->ops->state_version);
    fmq_wr sub;
    fmq_wr_init(&sub);
    if (s->ops->save)
        s->ops->save(s->st, &sub);
    if (sub.e && !w->e)
        w->e = sub.e;
    fmq_wr_u64(w, sub.b.len);
    fmq_wr_bytes(w, sub.b.data, sub.b.len);
    fmq_wr_fini(&sub);
}

fmq_err fmq_strategy_load(fmq_strategy *s, fmq_rd *r)
{
    char name[FMQ_ID_MAX + 1];
    fmq_rd_str(r, name, sizeof name);
    uint32_t ver = fmq_rd_u32(r), P = fmq_rd_u32(r);
    if (r->bad || strcmp(name, s->ops->name) || ver != SECTION_VERSION ||
        P != s->cfg.P) {
        fmq_log_err("aggregator: the checkpoint's strategy section is for "
                    "%s (section version %u, P=%u), configured %s (P=%u): "
                    "resume with the same strategy, or remove the checkpoint "
                    "to start over",
                    r->bad ? "?" : name, ver, P, s->ops->name, s->cfg.P);
        return FMQ_ERR_DATA;
    }
    s->count = fmq_rd_u32(r);
    s->clipped = fmq_rd_u32(r);
    s->prev_median = fmq_rd_f64(r);
    uint32_t nn = fmq_rd_u32(r);
    if (nn > r->left / 8)
        r->bad = true;
    s->nnorms = 0;
    for (uint32_t i = 0; i < nn && !r->bad; i++) {
        if (norms_reserve(s))
            return FMQ_ERR_NOMEM;
        s->norms[s->nnorms++] = fmq_rd_f64(r);
    }
    uint32_t nk = fmq_rd_u32(r);
    if (nk > r->left / (FMQ_ID_MAX + 1 + 56))
        r->bad = true;
    batch_clear(&s->batch);
    for (uint32_t i = 0; i < nk && !r->bad; i++) {
        if (batch_reserve(&s->batch))
            return FMQ_ERR_NOMEM;
        kept *k = &s->batch.k[s->batch.n];
        memset(k, 0, sizeof *k);
        fmq_rd_str(r, k->dev, sizeof k->dev);
        k->samples = fmq_rd_u64(r);
        k->staleness = fmq_rd_u64(r);
        k->norm = fmq_rd_f64(r);
        k->scale = fmq_rd_f64(r);
        uint32_t scheme = fmq_rd_u32(r), block = fmq_rd_u32(r);
        uint32_t n = fmq_rd_u32(r);
        uint64_t clen = fmq_rd_u64(r);
        const uint8_t *codes = clen <= r->left ? fmq_rd_view(r, clen) : NULL;
        uint64_t slen = fmq_rd_u64(r);
        const uint8_t *scales = slen <= r->left ? fmq_rd_view(r, slen) : NULL;
        if (r->bad || !codes || (slen && !scales) || scheme >= FMQ_Q__COUNT ||
            n != s->cfg.P || !(k->scale > 0 && k->scale <= 1)) {
            r->bad = true;
            break;
        }
        fmq_qtensor v;
        fmq_err e = fmq_qtensor_view(&v, (fmq_scheme)scheme, block, n, codes,
                                     clen, scales, slen);
        if (!e)
            e = qtensor_copy(&k->q, &v);
        if (e == FMQ_ERR_NOMEM)
            return e;
        if (e) {
            r->bad = true;
            break;
        }
        s->batch.n++;
    }
    uint32_t state_ver = fmq_rd_u32(r);
    uint64_t plen = fmq_rd_u64(r);
    const uint8_t *payload = plen <= r->left ? fmq_rd_view(r, plen) : NULL;
    if (r->bad || (plen && !payload) ||
        s->batch.n != (s->ops->keeps_updates ? s->count : 0) ||
        s->nnorms > s->count) {
        fmq_log_err("aggregator: the checkpoint's strategy section (%s) is "
                    "truncated or inconsistent",
                    name);
        return FMQ_ERR_DATA;
    }
    fmq_rd sub = {payload, plen, false};
    if (s->ops->load) {
        fmq_err e = s->ops->load(s->st, &sub, state_ver);
        if (e == FMQ_ERR_NOMEM)
            return e;
        if (e || sub.bad || sub.left) {
            fmq_log_err("aggregator: the checkpoint's %s state (version %u) "
                        "does not load%s",
                        name, state_ver, e ? "" : ": wrong length");
            return FMQ_ERR_DATA;
        }
    } else if (plen) {
        return FMQ_ERR_DATA;
    }
    return FMQ_OK;
}
