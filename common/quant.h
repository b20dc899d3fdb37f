/*
 * quant.h — block-wise quantization of a flat (P,) float32 array.
 *
 * Schemes (proto/SPEC.md §5 is the normative wire description):
 *   f32  codes = P little-endian float32, no scales
 *   f16  codes = P little-endian IEEE binary16 (round to nearest even),
 *        no scales
 *   q8   per block of B values: scale s = max|x| / 127 (float32 LE);
 *        codes are int8 c = round(x / s) in [-127, 127]; x' = c * s
 *   q4   per block: s = max|x| / 7; codes are 4-bit two's complement
 *        nibbles c in [-7, 7], value i in byte i/2, low nibble first; x' = c*s
 *   q1   per block: one magnitude m; codes are bits, value i in byte i/8,
 *        bit i%8 (LSB first), 1 = positive; x' = +m or -m. Nearest rounding
 *        uses m = mean|x| of the block; stochastic rounding uses m = max|x|
 *        and sends + with probability (1 + x/m)/2, which is unbiased.
 * Codes run continuously across blocks (a block boundary need not fall on a
 * byte). The last block may be shorter than B. A block of zeros has scale 0.
 * Encoders never emit -128 (q8) or -8 (q4); decoders accept them.
 *
 * Stochastic rounding (q8, q4, q1) takes a seeded fmq_rng, so a run is
 * reproducible; f32 and f16 ignore it.
 *
 * A fmq_qtensor holds codes and scales as wire bytes, so a decoded message's
 * tensor is a zero-copy view into the message buffer (owned == NULL) and an
 * encoded one owns a single allocation (owned != NULL).
 */
#ifndef FMQ_QUANT_H
#define FMQ_QUANT_H

#include "fmq.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    FMQ_Q_F32 = 0,
    FMQ_Q_F16,
    FMQ_Q_Q8,
    FMQ_Q_Q4,
    FMQ_Q_Q1,
    FMQ_Q__COUNT
} fmq_scheme;

#define FMQ_QUANT_BLOCK_DEFAULT 256u
#define FMQ_QUANT_BLOCK_MIN 1u
#define FMQ_QUANT_BLOCK_MAX 1048576u
/* Largest tensor the library accepts (also the codec's default limit). */
#define FMQ_QUANT_N_MAX 100000000u

typedef struct fmq_quant_cfg {
    fmq_scheme scheme;
    uint32_t block;  /* values per scale; ignored by f32/f16 */
    bool stochastic; /* stochastic rounding (needs an rng) */
} fmq_quant_cfg;

typedef struct fmq_qtensor {
    fmq_scheme scheme;
    uint32_t block; /* 0 for f32/f16 */
    uint32_t n;     /* number of values P */
    const uint8_t *codes;
    size_t codes_len;
    const uint8_t *scales; /* float32 LE, one per block; NULL for f32/f16 */
    size_t scales_len;
    uint8_t *owned; /* storage of codes+scales when this tensor owns it */
} fmq_qtensor;

/* "f32", "f16", "q8", "q4", "q1"; "?" when out of range. */
const char *fmq_scheme_name(fmq_scheme s);
/* FMQ_ERR_SCHEME when the name is unknown. */
fmq_err fmq_scheme_parse(const char *name, fmq_scheme *out);
/* Bits per value in the codes: 32, 16, 8, 4, 1 (0 when unknown). */
unsigned fmq_scheme_bits(fmq_scheme s);
/* true for schemes with per-block scales (q8, q4, q1). */
bool fmq_scheme_has_scales(fmq_scheme s);

/* Number of scales for n values in blocks of `block` (0 for f32/f16). */
size_t fmq_quant_nblocks(fmq_scheme s, uint32_t n, uint32_t block);
/* Bytes of codes for n values: ceil(n * bits / 8). */
size_t fmq_quant_codes_size(fmq_scheme s, uint32_t n);
/* Theoretical encoded size: codes + 4 bytes per scale. */
size_t fmq_quant_payload_size(fmq_scheme s, uint32_t n, uint32_t block);

/* FMQ_ERR_SCHEME, or FMQ_ERR_RANGE for a block outside
 * [FMQ_QUANT_BLOCK_MIN, FMQ_QUANT_BLOCK_MAX]. */
fmq_err fmq_quant_cfg_check(const fmq_quant_cfg *cfg);

/* Allocate zeroed storage for n values (tensor owns it). */
FMQ_NODISCARD fmq_err fmq_qtensor_alloc(fmq_qtensor *q, const fmq_quant_cfg *cfg,
                                        uint32_t n);
/* Free owned storage and zero the struct; views are only zeroed. */
void fmq_qtensor_fini(fmq_qtensor *q);

/* Build a view over wire bytes and check it (fmq_quant_check). */
FMQ_NODISCARD fmq_err fmq_qtensor_view(fmq_qtensor *q, fmq_scheme s,
                                       uint32_t block, uint32_t n,
                                       const uint8_t *codes, size_t codes_len,
                                       const uint8_t *scales,
                                       size_t scales_len);

/* Validate a tensor from the network: known scheme, block in range for
 * scaled schemes, codes_len and scales_len exactly what n and block imply
 * (FMQ_ERR_SHAPE otherwise), every scale finite and >= 0 and, for f32 and
 * f16, every value finite (FMQ_ERR_NONFINITE). */
FMQ_NODISCARD fmq_err fmq_quant_check(const fmq_qtensor *q);

/* Quantize x[0..n) into q (allocated here; fmq_qtensor_fini it). rng is
 * required when cfg->stochastic, else may be NULL. Non-finite input gives
 * FMQ_ERR_NONFINITE and leaves q empty. */
FMQ_NODISCARD fmq_err fmq_quant_encode(const fmq_quant_cfg *cfg, const float *x,
                                       uint32_t n, fmq_rng *rng,
                                       fmq_qtensor *q);

/* out[0..q->n) = dequant(q). The tensor must have passed fmq_quant_check. */
FMQ_NODISCARD fmq_err fmq_quant_decode(const fmq_qtensor *q, float *out);

/* out[0..count) = dequant(q)[start..start+count): one coordinate block of
 * a tensor, for strategies that reduce many stored updates coordinate by
 * coordinate (aggregator/strategy.h). Values are bit for bit those of
 * fmq_quant_decode. FMQ_ERR_RANGE when the range is not inside [0, n).
 * The tensor must have passed fmq_quant_check. */
FMQ_NODISCARD fmq_err fmq_quant_decode_range(const fmq_qtensor *q,
                                             uint32_t start, uint32_t count,
                                             float *out);

/* The aggregator's hot loop: sum[i] += w * dequant(q)[i], fused, no
 * temporary array. The tensor must have passed fmq_quant_check. */
FMQ_NODISCARD fmq_err fmq_quant_accumulate(const fmq_qtensor *q, float w,
                                           float *sum);

/* w[i] = w[i] + dequant(q)[i] for i in [0, q->n): one float32 addition
 * (round to nearest even) of exactly the value fmq_quant_decode gives, per
 * coordinate. This is the rule by which a device applies a global delta
 * (proto/SPEC.md §6.6) and by which the aggregator moves its own model, so
 * that both end on the same bits. scratch is (q->n,) floats of the
 * caller's (its contents are overwritten). The tensor must have passed
 * fmq_quant_check. FMQ_ERR_INVAL for NULL arguments; w is unchanged on
 * error. */
FMQ_NODISCARD fmq_err fmq_quant_add(const fmq_qtensor *q, float *w,
                                    float *scratch);

/* Error feedback (Seide et al. 2014; Karimireddy et al. 2019): quantize
 * v = delta + residual into q, then set residual = v - dequant(q). The
 * device keeps `residual` (n floats, zero at first) between rounds, so what
 * rounding drops in one round is sent in a later one. On any error the
 * residual is unchanged. Stochastic q1 is refused (FMQ_ERR_CONFIG): it is
 * not a contractive compressor and its residual diverges. */
FMQ_NODISCARD fmq_err fmq_quant_encode_ef(const fmq_quant_cfg *cfg,
                                          const float *delta, float *residual,
                                          uint32_t n, fmq_rng *rng,
                                          fmq_qtensor *q);

/* Squared L2 norm of dequant(q), in double, without a temporary array. */
double fmq_quant_sqnorm(const fmq_qtensor *q);

/* IEEE binary16 conversions (round to nearest even; NaN stays NaN). */
uint16_t fmq_f32_to_f16(float f);
float fmq_f16_to_f32(uint16_t h);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_QUANT_H */
