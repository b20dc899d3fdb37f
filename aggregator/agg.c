/*
 * agg.c — the aggregator's core; the contract is in agg.h.
 *
 * Checkpoint file (little-endian), <state_dir>/aggregator.ckpt:
 *   "FMQAGG03" | u32 P | fleet[65] | model[65] | u64 round | u64 version |
 *   u64 deadline_ms | u64 round_start_ms | f64 loss_sum | f64 loss_sq |
 *   u32 late | u32 late_folded | u32 rejected | u64 bytes_in |
 *   u64 bytes_out | u32 nreasons | {name[32] u64 count}* | u32 nseen |
 *   {dev[65] u64 round}* | f32 w[P] | the strategy's section
 *   (strategy.c: its name, a version, its kept updates and state) |
 *   with global deltas, their section (gdelta.c: the residual and the
 *   delta of the current version; absent in files from before deltas) |
 *   u32 crc32 of all before
 * The format before strategies, "FMQAGG02", had f64 fa.weight | u32
 * fa.count after round_start_ms and f32 sum[P] after w: FedAvg's running
 * sum, which resumes as the fedavg strategy's state.
 */
#include "agg.h"

#include "blob.h"

#include <math.h>
#include <stdio.h>
#include <string.h>


#include "classes.h"
#include "nn.h"

typedef struct seen {
    char dev[FMQ_ID_MAX + 1];
    uint64_t round;
} seen;

struct fmq_agg {
    fmq_agg_cfg cfg;
    double last_norm; /* of the last update judged (fmq_agg_last_norm) */
    char fleet[FMQ_ID_MAX + 1], model[FMQ_ID_MAX + 1];
    char state_dir[512];
    fmq_nn *nn; /* holds the global weights; also evaluates */
    uint32_t P;
    uint64_t round, version;
    uint64_t deadline_ms, start_ms;
    fmq_strategy *st;
    fmq_gdelta *gd;          /* global deltas; NULL when off */
    bool gd_off;             /* deltas were on before a restart, are off
                                now: gd only holds the last one, sent
                                again without gd so that devices go back
                                to the global (then dropped) */
    fmq_uq_class *classes;   /* the per-class schemes (a copy) */
    double loss_sum, loss_sq;
    uint32_t late, late_folded, rejected, extensions;
    uint64_t bytes_in, bytes_out;
    fmq_reason_count reasons[16];
    uint32_t nreasons;
    seen *seen;
    uint32_t nseen, capseen;
    bool resumed, dirty;
    fmq_buf plain; /* scratch: an opened update, or a global to sign */
};

uint64_t fmq_agg_round(const fmq_agg *a) { return a->round; }
uint64_t fmq_agg_version(const fmq_agg *a) { return a->version; }
uint32_t fmq_agg_nparams(const fmq_agg *a) { return a->P; }
bool fmq_agg_resumed(const fmq_agg *a) { return a->resumed; }
bool fmq_agg_dirty(const fmq_agg *a) { return a->dirty; }
double fmq_agg_last_norm(const fmq_agg *a) { return a->last_norm; }

const float *fmq_agg_weights(const fmq_agg *a)
{
    return fmq_nn_params(a->nn);
}

void fmq_agg_count_out(fmq_agg *a, uint64_t bytes)
{
    a->bytes_out += bytes;
}

/* ---------------------------------------------------------- checkpoint */

static void ckpt_path(const fmq_agg *a, char *buf, size_t len)
{
    snprintf(buf, len, "%s/aggregator.ckpt", a->state_dir);
}

fmq_err fmq_agg_checkpoint(fmq_agg *a)
{
    if (!a->state_dir[0])
        return FMQ_OK;
    fmq_wr w;
    fmq_wr_init(&w);
    char name[FMQ_ID_MAX + 1] = {0};
    fmq_wr_bytes(&w, "FMQAGG03", 8);
    fmq_wr_u32(&w, a->P);
    memcpy(name, a->fleet, sizeof name);
    fmq_wr_bytes(&w, name, sizeof name);
    memset(name, 0, sizeof name);
    memcpy(name, a->model, sizeof name);
    fmq_wr_bytes(&w, name, sizeof name);
    fmq_wr_u64(&w, a->round);
    fmq_wr_u64(&w, a->version);
    fmq_wr_u64(&w, a->deadline_ms);
    fmq_wr_u64(&w, a->start_ms);
    fmq_wr_f64(&w, a->loss_sum);
    fmq_wr_f64(&w, a->loss_sq);
    fmq_wr_u32(&w, a->late);
    fmq_wr_u32(&w, a->late_folded);
    fmq_wr_u32(&w, a->rejected);
    fmq_wr_u64(&w, a->bytes_in);
    fmq_wr_u64(&w, a->bytes_out);
    fmq_wr_u32(&w, a->nreasons);
    for (uint32_t i = 0; i < a->nreasons; i++) {
        fmq_wr_bytes(&w, a->reasons[i].reason, sizeof a->reasons[i].reason);
        fmq_wr_u64(&w, a->reasons[i].count);
    }
    fmq_wr_u32(&w, a->nseen);
    for (uint32_t i = 0; i < a->nseen; i++) {
        fmq_wr_bytes(&w, a->seen[i].dev, sizeof a->seen[i].dev);
        fmq_wr_u64(&w, a->seen[i].round);
    }
    fmq_wr_floats(&w, fmq_nn_params(a->nn), a->P);
    fmq_strategy_save(a->st, &w);
    if (a->gd && !a->gd_off)
        fmq_gdelta_save(a->gd, &w);
    fmq_wr_crc(&w);
    fmq_err e = w.e;
    if (!e) {
        char path[600];
        ckpt_path(a, path, sizeof path);
        e = fmq_file_write_atomic(path, w.b.data, w.b.len);
    }
    fmq_wr_fini(&w);
    if (e)
        fmq_log_err("aggregator: checkpoint of round %llu failed: %s",
                    (unsigned long long)a->round, fmq_strerror(e));
    else
        a->dirty = false;
    return e;
}

static fmq_err seen_add(fmq_agg *a, const char *dev, uint64_t round)
{
    if (a->nseen == a->capseen) {
        uint32_t cap = a->capseen ? 2 * a->capseen : 64;
        seen *s = fmq_realloc(a->seen, (size_t)cap * sizeof *s);
        if (!s)
            return FMQ_ERR_NOMEM;
        a->seen = s;
        a->capseen = cap;
    }
    seen *s = &a->seen[a->nseen++];
    memset(s, 0, sizeof *s);
    snprintf(s->dev, sizeof s->dev, "%s", dev);
    s->round = round;
    return FMQ_OK;
}

static bool seen_has(const fmq_agg *a, const char *dev, uint64_t round)
{
    for (uint32_t i = 0; i < a->nseen; i++)
        if (a->seen[i].round == round && strcmp(a->seen[i].dev, dev) == 0)
            return true;
    return false;
}

/* A checkpoint from before strategies (FMQAGG02) holds FedAvg's running
 * sum: it resumes as the fedavg strategy's section, built here in the
 * format strategy.c and fedavg.c read (strategy_internal.h). */
static fmq_err load_v2_sum(fmq_agg *a, fmq_rd *r, double weight,
                           uint32_t count)
{
    if (strcmp(fmq_strategy_name(a->st), "fedavg") != 0) {
        fmq_log_err("aggregator: the checkpoint (format FMQAGG02) was written "
                    "by fedavg; configured %s: resume with fedavg, or remove "
                    "the checkpoint to start over",
                    fmq_strategy_name(a->st));
        return FMQ_ERR_DATA;
    }
    const uint8_t *sum = fmq_rd_view(r, (size_t)a->P * 4);
    if (!sum)
        return FMQ_ERR_DATA;
    fmq_wr w;
    fmq_wr_init(&w);
    fmq_wr_str(&w, "fedavg", FMQ_ID_MAX + 1);
    fmq_wr_u32(&w, 1); /* section version */
    fmq_wr_u32(&w, a->P);
    fmq_wr_u32(&w, count);
    fmq_wr_u32(&w, 0);   /* clipped */
    fmq_wr_f64(&w, NAN); /* no median norm yet */
    fmq_wr_u32(&w, 0);   /* norms */
    fmq_wr_u32(&w, 0);   /* kept updates */
    fmq_wr_u32(&w, 1);   /* fedavg's state version */
    fmq_wr_u64(&w, 8 + 4 + (uint64_t)a->P * 4);
    fmq_wr_f64(&w, weight);
    fmq_wr_u32(&w, count);
    fmq_wr_bytes(&w, sum, (size_t)a->P * 4);
    fmq_err e = w.e;
    if (!e) {
        fmq_rd sr = {w.b.data, w.b.len, false};
        e = fmq_strategy_load(a->st, &sr);
        if (!e && (sr.bad || sr.left))
            e = FMQ_ERR_DATA;
    }
    fmq_wr_fini(&w);
    if (!e)
        fmq_log_notice("aggregator: the checkpoint has the format before "
                       "strategies (FMQAGG02); resumed as fedavg");
    return e;
}

static fmq_err load_checkpoint(fmq_agg *a, const uint8_t *buf, size_t len)
{
    fmq_rd r;
    if (len < 12 || !fmq_rd_init_crc(&r, buf, len)) {
        fmq_log_err("aggregator: checkpoint is truncated or corrupt (CRC)");
        return FMQ_ERR_DATA;
    }
    char magic[8], fleet[FMQ_ID_MAX + 1], model[FMQ_ID_MAX + 1];
    fmq_rd_bytes(&r, magic, 8);
    uint32_t P = fmq_rd_u32(&r);
    fmq_rd_bytes(&r, fleet, sizeof fleet);
    fmq_rd_bytes(&r, model, sizeof model);
    fleet[FMQ_ID_MAX] = model[FMQ_ID_MAX] = 0;
    bool v2 = memcmp(magic, "FMQAGG02", 8) == 0;
    if (r.bad || (!v2 && memcmp(magic, "FMQAGG03", 8)) || P != a->P ||
        strcmp(fleet, a->fleet) || strcmp(model, a->model)) {
        fmq_log_err("aggregator: checkpoint is for another fleet or model "
                    "(%s, %s, P=%u; configured %s, %s, P=%u)",
                    fleet, model, P, a->fleet, a->model, a->P);
        return FMQ_ERR_DATA;
    }
    a->round = fmq_rd_u64(&r);
    a->version = fmq_rd_u64(&r);
    a->deadline_ms = fmq_rd_u64(&r);
    a->start_ms = fmq_rd_u64(&r);
    double v2_weight = v2 ? fmq_rd_f64(&r) : 0;
    uint32_t v2_count = v2 ? fmq_rd_u32(&r) : 0;
    a->loss_sum = fmq_rd_f64(&r);
    a->loss_sq = fmq_rd_f64(&r);
    a->late = fmq_rd_u32(&r);
    a->late_folded = fmq_rd_u32(&r);
    a->rejected = fmq_rd_u32(&r);
    a->bytes_in = fmq_rd_u64(&r);
    a->bytes_out = fmq_rd_u64(&r);
    a->nreasons = fmq_rd_u32(&r);
    if (a->nreasons > 16)
        r.bad = true;
    for (uint32_t i = 0; i < a->nreasons && !r.bad; i++) {
        fmq_rd_bytes(&r, a->reasons[i].reason, sizeof a->reasons[i].reason);
        a->reasons[i].reason[FMQ_NAME_MAX] = 0;
        a->reasons[i].count = fmq_rd_u64(&r);
    }
    uint32_t nseen = fmq_rd_u32(&r);
    if (nseen > r.left / (FMQ_ID_MAX + 9))
        r.bad = true;
    for (uint32_t i = 0; i < nseen && !r.bad; i++) {
        char dev[FMQ_ID_MAX + 1];
        fmq_rd_bytes(&r, dev, sizeof dev);
        dev[FMQ_ID_MAX] = 0;
        uint64_t rr = fmq_rd_u64(&r);
        if (!r.bad && seen_add(a, dev, rr))
            return FMQ_ERR_NOMEM;
    }
    fmq_rd_floats(&r, fmq_nn_params(a->nn), P);
    fmq_err e = FMQ_OK;
    if (r.bad || a->round == 0 || a->version == 0)
        e = FMQ_ERR_DATA;
    else if (v2)
        e = load_v2_sum(a, &r, v2_weight, v2_count);
    else
        e = fmq_strategy_load(a->st, &r);
    if (!e && !r.bad && r.left > 0 && !a->gd) {
        /* deltas are off now: keep the last one to say so (gd_off) */
        fmq_gdelta_cfg gc = {FMQ_Q_Q8, FMQ_QUANT_BLOCK_DEFAULT};
        if ((e = fmq_gdelta_new(&gc, a->P, &a->gd)) == FMQ_OK)
            a->gd_off = true;
    }
    if (!e && !r.bad && r.left > 0) /* a global-delta section */
        e = fmq_gdelta_load(a->gd, &r, a->P);
    if (e == FMQ_ERR_NOMEM)
        return e;
    if (e || r.bad || r.left != 0) {
        fmq_log_err("aggregator: checkpoint has a bad layout");
        return FMQ_ERR_DATA;
    }
    return FMQ_OK;
}

/* ---------------------------------------------------------------- open */

fmq_err fmq_agg_open(const fmq_agg_cfg *cfg, fmq_agg **out)
{
    *out = NULL;
    if (!cfg || !cfg->fleet || !fmq_id_valid(cfg->fleet) || !cfg->model ||
        cfg->cohort_size == 0 || cfg->quorum == 0 ||
        cfg->quorum > cfg->cohort_size || cfg->round_ms == 0 ||
        (cfg->global_scheme != FMQ_Q_F32 && cfg->global_scheme != FMQ_Q_F16) ||
        (cfg->state_dir && strlen(cfg->state_dir) >= 512)) {
        fmq_log_err("aggregator: bad configuration (fleet id, model, "
                    "1 <= quorum <= cohort size, round time > 0, global "
                    "scheme f32 or f16)");
        return FMQ_ERR_CONFIG;
    }
    if ((cfg->sign_key && !fmq_trust_key_has_private(cfg->sign_key)) ||
        (cfg->seal_key && !fmq_trust_key_has_private(cfg->seal_key)) ||
        (cfg->require_seal && !cfg->seal_key)) {
        fmq_log_err("aggregator: bad trust configuration (the signing and "
                    "sealing keys must be private keys; requiring sealed "
                    "updates needs a sealing key)");
        return FMQ_ERR_CONFIG;
    }
    fmq_agg *a = fmq_calloc(1, sizeof *a);
    if (!a)
        return FMQ_ERR_NOMEM;
    a->cfg = *cfg;
    snprintf(a->fleet, sizeof a->fleet, "%s", cfg->fleet);
    snprintf(a->model, sizeof a->model, "%s", cfg->model);
    if (cfg->state_dir)
        snprintf(a->state_dir, sizeof a->state_dir, "%s", cfg->state_dir);
    a->cfg.fleet = a->fleet;
    a->cfg.model = a->model;
    a->cfg.state_dir = a->state_dir[0] ? a->state_dir : NULL;
    a->cfg.init = NULL;
    fmq_buf_init(&a->plain);
    fmq_err e = fmq_nn_new(cfg->model, cfg->in_c, cfg->in_h, cfg->in_w,
                           cfg->classes, &a->nn);
    if (e)
        goto fail;
    a->P = fmq_nn_nparams(a->nn);
    fmq_strategy_cfg sc = {
        .spec = cfg->strategy,
        .hp = cfg->hp ? *cfg->hp : fmq_strategy_hparams_none(),
        .P = a->P,
        .round = 1,
        .cohort_size = cfg->cohort_size,
        .quorum = cfg->quorum,
        .max_staleness = cfg->max_staleness,
        .norm_bound = cfg->norm_bound,
        .norm_median = cfg->norm_median,
        .norm_action = cfg->norm_action,
    };
    if ((e = fmq_strategy_new(&sc, &a->st)))
        goto fail;
    a->cfg.strategy = NULL; /* borrowed: the strategy keeps its own copy */
    a->cfg.hp = NULL;
    if (cfg->global_delta && (e = fmq_gdelta_new(&cfg->gdelta, a->P, &a->gd)))
        goto fail;
    a->cfg.uq_classes = NULL;
    a->cfg.n_uq_classes = 0;
    if (cfg->n_uq_classes) {
        if (cfg->n_uq_classes > fmq_codec_limits_default().max_classes) {
            e = FMQ_ERR_CONFIG;
            goto fail;
        }
        a->classes = fmq_calloc(cfg->n_uq_classes, sizeof *a->classes);
        if (!a->classes) {
            e = FMQ_ERR_NOMEM;
            goto fail;
        }
        memcpy(a->classes, cfg->uq_classes,
               cfg->n_uq_classes * sizeof *a->classes);
        a->cfg.uq_classes = a->classes;
        a->cfg.n_uq_classes = cfg->n_uq_classes;
    }
    a->round = a->version = 1;
    if (cfg->init)
        memcpy(fmq_nn_params(a->nn), cfg->init, (size_t)a->P * 4);
    else
        fmq_nn_init(a->nn, cfg->seed);
    if (a->state_dir[0]) {
        if ((e = fmq_mkdir_p(a->state_dir)))
            goto fail;
        char path[600];
        ckpt_path(a, path, sizeof path);
        uint8_t *buf;
        size_t len;
        /* model and running sums, plus the updates a strategy keeps (up to
         * f32 each, about two cohorts of them) */
        size_t max = (size_t)a->P * 16 + (64u << 20);
        if (fmq_strategy_ops_of(a->st)->keeps_updates)
            max += ((size_t)a->P * 4 + 256) * (2 * (size_t)cfg->cohort_size +
                                               64);
        e = fmq_file_read(path, max, &buf, &len);
        if (e == FMQ_OK) {
            e = load_checkpoint(a, buf, len);
            fmq_free(buf);
            if (e)
                goto fail;
            a->resumed = true;
            fmq_log_notice("aggregator: resumed from %s: round %llu, version "
                           "%llu, %u updates already counted",
                           path, (unsigned long long)a->round,
                           (unsigned long long)a->version,
                           fmq_strategy_count(a->st));
        } else if (e != FMQ_ERR_NOTFOUND) {
            goto fail;
        } else if ((e = fmq_agg_checkpoint(a))) {
            goto fail;
        }
    }
    *out = a;
    return FMQ_OK;
fail:
    fmq_agg_destroy(&a);
    return e;
}

void fmq_agg_destroy(fmq_agg **ap)
{
    if (!ap || !*ap)
        return;
    fmq_agg *a = *ap;
    fmq_nn_destroy(&a->nn);
    fmq_strategy_destroy(&a->st);
    fmq_gdelta_destroy(&a->gd);
    fmq_free(a->classes);
    fmq_free(a->seen);
    fmq_buf_fini(&a->plain);
    fmq_free(a);
    *ap = NULL;
}

/* -------------------------------------------------------------- global */

/* The round's instructions, everything of a global but its weights. The
 * first call of a round fixes its deadline. */
static void fill_global(fmq_agg *a, uint64_t now_ms, fmq_msg_global *gp)
{
    if (a->deadline_ms == 0) {
        a->start_ms = now_ms;
        a->deadline_ms = now_ms + a->cfg.round_ms;
        a->dirty = true;
    }
    fmq_msg_global g;
    fmq_msg_global_init(&g);
    snprintf(g.fleet, sizeof g.fleet, "%s", a->fleet);
    snprintf(g.model, sizeof g.model, "%s", a->model);
    g.round = a->round;
    g.version = a->version;
    g.deadline_ms = a->deadline_ms;
    g.ts_ms = now_ms;
    g.train = a->cfg.train;
    g.uq = a->cfg.uq;
    g.max_staleness =
        a->cfg.late == FMQ_AGG_LATE_FOLD ? a->cfg.max_staleness : 0;
    fmq_strategy_configure(a->st, &g); /* st, and the round's instructions */
    g.classes = a->classes; /* borrowed: the caller clears it before fini */
    g.nclasses = a->cfg.n_uq_classes;
    g.deltas = a->gd != NULL && !a->gd_off;
    *gp = g;
}

/* Where a global or delta is encoded: straight into out when nothing
 * signs it (encoders append), else into the scratch sign_out signs. */
static fmq_buf *body_buf(fmq_agg *a, fmq_buf *out)
{
    if (!a->cfg.sign_key)
        return out;
    fmq_buf_reset(&a->plain);
    return &a->plain;
}

/* Appends the body body_buf gave to out, signed when there is a signing
 * key (without one it is in out already). */
static fmq_err sign_out(fmq_agg *a, const char *what, fmq_buf *out)
{
    if (!a->cfg.sign_key)
        return FMQ_OK;
    fmq_err e = fmq_trust_sign(a->cfg.sign_key, NULL, a->plain.data,
                               a->plain.len, out);
    if (e)
        fmq_log_err("aggregator: round %llu: signing the %s: %s",
                    (unsigned long long)a->round, what, fmq_strerror(e));
    return e;
}

fmq_err fmq_agg_encode_global(fmq_agg *a, uint64_t now_ms, fmq_buf *out)
{
    fmq_msg_global g;
    fill_global(a, now_ms, &g);
    fmq_quant_cfg qc = {a->cfg.global_scheme, 0, false};
    fmq_err e = fmq_quant_encode(&qc, fmq_nn_params(a->nn), a->P, NULL,
                                 &g.weights);
    if (!e)
        e = fmq_codec_encode_global(&g, body_buf(a, out));
    if (!e)
        e = sign_out(a, "global", out);
    fmq_qtensor_fini(&g.weights);
    g.classes = NULL;
    g.nclasses = 0;
    fmq_msg_global_fini(&g);
    return e;
}

fmq_err fmq_agg_encode_delta(fmq_agg *a, uint64_t now_ms, fmq_buf *out)
{
    const fmq_qtensor *q;
    uint64_t base;
    if (!a->gd || fmq_gdelta_current(a->gd, &q, &base) ||
        base + 1 != a->version)
        return FMQ_ERR_NOTFOUND;
    fmq_msg_delta m;
    fmq_msg_delta_init(&m);
    fill_global(a, now_ms, &m.g);
    m.base = base;
    m.delta = *q; /* borrowed */
    fmq_err e = fmq_codec_encode_delta(&m, body_buf(a, out));
    if (!e)
        e = sign_out(a, "delta", out);
    memset(&m.delta, 0, sizeof m.delta);
    m.g.classes = NULL;
    m.g.nclasses = 0;
    fmq_msg_delta_fini(&m);
    return e;
}

/* -------------------------------------------------------------- update */

static void count_reason(fmq_agg *a, const char *why)
{
    for (uint32_t i = 0; i < a->nreasons; i++)
        if (strcmp(a->reasons[i].reason, why) == 0) {
            a->reasons[i].count++;
            return;
        }
    if (a->nreasons < 16) {
        snprintf(a->reasons[a->nreasons].reason,
                 sizeof a->reasons[0].reason, "%s", why);
        a->reasons[a->nreasons++].count = 1;
    }
}

static fmq_err reject(fmq_agg *a, fmq_err e, const char *dev,
                      const char *what, fmq_agg_verdict *v)
{
    *v = FMQ_AGG_REJECTED;
    a->rejected++;
    a->dirty = true;
    count_reason(a, fmq_errname(e));
    fmq_log_warn("aggregator: round %llu: update from %s rejected: %s%s%s",
                 (unsigned long long)a->round, dev[0] ? dev : "?",
                 fmq_errname(e), what && what[0] ? ": " : "",
                 what ? what : "");
    return e;
}

/* The device id at the end of fedmq/<fleet>/update/<device>. */
static const char *topic_device(const fmq_agg *a, const char *topic)
{
    char prefix[FMQ_ID_MAX + 32];
    int n = snprintf(prefix, sizeof prefix, "fedmq/%s/update/", a->fleet);
    if (!topic || n < 0 || strncmp(topic, prefix, (size_t)n) != 0)
        return NULL;
    return topic + n;
}

fmq_err fmq_agg_on_update(fmq_agg *a, const char *topic, const uint8_t *buf,
                          size_t len, uint64_t now_ms, fmq_agg_verdict *v)
{
    a->last_norm = NAN;
    (void)now_ms;
    a->bytes_in += len;
    a->dirty = true;
    const char *tdev = topic_device(a, topic);
    char what[200] = "";
    if (!tdev || !fmq_id_valid(tdev))
        return reject(a, FMQ_ERR_INVAL, "", "topic is not an update topic of "
                                            "this fleet", v);
    /* Nothing bigger than this model's float32 update gets decoded. */
    fmq_codec_limits lim = fmq_codec_limits_default();
    lim.max_n = a->P;
    lim.max_msg = (size_t)a->P * 4 + 65536;
    fmq_codec_detail det = {{0}};
    fmq_err e;
    /* Open a sealed update (SPEC §7.2) for the device the TOPIC names:
     * moved to another device's topic, or with its round changed, it does
     * not open. Sealing required: anything else is refused here. */
    bool sealed = a->cfg.require_seal;
    if (!sealed && a->cfg.seal_key) {
        fmq_msg_type t = FMQ_MSG_UNKNOWN;
        sealed = fmq_codec_peek(buf, len, &lim, &t, NULL) == FMQ_OK &&
                 t == FMQ_MSG_SEALED;
    }
    uint64_t sealed_round = 0;
    if (sealed) {
        fmq_buf_reset(&a->plain);
        e = fmq_trust_open(a->cfg.seal_key, NULL, a->fleet, tdev, buf, len,
                           &lim, &a->plain, &sealed_round, &det);
        if (e) {
            if (e == FMQ_ERR_SEAL && strncmp(det.what, "unsealed", 8) == 0)
                snprintf(det.what, sizeof det.what, "an unsealed update "
                         "(sealing is required; --no-seal accepts them)");
            return reject(a, e, tdev, det.what, v);
        }
        buf = a->plain.data;
        len = a->plain.len;
    }
    fmq_msg_update u;
    e = fmq_codec_decode_update(buf, len, &lim, &u, &det);
    if (e)
        return reject(a, e, tdev, det.what, v);
    if (strcmp(u.fleet, a->fleet) != 0) {
        snprintf(what, sizeof what, "fleet %s", u.fleet);
        return reject(a, FMQ_ERR_FLEET, tdev, what, v);
    }
    if (strcmp(u.device, tdev) != 0) {
        snprintf(what, sizeof what, "says it is %s", u.device);
        return reject(a, FMQ_ERR_INVAL, tdev, what, v);
    }
    if (sealed && u.round != sealed_round) {
        snprintf(what, sizeof what, "sealed for round %llu, the update "
                 "inside says round %llu", (unsigned long long)sealed_round,
                 (unsigned long long)u.round);
        return reject(a, FMQ_ERR_SEAL, tdev, what, v);
    }
    if (u.delta.n != a->P) {
        snprintf(what, sizeof what, "%u values, model has %u", u.delta.n,
                 a->P);
        return reject(a, FMQ_ERR_MODEL, tdev, what, v);
    }
    if (u.round > a->round || u.version > a->version ||
        (u.round == a->round && u.version != a->version)) {
        snprintf(what, sizeof what, "round %llu version %llu, current %llu/%llu",
                 (unsigned long long)u.round, (unsigned long long)u.version,
                 (unsigned long long)a->round, (unsigned long long)a->version);
        return reject(a, FMQ_ERR_STALE, tdev, what, v);
    }
    if (seen_has(a, tdev, u.round)) {
        snprintf(what, sizeof what, "round %llu", (unsigned long long)u.round);
        return reject(a, FMQ_ERR_DUPLICATE, tdev, what, v);
    }
    /* the scheme its class was told (SPEC §6.1; classes.h) */
    const fmq_uq *told = fmq_classes_pick(&a->cfg.uq, a->classes,
                                          a->cfg.n_uq_classes, u.cls);
    if ((e = fmq_classes_check(told, &u.delta, what, sizeof what))) {
        if (u.cls[0])
            snprintf(what + strlen(what), sizeof what - strlen(what),
                     " for class %s", u.cls);
        return reject(a, e, tdev, what, v);
    }
    /* finite, and the norm bound (strategy.h), before any strategy */
    double norm;
    e = fmq_strategy_check(a->st, &u.delta, &norm);
    a->last_norm = norm;
    if (e == FMQ_ERR_NORM)
        snprintf(what, sizeof what, "L2 norm %.4g > %.4g", norm,
                 fmq_strategy_norm_bound(a->st));
    if (e)
        return reject(a, e, tdev, e == FMQ_ERR_NONFINITE ? "delta norm" : what,
                      v);
    uint64_t tau = a->round - u.round;
    if (tau > 0 && fmq_strategy_async(a->st)) {
        /* buffered asynchronous: no late policy, a staleness bound */
        if (tau > a->cfg.max_staleness) {
            snprintf(what, sizeof what, "version %llu is %llu behind %llu, "
                     "max staleness %u", (unsigned long long)u.version,
                     (unsigned long long)tau, (unsigned long long)a->version,
                     a->cfg.max_staleness);
            return reject(a, FMQ_ERR_STALE, tdev, what, v);
        }
    } else if (tau > 0) {
        if (a->cfg.late == FMQ_AGG_LATE_DROP || tau > a->cfg.max_staleness) {
            a->late++;
            *v = FMQ_AGG_DROPPED;
            fmq_log_info("aggregator: round %llu: late update from %s "
                         "(staleness %llu) dropped",
                         (unsigned long long)a->round, tdev,
                         (unsigned long long)tau);
            return seen_add(a, tdev, u.round);
        }
    }
    fmq_strategy_update su = {.device = tdev, .delta = &u.delta,
                              .samples = u.samples, .staleness = tau,
                              .norm = norm};
    if ((e = fmq_strategy_add(a->st, &su)))
        return reject(a, e, tdev, "accumulate", v);
    if ((e = seen_add(a, tdev, u.round)))
        return e;
    if (tau > 0) {
        a->late++;
        a->late_folded++;
        *v = FMQ_AGG_FOLDED;
    } else {
        *v = FMQ_AGG_COUNTED;
    }
    /* the training loss of the round's updates: on time ones, and with an
     * asynchronous strategy every update of the version (most are stale) */
    if (tau == 0 || fmq_strategy_async(a->st)) {
        a->loss_sum += u.loss;
        a->loss_sq += (double)u.loss * u.loss;
    }
    return FMQ_OK;
}

/* Updates counted for the current round (not late ones). */
static uint32_t on_time(const fmq_agg *a)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < a->nseen; i++)
        n += a->seen[i].round == a->round;
    return n;
}

bool fmq_agg_tick(fmq_agg *a, uint64_t now_ms)
{
    if (fmq_strategy_async(a->st)) /* a version every K updates */
        return fmq_strategy_ready(a->st);
    uint32_t n = on_time(a), added = fmq_strategy_count(a->st);
    if (n >= a->cfg.cohort_size && added > 0)
        return true;
    if (a->deadline_ms == 0 || now_ms < a->deadline_ms)
        return false;
    if (added >= a->cfg.quorum && n >= a->cfg.quorum)
        return true;
    a->deadline_ms = now_ms + a->cfg.round_ms;
    a->extensions++;
    a->dirty = true;
    fmq_log_notice("aggregator: round %llu: deadline passed with %u of %u "
                   "(quorum %u); extended by %u ms",
                   (unsigned long long)a->round, n, a->cfg.cohort_size,
                   a->cfg.quorum, a->cfg.round_ms);
    return false;
}

/* --------------------------------------------------------------- close */

fmq_err fmq_agg_close(fmq_agg *a, const fmq_dataset *holdout, uint64_t now_ms,
                      fmq_agg_report *rep)
{
    fmq_err e;
    memset(rep, 0, sizeof *rep);
    /* asynchronous: the version's updates, stale ones too (also in late) */
    uint32_t n = on_time(a) +
                 (fmq_strategy_async(a->st) ? a->late_folded : 0);
    rep->round = a->round;
    rep->cohort = a->cfg.cohort_size;
    rep->participants = n;
    rep->late = a->late;
    rep->late_folded = a->late_folded;
    rep->rejected = a->rejected;
    memcpy(rep->reasons, a->reasons, sizeof rep->reasons);
    rep->nreasons = a->nreasons;
    rep->loss_mean = n ? a->loss_sum / n : NAN;
    rep->loss_std = n ? sqrt(fmax(0, a->loss_sq / n - rep->loss_mean *
                                                       rep->loss_mean))
                      : NAN;
    rep->bytes_in = a->bytes_in;
    rep->bytes_out = a->bytes_out;
    rep->seconds = a->start_ms && now_ms > a->start_ms
                       ? (now_ms - a->start_ms) / 1000.0
                       : 0;
    rep->extensions = a->extensions;
    fmq_strategy_result sr;
    if (a->gd && a->gd_off) /* its last delta has been sent: drop it */
        fmq_gdelta_destroy(&a->gd);
    if (a->gd) /* the base of the delta this close makes */
        fmq_gdelta_begin(a->gd, fmq_nn_params(a->nn));
    e = fmq_strategy_finish(a->st, a->round, fmq_nn_params(a->nn), &sr);
    /* the model moves by what the devices will add (gdelta.h); a delta
     * that cannot be made leaves the strategy's model, fetched in full */
    if (a->gd && (e == FMQ_OK || e == FMQ_ERR_STATE) &&
        fmq_gdelta_fold(a->gd, fmq_nn_params(a->nn), a->version) != FMQ_OK)
        rep->no_delta = true; /* logged by gdelta */
    if (e == FMQ_ERR_STATE) {
        rep->kept_model = true;
        fmq_log_warn("aggregator: round %llu: strategy %s aggregated "
                     "nothing; the model is kept",
                     (unsigned long long)a->round, fmq_strategy_spec(a->st));
    } else if (e) {
        return e;
    }
    /* updates the norm bound refused when the round closed (kept updates
     * against the round's median) were counted on arrival: move them */
    if (sr.norm_rejected) {
        uint32_t late = sr.norm_rejected_late;
        uint32_t on = sr.norm_rejected - late;
        rep->participants -= on < rep->participants ? on : rep->participants;
        rep->late -= late < rep->late ? late : rep->late;
        rep->late_folded -= late < rep->late_folded ? late : rep->late_folded;
        rep->rejected += sr.norm_rejected;
        for (uint32_t i = 0; i < sr.norm_rejected; i++)
            count_reason(a, fmq_errname(FMQ_ERR_NORM));
        memcpy(rep->reasons, a->reasons, sizeof rep->reasons);
        rep->nreasons = a->nreasons;
    }
    if (fmq_strategy_async(a->st))
        rep->cohort = sr.used; /* the buffer that made this version */
    snprintf(rep->strategy, sizeof rep->strategy, "%s",
             fmq_strategy_spec(a->st));
    snprintf(rep->strategy_note, sizeof rep->strategy_note, "%s", sr.note);
    rep->clipped = sr.clipped;
    rep->dp_clip = sr.dp_clip;
    rep->dp_noise = sr.dp_noise;
    rep->test_loss = rep->test_acc = NAN;
    if (holdout) {
        fmq_nn_eval ev;
        if ((e = fmq_nn_evaluate(a->nn, holdout, &ev)) == FMQ_OK) {
            rep->test_loss = ev.loss;
            rep->test_acc = ev.accuracy;
            fmq_nn_eval_fini(&ev);
        }
    }
    a->round++;
    a->version++;
    rep->version = a->version;
    a->loss_sum = a->loss_sq = 0;
    a->late = a->late_folded = a->rejected = a->extensions = 0;
    a->nreasons = 0;
    a->bytes_in = a->bytes_out = 0;
    a->deadline_ms = a->start_ms = 0;
    /* keep (device, round) only while such a round can still be folded */
    uint32_t keep = 0;
    for (uint32_t i = 0; i < a->nseen; i++)
        if (a->seen[i].round + a->cfg.max_staleness + 1 >= a->round)
            a->seen[keep++] = a->seen[i];
    a->nseen = keep;
    a->dirty = true;
    return fmq_agg_checkpoint(a);
}

/* ------------------------------------------------------------- metrics */

void fmq_agg_metrics(const fmq_agg *a, const fmq_agg_report *rep,
                     uint64_t now_ms, fmq_msg_metrics *out)
{
    fmq_msg_metrics m;
    fmq_msg_metrics_init(&m);
    snprintf(m.fleet, sizeof m.fleet, "%s", a->fleet);
    m.round = rep->round;
    m.version = rep->version;
    m.cohort = rep->cohort;
    m.participants = rep->participants;
    m.late = rep->late;
    m.rejected = (fmq_reason_count *)rep->reasons;
    m.nrejected = rep->nreasons;
    m.loss_mean = rep->loss_mean;
    m.loss_std = rep->loss_std;
    m.test_loss = rep->test_loss;
    m.test_acc = rep->test_acc;
    m.bytes_in = rep->bytes_in;
    m.bytes_out = rep->bytes_out;
    m.seconds = rep->seconds;
    snprintf(m.strategy, sizeof m.strategy, "%s", fmq_strategy_name(a->st));
    m.dp_clip = rep->dp_clip;
    m.dp_noise = rep->dp_noise;
    m.ts_ms = now_ms;
    *out = m;
}

fmq_err fmq_agg_encode_metrics(const fmq_agg *a, const fmq_agg_report *rep,
                               uint64_t now_ms, fmq_buf *out)
{
    fmq_msg_metrics m;
    fmq_agg_metrics(a, rep, now_ms, &m);
    return fmq_codec_encode_metrics(&m, out); /* m borrows only from rep */
}

void fmq_agg_format_report(const fmq_agg_report *r, char *buf, size_t len)
{
    char rej[256] = "";
    size_t off = 0;
    for (uint32_t i = 0; i < r->nreasons && off < sizeof rej; i++) {
        int k = snprintf(rej + off, sizeof rej - off, "%s%s:%llu",
                         i ? "," : " (", r->reasons[i].reason,
                         (unsigned long long)r->reasons[i].count);
        if (k < 0)
            break;
        off += (size_t)k;
    }
    if (r->nreasons && off < sizeof rej - 1)
        snprintf(rej + off, sizeof rej - off, ")");
    /* what the strategy did: its note, clipped updates, a kept model */
    char parts[3][160] = {"", "", ""}, what[520] = "";
    unsigned np = 0;
    if (r->strategy_note[0])
        snprintf(parts[np++], sizeof parts[0], "%s", r->strategy_note);
    if (r->clipped)
        snprintf(parts[np++], sizeof parts[0], "%u clipped", r->clipped);
    if (r->kept_model)
        snprintf(parts[np++], sizeof parts[0], "model kept");
    if (np)
        snprintf(what, sizeof what, " (%s%s%s%s%s)", parts[0],
                 np > 1 ? ", " : "", parts[1], np > 2 ? ", " : "", parts[2]);
    /* the seconds stay last: scripts read "…, K KB in, S s" at the end */
    snprintf(buf, len,
             "round %llu: %u/%u devices, %u late (%u folded), %u rejected%s, "
             "strategy %s%s, train loss %.4f, test acc %.4f, %.1f KB in, "
             "%.2f s",
             (unsigned long long)r->round, r->participants, r->cohort, r->late,
             r->late_folded, r->rejected, rej,
             r->strategy[0] ? r->strategy : "fedavg", what, r->loss_mean,
             r->test_acc, r->bytes_in / 1024.0, r->seconds);
}
