/*
 * trimmed-mean:β — the coordinate-wise trimmed mean (Yin et al., ICML
 * 2018): for each coordinate, drop the k largest and the k smallest of the
 * n values and average the rest, k = ⌊β·n⌋ (rounded down, with a 1e-9
 * guard so that e.g. 0.3 · 10 gives 3: β·n need not be an integer, and
 * then a little less than the fraction β is trimmed from each side).
 * β ∈ [0, 0.5), default 0.1; β = 0 is the unweighted mean. Unweighted: a
 * hostile device can claim any sample count. The round's updates are kept
 * quantized by the core and decoded a block of coordinates at a time.
 */
#include "strategy_internal.h"

#include <math.h>
#include <stdio.h>

typedef struct trimmed {
    uint32_t P;
    double beta;
    uint32_t k; /* of the round being reduced */
} trimmed;

static float trimmed_coord(float *v, uint32_t n, void *arg)
{
    const trimmed *s = arg;
    fmq_strategy__sort_floats(v, n);
    double sum = 0;
    for (uint32_t i = s->k; i < n - s->k; i++)
        sum += v[i];
    return (float)(sum / (n - 2 * s->k));
}

static fmq_err trimmed_init(void *st, const fmq_strategy_cfg *cfg,
                            const char *args)
{
    trimmed *s = st;
    s->P = cfg->P;
    s->beta = 0.1;
    if (args && (!fmq_strategy__parse_double(args, &s->beta) ||
                 !(s->beta >= 0 && s->beta < 0.5))) {
        fmq_log_err("strategy trimmed-mean:%s: β must be a number in [0, "
                    "0.5), e.g. trimmed-mean:0.1",
                    args);
        return FMQ_ERR_CONFIG;
    }
    return FMQ_OK;
}

static fmq_err trimmed_finish(void *st, uint64_t round,
                              const fmq_strategy_batch *batch, float *w,
                              fmq_strategy_result *res)
{
    trimmed *s = st;
    uint32_t n = fmq_strategy_batch_count(batch);
    s->k = (uint32_t)floor(s->beta * n + 1e-9);
    if (2 * (uint64_t)s->k >= n) /* only a β within 1e-9 of 0.5 */
        s->k = n ? (n - 1) / 2 : 0;
    fmq_err e = fmq_strategy__reduce_coords(batch, s->P, w, trimmed_coord, s);
    if (!e) {
        res->used = n;
        snprintf(res->note, sizeof res->note, "trimmed %u of %u each side",
                 s->k, n);
    }
    return e;
}

const fmq_strategy_ops fmq_strategy__trimmed_mean = {
    .name = "trimmed-mean",
    .usage = "trimmed-mean[:BETA]",
    .state_size = sizeof(trimmed),
    .keeps_updates = true,
    .init = trimmed_init,
    .finish = trimmed_finish,
};
