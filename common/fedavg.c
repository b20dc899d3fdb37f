/*
 * fedavg.c — streaming sample-weighted FedAvg; see fedavg.h.
 */
#include "fedavg.h"

#include <math.h>
#include <string.h>

fmq_err fmq_fedavg_init(fmq_fedavg *fa, uint32_t P)
{
    memset(fa, 0, sizeof *fa);
    if (P == 0)
        return FMQ_ERR_INVAL;
    fa->sum = fmq_calloc(P, sizeof(float));
    if (!fa->sum)
        return FMQ_ERR_NOMEM;
    fa->P = P;
    return FMQ_OK;
}

void fmq_fedavg_fini(fmq_fedavg *fa)
{
    if (!fa)
        return;
    fmq_free(fa->sum);
    memset(fa, 0, sizeof *fa);
}

void fmq_fedavg_reset(fmq_fedavg *fa)
{
    memset(fa->sum, 0, (size_t)fa->P * sizeof(float));
    fa->weight = 0;
    fa->count = 0;
}

fmq_err fmq_fedavg_add(fmq_fedavg *fa, const fmq_qtensor *delta, double weight)
{
    if (!delta || delta->n != fa->P)
        return FMQ_ERR_MODEL;
    if (!(weight > 0) || !isfinite(weight))
        return FMQ_ERR_INVAL;
    fmq_err e = fmq_quant_accumulate(delta, (float)weight, fa->sum);
    if (e)
        return e;
    fa->weight += weight;
    fa->count++;
    return FMQ_OK;
}

fmq_err fmq_fedavg_apply(const fmq_fedavg *fa, float *w)
{
    if (fa->count == 0 || !(fa->weight > 0))
        return FMQ_ERR_STATE;
    float inv = (float)(1.0 / fa->weight);
    for (uint32_t i = 0; i < fa->P; i++)
        w[i] += fa->sum[i] * inv;
    return FMQ_OK;
}
