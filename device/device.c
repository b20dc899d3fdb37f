/*
 * device.c — the device core: global in, update out (see device.h).
 *
 * device.state (proto/SPEC.md §9.1 "restart-safe"), written with
 * fmq_file_write_atomic after every change that matters:
 *
 *   "FMQDEV02" | fleet[65] | id[65] | u64 version | u64 round |
 *   u64 seen_ts | u64 last_trained | u8 pending | u8 acked |
 *   u8 deltas | u8 held_delta | model[65] | u32 P | f32 w[P] |
 *   u32 nres | f32 residual[nres] | u32 glen | global[glen] |
 *   u32 ulen | update[ulen] | u32 crc32 of all before
 *
 * w are the weights held: after deltas (SPEC §6.6) they are no longer
 * those of any one message, so they are kept themselves. global is the
 * raw model message last taken, as received: the `signed` envelope of a
 * global or a delta (held_delta), or a plain one with no_verify; the
 * runner hands it to the core again at start. "FMQDEV01", the format
 * before deltas, had neither deltas, held_delta, model nor w: its model is
 * restored from the global's body (verified when it arrived; the state
 * file is the device's own). update is the update of round last_trained exactly as
 * published: the sealed envelope when sealing is on (the plaintext never
 * reaches the disk), so a resend is the same bytes. The global is saved before
 * training starts, so a device that crashes while training trains that
 * round after its restart (the broker will not deliver the global again:
 * it was acknowledged).
 */
#include "device.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"
#include "cohort.h"
#include "quant.h"

#define FMQ_DEV__MAGIC "FMQDEV02"
#define FMQ_DEV__MAGIC_V1 "FMQDEV01"
/* The largest device.state we read: a global and an update of the largest
 * tensors the codec accepts are far below this for any model a device
 * trains; the bound only stops a corrupt length from allocating. */
#define FMQ_DEV__STATE_MAX ((size_t)1 << 31)

struct fmq_device {
    char fleet[FMQ_ID_MAX + 1], id[FMQ_ID_MAX + 1], cls[FMQ_ID_MAX + 1];
    char *state_dir;
    const fmq_trainer_ops *ops;
    fmq_trainer_setup setup;
    uint64_t seed, quant_seed;
    uint32_t party;

    fmq_trainer tr;
    bool tr_open;
    char tr_model[FMQ_ID_MAX + 1];

    /* The model held: the last accepted global. */
    uint32_t P;
    float *w;        // (P,) global weights
    float *local;    // (P,) scratch: local weights after training
    float *delta;    // (P,) scratch: local - global
    float *residual; // (P,) error-feedback residual (zero at first)
    float *res_save; // (P,) the residual before this round (undo)
    uint64_t version, round, seen_ts, last_trained;
    char model[FMQ_ID_MAX + 1]; /* the held global's model spec */
    fmq_buf global_raw;  /* the model message last taken */
    bool deltas;         /* it said gd: follow model/delta */
    bool held_delta;     /* global_raw is a delta */

    fmq_buf update; /* the update of round last_trained */
    bool pending, acked;

    /* trust */
    const fmq_trust_key *keys[FMQ_DEVICE_KEYS_MAX];
    size_t nkeys;
    const fmq_trust_key *seal_key;
    bool no_verify, no_seal;
    fmq_buf plain; /* scratch: the update before sealing */

    fmq_device_tamper_fn tamper_fn; /* testing and simulation only */
    void *tamper_arg;

    fmq_device_stats st;
};

/* ------------------------------------------------------------- helpers */

static void state_path(const fmq_device *d, char *buf, size_t len)
{
    snprintf(buf, len, "%s/device.state", d->state_dir);
}

static fmq_err save_state(fmq_device *d)
{
    if (!d->state_dir)
        return FMQ_OK;
    fmq_wr w;
    fmq_wr_init(&w);
    fmq_wr_bytes(&w, FMQ_DEV__MAGIC, 8);
    fmq_wr_str(&w, d->fleet, sizeof d->fleet);
    fmq_wr_str(&w, d->id, sizeof d->id);
    fmq_wr_u64(&w, d->version);
    fmq_wr_u64(&w, d->round);
    fmq_wr_u64(&w, d->seen_ts);
    fmq_wr_u64(&w, d->last_trained);
    fmq_wr_u8(&w, d->pending);
    fmq_wr_u8(&w, d->acked);
    fmq_wr_u8(&w, d->deltas);
    fmq_wr_u8(&w, d->held_delta);
    fmq_wr_str(&w, d->model, sizeof d->model);
    fmq_wr_u32(&w, d->w ? d->P : 0);
    if (d->w)
        fmq_wr_floats(&w, d->w, d->P);
    fmq_wr_u32(&w, d->residual ? d->P : 0);
    if (d->residual)
        fmq_wr_floats(&w, d->residual, d->P);
    fmq_wr_u32(&w, (uint32_t)d->global_raw.len);
    fmq_wr_bytes(&w, d->global_raw.data, d->global_raw.len);
    fmq_wr_u32(&w, (uint32_t)d->update.len);
    fmq_wr_bytes(&w, d->update.data, d->update.len);
    fmq_wr_crc(&w);
    fmq_err e = w.e;
    if (!e) {
        char path[1100];
        state_path(d, path, sizeof path);
        e = fmq_file_write_atomic(path, w.b.data, w.b.len);
        if (e)
            fmq_log_err("device %s: saving %s: %s", d->id, path,
                        fmq_strerror(e));
    }
    fmq_wr_fini(&w);
    return e;
}

/* (Re)allocates the per-parameter arrays for P values. */
static fmq_err size_arrays(fmq_device *d, uint32_t P)
{
    if (d->P == P && d->w)
        return FMQ_OK;
    float *w = fmq_alloc_array(P, sizeof(float));
    float *l = fmq_alloc_array(P, sizeof(float));
    float *t = fmq_alloc_array(P, sizeof(float));
    float *s = fmq_alloc_array(P, sizeof(float));
    float *r = fmq_calloc(P, sizeof(float));
    if (!w || !l || !t || !s || !r) {
        fmq_free(w);
        fmq_free(l);
        fmq_free(t);
        fmq_free(s);
        fmq_free(r);
        return FMQ_ERR_NOMEM;
    }
    fmq_free(d->w);
    fmq_free(d->local);
    fmq_free(d->delta);
    fmq_free(d->res_save);
    fmq_free(d->residual);
    d->w = w;
    d->local = l;
    d->delta = t;
    d->res_save = s;
    d->residual = r;
    d->P = P;
    return FMQ_OK;
}

/* Takes a decoded, checked global as the model held. */
static fmq_err hold_global(fmq_device *d, const fmq_msg_global *g,
                           const uint8_t *raw, size_t len)
{
    fmq_err e = fmq_quant_check(&g->weights);
    if (e)
        return e;
    if (g->weights.scheme != FMQ_Q_F32 && g->weights.scheme != FMQ_Q_F16)
        return FMQ_ERR_SCHEME;
    fmq_buf nraw;
    fmq_buf_init(&nraw);
    if ((e = fmq_buf_append(&nraw, raw, len)))
        return e;
    if ((e = size_arrays(d, g->weights.n))) {
        fmq_buf_fini(&nraw);
        return e;
    }
    if ((e = fmq_quant_decode(&g->weights, d->w))) {
        fmq_buf_fini(&nraw);
        return e;
    }
    fmq_buf_fini(&d->global_raw);
    d->global_raw = nraw;
    d->version = g->version;
    d->round = g->round;
    d->seen_ts = g->ts_ms;
    d->deltas = g->deltas;
    d->held_delta = false;
    snprintf(d->model, sizeof d->model, "%s", g->model);
    return FMQ_OK;
}

/* Applies a decoded delta whose base is the version held (SPEC §6.6):
 * w += dequant(delta), then holds its version, round and instructions.
 * FMQ_ERR_MODEL for another length; nothing changes on error. */
static fmq_err hold_delta(fmq_device *d, const fmq_msg_delta *m,
                          const uint8_t *raw, size_t len)
{
    if (!d->w || m->delta.n != d->P)
        return FMQ_ERR_MODEL;
    fmq_buf nraw;
    fmq_buf_init(&nraw);
    fmq_err e = fmq_buf_append(&nraw, raw, len);
    if (!e)
        e = fmq_quant_add(&m->delta, d->w, d->local); /* local: scratch */
    if (e) {
        fmq_buf_fini(&nraw);
        return e;
    }
    fmq_buf_fini(&d->global_raw);
    d->global_raw = nraw;
    d->version = m->g.version;
    d->round = m->g.round;
    d->seen_ts = m->g.ts_ms;
    d->deltas = m->g.deltas;
    d->held_delta = true;
    snprintf(d->model, sizeof d->model, "%s", m->g.model);
    d->st.deltas++;
    return FMQ_OK;
}

/* The global inside a held message: the body of a signed envelope
 * (unverified: it was verified when it arrived), else the message. */
static fmq_err held_body(const uint8_t *buf, size_t len, const uint8_t **body,
                         size_t *body_len, fmq_codec_detail *det)
{
    fmq_msg_type t = FMQ_MSG_UNKNOWN;
    *body = buf;
    *body_len = len;
    if (fmq_codec_peek(buf, len, NULL, &t, NULL) != FMQ_OK ||
        t != FMQ_MSG_SIGNED)
        return FMQ_OK;
    fmq_msg_signed m;
    fmq_err e = fmq_codec_decode_signed(buf, len, NULL, &m, det);
    if (!e) {
        *body = m.body;
        *body_len = m.body_len;
    }
    return e;
}

static fmq_err load_state(fmq_device *d)
{
    char path[1100];
    state_path(d, path, sizeof path);
    uint8_t *buf;
    size_t len;
    fmq_err e = fmq_file_read(path, FMQ_DEV__STATE_MAX, &buf, &len);
    if (e == FMQ_ERR_NOTFOUND)
        return FMQ_OK;
    if (e) {
        fmq_log_err("device %s: reading %s: %s", d->id, path, fmq_strerror(e));
        return e;
    }
    fmq_rd r;
    char magic[8], fleet[FMQ_ID_MAX + 1], id[FMQ_ID_MAX + 1];
    e = FMQ_ERR_DATA;
    if (!fmq_rd_init_crc(&r, buf, len)) {
        fmq_log_err("device %s: %s is truncated or corrupt (CRC)", d->id,
                    path);
        goto out;
    }
    fmq_rd_bytes(&r, magic, 8);
    fmq_rd_str(&r, fleet, sizeof fleet);
    fmq_rd_str(&r, id, sizeof id);
    bool v1 = memcmp(magic, FMQ_DEV__MAGIC_V1, 8) == 0;
    if (r.bad || (!v1 && memcmp(magic, FMQ_DEV__MAGIC, 8)) ||
        strcmp(fleet, d->fleet) || strcmp(id, d->id)) {
        fmq_log_err("device %s: %s belongs to device %s of fleet %s", d->id,
                    path, id, fleet);
        goto out;
    }
    uint64_t version = fmq_rd_u64(&r), round = fmq_rd_u64(&r);
    uint64_t seen_ts = fmq_rd_u64(&r), last = fmq_rd_u64(&r);
    bool pending = fmq_rd_u8(&r), acked = fmq_rd_u8(&r);
    bool deltas = false, held_delta = false;
    char model[FMQ_ID_MAX + 1] = "";
    uint32_t P = 0;
    const uint8_t *wraw = NULL;
    if (!v1) {
        deltas = fmq_rd_u8(&r);
        held_delta = fmq_rd_u8(&r);
        fmq_rd_str(&r, model, sizeof model);
        P = fmq_rd_u32(&r);
        wraw = fmq_rd_view(&r, (size_t)P * 4);
    }
    uint32_t nres = fmq_rd_u32(&r);
    const uint8_t *res = fmq_rd_view(&r, (size_t)nres * 4);
    uint32_t glen = fmq_rd_u32(&r);
    const uint8_t *graw = fmq_rd_view(&r, glen);
    uint32_t ulen = fmq_rd_u32(&r);
    const uint8_t *uraw = fmq_rd_view(&r, ulen);
    if (r.bad || r.left) {
        fmq_log_err("device %s: %s has a bad layout", d->id, path);
        goto out;
    }
    if (!v1 && P) {
        /* the weights themselves (they may come from deltas) */
        if (!glen || !model[0] ||
            (nres && nres != P)) {
            fmq_log_err("device %s: %s: weights without a model message, "
                        "model or matching residual", d->id, path);
            goto out;
        }
        if ((e = size_arrays(d, P)))
            goto out;
        for (uint32_t i = 0; i < P; i++)
            d->w[i] = fmq_load_f32le(wraw + 4 * (size_t)i);
        for (uint32_t i = 0; i < nres; i++)
            d->residual[i] = fmq_load_f32le(res + 4 * (size_t)i);
        if ((e = fmq_buf_append(&d->global_raw, graw, glen)))
            goto out;
        snprintf(d->model, sizeof d->model, "%s", model);
        d->deltas = deltas;
        d->held_delta = held_delta;
    } else if (v1 && glen) {
        fmq_msg_global g;
        fmq_msg_global_init(&g);
        fmq_codec_detail det = {{0}};
        const uint8_t *body;
        size_t blen;
        e = held_body(graw, glen, &body, &blen, &det);
        if (!e)
            e = fmq_codec_decode_global(body, blen, NULL, &g, &det);
        if (!e)
            e = hold_global(d, &g, graw, glen);
        fmq_msg_global_fini(&g);
        if (e) {
            fmq_log_err("device %s: %s: the global held does not decode: %s "
                        "%s", d->id, path, fmq_strerror(e), det.what);
            e = FMQ_ERR_DATA;
            goto out;
        }
        if (nres && nres != d->P) {
            fmq_log_err("device %s: %s: residual of %u values for a model "
                        "of %u", d->id, path, nres, d->P);
            e = FMQ_ERR_DATA;
            goto out;
        }
        for (uint32_t i = 0; i < nres; i++)
            d->residual[i] = fmq_load_f32le(res + 4 * (size_t)i);
    }
    if ((e = fmq_buf_append(&d->update, uraw, ulen)))
        goto out;
    d->version = version;
    d->round = round;
    d->seen_ts = seen_ts;
    d->last_trained = last;
    d->pending = pending && ulen > 0;
    d->acked = acked;
    fmq_log_info("device %s: resumed from %s: model version %llu, round "
                 "%llu, last trained %llu%s",
                 d->id, path, (unsigned long long)version,
                 (unsigned long long)round, (unsigned long long)last,
                 d->pending ? (d->acked ? ", update sent" : ", update pending")
                            : "");
    e = FMQ_OK;
out:
    fmq_free(buf);
    return e;
}

/* ---------------------------------------------------------------- open */

fmq_err fmq_device_open(const fmq_device_cfg *cfg, fmq_device **out)
{
    *out = NULL;
    if (!cfg->fleet || !fmq_id_valid(cfg->fleet) || !cfg->id ||
        !fmq_id_valid(cfg->id) || (cfg->cls && !fmq_id_valid(cfg->cls)))
        return FMQ_ERR_INVAL;
    if (cfg->nagg_keys > FMQ_DEVICE_KEYS_MAX ||
        (cfg->nagg_keys && !cfg->agg_keys)) {
        fmq_log_err("device %s: more than %d aggregator keys", cfg->id,
                    FMQ_DEVICE_KEYS_MAX);
        return FMQ_ERR_CONFIG;
    }
    for (size_t i = 0; i < cfg->nagg_keys; i++)
        if (!cfg->agg_keys[i])
            return FMQ_ERR_INVAL;
    if (!cfg->no_verify && cfg->nagg_keys == 0) {
        fmq_log_err("device %s: no aggregator key to verify global models "
                    "with (agg_key; no_verify turns checking off, for "
                    "debugging only)", cfg->id);
        return FMQ_ERR_CONFIG;
    }
    if (!cfg->no_seal && !cfg->seal_key && cfg->nagg_keys == 0) {
        fmq_log_err("device %s: no key to seal updates to (agg_key or "
                    "seal_key; no_seal sends them plain, for debugging "
                    "only)", cfg->id);
        return FMQ_ERR_CONFIG;
    }
    fmq_device *d = fmq_calloc(1, sizeof *d);
    if (!d)
        return FMQ_ERR_NOMEM;
    for (size_t i = 0; i < cfg->nagg_keys; i++)
        d->keys[i] = cfg->agg_keys[i];
    d->nkeys = cfg->nagg_keys;
    d->seal_key = cfg->seal_key;
    d->no_verify = cfg->no_verify;
    d->no_seal = cfg->no_seal;
    d->tamper_fn = cfg->tamper_fn;
    d->tamper_arg = cfg->tamper_arg;
    fmq_buf_init(&d->plain);
    snprintf(d->fleet, sizeof d->fleet, "%s", cfg->fleet);
    snprintf(d->id, sizeof d->id, "%s", cfg->id);
    if (cfg->cls)
        snprintf(d->cls, sizeof d->cls, "%s", cfg->cls);
    d->ops = cfg->trainer ? cfg->trainer : &fmq_trainer_builtin;
    d->setup = cfg->setup;
    d->seed = cfg->seed;
    d->quant_seed = cfg->quant_seed;
    d->party = cfg->party;
    fmq_buf_init(&d->global_raw);
    fmq_buf_init(&d->update);
    d->st.last_loss = d->st.last_norm = d->st.last_train_s = NAN;
    fmq_err e = FMQ_OK;
    if (cfg->state_dir) {
        if (!(d->state_dir = fmq_strdup(cfg->state_dir)))
            e = FMQ_ERR_NOMEM;
        else if ((e = fmq_mkdir_p(cfg->state_dir)))
            fmq_log_err("device %s: state directory %s: %s", d->id,
                        cfg->state_dir, fmq_strerror(e));
        else
            e = load_state(d);
    }
    if (e) {
        fmq_device_destroy(&d);
        return e;
    }
    *out = d;
    return FMQ_OK;
}

void fmq_device_destroy(fmq_device **dp)
{
    if (!dp || !*dp)
        return;
    fmq_device *d = *dp;
    if (d->tr_open)
        fmq_trainer_close(&d->tr);
    fmq_free(d->w);
    fmq_free(d->local);
    fmq_free(d->delta);
    fmq_free(d->residual);
    fmq_free(d->res_save);
    fmq_buf_fini(&d->global_raw);
    fmq_buf_fini(&d->update);
    fmq_buf_fini(&d->plain);
    fmq_free(d->state_dir);
    fmq_free(d);
    *dp = NULL;
}

/* --------------------------------------------------------------- train */

static fmq_err open_trainer(fmq_device *d, const char *model)
{
    if (d->tr_open && strcmp(d->tr_model, model) == 0)
        return FMQ_OK;
    if (d->tr_open) {
        fmq_trainer_close(&d->tr);
        d->tr_open = false;
    }
    fmq_trainer_setup s = d->setup;
    s.model = model;
    fmq_err e = fmq_trainer_open(&d->tr, d->ops, &s);
    if (e) {
        fmq_log_err("device %s: trainer %s for model %s: %s", d->id,
                    d->ops->name ? d->ops->name : "?", model, fmq_strerror(e));
        return e;
    }
    d->tr_open = true;
    snprintf(d->tr_model, sizeof d->tr_model, "%s", model);
    return FMQ_OK;
}

/* The scheme this device uses: its class's, else the round's. */
static fmq_uq pick_uq(const fmq_device *d, const fmq_msg_global *g)
{
    for (uint32_t i = 0; d->cls[0] && i < g->nclasses; i++)
        if (strcmp(g->classes[i].cls, d->cls) == 0)
            return g->classes[i].uq;
    return g->uq;
}

/* Trains round g->round from d->w and encodes the update into out,
 * sealed to seal_to (NULL: plain). On error the residual is as it was. */
static fmq_err train_round(fmq_device *d, const fmq_msg_global *g,
                           const fmq_trust_key *seal_to,
                           fmq_device_result *res, fmq_buf *out)
{
    fmq_err e = open_trainer(d, g->model);
    if (e)
        return e;
    if (d->tr.P != d->P) {
        fmq_log_err("device %s: model %s has %u parameters, the global %u",
                    d->id, g->model, d->tr.P, d->P);
        return FMQ_ERR_MODEL;
    }
    fmq_trainer_round rd = {
        .epochs = g->train.epochs, .batch = g->train.batch,
        .lr = g->train.lr, .momentum = g->train.momentum,
        .weight_decay = g->train.weight_decay, .mu = g->train.mu,
        .seed = fmq_trainer_seed(d->seed, (uint32_t)g->round, d->party)};
    fmq_trainer_report rep = {0};
    double t0 = fmq_mono_seconds();
    if ((e = d->tr.ops->load(d->tr.state, d->w, d->P)) ||
        (e = d->tr.ops->train(d->tr.state, &rd, &rep)) ||
        (e = d->tr.ops->weights(d->tr.state, d->local, d->P))) {
        fmq_log_err("device %s: round %llu: training: %s", d->id,
                    (unsigned long long)g->round, fmq_strerror(e));
        return e;
    }
    double train_s = fmq_mono_seconds() - t0;
    if (rep.samples == 0 || !isfinite(rep.loss)) {
        fmq_log_err("device %s: round %llu: training gave %s", d->id,
                    (unsigned long long)g->round,
                    rep.samples ? "a non-finite loss" : "no samples");
        return rep.samples ? FMQ_ERR_NONFINITE : FMQ_ERR_EMPTY;
    }
    for (uint32_t i = 0; i < d->P; i++)
        d->delta[i] = d->local[i] - d->w[i];
    if (d->tamper_fn) /* a hostile device (simulation only) */
        d->tamper_fn(d->tamper_arg, d->delta, d->P, g->round);

    fmq_uq uq = pick_uq(d, g);
    fmq_quant_cfg qc = {uq.scheme, uq.block, uq.stochastic};
    fmq_rng rng;
    fmq_rng_seed(&rng, d->quant_seed ^ (g->round * 0x9e3779b97f4a7c15ull));
    fmq_msg_update u;
    fmq_msg_update_init(&u);
    memcpy(d->res_save, d->residual, (size_t)d->P * sizeof(float));
    if (uq.error_feedback && !(uq.scheme == FMQ_Q_Q1 && uq.stochastic))
        e = fmq_quant_encode_ef(&qc, d->delta, d->residual, d->P, &rng,
                                &u.delta);
    else
        e = fmq_quant_encode(&qc, d->delta, d->P, &rng, &u.delta);
    if (e) {
        fmq_log_err("device %s: round %llu: quantizing (%s): %s", d->id,
                    (unsigned long long)g->round, fmq_scheme_name(uq.scheme),
                    fmq_strerror(e));
        return e;
    }
    snprintf(u.fleet, sizeof u.fleet, "%s", d->fleet);
    snprintf(u.device, sizeof u.device, "%s", d->id);
    if (d->cls[0])
        snprintf(u.cls, sizeof u.cls, "%s", d->cls);
    u.round = g->round;
    u.version = g->version;
    u.samples = rep.samples;
    u.loss = (float)rep.loss;
    u.ts_ms = fmq_now_ms();
    u.train_s = (float)train_s;
    fmq_buf_reset(out);
    fmq_buf_reset(&d->plain);
    e = fmq_codec_encode_update(&u, seal_to ? &d->plain : out);
    res->norm = sqrt(fmq_quant_sqnorm(&u.delta));
    fmq_qtensor_fini(&u.delta);
    if (!e && seal_to) {
        /* SPEC §7.2: bound to (fleet, this device, this round) */
        e = fmq_trust_seal(seal_to, NULL, d->fleet, d->id, g->round,
                           d->plain.data, d->plain.len, out);
        fmq_buf_reset(&d->plain);
    }
    if (e) {
        memcpy(d->residual, d->res_save, (size_t)d->P * sizeof(float));
        fmq_log_err("device %s: round %llu: %s the update: %s", d->id,
                    (unsigned long long)g->round,
                    seal_to ? "encoding or sealing" : "encoding",
                    fmq_strerror(e));
        return e;
    }
    res->samples = rep.samples;
    res->loss = rep.loss;
    res->train_s = train_s;
    return FMQ_OK;
}

/* ------------------------------------------------------------- globals */

static void count_reason(fmq_device *d, fmq_err e)
{
    const char *why = fmq_errname(e);
    for (uint32_t i = 0; i < d->st.nreasons; i++)
        if (strcmp(d->st.reasons[i].reason, why) == 0) {
            d->st.reasons[i].count++;
            return;
        }
    if (d->st.nreasons < sizeof d->st.reasons / sizeof d->st.reasons[0]) {
        fmq_reason_count *r = &d->st.reasons[d->st.nreasons++];
        snprintf(r->reason, sizeof r->reason, "%s", why);
        r->count = 1;
    }
}

/* One line per refused global: the reason (SPEC §10 name), what was
 * wrong, and what the device keeps. */
static fmq_err refuse(fmq_device *d, fmq_device_result *res, fmq_err e)
{
    res->action = FMQ_DEV_REFUSED;
    d->st.refused++;
    d->st.last_error = e;
    count_reason(d, e);
    fmq_log_warn("device %s: refused a global: %s%s%s; keeping model "
                 "version %llu (round %llu)", d->id, fmq_errname(e),
                 res->detail.what[0] ? ": " : "", res->detail.what,
                 (unsigned long long)d->version,
                 (unsigned long long)d->round);
    return e;
}

/* Unwraps and checks the signed envelope buf[0..len): on FMQ_OK *body
 * points into buf and *signer is the pinned key that signed it (NULL with
 * no_verify). */
static fmq_err verify_global(fmq_device *d, const uint8_t *buf, size_t len,
                             const uint8_t **body, size_t *body_len,
                             const fmq_trust_key **signer,
                             fmq_codec_detail *det)
{
    *signer = NULL;
    if (d->no_verify) {
        fmq_msg_type t = FMQ_MSG_UNKNOWN;
        fmq_msg_signed m;
        if (fmq_codec_peek(buf, len, NULL, &t, NULL) == FMQ_OK &&
            t == FMQ_MSG_SIGNED) {
            fmq_err e = fmq_codec_decode_signed(buf, len, NULL, &m, det);
            if (e)
                return e;
            *body = m.body;
            *body_len = m.body_len;
        } else {
            *body = buf;
            *body_len = len;
        }
        return FMQ_OK;
    }
    fmq_err e = fmq_trust_verify(d->keys, d->nkeys, buf, len, NULL, body,
                                 body_len, det);
    if (e)
        return e;
    fmq_msg_signed m;
    if ((e = fmq_codec_decode_signed(buf, len, NULL, &m, det)))
        return e;
    for (size_t i = 0; i < d->nkeys; i++)
        if (strcmp(fmq_trust_key_id(d->keys[i]), m.kid) == 0)
            *signer = d->keys[i];
    return *signer ? FMQ_OK : FMQ_ERR_KEY;
}

/* true when g (the same version as the one held) differs from it in
 * anything but its timestamp and deadline: round, model or weights. When
 * the model held came from a delta, its weights are compared by the
 * version alone (a full model sent as f16 is not bit for bit what deltas
 * built; SPEC §6.6). */
static bool differs_from_held(fmq_device *d, const fmq_msg_global *g)
{
    if (g->round != d->round || !d->w || g->weights.n != d->P ||
        strcmp(g->model, d->model) != 0)
        return true;
    if (d->held_delta)
        return false;
    if (fmq_quant_check(&g->weights) != FMQ_OK ||
        fmq_quant_decode(&g->weights, d->local) != FMQ_OK)
        return true;
    return memcmp(d->local, d->w, (size_t)d->P * sizeof(float)) != 0;
}

/* The decoded body of a model message: a global, or a delta (whose g holds
 * the round's instructions). */
typedef struct model_msg {
    bool is_delta;
    fmq_msg_global g;
    fmq_msg_delta dm;
} model_msg;

static const fmq_msg_global *model_msg_g(const model_msg *m)
{
    return m->is_delta ? &m->dm.g : &m->g;
}

static fmq_err decode_model(const uint8_t *body, size_t len, model_msg *m,
                            fmq_codec_detail *det)
{
    fmq_msg_type t = FMQ_MSG_UNKNOWN;
    fmq_err e = fmq_codec_peek(body, len, NULL, &t, det);
    if (e)
        return e;
    m->is_delta = t == FMQ_MSG_DELTA;
    if (m->is_delta)
        return fmq_codec_decode_delta(body, len, NULL, &m->dm, det);
    /* anything else: the global decoder names what is wrong (wrong_msg) */
    return fmq_codec_decode_global(body, len, NULL, &m->g, det);
}

static void model_msg_fini(model_msg *m)
{
    fmq_msg_global_fini(&m->g);
    fmq_msg_delta_fini(&m->dm);
}

fmq_err fmq_device_on_global(fmq_device *d, const uint8_t *buf, size_t len,
                             fmq_device_result *res, fmq_buf *update)
{
    memset(res, 0, sizeof *res);
    res->loss = res->train_s = res->norm = NAN;
    d->st.globals++;
    model_msg mm;
    mm.is_delta = false;
    fmq_msg_global_init(&mm.g);
    fmq_msg_delta_init(&mm.dm);
    const fmq_msg_global *g = &mm.g;
    /* SPEC §7.1: the signature first; nothing of the body is decoded
     * before it verifies. */
    const uint8_t *body = NULL;
    size_t body_len = 0;
    const fmq_trust_key *signer = NULL;
    fmq_err e = verify_global(d, buf, len, &body, &body_len, &signer,
                              &res->detail);
    if (e)
        goto refused;
    e = decode_model(body, body_len, &mm, &res->detail);
    if (e)
        goto refused;
    g = model_msg_g(&mm);
    res->round = g->round;
    res->version = g->version;
    if (strcmp(g->fleet, d->fleet) != 0) {
        e = FMQ_ERR_FLEET;
        snprintf(res->detail.what, sizeof res->detail.what,
                 "it is for fleet %s", g->fleet);
        goto refused;
    }
    /* the held version announced again: a delta by round and model only */
    if (d->version &&
        (g->version < d->version ||
         (g->version == d->version &&
          (mm.is_delta ? g->round != d->round || strcmp(g->model, d->model)
                       : differs_from_held(d, g))))) {
        e = FMQ_ERR_STALE;
        snprintf(res->detail.what, sizeof res->detail.what,
                 "%sversion %llu round %llu%s", mm.is_delta ? "delta " : "",
                 (unsigned long long)g->version,
                 (unsigned long long)g->round,
                 g->version < d->version ? " is older"
                                         : ": same version, other content");
        goto refused;
    }
    if (mm.is_delta && g->version > d->version &&
        (!d->w || mm.dm.base != d->version)) {
        /* SPEC §6.6: the chain is broken; the retained global mends it */
        res->action = FMQ_DEV_BEHIND;
        d->st.behind++;
        fmq_log_info("device %s: the delta to version %llu is from version "
                     "%llu, the model held is %llu: fetching the full model",
                     d->id, (unsigned long long)g->version,
                     (unsigned long long)mm.dm.base,
                     (unsigned long long)d->version);
        model_msg_fini(&mm);
        return FMQ_OK;
    }
    const fmq_trust_key *seal_to = NULL;
    if (!d->no_seal) {
        seal_to = d->seal_key ? d->seal_key : signer;
        if (!seal_to && d->nkeys) /* no_verify: the first pinned key */
            seal_to = d->keys[0];
        if (!seal_to) { /* caught by fmq_device_open */
            e = FMQ_ERR_CONFIG;
            goto refused;
        }
    }
    bool same = d->version && g->version == d->version;
    if (same && d->deltas != g->deltas) {
        /* the held version says otherwise about deltas now (an aggregator
         * restarted with them on or off): follow what it says */
        d->deltas = g->deltas;
        (void)save_state(d); /* at worst the runner subscribes again */
    }
    if (same && d->last_trained == g->round) {
        /* Already trained: send the same bytes again only when the global
         * was published anew (an aggregator restart), not when the broker
         * redelivers the retained copy we have seen. */
        if (d->pending && g->ts_ms != d->seen_ts) {
            d->seen_ts = g->ts_ms;
            (void)save_state(d); /* only saves a resend; harmless if lost */
            fmq_buf_reset(update);
            if ((e = fmq_buf_append(update, d->update.data, d->update.len)))
                goto refused;
            res->action = FMQ_DEV_RESEND;
            d->st.resent++;
            fmq_log_info("device %s: round %llu published again: resending "
                         "its update", d->id, (unsigned long long)g->round);
        } else {
            res->action = FMQ_DEV_ALREADY;
            d->st.already++;
        }
        model_msg_fini(&mm);
        return FMQ_OK;
    }
    if (!same) {
        /* A newer model: hold it (and remember it) before training. */
        uint32_t oldP = d->P;
        bool had_pending = d->pending;
        if (mm.is_delta)
            e = hold_delta(d, &mm.dm, buf, len);
        else
            e = hold_global(d, g, buf, len);
        if (e) {
            if (e == FMQ_ERR_MODEL)
                snprintf(res->detail.what, sizeof res->detail.what,
                         "delta of %u values for a model of %u",
                         mm.dm.delta.n, d->P);
            else
                snprintf(res->detail.what, sizeof res->detail.what,
                         "version %llu: its weights",
                         (unsigned long long)g->version);
            goto refused;
        }
        if (oldP && oldP != d->P)
            fmq_log_warn("device %s: model changed from %u to %u parameters;"
                         " error-feedback residual reset", d->id, oldP, d->P);
        d->pending = false;
        d->acked = false;
        fmq_buf_reset(&d->update);
        if ((e = save_state(d)))
            goto refused;
        if (had_pending)
            fmq_log_debug("device %s: version %llu supersedes the update of "
                          "round %llu", d->id, (unsigned long long)g->version,
                          (unsigned long long)d->last_trained);
    } else {
        d->seen_ts = g->ts_ms;
    }
    if (!fmq_cohort_member(&g->cohort, g->round, d->id)) {
        res->action = FMQ_DEV_NOT_COHORT;
        d->st.not_cohort++;
        model_msg_fini(&mm);
        return FMQ_OK;
    }
    if ((e = train_round(d, g, seal_to, res, update)))
        goto refused;
    /* Remember the update before anyone sees it. */
    fmq_buf keep;
    fmq_buf_init(&keep);
    if ((e = fmq_buf_append(&keep, update->data, update->len))) {
        memcpy(d->residual, d->res_save, (size_t)d->P * sizeof(float));
        goto refused;
    }
    uint64_t prev_last = d->last_trained;
    fmq_buf prev_update = d->update;
    d->update = keep;
    d->last_trained = g->round;
    d->pending = true;
    d->acked = false;
    if ((e = save_state(d))) {
        fmq_buf_fini(&d->update);
        d->update = prev_update;
        d->last_trained = prev_last;
        d->pending = false;
        memcpy(d->residual, d->res_save, (size_t)d->P * sizeof(float));
        fmq_buf_reset(update);
        goto refused;
    }
    fmq_buf_fini(&prev_update);
    res->action = FMQ_DEV_TRAINED;
    d->st.trained++;
    d->st.samples = res->samples;
    d->st.last_loss = res->loss;
    d->st.last_norm = res->norm;
    d->st.last_train_s = res->train_s;
    model_msg_fini(&mm);
    return FMQ_OK;
refused:
    model_msg_fini(&mm);
    return refuse(d, res, e);
}

bool fmq_device_follows_deltas(const fmq_device *d)
{
    return d->w && d->deltas;
}

/* ------------------------------------------------------------- pending */

fmq_err fmq_device_pending(const fmq_device *d, const uint8_t **data,
                           size_t *len, bool *acked)
{
    if (!d->pending || d->update.len == 0)
        return FMQ_ERR_NOTFOUND;
    *data = d->update.data;
    *len = d->update.len;
    if (acked)
        *acked = d->acked;
    return FMQ_OK;
}

fmq_err fmq_device_held_global(const fmq_device *d, const uint8_t **data,
                               size_t *len)
{
    if (!d->global_raw.len)
        return FMQ_ERR_NOTFOUND;
    *data = d->global_raw.data;
    *len = d->global_raw.len;
    return FMQ_OK;
}

fmq_err fmq_device_mark_acked(fmq_device *d)
{
    if (!d->pending)
        return FMQ_ERR_STATE;
    if (d->acked)
        return FMQ_OK;
    d->acked = true;
    fmq_err e = save_state(d);
    if (e)
        d->acked = false;
    return e;
}

void fmq_device_get_stats(const fmq_device *d, fmq_device_stats *out)
{
    *out = d->st;
    out->version = d->version;
    out->round = d->round;
    out->last_trained = d->last_trained;
}

const char *fmq_device_id(const fmq_device *d) { return d->id; }

const char *fmq_device_fleet(const fmq_device *d) { return d->fleet; }

const float *fmq_device_weights(const fmq_device *d, uint32_t *P)
{
    if (P)
        *P = d->w ? d->P : 0;
    return d->w;
}

/* ------------------------------------------------------------- attacks */

fmq_err fmq_device_attack_parse(const char *spec, fmq_device_attack *a)
{
    fmq_device_attack_kind kind;
    const char *num;
    if (strncmp(spec, "scale:", 6) == 0) {
        kind = FMQ_DEVICE_ATTACK_SCALE;
        num = spec + 6;
    } else if (strncmp(spec, "noise:", 6) == 0) {
        kind = FMQ_DEVICE_ATTACK_NOISE;
        num = spec + 6;
    } else {
        return FMQ_ERR_INVAL;
    }
    char *end;
    double v = strtod(num, &end);
    if (end == num || *end || !isfinite(v) ||
        (kind == FMQ_DEVICE_ATTACK_NOISE && !(v > 0)))
        return FMQ_ERR_INVAL;
    *a = (fmq_device_attack){.kind = kind, .param = v, .seed = 0};
    return FMQ_OK;
}

void fmq_device_attack_apply(void *arg, float *delta, uint32_t P,
                             uint64_t round)
{
    const fmq_device_attack *a = arg;
    // delta is (P,)
    if (a->kind == FMQ_DEVICE_ATTACK_SCALE) {
        float k = (float)a->param;
        for (uint32_t i = 0; i < P; i++)
            delta[i] *= k;
    } else if (a->kind == FMQ_DEVICE_ATTACK_NOISE) {
        fmq_rng rng;
        fmq_rng_seed(&rng, a->seed ^ (round * 0xd1b54a32d192ed03ull));
        for (uint32_t i = 0; i < P; i++)
            delta[i] = (float)(a->param * fmq_rng_normal(&rng));
    }
}

/* ---------------------------------------------------------------- keys */

void fmq_device_keys_fini(fmq_device_keys *ks)
{
    for (size_t i = 0; i < ks->n; i++)
        fmq_trust_key_destroy(&ks->k[i]);
    fmq_trust_key_destroy(&ks->seal);
    ks->n = 0;
}

/* A public key from path[0..n); a private key file is refused. */
static fmq_err load_public(const char *what, const char *p, size_t n,
                           fmq_trust_key **out)
{
    char path[1024];
    if (n == 0 || n >= sizeof path) {
        fmq_log_err("%s: an empty or overlong file name", what);
        return FMQ_ERR_CONFIG;
    }
    memcpy(path, p, n);
    path[n] = '\0';
    fmq_err e = fmq_trust_key_load_public(path, out);
    if (e == FMQ_ERR_KEY && fmq_trust_key_load_private(path, out) == FMQ_OK) {
        fmq_trust_key_destroy(out);
        fmq_log_err("%s %s is a private key: a device gets the aggregator's "
                    "public key only", what, path);
        return FMQ_ERR_CONFIG;
    }
    if (e)
        fmq_log_err("%s %s: %s (an EC P-256 public key in PEM is needed)",
                    what, path, fmq_strerror(e));
    return e;
}

fmq_err fmq_device_keys_load(fmq_device_keys *ks, const char *list,
                             const char *seal_path, fmq_device_cfg *cfg)
{
    memset(ks, 0, sizeof *ks);
    fmq_err e = FMQ_OK;
    for (const char *p = list; p && *p && !e;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (ks->n == FMQ_DEVICE_KEYS_MAX) {
            fmq_log_err("agg_key: more than %d keys", FMQ_DEVICE_KEYS_MAX);
            e = FMQ_ERR_CONFIG;
        } else if ((e = load_public("agg_key", p, n, &ks->k[ks->n])) ==
                   FMQ_OK) {
            ks->n++;
        }
        p = end ? end + 1 : p + n;
        if (end && !*p && !e) {
            fmq_log_err("agg_key '%s': an empty file name at the end", list);
            e = FMQ_ERR_CONFIG;
        }
    }
    if (!e && seal_path)
        e = load_public("seal_key", seal_path, strlen(seal_path), &ks->seal);
    if (e) {
        fmq_device_keys_fini(ks);
        return e;
    }
    if (cfg) {
        cfg->agg_keys = (const fmq_trust_key *const *)ks->k;
        cfg->nagg_keys = ks->n;
        cfg->seal_key = ks->seal;
    }
    return FMQ_OK;
}
