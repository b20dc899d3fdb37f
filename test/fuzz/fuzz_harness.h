/*
 * fuzz_harness.h — what every libFuzzer target in test/fuzz/ shares: the
 * seed-editing input format, CHECK, and the helpers below. Included once
 * by each fuzz_<decoder>.c, after the system and msgpack headers and
 * codec.h / quant.h; everything here is static.
 */
#ifndef FMQ_FUZZ_HARNESS_H
#define FMQ_FUZZ_HARNESS_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "codec.h"
#include "quant.h"

/* ------------------------------------------------------------- harness
 * Shared by every test/fuzz/fuzz_*.c. Each input is decoded twice: as
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

#endif /* FMQ_FUZZ_HARNESS_H */
