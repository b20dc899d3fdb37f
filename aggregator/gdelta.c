/*
 * gdelta.c — global deltas with server-side error feedback; the contract
 * is in gdelta.h, the wire rules in proto/SPEC.md §6.6.
 */
#include "gdelta.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define GDELTA__MAGIC "GDLT"
#define GDELTA__VERSION 1u

struct fmq_gdelta {
    fmq_gdelta_cfg cfg;
    uint32_t P;
    float *base;     // (P,) w of the version being closed (begin)
    float *residual; // (P,) e: what quantization has not sent yet
    float *v;        // (P,) scratch: this version's delta plus e
    float *tmp;      // (P,) scratch: dequant(q), then the new weights
    bool began;
    fmq_qtensor cur; /* the delta of version cur_base + 1 */
    bool has_cur;
    uint64_t cur_base;
};

static bool scheme_ok(fmq_scheme s)
{
    return s == FMQ_Q_Q8 || s == FMQ_Q_Q4 || s == FMQ_Q_F16 ||
           s == FMQ_Q_F32;
}

fmq_err fmq_gdelta_parse(const char *name, fmq_scheme updates, uint32_t block,
                         bool *on, fmq_gdelta_cfg *out)
{
    *on = false;
    *out = (fmq_gdelta_cfg){FMQ_Q_Q8, block};
    if (!name || strcmp(name, "off") == 0)
        return FMQ_OK;
    if (strcmp(name, "auto") == 0) {
        *on = updates == FMQ_Q_Q8 || updates == FMQ_Q_Q4 ||
              updates == FMQ_Q_Q1;
        return FMQ_OK;
    }
    fmq_scheme s;
    if (fmq_scheme_parse(name, &s) != FMQ_OK || !scheme_ok(s))
        return FMQ_ERR_CONFIG;
    out->scheme = s;
    *on = true;
    return FMQ_OK;
}

fmq_err fmq_gdelta_new(const fmq_gdelta_cfg *cfg, uint32_t P,
                       fmq_gdelta **out)
{
    *out = NULL;
    fmq_quant_cfg qc = {cfg->scheme, cfg->block, false};
    if (!scheme_ok(cfg->scheme) || P == 0 ||
        (fmq_scheme_has_scales(cfg->scheme) && fmq_quant_cfg_check(&qc))) {
        fmq_log_err("aggregator: global deltas: scheme %s with block %u "
                    "(q8, q4 with a block of 1..%u, f16 or f32)",
                    fmq_scheme_name(cfg->scheme), cfg->block,
                    FMQ_QUANT_BLOCK_MAX);
        return FMQ_ERR_CONFIG;
    }
    fmq_gdelta *g = fmq_calloc(1, sizeof *g);
    if (!g)
        return FMQ_ERR_NOMEM;
    g->cfg = *cfg;
    if (!fmq_scheme_has_scales(cfg->scheme))
        g->cfg.block = 0;
    g->P = P;
    g->base = fmq_alloc_array(P, sizeof(float));
    g->residual = fmq_calloc(P, sizeof(float));
    g->v = fmq_alloc_array(P, sizeof(float));
    g->tmp = fmq_alloc_array(P, sizeof(float));
    if (!g->base || !g->residual || !g->v || !g->tmp) {
        fmq_gdelta_destroy(&g);
        return FMQ_ERR_NOMEM;
    }
    *out = g;
    return FMQ_OK;
}

void fmq_gdelta_destroy(fmq_gdelta **gp)
{
    if (!gp || !*gp)
        return;
    fmq_gdelta *g = *gp;
    fmq_free(g->base);
    fmq_free(g->residual);
    fmq_free(g->v);
    fmq_free(g->tmp);
    fmq_qtensor_fini(&g->cur);
    fmq_free(g);
    *gp = NULL;
}

void fmq_gdelta_begin(fmq_gdelta *g, const float *w)
{
    memcpy(g->base, w, (size_t)g->P * sizeof(float));
    g->began = true;
}

fmq_err fmq_gdelta_fold(fmq_gdelta *g, float *w, uint64_t base_version)
{
    if (!g->began)
        return FMQ_ERR_STATE;
    g->began = false;
    uint32_t P = g->P;
    // v is (P,): the step the strategy made plus what was not sent yet
    for (uint32_t i = 0; i < P; i++)
        g->v[i] = (w[i] - g->base[i]) + g->residual[i];
    fmq_quant_cfg qc = {g->cfg.scheme, g->cfg.block, false};
    fmq_qtensor q;
    memset(&q, 0, sizeof q);
    fmq_err e = fmq_quant_encode(&qc, g->v, P, NULL, &q);
    if (!e)
        e = fmq_quant_decode(&q, g->tmp);
    for (uint32_t i = 0; !e && i < P; i++)
        if (!isfinite(g->base[i] + g->tmp[i]))
            e = FMQ_ERR_NONFINITE;
    if (e) {
        fmq_qtensor_fini(&q);
        fmq_qtensor_fini(&g->cur);
        g->has_cur = false;
        fmq_log_err("aggregator: the delta from version %llu: %s; devices "
                    "will fetch the full model",
                    (unsigned long long)base_version, fmq_strerror(e));
        return e;
    }
    /* w = base + dequant(q) by the devices' own rule (SPEC §6.6: one
     * float32 addition per coordinate, fmq_quant_add's arithmetic, on the
     * values tmp holds already), and the new residual v - dequant(q) */
    for (uint32_t i = 0; i < P; i++) {
        w[i] = g->base[i] + g->tmp[i];
        g->v[i] -= g->tmp[i];
    }
    float *t = g->residual; /* v now holds the new residual */
    g->residual = g->v;
    g->v = t;
    fmq_qtensor_fini(&g->cur);
    g->cur = q;
    g->has_cur = true;
    g->cur_base = base_version;
    return FMQ_OK;
}

fmq_err fmq_gdelta_current(const fmq_gdelta *g, const fmq_qtensor **q,
                           uint64_t *base)
{
    if (!g || !g->has_cur)
        return FMQ_ERR_NOTFOUND;
    *q = &g->cur;
    *base = g->cur_base;
    return FMQ_OK;
}

const float *fmq_gdelta_residual(const fmq_gdelta *g) { return g->residual; }

const fmq_gdelta_cfg *fmq_gdelta_config(const fmq_gdelta *g)
{
    return &g->cfg;
}

/* ---------------------------------------------------------- checkpoint */

void fmq_gdelta_save(const fmq_gdelta *g, fmq_wr *w)
{
    fmq_wr_bytes(w, GDELTA__MAGIC, 4);
    fmq_wr_u32(w, GDELTA__VERSION);
    fmq_wr_u32(w, g->P);
    fmq_wr_floats(w, g->residual, g->P);
    fmq_wr_u64(w, g->cur_base);
    fmq_wr_u8(w, g->has_cur);
    if (!g->has_cur)
        return;
    fmq_wr_u8(w, (uint8_t)g->cur.scheme);
    fmq_wr_u32(w, g->cur.block);
    fmq_wr_u32(w, (uint32_t)g->cur.codes_len);
    fmq_wr_bytes(w, g->cur.codes, g->cur.codes_len);
    fmq_wr_u32(w, (uint32_t)g->cur.scales_len);
    fmq_wr_bytes(w, g->cur.scales, g->cur.scales_len);
}

fmq_err fmq_gdelta_load(fmq_gdelta *g, fmq_rd *r, uint32_t P)
{
    char magic[4];
    fmq_rd_bytes(r, magic, 4);
    uint32_t ver = fmq_rd_u32(r), n = fmq_rd_u32(r);
    if (r->bad || memcmp(magic, GDELTA__MAGIC, 4) || ver != GDELTA__VERSION ||
        n != P || (g && n != g->P)) {
        fmq_log_err("aggregator: the checkpoint's global-delta section is "
                    "for another model or format (version %u, P=%u; "
                    "expected %u, P=%u)", ver, n, GDELTA__VERSION, P);
        return FMQ_ERR_DATA;
    }
    const uint8_t *res = fmq_rd_view(r, (size_t)n * 4);
    uint64_t base = fmq_rd_u64(r);
    bool has = fmq_rd_u8(r) != 0;
    fmq_qtensor q;
    memset(&q, 0, sizeof q);
    if (has) {
        fmq_scheme s = (fmq_scheme)fmq_rd_u8(r);
        uint32_t block = fmq_rd_u32(r);
        uint32_t cl = fmq_rd_u32(r);
        const uint8_t *codes = fmq_rd_view(r, cl);
        uint32_t sl = fmq_rd_u32(r);
        const uint8_t *scales = fmq_rd_view(r, sl);
        fmq_qtensor view;
        if (r->bad || !scheme_ok(s) ||
            fmq_qtensor_view(&view, s, block, n, codes, cl,
                             sl ? scales : NULL, sl) != FMQ_OK) {
            fmq_log_err("aggregator: the checkpoint's global delta is "
                        "malformed");
            return FMQ_ERR_DATA;
        }
        /* an owning copy: the checkpoint's buffer goes away */
        fmq_quant_cfg qc = {s, block, false};
        fmq_err e = fmq_qtensor_alloc(&q, &qc, n);
        if (e)
            return e;
        if (q.codes_len != cl || q.scales_len != sl) {
            fmq_qtensor_fini(&q);
            return FMQ_ERR_DATA;
        }
        memcpy((uint8_t *)q.codes, codes, cl);
        if (sl)
            memcpy((uint8_t *)q.scales, scales, sl);
    }
    if (r->bad) {
        fmq_qtensor_fini(&q);
        return FMQ_ERR_DATA;
    }
    if (!g) { /* deltas are off now: read and dropped */
        fmq_qtensor_fini(&q);
        return FMQ_OK;
    }
    for (uint32_t i = 0; i < n; i++)
        g->residual[i] = fmq_load_f32le(res + 4 * (size_t)i);
    fmq_qtensor_fini(&g->cur);
    g->cur = q;
    g->has_cur = has;
    g->cur_base = base;
    g->began = false;
    return FMQ_OK;
}
