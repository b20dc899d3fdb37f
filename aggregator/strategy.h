/*
 * strategy.h — aggregation strategies (ARCHITECTURE.md §6), as ops tables.
 *
 * The split follows Flower's: *configure* decides what a round asks of the
 * devices (it fills the round instructions of the global message: the
 * strategy name `st`, FedProx's `mu`, the asynchronous flag `as`, and may
 * change the cohort rule), *aggregate* reduces what came back: begin a
 * round, add one validated update, finish with the new weights. A strategy
 * is one file in aggregator/strategy/ defining one fmq_strategy_ops and one
 * line in the table of strategy.c; fmq_strategy_new finds it by name,
 * allocates its private state (state_size bytes, zeroed), and checks its
 * required entries once.
 *
 * The core around the ops (this header's fmq_strategy) also does what every
 * strategy needs and none should repeat:
 *   - the norm bound (before any strategy sees an update): updates whose L2
 *     norm exceeds a fixed bound, or a multiple of the median norm, are
 *     rejected (FMQ_ERR_NORM) or scaled down to the bound (clip). The
 *     median is the current round's for strategies that keep the round's
 *     updates (applied when the round finishes, before the strategy reduces
 *     them), and the previous round's for streaming strategies (round 1 has
 *     none, so no median bound in it);
 *   - keeping the round's updates for strategies that need all of them
 *     (median, trimmed mean, Krum): quantized as received (codes and scales,
 *     ~P bytes per q8 update, not 4P floats), read back by coordinate block
 *     with fmq_strategy_batch_decode;
 *   - checkpoints: fmq_strategy_save / _load write and read a versioned
 *     section (the strategy's name, the kept updates, the norm history and
 *     the strategy's own state through its save/load entries) that the
 *     aggregator's checkpoint (agg.c) carries.
 *
 * Nothing here blocks or does I/O; nothing is thread-safe (the aggregator
 * is one loop). Ownership: everything passed in is borrowed for the call.
 */
#ifndef FMQ_STRATEGY_H
#define FMQ_STRATEGY_H

#include "blob.h"
#include "codec.h"
#include "quant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Hyper-parameters from the configuration (fedmq-aggregator's keys of the
 * same names). NaN, or 0 for buffer_k and dp_seed, means "not given": the
 * strategy uses its default (README.md, "Aggregation strategies"). A
 * strategy refuses (FMQ_ERR_CONFIG) a value it would use that is out of
 * range; values it does not use are ignored. */
typedef struct fmq_strategy_hparams {
    double server_lr;       /* η: fedavgm, fedadam, fedyogi, fedadagrad,
                               fedbuff, dp-fedavg */
    double beta1, beta2;    /* fedadam, fedyogi, fedadagrad (beta1) */
    double tau_adapt;       /* τ, the adaptivity (ε) of fedadam, fedyogi,
                               fedadagrad */
    double server_momentum; /* fedavgm */
    double mu;              /* fedprox: sent to the devices as tc.mu */
    uint32_t buffer_k;      /* fedbuff: updates per new version */
    double dp_clip;         /* dp-fedavg: per-update L2 clip S */
    double dp_noise;        /* dp-fedavg: noise multiplier z (std z·S) */
    uint64_t dp_seed;       /* dp-fedavg: noise generator seed; 0 = random */
} fmq_strategy_hparams;

/* All "not given". */
fmq_strategy_hparams fmq_strategy_hparams_none(void);

typedef enum { FMQ_NORM_REJECT = 0, FMQ_NORM_CLIP } fmq_norm_action;

typedef struct fmq_strategy_cfg {
    const char *spec; /* "name" or "name:args"; NULL = "fedavg" */
    fmq_strategy_hparams hp;
    uint32_t P;             /* parameters */
    uint64_t round;         /* the first round (1 for a fresh start) */
    uint32_t cohort_size;   /* updates that close a synchronous round */
    uint32_t quorum;        /* fewest a synchronous round closes with */
    uint32_t max_staleness; /* fedbuff: versions an update may be behind */
    double norm_bound;      /* fixed L2 bound; 0 = off */
    double norm_median;     /* bound = this × the median norm; 0 = off;
                               >= 1 when set */
    fmq_norm_action norm_action;
} fmq_strategy_cfg;

/* One update as the core hands it to a strategy: checked (length P, every
 * value finite) and within the norm bound (clipped if so configured). */
typedef struct fmq_strategy_update {
    const char *device;
    const fmq_qtensor *delta; // (P,) local - global
    uint64_t samples;         /* the device's training samples, >= 1 */
    uint64_t staleness;       /* τ: rounds (fedbuff: versions) behind the
                                 current one; 0 = on time */
    double norm;              /* L2 norm of delta (after clipping) */
} fmq_strategy_update;

/* The round's kept updates (strategies with keeps_updates). */
typedef struct fmq_strategy_batch fmq_strategy_batch;

uint32_t fmq_strategy_batch_count(const fmq_strategy_batch *b);
/* Update i's device, samples, staleness, norm; delta is NULL (read the
 * values with fmq_strategy_batch_decode). */
void fmq_strategy_batch_info(const fmq_strategy_batch *b, uint32_t i,
                             fmq_strategy_update *out);
/* out[0..count) = update i's values [start, start+count), clipping
 * applied. FMQ_ERR_RANGE for i or a range out of bounds. */
FMQ_NODISCARD fmq_err fmq_strategy_batch_decode(const fmq_strategy_batch *b,
                                                uint32_t i, uint32_t start,
                                                uint32_t count, float *out);

/* What a finished round did, for the metrics and the progress line. */
typedef struct fmq_strategy_result {
    uint32_t used;               /* updates that went into the new weights */
    uint32_t clipped;            /* scaled down by the norm bound this round */
    uint32_t norm_rejected;      /* rejected `norm` when the round finished (the
                                    median bound of kept updates) */
    uint32_t norm_rejected_late; /* of those, late (staleness > 0) */
    double dp_clip, dp_noise;    /* dp-fedavg's S and z, else NaN */
    char note[128];              /* the strategy's phrase for the progress line,
                                    e.g. "krum picked dev-0003"; may be empty */
} fmq_strategy_result;

/* ------------------------------------------------------------- ops table
 * Entries marked required must be set; fmq_strategy_new checks them once
 * (FMQ_ERR_CONFIG, logged, for a table that misses one). None blocks. */
typedef struct fmq_strategy_ops {
    const char *name;   /* an id (SPEC §3.3): sent as the global's `st` */
    const char *usage;  /* its parameters, for --help: "trimmed-mean:BETA" */
    size_t state_size;  /* private state, allocated zeroed by the core */
    bool keeps_updates; /* the core keeps the round's updates and hands
                           them to finish as a batch */
    bool async;         /* no synchronous rounds: ready() says when a new
                           version is made (FedBuff); the core then closes
                           "rounds" that count versions */
    uint32_t state_version; /* format of what save writes (0 = no save) */

    /* Required. Called once, first: parse args (the text after ':', NULL
     * when there is none) and cfg->hp, allocate. FMQ_ERR_CONFIG (after
     * logging the reason) for parameters it refuses. fini is called after
     * a failed init too. */
    fmq_err (*init)(void *st, const fmq_strategy_cfg *cfg, const char *args);
    /* Optional. Frees what init allocated. */
    void (*fini)(void *st);
    /* Optional. The global of a round about to be published, filled by the
     * core from the configuration (g->strategy is already this name): set
     * the round's instructions. Deterministic: the same state gives the
     * same global (it is signed and republished). */
    void (*configure)(void *st, fmq_msg_global *g);
    /* Optional. A round begins (after init for the first one, after each
     * finish); not called again after load, whose state is mid-round. */
    void (*begin)(void *st, uint64_t round);
    /* Required unless keeps_updates (then never called: the core keeps
     * the update). One update of this round; on error the update is not
     * counted and the state is as before. */
    fmq_err (*add)(void *st, const fmq_strategy_update *u);
    /* Required when async: true when a new version should be made now. */
    bool (*ready)(const void *st);
    /* Required. Reduce the round into w (P,), the current weights, which
     * become the new ones. batch holds the kept updates (NULL unless
     * keeps_updates). Reset for the next round. FMQ_ERR_STATE when there
     * is nothing it can aggregate (w untouched; the core keeps the model). */
    fmq_err (*finish)(void *st, uint64_t round, const fmq_strategy_batch *batch,
                      float *w, fmq_strategy_result *res);
    /* Optional, both or neither: what must survive a crash (server
     * optimizer moments, a FedBuff buffer, a running sum). load gets the
     * version save wrote and refuses others (FMQ_ERR_DATA). */
    void (*save)(const void *st, fmq_wr *w);
    fmq_err (*load)(void *st, fmq_rd *r, uint32_t version);
} fmq_strategy_ops;

/* The table: ops by name (NULL when unknown), and the i-th (NULL past the
 * end) for listings. */
const fmq_strategy_ops *fmq_strategy_find(const char *name);
const fmq_strategy_ops *fmq_strategy_at(unsigned i);

/* ----------------------------------------------------------------- core */
typedef struct fmq_strategy fmq_strategy;

/* Looks the spec's name up, checks the ops, allocates the state, inits it
 * and begins cfg->round. FMQ_ERR_CONFIG (logged) for an unknown name, bad
 * parameters or a bad norm setting; FMQ_ERR_NOMEM. *out NULL on error. */
FMQ_NODISCARD fmq_err fmq_strategy_new(const fmq_strategy_cfg *cfg,
                                       fmq_strategy **out);
/* The same for ops that are not in the table (a product's own strategy,
 * or a test's), with args as the text after ':' (NULL: none); cfg->spec
 * is only what fmq_strategy_spec reports (NULL: the ops' name). The ops
 * table is borrowed and must outlive the strategy. */
FMQ_NODISCARD fmq_err fmq_strategy_new_with(const fmq_strategy_ops *ops,
                                            const fmq_strategy_cfg *cfg,
                                            const char *args,
                                            fmq_strategy **out);
void fmq_strategy_destroy(fmq_strategy **sp);

const fmq_strategy_ops *fmq_strategy_ops_of(const fmq_strategy *s);
const char *fmq_strategy_name(const fmq_strategy *s);
/* The spec as configured ("krum:2"). */
const char *fmq_strategy_spec(const fmq_strategy *s);
bool fmq_strategy_async(const fmq_strategy *s);
/* Updates added this round. */
uint32_t fmq_strategy_count(const fmq_strategy *s);
/* async: the strategy wants a new version; otherwise false. */
bool fmq_strategy_ready(const fmq_strategy *s);

/* The L2 bound an update arriving now is held to (the fixed one, and the
 * previous round's median multiple for a streaming strategy); 0 = none. */
double fmq_strategy_norm_bound(const fmq_strategy *s);

/* Sets g->strategy to the name, then lets the strategy configure g. */
void fmq_strategy_configure(fmq_strategy *s, fmq_msg_global *g);

/* The checks before anything else happens to an update: FMQ_ERR_MODEL for
 * a length other than P, FMQ_ERR_NONFINITE when its norm is not finite,
 * FMQ_ERR_NORM over the bound with norm_action reject (fixed bound, or the
 * previous round's median for streaming strategies). *norm = its L2 norm.
 * Changes nothing. */
FMQ_NODISCARD fmq_err fmq_strategy_check(const fmq_strategy *s,
                                         const fmq_qtensor *delta,
                                         double *norm);
/* Adds an update that fmq_strategy_check accepted (u->norm is what it
 * gave): clipped when over the bound with norm_action clip, then kept or
 * handed to the strategy's add. Errors of the strategy, FMQ_ERR_NOMEM; on
 * error nothing changed. */
FMQ_NODISCARD fmq_err fmq_strategy_add(fmq_strategy *s,
                                       const fmq_strategy_update *u);
/* Closes the round: the median bound of kept updates, the strategy's
 * finish into w (P,), then the next round (round + 1) begins. FMQ_ERR_STATE
 * when nothing could be aggregated (w untouched; the next round begins
 * anyway). FMQ_ERR_NOMEM: the round's state is unspecified (destroy s and
 * resume from the checkpoint). */
FMQ_NODISCARD fmq_err fmq_strategy_finish(fmq_strategy *s, uint64_t round,
                                          float *w, fmq_strategy_result *res);

/* The checkpoint section (appended to w; w remembers errors). */
void fmq_strategy_save(const fmq_strategy *s, fmq_wr *w);
/* Reads a section written by fmq_strategy_save: FMQ_ERR_DATA (logged) when
 * it is for another strategy, another P, a version this build does not
 * read, or truncated. On error the state is unspecified: destroy s. */
FMQ_NODISCARD fmq_err fmq_strategy_load(fmq_strategy *s, fmq_rd *r);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_STRATEGY_H */
