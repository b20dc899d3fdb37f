/*
 * gdelta.h — the aggregator's side of compressed global models
 * (proto/SPEC.md §6.6): each new version also goes out as a quantized
 * delta from the version before it, on fedmq/<fleet>/model/delta.
 *
 * So that devices and aggregator never drift apart, the aggregator does
 * not keep what its strategy computed: it keeps what the devices will
 * have. At a round's close (agg.c):
 *
 *   fmq_gdelta_begin(g, w)        before the strategy runs: w(bv) saved
 *   ... the strategy writes w_new into w ...
 *   fmq_gdelta_fold(g, w, bv)     v = (w_new - w(bv)) + e; q = Q(v);
 *                                 w = w(bv) + dequant(q)   (fmq_quant_add)
 *                                 e = v - dequant(q)
 *
 * so the global of the new version is, bit for bit, the base plus the
 * dequantized delta that devices add, and what quantization dropped (e,
 * error feedback on the server side, as in Seide et al. 2014 and
 * Karimireddy et al. 2019 for updates) goes into the next version's delta.
 * q is kept as the delta of the current version, for publishing and for
 * publishing again after a restart. The residual and that delta are part
 * of the aggregator's checkpoint (fmq_gdelta_save / _load), so a resumed
 * aggregator continues the same sequence.
 *
 * Nothing here blocks or does I/O; not thread-safe (the aggregator is one
 * loop). Arguments are borrowed for the call.
 */
#ifndef FMQ_GDELTA_H
#define FMQ_GDELTA_H

#include "blob.h"
#include "quant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How deltas are quantized: q8, q4 (block-wise, `block` values per scale)
 * or f16, f32 (no block). Nearest rounding (the residual takes what
 * rounding drops; stochastic rounding would only add noise that devices
 * and aggregator then share). */
typedef struct fmq_gdelta_cfg {
    fmq_scheme scheme;
    uint32_t block;
} fmq_gdelta_cfg;

/* "off", "auto", or a scheme for fedmq-aggregator's global_delta setting.
 * auto is q8 when the updates are quantized (q8, q4, q1): a fleet that
 * compresses what devices send also gets its model compressed, never
 * coarser than 8 bits; with f32 or f16 updates (a run that wants the exact
 * average) it is off. *on is false for off. FMQ_ERR_CONFIG for anything
 * else than off, auto, q8, q4, f16, f32 (q1 is refused: one bit per
 * coordinate of a model step is not a useful delta). */
FMQ_NODISCARD fmq_err fmq_gdelta_parse(const char *name, fmq_scheme updates,
                                       uint32_t block, bool *on,
                                       fmq_gdelta_cfg *out);

typedef struct fmq_gdelta fmq_gdelta;

/* For a model of P parameters; residual zero, no delta yet.
 * FMQ_ERR_CONFIG for a scheme other than q8, q4, f16, f32 or a bad block
 * (logged); FMQ_ERR_NOMEM. */
FMQ_NODISCARD fmq_err fmq_gdelta_new(const fmq_gdelta_cfg *cfg, uint32_t P,
                                     fmq_gdelta **out);
void fmq_gdelta_destroy(fmq_gdelta **gp);

/* The weights w (P,) of the version being closed, before the strategy
 * changes them. */
void fmq_gdelta_begin(fmq_gdelta *g, const float *w);

/* w (P,) holds the strategy's new weights; replaces them by the base
 * (from fmq_gdelta_begin) plus the dequantized delta and updates the
 * residual, as above; base_version is the version the delta goes from
 * (the new version is base_version + 1). On error (FMQ_ERR_NOMEM, or a
 * non-finite result, FMQ_ERR_NONFINITE) w keeps the strategy's weights,
 * the residual is unchanged and there is no delta for the new version
 * (devices fetch the full model); the error is logged. FMQ_ERR_STATE
 * without a begin. */
FMQ_NODISCARD fmq_err fmq_gdelta_fold(fmq_gdelta *g, float *w,
                                      uint64_t base_version);

/* The delta of version base + 1: *q (owned by g, valid until the next
 * fold or load) and *base. FMQ_ERR_NOTFOUND when there is none (before
 * the first close, after a failed fold). */
FMQ_NODISCARD fmq_err fmq_gdelta_current(const fmq_gdelta *g,
                                         const fmq_qtensor **q,
                                         uint64_t *base);

/* The residual e (P,) (for tests and reports). */
const float *fmq_gdelta_residual(const fmq_gdelta *g);
const fmq_gdelta_cfg *fmq_gdelta_config(const fmq_gdelta *g);

/* Checkpoint section: "GDLT" | u32 version 1 | u32 P | f32 e[P] |
 * u64 base | u8 has_delta | (u8 scheme | u32 block | u32 codes_len |
 * codes | u32 scales_len | scales, when has_delta). Appended to w (w
 * remembers errors). */
void fmq_gdelta_save(const fmq_gdelta *g, fmq_wr *w);
/* Reads a section written by fmq_gdelta_save. g may be NULL: the section
 * is read and dropped (deltas are now off). FMQ_ERR_DATA (logged) for
 * another P, another version or a malformed section; on error g is
 * unchanged. The saved delta is kept whatever scheme is configured now:
 * it is what was published. */
FMQ_NODISCARD fmq_err fmq_gdelta_load(fmq_gdelta *g, fmq_rd *r, uint32_t P);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_GDELTA_H */
