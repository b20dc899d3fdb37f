/*
 * codec.c — MessagePack encoding and bounded decoding of every fedmq message
 * (codec.h is the contract, proto/SPEC.md the normative description).
 *
 * Decoding runs in four steps, each of which refuses with a specific error:
 *   1. codec__scan: a walker of our own over the raw bytes that allocates
 *      nothing. It checks every str/bin/ext length and every array/map count
 *      against the bytes that remain (an array element takes at least one
 *      byte, a map entry two, and every element still owed by an enclosing
 *      container one more), counts against lim->max_count, nesting against
 *      lim->max_depth, and that the top object ends exactly at len. Only a
 *      buffer that passes is given to msgpack-c, whose unpacker has no
 *      limits of its own (a 5-byte array header would make it reserve
 *      hundreds of megabytes); after the scan it allocates at most one
 *      msgpack_object per input byte.
 *   2. msgpack_unpack_next into a zone; str and bin objects point into the
 *      caller's buffer, so tensors and envelope payloads stay zero-copy.
 *   3. codec__keys: every map in the tree has string keys (BAD_KEY) and no
 *      key twice (DUP_KEY); then "v" and "t".
 *   4. Field extraction driven by one table per message (codec__field). The
 *      same tables drive the encoders, so key names, key order (the order of
 *      the struct and of the SPEC tables), presence rules and value checks
 *      cannot drift apart between the two directions.
 *
 * Error precedence (SPEC.md §10): EMPTY; TOO_LARGE for len > max_msg; then
 * the scan's errors in byte order (TRUNCATED / MALFORMED / TOO_LARGE /
 * TOO_DEEP, and for one container header TRUNCATED before TOO_LARGE before
 * TOO_DEEP); TRAILING; NOT_MAP; BAD_KEY / DUP_KEY in tree order; "v"
 * (MISSING_KEY, WRONG_TYPE, VERSION); "t" (MISSING_KEY, WRONG_TYPE,
 * WRONG_MSG); then each field in table order, and for one field
 * MISSING_KEY, WRONG_TYPE, then its value (NONFINITE before BAD_VALUE).
 */
#include "codec.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

/* msgpack-c's unpacker keeps a fixed stack of 32 containers and fails
 * deeper; a larger lim->max_depth is clamped to it. */
#define CODEC__DEPTH_HARD 32u
#define CODEC__PATH 96

static const char *const codec__type_names[FMQ_MSG__COUNT] = {
    "unknown", "global", "update", "status", "metrics", "agg", "signed",
    "sealed", "delta",
};

const char *fmq_msg_type_name(fmq_msg_type t)
{
    if ((unsigned)t >= FMQ_MSG__COUNT)
        return "unknown";
    return codec__type_names[t];
}

fmq_codec_limits fmq_codec_limits_default(void)
{
    fmq_codec_limits l = {
        .max_msg = (size_t)64 << 20,
        .max_n = FMQ_QUANT_N_MAX,
        .max_count = 65536,
        .max_depth = 8,
        .max_ids = 10000,
        .max_classes = 16,
    };
    return l;
}

/* ------------------------------------------------------------ context */

typedef struct codec__ctx {
    fmq_codec_limits lim;
    fmq_codec_detail *detail;
} codec__ctx;

static fmq_err codec__fail(codec__ctx *c, fmq_err e, const char *fmt, ...)
    FMQ_PRINTF(3, 4);
static fmq_err codec__fail(codec__ctx *c, fmq_err e, const char *fmt, ...)
{
    if (c->detail) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->detail->what, sizeof c->detail->what, fmt, ap);
        va_end(ap);
    }
    return e;
}

static void codec__ctx_init(codec__ctx *c, const fmq_codec_limits *lim,
                            fmq_codec_detail *detail)
{
    c->lim = lim ? *lim : fmq_codec_limits_default();
    if (c->lim.max_depth > CODEC__DEPTH_HARD)
        c->lim.max_depth = CODEC__DEPTH_HARD;
    c->detail = detail;
    if (detail)
        detail->what[0] = '\0';
}

/* "tc" + "lr" -> "tc.lr"; "" + "fl" -> "fl". Truncates quietly: the path
 * is only for the human reading the detail. */
static void codec__join(char *out, const char *path, const char *key)
{
    int n = snprintf(out, CODEC__PATH, "%s%s%s", path, *path ? "." : "", key);
    if (n >= CODEC__PATH) /* mark the cut so the reader knows */
        memcpy(out + CODEC__PATH - 4, "...", 4);
}

/* ---------------------------------------------------------- identifiers */

static bool codec__idchar(uint8_t ch, bool spec)
{
    if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
        (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-')
        return true;
    return spec && (ch == ':' || ch == ',');
}

/* Checks n bytes at p against the identifier rule with the given maximum.
 * Returns FMQ_OK or BAD_VALUE with the reason. Never prints the bytes
 * themselves: they come from the network. */
static fmq_err codec__check_name(codec__ctx *c, const char *kp,
                                 const uint8_t *p, size_t n, size_t max,
                                 bool spec)
{
    if (n == 0)
        return codec__fail(c, FMQ_ERR_BAD_VALUE, "%s: empty, expected 1..%zu "
                           "bytes", kp, max);
    if (n > max)
        return codec__fail(c, FMQ_ERR_BAD_VALUE, "%s: %zu bytes, at most %zu "
                           "allowed", kp, n, max);
    for (size_t i = 0; i < n; i++)
        if (!codec__idchar(p[i], spec))
            return codec__fail(c, FMQ_ERR_BAD_VALUE,
                               "%s: byte %zu (0x%02x) is not allowed (only "
                               "A-Za-z0-9._-%s)", kp, i, p[i],
                               spec ? ":," : "");
    return FMQ_OK;
}

bool fmq_id_valid(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, FMQ_ID_MAX + 1);
    if (n == 0 || n > FMQ_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!codec__idchar((uint8_t)s[i], false))
            return false;
    return true;
}

/* A string held in a char[cap] of a struct, checked by the encoder. */
static fmq_err codec__check_cstr(codec__ctx *c, const char *kp, const char *s,
                                 size_t max, bool spec)
{
    size_t n = strnlen(s, max + 1);
    return codec__check_name(c, kp, (const uint8_t *)s, n, max, spec);
}

/* ------------------------------------------------------- 1. the prescan */

enum { SCAN_SCALAR, SCAN_ARRAY, SCAN_MAP };

static uint64_t codec__be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static fmq_err codec__scan(codec__ctx *c, const uint8_t *p, size_t len)
{
    /* left[d]: elements still to read in the container at depth d+1;
     * pending: their sum, i.e. the bytes (at least one each) still owed. */
    uint64_t left[CODEC__DEPTH_HARD];
    unsigned depth = 0;
    uint64_t pending = 1;
    size_t pos = 0;

    for (;;) {
        if (depth)
            left[depth - 1]--;
        pending--;
        if (pos >= len)
            return codec__fail(c, FMQ_ERR_TRUNCATED,
                               "truncated at byte %zu of %zu", pos, len);
        size_t at = pos;
        uint8_t b = p[pos++];
        int kind = SCAN_SCALAR;
        size_t lenbytes = 0; /* width of a length or count field */
        size_t fixed = 0;    /* payload bytes after the header */
        size_t extra = 0;    /* ext type byte */
        bool var = false;    /* payload length comes from the header */
        uint64_t n = 0;

        if (b <= 0x7f || b >= 0xe0) {
            /* fixint */
        } else if (b <= 0x8f) {
            kind = SCAN_MAP;
            n = b & 0x0f;
        } else if (b <= 0x9f) {
            kind = SCAN_ARRAY;
            n = b & 0x0f;
        } else if (b <= 0xbf) {
            fixed = b & 0x1f;
        } else {
            switch (b) {
            case 0xc0: case 0xc2: case 0xc3: break;
            case 0xc1:
                return codec__fail(c, FMQ_ERR_MALFORMED,
                                   "byte %zu is 0xc1, which MessagePack never "
                                   "uses", at);
            case 0xc4: case 0xd9: lenbytes = 1; var = true; break;
            case 0xc5: case 0xda: lenbytes = 2; var = true; break;
            case 0xc6: case 0xdb: lenbytes = 4; var = true; break;
            case 0xc7: lenbytes = 1; var = true; extra = 1; break;
            case 0xc8: lenbytes = 2; var = true; extra = 1; break;
            case 0xc9: lenbytes = 4; var = true; extra = 1; break;
            case 0xca: fixed = 4; break;
            case 0xcb: fixed = 8; break;
            case 0xcc: case 0xd0: fixed = 1; break;
            case 0xcd: case 0xd1: fixed = 2; break;
            case 0xce: case 0xd2: fixed = 4; break;
            case 0xcf: case 0xd3: fixed = 8; break;
            case 0xd4: fixed = 2; break;
            case 0xd5: fixed = 3; break;
            case 0xd6: fixed = 5; break;
            case 0xd7: fixed = 9; break;
            case 0xd8: fixed = 17; break;
            case 0xdc: kind = SCAN_ARRAY; lenbytes = 2; break;
            case 0xdd: kind = SCAN_ARRAY; lenbytes = 4; break;
            case 0xde: kind = SCAN_MAP; lenbytes = 2; break;
            case 0xdf: kind = SCAN_MAP; lenbytes = 4; break;
            default: break; /* every byte value is covered above */
            }
        }
        if (lenbytes) {
            if (len - pos < lenbytes)
                return codec__fail(c, FMQ_ERR_TRUNCATED,
                                   "truncated at byte %zu of %zu (inside the "
                                   "header at byte %zu)", len, len, at);
            n = codec__be(p + pos, lenbytes);
            pos += lenbytes;
        }
        if (kind == SCAN_SCALAR) {
            uint64_t need = var ? n + extra : fixed;
            if (need > len - pos)
                return codec__fail(c, FMQ_ERR_TRUNCATED,
                                   "value at byte %zu needs %llu bytes, %zu "
                                   "remain of %zu", at,
                                   (unsigned long long)need, len - pos, len);
            pos += (size_t)need;
        } else {
            uint64_t items = kind == SCAN_MAP ? 2 * n : n;
            const char *what = kind == SCAN_MAP ? "map" : "array";
            /* Counts beyond the remaining bytes are TRUNCATED even when they
             * are also over the limit (SPEC.md §4). */
            if (items + pending > len - pos)
                return codec__fail(c, FMQ_ERR_TRUNCATED,
                                   "%s of %llu at byte %zu needs at least %llu "
                                   "more bytes, %zu remain", what,
                                   (unsigned long long)n, at,
                                   (unsigned long long)(items + pending),
                                   len - pos);
            if (n > c->lim.max_count)
                return codec__fail(c, FMQ_ERR_TOO_LARGE,
                                   "%s of %llu at byte %zu exceeds the limit "
                                   "of %u", what, (unsigned long long)n, at,
                                   c->lim.max_count);
            if (depth + 1 > c->lim.max_depth)
                return codec__fail(c, FMQ_ERR_TOO_DEEP,
                                   "%s at byte %zu is at depth %u, limit %u",
                                   what, at, depth + 1, c->lim.max_depth);
            if (items) {
                left[depth++] = items;
                pending += items;
                continue;
            }
        }
        while (depth && left[depth - 1] == 0)
            depth--;
        if (depth == 0)
            break;
    }
    if (pos != len)
        return codec__fail(c, FMQ_ERR_TRAILING,
                           "%zu trailing bytes after the message, which ends "
                           "at byte %zu", len - pos, pos);
    return FMQ_OK;
}

/* ----------------------------------------------- 2 and 3. unpack, keys */

static const char *codec__tname(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return "uint";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "negative int";
    case MSGPACK_OBJECT_FLOAT32: return "float32";
    case MSGPACK_OBJECT_FLOAT64: return "float64";
    case MSGPACK_OBJECT_STR: return "str";
    case MSGPACK_OBJECT_BIN: return "bin";
    case MSGPACK_OBJECT_ARRAY: return "array";
    case MSGPACK_OBJECT_MAP: return "map";
    case MSGPACK_OBJECT_EXT: return "ext";
    }
    return "?";
}

static bool codec__str_eq(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           (n == 0 || memcmp(o->via.str.ptr, s, n) == 0);
}

/* The value of key in map, or NULL. Keys are known to be strings. */
static const msgpack_object *codec__find(const msgpack_object *map,
                                         const char *key)
{
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (codec__str_eq(&map->via.map.ptr[i].key, key))
            return &map->via.map.ptr[i].val;
    return NULL;
}

static int codec__kv_cmp(const void *a, const void *b)
{
    const msgpack_object_str *x = &(*(const msgpack_object_kv *const *)a)->key.via.str;
    const msgpack_object_str *y = &(*(const msgpack_object_kv *const *)b)->key.via.str;
    if (x->size != y->size)
        return x->size < y->size ? -1 : 1;
    return x->size ? memcmp(x->ptr, y->ptr, x->size) : 0;
}

/* Print a key for a detail message when it is short and printable. */
static void codec__key_text(char *out, size_t cap, const msgpack_object_str *k)
{
    bool ok = k->size > 0 && k->size <= 32;
    for (uint32_t i = 0; ok && i < k->size; i++)
        ok = codec__idchar((uint8_t)k->ptr[i], true);
    if (ok)
        snprintf(out, cap, "%.*s", (int)k->size, k->ptr);
    else
        snprintf(out, cap, "(%u-byte key)", (unsigned)k->size);
}

/* Index of a key that appears twice in map, or -1; -2 on out of memory.
 * Small maps compare pairwise; larger ones sort pointers (O(n log n), so a
 * map of 65536 keys cannot make us do 2^31 comparisons). */
static long codec__map_dup(const msgpack_object_map *m)
{
    uint32_t n = m->size;
    if (n <= 16) {
        for (uint32_t i = 1; i < n; i++)
            for (uint32_t j = 0; j < i; j++)
                if (codec__kv_cmp(&(const msgpack_object_kv *){&m->ptr[i]},
                                  &(const msgpack_object_kv *){&m->ptr[j]}) == 0)
                    return i;
        return -1;
    }
    const msgpack_object_kv **v = fmq_alloc_array(n, sizeof *v);
    if (!v)
        return -2;
    for (uint32_t i = 0; i < n; i++)
        v[i] = &m->ptr[i];
    qsort(v, n, sizeof *v, codec__kv_cmp);
    long dup = -1;
    for (uint32_t i = 1; i < n && dup < 0; i++)
        if (codec__kv_cmp(&v[i - 1], &v[i]) == 0)
            dup = v[i] - m->ptr;
    fmq_free(v);
    return dup;
}

/* Every map in the tree: string keys, each once. Recursion depth is bounded
 * by the scan (at most CODEC__DEPTH_HARD). */
static fmq_err codec__keys(codec__ctx *c, const msgpack_object *o,
                           const char *path)
{
    char sub[CODEC__PATH];
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            snprintf(sub, sizeof sub, "%s[%u]", path, (unsigned)i);
            fmq_err e = codec__keys(c, &o->via.array.ptr[i], sub);
            if (e)
                return e;
        }
        return FMQ_OK;
    }
    if (o->type != MSGPACK_OBJECT_MAP)
        return FMQ_OK;
    const msgpack_object_map *m = &o->via.map;
    for (uint32_t i = 0; i < m->size; i++)
        if (m->ptr[i].key.type != MSGPACK_OBJECT_STR)
            return codec__fail(c, FMQ_ERR_BAD_KEY,
                               "%s: key %u is a %s, keys must be strings",
                               *path ? path : "top-level map", (unsigned)i,
                               codec__tname(&m->ptr[i].key));
    long dup = codec__map_dup(m);
    if (dup == -2)
        return codec__fail(c, FMQ_ERR_NOMEM, "out of memory checking keys");
    if (dup >= 0) {
        char k[48];
        codec__key_text(k, sizeof k, &m->ptr[dup].key.via.str);
        return codec__fail(c, FMQ_ERR_DUP_KEY, "%s%s%s: key appears twice",
                           path, *path ? "." : "", k);
    }
    for (uint32_t i = 0; i < m->size; i++) {
        char k[48];
        codec__key_text(k, sizeof k, &m->ptr[i].key.via.str);
        codec__join(sub, path, k);
        fmq_err e = codec__keys(c, &m->ptr[i].val, sub);
        if (e)
            return e;
    }
    return FMQ_OK;
}

typedef struct codec__doc {
    msgpack_unpacked up;
    const msgpack_object *root;
    fmq_msg_type type;
} codec__doc;

/* Steps 1–3 and "v"/"t". want == FMQ_MSG_UNKNOWN accepts any known type
 * (peek). On success doc->up must be destroyed by the caller; on error it
 * already is. */
static fmq_err codec__open(codec__ctx *c, const uint8_t *buf, size_t len,
                           fmq_msg_type want, codec__doc *doc)
{
    msgpack_unpacked_init(&doc->up);
    doc->root = NULL;
    doc->type = FMQ_MSG_UNKNOWN;
    if (len == 0)
        return codec__fail(c, FMQ_ERR_EMPTY, "empty message");
    if (!buf)
        return codec__fail(c, FMQ_ERR_INVAL, "NULL buffer");
    if (len > c->lim.max_msg)
        return codec__fail(c, FMQ_ERR_TOO_LARGE,
                           "message is %zu bytes, limit %zu", len,
                           c->lim.max_msg);
    fmq_err e = codec__scan(c, buf, len);
    if (e)
        return e;

    size_t off = 0;
    msgpack_unpack_return r =
        msgpack_unpack_next(&doc->up, (const char *)buf, len, &off);
    if (r == MSGPACK_UNPACK_NOMEM_ERROR) {
        e = codec__fail(c, FMQ_ERR_NOMEM, "msgpack-c: out of memory");
        goto fail;
    }
    if (r != MSGPACK_UNPACK_SUCCESS || off != len) {
        /* Cannot happen after the scan; kept so a disagreement between the
         * scan and msgpack-c is an error, never a crash. */
        e = codec__fail(c, FMQ_ERR_MALFORMED,
                        "msgpack-c refused the message (%d at byte %zu)",
                        (int)r, off);
        goto fail;
    }
    const msgpack_object *root = &doc->up.data;
    if (root->type != MSGPACK_OBJECT_MAP) {
        e = codec__fail(c, FMQ_ERR_NOT_MAP, "top level is a %s, not a map",
                        codec__tname(root));
        goto fail;
    }
    if ((e = codec__keys(c, root, "")))
        goto fail;

    const msgpack_object *v = codec__find(root, "v");
    if (!v) {
        e = codec__fail(c, FMQ_ERR_MISSING_KEY, "v: required key missing");
        goto fail;
    }
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ||
        (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
         v->via.u64 != FMQ_PROTO_VERSION)) {
        e = codec__fail(c, FMQ_ERR_VERSION,
                        "v: version %lld is not known (this is %u)",
                        v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER
                            ? (long long)v->via.i64
                            : (long long)(v->via.u64 > INT64_MAX ? INT64_MAX
                                                                 : v->via.u64),
                        FMQ_PROTO_VERSION);
        goto fail;
    }
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        e = codec__fail(c, FMQ_ERR_WRONG_TYPE, "v: expected uint, got %s",
                        codec__tname(v));
        goto fail;
    }
    const msgpack_object *t = codec__find(root, "t");
    if (!t) {
        e = codec__fail(c, FMQ_ERR_MISSING_KEY, "t: required key missing");
        goto fail;
    }
    if (t->type != MSGPACK_OBJECT_STR) {
        e = codec__fail(c, FMQ_ERR_WRONG_TYPE, "t: expected str, got %s",
                        codec__tname(t));
        goto fail;
    }
    for (int i = 1; i < FMQ_MSG__COUNT; i++)
        if (codec__str_eq(t, codec__type_names[i]))
            doc->type = (fmq_msg_type)i;
    if (doc->type == FMQ_MSG_UNKNOWN) {
        e = codec__fail(c, FMQ_ERR_WRONG_MSG, "t: unknown message type");
        goto fail;
    }
    if (want != FMQ_MSG_UNKNOWN && doc->type != want) {
        e = codec__fail(c, FMQ_ERR_WRONG_MSG, "t: \"%s\", expected \"%s\"",
                        fmq_msg_type_name(doc->type), fmq_msg_type_name(want));
        goto fail;
    }
    doc->root = root;
    return FMQ_OK;
fail:
    msgpack_unpacked_destroy(&doc->up);
    return e;
}

fmq_err fmq_codec_peek(const uint8_t *buf, size_t len,
                       const fmq_codec_limits *lim, fmq_msg_type *type,
                       fmq_codec_detail *detail)
{
    codec__ctx c;
    codec__ctx_init(&c, lim, detail);
    codec__doc doc;
    fmq_err e = codec__open(&c, buf, len, FMQ_MSG_UNKNOWN, &doc);
    if (type)
        *type = e ? FMQ_MSG_UNKNOWN : doc.type;
    if (!e)
        msgpack_unpacked_destroy(&doc.up);
    return e;
}

/* ------------------------------------------------- 4. value extraction */

static fmq_err codec__uint(codec__ctx *c, const char *kp,
                           const msgpack_object *o, uint64_t *u)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        *u = o->via.u64;
        return FMQ_OK;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return codec__fail(c, FMQ_ERR_BAD_VALUE, "%s: %lld is negative", kp,
                           (long long)o->via.i64);
    return codec__fail(c, FMQ_ERR_WRONG_TYPE, "%s: expected uint, got %s", kp,
                       codec__tname(o));
}

/* float32, float64 or any integer, as a double. */
static fmq_err codec__num(codec__ctx *c, const char *kp,
                          const msgpack_object *o, double *d)
{
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *d = o->via.f64; return FMQ_OK;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *d = (double)o->via.u64; return FMQ_OK;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *d = (double)o->via.i64; return FMQ_OK;
    default:
        return codec__fail(c, FMQ_ERR_WRONG_TYPE,
                           "%s: expected a number, got %s", kp,
                           codec__tname(o));
    }
}

/* Float ranges, shared by encoder and decoder. */
enum {
    R_ANY,    /* any finite value */
    R_POS,    /* > 0 */
    R_NONNEG, /* >= 0 */
    R_UNIT,   /* [0, 1) */
    R_PROB,   /* [0, 1] */
    R_FRAC,   /* (0, 1] */
    R_PCT,    /* [0, 100] */
};

static fmq_err codec__check_float(codec__ctx *c, const char *kp, double d,
                                  int range, bool f32)
{
    if (!isfinite(d))
        return codec__fail(c, FMQ_ERR_NONFINITE, "%s: %s, must be finite", kp,
                           isnan(d) ? "NaN" : "infinite");
    /* Converting an out-of-range double to float is undefined behaviour in
     * C; such a value would become infinite anyway. */
    if (f32 && fabs(d) > FLT_MAX)
        return codec__fail(c, FMQ_ERR_NONFINITE,
                           "%s: %g overflows float32", kp, d);
    bool ok = true;
    const char *rule = "";
    switch (range) {
    case R_POS: ok = d > 0; rule = "must be > 0"; break;
    case R_NONNEG: ok = d >= 0; rule = "must be >= 0"; break;
    case R_UNIT: ok = d >= 0 && d < 1; rule = "must be in [0, 1)"; break;
    case R_PROB: ok = d >= 0 && d <= 1; rule = "must be in [0, 1]"; break;
    case R_FRAC: ok = d > 0 && d <= 1; rule = "must be in (0, 1]"; break;
    case R_PCT: ok = d >= 0 && d <= 100; rule = "must be in [0, 100]"; break;
    default: break;
    }
    if (!ok)
        return codec__fail(c, FMQ_ERR_BAD_VALUE, "%s: %g %s", kp, d, rule);
    return FMQ_OK;
}

/* A str into a char[max + 1], checked against the identifier rule. */
static fmq_err codec__str(codec__ctx *c, const char *kp,
                          const msgpack_object *o, char *out, size_t max,
                          bool spec)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return codec__fail(c, FMQ_ERR_WRONG_TYPE, "%s: expected str, got %s",
                           kp, codec__tname(o));
    fmq_err e = codec__check_name(c, kp, (const uint8_t *)o->via.str.ptr,
                                  o->via.str.size, max, spec);
    if (e)
        return e;
    memcpy(out, o->via.str.ptr, o->via.str.size);
    out[o->via.str.size] = '\0';
    return FMQ_OK;
}

/* ------------------------------------------------------- field tables */

enum {
    K_ID,     /* char[FMQ_ID_MAX + 1] */
    K_SPEC,   /* char[FMQ_ID_MAX + 1], ':' and ',' allowed */
    K_NAME,   /* char[FMQ_NAME_MAX + 1] */
    K_U64,    /* uint64_t in [min, max] */
    K_U32,    /* uint32_t in [min, max] */
    K_F32,    /* float, finite, range */
    K_F64,    /* double, finite, range */
    K_BOOL,   /* bool */
    K_BIN,    /* borrowed const uint8_t * at off, size_t at off2, len in
                 [min, max] */
    K_FIXBIN, /* uint8_t[max]; min != 0: first byte must be min - 1 */
    K_MAP,    /* nested struct described by sub */
    K_CUSTOM, /* cu */
};

/* Presence of an optional field. */
enum {
    O_REQ,     /* required */
    O_ABSENT,  /* optional; absent is FMQ_ABSENT, NaN or "" (and reserved:
                  a wire value of 2^64-1 in such a field is BAD_VALUE) */
    O_DEFAULT, /* optional; absent means def, and def is not written */
};

typedef struct codec__field codec__field;
typedef struct codec__enc codec__enc;

typedef struct codec__custom {
    /* Encoder: is the field written? */
    bool (*present)(const codec__field *f, const void *base);
    /* Decoder: read o into base (allocating lists, which _fini frees). */
    fmq_err (*decode)(codec__ctx *c, const char *kp, const codec__field *f,
                      const msgpack_object *o, void *base);
    /* Encoder: refuse what the decoder would refuse. */
    fmq_err (*check)(codec__ctx *c, const char *kp, const codec__field *f,
                     const void *base);
    /* Encoder: write the value (already checked). */
    void (*encode)(codec__enc *e, const codec__field *f, const void *base);
} codec__custom;

struct codec__field {
    const char *key;
    uint8_t kind;
    uint8_t opt;
    uint8_t range;
    size_t off;
    size_t off2;
    uint64_t min, max;
    uint64_t def;
    const codec__custom *cu;
    const codec__field *sub;
    size_t nsub;
};

#define FLD(T, m) .off = offsetof(T, m)
#define P_(base, f, type) ((type *)((char *)(base) + (f)->off))
#define CP_(base, f, type) ((const type *)((const char *)(base) + (f)->off))

struct codec__enc {
    msgpack_packer pk;
    bool bad; /* a write failed (out of memory) */
};

static int codec__write(void *data, const char *buf, size_t len)
{
    return fmq_buf_append(data, buf, len) == FMQ_OK ? 0 : -1;
}

static void enc_ok(codec__enc *e, int r)
{
    if (r != 0)
        e->bad = true;
}
static void enc_str(codec__enc *e, const char *s, size_t n)
{
    enc_ok(e, msgpack_pack_str(&e->pk, n));
    enc_ok(e, msgpack_pack_str_body(&e->pk, s, n));
}
static void enc_key(codec__enc *e, const char *k) { enc_str(e, k, strlen(k)); }
static void enc_cstr(codec__enc *e, const char *s) { enc_str(e, s, strlen(s)); }
static void enc_u64(codec__enc *e, uint64_t v)
{
    enc_ok(e, msgpack_pack_uint64(&e->pk, v));
}
static void enc_bool(codec__enc *e, bool b)
{
    enc_ok(e, b ? msgpack_pack_true(&e->pk) : msgpack_pack_false(&e->pk));
}
static void enc_bin(codec__enc *e, const void *p, size_t n)
{
    enc_ok(e, msgpack_pack_bin(&e->pk, n));
    if (n)
        enc_ok(e, msgpack_pack_bin_body(&e->pk, p, n));
}
static void enc_map(codec__enc *e, size_t n)
{
    enc_ok(e, msgpack_pack_map(&e->pk, n));
}

static bool codec__present(const codec__field *f, const void *base);
static fmq_err codec__check_fields(codec__ctx *c, const char *path,
                                   const codec__field *fs, size_t nf,
                                   const void *base);
static fmq_err codec__decode_fields(codec__ctx *c, const char *path,
                                    const codec__field *fs, size_t nf,
                                    const msgpack_object *map, void *base);
static void codec__encode_fields(codec__enc *e, const codec__field *fs,
                                 size_t nf, const void *base);

static size_t codec__count_present(const codec__field *fs, size_t nf,
                                   const void *base)
{
    size_t n = 0;
    for (size_t i = 0; i < nf; i++)
        n += codec__present(&fs[i], base);
    return n;
}

static bool codec__present(const codec__field *f, const void *base)
{
    if (f->kind == K_CUSTOM)
        return f->cu->present(f, base);
    if (f->opt == O_REQ)
        return true;
    switch (f->kind) {
    case K_ID: case K_SPEC: case K_NAME: return *CP_(base, f, char) != '\0';
    case K_U64: {
        uint64_t v = *CP_(base, f, uint64_t);
        return f->opt == O_ABSENT ? v != FMQ_ABSENT : v != f->def;
    }
    case K_U32: return *CP_(base, f, uint32_t) != f->def;
    case K_F32: {
        float v = *CP_(base, f, float);
        return f->opt == O_ABSENT ? !isnan(v) : v != (float)f->def;
    }
    case K_F64: {
        double v = *CP_(base, f, double);
        return f->opt == O_ABSENT ? !isnan(v) : v != (double)f->def;
    }
    case K_BOOL: return *CP_(base, f, bool) != (f->def != 0);
    default: return true;
    }
}

/* The value checks shared by both directions (the decoder calls this after
 * storing a wire value; the encoder before writing). */
static fmq_err codec__check_value(codec__ctx *c, const char *kp,
                                  const codec__field *f, const void *base)
{
    switch (f->kind) {
    case K_ID: return codec__check_cstr(c, kp, CP_(base, f, char), FMQ_ID_MAX, false);
    case K_SPEC: return codec__check_cstr(c, kp, CP_(base, f, char), FMQ_ID_MAX, true);
    case K_NAME: return codec__check_cstr(c, kp, CP_(base, f, char), FMQ_NAME_MAX, false);
    case K_U64:
    case K_U32: {
        uint64_t v = f->kind == K_U64 ? *CP_(base, f, uint64_t)
                                      : *CP_(base, f, uint32_t);
        if (v < f->min || v > f->max)
            return codec__fail(c, FMQ_ERR_BAD_VALUE,
                               "%s: %llu, must be in [%llu, %llu]", kp,
                               (unsigned long long)v,
                               (unsigned long long)f->min,
                               (unsigned long long)f->max);
        return FMQ_OK;
    }
    case K_F32: return codec__check_float(c, kp, *CP_(base, f, float), f->range, true);
    case K_F64: return codec__check_float(c, kp, *CP_(base, f, double), f->range, false);
    case K_BOOL: return FMQ_OK;
    case K_BIN: {
        const uint8_t *p = *(const uint8_t *const *)((const char *)base + f->off);
        size_t n = *(const size_t *)((const char *)base + f->off2);
        if (n && !p)
            return codec__fail(c, FMQ_ERR_BAD_VALUE, "%s: NULL data", kp);
        if (n < f->min || n > f->max)
            return codec__fail(c, FMQ_ERR_BAD_VALUE,
                               "%s: %zu bytes, at least %llu", kp, n,
                               (unsigned long long)f->min);
        return FMQ_OK;
    }
    case K_FIXBIN:
        if (f->min && CP_(base, f, uint8_t)[0] != f->min - 1)
            return codec__fail(c, FMQ_ERR_BAD_VALUE,
                               "%s: first byte 0x%02x, expected 0x%02x", kp,
                               CP_(base, f, uint8_t)[0],
                               (unsigned)(f->min - 1));
        return FMQ_OK;
    case K_MAP:
        return codec__check_fields(c, kp, f->sub, f->nsub, CP_(base, f, char));
    case K_CUSTOM: return f->cu->check(c, kp, f, base);
    }
    return FMQ_ERR_INVAL;
}

static fmq_err codec__decode_field(codec__ctx *c, const char *kp,
                                   const codec__field *f,
                                   const msgpack_object *o, void *base)
{
    fmq_err e;
    switch (f->kind) {
    case K_ID:
    case K_SPEC:
        return codec__str(c, kp, o, P_(base, f, char), FMQ_ID_MAX,
                          f->kind == K_SPEC);
    case K_NAME: return codec__str(c, kp, o, P_(base, f, char), FMQ_NAME_MAX, false);
    case K_U64:
    case K_U32: {
        uint64_t u;
        if ((e = codec__uint(c, kp, o, &u)))
            return e;
        if (f->opt == O_ABSENT && u == FMQ_ABSENT)
            return codec__fail(c, FMQ_ERR_BAD_VALUE,
                               "%s: 2^64-1 is reserved for \"absent\"", kp);
        if (u < f->min || u > f->max)
            return codec__fail(c, FMQ_ERR_BAD_VALUE,
                               "%s: %llu, must be in [%llu, %llu]", kp,
                               (unsigned long long)u,
                               (unsigned long long)f->min,
                               (unsigned long long)f->max);
        if (f->kind == K_U64)
            *P_(base, f, uint64_t) = u;
        else
            *P_(base, f, uint32_t) = (uint32_t)u;
        return FMQ_OK;
    }
    case K_F32:
    case K_F64: {
        double d = 0;
        if ((e = codec__num(c, kp, o, &d)))
            return e;
        if ((e = codec__check_float(c, kp, d, f->range, f->kind == K_F32)))
            return e;
        if (f->kind == K_F64) {
            *P_(base, f, double) = d;
            return FMQ_OK;
        }
        /* The range holds for the value the field keeps, not only for the
         * wire's float64: 1e-50 is > 0 but 0 as a float32, 1 - 1e-12 is
         * < 1 but 1. Without this the decoder would accept an lr of 0 (and
         * the encoder then refuse to write the message back). */
        float fv = (float)d;
        if ((e = codec__check_float(c, kp, fv, f->range, true)))
            return e;
        *P_(base, f, float) = fv;
        return FMQ_OK;
    }
    case K_BOOL:
        if (o->type != MSGPACK_OBJECT_BOOLEAN)
            return codec__fail(c, FMQ_ERR_WRONG_TYPE,
                               "%s: expected bool, got %s", kp,
                               codec__tname(o));
        *P_(base, f, bool) = o->via.boolean;
        return FMQ_OK;
    case K_BIN:
    case K_FIXBIN:
        if (o->type != MSGPACK_OBJECT_BIN)
            return codec__fail(c, FMQ_ERR_WRONG_TYPE,
                               "%s: expected bin, got %s", kp, codec__tname(o));
        if (f->kind == K_FIXBIN) {
            if (o->via.bin.size != f->max)
                return codec__fail(c, FMQ_ERR_BAD_VALUE,
                                   "%s: %u bytes, expected %llu", kp,
                                   (unsigned)o->via.bin.size,
                                   (unsigned long long)f->max);
            memcpy(P_(base, f, uint8_t), o->via.bin.ptr, o->via.bin.size);
        } else {
            *P_(base, f, const uint8_t *) = (const uint8_t *)o->via.bin.ptr;
            *(size_t *)((char *)base + f->off2) = o->via.bin.size;
        }
        return codec__check_value(c, kp, f, base);
    case K_MAP:
        if (o->type != MSGPACK_OBJECT_MAP)
            return codec__fail(c, FMQ_ERR_WRONG_TYPE,
                               "%s: expected map, got %s", kp, codec__tname(o));
        return codec__decode_fields(c, kp, f->sub, f->nsub, o,
                                    P_(base, f, char));
    case K_CUSTOM: return f->cu->decode(c, kp, f, o, base);
    }
    return FMQ_ERR_INVAL;
}

static fmq_err codec__decode_fields(codec__ctx *c, const char *path,
                                    const codec__field *fs, size_t nf,
                                    const msgpack_object *map, void *base)
{
    char kp[CODEC__PATH];
    for (size_t i = 0; i < nf; i++) {
        const codec__field *f = &fs[i];
        codec__join(kp, path, f->key);
        const msgpack_object *o = codec__find(map, f->key);
        if (!o) {
            if (f->opt == O_REQ)
                return codec__fail(c, FMQ_ERR_MISSING_KEY,
                                   "%s: required key missing", kp);
            continue;
        }
        fmq_err e = codec__decode_field(c, kp, f, o, base);
        if (e)
            return e;
    }
    return FMQ_OK;
}

static fmq_err codec__check_fields(codec__ctx *c, const char *path,
                                   const codec__field *fs, size_t nf,
                                   const void *base)
{
    char kp[CODEC__PATH];
    for (size_t i = 0; i < nf; i++) {
        if (!codec__present(&fs[i], base))
            continue;
        codec__join(kp, path, fs[i].key);
        fmq_err e = codec__check_value(c, kp, &fs[i], base);
        if (e)
            return e;
    }
    return FMQ_OK;
}

static void codec__encode_fields(codec__enc *e, const codec__field *fs,
                                 size_t nf, const void *base)
{
    for (size_t i = 0; i < nf; i++) {
        const codec__field *f = &fs[i];
        if (!codec__present(f, base))
            continue;
        enc_key(e, f->key);
        switch (f->kind) {
        case K_ID: case K_SPEC: case K_NAME: enc_cstr(e, CP_(base, f, char)); break;
        case K_U64: enc_u64(e, *CP_(base, f, uint64_t)); break;
        case K_U32: enc_u64(e, *CP_(base, f, uint32_t)); break;
        case K_F32: enc_ok(e, msgpack_pack_float(&e->pk, *CP_(base, f, float))); break;
        case K_F64: enc_ok(e, msgpack_pack_double(&e->pk, *CP_(base, f, double))); break;
        case K_BOOL: enc_bool(e, *CP_(base, f, bool)); break;
        case K_BIN:
            enc_bin(e, *(const uint8_t *const *)((const char *)base + f->off),
                    *(const size_t *)((const char *)base + f->off2));
            break;
        case K_FIXBIN: enc_bin(e, CP_(base, f, uint8_t), f->max); break;
        case K_MAP: {
            const void *sub = CP_(base, f, char);
            enc_map(e, codec__count_present(f->sub, f->nsub, sub));
            codec__encode_fields(e, f->sub, f->nsub, sub);
            break;
        }
        case K_CUSTOM: f->cu->encode(e, f, base); break;
        default: break;
        }
    }
}

/* -------------------------------------------------------------- tensors
 * {"s": scheme, "n": uint, "b": uint (scaled), "c": bin, "sc": bin
 * (scaled)}. For f32/f16 "b" and "sc" are ignored like unknown keys. */

#define MASK_ALL ((1u << FMQ_Q__COUNT) - 1)
#define MASK_WEIGHTS ((1u << FMQ_Q_F32) | (1u << FMQ_Q_F16))

static fmq_err codec__scheme(codec__ctx *c, const char *kp,
                             const msgpack_object *o, fmq_scheme *s)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return codec__fail(c, FMQ_ERR_WRONG_TYPE, "%s: expected str, got %s",
                           kp, codec__tname(o));
    char name[8];
    if (o->via.str.size >= sizeof name ||
        memchr(o->via.str.ptr, '\0', o->via.str.size))
        return codec__fail(c, FMQ_ERR_SCHEME, "%s: unknown scheme", kp);
    memcpy(name, o->via.str.ptr, o->via.str.size);
    name[o->via.str.size] = '\0';
    if (fmq_scheme_parse(name, s) != FMQ_OK || (unsigned)*s >= FMQ_Q__COUNT)
        return codec__fail(c, FMQ_ERR_SCHEME, "%s: unknown scheme", kp);
    return FMQ_OK;
}

static fmq_err codec__block(codec__ctx *c, const char *kp, uint64_t b)
{
    if (b < FMQ_QUANT_BLOCK_MIN || b > FMQ_QUANT_BLOCK_MAX)
        return codec__fail(c, FMQ_ERR_BAD_VALUE,
                           "%s: block %llu, must be in [%u, %u]", kp,
                           (unsigned long long)b, FMQ_QUANT_BLOCK_MIN,
                           FMQ_QUANT_BLOCK_MAX);
    return FMQ_OK;
}

/* Lengths first (for a precise detail), then fmq_quant_check's verdict. */
static fmq_err codec__tensor_shape(codec__ctx *c, const char *kp,
                                   fmq_scheme s, uint32_t n, uint32_t b,
                                   size_t clen, size_t sclen)
{
    size_t want = fmq_quant_codes_size(s, n);
    if (clen != want)
        return codec__fail(c, FMQ_ERR_SHAPE,
                           "%s.c: %zu bytes, expected %zu for %s n=%u", kp,
                           clen, want, fmq_scheme_name(s), (unsigned)n);
    if (fmq_scheme_has_scales(s)) {
        size_t nb = fmq_quant_nblocks(s, n, b);
        if (sclen != 4 * nb)
            return codec__fail(c, FMQ_ERR_SHAPE,
                               "%s.sc: %zu bytes, expected %zu for %zu "
                               "blocks of %u", kp, sclen, 4 * nb, nb,
                               (unsigned)b);
    }
    return FMQ_OK;
}

static fmq_err codec__tensor_verdict(codec__ctx *c, const char *kp, fmq_err e)
{
    if (e == FMQ_ERR_NONFINITE)
        return codec__fail(c, e, "%s: NaN or infinity in the %s", kp,
                           "values or scales");
    return codec__fail(c, e, "%s: %s", kp, fmq_strerror(e));
}

static fmq_err codec__tensor_decode(codec__ctx *c, const char *kp,
                                    const msgpack_object *o, fmq_qtensor *q,
                                    unsigned mask)
{
    char sub[CODEC__PATH];
    fmq_err e;
    if (o->type != MSGPACK_OBJECT_MAP)
        return codec__fail(c, FMQ_ERR_WRONG_TYPE, "%s: expected map, got %s",
                           kp, codec__tname(o));
    const msgpack_object *os = codec__find(o, "s"), *on = codec__find(o, "n"),
                         *ob = codec__find(o, "b"), *oc = codec__find(o, "c"),
                         *osc = codec__find(o, "sc");
    fmq_scheme s;
    codec__join(sub, kp, "s");
    if (!os)
        return codec__fail(c, FMQ_ERR_MISSING_KEY, "%s: required key missing", sub);
    if ((e = codec__scheme(c, sub, os, &s)))
        return e;
    if (!(mask & (1u << s)))
        return codec__fail(c, FMQ_ERR_BAD_VALUE,
                           "%s: %s not allowed here (f32 or f16 only)", sub,
                           fmq_scheme_name(s));
    bool scaled = fmq_scheme_has_scales(s);

    uint64_t n, b = 0;
    codec__join(sub, kp, "n");
    if (!on)
        return codec__fail(c, FMQ_ERR_MISSING_KEY, "%s: required key missing", sub);
    if ((e = codec__uint(c, sub, on, &n)))
        return e;
    if (n == 0)
        return codec__fail(c, FMQ_ERR_BAD_VALUE, "%s: must be >= 1", sub);
    if (n > c->lim.max_n)
        return codec__fail(c, FMQ_ERR_TOO_LARGE, "%s: %llu exceeds the limit "
                           "of %u", sub, (unsigned long long)n, c->lim.max_n);
    if (scaled) {
        codec__join(sub, kp, "b");
        if (!ob)
            return codec__fail(c, FMQ_ERR_MISSING_KEY,
                               "%s: required for %s", sub, fmq_scheme_name(s));
        if ((e = codec__uint(c, sub, ob, &b)) || (e = codec__block(c, sub, b)))
            return e;
    }
    codec__join(sub, kp, "c");
    if (!oc)
        return codec__fail(c, FMQ_ERR_MISSING_KEY, "%s: required key missing", sub);
    if (oc->type != MSGPACK_OBJECT_BIN)
        return codec__fail(c, FMQ_ERR_WRONG_TYPE, "%s: expected bin, got %s",
                           sub, codec__tname(oc));
    const uint8_t *scp = NULL;
    size_t sclen = 0;
    if (scaled) {
        codec__join(sub, kp, "sc");
        if (!osc)
            return codec__fail(c, FMQ_ERR_MISSING_KEY,
                               "%s: required for %s", sub, fmq_scheme_name(s));
        if (osc->type != MSGPACK_OBJECT_BIN)
            return codec__fail(c, FMQ_ERR_WRONG_TYPE,
                               "%s: expected bin, got %s", sub,
                               codec__tname(osc));
        scp = (const uint8_t *)osc->via.bin.ptr;
        sclen = osc->via.bin.size;
    }
    if ((e = codec__tensor_shape(c, kp, s, (uint32_t)n, (uint32_t)b,
                                 oc->via.bin.size, sclen)))
        return e;
    e = fmq_qtensor_view(q, s, (uint32_t)b, (uint32_t)n,
                         (const uint8_t *)oc->via.bin.ptr, oc->via.bin.size,
                         scp, sclen);
    if (e) {
        memset(q, 0, sizeof *q);
        return codec__tensor_verdict(c, kp, e);
    }
    return FMQ_OK;
}

static fmq_err codec__tensor_check(codec__ctx *c, const char *kp,
                                   const fmq_qtensor *q, unsigned mask)
{
    char sub[CODEC__PATH];
    codec__join(sub, kp, "s");
    if ((unsigned)q->scheme >= FMQ_Q__COUNT)
        return codec__fail(c, FMQ_ERR_SCHEME, "%s: unknown scheme", sub);
    if (!(mask & (1u << q->scheme)))
        return codec__fail(c, FMQ_ERR_BAD_VALUE,
                           "%s: %s not allowed here (f32 or f16 only)", sub,
                           fmq_scheme_name(q->scheme));
    codec__join(sub, kp, "n");
    if (q->n == 0)
        return codec__fail(c, FMQ_ERR_BAD_VALUE, "%s: must be >= 1", sub);
    if (q->n > FMQ_QUANT_N_MAX)
        return codec__fail(c, FMQ_ERR_TOO_LARGE, "%s: %u exceeds the limit "
                           "of %u", sub, (unsigned)q->n, FMQ_QUANT_N_MAX);
    bool scaled = fmq_scheme_has_scales(q->scheme);
    fmq_err e;
    if (scaled) {
        codec__join(sub, kp, "b");
        if ((e = codec__block(c, sub, q->block)))
            return e;
    }
    if ((q->codes_len && !q->codes) || (scaled && q->scales_len && !q->scales))
        return codec__fail(c, FMQ_ERR_BAD_VALUE, "%s: NULL data", kp);
    if ((e = codec__tensor_shape(c, kp, q->scheme, q->n, q->block,
                                 q->codes_len, scaled ? q->scales_len : 0)))
        return e;
    fmq_qtensor t = *q;
    if (!scaled) {
        /* f32/f16 carry neither block nor scales on the wire. */
        t.block = 0;
        t.scales = NULL;
        t.scales_len = 0;
    }
    if ((e = fmq_quant_check(&t)))
        return codec__tensor_verdict(c, kp, e);
    return FMQ_OK;
}

static void codec__tensor_encode(codec__enc *e, const fmq_qtensor *q)
{
    bool scaled = fmq_scheme_has_scales(q->scheme);
    enc_map(e, scaled ? 5 : 3);
    enc_key(e, "s");
    enc_cstr(e, fmq_scheme_name(q->scheme));
    enc_key(e, "n");
    enc_u64(e, q->n);
    if (scaled) {
        enc_key(e, "b");
        enc_u64(e, q->block);
    }
    enc_key(e, "c");
    enc_bin(e, q->codes, q->codes_len);
    if (scaled) {
        enc_key(e, "sc");
        enc_bin(e, q->scales, q->scales_len);
    }
}

static bool cu_always(const codec__field *f, const void *base)
{
    (void)f;
    (void)base;
    return true;
}

/* The scheme mask of a tensor field travels in f->min. */
static fmq_err cu_tensor_decode(codec__ctx *c, const char *kp,
                                const codec__field *f, const msgpack_object *o,
                                void *base)
{
    return codec__tensor_decode(c, kp, o, P_(base, f, fmq_qtensor),
                                (unsigned)f->min);
}
static fmq_err cu_tensor_check(codec__ctx *c, const char *kp,
                               const codec__field *f, const void *base)
{
    return codec__tensor_check(c, kp, CP_(base, f, fmq_qtensor),
                               (unsigned)f->min);
}
static void cu_tensor_encode(codec__enc *e, const codec__field *f,
                             const void *base)
{
    codec__tensor_encode(e, CP_(base, f, fmq_qtensor));
}
static const codec__custom cu_tensor = {cu_always, cu_tensor_decode,
                                        cu_tensor_check, cu_tensor_encode};

/* ------------------------------------------------------------------ uq
 * {"s": scheme, "b": block (scaled only; ignored otherwise), "sr": bool,
 * "ef": bool}. sr is written only when true, ef only when false. */

static fmq_err codec__uq_decode(codec__ctx *c, const char *kp,
                                const msgpack_object *o, fmq_uq *uq)
{
    char sub[CODEC__PATH];
    fmq_err e;
    if (o->type != MSGPACK_OBJECT_MAP)
        return codec__fail(c, FMQ_ERR_WRONG_TYPE, "%s: expected map, got %s",
                           kp, codec__tname(o));
    const msgpack_object *os = codec__find(o, "s"), *ob = codec__find(o, "b"),
                         *osr = codec__find(o, "sr"),
                         *oef = codec__find(o, "ef");
    codec__join(sub, kp, "s");
    if (!os)
        return codec__fail(c, FMQ_ERR_MISSING_KEY, "%s: required key missing", sub);
    if ((e = codec__scheme(c, sub, os, &uq->scheme)))
        return e;
    uq->block = 0;
    if (fmq_scheme_has_scales(uq->scheme)) {
        uint64_t b;
        codec__join(sub, kp, "b");
        if (!ob)
            return codec__fail(c, FMQ_ERR_MISSING_KEY, "%s: required for %s",
                               sub, fmq_scheme_name(uq->scheme));
        if ((e = codec__uint(c, sub, ob, &b)) || (e = codec__block(c, sub, b)))
            return e;
        uq->block = (uint32_t)b;
    }
    uq->stochastic = false;
    uq->error_feedback = true;
    const msgpack_object *ob2[2] = {osr, oef};
    bool *dst[2] = {&uq->stochastic, &uq->error_feedback};
    const char *names[2] = {"sr", "ef"};
    for (int i = 0; i < 2; i++) {
        if (!ob2[i])
            continue;
        if (ob2[i]->type != MSGPACK_OBJECT_BOOLEAN) {
            codec__join(sub, kp, names[i]);
            return codec__fail(c, FMQ_ERR_WRONG_TYPE,
                               "%s: expected bool, got %s", sub,
                               codec__tname(ob2[i]));
        }
        *dst[i] = ob2[i]->via.boolean;
    }
    return FMQ_OK;
}

static fmq_err codec__uq_check(codec__ctx *c, const char *kp, const fmq_uq *uq)
{
    char sub[CODEC__PATH];
    codec__join(sub, kp, "s");
    if ((unsigned)uq->scheme >= FMQ_Q__COUNT)
        return codec__fail(c, FMQ_ERR_SCHEME, "%s: unknown scheme", sub);
    if (fmq_scheme_has_scales(uq->scheme)) {
        codec__join(sub, kp, "b");
        return codec__block(c, sub, uq->block);
    }
    return FMQ_OK;
}

static void codec__uq_encode(codec__enc *e, const fmq_uq *uq)
{
    bool scaled = fmq_scheme_has_scales(uq->scheme);
    enc_map(e, 1 + scaled + uq->stochastic + !uq->error_feedback);
    enc_key(e, "s");
    enc_cstr(e, fmq_scheme_name(uq->scheme));
    if (scaled) {
        enc_key(e, "b");
        enc_u64(e, uq->block);
    }
    if (uq->stochastic) {
        enc_key(e, "sr");
        enc_bool(e, true);
    }
    if (!uq->error_feedback) {
        enc_key(e, "ef");
        enc_bool(e, false);
    }
}

static fmq_err cu_uq_decode(codec__ctx *c, const char *kp,
                            const codec__field *f, const msgpack_object *o,
                            void *base)
{
    return codec__uq_decode(c, kp, o, P_(base, f, fmq_uq));
}
static fmq_err cu_uq_check(codec__ctx *c, const char *kp,
                           const codec__field *f, const void *base)
{
    return codec__uq_check(c, kp, CP_(base, f, fmq_uq));
}
static void cu_uq_encode(codec__enc *e, const codec__field *f, const void *base)
{
    codec__uq_encode(e, CP_(base, f, fmq_uq));
}
static const codec__custom cu_uq = {cu_always, cu_uq_decode, cu_uq_check,
                                    cu_uq_encode};

/* ------------------------------------------------------- list helpers */

/* Index of a name that appears twice in n structs of `stride` bytes with a
 * NUL-terminated name at their start, or -1; -2 on out of memory. */
static int codec__strp_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}
static long codec__names_dup(const void *arr, size_t stride, size_t n)
{
    const char *base = arr;
    if (n <= 16) {
        for (size_t i = 1; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (strcmp(base + i * stride, base + j * stride) == 0)
                    return (long)i;
        return -1;
    }
    const char **v = fmq_alloc_array(n, sizeof *v);
    if (!v)
        return -2;
    for (size_t i = 0; i < n; i++)
        v[i] = base + i * stride;
    qsort(v, n, sizeof *v, codec__strp_cmp);
    long dup = -1;
    for (size_t i = 1; i < n && dup < 0; i++)
        if (strcmp(v[i - 1], v[i]) == 0)
            dup = (long)((v[i] - base) / (ptrdiff_t)stride);
    fmq_free(v);
    return dup;
}

static fmq_err codec__check_dups(codec__ctx *c, const char *kp,
                                 const void *arr, size_t stride, size_t n)
{
    long d = codec__names_dup(arr, stride, n);
    if (d == -2)
        return codec__fail(c, FMQ_ERR_NOMEM, "%s: out of memory", kp);
    if (d >= 0)
        return codec__fail(c, FMQ_ERR_DUP_KEY, "%s: entry %ld repeats a key",
                           kp, d);
    return FMQ_OK;
}

/* Allocate n zeroed entries for a list field whose pointer is at off and
 * count (uint32_t) at off2. The count is set up front so _fini frees the
 * list also when a later entry fails. */
static fmq_err codec__list_alloc(codec__ctx *c, const char *kp,
                                 const codec__field *f, void *base,
                                 uint32_t n, size_t size)
{
    void **pp = P_(base, f, void *);
    uint32_t *np = (uint32_t *)((char *)base + f->off2);
    *pp = NULL;
    *np = 0;
    if (n == 0)
        return FMQ_OK;
    if (!(*pp = fmq_calloc(n, size)))
        return codec__fail(c, FMQ_ERR_NOMEM, "%s: out of memory", kp);
    *np = n;
    return FMQ_OK;
}

static uint32_t codec__list_n(const codec__field *f, const void *base)
{
    return *(const uint32_t *)((const char *)base + f->off2);
}

static bool cu_list_present(const codec__field *f, const void *base)
{
    return codec__list_n(f, base) > 0;
}

/* ----------------------------------------------------------------- uqc */

static fmq_err cu_uqc_decode(codec__ctx *c, const char *kp,
                             const codec__field *f, const msgpack_object *o,
                             void *base)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return codec__fail(c, FMQ_ERR_WRONG_TYPE, "%s: expected map, got %s",
                           kp, codec__tname(o));
    uint32_t n = o->via.map.size;
    if (n > c->lim.max_classes)
        return codec__fail(c, FMQ_ERR_TOO_LARGE, "%s: %u classes, limit %u",
                           kp, (unsigned)n, c->lim.max_classes);
    fmq_err e = codec__list_alloc(c, kp, f, base, n, sizeof(fmq_uq_class));
    if (e)
        return e;
    fmq_uq_class *cl = *P_(base, f, fmq_uq_class *);
    for (uint32_t i = 0; i < n; i++) {
        char sub[CODEC__PATH];
        snprintf(sub, sizeof sub, "%s key %u", kp, (unsigned)i);
        if ((e = codec__str(c, sub, &o->via.map.ptr[i].key, cl[i].cls,
                            FMQ_ID_MAX, false)))
            return e;
        codec__join(sub, kp, cl[i].cls);
        if ((e = codec__uq_decode(c, sub, &o->via.map.ptr[i].val, &cl[i].uq)))
            return e;
    }
    return FMQ_OK;
}

static fmq_err cu_uqc_check(codec__ctx *c, const char *kp,
                            const codec__field *f, const void *base)
{
    uint32_t n = codec__list_n(f, base);
    const fmq_uq_class *cl = *CP_(base, f, fmq_uq_class *const);
    fmq_codec_limits d = fmq_codec_limits_default();
    if (n > d.max_classes)
        return codec__fail(c, FMQ_ERR_TOO_LARGE, "%s: %u classes, limit %u",
                           kp, (unsigned)n, d.max_classes);
    if (!cl)
        return codec__fail(c, FMQ_ERR_BAD_VALUE, "%s: NULL list", kp);
    for (uint32_t i = 0; i < n; i++) {
        char sub[CODEC__PATH];
        snprintf(sub, sizeof sub, "%s key %u", kp, (unsigned)i);
        fmq_err e = codec__check_cstr(c, sub, cl[i].cls, FMQ_ID_MAX, false);
        if (e)
            return e;
        codec__join(sub, kp, cl[i].cls);
        if ((e = codec__uq_check(c, sub, &cl[i].uq)))
            return e;
    }
    return codec__check_dups(c, kp, cl, sizeof *cl, n);
}

static void cu_uqc_encode(codec__enc *e, const codec__field *f,
                          const void *base)
{
    uint32_t n = codec__list_n(f, base);
    const fmq_uq_class *cl = *CP_(base, f, fmq_uq_class *const);
    enc_map(e, n);
    for (uint32_t i = 0; i < n; i++) {
        enc_cstr(e, cl[i].cls);
        codec__uq_encode(e, &cl[i].uq);
    }
}
static const codec__custom cu_uqc = {cu_list_present, cu_uqc_decode,
                                     cu_uqc_check, cu_uqc_encode};

/* ------------------------------------------------------------- cohort
 * {"f": float64, "s": uint} or {"ids": [id, ...]}; both or neither is
 * BAD_VALUE. An empty id list is a valid (empty) cohort. */

static fmq_err cu_co_decode(codec__ctx *c, const char *kp,
                            const codec__field *f, const msgpack_object *o,
                            void *base)
{
    char sub[CODEC__PATH];
    fmq_cohort *co = P_(base, f, fmq_cohort);
    fmq_err e;
    if (o->type != MSGPACK_OBJECT_MAP)
        return codec__fail(c, FMQ_ERR_WRONG_TYPE, "%s: expected map, got %s",
                           kp, codec__tname(o));
    const msgpack_object *of = codec__find(o, "f"), *os = codec__find(o, "s"),
                         *oids = codec__find(o, "ids");
    if (!of == !oids)
        return codec__fail(c, FMQ_ERR_BAD_VALUE,
                           "%s: needs exactly one of \"f\" and \"ids\"", kp);
    if (of) {
        double d = 0;
        codec__join(sub, kp, "f");
        if ((e = codec__num(c, sub, of, &d)) ||
            (e = codec__check_float(c, sub, d, R_FRAC, false)))
            return e;
        codec__join(sub, kp, "s");
        if (!os)
            return codec__fail(c, FMQ_ERR_MISSING_KEY,
                               "%s: required with \"f\"", sub);
        uint64_t seed;
        if ((e = codec__uint(c, sub, os, &seed)))
            return e;
        co->kind = FMQ_COHORT_FRACTION;
        co->fraction = d;
        co->seed = seed;
        return FMQ_OK;
    }
    codec__join(sub, kp, "ids");
    if (oids->type != MSGPACK_OBJECT_ARRAY)
        return codec__fail(c, FMQ_ERR_WRONG_TYPE, "%s: expected array, got %s",
                           sub, codec__tname(oids));
    uint32_t n = oids->via.array.size;
    if (n > c->lim.max_ids)
        return codec__fail(c, FMQ_ERR_TOO_LARGE, "%s: %u ids, limit %u", sub,
                           (unsigned)n, c->lim.max_ids);
    co->kind = FMQ_COHORT_IDS;
    co->nids = 0;
    co->ids = NULL;
    if (n && !(co->ids = fmq_calloc(n, sizeof *co->ids)))
        return codec__fail(c, FMQ_ERR_NOMEM, "%s: out of memory", sub);
    co->nids = n;
    for (uint32_t i = 0; i < n; i++) {
        char el[CODEC__PATH + 16];
        if (snprintf(el, sizeof el, "%s[%u]", sub, (unsigned)i) >= (int)sizeof el)
            el[sizeof el - 1] = '\0';
        if ((e = codec__str(c, el, &oids->via.array.ptr[i], co->ids[i],
                            FMQ_ID_MAX, false)))
            return e;
    }
    return FMQ_OK;
}

static bool cu_co_present(const codec__field *f, const void *base)
{
    return CP_(base, f, fmq_cohort)->kind != FMQ_COHORT_ALL;
}

static fmq_err cu_co_check(codec__ctx *c, const char *kp,
                           const codec__field *f, const void *base)
{
    char sub[CODEC__PATH];
    const fmq_cohort *co = CP_(base, f, fmq_cohort);
    if (co->kind == FMQ_COHORT_FRACTION) {
        codec__join(sub, kp, "f");
        return codec__check_float(c, sub, co->fraction, R_FRAC, false);
    }
    if (co->kind != FMQ_COHORT_IDS)
        return codec__fail(c, FMQ_ERR_BAD_VALUE, "%s: unknown cohort kind %d",
                           kp, (int)co->kind);
    codec__join(sub, kp, "ids");
    uint32_t max = fmq_codec_limits_default().max_ids;
    if (co->nids > max)
        return codec__fail(c, FMQ_ERR_TOO_LARGE, "%s: %u ids, limit %u", sub,
                           (unsigned)co->nids, (unsigned)max);
    if (co->nids && !co->ids)
        return codec__fail(c, FMQ_ERR_BAD_VALUE, "%s: NULL list", sub);
    for (uint32_t i = 0; i < co->nids; i++) {
        char el[CODEC__PATH + 16];
        if (snprintf(el, sizeof el, "%s[%u]", sub, (unsigned)i) >= (int)sizeof el)
            el[sizeof el - 1] = '\0';
        fmq_err e = codec__check_cstr(c, el, co->ids[i], FMQ_ID_MAX, false);
        if (e)
            return e;
    }
    return FMQ_OK;
}

static void cu_co_encode(codec__enc *e, const codec__field *f,
                         const void *base)
{
    const fmq_cohort *co = CP_(base, f, fmq_cohort);
    if (co->kind == FMQ_COHORT_FRACTION) {
        enc_map(e, 2);
        enc_key(e, "f");
        enc_ok(e, msgpack_pack_double(&e->pk, co->fraction));
        enc_key(e, "s");
        enc_u64(e, co->seed);
        return;
    }
    enc_map(e, 1);
    enc_key(e, "ids");
    enc_ok(e, msgpack_pack_array(&e->pk, co->nids));
    for (uint32_t i = 0; i < co->nids; i++)
        enc_cstr(e, co->ids[i]);
}
static const codec__custom cu_co = {cu_co_present, cu_co_decode, cu_co_check,
                                    cu_co_encode};

/* ------------------------------------------------------- rej and fg */

static fmq_err cu_rej_decode(codec__ctx *c, const char *kp,
                             const codec__field *f, const msgpack_object *o,
                             void *base)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return codec__fail(c, FMQ_ERR_WRONG_TYPE, "%s: expected map, got %s",
                           kp, codec__tname(o));
    uint32_t n = o->via.map.size;
    fmq_err e = codec__list_alloc(c, kp, f, base, n, sizeof(fmq_reason_count));
    if (e)
        return e;
    fmq_reason_count *r = *P_(base, f, fmq_reason_count *);
    for (uint32_t i = 0; i < n; i++) {
        char sub[CODEC__PATH];
        snprintf(sub, sizeof sub, "%s key %u", kp, (unsigned)i);
        if ((e = codec__str(c, sub, &o->via.map.ptr[i].key, r[i].reason,
                            FMQ_NAME_MAX, false)))
            return e;
        codec__join(sub, kp, r[i].reason);
        if ((e = codec__uint(c, sub, &o->via.map.ptr[i].val, &r[i].count)))
            return e;
    }
    return FMQ_OK;
}

static fmq_err cu_rej_check(codec__ctx *c, const char *kp,
                            const codec__field *f, const void *base)
{
    uint32_t n = codec__list_n(f, base);
    const fmq_reason_count *r = *CP_(base, f, fmq_reason_count *const);
    uint32_t max = fmq_codec_limits_default().max_count;
    if (n > max)
        return codec__fail(c, FMQ_ERR_TOO_LARGE, "%s: %u entries, limit %u",
                           kp, (unsigned)n, (unsigned)max);
    if (!r)
        return codec__fail(c, FMQ_ERR_BAD_VALUE, "%s: NULL list", kp);
    for (uint32_t i = 0; i < n; i++) {
        char sub[CODEC__PATH];
        snprintf(sub, sizeof sub, "%s key %u", kp, (unsigned)i);
        fmq_err e = codec__check_cstr(c, sub, r[i].reason, FMQ_NAME_MAX, false);
        if (e)
            return e;
    }
    return codec__check_dups(c, kp, r, sizeof *r, n);
}

static void cu_rej_encode(codec__enc *e, const codec__field *f,
                          const void *base)
{
    uint32_t n = codec__list_n(f, base);
    const fmq_reason_count *r = *CP_(base, f, fmq_reason_count *const);
    enc_map(e, n);
    for (uint32_t i = 0; i < n; i++) {
        enc_cstr(e, r[i].reason);
        enc_u64(e, r[i].count);
    }
}
static const codec__custom cu_rej = {cu_list_present, cu_rej_decode,
                                     cu_rej_check, cu_rej_encode};

static const codec__field flag_fields[] = {
    {.key = "dev", .kind = K_ID, .opt = O_REQ, FLD(fmq_flag, device)},
    {.key = "why", .kind = K_NAME, .opt = O_REQ, FLD(fmq_flag, why)},
};
#define NFIELDS(a) (sizeof(a) / sizeof((a)[0]))

static fmq_err cu_fg_decode(codec__ctx *c, const char *kp,
                            const codec__field *f, const msgpack_object *o,
                            void *base)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return codec__fail(c, FMQ_ERR_WRONG_TYPE, "%s: expected array, got %s",
                           kp, codec__tname(o));
    uint32_t n = o->via.array.size;
    fmq_err e = codec__list_alloc(c, kp, f, base, n, sizeof(fmq_flag));
    if (e)
        return e;
    fmq_flag *fl = *P_(base, f, fmq_flag *);
    for (uint32_t i = 0; i < n; i++) {
        char sub[CODEC__PATH];
        const msgpack_object *el = &o->via.array.ptr[i];
        snprintf(sub, sizeof sub, "%s[%u]", kp, (unsigned)i);
        if (el->type != MSGPACK_OBJECT_MAP)
            return codec__fail(c, FMQ_ERR_WRONG_TYPE,
                               "%s: expected map, got %s", sub,
                               codec__tname(el));
        if ((e = codec__decode_fields(c, sub, flag_fields,
                                      NFIELDS(flag_fields), el, &fl[i])))
            return e;
    }
    return FMQ_OK;
}

static fmq_err cu_fg_check(codec__ctx *c, const char *kp,
                           const codec__field *f, const void *base)
{
    uint32_t n = codec__list_n(f, base);
    const fmq_flag *fl = *CP_(base, f, fmq_flag *const);
    uint32_t max = fmq_codec_limits_default().max_count;
    if (n > max)
        return codec__fail(c, FMQ_ERR_TOO_LARGE, "%s: %u entries, limit %u",
                           kp, (unsigned)n, (unsigned)max);
    if (!fl)
        return codec__fail(c, FMQ_ERR_BAD_VALUE, "%s: NULL list", kp);
    for (uint32_t i = 0; i < n; i++) {
        char sub[CODEC__PATH];
        snprintf(sub, sizeof sub, "%s[%u]", kp, (unsigned)i);
        fmq_err e = codec__check_fields(c, sub, flag_fields,
                                        NFIELDS(flag_fields), &fl[i]);
        if (e)
            return e;
    }
    return FMQ_OK;
}

static void cu_fg_encode(codec__enc *e, const codec__field *f,
                         const void *base)
{
    uint32_t n = codec__list_n(f, base);
    const fmq_flag *fl = *CP_(base, f, fmq_flag *const);
    enc_ok(e, msgpack_pack_array(&e->pk, n));
    for (uint32_t i = 0; i < n; i++) {
        enc_map(e, NFIELDS(flag_fields));
        codec__encode_fields(e, flag_fields, NFIELDS(flag_fields), &fl[i]);
    }
}
static const codec__custom cu_fg = {cu_list_present, cu_fg_decode,
                                    cu_fg_check, cu_fg_encode};

/* ------------------------------------------------------ message tables
 * One row per key, in the order of the struct and of SPEC.md §6–7; the
 * encoder writes them in this order after "v" and "t". */

#define ID_(k, T, m, o) {.key = k, .kind = K_ID, .opt = o, FLD(T, m)}
#define U64_(k, T, m, o, lo) \
    {.key = k, .kind = K_U64, .opt = o, FLD(T, m), .min = lo, .max = UINT64_MAX}
#define F32_(k, T, m, o, r) {.key = k, .kind = K_F32, .opt = o, .range = r, FLD(T, m)}
#define F64_(k, T, m, o, r) {.key = k, .kind = K_F64, .opt = o, .range = r, FLD(T, m)}
#define BOOL_(k, T, m, o) {.key = k, .kind = K_BOOL, .opt = o, FLD(T, m)}
#define CU_(k, T, m, o, c, ...) \
    {.key = k, .kind = K_CUSTOM, .opt = o, FLD(T, m), .cu = &c, __VA_ARGS__}

static const codec__field train_fields[] = {
    {.key = "ep", .kind = K_U32, .opt = O_REQ, FLD(fmq_train_cfg, epochs),
     .min = 1, .max = 1000},
    {.key = "bs", .kind = K_U32, .opt = O_REQ, FLD(fmq_train_cfg, batch),
     .min = 1, .max = 65536},
    F32_("lr", fmq_train_cfg, lr, O_REQ, R_POS),
    F32_("mo", fmq_train_cfg, momentum, O_DEFAULT, R_UNIT),
    F32_("wd", fmq_train_cfg, weight_decay, O_DEFAULT, R_NONNEG),
    F32_("mu", fmq_train_cfg, mu, O_DEFAULT, R_NONNEG),
};

/* The keys a global and a delta share (SPEC §6.6), written once so that
 * a key added to the global reaches the delta too (a decoder skips unknown
 * keys: one left out would read as its default). T is the struct, M(m) the
 * path of the global's member m in T. The two tables put "mv", "bv" and
 * the tensor between these runs, in the order of SPEC §10. */
#define MODEL_KEYS_HEAD_(T, M)                                                \
    ID_("fl", T, M(fleet), O_REQ), U64_("r", T, M(round), O_REQ, 1)
#define MODEL_KEYS_MID_(T, M)                                                 \
    U64_("dl", T, M(deadline_ms), O_REQ, 0),                                  \
    U64_("ts", T, M(ts_ms), O_ABSENT, 0),                                     \
    {.key = "m", .kind = K_SPEC, .opt = O_REQ, FLD(T, M(model))}
#define MODEL_KEYS_TAIL_(T, M)                                                \
    {.key = "tc", .kind = K_MAP, .opt = O_REQ, FLD(T, M(train)),              \
     .sub = train_fields, .nsub = NFIELDS(train_fields)},                     \
    CU_("co", T, M(cohort), O_ABSENT, cu_co),                                 \
    CU_("uq", T, M(uq), O_REQ, cu_uq),                                        \
    CU_("uqc", T, M(classes), O_ABSENT, cu_uqc,                               \
        .off2 = offsetof(T, M(nclasses))),                                    \
    ID_("st", T, M(strategy), O_ABSENT),                                      \
    BOOL_("as", T, M(async), O_DEFAULT),                                      \
    {.key = "ms", .kind = K_U32, .opt = O_DEFAULT, FLD(T, M(max_staleness)),  \
     .max = UINT32_MAX},                                                      \
    BOOL_("gd", T, M(deltas), O_DEFAULT)

#define G_(m) m
static const codec__field global_fields[] = {
    MODEL_KEYS_HEAD_(fmq_msg_global, G_),
    U64_("mv", fmq_msg_global, version, O_REQ, 1),
    MODEL_KEYS_MID_(fmq_msg_global, G_),
    CU_("w", fmq_msg_global, weights, O_REQ, cu_tensor, .min = MASK_WEIGHTS),
    MODEL_KEYS_TAIL_(fmq_msg_global, G_),
};
#undef G_

/* "bv": 1 <= bv < mv. The table reads mv before bv, so the decoder can
 * compare the two at bv's place in the order of SPEC §10. */
static fmq_err codec__bv_check(codec__ctx *c, const char *kp,
                               const fmq_msg_delta *m)
{
    if (m->base < 1 || m->base >= m->g.version)
        return codec__fail(c, FMQ_ERR_BAD_VALUE,
                           "%s: %llu, must be in [1, mv - 1] (mv = %llu)", kp,
                           (unsigned long long)m->base,
                           (unsigned long long)m->g.version);
    return FMQ_OK;
}
static fmq_err cu_bv_decode(codec__ctx *c, const char *kp,
                            const codec__field *f, const msgpack_object *o,
                            void *base)
{
    (void)f;
    fmq_msg_delta *m = base;
    fmq_err e = codec__uint(c, kp, o, &m->base);
    return e ? e : codec__bv_check(c, kp, m);
}
static fmq_err cu_bv_check(codec__ctx *c, const char *kp,
                           const codec__field *f, const void *base)
{
    (void)f;
    return codec__bv_check(c, kp, base);
}
static void cu_bv_encode(codec__enc *e, const codec__field *f,
                         const void *base)
{
    (void)f;
    enc_u64(e, ((const fmq_msg_delta *)base)->base);
}
static const codec__custom cu_bv = {cu_always, cu_bv_decode, cu_bv_check,
                                    cu_bv_encode};

/* A delta carries what a global carries but "w": base version "bv" after
 * "mv", the tensor "d" where a global has "w" (SPEC §6.6). */
#define DG_(m) g.m
static const codec__field delta_fields[] = {
    MODEL_KEYS_HEAD_(fmq_msg_delta, DG_),
    U64_("mv", fmq_msg_delta, DG_(version), O_REQ, 2),
    CU_("bv", fmq_msg_delta, base, O_REQ, cu_bv),
    MODEL_KEYS_MID_(fmq_msg_delta, DG_),
    CU_("d", fmq_msg_delta, delta, O_REQ, cu_tensor, .min = MASK_ALL),
    MODEL_KEYS_TAIL_(fmq_msg_delta, DG_),
};
#undef DG_
#undef MODEL_KEYS_HEAD_
#undef MODEL_KEYS_MID_
#undef MODEL_KEYS_TAIL_

static const codec__field update_fields[] = {
    ID_("fl", fmq_msg_update, fleet, O_REQ),
    ID_("dev", fmq_msg_update, device, O_REQ),
    U64_("r", fmq_msg_update, round, O_REQ, 0),
    U64_("mv", fmq_msg_update, version, O_REQ, 0),
    U64_("n", fmq_msg_update, samples, O_REQ, 1),
    F32_("loss", fmq_msg_update, loss, O_REQ, R_ANY),
    CU_("d", fmq_msg_update, delta, O_REQ, cu_tensor, .min = MASK_ALL),
    U64_("ts", fmq_msg_update, ts_ms, O_ABSENT, 0),
    F32_("tts", fmq_msg_update, train_s, O_ABSENT, R_NONNEG),
    ID_("cls", fmq_msg_update, cls, O_ABSENT),
};

static const codec__field status_fields[] = {
    ID_("fl", fmq_msg_status, fleet, O_REQ),
    ID_("dev", fmq_msg_status, device, O_REQ),
    BOOL_("on", fmq_msg_status, online, O_REQ),
    U64_("mv", fmq_msg_status, version, O_ABSENT, 0),
    U64_("lr", fmq_msg_status, last_round, O_ABSENT, 0),
    U64_("n", fmq_msg_status, samples, O_ABSENT, 0),
    F32_("tts", fmq_msg_status, train_s, O_ABSENT, R_NONNEG),
    U64_("rss", fmq_msg_status, rss_bytes, O_ABSENT, 0),
    F32_("cpu", fmq_msg_status, cpu_s, O_ABSENT, R_NONNEG),
    F32_("norm", fmq_msg_status, norm, O_ABSENT, R_NONNEG),
    F32_("bat", fmq_msg_status, battery_pct, O_ABSENT, R_PCT),
    F32_("temp", fmq_msg_status, temp_c, O_ABSENT, R_ANY),
    U64_("ts", fmq_msg_status, ts_ms, O_ABSENT, 0),
};

static const codec__field metrics_fields[] = {
    ID_("fl", fmq_msg_metrics, fleet, O_REQ),
    U64_("r", fmq_msg_metrics, round, O_REQ, 0),
    U64_("mv", fmq_msg_metrics, version, O_REQ, 0),
    U64_("co", fmq_msg_metrics, cohort, O_REQ, 0),
    U64_("pa", fmq_msg_metrics, participants, O_REQ, 0),
    U64_("late", fmq_msg_metrics, late, O_REQ, 0),
    CU_("rej", fmq_msg_metrics, rejected, O_ABSENT, cu_rej,
        .off2 = offsetof(fmq_msg_metrics, nrejected)),
    F64_("ls", fmq_msg_metrics, loss_mean, O_ABSENT, R_ANY),
    F64_("lsd", fmq_msg_metrics, loss_std, O_ABSENT, R_NONNEG),
    F64_("tl", fmq_msg_metrics, test_loss, O_ABSENT, R_ANY),
    F64_("acc", fmq_msg_metrics, test_acc, O_ABSENT, R_PROB),
    U64_("bi", fmq_msg_metrics, bytes_in, O_REQ, 0),
    U64_("bo", fmq_msg_metrics, bytes_out, O_REQ, 0),
    F64_("sec", fmq_msg_metrics, seconds, O_REQ, R_NONNEG),
    ID_("st", fmq_msg_metrics, strategy, O_ABSENT),
    F64_("dpc", fmq_msg_metrics, dp_clip, O_ABSENT, R_NONNEG),
    F64_("dpz", fmq_msg_metrics, dp_noise, O_ABSENT, R_NONNEG),
    CU_("fg", fmq_msg_metrics, flags, O_ABSENT, cu_fg,
        .off2 = offsetof(fmq_msg_metrics, nflags)),
    U64_("ts", fmq_msg_metrics, ts_ms, O_ABSENT, 0),
};

static const codec__field agg_fields[] = {
    ID_("fl", fmq_msg_agg, fleet, O_REQ),
    BOOL_("on", fmq_msg_agg, online, O_REQ),
    U64_("r", fmq_msg_agg, round, O_ABSENT, 0),
    U64_("mv", fmq_msg_agg, version, O_ABSENT, 0),
    U64_("ts", fmq_msg_agg, ts_ms, O_ABSENT, 0),
};

static const codec__field signed_fields[] = {
    ID_("kid", fmq_msg_signed, kid, O_REQ),
    {.key = "body", .kind = K_BIN, .opt = O_REQ, FLD(fmq_msg_signed, body),
     .off2 = offsetof(fmq_msg_signed, body_len), .min = 1, .max = SIZE_MAX},
    {.key = "sig", .kind = K_FIXBIN, .opt = O_REQ, FLD(fmq_msg_signed, sig),
     .max = FMQ_SIG_LEN},
};

static const codec__field sealed_fields[] = {
    ID_("kid", fmq_msg_sealed, kid, O_REQ),
    U64_("r", fmq_msg_sealed, round, O_REQ, 0),
    {.key = "epk", .kind = K_FIXBIN, .opt = O_REQ, FLD(fmq_msg_sealed, epk),
     .min = 0x04 + 1, .max = FMQ_EPK_LEN},
    {.key = "iv", .kind = K_FIXBIN, .opt = O_REQ, FLD(fmq_msg_sealed, iv),
     .max = FMQ_IV_LEN},
    {.key = "ct", .kind = K_BIN, .opt = O_REQ, FLD(fmq_msg_sealed, ct),
     .off2 = offsetof(fmq_msg_sealed, ct_len), .min = FMQ_TAG_LEN,
     .max = SIZE_MAX},
};

/* ------------------------------------------------------ init and fini */

void fmq_msg_global_init(fmq_msg_global *m)
{
    memset(m, 0, sizeof *m);
    m->ts_ms = FMQ_ABSENT;
    m->uq.error_feedback = true;
    m->cohort.kind = FMQ_COHORT_ALL;
}

void fmq_msg_update_init(fmq_msg_update *m)
{
    memset(m, 0, sizeof *m);
    m->ts_ms = FMQ_ABSENT;
    m->train_s = NAN;
}

void fmq_msg_status_init(fmq_msg_status *m)
{
    memset(m, 0, sizeof *m);
    m->version = m->last_round = m->samples = m->rss_bytes = m->ts_ms =
        FMQ_ABSENT;
    m->train_s = m->cpu_s = m->norm = m->battery_pct = m->temp_c = NAN;
}

void fmq_msg_metrics_init(fmq_msg_metrics *m)
{
    memset(m, 0, sizeof *m);
    m->loss_mean = m->loss_std = m->test_loss = m->test_acc = NAN;
    m->dp_clip = m->dp_noise = NAN;
    m->ts_ms = FMQ_ABSENT;
}

void fmq_msg_agg_init(fmq_msg_agg *m)
{
    memset(m, 0, sizeof *m);
    m->round = m->version = m->ts_ms = FMQ_ABSENT;
}

void fmq_msg_delta_init(fmq_msg_delta *m)
{
    memset(m, 0, sizeof *m);
    fmq_msg_global_init(&m->g);
}

void fmq_msg_delta_fini(fmq_msg_delta *m)
{
    if (!m)
        return;
    fmq_msg_global_fini(&m->g);
    fmq_qtensor_fini(&m->delta);
    fmq_msg_delta_init(m);
}

void fmq_msg_global_fini(fmq_msg_global *m)
{
    if (!m)
        return;
    fmq_free(m->cohort.ids);
    fmq_free(m->classes);
    fmq_qtensor_fini(&m->weights);
    fmq_msg_global_init(m);
}

void fmq_msg_metrics_fini(fmq_msg_metrics *m)
{
    if (!m)
        return;
    fmq_free(m->rejected);
    fmq_free(m->flags);
    fmq_msg_metrics_init(m);
}

/* ------------------------------------------------------ the entry points */

typedef struct codec__msgdef {
    fmq_msg_type type;
    const codec__field *fields;
    size_t nf;
} codec__msgdef;

#define MSGDEF(t, f) {t, f, NFIELDS(f)}
static const codec__msgdef def_global = MSGDEF(FMQ_MSG_GLOBAL, global_fields);
static const codec__msgdef def_update = MSGDEF(FMQ_MSG_UPDATE, update_fields);
static const codec__msgdef def_status = MSGDEF(FMQ_MSG_STATUS, status_fields);
static const codec__msgdef def_metrics = MSGDEF(FMQ_MSG_METRICS, metrics_fields);
static const codec__msgdef def_agg = MSGDEF(FMQ_MSG_AGG, agg_fields);
static const codec__msgdef def_signed = MSGDEF(FMQ_MSG_SIGNED, signed_fields);
static const codec__msgdef def_sealed = MSGDEF(FMQ_MSG_SEALED, sealed_fields);
static const codec__msgdef def_delta = MSGDEF(FMQ_MSG_DELTA, delta_fields);

/* *out has been initialised by the caller; on error the caller resets it. */
static fmq_err codec__decode(const codec__msgdef *md, const uint8_t *buf,
                             size_t len, const fmq_codec_limits *lim,
                             void *out, fmq_codec_detail *detail)
{
    codec__ctx c;
    codec__ctx_init(&c, lim, detail);
    codec__doc doc;
    fmq_err e = codec__open(&c, buf, len, md->type, &doc);
    if (e)
        return e;
    e = codec__decode_fields(&c, "", md->fields, md->nf, doc.root, out);
    msgpack_unpacked_destroy(&doc.up);
    return e;
}

static fmq_err codec__encode(const codec__msgdef *md, const void *m,
                             fmq_buf *out)
{
    if (!m || !out)
        return FMQ_ERR_INVAL;
    fmq_codec_detail detail;
    codec__ctx c;
    codec__ctx_init(&c, NULL, &detail);
    fmq_err e = codec__check_fields(&c, "", md->fields, md->nf, m);
    if (e) {
        fmq_log_debug("codec: refusing to encode %s: %s",
                      fmq_msg_type_name(md->type), detail.what);
        return e;
    }
    size_t start = out->len;
    codec__enc enc = {.bad = false};
    msgpack_packer_init(&enc.pk, out, codec__write);
    enc_map(&enc, 2 + codec__count_present(md->fields, md->nf, m));
    enc_key(&enc, "v");
    enc_u64(&enc, FMQ_PROTO_VERSION);
    enc_key(&enc, "t");
    enc_cstr(&enc, fmq_msg_type_name(md->type));
    codec__encode_fields(&enc, md->fields, md->nf, m);
    if (enc.bad) {
        out->len = start;
        return FMQ_ERR_NOMEM;
    }
    if (out->len - start > c.lim.max_msg) {
        /* A receiver with default limits would refuse it. */
        out->len = start;
        return FMQ_ERR_TOO_LARGE;
    }
    return FMQ_OK;
}

fmq_err fmq_codec_decode_global(const uint8_t *buf, size_t len,
                                const fmq_codec_limits *lim,
                                fmq_msg_global *out, fmq_codec_detail *detail)
{
    if (!out)
        return FMQ_ERR_INVAL;
    fmq_msg_global_init(out);
    fmq_err e = codec__decode(&def_global, buf, len, lim, out, detail);
    if (e)
        fmq_msg_global_fini(out);
    return e;
}

fmq_err fmq_codec_decode_update(const uint8_t *buf, size_t len,
                                const fmq_codec_limits *lim,
                                fmq_msg_update *out, fmq_codec_detail *detail)
{
    if (!out)
        return FMQ_ERR_INVAL;
    fmq_msg_update_init(out);
    fmq_err e = codec__decode(&def_update, buf, len, lim, out, detail);
    if (e)
        fmq_msg_update_init(out);
    return e;
}

fmq_err fmq_codec_decode_status(const uint8_t *buf, size_t len,
                                const fmq_codec_limits *lim,
                                fmq_msg_status *out, fmq_codec_detail *detail)
{
    if (!out)
        return FMQ_ERR_INVAL;
    fmq_msg_status_init(out);
    fmq_err e = codec__decode(&def_status, buf, len, lim, out, detail);
    if (e)
        fmq_msg_status_init(out);
    return e;
}

fmq_err fmq_codec_decode_metrics(const uint8_t *buf, size_t len,
                                 const fmq_codec_limits *lim,
                                 fmq_msg_metrics *out,
                                 fmq_codec_detail *detail)
{
    if (!out)
        return FMQ_ERR_INVAL;
    fmq_msg_metrics_init(out);
    fmq_err e = codec__decode(&def_metrics, buf, len, lim, out, detail);
    if (e)
        fmq_msg_metrics_fini(out);
    return e;
}

fmq_err fmq_codec_decode_agg(const uint8_t *buf, size_t len,
                             const fmq_codec_limits *lim, fmq_msg_agg *out,
                             fmq_codec_detail *detail)
{
    if (!out)
        return FMQ_ERR_INVAL;
    fmq_msg_agg_init(out);
    fmq_err e = codec__decode(&def_agg, buf, len, lim, out, detail);
    if (e)
        fmq_msg_agg_init(out);
    return e;
}

fmq_err fmq_codec_decode_signed(const uint8_t *buf, size_t len,
                                const fmq_codec_limits *lim,
                                fmq_msg_signed *out, fmq_codec_detail *detail)
{
    if (!out)
        return FMQ_ERR_INVAL;
    memset(out, 0, sizeof *out);
    fmq_err e = codec__decode(&def_signed, buf, len, lim, out, detail);
    if (e)
        memset(out, 0, sizeof *out);
    return e;
}

fmq_err fmq_codec_decode_sealed(const uint8_t *buf, size_t len,
                                const fmq_codec_limits *lim,
                                fmq_msg_sealed *out, fmq_codec_detail *detail)
{
    if (!out)
        return FMQ_ERR_INVAL;
    memset(out, 0, sizeof *out);
    fmq_err e = codec__decode(&def_sealed, buf, len, lim, out, detail);
    if (e)
        memset(out, 0, sizeof *out);
    return e;
}

fmq_err fmq_codec_decode_delta(const uint8_t *buf, size_t len,
                               const fmq_codec_limits *lim,
                               fmq_msg_delta *out, fmq_codec_detail *detail)
{
    if (!out)
        return FMQ_ERR_INVAL;
    fmq_msg_delta_init(out);
    fmq_err e = codec__decode(&def_delta, buf, len, lim, out, detail);
    if (e)
        fmq_msg_delta_fini(out);
    return e;
}

fmq_err fmq_codec_encode_delta(const fmq_msg_delta *m, fmq_buf *out)
{
    return codec__encode(&def_delta, m, out);
}

fmq_err fmq_codec_encode_global(const fmq_msg_global *m, fmq_buf *out)
{
    return codec__encode(&def_global, m, out);
}
fmq_err fmq_codec_encode_update(const fmq_msg_update *m, fmq_buf *out)
{
    return codec__encode(&def_update, m, out);
}
fmq_err fmq_codec_encode_status(const fmq_msg_status *m, fmq_buf *out)
{
    return codec__encode(&def_status, m, out);
}
fmq_err fmq_codec_encode_metrics(const fmq_msg_metrics *m, fmq_buf *out)
{
    return codec__encode(&def_metrics, m, out);
}
fmq_err fmq_codec_encode_agg(const fmq_msg_agg *m, fmq_buf *out)
{
    return codec__encode(&def_agg, m, out);
}
fmq_err fmq_codec_encode_signed(const fmq_msg_signed *m, fmq_buf *out)
{
    return codec__encode(&def_signed, m, out);
}
fmq_err fmq_codec_encode_sealed(const fmq_msg_sealed *m, fmq_buf *out)
{
    return codec__encode(&def_sealed, m, out);
}
