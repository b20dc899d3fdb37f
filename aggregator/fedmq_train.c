/*
 * fedmq-train — train centrally, or simulate FedAvg in process, on
 * Fashion-MNIST (Debian's dataset-fashion-mnist) with fedmq's engine.
 *
 *   fedmq-train central [options]     test accuracy per epoch
 *   fedmq-train fedavg  [options]     test accuracy per round, n parties
 *
 * The in-process FedAvg is the reference for the networked runtime: each
 * party k trains from the global weights with the shuffling seed
 * fmq_trainer_seed(seed, round, k) through the trainer ops table, sends
 * delta_k = w_k - w as f32, and the global model becomes
 * w + sum_k (n_k delta_k) / sum_k n_k through fmq_fedavg (common/fedavg.h),
 * exactly as the aggregator does (proto/SPEC.md §9.2).
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "data.h"
#include "fedavg.h"
#include "nn.h"
#include "partition.h"
#include "quant.h"
#include "trainer.h"

typedef struct opts {
    const char *mode, *model, *partition, *data_dir, *save, *load, *save_part;
    uint32_t epochs, batch, parties, rounds, local_epochs;
    float lr, momentum, weight_decay, mu;
    uint64_t seed;
    bool normalize, print_partition, portable, delta_stats;
    int threads;
} opts;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: fedmq-train central|fedavg [options]\n"
        "  --model SPEC        logreg, mlp:H[,H...], cnn (default cnn)\n"
        "  --epochs N          central: epochs (default 10)\n"
        "  --batch N           minibatch size (default 64)\n"
        "  --lr X              learning rate (default 0.01)\n"
        "  --momentum X        SGD momentum (default 0.9)\n"
        "  --weight-decay X    L2 coefficient (default 0)\n"
        "  --mu X              FedProx proximal coefficient (default 0)\n"
        "  --seed N            initialisation, partition and shuffling "
        "(default 1)\n"
        "  --normalize         subtract the training mean, divide by its std\n"
        "  --parties N         fedavg: number of parties (default 10)\n"
        "  --partition SPEC    fedavg: iid, dirichlet:B, labels:K, "
        "quantity:B (default iid)\n"
        "  --rounds N          fedavg: rounds (default 10)\n"
        "  --local-epochs N    fedavg: epochs per round (default 1)\n"
        "  --print-partition   fedavg: print samples and labels per party\n"
        "  --delta-stats       fedavg: print each party's max |delta| per round\n"
        "  --save-partition F  fedavg: write each party's sample indices, one\n"
        "                      line per party (for test/bench/torch_ref.py)\n"
        "  --data DIR          Fashion-MNIST directory (default "
        "/usr/share/datasets/fashion-mnist)\n"
        "  --save FILE         write the final weights (float32 LE, P values)\n"
        "  --load FILE         start from these weights instead of init\n"
        "  --portable          use fedmq's own kernels, not OpenBLAS\n"
        "  --threads N         BLAS threads (default 1)\n");
}

static int parse(int argc, char **argv, opts *o)
{
    *o = (opts){.model = "cnn", .partition = "iid", .epochs = 10,
                .batch = 64, .parties = 10, .rounds = 10, .local_epochs = 1,
                .lr = 0.01f, .momentum = 0.9f, .seed = 1, .threads = 1};
    if (argc < 2 || (strcmp(argv[1], "central") && strcmp(argv[1], "fedavg"))) {
        usage(stderr);
        return -1;
    }
    o->mode = argv[1];
    static const struct option lo[] = {
        {"model", 1, 0, 'm'},        {"epochs", 1, 0, 'e'},
        {"batch", 1, 0, 'b'},        {"lr", 1, 0, 'l'},
        {"momentum", 1, 0, 'M'},     {"weight-decay", 1, 0, 'w'},
        {"mu", 1, 0, 'u'},           {"seed", 1, 0, 's'},
        {"normalize", 0, 0, 'N'},    {"parties", 1, 0, 'n'},
        {"partition", 1, 0, 'p'},    {"rounds", 1, 0, 'r'},
        {"local-epochs", 1, 0, 'E'}, {"print-partition", 0, 0, 'P'},
        {"delta-stats", 0, 0, 'Z'},
        {"data", 1, 0, 'd'},         {"save", 1, 0, 'S'},
        {"load", 1, 0, 'L'},         {"portable", 0, 0, 'o'},
        {"threads", 1, 0, 't'},      {"help", 0, 0, 'h'},
        {"save-partition", 1, 0, 'X'},
        {0, 0, 0, 0}};
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        char *end = NULL;
        unsigned long v = 0;
        double d = 0;
        if (optarg) {
            v = strtoul(optarg, &end, 10);
            d = strtod(optarg, NULL);
        }
        bool bad_uint = optarg && (*end || v == 0 || v > 1000000);
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'p': o->partition = optarg; break;
        case 'd': o->data_dir = optarg; break;
        case 'S': o->save = optarg; break;
        case 'L': o->load = optarg; break;
        case 'X': o->save_part = optarg; break;
        case 'N': o->normalize = true; break;
        case 'P': o->print_partition = true; break;
        case 'Z': o->delta_stats = true; break;
        case 'o': o->portable = true; break;
        case 'l': o->lr = (float)d; break;
        case 'M': o->momentum = (float)d; break;
        case 'w': o->weight_decay = (float)d; break;
        case 'u': o->mu = (float)d; break;
        case 's': o->seed = strtoull(optarg, NULL, 10); break;
        case 'h': usage(stdout); exit(0);
        case 'e': case 'b': case 'n': case 'r': case 'E': case 't':
            if (bad_uint) {
                const char *name = "?";
                for (const struct option *q = lo; q->name; q++)
                    if (q->val == c)
                        name = q->name;
                fprintf(stderr, "fedmq-train: --%s wants a positive integer, "
                        "got '%s'\n", name, optarg);
                return -1;
            }
            if (c == 'e') o->epochs = (uint32_t)v;
            if (c == 'b') o->batch = (uint32_t)v;
            if (c == 'n') o->parties = (uint32_t)v;
            if (c == 'r') o->rounds = (uint32_t)v;
            if (c == 'E') o->local_epochs = (uint32_t)v;
            if (c == 't') o->threads = (int)v;
            break;
        default: usage(stderr); return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "fedmq-train: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!(o->lr > 0) || !(o->momentum >= 0 && o->momentum < 1) ||
        !(o->weight_decay >= 0) || !(o->mu >= 0)) {
        fprintf(stderr, "fedmq-train: need lr > 0, 0 <= momentum < 1, "
                        "weight decay and mu >= 0\n");
        return -1;
    }
    return 0;
}

static void report(const char *what, uint32_t i, fmq_nn *m,
                   const fmq_dataset *test, double train_loss, double secs)
{
    fmq_nn_eval ev;
    if (fmq_nn_evaluate(m, test, &ev)) {
        fprintf(stderr, "fedmq-train: evaluation failed\n");
        exit(1);
    }
    printf("%s=%u test_acc=%.4f test_loss=%.4f train_loss=%.4f seconds=%.1f\n",
           what, i, ev.accuracy, ev.loss, train_loss, secs);
    fflush(stdout);
    fmq_nn_eval_fini(&ev);
}

/* Per-class accuracy of the final model, one line. */
static void report_classes(fmq_nn *m, const fmq_dataset *test)
{
    fmq_nn_eval ev;
    if (fmq_nn_evaluate(m, test, &ev))
        return;
    printf("# per-class test accuracy:");
    for (uint32_t c = 0; c < ev.classes; c++)
        printf(" %u:%.3f", c, ev.class_accuracy[c]);
    printf("\n");
    fmq_nn_eval_fini(&ev);
}

static int save_weights(const char *path, const float *w, uint32_t P)
{
    return fmq_cli_save_weights("fedmq-train", path, w, P) ? -1 : 0;
}

static int load_weights(const char *path, float *w, uint32_t P)
{
    uint8_t *b;
    size_t len;
    fmq_err e = fmq_file_read(path, (size_t)P * 4, &b, &len);
    if (e || len != (size_t)P * 4) {
        fprintf(stderr, "fedmq-train: %s: %s (want %u float32 values)\n", path,
                e ? fmq_strerror(e) : "wrong size", P);
        if (!e)
            fmq_free(b);
        return -1;
    }
    for (uint32_t i = 0; i < P; i++)
        w[i] = fmq_load_f32le(b + 4 * (size_t)i);
    fmq_free(b);
    return 0;
}

struct epoch_ctx {
    fmq_nn *m;
    const fmq_dataset *test;
};

static int on_epoch(void *arg, uint32_t epoch, double loss, double seconds)
{
    struct epoch_ctx *c = arg;
    report("epoch", epoch, c->m, c->test, loss, seconds);
    return 0;
}

static int central(const opts *o, fmq_dataset *train, fmq_dataset *test)
{
    fmq_nn *m;
    if (fmq_nn_new(o->model, train->c, train->h, train->w, train->classes, &m))
        return 1;
    fmq_nn_init(m, o->seed);
    if (o->load && load_weights(o->load, fmq_nn_params(m), fmq_nn_nparams(m)))
        return 1;
    printf("# central model=%s params=%u epochs=%u batch=%u lr=%g momentum=%g "
           "seed=%llu blas=%s\n",
           o->model, fmq_nn_nparams(m), o->epochs, o->batch, (double)o->lr,
           (double)o->momentum, (unsigned long long)o->seed,
           fmq_nn_set_blas(!o->portable) ? "openblas" : "portable");
    /* one call for all epochs, so the momentum buffer carries across
     * epochs as in a PyTorch training loop; report after each */
    struct epoch_ctx ctx = {m, test};
    fmq_nn_train_cfg cfg = {.epochs = o->epochs, .batch = o->batch,
                            .lr = o->lr, .momentum = o->momentum,
                            .weight_decay = o->weight_decay,
                            .seed = fmq_trainer_seed(o->seed, 0, 0),
                            .on_epoch = on_epoch, .arg = &ctx};
    fmq_nn_train_result res;
    fmq_err e = fmq_nn_train(m, train, NULL, train->n, &cfg, &res);
    if (e) {
        fprintf(stderr, "fedmq-train: %s\n", fmq_strerror(e));
        return 1;
    }
    report_classes(m, test);
    int rc = o->save ? save_weights(o->save, fmq_nn_params(m),
                                    fmq_nn_nparams(m)) != 0
                     : 0;
    fmq_nn_destroy(&m);
    return rc;
}

static int fedavg(const opts *o, fmq_dataset *train, fmq_dataset *test)
{
    fmq_partition part;
    fmq_err e = fmq_partition_make(o->partition, train->y, train->n,
                                   train->classes, o->parties, o->seed, &part);
    if (e) {
        fprintf(stderr, "fedmq-train: partition '%s': %s\n", o->partition,
                fmq_strerror(e));
        return 1;
    }
    if (o->print_partition)
        fmq_partition_print(&part, train->y, train->classes, stdout);
    if (o->save_part) {
        FILE *f = fopen(o->save_part, "w");
        if (!f) {
            perror(o->save_part);
            return 1;
        }
        for (uint32_t k = 0; k < part.parties; k++) {
            for (uint32_t i = part.off[k]; i < part.off[k + 1]; i++)
                fprintf(f, i > part.off[k] ? " %u" : "%u", part.idx[i]);
            fputc('\n', f);
        }
        if (fclose(f)) {
            perror(o->save_part);
            return 1;
        }
    }
    fmq_nn *global;
    if (fmq_nn_new(o->model, train->c, train->h, train->w, train->classes,
                   &global))
        return 1;
    fmq_nn_init(global, o->seed);
    uint32_t P = fmq_nn_nparams(global);
    float *w = fmq_nn_params(global);
    if (o->load && load_weights(o->load, w, P))
        return 1;
    printf("# fedavg model=%s params=%u parties=%u partition=%s rounds=%u "
           "local_epochs=%u batch=%u lr=%g momentum=%g mu=%g seed=%llu "
           "blas=%s\n",
           o->model, P, o->parties, o->partition, o->rounds, o->local_epochs,
           o->batch, (double)o->lr, (double)o->momentum, (double)o->mu,
           (unsigned long long)o->seed,
           fmq_nn_set_blas(!o->portable) ? "openblas" : "portable");
    /* one trainer per party, each on its own rows */
    fmq_trainer *tr = calloc(o->parties, sizeof *tr);
    float *local = malloc((size_t)P * sizeof *local);
    float *delta = malloc((size_t)P * sizeof *delta);
    fmq_fedavg fa;
    if (!tr || !local || !delta || fmq_fedavg_init(&fa, P))
        return 1;
    for (uint32_t k = 0; k < o->parties; k++) {
        fmq_trainer_setup s = {.model = o->model, .data = train,
                               .idx = part.idx + part.off[k],
                               .n = part.off[k + 1] - part.off[k]};
        if ((e = fmq_trainer_open(&tr[k], &fmq_trainer_builtin, &s))) {
            fprintf(stderr, "fedmq-train: party %u: %s\n", k, fmq_strerror(e));
            return 1;
        }
    }
    fmq_quant_cfg f32 = {FMQ_Q_F32, 0, false};
    for (uint32_t r = 1; r <= o->rounds; r++) {
        double t0 = fmq_mono_seconds(), loss = 0;
        uint64_t N = 0;
        for (uint32_t k = 0; k < o->parties; k++)
            N += part.off[k + 1] - part.off[k];
        fmq_fedavg_reset(&fa);
        for (uint32_t k = 0; k < o->parties; k++) {
            fmq_trainer_round rd = {.epochs = o->local_epochs,
                                    .batch = o->batch, .lr = o->lr,
                                    .momentum = o->momentum,
                                    .weight_decay = o->weight_decay,
                                    .mu = o->mu,
                                    .seed = fmq_trainer_seed(o->seed, r, k)};
            fmq_trainer_report rep;
            if ((e = tr[k].ops->load(tr[k].state, w, P)) ||
                (e = tr[k].ops->train(tr[k].state, &rd, &rep)) ||
                (e = tr[k].ops->weights(tr[k].state, local, P))) {
                fprintf(stderr, "fedmq-train: round %u party %u: %s\n", r, k,
                        fmq_strerror(e));
                return 1;
            }
            float maxabs = 0;
            for (uint32_t i = 0; i < P; i++) {
                delta[i] = local[i] - w[i];
                maxabs = fabsf(delta[i]) > maxabs ? fabsf(delta[i]) : maxabs;
            }
            if (o->delta_stats)
                printf("# delta round=%u party=%u samples=%llu max_abs=%.9g\n",
                       r, k, (unsigned long long)rep.samples, (double)maxabs);
            fmq_qtensor q;
            if ((e = fmq_quant_encode(&f32, delta, P, NULL, &q)) ||
                (e = fmq_fedavg_add(&fa, &q, (double)rep.samples))) {
                fprintf(stderr, "fedmq-train: round %u party %u: %s\n", r, k,
                        fmq_strerror(e));
                return 1;
            }
            fmq_qtensor_fini(&q);
            loss += rep.loss * rep.samples / N;
        }
        if ((e = fmq_fedavg_apply(&fa, w))) {
            fprintf(stderr, "fedmq-train: round %u: %s\n", r, fmq_strerror(e));
            return 1;
        }
        report("round", r, global, test, loss, fmq_mono_seconds() - t0);
    }
    report_classes(global, test);
    int rc = o->save ? save_weights(o->save, w, P) != 0 : 0;
    for (uint32_t k = 0; k < o->parties; k++)
        fmq_trainer_close(&tr[k]);
    free(tr);
    free(local);
    free(delta);
    fmq_fedavg_fini(&fa);
    fmq_partition_fini(&part);
    fmq_nn_destroy(&global);
    return rc;
}

int main(int argc, char **argv)
{
    opts o;
    if (parse(argc, argv, &o))
        return 2;
    fmq_nn_set_threads(o.threads);
    fmq_dataset train, test;
    fmq_err e;
    if ((e = fmq_data_load_fashion_mnist(o.data_dir, true, &train)) ||
        (e = fmq_data_load_fashion_mnist(o.data_dir, false, &test))) {
        fprintf(stderr, "fedmq-train: Fashion-MNIST: %s (package "
                        "dataset-fashion-mnist)\n",
                fmq_strerror(e));
        return 1;
    }
    if (o.normalize) {
        /* the training set's statistics, applied to both */
        float mean, sd;
        if ((e = fmq_data_stats(&train, &mean, &sd, 1)) ||
            (e = fmq_data_normalize(&train, &mean, &sd, 1)) ||
            (e = fmq_data_normalize(&test, &mean, &sd, 1))) {
            fprintf(stderr, "fedmq-train: normalisation: %s\n",
                    fmq_strerror(e));
            return 1;
        }
        printf("# normalised with the training set's mean %.4f, std %.4f\n",
               (double)mean, (double)sd);
    }
    int rc = strcmp(o.mode, "central") == 0 ? central(&o, &train, &test)
                                            : fedavg(&o, &train, &test);
    fmq_data_fini(&train);
    fmq_data_fini(&test);
    return rc;
}
