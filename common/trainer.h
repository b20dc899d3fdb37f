/*
 * trainer.h — the trainer ops table: how a device trains, pluggable.
 *
 * A device (device/) and the in-process reference (fedmq-train) never call
 * the engine directly; they drive a trainer through this table, so a
 * product can put its own engine (a TFLite model, a vendor NPU runtime)
 * behind the same four calls. The built-in trainer, fmq_trainer_builtin,
 * trains an fmq_nn model (nn.h) on rows of an fmq_dataset (data.h).
 *
 * The core allocates `state_size` zeroed bytes, calls init once, then per
 * round: load (the global weights) -> train -> weights (the local weights,
 * from which the caller computes the delta); fini once at the end. Calls
 * may block for as long as training takes; a trainer is used from one
 * thread at a time.
 */
#ifndef FMQ_TRAINER_H
#define FMQ_TRAINER_H

#include "fmq.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fmq_dataset;

/* What a trainer is set up with: the model and the device's own data. */
typedef struct fmq_trainer_setup {
    const char *model;              /* model spec, e.g. "cnn" */
    const struct fmq_dataset *data; /* borrowed; must outlive the trainer */
    const uint32_t *idx;            /* rows of data this device holds */
    uint32_t n;                     /* number of rows (idx NULL: 0..n) */
} fmq_trainer_setup;

/* One round's instructions (the `tc` map of a global message, SPEC §6.1). */
typedef struct fmq_trainer_round {
    uint32_t epochs, batch;
    float lr, momentum, weight_decay, mu;
    uint64_t seed; /* shuffling seed for this round: fmq_trainer_seed */
} fmq_trainer_round;

typedef struct fmq_trainer_report {
    uint64_t samples; /* the device's sample count n (FedAvg weight) */
    uint64_t steps;   /* sample-steps trained: epochs * n */
    double loss;      /* mean training loss of the last epoch */
    double seconds;
} fmq_trainer_report;

typedef struct fmq_trainer_ops {
    const char *name;
    size_t state_size;
    /* Build the model and keep the data view. FMQ_ERR_CONFIG for an
     * unknown model; the parameter count is returned in *P. */
    fmq_err (*init)(void *state, const fmq_trainer_setup *setup, uint32_t *P);
    /* Replace the local weights with w (P,); also the FedProx reference. */
    fmq_err (*load)(void *state, const float *w, uint32_t P);
    /* Train from the loaded weights. On error the loaded weights stay. */
    fmq_err (*train)(void *state, const fmq_trainer_round *round,
                     fmq_trainer_report *out);
    /* Copy the current local weights into w (P,). */
    fmq_err (*weights)(void *state, float *w, uint32_t P);
    void (*fini)(void *state);
} fmq_trainer_ops;

extern const fmq_trainer_ops fmq_trainer_builtin;

/* A handle that owns the state of one trainer. */
typedef struct fmq_trainer {
    const fmq_trainer_ops *ops;
    void *state;
    uint32_t P;
} fmq_trainer;

/* Check the table's required entries, allocate the state and init it.
 * FMQ_ERR_INVAL for a table with a missing entry. */
FMQ_NODISCARD fmq_err fmq_trainer_open(fmq_trainer *t,
                                       const fmq_trainer_ops *ops,
                                       const fmq_trainer_setup *setup);
void fmq_trainer_close(fmq_trainer *t);

/* The shuffling seed of party/device `who` in round `round`: every run
 * with the same base seed trains the same way, in process or over MQTT. */
uint64_t fmq_trainer_seed(uint64_t base, uint32_t round, uint32_t who);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_TRAINER_H */
