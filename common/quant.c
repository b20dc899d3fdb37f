/*
 * quant.c — block-wise quantization of a flat (P,) float32 array.
 *
 * The wire layout is proto/SPEC.md §5; the contract is quant.h. Encoders
 * work in double for the x/s step so that a subnormal scale cannot
 * overflow 1/s; decoders and the fused accumulate stay in float with plain
 * loops over one block that the compiler vectorises (the aggregator folds
 * every update of a round through fmq_quant_accumulate).
 */
#include "quant.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    unsigned bits;
    bool scaled;
} scheme_tab[FMQ_Q__COUNT] = {
    [FMQ_Q_F32] = {"f32", 32, false}, [FMQ_Q_F16] = {"f16", 16, false},
    [FMQ_Q_Q8] = {"q8", 8, true},     [FMQ_Q_Q4] = {"q4", 4, true},
    [FMQ_Q_Q1] = {"q1", 1, true},
};

static bool scheme_ok(fmq_scheme s)
{
    return (unsigned)s < FMQ_Q__COUNT;
}

const char *fmq_scheme_name(fmq_scheme s)
{
    return scheme_ok(s) ? scheme_tab[s].name : "?";
}

fmq_err fmq_scheme_parse(const char *name, fmq_scheme *out)
{
    if (!name)
        return FMQ_ERR_SCHEME;
    for (unsigned i = 0; i < FMQ_Q__COUNT; i++) {
        if (strcmp(name, scheme_tab[i].name) == 0) {
            *out = (fmq_scheme)i;
            return FMQ_OK;
        }
    }
    return FMQ_ERR_SCHEME;
}

unsigned fmq_scheme_bits(fmq_scheme s)
{
    return scheme_ok(s) ? scheme_tab[s].bits : 0;
}

bool fmq_scheme_has_scales(fmq_scheme s)
{
    return scheme_ok(s) && scheme_tab[s].scaled;
}

size_t fmq_quant_nblocks(fmq_scheme s, uint32_t n, uint32_t block)
{
    if (!fmq_scheme_has_scales(s) || block == 0)
        return 0;
    return ((size_t)n + block - 1) / block;
}

size_t fmq_quant_codes_size(fmq_scheme s, uint32_t n)
{
    return ((uint64_t)n * fmq_scheme_bits(s) + 7) / 8;
}

size_t fmq_quant_payload_size(fmq_scheme s, uint32_t n, uint32_t block)
{
    return fmq_quant_codes_size(s, n) + 4 * fmq_quant_nblocks(s, n, block);
}

fmq_err fmq_quant_cfg_check(const fmq_quant_cfg *cfg)
{
    if (!cfg || !scheme_ok(cfg->scheme))
        return FMQ_ERR_SCHEME;
    if (fmq_scheme_has_scales(cfg->scheme) &&
        (cfg->block < FMQ_QUANT_BLOCK_MIN || cfg->block > FMQ_QUANT_BLOCK_MAX))
        return FMQ_ERR_RANGE;
    return FMQ_OK;
}

fmq_err fmq_qtensor_alloc(fmq_qtensor *q, const fmq_quant_cfg *cfg, uint32_t n)
{
    fmq_err e;
    memset(q, 0, sizeof *q);
    if ((e = fmq_quant_cfg_check(cfg)))
        return e;
    if (n == 0 || n > FMQ_QUANT_N_MAX)
        return FMQ_ERR_RANGE;
    bool scaled = fmq_scheme_has_scales(cfg->scheme);
    uint32_t block = scaled ? cfg->block : 0;
    size_t clen = fmq_quant_codes_size(cfg->scheme, n);
    size_t slen = 4 * fmq_quant_nblocks(cfg->scheme, n, block);
    uint8_t *mem = fmq_calloc(1, clen + slen);
    if (!mem)
        return FMQ_ERR_NOMEM;
    q->scheme = cfg->scheme;
    q->block = block;
    q->n = n;
    q->owned = mem;
    q->codes = mem;
    q->codes_len = clen;
    q->scales = scaled ? mem + clen : NULL;
    q->scales_len = slen;
    return FMQ_OK;
}

void fmq_qtensor_fini(fmq_qtensor *q)
{
    if (!q)
        return;
    fmq_free(q->owned);
    memset(q, 0, sizeof *q);
}

fmq_err fmq_qtensor_view(fmq_qtensor *q, fmq_scheme s, uint32_t block,
                         uint32_t n, const uint8_t *codes, size_t codes_len,
                         const uint8_t *scales, size_t scales_len)
{
    memset(q, 0, sizeof *q);
    q->scheme = s;
    q->block = fmq_scheme_has_scales(s) ? block : 0;
    q->n = n;
    q->codes = codes;
    q->codes_len = codes_len;
    q->scales = fmq_scheme_has_scales(s) ? scales : NULL;
    q->scales_len = fmq_scheme_has_scales(s) ? scales_len : 0;
    fmq_err e = fmq_quant_check(q);
    if (e)
        memset(q, 0, sizeof *q);
    return e;
}

/* ------------------------------------------------------------- binary16 */

uint16_t fmq_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) /* NaN: keep it quiet and keep the top payload */
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) /* >= 65520 rounds to infinity (ties to even) */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below 2^-14: binary16 subnormal or zero */
        if (ax <= 0x33000000u) /* <= 2^-25: rounds to zero (tie to even) */
            return sign;
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* value = m * 2^(e-150) = k * 2^-24 */
        uint32_t k = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (k & 1)))
            k++;
        return (uint16_t)(sign | k);
    }
    uint32_t h = ((((ax >> 23) - 127 + 15) << 10) | ((ax & 0x7fffffu) >> 13));
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
        h++; /* a carry into the exponent is the right answer */
    return (uint16_t)(sign | h);
}

float fmq_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    int32_t e = (h >> 10) & 0x1f;
    uint32_t m = h & 0x3ffu;
    uint32_t x;
    if (e == 0) {
        if (m == 0) {
            x = sign;
        } else { /* subnormal: normalise */
            e = 1;
            while (!(m & 0x400u)) {
                m <<= 1;
                e--;
            }
            m &= 0x3ffu;
            x = sign | ((uint32_t)(e + 112) << 23) | (m << 13);
        }
    } else if (e == 31) {
        x = sign | 0x7f800000u | (m << 13);
    } else {
        x = sign | ((uint32_t)(e + 112) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static inline uint16_t load_u16le(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

/* ----------------------------------------------------------------- check */

/* The scans below run over every parameter of every message (a device's
 * global, the aggregator's updates), so they are written without an early
 * exit inside the inner loop, which lets GCC vectorise them: a float is
 * finite iff its exponent bits are not all ones. */
#define FMQ__SCAN_CHUNK 4096u

static bool f32le_all_finite(const uint8_t *c, uint32_t n)
{
    for (uint32_t start = 0; start < n; start += FMQ__SCAN_CHUNK) {
        uint32_t end = n - start < FMQ__SCAN_CHUNK ? n : start + FMQ__SCAN_CHUNK;
        uint32_t bad = 0;
        for (uint32_t i = start; i < end; i++) {
            const uint8_t *p = c + 4 * (size_t)i;
            uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 |
                         (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
            bad |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
        }
        if (bad)
            return false;
    }
    return true;
}

static bool f32_all_finite(const float *x, uint32_t n)
{
    for (uint32_t start = 0; start < n; start += FMQ__SCAN_CHUNK) {
        uint32_t end = n - start < FMQ__SCAN_CHUNK ? n : start + FMQ__SCAN_CHUNK;
        uint32_t bad = 0;
        for (uint32_t i = start; i < end; i++) {
            uint32_t u;
            memcpy(&u, &x[i], 4);
            bad |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
        }
        if (bad)
            return false;
    }
    return true;
}

fmq_err fmq_quant_check(const fmq_qtensor *q)
{
    if (!q || !scheme_ok(q->scheme))
        return FMQ_ERR_SCHEME;
    if (q->n == 0 || q->n > FMQ_QUANT_N_MAX)
        return FMQ_ERR_RANGE;
    bool scaled = fmq_scheme_has_scales(q->scheme);
    if (scaled &&
        (q->block < FMQ_QUANT_BLOCK_MIN || q->block > FMQ_QUANT_BLOCK_MAX))
        return FMQ_ERR_RANGE;
    if (q->codes_len != fmq_quant_codes_size(q->scheme, q->n) || !q->codes)
        return FMQ_ERR_SHAPE;
    if (scaled) {
        size_t nb = fmq_quant_nblocks(q->scheme, q->n, q->block);
        if (q->scales_len != 4 * nb || !q->scales)
            return FMQ_ERR_SHAPE;
        for (size_t b = 0; b < nb; b++) {
            float s = fmq_load_f32le(q->scales + 4 * b);
            if (!isfinite(s))
                return FMQ_ERR_NONFINITE;
            if (s < 0)
                return FMQ_ERR_BAD_VALUE;
        }
    } else if (q->scheme == FMQ_Q_F32) {
        if (!f32le_all_finite(q->codes, q->n))
            return FMQ_ERR_NONFINITE;
    } else { /* f16: exponent all ones is inf or NaN */
        for (uint32_t i = 0; i < q->n; i++)
            if ((load_u16le(q->codes + 2 * (size_t)i) & 0x7c00u) == 0x7c00u)
                return FMQ_ERR_NONFINITE;
    }
    return FMQ_OK;
}

/* ---------------------------------------------------------------- encode */

static float block_absmax(const float *x, uint32_t len)
{
    float m = 0;
    for (uint32_t j = 0; j < len; j++) {
        float a = fabsf(x[j]);
        m = a > m ? a : m;
    }
    return m;
}

/* Integer code for t = x/s, nearest or stochastic, clamped to [-lim, lim].
 * Stochastic: floor(t) + 1 with probability frac(t) (SPEC §5). */
static inline int round_code(double t, int lim, fmq_rng *rng)
{
    double r;
    if (rng) {
        double fl = floor(t);
        r = fl + (fmq_rng_double(rng) < t - fl ? 1.0 : 0.0);
    } else {
        r = nearbyint(t);
    }
    if (r > lim)
        r = lim;
    if (r < -lim)
        r = -lim;
    return (int)r;
}

/* Nearest, ties to even, as nearbyint() in the default rounding mode (the
 * only one fedmq runs in): adding and subtracting 1.5 * 2^52 leaves t
 * rounded to an integer for |t| < 2^51 (here |t| <= 127 * (1 + 2^-23)).
 * Written inline because the libm call kept this loop scalar; it gives the
 * same codes bit for bit (test_quant, proto/vectors). */
static void q8_nearest(const float *restrict x, uint32_t len, double inv,
                       uint8_t *restrict codes)
{
    const double magic = 6755399441055744.0;
    for (uint32_t j = 0; j < len; j++) {
        double r = ((double)x[j] * inv + magic) - magic;
        r = r > 127 ? 127 : r;
        r = r < -127 ? -127 : r;
        codes[j] = (uint8_t)(int32_t)r;
    }
}

// x is (n,), codes is (n,) int8, scales is (ceil(n/B),)
static void enc_q8(const float *x, uint32_t n, uint32_t B, fmq_rng *rng,
                   uint8_t *codes, uint8_t *scales)
{
    for (uint32_t start = 0, b = 0; start < n; start += B, b++) {
        uint32_t len = n - start < B ? n - start : B;
        float s = block_absmax(x + start, len) / 127.0f;
        fmq_store_f32le(scales + 4 * (size_t)b, s);
        if (s == 0) /* zero block (or a max below 127 * FLT_TRUE_MIN) */
            continue;
        double inv = 1.0 / s;
        if (rng) {
            for (uint32_t j = 0; j < len; j++)
                codes[start + j] =
                    (uint8_t)(int8_t)round_code(x[start + j] * inv, 127, rng);
            continue;
        }
        q8_nearest(x + start, len, inv, codes + start);
    }
}

// x is (n,), codes is (ceil(n/2),) nibbles, scales is (ceil(n/B),)
static void enc_q4(const float *x, uint32_t n, uint32_t B, fmq_rng *rng,
                   uint8_t *codes, uint8_t *scales)
{
    for (uint32_t start = 0, b = 0; start < n; start += B, b++) {
        uint32_t len = n - start < B ? n - start : B;
        float s = block_absmax(x + start, len) / 7.0f;
        fmq_store_f32le(scales + 4 * (size_t)b, s);
        if (s == 0)
            continue;
        double inv = 1.0 / s;
        for (uint32_t j = 0; j < len; j++) {
            uint32_t i = start + j;
            unsigned c = (unsigned)round_code(x[i] * inv, 7, rng) & 0xfu;
            codes[i >> 1] |= (uint8_t)(i & 1 ? c << 4 : c);
        }
    }
}

// x is (n,), codes is (ceil(n/8),) bits, scales is (ceil(n/B),)
static void enc_q1(const float *x, uint32_t n, uint32_t B, fmq_rng *rng,
                   uint8_t *codes, uint8_t *scales)
{
    for (uint32_t start = 0, b = 0; start < n; start += B, b++) {
        uint32_t len = n - start < B ? n - start : B;
        float m;
        if (rng) {
            m = block_absmax(x + start, len);
        } else {
            double sum = 0;
            for (uint32_t j = 0; j < len; j++)
                sum += fabsf(x[start + j]);
            m = (float)(sum / len);
        }
        fmq_store_f32le(scales + 4 * (size_t)b, m);
        if (m == 0)
            continue; /* all bits 0: x' = -0 = 0 */
        for (uint32_t j = 0; j < len; j++) {
            uint32_t i = start + j;
            bool pos;
            if (rng) /* P(+) = (1 + x/m) / 2, unbiased */
                pos = fmq_rng_double(rng) < 0.5 * (1.0 + (double)x[i] / m);
            else
                pos = x[i] > 0;
            if (pos)
                codes[i >> 3] |= (uint8_t)(1u << (i & 7));
        }
    }
}

fmq_err fmq_quant_encode(const fmq_quant_cfg *cfg, const float *x, uint32_t n,
                         fmq_rng *rng, fmq_qtensor *q)
{
    fmq_err e;
    memset(q, 0, sizeof *q);
    if ((e = fmq_quant_cfg_check(cfg)))
        return e;
    if (!x || n == 0 || n > FMQ_QUANT_N_MAX)
        return n == 0 || n > FMQ_QUANT_N_MAX ? FMQ_ERR_RANGE : FMQ_ERR_INVAL;
    bool stoch = cfg->stochastic && fmq_scheme_has_scales(cfg->scheme);
    if (stoch && !rng)
        return FMQ_ERR_INVAL;
    if (!f32_all_finite(x, n))
        return FMQ_ERR_NONFINITE;
    if (cfg->scheme == FMQ_Q_F16)
        for (uint32_t i = 0; i < n; i++)
            if (fabsf(x[i]) >= 65520.0f) /* would become infinity */
                return FMQ_ERR_RANGE;
    if ((e = fmq_qtensor_alloc(q, cfg, n)))
        return e;
    uint8_t *codes = q->owned;
    uint8_t *scales = q->owned + q->codes_len;
    fmq_rng *r = stoch ? rng : NULL;
    switch (cfg->scheme) {
    case FMQ_Q_F32:
        for (uint32_t i = 0; i < n; i++)
            fmq_store_f32le(codes + 4 * (size_t)i, x[i]);
        break;
    case FMQ_Q_F16:
        for (uint32_t i = 0; i < n; i++) {
            uint16_t h = fmq_f32_to_f16(x[i]);
            codes[2 * (size_t)i] = (uint8_t)h;
            codes[2 * (size_t)i + 1] = (uint8_t)(h >> 8);
        }
        break;
    case FMQ_Q_Q8:
        enc_q8(x, n, cfg->block, r, codes, scales);
        break;
    case FMQ_Q_Q4:
        enc_q4(x, n, cfg->block, r, codes, scales);
        break;
    case FMQ_Q_Q1:
        enc_q1(x, n, cfg->block, r, codes, scales);
        break;
    default:
        fmq_qtensor_fini(q);
        return FMQ_ERR_SCHEME;
    }
    return FMQ_OK;
}

/* ---------------------------------------------------- decode, accumulate
 * One kernel per scheme computes out[i] = w * x'[i] + (acc ? out[i] : 0),
 * so decode (w = 1, no acc) and accumulate share the exact same arithmetic.
 * The inner loops run over one block with a hoisted scale; `restrict`
 * tells the compiler codes and out do not alias, and the per-file flag in
 * the Makefile lets GCC vectorise them at -O2.
 */

static inline int q4_code(const uint8_t *codes, uint32_t i)
{
    unsigned v = (codes[i >> 1] >> ((i & 1) * 4)) & 0xfu;
    return (int)v - (int)((v & 8u) << 1); /* sign-extend the nibble */
}

static void kern_f32(const uint8_t *restrict c, uint32_t n, float w,
                     float *restrict out, bool acc)
{
    if (acc) {
        for (uint32_t i = 0; i < n; i++)
            out[i] += w * fmq_load_f32le(c + 4 * (size_t)i);
    } else {
        for (uint32_t i = 0; i < n; i++)
            out[i] = fmq_load_f32le(c + 4 * (size_t)i);
    }
}

static void kern_f16(const uint8_t *restrict c, uint32_t n, float w,
                     float *restrict out, bool acc)
{
    for (uint32_t i = 0; i < n; i++) {
        float v = fmq_f16_to_f32(load_u16le(c + 2 * (size_t)i));
        out[i] = acc ? out[i] + w * v : v;
    }
}

static void kern_q8(const uint8_t *restrict c, const uint8_t *restrict sc,
                    uint32_t n, uint32_t B, float w, float *restrict out,
                    bool acc)
{
    const int8_t *restrict codes = (const int8_t *)c;
    for (uint32_t start = 0, b = 0; start < n; start += B, b++) {
        uint32_t len = n - start < B ? n - start : B;
        float s = fmq_load_f32le(sc + 4 * (size_t)b);
        const int8_t *restrict cb = codes + start;
        float *restrict ob = out + start;
        if (acc) {
            float ws = w * s;
            for (uint32_t j = 0; j < len; j++)
                ob[j] += ws * (float)cb[j];
        } else {
            for (uint32_t j = 0; j < len; j++)
                ob[j] = s * (float)cb[j];
        }
    }
}

static void kern_q4(const uint8_t *restrict c, const uint8_t *restrict sc,
                    uint32_t n, uint32_t B, float w, float *restrict out,
                    bool acc)
{
    for (uint32_t start = 0, b = 0; start < n; start += B, b++) {
        uint32_t len = n - start < B ? n - start : B;
        float s = fmq_load_f32le(sc + 4 * (size_t)b);
        float ws = acc ? w * s : s;
        for (uint32_t i = start; i < start + len; i++) {
            float v = ws * (float)q4_code(c, i);
            out[i] = acc ? out[i] + v : v;
        }
    }
}

static void kern_q1(const uint8_t *restrict c, const uint8_t *restrict sc,
                    uint32_t n, uint32_t B, float w, float *restrict out,
                    bool acc)
{
    for (uint32_t start = 0, b = 0; start < n; start += B, b++) {
        uint32_t len = n - start < B ? n - start : B;
        float s = fmq_load_f32le(sc + 4 * (size_t)b);
        float ws = acc ? w * s : s;
        for (uint32_t i = start; i < start + len; i++) {
            float v = (c[i >> 3] >> (i & 7)) & 1u ? ws : -ws;
            out[i] = acc ? out[i] + v : v;
        }
    }
}

static fmq_err run_kernel(const fmq_qtensor *q, float w, float *out, bool acc)
{
    if (!q || !out || !q->codes)
        return FMQ_ERR_INVAL;
    switch (q->scheme) {
    case FMQ_Q_F32:
        kern_f32(q->codes, q->n, w, out, acc);
        return FMQ_OK;
    case FMQ_Q_F16:
        kern_f16(q->codes, q->n, w, out, acc);
        return FMQ_OK;
    case FMQ_Q_Q8:
    case FMQ_Q_Q4:
    case FMQ_Q_Q1:
        if (!q->scales || q->block == 0)
            return FMQ_ERR_INVAL;
        if (q->scheme == FMQ_Q_Q8)
            kern_q8(q->codes, q->scales, q->n, q->block, w, out, acc);
        else if (q->scheme == FMQ_Q_Q4)
            kern_q4(q->codes, q->scales, q->n, q->block, w, out, acc);
        else
            kern_q1(q->codes, q->scales, q->n, q->block, w, out, acc);
        return FMQ_OK;
    default:
        return FMQ_ERR_SCHEME;
    }
}

fmq_err fmq_quant_decode(const fmq_qtensor *q, float *out)
{
    return run_kernel(q, 1.0f, out, false);
}

fmq_err fmq_quant_decode_range(const fmq_qtensor *q, uint32_t start,
                               uint32_t count, float *out)
{
    if (!q || !out || !q->codes)
        return FMQ_ERR_INVAL;
    if (start > q->n || count > q->n - start)
        return FMQ_ERR_RANGE;
    uint32_t end = start + count;
    switch (q->scheme) {
    case FMQ_Q_F32:
        kern_f32(q->codes + 4 * (size_t)start, count, 1.0f, out, false);
        return FMQ_OK;
    case FMQ_Q_F16:
        kern_f16(q->codes + 2 * (size_t)start, count, 1.0f, out, false);
        return FMQ_OK;
    case FMQ_Q_Q8:
    case FMQ_Q_Q4:
    case FMQ_Q_Q1:
        break;
    default:
        return FMQ_ERR_SCHEME;
    }
    if (!q->scales || q->block == 0)
        return FMQ_ERR_INVAL;
    uint32_t B = q->block;
    /* block by block: the same products as the whole-tensor kernels, the
     * scheme chosen once per block, not per value */
    const uint8_t *c = q->codes;
    for (uint32_t i = start; i < end;) {
        uint32_t b = i / B;
        uint64_t bend = ((uint64_t)b + 1) * B;
        uint32_t stop = bend < end ? (uint32_t)bend : end;
        const uint8_t *sc = q->scales + 4 * (size_t)b;
        float s = fmq_load_f32le(sc);
        if (q->scheme == FMQ_Q_Q8) {
            /* one block of stop - i values from code i: kern_q8's loop */
            kern_q8(c + i, sc, stop - i, stop - i, 1.0f, out + (i - start),
                    false);
            i = stop;
        } else if (q->scheme == FMQ_Q_Q4) {
            for (; i < stop; i++)
                out[i - start] = s * (float)q4_code(c, i);
        } else {
            for (; i < stop; i++)
                out[i - start] = (c[i >> 3] >> (i & 7)) & 1u ? s : -s;
        }
    }
    return FMQ_OK;
}

fmq_err fmq_quant_accumulate(const fmq_qtensor *q, float w, float *sum)
{
    if (!isfinite(w))
        return FMQ_ERR_NONFINITE;
    return run_kernel(q, w, sum, true);
}

fmq_err fmq_quant_add(const fmq_qtensor *q, float *w, float *scratch)
{
    if (!q || !w || !scratch)
        return FMQ_ERR_INVAL;
    fmq_err e = fmq_quant_decode(q, scratch);
    if (e)
        return e;
    // w is (n,), scratch is (n,): the dequantized values
    for (uint32_t i = 0; i < q->n; i++)
        w[i] = w[i] + scratch[i];
    return FMQ_OK;
}

/* ------------------------------------------------------- error feedback */

fmq_err fmq_quant_encode_ef(const fmq_quant_cfg *cfg, const float *delta,
                            float *residual, uint32_t n, fmq_rng *rng,
                            fmq_qtensor *q)
{
    memset(q, 0, sizeof *q);
    if (!delta || !residual)
        return FMQ_ERR_INVAL;
    if (n == 0 || n > FMQ_QUANT_N_MAX)
        return FMQ_ERR_RANGE;
    /* Error feedback needs a contractive compressor (Stich et al. 2018;
     * Karimireddy et al. 2019): |v - Q(v)| < |v|. Stochastic q1 sends +-max
     * and can miss by up to twice the value, so the residual feeds the next
     * block maximum and grows geometrically (test_quant measured 1e21 after
     * 100 rounds). Refuse the combination rather than let it explode. */
    if (cfg && cfg->scheme == FMQ_Q_Q1 && cfg->stochastic)
        return FMQ_ERR_CONFIG;
    // v is (n,): what this round sends, delta plus what earlier rounds dropped
    float *v = fmq_alloc_array(n, sizeof *v);
    if (!v)
        return FMQ_ERR_NOMEM;
    for (uint32_t i = 0; i < n; i++)
        v[i] = delta[i] + residual[i];
    fmq_err e = fmq_quant_encode(cfg, v, n, rng, q);
    if (e == FMQ_OK) {
        /* residual = v - dequant(q); on failure it is left as it was */
        e = fmq_quant_decode(q, residual);
        for (uint32_t i = 0; i < n; i++)
            residual[i] = v[i] - residual[i];
    }
    fmq_free(v);
    return e;
}

/* ------------------------------------------------------------------ norm */

double fmq_quant_sqnorm(const fmq_qtensor *q)
{
    if (!q || !q->codes || !scheme_ok(q->scheme))
        return 0;
    double acc = 0;
    uint32_t n = q->n;
    switch (q->scheme) {
    case FMQ_Q_F32:
        for (uint32_t i = 0; i < n; i++) {
            double v = fmq_load_f32le(q->codes + 4 * (size_t)i);
            acc += v * v;
        }
        return acc;
    case FMQ_Q_F16:
        for (uint32_t i = 0; i < n; i++) {
            double v = fmq_f16_to_f32(load_u16le(q->codes + 2 * (size_t)i));
            acc += v * v;
        }
        return acc;
    default:
        break;
    }
    if (!q->scales || q->block == 0)
        return 0;
    uint32_t B = q->block;
    for (uint32_t start = 0, b = 0; start < n; start += B, b++) {
        uint32_t len = n - start < B ? n - start : B;
        double s = fmq_load_f32le(q->scales + 4 * (size_t)b);
        double sum = 0; /* sum of code^2 in the block, exact in double */
        if (q->scheme == FMQ_Q_Q8) {
            /* exact in 64-bit integers (each term <= 2^14), and
             * vectorisable, unlike a running double sum */
            const int8_t *cb = (const int8_t *)q->codes + start;
            int64_t isum = 0;
            for (uint32_t i = 0; i < len; i++)
                isum += (int32_t)cb[i] * (int32_t)cb[i];
            sum = (double)isum;
        } else if (q->scheme == FMQ_Q_Q4) {
            for (uint32_t i = start; i < start + len; i++) {
                double c = q4_code(q->codes, i);
                sum += c * c;
            }
        } else {
            sum = len; /* every q1 value is +-s */
        }
        acc += s * s * sum;
    }
    return acc;
}
