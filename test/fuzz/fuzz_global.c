/*
 * fuzz_global.c — libFuzzer target for fmq_codec_decode_global, the
 * decoder every device runs on the retained global model (after checking
 * its signature, but the aggregator's key is not the only thing between a
 * device and hostile bytes). Whatever the bytes, the decoder must not
 * crash, read out of bounds, leak or allocate much (make fuzz sets
 * -malloc_limit_mb), must refuse with one of its reasons, and must agree
 * with fmq_codec_peek; whatever it accepts, the encoder must write back,
 * and that must decode to the same message and re-encode to the same
 * bytes. Any disagreement aborts.
 *
 *   make fuzz FUZZ_TIME=30        (all targets; see the Makefile)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "codec.h"
#include "quant.h"

/* ------------------------------------------------------------- harness
 * The same in every test/fuzz/fuzz_*.c. Each input is decoded twice: as
 * it is, and as an edit of one of the target's built-in valid messages
 * (proto/vectors/ seeds the corpus, but an edit of a valid message reaches
 * the field checks from the first second, seeds or not):
 *   byte 0        seed index (modulo the number of seeds); bit 7: truncate
 *   bytes 1..2    with bit 7, the new length (LE) modulo seed length + 1
 *   then triples  (offset LE16, value): bit 15 of the offset clear: byte
 *                 [offset % len] = value; set: insert value there
 * Every seed is also added with its floats widened to float64 and its
 * integers written as uint64/int64, as other implementations may write
 * them (our encoder never does), so the edits reach both widths.
 */

#define CHECK(c)                                                              \
    do {                                                                      \
        if (!(c)) {                                                           \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,  \
                    #c);                                                      \
            abort();                                                          \
        }                                                                     \
    } while (0)

#define MAX_SEEDS 16
static fmq_buf seeds[MAX_SEEDS];
static size_t nseeds;

/* Pack o with every float as float64 and every integer as 9 bytes. */
static void widen(msgpack_packer *pk, const msgpack_object *o)
{
    uint32_t i;
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        msgpack_pack_double(pk, o->via.f64);
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        msgpack_pack_fix_uint64(pk, o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        msgpack_pack_fix_int64(pk, o->via.i64);
        break;
    case MSGPACK_OBJECT_ARRAY:
        msgpack_pack_array(pk, o->via.array.size);
        for (i = 0; i < o->via.array.size; i++)
            widen(pk, &o->via.array.ptr[i]);
        break;
    case MSGPACK_OBJECT_MAP:
        msgpack_pack_map(pk, o->via.map.size);
        for (i = 0; i < o->via.map.size; i++) {
            msgpack_pack_object(pk, o->via.map.ptr[i].key);
            widen(pk, &o->via.map.ptr[i].val);
        }
        break;
    default:
        msgpack_pack_object(pk, *o);
    }
}

static int seed_write(void *data, const char *buf, size_t len)
{
    return fmq_buf_append(data, buf, len) == FMQ_OK ? 0 : -1;
}

/* The seed just encoded into seeds[nseeds], and its widened twin. */
static void seed_add(fmq_err e)
{
    CHECK(e == FMQ_OK && nseeds + 2 <= MAX_SEEDS);
    const fmq_buf *s = &seeds[nseeds++];
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    CHECK(msgpack_unpack_next(&up, (const char *)s->data, s->len, &off) ==
          MSGPACK_UNPACK_SUCCESS);
    fmq_buf *w = &seeds[nseeds++];
    fmq_buf_init(w);
    msgpack_packer pk;
    msgpack_packer_init(&pk, w, seed_write);
    widen(&pk, &up.data);
    msgpack_unpacked_destroy(&up);
}

static void one(const uint8_t *data, size_t size);

/* A decode error is one of the decoder's reasons (or NOMEM), and it comes
 * with a detail. peek runs the same walk and reads the same "v" and "t":
 * when it refuses, the decoder refuses for the same reason; when it names
 * this message type, the decoder's error (if any) is about a field. */
static void check_verdict(fmq_msg_type want, const uint8_t *data, size_t size,
                          fmq_err e, const fmq_codec_detail *d)
{
    fmq_msg_type pt = FMQ_MSG_GLOBAL;
    fmq_err pe = fmq_codec_peek(data, size, NULL, &pt, NULL);
    CHECK(e == FMQ_OK || e == FMQ_ERR_NOMEM ||
          (e >= FMQ_ERR_EMPTY && e <= FMQ_ERR_NONFINITE));
    CHECK(memchr(d->what, '\0', sizeof d->what) != NULL);
    CHECK(e == FMQ_OK || d->what[0] != '\0');
    if (pe != FMQ_OK) {
        CHECK(pt == FMQ_MSG_UNKNOWN);
        CHECK(e == pe);
    } else if (pt != want) {
        CHECK(e == FMQ_ERR_WRONG_MSG);
    } else {
        CHECK(e != FMQ_ERR_EMPTY && e != FMQ_ERR_TRUNCATED &&
              e != FMQ_ERR_MALFORMED && e != FMQ_ERR_TRAILING &&
              e != FMQ_ERR_TOO_DEEP && e != FMQ_ERR_NOT_MAP &&
              e != FMQ_ERR_BAD_KEY && e != FMQ_ERR_DUP_KEY &&
              e != FMQ_ERR_VERSION && e != FMQ_ERR_WRONG_MSG);
    }
}

__attribute__((unused)) static bool same_f(double a, double b)
{
    return (isnan(a) && isnan(b)) || a == b;
}

__attribute__((unused)) static void same_tensor(const fmq_qtensor *a,
                                                const fmq_qtensor *b)
{
    CHECK(a->scheme == b->scheme && a->n == b->n);
    CHECK(a->codes_len == b->codes_len);
    CHECK(memcmp(a->codes, b->codes, a->codes_len) == 0);
    if (fmq_scheme_has_scales(a->scheme)) {
        CHECK(a->block == b->block && a->scales_len == b->scales_len);
        CHECK(memcmp(a->scales, b->scales, a->scales_len) == 0);
    }
    /* a decoded tensor has passed fmq_quant_check: every kernel may read
     * it; ASan watches the reads */
    CHECK(fmq_quant_check(a) == FMQ_OK);
    float *x = malloc(sizeof(float) * a->n);
    CHECK(x != NULL);
    CHECK(fmq_quant_decode(a, x) == FMQ_OK);
    memset(x, 0, sizeof(float) * a->n);
    CHECK(fmq_quant_accumulate(b, 0.5f, x) == FMQ_OK);
    (void)fmq_quant_sqnorm(a);
    free(x);
}

/* The bytes must be equal after one more encode/decode cycle. */
static void same_bytes(const fmq_buf *a, const fmq_buf *b)
{
    CHECK(a->len == b->len && memcmp(a->data, b->data, a->len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one(data, size);
    if (size == 0 || nseeds == 0)
        return 0;
    const fmq_buf *s = &seeds[(data[0] & 0x7f) % nseeds];
    uint8_t *buf = malloc(s->len + size / 3 + 1);
    CHECK(buf != NULL);
    memcpy(buf, s->data, s->len);
    size_t len = s->len, i = 1;
    if ((data[0] & 0x80) && size >= 3) {
        len = (size_t)(data[1] | data[2] << 8) % (s->len + 1);
        i = 3;
    }
    for (; i + 3 <= size; i += 3) {
        size_t off = (size_t)(data[i] | data[i + 1] << 8);
        if (off & 0x8000) {
            off = (off & 0x7fff) % (len + 1);
            memmove(buf + off + 1, buf + off, len - off);
            buf[off] = data[i + 2];
            len++;
        } else if (len) {
            buf[off % len] = data[i + 2];
        }
    }
    /* an exact-size copy, so ASan sees a read past the end */
    uint8_t *exact = malloc(len ? len : 1);
    CHECK(exact != NULL);
    memcpy(exact, buf, len);
    free(buf);
    one(exact, len);
    free(exact);
    return 0;
}

/* ------------------------------------------------------------ target */

static void same_uq(const fmq_uq *a, const fmq_uq *b)
{
    CHECK(a->scheme == b->scheme && a->block == b->block);
    CHECK(a->stochastic == b->stochastic);
    CHECK(a->error_feedback == b->error_feedback);
}

static void same_global(const fmq_msg_global *a, const fmq_msg_global *b)
{
    CHECK(strcmp(a->fleet, b->fleet) == 0);
    CHECK(a->round == b->round && a->version == b->version);
    CHECK(a->deadline_ms == b->deadline_ms && a->ts_ms == b->ts_ms);
    CHECK(strcmp(a->model, b->model) == 0);
    same_tensor(&a->weights, &b->weights);
    CHECK(a->train.epochs == b->train.epochs);
    CHECK(a->train.batch == b->train.batch);
    CHECK(same_f(a->train.lr, b->train.lr));
    CHECK(same_f(a->train.momentum, b->train.momentum));
    CHECK(same_f(a->train.weight_decay, b->train.weight_decay));
    CHECK(same_f(a->train.mu, b->train.mu));
    CHECK(a->cohort.kind == b->cohort.kind);
    if (a->cohort.kind == FMQ_COHORT_FRACTION) {
        CHECK(same_f(a->cohort.fraction, b->cohort.fraction));
        CHECK(a->cohort.seed == b->cohort.seed);
    }
    CHECK(a->cohort.nids == b->cohort.nids);
    for (uint32_t i = 0; i < a->cohort.nids; i++)
        CHECK(strcmp(a->cohort.ids[i], b->cohort.ids[i]) == 0);
    same_uq(&a->uq, &b->uq);
    CHECK(a->nclasses == b->nclasses);
    for (uint32_t i = 0; i < a->nclasses; i++) {
        CHECK(strcmp(a->classes[i].cls, b->classes[i].cls) == 0);
        same_uq(&a->classes[i].uq, &b->classes[i].uq);
    }
    CHECK(strcmp(a->strategy, b->strategy) == 0);
    CHECK(a->async == b->async && a->max_staleness == b->max_staleness);
    CHECK(a->deltas == b->deltas);
}

static void one(const uint8_t *data, size_t size)
{
    fmq_msg_global m, m2;
    fmq_codec_detail d;
    fmq_err e = fmq_codec_decode_global(data, size, NULL, &m, &d);
    check_verdict(FMQ_MSG_GLOBAL, data, size, e, &d);
    if (e) {
        /* the decoder has reset *out; _fini must still be harmless */
        CHECK(m.classes == NULL && m.cohort.ids == NULL);
        fmq_msg_global_fini(&m);
        return;
    }
    fmq_buf b1, b2;
    fmq_buf_init(&b1);
    fmq_buf_init(&b2);
    CHECK(fmq_codec_encode_global(&m, &b1) == FMQ_OK);
    CHECK(fmq_codec_decode_global(b1.data, b1.len, NULL, &m2, &d) == FMQ_OK);
    same_global(&m, &m2);
    CHECK(fmq_codec_encode_global(&m2, &b2) == FMQ_OK);
    same_bytes(&b1, &b2);
    fmq_msg_global_fini(&m);
    fmq_msg_global_fini(&m2);
    fmq_buf_fini(&b1);
    fmq_buf_fini(&b2);
}

static fmq_uq uq_of(fmq_scheme s, uint32_t block, bool sr, bool ef)
{
    fmq_uq u = {.scheme = s,
                .block = fmq_scheme_has_scales(s) ? block : 0,
                .stochastic = sr,
                .error_feedback = ef};
    return u;
}

static void seed_global(fmq_scheme ws, fmq_scheme us, int cohort, bool full)
{
    float x[24];
    for (int i = 0; i < 24; i++)
        x[i] = (float)(i - 12) / 8.0f;
    fmq_quant_cfg cfg = {.scheme = ws};
    fmq_msg_global m;
    fmq_msg_global_init(&m);
    strcpy(m.fleet, "fleet-A");
    m.round = 3;
    m.version = 4;
    m.deadline_ms = 1700000000000ull;
    strcpy(m.model, "mlp:16,8");
    CHECK(fmq_quant_encode(&cfg, x, 24, NULL, &m.weights) == FMQ_OK);
    m.train.epochs = 1;
    m.train.batch = 32;
    m.train.lr = 0.05f;
    m.uq = uq_of(us, 64, full, !full);
    if (cohort == 1) {
        m.cohort.kind = FMQ_COHORT_FRACTION;
        m.cohort.fraction = 0.5;
        m.cohort.seed = 99;
    } else if (cohort == 2) {
        m.cohort.kind = FMQ_COHORT_IDS;
        m.cohort.nids = 2;
        m.cohort.ids = fmq_calloc(2, sizeof *m.cohort.ids);
        CHECK(m.cohort.ids != NULL);
        strcpy(m.cohort.ids[0], "dev-001");
        strcpy(m.cohort.ids[1], "dev-002");
    }
    if (full) {
        m.ts_ms = 1699999999000ull;
        m.train.momentum = 0.9f;
        m.train.weight_decay = 1e-4f;
        m.train.mu = 0.01f;
        m.nclasses = 2;
        m.classes = fmq_calloc(2, sizeof *m.classes);
        CHECK(m.classes != NULL);
        strcpy(m.classes[0].cls, "phone");
        m.classes[0].uq = uq_of(FMQ_Q_Q4, 32, true, true);
        strcpy(m.classes[1].cls, "mcu");
        m.classes[1].uq = uq_of(FMQ_Q_F16, 0, false, false);
        strcpy(m.strategy, "fedavg");
        m.async = true;
        m.max_staleness = 2;
    }
    fmq_buf_init(&seeds[nseeds]);
    seed_add(fmq_codec_encode_global(&m, &seeds[nseeds]));
    fmq_msg_global_fini(&m);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    seed_global(FMQ_Q_F32, FMQ_Q_F32, 0, false);
    seed_global(FMQ_Q_F16, FMQ_Q_Q8, 1, true);
    seed_global(FMQ_Q_F32, FMQ_Q_Q1, 2, true);
    seed_global(FMQ_Q_F16, FMQ_Q_Q4, 2, false);
    return 0;
}
