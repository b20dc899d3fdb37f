/*
 * fuzz_delta.c — libFuzzer target for fmq_codec_decode_delta, the decoder
 * a device following model/delta runs on every new version (after the
 * signature check, as for the global). Whatever the bytes, the decoder
 * must not crash, read out of bounds, leak or allocate much, must refuse
 * with one of its reasons and agree with fmq_codec_peek; whatever it
 * accepts (1 <= bv < mv included) the encoder must write back, and that
 * must decode to the same message and re-encode to the same bytes. Any
 * disagreement aborts.
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

static void same_delta(const fmq_msg_delta *a, const fmq_msg_delta *b)
{
    const fmq_msg_global *x = &a->g, *y = &b->g;
    CHECK(a->base == b->base && a->base >= 1 && a->base < x->version);
    same_tensor(&a->delta, &b->delta);
    CHECK(x->weights.n == 0 && y->weights.n == 0);
    CHECK(strcmp(x->fleet, y->fleet) == 0);
    CHECK(x->round == y->round && x->version == y->version);
    CHECK(x->deadline_ms == y->deadline_ms && x->ts_ms == y->ts_ms);
    CHECK(strcmp(x->model, y->model) == 0);
    CHECK(x->train.epochs == y->train.epochs);
    CHECK(x->train.batch == y->train.batch);
    CHECK(same_f(x->train.lr, y->train.lr));
    CHECK(same_f(x->train.momentum, y->train.momentum));
    CHECK(same_f(x->train.weight_decay, y->train.weight_decay));
    CHECK(same_f(x->train.mu, y->train.mu));
    CHECK(x->cohort.kind == y->cohort.kind);
    if (x->cohort.kind == FMQ_COHORT_FRACTION) {
        CHECK(same_f(x->cohort.fraction, y->cohort.fraction));
        CHECK(x->cohort.seed == y->cohort.seed);
    }
    CHECK(x->cohort.nids == y->cohort.nids);
    for (uint32_t i = 0; i < x->cohort.nids; i++)
        CHECK(strcmp(x->cohort.ids[i], y->cohort.ids[i]) == 0);
    same_uq(&x->uq, &y->uq);
    CHECK(x->nclasses == y->nclasses);
    for (uint32_t i = 0; i < x->nclasses; i++) {
        CHECK(strcmp(x->classes[i].cls, y->classes[i].cls) == 0);
        same_uq(&x->classes[i].uq, &y->classes[i].uq);
    }
    CHECK(strcmp(x->strategy, y->strategy) == 0);
    CHECK(x->async == y->async && x->max_staleness == y->max_staleness);
    CHECK(x->deltas == y->deltas);
}

static void one(const uint8_t *data, size_t size)
{
    fmq_msg_delta m, m2;
    fmq_codec_detail d;
    fmq_err e = fmq_codec_decode_delta(data, size, NULL, &m, &d);
    check_verdict(FMQ_MSG_DELTA, data, size, e, &d);
    if (e) {
        /* the decoder has reset *out; _fini must still be harmless */
        CHECK(m.g.classes == NULL && m.g.cohort.ids == NULL);
        fmq_msg_delta_fini(&m);
        return;
    }
    fmq_buf b1, b2;
    fmq_buf_init(&b1);
    fmq_buf_init(&b2);
    CHECK(fmq_codec_encode_delta(&m, &b1) == FMQ_OK);
    CHECK(fmq_codec_decode_delta(b1.data, b1.len, NULL, &m2, &d) == FMQ_OK);
    same_delta(&m, &m2);
    CHECK(fmq_codec_encode_delta(&m2, &b2) == FMQ_OK);
    same_bytes(&b1, &b2);
    fmq_msg_delta_fini(&m);
    fmq_msg_delta_fini(&m2);
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

static void seed_delta(fmq_scheme ds, uint32_t block, int cohort, bool full)
{
    float x[40];
    for (int i = 0; i < 40; i++)
        x[i] = (float)(i - 20) / 512.0f;
    fmq_quant_cfg cfg = {.scheme = ds, .block = block};
    fmq_msg_delta m;
    fmq_msg_delta_init(&m);
    strcpy(m.g.fleet, "fleet-A");
    m.g.round = 3;
    m.g.version = 4;
    m.base = 3;
    m.g.deadline_ms = 1700000000000ull;
    strcpy(m.g.model, "mlp:16,8");
    CHECK(fmq_quant_encode(&cfg, x, 40, NULL, &m.delta) == FMQ_OK);
    m.g.train.epochs = 1;
    m.g.train.batch = 32;
    m.g.train.lr = 0.05f;
    m.g.uq = uq_of(FMQ_Q_Q8, 64, full, !full);
    if (cohort == 1) {
        m.g.cohort.kind = FMQ_COHORT_FRACTION;
        m.g.cohort.fraction = 0.5;
        m.g.cohort.seed = 99;
    } else if (cohort == 2) {
        m.g.cohort.kind = FMQ_COHORT_IDS;
        m.g.cohort.nids = 2;
        m.g.cohort.ids = fmq_calloc(2, sizeof *m.g.cohort.ids);
        CHECK(m.g.cohort.ids != NULL);
        strcpy(m.g.cohort.ids[0], "dev-001");
        strcpy(m.g.cohort.ids[1], "dev-002");
    }
    if (full) {
        m.g.ts_ms = 1699999999000ull;
        m.g.train.momentum = 0.9f;
        m.g.nclasses = 2;
        m.g.classes = fmq_calloc(2, sizeof *m.g.classes);
        CHECK(m.g.classes != NULL);
        strcpy(m.g.classes[0].cls, "cell");
        m.g.classes[0].uq = uq_of(FMQ_Q_Q4, 32, true, true);
        strcpy(m.g.classes[1].cls, "hub");
        m.g.classes[1].uq = uq_of(FMQ_Q_Q8, 64, false, true);
        strcpy(m.g.strategy, "fedavg");
        m.g.max_staleness = 2;
        m.g.deltas = true;
    }
    fmq_buf_init(&seeds[nseeds]);
    seed_add(fmq_codec_encode_delta(&m, &seeds[nseeds]));
    fmq_msg_delta_fini(&m);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    seed_delta(FMQ_Q_Q8, 16, 0, false);
    seed_delta(FMQ_Q_Q4, 7, 1, true);
    seed_delta(FMQ_Q_F16, 0, 2, true);
    seed_delta(FMQ_Q_Q1, 9, 0, true);
    return 0;
}
