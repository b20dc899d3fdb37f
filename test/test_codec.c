/*
 * test_codec.c — the bounded MessagePack codec (common/codec.h): round trips
 * of every message with every quantization scheme, and what the decoder does
 * with bytes from a hostile network: every truncation, every key missing,
 * every key of the wrong type or twice, unknown keys, oversized headers
 * (with a check of what was allocated, both through the fmq hooks and
 * beneath them in libc, where msgpack-c allocates), bad tensors, non-finite
 * numbers, versions, trailing bytes and the configured limits.
 *
 * Malformed messages are made by unpacking a valid encoding with msgpack-c
 * and packing it again with one change at a key path ("tc.lr", "d.sc",
 * "co.ids[1]", "fg[0].why"); the paths are enumerated from the message
 * itself, so every key the encoder writes is exercised. Every decode reads
 * from a heap copy of exactly the message's length, so AddressSanitizer sees
 * any read past the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "codec.h"
#include "quant.h"

/* ------------------------------------------------ allocation tracking
 * fmq's hooks (fmq_set_allocator) see the codec's own lists; msgpack-c
 * calls libc directly, so beneath them every libc allocation made while
 * `on` is counted too: with AddressSanitizer through its malloc hook,
 * without it by interposing malloc/calloc/realloc. */

static struct {
    bool on;
    size_t fmq_live, fmq_peak, fmq_calls;
    long fmq_fail_after; /* < 0: never fail; n: fail the (n+1)th call */
    size_t libc_calls, libc_max, libc_total;
} trk = {.fmq_fail_after = -1};

static void libc_note(size_t n)
{
    if (!trk.on)
        return;
    trk.libc_calls++;
    trk.libc_total += n;
    if (n > trk.libc_max)
        trk.libc_max = n;
}

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif

#ifdef TEST_ASAN
void __sanitizer_install_malloc_and_free_hooks(
    void (*malloc_hook)(const volatile void *, size_t),
    void (*free_hook)(const volatile void *));
static void asan_malloc_hook(const volatile void *p, size_t n)
{
    (void)p;
    libc_note(n);
}
static void asan_free_hook(const volatile void *p) { (void)p; }
static void libc_tracking_install(void)
{
    __sanitizer_install_malloc_and_free_hooks(asan_malloc_hook,
                                              asan_free_hook);
}
#else
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);
void *malloc(size_t n)
{
    libc_note(n);
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t size)
{
    libc_note(size && n > SIZE_MAX / size ? SIZE_MAX : n * size);
    return __libc_calloc(n, size);
}
void *realloc(void *p, size_t n)
{
    libc_note(n);
    return __libc_realloc(p, n);
}
void free(void *p) { __libc_free(p); }
static void libc_tracking_install(void) {}
#endif

#define FA_HDR 16
static void *fa_malloc(void *arg, size_t n)
{
    (void)arg;
    if (trk.fmq_fail_after == 0)
        return NULL;
    if (trk.fmq_fail_after > 0)
        trk.fmq_fail_after--;
    if (n > SIZE_MAX - FA_HDR)
        return NULL;
    unsigned char *h = malloc(n + FA_HDR);
    if (!h)
        return NULL;
    memcpy(h, &n, sizeof n);
    trk.fmq_calls++;
    trk.fmq_live += n;
    if (trk.fmq_live > trk.fmq_peak)
        trk.fmq_peak = trk.fmq_live;
    return h + FA_HDR;
}
static void *fa_realloc(void *arg, void *p, size_t n)
{
    if (!p)
        return fa_malloc(arg, n);
    if (trk.fmq_fail_after == 0)
        return NULL;
    if (trk.fmq_fail_after > 0)
        trk.fmq_fail_after--;
    if (n > SIZE_MAX - FA_HDR)
        return NULL;
    unsigned char *h = (unsigned char *)p - FA_HDR;
    size_t old;
    memcpy(&old, h, sizeof old);
    unsigned char *q = realloc(h, n + FA_HDR);
    if (!q)
        return NULL;
    memcpy(q, &n, sizeof n);
    trk.fmq_calls++;
    trk.fmq_live = trk.fmq_live - old + n;
    if (trk.fmq_live > trk.fmq_peak)
        trk.fmq_peak = trk.fmq_live;
    return q + FA_HDR;
}
static void fa_free(void *arg, void *p)
{
    (void)arg;
    if (!p)
        return;
    unsigned char *h = (unsigned char *)p - FA_HDR;
    size_t old;
    memcpy(&old, h, sizeof old);
    trk.fmq_live -= old;
    free(h);
}

/* Start counting: peaks and call counts are relative to now. */
static void trk_begin(void)
{
    trk.fmq_peak = trk.fmq_live;
    trk.fmq_calls = 0;
    trk.libc_calls = trk.libc_max = trk.libc_total = 0;
    trk.on = true;
}
static void trk_end(void) { trk.on = false; }

/* ------------------------------------------------------- mini writer
 * An independent encoder for hand-made headers (and for bytes our encoder
 * would never write). Big-endian as MessagePack wants. */

static void w_bytes(fmq_buf *b, const void *p, size_t n)
{
    assert_int_equal(fmq_buf_append(b, p, n), FMQ_OK);
}
static void w_u8(fmq_buf *b, uint8_t v) { w_bytes(b, &v, 1); }
static void w_be(fmq_buf *b, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--)
        w_u8(b, (uint8_t)(v >> (8 * i)));
}
static void w_str(fmq_buf *b, const char *s)
{
    size_t n = strlen(s);
    assert_true(n < 32);
    w_u8(b, (uint8_t)(0xa0 | n));
    w_bytes(b, s, n);
}
static void w_uint(fmq_buf *b, uint64_t v)
{
    if (v < 128) {
        w_u8(b, (uint8_t)v);
    } else {
        w_u8(b, 0xcf);
        w_be(b, v, 8);
    }
}
static void w_fixmap(fmq_buf *b, unsigned n)
{
    assert_true(n < 16);
    w_u8(b, (uint8_t)(0x80 | n));
}
/* {"v": 1, "t": type} as the first two entries of a map of n entries. */
static void w_head(fmq_buf *b, unsigned n, const char *type)
{
    w_fixmap(b, n);
    w_str(b, "v");
    w_uint(b, 1);
    w_str(b, "t");
    w_str(b, type);
}

/* --------------------------------------------------------- messages */

typedef union anymsg {
    fmq_msg_global g;
    fmq_msg_update u;
    fmq_msg_status s;
    fmq_msg_metrics m;
    fmq_msg_agg a;
    fmq_msg_signed sg;
    fmq_msg_sealed se;
    fmq_msg_delta dt;
} anymsg;

static fmq_err decode_any(fmq_msg_type t, const uint8_t *buf, size_t len,
                          const fmq_codec_limits *lim, anymsg *out,
                          fmq_codec_detail *d)
{
    switch (t) {
    case FMQ_MSG_GLOBAL: return fmq_codec_decode_global(buf, len, lim, &out->g, d);
    case FMQ_MSG_UPDATE: return fmq_codec_decode_update(buf, len, lim, &out->u, d);
    case FMQ_MSG_STATUS: return fmq_codec_decode_status(buf, len, lim, &out->s, d);
    case FMQ_MSG_METRICS: return fmq_codec_decode_metrics(buf, len, lim, &out->m, d);
    case FMQ_MSG_AGG: return fmq_codec_decode_agg(buf, len, lim, &out->a, d);
    case FMQ_MSG_SIGNED: return fmq_codec_decode_signed(buf, len, lim, &out->sg, d);
    case FMQ_MSG_SEALED: return fmq_codec_decode_sealed(buf, len, lim, &out->se, d);
    case FMQ_MSG_DELTA: return fmq_codec_decode_delta(buf, len, lim, &out->dt, d);
    default: fail_msg("no decoder for type %d", (int)t);
    }
    return FMQ_ERR_INVAL;
}

static fmq_err encode_any(fmq_msg_type t, const anymsg *m, fmq_buf *out)
{
    switch (t) {
    case FMQ_MSG_GLOBAL: return fmq_codec_encode_global(&m->g, out);
    case FMQ_MSG_UPDATE: return fmq_codec_encode_update(&m->u, out);
    case FMQ_MSG_STATUS: return fmq_codec_encode_status(&m->s, out);
    case FMQ_MSG_METRICS: return fmq_codec_encode_metrics(&m->m, out);
    case FMQ_MSG_AGG: return fmq_codec_encode_agg(&m->a, out);
    case FMQ_MSG_SIGNED: return fmq_codec_encode_signed(&m->sg, out);
    case FMQ_MSG_SEALED: return fmq_codec_encode_sealed(&m->se, out);
    case FMQ_MSG_DELTA: return fmq_codec_encode_delta(&m->dt, out);
    default: fail_msg("no encoder for type %d", (int)t);
    }
    return FMQ_ERR_INVAL;
}

/* Frees what a decode (or a builder) allocated; safe after a failed decode. */
static void fini_any(fmq_msg_type t, anymsg *m)
{
    if (t == FMQ_MSG_GLOBAL)
        fmq_msg_global_fini(&m->g);
    else if (t == FMQ_MSG_METRICS)
        fmq_msg_metrics_fini(&m->m);
    else if (t == FMQ_MSG_UPDATE)
        fmq_qtensor_fini(&m->u.delta);
    else if (t == FMQ_MSG_DELTA)
        fmq_msg_delta_fini(&m->dt);
}

static bool same_f(double a, double b)
{
    return (isnan(a) && isnan(b)) || a == b;
}
#define assert_same_f(a, b)                                                   \
    do {                                                                      \
        if (!same_f((a), (b)))                                                \
            fail_msg("%s = %.9g, %s = %.9g", #a, (double)(a), #b, (double)(b)); \
    } while (0)

static void assert_tensor_equal(const fmq_qtensor *a, const fmq_qtensor *b)
{
    assert_int_equal(a->scheme, b->scheme);
    assert_int_equal(a->n, b->n);
    assert_int_equal(a->codes_len, b->codes_len);
    assert_memory_equal(a->codes, b->codes, a->codes_len);
    if (fmq_scheme_has_scales(a->scheme)) {
        assert_int_equal(a->block, b->block);
        assert_int_equal(a->scales_len, b->scales_len);
        assert_memory_equal(a->scales, b->scales, a->scales_len);
    }
    /* and the values they stand for */
    float *x = malloc(sizeof(float) * a->n), *y = malloc(sizeof(float) * a->n);
    assert_non_null(x);
    assert_non_null(y);
    assert_int_equal(fmq_quant_decode(a, x), FMQ_OK);
    assert_int_equal(fmq_quant_decode(b, y), FMQ_OK);
    assert_memory_equal(x, y, sizeof(float) * a->n);
    free(x);
    free(y);
}

static void assert_uq_equal(const fmq_uq *a, const fmq_uq *b)
{
    assert_int_equal(a->scheme, b->scheme);
    assert_int_equal(a->block, b->block);
    assert_int_equal(a->stochastic, b->stochastic);
    assert_int_equal(a->error_feedback, b->error_feedback);
}

static void assert_global_equal(const fmq_msg_global *a, const fmq_msg_global *b)
{
    assert_string_equal(a->fleet, b->fleet);
    assert_int_equal(a->round, b->round);
    assert_int_equal(a->version, b->version);
    assert_int_equal(a->deadline_ms, b->deadline_ms);
    assert_int_equal(a->ts_ms, b->ts_ms);
    assert_string_equal(a->model, b->model);
    assert_tensor_equal(&a->weights, &b->weights);
    assert_int_equal(a->train.epochs, b->train.epochs);
    assert_int_equal(a->train.batch, b->train.batch);
    assert_same_f(a->train.lr, b->train.lr);
    assert_same_f(a->train.momentum, b->train.momentum);
    assert_same_f(a->train.weight_decay, b->train.weight_decay);
    assert_same_f(a->train.mu, b->train.mu);
    assert_int_equal(a->cohort.kind, b->cohort.kind);
    if (a->cohort.kind == FMQ_COHORT_FRACTION) {
        assert_same_f(a->cohort.fraction, b->cohort.fraction);
        assert_int_equal(a->cohort.seed, b->cohort.seed);
    }
    assert_int_equal(a->cohort.nids, b->cohort.nids);
    for (uint32_t i = 0; i < a->cohort.nids; i++)
        assert_string_equal(a->cohort.ids[i], b->cohort.ids[i]);
    assert_uq_equal(&a->uq, &b->uq);
    assert_int_equal(a->nclasses, b->nclasses);
    for (uint32_t i = 0; i < a->nclasses; i++) {
        assert_string_equal(a->classes[i].cls, b->classes[i].cls);
        assert_uq_equal(&a->classes[i].uq, &b->classes[i].uq);
    }
    assert_string_equal(a->strategy, b->strategy);
    assert_int_equal(a->async, b->async);
    assert_int_equal(a->max_staleness, b->max_staleness);
    assert_int_equal(a->deltas, b->deltas);
}

/* The instructions of two deltas (a global without weights) and their
 * base and tensor. */
static void assert_delta_equal(const fmq_msg_delta *a, const fmq_msg_delta *b)
{
    assert_int_equal(a->base, b->base);
    assert_tensor_equal(&a->delta, &b->delta);
    assert_int_equal(a->g.weights.n, 0);
    assert_int_equal(b->g.weights.n, 0);
    fmq_msg_global ga = a->g, gb = b->g;
    ga.weights = a->delta; /* compared above; the rest as globals */
    gb.weights = b->delta;
    assert_global_equal(&ga, &gb);
}

static void assert_update_equal(const fmq_msg_update *a, const fmq_msg_update *b)
{
    assert_string_equal(a->fleet, b->fleet);
    assert_string_equal(a->device, b->device);
    assert_int_equal(a->round, b->round);
    assert_int_equal(a->version, b->version);
    assert_int_equal(a->samples, b->samples);
    assert_same_f(a->loss, b->loss);
    assert_tensor_equal(&a->delta, &b->delta);
    assert_int_equal(a->ts_ms, b->ts_ms);
    assert_same_f(a->train_s, b->train_s);
    assert_string_equal(a->cls, b->cls);
}

static void assert_status_equal(const fmq_msg_status *a, const fmq_msg_status *b)
{
    assert_string_equal(a->fleet, b->fleet);
    assert_string_equal(a->device, b->device);
    assert_int_equal(a->online, b->online);
    assert_int_equal(a->version, b->version);
    assert_int_equal(a->last_round, b->last_round);
    assert_int_equal(a->samples, b->samples);
    assert_same_f(a->train_s, b->train_s);
    assert_int_equal(a->rss_bytes, b->rss_bytes);
    assert_same_f(a->cpu_s, b->cpu_s);
    assert_same_f(a->norm, b->norm);
    assert_same_f(a->battery_pct, b->battery_pct);
    assert_same_f(a->temp_c, b->temp_c);
    assert_int_equal(a->ts_ms, b->ts_ms);
}

static void assert_metrics_equal(const fmq_msg_metrics *a,
                                 const fmq_msg_metrics *b)
{
    assert_string_equal(a->fleet, b->fleet);
    assert_int_equal(a->round, b->round);
    assert_int_equal(a->version, b->version);
    assert_int_equal(a->cohort, b->cohort);
    assert_int_equal(a->participants, b->participants);
    assert_int_equal(a->late, b->late);
    assert_int_equal(a->nrejected, b->nrejected);
    for (uint32_t i = 0; i < a->nrejected; i++) {
        assert_string_equal(a->rejected[i].reason, b->rejected[i].reason);
        assert_int_equal(a->rejected[i].count, b->rejected[i].count);
    }
    assert_same_f(a->loss_mean, b->loss_mean);
    assert_same_f(a->loss_std, b->loss_std);
    assert_same_f(a->test_loss, b->test_loss);
    assert_same_f(a->test_acc, b->test_acc);
    assert_int_equal(a->bytes_in, b->bytes_in);
    assert_int_equal(a->bytes_out, b->bytes_out);
    assert_same_f(a->seconds, b->seconds);
    assert_string_equal(a->strategy, b->strategy);
    assert_int_equal(a->nflags, b->nflags);
    for (uint32_t i = 0; i < a->nflags; i++) {
        assert_string_equal(a->flags[i].device, b->flags[i].device);
        assert_string_equal(a->flags[i].why, b->flags[i].why);
    }
    assert_int_equal(a->ts_ms, b->ts_ms);
}

static void assert_agg_equal(const fmq_msg_agg *a, const fmq_msg_agg *b)
{
    assert_string_equal(a->fleet, b->fleet);
    assert_int_equal(a->online, b->online);
    assert_int_equal(a->round, b->round);
    assert_int_equal(a->version, b->version);
    assert_int_equal(a->ts_ms, b->ts_ms);
}

static void assert_signed_equal(const fmq_msg_signed *a, const fmq_msg_signed *b)
{
    assert_string_equal(a->kid, b->kid);
    assert_int_equal(a->body_len, b->body_len);
    assert_memory_equal(a->body, b->body, a->body_len);
    assert_memory_equal(a->sig, b->sig, FMQ_SIG_LEN);
}

static void assert_sealed_equal(const fmq_msg_sealed *a, const fmq_msg_sealed *b)
{
    assert_string_equal(a->kid, b->kid);
    assert_int_equal(a->round, b->round);
    assert_memory_equal(a->epk, b->epk, FMQ_EPK_LEN);
    assert_memory_equal(a->iv, b->iv, FMQ_IV_LEN);
    assert_int_equal(a->ct_len, b->ct_len);
    assert_memory_equal(a->ct, b->ct, a->ct_len);
}

static void assert_any_equal(fmq_msg_type t, const anymsg *a, const anymsg *b)
{
    switch (t) {
    case FMQ_MSG_GLOBAL: assert_global_equal(&a->g, &b->g); break;
    case FMQ_MSG_UPDATE: assert_update_equal(&a->u, &b->u); break;
    case FMQ_MSG_STATUS: assert_status_equal(&a->s, &b->s); break;
    case FMQ_MSG_METRICS: assert_metrics_equal(&a->m, &b->m); break;
    case FMQ_MSG_AGG: assert_agg_equal(&a->a, &b->a); break;
    case FMQ_MSG_SIGNED: assert_signed_equal(&a->sg, &b->sg); break;
    case FMQ_MSG_SEALED: assert_sealed_equal(&a->se, &b->se); break;
    case FMQ_MSG_DELTA: assert_delta_equal(&a->dt, &b->dt); break;
    default: fail();
    }
}

/* ----------------------------------------------------------- builders */

static void tensor_make(fmq_qtensor *q, fmq_scheme s, uint32_t block,
                        uint32_t n, uint64_t seed, bool stochastic)
{
    float *x = malloc(sizeof(float) * n);
    assert_non_null(x);
    fmq_rng r;
    fmq_rng_seed(&r, seed);
    for (uint32_t i = 0; i < n; i++)
        x[i] = (float)(0.05 * fmq_rng_normal(&r));
    /* a block of zeros (scale 0) when there is a second block */
    if (block && n > block)
        for (uint32_t i = block; i < n && i < 2 * block; i++)
            x[i] = 0;
    fmq_quant_cfg cfg = {.scheme = s, .block = block, .stochastic = stochastic};
    assert_int_equal(fmq_quant_encode(&cfg, x, n, &r, q), FMQ_OK);
    free(x);
}

static fmq_uq uq_make(fmq_scheme s, uint32_t block, bool sr, bool ef)
{
    fmq_uq u = {.scheme = s,
                .block = fmq_scheme_has_scales(s) ? block : 0,
                .stochastic = sr,
                .error_feedback = ef};
    return u;
}

enum { CO_ALL, CO_FRACTION, CO_IDS };

/* A global with every optional field when full (else only the required
 * ones), weights in ws and update instructions in us. */
static void global_make(fmq_msg_global *m, fmq_scheme ws, fmq_scheme us,
                        int cohort, bool full)
{
    fmq_msg_global_init(m);
    strcpy(m->fleet, "fleet-A.1");
    m->round = 7;
    m->version = 12;
    m->deadline_ms = full ? 1700000123456ull : 0;
    strcpy(m->model, "mlp:128,64");
    tensor_make(&m->weights, ws, 0, 1000, 42, false);
    m->train.epochs = 2;
    m->train.batch = 32;
    m->train.lr = 0.05f;
    m->uq = uq_make(us, 256, full, !full);
    if (cohort == CO_FRACTION) {
        m->cohort.kind = FMQ_COHORT_FRACTION;
        m->cohort.fraction = 0.3;
        m->cohort.seed = 0xfeedfacecafebeefull;
    } else if (cohort == CO_IDS) {
        static const char *ids[] = {"dev-001", "dev-002", "phone_7"};
        m->cohort.kind = FMQ_COHORT_IDS;
        m->cohort.nids = 3;
        m->cohort.ids = fmq_calloc(3, sizeof *m->cohort.ids);
        assert_non_null(m->cohort.ids);
        for (int i = 0; i < 3; i++)
            strcpy(m->cohort.ids[i], ids[i]);
    }
    if (!full)
        return;
    m->ts_ms = 1700000000000ull;
    m->train.momentum = 0.9f;
    m->train.weight_decay = 1e-4f;
    m->train.mu = 0.01f;
    m->nclasses = 3;
    m->classes = fmq_calloc(3, sizeof *m->classes);
    assert_non_null(m->classes);
    strcpy(m->classes[0].cls, "phone");
    m->classes[0].uq = uq_make(FMQ_Q_Q8, 64, true, true);
    strcpy(m->classes[1].cls, "mcu");
    m->classes[1].uq = uq_make(FMQ_Q_Q1, 128, false, false);
    strcpy(m->classes[2].cls, "edge");
    m->classes[2].uq = uq_make(FMQ_Q_F16, 0, false, true);
    strcpy(m->strategy, "fedavgm");
    m->async = true;
    m->max_staleness = 3;
}

/* A delta: global_make's instructions (full or minimal), version 12 from
 * base 11, the tensor in ds. */
static void delta_make(fmq_msg_delta *m, fmq_scheme ds, uint32_t block,
                       uint32_t n, int cohort, bool full)
{
    fmq_msg_delta_init(m);
    global_make(&m->g, FMQ_Q_F32, FMQ_Q_Q8, cohort, full);
    fmq_qtensor_fini(&m->g.weights);
    m->g.deltas = full;
    m->base = 11;
    tensor_make(&m->delta, ds, block, n, 99, false);
}

static void update_make(fmq_msg_update *m, fmq_scheme s, uint32_t block,
                        uint32_t n, bool full)
{
    fmq_msg_update_init(m);
    strcpy(m->fleet, "fleet-A.1");
    strcpy(m->device, "dev-001");
    m->round = 7;
    m->version = 12;
    m->samples = 600;
    m->loss = 0.4321f;
    tensor_make(&m->delta, s, block, n, 1000 + s, s == FMQ_Q_Q4);
    if (!full)
        return;
    m->ts_ms = 1700000000999ull;
    m->train_s = 12.5f;
    strcpy(m->cls, "phone");
}

static void status_make(fmq_msg_status *m, bool full)
{
    fmq_msg_status_init(m);
    strcpy(m->fleet, "fleet-A.1");
    strcpy(m->device, "dev-001");
    m->online = full;
    if (!full)
        return;
    m->version = 12;
    m->last_round = 6;
    m->samples = 600;
    m->train_s = 11.25f;
    m->rss_bytes = 123456789;
    m->cpu_s = 40.5f;
    m->norm = 1.75f;
    m->battery_pct = 87.5f;
    m->temp_c = -4.25f;
    m->ts_ms = 1700000000001ull;
}

static void metrics_make(fmq_msg_metrics *m, bool full)
{
    fmq_msg_metrics_init(m);
    strcpy(m->fleet, "fleet-A.1");
    m->round = 7;
    m->version = 13;
    m->cohort = 10;
    m->participants = 8;
    m->late = 1;
    m->bytes_in = 80000;
    m->bytes_out = 4000000000ull;
    m->seconds = 3.25;
    if (!full)
        return;
    m->nrejected = 2;
    m->rejected = fmq_calloc(2, sizeof *m->rejected);
    assert_non_null(m->rejected);
    strcpy(m->rejected[0].reason, "stale");
    m->rejected[0].count = 3;
    strcpy(m->rejected[1].reason, "too_large");
    m->rejected[1].count = 1;
    m->loss_mean = 0.5;
    m->loss_std = 0.125;
    m->test_loss = 0.61;
    m->test_acc = 0.875;
    strcpy(m->strategy, "fedavg");
    m->nflags = 2;
    m->flags = fmq_calloc(2, sizeof *m->flags);
    assert_non_null(m->flags);
    strcpy(m->flags[0].device, "dev-003");
    strcpy(m->flags[0].why, "stuck");
    strcpy(m->flags[1].device, "dev-004");
    strcpy(m->flags[1].why, "noisy");
    m->ts_ms = 1700000000002ull;
}

static void agg_make(fmq_msg_agg *m, bool full)
{
    fmq_msg_agg_init(m);
    strcpy(m->fleet, "fleet-A.1");
    m->online = full;
    if (!full)
        return;
    m->round = 7;
    m->version = 12;
    m->ts_ms = 1700000000003ull;
}

static const uint8_t some_body[] = {0x82, 0xa1, 0x76, 0x01, 0xa1, 0x74, 0xa3,
                                    0x61, 0x67, 0x67, 0x00, 0xff};
static uint8_t some_ct[40];

static void signed_make(fmq_msg_signed *m)
{
    memset(m, 0, sizeof *m);
    strcpy(m->kid, "agg-key-2024");
    m->body = some_body;
    m->body_len = sizeof some_body;
    for (int i = 0; i < FMQ_SIG_LEN; i++)
        m->sig[i] = (uint8_t)(i * 7 + 1);
}

static void sealed_make(fmq_msg_sealed *m)
{
    memset(m, 0, sizeof *m);
    strcpy(m->kid, "agg-seal.1");
    m->round = 7;
    m->epk[0] = 0x04;
    for (int i = 1; i < FMQ_EPK_LEN; i++)
        m->epk[i] = (uint8_t)(i * 3);
    for (int i = 0; i < FMQ_IV_LEN; i++)
        m->iv[i] = (uint8_t)(0xa0 + i);
    for (size_t i = 0; i < sizeof some_ct; i++)
        some_ct[i] = (uint8_t)(i ^ 0x5a);
    m->ct = some_ct;
    m->ct_len = sizeof some_ct;
}

/* --------------------------------------------------------- fixtures
 * A catalogue of valid messages (every optional field set, and the
 * minimal forms) used by the generic tests. */

typedef struct fixture {
    const char *name;
    fmq_msg_type type;
    anymsg m;
    fmq_buf enc;
} fixture;

enum {
    FX_GLOBAL_F16_Q8_FRACTION,
    FX_GLOBAL_F32_Q1_IDS,
    FX_GLOBAL_MINIMAL,
    FX_UPDATE_Q8,
    FX_UPDATE_Q4,
    FX_UPDATE_Q1,
    FX_UPDATE_F16,
    FX_UPDATE_F32_MINIMAL,
    FX_STATUS,
    FX_STATUS_WILL,
    FX_METRICS,
    FX_METRICS_MINIMAL,
    FX_AGG,
    FX_AGG_WILL,
    FX_SIGNED,
    FX_SEALED,
    FX_DELTA_Q8_FRACTION,
    FX_DELTA_Q4_IDS,
    FX_DELTA_F16_MINIMAL,
    FX__COUNT
};

static void fixture_make(fixture *f, int which)
{
    memset(f, 0, sizeof *f);
    fmq_buf_init(&f->enc);
    switch (which) {
    case FX_GLOBAL_F16_Q8_FRACTION:
        f->name = "global f16/q8 fraction";
        f->type = FMQ_MSG_GLOBAL;
        global_make(&f->m.g, FMQ_Q_F16, FMQ_Q_Q8, CO_FRACTION, true);
        break;
    case FX_GLOBAL_F32_Q1_IDS:
        f->name = "global f32/q1 ids";
        f->type = FMQ_MSG_GLOBAL;
        global_make(&f->m.g, FMQ_Q_F32, FMQ_Q_Q1, CO_IDS, true);
        break;
    case FX_GLOBAL_MINIMAL:
        f->name = "global minimal";
        f->type = FMQ_MSG_GLOBAL;
        global_make(&f->m.g, FMQ_Q_F32, FMQ_Q_F32, CO_ALL, false);
        break;
    case FX_UPDATE_Q8:
        f->name = "update q8";
        f->type = FMQ_MSG_UPDATE;
        update_make(&f->m.u, FMQ_Q_Q8, 64, 300, true);
        break;
    case FX_UPDATE_Q4:
        f->name = "update q4";
        f->type = FMQ_MSG_UPDATE;
        update_make(&f->m.u, FMQ_Q_Q4, 32, 201, true);
        break;
    case FX_UPDATE_Q1:
        f->name = "update q1";
        f->type = FMQ_MSG_UPDATE;
        update_make(&f->m.u, FMQ_Q_Q1, 100, 333, true);
        break;
    case FX_UPDATE_F16:
        f->name = "update f16";
        f->type = FMQ_MSG_UPDATE;
        update_make(&f->m.u, FMQ_Q_F16, 0, 77, true);
        break;
    case FX_UPDATE_F32_MINIMAL:
        f->name = "update f32 minimal";
        f->type = FMQ_MSG_UPDATE;
        update_make(&f->m.u, FMQ_Q_F32, 0, 5, false);
        break;
    case FX_STATUS:
        f->name = "status";
        f->type = FMQ_MSG_STATUS;
        status_make(&f->m.s, true);
        break;
    case FX_STATUS_WILL:
        f->name = "status will";
        f->type = FMQ_MSG_STATUS;
        status_make(&f->m.s, false);
        break;
    case FX_METRICS:
        f->name = "metrics";
        f->type = FMQ_MSG_METRICS;
        metrics_make(&f->m.m, true);
        break;
    case FX_METRICS_MINIMAL:
        f->name = "metrics minimal";
        f->type = FMQ_MSG_METRICS;
        metrics_make(&f->m.m, false);
        break;
    case FX_AGG:
        f->name = "agg";
        f->type = FMQ_MSG_AGG;
        agg_make(&f->m.a, true);
        break;
    case FX_AGG_WILL:
        f->name = "agg will";
        f->type = FMQ_MSG_AGG;
        agg_make(&f->m.a, false);
        break;
    case FX_SIGNED:
        f->name = "signed";
        f->type = FMQ_MSG_SIGNED;
        signed_make(&f->m.sg);
        break;
    case FX_SEALED:
        f->name = "sealed";
        f->type = FMQ_MSG_SEALED;
        sealed_make(&f->m.se);
        break;
    case FX_DELTA_Q8_FRACTION:
        f->name = "delta q8 fraction";
        f->type = FMQ_MSG_DELTA;
        delta_make(&f->m.dt, FMQ_Q_Q8, 64, 300, CO_FRACTION, true);
        break;
    case FX_DELTA_Q4_IDS:
        f->name = "delta q4 ids";
        f->type = FMQ_MSG_DELTA;
        delta_make(&f->m.dt, FMQ_Q_Q4, 32, 201, CO_IDS, true);
        break;
    case FX_DELTA_F16_MINIMAL:
        f->name = "delta f16 minimal";
        f->type = FMQ_MSG_DELTA;
        delta_make(&f->m.dt, FMQ_Q_F16, 0, 77, CO_ALL, false);
        break;
    default: fail();
    }
    fmq_err e = encode_any(f->type, &f->m, &f->enc);
    if (e)
        fail_msg("%s: encode: %s", f->name, fmq_errname(e));
}

static void fixture_fini(fixture *f)
{
    fini_any(f->type, &f->m);
    fmq_buf_fini(&f->enc);
}

/* Decode from a heap copy of exactly len bytes. The copy is returned in
 * *keep (the message borrows from it) for the caller to free. */
static fmq_err decode_copy(fmq_msg_type t, const uint8_t *buf, size_t len,
                           const fmq_codec_limits *lim, anymsg *out,
                           fmq_codec_detail *d, uint8_t **keep)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len)
        memcpy(copy, buf, len);
    *keep = copy;
    return decode_any(t, copy, len, lim, out, d);
}

/* Decode, expect err; frees everything. Returns the detail text. */
static void expect_decode(fmq_msg_type t, const uint8_t *buf, size_t len,
                          const fmq_codec_limits *lim, fmq_err want,
                          const char *what, fmq_codec_detail *dout)
{
    anymsg out;
    fmq_codec_detail d;
    uint8_t *keep;
    size_t live = trk.fmq_live;
    fmq_err e = decode_copy(t, buf, len, lim, &out, &d, &keep);
    if (e != want)
        fail_msg("%s: got %s (%s), want %s", what, fmq_errname(e), d.what,
                 fmq_errname(want));
    if (e != FMQ_OK && d.what[0] == '\0')
        fail_msg("%s: %s without a detail", what, fmq_errname(e));
    fini_any(t, &out);
    free(keep);
    assert_int_equal(trk.fmq_live, live); /* nothing leaked */
    if (dout)
        *dout = d;
}

/* Decode a heap copy with only the decode itself tracked (trk.*). */
static fmq_err decode_tracked(fmq_msg_type t, const uint8_t *buf, size_t len,
                              const fmq_codec_limits *lim)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len)
        memcpy(copy, buf, len);
    anymsg out;
    trk_begin();
    fmq_err e = decode_any(t, copy, len, lim, &out, NULL);
    trk_end();
    fini_any(t, &out);
    free(copy);
    return e;
}

/* ---------------------------------------------------- mutation engine */

#define PATH_MAX_ 128

enum { M_NONE, M_DROP, M_REPLACE, M_DUP, M_ADD };

typedef struct mut {
    int op;
    const char *path; /* the key (or element) changed; for M_ADD the map */
    msgpack_object val;
    const char *key; /* M_ADD */
} mut;

static void path_key(char *out, const char *path, const msgpack_object *k)
{
    assert_int_equal(k->type, MSGPACK_OBJECT_STR);
    snprintf(out, PATH_MAX_, "%s%s%.*s", path, *path ? "." : "",
             (int)k->via.str.size, k->via.str.ptr);
}
static void path_idx(char *out, const char *path, uint32_t i)
{
    snprintf(out, PATH_MAX_, "%s[%u]", path, (unsigned)i);
}

static void repack(msgpack_packer *pk, const msgpack_object *o,
                   const char *path, const mut *m)
{
    char sub[PATH_MAX_];
    bool add_here = m->op == M_ADD && strcmp(path, m->path) == 0;
    if (o->type == MSGPACK_OBJECT_MAP) {
        uint32_t n = o->via.map.size;
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            path_key(sub, path, &o->via.map.ptr[i].key);
            if (strcmp(sub, m->path) == 0)
                n += m->op == M_DUP ? 1 : m->op == M_DROP ? -1u : 0;
        }
        msgpack_pack_map(pk, n + add_here);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            path_key(sub, path, &kv->key);
            bool hit = strcmp(sub, m->path) == 0;
            if (hit && m->op == M_DROP)
                continue;
            for (int rep = 0; rep < (hit && m->op == M_DUP ? 2 : 1); rep++) {
                msgpack_pack_object(pk, kv->key);
                if (hit && m->op == M_REPLACE)
                    msgpack_pack_object(pk, m->val);
                else
                    repack(pk, &kv->val, sub, m);
            }
        }
        if (add_here) {
            msgpack_pack_str(pk, strlen(m->key));
            msgpack_pack_str_body(pk, m->key, strlen(m->key));
            msgpack_pack_object(pk, m->val);
        }
    } else if (o->type == MSGPACK_OBJECT_ARRAY) {
        uint32_t n = o->via.array.size;
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            path_idx(sub, path, i);
            if (strcmp(sub, m->path) == 0 && m->op == M_DROP)
                n--;
        }
        msgpack_pack_array(pk, n + add_here);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            path_idx(sub, path, i);
            bool hit = strcmp(sub, m->path) == 0;
            if (hit && m->op == M_DROP)
                continue;
            if (hit && m->op == M_REPLACE)
                msgpack_pack_object(pk, m->val);
            else
                repack(pk, &o->via.array.ptr[i], sub, m);
        }
        if (add_here)
            msgpack_pack_object(pk, m->val);
    } else {
        msgpack_pack_object(pk, *o);
    }
}

/* The valid encoding enc with one change. Caller frees with sbuf_done. */
static msgpack_sbuffer mutate(const fmq_buf *enc, const mut *m)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&up, (const char *)enc->data,
                                         enc->len, &off),
                     MSGPACK_UNPACK_SUCCESS);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    repack(&pk, &up.data, "", m);
    msgpack_unpacked_destroy(&up);
    return sb;
}

static void expect_mutated(const fixture *f, const mut *m,
                           const fmq_codec_limits *lim, fmq_err want,
                           fmq_codec_detail *d)
{
    msgpack_sbuffer sb = mutate(&f->enc, m);
    char what[256];
    static const char *ops[] = {"none", "drop", "replace", "dup", "add"};
    snprintf(what, sizeof what, "%s: %s %s", f->name, ops[m->op], m->path);
    expect_decode(f->type, (const uint8_t *)sb.data, sb.size, lim, want, what,
                  d);
    msgpack_sbuffer_destroy(&sb);
}

/* Every key path in the message, with the type of its value. */
typedef struct pathent {
    char path[PATH_MAX_];
    msgpack_object_type type;
    bool in_array; /* an array element, not a map key */
} pathent;

static void collect(const msgpack_object *o, const char *path, pathent *v,
                    size_t *n, size_t cap)
{
    if (o->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            assert_true(*n < cap);
            pathent *p = &v[(*n)++];
            path_key(p->path, path, &o->via.map.ptr[i].key);
            p->type = o->via.map.ptr[i].val.type;
            p->in_array = false;
            collect(&o->via.map.ptr[i].val, p->path, v, n, cap);
        }
    } else if (o->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            assert_true(*n < cap);
            pathent *p = &v[(*n)++];
            path_idx(p->path, path, i);
            p->type = o->via.array.ptr[i].type;
            p->in_array = true;
            collect(&o->via.array.ptr[i], p->path, v, n, cap);
        }
    }
}

#define MAXPATHS 256
static size_t paths_of(const fixture *f, pathent *v)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0, n = 0;
    assert_int_equal(msgpack_unpack_next(&up, (const char *)f->enc.data,
                                         f->enc.len, &off),
                     MSGPACK_UNPACK_SUCCESS);
    collect(&up.data, "", v, &n, MAXPATHS);
    msgpack_unpacked_destroy(&up);
    return n;
}

/* ------------------------------------------------------- key rules
 * What each key accepts (SPEC.md §3.3, §5–7) and what dropping it does.
 * '*' in a pattern matches one path segment (a class name, a reason, an
 * array index). */

enum {
    TY_NIL = 1 << 0,
    TY_BOOL = 1 << 1,
    TY_UINT = 1 << 2,
    TY_NEG = 1 << 3,
    TY_F32 = 1 << 4,
    TY_F64 = 1 << 5,
    TY_STR = 1 << 6,
    TY_BIN = 1 << 7,
    TY_ARR = 1 << 8,
    TY_MAP = 1 << 9,
};
#define T_NUM (TY_UINT | TY_NEG | TY_F32 | TY_F64)

typedef struct keyrule {
    const char *pat;
    unsigned types;
    fmq_err drop; /* FMQ_OK: optional */
} keyrule;

#define REQ FMQ_ERR_MISSING_KEY
#define OPT FMQ_OK

static const keyrule rules_common[] = {
    {"v", TY_UINT, REQ},
    {"t", TY_STR, REQ},
};
static const keyrule rules_global[] = {
    {"fl", TY_STR, REQ}, {"r", TY_UINT, REQ}, {"mv", TY_UINT, REQ},
    {"dl", TY_UINT, REQ}, {"ts", TY_UINT, OPT}, {"m", TY_STR, REQ},
    {"w", TY_MAP, REQ}, {"w.s", TY_STR, REQ}, {"w.n", TY_UINT, REQ},
    {"w.c", TY_BIN, REQ},
    {"tc", TY_MAP, REQ}, {"tc.ep", TY_UINT, REQ}, {"tc.bs", TY_UINT, REQ},
    {"tc.lr", T_NUM, REQ}, {"tc.mo", T_NUM, OPT}, {"tc.wd", T_NUM, OPT},
    {"tc.mu", T_NUM, OPT},
    {"co", TY_MAP, OPT}, {"co.f", T_NUM, FMQ_ERR_BAD_VALUE},
    {"co.s", TY_UINT, REQ}, {"co.ids", TY_ARR, FMQ_ERR_BAD_VALUE},
    {"co.ids[*]", TY_STR, OPT},
    {"uq", TY_MAP, REQ}, {"uq.s", TY_STR, REQ}, {"uq.b", TY_UINT, REQ},
    {"uq.sr", TY_BOOL, OPT}, {"uq.ef", TY_BOOL, OPT},
    {"uqc", TY_MAP, OPT}, {"uqc.*", TY_MAP, OPT}, {"uqc.*.s", TY_STR, REQ},
    {"uqc.*.b", TY_UINT, REQ}, {"uqc.*.sr", TY_BOOL, OPT},
    {"uqc.*.ef", TY_BOOL, OPT},
    {"st", TY_STR, OPT}, {"as", TY_BOOL, OPT}, {"ms", TY_UINT, OPT},
    {"gd", TY_BOOL, OPT},
};
static const keyrule rules_delta[] = {
    {"fl", TY_STR, REQ}, {"r", TY_UINT, REQ}, {"mv", TY_UINT, REQ},
    {"bv", TY_UINT, REQ},
    {"dl", TY_UINT, REQ}, {"ts", TY_UINT, OPT}, {"m", TY_STR, REQ},
    {"d", TY_MAP, REQ}, {"d.s", TY_STR, REQ}, {"d.n", TY_UINT, REQ},
    {"d.b", TY_UINT, REQ}, {"d.c", TY_BIN, REQ}, {"d.sc", TY_BIN, REQ},
    {"tc", TY_MAP, REQ}, {"tc.ep", TY_UINT, REQ}, {"tc.bs", TY_UINT, REQ},
    {"tc.lr", T_NUM, REQ}, {"tc.mo", T_NUM, OPT}, {"tc.wd", T_NUM, OPT},
    {"tc.mu", T_NUM, OPT},
    {"co", TY_MAP, OPT}, {"co.f", T_NUM, FMQ_ERR_BAD_VALUE},
    {"co.s", TY_UINT, REQ}, {"co.ids", TY_ARR, FMQ_ERR_BAD_VALUE},
    {"co.ids[*]", TY_STR, OPT},
    {"uq", TY_MAP, REQ}, {"uq.s", TY_STR, REQ}, {"uq.b", TY_UINT, REQ},
    {"uq.sr", TY_BOOL, OPT}, {"uq.ef", TY_BOOL, OPT},
    {"uqc", TY_MAP, OPT}, {"uqc.*", TY_MAP, OPT}, {"uqc.*.s", TY_STR, REQ},
    {"uqc.*.b", TY_UINT, REQ}, {"uqc.*.sr", TY_BOOL, OPT},
    {"uqc.*.ef", TY_BOOL, OPT},
    {"st", TY_STR, OPT}, {"as", TY_BOOL, OPT}, {"ms", TY_UINT, OPT},
    {"gd", TY_BOOL, OPT},
};
static const keyrule rules_update[] = {
    {"fl", TY_STR, REQ}, {"dev", TY_STR, REQ}, {"r", TY_UINT, REQ},
    {"mv", TY_UINT, REQ}, {"n", TY_UINT, REQ}, {"loss", T_NUM, REQ},
    {"d", TY_MAP, REQ}, {"d.s", TY_STR, REQ}, {"d.n", TY_UINT, REQ},
    {"d.b", TY_UINT, REQ}, {"d.c", TY_BIN, REQ}, {"d.sc", TY_BIN, REQ},
    {"ts", TY_UINT, OPT}, {"tts", T_NUM, OPT}, {"cls", TY_STR, OPT},
};
static const keyrule rules_status[] = {
    {"fl", TY_STR, REQ}, {"dev", TY_STR, REQ}, {"on", TY_BOOL, REQ},
    {"mv", TY_UINT, OPT}, {"lr", TY_UINT, OPT}, {"n", TY_UINT, OPT},
    {"tts", T_NUM, OPT}, {"rss", TY_UINT, OPT}, {"cpu", T_NUM, OPT},
    {"norm", T_NUM, OPT}, {"bat", T_NUM, OPT}, {"temp", T_NUM, OPT},
    {"ts", TY_UINT, OPT},
};
static const keyrule rules_metrics[] = {
    {"fl", TY_STR, REQ}, {"r", TY_UINT, REQ}, {"mv", TY_UINT, REQ},
    {"co", TY_UINT, REQ}, {"pa", TY_UINT, REQ}, {"late", TY_UINT, REQ},
    {"rej", TY_MAP, OPT}, {"rej.*", TY_UINT, OPT}, {"ls", T_NUM, OPT},
    {"lsd", T_NUM, OPT}, {"tl", T_NUM, OPT}, {"acc", T_NUM, OPT},
    {"bi", TY_UINT, REQ}, {"bo", TY_UINT, REQ}, {"sec", T_NUM, REQ},
    {"st", TY_STR, OPT}, {"fg", TY_ARR, OPT}, {"fg[*]", TY_MAP, OPT},
    {"fg[*].dev", TY_STR, REQ}, {"fg[*].why", TY_STR, REQ},
    {"ts", TY_UINT, OPT},
};
static const keyrule rules_agg[] = {
    {"fl", TY_STR, REQ}, {"on", TY_BOOL, REQ}, {"r", TY_UINT, OPT},
    {"mv", TY_UINT, OPT}, {"ts", TY_UINT, OPT},
};
static const keyrule rules_signed[] = {
    {"kid", TY_STR, REQ}, {"body", TY_BIN, REQ}, {"sig", TY_BIN, REQ},
};
static const keyrule rules_sealed[] = {
    {"kid", TY_STR, REQ}, {"r", TY_UINT, REQ}, {"epk", TY_BIN, REQ},
    {"iv", TY_BIN, REQ}, {"ct", TY_BIN, REQ},
};

/* '*' matches one segment: any run of characters up to '.', '[' or ']'. */
static bool path_match(const char *p, const char *s)
{
    if (*p == '\0')
        return *s == '\0';
    if (*p == '*') {
        const char *t = s;
        while (*t && *t != '.' && *t != '[' && *t != ']')
            t++;
        for (const char *u = s + 1; u <= t; u++)
            if (path_match(p + 1, u))
                return true;
        return false;
    }
    return *p == *s && path_match(p + 1, s + 1);
}

static const keyrule *rule_for(fmq_msg_type t, const char *path)
{
    const keyrule *tab = NULL;
    size_t n = 0;
#define TAB(x) (tab = (x), n = sizeof(x) / sizeof((x)[0]))
    switch (t) {
    case FMQ_MSG_GLOBAL: TAB(rules_global); break;
    case FMQ_MSG_UPDATE: TAB(rules_update); break;
    case FMQ_MSG_STATUS: TAB(rules_status); break;
    case FMQ_MSG_METRICS: TAB(rules_metrics); break;
    case FMQ_MSG_AGG: TAB(rules_agg); break;
    case FMQ_MSG_SIGNED: TAB(rules_signed); break;
    case FMQ_MSG_SEALED: TAB(rules_sealed); break;
    case FMQ_MSG_DELTA: TAB(rules_delta); break;
    default: fail();
    }
#undef TAB
    for (size_t i = 0; i < 2; i++)
        if (path_match(rules_common[i].pat, path))
            return &rules_common[i];
    for (size_t i = 0; i < n; i++)
        if (path_match(tab[i].pat, path))
            return &tab[i];
    fail_msg("%s: key path %s has no rule in this test", fmq_msg_type_name(t),
             path);
    return NULL;
}

static unsigned ty_of(msgpack_object_type t)
{
    switch (t) {
    case MSGPACK_OBJECT_NIL: return TY_NIL;
    case MSGPACK_OBJECT_BOOLEAN: return TY_BOOL;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return TY_UINT;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return TY_NEG;
    case MSGPACK_OBJECT_FLOAT32: return TY_F32;
    case MSGPACK_OBJECT_FLOAT64: return TY_F64;
    case MSGPACK_OBJECT_STR: return TY_STR;
    case MSGPACK_OBJECT_BIN: return TY_BIN;
    case MSGPACK_OBJECT_ARRAY: return TY_ARR;
    case MSGPACK_OBJECT_MAP: return TY_MAP;
    default: return 0;
    }
}

/* ------------------------------------------------ replacement values */

static msgpack_object o_nil(void)
{
    msgpack_object o;
    memset(&o, 0, sizeof o);
    o.type = MSGPACK_OBJECT_NIL;
    return o;
}
static msgpack_object o_bool(bool b)
{
    msgpack_object o = o_nil();
    o.type = MSGPACK_OBJECT_BOOLEAN;
    o.via.boolean = b;
    return o;
}
static msgpack_object o_uint(uint64_t u)
{
    msgpack_object o = o_nil();
    o.type = MSGPACK_OBJECT_POSITIVE_INTEGER;
    o.via.u64 = u;
    return o;
}
static msgpack_object o_neg(int64_t i)
{
    msgpack_object o = o_nil();
    o.type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
    o.via.i64 = i;
    return o;
}
static msgpack_object o_f64(double d)
{
    msgpack_object o = o_nil();
    o.type = MSGPACK_OBJECT_FLOAT64;
    o.via.f64 = d;
    return o;
}
static msgpack_object o_f32(float f)
{
    msgpack_object o = o_nil();
    o.type = MSGPACK_OBJECT_FLOAT32;
    o.via.f64 = f;
    return o;
}
static msgpack_object o_str(const char *s)
{
    msgpack_object o = o_nil();
    o.type = MSGPACK_OBJECT_STR;
    o.via.str.ptr = s;
    o.via.str.size = (uint32_t)strlen(s);
    return o;
}
static msgpack_object o_bin(const void *p, size_t n)
{
    msgpack_object o = o_nil();
    o.type = MSGPACK_OBJECT_BIN;
    o.via.bin.ptr = p;
    o.via.bin.size = (uint32_t)n;
    return o;
}
static msgpack_object o_arr0(void)
{
    msgpack_object o = o_nil();
    o.type = MSGPACK_OBJECT_ARRAY;
    return o;
}
static msgpack_object o_map0(void)
{
    msgpack_object o = o_nil();
    o.type = MSGPACK_OBJECT_MAP;
    return o;
}

static void fx_each(void (*fn)(fixture *f))
{
    for (int i = 0; i < FX__COUNT; i++) {
        fixture f;
        fixture_make(&f, i);
        fn(&f);
        fixture_fini(&f);
    }
}

/* ================================================================ tests */

static void the_allocation_tracker_sees_libc_and_fmq_allocations(void **state)
{
    (void)state;
    /* The oversized-header tests below prove nothing was allocated; this
     * shows the tracker would have seen it. */
    trk_begin();
    void *p = fmq_malloc(1000);
    void *volatile q = malloc(5000); /* volatile: not optimised away */
    trk_end();
    assert_true(trk.fmq_calls == 1 && trk.fmq_peak >= 1000);
    assert_true(trk.libc_max >= 5000);
    fmq_free(p);
    free(q);

    /* and that msgpack-c's allocations for a real decode are seen */
    fixture f;
    fixture_make(&f, FX_METRICS);
    anymsg out;
    trk_begin();
    assert_int_equal(fmq_codec_decode_metrics(f.enc.data, f.enc.len, NULL,
                                              &out.m, NULL), FMQ_OK);
    trk_end();
    assert_true(trk.libc_calls > 0);
    assert_true(trk.fmq_calls > 0); /* the rej and fg lists */
    fini_any(f.type, &out);
    fixture_fini(&f);
}

static void limits_default_to_the_spec_values(void **state)
{
    (void)state;
    fmq_codec_limits l = fmq_codec_limits_default();
    assert_int_equal(l.max_msg, 64u << 20);
    assert_int_equal(l.max_n, 100000000u);
    assert_int_equal(l.max_count, 65536u);
    assert_int_equal(l.max_depth, 8u);
    assert_int_equal(l.max_ids, 10000u);
    assert_int_equal(l.max_classes, 16u);
    assert_string_equal(fmq_msg_type_name(FMQ_MSG_SEALED), "sealed");
    assert_string_equal(fmq_msg_type_name((fmq_msg_type)99), "unknown");
}

/* -------------------------------------------------------- round trips */

static void round_trip(fmq_msg_type t, const anymsg *m, const char *what)
{
    size_t live = trk.fmq_live;
    fmq_buf b;
    fmq_buf_init(&b);
    fmq_err e = encode_any(t, m, &b);
    if (e)
        fail_msg("%s: encode: %s", what, fmq_errname(e));
    /* v and t come first (SPEC.md §3.2) */
    size_t hdr = b.data[0] == 0xde ? 3 : b.data[0] == 0xdf ? 5 : 1;
    assert_true(b.len > hdr + 5);
    assert_memory_equal(b.data + hdr, "\xa1v\x01\xa1t", 5);

    anymsg out;
    uint8_t *keep;
    fmq_codec_detail d;
    e = decode_copy(t, b.data, b.len, NULL, &out, &d, &keep);
    if (e)
        fail_msg("%s: decode: %s (%s)", what, fmq_errname(e), d.what);
    assert_any_equal(t, m, &out);

    /* re-encoding the decoded message gives the same bytes */
    fmq_buf b2;
    fmq_buf_init(&b2);
    assert_int_equal(encode_any(t, &out, &b2), FMQ_OK);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);

    fmq_msg_type pt = FMQ_MSG_UNKNOWN;
    assert_int_equal(fmq_codec_peek(keep, b.len, NULL, &pt, NULL), FMQ_OK);
    assert_int_equal(pt, t);

    fini_any(t, &out);
    free(keep);
    fmq_buf_fini(&b);
    fmq_buf_fini(&b2);
    assert_int_equal(trk.fmq_live, live); /* nothing leaked */
}

static void global_round_trips_with_every_scheme(void **state)
{
    (void)state;
    const fmq_scheme ws[] = {FMQ_Q_F32, FMQ_Q_F16};
    for (int w = 0; w < 2; w++)
        for (int u = 0; u < FMQ_Q__COUNT; u++)
            for (int co = CO_ALL; co <= CO_IDS; co++)
                for (int full = 0; full < 2; full++) {
                    anymsg m;
                    char what[96];
                    global_make(&m.g, ws[w], (fmq_scheme)u, co, full);
                    snprintf(what, sizeof what, "global w=%s uq=%s co=%d "
                             "full=%d", fmq_scheme_name(ws[w]),
                             fmq_scheme_name((fmq_scheme)u), co, full);
                    round_trip(FMQ_MSG_GLOBAL, &m, what);
                    fmq_msg_global_fini(&m.g);
                }
    /* per-class schemes with each scheme, and an empty id list */
    anymsg m;
    global_make(&m.g, FMQ_Q_F32, FMQ_Q_Q4, CO_ALL, true);
    fmq_free(m.g.classes);
    m.g.nclasses = FMQ_Q__COUNT;
    m.g.classes = fmq_calloc(FMQ_Q__COUNT, sizeof *m.g.classes);
    for (int s = 0; s < FMQ_Q__COUNT; s++) {
        snprintf(m.g.classes[s].cls, sizeof m.g.classes[s].cls, "class-%s",
                 fmq_scheme_name((fmq_scheme)s));
        m.g.classes[s].uq = uq_make((fmq_scheme)s, 1 + 1000u * s, s & 1,
                                    !(s & 2));
    }
    m.g.cohort.kind = FMQ_COHORT_IDS;
    m.g.cohort.nids = 0;
    m.g.max_staleness = UINT32_MAX;
    m.g.round = m.g.version = UINT64_MAX - 1;
    round_trip(FMQ_MSG_GLOBAL, &m, "global with every class scheme");
    fmq_msg_global_fini(&m.g);
}

static void update_round_trips_with_every_scheme_and_shape(void **state)
{
    (void)state;
    /* n a multiple of B, not a multiple, n < B, B = 1, n = 1, B max */
    const struct { uint32_t n, b; } shapes[] = {
        {256, 64}, {257, 64}, {1000, 256}, {5, 256}, {17, 1}, {1, 1},
        {1, 256}, {9, 8}, {3000, FMQ_QUANT_BLOCK_MAX},
    };
    for (int s = 0; s < FMQ_Q__COUNT; s++)
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
            for (int full = 0; full < 2; full++) {
                anymsg m;
                char what[96];
                update_make(&m.u, (fmq_scheme)s, shapes[k].b, shapes[k].n,
                            full);
                snprintf(what, sizeof what, "update %s n=%u b=%u full=%d",
                         fmq_scheme_name((fmq_scheme)s), shapes[k].n,
                         shapes[k].b, full);
                round_trip(FMQ_MSG_UPDATE, &m, what);
                fmq_qtensor_fini(&m.u.delta);
            }
}

static void delta_round_trips_with_every_scheme_and_bv_is_below_mv(void **state)
{
    (void)state;
    for (int s = 0; s < FMQ_Q__COUNT; s++)
        for (int co = CO_ALL; co <= CO_IDS; co++)
            for (int full = 0; full < 2; full++) {
                anymsg m;
                char what[96];
                delta_make(&m.dt, (fmq_scheme)s, 64, 257, co, full);
                snprintf(what, sizeof what, "delta d=%s co=%d full=%d",
                         fmq_scheme_name((fmq_scheme)s), co, full);
                round_trip(FMQ_MSG_DELTA, &m, what);
                fmq_msg_delta_fini(&m.dt);
            }
    /* bv: 1 <= bv < mv, on the wire and in the encoder */
    fixture f;
    fixture_make(&f, FX_DELTA_Q8_FRACTION); /* mv 12, bv 11 */
    /* (which key the detail names: mv's own range is [2, ...]; an mv
     * that is not above bv is bv's fault, found at bv) */
    const struct { const char *path; uint64_t v; fmq_err want;
                   const char *named; } cases[] = {
        {"bv", 0, FMQ_ERR_BAD_VALUE, "bv"},  {"bv", 12, FMQ_ERR_BAD_VALUE, "bv"},
        {"bv", 13, FMQ_ERR_BAD_VALUE, "bv"}, {"bv", 1, FMQ_OK, ""},
        {"mv", 11, FMQ_ERR_BAD_VALUE, "bv"}, {"mv", 1, FMQ_ERR_BAD_VALUE, "mv"},
        {"mv", UINT64_MAX - 1, FMQ_OK, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mut m = {.op = M_REPLACE, .path = cases[i].path,
                 .val = o_uint(cases[i].v)};
        fmq_codec_detail d;
        expect_mutated(&f, &m, NULL, cases[i].want, &d);
        if (cases[i].want && strncmp(d.what, cases[i].named, 2) != 0)
            fail_msg("%s = %llu: detail \"%s\"", cases[i].path,
                     (unsigned long long)cases[i].v, d.what);
    }
    fmq_buf b;
    fmq_buf_init(&b);
    anymsg m;
    delta_make(&m.dt, FMQ_Q_Q8, 64, 100, CO_ALL, false);
    m.dt.base = m.dt.g.version;
    assert_int_equal(fmq_codec_encode_delta(&m.dt, &b), FMQ_ERR_BAD_VALUE);
    m.dt.base = 0;
    assert_int_equal(fmq_codec_encode_delta(&m.dt, &b), FMQ_ERR_BAD_VALUE);
    assert_int_equal(b.len, 0);
    fmq_msg_delta_fini(&m.dt);
    /* a delta is not a global, nor a global a delta */
    fixture g;
    fixture_make(&g, FX_GLOBAL_MINIMAL);
    expect_decode(FMQ_MSG_DELTA, g.enc.data, g.enc.len, NULL,
                  FMQ_ERR_WRONG_MSG, "global as delta", NULL);
    expect_decode(FMQ_MSG_GLOBAL, f.enc.data, f.enc.len, NULL,
                  FMQ_ERR_WRONG_MSG, "delta as global", NULL);
    fmq_buf_fini(&b);
    fixture_fini(&g);
    fixture_fini(&f);
}

static void status_metrics_agg_and_envelopes_round_trip(void **state)
{
    (void)state;
    for (int full = 0; full < 2; full++) {
        anymsg m;
        status_make(&m.s, full);
        round_trip(FMQ_MSG_STATUS, &m, full ? "status" : "status will");
        metrics_make(&m.m, full);
        round_trip(FMQ_MSG_METRICS, &m, full ? "metrics" : "metrics min");
        fmq_msg_metrics_fini(&m.m);
        agg_make(&m.a, full);
        round_trip(FMQ_MSG_AGG, &m, full ? "agg" : "agg will");
    }
    anymsg m;
    signed_make(&m.sg);
    round_trip(FMQ_MSG_SIGNED, &m, "signed");
    sealed_make(&m.se);
    round_trip(FMQ_MSG_SEALED, &m, "sealed");
    /* big numbers survive */
    status_make(&m.s, true);
    m.s.rss_bytes = UINT64_MAX - 1;
    m.s.temp_c = -FLT_MAX;
    m.s.battery_pct = 100;
    round_trip(FMQ_MSG_STATUS, &m, "status extremes");
    metrics_make(&m.m, true);
    m.m.loss_mean = -1e300;
    m.m.seconds = 0;
    m.m.test_acc = 1;
    round_trip(FMQ_MSG_METRICS, &m, "metrics extremes");
    fmq_msg_metrics_fini(&m.m);
}

static void the_inner_message_of_an_envelope_decodes(void **state)
{
    (void)state;
    fixture g;
    fixture_make(&g, FX_GLOBAL_F16_Q8_FRACTION);
    anymsg s;
    signed_make(&s.sg);
    s.sg.body = g.enc.data;
    s.sg.body_len = g.enc.len;
    fmq_buf b;
    fmq_buf_init(&b);
    assert_int_equal(fmq_codec_encode_signed(&s.sg, &b), FMQ_OK);
    anymsg out, inner;
    assert_int_equal(fmq_codec_decode_signed(b.data, b.len, NULL, &out.sg,
                                             NULL), FMQ_OK);
    /* zero-copy: body points into the envelope's buffer */
    assert_true(out.sg.body > b.data && out.sg.body + out.sg.body_len <=
                b.data + b.len);
    assert_int_equal(fmq_codec_decode_global(out.sg.body, out.sg.body_len,
                                             NULL, &inner.g, NULL), FMQ_OK);
    assert_global_equal(&g.m.g, &inner.g);
    /* and so do the tensors */
    assert_true(inner.g.weights.codes > b.data &&
                inner.g.weights.codes < b.data + b.len);
    assert_null(inner.g.weights.owned);
    fmq_msg_global_fini(&inner.g);
    fmq_buf_fini(&b);
    fixture_fini(&g);
}

/* ---------------------------------------------- structure and framing */

static void fx_truncations(fixture *f)
{
    for (size_t len = 0; len < f->enc.len; len++) {
        char what[96];
        snprintf(what, sizeof what, "%s cut to %zu of %zu", f->name, len,
                 f->enc.len);
        fmq_err want = len == 0 ? FMQ_ERR_EMPTY : FMQ_ERR_TRUNCATED;
        uint8_t *copy = malloc(len ? len : 1);
        memcpy(copy, f->enc.data, len);
        anymsg out;
        fmq_codec_detail d;
        trk_begin();
        fmq_err e = decode_any(f->type, copy, len, NULL, &out, &d);
        trk_end();
        if (e != want)
            fail_msg("%s: %s (%s)", what, fmq_errname(e), d.what);
        /* refused by the walk, before msgpack-c or any list saw it */
        if (trk.fmq_calls || trk.libc_calls)
            fail_msg("%s: %zu fmq and %zu libc allocations", what,
                     trk.fmq_calls, trk.libc_calls);
        fini_any(f->type, &out);
        fmq_msg_type t = FMQ_MSG_GLOBAL;
        assert_int_equal(fmq_codec_peek(copy, len, NULL, &t, NULL), want);
        assert_int_equal(t, FMQ_MSG_UNKNOWN);
        free(copy);
    }
}
static void every_truncation_of_every_message_is_truncated(void **state)
{
    (void)state;
    fx_each(fx_truncations);
}

static void fx_trailing(fixture *f)
{
    fmq_buf b;
    fmq_buf_init(&b);
    w_bytes(&b, f->enc.data, f->enc.len);
    w_u8(&b, 0xc0);
    expect_decode(f->type, b.data, b.len, NULL, FMQ_ERR_TRAILING, f->name,
                  NULL);
    /* a second complete message is trailing too */
    fmq_buf_reset(&b);
    w_bytes(&b, f->enc.data, f->enc.len);
    w_bytes(&b, f->enc.data, f->enc.len);
    expect_decode(f->type, b.data, b.len, NULL, FMQ_ERR_TRAILING, f->name,
                  NULL);
    fmq_buf_fini(&b);
}
static void bytes_after_the_map_are_trailing(void **state)
{
    (void)state;
    fx_each(fx_trailing);
}

static void the_top_level_must_be_a_map_of_string_keys(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        const char *hex;
        size_t len;
        fmq_err want;
    } cases[] = {
        {"array", "\x92\x01\x02", 3, FMQ_ERR_NOT_MAP},
        {"uint", "\x05", 1, FMQ_ERR_NOT_MAP},
        {"str", "\xa3" "abc", 4, FMQ_ERR_NOT_MAP},
        {"nil", "\xc0", 1, FMQ_ERR_NOT_MAP},
        {"0xc1", "\xc1", 1, FMQ_ERR_MALFORMED},
        {"0xc1 inside a map", "\x81\xa1v\xc1", 4, FMQ_ERR_MALFORMED},
        {"nil nil", "\xc0\xc0", 2, FMQ_ERR_TRAILING},
        {"int key", "\x82\xa1v\x01\x01\x02", 6, FMQ_ERR_BAD_KEY},
        {"bin key", "\x81\xc4\x01v\x01", 5, FMQ_ERR_BAD_KEY},
        {"nested int key", "\x83\xa1v\x01\xa1t\xa3" "agg\xa1x\x81\x01\x02",
         15, FMQ_ERR_BAD_KEY},
        {"map key in array", "\x82\xa1v\x01\xa1x\x91\x81\xc0\xc0", 10,
         FMQ_ERR_BAD_KEY},
        {"no v", "\x81\xa1t\xa3" "agg", 7, FMQ_ERR_MISSING_KEY},
        {"v twice", "\x83\xa1v\x01\xa1v\x01\xa1t\xa3" "agg", 13,
         FMQ_ERR_DUP_KEY},
        {"empty map", "\x80", 1, FMQ_ERR_MISSING_KEY},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        expect_decode(FMQ_MSG_AGG, (const uint8_t *)cases[i].hex,
                      cases[i].len, NULL, cases[i].want, cases[i].what, NULL);
        fmq_msg_type t;
        uint8_t *copy = malloc(cases[i].len);
        memcpy(copy, cases[i].hex, cases[i].len);
        assert_int_equal(fmq_codec_peek(copy, cases[i].len, NULL, &t, NULL),
                         cases[i].want);
        free(copy);
    }
    fmq_msg_agg a;
    assert_int_equal(fmq_codec_decode_agg(NULL, 0, NULL, &a, NULL),
                     FMQ_ERR_EMPTY);
    assert_int_equal(fmq_codec_decode_agg(NULL, 3, NULL, &a, NULL),
                     FMQ_ERR_INVAL);
    assert_int_equal(fmq_codec_decode_agg((const uint8_t *)"\x80", 1, NULL,
                                          NULL, NULL), FMQ_ERR_INVAL);
}

static void structural_errors_come_in_the_spec_order(void **state)
{
    (void)state;
    fmq_buf b;
    fmq_buf_init(&b);
    /* a duplicate key beats a missing v; a missing v beats a wrong t */
    w_fixmap(&b, 2);
    w_str(&b, "t");
    w_str(&b, "nope");
    w_str(&b, "t");
    w_str(&b, "nope");
    expect_decode(FMQ_MSG_AGG, b.data, b.len, NULL, FMQ_ERR_DUP_KEY, "dup",
                  NULL);
    fmq_buf_reset(&b);
    w_fixmap(&b, 1);
    w_str(&b, "t");
    w_str(&b, "nope");
    expect_decode(FMQ_MSG_AGG, b.data, b.len, NULL, FMQ_ERR_MISSING_KEY,
                  "no v", NULL);
    /* a bad version beats a wrong t and missing fields */
    fmq_buf_reset(&b);
    w_fixmap(&b, 2);
    w_str(&b, "t");
    w_str(&b, "nope");
    w_str(&b, "v");
    w_uint(&b, 2);
    expect_decode(FMQ_MSG_AGG, b.data, b.len, NULL, FMQ_ERR_VERSION, "v2",
                  NULL);
    /* trailing beats not-a-map */
    fmq_buf_reset(&b);
    w_bytes(&b, "\x01\x02", 2);
    expect_decode(FMQ_MSG_AGG, b.data, b.len, NULL, FMQ_ERR_TRAILING,
                  "1 2", NULL);
    /* t of another message, and of none */
    fmq_buf_reset(&b);
    w_head(&b, 2, "status");
    expect_decode(FMQ_MSG_AGG, b.data, b.len, NULL, FMQ_ERR_WRONG_MSG,
                  "status as agg", NULL);
    fmq_buf_reset(&b);
    w_head(&b, 2, "ggg");
    expect_decode(FMQ_MSG_AGG, b.data, b.len, NULL, FMQ_ERR_WRONG_MSG,
                  "unknown t", NULL);
    /* then the fields in table order: fl before on */
    fmq_buf_reset(&b);
    w_head(&b, 2, "agg");
    fmq_codec_detail d;
    expect_decode(FMQ_MSG_AGG, b.data, b.len, NULL, FMQ_ERR_MISSING_KEY,
                  "no fields", &d);
    assert_string_equal(d.what, "fl: required key missing");
    fmq_buf_fini(&b);
}

static void fx_wrong_msg(fixture *f)
{
    for (int t = FMQ_MSG_GLOBAL; t < FMQ_MSG__COUNT; t++)
        if (t != (int)f->type)
            expect_decode((fmq_msg_type)t, f->enc.data, f->enc.len, NULL,
                          FMQ_ERR_WRONG_MSG, f->name, NULL);
}
static void a_message_of_another_type_is_wrong_msg(void **state)
{
    (void)state;
    fx_each(fx_wrong_msg);
}

static void fx_peek(fixture *f)
{
    fmq_msg_type t = FMQ_MSG_UNKNOWN;
    fmq_codec_detail d;
    assert_int_equal(fmq_codec_peek(f->enc.data, f->enc.len, NULL, &t, &d),
                     FMQ_OK);
    assert_int_equal(t, f->type);
    assert_int_equal(fmq_codec_peek(f->enc.data, f->enc.len, NULL, NULL,
                                    NULL), FMQ_OK);
}
static void peek_names_every_type_and_only_needs_v_and_t(void **state)
{
    (void)state;
    fx_each(fx_peek);
    fmq_buf b;
    fmq_buf_init(&b);
    for (int t = FMQ_MSG_GLOBAL; t < FMQ_MSG__COUNT; t++) {
        fmq_buf_reset(&b);
        w_head(&b, 3, fmq_msg_type_name((fmq_msg_type)t));
        w_str(&b, "zz");
        w_bytes(&b, "\x92\xc0\xc3", 3); /* an unknown key */
        fmq_msg_type pt;
        assert_int_equal(fmq_codec_peek(b.data, b.len, NULL, &pt, NULL),
                         FMQ_OK);
        assert_int_equal(pt, t);
        /* the decoder itself wants the fields */
        expect_decode((fmq_msg_type)t, b.data, b.len, NULL,
                      FMQ_ERR_MISSING_KEY, "head only", NULL);
    }
    /* peek applies the same walk and limits */
    fmq_msg_type pt = FMQ_MSG_AGG;
    fmq_buf_reset(&b);
    w_head(&b, 2, "nope");
    assert_int_equal(fmq_codec_peek(b.data, b.len, NULL, &pt, NULL),
                     FMQ_ERR_WRONG_MSG);
    assert_int_equal(pt, FMQ_MSG_UNKNOWN);
    fmq_codec_limits lim = fmq_codec_limits_default();
    lim.max_msg = b.len - 1;
    assert_int_equal(fmq_codec_peek(b.data, b.len, &lim, &pt, NULL),
                     FMQ_ERR_TOO_LARGE);
    fmq_buf_fini(&b);
}

/* ------------------------------------------------------------ versions */

static void an_unknown_major_version_is_refused(void **state)
{
    (void)state;
    fixture f;
    fixture_make(&f, FX_UPDATE_Q8);
    const msgpack_object bad[] = {o_uint(0), o_uint(2), o_uint(UINT64_MAX),
                                  o_neg(-1)};
    for (size_t i = 0; i < 4; i++) {
        mut m = {.op = M_REPLACE, .path = "v", .val = bad[i]};
        expect_mutated(&f, &m, NULL, FMQ_ERR_VERSION, NULL);
    }
    mut m = {.op = M_REPLACE, .path = "v", .val = o_f64(1.0)};
    expect_mutated(&f, &m, NULL, FMQ_ERR_WRONG_TYPE, NULL);
    m.val = o_str("1");
    expect_mutated(&f, &m, NULL, FMQ_ERR_WRONG_TYPE, NULL);
    /* 1 in any integer width is version 1 */
    fmq_buf b;
    fmq_buf_init(&b);
    w_fixmap(&b, 4);
    w_str(&b, "t");
    w_str(&b, "agg");
    w_str(&b, "v");
    w_bytes(&b, "\xcf\0\0\0\0\0\0\0\x01", 9);
    w_str(&b, "fl");
    w_str(&b, "f");
    w_str(&b, "on");
    w_u8(&b, 0xc2);
    expect_decode(FMQ_MSG_AGG, b.data, b.len, NULL, FMQ_OK, "uint64 v", NULL);
    fmq_buf_reset(&b);
    w_fixmap(&b, 4);
    w_str(&b, "t");
    w_str(&b, "agg");
    w_str(&b, "v");
    w_bytes(&b, "\xd0\x01", 2); /* int8 holding 1 */
    w_str(&b, "fl");
    w_str(&b, "f");
    w_str(&b, "on");
    w_u8(&b, 0xc2);
    expect_decode(FMQ_MSG_AGG, b.data, b.len, NULL, FMQ_OK, "int8 v", NULL);
    fmq_buf_fini(&b);
    fixture_fini(&f);
}

/* ----------------------------------------------- keys: every key path */

static void fx_missing(fixture *f)
{
    pathent p[MAXPATHS];
    size_t n = paths_of(f, p);
    for (size_t i = 0; i < n; i++) {
        const keyrule *r = rule_for(f->type, p[i].path);
        mut m = {.op = M_DROP, .path = p[i].path};
        fmq_codec_detail d;
        expect_mutated(f, &m, NULL, r->drop, &d);
        if (r->drop == FMQ_ERR_MISSING_KEY &&
            strncmp(d.what, p[i].path, strlen(p[i].path)) != 0)
            fail_msg("%s: drop %s: detail \"%s\" does not name the key",
                     f->name, p[i].path, d.what);
    }
}
static void missing_each_required_key_is_missing_key(void **state)
{
    (void)state;
    fx_each(fx_missing);
}

static void fx_wrong_type(fixture *f)
{
    static const uint8_t onebyte[] = {0x04};
    const msgpack_object cand[] = {
        o_nil(), o_bool(true), o_uint(7), o_neg(-3), o_f64(1.5),
        o_f32(2.5f), o_str("x"), o_bin(onebyte, 1), o_arr0(), o_map0(),
    };
    pathent p[MAXPATHS];
    size_t n = paths_of(f, p);
    for (size_t i = 0; i < n; i++) {
        const keyrule *r = rule_for(f->type, p[i].path);
        /* the encoder writes what the rule says */
        if (!(ty_of(p[i].type) & r->types))
            fail_msg("%s: %s is written as type %d", f->name, p[i].path,
                     (int)p[i].type);
        for (size_t k = 0; k < sizeof cand / sizeof cand[0]; k++) {
            unsigned ty = ty_of(cand[k].type);
            if (ty & r->types)
                continue; /* an accepted type: value rules apply */
            fmq_err want = FMQ_ERR_WRONG_TYPE;
            if (ty == TY_NEG && (r->types & TY_UINT))
                want = strcmp(p[i].path, "v") == 0 ? FMQ_ERR_VERSION
                                                   : FMQ_ERR_BAD_VALUE;
            mut m = {.op = M_REPLACE, .path = p[i].path, .val = cand[k]};
            fmq_codec_detail d;
            expect_mutated(f, &m, NULL, want, &d);
            if (want == FMQ_ERR_WRONG_TYPE &&
                strncmp(d.what, p[i].path, strlen(p[i].path)) != 0)
                fail_msg("%s: %s as %d: detail \"%s\" does not name the key",
                         f->name, p[i].path, (int)cand[k].type, d.what);
        }
    }
}
static void each_key_of_the_wrong_type_is_wrong_type(void **state)
{
    (void)state;
    fx_each(fx_wrong_type);
}

static void fx_dup(fixture *f)
{
    pathent p[MAXPATHS];
    size_t n = paths_of(f, p);
    for (size_t i = 0; i < n; i++) {
        if (p[i].in_array)
            continue;
        mut m = {.op = M_DUP, .path = p[i].path};
        expect_mutated(f, &m, NULL, FMQ_ERR_DUP_KEY, NULL);
    }
}
static void each_key_twice_is_dup_key(void **state)
{
    (void)state;
    fx_each(fx_dup);
}

static void a_duplicate_in_a_large_map_is_found(void **state)
{
    (void)state;
    /* maps over 16 keys take the sorting path in the codec */
    fixture f;
    fixture_make(&f, FX_AGG);
    for (int dup = 0; dup < 2; dup++) {
        fmq_buf b;
        fmq_buf_init(&b);
        w_u8(&b, 0xde);
        w_be(&b, 2 + 2 + 40 + dup, 2);
        w_str(&b, "v");
        w_uint(&b, 1);
        w_str(&b, "t");
        w_str(&b, "agg");
        w_str(&b, "fl");
        w_str(&b, "f");
        w_str(&b, "on");
        w_u8(&b, 0xc3);
        for (int i = 0; i < 40; i++) {
            char k[16];
            snprintf(k, sizeof k, "k%02d", i);
            w_str(&b, k);
            w_uint(&b, (uint64_t)i);
        }
        if (dup) {
            w_str(&b, "k17");
            w_uint(&b, 1);
        }
        expect_decode(FMQ_MSG_AGG, b.data, b.len, NULL,
                      dup ? FMQ_ERR_DUP_KEY : FMQ_OK, "40 extra keys", NULL);
        fmq_buf_fini(&b);
    }
    fixture_fini(&f);
}

static void fx_unknown(fixture *f)
{
    /* the baseline */
    anymsg base;
    uint8_t *kb;
    assert_int_equal(decode_copy(f->type, f->enc.data, f->enc.len, NULL, &base,
                                 NULL, &kb), FMQ_OK);
    /* an unknown key with a nested value, in every record map */
    static const uint8_t blob[] = {0xc1, 0x00, 0xff};
    msgpack_object inner[3] = {o_nil(), o_bin(blob, 3), o_f64(NAN)};
    msgpack_object arr = o_arr0();
    arr.via.array.size = 3;
    arr.via.array.ptr = inner;
    pathent p[MAXPATHS + 1];
    size_t n = paths_of(f, p + 1);
    strcpy(p[0].path, ""); /* the top map */
    p[0].type = MSGPACK_OBJECT_MAP;
    for (size_t i = 0; i <= n; i++) {
        if (p[i].type != MSGPACK_OBJECT_MAP || strcmp(p[i].path, "uqc") == 0 ||
            strcmp(p[i].path, "rej") == 0) /* data maps, not records */
            continue;
        mut m = {.op = M_ADD, .path = p[i].path, .key = "zz_future",
                 .val = arr};
        msgpack_sbuffer sb = mutate(&f->enc, &m);
        anymsg out;
        uint8_t *ko;
        fmq_codec_detail d;
        fmq_err e = decode_copy(f->type, (const uint8_t *)sb.data, sb.size,
                                NULL, &out, &d, &ko);
        if (e)
            fail_msg("%s: unknown key in \"%s\": %s (%s)", f->name,
                     p[i].path, fmq_errname(e), d.what);
        assert_any_equal(f->type, &base, &out);
        fini_any(f->type, &out);
        free(ko);
        msgpack_sbuffer_destroy(&sb);
    }
    fini_any(f->type, &base);
    free(kb);
}
static void unknown_keys_are_ignored_everywhere(void **state)
{
    (void)state;
    fx_each(fx_unknown);
}

static void fx_order(fixture *f)
{
    /* decoders accept any key order: write the top map reversed */
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&up, (const char *)f->enc.data,
                                         f->enc.len, &off),
                     MSGPACK_UNPACK_SUCCESS);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_object_map *mp = &up.data.via.map;
    msgpack_pack_map(&pk, mp->size);
    for (uint32_t i = mp->size; i-- > 0;) {
        msgpack_pack_object(&pk, mp->ptr[i].key);
        msgpack_pack_object(&pk, mp->ptr[i].val);
    }
    anymsg out;
    uint8_t *k;
    assert_int_equal(decode_copy(f->type, (const uint8_t *)sb.data, sb.size,
                                 NULL, &out, NULL, &k), FMQ_OK);
    assert_any_equal(f->type, &f->m, &out);
    fini_any(f->type, &out);
    free(k);
    msgpack_sbuffer_destroy(&sb);
    msgpack_unpacked_destroy(&up);
}
static void keys_may_come_in_any_order(void **state)
{
    (void)state;
    fx_each(fx_order);
}

/* --------------------------------------------- oversized headers */

static void oversized_counts_and_lengths_allocate_nothing(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        const char *bytes;
        size_t len;
        fmq_err want;
    } cases[] = {
        {"map32 of 2^32-1 in 10 bytes", "\xdf\xff\xff\xff\xff\xa1v\x01\xa1t",
         10, FMQ_ERR_TRUNCATED},
        {"array32 of 2^31-1", "\xdd\x7f\xff\xff\xff", 5, FMQ_ERR_TRUNCATED},
        {"array32 of 2^24 (msgpack-c reserves 384 MB)", "\xdd\x01\x00\x00\x00",
         5, FMQ_ERR_TRUNCATED},
        {"bin32 0xFFFFFFF0 in 10 bytes", "\x81\xa1" "c\xc6\xff\xff\xff\xf0\0\0",
         10, FMQ_ERR_TRUNCATED},
        {"str32 0xFFFFFFFF", "\x81\xa1v\xdb\xff\xff\xff\xff\x00", 9,
         FMQ_ERR_TRUNCATED},
        {"ext32 0xFFFFFFFF", "\x81\xa1v\xc9\xff\xff\xff\xff\x01\x00", 10,
         FMQ_ERR_TRUNCATED},
        {"map16 of 65535 nested", "\x81\xa1x\xde\xff\xff\xc0\xc0\xc0\xc0", 10,
         FMQ_ERR_TRUNCATED},
        {"array16 count cut", "\x81\xa1x\xdc\xff", 5, FMQ_ERR_TRUNCATED},
        {"map32 count cut", "\xdf\xff\xff", 3, FMQ_ERR_TRUNCATED},
        {"bin8 past the end", "\x81\xa1" "c\xc4\x05\x01\x02", 7,
         FMQ_ERR_TRUNCATED},
        {"fixstr past the end", "\x81\xa1v\xa5" "ab", 6, FMQ_ERR_TRUNCATED},
        {"fixext16 past the end", "\x81\xa1v\xd8\x01\x00", 6,
         FMQ_ERR_TRUNCATED},
        {"float64 cut", "\x81\xa1v\xcb\x00\x00", 6, FMQ_ERR_TRUNCATED},
        /* each entry of an enclosing container is owed a byte */
        {"inner array claims the outer's bytes",
         "\x82\xa1x\x93\xc0\xc0\xc0\xa1y", 9, FMQ_ERR_TRUNCATED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int t = FMQ_MSG_GLOBAL; t < FMQ_MSG__COUNT; t++) {
            uint8_t *copy = malloc(cases[i].len);
            memcpy(copy, cases[i].bytes, cases[i].len);
            anymsg out;
            fmq_codec_detail d;
            trk_begin();
            fmq_err e = decode_any((fmq_msg_type)t, copy, cases[i].len, NULL,
                                   &out, &d);
            trk_end();
            if (trk.fmq_peak > trk.fmq_live || trk.libc_total > 0)
                fail_msg("%s: allocated %zu bytes, largest %zu (fmq peak "
                         "%zu)", cases[i].what, trk.libc_total, trk.libc_max,
                         trk.fmq_peak);
            if (e != cases[i].want)
                fail_msg("%s: %s (%s)", cases[i].what, fmq_errname(e), d.what);
            fini_any((fmq_msg_type)t, &out);
            free(copy);
        }
    }
}

static void counts_over_the_limit_within_the_bytes_are_too_large(void **state)
{
    (void)state;
    /* {"v":1,"t":"agg","fl":"f","on":true,"x":[nil * N]}: N = 65536 is the
     * limit itself, N = 65537 is over it, and both fit the bytes */
    for (uint32_t n = 65536; n <= 65537; n++) {
        fmq_buf b;
        fmq_buf_init(&b);
        w_head(&b, 5, "agg");
        w_str(&b, "fl");
        w_str(&b, "f");
        w_str(&b, "on");
        w_u8(&b, 0xc3);
        w_str(&b, "x");
        w_u8(&b, 0xdd);
        w_be(&b, n, 4);
        for (uint32_t i = 0; i < n; i++)
            w_u8(&b, 0xc0);
        assert_int_equal(decode_tracked(FMQ_MSG_AGG, b.data, b.len, NULL),
                         n > 65536 ? FMQ_ERR_TOO_LARGE : FMQ_OK);
        if (n > 65536 && (trk.fmq_calls || trk.libc_calls))
            fail_msg("over the limit: %zu fmq, %zu libc allocations "
                     "(%zu bytes)", trk.fmq_calls, trk.libc_calls,
                     trk.libc_total);
        /* the same count as a map32 header: 2 bytes an entry */
        fmq_buf_reset(&b);
        w_head(&b, 3, "agg");
        w_str(&b, "x");
        w_u8(&b, 0xdf);
        w_be(&b, n, 4);
        for (uint32_t i = 0; i < 2 * n; i++)
            w_u8(&b, 0xc0);
        assert_int_equal(decode_tracked(FMQ_MSG_AGG, b.data, b.len, NULL),
                         n > 65536 ? FMQ_ERR_TOO_LARGE : FMQ_ERR_BAD_KEY);
        if (n > 65536 && (trk.fmq_calls || trk.libc_calls))
            fail_msg("map over the limit: %zu allocations", trk.libc_calls);
        /* while within the limit, msgpack-c does allocate (the tracker
         * works here) */
        if (n == 65536)
            assert_true(trk.libc_total >= 65536);
        fmq_buf_fini(&b);
    }
}

static void nesting_beyond_the_limit_is_too_deep(void **state)
{
    (void)state;
    /* {"v":1,"t":"agg","fl":"f","on":true,"x":[[[...nil]]]}, depth = 1 +
     * arrays */
    const unsigned depths[] = {8, 9, 32, 33, 40};
    const uint32_t limits[] = {8, 8, 32, 100, 100};
    for (size_t k = 0; k < 5; k++) {
        fmq_buf b;
        fmq_buf_init(&b);
        w_head(&b, 5, "agg");
        w_str(&b, "fl");
        w_str(&b, "f");
        w_str(&b, "on");
        w_u8(&b, 0xc3);
        w_str(&b, "x");
        for (unsigned i = 1; i < depths[k]; i++)
            w_u8(&b, 0x91);
        w_u8(&b, 0xc0);
        fmq_codec_limits lim = fmq_codec_limits_default();
        lim.max_depth = limits[k];
        /* a limit above msgpack-c's own stack of 32 is clamped to it */
        fmq_err want = depths[k] <= limits[k] && depths[k] <= 32
                           ? FMQ_OK
                           : FMQ_ERR_TOO_DEEP;
        char what[64];
        snprintf(what, sizeof what, "depth %u, limit %u", depths[k],
                 limits[k]);
        expect_decode(FMQ_MSG_AGG, b.data, b.len, &lim, want, what, NULL);
        /* empty containers count too */
        b.data[b.len - 1] = 0x90;
        expect_decode(FMQ_MSG_AGG, b.data, b.len, &lim,
                      depths[k] + 1 <= limits[k] && depths[k] + 1 <= 32
                          ? FMQ_OK
                          : FMQ_ERR_TOO_DEEP,
                      what, NULL);
        fmq_buf_fini(&b);
    }
}

/* --------------------------------------------------- configured limits */

static void msgpack_max_count(const msgpack_object *o, uint32_t *mx,
                              uint32_t depth, uint32_t *dmax)
{
    if (o->type == MSGPACK_OBJECT_MAP || o->type == MSGPACK_OBJECT_ARRAY) {
        uint32_t n = o->type == MSGPACK_OBJECT_MAP ? o->via.map.size
                                                   : o->via.array.size;
        if (n > *mx)
            *mx = n;
        if (depth + 1 > *dmax)
            *dmax = depth + 1;
        for (uint32_t i = 0; i < n; i++)
            msgpack_max_count(o->type == MSGPACK_OBJECT_MAP
                                  ? &o->via.map.ptr[i].val
                                  : &o->via.array.ptr[i],
                              mx, depth + 1, dmax);
    }
}

static void fx_limits(fixture *f)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&up, (const char *)f->enc.data,
                                         f->enc.len, &off),
                     MSGPACK_UNPACK_SUCCESS);
    uint32_t count = 0, depth = 0;
    msgpack_max_count(&up.data, &count, 0, &depth);
    msgpack_unpacked_destroy(&up);

    fmq_codec_limits lim = fmq_codec_limits_default();
    lim.max_msg = f->enc.len;
    expect_decode(f->type, f->enc.data, f->enc.len, &lim, FMQ_OK, f->name,
                  NULL);
    lim.max_msg = f->enc.len - 1;
    expect_decode(f->type, f->enc.data, f->enc.len, &lim, FMQ_ERR_TOO_LARGE,
                  f->name, NULL);
    lim = fmq_codec_limits_default();
    lim.max_count = count;
    expect_decode(f->type, f->enc.data, f->enc.len, &lim, FMQ_OK, f->name,
                  NULL);
    lim.max_count = count - 1;
    expect_decode(f->type, f->enc.data, f->enc.len, &lim, FMQ_ERR_TOO_LARGE,
                  f->name, NULL);
    lim = fmq_codec_limits_default();
    lim.max_depth = depth;
    expect_decode(f->type, f->enc.data, f->enc.len, &lim, FMQ_OK, f->name,
                  NULL);
    lim.max_depth = depth - 1;
    expect_decode(f->type, f->enc.data, f->enc.len, &lim, FMQ_ERR_TOO_DEEP,
                  f->name, NULL);

    lim = fmq_codec_limits_default();
    const fmq_qtensor *q = f->type == FMQ_MSG_GLOBAL   ? &f->m.g.weights
                           : f->type == FMQ_MSG_UPDATE ? &f->m.u.delta
                           : f->type == FMQ_MSG_DELTA  ? &f->m.dt.delta
                                                       : NULL;
    if (q) {
        lim.max_n = q->n;
        expect_decode(f->type, f->enc.data, f->enc.len, &lim, FMQ_OK,
                      f->name, NULL);
        lim.max_n = q->n - 1;
        expect_decode(f->type, f->enc.data, f->enc.len, &lim,
                      FMQ_ERR_TOO_LARGE, f->name, NULL);
    }
    const fmq_msg_global *g = f->type == FMQ_MSG_GLOBAL  ? &f->m.g
                              : f->type == FMQ_MSG_DELTA ? &f->m.dt.g
                                                         : NULL;
    if (g && g->cohort.nids) {
        lim = fmq_codec_limits_default();
        lim.max_ids = g->cohort.nids;
        expect_decode(f->type, f->enc.data, f->enc.len, &lim, FMQ_OK,
                      f->name, NULL);
        lim.max_ids--;
        expect_decode(f->type, f->enc.data, f->enc.len, &lim,
                      FMQ_ERR_TOO_LARGE, f->name, NULL);
    }
    if (g && g->nclasses) {
        lim = fmq_codec_limits_default();
        lim.max_classes = g->nclasses;
        expect_decode(f->type, f->enc.data, f->enc.len, &lim, FMQ_OK,
                      f->name, NULL);
        lim.max_classes--;
        expect_decode(f->type, f->enc.data, f->enc.len, &lim,
                      FMQ_ERR_TOO_LARGE, f->name, NULL);
    }
}
static void configured_limits_are_enforced_at_their_boundary(void **state)
{
    (void)state;
    fx_each(fx_limits);
}

static void the_default_list_limits_hold(void **state)
{
    (void)state;
    /* 17 classes and 10001 ids are over the defaults */
    anymsg m;
    global_make(&m.g, FMQ_Q_F32, FMQ_Q_Q8, CO_IDS, true);
    fixture f = {.name = "global", .type = FMQ_MSG_GLOBAL};
    fmq_buf_init(&f.enc);
    assert_int_equal(fmq_codec_encode_global(&m.g, &f.enc), FMQ_OK);
    f.m = m;

    msgpack_object_kv kv[17];
    char names[17][16];
    for (int i = 0; i < 17; i++) {
        snprintf(names[i], sizeof names[i], "c%d", i);
        kv[i].key = o_str(names[i]);
        kv[i].val = o_map0();
    }
    /* values are {} (missing "s"), so the count is what refuses them */
    msgpack_object uqc = o_map0();
    uqc.via.map.ptr = kv;
    uqc.via.map.size = 17;
    mut mu = {.op = M_REPLACE, .path = "uqc", .val = uqc};
    expect_mutated(&f, &mu, NULL, FMQ_ERR_TOO_LARGE, NULL);
    mu.val.via.map.size = 16;
    expect_mutated(&f, &mu, NULL, FMQ_ERR_MISSING_KEY, NULL); /* c0.s */

    msgpack_object *ids = malloc(10001 * sizeof *ids);
    for (int i = 0; i < 10001; i++)
        ids[i] = o_str("d");
    msgpack_object arr = o_arr0();
    arr.via.array.ptr = ids;
    arr.via.array.size = 10001;
    mut mi = {.op = M_REPLACE, .path = "co.ids", .val = arr};
    expect_mutated(&f, &mi, NULL, FMQ_ERR_TOO_LARGE, NULL);
    mi.val.via.array.size = 10000;
    expect_mutated(&f, &mi, NULL, FMQ_OK, NULL);
    free(ids);

    /* the encoder will not write what the default limits refuse */
    fmq_free(m.g.classes);
    m.g.nclasses = 17;
    m.g.classes = fmq_calloc(17, sizeof *m.g.classes);
    for (int i = 0; i < 17; i++) {
        snprintf(m.g.classes[i].cls, sizeof m.g.classes[i].cls, "c%d", i);
        m.g.classes[i].uq = uq_make(FMQ_Q_F16, 0, false, true);
    }
    fmq_buf b;
    fmq_buf_init(&b);
    assert_int_equal(fmq_codec_encode_global(&m.g, &b), FMQ_ERR_TOO_LARGE);
    assert_int_equal(b.len, 0);
    fmq_buf_fini(&b);
    fmq_msg_global_fini(&m.g);
    fmq_buf_fini(&f.enc);
}

/* ----------------------------------------------------------- tensors */

/* A tensor fixture's "c" and "sc" bytes, copied so they can be edited. */
static void tensor_bytes(const fmq_qtensor *q, uint8_t **c, uint8_t **sc)
{
    *c = malloc(q->codes_len + 8);
    memcpy(*c, q->codes, q->codes_len);
    *sc = malloc(q->scales_len + 8);
    if (q->scales_len)
        memcpy(*sc, q->scales, q->scales_len);
}

static void tensor_lengths_must_match_n_b_and_the_scheme(void **state)
{
    (void)state;
    for (int s = 0; s < FMQ_Q__COUNT; s++) {
        fixture f = {.name = "update", .type = FMQ_MSG_UPDATE};
        update_make(&f.m.u, (fmq_scheme)s, 64, 300, true);
        fmq_buf_init(&f.enc);
        assert_int_equal(fmq_codec_encode_update(&f.m.u, &f.enc), FMQ_OK);
        const fmq_qtensor *q = &f.m.u.delta;
        uint8_t *c, *sc;
        tensor_bytes(q, &c, &sc);
        mut m = {.op = M_REPLACE, .path = "d.c"};
        fmq_codec_detail d;
        m.val = o_bin(c, q->codes_len - 1);
        expect_mutated(&f, &m, NULL, FMQ_ERR_SHAPE, &d);
        assert_non_null(strstr(d.what, "d.c"));
        m.val = o_bin(c, q->codes_len + 1);
        expect_mutated(&f, &m, NULL, FMQ_ERR_SHAPE, NULL);
        m.val = o_bin(c, 0);
        expect_mutated(&f, &m, NULL, FMQ_ERR_SHAPE, NULL);
        /* n one more or one less (q1 and q4 pack several values a byte:
         * take n to the next byte boundary) */
        unsigned per = 8 / (fmq_scheme_bits((fmq_scheme)s) < 8
                                ? fmq_scheme_bits((fmq_scheme)s)
                                : 8);
        uint32_t nbig = (q->n / per + 1) * per + 1;
        m.path = "d.n";
        m.val = o_uint(nbig);
        expect_mutated(&f, &m, NULL, FMQ_ERR_SHAPE, NULL);
        m.val = o_uint(q->n - per);
        expect_mutated(&f, &m, NULL, FMQ_ERR_SHAPE, NULL);
        m.val = o_uint(0);
        expect_mutated(&f, &m, NULL, FMQ_ERR_BAD_VALUE, NULL);
        if (fmq_scheme_has_scales((fmq_scheme)s)) {
            m.path = "d.sc";
            m.val = o_bin(sc, q->scales_len - 4);
            expect_mutated(&f, &m, NULL, FMQ_ERR_SHAPE, &d);
            assert_non_null(strstr(d.what, "d.sc"));
            m.val = o_bin(sc, q->scales_len + 4);
            expect_mutated(&f, &m, NULL, FMQ_ERR_SHAPE, NULL);
            m.val = o_bin(sc, q->scales_len - 1);
            expect_mutated(&f, &m, NULL, FMQ_ERR_SHAPE, NULL);
            /* another block size means another number of scales */
            m.path = "d.b";
            m.val = o_uint(32);
            expect_mutated(&f, &m, NULL, FMQ_ERR_SHAPE, NULL);
            m.val = o_uint(0);
            expect_mutated(&f, &m, NULL, FMQ_ERR_BAD_VALUE, NULL);
            m.val = o_uint(FMQ_QUANT_BLOCK_MAX + 1);
            expect_mutated(&f, &m, NULL, FMQ_ERR_BAD_VALUE, NULL);
            m.val = o_uint(UINT64_MAX);
            expect_mutated(&f, &m, NULL, FMQ_ERR_BAD_VALUE, NULL);
        } else {
            /* f32/f16 ignore "b" and "sc" like unknown keys */
            mut a = {.op = M_ADD, .path = "d", .key = "b", .val = o_str("?")};
            expect_mutated(&f, &a, NULL, FMQ_OK, NULL);
            a.key = "sc";
            expect_mutated(&f, &a, NULL, FMQ_OK, NULL);
        }
        /* n over the tensor limit is TOO_LARGE, before the shape */
        m.path = "d.n";
        m.val = o_uint((uint64_t)FMQ_QUANT_N_MAX + 1);
        expect_mutated(&f, &m, NULL, FMQ_ERR_TOO_LARGE, NULL);
        m.val = o_uint(UINT64_MAX);
        expect_mutated(&f, &m, NULL, FMQ_ERR_TOO_LARGE, NULL);
        /* the scheme */
        m.path = "d.s";
        const char *bad[] = {"q2", "F32", "", "f32\x01", "q8 ", "float32"};
        for (size_t k = 0; k < 6; k++) {
            m.val = o_str(bad[k]);
            expect_mutated(&f, &m, NULL, FMQ_ERR_SCHEME, NULL);
        }
        msgpack_object withnul = o_bin("q8\0", 3);
        withnul.type = MSGPACK_OBJECT_STR;
        m.val = withnul;
        expect_mutated(&f, &m, NULL, FMQ_ERR_SCHEME, NULL);
        free(c);
        free(sc);
        fixture_fini(&f);
    }
}

static void global_weights_are_f32_or_f16_only(void **state)
{
    (void)state;
    for (int s = FMQ_Q_Q8; s < FMQ_Q__COUNT; s++) {
        anymsg m;
        global_make(&m.g, FMQ_Q_F32, FMQ_Q_Q8, CO_ALL, false);
        fmq_qtensor_fini(&m.g.weights);
        tensor_make(&m.g.weights, (fmq_scheme)s, 64, 1000, 3, false);
        fmq_buf b;
        fmq_buf_init(&b);
        assert_int_equal(fmq_codec_encode_global(&m.g, &b), FMQ_ERR_BAD_VALUE);
        assert_int_equal(b.len, 0);
        /* and on the wire: an update's q tensor spliced in as "w" */
        fixture u;
        fixture_make(&u, FX_UPDATE_Q8);
        fixture g;
        fixture_make(&g, FX_GLOBAL_MINIMAL);
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t off = 0;
        assert_int_equal(msgpack_unpack_next(&up, (const char *)u.enc.data,
                                             u.enc.len, &off),
                         MSGPACK_UNPACK_SUCCESS);
        const msgpack_object *d = NULL;
        for (uint32_t i = 0; i < up.data.via.map.size; i++)
            if (up.data.via.map.ptr[i].key.via.str.size == 1 &&
                up.data.via.map.ptr[i].key.via.str.ptr[0] == 'd')
                d = &up.data.via.map.ptr[i].val;
        assert_non_null(d);
        mut mu = {.op = M_REPLACE, .path = "w", .val = *d};
        fmq_codec_detail det;
        expect_mutated(&g, &mu, NULL, FMQ_ERR_BAD_VALUE, &det);
        assert_non_null(strstr(det.what, "w.s"));
        msgpack_unpacked_destroy(&up);
        fixture_fini(&u);
        fixture_fini(&g);
        fmq_buf_fini(&b);
        fmq_msg_global_fini(&m.g);
    }
}

static void nonfinite_tensor_values_and_scales_are_refused(void **state)
{
    (void)state;
    const float bad[] = {NAN, INFINITY, -INFINITY};
    /* f32 values */
    {
        fixture f;
        fixture_make(&f, FX_UPDATE_F32_MINIMAL);
        const fmq_qtensor *q = &f.m.u.delta;
        for (int k = 0; k < 3; k++)
            for (uint32_t i = 0; i < q->n; i += q->n - 1) {
                uint8_t *c, *sc;
                tensor_bytes(q, &c, &sc);
                fmq_store_f32le(c + 4 * i, bad[k]);
                mut m = {.op = M_REPLACE, .path = "d.c",
                         .val = o_bin(c, q->codes_len)};
                expect_mutated(&f, &m, NULL, FMQ_ERR_NONFINITE, NULL);
                free(c);
                free(sc);
            }
        fixture_fini(&f);
    }
    /* f16 values: exponent all ones (inf, NaN) */
    {
        fixture f;
        fixture_make(&f, FX_GLOBAL_F16_Q8_FRACTION);
        const fmq_qtensor *q = &f.m.g.weights;
        const uint16_t h[] = {0x7c00, 0xfc00, 0x7e00, 0x7c01};
        for (int k = 0; k < 4; k++) {
            uint8_t *c, *sc;
            tensor_bytes(q, &c, &sc);
            c[2 * (q->n - 1)] = (uint8_t)h[k];
            c[2 * (q->n - 1) + 1] = (uint8_t)(h[k] >> 8);
            mut m = {.op = M_REPLACE, .path = "w.c",
                     .val = o_bin(c, q->codes_len)};
            expect_mutated(&f, &m, NULL, FMQ_ERR_NONFINITE, NULL);
            /* the largest finite half is fine */
            c[2 * (q->n - 1)] = 0xff;
            c[2 * (q->n - 1) + 1] = 0x7b;
            expect_mutated(&f, &m, NULL, FMQ_OK, NULL);
            free(c);
            free(sc);
        }
        fixture_fini(&f);
    }
    /* scales of q8, q4, q1: non-finite, negative, -0 */
    const int fx[] = {FX_UPDATE_Q8, FX_UPDATE_Q4, FX_UPDATE_Q1};
    for (int j = 0; j < 3; j++) {
        fixture f;
        fixture_make(&f, fx[j]);
        const fmq_qtensor *q = &f.m.u.delta;
        size_t nb = q->scales_len / 4;
        for (int k = 0; k < 5; k++)
            for (size_t b = 0; b < nb; b += nb - 1) {
                uint8_t *c, *sc;
                tensor_bytes(q, &c, &sc);
                const float v[] = {NAN, INFINITY, -INFINITY, -1e-3f, -0.0f};
                fmq_store_f32le(sc + 4 * b, v[k]);
                mut m = {.op = M_REPLACE, .path = "d.sc",
                         .val = o_bin(sc, q->scales_len)};
                fmq_err want = k < 3   ? FMQ_ERR_NONFINITE
                               : k == 3 ? FMQ_ERR_BAD_VALUE
                                        : FMQ_OK;
                expect_mutated(&f, &m, NULL, want, NULL);
                free(c);
                free(sc);
            }
        fixture_fini(&f);
    }
}

/* ------------------------------------------------- values of each key */

typedef struct vcase {
    int fx;
    const char *path;
    msgpack_object val;
    fmq_err want;
} vcase;

static void values_outside_their_range_are_refused(void **state)
{
    (void)state;
    static const uint8_t b63[63], b64[64], b65[65], b11[11], b15[15], b16[16];
    static uint8_t epk3[65] = {0x03}, epk4[65] = {0x04};
    char id65[66];
    memset(id65, 'a', 65);
    id65[65] = '\0';
    char id64[65];
    memset(id64, 'z', 64);
    id64[64] = '\0';
    char name32[33];
    memset(name32, 'r', 32);
    name32[32] = '\0';
    const vcase cases[] = {
        /* ids */
        {FX_AGG, "fl", o_str(""), FMQ_ERR_BAD_VALUE},
        {FX_AGG, "fl", o_str(id65), FMQ_ERR_BAD_VALUE},
        {FX_AGG, "fl", o_str(id64), FMQ_OK},
        {FX_AGG, "fl", o_str("a/b"), FMQ_ERR_BAD_VALUE},
        {FX_AGG, "fl", o_str("a b"), FMQ_ERR_BAD_VALUE},
        {FX_AGG, "fl", o_str("a:b"), FMQ_ERR_BAD_VALUE},
        {FX_AGG, "fl", o_str("fl\xc3\xa9"), FMQ_ERR_BAD_VALUE},
        {FX_AGG, "fl", o_str("A-z_0.9"), FMQ_OK},
        {FX_UPDATE_Q8, "dev", o_str("+"), FMQ_ERR_BAD_VALUE},
        {FX_UPDATE_Q8, "dev", o_str("#"), FMQ_ERR_BAD_VALUE},
        {FX_UPDATE_Q8, "cls", o_str(""), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "m", o_str("cnn"), FMQ_OK},
        {FX_GLOBAL_F16_Q8_FRACTION, "m", o_str("mlp:256,128,100"), FMQ_OK},
        {FX_GLOBAL_F16_Q8_FRACTION, "m", o_str("mlp;1"), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "st", o_str("fed:avg"), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F32_Q1_IDS, "co.ids[1]", o_str("x/y"), FMQ_ERR_BAD_VALUE},
        {FX_METRICS, "fg[1].dev", o_str(""), FMQ_ERR_BAD_VALUE},
        {FX_METRICS, "fg[1].why", o_str(name32), FMQ_ERR_BAD_VALUE},
        {FX_METRICS, "fg[1].why", o_str(name32 + 1), FMQ_OK},
        {FX_SIGNED, "kid", o_str("k*"), FMQ_ERR_BAD_VALUE},
        /* integers */
        {FX_GLOBAL_F16_Q8_FRACTION, "r", o_uint(0), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "mv", o_uint(0), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "dl", o_uint(0), FMQ_OK},
        {FX_GLOBAL_F16_Q8_FRACTION, "ts", o_uint(UINT64_MAX), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.ep", o_uint(0), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.ep", o_uint(1000), FMQ_OK},
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.ep", o_uint(1001), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.bs", o_uint(65536), FMQ_OK},
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.bs", o_uint(65537), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.bs", o_uint(1ull << 32), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "ms", o_uint(1ull << 32), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "uq.b", o_uint(0), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "uq.b", o_uint(1048577), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "uq.s", o_str("q3"), FMQ_ERR_SCHEME},
        {FX_GLOBAL_F16_Q8_FRACTION, "uqc.mcu.s", o_str("x"), FMQ_ERR_SCHEME},
        {FX_GLOBAL_F16_Q8_FRACTION, "uqc.mcu.b", o_uint(0), FMQ_ERR_BAD_VALUE},
        {FX_UPDATE_Q8, "n", o_uint(0), FMQ_ERR_BAD_VALUE},
        {FX_UPDATE_Q8, "r", o_uint(0), FMQ_OK},
        {FX_STATUS, "rss", o_uint(UINT64_MAX), FMQ_ERR_BAD_VALUE},
        {FX_STATUS, "rss", o_uint(UINT64_MAX - 1), FMQ_OK},
        {FX_AGG, "mv", o_uint(UINT64_MAX), FMQ_ERR_BAD_VALUE},
        {FX_METRICS, "bo", o_uint(UINT64_MAX), FMQ_OK},
        {FX_METRICS, "rej.stale", o_uint(UINT64_MAX), FMQ_OK},
        /* floats */
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.lr", o_f32(0), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.lr", o_f32(-0.1f), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.lr", o_uint(1), FMQ_OK},
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.lr", o_f64(1e-40), FMQ_OK},
        /* a float64 that is > 0 but 0 as a float32 */
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.lr", o_f64(1e-50), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.mo", o_f32(1), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.mo", o_f32(0.999f), FMQ_OK},
        /* a float64 < 1 that is 1 as a float32 */
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.mo", o_f64(1 - 1e-12), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.mo", o_f32(-0.5f), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.wd", o_neg(-1), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.mu", o_f64(-1e-9), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "co.f", o_f64(0), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "co.f", o_f64(1), FMQ_OK},
        {FX_GLOBAL_F16_Q8_FRACTION, "co.f", o_uint(1), FMQ_OK},
        {FX_GLOBAL_F16_Q8_FRACTION, "co.f", o_f64(1.0000001), FMQ_ERR_BAD_VALUE},
        {FX_GLOBAL_F16_Q8_FRACTION, "co.s", o_neg(-5), FMQ_ERR_BAD_VALUE},
        {FX_STATUS, "bat", o_f32(100.5f), FMQ_ERR_BAD_VALUE},
        {FX_STATUS, "bat", o_f32(-1), FMQ_ERR_BAD_VALUE},
        {FX_STATUS, "bat", o_uint(100), FMQ_OK},
        {FX_STATUS, "tts", o_f32(-1), FMQ_ERR_BAD_VALUE},
        {FX_STATUS, "temp", o_neg(-40), FMQ_OK},
        {FX_STATUS, "temp", o_f64(1e39), FMQ_ERR_NONFINITE},
        {FX_METRICS, "acc", o_f64(1.5), FMQ_ERR_BAD_VALUE},
        {FX_METRICS, "acc", o_f64(-0.0), FMQ_OK},
        {FX_METRICS, "lsd", o_f64(-1), FMQ_ERR_BAD_VALUE},
        {FX_METRICS, "sec", o_f64(-0.5), FMQ_ERR_BAD_VALUE},
        {FX_METRICS, "ls", o_f64(1e300), FMQ_OK},
        {FX_METRICS, "tl", o_f32(-3.5f), FMQ_OK},
        {FX_UPDATE_Q8, "loss", o_f64(-2), FMQ_OK},
        {FX_UPDATE_Q8, "loss", o_f64(1e300), FMQ_ERR_NONFINITE},
        {FX_UPDATE_Q8, "loss", o_uint(UINT64_MAX), FMQ_OK},
        /* envelopes */
        {FX_SIGNED, "sig", o_bin(b63, 63), FMQ_ERR_BAD_VALUE},
        {FX_SIGNED, "sig", o_bin(b65, 65), FMQ_ERR_BAD_VALUE},
        {FX_SIGNED, "sig", o_bin(b64, 64), FMQ_OK},
        {FX_SIGNED, "body", o_bin(b64, 0), FMQ_ERR_BAD_VALUE},
        {FX_SIGNED, "body", o_bin(b64, 1), FMQ_OK},
        {FX_SEALED, "epk", o_bin(epk3, 65), FMQ_ERR_BAD_VALUE},
        {FX_SEALED, "epk", o_bin(epk4, 64), FMQ_ERR_BAD_VALUE},
        {FX_SEALED, "epk", o_bin(epk4, 65), FMQ_OK},
        {FX_SEALED, "iv", o_bin(b11, 11), FMQ_ERR_BAD_VALUE},
        {FX_SEALED, "iv", o_bin(b16, 13), FMQ_ERR_BAD_VALUE},
        {FX_SEALED, "ct", o_bin(b15, 15), FMQ_ERR_BAD_VALUE},
        {FX_SEALED, "ct", o_bin(b16, 16), FMQ_OK},
        /* strs are never bins and bins never strs */
        {FX_SEALED, "iv", o_str("abcdefghijkl"), FMQ_ERR_WRONG_TYPE},
        {FX_AGG, "fl", o_bin("abc", 3), FMQ_ERR_WRONG_TYPE},
        /* nil is the wrong type even for an optional key */
        {FX_STATUS, "mv", o_nil(), FMQ_ERR_WRONG_TYPE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fixture f;
        fixture_make(&f, cases[i].fx);
        mut m = {.op = M_REPLACE, .path = cases[i].path, .val = cases[i].val};
        fmq_codec_detail d;
        expect_mutated(&f, &m, NULL, cases[i].want, &d);
        if (cases[i].want != FMQ_OK &&
            strncmp(d.what, cases[i].path, strlen(cases[i].path)) != 0)
            fail_msg("%s: detail \"%s\"", cases[i].path, d.what);
        fixture_fini(&f);
    }
}

static void nonfinite_numbers_are_refused_where_finite_is_required(void **state)
{
    (void)state;
    const struct {
        int fx;
        const char *path;
    } keys[] = {
        {FX_UPDATE_Q8, "loss"}, {FX_UPDATE_Q8, "tts"},
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.lr"},
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.mo"},
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.wd"},
        {FX_GLOBAL_F16_Q8_FRACTION, "tc.mu"},
        {FX_GLOBAL_F16_Q8_FRACTION, "co.f"},
        {FX_STATUS, "tts"}, {FX_STATUS, "cpu"}, {FX_STATUS, "norm"},
        {FX_STATUS, "bat"}, {FX_STATUS, "temp"},
        {FX_METRICS, "ls"}, {FX_METRICS, "lsd"}, {FX_METRICS, "tl"},
        {FX_METRICS, "acc"}, {FX_METRICS, "sec"},
    };
    const msgpack_object bad[] = {o_f32(NAN), o_f32(INFINITY),
                                  o_f32(-INFINITY), o_f64(NAN),
                                  o_f64(-INFINITY), o_f64(INFINITY)};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        fixture f;
        fixture_make(&f, keys[i].fx);
        for (size_t k = 0; k < 6; k++) {
            mut m = {.op = M_REPLACE, .path = keys[i].path, .val = bad[k]};
            expect_mutated(&f, &m, NULL, FMQ_ERR_NONFINITE, NULL);
        }
        /* and both widths of a finite value are accepted */
        mut m = {.op = M_REPLACE, .path = keys[i].path, .val = o_f64(0.5)};
        expect_mutated(&f, &m, NULL, FMQ_OK, NULL);
        m.val = o_f32(0.25f);
        expect_mutated(&f, &m, NULL, FMQ_OK, NULL);
        fixture_fini(&f);
    }
}

static void floats_of_either_width_convert_to_the_field(void **state)
{
    (void)state;
    fixture f;
    fixture_make(&f, FX_METRICS);
    mut m = {.op = M_REPLACE, .path = "sec", .val = o_f32(2.5f)};
    msgpack_sbuffer sb = mutate(&f.enc, &m);
    anymsg out;
    assert_int_equal(fmq_codec_decode_metrics((const uint8_t *)sb.data,
                                              sb.size, NULL, &out.m, NULL),
                     FMQ_OK);
    assert_true(out.m.seconds == 2.5);
    fmq_msg_metrics_fini(&out.m);
    msgpack_sbuffer_destroy(&sb);
    m.val = o_uint(7);
    sb = mutate(&f.enc, &m);
    assert_int_equal(fmq_codec_decode_metrics((const uint8_t *)sb.data,
                                              sb.size, NULL, &out.m, NULL),
                     FMQ_OK);
    assert_true(out.m.seconds == 7.0);
    fmq_msg_metrics_fini(&out.m);
    msgpack_sbuffer_destroy(&sb);
    fixture_fini(&f);

    fixture_make(&f, FX_UPDATE_Q8);
    m.path = "loss";
    m.val = o_f64(0.1); /* float64 0.1 becomes the nearest float32 */
    sb = mutate(&f.enc, &m);
    assert_int_equal(fmq_codec_decode_update((const uint8_t *)sb.data,
                                             sb.size, NULL, &out.u, NULL),
                     FMQ_OK);
    assert_true(out.u.loss == 0.1f);
    msgpack_sbuffer_destroy(&sb);
    m.val = o_neg(-3);
    sb = mutate(&f.enc, &m);
    assert_int_equal(fmq_codec_decode_update((const uint8_t *)sb.data,
                                             sb.size, NULL, &out.u, NULL),
                     FMQ_OK);
    assert_true(out.u.loss == -3.0f);
    msgpack_sbuffer_destroy(&sb);
    fixture_fini(&f);
}

static void the_cohort_is_a_fraction_or_a_list_never_both(void **state)
{
    (void)state;
    fixture f;
    fixture_make(&f, FX_GLOBAL_F16_Q8_FRACTION);
    static const char *ids[] = {"a"};
    msgpack_object idv = o_str(ids[0]);
    msgpack_object arr = o_arr0();
    arr.via.array.ptr = &idv;
    arr.via.array.size = 1;
    mut m = {.op = M_ADD, .path = "co", .key = "ids", .val = arr};
    expect_mutated(&f, &m, NULL, FMQ_ERR_BAD_VALUE, NULL);
    m = (mut){.op = M_REPLACE, .path = "co", .val = o_map0()};
    expect_mutated(&f, &m, NULL, FMQ_ERR_BAD_VALUE, NULL);
    fixture_fini(&f);
    /* an empty list is an empty cohort */
    fixture_make(&f, FX_GLOBAL_F32_Q1_IDS);
    m = (mut){.op = M_REPLACE, .path = "co.ids", .val = o_arr0()};
    msgpack_sbuffer sb = mutate(&f.enc, &m);
    anymsg out;
    assert_int_equal(fmq_codec_decode_global((const uint8_t *)sb.data, sb.size,
                                             NULL, &out.g, NULL), FMQ_OK);
    assert_int_equal(out.g.cohort.kind, FMQ_COHORT_IDS);
    assert_int_equal(out.g.cohort.nids, 0);
    fmq_msg_global_fini(&out.g);
    msgpack_sbuffer_destroy(&sb);
    fixture_fini(&f);
}

/* ---------------------------------------------- decoder state, memory */

static void a_failed_decode_leaves_an_initialised_message(void **state)
{
    (void)state;
    /* uqc and co.ids are allocated before "st" is read and refused */
    fixture f;
    fixture_make(&f, FX_GLOBAL_F32_Q1_IDS);
    mut m = {.op = M_REPLACE, .path = "st", .val = o_str("")};
    msgpack_sbuffer sb = mutate(&f.enc, &m);
    anymsg out;
    memset(&out, 0xa5, sizeof out);
    size_t live = trk.fmq_live;
    assert_int_equal(fmq_codec_decode_global((const uint8_t *)sb.data, sb.size,
                                             NULL, &out.g, NULL),
                     FMQ_ERR_BAD_VALUE);
    assert_int_equal(trk.fmq_live, live);
    fmq_msg_global init;
    fmq_msg_global_init(&init);
    assert_null(out.g.classes);
    assert_null(out.g.cohort.ids);
    assert_int_equal(out.g.nclasses, 0);
    assert_int_equal(out.g.cohort.kind, FMQ_COHORT_ALL);
    assert_null(out.g.weights.codes);
    assert_int_equal(out.g.ts_ms, FMQ_ABSENT);
    assert_true(out.g.uq.error_feedback);
    fmq_msg_global_fini(&out.g); /* harmless */
    msgpack_sbuffer_destroy(&sb);
    fixture_fini(&f);

    /* the others too */
    fixture_make(&f, FX_STATUS);
    m = (mut){.op = M_REPLACE, .path = "ts", .val = o_str("x")};
    sb = mutate(&f.enc, &m);
    memset(&out, 0xa5, sizeof out);
    assert_int_equal(fmq_codec_decode_status((const uint8_t *)sb.data,
                                             sb.size, NULL, &out.s, NULL),
                     FMQ_ERR_WRONG_TYPE);
    assert_int_equal(out.s.version, FMQ_ABSENT);
    assert_true(isnan(out.s.temp_c));
    assert_string_equal(out.s.fleet, "");
    msgpack_sbuffer_destroy(&sb);
    fixture_fini(&f);

    fixture_make(&f, FX_METRICS);
    live = trk.fmq_live;
    m = (mut){.op = M_REPLACE, .path = "ts", .val = o_str("x")};
    sb = mutate(&f.enc, &m);
    memset(&out, 0xa5, sizeof out);
    assert_int_equal(fmq_codec_decode_metrics((const uint8_t *)sb.data,
                                              sb.size, NULL, &out.m, NULL),
                     FMQ_ERR_WRONG_TYPE);
    assert_int_equal(trk.fmq_live, live);
    assert_null(out.m.rejected);
    assert_null(out.m.flags);
    assert_true(isnan(out.m.loss_mean));
    msgpack_sbuffer_destroy(&sb);
    fixture_fini(&f);
}

static void decoding_survives_out_of_memory_at_every_allocation(void **state)
{
    (void)state;
    const int fx[] = {FX_GLOBAL_F16_Q8_FRACTION, FX_GLOBAL_F32_Q1_IDS,
                      FX_METRICS};
    for (int j = 0; j < 3; j++) {
        fixture f;
        fixture_make(&f, fx[j]);
        bool ok = false;
        for (long k = 0; k < 64 && !ok; k++) {
            anymsg out;
            size_t live = trk.fmq_live;
            trk.fmq_fail_after = k;
            fmq_err e = decode_any(f.type, f.enc.data, f.enc.len, NULL, &out,
                                   NULL);
            trk.fmq_fail_after = -1;
            assert_true(e == FMQ_OK || e == FMQ_ERR_NOMEM);
            if (e == FMQ_OK) {
                assert_any_equal(f.type, &f.m, &out);
                ok = true;
            }
            fini_any(f.type, &out);
            assert_int_equal(trk.fmq_live, live);
        }
        assert_true(ok);
        fixture_fini(&f);
    }
}

/* ------------------------------------------------------------- encoders */

static void encoders_refuse_what_decoders_refuse(void **state)
{
    (void)state;
    fmq_buf b;
    fmq_buf_init(&b);
    assert_int_equal(fmq_buf_append(&b, "keep", 4), FMQ_OK);
    anymsg m;
#define REFUSE(call, want)                                                    \
    do {                                                                      \
        assert_int_equal((call), (want));                                     \
        assert_int_equal(b.len, 4);                                           \
    } while (0)

    global_make(&m.g, FMQ_Q_F16, FMQ_Q_Q8, CO_FRACTION, true);
    m.g.train.lr = 0;
    REFUSE(fmq_codec_encode_global(&m.g, &b), FMQ_ERR_BAD_VALUE);
    m.g.train.lr = NAN;
    REFUSE(fmq_codec_encode_global(&m.g, &b), FMQ_ERR_NONFINITE);
    m.g.train.lr = 0.1f;
    m.g.train.momentum = 1;
    REFUSE(fmq_codec_encode_global(&m.g, &b), FMQ_ERR_BAD_VALUE);
    m.g.train.momentum = 0;
    m.g.train.epochs = 0;
    REFUSE(fmq_codec_encode_global(&m.g, &b), FMQ_ERR_BAD_VALUE);
    m.g.train.epochs = 1;
    m.g.cohort.fraction = 0;
    REFUSE(fmq_codec_encode_global(&m.g, &b), FMQ_ERR_BAD_VALUE);
    m.g.cohort.fraction = 0.5;
    m.g.uq.block = 0;
    REFUSE(fmq_codec_encode_global(&m.g, &b), FMQ_ERR_BAD_VALUE);
    m.g.uq.block = 64;
    m.g.uq.scheme = (fmq_scheme)9;
    REFUSE(fmq_codec_encode_global(&m.g, &b), FMQ_ERR_SCHEME);
    m.g.uq.scheme = FMQ_Q_Q8;
    strcpy(m.g.fleet, "no/slash");
    REFUSE(fmq_codec_encode_global(&m.g, &b), FMQ_ERR_BAD_VALUE);
    strcpy(m.g.fleet, "f");
    strcpy(m.g.classes[1].cls, m.g.classes[0].cls);
    REFUSE(fmq_codec_encode_global(&m.g, &b), FMQ_ERR_DUP_KEY);
    strcpy(m.g.classes[1].cls, "mcu");
    m.g.round = 0;
    REFUSE(fmq_codec_encode_global(&m.g, &b), FMQ_ERR_BAD_VALUE);
    m.g.round = 1;
    m.g.weights.codes_len--;
    REFUSE(fmq_codec_encode_global(&m.g, &b), FMQ_ERR_SHAPE);
    m.g.weights.codes_len++;
    m.g.weights.owned[0] = 0x00;
    m.g.weights.owned[1] = 0x7c; /* f16 infinity */
    REFUSE(fmq_codec_encode_global(&m.g, &b), FMQ_ERR_NONFINITE);
    m.g.weights.owned[1] = 0x00;
    assert_int_equal(fmq_codec_encode_global(&m.g, &b), FMQ_OK);
    assert_true(b.len > 4);
    assert_memory_equal(b.data, "keep", 4); /* appends */
    b.len = 4;
    fmq_msg_global_fini(&m.g);

    update_make(&m.u, FMQ_Q_Q4, 32, 100, true);
    m.u.loss = INFINITY;
    REFUSE(fmq_codec_encode_update(&m.u, &b), FMQ_ERR_NONFINITE);
    m.u.loss = 1;
    m.u.samples = 0;
    REFUSE(fmq_codec_encode_update(&m.u, &b), FMQ_ERR_BAD_VALUE);
    m.u.samples = 1;
    m.u.delta.scales_len -= 4;
    REFUSE(fmq_codec_encode_update(&m.u, &b), FMQ_ERR_SHAPE);
    m.u.delta.scales_len += 4;
    fmq_store_f32le(m.u.delta.owned + m.u.delta.codes_len, -1.0f);
    REFUSE(fmq_codec_encode_update(&m.u, &b), FMQ_ERR_BAD_VALUE);
    fmq_store_f32le(m.u.delta.owned + m.u.delta.codes_len, NAN);
    REFUSE(fmq_codec_encode_update(&m.u, &b), FMQ_ERR_NONFINITE);
    fmq_store_f32le(m.u.delta.owned + m.u.delta.codes_len, 0.0f);
    m.u.train_s = -1;
    REFUSE(fmq_codec_encode_update(&m.u, &b), FMQ_ERR_BAD_VALUE);
    m.u.train_s = 1;
    strcpy(m.u.cls, "a,b");
    REFUSE(fmq_codec_encode_update(&m.u, &b), FMQ_ERR_BAD_VALUE);
    strcpy(m.u.cls, "");
    assert_int_equal(fmq_codec_encode_update(&m.u, &b), FMQ_OK);
    b.len = 4;
    fmq_qtensor_fini(&m.u.delta);

    status_make(&m.s, true);
    m.s.battery_pct = 101;
    REFUSE(fmq_codec_encode_status(&m.s, &b), FMQ_ERR_BAD_VALUE);
    m.s.battery_pct = INFINITY;
    REFUSE(fmq_codec_encode_status(&m.s, &b), FMQ_ERR_NONFINITE);

    metrics_make(&m.m, true);
    strcpy(m.m.rejected[1].reason, "stale");
    REFUSE(fmq_codec_encode_metrics(&m.m, &b), FMQ_ERR_DUP_KEY);
    strcpy(m.m.rejected[1].reason, "late");
    m.m.seconds = NAN; /* required: NaN is not "absent" here */
    REFUSE(fmq_codec_encode_metrics(&m.m, &b), FMQ_ERR_NONFINITE);
    fmq_msg_metrics_fini(&m.m);

    sealed_make(&m.se);
    m.se.epk[0] = 0x02;
    REFUSE(fmq_codec_encode_sealed(&m.se, &b), FMQ_ERR_BAD_VALUE);
    m.se.epk[0] = 0x04;
    m.se.ct_len = 15;
    REFUSE(fmq_codec_encode_sealed(&m.se, &b), FMQ_ERR_BAD_VALUE);
    signed_make(&m.sg);
    m.sg.body_len = 0;
    REFUSE(fmq_codec_encode_signed(&m.sg, &b), FMQ_ERR_BAD_VALUE);
    m.sg.body_len = 3;
    m.sg.body = NULL;
    REFUSE(fmq_codec_encode_signed(&m.sg, &b), FMQ_ERR_BAD_VALUE);
    memset(m.sg.kid, 'k', sizeof m.sg.kid); /* not even NUL-terminated */
    REFUSE(fmq_codec_encode_signed(&m.sg, &b), FMQ_ERR_BAD_VALUE);
    REFUSE(fmq_codec_encode_agg(NULL, &b), FMQ_ERR_INVAL);
#undef REFUSE
    fmq_buf_fini(&b);
}

static void encoders_leave_the_buffer_alone_when_out_of_memory(void **state)
{
    (void)state;
    fixture f;
    fixture_make(&f, FX_GLOBAL_F16_Q8_FRACTION);
    bool ok = false;
    for (long k = 0; k < 64 && !ok; k++) {
        fmq_buf b;
        fmq_buf_init(&b);
        assert_int_equal(fmq_buf_append(&b, "ab", 2), FMQ_OK);
        trk.fmq_fail_after = k;
        fmq_err e = fmq_codec_encode_global(&f.m.g, &b);
        trk.fmq_fail_after = -1;
        if (e == FMQ_OK) {
            ok = true;
            assert_int_equal(b.len, 2 + f.enc.len);
            assert_memory_equal(b.data + 2, f.enc.data, f.enc.len);
        } else {
            assert_int_equal(e, FMQ_ERR_NOMEM);
            assert_int_equal(b.len, 2);
            assert_memory_equal(b.data, "ab", 2);
        }
        fmq_buf_fini(&b);
    }
    assert_true(ok);
    fixture_fini(&f);
}

static void id_validation_matches_the_spec(void **state)
{
    (void)state;
    assert_true(fmq_id_valid("dev-001"));
    assert_true(fmq_id_valid("A.b_c-9"));
    assert_false(fmq_id_valid(""));
    assert_false(fmq_id_valid(NULL));
    assert_false(fmq_id_valid("a:b"));
    assert_false(fmq_id_valid("a+b"));
    assert_false(fmq_id_valid("a/b"));
    char s[80];
    memset(s, 'x', sizeof s);
    s[64] = '\0';
    assert_true(fmq_id_valid(s));
    s[64] = 'x';
    s[65] = '\0';
    assert_false(fmq_id_valid(s));
}

int main(void)
{
    libc_tracking_install();
    static const fmq_allocator fa = {fa_malloc, fa_realloc, fa_free, NULL};
    fmq_set_allocator(&fa);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_allocation_tracker_sees_libc_and_fmq_allocations),
        cmocka_unit_test(limits_default_to_the_spec_values),
        cmocka_unit_test(global_round_trips_with_every_scheme),
        cmocka_unit_test(update_round_trips_with_every_scheme_and_shape),
        cmocka_unit_test(delta_round_trips_with_every_scheme_and_bv_is_below_mv),
        cmocka_unit_test(status_metrics_agg_and_envelopes_round_trip),
        cmocka_unit_test(the_inner_message_of_an_envelope_decodes),
        cmocka_unit_test(every_truncation_of_every_message_is_truncated),
        cmocka_unit_test(bytes_after_the_map_are_trailing),
        cmocka_unit_test(the_top_level_must_be_a_map_of_string_keys),
        cmocka_unit_test(structural_errors_come_in_the_spec_order),
        cmocka_unit_test(a_message_of_another_type_is_wrong_msg),
        cmocka_unit_test(peek_names_every_type_and_only_needs_v_and_t),
        cmocka_unit_test(an_unknown_major_version_is_refused),
        cmocka_unit_test(missing_each_required_key_is_missing_key),
        cmocka_unit_test(each_key_of_the_wrong_type_is_wrong_type),
        cmocka_unit_test(each_key_twice_is_dup_key),
        cmocka_unit_test(a_duplicate_in_a_large_map_is_found),
        cmocka_unit_test(unknown_keys_are_ignored_everywhere),
        cmocka_unit_test(keys_may_come_in_any_order),
        cmocka_unit_test(oversized_counts_and_lengths_allocate_nothing),
        cmocka_unit_test(counts_over_the_limit_within_the_bytes_are_too_large),
        cmocka_unit_test(nesting_beyond_the_limit_is_too_deep),
        cmocka_unit_test(configured_limits_are_enforced_at_their_boundary),
        cmocka_unit_test(the_default_list_limits_hold),
        cmocka_unit_test(tensor_lengths_must_match_n_b_and_the_scheme),
        cmocka_unit_test(global_weights_are_f32_or_f16_only),
        cmocka_unit_test(nonfinite_tensor_values_and_scales_are_refused),
        cmocka_unit_test(values_outside_their_range_are_refused),
        cmocka_unit_test(nonfinite_numbers_are_refused_where_finite_is_required),
        cmocka_unit_test(floats_of_either_width_convert_to_the_field),
        cmocka_unit_test(the_cohort_is_a_fraction_or_a_list_never_both),
        cmocka_unit_test(a_failed_decode_leaves_an_initialised_message),
        cmocka_unit_test(decoding_survives_out_of_memory_at_every_allocation),
        cmocka_unit_test(encoders_refuse_what_decoders_refuse),
        cmocka_unit_test(encoders_leave_the_buffer_alone_when_out_of_memory),
        cmocka_unit_test(id_validation_matches_the_spec),
    };
    return cmocka_run_group_tests_name("codec", tests, NULL, NULL);
}
