/*
 * agg.h — the aggregator's core: rounds, validation, strategies,
 * checkpoints.
 *
 * The core does no I/O but its checkpoint file: the program around it
 * (fedmq_aggregator.c) receives MQTT messages and hands each update's
 * bytes to fmq_agg_on_update, publishes what fmq_agg_encode_global and
 * fmq_agg_encode_metrics produce, and calls fmq_agg_tick to learn when a
 * round closes. That keeps every rule testable without a broker.
 *
 * Round life (proto/SPEC.md §9.2): round r publishes model version mv with
 * a deadline. An update is *counted* when it is for (r, mv), from a device
 * not yet counted this round, decodes, fits the model, is finite and within
 * the norm bound (rejected or clipped, as configured); it goes to the
 * aggregation strategy (strategy.h; fedavg, the default, folds it into a
 * sample-weighted streaming average, common/fedavg.h). The round closes
 * when cohort_size updates are counted, or at the deadline if at least
 * `quorum` are; short of the quorum the deadline moves on by round_ms. A
 * *late* update (for an earlier round, staleness tau = r - its round) is
 * dropped, or handed to the strategy with its staleness (fedavg: weight
 * n / sqrt(1 + tau)) while tau <= max_staleness, as configured; a late
 * update is counted once per (device, round) too. An asynchronous strategy
 * (fedbuff) has no deadline and no quorum: a "round" closes when the
 * strategy says (every K updates), round and version count the versions,
 * and an update more than max_staleness versions behind is rejected
 * `stale` (the late policy does not apply); a version's report counts all
 * its updates as participants (and the stale ones also as late, folded),
 * with the cohort = K.
 *
 * Checkpoints: fmq_agg_checkpoint writes the model, round, version,
 * deadline, the set of (device, round) already counted and the strategy's
 * section (its running sums, kept updates, optimizer moments: strategy.h)
 * to <state_dir>/aggregator.ckpt atomically (temp, fsync, rename).
 * fmq_agg_close writes one before it returns, i.e. before the caller
 * publishes the new model. After a crash, fmq_agg_open resumes from the
 * file: versions never go back, and an update that a device sends again
 * (devices resend their update when they see the same global again) is
 * recognised as already counted.
 *
 * Global deltas (cfg.global_delta; gdelta.h, SPEC §6.6): at a close the
 * model moves by exactly the dequantized delta of the strategy's step plus
 * the residual, so fmq_agg_weights, the evaluation, the checkpoint and the
 * global are what devices that add the delta hold; fmq_agg_encode_delta
 * gives that delta for publishing after the global. Per-class update
 * schemes (cfg.uq_classes; classes.h): the global's uqc, and an update
 * that is not what its class was told is rejected `scheme`.
 */
#ifndef FMQ_AGG_H
#define FMQ_AGG_H

#include "codec.h"
#include "data.h"
#include "gdelta.h"
#include "strategy.h"
#include "trust.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { FMQ_AGG_LATE_DROP = 0, FMQ_AGG_LATE_FOLD } fmq_agg_late;

typedef struct fmq_agg_cfg {
    const char *fleet;
    const char *model;                /* spec, e.g. "cnn" */
    uint32_t in_c, in_h, in_w, classes; /* model input (1, 28, 28, 10) */
    uint64_t seed;                    /* model initialisation */
    uint32_t cohort_size;             /* updates that close a round early */
    uint32_t quorum;                  /* fewest a round may close with */
    uint32_t round_ms;                /* deadline after the round starts */
    fmq_agg_late late;
    uint32_t max_staleness;           /* rounds, for FMQ_AGG_LATE_FOLD */
    /* Aggregation (strategy.h; README.md, "Aggregation strategies"). */
    const char *strategy;             /* "name[:params]"; NULL = fedavg */
    const fmq_strategy_hparams *hp;   /* NULL = every default */
    /* The norm bound, before any strategy sees an update: a fixed L2
     * bound, and/or norm_median times the median norm (>= 1; the round's
     * for strategies that keep updates, the previous round's for streaming
     * ones); 0 = off. Over it: rejected `norm`, or scaled down to it. */
    double norm_bound;
    double norm_median;
    fmq_norm_action norm_action;      /* FMQ_NORM_REJECT (0) or _CLIP */
    fmq_train_cfg train;              /* the round instructions (tc) */
    fmq_uq uq;                        /* update quantization */
    /* Per-class update schemes (the global's uqc; classes.h): a device
     * of a listed class sends its entry's scheme, others uq's; an update
     * that is not what its class was told is rejected `scheme`. Copied
     * at open. */
    const fmq_uq_class *uq_classes;
    uint32_t n_uq_classes;
    fmq_scheme global_scheme;         /* w as f32 or f16 */
    /* Global deltas (gdelta.h, SPEC §6.6): with global_delta, each new
     * version is also a delta from the one before, the model moves by
     * exactly its dequantized value, the residual is checkpointed, and
     * globals say gd. */
    bool global_delta;
    fmq_gdelta_cfg gdelta;
    const char *state_dir;            /* checkpoint directory; NULL = none */
    const float *init;                /* (P,) initial weights; NULL = seed */
    /* Trust (proto/SPEC.md §7). Keys are borrowed and must outlive the
     * aggregator; both must hold a private key (else FMQ_ERR_CONFIG).
     *   sign_key      every global goes out in a `signed` envelope with
     *                 this key's kid; NULL = unsigned globals (debugging
     *                 only: devices refuse them unless told not to verify).
     *   seal_key      sealed updates are opened with it; it may be the
     *                 same key as sign_key (fedmq-aggregator's default).
     *   require_seal  a plain (unsealed) update is rejected with reason
     *                 `seal`; needs seal_key. false (--no-seal, debugging):
     *                 plain updates are accepted, and sealed ones are
     *                 still opened when seal_key is set. */
    const fmq_trust_key *sign_key;
    const fmq_trust_key *seal_key;
    bool require_seal;
} fmq_agg_cfg;

typedef struct fmq_agg fmq_agg;

/* Resume from <state_dir>/aggregator.ckpt when it exists (FMQ_ERR_DATA
 * when it is corrupt or for another model, fleet or strategy: never
 * silently start over; a checkpoint of the format before strategies,
 * FMQAGG02, resumes with fedavg), else initialise round 1, version 1.
 * FMQ_ERR_CONFIG for an unknown strategy or parameters it refuses. */
FMQ_NODISCARD fmq_err fmq_agg_open(const fmq_agg_cfg *cfg, fmq_agg **out);
void fmq_agg_destroy(fmq_agg **ap);

uint64_t fmq_agg_round(const fmq_agg *a);
uint64_t fmq_agg_version(const fmq_agg *a);
uint32_t fmq_agg_nparams(const fmq_agg *a);
const float *fmq_agg_weights(const fmq_agg *a);
/* true when the round's state came from a checkpoint (a restart). */
bool fmq_agg_resumed(const fmq_agg *a);

/* The global message of the current round, appended to out: inside a
 * `signed` envelope when cfg.sign_key is set (deterministic signature:
 * the same round, version, weights and timestamp give the same bytes).
 * The first call of a round fixes its deadline at now_ms + round_ms. */
FMQ_NODISCARD fmq_err fmq_agg_encode_global(fmq_agg *a, uint64_t now_ms,
                                            fmq_buf *out);

/* The delta message of the current version (SPEC §6.6: the round's
 * instructions as in fmq_agg_encode_global, same timestamp for the same
 * now_ms, and the delta from the version before), appended to out, signed
 * like the global. Publish it after the global. FMQ_ERR_NOTFOUND when
 * there is none: deltas off, the first version, or a delta that could not
 * be made (devices then fetch the global). */
FMQ_NODISCARD fmq_err fmq_agg_encode_delta(fmq_agg *a, uint64_t now_ms,
                                           fmq_buf *out);

typedef enum {
    FMQ_AGG_COUNTED = 0,
    FMQ_AGG_FOLDED,  /* late, folded in with a staleness weight */
    FMQ_AGG_DROPPED, /* late, dropped by policy or past max staleness */
    FMQ_AGG_REJECTED /* see the returned error */
} fmq_agg_verdict;

/* Validate and fold in one update that arrived on `topic`
 * (fedmq/<fleet>/update/<device>). The device is the topic's; a sealed
 * update is opened for (this fleet, that device, the envelope's round)
 * with cfg.seal_key and its inner fl, dev and r must equal them (SPEC
 * §7.2). Returns FMQ_OK with *v COUNTED, FOLDED or DROPPED, or the reason
 * it was rejected (*v REJECTED): a decode error (of the envelope or of the
 * update inside), FMQ_ERR_SEAL (an unsealed update when sealing is
 * required, an envelope that does not open: moved to another device's
 * topic, r changed, tampered; or an inner r that is not the envelope's),
 * FMQ_ERR_KEY (sealed to another key),
 * FMQ_ERR_FLEET, FMQ_ERR_INVAL (device does not match the topic),
 * FMQ_ERR_STALE (from the future, or, with an asynchronous strategy,
 * more than max_staleness versions behind),
 * FMQ_ERR_DUPLICATE, FMQ_ERR_MODEL (wrong size), FMQ_ERR_NONFINITE,
 * FMQ_ERR_NORM (over the bound with norm_action reject), or an error of
 * the strategy. Every rejection is counted by reason and logged; nothing
 * else changes. Replays: a sealed update replayed unchanged into a later
 * round still opens (its round is bound in) and is a `duplicate` while
 * that (device, round) is remembered (max_staleness + 1 rounds), a late
 * drop after, never counted twice; with its r changed to the current
 * round, or moved to another device's topic, it does not open (`seal`). */
FMQ_NODISCARD fmq_err fmq_agg_on_update(fmq_agg *a, const char *topic,
                                        const uint8_t *buf, size_t len,
                                        uint64_t now_ms, fmq_agg_verdict *v);

/* Account for bytes published (for the metrics). */
void fmq_agg_count_out(fmq_agg *a, uint64_t bytes);

/* true when the round should close now; extends the deadline (and logs)
 * when it has passed without the quorum. */
bool fmq_agg_tick(fmq_agg *a, uint64_t now_ms);

typedef struct fmq_agg_report {
    uint64_t round, version;   /* the round closed, the version it made */
    uint32_t cohort, participants, late, rejected;
    uint32_t late_folded;       /* of late: folded in (the rest dropped) */
    fmq_reason_count reasons[16];
    uint32_t nreasons;
    double loss_mean, loss_std; /* training loss over participants */
    double test_loss, test_acc; /* NaN without a hold-out set */
    uint64_t bytes_in, bytes_out;
    double seconds;
    uint32_t extensions;        /* deadline extensions in this round */
    char strategy[128];         /* the spec, e.g. "krum:2" */
    char strategy_note[128];    /* what it did, e.g. "krum picked dev-3" */
    uint32_t clipped;           /* updates scaled down by the norm bound */
    double dp_clip, dp_noise;   /* dp-fedavg's S and z, else NaN */
    bool kept_model;            /* the strategy aggregated nothing */
    bool no_delta;              /* deltas on, but none for this version
                                   (gdelta.h): devices fetch the global */
} fmq_agg_report;

/* Close the round: the strategy's new weights (a strategy that can make
 * nothing of the round, e.g. Krum with too few updates, keeps the model:
 * rep->kept_model), evaluate on `holdout` (may be NULL), move to round + 1
 * / version + 1, checkpoint. */
FMQ_NODISCARD fmq_err fmq_agg_close(fmq_agg *a, const fmq_dataset *holdout,
                                    uint64_t now_ms, fmq_agg_report *rep);

/* Write the checkpoint now (no-op without a state_dir). */
FMQ_NODISCARD fmq_err fmq_agg_checkpoint(fmq_agg *a);
/* true when something changed since the last checkpoint. */
bool fmq_agg_dirty(const fmq_agg *a);
/* L2 norm of the delta of the last update fmq_agg_on_update judged, after
 * the norm bound's clipping; NaN when it was refused before its norm was
 * known (a decode, seal, stale or duplicate refusal). For the monitor. */
double fmq_agg_last_norm(const fmq_agg *a);

/* The metrics message of a closed round (what fmq_agg_encode_metrics
 * encodes); it borrows rep's reasons, so it needs no fini and must not
 * outlive rep. The caller may add flags before encoding it. */
void fmq_agg_metrics(const fmq_agg *a, const fmq_agg_report *rep,
                     uint64_t now_ms, fmq_msg_metrics *out);
FMQ_NODISCARD fmq_err fmq_agg_encode_metrics(const fmq_agg *a,
                                             const fmq_agg_report *rep,
                                             uint64_t now_ms, fmq_buf *out);

/* One human line per round: round, participants/cohort, late, rejected
 * with reasons, mean train loss, test accuracy, bytes in, seconds, the
 * strategy and what it did. */
void fmq_agg_format_report(const fmq_agg_report *rep, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_AGG_H */
