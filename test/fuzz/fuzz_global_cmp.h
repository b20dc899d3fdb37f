/*
 * fuzz_global_cmp.h — field-by-field equality of two decoded globals' round
 * instructions, for the targets of the messages that carry them
 * (fuzz_global.c, fuzz_delta.c). Include after fuzz_harness.h.
 */
#ifndef FMQ_FUZZ_GLOBAL_CMP_H
#define FMQ_FUZZ_GLOBAL_CMP_H

static void same_uq(const fmq_uq *a, const fmq_uq *b)
{
    CHECK(a->scheme == b->scheme && a->block == b->block);
    CHECK(a->stochastic == b->stochastic);
    CHECK(a->error_feedback == b->error_feedback);
}

/* Every field of a global but its weights (a delta carries the same
 * instructions). */
static void same_instructions(const fmq_msg_global *a,
                              const fmq_msg_global *b)
{
    CHECK(strcmp(a->fleet, b->fleet) == 0);
    CHECK(a->round == b->round && a->version == b->version);
    CHECK(a->deadline_ms == b->deadline_ms && a->ts_ms == b->ts_ms);
    CHECK(strcmp(a->model, b->model) == 0);
    CHECK(a->train.epochs == b->train.epochs);
    CHECK(a->train.batch == b->train.batch);
    CHECK(same_f(a->train.lr, b->train.lr));
    CHECK(same_f(a->train.momentum, b->train.momentum));
    CHECK(same_f(a->train.weight_decay, b->train.weight_decay));
    CHECK(same_f(a->train.mu, b->train.mu));
    CHECK(a->cohort.kind == b->cohort.kind);
    if (a->cohort.kind == FMQ_COHORT_FRACTION) {
        CHECK(same_f(a->cohort.fraction, b->cohort.fraction));
        CHECK(a->cohort.seed == b->cohort.seed);
    }
    CHECK(a->cohort.nids == b->cohort.nids);
    for (uint32_t i = 0; i < a->cohort.nids; i++)
        CHECK(strcmp(a->cohort.ids[i], b->cohort.ids[i]) == 0);
    same_uq(&a->uq, &b->uq);
    CHECK(a->nclasses == b->nclasses);
    for (uint32_t i = 0; i < a->nclasses; i++) {
        CHECK(strcmp(a->classes[i].cls, b->classes[i].cls) == 0);
        same_uq(&a->classes[i].uq, &b->classes[i].uq);
    }
    CHECK(strcmp(a->strategy, b->strategy) == 0);
    CHECK(a->async == b->async && a->max_staleness == b->max_staleness);
    CHECK(a->deltas == b->deltas);
}

#endif /* FMQ_FUZZ_GLOBAL_CMP_H */
