/*
 * fmq.h — the base of libfedmq: one error vocabulary, logging with one
 * pluggable sink, allocation hooks, a seeded random generator, a growable
 * byte buffer and crash-safe file writes. Every other module in common/,
 * device/ and aggregator/ builds on these; nothing here knows about MQTT,
 * models or messages.
 *
 * Conventions used throughout fedmq (see README.md, "Code habits"):
 *   - Everything that can fail returns fmq_err; FMQ_OK is 0.
 *   - Borrowing is the default. A function that keeps a pointer says so.
 *   - Heap objects: fmq_x_new / fmq_x_destroy(fmq_x **xp) (NULLs *xp, no-op
 *     on NULL). Caller storage: fmq_x_init / fmq_x_fini.
 *   - Library code never exits, aborts or prints; it logs through fmq_log.
 */
#ifndef FMQ_H
#define FMQ_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define FMQ_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define FMQ_NODISCARD __attribute__((warn_unused_result))
#else
#define FMQ_PRINTF(f, a)
#define FMQ_NODISCARD
#endif

/* ---------------------------------------------------------------- errors
 * One table gives the enum and the strings (libuv's UV_ERRNO_MAP). The
 * decoder errors name exactly what was wrong with a message; proto/SPEC.md
 * §9 lists the same reasons with their wire names (the first column,
 * lower-cased, is what metrics and logs call them).
 */
#define FMQ_ERR_MAP(X)                                                        \
    X(OK, "success")                                                          \
    X(NOMEM, "out of memory")                                                 \
    X(INVAL, "invalid argument")                                              \
    X(IO, "input/output error")                                               \
    X(NOTFOUND, "not found")                                                  \
    X(RANGE, "value out of range")                                            \
    X(BUSY, "resource busy or not ready")                                     \
    X(TIMEOUT, "timed out")                                                   \
    X(STATE, "operation not valid in this state")                             \
    /* decoding: each way a message can be wrong */                           \
    X(EMPTY, "empty message")                                                 \
    X(TRUNCATED, "message truncated")                                         \
    X(MALFORMED, "not valid MessagePack")                                     \
    X(TRAILING, "trailing bytes after the message")                           \
    X(TOO_DEEP, "nesting deeper than allowed")                                \
    X(TOO_LARGE, "message, container or bin exceeds a limit")                 \
    X(NOT_MAP, "top level is not a map")                                      \
    X(BAD_KEY, "map key is not a string")                                     \
    X(DUP_KEY, "key appears twice")                                           \
    X(MISSING_KEY, "required key missing")                                    \
    X(WRONG_TYPE, "key has the wrong type")                                   \
    X(BAD_VALUE, "key has a value outside its allowed range")                 \
    X(VERSION, "unknown major format version")                                \
    X(WRONG_MSG, "message is of another type")                                \
    X(SCHEME, "unknown quantization scheme")                                  \
    X(SHAPE, "tensor length does not match its declared size")                \
    X(NONFINITE, "NaN or infinity where a finite number is required")         \
    /* validation and trust */                                                \
    X(FLEET, "message is for another fleet")                                  \
    X(STALE, "model version or round is older than the current one")          \
    X(DUPLICATE, "already counted")                                           \
    X(MODEL, "update does not fit the model")                                 \
    X(NORM, "update norm exceeds the bound")                                  \
    X(SIG, "signature missing or invalid")                                    \
    X(KEY, "unknown or unusable key")                                         \
    X(SEAL, "sealed data failed to open")                                     \
    X(CRYPTO, "cryptographic operation failed")                               \
    X(DATA, "data file is invalid")                                           \
    X(CONFIG, "configuration error")                                          \
    X(MQTT, "MQTT operation failed")                                          \
    X(DENIED, "not authorised")

typedef enum {
#define FMQ__ERR_ENUM(name, str) FMQ_ERR_##name,
    FMQ_ERR_MAP(FMQ__ERR_ENUM)
#undef FMQ__ERR_ENUM
    FMQ_ERR__COUNT
} fmq_err;

#define FMQ_OK FMQ_ERR_OK

/* Human-readable text of an error ("message truncated"). Never NULL. */
const char *fmq_strerror(fmq_err e);
/* Short stable name ("truncated"), used as the reason on the wire, in
 * metrics and in logs. Never NULL. */
const char *fmq_errname(fmq_err e);
/* Inverse of fmq_errname; returns FMQ_ERR__COUNT when unknown. */
fmq_err fmq_err_from_name(const char *name);

/* --------------------------------------------------------------- logging
 * Levels are syslog's numbers. One sink receives every record; the default
 * sink writes "fedmq[<level>]: <message>" lines to stderr (journald reads
 * stderr of services). Records never hold keys, tokens or tensor contents.
 */
enum {
    FMQ_LOG_ERR = 3,
    FMQ_LOG_WARNING = 4,
    FMQ_LOG_NOTICE = 5,
    FMQ_LOG_INFO = 6,
    FMQ_LOG_DEBUG = 7,
};

typedef void (*fmq_log_fn)(void *arg, int level, const char *msg);

/* Replace the sink (NULL restores the default). Not thread-safe against
 * concurrent logging; call it at start-up. */
void fmq_log_set_sink(fmq_log_fn fn, void *arg);
/* Records above this level are dropped before formatting. Default NOTICE,
 * or the value of the environment variable FMQ_LOG_LEVEL (3..7) at the
 * first record. */
void fmq_log_set_level(int level);
int fmq_log_get_level(void);
/* Parse "err", "warning", "notice", "info", "debug" or a number. */
int fmq_log_level_parse(const char *s);
const char *fmq_log_level_name(int level);
void fmq_log(int level, const char *fmt, ...) FMQ_PRINTF(2, 3);
void fmq_vlog(int level, const char *fmt, va_list ap);

#define fmq_log_err(...) fmq_log(FMQ_LOG_ERR, __VA_ARGS__)
#define fmq_log_warn(...) fmq_log(FMQ_LOG_WARNING, __VA_ARGS__)
#define fmq_log_notice(...) fmq_log(FMQ_LOG_NOTICE, __VA_ARGS__)
#define fmq_log_info(...) fmq_log(FMQ_LOG_INFO, __VA_ARGS__)
#define fmq_log_debug(...) fmq_log(FMQ_LOG_DEBUG, __VA_ARGS__)

/* ------------------------------------------------------------ allocation
 * All of fedmq's own allocations go through these, so a product can route
 * them to its allocator and tests can inject out-of-memory. fmq_free(NULL)
 * is a no-op. fmq_calloc and fmq_alloc_array check n*size for overflow.
 */
typedef struct fmq_allocator {
    void *(*malloc_fn)(void *arg, size_t size);
    void *(*realloc_fn)(void *arg, void *ptr, size_t size);
    void (*free_fn)(void *arg, void *ptr);
    void *arg;
} fmq_allocator;

/* Install an allocator (NULL restores libc). Call before any allocation. */
void fmq_set_allocator(const fmq_allocator *a);
void *fmq_malloc(size_t size);
void *fmq_calloc(size_t n, size_t size);
void *fmq_realloc(void *ptr, size_t size);
void *fmq_alloc_array(size_t n, size_t size); /* uninitialised */
void fmq_free(void *ptr);
char *fmq_strdup(const char *s);

/* ------------------------------------------------------------------ rng
 * xoshiro256** (Blackman & Vigna 2018) seeded through splitmix64: fast,
 * reproducible on every platform, not cryptographic. Used for stochastic
 * rounding, initialisation, partitioning and simulation; keys and nonces
 * come from mbedTLS's CTR_DRBG instead.
 */
typedef struct fmq_rng {
    uint64_t s[4];
} fmq_rng;

void fmq_rng_seed(fmq_rng *r, uint64_t seed);
uint64_t fmq_rng_u64(fmq_rng *r);
/* Uniform in [0, 1), 24 random bits. */
float fmq_rng_float(fmq_rng *r);
/* Uniform in [0, 1), 53 random bits. */
double fmq_rng_double(fmq_rng *r);
/* Uniform integer in [0, n), unbiased (Lemire). n > 0. */
uint64_t fmq_rng_below(fmq_rng *r, uint64_t n);
/* Standard normal (Marsaglia polar method). */
double fmq_rng_normal(fmq_rng *r);
/* Gamma(shape, 1), shape > 0 (Marsaglia & Tsang 2000). */
double fmq_rng_gamma(fmq_rng *r, double shape);
/* Fisher–Yates shuffle of n uint32 values. */
void fmq_rng_shuffle_u32(fmq_rng *r, uint32_t *v, size_t n);

/* ---------------------------------------------------------------- bytes
 * A growable byte buffer. fmq_buf_init gives an empty buffer that owns
 * nothing; fmq_buf_fini frees the storage.
 */
typedef struct fmq_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} fmq_buf;

void fmq_buf_init(fmq_buf *b);
void fmq_buf_fini(fmq_buf *b);
void fmq_buf_reset(fmq_buf *b); /* len = 0, keeps the storage */
FMQ_NODISCARD fmq_err fmq_buf_reserve(fmq_buf *b, size_t extra);
FMQ_NODISCARD fmq_err fmq_buf_append(fmq_buf *b, const void *p, size_t n);

/* Little-endian float32 load and store at any alignment. */
static inline float fmq_load_f32le(const uint8_t *p)
{
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                 (uint32_t)p[3] << 24;
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
}
static inline void fmq_store_f32le(uint8_t *p, float f)
{
    uint32_t u;
    __builtin_memcpy(&u, &f, 4);
    p[0] = (uint8_t)u;
    p[1] = (uint8_t)(u >> 8);
    p[2] = (uint8_t)(u >> 16);
    p[3] = (uint8_t)(u >> 24);
}

/* ---------------------------------------------------------------- files
 * Crash-safe replacement of a file: write "<path>.tmp.<pid>", fsync it,
 * rename over <path>, fsync the directory. After a crash at any moment the
 * path holds either the old or the new contents, never a mix.
 */
FMQ_NODISCARD fmq_err fmq_file_write_atomic(const char *path, const void *data,
                                            size_t len);
/* Read a whole file into a new buffer (caller frees *data with fmq_free).
 * Files larger than max_len give FMQ_ERR_TOO_LARGE. FMQ_ERR_NOTFOUND when
 * the file does not exist. */
FMQ_NODISCARD fmq_err fmq_file_read(const char *path, size_t max_len,
                                    uint8_t **data, size_t *len);
/* Create a directory and its parents (mode 0700 for new ones). */
FMQ_NODISCARD fmq_err fmq_mkdir_p(const char *path);

/* ----------------------------------------------------------------- time */
uint64_t fmq_now_ms(void);    /* wall clock, Unix milliseconds */
double fmq_mono_seconds(void); /* monotonic clock, seconds */

#ifdef __cplusplus
}
#endif
#endif /* FMQ_H */
