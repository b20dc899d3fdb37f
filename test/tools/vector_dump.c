/*
 * vector_dump.c — decode one encoded message with fedmq's codec and print
 * what it understood, as JSON.
 *
 *   vector_dump FILE.msgpack
 *
 * On success it prints {"type", "message", "tensors"} in the shape of a
 * golden vector's .json (proto/SPEC.md §11): "message" is written from the
 * decoded C struct field by field (not from the bytes), with the keys an
 * encoder would write: optional fields only when present, defaults left
 * out, "b"/"sc" only for scaled schemes. float32 fields are printed as the
 * exact double of the float, float64 fields as the double; bins as
 * {"hex": ...}; "tensors" holds fmq_quant_decode's float32 values.
 *
 * When the codec refuses the message it prints {"error": <reason name>,
 * "what": <detail>}. Both cases exit 0; 1 is a read error, 2 a usage error.
 * test/check_vectors.py compares the output with the vector's .json.
 */
#include "codec.h"
#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Larger than the codec's message limit, so that limit is the codec's to
 * report (too_large), not ours. */
#define DUMP_MAX_FILE ((size_t)80 << 20)

/* ------------------------------------------------------------------ JSON */

static void put_f64(double d)
{
    char s[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, d);
        if (strtod(s, NULL) == d)
            break;
    }
    if (!strpbrk(s, ".en"))
        strcat(s, ".0");
    fputs(s, stdout);
}

static void put_f32(float f)
{
    char s[40];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, (double)f);
        if (strtof(s, NULL) == f)
            break;
    }
    if (!strpbrk(s, ".en"))
        strcat(s, ".0");
    fputs(s, stdout);
}

static void put_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void put_hex(const uint8_t *p, size_t n)
{
    fputs("{\"hex\": \"", stdout);
    for (size_t i = 0; i < n; i++)
        printf("%02x", p[i]);
    fputs("\"}", stdout);
}

/* Key writer: a comma before every key but the first of its map. */
typedef struct obj {
    int n;
} obj;

static void key(obj *o, const char *k)
{
    if (o->n++)
        fputs(", ", stdout);
    put_str(k);
    fputs(": ", stdout);
}

static void kv_str(obj *o, const char *k, const char *v)
{
    key(o, k);
    put_str(v);
}
static void kv_u64(obj *o, const char *k, uint64_t v)
{
    key(o, k);
    printf("%llu", (unsigned long long)v);
}
static void kv_bool(obj *o, const char *k, bool v)
{
    key(o, k);
    fputs(v ? "true" : "false", stdout);
}
/* A float32 field: the exact double of the float. */
static void kv_f32(obj *o, const char *k, float v)
{
    key(o, k);
    put_f64((double)v);
}
static void kv_f64(obj *o, const char *k, double v)
{
    key(o, k);
    put_f64(v);
}
static void kv_hex(obj *o, const char *k, const uint8_t *p, size_t n)
{
    key(o, k);
    put_hex(p, n);
}
static void kv_opt_u64(obj *o, const char *k, uint64_t v)
{
    if (v != FMQ_ABSENT)
        kv_u64(o, k, v);
}
static void kv_opt_f32(obj *o, const char *k, float v)
{
    if (!isnan(v))
        kv_f32(o, k, v);
}
static void kv_opt_f64(obj *o, const char *k, double v)
{
    if (!isnan(v))
        kv_f64(o, k, v);
}
static void kv_opt_str(obj *o, const char *k, const char *v)
{
    if (*v)
        kv_str(o, k, v);
}

static void head(obj *o, const char *type)
{
    fputs("{", stdout);
    kv_u64(o, "v", FMQ_PROTO_VERSION);
    kv_str(o, "t", type);
}

/* ------------------------------------------------------- message parts */

static void put_tensor(obj *o, const char *k, const fmq_qtensor *q)
{
    obj t = {0};
    key(o, k);
    fputs("{", stdout);
    kv_str(&t, "s", fmq_scheme_name(q->scheme));
    kv_u64(&t, "n", q->n);
    if (fmq_scheme_has_scales(q->scheme))
        kv_u64(&t, "b", q->block);
    kv_hex(&t, "c", q->codes, q->codes_len);
    if (fmq_scheme_has_scales(q->scheme))
        kv_hex(&t, "sc", q->scales, q->scales_len);
    fputs("}", stdout);
}

static void put_uq_value(const fmq_uq *uq)
{
    obj u = {0};
    fputs("{", stdout);
    kv_str(&u, "s", fmq_scheme_name(uq->scheme));
    if (fmq_scheme_has_scales(uq->scheme))
        kv_u64(&u, "b", uq->block);
    if (uq->stochastic)
        kv_bool(&u, "sr", true);
    if (!uq->error_feedback)
        kv_bool(&u, "ef", false);
    fputs("}", stdout);
}

/* Dequantized values of each tensor, as {"key": [floats]}. */
static int put_tensors(const char *const *keys, const fmq_qtensor *const *qs,
                       int nq)
{
    fputs("{", stdout);
    for (int i = 0; i < nq; i++) {
        float *x = fmq_alloc_array(qs[i]->n, sizeof *x);
        if (!x) {
            fprintf(stderr, "vector_dump: out of memory\n");
            return 1;
        }
        fmq_err e = fmq_quant_decode(qs[i], x);
        if (e) {
            fprintf(stderr, "vector_dump: fmq_quant_decode: %s\n",
                    fmq_errname(e));
            fmq_free(x);
            return 1;
        }
        printf("%s\"%s\": [", i ? ", " : "", keys[i]);
        for (uint32_t j = 0; j < qs[i]->n; j++) {
            if (j)
                fputs(", ", stdout);
            put_f32(x[j]);
        }
        fputs("]", stdout);
        fmq_free(x);
    }
    fputs("}", stdout);
    return 0;
}

/* ------------------------------------------------------------ messages */

/* A global, or with d a delta (bv after mv, d where a global has w). */
static void dump_global_or_delta(const fmq_msg_global *m,
                                 const fmq_msg_delta *d)
{
    obj o = {0};
    head(&o, d ? "delta" : "global");
    kv_str(&o, "fl", m->fleet);
    kv_u64(&o, "r", m->round);
    kv_u64(&o, "mv", m->version);
    if (d)
        kv_u64(&o, "bv", d->base);
    kv_u64(&o, "dl", m->deadline_ms);
    kv_opt_u64(&o, "ts", m->ts_ms);
    kv_str(&o, "m", m->model);
    if (d)
        put_tensor(&o, "d", &d->delta);
    else
        put_tensor(&o, "w", &m->weights);

    obj tc = {0};
    key(&o, "tc");
    fputs("{", stdout);
    kv_u64(&tc, "ep", m->train.epochs);
    kv_u64(&tc, "bs", m->train.batch);
    kv_f32(&tc, "lr", m->train.lr);
    if (m->train.momentum != 0)
        kv_f32(&tc, "mo", m->train.momentum);
    if (m->train.weight_decay != 0)
        kv_f32(&tc, "wd", m->train.weight_decay);
    if (m->train.mu != 0)
        kv_f32(&tc, "mu", m->train.mu);
    fputs("}", stdout);

    if (m->cohort.kind != FMQ_COHORT_ALL) {
        obj co = {0};
        key(&o, "co");
        fputs("{", stdout);
        if (m->cohort.kind == FMQ_COHORT_FRACTION) {
            kv_f64(&co, "f", m->cohort.fraction);
            kv_u64(&co, "s", m->cohort.seed);
        } else {
            key(&co, "ids");
            fputs("[", stdout);
            for (uint32_t i = 0; i < m->cohort.nids; i++) {
                if (i)
                    fputs(", ", stdout);
                put_str(m->cohort.ids[i]);
            }
            fputs("]", stdout);
        }
        fputs("}", stdout);
    }
    key(&o, "uq");
    put_uq_value(&m->uq);
    if (m->nclasses) {
        obj uc = {0};
        key(&o, "uqc");
        fputs("{", stdout);
        for (uint32_t i = 0; i < m->nclasses; i++) {
            key(&uc, m->classes[i].cls);
            put_uq_value(&m->classes[i].uq);
        }
        fputs("}", stdout);
    }
    kv_opt_str(&o, "st", m->strategy);
    if (m->async)
        kv_bool(&o, "as", true);
    if (m->max_staleness)
        kv_u64(&o, "ms", m->max_staleness);
    if (m->deltas)
        kv_bool(&o, "gd", true);
    fputs("}", stdout);
}

static void dump_global(const fmq_msg_global *m)
{
    dump_global_or_delta(m, NULL);
}

static void dump_update(const fmq_msg_update *m)
{
    obj o = {0};
    head(&o, "update");
    kv_str(&o, "fl", m->fleet);
    kv_str(&o, "dev", m->device);
    kv_u64(&o, "r", m->round);
    kv_u64(&o, "mv", m->version);
    kv_u64(&o, "n", m->samples);
    kv_f32(&o, "loss", m->loss);
    put_tensor(&o, "d", &m->delta);
    kv_opt_u64(&o, "ts", m->ts_ms);
    kv_opt_f32(&o, "tts", m->train_s);
    kv_opt_str(&o, "cls", m->cls);
    fputs("}", stdout);
}

static void dump_status(const fmq_msg_status *m)
{
    obj o = {0};
    head(&o, "status");
    kv_str(&o, "fl", m->fleet);
    kv_str(&o, "dev", m->device);
    kv_bool(&o, "on", m->online);
    kv_opt_u64(&o, "mv", m->version);
    kv_opt_u64(&o, "lr", m->last_round);
    kv_opt_u64(&o, "n", m->samples);
    kv_opt_f32(&o, "tts", m->train_s);
    kv_opt_u64(&o, "rss", m->rss_bytes);
    kv_opt_f32(&o, "cpu", m->cpu_s);
    kv_opt_f32(&o, "norm", m->norm);
    kv_opt_f32(&o, "bat", m->battery_pct);
    kv_opt_f32(&o, "temp", m->temp_c);
    kv_opt_u64(&o, "ts", m->ts_ms);
    fputs("}", stdout);
}

static void dump_metrics(const fmq_msg_metrics *m)
{
    obj o = {0};
    head(&o, "metrics");
    kv_str(&o, "fl", m->fleet);
    kv_u64(&o, "r", m->round);
    kv_u64(&o, "mv", m->version);
    kv_u64(&o, "co", m->cohort);
    kv_u64(&o, "pa", m->participants);
    kv_u64(&o, "late", m->late);
    if (m->nrejected) {
        obj r = {0};
        key(&o, "rej");
        fputs("{", stdout);
        for (uint32_t i = 0; i < m->nrejected; i++)
            kv_u64(&r, m->rejected[i].reason, m->rejected[i].count);
        fputs("}", stdout);
    }
    kv_opt_f64(&o, "ls", m->loss_mean);
    kv_opt_f64(&o, "lsd", m->loss_std);
    kv_opt_f64(&o, "tl", m->test_loss);
    kv_opt_f64(&o, "acc", m->test_acc);
    kv_u64(&o, "bi", m->bytes_in);
    kv_u64(&o, "bo", m->bytes_out);
    kv_f64(&o, "sec", m->seconds);
    kv_opt_str(&o, "st", m->strategy);
    kv_opt_f64(&o, "dpc", m->dp_clip);
    kv_opt_f64(&o, "dpz", m->dp_noise);
    if (m->nflags) {
        key(&o, "fg");
        fputs("[", stdout);
        for (uint32_t i = 0; i < m->nflags; i++) {
            obj f = {0};
            fputs(i ? ", {" : "{", stdout);
            kv_str(&f, "dev", m->flags[i].device);
            kv_str(&f, "why", m->flags[i].why);
            fputs("}", stdout);
        }
        fputs("]", stdout);
    }
    kv_opt_u64(&o, "ts", m->ts_ms);
    fputs("}", stdout);
}

static void dump_agg(const fmq_msg_agg *m)
{
    obj o = {0};
    head(&o, "agg");
    kv_str(&o, "fl", m->fleet);
    kv_bool(&o, "on", m->online);
    kv_opt_u64(&o, "r", m->round);
    kv_opt_u64(&o, "mv", m->version);
    kv_opt_u64(&o, "ts", m->ts_ms);
    fputs("}", stdout);
}

static void dump_signed(const fmq_msg_signed *m)
{
    obj o = {0};
    head(&o, "signed");
    kv_str(&o, "kid", m->kid);
    kv_hex(&o, "body", m->body, m->body_len);
    kv_hex(&o, "sig", m->sig, FMQ_SIG_LEN);
    fputs("}", stdout);
}

static void dump_sealed(const fmq_msg_sealed *m)
{
    obj o = {0};
    head(&o, "sealed");
    kv_str(&o, "kid", m->kid);
    kv_u64(&o, "r", m->round);
    kv_hex(&o, "epk", m->epk, FMQ_EPK_LEN);
    kv_hex(&o, "iv", m->iv, FMQ_IV_LEN);
    kv_hex(&o, "ct", m->ct, m->ct_len);
    fputs("}", stdout);
}

/* ------------------------------------------------------------------ main */

static void print_error(fmq_err e, const fmq_codec_detail *d)
{
    fputs("{\"error\": ", stdout);
    put_str(fmq_errname(e));
    fputs(", \"what\": ", stdout);
    put_str(d->what);
    fputs("}\n", stdout);
}

int main(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: vector_dump FILE.msgpack\n"
                        "  prints the decoded message as JSON, or "
                        "{\"error\", \"what\"}; exit 0 either way\n");
        return 2;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    fmq_err e = fmq_file_read(argv[1], DUMP_MAX_FILE, &buf, &len);
    if (e) {
        fprintf(stderr, "vector_dump: %s: %s\n", argv[1], fmq_strerror(e));
        return 1;
    }
    fmq_codec_detail det = {{0}};
    fmq_msg_type type;
    int rc = 0;
    e = fmq_codec_peek(buf, len, NULL, &type, &det);
    if (e) {
        print_error(e, &det);
        goto done;
    }
    const char *keys[1];
    const fmq_qtensor *qs[1];
    int nq = 0;
    /* Decode into the right struct; print only when it succeeded. */
    fmq_msg_global g;
    fmq_msg_update u;
    fmq_msg_status s;
    fmq_msg_metrics mt;
    fmq_msg_agg a;
    fmq_msg_signed sg;
    fmq_msg_sealed se;
    fmq_msg_delta dt;
    switch (type) {
    case FMQ_MSG_GLOBAL: e = fmq_codec_decode_global(buf, len, NULL, &g, &det); break;
    case FMQ_MSG_UPDATE: e = fmq_codec_decode_update(buf, len, NULL, &u, &det); break;
    case FMQ_MSG_STATUS: e = fmq_codec_decode_status(buf, len, NULL, &s, &det); break;
    case FMQ_MSG_METRICS: e = fmq_codec_decode_metrics(buf, len, NULL, &mt, &det); break;
    case FMQ_MSG_AGG: e = fmq_codec_decode_agg(buf, len, NULL, &a, &det); break;
    case FMQ_MSG_SIGNED: e = fmq_codec_decode_signed(buf, len, NULL, &sg, &det); break;
    case FMQ_MSG_SEALED: e = fmq_codec_decode_sealed(buf, len, NULL, &se, &det); break;
    case FMQ_MSG_DELTA: e = fmq_codec_decode_delta(buf, len, NULL, &dt, &det); break;
    default:
        fprintf(stderr, "vector_dump: peek returned type %d\n", (int)type);
        rc = 1;
        goto done;
    }
    if (e) {
        print_error(e, &det);
        goto done;
    }
    printf("{\"type\": \"%s\", \"message\": ", fmq_msg_type_name(type));
    switch (type) {
    case FMQ_MSG_GLOBAL:
        dump_global(&g);
        keys[nq] = "w";
        qs[nq++] = &g.weights;
        break;
    case FMQ_MSG_UPDATE:
        dump_update(&u);
        keys[nq] = "d";
        qs[nq++] = &u.delta;
        break;
    case FMQ_MSG_STATUS: dump_status(&s); break;
    case FMQ_MSG_METRICS: dump_metrics(&mt); break;
    case FMQ_MSG_AGG: dump_agg(&a); break;
    case FMQ_MSG_SIGNED: dump_signed(&sg); break;
    case FMQ_MSG_SEALED: dump_sealed(&se); break;
    case FMQ_MSG_DELTA:
        dump_global_or_delta(&dt.g, &dt);
        keys[nq] = "d";
        qs[nq++] = &dt.delta;
        break;
    default: break;
    }
    fputs(", \"tensors\": ", stdout);
    rc = put_tensors(keys, qs, nq);
    fputs("}\n", stdout);
    if (type == FMQ_MSG_GLOBAL)
        fmq_msg_global_fini(&g);
    if (type == FMQ_MSG_METRICS)
        fmq_msg_metrics_fini(&mt);
    if (type == FMQ_MSG_DELTA)
        fmq_msg_delta_fini(&dt);
done:
    fmq_free(buf);
    if (fflush(stdout) != 0)
        rc = 1;
    return rc;
}
