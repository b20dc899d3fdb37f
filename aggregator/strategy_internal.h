/*
 * strategy_internal.h — what the strategy files in aggregator/strategy/
 * share: the ops tables the table in strategy.c lists, parameter parsing,
 * the FedAvg weight, the coordinate-wise reduction over kept updates, and
 * the server-optimizer machinery of fedavgm/fedadam/fedyogi/fedadagrad.
 * Not for use outside aggregator/.
 */
#ifndef FMQ_STRATEGY_INTERNAL_H
#define FMQ_STRATEGY_INTERNAL_H

#include "fedavg.h"
#include "strategy.h"

/* One line each in strategy.c's table. */
extern const fmq_strategy_ops fmq_strategy__fedavg;
extern const fmq_strategy_ops fmq_strategy__fedprox;
extern const fmq_strategy_ops fmq_strategy__fedavgm;
extern const fmq_strategy_ops fmq_strategy__fedadam;
extern const fmq_strategy_ops fmq_strategy__fedyogi;
extern const fmq_strategy_ops fmq_strategy__fedadagrad;
extern const fmq_strategy_ops fmq_strategy__fedbuff;
extern const fmq_strategy_ops fmq_strategy__median;
extern const fmq_strategy_ops fmq_strategy__trimmed_mean;
extern const fmq_strategy_ops fmq_strategy__krum;
extern const fmq_strategy_ops fmq_strategy__multi_krum;
extern const fmq_strategy_ops fmq_strategy__dp_fedavg;

/* A hyper-parameter: the given value, or def when it is NaN (not given).
 * Then checks lo <= v <= hi (lo_open / hi_open: strict); out of range is
 * logged with the key's name and gives FMQ_ERR_CONFIG. */
FMQ_NODISCARD fmq_err fmq_strategy__hparam(const char *strategy,
                                           const char *key, double given,
                                           double def, double lo, bool lo_open,
                                           double hi, bool hi_open,
                                           double *out);
/* A decimal number / unsigned integer that is all of s (no trailing
 * text). false when it is not. */
bool fmq_strategy__parse_double(const char *s, double *out);
bool fmq_strategy__parse_u32(const char *s, uint32_t *out);

/* The FedAvg weight of an update: its samples, times FedBuff's staleness
 * factor 1/sqrt(1 + τ) when it is late (Nguyen et al., AISTATS 2022). */
double fmq_strategy__weight(const fmq_strategy_update *u);

/* The fedavg state (fedavg.c), which fedprox and the server optimizers
 * average with: a sample-weighted streaming mean (common/fedavg.h). Its
 * checkpoint: f64 weight | u32 count | f32 sum[P]; agg.c builds the same
 * bytes from a checkpoint written before strategies (FMQAGG02). */
FMQ_NODISCARD fmq_err fmq_strategy__mean_add(fmq_fedavg *fa,
                                             const fmq_strategy_update *u);
void fmq_strategy__mean_save(const fmq_fedavg *fa, fmq_wr *w);
FMQ_NODISCARD fmq_err fmq_strategy__mean_load(fmq_fedavg *fa, fmq_rd *r);

/* fedavg's ops, for a strategy whose state begins with an fmq_fedavg
 * (fedprox): the mean's fini, add, finish (w += the mean, then reset),
 * save and load (version 1). */
void fmq_strategy__fedavg_fini(void *st);
FMQ_NODISCARD fmq_err fmq_strategy__fedavg_add(void *st,
                                               const fmq_strategy_update *u);
FMQ_NODISCARD fmq_err fmq_strategy__fedavg_finish(
    void *st, uint64_t round, const fmq_strategy_batch *batch, float *w,
    fmq_strategy_result *res);
void fmq_strategy__fedavg_save(const void *st, fmq_wr *w);
FMQ_NODISCARD fmq_err fmq_strategy__fedavg_load(void *st, fmq_rd *r,
                                                uint32_t version);

/* Coordinate-wise reduction of the kept updates: for each coordinate i,
 * vals[0..n) holds update 0..n-1's value of i (the batch's order) and
 * w[i] += fn(vals, n, arg). fn may reorder vals. Decodes one block of
 * coordinates of every update at a time (n × FMQ_STRATEGY__CHUNK floats of
 * scratch). */
#define FMQ_STRATEGY__CHUNK 1024u
typedef float (*fmq_strategy__coord_fn)(float *vals, uint32_t n, void *arg);
FMQ_NODISCARD fmq_err fmq_strategy__reduce_coords(const fmq_strategy_batch *b,
                                                  uint32_t P, float *w,
                                                  fmq_strategy__coord_fn fn,
                                                  void *arg);

/* Sorts v[0..n) ascending, -0 before +0 (a total order on finite values:
 * the result does not depend on the input's order). */
void fmq_strategy__sort_floats(float *v, uint32_t n);

/* ------------------------------------------------------ server optimizers
 * Reddi et al., ICLR 2021, "Adaptive Federated Optimization", Algorithm 2:
 * the round's sample-weighted average delta Δ is a pseudo-gradient;
 *   m = β1·m + (1 − β1)·Δ
 *   v = v + Δ²                                  (fedadagrad)
 *   v = v − (1 − β2)·Δ²·sign(v − Δ²)            (fedyogi)
 *   v = β2·v + (1 − β2)·Δ²                      (fedadam)
 *   w = w + η·m / (√v + τ)
 * with m = 0 and v = τ² at the start (the paper's v_{-1} >= τ²), no bias
 * correction. fedavgm is server momentum (Hsu et al. 2019, the FedAvgM of
 * Reddi et al.): m = β·m + Δ, w = w + η·m. */
typedef enum {
    FMQ_FEDOPT_AVGM = 0,
    FMQ_FEDOPT_ADAGRAD,
    FMQ_FEDOPT_YOGI,
    FMQ_FEDOPT_ADAM
} fmq_fedopt_kind;

typedef struct fmq_fedopt {
    fmq_fedopt_kind kind;
    fmq_fedavg fa; /* the round's average */
    double lr, beta1, beta2, tau, momentum;
    float *m, *v;   // (P,) each; v unused by fedavgm
    float *delta;   // (P,) scratch: the round's Δ
    uint64_t steps; /* rounds applied */
} fmq_fedopt;

/* Allocates for kind with the given (already defaulted and checked)
 * hyper-parameters. */
FMQ_NODISCARD fmq_err fmq_fedopt__init(fmq_fedopt *o, fmq_fedopt_kind kind,
                                       uint32_t P, double lr, double beta1,
                                       double beta2, double tau,
                                       double momentum);
/* The init of fedadagrad, fedyogi and fedadam: no ':' arguments;
 * server_lr (default lr_default), beta1 (0.9), beta2 (0.99, not for
 * fedadagrad) and tau_adapt (1e-3) from cfg, checked and logged under
 * name; then fmq_fedopt__init. */
FMQ_NODISCARD fmq_err fmq_fedopt__init_adaptive(
    void *st, const fmq_strategy_cfg *cfg, const char *args, const char *name,
    fmq_fedopt_kind kind, double lr_default);
void fmq_fedopt__fini(void *st);
FMQ_NODISCARD fmq_err fmq_fedopt__add(void *st, const fmq_strategy_update *u);
FMQ_NODISCARD fmq_err fmq_fedopt__finish(void *st, uint64_t round,
                                         const fmq_strategy_batch *batch,
                                         float *w, fmq_strategy_result *res);
void fmq_fedopt__save(const void *st, fmq_wr *w);
FMQ_NODISCARD fmq_err fmq_fedopt__load(void *st, fmq_rd *r, uint32_t version);

#endif /* FMQ_STRATEGY_INTERNAL_H */
