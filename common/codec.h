/*
 * codec.h — MessagePack encoding and bounded decoding of every fedmq
 * message (proto/SPEC.md is the normative description; key names, types
 * and limits below match its tables).
 *
 * Decoding is in two passes. First a bounded walker reads the whole buffer
 * without allocating: every array/map count and str/bin length is checked
 * against the bytes that remain (an element takes at least one byte) and
 * against fmq_codec_limits, nesting is limited, and the top object must end
 * exactly at the end of the buffer. Only then does msgpack-c unpack it, so
 * the memory msgpack-c uses is bounded by a small multiple of the message
 * size (msgpack-c alone would allocate gigabytes for a 5-byte header).
 *
 * Every decode error is a specific fmq_err (EMPTY, TRUNCATED, MALFORMED,
 * TRAILING, TOO_DEEP, TOO_LARGE, NOT_MAP, BAD_KEY, DUP_KEY, MISSING_KEY,
 * WRONG_TYPE, BAD_VALUE, VERSION, WRONG_MSG, SCHEME, SHAPE, NONFINITE) and,
 * when the caller passes a fmq_codec_detail, a sentence naming the key
 * ("w.n: expected a positive integer"). Unknown keys are ignored; an
 * unknown major version "v" is refused (FMQ_ERR_VERSION).
 *
 * Ownership: a decoded message borrows from the input buffer — tensors are
 * zero-copy views of the bin payloads — so the buffer must outlive it.
 * Strings are copied into fixed arrays; variable lists (cohort ids, flags,
 * per-class schemes, rejection reasons) are allocated and freed by the
 * message's _fini. Decoders fully initialise *out, also on error (then
 * _fini is a no-op-safe call). Encoders append to an fmq_buf and leave it
 * as it was on error.
 *
 * Numbers: integer fields accept any MessagePack integer in range; float
 * fields accept float32, float64 or an integer. Negative values in unsigned
 * fields are BAD_VALUE. Floats that the spec says are finite are checked
 * (NONFINITE).
 */
#ifndef FMQ_CODEC_H
#define FMQ_CODEC_H

#include "fmq.h"
#include "quant.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FMQ_PROTO_VERSION 1u

/* Identifiers (fleet, device, key id, model spec, strategy, class): 1..64
 * bytes of [A-Za-z0-9._-] ("model spec" additionally ':' and ','). */
#define FMQ_ID_MAX 64
/* Reasons and other short names. */
#define FMQ_NAME_MAX 31

typedef enum {
    FMQ_MSG_UNKNOWN = 0,
    FMQ_MSG_GLOBAL,  /* "global"  — global model + round instructions */
    FMQ_MSG_UPDATE,  /* "update"  — a device's quantized delta */
    FMQ_MSG_STATUS,  /* "status"  — a device's report */
    FMQ_MSG_METRICS, /* "metrics" — the aggregator's per-round metrics */
    FMQ_MSG_AGG,     /* "agg"     — the aggregator's status (and will) */
    FMQ_MSG_SIGNED,  /* "signed"  — envelope: body + ECDSA signature */
    FMQ_MSG_SEALED,  /* "sealed"  — envelope: ECDH + AES-GCM ciphertext */
    FMQ_MSG_DELTA,   /* "delta"   — a new global as a quantized delta from
                        the version before it (instructions, no weights) */
    FMQ_MSG__COUNT
} fmq_msg_type;

const char *fmq_msg_type_name(fmq_msg_type t); /* "global", ... */

/* Limits applied while decoding. fmq_codec_limits_default() gives the
 * values in SPEC.md §4; a device may lower them. */
typedef struct fmq_codec_limits {
    size_t max_msg;       /* whole message, bytes (default 64 MiB) */
    uint32_t max_n;       /* tensor length P (default FMQ_QUANT_N_MAX) */
    uint32_t max_count;   /* any array/map count (default 65536) */
    uint32_t max_depth;   /* nesting depth (default 8) */
    uint32_t max_ids;     /* cohort id list length (default 10000) */
    uint32_t max_classes; /* per-class schemes (default 16) */
} fmq_codec_limits;

fmq_codec_limits fmq_codec_limits_default(void);

/* Optional explanation of a decode error. */
typedef struct fmq_codec_detail {
    char what[160]; /* e.g. "d.c: 812 bytes, expected 1024 for q8 n=1024" */
} fmq_codec_detail;

/* ---------------------------------------------------------- shared parts */

/* Update quantization instructions ("uq" map). */
typedef struct fmq_uq {
    fmq_scheme scheme; /* "s" required */
    uint32_t block;    /* "b" required for q8/q4/q1 */
    bool stochastic;   /* "sr" optional, default false */
    bool error_feedback; /* "ef" optional, default true */
} fmq_uq;

/* One device class with its own scheme ("uqc" map: class -> uq). */
typedef struct fmq_uq_class {
    char cls[FMQ_ID_MAX + 1];
    fmq_uq uq;
} fmq_uq_class;

/* Training configuration ("tc" map). */
typedef struct fmq_train_cfg {
    uint32_t epochs;    /* "ep" required, 1..1000 */
    uint32_t batch;     /* "bs" required, 1..65536 */
    float lr;           /* "lr" required, > 0, finite */
    float momentum;     /* "mo" optional, [0, 1), default 0 */
    float weight_decay; /* "wd" optional, >= 0, default 0 */
    float mu;           /* "mu" optional, FedProx, >= 0, default 0 */
} fmq_train_cfg;

/* Cohort rule ("co" map). Absent: every device trains. By fraction: device
 * d trains in round r iff the first 8 bytes of SHA-256(seed as u64 BE ||
 * r as u64 BE || d) read as a big-endian u64, divided by 2^64, are below
 * fraction (common/crypto.h computes it). By list: exactly the ids. */
typedef enum {
    FMQ_COHORT_ALL = 0,
    FMQ_COHORT_FRACTION,
    FMQ_COHORT_IDS
} fmq_cohort_kind;

typedef struct fmq_cohort {
    fmq_cohort_kind kind;
    double fraction; /* "f", (0, 1] */
    uint64_t seed;   /* "s" */
    char (*ids)[FMQ_ID_MAX + 1]; /* "ids", allocated, nids entries */
    uint32_t nids;
} fmq_cohort;

/* ------------------------------------------------------------- messages */

/* "global": published retained on fedmq/<fleet>/model/global. */
typedef struct fmq_msg_global {
    char fleet[FMQ_ID_MAX + 1];  /* "fl" required */
    uint64_t round;              /* "r"  required */
    uint64_t version;            /* "mv" required, model version */
    uint64_t deadline_ms;        /* "dl" required, Unix ms; 0 = none */
    uint64_t ts_ms;              /* "ts" optional, publish time */
    char model[FMQ_ID_MAX + 1];  /* "m"  required, model spec "mlp:128" */
    fmq_qtensor weights;         /* "w"  required, f32 or f16 */
    fmq_train_cfg train;         /* "tc" required */
    fmq_cohort cohort;           /* "co" optional */
    fmq_uq uq;                   /* "uq" required */
    fmq_uq_class *classes;       /* "uqc" optional, allocated */
    uint32_t nclasses;
    char strategy[FMQ_ID_MAX + 1]; /* "st" optional, informational */
    bool async;                  /* "as" optional: buffered asynchronous
                                    (FedBuff) — any device, any time */
    uint32_t max_staleness;      /* "ms" optional, rounds, default 0 */
    bool deltas;                 /* "gd" optional: each new version also
                                    goes out as a "delta" on
                                    fedmq/<fleet>/model/delta; default
                                    false */
} fmq_msg_global;

/* "delta": published QoS 1, not retained, on fedmq/<fleet>/model/delta
 * (SPEC §6.6): the model of version g.version as a quantized delta from
 * version `base`, with the round's instructions. A device that holds
 * version `base` sets w[i] = w[i] + dequant(delta)[i] (float32 addition)
 * and then has, bit for bit, the aggregator's weights of g.version; a
 * device holding another version fetches the retained global. */
typedef struct fmq_msg_delta {
    fmq_msg_global g;  /* every key of a global but "w" (g.weights stays
                          empty: zeroed, never decoded or encoded) */
    uint64_t base;     /* "bv" required, 1 <= bv < mv */
    fmq_qtensor delta; /* "d"  required, any scheme: new - base weights */
} fmq_msg_delta;

/* "update": published QoS 1 on fedmq/<fleet>/update/<device>. */
typedef struct fmq_msg_update {
    char fleet[FMQ_ID_MAX + 1];  /* "fl"  required */
    char device[FMQ_ID_MAX + 1]; /* "dev" required */
    uint64_t round;              /* "r"   required, round trained for */
    uint64_t version;            /* "mv"  required, base model version */
    uint64_t samples;            /* "n"   required, >= 1 */
    float loss;                  /* "loss" required, finite, mean train loss */
    fmq_qtensor delta;           /* "d"   required, local - global */
    uint64_t ts_ms;              /* "ts"  optional */
    float train_s;               /* "tts" optional, seconds (NaN: absent) */
    char cls[FMQ_ID_MAX + 1];    /* "cls" optional, device class */
} fmq_msg_update;

/* "status": published retained on fedmq/<fleet>/status/<device>; the last
 * will is a status with on = false. Optional floats are NaN and optional
 * integers FMQ_ABSENT when not sent (neither is ever sent on the wire). */
#define FMQ_ABSENT UINT64_MAX
typedef struct fmq_msg_status {
    char fleet[FMQ_ID_MAX + 1];  /* "fl"  required */
    char device[FMQ_ID_MAX + 1]; /* "dev" required */
    bool online;                 /* "on"  required */
    uint64_t version;            /* "mv"  optional, model version held */
    uint64_t last_round;         /* "lr"  optional, last round trained */
    uint64_t samples;            /* "n"   optional */
    float train_s;               /* "tts" optional, seconds */
    uint64_t rss_bytes;          /* "rss" optional, peak RSS */
    float cpu_s;                 /* "cpu" optional, CPU seconds */
    float norm;                  /* "norm" optional, last update L2 norm */
    float battery_pct;           /* "bat" optional, 0..100 */
    float temp_c;                /* "temp" optional, degrees C */
    uint64_t ts_ms;              /* "ts"  optional */
} fmq_msg_status;

typedef struct fmq_reason_count {
    char reason[FMQ_NAME_MAX + 1]; /* an fmq_errname() or "late" etc. */
    uint64_t count;
} fmq_reason_count;

typedef struct fmq_flag {
    char device[FMQ_ID_MAX + 1]; /* "dev" */
    char why[FMQ_NAME_MAX + 1];  /* "why": "stuck", "noisy", "rejected" */
} fmq_flag;

/* "metrics": published retained on fedmq/<fleet>/metrics after each round.
 * Optional floats are NaN when absent (they are never NaN on the wire). */
typedef struct fmq_msg_metrics {
    char fleet[FMQ_ID_MAX + 1];  /* "fl" required */
    uint64_t round;              /* "r"  required, the round just closed */
    uint64_t version;            /* "mv" required, version it produced */
    uint64_t cohort;             /* "co" required, cohort size */
    uint64_t participants;       /* "pa" required, updates counted */
    uint64_t late;               /* "late" required */
    fmq_reason_count *rejected;  /* "rej" optional map reason -> count */
    uint32_t nrejected;
    double loss_mean;            /* "ls"  optional */
    double loss_std;             /* "lsd" optional */
    double test_loss;            /* "tl"  optional */
    double test_acc;             /* "acc" optional, [0, 1] */
    uint64_t bytes_in;           /* "bi"  required */
    uint64_t bytes_out;          /* "bo"  required */
    double seconds;              /* "sec" required, round wall time */
    char strategy[FMQ_ID_MAX + 1]; /* "st" optional */
    double dp_clip;              /* "dpc" optional, DP clip S, >= 0 */
    double dp_noise;             /* "dpz" optional, DP noise multiplier z */
    fmq_flag *flags;             /* "fg" optional array of {dev, why} */
    uint32_t nflags;
    uint64_t ts_ms;              /* "ts" optional */
} fmq_msg_metrics;

/* "agg": retained on fedmq/<fleet>/aggregator/status; its will is on=false */
typedef struct fmq_msg_agg {
    char fleet[FMQ_ID_MAX + 1]; /* "fl" required */
    bool online;                /* "on" required */
    uint64_t round;             /* "r"  optional (FMQ_ABSENT) */
    uint64_t version;           /* "mv" optional (FMQ_ABSENT) */
    uint64_t ts_ms;             /* "ts" optional */
} fmq_msg_agg;

/* "signed": any message, signed. body is the complete encoded inner
 * message; sig is ECDSA P-256 over SHA-256(body), raw r || s. */
#define FMQ_SIG_LEN 64
typedef struct fmq_msg_signed {
    char kid[FMQ_ID_MAX + 1]; /* "kid"  required, signer key id */
    const uint8_t *body;      /* "body" required, borrowed */
    size_t body_len;
    uint8_t sig[FMQ_SIG_LEN]; /* "sig"  required, exactly 64 bytes */
} fmq_msg_signed;

/* "sealed": an update sealed to the aggregator's key. ct is AES-256-GCM
 * ciphertext followed by its 16-byte tag. AAD and key derivation are in
 * SPEC.md §7 (common/trust.h implements them). */
#define FMQ_EPK_LEN 65
#define FMQ_IV_LEN 12
#define FMQ_TAG_LEN 16
typedef struct fmq_msg_sealed {
    char kid[FMQ_ID_MAX + 1]; /* "kid" required, recipient key id */
    uint64_t round;           /* "r"   required, in the AAD */
    uint8_t epk[FMQ_EPK_LEN]; /* "epk" required, uncompressed P-256 point */
    uint8_t iv[FMQ_IV_LEN];   /* "iv"  required */
    const uint8_t *ct;        /* "ct"  required, >= 16 bytes, borrowed */
    size_t ct_len;
} fmq_msg_sealed;

/* ------------------------------------------------------------------ API */

/* Which message is this? Runs the bounded walk, reads "v" and "t".
 * FMQ_OK with *type set, or the decode error. */
FMQ_NODISCARD fmq_err fmq_codec_peek(const uint8_t *buf, size_t len,
                                     const fmq_codec_limits *lim,
                                     fmq_msg_type *type,
                                     fmq_codec_detail *detail);

/* Initialise a message struct with defaults (optional fields absent). */
void fmq_msg_global_init(fmq_msg_global *m);
void fmq_msg_update_init(fmq_msg_update *m);
void fmq_msg_status_init(fmq_msg_status *m);
void fmq_msg_metrics_init(fmq_msg_metrics *m);
void fmq_msg_agg_init(fmq_msg_agg *m);
void fmq_msg_delta_init(fmq_msg_delta *m);

/* Free what decode allocated (lists; not tensors, which are views, unless
 * the caller made them owning). Safe on an initialised struct. */
void fmq_msg_global_fini(fmq_msg_global *m);
void fmq_msg_metrics_fini(fmq_msg_metrics *m);
void fmq_msg_delta_fini(fmq_msg_delta *m); /* also frees an owning delta */

/* Decoders. lim may be NULL (defaults); detail may be NULL. */
FMQ_NODISCARD fmq_err fmq_codec_decode_global(const uint8_t *buf, size_t len,
                                              const fmq_codec_limits *lim,
                                              fmq_msg_global *out,
                                              fmq_codec_detail *detail);
FMQ_NODISCARD fmq_err fmq_codec_decode_update(const uint8_t *buf, size_t len,
                                              const fmq_codec_limits *lim,
                                              fmq_msg_update *out,
                                              fmq_codec_detail *detail);
FMQ_NODISCARD fmq_err fmq_codec_decode_status(const uint8_t *buf, size_t len,
                                              const fmq_codec_limits *lim,
                                              fmq_msg_status *out,
                                              fmq_codec_detail *detail);
FMQ_NODISCARD fmq_err fmq_codec_decode_metrics(const uint8_t *buf, size_t len,
                                               const fmq_codec_limits *lim,
                                               fmq_msg_metrics *out,
                                               fmq_codec_detail *detail);
FMQ_NODISCARD fmq_err fmq_codec_decode_agg(const uint8_t *buf, size_t len,
                                           const fmq_codec_limits *lim,
                                           fmq_msg_agg *out,
                                           fmq_codec_detail *detail);
FMQ_NODISCARD fmq_err fmq_codec_decode_signed(const uint8_t *buf, size_t len,
                                              const fmq_codec_limits *lim,
                                              fmq_msg_signed *out,
                                              fmq_codec_detail *detail);
FMQ_NODISCARD fmq_err fmq_codec_decode_sealed(const uint8_t *buf, size_t len,
                                              const fmq_codec_limits *lim,
                                              fmq_msg_sealed *out,
                                              fmq_codec_detail *detail);
FMQ_NODISCARD fmq_err fmq_codec_decode_delta(const uint8_t *buf, size_t len,
                                             const fmq_codec_limits *lim,
                                             fmq_msg_delta *out,
                                             fmq_codec_detail *detail);

/* Encoders: append the message to out. They check what they write (ids,
 * ranges, tensor shape) and return the same errors a decoder would, so
 * fedmq never sends what it would refuse. */
FMQ_NODISCARD fmq_err fmq_codec_encode_global(const fmq_msg_global *m,
                                              fmq_buf *out);
FMQ_NODISCARD fmq_err fmq_codec_encode_update(const fmq_msg_update *m,
                                              fmq_buf *out);
FMQ_NODISCARD fmq_err fmq_codec_encode_status(const fmq_msg_status *m,
                                              fmq_buf *out);
FMQ_NODISCARD fmq_err fmq_codec_encode_metrics(const fmq_msg_metrics *m,
                                               fmq_buf *out);
FMQ_NODISCARD fmq_err fmq_codec_encode_agg(const fmq_msg_agg *m,
                                           fmq_buf *out);
FMQ_NODISCARD fmq_err fmq_codec_encode_signed(const fmq_msg_signed *m,
                                              fmq_buf *out);
FMQ_NODISCARD fmq_err fmq_codec_encode_sealed(const fmq_msg_sealed *m,
                                              fmq_buf *out);
FMQ_NODISCARD fmq_err fmq_codec_encode_delta(const fmq_msg_delta *m,
                                             fmq_buf *out);

/* true when s is a valid identifier (1..64 of [A-Za-z0-9._-]). */
bool fmq_id_valid(const char *s);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_CODEC_H */
