/*
 * cohort.h — who trains in a round (proto/SPEC.md §8), computed the same
 * way by the aggregator (to know whom to wait for) and by every device (to
 * decide whether to train), with no message exchanged about it.
 */
#ifndef FMQ_COHORT_H
#define FMQ_COHORT_H

#include "codec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The rule's number for (seed, round, device): the first 8 bytes of
 * SHA-256(seed as u64 BE || round as u64 BE || device id bytes) as a
 * big-endian u64, divided by 2^64, in [0, 1). */
double fmq_cohort_draw(uint64_t seed, uint64_t round, const char *device);

/* true when `device` trains in `round` under rule c: every device for
 * FMQ_COHORT_ALL, draw < fraction for FMQ_COHORT_FRACTION, membership of
 * the id list for FMQ_COHORT_IDS. A NULL rule means every device. */
bool fmq_cohort_member(const fmq_cohort *c, uint64_t round,
                       const char *device);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_COHORT_H */
