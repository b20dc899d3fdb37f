/*
 * partition.h — splitting one labelled dataset across simulated parties
 * the way NIID-Bench does (Li, Diao, Chen & He, "Federated Learning on
 * Non-IID Data Silos: An Experimental Study", ICDE 2022, and its code's
 * partition_data), so that fedmq's results can be held against published
 * tables. Every partition is drawn from fmq_rng seeded with the caller's
 * seed: the same spec, labels, parties and seed give the same partition on
 * every platform.
 *
 * Specs (N samples, n parties, K classes):
 *   "iid"          a random permutation cut into n parts whose sizes
 *                  differ by at most 1 (the first N mod n parts have one
 *                  more, as numpy's array_split).
 *   "dirichlet:β"  label skew. Repeat: for each class k, shuffle its
 *                  samples, draw p ~ Dir(β·1ₙ), set p_j = 0 for parties
 *                  already holding ≥ N/n samples, renormalise, and cut the
 *                  class at ⌊cumsum(p)·|class|⌋ — until every party holds
 *                  ≥ 10 samples (at most 1000 attempts; N < 10·n is
 *                  refused at once). Smaller β, stronger skew.
 *   "labels:k"     label quantity skew, #C=k (1 ≤ k ≤ K). Party i holds
 *                  label i mod K and k−1 further distinct labels drawn at
 *                  random; each label's samples are shuffled and split
 *                  equally (array_split) among the parties holding it.
 *                  With n < K some labels may be held by no party: their
 *                  samples are left out of the partition (NIID-Bench's own
 *                  code stops with an error there; we drop them), so the
 *                  parties' sizes then sum to less than N.
 *   "quantity:β"   quantity skew: p ~ Dir(β·1ₙ), redrawn until every party
 *                  would get ≥ 10 samples (at most 10⁶ draws: β = 0.5
 *                  over 100 parties of 60,000 needs about 200,000, a
 *                  second or so), then a
 *                  random permutation cut at ⌊cumsum(p)·N⌋. Labels stay
 *                  balanced in expectation; sizes vary.
 * β is a positive finite decimal number ("0.5", "1e-1"), k a decimal
 * integer. Within a party the sample indices are in random order, whatever
 * the spec.
 */
#ifndef FMQ_PARTITION_H
#define FMQ_PARTITION_H

#include <stdio.h>

#include "fmq.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fmq_partition {
    uint32_t parties;
    uint32_t *off; /* (parties+1,) */
    uint32_t *idx; /* (n,) sample indices, party j = idx[off[j]..off[j+1]) */
} fmq_partition;

/* Minimum samples per party that dirichlet: and quantity: enforce. */
#define FMQ_PARTITION_MIN_SIZE 10u

/* Split samples 0..n-1, whose labels are labels (n,) in [0, classes), over
 * `parties` parties according to spec (above), drawing from an fmq_rng
 * seeded with seed. On success *out holds off (parties+1,) and idx
 * (off[parties],) — off[parties] == n except for labels:k with labels no
 * party holds — and the caller frees them with fmq_partition_fini. On error
 * *out is zeroed and owns nothing.
 * Returns FMQ_OK; FMQ_ERR_CONFIG for a spec that does not parse, a β or k
 * out of range, parties == 0, or a spec these samples cannot satisfy (fewer
 * samples than parties; for dirichlet: and quantity:, fewer than 10 per
 * party, or no draw within the bounds above giving every party 10) — each
 * logged with the reason; FMQ_ERR_INVAL for a label not below classes
 * (logged); FMQ_ERR_NOMEM. No I/O; O(n) memory; O(n) time for iid and
 * labels:k, O(n) per attempt for dirichlet:. */
FMQ_NODISCARD fmq_err fmq_partition_make(const char *spec,
                                         const uint16_t *labels, uint32_t n,
                                         uint32_t classes, uint32_t parties,
                                         uint64_t seed, fmq_partition *out);

/* Number of samples of party j (j < p->parties). */
static inline uint32_t fmq_partition_size(const fmq_partition *p, uint32_t j)
{
    return p->off[j + 1] - p->off[j];
}

/* For humans: one line per party (its samples, then the count of each
 * label it holds) and a summary (parties, samples, min/max/mean party
 * size, min/max/mean labels per party). labels (n,) as given to
 * fmq_partition_make. Writes to f; does nothing on a NULL f. */
void fmq_partition_print(const fmq_partition *p, const uint16_t *labels,
                         uint32_t classes, FILE *f);

/* Free off and idx and zero *p. NULL and a zeroed partition are fine. */
void fmq_partition_fini(fmq_partition *p);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_PARTITION_H */
