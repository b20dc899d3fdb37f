/*
 * nn.h — fedmq's small training engine: the models a device trains.
 *
 * A model is built from a spec string and keeps every parameter in one flat
 * float buffer, the same (P,) array that the quantizer and the codec take;
 * each layer is a view into it, in PyTorch's layout so that weights can be
 * compared with (or loaded from) a PyTorch model directly:
 *   dense  W[out][in] then b[out]
 *   conv   W[cout][cin][k][k] then b[cout]   (valid padding, stride 1)
 * Specs:
 *   logreg            dense in -> classes
 *   mlp:H[,H...]      dense in -> H -> ReLU ... -> classes
 *                     (mlp:128 on 28x28 images: 101,770 parameters)
 *   cnn               the NIID-Bench simple CNN (Li et al., ICDE 2022):
 *                     conv 6@5x5, ReLU, max-pool 2, conv 16@5x5, ReLU,
 *                     max-pool 2, 120, ReLU, 84, ReLU, classes
 *                     (44,426 parameters on 1x28x28, 10 classes)
 * Initialisation is PyTorch's default for Linear and Conv2d: weights and
 * biases uniform in +-1/sqrt(fan_in), from a seeded fmq_rng.
 *
 * Training is minibatch SGD on softmax cross-entropy with momentum and
 * weight decay (PyTorch's torch.optim.SGD update rule), plus the FedProx
 * proximal term mu/2 * |w - w_global|^2 (Li et al., MLSys 2020). The
 * momentum buffer starts at zero in every fmq_nn_train call, as a device
 * starts each round afresh.
 *
 * The kernels (matrix products, im2col convolution, pooling) are written
 * once and instantiated for float (training) and double (the gradient
 * check in test/test_nn.c). Built with FMQ_BLAS=openblas (config.mk), the
 * float matrix products go to OpenBLAS's sgemm when fmq_nn_set_blas(true);
 * the portable kernels always remain.
 *
 * A model is not thread-safe; use one per thread.
 */
#ifndef FMQ_NN_H
#define FMQ_NN_H

#include "fmq.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fmq_dataset;

#define FMQ_NN_MAX_LAYERS 32
#define FMQ_NN_MAX_CLASSES 1024

typedef enum {
    FMQ_NN_DENSE,
    FMQ_NN_CONV,
    FMQ_NN_POOL, /* max-pool k x k, stride k */
    FMQ_NN_RELU,
} fmq_nn_kind;

/* One layer: shapes of its input and output (channels, height, width;
 * dense layers use c = features, h = w = 1) and its view into the
 * parameters (offsets in floats; lengths 0 for layers without any). */
typedef struct fmq_nn_layer {
    fmq_nn_kind kind;
    uint32_t in_c, in_h, in_w;
    uint32_t out_c, out_h, out_w;
    uint32_t k;
    size_t w_off, w_len, b_off, b_len;
} fmq_nn_layer;

typedef struct fmq_nn fmq_nn;

/* Build a model for inputs of shape (c, h, w) and `classes` outputs.
 * FMQ_ERR_CONFIG for an unknown or malformed spec (logged with the reason),
 * FMQ_ERR_NOMEM. Parameters are zero until fmq_nn_init. */
FMQ_NODISCARD fmq_err fmq_nn_new(const char *spec, uint32_t c, uint32_t h,
                                 uint32_t w, uint32_t classes, fmq_nn **out);
void fmq_nn_destroy(fmq_nn **mp);

/* PyTorch-default initialisation from `seed` (reproducible). */
void fmq_nn_init(fmq_nn *m, uint64_t seed);

const char *fmq_nn_spec(const fmq_nn *m);
uint32_t fmq_nn_nparams(const fmq_nn *m);
uint32_t fmq_nn_input_dim(const fmq_nn *m);
uint32_t fmq_nn_classes(const fmq_nn *m);
/* The flat (P,) parameters; writable (load a global model by copying in). */
float *fmq_nn_params(fmq_nn *m);
uint32_t fmq_nn_nlayers(const fmq_nn *m);
const fmq_nn_layer *fmq_nn_layer_at(const fmq_nn *m, uint32_t i);

typedef struct fmq_nn_train_cfg {
    uint32_t epochs;    /* passes over the samples, >= 1 */
    uint32_t batch;     /* minibatch size, >= 1; the last batch may be short */
    float lr;           /* learning rate, > 0 */
    float momentum;     /* 0 = plain SGD */
    float weight_decay; /* L2 coefficient added to the gradient */
    float mu;           /* FedProx coefficient; 0 = off */
    const float *w_ref; /* (P,) w_global for FedProx; NULL when mu = 0 */
    uint64_t seed;      /* shuffling order of each epoch */
    /* Called after each epoch with its mean minibatch loss (may be NULL);
     * it may evaluate the model. Returning non-zero stops training. */
    int (*on_epoch)(void *arg, uint32_t epoch, double loss, double seconds);
    void *arg;
} fmq_nn_train_cfg;

typedef struct fmq_nn_train_result {
    uint64_t samples; /* sample-steps: epochs * n */
    double loss;      /* mean minibatch loss over the last epoch */
    double seconds;   /* wall time */
} fmq_nn_train_result;

/* Train on the rows idx[0..n) of ds (idx NULL: rows 0..n). FMQ_ERR_INVAL
 * for a bad configuration or a dataset whose shape does not fit the model,
 * FMQ_ERR_NONFINITE when the loss or weights become NaN/Inf (the weights
 * are then restored to what they were), FMQ_ERR_NOMEM. */
FMQ_NODISCARD fmq_err fmq_nn_train(fmq_nn *m, const struct fmq_dataset *ds,
                                   const uint32_t *idx, uint32_t n,
                                   const fmq_nn_train_cfg *cfg,
                                   fmq_nn_train_result *res);

typedef struct fmq_nn_eval {
    uint32_t n;
    double loss;     /* mean cross-entropy */
    double accuracy; /* fraction correct */
    uint32_t classes;
    double *class_accuracy; /* (classes,), owned; fmq_nn_eval_fini frees */
    uint32_t *class_count;  /* (classes,) samples per class */
} fmq_nn_eval;

FMQ_NODISCARD fmq_err fmq_nn_evaluate(fmq_nn *m, const struct fmq_dataset *ds,
                                      fmq_nn_eval *ev);
void fmq_nn_eval_fini(fmq_nn_eval *ev);

/* Mean loss over a batch x (B, input_dim) with labels y, and its gradient
 * (P,) when grad != NULL. For tests and for plugged-in optimisers. */
FMQ_NODISCARD fmq_err fmq_nn_loss_grad(fmq_nn *m, const float *x,
                                       const uint16_t *y, uint32_t B,
                                       double *loss, float *grad);
/* The same computation in double precision on a double copy of the
 * parameters (P,), for the finite-difference gradient check. */
FMQ_NODISCARD fmq_err fmq_nn_loss_grad_f64(fmq_nn *m, const double *params,
                                           const double *x, const uint16_t *y,
                                           uint32_t B, double *loss,
                                           double *grad);

/* Use OpenBLAS for float matrix products (only when built with it; returns
 * the setting now in force) and the number of BLAS threads. Process-wide. */
bool fmq_nn_set_blas(bool on);
bool fmq_nn_have_blas(void);
void fmq_nn_set_threads(int n);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_NN_H */
