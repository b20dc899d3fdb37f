/*
 * gen_vectors.c — writes the golden vectors of proto/SPEC.md §11.
 *
 *   gen_vectors DIR          (`make vectors` passes proto/vectors)
 *
 * Good vectors, DIR/<name>.msgpack, are made by fedmq's own encoders
 * (common/codec.c, common/quant.c) from fixed inputs, except the few named
 * *_foreign, which are packed by hand the way another implementation might
 * write them (other key order, float64 for float32 fields, wider integer
 * encodings, unknown keys, keys that only some schemes use). Each gets
 * DIR/<name>.json: the map as msgpack-c reads it (bins as {"hex": ...},
 * floats printed so that they parse back to the identical double), the
 * dequantized tensors (fmq_quant_decode, as float32) and, where fedmq
 * quantized them, the float32 inputs.
 *
 * Bad vectors, DIR/bad/<name>.msgpack, are packed by hand from a valid base
 * message with one thing wrong (two where the point is SPEC §10's
 * precedence), each with {"description", "error": <reason>}.
 *
 * test/check_vectors.py checks every vector with an independent decoder.
 * Nothing here reads the clock or an unseeded generator, so running this
 * twice writes identical bytes. Old *.msgpack and *.json files in DIR and
 * DIR/bad are removed first, so the directory holds exactly this set.
 */
#include "codec.h"
#include "quant.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <msgpack.h>

static const char *g_dir;
static unsigned g_good, g_bad;

static void die(const char *fmt, ...) FMQ_PRINTF(1, 2);
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("gen_vectors: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void check(fmq_err e, const char *what)
{
    if (e != FMQ_OK)
        die("%s: %s (%s)", what, fmq_errname(e), fmq_strerror(e));
}

/* ------------------------------------------------------------ byte output */

static void bput(fmq_buf *b, const void *p, size_t n)
{
    if (fmq_buf_append(b, p, n) != FMQ_OK)
        die("out of memory");
}

static void bprintf(fmq_buf *b, const char *fmt, ...) FMQ_PRINTF(2, 3);
static void bprintf(fmq_buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp)
        die("bprintf: text too long");
    bput(b, tmp, (size_t)n);
}

static void write_file(const char *sub, const char *name, const char *ext,
                       const void *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s%s%s/%s.%s", g_dir, *sub ? "/" : "", sub,
             name, ext);
    FILE *f = fopen(path, "wb");
    if (!f)
        die("%s: %s", path, strerror(errno));
    if ((n && fwrite(p, 1, n, f) != n) || fclose(f) != 0)
        die("%s: write failed", path);
}

/* Remove the *.msgpack and *.json files of one directory (only those). */
static void clean_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        die("%s: %s", path, strerror(errno));
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        bool ours = (n > 8 && strcmp(de->d_name + n - 8, ".msgpack") == 0) ||
                    (n > 5 && strcmp(de->d_name + n - 5, ".json") == 0);
        if (!ours)
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", path, de->d_name);
        if (unlink(p) != 0)
            die("%s: %s", p, strerror(errno));
    }
    closedir(d);
}

/* ------------------------------------------------------------------ JSON */

/* Shortest text that parses back (strtod) to exactly d; always has a '.'
 * or an exponent so that JSON readers see a float. */
static void json_f64(fmq_buf *b, double d)
{
    char s[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, d);
        if (strtod(s, NULL) == d)
            break;
    }
    if (!strpbrk(s, ".en"))
        strcat(s, ".0");
    bput(b, s, strlen(s));
}

/* Shortest text that parses back (strtof) to exactly f. */
static void json_f32(fmq_buf *b, float f)
{
    char s[40];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, (double)f);
        if (strtof(s, NULL) == f)
            break;
    }
    if (!strpbrk(s, ".en"))
        strcat(s, ".0");
    bput(b, s, strlen(s));
}

static void json_str(fmq_buf *b, const char *s, size_t n)
{
    bput(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            bprintf(b, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            bprintf(b, "\\u%04x", c);
        else
            bput(b, &s[i], 1);
    }
    bput(b, "\"", 1);
}

static void json_cstr(fmq_buf *b, const char *s)
{
    json_str(b, s, strlen(s));
}

static void json_hex(fmq_buf *b, const uint8_t *p, size_t n)
{
    bput(b, "{\"hex\": \"", 9);
    for (size_t i = 0; i < n; i++)
        bprintf(b, "%02x", p[i]);
    bput(b, "\"}", 2);
}

/* A msgpack-c object as JSON. The top-level map (depth 0) gets one key per
 * line; everything inside is written on one line. */
static void json_obj(fmq_buf *b, const msgpack_object *o, int depth)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: bprintf(b, "null"); break;
    case MSGPACK_OBJECT_BOOLEAN:
        bprintf(b, "%s", o->via.boolean ? "true" : "false");
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        bprintf(b, "%llu", (unsigned long long)o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        bprintf(b, "%lld", (long long)o->via.i64);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: json_f64(b, o->via.f64); break;
    case MSGPACK_OBJECT_STR: json_str(b, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN:
        json_hex(b, (const uint8_t *)o->via.bin.ptr, o->via.bin.size);
        break;
    case MSGPACK_OBJECT_ARRAY:
        bprintf(b, "[");
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i)
                bprintf(b, ", ");
            json_obj(b, &o->via.array.ptr[i], depth + 1);
        }
        bprintf(b, "]");
        break;
    case MSGPACK_OBJECT_MAP:
        bprintf(b, "{");
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR)
                die("json_obj: a good vector has a non-string key");
            bprintf(b, "%s", i ? "," : "");
            bprintf(b, "%s", depth == 0 ? "\n    " : i ? " " : "");
            json_str(b, kv->key.via.str.ptr, kv->key.via.str.size);
            bprintf(b, ": ");
            json_obj(b, &kv->val, depth + 1);
        }
        bprintf(b, "%s}", depth == 0 ? "\n  " : "");
        break;
    case MSGPACK_OBJECT_EXT: die("json_obj: ext in a good vector");
    }
}

static void json_floats(fmq_buf *b, const float *x, uint32_t n)
{
    bprintf(b, "[");
    for (uint32_t i = 0; i < n; i++) {
        if (i)
            bprintf(b, ", ");
        json_f32(b, x[i]);
    }
    bprintf(b, "]");
}

/* ------------------------------------------------------- writing vectors */

/* A tensor of a good vector: its key in the message, the tensor, when
 * fedmq quantized it the float32 input (else NULL), and whether it was
 * quantized with stochastic rounding. */
typedef struct tens {
    const char *key;
    const fmq_qtensor *q;
    const float *in;
    bool sr;
} tens;

static void emit_good(const char *name, const char *desc, const fmq_buf *msg,
                      const tens *t, size_t nt, bool canonical)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    if (msgpack_unpack_next(&up, (const char *)msg->data, msg->len, &off) !=
            MSGPACK_UNPACK_SUCCESS ||
        off != msg->len || up.data.type != MSGPACK_OBJECT_MAP)
        die("%s: the encoded message does not unpack", name);
    const char *type = NULL;
    int type_len = 0;
    for (uint32_t i = 0; i < up.data.via.map.size; i++) {
        const msgpack_object_kv *kv = &up.data.via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 1 &&
            kv->key.via.str.ptr[0] == 't' && kv->val.type == MSGPACK_OBJECT_STR) {
            type = kv->val.via.str.ptr;
            type_len = (int)kv->val.via.str.size;
        }
    }
    if (!type)
        die("%s: no \"t\"", name);

    fmq_buf j;
    fmq_buf_init(&j);
    bprintf(&j, "{\n  \"description\": ");
    json_cstr(&j, desc);
    bprintf(&j, ",\n  \"type\": ");
    json_str(&j, type, (size_t)type_len);
    if (!canonical)
        bprintf(&j, ",\n  \"canonical\": false");
    bool sr = false;
    for (size_t i = 0; i < nt; i++)
        sr |= t[i].sr;
    if (sr)
        bprintf(&j, ",\n  \"stochastic\": true");
    bprintf(&j, ",\n  \"message\": ");
    json_obj(&j, &up.data, 0);
    bprintf(&j, ",\n  \"tensors\": {");
    for (size_t i = 0; i < nt; i++) {
        float *x = calloc(t[i].q->n, sizeof *x);
        if (!x)
            die("out of memory");
        check(fmq_quant_decode(t[i].q, x), "fmq_quant_decode");
        bprintf(&j, "%s\n    ", i ? "," : "");
        json_cstr(&j, t[i].key);
        bprintf(&j, ": ");
        json_floats(&j, x, t[i].q->n);
        free(x);
    }
    bprintf(&j, "%s}", nt ? "\n  " : "");
    bool any_in = false;
    for (size_t i = 0; i < nt; i++)
        any_in |= t[i].in != NULL;
    if (any_in) {
        bprintf(&j, ",\n  \"input\": {");
        bool first = true;
        for (size_t i = 0; i < nt; i++) {
            if (!t[i].in)
                continue;
            bprintf(&j, "%s\n    ", first ? "" : ",");
            first = false;
            json_cstr(&j, t[i].key);
            bprintf(&j, ": ");
            json_floats(&j, t[i].in, t[i].q->n);
        }
        bprintf(&j, "\n  }");
    }
    bprintf(&j, "\n}\n");
    write_file("", name, "msgpack", msg->data, msg->len);
    write_file("", name, "json", j.data, j.len);
    fmq_buf_fini(&j);
    msgpack_unpacked_destroy(&up);
    g_good++;
}

static void emit_bad(const char *name, fmq_err error, const char *desc,
                     const void *p, size_t n)
{
    fmq_buf j;
    fmq_buf_init(&j);
    bprintf(&j, "{\n  \"description\": ");
    json_cstr(&j, desc);
    bprintf(&j, ",\n  \"error\": ");
    json_cstr(&j, fmq_errname(error));
    bprintf(&j, "\n}\n");
    write_file("bad", name, "msgpack", p, n);
    write_file("bad", name, "json", j.data, j.len);
    fmq_buf_fini(&j);
    g_bad++;
}

/* ---------------------------------------------------------------- inputs */

/* n values k / div with k uniform in [-1000, 1000]: one correctly rounded
 * division and no libm, so every platform makes the same inputs, and each
 * prints as a short decimal. */
static void gen_values(uint64_t seed, float div, float *x, uint32_t n)
{
    fmq_rng r;
    fmq_rng_seed(&r, seed);
    for (uint32_t i = 0; i < n; i++) {
        int k = (int)fmq_rng_below(&r, 2001) - 1000;
        x[i] = (float)k / div;
    }
}

static void quantize(fmq_qtensor *q, fmq_scheme s, uint32_t block, bool sr,
                     uint64_t seed, const float *x, uint32_t n)
{
    fmq_quant_cfg cfg = {.scheme = s, .block = block, .stochastic = sr};
    fmq_rng r;
    fmq_rng_seed(&r, seed);
    check(fmq_quant_encode(&cfg, x, n, sr ? &r : NULL, q), "fmq_quant_encode");
}

#define FLEET "fleet-a"
#define DEVICE "dev-007"
#define TS 1700000000000ull

/* ------------------------------------------------------ good: global */

static void global_base(fmq_msg_global *m)
{
    fmq_msg_global_init(m);
    strcpy(m->fleet, FLEET);
    m->round = 4;
    m->version = 4;
    m->deadline_ms = 0;
    strcpy(m->model, "mlp:16,8");
    m->train.epochs = 1;
    m->train.batch = 32;
    m->train.lr = 0.05f;
    m->uq.scheme = FMQ_Q_Q8;
    m->uq.block = 256;
}

static void good_global(void)
{
    fmq_buf out;
    fmq_buf_init(&out);

    /* Every optional key. */
    {
        float x[12];
        gen_values(101, 10000.0f, x, 12);
        fmq_msg_global m;
        global_base(&m);
        m.deadline_ms = TS + 60000;
        m.ts_ms = TS;
        strcpy(m.model, "mlp:128,64");
        quantize(&m.weights, FMQ_Q_F32, 0, false, 0, x, 12);
        m.train.epochs = 2;
        m.train.batch = 64;
        m.train.lr = 0.05f;
        m.train.momentum = 0.875f;
        m.train.weight_decay = 0.0001f;
        m.train.mu = 0.01f;
        m.cohort.kind = FMQ_COHORT_FRACTION;
        m.cohort.fraction = 0.25;
        m.cohort.seed = 42;
        m.uq = (fmq_uq){FMQ_Q_Q8, 256, false, true};
        fmq_uq_class cls[2] = {
            {"battery", {FMQ_Q_Q1, 128, true, false}},
            {"wired", {FMQ_Q_F16, 0, false, true}},
        };
        m.classes = cls;
        m.nclasses = 2;
        strcpy(m.strategy, "fedavg");
        m.async = true;
        m.max_staleness = 2;
        m.deltas = true;
        check(fmq_codec_encode_global(&m, &out), "encode global_f32_full");
        tens t = {"w", &m.weights, x, false};
        emit_good("global_f32_full",
                  "global with every optional key: f32 weights (n=12), "
                  "fractional cohort, per-class schemes, asynchronous, "
                  "deltas published on model/delta (gd)",
                  &out, &t, 1, true);
        m.classes = NULL;
        m.nclasses = 0;
        fmq_qtensor_fini(&m.weights);
        fmq_buf_reset(&out);
    }

    /* Required keys only; f16 weights with values that test rounding. */
    {
        float x[14] = {
            0.1f, -1.0f / 3.0f, 65504.0f, -65504.0f,
            6.1035156e-05f,            /* smallest normal binary16 */
            5.9604645e-08f,            /* smallest subnormal */
            1.0e-8f,                   /* rounds to zero */
            1.00048828125f,            /* 1 + 2^-11: tie, rounds to 1 */
            1.00146484375f,            /* 1 + 3*2^-11: tie, rounds up */
            -2.5f, 0.0f, 1000.1f, 3.0e-5f, -7.25e-06f,
        };
        fmq_msg_global m;
        global_base(&m);
        quantize(&m.weights, FMQ_Q_F16, 0, false, 0, x, 14);
        m.uq = (fmq_uq){FMQ_Q_Q4, 32, true, false};
        check(fmq_codec_encode_global(&m, &out), "encode global_f16");
        tens t = {"w", &m.weights, x, false};
        emit_good("global_f16",
                  "global with required keys only; f16 weights (n=14) with "
                  "round-to-nearest-even ties, subnormals and the largest "
                  "finite binary16; update scheme q4 with stochastic "
                  "rounding and no error feedback",
                  &out, &t, 1, true);
        fmq_qtensor_fini(&m.weights);
        fmq_buf_reset(&out);
    }

    /* Cohort by list; unscaled update scheme (no "b"). */
    {
        float x[3] = {0.5f, -0.25f, 0.125f};
        fmq_msg_global m;
        global_base(&m);
        m.round = 1;
        m.version = 1;
        m.deadline_ms = TS + 30000;
        strcpy(m.model, "logreg");
        quantize(&m.weights, FMQ_Q_F32, 0, false, 0, x, 3);
        char ids[3][FMQ_ID_MAX + 1] = {"dev-001", "dev-007", "sensor.12_b"};
        m.cohort.kind = FMQ_COHORT_IDS;
        m.cohort.ids = ids;
        m.cohort.nids = 3;
        m.uq = (fmq_uq){FMQ_Q_F32, 0, false, true};
        check(fmq_codec_encode_global(&m, &out), "encode global_cohort_ids");
        tens t = {"w", &m.weights, x, false};
        emit_good("global_cohort_ids",
                  "global with a cohort given as a list of three device ids; "
                  "update scheme f32 (no block size)",
                  &out, &t, 1, true);
        m.cohort.ids = NULL;
        m.cohort.nids = 0;
        fmq_qtensor_fini(&m.weights);
        fmq_buf_reset(&out);
    }
    fmq_buf_fini(&out);
}

/* ------------------------------------------------------- good: delta */

static void good_delta(void)
{
    fmq_buf out;
    fmq_buf_init(&out);

    /* Every optional key; q8 delta with a partial last block. */
    {
        float x[21];
        gen_values(501, 100000.0f, x, 21);
        fmq_msg_delta m;
        fmq_msg_delta_init(&m);
        global_base(&m.g);
        m.g.round = 5;
        m.g.version = 5;
        m.base = 4;
        m.g.deadline_ms = TS + 60000;
        m.g.ts_ms = TS;
        m.g.train.momentum = 0.875f;
        m.g.cohort.kind = FMQ_COHORT_FRACTION;
        m.g.cohort.fraction = 0.5;
        m.g.cohort.seed = 7;
        fmq_uq_class cls[2] = {
            {"cell", {FMQ_Q_Q4, 256, false, true}},
            {"hub", {FMQ_Q_Q8, 256, false, true}},
        };
        m.g.classes = cls;
        m.g.nclasses = 2;
        strcpy(m.g.strategy, "fedavg");
        m.g.deltas = true;
        quantize(&m.delta, FMQ_Q_Q8, 8, false, 0, x, 21);
        check(fmq_codec_encode_delta(&m, &out), "encode delta_q8_full");
        tens t = {"d", &m.delta, x, false};
        emit_good("delta_q8_full",
                  "delta from version 4 to 5 with every optional key: q8 "
                  "delta (n=21, blocks of 8, the last one partial), "
                  "fractional cohort, per-class schemes cell:q4 and hub:q8, "
                  "gd; a device holding version 4 adds the tensor to its "
                  "weights (float32)",
                  &out, &t, 1, true);
        m.g.classes = NULL;
        m.g.nclasses = 0;
        fmq_msg_delta_fini(&m);
        fmq_buf_reset(&out);
    }

    /* Required keys only; q4 delta. */
    {
        float x[9];
        gen_values(502, 20000.0f, x, 9);
        fmq_msg_delta m;
        fmq_msg_delta_init(&m);
        global_base(&m.g);
        m.g.round = 2;
        m.g.version = 9;
        m.base = 8;
        quantize(&m.delta, FMQ_Q_Q4, 4, false, 0, x, 9);
        check(fmq_codec_encode_delta(&m, &out), "encode delta_q4");
        tens t = {"d", &m.delta, x, false};
        emit_good("delta_q4",
                  "delta from version 8 to 9 with required keys only: q4 "
                  "delta (n=9, blocks of 4)",
                  &out, &t, 1, true);
        fmq_msg_delta_fini(&m);
        fmq_buf_reset(&out);
    }

    /* f16 delta, the scheme that needs no block. */
    {
        float x[5] = {0.001f, -0.0005f, 0.25f, 0.0f, -1.0e-6f};
        fmq_msg_delta m;
        fmq_msg_delta_init(&m);
        global_base(&m.g);
        m.base = 3;
        quantize(&m.delta, FMQ_Q_F16, 0, false, 0, x, 5);
        check(fmq_codec_encode_delta(&m, &out), "encode delta_f16");
        tens t = {"d", &m.delta, x, false};
        emit_good("delta_f16", "delta from version 3 to 4 as f16 (n=5)",
                  &out, &t, 1, true);
        fmq_msg_delta_fini(&m);
        fmq_buf_reset(&out);
    }
    fmq_buf_fini(&out);
}

/* ------------------------------------------------------ good: update */

static void update_base(fmq_msg_update *m)
{
    fmq_msg_update_init(m);
    strcpy(m->fleet, FLEET);
    strcpy(m->device, DEVICE);
    m->round = 4;
    m->version = 4;
    m->samples = 600;
    m->loss = 0.6875f;
}

typedef struct upd_case {
    const char *name;
    const char *desc;
    fmq_scheme scheme;
    uint32_t block;
    bool sr;
    uint32_t n;
    uint64_t seed;
    int zero_block; /* index of a block set to zeros, or -1 */
} upd_case;

static const upd_case upd_cases[] = {
    {"update_f16", "update, f16 delta (n=9)", FMQ_Q_F16, 0, false, 9, 202, -1},
    {"update_q8", "update, q8 delta, n=40 in blocks of 16: the last block "
     "holds 8", FMQ_Q_Q8, 16, false, 40, 203, -1},
    {"update_q8_sr", "update, q8 delta with stochastic rounding (seed 7), "
     "n=40, blocks of 16", FMQ_Q_Q8, 16, true, 40, 204, -1},
    {"update_q8_zero_block", "update, q8 delta, n=24 in blocks of 8, the "
     "middle block all zeros (scale 0)", FMQ_Q_Q8, 8, false, 24, 205, 1},
    {"update_q8_block1", "update, q8 delta with block size 1 (one scale per "
     "value), n=5", FMQ_Q_Q8, 1, false, 5, 206, -1},
    {"update_q8_single", "update, q8 delta with one value (n=1, block 256: "
     "a single short block)", FMQ_Q_Q8, 256, false, 1, 207, -1},
    {"update_q4", "update, q4 delta, n=37 in blocks of 8: the last block "
     "holds 5 and the last byte's high nibble is unused", FMQ_Q_Q4, 8, false,
     37, 208, -1},
    {"update_q4_sr", "update, q4 delta with stochastic rounding (seed 7), "
     "n=37, blocks of 8", FMQ_Q_Q4, 8, true, 37, 209, -1},
    {"update_q1", "update, q1 delta (scale = mean |x|), n=45 in blocks of "
     "16: the last block holds 13, 3 bits of the last byte unused",
     FMQ_Q_Q1, 16, false, 45, 210, -1},
    {"update_q1_sr", "update, q1 delta with stochastic signs (seed 7, scale "
     "= max |x|), n=45, blocks of 16", FMQ_Q_Q1, 16, true, 45, 211, -1},
};

static void good_update(void)
{
    fmq_buf out;
    fmq_buf_init(&out);

    /* f32 with every optional key. */
    {
        float x[8];
        gen_values(201, 100000.0f, x, 8);
        fmq_msg_update m;
        update_base(&m);
        quantize(&m.delta, FMQ_Q_F32, 0, false, 0, x, 8);
        m.ts_ms = TS + 4242;
        m.train_s = 3.75f;
        strcpy(m.cls, "battery");
        check(fmq_codec_encode_update(&m, &out), "encode update_f32_full");
        tens t = {"d", &m.delta, x, false};
        emit_good("update_f32_full",
                  "update with every optional key (ts, tts, cls); f32 delta "
                  "(n=8)", &out, &t, 1, true);
        fmq_qtensor_fini(&m.delta);
        fmq_buf_reset(&out);
    }

    for (size_t i = 0; i < sizeof upd_cases / sizeof upd_cases[0]; i++) {
        const upd_case *uc = &upd_cases[i];
        float x[64];
        gen_values(uc->seed, 50000.0f, x, uc->n);
        if (uc->zero_block >= 0)
            for (uint32_t j = 0; j < uc->block; j++)
                x[(uint32_t)uc->zero_block * uc->block + j] = 0.0f;
        fmq_msg_update m;
        update_base(&m);
        quantize(&m.delta, uc->scheme, uc->block, uc->sr, 7, x, uc->n);
        check(fmq_codec_encode_update(&m, &out), uc->name);
        tens t = {"d", &m.delta, x, uc->sr};
        emit_good(uc->name, uc->desc, &out, &t, 1, true);
        fmq_qtensor_fini(&m.delta);
        fmq_buf_reset(&out);
    }

    /* Codes an encoder never writes (-128, -8) but a decoder accepts. */
    {
        uint8_t codes[4] = {0x80, 0x7f, 0x00, 0xc1}; /* -128, 127, 0, -63 */
        uint8_t scales[4];
        fmq_store_f32le(scales, 0.5f);
        fmq_msg_update m;
        update_base(&m);
        check(fmq_qtensor_view(&m.delta, FMQ_Q_Q8, 4, 4, codes, 4, scales, 4),
              "view q8");
        check(fmq_codec_encode_update(&m, &out), "encode update_q8_minus128");
        tens t = {"d", &m.delta, NULL, false};
        emit_good("update_q8_minus128",
                  "update, q8 codes -128, 127, 0, -63 with scale 0.5: "
                  "encoders never write -128, decoders accept it (-64.0)",
                  &out, &t, 1, true);
        fmq_buf_reset(&out);
    }
    {
        uint8_t codes[3] = {0x78, 0x19, 0x0f}; /* -8, 7, -7, 1, -1 */
        uint8_t scales[4];
        fmq_store_f32le(scales, 0.25f);
        fmq_msg_update m;
        update_base(&m);
        check(fmq_qtensor_view(&m.delta, FMQ_Q_Q4, 8, 5, codes, 3, scales, 4),
              "view q4");
        check(fmq_codec_encode_update(&m, &out), "encode update_q4_minus8");
        tens t = {"d", &m.delta, NULL, false};
        emit_good("update_q4_minus8",
                  "update, q4 codes -8, 7, -7, 1, -1 with scale 0.25: "
                  "encoders never write -8, decoders accept it (-2.0)",
                  &out, &t, 1, true);
        fmq_buf_reset(&out);
    }
    fmq_buf_fini(&out);
}

/* --------------------------------------------- good: status, metrics, agg */

static void good_small(void)
{
    fmq_buf out;
    fmq_buf_init(&out);

    fmq_msg_status s;
    fmq_msg_status_init(&s);
    strcpy(s.fleet, FLEET);
    strcpy(s.device, DEVICE);
    s.online = true;
    s.version = 4;
    s.last_round = 3;
    s.samples = 600;
    s.train_s = 3.75f;
    s.rss_bytes = 12582912;
    s.cpu_s = 41.5f;
    s.norm = 0.0123f;
    s.battery_pct = 87.5f;
    s.temp_c = -4.25f;
    s.ts_ms = TS + 5000;
    check(fmq_codec_encode_status(&s, &out), "encode status_full");
    emit_good("status_full", "device status with every optional key", &out,
              NULL, 0, true);
    fmq_buf_reset(&out);

    fmq_msg_status_init(&s);
    strcpy(s.fleet, FLEET);
    strcpy(s.device, DEVICE);
    s.online = false;
    check(fmq_codec_encode_status(&s, &out), "encode status_will");
    emit_good("status_will",
              "a device's last will: status with on = false and only the "
              "required keys", &out, NULL, 0, true);
    fmq_buf_reset(&out);

    fmq_msg_metrics mt;
    fmq_msg_metrics_init(&mt);
    strcpy(mt.fleet, FLEET);
    mt.round = 3;
    mt.version = 4;
    mt.cohort = 10;
    mt.participants = 8;
    mt.late = 1;
    fmq_reason_count rej[2] = {{"stale", 1}, {"norm", 2}};
    mt.rejected = rej;
    mt.nrejected = 2;
    mt.loss_mean = 0.61;
    mt.loss_std = 0.07;
    mt.test_loss = 0.58;
    mt.test_acc = 0.8125;
    mt.bytes_in = 812345;
    mt.bytes_out = 101770 * 2 + 180;
    mt.seconds = 12.5;
    strcpy(mt.strategy, "fedavg");
    fmq_flag fg[2] = {{"dev-003", "stuck"}, {"dev-009", "rejected"}};
    mt.flags = fg;
    mt.nflags = 2;
    mt.ts_ms = TS + 12500;
    check(fmq_codec_encode_metrics(&mt, &out), "encode metrics_full");
    emit_good("metrics_full",
              "round metrics with every optional key (rejections by reason, "
              "flagged devices, float64 losses and accuracy) but the DP "
              "ones (metrics_dp)",
              &out, NULL, 0, true);
    fmq_buf_reset(&out);

    fmq_msg_metrics_init(&mt);
    strcpy(mt.fleet, FLEET);
    mt.round = 5;
    mt.version = 6;
    mt.cohort = 10;
    mt.participants = 10;
    mt.late = 0;
    mt.bytes_in = 1017700;
    mt.bytes_out = 407080;
    mt.seconds = 3.25;
    strcpy(mt.strategy, "dp-fedavg");
    mt.dp_clip = 1.0;
    mt.dp_noise = 1.1;
    check(fmq_codec_encode_metrics(&mt, &out), "encode metrics_dp");
    emit_good("metrics_dp",
              "round metrics of dp-fedavg: its clip S (dpc) and noise "
              "multiplier z (dpz), float64",
              &out, NULL, 0, true);
    fmq_buf_reset(&out);

    fmq_msg_metrics_init(&mt);
    strcpy(mt.fleet, FLEET);
    mt.round = 1;
    mt.version = 2;
    mt.cohort = 3;
    mt.participants = 3;
    mt.late = 0;
    mt.bytes_in = 3000;
    mt.bytes_out = 1000;
    mt.seconds = 0.0;
    check(fmq_codec_encode_metrics(&mt, &out), "encode metrics_minimal");
    emit_good("metrics_minimal", "round metrics with required keys only",
              &out, NULL, 0, true);
    fmq_buf_reset(&out);

    fmq_msg_agg a;
    fmq_msg_agg_init(&a);
    strcpy(a.fleet, FLEET);
    a.online = true;
    a.round = 4;
    a.version = 4;
    a.ts_ms = TS;
    check(fmq_codec_encode_agg(&a, &out), "encode agg_online");
    emit_good("agg_online", "aggregator status, online, with round, version "
              "and time", &out, NULL, 0, true);
    fmq_buf_reset(&out);

    fmq_msg_agg_init(&a);
    strcpy(a.fleet, FLEET);
    a.online = false;
    check(fmq_codec_encode_agg(&a, &out), "encode agg_will");
    emit_good("agg_will", "the aggregator's last will: agg with on = false",
              &out, NULL, 0, true);
    fmq_buf_reset(&out);

    /* signed: the body is a complete global (global_f16's shape, smaller). */
    {
        float x[4] = {0.5f, -0.5f, 0.25f, 2.0f};
        fmq_msg_global g;
        global_base(&g);
        quantize(&g.weights, FMQ_Q_F16, 0, false, 0, x, 4);
        fmq_buf body;
        fmq_buf_init(&body);
        check(fmq_codec_encode_global(&g, &body), "encode signed body");
        fmq_msg_signed sg;
        memset(&sg, 0, sizeof sg);
        strcpy(sg.kid, "agg-key-1");
        sg.body = body.data;
        sg.body_len = body.len;
        for (int i = 0; i < FMQ_SIG_LEN; i++)
            sg.sig[i] = (uint8_t)(i * 37 + 11);
        check(fmq_codec_encode_signed(&sg, &out), "encode signed_global");
        emit_good("signed_global",
                  "signed envelope around a complete global (f16 weights, "
                  "n=4); the 64 signature bytes are a fixed pattern, not a "
                  "valid ECDSA signature: this vector shows the shape only",
                  &out, NULL, 0, true);
        fmq_buf_reset(&out);
        fmq_buf_fini(&body);
        fmq_qtensor_fini(&g.weights);
    }

    /* sealed: epk, iv and ct are fixed patterns of the right sizes. */
    {
        fmq_msg_sealed se;
        memset(&se, 0, sizeof se);
        strcpy(se.kid, "agg-key-1");
        se.round = 4;
        se.epk[0] = 0x04;
        for (int i = 1; i < FMQ_EPK_LEN; i++)
            se.epk[i] = (uint8_t)(i * 13 + 1);
        for (int i = 0; i < FMQ_IV_LEN; i++)
            se.iv[i] = (uint8_t)(0xa0 + i);
        uint8_t ct[48];
        for (int i = 0; i < 48; i++)
            ct[i] = (uint8_t)(i * 91 + 7);
        se.ct = ct;
        se.ct_len = sizeof ct;
        check(fmq_codec_encode_sealed(&se, &out), "encode sealed_update");
        emit_good("sealed_update",
                  "sealed envelope: uncompressed ephemeral key (65 bytes, "
                  "0x04 first), 12-byte nonce, 48 bytes of ciphertext+tag; "
                  "fixed patterns, not a real encryption: shape only",
                  &out, NULL, 0, true);
        fmq_buf_reset(&out);
    }
    fmq_buf_fini(&out);
}

/* --------------------------------------------------------------- the DSL
 * A map as a list of (key, packed value) entries, for the foreign and the
 * bad vectors: entries can be replaced in place, removed, repeated, or
 * given a key that is not a string. */

typedef struct mm_ent {
    char key[72];
    const uint8_t *rawkey; /* packed key bytes instead of key, or NULL */
    size_t rawkey_len;
    fmq_buf val;
} mm_ent;

typedef struct mm {
    mm_ent e[40];
    unsigned n;
} mm;

static int mm__write(void *data, const char *buf, size_t len)
{
    bput(data, buf, len);
    return 0;
}

static void mm_init(mm *m)
{
    m->n = 0;
}

static void mm_fini(mm *m)
{
    for (unsigned i = 0; i < m->n; i++)
        fmq_buf_fini(&m->e[i].val);
    m->n = 0;
}

/* The entry for key, emptied for a new value; appended when absent. */
static msgpack_packer mm_slot(mm *m, const char *key)
{
    mm_ent *e = NULL;
    for (unsigned i = 0; i < m->n && !e; i++)
        if (!m->e[i].rawkey && strcmp(m->e[i].key, key) == 0)
            e = &m->e[i];
    if (!e) {
        if (m->n == sizeof m->e / sizeof m->e[0])
            die("mm: too many entries");
        e = &m->e[m->n++];
        snprintf(e->key, sizeof e->key, "%s", key);
        e->rawkey = NULL;
        fmq_buf_init(&e->val);
    }
    fmq_buf_reset(&e->val);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &e->val, mm__write);
    return pk;
}

static void mm_uint(mm *m, const char *k, uint64_t v)
{
    msgpack_packer pk = mm_slot(m, k);
    msgpack_pack_uint64(&pk, v);
}
static void mm_int(mm *m, const char *k, int64_t v)
{
    msgpack_packer pk = mm_slot(m, k);
    msgpack_pack_int64(&pk, v);
}
static void mm_str(mm *m, const char *k, const char *s)
{
    msgpack_packer pk = mm_slot(m, k);
    msgpack_pack_str(&pk, strlen(s));
    msgpack_pack_str_body(&pk, s, strlen(s));
}
static void mm_f32(mm *m, const char *k, float f)
{
    msgpack_packer pk = mm_slot(m, k);
    msgpack_pack_float(&pk, f);
}
static void mm_f64(mm *m, const char *k, double d)
{
    msgpack_packer pk = mm_slot(m, k);
    msgpack_pack_double(&pk, d);
}
static void mm_bool(mm *m, const char *k, bool b)
{
    msgpack_packer pk = mm_slot(m, k);
    if (b)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
}
static void mm_nil(mm *m, const char *k)
{
    msgpack_packer pk = mm_slot(m, k);
    msgpack_pack_nil(&pk);
}
static void mm_bin(mm *m, const char *k, const void *p, size_t n)
{
    msgpack_packer pk = mm_slot(m, k);
    msgpack_pack_bin(&pk, n);
    if (n)
        msgpack_pack_bin_body(&pk, p, n);
}
/* Raw bytes as the value (may be anything, even invalid MessagePack). */
static void mm_raw(mm *m, const char *k, const void *p, size_t n)
{
    mm_slot(m, k);
    for (unsigned i = 0; i < m->n; i++)
        if (!m->e[i].rawkey && strcmp(m->e[i].key, k) == 0)
            bput(&m->e[i].val, p, n);
}

/* A string literal as raw bytes (sizeof counts embedded NULs, not the end). */
#define MM_RAW(m, k, lit) mm_raw(m, k, lit, sizeof(lit) - 1)

static void mm_pack(const mm *m, fmq_buf *out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, mm__write);
    msgpack_pack_map(&pk, m->n);
    for (unsigned i = 0; i < m->n; i++) {
        const mm_ent *e = &m->e[i];
        if (e->rawkey) {
            bput(out, e->rawkey, e->rawkey_len);
        } else {
            msgpack_pack_str(&pk, strlen(e->key));
            msgpack_pack_str_body(&pk, e->key, strlen(e->key));
        }
        bput(out, e->val.data, e->val.len);
    }
}

/* A nested map as the value of k (packed now: change sub, then call again). */
static void mm_sub(mm *m, const char *k, const mm *sub)
{
    fmq_buf b;
    fmq_buf_init(&b);
    mm_pack(sub, &b);
    mm_raw(m, k, b.data, b.len);
    fmq_buf_fini(&b);
}

static void mm_del(mm *m, const char *k)
{
    for (unsigned i = 0; i < m->n; i++) {
        if (!m->e[i].rawkey && strcmp(m->e[i].key, k) == 0) {
            fmq_buf_fini(&m->e[i].val);
            memmove(&m->e[i], &m->e[i + 1], (m->n - i - 1) * sizeof m->e[0]);
            m->n--;
            return;
        }
    }
    die("mm_del: no key %s", k);
}

/* Append a second entry with the key and value of an existing one. */
static void mm_dup(mm *m, const char *k)
{
    for (unsigned i = 0; i < m->n; i++) {
        if (!m->e[i].rawkey && strcmp(m->e[i].key, k) == 0) {
            if (m->n == sizeof m->e / sizeof m->e[0])
                die("mm: too many entries");
            mm_ent *d = &m->e[m->n++];
            *d = m->e[i];
            fmq_buf_init(&d->val);
            bput(&d->val, m->e[i].val.data, m->e[i].val.len);
            return;
        }
    }
    die("mm_dup: no key %s", k);
}

/* Append an entry whose key is the given packed bytes. */
static void mm_rawkey(mm *m, const uint8_t *key, size_t klen, const void *val,
                      size_t vlen)
{
    if (m->n == sizeof m->e / sizeof m->e[0])
        die("mm: too many entries");
    mm_ent *e = &m->e[m->n++];
    e->key[0] = '\0';
    e->rawkey = key;
    e->rawkey_len = klen;
    fmq_buf_init(&e->val);
    bput(&e->val, val, vlen);
}

static void mm_tensor(mm *t, const fmq_qtensor *q)
{
    mm_init(t);
    mm_str(t, "s", fmq_scheme_name(q->scheme));
    mm_uint(t, "n", q->n);
    if (fmq_scheme_has_scales(q->scheme))
        mm_uint(t, "b", q->block);
    mm_bin(t, "c", q->codes, q->codes_len);
    if (fmq_scheme_has_scales(q->scheme))
        mm_bin(t, "sc", q->scales, q->scales_len);
}

/* ---------------------------------------------------- good: foreign ones */

static void good_foreign(void)
{
    fmq_buf out;
    fmq_buf_init(&out);

    /* An update as a Python or JavaScript encoder might write it. */
    {
        float x[12];
        gen_values(301, 50000.0f, x, 12);
        fmq_qtensor q;
        quantize(&q, FMQ_Q_Q8, 8, false, 0, x, 12);
        mm d;
        mm_init(&d);
        mm_bin(&d, "sc", q.scales, q.scales_len);
        mm_bin(&d, "c", q.codes, q.codes_len);
        mm_str(&d, "zz", "a key nobody knows");
        {   /* n = 12 as uint16 (0xcd), not as a fixint */
            uint8_t n16[3] = {0xcd, 0x00, 0x0c};
            mm_raw(&d, "n", n16, 3);
        }
        mm_uint(&d, "b", 8);
        mm_str(&d, "s", "q8");
        mm u;
        mm_init(&u);
        mm_str(&u, "t", "update");
        mm_sub(&u, "d", &d);
        mm_f64(&u, "loss", 0.7);      /* float64 for a float32 field */
        mm_str(&u, "dev", DEVICE);
        mm_str(&u, "fl", FLEET);
        mm_uint(&u, "v", 1);
        {   /* r = 4 as uint32 (0xce) */
            uint8_t r32[5] = {0xce, 0, 0, 0, 4};
            mm_raw(&u, "r", r32, 5);
        }
        mm_uint(&u, "mv", 4);
        mm_uint(&u, "n", 600);
        mm_uint(&u, "tts", 3);        /* an integer for a float field */
        {   /* an unknown key with nested containers */
            mm x2;
            mm_init(&x2);
            mm_bool(&x2, "k", true);
            mm_f64(&x2, "pi", 3.140625);
            mm_sub(&u, "x-future", &x2);
            mm_fini(&x2);
        }
        mm_pack(&u, &out);
        tens t = {"d", &q, x, false};
        emit_good("update_foreign",
                  "update as another encoder might write it: keys in another "
                  "order (v not first), loss as float64, tts as an integer, "
                  "r as uint32 and d.n as uint16, unknown keys at two levels; "
                  "all valid, the unknown keys are ignored",
                  &out, &t, 1, false);
        mm_fini(&d);
        mm_fini(&u);
        fmq_qtensor_fini(&q);
        fmq_buf_reset(&out);
    }

    /* A global that spells out defaults and keys other schemes use. */
    {
        float x[4] = {1.5f, -0.75f, 0.0f, 1024.0f};
        fmq_qtensor q;
        quantize(&q, FMQ_Q_F16, 0, false, 0, x, 4);
        mm w, tc, uq, g;
        mm_tensor(&w, &q);
        mm_uint(&w, "b", 64);          /* ignored for f16 */
        mm_bin(&w, "sc", "\0\0\0\0", 4); /* ignored for f16 */
        mm_init(&tc);
        mm_uint(&tc, "ep", 1);
        mm_uint(&tc, "bs", 16);
        mm_f64(&tc, "lr", 0.1);
        mm_f64(&tc, "mo", 0.0);        /* the default, written out */
        mm_init(&uq);
        mm_str(&uq, "s", "f16");
        mm_uint(&uq, "b", 256);        /* ignored for f16 */
        mm_bool(&uq, "sr", false);     /* the defaults, written out */
        mm_bool(&uq, "ef", true);
        mm_init(&g);
        mm_uint(&g, "v", 1);
        mm_str(&g, "t", "global");
        mm_str(&g, "fl", FLEET);
        mm_uint(&g, "r", 2);
        mm_uint(&g, "mv", 2);
        mm_uint(&g, "dl", 0);
        mm_str(&g, "m", "cnn");
        mm_sub(&g, "w", &w);
        mm_sub(&g, "tc", &tc);
        mm_sub(&g, "uq", &uq);
        mm_bool(&g, "as", false);
        mm_uint(&g, "ms", 0);
        mm_pack(&g, &out);
        tens t = {"w", &q, x, false};
        emit_good("global_foreign",
                  "global that writes default values out (tc.mo = 0.0, uq.sr "
                  "= false, uq.ef = true, as = false, ms = 0), lr as float64, "
                  "and keys its scheme ignores (w.b and w.sc for f16, uq.b "
                  "for f16)",
                  &out, &t, 1, false);
        mm_fini(&w);
        mm_fini(&tc);
        mm_fini(&uq);
        mm_fini(&g);
        fmq_qtensor_fini(&q);
        fmq_buf_reset(&out);
    }
    fmq_buf_fini(&out);
}

/* ------------------------------------------------------------ bad vectors */

/* Bases: valid messages that each bad vector changes. */
static fmq_qtensor g_q8; /* n=10, blocks of 4: codes 10 bytes, 3 scales */

static void base_update(mm *u, mm *d)
{
    mm_tensor(d, &g_q8);
    mm_init(u);
    mm_uint(u, "v", 1);
    mm_str(u, "t", "update");
    mm_str(u, "fl", FLEET);
    mm_str(u, "dev", DEVICE);
    mm_uint(u, "r", 4);
    mm_uint(u, "mv", 4);
    mm_uint(u, "n", 600);
    mm_f32(u, "loss", 0.6875f);
    mm_sub(u, "d", d);
}

static void base_global(mm *g, mm *w, mm *tc, mm *uq)
{
    static const float x[4] = {0.5f, -0.25f, 0.125f, 1.0f};
    uint8_t c[16];
    for (int i = 0; i < 4; i++)
        fmq_store_f32le(c + 4 * i, x[i]);
    mm_init(w);
    mm_str(w, "s", "f32");
    mm_uint(w, "n", 4);
    mm_bin(w, "c", c, 16);
    mm_init(tc);
    mm_uint(tc, "ep", 1);
    mm_uint(tc, "bs", 32);
    mm_f32(tc, "lr", 0.05f);
    mm_init(uq);
    mm_str(uq, "s", "q8");
    mm_uint(uq, "b", 256);
    mm_init(g);
    mm_uint(g, "v", 1);
    mm_str(g, "t", "global");
    mm_str(g, "fl", FLEET);
    mm_uint(g, "r", 4);
    mm_uint(g, "mv", 4);
    mm_uint(g, "dl", 0);
    mm_str(g, "m", "mlp:16,8");
    mm_sub(g, "w", w);
    mm_sub(g, "tc", tc);
    mm_sub(g, "uq", uq);
}

static void base_delta(mm *g, mm *d, mm *tc, mm *uq)
{
    mm_tensor(d, &g_q8);
    mm_init(tc);
    mm_uint(tc, "ep", 1);
    mm_uint(tc, "bs", 32);
    mm_f32(tc, "lr", 0.05f);
    mm_init(uq);
    mm_str(uq, "s", "q8");
    mm_uint(uq, "b", 256);
    mm_init(g);
    mm_uint(g, "v", 1);
    mm_str(g, "t", "delta");
    mm_str(g, "fl", FLEET);
    mm_uint(g, "r", 4);
    mm_uint(g, "mv", 4);
    mm_uint(g, "bv", 3);
    mm_uint(g, "dl", 0);
    mm_str(g, "m", "mlp:16,8");
    mm_sub(g, "d", d);
    mm_sub(g, "tc", tc);
    mm_sub(g, "uq", uq);
}

static void base_agg(mm *a)
{
    mm_init(a);
    mm_uint(a, "v", 1);
    mm_str(a, "t", "agg");
    mm_str(a, "fl", FLEET);
    mm_bool(a, "on", true);
}

static void base_metrics(mm *m)
{
    mm_init(m);
    mm_uint(m, "v", 1);
    mm_str(m, "t", "metrics");
    mm_str(m, "fl", FLEET);
    mm_uint(m, "r", 1);
    mm_uint(m, "mv", 2);
    mm_uint(m, "co", 3);
    mm_uint(m, "pa", 3);
    mm_uint(m, "late", 0);
    mm_uint(m, "bi", 3000);
    mm_uint(m, "bo", 1000);
    mm_f64(m, "sec", 1.5);
}

static void base_signed(mm *s)
{
    uint8_t sig[FMQ_SIG_LEN];
    for (int i = 0; i < FMQ_SIG_LEN; i++)
        sig[i] = (uint8_t)(i * 37 + 11);
    mm_init(s);
    mm_uint(s, "v", 1);
    mm_str(s, "t", "signed");
    mm_str(s, "kid", "agg-key-1");
    mm_bin(s, "body", "\x80", 1);
    mm_bin(s, "sig", sig, sizeof sig);
}

static void base_sealed(mm *s)
{
    uint8_t epk[FMQ_EPK_LEN], iv[FMQ_IV_LEN], ct[32];
    epk[0] = 0x04;
    for (int i = 1; i < FMQ_EPK_LEN; i++)
        epk[i] = (uint8_t)(i * 13 + 1);
    for (int i = 0; i < FMQ_IV_LEN; i++)
        iv[i] = (uint8_t)(0xa0 + i);
    for (int i = 0; i < 32; i++)
        ct[i] = (uint8_t)(i * 91 + 7);
    mm_init(s);
    mm_uint(s, "v", 1);
    mm_str(s, "t", "sealed");
    mm_str(s, "kid", "agg-key-1");
    mm_uint(s, "r", 4);
    mm_bin(s, "epk", epk, sizeof epk);
    mm_bin(s, "iv", iv, sizeof iv);
    mm_bin(s, "ct", ct, sizeof ct);
}

/* The bases must decode, or a bad vector would test two things at once. */
static void expect_valid(const fmq_buf *b, const char *what)
{
    fmq_codec_detail det;
    fmq_msg_type t;
    fmq_err e = fmq_codec_peek(b->data, b->len, NULL, &t, &det);
    if (!e) {
        switch (t) {
        case FMQ_MSG_GLOBAL: {
            fmq_msg_global m;
            e = fmq_codec_decode_global(b->data, b->len, NULL, &m, &det);
            fmq_msg_global_fini(&m);
            break;
        }
        case FMQ_MSG_UPDATE: {
            fmq_msg_update m;
            e = fmq_codec_decode_update(b->data, b->len, NULL, &m, &det);
            break;
        }
        case FMQ_MSG_METRICS: {
            fmq_msg_metrics m;
            e = fmq_codec_decode_metrics(b->data, b->len, NULL, &m, &det);
            fmq_msg_metrics_fini(&m);
            break;
        }
        case FMQ_MSG_AGG: {
            fmq_msg_agg m;
            e = fmq_codec_decode_agg(b->data, b->len, NULL, &m, &det);
            break;
        }
        case FMQ_MSG_SIGNED: {
            fmq_msg_signed m;
            e = fmq_codec_decode_signed(b->data, b->len, NULL, &m, &det);
            break;
        }
        case FMQ_MSG_DELTA: {
            fmq_msg_delta m;
            e = fmq_codec_decode_delta(b->data, b->len, NULL, &m, &det);
            fmq_msg_delta_fini(&m);
            break;
        }
        case FMQ_MSG_SEALED: {
            fmq_msg_sealed m;
            e = fmq_codec_decode_sealed(b->data, b->len, NULL, &m, &det);
            break;
        }
        default: break;
        }
    }
    if (e)
        die("base %s does not decode: %s (%s)", what, fmq_errname(e),
            det.what);
}

static void bad_mm(const char *name, fmq_err err, const char *desc,
                   const mm *m)
{
    fmq_buf b;
    fmq_buf_init(&b);
    mm_pack(m, &b);
    emit_bad(name, err, desc, b.data, b.len);
    fmq_buf_fini(&b);
}

static void bad_bytes(const char *name, fmq_err err, const char *desc,
                      const void *p, size_t n)
{
    emit_bad(name, err, desc, p, n);
}
#define BAD_LIT(name, err, desc, lit) bad_bytes(name, err, desc, lit, sizeof(lit) - 1)

/* Scales of g_q8 with block i replaced by f. */
static void scales_with(uint8_t out[12], int i, float f)
{
    memcpy(out, g_q8.scales, 12);
    fmq_store_f32le(out + 4 * i, f);
}

static void bad_structure(void)
{
    mm u, d, a;
    fmq_buf b;
    fmq_buf_init(&b);

    base_update(&u, &d);
    mm_pack(&u, &b);
    expect_valid(&b, "update");

    BAD_LIT("empty", FMQ_ERR_EMPTY, "zero-length payload", "");
    bad_bytes("truncated_half", FMQ_ERR_TRUNCATED,
              "the base update cut in half (ends inside the tensor map)",
              b.data, b.len / 2);
    bad_bytes("truncated_last_byte", FMQ_ERR_TRUNCATED,
              "the base update without its last byte (ends inside d.sc)",
              b.data, b.len - 1);
    BAD_LIT("truncated_map16_header", FMQ_ERR_TRUNCATED,
              "a map16 header (0xde) without its 2-byte count", "\xde");
    BAD_LIT("array_count_huge", FMQ_ERR_TRUNCATED,
              "array32 header claiming 2^31-1 elements in a 5-byte payload "
              "(msgpack-c alone would reserve ~48 GB)",
              "\xdd\x7f\xff\xff\xff");
    BAD_LIT("map_count_over_limit_and_past_end", FMQ_ERR_TRUNCATED,
              "map32 of 65,537 entries (over the limit) with 4 bytes left: "
              "a count beyond the remaining bytes is truncated even when it "
              "is also over the limit",
              "\xdf\x00\x01\x00\x01\xa1v\x01\xa1");
    fmq_buf_reset(&b);

    {   /* d.c claims 4096 bytes; only the rest of the message follows */
        mm d2;
        mm_tensor(&d2, &g_q8);
        uint8_t hdr[3] = {0xc5, 0x10, 0x00};
        mm_raw(&d2, "c", hdr, 3);
        mm_del(&d2, "sc");
        mm u2, d3;
        base_update(&u2, &d3);
        mm_sub(&u2, "d", &d2);
        bad_mm("bin_past_end", FMQ_ERR_TRUNCATED,
               "update whose d.c is a bin16 of 4,096 bytes with nothing after "
               "its header", &u2);
        mm_fini(&d2);
        mm_fini(&d3);
        mm_fini(&u2);
    }
    {   /* fl is a str8 of 200 bytes at the very end */
        mm u2, d2;
        base_update(&u2, &d2);
        mm_del(&u2, "fl");
        uint8_t hdr[4] = {0xd9, 200, 'f', 'l'};
        mm_raw(&u2, "fl", hdr, 4);
        bad_mm("str_past_end", FMQ_ERR_TRUNCATED,
               "update whose last value, fl, is a str8 of 200 bytes of which "
               "2 are present", &u2);
        mm_fini(&u2);
        mm_fini(&d2);
    }
    {
        mm u2, d2;
        base_update(&u2, &d2);
        MM_RAW(&u2, "loss", "\xc1");
        bad_mm("malformed_c1", FMQ_ERR_MALFORMED,
               "update whose loss is the byte 0xc1, which MessagePack never "
               "uses", &u2);
        mm_fini(&u2);
        mm_fini(&d2);
    }

    base_agg(&a);
    mm_pack(&a, &b);
    expect_valid(&b, "agg");
    {
        fmq_buf t;
        fmq_buf_init(&t);
        bput(&t, b.data, b.len);
        bput(&t, "\x00", 1);
        bad_bytes("trailing_byte", FMQ_ERR_TRAILING,
                  "a valid agg followed by one byte (0x00)", t.data, t.len);
        fmq_buf_reset(&t);
        bput(&t, b.data, b.len);
        bput(&t, b.data, b.len);
        bad_bytes("trailing_second_message", FMQ_ERR_TRAILING,
                  "two valid agg messages back to back in one payload",
                  t.data, t.len);
        fmq_buf_reset(&t);
        /* trailing is found after the whole top-level object; a truncated
         * second object is still trailing bytes */
        bput(&t, b.data, b.len);
        bput(&t, "\xdd\x7f\xff\xff\xff", 5);
        bad_bytes("trailing_before_huge_header", FMQ_ERR_TRAILING,
                  "a valid agg followed by an array32 header of 2^31-1 "
                  "elements: bytes after the top-level map are trailing, "
                  "whatever they are",
                  t.data, t.len);
        fmq_buf_fini(&t);
    }
    fmq_buf_reset(&b);

    {   /* nesting: top map = 1, eight arrays make depth 9 */
        mm a2;
        base_agg(&a2);
        MM_RAW(&a2, "x", "\x91\x91\x91\x91\x91\x91\x91\x90");
        bad_mm("too_deep", FMQ_ERR_TOO_DEEP,
               "agg with an unknown key whose value nests eight arrays: "
               "depth 9, the limit is 8 (top map = 1)", &a2);
        mm_fini(&a2);
        base_agg(&a2);
        MM_RAW(&a2, "x", "\x91\x91\x91\x91\x91\x91\x90");
        mm_pack(&a2, &b);
        expect_valid(&b, "agg at depth 8");
        fmq_buf_reset(&b);
        mm_fini(&a2);
    }

    BAD_LIT("not_map_array", FMQ_ERR_NOT_MAP,
            "top level is an array [1, \"update\"]", "\x92\x01\xa6update");
    BAD_LIT("not_map_int", FMQ_ERR_NOT_MAP, "top level is the integer 1",
            "\x01");
    BAD_LIT("not_map_nil", FMQ_ERR_NOT_MAP, "top level is nil", "\xc0");

    {
        mm a2;
        base_agg(&a2);
        static const uint8_t k1[1] = {0x01};
        mm_rawkey(&a2, k1, 1, "\xa1x", 2);
        bad_mm("bad_key_int", FMQ_ERR_BAD_KEY,
               "agg with an integer key (1: \"x\")", &a2);
        mm_fini(&a2);
    }
    {
        mm u2, d2;
        base_update(&u2, &d2);
        static const uint8_t kb[3] = {0xc4, 0x01, 's'};
        mm_rawkey(&d2, kb, 3, "\xa2q8", 3);
        mm_sub(&u2, "d", &d2);
        bad_mm("bad_key_bin_nested", FMQ_ERR_BAD_KEY,
               "update whose tensor map has a bin key (bin \"s\": \"q8\")",
               &u2);
        mm_fini(&u2);
        mm_fini(&d2);
    }
    {
        mm u2, d2;
        base_update(&u2, &d2);
        mm_dup(&u2, "r");
        bad_mm("dup_key_top", FMQ_ERR_DUP_KEY,
               "update with \"r\" twice (same value both times)", &u2);
        mm_fini(&u2);
        mm_fini(&d2);
    }
    {
        mm u2, d2;
        base_update(&u2, &d2);
        mm_dup(&d2, "n");
        mm_sub(&u2, "d", &d2);
        bad_mm("dup_key_tensor", FMQ_ERR_DUP_KEY,
               "update whose tensor map has \"n\" twice", &u2);
        mm_fini(&u2);
        mm_fini(&d2);
    }
    {
        mm a2;
        base_agg(&a2);
        mm_uint(&a2, "v", 2);
        mm_dup(&a2, "fl");
        bad_mm("dup_key_before_version", FMQ_ERR_DUP_KEY,
               "agg with v = 2 and \"fl\" twice: duplicate keys are found "
               "before the version is read", &a2);
        mm_fini(&a2);
    }
    mm_fini(&u);
    mm_fini(&d);
    mm_fini(&a);
    fmq_buf_fini(&b);
}

static void bad_envelope_keys(void)
{
    mm a;
    base_agg(&a);
    mm_del(&a, "v");
    bad_mm("missing_v", FMQ_ERR_MISSING_KEY, "agg without \"v\"", &a);
    mm_fini(&a);

    base_agg(&a);
    mm_uint(&a, "v", 2);
    bad_mm("version_2", FMQ_ERR_VERSION, "agg with v = 2 (unknown major "
           "version)", &a);
    mm_fini(&a);

    base_agg(&a);
    mm_uint(&a, "v", 0);
    bad_mm("version_0", FMQ_ERR_VERSION, "agg with v = 0", &a);
    mm_fini(&a);

    base_agg(&a);
    mm_uint(&a, "v", 2);
    mm_del(&a, "t");
    mm_del(&a, "fl");
    bad_mm("version_before_missing_keys", FMQ_ERR_VERSION,
           "agg with v = 2 and neither \"t\" nor \"fl\": the version is "
           "checked before anything else in the map", &a);
    mm_fini(&a);

    base_agg(&a);
    mm_str(&a, "v", "1");
    bad_mm("v_str", FMQ_ERR_WRONG_TYPE, "agg with v = \"1\" (a str)", &a);
    mm_fini(&a);

    base_agg(&a);
    mm_del(&a, "t");
    bad_mm("missing_t", FMQ_ERR_MISSING_KEY, "agg without \"t\"", &a);
    mm_fini(&a);

    base_agg(&a);
    mm_bin(&a, "t", "agg", 3);
    bad_mm("t_bin", FMQ_ERR_WRONG_TYPE, "agg whose t is bin \"agg\", not str",
           &a);
    mm_fini(&a);

    base_agg(&a);
    mm_str(&a, "t", "hello");
    bad_mm("t_unknown", FMQ_ERR_WRONG_MSG,
           "message whose t is \"hello\", no known message type", &a);
    mm_fini(&a);
}

static void bad_fields(void)
{
    mm u, d;
    fmq_buf b;
    fmq_buf_init(&b);

#define UPDATE_CASE(name, err, desc, ...)                                     \
    do {                                                                      \
        base_update(&u, &d);                                                  \
        __VA_ARGS__;                                                          \
        bad_mm(name, err, desc, &u);                                          \
        mm_fini(&u);                                                          \
        mm_fini(&d);                                                          \
    } while (0)

    UPDATE_CASE("missing_loss", FMQ_ERR_MISSING_KEY,
                "update without \"loss\"", mm_del(&u, "loss"));
    UPDATE_CASE("missing_before_wrong_type", FMQ_ERR_MISSING_KEY,
                "update without \"fl\" and with r as a str: fields are "
                "checked in table order, fl comes first",
                mm_del(&u, "fl"); mm_str(&u, "r", "4"));
    UPDATE_CASE("wrong_type_r_str", FMQ_ERR_WRONG_TYPE,
                "update whose r is the str \"4\"", mm_str(&u, "r", "4"));
    UPDATE_CASE("wrong_type_loss_str", FMQ_ERR_WRONG_TYPE,
                "update whose loss is the str \"0.5\"",
                mm_str(&u, "loss", "0.5"));
    UPDATE_CASE("wrong_type_nil_optional", FMQ_ERR_WRONG_TYPE,
                "update with ts = nil: an absent optional field is left out, "
                "nil is a wrong type", mm_nil(&u, "ts"));
    UPDATE_CASE("wrong_type_bool_for_uint", FMQ_ERR_WRONG_TYPE,
                "update whose n (samples) is true", mm_bool(&u, "n", true));
    UPDATE_CASE("wrong_type_tensor_array", FMQ_ERR_WRONG_TYPE,
                "update whose d is an array of floats instead of a tensor "
                "map", MM_RAW(&u, "d", "\x92\xca\x3f\x80\x00\x00\xca\x00\x00"
                              "\x00\x00"));
    UPDATE_CASE("wrong_type_codes_str", FMQ_ERR_WRONG_TYPE,
                "update whose d.c is a str of the right length, not a bin",
                mm_str(&d, "c", "0123456789"); mm_sub(&u, "d", &d));
    UPDATE_CASE("bad_value_negative_r", FMQ_ERR_BAD_VALUE,
                "update with r = -1", mm_int(&u, "r", -1));
    UPDATE_CASE("bad_value_samples_zero", FMQ_ERR_BAD_VALUE,
                "update with n (samples) = 0", mm_uint(&u, "n", 0));
    UPDATE_CASE("bad_value_id_char", FMQ_ERR_BAD_VALUE,
                "update whose dev is \"dev/7\" ('/' is not allowed in ids)",
                mm_str(&u, "dev", "dev/7"));
    UPDATE_CASE("bad_value_id_empty", FMQ_ERR_BAD_VALUE,
                "update whose fl is the empty str", mm_str(&u, "fl", ""));
    UPDATE_CASE("bad_value_id_65_bytes", FMQ_ERR_BAD_VALUE,
                "update whose fl is 65 bytes long (ids are 1..64)",
                mm_str(&u, "fl", "f0123456789abcdef0123456789abcdef0123456789"
                       "abcdef0123456789abcdef"));
    UPDATE_CASE("bad_value_block_zero", FMQ_ERR_BAD_VALUE,
                "update whose q8 tensor has block size 0",
                mm_uint(&d, "b", 0); mm_sub(&u, "d", &d));
    UPDATE_CASE("bad_value_tensor_n_zero", FMQ_ERR_BAD_VALUE,
                "update whose tensor has n = 0 and empty codes and scales",
                mm_uint(&d, "n", 0); mm_bin(&d, "c", "", 0);
                mm_bin(&d, "sc", "", 0); mm_sub(&u, "d", &d));
    {
        uint8_t sc[12];
        scales_with(sc, 1, -0.5f);
        UPDATE_CASE("bad_value_negative_scale", FMQ_ERR_BAD_VALUE,
                    "update whose q8 tensor's second scale is -0.5",
                    mm_bin(&d, "sc", sc, 12); mm_sub(&u, "d", &d));
    }
    UPDATE_CASE("missing_tensor_block", FMQ_ERR_MISSING_KEY,
                "update whose q8 tensor has no \"b\"",
                mm_del(&d, "b"); mm_sub(&u, "d", &d));
    UPDATE_CASE("missing_tensor_scales", FMQ_ERR_MISSING_KEY,
                "update whose q8 tensor has no \"sc\"",
                mm_del(&d, "sc"); mm_sub(&u, "d", &d));
    UPDATE_CASE("scheme_q2", FMQ_ERR_SCHEME,
                "update whose tensor scheme is \"q2\"",
                mm_str(&d, "s", "q2"); mm_sub(&u, "d", &d));
    UPDATE_CASE("scheme_uppercase", FMQ_ERR_SCHEME,
                "update whose tensor scheme is \"Q8\" (names are lower case)",
                mm_str(&d, "s", "Q8"); mm_sub(&u, "d", &d));
    UPDATE_CASE("too_large_tensor_n", FMQ_ERR_TOO_LARGE,
                "update whose tensor claims n = 100,000,001 (limit "
                "100,000,000); checked before the codes' length",
                mm_uint(&d, "n", 100000001); mm_sub(&u, "d", &d));
    UPDATE_CASE("shape_codes_short", FMQ_ERR_SHAPE,
                "update whose q8 tensor has 9 code bytes for n = 10",
                mm_bin(&d, "c", g_q8.codes, 9); mm_sub(&u, "d", &d));
    {
        uint8_t sc[16] = {0};
        memcpy(sc, g_q8.scales, 12);
        UPDATE_CASE("shape_scales_long", FMQ_ERR_SHAPE,
                    "update whose q8 tensor has 4 scales for n = 10 in blocks "
                    "of 4 (3 expected)",
                    mm_bin(&d, "sc", sc, 16); mm_sub(&u, "d", &d));
    }
    UPDATE_CASE("shape_n_mismatch", FMQ_ERR_SHAPE,
                "update whose q8 tensor says n = 11 with 10 code bytes",
                mm_uint(&d, "n", 11); mm_sub(&u, "d", &d));
    UPDATE_CASE("shape_block_mismatch", FMQ_ERR_SHAPE,
                "update whose q8 tensor says b = 5 (2 blocks) with 3 scales",
                mm_uint(&d, "b", 5); mm_sub(&u, "d", &d));
    {
        uint8_t sc[12];
        scales_with(sc, 1, NAN);
        UPDATE_CASE("nonfinite_scale_nan", FMQ_ERR_NONFINITE,
                    "update whose q8 tensor's second scale is NaN",
                    mm_bin(&d, "sc", sc, 12); mm_sub(&u, "d", &d));
        UPDATE_CASE("shape_before_nonfinite", FMQ_ERR_SHAPE,
                    "update whose q8 tensor has a NaN scale and 9 code bytes "
                    "for n = 10: the shape is checked first",
                    mm_bin(&d, "sc", sc, 12); mm_bin(&d, "c", g_q8.codes, 9);
                    mm_sub(&u, "d", &d));
        scales_with(sc, 2, INFINITY);
        UPDATE_CASE("nonfinite_scale_inf", FMQ_ERR_NONFINITE,
                    "update whose q8 tensor's last scale is +Inf",
                    mm_bin(&d, "sc", sc, 12); mm_sub(&u, "d", &d));
    }
    {
        uint8_t c[12];
        fmq_store_f32le(c, 0.5f);
        fmq_store_f32le(c + 4, -INFINITY);
        fmq_store_f32le(c + 8, 0.25f);
        mm t;
        mm_init(&t);
        mm_str(&t, "s", "f32");
        mm_uint(&t, "n", 3);
        mm_bin(&t, "c", c, 12);
        UPDATE_CASE("nonfinite_f32_value", FMQ_ERR_NONFINITE,
                    "update whose f32 delta holds -Inf", mm_sub(&u, "d", &t));
        mm_fini(&t);
        mm_init(&t);
        mm_str(&t, "s", "f16");
        mm_uint(&t, "n", 3);
        mm_bin(&t, "c", "\x00\x3c\x00\x7e\x00\xbc", 6); /* 1, NaN, -1 */
        UPDATE_CASE("nonfinite_f16_value", FMQ_ERR_NONFINITE,
                    "update whose f16 delta holds a NaN (0x7e00)",
                    mm_sub(&u, "d", &t));
        mm_fini(&t);
    }
    UPDATE_CASE("nonfinite_loss", FMQ_ERR_NONFINITE,
                "update whose loss is a float32 NaN", mm_f32(&u, "loss", NAN));
    UPDATE_CASE("nonfinite_loss_overflow", FMQ_ERR_NONFINITE,
                "update whose loss is the float64 1e300, which overflows the "
                "float32 field", mm_f64(&u, "loss", 1e300));
#undef UPDATE_CASE

    /* global */
    mm g, w, tc, uq;
    base_global(&g, &w, &tc, &uq);
    mm_pack(&g, &b);
    expect_valid(&b, "global");
    fmq_buf_reset(&b);
    mm_fini(&g);
    mm_fini(&w);
    mm_fini(&tc);
    mm_fini(&uq);

#define GLOBAL_CASE(name, err, desc, ...)                                     \
    do {                                                                      \
        base_global(&g, &w, &tc, &uq);                                        \
        __VA_ARGS__;                                                          \
        bad_mm(name, err, desc, &g);                                          \
        mm_fini(&g);                                                          \
        mm_fini(&w);                                                          \
        mm_fini(&tc);                                                         \
        mm_fini(&uq);                                                         \
    } while (0)

    GLOBAL_CASE("bad_value_global_weights_q8", FMQ_ERR_BAD_VALUE,
                "global whose weights are q8 (only f32 or f16 allowed)",
                mm_fini(&w); mm_tensor(&w, &g_q8); mm_sub(&g, "w", &w));
    GLOBAL_CASE("bad_value_round_zero", FMQ_ERR_BAD_VALUE,
                "global with r = 0 (rounds start at 1)", mm_uint(&g, "r", 0));
    GLOBAL_CASE("bad_value_lr_zero", FMQ_ERR_BAD_VALUE,
                "global whose tc.lr is 0.0 (must be > 0)",
                mm_f32(&tc, "lr", 0.0f); mm_sub(&g, "tc", &tc));
    GLOBAL_CASE("bad_value_momentum_one", FMQ_ERR_BAD_VALUE,
                "global whose tc.mo is 1.0 (must be in [0, 1))",
                mm_f32(&tc, "mo", 1.0f); mm_sub(&g, "tc", &tc));
    GLOBAL_CASE("bad_value_model_spec", FMQ_ERR_BAD_VALUE,
                "global whose model spec is \"mlp 128\" (space not allowed)",
                mm_str(&g, "m", "mlp 128"));
    GLOBAL_CASE("bad_value_cohort_both", FMQ_ERR_BAD_VALUE,
                "global whose cohort has both \"f\" and \"ids\"",
                MM_RAW(&g, "co", "\x83\xa1""f\xcb\x3f\xe0\x00\x00\x00\x00\x00"
                       "\x00\xa1s\x01\xa3ids\x91\xa1x"));
    GLOBAL_CASE("bad_value_cohort_empty", FMQ_ERR_BAD_VALUE,
                "global whose cohort map is empty (needs \"f\" or \"ids\")",
                MM_RAW(&g, "co", "\x80"));
    GLOBAL_CASE("missing_cohort_seed", FMQ_ERR_MISSING_KEY,
                "global whose cohort has \"f\" = 0.5 but no seed \"s\"",
                MM_RAW(&g, "co", "\x81\xa1""f\xcb\x3f\xe0\x00\x00\x00\x00\x00"
                       "\x00"));
    GLOBAL_CASE("missing_training_config", FMQ_ERR_MISSING_KEY,
                "global without \"tc\"", mm_del(&g, "tc"));
    GLOBAL_CASE("missing_uq_block", FMQ_ERR_MISSING_KEY,
                "global whose uq is q8 without \"b\"",
                mm_del(&uq, "b"); mm_sub(&g, "uq", &uq));
    GLOBAL_CASE("scheme_uq", FMQ_ERR_SCHEME,
                "global whose uq.s is \"int8\"",
                mm_str(&uq, "s", "int8"); mm_sub(&g, "uq", &uq));
    GLOBAL_CASE("wrong_type_uq_sr", FMQ_ERR_WRONG_TYPE,
                "global whose uq.sr is the integer 1, not a bool",
                mm_uint(&uq, "sr", 1); mm_sub(&g, "uq", &uq));
    {
        /* 17 classes, each {"s": "f32"} */
        mm cls;
        mm_init(&cls);
        for (int i = 0; i < 17; i++) {
            char k[16];
            snprintf(k, sizeof k, "c%02d", i);
            MM_RAW(&cls, k, "\x81\xa1s\xa3""f32");
        }
        GLOBAL_CASE("too_large_classes", FMQ_ERR_TOO_LARGE,
                    "global with 17 per-class schemes in uqc (limit 16)",
                    mm_sub(&g, "uqc", &cls));
        mm_fini(&cls);
    }
#undef GLOBAL_CASE

    /* delta */
    mm dl, dd;
    base_delta(&dl, &dd, &tc, &uq);
    mm_pack(&dl, &b);
    expect_valid(&b, "delta");
    fmq_buf_reset(&b);
    mm_fini(&dl);
    mm_fini(&dd);
    mm_fini(&tc);
    mm_fini(&uq);

#define DELTA_CASE(name, err, desc, ...)                                      \
    do {                                                                      \
        base_delta(&dl, &dd, &tc, &uq);                                       \
        __VA_ARGS__;                                                          \
        bad_mm(name, err, desc, &dl);                                         \
        mm_fini(&dl);                                                         \
        mm_fini(&dd);                                                         \
        mm_fini(&tc);                                                         \
        mm_fini(&uq);                                                         \
    } while (0)

    DELTA_CASE("bad_value_delta_base_not_below", FMQ_ERR_BAD_VALUE,
               "delta whose base version bv equals mv (bv must be below mv)",
               mm_uint(&dl, "bv", 4));
    DELTA_CASE("bad_value_delta_base_zero", FMQ_ERR_BAD_VALUE,
               "delta whose base version bv is 0 (versions start at 1)",
               mm_uint(&dl, "bv", 0));
    DELTA_CASE("missing_delta_base", FMQ_ERR_MISSING_KEY,
               "delta without its base version \"bv\"", mm_del(&dl, "bv"));
    DELTA_CASE("missing_delta_tensor", FMQ_ERR_MISSING_KEY,
               "delta without its tensor \"d\" (a \"w\" instead is an "
               "unknown key)", mm_del(&dl, "d"); mm_sub(&dl, "w", &dd));
    DELTA_CASE("shape_delta_codes", FMQ_ERR_SHAPE,
               "delta whose q8 codes are 9 bytes for n=10",
               mm_bin(&dd, "c", "012345678", 9); mm_sub(&dl, "d", &dd));
    DELTA_CASE("wrong_type_delta_gd", FMQ_ERR_WRONG_TYPE,
               "delta whose gd is the integer 1, not a bool",
               mm_uint(&dl, "gd", 1));
#undef DELTA_CASE

    /* metrics, signed, sealed */
    {
        mm m;
        base_metrics(&m);
        mm_pack(&m, &b);
        expect_valid(&b, "metrics");
        fmq_buf_reset(&b);
        mm_f64(&m, "sec", INFINITY);
        bad_mm("nonfinite_metrics_sec", FMQ_ERR_NONFINITE,
               "metrics whose sec is +Inf (float64)", &m);
        mm_fini(&m);
        base_metrics(&m);
        mm_f64(&m, "acc", 1.25);
        bad_mm("bad_value_accuracy", FMQ_ERR_BAD_VALUE,
               "metrics whose acc is 1.25 (must be in [0, 1])", &m);
        mm_fini(&m);
        base_metrics(&m);
        MM_RAW(&m, "fg", "\x91\xa7""dev-003");
        bad_mm("wrong_type_flag_entry", FMQ_ERR_WRONG_TYPE,
               "metrics whose fg list holds a str instead of a "
               "{dev, why} map", &m);
        mm_fini(&m);
    }
    {
        mm s;
        base_signed(&s);
        mm_pack(&s, &b);
        expect_valid(&b, "signed");
        fmq_buf_reset(&b);
        uint8_t sig[63] = {0};
        mm_bin(&s, "sig", sig, sizeof sig);
        bad_mm("bad_value_sig_63_bytes", FMQ_ERR_BAD_VALUE,
               "signed envelope whose sig is 63 bytes (exactly 64 required)",
               &s);
        mm_fini(&s);
        base_signed(&s);
        mm_del(&s, "sig");
        bad_mm("missing_sig", FMQ_ERR_MISSING_KEY,
               "signed envelope without \"sig\"", &s);
        mm_fini(&s);
        base_signed(&s);
        mm_bin(&s, "body", "", 0);
        bad_mm("bad_value_body_empty", FMQ_ERR_BAD_VALUE,
               "signed envelope whose body is an empty bin", &s);
        mm_fini(&s);
    }
    {
        mm s;
        base_sealed(&s);
        mm_pack(&s, &b);
        expect_valid(&b, "sealed");
        fmq_buf_reset(&b);
        uint8_t epk[FMQ_EPK_LEN] = {0x02};
        mm_bin(&s, "epk", epk, sizeof epk);
        bad_mm("bad_value_epk_prefix", FMQ_ERR_BAD_VALUE,
               "sealed envelope whose 65-byte epk starts with 0x02 "
               "(uncompressed points start with 0x04)", &s);
        mm_fini(&s);
        base_sealed(&s);
        mm_bin(&s, "ct", "0123456789abcde", 15);
        bad_mm("bad_value_ct_short", FMQ_ERR_BAD_VALUE,
               "sealed envelope whose ct is 15 bytes, shorter than the "
               "16-byte tag", &s);
        mm_fini(&s);
        base_sealed(&s);
        mm_str(&s, "iv", "abcdefghijkl");
        bad_mm("wrong_type_iv_str", FMQ_ERR_WRONG_TYPE,
               "sealed envelope whose iv is a 12-byte str, not a bin", &s);
        mm_fini(&s);
    }
    fmq_buf_fini(&b);
}

int main(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: gen_vectors DIR   (writes DIR/*.msgpack, "
                        "DIR/*.json and DIR/bad/)\n");
        return 2;
    }
    g_dir = argv[1];
    char bad[512];
    snprintf(bad, sizeof bad, "%s/bad", g_dir);
    check(fmq_mkdir_p(bad), bad);
    clean_dir(g_dir);
    clean_dir(bad);

    float x[10];
    gen_values(401, 50000.0f, x, 10);
    quantize(&g_q8, FMQ_Q_Q8, 4, false, 0, x, 10);

    good_global();
    good_delta();
    good_update();
    good_small();
    good_foreign();
    bad_structure();
    bad_envelope_keys();
    bad_fields();

    fmq_qtensor_fini(&g_q8);
    printf("gen_vectors: %u good and %u bad vectors in %s\n", g_good, g_bad,
           g_dir);
    return 0;
}
