/*
 * fedavg.h — the sample-weighted streaming average of quantized deltas
 * (McMahan et al. 2017), O(P) memory: each update is folded in as it
 * arrives with fmq_quant_accumulate (no dequantized copy), and the model
 * moves by sum / total weight when the round closes. The aggregator and
 * fedmq-train's in-process reference both use exactly this arithmetic, so
 * a networked run reproduces the reference up to the order of the float
 * additions (updates arrive in any order).
 */
#ifndef FMQ_FEDAVG_H
#define FMQ_FEDAVG_H

#include "quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fmq_fedavg {
    uint32_t P;
    float *sum;    // (P,) sum of weight_k * delta_k
    double weight; /* sum of weight_k */
    uint32_t count;
} fmq_fedavg;

FMQ_NODISCARD fmq_err fmq_fedavg_init(fmq_fedavg *fa, uint32_t P);
void fmq_fedavg_fini(fmq_fedavg *fa);
void fmq_fedavg_reset(fmq_fedavg *fa);
/* Fold one checked delta in with weight > 0 (samples, times a staleness
 * factor). FMQ_ERR_MODEL when its length is not P, FMQ_ERR_INVAL for a
 * weight that is not finite and positive. */
FMQ_NODISCARD fmq_err fmq_fedavg_add(fmq_fedavg *fa, const fmq_qtensor *delta,
                                     double weight);
/* w (P,) += sum / weight. FMQ_ERR_STATE when nothing was added. */
FMQ_NODISCARD fmq_err fmq_fedavg_apply(const fmq_fedavg *fa, float *w);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_FEDAVG_H */
